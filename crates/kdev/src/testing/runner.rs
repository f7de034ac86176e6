//! A suite: read everything first; start its cluster (`--cluster`); set
//! up once, deploy or run the controller under test; run the tests in
//! parallel, deleting each namespace without waiting for it (and, with
//! `--wait-cleanup`, waiting for all of them together at the end to report
//! what is stuck); with `--watch`, run the tests a change touches again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use serde_json::json;

use super::cluster::{self, Cluster, Seen, Watched};
use super::model::{Format, Op, OpKind, Ref, Source, Step, Test, Timeouts, WaitFor, Write};
use super::report::{self, LastRun};
use super::run::{self, Outcome, Status};
use super::suite::{self, Suite};
use super::{prepare, target, watch};
use crate::error::usage;
use crate::{fswatch, k8s};

/// `kdev test`, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub dirs: Vec<PathBuf>,
    /// Tests at once; `None`: the suite's `parallel`, else the cores.
    pub parallel: Option<usize>,
    pub options: run::Options,
    pub junit: Option<PathBuf>,
    pub json: bool,
    pub rerun_failed: bool,
    /// The last run's results (`--rerun-failed` reads them).
    pub results: PathBuf,
    pub force_cleanup: bool,
    /// Wait at the end for the test namespaces to go (else they go in the
    /// background, and the next run reports any still there).
    pub wait_cleanup: bool,
    pub cleanup_timeout: Duration,
    /// `--run-controller -- CMD…`: a local process for the whole suite.
    pub run_controller: Vec<String>,
    /// `--cluster`: where the suite runs.
    pub cluster: target::Choice,
    /// `--keep-cluster`: a cluster started for the suite stays.
    pub keep_cluster: bool,
    /// `--apply-kustomize`, `--skaffold`.
    pub deploy: prepare::Deploy,
    /// `--watch`: run again when files change.
    pub watch: Option<Watching>,
    /// When finished tests' namespaces are deleted (never waited for).
    pub delete_namespaces: DeleteNamespaces,
}

/// `--delete-namespaces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteNamespaces {
    /// When the last test of the run has finished: the namespace
    /// controller's work (a list of every resource type per namespace)
    /// then does not compete with running tests for the cluster.
    AtEnd,
    /// As each test finishes, keeping the footprint of a long suite on a
    /// shared cluster small.
    PerTest,
}

/// `--watch [--watch-path P]… [--watch-ignore GLOB]…`.
#[derive(Debug, Clone, Default)]
pub struct Watching {
    /// Beyond the tests' own folders: paths whose change restarts the
    /// controller (`--run-controller`) and reruns every test.
    pub paths: Vec<PathBuf>,
    pub ignore: Vec<String>,
    pub debounce: Duration,
}

/// Reads the suite, or says exactly what is wrong (exit 2).
pub fn load(config: &Config) -> anyhow::Result<Suite> {
    let mut suite =
        suite::discover(&config.dirs).map_err(|e| usage(format!("{e}\nnothing was applied")))?;
    if config.rerun_failed {
        let last = LastRun::read(&config.results).map_err(usage)?;
        suite.tests.retain(|t| last.failed.contains(&t.id()));
    }
    Ok(suite)
}

