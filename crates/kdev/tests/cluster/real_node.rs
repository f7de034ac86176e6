//! The real node: upstream kubelet, containerd, runc, CNI, kube-proxy and
//! CoreDNS in a network namespace. `scripts/test` starts the shared test
//! cluster with `--node both`; a test here fails (never skips) when the real
//! node is missing.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{AttachParams, LogParams, PostParams};
use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::support::{OwnCluster, TestNamespace, eventually, kdev, unique_name, with_namespace};
use crate::swap_support::deploy;

/// The image every cluster with a real node has.
pub const BUSYBOX: &str = "kdev.local/busybox:1.35";

/// Fails the test unless the cluster has its real node.
pub async fn require_real_node(ns: &TestNamespace) {
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let found = nodes.get_opt("kdev-node").await.expect("read nodes");
    assert!(
        found.is_some(),
        "the test cluster has no real node (kdev-node): start it with `kdev cluster up --node both` \
         (scripts/test does); these tests need a kubelet that runs containers"
    );
}

/// Pod-spec fields that put a workload on the real node (which carries a
/// taint when kwok's fake node is there too).
pub fn on_real_node() -> serde_json::Value {
    json!({
        "nodeSelector": { "kdev.dev/node": "real" },
        "tolerations": [{ "key": "kdev.dev/node", "operator": "Exists", "effect": "NoSchedule" }]
    })
}

/// A busybox pod on the real node running `script`, created and waited for
/// until it has finished (or runs, when `wait_done` is false).
pub async fn busybox_pod(ns: &TestNamespace, name: &str, script: &str) -> Pod {
    create_pod(ns, name, busybox_spec(script)).await
}

/// The spec of a busybox pod on the real node running `script` once.
fn busybox_spec(script: &str) -> serde_json::Value {
    let mut spec = on_real_node();
    spec["restartPolicy"] = json!("Never");
    // Passes the restricted Pod Security Standard, where a test enforces it.
    spec["securityContext"] = json!({
        "runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": { "type": "RuntimeDefault" }
    });
    spec["containers"] = json!([{
        "name": "main",
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
    }]);
    spec
}

async fn create_pod(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> Pod {
    let pod: Pod = serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec }))
        .expect("a valid pod");
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod")
}

/// A shell loop that sends one HTTP request through `nc` and retries a few
/// times, as a real client does: kube-proxy programs a new Service's rules a
/// moment after its endpoints are Ready.
pub fn retried(nc: &str) -> String {
    format!(
        "for i in 1 2 3 4 5; do printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' | {nc} && exit 0; sleep 1; done; exit 1"
    )
}

/// Waits for a pod that runs once to finish; its phase and its log (read
/// from the real kubelet).
pub async fn finished(ns: &TestNamespace, name: &str) -> (String, String) {
    let phase = eventually(
        Duration::from_secs(60),
        "the client pod to finish",
        || async {
            phase(ns, name)
                .await
                .filter(|p| matches!(p.as_str(), "Succeeded" | "Failed"))
        },
    )
    .await;
    let log = ns
        .api::<Pod>()
        .logs(name, &LogParams::default())
        .await
        .expect("the pod's log");
    (phase, log)
}

async fn phase(ns: &TestNamespace, name: &str) -> Option<String> {
    ns.api::<Pod>().get(name).await.ok()?.status?.phase
}

#[tokio::test]
async fn a_pod_on_the_real_node_reaches_a_service_by_its_dns_name() {
    with_namespace("real-svc", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 1, "served-by-a-real-container").await;

        let fqdn = format!("web.{}.svc.cluster.local", ns.name);
        busybox_pod(
            &ns,
            "client",
            &format!("nslookup {fqdn} && {}", retried("nc -w 5 web 80")),
        )
        .await;
        let (phase, log) = finished(&ns, "client").await;
        assert_eq!(phase, "Succeeded", "{log}");
        assert!(log.contains(&fqdn), "{log}");
        assert!(log.contains("served-by-a-real-container"), "{log}");
    })
    .await;
}

/// Host-network pods (and the node itself) reach Services too: the node's
/// namespace routes the Service range so kube-proxy's rules apply.
/// Regression: the kubelet, kube-proxy and CoreDNS used the admin's
/// certificate, and CoreDNS mounted the cluster folder with the CA's key.
/// Each is now itself: the kubelet is its node (NodeRestriction on), and
/// none may read Secrets it has no pod for; CoreDNS mounts its own folder.
#[tokio::test]
async fn the_nodes_components_are_themselves_and_coredns_mounts_no_ca_key() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{ListParams, Patch, PatchParams};
    with_namespace("real-identity", |ns| async move {
        require_real_node(&ns).await;
        let node_dir = ns.kubeconfig.parent().expect("cluster folder").join("node");
        // A component's kubeconfig names the API server as the node's
        // network namespace reaches it; from here it is the admin's address.
        let admin = kube::config::Kubeconfig::read_from(&ns.kubeconfig).expect("the kubeconfig");
        let server = admin.clusters[0].cluster.as_ref().and_then(|c| c.server.clone());
        let scratch = tempfile::tempdir().expect("temp dir");
        let as_component = |file: &str| {
            let path = node_dir.join(file);
            let here = scratch.path().join(file.replace('/', "-"));
            let server = server.clone();
            async move {
                let mut config = kube::config::Kubeconfig::read_from(&path).expect("a component's kubeconfig");
                if let Some(cluster) = config.clusters[0].cluster.as_mut() {
                    cluster.server = server;
                }
                // JSON is YAML too.
                std::fs::write(&here, serde_json::to_string(&config).expect("json")).expect("write");
                crate::support::client_for(&here).await
            }
        };
        let kubelet = as_component("pki/kubelet.kubeconfig").await;
        let nodes: Api<Node> = Api::all(kubelet.clone());
        nodes.get("kdev-node").await.expect("the kubelet reads its own Node");
        // NodeRestriction: a kubelet may not give itself the labels kept
        // for the cluster's admins.
        let refused = nodes
            .patch(
                "kdev-node",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "node-restriction.kubernetes.io/x": "y" } } })),
            )
            .await
            .expect_err("NodeRestriction refuses the label");
        assert!(refused.to_string().contains("node-restriction"), "{refused}");
        for (file, who) in [
            ("pki/kubelet.kubeconfig", "the kubelet"),
            ("pki/kube-proxy.kubeconfig", "kube-proxy"),
            ("coredns/coredns.kubeconfig", "CoreDNS"),
        ] {
            let client = as_component(file).await;
            let secrets: Api<Secret> = Api::namespaced(client, "kube-system");
            let refused = secrets
                .list(&ListParams::default())
                .await
                .expect_err("no component may list Secrets");
            assert!(refused.to_string().contains("forbidden"), "{who}: {refused}");
        }
        let coredns = as_component("coredns/coredns.kubeconfig").await;
        let services: Api<k8s_openapi::api::core::v1::Service> = Api::all(coredns);
        services
            .list(&ListParams::default())
            .await
            .expect("CoreDNS reads Services");

        // CoreDNS's static pod mounts its own folder, which holds no key
        // but its own.
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), "kube-system");
        let pod = pods.get("coredns-kdev-node").await.expect("CoreDNS's pod");
        let volumes = pod.spec.and_then(|s| s.volumes).unwrap_or_default();
        let paths: Vec<String> = volumes
            .iter()
            .filter_map(|v| Some(v.host_path.as_ref()?.path.clone()))
            .collect();
        assert_eq!(paths, [node_dir.join("coredns").display().to_string()]);
        let mut keys: Vec<String> = std::fs::read_dir(node_dir.join("coredns"))
            .expect("CoreDNS's folder")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".key"))
            .collect();
        keys.sort();
        assert_eq!(keys, ["coredns.key"]);
    })
    .await;
}

#[tokio::test]
async fn a_host_network_pod_reaches_a_service_by_its_dns_name() {
    with_namespace("real-hostnet", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 1, "served-to-the-host-network").await;

        let fqdn = format!("web.{}.svc.cluster.local", ns.name);
        let mut spec = busybox_spec(&retried(&format!("nc -w 5 {fqdn} 80")));
        spec["hostNetwork"] = json!(true);
        spec["dnsPolicy"] = json!("ClusterFirstWithHostNet");
        create_pod(&ns, "client", spec).await;
        let (phase, log) = finished(&ns, "client").await;
        assert_eq!(phase, "Succeeded", "{log}");
        assert!(log.contains("served-to-the-host-network"), "{log}");
    })
    .await;
}

#[tokio::test]
async fn exec_into_a_real_container_runs_there() {
    with_namespace("real-exec", |ns| async move {
        require_real_node(&ns).await;
        busybox_pod(&ns, "sleeper", "echo $HOSTNAME > /tmp/me; exec sleep 600").await;
        eventually(Duration::from_secs(60), "the pod to run", || async {
            (phase(&ns, "sleeper").await.as_deref() == Some("Running")).then_some(())
        })
        .await;
        let mut exec = ns
            .api::<Pod>()
            .exec(
                "sleeper",
                ["cat", "/tmp/me"],
                &AttachParams::default().stdout(true).stderr(false),
            )
            .await
            .expect("exec through the API server and the node proxy");
        let mut out = String::new();
        exec.stdout()
            .expect("stdout")
            .read_to_string(&mut out)
            .await
            .expect("read");
        assert_eq!(out.trim(), "sleeper");
    })
    .await;
}

