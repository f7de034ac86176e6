//! Resources slept by their namespace's patch rules
//! (`kdev.dev/sleep-patches`): a CloudNativePG-like `Cluster` under a CRD
//! of this test's own (a unique group, so tests beside it never see it),
//! with a stand-in operator that keeps `spec.instances` pods.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};

use crate::support::{TestNamespace, event_notes, eventually, kdev, kubectl_for, with_namespace};
use crate::swap_support::simple_deployment;

const RECORD: &str = "kdev.dev/sleep-patched";

/// A namespaced CRD `clusters.<group>` (kind `Cluster`, schema open) that
/// exists while this value does: deleted on drop, also when a test panics.
pub struct OwnCrd {
    pub resource: ApiResource,
    kubeconfig: std::path::PathBuf,
}

impl OwnCrd {
    /// Creates the CRD under a group named for `ns` and waits until it is served.
    pub async fn cnpg_like(ns: &TestNamespace) -> Self {
        let group = format!("{}.cnpg.test.kdev.dev", ns.name);
        // Deleted on drop from here on, also when the creation fails half-way.
        let own = OwnCrd {
            resource: ApiResource {
                group: group.clone(),
                version: "v1".into(),
                api_version: format!("{group}/v1"),
                kind: "Cluster".into(),
                plural: "clusters".into(),
            },
            kubeconfig: ns.kubeconfig.clone(),
        };
        crate::support::apply_crd(ns, &group, "Cluster", "clusters", "v1", false).await;
        own
    }

    pub fn api(&self, ns: &TestNamespace) -> Api<DynamicObject> {
        Api::namespaced_with(ns.client.clone(), &ns.name, &self.resource)
    }

    /// The namespace annotation's rule for this kind.
    pub fn rule(&self, sleep: Value) -> Value {
        json!([{ "group": self.resource.group, "kind": "Cluster", "sleep": sleep }])
    }

    pub async fn create(&self, ns: &TestNamespace, name: &str, spec: Value) {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": self.resource.api_version,
            "kind": "Cluster",
            "metadata": { "name": name },
            "spec": spec,
        }))
        .expect("an object");
        self.api(ns)
            .create(&PostParams::default(), &object)
            .await
            .expect("create the Cluster");
    }
}

impl Drop for OwnCrd {
    fn drop(&mut self) {
        let _ = kubectl_for(&self.kubeconfig)
            .args([
                "delete",
                "crd",
                &format!("clusters.{}", self.resource.group),
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

/// What an operator does that a sleep relies on: for every Cluster in the
/// namespace, `spec.instances` pods (kwok's node), none while
/// `spec.hibernation` is "on".
pub async fn stand_in_operator(client: kube::Client, namespace: String, resource: ApiResource) {
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let template = simple_deployment("db", 1, &[])["spec"]["template"]["spec"].clone();
    let mut changes = watcher(clusters.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(Ok(cluster)) = changes.next().await {
        let name = cluster.name_any();
        let hibernating = cluster.data["spec"]["hibernation"] == "on";
        let want = if hibernating {
            0
        } else {
            cluster.data["spec"]["instances"].as_u64().unwrap_or(0) as usize
        };
        let selector = format!("cnpg.test/cluster={name}");
        let Ok(have) = pods.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        let have: Vec<Pod> = have
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        for extra in have.iter().skip(want) {
            let _ = pods.delete(&extra.name_any(), &Default::default()).await;
        }
        for _ in have.len()..want {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {
                    "name": crate::support::unique_name(&name),
                    "labels": { "cnpg.test/cluster": name },
                },
                "spec": template,
            }))
            .expect("a pod");
            let _ = pods.create(&PostParams::default(), &pod).await;
        }
    }
}

/// Pods the stand-in keeps for a Cluster.
async fn instances(ns: &TestNamespace, name: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.list(&ListParams::default().labels(&format!("cnpg.test/cluster={name}")))
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count()
        })
        .unwrap_or(usize::MAX)
}

async fn wait_instances(ns: &TestNamespace, name: &str, want: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("{want} pods of Cluster {name}"),
        || async { (instances(ns, name).await == want).then_some(()) },
    )
    .await;
}

fn run(ns: &TestNamespace, args: &[&str]) -> (bool, String) {
    let output = kdev()
        .arg("--kubeconfig")
        .arg(&ns.kubeconfig)
        .args(["-n", &ns.name])
        .args(args)
        .output()
        .expect("run kdev");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

pub async fn annotate(ns: &TestNamespace, key: &str, value: &str) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
    namespaces
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { key: value } } })),
        )
        .await
        .expect("annotate the namespace");
}

