//! `kdev agent` flags (what a proxy Pod runs).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::agent::Config;

#[derive(Debug, Args)]
#[command(
    after_help = "Example (what a proxy Pod runs):\n  kdev agent --token-file /var/run/kdev/token --port 8080"
)]
pub struct AgentArgs {
    /// Where the CLI's tunnel connects (a port-forward reaches the pod's loopback).
    #[arg(long, default_value = "127.0.0.1:7355")]
    pub tunnel: SocketAddr,
    /// The session's token (32 bytes, from the session's Secret).
    #[arg(long, value_name = "PATH")]
    pub token_file: PathBuf,
    /// Where readiness is answered, for `kdev __agent-ready`.
    #[arg(long, default_value = "127.0.0.1:7356")]
    pub health: SocketAddr,
    /// A container port to serve, as PORT (bound on 0.0.0.0) or PORT=ADDR:BIND (bound there).
    #[arg(long = "port", value_name = "PORT[=ADDR:BIND]")]
    pub ports: Vec<String>,
    /// Resolve NAME to IP instead of asking DNS (repeatable), for clusters without cluster DNS.
    #[arg(long = "resolve", value_name = "NAME=IP")]
    pub resolve: Vec<String>,
}

impl AgentArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        let bytes = std::fs::read(&self.token_file).map_err(|err| {
            crate::error::usage(format!(
                "failed to read --token-file {}: {err}",
                self.token_file.display()
            ))
        })?;
        let token = kdev_contract::tunnel::auth::token_from(&bytes).ok_or_else(|| {
            crate::error::usage(format!(
                "--token-file {} does not hold a {}-byte session token",
                self.token_file.display(),
                kdev_contract::tunnel::auth::TOKEN_LEN
            ))
        })?;
        Ok(Config {
            tunnel: self.tunnel,
            token,
            health: self.health,
            ports: self
                .ports
                .iter()
                .map(|p| crate::agent::parse_port(p))
                .collect::<Result<_, _>>()?,
            resolve: crate::agent::parse_resolve(&self.resolve)?,
        })
    }
}
