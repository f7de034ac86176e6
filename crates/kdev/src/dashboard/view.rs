//! What the dashboard shows, kept in memory by watches: namespaces, the
//! three kinds of workloads, the activity Leases and kdev's Events. A page
//! is rendered from these stores without a request to the API server; a
//! change to any of them wakes the live updates.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

use crate::envs::workload::{Rollout, ScaledObject};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::envs::workload::{self, Scalable, Workload};
use crate::envs::{self, Env};
use crate::k8s::{self, Kube};
use kdev_contract::envs as contract;

/// The namespace label the dashboard's owner filter reads.
pub const OWNER_LABEL: &str = "kdev.dev/owner";

/// The reporting controllers whose Events say who slept or woke an
/// environment: `kdev sleep`/`wake` and the dashboard ("kdev"), and the
/// scheduler ("kdev-controller").
const REPORTERS: [&str; 2] = ["kdev", "kdev-controller"];

/// The stores, and a counter bumped on every change to any of them.
#[derive(Clone)]
pub struct View {
    namespaces: Store<Namespace>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
    rollouts: Store<Rollout>,
    scaled_objects: Store<ScaledObject>,
    daemonsets: Store<k8s_openapi::api::apps::v1::DaemonSet>,
    leases: Store<Lease>,
    events: Vec<Store<Event>>,
    /// Which namespaces are environments.
    scope: std::sync::Arc<envs::Scope>,
    pub changed: watch::Receiver<u64>,
}

/// One environment as the dashboard shows it.
#[derive(Clone, Debug)]
pub struct Row {
    pub env: Env,
    pub owner: Option<String>,
    /// The latest sleep or wake said in an Event: when, what, by whom.
    pub last: Option<Last>,
    /// Kept awake until then (`kdev.dev/keep-awake-until`).
    pub keep_awake: Option<String>,
    /// To be deleted then, for a long idle (`kdev.dev/delete-at`).
    pub delete_at: Option<String>,
    /// Why the environment may not be acted on, if it may not.
    pub excluded: Option<String>,
    /// What the page showed, for telling a stale action from a fresh one.
    pub seen: String,
    /// When the row was judged: what its times' ages count from.
    pub now: jiff::Timestamp,
    /// What sleeping saved, from the ledger on its activity Lease.
    pub saved: Option<envs::savings::Saved>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Last {
    pub at: String,
    pub reason: String,
    pub note: String,
}

/// Starts the watches; the stores fill as they list. The futures run until
/// the process ends (each watch retries with back-off on errors). Only
/// environments' namespaces are watched (the API server filters them by
/// the scope's selector); workloads everywhere, as only what a row shows.
pub fn start(
    kube: &Kube,
    scope: &envs::Scope,
) -> (View, Vec<futures::future::BoxFuture<'static, ()>>) {
    let (tx, changed) = watch::channel(0u64);
    let mut tasks = Vec::new();
    let client = &kube.client;
    let mut environments = watcher::Config::default();
    if !scope.selector.is_everything() {
        environments = environments.labels(&scope.selector.to_string());
    }
    let namespaces = watched(
        Api::<Namespace>::all(client.clone()),
        environments,
        |ns: &mut Namespace| {
            ns.spec = None;
            ns.status = None;
            strip_meta(ns);
        },
        &tx,
        &mut tasks,
    );
    let deployments = workloads::<Deployment>(client, &tx, &mut tasks);
    let statefulsets = workloads::<StatefulSet>(client, &tx, &mut tasks);
    let cronjobs = workloads::<CronJob>(client, &tx, &mut tasks);
    let jobs = workloads::<Job>(client, &tx, &mut tasks);
    let rollouts = workloads::<Rollout>(client, &tx, &mut tasks);
    let scaled_objects = workloads::<ScaledObject>(client, &tx, &mut tasks);
    let daemonsets = workloads::<k8s_openapi::api::apps::v1::DaemonSet>(client, &tx, &mut tasks);
    let leases = watched(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "{}={}",
            kdev_contract::session::ROLE_LABEL,
            k8s::activity::ROLE_ACTIVITY
        )),
        strip_meta,
        &tx,
        &mut tasks,
    );
    let events = REPORTERS
        .iter()
        .map(|reporter| {
            watched(
                Api::<Event>::all(client.clone()),
                watcher::Config::default().fields(&format!("reportingComponent={reporter}")),
                strip_meta,
                &tx,
                &mut tasks,
            )
        })
        .collect();
    let view = View {
        namespaces,
        deployments,
        statefulsets,
        cronjobs,
        jobs,
        rollouts,
        scaled_objects,
        daemonsets,
        leases,
        events,
        scope: std::sync::Arc::new(scope.clone()),
        changed,
    };
    (view, tasks)
}

