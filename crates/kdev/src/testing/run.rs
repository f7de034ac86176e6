//! One test against the cluster: a fresh namespace, the steps in order
//! (each step's `try`, then `catch` if it failed, then `finally`), cleanup,
//! and on failure a report with every mismatch, the namespace's Events and
//! its pods' logs.
//!
//! *Expected flow*: create the namespace → bind `$namespace`, `$values`
//! and the test's bindings → steps → cleanup operations (last step first)
//! → hand the namespace to the runner, which deletes it without waiting.
//!
//! *Guarantees*: every wait is a watch ([`cluster::watch_until`]) with a
//! deadline; a failed operation names its file and line; nothing a test
//! created outside its namespace is left behind unless `--skip-delete`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt as _;

use super::chainsaw::{default_timeout, json_path_fields};
use super::cluster::{self, Cluster, Kind, Seen, Watched};
use super::diff;
use super::expr::{self, Bindings};
use super::matching::{Lists, Matcher};
use super::model::{
    Binding, Check, Collect, Exec, Format, Object, Op, OpKind, Program, Ref, Source, Target, Test,
    WaitFor,
};

/// How every test of a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep namespaces and objects for debugging.
    pub skip_delete: bool,
    /// How long a negative assertion must keep holding once it holds.
    pub errors_window: Duration,
    /// `$values`.
    pub values: Value,
    /// The kubeconfig commands and scripts get (`KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// Log lines per container in a failure report.
    pub log_tail: i64,
    /// Forces kuttl's list rule everywhere (`--lists exact`).
    pub lists: Option<Lists>,
    /// The PATH commands and scripts get (kdev's pinned kubectl first).
    pub path: Option<std::ffi::OsString>,
}

/// One failed operation.
#[derive(Debug, Clone)]
pub struct Failure {
    pub step: String,
    pub op: &'static str,
    pub at: Source,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {} ({} at {}): {}",
            self.step, self.op, self.at, self.message
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// How a test went.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    pub name: String,
    pub source: Source,
    pub format: Format,
    pub status: Status,
    pub duration: Duration,
    pub failures: Vec<Failure>,
    /// Events, logs and what collectors gathered (for a failure).
    pub report: String,
    pub namespace: String,
    /// What the runner deletes without waiting.
    pub teardown: Teardown,
}

/// What a test leaves for the runner to delete.
#[derive(Debug, Default)]
pub struct Teardown {
    pub namespace: Option<String>,
}

/// Something a test created that its namespace's deletion does not take
/// with it (cluster-scoped, elsewhere, or in a namespace it did not create).
struct Elsewhere {
    kind: Kind,
    namespace: Option<String>,
    name: String,
}

struct Ctx<'a> {
    cluster: &'a Cluster,
    options: &'a Options,
    test: &'a Test,
    namespace: String,
    /// Whether this run created the namespace (and so deletes it, and
    /// everything in it, at the end).
    own_namespace: bool,
    elsewhere: Vec<Elsewhere>,
    background: Vec<tokio::process::Child>,
    report: String,
    /// Whether a collector already put the Events / the logs in the report.
    has_events: bool,
    has_logs: bool,
}

