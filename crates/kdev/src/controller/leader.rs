//! Leader election with a `coordination.k8s.io/v1` Lease.
//!
//! # Expected flow
//! Every `retry` period each replica reads the Lease. The holder renews it
//! (`renewTime`), guarded by `resourceVersion`. A follower remembers when it
//! last saw the record change on its own monotonic clock and takes the Lease
//! over, again guarded by `resourceVersion`, once `duration` has passed
//! without a change ([`kdev_contract::lease`]). On shutdown the leader clears
//! `holderIdentity` so a follower takes over at its next read.
//!
//! # Guarantees
//! - Two replicas never both believe they lead for longer than the clock
//!   drift over one `duration`: a leader that has not renewed for
//!   `renew_deadline` (< `duration`) steps down before a follower can have
//!   seen the Lease unchanged for `duration`.
//! - Every write is a compare-and-swap on `resourceVersion`; a lost race is a
//!   409 and changes nothing.
//!
//! # Assumptions
//! - Clocks of different machines may disagree; only the rate of each
//!   replica's own monotonic clock matters.
//! - The API server is the only channel between replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kdev_contract::keys;
use kdev_contract::lease::{LeaseRecord, Observation};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;

use super::serve::Metrics;
use crate::k8s::is_conflict;
use crate::k8s::objects::lease_record as record_of;

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a renewal holds (`leaseDurationSeconds`).
    pub duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// How often every replica reads (and the leader renews) the Lease.
    pub retry: Duration,
}

impl Default for Timing {
    /// client-go's defaults.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// Where this replica stands.
#[derive(Debug)]
pub enum State {
    /// Not leading; `seen` is the Lease as last read, if it exists.
    Following { seen: Option<Observation> },
    /// Leading since the last successful renewal at `renewed`.
    Leading { renewed: Instant },
}

/// What one read of the Lease calls for.
#[derive(Debug)]
pub enum Action {
    /// No Lease exists: create it, holding it.
    Create,
    /// This replica holds it: renew it (the state to fall back on if that fails).
    Renew(State),
    /// Another replica holds it and renews it: keep watching.
    Follow(Observation),
    /// Another replica held it but let it go unchanged for its duration.
    TakeOver(Observation),
}

/// Decides what to do with the Lease as read at `now` (`None`: it does not
/// exist), given where this replica stood. Pure.
pub fn decide(state: State, current: Option<LeaseRecord>, identity: &str, now: Instant) -> Action {
    let Some(record) = current else {
        return Action::Create;
    };
    if record.holder.as_deref() == Some(identity) {
        return Action::Renew(state);
    }
    let seen = match state {
        State::Following {
            seen: Some(mut seen),
        } => {
            seen.observe(record, now);
            seen
        }
        _ => Observation::new(record, now),
    };
    if seen.expired(now) {
        Action::TakeOver(seen)
    } else {
        Action::Follow(seen)
    }
}

/// Where a replica stands after a read or renewal failed: a leader keeps
/// leading until `renew_deadline` has passed since its last renewal, then
/// steps down. Pure.
pub fn after_failure(state: State, now: Instant, renew_deadline: Duration) -> State {
    match state {
        State::Leading { renewed } if now.saturating_duration_since(renewed) < renew_deadline => {
            State::Leading { renewed }
        }
        State::Leading { .. } => {
            tracing::warn!("could not renew the leader Lease in time; stepping down");
            State::Following { seen: None }
        }
        following => following,
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: String, identity: String, timing: Timing) -> Self {
        Self {
            api,
            name,
            identity,
            timing,
        }
    }

    /// Runs the election until `shutdown` resolves, publishing whether this
    /// replica leads on `leading`. Releases the Lease on the way out.
    pub async fn run(
        &self,
        leading: watch::Sender<bool>,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut state = State::Following { seen: None };
        let mut tick = tokio::time::interval(self.timing.retry);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            state = self.step(state, Instant::now()).await;
            let is_leading = matches!(state, State::Leading { .. });
            if *leading.borrow() != is_leading {
                tracing::info!(identity = %self.identity, leading = is_leading, "leadership changed");
            }
            leading.send_replace(is_leading);
            metrics.set_leading(is_leading);
        }
        if matches!(state, State::Leading { .. }) {
            leading.send_replace(false);
            self.release().await;
        }
        Ok(())
    }

