//! Restoring a swap session from what the cluster records, by whoever finds
//! it: the CLI at the session's normal end, `kdev sweep`, the reaper.
//!
//! # Expected flow
//! 0. Put back the `caBundle`s of webhooks the session pointed at its own CA
//!    ([`super::webhooks`]), first: their record is on the webhook objects,
//!    and the Lease (step 3) is what makes a later restorer look again.
//! 1. Restore the Deployment ([`restore_plan`]): back to the original replicas
//!    if it is still at 0, else keep what someone set; remove kdev's label and
//!    annotations. One merge PATCH guarded by `resourceVersion`, retried on
//!    conflict after a fresh read.
//! 2. Delete the session's proxy Pods.
//! 3. Delete the Lease, only if it still is this session's (guarded by its
//!    `resourceVersion`).
//!
//! # Guarantees
//! - Crash-safe in any order of crashes: the Lease, the record that says
//!   "this session needs restoring", goes last, so a restorer that dies before
//!   step 3 leaves the session for the next one; steps 1 and 2 are idempotent.
//! - Touches nothing kdev did not change: only `spec.replicas` while it is
//!   still the 0 kdev set, and kdev's own keys.
//! - Never guesses: an unreadable replica count leaves the Deployment as it is
//!   and fails, naming the annotation.
//!
//! A `kdev run` session changed nothing but its own objects: restoring it is
//! steps 2 and 3 (its agent Pods, then its Lease).
//!
//! # Assumptions
//! - The caller has judged the session over (ended, expired or orphaned).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kdev_contract::session::{
    Mode, ORIGINAL_REPLICAS_ANNOTATION, ROLE_LABEL, Restore, SESSION_ANNOTATION, SESSION_LABEL,
    SWAPPED_LABEL, restore_plan,
};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource as _};
use serde_json::json;

use super::workload::{self, WorkloadKind, WorkloadRef};
use crate::k8s::guarded::{self, Decision};
use crate::k8s::{Kube, is_conflict, is_not_found};

/// What restoring did to the Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    ScaledBack {
        to: i32,
    },
    KeptChanged {
        current: i32,
        original: i32,
    },
    /// The Deployment carried no marks of this session (already restored, or
    /// the session crashed before recording).
    NothingToRestore,
    WorkloadGone,
    /// A `kdev run` session: the Deployment was never changed.
    RunEnded,
}

impl Outcome {
    pub fn describe(&self, workload: &WorkloadRef) -> String {
        match self {
            Outcome::ScaledBack { to } => {
                format!("{workload} scaled back to {to} replicas")
            }
            Outcome::KeptChanged { current, original } => format!(
                "{workload} kept at {current} replicas: someone changed it from 0 during the session (it was {original} before)"
            ),
            Outcome::NothingToRestore => format!("{workload} needed no restore"),
            Outcome::WorkloadGone => format!("{workload} no longer exists"),
            Outcome::RunEnded => format!(
                "the run session's agent pod and Lease are removed ({workload} was never changed)"
            ),
        }
    }
}

/// A session to restore, as named in the cluster.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub workload: WorkloadRef,
    pub session: String,
    pub mode: Mode,
}

impl Target {
    pub fn lease_name(&self) -> String {
        self.mode.lease_name(&self.workload, &self.session)
    }
}

/// Step 1: the workload.
pub async fn restore_workload(kube: &Kube, target: &Target) -> anyhow::Result<Outcome> {
    let api = workload::api(kube, &target.namespace, target.workload.kind);
    let what = format!("{} in {}", target.workload, target.namespace);
    let updated = guarded::update(kube, &api, &target.workload.name, &what, |object| {
        let Some(object) = object else {
            return Ok(Decision::Keep(Outcome::WorkloadGone));
        };
        let replicas = workload::replicas_of(object);
        let annotations = object.metadata.annotations.clone().unwrap_or_default();
        let plan = restore_plan(&target.session, replicas, &annotations).map_err(|bad| {
            anyhow::anyhow!(
                "cannot restore {what}: {bad}; set its replicas by hand and remove the annotation"
            )
        })?;
        let (replicas, outcome) = match plan {
            Restore::Nothing => return Ok(Decision::Keep(Outcome::NothingToRestore)),
            Restore::ScaleBack { to } => (to, Outcome::ScaledBack { to }),
            Restore::KeepChanged { current, original } => {
                (current, Outcome::KeptChanged { current, original })
            }
        };
        let patch = json!({
            "metadata": {
                "labels": { SWAPPED_LABEL: null },
                "annotations": { SESSION_ANNOTATION: null, ORIGINAL_REPLICAS_ANNOTATION: null },
            },
            "spec": { "replicas": replicas },
        });
        Ok(Decision::Write(patch, outcome))
    })
    .await?;
    Ok(updated.value)
}

