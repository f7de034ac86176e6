//! One swap session's writes to the cluster, in the order that keeps the
//! cluster restorable whenever the CLI dies.
//!
//! The workload may be a Deployment, a StatefulSet, a ReplicaSet or an Argo
//! Rollout ([`super::workload`]); "the Deployment" below stands for any.
//!
//! # Expected flow
//! 1. **Claim**: create the Lease `kdev-swap-<deployment>` (holder `user@host`,
//!    duration `--ttl`, labelled with the session id). The API server refuses a
//!    second create, which is what makes one session per Deployment.
//! 2. **Record**: one merge PATCH of the Deployment, guarded by the
//!    `resourceVersion` it was read at, sets `replicas: 0` together with the
//!    annotations holding the session id and the original replica count.
//! 3. **Proxy**: create the proxy Pod, owned by the Lease.
//! 4. The proxy runs; 5. the tunnel is up; 6. the command runs; the Lease is
//!    renewed every third of its duration throughout.
//! 7. The command ends; 8. **restore** the Deployment; 9. delete the proxy
//!    Pod; 10. delete the Lease ([`super::restore`]).
//!
//! # Guarantees (a crash between any two steps)
//! - before 1: nothing was written.
//! - after 1: a Lease and nothing else. It stops being renewed, expires, and
//!   the reaper finds no marks on the Deployment and deletes the Lease.
//! - after 2: the Deployment is at 0 *and* carries its original count: there
//!   is no moment where replicas is 0 and the count is not in the cluster,
//!   because both are written by the same PATCH. The Lease expires; the
//!   reaper restores the count, then deletes the Lease.
//! - after 3 to 7: as after 2; the proxy Pod goes with the Lease (explicitly,
//!   and by garbage collection through its owner reference).
//! - after 8 or 9: the Deployment is restored; the Lease expires and the
//!   reaper, finding no marks, deletes it and anything it owns.
//! - after 10: done.
//!
//! # `kdev run`
//! The same steps in [`Mode::Run`], with three differences: the Lease's
//! name is the session's own ([`kdev_contract::session::run_lease_name`]), so a claim
//! never conflicts; step 2 writes nothing (the Deployment is only read);
//! step 3's Pod is an egress-only agent with none of the workload's labels;
//! step 8 has nothing to restore. Every crash leaves at most a Lease and
//! what it owns, which the reaper deletes when the Lease expires.
//!
//! # Assumptions
//! - Some restorer runs: the controller's reaper in the cluster, or
//!   `kdev sweep` (which `kdev swap` runs on its target before claiming).
//! - Nobody else writes kdev's annotations.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kdev_contract::keys::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use kdev_contract::session::{
    CONTAINER_ANNOTATION, DeploymentMarks, Mode, ROLE_LABEL, SESSION_ANNOTATION, SESSION_LABEL,
    SWAPPED_LABEL, TARGET_ANNOTATION,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;

use super::proxy;
use super::restore::{self, Outcome, Target};
use super::workload::{self, Workload, WorkloadRef};
use crate::faults;
use crate::k8s::guarded::{self, Decision};
use crate::k8s::wait::{self, Check};
use crate::k8s::{Kube, is_conflict, is_not_found};
use kdev_contract::tunnel::auth;

/// The steps after which a crash can be injected (`KDEV_SWAP_CRASH_AFTER=N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Claimed = 1,
    Recorded = 2,
    ProxyCreated = 3,
    ProxyRunning = 4,
    TunnelUp = 5,
    CommandStarted = 6,
    CommandEnded = 7,
    Restored = 8,
    ProxyDeleted = 9,
    Released = 10,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::Claimed,
        Step::Recorded,
        Step::ProxyCreated,
        Step::ProxyRunning,
        Step::TunnelUp,
        Step::CommandStarted,
        Step::CommandEnded,
        Step::Restored,
        Step::ProxyDeleted,
        Step::Released,
    ];
}

/// Kills this process with SIGKILL right after a chosen step: the crash
/// sweep's way of proving every step is safe to die after. Off unless a
/// test build has `KDEV_SWAP_CRASH_AFTER` set ([`crate::faults`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct CrashAfter(Option<u32>);

