//! Which Deployment a dead telepresence 1 proxy replaced, and how many
//! replicas to give it back. Pure functions; the rules come from what
//! telepresence 0.105–0.109 write (see `shared/notes/telepresence1.md`).

use std::collections::BTreeMap;

/// The label telepresence puts on everything it creates, valued with its
/// session id (32 hex characters).
pub const LABEL: &str = "telepresence";

/// Telepresence names a proxy `{original:.17}-{id}`: the original's name cut
/// to 17 characters.
pub const NAME_PREFIX_LEN: usize = 17;

/// A Deployment as the matcher needs it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub replicas: Option<i32>,
    pub template_labels: BTreeMap<String, String>,
    /// The `kubectl.kubernetes.io/last-applied-configuration` annotation.
    pub last_applied: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Exactly one original, and what tied the proxy to it.
    One(String, Link),
    None,
    Ambiguous(Vec<String>),
}

/// What tied a proxy to its original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// The proxy Deployment's last-applied `metadata.selfLink` (≤ 0.105).
    SelfLink(String),
    /// The original's name cut to 17 characters starts the proxy's name, and
    /// the template labels are equal.
    PrefixAndLabels { prefix: String },
}

impl Link {
    pub fn describe(&self) -> String {
        match self {
            Link::SelfLink(link) => {
                format!("selfLink {link} in the proxy Deployment's last-applied-configuration")
            }
            Link::PrefixAndLabels { prefix } => format!(
                "name prefix {prefix:?} ({NAME_PREFIX_LEN}-character rule) and equal pod-template labels"
            ),
        }
    }
}

/// The name prefix telepresence derives from an original's name.
pub fn name_prefix(original: &str) -> &str {
    match original.char_indices().nth(NAME_PREFIX_LEN) {
        Some((i, _)) => &original[..i],
        None => original,
    }
}

/// 0.106+ (a bare proxy Pod): the Deployment at 0 replicas whose pod-template
/// labels equal the proxy's labels minus `telepresence`, and whose name, cut
/// to 17 characters, is what the proxy's name starts with (before `-<id>`).
pub fn match_bare_pod(
    pod_name: &str,
    pod_labels: &BTreeMap<String, String>,
    candidates: &[Candidate],
) -> Match {
    let Some(session) = pod_labels.get(LABEL) else {
        return Match::None;
    };
    let Some(head) = pod_name.strip_suffix(&format!("-{session}")) else {
        return Match::None;
    };
    let mut wanted = pod_labels.clone();
    wanted.remove(LABEL);
    let mut found: Vec<String> = candidates
        .iter()
        .filter(|c| c.replicas == Some(0))
        .filter(|c| c.template_labels == wanted)
        .filter(|c| name_prefix(&c.name) == head)
        .map(|c| c.name.clone())
        .collect();
    match found.len() {
        0 => Match::None,
        1 => Match::One(
            found.remove(0),
            Link::PrefixAndLabels {
                prefix: head.to_owned(),
            },
        ),
        _ => Match::Ambiguous(found),
    }
}

/// ≤ 0.105 (a proxy Deployment): its `last-applied-configuration` is the
/// original's copy; its `metadata.selfLink` (clusters before 1.20) names the
/// original. Without one, the bare-pod rule on the proxy Deployment's own
/// name and template labels.
pub fn match_proxy_deployment(proxy: &Candidate, candidates: &[Candidate]) -> Match {
    if let Some(link) = proxy
        .last_applied
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|v| v["metadata"]["selfLink"].as_str().map(str::to_owned))
    {
        let name = link.rsplit('/').next().unwrap_or_default().to_owned();
        return if candidates
            .iter()
            .any(|c| c.name == name && c.replicas == Some(0))
        {
            Match::One(name, Link::SelfLink(link))
        } else {
            Match::None
        };
    }
    let others: Vec<Candidate> = candidates
        .iter()
        .filter(|c| c.name != proxy.name)
        .cloned()
        .collect();
    match_bare_pod(&proxy.name, &proxy.template_labels, &others)
}

/// Where the replica count to restore comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// `spec.replicas` of the original's own last-applied-configuration.
    LastApplied(i32),
    /// Nothing recorded it: 1, as telepolice did.
    Default,
    /// Something recorded it but cannot be read: kdev does not guess, and
    /// leaves the Deployment for a person (what was found is said).
    Unreadable(String),
}

