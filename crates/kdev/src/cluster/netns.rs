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

/// One connection of CONNECT requests: hyper reads the request (its head
/// bounded by hyper's buffer limit), kdev dials the target inside the
/// namespace, answers 200 and splices the upgraded connection to it; or
/// answers 502 saying why the dial failed, and 400 to anything but CONNECT.
async fn connect_one(stream: UnixStream, netns: String) -> anyhow::Result<()> {
    let service = hyper::service::service_fn(move |request| {
        let netns = netns.clone();
        async move { Ok::<_, std::convert::Infallible>(answer_connect(request, netns).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades()
        .await
        .context("failed to serve a CONNECT request")
}

type Reply = hyper::Response<http_body_util::Full<bytes::Bytes>>;

fn reply(status: hyper::StatusCode, body: String) -> Reply {
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response
}

async fn answer_connect(request: hyper::Request<hyper::body::Incoming>, netns: String) -> Reply {
    let target = match connect_target(request.method(), request.uri()) {
        Ok(target) => target,
        Err(err) => {
            return reply(
                hyper::StatusCode::BAD_REQUEST,
                format!("kdev node proxy: {err:#}\n"),
            );
        }
    };
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
            tokio::spawn(async move {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        let mut client = hyper_util::rt::TokioIo::new(upgraded);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    Err(err) => tracing::debug!(error = %err, "a CONNECT was not upgraded"),
                }
            });
            reply(hyper::StatusCode::OK, String::new())
        }
        Err(err) => reply(
            hyper::StatusCode::BAD_GATEWAY,
            format!("kdev node proxy: failed to reach {target}: {err:#}\n"),
        ),
    }
}

/// True for a `127.x.x.x:port` or `[::1]:port` target.
fn is_loopback(target: &str) -> bool {
    target
        .parse::<SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback())
}

/// The `host:port` a request asks to be connected to: only CONNECT, only
/// in authority form.
pub fn connect_target(method: &hyper::Method, uri: &hyper::Uri) -> anyhow::Result<String> {
    anyhow::ensure!(
        method == hyper::Method::CONNECT,
        "only CONNECT is served here, not {method}"
    );
    let authority = uri
        .authority()
        .filter(|_| {
            uri.scheme().is_none()
                && uri
                    .path_and_query()
                    .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
        })
        .with_context(|| format!("CONNECT target {uri} is not host:port"))?;
    anyhow::ensure!(
        !authority.host().is_empty() && authority.port_u16().is_some(),
        "CONNECT target {authority} is not host:port"
    );
    Ok(authority.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn target(line: &str) -> anyhow::Result<String> {
        let mut parts = line.splitn(2, ' ');
        let method: hyper::Method = parts.next().unwrap_or("").parse()?;
        let uri: hyper::Uri = parts.next().unwrap_or("").parse()?;
        connect_target(&method, &uri)
    }

    #[test]
    fn connect_targets_are_host_and_port() {
        assert_eq!(
            target("CONNECT 10.200.0.1:10250").expect("valid"),
            "10.200.0.1:10250"
        );
        assert_eq!(
            target("CONNECT [fd00::1]:443").expect("valid"),
            "[fd00::1]:443"
        );
        assert!(is_loopback("127.0.0.1:32762"));
        assert!(!is_loopback("10.200.0.1:10250"));
        assert!(!is_loopback("localhost:1"));
        for bad in [
            "GET 10.0.0.1:80",
            "CONNECT host",
            "CONNECT :80",
            "CONNECT a:b",
            "CONNECT http://a:1/x",
            "CONNECT /",
            "",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    /// Serves one connection of the proxy on one end of a socket pair.
    fn proxy() -> UnixStream {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        tokio::spawn(connect_one(theirs, "kdev-no-such-netns".into()));
        ours
    }

    #[tokio::test]
    async fn a_connect_to_a_loopback_target_is_spliced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).await.expect("read");
            conn.write_all(&buf).await.expect("echo");
        });
        let mut client = proxy();
        let head = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        client.write_all(head.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            client
                .read_exact(&mut byte)
                .await
                .expect("the answer's head");
            answer.push(byte[0]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        client.write_all(b"hello").await.expect("write");
        let mut echoed = [0u8; 5];
        client.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(&echoed, b"hello");
    }

    /// Regression: the hand-written reader read the request line and headers
    /// with an unbounded `read_line`, so one endless line grew its buffer
    /// without limit.
    #[tokio::test]
    async fn an_endless_request_head_is_refused_not_buffered() {
        let mut client = proxy();
        let mut line = b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nX-Long: ".to_vec();
        line.extend(std::iter::repeat_n(b'a', 4 << 20));
        // The proxy stops reading and closes (or answers 431) long before
        // the 4 MiB are written.
        let written = client.write_all(&line).await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            written.is_err() || answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn a_request_that_is_not_connect_gets_400() {
        let mut client = proxy();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("only CONNECT"), "{answer}");
    }

    proptest::proptest! {
        #[test]
        fn connect_targets_never_panic(line in proptest::prelude::any::<String>()) {
            let _ = target(&line);
        }
    }
}
