//! Helpers for swap tests: a local agent standing in for the proxy pod's,
//! a `kdev swap` child process, and checks that a Deployment is restored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kdev::swap::workload::{WorkloadKind, WorkloadRef};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use serde_json::json;

use crate::kwok_emulation::create_kwok_cluster;
use crate::support::{TestNamespace, eventually, free_port, kdev, wait_child};

/// The session token every test's `kdev swap` uses (`KDEV_SWAP_TOKEN`), so
/// that a stand-in agent started in advance knows it; a real proxy pod reads
/// the session's own random token from its Secret.
pub const TEST_TOKEN: [u8; 32] = *b"kdev-test-session-token-32-bytes";

/// `TEST_TOKEN` as `KDEV_SWAP_TOKEN` wants it.
pub fn test_token_hex() -> String {
    TEST_TOKEN.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `kdev agent` on 127.0.0.1, reached by every proxy pod's tunnel port in
/// the namespace through kwok's port-forward.
pub struct LocalAgent {
    child: Child,
    /// The agent's tunnel port (on 127.0.0.1).
    pub tunnel: u16,
    _token: tempfile::TempDir,
    /// Container port → the local port the agent listens on for it.
    pub ports: BTreeMap<u16, u16>,
    forward: String,
    args: Vec<String>,
    kubeconfig: PathBuf,
}

impl LocalAgent {
    pub async fn start(ns: &TestNamespace, container_ports: &[u16], resolve: &[String]) -> Self {
        let tunnel = free_port();
        let ports: BTreeMap<u16, u16> = container_ports.iter().map(|p| (*p, free_port())).collect();
        let token = tempfile::tempdir().expect("temp dir");
        let token_file = token.path().join("token");
        std::fs::write(&token_file, TEST_TOKEN).expect("write the token");
        let mut args = vec![
            "agent".to_owned(),
            "--tunnel".to_owned(),
            format!("127.0.0.1:{tunnel}"),
            "--health".to_owned(),
            format!("127.0.0.1:{}", free_port()),
            "--token-file".to_owned(),
            token_file.display().to_string(),
        ];
        for (port, local) in &ports {
            args.extend(["--port".to_owned(), format!("{port}=127.0.0.1:{local}")]);
        }
        for entry in resolve {
            args.extend(["--resolve".to_owned(), entry.clone()]);
        }
        let child = spawn_agent(&args);
        let forward = format!("agent-{}", ns.name);
        create_kwok_cluster(
            &ns.client,
            "ClusterPortForward",
            &forward,
            serde_json::json!({
                "selector": { "matchNamespaces": [ns.name] },
                "forwards": [{ "ports": [7355], "target": { "port": tunnel, "address": "127.0.0.1" } }]
            }),
        )
        .await;
        eventually(Duration::from_secs(10), "the agent to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", tunnel))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self {
            child,
            tunnel,
            _token: token,
            ports,
            forward,
            args,
            kubeconfig: ns.kubeconfig.clone(),
        }
    }

    /// Kills the agent, as a crashed or rescheduled proxy pod would lose it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the agent again on the same ports.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn_agent(&self.args);
        let tunnel = self.tunnel;
        eventually(
            Duration::from_secs(10),
            "the agent to listen again",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", tunnel))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Where a client reaches the proxy pod's `port` (what a Service would route to).
    pub fn address(&self, port: u16) -> (&'static str, u16) {
        ("127.0.0.1", self.ports[&port])
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = crate::support::kubectl_for(&self.kubeconfig)
            .args([
                "delete",
                "clusterportforwards.kwok.x-k8s.io",
                &self.forward,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

fn spawn_agent(args: &[String]) -> Child {
    kdev()
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .expect("start kdev agent")
}

/// `kdev swap` (or `kdev run`) as a child process; stderr goes to a file
/// for assertions.
pub struct Swap {
    pub child: Child,
    pub stderr: PathBuf,
    /// What kdev prints once the session is in place.
    ready: &'static str,
    _dir: tempfile::TempDir,
}

impl Swap {
    pub fn start(
        ns: &TestNamespace,
        args: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(ns, "swap", args, command, env)
    }

    /// `kdev run`.
    pub fn run(ns: &TestNamespace, args: &[&str], command: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(ns, "run", args, command, env)
    }

    fn launch(
        ns: &TestNamespace,
        verb: &str,
        args: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr");
        let mut cmd = kdev();
        cmd.env("KDEV_SWAP_TOKEN", test_token_hex())
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, verb])
            .args(args)
            .arg("--")
            .args(command);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start kdev");
        Self {
            child,
            stderr,
            ready: if verb == "run" {
                "kdev: running as"
            } else {
                "kdev: swapped"
            },
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the session says it is in place.
    pub async fn wait_swapped(&self) {
        eventually(
            Duration::from_secs(60),
            "the kdev session to be in place",
            || async {
                let err = self.stderr();
                assert!(!err.contains("error:"), "kdev failed: {err}");
                err.contains(self.ready).then_some(())
            },
        )
        .await;
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let what = format!("kdev (stderr: {})", self.stderr());
        wait_child(&mut self.child, timeout, &what).await
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a Deployment from JSON and waits for all its pods to run.
pub async fn deploy(ns: &TestNamespace, manifest: serde_json::Value) -> Deployment {
    let deployment: Deployment = serde_json::from_value(manifest).expect("a valid Deployment");
    let api = ns.api::<Deployment>();
    let created = api
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let name = created.metadata.name.clone().expect("a name");
    let replicas = created.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    eventually(
        Duration::from_secs(60),
        "the deployment's pods to run",
        || async {
            let d = api.get(&name).await.ok()?;
            (d.status?.ready_replicas.unwrap_or(0) == replicas).then_some(())
        },
    )
    .await;
    created
}

/// Creates a workload of any kind from its manifest and waits until as many
/// of its pods (by its selector's `matchLabels`) are Ready as it asks for.
pub async fn create_running(
    ns: &TestNamespace,
    workload: WorkloadRef,
    manifest: serde_json::Value,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kdev::swap::workload::resource(workload.kind),
    );
    let object: DynamicObject = serde_json::from_value(manifest).expect("a manifest");
    let replicas = kdev::swap::workload::replicas_of(&object).unwrap_or(1);
    let labels: BTreeMap<String, String> =
        serde_json::from_value(object.data["spec"]["selector"]["matchLabels"].clone())
            .expect("a selector with matchLabels");
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("create {workload}: {err}"));
    let pods = ns.api::<Pod>();
    eventually(
        Duration::from_secs(90),
        &format!("{workload}'s pods to be Ready"),
        || async {
            let ready = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| kdev::k8s::objects::pod_ready(p))
                .count();
            (ready == replicas as usize).then_some(())
        },
    )
    .await;
}

/// A Deployment of one container `app` with the given ports.
pub fn simple_deployment(name: &str, replicas: i32, ports: &[u16]) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|p| serde_json::json!({ "containerPort": p }))
        .collect();
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                // Meets the "restricted" Pod Security Standard, as deploy/'s namespace enforces.
                "spec": {
                    "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
                    "containers": [{
                        "name": "app",
                        "image": "example.invalid/app:1",
                        "ports": ports,
                        "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
                    }]
                }
            }
        }
    })
}

