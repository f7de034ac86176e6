//! kuttl's format: a `kuttl-test.yaml` TestSuite and test directories of
//! numbered step files.
//!
//! A step `NN` is every `NN-*.yaml` of the directory: `NN-assert*.yaml`
//! holds what must exist, `NN-errors*.yaml` what must not, and every other
//! file objects to apply, plus at most one `TestStep` that adds `delete`,
//! `commands`, `kubectl`, `apply`/`assert`/`error` files and a `timeout`.
//! A step runs as kuttl runs it: delete, commands, apply, then the asserts
//! and errors, checked together until both hold or the timeout ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::matching::Lists;
use super::model::{
    Check, Exec, Fields, Format, LoadError, Object, Op, OpKind, Program, Ref, Source, Step, Target,
    Test, Timeouts, Write,
};
use super::yaml::{self, Doc};

const KUTTL_API: &str = "kuttl.dev/v1beta1";
/// kuttl's default timeout, seconds.
const DEFAULT_TIMEOUT: u64 = 30;

/// A `kuttl-test.yaml`.
#[derive(Debug, Clone)]
pub struct SuiteFile {
    pub file: PathBuf,
    pub test_dirs: Vec<PathBuf>,
    pub timeout: Duration,
    pub parallel: Option<usize>,
    pub skip_delete: bool,
    pub namespace: Option<String>,
    /// Commands run once before the tests.
    pub commands: Vec<Op>,
    /// Manifests applied before the tests (`crdDir`, then `manifestDirs`).
    pub manifest_dirs: Vec<PathBuf>,
}

impl SuiteFile {
    pub fn default_for(dir: &Path) -> SuiteFile {
        SuiteFile {
            file: dir.join("kuttl-test.yaml"),
            test_dirs: vec![dir.to_owned()],
            timeout: Duration::from_secs(DEFAULT_TIMEOUT),
            parallel: None,
            skip_delete: false,
            namespace: None,
            commands: Vec::new(),
            manifest_dirs: Vec::new(),
        }
    }
}

/// Reads a `kuttl-test.yaml`; relative paths are relative to its directory.
pub fn read_suite(file: &Path, text: &str) -> Result<SuiteFile, LoadError> {
    let docs = yaml::load(text).map_err(|e| LoadError::new(file, e.line, e.message))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut suite = SuiteFile::default_for(dir);
    suite.file = file.to_owned();
    let Some(doc) = docs.first() else {
        return Ok(suite);
    };
    if docs.len() > 1 {
        return Err(LoadError::new(
            file,
            docs[1].line,
            "a kuttl-test.yaml holds one TestSuite",
        ));
    }
    let f = Fields::of(file, doc, "", &doc.value, "the TestSuite")?;
    expect_kind(&f, "TestSuite")?;
    f.only(
        "TestSuite",
        &[
            "apiVersion",
            "kind",
            "metadata",
            "testDirs",
            "timeout",
            "parallel",
            "skipDelete",
            "namespace",
            "commands",
            "crdDir",
            "manifestDirs",
            "startKIND",
            "startControlPlane",
        ],
        &[
            "kindConfig",
            "kindContext",
            "kindNodeCache",
            "kindContainers",
            "artifactsDir",
            "reportFormat",
            "reportName",
            "reportGranularity",
            "suppress",
            "skipClusterDelete",
            "config",
            "fullName",
            "namespaceAnnotations",
            "namespaceLabels",
            "testFileTimeout",
        ],
    )?;
    for key in ["startKIND", "startControlPlane"] {
        if f.bool(key)? == Some(true) {
            return Err(f.error(
                key,
                format!("`{key}: true`: kdev test brings its own cluster; use --cluster local (or --cluster kind)"),
            ));
        }
    }
    let dirs = f.list("testDirs")?;
    if !dirs.is_empty() {
        suite.test_dirs = strings(&f, "testDirs", dirs)?
            .into_iter()
            .map(|d| tidy(&dir.join(d)))
            .collect();
    }
    if let Some(t) = f.duration("timeout")? {
        suite.timeout = t;
    }
    suite.parallel = match f.get("parallel") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| f.error("parallel", "`parallel` must be a whole number above 0"))?
                as usize,
        ),
    };
    suite.skip_delete = f.bool("skipDelete")?.unwrap_or(false);
    suite.namespace = f.str("namespace")?.map(str::to_owned);
    for (i, command) in f.list("commands")?.iter().enumerate() {
        suite
            .commands
            .push(read_command(file, doc, &format!("/commands/{i}"), command)?);
    }
    if let Some(crds) = f.str("crdDir")? {
        suite.manifest_dirs.push(tidy(&dir.join(crds)));
    }
    for d in strings(&f, "manifestDirs", f.list("manifestDirs")?)? {
        suite.manifest_dirs.push(tidy(&dir.join(d)));
    }
    Ok(suite)
}