/// `kdev cluster up --node real` then `down`: nothing of the node is left on
/// the host (process, network namespace, cgroup, mount, kubelet path,
/// changed sysctl).
#[test]
fn a_real_node_cluster_leaves_nothing_behind() {
    let name = unique_name("realnode");
    // The test cluster's own real node runs meanwhile: this second node's
    // `down` must leave what that one shares with it (the regression: it
    // deleted the kubelets' shared host paths and put back sysctls the
    // first kubelet had set).
    let sysctls: Vec<String> = kdev::cluster::hostshare::SYSCTLS
        .iter()
        .map(|key| format!("/proc/sys/{key}"))
        .collect();
    let shared_paths: Vec<bool> = kdev::cluster::hostshare::HOST_PATHS
        .iter()
        .map(|p| std::path::Path::new(p).exists())
        .collect();
    let before: Vec<String> = sysctls
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read sysctl"))
        .collect();
    let up = kdev()
        .args(["cluster", "up", "--node", "real", "--name", &name])
        .output()
        .expect("run kdev");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let guard = OwnCluster(name.clone());
    let kubeconfig = kdev()
        .args(["cluster", "kubeconfig", "--name", &name])
        .output()
        .expect("run kdev");
    let kubeconfig = String::from_utf8(kubeconfig.stdout).expect("utf-8");
    let dir = std::path::Path::new(kubeconfig.trim())
        .parent()
        .expect("a folder")
        .to_owned();
    // A container runs, so there are mounts, cgroups and shims to clean.
    let run = crate::support::kubectl_for(std::path::Path::new(kubeconfig.trim()))
        .args([
            "run",
            "sleeper",
            "--image",
            BUSYBOX,
            "--image-pull-policy=Never",
            "--",
            "sleep",
            "3607",
        ])
        .output()
        .expect("run kubectl");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let wait = crate::support::kubectl_for(std::path::Path::new(kubeconfig.trim()))
        .args([
            "wait",
            "--for=condition=Ready",
            "pod/sleeper",
            "--timeout=60s",
        ])
        .output()
        .expect("run kubectl");
    assert!(
        wait.status.success(),
        "{}",
        String::from_utf8_lossy(&wait.stderr)
    );
    let netns = std::path::Path::new("/run/netns").join(format!("kdev-{name}"));
    assert!(netns.exists());

    drop(guard);
    assert!(!netns.exists(), "the network namespace is left");
    assert!(!dir.exists(), "the cluster folder is left");
    assert!(
        kdev::cluster::processes::pids_under(&dir).is_empty(),
        "processes are left"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts are left:\n{mounts}"
    );
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroups")
        .flatten()
        .map(|e| e.path().join(format!("kdev-{name}")))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "cgroups are left: {cgroups:?}");
    let sleepers = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c.starts_with(b"sleep\x003607"))
        .count();
    assert_eq!(sleepers, 0, "the container's process is left");
    let after: Vec<String> = sysctls
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read sysctl"))
        .collect();
    assert_eq!(before, after, "the kubelet's sysctls were not put back");
    let shared_after: Vec<bool> = kdev::cluster::hostshare::HOST_PATHS
        .iter()
        .map(|p| std::path::Path::new(p).exists())
        .collect();
    assert_eq!(
        shared_paths,
        shared_after,
        "the kubelets' shared host paths {:?} changed",
        kdev::cluster::hostshare::HOST_PATHS
    );
    let links: Vec<_> = std::fs::read_dir(kdev::cluster::hostshare::CONTAINER_LOG_LINKS)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&dir)))
        .map(|e| e.path())
        .collect();
    assert!(
        links.is_empty(),
        "links into the gone node are left: {links:?}"
    );
    // host-local kept the sleeper's IP reservation in the node's folder
    // (gone with it), not in the host-wide default.
    let reserved = std::fs::read_dir("/var/lib/cni/networks/kdev")
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(reserved, 0, "IP reservations in /var/lib/cni/networks/kdev");
}

/// `kdev image build` twice gives the same bytes; `kdev image load` puts it
/// on the real node; a pod runs it and serves the folder baked into it.
#[tokio::test]
async fn an_image_built_by_kdev_runs_on_the_real_node() {
    with_namespace("real-image", |ns| async move {
        require_real_node(&ns).await;
        let work = tempfile::tempdir().expect("temp dir");
        let www = work.path().join("www");
        std::fs::create_dir(&www).expect("mkdir");
        std::fs::write(www.join("index.html"), "baked into the image\n").expect("write");
        let reference = format!("kdev.local/{}:1", ns.name);
        let build = |out: &str| {
            let out = work.path().join(out);
            let status = kdev()
                .args(["image", "build", "-t", &reference])
                .arg("--dir")
                .arg(format!("{}:/www", www.display()))
                .args([
                    "--file",
                    "/bin/busybox:/bin/busybox:755",
                    "--link",
                    "/bin/sh:/bin/busybox",
                ])
                .args(["--link", "/bin/cat:/bin/busybox", "--entrypoint", "/bin/sh"])
                .args([
                    "--cmd",
                    "-c",
                    "--cmd",
                    "cat /www/index.html && exec sleep 600",
                ])
                .arg("-o")
                .arg(&out)
                .output()
                .expect("run kdev image build");
            assert!(
                status.status.success(),
                "{}",
                String::from_utf8_lossy(&status.stderr)
            );
            std::fs::read(&out).expect("the image")
        };
        assert!(
            build("a.tar") == build("b.tar"),
            "two builds of the same inputs differ"
        );
        let cluster = ns
            .kubeconfig
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .expect("the test cluster's name")
            .to_owned();
        let load = kdev()
            .args(["image", "load"])
            .arg(work.path().join("a.tar"))
            .args(["--name", &cluster])
            .output()
            .expect("run kdev image load");
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );

        let mut spec = on_real_node();
        spec["containers"] =
            json!([{ "name": "site", "image": reference, "imagePullPolicy": "Never" }]);
        let pod: Pod =
            serde_json::from_value(json!({ "metadata": { "name": "site" }, "spec": spec }))
                .expect("a valid pod");
        ns.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        let log = eventually(
            Duration::from_secs(60),
            "the pod to print its file",
            || async {
                let log = ns
                    .api::<Pod>()
                    .logs("site", &LogParams::default())
                    .await
                    .ok()?;
                log.contains("baked into the image").then_some(log)
            },
        )
        .await;
        assert_eq!(log.trim(), "baked into the image");
    })
    .await;
}

/// `kdev swap` on the real node with the real agent image (scripts/test
/// loads it): a client pod calls the Service by name and gets the local
/// process's answer; a pod that dials the proxy's tunnel port gets nothing;
/// the agent's exec readiness probe keeps passing without touching the
/// tunnel; the Deployment comes back at the end.
#[tokio::test]
async fn a_swap_on_the_real_node_answers_a_pod_through_its_service() {
    use crate::swap_support::{Swap, assert_restored};
    use tokio::io::AsyncWriteExt as _;
    with_namespace("real-swap", |ns| async move {
        require_real_node(&ns).await;
        // The restricted Pod Security Standard, enforced: the proxy pod (and
        // the app) must pass it to be created at all, and then really run.
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
        namespaces
            .patch(
                &ns.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "metadata": { "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted"
                } } })),
            )
            .await
            .expect("label the namespace");
        busybox_web(&ns, "web", 2, "from-the-cluster").await;

        // The developer's process: a tiny HTTP server on this machine.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let local = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                    let _ = socket
                        .write_all(
                            b"HTTP/1.0 200 OK\r\nContent-Length: 16\r\n\r\nfrom-the-laptop\n",
                        )
                        .await;
                });
            }
        });
        let swap = Swap::start(
            &ns,
            &[
                "deploy/web",
                "--port",
                &format!("8080:{local}"),
                "--ttl",
                "10s",
            ],
            &["sleep", "600"],
            &[],
        );
        swap.wait_swapped().await;

        let ask = |name: &'static str| {
            let ns = &ns;
            async move {
                busybox_pod(ns, name, &retried("nc -w 5 web 80")).await;
                finished(ns, name).await.1
            }
        };
        let answer = ask("client").await;
        assert!(
            answer.contains("from-the-laptop"),
            "{answer}\n{}",
            swap.stderr()
        );

        // Another pod dials the proxy pod's tunnel port: nothing listens there
        // (the agent binds the pod's loopback), and the session goes on.
        let proxy_ip = crate::swap_support::proxy_pod(&ns)
            .await
            .and_then(|p| p.status?.pod_ip)
            .expect("the proxy pod's IP");
        busybox_pod(
            &ns,
            "intruder",
            &format!("printf 'KDEVAUTH' | nc -w 3 {proxy_ip} 7355 && echo CONNECTED; echo done"),
        )
        .await;
        eventually(
            Duration::from_secs(60),
            "the intruder to finish",
            || async {
                matches!(
                    phase(&ns, "intruder").await.as_deref(),
                    Some("Succeeded" | "Failed")
                )
                .then_some(())
            },
        )
        .await;
        let intruder = ns
            .api::<Pod>()
            .logs("intruder", &LogParams::default())
            .await
            .expect("the intruder's log");
        assert!(!intruder.contains("CONNECTED"), "{intruder}");

        // The exec readiness probe has passed for a while (every 2 s) and
        // never took the tunnel: the pod is Ready and a new request works.
        eventually(
            Duration::from_secs(30),
            "the proxy pod to be Ready",
            || async {
                let pod = crate::swap_support::proxy_pod(&ns).await?;
                let ready = pod
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            },
        )
        .await;
        // A minute of probes, every 2 s; the time itself is what is tested.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let again = ask("client-again").await;
        assert!(
            again.contains("from-the-laptop"),
            "{again}\n{}",
            swap.stderr()
        );

        swap.signal(nix::sys::signal::Signal::SIGTERM);
        let mut swap = swap;
        swap.wait_exit(Duration::from_secs(30)).await;
        assert_restored(&ns, "web", 2, Duration::from_secs(30)).await;
    })
    .await;
}

