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
//! cluster dialer (the session's agent). DNS goes to the cluster's DNS
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
pub mod ports;
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

/// How often the command's listening ports are looked at: a restarted
/// command serves the laptop this long after it listens at the latest (two
/// small /proc reads each time; 200 ms made the dev loop's
/// restart-to-serving 0.27 s instead of 0.06 s).
const PORT_POLL: Duration = Duration::from_millis(25);

/// Serves the sandbox's connections, DNS and listening ports until aborted.
pub fn serve(sandbox: Sandbox, network: Network) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tokio::join!(
            capture_loop(&sandbox.capture, &network),
            dns::serve(
                sandbox.dns.clone(),
                network.cluster.clone(),
                network.learned.clone()
            ),
            mirror_ports(&sandbox.inside),
        );
    })
}

async fn capture_loop(capture: &tokio::net::TcpListener, network: &Network) {
    loop {
        let (inside, _) = match capture.accept().await {
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
        let network = network.clone();
        tokio::spawn(async move {
            let via = network.via(to);
            let outside: std::io::Result<Box<dyn Io>> =
                if to == SocketAddrV4::new(VIEW_NAMESERVER, 53) {
                    network.cluster.dns().await
                } else {
                    match via {
                        Via::Laptop => tokio::net::TcpStream::connect(to)
                            .await
                            .map(|stream| Box::new(stream) as Box<dyn Io>),
                        Via::Cluster => network.cluster.dial(to).await,
                    }
                };
            match outside {
                Ok(outside) => splice(inside, outside).await,
                Err(err) => {
                    tracing::debug!(%to, ?via, error = %err, "a connection of the command failed");
                    // A reset, the nearest a completed handshake gets to
                    // "refused".
                    let _ = socket2::SockRef::from(&inside).set_linger(Some(Duration::ZERO));
                }
            }
        });
    }
}

async fn splice(
    mut a: impl AsyncRead + AsyncWrite + Unpin,
    mut b: impl AsyncRead + AsyncWrite + Unpin,
) {
    if let Err(err) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(error = %err, "a connection of the command ended with an error");
    }
}

/// Listens at the laptop's 127.0.0.1 on each port the command listens on
/// inside, while it does.
async fn mirror_ports(inside: &sandbox::Inside) {
    let mut mirrors: BTreeMap<u16, tokio::task::AbortHandle> = BTreeMap::new();
    let mut warned = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let ports = inside.listening_ports();
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
                                    Ok(inside) => splice(outside, inside).await,
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
        tokio::time::sleep(PORT_POLL).await;
    }
}
