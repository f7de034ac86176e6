//! `kdev logs` flags, resolved into [`crate::logs::Config`].

use std::io::IsTerminal as _;
use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::error::usage;
use crate::k8s::{validate_dns_label, validate_subdomain};
use crate::logs::output::{Color, Format, Formatter};
use crate::logs::select::{self, Filter, Query, States};
use crate::logs::{Config, Namespaces, Options, file};

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

impl LogsArgs {
    /// Validates the arguments; every mistake is a usage error naming the flag.
    pub fn resolve(self, namespace_flags: &[String]) -> anyhow::Result<Config> {
        let namespaces = if self.all_namespaces {
            if !namespace_flags.is_empty() {
                return Err(usage("-A and -n cannot be used together"));
            }
            Namespaces::All
        } else {
            for namespace in namespace_flags {
                validate_dns_label("namespace", namespace)?;
            }
            // Empty: the context's namespace, known once connected.
            let mut list = namespace_flags.to_vec();
            list.sort();
            list.dedup();
            Namespaces::Some(list)
        };
        let options = self.options(&namespaces)?;
        Ok(Config {
            options,
            namespaces,
            query_text: self.query,
            since: self.since,
            tail: (self.tail >= 0).then_some(self.tail),
            follow: !self.no_follow,
            max_log_requests: self.max_log_requests,
            merge_by_time: self.merge_by_time,
        })
    }

    fn options(&self, namespaces: &Namespaces) -> anyhow::Result<Options> {
        let args = self;
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
            if *kind != select::Kind::Pod {
                validate_subdomain(&format!("{kind} name"), name)?;
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
