//! Webhooks during a swap: which webhook configurations (and CRD
//! conversion webhooks) call the swapped Deployment, how a session points
//! them at its own certificate authority, and how any restorer puts them
//! back. Pure: objects come in and patches go out as JSON.
//!
//! # Expected flow
//! 1. [`redirect`]: for a `ValidatingWebhookConfiguration`,
//!    `MutatingWebhookConfiguration` or `CustomResourceDefinition` with a
//!    webhook whose `clientConfig.service` is one of the Deployment's
//!    Services, one merge patch sets those webhooks' `caBundle` to the
//!    session's CA, removes cert-manager's CA-injection annotations (else its
//!    cainjector would put its CA back within seconds), and writes a
//!    [`Record`] of everything it replaced, in [`RECORD_ANNOTATION`]. The
//!    caller sends it guarded by the `resourceVersion` it decided on.
//! 2. [`restore`]: the record's `caBundle`s and annotations put back and
//!    the record removed, in one patch, by whoever restores the session.
//!
//! # Guarantees
//! - There is no moment where a `caBundle` is the session's and the
//!   original is not in the cluster: both are in the same write.
//! - A restore touches only what the record names, and only for its own
//!   session; a record of another session is never overwritten (a second
//!   session is refused).
//!
//! # Assumptions
//! - Webhooks are told apart by `name`, as the API requires them to be.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// On a webhook configuration or CRD while a swap session redirects it.
pub const RECORD_ANNOTATION: &str = "kdev.dev/swap-webhooks";

/// cert-manager's cainjector annotations: while one is present, it writes
/// its own CA into the `caBundle`.
pub const INJECTION_ANNOTATIONS: [&str; 3] = [
    "cert-manager.io/inject-ca-from",
    "cert-manager.io/inject-ca-from-secret",
    "cert-manager.io/inject-apiserver-ca",
];

/// The kinds that call webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Validating,
    Mutating,
    Conversion,
}

