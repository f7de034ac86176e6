//! `kdev cluster up|down|kubeconfig`: a local Kubernetes cluster.
//!
//! Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler run
//! as local processes (kwokctl's binary runtime). Pods run on a real node
//! ([`node`]: kubelet, containerd, runc, CNI, kube-proxy, CoreDNS in a
//! network namespace of its own, joined to the host by [`netns`]) and/or on
//! a node kwok fakes: a Deployment gets ReplicaSets, scheduled pods and
//! Running statuses, and kwok's Logs/Exec/PortForward resources make a pod's
//! logs come from a local file, its exec run a local command and a
//! port-forward reach a local port. On the host everything listens on
//! 127.0.0.1.
//!
//! Binaries come from `scripts/install-control-plane` (see [`binaries`]);
//! cluster state lives under `$KDEV_HOME/kwok/clusters/<name>`
//! (`KDEV_HOME` defaults to `~/.cache/kdev`).

mod binaries;
pub mod hostshare;
mod identity;
mod kwokctl;
pub mod netns;
pub mod node;
mod ports;
pub mod processes;
mod ready;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::k8s::validate_dns_label;
use crate::progress::Step;

pub use binaries::Binaries;

/// `kdev image load`: imports an image into the cluster's real node.
pub async fn load_image(name: &str, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::new(name)?;
    let socket = cluster.dir().join("node/containerd/containerd.sock");
    if !socket.exists() {
        return Err(crate::error::usage(format!(
            "cluster {name:?} has no real node to load images into; start one with `kdev cluster up --name {name}` (--node real or both)"
        )));
    }
    if !file.is_file() {
        return Err(crate::error::usage(format!(
            "{} is not a file; build one with `kdev image build`",
            file.display()
        )));
    }
    let binaries = binaries::locate_node()
        .context("the node's ctr binary is missing; run scripts/install-control-plane")?;
    node::import(&binaries.ctr, &socket, file).await?;
    eprintln!("kdev: loaded {} into cluster {name:?}", file.display());
    Ok(ExitCode::SUCCESS)
}

/// Which nodes a cluster gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nodes {
    /// A real node (kubelet, containerd, runc) in a network namespace.
    Real,
    /// kwok's fake node only: no containers run.
    Kwok,
    /// Both; the real node is tainted so that only workloads that ask for
    /// it (tolerate `kdev.dev/node=real`) land there.
    Both,
}

/// The nodes asked for, else a real node where this machine can run one
/// (and kwok's, saying why, where it cannot).
pub fn nodes_or_default(nodes: Option<Nodes>) -> Nodes {
    if let Some(nodes) = nodes {
        return nodes;
    }
    match node::unsupported(&binaries::locate_node()) {
        None => Nodes::Real,
        Some(why) => {
            eprintln!("kdev: using kwok's fake node: {why}");
            Nodes::Kwok
        }
    }
}

/// What `kdev cluster` was asked to do, to which cluster.
#[derive(Debug)]
pub enum Action {
    Up {
        name: String,
        timeout: Duration,
        /// `None`: a real node where the machine can run one, else kwok.
        nodes: Option<Nodes>,
    },
    Down {
        name: String,
    },
    Kubeconfig {
        name: String,
    },
}

