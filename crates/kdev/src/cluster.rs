//! `kdev cluster up|down|kubeconfig`: a local Kubernetes control plane with no
//! containers.
//!
//! Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler run
//! as local processes (kwokctl's binary runtime), with kwok faking a node and
//! its pods: a Deployment gets ReplicaSets, scheduled pods and Running
//! statuses, and kwok's Logs/Exec/PortForward resources make a pod's logs come
//! from a local file, its exec run a local command and a port-forward reach a
//! local port. Everything listens on 127.0.0.1.
//!
//! Binaries come from `scripts/install-control-plane` (see [`binaries`]);
//! cluster state lives under `$KDEV_HOME/kwok/clusters/<name>`
//! (`KDEV_HOME` defaults to `~/.cache/kdev`).

mod binaries;
mod kwokctl;
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

/// What `kdev cluster` was asked to do, to which cluster.
#[derive(Debug)]
pub enum Action {
    Up { name: String, timeout: Duration },
    Down { name: String },
    Kubeconfig { name: String },
}

pub async fn run(action: Action) -> anyhow::Result<ExitCode> {
    match action {
        Action::Up { name, timeout } => {
            let cluster = LocalCluster::new(&name)?;
            let started = Instant::now();
            cluster.up(timeout).await?;
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
    pub async fn up(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let binaries = Binaries::locate()?;
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
            let created = kwokctl.create(&self.config_path(), &stages, timeout).await;
            if let Err(err) = created {
                // Leave nothing half-started behind.
                let _ = kwokctl.delete().await;
                processes::kill_under(&self.dir()).await;
                let _ = std::fs::remove_file(&stages);
                let _ = std::fs::remove_file(self.config_path());
                return Err(err);
            }
            step.done();
        }
        ready::wait(&self.kubeconfig_path(), &kwokctl, deadline).await
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
        let deleted = kwokctl.delete().await;
        // kwokctl stops what it recorded; anything else still running from the
        // cluster's folder (a component restarted behind its back) goes too.
        let stragglers = processes::kill_under(&dir).await;
        if stragglers > 0 {
            tracing::warn!(stragglers, "stopped processes kwokctl left running");
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("failed to remove {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(self.stages_path());
        let _ = std::fs::remove_file(self.config_path());
        deleted?;
        step.done();
        Ok(())
    }
}
