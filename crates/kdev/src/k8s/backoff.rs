//! The one retry policy kdev uses everywhere it waits out a failure: log
//! streams, the swap tunnel, the reaper's and the log watcher's watches,
//! guarded writes that lost a race.
//!
//! Exponential from [`MIN`] doubling to [`CAP`], each delay plus up to as
//! much again at random (so never more than [`MAX`]), so that 50 log streams
//! broken by one API server restart do not come back in lockstep.
//! `backon` is what kube-runtime's own watcher back-off is built on.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// The first delay, before jitter.
pub const MIN: Duration = Duration::from_millis(500);
/// The longest delay before jitter.
pub const CAP: Duration = Duration::from_secs(5);
/// The longest delay with jitter.
pub const MAX: Duration = Duration::from_secs(10);

/// The policy as a builder, for `backon`'s retry helpers.
pub fn policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN)
        .with_max_delay(CAP)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// A fresh sequence of delays; start a new one after a success.
pub fn delays() -> impl Iterator<Item = Duration> + Send {
    policy().build()
}

/// The same policy for kube-runtime watchers (`.backoff(k8s::backoff::watcher())`);
/// it restarts from [`MIN`] once a watch has run for two minutes.
pub fn watcher()
-> kube::runtime::utils::ResetTimerBackoff<kube::runtime::watcher::ExponentialBackoff> {
    kube::runtime::utils::ResetTimerBackoff::new(policy().into(), Duration::from_secs(120))
}

/// Delays for retrying a write that lost a race (409): short, jittered.
pub fn conflict_delays() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let delays: Vec<Duration> = delays().take(12).collect();
        assert!(delays[0] >= MIN && delays[0] <= MIN * 2, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX), "{delays:?}");
        assert!(delays[11] >= CAP, "{delays:?}");
    }

    #[test]
    fn two_sequences_are_not_in_lockstep() {
        let runs: Vec<Vec<Duration>> = (0..8).map(|_| delays().take(4).collect()).collect();
        assert!(
            runs.iter().any(|r| *r != runs[0]),
            "jitter makes runs differ"
        );
    }
}
