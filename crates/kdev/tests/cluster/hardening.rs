//! Regressions found by the hardening pass (issue 9): each test fails on
//! 38a052f and names what it pins.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::support::{
    event_notes, eventually, http_get, kdev, kubeconfig_as, wait_child, with_namespace,
};
use crate::swap_support::{
    Controller, LocalAgent, Swap, assert_restored, deploy, simple_deployment,
};

/// True while process `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// The folder `kdev swap` printed as `$KDEV_ROOT`.
fn kdev_root(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("kdev:   files under "))
        .and_then(|rest| rest.strip_suffix(" ($KDEV_ROOT)"))
        .unwrap_or_else(|| panic!("no $KDEV_ROOT line in: {stderr}"))
        .to_owned()
}

/// Regression: kill -9 of `kdev swap` left the local command running
/// (re-parented, still serving) and the session folder, with the
/// container's Secret files, on disk forever.
#[tokio::test]
async fn a_killed_kdev_takes_its_local_command_and_files_with_it() {
    with_namespace("kill-child", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let home = tempfile::tempdir().expect("temp dir");
        let pid_file = home.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
        let home_env = home.path().to_str().expect("utf-8").to_owned();
        let swap = Swap::start(
            &ns,
            &["deploy/web", "--ttl", "6s"],
            &["sh", "-c", &script],
            &[("KDEV_HOME", &home_env)],
        );
        swap.wait_swapped().await;
        let pid: i32 = eventually(Duration::from_secs(10), "the command's pid", || async {
            std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
        })
        .await;
        let root = kdev_root(&swap.stderr());
        assert!(running(pid));
        assert!(Path::new(&root).is_dir());

        swap.signal(Signal::SIGKILL);
        eventually(
            Duration::from_secs(10),
            "the local command to die with kdev",
            || async { (!running(pid)).then_some(()) },
        )
        .await;
        // kdev could not clean up after itself; the next kdev command does.
        assert!(Path::new(&root).is_dir(), "nothing removed it yet");
        let next = kdev()
            .args(["version", "--client"])
            .env("KDEV_HOME", &home_env)
            .output()
            .expect("run kdev");
        assert!(next.status.success());
        assert!(!Path::new(&root).exists(), "{root} outlived its session");
    })
    .await;
}

/// Regression: a signal while `kdev swap` waited for its proxy pod killed
/// it without restoring (the handlers were installed only after start-up).
#[tokio::test]
async fn a_signal_during_start_up_restores_at_once() {
    with_namespace("start-signal", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        // No agent: the tunnel never comes up, so kdev stays in start-up.
        let mut swap = Swap::start(
            &ns,
            &["deploy/web", "--ttl", "30s", "--timeout", "120s"],
            &["true"],
            &[],
        );
        let pods = ns.api::<Pod>();
        eventually(
            Duration::from_secs(30),
            "the proxy pod to exist",
            || async {
                let list = pods
                    .list(&ListParams::default().labels("kdev.dev/role=swap-proxy"))
                    .await
                    .ok()?;
                (!list.items.is_empty()).then_some(())
            },
        )
        .await;
        swap.signal(Signal::SIGTERM);
        let status = swap.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(128 + 15), "{}", swap.stderr());
        assert!(
            swap.stderr().contains("during start-up"),
            "{}",
            swap.stderr()
        );
        // Restored by kdev itself: no controller runs here and the TTL is 30 s.
        assert_restored(&ns, "web", 2, Duration::from_secs(10)).await;
    })
    .await;
}

/// Regression: a tunnel that could not connect timed out with no cause
/// (the port-forward errors were dropped at debug level).
#[tokio::test]
async fn a_tunnel_that_cannot_open_says_why() {
    with_namespace("tunnel-why", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        let mut swap = Swap::start(&ns, &["deploy/web", "--timeout", "5s"], &["true"], &[]);
        let status = swap.wait_exit(Duration::from_secs(60)).await;
        assert_eq!(status.code(), Some(1));
        let err = swap.stderr();
        assert!(err.contains("could not open a tunnel"), "{err}");
        assert!(err.contains("last error:"), "{err}");
        assert_restored(&ns, "web", 1, Duration::from_secs(10)).await;
    })
    .await;
}

/// Regression: names with dots were rejected, and the swap's own selector
/// renderer ignored `matchExpressions`.
#[tokio::test]
async fn a_deployment_named_with_dots_and_selected_by_expressions_is_swapped() {
    with_namespace("dots", |ns| async move {
        let mut manifest = simple_deployment("web.v2", 1, &[8080]);
        manifest["spec"]["selector"] = json!({
            "matchLabels": { "app": "web.v2" },
            "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["front"] }]
        });
        manifest["spec"]["template"]["metadata"]["labels"] =
            json!({ "app": "web.v2", "tier": "front" });
        manifest["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
            { "name": "MY_POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }
        ]);
        deploy(&ns, manifest).await;
        let original = ns
            .api::<Pod>()
            .list(&ListParams::default().labels("app=web.v2"))
            .await
            .expect("list pods")
            .items
            .into_iter()
            .find_map(|p| p.metadata.name)
            .expect("the original pod");
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let out = tempfile::tempdir().expect("temp dir");
        let env_file = out.path().join("env");
        let mut swap = Swap::start(
            &ns,
            &[
                "deploy/web.v2",
                "--env-file",
                env_file.to_str().expect("utf-8"),
            ],
            &["true"],
            &[],
        );
        let status = swap.wait_exit(Duration::from_secs(60)).await;
        assert!(status.success(), "{}", swap.stderr());
        // The downward API came from the running original, found through
        // the full selector (labels and expressions).
        let env = std::fs::read_to_string(&env_file).expect("env file");
        assert!(env.contains(&format!("MY_POD={original}")), "{env}");
        assert_restored(&ns, "web.v2", 1, Duration::from_secs(10)).await;
    })
    .await;
}

