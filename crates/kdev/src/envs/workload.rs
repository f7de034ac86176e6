//! The workloads an environment is made of, read the same way whatever
//! their kind: Deployments, StatefulSets and Argo Rollouts (their
//! replicas), CronJobs and Jobs (running is 1, suspended is 0), KEDA
//! ScaledObjects (scaling is 1, paused at 0 replicas is 0), and DaemonSets
//! that opted in (on their nodes is 1, kept off every node is 0).
//!
//! Argo Rollouts are read as [`Rollout`], the fields of the CRD's objects
//! that envs reads; kdev only ever patches them (a merge patch of the
//! fields it owns, the scale subresource), never writes a whole object
//! back, so what the type leaves out is never lost. Where the CRD is not
//! installed there are none.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error;
use crate::k8s::Kube;
use kdev_contract::envs::ASLEEP_NODE_SELECTOR;
use kdev_contract::session::{DeploymentMarks, WorkloadKind};

/// How many workloads of one environment change at once.
pub const AT_ONCE: usize = 8;

/// How many workload writes this process has in flight at once, whatever
/// the environments (the controller moves several): each write is a round
/// trip, so 16 keep the API server busy, well under its own limit on
/// mutating requests in flight (`--max-mutating-requests-inflight`, 200
/// by default) that other clients share.
const IN_FLIGHT: usize = 16;

/// An environment's turn to write: [`AT_ONCE`] of the process's
/// [`IN_FLIGHT`] writes, held while its workloads change. Turns are given
/// in the order asked (a fair queue), so environments that read first
/// write first and finish one after another, while the next ones read
/// beside them, instead of all sharing the writes and finishing together.
pub async fn turn() -> tokio::sync::SemaphorePermit<'static> {
    static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(IN_FLIGHT);
    TURNS
        .acquire_many(AT_ONCE as u32)
        .await
        .expect("never closed")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deployment,
    StatefulSet,
    CronJob,
    Job,
    Rollout,
    ScaledObject,
    DaemonSet,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::CronJob,
        Kind::Job,
        Kind::Rollout,
        Kind::ScaledObject,
        Kind::DaemonSet,
    ];

    /// Whether its size is a count of replicas (a Deployment, StatefulSet
    /// or Rollout: a scale subresource, HPAs, a waker). The others sleep by
    /// a switch: suspended (a CronJob, a Job), paused (a ScaledObject), or
    /// kept off every node (a DaemonSet).
    pub fn has_replicas(self) -> bool {
        matches!(self, Kind::Deployment | Kind::StatefulSet | Kind::Rollout)
    }

    /// How a size of this kind reads: replicas, or running and suspended.
    pub fn size_text(self, size: i32) -> String {
        match (self, size) {
            (Kind::ScaledObject, 0) => "paused".to_owned(),
            (Kind::ScaledObject, _) => "scaling".to_owned(),
            (Kind::DaemonSet, 0) => "on no node".to_owned(),
            (Kind::DaemonSet, _) => "on its nodes".to_owned(),
            (kind, 0) if !kind.has_replicas() => "suspended".to_owned(),
            (kind, _) if !kind.has_replicas() => "running".to_owned(),
            (_, 1) => "1 replica".to_owned(),
            (_, n) => format!("{n} replicas"),
        }
    }

    /// The kind's `apiVersion` and `kind`, as an object reference names them.
    pub fn type_meta(self) -> (String, String) {
        fn of<K: Resource<DynamicType = ()>>() -> (String, String) {
            (K::api_version(&()).into_owned(), K::kind(&()).into_owned())
        }
        match self {
            Kind::Deployment => of::<Deployment>(),
            Kind::StatefulSet => of::<StatefulSet>(),
            Kind::CronJob => of::<CronJob>(),
            Kind::Job => of::<Job>(),
            Kind::Rollout => of::<Rollout>(),
            Kind::ScaledObject => of::<ScaledObject>(),
            Kind::DaemonSet => of::<DaemonSet>(),
        }
    }

    /// kubectl's short form, as `kdev` prints it.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::CronJob => "cronjob",
            Kind::Job => "job",
            Kind::Rollout => "rollout",
            Kind::ScaledObject => "scaledobject",
            Kind::DaemonSet => "daemonset",
        }
    }
}

