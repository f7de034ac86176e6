//! Environments left idle: when each was last used, and its deletion after
//! a long idle ([`kdev_contract::envs::deletion`]), by the controller's
//! scheduler or `kdev envs delete-idle`.
//!
//! # Expected flow
//! Idle `after - warning`: a Warning Event `DeletionPlanned` on the
//! namespace and `kdev.dev/delete-at` on it (the dashboard shows it).
//! Activity before that time: the annotation is removed and an Event says
//! so. At that time, still idle: an Event `DeletedAfterIdle` in the
//! controller's namespace (it outlives the environment), then the delete.
//!
//! # Guarantees
//! Never a namespace that is not an environment, is protected, or carries
//! `kdev.dev/keep`; never without the warning its whole period before; the
//! delete is conditional on the namespace's resourceVersion as judged, so a
//! keep annotation or anything else written since stops it.
//!
//! # Assumptions
//! Activity is what [`last_activity`] sees; a namespace in use by means
//! it cannot see (a client outside kdev only reading Services) should
//! carry `kdev.dev/keep`.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource as _, ResourceExt as _};
use serde::Serialize;

use crate::k8s::guarded::{self, Decision};
use crate::k8s::{Kube, activity};
use kdev_contract::envs::deletion::{self, Deletion};
use kdev_contract::envs::{self as contract};
use kdev_contract::session::{ROLE_LABEL, ROLE_SESSION};

/// The latest sign of life in an environment, and what it was: its
/// activity Lease (kdev logs, kdev wake, kdev swap, a waker), the newest
/// ReplicaSet (a rollout), a live swap session (now), the schedule's last
/// wake (when `schedule_counts`), or else the namespace's creation.
pub async fn last_activity(
    kube: &Kube,
    namespace: &Namespace,
    now: jiff::Timestamp,
    schedule_counts: bool,
) -> anyhow::Result<(jiff::Timestamp, String)> {
    let name = namespace.name_any();
    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &name);
    let replicasets: Api<ReplicaSet> = Api::namespaced(kube.client.clone(), &name);
    let sessions = ListParams::default().labels(&format!("{ROLE_LABEL}={ROLE_SESSION}"));
    let everything = ListParams::default();
    let (lease, rollouts, sessions) = tokio::try_join!(
        leases.get_opt(contract::ACTIVITY_LEASE),
        replicasets.list_metadata(&everything),
        leases.list_metadata(&sessions),
    )
    .map_err(|err| kube.explain(err, format!("read the activity in namespace {name}")))?;
    if let Some(session) = sessions.items.first() {
        return Ok((
            now,
            format!("a live kdev swap session ({})", session.name_any()),
        ));
    }
    let mut signs: Vec<(jiff::Timestamp, String)> = Vec::new();
    if let Some(created) = &namespace.metadata.creation_timestamp {
        signs.push((created.0, "the namespace's creation".into()));
    }
    if let Some((at, who)) = lease.as_ref().and_then(activity::last) {
        signs.push((at, who));
    }
    if let Some(rs) = rollouts
        .items
        .iter()
        .filter_map(|rs| Some((rs.metadata.creation_timestamp.as_ref()?.0, rs.name_any())))
        .max()
    {
        signs.push((rs.0, format!("a rollout (replicaset {})", rs.1)));
    }
    if schedule_counts
        && let Some(at) = namespace
            .annotations()
            .get(contract::SCHEDULE_APPLIED_ANNOTATION)
            .and_then(|v| v.strip_prefix("awake "))
            .and_then(|at| at.trim().parse::<jiff::Timestamp>().ok())
    {
        signs.push((at, "the schedule's wake".into()));
    }
    signs
        .into_iter()
        .max_by_key(|(at, _)| *at)
        .ok_or_else(|| anyhow::anyhow!("namespace {name} has no creation time"))
}

/// How deletion after idle is set up where it runs.
#[derive(Clone, Debug)]
pub struct Rule {
    /// For namespaces without `kdev.dev/delete-after-idle`; `None`: only those.
    pub default_after: Option<jiff::SignedDuration>,
    /// How long before the deletion its warning comes.
    pub warning: jiff::SignedDuration,
    /// Where the Event of a deletion goes (it outlives the namespace).
    pub home: String,
    /// Whoever acts, for the Events.
    pub by: String,
    pub dry_run: bool,
}

