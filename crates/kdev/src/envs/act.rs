//! `kdev sleep` and `kdev wake`: one guarded write per workload that
//! changes its size and its sleep record together, and an Event saying who
//! did it and why.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kdev_contract::keys::FIELD_MANAGER;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, ResourceExt as _};
use serde::Serialize;

use super::workload::{self, Kind, Ref, Rollout, Scalable, ScaledObject, Workload};
use crate::faults;
use crate::k8s::Kube;
use crate::k8s::guarded::{self, Decision};
use kdev_contract::envs::savings::Amount;
use kdev_contract::envs::{self, SleepRecord};
use kdev_contract::session::ORIGINAL_REPLICAS_ANNOTATION;

/// Who the controller's scheduler acts as.
pub const CONTROLLER_ACTOR: &str = "kdev-controller";

/// Which way a command moves environments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sleep,
    Wake,
}

/// Which workloads a command acts on.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Whole environments (namespaces); with `workloads`, where they are.
    pub namespaces: Vec<String>,
    /// A label selector on namespaces.
    pub selector: Option<String>,
    /// Every environment.
    pub all: bool,
    /// Which namespaces `all` and `selector` choose among.
    pub scope: super::Scope,
    /// Single workloads, in the one namespace given.
    pub workloads: Vec<Ref>,
    /// Whole environments only: leave out workloads that have a schedule
    /// of their own (the scheduler moves them at their own edges).
    pub except_own_schedules: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub direction: Direction,
    pub selection: Selection,
    pub dry_run: bool,
    /// Said in the Event and the output.
    pub reason: Option<String>,
    pub json: bool,
    /// Who acts, for records and Events (default: user@host).
    pub actor: Option<String>,
    /// When sleeping: leave workloads younger than this awake.
    pub grace: Option<std::time::Duration>,
    /// When sleeping: the image of the wakers that wake the environment on
    /// its first request ([`super::waker`]); `None` places none.
    pub waker: Option<String>,
}

/// What a sleep or a wake did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// One per workload.
    pub changes: Vec<Change>,
    /// After a sleep, per namespace: what wakes it on request.
    pub wakers: Vec<super::place::Placed>,
}

/// What happened to one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Done {
    Slept {
        from: i32,
        to: i32,
    },
    Woke {
        from: i32,
        to: i32,
    },
    /// Held by a swap: its restore now puts back `to` (was `from`).
    RetargetedSwap {
        session: String,
        from: i32,
        to: i32,
    },
    /// Changed by someone while asleep: kept, record removed.
    KeptChanged {
        current: i32,
        original: i32,
    },
    /// Nothing to do, and why.
    Unchanged {
        why: String,
    },
    Failed {
        error: String,
    },
}

/// What kind of thing a change is to: a workload kdev sleeps by itself, or
/// a resource slept by its namespace's patch (`cluster.postgresql.cnpg.io`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Of {
    Workload(Kind),
    Resource(String),
}

