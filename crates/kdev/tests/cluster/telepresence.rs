//! `kdev sweep --telepresence` against what telepresence 1 leaves behind:
//! 0.105 proxy Deployments and 0.106+ bare proxy Pods, alive and dead, plus
//! an ambiguous one. kwok forwards each proxy's port 9055 to a local port
//! that answers HTTP (alive) or refuses connections (dead).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::kwok_emulation::create_kwok_cluster;
use crate::support::{TestNamespace, eventually, kdev, kubectl_apply, with_namespace};
use crate::swap_support::deploy;

const ID: &str = "5f1e3c0a9b7d4e2f8a6c1b3d5e7f9a0b";

/// Forwards port 9055 of every pod in the namespace to a local port that
/// answers HTTP when `alive`, and refuses connections when not: a socket
/// bound but never listening, held by the returned guard, so no other
/// process can take the port meanwhile.
async fn proxy_liveness(ns: &TestNamespace, alive: bool) -> Option<tokio::net::TcpSocket> {
    let mut guard = None;
    let port = if alive {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        port
    } else {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let port = socket.local_addr().expect("addr").port();
        guard = Some(socket);
        port
    };
    create_kwok_cluster(
        &ns.client,
        "ClusterPortForward",
        &format!("tp-{}", ns.name),
        json!({
            "selector": { "matchNamespaces": [ns.name] },
            "forwards": [{ "ports": [9055], "target": { "port": port, "address": "127.0.0.1" } }]
        }),
    )
    .await;
    guard
}

/// An original the way a team deploys it (`kubectl apply`, so its
/// last-applied-configuration records `replicas`), then scaled to 0 by
/// telepresence.
async fn applied_original(
    ns: &TestNamespace,
    name: &str,
    replicas: i32,
    labels: serde_json::Value,
) {
    let manifest = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": ns.name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": { "containers": [{ "name": "app", "image": "example.invalid/app:1" }] }
            }
        }
    });
    let applied = kubectl_apply(manifest.to_string().as_bytes(), &[]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    scale(ns, name, 0).await;
}

async fn scale(ns: &TestNamespace, name: &str, replicas: i32) {
    ns.api::<Deployment>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .expect("scale");
}

