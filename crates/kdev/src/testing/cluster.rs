//! The cluster as tests see it: any kind by apiVersion and kind (discovery,
//! cached; a CRD a step installs is found on the next miss), writes as
//! kuttl and chainsaw do them, and one watch mechanism for every wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::{StreamExt as _, stream};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    ValidationDirective,
};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::Value;

use crate::k8s::{self, Kube};

/// A kind as the API serves it.
#[derive(Clone, Debug)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Resolves kinds, caching what it found.
pub struct Cluster {
    pub kube: Kube,
    kinds: Mutex<HashMap<(String, String), Kind>>,
}

/// Why an operation on the cluster failed, in words for the report.
pub type Failed = String;

impl Cluster {
    pub fn new(kube: Kube) -> Cluster {
        Cluster {
            kube,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// The kind `api_version`/`kind`, from the cache or discovery.
    pub async fn kind(&self, api_version: &str, kind: &str) -> Result<Kind, Failed> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps): (ApiResource, ApiCapabilities) =
            match kube::discovery::pinned_kind(&self.kube.client, &gvk).await {
                Ok(found) => found,
                Err(e) => self.served_soon(&gvk).await.ok_or_else(|| {
                    format!(
                        "the cluster serves no kind {kind} in {api_version} ({e}); is its CRD installed?"
                    )
                })?,
            };
        let found = Kind {
            resource,
            namespaced: caps.scope == Scope::Namespaced,
        };
        self.lock().insert(key, found.clone());
        Ok(found)
    }

    /// A kind a CRD defines that the API does not serve yet (a step applied
    /// the CRD a moment ago): the CRD watched until Established, then
    /// discovery asked again on the shared back-off while it catches up.
    async fn served_soon(&self, gvk: &GroupVersionKind) -> Option<(ApiResource, ApiCapabilities)> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: Api<CustomResourceDefinition> = Api::all(self.kube.client.clone());
        let list = crds.list(&ListParams::default()).await.ok()?;
        let crd = list
            .items
            .into_iter()
            .find(|c| c.spec.group == gvk.group && c.spec.names.kind == gvk.kind)?;
        let name = crd.metadata.name.clone()?;
        let established = |c: Option<&CustomResourceDefinition>| {
            let ok = c
                .and_then(|c| c.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if ok {
                k8s::wait::Check::Done(())
            } else {
                k8s::wait::Check::Wait("not Established yet".to_owned())
            }
        };
        let what = format!("CRD {name} was not Established");
        k8s::wait::until(crds, &name, Duration::from_secs(30), &what, established)
            .await
            .ok()?;
        for delay in std::iter::once(Duration::ZERO).chain(k8s::backoff::delays().take(5)) {
            tokio::time::sleep(delay).await;
            if let Ok(found) = kube::discovery::pinned_kind(&self.kube.client, gvk).await {
                return Some(found);
            }
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Kind>> {
        // A panic while holding this lock leaves a plain map: still usable.
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The API for `kind` in `namespace` (ignored for cluster-scoped kinds).
    pub fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        match (kind.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.kube.client.clone(), ns, &kind.resource),
            (true, None) => Api::all_with(self.kube.client.clone(), &kind.resource),
            (false, _) => Api::all_with(self.kube.client.clone(), &kind.resource),
        }
    }

    /// The object's kind and, for a namespaced kind, its namespace with
    /// `default_namespace` filled in.
    pub async fn place(
        &self,
        object: &mut Value,
        default_namespace: &str,
    ) -> Result<(Kind, Option<String>), Failed> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind_name = object["kind"].as_str().unwrap_or_default().to_owned();
        let kind = self.kind(&api_version, &kind_name).await?;
        if !kind.namespaced {
            return Ok((kind, None));
        }
        let metadata = object.as_object_mut().map(|o| {
            o.entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()))
        });
        let namespace = match metadata.and_then(Value::as_object_mut) {
            Some(m) => match m.get("namespace").and_then(Value::as_str) {
                Some(ns) => ns.to_owned(),
                None => {
                    m.insert(
                        "namespace".into(),
                        Value::String(default_namespace.to_owned()),
                    );
                    default_namespace.to_owned()
                }
            },
            None => default_namespace.to_owned(),
        };
        Ok((kind, Some(namespace)))
    }

    /// The server's answer as text, with the object named.
    pub fn say(&self, err: kube::Error, what: &str) -> Failed {
        match &err {
            kube::Error::Api(status) => format!("{what}: {} ({})", status.message, status.reason),
            _ => format!("{what}: {err}"),
        }
    }
}

/// A write the server refused: the report's text, and the server's own
/// message (chainsaw's `$error`).
#[derive(Debug, Clone)]
pub struct Refused {
    pub shown: Failed,
    pub message: String,
}

