//! Helpers: a client for the test cluster, a namespace per test, polling.

use std::future::Future;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The kubeconfig of the cluster under test. Panics (fails the test) when
/// none is set: these tests never pass without a real control plane.
pub fn kubeconfig() -> PathBuf {
    match std::env::var_os("KDEV_TEST_KUBECONFIG") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "KDEV_TEST_KUBECONFIG is not set: these integration tests need a running local cluster. \
             Run `scripts/test`, which starts one, or `kdev cluster up --name kdev-test` and \
             `export KDEV_TEST_KUBECONFIG=$(kdev cluster kubeconfig --name kdev-test)`"
        ),
    }
}

/// A client for the cluster behind `path`.
pub async fn client_for(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the test kubeconfig loads");
    Client::try_from(config).expect("a client for the test cluster")
}

/// The kdev binary built for these tests.
pub fn kdev() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kdev"))
}

/// The pinned kubectl that `scripts/install-control-plane` built.
pub fn kubectl() -> Command {
    kubectl_for(&kubeconfig())
}

/// The pinned kubectl, for the cluster behind `kubeconfig`.
pub fn kubectl_for(kubeconfig: &std::path::Path) -> Command {
    let binaries =
        kdev::cluster::Binaries::locate().expect("the control-plane binaries are installed");
    let mut command = Command::new(binaries.kubectl);
    command.arg("--kubeconfig").arg(kubeconfig);
    command
}

/// A namespace that exists for one test.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
    /// The kubeconfig of the cluster the namespace is in.
    pub kubeconfig: PathBuf,
}

