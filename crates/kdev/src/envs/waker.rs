//! Wake on request. While an environment sleeps, each sleeping Deployment or
//! StatefulSet that a Service selects has a waker Pod: kdev's agent image,
//! carrying the workload's pod template labels (so its Services route to
//! it) and its container ports, running `kdev __waker`.
//!
//! # Expected flow
//! 1. `place` (after a sleep): delete the namespace's old wakers, make sure
//!    the `kdev-waker` ServiceAccount and its RoleBinding to
//!    `kdev-env-waker` exist, create one waker per sleeping workload behind
//!    a Service.
//! 2. `serve` (in the waker): the first connection on any port wakes the
//!    environment through [`super::act`] with the starter's rights (the
//!    scale subresource). Every connection is held (its first bytes kept)
//!    until a watch of the workload's pods shows one Ready, then handed to
//!    that pod, bytes replayed.
//! 3. Once a pod is Ready the waker steps aside: its readiness fails (so
//!    the Service stops sending it connections), it forwards whatever
//!    still arrives for a few seconds, waits for the connections it
//!    carries to end and exits 0. The next sleep replaces it.
//!
//! # Guarantees
//! - A held connection never hangs: after `--hold` it gets an HTTP 503
//!   saying why (when it spoke HTTP) or is closed.
//! - The waker cannot change anything but workload sizes: its Role is the
//!   starter's plus reading pods; no Secrets, no patches of workloads.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, ExecAction, Pod, PodSpec, PodTemplateSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kdev_contract::envs::{
    self as contract, ROLE_WAKER, WAKER_CLUSTER_ROLE, WAKER_SERVICE_ACCOUNT,
};
use kdev_contract::keys::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use kdev_contract::session::ROLE_LABEL;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};

use super::act::{self, Direction, Selection};
use super::workload::{Kind, Ref};
use crate::k8s::{self, Kube};

/// The label selector of every waker Pod.
pub fn waker_selector() -> String {
    format!("{ROLE_LABEL}={ROLE_WAKER}")
}

/// Where a waker answers readiness (its exec probe asks `kdev __agent-ready`).
pub const HEALTH: &str = "127.0.0.1:7356";

/// What `place` did in one namespace.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placed {
    pub namespace: String,
    /// `workload ← services` per waker placed.
    pub wakers: Vec<String>,
    /// Why none could be placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Placed {
    pub fn line(&self) -> String {
        match (&self.error, self.wakers.is_empty()) {
            (Some(error), _) => format!(
                "namespace {}: wake on request is off: {error}",
                self.namespace
            ),
            (None, true) => format!(
                "namespace {}: no Service selects a sleeping workload; nothing wakes it on request",
                self.namespace
            ),
            (None, false) => format!(
                "namespace {}: a request wakes it ({})",
                self.namespace,
                self.wakers.join("; ")
            ),
        }
    }
}

/// A sleeping workload's pod template, as a waker needs it.
struct Sleeper {
    reference: Ref,
    selector: String,
    template: PodTemplateSpec,
}

fn sleeper(
    kind: Kind,
    meta: &ObjectMeta,
    size: i32,
    spec: Option<(
        &PodTemplateSpec,
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    )>,
) -> Option<Sleeper> {
    let asleep = size == 0
        && meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(contract::SLEEP_ANNOTATION));
    let (template, selector) = spec?;
    asleep.then_some(())?;
    Some(Sleeper {
        reference: Ref {
            kind,
            name: meta.name.clone().unwrap_or_default(),
        },
        selector: k8s::objects::selector_query(selector)?,
        template: template.clone(),
    })
}

/// Whether a Service's selector selects pods labelled `labels` (a Service
/// without a selector selects nothing).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Replaces the namespace's wakers by one per sleeping workload that a
/// Service selects. An error says why wake on request is off there.
pub async fn place(kube: &Kube, namespace: &str, image: &str, wake: &[Ref]) -> Placed {
    let mut placed = Placed {
        namespace: namespace.to_owned(),
        wakers: Vec::new(),
        error: None,
    };
    if let Err(err) = place_in(kube, namespace, image, wake, &mut placed.wakers).await {
        placed.error = Some(format!("{err:#}"));
    }
    placed
}

