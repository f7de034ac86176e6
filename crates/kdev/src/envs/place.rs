//! Placing wakers. While an environment sleeps, each sleeping Deployment,
//! StatefulSet or Rollout that a Service selects has a waker Pod: kdev's agent
//! image, carrying the workload's pod template labels (so its Services
//! route to it) and its container ports, running `kdev __waker`
//! ([`super::waker`]).
//!
//! # Expected flow
//! `place` (after a sleep, by [`super::act`]): delete the namespace's old
//! wakers, make sure the `kdev-waker` ServiceAccount and its RoleBinding to
//! `kdev-env-waker` exist, create one waker per sleeping workload behind a
//! Service.
//!
//! # Guarantees
//! - The waker cannot change anything but workload sizes: its Role is the
//!   starter's plus reading pods; no Secrets, no patches of workloads.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, ExecAction, Pod, PodSpec, PodTemplateSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kdev_contract::envs::{
    self as contract, ROLE_WAKER, WAKER_CLUSTER_ROLE, WAKER_SERVICE_ACCOUNT,
};
use kdev_contract::keys::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use kdev_contract::session::ROLE_LABEL;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt as _};
use serde::Serialize;

use super::workload::{self, Kind, Ref, Rollout, Scalable};
use crate::k8s::{self, Kube};

/// The label selector of every waker Pod.
pub fn waker_selector() -> String {
    format!("{ROLE_LABEL}={ROLE_WAKER}")
}

/// The cluster autoscaler's annotation for a pod it may evict.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// Where a waker answers readiness (its exec probe asks `kdev __agent-ready`).
pub const HEALTH: &str = "127.0.0.1:7356";

/// What `place` did in one namespace.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placed {
    pub namespace: String,
    /// `workload ← services` per waker placed.
    pub wakers: Vec<String>,
    /// Why none could be placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Placed {
    pub fn line(&self) -> String {
        match (&self.error, self.wakers.is_empty()) {
            (Some(error), _) => format!(
                "namespace {}: wake on request is off: {error}",
                self.namespace
            ),
            (None, true) => format!(
                "namespace {}: no Service selects a sleeping workload; nothing wakes it on request",
                self.namespace
            ),
            (None, false) => format!(
                "namespace {}: a request wakes it ({})",
                self.namespace,
                self.wakers.join("; ")
            ),
        }
    }
}

/// A sleeping workload's pod template, as a waker needs it.
struct Sleeper {
    reference: Ref,
    selector: String,
    template: PodTemplateSpec,
    /// Labels its controller adds to each pod (a Rollout's hash).
    added: BTreeMap<String, String>,
}

/// The sleeper `object` is: asleep by kdev's record, with a pod template.
fn sleeper<K: Scalable>(object: &K) -> Option<Sleeper> {
    let asleep = object.size() == 0
        && object
            .annotations()
            .contains_key(contract::SLEEP_ANNOTATION);
    asleep.then_some(())?;
    let pods = object.pods()?;
    Some(Sleeper {
        reference: Ref {
            kind: K::KIND,
            name: object.name_any(),
        },
        selector: k8s::objects::selector_query(pods.selector)?,
        template: pods.template.clone(),
        added: pods.added,
    })
}

/// Whether a Service's selector selects pods labelled `labels` (a Service
/// without a selector selects nothing).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Replaces the namespace's wakers by one per sleeping workload that a
/// Service selects. An error says why wake on request is off there.
/// `patches`: the namespace's `kdev.dev/sleep-patches` rules, which the
/// wakers carry so that a request wakes what they slept as well.
pub async fn place(
    kube: &Kube,
    namespace: &str,
    image: &str,
    wake: &[Ref],
    patches: Option<&str>,
) -> Placed {
    let mut placed = Placed {
        namespace: namespace.to_owned(),
        wakers: Vec::new(),
        error: None,
    };
    if let Err(err) = place_in(kube, namespace, image, wake, patches, &mut placed.wakers).await {
        placed.error = Some(format!("{err:#}"));
    }
    placed
}

