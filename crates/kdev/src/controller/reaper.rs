//! The reaper: while this replica leads, restores swap sessions whose Lease
//! has expired, and sessions left with no Lease at all; ends `kdev run`
//! sessions whose Lease has expired (their agent Pod and Lease go).
//!
//! # Expected flow
//! Two kube-runtime reflectors keep session Leases and swapped Deployments
//! in memory. Each pass ([`plan`], pure) observes every Lease on this
//! replica's own clock ([`kdev_contract::lease::Observation`]) and lists the
//! expired ones and the orphaned Deployments. Before restoring, the reaper
//! reads the Lease again (a watch may lag) and restores only if the record is
//! still the one it judged. A Deployment with marks and no Lease is confirmed
//! by reading the Deployment, then the Lease, in that order
//! ([`crate::swap::sessions`]). Then it sleeps until the next watch event or
//! the moment the next Lease can expire, whichever comes first: each session
//! is requeued for its own moment, not polled.
//!
//! # Guarantees
//! - A session is restored within its duration of its last renewal as this
//!   replica saw it (plus the time a watch event takes); never before.
//! - Restores follow [`crate::swap::restore`]: idempotent, guarded, Lease last;
//!   a reaper killed mid-restore leaves the session for its successor.
//! - A restore that fails is retried on the shared back-off policy.
//! - The reaper's future ends only if a watch stream ends, which the
//!   controller treats as fatal.
//!
//! # Assumptions
//! - One leader at a time (the Lease election); a second restorer (a user's
//!   `kdev sweep`) is harmless because restores are idempotent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use kdev_contract::lease::{LeaseRecord, Observation};
use kdev_contract::session::{
    self, DeploymentMarks, Mode, ROLE_LABEL, SESSION_LABEL, SESSION_LEASES, SWAPPED_LABEL,
    TARGET_ANNOTATION,
};
use kube::Api;
use kube::api::DynamicObject;
use kube::runtime::events::Recorder;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use tokio::sync::{Notify, watch};

use super::serve::Metrics;
use crate::k8s::objects::lease_record;
use crate::k8s::{Kube, backoff};
use crate::swap::restore::{self, Target};
use crate::swap::workload::{self, WorkloadKind, WorkloadRef};

/// How long the reaper sleeps when no Lease can expire and nothing changes.
const IDLE: Duration = Duration::from_secs(300);

/// What one pass decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// Sessions whose Lease went unchanged for its duration, with the record
    /// that was judged.
    pub expired: Vec<(Target, String, LeaseRecord)>,
    /// Workloads with kdev's marks and no Lease in the cache.
    pub orphaned: Vec<Target>,
    /// When the next Lease can expire if nothing changes.
    pub next: Option<Duration>,
}

/// Updates `seen` with the cached Leases at `now` and decides what is due.
pub fn plan(
    seen: &mut HashMap<String, Observation>,
    leases: &[Arc<Lease>],
    marked: &[(WorkloadKind, Arc<DynamicObject>)],
    now: Instant,
) -> Plan {
    let mut plan = Plan::default();
    let mut live_keys = Vec::new();
    for lease in leases {
        let key = lease.metadata.uid.clone().unwrap_or_default();
        live_keys.push(key.clone());
        let record = lease_record(lease);
        let observation = seen
            .entry(key)
            .and_modify(|o| o.observe(record.clone(), now))
            .or_insert_with(|| Observation::new(record, now));
        if observation.expired(now) {
            if let Some(target) = target_of(lease) {
                let name = lease.metadata.name.clone().unwrap_or_default();
                plan.expired
                    .push((target, name, observation.record().clone()));
            }
        } else {
            let remaining = observation.remaining(now);
            plan.next = Some(plan.next.map_or(remaining, |n| n.min(remaining)));
        }
    }
    seen.retain(|key, _| live_keys.contains(key));

    for (kind, object) in marked {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let workload = WorkloadRef {
            kind: *kind,
            name: object.metadata.name.clone().unwrap_or_default(),
        };
        let annotations = object.metadata.annotations.clone().unwrap_or_default();
        let Ok(Some(marks)) = DeploymentMarks::read(&annotations) else {
            continue;
        };
        let lease_name = session::lease_name(&workload);
        let has_lease = leases.iter().any(|l| {
            l.metadata.namespace.as_deref() == Some(namespace.as_str())
                && l.metadata.name.as_deref() == Some(lease_name.as_str())
        });
        if !has_lease {
            plan.orphaned.push(Target {
                namespace,
                workload,
                session: marks.session,
                mode: Mode::Swap,
            });
        }
    }
    plan
}