impl Of {
    fn short(&self) -> &str {
        match self {
            Of::Workload(kind) => kind.short(),
            Of::Resource(resource) => resource,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub namespace: String,
    pub kind: Of,
    pub name: String,
    #[serde(flatten)]
    pub done: Done,
    pub dry_run: bool,
    /// What else changed with it (its HPA's minimum).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

impl Change {
    pub fn line(&self) -> String {
        let mut line = self.what();
        for also in &self.also {
            line.push_str("; ");
            line.push_str(also);
        }
        line
    }

    fn what(&self) -> String {
        let target = format!("{}/{} in {}", self.kind.short(), self.name, self.namespace);
        let would = if self.dry_run { "would be " } else { "" };
        let kind = match &self.kind {
            Of::Workload(kind) => *kind,
            // Its fields are in `also`.
            Of::Resource(_) => {
                return match &self.done {
                    Done::Slept { .. } => format!("{target}: {would}asleep by its patch"),
                    Done::Woke { .. } => format!("{target}: {would}awake, as before its sleep"),
                    Done::Unchanged { why } => format!("{target}: unchanged, {why}"),
                    Done::Failed { error } => format!("{target}: failed: {error}"),
                    other => format!("{target}: {other:?}"),
                };
            }
        };
        let size = |n: i32| kind.size_text(n);
        match &self.done {
            Done::Slept { from, to } => {
                format!("{target}: {would}asleep ({} → {})", size(*from), size(*to))
            }
            Done::Woke { from, to } => {
                format!("{target}: {would}awake ({} → {})", size(*from), size(*to))
            }
            Done::RetargetedSwap { session, from, to } => format!(
                "{target}: held by kdev swap session {session}; when it ends, it {would}restores {} (was {})",
                size(*to),
                size(*from)
            ),
            Done::KeptChanged { current, original } => format!(
                "{target}: changed while asleep ({} now, {} before the sleep); {would}kept as it is",
                size(*current),
                size(*original)
            ),
            Done::Unchanged { why } => format!("{target}: unchanged, {why}"),
            Done::Failed { error } => format!("{target}: failed: {error}"),
        }
    }
}

/// Counts a write; kills the process at the injected crash point.
///
/// Testing the crash sweep: a test build's `KDEV_ENVS_CRASH_AFTER=N`
/// ([`crate::faults`]) kills this process (SIGKILL) right after its N-th
/// write of an environment's transition: each workload written, the wakers
/// placed, and (the controller's) the applied state recorded, in that order.
/// Whatever N, the next run must complete the transition exactly.
pub fn written() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static AT: OnceLock<Option<u32>> = OnceLock::new();
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let Some(at) = *AT.get_or_init(|| faults::var(faults::ENVS_CRASH_AFTER)?.parse().ok()) else {
        return;
    };
    if COUNT.fetch_add(1, Ordering::SeqCst) + 1 == at {
        faults::crash(&format!("write {at}"));
    }
}

/// The namespaces a selection names.
pub async fn namespaces(kube: &Kube, selection: &Selection) -> anyhow::Result<Vec<String>> {
    if !selection.all && selection.selector.is_none() {
        return Ok(if selection.namespaces.is_empty() {
            vec![kube.namespace.clone()]
        } else {
            selection.namespaces.clone()
        });
    }
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let scope = &selection.scope;
    let params = ListParams::default().labels(&scope.label_selector(selection.selector.as_deref()));
    let list = api
        .list(&params)
        .await
        .map_err(|err| kube.explain(err, "list namespaces"))?;
    Ok(list
        .items
        .iter()
        .map(|ns| ns.name_any())
        .filter(|name| !scope.is_protected(name))
        .collect())
}

async fn namespace_annotations(kube: &Kube, namespace: &str) -> BTreeMap<String, String> {
    // Read when allowed; a starter Role cannot read namespaces, and the
    // namespace's keys then do not apply.
    let api: Api<Namespace> = Api::all(kube.client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(ns)) => ns.annotations().clone(),
        _ => BTreeMap::new(),
    }
}

/// Runs a sleep or a wake over the selection: one change per workload, and
/// after a sleep the wakers placed.
pub async fn run(kube: &Kube, config: &Config) -> anyhow::Result<Report> {
    run_at(kube, config, super::now()).await
}

/// [`run`] at `now` (the controller's clock).
pub async fn run_at(kube: &Kube, config: &Config, now: jiff::Timestamp) -> anyhow::Result<Report> {
    let who = config
        .actor
        .clone()
        .unwrap_or_else(crate::host::user_at_host);
    let by = match &config.reason {
        Some(reason) => format!("{who}: {reason}"),
        None => who.clone(),
    };
    let recorder = Recorder::new(
        kube.client.clone(),
        Reporter {
            controller: "kdev".into(),
            instance: Some(who),
        },
    );
    let mut report = Report::default();
    let mut patched_kinds = super::patched::Kinds::default();
    for namespace in namespaces(kube, &config.selection).await? {
        // Where an environment's transition spends its time (debug log).
        let started = std::time::Instant::now();
        let ns_annotations = namespace_annotations(kube, &namespace).await;
        let excluded_ns = envs::exclusion(&ns_annotations, &BTreeMap::new(), now);
        // Listed objects are decided on as listed (no second read); named
        // ones are read.
        let (targets, scaled_objects, untouched): (Vec<Target>, Vec<ScaledObject>, Option<Amount>) =
            if config.selection.workloads.is_empty() {
                let listed = workload::listed(kube, &namespace).await?;
                let scaled_objects = listed.scaled_objects.clone();
                let own = config.selection.except_own_schedules;
                let mut targets = Vec::new();
                let mut untouched = Amount::default();
                known(
                    &mut targets,
                    &mut untouched,
                    listed.deployments,
                    own,
                    Known::Deployment,
                );
                known(
                    &mut targets,
                    &mut untouched,
                    listed.statefulsets,
                    own,
                    Known::StatefulSet,
                );
                known(
                    &mut targets,
                    &mut untouched,
                    listed.cronjobs,
                    own,
                    Known::CronJob,
                );
                known(&mut targets, &mut untouched, listed.jobs, own, Known::Job);
                known(
                    &mut targets,
                    &mut untouched,
                    listed.rollouts,
                    own,
                    Known::Rollout,
                );
                known(
                    &mut targets,
                    &mut untouched,
                    listed.scaled_objects,
                    own,
                    Known::ScaledObject,
                );
                known(
                    &mut targets,
                    &mut untouched,
                    listed.daemonsets,
                    own,
                    Known::DaemonSet,
                );
                (targets, scaled_objects, Some(untouched))
            } else {
                let targets = config
                    .selection
                    .workloads
                    .iter()
                    .map(|r| (r.clone(), None))
                    .collect();
                let scaled_objects =
                    workload::list_kind::<ScaledObject>(kube, Some(&namespace)).await?;
                // What the others have asleep is not known without a list.
                (targets, scaled_objects, None)
            };
        let keda = keda_targets(&scaled_objects);
        let whole = config.selection.workloads.is_empty();
        let step = Step {
            kube,
            namespace: &namespace,
            ns_annotations: &ns_annotations,
            excluded_ns: excluded_ns.as_deref(),
            config,
            by: &by,
            now,
        };
        // Listed when a workload first needs them: on a wake, before the
        // turn (every woken Deployment, StatefulSet or Rollout needs them).
        let hpas = tokio::sync::OnceCell::new();
        if config.direction == Direction::Wake
            && !config.dry_run
            && targets.iter().any(|(target, _)| target.kind.has_replicas())
        {
            hpas.get_or_init(|| super::hpa::list(kube, &namespace))
                .await;
        }
        let moving = super::patched::Move {
            kube,
            namespace: &namespace,
            ns_annotations: &ns_annotations,
            excluded_ns: excluded_ns.as_deref(),
            sleep: config.direction == Direction::Sleep,
            dry_run: config.dry_run,
            by: &by,
            now,
        };
        let patched = match whole {
            true => moving.read(&mut patched_kinds).await,
            false => Vec::new(),
        };
        // In the environment's turn (workload::turn), its workloads and the
        // resources its rules sleep by patch change several at once, each
        // its own guarded write, with nothing read in the turn; lines and
        // Events follow in listed order.
        let listed_in = started.elapsed();
        let turn = workload::turn().await;
        let turn_in = started.elapsed();
        let (step, keda, hpas, moving) = (&step, &keda, &hpas, &moving);
        let writes = targets
            .into_iter()
            .map(Write::Workload)
            .chain(patched.into_iter().map(Write::Patched));
        let mut written_all = futures::stream::iter(writes.enumerate())
            .map(|(at, write)| async move {
                let done = match write {
                    Write::Workload((target, known)) => {
                        Written::Workload(Box::new(step.change(target, known, keda, hpas).await))
                    }
                    Write::Patched(item) => Written::Patched(moving.write(item).await),
                };
                (at, done)
            })
            .buffer_unordered(workload::AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        written_all.sort_by_key(|(at, _)| *at);
        let (mut workloads, mut patched) = (Vec::new(), Vec::new());
        for (_, done) in written_all {
            match done {
                Written::Workload(done) => workloads.push(*done),
                Written::Patched(moved) => patched.push(moved),
            }
        }
        drop(turn);
        let written_in = started.elapsed();
        let mut summary = Summary::default();
        // What is asleep after the transition, when every workload's state
        // is known from its write or its read.
        let mut asleep = untouched;
        for (change, reference, amount) in workloads {
            asleep = asleep.zip(amount).map(|(a, b)| a.plus(b));
            // A whole environment's plain sleeps and wakes are one Event on
            // its namespace (below), not one per workload: a thousand
            // workloads are not a thousand Events. The rest are each their own.
            let summed = whole && matches!(change.done, Done::Slept { .. } | Done::Woke { .. });
            if summed && !config.dry_run {
                summary.push(
                    format!("{}/{}", change.kind.short(), change.name),
                    &change.done,
                );
            }
            if !config.dry_run
                && !summed
                && let Some(reference) = reference
            {
                publish(&recorder, &reference, &change.done, &by).await;
            }
            if !config.dry_run
                && matches!(
                    change.done,
                    Done::Slept { .. }
                        | Done::Woke { .. }
                        | Done::RetargetedSwap { .. }
                        | Done::KeptChanged { .. }
                )
            {
                written();
            }
            report.changes.push(change);
        }
        for moved in patched {
            let change = patched_change(&namespace, config.dry_run, moved);
            if !config.dry_run && matches!(change.done, Done::Slept { .. } | Done::Woke { .. }) {
                // In the environment's one Event, with the fields.
                let line = format!(
                    "{}/{} {}",
                    change.kind.short(),
                    change.name,
                    change.also.join(", ")
                );
                summary.push_line(line, &change.done);
                written();
            }
            report.changes.push(change);
        }
        let changed = summary.changed();
        summary.publish(&recorder, &namespace, &by).await;
        if !config.dry_run
            && (changed
                || report.changes.iter().any(|c| {
                    c.namespace == namespace
                        && matches!(
                            c.done,
                            Done::Slept { .. } | Done::Woke { .. } | Done::KeptChanged { .. }
                        )
                }))
        {
            super::savings::record(kube, &namespace, now, asleep).await;
        }
        tracing::debug!(
            namespace,
            listed = ?listed_in,
            turn = ?turn_in,
            written = ?written_in,
            recorded = ?started.elapsed(),
            "environment's transition timed"
        );
        // A person's or a request's wake is activity; the scheduler's is
        // not (the idle rule counts its wake itself), or an environment
        // woken every morning would never be idle enough to delete.
        if config.direction == Direction::Wake
            && !config.dry_run
            && config.actor.as_deref() != Some(CONTROLLER_ACTOR)
        {
            crate::k8s::activity::record(
                kube.clone(),
                namespace.clone(),
                format!("kdev wake by {by}"),
            )
            .await;
        }
        if config.direction == Direction::Sleep
            && !config.dry_run
            && let Some(placed) = place_wakers(kube, config, &namespace, &ns_annotations).await
        {
            report.wakers.push(placed);
            written();
        }
    }
    Ok(report)
}

/// A patched resource's outcome as a change: slept is 1 → 0, woken 0 → 1,
/// its fields in `also`.
pub fn patched_change(namespace: &str, dry_run: bool, moved: super::patched::Moved) -> Change {
    use super::patched::Outcome;
    let done = match moved.outcome {
        Outcome::Slept => Done::Slept { from: 1, to: 0 },
        Outcome::Woke => Done::Woke { from: 0, to: 1 },
        Outcome::Unchanged(why) => Done::Unchanged { why },
        Outcome::Failed(error) => Done::Failed { error },
    };
    Change {
        namespace: namespace.to_owned(),
        kind: Of::Resource(moved.resource),
        name: moved.name,
        done,
        dry_run,
        also: moved.fields,
    }
}

/// Places the namespace's wakers after a sleep, unless it opted out.
pub async fn place_wakers(
    kube: &Kube,
    config: &Config,
    namespace: &str,
    ns_annotations: &BTreeMap<String, String>,
) -> Option<super::place::Placed> {
    let image = config.waker.as_deref()?;
    let off = |error: String| super::place::Placed {
        namespace: namespace.to_owned(),
        wakers: Vec::new(),
        error: Some(error),
    };
    match envs::wakes_on_request(ns_annotations) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(err) => return Some(off(format!("{err} on namespace {namespace}"))),
    }
    let wake = match ns_annotations.get(envs::WAKE_WORKLOADS_ANNOTATION) {
        Some(list) => match list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(workload::parse_ref)
            .collect::<anyhow::Result<Vec<_>>>()
        {
            Ok(refs) => refs,
            Err(err) => {
                return Some(off(format!(
                    "annotation {} on namespace {namespace}: {err:#}",
                    envs::WAKE_WORKLOADS_ANNOTATION
                )));
            }
        },
        None => Vec::new(),
    };
    let patches = ns_annotations
        .get(kdev_contract::envs::patch::SLEEP_PATCHES_ANNOTATION)
        .map(String::as_str);
    Some(super::place::place(kube, namespace, image, &wake, patches).await)
}

struct Step<'a> {
    kube: &'a Kube,
    namespace: &'a str,
    ns_annotations: &'a BTreeMap<String, String>,
    excluded_ns: Option<&'a str>,
    config: &'a Config,
    by: &'a str,
    now: jiff::Timestamp,
}

