//! One environment of every kind kdev sleeps (an Argo Rollout, a
//! Deployment scaled by a KEDA ScaledObject, an operator's Cluster slept by
//! the namespace's patch rule, a running Job and an opted-in DaemonSet,
//! beside a plain Deployment behind a Service), on a kwok cluster of its
//! own: the Rollout and ScaledObject CRDs have fixed, cluster-wide names.
//! Stand-ins play Argo Rollouts and KEDA (their controllers cannot be built
//! here) and the Cluster's CRD has a group unique to each namespace. The
//! Job's pod asks for a node no node is, so it stays pending and the Job
//! stays running (kwok's fake node would complete it at once). The sweep in
//! envs.rs runs a Job on the real node.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::envs::{
    SWEEP_EDGES, annotate_namespace, apply_keda_crd, behind_a_service, crash_and_complete,
    crash_point, create_job, job_active, kdev_in, stand_in_keda,
};
use crate::envs_patch::OwnCrd;
use crate::support::{OwnCluster, TestNamespace, eventually, with_namespace_in};
use crate::swap_support::{apply_rollout_crd, simple_deployment, stand_in_rollouts};

/// The environment's objects, as the checks read them.
struct EveryKind {
    crd: OwnCrd,
    rollouts: Api<DynamicObject>,
    scalers: Api<DynamicObject>,
    argo: tokio::task::JoinHandle<()>,
    keda: tokio::task::JoinHandle<()>,
}

impl Drop for EveryKind {
    fn drop(&mut self) {
        self.argo.abort();
        self.keda.abort();
    }
}

/// What the environment should be: awake with `api` at `api` replicas and
/// `pg` at `pg` instances, or asleep.
struct Expect {
    awake: bool,
    api: i64,
    pg: i64,
}

impl EveryKind {
    /// Creates the environment in `ns`, whose annotations the caller set
    /// (the sleep-patches rule is added here), and starts the stand-ins.
    async fn create(ns: &TestNamespace) -> Self {
        let crd = OwnCrd::cnpg_like(ns).await;
        let rule = crd.rule(json!([{ "op": "replace", "path": "/spec/instances", "value": 0 }]));
        crate::envs_patch::annotate(ns, "kdev.dev/sleep-patches", &rule.to_string()).await;
        crd.create(ns, "pg", json!({ "instances": 2 })).await;
        behind_a_service(ns, "api", 2).await;
        let worker: Deployment =
            serde_json::from_value(simple_deployment("worker", 1, &[])).expect("a deployment");
        ns.api::<Deployment>()
            .create(&PostParams::default(), &worker)
            .await
            .expect("create deployment");
        let rollouts = crate::swap_support::create_blue_green_rollout(ns, "ro", 2).await;
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
        scalers
            .create(&PostParams::default(), &scaler)
            .await
            .expect("create the ScaledObject");
        let ds = crate::envs::agent_daemonset();
        ns.api::<DaemonSet>()
            .create(&PostParams::default(), &ds)
            .await
            .expect("create daemonset");
        let pending = json!({
            "nodeSelector": { "kdev.dev/test-no-such-node": "true" },
            "containers": [{ "name": "migrate", "image": "example.invalid/migrate:1" }]
        });
        create_job(ns, "migrate", pending).await;
        running(ns, 1).await;
        EveryKind {
            crd,
            rollouts,
            scalers,
            argo: tokio::spawn(stand_in_rollouts(ns.client.clone(), ns.name.clone())),
            keda: tokio::spawn(stand_in_keda(ns.client.clone(), ns.name.clone())),
        }
    }

