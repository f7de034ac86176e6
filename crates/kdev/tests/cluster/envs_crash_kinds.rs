//! The envs crash sweep over the kinds that need CRDs of fixed names (Argo
//! Rollouts, KEDA ScaledObjects), so on a kwok cluster of its own, with an
//! opted-in DaemonSet and an operator's Cluster slept by patch beside them.
//! (The sweep in envs.rs runs the Job on the real node, which this
//! cluster does not have.)

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

use crate::envs::{annotate_namespace, apply_keda_crd, crash_and_complete, stand_in_keda};
use crate::support::{OwnCluster, with_namespace_in};
use crate::swap_support::{apply_rollout_crd, simple_deployment, stand_in_rollouts};

/// The scheduler killed (SIGKILL) after each write of a sleep (api, ro,
/// the ScaledObject, the DaemonSet, pg, the wakers, the applied state) and
/// of a wake; the next controller completes each transition exactly.
#[tokio::test]
async fn a_controller_killed_after_any_write_with_rollouts_keda_daemonsets_and_patches_recovers() {
    let (_cluster, kubeconfig) = OwnCluster::up("envs-crash-kinds");
    with_namespace_in(&kubeconfig, "crds", |ns| async move {
        apply_rollout_crd(&ns).await;
        apply_keda_crd(&ns).await;
    })
    .await;
    let kubeconfig = &kubeconfig;
    let rounds = (1..=7).map(|crash_after| {
        with_namespace_in(kubeconfig, "envs-crash-kinds", move |ns| async move {
            annotate_namespace(
                &ns,
                json!({
                    "kdev.dev/downtime": "Wed 19:00-19:01 UTC",
                    "kdev.dev/schedule-applied": "awake 2026-12-02T18:00:00Z",
                    "kdev.dev/sleep-daemonsets": "true",
                }),
                json!({}),
            )
            .await;
            let crd = crate::envs_patch::OwnCrd::cnpg_like(&ns).await;
            let rule = crd.rule(json!([{ "op": "replace", "path": "/spec/instances", "value": 0 }]));
            crate::envs_patch::annotate(&ns, "kdev.dev/sleep-patches", &rule.to_string()).await;
            crd.create(&ns, "pg", json!({ "instances": 2 })).await;
            let deployments = ns.api::<Deployment>();
            for (name, replicas, ports) in [("api", 2, vec![8080]), ("worker", 1, vec![])] {
                let d: Deployment = serde_json::from_value(simple_deployment(name, replicas, &ports))
                    .expect("a deployment");
                deployments.create(&PostParams::default(), &d).await.expect("create deployment");
            }
            let service = serde_json::from_value(json!({
                "metadata": { "name": "api" },
                "spec": { "selector": { "app": "api" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
            }))
            .expect("a service");
            ns.api::<k8s_openapi::api::core::v1::Service>()
                .create(&PostParams::default(), &service)
                .await
                .expect("create service");
            let rollouts = crate::swap_support::create_blue_green_rollout(&ns, "ro", 2).await;
            let scalers: Api<DynamicObject> = Api::namespaced_with(
                ns.client.clone(),
                &ns.name,
                &kube::discovery::ApiResource {
                    group: "keda.sh".into(),
                    version: "v1alpha1".into(),
                    api_version: "keda.sh/v1alpha1".into(),
                    kind: "ScaledObject".into(),
                    plural: "scaledobjects".into(),
                },
            );
            let scaler: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": { "name": "worker" },
                "spec": { "scaleTargetRef": { "name": "worker" }, "minReplicaCount": 1 }
            }))
            .expect("a ScaledObject");
            scalers.create(&PostParams::default(), &scaler).await.expect("create the ScaledObject");
            let ds: DaemonSet = serde_json::from_value(json!({
                "metadata": { "name": "agent" },
                "spec": {
                    "selector": { "matchLabels": { "app": "agent" } },
                    "template": {
                        "metadata": { "labels": { "app": "agent" } },
                        "spec": { "containers": [{ "name": "agent", "image": "example.invalid/agent:1" }] }
                    }
                }
            }))
            .expect("a daemonset");
            ns.api::<DaemonSet>().create(&PostParams::default(), &ds).await.expect("create daemonset");
            let argo = tokio::spawn(stand_in_rollouts(ns.client.clone(), ns.name.clone()));
            let keda = tokio::spawn(stand_in_keda(ns.client.clone(), ns.name.clone()));
            for (crash_at, complete_at, awake) in [
                ("2026-12-02T18:59:59Z", "2026-12-02T19:00:01Z", false),
                ("2026-12-02T19:00:59Z", "2026-12-02T19:01:01Z", true),
            ] {
                // A wake places no wakers: one write fewer.
                let crash = if awake { crash_after.min(6) } else { crash_after }.to_string();
                crash_and_complete(&ns, &crash, crash_at, complete_at, awake).await;
                let api = deployments.get("api").await.expect("api");
                assert_eq!(api.spec.and_then(|s| s.replicas), Some(if awake { 2 } else { 0 }), "api, crash after {crash}");
                let ro = rollouts.get("ro").await.expect("ro");
                assert_eq!(ro.data["spec"]["replicas"], if awake { 2 } else { 0 }, "ro, crash after {crash}");
                assert_eq!(ro.annotations().contains_key("kdev.dev/sleep"), !awake, "ro's record, crash after {crash}");
                let scaler = scalers.get("worker").await.expect("the ScaledObject");
                assert_eq!(
                    scaler.annotations().get("autoscaling.keda.sh/paused-replicas").map(String::as_str),
                    (!awake).then_some("0"),
                    "the ScaledObject's pause, crash after {crash}"
                );
                let worker = deployments.get("worker").await.expect("worker");
                assert!(
                    !worker.annotations().contains_key("kdev.dev/sleep"),
                    "KEDA's target is left to KEDA, crash after {crash}"
                );
                let agent = ns.api::<DaemonSet>().get("agent").await.expect("agent");
                let asleep = agent
                    .spec
                    .and_then(|s| s.template.spec)
                    .and_then(|s| s.node_selector)
                    .is_some_and(|s| s.contains_key("kdev.dev/asleep"));
                assert_eq!(asleep, !awake, "the DaemonSet, crash after {crash}");
                let pg = crd.api(&ns).get("pg").await.expect("pg");
                assert_eq!(pg.data["spec"]["instances"], if awake { 2 } else { 0 }, "pg, crash after {crash}");
                if !awake {
                    let wakers = ns
                        .api::<k8s_openapi::api::core::v1::Pod>()
                        .list(&kube::api::ListParams::default().labels("kdev.dev/role=env-waker"))
                        .await
                        .expect("list pods");
                    assert_eq!(wakers.items.len(), 1, "crash after {crash}");
                }
            }
            argo.abort();
            keda.abort();
        })
    });
    futures::future::join_all(rounds).await;
}
