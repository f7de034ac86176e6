//! chainsaw's format: `chainsaw-test.yaml` holding `Test` resources
//! (`chainsaw.kyverno.io/v1alpha1`) with steps of `try`, `catch`,
//! `finally` and `cleanup` operations.
//!
//! Every field kdev runs is read here; every field of the format that kdev
//! does not run is rejected with its file and line (the README lists both).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::expr;
use super::kuttl::{self, wants_exact_lists};
use super::matching::Lists;
use super::model::{
    Binding, Check, Collect, Exec, Expect, Fields, Format, LoadError, Object, Op, OpKind, Program,
    Ref, Step, Target, Test, Timeouts, WaitFor, Write,
};
use super::yaml::{self, Doc};

const API: &str = "chainsaw.kyverno.io/v1alpha1";

/// The file names chainsaw looks for.
pub const TEST_FILES: [&str; 2] = ["chainsaw-test.yaml", "chainsaw-test.yml"];

/// Reads a chainsaw test file; `read` gives the text of files it refers to
/// (relative to the test's directory).
pub fn read_tests(
    file: &Path,
    text: &str,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Vec<Test>, LoadError> {
    let docs = yaml::load(text).map_err(|e| LoadError::new(file, e.line, e.message))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut tests = Vec::new();
    for doc in &docs {
        let reader = Reader {
            file,
            doc,
            dir,
            read,
            exact_lists: wants_exact_lists(text),
        };
        tests.push(reader.test()?);
    }
    if tests.is_empty() {
        return Err(LoadError::new(file, 1, "no Test in this file"));
    }
    Ok(tests)
}

struct Reader<'a> {
    file: &'a Path,
    doc: &'a Doc,
    dir: &'a Path,
    read: &'a dyn Fn(&Path) -> std::io::Result<String>,
    exact_lists: bool,
}

const OPERATIONS: [&str; 15] = [
    "apply", "assert", "command", "create", "delete", "describe", "error", "events", "get",
    "patch", "podLogs", "script", "sleep", "update", "wait",
];