/// What kind of file a step file is, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Apply,
    Assert,
    Errors,
}

/// `NN-name.yaml` → (NN, name, role); other names are not step files.
fn step_file(name: &str) -> Option<(u64, String, Role)> {
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))?;
    let (index, rest) = stem.split_once('-')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || index.len() > 9 {
        return None;
    }
    let index: u64 = index.parse().ok()?;
    let role = if rest == "assert" || rest.starts_with("assert-") {
        Role::Assert
    } else if rest == "errors" || rest.starts_with("errors-") {
        Role::Errors
    } else {
        Role::Apply
    };
    Some((index, rest.to_owned(), role))
}

/// Whether a directory holds kuttl step files.
pub fn is_test_dir(names: &[String]) -> bool {
    names.iter().any(|n| step_file(n).is_some())
}

/// Reads one kuttl test directory. `files` are its file names and texts.
pub fn read_test(
    dir: &Path,
    files: &[(String, String)],
    suite: &SuiteFile,
) -> Result<Test, LoadError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let mut by_index: BTreeMap<u64, Vec<(&str, &str, Role, String)>> = BTreeMap::new();
    for (file, text) in files {
        if let Some((index, step_name, role)) = step_file(file) {
            by_index
                .entry(index)
                .or_default()
                .push((file, text, role, step_name));
        }
    }
    let mut steps = Vec::new();
    for (index, mut parts) in by_index {
        parts.sort_by(|a, b| a.0.cmp(b.0));
        steps.push(read_step(dir, index, &parts, suite)?);
    }
    Ok(Test {
        name,
        dir: dir.to_owned(),
        source: Source {
            file: dir.to_owned(),
            line: 0,
        },
        format: Format::Kuttl,
        steps,
        bindings: Vec::new(),
        namespace: suite.namespace.clone(),
        skip_delete: suite.skip_delete,
        skip: false,
        concurrent: true,
        timeouts: Timeouts::uniform(suite.timeout),
    })
}

