//! A port-forward to one pod port as one byte stream, written for the
//! swap tunnel's throughput.
//!
//! It speaks what kubectl speaks (since Kubernetes 1.31): SPDY inside a
//! WebSocket (subprotocol `SPDY/3.1+portforward.k8s.io`, see [`spdy`]).
//! The API server unwraps the WebSocket and hands the SPDY stream to the
//! kubelet and the container runtime, which then do for kdev exactly what
//! they do for kubectl. When the API server refuses that protocol (older
//! than 1.30, or the `PortForwardWebsockets` gate off), kdev falls back to
//! the WebSocket channel protocol (`v4.channel.k8s.io`), where the runtime
//! itself decodes the WebSocket; containerd's decoder unmasks byte by byte
//! and regrows a buffer per message, which cost the swap path twice
//! kubectl's containerd CPU for the same bytes.
//!
//! kube-rs' `Api::portforward` copies each direction through a task and a
//! channel that holds one message, reading the local side in 4 KiB pieces
//! and sending each as its own WebSocket message. Here the WebSocket (on
//! kube's client: the same credentials and TLS) *is* the stream: a write
//! becomes one binary message of up to [`MAX_MESSAGE`] bytes behind its
//! frame header, and a read hands out the next payload, with no task or
//! channel in between. Writes are gathered until the writer flushes (or a
//! message is full), because a yamux frame arrives as two writes, its
//! 12-byte header and its body, and two messages per frame doubled the
//! work of every hop.
//!
//! The channel protocol: every message starts with its channel (0 data, 1
//! error for the first port); the first message of each channel from the
//! server carries the port number (two bytes, little-endian) before any
//! payload. Text on the error channel (or the SPDY error stream) ends the
//! stream with that error.

mod spdy;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};
use http::header;
use hyper_util::rt::TokioIo;
use kube::Client;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The largest payload of one message kdev sends: a yamux frame fits whole.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The WebSocket subprotocol that carries SPDY, as kubectl asks for it.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// How long the runtime may take to accept the port's streams.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const DATA: u8 = 0;
const ERROR: u8 = 1;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// What a port-forward speaks inside its WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SPDY/3.1 tunnelled through the WebSocket, as kubectl does.
    Spdy,
    /// The API server's channel protocol (`v4.channel.k8s.io` or v5).
    Channel,
}

/// An open port-forward to one port.
pub struct PortForward {
    ws: Socket,
    framing: Framing,
    /// Payload received and not read yet.
    pending: Bytes,
    /// Written and not sent yet: the next data frame, its header first.
    outgoing: BytesMut,
    /// Control frames to send before the next data (SPDY ping answers,
    /// the end of our side).
    control: BytesMut,
    fin_sent: bool,
    eof: bool,
}

/// Opens a port-forward to `port` of pod `namespace/pod`: SPDY in a
/// WebSocket, or the channel protocol where the API server refuses that.
pub async fn open(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> anyhow::Result<PortForward> {
    match open_with(client, namespace, pod, port, Protocol::Spdy).await {
        Ok(forward) => Ok(forward),
        // Refusals that the other protocol would meet the same way.
        Err(err) if is_final(&err) => Err(err),
        Err(err) => {
            tracing::debug!(error = %format!("{err:#}"), "SPDY in a WebSocket refused; port-forwarding with the channel protocol");
            open_with(client, namespace, pod, port, Protocol::Channel).await
        }
    }
}

fn is_final(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<kube::Error>(),
        Some(kube::Error::Api(status)) if matches!(status.code, 401 | 403 | 404)
    )
}

/// Opens a port-forward that speaks `protocol`, with no fallback.
pub async fn open_with(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    protocol: Protocol,
) -> anyhow::Result<PortForward> {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .portforward(pod, &[port])
        .map_err(kube::Error::BuildRequest)?;
    match protocol {
        Protocol::Channel => {
            let connection = client.connect(request).await?;
            Ok(PortForward::new(
                connection.into_stream(),
                Framing::Channel(Channel::default()),
            ))
        }
        Protocol::Spdy => {
            let ws = upgrade(client, request, TUNNEL_PROTOCOL).await?;
            let mut forward = PortForward::new(ws, Framing::Spdy(Spdy::default()));
            tokio::time::timeout(REPLY_TIMEOUT, forward.start_spdy(port))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the port-forward to {namespace}/{pod}:{port} was not accepted within {}s",
                        REPLY_TIMEOUT.as_secs()
                    )
                })?
                .with_context(|| format!("port-forward to {namespace}/{pod}:{port}"))?;
            Ok(forward)
        }
    }
}