impl<'a> Reader<'a> {
    fn fields(&self, pointer: &str, value: &'a Value, what: &str) -> Result<Fields<'a>, LoadError> {
        Fields::of(self.file, self.doc, pointer, value, what)
    }

    fn test(&self) -> Result<Test, LoadError> {
        let root = self.fields("", &self.doc.value, "a Test")?;
        let api = root.str("apiVersion")?;
        let kind = root.str("kind")?;
        if kind != Some("Test") || api != Some(API) {
            return Err(root.error(
                "apiVersion",
                format!(
                    "expected apiVersion {API} and kind Test (kdev reads chainsaw's v1alpha1 Test)"
                ),
            ));
        }
        root.only("Test", &["apiVersion", "kind", "metadata", "spec"], &[])?;
        let name = self.doc.value["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                self.dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "test".to_owned());
        let spec = self.fields("/spec", root.get("spec").unwrap_or(&Value::Null), "spec")?;
        spec.only(
            "spec",
            &[
                "description",
                "timeouts",
                "skip",
                "concurrent",
                "skipDelete",
                "namespace",
                "bindings",
                "steps",
                "catch",
                "template",
                // kdev never waits for a test's namespace to go before the
                // next test: the fast path is the only one.
                "fastNamespaceDeletion",
            ],
            &[
                "cluster",
                "clusters",
                "delayBeforeCleanup",
                "deletionPropagationPolicy",
                "failFast",
                "forceTerminationGracePeriod",
                "namespaceTemplate",
                "scenarios",
                "timeout",
            ],
        )?;
        let mut timeouts = Timeouts::chainsaw();
        self.timeouts(&spec, &mut timeouts)?;
        let test_catch = self.ops(&spec, "catch", "catch")?;
        let mut steps = Vec::new();
        for (i, item) in spec.list("steps")?.iter().enumerate() {
            let mut step = self.step(&format!("/spec/steps/{i}"), item, i)?;
            // A test-level catch runs for a failure in any step.
            step.catch.extend(test_catch.iter().cloned());
            steps.push(step);
        }
        if steps.is_empty() {
            return Err(spec.error("steps", "a Test needs at least one step"));
        }
        Ok(Test {
            name,
            dir: self.dir.to_owned(),
            source: root.here(),
            format: Format::Chainsaw,
            steps,
            bindings: self.bindings(&spec)?,
            namespace: spec.str("namespace")?.map(str::to_owned),
            skip_delete: spec.bool("skipDelete")?.unwrap_or(false),
            skip: spec.bool("skip")?.unwrap_or(false),
            concurrent: spec.bool("concurrent")?.unwrap_or(true),
            timeouts,
        })
    }

    fn timeouts(&self, f: &Fields<'_>, into: &mut Timeouts) -> Result<(), LoadError> {
        let Some(value) = f.get("timeouts") else {
            return Ok(());
        };
        let t = self.fields(&f.child("timeouts"), value, "timeouts")?;
        t.only(
            "timeouts",
            &["apply", "assert", "cleanup", "delete", "error", "exec"],
            &[],
        )?;
        for (key, slot) in [
            ("apply", &mut into.apply),
            ("assert", &mut into.assert),
            ("cleanup", &mut into.cleanup),
            ("delete", &mut into.delete),
            ("error", &mut into.error),
            ("exec", &mut into.exec),
        ] {
            if let Some(d) = t.duration(key)? {
                *slot = d;
            }
        }
        Ok(())
    }

    fn bindings(&self, f: &Fields<'_>) -> Result<Vec<Binding>, LoadError> {
        let mut out = Vec::new();
        for (i, item) in f.list("bindings")?.iter().enumerate() {
            let b = self.fields(&format!("{}/{i}", f.child("bindings")), item, "a binding")?;
            b.only("binding", &["name", "value"], &[])?;
            let Some(name) = b.str("name")? else {
                return Err(b.error("name", "a binding needs a name"));
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(b.error(
                    "name",
                    format!("binding name {name:?} must be letters, digits and _"),
                ));
            }
            let value = b.map.get("value").cloned().unwrap_or(Value::Null);
            self.check_expressions(&value, &b, "value")?;
            out.push(Binding {
                name: name.to_owned(),
                value,
                source: b.source("name"),
            });
        }
        Ok(out)
    }

    /// Every `(expression)` in keys and string values must compile, and no
    /// key may use what kdev does not run; an error names the line.
    fn check_expressions(&self, value: &Value, f: &Fields<'_>, key: &str) -> Result<(), LoadError> {
        check_tree(f.file, f.doc, value, &f.child(key))
    }

    fn step(&self, pointer: &str, value: &'a Value, index: usize) -> Result<Step, LoadError> {
        let f = self.fields(pointer, value, "a step")?;
        f.only(
            "step",
            &[
                "name",
                "description",
                "bindings",
                "try",
                "catch",
                "finally",
                "cleanup",
                "timeouts",
                "template",
                "skipDelete",
            ],
            &["use", "cluster", "clusters", "deletionPropagationPolicy"],
        )?;
        if f.get("timeouts").is_some() {
            return Err(f.error("timeouts", "step-level `timeouts` are not supported by kdev test; set them on the Test or on an operation"));
        }
        let try_ = self.ops(&f, "try", "try")?;
        if try_.is_empty() {
            return Err(f.error(
                "try",
                "a step needs a `try` list with at least one operation",
            ));
        }
        Ok(Step {
            name: f
                .str("name")?
                .map(str::to_owned)
                .unwrap_or_else(|| format!("step-{}", index + 1)),
            source: f.here(),
            bindings: self.bindings(&f)?,
            try_,
            catch: self.ops(&f, "catch", "catch")?,
            finally: self.ops(&f, "finally", "finally")?,
            cleanup: self.ops(&f, "cleanup", "cleanup")?,
        })
    }

    fn ops(&self, f: &Fields<'_>, key: &str, block: &str) -> Result<Vec<Op>, LoadError> {
        f.list(key)?
            .iter()
            .enumerate()
            .map(|(i, item)| self.op(&format!("{}/{i}", f.child(key)), item, block))
            .collect()
    }

    fn op(&self, pointer: &str, value: &'a Value, block: &str) -> Result<Op, LoadError> {
        let f = self.fields(pointer, value, "an operation")?;
        let present: Vec<&str> = f
            .map
            .keys()
            .map(String::as_str)
            .filter(|k| OPERATIONS.contains(k) || *k == "proxy")
            .collect();
        for key in f.map.keys() {
            if !OPERATIONS.contains(&key.as_str())
                && !["description", "continueOnError", "name"].contains(&key.as_str())
            {
                let message = if key == "proxy" {
                    "`proxy` is not supported by kdev test (see the README's list)".to_owned()
                } else {
                    format!(
                        "unknown operation `{key}` (known: {})",
                        OPERATIONS.join(", ")
                    )
                };
                return Err(f.error(key, message));
            }
        }
        let [kind] = present[..] else {
            return Err(LoadError::new(
                self.file,
                self.doc.line_of(pointer),
                format!(
                    "an operation has exactly one of {} (found {})",
                    OPERATIONS.join(", "),
                    present.len()
                ),
            ));
        };
        let body_pointer = f.child(kind);
        let body_value = f.get(kind).unwrap_or(&Value::Null);
        let body = if kind == "sleep" || body_value.is_object() {
            self.fields(&body_pointer, body_value, kind)?
        } else {
            return Err(f.error(kind, format!("`{kind}` must be a map")));
        };
        let collectors_only = ["catch", "finally", "cleanup"].contains(&block);
        if ["describe", "events", "get", "podLogs"].contains(&kind) && !collectors_only {
            return Err(f.error(
                kind,
                format!("`{kind}` collects for a report; it belongs in catch or finally"),
            ));
        }
        let mut timeout = None;
        let what = match kind {
            "apply" | "create" | "update" | "patch" => {
                body.only(
                    kind,
                    &[
                        "file",
                        "resource",
                        "template",
                        "bindings",
                        "expect",
                        "timeout",
                        "description",
                    ],
                    &["outputs", "cluster", "clusters", "dryRun", "subresource"],
                )?;
                timeout = body.duration("timeout")?;
                let how = match kind {
                    "apply" => Write::Apply,
                    "create" => Write::Create,
                    "update" => Write::Update,
                    _ => Write::Patch,
                };
                OpKind::Write {
                    objects: self.objects(&body, false)?,
                    how,
                    expect: self.expect(&body)?,
                }
            }
            "assert" | "error" => {
                body.only(
                    kind,
                    &[
                        "file",
                        "resource",
                        "template",
                        "bindings",
                        "timeout",
                        "description",
                    ],
                    &["cluster", "clusters"],
                )?;
                timeout = body.duration("timeout")?;
                let objects = self.objects(&body, true)?;
                let mut check = Check {
                    lists: if self.exact_lists {
                        Lists::Exact
                    } else {
                        Lists::Subset
                    },
                    ..Check::default()
                };
                if kind == "assert" {
                    check.present = objects;
                } else {
                    check.absent = objects;
                }
                OpKind::Check(check)
            }
            "delete" => {
                body.only(
                    kind,
                    &[
                        "ref",
                        "file",
                        "resource",
                        "template",
                        "bindings",
                        "expect",
                        "timeout",
                        "description",
                    ],
                    &["cluster", "clusters", "deletionPropagationPolicy"],
                )?;
                timeout = body.duration("timeout")?;
                if body.get("expect").is_some() {
                    return Err(
                        body.error("expect", "`expect` on delete is not supported by kdev test")
                    );
                }
                let targets = match body.get("ref") {
                    Some(r) => vec![Target::Ref(self.reference(&body.child("ref"), r, true)?)],
                    None => self
                        .objects(&body, false)?
                        .into_iter()
                        .map(Target::Object)
                        .collect(),
                };
                OpKind::Delete(targets)
            }
            "wait" => {
                body.only(
                    kind,
                    &[
                        "apiVersion",
                        "kind",
                        "name",
                        "namespace",
                        "selector",
                        "for",
                        "timeout",
                        "description",
                        "format",
                    ],
                    &["cluster", "clusters", "allNamespaces"],
                )?;
                timeout = body.duration("timeout")?;
                let target = self.reference(&body_pointer, body_value, false)?;
                let Some(until) = body.get("for") else {
                    return Err(body.error(
                        "for",
                        "`wait` needs `for` (condition, deletion or jsonPath)",
                    ));
                };
                OpKind::Wait {
                    target,
                    until: self.wait_for(&body.child("for"), until)?,
                }
            }
            "command" | "script" => {
                body.only(
                    kind,
                    &[
                        "entrypoint",
                        "args",
                        "content",
                        "env",
                        "check",
                        "skipLogOutput",
                        // kdev prints no command line to skip.
                        "skipCommandOutput",
                        "timeout",
                        "description",
                        "bindings",
                    ],
                    &[
                        "outputs",
                        "cluster",
                        "clusters",
                        "shell",
                        "shellArgs",
                        "workDir",
                    ],
                )?;
                timeout = body.duration("timeout")?;
                let program = if kind == "command" {
                    let Some(entrypoint) = body.str("entrypoint")? else {
                        return Err(body.error("entrypoint", "`command` needs an `entrypoint`"));
                    };
                    let mut args = Vec::new();
                    for (i, a) in body.list("args")?.iter().enumerate() {
                        match a {
                            Value::String(s) => args.push(s.clone()),
                            Value::Number(_) | Value::Bool(_) => args.push(a.to_string()),
                            _ => {
                                return Err(LoadError::new(
                                    self.file,
                                    self.doc.line_of(&format!("{}/{i}", body.child("args"))),
                                    "an argument must be a string",
                                ));
                            }
                        }
                    }
                    Program::Command {
                        program: entrypoint.to_owned(),
                        args,
                    }
                } else {
                    let Some(content) = body.str("content")? else {
                        return Err(body.error("content", "`script` needs `content`"));
                    };
                    Program::Script(content.to_owned())
                };
                let mut env = Vec::new();
                for b in self.bindings_named(&body, "env")? {
                    env.push((b.name, b.value));
                }
                let check = body.get("check").cloned();
                if let Some(c) = &check {
                    self.check_expressions(c, &body, "check")?;
                }
                OpKind::Exec(Exec {
                    program,
                    env,
                    check,
                    namespaced: false,
                    skip_log_output: body.bool("skipLogOutput")?.unwrap_or(false),
                    background: false,
                    ignore_failure: false,
                })
            }
            "sleep" => {
                body.only(kind, &["duration", "description"], &[])?;
                let Some(d) = body.duration("duration")? else {
                    return Err(f.error("sleep", "`sleep` needs a `duration`"));
                };
                OpKind::Sleep(d)
            }
            "events" => {
                body.only(
                    kind,
                    &[
                        "namespace",
                        "name",
                        "selector",
                        "format",
                        "description",
                        "timeout",
                    ],
                    &["cluster", "clusters"],
                )?;
                OpKind::Collect(Collect::Events)
            }
            "podLogs" => {
                body.only(
                    kind,
                    &[
                        "namespace",
                        "name",
                        "selector",
                        "container",
                        "tail",
                        "description",
                        "timeout",
                    ],
                    &["cluster", "clusters"],
                )?;
                OpKind::Collect(Collect::PodLogs {
                    selector: body.str("selector")?.map(str::to_owned),
                    name: body.str("name")?.map(str::to_owned),
                })
            }
            // describe | get
            _ => {
                body.only(
                    kind,
                    &[
                        "apiVersion",
                        "kind",
                        "name",
                        "namespace",
                        "selector",
                        "format",
                        "description",
                        "timeout",
                        "showEvents",
                    ],
                    &["cluster", "clusters"],
                )?;
                OpKind::Collect(Collect::Get(self.reference(
                    &body_pointer,
                    body_value,
                    false,
                )?))
            }
        };
        let bindings = match body.get("bindings") {
            Some(_) => self.bindings(&body)?,
            None => Vec::new(),
        };
        Ok(Op {
            source: f.source(kind),
            what,
            timeout,
            continue_on_error: f.bool("continueOnError")?.unwrap_or(false),
            bindings,
        })
    }

    /// chainsaw's `env` list: like bindings, `{name, value}`.
    fn bindings_named(&self, f: &Fields<'_>, key: &str) -> Result<Vec<Binding>, LoadError> {
        let mut out = Vec::new();
        for (i, item) in f.list(key)?.iter().enumerate() {
            let b = self.fields(&format!("{}/{i}", f.child(key)), item, "an env entry")?;
            b.only("env", &["name", "value"], &[])?;
            let Some(name) = b.str("name")? else {
                return Err(b.error("name", "an env entry needs a name"));
            };
            let value = b.map.get("value").cloned().unwrap_or(Value::Null);
            self.check_expressions(&value, &b, "value")?;
            out.push(Binding {
                name: name.to_owned(),
                value,
                source: b.source("name"),
            });
        }
        Ok(out)
    }

    /// `file` (one or more documents) or `resource` (one inline object).
    fn objects(&self, f: &Fields<'_>, trees: bool) -> Result<Vec<Object>, LoadError> {
        if f.bool("template")? == Some(false) {
            return Err(f.error(
                "template",
                "`template: false` is not supported by kdev test: expressions are always evaluated",
            ));
        }
        let objects = match (f.str("file")?, f.get("resource")) {
            (Some(path), None) => {
                if path.contains("://") || path.contains('*') {
                    return Err(f.error(
                        "file",
                        "URLs and globs in `file` are not supported by kdev test; name one file",
                    ));
                }
                let full = self.dir.join(path);
                let text = (self.read)(&full)
                    .map_err(|e| f.error("file", format!("cannot read {}: {e}", full.display())))?;
                let docs =
                    yaml::load(&text).map_err(|e| LoadError::new(&full, e.line, e.message))?;
                if docs.is_empty() {
                    return Err(f.error("file", format!("{} holds no object", full.display())));
                }
                let mut out = Vec::new();
                for doc in &docs {
                    check_tree(&full, doc, &doc.value, "")?;
                    out.extend(kuttl::objects(&full, doc, trees)?);
                }
                out
            }
            (None, Some(resource)) => {
                let pointer = f.child("resource");
                check_tree(self.file, self.doc, resource, &pointer)?;
                let doc = Doc::at_line(resource.clone(), self.doc.line_of(&pointer));
                kuttl::objects(self.file, &doc, trees)?
            }
            _ => {
                return Err(f.error(
                    "file",
                    "exactly one of `file` and `resource` names the objects",
                ));
            }
        };
        Ok(objects)
    }

    fn expect(&self, f: &Fields<'_>) -> Result<Vec<Expect>, LoadError> {
        let mut out = Vec::new();
        for (i, item) in f.list("expect")?.iter().enumerate() {
            let e = self.fields(
                &format!("{}/{i}", f.child("expect")),
                item,
                "an expectation",
            )?;
            e.only("expect", &["match", "check"], &[])?;
            let Some(check) = e.get("check") else {
                return Err(e.error("check", "an expectation needs `check`"));
            };
            self.check_expressions(check, &e, "check")?;
            out.push(Expect {
                match_: e.get("match").cloned(),
                check: check.clone(),
            });
        }
        Ok(out)
    }

    /// A `ref` or a wait/get target: apiVersion, kind, name or selector.
    fn reference(&self, pointer: &str, value: &'a Value, only_ref: bool) -> Result<Ref, LoadError> {
        let f = self.fields(pointer, value, "a reference")?;
        if only_ref {
            f.only(
                "ref",
                &["apiVersion", "kind", "name", "namespace", "labels"],
                &[],
            )?;
        }
        let (Some(api_version), Some(kind)) = (f.str("apiVersion")?, f.str("kind")?) else {
            return Err(f.error("kind", "name the objects with apiVersion and kind"));
        };
        let selector = match (f.get("labels"), f.str("selector")?) {
            (Some(Value::Object(labels)), None) => Some(
                labels
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (Some(_), _) => return Err(f.error("labels", "`labels` must be a map")),
            (None, s) => s.map(str::to_owned),
        };
        Ok(Ref {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: f.str("name")?.map(str::to_owned),
            namespace: f.str("namespace")?.map(str::to_owned),
            selector,
        })
    }

    fn wait_for(&self, pointer: &str, value: &'a Value) -> Result<WaitFor, LoadError> {
        let f = self.fields(pointer, value, "`for`")?;
        f.only(
            "for",
            &["condition", "creation", "deletion", "jsonPath"],
            &[],
        )?;
        if f.map.len() != 1 {
            return Err(f.error(
                "condition",
                "`for` has exactly one of condition, creation, deletion, jsonPath",
            ));
        }
        if f.map.contains_key("deletion") {
            return Ok(WaitFor::Deletion);
        }
        if f.map.contains_key("creation") {
            return Ok(WaitFor::Creation);
        }
        if let Some(c) = f.get("condition") {
            let c = self.fields(&f.child("condition"), c, "condition")?;
            c.only("condition", &["name", "value"], &[])?;
            let Some(name) = c.str("name")? else {
                return Err(c.error("name", "a condition needs a name"));
            };
            return Ok(WaitFor::Condition {
                name: name.to_owned(),
                value: c.text("value")?.unwrap_or_else(|| "True".to_owned()),
            });
        }
        let Some(j) = f.get("jsonPath") else {
            return Err(f.error("jsonPath", "`jsonPath` must be a map"));
        };
        let j = self.fields(&f.child("jsonPath"), j, "jsonPath")?;
        j.only("jsonPath", &["path", "value"], &[])?;
        let (Some(path), Some(value)) = (j.str("path")?, j.text("value")?) else {
            return Err(j.error("path", "jsonPath needs `path` and `value`"));
        };
        if !simple_json_path(path) {
            return Err(j.error(
                "path",
                format!("{path:?}: kdev test reads JSONPaths of the form {{.a.b}} or .a.b"),
            ));
        }
        Ok(WaitFor::Field {
            path: path.to_owned(),
            value,
        })
    }
}

/// `{.status.phase}` or `.status.phase`.
pub fn simple_json_path(path: &str) -> bool {
    let inner = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    inner.starts_with('.')
        && inner[1..].split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        })
}

/// The fields of a simple JSONPath, in order.
pub fn json_path_fields(path: &str) -> Vec<&str> {
    let inner = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    inner.trim_start_matches('.').split('.').collect()
}

/// Every `(expression)` under `base` compiles, and no key uses chainsaw's
/// `~` (iterate) or `->` (bind) modifiers, which kdev does not run.
fn check_tree(file: &Path, doc: &Doc, value: &Value, base: &str) -> Result<(), LoadError> {
    let mut bad = None;
    walk_keys(value, base, &mut |key, pointer| {
        if bad.is_none() && (key.starts_with('~') || key.contains(")->")) {
            bad = Some(LoadError::new(
                file,
                doc.line_of(pointer),
                format!(
                    "{key}: chainsaw's `~` (iterate) and `->` (bind) modifiers are not supported by kdev test"
                ),
            ));
        }
    });
    walk_expressions(value, base, &mut |text, pointer| {
        if bad.is_none()
            && let Err(e) = expr::check(text)
        {
            bad = Some(LoadError::new(file, doc.line_of(pointer), e));
        }
    });
    bad.map_or(Ok(()), Err)
}

fn walk_keys(value: &Value, pointer: &str, each: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk_keys(v, &format!("{pointer}/{i}"), each);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let child = format!("{pointer}/{}", yaml::pointer_key(k));
                each(k, &child);
                walk_keys(v, &child, each);
            }
        }
        _ => {}
    }
}