/// A 0.106+ proxy: a bare Pod named `{original:.17}-{id}` with the
/// original's labels plus `telepresence: id`.
async fn bare_proxy(ns: &TestNamespace, name: &str, labels: serde_json::Value) {
    let mut labels = labels;
    labels["telepresence"] = json!(ID);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "app", "image": "datawire/telepresence-k8s:0.109", "command": ["/usr/src/app/run.sh"] }]
        }
    }))
    .expect("valid");
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create proxy pod");
    eventually(Duration::from_secs(30), "the proxy pod to run", || async {
        let pod = ns.api::<Pod>().get(name).await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

/// True once a port-forward to `pod`'s port 9055 gets an HTTP answer.
async fn answers(ns: &TestNamespace, pod: &str) -> Option<()> {
    let mut forwarder = ns.api::<Pod>().portforward(pod, &[9055]).await.ok()?;
    let mut stream = forwarder.take_stream(9055)?;
    stream.write_all(b"HEAD / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut reply = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut reply))
        .await
        .ok()?
        .ok()?;
    forwarder.abort();
    (&reply == b"HTTP/").then_some(())
}

/// Runs the CLI without blocking this test's runtime, which serves the
/// proxies' port 9055; expects exit 0.
async fn sweep(ns: &TestNamespace, extra: &[&str]) -> String {
    sweep_exits(ns, extra, 0).await
}

/// `kdev sweep --telepresence` expecting exit code `code` (3: something was
/// left for a person).
async fn sweep_exits(ns: &TestNamespace, extra: &[&str], code: i32) -> String {
    let out = tokio::process::Command::from(kdev())
        .arg("--kubeconfig")
        .arg(&ns.kubeconfig)
        .args(["-n", &ns.name, "sweep", "--telepresence"])
        .args(extra)
        .output()
        .await
        .expect("run kdev sweep");
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `-o json` objects of kind `telepresence-proxy`.
fn proxy_reports(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("one JSON object per line")
        })
        .filter(|v| v["kind"] == "telepresence-proxy")
        .collect()
}

async fn replicas(ns: &TestNamespace, name: &str) -> Option<i32> {
    ns.api::<Deployment>()
        .get(name)
        .await
        .expect("deployment")
        .spec
        .and_then(|s| s.replicas)
}

#[tokio::test]
async fn a_dead_bare_proxy_is_replaced_by_its_original_at_its_last_applied_replicas() {
    with_namespace("tp106-dead", |ns| async move {
        applied_original(&ns, "orders-api", 3, json!({ "app": "orders-api" })).await;
        let proxy = format!("orders-api-{ID}");
        let _dead_port = proxy_liveness(&ns, false).await;
        bare_proxy(&ns, &proxy, json!({ "app": "orders-api" })).await;

        // A proxy younger than the minimum age is left alone.
        let young = sweep(&ns, &[]).await;
        assert!(young.contains("younger than 120s, left alone"), "{young}");

        let dry = sweep(&ns, &["--min-age", "0s", "--dry-run"]).await;
        assert!(
            dry.contains("matched deployment/orders-api by name prefix \"orders-api\" (17-character rule) and equal pod-template labels: would scale it to 3"),
            "{dry}"
        );
        assert_eq!(replicas(&ns, "orders-api").await, Some(0));

        // Scripts get the same evidence as fields.
        let json = sweep(&ns, &["--min-age", "0s", "--dry-run", "-o", "json"]).await;
        let reports = proxy_reports(&json);
        assert_eq!(reports.len(), 1, "{json}");
        assert_eq!(reports[0]["verdict"], "would-restore", "{json}");
        assert_eq!(reports[0]["original"], "orders-api", "{json}");
        assert_eq!(reports[0]["replicas"], 3, "{json}");
        assert!(
            reports[0]["matched_by"].as_str().is_some_and(|m| m.contains("name prefix")),
            "{json}"
        );
        assert!(
            reports[0]["count_from"].as_str().is_some_and(|m| m.contains("last-applied-configuration")),
            "{json}"
        );

        let out = sweep(&ns, &["--min-age", "0s"]).await;
        assert!(out.contains("dead (0.106+ bare proxy Pod)"), "{out}");
        assert!(
            out.contains("scaled it to 3, from spec.replicas in its last-applied-configuration"),
            "{out}"
        );
        assert_eq!(replicas(&ns, "orders-api").await, Some(3));
        eventually(Duration::from_secs(20), "the proxy pod to go", || async {
            ns.api::<Pod>()
                .get_opt(&proxy)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_live_bare_proxy_is_left_alone() {
    with_namespace("tp106-alive", |ns| async move {
        applied_original(&ns, "orders-api", 3, json!({ "app": "orders-api" })).await;
        let proxy = format!("orders-api-{ID}");
        let _alive = proxy_liveness(&ns, true).await;
        bare_proxy(&ns, &proxy, json!({ "app": "orders-api" })).await;
        eventually(Duration::from_secs(20), "kwok to forward port 9055", || {
            answers(&ns, &proxy)
        })
        .await;
        let out = sweep(&ns, &["--min-age", "0s"]).await;
        assert!(
            out.contains("alive (port 9055 answers), left alone"),
            "{out}"
        );
        assert_eq!(replicas(&ns, "orders-api").await, Some(0));
        assert!(
            ns.api::<Pod>()
                .get_opt(&proxy)
                .await
                .expect("read")
                .is_some()
        );
    })
    .await;
}

/// A 0.105 proxy: a Deployment copied from the original by `kubectl apply`,
/// renamed, whose last-applied `selfLink` names the original. The real
/// controllers give it a ReplicaSet and a running pod.
async fn proxy_deployment(ns: &TestNamespace, original: &str) -> String {
    let name = format!("{original}-{ID}");
    let last_applied = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "selfLink": format!("/apis/apps/v1/namespaces/{}/deployments/{original}", ns.name),
        },
    })
    .to_string();
    let proxy: Deployment = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": { "telepresence": ID },
            "annotations": { "kubectl.kubernetes.io/last-applied-configuration": last_applied },
        },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": original, "telepresence": ID } },
            "template": {
                "metadata": { "labels": { "app": original, "telepresence": ID } },
                "spec": { "containers": [{ "name": "app", "image": "datawire/telepresence-k8s:0.105" }] }
            }
        }
    }))
    .expect("valid");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &proxy)
        .await
        .expect("create proxy deployment");
    eventually(
        Duration::from_secs(30),
        "the proxy's pod to run",
        || async {
            let d = ns.api::<Deployment>().get(&name).await.ok()?;
            (d.status?.ready_replicas == Some(1)).then_some(())
        },
    )
    .await;
    name
}

