//! The network view: a local command sees the cluster's network as a pod
//! does, and nothing else on the machine changes.
//!
//! # Expected flow
//! [`sandbox::Sandbox::start`] starts the command in a user, network and
//! mount namespace of its own ([`helper`]): its `resolv.conf` is a pod's, and
//! the kernel's NAT inside sends every TCP connection it makes to one
//! capture socket and every DNS datagram to one DNS socket, both of which
//! kdev holds. [`serve`] then decides per connection, by its original
//! destination ([`route::Routes`]): the laptop's loopback and the internet
//! are dialled from the laptop as before; the cluster's ranges through the
//! cluster dialer (the session's agent). Where the kernel allows, each SYN
//! waits for that dial ([`queue`]), so the command's `connect()` succeeds,
//! is refused, or hears nothing, as the far end answered. DNS goes to the cluster's DNS
//! ([`dns`]). Ports the command listens on inside are listened on at the
//! laptop's 127.0.0.1 too and passed in ([`ports`]), so a browser, a
//! debugger and the swap's inbound traffic reach it as before.
//!
//! # Guarantees
//! - Only the command and its children see the view: no route, resolver,
//!   hosts file or daemon of the machine changes, and no root is needed
//!   where the OS allows unprivileged user namespaces.
//! - Nothing outlives the command: the namespaces go with their last
//!   process, the helper dies with kdev (`PR_SET_PDEATHSIG`) and the command
//!   with the helper.
//!
//! # Assumptions
//! - Linux, with unprivileged user namespaces, `ip`, and `iptables` with
//!   the nf_tables backend; the kernel's NAT for nf_tables loaded.
//! - IPv4: IPv6 connections inside have no route and fail at once, so
//!   clients fall back to IPv4.

pub mod dns;
pub mod fdpass;
pub mod helper;
pub mod netlink;
pub mod ports;
pub mod queue;
pub mod resolv;
pub mod route;
pub mod sandbox;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

pub use route::{Cidr, Routes, Via};
pub use sandbox::{Sandbox, View};

/// A byte stream to somewhere.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Opens connections in the cluster (the session's agent does).
pub trait Dial: Send + Sync + 'static {
    /// A TCP connection to `to`, made in the cluster.
    fn dial(&self, to: SocketAddrV4) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>>;
    /// A TCP connection to the pod's own nameserver, for DNS over TCP.
    fn dns(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>>;
}

/// The `nameserver` of the view's `resolv.conf`: the address NodeLocal
/// DNSCache uses, so it reads as a local cache. Every DNS datagram goes to
/// kdev whatever its address; TCP to this one goes to the pod's nameserver.
pub const VIEW_NAMESERVER: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);

/// How the view reaches the cluster.
#[derive(Clone)]
pub struct Network {
    pub routes: Routes,
    pub cluster: Arc<dyn Dial>,
    /// Private addresses the cluster's DNS answered with: they go to the
    /// cluster too (a headless Service's pods, a private zone the cluster
    /// sees). Public ones stay on the laptop, as the rest of the internet.
    pub learned: Arc<std::sync::RwLock<std::collections::BTreeSet<Ipv4Addr>>>,
}

impl Network {
    pub fn new(routes: Routes, cluster: Arc<dyn Dial>) -> Self {
        Self {
            routes,
            cluster,
            learned: Arc::default(),
        }
    }

    fn via(&self, to: SocketAddrV4) -> Via {
        let learned = self
            .learned
            .read()
            .map(|learned| learned.contains(to.ip()))
            .unwrap_or(false);
        if learned {
            Via::Cluster
        } else {
            self.routes.via(to)
        }
    }
}

/// Serves the sandbox's connections, DNS and listening ports until aborted.
pub fn serve(sandbox: Sandbox, network: Network) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let held = Held::default();
        let queue = match sandbox.queue {
            Ok(fd) => match queue::Queue::bind(fd).await {
                Ok(queue) => Some(queue),
                Err(err) => {
                    tracing::debug!(error = %err, "the network view holds no SYNs: binding the queue failed");
                    None
                }
            },
            Err(why) => {
                tracing::debug!(%why, "the network view holds no SYNs");
                None
            }
        };
        let _ = tokio::join!(
            hold_loop(queue, &network, &held),
            capture_loop(&sandbox.capture, &network, &held),
            dns::serve(
                sandbox.dns.clone(),
                network.cluster.clone(),
                network.learned.clone()
            ),
            mirror_ports(&sandbox.inside),
        );
    })
}

/// The longest a SYN waits for its dial (the agent's own dial gives up
/// after 10 s, its tunnel after 10 s more).
const HOLD_LIMIT: Duration = Duration::from_secs(25);

/// Connections dialled for a held SYN, until the capture socket accepts
/// the command's side: keyed by the command's address and the destination.
#[derive(Clone, Default)]
struct Held(Arc<std::sync::Mutex<BTreeMap<(SocketAddrV4, SocketAddrV4), Dialled>>>);

enum Dialled {
    /// Its dial is on: a retransmitted SYN is dropped meanwhile.
    Dialling,
    Open(Box<dyn Io>, std::time::Instant),
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(SocketAddrV4, SocketAddrV4), Dialled>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the dial for `key` begun, unless it already is.
    fn begin(&self, key: (SocketAddrV4, SocketAddrV4)) -> bool {
        let mut held = self.lock();
        // A connection whose handshake never came (the command gave up).
        held.retain(|_, d| !matches!(d, Dialled::Open(_, at) if at.elapsed() > HOLD_LIMIT));
        if held.contains_key(&key) {
            return false;
        }
        held.insert(key, Dialled::Dialling);
        true
    }

