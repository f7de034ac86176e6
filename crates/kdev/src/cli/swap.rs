//! `kdev swap` flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::error::usage;
use crate::swap::workload::{WorkloadKind, WorkloadRef};
use crate::swap::{Config, Mode};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kdev swap deploy/web --port 8080 --forward svc/db:5432 -- npm run dev\n  kdev swap deploy/my-operator -- go run ./cmd/manager      # as the operator's ServiceAccount\n  kdev swap deploy/api --watch src --build 'cargo build' -- target/debug/api   # restarted on save"
)]
pub struct SwapArgs {
    /// The workload to swap: deploy/NAME, sts/NAME, rs/NAME or rollout/NAME (Argo Rollouts).
    pub target: String,
    /// A container port (number or name) and the local port serving it; repeatable (default: every TCP port, same number).
    #[arg(long = "port", value_name = "REMOTE[:LOCAL]")]
    pub ports: Vec<String>,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kdev run deploy/api -- ./migrate up                 # a migration as the app would run it\n  kdev run deploy/api -- python3                      # a REPL with the app's env, files and network\n  kdev run deploy/api --env-file .env -- go test ./...   # tests against the environment's services\n\nThe Deployment keeps running and serving; nothing routes to the session. Several kdev run sessions of one Deployment may run at once."
)]
pub struct RunArgs {
    /// The workload whose container's environment the command gets: deploy/NAME, sts/NAME, rs/NAME or rollout/NAME.
    pub target: String,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// What `kdev swap` and `kdev run` share.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The container whose environment the command gets (default: the only one, or the pod's default-container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// A StatefulSet's pod whose identity the command gets (its name, downward-API fields, and with swap its DNS name): 0 by default.
    #[arg(long, value_name = "N")]
    pub ordinal: Option<u32>,
    /// Reach svc/NAME:PORT (or HOST:PORT) from the cluster's side at 127.0.0.1:LOCAL; sets NAME_SERVICE_HOST/PORT.
    #[arg(long = "forward", value_name = "svc/NAME:PORT[:LOCAL]")]
    pub forwards: Vec<String>,
    /// Also write the container's environment to this file (KEY=VALUE lines, mode 0600).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Where to write the container's ConfigMap and Secret volumes (default: a private temp dir, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// How long the cluster waits for a silent CLI before ending the session (a swap's Deployment is restored).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait for the session's pod to run and the tunnel to come up.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The agent image for the session's pod.
    #[arg(long, env = "KDEV_AGENT_IMAGE")]
    pub agent_image: Option<String>,
    /// Run the command as the Deployment's ServiceAccount: a short-lived token bound to the session, a kubeconfig and the in-cluster files under $KDEV_ROOT (default: on when the pod template names a ServiceAccount).
    #[arg(long, conflicts_with = "no_service_account")]
    pub as_service_account: bool,
    /// Run the command with your own kubeconfig, not as the Deployment's ServiceAccount.
    #[arg(long)]
    pub no_service_account: bool,
    /// Restart the command when a file or folder under PATH changes (repeatable).
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,
    /// With --watch: a glob of paths to ignore (repeatable; .git, target, .kdev and editor swap files always are).
    #[arg(long, value_name = "GLOB", requires = "watch")]
    pub watch_ignore: Vec<String>,
    /// Run this (with sh -c) before the command starts, and after each change before it restarts; a failed build keeps the running command serving.
    #[arg(long, value_name = "CMD")]
    pub build: Option<String>,
    /// The command's network: `view` gives it the pod's (the cluster's names and addresses, through the session, in namespaces of its own; this machine's loopback and internet as before); `host` is this machine's only.
    #[arg(long, value_enum, default_value = "view")]
    pub network: Network,
    /// With --network view: also reach this IPv4 range through the cluster (repeatable), beside the Service and pod ranges kdev finds.
    #[arg(long = "cluster-cidr", value_name = "CIDR", value_parser = parse_cidr)]
    pub cluster_cidrs: Vec<crate::netview::Cidr>,
    /// The command to run locally.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    View,
    Host,
}

fn parse_cidr(text: &str) -> Result<crate::netview::Cidr, String> {
    text.parse()
}

impl SwapArgs {
    /// Checks what can be checked before any request.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let target = parse_target(&self.target, Mode::Swap)?;
        self.session.resolve(Mode::Swap, target, self.ports)
    }
}