/// A busybox httpd Deployment on the real node answering `body`, behind a
/// Service of the same name.
pub async fn busybox_web(ns: &TestNamespace, name: &str, replicas: i32, body: &str) {
    busybox_web_as(ns, name, replicas, body, None).await;
}

/// [`busybox_web`], its pods running as `service_account`.
async fn busybox_web_as(
    ns: &TestNamespace,
    name: &str,
    replicas: i32,
    body: &str,
    service_account: Option<&str>,
) {
    let mut web = crate::swap_support::simple_deployment(name, replicas, &[8080]);
    let template = &mut web["spec"]["template"]["spec"];
    if let Some(account) = service_account {
        template["serviceAccountName"] = json!(account);
    }
    template["nodeSelector"] = on_real_node()["nodeSelector"].clone();
    template["tolerations"] = on_real_node()["tolerations"].clone();
    template["containers"][0]["image"] = json!(BUSYBOX);
    template["containers"][0]["imagePullPolicy"] = json!("Never");
    template["containers"][0]["env"] = json!([{ "name": "FROM", "value": body }]);
    template["containers"][0]["command"] = json!([
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo \"$FROM\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    ]);
    template["securityContext"]["runAsUser"] = json!(65534);
    deploy(ns, web).await;
    let service = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))
    .expect("a valid service");
    ns.api::<k8s_openapi::api::core::v1::Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
}

/// A one-pod StatefulSet `name` behind a headless Service of the same name
/// on the real node, its pod serving `body` on 8080; returns once it is
/// Ready.
pub async fn headless_web(ns: &TestNamespace, name: &str, body: &str) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let service = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "clusterIP": "None", "selector": { "app": name }, "ports": [{ "port": 8080 }] }
    }))
    .expect("a valid service");
    ns.api::<k8s_openapi::api::core::v1::Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("create the headless service");
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "nodeSelector": on_real_node()["nodeSelector"].clone(),
                    "tolerations": on_real_node()["tolerations"].clone(),
                    "securityContext": { "runAsUser": 65534 },
                    "containers": [{
                        "name": "app",
                        "image": BUSYBOX,
                        "imagePullPolicy": "Never",
                        "env": [{ "name": "FROM", "value": body }],
                        "command": ["sh", "-c", "mkdir -p /tmp/www && echo \"$FROM\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
                        "ports": [{ "containerPort": 8080 }]
                    }]
                }
            }
        }
    }))
    .expect("a valid StatefulSet");
    let sets = ns.api::<StatefulSet>();
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create the StatefulSet");
    eventually(
        Duration::from_secs(60),
        "the StatefulSet's pod to be Ready",
        || async {
            let set = sets.get(name).await.ok()?;
            (set.status?.ready_replicas == Some(1)).then_some(())
        },
    )
    .await;
}

/// On the real node with the real agent image: `--forward svc/db:80` reaches
/// a real pod through the agent's own DNS lookup (kdev's static binary in a
/// scratch image); 64 connections through the agent and the tunnel come
/// back byte-exact; kill -9 of kdev is repaired by the reaper within the
/// session's TTL plus 2 s.
#[tokio::test]
async fn a_real_node_swap_forwards_carries_many_connections_and_survives_kill_9() {
    use crate::swap_support::{Controller, Swap, assert_restored};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    with_namespace("real-swap2", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 2, "from-web").await;
        busybox_web(&ns, "db", 1, "from-db").await;
        let _reaper = Controller::start(&ns, &[]);

        // The developer's process: an echo server.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let local = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let forward_port = crate::support::free_port();
        let mut swap = Swap::start(
            &ns,
            &[
                "deploy/web",
                "--port",
                &format!("8080:{local}"),
                "--forward",
                &format!("svc/db:80:{forward_port}"),
                "--ttl",
                "6s",
            ],
            &["sleep", "600"],
            &[],
        );
        swap.wait_swapped().await;

        // Outbound: this machine → the agent → db.<ns>.svc (CoreDNS) → a real pod.
        let mut db = tokio::net::TcpStream::connect(("127.0.0.1", forward_port))
            .await
            .expect("connect to the forward");
        db.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("send");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), db.read_to_string(&mut answer))
            .await
            .expect("db answers in time")
            .expect("read");
        assert!(answer.contains("from-db"), "{answer}\n{}", swap.stderr());

        // Inbound: 64 connections into the proxy pod's port 8080 (through a
        // port-forward to the real pod), via the agent and the tunnel.
        let proxy = crate::swap_support::proxy_pod(&ns)
            .await
            .and_then(|p| p.metadata.name)
            .expect("the proxy pod");
        let mut clients = Vec::new();
        for i in 0..64u32 {
            let pods = ns.api::<Pod>();
            let proxy = proxy.clone();
            clients.push(tokio::spawn(async move {
                let mut forwarder = pods
                    .portforward(&proxy, &[8080])
                    .await
                    .expect("port-forward");
                let stream = forwarder.take_stream(8080).expect("a stream");
                let payload: Vec<u8> = (0..32_768u32)
                    .map(|b| (b.wrapping_mul(31).wrapping_add(i) % 251) as u8)
                    .collect();
                let (mut read, mut write) = tokio::io::split(stream);
                let sent = payload.clone();
                // No half-close: a port-forward stream ends with its writer.
                let writer = async move {
                    write.write_all(&sent).await.expect("send");
                    write
                };
                let mut echoed = Vec::new();
                let reader = async {
                    let mut buf = [0u8; 8192];
                    while echoed.len() < payload.len() {
                        let n = read.read(&mut buf).await.expect("receive");
                        if n == 0 {
                            break;
                        }
                        echoed.extend_from_slice(&buf[..n]);
                    }
                };
                let (_write, ()) = tokio::join!(writer, reader);
                assert!(
                    echoed == payload,
                    "connection {i}: {} of {} bytes, or corrupted",
                    echoed.len(),
                    payload.len()
                );
                forwarder.abort();
            }));
        }
        for client in clients {
            client.await.expect("a client");
        }

        // kill -9: the reaper restores within the TTL (6 s) plus 2 s.
        swap.signal(nix::sys::signal::Signal::SIGKILL);
        swap.wait_exit(Duration::from_secs(10)).await;
        assert_restored(&ns, "web", 2, Duration::from_secs(8)).await;
    })
    .await;
}