/// Regression: the controller's tasks were not watched; a reaper whose loop
/// returned left a process that said it was ready and reaped nothing.
#[tokio::test]
async fn a_reaper_that_stops_ends_the_controller() {
    with_namespace("ctrl-end", |ns| async move {
        let mut controller = Controller::launch(
            &ns,
            &ns.kubeconfig,
            &[],
            &[("KDEV_FAULT_END_REAPER_AFTER_SYNC", "1")],
        );
        let status = wait_child(
            &mut controller.child,
            Duration::from_secs(30),
            "the controller",
        )
        .await;
        let err = controller.log();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("the controller's reaper task ended"), "{err}");
    })
    .await;
}

/// Regression: /readyz said ok as soon as the API server answered, even
/// when the reaper could not list what it watches (missing RBAC).
#[tokio::test]
async fn readyz_waits_until_the_watches_have_synced() {
    with_namespace("ctrl-sync", |ns| async move {
        let dir = tempfile::tempdir().expect("temp dir");
        // An identity with no rights beyond what every authenticated user has.
        let kubeconfig = kubeconfig_as(
            &format!("system:serviceaccount:{}:nobody", ns.name),
            dir.path(),
        );
        let controller = Controller::launch(&ns, &kubeconfig, &[], &[]);
        let port = controller.port;
        // Live, connected (the version endpoint is public), but not ready.
        eventually(
            Duration::from_secs(20),
            "the controller to answer /healthz",
            || async {
                let (status, _) = http_get(port, "/healthz").await?;
                (status == 200).then_some(())
            },
        )
        .await;
        let (status, body) = eventually(
            Duration::from_secs(20),
            "a /readyz answer past connecting",
            || async {
                let (status, body) = http_get(port, "/readyz").await?;
                (!body.contains("not connected")).then_some((status, body))
            },
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("have not synced"), "{body}");
    })
    .await;
}

/// Regression: kube's event recorder folded a second SwapRestored on the same
/// Deployment into the first Event, whose note named the first session.
#[tokio::test]
async fn each_restored_session_has_its_own_event() {
    with_namespace("ctrl-events", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let _controller = Controller::start(&ns, &[]);
        for round in 1..=2usize {
            let mut dead = Swap::start(
                &ns,
                &["deploy/web", "--ttl", "3s"],
                &["true"],
                &[("KDEV_SWAP_CRASH_AFTER", "3")],
            );
            dead.wait_exit(Duration::from_secs(30)).await;
            assert_restored(&ns, "web", 2, Duration::from_secs(20)).await;
            eventually(
                Duration::from_secs(10),
                "one SwapRestored event per session",
                || async { (event_notes(&ns, "SwapRestored").await.len() == round).then_some(()) },
            )
            .await;
        }
        let mut sessions: Vec<String> = event_notes(&ns, "SwapRestored")
            .await
            .into_iter()
            .filter_map(|note| note.rsplit_once("session ").map(|(_, s)| s.to_owned()))
            .collect();
        sessions.dedup();
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert_ne!(sessions[0], sessions[1]);
    })
    .await;
}

/// Regression (issue 8): any connection to the agent's tunnel port became
/// the tunnel, so a readiness probe (or any pod) took over the session's
/// inbound traffic. Now a connection that does not prove the session's
/// token is closed and the CLI's tunnel keeps serving.
#[tokio::test]
async fn a_connection_without_the_token_cannot_take_over_the_tunnel() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    with_namespace("tunnel-auth", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        let agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let local = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"from the laptop\n").await;
            }
        });
        let swap = Swap::start(
            &ns,
            &["deploy/web", "--port", &format!("8080:{local}")],
            &["sleep", "300"],
            &[],
        );
        swap.wait_swapped().await;
        let (host, port) = agent.address(8080);
        let request = || async move {
            let mut socket = tokio::net::TcpStream::connect((host, port)).await.ok()?;
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut answer))
                .await
                .ok()?
                .ok()?;
            answer.contains("from the laptop").then_some(())
        };
        eventually(
            Duration::from_secs(10),
            "a request through the tunnel",
            request,
        )
        .await;

        for intruder in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &[0u8; 41][..],
            &b""[..],
        ] {
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", agent.tunnel))
                .await
                .expect("connect to the agent's tunnel port");
            socket.write_all(intruder).await.expect("write");
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(8), socket.read_to_end(&mut rest)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "the agent answered an unauthenticated connection: {rest:?}"
            );
        }
        // The CLI's tunnel is still the one serving.
        request().await.expect("a request after the intruders");
        assert!(swap.stderr().contains("kdev: swapped"), "{}", swap.stderr());
    })
    .await;
}