pub async fn run(flags: &k8s::Flags, config: Config) -> anyhow::Result<ExitCode> {
    let suite = load(&config)?;
    if config.rerun_failed && suite.tests.is_empty() && config.watch.is_none() {
        eprintln!("kdev test: nothing failed in the last run");
        return Ok(ExitCode::SUCCESS);
    }
    if config.deploy.skaffold && crate::host::which("skaffold").is_none() {
        return Err(usage(
            "--skaffold runs `skaffold run`, and there is no skaffold on PATH; nothing was applied",
        ));
    }
    // The watch starts before the first run, so an edit made during it
    // is not missed.
    let watch = match &config.watch {
        None => None,
        Some(w) => {
            let mut ignore: Vec<String> = fswatch::DEFAULT_IGNORES
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            ignore.extend(w.ignore.iter().cloned());
            let roots: Vec<PathBuf> = config.dirs.iter().chain(&w.paths).cloned().collect();
            let watch = fswatch::Watch::new(&roots, &ignore, w.debounce).map_err(usage)?;
            let extra: Vec<PathBuf> = w.paths.iter().map(|p| watch::canonical(p)).collect();
            Some((watch, extra))
        }
    };
    let place = target::Place::start(&config.cluster, flags, config.keep_cluster).await?;
    // Ctrl-C ends the suite (and a --watch) at once; a cluster started for
    // it is still removed.
    let outcome = tokio::select! {
        outcome = on(&place.flags, &config, suite, watch) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("kdev test: interrupted");
            Ok(ExitCode::from(130))
        }
    };
    place.finish().await;
    outcome
}