pub async fn run(action: Action) -> anyhow::Result<ExitCode> {
    match action {
        Action::Up {
            name,
            timeout,
            nodes,
        } => {
            let cluster = LocalCluster::new(&name)?;
            let started = Instant::now();
            cluster.up(timeout, nodes_or_default(nodes)).await?;
            eprintln!(
                "cluster {:?} is up ({:.1}s). Use it with:\n  export KUBECONFIG={}",
                cluster.name,
                started.elapsed().as_secs_f64(),
                cluster.kubeconfig_path().display()
            );
        }
        Action::Down { name } => {
            let cluster = LocalCluster::new(&name)?;
            cluster.down().await?;
        }
        Action::Kubeconfig { name } => {
            let cluster = LocalCluster::new(&name)?;
            if !cluster.exists() {
                anyhow::bail!(
                    "no local cluster named {:?}; start it with `kdev cluster up --name {}`",
                    cluster.name,
                    cluster.name
                );
            }
            println!("{}", cluster.kubeconfig_path().display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub use crate::host::kdev_home;

/// One named local cluster.
pub struct LocalCluster {
    pub name: String,
    /// kwokctl's work directory (`KWOK_WORKDIR`), shared by all local clusters.
    workdir: PathBuf,
}

impl LocalCluster {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        validate_dns_label("cluster name", name)?;
        Ok(Self {
            name: name.to_owned(),
            workdir: kdev_home().join("kwok"),
        })
    }

    /// The folder kwokctl keeps this cluster's files in.
    pub fn dir(&self) -> PathBuf {
        self.workdir.join("clusters").join(&self.name)
    }

    /// kwok's extra Stages, beside (not in) the folder kwokctl owns.
    fn stages_path(&self) -> PathBuf {
        self.workdir.join(format!("{}.stages.yaml", self.name))
    }

    /// The configuration kdev created the cluster with, kept (beside the
    /// folder kwokctl owns) until `down` because it records the ports.
    fn config_path(&self) -> PathBuf {
        self.workdir.join(format!("{}.kwokctl.json", self.name))
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir().join("kubeconfig.yaml")
    }

    pub fn exists(&self) -> bool {
        self.kubeconfig_path().exists()
    }

    /// Starts the cluster and waits until it can run pods. Returns at once if
    /// it already runs; restarts its processes if it exists but is stopped.
    pub async fn up(&self, timeout: Duration, nodes: Nodes) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let binaries = Binaries::locate()?;
        let node_binaries = if nodes == Nodes::Kwok {
            None
        } else {
            let found = binaries::locate_node();
            if let Some(why) = node::unsupported(&found) {
                return Err(crate::error::usage(format!(
                    "cannot start a real node: {why}; or use --node kwok"
                )));
            }
            found
        };
        let kwokctl = kwokctl::Kwokctl::new(&binaries, &self.workdir, &self.name);
        if self.exists() {
            if ready::served(&self.kubeconfig_path()).await {
                eprintln!("cluster {:?} is already running", self.name);
                return Ok(());
            }
            let step = Step::start(format!("restarting stopped cluster {:?}", self.name));
            kwokctl.start().await?;
            step.done();
        } else {
            let step = Step::start(format!(
                "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok for cluster {:?}",
                self.name
            ));
            self.write_config(&binaries, deadline).await?;
            let stages = self.stages_path();
            std::fs::write(&stages, kwokctl::CONTAINER_ID_STAGE)
                .with_context(|| format!("failed to write {}", stages.display()))?;
            let mut extra = Vec::new();
            if node_binaries.is_some() {
                let egress = self.egress_path();
                std::fs::write(&egress, node::Node::egress_config(&self.dir()))
                    .with_context(|| format!("failed to write {}", egress.display()))?;
                extra = kwokctl::real_node_args(&self.dir(), &egress);
            }
            let created = kwokctl
                .create(&self.config_path(), &stages, &extra, timeout)
                .await;
            if let Err(err) = created {
                // Leave nothing half-started behind.
                let _ = kwokctl.delete().await;
                processes::kill_under(&self.dir()).await;
                let _ = std::fs::remove_file(&stages);
                let _ = std::fs::remove_file(self.config_path());
                let _ = std::fs::remove_file(self.egress_path());
                return Err(err);
            }
            step.done();
        }
        if let Some(node_binaries) = &node_binaries {
            let step = Step::start(format!(
                "starting a real node (containerd, kubelet, kube-proxy, CoreDNS) for cluster {:?}",
                self.name
            ));
            let node = node::Node {
                cluster_dir: &self.dir(),
                cluster: &self.name,
                binaries: node_binaries,
                kdev: std::env::current_exe().context("failed to find kdev's own executable")?,
                api_port: self.api_port()?,
                tainted: nodes == Nodes::Both,
            };
            let admin = ready::client(&self.kubeconfig_path()).await?;
            if let Err(err) = node.up(&admin).await {
                return Err(err.context(format!(
                    "the real node did not start; its logs are in {}; `kdev cluster down --name {}` removes it",
                    self.dir().join("node/logs").display(),
                    self.name
                )));
            }
            step.done();
        }
        ready::wait(&self.kubeconfig_path(), &kwokctl, nodes, deadline).await
    }

    /// The API server's egress selector configuration (real nodes only).
    fn egress_path(&self) -> PathBuf {
        self.workdir.join(format!("{}.egress.yaml", self.name))
    }

    /// The API server's port, from the kubeconfig kwokctl wrote.
    fn api_port(&self) -> anyhow::Result<u16> {
        let config = kube::config::Kubeconfig::read_from(self.kubeconfig_path())
            .context("failed to read the cluster's kubeconfig")?;
        config
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref()?.server.clone())
            .and_then(|server| {
                server
                    .trim_end_matches('/')
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .context("the cluster's kubeconfig names no API server port")
    }

    /// Writes the cluster's configuration with ports of its own (see
    /// [`ports`]). Two `kdev cluster up` at the same moment would pick the
    /// same ports, so picking and recording them happens under an exclusive
    /// lock on a file in the shared work directory. The lock goes with the
    /// file, also when the process dies.
    async fn write_config(&self, binaries: &Binaries, deadline: Instant) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.workdir)
            .with_context(|| format!("failed to create {}", self.workdir.display()))?;
        let path = self.workdir.join("ports.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("failed to open {}", path.display()))?;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(err).with_context(|| format!("failed to lock {}", path.display()));
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for another `kdev cluster up` to pick its ports \
                 (it holds {}); try again",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ports = ports::pick(&ports::reserved(&self.workdir))?;
        let config = self.config_path();
        std::fs::write(&config, kwokctl::config(binaries, &ports).to_string())
            .with_context(|| format!("failed to write {}", config.display()))
    }

    /// Stops every process of the cluster and removes its files.
    pub async fn down(&self) -> anyhow::Result<()> {
        let dir = self.dir();
        if !dir.exists() {
            // What an `up` killed before kwokctl made the folder left.
            let _ = std::fs::remove_file(self.stages_path());
            let _ = std::fs::remove_file(self.config_path());
            eprintln!("no local cluster named {:?}; nothing to do", self.name);
            return Ok(());
        }
        let binaries = Binaries::locate()?;
        let kwokctl = kwokctl::Kwokctl::new(&binaries, &self.workdir, &self.name);
        let step = Step::start(format!("stopping cluster {:?}", self.name));
        // The node first: kwokctl removes the folder its mounts live in.
        node::down(&dir, &self.name).await?;
        let deleted = kwokctl.delete().await;
        // kwokctl stops what it recorded; anything else still running from the
        // cluster's folder (a component restarted behind its back) goes too.
        let stragglers = processes::kill_under(&dir).await;
        if stragglers > 0 {
            tracing::debug!(
                stragglers,
                "stopped processes kwokctl did not record (the node's, or restarted ones)"
            );
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("failed to remove {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(self.stages_path());
        let _ = std::fs::remove_file(self.config_path());
        let _ = std::fs::remove_file(self.egress_path());
        deleted?;
        step.done();
        Ok(())
    }
}