/// Runs until a watch stream ends (which it never should); acts only while
/// `leading` is true. Sets `synced` once both caches hold a full list.
pub async fn run(
    kube: Kube,
    namespace: Option<String>,
    mut leading: watch::Receiver<bool>,
    synced: watch::Sender<bool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let lease_api: Api<Lease> = match &namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    let changed = Arc::new(Notify::new());
    let (leases, lease_writer) = reflector::store::<Lease>();
    let notify = changed.clone();
    let lease_stream = watcher(lease_api, watcher::Config::default().labels(SESSION_LEASES))
        .backoff(backoff::watcher())
        .reflect(lease_writer)
        .for_each(move |event| report(event, "session leases", &notify));
    // One cache of marked objects per kind the cluster serves.
    let mut stores = Vec::new();
    let mut streams: Vec<futures::future::BoxFuture<'static, WorkloadKind>> = Vec::new();
    for kind in served_kinds(&kube, namespace.as_deref()).await {
        let resource = workload::resource(kind);
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(kube.client.clone(), ns, &resource),
            None => Api::all_with(kube.client.clone(), &resource),
        };
        let writer = reflector::store::Writer::new(resource);
        stores.push((kind, writer.as_reader()));
        let notify = changed.clone();
        let what = format!("swapped {}s", kind.name());
        streams.push(Box::pin(
            watcher(api, watcher::Config::default().labels(SWAPPED_LABEL))
                .backoff(backoff::watcher())
                .reflect(writer)
                .for_each(move |event| report(event, &what, &notify))
                .map(move |()| kind),
        ));
    }
    let marked_streams = futures::future::select_all(streams);

    let work = async {
        leases.wait_until_ready().await?;
        for (_, store) in &stores {
            store.wait_until_ready().await?;
        }
        synced.send_replace(true);
        tracing::info!("reaper caches synced");
        if crate::faults::var(crate::faults::END_REAPER_AFTER_SYNC).is_some() {
            // Fault injection: how the tests prove that a reaper that stops
            // ends the controller.
            return Ok(());
        }
        let mut seen: HashMap<String, Observation> = HashMap::new();
        let mut retry = backoff::delays();
        loop {
            if !*leading.borrow() {
                // A new leader starts watching from scratch: what another
                // replica saw is not this clock's to trust.
                seen.clear();
                if leading.wait_for(|l| *l).await.is_err() {
                    return Ok::<(), anyhow::Error>(());
                }
                continue;
            }
            let marked: Vec<(WorkloadKind, Arc<DynamicObject>)> = stores
                .iter()
                .flat_map(|(kind, store)| store.state().into_iter().map(|o| (*kind, o)))
                .collect();
            let plan = plan(&mut seen, &leases.state(), &marked, Instant::now());
            let mut failed = false;
            for (target, name, judged) in plan.expired {
                failed |=
                    !restore_expired(&kube, &recorder, &metrics, &target, &name, &judged).await;
            }
            for target in plan.orphaned {
                if confirm_orphan(&kube, &target).await {
                    failed |=
                        !restore_one(&kube, &recorder, &metrics, &target, "it had no Lease left")
                            .await;
                }
            }
            let mut wake = plan.next.unwrap_or(IDLE);
            if failed {
                wake = wake.min(retry.next().unwrap_or(backoff::MAX));
            } else {
                retry = backoff::delays();
            }
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(wake) => {}
                _ = leading.changed() => {}
            }
        }
    };
    tokio::select! {
        () = lease_stream => anyhow::bail!("the watch of session leases ended"),
        (kind, _, _) = marked_streams => anyhow::bail!("the watch of swapped {}s ended", kind.name()),
        result = work => result.map_err(|err| anyhow::anyhow!("the reaper stopped: {err}")),
    }
}

/// Confirms the Lease against the API server (the watch may be behind) and
/// restores it if it is still the record that was judged expired. False if a
/// restore failed.
async fn restore_expired(
    kube: &Kube,
    recorder: &Recorder,
    metrics: &Metrics,
    target: &Target,
    name: &str,
    judged: &LeaseRecord,
) -> bool {
    let api: Api<Lease> = Api::namespaced(kube.client.clone(), &target.namespace);
    match api.get_opt(name).await {
        Ok(Some(fresh)) if lease_record(&fresh) == *judged => {}
        Ok(_) => return true,
        Err(err) => {
            tracing::warn!(error = %err, lease = %name, "failed to confirm an expired lease");
            return false;
        }
    }
    let why = format!(
        "its Lease was not renewed for {}s",
        judged.duration.as_secs()
    );
    restore_one(kube, recorder, metrics, target, &why).await
}

