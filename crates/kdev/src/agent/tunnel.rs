//! A yamux session over one byte stream (a port-forward), and the stream
//! headers of [`kdev_contract::tunnel`].
//!
//! yamux's `Connection` makes progress only while it is polled, so one task
//! owns it ([`Mux::start`]) and every other task talks to that task: opening
//! a stream is a request over a channel, and inbound streams arrive on one.

use std::collections::VecDeque;
use std::task::Poll;

#[cfg(test)]
use kdev_contract::tunnel::Failure;
use kdev_contract::tunnel::{ConnectReply, DecodeError, Header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// One multiplexed stream, with tokio's I/O traits.
pub type Stream = Compat<yamux::Stream>;

type OpenReply = oneshot::Sender<Result<Stream, yamux::ConnectionError>>;

/// A handle to a running yamux session. Cloning it shares the session.
#[derive(Clone)]
pub struct Mux {
    open: mpsc::UnboundedSender<OpenReply>,
}

/// Streams the peer opens.
pub type Inbound = mpsc::UnboundedReceiver<Stream>;

#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// The CLI: it dialled the port-forward.
    Client,
    /// The agent: it accepted the connection.
    Server,
}

impl Mux {
    /// Starts the task that drives the session over `io`. The task ends when
    /// the connection closes or fails; then `open` fails and `Inbound` ends.
    pub fn start<T>(io: T, role: Role) -> (Mux, Inbound, tokio::task::JoinHandle<()>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mode = match role {
            Role::Client => yamux::Mode::Client,
            Role::Server => yamux::Mode::Server,
        };
        let mut config = yamux::Config::default();
        // A stream's receive window grows (with the measured round trip) up
        // to the connection's cap (1 GiB) divided by this: 4 MiB, enough to
        // keep a stream moving through the API server's buffers.
        config.set_max_num_streams(256);
        // Each yamux frame becomes one WebSocket message through the API
        // server; fewer, larger frames move more bytes per message.
        config.set_split_send_size(256 * 1024);
        let mut connection = yamux::Connection::new(io.compat(), config, mode);
        let (open_tx, mut open_rx) = mpsc::unbounded_channel::<OpenReply>();
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut waiting: VecDeque<OpenReply> = VecDeque::new();
            let mut requests_open = true;
            let outcome = std::future::poll_fn(|cx| {
                while requests_open {
                    match open_rx.poll_recv(cx) {
                        Poll::Ready(Some(reply)) => waiting.push_back(reply),
                        Poll::Ready(None) => requests_open = false,
                        Poll::Pending => break,
                    }
                }
                while !waiting.is_empty() {
                    match connection.poll_new_outbound(cx) {
                        Poll::Ready(result) => {
                            if let Some(reply) = waiting.pop_front() {
                                let _ = reply.send(result.map(FuturesAsyncReadCompatExt::compat));
                            }
                        }
                        Poll::Pending => break,
                    }
                }
                loop {
                    match connection.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(stream))) => {
                            let _ = inbound_tx.send(stream.compat());
                        }
                        Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                        Poll::Ready(None) => return Poll::Ready(Ok(())),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            if let Err(err) = outcome {
                tracing::debug!(error = %err, "tunnel connection ended");
            }
            for reply in waiting {
                let _ = reply.send(Err(yamux::ConnectionError::Closed));
            }
        });
        (Mux { open: open_tx }, inbound_rx, driver)
    }

    /// Opens a stream to the peer.
    pub async fn open(&self) -> Result<Stream, yamux::ConnectionError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.open
            .send(reply_tx)
            .map_err(|_| yamux::ConnectionError::Closed)?;
        reply_rx
            .await
            .unwrap_or(Err(yamux::ConnectionError::Closed))
    }

    /// Opens a stream and writes `header` on it.
    pub async fn open_with(&self, header: &Header) -> std::io::Result<Stream> {
        let mut stream = self.open().await.map_err(std::io::Error::other)?;
        stream.write_all(&header.encode()).await?;
        Ok(stream)
    }
}