async fn place_in(
    kube: &Kube,
    namespace: &str,
    image: &str,
    wake: &[Ref],
    patches: Option<&str>,
    wakers: &mut Vec<String>,
) -> anyhow::Result<()> {
    let client = kube.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let all = ListParams::default();
    let (services, deployments, statefulsets, rollouts) = tokio::try_join!(
        async {
            services
                .list(&all)
                .await
                .map_err(|err| kube.explain(err, format!("list Services in {namespace}")))
        },
        workload::list_kind::<Deployment>(kube, Some(namespace)),
        workload::list_kind::<StatefulSet>(kube, Some(namespace)),
        workload::list_kind::<Rollout>(kube, Some(namespace)),
    )?;
    let sleepers = deployments
        .iter()
        .filter_map(sleeper)
        .chain(statefulsets.iter().filter_map(sleeper))
        .chain(rollouts.iter().filter_map(sleeper));
    let mut planned = Vec::new();
    for sleeper in sleepers {
        // The labels its pods carry: the template's and its controller's.
        let mut labels = sleeper
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.extend(sleeper.added.clone());
        let behind: Vec<String> = services
            .items
            .iter()
            .filter(|svc| {
                let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
                selects(&selector.unwrap_or_default(), &labels)
            })
            .map(|svc| svc.name_any())
            .collect();
        if !behind.is_empty() {
            planned.push((sleeper, behind));
        }
    }
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&waker_selector()),
    )
    .await
    .map_err(|err| kube.explain(err, format!("delete the old wakers in {namespace}")))?;
    if planned.is_empty() {
        return Ok(());
    }
    ensure_account(kube, namespace, patches.is_some()).await?;
    // The waker renews the activity Lease (it may patch that one only).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    match leases
        .create(
            &PostParams::default(),
            &k8s::activity::lease("kdev: wake on request placed"),
        )
        .await
    {
        Ok(_) => {}
        Err(err) if k8s::is_conflict(&err) => {}
        Err(err) => {
            return Err(kube.explain(err, format!("create the activity Lease in {namespace}")));
        }
    }
    for (sleeper, behind) in planned {
        let pod = pod(&sleeper, image, wake, patches)?;
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|err| {
                kube.explain(
                    err,
                    format!("create a waker for {} in {namespace}", sleeper.reference),
                )
            })?;
        wakers.push(format!(
            "{} ← service {}",
            sleeper.reference,
            behind.join(", ")
        ));
    }
    Ok(())
}