/// The kinds whose swapped objects the reaper watches: the apps/v1 ones,
/// and Argo Rollouts when the cluster serves them (a CRD installed later is
/// watched from the controller's next start; expired Leases of any kind are
/// restored regardless, since they are found by their Lease).
async fn served_kinds(kube: &Kube, namespace: Option<&str>) -> Vec<WorkloadKind> {
    let mut kinds = vec![
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::ReplicaSet,
    ];
    let resource = workload::resource(WorkloadKind::Rollout);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(kube.client.clone(), ns, &resource),
        None => Api::all_with(kube.client.clone(), &resource),
    };
    match crate::k8s::served(&api).await {
        Ok(true) => kinds.push(WorkloadKind::Rollout),
        Ok(false) => {
            tracing::info!("no Argo Rollouts in this cluster: not watching rollouts");
        }
        Err(err) => tracing::warn!(
            error = %err,
            "cannot list Argo Rollouts (grant the controller get, list, watch and patch on rollouts.argoproj.io to reap orphaned swaps of them)"
        ),
    }
    kinds
}

/// Reads the workload, then the Lease: marks still present and no Lease
/// means the session is orphaned (see [`crate::swap::sessions`]).
async fn confirm_orphan(kube: &Kube, target: &Target) -> bool {
    let objects = workload::api(kube, &target.namespace, target.workload.kind);
    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &target.namespace);
    let Ok(Some(current)) = objects.get_opt(&target.workload.name).await else {
        return false;
    };
    let annotations = current.metadata.annotations.unwrap_or_default();
    let still_marked =
        matches!(DeploymentMarks::read(&annotations), Ok(Some(m)) if m.session == target.session);
    still_marked
        && matches!(
            leases.get_opt(&session::lease_name(&target.workload)).await,
            Ok(None)
        )
}

/// False if the restore failed (it is then retried).
async fn restore_one(
    kube: &Kube,
    recorder: &Recorder,
    metrics: &Metrics,
    target: &Target,
    why: &str,
) -> bool {
    match restore::restore(kube, target, why, Some(recorder)).await {
        Ok(outcome) => {
            metrics.restored();
            tracing::info!(
                namespace = %target.namespace,
                session = %target.session,
                "{} ({why})",
                outcome.describe(&target.workload)
            );
            true
        }
        Err(err) => {
            tracing::warn!(
                namespace = %target.namespace,
                workload = %target.workload,
                error = %format!("{err:#}"),
                "failed to restore a swap session"
            );
            false
        }
    }
}

fn target_of(lease: &Lease) -> Option<Target> {
    let labels = lease.metadata.labels.as_ref()?;
    let mode = Mode::of_lease_role(labels.get(ROLE_LABEL)?)?;
    let workload = WorkloadRef::from_annotation(
        lease
            .metadata
            .annotations
            .as_ref()?
            .get(TARGET_ANNOTATION)?,
    )?;
    Some(Target {
        namespace: lease.metadata.namespace.clone()?,
        workload,
        session: labels.get(SESSION_LABEL)?.clone(),
        mode,
    })
}

