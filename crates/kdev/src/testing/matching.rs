//! Does an actual object satisfy an expected one? Every mismatch, not only
//! the first.
//!
//! - A map matches when each expected key matches (other keys are ignored).
//!   A key written `(expression)` is evaluated over the actual map and its
//!   result matched against the value (chainsaw).
//! - A list, by default, matches when each expected item matches a
//!   different actual item, in any order ([`Lists::Subset`]); kuttl's rule,
//!   the same length and order, is [`Lists::Exact`].
//! - A string `(expression)` is evaluated with `@` = the actual value and
//!   the result compared with it (`namespace: ($namespace)`).
//! - Numbers compare as numbers (`1` = `1.0`); `null` matches a missing
//!   field.

use serde_json::Value;

use super::expr::{self, Bindings};

/// How expected lists match actual ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lists {
    /// Each expected item matches a different actual item, in any order.
    #[default]
    Subset,
    /// The same length, item by item in order (kuttl).
    Exact,
}

/// One difference between expected and actual.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Where, as `spec.containers[0].image`.
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// The rules of one comparison.
pub struct Matcher<'a> {
    pub lists: Lists,
    pub bindings: &'a Bindings,
}

impl Matcher<'_> {
    /// Every mismatch of `actual` against `expected`; empty when it matches.
    pub fn mismatches(&self, expected: &Value, actual: &Value) -> Vec<Mismatch> {
        let mut out = Vec::new();
        self.walk(expected, Some(actual), "", &mut out);
        out
    }

    pub fn matches(&self, expected: &Value, actual: &Value) -> bool {
        self.mismatches(expected, actual).is_empty()
    }

    fn walk(&self, expected: &Value, actual: Option<&Value>, path: &str, out: &mut Vec<Mismatch>) {
        let miss = |out: &mut Vec<Mismatch>, reason: String| {
            out.push(Mismatch {
                path: path.to_owned(),
                reason,
            })
        };
        if let Value::String(text) = expected
            && let Some(expression) = expr::expression(text)
        {
            let current = actual.cloned().unwrap_or(Value::Null);
            match expr::eval(expression, &current, self.bindings) {
                Ok(want) => {
                    if !same_scalar(&want, &current) {
                        miss(
                            out,
                            format!(
                                "expected {} (from {text}), got {}",
                                show(&want),
                                shown(actual)
                            ),
                        );
                    }
                }
                Err(e) => miss(out, e),
            }
            return;
        }
        // A map of only `(expression)` keys judges any value, not only a
        // map: `type: {(starts_with(@, 'a')): true}`.
        if let Value::Object(want) = expected
            && !want.is_empty()
            && want.keys().all(|k| expr::expression(k).is_some())
            && !matches!(actual, Some(Value::Object(_)))
        {
            let here = actual.cloned().unwrap_or(Value::Null);
            for (key, value) in want {
                let child = join(path, key);
                let expression = expr::expression(key).unwrap_or_default();
                match expr::eval(expression, &here, self.bindings) {
                    Ok(result) => self.walk(value, Some(&result), &child, out),
                    Err(e) => out.push(Mismatch {
                        path: child,
                        reason: e,
                    }),
                }
            }
            return;
        }
        match (expected, actual) {
            (Value::Null, None | Some(Value::Null)) => {}
            (_, None) => miss(
                out,
                format!("expected {}, but it is missing", show(expected)),
            ),
            (Value::Object(want), Some(Value::Object(have))) => {
                for (key, value) in want {
                    if let Some(expression) = expr::expression(key) {
                        let here = Value::Object(have.clone());
                        let child = join(path, key);
                        match expr::eval(expression, &here, self.bindings) {
                            Ok(result) => self.walk(value, Some(&result), &child, out),
                            Err(e) => out.push(Mismatch {
                                path: child,
                                reason: e,
                            }),
                        }
                    } else {
                        self.walk(value, have.get(key), &join(path, key), out);
                    }
                }
            }
            (Value::Array(want), Some(Value::Array(have))) => self.lists(want, have, path, out),
            (Value::Object(_) | Value::Array(_), Some(other)) => miss(
                out,
                format!("expected {}, got {}", kind(expected), show(other)),
            ),
            (_, Some(have)) => {
                if !same_scalar(expected, have) {
                    miss(
                        out,
                        format!("expected {}, got {}", show(expected), show(have)),
                    );
                }
            }
        }
    }

    fn lists(&self, want: &[Value], have: &[Value], path: &str, out: &mut Vec<Mismatch>) {
        match self.lists {
            Lists::Exact => {
                if want.len() != have.len() {
                    out.push(Mismatch {
                        path: path.to_owned(),
                        reason: format!(
                            "expected exactly {} items (kuttl's list rule), got {}",
                            want.len(),
                            have.len()
                        ),
                    });
                }
                for (i, (w, h)) in want.iter().zip(have).enumerate() {
                    self.walk(w, Some(h), &format!("{path}[{i}]"), out);
                }
            }
            Lists::Subset => {
                let pairing = self.pair(want, have);
                for (i, w) in want.iter().enumerate() {
                    let item = format!("{path}[{i}]");
                    match pairing.assigned[i] {
                        Some(_) => {}
                        None => match pairing.nearest[i] {
                            Some(j) => {
                                let mut inner = Vec::new();
                                self.walk(w, Some(&have[j]), &format!("{path}[{j}]"), &mut inner);
                                if inner.is_empty() {
                                    // It matches an item another expected
                                    // item needs: say so plainly.
                                    out.push(Mismatch {
                                        path: item,
                                        reason: format!(
                                            "no actual item is left for it (it matches item {j}, which another expected item needs)"
                                        ),
                                    });
                                } else {
                                    out.push(Mismatch {
                                        path: item,
                                        reason: format!(
                                            "no actual item matches; the nearest is item {j}:"
                                        ),
                                    });
                                    out.extend(inner);
                                }
                            }
                            None => out.push(Mismatch {
                                path: item,
                                reason: format!(
                                    "expected an item like {}, but the list is empty",
                                    show(w)
                                ),
                            }),
                        },
                    }
                }
            }
        }
    }

    /// Which actual item each expected item matches: a maximum matching of
    /// the "matches" relation (augmenting paths), so `[a, a]` against
    /// `[a, b]` fails and an order that a greedy pass gets wrong still
    /// passes.
    pub fn pair(&self, want: &[Value], have: &[Value]) -> Pairing {
        let fits: Vec<Vec<bool>> = want
            .iter()
            .map(|w| have.iter().map(|h| self.matches(w, h)).collect())
            .collect();
        let mut owner: Vec<Option<usize>> = vec![None; have.len()];
        for i in 0..want.len() {
            let mut seen = vec![false; have.len()];
            augment(i, &fits, &mut owner, &mut seen);
        }
        let mut assigned = vec![None; want.len()];
        for (j, o) in owner.iter().enumerate() {
            if let Some(i) = o {
                assigned[*i] = Some(j);
            }
        }
        let nearest = want
            .iter()
            .enumerate()
            .map(|(i, w)| {
                assigned[i]
                    .or_else(|| (0..have.len()).min_by_key(|&j| self.mismatches(w, &have[j]).len()))
            })
            .collect();
        Pairing { assigned, nearest }
    }
}

