//! Cleaning up what others left behind: `kdev sweep` restores dead swap
//! sessions now (the reaper's job, for clusters without the controller) and,
//! with `--telepresence`, Deployments left at 0 by dead telepresence 1
//! proxies; `kdev sessions` lists swap sessions.
//!
//! - [`sweep`]: the two commands.
//! - [`telepresence`]: finding, probing and restoring telepresence 1 proxies
//!   (also run by the controller).

pub mod sweep;
pub mod telepresence;

use std::time::Duration;

pub use self::sweep::{sessions, sweep};

/// How `kdev sweep` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// `kdev sweep`'s configuration.
#[derive(Debug)]
pub struct SweepConfig {
    pub all_namespaces: bool,
    pub dry_run: bool,
    /// Also handle telepresence 1 proxies older than this (off when `None`).
    pub telepresence_min_age: Option<Duration>,
    pub output: Output,
}
