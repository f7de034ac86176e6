//! A swap session as it is recorded in the cluster, and what restoring it means.
//!
//! A session of `kdev swap deploy/NAME` is written into the cluster before
//! anything changes, so any process can restore it from cluster state alone:
//!
//! - a Lease named [`lease_name`]`(NAME)`, labelled [`ROLE_LABEL`]`=`[`ROLE_SESSION`]
//!   and [`SESSION_LABEL`]`=<id>`, annotated with [`TARGET_ANNOTATION`] and
//!   [`CONTAINER_ANNOTATION`]; its holder renews it while the CLI lives;
//! - on the Deployment, in the one PATCH that scales it to 0: the label
//!   [`SWAPPED_LABEL`]`=<id>` and the annotations [`SESSION_ANNOTATION`]`=<id>` and
//!   [`ORIGINAL_REPLICAS_ANNOTATION`]`=<n>`;
//! - a proxy Pod owned by the Lease (so deleting the Lease collects it),
//!   labelled [`ROLE_LABEL`]`=`[`ROLE_PROXY`] and carrying the same annotations.
//!
//! [`restore_plan`] decides, from a Deployment's replicas and annotations,
//! what restoring a session does to it.
//!
//! A session of `kdev run deploy/NAME` ([`Mode::Run`]) changes nothing of
//! the Deployment: it has a Lease of its own per session
//! ([`run_lease_name`], labelled [`ROLE_LABEL`]`=`[`ROLE_RUN_SESSION`]) and an
//! agent Pod owned by it ([`run_pod_name`], [`ROLE_LABEL`]`=`[`ROLE_RUN_AGENT`])
//! that carries none of the workload's labels, so no Service routes to it.
//! Ending it, by anyone, is deleting the Lease.

use std::collections::BTreeMap;
use std::fmt;

/// Annotation: the session id (on the Deployment, the Lease and the proxy Pod).
pub const SESSION_ANNOTATION: &str = "kdev.dev/session";
/// Annotation: the Deployment's replicas before the swap (Deployment, proxy Pod).
pub const ORIGINAL_REPLICAS_ANNOTATION: &str = "kdev.dev/original-replicas";
/// Annotation: the swapped container's name (Lease, proxy Pod).
pub const CONTAINER_ANNOTATION: &str = "kdev.dev/container";
/// Annotation: what is swapped, as `deployment/NAME` (Lease, proxy Pod).
pub const TARGET_ANNOTATION: &str = "kdev.dev/target";
/// Label on a swapped Deployment, valued with the session id, so watchers can
/// select swapped Deployments on the server.
pub const SWAPPED_LABEL: &str = "kdev.dev/swapped";
/// Label: the session id (Lease, proxy Pod).
pub const SESSION_LABEL: &str = "kdev.dev/session";
/// Label: what a kdev object is for.
pub const ROLE_LABEL: &str = "kdev.dev/role";
/// [`ROLE_LABEL`] value of a session's Lease.
pub const ROLE_SESSION: &str = "swap-session";
/// [`ROLE_LABEL`] value of a session's proxy Pod.
pub const ROLE_PROXY: &str = "swap-proxy";
/// [`ROLE_LABEL`] value of a `kdev run` session's Lease.
pub const ROLE_RUN_SESSION: &str = "run-session";
/// [`ROLE_LABEL`] value of a `kdev run` session's agent Pod.
pub const ROLE_RUN_AGENT: &str = "run-agent";
/// A label selector for the Leases of both kinds of session.
pub const SESSION_LEASES: &str = "kdev.dev/role in (swap-session,run-session)";