impl TestNamespace {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

/// Runs `test` in a fresh namespace named `<prefix>-<unique>` and deletes
/// the namespace afterwards, also when the test panics.
pub async fn with_namespace<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(TestNamespace) -> Fut,
    Fut: Future<Output = ()>,
{
    with_namespace_in(&kubeconfig(), prefix, test).await;
}

/// [`with_namespace`] in the cluster behind `kubeconfig`.
pub async fn with_namespace_in<F, Fut>(kubeconfig: &std::path::Path, prefix: &str, test: F)
where
    F: FnOnce(TestNamespace) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client_for(kubeconfig).await;
    let name = unique_name(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    // Every test's namespace is an environment, as a
                    // team's would be (kdev.dev/environment).
                    labels: Some(
                        [
                            ("kdev.dev/test".to_owned(), "true".to_owned()),
                            (
                                kdev_contract::envs::ENVIRONMENT_LABEL.to_owned(),
                                "test".to_owned(),
                            ),
                        ]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap_or_else(|err| panic!("cannot create namespace {name}: {err}"));
    // Pods are refused until the namespace's default ServiceAccount exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    eventually(
        Duration::from_secs(30),
        "the default ServiceAccount",
        || async { accounts.get_opt("default").await.ok().flatten().map(|_| ()) },
    )
    .await;

    let outcome = AssertUnwindSafe(test(TestNamespace {
        name: name.clone(),
        client: client.clone(),
        kubeconfig: kubeconfig.to_owned(),
    }))
    .catch_unwind()
    .await;
    if let Err(err) = namespaces.delete(&name, &DeleteParams::background()).await {
        eprintln!("warning: failed to delete test namespace {name}: {err}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A name unique within this run and across runs.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}{:x}{n}",
        std::process::id() % 4096,
        nanos % 65536
    )
}

/// Polls `check` every 100 ms until it returns `Some`; panics after `timeout`
/// naming what it waited for.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// deploy/ rendered by kustomize for one test, with the optional components
/// named in `components` (e.g. "telepresence"): every namespaced object
/// moved into `namespace`, and every cluster-scoped object that grants to
/// this test's accounts given a name of the test's own, so tests running at
/// once never rewrite or delete each other's:
///
/// - ClusterRoleBindings, and the controller's own ClusterRoles
///   (`kdev-controller…`), become `<name>-<namespace>`, and every binding's
///   `roleRef` follows the rename;
/// - the environment roles (`kdev-env-starter`, `-keeper`, `-waker`) keep
///   their names: kdev binds them by name at run time. Every test applies
///   them with the same content, and no test deletes them;
/// - the controller's Deployment gets `--watch-namespace <namespace>`, so
///   a controller a test runs from deploy/ never reaps, sleeps or wakes
///   another test's objects.
///
/// The renamed objects are deleted when the returned value is dropped
/// (and carry an owner reference to the test's Namespace, so the garbage
/// collector removes them even after a test that was killed).
pub fn render_deploy(namespace: &str, components: &[&str]) -> RenderedDeploy {
    let overlay = tempfile::tempdir().expect("temp dir");
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    copy_yaml_tree(&deploy, &overlay.path().join("base"));
    let mut kustomization = format!("namespace: {namespace}\nresources:\n- base\n");
    if !components.is_empty() {
        kustomization.push_str("components:\n");
        for component in components {
            kustomization.push_str(&format!("- base/{component}\n"));
        }
    }
    std::fs::write(overlay.path().join("kustomization.yaml"), kustomization)
        .expect("write overlay");
    let rendered = kubectl()
        .arg("kustomize")
        .arg(overlay.path())
        .output()
        .expect("run kubectl kustomize");
    assert!(
        rendered.status.success(),
        "kustomize failed: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    // YAML to a JSON List, by kubectl itself (nothing is sent to the server).
    let mut to_json = kubectl()
        .args(["create", "--dry-run=client", "-o", "json", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl create --dry-run=client");
    to_json
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&rendered.stdout)
        .expect("write manifests");
    let json = to_json.wait_with_output().expect("kubectl finishes");
    assert!(
        json.status.success(),
        "kubectl could not read deploy/: {}",
        String::from_utf8_lossy(&json.stderr)
    );
    // One JSON object per document, one after another.
    let items: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&json.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("kubectl prints JSON");
    let mut list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
    let uid = kubectl()
        .args([
            "get",
            "namespace",
            namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .output()
        .expect("read the test namespace");
    let owner = serde_json::json!([{
        "apiVersion": "v1", "kind": "Namespace", "name": namespace,
        "uid": String::from_utf8_lossy(&uid.stdout).trim(),
    }]);
    let renamed = |name: &str| format!("{name}-{namespace}");
    let own_role = |name: &str| name.starts_with("kdev-controller");
    let mut cluster_scoped = Vec::new();
    for item in list["items"].as_array_mut().expect("a List of items") {
        let kind = item["kind"].as_str().unwrap_or_default().to_owned();
        let name = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if kind == "Deployment" && name == "kdev-controller" {
            let args = &mut item["spec"]["template"]["spec"]["containers"][0]["args"];
            let args = args.as_array_mut().expect("the controller's args");
            args.push("--watch-namespace".into());
            args.push(namespace.into());
        }
        if kind == "ClusterRoleBinding" || kind == "RoleBinding" {
            let role = item["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if item["roleRef"]["kind"] == "ClusterRole" && own_role(&role) {
                item["roleRef"]["name"] = renamed(&role).into();
            }
        }
        if kind == "ClusterRoleBinding" || (kind == "ClusterRole" && own_role(&name)) {
            item["metadata"]["name"] = renamed(&name).into();
            item["metadata"]["ownerReferences"] = owner.clone();
            cluster_scoped.push(format!("{}/{}", kind.to_lowercase(), renamed(&name)));
        }
    }
    RenderedDeploy {
        manifests: serde_json::to_vec(&list).expect("serialize"),
        cluster_scoped: ClusterScoped(cluster_scoped),
    }
}

/// deploy/ for one test (see [`render_deploy`]); its cluster-scoped objects
/// go when this is dropped.
pub struct RenderedDeploy {
    /// A JSON List for `kubectl apply -f -`.
    pub manifests: Vec<u8>,
    /// The cluster-scoped objects named for this test, deleted on drop.
    #[allow(dead_code, reason = "held for its drop")]
    pub cluster_scoped: ClusterScoped,
}

/// Cluster-scoped objects (`kind/name`) a test made, deleted on drop.
pub struct ClusterScoped(pub Vec<String>);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for object in &self.0 {
            let _ = kubectl()
                .args(["delete", object, "--ignore-not-found", "--wait=false"])
                .output();
        }
    }
}

fn copy_yaml_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("read entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_yaml_tree(&path, &target);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// `kubectl apply -f -` of `manifests`, with extra flags.
pub fn kubectl_apply(manifests: &[u8], flags: &[&str]) -> Output {
    let mut apply = kubectl()
        .args(["apply", "-f", "-"])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl apply");
    apply
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(manifests)
        .expect("write manifests");
    apply.wait_with_output().expect("kubectl apply finishes")
}

/// A kubeconfig for the test cluster that acts as `user` (impersonation),
/// so a test runs with exactly the permissions RBAC gives that user.
pub fn kubeconfig_as(user: &str, dir: &std::path::Path) -> PathBuf {
    let path = kubeconfig();
    let mut config = Kubeconfig::read_from(&path).expect("read the test kubeconfig");
    for named in &mut config.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(user.to_owned());
        }
    }
    let out = dir.join("kubeconfig-as.json");
    std::fs::write(
        &out,
        serde_json::to_vec(&config).expect("serialize kubeconfig"),
    )
    .expect("write kubeconfig");
    out
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.1 GET on 127.0.0.1; `None` while nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits for a child process to exit; panics after `timeout` naming `what`.
pub async fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A local cluster of a test's own, stopped when dropped whatever the outcome.
pub struct OwnCluster(pub String);

impl OwnCluster {
    /// Starts `kdev cluster up --name <name>` and returns the guard and its kubeconfig.
    pub fn up(prefix: &str) -> (Self, PathBuf) {
        let name = unique_name(prefix);
        let up = kdev()
            .args(["cluster", "up", "--node", "kwok", "--name", &name])
            .output()
            .expect("run kdev");
        let guard = OwnCluster(name.clone());
        assert!(
            up.status.success(),
            "kdev cluster up failed: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        let path = kdev()
            .args(["cluster", "kubeconfig", "--name", &name])
            .output()
            .expect("run kdev");
        let kubeconfig = PathBuf::from(String::from_utf8(path.stdout).expect("utf-8").trim());
        (guard, kubeconfig)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let down = kdev().args(["cluster", "down", "--name", &self.0]).output();
        if let Ok(out) = down {
            assert!(
                out.status.success() || std::thread::panicking(),
                "kdev cluster down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Kills one process of a local cluster (SIGKILL: a crash), waits `down_for`,
/// and starts it again with the same command line and folder.
pub async fn restart_component(dir: &std::path::Path, binary: &str, down_for: Duration) {
    let stopped = kill_component(dir, binary).await;
    tokio::time::sleep(down_for).await;
    stopped.start();
}

/// A component of a local cluster that [`kill_component`] stopped.
pub struct Stopped {
    dir: PathBuf,
    binary: String,
    argv: Vec<String>,
    cwd: PathBuf,
}

/// Kills one process of a local cluster (SIGKILL: a crash) and waits until
/// it is gone; [`Stopped::start`] runs it again.
pub async fn kill_component(dir: &std::path::Path, binary: &str) -> Stopped {
    use nix::sys::signal::Signal;
    let pid = kdev::cluster::processes::pids_under(dir)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .split('\0')
                    .next()
                    .is_some_and(|a| a.ends_with(binary))
            })
        })
        .unwrap_or_else(|| panic!("no {binary} process under {}", dir.display()));
    let argv: Vec<String> =
        String::from_utf8(std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline"))
            .expect("utf-8")
            .split('\0')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL)
        .unwrap_or_else(|err| panic!("kill {binary}: {err}"));
    eventually(
        Duration::from_secs(20),
        &format!("{binary} to stop"),
        || async {
            // Gone, or a zombie no one reaps (it is not our child).
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            matches!(state, None | Some("Z") | Some("X")).then_some(())
        },
    )
    .await;
    Stopped {
        dir: dir.to_owned(),
        binary: binary.to_owned(),
        argv,
        cwd,
    }
}

impl Stopped {
    pub fn start(self) {
        let Stopped {
            dir,
            binary,
            argv,
            cwd,
        } = self;
        // Its output goes beside the cluster's own logs, for a failure to show.
        let log = dir.join("logs").join(format!("{binary}.restarted.log"));
        let log = std::fs::File::create(&log)
            .unwrap_or_else(|err| panic!("create {}: {err}", log.display()));
        let mut restarted = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {binary} again: {err}"));
        // `kdev cluster down` stops it; this thread collects it then.
        std::thread::spawn(move || {
            let _ = restarted.wait();
        });
    }
}

/// The notes of the namespace's Events with `reason`, oldest first.
pub async fn event_notes(ns: &TestNamespace, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let Ok(list) = events.list(&Default::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

/// Creates a namespaced CustomResourceDefinition `plural.group` (kind
/// `kind`, version `version`, the schema left open, a status subresource
/// and, with `scale`, a scale subresource on `spec.replicas`) and waits
/// until the API server serves its objects.
pub async fn apply_crd(
    ns: &TestNamespace,
    group: &str,
    kind: &str,
    plural: &str,
    version: &str,
    scale: bool,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let mut subresources = serde_json::json!({ "status": {} });
    if scale {
        subresources["scale"] = serde_json::json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"
        });
    }
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{plural}.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "kind": kind, "plural": plural, "singular": kind.to_lowercase() },
            "versions": [{
                "name": version, "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
                "subresources": subresources
            }]
        }
    }))
    .expect("a valid CRD");
    Api::<CustomResourceDefinition>::all(ns.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap_or_else(|err| panic!("create the CRD {plural}.{group}: {err}"));
    let resource = kube::discovery::ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: format!("{group}/{version}"),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    };
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    eventually(
        Duration::from_secs(30),
        &format!("{plural}.{group} to be served"),
        || async { api.list(&Default::default()).await.ok().map(|_| ()) },
    )
    .await;
}
