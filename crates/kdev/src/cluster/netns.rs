//! The real node's network namespace, and the one process that joins it to
//! the host's loopback: `kdev __node-proxy`.
//!
//! The node (containerd, the kubelet, kube-proxy, every pod) lives in a
//! network namespace of its own, `kdev-<cluster>`, so its addresses, bridge,
//! veths and iptables rules exist nowhere else and go with the namespace. The
//! control plane stays on the host's 127.0.0.1. Two paths connect them, both
//! in this process:
//!
//! - **to the API server**: a listener on the API server's advertised
//!   address inside the namespace (the `kubernetes` Service's endpoint, which
//!   kube-proxy sends pods to), relayed to the API server on the host's
//!   127.0.0.1;
//! - **from the API server** (logs, exec, port-forward, webhooks, Service
//!   proxies): an HTTP CONNECT proxy on a unix socket, which the API server
//!   uses for its "cluster" egress and which dials inside the namespace
//!   (loopback targets, kwok's fake kubelet, on the host).
//!
//! Sockets are opened inside the namespace from a thread that has joined it
//! (`setns`); a socket stays in the namespace it was made in, so the rest of
//! the process works with it as usual. Nothing is bound on the host but the
//! unix socket.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The node proxy's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The namespace's name under [`NETNS_DIR`].
    pub netns: String,
    /// The API server's address as pods see it (inside the namespace).
    pub api_listen: SocketAddr,
    /// The API server on the host.
    pub api_upstream: SocketAddr,
    /// The unix socket of the CONNECT proxy (the API server's egress).
    pub connect_socket: PathBuf,
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `make` on a thread that has joined namespace `netns`; what it makes
/// (a socket) stays in that namespace.
fn in_netns<T: Send + 'static>(
    netns: &str,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = netns_path(netns);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("failed to open network namespace {}", path.display()))?;
    let joined = std::thread::spawn(move || -> anyhow::Result<T> {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|err| {
            anyhow::anyhow!("failed to enter the node's network namespace: {err}")
        })?;
        Ok(make()?)
    });
    joined
        .join()
        .map_err(|_| anyhow::anyhow!("the thread entering the node's network namespace panicked"))?
}

/// Connects to `target` from inside namespace `netns`.
async fn dial_in(netns: String, target: String) -> anyhow::Result<TcpStream> {
    let stream = tokio::task::spawn_blocking(move || {
        in_netns(&netns, move || {
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&target)?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{target} resolves to nothing")))?;
            let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    })
    .await
    .context("the dialing task failed")??;
    Ok(TcpStream::from_std(stream)?)
}

/// `kdev __node-proxy`: runs until killed (`kdev cluster down` does).
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let listen = config.api_listen;
    let api = in_netns(&config.netns, move || {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .with_context(|| format!("failed to listen on {listen} in the node's network namespace"))?;
    let api = TcpListener::from_std(api)?;
    let _ = std::fs::remove_file(&config.connect_socket);
    let egress = UnixListener::bind(&config.connect_socket).with_context(|| {
        format!(
            "failed to listen on {} for the API server's egress",
            config.connect_socket.display()
        )
    })?;
    tracing::info!(api = %listen, socket = %config.connect_socket.display(), "node proxy ready");
    let upstream = config.api_upstream;
    let netns = config.netns.clone();
    tokio::select! {
        result = relay_api(api, upstream) => result,
        result = serve_connect(egress, netns) => result,
    }
    .map(|()| ExitCode::SUCCESS)
}

async fn relay_api(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    loop {
        let (mut client, _) = listener
            .accept()
            .await
            .context("failed to accept a connection for the API server")?;
        tokio::spawn(async move {
            match TcpStream::connect(upstream).await {
                Ok(mut server) => {
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                Err(err) => tracing::warn!(error = %err, "failed to reach the API server"),
            }
        });
    }
}

async fn serve_connect(listener: UnixListener, netns: String) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("failed to accept an egress connection")?;
        let netns = netns.clone();
        tokio::spawn(async move {
            if let Err(err) = connect_one(stream, netns).await {
                tracing::debug!(error = %format!("{err:#}"), "egress connection failed");
            }
        });
    }
}

/// One `CONNECT host:port HTTP/1.1` request: dial inside the namespace, say
/// 200, then splice.
async fn connect_one(stream: UnixStream, netns: String) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    reader.read_line(&mut request).await?;
    let target = parse_connect(&request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut client = reader.into_inner();
    // kwok's fake kubelet listens on the host's loopback (its nodes'
    // InternalIP is 127.0.0.1); everything else lives in the namespace.
    let dialed = if is_loopback(&target) {
        TcpStream::connect(&target)
            .await
            .map_err(anyhow::Error::from)
    } else {
        dial_in(netns, target.clone()).await
    };
    match dialed {
        Ok(mut server) => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(err) => {
            let body = format!("kdev node proxy: failed to reach {target}: {err:#}\n");
            let reply = format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            client.write_all(reply.as_bytes()).await?;
        }
    }
    Ok(())
}

/// True for a `127.x.x.x:port` or `[::1]:port` target.
fn is_loopback(target: &str) -> bool {
    target
        .parse::<SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback())
}

/// The target of a `CONNECT host:port HTTP/1.x` request line.
pub fn parse_connect(line: &str) -> anyhow::Result<String> {
    let mut parts = line.split_whitespace();
    let (Some("CONNECT"), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("not a CONNECT request: {:?}", line.trim_end());
    };
    anyhow::ensure!(
        version.starts_with("HTTP/1."),
        "unsupported protocol {version:?}"
    );
    let (host, port) = target
        .rsplit_once(':')
        .with_context(|| format!("CONNECT target {target:?} has no port"))?;
    anyhow::ensure!(
        !host.is_empty() && port.parse::<u16>().is_ok(),
        "CONNECT target {target:?} is not host:port"
    );
    Ok(target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_parse() {
        assert_eq!(
            parse_connect("CONNECT 10.200.0.1:10250 HTTP/1.1\r\n").expect("valid"),
            "10.200.0.1:10250"
        );
        assert_eq!(
            parse_connect("CONNECT [fd00::1]:443 HTTP/1.1\r\n").expect("valid"),
            "[fd00::1]:443"
        );
        assert!(is_loopback("127.0.0.1:32762"));
        assert!(!is_loopback("10.200.0.1:10250"));
        assert!(!is_loopback("localhost:1"));
        for bad in [
            "GET / HTTP/1.1",
            "CONNECT host HTTP/1.1",
            "CONNECT :80 HTTP/1.1",
            "CONNECT a:b HTTP/1.1",
            "CONNECT a:1 SPDY/3",
            "",
        ] {
            assert!(parse_connect(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn connect_lines_never_panic(line in proptest::prelude::any::<String>()) {
            let _ = parse_connect(&line);
        }
    }
}
