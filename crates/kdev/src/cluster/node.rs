//! A real node: upstream kubelet, containerd, runc, CNI plugins and
//! kube-proxy, in a network namespace of its own (see [`super::netns`]).
//!
//! # Expected flow (`up`)
//! 1. Create the namespace `kdev-<cluster>`: loopback up, the node IP and the
//!    API server's advertised address on its `lo`, forwarding on.
//! 2. Write every configuration file under `<cluster>/node/`.
//! 3. Start the node proxy (host), then containerd inside the namespace;
//!    import the pause, busybox and CoreDNS images built by `kdev image`.
//! 4. Start the kubelet and kube-proxy inside the namespace. CoreDNS runs
//!    as a static pod on the host network of the node, behind the
//!    `kube-dns` Service.
//!
//! # Guarantees
//! - Nothing is bound on the host but the node proxy's unix socket; pod and
//!   Service addresses exist only inside the namespace.
//! - `down` stops every process (they all name the cluster folder on their
//!   command line), unmounts what the kubelet and containerd mounted under
//!   the cluster folder, deletes the namespace (and with it the bridge,
//!   veths and iptables rules) and removes what the kubelet leaves in fixed
//!   host paths.
//!
//! # Assumptions
//! - Linux, root, Debian's runc and CNI plugins (`scripts/install-control-plane`
//!   installs them); cgroup v1 or v2.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{identity, netns};
use crate::image;

/// The node's name in the cluster.
pub const NODE_NAME: &str = "kdev-node";
/// The node's IP, on the namespace's `lo`.
pub const NODE_IP: &str = "10.200.0.1";
/// Where pods get their addresses (the bridge's range).
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The API server's advertised address (kwokctl's; its serving certificate
/// names it), on the namespace's `lo`, relayed to the host's 127.0.0.1.
pub const API_ADDRESS: &str = "192.0.2.2";
/// kwokctl's Service ClusterIP range.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The `kube-dns` Service's ClusterIP (in [`SERVICE_CIDR`]).
pub const DNS_IP: &str = "10.0.0.10";
/// The taint the real node carries when kwok's fake node is there too, so
/// that only workloads that ask for it land on the real node.
pub const REAL_NODE_TAINT: &str = "kdev.dev/node";
/// The sandbox image containerd 2.4 pins.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.2";
/// The busybox image every cluster has, for demos and tests.
pub const BUSYBOX_IMAGE: &str = "kdev.local/busybox:1.35";
/// CoreDNS, as the static pod runs it.
pub const COREDNS_IMAGE: &str = "kdev.local/coredns:1.15.0";

/// The binaries a real node runs.
#[derive(Clone, Debug)]
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub containerd: PathBuf,
    pub containerd_shim: PathBuf,
    pub ctr: PathBuf,
    pub coredns: PathBuf,
    pub pause: PathBuf,
    pub runc: PathBuf,
    pub cni_dir: PathBuf,
    pub busybox: PathBuf,
}

/// Why this machine cannot run a real node, if it cannot.
pub fn unsupported(binaries: &Option<NodeBinaries>) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("real nodes need Linux".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("real nodes need root (network namespaces, mounts, iptables)".into());
    }
    let Some(binaries) = binaries else {
        return Some("the node's binaries are missing; run scripts/install-control-plane".into());
    };
    if !binaries.cni_dir.join("bridge").exists() {
        return Some(format!(
            "the CNI bridge plugin is missing from {}; install containernetworking-plugins",
            binaries.cni_dir.display()
        ));
    }
    None
}

/// One cluster's real node.
pub struct Node<'a> {
    /// The cluster's folder (kwokctl's); the node's files live in `node/`.
    pub cluster_dir: &'a Path,
    pub cluster: &'a str,
    pub binaries: &'a NodeBinaries,
    /// The kdev executable, for the node proxy.
    pub kdev: PathBuf,
    /// The API server's port on the host's 127.0.0.1.
    pub api_port: u16,
    /// Taint the node so only workloads that tolerate it land there.
    pub tainted: bool,
}

