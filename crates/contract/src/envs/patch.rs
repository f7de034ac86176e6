//! Any resource an environment is made of, slept by a patch its namespace
//! declares: a database an operator runs (`postgresql.cnpg.io` `Cluster`,
//! `spec.instances` to 0), a broker, anything whose operator scales it
//! down when one of its fields says so.
//!
//! The namespace declares the rules in one annotation,
//! [`SLEEP_PATCHES_ANNOTATION`]: a JSON list of
//! `{"group":"postgresql.cnpg.io","kind":"Cluster","sleep":[{"op":"replace","path":"/spec/instances","value":0}]}`.
//! The operations are JSON Patch's (RFC 6902) `replace`, `add` and `remove`
//! on object fields. There is no wake patch: the sleep records, in the same
//! guarded write, the value each path had ([`PatchRecord`], annotation
//! [`PATCH_RECORD_ANNOTATION`]), and the wake puts those values back. A
//! field changed by someone while asleep (it no longer holds what the
//! sleep set) is kept as it is, as a workload's replicas are.
//!
//! An annotation rather than a CRD: an environment's team declares it with
//! the namespace it already owns (`kubectl annotate`), nothing cluster-wide
//! has to be installed before the first rule, and the rule travels with the
//! namespace's manifests. Paths through lists are refused: an index can
//! point at another element by the time of the wake.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The rules, on a namespace: a JSON list of [`Rule`].
pub const SLEEP_PATCHES_ANNOTATION: &str = "kdev.dev/sleep-patches";
/// What a sleep by patch replaced, on the patched object (JSON, see
/// [`PatchRecord`]).
pub const PATCH_RECORD_ANNOTATION: &str = "kdev.dev/sleep-patched";

/// How one kind of resource sleeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The API group (`""` for the core group).
    pub group: String,
    pub kind: String,
    /// Applied in order by the sleep.
    pub sleep: Vec<Op>,
}

/// One JSON Patch operation of a sleep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    pub op: OpKind,
    /// A JSON Pointer (RFC 6901) to an object field.
    pub path: String,
    /// What `replace` and `add` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Sets a field that must be there.
    Replace,
    /// Sets a field, there or not.
    Add,
    /// Removes a field (nothing to do where it is not there).
    Remove,
}

/// Rules that cannot be used, and why; nothing is patched because of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRules(pub String);

impl fmt::Display for BadRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "annotation {SLEEP_PATCHES_ANNOTATION}: {}", self.0)
    }
}

impl std::error::Error for BadRules {}

/// Kinds kdev sleeps by itself, which a rule may not patch as well.
const OWN_KINDS: [(&str, &str); 7] = [
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "CronJob"),
    ("batch", "Job"),
    ("argoproj.io", "Rollout"),
    ("keda.sh", "ScaledObject"),
];

