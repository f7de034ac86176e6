//! The swap's side of the network view: the cluster dialer (the session's
//! agent, through the tunnel) and the cluster's address ranges.
//!
//! The ranges come from the API where the user may read them: the
//! ServiceCIDR objects (the Service ranges) and the Nodes' pod ranges. The
//! `kubernetes` Service's address and the proxy pod's address, when no
//! range found holds them, add their /16 (a user who may not list those
//! objects, a CNI that allocates pod addresses on its own; most clusters
//! allocate from a /16 or wider), and `--cluster-cidr` adds ranges by hand. Names the
//! cluster's DNS answers with private addresses go to the cluster whatever
//! the ranges ([`crate::netview::Network::learned`]).

use std::net::{IpAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kdev_contract::tunnel::{ConnectReply, Header};
use kube::Api;
use kube::api::ListParams;

use super::link::Current;
use crate::agent::tunnel;
use crate::k8s::Kube;
use crate::netview::{self, Cidr, Io};

/// Dials through the session's tunnel.
pub struct AgentDial {
    pub current: Current,
}

impl AgentDial {
    fn open(&self, header: Header) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> {
        let mut current = self.current.clone();
        Box::pin(async move {
            let mux = super::link::tunnel_within(&mut current, Duration::from_secs(10))
                .await
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::HostUnreachable,
                        "no tunnel to the agent",
                    )
                })?;
            let mut stream = mux.open_with(&header).await?;
            match tunnel::read_connect_reply(&mut stream).await? {
                ConnectReply::Connected => Ok(Box::new(stream) as Box<dyn Io>),
                // Refused, unreachable or timed out as the pod saw it: the
                // network view ends the command's connect() the same way.
                ConnectReply::Failed(why, message) => Err(std::io::Error::new(why.kind(), message)),
            }
        })
    }
}

impl netview::Dial for AgentDial {
    fn dial(&self, to: SocketAddrV4) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> {
        self.open(Header::Connect {
            host: to.ip().to_string(),
            port: to.port(),
        })
    }

    fn dns(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> {
        self.open(Header::Dns)
    }
}

/// The cluster's IPv4 ranges as far as this user can tell (see the module
/// documentation), with `extra` first.
pub async fn cluster_ranges(kube: &Kube, proxy: &Pod, extra: &[Cidr]) -> Vec<Cidr> {
    let mut ranges = extra.to_vec();
    let services: Vec<Cidr> = match Api::<ServiceCIDR>::all(kube.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .flat_map(|cidr| {
                cidr.spec
                    .iter()
                    .flat_map(|spec| spec.cidrs.iter().flatten())
            })
            .filter_map(|text| text.parse().ok())
            .collect(),
        Err(err) => {
            tracing::debug!(error = %err, "cannot list ServiceCIDRs");
            Vec::new()
        }
    };
    ranges.extend(services);
    let kubernetes = Api::<Service>::namespaced(kube.client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()
        .and_then(|service| service.spec?.cluster_ip);
    if let Some(guess) = kubernetes
        .as_deref()
        .and_then(|ip| uncovered_slash_16(&ranges, ip))
    {
        ranges.push(guess);
    }
    let pods: Vec<Cidr> = match Api::<Node>::all(kube.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .flat_map(|node| {
                let spec = node.spec.as_ref();
                spec.and_then(|s| s.pod_cidrs.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .chain(spec.and_then(|s| s.pod_cidr.clone()))
            })
            .filter_map(|text| text.parse().ok())
            .collect(),
        Err(err) => {
            tracing::debug!(error = %err, "cannot list Nodes");
            Vec::new()
        }
    };
    ranges.extend(pods);
    // Pod ranges the Nodes do not carry (a CNI that allocates on its own)
    // or that the user may not read: the proxy pod's address says where
    // pods live.
    let pod_ip = proxy.status.as_ref().and_then(|s| s.pod_ip.clone());
    if let Some(guess) = pod_ip
        .as_deref()
        .and_then(|ip| uncovered_slash_16(&ranges, ip))
    {
        ranges.push(guess);
    }
    ranges.dedup();
    ranges
}

/// The /16 of `ip` when no range of `ranges` holds it.
fn uncovered_slash_16(ranges: &[Cidr], ip: &str) -> Option<Cidr> {
    let v4: std::net::Ipv4Addr = ip.parse().ok()?;
    if ranges.iter().any(|range| range.contains(v4)) {
        return None;
    }
    slash_16(ip)
}

/// The /16 an IPv4 address is in.
fn slash_16(ip: &str) -> Option<Cidr> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            format!("{a}.{b}.0.0/16").parse().ok()
        }
        IpAddr::V6(_) => None,
    }
}

/// The view for a command swapped into `namespace`: a pod's resolv.conf.
pub fn view(namespace: &str) -> netview::View {
    netview::View {
        resolv: netview::resolv::ResolvConf::for_pod(
            namespace,
            CLUSTER_DOMAIN,
            netview::VIEW_NAMESERVER,
        ),
    }
}

/// The cluster domain the kubelet's search list uses. Clusters that chose
/// another one are rare; the pod's own search list is not readable from
/// outside it.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Shared between the swap's restarts of the command.
#[derive(Clone)]
pub struct Setting {
    pub network: netview::Network,
    pub view: netview::View,
    pub dir: std::path::PathBuf,
}

impl Setting {
    pub fn new(kube: &Kube, current: Current, ranges: Vec<Cidr>, dir: std::path::PathBuf) -> Self {
        Self {
            network: netview::Network::new(
                netview::Routes { cluster: ranges },
                Arc::new(AgentDial { current }),
            ),
            view: view(&kube.namespace),
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gives_its_slash_16() {
        assert_eq!(
            slash_16("10.96.0.1").map(|c| c.to_string()),
            Some("10.96.0.0/16".into())
        );
        assert_eq!(slash_16("fd00::1"), None);
        assert_eq!(slash_16("nonsense"), None);
        let found: Vec<Cidr> = vec!["10.0.0.0/24".parse().unwrap()];
        assert_eq!(uncovered_slash_16(&found, "10.0.0.7"), None);
        assert_eq!(
            uncovered_slash_16(&found, "10.244.1.9").map(|c| c.to_string()),
            Some("10.244.0.0/16".into())
        );
    }
}
