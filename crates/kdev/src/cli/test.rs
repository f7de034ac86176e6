//! `kdev test` flags, resolved into [`crate::testing::runner::Config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::parse_duration;
use crate::error::usage;
use crate::testing::matching::Lists;
use crate::testing::prepare::Deploy;
use crate::testing::run::Options;
use crate::testing::runner::{Config, DeleteNamespaces, Watching};
use crate::testing::target::Choice;
use crate::testing::yaml;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kdev test e2e/                      # kuttl suites and chainsaw tests under e2e/\n  \
    kdev test e2e/ --junit report.xml --parallel 8\n  \
    kdev test e2e/ --rerun-failed        # only what failed last time\n  \
    kdev test e2e/ --run-controller -- cargo run -p my-controller\n  \
    kdev test e2e/ --cluster local       # on a local cluster started (and removed) for the suite\n  \
    kdev test e2e/ --watch --watch-path src --run-controller -- cargo run")]
pub struct TestArgs {
    /// Directories of tests (kuttl-test.yaml suites, chainsaw-test.yaml tests, numbered step files); default: the current directory.
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Tests run at once (default: the suite's `parallel`, else the number of cores).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// text: a line per test and every failure in full; json: a summary on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Run only the tests that failed in the last run (read from --results).
    #[arg(long)]
    pub rerun_failed: bool,
    /// Where each run records which tests failed.
    #[arg(long, value_name = "FILE", default_value = ".kdev/test-results.json")]
    pub results: PathBuf,
    /// Keep every test namespace and object, for debugging.
    #[arg(long)]
    pub skip_delete: bool,
    /// Remove the finalizers of objects that keep a test namespace from going.
    #[arg(long)]
    pub force_cleanup: bool,
    /// Wait at the end until the test namespaces are gone, and name any held by finalizers (default: they go in the background).
    #[arg(long)]
    pub wait_cleanup: bool,
    /// How long --wait-cleanup waits; a test namespace of an earlier run still there after this long is reported at the next run.
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub cleanup_timeout: Duration,
    /// How long a negative assertion (kuttl errors, chainsaw error) must keep holding once it holds.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub errors_window: Duration,
    /// How expected lists match: subset (any order; the default) or exact (kuttl's rule, everywhere).
    #[arg(long, value_enum)]
    pub lists: Option<ListRule>,
    /// A YAML file whose content is $values in chainsaw expressions.
    #[arg(long, value_name = "FILE")]
    pub values: Option<PathBuf>,
    /// Log lines per container in a failure's report.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub log_tail: i64,
    /// Run the controller under test as a local process for the whole suite (the command follows `--`).
    #[arg(long, requires = "command")]
    pub run_controller: bool,
    /// The controller's command, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// Where the suite runs: current (the kubeconfig's cluster), local (a `kdev cluster` started for the suite and removed after it), or kind (needs kind and Docker or Podman).
    #[arg(long, value_enum, default_value = "current")]
    pub cluster: ClusterArg,
    /// With --cluster local: its nodes (real, kwok or both; default: a real node where this machine can run one).
    #[arg(long, value_enum, requires = "cluster")]
    pub node: Option<super::cluster::NodeArg>,
    /// Keep a cluster started for the suite (--cluster local or kind) and say how to reach it.
    #[arg(long)]
    pub keep_cluster: bool,
    /// Before the suite: `kubectl apply --server-side -k DIR`, then wait until each Deployment it holds is Available (repeatable).
    #[arg(long, value_name = "DIR")]
    pub apply_kustomize: Vec<PathBuf>,
    /// Before the suite: `skaffold run` in the current directory.
    #[arg(long)]
    pub skaffold: bool,
    /// How long the Deployments of --apply-kustomize may take to be Available.
    #[arg(long, value_parser = parse_duration, default_value = "120s", value_name = "DURATION")]
    pub deploy_timeout: Duration,
    /// After the run, watch the tests' files and run the tests a change touches again, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: a file or folder (the controller's source) whose change restarts --run-controller and reruns every test (repeatable).
    #[arg(long, value_name = "PATH", requires = "watch")]
    pub watch_path: Vec<PathBuf>,
    /// When finished tests' namespaces are deleted: at-end (when the run's last test has finished, so their deletion does not slow the tests still running) or per-test (as each finishes; smaller footprint for long suites on a shared cluster). Neither waits for them.
    #[arg(long, value_enum, default_value = "at-end", value_name = "WHEN")]
    pub delete_namespaces: DeleteArg,
    /// With --watch: a glob of paths to ignore (repeatable; .git, target, .kdev and editor swap files always are).
    #[arg(long, value_name = "GLOB", requires = "watch")]
    pub watch_ignore: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeleteArg {
    AtEnd,
    PerTest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterArg {
    Current,
    Local,
    Kind,
}

/// kdev's pinned kubectl (the one `kdev cluster` uses) first on the PATH of
/// test commands, so `kubectl` in a step matches the cluster's version.
fn commands_path() -> Option<std::ffi::OsString> {
    let kubectl = crate::cluster::Binaries::locate().ok()?.kubectl;
    let dir = kubectl.parent()?.to_owned();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListRule {
    Subset,
    Exact,
}

impl TestArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        if !self.command.is_empty() && !self.run_controller {
            return Err(usage(
                "a command after `--` is the controller to run: add --run-controller",
            ));
        }
        if self.node.is_some() && self.cluster != ClusterArg::Local {
            return Err(usage("--node chooses the nodes of --cluster local"));
        }
        if self.keep_cluster && self.cluster == ClusterArg::Current {
            return Err(usage(
                "--keep-cluster keeps a cluster started for the suite: add --cluster local or --cluster kind",
            ));
        }
        for dir in &self.apply_kustomize {
            if !dir.is_dir() {
                return Err(usage(format!(
                    "--apply-kustomize {}: no such directory; nothing was applied",
                    dir.display()
                )));
            }
        }
        for path in &self.watch_path {
            if !path.exists() {
                return Err(usage(format!(
                    "--watch-path {}: no such file or directory",
                    path.display()
                )));
            }
        }
        if self.parallel == Some(0) {
            return Err(usage("--parallel must be at least 1"));
        }
        let values = match &self.values {
            None => serde_json::Value::Object(Default::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| usage(format!("--values: cannot read {}: {e}", path.display())))?;
                let mut docs = yaml::load(&text).map_err(|e| {
                    usage(format!(
                        "--values: {}:{}: {}",
                        path.display(),
                        e.line,
                        e.message
                    ))
                })?;
                if docs.len() > 1 {
                    return Err(usage(format!(
                        "--values: {} holds more than one document",
                        path.display()
                    )));
                }
                docs.pop().map(|d| d.value).unwrap_or_default()
            }
        };
        Ok(Config {
            dirs: if self.dirs.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                self.dirs
            },
            parallel: self.parallel,
            options: Options {
                skip_delete: self.skip_delete,
                errors_window: self.errors_window,
                values,
                kubeconfig: None,
                log_tail: self.log_tail.max(1),
                lists: self.lists.map(|l| match l {
                    ListRule::Subset => Lists::Subset,
                    ListRule::Exact => Lists::Exact,
                }),
                path: commands_path(),
            },
            junit: self.junit,
            json: self.output == Output::Json,
            rerun_failed: self.rerun_failed,
            results: self.results,
            force_cleanup: self.force_cleanup,
            wait_cleanup: self.wait_cleanup,
            cleanup_timeout: self.cleanup_timeout,
            run_controller: self.command,
            cluster: match self.cluster {
                ClusterArg::Current => Choice::Current,
                ClusterArg::Local => Choice::Local {
                    nodes: self.node.map(super::cluster::NodeArg::nodes),
                },
                ClusterArg::Kind => Choice::Kind,
            },
            keep_cluster: self.keep_cluster,
            deploy: Deploy {
                kustomize: self.apply_kustomize,
                skaffold: self.skaffold,
                timeout: self.deploy_timeout,
            },
            delete_namespaces: match self.delete_namespaces {
                DeleteArg::AtEnd => DeleteNamespaces::AtEnd,
                DeleteArg::PerTest => DeleteNamespaces::PerTest,
            },
            watch: self.watch.then(|| Watching {
                paths: self.watch_path,
                ignore: self.watch_ignore,
                debounce: Duration::from_millis(300),
            }),
        })
    }
}