fn read_step(
    dir: &Path,
    index: u64,
    parts: &[(&str, &str, Role, String)],
    suite: &SuiteFile,
) -> Result<Step, LoadError> {
    let mut apply = Vec::new();
    let mut check = Check {
        lists: Lists::Subset,
        ..Check::default()
    };
    let mut exact_lists = false;
    let mut deletes = Vec::new();
    let mut commands = Vec::new();
    let mut timeout = None;
    let mut assert_timeout = None;
    let mut name = None;
    let mut first = None;
    for (file_name, text, role, step_name) in parts {
        let file = dir.join(file_name);
        exact_lists |= wants_exact_lists(text);
        let docs = yaml::load(text).map_err(|e| LoadError::new(&file, e.line, e.message))?;
        if *role == Role::Apply && name.is_none() {
            name = Some(step_name.clone());
        }
        first.get_or_insert_with(|| Source {
            file: file.clone(),
            line: 1,
        });
        for doc in &docs {
            let kind = doc.value["kind"].as_str().unwrap_or("");
            let api = doc.value["apiVersion"].as_str().unwrap_or("");
            if api == KUTTL_API && kind == "TestStep" {
                if *role != Role::Apply {
                    return Err(LoadError::new(
                        &file,
                        doc.line,
                        "a TestStep belongs in a step file, not an assert or errors file",
                    ));
                }
                let step = read_test_step(&file, doc, dir)?;
                timeout = step.timeout.or(timeout);
                deletes.extend(step.deletes);
                commands.extend(step.commands);
                apply.extend(step.apply);
                check.present.extend(step.assert);
                check.absent.extend(step.errors);
                continue;
            }
            if api == KUTTL_API && kind == "TestAssert" {
                if *role != Role::Assert {
                    return Err(LoadError::new(
                        &file,
                        doc.line,
                        "a TestAssert belongs in an assert file",
                    ));
                }
                let f = Fields::of(&file, doc, "", &doc.value, "the TestAssert")?;
                f.only(
                    "TestAssert",
                    &["apiVersion", "kind", "metadata", "timeout"],
                    &["collectors", "commands"],
                )?;
                assert_timeout = f.duration("timeout")?;
                continue;
            }
            if api == KUTTL_API {
                return Err(LoadError::new(
                    &file,
                    doc.line,
                    format!(
                        "unknown kuttl kind {kind:?} (kdev reads TestSuite, TestStep and TestAssert)"
                    ),
                ));
            }
            let found = objects(&file, doc, false)?;
            match role {
                Role::Apply => apply.extend(found),
                Role::Assert => check.present.extend(found),
                Role::Errors => check.absent.extend(found),
            }
        }
    }
    if exact_lists {
        check.lists = Lists::Exact;
    }
    let source = first.unwrap_or(Source {
        file: dir.to_owned(),
        line: 0,
    });
    // Each operation points at the file it came from.
    let file_of = |role: Role| {
        parts
            .iter()
            .find(|p| p.2 == role)
            .map(|p| Source {
                file: dir.join(p.0),
                line: 1,
            })
            .unwrap_or_else(|| source.clone())
    };
    let op = |what: OpKind, timeout: Option<Duration>, at: Source| Op {
        source: at,
        what,
        timeout,
        continue_on_error: false,
        bindings: Vec::new(),
    };
    let mut try_ = Vec::new();
    if !deletes.is_empty() {
        try_.push(op(OpKind::Delete(deletes), timeout, file_of(Role::Apply)));
    }
    try_.extend(commands);
    if !apply.is_empty() {
        let at = apply[0].source.clone();
        try_.push(op(
            OpKind::Write {
                objects: apply,
                how: Write::Apply,
                expect: Vec::new(),
            },
            timeout,
            at,
        ));
    }
    if !check.present.is_empty() || !check.absent.is_empty() {
        let at = check
            .present
            .first()
            .or(check.absent.first())
            .map(|o| o.source.clone())
            .unwrap_or_else(|| file_of(Role::Assert));
        try_.push(op(OpKind::Check(check), assert_timeout.or(timeout), at));
    }
    let _ = suite;
    Ok(Step {
        name: format!("{index:02}-{}", name.unwrap_or_else(|| "assert".to_owned())),
        source,
        bindings: Vec::new(),
        try_,
        catch: Vec::new(),
        finally: Vec::new(),
        cleanup: Vec::new(),
    })
}

/// kdev's opt-in to kuttl's list rule for one file: a comment line
/// `# kdev: lists=exact` (kuttl and chainsaw read it as a comment).
pub fn wants_exact_lists(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim().replace(' ', "") == "#kdev:lists=exact")
}

struct TestStep {
    timeout: Option<Duration>,
    deletes: Vec<Target>,
    commands: Vec<Op>,
    apply: Vec<Object>,
    assert: Vec<Object>,
    errors: Vec<Object>,
}

