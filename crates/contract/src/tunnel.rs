//! The tunnel between the CLI and the agent in the proxy Pod.
//!
//! The CLI holds one port-forward to the agent's [`AGENT_PORT`] (which the
//! agent binds on the pod's loopback only), proves it holds the session's
//! token with an [`auth`] preamble, and then runs a yamux session over it
//! (the CLI is the yamux client). A connection whose preamble is wrong is
//! closed without a word and changes nothing. Every yamux stream starts with
//! one [`Header`] written by the side that opened it:
//!
//! - [`Header::Inbound`] (agent → CLI): a connection arrived on the proxy
//!   Pod's `port`; the CLI connects it to the local process.
//! - [`Header::Connect`] (CLI → agent): the local process wants `host:port`
//!   in the cluster; the agent dials it and answers with a [`ConnectReply`].
//! - [`Header::Ping`] (CLI → agent): the agent echoes 8 bytes back; the CLI's
//!   keepalive, since a port-forward can die without closing.
//! - [`Header::Dns`] (CLI → agent): the stream is DNS over TCP to the pod's
//!   own nameserver (the first `nameserver` of the agent's `resolv.conf`);
//!   the agent dials it and answers with a [`ConnectReply`]. The local
//!   command's network view asks its names this way, so they are answered as
//!   the pod's are. An agent older than this kind closes the stream.
//!
//! After the header (and reply) the stream carries raw bytes both ways.
//!
//! Wire format: `version: u8, kind: u8, length: u16 BE, payload[length]`.
//! A reader refuses a version it does not know, so a CLI and an agent of
//! different releases fail loudly rather than misread each other.
//!
//! [`AGENT_PORT`]: crate::session::AGENT_PORT

use std::fmt;

pub const VERSION: u8 = 1;

/// The first bytes of a tunnel connection: who may become the tunnel.
///
/// Wire format: the 8 bytes `KDEVAUTH`, a version byte (1), then the
/// session's [`TOKEN_LEN`]-byte token. The token is made by the CLI, kept in
/// a Secret owned by the session's Lease and mounted into the agent; it never
/// appears in a Pod spec, an argument or a log.
pub mod auth {
    /// Bytes of a session token.
    pub const TOKEN_LEN: usize = 32;
    const MAGIC: &[u8; 8] = b"KDEVAUTH";
    const VERSION: u8 = 1;
    /// The preamble's length.
    pub const LEN: usize = MAGIC.len() + 1 + TOKEN_LEN;

    /// The preamble proving `token`.
    pub fn preamble(token: &[u8; TOKEN_LEN]) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        out[MAGIC.len()] = VERSION;
        out[MAGIC.len() + 1..].copy_from_slice(token);
        out
    }

    /// True when `received` is the preamble for `token`. Compares every byte
    /// whatever the first difference, so timing tells nothing of the token.
    pub fn verify(received: &[u8], token: &[u8; TOKEN_LEN]) -> bool {
        let expected = preamble(token);
        received.len() == LEN
            && received
                .iter()
                .zip(expected.iter())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// A token from its file form (the raw bytes, as the Secret holds them).
    pub fn token_from(bytes: &[u8]) -> Option<[u8; TOKEN_LEN]> {
        bytes.try_into().ok()
    }
}

const KIND_INBOUND: u8 = 1;
const KIND_CONNECT: u8 = 2;
const KIND_PING: u8 = 3;
const KIND_DNS: u8 = 4;