/// Steps 2 and 3: the session's Pods and the Lease.
pub async fn remove_session_objects(kube: &Kube, target: &Target) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &target.namespace);
    let selector = format!(
        "{ROLE_LABEL}={},{SESSION_LABEL}={}",
        target.mode.pod_role(),
        target.session
    );
    let proxies = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|err| kube.explain(err, format!("list the pods of session {}", target.session)))?;
    for pod in proxies.items {
        let name = pod.metadata.name.unwrap_or_default();
        match pods
            .delete(&name, &DeleteParams::default().grace_period(1))
            .await
        {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                return Err(kube.explain(err, format!("delete pod {}/{name}", target.namespace)));
            }
        }
    }
    delete_lease(kube, target).await
}

/// Deletes the session's Lease if it still belongs to this session.
pub async fn delete_lease(kube: &Kube, target: &Target) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &target.namespace);
    let name = target.lease_name();
    let lease = match leases.get_opt(&name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return Ok(()),
        Err(err) => {
            return Err(kube.explain(err, format!("read lease {}/{name}", target.namespace)));
        }
    };
    let owner = lease
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SESSION_LABEL));
    if owner != Some(&target.session) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version.clone(),
            uid: lease.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    match leases.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        // Renewed since it was read: its holder is back; the next look decides.
        Err(err) if is_conflict(&err) => Ok(()),
        Err(err) => Err(kube.explain(err, format!("delete lease {}/{name}", target.namespace))),
    }
}

/// Step 0: the webhooks the session redirected; what was restored. A
/// restorer that may not even list webhook configurations (a controller
/// confined to one namespace) leaves them to one that may (`kdev sweep`
/// by a cluster admin) and goes on with the Deployment.
pub async fn restore_webhooks(kube: &Kube, target: &Target) -> anyhow::Result<Vec<String>> {
    match super::webhooks::restore(kube, &target.session).await {
        Ok(restored) => Ok(restored),
        Err(err) if crate::k8s::refused_with(&err) == Some(403) => {
            tracing::debug!(error = %err, "may not look for redirected webhooks");
            Ok(Vec::new())
        }
        Err(err) => Err(err),
    }
}

/// The whole restore, in the documented order, with an Event on the
/// Deployment saying what was done and `why`.
pub async fn restore(
    kube: &Kube,
    target: &Target,
    why: &str,
    recorder: Option<&Recorder>,
) -> anyhow::Result<Outcome> {
    if target.mode == Mode::Run {
        remove_session_objects(kube, target).await?;
        return Ok(Outcome::RunEnded);
    }
    for what in restore_webhooks(kube, target).await? {
        tracing::info!(session = %target.session, object = %what, "restored the webhook's CA");
    }
    let outcome = match restore_workload(kube, target).await {
        // A Rollout's CRD removed since: nothing of it is left to restore.
        Err(err)
            if target.workload.kind == WorkloadKind::Rollout
                && crate::k8s::refused_with(&err) == Some(404) =>
        {
            Outcome::WorkloadGone
        }
        other => other?,
    };
    crash_point_after_deployment(&outcome);
    if let Some(recorder) = recorder
        && matches!(
            outcome,
            Outcome::ScaledBack { .. } | Outcome::KeptChanged { .. }
        )
    {
        publish(kube, recorder, target, &outcome, why).await;
    }
    remove_session_objects(kube, target).await?;
    Ok(outcome)
}

async fn publish(kube: &Kube, recorder: &Recorder, target: &Target, outcome: &Outcome, why: &str) {
    let resource = workload::resource(target.workload.kind);
    let api = workload::api(kube, &target.namespace, target.workload.kind);
    let Ok(object) = api.get(&target.workload.name).await else {
        return;
    };
    // The session's Lease as the related object: kube's recorder folds
    // Events with the same regarding/related/reason into one series, which
    // made a second restore of the same Deployment repeat the first one's
    // note. Each session has its own Lease reference, hence its own Event.
    let lease = ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        namespace: Some(target.namespace.clone()),
        name: Some(target.lease_name()),
        field_path: Some(format!("session={}", target.session)),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "SwapRestored".into(),
        note: Some(format!(
            "{} ({why}; session {})",
            outcome.describe(&target.workload),
            target.session
        )),
        action: "Restore".into(),
        secondary: Some(lease),
    };
    if let Err(err) = recorder
        .publish(&event, &object.object_ref(&resource))
        .await
    {
        tracing::warn!(error = %err, "failed to record the restore as an Event");
    }
}

/// With a test build's `KDEV_RESTORE_CRASH_AFTER_DEPLOYMENT` set, a restorer
/// kills itself (SIGKILL) right after it restored a Deployment and before it
/// deleted the Lease: how the tests prove a restorer dying mid-restore loses
/// nothing.
fn crash_point_after_deployment(outcome: &Outcome) {
    if crate::faults::var(crate::faults::RESTORE_CRASH_AFTER_DEPLOYMENT).is_some()
        && matches!(outcome, Outcome::ScaledBack { .. })
    {
        crate::faults::crash("restoring the deployment");
    }
}
