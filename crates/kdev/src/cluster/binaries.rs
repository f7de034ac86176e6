//! Finding the control plane's binaries.
//!
//! `scripts/install-control-plane` builds pinned versions into
//! `$KDEV_BIN_DIR` (default `~/.cache/kdev/bin`); a binary found there wins
//! over one on PATH, since PATH often has a kubectl of another version.

use std::path::PathBuf;

/// Every binary a local cluster needs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub kwokctl: PathBuf,
    pub kwok: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    /// The folder of pinned builds, put first on the PATH of kwokctl.
    pub bin_dir: PathBuf,
}

pub fn bin_dir() -> PathBuf {
    match std::env::var_os("KDEV_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => super::kdev_home().join("bin"),
    }
}

impl Binaries {
    /// Finds every binary, or says which are missing and how to get them.
    pub fn locate() -> anyhow::Result<Self> {
        let dir = bin_dir();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let search: Vec<PathBuf> = std::iter::once(dir.clone())
            .chain(std::env::split_paths(&path))
            .collect();
        let mut missing = Vec::new();
        let mut find = |name: &'static str| match find_in(&search, name) {
            Some(found) => found,
            None => {
                missing.push(name);
                PathBuf::new()
            }
        };
        let binaries = Binaries {
            kwokctl: find("kwokctl"),
            kwok: find("kwok"),
            etcd: find("etcd"),
            kube_apiserver: find("kube-apiserver"),
            kube_controller_manager: find("kube-controller-manager"),
            kube_scheduler: find("kube-scheduler"),
            kubectl: find("kubectl"),
            bin_dir: dir.clone(),
        };
        if !missing.is_empty() {
            anyhow::bail!(
                "missing control-plane binaries: {} (looked in {} and on PATH); build them with \
                 `scripts/install-control-plane` from the kdev repository (about 10 minutes the first time, \
                 instant afterwards)",
                missing.join(", "),
                dir.display()
            );
        }
        Ok(binaries)
    }
}

/// The real node's binaries, if every one is there (`None` otherwise: the
/// caller says why a real node cannot run).
pub fn locate_node() -> Option<super::node::NodeBinaries> {
    let dir = bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let search: Vec<PathBuf> = std::iter::once(dir)
        .chain(std::env::split_paths(&path))
        .chain(["/usr/sbin".into(), "/sbin".into(), "/bin".into()])
        .collect();
    let find = |name: &str| find_in(&search, name);
    Some(super::node::NodeBinaries {
        kubelet: find("kubelet")?,
        kube_proxy: find("kube-proxy")?,
        containerd: find("containerd")?,
        containerd_shim: find("containerd-shim-runc-v2")?,
        ctr: find("ctr")?,
        coredns: find("coredns")?,
        pause: find("pause")?,
        runc: find("runc")?,
        cni_dir: PathBuf::from("/usr/lib/cni"),
        busybox: find("busybox")?,
    })
}

fn find_in(search: &[PathBuf], name: &str) -> Option<PathBuf> {
    crate::host::find_in(search, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_folder_wins_and_non_executables_are_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let first = tempfile::tempdir().expect("temp dir");
        let second = tempfile::tempdir().expect("temp dir");
        let plain = first.path().join("etcd");
        std::fs::write(&plain, "").expect("write");
        let exe = second.path().join("etcd");
        std::fs::write(&exe, "").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let search = vec![first.path().to_owned(), second.path().to_owned()];
        assert_eq!(find_in(&search, "etcd"), Some(exe));
        assert_eq!(find_in(&search, "kwok"), None);
    }
}