/// The result of matching a list of expected items against actual ones.
pub struct Pairing {
    /// The actual item each expected item was given, if any.
    pub assigned: Vec<Option<usize>>,
    /// The assigned item, or else the one with the fewest mismatches.
    pub nearest: Vec<Option<usize>>,
}

fn augment(i: usize, fits: &[Vec<bool>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
    for j in 0..owner.len() {
        if fits[i][j] && !seen[j] {
            seen[j] = true;
            if owner[j].is_none_or(|k| augment(k, fits, owner, seen)) {
                owner[j] = Some(i);
                return true;
            }
        }
    }
    false
}

/// Equality with numbers compared as numbers.
pub fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_scalar(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_scalar(v, w)))
        }
        _ => a == b,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "a map",
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

/// A value in a message: scalars as JSON, maps and lists by kind and size.
fn show(value: &Value) -> String {
    match value {
        Value::Object(map) => format!("a map of {} keys", map.len()),
        Value::Array(list) => format!("a list of {} items", list.len()),
        other => {
            let text = other.to_string();
            if text.chars().count() > 80 {
                let cut: String = text.chars().take(77).collect();
                format!("{cut}...")
            } else {
                text
            }
        }
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "nothing (missing)".to_owned(), show)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn subset() -> Matcher<'static> {
        static EMPTY: std::sync::LazyLock<Bindings> = std::sync::LazyLock::new(Bindings::default);
        Matcher {
            lists: Lists::Subset,
            bindings: &EMPTY,
        }
    }

    fn paths(m: &[Mismatch]) -> Vec<&str> {
        m.iter().map(|m| m.path.as_str()).collect()
    }

    #[test]
    fn maps_match_partially() {
        let actual = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "spec": {"replicas": 3}});
        assert!(subset().matches(&json!({"metadata": {"labels": {"y": "2"}}}), &actual));
        let m = subset().mismatches(
            &json!({"metadata": {"labels": {"y": "3", "z": "1"}}, "spec": {"replicas": 2}}),
            &actual,
        );
        // Every mismatch, not only the first.
        assert_eq!(
            paths(&m),
            ["metadata.labels.y", "metadata.labels.z", "spec.replicas"]
        );
        assert!(
            m[0].reason.contains("expected \"3\", got \"2\""),
            "{}",
            m[0]
        );
        assert!(m[1].reason.contains("missing"), "{}", m[1]);
    }

    #[test]
    fn lists_are_subsets_in_any_order() {
        let actual = json!({"items": [{"n": "a", "v": 1}, {"n": "b", "v": 2}, {"n": "c", "v": 3}]});
        assert!(subset().matches(&json!({"items": [{"n": "c"}, {"n": "a"}]}), &actual));
        // A greedy pass would give {v: 1 or 2}'s first choice to the first
        // item; the matching finds the assignment that works.
        let actual = json!([{"a": 1, "b": 1}, {"a": 1}]);
        assert!(subset().matches(&json!([{"a": 1}, {"b": 1}]), &actual));
        // Two expected items cannot share one actual item.
        let m = subset().mismatches(&json!([{"a": 1}, {"a": 1}, {"a": 1}]), &actual);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].reason.contains("no actual item is left"), "{}", m[0]);
    }

    #[test]
    fn a_list_mismatch_shows_the_nearest_item() {
        let actual = json!({"containers": [{"name": "web", "image": "web:1"}, {"name": "log", "image": "log:1"}]});
        let m = subset().mismatches(
            &json!({"containers": [{"name": "web", "image": "web:2"}]}),
            &actual,
        );
        assert_eq!(paths(&m), ["containers[0]", "containers[0].image"]);
        assert!(
            m[1].reason.contains("expected \"web:2\", got \"web:1\""),
            "{m:?}"
        );
    }

    #[test]
    fn exact_lists_are_kuttls_rule() {
        let exact = Matcher {
            lists: Lists::Exact,
            bindings: &Bindings::default(),
        };
        let actual = json!([1, 2, 3]);
        assert!(exact.matches(&json!([1, 2, 3]), &actual));
        let m = exact.mismatches(&json!([3, 2]), &actual);
        assert_eq!(paths(&m), ["", "[0]"]);
        assert!(m[0].reason.contains("exactly 2 items"), "{}", m[0]);
        assert!(subset().matches(&json!([3, 2]), &actual));
    }

    #[test]
    fn types_numbers_and_nulls() {
        assert!(subset().matches(&json!({"a": 1}), &json!({"a": 1.0})));
        let m = subset().mismatches(&json!({"a": {"b": 1}}), &json!({"a": "x"}));
        assert!(
            m[0].reason.contains("expected a map, got \"x\""),
            "{}",
            m[0]
        );
        let m = subset().mismatches(&json!({"a": "1"}), &json!({"a": 1}));
        assert!(m[0].reason.contains("expected \"1\", got 1"), "{}", m[0]);
        assert!(subset().matches(&json!({"gone": null}), &json!({})));
        assert!(!subset().matches(&json!({"gone": null}), &json!({"gone": 1})));
    }

    #[test]
    fn expressions_in_keys_and_values() {
        let b = Bindings::default().with("namespace", json!("t-1"));
        let m = Matcher {
            lists: Lists::Subset,
            bindings: &b,
        };
        let pod = json!({"metadata": {"namespace": "t-1"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert!(m.matches(
            &json!({"metadata": {"namespace": "($namespace)"}, "spec": {"(length(containers))": 2}}),
            &pod
        ));
        let miss = m.mismatches(&json!({"spec": {"(length(containers))": 3}}), &pod);
        assert_eq!(paths(&miss), ["spec.(length(containers))"]);
        let miss = m.mismatches(&json!({"metadata": {"namespace": "($nope)"}}), &pod);
        assert!(miss[0].reason.contains("no binding $nope"), "{miss:?}");
        // A boolean key expression.
        assert!(m.matches(&json!({"spec": {"(length(containers) > `1`)": true}}), &pod));
        // Expression keys judge a scalar too.
        assert!(m.matches(
            &json!({"metadata": {"namespace": {"(starts_with(@, 't-'))": true}}}),
            &pod
        ));
        assert!(!m.matches(
            &json!({"metadata": {"namespace": {"(starts_with(@, 'x'))": true}}}),
            &pod
        ));
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(|n| json!(n)),
            "[a-c()$@]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c()]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_pair_gives_mismatches_never_a_panic(expected in value(), actual in value()) {
            let _ = subset().mismatches(&expected, &actual);
        }

        #[test]
        fn an_object_without_expressions_matches_itself(v in value()) {
            let text = v.to_string();
            prop_assume!(!text.contains('('));
            prop_assert!(subset().matches(&v, &v), "{}", text);
        }
    }
}
