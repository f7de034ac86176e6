//! The reaper: while this replica leads, restores swap sessions whose Lease
//! has expired, and sessions left with no Lease at all.
//!
//! # Expected flow
//! Two kube-runtime reflectors keep session Leases and swapped Deployments
//! in memory. Every 500 ms the reaper observes each Lease on its own clock
//! ([`kdev_contract::lease::Observation`]); one unchanged for its whole
//! duration is expired. Before restoring it reads the Lease again (a watch
//! may lag) and restores only if the record is still the one it judged. A
//! Deployment with marks and no Lease is confirmed by reading the Deployment,
//! then the Lease, in that order ([`crate::swap::sweep`]).
//!
//! # Guarantees
//! - A session is restored within its duration plus about a second of its
//!   last renewal, as this replica saw it; never before its duration.
//! - Restores follow [`crate::swap::restore`]: idempotent, guarded, Lease last;
//!   a reaper killed mid-restore leaves the session for its successor.
//!
//! # Assumptions
//! - One leader at a time (the Lease election); a second restorer (a user's
//!   `kdev sweep`) is harmless because restores are idempotent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kdev_contract::lease::Observation;
use kdev_contract::session::{
    self, DeploymentMarks, ROLE_LABEL, ROLE_SESSION, SESSION_LABEL, SWAPPED_LABEL,
    TARGET_ANNOTATION,
};
use kube::Api;
use kube::runtime::events::Recorder;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use tokio::sync::watch;

use super::leader::record_of;
use super::serve::Metrics;
use crate::kubeclient::Kube;
use crate::swap::restore::{self, Target};

/// Runs until the process ends; acts only while `leading` is true.
pub async fn run(
    kube: Kube,
    namespace: Option<String>,
    mut leading: watch::Receiver<bool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
) {
    let (lease_api, deployment_api): (Api<Lease>, Api<Deployment>) = match &namespace {
        Some(ns) => (
            Api::namespaced(kube.client.clone(), ns),
            Api::namespaced(kube.client.clone(), ns),
        ),
        None => (Api::all(kube.client.clone()), Api::all(kube.client.clone())),
    };
    let (leases, lease_writer) = reflector::store::<Lease>();
    let (deployments, deployment_writer) = reflector::store::<Deployment>();
    let lease_stream = watcher(
        lease_api,
        watcher::Config::default().labels(&format!("{ROLE_LABEL}={ROLE_SESSION}")),
    )
    .default_backoff()
    .reflect(lease_writer)
    .for_each(|event| report_watch_error(event, "session leases"));
    let deployment_stream = watcher(
        deployment_api,
        watcher::Config::default().labels(SWAPPED_LABEL),
    )
    .default_backoff()
    .reflect(deployment_writer)
    .for_each(|event| report_watch_error(event, "swapped deployments"));
    tokio::spawn(lease_stream);
    tokio::spawn(deployment_stream);

    let mut seen: HashMap<String, Observation> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if !*leading.borrow() {
            // A new leader starts watching from scratch: what another replica
            // saw is not this clock's to trust.
            seen.clear();
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            continue;
        }
        if leases.wait_until_ready().await.is_err() || deployments.wait_until_ready().await.is_err()
        {
            return;
        }
        let now = Instant::now();
        let mut live_keys = Vec::new();
        let mut due = Vec::new();
        for lease in leases.state() {
            let key = lease.metadata.uid.clone().unwrap_or_default();
            live_keys.push(key.clone());
            let record = record_of(&lease);
            let observation = seen
                .entry(key)
                .and_modify(|o| o.observe(record.clone(), now))
                .or_insert_with(|| Observation::new(record, now));
            if observation.expired(now) {
                due.push((lease.clone(), observation.record().clone()));
            }
        }
        seen.retain(|key, _| live_keys.contains(key));

        for (lease, judged) in due {
            let Some(target) = target_of(&lease) else {
                continue;
            };
            // Confirm against the API server: the watch may be behind.
            let api: Api<Lease> = Api::namespaced(kube.client.clone(), &target.namespace);
            let name = lease.metadata.name.clone().unwrap_or_default();
            match api.get_opt(&name).await {
                Ok(Some(fresh)) if record_of(&fresh) == judged => {}
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, lease = %name, "failed to confirm an expired lease");
                    continue;
                }
            }
            let why = format!(
                "its Lease was not renewed for {}s",
                judged.duration.as_secs()
            );
            restore_one(&kube, &recorder, &metrics, &target, &why).await;
        }

        for deployment in deployments.state() {
            let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
            let Ok(Some(marks)) = DeploymentMarks::read(&annotations) else {
                continue;
            };
            let has_lease = leases.state().iter().any(|l| {
                l.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && l.metadata.name.as_deref() == Some(session::lease_name(&name).as_str())
            });
            if has_lease {
                continue;
            }
            if confirm_orphan(&kube, &namespace, &name, &marks.session).await {
                let target = Target {
                    namespace,
                    deployment: name,
                    session: marks.session,
                };
                restore_one(&kube, &recorder, &metrics, &target, "it had no Lease left").await;
            }
        }
    }
}

/// Reads the Deployment, then the Lease: marks still present and no Lease
/// means the session is orphaned (see [`crate::swap::sweep`]).
async fn confirm_orphan(kube: &Kube, namespace: &str, deployment: &str, session: &str) -> bool {
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), namespace);
    let Ok(Some(current)) = deployments.get_opt(deployment).await else {
        return false;
    };
    let annotations = current.metadata.annotations.unwrap_or_default();
    let still_marked =
        matches!(DeploymentMarks::read(&annotations), Ok(Some(m)) if m.session == session);
    still_marked
        && matches!(
            leases.get_opt(&session::lease_name(deployment)).await,
            Ok(None)
        )
}

async fn restore_one(
    kube: &Kube,
    recorder: &Recorder,
    metrics: &Metrics,
    target: &Target,
    why: &str,
) {
    match restore::restore(kube, target, why, Some(recorder)).await {
        Ok(outcome) => {
            metrics.restored();
            tracing::info!(
                namespace = %target.namespace,
                session = %target.session,
                "{} ({why})",
                outcome.describe(&target.deployment)
            );
        }
        Err(err) => tracing::warn!(
            namespace = %target.namespace,
            deployment = %target.deployment,
            error = %format!("{err:#}"),
            "failed to restore a swap session"
        ),
    }
}

fn target_of(lease: &Lease) -> Option<Target> {
    let deployment = lease
        .metadata
        .annotations
        .as_ref()?
        .get(TARGET_ANNOTATION)?
        .strip_prefix("deployment/")?
        .to_owned();
    Some(Target {
        namespace: lease.metadata.namespace.clone()?,
        deployment,
        session: lease.metadata.labels.as_ref()?.get(SESSION_LABEL)?.clone(),
    })
}

/// A watch that fails (a missing permission, an API hiccup) is retried with
/// backoff by kube-runtime; it must not fail silently.
fn report_watch_error<T>(event: Result<T, watcher::Error>, what: &str) -> std::future::Ready<()> {
    if let Err(err) = event {
        tracing::warn!(error = %err, "failed to watch {what}; retrying");
    }
    std::future::ready(())
}
