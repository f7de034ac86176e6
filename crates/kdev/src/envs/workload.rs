//! The workloads an environment is made of, read the same way whatever
//! their kind: Deployments and StatefulSets (their replicas), CronJobs and
//! Jobs (running is 1, suspended is 0).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error;
use crate::k8s::Kube;
use kdev_contract::session::DeploymentMarks;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deployment,
    StatefulSet,
    CronJob,
    Job,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::CronJob,
        Kind::Job,
    ];

    /// Whether a sleep suspends it (a CronJob, a Job) rather than scaling
    /// it: no replicas, no scale subresource, no HPA, no waker.
    pub fn suspends(self) -> bool {
        matches!(self, Kind::CronJob | Kind::Job)
    }

    /// kubectl's short form, as `kdev` prints it.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::CronJob => "cronjob",
            Kind::Job => "job",
        }
    }
}

/// A workload named on the command line: `deploy/NAME`, `sts/NAME`, `cronjob/NAME`, `job/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    pub kind: Kind,
    pub name: String,
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.short(), self.name)
    }
}

/// Reads `KIND/NAME` with kubectl's names for the four kinds.
pub fn parse_ref(text: &str) -> anyhow::Result<Ref> {
    let usage = || {
        error::usage(format!(
            "{text:?} is not a workload: use deploy/NAME, sts/NAME, cronjob/NAME or job/NAME"
        ))
    };
    let (kind, name) = text.split_once('/').ok_or_else(usage)?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps" => {
            Kind::Deployment
        }
        "sts" | "statefulset" | "statefulsets" | "statefulset.apps" | "statefulsets.apps" => {
            Kind::StatefulSet
        }
        "cj" | "cronjob" | "cronjobs" | "cronjob.batch" | "cronjobs.batch" => Kind::CronJob,
        "job" | "jobs" | "job.batch" | "jobs.batch" => Kind::Job,
        _ => return Err(usage()),
    };
    crate::k8s::validate_subdomain(&format!("{} name", kind.short()), name)?;
    Ok(Ref {
        kind,
        name: name.to_owned(),
    })
}

/// One workload as envs sees it.
#[derive(Clone, Debug)]
pub struct Workload {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// Replicas (unset reads as 1); a CronJob or a Job: 1 running, 0
    /// suspended.
    pub size: i32,
    /// Ready replicas; a CronJob or a Job counts as ready.
    pub ready: i32,
    /// A Job that completed or failed: nothing of it runs, nothing to sleep.
    pub finished: bool,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The `kdev swap` session holding it, if any.
    pub swap_session: Option<String>,
    /// The count that session's restore puts back.
    pub swap_original: Option<i32>,
    /// When it was created.
    pub created: Option<jiff::Timestamp>,
}

impl Workload {
    pub fn reference(&self) -> Ref {
        Ref {
            kind: self.kind,
            name: self.name.clone(),
        }
    }
}

/// What envs needs from each kind of workload.
pub trait Scalable:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + fmt::Debug
{
    const KIND: Kind;
    fn size(&self) -> i32;
    fn ready(&self) -> i32;
    /// The patch that sets the size (merged with the annotations by the caller).
    fn size_patch(size: i32) -> serde_json::Value;
    /// Whether it has run to its end (a Job).
    fn finished(&self) -> bool {
        false
    }
    /// Drops all that [`view`] does not read (the pod template, most of the
    /// status): what a cache of thousands keeps.
    fn keep_viewed(&mut self);
}

