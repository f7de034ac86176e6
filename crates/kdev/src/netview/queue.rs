//! Held connection attempts: the kernel's netfilter queue (NFQUEUE) lets
//! kdev see each TCP SYN the command sends before the kernel answers it, so
//! the connection is dialled first and the command's `connect()` ends as it
//! would in the pod: established when the far end accepted, refused (a
//! reset) when it refused, and unanswered when the far end could not be
//! reached, as a pod's SYN to an address no node routes is (the kernel
//! sends no ICMP error for a packet it makes itself, so "no route to host"
//! cannot be given here).
//! Without the queue the capture socket would complete every handshake at
//! once, and a refused connection could only be reset after the fact.
//!
//! The helper makes the netlink socket inside the namespace (a socket
//! belongs to the namespace it was made in) and hands it over; kdev binds
//! the queue and gives the verdicts (the user who owns the namespace holds
//! its CAP_NET_ADMIN from outside too). The queue's rule carries
//! `--queue-bypass` and the queue is set to fail open, so a kdev that stops
//! reading leaves the command's connections to the capture socket as before.
//!
//! The messages are written and read here: no maintained crate carries the
//! netfilter queue's messages over a socket it did not open itself (`nfq`
//! opens its own socket in the caller's namespace; netlink-packet-netfilter
//! has no queue messages). The IPv4 and TCP headers are read by etherparse.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use super::netlink::{self, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, error_code, messages, send};

/// The queue the helper's rule sends SYNs to.
pub const QUEUE: u16 = 0;
/// The mark a verdict puts on a SYN to be refused: the NAT lets it pass and
/// the filter answers it with a TCP reset.
pub const MARK_REFUSED: u32 = 0x4b45;
/// How much of each packet the kernel copies: an IPv4 header (at most 60
/// bytes) and the start of the TCP header.
const COPY_RANGE: u32 = 128;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = NFNL_SUBSYS_QUEUE << 8;
const NFQNL_MSG_VERDICT: u16 = (NFNL_SUBSYS_QUEUE << 8) | 1;
const NFQNL_MSG_CONFIG: u16 = (NFNL_SUBSYS_QUEUE << 8) | 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// Attribute types carry two flag bits on top.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A TCP SYN the kernel holds until its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    /// The kernel's id for the verdict.
    pub id: u32,
    /// Who sends it: the command's socket.
    pub from: SocketAddrV4,
    /// Where it goes, before any NAT.
    pub to: SocketAddrV4,
}

/// What becomes of a held SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On to the capture socket: the far end accepted.
    Pass,
    /// Answered with a reset: `connect()` fails with "connection refused".
    Refuse,
    /// Dropped, as a network that never answers does: the command's own
    /// timeout (and its SYN retries) apply.
    Drop,
}

/// The queue, bound, on the netlink socket the helper made. A thread of its
/// own reads the held SYNs (a blocking read with a timeout, so it ends soon
/// after the queue is dropped: tokio registers a descriptor only through
/// `unsafe` now, which this crate forbids); verdicts are written at once.
pub struct Queue {
    fd: std::sync::Arc<OwnedFd>,
    syns: tokio::sync::mpsc::Receiver<std::io::Result<Vec<Syn>>>,
}

/// The verdict side of a [`Queue`], for the tasks that dial.
#[derive(Clone)]
pub struct Verdicts {
    fd: std::sync::Arc<OwnedFd>,
}

/// How long the reading thread blocks before it looks whether the queue is
/// still wanted.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

impl Queue {
    /// Binds queue [`QUEUE`] on `fd` (a `NETLINK_NETFILTER` socket made in
    /// the view's namespace), copying [`COPY_RANGE`] bytes of each packet,
    /// failing open when full.
    pub async fn bind(fd: OwnedFd) -> std::io::Result<Queue> {
        tokio::task::spawn_blocking(move || Self::bind_blocking(fd))
            .await
            .map_err(std::io::Error::other)?
    }

