//! What runs before a suite: the controller under test deployed
//! (`--apply-kustomize DIR`, `--skaffold`) and waited for, or run as a
//! local process for the whole suite (`--run-controller -- CMD…`), which
//! `--watch` restarts when its source changes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use tokio::io::AsyncWriteExt as _;

use super::yaml;
use crate::k8s::{self, Kube};

/// How the controller under test gets into the cluster before the suite.
#[derive(Clone, Debug, Default)]
pub struct Deploy {
    /// `--apply-kustomize DIR`, in order.
    pub kustomize: Vec<PathBuf>,
    /// `--skaffold`: `skaffold run` in the current directory.
    pub skaffold: bool,
    /// How long its Deployments may take to be Available.
    pub timeout: Duration,
}

/// Deploys what `deploy` names and waits until each Deployment it made is
/// Available; an error says which command or Deployment failed.
pub async fn deploy(deploy: &Deploy, kube: &Kube, kubeconfig: Option<&Path>) -> anyhow::Result<()> {
    for dir in &deploy.kustomize {
        let kubectl = kubectl();
        let rendered = run_kubectl(
            &kubectl,
            kubeconfig,
            &["kustomize".as_ref(), dir.as_os_str()],
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("--apply-kustomize {}: {e}", dir.display()))?;
        eprintln!(
            "kdev test: applying {} (kubectl apply --server-side)",
            dir.display()
        );
        run_kubectl(
            &kubectl,
            kubeconfig,
            &[
                "apply".as_ref(),
                "--server-side".as_ref(),
                "--force-conflicts".as_ref(),
                "--field-manager=kdev-test".as_ref(),
                "-f".as_ref(),
                "-".as_ref(),
            ],
            Some(rendered.as_bytes()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("--apply-kustomize {}: {e}", dir.display()))?;
        let docs = yaml::load(&rendered).map_err(|e| {
            anyhow::anyhow!(
                "--apply-kustomize {}: kustomize's output: {}",
                dir.display(),
                e.message
            )
        })?;
        for doc in docs {
            let v = &doc.value;
            if v["kind"] != "Deployment" || v["apiVersion"].as_str().is_none_or(|a| a != "apps/v1")
            {
                continue;
            }
            let (Some(name), namespace) = (
                v["metadata"]["name"].as_str(),
                v["metadata"]["namespace"].as_str(),
            ) else {
                continue;
            };
            let namespace = namespace.unwrap_or(&kube.namespace);
            available(kube, namespace, name, deploy.timeout).await?;
        }
    }
    if deploy.skaffold {
        let skaffold = crate::host::which("skaffold").ok_or_else(|| {
            crate::error::usage("--skaffold runs `skaffold run`, and there is no skaffold on PATH")
        })?;
        eprintln!("kdev test: skaffold run (it waits for what it deploys)");
        let mut command = tokio::process::Command::new(skaffold);
        command.arg("run");
        if let Some(k) = kubeconfig {
            command.env("KUBECONFIG", k);
        }
        let status = command.status().await?;
        if !status.success() {
            anyhow::bail!("`skaffold run` failed ({status}); its output is above; no test ran");
        }
    }
    Ok(())
}

/// kdev's pinned kubectl, else the one on PATH.
fn kubectl() -> PathBuf {
    crate::cluster::Binaries::locate()
        .map(|b| b.kubectl)
        .unwrap_or_else(|_| PathBuf::from("kubectl"))
}

async fn run_kubectl(
    kubectl: &Path,
    kubeconfig: Option<&Path>,
    args: &[&std::ffi::OsStr],
    stdin: Option<&[u8]>,
) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(kubectl);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = kubeconfig {
        command.env("KUBECONFIG", k);
    }
    let mut child = command
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", kubectl.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).await?;
        drop(pipe);
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        anyhow::bail!(
            "`kubectl {}` failed: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits (a watch) until the Deployment reports Available with every
/// replica updated.
async fn available(
    kube: &Kube,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    let what =
        format!("deployment {namespace}/{name} (the controller under test) was not Available");
    eprintln!("kdev test: waiting for deployment {namespace}/{name} to be Available");
    k8s::wait::until(api, name, timeout, &what, |d| {
        let Some(d) = d else {
            return k8s::wait::Check::Wait("not created".into());
        };
        let status = d.status.clone().unwrap_or_default();
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let available = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Available" && c.status == "True");
        let observed = status.observed_generation == d.metadata.generation;
        if available && observed && status.updated_replicas.unwrap_or(0) >= wanted {
            k8s::wait::Check::Done(())
        } else {
            k8s::wait::Check::Wait(format!(
                "{}/{wanted} updated, {} available",
                status.updated_replicas.unwrap_or(0),
                status.available_replicas.unwrap_or(0)
            ))
        }
    })
    .await
}

/// `--run-controller`'s process: started after the suite's setup, its
/// output in one log file, restarted by `--watch`, killed at the end.
pub struct Controller {
    program: String,
    args: Vec<String>,
    log: PathBuf,
    kubeconfig: Option<PathBuf>,
    child: Option<tokio::process::Child>,
}

impl Controller {
    /// `None` when no controller was asked for.
    pub fn start(
        command: &[String],
        log: PathBuf,
        kubeconfig: Option<PathBuf>,
    ) -> anyhow::Result<Option<Controller>> {
        let Some((program, args)) = command.split_first() else {
            return Ok(None);
        };
        if let Some(dir) = log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Truncated once per suite; restarts append.
        std::fs::File::create(&log).map_err(|e| {
            crate::error::usage(format!(
                "--run-controller: cannot write {}: {e}",
                log.display()
            ))
        })?;
        let mut controller = Controller {
            program: program.clone(),
            args: args.to_vec(),
            log,
            kubeconfig,
            child: None,
        };
        controller.spawn()?;
        eprintln!(
            "kdev test: running the controller {} for the suite (its log: {})",
            controller.program,
            controller.log.display()
        );
        Ok(Some(controller))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|e| {
                anyhow::anyhow!("--run-controller: cannot write {}: {e}", self.log.display())
            })?;
        let err = file.try_clone()?;
        let mut command = tokio::process::Command::new(&self.program);
        // Its output goes to a file, named in the report, so it never
        // mixes with the tests' lines.
        // Its own process group, signalled whole: `cargo run` or `go run`
        // start the controller as their child, which a signal to the
        // parent alone would leave running.
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(k) = &self.kubeconfig {
            command.env("KUBECONFIG", k);
        }
        self.child = Some(command.spawn().map_err(|e| {
            crate::error::usage(format!(
                "--run-controller: cannot start {}: {e}",
                self.program
            ))
        })?);
        Ok(())
    }

    /// Stops the process (SIGTERM, then SIGKILL after 5 s) and starts it
    /// again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        eprintln!("kdev test: restarting the controller {}", self.program);
        self.spawn()
    }

    /// Says so when the process ended by itself during a run.
    pub fn check(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            eprintln!(
                "kdev test: the controller exited during the suite ({status}); its log: {}",
                self.log.display()
            );
        }
    }

    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Some(group) = group_of(&child) else {
            return;
        };
        use nix::sys::signal::{Signal, killpg};
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
        // What the leader left of its group (a `cargo run`'s controller).
        let _ = killpg(group, Signal::SIGKILL);
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(group) = self.child.as_ref().and_then(group_of) {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The process group a child leads (`process_group(0)`), while it runs.
fn group_of(child: &tokio::process::Child) -> Option<nix::unistd::Pid> {
    let id = i32::try_from(child.id()?).ok()?;
    Some(nix::unistd::Pid::from_raw(id))
}