/// Runs `test` to the end.
pub async fn run(cluster: &Cluster, options: &Options, test: &Test) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        id: test.id(),
        name: test.name.clone(),
        source: test.source.clone(),
        format: test.format,
        status: Status::Passed,
        duration: Duration::ZERO,
        failures: Vec::new(),
        report: String::new(),
        namespace: String::new(),
        teardown: Teardown::default(),
    };
    if test.skip {
        outcome.status = Status::Skipped;
        return outcome;
    }
    let (namespace, created) = match namespace(cluster, test).await {
        Ok(found) => found,
        Err(message) => {
            outcome.status = Status::Failed;
            outcome.failures.push(Failure {
                step: "setup".into(),
                op: "namespace",
                at: test.source.clone(),
                message,
            });
            outcome.duration = started.elapsed();
            return outcome;
        }
    };
    outcome.namespace = namespace.clone();
    let mut ctx = Ctx {
        cluster,
        options,
        test,
        namespace,
        own_namespace: created,
        elsewhere: Vec::new(),
        background: Vec::new(),
        report: String::new(),
        has_events: false,
        has_logs: false,
    };
    let mut bindings = Bindings::default()
        .with("namespace", Value::String(ctx.namespace.clone()))
        .with("values", options.values.clone());
    let mut cleanup: Vec<(&str, &Op)> = Vec::new();
    match bind(&ctx, &test.bindings, &mut bindings) {
        Err(f) => outcome.failures.push(Failure {
            step: "setup".into(),
            ..f
        }),
        Ok(()) => {
            for step in &test.steps {
                let mut scope = bindings.clone();
                if let Err(f) = bind(&ctx, &step.bindings, &mut scope) {
                    outcome.failures.push(Failure {
                        step: step.name.clone(),
                        ..f
                    });
                    break;
                }
                let failed_before = outcome.failures.len();
                for op in &step.try_ {
                    if let Err(f) = ctx.op(op, &scope).await {
                        let go_on = op.continue_on_error;
                        outcome.failures.push(Failure {
                            step: step.name.clone(),
                            ..f
                        });
                        if !go_on {
                            break;
                        }
                    }
                }
                let failed = outcome.failures.len() > failed_before;
                if failed {
                    for op in &step.catch {
                        ctx.collecting(op, &scope).await;
                    }
                }
                for op in &step.finally {
                    ctx.collecting(op, &scope).await;
                }
                cleanup.extend(step.cleanup.iter().map(|op| (step.name.as_str(), op)));
                if failed {
                    break;
                }
            }
        }
    }
    for (step, op) in cleanup.into_iter().rev() {
        if let Err(f) = ctx.op(op, &bindings).await {
            outcome.failures.push(Failure {
                step: format!("{step} (cleanup)"),
                ..f
            });
        }
    }
    for mut child in ctx.background.drain(..) {
        let _ = child.kill().await;
    }
    if !outcome.failures.is_empty() {
        outcome.status = Status::Failed;
        let namespace = ctx.namespace.clone();
        if !ctx.has_events {
            ctx.report.push_str(&events(cluster, &namespace).await);
        }
        let logs = if ctx.has_logs {
            String::new()
        } else {
            crate::logs::recent::recent(&cluster.kube, &namespace, None, None, options.log_tail)
                .await
        };
        if !logs.is_empty() {
            let _ = writeln!(
                ctx.report,
                "--- logs of the pods in {namespace} (last {} lines each)",
                options.log_tail
            );
            ctx.report.push_str(&logs);
        }
    }
    if !(options.skip_delete || test.skip_delete) {
        for e in ctx.elsewhere.drain(..) {
            let api = cluster.api(&e.kind, e.namespace.as_deref());
            let _ = cluster::delete(&api, Some(&e.name), None, &e.name, cluster).await;
        }
        if created {
            outcome.teardown.namespace = Some(ctx.namespace.clone());
        }
    }
    outcome.report = ctx.report;
    outcome.duration = started.elapsed();
    outcome
}

/// The test's namespace: its own fixed one, or a fresh one. Returns whether
/// this run created it (and so deletes it).
async fn namespace(cluster: &Cluster, test: &Test) -> Result<(String, bool), String> {
    let api: Api<Namespace> = Api::all(cluster.kube.client.clone());
    let fixed = test.namespace.clone();
    let name = fixed.clone().unwrap_or_else(|| fresh_name(&test.name));
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("kdev.dev/test".to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok((name, true)),
        Err(kube::Error::Api(s)) if s.code == 409 && fixed.is_some() => Ok((name, false)),
        Err(e) => Err(cluster.say(e, &format!("create namespace {name}"))),
    }
}

/// `kdev-test-<name>-<5 random>`, a valid DNS label.
fn fresh_name(test: &str) -> String {
    let mut base: String = test
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..5];
    if base.is_empty() {
        format!("kdev-test-{suffix}")
    } else {
        format!("kdev-test-{base}-{suffix}")
    }
}