    fn bind_blocking(fd: OwnedFd) -> std::io::Result<Queue> {
        rustix::net::bind(&fd, &rustix::net::netlink::SocketAddrNetlink::new(0, 0))?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(READ_TIMEOUT),
        )?;
        let mut attrs = Vec::new();
        put_attr(&mut attrs, NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
        let mut params = COPY_RANGE.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_PACKET);
        put_attr(&mut attrs, NFQA_CFG_PARAMS, &params);
        put_attr(
            &mut attrs,
            NFQA_CFG_FLAGS,
            &NFQA_CFG_F_FAIL_OPEN.to_be_bytes(),
        );
        put_attr(
            &mut attrs,
            NFQA_CFG_MASK,
            &NFQA_CFG_F_FAIL_OPEN.to_be_bytes(),
        );
        send(
            &fd,
            &message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, 1, &attrs),
        )?;
        // The acknowledgement: an error message whose code is 0.
        let mut buf = vec![0u8; 8192];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        'ack: loop {
            let len = match rustix::net::recv(&fd, &mut buf[..], rustix::net::RecvFlags::empty()) {
                Ok((_, len)) => len.min(buf.len()),
                Err(rustix::io::Errno::AGAIN) if std::time::Instant::now() < deadline => continue,
                Err(err) => return Err(err.into()),
            };
            for netlink::Message { kind, body, .. } in messages(&buf[..len]) {
                if kind == NLMSG_ERROR {
                    match error_code(body) {
                        Some(0) => break 'ack,
                        Some(code) => return Err(std::io::Error::from_raw_os_error(-code)),
                        None => {
                            return Err(std::io::Error::other(
                                "a malformed netlink acknowledgement",
                            ));
                        }
                    }
                }
            }
        }
        let fd = std::sync::Arc::new(fd);
        let (tx, syns) = tokio::sync::mpsc::channel(64);
        let reader = fd.clone();
        std::thread::Builder::new()
            .name("kdev-netview-queue".into())
            .spawn(move || read_syns(&reader, &tx))?;
        Ok(Queue { fd, syns })
    }

    /// The next held SYNs (one datagram may carry several).
    pub async fn next(&mut self) -> std::io::Result<Vec<Syn>> {
        self.syns
            .recv()
            .await
            .unwrap_or_else(|| Err(std::io::Error::other("the queue's reader ended")))
    }

    /// Where verdicts go.
    pub fn verdicts(&self) -> Verdicts {
        Verdicts {
            fd: self.fd.clone(),
        }
    }
}

impl Verdicts {
    /// Gives held SYN `id` its verdict.
    pub fn give(&self, id: u32, verdict: Verdict) -> std::io::Result<()> {
        let (code, mark) = match verdict {
            Verdict::Pass => (NF_ACCEPT, None),
            Verdict::Refuse => (NF_ACCEPT, Some(MARK_REFUSED)),
            Verdict::Drop => (NF_DROP, None),
        };
        let mut attrs = Vec::new();
        let mut header = code.to_be_bytes().to_vec();
        header.extend_from_slice(&id.to_be_bytes());
        put_attr(&mut attrs, NFQA_VERDICT_HDR, &header);
        if let Some(mark) = mark {
            put_attr(&mut attrs, NFQA_MARK, &mark.to_be_bytes());
        }
        // The kernel handles a netlink message within the send: no wait.
        send(
            &self.fd,
            &message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, &attrs),
        )
    }
}

/// The reading thread: held SYNs to `tx` until its receiver is gone.
fn read_syns(fd: &OwnedFd, tx: &tokio::sync::mpsc::Sender<std::io::Result<Vec<Syn>>>) {
    let mut buf = vec![0u8; 8192];
    while !tx.is_closed() {
        match rustix::net::recv(fd, &mut buf[..], rustix::net::RecvFlags::empty()) {
            Ok((_, len)) => {
                let syns: Vec<Syn> = messages(&buf[..len.min(buf.len())])
                    .filter(|m| m.kind == NFQNL_MSG_PACKET)
                    .filter_map(|m| packet(m.body))
                    .collect();
                if !syns.is_empty() && tx.blocking_send(Ok(syns)).is_err() {
                    return;
                }
            }
            // The timeout, or the kernel's queue outran us (the SYNs it
            // could not deliver failed open, to the capture socket).
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::NOBUFS | rustix::io::Errno::INTR) => {
            }
            Err(err) => {
                let _ = tx.blocking_send(Err(err.into()));
                return;
            }
        }
    }
}

/// A queue message of `kind`: the netfilter header for queue [`QUEUE`],
/// then `attrs`.
fn message(kind: u16, flags: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    // nfgenmsg: family AF_UNSPEC, version 0, the queue (big-endian).
    let mut body = vec![0, 0];
    body.extend_from_slice(&QUEUE.to_be_bytes());
    body.extend_from_slice(attrs);
    netlink::message(kind, flags, seq, &body)
}

