//! `kdev controller` flags.

use clap::Args;

use super::parse_duration;
use crate::controller::Config;

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

impl ControllerArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        if let Some(ns) = &self.lease_namespace {
            crate::k8s::validate_dns_label("--lease-namespace", ns)?;
        }
        if let Some(ns) = &self.watch_namespace {
            crate::k8s::validate_dns_label("--watch-namespace", ns)?;
        }
        Ok(Config {
            listen: self.listen,
            lease_namespace: self.lease_namespace,
            identity: self.identity,
            watch_namespace: self.watch_namespace,
            telepresence_min_age: self.telepresence.then_some(self.telepresence_min_age),
        })
    }
}
