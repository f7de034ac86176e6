//! SPDY/3.1 framing, as much of it as one port-forward needs: open the
//! error and data streams of one port, send data, end our side, answer
//! pings; and read the server's frames back as events.
//!
//! This is what kubectl speaks inside the WebSocket since Kubernetes 1.31
//! (`SPDY/3.1+portforward.k8s.io`): the API server unwraps the WebSocket
//! and passes the SPDY bytes to the kubelet and the container runtime, so
//! those handle exactly what they handle for kubectl. WebSocket message
//! boundaries mean nothing inside: the messages carry one byte stream of
//! frames, which [`Parser`] takes in pieces of any size.
//!
//! Header blocks are zlib streams, one per direction for the whole
//! session. Ours is compressed without SPDY's preset dictionary: a zlib
//! header without the dictionary flag tells the reader none is used, and
//! the few header bytes of a port-forward gain nothing from it. The
//! server's header blocks (its replies) carry nothing a port-forward reads,
//! so they are skipped, never inflated.
//!
//! Neither side does SPDY flow control (the runtime's spdystream ignores
//! WINDOW_UPDATE and never sends one), so neither does this.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};

/// The stream the server writes errors to.
pub const ERROR_STREAM: u32 = 1;
/// The stream that carries the port's bytes.
pub const DATA_STREAM: u32 = 3;
/// The length of a data frame's header; its payload follows.
pub const DATA_HEADER: usize = 8;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// The longest payload a data frame can say it has (24 bits).
pub const MAX_DATA: usize = 0x00ff_ffff;
/// The longest control frame read. A port-forward server's are a few
/// dozen bytes; a longer one means the stream is not SPDY.
const MAX_CONTROL: usize = 64 * 1024;

/// Writes the frames of our side of the session.
pub struct Encoder {
    headers: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            headers: Compress::new(Compression::fast(), true),
        }
    }
}

impl Encoder {
    /// The frames that open a forward to `port`: the error stream and the
    /// data stream (one request, id 0), and the end of our side of the
    /// error stream, which only the server writes to.
    pub fn open(&mut self, port: u16, out: &mut BytesMut) {
        let port = port.to_string();
        for (stream, kind) in [(ERROR_STREAM, "error"), (DATA_STREAM, "data")] {
            self.syn_stream(
                stream,
                &[("streamtype", kind), ("port", &port), ("requestid", "0")],
                out,
            );
        }
        out.put_slice(&data_header(ERROR_STREAM, FLAG_FIN, 0));
    }

    fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)], out: &mut BytesMut) {
        let mut block = Vec::new();
        let count = u32::try_from(headers.len()).unwrap_or(u32::MAX);
        block.put_u32(count);
        for (name, value) in headers {
            for text in [name, value] {
                block.put_u32(u32::try_from(text.len()).unwrap_or(u32::MAX));
                block.put_slice(text.as_bytes());
            }
        }
        let compressed = self.compress(&block);
        out.put_slice(&control_header(SYN_STREAM, 0, compressed.len() + 10));
        out.put_u32(stream & 0x7fff_ffff);
        out.put_u32(0); // associated-to stream
        out.put_u8(0); // priority 0 (the highest), unused bits
        out.put_u8(0); // credential slot
        out.put_slice(&compressed);
    }

    /// Compresses one header block, ending it at a byte boundary (a sync
    /// flush) so the reader gets all of it from this frame alone.
    fn compress(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut consumed = 0;
        loop {
            out.reserve(64);
            let before = self.headers.total_in();
            // Compressing into memory fails only on a broken stream state,
            // which a fresh or sync-flushed stream never has.
            if self
                .headers
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            consumed += usize::try_from(self.headers.total_in() - before).unwrap_or(block.len());
            // Done once all input went in and the flush had room to finish.
            if consumed >= block.len() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

/// A data frame's header: `len` bytes of payload for `stream` follow.
pub fn data_header(stream: u32, flags: u8, len: usize) -> [u8; DATA_HEADER] {
    frame_header(stream & 0x7fff_ffff, flags, len)
}

/// A control frame's header: its type, flags and the length of its body.
fn control_header(kind: u16, flags: u8, len: usize) -> [u8; 8] {
    frame_header(
        0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind),
        flags,
        len,
    )
}

/// Every frame's 8 bytes: a first word (the stream, or the control bit,
/// version and type), then the flags and a 24-bit length.
fn frame_header(first: u32, flags: u8, len: usize) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&first.to_be_bytes());
    let word = (u32::from(flags) << 24) | (len.min(MAX_DATA) as u32);
    header[4..].copy_from_slice(&word.to_be_bytes());
    header
}

/// The frame that ends our side of the data stream.
pub fn data_fin() -> [u8; DATA_HEADER] {
    data_header(DATA_STREAM, FLAG_FIN, 0)
}

/// The answer to the server's ping `id`: the same frame back.
pub fn ping(id: u32) -> [u8; 12] {
    let mut frame = [0u8; 12];
    frame[..8].copy_from_slice(&control_header(PING, 0, 4));
    frame[8..].copy_from_slice(&id.to_be_bytes());
    frame
}

