//! What every real node on this host shares, and who is using it.
//!
//! Most of a real node lives in its cluster's folder and network namespace.
//! A few things the kubelet touches are host-wide whatever it is told:
//! sysctls it sets at start ([`SYSCTLS`]) and folders it uses at fixed
//! paths ([`HOST_PATHS`]), plus the links it makes in
//! `/var/log/containers`. Two real-node clusters at once must neither
//! record each other's values as "the host's" nor remove what the other
//! still uses.
//!
//! # Expected flow
//! 1. `join` (before a node's kubelet starts), under a host-wide lock: when
//!    no other real node is using the host, record the host's values of
//!    [`SYSCTLS`]; then add this cluster to the users.
//! 2. `leave` (at `kdev cluster down`), under the lock: remove this
//!    cluster, and the links in `/var/log/containers` into its node's
//!    folder; when no user is left, put the recorded sysctls back, remove
//!    [`HOST_PATHS`] and the record.
//!
//! # Guarantees
//! - The record holds the host's values from before any kubelet ran, and
//!   they are put back once, when the last real node goes, in whatever
//!   order clusters go down.
//! - A user whose node folder no longer exists (a cluster removed by hand,
//!   or a machine that lost `/run`'s contents) does not keep the host
//!   shared forever: it is dropped at the next `join` or `leave`.
//!
//! # Assumptions
//! - The state lives under `/run` (a tmpfs): after a reboot the sysctls are
//!   the host's again and no kubelet runs, so an empty record is right.
//! - Only root runs real nodes (it is checked before), so only root takes
//!   the lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where the record and the users live.
pub const STATE_DIR: &str = "/run/kdev/real-nodes";