/// What a session replaced on one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub session: String,
    /// The swapped workload: `namespace/name` for a Deployment,
    /// `namespace/kind/name` for another kind (`team/statefulset/kafka`).
    /// The field keeps its first name so records written before other
    /// kinds read the same.
    pub deployment: String,
    /// Webhook name (the CRD's: `conversion`) → its original `caBundle`
    /// (base64, as the API holds it; empty when it had none).
    pub ca_bundles: BTreeMap<String, String>,
    /// cert-manager annotations removed for the session, with their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Record {
    /// Reads the annotation; an error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Record, String> {
        serde_json::from_str(text).map_err(|e| {
            format!("the {RECORD_ANNOTATION} annotation is not a kdev webhook record: {e}")
        })
    }

    pub fn to_annotation(&self) -> String {
        // A map of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The record on `object`, if any.
pub fn record_of(object: &Value) -> Result<Option<Record>, String> {
    match object["metadata"]["annotations"][RECORD_ANNOTATION].as_str() {
        None => Ok(None),
        Some(text) => Record::parse(text).map(Some),
    }
}

/// The `clientConfig`s of `object`'s webhooks, as (name, clientConfig).
fn client_configs(kind: Kind, object: &Value) -> Vec<(String, &Value)> {
    match kind {
        Kind::Validating | Kind::Mutating => object["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| Some((w["name"].as_str()?.to_owned(), &w["clientConfig"])))
            .collect(),
        Kind::Conversion => {
            let config = &object["spec"]["conversion"]["webhook"]["clientConfig"];
            if config.is_object() {
                vec![("conversion".to_owned(), config)]
            } else {
                Vec::new()
            }
        }
    }
}

/// Whether a clientConfig calls one of `services` in `namespace`.
fn calls(config: &Value, namespace: &str, services: &[String]) -> bool {
    let service = &config["service"];
    service["namespace"].as_str() == Some(namespace)
        && service["name"]
            .as_str()
            .is_some_and(|n| services.iter().any(|s| s == n))
}

/// The webhooks of `object` that call one of `services` in `namespace`.
pub fn calling(kind: Kind, object: &Value, namespace: &str, services: &[String]) -> Vec<String> {
    client_configs(kind, object)
        .into_iter()
        .filter(|(_, config)| calls(config, namespace, services))
        .map(|(name, _)| name)
        .collect()
}

/// The patch that points `object`'s webhooks calling `services` at
/// `ca_bundle` (base64 PEM) for `session`, with the record of what it
/// replaced; `None` when no webhook calls them. An error when another
/// session's record is on it.
pub fn redirect(
    kind: Kind,
    object: &Value,
    namespace: &str,
    deployment: &str,
    services: &[String],
    session: &str,
    ca_bundle: &str,
) -> Result<Option<Value>, String> {
    let names = calling(kind, object, namespace, services);
    if names.is_empty() {
        return Ok(None);
    }
    let existing = record_of(object)?;
    if let Some(record) = &existing
        && record.session != session
    {
        return Err(format!(
            "its webhooks are redirected by another kdev swap session ({}, of deployment {})",
            record.session, record.deployment
        ));
    }
    // Originals come from an earlier record of this session (a repeated
    // redirect must not record its own CA as the original).
    let mut record = existing.unwrap_or_else(|| Record {
        session: session.to_owned(),
        deployment: format!("{namespace}/{deployment}"),
        ca_bundles: BTreeMap::new(),
        annotations: BTreeMap::new(),
    });
    for (name, config) in client_configs(kind, object) {
        if names.contains(&name) {
            record
                .ca_bundles
                .entry(name)
                .or_insert_with(|| config["caBundle"].as_str().unwrap_or_default().to_owned());
        }
    }
    let mut annotations = Map::new();
    for key in INJECTION_ANNOTATIONS {
        if let Some(value) = object["metadata"]["annotations"][key].as_str() {
            record.annotations.insert(key.to_owned(), value.to_owned());
            annotations.insert(key.to_owned(), Value::Null);
        }
    }
    annotations.insert(RECORD_ANNOTATION.to_owned(), record.to_annotation().into());
    let mut patch = json!({ "metadata": { "annotations": annotations } });
    set_bundles(kind, object, &mut patch, |name| {
        names
            .contains(&name.to_owned())
            .then(|| ca_bundle.to_owned())
    });
    Ok(Some(patch))
}

/// The patch that restores what `session`'s record on `object` replaced;
/// `None` when there is no record of that session.
pub fn restore(kind: Kind, object: &Value, session: &str) -> Result<Option<Value>, String> {
    let Some(record) = record_of(object)? else {
        return Ok(None);
    };
    if record.session != session {
        return Ok(None);
    }
    Ok(Some(restore_patch(kind, object, &record)))
}

/// The patch that puts back what `record` names, whichever session wrote it
/// (for a record whose session is gone).
pub fn restore_patch(kind: Kind, object: &Value, record: &Record) -> Value {
    let mut annotations = Map::new();
    for (key, value) in &record.annotations {
        annotations.insert(key.clone(), value.clone().into());
    }
    annotations.insert(RECORD_ANNOTATION.to_owned(), Value::Null);
    let mut patch = json!({ "metadata": { "annotations": annotations } });
    set_bundles(kind, object, &mut patch, |name| {
        record.ca_bundles.get(name).cloned()
    });
    patch
}

/// Writes into `patch` the `caBundle` `bundle(name)` gives each webhook
/// (none: left as it is; empty: removed). A webhook list is replaced whole
/// by a merge patch, so it is written whole.
fn set_bundles(
    kind: Kind,
    object: &Value,
    patch: &mut Value,
    bundle: impl Fn(&str) -> Option<String>,
) {
    let value = |b: String| if b.is_empty() { Value::Null } else { b.into() };
    match kind {
        Kind::Validating | Kind::Mutating => {
            let webhooks: Vec<Value> = object["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    let mut w = w.clone();
                    if let Some(b) = w["name"].as_str().and_then(&bundle) {
                        match value(b) {
                            Value::Null => {
                                if let Some(c) = w["clientConfig"].as_object_mut() {
                                    c.remove("caBundle");
                                }
                            }
                            v => w["clientConfig"]["caBundle"] = v,
                        }
                    }
                    w
                })
                .collect();
            patch["webhooks"] = Value::Array(webhooks);
        }
        Kind::Conversion => {
            if let Some(b) = bundle("conversion") {
                patch["spec"] = json!({ "conversion": { "webhook": { "clientConfig": {
                    "caBundle": value(b)
                } } } });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> Value {
        json!({
            "metadata": { "name": "guard", "annotations": {
                "cert-manager.io/inject-ca-from": "team/guard-cert", "other": "x"
            } },
            "webhooks": [
                { "name": "deny.guard.dev", "clientConfig": {
                    "service": { "namespace": "team", "name": "guard" }, "caBundle": "T1JJRw==" } },
                { "name": "elsewhere.dev", "clientConfig": {
                    "service": { "namespace": "team", "name": "other" }, "caBundle": "S0VFUA==" } },
                { "name": "url.dev", "clientConfig": { "url": "https://x" } }
            ]
        })
    }

    /// The object after a merge patch (the API server's rules).
    fn merge(target: &mut Value, patch: &Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(t), Some(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            _ => *target = patch.clone(),
        }
    }

    #[test]
    fn a_redirect_is_undone_exactly_by_its_restore() {
        let before = config();
        let services = ["guard".to_owned()];
        let patch = redirect(
            Kind::Validating,
            &before,
            "team",
            "guard",
            &services,
            "s1",
            "TkVX",
        )
        .unwrap()
        .expect("a webhook calls guard");
        let mut during = before.clone();
        merge(&mut during, &patch);
        assert_eq!(during["webhooks"][0]["clientConfig"]["caBundle"], "TkVX");
        assert_eq!(
            during["webhooks"][1]["clientConfig"]["caBundle"],
            "S0VFUA=="
        );
        assert!(during["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_null());
        assert_eq!(during["metadata"]["annotations"]["other"], "x");
        let record = record_of(&during).unwrap().unwrap();
        assert_eq!(record.ca_bundles["deny.guard.dev"], "T1JJRw==");
        // Redirecting again in the same session keeps the true original.
        let again = redirect(
            Kind::Validating,
            &during,
            "team",
            "guard",
            &services,
            "s1",
            "TkVX",
        )
        .unwrap()
        .unwrap();
        let mut twice = during.clone();
        merge(&mut twice, &again);
        assert_eq!(
            record_of(&twice).unwrap().unwrap().ca_bundles["deny.guard.dev"],
            "T1JJRw=="
        );
        // Another session's restore does nothing; its own puts all back.
        assert_eq!(restore(Kind::Validating, &twice, "s2").unwrap(), None);
        let undo = restore(Kind::Validating, &twice, "s1").unwrap().unwrap();
        let mut after = twice.clone();
        merge(&mut after, &undo);
        assert_eq!(after, before);
    }

    #[test]
    fn another_sessions_record_refuses_and_unrelated_objects_are_left() {
        let mut taken = config();
        taken["metadata"]["annotations"][RECORD_ANNOTATION] =
            json!(r#"{"session":"s9","deployment":"team/x","caBundles":{}}"#);
        let err = redirect(
            Kind::Validating,
            &taken,
            "team",
            "guard",
            &["guard".into()],
            "s1",
            "A",
        )
        .unwrap_err();
        assert!(err.contains("s9"), "{err}");
        assert_eq!(
            redirect(
                Kind::Validating,
                &config(),
                "team",
                "x",
                &["nope".into()],
                "s1",
                "A"
            )
            .unwrap(),
            None
        );
        assert_eq!(
            redirect(
                Kind::Validating,
                &config(),
                "elsewhere",
                "guard",
                &["guard".into()],
                "s1",
                "A"
            )
            .unwrap(),
            None,
            "the same Service name in another namespace"
        );
    }

    #[test]
    fn a_crd_conversion_webhook_without_a_bundle_gets_none_back() {
        let crd = json!({
            "metadata": { "name": "widgets.example.com" },
            "spec": { "conversion": { "strategy": "Webhook", "webhook": { "clientConfig": {
                "service": { "namespace": "team", "name": "guard", "path": "/convert" }
            } } } }
        });
        let patch = redirect(
            Kind::Conversion,
            &crd,
            "team",
            "guard",
            &["guard".into()],
            "s1",
            "TkVX",
        )
        .unwrap()
        .unwrap();
        let mut during = crd.clone();
        merge(&mut during, &patch);
        assert_eq!(
            during["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"],
            "TkVX"
        );
        let mut after = during.clone();
        merge(
            &mut after,
            &restore(Kind::Conversion, &during, "s1").unwrap().unwrap(),
        );
        // The record was its only annotation: an empty map is what is left.
        assert_eq!(after["metadata"]["annotations"], json!({}));
        after["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        assert_eq!(after, crd);
    }

    proptest! {
        #[test]
        fn any_record_text_is_an_error_or_a_record_never_a_panic(text in "\\PC{0,200}") {
            let _ = Record::parse(&text);
        }

        #[test]
        fn any_object_shape_never_panics(
            names in proptest::collection::vec("[a-z.]{0,8}", 0..4),
            bundle in "[A-Za-z0-9=]{0,8}",
            record in "\\PC{0,40}",
        ) {
            let webhooks: Vec<Value> = names.iter().map(|n| json!({
                "name": n, "clientConfig": { "service": { "namespace": "team", "name": n }, "caBundle": bundle }
            })).collect();
            let object = json!({ "metadata": { "annotations": { RECORD_ANNOTATION: record } }, "webhooks": webhooks });
            let _ = redirect(Kind::Mutating, &object, "team", "d", &names, "s", "X");
            let _ = restore(Kind::Mutating, &object, "s");
        }
    }
}
