//! `kdev logs [QUERY]`: the logs of many pods and containers, and files
//! inside them, in one stream that never goes silent.
//!
//! - [`select`]: which pods and containers a query selects (pure).
//! - [`stream`]: one container's log stream and how it resumes.
//! - [`file`]: `--file`, tailing files inside containers through exec.
//! - [`output`]: rendering and writing lines. [`merge`]: `--merge-by-time`.
//! - [`watch`]: the pod watch that starts and ends streams.

pub mod file;
pub mod merge;
pub mod output;
pub mod select;
pub mod stream;
pub mod watch;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::output::{Color, Format, Formatter, WriterEnd};
use self::select::{Filter, Query, States};
use self::stream::Shared;
use crate::cli::{GlobalArgs, parse_duration};
use crate::error::usage;
use crate::kubeclient::{self, validate_dns_label};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kdev logs deploy/web --since 10m\n  \
    kdev logs 'web|api' -n team-a -n team-b -i ERROR --merge-by-time\n  \
    kdev logs -l app=web --file '/var/log/app/*.log'")]
pub struct LogsArgs {
    /// A regex searched in pod names, or kind/name (deploy, sts, ds, rs, job, svc, pod); default: every pod.
    pub query: Option<String>,
    /// Only containers whose name matches this regex.
    #[arg(short = 'c', long, value_name = "REGEX")]
    pub container: Option<String>,
    /// Leave out containers whose name matches this regex; repeatable.
    #[arg(short = 'E', long, value_name = "REGEX")]
    pub exclude_container: Vec<String>,
    /// Leave out pods whose name matches this regex; repeatable.
    #[arg(long, value_name = "REGEX")]
    pub exclude_pod: Vec<String>,
    /// Only pods with these labels (a label selector, as kubectl's -l).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Only pods matching this field selector, as kubectl's.
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Pods in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only pods on this node.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Containers in these states: running, waiting, terminated, all; repeatable or comma-separated.
    #[arg(long, value_name = "STATE", default_value = "running")]
    pub container_state: Vec<String>,
    /// Include init containers.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub init_containers: bool,
    /// Include ephemeral (debug) containers.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub ephemeral_containers: bool,
    /// Only lines newer than this (e.g. 10m); default: all.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    /// Lines of each container's log (and file) to show first; -1: all (files: the last 10 when following).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    pub tail: i64,
    /// Print what there is and exit, instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// Print each line's timestamp.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only lines matching this regex; repeatable (any may match).
    #[arg(short = 'i', long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// Leave out lines matching this regex; repeatable.
    #[arg(short = 'e', long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Colour what this regex matches in each line; repeatable.
    #[arg(short = 'H', long, value_name = "REGEX")]
    pub highlight: Vec<String>,
    /// When to colour output.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "default")]
    pub output: Format,
    /// At most this many log requests open at once; further streams wait their turn.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_log_requests: usize,
    /// Also tail files inside each container (absolute path, globs allowed); repeatable.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<String>,
    /// Order lines of all streams by timestamp, holding each back at most WINDOW.
    #[arg(long, value_name = "WINDOW", num_args = 0..=1, default_missing_value = "500ms", value_parser = parse_duration)]
    pub merge_by_time: Option<Duration>,
}

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

