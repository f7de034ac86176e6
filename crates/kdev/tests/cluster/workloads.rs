//! The control plane runs workloads: controllers, scheduler and kwok together.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};

use crate::support::{eventually, with_namespace};
use crate::swap_support::simple_deployment;

pub fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test]
async fn a_deployment_of_three_replicas_reaches_three_running_pods() {
    with_namespace("workloads", |ns| async move {
        let deployments = ns.api::<Deployment>();
        deployments
            .create(
                &PostParams::default(),
                &serde_json::from_value(simple_deployment("web", 3, &[]))
                    .expect("a valid Deployment"),
            )
            .await
            .expect("create deployment");

        let pods = ns.api::<Pod>();
        let running = eventually(Duration::from_secs(60), "3 Running pods", || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running: Vec<Pod> = list.items.into_iter().filter(is_running).collect();
            (running.len() == 3).then_some(running)
        })
        .await;

        // The pods belong to a ReplicaSet that belongs to the Deployment:
        // the real controllers did this, not the test.
        let replicasets = ns
            .api::<ReplicaSet>()
            .list(&ListParams::default())
            .await
            .expect("list rs");
        assert_eq!(replicasets.items.len(), 1);
        let rs = &replicasets.items[0];
        let rs_owner = rs
            .metadata
            .owner_references
            .as_ref()
            .expect("rs has an owner");
        assert_eq!(rs_owner[0].kind, "Deployment");
        for pod in &running {
            let owner = &pod
                .metadata
                .owner_references
                .as_ref()
                .expect("pod has an owner")[0];
            assert_eq!(owner.kind, "ReplicaSet");
            assert_eq!(Some(&owner.name), rs.metadata.name.as_ref());
            assert!(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some(),
                "scheduled"
            );
        }

        let ready = eventually(
            Duration::from_secs(30),
            "the Deployment to report 3 ready",
            || async {
                let d = deployments.get("web").await.ok()?;
                let ready = d.status?.ready_replicas?;
                (ready == 3).then_some(ready)
            },
        )
        .await;
        assert_eq!(ready, 3);
    })
    .await;
}