/// A watch that fails (a missing permission, an API hiccup) is retried with
/// back-off by kube-runtime; it must not fail silently. Every event wakes
/// the reaper.
fn report<T>(
    event: Result<T, watcher::Error>,
    what: &str,
    changed: &Notify,
) -> std::future::Ready<()> {
    match event {
        Ok(_) => changed.notify_one(),
        Err(err) => tracing::warn!(error = %err, "failed to watch {what}; retrying"),
    }
    std::future::ready(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(name: &str, uid: &str, renew: &str, seconds: i32) -> Arc<Lease> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "name": format!("kdev-swap-{name}"), "namespace": "team", "uid": uid,
                    "labels": { SESSION_LABEL: format!("s-{name}"), ROLE_LABEL: "swap-session" },
                    "annotations": { TARGET_ANNOTATION: format!("deployment/{name}") }
                },
                "spec": { "holderIdentity": "me@laptop", "renewTime": renew, "leaseDurationSeconds": seconds }
            }))
            .expect("valid lease"),
        )
    }

    fn marked(name: &str) -> (WorkloadKind, Arc<DynamicObject>) {
        marked_as(WorkloadKind::Deployment, name)
    }

    fn marked_as(kind: WorkloadKind, name: &str) -> (WorkloadKind, Arc<DynamicObject>) {
        let object = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "X",
            "metadata": {
                "name": name, "namespace": "team",
                "annotations": { "kdev.dev/session": format!("s-{name}"), "kdev.dev/original-replicas": "2" }
            }
        }))
        .expect("valid object");
        (kind, Arc::new(object))
    }

    #[test]
    fn a_lease_is_due_only_after_its_duration_unchanged_and_the_next_wake_is_its_expiry() {
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        let leases = [lease("web", "u1", "2026-01-01T00:00:00.000000Z", 10)];
        let first = plan(&mut seen, &leases, &[marked("web")], t0);
        assert!(first.expired.is_empty());
        assert!(first.orphaned.is_empty(), "it has a Lease");
        assert_eq!(first.next, Some(Duration::from_secs(10)));

        let later = plan(&mut seen, &leases, &[], t0 + Duration::from_secs(4));
        assert_eq!(later.next, Some(Duration::from_secs(6)));

        let due = plan(&mut seen, &leases, &[], t0 + Duration::from_secs(10));
        assert_eq!(due.expired.len(), 1);
        assert_eq!(due.expired[0].0.workload, WorkloadRef::deployment("web"));
        assert_eq!(due.next, None);
    }

    #[test]
    fn an_expired_run_lease_is_due_as_a_run_and_never_makes_an_orphan() {
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        let run: Arc<Lease> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "name": "kdev-run-web-s1", "namespace": "team", "uid": "u9",
                    "labels": { SESSION_LABEL: "s1", ROLE_LABEL: "run-session" },
                    "annotations": { TARGET_ANNOTATION: "deployment/web" }
                },
                "spec": { "holderIdentity": "me@laptop", "renewTime": "2026-01-01T00:00:00.000000Z", "leaseDurationSeconds": 5 }
            }))
            .expect("valid lease"),
        );
        let first = plan(&mut seen, std::slice::from_ref(&run), &[], t0);
        assert!(first.expired.is_empty() && first.orphaned.is_empty());
        let due = plan(&mut seen, &[run], &[], t0 + Duration::from_secs(5));
        assert_eq!(due.expired.len(), 1);
        let (target, name, _) = &due.expired[0];
        assert_eq!(target.mode, Mode::Run);
        assert_eq!(name, "kdev-run-web-s1");
        assert_eq!(target.lease_name(), "kdev-run-web-s1");
    }

    #[test]
    fn a_renewal_restarts_the_clock() {
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        plan(
            &mut seen,
            &[lease("web", "u1", "2026-01-01T00:00:01.000000Z", 10)],
            &[],
            t0,
        );
        let renewed = plan(
            &mut seen,
            &[lease("web", "u1", "2026-01-01T00:00:02.000000Z", 10)],
            &[],
            t0 + Duration::from_secs(9),
        );
        assert_eq!(renewed.next, Some(Duration::from_secs(10)));
        let still = plan(
            &mut seen,
            &[lease("web", "u1", "2026-01-01T00:00:02.000000Z", 10)],
            &[],
            t0 + Duration::from_secs(12),
        );
        assert!(still.expired.is_empty());
    }

    #[test]
    fn marks_without_a_lease_are_orphaned_and_forgotten_leases_are_dropped() {
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        plan(
            &mut seen,
            &[lease("web", "u1", "2026-01-01T00:00:01.000000Z", 10)],
            &[],
            t0,
        );
        let orphan = plan(&mut seen, &[], &[marked("api")], t0);
        assert_eq!(orphan.orphaned.len(), 1);
        assert_eq!(orphan.orphaned[0].session, "s-api");
        // A StatefulSet's swap Lease has a name of its own: a Deployment's
        // Lease of the same name does not keep it from being an orphan.
        let sts = plan(
            &mut HashMap::new(),
            &[lease("kafka", "u2", "2026-01-01T00:00:01.000000Z", 10)],
            &[
                marked("kafka"),
                marked_as(WorkloadKind::StatefulSet, "kafka"),
            ],
            t0,
        );
        assert_eq!(sts.orphaned.len(), 1);
        assert_eq!(sts.orphaned[0].workload.kind, WorkloadKind::StatefulSet);
        assert!(seen.is_empty(), "a deleted Lease is forgotten");
        assert_eq!(orphan.next, None);
    }
}
