//! `kdev sleep`, `kdev wake` and `kdev envs` flags.

use clap::{Args, Subcommand};

use super::cleanup::OutputArg;
use crate::envs::{Config, Direction, EnvsAction, ListConfig, Scope, Selection, workload};
use crate::error;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kdev sleep -n team-a -n team-b --reason 'away until Monday'\n  kdev wake -l team=payments --dry-run\n  kdev sleep deploy/web sts/db -n team-a"
)]
pub struct ChangeArgs {
    /// Single workloads (deploy/NAME, sts/NAME, ds/NAME, rollout/NAME, cronjob/NAME, job/NAME, scaledobject/NAME) in the one -n namespace; without them, whole environments.
    #[arg(value_name = "WORKLOAD")]
    pub workloads: Vec<String>,
    /// Environments (namespaces) whose labels match this selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Every environment (namespace).
    #[arg(short = 'A', long, visible_alias = "all-namespaces")]
    pub all: bool,
    /// Say what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why, for the Event and the history.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Output format: a line per workload, or one JSON object per workload.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputArg,
    #[command(flatten)]
    pub wakers: WakerArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// How a sleep wakes on request.
#[derive(Debug, Args)]
pub struct WakerArgs {
    /// When sleeping, place no wakers: a request to a sleeping Service then gets no answer.
    #[arg(long)]
    pub no_wake_on_request: bool,
    /// The wakers' image (kdev's agent image).
    #[arg(long, env = "KDEV_AGENT_IMAGE", value_name = "IMAGE")]
    pub agent_image: Option<String>,
}

impl WakerArgs {
    pub fn image(self) -> Option<String> {
        (!self.no_wake_on_request).then(|| {
            self.agent_image
                .unwrap_or_else(kdev_contract::keys::default_agent_image)
        })
    }
}

/// Which namespaces are environments.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Namespaces whose labels match this selector are environments: what -A, -l, the scheduler and the dashboard act on ("" for every namespace).
    #[arg(
        long,
        env = "KDEV_ENVIRONMENTS",
        default_value = kdev_contract::envs::ENVIRONMENT_LABEL,
        value_name = "SELECTOR"
    )]
    pub environments: String,
    /// A namespace never put to sleep or woken, besides kube-system, kube-public and kube-node-lease; repeatable.
    #[arg(long, value_name = "NAMESPACE")]
    pub protected: Vec<String>,
}

impl ScopeArgs {
    pub fn resolve(&self) -> anyhow::Result<Scope> {
        let selector = self.environments.parse().map_err(|err| {
            error::usage(format!(
                "--environments {:?} is not a label selector: {err}",
                self.environments
            ))
        })?;
        for namespace in &self.protected {
            crate::k8s::validate_dns_label("--protected", namespace)?;
        }
        Ok(Scope::new(selector, self.protected.iter().cloned()))
    }
}

/// Checks a user's `-l` before any request, as kubectl does.
fn check_selector(selector: &Option<String>) -> anyhow::Result<()> {
    if let Some(text) = selector {
        text.parse::<kdev_contract::selector::Selector>()
            .map_err(|err| error::usage(format!("-l {text:?} is not a label selector: {err}")))?;
    }
    Ok(())
}

