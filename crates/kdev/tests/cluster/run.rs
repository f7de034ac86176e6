//! `kdev run` on the real node: a command with a Deployment's environment
//! and network while the Deployment keeps serving.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, LogParams};

use crate::real_node::{busybox_pod, busybox_web, require_real_node};
use crate::support::{TestNamespace, eventually, with_namespace};
use crate::swap_support::{Controller, Swap, run_objects};

/// Two `kdev run` sessions of one Deployment of 2 replicas at once: each
/// command gets the container's env and reaches another Service by name;
/// the Deployment is never changed, its two pods are the same pods
/// throughout, no Service routes to a session's agent pod, and a client
/// calling the Deployment through its Service sees no failure; `kdev
/// sessions` lists both. A session whose command exits ends with the
/// command's status, a third ends on Ctrl-C with 130, and kill -9 of the
/// first is ended by the reaper within its TTL plus 2 s; after each, no
/// object in the cluster and no process or mount on this machine is left.
#[tokio::test]
async fn kdev_run_leaves_the_workload_serving_and_is_reaped_after_kill_9() {
    with_namespace("real-run", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 1, "from-web").await;
        busybox_web(&ns, "app", 2, "from-the-app-pod").await;
        let _reaper = Controller::start(&ns, &[]);
        // A client of the Deployment, five requests a second, for the
        // whole test.
        busybox_pod(
            &ns,
            "client",
            "i=0; while true; do i=$((i+1)); if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 app 80 | grep -q from-the-app-pod; then echo \"ok $i\"; else echo \"FAIL $i\"; fi; sleep 0.2; done",
        )
        .await;
        eventually(Duration::from_secs(60), "the client's first answer", || async {
            client_log(&ns).await.contains("ok ").then_some(())
        })
        .await;
        let pods_before = app_pods(&ns).await;
        assert_eq!(pods_before.len(), 2, "{pods_before:?}");
        let generation_before = ns
            .api::<Deployment>()
            .get("app")
            .await
            .expect("deployment/app")
            .metadata
            .generation;

        let work = tempfile::tempdir().expect("temp dir");
        let script = work.path().join("probe.py");
        std::fs::write(&script, RUN_PROBE).expect("write the probe");
        let report = |name: &str| work.path().join(name).display().to_string();
        let start = |name: &str| {
            Swap::run(
                &ns,
                &["deploy/app", "--ttl", "6s"],
                &["python3", script.to_str().expect("a UTF-8 path"), &report(name)],
                &[],
            )
        };
        let mut first = start("first");
        let mut second = start("second");
        for (session, name) in [(&first, "first"), (&second, "second")] {
            let text = eventually(Duration::from_secs(90), "a run's report", || async {
                std::fs::read_to_string(report(name)).ok()
            })
            .await;
            assert_eq!(
                text, "FROM=from-the-app-pod web=from-web\n",
                "{}",
                session.stderr()
            );
        }
        assert_eq!(run_objects(&ns, None).await, (2, 2), "two sessions, each with its agent pod");
        // kdev sessions lists both, as runs.
        let listed = crate::support::kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "sessions"])
            .output()
            .expect("run kdev sessions");
        let table = String::from_utf8_lossy(&listed.stdout);
        let runs = table
            .lines()
            .filter(|l| l.contains(" run ") && l.contains("deployment/app") && l.contains("alive"))
            .count();
        assert_eq!(runs, 2, "{table}");
        // The Service's endpoints are the Deployment's two pods, never an agent.
        let endpoints = eventually(Duration::from_secs(30), "app's endpoints", || async {
            let slices = ns
                .api::<EndpointSlice>()
                .list(&ListParams::default().labels("kubernetes.io/service-name=app"))
                .await
                .ok()?;
            let targets: BTreeSet<String> = slices
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter_map(|e| e.target_ref.as_ref()?.name.clone())
                .collect();
            (targets.len() == 2).then_some(targets)
        })
        .await;
        assert!(
            endpoints.iter().all(|name| !name.contains("-kdev-run-")),
            "{endpoints:?}"
        );

        // The second command exits by itself: kdev exits with its status
        // and takes its session's objects.
        std::fs::write(report("second.stop"), b"").expect("stop the second");
        let status = second.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{status:?}\n{}", second.stderr());
        assert!(
            second.stderr().contains("the run session's agent pod and Lease are removed"),
            "{}",
            second.stderr()
        );
        eventually(Duration::from_secs(30), "one session left", || async {
            (run_objects(&ns, None).await == (1, 1)).then_some(())
        })
        .await;
        assert_left_nothing(&second, &report("second")).await;

        // A third, ended by Ctrl-C (SIGINT) while its command runs.
        let mut third = start("third");
        eventually(Duration::from_secs(90), "the third run's report", || async {
            std::fs::read_to_string(report("third")).ok()
        })
        .await;
        third.signal(nix::sys::signal::Signal::SIGINT);
        let status = third.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(130), "{}", third.stderr());
        eventually(Duration::from_secs(30), "the third run to end", || async {
            (run_objects(&ns, None).await == (1, 1)).then_some(())
        })
        .await;
        assert_left_nothing(&third, &report("third")).await;

        // kill -9 of the first: the reaper ends it within 6 s + 2 s, and
        // nothing of it is left on this machine: its command and the
        // network view's helper die with kdev, and with them their
        // namespaces and the mounts in them.
        let first_report = report("first");
        assert!(
            !processes_naming(&first_report).is_empty(),
            "the first run's command is not running"
        );
        first.signal(nix::sys::signal::Signal::SIGKILL);
        first.wait_exit(Duration::from_secs(10)).await;
        let killed = std::time::Instant::now();
        eventually(Duration::from_secs(8), "the reaper to end the killed run", || async {
            (run_objects(&ns, None).await == (0, 0)).then_some(())
        })
        .await;
        let reaped_in = killed.elapsed();
        assert_left_nothing(&first, &first_report).await;

        // The Deployment was never touched, and kept serving.
        assert_eq!(app_pods(&ns).await, pods_before, "the same two pods");
        let deployment = ns.api::<Deployment>().get("app").await.expect("deployment/app");
        assert_eq!(deployment.metadata.generation, generation_before);
        let kdev_keys = deployment
            .metadata
            .annotations
            .unwrap_or_default()
            .into_keys()
            .chain(deployment.metadata.labels.unwrap_or_default().into_keys())
            .filter(|k| k.starts_with("kdev.dev/"))
            .count();
        assert_eq!(kdev_keys, 0, "kdev marked the Deployment");
        let answered_before = client_log(&ns).await.matches("ok ").count();
        let log = eventually(Duration::from_secs(10), "the client's next answers", || async {
            let log = client_log(&ns).await;
            (log.matches("ok ").count() > answered_before + 3).then_some(log)
        })
        .await;
        let after_first_ok = &log[log.find("ok ").expect("an answer")..];
        assert!(
            !after_first_ok.contains("FAIL"),
            "a request to the Deployment failed during the runs:\n{log}"
        );
        eprintln!("kill -9 of kdev run ended by the reaper in {reaped_in:?}");
    })
    .await;
}