impl RunArgs {
    /// Checks what can be checked before any request.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let target = parse_target(&self.target, Mode::Run)?;
        self.session.resolve(Mode::Run, target, Vec::new())
    }
}

impl SessionArgs {
    fn resolve(
        self,
        mode: Mode,
        target: WorkloadRef,
        ports: Vec<String>,
    ) -> anyhow::Result<Config> {
        if self.ttl < Duration::from_secs(3) || self.ttl > Duration::from_secs(3600) {
            return Err(usage("--ttl must be between 3s and 1h"));
        }
        if self.ordinal.is_some() && target.kind != WorkloadKind::StatefulSet {
            return Err(usage(format!(
                "--ordinal is for StatefulSets; {target} has no ordinals"
            )));
        }
        Ok(Config {
            mode,
            target,
            ordinal: self.ordinal,
            container: self.container,
            ports,
            forwards: self.forwards,
            env_file: self.env_file,
            mount: self.mount,
            ttl: self.ttl,
            timeout: self.timeout,
            agent_image: self.agent_image,
            identity: match (self.as_service_account, self.no_service_account) {
                (true, _) => crate::swap::identity::Choice::On,
                (_, true) => crate::swap::identity::Choice::Off,
                _ => crate::swap::identity::Choice::Auto,
            },
            reload: crate::swap::reload::Config {
                paths: self.watch,
                ignore: self.watch_ignore,
                build: self.build,
            },
            network: match self.network {
                Network::Host if !self.cluster_cidrs.is_empty() => {
                    return Err(usage("--cluster-cidr needs --network view (the default)"));
                }
                Network::Host => crate::swap::NetworkMode::Host,
                Network::View => crate::swap::NetworkMode::View {
                    cluster_cidrs: self.cluster_cidrs,
                },
            },
            command: self.command,
        })
    }
}

/// Parses `KIND/NAME` for `kdev swap` or `kdev run`, with kubectl's
/// spellings of the kinds (`deploy`, `deployment.apps`, `sts`, `rs`, `ro`, …).
pub fn parse_target(text: &str, mode: Mode) -> anyhow::Result<WorkloadRef> {
    let verb = mode.verb();
    let (kind, name) = match text.split_once('/') {
        Some((kind, name)) => match WorkloadKind::parse(kind) {
            Some(kind) => (kind, name),
            None => {
                return Err(usage(format!(
                    "kdev {verb} takes a Deployment, StatefulSet, ReplicaSet or Argo Rollout (deploy/web, sts/web, rs/web, rollout/web), not a {kind}"
                )));
            }
        },
        None => {
            return Err(usage(format!(
                "{text:?} names no kind: write deploy/{text} (or sts/, rs/, rollout/)"
            )));
        }
    };
    crate::k8s::validate_subdomain(&format!("{} name", kind.name()), name)?;
    Ok(WorkloadRef {
        kind,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_target_swap(text: &str) -> anyhow::Result<String> {
        parse_target(text, Mode::Swap).map(|t| t.to_string())
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target_swap("deploy/web").expect("valid"),
            "deployment/web"
        );
        assert_eq!(
            parse_target_swap("deployment.apps/web").expect("valid"),
            "deployment/web"
        );
        assert_eq!(
            parse_target_swap("sts/kafka").expect("valid"),
            "statefulset/kafka"
        );
        assert_eq!(
            parse_target_swap("rs/web-1").expect("valid"),
            "replicaset/web-1"
        );
        assert_eq!(
            parse_target_swap("rollout/web").expect("valid"),
            "rollout/web"
        );
        assert!(
            parse_target_swap("cronjob/web")
                .unwrap_err()
                .to_string()
                .contains("kdev swap takes a Deployment, StatefulSet")
        );
        assert!(
            parse_target_swap("web")
                .unwrap_err()
                .to_string()
                .contains("deploy/web")
        );
        assert!(parse_target_swap("deploy/Web").is_err());
    }

    /// Regression: names with dots are valid Deployment names (DNS-1123
    /// subdomains) and were rejected.
    #[test]
    fn deployment_names_with_dots_are_accepted() {
        assert_eq!(
            parse_target_swap("deploy/web.v2").expect("valid"),
            "deployment/web.v2"
        );
        assert!(parse_target_swap("deploy/web..v2").is_err());
    }

    proptest! {
        #[test]
        fn targets_never_panic(text in any::<String>()) {
            let _ = parse_target(&text, Mode::Swap);
            let _ = parse_target(&text, Mode::Run);
        }
    }
}
