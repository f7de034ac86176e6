//! A failed assertion as a person reads it: the expected object beside the
//! part of the nearest actual object it talks about, as a line diff.
//!
//! The actual side is *projected* onto the expected one (only the keys the
//! expected object names; list items paired as the matcher paired them), so
//! managedFields, status noise and unrelated fields never appear, and every
//! mismatch shows as `-`/`+` lines in place.

use serde_json::{Map, Value};
use similar::{ChangeTag, TextDiff};

use super::expr;
use super::matching::{Lists, Matcher};

/// The actual value shaped like `expected`.
pub fn project(matcher: &Matcher<'_>, expected: &Value, actual: &Value) -> Value {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            let mut out = Map::new();
            for (key, value) in want {
                if let Some(expression) = expr::expression(key) {
                    let result = expr::eval(expression, actual, matcher.bindings)
                        .unwrap_or_else(|e| Value::String(format!("<{e}>")));
                    out.insert(key.clone(), project(matcher, value, &result));
                } else if let Some(have) = have.get(key) {
                    out.insert(key.clone(), project(matcher, value, have));
                }
            }
            Value::Object(out)
        }
        (Value::Array(want), Value::Array(have)) => match matcher.lists {
            Lists::Exact => have
                .iter()
                .enumerate()
                .map(|(i, h)| match want.get(i) {
                    Some(w) => project(matcher, w, h),
                    None => h.clone(),
                })
                .collect(),
            Lists::Subset => {
                let pairing = matcher.pair(want, have);
                want.iter()
                    .zip(&pairing.nearest)
                    .filter_map(|(w, j)| j.map(|j| project(matcher, w, &have[j])))
                    .collect()
            }
        },
        // A scalar that an expression produced: shown as it was compared.
        (Value::String(text), _) if expr::expression(text).is_some() => actual.clone(),
        _ => actual.clone(),
    }
}

/// The diff of `expected` against the projection of `actual`, in YAML, with
/// `-` for expected and `+` for actual lines and two lines of context.
pub fn render(matcher: &Matcher<'_>, expected: &Value, actual: &Value) -> String {
    let want = to_yaml(expected);
    let have = to_yaml(&project(matcher, expected, actual));
    let diff = TextDiff::from_lines(&want, &have);
    let mut out = String::new();
    for group in diff.grouped_ops(2) {
        if !out.is_empty() {
            out.push_str("  ...\n");
        }
        for op in group {
            for change in diff.iter_changes(&op) {
                let sign = match change.tag() {
                    ChangeTag::Delete => "- ",
                    ChangeTag::Insert => "+ ",
                    ChangeTag::Equal => "  ",
                };
                out.push_str(sign);
                out.push_str(change.value().trim_end_matches('\n'));
                out.push('\n');
            }
        }
    }
    out
}

/// Fields no person wants in a failure message.
pub fn strip_noise(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "generation",
            "selfLink",
        ] {
            metadata.remove(key);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
    }
}

/// A small YAML rendering for messages (block style, JSON-quoted strings
/// where a plain one could be misread).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_node(value, 0, &mut out);
    out
}

fn write_node(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&" ".repeat(indent));
                out.push_str(&scalar_text(&Value::String(key.clone())));
                out.push(':');
                write_child(item, indent, out);
            }
        }
        Value::Array(list) if !list.is_empty() => {
            for item in list {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // `- key: value` with the rest of the map below it.
                        let mut inner = String::new();
                        write_node(item, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => write_child(item, indent, out),
                }
            }
        }
        other => {
            out.push_str(&" ".repeat(indent));
            out.push_str(&scalar_text(other));
            out.push('\n');
        }
    }
}

fn write_child(item: &Value, indent: usize, out: &mut String) {
    match item {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_node(item, indent + 2, out);
        }
        Value::Array(l) if !l.is_empty() => {
            out.push('\n');
            write_node(item, indent, out);
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar_text(item));
            out.push('\n');
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./()$@: ".contains(c))
                && !s.contains(": ")
                && !s.ends_with(':')
                && !s.starts_with([' ', '-', '@'])
                && !s.ends_with(' ')
                && !matches!(
                    s.as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
                )
                && s.parse::<f64>().is_err();
            if plain {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::expr::Bindings;
    use proptest::prelude::*;
    use serde_json::json;

    fn m(b: &Bindings) -> Matcher<'_> {
        Matcher {
            lists: Lists::Subset,
            bindings: b,
        }
    }

    #[test]
    fn the_diff_shows_every_mismatch_in_place_and_nothing_else() {
        let b = Bindings::default();
        let expected = json!({"kind": "Deployment", "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
        let actual = json!({"kind": "Deployment", "metadata": {"managedFields": [{"x": 1}]}, "spec": {"replicas": 1, "paused": false, "template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}, {"name": "web", "image": "web:1"}]}}}});
        let text = render(&m(&b), &expected, &actual);
        assert!(
            text.contains("-   replicas: 3\n+   replicas: 1\n"),
            "{text}"
        );
        assert!(text.contains("-       - image: web:2\n"), "{text}");
        assert!(text.contains("+       - image: web:1\n"), "{text}");
        assert!(
            !text.contains("managedFields")
                && !text.contains("paused")
                && !text.contains("sidecar"),
            "{text}"
        );
    }

    #[test]
    fn yaml_for_messages() {
        let text =
            to_yaml(&json!({"a": {"b": [1, "x y", {"c": "true", "d": []}], "e": ""}, "f": null}));
        assert_eq!(
            text,
            "a:\n  b:\n  - 1\n  - x y\n  - c: \"true\"\n    d: []\n  e: \"\"\nf: null\n"
        );
    }

    #[test]
    fn noise_is_stripped() {
        let mut o = json!({"metadata": {"name": "a", "managedFields": [], "uid": "u", "resourceVersion": "1",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}});
        strip_noise(&mut o);
        assert_eq!(o, json!({"metadata": {"name": "a"}}));
    }

    proptest! {
        #[test]
        fn any_pair_renders_never_panics(a in "\\PC{0,40}", b in "\\PC{0,40}") {
            let bindings = Bindings::default();
            let _ = render(&m(&bindings), &json!({"k": a, "l": [b.clone()]}), &json!({"k": b, "l": []}));
        }
    }
}