impl Step<'_> {
    /// Decides and writes one listed (`known`) or named workload, then its
    /// HPAs; the change, and a reference to the workload for its Event.
    async fn change(
        &self,
        target: Ref,
        known: Option<Known>,
        keda: &BTreeMap<Ref, String>,
        hpas: &tokio::sync::OnceCell<anyhow::Result<Vec<HorizontalPodAutoscaler>>>,
    ) -> (Change, Option<ObjectReference>, Option<Amount>) {
        let config = self.config;
        let changed = |done, also| Change {
            namespace: self.namespace.to_owned(),
            kind: Of::Workload(target.kind),
            name: target.name.clone(),
            done,
            dry_run: config.dry_run,
            also,
        };
        if let Some(scaler) = keda.get(&target) {
            let why =
                format!("scaled by KEDA ScaledObject {scaler}, which sleeps and wakes instead");
            // Not counted in what sleeping saved (see savings).
            return (
                changed(unchanged(&why), Vec::new()),
                None,
                Some(Amount::default()),
            );
        }
        let name = &target.name;
        let outcome = match (target.kind, known) {
            (_, Some(Known::Deployment(d))) => self.apply(name, Some(*d)).await,
            (_, Some(Known::StatefulSet(s))) => self.apply(name, Some(*s)).await,
            (_, Some(Known::CronJob(c))) => self.apply(name, Some(*c)).await,
            (_, Some(Known::Job(j))) => self.apply(name, Some(*j)).await,
            (_, Some(Known::Rollout(r))) => self.apply(name, Some(*r)).await,
            (_, Some(Known::ScaledObject(o))) => self.apply(name, Some(*o)).await,
            (_, Some(Known::DaemonSet(d))) => self.apply(name, Some(*d)).await,
            (Kind::DaemonSet, None) => self.apply::<DaemonSet>(name, None).await,
            (Kind::Deployment, None) => self.apply::<Deployment>(name, None).await,
            (Kind::StatefulSet, None) => self.apply::<StatefulSet>(name, None).await,
            (Kind::CronJob, None) => self.apply::<CronJob>(name, None).await,
            (Kind::Job, None) => self.apply::<Job>(name, None).await,
            (Kind::Rollout, None) => self.apply::<Rollout>(name, None).await,
            (Kind::ScaledObject, None) => self.apply::<ScaledObject>(name, None).await,
        };
        let (done, reference, amount) = outcome.unwrap_or_else(|err| {
            (
                Done::Failed {
                    error: format!("{err:#}"),
                },
                None,
                None,
            )
        });
        let mut also = Vec::new();
        let hpa_change = match &done {
            Done::Slept { to, .. } if *to > 0 => Some(Some(*to)),
            Done::Woke { .. } | Done::KeptChanged { .. } => Some(None),
            _ => None,
        };
        if let Some(sleeping_to) = hpa_change
            && !config.dry_run
            && target.kind.has_replicas()
        {
            let listed = hpas
                .get_or_init(|| super::hpa::list(self.kube, self.namespace))
                .await;
            let adjusted = match listed {
                Ok(list) => {
                    super::hpa::adjust(
                        self.kube,
                        self.namespace,
                        list,
                        target.kind,
                        name,
                        sleeping_to,
                    )
                    .await
                }
                Err(err) => Err(anyhow::anyhow!("{err:#}")),
            };
            match adjusted {
                Ok(notes) => also = notes,
                // Only what kdev changed on HPAs itself; nothing to undo.
                Err(err)
                    if crate::k8s::refused_with(&err) == Some(403) && sleeping_to.is_none() => {}
                Err(err) => also.push(format!("its HPA was not adjusted: {err:#}")),
            }
        }
        (changed(done, also), reference, amount)
    }

    /// Decides and writes one workload; what was done, a reference to the
    /// workload for its Event, and what it has asleep now (when known).
    async fn apply<K: Scalable>(
        &self,
        name: &str,
        known: Option<K>,
    ) -> anyhow::Result<(Done, Option<ObjectReference>, Option<Amount>)> {
        let api: Api<K> = Api::namespaced(self.kube.client.clone(), self.namespace);
        let what = format!("{} {}/{name}", K::KIND.short(), self.namespace);
        let dry_run = self.config.dry_run;
        let updated = guarded::update_from(self.kube, &api, name, &what, known, |current| {
            let Some(object) = current else {
                anyhow::bail!("{what} not found; check the name and the namespace (-n)");
            };
            let (owned, done) = self.decide(&workload::view(object))?;
            Ok(match owned {
                Some(owned) if !dry_run => Decision::Write(owned.patch(object), (done, None)),
                _ => Decision::Keep((done, Some(super::savings::asleep_of(object)))),
            })
        })
        .await;
        match updated {
            Ok(updated) => {
                let object = updated.object;
                let (done, kept) = updated.value;
                let asleep = kept.or_else(|| object.as_ref().map(super::savings::asleep_of));
                Ok((done, object.map(|object| object.object_ref(&())), asleep))
            }
            Err(err) if forbidden(&err) && self.config.direction == Direction::Wake => {
                let (done, reference) = self.wake_through_scale::<K>(&api, name, &what).await?;
                Ok((done, reference, None))
            }
            Err(err) => Err(err),
        }
    }

    /// Wakes through the scale subresource alone: what a starter Role
    /// (`kdev-env-starter`: read workloads, patch their scale) may do. The
    /// same resourceVersion guards it; the sleep record stays until someone
    /// who may write the workload (the controller, a full `kdev wake`)
    /// finds it back at its size and removes it.
    async fn wake_through_scale<K: Scalable>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
    ) -> anyhow::Result<(Done, Option<ObjectReference>)> {
        let mut delays = crate::k8s::backoff::conflict_delays();
        loop {
            let object = api
                .get(name)
                .await
                .map_err(|err| self.kube.explain(err, format!("read {what}")))?;
            let w = workload::view(&object);
            let (_, done) = self.decide(&w)?;
            let reference = object.object_ref(&());
            let to = match done {
                Done::Woke { to, .. } => to,
                Done::Unchanged { .. } => return Ok((done, Some(reference))),
                _ => anyhow::bail!(
                    "failed to wake {what}: {}, which takes patching the workload itself, and this account may not",
                    Change {
                        namespace: self.namespace.to_owned(),
                        kind: Of::Workload(K::KIND),
                        name: name.to_owned(),
                        done,
                        dry_run: true,
                        also: Vec::new(),
                    }
                    .line()
                ),
            };
            if !K::KIND.has_replicas() {
                anyhow::bail!(
                    "failed to wake {what}: a {} has no scale subresource, and this account may not patch it",
                    K::kind(&())
                );
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": object.resource_version() },
                "spec": { "replicas": to },
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            match api.patch_scale(name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => return Ok((done, Some(reference))),
                Err(err) if crate::k8s::is_conflict(&err) => match delays.next() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => anyhow::bail!(
                        "failed to wake {what}: it kept changing; run the command again"
                    ),
                },
                Err(err) => return Err(self.kube.explain(err, format!("scale {what}"))),
            }
        }
    }

    /// The record of a sleep from `from` to `to`, made now by this actor.
    fn record(&self, from: i32, to: i32) -> SleepRecord {
        SleepRecord {
            replicas: from,
            to,
            at: self.now.to_string(),
            by: self.by.to_owned(),
        }
    }

    /// What kdev's envs should own on the workload after the write (size
    /// and record together), and what the write does.
    fn decide(&self, w: &Workload) -> anyhow::Result<(Option<Owned>, Done)> {
        // Unless a transition retargets it, a swap's restore count stays as
        // it is.
        let swap_restores = w.annotations.get(ORIGINAL_REPLICAS_ANNOTATION).cloned();
        let owned =
            |size: i32, record: Option<&SleepRecord>, swap_restores: Option<String>| Owned {
                size,
                record: record.map(|r| r.annotation().1),
                swap_restores,
            };
        match self.config.direction {
            Direction::Sleep => {
                let young = self
                    .config
                    .grace
                    .filter(|g| !g.is_zero())
                    .and_then(|grace| {
                        let age = self.now.duration_since(w.created?);
                        (age < jiff::SignedDuration::try_from(grace).ok()?).then(|| {
                            format!(
                                "the grace period for new workloads (created less than {}s ago)",
                                grace.as_secs()
                            )
                        })
                    });
                let exclusion = self
                    .excluded_ns
                    .map(|why| format!("{why} on namespace {}", self.namespace))
                    .or_else(|| envs::exclusion(&w.annotations, &w.labels, self.now))
                    .or(young);
                let to = match w.kind {
                    kind if !kind.has_replicas() => 0,
                    _ => envs::downtime_replicas(&w.annotations, self.ns_annotations)?,
                };
                if w.finished && w.size > 0 {
                    return Ok((None, unchanged("finished: nothing of it runs")));
                }
                if w.kind == Kind::DaemonSet
                    && let Some(why) = envs::daemonset_left_out(&w.annotations, self.ns_annotations)
                {
                    return Ok((None, unchanged(&why)));
                }
                let plan = envs::sleep_plan(w.size, to, &w.annotations, exclusion, swapped(w))?;
                Ok(match plan {
                    envs::Sleep::Scale { from, to } => (
                        Some(owned(to, Some(&self.record(from, to)), swap_restores)),
                        Done::Slept { from, to },
                    ),
                    envs::Sleep::AlreadyAsleep => (None, unchanged("already asleep")),
                    envs::Sleep::AlreadySmall { replicas } => (
                        None,
                        unchanged(&match w.kind {
                            kind if !kind.has_replicas() => {
                                format!("{} before the sleep; left as it is", kind.size_text(0))
                            }
                            _ => format!("at {replicas} replicas already; left as it is"),
                        }),
                    ),
                    envs::Sleep::Excluded { why } => {
                        (None, unchanged(&format!("excluded by {why}")))
                    }
                    envs::Sleep::UnderSwap { session, from, to } => (
                        Some(owned(
                            w.size,
                            Some(&self.record(from, to)),
                            Some(to.to_string()),
                        )),
                        Done::RetargetedSwap { session, from, to },
                    ),
                })
            }
            Direction::Wake => {
                let plan = envs::wake_plan(w.size, &w.annotations, swapped(w))?;
                Ok(match plan {
                    envs::Wake::Scale { to } => (
                        Some(owned(to, None, swap_restores)),
                        Done::Woke { from: w.size, to },
                    ),
                    envs::Wake::KeepChanged { current, original } => (
                        Some(owned(w.size, None, swap_restores)),
                        Done::KeptChanged { current, original },
                    ),
                    envs::Wake::Cleanup => (
                        Some(owned(w.size, None, swap_restores)),
                        unchanged("awake already; its sleep record is removed"),
                    ),
                    envs::Wake::NotAsleep => (None, unchanged("not asleep")),
                    envs::Wake::UnderSwap { session, to } => {
                        let from = w.swap_original.unwrap_or(0);
                        (
                            Some(owned(w.size, None, Some(to.to_string()))),
                            Done::RetargetedSwap { session, from, to },
                        )
                    }
                })
            }
        }
    }
}