/// Spec and annotations, without kdev's record: what a wake must give back.
fn declared(object: &DynamicObject) -> (Value, BTreeMap<String, String>) {
    let mut annotations = object.annotations().clone();
    annotations.remove(RECORD);
    (object.data["spec"].clone(), annotations)
}

/// A namespace with a Deployment and two operator-run Clusters sleeps by
/// its patch rule (a replace, an add, a remove) and wakes to exactly what
/// it had; a field changed by hand while asleep is kept and said so, and
/// the others of that object are put back. A dry run changes nothing, a
/// bad rule changes nothing and says where, a kind the cluster does not
/// serve is said and left.
#[tokio::test]
async fn an_operators_resource_sleeps_by_its_namespaces_patch_and_wakes_to_what_it_had() {
    with_namespace("envs-patch", |ns| async move {
        let crd = OwnCrd::cnpg_like(&ns).await;
        let operator = tokio::spawn(stand_in_operator(
            ns.client.clone(),
            ns.name.clone(),
            crd.resource.clone(),
        ));
        let rules = crd.rule(json!([
            { "op": "replace", "path": "/spec/instances", "value": 0 },
            { "op": "add", "path": "/spec/hibernation", "value": "on" },
            { "op": "remove", "path": "/spec/backup" },
            { "op": "add", "path": "/metadata/annotations/cnpg.test~1asleep", "value": "true" },
        ]));
        annotate(&ns, "kdev.dev/sleep-patches", &rules.to_string()).await;
        crd.create(
            &ns,
            "db",
            json!({ "instances": 3, "backup": { "schedule": "0 0 * * *" }, "storage": { "size": "1Gi" } }),
        )
        .await;
        crd.create(&ns, "cache", json!({ "instances": 2 })).await;
        let web: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(simple_deployment("web", 2, &[])).expect("a deployment");
        ns.api::<k8s_openapi::api::apps::v1::Deployment>()
            .create(&PostParams::default(), &web)
            .await
            .expect("create web");
        wait_instances(&ns, "db", 3).await;
        wait_instances(&ns, "cache", 2).await;
        let api = crd.api(&ns);
        let db_before = declared(&api.get("db").await.expect("db"));
        let cache_before = declared(&api.get("cache").await.expect("cache"));
        let resource = format!("cluster.{}", crd.resource.group);

        let (ok, out) = run(&ns, &["sleep", "--dry-run"]);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("{resource}/db in {}: would be asleep by its patch", ns.name)), "{out}");
        assert_eq!(declared(&api.get("db").await.expect("db")), db_before, "a dry run changes nothing");

        let (ok, out) = run(&ns, &["sleep"]);
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!(
                "{resource}/db in {}: asleep by its patch; /spec/instances 3 → 0; /spec/hibernation (none) → \"on\"; /spec/backup {{\"schedule\":\"0 0 * * *\"}} → (none)",
                ns.name
            )),
            "{out}"
        );
        assert!(out.contains("deployment/web"), "{out}");
        let db = api.get("db").await.expect("db");
        assert_eq!(db.data["spec"]["instances"], 0);
        assert_eq!(db.data["spec"]["hibernation"], "on");
        assert!(db.data["spec"].get("backup").is_none());
        assert_eq!(db.data["spec"]["storage"]["size"], "1Gi", "untouched");
        assert_eq!(db.annotations().get("cnpg.test/asleep").map(String::as_str), Some("true"));
        let record: Value = serde_json::from_str(&db.annotations()[RECORD]).expect("a record");
        assert_eq!(record["fields"][0], json!({ "path": "/spec/instances", "was": 3, "set": 0 }));
        wait_instances(&ns, "db", 0).await;
        wait_instances(&ns, "cache", 0).await;
        let notes = event_notes(&ns, "Slept").await;
        assert!(
            notes.iter().any(|n| n.contains(&format!("{resource}/db /spec/instances 3 → 0"))),
            "{notes:?}"
        );

        let (ok, out) = run(&ns, &["sleep"]);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("{resource}/db in {}: unchanged, already asleep", ns.name)), "{out}");

        // By hand while asleep: the cache runs one instance.
        api.patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "instances": 1 } })),
        )
        .await
        .expect("patch cache");

        let (ok, out) = run(&ns, &["wake"]);
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!("{resource}/cache in {}: awake, as before its sleep", ns.name))
                && out.contains("/spec/instances kept at 1 (changed while asleep)"),
            "{out}"
        );
        assert_eq!(declared(&api.get("db").await.expect("db")), db_before, "db exactly as before");
        let cache = api.get("cache").await.expect("cache");
        assert_eq!(cache.data["spec"]["instances"], 1, "the change by hand is kept");
        assert!(cache.data["spec"].get("hibernation").is_none(), "{:?}", cache.data);
        assert!(!cache.annotations().contains_key(RECORD));
        assert_ne!(declared(&cache), cache_before);
        wait_instances(&ns, "db", 3).await;
        wait_instances(&ns, "cache", 1).await;
        let (ok, out) = run(&ns, &["wake"]);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("{resource}/db in {}: unchanged, not asleep", ns.name)), "{out}");

        // A bad rule: said, with where to fix it; nothing patched.
        annotate(&ns, "kdev.dev/sleep-patches", r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"replace","path":"/status/x","value":1}]}]"#).await;
        let (ok, out) = run(&ns, &["sleep"]);
        assert!(!ok, "{out}");
        assert!(out.contains("annotation kdev.dev/sleep-patches") && out.contains("/status/x"), "{out}");
        assert_eq!(declared(&api.get("db").await.expect("db")), db_before);
        // A kind nobody serves: said and left.
        annotate(&ns, "kdev.dev/sleep-patches", r#"[{"group":"nowhere.example.com","kind":"Db","sleep":[{"op":"remove","path":"/spec/x"}]}]"#).await;
        let (ok, out) = run(&ns, &["wake"]);
        assert!(ok, "{out}");
        assert!(out.contains("the cluster serves no namespaced Db.nowhere.example.com"), "{out}");
        operator.abort();
    })
    .await;
}

