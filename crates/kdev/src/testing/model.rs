//! What a test is, whichever format it was written in. The kuttl and
//! chainsaw readers both produce these; the runner only knows these.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::matching::Lists;
use super::yaml::Doc;

/// Where something was written: a file and a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// A file kdev cannot run, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct LoadError {
    pub at: Source,
    pub message: String,
}

impl LoadError {
    pub fn new(file: &Path, line: usize, message: impl Into<String>) -> LoadError {
        LoadError {
            at: Source {
                file: file.to_owned(),
                line,
            },
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Kuttl,
    Chainsaw,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Kuttl => "kuttl",
            Format::Chainsaw => "chainsaw",
        }
    }
}

/// One test: a fresh namespace, steps in order, cleanup.
#[derive(Debug, Clone)]
pub struct Test {
    pub name: String,
    /// The directory the test lives in (commands run there; files are
    /// relative to it).
    pub dir: PathBuf,
    pub source: Source,
    pub format: Format,
    pub steps: Vec<Step>,
    /// Test-level bindings (chainsaw `spec.bindings`), in order.
    pub bindings: Vec<Binding>,
    /// A namespace to use instead of a fresh one (chainsaw `spec.namespace`).
    pub namespace: Option<String>,
    pub skip_delete: bool,
    pub skip: bool,
    /// Whether it may run beside other tests (chainsaw `concurrent: false`).
    pub concurrent: bool,
    pub timeouts: Timeouts,
}

impl Test {
    /// A name unique within a run and stable between runs (`--rerun-failed`).
    pub fn id(&self) -> String {
        format!("{}#{}", self.dir.display(), self.name)
    }
}

/// How long each kind of operation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub apply: Duration,
    pub assert: Duration,
    pub error: Duration,
    pub delete: Duration,
    pub cleanup: Duration,
    pub exec: Duration,
}

impl Timeouts {
    /// kuttl's: one timeout (its suite's `timeout`, 30 s by default) for
    /// everything.
    pub fn uniform(timeout: Duration) -> Timeouts {
        Timeouts {
            apply: timeout,
            assert: timeout,
            error: timeout,
            delete: timeout,
            cleanup: timeout,
            exec: timeout,
        }
    }

    /// chainsaw's defaults.
    pub fn chainsaw() -> Timeouts {
        Timeouts {
            apply: Duration::from_secs(5),
            assert: Duration::from_secs(30),
            error: Duration::from_secs(30),
            delete: Duration::from_secs(15),
            cleanup: Duration::from_secs(30),
            exec: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub source: Source,
    pub bindings: Vec<Binding>,
    pub try_: Vec<Op>,
    /// Run when an operation of `try_` failed (collectors, mostly).
    pub catch: Vec<Op>,
    /// Run after `try_` whatever happened.
    pub finally: Vec<Op>,
    /// Run when the test ends, after every step, last step first.
    pub cleanup: Vec<Op>,
}

/// A name bound to a value or an expression, evaluated in order.
#[derive(Debug, Clone)]
pub struct Binding {
    pub name: String,
    pub value: Value,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub source: Source,
    pub what: OpKind,
    /// Overrides the test's timeout for this kind of operation.
    pub timeout: Option<Duration>,
    /// Failure is reported and fails the test, but the step goes on
    /// (chainsaw `continueOnError`).
    pub continue_on_error: bool,
    pub bindings: Vec<Binding>,
}

/// An object written in a test file.
#[derive(Debug, Clone)]
pub struct Object {
    pub value: Value,
    pub source: Source,
}

impl Object {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or("")
    }

    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.value["metadata"].as_object()
    }

    pub fn name(&self) -> Option<&str> {
        self.metadata()?.get("name")?.as_str()
    }