/// The kinds of workload a session takes. Each has `spec.replicas` (behind
/// the scale subresource), `spec.selector` and `spec.template`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    ReplicaSet,
    /// Argo Rollouts' `Rollout` (`argoproj.io/v1alpha1`), when its CRD is installed.
    Rollout,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::Rollout,
    ];

    /// The lower-case name kdev writes (`deployment/web` in
    /// [`TARGET_ANNOTATION`]) and prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::ReplicaSet => "replicaset",
            Self::Rollout => "rollout",
        }
    }

    /// The API group, version, kind and plural.
    pub fn api(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::Deployment => ("apps", "v1", "Deployment", "deployments"),
            Self::StatefulSet => ("apps", "v1", "StatefulSet", "statefulsets"),
            Self::ReplicaSet => ("apps", "v1", "ReplicaSet", "replicasets"),
            Self::Rollout => ("argoproj.io", "v1alpha1", "Rollout", "rollouts"),
        }
    }

    /// kubectl's spellings: `deploy`, `sts`, `rs`, `ro`, the singular, the
    /// plural, and both with the group.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.to_ascii_lowercase();
        Self::ALL.into_iter().find(|kind| {
            let (group, _, _, plural) = kind.api();
            let short = match kind {
                Self::Deployment => "deploy",
                Self::StatefulSet => "sts",
                Self::ReplicaSet => "rs",
                Self::Rollout => "ro",
            };
            [
                short.to_owned(),
                kind.name().to_owned(),
                plural.to_owned(),
                format!("{}.{group}", kind.name()),
                format!("{plural}.{group}"),
            ]
            .contains(&text)
        })
    }
}

/// A workload a session takes: its kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub name: String,
}

impl WorkloadRef {
    pub fn deployment(name: &str) -> Self {
        Self {
            kind: WorkloadKind::Deployment,
            name: name.to_owned(),
        }
    }

    /// Reads [`TARGET_ANNOTATION`]'s `kind/name`; `None` when it is not one.
    pub fn from_annotation(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once('/')?;
        let kind = WorkloadKind::ALL.into_iter().find(|k| k.name() == kind)?;
        (!name.is_empty()).then(|| Self {
            kind,
            name: name.to_owned(),
        })
    }
}

impl WorkloadRef {
    /// How a webhook record names the workload after its namespace: a
    /// Deployment by its name (as records did before other kinds), another
    /// kind as `kind/name` ([`crate::webhook::Record::deployment`]).
    pub fn record_key(&self) -> String {
        match self.kind {
            WorkloadKind::Deployment => self.name.clone(),
            _ => self.to_string(),
        }
    }

    /// Reads [`WorkloadRef::record_key`] back.
    pub fn from_record_key(key: &str) -> Self {
        Self::from_annotation(key).unwrap_or_else(|| Self::deployment(key))
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.name(), self.name)
    }
}

/// What a session does to its workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// `kdev swap`: the workload's pods are replaced by a proxy Pod; one
    /// session per workload.
    Swap,
    /// `kdev run`: the workload is left as it is; an egress-only agent Pod;
    /// any number of sessions per workload.
    Run,
}

impl Mode {
    /// The mode of a session Lease, from its [`ROLE_LABEL`].
    pub fn of_lease_role(role: &str) -> Option<Self> {
        match role {
            ROLE_SESSION => Some(Self::Swap),
            ROLE_RUN_SESSION => Some(Self::Run),
            _ => None,
        }
    }

    /// [`ROLE_LABEL`] of the session's Lease.
    pub fn lease_role(self) -> &'static str {
        match self {
            Self::Swap => ROLE_SESSION,
            Self::Run => ROLE_RUN_SESSION,
        }
    }

    /// [`ROLE_LABEL`] of the session's Pod.
    pub fn pod_role(self) -> &'static str {
        match self {
            Self::Swap => ROLE_PROXY,
            Self::Run => ROLE_RUN_AGENT,
        }
    }

    /// The name of the session's Lease.
    pub fn lease_name(self, workload: &WorkloadRef, session: &str) -> String {
        match self {
            Self::Swap => lease_name(workload),
            Self::Run => run_lease_name(&workload.name, session),
        }
    }

    /// The name of the session's Pod (and its token Secret).
    pub fn pod_name(self, deployment: &str, session: &str) -> String {
        match self {
            Self::Swap => proxy_pod_name(deployment, session),
            Self::Run => run_pod_name(deployment, session),
        }
    }

    /// The command, as people type it.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Swap => "swap",
            Self::Run => "run",
        }
    }
}
/// The port the agent in the proxy Pod takes tunnel connections on.
pub const AGENT_PORT: u16 = 7355;
/// The name of the agent's container in the proxy Pod.
pub const AGENT_CONTAINER: &str = "kdev-agent";