async fn place_in(
    kube: &Kube,
    namespace: &str,
    image: &str,
    wake: &[Ref],
    wakers: &mut Vec<String>,
) -> anyhow::Result<()> {
    let client = kube.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let all = ListParams::default();
    let (services, deployments, statefulsets) = tokio::try_join!(
        services.list(&all),
        deployments.list(&all),
        statefulsets.list(&all)
    )
    .map_err(|err| kube.explain(err, format!("list Services and workloads in {namespace}")))?;
    let sleepers = deployments
        .items
        .iter()
        .filter_map(|d| {
            let spec = d.spec.as_ref();
            sleeper(
                Kind::Deployment,
                &d.metadata,
                spec.and_then(|s| s.replicas).unwrap_or(1),
                spec.map(|s| (&s.template, &s.selector)),
            )
        })
        .chain(statefulsets.items.iter().filter_map(|s| {
            let spec = s.spec.as_ref();
            sleeper(
                Kind::StatefulSet,
                &s.metadata,
                spec.and_then(|s| s.replicas).unwrap_or(1),
                spec.map(|s| (&s.template, &s.selector)),
            )
        }));
    let mut planned = Vec::new();
    for sleeper in sleepers {
        let labels = sleeper
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let behind: Vec<String> = services
            .items
            .iter()
            .filter(|svc| {
                let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
                selects(&selector.unwrap_or_default(), &labels)
            })
            .map(|svc| svc.name_any())
            .collect();
        if !behind.is_empty() {
            planned.push((sleeper, behind));
        }
    }
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&waker_selector()),
    )
    .await
    .map_err(|err| kube.explain(err, format!("delete the old wakers in {namespace}")))?;
    if planned.is_empty() {
        return Ok(());
    }
    ensure_account(kube, namespace).await?;
    // The waker renews the activity Lease (it may patch that one only).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    match leases
        .create(
            &PostParams::default(),
            &k8s::activity::lease("kdev: wake on request placed"),
        )
        .await
    {
        Ok(_) => {}
        Err(err) if k8s::is_conflict(&err) => {}
        Err(err) => {
            return Err(kube.explain(err, format!("create the activity Lease in {namespace}")));
        }
    }
    for (sleeper, behind) in planned {
        let pod = pod(&sleeper, image, wake)?;
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|err| {
                kube.explain(
                    err,
                    format!("create a waker for {} in {namespace}", sleeper.reference),
                )
            })?;
        wakers.push(format!(
            "{} ← service {}",
            sleeper.reference,
            behind.join(", ")
        ));
    }
    Ok(())
}