fn read_test_step(file: &Path, doc: &Doc, dir: &Path) -> Result<TestStep, LoadError> {
    let f = Fields::of(file, doc, "", &doc.value, "the TestStep")?;
    f.only(
        "TestStep",
        &[
            "apiVersion",
            "kind",
            "metadata",
            "index",
            "timeout",
            "delete",
            "commands",
            "kubectl",
            "apply",
            "assert",
            "error",
        ],
        &["unitTest"],
    )?;
    let mut step = TestStep {
        timeout: f.duration("timeout")?,
        deletes: Vec::new(),
        commands: Vec::new(),
        apply: Vec::new(),
        assert: Vec::new(),
        errors: Vec::new(),
    };
    for (i, item) in f.list("delete")?.iter().enumerate() {
        let r = Fields::of(file, doc, &format!("/delete/{i}"), item, "a delete entry")?;
        r.only(
            "delete",
            &["apiVersion", "kind", "name", "namespace", "labels"],
            &[],
        )?;
        let (Some(api_version), Some(kind)) = (r.str("apiVersion")?, r.str("kind")?) else {
            return Err(r.error("kind", "a delete entry needs apiVersion and kind"));
        };
        let selector = match r.get("labels") {
            None => None,
            Some(Value::Object(labels)) => Some(
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some(_) => return Err(r.error("labels", "`labels` must be a map")),
        };
        step.deletes.push(Target::Ref(Ref {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: r.str("name")?.map(str::to_owned),
            namespace: r.str("namespace")?.map(str::to_owned),
            selector,
        }));
    }
    for (i, command) in f.list("commands")?.iter().enumerate() {
        step.commands
            .push(read_command(file, doc, &format!("/commands/{i}"), command)?);
    }
    for (i, args) in f.list("kubectl")?.iter().enumerate() {
        let Some(args) = args.as_str() else {
            return Err(LoadError::new(
                file,
                doc.line_of(&format!("/kubectl/{i}")),
                "a kubectl entry is a string of arguments",
            ));
        };
        let args = shlex::split(args).ok_or_else(|| {
            LoadError::new(
                file,
                doc.line_of(&format!("/kubectl/{i}")),
                "unbalanced quotes",
            )
        })?;
        step.commands.push(Op {
            source: Source {
                file: file.to_owned(),
                line: doc.line_of(&format!("/kubectl/{i}")),
            },
            what: OpKind::Exec(Exec {
                program: Program::Command {
                    program: "kubectl".to_owned(),
                    args,
                },
                env: Vec::new(),
                check: None,
                namespaced: true,
                skip_log_output: false,
                background: false,
                ignore_failure: false,
            }),
            timeout: None,
            continue_on_error: false,
            bindings: Vec::new(),
        });
    }
    for (key, out) in [
        ("apply", &mut step.apply),
        ("assert", &mut step.assert),
        ("error", &mut step.errors),
    ] {
        for path in strings(&f, key, f.list(key)?)? {
            out.extend(objects_in_file(&dir.join(path), &f, key)?);
        }
    }
    Ok(step)
}

/// The objects of a file a TestStep names.
fn objects_in_file(path: &Path, f: &Fields<'_>, key: &str) -> Result<Vec<Object>, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| f.error(key, format!("cannot read {}: {e}", path.display())))?;
    let docs = yaml::load(&text).map_err(|e| LoadError::new(path, e.line, e.message))?;
    let mut out = Vec::new();
    for doc in &docs {
        out.extend(objects(path, doc, false)?);
    }
    Ok(out)
}

/// The objects of a document: itself, or a `v1` `List`'s items. With
/// `trees`, a document without apiVersion and kind is kept as it is
/// (chainsaw's assertion about bindings rather than an object).
pub fn objects(file: &Path, doc: &Doc, trees: bool) -> Result<Vec<Object>, LoadError> {
    if doc.value["kind"] == "List"
        && let Some(items) = doc.value["items"].as_array()
    {
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let line = doc.line_of(&format!("/items/{i}"));
                object(file, &Doc::at_line(item.clone(), line))
            })
            .collect();
    }
    let map = doc.value.as_object();
    if trees && map.is_some_and(|m| !m.contains_key("apiVersion") && !m.contains_key("kind")) {
        return Ok(vec![Object {
            value: doc.value.clone(),
            source: Source {
                file: file.to_owned(),
                line: doc.line,
            },
        }]);
    }
    object(file, doc).map(|o| vec![o])
}

/// A Kubernetes object from a document: apiVersion and kind are required.
pub fn object(file: &Path, doc: &Doc) -> Result<Object, LoadError> {
    let Some(map) = doc.value.as_object() else {
        return Err(LoadError::new(
            file,
            doc.line,
            "a document must be a Kubernetes object (a map)",
        ));
    };
    for key in ["apiVersion", "kind"] {
        if !map.get(key).is_some_and(Value::is_string) {
            return Err(LoadError::new(
                file,
                doc.line,
                format!("this object has no `{key}`; every object names its apiVersion and kind"),
            ));
        }
    }
    if let Some(metadata) = map.get("metadata")
        && !metadata.is_object()
    {
        return Err(LoadError::new(
            file,
            doc.line_of("/metadata"),
            "`metadata` must be a map",
        ));
    }
    Ok(Object {
        value: doc.value.clone(),
        source: Source {
            file: file.to_owned(),
            line: doc.line,
        },
    })
}