/// `kdev logs ARGS` running in the namespace, its stdout in a file; killed
/// when dropped.
struct Follower {
    child: std::process::Child,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Follower {
    fn start(ns: &TestNamespace, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("stdout");
        let child = kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "logs"])
            .args(args)
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start kdev logs");
        Self {
            child,
            out,
            _dir: dir,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until `lines` printed lines contain `marker` (or 90 s); returns stdout.
    async fn wait_for(&self, marker: &str, lines: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let text = self.text();
            if text.lines().filter(|l| l.contains(marker)).count() >= lines
                || std::time::Instant::now() > deadline
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a writer pod's script starts with: it says it is ready, then waits
/// for `go` (see [`go`]), so it writes only once `kdev logs` follows it.
const WAIT_FOR_GO: &str = "echo 'writer ready'; until [ -f /tmp/go ]; do sleep 0.1; done; ";

/// Once `kdev logs` printed the pod's first line, tells its script to go on.
async fn go(ns: &TestNamespace, follower: &Follower, pod: &str) {
    follower.wait_for("writer ready", 1).await;
    assert!(
        follower.text().contains("writer ready"),
        "kdev logs never showed the writer"
    );
    let mut touch = ns
        .api::<Pod>()
        .exec(
            pod,
            ["touch", "/tmp/go"],
            &AttachParams::default().stdout(false).stderr(true),
        )
        .await
        .expect("exec touch /tmp/go");
    if let Some(status) = touch.take_status() {
        let _ = status.await;
    }
    let _ = touch.join().await;
}

/// Every number 1..=n appears exactly once among lines containing `marker`.
fn assert_each_once(out: &str, marker: &str, n: usize) {
    let mut seen = vec![0u32; n + 1];
    for line in out.lines().filter(|l| l.contains(marker)) {
        let number = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("n="))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("a line without its number: {line}"));
        assert!(number >= 1 && number <= n, "{line}");
        seen[number] += 1;
    }
    let missing: Vec<usize> = (1..=n).filter(|i| seen[*i] == 0).collect();
    let twice: Vec<usize> = (1..=n).filter(|i| seen[*i] > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} lines missing (first {:?}), {} printed twice (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
}

/// The kubelet rotates container logs at 1 MiB here; a container writes
/// 4.5 MB in bursts while `kdev logs` follows: every line once.
#[tokio::test]
async fn logs_lose_no_line_across_the_kubelets_rotations() {
    with_namespace("real-logrot", |ns| async move {
        require_real_node(&ns).await;
        const N: usize = 90_000;
        // 6 bursts of 15,000 lines of ~50 bytes, 4 s apart: past 1 MiB
        // several times, across the kubelet's 10 s rotation checks.
        let script = format!(
            "{WAIT_FOR_GO}for b in 0 1 2 3 4 5; do seq $((b*15000+1)) $((b*15000+15000)) | sed 's/.*/rot n=& padding-padding-padding-padding/'; sleep 4; done; exec sleep 600"
        );
        busybox_pod(&ns, "writer", &script).await;
        // The kubelet serves the current log file only: a reader that
        // arrived after a rotation could not see the lines before it. So
        // the writer starts once kdev follows it.
        let follower = Follower::start(&ns, &["writer", "-o", "raw"]);
        go(&ns, &follower, "writer").await;
        let out = follower.wait_for("rot n=", N).await;
        assert_each_once(&out, "rot n=", N);
        // The kubelet did rotate: its rotated files sit beside 0.log.
        let pods = ns.kubeconfig.parent().expect("cluster folder").join("node/pods");
        let rotated: Vec<String> = std::fs::read_dir(&pods)
            .expect("the node's pod log folder")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{}_writer_", ns.name)))
            .flat_map(|e| std::fs::read_dir(e.path().join("main")).into_iter().flatten().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("0.log."))
            .collect();
        assert!(!rotated.is_empty(), "the kubelet rotated nothing");
    })
    .await;
}

/// `kdev logs --file` tails a file through real exec `tail -F` while the
/// container rotates it itself (rename, new file): every line once.
#[tokio::test]
async fn a_file_tail_follows_the_containers_own_rotation() {
    with_namespace("real-filerot", |ns| async move {
        require_real_node(&ns).await;
        const N: usize = 3_000;
        // "writer ready" goes into the file: once kdev prints it, its tail
        // follows the file, and the pod may start rotating.
        let script = "echo 'writer ready' > /tmp/app.log; until [ -f /tmp/go ]; do sleep 0.1; done; for b in 0 1 2; do seq $((b*1000+1)) $((b*1000+1000)) | sed 's/.*/file n=&/' >> /tmp/app.log; sleep 2; mv /tmp/app.log /tmp/app.log.$b; done; exec sleep 600";
        busybox_pod(&ns, "rotator", script).await;
        let follower = Follower::start(&ns, &["rotator", "--file", "/tmp/app.log", "-o", "raw"]);
        go(&ns, &follower, "rotator").await;
        let out = follower.wait_for("file n=", N).await;
        assert_each_once(&out, "file n=", N);
    })
    .await;
}

/// The local process gets the environment a real container of the
/// Deployment has: every variable `env` prints inside the original pod
/// (Kubernetes' own service variables aside, which kdev does not copy), with
/// the same value, and the ConfigMap volume's file.
#[tokio::test]
async fn the_local_environment_matches_a_real_containers() {
    use crate::swap_support::Swap;
    with_namespace("real-env", |ns| async move {
        require_real_node(&ns).await;
        let config: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "settings" },
            "data": { "MODE": "staging", "app.conf": "threads = 4\n" }
        }))
        .expect("a valid config map");
        ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
            .create(&PostParams::default(), &config)
            .await
            .expect("create config map");
        let mut web = crate::swap_support::simple_deployment("web", 1, &[8080]);
        let template = &mut web["spec"]["template"]["spec"];
        template["nodeSelector"] = on_real_node()["nodeSelector"].clone();
        template["tolerations"] = on_real_node()["tolerations"].clone();
        template["volumes"] = json!([{ "name": "conf", "configMap": { "name": "settings" } }]);
        let container = &mut template["containers"][0];
        container["image"] = json!(BUSYBOX);
        container["imagePullPolicy"] = json!("Never");
        container["command"] = json!(["sleep", "600"]);
        container["envFrom"] = json!([{ "configMapRef": { "name": "settings" } }]);
        container["env"] = json!([
            { "name": "GREETING", "value": "hello $(MODE)" },
            { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
            { "name": "CPU_LIMIT", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } }
        ]);
        container["volumeMounts"] = json!([{ "name": "conf", "mountPath": "/etc/app" }]);
        template["securityContext"]["runAsUser"] = json!(65534);
        deploy(&ns, web).await;
        let original = ns
            .api::<Pod>()
            .list(&kube::api::ListParams::default().labels("app=web"))
            .await
            .expect("list")
            .items
            .into_iter()
            .find_map(|p| p.metadata.name)
            .expect("the original pod");
        let mut exec = ns
            .api::<Pod>()
            .exec(&original, ["env"], &AttachParams::default().stdout(true).stderr(false))
            .await
            .expect("exec env in the original");
        let mut in_cluster = String::new();
        exec.stdout()
            .expect("stdout")
            .read_to_string(&mut in_cluster)
            .await
            .expect("read");

        let work = tempfile::tempdir().expect("temp dir");
        let env_file = work.path().join("env");
        let conf_copy = work.path().join("app.conf");
        let script = format!("cat \"$KDEV_ROOT/etc/app/app.conf\" > {}", conf_copy.display());
        let mut swap = Swap::start(
            &ns,
            &["deploy/web", "--env-file", env_file.to_str().expect("utf-8")],
            &["sh", "-c", &script],
            &[],
        );
        let status = swap.wait_exit(Duration::from_secs(90)).await;
        assert!(status.success(), "{}", swap.stderr());
        let local = std::fs::read_to_string(&env_file).expect("the env file");
        let local: std::collections::BTreeMap<String, String> = local
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        let kubernetes_own = |key: &str| {
            key.ends_with("_SERVICE_HOST")
                || key.ends_with("_SERVICE_PORT")
                || key.contains("_PORT_")
                || key.ends_with("_PORT")
                || ["HOSTNAME", "HOME", "PATH", "SHLVL", "PWD"].contains(&key)
        };
        for line in in_cluster.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            if kubernetes_own(key) {
                continue;
            }
            assert_eq!(local.get(key).map(String::as_str), Some(value), "{key} differs; local env: {local:?}");
        }
        assert_eq!(local.get("GREETING").map(String::as_str), Some("hello staging"));
        assert_eq!(std::fs::read_to_string(&conf_copy).expect("conf"), "threads = 4\n");
    })
    .await;
}

/// `kdev image push` to a real registry (the CNCF distribution registry,
/// built by scripts/install-control-plane, on 127.0.0.1): the registry
/// reports the image's local digest; containerd pulls it from there (ctr,
/// plain HTTP) and a pod runs it.
#[tokio::test]
async fn an_image_pushed_to_a_registry_is_pulled_and_runs() {
    with_namespace("real-registry", |ns| async move {
        require_real_node(&ns).await;
        let bin = kdev::cluster::Binaries::locate().expect("binaries").bin_dir;
        let work = tempfile::tempdir().expect("temp dir");
        let port = crate::support::free_port();
        let config = work.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                work.path().join("data").display()
            ),
        )
        .expect("write the registry's config");
        let _registry = Killed(std::process::Command::new(bin.join("registry"))
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the registry (scripts/install-control-plane builds it)"));
        eventually(Duration::from_secs(20), "the registry to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;

        let image = work.path().join("app.tar");
        let built = kdev()
            .args(["image", "build", "-t", "kdev.local/pushed:1"])
            .args(["--file", "/bin/busybox:/bin/busybox:755", "--link", "/bin/sh:/bin/busybox"])
            .args(["--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", "echo pulled-from-a-registry; exec sleep 600"])
            .arg("-o")
            .arg(&image)
            .output()
            .expect("run kdev image build");
        assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
        let local_digest = String::from_utf8_lossy(&built.stdout)
            .split_whitespace()
            .nth(1)
            .expect("the digest")
            .to_owned();
        let target = format!("127.0.0.1:{port}/{}/app:1", ns.name);
        let pushed = kdev().args(["image", "push"]).arg(&image).arg(&target).output().expect("run kdev image push");
        assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));

        // The registry's own word on the digest.
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        use tokio::io::AsyncWriteExt as _;
        socket
            .write_all(
                format!(
                    "HEAD /v2/{}/app/manifests/1 HTTP/1.0\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n",
                    ns.name
                )
                .as_bytes(),
            )
            .await
            .expect("ask the registry");
        let mut reply = String::new();
        socket.read_to_string(&mut reply).await.expect("read");
        assert!(
            reply.to_ascii_lowercase().contains(&format!("docker-content-digest: {local_digest}")),
            "{reply}"
        );

        // containerd pulls it from the registry (ctr --local fetches on this
        // host; containerd itself lives in the node's namespace).
        let cluster_dir = ns.kubeconfig.parent().expect("cluster folder").to_owned();
        let socket_path = cluster_dir.join("node/containerd/containerd.sock");
        let pulled = std::process::Command::new(bin.join("ctr"))
            .arg("--address")
            .arg(&socket_path)
            .args(["--namespace", "k8s.io", "images", "pull", "--local", "--plain-http", &target])
            .output()
            .expect("run ctr");
        assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));

        let mut spec = on_real_node();
        spec["containers"] = json!([{ "name": "app", "image": target, "imagePullPolicy": "Never" }]);
        let pod: Pod = serde_json::from_value(json!({ "metadata": { "name": "pulled" }, "spec": spec }))
            .expect("a valid pod");
        ns.api::<Pod>().create(&PostParams::default(), &pod).await.expect("create pod");
        let log = eventually(Duration::from_secs(60), "the pulled image to run", || async {
            let log = ns.api::<Pod>().logs("pulled", &LogParams::default()).await.ok()?;
            log.contains("pulled-from-a-registry").then_some(log)
        })
        .await;
        assert_eq!(log.trim(), "pulled-from-a-registry");
    })
    .await;
}