impl Node<'_> {
    pub fn netns(cluster: &str) -> String {
        format!("kdev-{cluster}")
    }

    fn dir(&self) -> PathBuf {
        self.cluster_dir.join("node")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// The unix socket the API server's egress goes through.
    pub fn egress_socket(cluster_dir: &Path) -> PathBuf {
        cluster_dir.join("node").join("egress.sock")
    }

    /// The API server's egress selector configuration: node and Service
    /// traffic through the node proxy.
    pub fn egress_config(cluster_dir: &Path) -> String {
        format!(
            "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections:\n\
             - name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    transport:\n      uds:\n        udsName: {}\n",
            Self::egress_socket(cluster_dir).display()
        )
    }

    /// Steps 1 to 4 of the module's flow. Returns once the kubelet runs;
    /// the caller waits for the Node to be Ready.
    /// `admin`: a client with the admin's rights, for what the node's
    /// components are granted.
    pub async fn up(&self, admin: &kube::Client) -> anyhow::Result<()> {
        let netns = Self::netns(self.cluster);
        std::fs::create_dir_all(self.dir())
            .with_context(|| format!("failed to create {}", self.dir().display()))?;
        self.create_netns(&netns).await?;
        self.write_files()?;
        self.start_proxy(&netns)?;
        self.start_in_netns(
            &netns,
            "containerd",
            &self.binaries.containerd,
            &[
                "--config".into(),
                self.path("containerd.toml").display().to_string(),
            ],
        )?;
        self.wait_for_socket(&self.containerd_socket(), Duration::from_secs(30))
            .await?;
        self.import_images().await?;
        self.grant_coredns(admin).await?;
        self.start_in_netns(
            &netns,
            "kubelet",
            &self.binaries.kubelet,
            &self.kubelet_args(),
        )?;
        self.start_in_netns(
            &netns,
            "kube-proxy",
            &self.binaries.kube_proxy,
            &[
                "--config".into(),
                self.path("kube-proxy.yaml").display().to_string(),
                format!("--hostname-override={NODE_NAME}"),
            ],
        )?;
        Ok(())
    }

    fn containerd_socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }

    async fn create_netns(&self, netns: &str) -> anyhow::Result<()> {
        if Path::new(netns::NETNS_DIR).join(netns).exists() {
            // Left by a cluster that was killed: start clean.
            let _ = run("ip", &["netns", "delete", netns]).await;
        }
        run("ip", &["netns", "add", netns]).await?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns];
            all.extend_from_slice(args);
            all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        for args in [
            inside(&["ip", "link", "set", "lo", "up"]),
            inside(&["ip", "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]),
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("{API_ADDRESS}/32"),
                "dev",
                "lo",
            ]),
            // The node itself (and host-network pods) reach Services: any
            // route for the range lets the packet reach kube-proxy's OUTPUT
            // rules, whose DNAT then re-routes it to a pod on the bridge.
            inside(&[
                "ip",
                "route",
                "add",
                SERVICE_CIDR,
                "dev",
                "lo",
                "src",
                NODE_IP,
            ]),
            inside(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
            inside(&["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"]),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("ip", &args).await?;
        }
        Ok(())
    }

    fn write_files(&self) -> anyhow::Result<()> {
        create_cgroup_root(self.cluster)?;
        let dir = self.dir();
        // Before the kubelet first runs: what it changes host-wide is
        // recorded once for every real node on this host.
        super::hostshare::Host::system().join(self.cluster, &dir)?;
        for sub in ["cni", "manifests", "logs", "kubelet", "pods", "containerd"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("failed to create {}", dir.join(sub).display()))?;
        }
        let pki = self.cluster_dir.join("pki");
        let write = |name: &str, text: String| -> anyhow::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("failed to write {}", path.display()))
        };
        write("containerd.toml", containerd_config(&dir, self.binaries))?;
        write("cni/10-kdev.conflist", cni_config(&dir))?;
        // Each component is itself to the API server, never the admin:
        // the kubelet as its node (Node authorizer, NodeRestriction),
        // kube-proxy as system:kube-proxy, CoreDNS as kdev:coredns.
        let server = format!("https://{API_ADDRESS}:{}", self.api_port);
        let ca = pki.join("ca.crt");
        for (file, folder, user, group) in [
            (
                "kubelet",
                "pki",
                format!("system:node:{NODE_NAME}"),
                Some("system:nodes"),
            ),
            ("kube-proxy", "pki", "system:kube-proxy".to_owned(), None),
            (
                "coredns",
                "coredns",
                identity::COREDNS_USER.to_owned(),
                None,
            ),
        ] {
            let write_private_file =
                |path: &Path, text: &str| crate::host::write_file(path, text.as_bytes(), 0o600);
            let issued = identity::issue(&pki, &identity::Subject { user: &user, group })?;
            let folder = dir.join(folder);
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("failed to create {}", folder.display()))?;
            let cert = folder.join(format!("{file}.crt"));
            let key = folder.join(format!("{file}.key"));
            write_private_file(&cert, &issued.cert)?;
            write_private_file(&key, &issued.key)?;
            // CoreDNS's folder is all it mounts: the CA's certificate goes
            // in it, the CA's key nowhere near it.
            let ca = if file == "coredns" {
                let copy = folder.join("ca.crt");
                std::fs::copy(&ca, &copy).with_context(|| {
                    format!("failed to copy {} to {}", ca.display(), copy.display())
                })?;
                copy
            } else {
                ca.clone()
            };
            write_private_file(
                &folder.join(format!("{file}.kubeconfig")),
                &kubeconfig(&server, &ca, &cert, &key),
            )?;
        }
        write(
            "kubelet.yaml",
            kubelet_config(&dir, &pki, &cgroup_root(self.cluster)),
        )?;
        write("kube-proxy.yaml", kube_proxy_config(&dir))?;
        write(
            "resolv.conf",
            format!(
                "nameserver {DNS_IP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
            ),
        )?;
        write("coredns/Corefile", corefile(&dir))?;
        write("manifests/coredns.yaml", coredns_pod(&dir))?;
        Ok(())
    }

    /// CoreDNS's reads ([`identity::COREDNS_ROLE`]), applied with the
    /// admin's kubeconfig before CoreDNS starts (again at every `up`).
    async fn grant_coredns(&self, admin: &kube::Client) -> anyhow::Result<()> {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        use kube::api::{Api, Patch, PatchParams};
        let client = admin.clone();
        let params = PatchParams::apply("kdev-cluster").force();
        let role: ClusterRole = serde_json::from_str(identity::COREDNS_ROLE)
            .context("kdev's CoreDNS ClusterRole does not parse")?;
        let binding: ClusterRoleBinding = serde_json::from_str(identity::COREDNS_BINDING)
            .context("kdev's CoreDNS ClusterRoleBinding does not parse")?;
        Api::<ClusterRole>::all(client.clone())
            .patch(identity::COREDNS_USER, &params, &Patch::Apply(&role))
            .await
            .context("failed to grant CoreDNS its reads (ClusterRole kdev:coredns)")?;
        Api::<ClusterRoleBinding>::all(client)
            .patch(identity::COREDNS_USER, &params, &Patch::Apply(&binding))
            .await
            .context("failed to grant CoreDNS its reads (ClusterRoleBinding kdev:coredns)")?;
        Ok(())
    }

    fn kubelet_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--config={}", self.path("kubelet.yaml").display()),
            format!(
                "--kubeconfig={}",
                self.path("pki/kubelet.kubeconfig").display()
            ),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_IP}"),
            format!("--root-dir={}", self.path("kubelet").display()),
            format!("--cert-dir={}", self.path("kubelet/pki").display()),
            "--node-labels=kdev.dev/node=real".into(),
        ];
        if self.tainted {
            args.push(format!(
                "--register-with-taints={REAL_NODE_TAINT}=real:NoSchedule"
            ));
        }
        args
    }

    /// Starts `binary` inside the namespace, detached, its output in
    /// `node/logs/<name>.log`. Every argument list names the cluster folder,
    /// which is how `down` finds the process. `nsenter --net` joins the
    /// network namespace only: `ip netns exec` would also remount /sys,
    /// which hides the cgroup mounts the kubelet needs.
    fn start_in_netns(
        &self,
        netns: &str,
        name: &str,
        binary: &Path,
        args: &[String],
    ) -> anyhow::Result<()> {
        let mut command = std::process::Command::new("nsenter");
        command
            .arg(format!(
                "--net={}",
                Path::new(netns::NETNS_DIR).join(netns).display()
            ))
            .arg("--")
            .arg(binary)
            .args(args);
        self.spawn(name, command)
    }

    fn start_proxy(&self, netns: &str) -> anyhow::Result<()> {
        let mut command = std::process::Command::new(&self.kdev);
        command
            .arg("__node-proxy")
            .args(["--netns", netns])
            .arg(format!("--api-listen={API_ADDRESS}:{}", self.api_port))
            .arg(format!("--api-upstream=127.0.0.1:{}", self.api_port))
            .arg(format!(
                "--connect-socket={}",
                Self::egress_socket(self.cluster_dir).display()
            ));
        self.spawn("node-proxy", command)
    }

    fn spawn(&self, name: &str, mut command: std::process::Command) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt as _;
        let log_path = self.path(&format!("logs/{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let err = log.try_clone().context("failed to open the log twice")?;
        // A process group of its own: Ctrl-C at `kdev cluster up` does not
        // reach the node, which outlives the command that started it.
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .env("PATH", path_with(&self.binaries.runc));
        command.spawn().with_context(|| {
            format!(
                "failed to start the node's {name} (see {})",
                log_path.display()
            )
        })?;
        Ok(())
    }

    async fn wait_for_socket(&self, socket: &Path, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        // containerd gives no event to wait on before its socket exists.
        while tokio::net::UnixStream::connect(socket).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "containerd did not open {} within {}s; see {}",
                socket.display(),
                timeout.as_secs(),
                self.path("logs/containerd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Builds the node's images and imports them into containerd's `k8s.io`
    /// namespace, where the kubelet looks.
    async fn import_images(&self) -> anyhow::Result<()> {
        let images = [
            image::builtin::pause(&self.binaries.pause, PAUSE_IMAGE),
            image::builtin::busybox(&self.binaries.busybox, BUSYBOX_IMAGE),
            image::builtin::coredns(&self.binaries.coredns, COREDNS_IMAGE),
        ];
        for spec in images {
            let built = image::build(&spec)?;
            let file = self.path(&format!("{}.tar", spec.reference.replace(['/', ':'], "_")));
            std::fs::write(&file, &built.layout)
                .with_context(|| format!("failed to write {}", file.display()))?;
            import(&self.binaries.ctr, &self.containerd_socket(), &file).await?;
            let _ = std::fs::remove_file(&file);
        }
        Ok(())
    }
}

/// The `kube-dns` Service in front of the CoreDNS static pod, at [`DNS_IP`].
pub async fn dns_service(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    let api: kube::Api<Service> = kube::Api::namespaced(client.clone(), "kube-system");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "kube-dns", "labels": { "k8s-app": "kube-dns" } },
        "spec": {
            "clusterIP": DNS_IP,
            "selector": { "k8s-app": "kube-dns" },
            "ports": [
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "name": "dns-tcp", "port": 53, "protocol": "TCP" }
            ]
        }
    }))
    .context("the kube-dns Service is valid")?;
    match api.create(&Default::default(), &service).await {
        Ok(_) => Ok(()),
        Err(err) if crate::k8s::is_conflict(&err) => Ok(()),
        Err(err) => {
            Err(anyhow::Error::new(err).context("failed to create Service kube-system/kube-dns"))
        }
    }
}

