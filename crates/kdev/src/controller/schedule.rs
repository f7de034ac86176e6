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
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kdev_contract::session::ROLE_LABEL;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource as _, ResourceExt as _};
use tokio::sync::watch;

use super::serve::Metrics;
use crate::envs::act::{self, Direction, Selection};
use crate::envs::workload::{Kind, Ref, Rollout, ScaledObject};
use crate::k8s::guarded::{self, Decision};
use crate::k8s::{Kube, activity};
use kdev_contract::envs::{self as contract, Schedule};
use kube::runtime::reflector::{self, Store};
use std::collections::BTreeMap;

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
    /// Sleep environments idle this long (a namespace's
    /// `kdev.dev/sleep-after-idle` overrides it); `None`: only those that ask.
    pub idle_after: Option<jiff::SignedDuration>,
    /// The schedule of namespaces without one of their own.
    pub defaults: contract::Defaults,
    /// Which namespaces are environments (`--environments`, `--protected`).
    pub scope: crate::envs::Scope,
    /// Delete environments idle this long (a namespace's
    /// `kdev.dev/delete-after-idle` overrides it); `None`: only those that ask.
    pub delete_after: Option<jiff::SignedDuration>,
    /// How long before such a deletion it is warned about.
    pub delete_warning: jiff::SignedDuration,
    /// The controller's namespace, where a deletion's Event goes.
    pub home: String,
}

/// How many environments change at once.
const CONCURRENCY: u16 = 16;

struct Context {
    kube: Kube,
    options: Options,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Every workload's metadata (annotations: their own schedules), kept
    /// by the watches that requeue namespaces: no list per reconcile.
    deployments: Store<PartialObjectMeta<Deployment>>,
    statefulsets: Store<PartialObjectMeta<StatefulSet>>,
    cronjobs: Store<PartialObjectMeta<CronJob>>,
    jobs: Store<PartialObjectMeta<Job>>,
    /// Empty where the cluster has no Argo Rollouts.
    rollouts: Store<PartialObjectMeta<Rollout>>,
    /// Sleeping environments in which this leader has seen a live waker:
    /// the ones whose wakers it puts back when they are gone. (A sleep
    /// without wakers, `kdev sleep --no-wake-on-request`, never gets any.)
    with_wakers: std::sync::Mutex<std::collections::HashSet<String>>,
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
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return Ok(());
        }
        let (deployments, deployment_changes) = annotations_of::<Deployment>(&kube, &options);
        let (statefulsets, statefulset_changes) = annotations_of::<StatefulSet>(&kube, &options);
        let (cronjobs, cronjob_changes) = annotations_of::<CronJob>(&kube, &options);
        let (jobs, job_changes) = annotations_of::<Job>(&kube, &options);
        let (rollouts, rollout_changes) = annotations_of::<Rollout>(&kube, &options);
        // Watched where the CRD is served when this replica starts to lead.
        let rollout_changes = if rollouts_served(&kube, &options).await {
            rollout_changes.boxed()
        } else {
            futures::stream::empty().boxed()
        };
        let context = Arc::new(Context {
            kube: kube.clone(),
            options: options.clone(),
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            deployments,
            statefulsets,
            cronjobs,
            jobs,
            rollouts,
            with_wakers: Default::default(),
        });
        let api: Api<Namespace> = Api::all(kube.client.clone());
        // Only environments: the API server filters by the selector, and a
        // namespace that loses its label leaves the store.
        let mut config = match &options.namespace {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        if !options.scope.selector.is_everything() {
            config = config.labels(&options.scope.selector.to_string());
        }
        // Activity (the kdev-activity Leases) restarts an environment's
        // inactivity clock: a change of one is a reason to look again.
        let leases: Api<Lease> = match &options.namespace {
            Some(ns) => Api::namespaced(kube.client.clone(), ns),
            None => Api::all(kube.client.clone()),
        };
        let activity =
            watcher::Config::default().labels(&format!("{ROLE_LABEL}={}", activity::ROLE_ACTIVITY));
        // A workload's own schedule (its schedule annotations) changing is
        // a reason to look at its namespace again; its status, its size or
        // kdev's records on it changing are not.
        let in_namespace = |ns: Option<String>| ns.map(|ns| ObjectRef::<Namespace>::new(&ns));
        // A waker gone while its environment sleeps (a drain, an
        // eviction, a delete) is a reason to look again: it is put back.
        let wakers: Api<Pod> = match &options.namespace {
            Some(ns) => Api::namespaced(kube.client.clone(), ns),
            None => Api::all(kube.client.clone()),
        };
        let waker_pods = watcher::Config::default().labels(&crate::envs::place::waker_selector());
        let controller = Controller::new(api, config)
            .watches(leases, activity, move |lease: Lease| {
                in_namespace(lease.namespace())
            })
            .watches(wakers, waker_pods, move |pod: Pod| {
                in_namespace(pod.namespace())
            })
            .watches_stream(deployment_changes, move |w| in_namespace(w.namespace()))
            .watches_stream(statefulset_changes, move |w| in_namespace(w.namespace()))
            .watches_stream(cronjob_changes, move |w| in_namespace(w.namespace()))
            .watches_stream(job_changes, move |w| in_namespace(w.namespace()))
            .watches_stream(rollout_changes, move |w| in_namespace(w.namespace()))
            // Environments change in parallel, up to a bound that keeps
            // memory flat however many edges coincide (the API server is
            // the bottleneck well before it).
            .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
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

/// Whether the cluster serves Argo Rollouts (where the scheduler may see
/// them).
async fn rollouts_served(kube: &Kube, options: &Options) -> bool {
    let api: Api<Rollout> = match &options.namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    match crate::k8s::served(&api).await {
        Ok(served) => served,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list Argo Rollouts (grant the controller get, list, watch and patch on rollouts.argoproj.io to schedule them)");
            false
        }
    }
}