impl Scalable for Deployment {
    const KIND: Kind = Kind::Deployment;
    fn size(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn ready(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
    fn size_patch(size: i32) -> serde_json::Value {
        serde_json::json!({ "spec": { "replicas": size } })
    }
    fn keep_viewed(&mut self) {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
        self.spec = self.spec.take().map(|s| DeploymentSpec {
            replicas: s.replicas,
            ..DeploymentSpec::default()
        });
        self.status = self.status.take().map(|s| DeploymentStatus {
            ready_replicas: s.ready_replicas,
            ..DeploymentStatus::default()
        });
        keep_viewed_meta(self.meta_mut());
    }
}

/// Of the metadata, what [`view`] and the dashboard read.
fn keep_viewed_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

impl Scalable for StatefulSet {
    const KIND: Kind = Kind::StatefulSet;
    fn size(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn ready(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
    fn size_patch(size: i32) -> serde_json::Value {
        serde_json::json!({ "spec": { "replicas": size } })
    }
    fn keep_viewed(&mut self) {
        use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
        self.spec = self.spec.take().map(|s| StatefulSetSpec {
            replicas: s.replicas,
            ..StatefulSetSpec::default()
        });
        self.status = self.status.take().map(|s| StatefulSetStatus {
            ready_replicas: s.ready_replicas,
            ..StatefulSetStatus::default()
        });
        keep_viewed_meta(self.meta_mut());
    }
}

impl Scalable for CronJob {
    const KIND: Kind = Kind::CronJob;
    fn size(&self) -> i32 {
        let suspended = self.spec.suspend.unwrap_or(false);
        i32::from(!suspended)
    }
    fn ready(&self) -> i32 {
        self.size()
    }
    fn size_patch(size: i32) -> serde_json::Value {
        serde_json::json!({ "spec": { "suspend": size == 0 } })
    }
    fn keep_viewed(&mut self) {
        use k8s_openapi::api::batch::v1::CronJobSpec;
        self.spec = CronJobSpec {
            suspend: self.spec.suspend,
            ..CronJobSpec::default()
        };
        self.status = None;
        keep_viewed_meta(self.meta_mut());
    }
}

/// The Job controller's conditions for a Job that has run to its end.
fn terminal(condition: &k8s_openapi::api::batch::v1::JobCondition) -> bool {
    matches!(condition.type_.as_str(), "Complete" | "Failed") && condition.status == "True"
}

impl Scalable for Job {
    const KIND: Kind = Kind::Job;
    fn size(&self) -> i32 {
        let suspended = self.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
        i32::from(!suspended)
    }
    fn ready(&self) -> i32 {
        self.size()
    }
    fn size_patch(size: i32) -> serde_json::Value {
        serde_json::json!({ "spec": { "suspend": size == 0 } })
    }
    fn finished(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| conditions.iter().any(terminal))
    }
    fn keep_viewed(&mut self) {
        use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};
        self.spec = self.spec.take().map(|s| JobSpec {
            suspend: s.suspend,
            ..JobSpec::default()
        });
        // What `finished` reads, and nothing else.
        self.status = self.status.take().map(|s| JobStatus {
            conditions: s
                .conditions
                .map(|conditions| conditions.into_iter().filter(terminal).collect()),
            ..JobStatus::default()
        });
        keep_viewed_meta(self.meta_mut());
    }
}

pub fn view<K: Scalable>(object: &K) -> Workload {
    let annotations = object.annotations().clone();
    let marks = match K::KIND {
        Kind::Deployment | Kind::StatefulSet => DeploymentMarks::read(&annotations).ok().flatten(),
        _ => None,
    };
    Workload {
        kind: K::KIND,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        size: object.size(),
        ready: object.ready(),
        finished: object.finished(),
        labels: object.labels().clone(),
        annotations,
        swap_session: marks.as_ref().map(|m| m.session.clone()),
        swap_original: marks.map(|m| m.original_replicas),
        created: object
            .meta()
            .creation_timestamp
            .as_ref()
            .and_then(|t| jiff::Timestamp::from_second(t.0.as_second()).ok()),
    }
}

async fn list_kind<K: Scalable>(kube: &Kube, namespace: &str) -> anyhow::Result<Vec<K>> {
    let api: Api<K> = Api::namespaced(kube.client.clone(), namespace);
    let list = api.list(&ListParams::default()).await.map_err(|err| {
        kube.explain(
            err,
            format!("list {}s in namespace {namespace}", K::KIND.short()),
        )
    })?;
    let mut items = list.items;
    // Kept until each is decided on: without managedFields, the largest
    // part of an object and unused here, a large namespace takes less memory.
    for object in &mut items {
        object.meta_mut().managed_fields = None;
    }
    items.sort_by_key(|object| object.name_any());
    Ok(items)
}

/// A namespace's workloads as listed, each kind sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Listed {
    pub deployments: Vec<Deployment>,
    pub statefulsets: Vec<StatefulSet>,
    pub cronjobs: Vec<CronJob>,
    pub jobs: Vec<Job>,
}

impl Listed {
    /// Every workload, by kind and name.
    pub fn views(&self) -> Vec<Workload> {
        self.deployments
            .iter()
            .map(view)
            .chain(self.statefulsets.iter().map(view))
            .chain(self.cronjobs.iter().map(view))
            .chain(self.jobs.iter().map(view))
            .collect()
    }
}

/// Every Deployment, StatefulSet, CronJob and Job in `namespace`.
pub async fn listed(kube: &Kube, namespace: &str) -> anyhow::Result<Listed> {
    let (deployments, statefulsets, cronjobs, jobs) = tokio::try_join!(
        list_kind::<Deployment>(kube, namespace),
        list_kind::<StatefulSet>(kube, namespace),
        list_kind::<CronJob>(kube, namespace),
        list_kind::<Job>(kube, namespace),
    )?;
    Ok(Listed {
        deployments,
        statefulsets,
        cronjobs,
        jobs,
    })
}

/// Every Deployment, StatefulSet, CronJob and Job in the cluster, by
/// namespace: four requests however many namespaces there are.
pub async fn listed_everywhere(kube: &Kube) -> anyhow::Result<BTreeMap<String, Listed>> {
    async fn all<K: Scalable>(kube: &Kube) -> anyhow::Result<Vec<K>> {
        let api: Api<K> = Api::all(kube.client.clone());
        let list = api.list(&ListParams::default()).await.map_err(|err| {
            kube.explain(err, format!("list {}s in every namespace", K::KIND.short()))
        })?;
        let mut items = list.items;
        for object in &mut items {
            object.meta_mut().managed_fields = None;
        }
        items.sort_by_key(|object| object.name_any());
        Ok(items)
    }
    let (deployments, statefulsets, cronjobs, jobs) = tokio::try_join!(
        all::<Deployment>(kube),
        all::<StatefulSet>(kube),
        all::<CronJob>(kube),
        all::<Job>(kube),
    )?;
    let mut by_namespace: BTreeMap<String, Listed> = BTreeMap::new();
    for d in deployments {
        by_namespace
            .entry(d.namespace().unwrap_or_default())
            .or_default()
            .deployments
            .push(d);
    }
    for s in statefulsets {
        by_namespace
            .entry(s.namespace().unwrap_or_default())
            .or_default()
            .statefulsets
            .push(s);
    }
    for c in cronjobs {
        by_namespace
            .entry(c.namespace().unwrap_or_default())
            .or_default()
            .cronjobs
            .push(c);
    }
    for j in jobs {
        by_namespace
            .entry(j.namespace().unwrap_or_default())
            .or_default()
            .jobs
            .push(j);
    }
    Ok(by_namespace)
}

/// Every Deployment, StatefulSet, CronJob and Job in `namespace`, by kind and name.
pub async fn in_namespace(kube: &Kube, namespace: &str) -> anyhow::Result<Vec<Workload>> {
    Ok(listed(kube, namespace).await?.views())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubectl_names_for_the_four_kinds() {
        assert_eq!(parse_ref("deploy/web").unwrap().kind, Kind::Deployment);
        assert_eq!(
            parse_ref("statefulsets.apps/db").unwrap().kind,
            Kind::StatefulSet
        );
        assert_eq!(parse_ref("cj/nightly").unwrap().kind, Kind::CronJob);
        assert_eq!(parse_ref("jobs.batch/migrate").unwrap().kind, Kind::Job);
        let err = parse_ref("pod/web").unwrap_err().to_string();
        assert!(err.contains("deploy/NAME"), "{err}");
        assert!(parse_ref("deploy/Web_1").is_err());
    }

    proptest! {
        #[test]
        fn any_text_is_a_ref_or_an_error_never_a_panic(text in "\\PC{0,60}") {
            let _ = parse_ref(&text);
        }
    }
}
