//! `kdev swap` and `kdev run` of workloads other than Deployments:
//! ReplicaSets and Argo Rollouts on kwok's node with a local agent,
//! StatefulSets on the real node.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kdev::swap::workload::{WorkloadKind, WorkloadRef};
use kube::ResourceExt as _;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::support::{OwnCluster, TestNamespace, eventually, with_namespace, with_namespace_in};
use crate::swap_support::{
    Controller, LocalAgent, STAND_IN_HASH, Swap, apply_rollout_crd, assert_workload_restored,
    create_blue_green_rollout, create_running, deploy, simple_deployment, stand_in_rollouts,
};

/// A ReplicaSet of `replicas` pods on kwok's node, its manifest from
/// [`simple_deployment`]'s.
async fn replica_set(ns: &TestNamespace, name: &str, replicas: i32) {
    let mut manifest = simple_deployment(name, replicas, &[8080]);
    manifest["kind"] = json!("ReplicaSet");
    let set = WorkloadRef {
        kind: WorkloadKind::ReplicaSet,
        name: name.into(),
    };
    create_running(ns, set, manifest).await;
}

/// A bare ReplicaSet swaps and comes back to exactly its size; its proxy
/// pod, whose labels its selector matches, is not adopted (and deleted) by
/// the ReplicaSet controller; a ReplicaSet a Deployment controls is refused,
/// naming the Deployment.
#[tokio::test]
async fn a_replicaset_swaps_and_restores_exactly_and_a_controlled_one_is_refused() {
    with_namespace("kinds-rs", |ns| async move {
        replica_set(&ns, "cache", 2).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let swap = Swap::start(&ns, &["rs/cache", "--ttl", "6s"], &["sleep", "300"], &[]);
        swap.wait_swapped().await;
        assert!(
            swap.stderr().contains("swapped replicaset/cache"),
            "{}",
            swap.stderr()
        );
        let sets = ns.api::<ReplicaSet>();
        // Once the ReplicaSet controller has acted on the scale to 0, the
        // proxy is still there, not adopted.
        eventually(
            Duration::from_secs(30),
            "the ReplicaSet controller to scale to 0",
            || async {
                let set = sets.get("cache").await.ok()?;
                let status = set.status?;
                (status.observed_generation == set.metadata.generation && status.replicas == 0)
                    .then_some(())
            },
        )
        .await;
        let proxy = crate::swap_support::proxy_pod(&ns)
            .await
            .expect("the proxy pod");
        let owner = &proxy.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Lease", Some(true))
        );
        let pods = ns.api::<Pod>();
        let still = pods
            .get(&proxy.name_any())
            .await
            .expect("the proxy pod is still there");
        assert!(
            still.metadata.deletion_timestamp.is_none(),
            "the proxy pod is being deleted"
        );
        swap.signal(nix::sys::signal::Signal::SIGTERM);
        let reference = WorkloadRef {
            kind: WorkloadKind::ReplicaSet,
            name: "cache".into(),
        };
        assert_workload_restored(&ns, &reference, 2, Duration::from_secs(30)).await;

        // A Deployment's ReplicaSet: its Deployment would scale it back.
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        let owned = sets
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("list ReplicaSets")
            .items
            .into_iter()
            .next()
            .expect("web's ReplicaSet")
            .name_any();
        let mut refused = Swap::start(&ns, &[&format!("rs/{owned}")], &["true"], &[]);
        let status = refused.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(2), "{}", refused.stderr());
        assert!(
            refused.stderr().contains("is controlled by deployment/web")
                && refused.stderr().contains("swap deployment/web instead"),
            "{}",
            refused.stderr()
        );
    })
    .await;
}

/// Argo Rollouts' CRD (its real group, kind and scale subresource; the
/// controller cannot be built here) with a stand-in controller that keeps
/// `spec.replicas` pods, labelled with a pod hash as Argo's are. A swap
/// scales the Rollout to 0 and its proxy carries the hash its active Service
/// selects; after kill -9 of kdev the reaper restores exactly; a `kdev run`
/// of it leaves it alone. On a cluster of its own: the CRD is cluster-wide.
#[tokio::test]
async fn an_argo_rollout_swaps_and_is_restored_by_the_reaper_after_kill_9() {
    let (_cluster, kubeconfig) = OwnCluster::up("kinds-rollout");
    with_namespace_in(&kubeconfig, "kinds-ro", |ns| async move {
        apply_rollout_crd(&ns).await;
        let rollouts = create_blue_green_rollout(&ns, "web", 3).await;
        let stand_in = tokio::spawn(stand_in_rollouts(ns.client.clone(), ns.name.clone()));
        let pods = ns.api::<Pod>();
        let running = || async {
            pods.list(&ListParams::default().labels("app=web"))
                .await
                .ok()
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| !p.labels().contains_key("kdev.dev/role"))
                        .count()
                })
        };
        eventually(Duration::from_secs(60), "the Rollout's 3 pods", || async {
            (running().await? == 3).then_some(())
        })
        .await;

        let _reaper = Controller::start(&ns, &[]);
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        // A run changes nothing.
        let mut run = Swap::run(&ns, &["rollout/web", "--ttl", "6s"], &["true"], &[]);
        let status = run.wait_exit(Duration::from_secs(60)).await;
        assert!(status.success(), "{}", run.stderr());
        assert_eq!(
            kdev::swap::workload::replicas_of(&rollouts.get("web").await.expect("the Rollout")),
            Some(3)
        );

        let mut swap = Swap::start(&ns, &["rollout/web", "--ttl", "6s"], &["sleep", "300"], &[]);
        swap.wait_swapped().await;
        let proxy = crate::swap_support::proxy_pod(&ns)
            .await
            .expect("the proxy pod");
        assert_eq!(
            proxy
                .labels()
                .get("rollouts-pod-template-hash")
                .map(String::as_str),
            Some(STAND_IN_HASH),
            "the proxy carries the pod hash the active Service selects"
        );
        eventually(
            Duration::from_secs(30),
            "the stand-in to scale the Rollout's pods to 0",
            || async { (running().await? == 0).then_some(()) },
        )
        .await;
        swap.signal(nix::sys::signal::Signal::SIGKILL);
        swap.wait_exit(Duration::from_secs(10)).await;
        let reference = WorkloadRef {
            kind: WorkloadKind::Rollout,
            name: "web".into(),
        };
        assert_workload_restored(&ns, &reference, 3, Duration::from_secs(8)).await;
        eventually(
            Duration::from_secs(60),
            "the Rollout's 3 pods again",
            || async { (running().await? == 3).then_some(()) },
        )
        .await;
        stand_in.abort();
    })
    .await;
}