impl CrashAfter {
    pub fn from_env() -> anyhow::Result<Self> {
        match faults::var(faults::SWAP_CRASH_AFTER) {
            Some(value) => {
                let step: u32 = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=Step::ALL.len() as u32).contains(n))
                    .ok_or_else(|| {
                        crate::error::usage(format!(
                            "{}={value:?} is not a step from 1 to 10",
                            faults::SWAP_CRASH_AFTER
                        ))
                    })?;
                Ok(Self(Some(step)))
            }
            None => Ok(Self(None)),
        }
    }

    pub fn reached(&self, step: Step) {
        if self.0 == Some(step as u32) {
            faults::crash(&format!("step {} ({step:?})", step as u32));
        }
    }
}

/// Who holds a Deployment when a claim is refused.
#[derive(Debug)]
pub struct Held {
    pub holder: String,
    pub since: String,
    pub session: String,
}

pub struct Session {
    pub kube: Kube,
    pub mode: Mode,
    pub id: String,
    pub workload: WorkloadRef,
    pub container: String,
    pub holder: String,
    pub ttl: Duration,
    /// The session's Lease.
    pub lease_name: String,
    /// The session's Pod (a swap's proxy, a run's agent) and token Secret.
    pub proxy_name: String,
    /// The session's tunnel token (in memory and in the session's Secret only).
    pub token: [u8; auth::TOKEN_LEN],
    crash: CrashAfter,
    /// Set before webhooks are pointed at the session's CA, so the end
    /// looks for them (other restorers always look).
    pub redirected_webhooks: std::sync::atomic::AtomicBool,
}

/// The tunnel token: random, unless a test build's `KDEV_SWAP_TOKEN` (64
/// hex digits) fixes it, which is how tests give a stand-in agent the token
/// in advance.
fn new_token() -> anyhow::Result<[u8; auth::TOKEN_LEN]> {
    if let Some(hex) = faults::var(faults::SWAP_TOKEN) {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        return bytes
            .as_deref()
            .and_then(auth::token_from)
            .ok_or_else(|| crate::error::usage("KDEV_SWAP_TOKEN must be 64 hex digits"));
    }
    let mut token = [0u8; auth::TOKEN_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token)
        .map_err(|_| anyhow::anyhow!("failed to make a session token: no randomness"))?;
    Ok(token)
}

