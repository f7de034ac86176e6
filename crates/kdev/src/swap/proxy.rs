//! The proxy Pod that stands in for a swapped Deployment's pods.
//!
//! Services must route to it, so it carries the pod template's labels
//! (without `pod-template-hash`, so no ReplicaSet adopts it) and the swapped
//! container's ports under the same names. It is owned by the session's Lease,
//! never by the ReplicaSet, so deleting the Lease collects it. It runs kdev's
//! agent unprivileged: non-root, no capabilities, read-only root filesystem.
//!
//! A `kdev run` session's agent Pod is the same Pod without the workload's
//! labels and ports: nothing routes to it, and its agent only dials out for
//! the session's command.

use k8s_openapi::api::core::v1::{
    Container, ExecAction, Pod, PodSpec, Probe, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kdev_contract::keys::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use kdev_contract::session::{
    AGENT_CONTAINER, AGENT_PORT, CONTAINER_ANNOTATION, Mode, ORIGINAL_REPLICAS_ANNOTATION,
    ROLE_LABEL, SESSION_ANNOTATION, SESSION_LABEL, TARGET_ANNOTATION,
};
use kube::api::ObjectMeta;

use super::workload::{Workload, WorkloadKind};
use crate::k8s::objects::{small_resources, unprivileged_container, unprivileged_pod};
use std::collections::BTreeMap;

pub use kdev_contract::keys::default_agent_image;

pub struct ProxySpec<'a> {
    pub mode: Mode,
    pub name: &'a str,
    pub session: &'a str,
    pub workload: &'a Workload,
    pub container: &'a Container,
    pub original_replicas: i32,
    pub agent_image: &'a str,
    pub owner: OwnerReference,
    /// A StatefulSet's ordinal whose identity the proxy takes (0 by default).
    pub ordinal: Option<u32>,
    /// Labels of a running original pod that its Services select and the
    /// template does not hold (a Rollout's `rollouts-pod-template-hash`).
    pub carried_labels: BTreeMap<String, String>,
}

/// The label Argo Rollouts puts on its pods and its active Services' selectors.
pub const ROLLOUT_HASH_LABEL: &str = "rollouts-pod-template-hash";

/// Where the agent finds the session's token.
const TOKEN_DIR: &str = "/var/run/kdev";

