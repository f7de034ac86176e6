//! `kdev agent`: the process in a swap's proxy Pod.
//!
//! It listens on the swapped container's ports and on the tunnel port
//! ([`AGENT_PORT`]). The CLI reaches the tunnel port through one
//! port-forward and runs a yamux session over it ([`tunnel`], whose client
//! end `kdev swap` uses too). Then:
//!
//! - a connection to a container port becomes an `Inbound` stream to the CLI;
//! - a `Connect` stream from the CLI becomes a connection the agent dials in
//!   the cluster (so the local process reaches cluster Services);
//! - a `Ping` stream is echoed (the CLI's keepalive).
//!
//! The tunnel port listens on the pod's loopback only (a port-forward
//! reaches it; other pods cannot), and a connection becomes the tunnel only
//! after it proves the session's token ([`kdev_contract::tunnel::auth`]).
//! Anything else is closed without a word and changes nothing. A new
//! authenticated connection replaces the previous one: that is how the CLI
//! reconnects after a port-forward drops. Connections arriving while no CLI
//! is connected wait a few seconds for one, then are closed. Readiness is a
//! separate loopback port, checked by `kdev __agent-ready` as an exec probe,
//! so a probe never touches the tunnel.
//!
//! The agent knows nothing of sessions or Leases: if the CLI is gone, the
//! session's Lease expires and the reaper deletes this Pod.
//!
//! [`AGENT_PORT`]: kdev_contract::session::AGENT_PORT

pub mod tunnel;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use kdev_contract::tunnel::{ConnectReply, Failure, Header, auth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use self::tunnel::{Mux, Role};
use crate::error::usage;

/// What the agent serves, resolved from its flags.
pub struct Config {
    /// Where the CLI's tunnel connects (the pod's loopback).
    pub tunnel: SocketAddr,
    /// The session's token; only a connection proving it becomes the tunnel.
    pub token: [u8; auth::TOKEN_LEN],
    /// Where readiness is answered (the pod's loopback).
    pub health: SocketAddr,
    pub ports: Vec<PortBinding>,
    /// Names resolved without DNS.
    pub resolve: BTreeMap<String, IpAddr>,
}

/// One container port and where the agent listens for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBinding {
    pub port: u16,
    pub bind: SocketAddr,
}

pub fn parse_port(text: &str) -> anyhow::Result<PortBinding> {
    let bad = || {
        usage(format!(
            "invalid --port {text:?}: use PORT or PORT=ADDR:BIND, like 8080 or 8080=127.0.0.1:18080"
        ))
    };
    let (port, bind) = match text.split_once('=') {
        Some((port, bind)) => (port, Some(bind)),
        None => (text, None),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let bind = match bind {
        Some(bind) => bind.parse().map_err(|_| bad())?,
        None => SocketAddr::from(([0, 0, 0, 0], port)),
    };
    Ok(PortBinding { port, bind })
}

pub fn parse_resolve(entries: &[String]) -> anyhow::Result<BTreeMap<String, IpAddr>> {
    entries
        .iter()
        .map(|entry| {
            let (name, ip) = entry
                .split_once('=')
                .ok_or_else(|| usage(format!("invalid --resolve {entry:?}: use NAME=IP")))?;
            let ip = ip.parse().map_err(|_| {
                usage(format!(
                    "invalid --resolve {entry:?}: {ip:?} is not an IP address"
                ))
            })?;
            Ok((name.to_owned(), ip))
        })
        .collect()
}

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let Config {
        tunnel: tunnel_addr,
        token,
        health,
        ports,
        resolve,
    } = config;
    let health = TcpListener::bind(health)
        .await
        .with_context(|| format!("failed to listen on {health} for readiness"))?;
    let tunnel = TcpListener::bind(tunnel_addr)
        .await
        .with_context(|| format!("failed to listen on {tunnel_addr} for the tunnel"))?;
    let (current_tx, current_rx) = watch::channel::<Option<Mux>>(None);
    for binding in ports {
        let listener = TcpListener::bind(binding.bind).await.with_context(|| {
            format!(
                "failed to listen on {} for container port {}",
                binding.bind, binding.port
            )
        })?;
        tokio::spawn(serve_port(listener, binding.port, current_rx.clone()));
    }
    tracing::info!(tunnel = %tunnel_addr, "agent ready");
    let resolve = std::sync::Arc::new(resolve);
    let current_tx = std::sync::Arc::new(current_tx);
    tokio::spawn(async move {
        // Readiness: accepting is the answer.
        while let Ok((socket, _)) = health.accept().await {
            drop(socket);
        }
    });
    loop {
        let (socket, peer) = tunnel
            .accept()
            .await
            .context("failed to accept a tunnel connection")?;
        let resolve = resolve.clone();
        let current_tx = current_tx.clone();
        tokio::spawn(async move {
            let Some(socket) = authenticate(socket, &token).await else {
                tracing::warn!(%peer, "a connection to the tunnel port did not prove the session's token; closed");
                return;
            };
            tracing::info!(%peer, "tunnel connected");
            // yamux writes a frame's header and body separately, and flushes
            // once no frame is ready: buffered, a frame leaves in one write,
            // so containerd's port-forward (and the kubelet and API server
            // behind it) move one piece per frame instead of two.
            let socket = tokio::io::BufWriter::with_capacity(tunnel::FRAME_BUFFER, socket);
            let (mux, mut inbound, _driver) = Mux::start(socket, Role::Server);
            current_tx.send_replace(Some(mux));
            while let Some(stream) = inbound.recv().await {
                tokio::spawn(serve_stream(stream, resolve.clone()));
            }
            tracing::info!(%peer, "tunnel closed");
        });
    }
}