/// Reads one header from the start of `stream`, byte-exact: nothing after it
/// is consumed.
pub async fn read_header<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<Header> {
    let mut buf = vec![0u8; 4];
    stream.read_exact(&mut buf).await?;
    loop {
        match Header::decode(&buf) {
            Ok((header, _)) => return Ok(header),
            Err(DecodeError::Incomplete(Some(total))) if total > buf.len() => {
                let have = buf.len();
                buf.resize(total, 0);
                stream.read_exact(&mut buf[have..]).await?;
            }
            Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
        }
    }
}

/// Reads the agent's answer to a Connect.
pub async fn read_connect_reply<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<ConnectReply> {
    let mut buf = vec![0u8; 1];
    stream.read_exact(&mut buf).await?;
    loop {
        match ConnectReply::decode(&buf) {
            Ok((reply, _)) => return Ok(reply),
            Err(DecodeError::Incomplete(hint)) => {
                let have = buf.len();
                let want = hint.unwrap_or(3).max(have + 1);
                buf.resize(want, 0);
                stream.read_exact(&mut buf[have..]).await?;
            }
            Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
        }
    }
}

/// How much one copy moves at a time. Each read becomes one yamux frame,
/// and through the port-forward one WebSocket message that the API server,
/// the kubelet and containerd each handle as a whole: tokio's default of
/// 8 KiB made the swap path's containerd spend three times the CPU of
/// kubectl port-forward's for the same bytes. 256 KiB matches the tunnel's
/// frame and message limits.
const SPLICE_BUFFER: usize = 256 * 1024;

/// A buffer that holds a whole frame (header and the largest body) and
/// then some, so buffering never splits one.
pub const FRAME_BUFFER: usize = 2 * SPLICE_BUFFER;

/// Copies both ways until both sides are done; errors end the pair quietly
/// (a reset connection is normal traffic, not a failure of the tunnel).
pub async fn splice<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(err) =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUFFER, SPLICE_BUFFER).await
    {
        tracing::debug!(error = %err, "connection through the tunnel ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_open_both_ways_and_carry_bytes_exactly() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, mut client_inbound, _d1) = Mux::start(a, Role::Client);
        let (server, mut server_inbound, _d2) = Mux::start(b, Role::Server);

        // Client → server, with a header and a payload larger than a window.
        let payload: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            let mut stream = client
                .open_with(&Header::Connect {
                    host: "db".into(),
                    port: 5432,
                })
                .await
                .expect("open");
            stream.write_all(&sent).await.expect("write");
            stream.shutdown().await.expect("close");
        });
        let mut stream = server_inbound.recv().await.expect("a stream");
        assert_eq!(
            read_header(&mut stream).await.expect("header"),
            Header::Connect {
                host: "db".into(),
                port: 5432
            }
        );
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, payload);
        writer.await.expect("writer");

        // Server → client.
        let mut back = server
            .open_with(&Header::Inbound { port: 8080 })
            .await
            .expect("open");
        back.write_all(b"hi").await.expect("write");
        back.shutdown().await.expect("close");
        let mut stream = client_inbound.recv().await.expect("a stream");
        assert_eq!(
            read_header(&mut stream).await.expect("header"),
            Header::Inbound { port: 8080 }
        );
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"hi");
    }

    #[tokio::test]
    async fn connect_replies_are_read_whole() {
        let failed = ConnectReply::Failed(Failure::Unreachable, "no route".into()).encode();
        let mut reader = &failed[..];
        assert_eq!(
            read_connect_reply(&mut reader).await.expect("reply"),
            ConnectReply::Failed(Failure::Unreachable, "no route".into())
        );
        let mut ok = &[0u8][..];
        assert_eq!(
            read_connect_reply(&mut ok).await.expect("reply"),
            ConnectReply::Connected
        );
    }
}