impl Refused {
    fn new(err: kube::Error, what: &str) -> Refused {
        let message = match &err {
            kube::Error::Api(status) => status.message.clone(),
            other => other.to_string(),
        };
        let shown = match &err {
            kube::Error::Api(status) => format!("{what}: {} ({})", status.message, status.reason),
            _ => format!("{what}: {err}"),
        };
        Refused { shown, message }
    }

    fn local(shown: Failed) -> Refused {
        Refused {
            message: shown.clone(),
            shown,
        }
    }
}

/// How a write went.
pub enum Wrote {
    Created,
    Changed,
}

/// Writes `object` as `how` says. `object` has its namespace filled in.
pub async fn write(
    api: &Api<DynamicObject>,
    object: &Value,
    how: super::model::Write,
    describe: &str,
    cluster: &Cluster,
) -> Result<Wrote, Refused> {
    use super::model::Write;
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let typed: DynamicObject = serde_json::from_value(object.clone())
        .map_err(|e| Refused::local(format!("{describe} is not an object the API accepts: {e}")))?;
    let pp = PostParams {
        field_manager: Some("kdev-test".into()),
        ..PostParams::default()
    };
    let patch = |api: &Api<DynamicObject>| {
        let api = api.clone();
        let object = object.clone();
        let name = name.to_owned();
        async move {
            let params = PatchParams {
                field_manager: Some("kdev-test".into()),
                field_validation: Some(ValidationDirective::Strict),
                ..PatchParams::default()
            };
            api.patch(&name, &params, &Patch::Merge(&object)).await
        }
    };
    match how {
        Write::Create => strict(
            cluster,
            kube::core::Request::new(api.resource_url())
                .create(&pp, body(&typed).map_err(Refused::local)?),
        )
        .await
        .map(|_| Wrote::Created)
        .map_err(|e| Refused::new(e, &format!("create {describe}"))),
        Write::Patch => patch(api)
            .await
            .map(|_| Wrote::Changed)
            .map_err(|e| Refused::new(e, &format!("patch {describe}"))),
        Write::Update => {
            let current = api
                .get(name)
                .await
                .map_err(|e| Refused::new(e, &format!("update {describe}")))?;
            let mut replacement = typed;
            replacement.metadata.resource_version = current.metadata.resource_version;
            strict(
                cluster,
                kube::core::Request::new(api.resource_url()).replace(
                    name,
                    &pp,
                    body(&replacement).map_err(Refused::local)?,
                ),
            )
            .await
            .map(|_| Wrote::Changed)
            .map_err(|e| Refused::new(e, &format!("update {describe}")))
        }
        Write::Apply => {
            if name.is_empty() {
                // generateName: always a new object.
                return strict(
                    cluster,
                    kube::core::Request::new(api.resource_url())
                        .create(&pp, body(&typed).map_err(Refused::local)?),
                )
                .await
                .map(|_| Wrote::Created)
                .map_err(|e| Refused::new(e, &format!("create {describe}")));
            }
            // As kuttl: what exists is merge-patched (a step may hold only
            // the fields it changes), what does not is created.
            let exists = match api.get_metadata_opt(name).await {
                Ok(found) => found.is_some(),
                Err(e) => return Err(Refused::new(e, &format!("apply {describe}"))),
            };
            if exists {
                return patch(api)
                    .await
                    .map(|_| Wrote::Changed)
                    .map_err(|e| Refused::new(e, &format!("apply {describe}")));
            }
            match strict(
                cluster,
                kube::core::Request::new(api.resource_url())
                    .create(&pp, body(&typed).map_err(Refused::local)?),
            )
            .await
            {
                Ok(_) => Ok(Wrote::Created),
                // Created in between (by a controller): patch it.
                Err(kube::Error::Api(status)) if status.code == 409 => patch(api)
                    .await
                    .map(|_| Wrote::Changed)
                    .map_err(|e| Refused::new(e, &format!("apply {describe}"))),
                Err(e) => Err(Refused::new(e, &format!("apply {describe}"))),
            }
        }
    }
}