/// Reads a namespace's rules.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, BadRules> {
    let rules: Vec<Rule> = serde_json::from_str(text).map_err(|err| {
        BadRules(format!(
            "not a list of {{\"group\":…,\"kind\":…,\"sleep\":[{{\"op\":\"replace\",\"path\":\"/spec/…\",\"value\":…}}]}}: {err}"
        ))
    })?;
    let mut seen = BTreeMap::new();
    for rule in &rules {
        let which = format!("the rule for {}", rule.resource());
        if seen.insert((&rule.group, &rule.kind), ()).is_some() {
            return Err(BadRules(format!("{which} is given twice")));
        }
        let kind_ok = rule
            .kind
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
            && rule.kind.chars().all(|c| c.is_ascii_alphanumeric());
        if !kind_ok {
            return Err(BadRules(format!(
                "kind {:?} is not a kind (such as Cluster)",
                rule.kind
            )));
        }
        let group_ok = rule.group.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        }) || rule.group.is_empty();
        if !group_ok {
            return Err(BadRules(format!(
                "group {:?} is not an API group (such as postgresql.cnpg.io)",
                rule.group
            )));
        }
        if OWN_KINDS.contains(&(rule.group.as_str(), rule.kind.as_str())) {
            return Err(BadRules(format!(
                "{which}: kdev sleeps a {} itself; remove the rule",
                rule.kind
            )));
        }
        if rule.group.is_empty() && rule.kind == "Secret" {
            return Err(BadRules(format!(
                "{which}: a Secret is never patched (its values would be recorded)"
            )));
        }
        if rule.sleep.is_empty() {
            return Err(BadRules(format!("{which} has no operations in \"sleep\"")));
        }
        let mut paths: Vec<Vec<String>> = Vec::new();
        for op in &rule.sleep {
            let segments = pointer(&op.path)
                .map_err(|why| BadRules(format!("{which}: path {:?} {why}", op.path)))?;
            match (op.op, &op.value) {
                (OpKind::Replace | OpKind::Add, None | Some(Value::Null)) => {
                    return Err(BadRules(format!(
                        "{which}: {:?} on {} needs a value other than null",
                        op.op, op.path
                    )));
                }
                (OpKind::Remove, Some(_)) => {
                    return Err(BadRules(format!(
                        "{which}: remove on {} takes no value",
                        op.path
                    )));
                }
                _ => {}
            }
            if let Some(other) = paths
                .iter()
                .find(|p| p.starts_with(&segments) || segments.starts_with(p))
            {
                return Err(BadRules(format!(
                    "{which}: paths {} and {} overlap; give each field once",
                    op.path,
                    render(other)
                )));
            }
            paths.push(segments);
        }
    }
    Ok(rules)
}

impl Rule {
    /// `Kind.group`, as kubectl names a resource.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// A path's segments; refused unless it names a field of `spec` or a key of
/// `metadata.annotations` or `metadata.labels` (never kdev's own).
fn pointer(path: &str) -> Result<Vec<String>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("is not a JSON Pointer (it starts with /)".to_owned());
    };
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        let mut segment = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match (c, c == '~') {
                (_, false) => segment.push(c),
                (_, true) => match chars.next() {
                    Some('0') => segment.push('~'),
                    Some('1') => segment.push('/'),
                    _ => return Err("has a ~ that is not ~0 or ~1".to_owned()),
                },
            }
        }
        if segment.is_empty() || segment == "-" {
            return Err("has an empty or \"-\" segment".to_owned());
        }
        segments.push(segment);
    }
    let allowed = match segments.as_slice() {
        [first, _, ..] if first == "spec" => true,
        [meta, map, key] if meta == "metadata" && (map == "annotations" || map == "labels") => {
            !key.starts_with("kdev.dev/")
        }
        _ => false,
    };
    if !allowed {
        return Err(
            "is not a field under /spec, /metadata/annotations or /metadata/labels (kdev.dev/ keys excluded)"
                .to_owned(),
        );
    }
    Ok(segments)
}

/// Segments back to a pointer.
fn render(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// What a sleep by patch replaced: put back by the wake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchRecord {
    pub fields: Vec<Field>,
    /// When (RFC 3339).
    pub at: String,
    /// Who or what.
    pub by: String,
}

/// One field a sleep changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub path: String,
    /// Its value before the sleep; absent: it was not there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<Value>,
    /// What the sleep left there; absent: removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Value>,
}

impl PatchRecord {
    /// Reads the record on an object; `None` when it is not asleep.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        let Some(raw) = annotations.get(PATCH_RECORD_ANNOTATION) else {
            return Ok(None);
        };
        let record: PatchRecord = serde_json::from_str(raw).map_err(|err| {
            format!(
                "annotation {PATCH_RECORD_ANNOTATION} is not a record of a sleep by patch: {err}"
            )
        })?;
        for field in &record.fields {
            pointer(&field.path).map_err(|why| {
                format!(
                    "annotation {PATCH_RECORD_ANNOTATION}: path {:?} {why}",
                    field.path
                )
            })?;
        }
        Ok(Some(record))
    }
}