/// One environment judged.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judged {
    pub namespace: String,
    /// Last activity, and what it was.
    pub last: Option<jiff::Timestamp>,
    pub last_what: Option<String>,
    /// What was done, or would be (dry run), or why nothing.
    pub outcome: String,
    /// When it is to be deleted, once warned.
    pub delete_at: Option<jiff::Timestamp>,
    /// When to look again.
    #[serde(skip)]
    pub next: Option<jiff::Timestamp>,
    pub failed: bool,
}

impl Judged {
    pub fn line(&self) -> String {
        match (&self.last, &self.last_what) {
            (Some(last), Some(what)) => format!(
                "namespace {}: {} (last activity {last}: {what})",
                self.namespace, self.outcome
            ),
            _ => format!("namespace {}: {}", self.namespace, self.outcome),
        }
    }
}

impl Rule {
    /// Judges `namespace` and does (unless dry) what the rule asks now.
    pub async fn apply(
        &self,
        kube: &Kube,
        namespace: &Namespace,
        scope: &super::Scope,
        now: jiff::Timestamp,
    ) -> Judged {
        let name = namespace.name_any();
        let mut judged = Judged {
            namespace: name.clone(),
            last: None,
            last_what: None,
            outcome: String::new(),
            delete_at: None,
            next: None,
            failed: false,
        };
        if !scope.admits(&name, namespace.labels()) {
            judged.outcome = "not an environment (or protected): never deleted".into();
            return judged;
        }
        let after = match deletion::delete_after(namespace.annotations(), self.default_after) {
            Ok(Some(after)) => after,
            Ok(None) => {
                judged.outcome = format!(
                    "not deleted after idle (no {} on it, and no default)",
                    deletion::DELETE_AFTER_IDLE_ANNOTATION
                );
                return judged;
            }
            Err(err) => {
                judged.outcome = format!("{err}; not deleted until it is fixed");
                judged.failed = true;
                return judged;
            }
        };
        let delete_at = namespace
            .annotations()
            .get(deletion::DELETE_AT_ANNOTATION)
            .and_then(|v| v.trim().parse::<jiff::Timestamp>().ok());
        if let Some(why) = deletion::kept(namespace.annotations(), namespace.labels()) {
            judged.outcome = format!("kept by {why}");
            if delete_at.is_some()
                && !self.dry_run
                && let Err(err) = self
                    .withdraw(kube, namespace, &format!("kept by {why}"))
                    .await
            {
                judged.outcome = format!("kept by {why}; failed to withdraw its warning: {err:#}");
                judged.failed = true;
            }
            return judged;
        }
        let (last, what) = match last_activity(kube, namespace, now, false).await {
            Ok(found) => found,
            Err(err) => {
                judged.outcome = format!("failed: {err:#}");
                judged.failed = true;
                return judged;
            }
        };
        judged.last = Some(last);
        judged.last_what = Some(what.clone());
        let would = if self.dry_run { "would be " } else { "" };
        let done = match deletion::deletion_decision(last, after, self.warning, delete_at, now) {
            Deletion::WarnAt(at) => {
                judged.next = Some(at);
                Ok(format!(
                    "idle, deleted after {after:#} (warned at {at} unless used before)"
                ))
            }
            Deletion::Warned { delete_at } => {
                judged.delete_at = Some(delete_at);
                judged.next = Some(delete_at);
                Ok(format!(
                    "warned: {would}deleted at {delete_at} unless used before"
                ))
            }
            Deletion::Warn { delete_at } => {
                judged.delete_at = Some(delete_at);
                judged.next = Some(delete_at);
                self.warn(kube, namespace, delete_at, after, last, &what)
                    .await
                    .map(|()| format!("{would}warned: deleted at {delete_at} unless used before"))
            }
            Deletion::Withdraw => self
                .withdraw(
                    kube,
                    namespace,
                    &format!("activity since the warning ({what}, {last})"),
                )
                .await
                .map(|()| format!("used since its warning: deletion {would}withdrawn")),
            Deletion::Delete => self
                .delete(kube, namespace, after, last, &what)
                .await
                .map(|()| format!("{would}deleted after {after:#} without activity")),
        };
        match done {
            Ok(outcome) => judged.outcome = outcome,
            Err(err) => {
                judged.outcome = format!("failed: {err:#}");
                judged.failed = true;
            }
        }
        judged
    }

    fn recorder(&self, kube: &Kube) -> Recorder {
        Recorder::new(
            kube.client.clone(),
            Reporter {
                controller: "kdev".into(),
                instance: Some(self.by.clone()),
            },
        )
    }

