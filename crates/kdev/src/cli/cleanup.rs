//! `kdev sweep` and `kdev sessions` flags.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::parse_duration;
use crate::cleanup::{Output, SweepConfig};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kdev sweep -A --telepresence --dry-run -o json")]
pub struct SweepArgs {
    /// Sweep every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Say what would be restored; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also restore Deployments left at 0 by dead telepresence 1 proxies, and delete the proxies.
    #[arg(long)]
    pub telepresence: bool,
    /// With --telepresence: leave proxies younger than this alone.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub min_age: Duration,
    /// Output format: lines for a person, or one JSON object per action.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
}

impl SweepArgs {
    pub fn resolve(self) -> SweepConfig {
        SweepConfig {
            all_namespaces: self.all_namespaces,
            dry_run: self.dry_run,
            telepresence_min_age: self.telepresence.then_some(self.min_age),
            output: match self.output {
                OutputArg::Text => Output::Text,
                OutputArg::Json => Output::Json,
            },
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kdev sessions -A")]
pub struct SessionsArgs {
    /// List sessions in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}