impl ChangeArgs {
    pub fn resolve(self, direction: Direction, namespaces: &[String]) -> anyhow::Result<Config> {
        let workloads = self
            .workloads
            .iter()
            .map(|text| workload::parse_ref(text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !workloads.is_empty() && (self.all || self.selector.is_some() || namespaces.len() > 1) {
            return Err(error::usage(
                "single workloads live in one namespace: name it with one -n, without -A or -l",
            ));
        }
        if self.all && self.selector.is_some() {
            return Err(error::usage(
                "-A (every environment) and -l SELECTOR exclude each other",
            ));
        }
        check_selector(&self.selector)?;
        let scope = self.scope.resolve()?;
        for namespace in namespaces {
            scope.check_named(namespace)?;
        }
        Ok(Config {
            direction,
            selection: Selection {
                namespaces: namespaces.to_vec(),
                selector: self.selector,
                all: self.all,
                scope,
                workloads,
                except_own_schedules: false,
            },
            dry_run: self.dry_run,
            reason: self.reason,
            json: self.output == OutputArg::Json,
            actor: None,
            grace: None,
            waker: self.wakers.image(),
        })
    }
}

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  kdev envs\n  kdev envs -l team=payments -o json\n  kdev envs --history -n team-a\n  kdev envs --savings\n  kdev envs keep-awake team-a --until 4h --reason 'release tonight'\n  kdev envs sleep-now team-a\n  kdev envs delete-idle --dry-run"
)]
pub struct EnvsArgs {
    #[command(subcommand)]
    pub command: Option<EnvsCommand>,
    /// Environments (namespaces) whose labels match this selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format: a table, or JSON.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputArg,
    /// List the environments' sleeps and wakes (their Events, which the API server keeps for an hour by default) instead.
    #[arg(long)]
    pub history: bool,
    /// Show what sleeping saved instead: pod-hours, CPU-hours and memory GiB-hours asleep over the last 7 and 30 days, per environment and in total.
    #[arg(long, conflicts_with = "history")]
    pub savings: bool,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// Wake an environment now and keep it awake until a time, whatever its schedule says.
    KeepAwake {
        /// The environment (namespace).
        namespace: String,
        /// Until when: an RFC 3339 time (2026-12-02T23:00:00Z) or a duration from now (4h, 90m).
        #[arg(long, value_name = "TIME")]
        until: String,
        /// Why, for the Events.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete environments left idle too long (kdev.dev/delete-after-idle on the namespace, or --after), each warned first; --dry-run only says what would happen. The controller does the same by itself with --delete-after-idle.
    DeleteIdle {
        /// The environments (namespaces); none: every environment (-l narrows them).
        namespaces: Vec<String>,
        /// Say what would happen; change and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// For environments without kdev.dev/delete-after-idle (14d, 36h); default: only those that have it.
        #[arg(long, value_parser = super::parse_days, value_name = "DURATION")]
        after: Option<jiff::SignedDuration>,
        /// How long before a deletion its warning comes.
        #[arg(long, value_parser = super::parse_days, default_value = "3d", value_name = "DURATION")]
        warning: jiff::SignedDuration,
        /// Where the Event of a deletion goes (it outlives the namespace): the controller's namespace.
        #[arg(long, default_value = "kdev-system", value_name = "NAMESPACE")]
        controller_namespace: String,
    },
    /// Open the environments dashboard: a port-forward to the controller's dashboard, its URL printed, a browser opened when there is one.
    Dashboard(DashboardArgs),
    /// Put an environment to sleep now, ending any keep-awake; it wakes at its schedule's next wake or on a request.
    SleepNow {
        /// The environment (namespace).
        namespace: String,
        #[command(flatten)]
        wakers: WakerArgs,
        /// Why, for the Events.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kdev envs dashboard\n  kdev envs dashboard --port 9000 --no-browser"
)]
pub struct DashboardArgs {
    /// Where the kdev controller runs.
    #[arg(long, default_value = "kdev-system", value_name = "NAMESPACE")]
    pub controller_namespace: String,
    /// The local port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    /// The dashboard's port in the controller pod (its --dashboard-listen).
    #[arg(long, default_value_t = 8081)]
    pub remote_port: u16,
    /// Print the URL only; open no browser.
    #[arg(long)]
    pub no_browser: bool,
}

impl DashboardArgs {
    pub fn resolve(&self) -> anyhow::Result<crate::dashboard::open::Open> {
        crate::k8s::validate_dns_label("--controller-namespace", &self.controller_namespace)?;
        Ok(crate::dashboard::open::Open {
            namespace: self.controller_namespace.clone(),
            port: self.port,
            remote_port: self.remote_port,
            browser: !self.no_browser,
        })
    }
}

impl EnvsArgs {
    /// `kdev envs dashboard`, which is not an environments action.
    pub fn dashboard(&self) -> Option<&DashboardArgs> {
        match &self.command {
            Some(EnvsCommand::Dashboard(args)) => Some(args),
            _ => None,
        }
    }

