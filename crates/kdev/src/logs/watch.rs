//! The pods a query selects, followed with a watch: a stream per selected
//! container starts when it appears and learns when it restarts or its pod
//! goes away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch as channel;
use tokio::task::JoinSet;

use super::file::FileTail;
use super::select::{self, Filter, Kind, Query, Target};
use super::stream::{Shared, Status, Stream};
use super::{Namespaces, Options};
use crate::k8s::objects::{labels_query, selector_query};
use crate::k8s::{Kube, is_not_found};

/// One list/watch of pods: a namespace (None: all) and server-side selectors.
#[derive(Clone, Debug)]
pub struct Scope {
    pub namespace: Option<String>,
    pub labels: Option<String>,
    pub fields: Option<String>,
}

/// Turns the query into the pod lists to watch. A `kind/name` query becomes
/// its object's label selector (a pod/NAME a field selector), looked up in
/// each namespace; the object must exist in at least one.
pub async fn scopes(
    kube: &Kube,
    namespaces: &Namespaces,
    options: &mut Options,
) -> anyhow::Result<Vec<Scope>> {
    let list: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::Some(list) => list.iter().cloned().map(Some).collect(),
    };
    let (kind, name) = match &options.query {
        Query::All => return Ok(plain(&list, options)),
        Query::PodName(regex) => {
            options.filter.pod = Some(regex.clone());
            return Ok(plain(&list, options));
        }
        Query::Object { kind, name } => (*kind, name.clone()),
    };
    let mut scopes = Vec::new();
    let mut missing = Vec::new();
    for namespace in list.into_iter().flatten() {
        let selected = object_selector(&kube.client, kind, &name, &namespace)
            .await
            .map_err(|err| kube.explain(err, format!("get {kind} {namespace}/{name}")));
        let (labels, fields) = match selected {
            Ok(Some(selector)) => selector,
            Ok(None) => {
                missing.push(namespace);
                continue;
            }
            Err(err) => return Err(err),
        };
        if labels.as_deref() == Some("") {
            anyhow::bail!(
                "{kind} {namespace}/{name} has no pod selector: name its pods with a regex or -l instead"
            );
        }
        scopes.push(Scope {
            namespace: Some(namespace),
            labels: join(labels, options.labels.clone()),
            fields: join(fields, options.fields.clone()),
        });
    }
    if scopes.is_empty() {
        anyhow::bail!(
            "{kind} {name:?} not found in namespace {}: check the name, or pick the namespace with -n",
            missing.join(", ")
        );
    }
    Ok(scopes)
}

fn plain(list: &[Option<String>], options: &Options) -> Vec<Scope> {
    list.iter()
        .map(|namespace| Scope {
            namespace: namespace.clone(),
            labels: options.labels.clone(),
            fields: options.fields.clone(),
        })
        .collect()
}

fn join(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a},{b}")),
        (a, b) => a.or(b),
    }
}

