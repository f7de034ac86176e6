//! Which TCP ports the command listens on.
//!
//! Asked of the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, what
//! `ss -lt` asks), on a socket the helper made inside the command's network
//! namespace ([`Diag`]): a dump of listening sockets only walks the
//! kernel's table of listeners. Reading `/proc/<pid>/net/tcp` instead walks
//! the whole table of connections, which every network namespace shares
//! and which is sized by the machine's memory, on every read: 3.4 to 4.4 ms
//! a poll on a 24 GiB machine against 30 to 60 µs, which at a poll every
//! 25 ms was 15 % of a core for an idle session and a third
//! of kdev's CPU while bytes flowed. The `/proc` listing ([`listening`]) is
//! the fallback where the kernel has no socket diagnostics.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use super::netlink::{self, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR};

/// The state column's value for LISTEN in `/proc/net/tcp`.
const LISTEN: &str = "0A";
/// `TCP_LISTEN` in the kernel's numbering of TCP states.
const TCP_LISTEN: u8 = 10;
/// The request (and reply) type of a socket diagnostics dump.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The local ports of the listening sockets in one `/proc/net/tcp{,6}`
/// listing. Lines that do not parse are skipped: the kernel writes this
/// text, but a reader must not fall over a format it does not know.
pub fn listening(text: &str) -> BTreeSet<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let local = fields.next()?;
            let _remote = fields.next()?;
            let state = fields.next()?;
            if state != LISTEN {
                return None;
            }
            let (_, port) = local.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// A dump request for the listening TCP sockets of `family`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    // inet_diag_req_v2: family, protocol, extensions, padding, the states
    // wanted (a bit per state); then a socket id of zeros (48 bytes: any).
    let mut body = vec![family, IPPROTO_TCP, 0, 0];
    body.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    body.extend_from_slice(&[0; 48]);
    netlink::message(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, &body)
}

/// What one datagram of a dump's reply to request `seq` says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reply {
    ports: BTreeSet<u16>,
    /// The dump ended (done, or failed).
    done: bool,
    /// The errno the kernel failed the dump with.
    error: Option<i32>,
}

/// Reads one datagram of a dump's reply; messages of another request
/// (left from one that failed halfway) are passed over.
fn reply(datagram: &[u8], seq: u32) -> Reply {
    let mut reply = Reply::default();
    for message in netlink::messages(datagram).filter(|m| m.seq == seq) {
        match message.kind {
            NLMSG_DONE => reply.done = true,
            NLMSG_ERROR => {
                let code = netlink::error_code(message.body).unwrap_or(-1);
                if code != 0 {
                    reply.error = Some(code.saturating_neg());
                    reply.done = true;
                }
            }
            // inet_diag_msg: family, state, timer, retransmits, then the
            // socket id, whose first field is the local port (big-endian).
            SOCK_DIAG_BY_FAMILY => {
                if message.body.get(1) == Some(&TCP_LISTEN)
                    && let Some(port) = message.body.get(4..6)
                {
                    reply.ports.insert(u16::from_be_bytes([port[0], port[1]]));
                }
            }
            _ => {}
        }
    }
    reply
}