/// What kdev's environments set on a workload in one guarded merge patch
/// under kdev's field manager: its size, its sleep record (set by a sleep,
/// removed by every other write, whoever wrote it), and a swap's restore
/// count when a swap holds it. A field a write changes becomes kdev's in
/// `managedFields` (for GitOps tools' ignore rules), taken from whoever
/// owned it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    size: i32,
    /// The `kdev.dev/sleep` annotation's value; `None` removes the record.
    record: Option<String>,
    /// `kdev.dev/original-replicas`, when a swap holds the workload.
    swap_restores: Option<String>,
}

impl Owned {
    /// The merge patch that makes `current` so.
    fn patch<K: Scalable>(&self, current: &K) -> serde_json::Value {
        let mut patch = current.size_patch(self.size);
        // A size that is an annotation (a ScaledObject's pause) joins these.
        let mut annotations = patch["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        annotations.insert(
            envs::SLEEP_ANNOTATION.into(),
            self.record
                .clone()
                .map_or(serde_json::Value::Null, Into::into),
        );
        if let Some(count) = &self.swap_restores {
            annotations.insert(ORIGINAL_REPLICAS_ANNOTATION.into(), count.clone().into());
        }
        patch["metadata"]["annotations"] = annotations.into();
        patch
    }
}

/// The swap session holding a workload, as the contract reads it.
fn swapped(w: &Workload) -> Option<envs::Swapped<'_>> {
    Some(envs::Swapped {
        session: w.swap_session.as_deref()?,
        original: w.swap_original?,
    })
}