/// Calls `each` with every `(expression)` in keys and string values, and
/// the JSON pointer where it is.
pub fn walk_expressions(value: &Value, pointer: &str, each: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::String(s) => {
            if let Some(e) = expr::expression(s) {
                each(e, pointer);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk_expressions(v, &format!("{pointer}/{i}"), each);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let child = format!("{pointer}/{}", yaml::pointer_key(k));
                if let Some(e) = expr::expression(k) {
                    each(e, &child);
                }
                walk_expressions(v, &child, each);
            }
        }
        _ => {}
    }
}

/// Default timeout of an operation kind.
pub fn default_timeout(op: &OpKind, t: &Timeouts) -> Duration {
    match op {
        OpKind::Write { .. } => t.apply,
        OpKind::Check(c) if c.present.is_empty() => t.error,
        OpKind::Check(_) => t.assert,
        OpKind::Delete(_) => t.delete,
        OpKind::Wait { .. } => t.assert,
        OpKind::Exec(_) => t.exec,
        OpKind::Sleep(d) => *d + Duration::from_secs(1),
        OpKind::Collect(_) => t.exec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn files(path: &Path) -> std::io::Result<String> {
        match path.to_str() {
            Some("t/cm.yaml") => Ok("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: ($namespace)\n".to_owned()),
            Some("t/bad.yaml") => Ok("apiVersion: v1\nkind: ConfigMap\ndata:\n  (length(x): x\n".to_owned()),
            Some("t/list.yaml") => Ok("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: Secret\n  metadata:\n    name: b\n".to_owned()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
        }
    }

    fn read(text: &str) -> Result<Vec<Test>, LoadError> {
        read_tests(&PathBuf::from("t/chainsaw-test.yaml"), text, &files)
    }

    const HEAD: &str =
        "apiVersion: chainsaw.kyverno.io/v1alpha1\nkind: Test\nmetadata:\n  name: basic\nspec:\n";

    #[test]
    fn a_test_with_every_operation() {
        let text = format!(
            "{HEAD}  timeouts:\n    assert: 10s\n  bindings:\n  - name: size\n    value: 3\n  steps:\n  - name: create\n    try:\n    - apply:\n        file: cm.yaml\n    - assert:\n        resource:\n          apiVersion: v1\n          kind: ConfigMap\n          metadata:\n            name: a\n    - error:\n        file: cm.yaml\n    - create:\n        file: cm.yaml\n        expect:\n        - check:\n            ($error != null): true\n    - patch:\n        file: cm.yaml\n    - update:\n        file: cm.yaml\n    - delete:\n        ref:\n          apiVersion: v1\n          kind: ConfigMap\n          name: a\n    - wait:\n        apiVersion: v1\n        kind: Pod\n        selector: app=x\n        for:\n          condition:\n            name: Ready\n    - script:\n        content: echo $NAMESPACE\n        check:\n          ($error): ~\n    - command:\n        entrypoint: kubectl\n        args: [get, pods]\n    - sleep:\n        duration: 1s\n    catch:\n    - events: {{}}\n    - podLogs:\n        selector: app=x\n    finally:\n    - describe:\n        apiVersion: v1\n        kind: Pod\n"
        );
        let tests = read(&text).unwrap();
        let t = &tests[0];
        assert_eq!(t.name, "basic");
        assert_eq!(t.timeouts.assert, Duration::from_secs(10));
        assert_eq!(t.bindings[0].name, "size");
        let names: Vec<_> = t.steps[0].try_.iter().map(|o| o.what.name()).collect();
        assert_eq!(
            names,
            [
                "apply", "assert", "error", "create", "patch", "update", "delete", "wait",
                "script", "command", "sleep"
            ]
        );
        assert_eq!(t.steps[0].catch.len(), 2);
        assert_eq!(t.steps[0].finally.len(), 1);
        assert_eq!(t.steps[0].try_[0].source.line, 14);
        let OpKind::Write { expect, .. } = &t.steps[0].try_[3].what else {
            panic!()
        };
        assert_eq!(expect.len(), 1);
    }

    #[test]
    fn mistakes_name_file_and_line() {
        let cases = [
            (
                format!("{HEAD}  steps:\n  - try:\n    - aply:\n        file: cm.yaml\n"),
                "chainsaw-test.yaml:8",
                "unknown operation `aply`",
            ),
            (
                format!(
                    "{HEAD}  steps:\n  - try:\n    - apply:\n        file: cm.yaml\n      assert:\n        file: cm.yaml\n"
                ),
                "chainsaw-test.yaml:8",
                "exactly one of",
            ),
            (
                format!("{HEAD}  steps:\n  - try:\n    - proxy: {{}}\n"),
                "chainsaw-test.yaml:8",
                "`proxy` is not supported",
            ),
            (
                format!("{HEAD}  steps:\n  - try:\n    - apply:\n        file: missing.yaml\n"),
                "chainsaw-test.yaml:9",
                "cannot read t/missing.yaml",
            ),
            (
                format!("{HEAD}  steps:\n  - try:\n    - apply:\n        file: bad.yaml\n"),
                "bad.yaml:4",
                "(length(x)",
            ),
            (
                format!(
                    "{HEAD}  steps:\n  - try:\n    - assert:\n        resource:\n          apiVersion: v1\n          kind: Pod\n          metadata:\n            name: (nope()\n"
                ),
                "chainsaw-test.yaml:13",
                "not a JMESPath",
            ),
            (
                format!(
                    "{HEAD}  steps:\n  - try:\n    - wait:\n        apiVersion: v1\n        kind: Pod\n        for:\n          jsonPath:\n            path: '{{.items[0]}}'\n            value: x\n"
                ),
                "chainsaw-test.yaml:13",
                "JSONPaths",
            ),
            (
                format!("{HEAD}  cluster: other\n  steps: []\n"),
                "chainsaw-test.yaml:6",
                "not supported",
            ),
            (
                format!("{HEAD}  steps: []\n"),
                "chainsaw-test.yaml:6",
                "at least one step",
            ),
            (
                format!("{HEAD}  steps:\n  - try:\n    - events: {{}}\n"),
                "chainsaw-test.yaml:8",
                "belongs in catch",
            ),
            (
                format!(
                    "{HEAD}  steps:\n  - try:\n    - assert:\n        resource:\n          apiVersion: v1\n          kind: Pod\n          spec:\n            ~.(containers):\n              name: a\n"
                ),
                "chainsaw-test.yaml:13",
                "`~` (iterate) and `->` (bind) modifiers are not supported",
            ),
            (
                format!(
                    "{HEAD}  steps:\n  - try:\n    - assert:\n        resource:\n          apiVersion: v1\n          kind: Pod\n          (metadata.name)->name: x\n"
                ),
                "chainsaw-test.yaml:12",
                "`->` (bind)",
            ),
            (
                "apiVersion: chainsaw.kyverno.io/v1alpha2\nkind: Test\n".to_owned(),
                "chainsaw-test.yaml:1",
                "v1alpha1",
            ),
            (
                format!(
                    "{HEAD}  steps:\n  - try:\n    - script:\n        content: x\n        check:\n          (foo(): 1\n"
                ),
                "chainsaw-test.yaml:11",
                "not a JMESPath",
            ),
        ];
        for (text, at, says) in cases {
            let err = read(&text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("t/{at}:")), "{at}: {err}");
            assert!(err.contains(says), "{says}: {err}");
        }
    }

    #[test]
    fn a_list_document_is_its_items_and_an_assertion_without_a_kind_is_kept() {
        let text = format!(
            "{HEAD}  steps:\n  - try:\n    - apply:\n        file: list.yaml\n    - assert:\n        resource:\n          ($x): 1\n    - wait:\n        apiVersion: v1\n        kind: Pod\n        name: p\n        for:\n          creation: {{}}\n"
        );
        let tests = read(&text).unwrap();
        let ops = &tests[0].steps[0].try_;
        let OpKind::Write { objects, .. } = &ops[0].what else {
            panic!("a write")
        };
        let kinds: Vec<_> = objects.iter().map(Object::kind).collect();
        assert_eq!(kinds, ["ConfigMap", "Secret"]);
        let OpKind::Check(check) = &ops[1].what else {
            panic!("an assert: {:?}", ops[1].what)
        };
        assert_eq!(check.present[0].value, serde_json::json!({"($x)": 1}));
        let OpKind::Wait { until, .. } = &ops[2].what else {
            panic!("a wait")
        };
        assert_eq!(*until, WaitFor::Creation);
        // A write still needs a kind.
        let text = format!(
            "{HEAD}  steps:\n  - try:\n    - apply:\n        resource:\n          metadata:\n            name: a\n"
        );
        assert!(read(&text).is_err());
    }

    #[test]
    fn json_paths() {
        assert!(simple_json_path("{.status.phase}"));
        assert!(simple_json_path(".status.readyReplicas"));
        assert!(!simple_json_path("{.items[0]}"));
        assert!(!simple_json_path("status"));
        assert_eq!(json_path_fields("{.status.phase}"), ["status", "phase"]);
    }

    proptest! {
        #[test]
        fn any_text_is_an_error_or_tests_never_a_panic(text in "\\PC{0,200}") {
            let _ = read(&text);
        }

        #[test]
        fn test_shaped_files_never_panic(
            op in "(apply|assert|error|delete|wait|script|command|sleep|events|podLogs|get|x)",
            body in "(\\{\\}|file: cm.yaml|resource: \\{\\}|duration: 1s|ref: \\{\\}|for: \\{\\}|content: x|entrypoint: x|1|- a)",
        ) {
            let text = format!("{HEAD}  steps:\n  - try:\n    - {op}:\n        {body}\n    catch:\n    - {op}:\n        {body}\n");
            let _ = read(&text);
        }
    }
}