/// Upgrades `request` to a WebSocket with `subprotocol` through kube's
/// client (kube's own `connect` offers only the channel protocols).
async fn upgrade(
    client: &Client,
    request: http::Request<Vec<u8>>,
    subprotocol: &'static str,
) -> anyhow::Result<Socket> {
    use kube::client::UpgradeConnectionError as Upgrade;
    let (mut parts, body) = request.into_parts();
    let key = generate_key();
    let headers = &mut parts.headers;
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        header::HeaderValue::from_static("13"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_KEY,
        header::HeaderValue::from_str(&key)?,
    );
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static(subprotocol),
    );
    let response = client
        .send(http::Request::from_parts(
            parts,
            kube::client::Body::from(body),
        ))
        .await?;
    let status = response.status();
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        let text = response
            .into_body()
            .collect_bytes()
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let status = serde_json::from_str::<kube::core::Status>(&text).unwrap_or_else(|_| {
            kube::core::Status::failure(text.trim(), "UpgradeRefused").with_code(status.as_u16())
        });
        return Err(kube::Error::Api(status.boxed()).into());
    }
    let (accept, protocol) = {
        let answered = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        (
            answered(header::SEC_WEBSOCKET_ACCEPT),
            answered(header::SEC_WEBSOCKET_PROTOCOL),
        )
    };
    if accept != Some(derive_accept_key(key.as_bytes())) {
        return Err(kube::Error::UpgradeConnection(Upgrade::SecWebSocketAcceptKeyMismatch).into());
    }
    if protocol.as_deref() != Some(subprotocol) {
        return Err(kube::Error::UpgradeConnection(Upgrade::SecWebSocketProtocolMismatch).into());
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|err| kube::Error::UpgradeConnection(Upgrade::GetPendingUpgrade(err)))?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}

/// How the bytes of the port are framed inside the WebSocket.
enum Framing {
    Spdy(Spdy),
    Channel(Channel),
}

/// SPDY's reading state. The stream ends once the server has ended both
/// of its streams: the runtime ends the data stream first when its dial
/// fails, and then writes why on the error stream.
#[derive(Default)]
struct Spdy {
    parser: spdy::Parser,
    data_ended: bool,
    error_ended: bool,
}

/// The channel protocol's reading state: whether each channel's port
/// prefix was seen, and the message not decoded yet.
#[derive(Default)]
struct Channel {
    data_started: bool,
    error_started: bool,
    message: Option<Bytes>,
}

/// What the server's bytes mean for the stream.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    Data(Bytes),
    /// The server accepted the data stream (SPDY).
    Accepted,
    /// The server pings (SPDY); it wants the same frame back.
    Ping(u32),
    End,
}

impl Framing {
    /// The bytes in front of each data message's payload.
    fn header_len(&self) -> usize {
        match self {
            Framing::Spdy(_) => spdy::DATA_HEADER,
            Framing::Channel(_) => 1,
        }
    }

    /// Starts a data message in `out`.
    fn begin(&self, out: &mut BytesMut) {
        match self {
            Framing::Spdy(_) => out.put_slice(&spdy::data_header(spdy::DATA_STREAM, 0, 0)),
            Framing::Channel(_) => out.put_u8(DATA),
        }
    }

    /// Finishes the data message in `out` once its payload is known.
    fn seal(&self, out: &mut BytesMut) {
        if let Framing::Spdy(_) = self {
            let payload = out.len() - spdy::DATA_HEADER;
            let header = spdy::data_header(spdy::DATA_STREAM, 0, payload);
            out[..spdy::DATA_HEADER].copy_from_slice(&header);
        }
    }

    fn push(&mut self, message: Bytes) {
        match self {
            Framing::Spdy(spdy) => spdy.parser.push(&message),
            Framing::Channel(channel) => channel.message = Some(message),
        }
    }