/// A process killed when dropped, also when the test fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real environment sleeps (its containers stop) and wakes (new
/// containers start, become Ready and answer through the Service).
#[tokio::test]
async fn an_environment_on_the_real_node_sleeps_and_wakes() {
    with_namespace("real-envs", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 2, "served-after-the-wake").await;
        let run = |args: &[&str]| {
            let out = kdev()
                .arg("--kubeconfig")
                .arg(&ns.kubeconfig)
                .args(["-n", &ns.name])
                .args(args)
                .output()
                .expect("run kdev");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["sleep", "--no-wake-on-request"]);
        eventually(
            Duration::from_secs(60),
            "the containers to stop",
            || async {
                let pods = ns.api::<Pod>().list(&Default::default()).await.ok()?;
                pods.items.is_empty().then_some(())
            },
        )
        .await;

        let woke = run(&["wake"]);
        assert!(woke.contains("(0 replicas → 2 replicas)"), "{woke}");
        eventually(
            Duration::from_secs(60),
            "the environment to be awake",
            || async {
                let out = kdev()
                    .arg("--kubeconfig")
                    .arg(&ns.kubeconfig)
                    .args(["-n", &ns.name, "envs", "-o", "json"])
                    .output()
                    .ok()?;
                let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                (list[0]["state"] == "awake").then_some(())
            },
        )
        .await;
        busybox_pod(&ns, "client", &retried("nc -w 5 web 80")).await;
        let (phase, log) = finished(&ns, "client").await;
        assert_eq!(phase, "Succeeded", "{log}");
        assert!(log.contains("served-after-the-wake"), "{log}");
    })
    .await;
}

/// Wake on the first request, on the real node: `kdev sleep` places a waker
/// (kdev's agent image, as the `kdev-waker` ServiceAccount bound to
/// deploy/env-waker.yaml's role) behind the Service; a client pod's one
/// request, sent once, wakes the environment and gets the real pod's answer;
/// then the waker steps aside and exits, and says how long after the pod
/// was Ready the first byte reached the client.
#[tokio::test]
async fn a_sleeping_environment_on_the_real_node_wakes_on_its_first_request() {
    use k8s_openapi::api::apps::v1::Deployment;
    with_namespace("real-waker", |ns| async move {
        require_real_node(&ns).await;
        let role = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/env-waker.yaml"),
        )
        .expect("read deploy/env-waker.yaml");
        let applied = crate::support::kubectl_apply(&role, &[]);
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
        busybox_web(&ns, "web", 1, "answered-by-the-woken-pod").await;
        let out = kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "sleep"])
            .output()
            .expect("run kdev");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("a request wakes it (deployment/web ← service web)"),
            "{said}"
        );
        let waker = eventually(
            Duration::from_secs(60),
            "only the waker to run, Ready",
            || async {
                let pods = ns.api::<Pod>().list(&Default::default()).await.ok()?;
                let [pod] = pods.items.as_slice() else {
                    return None;
                };
                let labels = pod.metadata.labels.as_ref()?;
                let ready = pod
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (labels.get("kdev.dev/role").map(String::as_str) == Some("env-waker") && ready)
                    .then(|| pod.metadata.name.clone())
                    .flatten()
            },
        )
        .await;

        // One request, sent once: no retry loop.
        busybox_pod(
            &ns,
            "client",
            "printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' | nc -w 60 web 80",
        )
        .await;
        let (ended, log) = finished(&ns, "client").await;
        assert_eq!(ended, "Succeeded", "{log}");
        assert!(log.contains("answered-by-the-woken-pod"), "{log}");
        let web: Deployment = ns.api().get("web").await.expect("web");
        assert_eq!(web.spec.and_then(|s| s.replicas), Some(1));

        // The waker steps aside: it exits, and its log has the figure.
        let done = eventually(Duration::from_secs(60), "the waker to exit", || async {
            phase(&ns, &waker).await.filter(|p| p == "Succeeded")
        })
        .await;
        let log = ns
            .api::<Pod>()
            .logs(&waker, &LogParams::default())
            .await
            .expect("the waker's log");
        let figure = log
            .lines()
            .find(|l| l.contains("first byte to a held client"))
            .unwrap_or_else(|| panic!("no figure in the waker's log ({done}):\n{log}"));
        eprintln!("waker: {figure}");
        let history = kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "envs", "--history"])
            .output()
            .expect("run kdev");
        let history = String::from_utf8_lossy(&history.stdout);
        assert!(history.contains("kdev-waker"), "{history}");
    })
    .await;
}

/// Regression: the waker stepped aside for a pod left over from the sleep.
/// A StatefulSet shrinks one pod at a time and a preStop delays each end, so
/// while it went to sleep its older pods were still Ready: the waker saw
/// one, stepped aside and exited, and nothing woke the environment on a
/// request. Here 3 replicas with a 20 s preStop: the waker stays until the
/// last old pod is gone, then a client's one request wakes the set and gets
/// a woken pod's answer.
#[tokio::test]
async fn a_waker_waits_out_a_statefulsets_slow_shrink_and_wakes_it_on_a_request() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    with_namespace("real-sts-waker", |ns| async move {
        require_real_node(&ns).await;
        let role = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/env-waker.yaml"),
        )
        .expect("read deploy/env-waker.yaml");
        let applied = crate::support::kubectl_apply(&role, &[]);
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
        let mut template = json!({
            "metadata": { "labels": { "app": "db" } },
            "spec": {
                "terminationGracePeriodSeconds": 40,
                "securityContext": { "runAsUser": 65534 },
                "containers": [{
                    "name": "db",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "mkdir -p /tmp/www && echo answered-by-$HOSTNAME > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
                    "ports": [{ "containerPort": 8080 }],
                    "readinessProbe": { "tcpSocket": { "port": 8080 }, "periodSeconds": 1 },
                    "lifecycle": { "preStop": { "exec": { "command": ["sleep", "20"] } } }
                }]
            }
        });
        template["spec"]["nodeSelector"] = on_real_node()["nodeSelector"].clone();
        template["spec"]["tolerations"] = on_real_node()["tolerations"].clone();
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": "db" },
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "selector": { "matchLabels": { "app": "db" } },
                "template": template
            }
        }))
        .expect("a StatefulSet");
        ns.api::<StatefulSet>()
            .create(&PostParams::default(), &set)
            .await
            .expect("create the StatefulSet");
        let service = serde_json::from_value(json!({
            "metadata": { "name": "db" },
            "spec": { "selector": { "app": "db" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
        }))
        .expect("a Service");
        ns.api::<k8s_openapi::api::core::v1::Service>()
            .create(&PostParams::default(), &service)
            .await
            .expect("create the Service");
        eventually(Duration::from_secs(120), "3 Ready pods of db", || async {
            let set: StatefulSet = ns.api().get("db").await.ok()?;
            (set.status?.ready_replicas? == 3).then_some(())
        })
        .await;

        let out = kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "sleep"])
            .output()
            .expect("run kdev");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("statefulset/db ← service db"), "{said}");
        let role_of = |pod: &Pod| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kdev.dev/role").cloned())
        };
        // The shrink takes a minute (one pod at a time, 20 s each); the
        // waker is there, Ready, all along and after.
        let waker = eventually(Duration::from_secs(60), "the waker to run", || async {
            let pods = ns.api::<Pod>().list(&Default::default()).await.ok()?;
            pods.items
                .iter()
                .find(|p| role_of(p).as_deref() == Some("env-waker"))
                .and_then(|p| p.metadata.name.clone())
        })
        .await;
        eventually(Duration::from_secs(150), "every old pod of db to be gone", || async {
            let pods = ns.api::<Pod>().list(&Default::default()).await.ok()?;
            let waker_phase = pods
                .items
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(waker.as_str()))
                .and_then(|p| p.status.as_ref()?.phase.clone());
            assert_ne!(
                waker_phase.as_deref(),
                Some("Succeeded"),
                "the waker stepped aside while db was shrinking"
            );
            pods.items.iter().all(|p| role_of(p).is_some()).then_some(())
        })
        .await;
        assert_eq!(phase(&ns, &waker).await.as_deref(), Some("Running"));

        // One request, sent once, wakes the set and is answered by it.
        busybox_pod(
            &ns,
            "client",
            "printf 'GET / HTTP/1.0\\r\\nHost: db\\r\\n\\r\\n' | nc -w 90 db 80",
        )
        .await;
        let (ended, log) = finished(&ns, "client").await;
        assert_eq!(ended, "Succeeded", "{log}");
        assert!(log.contains("answered-by-db-"), "{log}");
        let set: StatefulSet = ns.api().get("db").await.expect("db");
        assert_eq!(set.spec.and_then(|s| s.replicas), Some(3));
    })
    .await;
}

