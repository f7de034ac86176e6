//! `kdev agent` flags (what a proxy Pod runs).

use std::net::SocketAddr;

use clap::Args;

use crate::agent::Config;

#[derive(Debug, Args)]
#[command(after_help = "Example (what a proxy Pod runs):\n  kdev agent --port 8080 --port 9090")]
pub struct AgentArgs {
    /// Where the CLI's tunnel connects.
    #[arg(long, default_value = "0.0.0.0:7355")]
    pub tunnel: SocketAddr,
    /// A container port to serve, as PORT (bound on 0.0.0.0) or PORT=ADDR:BIND (bound there).
    #[arg(long = "port", value_name = "PORT[=ADDR:BIND]")]
    pub ports: Vec<String>,
    /// Resolve NAME to IP instead of asking DNS (repeatable), for clusters without cluster DNS.
    #[arg(long = "resolve", value_name = "NAME=IP")]
    pub resolve: Vec<String>,
}

impl AgentArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        Ok(Config {
            tunnel: self.tunnel,
            ports: self
                .ports
                .iter()
                .map(|p| crate::agent::parse_port(p))
                .collect::<Result<_, _>>()?,
            resolve: crate::agent::parse_resolve(&self.resolve)?,
        })
    }
}