/// The waker's ServiceAccount and its RoleBinding to `kdev-env-waker`
/// (and, where the namespace sleeps resources by patch, to
/// `kdev-env-patched`), created once per namespace and left there (they
/// grant nothing to anyone else).
async fn ensure_account(kube: &Kube, namespace: &str, patched: bool) -> anyhow::Result<()> {
    let labels = Some(BTreeMap::from([(
        MANAGED_BY_LABEL.to_owned(),
        MANAGED_BY_VALUE.to_owned(),
    )]));
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(WAKER_SERVICE_ACCOUNT.into()),
            labels: labels.clone(),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    let binding = |name: &str, role: &str| RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels.clone(),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: WAKER_SERVICE_ACCOUNT.into(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    let mut roles = vec![binding(WAKER_SERVICE_ACCOUNT, WAKER_CLUSTER_ROLE)];
    if patched {
        roles.push(binding(WAKER_PATCHED_BINDING, PATCHED_CLUSTER_ROLE));
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(kube.client.clone(), namespace);
    let mut created = vec![
        accounts
            .create(&PostParams::default(), &account)
            .await
            .map(drop),
    ];
    for binding in &roles {
        created.push(
            bindings
                .create(&PostParams::default(), binding)
                .await
                .map(drop),
        );
    }
    for created in created {
        match created {
            Ok(()) => {}
            Err(err) if k8s::is_conflict(&err) => {}
            Err(err) => {
                return Err(kube.explain(
                    err,
                    format!(
                                                "create ServiceAccount {WAKER_SERVICE_ACCOUNT} and its RoleBindings to ClusterRole {WAKER_CLUSTER_ROLE}{} in {namespace} (are deploy/env-waker.yaml and deploy/env-patched.yaml applied?)",
                        if patched { format!(" and {PATCHED_CLUSTER_ROLE}") } else { String::new() }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The RoleBinding of a waker to [`PATCHED_CLUSTER_ROLE`].
const WAKER_PATCHED_BINDING: &str = "kdev-waker-patched";
/// What it takes to sleep and wake resources by patch (deploy/env-patched.yaml).
pub const PATCHED_CLUSTER_ROLE: &str = "kdev-env-patched";

/// The waker Pod for one sleeping workload.
fn pod(sleeper: &Sleeper, image: &str, wake: &[Ref], patches: Option<&str>) -> anyhow::Result<Pod> {
    let template = sleeper.template.spec.as_ref();
    let mut labels = sleeper
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.remove("pod-template-hash");
    labels.remove("controller-revision-hash");
    labels.remove("statefulset.kubernetes.io/pod-name");
    labels.extend(sleeper.added.clone());
    labels.insert(ROLE_LABEL.into(), ROLE_WAKER.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut ports = k8s::objects::tcp_ports(template.iter().flat_map(|t| t.containers.iter()));
    ports.sort_by_key(|p| p.container_port);
    ports.dedup_by_key(|p| p.container_port);
    if ports.is_empty() {
        anyhow::bail!(
            "{} declares no TCP container port, so a waker cannot know where its Services send connections; declare them in its pod template",
            sleeper.reference
        );
    }
    let mut args = vec![
        "__waker".to_owned(),
        "--workload".into(),
        sleeper.reference.to_string(),
        "--selector".into(),
        sleeper.selector.clone(),
    ];
    for port in &ports {
        args.extend(["--port".into(), port.container_port.to_string()]);
    }
    for target in wake {
        args.extend(["--wake".into(), target.to_string()]);
    }
    if let Some(rules) = patches {
        args.extend(["--sleep-patches".into(), rules.to_owned()]);
    }
    let kind = match sleeper.reference.kind {
        Kind::StatefulSet => "sts",
        Kind::Rollout => "rollout",
        _ => "deploy",
    };
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("kdev-waker-{kind}-{}-", sleeper.reference.name)),
            labels: Some(labels),
            // A bare Pod blocks the cluster autoscaler from removing its
            // node, which is what sleeping is for; a waker holds nothing
            // that an eviction loses.
            annotations: Some(
                [(SAFE_TO_EVICT.to_owned(), "true".to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(WAKER_SERVICE_ACCOUNT.into()),
            automount_service_account_token: Some(true),
            enable_service_links: Some(false),
            restart_policy: Some("OnFailure".into()),
            termination_grace_period_seconds: Some(2),
            node_selector: template.and_then(|t| t.node_selector.clone()),
            tolerations: template.and_then(|t| t.tolerations.clone()),
            image_pull_secrets: template.and_then(|t| t.image_pull_secrets.clone()),
            security_context: Some(k8s::objects::unprivileged_pod(&ports, false)),
            containers: vec![Container {
                name: "kdev-waker".into(),
                image: Some(image.to_owned()),
                args: Some(args),
                ports: Some(ports),
                readiness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec![
                            "/kdev".into(),
                            "__agent-ready".into(),
                            "--health".into(),
                            HEALTH.into(),
                        ]),
                    }),
                    period_seconds: Some(1),
                    failure_threshold: Some(1),
                    ..Probe::default()
                }),
                resources: Some(k8s::objects::small_resources("64Mi")),
                security_context: Some(k8s::objects::unprivileged_container()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_selects_by_every_key_of_its_selector() {
        let labels: BTreeMap<String, String> = [
            ("app".into(), "web".into()),
            ("tier".into(), "front".into()),
        ]
        .into();
        let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(selects(&sel(&[("app", "web")]), &labels));
        assert!(!selects(&sel(&[("app", "web"), ("tier", "back")]), &labels));
        assert!(!selects(&sel(&[]), &labels), "no selector selects nothing");
    }

    #[test]
    fn a_waker_stands_for_the_workload_and_runs_unprivileged() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "web", "annotations": { contract::SLEEP_ANNOTATION: "{}" } },
            "spec": {
                "replicas": 0,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web", "pod-template-hash": "abc" } },
                    "spec": { "containers": [{ "name": "app", "ports": [
                        { "name": "http", "containerPort": 80 },
                        { "containerPort": 53, "protocol": "UDP" }
                    ] }] }
                }
            }
        }))
        .expect("valid");
        let found = sleeper(&deployment).expect("asleep");
        let pod = pod(&found, "kdev:test", &[], None).expect("a pod");
        let labels = pod.metadata.labels.clone().expect("labels");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[ROLE_LABEL], ROLE_WAKER);
        let annotations = pod.metadata.annotations.clone().expect("annotations");
        assert_eq!(
            annotations[SAFE_TO_EVICT], "true",
            "wakers do not block scale-down"
        );
        assert!(!labels.contains_key("pod-template-hash"));
        let spec = pod.spec.expect("spec");
        let container = &spec.containers[0];
        let ports: Vec<_> = container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("http".into()), 80)]);
        let args = container.args.clone().expect("args");
        assert_eq!(
            args,
            [
                "__waker",
                "--workload",
                "deployment/web",
                "--selector",
                "app=web",
                "--port",
                "80"
            ]
        );
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some(WAKER_SERVICE_ACCOUNT)
        );
        let security = container.security_context.clone().expect("security");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.expect("caps").drop.expect("drop"),
            ["ALL"]
        );
        // Awake (replicas 1) or never put to sleep by kdev: no waker.
        let mut awake = deployment.clone();
        awake.spec.as_mut().unwrap().replicas = Some(1);
        assert!(sleeper(&awake).is_none());
        let mut never_slept = deployment.clone();
        never_slept.metadata.annotations = None;
        assert!(sleeper(&never_slept).is_none());
    }

    #[test]
    fn a_rollouts_waker_carries_the_stable_hash_its_active_service_selects() {
        let rollout: Rollout = serde_json::from_value(json!({
            "metadata": { "name": "web", "annotations": { contract::SLEEP_ANNOTATION: "{}" } },
            "spec": {
                "replicas": 0,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "app", "ports": [{ "containerPort": 8080 }] }] }
                }
            },
            "status": { "stableRS": "5d8f7c9b6" }
        }))
        .expect("valid");
        let found = sleeper(&rollout).expect("asleep");
        let pod = pod(&found, "kdev:test", &[], None).expect("a pod");
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels["rollouts-pod-template-hash"], "5d8f7c9b6");
        assert_eq!(
            pod.metadata.generate_name.as_deref(),
            Some("kdev-waker-rollout-web-")
        );
        let args = pod.spec.expect("spec").containers[0]
            .args
            .clone()
            .expect("args");
        assert_eq!(args[..3], ["__waker", "--workload", "rollout/web"]);
        // A Rollout whose template is a Deployment's (workloadRef) has
        // none of its own: no waker stands for it.
        let mut by_ref = rollout.clone();
        by_ref.spec.as_mut().unwrap().template = None;
        assert!(sleeper(&by_ref).is_none());
    }
}
