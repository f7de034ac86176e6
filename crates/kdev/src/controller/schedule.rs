//! The environments' scheduler: at each edge of an environment's schedule
//! (annotations on its namespace) it puts the environment to sleep or wakes
//! it, records the state it applied on the namespace, and waits for the next
//! edge. It watches Namespaces: a reconcile runs when one changes or when
//! its next edge comes, never in a loop over everything.
//!
//! Between edges it leaves people alone: a workload woken or scaled by hand
//! stays as they left it until the next edge. A controller that dies in the
//! middle of a transition has not recorded it yet, so the next leader runs
//! it again; every step of a transition is idempotent.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Resource as _, ResourceExt as _};
use tokio::sync::watch;

use super::serve::Metrics;
use crate::envs::act::{self, Direction, Selection};
use crate::k8s::Kube;
use crate::k8s::guarded::{self, Decision};
use kdev_contract::envs::{self as contract, Schedule};

/// The scheduler's clock: the real one, or one started at a given instant
/// that runs at the real pace (how tests reach a schedule's edge).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset: jiff::SignedDuration,
}

impl Clock {
    pub fn real() -> Self {
        Self {
            offset: jiff::SignedDuration::ZERO,
        }
    }

    pub fn starting_at(start: jiff::Timestamp) -> Self {
        Self {
            offset: start.duration_since(jiff::Timestamp::now()),
        }
    }

    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
            .checked_add(self.offset)
            .unwrap_or_else(|_| jiff::Timestamp::now())
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// At a sleep edge, workloads younger than this stay awake.
    pub grace: Duration,
    pub clock: Clock,
    /// One namespace only (default: every namespace).
    pub namespace: Option<String>,
    /// The wakers' image (wake on request), or none.
    pub waker: Option<String>,
}

struct Context {
    kube: Kube,
    options: Options,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Failed(anyhow::Error);

/// Runs while this replica leads; stops when it no longer does.
pub async fn run(
    kube: Kube,
    options: Options,
    mut leading: watch::Receiver<bool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let context = Arc::new(Context {
        kube: kube.clone(),
        options: options.clone(),
        recorder,
        metrics,
    });
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(kube.client.clone());
        let config = match &options.namespace {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        let controller = Controller::new(api, config)
            .run(reconcile, error_policy, context.clone())
            .for_each(|outcome| async move {
                if let Err(err) = outcome {
                    tracing::debug!(error = %err, "environment check");
                }
            });
        tracing::info!("environment scheduler started");
        tokio::select! {
            () = controller => {}
            _ = leading.wait_for(|l| !*l) => {
                tracing::info!("environment scheduler stopped: no longer the leader");
            }
        }
    }
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Failed> {
    context.metrics.env_checked();
    let name = namespace.name_any();
    let now = context.options.clock.now();
    let schedule = match Schedule::read(namespace.annotations()) {
        Ok(Some(schedule)) => schedule,
        Ok(None) => return Ok(Action::await_change()),
        Err(err) => {
            warn(
                &context,
                &namespace,
                "BadSchedule",
                &format!("{err}; nothing changed"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let applied = namespace
        .annotations()
        .get(contract::SCHEDULE_APPLIED_ANNOTATION)
        .map(String::as_str);
    if let Some(awake) = contract::scheduled(&schedule, applied, now) {
        transition(&context, &name, &schedule, awake, now)
            .await
            .map_err(Failed)?;
    }
    Ok(match schedule.next_transition(now) {
        Some((at, _)) => {
            let wait = now.duration_until(at).unsigned_abs();
            // A little after the edge, so the clock has passed it.
            Action::requeue(wait + Duration::from_millis(50))
        }
        None => Action::await_change(),
    })
}

async fn transition(
    context: &Context,
    name: &str,
    schedule: &Schedule,
    awake: bool,
    now: jiff::Timestamp,
) -> anyhow::Result<()> {
    let why = format!("schedule {} on namespace {name}", schedule.from.join(", "));
    let config = act::Config {
        direction: if awake {
            Direction::Wake
        } else {
            Direction::Sleep
        },
        selection: Selection {
            namespaces: vec![name.to_owned()],
            ..Selection::default()
        },
        dry_run: false,
        reason: Some(why.clone()),
        json: false,
        actor: Some("kdev-controller".into()),
        grace: (!awake).then_some(context.options.grace),
        waker: context.options.waker.clone(),
    };
    let report = act::run_at(&context.kube, &config, now).await?;
    let changes = &report.changes;
    for change in changes {
        tracing::info!(namespace = name, "{}", change.line());
    }
    for placed in &report.wakers {
        tracing::info!(namespace = name, "{}", placed.line());
    }
    if let Some(failed) = changes
        .iter()
        .find(|c| matches!(c.done, act::Done::Failed { .. }))
    {
        anyhow::bail!("{} (retried)", failed.line());
    }
    let api: Api<Namespace> = Api::all(context.kube.client.clone());
    let value = contract::applied_value(awake, now);
    guarded::update(
        &context.kube,
        &api,
        name,
        &format!("namespace {name}"),
        |_| {
            let patch = serde_json::json!({
                "metadata": { "annotations": { contract::SCHEDULE_APPLIED_ANNOTATION: value } }
            });
            Ok(Decision::Write(patch, ()))
        },
    )
    .await?;
    context.metrics.env_transition(awake);
    tracing::info!(namespace = name, awake, %why, "environment transition applied");
    Ok(())
}

fn error_policy(_namespace: Arc<Namespace>, err: &Failed, _context: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "environment transition failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn warn(context: &Context, namespace: &Namespace, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.to_owned()),
        action: "Schedule".into(),
        secondary: None,
    };
    // In the environment's own namespace, where `kubectl events -n` and
    // `kdev envs --history` look (a cluster-scoped object's Events would
    // otherwise go to "default").
    let mut reference = namespace.object_ref(&());
    reference.namespace = Some(namespace.name_any());
    if let Err(err) = context.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %err, "failed to record a warning Event");
    }
}