/// What a sleep does to one object of a rule's kind.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchSleep {
    /// Write this merge patch: the fields and the record together.
    Patch { merge: Value, fields: Vec<Field> },
    /// It carries a record: asleep.
    AlreadyAsleep,
    /// Every field already holds what the sleep would set: left as it is,
    /// and the wake does not touch it.
    AlreadyAsDeclared,
}

/// What a wake does to one object.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchWake {
    /// Write this merge patch: the record removed, and each field that
    /// still holds what the sleep set put back.
    Patch {
        merge: Value,
        /// Put back.
        restored: Vec<Field>,
        /// Changed while asleep: kept, with the value found.
        kept: Vec<(String, Option<Value>)>,
    },
    NotAsleep,
}

/// The value at `segments` in `object`; `Err` when the path goes through
/// something that is not an object.
fn lookup<'a>(object: &'a Value, segments: &[String]) -> Result<Option<&'a Value>, String> {
    let mut at = object;
    for (i, segment) in segments.iter().enumerate() {
        match at {
            Value::Object(map) => match map.get(segment) {
                Some(next) => at = next,
                None => return Ok(None),
            },
            _ => {
                return Err(format!(
                    "{} is not an object (a sleep patch changes object fields only)",
                    render(&segments[..i])
                ));
            }
        }
    }
    Ok(Some(at))
}

/// Adds to `merge` what makes the value at `segments` become `wanted`
/// (`None`: removed), given what is there now: a merge patch merges
/// objects, so keys of `current` that `wanted` lacks are removed as well.
fn set(merge: &mut Value, segments: &[String], current: Option<&Value>, wanted: Option<&Value>) {
    let mut at = merge;
    for segment in segments {
        if !at.is_object() {
            *at = Value::Object(serde_json::Map::new());
        }
        at = at
            .as_object_mut()
            .expect("made an object above")
            .entry(segment.clone())
            .or_insert(Value::Null);
    }
    *at = replacing(current, wanted);
}

/// The merge patch value that turns `current` into `wanted`.
fn replacing(current: Option<&Value>, wanted: Option<&Value>) -> Value {
    match (current, wanted) {
        (_, None) => Value::Null,
        (Some(Value::Object(now)), Some(Value::Object(want))) => {
            let mut patch = serde_json::Map::new();
            for key in now.keys().filter(|k| !want.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, value) in want {
                patch.insert(key.clone(), replacing(now.get(key), Some(value)));
            }
            Value::Object(patch)
        }
        (_, Some(value)) => value.clone(),
    }
}

/// Decides a sleep of `object` (as the API returns it) by `rule`.
pub fn patch_sleep(object: &Value, rule: &Rule, at: &str, by: &str) -> Result<PatchSleep, String> {
    let annotations = annotations_of(object);
    if PatchRecord::read(&annotations)?.is_some() {
        return Ok(PatchSleep::AlreadyAsleep);
    }
    let mut merge = Value::Object(serde_json::Map::new());
    let mut fields = Vec::new();
    for op in &rule.sleep {
        let segments = pointer(&op.path)?;
        let current = lookup(object, &segments)?;
        if op.op == OpKind::Replace && current.is_none() {
            return Err(format!(
                "{} has no field {} to replace; fix the rule in the namespace's {SLEEP_PATCHES_ANNOTATION}",
                rule.resource(),
                op.path
            ));
        }
        let wanted = op.value.as_ref();
        if current == wanted {
            continue;
        }
        set(&mut merge, &segments, current, wanted);
        fields.push(Field {
            path: op.path.clone(),
            was: current.cloned(),
            set: wanted.cloned(),
        });
    }
    if fields.is_empty() {
        return Ok(PatchSleep::AlreadyAsDeclared);
    }
    let record = PatchRecord {
        fields: fields.clone(),
        at: at.to_owned(),
        by: by.to_owned(),
    };
    let text = serde_json::to_string(&record).expect("a record serializes");
    add_annotation(&mut merge, Value::String(text));
    Ok(PatchSleep::Patch { merge, fields })
}

