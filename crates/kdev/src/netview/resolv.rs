//! The `resolv.conf` and `nsswitch.conf` the command reads, as the kubelet
//! writes a pod's (`dnsPolicy: ClusterFirst`).

use std::net::Ipv4Addr;

/// A pod's resolver configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameserver: Ipv4Addr,
    pub search: Vec<String>,
    pub ndots: u8,
}

impl ResolvConf {
    /// What the kubelet writes for a pod in `namespace` of a cluster whose
    /// domain is `domain` and whose DNS Service is at `nameserver`.
    pub fn for_pod(namespace: &str, domain: &str, nameserver: Ipv4Addr) -> Self {
        Self {
            nameserver,
            search: vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_owned(),
            ],
            ndots: 5,
        }
    }

    pub fn render(&self) -> String {
        format!(
            "# written by kdev: the network view of a pod\nsearch {}\nnameserver {}\noptions ndots:{}\n",
            self.search.join(" "),
            self.nameserver,
            self.ndots
        )
    }
}

/// The host's `nsswitch.conf` with its `hosts:` line set to `files dns`, so
/// names go to `/etc/hosts` and then to the DNS the view answers, never to
/// a host daemon (systemd-resolved's `resolve`, mDNS) that would answer from
/// outside the view. Other lines (users, groups) stay the host's.
pub fn nsswitch(host: &str) -> String {
    let mut out = String::new();
    let mut replaced = false;
    for line in host.lines() {
        if line.trim_start().starts_with("hosts:") {
            out.push_str("hosts: files dns\n");
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str("hosts: files dns\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_resolv_conf_searches_its_namespace_first_with_ndots_5() {
        let conf = ResolvConf::for_pod("shop", "cluster.local", Ipv4Addr::new(10, 0, 0, 10));
        assert_eq!(
            conf.render(),
            "# written by kdev: the network view of a pod\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.0.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn nsswitch_keeps_the_hosts_other_lines_and_sends_names_to_files_then_dns() {
        let host = "passwd: files systemd\nhosts:  files mdns4_minimal [NOTFOUND=return] resolve dns myhostname\nnetworks: files\n";
        assert_eq!(
            nsswitch(host),
            "passwd: files systemd\nhosts: files dns\nnetworks: files\n"
        );
        assert_eq!(
            nsswitch("passwd: files\n"),
            "passwd: files\nhosts: files dns\n"
        );
    }
}
