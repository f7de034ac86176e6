//! Netlink framing, the one way the network view writes and reads netlink
//! messages on a socket the helper made inside the command's namespace: the
//! netfilter queue ([`super::queue`]) and the socket diagnostics that list
//! the command's listening ports ([`super::ports`]).
//!
//! Kept here rather than taken from netlink-packet-core: both users need
//! only the 16-byte header around bodies they write themselves, and the
//! sockets are made elsewhere and passed in, which netlink-sys does not
//! take.

use std::os::fd::OwnedFd;

/// The kernel's answer to a request: an error code (0 is an acknowledgement).
pub const NLMSG_ERROR: u16 = 2;
/// The end of a dump.
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
/// A dump: every object that matches (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;

const HEADER: usize = 16;

/// One message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    /// What follows the header.
    pub body: &'a [u8],
}

/// A message of `kind` with `body` behind its header.
pub fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = HEADER + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    // The port id: the kernel fills in the sender's.
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out
}

/// The messages of a datagram. Stops at the first malformed one.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest.get(4..6)?.try_into().ok()?);
        let seq = u32::from_ne_bytes(rest.get(8..12)?.try_into().ok()?);
        if len < HEADER {
            return None;
        }
        let body = rest.get(HEADER..len)?;
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(Message { kind, seq, body })
    })
}

/// The code of an [`NLMSG_ERROR`] message's body: 0 for an
/// acknowledgement, else a negated errno.
pub fn error_code(body: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(body.get(..4)?.try_into().ok()?))
}

/// Sends `bytes` to the kernel.
pub fn send(fd: &OwnedFd, bytes: &[u8]) -> std::io::Result<()> {
    let kernel = rustix::net::netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(fd, bytes, rustix::net::SendFlags::empty(), &kernel)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_read_back_in_order_with_their_padding() {
        let mut datagram = message(20, NLM_F_REQUEST, 7, &[1, 2, 3]);
        datagram.resize(datagram.len().next_multiple_of(4), 0);
        datagram.extend(message(NLMSG_DONE, 0, 8, &[0; 4]));
        let read: Vec<Message> = messages(&datagram).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(
            (read[0].kind, read[0].seq, read[0].body),
            (20, 7, &[1u8, 2, 3][..])
        );
        assert_eq!((read[1].kind, read[1].seq), (NLMSG_DONE, 8));
    }

    proptest! {
        /// The kernel's bytes are outside input: any datagram reads as
        /// messages or nothing, never a panic or a loop.
        #[test]
        fn any_datagram_is_read_without_panicking(datagram in proptest::collection::vec(any::<u8>(), 0..512)) {
            for message in messages(&datagram) {
                prop_assert!(message.body.len() <= datagram.len());
                let _ = error_code(message.body);
            }
        }
    }
}