/// Whether the API server refused the write (403).
fn forbidden(err: &anyhow::Error) -> bool {
    crate::k8s::refused_with(err) == Some(403)
}

fn unchanged(why: &str) -> Done {
    Done::Unchanged {
        why: why.to_owned(),
    }
}

/// An Event on the workload for each change (what `kdev envs --history`
/// and `kubectl events` show).
async fn publish(recorder: &Recorder, reference: &ObjectReference, done: &Done, by: &str) {
    let (reason, action, note) = match done {
        Done::Slept { from, to } => ("Slept", "Sleep", format!("{from} → {to} by {by}")),
        Done::Woke { from, to } => ("Woke", "Wake", format!("{from} → {to} by {by}")),
        Done::RetargetedSwap { session, from, to } => (
            if to > from { "Woke" } else { "Slept" },
            if to > from { "Wake" } else { "Sleep" },
            format!(
                "held by swap session {session}: its restore now puts back {to} (was {from}), by {by}"
            ),
        ),
        Done::KeptChanged { current, original } => (
            "ChangedWhileAsleep",
            "Wake",
            format!(
                "set to {current} while asleep (was {original} before the sleep); kept, woken by {by}"
            ),
        ),
        Done::Unchanged { .. } | Done::Failed { .. } => return,
    };
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %err, "failed to record the change as an Event");
    }
}