/// The Lease that holds the swap session of `workload`. One name per
/// workload is what makes two swaps of one workload impossible: the second
/// create is refused by the API server. A Deployment's is
/// `kdev-swap-<name>`; another kind's `kdev-swap-<kind>.<name>`.
pub fn lease_name(workload: &WorkloadRef) -> String {
    let name = match workload.kind {
        WorkloadKind::Deployment => format!("kdev-swap-{}", workload.name),
        kind => format!("kdev-swap-{}.{}", kind.name(), workload.name),
    };
    truncate_with_hash(&name, 253)
}

/// The proxy Pod's name: readable, unique per session, at most 63 characters
/// so it is also a valid hostname.
pub fn proxy_pod_name(deployment: &str, session: &str) -> String {
    let short: String = session.chars().take(8).collect();
    let head = truncate_with_hash(deployment, 63 - "-kdev-".len() - short.len());
    format!("{head}-kdev-{short}")
}

/// The Lease of one `kdev run` session of Deployment `deployment`: one per
/// session, so any number of them coexist.
pub fn run_lease_name(deployment: &str, session: &str) -> String {
    let short: String = session.chars().take(8).collect();
    truncate_with_hash(&format!("kdev-run-{deployment}-{short}"), 253)
}

/// The agent Pod of one `kdev run` session: readable, unique per session, at
/// most 63 characters.
pub fn run_pod_name(deployment: &str, session: &str) -> String {
    let short: String = session.chars().take(8).collect();
    let head = truncate_with_hash(deployment, 63 - "-kdev-run-".len() - short.len());
    format!("{head}-kdev-run-{short}")
}

fn truncate_with_hash(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let suffix = format!("-{:08x}", crate::hash::fnv1a(name.as_bytes()) as u32);
    // Cut on a character boundary: a name read from an annotation may hold
    // any text, and slicing inside a character panics.
    let mut cut = max.saturating_sub(suffix.len()).min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = name[..cut].trim_end_matches(['-', '.']);
    format!("{head}{suffix}")
}

/// The marks a swap leaves on a Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentMarks {
    pub session: String,
    pub original_replicas: i32,
}

/// A kdev annotation that cannot be read. Nothing is restored from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAnnotation {
    pub key: &'static str,
    pub value: String,
}

impl fmt::Display for BadAnnotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}={:?} is not a replica count (a whole number ≥ 0)",
            self.key, self.value
        )
    }
}

impl std::error::Error for BadAnnotation {}

impl DeploymentMarks {
    /// The annotations to write with the PATCH that scales to 0.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        [
            (SESSION_ANNOTATION.to_owned(), self.session.clone()),
            (
                ORIGINAL_REPLICAS_ANNOTATION.to_owned(),
                self.original_replicas.to_string(),
            ),
        ]
        .into()
    }

    /// Reads the marks back; `None` when the Deployment carries no session.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, BadAnnotation> {
        let Some(session) = annotations.get(SESSION_ANNOTATION) else {
            return Ok(None);
        };
        let raw = annotations
            .get(ORIGINAL_REPLICAS_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let original_replicas =
            raw.trim()
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or(BadAnnotation {
                    key: ORIGINAL_REPLICAS_ANNOTATION,
                    value: raw,
                })?;
        Ok(Some(Self {
            session: session.clone(),
            original_replicas,
        }))
    }
}

/// What restoring a session does to its Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restore {
    /// Still at 0 as the swap left it: scale back and remove kdev's marks.
    ScaleBack { to: i32 },
    /// Someone set replicas during the session: keep their value, remove the marks.
    KeepChanged { current: i32, original: i32 },
    /// The Deployment carries no marks of this session: leave it alone.
    Nothing,
}

