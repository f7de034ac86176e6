//! The ports of a new local cluster.
//!
//! kwokctl would pick them itself, counting down from 32767 past the ports
//! that are bound at that moment. It does not count the ports of a cluster
//! whose processes are stopped or restarting (it only reads the host ports of
//! container runtimes), so a cluster created then takes them, and the other
//! one cannot start again. kdev picks the ports instead and records them in
//! the configuration it keeps for each cluster it created; a port recorded
//! there is never given to a second cluster.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

/// The `KwokctlConfiguration` options of the binary runtime that are ports.
pub const OPTIONS: [&str; 6] = [
    "etcdPeerPort",
    "etcdPort",
    "kubeApiserverPort",
    "kubeControllerManagerPort",
    "kubeSchedulerPort",
    "kwokControllerPort",
];

/// Where kwokctl starts counting down, and where it stops.
const HIGHEST: u16 = 32767;
const LOWEST: u16 = 10000;

/// The ports recorded in the configurations (`*.kwokctl.json`) in `workdir`.
/// A file that cannot be read or parsed reserves nothing.
pub fn reserved(workdir: &Path) -> BTreeSet<u16> {
    let Ok(entries) = std::fs::read_dir(workdir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .ends_with(".kwokctl.json")
        })
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flat_map(|config| recorded(&config))
        .collect()
}

/// The ports one configuration records.
fn recorded(config: &serde_json::Value) -> Vec<u16> {
    OPTIONS
        .iter()
        .filter_map(|option| config["options"][option].as_u64())
        .filter_map(|port| u16::try_from(port).ok())
        .collect()
}

/// One port per [`OPTIONS`], counting down from 32767, that is neither
/// reserved nor bound on this machine (on loopback or on every address)
/// right now.
pub fn pick(reserved: &BTreeSet<u16>) -> anyhow::Result<[u16; OPTIONS.len()]> {
    let picked = pick_where(OPTIONS.len(), reserved, bindable)?;
    Ok(picked
        .try_into()
        .expect("pick_where returns as many as asked"))
}

fn pick_where(
    count: usize,
    reserved: &BTreeSet<u16>,
    free: impl Fn(u16) -> bool,
) -> anyhow::Result<Vec<u16>> {
    let picked: Vec<u16> = (LOWEST..=HIGHEST)
        .rev()
        .filter(|port| !reserved.contains(port) && free(*port))
        .take(count)
        .collect();
    anyhow::ensure!(
        picked.len() == count,
        "no {count} free ports between {LOWEST} and {HIGHEST} for a new local cluster; \
         stop clusters you no longer use (`kdev cluster down --name NAME`)"
    );
    Ok(picked)
}

fn bindable(port: u16) -> bool {
    [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED]
        .iter()
        .all(|ip| TcpListener::bind((*ip, port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_downwards_past_reserved_and_bound_ports() {
        let reserved = BTreeSet::from([32767, 32765]);
        let picked = pick_where(3, &reserved, |port| port != 32764).expect("ports");
        assert_eq!(picked, [32766, 32763, 32762]);
    }

    #[test]
    fn says_what_to_do_when_none_is_left() {
        let err = pick_where(2, &BTreeSet::new(), |_| false).expect_err("no ports");
        assert!(err.to_string().contains("kdev cluster down"), "{err}");
    }

    #[test]
    fn reads_the_ports_a_configuration_records() {
        let config = json!({
            "options": {
                "runtime": "binary",
                "etcdPort": 32765,
                "kubeApiserverPort": 32764,
                "kwokControllerPort": 70000,
            }
        });
        assert_eq!(recorded(&config), [32765, 32764]);
    }

    #[test]
    fn reserves_what_every_configuration_in_the_folder_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        write("a.kwokctl.json", r#"{"options":{"etcdPort":32000}}"#);
        write(
            "b.kwokctl.json",
            r#"{"options":{"kubeApiserverPort":31000}}"#,
        );
        write("c.kwokctl.json", "not json");
        write("d.stages.yaml", "etcdPort: 30000");
        assert_eq!(reserved(dir.path()), BTreeSet::from([31000, 32000]));
    }
}