    fn take(&self, key: (SocketAddrV4, SocketAddrV4)) -> Option<Box<dyn Io>> {
        let mut held = self.lock();
        match held.remove(&key)? {
            Dialled::Open(io, _) => Some(io),
            dialling @ Dialled::Dialling => {
                held.insert(key, dialling);
                None
            }
        }
    }
}

/// Dials for each SYN the kernel holds, then lets it through, or answers
/// it as the far end did (refused, unreachable, or nothing).
async fn hold_loop(queue: Option<queue::Queue>, network: &Network, held: &Held) {
    let Some(mut queue) = queue else {
        return std::future::pending().await;
    };
    let verdicts = queue.verdicts();
    loop {
        let syns = match queue.next().await {
            Ok(syns) => syns,
            Err(err) => {
                // The rule's --queue-bypass lets SYNs through from now on.
                tracing::debug!(error = %err, "the network view's queue failed");
                return std::future::pending().await;
            }
        };
        for syn in syns {
            let key = (syn.from, syn.to);
            if !held.begin(key) {
                let _ = verdicts.give(syn.id, queue::Verdict::Drop);
                continue;
            }
            let (verdicts, network, held) = (verdicts.clone(), network.clone(), held.clone());
            tokio::spawn(async move {
                let verdict = match tokio::time::timeout(HOLD_LIMIT, open(&network, syn.to)).await {
                    Ok(Ok(io)) => {
                        held.lock()
                            .insert(key, Dialled::Open(io, std::time::Instant::now()));
                        queue::Verdict::Pass
                    }
                    Ok(Err(err)) => {
                        held.lock().remove(&key);
                        tracing::debug!(to = %syn.to, error = %err, "a connection of the command failed");
                        verdict_for(err.kind())
                    }
                    Err(_) => {
                        held.lock().remove(&key);
                        queue::Verdict::Drop
                    }
                };
                if let Err(err) = verdicts.give(syn.id, verdict) {
                    tracing::debug!(error = %err, "a verdict failed");
                    held.lock().remove(&key);
                }
            });
        }
    }
}

/// How the pod's `connect()` would have ended when the dial failed so: a
/// refusal is a reset; a far end that could not be reached or did not
/// answer sends nothing back.
fn verdict_for(kind: std::io::ErrorKind) -> queue::Verdict {
    use std::io::ErrorKind as K;
    match kind {
        K::HostUnreachable | K::NetworkUnreachable | K::TimedOut => queue::Verdict::Drop,
        _ => queue::Verdict::Refuse,
    }
}

/// A connection to `to` from where the view says it goes.
async fn open(network: &Network, to: SocketAddrV4) -> std::io::Result<Box<dyn Io>> {
    if to == SocketAddrV4::new(VIEW_NAMESERVER, 53) {
        return network.cluster.dns().await;
    }
    match network.via(to) {
        Via::Laptop => tokio::net::TcpStream::connect(to)
            .await
            .map(|stream| Box::new(stream) as Box<dyn Io>),
        Via::Cluster => network.cluster.dial(to).await,
    }
}

async fn capture_loop(capture: &tokio::net::TcpListener, network: &Network, held: &Held) {
    loop {
        let (inside, from) = match capture.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::debug!(error = %err, "the network view's capture socket failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let to = match rustix::net::sockopt::ip_original_dst(&inside) {
            Ok(to) => to,
            Err(err) => {
                tracing::debug!(error = %err, "a captured connection has no original destination");
                continue;
            }
        };
        let SocketAddr::V4(from) = from else { continue };
        let dialled = held.take((from, to));
        let network = network.clone();
        tokio::spawn(async move {
            // Dialled while its SYN was held; else (no queue here, or its
            // bypass) now.
            let outside = match dialled {
                Some(io) => Ok(io),
                None => open(&network, to).await,
            };
            match outside {
                Ok(outside) => crate::agent::tunnel::splice(inside, outside).await,
                Err(err) => {
                    tracing::debug!(%to, error = %err, "a connection of the command failed");
                    // A reset, the nearest a completed handshake gets to
                    // "refused".
                    let _ = socket2::SockRef::from(&inside).set_linger(Some(Duration::ZERO));
                }
            }
        });
    }
}

/// Listens at the laptop's 127.0.0.1 on each port the command listens on
/// inside, while it does.
async fn mirror_ports(inside: &sandbox::Inside) {
    let mut mirrors: BTreeMap<u16, tokio::task::AbortHandle> = BTreeMap::new();
    let mut warned = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut listeners = inside.listeners().await;
    loop {
        // A restarted command serves the laptop at most one interval after
        // it listens (25 ms; 200 ms made the dev loop's restart-to-serving
        // 0.27 s instead of 0.06 s). A failed look changes nothing.
        let Ok(ports) = listeners.ports() else {
            tokio::time::sleep(listeners.interval()).await;
            continue;
        };
        mirrors.retain(|port, task| {
            let keep = ports.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in ports {
            if mirrors.contains_key(&port) {
                continue;
            }
            match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(listener) => {
                    let control = inside.clone();
                    let task = tasks.spawn(async move {
                        loop {
                            let Ok((outside, _)) = listener.accept().await else { continue };
                            let control = control.clone();
                            tokio::spawn(async move {
                                let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                                match control.connect_inside(to).await {
                                    Ok(inside) => crate::agent::tunnel::splice(outside, inside).await,
                                    Err(err) => tracing::debug!(port, error = %err, "could not pass a connection in"),
                                }
                            });
                        }
                    });
                    mirrors.insert(port, task);
                }
                Err(err) => {
                    if warned.insert(port) {
                        eprintln!(
                            "kdev: the command listens on port {port}, which another process holds on this machine ({err}): the laptop cannot reach it there"
                        );
                    }
                }
            }
        }
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(listeners.interval()).await;
    }
}
