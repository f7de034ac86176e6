//! The one way kdev waits for an object to reach a state: a watch of that
//! one object (kube-runtime's `watch_object`, on the shared back-off), never
//! a polling loop. A wait that times out says what it last saw and the last
//! error it met, so a missing permission is not reported as a bare timeout.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt as _;
use kube::runtime::utils::StreamBackoff;
use kube::runtime::watcher::watch_object;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::backoff;

/// What a check made of the object as last seen (`None`: it does not exist).
pub enum Check<T> {
    /// The wait is over.
    Done(T),
    /// The wait can never succeed.
    Fail(anyhow::Error),
    /// Not yet; the text says what was seen, for a timeout's message.
    Wait(String),
}

/// Watches `name` until `check` says done or fail, or `timeout` passes.
/// `what` completes "… did not …", e.g. "proxy pod team/web-kdev-1 did not start".
pub async fn until<K, T>(
    api: Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(Option<&K>) -> Check<T>,
) -> anyhow::Result<T>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    let mut events = StreamBackoff::new(watch_object(api, name), backoff::watcher()).boxed();
    let mut seen = "nothing yet".to_owned();
    let mut last_error: Option<String> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep_until(deadline) => {
                let error = last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "{what} within {}s (last seen: {seen}{error})",
                    timeout.as_secs()
                );
            }
        };
        match event {
            Some(Ok(object)) => match check(object.as_ref()) {
                Check::Done(value) => return Ok(value),
                Check::Fail(err) => return Err(err),
                Check::Wait(why) => seen = why,
            },
            Some(Err(err)) => {
                tracing::debug!(error = %err, "{what}: watch failed; retrying");
                last_error = Some(err.to_string());
            }
            None => anyhow::bail!("{what}: the watch ended"),
        }
    }
}
