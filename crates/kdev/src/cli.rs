//! Command-line arguments, kubectl-style: clap types only.
//!
//! Each command's flags resolve here into the configuration value of its
//! capability; no capability imports this module. `lib.rs` dispatches.

mod agent;
mod cleanup;
mod cluster;
mod controller;
mod envs;
mod image;
mod logs;
mod swap;
mod test;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

pub use self::agent::AgentArgs;
pub use self::cleanup::{SessionsArgs, SweepArgs};
pub use self::cluster::{ClusterArgs, ClusterCommand};
pub use self::controller::ControllerArgs;
pub use self::envs::{ChangeArgs, EnvsArgs, WakerServeArgs};
pub use self::image::{ImageArgs, ImageCommand};
pub use self::logs::LogsArgs;
pub use self::swap::{RunArgs, SwapArgs};
pub use self::test::TestArgs;
use crate::k8s;
pub use kdev_contract::duration::parse as parse_duration;

/// A duration that may count days (`14d`) or hours and less (`36h`).
pub fn parse_days(text: &str) -> Result<jiff::SignedDuration, String> {
    kdev_contract::envs::deletion::parse_days(text)
        .filter(|d| d.is_positive())
        .ok_or_else(|| {
            format!(
                "invalid duration {text:?}: use a number of days (14d) or a duration (36h, 90m)"
            )
        })
}

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

impl GlobalArgs {
    /// The client layer's own view of these flags.
    pub fn kube(&self) -> k8s::Flags {
        k8s::Flags {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespaces: self.namespace.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replace a Deployment's container with a local process; the cluster restores itself if kdev dies.
    Swap(SwapArgs),
    /// Run a command with a Deployment's environment, files, identity and network while the Deployment keeps serving.
    Run(RunArgs),
    /// Follow the logs of many pods and containers, and files inside them, in one stream.
    Logs(LogsArgs),
    /// List swap and run sessions: holder, target, age, state.
    Sessions(SessionsArgs),
    /// Restore expired or orphaned swap sessions and end expired run sessions now (the reaper's job, for clusters without the controller).
    Sweep(SweepArgs),
    /// Put dev environments (namespaces) or single workloads to sleep: scale to 0, suspend CronJobs, remember the sizes.
    Sleep(ChangeArgs),
    /// Wake sleeping environments or workloads: restore exactly the sizes they had.
    Wake(ChangeArgs),
    /// List dev environments: awake, asleep, waking or partly; sizes now and before; next scheduled change.
    Envs(EnvsArgs),
    /// Run declarative end-to-end tests written for kuttl or chainsaw, in parallel, each in a fresh namespace.
    Test(TestArgs),
    /// Run a local Kubernetes cluster: etcd, kube-apiserver, controller-manager, scheduler, a real node and/or kwok.
    Cluster(ClusterArgs),
    /// Run kdev's in-cluster controller (deployed from deploy/).
    Controller(ControllerArgs),
    /// Build OCI images without Docker and load them into a local cluster.
    Image(ImageArgs),
    /// Run the agent of a swap's proxy Pod (started by `kdev swap`, not by hand).
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Start a program that dies with its parent (how `kdev swap` starts the local command).
    #[command(hide = true, name = "__exec-child")]
    ExecChild(ExecChildArgs),
    /// Set up a command's network view inside its own namespaces (how `kdev swap` starts it).
    #[command(hide = true, name = "__netview")]
    Netview(NetviewArgs),
    /// Exit 0 when the agent answers on its readiness port (the proxy Pod's exec probe).
    #[command(hide = true, name = "__agent-ready")]
    AgentReady {
        #[arg(long, default_value = "127.0.0.1:7356")]
        health: std::net::SocketAddr,
    },
    /// Hold connections to a sleeping environment and wake it (what a waker Pod runs).
    #[command(hide = true, name = "__waker")]
    Waker(WakerServeArgs),
    /// Join a real node's network namespace to the host's API server (started by `kdev cluster up`).
    #[command(hide = true, name = "__node-proxy")]
    NodeProxy(NodeProxyArgs),
    /// Print kdev's version and, unless --client, the API server's.
    Version(VersionArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  kdev completion bash > /etc/bash_completion.d/kdev")]
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct NodeProxyArgs {
    /// The node's network namespace.
    #[arg(long)]
    pub netns: String,
    /// The API server's address inside the namespace.
    #[arg(long)]
    pub api_listen: std::net::SocketAddr,
    /// The API server on the host.
    #[arg(long)]
    pub api_upstream: std::net::SocketAddr,
    /// The unix socket for the API server's egress (HTTP CONNECT).
    #[arg(long)]
    pub connect_socket: PathBuf,
}

impl NodeProxyArgs {
    pub fn resolve(self) -> crate::cluster::netns::Config {
        crate::cluster::netns::Config {
            netns: self.netns,
            api_listen: self.api_listen,
            api_upstream: self.api_upstream,
            connect_socket: self.connect_socket,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExecChildArgs {
    /// The process id this program must die with.
    #[arg(long)]
    pub parent: i32,
    /// Enter a user namespace of its own first, mapping this UID:GID to the
    /// namespace's parent's root (the network view's command).
    #[arg(long, value_parser = parse_map_user)]
    pub map_user: Option<(u32, u32)>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn parse_map_user(text: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = text.split_once(':').ok_or("expected UID:GID")?;
    Ok((
        uid.parse()
            .map_err(|_| format!("{uid:?} is not a user id"))?,
        gid.parse()
            .map_err(|_| format!("{gid:?} is not a group id"))?,
    ))
}

#[derive(Debug, Args)]
pub struct NetviewArgs {
    /// The process id the helper must die with.
    #[arg(long)]
    pub parent: i32,
    /// kdev's control socket.
    #[arg(long)]
    pub control: PathBuf,
    /// The resolv.conf the command reads.
    #[arg(long)]
    pub resolv_conf: PathBuf,
    /// The nsswitch.conf the command reads.
    #[arg(long)]
    pub nsswitch_conf: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

impl NetviewArgs {
    pub fn resolve(self) -> crate::netview::helper::Args {
        crate::netview::helper::Args {
            parent: self.parent,
            control: self.control,
            resolv_conf: self.resolv_conf,
            nsswitch_conf: self.nsswitch_conf,
            command: self.command,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
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
