//! `kdev sleep`, `kdev wake` and `kdev envs` flags.

use clap::Args;

use super::cleanup::OutputArg;
use crate::envs::{Config, Direction, ListConfig, Selection, workload};
use crate::error;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kdev sleep -n team-a -n team-b --reason 'away until Monday'\n  kdev wake -l team=payments --dry-run\n  kdev sleep deploy/web sts/db -n team-a"
)]
pub struct ChangeArgs {
    /// Single workloads (deploy/NAME, sts/NAME, cronjob/NAME) in the one -n namespace; without them, whole environments.
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
        Ok(Config {
            direction,
            selection: Selection {
                namespaces: namespaces.to_vec(),
                selector: self.selector,
                all: self.all,
                workloads,
            },
            dry_run: self.dry_run,
            reason: self.reason,
            json: self.output == OutputArg::Json,
            actor: None,
            grace: None,
        })
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  kdev envs\n  kdev envs -l team=payments -o json")]
pub struct EnvsArgs {
    /// Environments (namespaces) whose labels match this selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format: a table, or JSON.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputArg,
}

impl EnvsArgs {
    pub fn resolve(self, namespaces: &[String]) -> ListConfig {
        ListConfig {
            selection: Selection {
                namespaces: namespaces.to_vec(),
                selector: self.selector,
                all: false,
                workloads: Vec::new(),
            },
            json: self.output == OutputArg::Json,
        }
    }
}