/// Appends one attribute, padded to 4 bytes.
fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The attributes after a netfilter header: (type, value).
fn attrs(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body.get(4..).unwrap_or_default();
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        if len < 4 {
            return None;
        }
        let value = rest.get(4..len)?;
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// A queued packet's id and addresses, when it is an IPv4 TCP packet.
fn packet(body: &[u8]) -> Option<Syn> {
    let (mut id, mut payload) = (None, None);
    for (kind, value) in attrs(body) {
        match kind {
            NFQA_PACKET_HDR => id = Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?)),
            NFQA_PAYLOAD => payload = Some(value),
            _ => {}
        }
    }
    let (id, payload) = (id?, payload?);
    let ip = etherparse::Ipv4HeaderSlice::from_slice(payload).ok()?;
    if ip.protocol() != etherparse::IpNumber::TCP {
        return None;
    }
    let tcp = payload.get(ip.slice().len()..)?;
    // The ports are the TCP header's first four bytes; the kernel copied at
    // least those (COPY_RANGE), maybe not the whole header with options.
    let ports = tcp.get(..4)?;
    let from_port = u16::from_be_bytes([ports[0], ports[1]]);
    let to_port = u16::from_be_bytes([ports[2], ports[3]]);
    Some(Syn {
        id,
        from: SocketAddrV4::new(Ipv4Addr::from(ip.source()), from_port),
        to: SocketAddrV4::new(Ipv4Addr::from(ip.destination()), to_port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A queued packet message as the kernel writes it.
    fn queued(id: u32, from: SocketAddrV4, to: SocketAddrV4) -> Vec<u8> {
        let ip = etherparse::Ipv4Header::new(
            20,
            64,
            etherparse::IpNumber::TCP,
            from.ip().octets(),
            to.ip().octets(),
        )
        .expect("a header");
        let mut payload = ip.to_bytes().to_vec();
        payload.extend_from_slice(&from.port().to_be_bytes());
        payload.extend_from_slice(&to.port().to_be_bytes());
        payload.extend_from_slice(&[0; 16]);
        let mut attrs = Vec::new();
        let mut header = id.to_be_bytes().to_vec();
        header.extend_from_slice(&0x0800u16.to_be_bytes());
        header.push(3);
        put_attr(&mut attrs, NFQA_PACKET_HDR, &header);
        put_attr(&mut attrs, NFQA_PAYLOAD, &payload);
        message(NFQNL_MSG_PACKET, 0, 0, &attrs)
    }

    #[test]
    fn a_queued_syn_reads_back() {
        let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 1), 443);
        let mut datagram = queued(7, from, to);
        datagram.extend(queued(
            8,
            from,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 80),
        ));
        let syns: Vec<Syn> = messages(&datagram)
            .filter(|m| m.kind == NFQNL_MSG_PACKET)
            .filter_map(|m| packet(m.body))
            .collect();
        assert_eq!(syns.len(), 2);
        assert_eq!(syns[0], Syn { id: 7, from, to });
        assert_eq!(syns[1].id, 8);
        assert_eq!(syns[1].to.port(), 80);
    }

    #[test]
    fn a_verdict_carries_its_id_and_mark() {
        let mut attrs = Vec::new();
        put_attr(&mut attrs, NFQA_VERDICT_HDR, &[0, 0, 0, 1, 0, 0, 0, 9]);
        put_attr(&mut attrs, NFQA_MARK, &MARK_REFUSED.to_be_bytes());
        let bytes = message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, 3, &attrs);
        let netlink::Message { kind, body, .. } = messages(&bytes).next().expect("a message");
        assert_eq!(kind, NFQNL_MSG_VERDICT);
        let read: Vec<(u16, Vec<u8>)> = super::attrs(body).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(read[0], (NFQA_VERDICT_HDR, vec![0, 0, 0, 1, 0, 0, 0, 9]));
        assert_eq!(read[1], (NFQA_MARK, MARK_REFUSED.to_be_bytes().to_vec()));
    }

    proptest! {
        /// The kernel's bytes are outside input: any datagram yields
        /// messages and SYNs or nothing, never a panic or a loop.
        #[test]
        fn any_datagram_is_read_without_panicking(datagram in proptest::collection::vec(any::<u8>(), 0..512)) {
            for message in messages(&datagram) {
                let _ = packet(message.body);
            }
        }

        /// A real message cut anywhere reads as no SYN, not a wrong one.
        #[test]
        fn a_cut_message_is_no_syn(cut in 0usize..80) {
            let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
            let to = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 1), 443);
            let whole = queued(1, from, to);
            let cut = &whole[..cut.min(whole.len())];
            for message in messages(cut) {
                if let Some(syn) = packet(message.body) {
                    prop_assert_eq!(syn, Syn { id: 1, from, to });
                }
            }
        }
    }
}