#[tokio::test]
async fn a_swapped_process_acts_as_the_deployments_service_account_whose_token_dies_with_the_session()
 {
    use crate::swap_support::{Swap, assert_restored};
    with_namespace("real-identity", |ns| async move {
        require_real_node(&ns).await;
        // A ServiceAccount that may read ConfigMaps and nothing else.
        let rbac = json!([
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "limited"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "read-configmaps"},
             "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "limited"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
             "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": ns.name}]},
        ]);
        let mut apply = crate::support::kubectl();
        apply.args(["-n", &ns.name, "apply", "-f", "-"]);
        let mut child = apply
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kubectl apply");
        std::io::Write::write_all(
            child.stdin.as_mut().expect("stdin"),
            json!({"apiVersion": "v1", "kind": "List", "items": rbac}).to_string().as_bytes(),
        )
        .expect("write");
        drop(child.stdin.take());
        assert!(child.wait().expect("kubectl").success());
        busybox_web_as(&ns, "ctl", 1, "in-cluster", Some("limited")).await;

        // What the ServiceAccount meets in the cluster for a forbidden call.
        let in_cluster = crate::support::kubectl()
            .args(["-n", &ns.name, "get", "secrets"])
            .arg(format!("--as=system:serviceaccount:{}:limited", ns.name))
            .output()
            .expect("kubectl");
        let forbidden = String::from_utf8_lossy(&in_cluster.stderr).trim().to_owned();
        assert!(forbidden.contains("Forbidden"), "{forbidden}");

        let out = tempfile::tempdir().expect("temp dir");
        let kubectl = kdev::cluster::Binaries::locate().expect("binaries").kubectl;
        let script = format!(
            r#"sa=$KDEV_ROOT/var/run/secrets/kubernetes.io/serviceaccount
k={kubectl}
{{
  echo "kubeconfig: $KUBECONFIG"
  $k get configmaps -o name
  $k get secrets
  echo "namespace: $(cat $sa/namespace)"
  env -u KUBECONFIG $k --server "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT" --certificate-authority "$sa/ca.crt" --token "$(cat $sa/token)" -n "$(cat $sa/namespace)" get secrets
}} > {out}/result 2>&1
cp $sa/token {out}/token
"#,
            kubectl = kubectl.display(),
            out = out.path().display()
        );
        let mut swap = Swap::start(&ns, &["deploy/ctl", "--ttl", "10s"], &["sh", "-c", &script], &[]);
        let status = swap.wait_exit(Duration::from_secs(120)).await;
        assert!(status.success(), "{}", swap.stderr());
        assert!(
            swap.stderr().contains(&format!("as serviceaccount {}/limited", ns.name)),
            "{}",
            swap.stderr()
        );
        let result = std::fs::read_to_string(out.path().join("result")).expect("the result");
        assert!(result.contains("configmap/kube-root-ca.crt"), "allowed: {result}");
        assert_eq!(
            result.matches(&forbidden).count(),
            2,
            "the cluster's own error, through the kubeconfig and in-cluster:\n{forbidden}\n---\n{result}"
        );
        assert!(result.contains(&format!("namespace: {}", ns.name)), "{result}");
        assert_restored(&ns, "ctl", 1, Duration::from_secs(30)).await;

        // The session is over: its Lease, its Secret, and so the token, are
        // gone. Asked with nothing but the token (no kubeconfig, whose client
        // certificate would authenticate first).
        let token = std::fs::read_to_string(out.path().join("token")).expect("the token");
        let server = crate::support::kubectl()
            .args(["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"])
            .output()
            .expect("kubectl config view");
        let server = String::from_utf8_lossy(&server.stdout).trim().to_owned();
        let namespace = ns.name.clone();
        eventually(Duration::from_secs(60), "the token to be refused", || {
            let (token, server, namespace) = (token.clone(), server.clone(), namespace.clone());
            let kubectl = kubectl.clone();
            async move {
                let answer = std::process::Command::new(&kubectl)
                    .args(["get", "configmaps", "-n", &namespace, "--insecure-skip-tls-verify"])
                    .args(["--server", &server, "--token", token.trim()])
                    .env("KUBECONFIG", "/nonexistent")
                    .output()
                    .ok()?;
                let said = String::from_utf8_lossy(&answer.stderr).to_string();
                said.contains("Unauthorized").then_some(())
            }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_watched_swap_restarts_on_save_and_a_failed_build_keeps_the_old_process_serving() {
    use crate::swap_support::{Swap, assert_restored};
    with_namespace("real-reload", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 1, "from-the-cluster").await;
        // The "project": a source file, a build that copies it (and fails on
        // the word broken), and a server that answers what was built.
        let work = tempfile::tempdir().expect("temp dir");
        let src = work.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("body"), "version-one\n").expect("write");
        let built = work.path().join("built");
        let build = format!(
            "! grep -q broken {src}/body && cp {src}/body {built}",
            src = src.display(),
            built = built.display()
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let server = format!(
            "import http.server\nbody = open({built:?}, 'rb').read()\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n    def log_message(self, *a): pass\nhttp.server.ThreadingHTTPServer(('127.0.0.1', {port}), H).serve_forever()\n",
            built = built.display().to_string()
        );
        let src_arg = src.display().to_string();
        let swap = Swap::start(
            &ns,
            &[
                "deploy/web",
                "--port",
                &format!("8080:{port}"),
                "--ttl",
                "10s",
                "--watch",
                &src_arg,
                "--build",
                &build,
            ],
            &["python3", "-c", &server],
            &[],
        );
        swap.wait_swapped().await;
        let ask = |name: String| {
            let ns = &ns;
            async move {
                busybox_pod(ns, &name, &retried("wget -q -O - http://web")).await;
                finished(ns, &name).await.1
            }
        };
        let first = ask("client-1".into()).await;
        assert!(first.contains("version-one"), "{first}\n{}", swap.stderr());

        // A save: built, restarted, and the Service answers the new code.
        std::fs::write(src.join("body"), "version-two\n").expect("write");
        let restarts = |text: &str| text.matches("kdev: restarted the command").count();
        eventually(Duration::from_secs(60), "a restart", || async {
            (restarts(&swap.stderr()) == 1).then_some(())
        })
        .await;
        let second = ask("client-2".into()).await;
        assert!(second.contains("version-two"), "{second}\n{}", swap.stderr());

        // A save that does not build: the running process keeps serving.
        std::fs::write(src.join("body"), "broken\n").expect("write");
        eventually(Duration::from_secs(60), "the build to fail", || async {
            swap.stderr().contains("the build failed").then_some(())
        })
        .await;
        let third = ask("client-3".into()).await;
        assert!(third.contains("version-two"), "{third}\n{}", swap.stderr());
        assert_eq!(restarts(&swap.stderr()), 1, "{}", swap.stderr());

        swap.signal(nix::sys::signal::Signal::SIGTERM);
        let mut swap = swap;
        swap.wait_exit(Duration::from_secs(30)).await;
        assert_restored(&ns, "web", 1, Duration::from_secs(30)).await;
    })
    .await;
}

/// A validating webhook served on this machine: it denies ConfigMaps
/// labelled `deny=true`, over TLS with the certificate in `$KDEV_ROOT/dir`.
fn laptop_webhook(port: u16, dir: &str) -> String {
    format!(
        r#"import http.server, json, os, ssl
d = os.environ['KDEV_ROOT'] + '{dir}'
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        req = review['request']
        labels = req['object']['metadata'].get('labels') or {{}}
        allowed = labels.get('deny') != 'true'
        body = json.dumps({{'apiVersion': 'admission.k8s.io/v1', 'kind': 'AdmissionReview',
            'response': {{'uid': req['uid'], 'allowed': allowed,
                          'status': {{'message': 'denied by the laptop'}}}}}}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), H)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(d + '/tls.crt', d + '/tls.key')
server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#
    )
}