/// Waits until `deployment` is back at `replicas` with nothing of kdev left:
/// no label or annotation, no Lease, no proxy pod.
pub async fn assert_restored(
    ns: &TestNamespace,
    deployment: &str,
    replicas: i32,
    timeout: Duration,
) {
    assert_workload_restored(ns, &WorkloadRef::deployment(deployment), replicas, timeout).await;
}

/// [`assert_restored`] for a workload of any kind.
pub async fn assert_workload_restored(
    ns: &TestNamespace,
    workload: &WorkloadRef,
    replicas: i32,
    timeout: Duration,
) {
    let objects: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kdev::swap::workload::resource(workload.kind),
    );
    let leases = ns.api::<Lease>();
    let pods = ns.api::<Pod>();
    eventually(
        timeout,
        &format!("{workload} to be restored to {replicas}"),
        || async {
            let d = objects.get(&workload.name).await.ok()?;
            let at = kdev::swap::workload::replicas_of(&d).unwrap_or(1);
            let marks = d
                .metadata
                .annotations
                .unwrap_or_default()
                .keys()
                .any(|k| k.starts_with("kdev.dev/"))
                || d.metadata
                    .labels
                    .unwrap_or_default()
                    .keys()
                    .any(|k| k.starts_with("kdev.dev/"));
            let lease = leases
                .get_opt(&kdev_contract::session::lease_name(workload))
                .await
                .ok()?
                .is_some();
            let proxies = pods
                .list(&ListParams::default().labels("kdev.dev/role=swap-proxy"))
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count();
            (at == replicas && !marks && !lease && proxies == 0).then_some(())
        },
    )
    .await;
}

/// How many `kdev run` Leases and live agent pods the namespace has (of
/// `target` only, when given).
pub async fn run_objects(ns: &TestNamespace, target: Option<&WorkloadRef>) -> (usize, usize) {
    let target = target.map(ToString::to_string);
    let ours = |annotations: Option<&BTreeMap<String, String>>| {
        target.is_none() || annotations.and_then(|a| a.get("kdev.dev/target")) == target.as_ref()
    };
    let leases = ns
        .api::<Lease>()
        .list(&ListParams::default().labels("kdev.dev/role=run-session"))
        .await
        .expect("list leases")
        .items
        .iter()
        .filter(|l| ours(l.metadata.annotations.as_ref()))
        .count();
    let agents = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("kdev.dev/role=run-agent"))
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| ours(p.metadata.annotations.as_ref()))
        .count();
    (leases, agents)
}