/// `ctr images import` of an OCI layout tar into the node's containerd.
pub async fn import(ctr: &Path, socket: &Path, file: &Path) -> anyhow::Result<()> {
    let socket = socket.display().to_string();
    let file = file.display().to_string();
    run(
        &ctr.display().to_string(),
        &[
            "--address",
            &socket,
            "--namespace",
            "k8s.io",
            "images",
            "import",
            "--local",
            "--no-unpack=false",
            &file,
        ],
    )
    .await
}

/// PATH with runc's folder first (containerd's shim looks runc up; Debian
/// puts it in /usr/sbin).
fn path_with(runc: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = runc
        .parent()
        .map(Path::to_owned)
        .into_iter()
        .chain(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap_or(path)
}

/// Runs a short command; fails with its stderr.
async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("failed to run {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// The cgroup every pod of this cluster's node lives under (the kubelet's
/// `cgroupRoot`), so that two clusters' nodes never share one and `down`
/// can find every container process.
pub fn cgroup_root(cluster: &str) -> String {
    format!("/kdev-{cluster}")
}

/// The mounted cgroup hierarchies (v1 controllers, or the v2 root).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_owned()];
    }
    std::fs::read_dir(base)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Makes the node's cgroup root in every hierarchy (the kubelet insists it exists).
fn create_cgroup_root(cluster: &str) -> anyhow::Result<()> {
    let root = cgroup_root(cluster);
    for hierarchy in cgroup_hierarchies() {
        let dir = hierarchy.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create cgroup {}", dir.display()))?;
    }
    Ok(())
}

/// Every cgroup folder under the node's root, deepest first.
fn cgroups_under(cluster: &str) -> Vec<PathBuf> {
    let root = cgroup_root(cluster);
    let mut found = Vec::new();
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), found);
                }
            }
        }
        found.push(dir.to_owned());
    }
    for hierarchy in cgroup_hierarchies() {
        let dir = hierarchy.join(root.trim_start_matches('/'));
        if dir.exists() {
            walk(&dir, &mut found);
        }
    }
    found
}