    /// The next thing the received bytes say, `None` until more arrive.
    fn next(&mut self) -> io::Result<Option<Incoming>> {
        match self {
            Framing::Channel(channel) => {
                let Some(message) = channel.message.take() else {
                    return Ok(None);
                };
                match receive(
                    message,
                    &mut channel.data_started,
                    &mut channel.error_started,
                ) {
                    Received::Data(payload) => Ok(Some(Incoming::Data(payload))),
                    Received::Error(text) => Err(broken(text)),
                    Received::Nothing => Ok(None),
                }
            }
            Framing::Spdy(state) => loop {
                let event = state.parser.next_event().map_err(|err| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("port-forward: {err}"))
                })?;
                let Some(event) = event else {
                    return Ok(None);
                };
                use spdy::{DATA_STREAM, ERROR_STREAM, Event};
                return Ok(Some(match event {
                    Event::Data(DATA_STREAM, payload) => Incoming::Data(payload),
                    Event::Data(ERROR_STREAM, text) if !text.is_empty() => {
                        return Err(broken(String::from_utf8_lossy(&text)));
                    }
                    Event::Reply(DATA_STREAM) => Incoming::Accepted,
                    Event::Fin(stream @ (DATA_STREAM | ERROR_STREAM)) => {
                        if stream == DATA_STREAM {
                            state.data_ended = true;
                        } else {
                            state.error_ended = true;
                        }
                        if !(state.data_ended && state.error_ended) {
                            continue;
                        }
                        Incoming::End
                    }
                    Event::GoAway => Incoming::End,
                    Event::Reset(stream @ (DATA_STREAM | ERROR_STREAM), status) => {
                        return Err(broken(format!(
                            "the runtime reset stream {stream} (SPDY status {status})"
                        )));
                    }
                    Event::Ping(id) => Incoming::Ping(id),
                    _ => continue,
                }));
            },
        }
    }
}

/// What one message of the channel protocol means for the stream.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    Data(Bytes),
    Error(String),
    Nothing,
}

/// Reads one binary message of the channel protocol; `started` says, per
/// channel, whether its port prefix was seen.
fn receive(message: Bytes, data_started: &mut bool, error_started: &mut bool) -> Received {
    let Some((&channel, _)) = message.split_first() else {
        return Received::Nothing;
    };
    let payload = message.slice(1..);
    let started = match channel {
        DATA => data_started,
        ERROR => error_started,
        _ => return Received::Nothing,
    };
    let payload = if *started {
        payload
    } else {
        *started = true;
        // The port number, before anything else on this channel.
        payload.slice(payload.len().min(2)..)
    };
    match channel {
        DATA if !payload.is_empty() => Received::Data(payload),
        ERROR if !payload.is_empty() => {
            Received::Error(String::from_utf8_lossy(&payload).into_owned())
        }
        _ => Received::Nothing,
    }
}

fn broken(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, format!("port-forward: {err}"))
}

impl PortForward {
    fn new(ws: Socket, framing: Framing) -> Self {
        PortForward {
            ws,
            framing,
            pending: Bytes::new(),
            outgoing: BytesMut::new(),
            control: BytesMut::new(),
            fin_sent: false,
            eof: false,
        }
    }

    /// Which protocol this port-forward speaks.
    pub fn protocol(&self) -> Protocol {
        match self.framing {
            Framing::Spdy(_) => Protocol::Spdy,
            Framing::Channel(_) => Protocol::Channel,
        }
    }

