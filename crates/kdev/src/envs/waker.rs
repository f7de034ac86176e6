//! Wake on request: the waker process, `kdev __waker`, in a Pod that
//! [`super::place`] put behind a sleeping workload's Services.
//!
//! # Expected flow
//! 1. `serve`: the first connection on any port asks for a wake; the wake
//!    runs through [`super::act`] with the starter's rights (the scale
//!    subresource), apart from any connection. A wake that fails is tried
//!    again with kdev's back-off while connections wait, and at once when
//!    a new one arrives after it gave up.
//! 2. Every connection is held (its first bytes kept, within bounds) until
//!    its hand-over target exists: the workload sized above 0 (watched) and
//!    one of its pods Ready and not terminating. The pods a sleep leaves
//!    behind (a StatefulSet shrinks one at a time; a preStop delays the
//!    end) are never a target while the size is 0. The connection is then
//!    handed to that pod, bytes replayed.
//! 3. Once there is a target the waker steps aside: its readiness fails (so
//!    the Service stops sending it connections), it forwards whatever
//!    still arrives for a few seconds, waits for the connections it
//!    carries to end and exits 0. The next sleep replaces it.
//!
//! # Guarantees
//! - A held connection never hangs: after `--hold` it gets an HTTP 503
//!   (when it spoke HTTP) or is closed.
//! - Memory is bounded: at most [`MAX_HELD`] connections and
//!   [`MAX_HELD_BYTES`] of their bytes are held; beyond that a connection
//!   is answered 503 (or closed) at once and counted.
//! - Anonymous clients learn nothing of the cluster: their answers are
//!   generic; why a wake failed goes to the waker's log and an Event.
//! - The waker acts with its own ServiceAccount, whose Role
//!   ([`super::place`]) allows only scaling and reading workloads and pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kdev_contract::session::ROLE_LABEL;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, watch};

use super::act::{self, Direction, Selection};
use super::workload::{Kind, Ref, Rollout, Scalable};
use crate::k8s::{Kube, backoff};

/// What a waker serves (from `kdev __waker`'s flags).
#[derive(Clone, Debug)]
pub struct Serve {
    /// The sleeping workload it stands for.
    pub workload: Ref,
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
    /// The namespace's sleep patch rules when it was put to sleep: what
    /// they slept (an operator's database) wakes with the workloads.
    pub patches: Option<String>,
}

/// Most connections held at once.
pub const MAX_HELD: usize = 256;
/// Most bytes of one connection kept while it waits.
const HELD_BYTES: usize = 1 << 20;
/// What one read of a held connection takes.
const CHUNK: usize = 16 * 1024;
/// Most bytes of all held connections together (the pod has 64 MiB).
pub const MAX_HELD_BYTES: usize = 8 << 20;

/// A held connection's bytes, as read: chunks of exactly what arrived, so
/// memory is what was held and never a doubled buffer's spare room.
#[derive(Default)]
struct Held(Vec<Vec<u8>>);

impl Held {
    /// Its first bytes (enough to tell HTTP).
    fn start(&self) -> Vec<u8> {
        self.0.iter().flatten().take(16).copied().collect()
    }
}

/// A pod of the workload, seen Ready by the watch at `seen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReadyPod {
    ip: IpAddr,
    seen: Instant,
}

/// What the watches know of where connections may go.
#[derive(Debug, Default)]
struct Handover {
    /// The workload's size is above 0 (woken, by this waker or anyone).
    sized: bool,
    /// Its pods that are Ready and not terminating, by name.
    pods: BTreeMap<String, ReadyPod>,
}

impl Handover {
    /// Where held connections go now: a Ready pod, once the workload is
    /// sized above 0; none while it is at 0, whatever pods are left.
    fn target(&self) -> Option<ReadyPod> {
        if !self.sized {
            return None;
        }
        self.pods.values().min_by_key(|pod| pod.seen).copied()
    }
}

