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
    One(String),
    None,
    Ambiguous(Vec<String>),
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
    let found: Vec<String> = candidates
        .iter()
        .filter(|c| c.replicas == Some(0))
        .filter(|c| c.template_labels == wanted)
        .filter(|c| name_prefix(&c.name) == head)
        .map(|c| c.name.clone())
        .collect();
    one_of(found)
}

/// ≤ 0.105 (a proxy Deployment): its `last-applied-configuration` is the
/// original's copy; its `metadata.selfLink` (clusters before 1.20) names the
/// original. Without one, the bare-pod rule on the proxy Deployment's own
/// name and template labels.
pub fn match_proxy_deployment(proxy: &Candidate, candidates: &[Candidate]) -> Match {
    if let Some(name) = proxy
        .last_applied
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|v| v["metadata"]["selfLink"].as_str().map(str::to_owned))
        .and_then(|link| link.rsplit('/').next().map(str::to_owned))
    {
        return if candidates
            .iter()
            .any(|c| c.name == name && c.replicas == Some(0))
        {
            Match::One(name)
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

fn one_of(mut found: Vec<String>) -> Match {
    match found.len() {
        0 => Match::None,
        1 => Match::One(found.remove(0)),
        _ => Match::Ambiguous(found),
    }
}

/// Where the replica count to restore comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// `spec.replicas` of the original's own last-applied-configuration.
    LastApplied(i32),
    /// Nothing recorded it: 1, as telepolice did.
    Default,
}

impl Evidence {
    pub fn replicas(&self) -> i32 {
        match self {
            Evidence::LastApplied(n) => *n,
            Evidence::Default => 1,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Evidence::LastApplied(n) => format!("{n}, from its last-applied-configuration"),
            Evidence::Default => {
                "1, the default: nothing in the cluster recorded the original count".into()
            }
        }
    }
}

pub fn evidence(original: &Candidate) -> Evidence {
    original
        .last_applied
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|v| v["spec"]["replicas"].as_i64())
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n > 0)
        .map(Evidence::LastApplied)
        .unwrap_or(Evidence::Default)
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
            Match::One("payments-service-api".into())
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
            Match::One("billing".into())
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
            Match::One("billing".into())
        );
    }

    #[test]
    fn evidence_prefers_the_originals_last_applied_replicas() {
        let mut original = candidate("web", 0, "web");
        assert_eq!(evidence(&original), Evidence::Default);
        original.last_applied = Some(r#"{"spec":{"replicas":4}}"#.into());
        assert_eq!(evidence(&original), Evidence::LastApplied(4));
        assert_eq!(evidence(&original).replicas(), 4);
        original.last_applied = Some(r#"{"spec":{"replicas":0}}"#.into());
        assert_eq!(evidence(&original), Evidence::Default);
        original.last_applied = Some("not json".into());
        assert_eq!(evidence(&original), Evidence::Default);
    }
}
