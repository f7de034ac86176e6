//! `kdev logs [QUERY]`: the logs of many pods and containers, and files
//! inside them, in one stream that never goes silent.
//!
//! - [`select`]: which pods and containers a query selects (pure).
//! - [`stream`]: one container's log stream and how it resumes.
//! - [`file`]: `--file`, tailing files inside containers through exec.
//! - [`output`]: rendering and writing lines. [`merge`]: `--merge-by-time`.
//! - [`watch`]: the pod watch that starts and ends streams.
//! - [`recent`]: the last lines of a namespace's containers, read once.

pub mod file;
pub mod merge;
pub mod output;
pub mod recent;
pub mod select;
pub mod stream;
pub mod watch;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::output::{Format, Formatter, WriterEnd};
use self::select::{Filter, Query};
use self::stream::Shared;
use crate::k8s;

/// Where pods are looked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Some(Vec<String>),
}

/// `kdev logs`' arguments, checked before any request.
pub struct Options {
    pub query: Query,
    pub filter: Filter,
    pub formatter: Formatter,
    pub labels: Option<String>,
    pub fields: Option<String>,
    pub files: Vec<String>,
}

/// `kdev logs`' configuration, checked before any request.
pub struct Config {
    pub options: Options,
    /// Where to look; an empty list means the context's namespace.
    pub namespaces: Namespaces,
    /// The query as typed, for messages.
    pub query_text: Option<String>,
    pub since: Option<Duration>,
    /// Lines of each log to show first (`None`: all).
    pub tail: Option<i64>,
    pub follow: bool,
    pub max_log_requests: usize,
    pub merge_by_time: Option<Duration>,
}

pub async fn run(flags: &k8s::Flags, config: Config) -> anyhow::Result<ExitCode> {
    let Config {
        mut options,
        namespaces,
        query_text,
        since,
        tail,
        follow,
        max_log_requests,
        merge_by_time,
    } = config;
    let kube = k8s::connect(flags).await?;
    let namespaces = match namespaces {
        Namespaces::Some(list) if list.is_empty() => Namespaces::Some(vec![kube.namespace.clone()]),
        other => other,
    };
    let scopes = watch::scopes(&kube, &namespaces, &mut options).await?;
    if let Namespaces::Some(list) = &namespaces {
        // Reading an environment's logs is activity (its inactivity rule).
        let who = format!("kdev logs by {}", crate::host::user_at_host());
        for namespace in list {
            tokio::spawn(k8s::activity::record(
                kube.clone(),
                namespace.clone(),
                who.clone(),
            ));
        }
    }

    let cancel = CancellationToken::new();
    let (sink, batches) = mpsc::channel(output::QUEUED_BATCHES);
    let (to_writer, from_relay) = mpsc::channel(output::QUEUED_BATCHES);
    let writer = output::spawn_writer(from_relay);
    let mut relay = match merge_by_time {
        Some(window) => tokio::spawn(merge::run(batches, to_writer, window)),
        None => tokio::spawn(output::forward(batches, to_writer)),
    };
    let file_lines = match (tail, follow) {
        (Some(n), _) => Some(n as u64),
        (None, true) => Some(10),
        (None, false) => None,
    };
    let timestamps = options.formatter.timestamps || options.formatter.format == Format::Json;
    let shared = Arc::new(Shared::new(
        options.formatter,
        sink,
        max_log_requests,
        follow,
        since,
        tail,
        merge_by_time.is_some(),
        timestamps,
        cancel.clone(),
    ));
    let supervisor = watch::Supervisor {
        kube,
        filter: options.filter,
        files: Arc::new(options.files),
        file_lines,
        shared: shared.clone(),
    };
    let describe = watch::describe(&scopes, query_text.as_deref());
    let (outcome, relayed) = tokio::select! {
        outcome = supervisor.run(scopes, describe) => (outcome, false),
        // stdout was closed: the relay stopped taking output.
        _ = &mut relay => (Ok(()), true),
        () = interrupted() => (Ok(()), false),
    };
    cancel.cancel();
    let failed = shared.failed.load(Ordering::Relaxed);
    drop(shared);
    // What is queued is written before exiting (unless stdout is gone).
    if !relayed {
        let _ = relay.await;
    }
    let end = tokio::task::spawn_blocking(move || writer.join())
        .await
        .ok()
        .and_then(Result::ok);
    outcome?;
    match end {
        Some(Ok(WriterEnd::ClosedPipe)) => Ok(ExitCode::SUCCESS),
        Some(Err(err)) => Err(anyhow::anyhow!("failed to write to stdout: {err}")),
        _ if failed => Ok(ExitCode::from(1)),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Ctrl-C or SIGTERM: stop following.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