/// Stops the node of the cluster in `cluster_dir` and removes what it left
/// on the host: its processes (the node's own, which name the cluster
/// folder, then every container process, found through the node's cgroups),
/// its cgroups, its mounts, the namespace (with the bridge, veths and
/// iptables rules in it) and the kubelet's fixed host paths. Safe to run
/// when there was no node; run it before the cluster folder is removed.
pub async fn down(cluster_dir: &Path, cluster: &str) -> anyhow::Result<()> {
    let node = cluster_dir.join("node");
    // The kubelet first, so it restarts nothing; then containerd and the rest.
    super::processes::kill_under(&node).await;
    // Container processes do not name the folder: their cgroups do.
    for _ in 0..50 {
        let mut alive = 0;
        for cgroup in cgroups_under(cluster) {
            let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                alive += 1;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if alive == 0 {
            break;
        }
        // A killed process leaves its cgroup when it is reaped; there is no
        // event for that to wait on here.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for cgroup in cgroups_under(cluster) {
        let _ = std::fs::remove_dir(&cgroup);
    }
    // Mounts under the node's folder (pod volumes, overlay snapshots, netns
    // bind mounts), deepest first.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut targets: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| Path::new(m).starts_with(&node))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let _ = nix::mount::umount2(Path::new(&target), nix::mount::MntFlags::MNT_DETACH);
    }
    let netns = Node::netns(cluster);
    if Path::new(netns::NETNS_DIR).join(&netns).exists() {
        run("ip", &["netns", "delete", &netns]).await?;
    }
    if node.exists() {
        // The host-wide sysctls and paths go back only when no other real
        // node uses them.
        super::hostshare::Host::system().leave(cluster, &node)?;
    }
    Ok(())
}