impl Session {
    /// Step 1. `Err(Ok(held))` when another session holds the Deployment.
    pub async fn claim(
        kube: &Kube,
        mode: Mode,
        workload: &WorkloadRef,
        container: &str,
        ttl: Duration,
        crash: CrashAfter,
    ) -> anyhow::Result<Result<Session, Held>> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let holder = crate::host::user_at_host();
        let now = MicroTime(Timestamp::now());
        let lease_name = mode.lease_name(workload, &id);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(lease_name.clone()),
                labels: Some(
                    [
                        (ROLE_LABEL.to_owned(), mode.lease_role().to_owned()),
                        (SESSION_LABEL.to_owned(), id.clone()),
                        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    ]
                    .into(),
                ),
                annotations: Some(
                    [
                        (TARGET_ANNOTATION.to_owned(), workload.to_string()),
                        (CONTAINER_ANNOTATION.to_owned(), container.to_owned()),
                        (SESSION_ANNOTATION.to_owned(), id.clone()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.clone()),
                lease_duration_seconds: Some(ttl.as_secs().max(1) as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &kube.namespace);
        match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => {}
            Err(err) if is_conflict(&err) => {
                let existing = leases
                    .get_opt(&lease_name)
                    .await
                    .map_err(|err| kube.explain(err, "read the session lease"))?;
                let existing = existing.unwrap_or_default();
                let spec = existing.spec.unwrap_or_default();
                return Ok(Err(Held {
                    holder: spec.holder_identity.unwrap_or_else(|| "someone".into()),
                    since: spec
                        .acquire_time
                        .map(|t| t.0.to_string())
                        .unwrap_or_else(|| "an unknown time".into()),
                    session: existing
                        .metadata
                        .labels
                        .and_then(|l| l.get(SESSION_LABEL).cloned())
                        .unwrap_or_default(),
                }));
            }
            Err(err) => {
                return Err(
                    kube.explain(err, format!("create lease {}/{lease_name}", kube.namespace))
                );
            }
        }
        crash.reached(Step::Claimed);
        Ok(Ok(Session {
            kube: kube.clone(),
            mode,
            lease_name,
            proxy_name: mode.pod_name(&workload.name, &id),
            token: new_token()?,
            id,
            workload: workload.clone(),
            container: container.to_owned(),
            holder,
            ttl,
            crash,
            redirected_webhooks: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn target(&self) -> Target {
        Target {
            namespace: self.kube.namespace.clone(),
            workload: self.workload.clone(),
            session: self.id.clone(),
            mode: self.mode,
        }
    }

    pub fn crash(&self) -> CrashAfter {
        self.crash
    }

    /// Step 2: scale to 0 and record the original count in one PATCH.
    /// Returns the workload as patched and the original count. A run
    /// session only reads the workload.
    pub async fn record(&self) -> anyhow::Result<(Workload, i32)> {
        let api = workload::api(&self.kube, &self.kube.namespace, self.workload.kind);
        let what = format!("{} in {}", self.workload, self.kube.namespace);
        let name = &self.workload.name;
        if self.mode == Mode::Run {
            let current = api
                .get_opt(name)
                .await
                .map_err(|err| self.kube.explain(err, format!("read {what}")))?
                .with_context(|| format!("{what} was deleted"))?;
            let current = Workload::from_object(self.workload.kind, current)?;
            let replicas = current.replicas;
            self.crash.reached(Step::Recorded);
            return Ok((current, replicas));
        }
        let updated = guarded::update(&self.kube, &api, name, &what, |current| {
            let current = current.with_context(|| format!("{what} was deleted"))?;
            let original = workload::replicas_of(current).unwrap_or(1);
            let marks = DeploymentMarks {
                session: self.id.clone(),
                original_replicas: original,
            };
            let patch = json!({
                "metadata": {
                    "labels": { SWAPPED_LABEL: self.id },
                    "annotations": marks.annotations(),
                },
                "spec": { "replicas": 0 },
            });
            Ok(Decision::Write(patch, original))
        })
        .await?;
        let patched = updated
            .object
            .with_context(|| format!("{what} was deleted"))?;
        let patched = Workload::from_object(self.workload.kind, patched)?;
        self.crash.reached(Step::Recorded);
        Ok((patched, updated.value))
    }

    /// Step 3: the proxy Pod, owned by the Lease.
    pub async fn create_proxy(
        &self,
        workload: &Workload,
        container: &Container,
        original_replicas: i32,
        agent_image: &str,
        ordinal: Option<u32>,
        carried_labels: std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.kube.client.clone(), &self.kube.namespace);
        let lease = leases
            .get(&self.lease_name)
            .await
            .map_err(|err| self.kube.explain(err, "read the session lease"))?;
        let owner = crate::k8s::objects::owner_reference(&lease);
        // The token first, owned by the Lease like the pod (garbage
        // collection removes both with it).
        let secret = proxy::token_secret(&self.proxy_name, &self.id, &self.token, owner.clone());
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.kube.client.clone(), &self.kube.namespace);
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|err| {
                self.kube.explain(
                    err,
                    format!(
                        "create the session's token Secret {}/{}",
                        self.kube.namespace, self.proxy_name
                    ),
                )
            })?;
        let pod = proxy::pod(&proxy::ProxySpec {
            mode: self.mode,
            name: &self.proxy_name,
            session: &self.id,
            workload,
            container,
            original_replicas,
            agent_image,
            owner,
            ordinal,
            carried_labels,
        })?;
        let pods: Api<Pod> = Api::namespaced(self.kube.client.clone(), &self.kube.namespace);
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|err| {
                self.kube.explain(
                    err,
                    format!(
                        "create proxy pod {}/{}",
                        self.kube.namespace, self.proxy_name
                    ),
                )
            })?;
        self.crash.reached(Step::ProxyCreated);
        Ok(())
    }

