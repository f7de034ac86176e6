//! The cluster is never left broken: kill `kdev swap` (of a Deployment, a
//! StatefulSet, a ReplicaSet and an Argo Rollout) and `kdev run` with
//! SIGKILL after each step of their start-up and shutdown, and the reaper
//! restores it all.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use std::os::unix::process::ExitStatusExt;

use kdev::swap::workload::{WorkloadKind, WorkloadRef};

use crate::support::{OwnCluster, eventually, wait_child, with_namespace, with_namespace_in};
use crate::swap_support::{
    Controller, LocalAgent, Swap, apply_rollout_crd, assert_restored, assert_workload_restored,
    create_running, deploy, run_objects, simple_deployment, stand_in_rollouts,
};

const STEPS: u32 = 10;
const TTL_SECS: u64 = 3;

/// The workloads of one crash step: a Deployment, a StatefulSet, a
/// ReplicaSet and an Argo Rollout, `web<step>`, `db<step>`, `cache<step>`
/// and `ro<step>`.
fn workloads(step: u32) -> [(WorkloadRef, serde_json::Value); 4] {
    let replicas = (step % 3 + 1) as i32;
    let deployment = format!("web{step}");
    let mut set = simple_deployment(&format!("db{step}"), replicas, &[8080]);
    set["kind"] = serde_json::json!("StatefulSet");
    set["spec"]["serviceName"] = serde_json::json!(format!("db{step}"));
    set["spec"]["podManagementPolicy"] = serde_json::json!("Parallel");
    let mut replica_set = simple_deployment(&format!("cache{step}"), replicas, &[8080]);
    replica_set["kind"] = serde_json::json!("ReplicaSet");
    let mut rollout = simple_deployment(&format!("ro{step}"), replicas, &[8080]);
    rollout["apiVersion"] = serde_json::json!("argoproj.io/v1alpha1");
    rollout["kind"] = serde_json::json!("Rollout");
    rollout["spec"]["strategy"] = serde_json::json!({ "canary": {} });
    [
        (
            WorkloadRef::deployment(&deployment),
            simple_deployment(&deployment, replicas, &[8080]),
        ),
        (
            WorkloadRef {
                kind: WorkloadKind::StatefulSet,
                name: format!("db{step}"),
            },
            set,
        ),
        (
            WorkloadRef {
                kind: WorkloadKind::ReplicaSet,
                name: format!("cache{step}"),
            },
            replica_set,
        ),
        (
            WorkloadRef {
                kind: WorkloadKind::Rollout,
                name: format!("ro{step}"),
            },
            rollout,
        ),
    ]
}

fn replicas(step: u32) -> i32 {
    (step % 3 + 1) as i32
}

/// On a cluster of its own: the Rollout CRD is cluster-wide.
#[tokio::test]
async fn every_crash_point_is_restored_by_the_reaper() {
    let (_cluster, kubeconfig) = OwnCluster::up("crash");
    with_namespace_in(&kubeconfig, "crash", |ns| async move {
        apply_rollout_crd(&ns).await;
        let stand_in = tokio::spawn(stand_in_rollouts(ns.client.clone(), ns.name.clone()));
        let _reaper = Controller::start(&ns, &[]);
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let created: Vec<_> = (1..=STEPS)
            .flat_map(workloads)
            .map(|(workload, manifest)| create_running(&ns, workload, manifest))
            .collect();
        futures::future::join_all(created).await;

        // kdev swap of each kind, and kdev run of each Deployment beside its
        // swap (as a team would have them), each killed after its step.
        let ttl = format!("{TTL_SECS}s");
        let mut sessions: Vec<(u32, &str, WorkloadRef, Swap)> = Vec::new();
        for step in 1..=STEPS {
            let crash = step.to_string();
            for (workload, _) in workloads(step) {
                let target = workload.to_string();
                let args = [target.as_str(), "--ttl", ttl.as_str()];
                let env = [("KDEV_SWAP_CRASH_AFTER", crash.as_str())];
                let swap = Swap::start(&ns, &args, &["sleep", "1"], &env);
                sessions.push((step, "swap", workload.clone(), swap));
                if workload.kind == WorkloadKind::Deployment {
                    let run = Swap::run(&ns, &args, &["sleep", "1"], &env);
                    sessions.push((step, "run", workload, run));
                }
            }
        }

        for (step, _, _, session) in &mut sessions {
            let status = session.wait_exit(Duration::from_secs(90)).await;
            assert_eq!(
                status.signal(),
                Some(9),
                "step {step}: kdev was not killed: {}",
                session.stderr()
            );
            assert!(
                session
                    .stderr()
                    .contains(&format!("crash injected after step {step}")),
                "{}",
                session.stderr()
            );
        }
        let killed = Instant::now();
        let mut restored = 0;
        let mut lines = Vec::new();
        for (step, mode, workload, _) in &sessions {
            if *mode == "swap" {
                assert_workload_restored(
                    &ns,
                    workload,
                    replicas(*step),
                    Duration::from_secs(TTL_SECS + 15),
                )
                .await;
            } else {
                // A run changed nothing but its own objects: ended is its
                // Lease and agent pod gone.
                eventually(
                    Duration::from_secs(TTL_SECS + 15),
                    &format!("run step {step}: its Lease and agent pod to go"),
                    || async { (run_objects(&ns, Some(workload)).await == (0, 0)).then_some(()) },
                )
                .await;
            }
            restored += 1;
            lines.push(format!(
                "  {mode} {} step {step:>2}: restored {:.1}s after the kills",
                workload.kind.name(),
                killed.elapsed().as_secs_f64()
            ));
        }
        eprintln!("{}", lines.join("\n"));
        println!("restored {restored}/{} crash points", sessions.len());
        assert_eq!(restored, sessions.len());
        stand_in.abort();
    })
    .await;
}

#[tokio::test]
async fn a_reaper_killed_mid_restore_leaves_the_rest_to_its_successor() {
    with_namespace("reaper-crash", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        // A session whose CLI died right after scaling to 0.
        let mut dead = Swap::start(
            &ns,
            &["deploy/web", "--ttl", "3s"],
            &["true"],
            &[("KDEV_SWAP_CRASH_AFTER", "3")],
        );
        dead.wait_exit(Duration::from_secs(30)).await;

        let mut first = Controller::start(&ns, &[("KDEV_RESTORE_CRASH_AFTER_DEPLOYMENT", "1")]);
        let status = wait_child(
            &mut first.child,
            Duration::from_secs(30),
            "the first reaper",
        )
        .await;
        assert_eq!(status.signal(), Some(9));
        // It restored the Deployment but never reached the Lease.
        let d = ns.api::<Deployment>().get("web").await.expect("deployment");
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(2));
        assert!(
            ns.api::<Lease>()
                .get_opt("kdev-swap-web")
                .await
                .expect("read")
                .is_some()
        );

        let _second = Controller::start(&ns, &[]);
        assert_restored(&ns, "web", 2, Duration::from_secs(20)).await;
    })
    .await;
}
