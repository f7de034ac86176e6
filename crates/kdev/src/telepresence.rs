//! Cleaning up after telepresence 1: telepolice's job, done right.
//!
//! A telepresence 1 proxy (any pod labelled `telepresence`) older than a
//! minimum age is probed: its port 9055 answers HTTP while the laptop's
//! tunnel is up. One that answers no `HEAD` on any of several tries is dead.
//! Its original Deployment is found ([`matching`]), given back its replicas
//! from the best evidence there is, and only then is the proxy deleted: a
//! crash in between leaves a dead proxy, never a Deployment at 0 with no
//! pointer to it.

pub mod matching;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{AttachParams, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::matching::{Candidate, Match};
use crate::kubeclient::{Kube, is_conflict, is_not_found};

/// The port telepresence's proxy answers HTTP on while its tunnel is up.
pub const PROBE_PORT: u16 = 9055;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Proxies younger than this are left alone (they may still be starting).
    pub min_age: Duration,
    pub dry_run: bool,
    /// Probes before a proxy is judged dead.
    pub tries: u32,
}

/// What the sweep did with one proxy, as a line for a person.
#[derive(Clone, Debug)]
pub struct Report {
    pub namespace: String,
    pub pod: String,
    pub line: String,
    pub restored: bool,
}

/// Finds and handles every telepresence proxy in `namespace` (all when `None`).
pub async fn sweep(
    kube: &Kube,
    namespace: Option<&str>,
    options: Options,
) -> anyhow::Result<Vec<Report>> {
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    let proxies = pods
        .list(&ListParams::default().labels(matching::LABEL))
        .await
        .map_err(|err| kube.explain(err, "list telepresence proxy pods"))?;
    let mut reports = Vec::new();
    let mut handled_deployments: Vec<(String, String)> = Vec::new();
    for pod in proxies.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let report = |line: String, restored: bool| Report {
            namespace: namespace.clone(),
            pod: name.clone(),
            line,
            restored,
        };
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Timestamp::now().duration_since(t.0).as_secs())
            .unwrap_or(0);
        if age < options.min_age.as_secs() as i64 {
            reports.push(report(
                format!("younger than {}s, left alone", options.min_age.as_secs()),
                false,
            ));
            continue;
        }
        let proxy_deployment = owning_deployment(kube, &namespace, &pod).await?;
        if let Some(d) = &proxy_deployment {
            let key = (namespace.clone(), d.name.clone());
            if handled_deployments.contains(&key) {
                continue;
            }
            handled_deployments.push(key);
        }
        let namespaced: Api<Pod> = Api::namespaced(kube.client.clone(), &namespace);
        if probe(&namespaced, &name, options.tries).await {
            reports.push(report(
                "alive (port 9055 answers), left alone".into(),
                false,
            ));
            continue;
        }
        let candidates = candidates(kube, &namespace).await?;
        let (version, found) = match &proxy_deployment {
            Some(proxy) => (
                "0.105 proxy Deployment",
                matching::match_proxy_deployment(proxy, &candidates),
            ),
            None => (
                "0.106+ bare proxy Pod",
                matching::match_bare_pod(
                    &name,
                    &pod.metadata.labels.clone().unwrap_or_default(),
                    &candidates,
                ),
            ),
        };
        let original = match found {
            Match::One(original) => original,
            Match::None => {
                reports.push(report(
                    format!("dead ({version}), but no Deployment at 0 replicas matches it: left alone; restore its original by hand, then delete it"),
                    false,
                ));
                continue;
            }
            Match::Ambiguous(names) => {
                reports.push(report(
                    format!("dead ({version}), but {} Deployments match ({}): left alone; restore the right one by hand", names.len(), names.join(", ")),
                    false,
                ));
                continue;
            }
        };
        let Some(candidate) = candidates.iter().find(|c| c.name == original) else {
            continue;
        };
        let evidence = matching::evidence(candidate);
        let proxy_kind = if proxy_deployment.is_some() {
            "proxy Deployment"
        } else {
            "proxy Pod"
        };
        if options.dry_run {
            reports.push(report(
                format!("dead ({version}): would scale deployment/{original} to {} and delete the {proxy_kind}", evidence.describe()),
                false,
            ));
            continue;
        }
        restore(kube, &namespace, &original, evidence.replicas()).await?;
        match &proxy_deployment {
            Some(proxy) => delete_deployment(kube, &namespace, &proxy.name).await?,
            None => match namespaced.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => {
                    return Err(kube.explain(
                        err,
                        format!("delete telepresence proxy pod {namespace}/{name}"),
                    ));
                }
            },
        }
        reports.push(report(
            format!(
                "dead ({version}): scaled deployment/{original} to {} and deleted the {proxy_kind}",
                evidence.describe()
            ),
            true,
        ));
    }
    Ok(reports)
}