/// A kuttl TestCommand.
fn read_command(file: &Path, doc: &Doc, pointer: &str, value: &Value) -> Result<Op, LoadError> {
    let f = Fields::of(file, doc, pointer, value, "a command")?;
    f.only(
        "command",
        &[
            "command",
            "script",
            "namespaced",
            "ignoreFailure",
            "background",
            "skipLogOutput",
            "timeout",
        ],
        &[],
    )?;
    let program = match (f.str("command")?, f.str("script")?) {
        (Some(command), None) => {
            let words = shlex::split(command)
                .ok_or_else(|| f.error("command", "unbalanced quotes in the command"))?;
            let Some((program, args)) = words.split_first() else {
                return Err(f.error("command", "an empty command"));
            };
            Program::Command {
                program: program.clone(),
                args: args.to_vec(),
            }
        }
        (None, Some(script)) => Program::Script(script.to_owned()),
        _ => {
            return Err(LoadError::new(
                file,
                doc.line_of(pointer),
                "a command has exactly one of `command` and `script`",
            ));
        }
    };
    Ok(Op {
        source: f.here(),
        what: OpKind::Exec(Exec {
            program,
            env: Vec::new(),
            check: None,
            namespaced: f.bool("namespaced")?.unwrap_or(false),
            skip_log_output: f.bool("skipLogOutput")?.unwrap_or(false),
            background: f.bool("background")?.unwrap_or(false),
            ignore_failure: f.bool("ignoreFailure")?.unwrap_or(false),
        }),
        timeout: f.duration("timeout")?,
        continue_on_error: false,
        bindings: Vec::new(),
    })
}

