//! Chainsaw's `(expression)`s: JMESPath with `$bindings`.
//!
//! The JMESPath project's Rust crate evaluates the expression. It has no
//! variables, so a `$name` outside quotes is replaced by the binding's value
//! as a JSON literal before compiling (`$values.x` becomes
//! `` `{"x":1}`.x ``): the same result as a lexical variable, because a
//! binding's value is fixed while the expression runs.
//!
//! The subset (documented in the README): standard JMESPath (paths,
//! filters, projections, comparisons, `&&`/`||`/`!`, pipes, the standard
//! functions) plus bindings. Kyverno's extra functions are not there; an
//! unknown function is an error at load time.

use serde_json::Value;

/// Values visible to expressions, innermost last (a later binding of the
/// same name shadows an earlier one, as chainsaw's scopes do).
#[derive(Debug, Clone, Default)]
pub struct Bindings(Vec<(String, Value)>);

impl Bindings {
    pub fn with(&self, name: &str, value: Value) -> Bindings {
        let mut next = self.clone();
        next.0.push((name.to_owned(), value));
        next
    }

    pub fn push(&mut self, name: &str, value: Value) {
        self.0.push((name.to_owned(), value));
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn names(&self) -> String {
        let mut names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
            .iter()
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The expression inside `(…)`, if `text` is one.
pub fn expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    (!inner.trim().is_empty()).then_some(inner)
}

/// Checks an expression's grammar before anything runs: every binding is
/// taken as `null`, so only the syntax and function names are judged.
pub fn check(text: &str) -> Result<(), String> {
    let substituted = substitute(text, &mut |_| Ok(Value::Null))?;
    let expression = compile(text, &substituted)?;
    // The crate resolves function names while it evaluates: one evaluation
    // over `null` finds an unknown name (other runtime errors depend on the
    // data and are for later).
    match expression.search(jmespath::Variable::Null) {
        Err(e) => match e.reason {
            jmespath::ErrorReason::Runtime(jmespath::RuntimeError::UnknownFunction(name)) => Err(
                format!("({text}) calls {name}(), which is not a JMESPath function kdev supports"),
            ),
            _ => Ok(()),
        },
        Ok(_) => Ok(()),
    }
}

/// Evaluates `text` with `@` = `current`.
pub fn eval(text: &str, current: &Value, bindings: &Bindings) -> Result<Value, String> {
    let substituted = substitute(text, &mut |name| {
        bindings.get(name).cloned().ok_or_else(|| {
            format!(
                "no binding ${name} in ({text}); known here: {}",
                bindings.names()
            )
        })
    })?;
    let expression = compile(text, &substituted)?;
    let data = jmespath::Variable::from_serializable(current)
        .map_err(|e| format!("cannot evaluate ({text}): {e}"))?;
    let result = expression
        .search(data)
        .map_err(|e| format!("cannot evaluate ({text}): {}", e.reason))?;
    serde_json::to_value(&*result).map_err(|e| format!("cannot evaluate ({text}): {e}"))
}

/// JMESPath's truthiness (false, null, "", [], {} are false).
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

fn compile(text: &str, substituted: &str) -> Result<jmespath::Expression<'static>, String> {
    jmespath::compile(substituted).map_err(|e| {
        // The crate's message points into the substituted text; the reason
        // alone stays true for what the person wrote.
        format!(
            "({text}) is not a JMESPath expression kdev supports: {}",
            e.reason
        )
    })
}

/// Replaces each `$name` outside quotes by `value(name)` as a JSON literal.
fn substitute(
    text: &str,
    value: &mut dyn FnMut(&str) -> Result<Value, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' | '`' | '"' => {
                // Copy a quoted part whole, honouring backslash escapes.
                out.push(c);
                let mut closed = false;
                while let Some((_, q)) = chars.next() {
                    out.push(q);
                    if q == '\\' {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    } else if q == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(format!("({text}) has an unclosed {c} at character {at}"));
                }
            }
            '$' => {
                let mut name = String::new();
                while let Some((_, n)) = chars.peek() {
                    if n.is_ascii_alphanumeric() || *n == '_' {
                        name.push(*n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(format!(
                        "({text}) has a `$` at character {at} that names no binding"
                    ));
                }
                let literal = serde_json::to_string(&value(&name)?)
                    .map_err(|e| format!("binding ${name}: {e}"))?;
                out.push('`');
                out.push_str(&literal.replace('`', "\\`"));
                out.push('`');
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ns() -> Bindings {
        Bindings::default()
            .with("namespace", json!("t-1"))
            .with("values", json!({"size": 3, "name": "it's `odd`"}))
    }

    #[test]
    fn expressions_are_parenthesised_strings() {
        assert_eq!(expression("($namespace)"), Some("$namespace"));
        assert_eq!(expression("(length(a))"), Some("length(a)"));
        assert_eq!(expression("()"), None);
        assert_eq!(expression("plain"), None);
        assert_eq!(expression("(open"), None);
    }

    #[test]
    fn bindings_become_literals() {
        let b = ns();
        assert_eq!(eval("$namespace", &json!({}), &b).unwrap(), json!("t-1"));
        assert_eq!(eval("$values.size", &json!({}), &b).unwrap(), json!(3));
        assert_eq!(
            eval("$values.name", &json!({}), &b).unwrap(),
            json!("it's `odd`")
        );
        // Inside quotes a `$` is text.
        assert_eq!(
            eval("'$namespace'", &json!({}), &b).unwrap(),
            json!("$namespace")
        );
        // A later binding shadows an earlier one.
        let inner = b.with("namespace", json!("t-2"));
        assert_eq!(
            eval("$namespace", &json!({}), &inner).unwrap(),
            json!("t-2")
        );
    }

    #[test]
    fn jmespath_over_the_current_node() {
        let pod = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Scheduled", "status": "True"}
        ]}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let b = Bindings::default();
        assert_eq!(eval("length(spec.containers)", &pod, &b).unwrap(), json!(2));
        assert_eq!(
            eval("status.conditions[?type == 'Ready'].status | [0]", &pod, &b).unwrap(),
            json!("True")
        );
        assert_eq!(
            eval("spec.containers[*].name", &pod, &b).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            eval("length(spec.containers) > `1`", &pod, &b).unwrap(),
            json!(true)
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = eval("$nope", &json!({}), &ns()).unwrap_err();
        assert!(
            err.contains("no binding $nope") && err.contains("$namespace"),
            "{err}"
        );
        let err = check("length(").unwrap_err();
        assert!(
            err.contains("(length(") && err.contains("not a JMESPath"),
            "{err}"
        );
        let err = check("no_such_fn(a)").unwrap_err();
        assert!(err.contains("calls no_such_fn()"), "{err}");
        assert!(check("a.'b").unwrap_err().contains("unclosed"));
        assert!(check("$ + 1").unwrap_err().contains("names no binding"));
        check("$namespace").unwrap();
    }

    #[test]
    fn truthiness_is_jmespaths() {
        for v in [json!(null), json!(false), json!(""), json!([]), json!({})] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [
            json!(0),
            json!(true),
            json!("x"),
            json!([0]),
            json!({"a": 1}),
        ] {
            assert!(truthy(&v), "{v}");
        }
    }

    proptest! {
        #[test]
        fn any_text_is_an_error_or_a_value_never_a_panic(text in "\\PC{0,60}") {
            let _ = check(&text);
            let _ = eval(&text, &json!({"a": [1, {"b": "c"}]}), &ns());
        }

        #[test]
        fn expression_shaped_text_never_panics(text in "[a-z$`'\"\\\\()\\[\\]{}.,|&!<>=@*?: 0-9]{0,40}") {
            let _ = check(&text);
            let _ = eval(&text, &json!({"a": [1, {"b": "c"}]}), &ns());
        }
    }
}
