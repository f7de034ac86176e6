//! `kdev controller`: kdev's in-cluster part, deployed from `deploy/`.
//!
//! Replicas elect a leader with a Lease ([`leader`]); only the leader acts.
//! Every replica serves `/healthz` (the process is alive), `/readyz` (it has
//! reached the API server) and `/metrics` (Prometheus text) from [`serve`].
//! The work the leader does (restoring expired swap sessions, later sleep
//! schedules) runs as tasks that start when it leads and stop when it no
//! longer does.

pub mod leader;
mod reaper;
pub mod schedule;
mod serve;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use crate::k8s;
use kdev_contract::keys;

/// The controller's configuration, resolved from its flags.
#[derive(Debug)]
pub struct Config {
    /// Address for /healthz, /readyz and /metrics.
    pub listen: std::net::SocketAddr,
    /// Namespace of the leader-election Lease (default: the client's namespace).
    pub lease_namespace: Option<String>,
    /// This replica's identity (default: host name and process id).
    pub identity: Option<String>,
    /// Reap in this namespace only (default: every namespace).
    pub watch_namespace: Option<String>,
    /// Clean up after telepresence 1 proxies older than this (off when `None`).
    pub telepresence_min_age: Option<Duration>,
    /// Put environments to sleep and wake them by their schedules (off when `None`).
    pub schedules: Option<schedule::Options>,
    /// Serve the environments dashboard (off when `None`).
    pub dashboard: Option<Dashboard>,
}

/// `--dashboard`: where, and as whom its actions are written.
#[derive(Debug)]
pub struct Dashboard {
    pub listen: std::net::SocketAddr,
    /// Default: the `kdev-dashboard` ServiceAccount of the controller's namespace.
    pub act_as: Option<String>,
    /// The wakers' image for environments it puts to sleep.
    pub waker: Option<String>,
    /// External host names it is served as (`--dashboard-host`).
    pub hosts: Vec<String>,
    /// The auth proxy's unix socket (`--dashboard-proxy-socket`).
    pub proxy_socket: Option<std::path::PathBuf>,
    /// Which namespaces it shows and acts on.
    pub scope: crate::envs::Scope,
}

pub async fn run(flags: &k8s::Flags, args: Config) -> anyhow::Result<ExitCode> {
    let kube = k8s::connect(flags).await?;
    let namespace = args
        .lease_namespace
        .unwrap_or_else(|| kube.namespace.clone());
    let identity = args.identity.unwrap_or_else(default_identity);

    let metrics = Arc::new(serve::Metrics::default());
    let (connected_tx, connected_rx) = watch::channel(false);
    let (synced_tx, synced_rx) = watch::channel(false);
    let (leading_tx, leading_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {} (--listen)", args.listen))?;
    tracing::info!(listen = %args.listen, %identity, %namespace, "controller starting");
    let mut tasks = Tasks::default();
    tasks.spawn(
        "health and metrics server",
        serve::serve(
            listener,
            serve::State {
                connected: connected_rx,
                synced: synced_rx,
                leading: leading_rx.clone(),
                metrics: metrics.clone(),
            },
        ),
    );

    if let Some(dashboard) = args.dashboard {
        let listener = tokio::net::TcpListener::bind(dashboard.listen)
            .await
            .with_context(|| {
                format!(
                    "failed to listen on {} (--dashboard-listen)",
                    dashboard.listen
                )
            })?;
        let act_as = dashboard.act_as.unwrap_or_else(|| {
            format!(
                "system:serviceaccount:{namespace}:{}",
                keys::DASHBOARD_ACCOUNT
            )
        });
        tracing::info!(listen = %dashboard.listen, %act_as, "dashboard serving");
        tasks.spawn(
            "dashboard",
            crate::dashboard::serve(
                listener,
                kube.clone(),
                crate::dashboard::Options {
                    listen: dashboard.listen,
                    act_as,
                    waker: dashboard.waker,
                    hosts: dashboard.hosts,
                    proxy_socket: dashboard.proxy_socket,
                    scope: dashboard.scope,
                },
            ),
        );
    }

    let version = kube
        .client
        .apiserver_version()
        .await
        .map_err(|err| kube.explain(err, "reach the API server"))?;
    tracing::info!(server = %version.git_version, "connected");
    connected_tx.send_replace(true);

    let reporter = Reporter {
        controller: "kdev-controller".into(),
        instance: Some(identity.clone()),
    };
    let recorder = Recorder::new(kube.client.clone(), reporter);
    tasks.spawn(
        "reaper",
        reaper::run(
            kube.clone(),
            args.watch_namespace.clone(),
            leading_rx.clone(),
            synced_tx,
            recorder.clone(),
            metrics.clone(),
        ),
    );
    if let Some(mut options) = args.schedules.clone() {
        options.home = namespace.clone();
        tasks.spawn(
            "environment scheduler",
            schedule::run(
                kube.clone(),
                options,
                leading_rx.clone(),
                recorder.clone(),
                metrics.clone(),
            ),
        );
    }
    if let Some(min_age) = args.telepresence_min_age {
        let options = crate::cleanup::telepresence::Options {
            min_age,
            dry_run: false,
            tries: 3,
        };
        tasks.spawn(
            "telepresence cleaner",
            telepresence_janitor(
                kube.clone(),
                args.watch_namespace.clone(),
                options,
                leading_rx.clone(),
                recorder,
                metrics.clone(),
            ),
        );
    }

    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &namespace);
    let elector = leader::Elector::new(
        leases,
        keys::CONTROLLER_LEADER_LEASE.to_owned(),
        identity,
        leader::Timing::default(),
    );
    // The election runs until SIGTERM or until any other task ends; either
    // way the Lease is released on the way out.
    let ended = std::sync::Mutex::new(None);
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => {}
            end = tasks.first_end() => {
                if let Ok(mut slot) = ended.lock() {
                    *slot = Some(end);
                }
            }
        }
    };
    let outcome = elector.run(leading_tx, metrics, stop).await;
    tasks.abort_all();
    outcome?;
    match ended.into_inner().ok().flatten() {
        None => Ok(ExitCode::SUCCESS),
        Some((name, why)) => Err(anyhow::anyhow!(
            "the controller's {name} task ended ({why}); exiting so that the Deployment restarts it"
        )),
    }
}

