//! `kdev envs dashboard`: a port-forward from loopback to the dashboard of
//! a Ready controller pod, the URL printed, and a browser opened when the
//! machine has one. Runs until Ctrl-C.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};

use crate::k8s::{self, Kube};

/// The controller pods' label, as `deploy/` sets it.
const CONTROLLER_SELECTOR: &str = "app.kubernetes.io/name=kdev-controller";

#[derive(Clone, Debug)]
pub struct Open {
    /// Where the controller runs.
    pub namespace: String,
    /// The local port (0: any free one).
    pub port: u16,
    /// The dashboard's port in the pod.
    pub remote_port: u16,
    pub browser: bool,
}

pub async fn run(flags: &k8s::Flags, open: Open) -> anyhow::Result<ExitCode> {
    let kube = k8s::connect(flags).await?;
    let mut pod = ready_controller(&kube, &open).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", open.port))
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "failed to listen on 127.0.0.1:{}: {err}; pick another with --port",
                open.port
            )
        })?;
    let url = format!("http://{}/", listener.local_addr()?);
    println!(
        "dashboard: {url} (a port-forward to pod {}/{pod}; Ctrl-C ends it)",
        open.namespace
    );
    if open.browser {
        open_browser(&url);
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let (mut local, _) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                continue;
            }
        };
        // A pod gone since (a rollout, the node) is replaced by another
        // Ready one before the connection is given up.
        let forward =
            match k8s::portforward::open(&kube.client, &open.namespace, &pod, open.remote_port)
                .await
            {
                Ok(forward) => forward,
                Err(first) => match ready_controller(&kube, &open).await {
                    Ok(other) => {
                        pod = other;
                        match k8s::portforward::open(
                            &kube.client,
                            &open.namespace,
                            &pod,
                            open.remote_port,
                        )
                        .await
                        {
                            Ok(forward) => forward,
                            Err(err) => {
                                eprintln!(
                                    "kdev: port-forward to pod {}/{pod} failed: {err:#}",
                                    open.namespace
                                );
                                continue;
                            }
                        }
                    }
                    Err(err) => {
                        eprintln!("kdev: port-forward failed ({first:#}) and {err:#}");
                        continue;
                    }
                },
            };
        tokio::spawn(async move {
            let mut forward = forward;
            let _ = tokio::io::copy_bidirectional(&mut local, &mut forward).await;
        });
    }
}

/// A Ready controller pod that serves the dashboard.
async fn ready_controller(kube: &Kube, open: &Open) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &open.namespace);
    let list = pods
        .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
        .await
        .map_err(|err| {
            kube.explain(
                err,
                format!("list the controller's pods in namespace {}", open.namespace),
            )
        })?;
    if list.items.is_empty() {
        anyhow::bail!(
            "no kdev controller pods ({CONTROLLER_SELECTOR}) in namespace {}; deploy kdev with the dashboard component (deploy/dashboard), or name its namespace with --controller-namespace",
            open.namespace
        );
    }
    let serving = |pod: &Pod| {
        pod.spec.as_ref().is_some_and(|spec| {
            spec.containers
                .iter()
                .any(|c| c.args.iter().flatten().any(|a| a == "--dashboard"))
        })
    };
    if !list.items.iter().any(serving) {
        anyhow::bail!(
            "the kdev controller in namespace {} runs without --dashboard; add the deploy/dashboard component",
            open.namespace
        );
    }
    list.items
        .iter()
        .filter(|pod| serving(pod) && k8s::objects::pod_ready(pod))
        .map(|pod| pod.name_any())
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no kdev controller pod in namespace {} is Ready; see `kubectl -n {} get pods -l {CONTROLLER_SELECTOR}`",
                open.namespace,
                open.namespace
            )
        })
}

/// `$BROWSER`, else the desktop's opener when there is a desktop; quietly
/// nothing otherwise (the URL is printed).
fn open_browser(url: &str) {
    let desktop = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos");
    let program = std::env::var_os("BROWSER")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            desktop
                .then(|| crate::host::which("xdg-open").or_else(|| crate::host::which("open")))
                .flatten()
        });
    if let Some(program) = program {
        let _ = std::process::Command::new(program)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}