#[tokio::test]
async fn a_dead_0105_proxy_deployment_points_back_to_its_original() {
    with_namespace("tp105-dead", |ns| async move {
        // The original, at 0, created without kubectl apply: no evidence of its count.
        deploy(
            &ns,
            crate::swap_support::simple_deployment("billing", 0, &[8080]),
        )
        .await;
        let _dead_port = proxy_liveness(&ns, false).await;
        let proxy = proxy_deployment(&ns, "billing").await;

        let out = sweep(&ns, &["--min-age", "0s"]).await;
        assert!(out.contains("dead (0.105 proxy Deployment)"), "{out}");
        assert!(
            out.contains(&format!(
                "matched deployment/billing by selfLink /apis/apps/v1/namespaces/{}/deployments/billing",
                ns.name
            )),
            "{out}"
        );
        assert!(out.contains("scaled it to 1, the default"), "{out}");
        assert_eq!(replicas(&ns, "billing").await, Some(1));
        eventually(
            Duration::from_secs(20),
            "the proxy deployment to go",
            || async {
                ns.api::<Deployment>()
                    .get_opt(&proxy)
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_live_0105_proxy_deployment_is_left_alone() {
    with_namespace("tp105-alive", |ns| async move {
        deploy(
            &ns,
            crate::swap_support::simple_deployment("billing", 0, &[8080]),
        )
        .await;
        let _alive = proxy_liveness(&ns, true).await;
        let proxy = proxy_deployment(&ns, "billing").await;
        let pods = ns
            .api::<Pod>()
            .list(&Default::default())
            .await
            .expect("list pods");
        let pod = pods
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .find(|n| n.starts_with(&proxy))
            .expect("the proxy's pod");
        eventually(Duration::from_secs(20), "kwok to forward port 9055", || {
            answers(&ns, &pod)
        })
        .await;

        let out = sweep(&ns, &["--min-age", "0s"]).await;
        assert!(
            out.contains("alive (port 9055 answers), left alone"),
            "{out}"
        );
        assert_eq!(replicas(&ns, "billing").await, Some(0));
        assert!(
            ns.api::<Deployment>()
                .get_opt(&proxy)
                .await
                .expect("read")
                .is_some()
        );
    })
    .await;
}

#[tokio::test]
async fn an_ambiguous_match_is_reported_and_left_alone() {
    with_namespace("tp-ambiguous", |ns| async move {
        // Both names cut to 17 characters give "payments-service-".
        applied_original(&ns, "payments-service-a", 2, json!({ "app": "pay" })).await;
        applied_original(&ns, "payments-service-b", 2, json!({ "app": "pay" })).await;
        let proxy = format!("payments-service--{ID}");
        let _dead_port = proxy_liveness(&ns, false).await;
        bare_proxy(&ns, &proxy, json!({ "app": "pay" })).await;
        let out = sweep_exits(&ns, &["--min-age", "0s"], 3).await;
        assert!(
            out.contains(
                "2 Deployments match (payments-service-a, payments-service-b): left alone"
            ),
            "{out}"
        );
        assert_eq!(replicas(&ns, "payments-service-a").await, Some(0));
        assert_eq!(replicas(&ns, "payments-service-b").await, Some(0));
        assert!(
            ns.api::<Pod>()
                .get_opt(&proxy)
                .await
                .expect("read")
                .is_some()
        );
    })
    .await;
}

/// Regression: an unreadable last-applied-configuration was reported as
/// "nothing in the cluster recorded the original count" and restored to 1.
#[tokio::test]
async fn an_unreadable_count_is_named_and_left_for_a_person() {
    with_namespace("tp-unreadable", |ns| async move {
        applied_original(&ns, "orders-api", 3, json!({ "app": "orders-api" })).await;
        ns.api::<Deployment>()
            .patch(
                "orders-api",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{not json"
                } } })),
            )
            .await
            .expect("break the annotation");
        let proxy = format!("orders-api-{ID}");
        let _dead_port = proxy_liveness(&ns, false).await;
        bare_proxy(&ns, &proxy, json!({ "app": "orders-api" })).await;

        let out = sweep_exits(&ns, &["--min-age", "0s", "-o", "json"], 3).await;
        let reports = proxy_reports(&out);
        assert_eq!(reports.len(), 1, "{out}");
        assert_eq!(reports[0]["verdict"], "left-for-human", "{out}");
        assert_eq!(reports[0]["original"], "orders-api", "{out}");
        assert!(reports[0]["replicas"].is_null(), "{out}");
        assert!(
            reports[0]["count_from"]
                .as_str()
                .is_some_and(|c| c.contains("is there but is not valid JSON")),
            "{out}"
        );
        assert_eq!(replicas(&ns, "orders-api").await, Some(0));
        assert!(
            ns.api::<Pod>()
                .get_opt(&proxy)
                .await
                .expect("read")
                .is_some()
        );
    })
    .await;
}

/// Regression: proxies were probed one after another (about 2 s per dead
/// proxy). Four live proxies whose port 9055 answers only after a pause
/// must see their probes in flight at the same time.
#[tokio::test]
async fn proxies_are_probed_concurrently() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    with_namespace("tp-concurrent", |ns| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (seen_two_tx, seen_two) = tokio::sync::watch::channel(false);
        {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let (in_flight, most, seen_two_tx) =
                        (in_flight.clone(), most.clone(), seen_two_tx.clone());
                    let mut seen_two = seen_two.clone();
                    tokio::spawn(async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        if now >= 2 {
                            seen_two_tx.send_replace(true);
                        }
                        let mut buf = [0u8; 256];
                        let _ = socket.read(&mut buf).await;
                        // Answer once a second probe is in flight too, or
                        // after 2.5 s (within the probe's 3 s limit).
                        let _ = tokio::time::timeout(
                            Duration::from_millis(2500),
                            seen_two.wait_for(|seen| *seen),
                        )
                        .await;
                        let _ = socket
                            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }
        create_kwok_cluster(
            &ns.client,
            "ClusterPortForward",
            &format!("tp-{}", ns.name),
            json!({
                "selector": { "matchNamespaces": [ns.name] },
                "forwards": [{ "ports": [9055], "target": { "port": port, "address": "127.0.0.1" } }]
            }),
        )
        .await;
        for app in ["a-app", "b-app", "c-app", "d-app"] {
            applied_original(&ns, app, 1, json!({ "app": app })).await;
            bare_proxy(&ns, &format!("{app}-{ID}"), json!({ "app": app })).await;
        }
        let out = sweep(&ns, &["--min-age", "0s"]).await;
        assert_eq!(
            out.matches("alive (port 9055 answers), left alone").count(),
            4,
            "{out}"
        );
        assert!(
            most.load(Ordering::SeqCst) >= 2,
            "probes never overlapped: at most {} in flight",
            most.load(Ordering::SeqCst)
        );
    })
    .await;
}

