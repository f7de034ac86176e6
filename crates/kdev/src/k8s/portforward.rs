//! A port-forward to one pod port as one byte stream, written for the
//! swap tunnel's throughput.
//!
//! kube-rs' `Api::portforward` copies each direction through a task and a
//! channel that holds one message, reading the local side in 4 KiB pieces
//! and sending each as its own WebSocket message. Go's client (kubectl)
//! sends 32 KiB at a time. Here the WebSocket (kube's `Client::connect`, the
//! same upgrade and credentials) *is* the stream: a write becomes one
//! binary message of up to [`MAX_MESSAGE`] bytes behind the data channel's
//! byte, and a read hands out the payload of the next data message, with no
//! task or channel in between. Writes are gathered until the writer
//! flushes (or a message is full), because a yamux frame arrives as two
//! writes, its 12-byte header and its body, and two messages per frame
//! doubled the work of the API server, the kubelet and containerd.
//!
//! The framing is the API server's channel protocol (`v4.channel.k8s.io`,
//! or v5): every message starts with its channel (0 data, 1 error for the
//! first port); the first message of each channel from the server carries
//! the port number (two bytes, little-endian) before any payload. Text on
//! the error channel ends the stream with that error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::{Sink, Stream};
use hyper_util::rt::TokioIo;
use kube::Client;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The largest payload of one message kdev sends: a yamux frame fits whole.
pub const MAX_MESSAGE: usize = 256 * 1024;

const DATA: u8 = 0;
const ERROR: u8 = 1;

/// An open port-forward to one port.
pub struct PortForward {
    ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    /// Payload received and not read yet.
    pending: Bytes,
    /// Written and not sent yet: the next message, its channel byte first.
    outgoing: BytesMut,
    data_started: bool,
    error_started: bool,
    eof: bool,
}

/// Opens a port-forward to `port` of pod `namespace/pod`.
pub async fn open(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> kube::Result<PortForward> {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .portforward(pod, &[port])
        .map_err(kube::Error::BuildRequest)?;
    let connection = client.connect(request).await?;
    Ok(PortForward {
        ws: connection.into_stream(),
        pending: Bytes::new(),
        outgoing: BytesMut::new(),
        data_started: false,
        error_started: false,
        eof: false,
    })
}

/// What one message from the server means for the stream.
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

impl AsyncRead for PortForward {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => this.eof = true,
                Some(Err(err)) => return Poll::Ready(Err(broken(err))),
                Some(Ok(Message::Binary(message))) => {
                    match receive(message, &mut this.data_started, &mut this.error_started) {
                        Received::Data(payload) => this.pending = payload,
                        Received::Error(text) => return Poll::Ready(Err(broken(text))),
                        Received::Nothing => {}
                    }
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl PortForward {
    /// Sends what was gathered as one message, once the socket takes it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.outgoing.len() <= 1 {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(broken)?;
        let message = self.outgoing.split().freeze();
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(message))
            .map_err(broken)?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PortForward {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() > MAX_MESSAGE {
            ready!(this.poll_send(cx))?;
        }
        if this.outgoing.is_empty() {
            this.outgoing.reserve(buf.len().min(MAX_MESSAGE) + 1);
            this.outgoing.put_u8(DATA);
        }
        let n = buf
            .len()
            .min(MAX_MESSAGE + 1 - this.outgoing.len().min(MAX_MESSAGE));
        let n = n.max(1).min(buf.len());
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
