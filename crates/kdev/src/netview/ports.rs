//! Which TCP ports something listens on, from `/proc/<pid>/net/tcp` and
//! `tcp6` (the listing of the network namespace that process is in).

use std::collections::BTreeSet;

/// The state column's value for LISTEN.
const LISTEN: &str = "0A";

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

    proptest! {
        #[test]
        fn any_text_is_read_without_panicking(text in ".{0,400}") {
            let _ = listening(&text);
        }
    }
}
