//! Where a suite runs: the current kubeconfig's cluster, a local cluster
//! `kdev cluster` starts for the suite, or a kind cluster. A cluster started
//! for the suite is removed at its end unless `--keep-cluster`.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{LocalCluster, Nodes};
use crate::error::usage;
use crate::host::which;
use crate::k8s;

/// `--cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The current kubeconfig (and `--kubeconfig`, `--context`).
    Current,
    /// A local cluster of kdev's own; `None`: a real node where the
    /// machine can run one, else kwok's.
    Local { nodes: Option<Nodes> },
    /// A kind cluster (needs `kind` and Docker or Podman).
    Kind,
}

/// A cluster the suite runs on, and what to do with it at the end.
pub struct Place {
    pub flags: k8s::Flags,
    started: Started,
    keep: bool,
}

enum Started {
    Nothing,
    Local(LocalCluster),
    /// `dir` holds the kubeconfig kind wrote for the suite.
    Kind {
        name: String,
        dir: PathBuf,
    },
}

/// How long a cluster started for a suite may take to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(180);

impl Place {
    /// Starts the cluster the choice asks for (nothing for `Current`).
    pub async fn start(choice: &Choice, flags: &k8s::Flags, keep: bool) -> anyhow::Result<Place> {
        let name = format!(
            "kdev-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..5]
        );
        let (started, kubeconfig) = match choice {
            Choice::Current => {
                return Ok(Place {
                    flags: flags.clone(),
                    started: Started::Nothing,
                    keep,
                });
            }
            Choice::Local { nodes } => {
                let cluster = LocalCluster::new(&name)?;
                eprintln!("kdev test: starting the local cluster {name} for the suite");
                let nodes = crate::cluster::nodes_or_default(*nodes);
                if let Err(err) = cluster.up(UP_TIMEOUT, nodes).await {
                    let _ = cluster.down().await;
                    return Err(err.context(format!("the local cluster {name} did not start")));
                }
                let kubeconfig = cluster.kubeconfig_path();
                (Started::Local(cluster), kubeconfig)
            }
            Choice::Kind => {
                let (kind, engine) = kind_tools().await?;
                let dir = crate::host::kdev_home().join("kind").join(&name);
                std::fs::create_dir_all(&dir)?;
                let kubeconfig = dir.join("kubeconfig");
                eprintln!("kdev test: creating the kind cluster {name} for the suite ({engine})");
                let status = tokio::process::Command::new(&kind)
                    .args(["create", "cluster", "--name", &name, "--wait", "120s"])
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .status()
                    .await?;
                let started = Started::Kind { name, dir };
                if !status.success() {
                    finish(started).await;
                    anyhow::bail!("`kind create cluster` failed ({status}); its output is above");
                }
                (started, kubeconfig)
            }
        };
        Ok(Place {
            flags: k8s::Flags {
                kubeconfig: Some(kubeconfig),
                context: None,
                namespaces: flags.namespaces.clone(),
            },
            started,
            keep,
        })
    }

    /// Removes a cluster started for the suite, or says how to reach the
    /// one kept.
    pub async fn finish(self) {
        if self.keep {
            match &self.started {
                Started::Nothing => {}
                Started::Local(cluster) => eprintln!(
                    "kdev test: kept the local cluster {} (--keep-cluster): export KUBECONFIG={}; `kdev cluster down --name {}` removes it",
                    cluster.name,
                    cluster.kubeconfig_path().display(),
                    cluster.name
                ),
                Started::Kind { name, dir } => eprintln!(
                    "kdev test: kept the kind cluster {name} (--keep-cluster): export KUBECONFIG={}; `kind delete cluster --name {name}` removes it",
                    dir.join("kubeconfig").display()
                ),
            }
            return;
        }
        finish(self.started).await;
    }
}

async fn finish(started: Started) {
    match started {
        Started::Nothing => {}
        Started::Local(cluster) => {
            if let Err(err) = cluster.down().await {
                eprintln!(
                    "kdev test: could not remove the local cluster {}: {err:#}; `kdev cluster down --name {}` removes it",
                    cluster.name, cluster.name
                );
            }
        }
        Started::Kind { name, dir } => {
            let deleted = match which("kind") {
                Some(kind) => tokio::process::Command::new(kind)
                    .args(["delete", "cluster", "--name", &name])
                    .arg("--kubeconfig")
                    .arg(dir.join("kubeconfig"))
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                None => false,
            };
            let _ = std::fs::remove_dir_all(&dir);
            if !deleted {
                eprintln!(
                    "kdev test: could not delete the kind cluster {name}; `kind delete cluster --name {name}` removes it"
                );
            }
        }
    }
}

/// kind and a running container engine, or a usage error saying what is
/// missing.
async fn kind_tools() -> anyhow::Result<(PathBuf, &'static str)> {
    let kind = which("kind");
    let mut engine = None;
    for candidate in ["docker", "podman"] {
        if which(candidate).is_none() {
            continue;
        }
        // A CLI without its daemon is no engine: `info` asks the daemon.
        let info = tokio::process::Command::new(candidate)
            .arg("info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(10), info).await
            && status.success()
        {
            engine = Some(candidate);
            break;
        }
    }
    match (kind, engine) {
        (Some(kind), Some(engine)) => Ok((kind, engine)),
        (kind, engine) => {
            let mut missing = Vec::new();
            if kind.is_none() {
                missing.push("kind is not on PATH");
            }
            if engine.is_none() {
                missing.push("no container engine answers (`docker info` and `podman info`)");
            }
            Err(usage(format!(
                "--cluster kind needs kind and a running Docker or Podman: {}; use --cluster local (kdev's own local cluster) instead",
                missing.join(", and ")
            )))
        }
    }
}