/// The waker's ServiceAccount and its RoleBinding to `kdev-env-waker`,
/// created once per namespace and left there (they grant nothing to
/// anyone else).
async fn ensure_account(kube: &Kube, namespace: &str) -> anyhow::Result<()> {
    let labels = Some(BTreeMap::from([(
        MANAGED_BY_LABEL.to_owned(),
        MANAGED_BY_VALUE.to_owned(),
    )]));
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(WAKER_SERVICE_ACCOUNT.into()),
            labels: labels.clone(),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(WAKER_SERVICE_ACCOUNT.into()),
            labels,
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: WAKER_CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: WAKER_SERVICE_ACCOUNT.into(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(kube.client.clone(), namespace);
    for created in [
        accounts
            .create(&PostParams::default(), &account)
            .await
            .map(drop),
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .map(drop),
    ] {
        match created {
            Ok(()) => {}
            Err(err) if k8s::is_conflict(&err) => {}
            Err(err) => {
                return Err(kube.explain(
                    err,
                    format!(
                        "create ServiceAccount {WAKER_SERVICE_ACCOUNT} and its RoleBinding to ClusterRole {WAKER_CLUSTER_ROLE} in {namespace} (is deploy/env-waker.yaml applied?)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The waker Pod for one sleeping workload.
fn pod(sleeper: &Sleeper, image: &str, wake: &[Ref]) -> anyhow::Result<Pod> {
    let template = sleeper.template.spec.as_ref();
    let mut labels = sleeper
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.remove("pod-template-hash");
    labels.remove("controller-revision-hash");
    labels.remove("statefulset.kubernetes.io/pod-name");
    labels.insert(ROLE_LABEL.into(), ROLE_WAKER.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut ports = k8s::objects::tcp_ports(template.iter().flat_map(|t| t.containers.iter()));
    ports.sort_by_key(|p| p.container_port);
    ports.dedup_by_key(|p| p.container_port);
    if ports.is_empty() {
        anyhow::bail!(
            "{} declares no TCP container port, so a waker cannot know where its Services send connections; declare them in its pod template",
            sleeper.reference
        );
    }
    let mut args = vec![
        "__waker".to_owned(),
        "--workload".into(),
        sleeper.reference.to_string(),
        "--selector".into(),
        sleeper.selector.clone(),
    ];
    for port in &ports {
        args.extend(["--port".into(), port.container_port.to_string()]);
    }
    for target in wake {
        args.extend(["--wake".into(), target.to_string()]);
    }
    let kind = match sleeper.reference.kind {
        Kind::StatefulSet => "sts",
        _ => "deploy",
    };
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("kdev-waker-{kind}-{}-", sleeper.reference.name)),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(WAKER_SERVICE_ACCOUNT.into()),
            automount_service_account_token: Some(true),
            enable_service_links: Some(false),
            restart_policy: Some("OnFailure".into()),
            termination_grace_period_seconds: Some(2),
            node_selector: template.and_then(|t| t.node_selector.clone()),
            tolerations: template.and_then(|t| t.tolerations.clone()),
            image_pull_secrets: template.and_then(|t| t.image_pull_secrets.clone()),
            security_context: Some(k8s::objects::unprivileged_pod(&ports, false)),
            containers: vec![Container {
                name: "kdev-waker".into(),
                image: Some(image.to_owned()),
                args: Some(args),
                ports: Some(ports),
                readiness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec![
                            "/kdev".into(),
                            "__agent-ready".into(),
                            "--health".into(),
                            HEALTH.into(),
                        ]),
                    }),
                    period_seconds: Some(1),
                    failure_threshold: Some(1),
                    ..Probe::default()
                }),
                resources: Some(k8s::objects::small_resources("64Mi")),
                security_context: Some(k8s::objects::unprivileged_container()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// What a waker serves (from `kdev __waker`'s flags).
#[derive(Clone, Debug)]
pub struct Serve {
    /// The sleeping workload, for messages.
    pub workload: String,
    /// Its pods (a label selector query).
    pub selector: String,
    pub ports: Vec<u16>,
    /// What a request wakes (empty: every Deployment and StatefulSet of
    /// the namespace).
    pub wake: Vec<Ref>,
    /// How long a connection is held before it gets a clear failure.
    pub hold: Duration,
    /// How long it keeps forwarding after its readiness fails.
    pub drain: Duration,
    pub health: SocketAddr,
}

/// A pod of the workload, seen Ready by the watch at `seen`.
#[derive(Clone, Copy, Debug)]
struct ReadyPod {
    ip: IpAddr,
    seen: Instant,
}

struct Shared {
    kube: Kube,
    config: Serve,
    woken: AtomicBool,
    wake_error: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    measured: AtomicBool,
}

/// Runs a waker until it has stepped aside.
pub async fn serve(kube: Kube, config: Serve) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let health = TcpListener::bind(config.health)
        .await
        .with_context(|| format!("failed to listen on {} for readiness", config.health))?;
    let mut listeners = Vec::new();
    for port in &config.ports {
        let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], *port)))
            .await
            .with_context(|| format!("failed to listen on port {port}"))?;
        listeners.push((*port, listener));
    }
    let (ready_tx, ready_rx) = watch::channel::<Option<ReadyPod>>(None);
    let watching = tokio::spawn(watch_ready(kube.clone(), config.selector.clone(), ready_tx));
    let shared = Arc::new(Shared {
        kube,
        config: config.clone(),
        woken: AtomicBool::new(false),
        wake_error: Mutex::new(None),
        in_flight: AtomicUsize::new(0),
        measured: AtomicBool::new(false),
    });
    let answering = tokio::spawn(async move {
        while let Ok((socket, _)) = health.accept().await {
            drop(socket);
        }
    });
    for (port, listener) in listeners {
        let shared = shared.clone();
        let ready = ready_rx.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                tokio::spawn(hold(shared.clone(), socket, peer, port, ready.clone()));
            }
        });
    }
    tracing::info!(workload = %config.workload, ports = ?config.ports, "waker ready");
    let mut ready = ready_rx.clone();
    let pod = ready
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|pod| *pod)
        .ok_or_else(|| anyhow::anyhow!("the watch of {}'s pods ended", config.workload))?;
    tracing::info!(ip = %pod.ip, "a pod of {} is Ready; stepping aside", config.workload);
    answering.abort();
    tokio::time::sleep(config.drain).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watching.abort();
    tracing::info!("waker done");
    Ok(ExitCode::SUCCESS)
}