/// Host-wide sysctls the kubelet sets at start (under /proc/sys).
pub const SYSCTLS: &[&str] = &[
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Host paths every kubelet uses whatever it is told (device plugins,
/// plugin registration, pod resources); removed when the last node goes.
pub const HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet/plugins_registry",
    "/var/lib/kubelet/pod-resources",
];

/// Where every kubelet links its containers' logs.
pub const CONTAINER_LOG_LINKS: &str = "/var/log/containers";

/// The shared state of one host (the real one: [`Host::system`]; tests
/// give folders of their own).
pub struct Host {
    pub state: PathBuf,
    pub proc_sys: PathBuf,
    pub host_paths: Vec<PathBuf>,
    pub log_links: PathBuf,
}

impl Host {
    pub fn system() -> Self {
        Self {
            state: PathBuf::from(STATE_DIR),
            proc_sys: PathBuf::from("/proc/sys"),
            host_paths: HOST_PATHS.iter().map(PathBuf::from).collect(),
            log_links: PathBuf::from(CONTAINER_LOG_LINKS),
        }
    }

    fn record(&self) -> PathBuf {
        self.state.join("sysctls.json")
    }

    fn users(&self) -> PathBuf {
        self.state.join("users")
    }

    /// Holds the host-wide lock until dropped.
    fn lock(&self) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
        std::fs::create_dir_all(self.users())
            .with_context(|| format!("failed to create {}", self.users().display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.state.join("lock"))
            .with_context(|| format!("failed to open {}/lock", self.state.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, err)| anyhow::anyhow!("failed to lock {}: {err}", self.state.display()))
    }

    /// The clusters using the host, after dropping those whose node folder
    /// is gone.
    fn live_users(&self) -> BTreeMap<String, PathBuf> {
        let mut live = BTreeMap::new();
        for entry in std::fs::read_dir(self.users())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let node_dir = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if !node_dir.is_empty() && Path::new(&node_dir).is_dir() {
                live.insert(name, PathBuf::from(node_dir));
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        live
    }

    /// Step 1: `cluster`'s node (files in `node_dir`) starts using the host.
    pub fn join(&self, cluster: &str, node_dir: &Path) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let others = self.live_users();
        if others.keys().all(|name| name == cluster) && !self.record().exists() {
            let saved: BTreeMap<&str, String> = SYSCTLS
                .iter()
                .filter_map(|key| {
                    let value = std::fs::read_to_string(self.proc_sys.join(key)).ok()?;
                    Some((*key, value.trim().to_owned()))
                })
                .collect();
            let text = serde_json::to_string(&saved).context("failed to encode the sysctls")?;
            std::fs::write(self.record(), text).context("failed to record the host's sysctls")?;
        }
        std::fs::write(self.users().join(cluster), node_dir.display().to_string())
            .context("failed to record the node as a user of the host")
    }

    /// Step 2: `cluster`'s node (files in `node_dir`) stops using the host.
    pub fn leave(&self, cluster: &str, node_dir: &Path) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let _ = std::fs::remove_file(self.users().join(cluster));
        self.remove_log_links_into(node_dir);
        if !self.live_users().is_empty() {
            return Ok(());
        }
        if let Ok(text) = std::fs::read_to_string(self.record())
            && let Ok(saved) = serde_json::from_str::<BTreeMap<String, String>>(&text)
        {
            for (key, value) in saved {
                if SYSCTLS.contains(&key.as_str()) {
                    let _ = std::fs::write(self.proc_sys.join(&key), value);
                }
            }
        }
        for path in &self.host_paths {
            let _ = std::fs::remove_dir_all(path);
        }
        if let Some(parent) = self.host_paths.first().and_then(|p| p.parent()) {
            // Only when empty: the host may use /var/lib/kubelet itself.
            let _ = std::fs::remove_dir(parent);
        }
        let _ = std::fs::remove_file(self.record());
        Ok(())
    }

    /// Removes the kubelet's links to container logs that point into
    /// `node_dir` (where this node keeps its pods' logs); other nodes' and
    /// the host's own links stay.
    fn remove_log_links_into(&self, node_dir: &Path) {
        for entry in std::fs::read_dir(&self.log_links)
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(entry.path())
                && target.starts_with(node_dir)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(root: &Path) -> Host {
        let proc_sys = root.join("proc-sys");
        for key in SYSCTLS {
            let path = proc_sys.join(key);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, "0\n").expect("write");
        }
        Host {
            state: root.join("state"),
            proc_sys,
            host_paths: vec![root.join("kubelet/device-plugins")],
            log_links: root.join("containers"),
        }
    }

    fn node(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name).join("node");
        std::fs::create_dir_all(dir.join("pods")).expect("mkdir");
        dir
    }

    fn set(host: &Host, key: &str, value: &str) {
        std::fs::write(host.proc_sys.join(key), value).expect("write");
    }

    fn get(host: &Host, key: &str) -> String {
        std::fs::read_to_string(host.proc_sys.join(key))
            .expect("read")
            .trim()
            .to_owned()
    }

    /// Regression: each cluster recorded the sysctls it found, so the
    /// second recorded the first kubelet's values, and whichever went down
    /// last put those back; the kernel keys were never put back.
    #[test]
    fn two_nodes_down_in_either_order_leave_the_host_as_it_was() {
        for first_down in ["a", "b"] {
            let root = tempfile::tempdir().expect("temp dir");
            let host = host(root.path());
            let (a, b) = (node(root.path(), "a"), node(root.path(), "b"));
            host.join("a", &a).expect("join a");
            // The first kubelet changes the host.
            for key in SYSCTLS {
                set(&host, key, "1");
            }
            std::fs::create_dir_all(&host.host_paths[0]).expect("mkdir");
            host.join("b", &b).expect("join b");
            std::fs::create_dir_all(&host.log_links).expect("mkdir");
            for (name, dir) in [("a", &a), ("b", &b)] {
                std::os::unix::fs::symlink(dir.join("pods/x.log"), host.log_links.join(name))
                    .expect("link");
            }
            std::os::unix::fs::symlink("/elsewhere.log", host.log_links.join("host"))
                .expect("link");

            let (first, second) = if first_down == "a" {
                (("a", &a), ("b", &b))
            } else {
                (("b", &b), ("a", &a))
            };
            host.leave(first.0, first.1).expect("leave");
            assert!(host.host_paths[0].exists(), "still used by the other node");
            assert!(
                SYSCTLS.iter().all(|key| get(&host, key) == "1"),
                "not put back while a kubelet runs"
            );
            let linked = |name: &str| host.log_links.join(name).symlink_metadata().is_ok();
            assert!(!linked(first.0));
            assert!(linked(second.0));

            host.leave(second.0, second.1).expect("leave");
            for key in SYSCTLS {
                assert_eq!(get(&host, key), "0", "{key} after {first_down} went first");
            }
            assert!(!host.host_paths[0].exists());
            assert!(!linked(second.0));
            assert!(linked("host"), "the host's own links stay");
            assert!(!host.record().exists());
        }
    }

    #[test]
    fn a_user_whose_node_folder_is_gone_does_not_hold_the_host() {
        let root = tempfile::tempdir().expect("temp dir");
        let host = host(root.path());
        let (a, b) = (node(root.path(), "a"), node(root.path(), "b"));
        host.join("a", &a).expect("join a");
        set(&host, "vm/overcommit_memory", "1");
        host.join("b", &b).expect("join b");
        std::fs::remove_dir_all(root.path().join("a")).expect("remove a's folder");
        host.leave("b", &b).expect("leave b");
        assert_eq!(get(&host, "vm/overcommit_memory"), "0");
    }
}