/// `kdev controller` for one namespace of the test cluster (its Lease and
/// the sessions it reaps), killed when dropped. Its stderr goes to a file.
pub struct Controller {
    pub child: Child,
    /// Where /healthz, /readyz and /metrics answer.
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Controller {
    /// With admin credentials (deploy/'s RBAC is tested in controller.rs).
    pub fn start(ns: &TestNamespace, env: &[(&str, &str)]) -> Self {
        Self::launch(ns, &ns.kubeconfig, &[], env)
    }

    /// With another kubeconfig, extra flags and environment.
    pub fn launch(
        ns: &TestNamespace,
        kubeconfig: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch_in(&ns.name, &ns.name, kubeconfig, args, env)
    }

    /// [`Controller::launch`] with its own namespace (its leader Lease,
    /// where a deletion's Event goes) apart from the one it watches.
    pub fn launch_in(
        home: &str,
        watched: &str,
        kubeconfig: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("stderr");
        let port = free_port();
        let mut cmd = kdev();
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["controller", "--identity", "test-reaper"])
            .args(["--lease-namespace", home, "--watch-namespace", watched])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (key, value) in env {
            cmd.env(key, value);
        }
        Self {
            child: cmd.spawn().expect("start kdev controller"),
            port,
            log,
            _dir: dir,
        }
    }

    /// Stops it as Kubernetes would (SIGTERM): it releases the leader Lease.
    pub fn stop(mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }

    /// What the controller logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The namespace's swap proxy pod, if one exists.
pub async fn proxy_pod(ns: &TestNamespace) -> Option<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels("kdev.dev/role=swap-proxy"))
        .await
        .ok()?
        .items
        .into_iter()
        .next()
}

/// The hash the stand-in puts on a Rollout's pods, as Argo Rollouts does.
pub const STAND_IN_HASH: &str = "5d8f7c9b6";

/// Creates Rollout `name` of `replicas` pods serving 8080, blue-green with
/// Service `name` active (the CRD applied first); returns its API.
pub async fn create_blue_green_rollout(
    ns: &TestNamespace,
    name: &str,
    replicas: i32,
) -> Api<DynamicObject> {
    let rollouts: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kdev::swap::workload::resource(WorkloadKind::Rollout),
    );
    let mut manifest = simple_deployment(name, replicas, &[8080]);
    manifest["apiVersion"] = json!("argoproj.io/v1alpha1");
    manifest["kind"] = json!("Rollout");
    manifest["spec"]["strategy"] = json!({ "blueGreen": { "activeService": name } });
    let rollout: DynamicObject = serde_json::from_value(manifest).expect("a Rollout");
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .expect("create the Rollout");
    rollouts
}

/// Applies a CustomResourceDefinition for `rollouts.argoproj.io` with the
/// parts of Argo Rollouts' own that kdev reads: `spec.replicas` behind the
/// scale subresource, the selector and the template.
pub async fn apply_rollout_crd(ns: &TestNamespace) {
    crate::support::apply_crd(ns, "argoproj.io", "Rollout", "rollouts", "v1alpha1", true).await;
}

/// What Argo Rollouts' controller does that a swap relies on, for every
/// Rollout in `namespace`: keep `spec.replicas` pods of its template,
/// labelled with [`STAND_IN_HASH`].
pub async fn stand_in_rollouts(client: kube::Client, namespace: String) {
    let rollouts: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &kdev::swap::workload::resource(WorkloadKind::Rollout),
    );
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut changes = watcher(rollouts.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(Ok(rollout)) = changes.next().await {
        let name = rollout.name_any();
        let want = kdev::swap::workload::replicas_of(&rollout)
            .unwrap_or(1)
            .max(0) as usize;
        let template = &rollout.data["spec"]["template"];
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
        labels.insert("rollouts-pod-template-hash".into(), STAND_IN_HASH.into());
        // This Rollout's pods: its template's labels and the hash.
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let Ok(have) = pods.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        let have: Vec<Pod> = have
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| !p.labels().contains_key("kdev.dev/role"))
            .collect();
        for extra in have.iter().skip(want) {
            let _ = pods.delete(&extra.name_any(), &Default::default()).await;
        }
        for i in have.len()..want {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": { "name": crate::support::unique_name(&format!("{name}-{STAND_IN_HASH}-{i}")), "labels": labels },
                "spec": template["spec"].clone(),
            }))
            .expect("a pod");
            let _ = pods.create(&PostParams::default(), &pod).await;
        }
        let _ = rollouts
            .patch_status(
                &name,
                &PatchParams::default(),
                // kwok's pods are ready at once; stableRS names the hash
                // its pods carry, as Argo's status does.
                &Patch::Merge(json!({ "status": {
                    "replicas": want, "readyReplicas": want, "stableRS": STAND_IN_HASH
                } })),
            )
            .await;
    }
}
