//! YAML documents as JSON values that remember the line of every node, so
//! that an error names the file and the line a person has to fix.
//!
//! YAML 1.2 as saphyr reads it: `yes`/`on` are strings, as in chainsaw and
//! as a Kubernetes API server decodes JSON; anchors and aliases are expanded
//! (with saphyr's limit against "billion laughs"); duplicate keys are an
//! error.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};
use serde_json::{Map, Number, Value};

/// One document of a YAML file.
#[derive(Debug, Clone)]
pub struct Doc {
    pub value: Value,
    /// The line (1-based) where the document starts.
    pub line: usize,
    /// The line of each node, by JSON pointer (`/spec/steps/0/try`); for a
    /// map's entry, the line of its key.
    lines: HashMap<String, usize>,
}

impl Doc {
    /// The line of the node at `pointer`, or of its nearest ancestor that has
    /// one.
    pub fn line_of(&self, pointer: &str) -> usize {
        let mut pointer = pointer;
        loop {
            if let Some(line) = self.lines.get(pointer) {
                return *line;
            }
            match pointer.rfind('/') {
                Some(cut) => pointer = &pointer[..cut],
                None => return self.line,
            }
        }
    }

    /// A document made in code (tests, templated objects): every node on
    /// `line`.
    pub fn at_line(value: Value, line: usize) -> Doc {
        Doc {
            value,
            line,
            lines: HashMap::new(),
        }
    }
}

/// Why a text is not YAML kdev can read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

/// Every document of `text`; empty documents (`---` alone, comments) are
/// left out.
pub fn load(text: &str) -> Result<Vec<Doc>, YamlError> {
    let nodes = MarkedYamlOwned::load_from_str(text).map_err(|e| YamlError {
        line: e.marker().line(),
        message: e.info().to_owned(),
    })?;
    let mut docs = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut lines = HashMap::new();
        let value = convert(&node, String::new(), &mut lines)?;
        if value.is_null() {
            continue;
        }
        docs.push(Doc {
            value,
            line: node.span.start.line(),
            lines,
        });
    }
    Ok(docs)
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub fn pointer_key(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn convert(
    node: &MarkedYamlOwned,
    pointer: String,
    lines: &mut HashMap<String, usize>,
) -> Result<Value, YamlError> {
    let line = node.span.start.line();
    let bad = |message: String| YamlError { line, message };
    let value = match &node.data {
        YamlDataOwned::Value(scalar) => scalar_value(scalar).map_err(bad)?,
        YamlDataOwned::Representation(text, ..) => Value::String(text.clone()),
        YamlDataOwned::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(convert(item, format!("{pointer}/{i}"), lines)?);
            }
            Value::Array(out)
        }
        YamlDataOwned::Mapping(entries) => {
            let mut out = Map::new();
            let mut merges = Vec::new();
            for (key_node, item) in entries {
                let key = match &key_node.data {
                    YamlDataOwned::Value(ScalarOwned::String(s)) => s.clone(),
                    YamlDataOwned::Value(ScalarOwned::Null) => "null".to_owned(),
                    YamlDataOwned::Value(scalar) => match scalar_value(scalar).map_err(bad)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    _ => {
                        return Err(YamlError {
                            line: key_node.span.start.line(),
                            message: "a mapping key must be a plain value, not a list or a map"
                                .to_owned(),
                        });
                    }
                };
                if key == "<<" {
                    // YAML 1.1's merge key (`<<: *base`), which Kubernetes
                    // manifests use: the base's entries, unless this map
                    // sets them itself.
                    merges.push(convert(item, pointer.clone(), &mut HashMap::new())?);
                    continue;
                }
                let child = format!("{pointer}/{}", pointer_key(&key));
                let value = convert(item, child.clone(), lines)?;
                // A person looks for the key, not where its value starts
                // (a nested map starts on the next line).
                lines.insert(child, key_node.span.start.line());
                out.insert(key, value);
            }
            for merged in merges {
                let bases = match merged {
                    Value::Array(list) => list,
                    other => vec![other],
                };
                for base in bases {
                    let Value::Object(base) = base else {
                        return Err(bad("`<<` merges a map or a list of maps".to_owned()));
                    };
                    for (k, v) in base {
                        out.entry(k).or_insert(v);
                    }
                }
            }
            Value::Object(out)
        }
        YamlDataOwned::Tagged(_, inner) => return convert(inner, pointer, lines),
        YamlDataOwned::Alias(_) => return Err(bad("an alias kdev could not resolve".to_owned())),
        YamlDataOwned::BadValue => return Err(bad("a value YAML cannot represent".to_owned())),
    };
    lines.insert(pointer, line);
    Ok(value)
}

fn scalar_value(scalar: &ScalarOwned) -> Result<Value, String> {
    Ok(match scalar {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(*b),
        ScalarOwned::Integer(i) => Value::Number((*i).into()),
        ScalarOwned::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a number JSON can hold"))?,
        ScalarOwned::String(s) => Value::String(s.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn documents_keep_their_lines() {
        let text = "# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  x: \"1\"\n---\n---\nkind: Pod\nspec:\n  containers:\n  - name: c\n    image: i\n";
        let docs = load(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["data"], json!({"x": "1"}));
        assert_eq!(docs[0].line_of("/metadata/name"), 5);
        assert_eq!(docs[0].line_of("/data/x"), 7);
        assert_eq!(docs[1].line_of("/spec/containers/0/image"), 14);
        // A pointer below a leaf falls back to the nearest node.
        assert_eq!(docs[1].line_of("/spec/containers/0/image/x"), 14);
    }

    #[test]
    fn values_are_yaml_1_2() {
        let docs = load("a: yes\nb: 010\nc: 1.5\nd: ~\ne: true\n1: one\n").unwrap();
        assert_eq!(
            docs[0].value,
            json!({"a": "yes", "b": 10, "c": 1.5, "d": null, "e": true, "1": "one"})
        );
    }

    #[test]
    fn aliases_are_expanded() {
        let docs = load("base: &b {x: 1}\ncopy: *b\n").unwrap();
        assert_eq!(docs[0].value["copy"], json!({"x": 1}));
    }

    #[test]
    fn merge_keys_merge() {
        let docs = load("base: &b {x: 1, y: 2}\ncopy:\n  <<: *b\n  y: 3\n").unwrap();
        assert_eq!(docs[0].value["copy"], json!({"x": 1, "y": 3}));
        assert!(load("a:\n  <<: 1\n").is_err());
    }

    #[test]
    fn mistakes_name_their_line() {
        let err = load("a: 1\nb:\n  - x\n  y: 2\n").unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        let err = load("a: 1\na: 2\n").unwrap_err();
        assert!(
            err.message.contains("duplicate") || err.message.contains("key"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn any_text_is_an_error_or_documents_never_a_panic(text in "\\PC{0,200}") {
            let _ = load(&text);
        }

        #[test]
        fn yaml_shaped_text_never_panics(text in "([a-z:{}\\[\\],&*!|>#'\"-]| |\n|  ){0,120}") {
            if let Ok(docs) = load(&text) {
                for doc in docs {
                    let _ = doc.line_of("/a/0/b");
                }
            }
        }
    }
}