    pub fn resolve(self, namespaces: &[String]) -> anyhow::Result<EnvsAction> {
        let json = self.output == OutputArg::Json;
        check_selector(&self.selector)?;
        let scope = self.scope.resolve()?;
        let change = |direction, namespace: String, reason, dry_run| -> anyhow::Result<Config> {
            crate::k8s::validate_dns_label("namespace", &namespace)?;
            scope.check_named(&namespace)?;
            Ok(Config {
                direction,
                selection: Selection {
                    namespaces: vec![namespace],
                    scope: scope.clone(),
                    ..Selection::default()
                },
                dry_run,
                reason,
                json,
                actor: None,
                grace: None,
                waker: None,
            })
        };
        Ok(match self.command {
            Some(EnvsCommand::KeepAwake {
                namespace,
                until,
                reason,
                dry_run,
            }) => EnvsAction::KeepAwake {
                until: parse_until(&until)?,
                config: change(Direction::Wake, namespace, reason, dry_run)?,
            },
            Some(EnvsCommand::SleepNow {
                namespace,
                wakers,
                reason,
                dry_run,
            }) => EnvsAction::SleepNow(Config {
                waker: wakers.image(),
                ..change(Direction::Sleep, namespace, reason, dry_run)?
            }),
            Some(EnvsCommand::DeleteIdle {
                namespaces: named,
                dry_run,
                after,
                warning,
                controller_namespace,
            }) => {
                crate::k8s::validate_dns_label("--controller-namespace", &controller_namespace)?;
                for namespace in &named {
                    crate::k8s::validate_dns_label("namespace", namespace)?;
                    scope.check_named(namespace)?;
                }
                EnvsAction::DeleteIdle {
                    selection: Selection {
                        all: named.is_empty(),
                        namespaces: named,
                        selector: self.selector,
                        scope,
                        ..Selection::default()
                    },
                    rule: crate::envs::idle::Rule {
                        default_after: after,
                        warning,
                        home: controller_namespace,
                        by: crate::host::user_at_host(),
                        dry_run,
                    },
                    json,
                }
            }
            Some(EnvsCommand::Dashboard(_)) => {
                anyhow::bail!("kdev envs dashboard opens the dashboard; it lists nothing")
            }
            None => EnvsAction::List(ListConfig {
                selection: Selection {
                    namespaces: namespaces.to_vec(),
                    selector: self.selector,
                    all: false,
                    scope,
                    workloads: Vec::new(),
                    except_own_schedules: false,
                },
                json,
                history: self.history,
                savings: self.savings,
            }),
        })
    }
}

/// `--until`: an RFC 3339 time, or a duration from now.
fn parse_until(text: &str) -> anyhow::Result<jiff::Timestamp> {
    crate::envs::parse_until(text, jiff::Timestamp::now())
        .map_err(|err| error::usage(format!("--until {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn until_is_a_time_or_a_duration() {
        assert_eq!(
            parse_until("2026-12-02T23:00:00Z").unwrap(),
            "2026-12-02T23:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        let later = parse_until("4h").unwrap();
        assert!(later > jiff::Timestamp::now());
        let err = parse_until("tonight").unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    proptest! {
        #[test]
        fn any_until_is_a_time_or_an_error_never_a_panic(text in "\\PC{0,40}") {
            let _ = parse_until(&text);
        }
    }
}

/// `kdev __waker`: what a sleeping environment's waker Pod runs.
#[derive(Debug, Args)]
pub struct WakerServeArgs {
    /// The sleeping workload it stands for (for messages).
    #[arg(long, value_name = "KIND/NAME")]
    pub workload: String,
    /// The workload's pods, as a label selector.
    #[arg(long, value_name = "SELECTOR")]
    pub selector: String,
    /// A container port to hold connections on (repeatable).
    #[arg(long = "port", value_name = "PORT", required = true)]
    pub ports: Vec<u16>,
    /// What a request wakes (repeatable; default every Deployment and StatefulSet of the namespace).
    #[arg(long = "wake", value_name = "WORKLOAD")]
    pub wake: Vec<String>,
    /// How long a connection waits for a Ready pod before it gets a clear failure.
    #[arg(long, default_value = "120s", value_parser = super::parse_duration)]
    pub hold: std::time::Duration,
    /// How long it keeps forwarding after its readiness fails.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub drain: std::time::Duration,
    /// Where readiness is answered, for `kdev __agent-ready`.
    #[arg(long, default_value = crate::envs::place::HEALTH)]
    pub health: std::net::SocketAddr,
    /// The namespace's kdev.dev/sleep-patches rules at the sleep: what they slept wakes too.
    #[arg(long, value_name = "JSON")]
    pub sleep_patches: Option<String>,
}

impl WakerServeArgs {
    pub fn resolve(self) -> anyhow::Result<crate::envs::waker::Serve> {
        Ok(crate::envs::waker::Serve {
            workload: workload::parse_ref(&self.workload)?,
            selector: self.selector,
            ports: self.ports,
            wake: self
                .wake
                .iter()
                .map(|text| workload::parse_ref(text))
                .collect::<anyhow::Result<_>>()?,
            hold: self.hold,
            drain: self.drain,
            health: self.health,
            patches: match self.sleep_patches {
                Some(rules) => {
                    kdev_contract::envs::patch::parse_rules(&rules)
                        .map_err(|err| crate::error::usage(format!("--sleep-patches: {err}")))?;
                    Some(rules)
                }
                None => None,
            },
        })
    }
}