impl Evidence {
    /// The count to restore; `None` when it cannot be known.
    pub fn replicas(&self) -> Option<i32> {
        match self {
            Evidence::LastApplied(n) => Some(*n),
            Evidence::Default => Some(1),
            Evidence::Unreadable(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Evidence::LastApplied(n) => {
                format!("{n}, from spec.replicas in its last-applied-configuration")
            }
            Evidence::Default => {
                "1, the default: nothing in the cluster recorded the original count".into()
            }
            Evidence::Unreadable(why) => format!("unknown: {why}"),
        }
    }
}

pub fn evidence(original: &Candidate) -> Evidence {
    const KEY: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let Some(text) = original.last_applied.as_deref() else {
        return Evidence::Default;
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            return Evidence::Unreadable(format!(
                "its annotation {KEY} is there but is not valid JSON ({err})"
            ));
        }
    };
    match &value["spec"]["replicas"] {
        serde_json::Value::Null => Evidence::Default,
        replicas => match replicas.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) if n > 0 => Evidence::LastApplied(n),
            // Applied at 0 (or a proxy's own copy): nothing says what it ran with.
            Some(0) => Evidence::Default,
            _ => Evidence::Unreadable(format!(
                "spec.replicas in its annotation {KEY} is {replicas}, not a replica count"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn candidate(name: &str, replicas: i32, app: &str) -> Candidate {
        Candidate {
            name: name.into(),
            replicas: Some(replicas),
            template_labels: labels(&[("app", app)]),
            last_applied: None,
        }
    }

    #[test]
    fn the_prefix_is_cut_to_17_characters() {
        assert_eq!(name_prefix("web"), "web");
        assert_eq!(name_prefix("payments-service-api"), "payments-service-");
    }

    #[test]
    fn a_bare_pod_matches_by_labels_and_truncated_name() {
        let pod_labels = labels(&[("app", "payments"), (LABEL, ID)]);
        let pod = format!("payments-service-{}", ID);
        let pod = pod.replacen("payments-service-", "payments-service--", 1);
        let candidates = [
            candidate("payments-service-api", 0, "payments"),
            candidate("payments-service-api-v2", 2, "payments"), // not at 0
            candidate("orders", 0, "payments"),                  // wrong name
        ];
        assert_eq!(
            match_bare_pod(&pod, &pod_labels, &candidates),
            Match::One(
                "payments-service-api".into(),
                Link::PrefixAndLabels {
                    prefix: "payments-service-".into()
                }
            )
        );
    }

    #[test]
    fn labels_must_be_equal_not_a_subset() {
        let pod_labels = labels(&[("app", "web"), ("tier", "front"), (LABEL, ID)]);
        let pod = format!("web-{ID}");
        assert_eq!(
            match_bare_pod(&pod, &pod_labels, &[candidate("web", 0, "web")]),
            Match::None
        );
    }

    #[test]
    fn two_originals_with_one_prefix_are_ambiguous() {
        let pod_labels = labels(&[("app", "pay"), (LABEL, ID)]);
        let pod = format!("payments-service--{ID}");
        let candidates = [
            candidate("payments-service-a", 0, "pay"),
            candidate("payments-service-b", 0, "pay"),
        ];
        assert_eq!(
            match_bare_pod(&pod, &pod_labels, &candidates),
            Match::Ambiguous(vec![
                "payments-service-a".into(),
                "payments-service-b".into()
            ])
        );
    }

    #[test]
    fn a_proxy_deployment_points_back_through_self_link() {
        let proxy = Candidate {
            name: format!("billing-{ID}"),
            replicas: Some(1),
            template_labels: labels(&[("app", "billing"), (LABEL, ID)]),
            last_applied: Some(
                r#"{"metadata":{"name":"billing","selfLink":"/apis/apps/v1/namespaces/team/deployments/billing"}}"#.into(),
            ),
        };
        let candidates = [candidate("billing", 0, "other-labels"), proxy.clone()];
        assert_eq!(
            match_proxy_deployment(&proxy, &candidates),
            Match::One(
                "billing".into(),
                Link::SelfLink("/apis/apps/v1/namespaces/team/deployments/billing".into())
            )
        );
    }

    #[test]
    fn a_proxy_deployment_without_self_link_falls_back_to_labels_and_name() {
        let proxy = Candidate {
            name: format!("billing-{ID}"),
            replicas: Some(1),
            template_labels: labels(&[("app", "billing"), (LABEL, ID)]),
            last_applied: Some(r#"{"metadata":{"name":"billing"}}"#.into()),
        };
        let candidates = [candidate("billing", 0, "billing"), proxy.clone()];
        assert_eq!(
            match_proxy_deployment(&proxy, &candidates),
            Match::One(
                "billing".into(),
                Link::PrefixAndLabels {
                    prefix: "billing".into()
                }
            )
        );
    }

    #[test]
    fn evidence_prefers_the_originals_last_applied_replicas() {
        let mut original = candidate("web", 0, "web");
        assert_eq!(evidence(&original), Evidence::Default);
        original.last_applied = Some(r#"{"spec":{"replicas":4}}"#.into());
        assert_eq!(evidence(&original), Evidence::LastApplied(4));
        assert_eq!(evidence(&original).replicas(), Some(4));
        original.last_applied = Some(r#"{"spec":{"replicas":0}}"#.into());
        assert_eq!(evidence(&original), Evidence::Default);
    }

    /// Regression: an unreadable last-applied-configuration was reported as
    /// "nothing in the cluster recorded the original count" and restored to 1.
    #[test]
    fn unreadable_evidence_is_named_and_gives_no_count() {
        let mut original = candidate("web", 0, "web");
        original.last_applied = Some("not json".into());
        let found = evidence(&original);
        assert_eq!(found.replicas(), None);
        assert!(
            found.describe().contains("not valid JSON"),
            "{}",
            found.describe()
        );
        original.last_applied = Some(r#"{"spec":{"replicas":"three"}}"#.into());
        assert!(evidence(&original).describe().contains(r#""three""#));
        assert_eq!(evidence(&original).replicas(), None);
    }

    proptest::proptest! {
        #[test]
        fn matching_and_evidence_never_panic(
            name in proptest::prelude::any::<String>(),
            pod in proptest::prelude::any::<String>(),
            session in proptest::prelude::any::<String>(),
            applied in proptest::option::of(proptest::prelude::any::<String>()),
        ) {
            let _ = name_prefix(&name);
            let original = Candidate {
                name: name.clone(),
                replicas: Some(0),
                template_labels: BTreeMap::new(),
                last_applied: applied.clone(),
            };
            let _ = evidence(&original);
            let pod_labels = labels(&[(LABEL, session.as_str())]);
            let _ = match_bare_pod(&pod, &pod_labels, std::slice::from_ref(&original));
            let proxy = Candidate { name: pod.clone(), last_applied: applied, ..original.clone() };
            let _ = match_proxy_deployment(&proxy, &[original]);
        }
    }
}