/// The plain sleeps and wakes of one environment, said in one Event on its
/// namespace (`kdev envs --history`, `kubectl events -n`).
#[derive(Default)]
struct Summary {
    slept: Vec<String>,
    woke: Vec<String>,
}

impl Summary {
    /// Whether any workload slept or woke.
    fn changed(&self) -> bool {
        !self.slept.is_empty() || !self.woke.is_empty()
    }

    /// A line of its own (a patched resource's fields).
    fn push_line(&mut self, line: String, done: &Done) {
        match done {
            Done::Slept { .. } => self.slept.push(line),
            Done::Woke { .. } => self.woke.push(line),
            _ => {}
        }
    }

    fn push(&mut self, target: String, done: &Done) {
        match done {
            Done::Slept { from, to } => self.slept.push(format!("{target} {from} → {to}")),
            Done::Woke { from, to } => self.woke.push(format!("{target} {from} → {to}")),
            _ => {}
        }
    }

    async fn publish(self, recorder: &Recorder, namespace: &str, by: &str) {
        // An Event's note holds 1 kB: the first workloads, then a count.
        fn note(changes: &[String], by: &str) -> String {
            let mut listed = String::new();
            let mut shown = 0;
            for change in changes {
                if listed.len() + change.len() > 700 {
                    break;
                }
                if shown > 0 {
                    listed.push_str(", ");
                }
                listed.push_str(change);
                shown += 1;
            }
            if shown < changes.len() {
                listed.push_str(&format!(" and {} more", changes.len() - shown));
            }
            let plural = if changes.len() == 1 { "" } else { "s" };
            let mut note = format!("{} workload{plural}: {listed}; by {by}", changes.len());
            if note.len() > 1000 {
                let mut end = 997;
                while !note.is_char_boundary(end) {
                    end -= 1;
                }
                note.truncate(end);
                note.push_str("...");
            }
            note
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(namespace.to_owned()),
            // In the environment's own namespace, where `kubectl events -n`
            // and `kdev envs --history` look.
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        };
        for (changes, reason, action) in [
            (&self.slept, "Slept", "Sleep"),
            (&self.woke, "Woke", "Wake"),
        ] {
            if changes.is_empty() {
                continue;
            }
            let event = Event {
                type_: EventType::Normal,
                reason: reason.into(),
                note: Some(note(changes, by)),
                action: action.into(),
                secondary: None,
            };
            if let Err(err) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %err, "failed to record the change as an Event");
            }
        }
    }
}