    /// `Kind/name` for messages.
    pub fn describe(&self) -> String {
        match self.name() {
            Some(name) => format!("{}/{name}", self.kind()),
            None => format!("{} (any name)", self.kind()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Create, or merge-patch what exists (kuttl's apply, chainsaw's apply).
    Apply,
    /// Create; an existing object is a failure.
    Create,
    /// Replace what exists; a missing object is a failure.
    Update,
    /// Merge-patch what exists; a missing object is a failure.
    Patch,
}

/// chainsaw's `expect` on a write: when `match_` matches the object (or is
/// absent), `check` is matched against it with `$error` bound (the write's
/// error message, or null) instead of failing on an error.
#[derive(Debug, Clone)]
pub struct Expect {
    pub match_: Option<Value>,
    pub check: Value,
}

/// What must (or must not) exist, matched with [`super::matching`].
#[derive(Debug, Clone, Default)]
pub struct Check {
    pub present: Vec<Object>,
    pub absent: Vec<Object>,
    pub lists: Lists,
}

/// What a `delete` names.
#[derive(Debug, Clone)]
pub enum Target {
    Object(Object),
    Ref(Ref),
}

/// An object or a set of objects by kind (chainsaw `ref`, kuttl `delete`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ref {
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// A label selector (`a=b,c`).
    pub selector: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WaitFor {
    /// `condition: {name, value}`: the status condition `name` has `value`
    /// (default "True").
    Condition {
        name: String,
        value: String,
    },
    Deletion,
    /// At least one object exists.
    Creation,
    /// `jsonPath: {path, value}`: the field at a kubectl JSONPath (simple
    /// dotted form) has `value`.
    Field {
        path: String,
        value: String,
    },
}

/// A process to run.
#[derive(Debug, Clone)]
pub struct Exec {
    pub program: Program,
    pub env: Vec<(String, Value)>,
    /// chainsaw `check`: matched against `{}` with `$stdout`, `$stderr`,
    /// `$error` bound. Without one, a non-zero exit fails.
    pub check: Option<Value>,
    /// kuttl `namespaced`: `--namespace` is added to a kubectl command.
    pub namespaced: bool,
    pub skip_log_output: bool,
    /// kuttl `background`: started and left running until the test ends.
    pub background: bool,
    /// kuttl `ignoreFailure`: a command that ran and failed (an exit
    /// status, or killed at its timeout) is no failure; one that could
    /// not start still is, as in kuttl.
    pub ignore_failure: bool,
}

/// The two ways a process is given.
#[derive(Debug, Clone)]
pub enum Program {
    /// A program and its arguments, no shell.
    Command { program: String, args: Vec<String> },
    /// Text for `sh -c`.
    Script(String),
}

/// What is gathered for the failure report (chainsaw catch/finally).
#[derive(Debug, Clone)]
pub enum Collect {
    Events,
    PodLogs {
        selector: Option<String>,
        name: Option<String>,
    },
    /// `get` / `describe`: the objects as YAML.
    Get(Ref),
}

#[derive(Debug, Clone)]
pub enum OpKind {
    Write {
        objects: Vec<Object>,
        how: Write,
        expect: Vec<Expect>,
    },
    Check(Check),
    Delete(Vec<Target>),
    Wait {
        target: Ref,
        until: WaitFor,
    },
    Exec(Exec),
    Sleep(Duration),
    Collect(Collect),
}

impl OpKind {
    /// A short name for reports ("apply", "assert", "script").
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Write { how, .. } => match how {
                Write::Apply => "apply",
                Write::Create => "create",
                Write::Update => "update",
                Write::Patch => "patch",
            },
            OpKind::Check(check) if check.present.is_empty() => "error",
            OpKind::Check(_) => "assert",
            OpKind::Delete(_) => "delete",
            OpKind::Wait { .. } => "wait",
            OpKind::Exec(exec) => match exec.program {
                Program::Command { .. } => "command",
                Program::Script(_) => "script",
            },
            OpKind::Sleep(_) => "sleep",
            OpKind::Collect(_) => "collect",
        }
    }
}

/// A map read field by field: types checked, unknown keys rejected, every
/// error naming the file and line.
pub struct Fields<'a> {
    pub file: &'a Path,
    pub doc: &'a Doc,
    pub pointer: String,
    pub map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn of(
        file: &'a Path,
        doc: &'a Doc,
        pointer: &str,
        value: &'a Value,
        what: &str,
    ) -> Result<Fields<'a>, LoadError> {
        match value.as_object() {
            Some(map) => Ok(Fields {
                file,
                doc,
                pointer: pointer.to_owned(),
                map,
            }),
            None => Err(LoadError::new(
                file,
                doc.line_of(pointer),
                format!("{what} must be a map"),
            )),
        }
    }

    pub fn line(&self, key: &str) -> usize {
        self.doc.line_of(&self.child(key))
    }

    pub fn child(&self, key: &str) -> String {
        format!("{}/{}", self.pointer, super::yaml::pointer_key(key))
    }

    pub fn source(&self, key: &str) -> Source {
        Source {
            file: self.file.to_owned(),
            line: self.line(key),
        }
    }

    pub fn here(&self) -> Source {
        Source {
            file: self.file.to_owned(),
            line: self.doc.line_of(&self.pointer),
        }
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> LoadError {
        LoadError::new(self.file, self.line(key), message)
    }

    /// Rejects keys outside `supported`, naming the first unknown one;
    /// `known_unsupported` are the format's keys kdev does not run, named as
    /// such.
    pub fn only(
        &self,
        what: &str,
        supported: &[&str],
        known_unsupported: &[&str],
    ) -> Result<(), LoadError> {
        for key in self.map.keys() {
            if supported.contains(&key.as_str()) {
                continue;
            }
            let message = if known_unsupported.contains(&key.as_str()) {
                format!("{what}: `{key}` is not supported by kdev test (see the README's list)")
            } else {
                format!(
                    "{what}: unknown field `{key}` (known: {})",
                    supported.join(", ")
                )
            };
            return Err(self.error(key, message));
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(key, format!("`{key}` must be a string"))),
        }
    }

    /// A string, or a number or boolean written without quotes.
    pub fn text(&self, key: &str) -> Result<Option<String>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(_) => Err(self.error(key, format!("`{key}` must be a string"))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(key, format!("`{key}` must be true or false"))),
        }
    }

    pub fn list(&self, key: &str) -> Result<&'a [Value], LoadError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.error(key, format!("`{key}` must be a list"))),
        }
    }

    /// A Go duration (`30s`, `1m30s`, `500ms`), or kuttl's bare seconds.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(secs) => Ok(Some(Duration::from_secs(secs))),
                None => Err(self.error(key, format!("`{key}` must be a whole number of seconds"))),
            },
            Some(Value::String(s)) => kdev_contract::duration::parse(s)
                .map(Some)
                .map_err(|e| self.error(key, format!("`{key}`: {e}"))),
            Some(_) => Err(self.error(key, format!("`{key}` must be a duration like 30s"))),
        }
    }
}