/// Reads the auth preamble (within 5 s); the socket if it proves `token`.
async fn authenticate(mut socket: TcpStream, token: &[u8; auth::TOKEN_LEN]) -> Option<TcpStream> {
    let mut preamble = [0u8; auth::LEN];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut preamble)).await;
    if !matches!(read, Ok(Ok(_))) || !auth::verify(&preamble, token) {
        return None;
    }
    let _ = socket.set_nodelay(true);
    Some(socket)
}

/// `kdev __agent-ready`: exit 0 when the agent answers on its readiness port.
pub async fn ready(health: SocketAddr) -> anyhow::Result<ExitCode> {
    match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(health)).await {
        Ok(Ok(_)) => Ok(ExitCode::SUCCESS),
        _ => {
            eprintln!("kdev agent is not answering on {health}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Hands each connection to the container port to the CLI.
async fn serve_port(listener: TcpListener, port: u16, current: watch::Receiver<Option<Mux>>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let mut current = current.clone();
        tokio::spawn(async move {
            // A CLI that is reconnecting gets a few seconds to come back.
            let waited =
                tokio::time::timeout(Duration::from_secs(5), current.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(|found| found.ok().and_then(|mux| mux.clone()));
            let Some(mux) = waited else {
                tracing::warn!(port, "no CLI connected; closing an inbound connection");
                return;
            };
            match mux.open_with(&Header::Inbound { port }).await {
                Ok(stream) => tunnel::splice(socket, stream).await,
                Err(err) => tracing::warn!(port, error = %err, "failed to open an inbound stream"),
            }
        });
    }
}

async fn serve_stream(
    mut stream: tunnel::Stream,
    resolve: std::sync::Arc<BTreeMap<String, IpAddr>>,
) {
    let header = match tunnel::read_header(&mut stream).await {
        Ok(header) => header,
        Err(err) => {
            tracing::warn!(error = %err, "bad stream from the CLI");
            return;
        }
    };
    match header {
        Header::Ping => {
            let mut nonce = [0u8; 8];
            if stream.read_exact(&mut nonce).await.is_ok() {
                let _ = stream.write_all(&nonce).await;
                let _ = stream.shutdown().await;
            }
        }
        Header::Connect { host, port } => {
            let target = match resolve.get(&host) {
                Some(ip) => dial(SocketAddr::new(*ip, port)).await,
                None => dial((host.as_str(), port)).await,
            };
            answer_connect(stream, target, &host, port).await;
        }
        Header::Dns => {
            let target = match pod_nameserver(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ) {
                Some(ip) => dial(SocketAddr::new(ip, 53)).await,
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the pod's /etc/resolv.conf names no nameserver",
                )),
            };
            answer_connect(stream, target, "the pod's nameserver", 53).await;
        }
        Header::Inbound { port } => {
            tracing::warn!(port, "the CLI sent an inbound header; ignoring the stream");
        }
    }
}

/// The first `nameserver` of a `resolv.conf`: the DNS the pod asks.
pub fn pod_nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// Tells the CLI how a dial went and, when it connected, carries the bytes.
async fn answer_connect(
    mut stream: tunnel::Stream,
    target: std::io::Result<TcpStream>,
    host: &str,
    port: u16,
) {
    match target {
        Ok(socket) => {
            if stream
                .write_all(&ConnectReply::Connected.encode())
                .await
                .is_ok()
            {
                tunnel::splice(stream, socket).await;
            }
        }
        Err(err) => {
            let message = format!("failed to connect to {host}:{port}: {err}");
            tracing::info!("{message}");
            let _ = stream
                .write_all(&ConnectReply::Failed(Failure::of(err.kind()), message).encode())
                .await;
            let _ = stream.shutdown().await;
        }
    }
}

async fn dial(target: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpStream> {
    let socket = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out after 10s"))??;
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pods_nameserver_is_the_first_one_its_resolv_conf_names() {
        let conf = "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n";
        assert_eq!(pod_nameserver(conf), Some(IpAddr::from([10, 0, 0, 10])));
        assert_eq!(
            pod_nameserver("nameserver\nnameserver fd00::a\n"),
            Some("fd00::a".parse().unwrap())
        );
        assert_eq!(pod_nameserver("options ndots:5\n"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_resolv_conf_is_read_without_panicking(text in ".{0,300}") {
            let _ = pod_nameserver(&text);
        }
    }

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_port("8080").expect("valid"),
            PortBinding {
                port: 8080,
                bind: "0.0.0.0:8080".parse().expect("addr")
            }
        );
        assert_eq!(
            parse_port("8080=127.0.0.1:18080").expect("valid"),
            PortBinding {
                port: 8080,
                bind: "127.0.0.1:18080".parse().expect("addr")
            }
        );
        for bad in ["", "http", "8080=", "8080=localhost", "70000"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_entries_parse() {
        let map = parse_resolve(&["db.team.svc=127.0.0.1".into()]).expect("valid");
        assert_eq!(map["db.team.svc"], IpAddr::from([127, 0, 0, 1]));
        assert!(parse_resolve(&["db".into()]).is_err());
        assert!(parse_resolve(&["db=nowhere".into()]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn agent_flags_never_panic(
            port in proptest::prelude::any::<String>(),
            resolve in proptest::prelude::any::<String>(),
        ) {
            let _ = parse_port(&port);
            let _ = parse_resolve(&[resolve]);
        }
    }
}