/// The controller's long-running tasks, each named. Any of them ending ends
/// the controller: a reaper that silently stopped would leave sessions
/// unrestored while `/readyz` says ok.
#[derive(Default)]
struct Tasks {
    running: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl Tasks {
    fn spawn<F, T>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = T> + Send + 'static,
        T: TaskResult,
    {
        self.running
            .push((name, tokio::spawn(async move { task.await.into_result() })));
    }

    /// Waits for the first task to end; its name and why.
    async fn first_end(&mut self) -> (&'static str, String) {
        if self.running.is_empty() {
            return std::future::pending().await;
        }
        let handles = self.running.iter_mut().map(|(name, handle)| {
            Box::pin(async move {
                let why = match handle.await {
                    Ok(Ok(())) => "it returned".to_owned(),
                    Ok(Err(err)) => format!("{err:#}"),
                    Err(err) => format!("it panicked or was cancelled: {err}"),
                };
                (*name, why)
            })
        });
        futures::future::select_all(handles).await.0
    }

    fn abort_all(&self) {
        for (_, handle) in &self.running {
            handle.abort();
        }
    }
}

/// What a task may return: nothing (it should run forever) or a result.
trait TaskResult: Send + 'static {
    fn into_result(self) -> anyhow::Result<()>;
}

impl TaskResult for () {
    fn into_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl TaskResult for anyhow::Result<()> {
    fn into_result(self) -> anyhow::Result<()> {
        self
    }
}

/// While leading, sweeps telepresence 1 proxies every 30 s. Every action is
/// logged, counted in `/metrics`, and a restore is recorded as an Event on
/// the Deployment it restored.
async fn telepresence_janitor(
    kube: k8s::Kube,
    namespace: Option<String>,
    options: crate::cleanup::telepresence::Options,
    mut leading: watch::Receiver<bool>,
    recorder: Recorder,
    metrics: Arc<serve::Metrics>,
) {
    use crate::cleanup::telepresence::Verdict;
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        let reports =
            match crate::cleanup::telepresence::sweep(&kube, namespace.as_deref(), options).await {
                Ok(reports) => reports,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "telepresence sweep failed");
                    continue;
                }
            };
        for report in reports {
            match report.verdict {
                Verdict::TooYoung | Verdict::Alive => {
                    tracing::debug!(namespace = %report.namespace, pod = %report.pod, "telepresence proxy: {}", report.line);
                    continue;
                }
                Verdict::Restored | Verdict::WouldRestore => {
                    tracing::info!(namespace = %report.namespace, pod = %report.pod, "telepresence proxy: {}", report.line);
                }
                Verdict::LeftForHuman => {
                    tracing::warn!(namespace = %report.namespace, pod = %report.pod, "telepresence proxy: {}", report.line);
                }
            }
            metrics.telepresence(report.verdict);
            if report.verdict == Verdict::Restored
                && let Some(original) = &report.original
            {
                crate::cleanup::telepresence::record_restore(&kube, &recorder, &report, original)
                    .await;
            }
        }
    }
}

/// The pod's name is the natural identity; outside a pod, the host name plus
/// the process id keeps two local runs apart.
fn default_identity() -> String {
    format!("{}-{}", crate::host::hostname(), std::process::id())
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C ends the controller gracefully.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    // Give in-flight HTTP probes a moment; the Lease is released by the caller.
    tokio::time::sleep(Duration::from_millis(50)).await;
}
