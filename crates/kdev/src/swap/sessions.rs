//! Finding sessions (`kdev swap` and `kdev run`) in the cluster and judging
//! them alive, expired or orphaned: shared by `kdev swap` (before it
//! claims), `kdev sweep`, `kdev sessions` and the reaper.
//!
//! A session is found from either of its records: its Lease, or the marks on
//! its Deployment. It is
//! - **orphaned** when the Deployment carries marks and no Lease exists (the
//!   Lease is created before the marks and deleted after them, so marks
//!   without a Lease mean the session's end was interrupted); a run session
//!   leaves no marks, so it is never orphaned;
//! - **expired** when its Lease went unchanged for a whole duration, watched
//!   on this machine's clock ([`kdev_contract::lease`]);
//! - **alive** otherwise.
//!
//! Deployments are read before Leases: a session being started concurrently
//! has its Lease before its marks, so it can never look orphaned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kdev_contract::lease::{LeaseRecord, Observation};
use kdev_contract::session::{
    DeploymentMarks, Mode, ROLE_LABEL, SESSION_LABEL, SESSION_LEASES, SWAPPED_LABEL,
    TARGET_ANNOTATION,
};
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::watcher::{self, Event, watcher};

use super::restore::{self, Target};
use super::workload::{self, WorkloadKind, WorkloadRef};
use crate::k8s::Kube;
use crate::k8s::objects::lease_record as record_of;

/// One session as the cluster records it.
#[derive(Clone, Debug)]
pub struct Found {
    pub namespace: String,
    pub workload: WorkloadRef,
    pub session: String,
    pub mode: Mode,
    pub lease: Option<Lease>,
    pub marked: bool,
}

impl Found {
    pub fn target(&self) -> Target {
        Target {
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            session: self.session.clone(),
            mode: self.mode,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Alive,
    Expired,
    Orphaned,
}

/// Every session in `namespace` (all namespaces when `None`).
pub async fn find(kube: &Kube, namespace: Option<&str>) -> anyhow::Result<Vec<Found>> {
    let leases: Api<Lease> = match namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    let marked = marked_workloads(kube, namespace).await?;
    let leases = leases
        .list(&ListParams::default().labels(SESSION_LEASES))
        .await
        .map_err(|err| kube.explain(err, "list session leases"))?;

    // Keyed by namespace and Lease name: a swap's marks and its Lease meet
    // under the Lease's name.
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    for (kind, object) in marked {
        let annotations = object.metadata.annotations.clone().unwrap_or_default();
        let Ok(Some(marks)) = DeploymentMarks::read(&annotations) else {
            continue;
        };
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let workload = WorkloadRef {
            kind,
            name: object.metadata.name.clone().unwrap_or_default(),
        };
        found.insert(
            (
                namespace.clone(),
                Mode::Swap.lease_name(&workload, &marks.session),
            ),
            Found {
                namespace,
                workload,
                session: marks.session,
                mode: Mode::Swap,
                lease: None,
                marked: true,
            },
        );
    }
    for lease in leases.items {
        let namespace = lease.metadata.namespace.clone().unwrap_or_default();
        let Some(mode) = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ROLE_LABEL))
            .and_then(|role| Mode::of_lease_role(role))
        else {
            continue;
        };
        let Some(workload) = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TARGET_ANNOTATION))
            .and_then(|t| WorkloadRef::from_annotation(t))
        else {
            continue;
        };
        let session = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SESSION_LABEL))
            .cloned()
            .unwrap_or_default();
        let name = lease.metadata.name.clone().unwrap_or_default();
        let entry = found
            .entry((namespace.clone(), name))
            .or_insert_with(|| Found {
                namespace,
                workload,
                session: session.clone(),
                mode,
                lease: None,
                marked: false,
            });
        entry.lease = Some(lease);
        entry.session = session;
    }
    Ok(found.into_values().collect())
}

/// The objects of every kind that carry a swap's label. A kind the cluster
/// does not serve (Argo Rollouts not installed) has none; a kind you may not
/// list other than Deployments is skipped (you cannot have swapped one).
async fn marked_workloads(
    kube: &Kube,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<(WorkloadKind, DynamicObject)>> {
    let mut marked = Vec::new();
    for kind in WorkloadKind::ALL {
        let resource = workload::resource(kind);
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(kube.client.clone(), ns, &resource),
            None => Api::all_with(kube.client.clone(), &resource),
        };
        match api.list(&ListParams::default().labels(SWAPPED_LABEL)).await {
            Ok(list) => marked.extend(list.items.into_iter().map(|o| (kind, o))),
            Err(err) if kind != WorkloadKind::Deployment && is_missing_or_forbidden(&err) => {
                tracing::debug!(kind = kind.name(), error = %err, "not looking for swapped objects of this kind");
            }
            Err(err) => {
                return Err(kube.explain(err, format!("list swapped {}s", kind.name())));
            }
        }
    }
    Ok(marked)
}

fn is_missing_or_forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404 || status.code == 403)
}

