//! Driving kwokctl's binary runtime.
//!
//! kwokctl starts each component as a detached local process and records it
//! under `$KWOK_WORKDIR/clusters/<name>`. kdev hands it a configuration that
//! points every component at a local binary (kwokctl would otherwise download
//! them), binds everything to 127.0.0.1, and keeps the user's kubeconfig
//! untouched (`--kubeconfig ""`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::{Binaries, ports};

/// kwok's resources that tests create per pod: logs from a local file, exec of
/// a local command, port-forward to a local port (and attach). `Stage` is left
/// out on purpose: enabling it replaces kwok's built-in pod and node
/// lifecycles with whatever Stage objects exist in the cluster (none).
pub const KWOK_CRDS: &[&str] = &[
    "Logs",
    "ClusterLogs",
    "Exec",
    "ClusterExec",
    "PortForward",
    "ClusterPortForward",
    "Attach",
    "ClusterAttach",
];

/// The `KwokctlConfiguration` for a cluster made of the given binaries,
/// listening on the given ports (see [`ports::OPTIONS`]).
/// JSON is valid YAML, which is what kwokctl reads.
pub fn config(binaries: &Binaries, ports: &[u16; ports::OPTIONS.len()]) -> serde_json::Value {
    let path = |p: &Path| p.display().to_string();
    let mut config = json!({
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "etcdBinary": path(&binaries.etcd),
            "kubeApiserverBinary": path(&binaries.kube_apiserver),
            "kubeControllerManagerBinary": path(&binaries.kube_controller_manager),
            "kubeSchedulerBinary": path(&binaries.kube_scheduler),
            "kubectlBinary": path(&binaries.kubectl),
            "kwokControllerBinary": path(&binaries.kwok),
            "enableCRDs": KWOK_CRDS,
        }
    });
    for (option, port) in ports::OPTIONS.iter().zip(ports) {
        config["options"][*option] = json!(port);
    }
    config
}

/// A pod Stage kwok runs besides its defaults (given to kwok-controller as
/// a second `--config`): it gives each running container a container ID, as
/// a kubelet does. kwok's own stages leave it empty, and log tools (stern;
/// kdev to tell a restart) use it to tell one run of a container from the
/// next.
pub const CONTAINER_ID_STAGE: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kdev-container-ids
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Running]
    - key: '.status.containerStatuses.[] | select( .containerID == null ) | .name'
      operator: Exists
  next:
    statusTemplate: |
      {{ $uid := .metadata.uid }}
      containerStatuses:
      {{ range .status.containerStatuses }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: ""
        ready: {{ .ready }}
        restartCount: {{ .restartCount }}
        started: true
        containerID: {{ printf "kwok://%s-%s-%v" $uid .name .restartCount | Quote }}
        state:
          running:
            startedAt: {{ .state.running.startedAt | Quote }}
      {{ end }}
"#;

/// Extra component flags for a cluster with a real node: the API server
/// reaches nodes and Services through the node proxy (its egress), prefers
/// InternalIPs, authenticates to the kubelet with the admin certificate
/// (the kubelet authenticates to it with a node certificate of its own);
/// kwok fakes only the nodes `kwokctl scale node` made.
pub fn real_node_args(cluster_dir: &Path, egress: &Path) -> Vec<String> {
    let pki = cluster_dir.join("pki");
    vec![
        format!(
            "kube-apiserver=egress-selector-config-file={}",
            egress.display()
        ),
        "kube-apiserver=kubelet-preferred-address-types=InternalIP,Hostname".into(),
        // The real node's kubelet is system:node:kdev-node: it may change
        // its own Node and its own pods only.
        "kube-apiserver=enable-admission-plugins=NodeRestriction".into(),
        format!(
            "kube-apiserver=kubelet-client-certificate={}",
            pki.join("admin.crt").display()
        ),
        format!(
            "kube-apiserver=kubelet-client-key={}",
            pki.join("admin.key").display()
        ),
        "kwok-controller=manage-all-nodes=false".into(),
        "kwok-controller=manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
    ]
}

pub struct Kwokctl<'a> {
    binaries: &'a Binaries,
    workdir: &'a Path,
    name: &'a str,
}

impl<'a> Kwokctl<'a> {
    pub fn new(binaries: &'a Binaries, workdir: &'a Path, name: &'a str) -> Self {
        Self {
            binaries,
            workdir,
            name,
        }
    }

    /// `stages`: a file of extra kwok Stages (see [`CONTAINER_ID_STAGE`]),
    /// which must stay in place while the cluster exists.
    pub async fn create(
        &self,
        config: &Path,
        stages: &Path,
        extra: &[String],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let timeout = format!("{}s", timeout.as_secs().max(1));
        let config = config.display().to_string();
        let stages = format!("kwok-controller=config={}", stages.display());
        let mut args = vec![
            "create",
            "cluster",
            "--runtime",
            "binary",
            "--config",
            &config,
            "--extra-args",
            &stages,
            "--kubeconfig",
            "",
            "--timeout",
            &timeout,
        ];
        for arg in extra {
            args.extend(["--extra-args", arg]);
        }
        self.run(&args).await
    }

    pub async fn start(&self) -> anyhow::Result<()> {
        self.run(&["start", "cluster"]).await
    }

    pub async fn delete(&self) -> anyhow::Result<()> {
        // `delete` insists on a kubeconfig to remove the cluster's context
        // from and refuses an empty path; kdev never added a context anywhere,
        // so it names a file that does not exist.
        let untouched = self.workdir.join("no-kubeconfig.yaml");
        let untouched = untouched.display().to_string();
        self.run(&["delete", "cluster", "--kubeconfig", &untouched])
            .await
    }

    /// Adds fake nodes, each Ready and managed by kwok. kwokctl's node
    /// template gives nodes documentation addresses (192.0.2.x); the API
    /// server dials a node's InternalIP for logs, exec and port-forward, and
    /// kwok's fake kubelet listens on 127.0.0.1, so the nodes get that.
    pub async fn scale_nodes(&self, replicas: u32) -> anyhow::Result<()> {
        let replicas = replicas.to_string();
        self.run(&[
            "scale",
            "node",
            "--replicas",
            &replicas,
            "--param",
            r#".nodeIPs = ["127.0.0.1"]"#,
        ])
        .await
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let what = args.iter().take(2).copied().collect::<Vec<_>>().join(" ");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(self.binaries.bin_dir.clone()).chain(std::env::split_paths(&path)),
        )
        .context("PATH holds a folder name that cannot be joined")?;
        tracing::debug!(?args, "running kwokctl");
        let output = tokio::process::Command::new(&self.binaries.kwokctl)
            .arg("--name")
            .arg(self.name)
            .args(args)
            .env("KWOK_WORKDIR", self.workdir)
            .env("PATH", path)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("failed to run {}", self.binaries.kwokctl.display()))?;
        let log = String::from_utf8_lossy(&output.stderr);
        tracing::debug!(%log, "kwokctl {what} finished");
        if output.status.success() {
            return Ok(());
        }
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!(
            "kwokctl {what} for cluster {:?} failed ({}); its last output:\n{}\n(component logs are in {})",
            self.name,
            output.status,
            tail.join("\n"),
            self.workdir
                .join("clusters")
                .join(self.name)
                .join("logs")
                .display()
        )
    }
}