/// The (labels, fields) selecting the object's pods; None when the object
/// does not exist; labels of "" when it selects no pods.
async fn object_selector(
    client: &Client,
    kind: Kind,
    name: &str,
    namespace: &str,
) -> Result<Option<(Option<String>, Option<String>)>, kube::Error> {
    async fn get<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match Api::<K>::namespaced(client.clone(), namespace)
            .get(name)
            .await
        {
            Ok(object) => Ok(Some(object)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }
    let labels = |selector: Option<String>| Some((Some(selector.unwrap_or_default()), None));
    Ok(match kind {
        Kind::Deployment => get::<Deployment>(client, namespace, name)
            .await?
            .and_then(|d| labels(d.spec.and_then(|s| selector_query(&s.selector)))),
        Kind::StatefulSet => get::<StatefulSet>(client, namespace, name)
            .await?
            .and_then(|d| labels(d.spec.and_then(|s| selector_query(&s.selector)))),
        Kind::DaemonSet => get::<DaemonSet>(client, namespace, name)
            .await?
            .and_then(|d| labels(d.spec.and_then(|s| selector_query(&s.selector)))),
        Kind::ReplicaSet => get::<ReplicaSet>(client, namespace, name)
            .await?
            .and_then(|d| labels(d.spec.and_then(|s| selector_query(&s.selector)))),
        Kind::Job => get::<Job>(client, namespace, name).await?.and_then(|j| {
            labels(
                j.spec
                    .and_then(|s| s.selector)
                    .and_then(|s| selector_query(&s)),
            )
        }),
        Kind::Service => get::<Service>(client, namespace, name)
            .await?
            .and_then(|s| {
                labels(
                    s.spec
                        .and_then(|s| s.selector)
                        .and_then(|s| labels_query(&s)),
                )
            }),
        Kind::Pod => get::<Pod>(client, namespace, name)
            .await?
            .map(|_| (None, Some(format!("metadata.name={name}")))),
    })
}

/// "pods matching QUERY in namespace a, b", for messages.
pub fn describe(scopes: &[Scope], query: Option<&str>) -> String {
    let what = match query {
        Some(query) => format!("pods matching {query:?}"),
        None => "pods".to_owned(),
    };
    let namespaces: Vec<&str> = scopes
        .iter()
        .filter_map(|s| s.namespace.as_deref())
        .collect();
    if namespaces.is_empty() {
        format!("{what} in any namespace")
    } else {
        format!("{what} in namespace {}", namespaces.join(", "))
    }
}

/// Starts a stream for every selected container and keeps each informed.
pub struct Supervisor {
    pub kube: Kube,
    pub filter: Filter,
    pub files: Arc<Vec<String>>,
    pub file_lines: Option<u64>,
    pub shared: Arc<Shared>,
}

/// A followed container: its streams hold receivers of `status`.
struct Followed {
    status: channel::Sender<Status>,
}

impl Supervisor {
    pub async fn run(self, scopes: Vec<Scope>, describe: String) -> anyhow::Result<()> {
        if self.shared.follow {
            self.follow(scopes, describe).await
        } else {
            self.once(scopes, describe).await
        }
    }

    /// `--no-follow`: one list, each stream read to its end.
    async fn once(self, scopes: Vec<Scope>, describe: String) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        let mut followed = HashMap::new();
        let mut pods_found = 0;
        for scope in &scopes {
            let mut params = ListParams::default();
            if let Some(labels) = &scope.labels {
                params = params.labels(labels);
            }
            if let Some(fields) = &scope.fields {
                params = params.fields(fields);
            }
            let pods = self
                .pods(scope.namespace.as_deref())
                .list(&params)
                .await
                .map_err(|err| self.kube.explain(err, format!("list {describe}")))?;
            for pod in &pods.items {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                if self.filter.pod.as_ref().is_none_or(|re| re.is_match(name)) {
                    pods_found += 1;
                }
                self.apply(pod, &mut followed, &mut tasks, false);
            }
        }
        if pods_found == 0 {
            anyhow::bail!("no {describe}: check the query, -l and -n");
        }
        if followed.is_empty() {
            anyhow::bail!(
                "{pods_found} {describe}, but none of their containers is selected: see -c, -E and --container-state (now {})",
                self.filter.states
            );
        }
        // Every stream of a --no-follow run is known now, so whether some
        // will queue does not depend on how fast the first ones end.
        if tasks.len() > self.shared.max_requests {
            self.shared.say_queued();
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn follow(self, scopes: Vec<Scope>, describe: String) -> anyhow::Result<()> {
        let mut watches =
            futures::stream::select_all(scopes.iter().enumerate().map(|(i, scope)| {
                let mut config = watcher::Config::default();
                if let Some(labels) = &scope.labels {
                    config = config.labels(labels);
                }
                if let Some(fields) = &scope.fields {
                    config = config.fields(fields);
                }
                // Without a back-off a failing watch relists in a tight loop
                // while the API server is down.
                watcher::watcher(self.pods(scope.namespace.as_deref()), config)
                    .backoff(crate::k8s::backoff::watcher())
                    .map(move |event| (i, event))
                    .boxed()
            }));
        let mut tasks = JoinSet::new();
        let mut followed: HashMap<Target, Followed> = HashMap::new();
        // Pods seen in each scope's current (re)list, to find those deleted
        // while the watch was down.
        let mut listing: HashMap<usize, HashSet<String>> = HashMap::new();
        let mut listed = HashSet::new();
        let mut said_waiting = false;
        let mut last_error = String::new();
        while let Some((scope, event)) = watches.next().await {
            match event {
                Ok(Event::Init) => {
                    listing.insert(scope, HashSet::new());
                }
                Ok(Event::InitApply(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        listing.entry(scope).or_default().insert(uid.clone());
                    }
                    self.apply(
                        &pod,
                        &mut followed,
                        &mut tasks,
                        listed.len() == scopes.len(),
                    );
                }
                Ok(Event::InitDone) => {
                    let seen = listing.remove(&scope).unwrap_or_default();
                    let namespace = scopes[scope].namespace.as_deref();
                    let gone: Vec<Target> = followed
                        .keys()
                        .filter(|t| {
                            namespace.is_none_or(|ns| ns == t.namespace) && !seen.contains(&t.uid)
                        })
                        .cloned()
                        .collect();
                    for target in gone {
                        self.forget(&target, &mut followed);
                    }
                    listed.insert(scope);
                    if listed.len() == scopes.len() && followed.is_empty() && !said_waiting {
                        eprintln!("kdev: no {describe} yet; waiting for them (Ctrl-C to stop)");
                        said_waiting = true;
                    }
                    last_error.clear();
                }
                Ok(Event::Apply(pod)) => {
                    self.apply(&pod, &mut followed, &mut tasks, true);
                }
                Ok(Event::Delete(pod)) => {
                    let uid = pod.metadata.uid.unwrap_or_default();
                    let gone: Vec<Target> =
                        followed.keys().filter(|t| t.uid == uid).cloned().collect();
                    for target in gone {
                        self.forget(&target, &mut followed);
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    if message != last_error {
                        eprintln!("kdev: watching {describe} failed: {message}; retrying");
                        last_error = message;
                    }
                }
            }
            // Reap finished streams so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        Ok(())
    }

    fn pods(&self, namespace: Option<&str>) -> Api<Pod> {
        match namespace {
            Some(namespace) => Api::namespaced(self.kube.client.clone(), namespace),
            None => Api::all(self.kube.client.clone()),
        }
    }

    /// Starts streams for newly selected containers and tells running ones
    /// what changed. `announce`: say so on stderr (not for the first list).
    fn apply(
        &self,
        pod: &Pod,
        followed: &mut HashMap<Target, Followed>,
        tasks: &mut JoinSet<()>,
        announce: bool,
    ) {
        let selected = select::select(pod, &self.filter);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let still: HashSet<&Target> = selected.iter().map(|(t, _)| t).collect();
        for (target, f) in followed.iter() {
            if target.uid == uid && !still.contains(target) {
                f.status.send_if_modified(|s| match s {
                    Status::Present { wanted, .. } if *wanted => {
                        *wanted = false;
                        true
                    }
                    _ => false,
                });
            }
        }
        for (target, instance) in selected {
            let status = Status::Present {
                instance,
                wanted: true,
            };
            if let Some(f) = followed.get(&target)
                && f.status.receiver_count() > 0
            {
                f.status.send_if_modified(|s| {
                    let changed = *s != status;
                    *s = status.clone();
                    changed
                });
                continue;
            }
            if announce {
                eprintln!(
                    "kdev: + {}/{} {}",
                    target.namespace, target.pod, target.container
                );
            }
            let (tx, rx) = channel::channel(status);
            let api: Api<Pod> = Api::namespaced(self.kube.client.clone(), &target.namespace);
            if !self.files.is_empty() {
                let tail = FileTail::new(
                    target.clone(),
                    api.clone(),
                    tx.subscribe(),
                    self.shared.clone(),
                    self.files.clone(),
                    self.file_lines,
                );
                tasks.spawn(tail.run());
            }
            tasks.spawn(Stream::new(target.clone(), api, rx, self.shared.clone()).run());
            followed.insert(target, Followed { status: tx });
        }
    }

    fn forget(&self, target: &Target, followed: &mut HashMap<Target, Followed>) {
        if let Some(f) = followed.remove(target) {
            eprintln!(
                "kdev: - {}/{} {}",
                target.namespace, target.pod, target.container
            );
            let _ = f.status.send(Status::Gone);
        }
    }
}