    /// Opens the port's streams and waits until the runtime accepts the
    /// data stream: data sent before that would be dropped.
    async fn start_spdy(&mut self, port: u16) -> io::Result<()> {
        let mut opening = BytesMut::new();
        spdy::Encoder::default().open(port, &mut opening);
        self.ws
            .send(Message::Binary(opening.freeze()))
            .await
            .map_err(broken)?;
        loop {
            match self.framing.next()? {
                Some(Incoming::Accepted) => return Ok(()),
                Some(Incoming::Ping(id)) => self.control.put_slice(&spdy::ping(id)),
                Some(Incoming::End) => return Err(broken("the runtime ended the session")),
                // The port cannot speak before its stream is accepted.
                Some(Incoming::Data(_)) => {
                    return Err(broken("data before the stream was accepted"));
                }
                None => match self.ws.next().await {
                    Some(Ok(Message::Binary(message))) => self.framing.push(message),
                    Some(Ok(Message::Close(_))) | None => {
                        return Err(broken("the API server closed the tunnel"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(broken(err)),
                },
            }
        }
    }

    /// Sends the control frames and the gathered data as one message, once
    /// the socket takes it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let has_data = self.outgoing.len() > self.framing.header_len();
        if !has_data && self.control.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(broken)?;
        let message = if has_data {
            self.framing.seal(&mut self.outgoing);
            if self.control.is_empty() {
                self.outgoing.split().freeze()
            } else {
                let mut message = self.control.split();
                message.extend_from_slice(&self.outgoing.split());
                message.freeze()
            }
        } else {
            self.outgoing.clear();
            self.control.split().freeze()
        };
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(message))
            .map_err(broken)?;
        Poll::Ready(Ok(()))
    }

    /// Sends control frames that a read produced (a ping's answer) without
    /// waiting for the next write.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.control.is_empty() {
            return Ok(());
        }
        if let Poll::Ready(result) = self.poll_send(cx) {
            result?;
            if let Poll::Ready(Err(err)) = Pin::new(&mut self.ws).poll_flush(cx) {
                return Err(broken(err));
            }
        }
        Ok(())
    }
}

impl AsyncRead for PortForward {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_answer(cx)?;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.framing.next()? {
                Some(Incoming::Data(payload)) => this.pending = payload,
                Some(Incoming::End) => this.eof = true,
                Some(Incoming::Ping(id)) => {
                    this.control.put_slice(&spdy::ping(id));
                    this.poll_answer(cx)?;
                }
                Some(Incoming::Accepted) => {}
                None => match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                    None | Some(Ok(Message::Close(_))) => this.eof = true,
                    Some(Err(err)) => return Poll::Ready(Err(broken(err))),
                    Some(Ok(Message::Binary(message))) => this.framing.push(message),
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

impl AsyncWrite for PortForward {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let header = this.framing.header_len();
        if this.outgoing.len() >= header + MAX_MESSAGE {
            ready!(this.poll_send(cx))?;
        }
        if this.outgoing.is_empty() {
            this.outgoing.reserve(buf.len().min(MAX_MESSAGE) + header);
            this.framing.begin(&mut this.outgoing);
        }
        let room = header + MAX_MESSAGE - this.outgoing.len();
        let n = buf.len().min(room.max(1));
        this.outgoing.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(broken)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if matches!(this.framing, Framing::Spdy(_)) && !this.fin_sent {
            this.fin_sent = true;
            this.control.put_slice(&spdy::data_fin());
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.ws).poll_close(cx).map_err(broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_port_prefix_is_skipped_once_per_channel() {
        let (mut data, mut error) = (false, false);
        let port = |channel: u8, rest: &[u8]| {
            let mut m = vec![channel, 0xb3, 0x1c];
            m.extend_from_slice(rest);
            Bytes::from(m)
        };
        assert_eq!(
            receive(port(DATA, b""), &mut data, &mut error),
            Received::Nothing
        );
        assert_eq!(
            receive(Bytes::from_static(b"\0hello"), &mut data, &mut error),
            Received::Data(Bytes::from_static(b"hello"))
        );
        // Two bytes that look like a port are data once the channel started.
        assert_eq!(
            receive(Bytes::from_static(b"\0\xb3\x1c"), &mut data, &mut error),
            Received::Data(Bytes::from_static(b"\xb3\x1c"))
        );
        assert_eq!(
            receive(port(ERROR, b""), &mut data, &mut error),
            Received::Nothing
        );
        assert_eq!(
            receive(
                Bytes::from_static(b"\x01lost connection"),
                &mut data,
                &mut error
            ),
            Received::Error("lost connection".into())
        );
        // A first data message with payload right after the port.
        let (mut d2, mut e2) = (false, false);
        assert_eq!(
            receive(port(DATA, b"x"), &mut d2, &mut e2),
            Received::Data(Bytes::from_static(b"x"))
        );
    }

    proptest! {
        #[test]
        fn any_message_is_read_without_a_panic(messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..8)) {
            let (mut data, mut error) = (false, false);
            for m in messages {
                let _ = receive(Bytes::from(m), &mut data, &mut error);
            }
        }
    }
}