#[tokio::test]
async fn a_webhook_that_calls_the_swapped_deployment_reaches_the_laptop_and_gets_its_ca_back() {
    use crate::swap_support::{Controller, Swap, assert_restored, deploy};
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::ConfigMap;
    with_namespace("real-webhook", |ns| async move {
        require_real_node(&ns).await;
        // The controller's certificate Secret (what cert-manager would
        // make), mounted where the controller reads it.
        let secret = serde_json::from_value(json!({
            "metadata": { "name": "guard-cert" },
            "stringData": { "tls.crt": "from-the-cluster", "tls.key": "from-the-cluster" }
        }))
        .expect("a secret");
        ns.api::<k8s_openapi::api::core::v1::Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the secret");
        let mut guard = crate::swap_support::simple_deployment("guard", 1, &[9443]);
        let spec = &mut guard["spec"]["template"]["spec"];
        spec["nodeSelector"] = on_real_node()["nodeSelector"].clone();
        spec["tolerations"] = on_real_node()["tolerations"].clone();
        spec["securityContext"]["runAsUser"] = json!(65534);
        spec["volumes"] = json!([{ "name": "cert", "secret": { "secretName": "guard-cert" } }]);
        let container = &mut spec["containers"][0];
        container["image"] = json!(BUSYBOX);
        container["imagePullPolicy"] = json!("Never");
        container["command"] = json!(["sleep", "3600"]);
        container["ports"][0]["name"] = json!("webhook");
        container["volumeMounts"] =
            json!([{ "name": "cert", "mountPath": "/etc/guard/certs", "readOnly": true }]);
        deploy(&ns, guard).await;
        let service = serde_json::from_value(json!({
            "metadata": { "name": "guard" },
            "spec": { "selector": { "app": "guard" }, "ports": [{ "port": 443, "targetPort": "webhook" }] }
        }))
        .expect("a service");
        ns.api::<k8s_openapi::api::core::v1::Service>()
            .create(&PostParams::default(), &service)
            .await
            .expect("create the service");

        // The webhook: only ConfigMaps labelled guard=check in this namespace.
        use base64::Engine as _;
        let original = base64::engine::general_purpose::STANDARD
            .encode("-----BEGIN CERTIFICATE-----\nb3JpZ2luYWw=\n-----END CERTIFICATE-----\n");
        let name = format!("kdev-test-{}", ns.name);
        let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": { "name": name, "annotations": {
                "cert-manager.io/inject-ca-from": format!("{}/guard-cert", ns.name)
            } },
            "webhooks": [{
                "name": "deny.guard.kdev.dev",
                "clientConfig": {
                    "service": { "namespace": ns.name, "name": "guard", "path": "/validate", "port": 443 },
                    "caBundle": original
                },
                "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"] }],
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns.name } },
                "objectSelector": { "matchLabels": { "guard": "check" } },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10
            }]
        }))
        .expect("a webhook configuration");
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(ns.client.clone());
        configs
            .create(&PostParams::default(), &config)
            .await
            .expect("create the webhook configuration");
        let bundle_now = || {
            let configs = configs.clone();
            let name = name.clone();
            async move {
                let c = configs.get(&name).await.expect("the webhook configuration");
                let bundle = c.webhooks.unwrap_or_default()[0]
                    .client_config
                    .ca_bundle
                    .clone()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b.0));
                (bundle, c.metadata.annotations.unwrap_or_default())
            }
        };

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let webhook = laptop_webhook(port, "/etc/guard/certs");
        let start = || {
            Swap::start(
                &ns,
                &["deploy/guard", "--port", &format!("9443:{port}"), "--ttl", "6s"],
                &["python3", "-c", &webhook],
                &[],
            )
        };
        let swap = start();
        swap.wait_swapped().await;
        assert!(
            swap.stderr().contains(&format!("webhooks of validatingwebhookconfiguration/{name} call this session")),
            "{}",
            swap.stderr()
        );
        let (during, annotations) = bundle_now().await;
        assert_ne!(during.as_deref(), Some(original.as_str()));
        assert!(!annotations.contains_key("cert-manager.io/inject-ca-from"), "{annotations:?}");
        assert!(annotations.contains_key("kdev.dev/swap-webhooks"), "{annotations:?}");

        // The API server calls the webhook: through the Service, the proxy
        // pod and the tunnel to the laptop, which denies.
        let maps = ns.api::<ConfigMap>();
        let map = |name: &str, deny: bool| -> ConfigMap {
            let mut labels = json!({ "guard": "check" });
            if deny {
                labels["deny"] = json!("true");
            }
            serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } }))
                .expect("a configmap")
        };
        let denied = eventually(Duration::from_secs(60), "the laptop's denial", || async {
            match maps.create(&PostParams::default(), &map("nope", true)).await {
                Err(kube::Error::Api(status)) if status.message.contains("denied by the laptop") => {
                    Some(status.message)
                }
                _ => None,
            }
        })
        .await;
        assert!(denied.contains("deny.guard.kdev.dev"), "{denied}");
        maps.create(&PostParams::default(), &map("fine", false))
            .await
            .expect("the laptop allows an unlabelled one");

        // A normal end: the CA and cert-manager's annotation are back.
        swap.signal(nix::sys::signal::Signal::SIGTERM);
        let mut swap = swap;
        swap.wait_exit(Duration::from_secs(30)).await;
        assert!(swap.stderr().contains("its CA is back"), "{}", swap.stderr());
        let (after, annotations) = bundle_now().await;
        assert_eq!(after.as_deref(), Some(original.as_str()));
        assert_eq!(
            annotations.get("cert-manager.io/inject-ca-from"),
            Some(&format!("{}/guard-cert", ns.name))
        );
        assert!(!annotations.contains_key("kdev.dev/swap-webhooks"));
        assert_restored(&ns, "guard", 1, Duration::from_secs(30)).await;

        // kill -9 during a session: the reaper puts the CA back too.
        let mut again = start();
        again.wait_swapped().await;
        assert_ne!(bundle_now().await.0.as_deref(), Some(original.as_str()));
        again.signal(nix::sys::signal::Signal::SIGKILL);
        again.wait_exit(Duration::from_secs(10)).await;
        let reaper = Controller::start(&ns, &[]);
        eventually(Duration::from_secs(60), "the reaper to restore the CA", || async {
            let (bundle, annotations) = bundle_now().await;
            (bundle.as_deref() == Some(original.as_str())
                && !annotations.contains_key("kdev.dev/swap-webhooks"))
            .then_some(())
        })
        .await;
        assert_restored(&ns, "guard", 1, Duration::from_secs(30)).await;
        drop(reaper);
        configs
            .delete(&name, &Default::default())
            .await
            .expect("delete the webhook configuration");
    })
    .await;
}

/// examples/guard's manifests (`kubectl kustomize`), moved into `ns`: its
/// namespace object left out, its webhook configuration named after `ns`
/// and calling `ns`'s Service for `ns`'s ConfigMaps only.
fn guard_manifests(ns: &str) -> Vec<serde_json::Value> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rendered = crate::support::kubectl()
        .arg("kustomize")
        .arg(repo.join("examples/guard/deploy"))
        .output()
        .expect("kubectl kustomize");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout).to_string();
    let docs = kdev::testing::yaml::load(&text).expect("kustomize's output");
    docs.into_iter()
        .map(|d| d.value)
        .filter(|v| v["kind"] != "Namespace")
        .map(|mut v| {
            if v["kind"] == "ValidatingWebhookConfiguration" {
                v["metadata"]["name"] = json!(format!("guard-{ns}"));
                v["webhooks"][0]["clientConfig"]["service"]["namespace"] = json!(ns);
                v["webhooks"][0]["namespaceSelector"] =
                    json!({ "matchLabels": { "kubernetes.io/metadata.name": ns } });
            } else {
                v["metadata"]["namespace"] = json!(ns);
            }
            // kustomize put the ServiceAccount subject in `guard` too.
            if let Some(subjects) = v["subjects"].as_array_mut() {
                for subject in subjects {
                    subject["namespace"] = json!(ns);
                }
            }
            v
        })
        .collect()
}

#[tokio::test]
async fn the_guard_example_runs_on_this_machine_as_its_service_account_with_its_webhook() {
    use crate::swap_support::{Swap, assert_restored};
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::ConfigMap;
    with_namespace("real-guard", |ns| async move {
        require_real_node(&ns).await;
        let guard = std::path::Path::new(env!("CARGO_BIN_EXE_kdev")).with_file_name("guard");
        assert!(
            guard.is_file(),
            "{} is missing: build the example with `cargo build --bins` (scripts/test does)",
            guard.display()
        );
        let manifests = guard_manifests(&ns.name);
        let mut apply = crate::support::kubectl();
        let mut child = apply
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kubectl apply");
        std::io::Write::write_all(
            child.stdin.as_mut().expect("stdin"),
            json!({ "apiVersion": "v1", "kind": "List", "items": manifests })
                .to_string()
                .as_bytes(),
        )
        .expect("write");
        drop(child.stdin.take());
        assert!(child.wait().expect("kubectl").success());
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(ns.client.clone());
        let webhook = format!("guard-{}", ns.name);

        let guard_arg = guard.display().to_string();
        let swap = Swap::start(&ns, &["deploy/guard", "--ttl", "10s"], &[&guard_arg], &[]);
        swap.wait_swapped().await;
        let said = swap.stderr();
        assert!(
            said.contains(&format!("as serviceaccount {}/guard", ns.name)),
            "{said}"
        );
        assert!(
            said.contains(&format!("validatingwebhookconfiguration/{webhook}")),
            "{said}"
        );

        // Its webhook, called by the API server, answers from this machine.
        let maps = ns.api::<ConfigMap>();
        let labelled = |name: &str, label: &str| -> ConfigMap {
            serde_json::from_value(
                json!({ "metadata": { "name": name, "labels": { label: "true" } } }),
            )
            .expect("a configmap")
        };
        let denied = eventually(Duration::from_secs(60), "guard's denial", || async {
            match maps
                .create(
                    &PostParams::default(),
                    &labelled("nope", "guard.kdev.dev/deny"),
                )
                .await
            {
                Err(kube::Error::Api(status)) if status.message.contains("denied by guard v1") => {
                    Some(status.message)
                }
                _ => None,
            }
        })
        .await;
        assert!(denied.contains("deny.guard.kdev.dev"), "{denied}");
        // Its controller, as the guard ServiceAccount, annotates what it watches.
        maps.create(
            &PostParams::default(),
            &labelled("watched", "guard.kdev.dev/watch"),
        )
        .await
        .expect("create a watched configmap");
        eventually(
            Duration::from_secs(60),
            "guard to check the ConfigMap",
            || async {
                let map = maps.get("watched").await.ok()?;
                (map.metadata.annotations?.get("guard.kdev.dev/checked")? == "v1").then_some(())
            },
        )
        .await;

        swap.signal(nix::sys::signal::Signal::SIGTERM);
        let mut swap = swap;
        swap.wait_exit(Duration::from_secs(30)).await;
        assert_restored(&ns, "guard", 1, Duration::from_secs(30)).await;
        configs
            .delete(&webhook, &Default::default())
            .await
            .expect("delete the webhook configuration");
    })
    .await;
}

/// Sends `payload` through `forward` in odd-sized, flushed writes while
/// reading the echo; returns what came back.
async fn echo_through(forward: kdev::k8s::portforward::PortForward, payload: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt as _;
    let (mut read, mut write) = tokio::io::split(forward);
    let writer = async {
        // Pieces around the tunnel's message limit and tiny ones.
        let sizes = [1usize, 7, 300 * 1024, 12, 256 * 1024, 65_536, 3];
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == payload.len() {
                break;
            }
            let end = (at + size).min(payload.len());
            write.write_all(&payload[at..end]).await.expect("send");
            write.flush().await.expect("flush");
            at = end;
        }
        write
    };
    let reader = async {
        let mut echoed = Vec::with_capacity(payload.len());
        let mut buf = vec![0u8; 64 * 1024];
        while echoed.len() < payload.len() {
            let n = read.read(&mut buf).await.expect("receive");
            if n == 0 {
                break;
            }
            echoed.extend_from_slice(&buf[..n]);
        }
        echoed
    };
    let (_write, echoed) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("the echo within 60 s");
    echoed
}

