//! Where one of the command's connections goes, by its original destination.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

/// An IPv4 range, `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: Ipv4Addr,
    len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.base) & mask
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (base, len) = match text.split_once('/') {
            Some((base, len)) => (base, len),
            None => (text, "32"),
        };
        let base: Ipv4Addr = base
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 range (like 10.96.0.0/12)"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|len| *len <= 32)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to 32"))?;
        Ok(Cidr { base, len })
    }
}

/// Which side of the laptop a connection leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The laptop itself: its loopback (a local database, a debugger, the
    /// command's own listeners as the laptop sees them) and the internet.
    Laptop,
    /// The session's agent in the cluster: Service and pod addresses.
    Cluster,
}

/// The cluster's address ranges; everything else stays on the laptop.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub cluster: Vec<Cidr>,
}

impl Routes {
    pub fn via(&self, to: SocketAddrV4) -> Via {
        let ip = *to.ip();
        if ip.is_loopback() {
            Via::Laptop
        } else if self.cluster.iter().any(|range| range.contains(ip)) {
            Via::Cluster
        } else {
            Via::Laptop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cluster_ranges_go_to_the_cluster_and_the_rest_stays_on_the_laptop() {
        let routes = Routes {
            cluster: vec![
                "10.0.0.0/24".parse().unwrap(),
                "10.244.0.0/16".parse().unwrap(),
            ],
        };
        let via = |text: &str| routes.via(text.parse().unwrap());
        assert_eq!(via("10.0.0.10:53"), Via::Cluster);
        assert_eq!(via("10.244.3.7:8080"), Via::Cluster);
        assert_eq!(via("10.0.1.1:80"), Via::Laptop);
        assert_eq!(via("127.0.0.1:5432"), Via::Laptop);
        assert_eq!(via("93.184.216.34:443"), Via::Laptop);
    }

    #[test]
    fn ranges_parse_or_say_what_is_wrong() {
        assert_eq!(
            "10.96.0.0/12".parse::<Cidr>().unwrap().to_string(),
            "10.96.0.0/12"
        );
        assert_eq!(
            "10.0.0.7".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.7/32"
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(
            "db:5432"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("not an IPv4 range")
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errs_without_panicking(text in ".{0,40}") {
            let _ = text.parse::<Cidr>();
        }

        #[test]
        fn a_range_contains_its_base(a in any::<u32>(), len in 0u8..=32) {
            let cidr: Cidr = format!("{}/{len}", Ipv4Addr::from(a)).parse().unwrap();
            prop_assert!(cidr.contains(Ipv4Addr::from(a)));
        }
    }
}