/// Publishes the first pod of the workload seen Ready (not a kdev pod).
async fn watch_ready(kube: Kube, selector: String, tx: watch::Sender<Option<ReadyPod>>) {
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let config = watcher::Config::default().labels(&format!("{selector},!{ROLE_LABEL}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "watching the workload's pods");
                continue;
            }
        };
        if let Some(ip) = ready_ip(&pod)
            && tx.borrow().is_none()
        {
            tx.send_replace(Some(ReadyPod {
                ip,
                seen: Instant::now(),
            }));
        }
    }
}

/// The pod's IP when it is Ready and not going away.
fn ready_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    crate::k8s::objects::pod_ready(pod).then_some(())?;
    let status = pod.status.as_ref()?;
    status.pod_ip.as_deref()?.parse().ok()
}

/// Counts a connection while it lives.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Most of a request kept while it waits.
const HELD_BYTES: usize = 1 << 20;

async fn hold(
    shared: Arc<Shared>,
    mut socket: TcpStream,
    peer: SocketAddr,
    port: u16,
    mut ready: watch::Receiver<Option<ReadyPod>>,
) {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _counted = InFlight(shared.clone());
    let accepted = Instant::now();
    if !shared.woken.swap(true, Ordering::SeqCst) {
        tokio::spawn(wake(shared.clone(), peer, port));
    }
    let mut held = Vec::new();
    let mut sent_all = false;
    let mut chunk = vec![0u8; 16 * 1024];
    let give_up = tokio::time::sleep(shared.config.hold);
    tokio::pin!(give_up);
    let pod = loop {
        tokio::select! {
            found = async { ready.wait_for(Option::is_some).await.ok().and_then(|pod| *pod) } => {
                match found {
                    Some(pod) => break pod,
                    None => {
                        refuse(&shared, &mut socket, &held, "the watch of its pods ended").await;
                        return;
                    }
                }
            },
            // A client that has sent all it will (a half-close, as `nc`
            // does after its input) still waits for the answer.
            read = socket.read(&mut chunk), if !sent_all && held.len() < HELD_BYTES => match read {
                Ok(0) => sent_all = true,
                Err(_) => return,
                Ok(n) => held.extend_from_slice(&chunk[..n]),
            },
            () = &mut give_up => {
                let why = format!(
                    "no pod of {} was Ready within {}s",
                    shared.config.workload,
                    shared.config.hold.as_secs()
                );
                refuse(&shared, &mut socket, &held, &why).await;
                return;
            }
        }
    };
    let upstream = SocketAddr::new(pod.ip, port);
    let connected =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await;
    let mut upstream_socket = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(err)) => {
            refuse(
                &shared,
                &mut socket,
                &held,
                &format!("failed to reach {upstream}: {err}"),
            )
            .await;
            return;
        }
        Err(_) => {
            refuse(
                &shared,
                &mut socket,
                &held,
                &format!("{upstream} did not answer within 5s"),
            )
            .await;
            return;
        }
    };
    let _ = upstream_socket.set_nodelay(true);
    if upstream_socket.write_all(&held).await.is_err() {
        return;
    }
    let (mut client_in, mut client_out) = socket.into_split();
    let (mut pod_in, mut pod_out) = upstream_socket.into_split();
    let up = async {
        if !sent_all {
            let _ = tokio::io::copy(&mut client_in, &mut pod_out).await;
        }
        let _ = pod_out.shutdown().await;
    };
    let down = async {
        let mut first = vec![0u8; 16 * 1024];
        if let Ok(n @ 1..) = pod_in.read(&mut first).await {
            if client_out.write_all(&first[..n]).await.is_err() {
                return;
            }
            if !shared.measured.swap(true, Ordering::SeqCst) {
                let now = Instant::now();
                tracing::info!(
                    after_ready_ms = now.duration_since(pod.seen).as_millis() as u64,
                    after_request_ms = now.duration_since(accepted).as_millis() as u64,
                    "first byte to a held client"
                );
            }
            let _ = tokio::io::copy(&mut pod_in, &mut client_out).await;
        }
        let _ = client_out.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Wakes the environment, once, for the first connection.
async fn wake(shared: Arc<Shared>, peer: SocketAddr, port: u16) {
    let kube = &shared.kube;
    let namespace = kube.namespace.clone();
    let workloads = if shared.config.wake.is_empty() {
        match super::workload::in_namespace(kube, &namespace).await {
            Ok(all) => all
                .iter()
                .filter(|w| w.kind != Kind::CronJob)
                .map(|w| w.reference())
                .collect(),
            Err(err) => {
                *shared.wake_error.lock().await = Some(format!("{err:#}"));
                return;
            }
        }
    } else {
        shared.config.wake.clone()
    };
    let config = act::Config {
        direction: Direction::Wake,
        selection: Selection {
            namespaces: vec![namespace],
            workloads,
            ..Selection::default()
        },
        dry_run: false,
        reason: Some(format!("a request from {} to port {port}", peer.ip())),
        json: false,
        actor: Some("kdev-waker".into()),
        grace: None,
        waker: None,
    };
    match act::run(kube, &config).await {
        Ok(report) => {
            let mut failed = Vec::new();
            for change in &report.changes {
                tracing::info!("{}", change.line());
                if matches!(change.done, act::Done::Failed { .. }) {
                    failed.push(change.line());
                }
            }
            if !failed.is_empty() {
                *shared.wake_error.lock().await = Some(failed.join("; "));
            }
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "failed to wake the environment");
            *shared.wake_error.lock().await = Some(format!("{err:#}"));
        }
    }
}