/// Each run's command: the container's env var and another Service by its
/// short name, written to the report; then it waits for `REPORT.stop`.
const RUN_PROBE: &str = r#"
import os, sys, time, urllib.request
report = sys.argv[1]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = opener.open("http://web/", timeout=10).read().decode().strip()
with open(report + ".tmp", "w") as out:
    out.write("FROM=%s web=%s\n" % (os.environ.get("FROM"), body))
os.rename(report + ".tmp", report)
while not os.path.exists(report + ".stop"):
    time.sleep(0.1)
"#;

/// The UIDs of deployment/app's pods that are not being deleted.
async fn app_pods(ns: &TestNamespace) -> BTreeSet<String> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels("app=app"))
        .await
        .expect("list app's pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid)
        .collect()
}

/// Nothing of a session is left on this machine: no process naming its
/// command's report (the command, the network view's helper), no mount
/// naming its session id.
async fn assert_left_nothing(session: &Swap, report: &str) {
    let id = session
        .stderr()
        .lines()
        .find_map(|l| {
            l.strip_prefix("kdev: running as")?
                .rsplit_once("; session ")?
                .1
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .expect("the session's id");
    eventually(
        Duration::from_secs(5),
        "the session's processes to be gone",
        || async { processes_naming(report).is_empty().then_some(()) },
    )
    .await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("this machine's mounts");
    assert!(
        !mounts.contains(&id),
        "a mount of session {id} is left:\n{mounts}"
    );
}

/// The processes on this machine whose command line contains `text`.
fn processes_naming(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| {
            let line = std::fs::read(entry.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&line).replace('\0', " ");
            line.contains(text).then_some(line)
        })
        .collect()
}

async fn client_log(ns: &TestNamespace) -> String {
    ns.api::<Pod>()
        .logs("client", &LogParams::default())
        .await
        .unwrap_or_default()
}
