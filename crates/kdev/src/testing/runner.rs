//! A suite: read everything first, set up once, run the tests in parallel
//! on one cluster, delete their namespaces without waiting for each, then
//! wait for all of them together and report what is stuck.

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
use crate::error::usage;
use crate::k8s;

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
    pub cleanup_timeout: Duration,
    /// `--run-controller -- CMD…`: a local process for the whole suite.
    pub run_controller: Vec<String>,
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
    if config.rerun_failed && suite.tests.is_empty() {
        eprintln!("kdev test: nothing failed in the last run");
        return Ok(ExitCode::SUCCESS);
    }
    let kube = k8s::connect(flags).await?;
    let mut options = config.options.clone();
    if options.kubeconfig.is_none() {
        options.kubeconfig = flags.kubeconfig.clone();
    }
    let cluster = Arc::new(Cluster::new(kube));
    let started = Instant::now();
    if let Some(setup) = setup_test(&suite, &cluster.kube.namespace) {
        let outcome = run::run(&cluster, &options, &setup).await;
        if outcome.status == Status::Failed {
            anyhow::bail!(
                "the suite's setup (kuttl crdDir, manifestDirs and commands) failed; no test ran:{}",
                report::failures(&[outcome])
            );
        }
    }
    let mut controller = match config.run_controller.split_first() {
        Some((program, args)) => {
            let mut command = tokio::process::Command::new(program);
            // Its output goes to a file, named in the report, so it never
            // mixes with the tests' lines.
            let log = controller_log(&config.results);
            if let Some(dir) = log.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let file = std::fs::File::create(&log).map_err(|e| {
                usage(format!(
                    "--run-controller: cannot write {}: {e}",
                    log.display()
                ))
            })?;
            let err = file
                .try_clone()
                .map_err(|e| usage(format!("--run-controller: {e}")))?;
            command
                .args(args)
                .stdout(file)
                .stderr(err)
                .kill_on_drop(true);
            if let Some(k) = &options.kubeconfig {
                command.env("KUBECONFIG", k);
            }
            let child = command
                .spawn()
                .map_err(|e| usage(format!("--run-controller: cannot start {program}: {e}")))?;
            eprintln!(
                "kdev test: running the controller {program} for the suite (its log: {})",
                log.display()
            );
            Some(child)
        }
        None => None,
    };
    let parallel = config
        .parallel
        .or(suite.parallel)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let (together, alone): (Vec<Test>, Vec<Test>) =
        suite.tests.into_iter().partition(|t| t.concurrent);
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
            let options = &options;
            async move { run::run(&cluster, options, t).await }
        }))
        .buffer_unordered(parallel);
        while let Some(o) = running.next().await {
            print(&o);
            deletions.extend(delete_namespace(&cluster, &o));
            outcomes.push(o);
        }
    }
    for t in &alone {
        let o = run::run(&cluster, &options, t).await;
        print(&o);
        deletions.extend(delete_namespace(&cluster, &o));
        outcomes.push(o);
    }
    if let Some(child) = controller.as_mut() {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("kdev test: the controller exited during the suite ({status})");
        }
        let _ = child.kill().await;
    }
    let stuck = settle(
        &cluster,
        deletions,
        config.cleanup_timeout,
        config.force_cleanup,
    )
    .await;
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
    if config.rerun_failed {
        // A rerun only speaks for the tests it ran.
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
fn delete_namespace(cluster: &Arc<Cluster>, o: &Outcome) -> Option<String> {
    let name = o.teardown.namespace.clone()?;
    let api: Api<Namespace> = Api::all(cluster.kube.client.clone());
    let target = name.clone();
    tokio::spawn(async move {
        if let Err(e) = api.delete(&target, &DeleteParams::background()).await
            && !k8s::is_not_found(&e)
        {
            tracing::warn!(namespace = %target, error = %e, "could not delete a test namespace");
        }
    });
    Some(name)
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
        let why: Vec<String> = ns["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "True")
            .filter_map(|c| c["message"].as_str().map(str::to_owned))
            .collect();
        let mut line = format!(
            "namespace {name} is still being deleted after {}s: {}",
            timeout.as_secs(),
            if why.is_empty() {
                "no reason given yet".to_owned()
            } else {
                why.join("; ")
            }
        );
        let held = with_finalizers(cluster, name).await;
        if !held.is_empty() {
            line.push_str(&format!(
                "; held by {}",
                held.iter()
                    .map(|(what, f)| format!("{what} (finalizers: {})", f.join(", ")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
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
        }
        lines.push(line);
    }
    lines
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