/// Whether held bytes begin an HTTP/1 request.
fn speaks_http(held: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"PATCH ",
        b"OPTIONS ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| held.starts_with(m))
}

/// The clear failure a held connection gets: an HTTP 503 saying why, or a
/// close for other protocols.
async fn refuse(shared: &Shared, socket: &mut TcpStream, held: &[u8], why: &str) {
    let namespace = &shared.kube.namespace;
    let wake_error = shared.wake_error.lock().await.clone();
    let mut message = format!("kdev: environment {namespace} is waking, but {why}");
    if let Some(error) = wake_error {
        message.push_str(&format!("; the wake failed: {error}"));
    }
    message.push_str(&format!(
        ". Try again in a moment; `kdev envs -n {namespace}` shows its state.\n"
    ));
    tracing::warn!("{}", message.trim_end());
    if speaks_http(held) {
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{message}",
            message.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
    }
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_selects_by_every_key_of_its_selector() {
        let labels: BTreeMap<String, String> = [
            ("app".into(), "web".into()),
            ("tier".into(), "front".into()),
        ]
        .into();
        let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(selects(&sel(&[("app", "web")]), &labels));
        assert!(!selects(&sel(&[("app", "web"), ("tier", "back")]), &labels));
        assert!(!selects(&sel(&[]), &labels), "no selector selects nothing");
    }

    #[test]
    fn http_is_recognised_by_its_method() {
        assert!(speaks_http(b"GET / HTTP/1.1\r\n"));
        assert!(!speaks_http(b"\x16\x03\x01"), "TLS is not answered in HTTP");
        assert!(!speaks_http(b""));
    }

    #[test]
    fn a_waker_stands_for_the_workload_and_runs_unprivileged() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "web", "annotations": { contract::SLEEP_ANNOTATION: "{}" } },
            "spec": {
                "replicas": 0,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web", "pod-template-hash": "abc" } },
                    "spec": { "containers": [{ "name": "app", "ports": [
                        { "name": "http", "containerPort": 80 },
                        { "containerPort": 53, "protocol": "UDP" }
                    ] }] }
                }
            }
        }))
        .expect("valid");
        let spec = deployment.spec.as_ref().expect("spec");
        let found = sleeper(
            Kind::Deployment,
            &deployment.metadata,
            0,
            Some((&spec.template, &spec.selector)),
        )
        .expect("asleep");
        let pod = pod(&found, "kdev:test", &[]).expect("a pod");
        let labels = pod.metadata.labels.clone().expect("labels");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[ROLE_LABEL], ROLE_WAKER);
        assert!(!labels.contains_key("pod-template-hash"));
        let spec = pod.spec.expect("spec");
        let container = &spec.containers[0];
        let ports: Vec<_> = container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("http".into()), 80)]);
        let args = container.args.clone().expect("args");
        assert_eq!(
            args,
            [
                "__waker",
                "--workload",
                "deployment/web",
                "--selector",
                "app=web",
                "--port",
                "80"
            ]
        );
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some(WAKER_SERVICE_ACCOUNT)
        );
        let security = container.security_context.clone().expect("security");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.expect("caps").drop.expect("drop"),
            ["ALL"]
        );
        // Awake (replicas 1) or never put to sleep by kdev: no waker.
        assert!(
            sleeper(
                Kind::Deployment,
                &deployment.metadata,
                1,
                Some((
                    &deployment.spec.as_ref().unwrap().template,
                    &deployment.spec.as_ref().unwrap().selector
                )),
            )
            .is_none()
        );
    }
}