    /// Step 4: waits until the proxy Pod runs and is Ready (a watch, not a poll).
    pub async fn wait_proxy_running(&self, timeout: Duration) -> anyhow::Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.kube.client.clone(), &self.kube.namespace);
        let what = format!("proxy pod {}/{}", self.kube.namespace, self.proxy_name);
        let hint = format!(
            "see `kubectl -n {} describe pod {}`",
            self.kube.namespace, self.proxy_name
        );
        let pod = wait::until(pods, &self.proxy_name, timeout, &format!("{what} did not start ({hint})"), |pod| {
            let Some(pod) = pod else {
                return Check::Fail(anyhow::anyhow!("{what} disappeared"));
            };
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            // Ready, not only Running: until the proxy is a ready endpoint,
            // kube-proxy keeps sending Service traffic to the terminating
            // original pods (its fallback when no endpoint is ready).
            let ready = crate::k8s::objects::pod_ready(pod);
            if phase == Some("Running") && ready {
                return Check::Done(pod.clone());
            }
            if phase == Some("Running") {
                return Check::Wait("running, not Ready yet".into());
            }
            match waiting_reason(pod) {
                Some(reason) if reason.contains("ImagePull") || reason.contains("ErrImage") => {
                    Check::Fail(anyhow::anyhow!(
                        "{what} cannot pull its image ({reason}); pass --agent-image with an image the cluster can pull"
                    ))
                }
                Some(reason) => Check::Wait(format!("container waiting: {reason}")),
                None => Check::Wait(format!("phase {}", phase.unwrap_or("unknown"))),
            }
        })
        .await?;
        self.crash.reached(Step::ProxyRunning);
        Ok(pod)
    }

    /// Renews the Lease once. `Ok(Err(reason))` when the session is lost.
    pub async fn renew(&self) -> anyhow::Result<Result<(), String>> {
        let leases: Api<Lease> = Api::namespaced(self.kube.client.clone(), &self.kube.namespace);
        let name = &self.lease_name;
        let what = format!("lease {}/{name}", self.kube.namespace);
        let updated = guarded::update(&self.kube, &leases, name, &what, |lease| {
            let Some(lease) = lease else {
                return Ok(Decision::Keep(Err(format!("its Lease {what} was deleted"))));
            };
            let owner = lease
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SESSION_LABEL));
            if owner != Some(&self.id) {
                return Ok(Decision::Keep(Err(format!(
                    "its Lease {what} now belongs to another session"
                ))));
            }
            let now = MicroTime(Timestamp::now());
            Ok(Decision::Write(
                json!({ "spec": { "renewTime": now } }),
                Ok(()),
            ))
        })
        .await?;
        Ok(updated.value)
    }

    /// Steps 8 to 10: restore, delete the proxy, release the Lease.
    pub async fn end(&self) -> anyhow::Result<Outcome> {
        let target = self.target();
        if self
            .redirected_webhooks
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            for what in restore::restore_webhooks(&self.kube, &target).await? {
                eprintln!("kdev: {what}: its CA is back");
            }
        }
        let outcome = match self.mode {
            Mode::Swap => restore::restore_workload(&self.kube, &target).await?,
            Mode::Run => Outcome::RunEnded,
        };
        self.crash.reached(Step::Restored);
        let pods: Api<Pod> = Api::namespaced(self.kube.client.clone(), &self.kube.namespace);
        match pods
            .delete(
                &self.proxy_name,
                &kube::api::DeleteParams::default().grace_period(1),
            )
            .await
        {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                return Err(self.kube.explain(
                    err,
                    format!(
                        "delete proxy pod {}/{}",
                        self.kube.namespace, self.proxy_name
                    ),
                ));
            }
        }
        self.crash.reached(Step::ProxyDeleted);
        restore::remove_session_objects(&self.kube, &target).await?;
        self.crash.reached(Step::Released);
        Ok(outcome)
    }
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|s| s.state.as_ref()?.waiting.as_ref()?.reason.clone())
}

/// Finds the container to swap: the named one, else the workload's only
/// container, else the one `kubectl.kubernetes.io/default-container` names.
pub fn choose_container(workload: &Workload, name: Option<&str>) -> anyhow::Result<Container> {
    let spec = workload
        .template
        .spec
        .as_ref()
        .with_context(|| format!("{} has no pod template", workload.reference))?;
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let target = &workload.reference;
    let wanted = match name {
        Some(name) => name.to_owned(),
        None if spec.containers.len() == 1 => spec.containers[0].name.clone(),
        None => {
            let default = workload
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
                .cloned();
            default.ok_or_else(|| {
                crate::error::usage(format!(
                    "{target} has several containers ({}); choose one with -c",
                    names.join(", ")
                ))
            })?
        }
    };
    spec.containers
        .iter()
        .find(|c| c.name == wanted)
        .cloned()
        .ok_or_else(|| {
            crate::error::usage(format!(
                "{target} has no container {wanted:?} (it has: {})",
                names.join(", ")
            ))
        })
}