/// What is never shown is not kept: a thousand objects' field managers are
/// most of their bytes.
fn strip_meta<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    object
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// A store kept by a watch of `api`, each object cut down by `keep` before
/// it is stored; every change bumps `tx`.
fn watched<K>(
    api: Api<K>,
    config: watcher::Config,
    keep: fn(&mut K),
    tx: &watch::Sender<u64>,
    tasks: &mut Vec<futures::future::BoxFuture<'static, ()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    watched_if(false, api, config, keep, tx, tasks)
}

/// The store of every workload of kind `K`, kept to what a row shows
/// (none where the cluster does not serve it, a CRD's, or where the
/// controller's account may not list it: RBAC from before the kind).
fn workloads<K>(
    client: &kube::Client,
    tx: &watch::Sender<u64>,
    tasks: &mut Vec<futures::future::BoxFuture<'static, ()>>,
) -> Store<K>
where
    K: Scalable + Send + Sync + 'static,
{
    watched_if(
        true,
        Api::<K>::all(client.clone()),
        watcher::Config::default(),
        Scalable::keep_viewed,
        tx,
        tasks,
    )
}

/// [`watched`], for a kind the dashboard can show without when
/// `optional`: where the cluster does not serve it (a CRD's) or the
/// controller's account may not list it (deploy/dashboard's RBAC from
/// before the kind) when the dashboard starts, the store is empty and
/// ready, and the log says which and why. Without that a refused watch
/// retries forever and the dashboard is never ready.
fn watched_if<K>(
    optional: bool,
    api: Api<K>,
    config: watcher::Config,
    keep: fn(&mut K),
    tx: &watch::Sender<u64>,
    tasks: &mut Vec<futures::future::BoxFuture<'static, ()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, mut writer) = reflector::store();
    let tx = tx.clone();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    tasks.push(Box::pin(async move {
        if optional {
            let none = match k8s::served(&api).await {
                Ok(false) => {
                    tracing::info!(%kind, "not served in this cluster: the dashboard shows none");
                    true
                }
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    tracing::warn!(
                        %kind,
                        "the controller's account may not list {kind}s (403): the dashboard shows none; apply deploy/dashboard/rbac.yaml of this version and restart the controller"
                    );
                    true
                }
                _ => false,
            };
            if none {
                writer.apply_watcher_event(&watcher::Event::Init);
                writer.apply_watcher_event(&watcher::Event::InitDone);
                tx.send_modify(|n| *n += 1);
                return;
            }
        }
        let stream = watcher(api, config)
            .default_backoff()
            .modify(keep)
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    tx.send_modify(|n| *n += 1);
                }
                Err(err) => {
                    tracing::warn!(%kind, error = %err, "dashboard watch failed; retrying");
                }
            }
        }
    }));
    reader
}

impl View {
    /// Whether every store holds its first full list.
    pub async fn ready(&self) {
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.deployments.wait_until_ready().await;
        let _ = self.statefulsets.wait_until_ready().await;
        let _ = self.cronjobs.wait_until_ready().await;
        let _ = self.jobs.wait_until_ready().await;
        let _ = self.rollouts.wait_until_ready().await;
        let _ = self.scaled_objects.wait_until_ready().await;
        let _ = self.daemonsets.wait_until_ready().await;
        let _ = self.leases.wait_until_ready().await;
        for events in &self.events {
            let _ = events.wait_until_ready().await;
        }
    }

