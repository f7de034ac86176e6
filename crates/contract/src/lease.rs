//! When a `coordination.k8s.io/v1` Lease counts as expired.
//!
//! A Lease says who holds it, when they last renewed it and for how long a
//! renewal holds. The renewal time is written by the holder's clock, which
//! need not agree with the reader's: a laptop's clock may be minutes off. So,
//! as client-go's leader election does, a reader never compares `renewTime`
//! with its own clock. It remembers *when it saw the record change*, on its
//! own monotonic clock, and judges the Lease expired once `leaseDurationSeconds`
//! have passed on that clock without a change.
//!
//! The price is that a reader that starts watching a long-dead Lease waits one
//! full duration before calling it expired. That is the safe side: a Lease is
//! never judged expired while its holder may still be renewing it.

use std::time::{Duration, Instant};

/// The fields of a Lease that say whether its holder is still alive.
///
/// `renew_time` is kept as the raw string the holder wrote: it is compared for
/// change, never read as a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub duration: Duration,
    pub transitions: i32,
}

/// What one reader has seen of one Lease, on its own clock.
#[derive(Clone, Debug)]
pub struct Observation {
    record: LeaseRecord,
    changed_at: Instant,
}

impl Observation {
    /// The first sight of a Lease counts as a change: its age is unknown.
    pub fn new(record: LeaseRecord, now: Instant) -> Self {
        Self {
            record,
            changed_at: now,
        }
    }

    /// Takes in the record as read at `now`; restarts the clock if it changed.
    pub fn observe(&mut self, record: LeaseRecord, now: Instant) {
        if record != self.record {
            self.record = record;
            self.changed_at = now;
        }
    }

    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// True once the record has gone unchanged for its whole duration.
    /// A Lease without a holder is free, and so counts as expired.
    pub fn expired(&self, now: Instant) -> bool {
        self.record.holder.as_deref().is_none_or(str::is_empty)
            || now.saturating_duration_since(self.changed_at) >= self.record.duration
    }

    /// How long until [`Observation::expired`] turns true if nothing changes.
    pub fn remaining(&self, now: Instant) -> Duration {
        if self.expired(now) {
            return Duration::ZERO;
        }
        self.record
            .duration
            .saturating_sub(now.saturating_duration_since(self.changed_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, renew: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            renew_time: Some(renew.into()),
            duration: Duration::from_secs(15),
            transitions: 0,
        }
    }

    #[test]
    fn a_renewed_lease_does_not_expire() {
        let t0 = Instant::now();
        let mut seen = Observation::new(record("a", "t1"), t0);
        seen.observe(record("a", "t2"), t0 + Duration::from_secs(10));
        assert!(!seen.expired(t0 + Duration::from_secs(20)));
        assert_eq!(
            seen.remaining(t0 + Duration::from_secs(20)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn an_unchanged_lease_expires_after_its_duration_on_the_readers_clock() {
        let t0 = Instant::now();
        let mut seen = Observation::new(record("a", "t1"), t0);
        seen.observe(record("a", "t1"), t0 + Duration::from_secs(14));
        assert!(!seen.expired(t0 + Duration::from_secs(14)));
        assert!(seen.expired(t0 + Duration::from_secs(15)));
    }

    #[test]
    fn a_renew_time_far_in_the_past_is_not_read_as_expired() {
        // The holder's clock is a day behind: only change counts.
        let t0 = Instant::now();
        let seen = Observation::new(record("a", "2000-01-01T00:00:00Z"), t0);
        assert!(!seen.expired(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_lease_without_holder_is_free() {
        let t0 = Instant::now();
        let mut free = record("", "t1");
        assert!(Observation::new(free.clone(), t0).expired(t0));
        free.holder = None;
        assert!(Observation::new(free, t0).expired(t0));
    }
}