/// Wake on request wakes what the namespace's patch slept too: an app's
/// first request must not find its database still asleep. The waker
/// carries the rules it was placed with (`--sleep-patches`); here a local
/// waker stands in for the Pod, and one connection wakes the Deployment
/// and the Cluster, which its stand-in operator then runs again.
#[tokio::test]
async fn a_request_to_a_waker_wakes_the_resources_slept_by_patch_as_well() {
    use tokio::io::AsyncWriteExt as _;
    with_namespace("envs-patch-waker", |ns| async move {
        let crd = OwnCrd::cnpg_like(&ns).await;
        let operator = tokio::spawn(stand_in_operator(
            ns.client.clone(),
            ns.name.clone(),
            crd.resource.clone(),
        ));
        let rules = crd
            .rule(json!([{ "op": "replace", "path": "/spec/instances", "value": 0 }]))
            .to_string();
        annotate(&ns, "kdev.dev/sleep-patches", &rules).await;
        crd.create(&ns, "pg", json!({ "instances": 2 })).await;
        let web: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(simple_deployment("web", 2, &[])).expect("a deployment");
        ns.api::<k8s_openapi::api::apps::v1::Deployment>()
            .create(&PostParams::default(), &web)
            .await
            .expect("create web");
        wait_instances(&ns, "pg", 2).await;
        let (ok, out) = run(&ns, &["sleep", "--no-wake-on-request"]);
        assert!(ok, "{out}");
        wait_instances(&ns, "pg", 0).await;

        let port = crate::support::free_port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let mut waker = kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "__waker", "--workload", "deployment/web"])
            .args(["--selector", "app=nobody", "--hold", "2s"])
            .args(["--port", &port.to_string(), "--health", "127.0.0.1:0"])
            .args(["--sleep-patches", &rules])
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().expect("the log"))
            .spawn()
            .expect("start the waker");
        let mut socket = eventually(Duration::from_secs(10), "the waker to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        socket
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            .await
            .expect("send");
        let api = crd.api(&ns);
        let woke = eventually(
            Duration::from_secs(20),
            "pg woken by the request",
            || async {
                let pg = api.get("pg").await.ok()?;
                (pg.data["spec"]["instances"] == 2).then_some(pg)
            },
        )
        .await;
        assert!(!woke.annotations().contains_key(RECORD));
        wait_instances(&ns, "pg", 2).await;
        let web = ns
            .api::<k8s_openapi::api::apps::v1::Deployment>()
            .get("web")
            .await
            .expect("web");
        assert_eq!(web.spec.and_then(|s| s.replicas), Some(2));
        let _ = waker.kill();
        let _ = waker.wait();
        let said = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(
            said.contains("/pg in") && said.contains("awake, as before its sleep"),
            "{said}"
        );
        // A waker given rules that cannot be used refuses to start.
        let refused = kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "__waker", "--workload", "deployment/web"])
            .args([
                "--selector",
                "app=nobody",
                "--port",
                "1",
                "--sleep-patches",
                "{}",
            ])
            .output()
            .expect("run the waker");
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
        operator.abort();
    })
    .await;
}