/// The suite on one cluster: the setup, the controller, the tests; with
/// `--watch`, again for each change.
async fn on(
    flags: &k8s::Flags,
    config: &Config,
    suite: Suite,
    watch: Option<(fswatch::Watch, Vec<PathBuf>)>,
) -> anyhow::Result<ExitCode> {
    let kube = k8s::connect(flags).await?;
    let mut options = config.options.clone();
    if options.kubeconfig.is_none() {
        options.kubeconfig = flags.kubeconfig.clone();
    }
    let cluster = Arc::new(Cluster::new(kube));
    for line in left_before(&cluster, config.cleanup_timeout, config.force_cleanup).await {
        eprintln!("kdev test: from an earlier run: {line}");
    }
    setup(&cluster, &options, &suite).await?;
    prepare::deploy(&config.deploy, &cluster.kube, options.kubeconfig.as_deref()).await?;
    let mut controller = prepare::Controller::start(
        &config.run_controller,
        controller_log(&config.results),
        options.kubeconfig.clone(),
    )?;
    let parallel = config
        .parallel
        .or(suite.parallel)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let code = pass(
        &cluster,
        &options,
        config,
        &suite.tests,
        parallel,
        config.rerun_failed,
        controller.as_mut(),
    )
    .await?;
    if let Some((mut watch, extra)) = watch {
        let roots: Vec<String> = watch
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        eprintln!(
            "kdev test: watching {} for changes; Ctrl-C ends",
            roots.join(", ")
        );
        loop {
            let changed = watch.changed().await.map_err(anyhow::Error::msg)?;
            // Read again: the change may be to a test itself. A file that
            // no longer reads is said, and the next change tried.
            let reread = Config {
                rerun_failed: false,
                ..config.clone()
            };
            let suite = match load(&reread) {
                Ok(suite) => suite,
                Err(err) => {
                    eprintln!("kdev test: {err:#}\nkdev test: waiting for the next change");
                    continue;
                }
            };
            let tests: Vec<(String, PathBuf)> = suite
                .tests
                .iter()
                .map(|t| (t.id(), watch::canonical(&t.dir)))
                .collect();
            let rerun = watch::rerun(&tests, &extra, &changed);
            if rerun.is_empty() {
                continue;
            }
            eprintln!(
                "kdev test: changed: {}",
                changed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if rerun.restart
                && let Some(c) = controller.as_mut()
            {
                c.restart().await?;
            }
            if rerun.all
                && let Err(err) = setup(&cluster, &options, &suite).await
            {
                eprintln!("kdev test: {err:#}\nkdev test: waiting for the next change");
                continue;
            }
            let chosen: Vec<Test> = suite
                .tests
                .into_iter()
                .filter(|t| rerun.all || rerun.tests.contains(&t.id()))
                .collect();
            // Each run reports itself; a watch ends by Ctrl-C (exit 130).
            pass(
                &cluster,
                &options,
                config,
                &chosen,
                parallel,
                true,
                controller.as_mut(),
            )
            .await?;
        }
    }
    if let Some(c) = controller.as_mut() {
        c.stop().await;
    }
    Ok(code)
}

/// kuttl's suite setup (crdDir, manifestDirs, commands), when it has one.
async fn setup(
    cluster: &Arc<Cluster>,
    options: &run::Options,
    suite: &Suite,
) -> anyhow::Result<()> {
    if let Some(setup) = setup_test(suite, &cluster.kube.namespace) {
        let outcome = run::run(cluster, options, &setup).await;
        if outcome.status == Status::Failed {
            anyhow::bail!(
                "the suite's setup (kuttl crdDir, manifestDirs and commands) failed; no test ran:{}",
                report::failures(&[outcome])
            );
        }
    }
    Ok(())
}

/// One run of `tests`: in parallel, then the ones that run alone; reports,
/// the results file (`partial`: it only speaks for the tests it ran), and
/// the exit code.
async fn pass(
    cluster: &Arc<Cluster>,
    options: &run::Options,
    config: &Config,
    tests: &[Test],
    parallel: usize,
    partial: bool,
    controller: Option<&mut prepare::Controller>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (together, alone): (Vec<&Test>, Vec<&Test>) = tests.iter().partition(|t| t.concurrent);
    let mut deletions = Vec::new();
    let mut outcomes = Vec::new();
    let print = |o: &Outcome| {
        if config.json {
            eprintln!("{}", report::line(o));
        } else {
            println!("{}", report::line(o));
        }
    };
    {
        let mut running = futures::stream::iter(together.iter().map(|t| {
            let cluster = cluster.clone();
            async move { run::run(&cluster, options, t).await }
        }))
        .buffer_unordered(parallel);
        while let Some(o) = running.next().await {
            print(&o);
            if config.delete_namespaces == DeleteNamespaces::PerTest {
                deletions.extend(delete_namespace(cluster, &o));
            }
            outcomes.push(o);
        }
    }
    for t in &alone {
        let o = run::run(cluster, options, t).await;
        print(&o);
        if config.delete_namespaces == DeleteNamespaces::PerTest {
            deletions.extend(delete_namespace(cluster, &o));
        }
        outcomes.push(o);
    }
    if config.delete_namespaces == DeleteNamespaces::AtEnd {
        for o in &outcomes {
            deletions.extend(delete_namespace(cluster, o));
        }
    }
    if let Some(c) = controller {
        c.check();
    }
    let mut names = Vec::new();
    for (name, request) in deletions {
        // The DELETE is sent before kdev exits; the deletion itself goes on.
        let _ = request.await;
        names.push(name);
    }
    let stuck = if config.wait_cleanup {
        settle(cluster, names, config.cleanup_timeout, config.force_cleanup).await
    } else {
        match names.len() {
            0 => {}
            1 => eprintln!(
                "kdev test: 1 test namespace is being deleted in the background (--wait-cleanup waits for it)"
            ),
            n => eprintln!(
                "kdev test: {n} test namespaces are being deleted in the background (--wait-cleanup waits for them)"
            ),
        }
        Vec::new()
    };
    let wall = started.elapsed();
    let failures = report::failures(&outcomes);
    if config.json {
        eprint!("{failures}");
        println!("{}", report::json(&outcomes, wall));
    } else {
        print!("{failures}");
    }
    for line in &stuck {
        eprintln!("kdev test: {line}");
    }
    if let Some(path) = &config.junit {
        let xml = report::junit(&outcomes, wall).map_err(anyhow::Error::msg)?;
        std::fs::write(path, xml).map_err(|e| {
            anyhow::anyhow!("cannot write the JUnit report to {}: {e}", path.display())
        })?;
    }
    let mut last = LastRun::of(&outcomes);
    if partial {
        // A partial run only speaks for the tests it ran.
        if let Ok(before) = LastRun::read(&config.results) {
            for id in before.failed {
                if !last.passed.contains(&id) && !outcomes.iter().any(|o| o.id == id) {
                    last.failed.insert(id);
                }
            }
        }
    }
    if let Err(e) = last.write(&config.results) {
        eprintln!("kdev test: {e}");
    }
    let summary = report::summary(&outcomes, wall);
    if config.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    let failed = outcomes.iter().any(|o| o.status == Status::Failed);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where `--run-controller`'s output goes: beside the results file.
pub fn controller_log(results: &std::path::Path) -> PathBuf {
    results
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("test-controller.log")
}

/// kuttl's suite setup as a test of one step in the context's namespace.
fn setup_test(suite: &Suite, namespace: &str) -> Option<Test> {
    if suite.manifests.is_empty() && suite.commands.is_empty() {
        return None;
    }
    let source = suite
        .manifests
        .first()
        .map(|o| o.source.clone())
        .or_else(|| suite.commands.first().map(|c| c.source.clone()))
        .unwrap_or(Source {
            file: PathBuf::from("kuttl-test.yaml"),
            line: 0,
        });
    let mut try_ = Vec::new();
    if !suite.manifests.is_empty() {
        try_.push(Op {
            source: source.clone(),
            what: OpKind::Write {
                objects: suite.manifests.clone(),
                how: Write::Apply,
                expect: Vec::new(),
            },
            timeout: None,
            continue_on_error: false,
            bindings: Vec::new(),
        });
    }
    // A CRD serves its kind only once Established: tests start after that.
    for crd in suite
        .manifests
        .iter()
        .filter(|o| o.kind() == "CustomResourceDefinition")
    {
        try_.push(Op {
            source: crd.source.clone(),
            what: OpKind::Wait {
                target: Ref {
                    api_version: crd.api_version().to_owned(),
                    kind: crd.kind().to_owned(),
                    name: crd.name().map(str::to_owned),
                    namespace: None,
                    selector: None,
                },
                until: WaitFor::Condition {
                    name: "Established".into(),
                    value: "True".into(),
                },
            },
            timeout: None,
            continue_on_error: false,
            bindings: Vec::new(),
        });
    }
    try_.extend(suite.commands.iter().cloned());
    Some(Test {
        name: "suite setup".into(),
        dir: source.file.parent().map(PathBuf::from).unwrap_or_default(),
        source: source.clone(),
        format: Format::Kuttl,
        steps: vec![Step {
            name: "setup".into(),
            source,
            bindings: Vec::new(),
            try_,
            catch: Vec::new(),
            finally: Vec::new(),
            cleanup: Vec::new(),
        }],
        bindings: Vec::new(),
        namespace: Some(namespace.to_owned()),
        skip_delete: true,
        skip: false,
        concurrent: false,
        timeouts: Timeouts::uniform(suite.timeout.unwrap_or(Duration::from_secs(30))),
    })
}

/// Starts deleting a test's namespace; the suite goes on.
fn delete_namespace(
    cluster: &Arc<Cluster>,
    o: &Outcome,
) -> Option<(String, tokio::task::JoinHandle<()>)> {
    let name = o.teardown.namespace.clone()?;
    let api: Api<Namespace> = Api::all(cluster.kube.client.clone());
    let target = name.clone();
    let request = tokio::spawn(async move {
        if let Err(e) = api.delete(&target, &DeleteParams::background()).await
            && !k8s::is_not_found(&e)
        {
            eprintln!("kdev test: could not delete the test namespace {target}: {e}");
        }
    });
    Some((name, request))
}

/// Test namespaces of earlier runs still being deleted after `timeout`:
/// named with what holds them (and freed with `force`).
async fn left_before(cluster: &Cluster, timeout: Duration, force: bool) -> Vec<String> {
    let api: Api<Namespace> = Api::all(cluster.kube.client.clone());
    let Ok(list) = api
        .list(&kube::api::ListParams::default().labels("kdev.dev/test=true"))
        .await
    else {
        return Vec::new();
    };
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    for ns in list.items {
        let Some(since) = ns.metadata.deletion_timestamp.as_ref() else {
            continue;
        };
        let age = now.duration_since(since.0).unsigned_abs();
        if age < timeout {
            continue;
        }
        let name = ns.metadata.name.clone().unwrap_or_default();
        out.push(
            held_line(
                cluster,
                &name,
                &serde_json::to_value(&ns).unwrap_or_default(),
                age,
                force,
            )
            .await,
        );
    }
    out
}

/// Waits (once, for all) until the test namespaces are gone; returns a line
/// for each that is not, with what holds it. With `force`, finalizers of
/// what is left in them are removed.
async fn settle(
    cluster: &Cluster,
    namespaces: Vec<String>,
    timeout: Duration,
    force: bool,
) -> Vec<String> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    let scope = Watched {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: None,
        selector: Some("kdev.dev/test=true".into()),
    };
    let gone = |seen: &Seen| {
        let left = &seen.objects[0];
        namespaces
            .iter()
            .all(|n| !left.contains_key(&format!("/{n}")))
            .then_some(())
    };
    let seen =
        match cluster::watch_until(cluster, std::slice::from_ref(&scope), timeout, gone).await {
            Ok((Some(()), _)) => return Vec::new(),
            Ok((None, seen)) => seen,
            Err(e) => return vec![format!("could not watch the test namespaces go: {e}")],
        };
    let mut lines = Vec::new();
    for name in &namespaces {
        let Some(ns) = seen.objects[0].get(&format!("/{name}")) else {
            continue;
        };
        lines.push(held_line(cluster, name, ns, timeout, force).await);
    }
    lines
}

/// `namespace X is still being deleted after N s: why; held by …`.
async fn held_line(
    cluster: &Cluster,
    name: &str,
    ns: &serde_json::Value,
    waited: Duration,
    force: bool,
) -> String {
    let why: Vec<String> = ns["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["message"].as_str().map(str::to_owned))
        .collect();
    let mut line = format!(
        "namespace {name} is still being deleted after {}s: {}",
        waited.as_secs(),
        if why.is_empty() {
            "no reason given yet".to_owned()
        } else {
            why.join("; ")
        }
    );
    let held = with_finalizers(cluster, name).await;
    if held.is_empty() {
        return line;
    }
    let list: Vec<String> = held
        .iter()
        .map(|(what, f)| format!("{what} (finalizers: {})", f.join(", ")))
        .collect();
    line.push_str(&format!("; held by {}", list.join(", ")));
    if force {
        for (what, _) in &held {
            line.push_str(&format!(
                "; {}",
                remove_finalizers(cluster, name, what).await
            ));
        }
    } else {
        line.push_str(" (--force-cleanup removes them)");
    }
    line
}

/// Objects in `namespace` that have finalizers, as (`plural/name`, finalizers).
async fn with_finalizers(cluster: &Cluster, namespace: &str) -> Vec<(String, Vec<String>)> {
    let Ok(discovery) = Discovery::new(cluster.kube.client.clone()).run().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation("list") {
                continue;
            }
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(cluster.kube.client.clone(), namespace, &resource);
            let Ok(list) = api.list(&Default::default()).await else {
                continue;
            };
            for o in list.items {
                let finalizers = o.metadata.finalizers.clone().unwrap_or_default();
                if !finalizers.is_empty() {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    out.push((
                        format!("{}.{}/{name}", resource.plural, resource.group),
                        finalizers,
                    ));
                }
            }
        }
    }
    out
}

async fn remove_finalizers(cluster: &Cluster, namespace: &str, what: &str) -> String {
    let Some((resource, name)) = what.split_once('/') else {
        return format!("cannot read {what}");
    };
    let Ok(discovery) = Discovery::new(cluster.kube.client.clone()).run().await else {
        return format!("could not remove the finalizers of {what}: discovery failed");
    };
    for group in discovery.groups() {
        for (ar, _) in group.recommended_resources() {
            if format!("{}.{}", ar.plural, ar.group) != resource {
                continue;
            }
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(cluster.kube.client.clone(), namespace, &ar);
            let patch = json!({"metadata": {"finalizers": null}});
            return match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => format!("removed the finalizers of {what}"),
                Err(e) => format!("could not remove the finalizers of {what}: {e}"),
            };
        }
    }
    format!("could not find {what} again")
}
