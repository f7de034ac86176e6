//! Small helpers over Kubernetes objects that several capabilities share.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, PodSecurityContext, ResourceRequirements,
    SeccompProfile, SecurityContext, Sysctl,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kdev_contract::lease::LeaseRecord;
use kube::Resource;
use kube::core::Selector;

/// The TCP ports `containers` declare, as a stand-in pod declares them
/// (same numbers and names, so a Service's named targetPort resolves).
pub fn tcp_ports<'a>(containers: impl IntoIterator<Item = &'a Container>) -> Vec<ContainerPort> {
    containers
        .into_iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| ContainerPort {
            name: p.name.clone(),
            container_port: p.container_port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        })
        .collect()
}

/// The user kdev's own pods (a swap's proxy, a waker) run as.
pub const KDEV_USER: i64 = 65532;

/// The pod security of kdev's own pods: non-root, RuntimeDefault seccomp
/// (the restricted Pod Security Standard). Ports below 1024 need no
/// capability when the pod's network namespace lets everyone bind them (a
/// "safe" sysctl since Kubernetes 1.22). `fs_group` gives mounted Secret
/// files kdev's group.
pub fn unprivileged_pod(ports: &[ContainerPort], fs_group: bool) -> PodSecurityContext {
    let sysctls = ports.iter().any(|p| p.container_port < 1024).then(|| {
        vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".into(),
            value: "0".into(),
        }]
    });
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(KDEV_USER),
        run_as_group: Some(KDEV_USER),
        fs_group: fs_group.then_some(KDEV_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        sysctls,
        ..PodSecurityContext::default()
    }
}

/// The container security of kdev's own pods: no privilege escalation,
/// read-only root filesystem, every capability dropped.
pub fn unprivileged_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// A small helper's resources: 10m CPU and 16Mi requested, memory capped.
pub fn small_resources(memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".into(), Quantity("10m".into())),
                ("memory".into(), Quantity("16Mi".into())),
            ]
            .into(),
        ),
        limits: Some([("memory".into(), Quantity(memory_limit.into()))].into()),
        ..ResourceRequirements::default()
    }
}

/// Labels of a Deployment's pod template.
pub fn template_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// A label selector (`matchLabels` and `matchExpressions`) in the query form
/// the API server takes. `None` for an empty selector (which selects
/// everything) or one with an operator Kubernetes does not define.
pub fn selector_query(selector: &LabelSelector) -> Option<String> {
    let rendered = Selector::try_from(selector.clone()).ok()?.to_string();
    (!rendered.is_empty()).then_some(rendered)
}

/// A map of labels (a Service's selector) in query form; `None` when empty.
pub fn labels_query(labels: &BTreeMap<String, String>) -> Option<String> {
    let rendered = labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<Selector>()
        .to_string();
    (!rendered.is_empty()).then_some(rendered)
}

/// An owner reference to `owner`, without `controller`, so that only garbage
/// collection follows it.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// What a Lease records, as the expiry rule compares it.
pub fn lease_record(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// Whether the pod's `Ready` condition is true.
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_render_as_the_api_reads_them() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": { "app": "web" },
            "matchExpressions": [
                { "key": "tier", "operator": "In", "values": ["a", "b"] },
                { "key": "canary", "operator": "DoesNotExist" }
            ]
        }))
        .expect("valid selector");
        assert_eq!(
            selector_query(&selector).as_deref(),
            Some("app=web,tier in (a,b),!canary")
        );
        assert_eq!(selector_query(&LabelSelector::default()), None);
        assert_eq!(labels_query(&BTreeMap::new()), None);
        assert_eq!(
            labels_query(&[("app".to_owned(), "web".to_owned())].into()),
            Some("app=web".into())
        );
    }
}