    /// Checks every object against `expect`; `at` names the round.
    async fn check(&self, ns: &TestNamespace, expect: Expect, at: &str) {
        let Expect { awake, api, pg } = expect;
        let deployments = ns.api::<Deployment>();
        let got = deployments.get("api").await.expect("api");
        let replicas = got.spec.and_then(|s| s.replicas).map(i64::from);
        assert_eq!(replicas, Some(if awake { api } else { 0 }), "api, {at}");
        let ro = self.rollouts.get("ro").await.expect("ro");
        assert_eq!(
            ro.data["spec"]["replicas"],
            if awake { 2 } else { 0 },
            "ro, {at}"
        );
        assert_eq!(
            ro.annotations().contains_key("kdev.dev/sleep"),
            !awake,
            "ro's record, {at}"
        );
        let scaler = self.scalers.get("worker").await.expect("the ScaledObject");
        assert_eq!(
            scaler
                .annotations()
                .get("autoscaling.keda.sh/paused-replicas")
                .map(String::as_str),
            (!awake).then_some("0"),
            "the ScaledObject's pause, {at}"
        );
        let worker = deployments.get("worker").await.expect("worker");
        assert!(
            !worker.annotations().contains_key("kdev.dev/sleep"),
            "KEDA's target is left to KEDA, {at}"
        );
        let agent = ns.api::<DaemonSet>().get("agent").await.expect("agent");
        let off_every_node = agent
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.node_selector)
            .is_some_and(|s| s.contains_key("kdev.dev/asleep"));
        assert_eq!(off_every_node, !awake, "the DaemonSet, {at}");
        let job = ns.api::<Job>().get("migrate").await.expect("migrate");
        assert_eq!(
            job.spec.and_then(|s| s.suspend),
            Some(!awake),
            "the Job, {at}"
        );
        assert_eq!(
            job.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("kdev.dev/sleep"),
            !awake,
            "the Job's record, {at}"
        );
        running(ns, if awake { 1 } else { 0 }).await;
        let pg_now = self.crd.api(ns).get("pg").await.expect("pg");
        assert_eq!(
            pg_now.data["spec"]["instances"],
            if awake { pg } else { 0 },
            "pg, {at}"
        );
    }
}

/// Waits until the Job controller counts `n` of migrate's pods.
async fn running(ns: &TestNamespace, n: i32) {
    eventually(
        std::time::Duration::from_secs(60),
        "migrate's pods",
        || async { (job_active(ns, "migrate").await? == n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_environment_of_every_kind_sleeps_and_wakes_whole_and_survives_a_crash_after_any_write()
{
    let (_cluster, kubeconfig) = OwnCluster::up("envs-every-kind");
    with_namespace_in(&kubeconfig, "crds", |ns| async move {
        apply_rollout_crd(&ns).await;
        apply_keda_crd(&ns).await;
    })
    .await;
    let kubeconfig = &kubeconfig;
    // By hand: sleep, change the api's replicas and pg's instances while
    // asleep, wake: every object back to what it had, the hand changes kept.
    let by_hand = with_namespace_in(kubeconfig, "envs-every-kind", |ns| async move {
        annotate_namespace(
            &ns,
            json!({ "kdev.dev/sleep-daemonsets": "true" }),
            json!({}),
        )
        .await;
        let env = EveryKind::create(&ns).await;
        let slept = kdev_in(&ns, &["sleep"]);
        for line in [
            "deployment/api in",
            "rollout/ro in",
            "scaledobject/worker in",
            "job/migrate in",
            "daemonset/agent in",
            "/pg in",
        ] {
            assert!(slept.contains(line), "{line}: {slept}");
        }
        env.check(
            &ns,
            Expect {
                awake: false,
                api: 2,
                pg: 2,
            },
            "asleep",
        )
        .await;
        ns.api::<Deployment>()
            .patch(
                "api",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
            )
            .await
            .expect("scale api by hand");
        env.crd
            .api(&ns)
            .patch(
                "pg",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "instances": 1 } })),
            )
            .await
            .expect("change pg by hand");
        let woke = kdev_in(&ns, &["wake"]);
        assert!(woke.contains("changed while asleep"), "{woke}");
        assert!(woke.contains("kept at 1 (changed while asleep)"), "{woke}");
        env.check(
            &ns,
            Expect {
                awake: true,
                api: 3,
                pg: 1,
            },
            "awake, hand changes kept",
        )
        .await;
    });
    // The crash sweep: the scheduler killed (SIGKILL) after each write of a
    // sleep (five workloads and pg, in any order as they change several at
    // once, then the wakers and the applied state) and of a wake; the next
    // controller completes each transition exactly.
    let rounds = (1..=8).map(|crash_after| {
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
            let env = EveryKind::create(&ns).await;
            for (crash_at, complete_at, awake) in SWEEP_EDGES {
                let crash = crash_point(crash_after, awake, 7);
                crash_and_complete(&ns, &crash, crash_at, complete_at, awake).await;
                let at = format!("crash after write {crash}");
                env.check(
                    &ns,
                    Expect {
                        awake,
                        api: 2,
                        pg: 2,
                    },
                    &at,
                )
                .await;
                if !awake {
                    let wakers = ns
                        .api::<k8s_openapi::api::core::v1::Pod>()
                        .list(&kube::api::ListParams::default().labels("kdev.dev/role=env-waker"))
                        .await
                        .expect("list pods");
                    assert_eq!(wakers.items.len(), 1, "{at}");
                }
            }
        })
    });
    let ((), _) = futures::join!(by_hand, futures::future::join_all(rounds));
}