fn containerd_config(dir: &Path, binaries: &NodeBinaries) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd/containerd.sock"

[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  # The sandbox has no CAP_SYS_RESOURCE: lowering oom_score_adj fails.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "{runc}"
      SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni}"]
    conf_dir = "{d}/cni"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        runc = binaries.runc.display(),
        cni = binaries.cni_dir.display(),
    )
}

/// The CNI network; host-local keeps its IP reservations in the node's
/// folder (not the host-wide /var/lib/cni/networks), so they go with it.
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "kdev",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "kdev0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.join("cni").join("networks"),
                    "ranges": [[{ "subnet": POD_CIDR }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "loopback" }
        ]
    })
    .to_string()
}

fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let (ca, cert, key) = (ca.display(), cert.display(), key.display());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kdev\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: kdev-node\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
         contexts:\n- name: kdev\n  context: {{cluster: kdev, user: kdev-node}}\ncurrent-context: kdev\n"
    )
}

fn kubelet_config(dir: &Path, pki: &Path, cgroup_root: &str) -> String {
    let d = dir.display();
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": format!("unix://{d}/containerd/containerd.sock"),
        "imageServiceEndpoint": format!("unix://{d}/containerd/containerd.sock"),
        "address": NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "failSwapOn": false,
        "resolvConf": format!("{d}/resolv.conf"),
        "clusterDNS": [DNS_IP],
        "clusterDomain": "cluster.local",
        "enforceNodeAllocatable": [],
        "cgroupsPerQOS": true,
        "cgroupRoot": cgroup_root,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%" },
        "staticPodPath": format!("{d}/manifests"),
        "podLogsDir": format!("{d}/pods"),
        "containerLogMaxSize": "1Mi",
        "containerLogMaxFiles": 3,
        "serializeImagePulls": false,
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": format!("{}/ca.crt", pki.display()) }
        },
        "authorization": { "mode": "Webhook" },
        "podCIDR": POD_CIDR,
    })
    .to_string()
}