/// On the real node: a swap of a StatefulSet takes the whole set (2 pods →
/// 0) and gives the command ordinal 0's identity: its `POD_NAME` from the
/// downward API, and its DNS name under the governing Service
/// (`kafka-0.kafka`), which a pod then calls and the laptop answers. The
/// set comes back to exactly 2. `kdev run --ordinal 1` gets pod 1's
/// identity and leaves the set as it is.
#[tokio::test]
async fn a_statefulset_swap_takes_ordinal_0s_name_and_the_set_comes_back_whole() {
    use crate::real_node::{
        BUSYBOX, busybox_pod, finished, on_real_node, require_real_node, retried,
    };
    use k8s_openapi::api::apps::v1::StatefulSet;
    with_namespace("kinds-sts", |ns| async move {
        require_real_node(&ns).await;
        let service = serde_json::from_value(json!({
            "metadata": { "name": "kafka" },
            "spec": { "clusterIP": "None", "selector": { "app": "kafka" }, "ports": [{ "port": 8080 }] }
        }))
        .expect("a valid service");
        ns.api::<k8s_openapi::api::core::v1::Service>()
            .create(&PostParams::default(), &service)
            .await
            .expect("create the headless service");
        let manifest = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": { "name": "kafka" },
            "spec": {
                "serviceName": "kafka",
                "replicas": 2,
                "selector": { "matchLabels": { "app": "kafka" } },
                "template": {
                    "metadata": { "labels": { "app": "kafka" } },
                    "spec": {
                        "nodeSelector": on_real_node()["nodeSelector"].clone(),
                        "tolerations": on_real_node()["tolerations"].clone(),
                        "securityContext": { "runAsUser": 65534 },
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{
                            "name": "broker",
                            "image": BUSYBOX,
                            "imagePullPolicy": "Never",
                            "env": [{ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }],
                            "command": ["sh", "-c", "mkdir -p /tmp/www && echo \"from-$POD_NAME\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
                            "ports": [{ "containerPort": 8080 }]
                        }]
                    }
                }
            }
        });
        let reference = WorkloadRef {
            kind: WorkloadKind::StatefulSet,
            name: "kafka".into(),
        };
        create_running(&ns, reference.clone(), manifest).await;
        let sets = ns.api::<StatefulSet>();
        let ready = || async {
            let set = sets.get("kafka").await.ok()?;
            (set.status?.ready_replicas == Some(2)).then_some(())
        };

        let laptop = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = laptop.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = laptop.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut socket,
                    b"HTTP/1.0 200 OK\r\n\r\nfrom-the-laptop\n",
                )
                .await;
            }
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let said = dir.path().join("pod-name");
        let script = format!("echo \"$POD_NAME\" > {}; exec sleep 600", said.display());
        let swap = Swap::start(
            &ns,
            &["sts/kafka", "--port", &format!("8080:{local}"), "--ttl", "10s"],
            &["sh", "-c", &script],
            &[],
        );
        swap.wait_swapped().await;
        assert!(swap.stderr().contains("swapped statefulset/kafka (container broker, 2 replicas → 0)"), "{}", swap.stderr());
        let name = eventually(Duration::from_secs(30), "the command's POD_NAME", || async {
            std::fs::read_to_string(&said).ok().filter(|t| !t.is_empty())
        })
        .await;
        assert_eq!(name.trim(), "kafka-0");
        busybox_pod(&ns, "client", &retried("nc -w 5 kafka-0.kafka 8080")).await;
        let (phase, answer) = finished(&ns, "client").await;
        assert!(answer.contains("from-the-laptop"), "{phase}: {answer}\n{}", swap.stderr());
        swap.signal(nix::sys::signal::Signal::SIGTERM);
        assert_workload_restored(&ns, &reference, 2, Duration::from_secs(30)).await;
        eventually(Duration::from_secs(90), "the StatefulSet's 2 pods back", ready).await;

        // kdev run --ordinal 1: pod 1's identity, the set untouched.
        let said = dir.path().join("run-pod-name");
        let script = format!("echo \"$POD_NAME\" > {}", said.display());
        let mut run = Swap::run(&ns, &["sts/kafka", "--ordinal", "1"], &["sh", "-c", &script], &[]);
        let status = run.wait_exit(Duration::from_secs(60)).await;
        assert!(status.success(), "{}", run.stderr());
        assert_eq!(std::fs::read_to_string(&said).expect("the run's report").trim(), "kafka-1");
        let set = sets.get("kafka").await.expect("the StatefulSet");
        assert_eq!(set.spec.and_then(|s| s.replicas), Some(2));
    })
    .await;
}
