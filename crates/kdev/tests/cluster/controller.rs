//! `kdev controller` replicas, running with exactly deploy/'s RBAC, elect
//! one leader, and hand leadership over when the leader stops.

use std::process::Child;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use k8s_openapi::api::events::v1::Event;
use kube::Api;

use crate::support::{
    eventually, free_port, http_get, kdev, kubeconfig_as, kubectl_apply, render_deploy,
    with_namespace,
};
use crate::swap_support::{Swap, assert_restored, deploy, simple_deployment};

/// A controller process, killed when dropped.
struct Replica {
    identity: &'static str,
    port: u16,
    child: Child,
}

impl Replica {
    fn start(identity: &'static str, kubeconfig: &std::path::Path, namespace: &str) -> Self {
        let port = free_port();
        let child = kdev()
            .args(["controller", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--lease-namespace", namespace, "--identity", identity])
            .args(["--watch-namespace", namespace])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .spawn()
            .expect("start kdev controller");
        Self {
            identity,
            port,
            child,
        }
    }

    async fn readyz(&self) -> Option<String> {
        let (status, body) = http_get(self.port, "/readyz").await?;
        (status == 200).then_some(body)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_hand_over_on_sigterm() {
    with_namespace("ctrl", |ns| async move {
        let deployed = render_deploy(&ns.name, &[]);
        let applied = kubectl_apply(&deployed.manifests, &[]);
        assert!(
            applied.status.success(),
            "apply deploy/: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let account = format!("system:serviceaccount:{}:kdev-controller", ns.name);
        let kubeconfig = kubeconfig_as(&account, dir.path());

        let a = Replica::start("replica-a", &kubeconfig, &ns.name);
        let b = Replica::start("replica-b", &kubeconfig, &ns.name);
        let leases = ns.api::<Lease>();
        let holder = || async {
            let lease = leases.get_opt("kdev-controller").await.ok()??;
            lease.spec?.holder_identity
        };
        let first = eventually(Duration::from_secs(30), "a leader", holder).await;
        let (mut leader, follower) = if first == a.identity { (a, b) } else { (b, a) };
        assert_eq!(first, leader.identity);

        let leader_ready = eventually(Duration::from_secs(10), "the leader's /readyz", || {
            leader.readyz()
        })
        .await;
        assert!(leader_ready.contains("leader"), "{leader_ready}");
        let follower_ready = eventually(Duration::from_secs(10), "the follower's /readyz", || {
            follower.readyz()
        })
        .await;
        assert!(follower_ready.contains("follower"), "{follower_ready}");
        let (_, metrics) = http_get(leader.port, "/metrics")
            .await
            .expect("metrics answer");
        assert!(metrics.contains("kdev_controller_leader 1"), "{metrics}");

        // SIGTERM: the leader releases the Lease, so the follower takes over
        // at its next read instead of after a whole lease duration.
        kill(Pid::from_raw(leader.child.id() as i32), Signal::SIGTERM).expect("signal the leader");
        let status = leader.child.wait().expect("the leader exits");
        assert!(status.success(), "the leader exited with {status}");
        let next = eventually(
            Duration::from_secs(10),
            "the follower to take over",
            || async { holder().await.filter(|h| h == follower.identity) },
        )
        .await;
        assert_eq!(next, follower.identity);
        let lease = leases.get("kdev-controller").await.expect("the lease");
        assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));
        eventually(
            Duration::from_secs(5),
            "the new leader's metrics",
            || async {
                let (_, metrics) = http_get(follower.port, "/metrics").await?;
                metrics.contains("kdev_controller_leader 1").then_some(())
            },
        )
        .await;

        // The leader, with nothing but deploy/'s RBAC, restores a dead swap
        // session and records an Event saying so.
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let mut dead = Swap::start(
            &ns,
            &["deploy/web", "--ttl", "3s"],
            &["true"],
            &[("KDEV_SWAP_CRASH_AFTER", "3")],
        );
        dead.wait_exit(Duration::from_secs(30)).await;
        assert!(
            dead.stderr().contains("crash injected after step 3"),
            "{}",
            dead.stderr()
        );
        assert_restored(&ns, "web", 2, Duration::from_secs(20)).await;
        let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
        let restored = eventually(Duration::from_secs(10), "a SwapRestored event", || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("SwapRestored"))
        })
        .await;
        let note = restored.note.unwrap_or_default();
        assert!(note.contains("scaled back to 2 replicas"), "{note}");
        assert!(note.contains("not renewed"), "{note}");
        let (_, metrics) = http_get(follower.port, "/metrics")
            .await
            .expect("metrics answer");
        assert!(
            metrics.contains("kdev_controller_swap_restores_total 1"),
            "{metrics}"
        );
    })
    .await;
}