/// The metadata of every workload of kind `K` (managedFields dropped), and
/// the stream of those whose annotations changed.
#[allow(clippy::type_complexity)]
fn annotations_of<K>(
    kube: &Kube,
    options: &Options,
) -> (
    Store<PartialObjectMeta<K>>,
    impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: crate::envs::workload::Scalable + Send + Sync + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match &options.namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    let (reader, writer) = reflector::store();
    let changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|meta: &mut PartialObjectMeta<K>| {
            meta.managed_fields_mut().clear();
        })
        .reflect(writer)
        .touched_objects()
        .predicate_filter(schedule_annotations, PredicateConfig::default());
    (reader, changes)
}

/// A hash of the annotations a schedule reads: kdev's own records (the
/// sleep record, the applied state) change on every transition and must
/// not requeue the namespace each time.
fn schedule_annotations<K: kube::Resource>(object: &K) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (key, value) in object.annotations() {
        if contract::is_schedule_key(key) {
            key.hash(&mut hasher);
            value.hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Failed> {
    context.metrics.env_checked();
    let name = namespace.name_any();
    if context.options.scope.is_protected(&name) {
        return Ok(Action::await_change());
    }
    let now = context.options.clock.now();
    let mut next = None;
    let mut woke_now = false;
    let defaults = &context.options.defaults;
    match Schedule::read_or(namespace.annotations(), defaults) {
        Ok(Some(schedule)) => {
            let applied = namespace
                .annotations()
                .get(contract::SCHEDULE_APPLIED_ANNOTATION)
                .map(String::as_str);
            if let Some(awake) = contract::scheduled(&schedule, applied, now)
                && due_still(&context, &name, |fresh| {
                    let applied = fresh.get(contract::SCHEDULE_APPLIED_ANNOTATION);
                    contract::scheduled(&schedule, applied.map(String::as_str), now).is_some()
                })
                .await
                .map_err(Failed)?
            {
                transition(&context, &name, &schedule, awake, now)
                    .await
                    .map_err(Failed)?;
                woke_now = awake;
            }
            next = schedule.next_transition(now).map(|(at, _)| at);
        }
        Ok(None) => {}
        Err(err) => {
            warn(
                &context,
                &namespace,
                "BadSchedule",
                &format!("{err}; nothing changed"),
            )
            .await;
        }
    }
    let own = own_schedules(&context, &namespace, now)
        .await
        .map_err(Failed)?;
    if !woke_now {
        wakers_back(&context, &namespace).await.map_err(Failed)?;
    }
    next = [next, own].into_iter().flatten().min();
    match contract::idle_after(namespace.annotations(), context.options.idle_after) {
        Ok(Some(idle)) => {
            let look_again = inactivity(&context, &namespace, idle, now, woke_now)
                .await
                .map_err(Failed)?;
            next = [next, look_again].into_iter().flatten().min();
        }
        Ok(None) => {}
        Err(err) => {
            warn(
                &context,
                &namespace,
                "BadSchedule",
                &format!("{err}; inactivity does not count here until it is fixed"),
            )
            .await;
        }
    }
    let rule = crate::envs::idle::Rule {
        default_after: context.options.delete_after,
        warning: context.options.delete_warning,
        home: context.options.home.clone(),
        by: act::CONTROLLER_ACTOR.into(),
        dry_run: false,
    };
    let judged = rule
        .apply(&context.kube, &namespace, &context.options.scope, now)
        .await;
    if judged.failed || judged.delete_at.is_some() {
        tracing::info!(namespace = name, "{}", judged.line());
    }
    next = [next, judged.next].into_iter().flatten().min();
    Ok(match next {
        Some(at) => {
            let wait = now.duration_until(at).unsigned_abs();
            // A little after the edge, so the clock has passed it.
            Action::requeue(wait + Duration::from_millis(50))
        }
        None => Action::await_change(),
    })
}

/// Puts back the wakers of a sleeping environment when they are gone (a
/// drain or an eviction took them: wakers are bare Pods, marked safe to
/// evict so they never hold a node up). Only with wakers on (`--schedules`
/// without `--no-wake-on-request`), and only in a sleeping environment
/// where this leader saw a live waker and now sees none pending or
/// running.
async fn wakers_back(context: &Context, namespace: &Namespace) -> anyhow::Result<()> {
    if context.options.waker.is_none() {
        return Ok(());
    }
    let name = namespace.name_any();
    let asleep = |annotations: &BTreeMap<String, String>| {
        annotations.contains_key(contract::SLEEP_ANNOTATION)
    };
    let sleeping =
        context
            .deployments
            .state()
            .iter()
            .any(|w| w.namespace().as_deref() == Some(name.as_str()) && asleep(w.annotations()))
            || context.statefulsets.state().iter().any(|w| {
                w.namespace().as_deref() == Some(name.as_str()) && asleep(w.annotations())
            });
    // A poisoned lock only means another reconcile panicked; the set is
    // still a set.
    let seen = || {
        context
            .with_wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if !sleeping {
        seen().remove(&name);
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(context.kube.client.clone(), &name);
    let wakers = pods
        .list(&ListParams::default().labels(&crate::envs::place::waker_selector()))
        .await
        .map_err(|err| {
            context
                .kube
                .explain(err, format!("list the wakers in {name}"))
        })?;
    let live = wakers.items.iter().any(|pod| {
        pod.metadata.deletion_timestamp.is_none()
            && !matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
    });
    if live {
        if seen().insert(name.clone()) {
            tracing::info!(
                namespace = name,
                "the environment sleeps with wakers; a gone one is put back"
            );
        }
        return Ok(());
    }
    if !seen().contains(&name) {
        return Ok(());
    }
    let config = act::Config {
        direction: Direction::Sleep,
        selection: Selection::default(),
        dry_run: false,
        reason: None,
        json: false,
        actor: Some(act::CONTROLLER_ACTOR.into()),
        grace: None,
        waker: context.options.waker.clone(),
    };
    if let Some(placed) =
        act::place_wakers(&context.kube, &config, &name, namespace.annotations()).await
    {
        tracing::info!(namespace = name, "wakers put back: {}", placed.line());
        if let Some(error) = placed.error {
            anyhow::bail!("failed to put back the wakers of {name}: {error}");
        }
    }
    Ok(())
}

/// Workloads with a schedule of their own move at its edges, apart from
/// their namespace: the state applied is recorded on each. Returns the
/// next edge among them.
async fn own_schedules(
    context: &Context,
    namespace: &Namespace,
    now: jiff::Timestamp,
) -> anyhow::Result<Option<jiff::Timestamp>> {
    let name = namespace.name_any();
    let mut own: Vec<(Ref, BTreeMap<String, String>)> = Vec::new();
    fn collect<K: kube::Resource<DynamicType = ()> + Clone>(
        store: &Store<PartialObjectMeta<K>>,
        namespace: &str,
        kind: Kind,
        own: &mut Vec<(Ref, BTreeMap<String, String>)>,
    ) {
        for meta in store.state() {
            if meta.namespace().as_deref() == Some(namespace)
                && contract::has_own_schedule(meta.annotations())
            {
                let reference = Ref {
                    kind,
                    name: meta.name_any(),
                };
                own.push((reference, meta.annotations().clone()));
            }
        }
    }
    collect(&context.deployments, &name, Kind::Deployment, &mut own);
    collect(&context.statefulsets, &name, Kind::StatefulSet, &mut own);
    collect(&context.cronjobs, &name, Kind::CronJob, &mut own);
    collect(&context.jobs, &name, Kind::Job, &mut own);
    collect(&context.rollouts, &name, Kind::Rollout, &mut own);
    own.sort_by(|a, b| (a.0.kind, &a.0.name).cmp(&(b.0.kind, &b.0.name)));
    let keep_awake = namespace.annotations().get(contract::KEEP_AWAKE_ANNOTATION);
    let mut next = None;
    for (target, own_annotations) in own {
        // The namespace's keep-awake holds its workloads too.
        let mut annotations = own_annotations.clone();
        if let Some(until) = keep_awake {
            annotations.insert(contract::KEEP_AWAKE_ANNOTATION.to_owned(), until.clone());
        }
        let schedule = match Schedule::read(&annotations) {
            Ok(Some(schedule)) => schedule,
            Ok(None) => continue,
            Err(err) => {
                warn(
                    context,
                    namespace,
                    "BadSchedule",
                    &format!("{err} on {target}; nothing changed"),
                )
                .await;
                continue;
            }
        };
        let applied = own_annotations
            .get(contract::SCHEDULE_APPLIED_ANNOTATION)
            .map(String::as_str);
        if let Some(awake) = contract::scheduled(&schedule, applied, now) {
            let why = format!("schedule {} on {target}", schedule.from.join(", "));
            let selection = Selection {
                namespaces: vec![name.clone()],
                workloads: vec![target.clone()],
                ..Selection::default()
            };
            act_on(context, awake, selection, why, now).await?;
            let value = contract::applied_value(awake, now);
            match target.kind {
                Kind::Deployment => {
                    record_on::<Deployment>(context, &name, &target.name, value).await?
                }
                Kind::StatefulSet => {
                    record_on::<StatefulSet>(context, &name, &target.name, value).await?
                }
                Kind::CronJob => record_on::<CronJob>(context, &name, &target.name, value).await?,
                Kind::Job => record_on::<Job>(context, &name, &target.name, value).await?,
                Kind::Rollout => record_on::<Rollout>(context, &name, &target.name, value).await?,
                Kind::ScaledObject => {
                    record_on::<ScaledObject>(context, &name, &target.name, value).await?
                }
                Kind::DaemonSet => {
                    record_on::<k8s_openapi::api::apps::v1::DaemonSet>(
                        context,
                        &name,
                        &target.name,
                        value,
                    )
                    .await?
                }
            }
            act::written();
            context.metrics.env_transition(awake);
        }
        let edge = schedule.next_transition(now).map(|(at, _)| at);
        next = [next, edge].into_iter().flatten().min();
    }
    Ok(next)
}

/// Records on a workload the state its own schedule last put it in.
async fn record_on<K: crate::envs::workload::Scalable>(
    context: &Context,
    namespace: &str,
    name: &str,
    value: String,
) -> anyhow::Result<()> {
    let api: Api<K> = Api::namespaced(context.kube.client.clone(), namespace);
    guarded::update(
        &context.kube,
        &api,
        name,
        &format!("{} {namespace}/{name}", K::KIND.short()),
        |_| {
            let patch = serde_json::json!({
                "metadata": { "annotations": { contract::SCHEDULE_APPLIED_ANNOTATION: value } }
            });
            Ok(Decision::Write(patch, ()))
        },
    )
    .await?;
    Ok(())
}

/// The inactivity rule for one environment: sleep it when it has been idle
/// `idle` long (once; activity starts the clock again). Returns when to
/// look again.
async fn inactivity(
    context: &Context,
    namespace: &Namespace,
    idle: jiff::SignedDuration,
    now: jiff::Timestamp,
    woke_now: bool,
) -> anyhow::Result<Option<jiff::Timestamp>> {
    let name = namespace.name_any();
    let annotations = namespace.annotations();
    let keep_awake = annotations
        .get(contract::KEEP_AWAKE_ANNOTATION)
        .and_then(|v| v.trim().parse::<jiff::Timestamp>().ok())
        .filter(|until| *until > now);
    if keep_awake.is_some() {
        return Ok(keep_awake);
    }
    let (last, what) = if woke_now {
        (now, "the schedule's wake".to_owned())
    } else {
        crate::envs::idle::last_activity(&context.kube, namespace, now, true).await?
    };
    let slept = annotations
        .get(contract::IDLE_SLEPT_ANNOTATION)
        .and_then(|v| v.trim().parse::<jiff::Timestamp>().ok());
    match contract::idle_decision(last, idle, slept, now) {
        contract::Idle::At(at) => Ok(Some(at)),
        contract::Idle::Slept => Ok(None),
        contract::Idle::SleepNow
            if !due_still(context, &name, |fresh| {
                fresh.get(contract::IDLE_SLEPT_ANNOTATION)
                    == annotations.get(contract::IDLE_SLEPT_ANNOTATION)
            })
            .await? =>
        {
            // Another pass recorded it since this copy of the namespace.
            Ok(None)
        }
        contract::Idle::SleepNow => {
            let why = format!("no activity for {idle:#} (last: {what}, {last})");
            let selection = Selection {
                namespaces: vec![name.clone()],
                ..Selection::default()
            };
            act_on(context, false, selection, why.clone(), now).await?;
            record(
                context,
                &name,
                contract::IDLE_SLEPT_ANNOTATION,
                now.to_string(),
            )
            .await?;
            context.metrics.env_transition(false);
            tracing::info!(namespace = name, %why, "environment put to sleep for inactivity");
            Ok(None)
        }
    }
}

/// Whether a transition seen on the cached namespace is still due on the
/// namespace as the API server has it now: the cache may not have caught
/// up with the record of the previous pass yet, and a transition must not
/// run twice.
async fn due_still(
    context: &Context,
    name: &str,
    due: impl FnOnce(&std::collections::BTreeMap<String, String>) -> bool,
) -> anyhow::Result<bool> {
    let api: Api<Namespace> = Api::all(context.kube.client.clone());
    let fresh = api
        .get(name)
        .await
        .map_err(|err| context.kube.explain(err, format!("read namespace {name}")))?;
    Ok(due(fresh.annotations()))
}

/// Writes one annotation on the namespace (guarded).
async fn record(context: &Context, name: &str, key: &str, value: String) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(context.kube.client.clone());
    guarded::update(
        &context.kube,
        &api,
        name,
        &format!("namespace {name}"),
        |_| {
            let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
            Ok(Decision::Write(patch, ()))
        },
    )
    .await?;
    Ok(())
}

/// Wakes (`awake`) or sleeps the selection as the controller, with its
/// grace period and wakers; logs each change; fails (to be retried) when
/// any workload failed.
async fn act_on(
    context: &Context,
    awake: bool,
    selection: Selection,
    why: String,
    now: jiff::Timestamp,
) -> anyhow::Result<()> {
    let config = act::Config {
        direction: if awake {
            Direction::Wake
        } else {
            Direction::Sleep
        },
        selection,
        dry_run: false,
        reason: Some(why),
        json: false,
        actor: Some(act::CONTROLLER_ACTOR.into()),
        grace: (!awake).then_some(context.options.grace),
        waker: context.options.waker.clone(),
    };
    let report = act::run_at(&context.kube, &config, now).await?;
    let namespace = config.selection.namespaces.join(",");
    for change in &report.changes {
        tracing::info!(namespace, "{}", change.line());
    }
    for placed in &report.wakers {
        tracing::info!(namespace, "{}", placed.line());
    }
    if let Some(failed) = report
        .changes
        .iter()
        .find(|c| matches!(c.done, act::Done::Failed { .. }))
    {
        anyhow::bail!("{} (retried)", failed.line());
    }
    Ok(())
}

async fn transition(
    context: &Context,
    name: &str,
    schedule: &Schedule,
    awake: bool,
    now: jiff::Timestamp,
) -> anyhow::Result<()> {
    let why = format!("schedule {} on namespace {name}", schedule.from.join(", "));
    tracing::debug!(namespace = name, awake, "environment transition started");
    let selection = Selection {
        namespaces: vec![name.to_owned()],
        // Workloads with schedules of their own follow those.
        except_own_schedules: true,
        ..Selection::default()
    };
    act_on(context, awake, selection, why.clone(), now).await?;
    record(
        context,
        name,
        contract::SCHEDULE_APPLIED_ANNOTATION,
        contract::applied_value(awake, now),
    )
    .await?;
    act::written();
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
