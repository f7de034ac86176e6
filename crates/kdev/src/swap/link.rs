//! The CLI's end of the tunnel: one port-forward to the agent, kept up.
//!
//! A state machine per connection attempt: `Connecting` (port-forward, yamux,
//! first ping) → `Up` (inbound streams delivered, keepalive pings every 3 s)
//! → `Down` (two missed pings or the connection closed) → back to
//! `Connecting` after a pause on the shared back-off policy
//! ([`crate::k8s::backoff`]). The session goes on through all of it; only the
//! Lease decides whether it is alive. The last failed attempt's error is kept,
//! so a start-up that times out says why (a missing `pods/portforward`
//! permission, say) instead of only that it timed out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kdev_contract::session::AGENT_PORT;
use kdev_contract::tunnel::{ConnectReply, Header, auth};
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::agent::tunnel::{self, Mux, Role};
use crate::error::usage;
use crate::k8s::backoff;

/// Container port → local port the local process listens on.
pub type Routes = Arc<BTreeMap<u16, u16>>;

/// The current tunnel, `None` while reconnecting.
pub type Current = watch::Receiver<Option<Mux>>;

/// The last failed connection attempt's error, if any.
pub type LastError = watch::Receiver<Option<String>>;

/// Keeps a tunnel to `pod` up until dropped (abort the returned task).
pub fn maintain(
    pods: Api<Pod>,
    pod: String,
    token: [u8; auth::TOKEN_LEN],
    routes: Routes,
) -> (Current, LastError, tokio::task::JoinHandle<()>) {
    let (state_tx, state_rx) = watch::channel(None);
    let (error_tx, error_rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut delays = backoff::delays();
        let mut was_up = false;
        loop {
            match connect(&pods, &pod, &token).await {
                Ok((mux, inbound, driver)) => {
                    delays = backoff::delays();
                    error_tx.send_replace(None);
                    if was_up {
                        eprintln!("kdev: tunnel to {pod} is back");
                    }
                    was_up = true;
                    state_tx.send_replace(Some(mux.clone()));
                    let delivery = tokio::spawn(deliver_inbound(inbound, routes.clone()));
                    tokio::select! {
                        _ = driver => {}
                        _ = keepalive(&mux) => {}
                    }
                    delivery.abort();
                    state_tx.send_replace(None);
                    eprintln!("kdev: tunnel to {pod} dropped; reconnecting");
                }
                Err(err) => {
                    tracing::debug!(error = %format!("{err:#}"), "tunnel connection attempt failed");
                    error_tx.send_replace(Some(format!("{err:#}")));
                }
            }
            tokio::time::sleep(delays.next().unwrap_or(backoff::MAX)).await;
        }
    });
    (state_rx, error_rx, task)
}

type Connected = (Mux, tunnel::Inbound, tokio::task::JoinHandle<()>);

async fn connect(
    pods: &Api<Pod>,
    pod: &str,
    token: &[u8; auth::TOKEN_LEN],
) -> anyhow::Result<Connected> {
    // kdev's own port-forward (k8s::portforward): kube's moves the bytes
    // through a task and a one-message channel in 4 KiB pieces.
    let namespace = pods.namespace().unwrap_or("default").to_owned();
    let mut stream =
        crate::k8s::portforward::open(&pods.clone().into_client(), &namespace, pod, AGENT_PORT)
            .await?;
    // Prove the session's token before anything else (see the contract).
    stream.write_all(&auth::preamble(token)).await?;
    stream.flush().await?;
    let (mux, inbound, driver) = Mux::start(stream, Role::Client);
    if let Err(err) = ping(&mux).await {
        driver.abort();
        return Err(err);
    }
    Ok((mux, inbound, driver))
}

/// Waits until the tunnel is up, or fails after `timeout` with the last
/// connection error.
pub async fn wait_up(
    current: &mut Current,
    last_error: &LastError,
    timeout: Duration,
) -> anyhow::Result<()> {
    match tokio::time::timeout(timeout, current.wait_for(Option::is_some)).await {
        Ok(Ok(_)) => Ok(()),
        _ => {
            let why = last_error
                .borrow()
                .clone()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            anyhow::bail!(
                "could not open a tunnel to the proxy pod's agent (port {AGENT_PORT}) within {}s{why}",
                timeout.as_secs()
            )
        }
    }
}

async fn ping(mux: &Mux) -> anyhow::Result<()> {
    let exchange = async {
        let nonce: [u8; 8] = rand_nonce();
        let mut stream = mux.open_with(&Header::Ping).await?;
        stream.write_all(&nonce).await?;
        let mut echo = [0u8; 8];
        stream.read_exact(&mut echo).await?;
        anyhow::ensure!(echo == nonce, "the agent echoed the wrong bytes");
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the agent did not answer a ping within 5s"))?
}

fn rand_nonce() -> [u8; 8] {
    let id = uuid::Uuid::new_v4();
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&id.as_bytes()[..8]);
    nonce
}

/// Returns once two pings in a row fail.
async fn keepalive(mux: &Mux) {
    let mut missed = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        match ping(mux).await {
            Ok(()) => missed = 0,
            Err(err) => {
                missed += 1;
                tracing::debug!(error = %err, missed, "keepalive ping failed");
                if missed >= 2 {
                    return;
                }
            }
        }
    }
}