/// What one frame (or part of a data frame) from the server says.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Payload for a stream; a data frame may come as several of these.
    Data(u32, Bytes),
    /// The server's side of a stream ended.
    Fin(u32),
    /// The server accepted a stream we opened.
    Reply(u32),
    /// The server reset a stream, with SPDY's status code.
    Reset(u32, u32),
    /// The server pings; answer with [`ping`].
    Ping(u32),
    /// The server ends the session.
    GoAway,
}

/// Bytes that are not the SPDY a port-forward server speaks.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a SPDY frame of version {0}, where 3 was expected")]
    Version(u16),
    #[error("a SPDY control frame of {0} bytes, longer than a port-forward server sends")]
    TooLong(usize),
    #[error("a SPDY control frame of type {0} too short to read")]
    Short(u16),
}

/// A data frame being read: its stream, the payload still to come, and
/// whether it ends the stream.
#[derive(Debug)]
struct Reading {
    stream: u32,
    left: usize,
    fin: bool,
}

/// Reads the server's frames from pieces of the byte stream.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: BytesMut,
    data: Option<Reading>,
}

impl Parser {
    /// Takes the next piece of the byte stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next event, `None` until more bytes arrive. Data is handed out
    /// as it arrives, without waiting for the rest of its frame.
    pub fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        loop {
            if let Some(reading) = &mut self.data {
                if reading.left > 0 {
                    if self.buffer.is_empty() {
                        return Ok(None);
                    }
                    let n = reading.left.min(self.buffer.len());
                    reading.left -= n;
                    let stream = reading.stream;
                    return Ok(Some(Event::Data(stream, self.buffer.split_to(n).freeze())));
                }
                let (stream, fin) = (reading.stream, reading.fin);
                self.data = None;
                if fin {
                    return Ok(Some(Event::Fin(stream)));
                }
                continue;
            }
            let Some(header) = self.buffer.get(..8) else {
                return Ok(None);
            };
            let first = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let flags = header[4];
            let len = u32::from_be_bytes([0, header[5], header[6], header[7]]) as usize;
            if first & 0x8000_0000 == 0 {
                self.buffer.advance(8);
                self.data = Some(Reading {
                    stream: first & 0x7fff_ffff,
                    left: len,
                    fin: flags & FLAG_FIN != 0,
                });
                continue;
            }
            let version = ((first >> 16) & 0x7fff) as u16;
            let kind = (first & 0xffff) as u16;
            if version != VERSION {
                return Err(FrameError::Version(version));
            }
            if len > MAX_CONTROL {
                return Err(FrameError::TooLong(len));
            }
            if self.buffer.len() < 8 + len {
                return Ok(None);
            }
            self.buffer.advance(8);
            let body = self.buffer.split_to(len).freeze();
            let word = |at: usize| {
                body.get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or(FrameError::Short(kind))
            };
            match kind {
                SYN_REPLY => {
                    let stream = word(0)? & 0x7fff_ffff;
                    if flags & FLAG_FIN != 0 {
                        // Accepted, and already ended from the server's side.
                        self.data = Some(Reading {
                            stream,
                            left: 0,
                            fin: true,
                        });
                    }
                    return Ok(Some(Event::Reply(stream)));
                }
                RST_STREAM => return Ok(Some(Event::Reset(word(0)? & 0x7fff_ffff, word(4)?))),
                PING => return Ok(Some(Event::Ping(word(0)?))),
                GOAWAY => return Ok(Some(Event::GoAway)),
                // SETTINGS, WINDOW_UPDATE, HEADERS, and streams the server
                // would open: nothing a port-forward client acts on.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};
    use proptest::prelude::*;

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = control_header(kind, flags, body.len()).to_vec();
        frame.extend_from_slice(body);
        frame
    }

    fn events(parser: &mut Parser) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(event) = parser.next_event().expect("valid frames") {
            out.push(event);
        }
        out
    }