/// True when port 9055 answers a `HEAD` on any of `tries` attempts, one a
/// second: through a port-forward, or by exec when no port-forward can be
/// opened.
async fn probe(pods: &Api<Pod>, name: &str, tries: u32) -> bool {
    for attempt in 0..tries.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let answered = match pods.portforward(name, &[PROBE_PORT]).await {
            Ok(mut forwarder) => {
                let answered = match forwarder.take_stream(PROBE_PORT) {
                    Some(stream) => head_answers(stream).await,
                    None => false,
                };
                forwarder.abort();
                answered
            }
            Err(err) => {
                tracing::debug!(pod = name, error = %err, "port-forward failed; probing by exec");
                exec_probe(pods, name).await
            }
        };
        if answered {
            return true;
        }
    }
    false
}

async fn head_answers<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
) -> bool {
    let exchange = async {
        stream
            .write_all(b"HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"HTTP/")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), exchange).await,
        Ok(Some(true))
    )
}

async fn exec_probe(pods: &Api<Pod>, name: &str) -> bool {
    let command = [
        "sh",
        "-c",
        "printf 'HEAD / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 localhost 9055",
    ];
    let run = async {
        let params = AttachParams::default().stdout(true).stderr(false);
        let mut process = pods.exec(name, command, &params).await.ok()?;
        let mut output = String::new();
        process.stdout()?.read_to_string(&mut output).await.ok()?;
        Some(output.starts_with("HTTP/"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), run).await,
        Ok(Some(true))
    )
}

/// For a 0.105 proxy: Pod → ReplicaSet → the proxy Deployment (labelled `telepresence`).
async fn owning_deployment(
    kube: &Kube,
    namespace: &str,
    pod: &Pod,
) -> anyhow::Result<Option<Candidate>> {
    let Some(rs_ref) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "ReplicaSet")
    else {
        return Ok(None);
    };
    let replicasets: Api<ReplicaSet> = Api::namespaced(kube.client.clone(), namespace);
    let Some(rs) = replicasets
        .get_opt(&rs_ref.name)
        .await
        .map_err(|err| kube.explain(err, format!("read replicaset {namespace}/{}", rs_ref.name)))?
    else {
        return Ok(None);
    };
    let Some(d_ref) = rs
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Deployment")
    else {
        return Ok(None);
    };
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    let deployment = deployments
        .get_opt(&d_ref.name)
        .await
        .map_err(|err| kube.explain(err, format!("read deployment {namespace}/{}", d_ref.name)))?;
    Ok(deployment
        .filter(|d| {
            d.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(matching::LABEL))
        })
        .map(|d| candidate_of(&d)))
}

async fn candidates(kube: &Kube, namespace: &str) -> anyhow::Result<Vec<Candidate>> {
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    let list = deployments
        .list(&ListParams::default())
        .await
        .map_err(|err| kube.explain(err, format!("list deployments in {namespace}")))?;
    Ok(list.items.iter().map(candidate_of).collect())
}

fn candidate_of(deployment: &Deployment) -> Candidate {
    Candidate {
        name: deployment.metadata.name.clone().unwrap_or_default(),
        replicas: deployment.spec.as_ref().and_then(|s| s.replicas),
        template_labels: crate::swap::session::template_labels(deployment),
        last_applied: deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubectl.kubernetes.io/last-applied-configuration"))
            .cloned(),
    }
}

/// Scales the original back, only while it is still at 0 (guarded by
/// `resourceVersion`, re-read on conflict).
async fn restore(kube: &Kube, namespace: &str, name: &str, replicas: i32) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    for _ in 0..5 {
        let current = api
            .get(name)
            .await
            .map_err(|err| kube.explain(err, format!("read deployment {namespace}/{name}")))?;
        if current.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
            return Ok(());
        }
        let patch = json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "spec": { "replicas": replicas },
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if is_conflict(&err) => continue,
            Err(err) => {
                return Err(kube.explain(err, format!("scale deployment {namespace}/{name}")));
            }
        }
    }
    anyhow::bail!("failed to scale deployment {namespace}/{name}: it kept changing (5 conflicts)")
}

async fn delete_deployment(kube: &Kube, namespace: &str, name: &str) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        Err(err) => Err(kube.explain(
            err,
            format!("delete telepresence proxy deployment {namespace}/{name}"),
        )),
    }
}