struct Shared {
    kube: Kube,
    config: Serve,
    /// A connection wants the environment awake.
    wanted: Notify,
    /// Who asked first, for the wake's reason ("a request from IP to port N").
    asked_by: Mutex<Option<String>>,
    /// The wake was written and held (no failure left).
    woken: AtomicBool,
    in_flight: AtomicUsize,
    held_bytes: AtomicUsize,
    refused: AtomicUsize,
    measured: AtomicBool,
    /// The last wake failure told to the log and an Event (each new one once).
    told: Mutex<Option<String>>,
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
    let (target_tx, target_rx) = watch::channel::<Option<ReadyPod>>(None);
    let handover = Arc::new(Mutex::new(Handover::default()));
    let shared = Arc::new(Shared {
        kube: kube.clone(),
        config: config.clone(),
        wanted: Notify::new(),
        asked_by: Mutex::new(None),
        woken: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        held_bytes: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        measured: AtomicBool::new(false),
        told: Mutex::new(None),
    });
    let watching = [
        tokio::spawn(watch_pods(
            kube.clone(),
            config.selector.clone(),
            handover.clone(),
            target_tx.clone(),
        )),
        tokio::spawn(watch_size(
            kube.clone(),
            config.workload.clone(),
            handover,
            target_tx,
        )),
        tokio::spawn(wake_when_wanted(shared.clone())),
    ];
    let answering = tokio::spawn(async move {
        while let Ok((socket, _)) = health.accept().await {
            drop(socket);
        }
    });
    for (port, listener) in listeners {
        let shared = shared.clone();
        let target = target_rx.clone();
        tokio::spawn(async move {
            let mut delays = backoff::delays();
            loop {
                match listener.accept().await {
                    Ok((socket, peer)) => {
                        delays = backoff::delays();
                        let _ = socket.set_nodelay(true);
                        tokio::spawn(hold(shared.clone(), socket, peer, port, target.clone()));
                    }
                    Err(err) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        let delay = delays.next().unwrap_or(backoff::MAX);
                        tracing::warn!(error = %err, ?delay, port, "failed to accept a connection");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
    }
    tracing::info!(workload = %config.workload, ports = ?config.ports, "waker ready");
    let mut target = target_rx.clone();
    let pod = target
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|pod| *pod)
        .ok_or_else(|| anyhow::anyhow!("the watches of {} ended", config.workload))?;
    tracing::info!(ip = %pod.ip, "{} is sized and a pod of it is Ready; stepping aside", config.workload);
    answering.abort();
    tokio::time::sleep(config.drain).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in watching {
        task.abort();
    }
    let refused = shared.refused.load(Ordering::SeqCst);
    tracing::info!(refused, "waker done");
    Ok(ExitCode::SUCCESS)
}

/// Keeps the Ready, not terminating pods of the workload (not kdev's own).
async fn watch_pods(
    kube: Kube,
    selector: String,
    handover: Arc<Mutex<Handover>>,
    target: watch::Sender<Option<ReadyPod>>,
) {
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let config = watcher::Config::default().labels(&format!("{selector},!{ROLE_LABEL}"));
    let mut events = watcher(api, config).backoff(backoff::watcher()).boxed();
    while let Some(event) = events.next().await {
        let mut handover = handover.lock().await;
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                let name = pod.name_any();
                match ready_ip(&pod) {
                    Some(ip) => {
                        let seen = handover
                            .pods
                            .get(&name)
                            .map_or_else(Instant::now, |p| p.seen);
                        handover.pods.insert(name, ReadyPod { ip, seen });
                    }
                    None => {
                        handover.pods.remove(&name);
                    }
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                handover.pods.remove(&pod.name_any());
            }
            Ok(watcher::Event::Init) => handover.pods.clear(),
            Ok(watcher::Event::InitDone) => {}
            Err(err) => {
                tracing::warn!(error = %err, "watching the workload's pods");
                continue;
            }
        }
        target.send_replace(handover.target());
    }
}

/// Keeps whether the workload's size is above 0.
async fn watch_size(
    kube: Kube,
    workload: Ref,
    handover: Arc<Mutex<Handover>>,
    target: watch::Sender<Option<ReadyPod>>,
) {
    fn sizes<K: Scalable + Send + Sync + 'static>(
        kube: &Kube,
        name: &str,
    ) -> futures::stream::BoxStream<'static, Result<i32, watcher::Error>> {
        let api: Api<K> = Api::namespaced(kube.client.clone(), &kube.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        watcher(api, config)
            .backoff(backoff::watcher())
            .applied_objects()
            .map(|object| object.map(|o| o.size()))
            .boxed()
    }
    let sizes = match workload.kind {
        Kind::Deployment => sizes::<Deployment>(&kube, &workload.name),
        Kind::StatefulSet => sizes::<StatefulSet>(&kube, &workload.name),
        Kind::Rollout => sizes::<Rollout>(&kube, &workload.name),
        // A waker never stands for what has no pods to route to.
        Kind::CronJob | Kind::Job | Kind::ScaledObject | Kind::DaemonSet => {
            futures::stream::pending().boxed()
        }
    };
    let mut sizes = sizes;
    while let Some(size) = sizes.next().await {
        match size {
            Ok(size) => {
                let mut handover = handover.lock().await;
                handover.sized = size > 0;
                target.send_replace(handover.target());
            }
            Err(err) => tracing::warn!(error = %err, "watching {workload}"),
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

/// Counts a connection while it lives, and the bytes it holds.
struct InFlight {
    shared: Arc<Shared>,
    bytes: usize,
}

impl InFlight {
    /// Takes room for `more` held bytes among all connections', or says
    /// there is none.
    fn reserve(&mut self, more: usize) -> bool {
        let total = self.shared.held_bytes.fetch_add(more, Ordering::SeqCst) + more;
        if total > MAX_HELD_BYTES {
            self.shared.held_bytes.fetch_sub(more, Ordering::SeqCst);
            return false;
        }
        self.bytes += more;
        true
    }

    /// The held bytes went on to the pod.
    fn release(&mut self) {
        self.shared
            .held_bytes
            .fetch_sub(std::mem::take(&mut self.bytes), Ordering::SeqCst);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.release();
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn hold(
    shared: Arc<Shared>,
    mut socket: TcpStream,
    peer: SocketAddr,
    port: u16,
    mut target: watch::Receiver<Option<ReadyPod>>,
) {
    let accepted = Instant::now();
    if shared.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_HELD {
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        overflow(
            &shared,
            &mut socket,
            &Held::default(),
            "too many connections held",
        )
        .await;
        return;
    }
    let mut counted = InFlight {
        shared: shared.clone(),
        bytes: 0,
    };
    if !shared.woken.load(Ordering::SeqCst) {
        tracing::debug!(%peer, port, "a connection asks for a wake");
        shared
            .asked_by
            .lock()
            .await
            .get_or_insert_with(|| format!("a request from {} to port {port}", peer.ip()));
        shared.wanted.notify_one();
    }
    let mut held = Held::default();
    let mut sent_all = false;
    let mut chunk = vec![0u8; CHUNK];
    let give_up = tokio::time::sleep(shared.config.hold);
    tokio::pin!(give_up);
    let pod = loop {
        tokio::select! {
            found = async { target.wait_for(Option::is_some).await.ok().and_then(|pod| *pod) } => {
                match found {
                    Some(pod) => break pod,
                    None => {
                        refuse(&shared, &mut socket, &held, "the watches of the workload ended").await;
                        return;
                    }
                }
            },
            // A client that has sent all it will (a half-close, as `nc`
            // does after its input) still waits for the answer.
            // One connection keeps at most HELD_BYTES; past that it is
            // not read until it is handed over (TCP holds the rest).
            read = socket.read(&mut chunk[..(HELD_BYTES - counted.bytes).min(CHUNK)]),
                if !sent_all && counted.bytes < HELD_BYTES => match read {
                Ok(0) => sent_all = true,
                Err(_) => return,
                Ok(n) => {
                    if !counted.reserve(n) {
                        drop(counted);
                        overflow(&shared, &mut socket, &held, "the held requests fill the waker's memory").await;
                        return;
                    }
                    held.0.push(chunk[..n].to_vec());
                }
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
    for part in &held.0 {
        if upstream_socket.write_all(part).await.is_err() {
            return;
        }
    }
    drop(held);
    counted.release();
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

/// Wakes the environment when a connection asks, apart from any
/// connection (one that goes away does not cut the wake off). A failure is
/// tried again with kdev's back-off while connections wait, and at once
/// when a new one asks after they all went.
async fn wake_when_wanted(shared: Arc<Shared>) {
    shared.wanted.notified().await;
    let mut delays = backoff::delays();
    loop {
        match wake_once(&shared).await {
            Ok(()) => {
                shared.woken.store(true, Ordering::SeqCst);
                tracing::info!("the environment was woken");
                return;
            }
            Err(why) => tell_failure(&shared, why).await,
        }
        let delay = delays.next().unwrap_or(backoff::MAX);
        tokio::select! {
            () = tokio::time::sleep(delay) => {
                if shared.in_flight.load(Ordering::SeqCst) == 0 {
                    // Nobody waits: try again when somebody asks.
                    shared.wanted.notified().await;
                    delays = backoff::delays();
                }
            }
            () = shared.wanted.notified() => {}
        }
    }
}

/// One wake of what a request wakes; the failure's text when it failed.
async fn wake_once(shared: &Shared) -> Result<(), String> {
    let kube = &shared.kube;
    let namespace = kube.namespace.clone();
    let workloads = if shared.config.wake.is_empty() {
        super::workload::in_namespace(kube, &namespace)
            .await
            .map_err(|err| format!("{err:#}"))?
            .iter()
            .filter(|w| w.kind.has_replicas())
            .map(|w| w.reference())
            .collect()
    } else {
        shared.config.wake.clone()
    };
    let config = act::Config {
        direction: Direction::Wake,
        selection: Selection {
            namespaces: vec![namespace.clone()],
            workloads,
            ..Selection::default()
        },
        dry_run: false,
        reason: shared.asked_by.lock().await.clone(),
        json: false,
        actor: Some("kdev-waker".into()),
        grace: None,
        waker: None,
    };
    let report = act::run(kube, &config)
        .await
        .map_err(|err| format!("{err:#}"))?;
    let mut failed = Vec::new();
    for change in &report.changes {
        tracing::info!("{}", change.line());
        if matches!(change.done, act::Done::Failed { .. }) {
            failed.push(change.line());
        }
    }
    if let Some(rules) = &shared.config.patches {
        let annotations = std::collections::BTreeMap::from([(
            kdev_contract::envs::patch::SLEEP_PATCHES_ANNOTATION.to_owned(),
            rules.clone(),
        )]);
        let by = match &config.reason {
            Some(reason) => format!("kdev-waker: {reason}"),
            None => "kdev-waker".to_owned(),
        };
        let moving = super::patched::Move {
            kube,
            namespace: &namespace,
            ns_annotations: &annotations,
            excluded_ns: None,
            sleep: false,
            dry_run: false,
            by: &by,
            now: super::now(),
        };
        for moved in moving.run(&mut super::patched::Kinds::default()).await {
            let change = act::patched_change(&namespace, false, moved);
            tracing::info!("{}", change.line());
            if matches!(change.done, act::Done::Failed { .. }) {
                failed.push(change.line());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Says why a wake failed, once per distinct reason: in the log, and in a
/// Warning Event on the workload (what `kdev envs --history` and
/// `kubectl get events` show). Never to the clients.
async fn tell_failure(shared: &Shared, why: String) {
    let mut told = shared.told.lock().await;
    tracing::warn!(error = %why, "failed to wake the environment; trying again");
    if told.as_deref() == Some(why.as_str()) {
        return;
    }
    let recorder = Recorder::new(
        shared.kube.client.clone(),
        Reporter {
            controller: "kdev".into(),
            instance: Some("kdev-waker".into()),
        },
    );
    let (api_version, kind) = shared.config.workload.kind.type_meta();
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        kind: Some(kind),
        api_version: Some(api_version),
        name: Some(shared.config.workload.name.clone()),
        namespace: Some(shared.kube.namespace.clone()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "WakeFailed".into(),
        note: Some(why.chars().take(1000).collect()),
        action: "Wake".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &reference).await {
        tracing::warn!(error = %err, "failed to record the failed wake as an Event");
    }
    *told = Some(why);
}

/// A connection beyond the waker's bounds: answered at once and counted.
async fn overflow(shared: &Shared, socket: &mut TcpStream, held: &Held, why: &str) {
    let refused = shared.refused.fetch_add(1, Ordering::SeqCst) + 1;
    if refused == 1 || refused.is_multiple_of(100) {
        tracing::warn!(refused, "refused a connection: {why}");
    }
    answer(socket, held).await;
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

/// The clear failure a held connection gets: why goes to the log; the
/// client gets a generic answer.
async fn refuse(shared: &Shared, socket: &mut TcpStream, held: &Held, why: &str) {
    tracing::warn!(
        namespace = %shared.kube.namespace,
        "a held connection gets no answer from {}: {why}",
        shared.config.workload
    );
    answer(socket, held).await;
}

/// The message anonymous clients get: nothing of the cluster's insides.
pub const WAKING: &str =
    "This service is waking up from sleep and is not ready yet. Try again in a moment.\n";

/// An HTTP 503 saying the service is waking (when the client spoke HTTP),
/// or a close for other protocols.
async fn answer(socket: &mut TcpStream, held: &Held) {
    if speaks_http(&held.start()) {
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{WAKING}",
            WAKING.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
    }
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_recognised_by_its_method() {
        assert!(speaks_http(b"GET / HTTP/1.1\r\n"));
        assert!(!speaks_http(b"\x16\x03\x01"), "TLS is not answered in HTTP");
        assert!(!speaks_http(b""));
    }

    fn pod(ip: &str, age: u64) -> ReadyPod {
        ReadyPod {
            ip: ip.parse().expect("an address"),
            seen: Instant::now() - Duration::from_secs(age),
        }
    }

    /// Regression: the waker stepped aside for the first Ready pod it saw,
    /// one a StatefulSet had not yet shrunk away, so nothing woke the
    /// environment and the Service lost its waker.
    #[test]
    fn no_target_while_the_workload_is_sized_zero_whatever_pods_are_left() {
        let mut handover = Handover::default();
        handover.pods.insert("db-0".into(), pod("10.0.0.5", 30));
        assert_eq!(handover.target(), None, "a pod left over from the sleep");
        handover.sized = true;
        assert_eq!(handover.target(), Some(handover.pods["db-0"]));
        handover.pods.insert("db-1".into(), pod("10.0.0.6", 1));
        assert_eq!(
            handover.target().map(|p| p.ip),
            Some("10.0.0.5".parse().expect("ip"))
        );
        handover.pods.clear();
        assert_eq!(handover.target(), None, "sized, but nothing Ready yet");
    }
}