/// Sends a create or replace with `fieldValidation=Strict`, as kubectl and
/// chainsaw do: a field the API does not know is an error, not silently
/// dropped (kube's PostParams cannot say it, so the query is added here).
async fn strict(
    cluster: &Cluster,
    request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<DynamicObject, kube::Error> {
    let mut request = request.map_err(kube::Error::BuildRequest)?;
    let uri = request.uri().to_string();
    let joined = if uri.contains('?') { '&' } else { '?' };
    *request.uri_mut() = format!("{uri}{joined}fieldValidation=Strict")
        .parse()
        .map_err(|e: http::uri::InvalidUri| {
            kube::Error::BuildRequest(kube::core::request::Error::Validation(e.to_string()))
        })?;
    cluster.kube.client.request::<DynamicObject>(request).await
}

fn body(object: &DynamicObject) -> Result<Vec<u8>, Failed> {
    serde_json::to_vec(object).map_err(|e| format!("cannot encode the object: {e}"))
}

/// Deletes by name or selector; what was not there is not an error.
pub async fn delete(
    api: &Api<DynamicObject>,
    name: Option<&str>,
    selector: Option<&str>,
    describe: &str,
    cluster: &Cluster,
) -> Result<(), Failed> {
    let dp = DeleteParams::background();
    match name {
        Some(name) => match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if k8s::is_not_found(&e) => Ok(()),
            Err(e) => Err(cluster.say(e, &format!("delete {describe}"))),
        },
        None => {
            let lp = match selector {
                Some(s) => ListParams::default().labels(s),
                None => ListParams::default(),
            };
            api.delete_collection(&dp, &lp)
                .await
                .map(|_| ())
                .map_err(|e| cluster.say(e, &format!("delete {describe}")))
        }
    }
}

/// A set of objects a wait looks at: one kind in one namespace, by name or
/// selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Watched {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub selector: Option<String>,
}

/// What the watches have seen: each scope's objects, by namespace/name.
#[derive(Default)]
pub struct Seen {
    pub objects: Vec<HashMap<String, Value>>,
    /// Whether each scope's watch has listed once (an empty scope is only
    /// known to be empty after that).
    pub synced: Vec<bool>,
}

impl Seen {
    pub fn all_synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }
}

/// Watches every scope and calls `judge` after each change once all have
/// listed, until it returns `Some`, or until `deadline`, when `None` is
/// returned. The one wait mechanism of `kdev test`: asserts, errors,
/// `wait` and deletes all go through it, driven by watch events, never a
/// sleep loop.
pub async fn watch_until<T>(
    cluster: &Cluster,
    scopes: &[Watched],
    timeout: Duration,
    mut judge: impl FnMut(&Seen) -> Option<T>,
) -> Result<(Option<T>, Seen), Failed> {
    let mut streams = Vec::new();
    for (i, scope) in scopes.iter().enumerate() {
        let kind = cluster.kind(&scope.api_version, &scope.kind).await?;
        let api = cluster.api(&kind, scope.namespace.as_deref());
        let mut config = watcher::Config::default();
        if let Some(name) = &scope.name {
            config = config.fields(&format!("metadata.name={name}"));
        }
        if let Some(selector) = &scope.selector {
            config = config.labels(selector);
        }
        streams.push(
            watcher(api, config)
                .default_backoff()
                .map(move |event| (i, event))
                .boxed(),
        );
    }
    let mut seen = Seen {
        objects: vec![HashMap::new(); scopes.len()],
        synced: vec![false; scopes.len()],
    };
    let mut pending: Vec<HashMap<String, Value>> = vec![HashMap::new(); scopes.len()];
    let mut events = stream::select_all(streams);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            () = tokio::time::sleep_until(deadline) => {
                if let Some(e) = last_error {
                    tracing::debug!(error = %e, "a test watch was failing at its deadline");
                }
                return Ok((None, seen));
            }
        };
        let Some((i, event)) = next else {
            return Err("the watch ended".to_owned());
        };
        let changed = match event {
            Ok(watcher::Event::Init) => {
                pending[i].clear();
                false
            }
            Ok(watcher::Event::InitApply(o)) => {
                pending[i].insert(key(&o), to_value(o, &scopes[i]));
                false
            }
            Ok(watcher::Event::InitDone) => {
                seen.objects[i] = std::mem::take(&mut pending[i]);
                seen.synced[i] = true;
                true
            }
            Ok(watcher::Event::Apply(o)) => {
                seen.objects[i].insert(key(&o), to_value(o, &scopes[i]));
                true
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.objects[i].remove(&key(&o));
                true
            }
            Err(e) => {
                // The watcher retries on its back-off; a persistent error
                // (say, a forbidden list) is logged at the deadline.
                last_error = Some(e.to_string());
                false
            }
        };
        if changed
            && seen.all_synced()
            && let Some(done) = judge(&seen)
        {
            return Ok((Some(done), seen));
        }
    }
}

fn key(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or(""),
        o.metadata.name.as_deref().unwrap_or("")
    )
}

/// The object as JSON, with the apiVersion and kind a list's items lack.
fn to_value(o: DynamicObject, scope: &Watched) -> Value {
    let mut value = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::String(scope.api_version.clone()),
        );
        map.insert("kind".into(), Value::String(scope.kind.clone()));
    }
    value
}