/// The session's token Secret (named like the proxy Pod, owned by the Lease).
pub fn token_secret(
    name: &str,
    session: &str,
    token: &[u8; kdev_contract::tunnel::auth::TOKEN_LEN],
    owner: OwnerReference,
) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [
                    (ROLE_LABEL.to_owned(), "swap-token".to_owned()),
                    (SESSION_LABEL.to_owned(), session.to_owned()),
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some([("token".to_owned(), k8s_openapi::ByteString(token.to_vec()))].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

pub fn pod(spec: &ProxySpec<'_>) -> anyhow::Result<Pod> {
    let workload = spec.workload;
    let set_pod = (workload.reference.kind == WorkloadKind::StatefulSet)
        .then(|| format!("{}-{}", workload.reference.name, spec.ordinal.unwrap_or(0)));
    let mut labels = match spec.mode {
        Mode::Swap => {
            let mut labels = workload.template_labels();
            labels.extend(spec.carried_labels.clone());
            if let Some(set_pod) = &set_pod {
                // Per-pod Services select it.
                labels.insert("statefulset.kubernetes.io/pod-name".into(), set_pod.clone());
            }
            labels
        }
        Mode::Run => Default::default(),
    };
    labels.remove("pod-template-hash");
    let mut owner = spec.owner.clone();
    if spec.mode == Mode::Swap
        && matches!(
            workload.reference.kind,
            WorkloadKind::ReplicaSet | WorkloadKind::Rollout
        )
    {
        // Its labels match a ReplicaSet's selector: as the controller
        // owner's pod, no ReplicaSet adopts (and deletes) it.
        owner.controller = Some(true);
    }
    labels.insert(ROLE_LABEL.into(), spec.mode.pod_role().into());
    labels.insert(SESSION_LABEL.into(), spec.session.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());

    let container_ports = match spec.mode {
        Mode::Swap => crate::k8s::objects::tcp_ports([spec.container]),
        Mode::Run => Vec::new(),
    };
    if container_ports
        .iter()
        .any(|p| p.container_port == i32::from(AGENT_PORT))
    {
        anyhow::bail!(
            "container {:?} uses port {AGENT_PORT}, which kdev's agent needs for its tunnel",
            spec.container.name
        );
    }
    // The tunnel listens on the pod's loopback (the agent's default): a
    // port-forward reaches it, other pods do not, so it is not declared.
    let mut args = vec![
        "agent".to_owned(),
        "--token-file".into(),
        format!("{TOKEN_DIR}/token"),
    ];
    for port in &container_ports {
        args.push("--port".into());
        args.push(port.container_port.to_string());
    }
    let ports = container_ports.clone();

    let template = workload.template.spec.as_ref();

    let mut annotations: std::collections::BTreeMap<String, String> = [
        (SESSION_ANNOTATION.to_owned(), spec.session.to_owned()),
        (TARGET_ANNOTATION.to_owned(), workload.reference.to_string()),
        (CONTAINER_ANNOTATION.to_owned(), spec.container.name.clone()),
    ]
    .into();
    if spec.mode == Mode::Swap {
        annotations.insert(
            ORIGINAL_REPLICAS_ANNOTATION.to_owned(),
            spec.original_replicas.to_string(),
        );
    }

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(spec.name.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            // A StatefulSet's pod name under its governing Service
            // (`kafka-0.kafka`) resolves to the proxy.
            hostname: set_pod.clone().filter(|_| spec.mode == Mode::Swap),
            subdomain: workload
                .service_name
                .clone()
                .filter(|_| set_pod.is_some() && spec.mode == Mode::Swap),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(2),
            node_selector: template.and_then(|t| t.node_selector.clone()),
            tolerations: template.and_then(|t| t.tolerations.clone()),
            image_pull_secrets: template.and_then(|t| t.image_pull_secrets.clone()),
            // Secret volume files get kdev's group: how the non-root agent
            // reads its token.
            security_context: Some(unprivileged_pod(&container_ports, true)),
            volumes: Some(vec![Volume {
                name: "kdev-token".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(spec.name.to_owned()),
                    // Readable by the agent's group only (fsGroup above).
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            }]),
            containers: vec![Container {
                name: AGENT_CONTAINER.into(),
                image: Some(spec.agent_image.to_owned()),
                args: Some(args),
                ports: Some(ports),
                // Readiness is the agent's own loopback port, asked by an
                // exec probe: a probe must never touch the tunnel.
                readiness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec!["/kdev".into(), "__agent-ready".into()]),
                    }),
                    period_seconds: Some(2),
                    ..Probe::default()
                }),
                volume_mounts: Some(vec![VolumeMount {
                    name: "kdev-token".into(),
                    mount_path: TOKEN_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                }]),
                resources: Some(small_resources("128Mi")),
                security_context: Some(unprivileged_container()),
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

    fn workload(kind: WorkloadKind) -> Workload {
        let object = serde_json::from_value(json!({
            "metadata": { "name": "web" },
            "spec": {
                "serviceName": "web",
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web", "tier": "front", "pod-template-hash": "abc" } },
                    "spec": { "containers": [{ "name": "app", "ports": [
                        { "name": "http", "containerPort": 80 },
                        { "containerPort": 9090 },
                        { "containerPort": 53, "protocol": "UDP" }
                    ] }] }
                }
            }
        }))
        .expect("valid");
        Workload::from_object(kind, object).expect("readable")
    }

    fn build() -> Pod {
        build_as(Mode::Swap)
    }

    fn build_as(mode: Mode) -> Pod {
        build_of(mode, WorkloadKind::Deployment)
    }

    fn build_of(mode: Mode, kind: WorkloadKind) -> Pod {
        let workload = workload(kind);
        let container = workload.pod_spec().containers[0].clone();
        let carried_labels = match kind {
            WorkloadKind::Rollout => [(ROLLOUT_HASH_LABEL.to_owned(), "h1".to_owned())].into(),
            _ => BTreeMap::new(),
        };
        pod(&ProxySpec {
            mode,
            name: "web-kdev-1234",
            session: "1234",
            workload: &workload,
            container: &container,
            original_replicas: 3,
            agent_image: "kdev:test",
            owner: OwnerReference {
                kind: "Lease".into(),
                name: "kdev-swap-web".into(),
                ..Default::default()
            },
            ordinal: Some(2),
            carried_labels,
        })
        .expect("a pod")
    }

    #[test]
    fn a_statefulsets_proxy_takes_its_pods_name_under_the_governing_service() {
        let pod = build_of(Mode::Swap, WorkloadKind::StatefulSet);
        let spec = pod.spec.clone().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        assert_eq!(
            pod.metadata.labels.unwrap()["statefulset.kubernetes.io/pod-name"],
            "web-2"
        );
        assert_eq!(pod.metadata.owner_references.unwrap()[0].controller, None);
        // A run's agent pod is nobody's pod.
        let run = build_of(Mode::Run, WorkloadKind::StatefulSet).spec.unwrap();
        assert_eq!((run.hostname, run.subdomain), (None, None));
    }

    #[test]
    fn no_replicaset_adopts_the_proxy_of_a_replicaset_or_a_rollout() {
        for kind in [WorkloadKind::ReplicaSet, WorkloadKind::Rollout] {
            let pod = build_of(Mode::Swap, kind);
            assert_eq!(
                pod.metadata.owner_references.unwrap()[0].controller,
                Some(true)
            );
        }
        let rollout = build_of(Mode::Swap, WorkloadKind::Rollout);
        assert_eq!(rollout.metadata.labels.unwrap()[ROLLOUT_HASH_LABEL], "h1");
    }

    #[test]
    fn services_select_it_and_no_replicaset_adopts_it() {
        let pod = build();
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["tier"], "front");
        assert!(!labels.contains_key("pod-template-hash"));
        assert_eq!(pod.metadata.owner_references.unwrap()[0].kind, "Lease");
        assert_eq!(
            pod.metadata.annotations.unwrap()[ORIGINAL_REPLICAS_ANNOTATION],
            "3"
        );
    }

    #[test]
    fn it_serves_the_containers_tcp_ports_by_name() {
        let spec = build().spec.unwrap();
        let agent = &spec.containers[0];
        let ports: Vec<(Option<String>, i32)> = agent
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.container_port))
            .collect();
        // The tunnel is not declared: it listens on the pod's loopback.
        assert_eq!(ports, vec![(Some("http".into()), 80), (None, 9090)]);
        assert_eq!(
            agent.args.clone().unwrap(),
            [
                "agent",
                "--token-file",
                "/var/run/kdev/token",
                "--port",
                "80",
                "--port",
                "9090"
            ]
        );
        // Readiness never touches the tunnel.
        let probe = agent.readiness_probe.clone().unwrap();
        assert!(probe.tcp_socket.is_none());
        assert_eq!(
            probe.exec.unwrap().command.unwrap(),
            ["/kdev", "__agent-ready"]
        );
        // Port 80 without a capability: the unprivileged-port sysctl.
        let sysctls = spec.security_context.unwrap().sysctls.unwrap();
        assert_eq!(sysctls[0].value, "0");
    }

    #[test]
    fn it_runs_unprivileged() {
        let spec = build().spec.unwrap();
        let pod_security = spec.security_context.clone().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        let security = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(spec.automount_service_account_token, Some(false));
    }

    #[test]
    fn a_run_sessions_agent_pod_has_none_of_the_workloads_labels_or_ports() {
        let pod = build_as(Mode::Run);
        let labels = pod.metadata.labels.unwrap();
        assert!(!labels.contains_key("app") && !labels.contains_key("tier"));
        assert_eq!(labels[ROLE_LABEL], "run-agent");
        assert!(
            !pod.metadata
                .annotations
                .unwrap()
                .contains_key(ORIGINAL_REPLICAS_ANNOTATION)
        );
        let spec = pod.spec.unwrap();
        let agent = &spec.containers[0];
        assert_eq!(agent.ports.clone().unwrap_or_default(), []);
        assert_eq!(
            agent.args.clone().unwrap(),
            ["agent", "--token-file", "/var/run/kdev/token"]
        );
        // Scheduled where the workload's pods may run, unprivileged.
        assert_eq!(spec.security_context.unwrap().run_as_non_root, Some(true));
    }
}