/// One write of an environment's turn: a workload, or a resource slept by
/// patch.
enum Write {
    Workload(Target),
    Patched(super::patched::Item),
}

/// What one [`Write`] did.
enum Written {
    Workload(Box<(Change, Option<ObjectReference>, Option<Amount>)>),
    Patched(super::patched::Moved),
}

/// A workload as listed, decided on without reading it again.
/// A workload to change, with its listed state (none: read it).
type Target = (Ref, Option<Known>);

enum Known {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    CronJob(Box<CronJob>),
    Job(Box<Job>),
    Rollout(Box<Rollout>),
    ScaledObject(Box<ScaledObject>),
    DaemonSet(Box<DaemonSet>),
}

/// Adds each listed object of a kind as a target decided on as listed;
/// with `except_own_schedules`, not those that have a schedule of their own
/// (what they have asleep is added to `untouched`).
fn known<K: Scalable>(
    targets: &mut Vec<Target>,
    untouched: &mut Amount,
    objects: Vec<K>,
    except_own_schedules: bool,
    wrap: fn(Box<K>) -> Known,
) {
    for object in objects {
        if except_own_schedules && envs::has_own_schedule(object.annotations()) {
            *untouched = untouched.plus(super::savings::asleep_of(&object));
            continue;
        }
        let reference = Ref {
            kind: K::KIND,
            name: object.name_any(),
        };
        targets.push((reference, Some(wrap(Box::new(object)))));
    }
}

