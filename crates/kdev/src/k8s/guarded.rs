//! The one guarded read-modify-write: read an object, decide, write a merge
//! patch under kdev's field manager that carries the `resourceVersion` that
//! was read, and on a 409 read again and decide again. A concurrent change
//! is never overwritten: the decision is always made on what the write will
//! replace.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backoff;
use super::client::{Kube, is_conflict, is_not_found};

/// How many times a write that lost a race is tried again.
const ATTEMPTS: usize = 8;

/// What the caller decided after seeing the object (`None`: it does not exist).
pub enum Decision<T> {
    /// Write this merge patch (its `metadata.resourceVersion` is set to the
    /// one that was read), then return the value.
    Write(serde_json::Value, T),
    /// Write nothing; return the value.
    Keep(T),
}

/// The outcome of [`update`]: the decided value and the object as it now is
/// (as written, or as read when nothing was written).
pub struct Updated<K, T> {
    pub value: T,
    pub object: Option<K>,
}

/// Reads `name`, lets `decide` choose, writes guarded; retries on conflict.
/// `what` names the object in errors, e.g. "deployment team/web".
pub async fn update<K, T>(
    kube: &Kube,
    api: &Api<K>,
    name: &str,
    what: &str,
    decide: impl FnMut(Option<&K>) -> anyhow::Result<Decision<T>>,
) -> anyhow::Result<Updated<K, T>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    update_from(kube, api, name, what, None, decide).await
}

/// [`update`], deciding first on `known` (the object as a list just read
/// it) instead of reading it again: one request less per object when many
/// are changed. The write still carries `known`'s resourceVersion, so a
/// change since the list is a conflict, decided again on a fresh read.
pub async fn update_from<K, T>(
    kube: &Kube,
    api: &Api<K>,
    name: &str,
    what: &str,
    mut known: Option<K>,
    mut decide: impl FnMut(Option<&K>) -> anyhow::Result<Decision<T>>,
) -> anyhow::Result<Updated<K, T>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut delays = backoff::conflict_delays();
    // Recorded in managedFields under kdev's name, so GitOps tools can be
    // told to ignore what kdev owns (replicas while asleep or swapped).
    let params = PatchParams {
        field_manager: Some(kdev_contract::keys::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    for _ in 0..ATTEMPTS {
        let current = match known.take() {
            Some(object) => Some(object),
            None => api
                .get_opt(name)
                .await
                .map_err(|err| kube.explain(err, format!("read {what}")))?,
        };
        let (mut patch, value) = match decide(current.as_ref())? {
            Decision::Keep(value) => {
                return Ok(Updated {
                    value,
                    object: current,
                });
            }
            Decision::Write(patch, value) => (patch, value),
        };
        let Some(current) = current else {
            anyhow::bail!("failed to update {what}: it does not exist");
        };
        patch["metadata"]["resourceVersion"] = current.meta().resource_version.clone().into();
        let written = api.patch(name, &params, &Patch::Merge(&patch)).await;
        match written {
            Ok(written) => {
                return Ok(Updated {
                    value,
                    object: Some(written),
                });
            }
            // Changed (409) or deleted (404) since the read: decide again on
            // what is there now.
            Err(err) if is_conflict(&err) || is_not_found(&err) => {
                if let Some(delay) = delays.next() {
                    tokio::time::sleep(delay).await;
                }
            }
            Err(err) => return Err(kube.explain(err, format!("update {what}"))),
        }
    }
    anyhow::bail!(
        "failed to update {what}: it kept changing under kdev ({ATTEMPTS} conflicts); run the command again"
    )
}
