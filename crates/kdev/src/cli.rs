//! Command-line arguments, kubectl-style.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

#[derive(Debug, Parser)]
#[command(
    name = "kdev",
    version,
    about = "Develop against Kubernetes: swap a Deployment for a local process, follow logs, run a local cluster.",
    propagate_version = true,
    after_help = "Example:\n  kdev cluster up && export KUBECONFIG=$(kdev cluster kubeconfig)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command takes, named and read as kubectl does.
#[derive(Args, Clone, Debug, Default)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, a list of files, or ~/.kube/config; in a pod, the service account).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace to work in (default: the context's namespace, else "default"); `kdev logs` takes several.
    #[arg(short = 'n', long, global = true, value_name = "NAME")]
    pub namespace: Vec<String>,
    /// More diagnostics on stderr (-v, -vv, -vvv); RUST_LOG overrides.
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replace a Deployment's container with a local process; the cluster restores itself if kdev dies.
    Swap(crate::swap::SwapArgs),
    /// Follow the logs of many pods and containers, and files inside them, in one stream.
    Logs(crate::logs::LogsArgs),
    /// List swap sessions: holder, target, age, state.
    Sessions(crate::swap::sweep::SessionsArgs),
    /// Restore expired or orphaned swap sessions now (the reaper's job, for clusters without the controller).
    Sweep(crate::swap::sweep::SweepArgs),
    /// Run a local, container-free Kubernetes cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok).
    Cluster(ClusterArgs),
    /// Run kdev's in-cluster controller (deployed from deploy/).
    Controller(ControllerArgs),
    /// Run the agent of a swap's proxy Pod (started by `kdev swap`, not by hand).
    #[command(hide = true)]
    Agent(crate::agent::AgentArgs),
    /// Print kdev's version and, unless --client, the API server's.
    Version(VersionArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  kdev completion bash > /etc/bash_completion.d/kdev")]
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Args, Clone)]
pub struct ClusterName {
    /// The cluster's name; several clusters can run side by side.
    #[arg(long, default_value = "kdev", env = "KDEV_CLUSTER")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster and wait until a node is Ready (returns at once if it already runs).
    #[command(after_help = "Example:\n  kdev cluster up --name demo")]
    Up {
        #[command(flatten)]
        name: ClusterName,
        /// How long to wait for the cluster to be ready.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Stop a local cluster and remove its files; no process is left behind.
    #[command(after_help = "Example:\n  kdev cluster down --name demo")]
    Down {
        #[command(flatten)]
        name: ClusterName,
    },
    /// Print the path of a local cluster's kubeconfig.
    #[command(
        after_help = "Example:\n  kubectl --kubeconfig \"$(kdev cluster kubeconfig)\" get nodes"
    )]
    Kubeconfig {
        #[command(flatten)]
        name: ClusterName,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kdev controller --listen 0.0.0.0:8080")]
pub struct ControllerArgs {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Namespace of the leader-election Lease (default: the pod's namespace, else the -n namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the leader election (default: the pod's name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reap swap sessions in this namespace only (default: every namespace; needs only namespaced RBAC).
    #[arg(long, value_name = "NAME")]
    pub watch_namespace: Option<String>,
    /// Also clean up after dead telepresence 1 proxies, every 30s (needs deploy/telepresence's RBAC).
    #[arg(long)]
    pub telepresence: bool,
    /// With --telepresence: leave proxies younger than this alone.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub telepresence_min_age: std::time::Duration,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kdev version --client")]
pub struct VersionArgs {
    /// Print only kdev's own version; do not contact the API server.
    #[arg(long)]
    pub client: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// Writes the completion script for `shell` to stdout.
pub fn completion(shell: Shell) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "kdev", &mut std::io::stdout());
}

/// Parses "90s", "2m", "1h30m", "500ms" (Go's duration syntax, as kubectl's flags take).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad =
        || format!("invalid duration {text:?}: use a number with a unit, like 30s, 2m or 1h30m");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(bad()),
        };
        total += std::time::Duration::from_secs_f64(seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "10", "s", "10x", "ten seconds"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["kdev", "version", "-n", "team", "--context", "dev", "-vv"])
            .expect("valid arguments");
        assert_eq!(cli.global.namespace, ["team"]);
        assert_eq!(cli.global.context.as_deref(), Some("dev"));
        assert_eq!(cli.global.verbose, 2);
    }
}