/// The workloads KEDA scales, by the ScaledObject that scales them: those
/// a sleep leaves alone, as it pauses their ScaledObject instead (which
/// scales them to 0; scaled by kdev too, KEDA would scale them straight
/// back up). A ScaledObject someone else paused is not one of them: its
/// target sleeps as any workload does.
fn keda_targets(scaled_objects: &[ScaledObject]) -> BTreeMap<Ref, String> {
    scaled_objects
        .iter()
        .filter(|o| o.size() > 0 || o.annotations().contains_key(envs::SLEEP_ANNOTATION))
        .filter_map(|o| Some((o.target()?, o.name_any())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled_object(name: &str, target: &str, annotations: serde_json::Value) -> ScaledObject {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "annotations": annotations },
            "spec": { "scaleTargetRef": { "name": target } }
        }))
        .expect("a ScaledObject")
    }

    #[test]
    fn a_scaledobjects_sleep_is_its_pause_beside_the_record_and_its_wake_removes_both() {
        let running = scaled_object("worker", "web", serde_json::json!({}));
        let asleep = Owned {
            size: 0,
            record: Some("{\"replicas\":1}".into()),
            swap_restores: None,
        }
        .patch(&running);
        let annotations = &asleep["metadata"]["annotations"];
        assert_eq!(annotations[workload::KEDA_PAUSED_REPLICAS], "0");
        assert_eq!(annotations[envs::SLEEP_ANNOTATION], "{\"replicas\":1}");
        assert!(asleep.get("spec").is_none());
        let wake = Owned {
            size: 1,
            record: None,
            swap_restores: None,
        };
        let paused = scaled_object(
            "worker",
            "web",
            serde_json::json!({ workload::KEDA_PAUSED_REPLICAS: "0", envs::SLEEP_ANNOTATION: "{}" }),
        );
        assert_eq!(
            wake.patch(&paused),
            serde_json::json!({ "metadata": { "annotations": {
                workload::KEDA_PAUSED_REPLICAS: null,
                envs::SLEEP_ANNOTATION: null,
            } } })
        );
        // A pause someone changed while asleep is theirs: only the record goes.
        let repaused = scaled_object(
            "worker",
            "web",
            serde_json::json!({ workload::KEDA_PAUSED_REPLICAS: "2", envs::SLEEP_ANNOTATION: "{}" }),
        );
        assert_eq!(
            wake.patch(&repaused),
            serde_json::json!({ "metadata": { "annotations": { envs::SLEEP_ANNOTATION: null } } })
        );
    }

    #[test]
    fn a_daemonsets_wake_removes_kdevs_node_selector_and_keeps_its_own() {
        let asleep: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "agent" },
            "spec": { "selector": {}, "template": { "spec": { "containers": [],
                "nodeSelector": { envs::ASLEEP_NODE_SELECTOR: "true", "disk": "ssd" } } } }
        }))
        .expect("a DaemonSet");
        let woke = Owned {
            size: 1,
            record: None,
            swap_restores: Some("2".into()),
        }
        .patch(&asleep);
        assert_eq!(
            woke,
            serde_json::json!({
                "spec": { "template": { "spec": { "nodeSelector": { envs::ASLEEP_NODE_SELECTOR: null } } } },
                "metadata": { "annotations": {
                    envs::SLEEP_ANNOTATION: null,
                    ORIGINAL_REPLICAS_ANNOTATION: "2",
                } }
            })
        );
    }

    #[test]
    fn keda_keeps_the_targets_of_the_scaledobjects_it_scales_or_kdev_paused() {
        let record = serde_json::json!({ envs::SLEEP_ANNOTATION: "{}", workload::KEDA_PAUSED_REPLICAS: "0" });
        let list = [
            scaled_object("a", "web", serde_json::json!({})),
            scaled_object("b", "api", record),
            scaled_object(
                "c",
                "batch",
                serde_json::json!({ workload::KEDA_PAUSED: "true" }),
            ),
        ];
        let targets = keda_targets(&list);
        let deployment = |name: &str| Ref {
            kind: Kind::Deployment,
            name: name.into(),
        };
        assert_eq!(
            targets.get(&deployment("web")).map(String::as_str),
            Some("a")
        );
        assert_eq!(
            targets.get(&deployment("api")).map(String::as_str),
            Some("b")
        );
        assert!(
            !targets.contains_key(&deployment("batch")),
            "paused by someone else"
        );
    }
}