/// A workload named on the command line: `deploy/NAME`, `sts/NAME`, `ds/NAME`, `cronjob/NAME`, `job/NAME`, `rollout/NAME`, `scaledobject/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ref {
    pub kind: Kind,
    pub name: String,
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.short(), self.name)
    }
}

/// Reads `KIND/NAME` with kubectl's names for the seven kinds.
pub fn parse_ref(text: &str) -> anyhow::Result<Ref> {
    let usage = || {
        error::usage(format!(
            "{text:?} is not a workload: use deploy/NAME, sts/NAME, ds/NAME, cronjob/NAME, job/NAME, rollout/NAME or scaledobject/NAME"
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
        "ro" | "rollout" | "rollouts" | "rollout.argoproj.io" | "rollouts.argoproj.io" => {
            Kind::Rollout
        }
        "so"
        | "scaledobject"
        | "scaledobjects"
        | "scaledobject.keda.sh"
        | "scaledobjects.keda.sh" => Kind::ScaledObject,
        "ds" | "daemonset" | "daemonsets" | "daemonset.apps" | "daemonsets.apps" => Kind::DaemonSet,
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
    /// The merge patch that sets this object's size (the caller adds the
    /// record's annotations): to 0, what kdev's sleep adds; above 0, a
    /// count, or the removal of what kdev's sleep added and nothing else.
    fn size_patch(&self, size: i32) -> serde_json::Value;
    /// Whether it has run to its end (a Job).
    fn finished(&self) -> bool {
        false
    }
    /// Whether a cluster may not serve the kind at all (a CRD's): listing
    /// it there finds none rather than failing.
    const OPTIONAL: bool = false;
    /// The pod template and selector a waker stands in with, and labels
    /// the workload's controller adds to its pods beyond the template's.
    fn pods(&self) -> Option<Pods<'_>> {
        None
    }
    /// Drops all that [`view`] does not read (the pod template, most of the
    /// status): what a cache of thousands keeps.
    fn keep_viewed(&mut self);
}

impl Scalable for Deployment {
    const KIND: Kind = Kind::Deployment;
    fn pods(&self) -> Option<Pods<'_>> {
        let spec = self.spec.as_ref()?;
        Some(Pods {
            template: &spec.template,
            selector: &spec.selector,
            added: BTreeMap::new(),
        })
    }
    fn size(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn ready(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
    fn size_patch(&self, size: i32) -> serde_json::Value {
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
    fn pods(&self) -> Option<Pods<'_>> {
        let spec = self.spec.as_ref()?;
        Some(Pods {
            template: &spec.template,
            selector: &spec.selector,
            added: BTreeMap::new(),
        })
    }
    fn size(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn ready(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
    fn size_patch(&self, size: i32) -> serde_json::Value {
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
    fn size_patch(&self, size: i32) -> serde_json::Value {
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
    fn size_patch(&self, size: i32) -> serde_json::Value {
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

/// What a waker needs of a workload's pods.
pub struct Pods<'a> {
    pub template: &'a k8s_openapi::api::core::v1::PodTemplateSpec,
    pub selector: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    /// Labels its controller puts on every pod beyond the template's (a
    /// Rollout's `rollouts-pod-template-hash`, which a blue-green
    /// Service selects).
    pub added: BTreeMap<String, String>,
}

/// An Argo Rollout (`argoproj.io/v1alpha1`), as far as envs reads it.
#[derive(Clone, Debug, Default, serde::Deserialize, Serialize)]
pub struct Rollout {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<RolloutSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RolloutStatus>,
}

#[derive(Clone, Debug, Default, serde::Deserialize, Serialize)]
pub struct RolloutSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Absent when the Rollout takes its template from a Deployment
    /// (`workloadRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<k8s_openapi::api::core::v1::PodTemplateSpec>,
}

#[derive(Clone, Debug, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The stable ReplicaSet's `rollouts-pod-template-hash`.
    #[serde(default, rename = "stableRS", skip_serializing_if = "Option::is_none")]
    pub stable_rs: Option<String>,
}

impl Resource for Rollout {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;
    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        WorkloadKind::Rollout.api().2.into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        WorkloadKind::Rollout.api().0.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        WorkloadKind::Rollout.api().1.into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        WorkloadKind::Rollout.api().3.into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// The label Argo Rollouts puts on each pod: its ReplicaSet's hash.
pub const ROLLOUT_HASH_LABEL: &str = "rollouts-pod-template-hash";

impl Scalable for Rollout {
    const KIND: Kind = Kind::Rollout;
    const OPTIONAL: bool = true;
    fn size(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn ready(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
    fn size_patch(&self, size: i32) -> serde_json::Value {
        serde_json::json!({ "spec": { "replicas": size } })
    }
    fn pods(&self) -> Option<Pods<'_>> {
        let spec = self.spec.as_ref()?;
        let added = self
            .status
            .as_ref()
            .and_then(|s| s.stable_rs.clone())
            .map(|hash| BTreeMap::from([(ROLLOUT_HASH_LABEL.to_owned(), hash)]))
            .unwrap_or_default();
        Some(Pods {
            template: spec.template.as_ref()?,
            selector: spec.selector.as_ref()?,
            added,
        })
    }
    fn keep_viewed(&mut self) {
        self.spec = self.spec.take().map(|s| RolloutSpec {
            replicas: s.replicas,
            ..RolloutSpec::default()
        });
        self.status = self.status.take().map(|s| RolloutStatus {
            ready_replicas: s.ready_replicas,
            ..RolloutStatus::default()
        });
        keep_viewed_meta(self.meta_mut());
    }
}

/// KEDA's annotation that pauses a ScaledObject at a replica count: KEDA
/// scales its target to that count and stops scaling it.
pub const KEDA_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// KEDA's annotation that pauses a ScaledObject where it is.
pub const KEDA_PAUSED: &str = "autoscaling.keda.sh/paused";

/// A KEDA ScaledObject (`keda.sh/v1alpha1`), as far as envs reads it: KEDA
/// scales its target between its bounds and would scale a slept target
/// straight back up, so an environment sleeps it by pausing it at 0
/// replicas, and its target is left to KEDA.
#[derive(Clone, Debug, Default, serde::Deserialize, Serialize)]
pub struct ScaledObject {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ScaledObjectSpec>,
}

#[derive(Clone, Debug, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<ScaleTarget>,
}

/// What a ScaledObject scales: a Deployment unless it says otherwise.
#[derive(Clone, Debug, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
}

impl ScaledObject {
    /// The workload it scales, when it is one envs knows.
    pub fn target(&self) -> Option<Ref> {
        let target = self.spec.as_ref()?.scale_target_ref.as_ref()?;
        let kind = match target.kind.as_deref().unwrap_or("Deployment") {
            "Deployment" => Kind::Deployment,
            "StatefulSet" => Kind::StatefulSet,
            "Rollout" => Kind::Rollout,
            _ => return None,
        };
        Some(Ref {
            kind,
            name: target.name.clone(),
        })
    }

    /// Paused by anyone (either of KEDA's annotations).
    fn paused(&self) -> bool {
        let annotations = self.annotations();
        annotations.contains_key(KEDA_PAUSED_REPLICAS)
            || annotations.get(KEDA_PAUSED).is_some_and(|v| v == "true")
    }
}

impl Resource for ScaledObject {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;
    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "ScaledObject".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "keda.sh".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "scaledobjects".into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

impl Scalable for ScaledObject {
    const KIND: Kind = Kind::ScaledObject;
    const OPTIONAL: bool = true;
    /// 1 while KEDA scales its target, 0 while it is paused (by kdev's
    /// sleep, or by someone before it: then the sleep leaves it, and its
    /// target, as they are).
    fn size(&self) -> i32 {
        i32::from(!self.paused())
    }
    fn ready(&self) -> i32 {
        self.size()
    }
    fn size_patch(&self, size: i32) -> serde_json::Value {
        let kdevs_pause = self
            .annotations()
            .get(KEDA_PAUSED_REPLICAS)
            .is_some_and(|v| v == "0");
        if size == 0 {
            serde_json::json!({ "metadata": { "annotations": { KEDA_PAUSED_REPLICAS: "0" } } })
        } else if kdevs_pause {
            // The pause kdev's sleep set is removed; one someone changed
            // while asleep is theirs and stays, as a count set by hand.
            serde_json::json!({ "metadata": { "annotations": { KEDA_PAUSED_REPLICAS: null } } })
        } else {
            serde_json::json!({})
        }
    }
    fn keep_viewed(&mut self) {
        keep_viewed_meta(self.meta_mut());
    }
}

impl Scalable for DaemonSet {
    const KIND: Kind = Kind::DaemonSet;
    /// 1 on its nodes, 0 when its pod template asks for a node label no
    /// node has (kdev's sleep).
    fn size(&self) -> i32 {
        let asleep = self
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.node_selector.as_ref())
            .is_some_and(|selector| selector.contains_key(ASLEEP_NODE_SELECTOR));
        i32::from(!asleep)
    }
    /// Ready when every node it is scheduled on runs a ready pod.
    fn ready(&self) -> i32 {
        let status = self.status.as_ref();
        let desired = status.map_or(0, |s| s.desired_number_scheduled);
        let ready = status.map_or(0, |s| s.number_ready);
        i32::from(self.size() > 0 && ready >= desired)
    }
    fn size_patch(&self, size: i32) -> serde_json::Value {
        if size == 0 {
            serde_json::json!({ "spec": { "template": { "spec": {
                "nodeSelector": { ASLEEP_NODE_SELECTOR: "true" }
            } } } })
        } else if self.size() == 0 {
            // Only kdev's key is removed; the template's own selector stays.
            serde_json::json!({ "spec": { "template": { "spec": {
                "nodeSelector": { ASLEEP_NODE_SELECTOR: null }
            } } } })
        } else {
            serde_json::json!({})
        }
    }
    fn keep_viewed(&mut self) {
        use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetStatus};
        use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
        let asleep = self.size() == 0;
        self.spec = self.spec.take().map(|_| DaemonSetSpec {
            // What `size` reads, and nothing else.
            template: PodTemplateSpec {
                spec: asleep.then(|| PodSpec {
                    node_selector: Some(BTreeMap::from([(
                        ASLEEP_NODE_SELECTOR.to_owned(),
                        "true".to_owned(),
                    )])),
                    ..PodSpec::default()
                }),
                ..PodTemplateSpec::default()
            },
            ..DaemonSetSpec::default()
        });
        self.status = self.status.take().map(|s| DaemonSetStatus {
            desired_number_scheduled: s.desired_number_scheduled,
            number_ready: s.number_ready,
            ..DaemonSetStatus::default()
        });
        keep_viewed_meta(self.meta_mut());
    }
}

pub fn view<K: Scalable>(object: &K) -> Workload {
    let annotations = object.annotations().clone();
    let marks = match K::KIND {
        Kind::Deployment | Kind::StatefulSet | Kind::Rollout => {
            DeploymentMarks::read(&annotations).ok().flatten()
        }
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

/// Every `K` in `namespace` (every namespace: `None`), sorted by name; none
/// where the cluster does not serve an optional kind (a CRD's).
pub async fn list_kind<K: Scalable>(
    kube: &Kube,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<K>> {
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if K::OPTIONAL && status.code == 404 => return Ok(Vec::new()),
        Err(err) => {
            let where_ =
                namespace.map_or("every namespace".to_owned(), |ns| format!("namespace {ns}"));
            return Err(kube.explain(err, format!("list {}s in {where_}", K::KIND.short())));
        }
    };
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
    pub rollouts: Vec<Rollout>,
    pub scaled_objects: Vec<ScaledObject>,
    pub daemonsets: Vec<DaemonSet>,
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
            .chain(self.rollouts.iter().map(view))
            .chain(self.scaled_objects.iter().map(view))
            .chain(self.daemonsets.iter().map(view))
            .collect()
    }
}

/// Every workload (and ScaledObject) in `namespace`.
pub async fn listed(kube: &Kube, namespace: &str) -> anyhow::Result<Listed> {
    let (deployments, statefulsets, cronjobs, jobs, rollouts, scaled_objects, daemonsets) = tokio::try_join!(
        list_kind::<Deployment>(kube, Some(namespace)),
        list_kind::<StatefulSet>(kube, Some(namespace)),
        list_kind::<CronJob>(kube, Some(namespace)),
        list_kind::<Job>(kube, Some(namespace)),
        list_kind::<Rollout>(kube, Some(namespace)),
        list_kind::<ScaledObject>(kube, Some(namespace)),
        list_kind::<DaemonSet>(kube, Some(namespace)),
    )?;
    Ok(Listed {
        deployments,
        statefulsets,
        cronjobs,
        jobs,
        rollouts,
        scaled_objects,
        daemonsets,
    })
}

/// Every workload (and ScaledObject) in the cluster, by namespace: one
/// request per kind however many namespaces there are.
pub async fn listed_everywhere(kube: &Kube) -> anyhow::Result<BTreeMap<String, Listed>> {
    let (deployments, statefulsets, cronjobs, jobs, rollouts, scaled_objects, daemonsets) = tokio::try_join!(
        list_kind::<Deployment>(kube, None),
        list_kind::<StatefulSet>(kube, None),
        list_kind::<CronJob>(kube, None),
        list_kind::<Job>(kube, None),
        list_kind::<Rollout>(kube, None),
        list_kind::<ScaledObject>(kube, None),
        list_kind::<DaemonSet>(kube, None),
    )?;
    let mut by_namespace: BTreeMap<String, Listed> = BTreeMap::new();
    /// Puts each object in its namespace's list of its kind.
    fn sort_in<K: Scalable>(
        objects: Vec<K>,
        by_namespace: &mut BTreeMap<String, Listed>,
        list: fn(&mut Listed) -> &mut Vec<K>,
    ) {
        for object in objects {
            let namespace = object.namespace().unwrap_or_default();
            list(by_namespace.entry(namespace).or_default()).push(object);
        }
    }
    sort_in(deployments, &mut by_namespace, |l| &mut l.deployments);
    sort_in(statefulsets, &mut by_namespace, |l| &mut l.statefulsets);
    sort_in(cronjobs, &mut by_namespace, |l| &mut l.cronjobs);
    sort_in(jobs, &mut by_namespace, |l| &mut l.jobs);
    sort_in(rollouts, &mut by_namespace, |l| &mut l.rollouts);
    sort_in(scaled_objects, &mut by_namespace, |l| &mut l.scaled_objects);
    sort_in(daemonsets, &mut by_namespace, |l| &mut l.daemonsets);
    Ok(by_namespace)
}

/// Every workload in `namespace`, by kind and name.
pub async fn in_namespace(kube: &Kube, namespace: &str) -> anyhow::Result<Vec<Workload>> {
    Ok(listed(kube, namespace).await?.views())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubectl_names_for_the_five_kinds() {
        assert_eq!(parse_ref("deploy/web").unwrap().kind, Kind::Deployment);
        assert_eq!(
            parse_ref("statefulsets.apps/db").unwrap().kind,
            Kind::StatefulSet
        );
        assert_eq!(parse_ref("cj/nightly").unwrap().kind, Kind::CronJob);
        assert_eq!(parse_ref("jobs.batch/migrate").unwrap().kind, Kind::Job);
        assert_eq!(parse_ref("ro/web").unwrap().kind, Kind::Rollout);
        assert_eq!(
            parse_ref("rollouts.argoproj.io/web").unwrap().kind,
            Kind::Rollout
        );
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