fn kube_proxy_config(dir: &Path) -> String {
    serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "clientConnection": { "kubeconfig": format!("{}/pki/kube-proxy.kubeconfig", dir.display()) },
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": { "maxPerCore": 0 },
        // A new Service or endpoint is routed within 0.1 s instead of the
        // default 1 s: a dev cluster has few Services and many fresh pods.
        "iptables": { "minSyncPeriod": "100ms" },
    })
    .to_string()
}

fn corefile(dir: &Path) -> String {
    format!(
        ".:53 {{\n    errors\n    health :8181\n    ready :8182\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {}/coredns/coredns.kubeconfig\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n    cache 30\n    loop\n}}\n",
        dir.display()
    )
}

/// CoreDNS as a static pod on the node's network (the node's namespace),
/// reaching the API server as `kdev:coredns`. It mounts its own folder
/// only, read-only: its Corefile, kubeconfig, certificate and key, and the
/// CA's certificate (not the cluster folder, which holds the CA's key).
fn coredns_pod(dir: &Path) -> String {
    let own = dir.join("coredns").display().to_string();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "coredns", "namespace": "kube-system", "labels": { "k8s-app": "kube-dns" } },
        "spec": {
            "hostNetwork": true,
            "dnsPolicy": "Default",
            "priorityClassName": "system-node-critical",
            "containers": [{
                "name": "coredns",
                "image": COREDNS_IMAGE,
                "imagePullPolicy": "Never",
                "args": ["-conf", format!("{own}/Corefile")],
                "securityContext": { "runAsUser": 0, "capabilities": { "add": ["NET_BIND_SERVICE"] } },
                "readinessProbe": { "httpGet": { "host": "127.0.0.1", "path": "/ready", "port": 8182 }, "periodSeconds": 1 },
                "volumeMounts": [{ "name": "coredns", "mountPath": own, "readOnly": true }]
            }],
            "volumes": [{ "name": "coredns", "hostPath": { "path": own, "type": "Directory" } }],
            "tolerations": [{ "operator": "Exists" }]
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_parse_and_name_the_cluster_folder() {
        let dir = Path::new("/tmp/kdev-test-cluster/node");
        let pki = Path::new("/tmp/kdev-test-cluster/pki");
        let kubelet: serde_json::Value =
            serde_json::from_str(&kubelet_config(dir, pki, "/kdev-test"))
                .expect("kubelet config is JSON");
        assert_eq!(kubelet["address"], NODE_IP);
        assert!(
            kubelet["staticPodPath"]
                .as_str()
                .expect("path")
                .starts_with("/tmp/kdev-test-cluster/")
        );
        let cni: serde_json::Value = serde_json::from_str(&cni_config(dir)).expect("cni is JSON");
        assert_eq!(cni["plugins"][0]["type"], "bridge");
        assert_eq!(
            cni["plugins"][0]["ipam"]["dataDir"], "/tmp/kdev-test-cluster/node/cni/networks",
            "IP reservations live in the node's folder"
        );
        let egress = Node::egress_config(Path::new("/tmp/kdev-test-cluster"));
        assert!(egress.contains("udsName: /tmp/kdev-test-cluster/node/egress.sock"));
        assert!(
            corefile(dir)
                .contains("kubeconfig /tmp/kdev-test-cluster/node/coredns/coredns.kubeconfig")
        );
        let pod: serde_json::Value = serde_json::from_str(&coredns_pod(dir)).expect("pod is JSON");
        assert_eq!(
            pod["spec"]["volumes"][0]["hostPath"]["path"], "/tmp/kdev-test-cluster/node/coredns",
            "CoreDNS mounts its own folder only, not the cluster's (the CA's key)"
        );
    }
}