impl Options {
    /// Validates the arguments; every mistake is a usage error naming the flag.
    pub fn resolve(args: &LogsArgs, namespaces: &Namespaces) -> anyhow::Result<Options> {
        let regexes = |flag: &str, list: &[String]| -> anyhow::Result<Vec<regex::Regex>> {
            list.iter()
                .map(|p| select::compile(flag, p).map_err(usage))
                .collect()
        };
        let line_regexes =
            |flag: &str, list: &[String]| -> anyhow::Result<Vec<regex::bytes::Regex>> {
                list.iter()
                    .map(|p| {
                        regex::bytes::Regex::new(p)
                            .map_err(|err| usage(format!("invalid regex {p:?} in {flag}: {err}")))
                    })
                    .collect()
            };
        let query = select::parse_query(args.query.as_deref()).map_err(usage)?;
        if let Query::Object { kind, name } = &query {
            if *namespaces == Namespaces::All {
                return Err(usage(format!(
                    "{kind}/{name} names an object in one namespace: give -n instead of -A"
                )));
            }
            // Workload and Service names are DNS-1123 subdomains: dot-separated labels.
            if *kind != select::Kind::Pod
                && name
                    .split('.')
                    .any(|part| validate_dns_label("name", part).is_err())
            {
                validate_dns_label(&format!("{kind} name"), name)?;
            }
        }
        if args.max_log_requests == 0 {
            return Err(usage("--max-log-requests must be at least 1"));
        }
        for pattern in &args.files {
            file::validate_pattern(pattern).map_err(usage)?;
        }
        if let Some(node) = &args.node
            && node.is_empty()
        {
            return Err(usage("--node needs a node name"));
        }
        let states = States::parse(&args.container_state).map_err(usage)?;
        let filter = Filter {
            pod: None,
            exclude_pod: regexes("--exclude-pod", &args.exclude_pod)?,
            container: args
                .container
                .as_deref()
                .map(|p| select::compile("-c/--container", p).map_err(usage))
                .transpose()?,
            exclude_container: regexes("-E/--exclude-container", &args.exclude_container)?,
            states,
            init_containers: args.init_containers,
            ephemeral_containers: args.ephemeral_containers,
        };
        let color = match args.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        let formatter = Formatter {
            format: args.output,
            color: color && args.output == Format::Default,
            timestamps: args.timestamps,
            namespaces: match namespaces {
                Namespaces::All => true,
                Namespaces::Some(list) => list.len() > 1,
            },
            include: line_regexes("-i/--include", &args.include)?,
            exclude: line_regexes("-e/--exclude", &args.exclude)?,
            highlight: line_regexes("-H/--highlight", &args.highlight)?,
        };
        let mut fields: Vec<String> = args.field_selector.iter().cloned().collect();
        if let Some(node) = &args.node {
            fields.push(format!("spec.nodeName={node}"));
        }
        Ok(Options {
            query,
            filter,
            formatter,
            labels: args.selector.clone().filter(|s| !s.is_empty()),
            fields: (!fields.is_empty()).then(|| fields.join(",")),
            files: args.files.clone(),
        })
    }
}

pub async fn run(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let namespaces = if args.all_namespaces {
        if !global.namespace.is_empty() {
            return Err(usage("-A and -n cannot be used together"));
        }
        Namespaces::All
    } else {
        for namespace in &global.namespace {
            validate_dns_label("namespace", namespace)?;
        }
        // Empty: the context's namespace, known once connected.
        let mut list = global.namespace.clone();
        list.sort();
        list.dedup();
        Namespaces::Some(list)
    };
    let mut options = Options::resolve(&args, &namespaces)?;
    let kube = kubeclient::connect(global).await?;
    let namespaces = match namespaces {
        Namespaces::Some(list) if list.is_empty() => Namespaces::Some(vec![kube.namespace.clone()]),
        other => other,
    };
    let scopes = watch::scopes(&kube, &namespaces, &mut options).await?;

    let cancel = CancellationToken::new();
    let (sink, batches) = mpsc::channel(output::QUEUED_BATCHES);
    let (to_writer, from_relay) = mpsc::channel(output::QUEUED_BATCHES);
    let writer = output::spawn_writer(from_relay);
    let mut relay = match args.merge_by_time {
        Some(window) => tokio::spawn(merge::run(batches, to_writer, window)),
        None => tokio::spawn(output::forward(batches, to_writer)),
    };
    let follow = !args.no_follow;
    let file_lines = match (args.tail, follow) {
        (n, _) if n >= 0 => Some(n as u64),
        (_, true) => Some(10),
        (_, false) => None,
    };
    let timestamps = options.formatter.timestamps || options.formatter.format == Format::Json;
    let shared = Arc::new(Shared::new(
        options.formatter,
        sink,
        args.max_log_requests,
        follow,
        args.since,
        (args.tail >= 0).then_some(args.tail),
        args.merge_by_time.is_some(),
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
    let describe = watch::describe(&scopes, args.query.as_deref());
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
