//! Helpers for kwok's fake kubelet, which serves a pod's logs from a local
//! file, runs its exec as a local command and forwards its ports to a local
//! TCP port: the tools kdev's own tests use to stand in for containers.
//! (kwok's own behaviour is not re-tested here; `kdev cluster up` waits for
//! these APIs to be served, and every logs and swap test relies on them.)

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

use crate::support::TestNamespace;

fn kwok_resource(kind: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", kind);
    let lower = kind.to_lowercase();
    let plural = if lower.ends_with('s') {
        lower
    } else {
        format!("{lower}s")
    };
    ApiResource::from_gvk_with_plural(&gvk, &plural)
}

/// Creates one of kwok's cluster-wide resources (ClusterLogs, ClusterExec, ClusterPortForward).
pub async fn create_kwok_cluster(
    client: &kube::Client,
    kind: &str,
    name: &str,
    spec: serde_json::Value,
) {
    let resource = kwok_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let object = DynamicObject::new(name, &resource).data(json!({ "spec": spec }));
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("create kwok {kind} {name}: {err}"));
}

/// Creates one of kwok's per-pod resources (Logs, Exec, PortForward), named
/// after the pod it applies to.
pub async fn create_kwok(ns: &TestNamespace, kind: &str, pod: &str, spec: serde_json::Value) {
    let resource = kwok_resource(kind);
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let object = DynamicObject::new(pod, &resource).data(json!({ "spec": spec }));
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("create kwok {kind} for pod {pod}: {err}"));
}
