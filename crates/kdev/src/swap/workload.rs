//! The workload a session takes, read the same way whatever its kind
//! (Deployment, StatefulSet, ReplicaSet, Argo Rollout): through the dynamic
//! API, as what every kind has: replicas, a selector and a pod template.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use serde_json::json;

use crate::error::usage;
use crate::k8s::{Kube, is_not_found};
pub use kdev_contract::session::{WorkloadKind, WorkloadRef};

/// One workload as a session reads it.
#[derive(Clone, Debug)]
pub struct Workload {
    pub reference: WorkloadRef,
    pub object: DynamicObject,
    /// `spec.replicas` (unset reads as 1, as Kubernetes reads it).
    pub replicas: i32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    /// A StatefulSet's governing Service (`spec.serviceName`).
    pub service_name: Option<String>,
}

/// The API resource of a kind.
pub fn resource(kind: WorkloadKind) -> ApiResource {
    let (group, version, kind, plural) = kind.api();
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The kind's API in `namespace`.
pub fn api(kube: &Kube, namespace: &str, kind: WorkloadKind) -> Api<DynamicObject> {
    Api::namespaced_with(kube.client.clone(), namespace, &resource(kind))
}

/// `spec.replicas` of an object of any of the kinds (unset reads as 1).
pub fn replicas_of(object: &DynamicObject) -> Option<i32> {
    object.data["spec"]["replicas"]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
}

impl Workload {
    /// Reads the parts every kind shares. A Rollout whose pods come from
    /// `workloadRef` (another object's template) is refused, naming it.
    pub fn from_object(kind: WorkloadKind, object: DynamicObject) -> anyhow::Result<Self> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let reference = WorkloadRef { kind, name };
        let spec = &object.data["spec"];
        if spec.get("template").is_none()
            && let Some(target) = spec.get("workloadRef")
        {
            return Err(usage(format!(
                "{reference} takes its pod template from workloadRef {}; swap or run the workload it names instead",
                target["name"].as_str().unwrap_or("?")
            )));
        }
        let template: PodTemplateSpec =
            serde_json::from_value(spec.get("template").cloned().unwrap_or_else(|| json!({})))
                .with_context(|| format!("{reference} has no readable pod template"))?;
        let selector: LabelSelector =
            serde_json::from_value(spec.get("selector").cloned().unwrap_or_else(|| json!({})))
                .with_context(|| format!("{reference} has no readable selector"))?;
        Ok(Self {
            replicas: replicas_of(&object).unwrap_or(1),
            service_name: spec["serviceName"].as_str().map(str::to_owned),
            reference,
            object,
            selector,
            template,
        })
    }

    /// Reads `reference` in the current namespace; a missing one is an
    /// error that says what to check.
    pub async fn read(kube: &Kube, reference: &WorkloadRef) -> anyhow::Result<Self> {
        let api = api(kube, &kube.namespace, reference.kind);
        match api.get(&reference.name).await {
            Ok(object) => Self::from_object(reference.kind, object),
            Err(err) if is_not_found(&err) => {
                let hint = match reference.kind {
                    WorkloadKind::Rollout => {
                        " (or Argo Rollouts' CRD, rollouts.argoproj.io, is not installed)"
                    }
                    _ => "",
                };
                anyhow::bail!(
                    "{reference} not found in namespace {}{hint}; check the name and -n",
                    kube.namespace
                )
            }
            Err(err) => Err(kube.explain(err, format!("read {reference} in {}", kube.namespace))),
        }
    }

    /// The pod template's spec.
    pub fn pod_spec(&self) -> PodSpec {
        self.template.spec.clone().unwrap_or_default()
    }

    /// The pod template's labels.
    pub fn template_labels(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    /// The object that controls this one (a Deployment for its
    /// ReplicaSets), as `kind/name`: scaling a controlled workload would be
    /// undone by its controller, so a session refuses it.
    pub fn controller(&self) -> Option<String> {
        self.object
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind.to_ascii_lowercase(), o.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": { "name": "kafka" },
            "spec": spec
        }))
        .expect("an object")
    }

    #[test]
    fn every_kind_is_read_as_replicas_selector_and_template() {
        let set = Workload::from_object(
            WorkloadKind::StatefulSet,
            object(
                "StatefulSet",
                json!({
                    "replicas": 3, "serviceName": "kafka",
                    "selector": { "matchLabels": { "app": "kafka" } },
                    "template": { "metadata": { "labels": { "app": "kafka" } },
                                  "spec": { "containers": [{ "name": "broker" }] } }
                }),
            ),
        )
        .expect("readable");
        assert_eq!(set.replicas, 3);
        assert_eq!(set.service_name.as_deref(), Some("kafka"));
        assert_eq!(set.template_labels()["app"], "kafka");
        assert_eq!(set.pod_spec().containers[0].name, "broker");
        assert_eq!(set.reference.to_string(), "statefulset/kafka");
        // Unset replicas read as 1.
        let one = Workload::from_object(
            WorkloadKind::ReplicaSet,
            object("ReplicaSet", json!({ "template": {} })),
        )
        .expect("readable");
        assert_eq!(one.replicas, 1);
    }

    #[test]
    fn a_rollout_with_a_workload_ref_is_refused_naming_it() {
        let err = Workload::from_object(
            WorkloadKind::Rollout,
            object(
                "Rollout",
                json!({ "workloadRef": { "kind": "Deployment", "name": "web" } }),
            ),
        )
        .unwrap_err();
        assert!(err.to_string().contains("workloadRef web"), "{err}");
    }

    #[test]
    fn a_controlled_replicaset_names_its_controller() {
        let mut rs = object("ReplicaSet", json!({ "template": {} }));
        rs.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                kind: "Deployment".into(),
                name: "web".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        let rs = Workload::from_object(WorkloadKind::ReplicaSet, rs).expect("readable");
        assert_eq!(rs.controller().as_deref(), Some("deployment/web"));
    }

    proptest::proptest! {
        #[test]
        fn any_spec_is_read_or_refused_never_a_panic(spec in proptest::arbitrary::any::<String>()) {
            let value = serde_json::from_str(&spec).unwrap_or(serde_json::Value::String(spec));
            let _ = Workload::from_object(WorkloadKind::Rollout, object("Rollout", value));
        }
    }
}
