//! The cluster is never left broken: kill `kdev swap` and `kdev run` with
//! SIGKILL after each step of their start-up and shutdown, and the reaper
//! restores it all.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use std::os::unix::process::ExitStatusExt;

use kube::api::ListParams;

use crate::support::{eventually, wait_child, with_namespace};
use crate::swap_support::{
    Controller, LocalAgent, Swap, assert_restored, deploy, simple_deployment,
};

const STEPS: u32 = 10;
const TTL_SECS: u64 = 3;

#[tokio::test]
async fn every_crash_point_is_restored_by_the_reaper() {
    with_namespace("crash", |ns| async move {
        let _reaper = Controller::start(&ns, &[]);
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let replicas = |step: u32| (step % 3 + 1) as i32;
        let deployments: Vec<_> = (1..=STEPS)
            .map(|step| {
                deploy(
                    &ns,
                    simple_deployment(&format!("web{step}"), replicas(step), &[8080]),
                )
            })
            .collect();
        futures::future::join_all(deployments).await;

        let ttl = format!("{TTL_SECS}s");
        let mut swaps: Vec<(u32, Swap)> = (1..=STEPS)
            .map(|step| {
                let target = format!("deploy/web{step}");
                let crash = step.to_string();
                let swap = Swap::start(
                    &ns,
                    &[&target, "--ttl", &ttl],
                    &["sleep", "1"],
                    &[("KDEV_SWAP_CRASH_AFTER", &crash)],
                );
                (step, swap)
            })
            .collect();

        // A run session of each Deployment, killed after the same step
        // while the swaps are: beside a swap, as a team would have them.
        let mut runs: Vec<(u32, Swap)> = (1..=STEPS)
            .map(|step| {
                let target = format!("deploy/web{step}");
                let crash = step.to_string();
                let run = Swap::run(
                    &ns,
                    &[&target, "--ttl", &ttl],
                    &["sleep", "1"],
                    &[("KDEV_SWAP_CRASH_AFTER", &crash)],
                );
                (step, run)
            })
            .collect();

        let mut restored = 0;
        let mut lines = Vec::new();
        for (step, swap) in swaps.iter_mut().chain(runs.iter_mut()) {
            let status = swap.wait_exit(Duration::from_secs(60)).await;
            assert_eq!(
                status.signal(),
                Some(9),
                "step {step}: kdev was not killed: {}",
                swap.stderr()
            );
            assert!(
                swap.stderr()
                    .contains(&format!("crash injected after step {step}")),
                "{}",
                swap.stderr()
            );
        }
        let killed = Instant::now();
        for (step, _) in &swaps {
            assert_restored(
                &ns,
                &format!("web{step}"),
                replicas(*step),
                Duration::from_secs(TTL_SECS + 15),
            )
            .await;
            restored += 1;
            lines.push(format!(
                "  swap step {step:>2}: restored {:.1}s after the kills",
                killed.elapsed().as_secs_f64()
            ));
        }
        // A run changed nothing but its own objects: ended is its Lease
        // and agent pod gone.
        let leases = ns.api::<Lease>();
        let pods = ns.api::<k8s_openapi::api::core::v1::Pod>();
        for (step, _) in &runs {
            let target = format!("deployment/web{step}");
            let targets = |annotations: Option<&std::collections::BTreeMap<String, String>>| {
                annotations.and_then(|a| a.get("kdev.dev/target")) == Some(&target)
            };
            eventually(
                Duration::from_secs(TTL_SECS + 15),
                &format!("run step {step}: its Lease and agent pod to go"),
                || async {
                    let lease_left = leases
                        .list(&ListParams::default().labels("kdev.dev/role=run-session"))
                        .await
                        .ok()?
                        .items
                        .iter()
                        .any(|l| targets(l.metadata.annotations.as_ref()));
                    let pod_left = pods
                        .list(&ListParams::default().labels("kdev.dev/role=run-agent"))
                        .await
                        .ok()?
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .any(|p| targets(p.metadata.annotations.as_ref()));
                    (!lease_left && !pod_left).then_some(())
                },
            )
            .await;
            restored += 1;
            lines.push(format!(
                "  run step {step:>2}: ended {:.1}s after the kills",
                killed.elapsed().as_secs_f64()
            ));
        }
        eprintln!("{}", lines.join("\n"));
        println!("restored {restored}/{} crash points", 2 * STEPS);
        assert_eq!(restored, 2 * STEPS);
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