    /// Reads our opening frames back the way the server does: each SYN_STREAM's
    /// header block inflated by one zlib stream that lasts the session.
    #[test]
    fn the_opening_names_both_streams_of_the_port_in_one_zlib_stream() {
        let mut out = BytesMut::new();
        Encoder::default().open(8080, &mut out);
        let mut inflate = Decompress::new(true);
        let mut streams = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[5], rest[6], rest[7]]) as usize;
            let (frame, tail) = rest.split_at(8 + len);
            rest = tail;
            if frame[0] & 0x80 == 0 {
                // The end of our side of the error stream.
                assert_eq!(frame, data_header(ERROR_STREAM, FLAG_FIN, 0));
                continue;
            }
            assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), SYN_STREAM);
            let id = u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
            let mut block = Vec::with_capacity(1024);
            inflate
                .decompress_vec(&frame[18..], &mut block, FlushDecompress::Sync)
                .expect("inflates");
            let mut b = &block[..];
            let count = b.get_u32();
            let mut headers = Vec::new();
            for _ in 0..count {
                let n = b.get_u32() as usize;
                let name = String::from_utf8(b[..n].to_vec()).expect("utf-8");
                b.advance(n);
                let n = b.get_u32() as usize;
                let value = String::from_utf8(b[..n].to_vec()).expect("utf-8");
                b.advance(n);
                headers.push((name, value));
            }
            assert!(b.is_empty(), "the block holds nothing more");
            streams.push((id, headers));
        }
        let pairs = |kind: &str| {
            vec![
                ("streamtype".to_owned(), kind.to_owned()),
                ("port".to_owned(), "8080".to_owned()),
                ("requestid".to_owned(), "0".to_owned()),
            ]
        };
        assert_eq!(
            streams,
            vec![(ERROR_STREAM, pairs("error")), (DATA_STREAM, pairs("data"))]
        );
    }

    #[test]
    fn frames_split_anywhere_read_the_same() {
        let mut stream = Vec::new();
        stream.extend(control(SYN_REPLY, 0, &[0, 0, 0, 1, 0x78, 0x9c]));
        stream.extend(control(SYN_REPLY, 0, &[0, 0, 0, 3]));
        stream.extend(data_header(DATA_STREAM, 0, 5));
        stream.extend(b"hello");
        stream.extend(control(PING, 0, &[0, 0, 0, 2]));
        stream.extend(control(9, 0, &[0, 0, 0, 3, 0, 1, 0, 0])); // WINDOW_UPDATE
        stream.extend(data_header(ERROR_STREAM, 0, 4));
        stream.extend(b"oops");
        stream.extend(data_header(DATA_STREAM, FLAG_FIN, 0));
        stream.extend(control(RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 5]));
        stream.extend(control(GOAWAY, 0, &[0, 0, 0, 0, 0, 0, 0, 0]));

        let whole = {
            let mut p = Parser::default();
            p.push(&stream);
            events(&mut p)
        };
        let data = |events: &[Event], id: u32| -> Vec<u8> {
            events
                .iter()
                .filter_map(|e| match e {
                    Event::Data(s, b) if *s == id => Some(b.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect()
        };
        let others = |events: &[Event]| -> Vec<String> {
            events
                .iter()
                .filter(|e| !matches!(e, Event::Data(..)))
                .map(|e| format!("{e:?}"))
                .collect()
        };
        assert_eq!(data(&whole, DATA_STREAM), b"hello");
        assert_eq!(data(&whole, ERROR_STREAM), b"oops");
        assert_eq!(
            others(&whole),
            [
                "Reply(1)",
                "Reply(3)",
                "Ping(2)",
                "Fin(3)",
                "Reset(1, 5)",
                "GoAway"
            ]
        );
        for split in 1..stream.len() {
            let mut p = Parser::default();
            let mut got = Vec::new();
            for piece in stream.chunks(split) {
                p.push(piece);
                got.extend(events(&mut p));
            }
            assert_eq!(data(&got, DATA_STREAM), b"hello", "pieces of {split}");
            assert_eq!(others(&got), others(&whole), "pieces of {split}");
        }
    }

    #[test]
    fn a_reply_that_ends_the_stream_says_so() {
        let mut p = Parser::default();
        p.push(&control(SYN_REPLY, FLAG_FIN, &[0, 0, 0, 3]));
        assert_eq!(events(&mut p), [Event::Reply(3), Event::Fin(3)]);
    }

    #[test]
    fn what_is_not_spdy_is_an_error() {
        let mut p = Parser::default();
        p.push(&[0x80, 0x02, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(p.next_event(), Err(FrameError::Version(2)));
        let mut p = Parser::default();
        p.push(&[0x80, 0x03, 0, 2, 0, 0x10, 0, 0]);
        assert_eq!(p.next_event(), Err(FrameError::TooLong(0x10_0000)));
        let mut p = Parser::default();
        p.push(&control(RST_STREAM, 0, &[0, 0, 0, 1]));
        assert_eq!(p.next_event(), Err(FrameError::Short(RST_STREAM)));
    }

    #[test]
    fn a_ping_answer_is_the_frame_a_server_reads_as_a_ping() {
        let mut p = Parser::default();
        p.push(&ping(7));
        assert_eq!(events(&mut p), [Event::Ping(7)]);
        let mut p = Parser::default();
        p.push(&data_fin());
        assert_eq!(events(&mut p), [Event::Fin(DATA_STREAM)]);
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_a_panic(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..10)) {
            let mut p = Parser::default();
            for piece in pieces {
                p.push(&piece);
                while let Ok(Some(_)) = p.next_event() {}
            }
        }

        #[test]
        fn data_comes_out_as_it_went_in(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6), split in 1usize..64) {
            let mut stream = Vec::new();
            for payload in &payloads {
                stream.extend(data_header(DATA_STREAM, 0, payload.len()));
                stream.extend(payload);
            }
            let mut p = Parser::default();
            let mut got = Vec::new();
            for piece in stream.chunks(split) {
                p.push(piece);
                while let Some(event) = p.next_event().expect("valid") {
                    if let Event::Data(DATA_STREAM, bytes) = event {
                        got.extend_from_slice(&bytes);
                    }
                }
            }
            prop_assert_eq!(got, payloads.concat());
        }
    }
}