    /// The annotations of namespace `name`, as last seen.
    pub fn namespace_annotations(&self, name: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&reflector::ObjectRef::new(name))
            .map(|ns| ns.annotations().clone())
            .unwrap_or_default()
    }

    /// Every environment (a namespace of the scope with workloads), sorted
    /// by name; `keep` judges each by its name and labels.
    pub fn rows(
        &self,
        now: jiff::Timestamp,
        keep: impl Fn(&str, &BTreeMap<String, String>) -> bool,
    ) -> Vec<Row> {
        let mut workloads: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
        let mut add = |w: Workload| workloads.entry(w.namespace.clone()).or_default().push(w);
        for d in self.deployments.state() {
            add(workload::view(d.as_ref()));
        }
        for s in self.statefulsets.state() {
            add(workload::view(s.as_ref()));
        }
        for c in self.cronjobs.state() {
            add(workload::view(c.as_ref()));
        }
        for j in self.jobs.state() {
            add(workload::view(j.as_ref()));
        }
        for r in self.rollouts.state() {
            add(workload::view(r.as_ref()));
        }
        for o in self.scaled_objects.state() {
            add(workload::view(o.as_ref()));
        }
        for d in self.daemonsets.state() {
            add(workload::view(d.as_ref()));
        }
        let leases: BTreeMap<String, std::sync::Arc<Lease>> = self
            .leases
            .state()
            .into_iter()
            .filter(|l| l.name_any() == contract::ACTIVITY_LEASE)
            .filter_map(|l| Some((l.namespace()?, l)))
            .collect();
        let mut last: BTreeMap<String, Last> = BTreeMap::new();
        for store in &self.events {
            for event in store.state() {
                let reason = event.reason.clone().unwrap_or_default();
                if !envs::HISTORY_REASONS.contains(&reason.as_str()) {
                    continue;
                }
                let Some(ns) = event.namespace() else {
                    continue;
                };
                let at = event_time(&event);
                if last.get(&ns).is_some_and(|l| l.at >= at) {
                    continue;
                }
                last.insert(
                    ns,
                    Last {
                        at,
                        reason,
                        note: event.message.clone().unwrap_or_default(),
                    },
                );
            }
        }
        let mut rows: Vec<Row> = self
            .namespaces
            .state()
            .into_iter()
            .filter_map(|ns| {
                let name = ns.name_any();
                if !self.scope.admits(&name, ns.labels()) || !keep(&name, ns.labels()) {
                    return None;
                }
                let mut listed = workloads.remove(&name)?;
                listed.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
                let annotations = ns.annotations();
                let mut env = envs::judge(&name, annotations, &listed, now);
                env.last_activity = leases
                    .get(&name)
                    .and_then(|l| k8s::activity::last(l))
                    .map(|(at, who)| format!("{at} ({who})"));
                let saved = leases
                    .get(&name)
                    .and_then(|lease| envs::savings::saved(&name, lease.annotations(), now).ok());
                Some(Row {
                    saved,
                    ..row(
                        env,
                        annotations,
                        ns.labels().get(OWNER_LABEL).cloned(),
                        last.remove(&name),
                        now,
                    )
                })
            })
            .collect();
        rows.sort_by(|a, b| a.env.namespace.cmp(&b.env.namespace));
        rows
    }
}

/// When an Event last happened.
fn event_time(event: &Event) -> String {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0.to_string())
        .or_else(|| event.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0.to_string()))
        .unwrap_or_default()
}

/// One row from an environment's judgement and its namespace.
pub fn row(
    env: Env,
    annotations: &BTreeMap<String, String>,
    owner: Option<String>,
    last: Option<Last>,
    now: jiff::Timestamp,
) -> Row {
    let keep_awake = annotations.get(contract::KEEP_AWAKE_ANNOTATION).cloned();
    let excluded = contract::exclusion(annotations, &BTreeMap::new(), now)
        .map(|why| format!("namespace {}: {why}", env.namespace))
        .or_else(|| {
            let all_excluded =
                !env.workloads.is_empty() && env.workloads.iter().all(|w| w.excluded.is_some());
            all_excluded.then(|| {
                format!(
                    "every workload of {} is excluded ({})",
                    env.namespace,
                    env.workloads[0].excluded.clone().unwrap_or_default()
                )
            })
        });
    let seen = fingerprint(&env, keep_awake.as_deref());
    Row {
        env,
        owner,
        last,
        keep_awake,
        delete_at: annotations
            .get(kdev_contract::envs::deletion::DELETE_AT_ANNOTATION)
            .cloned(),
        excluded,
        seen,
        now,
        saved: None,
    }
}

/// What an action's form carries back: the sizes and sleep records the page
/// showed and the keep-awake time. Readiness is left out: pods turning
/// Ready do not make a wake stale.
pub fn fingerprint(env: &Env, keep_awake: Option<&str>) -> String {
    let mut text = String::new();
    for w in &env.workloads {
        text.push_str(&format!(
            "{}/{}={}:{:?};",
            w.kind.short(),
            w.name,
            w.size,
            w.original
        ));
    }
    text.push_str(keep_awake.unwrap_or("-"));
    format!("{:016x}", kdev_contract::hash::fnv1a(text.as_bytes()))
}