/// The longest host name a Connect may carry (DNS names are at most 253).
pub const MAX_HOST_LEN: usize = 253;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    Inbound { port: u16 },
    Connect { host: String, port: u16 },
    Ping,
    Dns,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes are needed; the value is how many the whole header takes,
    /// when known.
    Incomplete(Option<usize>),
    UnknownVersion(u8),
    UnknownKind(u8),
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete(_) => write!(f, "stream header cut short"),
            DecodeError::UnknownVersion(v) => write!(
                f,
                "tunnel protocol version {v} is not {VERSION}: use the same kdev release for the CLI and the agent image"
            ),
            DecodeError::UnknownKind(k) => write!(f, "unknown stream kind {k}"),
            DecodeError::Malformed(what) => write!(f, "malformed stream header: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload) = match self {
            Header::Inbound { port } => (KIND_INBOUND, port.to_be_bytes().to_vec()),
            Header::Connect { host, port } => {
                let mut payload = port.to_be_bytes().to_vec();
                payload.extend_from_slice(host.as_bytes());
                (KIND_CONNECT, payload)
            }
            Header::Ping => (KIND_PING, Vec::new()),
            Header::Dns => (KIND_DNS, Vec::new()),
        };
        let mut out = vec![VERSION, kind];
        // Payloads are at most 2 + MAX_HOST_LEN bytes (hosts are checked on
        // decode; an over-long host is refused by the agent's dial anyway).
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes a header from the start of `buf`; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(Header, usize), DecodeError> {
        if buf.len() < 4 {
            return Err(DecodeError::Incomplete(None));
        }
        if buf[0] != VERSION {
            return Err(DecodeError::UnknownVersion(buf[0]));
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let total = 4 + len;
        if buf.len() < total {
            return Err(DecodeError::Incomplete(Some(total)));
        }
        let payload = &buf[4..total];
        let port = || -> Result<u16, DecodeError> {
            payload
                .get(..2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .ok_or(DecodeError::Malformed("no port"))
        };
        let header = match buf[1] {
            KIND_INBOUND if len == 2 => Header::Inbound { port: port()? },
            KIND_INBOUND => return Err(DecodeError::Malformed("inbound payload is not 2 bytes")),
            KIND_CONNECT => {
                let host = std::str::from_utf8(&payload[2.min(len)..])
                    .map_err(|_| DecodeError::Malformed("host is not UTF-8"))?;
                if host.is_empty() || host.len() > MAX_HOST_LEN {
                    return Err(DecodeError::Malformed("host is empty or too long"));
                }
                Header::Connect {
                    host: host.to_owned(),
                    port: port()?,
                }
            }
            KIND_PING if len == 0 => Header::Ping,
            KIND_PING => return Err(DecodeError::Malformed("ping carries a payload")),
            KIND_DNS if len == 0 => Header::Dns,
            KIND_DNS => return Err(DecodeError::Malformed("dns carries a payload")),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        Ok((header, total))
    }
}

/// The agent's answer to a [`Header::Connect`]: `0` for connected, or a
/// [`Failure`] code followed by a u16 BE length and a UTF-8 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectReply {
    Connected,
    Failed(Failure, String),
}

/// Why a dial failed, as far as the pod's kernel said: the network view
/// ends the local command's `connect()` the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Anything else (the code of kdev before the codes below existed).
    Other = 1,
    /// The far end answered with a reset (nothing listens there).
    Refused = 2,
    /// No route to the host or its network.
    Unreachable = 3,
    /// Nothing answered in time.
    TimedOut = 4,
}

impl Failure {
    /// The failure a dial's error stands for.
    pub fn of(kind: std::io::ErrorKind) -> Failure {
        use std::io::ErrorKind as K;
        match kind {
            K::ConnectionRefused => Failure::Refused,
            K::HostUnreachable | K::NetworkUnreachable => Failure::Unreachable,
            K::TimedOut => Failure::TimedOut,
            _ => Failure::Other,
        }
    }

    /// The error kind a local `connect()` would have had.
    pub fn kind(self) -> std::io::ErrorKind {
        use std::io::ErrorKind as K;
        match self {
            Failure::Other | Failure::Refused => K::ConnectionRefused,
            Failure::Unreachable => K::HostUnreachable,
            Failure::TimedOut => K::TimedOut,
        }
    }

    fn from_code(code: u8) -> Option<Failure> {
        Some(match code {
            1 => Failure::Other,
            2 => Failure::Refused,
            3 => Failure::Unreachable,
            4 => Failure::TimedOut,
            _ => return None,
        })
    }
}