/// Decides how to restore session `session` on a Deployment with `replicas`
/// (`None` when unset, which Kubernetes reads as 1) and `annotations`.
/// Marks of another session are not this session's to remove.
pub fn restore_plan(
    session: &str,
    replicas: Option<i32>,
    annotations: &BTreeMap<String, String>,
) -> Result<Restore, BadAnnotation> {
    let Some(marks) = DeploymentMarks::read(annotations)? else {
        return Ok(Restore::Nothing);
    };
    if marks.session != session {
        return Ok(Restore::Nothing);
    }
    let current = replicas.unwrap_or(1);
    if current == 0 {
        Ok(Restore::ScaleBack {
            to: marks.original_replicas,
        })
    } else {
        Ok(Restore::KeepChanged {
            current,
            original: marks.original_replicas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(session: &str, replicas: &str) -> BTreeMap<String, String> {
        [
            (SESSION_ANNOTATION.to_owned(), session.to_owned()),
            (ORIGINAL_REPLICAS_ANNOTATION.to_owned(), replicas.to_owned()),
        ]
        .into()
    }

    #[test]
    fn a_deployment_still_at_zero_is_scaled_back() {
        assert_eq!(
            restore_plan("s1", Some(0), &marks("s1", "3")),
            Ok(Restore::ScaleBack { to: 3 })
        );
    }

    #[test]
    fn a_manual_scale_during_the_session_is_kept() {
        assert_eq!(
            restore_plan("s1", Some(5), &marks("s1", "3")),
            Ok(Restore::KeepChanged {
                current: 5,
                original: 3
            })
        );
        // Unset replicas means 1 to Kubernetes: someone changed it.
        assert_eq!(
            restore_plan("s1", None, &marks("s1", "3")),
            Ok(Restore::KeepChanged {
                current: 1,
                original: 3
            })
        );
    }

    #[test]
    fn another_sessions_marks_or_none_are_left_alone() {
        assert_eq!(
            restore_plan("s1", Some(0), &marks("s2", "3")),
            Ok(Restore::Nothing)
        );
        assert_eq!(
            restore_plan("s1", Some(0), &BTreeMap::new()),
            Ok(Restore::Nothing)
        );
    }

    #[test]
    fn an_unreadable_replica_count_is_an_error_not_a_guess() {
        for bad in ["", "three", "-1", "1.5"] {
            let err = restore_plan("s1", Some(0), &marks("s1", bad)).unwrap_err();
            assert_eq!(err.key, ORIGINAL_REPLICAS_ANNOTATION);
            assert!(err.to_string().contains("not a replica count"));
        }
    }

    #[test]
    fn marks_round_trip() {
        let m = DeploymentMarks {
            session: "abc".into(),
            original_replicas: 4,
        };
        assert_eq!(DeploymentMarks::read(&m.annotations()), Ok(Some(m)));
    }

    /// Regression: a long non-ASCII name (from an annotation) was sliced
    /// inside a character and panicked.
    #[test]
    fn a_long_non_ascii_name_is_cut_on_a_character_boundary() {
        let name = "é".repeat(200);
        let lease = lease_name(&WorkloadRef::deployment(&name));
        assert!(lease.len() <= 253, "{lease}");
        let pod = proxy_pod_name(&name, "0123456789abcdef");
        assert!(pod.len() <= 63, "{pod}");
    }

    proptest::proptest! {
        #[test]
        fn annotations_and_names_never_panic(
            session in proptest::prelude::any::<String>(),
            replicas in proptest::prelude::any::<String>(),
            current in proptest::option::of(proptest::prelude::any::<i32>()),
            name in proptest::prelude::any::<String>(),
        ) {
            let _ = restore_plan(&session, current, &marks(&session, &replicas));
            let _ = DeploymentMarks::read(&marks(&session, &replicas));
            proptest::prop_assert!(lease_name(&WorkloadRef::deployment(&name)).len() <= 253);
            let _ = WorkloadRef::from_annotation(&name);
            let _ = WorkloadRef::from_record_key(&name);
            let _ = WorkloadKind::parse(&name);
            proptest::prop_assert!(proxy_pod_name(&name, &session).len() <= 63);
            proptest::prop_assert!(run_lease_name(&name, &session).len() <= 253);
            proptest::prop_assert!(run_pod_name(&name, &session).len() <= 63);
        }
    }

    #[test]
    fn names_stay_within_kubernetes_limits() {
        assert_eq!(lease_name(&WorkloadRef::deployment("web")), "kdev-swap-web");
        assert_eq!(
            proxy_pod_name("web", "0123456789abcdef"),
            "web-kdev-01234567"
        );
        let long = "a".repeat(250);
        assert!(lease_name(&WorkloadRef::deployment(&long)).len() <= 253);
        let pod = proxy_pod_name(&long, "0123456789abcdef");
        assert!(pod.len() <= 63, "{pod}");
        assert!(pod.ends_with("-kdev-01234567"));
        // Distinct long names stay distinct.
        assert_ne!(
            proxy_pod_name(&format!("{long}x"), "s"),
            proxy_pod_name(&format!("{long}y"), "s")
        );
    }

    #[test]
    fn each_run_session_has_its_own_names_and_a_role_of_its_own() {
        let a = "0123456789abcdef";
        let b = "fedcba9876543210";
        assert_eq!(run_lease_name("web", a), "kdev-run-web-01234567");
        assert_eq!(run_pod_name("web", a), "web-kdev-run-01234567");
        let web = WorkloadRef::deployment("web");
        assert_ne!(Mode::Run.lease_name(&web, a), Mode::Run.lease_name(&web, b));
        assert_eq!(
            Mode::Swap.lease_name(&web, a),
            Mode::Swap.lease_name(&web, b)
        );
        let long = "a".repeat(250);
        assert!(run_pod_name(&long, a).ends_with("-kdev-run-01234567"));
        for mode in [Mode::Swap, Mode::Run] {
            assert_eq!(Mode::of_lease_role(mode.lease_role()), Some(mode));
            assert!(SESSION_LEASES.contains(mode.lease_role()));
        }
        assert_eq!(Mode::of_lease_role(ROLE_PROXY), None);
    }

    #[test]
    fn workload_kinds_read_as_kubectl_writes_them_and_each_has_its_own_swap_lease() {
        for (text, kind) in [
            ("deploy", WorkloadKind::Deployment),
            ("deployments.apps", WorkloadKind::Deployment),
            ("sts", WorkloadKind::StatefulSet),
            ("StatefulSet", WorkloadKind::StatefulSet),
            ("rs", WorkloadKind::ReplicaSet),
            ("replicaset.apps", WorkloadKind::ReplicaSet),
            ("ro", WorkloadKind::Rollout),
            ("rollouts.argoproj.io", WorkloadKind::Rollout),
        ] {
            assert_eq!(WorkloadKind::parse(text), Some(kind), "{text}");
        }
        assert_eq!(WorkloadKind::parse("cronjob"), None);
        let sts = WorkloadRef {
            kind: WorkloadKind::StatefulSet,
            name: "kafka".into(),
        };
        assert_eq!(sts.to_string(), "statefulset/kafka");
        assert_eq!(
            WorkloadRef::from_annotation("statefulset/kafka"),
            Some(sts.clone())
        );
        assert_eq!(WorkloadRef::from_annotation("job/x"), None);
        assert_eq!(WorkloadRef::from_annotation("statefulset/"), None);
        assert_eq!(lease_name(&sts), "kdev-swap-statefulset.kafka");
        let web = WorkloadRef::deployment("web");
        assert_eq!(web.record_key(), "web");
        assert_eq!(sts.record_key(), "statefulset/kafka");
        for workload in [web, sts.clone()] {
            assert_eq!(
                WorkloadRef::from_record_key(&workload.record_key()),
                workload
            );
        }
        assert_ne!(
            lease_name(&sts),
            lease_name(&WorkloadRef::deployment("kafka"))
        );
    }
}