#[tokio::test]
async fn kdevs_port_forward_speaks_spdy_like_kubectl_and_the_channel_protocol_exactly() {
    use kdev::k8s::portforward::{self, Protocol};
    with_namespace("pf", |ns| async move {
        require_real_node(&ns).await;
        let mut spec = busybox_spec("exec nc -ll -p 8080 -e cat");
        spec["restartPolicy"] = json!("Always");
        create_pod(&ns, "echo", spec).await;
        eventually(Duration::from_secs(60), "the echo pod to run", || async {
            (phase(&ns, "echo").await.as_deref() == Some("Running")).then_some(())
        })
        .await;
        let client = ns.client.clone();
        let namespace = ns.name.clone();

        // This API server takes kubectl's protocol: no silent fallback.
        let forward = portforward::open(&client, &namespace, "echo", 8080)
            .await
            .expect("a port-forward");
        assert_eq!(forward.protocol(), Protocol::Spdy);
        drop(forward);

        let payload: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for protocol in [Protocol::Spdy, Protocol::Channel] {
            // nc may take a moment to listen after the container starts.
            eventually(
                Duration::from_secs(30),
                "an echo through the port-forward",
                || async {
                    let forward =
                        portforward::open_with(&client, &namespace, "echo", 8080, protocol)
                            .await
                            .ok()?;
                    assert_eq!(forward.protocol(), protocol);
                    let echoed = echo_through(forward, &payload[..16]).await;
                    (echoed == payload[..16]).then_some(())
                },
            )
            .await;
            let forward = portforward::open_with(&client, &namespace, "echo", 8080, protocol)
                .await
                .expect("a port-forward");
            let echoed = echo_through(forward, &payload).await;
            assert!(
                echoed == payload,
                "{protocol:?}: {} of {} bytes came back, or corrupted",
                echoed.len(),
                payload.len()
            );

            // Nothing listens on 9: the read fails and says why.
            let mut closed = portforward::open_with(&client, &namespace, "echo", 9, protocol)
                .await
                .expect("the port-forward opens; the runtime's dial fails");
            let mut buf = [0u8; 16];
            let err = tokio::time::timeout(Duration::from_secs(20), closed.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect_err("a read from a closed port fails");
            assert!(err.to_string().contains("refused"), "{protocol:?}: {err}");
        }

        // An unknown pod is refused by the API server, named, not retried
        // with the other protocol.
        let missing = portforward::open(&client, &namespace, "no-such-pod", 8080)
            .await
            .err()
            .expect("no port-forward to a missing pod");
        assert!(format!("{missing:#}").contains("not found"), "{missing:#}");
    })
    .await;
}

/// The command of a swap (the default `--network view`) sees the cluster's
/// network as a pod does and the laptop as before: a Service by its short
/// name, `name.namespace` and full name; a Service in another namespace; a
/// ClusterIP and a pod IP; a headless StatefulSet's pod by name
/// (`kafka-0.kafka`); an ExternalName; a closed port is refused at
/// connect(); a
/// missing name fails at once; the laptop's
/// 127.0.0.1; the laptop reaches the port it listens on, and a pod reaches
/// it through the Service. With `--network host` names of the cluster do
/// not resolve, as before.
#[tokio::test]
async fn a_swapped_command_lives_in_the_clusters_network_and_still_on_the_laptop() {
    use crate::swap_support::{Swap, assert_restored};
    with_namespace("real-netview", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 1, "from-the-cluster").await;
        busybox_web(&ns, "app", 1, "from-the-app-pod").await;
        headless_web(&ns, "kafka", "from-kafka-0").await;
        let services = ns.api::<k8s_openapi::api::core::v1::Service>();
        // An ExternalName: a CNAME the cluster's DNS answers.
        let alias = serde_json::from_value(json!({
            "metadata": { "name": "alias" },
            "spec": { "type": "ExternalName", "externalName": format!("web.{}.svc.cluster.local", ns.name) }
        }))
        .expect("a valid service");
        services
            .create(&PostParams::default(), &alias)
            .await
            .expect("create the ExternalName");
        let cluster_ip = services
            .get("web")
            .await
            .expect("the web Service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("a ClusterIP");
        let pod_ip = eventually(Duration::from_secs(60), "web's pod to have an IP", || async {
            ns.api::<Pod>()
                .list(&kube::api::ListParams::default().labels("app=web"))
                .await
                .ok()?
                .items
                .into_iter()
                .find_map(|pod| pod.status?.pod_ip)
        })
        .await;

        // A server on the laptop's loopback.
        let laptop = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let laptop_port = laptop.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = laptop.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, b"on-the-laptop").await;
            }
        });
        let work = tempfile::tempdir().expect("temp dir");
        let report = work.path().join("report");
        let script = work.path().join("probe.py");
        std::fs::write(&script, NETVIEW_PROBE).expect("write the probe");
        let listen = crate::support::free_port();
        let swap = Swap::start(
            &ns,
            &["deploy/app", "--port", &format!("8080:{listen}"), "--ttl", "10s"],
            &[
                "python3",
                script.to_str().expect("a UTF-8 path"),
                report.to_str().expect("a UTF-8 path"),
                &ns.name,
                &cluster_ip,
                &pod_ip,
                &laptop_port.to_string(),
                &listen.to_string(),
            ],
            &[],
        );
        swap.wait_swapped().await;
        let lines = eventually(Duration::from_secs(60), "the probe's report", || async {
            let text = std::fs::read_to_string(&report).ok()?;
            text.contains("listening").then_some(text)
        })
        .await;
        let expect = [
            "short=from-the-cluster",
            "name.ns=from-the-cluster",
            "fqdn=from-the-cluster",
            "other-namespace=connected",
            "headless=from-kafka-0",
            "external-name=from-the-cluster",
            "closed-port=refused",
            "cluster-ip=from-the-cluster",
            "pod-ip=from-the-cluster",
            "missing=NXDOMAIN fast",
            "laptop=on-the-laptop",
        ];
        for line in expect {
            assert!(lines.contains(line), "expected {line:?} in:\n{lines}\n{}", swap.stderr());
        }

        // The laptop reaches the command's port on its own loopback...
        let from_laptop = eventually(Duration::from_secs(10), "the command's port on the laptop", || async {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", listen)).await.ok()?;
            tokio::io::AsyncWriteExt::write_all(&mut conn, b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
            let mut body = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut body).await.ok()?;
            body.contains("from-the-view").then_some(body)
        })
        .await;
        assert!(from_laptop.contains("from-the-view"));
        // ...and a pod reaches it through the Service.
        busybox_pod(&ns, "client", &retried("nc -w 5 app 80")).await;
        let answer = finished(&ns, "client").await.1;
        assert!(answer.contains("from-the-view"), "{answer}\n{}", swap.stderr());
        swap.signal(nix::sys::signal::Signal::SIGTERM);
        let mut swap = swap;
        swap.wait_exit(Duration::from_secs(30)).await;
        assert_restored(&ns, "app", 1, Duration::from_secs(30)).await;

        // --network host: the machine's own resolver knows no cluster names.
        let host_report = work.path().join("host-report");
        let host = Swap::start(
            &ns,
            &["deploy/app", "--network", "host", "--ttl", "10s"],
            &[
                "python3",
                "-c",
                "import socket,sys\ntry:\n    socket.getaddrinfo('web', 80); r='resolved'\nexcept socket.gaierror: r='unresolved'\nopen(sys.argv[1],'w').write(r)",
                host_report.to_str().expect("a UTF-8 path"),
            ],
            &[],
        );
        let text = eventually(Duration::from_secs(60), "the host-network probe", || async {
            std::fs::read_to_string(&host_report).ok().filter(|t| !t.is_empty())
        })
        .await;
        assert_eq!(text, "unresolved", "{}", host.stderr());
        let mut host = host;
        host.wait_exit(Duration::from_secs(30)).await;
        assert_restored(&ns, "app", 1, Duration::from_secs(30)).await;
    })
    .await;
}

/// The swapped command of the network-view test: each probe's outcome, one
/// per line, into the report; then an HTTP server on its port.
const NETVIEW_PROBE: &str = r#"
import socket, sys, time, http.server
report, ns, cluster_ip, pod_ip, laptop_port, listen = sys.argv[1:7]
out = open(report, "w")
def say(line):
    out.write(line + "\n"); out.flush()
def get(host, port):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").split("\r\n\r\n", 1)[-1].strip()
for label, host, port in [("short", "web", 80), ("name.ns", "web." + ns, 80),
                          ("fqdn", "web." + ns + ".svc.cluster.local", 80),
                          ("cluster-ip", cluster_ip, 80), ("pod-ip", pod_ip, 8080),
                          ("headless", "kafka-0.kafka", 8080), ("external-name", "alias", 80)]:
    try:
        say(label + "=" + get(host, port))
    except Exception as err:
        say(label + "=failed " + repr(err))
try:
    socket.create_connection(("kubernetes.default", 443), timeout=10).close()
    say("other-namespace=connected")
except Exception as err:
    say("other-namespace=failed " + repr(err))
# Nothing listens on the pod's port 9: connect() itself is refused, as in
# a pod, not accepted and then reset.
try:
    socket.create_connection((pod_ip, 9), timeout=10).close()
    say("closed-port=connected")
except ConnectionRefusedError:
    say("closed-port=refused")
except Exception as err:
    say("closed-port=failed " + repr(err))
start = time.monotonic()
try:
    # In the cluster's zone, so the cluster's DNS answers it itself (this
    # local cluster's DNS has no upstream for other names).
    socket.getaddrinfo("nothing-here." + ns + ".svc.cluster.local", 80)
    say("missing=resolved")
except socket.gaierror as err:
    fast = time.monotonic() - start < 3
    say("missing=" + ("NXDOMAIN" if err.errno == socket.EAI_NONAME else repr(err)) + (" fast" if fast else " slow"))
try:
    with socket.create_connection(("127.0.0.1", int(laptop_port)), timeout=5) as s:
        say("laptop=" + s.recv(64).decode())
except Exception as err:
    say("laptop=failed " + repr(err))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"from-the-view\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(("127.0.0.1", int(listen)), Handler)
say("listening")
server.serve_forever()
"#;