/// Judges each session, watching live Leases for up to their duration.
pub async fn judge(kube: &Kube, found: Vec<Found>) -> anyhow::Result<Vec<(Found, State)>> {
    let start = Instant::now();
    let mut watching: Vec<(Found, Observation)> = Vec::new();
    let mut judged = Vec::new();
    for session in found {
        match &session.lease {
            None => judged.push((session, State::Orphaned)),
            Some(lease) => {
                let seen = Observation::new(record_of(lease), start);
                watching.push((session, seen));
            }
        }
    }
    if watching.is_empty() {
        return Ok(judged);
    }
    let longest = watching
        .iter()
        .map(|(_, o)| o.record().duration)
        .max()
        .unwrap_or_default();
    let step = crate::progress::Step::start(format!(
        "watching {} session lease(s) for up to {}s to tell live ones from expired ones",
        watching.len(),
        longest.as_secs() + 1
    ));
    // One watch of session Leases (in the one namespace, or everywhere),
    // woken by changes or by the next moment a Lease can expire.
    let namespaces: BTreeSet<&str> = watching.iter().map(|(f, _)| f.namespace.as_str()).collect();
    let api: Api<Lease> = match namespaces.iter().next() {
        Some(ns) if namespaces.len() == 1 => Api::namespaced(kube.client.clone(), ns),
        _ => Api::all(kube.client.clone()),
    };
    let mut pending: BTreeMap<(String, String), (Found, Observation)> = watching
        .into_iter()
        .map(|(f, o)| ((f.namespace.clone(), f.target().lease_name()), (f, o)))
        .collect();
    let mut events = watcher(api, watcher::Config::default().labels(SESSION_LEASES)).boxed();
    let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let now = Instant::now();
        let expired: Vec<_> = pending
            .iter_mut()
            .filter_map(|(key, (_, seen))| {
                (verdict(seen, None, now) == Some(State::Expired)).then(|| key.clone())
            })
            .collect();
        for key in expired {
            if let Some((session, _)) = pending.remove(&key) {
                judged.push((session, State::Expired));
            }
        }
        let Some(wake) = pending.values().map(|(_, seen)| seen.remaining(now)).min() else {
            break;
        };
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep(wake) => continue,
        };
        let key_of = |lease: &Lease| {
            (
                lease.metadata.namespace.clone().unwrap_or_default(),
                lease.metadata.name.clone().unwrap_or_default(),
            )
        };
        match event {
            Some(Ok(Event::Apply(lease) | Event::InitApply(lease))) => {
                let key = key_of(&lease);
                listed.insert(key.clone());
                if let Some((_, seen)) = pending.get_mut(&key)
                    && let Some(state) = verdict(seen, Some(record_of(&lease)), Instant::now())
                    && let Some((session, _)) = pending.remove(&key)
                {
                    judged.push((session, state));
                }
            }
            // Ended meanwhile: restored by its holder or another restorer.
            Some(Ok(Event::Delete(lease))) => {
                pending.remove(&key_of(&lease));
            }
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitDone)) => pending.retain(|key, _| listed.contains(key)),
            Some(Err(err)) => anyhow::bail!(
                "failed to watch session leases: {err}; check that you may list and watch Leases"
            ),
            None => anyhow::bail!("the watch of session leases ended"),
        }
    }
    step.done();
    Ok(judged)
}

/// Judges one watched Lease at `now`, given what was just read of it
/// (`None`: nothing new). A record that changed since it was first seen
/// means a live holder; one unchanged for its whole duration has expired;
/// otherwise it is too early to say. Pure.
pub fn verdict(seen: &mut Observation, read: Option<LeaseRecord>, now: Instant) -> Option<State> {
    if let Some(record) = read {
        let before = seen.record().clone();
        seen.observe(record, now);
        if *seen.record() != before {
            return Some(State::Alive);
        }
    }
    seen.expired(now).then_some(State::Expired)
}

/// What `kdev swap` does before claiming: restore an expired or orphaned
/// session of its target; refuse if a live one holds it.
pub async fn settle_target(kube: &Kube, target: &WorkloadRef) -> anyhow::Result<()> {
    let found: Vec<Found> = find(kube, Some(&kube.namespace))
        .await?
        .into_iter()
        .filter(|f| f.workload == *target && f.mode == Mode::Swap)
        .collect();
    for (session, state) in judge(kube, found).await? {
        match state {
            State::Alive => {
                let spec = session
                    .lease
                    .as_ref()
                    .and_then(|l| l.spec.clone())
                    .unwrap_or_default();
                anyhow::bail!(
                    "{target} is already swapped by {} since {} (session {}); one swap per workload",
                    spec.holder_identity.unwrap_or_else(|| "someone".into()),
                    spec.acquire_time
                        .map(|t| t.0.to_string())
                        .unwrap_or_else(|| "an unknown time".into()),
                    session.session
                );
            }
            State::Expired | State::Orphaned => {
                let why = reason(state);
                let outcome = restore::restore(kube, &session.target(), why, None).await?;
                eprintln!(
                    "kdev: restored an earlier session ({why}): {}",
                    outcome.describe(&session.workload)
                );
            }
        }
    }
    Ok(())
}

pub fn reason(state: State) -> &'static str {
    match state {
        State::Alive => "alive",
        State::Expired => "its Lease expired",
        State::Orphaned => "it had no Lease left",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(renew: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some("me@laptop".into()),
            renew_time: Some(renew.into()),
            duration: Duration::from_secs(15),
            transitions: 0,
        }
    }

    #[test]
    fn a_renewal_while_watched_means_alive() {
        let t0 = Instant::now();
        let mut seen = Observation::new(record("t1"), t0);
        assert_eq!(
            verdict(&mut seen, Some(record("t1")), t0 + Duration::from_secs(3)),
            None
        );
        assert_eq!(
            verdict(&mut seen, Some(record("t2")), t0 + Duration::from_secs(5)),
            Some(State::Alive)
        );
    }

    #[test]
    fn an_unchanged_lease_expires_after_its_duration_on_this_clock() {
        let t0 = Instant::now();
        let mut seen = Observation::new(record("2000-01-01T00:00:00Z"), t0);
        assert_eq!(verdict(&mut seen, None, t0 + Duration::from_secs(14)), None);
        assert_eq!(
            verdict(&mut seen, None, t0 + Duration::from_secs(15)),
            Some(State::Expired)
        );
    }
}
