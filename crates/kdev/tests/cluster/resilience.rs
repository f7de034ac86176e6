//! A swap session rides out a dropped tunnel and an API server restart.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    OwnCluster, TestNamespace, client_for, eventually, restart_component, with_namespace,
    with_namespace_in,
};
use crate::swap_support::{LocalAgent, Swap, assert_restored, deploy, simple_deployment};

/// A local server answering every connection with "pong".
async fn pong_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"pong").await;
        }
    });
    port
}

/// One request through the proxy pod's port; `None` while it fails.
async fn request(agent: &LocalAgent) -> Option<()> {
    let mut socket = TcpStream::connect(agent.address(8080)).await.ok()?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut reply))
        .await
        .ok()?
        .ok()?;
    (reply == b"pong").then_some(())
}

async fn session_of(ns: &TestNamespace) -> Option<String> {
    let lease = ns.api::<Lease>().get_opt("kdev-swap-web").await.ok()??;
    lease.metadata.labels?.get("kdev.dev/session").cloned()
}

#[tokio::test]
async fn the_session_survives_the_tunnel_dropping() {
    with_namespace("tunnel-drop", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let mut agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let local = pong_server().await;
        let mut swap = Swap::start(
            &ns,
            &[
                "deploy/web",
                "--ttl",
                "6s",
                "--port",
                &format!("8080:{local}"),
            ],
            &["sleep", "300"],
            &[],
        );
        swap.wait_swapped().await;
        eventually(Duration::from_secs(10), "a first request", || {
            request(&agent)
        })
        .await;
        let session = session_of(&ns).await.expect("a session");

        agent.kill();
        eventually(Duration::from_secs(20), "the CLI to notice", || async {
            swap.stderr()
                .contains("dropped; reconnecting")
                .then_some(())
        })
        .await;
        agent.restart().await;
        eventually(
            Duration::from_secs(20),
            "the tunnel to come back",
            || async { swap.stderr().contains("is back").then_some(()) },
        )
        .await;
        eventually(
            Duration::from_secs(10),
            "a request after reconnecting",
            || request(&agent),
        )
        .await;

        // Same session, Deployment still swapped, CLI still running.
        assert_eq!(session_of(&ns).await, Some(session));
        let d = ns.api::<Deployment>().get("web").await.expect("deployment");
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(0));
        assert!(
            swap.child.try_wait().expect("poll").is_none(),
            "{}",
            swap.stderr()
        );
        swap.signal(Signal::SIGTERM);
        swap.wait_exit(Duration::from_secs(20)).await;
        assert_restored(&ns, "web", 2, Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test]
async fn the_session_survives_an_api_server_restart() {
    let (cluster, kubeconfig) = OwnCluster::up("apiserver");
    let dir = kubeconfig.parent().expect("cluster dir").to_owned();
    with_namespace_in(&kubeconfig, "restart", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let local = pong_server().await;
        let mut swap = Swap::start(
            &ns,
            &[
                "deploy/web",
                "--ttl",
                "20s",
                "--port",
                &format!("8080:{local}"),
            ],
            &["sleep", "300"],
            &[],
        );
        swap.wait_swapped().await;
        let session = session_of(&ns).await.expect("a session");

        // Kill kube-apiserver (a crash) and start it again with the same command line.
        restart_component(&dir, "kube-apiserver", Duration::from_secs(2)).await;
        let client = client_for(&ns.kubeconfig).await;
        eventually(
            Duration::from_secs(60),
            "the apiserver to serve again",
            || async { client.apiserver_version().await.ok().map(|_| ()) },
        )
        .await;

        // Past at least one renewal: the session is the same, traffic flows.
        let leases = ns.api::<Lease>();
        let renewed_at = || async {
            leases
                .get("kdev-swap-web")
                .await
                .ok()?
                .spec?
                .renew_time
                .map(|t| t.0)
        };
        let before = eventually(Duration::from_secs(20), "the session lease", renewed_at).await;
        eventually(
            Duration::from_secs(30),
            "a renewal after the restart",
            || async { renewed_at().await.filter(|t| *t != before) },
        )
        .await;
        eventually(
            Duration::from_secs(20),
            "a request after the restart",
            || request(&agent),
        )
        .await;
        assert_eq!(session_of(&ns).await, Some(session));
        assert!(
            swap.child.try_wait().expect("poll").is_none(),
            "{}",
            swap.stderr()
        );
        swap.signal(Signal::SIGTERM);
        swap.wait_exit(Duration::from_secs(30)).await;
        assert_restored(&ns, "web", 2, Duration::from_secs(10)).await;
    })
    .await;
    drop(cluster);
}