/// Evaluates bindings in order, each seeing the ones before it.
fn bind(ctx: &Ctx<'_>, list: &[Binding], into: &mut Bindings) -> Result<(), Failure> {
    for b in list {
        let value = ctx.template(&b.value, into).map_err(|message| Failure {
            step: String::new(),
            op: "binding",
            at: b.source.clone(),
            message: format!("binding ${}: {message}", b.name),
        })?;
        into.push(&b.name, value);
    }
    Ok(())
}

impl Ctx<'_> {
    /// chainsaw evaluates `(expressions)` in what it writes; kuttl does not.
    fn template(&self, value: &Value, bindings: &Bindings) -> Result<Value, String> {
        if self.test.format == Format::Kuttl {
            return Ok(value.clone());
        }
        template(value, bindings)
    }

    fn matcher<'b>(&self, lists: Lists, bindings: &'b Bindings) -> Matcher<'b> {
        Matcher {
            lists: self.options.lists.unwrap_or(lists),
            bindings,
        }
    }

    /// A catch/finally operation: its failure goes into the report, not the
    /// test's result.
    async fn collecting(&mut self, op: &Op, bindings: &Bindings) {
        if let Err(f) = self.op(op, bindings).await {
            let _ = writeln!(
                self.report,
                "--- {} at {} failed: {}",
                op.what.name(),
                op.source,
                f.message
            );
        }
    }

    async fn op(&mut self, op: &Op, outer: &Bindings) -> Result<(), Failure> {
        let fail = |message: String| Failure {
            step: String::new(),
            op: op.what.name(),
            at: op.source.clone(),
            message,
        };
        let mut bindings = outer.clone();
        bind(self, &op.bindings, &mut bindings).map_err(|f| fail(f.message))?;
        let timeout = op
            .timeout
            .unwrap_or_else(|| default_timeout(&op.what, &self.test.timeouts));
        let result = match &op.what {
            OpKind::Write {
                objects,
                how,
                expect,
            } => {
                match tokio::time::timeout(timeout, self.write(objects, *how, expect, &bindings))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("did not finish within {}", secs(timeout))),
                }
            }
            OpKind::Check(check) => self.check(check, timeout, &bindings).await,
            OpKind::Delete(targets) => self.delete(targets, timeout, &bindings).await,
            OpKind::Wait { target, until } => self.wait(target, until, timeout, &bindings).await,
            OpKind::Exec(exec) => self.exec(exec, timeout, &bindings).await,
            OpKind::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            OpKind::Collect(what) => {
                self.collect(what, &bindings).await;
                Ok(())
            }
        };
        result.map_err(fail)
    }

    async fn write(
        &mut self,
        objects: &[Object],
        how: super::model::Write,
        expect: &[super::model::Expect],
        bindings: &Bindings,
    ) -> Result<(), String> {
        for object in objects {
            let mut value = self.template(&object.value, bindings)?;
            let (kind, namespace) = self.cluster.place(&mut value, &self.namespace).await?;
            let describe = object.describe();
            let api = self.cluster.api(&kind, namespace.as_deref());
            let result = cluster::write(&api, &value, how, &describe, self.cluster).await;
            if let Ok(cluster::Wrote::Created) = result
                && (!self.own_namespace || namespace.as_deref() != Some(self.namespace.as_str()))
                && let Some(name) = value["metadata"]["name"].as_str()
            {
                self.elsewhere.push(Elsewhere {
                    kind: kind.clone(),
                    namespace: namespace.clone(),
                    name: name.to_owned(),
                });
            }
            let error = result.as_ref().err().map(|r| r.message.clone());
            let applies: Vec<_> = expect
                .iter()
                .filter(|e| {
                    e.match_
                        .as_ref()
                        .is_none_or(|m| self.matcher(Lists::Subset, bindings).matches(m, &value))
                })
                .collect();
            if applies.is_empty() {
                result.map_err(|r| r.shown)?;
                continue;
            }
            let scope = bindings.with("error", error.map_or(Value::Null, Value::String));
            for e in applies {
                let m = self.matcher(Lists::Subset, &scope);
                let misses = m.mismatches(&e.check, &value);
                if !misses.is_empty() {
                    return Err(format!(
                        "{describe}: the expectation does not hold: {}",
                        list(&misses)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where to watch for `object`: its kind, namespace, name or labels.
    async fn scope(&self, object: &Value, bindings: &Bindings) -> Result<Watched, String> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind_name = object["kind"].as_str().unwrap_or_default();
        let kind = self.cluster.kind(api_version, kind_name).await?;
        let meta = &object["metadata"];
        let text = |v: &Value| -> Result<Option<String>, String> {
            match v.as_str() {
                Some(s) => match expr::expression(s) {
                    Some(e) => Ok(expr::eval(e, &empty(), bindings)?
                        .as_str()
                        .map(str::to_owned)),
                    None => Ok(Some(s.to_owned())),
                },
                None => Ok(None),
            }
        };
        let namespace = if kind.namespaced {
            Some(text(&meta["namespace"])?.unwrap_or_else(|| self.namespace.clone()))
        } else {
            None
        };
        let name = text(&meta["name"])?;
        let selector = match (&name, meta["labels"].as_object()) {
            (None, Some(labels)) => {
                let plain: Vec<String> = labels
                    .iter()
                    .filter_map(|(k, v)| {
                        let v = v.as_str()?;
                        (expr::expression(k).is_none() && expr::expression(v).is_none())
                            .then(|| format!("{k}={v}"))
                    })
                    .collect();
                (!plain.is_empty()).then(|| plain.join(","))
            }
            _ => None,
        };
        Ok(Watched {
            api_version: api_version.to_owned(),
            kind: kind_name.to_owned(),
            namespace,
            name,
            selector,
        })
    }

    async fn check(
        &mut self,
        check: &Check,
        timeout: Duration,
        bindings: &Bindings,
    ) -> Result<(), String> {
        // chainsaw's assertions about bindings rather than objects (no
        // apiVersion, no kind): judged once, nothing to watch.
        let m = self.matcher(check.lists, bindings);
        let tree = |o: &&Object| o.value.get("kind").is_none();
        for o in check.present.iter().filter(tree) {
            let misses = m.mismatches(&o.value, &empty());
            if !misses.is_empty() {
                return Err(format!(
                    "the assertion at {} does not hold: {}",
                    o.source,
                    list(&misses)
                ));
            }
        }
        for o in check.absent.iter().filter(tree) {
            if m.matches(&o.value, &empty()) {
                return Err(format!(
                    "the assertion at {} must not hold, and does",
                    o.source
                ));
            }
        }
        let mut scopes: Vec<Watched> = Vec::new();
        let mut place = |scope: Watched| match scopes.iter().position(|s| *s == scope) {
            Some(i) => i,
            None => {
                scopes.push(scope);
                scopes.len() - 1
            }
        };
        let mut present = Vec::new();
        for object in check.present.iter().filter(|o| !tree(o)) {
            present.push((place(self.scope(&object.value, bindings).await?), object));
        }
        let mut absent = Vec::new();
        for object in check.absent.iter().filter(|o| !tree(o)) {
            absent.push((place(self.scope(&object.value, bindings).await?), object));
        }
        if scopes.is_empty() {
            return Ok(());
        }
        let holds = |seen: &Seen| {
            let ok = present
                .iter()
                .all(|(i, o)| seen.objects[*i].values().any(|a| m.matches(&o.value, a)))
                && absent
                    .iter()
                    .all(|(i, o)| !seen.objects[*i].values().any(|a| m.matches(&o.value, a)));
            ok.then_some(())
        };
        let (done, seen) = cluster::watch_until(self.cluster, &scopes, timeout, holds).await?;
        if done.is_none() {
            return Err(self.explain(&present, &absent, &scopes, &seen, &m, timeout));
        }
        if absent.is_empty() || self.options.errors_window.is_zero() {
            return Ok(());
        }
        // A negative assertion must keep holding for its window: a
        // controller that creates the object a moment later is caught.
        let appears = |seen: &Seen| {
            absent.iter().find_map(|(i, o)| {
                seen.objects[*i]
                    .values()
                    .find(|a| m.matches(&o.value, a))
                    .map(|a| (o.describe(), a.clone()))
            })
        };
        let window = self.options.errors_window;
        let (found, _) = cluster::watch_until(self.cluster, &scopes, window, appears).await?;
        match found {
            None => Ok(()),
            Some((what, actual)) => Err(format!(
                "{what} must not exist, and one appeared within the {} errors window:\n{}",
                secs(window),
                indent(&diff::to_yaml(&stripped(actual)))
            )),
        }
    }

    /// Every unmet expectation with its diff.
    fn explain(
        &self,
        present: &[(usize, &Object)],
        absent: &[(usize, &Object)],
        scopes: &[Watched],
        seen: &Seen,
        m: &Matcher<'_>,
        timeout: Duration,
    ) -> String {
        let mut out = format!("not satisfied within {}:", secs(timeout));
        for (i, o) in present {
            let candidates = &seen.objects[*i];
            if candidates.values().any(|a| m.matches(&o.value, a)) {
                continue;
            }
            let scope = &scopes[*i];
            let place = scope
                .namespace
                .as_ref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default();
            let _ = write!(out, "\n\n{} (expected at {}):", o.describe(), o.source);
            let nearest = candidates
                .values()
                .min_by_key(|a| m.mismatches(&o.value, a).len());
            match nearest {
                None if scope.name.is_some() => {
                    let _ = write!(out, " not found{place}");
                }
                None => {
                    let _ = write!(out, " no {} exists{place}", scope.kind);
                }
                Some(actual) => {
                    if scope.name.is_none() {
                        let _ = write!(
                            out,
                            " none of {} {}{place} matches; the nearest is {}:",
                            candidates.len(),
                            scope.kind,
                            actual["metadata"]["name"].as_str().unwrap_or("?")
                        );
                    }
                    for miss in m.mismatches(&o.value, actual) {
                        let _ = write!(out, "\n  - {miss}");
                    }
                    let _ = write!(out, "\n{}", indent(&diff::render(m, &o.value, actual)));
                }
            }
        }
        for (i, o) in absent {
            if let Some(actual) = seen.objects[*i].values().find(|a| m.matches(&o.value, a)) {
                let _ = write!(
                    out,
                    "\n\n{} (at {}) must not exist, but this matches it:\n{}",
                    o.describe(),
                    o.source,
                    indent(&diff::to_yaml(&diff::project(m, &o.value, actual)))
                );
            }
        }
        out
    }

    async fn delete(
        &mut self,
        targets: &[Target],
        timeout: Duration,
        bindings: &Bindings,
    ) -> Result<(), String> {
        let mut scopes = Vec::new();
        for target in targets {
            let scope = match target {
                Target::Object(o) => {
                    let value = self.template(&o.value, bindings)?;
                    self.scope(&value, bindings).await?
                }
                Target::Ref(r) => self.ref_scope(r).await?,
            };
            let kind = self.cluster.kind(&scope.api_version, &scope.kind).await?;
            let api = self.cluster.api(&kind, scope.namespace.as_deref());
            let describe = format!("{}/{}", scope.kind, scope.name.as_deref().unwrap_or("*"));
            cluster::delete(
                &api,
                scope.name.as_deref(),
                scope.selector.as_deref(),
                &describe,
                self.cluster,
            )
            .await?;
            scopes.push(scope);
        }
        let gone = |seen: &Seen| seen.objects.iter().all(|o| o.is_empty()).then_some(());
        let (done, seen) = cluster::watch_until(self.cluster, &scopes, timeout, gone).await?;
        match done {
            Some(()) => Ok(()),
            None => Err(format!(
                "still there after {}: {}",
                secs(timeout),
                remaining(&seen)
            )),
        }
    }

    async fn ref_scope(&self, r: &Ref) -> Result<Watched, String> {
        let kind = self.cluster.kind(&r.api_version, &r.kind).await?;
        Ok(Watched {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: kind.namespaced.then(|| {
                r.namespace
                    .clone()
                    .unwrap_or_else(|| self.namespace.clone())
            }),
            name: r.name.clone(),
            selector: r.selector.clone(),
        })
    }

    async fn wait(
        &mut self,
        target: &Ref,
        until: &WaitFor,
        timeout: Duration,
        _: &Bindings,
    ) -> Result<(), String> {
        let scope = self.ref_scope(target).await?;
        let judge = |seen: &Seen| {
            let objects = &seen.objects[0];
            let ok = match until {
                WaitFor::Deletion => objects.is_empty(),
                WaitFor::Creation => !objects.is_empty(),
                WaitFor::Condition { name, value } => {
                    !objects.is_empty()
                        && objects.values().all(|o| {
                            o["status"]["conditions"].as_array().is_some_and(|cs| {
                                cs.iter().any(|c| {
                                    c["type"].as_str() == Some(name)
                                        && c["status"]
                                            .as_str()
                                            .is_some_and(|s| s.eq_ignore_ascii_case(value))
                                })
                            })
                        })
                }
                WaitFor::Field { path, value } => {
                    !objects.is_empty()
                        && objects.values().all(|o| {
                            let mut at = o;
                            for field in json_path_fields(path) {
                                at = &at[field];
                            }
                            match at {
                                Value::String(s) => s == value,
                                Value::Null => false,
                                other => {
                                    serde_json::from_str::<Value>(value).is_ok_and(|v| v == *other)
                                }
                            }
                        })
                }
            };
            ok.then_some(())
        };
        let (done, seen) =
            cluster::watch_until(self.cluster, std::slice::from_ref(&scope), timeout, judge)
                .await?;
        match done {
            Some(()) => Ok(()),
            None => Err(format!(
                "{}/{} did not reach {} within {}; seen: {}",
                scope.kind,
                scope.name.as_deref().unwrap_or("*"),
                match until {
                    WaitFor::Condition { name, value } => format!("condition {name}={value}"),
                    WaitFor::Deletion => "deletion".to_owned(),
                    WaitFor::Creation => "creation".to_owned(),
                    WaitFor::Field { path, value } => format!("{path}={value}"),
                },
                secs(timeout),
                remaining(&seen)
            )),
        }
    }

    async fn exec(
        &mut self,
        exec: &Exec,
        timeout: Duration,
        bindings: &Bindings,
    ) -> Result<(), String> {
        let env_ns = self.namespace.clone();
        let expand = |text: &str| -> String {
            // kuttl expands environment variables in a command (Go's
            // os.ExpandEnv); NAMESPACE is the test's.
            expand_env(text, &|name| match name {
                "NAMESPACE" => Some(env_ns.clone()),
                other => std::env::var(other).ok(),
            })
        };
        let mut command = match &exec.program {
            Program::Command { program, args } => {
                let mut args: Vec<String> = match self.test.format {
                    Format::Kuttl => args.iter().map(|a| expand(a)).collect(),
                    Format::Chainsaw => args
                        .iter()
                        .map(|a| {
                            self.template(&Value::String(a.clone()), bindings)
                                .map(|v| plain(&v))
                        })
                        .collect::<Result<_, _>>()?,
                };
                let program = match self.test.format {
                    Format::Kuttl => expand(program),
                    Format::Chainsaw => program.clone(),
                };
                if exec.namespaced && program == "kubectl" {
                    args.push("--namespace".into());
                    args.push(self.namespace.clone());
                }
                let mut c = tokio::process::Command::new(&program);
                c.args(&args);
                c
            }
            Program::Script(text) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(text);
                c
            }
        };
        command
            .current_dir(&self.test.dir)
            .env("NAMESPACE", &self.namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(k) = &self.options.kubeconfig {
            command.env("KUBECONFIG", k);
        }
        if let Some(path) = &self.options.path {
            command.env("PATH", path);
        }
        for (name, value) in &exec.env {
            let value = self.template(value, bindings)?;
            command.env(name, plain(&value));
        }
        let what = match &exec.program {
            Program::Command { program, .. } => program.clone(),
            Program::Script(_) => "script".to_owned(),
        };
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        if exec.background {
            self.background.push(child);
            return Ok(());
        }
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            let read_out = async {
                if let Some(o) = out.as_mut() {
                    let _ = o.read_to_end(&mut stdout).await;
                }
            };
            let read_err = async {
                if let Some(e) = err.as_mut() {
                    let _ = e.read_to_end(&mut stderr).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (status, stdout, stderr)
        };
        // A process still running at its timeout is killed (when `run` is
        // dropped), and that is its error, for a `check` to judge too.
        let (error, stdout, stderr) = match tokio::time::timeout(timeout, run).await {
            Err(_) => (
                Some(format!(
                    "{what} did not finish within {} (killed)",
                    secs(timeout)
                )),
                Vec::new(),
                Vec::new(),
            ),
            Ok((status, stdout, stderr)) => {
                let status = status.map_err(|e| format!("{what}: {e}"))?;
                let error = (!status.success()).then(|| match status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => "killed by a signal".to_owned(),
                });
                (error, stdout, stderr)
            }
        };
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        if !exec.skip_log_output && (!stdout.is_empty() || !stderr.is_empty()) {
            let _ = writeln!(self.report, "--- output of {what}:");
            self.report.push_str(&stdout);
            self.report.push_str(&stderr);
        }
        match &exec.check {
            None => match error {
                None => Ok(()),
                Some(e) if exec.ignore_failure => {
                    // As kuttl: the step goes on and can pass; the report
                    // of a later failure says it.
                    let _ = writeln!(self.report, "{what} failed ({e}); ignored (ignoreFailure)");
                    Ok(())
                }
                Some(e) => Err(format!(
                    "{what} failed ({e}):\n{}",
                    indent(&tail_lines(&format!("{stdout}{stderr}"), 20))
                )),
            },
            Some(check) => {
                let scope = bindings
                    .with("stdout", Value::String(stdout))
                    .with("stderr", Value::String(stderr))
                    .with("error", error.map_or(Value::Null, Value::String));
                let m = self.matcher(Lists::Subset, &scope);
                let misses = m.mismatches(check, &Value::Object(Map::new()));
                if misses.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{what}: the check does not hold: {}",
                        list(&misses)
                    ))
                }
            }
        }
    }

    async fn collect(&mut self, what: &Collect, _: &Bindings) {
        match what {
            Collect::Events => {
                self.has_events = true;
                let text = events(self.cluster, &self.namespace).await;
                self.report.push_str(&text);
            }
            Collect::PodLogs { selector, name } => {
                self.has_logs |= selector.is_none() && name.is_none();
                let logs = crate::logs::recent::recent(
                    &self.cluster.kube,
                    &self.namespace,
                    selector.as_deref(),
                    name.as_deref(),
                    self.options.log_tail,
                )
                .await;
                let _ = writeln!(self.report, "--- pod logs in {}", self.namespace);
                self.report.push_str(&logs);
            }
            Collect::Get(r) => {
                let _ = writeln!(
                    self.report,
                    "--- {} {}",
                    r.kind,
                    r.name.as_deref().unwrap_or("(all)")
                );
                match self.ref_scope(r).await {
                    Ok(scope) => {
                        let all = |_: &Seen| Some(());
                        if let Ok((_, seen)) = cluster::watch_until(
                            self.cluster,
                            &[scope],
                            Duration::from_secs(5),
                            all,
                        )
                        .await
                        {
                            for o in seen.objects.iter().flat_map(|m| m.values()) {
                                self.report.push_str(&diff::to_yaml(&stripped(o.clone())));
                                self.report.push_str("---\n");
                            }
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(self.report, "({e})");
                    }
                }
            }
        }
    }
}

/// The namespace's Events, oldest first, as kubectl shows them.
async fn events(cluster: &Cluster, namespace: &str) -> String {
    let api: Api<Event> = Api::namespaced(cluster.kube.client.clone(), namespace);
    let mut list = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return format!("--- events in {namespace}: cannot list them: {e}\n"),
    };
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_default()
    };
    list.sort_by_key(when);
    let mut out = format!("--- events in {namespace} ({})\n", list.len());
    for e in &list {
        let _ = writeln!(
            out,
            "{}  {}  {}  {}/{}  {}",
            when(e),
            e.type_.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            e.involved_object.kind.as_deref().unwrap_or(""),
            e.involved_object.name.as_deref().unwrap_or(""),
            e.message.as_deref().unwrap_or("").trim_end()
        );
    }
    out
}