    /// One read of the Lease and, where due, one write.
    pub async fn step(&self, state: State, now: Instant) -> State {
        let current = match self.api.get_opt(&self.name).await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(lease = %self.name, error = %err, "failed to read the leader Lease");
                return self.after_failed_renewal(state, now);
            }
        };
        let record = current.as_ref().map(record_of);
        match decide(state, record, &self.identity, now) {
            Action::Create => match self
                .api
                .create(&PostParams::default(), &self.fresh_lease())
                .await
            {
                Ok(_) => State::Leading { renewed: now },
                Err(err) => {
                    if !is_conflict(&err) {
                        tracing::warn!(error = %err, "failed to create the leader Lease");
                    }
                    State::Following { seen: None }
                }
            },
            Action::Renew(previous) => {
                // `decide` returns Renew only for an existing Lease.
                let Some(lease) = current else {
                    return previous;
                };
                match self.write(lease, false).await {
                    Ok(()) => State::Leading { renewed: now },
                    Err(err) => {
                        tracing::warn!(error = %err, "failed to renew the leader Lease");
                        self.after_failed_renewal(previous, now)
                    }
                }
            }
            Action::Follow(seen) => State::Following { seen: Some(seen) },
            Action::TakeOver(seen) => {
                let Some(lease) = current else {
                    return State::Following { seen: Some(seen) };
                };
                match self.write(lease, true).await {
                    Ok(()) => State::Leading { renewed: now },
                    Err(err) => {
                        if !matches!(&err, WriteError::Kube(e) if is_conflict(e)) {
                            tracing::warn!(error = %err, "failed to take over the leader Lease");
                        }
                        State::Following { seen: Some(seen) }
                    }
                }
            }
        }
    }

    fn after_failed_renewal(&self, state: State, now: Instant) -> State {
        after_failure(state, now, self.timing.renew_deadline)
    }

    fn fresh_lease(&self) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(
                    [(
                        keys::MANAGED_BY_LABEL.to_owned(),
                        keys::MANAGED_BY_VALUE.to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.timing.duration.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Renews (or, with `take_over`, acquires) `lease`, guarded by the
    /// `resourceVersion` it was read at.
    async fn write(&self, mut lease: Lease, take_over: bool) -> Result<(), WriteError> {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if take_over {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(self.timing.duration.as_secs() as i32);
        spec.renew_time = Some(now);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(drop)
            .map_err(WriteError::Kube)
    }

    /// Clears the holder so a follower need not wait a whole duration.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the leader Lease"),
            Err(err) => tracing::warn!(error = %err, "failed to release the leader Lease"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("failed to write the leader Lease: {0}")]
    Kube(#[source] kube::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renew: &str) -> Option<LeaseRecord> {
        Some(LeaseRecord {
            holder: Some(holder.into()),
            renew_time: Some(renew.into()),
            duration: Duration::from_secs(15),
            transitions: 0,
        })
    }

    fn following() -> State {
        State::Following { seen: None }
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert!(matches!(
            decide(following(), None, "me", Instant::now()),
            Action::Create
        ));
    }

    #[test]
    fn the_holder_renews() {
        let action = decide(following(), held_by("me", "t1"), "me", Instant::now());
        assert!(matches!(action, Action::Renew(_)), "{action:?}");
    }

    #[test]
    fn a_follower_takes_over_only_after_a_whole_duration_without_change() {
        let t0 = Instant::now();
        let Action::Follow(seen) = decide(following(), held_by("other", "t1"), "me", t0) else {
            panic!("a fresh Lease is followed");
        };
        let state = State::Following { seen: Some(seen) };
        let Action::Follow(seen) = decide(
            state,
            held_by("other", "t1"),
            "me",
            t0 + Duration::from_secs(14),
        ) else {
            panic!("14 s unchanged is not yet expired");
        };
        let state = State::Following { seen: Some(seen) };
        assert!(matches!(
            decide(
                state,
                held_by("other", "t1"),
                "me",
                t0 + Duration::from_secs(15)
            ),
            Action::TakeOver(_)
        ));
    }

    #[test]
    fn a_renewed_lease_is_not_taken_over() {
        let t0 = Instant::now();
        let Action::Follow(seen) = decide(following(), held_by("other", "t1"), "me", t0) else {
            panic!("followed");
        };
        let state = State::Following { seen: Some(seen) };
        let Action::Follow(seen) = decide(
            state,
            held_by("other", "t2"),
            "me",
            t0 + Duration::from_secs(10),
        ) else {
            panic!("renewed");
        };
        let state = State::Following { seen: Some(seen) };
        assert!(matches!(
            decide(
                state,
                held_by("other", "t2"),
                "me",
                t0 + Duration::from_secs(20)
            ),
            Action::Follow(_)
        ));
    }

    #[test]
    fn a_released_lease_is_taken_over_at_once() {
        let free = Some(LeaseRecord {
            holder: None,
            renew_time: None,
            duration: Duration::from_secs(15),
            transitions: 1,
        });
        assert!(matches!(
            decide(following(), free, "me", Instant::now()),
            Action::TakeOver(_)
        ));
    }

    #[test]
    fn a_leader_that_cannot_renew_steps_down_after_the_deadline() {
        let t0 = Instant::now();
        let deadline = Duration::from_secs(10);
        let leading = State::Leading { renewed: t0 };
        let still = after_failure(leading, t0 + Duration::from_secs(9), deadline);
        assert!(matches!(still, State::Leading { .. }));
        let stepped = after_failure(still, t0 + Duration::from_secs(10), deadline);
        assert!(matches!(stepped, State::Following { seen: None }));
    }
}