/// Connects each inbound stream to the local process.
async fn deliver_inbound(mut inbound: tunnel::Inbound, routes: Routes) {
    while let Some(mut stream) = inbound.recv().await {
        let routes = routes.clone();
        tokio::spawn(async move {
            let port = match tunnel::read_header(&mut stream).await {
                Ok(Header::Inbound { port }) => port,
                Ok(other) => {
                    tracing::warn!(?other, "unexpected stream from the agent");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "bad stream from the agent");
                    return;
                }
            };
            let local = routes.get(&port).copied().unwrap_or(port);
            match TcpStream::connect(("127.0.0.1", local)).await {
                Ok(socket) => {
                    let _ = socket.set_nodelay(true);
                    tunnel::splice(stream, socket).await;
                }
                Err(err) => {
                    eprintln!(
                        "kdev: a request to port {port} found nothing listening on 127.0.0.1:{local} ({err})"
                    );
                }
            }
        });
    }
}

/// The tunnel, waiting up to `timeout` while it reconnects; `None` when it
/// is not back by then.
pub async fn tunnel_within(current: &mut Current, timeout: Duration) -> Option<Mux> {
    tokio::time::timeout(timeout, current.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|found| found.ok().and_then(|mux| mux.clone()))
}

/// `--forward`: a local port whose connections the agent makes in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// What the agent dials.
    pub host: String,
    pub port: u16,
    /// The local port (0: any free one).
    pub local: u16,
    /// The Service's name, for `svc/NAME` forwards.
    pub service: Option<String>,
}

impl Forward {
    /// Parses `svc/NAME:PORT[:LOCAL]` or `HOST:PORT[:LOCAL]`.
    pub fn parse(text: &str, namespace: &str) -> anyhow::Result<Self> {
        let bad = || {
            usage(format!(
                "invalid --forward {text:?}: use svc/NAME:PORT[:LOCAL] or HOST:PORT[:LOCAL], like svc/db:5432"
            ))
        };
        let (service, rest) = match text
            .strip_prefix("svc/")
            .or_else(|| text.strip_prefix("service/"))
        {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (name, port, local) = match parts.as_slice() {
            [name, port] => (*name, *port, None),
            [name, port, local] => (*name, *port, Some(*local)),
            _ => return Err(bad()),
        };
        if name.is_empty() {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        let local: u16 = match local {
            Some(local) => local.parse().map_err(|_| bad())?,
            None => 0,
        };
        Ok(if service {
            Forward {
                host: format!("{name}.{namespace}.svc"),
                port,
                local,
                service: Some(name.to_owned()),
            }
        } else {
            Forward {
                host: name.to_owned(),
                port,
                local,
                service: None,
            }
        })
    }

    /// The variables Kubernetes gives containers for a Service, pointed at
    /// the local end of this forward.
    pub fn service_env(&self, local: SocketAddr) -> Vec<(String, String)> {
        let Some(service) = &self.service else {
            return Vec::new();
        };
        let prefix = service.to_uppercase().replace('-', "_");
        vec![
            (format!("{prefix}_SERVICE_HOST"), local.ip().to_string()),
            (format!("{prefix}_SERVICE_PORT"), local.port().to_string()),
        ]
    }
}

/// Binds a forward's local port; connections go through the current tunnel.
pub async fn serve_forward(
    forward: Forward,
    current: Current,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", forward.local))
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "failed to listen on 127.0.0.1:{} for --forward {}:{}: {err}",
                forward.local,
                forward.host,
                forward.port
            )
        })?;
    let local = listener.local_addr()?;
    let forward = Arc::new(forward);
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let mut current = current.clone();
            let forward = forward.clone();
            tokio::spawn(async move {
                let mux = tunnel_within(&mut current, Duration::from_secs(10)).await;
                let Some(mux) = mux else {
                    eprintln!(
                        "kdev: no tunnel for a connection to {}:{}",
                        forward.host, forward.port
                    );
                    return;
                };
                let header = Header::Connect {
                    host: forward.host.clone(),
                    port: forward.port,
                };
                let mut stream = match mux.open_with(&header).await {
                    Ok(stream) => stream,
                    Err(err) => {
                        eprintln!(
                            "kdev: failed to reach {}:{} through the tunnel: {err}",
                            forward.host, forward.port
                        );
                        return;
                    }
                };
                match tunnel::read_connect_reply(&mut stream).await {
                    Ok(ConnectReply::Connected) => tunnel::splice(socket, stream).await,
                    Ok(ConnectReply::Failed(_, message)) => eprintln!("kdev: the agent {message}"),
                    Err(err) => eprintln!(
                        "kdev: the tunnel failed while connecting to {}:{}: {err}",
                        forward.host, forward.port
                    ),
                }
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse() {
        assert_eq!(
            Forward::parse("svc/db:5432", "team").expect("valid"),
            Forward {
                host: "db.team.svc".into(),
                port: 5432,
                local: 0,
                service: Some("db".into())
            }
        );
        assert_eq!(
            Forward::parse("cache.example:6379:16379", "team").expect("valid"),
            Forward {
                host: "cache.example".into(),
                port: 6379,
                local: 16379,
                service: None
            }
        );
        for bad in ["svc/db", "db", ":80", "svc/db:http", "a:1:2:3"] {
            assert!(Forward::parse(bad, "team").is_err(), "{bad}");
        }
    }

    #[test]
    fn service_variables_point_at_the_local_end() {
        let forward = Forward::parse("svc/user-db:5432", "team").expect("valid");
        let env = forward.service_env("127.0.0.1:40000".parse().expect("addr"));
        assert_eq!(
            env,
            vec![
                ("USER_DB_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned()),
                ("USER_DB_SERVICE_PORT".to_owned(), "40000".to_owned())
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn forwards_never_panic(text in proptest::prelude::any::<String>()) {
            let _ = Forward::parse(&text, "team");
        }
    }
}
