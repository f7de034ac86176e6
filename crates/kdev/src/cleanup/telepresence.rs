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

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{AttachParams, DeleteParams, ListParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource as _};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::matching::{Candidate, Match};
use crate::k8s::guarded::{self, Decision};
use crate::k8s::{Kube, is_not_found};

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

/// What the sweep concluded about one proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Younger than the minimum age: not probed.
    TooYoung,
    /// Port 9055 answered: its laptop is connected.
    Alive,
    /// Dead, and its original was (or with `--dry-run`, would be) restored.
    Restored,
    WouldRestore,
    /// Dead, but the original cannot be found or its count cannot be read:
    /// left for a person (`kdev sweep` then exits 3).
    LeftForHuman,
}

/// What the sweep did with one proxy: for a person (`line`) and for scripts
/// (every field, with `-o json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub namespace: String,
    pub pod: String,
    pub verdict: Verdict,
    /// Which telepresence shape the proxy has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<&'static str>,
    /// The original Deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// What tied the proxy to the original.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<String>,
    /// The count restored (or that would be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Where that count came from, or why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_from: Option<String>,
    pub line: String,
}

impl Report {
    fn new(pod: &Pod, verdict: Verdict, line: String) -> Self {
        Report {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            verdict,
            shape: None,
            original: None,
            matched_by: None,
            replicas: None,
            count_from: None,
            line,
        }
    }
}

/// How many proxies are probed at once.
const PROBES_AT_ONCE: usize = 8;

/// Finds and handles every telepresence proxy in `namespace` (all when
/// `None`). Proxies are probed concurrently (at most [`PROBES_AT_ONCE`]);
/// dead ones are then handled one after another, each restore guarded.
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
    let mut to_probe = Vec::new();
    let mut handled_deployments: Vec<(String, String)> = Vec::new();
    for pod in proxies.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Timestamp::now().duration_since(t.0).as_secs())
            .unwrap_or(0);
        if age < options.min_age.as_secs() as i64 {
            let line = format!("younger than {}s, left alone", options.min_age.as_secs());
            reports.push(Report::new(&pod, Verdict::TooYoung, line));
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
        to_probe.push((pod, proxy_deployment));
    }

    let probed: Vec<(Pod, Option<Candidate>, bool)> = futures::stream::iter(to_probe)
        .map(|(pod, proxy_deployment)| async move {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let namespaced: Api<Pod> = Api::namespaced(kube.client.clone(), &namespace);
            let alive = probe(&namespaced, &name, options.tries).await;
            (pod, proxy_deployment, alive)
        })
        .buffer_unordered(PROBES_AT_ONCE)
        .collect()
        .await;

    for (pod, proxy_deployment, alive) in probed {
        if alive {
            let line = "alive (port 9055 answers), left alone".to_owned();
            reports.push(Report::new(&pod, Verdict::Alive, line));
            continue;
        }
        reports.push(handle_dead(kube, &pod, proxy_deployment.as_ref(), options).await?);
    }
    Ok(reports)
}

/// A dead proxy: find its original, restore it from the best evidence, and
/// only then delete the proxy.
async fn handle_dead(
    kube: &Kube,
    pod: &Pod,
    proxy_deployment: Option<&Candidate>,
    options: Options,
) -> anyhow::Result<Report> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let candidates = candidates(kube, &namespace).await?;
    let (shape, found) = match proxy_deployment {
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
    let left = |line: String| {
        let mut report = Report::new(pod, Verdict::LeftForHuman, line);
        report.shape = Some(shape);
        report
    };
    let (original, link) = match found {
        Match::One(original, link) => (original, link),
        Match::None => {
            return Ok(left(format!(
                "dead ({shape}), but no Deployment at 0 replicas matches it: left alone; restore its original by hand, then delete it"
            )));
        }
        Match::Ambiguous(names) => {
            return Ok(left(format!(
                "dead ({shape}), but {} Deployments match ({}): left alone; restore the right one by hand",
                names.len(),
                names.join(", ")
            )));
        }
    };
    // match_* only return names taken from `candidates`.
    let Some(candidate) = candidates.iter().find(|c| c.name == original) else {
        return Ok(left(format!(
            "dead ({shape}), but deployment/{original} vanished"
        )));
    };
    let evidence = matching::evidence(candidate);
    let mut report = left(String::new());
    report.original = Some(original.clone());
    report.matched_by = Some(link.describe());
    report.count_from = Some(evidence.describe());
    let Some(replicas) = evidence.replicas() else {
        report.line = format!(
            "dead ({shape}), matched deployment/{original} by {}, but its replica count is {}: left alone; scale it by hand, then delete the proxy",
            link.describe(),
            evidence.describe()
        );
        return Ok(report);
    };
    report.replicas = Some(replicas);
    let proxy_kind = if proxy_deployment.is_some() {
        "proxy Deployment"
    } else {
        "proxy Pod"
    };
    if options.dry_run {
        report.verdict = Verdict::WouldRestore;
        report.line = format!(
            "dead ({shape}), matched deployment/{original} by {}: would scale it to {} and delete the {proxy_kind}",
            link.describe(),
            evidence.describe()
        );
        return Ok(report);
    }
    restore(kube, &namespace, &original, replicas).await?;
    match proxy_deployment {
        Some(proxy) => delete_deployment(kube, &namespace, &proxy.name).await?,
        None => {
            let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &namespace);
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => {
                    return Err(kube.explain(
                        err,
                        format!("delete telepresence proxy pod {namespace}/{name}"),
                    ));
                }
            }
        }
    }
    report.verdict = Verdict::Restored;
    report.line = format!(
        "dead ({shape}), matched deployment/{original} by {}: scaled it to {} and deleted the {proxy_kind}",
        link.describe(),
        evidence.describe()
    );
    Ok(report)
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
        template_labels: crate::k8s::objects::template_labels(deployment),
        last_applied: deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubectl.kubernetes.io/last-applied-configuration"))
            .cloned(),
    }
}

/// Scales the original back, only while it is still at 0 (guarded by
/// `resourceVersion`, decided again on conflict).
async fn restore(kube: &Kube, namespace: &str, name: &str, replicas: i32) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    guarded::update(
        kube,
        &api,
        name,
        &format!("deployment {namespace}/{name}"),
        |current| {
            Ok(match current {
                Some(d) if d.spec.as_ref().and_then(|s| s.replicas) == Some(0) => {
                    Decision::Write(json!({ "spec": { "replicas": replicas } }), ())
                }
                _ => Decision::Keep(()),
            })
        },
    )
    .await?;
    Ok(())
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

/// Records a restore as an Event on the restored Deployment (the controller
/// does; a CLI sweep prints instead).
pub async fn record_restore(kube: &Kube, recorder: &Recorder, report: &Report, original: &str) {
    let api: Api<Deployment> = Api::namespaced(kube.client.clone(), &report.namespace);
    let Ok(deployment) = api.get(original).await else {
        return;
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "TelepresenceRestored".into(),
        note: Some(format!(
            "telepresence proxy {}: {}",
            report.pod, report.line
        )),
        action: "Restore".into(),
        secondary: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(report.namespace.clone()),
            name: Some(report.pod.clone()),
            ..ObjectReference::default()
        }),
    };
    if let Err(err) = recorder.publish(&event, &deployment.object_ref(&())).await {
        tracing::warn!(error = %err, "failed to record the telepresence restore as an Event");
    }
}