/// Evaluates `(expressions)` in keys and string values.
pub fn template(value: &Value, bindings: &Bindings) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => match expr::expression(s) {
            Some(e) => expr::eval(e, &empty(), bindings)?,
            None => value.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| template(v, bindings))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match expr::expression(k) {
                    Some(e) => plain(&expr::eval(e, &empty(), bindings)?),
                    None => k.clone(),
                };
                out.insert(key, template(v, bindings)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// What a binding or a template's expression sees as `@`: an empty map
/// (JMESPath gives `null` for `[a, b]` over `null`, which would make
/// `join('-', [$namespace, 'x'])` fail).
fn empty() -> Value {
    Value::Object(Map::new())
}

/// A value as an environment variable or argument: strings bare, the rest
/// as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Go's `os.Expand`: `$NAME` and `${NAME}`; unknown names expand to "".
pub fn expand_env(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let name: String = if chars.peek() == Some(&'{') {
            chars.next();
            let mut name = String::new();
            let mut closed = false;
            for n in chars.by_ref() {
                if n == '}' {
                    closed = true;
                    break;
                }
                name.push(n);
            }
            if !closed {
                out.push_str("${");
                out.push_str(&name);
                continue;
            }
            name
        } else {
            let mut name = String::new();
            while let Some(n) = chars.peek() {
                if n.is_ascii_alphanumeric() || *n == '_' {
                    name.push(*n);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                out.push('$');
                continue;
            }
            name
        };
        out.push_str(&lookup(&name).unwrap_or_default());
    }
    out
}

fn stripped(mut value: Value) -> Value {
    diff::strip_noise(&mut value);
    value
}

fn remaining(seen: &Seen) -> String {
    let names: Vec<String> = seen
        .objects
        .iter()
        .flat_map(|m| m.values())
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or("?");
            match o["metadata"]["finalizers"].as_array() {
                Some(f) if !f.is_empty() => format!(
                    "{}/{name} (finalizers: {})",
                    o["kind"].as_str().unwrap_or(""),
                    f.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!("{}/{name}", o["kind"].as_str().unwrap_or("")),
            }
        })
        .collect();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

fn list(misses: &[super::matching::Mismatch]) -> String {
    misses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The last `n` lines of `text`.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| format!("{l}\n")).collect()
}