/// The socket diagnostics of one network namespace: a netlink socket made
/// in it, non-blocking (the kernel writes a dump's parts while it is sent
/// and read, so a read never has to wait).
pub struct Diag {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Diag {
    /// Takes `fd`, a `NETLINK_SOCK_DIAG` socket.
    pub fn new(fd: OwnedFd) -> std::io::Result<Diag> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Diag {
            fd,
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    /// The ports listened on over IPv4 and IPv6.
    pub fn listening(&mut self) -> std::io::Result<BTreeSet<u16>> {
        let mut ports = BTreeSet::new();
        for family in [AF_INET, AF_INET6] {
            self.seq = self.seq.wrapping_add(1);
            netlink::send(&self.fd, &request(family, self.seq))?;
            loop {
                let (_, len) = rustix::net::recv(
                    &self.fd,
                    &mut self.buf[..],
                    rustix::net::RecvFlags::empty(),
                )?;
                let part = reply(&self.buf[..len.min(self.buf.len())], self.seq);
                ports.extend(part.ports);
                match part.error {
                    // A kernel without IPv6 has nothing to list there.
                    Some(code)
                        if family == AF_INET6
                            && code == rustix::io::Errno::NOENT.raw_os_error() =>
                    {
                        break;
                    }
                    Some(code) => return Err(std::io::Error::from_raw_os_error(code)),
                    None if part.done => break,
                    None => {}
                }
            }
        }
        Ok(ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn listening_sockets_are_read_and_connections_are_not() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening(text), BTreeSet::from([80, 8080]));
        let six = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000\n";
        assert_eq!(listening(six), BTreeSet::from([8081]));
    }

    /// An inet_diag_msg for a socket in `state` on local `port`, as the
    /// kernel writes it (72 bytes).
    fn diag_message(seq: u32, state: u8, port: u16) -> Vec<u8> {
        let mut body = vec![AF_INET, state, 0, 0];
        body.extend_from_slice(&port.to_be_bytes());
        body.resize(72, 0);
        netlink::message(SOCK_DIAG_BY_FAMILY, 2, seq, &body)
    }

    #[test]
    fn a_dump_reply_gives_its_listeners_and_ends() {
        let mut datagram = diag_message(5, TCP_LISTEN, 8080);
        datagram.extend(diag_message(5, 1, 43210));
        // Left from an earlier request.
        datagram.extend(diag_message(4, TCP_LISTEN, 9999));
        datagram.extend(diag_message(5, TCP_LISTEN, 2345));
        let part = reply(&datagram, 5);
        assert_eq!(part.ports, BTreeSet::from([2345, 8080]));
        assert!(!part.done);
        let end = reply(&netlink::message(NLMSG_DONE, 2, 5, &[0; 4]), 5);
        assert!(end.done && end.error.is_none());
        let failed = reply(
            &netlink::message(NLMSG_ERROR, 0, 5, &(-2i32).to_ne_bytes()),
            5,
        );
        assert_eq!((failed.done, failed.error), (true, Some(2)));
    }

    #[test]
    fn the_request_asks_for_listening_tcp_sockets_of_one_family() {
        let bytes = request(AF_INET6, 9);
        let message = netlink::messages(&bytes).next().expect("a message");
        assert_eq!((message.kind, message.seq), (SOCK_DIAG_BY_FAMILY, 9));
        assert_eq!(&message.body[..4], &[AF_INET6, IPPROTO_TCP, 0, 0]);
        assert_eq!(&message.body[4..8], &(1u32 << TCP_LISTEN).to_ne_bytes());
        assert_eq!(message.body.len(), 56);
    }

    /// The kernel's own answer, in this test's network namespace: a
    /// listener is listed, a connection on another port is not.
    #[test]
    fn the_kernel_lists_a_listener_and_not_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("address").port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let client_port = client.local_addr().expect("address").port();
        let fd = rustix::net::socket(
            rustix::net::AddressFamily::NETLINK,
            rustix::net::SocketType::DGRAM,
            Some(rustix::net::netlink::SOCK_DIAG),
        )
        .expect("a socket diagnostics socket");
        let mut diag = Diag::new(fd).expect("non-blocking");
        for _ in 0..3 {
            let ports = diag.listening().expect("a dump");
            assert!(ports.contains(&port), "{port} not in {ports:?}");
            assert!(!ports.contains(&client_port), "{client_port} in {ports:?}");
        }
        drop(listener);
        assert!(!diag.listening().expect("a dump").contains(&port));
    }

    proptest! {
        #[test]
        fn any_text_is_read_without_panicking(text in ".{0,400}") {
            let _ = listening(&text);
        }

        /// The kernel's bytes are outside input: any datagram reads as
        /// some ports or none, never a panic.
        #[test]
        fn any_reply_is_read_without_panicking(datagram in proptest::collection::vec(any::<u8>(), 0..512), seq in 0u32..3) {
            let _ = reply(&datagram, seq);
        }
    }
}