/// Decides a wake of `object`: from its record alone.
pub fn patch_wake(object: &Value) -> Result<PatchWake, String> {
    let annotations = annotations_of(object);
    let Some(record) = PatchRecord::read(&annotations)? else {
        return Ok(PatchWake::NotAsleep);
    };
    let mut merge = Value::Object(serde_json::Map::new());
    let (mut restored, mut kept) = (Vec::new(), Vec::new());
    for field in record.fields {
        let segments = pointer(&field.path)?;
        let current = lookup(object, &segments)?;
        if current != field.set.as_ref() {
            kept.push((field.path, current.cloned()));
            continue;
        }
        set(&mut merge, &segments, current, field.was.as_ref());
        restored.push(field);
    }
    add_annotation(&mut merge, Value::Null);
    Ok(PatchWake::Patch {
        merge,
        restored,
        kept,
    })
}

/// The record annotation into a merge patch (`null` removes it).
fn add_annotation(merge: &mut Value, record: Value) {
    let segments = ["metadata", "annotations", PATCH_RECORD_ANNOTATION].map(String::from);
    // A null, written as it is, removes the annotation.
    set(merge, &segments, None, Some(&record));
}

fn annotations_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["annotations"]
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A value as a line shows it: JSON, cut at 40 characters; `(none)` for absent.
pub fn show(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "(none)".to_owned();
    };
    let text = value.to_string();
    if text.chars().count() <= 40 {
        text
    } else {
        format!("{}…", text.chars().take(39).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn cnpg() -> Rule {
        parse_rules(
            r#"[{"group":"postgresql.cnpg.io","kind":"Cluster","sleep":[
                {"op":"replace","path":"/spec/instances","value":0},
                {"op":"add","path":"/spec/paused","value":true},
                {"op":"remove","path":"/spec/backup"}]}]"#,
        )
        .expect("rules")
        .remove(0)
    }

    fn apply(object: &mut Value, merge: &Value) {
        // RFC 7386.
        fn go(target: &mut Value, patch: &Value) {
            let Value::Object(patch) = patch else {
                *target = patch.clone();
                return;
            };
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().expect("an object");
            for (key, value) in patch {
                if value.is_null() {
                    map.remove(key);
                } else {
                    go(map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        go(object, merge);
    }

    fn cluster() -> Value {
        json!({
            "metadata": {"name": "db", "annotations": {"team": "payments"}},
            "spec": {"instances": 3, "backup": {"schedule": "0 0 * * *", "target": "s3"}, "storage": {"size": "1Gi"}}
        })
    }

    #[test]
    fn a_sleep_records_each_value_it_replaces_and_the_wake_puts_them_back() {
        let before = cluster();
        let mut object = before.clone();
        let PatchSleep::Patch { merge, fields } =
            patch_sleep(&object, &cnpg(), "2026-12-07T00:00:00Z", "me").unwrap()
        else {
            panic!("a patch");
        };
        assert_eq!(fields.len(), 3);
        apply(&mut object, &merge);
        assert_eq!(object["spec"]["instances"], 0);
        assert_eq!(object["spec"]["paused"], true);
        assert!(object["spec"].get("backup").is_none());
        assert_eq!(
            patch_sleep(&object, &cnpg(), "t", "me").unwrap(),
            PatchSleep::AlreadyAsleep
        );
        let PatchWake::Patch {
            merge,
            restored,
            kept,
        } = patch_wake(&object).unwrap()
        else {
            panic!("a wake");
        };
        assert_eq!((restored.len(), kept.len()), (3, 0));
        apply(&mut object, &merge);
        assert_eq!(object, before);
        assert_eq!(patch_wake(&object).unwrap(), PatchWake::NotAsleep);
    }

    #[test]
    fn a_field_changed_while_asleep_is_kept_and_the_others_are_put_back() {
        let mut object = cluster();
        let PatchSleep::Patch { merge, .. } = patch_sleep(&object, &cnpg(), "t", "me").unwrap()
        else {
            panic!("a patch");
        };
        apply(&mut object, &merge);
        object["spec"]["instances"] = json!(1);
        let PatchWake::Patch {
            merge,
            restored,
            kept,
        } = patch_wake(&object).unwrap()
        else {
            panic!("a wake");
        };
        assert_eq!(kept, vec![("/spec/instances".to_owned(), Some(json!(1)))]);
        assert_eq!(restored.len(), 2);
        apply(&mut object, &merge);
        assert_eq!(object["spec"]["instances"], 1);
        assert!(object["spec"].get("paused").is_none());
        assert_eq!(object["spec"]["backup"]["target"], "s3");
        assert!(
            object["metadata"]["annotations"]
                .get(PATCH_RECORD_ANNOTATION)
                .is_none()
        );
    }

    #[test]
    fn an_object_value_replaces_rather_than_merges() {
        let rule = parse_rules(
            r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"replace","path":"/spec/storage","value":{"tier":"cold"}}]}]"#,
        )
        .unwrap()
        .remove(0);
        let before = cluster();
        let mut object = before.clone();
        let PatchSleep::Patch { merge, .. } = patch_sleep(&object, &rule, "t", "me").unwrap()
        else {
            panic!("a patch");
        };
        apply(&mut object, &merge);
        assert_eq!(object["spec"]["storage"], json!({"tier": "cold"}));
        let PatchWake::Patch { merge, .. } = patch_wake(&object).unwrap() else {
            panic!("a wake");
        };
        apply(&mut object, &merge);
        assert_eq!(object, before);
    }

    #[test]
    fn an_object_already_as_declared_is_left_alone() {
        let mut object = cluster();
        object["spec"]["instances"] = json!(0);
        object["spec"]["paused"] = json!(true);
        object["spec"].as_object_mut().unwrap().remove("backup");
        assert_eq!(
            patch_sleep(&object, &cnpg(), "t", "me").unwrap(),
            PatchSleep::AlreadyAsDeclared
        );
    }

    #[test]
    fn replace_of_a_missing_field_and_a_path_through_a_list_are_errors() {
        let mut object = cluster();
        object["spec"].as_object_mut().unwrap().remove("instances");
        let err = patch_sleep(&object, &cnpg(), "t", "me").unwrap_err();
        assert!(err.contains("/spec/instances"), "{err}");
        let rule = parse_rules(
            r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"replace","path":"/spec/list/0","value":1}]}]"#,
        )
        .unwrap()
        .remove(0);
        let object = json!({"spec": {"list": [1, 2]}});
        let err = patch_sleep(&object, &rule, "t", "me").unwrap_err();
        assert!(err.contains("/spec/list is not an object"), "{err}");
    }

    #[test]
    fn rules_that_cannot_be_used_are_refused_saying_why() {
        for (text, says) in [
            ("{}", "not a list"),
            (
                r#"[{"group":"apps","kind":"Deployment","sleep":[{"op":"remove","path":"/spec/x"}]}]"#,
                "itself",
            ),
            (
                r#"[{"group":"","kind":"Secret","sleep":[{"op":"remove","path":"/spec/x"}]}]"#,
                "Secret",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[]}]"#,
                "no operations",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"replace","path":"/status/x","value":1}]}]"#,
                "under /spec",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"replace","path":"/metadata/annotations/kdev.dev~1sleep","value":"1"}]}]"#,
                "kdev.dev/",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"replace","path":"/spec/x","value":null}]}]"#,
                "value other than null",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"remove","path":"/spec/x","value":1}]}]"#,
                "takes no value",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"move","path":"/spec/x"}]}]"#,
                "not a list",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"remove","path":"/spec/a"},{"op":"remove","path":"/spec/a/b"}]}]"#,
                "overlap",
            ),
            (
                r#"[{"group":"x.io","kind":"Db","sleep":[{"op":"remove","path":"/spec/a"}]},{"group":"x.io","kind":"Db","sleep":[{"op":"remove","path":"/spec/b"}]}]"#,
                "twice",
            ),
            (
                r#"[{"group":"X_io","kind":"Db","sleep":[{"op":"remove","path":"/spec/a"}]}]"#,
                "not an API group",
            ),
            (
                r#"[{"group":"x.io","kind":"db","sleep":[{"op":"remove","path":"/spec/a"}]}]"#,
                "not a kind",
            ),
        ] {
            let err = parse_rules(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains(SLEEP_PATCHES_ANNOTATION), "{err}");
        }
    }

    #[test]
    fn escaped_pointer_segments_name_annotation_keys() {
        let rule = parse_rules(
            r#"[{"group":"","kind":"Service","sleep":[{"op":"add","path":"/metadata/annotations/example.com~1paused","value":"true"}]}]"#,
        )
        .unwrap()
        .remove(0);
        let object = json!({"metadata": {"name": "s"}, "spec": {}});
        let PatchSleep::Patch { merge, .. } = patch_sleep(&object, &rule, "t", "me").unwrap()
        else {
            panic!("a patch");
        };
        assert_eq!(
            merge["metadata"]["annotations"]["example.com/paused"],
            "true"
        );
        assert!(merge["metadata"]["annotations"][PATCH_RECORD_ANNOTATION].is_string());
    }

    proptest! {
        #[test]
        fn any_rules_text_is_rules_or_an_error_never_a_panic(text in "\\PC{0,200}") {
            let _ = parse_rules(&text);
        }

        #[test]
        fn any_pointer_is_segments_or_an_error_never_a_panic(path in "(/[a-z~01/-]{0,6}){0,4}") {
            if let Ok(segments) = pointer(&path) {
                prop_assert_eq!(render(&segments), path);
            }
        }

        #[test]
        fn any_record_text_is_a_record_or_an_error_never_a_panic(text in "\\PC{0,200}") {
            let annotations = BTreeMap::from([(PATCH_RECORD_ANNOTATION.to_owned(), text)]);
            let _ = PatchRecord::read(&annotations);
            let object = json!({"metadata": {"annotations": annotations}});
            let _ = patch_wake(&object);
        }

        #[test]
        fn a_sleep_then_a_wake_gives_back_the_object(
            instances in proptest::option::of(0i64..5),
            backup in proptest::option::of("[a-z]{0,4}"),
            paused in proptest::option::of(any::<bool>()),
        ) {
            let mut spec = serde_json::Map::new();
            spec.insert("instances".into(), json!(instances.unwrap_or(2)));
            if let Some(b) = &backup { spec.insert("backup".into(), json!({"target": b})); }
            if let Some(p) = paused { spec.insert("paused".into(), json!(p)); }
            let before = json!({"metadata": {"name": "db"}, "spec": spec});
            let mut object = before.clone();
            match patch_sleep(&object, &cnpg(), "t", "me").unwrap() {
                PatchSleep::Patch { merge, .. } => {
                    apply(&mut object, &merge);
                    let PatchWake::Patch { merge, .. } = patch_wake(&object).unwrap() else {
                        panic!("asleep");
                    };
                    apply(&mut object, &merge);
                    // A record's annotations map may remain, empty.
                    if object["metadata"]["annotations"] == json!({}) {
                        object["metadata"].as_object_mut().unwrap().remove("annotations");
                    }
                    prop_assert_eq!(object, before);
                }
                PatchSleep::AlreadyAsDeclared => {}
                PatchSleep::AlreadyAsleep => panic!("no record"),
            }
        }
    }
}