pub fn secs(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn env_expands_as_go_does() {
        let look = |n: &str| match n {
            "NAMESPACE" => Some("t-1".to_owned()),
            _ => None,
        };
        assert_eq!(
            expand_env("kubectl -n $NAMESPACE get ${NAMESPACE}x $NOPE.", &look),
            "kubectl -n t-1 get t-1x ."
        );
        assert_eq!(expand_env("cost $ 5 ${open", &look), "cost $ 5 ${open");
    }

    #[test]
    fn templates_evaluate_keys_and_values() {
        let b = Bindings::default().with("namespace", json!("t-1"));
        let out = template(&json!({"metadata": {"namespace": "($namespace)", "labels": {"($namespace)": "x"}}, "n": [1, "(`2`)"]}), &b).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"namespace": "t-1", "labels": {"t-1": "x"}}, "n": [1, 2]})
        );
    }

    #[test]
    fn fresh_names_are_dns_labels() {
        let n = fresh_name("My Test_with.odd/chars and a very long name that goes on and on");
        assert!(
            n.len() <= 63 && n.starts_with("kdev-test-my-test-with-odd-chars"),
            "{n}"
        );
        assert!(
            crate::k8s::validate_dns_label("namespace", &n).is_ok(),
            "{n}"
        );
        assert!(fresh_name("---").starts_with("kdev-test-"));
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\n", 5), "a\nb\n");
    }

    proptest! {
        #[test]
        fn any_text_expands_never_panics(text in "\\PC{0,40}") {
            let _ = expand_env(&text, &|_| Some("x".into()));
        }
    }
}
