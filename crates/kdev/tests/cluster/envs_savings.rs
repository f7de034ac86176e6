//! What sleeping saved: the ledger on each environment's activity Lease,
//! written by every sleep and wake, read by `kdev envs --savings`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt as _;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::support::{TestNamespace, eventually, kdev, with_namespace};
use crate::swap_support::simple_deployment;

fn run_at(ns: &TestNamespace, now: &str, args: &[&str]) -> String {
    let output = kdev()
        .arg("--kubeconfig")
        .arg(&ns.kubeconfig)
        .args(["-n", &ns.name])
        .args(args)
        .env("KDEV_ENVS_NOW", now)
        .output()
        .expect("run kdev");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "kdev {args:?} failed: {text}");
    text
}

/// Two workloads with requests: 3 pods, 450m CPU and 512 MiB asleep.
async fn create_workloads(ns: &TestNamespace) {
    let mut web = simple_deployment("web", 2, &[]);
    web["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({ "requests": { "cpu": "100m", "memory": "128Mi" } });
    let web: Deployment = serde_json::from_value(web).expect("a deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &web)
        .await
        .expect("create web");
    let db: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "db" },
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": { "matchLabels": { "app": "db" } },
            "template": {
                "metadata": { "labels": { "app": "db" } },
                "spec": { "containers": [{
                    "name": "db", "image": "example.invalid/db:1",
                    "resources": { "limits": { "cpu": "250m", "memory": "256Mi" } }
                }] }
            }
        }
    }))
    .expect("a statefulset");
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &db)
        .await
        .expect("create db");
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

/// A scripted week (each command told its moment through the test build's
/// `KDEV_ENVS_NOW`): asleep Mon and Tue nights and Fri 19:00 to Mon 07:00,
/// 84 hours of 3 pods, 450m CPU and 512 MiB; `kdev envs --savings` says so
/// exactly, the last 7 days leaving out Monday's first 5 hours. The ledger
/// is on the activity Lease, so it outlives the Events (an hour by default).
#[tokio::test]
async fn a_scripted_week_of_sleeps_and_wakes_saves_exactly_what_it_slept() {
    with_namespace("envs-savings", |ns| async move {
        create_workloads(&ns).await;
        for (at, command) in [
            ("2026-11-30T19:00:00Z", "sleep"),
            ("2026-12-01T07:00:00Z", "wake"),
            ("2026-12-01T19:00:00Z", "sleep"),
            ("2026-12-02T07:00:00Z", "wake"),
            ("2026-12-04T19:00:00Z", "sleep"),
            ("2026-12-07T07:00:00Z", "wake"),
        ] {
            let out = run_at(&ns, at, &[command]);
            assert!(out.contains("deployment/web"), "{out}");
            if command == "sleep" {
                let lease: Lease = ns.api::<Lease>().get("kdev-activity").await.expect("the Lease");
                let ledger: Value = serde_json::from_str(&lease.annotations()["kdev.dev/savings"])
                    .expect("a ledger");
                assert_eq!(
                    ledger["open"],
                    json!({ "at": at, "pods": 3, "cpuMillis": 450, "memoryBytes": 512 << 20 }),
                    "{ledger}"
                );
            }
        }
        let out = run_at(&ns, "2026-12-07T12:00:00Z", &["envs", "--savings", "-o", "json"]);
        let saved: Value = serde_json::from_str(&out).expect("JSON");
        let env = &saved["environments"][0];
        assert_eq!(env["namespace"], ns.name.as_str());
        assert_eq!(env["since"], "2026-11-30T19:00:00Z");
        let month = &env["last30Days"];
        assert!(close(&month["podHours"], 252.0), "{month}");
        assert!(close(&month["cpuHours"], 37.8), "{month}");
        assert!(close(&month["memoryGiBHours"], 42.0), "{month}");
        let week = &env["last7Days"];
        assert!(close(&week["podHours"], 237.0), "{week}");
        assert!(close(&week["cpuHours"], 35.55), "{week}");
        let daily = env["daily"].as_array().expect("days");
        assert_eq!(daily.len(), 30);
        let saturday = daily.iter().find(|d| d["day"] == "2026-12-05").expect("Saturday");
        assert!(close(&saturday["podHours"], 72.0), "{saturday}");
        assert_eq!(saved["total"]["last30Days"], env["last30Days"]);
        let table = run_at(&ns, "2026-12-07T12:00:00Z", &["envs", "--savings"]);
        let row = table
            .lines()
            .find(|l| l.starts_with(&ns.name))
            .unwrap_or_else(|| panic!("{table}"));
        let figures: Vec<&str> = row.split_whitespace().skip(1).collect();
        assert_eq!(figures, ["237.0", "35.6", "39.5", "252.0", "37.8", "42.0"], "{table}");
        assert!(table.contains("recorded since 2026-11-30 19:00 UTC"), "{table}");

        // A wake by hand of one workload counts what stays asleep.
        run_at(&ns, "2026-12-07T13:00:00Z", &["sleep"]);
        run_at(&ns, "2026-12-07T14:00:00Z", &["wake", "deploy/web"]);
        let ledger = eventually(Duration::from_secs(10), "the ledger", || async {
            let lease: Lease = ns.api::<Lease>().get("kdev-activity").await.ok()?;
            serde_json::from_str::<Value>(lease.annotations().get("kdev.dev/savings")?).ok()
        })
        .await;
        assert_eq!(
            ledger["open"],
            json!({ "at": "2026-12-07T14:00:00Z", "pods": 1, "cpuMillis": 250, "memoryBytes": 256 << 20 }),
            "{ledger}"
        );
    })
    .await;
}