impl ConnectReply {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ConnectReply::Connected => vec![0],
            ConnectReply::Failed(why, message) => {
                let message = &message.as_bytes()[..message.len().min(1024)];
                let mut out = vec![*why as u8];
                out.extend_from_slice(&(message.len() as u16).to_be_bytes());
                out.extend_from_slice(message);
                out
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<(ConnectReply, usize), DecodeError> {
        match buf.first() {
            None => Err(DecodeError::Incomplete(None)),
            Some(0) => Ok((ConnectReply::Connected, 1)),
            Some(code) => {
                let why =
                    Failure::from_code(*code).ok_or(DecodeError::Malformed("connect reply"))?;
                if buf.len() < 3 {
                    return Err(DecodeError::Incomplete(None));
                }
                let total = 3 + usize::from(u16::from_be_bytes([buf[1], buf[2]]));
                if buf.len() < total {
                    return Err(DecodeError::Incomplete(Some(total)));
                }
                let message = String::from_utf8_lossy(&buf[3..total]).into_owned();
                Ok((ConnectReply::Failed(why, message), total))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        for header in [
            Header::Inbound { port: 8080 },
            Header::Connect {
                host: "db.team.svc.cluster.local".into(),
                port: 5432,
            },
            Header::Ping,
            Header::Dns,
        ] {
            let mut bytes = header.encode();
            let len = bytes.len();
            bytes.extend_from_slice(b"trailing data");
            assert_eq!(Header::decode(&bytes), Ok((header, len)));
        }
    }

    #[test]
    fn a_short_buffer_asks_for_more() {
        let bytes = Header::Connect {
            host: "x".into(),
            port: 1,
        }
        .encode();
        for cut in 0..bytes.len() {
            assert!(matches!(
                Header::decode(&bytes[..cut]),
                Err(DecodeError::Incomplete(_))
            ));
        }
    }

    #[test]
    fn another_version_is_refused_with_advice() {
        let mut bytes = Header::Ping.encode();
        bytes[0] = 2;
        let err = Header::decode(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::UnknownVersion(2));
        assert!(err.to_string().contains("same kdev release"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(
            Header::decode(&[VERSION, 9, 0, 0]),
            Err(DecodeError::UnknownKind(9))
        );
        assert!(matches!(
            Header::decode(&[VERSION, KIND_CONNECT, 0, 2, 0, 80]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Header::decode(&[VERSION, KIND_INBOUND, 0, 1, 0]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            ConnectReply::Connected,
            ConnectReply::Failed(Failure::Refused, "connection refused".into()),
            ConnectReply::Failed(Failure::Other, "no such host".into()),
            ConnectReply::Failed(Failure::Unreachable, "no route to host".into()),
            ConnectReply::Failed(Failure::TimedOut, "timed out".into()),
        ] {
            let bytes = reply.encode();
            assert_eq!(ConnectReply::decode(&bytes), Ok((reply, bytes.len())));
        }
    }

    /// A reply of kdev before the failure codes (code 1, "other") still
    /// reads.
    #[test]
    fn an_older_failure_reads_as_other() {
        let bytes = [1, 0, 2, b'n', b'o'];
        assert_eq!(
            ConnectReply::decode(&bytes),
            Ok((ConnectReply::Failed(Failure::Other, "no".into()), 5))
        );
    }

    #[test]
    fn a_dials_error_is_its_failure_and_back() {
        use std::io::ErrorKind as K;
        for kind in [K::ConnectionRefused, K::HostUnreachable, K::TimedOut] {
            assert_eq!(Failure::of(kind).kind(), kind);
        }
        assert_eq!(Failure::of(K::NetworkUnreachable), Failure::Unreachable);
        assert_eq!(Failure::of(K::PermissionDenied), Failure::Other);
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Header::decode(&bytes);
            let _ = ConnectReply::decode(&bytes);
        }

        #[test]
        fn any_header_round_trips(host in "[a-z0-9.-]{1,200}", port in proptest::prelude::any::<u16>()) {
            for header in [Header::Inbound { port }, Header::Connect { host: host.clone(), port }, Header::Ping, Header::Dns] {
                let bytes = header.encode();
                proptest::prop_assert_eq!(Header::decode(&bytes), Ok((header, bytes.len())));
            }
        }
    }

    #[test]
    fn only_the_right_token_passes() {
        let token = [7u8; auth::TOKEN_LEN];
        let preamble = auth::preamble(&token);
        assert!(auth::verify(&preamble, &token));
        let mut other = token;
        other[31] = 8;
        assert!(!auth::verify(&preamble, &other));
        assert!(!auth::verify(&preamble[..auth::LEN - 1], &token));
        assert!(!auth::verify(b"GET / HTTP/1.1\r\n\r\n", &token));
        assert_eq!(auth::token_from(&[1u8; 32]), Some([1u8; 32]));
        assert_eq!(auth::token_from(&[1u8; 31]), None);
    }

    proptest::proptest! {
        #[test]
        fn verifying_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let _ = auth::verify(&bytes, &[0u8; auth::TOKEN_LEN]);
            let _ = auth::token_from(&bytes);
        }
    }
}
