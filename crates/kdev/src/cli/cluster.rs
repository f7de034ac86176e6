//! `kdev cluster` flags.

use clap::{Args, Subcommand, ValueEnum};

use super::parse_duration;

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
        /// Which nodes: real (kubelet, containerd, runc; the default where the machine can run containers), kwok (fake, no containers), or both (the real one tainted kdev.dev/node=real:NoSchedule).
        #[arg(long, value_enum)]
        node: Option<NodeArg>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NodeArg {
    Real,
    Kwok,
    Both,
}

impl NodeArg {
    pub fn nodes(self) -> crate::cluster::Nodes {
        match self {
            NodeArg::Real => crate::cluster::Nodes::Real,
            NodeArg::Kwok => crate::cluster::Nodes::Kwok,
            NodeArg::Both => crate::cluster::Nodes::Both,
        }
    }
}

impl ClusterArgs {
    /// The capability's view: what to do, to which cluster.
    pub fn resolve(self) -> crate::cluster::Action {
        use crate::cluster::Action;
        match self.command {
            ClusterCommand::Up {
                name,
                timeout,
                node,
            } => Action::Up {
                name: name.name,
                timeout,
                nodes: node.map(NodeArg::nodes),
            },
            ClusterCommand::Down { name } => Action::Down { name: name.name },
            ClusterCommand::Kubeconfig { name } => Action::Kubeconfig { name: name.name },
        }
    }
}