/// `a/./b` → `a/b` (paths in messages read as written).
fn tidy(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

fn expect_kind(f: &Fields<'_>, kind: &str) -> Result<(), LoadError> {
    let api = f.str("apiVersion")?;
    let actual = f.str("kind")?;
    if api != Some(KUTTL_API) || actual != Some(kind) {
        return Err(f.error(
            "kind",
            format!("expected apiVersion {KUTTL_API} and kind {kind}"),
        ));
    }
    Ok(())
}

fn strings(f: &Fields<'_>, key: &str, items: &[Value]) -> Result<Vec<String>, LoadError> {
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| f.error(key, format!("`{key}` must be a list of strings")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    fn suite() -> SuiteFile {
        SuiteFile::default_for(Path::new("e2e"))
    }

    #[test]
    fn step_files_are_numbered() {
        assert_eq!(
            step_file("00-install.yaml"),
            Some((0, "install".into(), Role::Apply))
        );
        assert_eq!(
            step_file("01-assert.yaml"),
            Some((1, "assert".into(), Role::Assert))
        );
        assert_eq!(
            step_file("01-assert-pods.yml"),
            Some((1, "assert-pods".into(), Role::Assert))
        );
        assert_eq!(
            step_file("02-errors.yaml"),
            Some((2, "errors".into(), Role::Errors))
        );
        assert_eq!(step_file("README.md"), None);
        assert_eq!(step_file("kuttl-test.yaml"), None);
        assert_eq!(step_file("-x.yaml"), None);
    }

    #[test]
    fn a_test_reads_as_kuttl_runs_it() {
        let test = read_test(
            Path::new("e2e/basic"),
            &files(&[
                ("00-install.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"),
                ("00-assert.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"),
                (
                    "01-scale.yaml",
                    "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\ntimeout: 10\ncommands:\n- command: kubectl get cm\n  namespaced: true\ndelete:\n- apiVersion: v1\n  kind: ConfigMap\n  name: a\n",
                ),
                ("01-errors.yaml", "# kdev: lists=exact\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"),
                ("notes.txt", "ignored"),
            ]),
            &suite(),
        )
        .unwrap();
        assert_eq!(test.name, "basic");
        assert_eq!(test.steps.len(), 2);
        let names: Vec<_> = test.steps[0].try_.iter().map(|o| o.what.name()).collect();
        assert_eq!(names, ["apply", "assert"]);
        let names: Vec<_> = test.steps[1].try_.iter().map(|o| o.what.name()).collect();
        assert_eq!(names, ["delete", "command", "error"]);
        assert_eq!(test.steps[1].name, "01-scale");
        assert_eq!(test.steps[1].try_[2].timeout, Some(Duration::from_secs(10)));
        let OpKind::Check(check) = &test.steps[1].try_[2].what else {
            panic!("not a check")
        };
        assert_eq!(check.lists, Lists::Exact);
    }

    #[test]
    fn mistakes_name_file_and_line() {
        let cases = [
            (
                "00-a.yaml",
                "apiVersion: v1\nkind: ConfigMap\n---\nkind: Pod\n",
                "00-a.yaml:4",
                "no `apiVersion`",
            ),
            (
                "00-a.yaml",
                "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\ncomands: []\n",
                "00-a.yaml:3",
                "unknown field `comands`",
            ),
            (
                "00-a.yaml",
                "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\nunitTest: true\n",
                "00-a.yaml:3",
                "not supported",
            ),
            (
                "00-a.yaml",
                "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\ncommands:\n- command: a\n  script: b\n",
                "00-a.yaml:4",
                "exactly one",
            ),
            (
                "00-a.yaml",
                "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\ntimeout: soon\n",
                "00-a.yaml:3",
                "not a duration",
            ),
            ("00-a.yaml", "a: [\n", "00-a.yaml:", ""),
            (
                "00-assert.yaml",
                "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\n",
                "00-assert.yaml:1",
                "belongs in a step file",
            ),
            (
                "00-a.yaml",
                "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\n",
                "00-a.yaml:1",
                "unknown kuttl kind",
            ),
        ];
        for (name, text, at, says) in cases {
            let err = read_test(Path::new("t"), &files(&[(name, text)]), &suite()).unwrap_err();
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("t/{at}")), "{name}: {shown}");
            assert!(shown.contains(says), "{name}: {shown}");
        }
    }

    #[test]
    fn the_suite_file() {
        let s = read_suite(
            Path::new("x/kuttl-test.yaml"),
            "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\ntestDirs:\n- ./e2e\ntimeout: 60\nparallel: 4\ncrdDir: crds\ncommands:\n- script: echo hi\n",
        )
        .unwrap();
        assert_eq!(s.test_dirs, [PathBuf::from("x/e2e")]);
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.parallel, Some(4));
        assert_eq!(s.manifest_dirs, [PathBuf::from("x/crds")]);
        assert_eq!(s.commands.len(), 1);
        let err = read_suite(
            Path::new("k.yaml"),
            "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\nstartKIND: true\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("k.yaml:3") && err.to_string().contains("--cluster"),
            "{err}"
        );
        let err = read_suite(
            Path::new("k.yaml"),
            "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\nparallel: 0\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("k.yaml:3"), "{err}");
    }

    proptest! {
        #[test]
        fn any_step_file_is_an_error_or_a_test_never_a_panic(text in "\\PC{0,200}") {
            let _ = read_test(Path::new("t"), &files(&[("00-a.yaml", &text), ("00-assert.yaml", &text)]), &suite());
            let _ = read_suite(Path::new("k.yaml"), &text);
        }

        #[test]
        fn step_shaped_files_never_panic(
            kind in "(TestStep|TestAssert|ConfigMap|)",
            field in "(commands|delete|kubectl|apply|timeout|index|x)",
            value in "(\\[\\]|1|x|\\{\\}|- a|\\[1\\]|- command: a|- apiVersion: v1)",
        ) {
            let text = format!("apiVersion: kuttl.dev/v1beta1\nkind: {kind}\n{field}:\n  {value}\n");
            let _ = read_test(Path::new("t"), &files(&[("00-a.yaml", &text), ("00-assert.yaml", &text)]), &suite());
        }
    }
}