/// Regression: `kdev controller --telepresence` restored silently. Each
/// action is now logged, counted in /metrics and recorded as an Event on the
/// Deployment it restored.
#[tokio::test]
async fn the_controller_logs_counts_and_records_each_telepresence_restore() {
    with_namespace("tp-controller", |ns| async move {
        applied_original(&ns, "orders-api", 3, json!({ "app": "orders-api" })).await;
        let _dead_port = proxy_liveness(&ns, false).await;
        bare_proxy(
            &ns,
            &format!("orders-api-{ID}"),
            json!({ "app": "orders-api" }),
        )
        .await;

        let controller = crate::swap_support::Controller::launch(
            &ns,
            &ns.kubeconfig,
            &["--telepresence", "--telepresence-min-age", "0s"],
            &[],
        );
        let port = controller.port;
        eventually(
            Duration::from_secs(60),
            "the controller to restore orders-api",
            || async { (replicas(&ns, "orders-api").await == Some(3)).then_some(()) },
        )
        .await;
        let events: kube::Api<k8s_openapi::api::events::v1::Event> =
            kube::Api::namespaced(ns.client.clone(), &ns.name);
        let event = eventually(
            Duration::from_secs(10),
            "a TelepresenceRestored event",
            || async {
                events
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some("TelepresenceRestored"))
            },
        )
        .await;
        let note = event.note.unwrap_or_default();
        assert!(note.contains("scaled it to 3"), "{note}");
        assert_eq!(
            event.regarding.and_then(|r| r.name).as_deref(),
            Some("orders-api")
        );
        let metrics = eventually(Duration::from_secs(10), "the restore counted", || async {
            let (_, body) = crate::support::http_get(port, "/metrics").await?;
            body.contains(r#"kdev_controller_telepresence_proxies_total{verdict="restored"} 1"#)
                .then_some(body)
        })
        .await;
        assert!(metrics.contains("telepresence"), "{metrics}");
        let logged = controller.log();
        assert!(
            logged.contains("telepresence proxy") && logged.contains("scaled it to 3"),
            "{logged}"
        );
    })
    .await;
}