    /// An Event about the namespace, in `in_namespace`.
    async fn say(
        &self,
        kube: &Kube,
        namespace: &Namespace,
        in_namespace: &str,
        warning: bool,
        reason: &str,
        note: String,
    ) -> anyhow::Result<()> {
        let mut reference: ObjectReference = namespace.object_ref(&());
        reference.namespace = Some(in_namespace.to_owned());
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "DeleteAfterIdle".into(),
            secondary: None,
        };
        self.recorder(kube)
            .publish(&event, &reference)
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "failed to record the Event {reason} in namespace {in_namespace}: {err}"
                )
            })
    }

    /// Writes (or with `None` removes) the deletion time on the namespace,
    /// guarded by what was judged.
    async fn mark(
        &self,
        kube: &Kube,
        namespace: &Namespace,
        at: Option<jiff::Timestamp>,
    ) -> anyhow::Result<()> {
        let name = namespace.name_any();
        let api: Api<Namespace> = Api::all(kube.client.clone());
        let value = at.map(|t| t.to_string());
        guarded::update_from(kube, &api, &name, &format!("namespace {name}"), Some(namespace.clone()), |_| {
            let patch = serde_json::json!({ "metadata": { "annotations": { deletion::DELETE_AT_ANNOTATION: value } } });
            Ok(Decision::Write(patch, ()))
        })
        .await?;
        Ok(())
    }

    async fn warn(
        &self,
        kube: &Kube,
        namespace: &Namespace,
        delete_at: jiff::Timestamp,
        after: jiff::SignedDuration,
        last: jiff::Timestamp,
        what: &str,
    ) -> anyhow::Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let name = namespace.name_any();
        // The mark first: a crash before the Event leaves the deletion
        // shown on the dashboard and the next pass quiet; never an Event
        // for a deletion that is not recorded.
        self.mark(kube, namespace, Some(delete_at)).await?;
        self.say(kube, namespace, &name, true, "DeletionPlanned", format!(
            "no activity since {last} ({what}): namespace {name} is deleted at {delete_at} ({} {after:#}), by {}; any activity (kdev wake, swap, logs, a rollout) or {}=true on it keeps it",
            deletion::DELETE_AFTER_IDLE_ANNOTATION, self.by, deletion::KEEP_KEYS[0]
        ))
        .await
    }

    async fn withdraw(&self, kube: &Kube, namespace: &Namespace, why: &str) -> anyhow::Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let name = namespace.name_any();
        self.mark(kube, namespace, None).await?;
        self.say(
            kube,
            namespace,
            &name,
            false,
            "DeletionWithdrawn",
            format!(
                "namespace {name} is no longer to be deleted: {why}; by {}",
                self.by
            ),
        )
        .await
    }

    async fn delete(
        &self,
        kube: &Kube,
        namespace: &Namespace,
        after: jiff::SignedDuration,
        last: jiff::Timestamp,
        what: &str,
    ) -> anyhow::Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let name = namespace.name_any();
        // The Event first, where it outlives the namespace: a deletion is
        // never without its record (a failed delete says so after it).
        self.say(kube, namespace, &self.home, true, "DeletedAfterIdle", format!(
            "namespace {name} deleted by {} after {after:#} without activity (last: {what}, {last}; {} {after:#}; warned for {})",
            self.by,
            deletion::DELETE_AFTER_IDLE_ANNOTATION,
            namespace.annotations().get(deletion::DELETE_AT_ANNOTATION).map_or("-", String::as_str),
        ))
        .await?;
        let api: Api<Namespace> = Api::all(kube.client.clone());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: namespace.uid(),
                resource_version: namespace.resource_version(),
            }),
            ..DeleteParams::background()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(err) => {
                let err = kube.explain(err, format!("delete namespace {name}"));
                let _ = self
                    .say(
                        kube,
                        namespace,
                        &self.home,
                        true,
                        "DeleteAfterIdleFailed",
                        format!("namespace {name} was not deleted: {err:#}"),
                    )
                    .await;
                Err(err)
            }
        }
    }
}

/// `kdev envs delete-idle`: judges the selected environments, and unless
/// dry acts as the controller would now.
pub async fn run(
    kube: &Kube,
    selection: &super::Selection,
    rule: &Rule,
    json: bool,
) -> anyhow::Result<bool> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let now = super::now();
    let mut failed = false;
    for name in super::act::namespaces(kube, selection).await? {
        let namespace = api
            .get(&name)
            .await
            .map_err(|err| kube.explain(err, format!("read namespace {name}")))?;
        let judged = rule.apply(kube, &namespace, &selection.scope, now).await;
        failed |= judged.failed;
        if json {
            println!("{}", serde_json::to_string(&judged)?);
        } else {
            println!("{}", judged.line());
        }
    }
    Ok(!failed)
}
