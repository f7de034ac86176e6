//! Wake on request: the waker process, `kdev __waker`, in a Pod that
//! [`super::place`] put behind a sleeping workload's Services.
//!
//! # Expected flow
//! 1. `serve`: the first connection on any port wakes the environment
//!    through [`super::act`] with the starter's rights (the scale
//!    subresource). Every connection is held (its first bytes kept) until a
//!    watch of the workload's pods shows one Ready, then handed to that
//!    pod, bytes replayed.
//! 2. Once a pod is Ready the waker steps aside: its readiness fails (so
//!    the Service stops sending it connections), it forwards whatever
//!    still arrives for a few seconds, waits for the connections it
//!    carries to end and exits 0. The next sleep replaces it.
//!
//! # Guarantees
//! - A held connection never hangs: after `--hold` it gets an HTTP 503
//!   saying why (when it spoke HTTP) or is closed.
//! - The waker acts with its own ServiceAccount, whose Role
//!   ([`super::place`]) allows only scaling and reading pods.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kdev_contract::session::ROLE_LABEL;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};

use super::act::{self, Direction, Selection};
use super::workload::{Kind, Ref};
use crate::k8s::Kube;

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

    #[test]
    fn http_is_recognised_by_its_method() {
        assert!(speaks_http(b"GET / HTTP/1.1\r\n"));
        assert!(!speaks_http(b"\x16\x03\x01"), "TLS is not answered in HTTP");
        assert!(!speaks_http(b""));
    }
}
