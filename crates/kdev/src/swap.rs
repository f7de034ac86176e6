//! `kdev swap deploy/NAME -- COMMAND`: replace a Deployment's container with
//! a local process, and never leave the cluster broken.
//!
//! - [`session`]: the ordered, crash-safe writes (claim, record, proxy, end).
//! - [`restore`]: restoring a session from cluster state (CLI, sweep, reaper).
//! - [`proxy`]: the proxy Pod. [`link`]: the tunnel to its agent.
//! - [`env`]: the container's environment and files for the local process.
//! - [`sweep`]: `kdev sweep` and `kdev sessions`.

pub mod env;
pub mod link;
pub mod proxy;
pub mod restore;
pub mod session;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::ListParams;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use self::link::Forward;
use self::session::{CrashAfter, Session, Step};
use crate::cli::{GlobalArgs, parse_duration};
use crate::error::usage;
use crate::kubeclient::{self, Kube, is_not_found};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  kdev swap deploy/web --port 8080 --forward svc/db:5432 -- npm run dev"
)]
pub struct SwapArgs {
    /// The Deployment to swap, as deploy/NAME.
    pub target: String,
    /// The container to replace (default: the only one, or the pod's default-container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// A container port (number or name) and the local port serving it; repeatable (default: every TCP port, same number).
    #[arg(long = "port", value_name = "REMOTE[:LOCAL]")]
    pub ports: Vec<String>,
    /// Reach svc/NAME:PORT (or HOST:PORT) from the cluster's side at 127.0.0.1:LOCAL; sets NAME_SERVICE_HOST/PORT.
    #[arg(long = "forward", value_name = "svc/NAME:PORT[:LOCAL]")]
    pub forwards: Vec<String>,
    /// Also write the container's environment to this file (KEY=VALUE lines, mode 0600).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Where to write the container's ConfigMap and Secret volumes (default: a private temp dir, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// How long the cluster waits for a silent CLI before restoring the Deployment.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait for the proxy pod to run and the tunnel to come up.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The agent image for the proxy pod.
    #[arg(long, env = "KDEV_AGENT_IMAGE")]
    pub agent_image: Option<String>,
    /// The command to run locally in place of the container.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Parses `deploy/NAME` (also `deployment/`, `deployments/`, `deployment.apps/`).
pub fn parse_target(text: &str) -> anyhow::Result<String> {
    let name = match text.split_once('/') {
        Some((
            "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps",
            name,
        )) => name,
        Some((kind, _)) => {
            return Err(usage(format!(
                "cannot swap a {kind}: kdev swap takes a Deployment, like deploy/web"
            )));
        }
        None => {
            return Err(usage(format!(
                "{text:?} names no kind: write deploy/{text}"
            )));
        }
    };
    kubeclient::validate_dns_label("deployment name", name)?;
    Ok(name.to_owned())
}

/// Resolves `--port` values against the container: container port → local port.
pub fn resolve_ports(
    container: &Container,
    ports: &[String],
) -> anyhow::Result<BTreeMap<u16, u16>> {
    let declared: Vec<(Option<String>, u16)> = container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| Some((p.name.clone(), u16::try_from(p.container_port).ok()?)))
        .collect();
    if ports.is_empty() {
        return Ok(declared.iter().map(|(_, p)| (*p, *p)).collect());
    }
    let mut routes = BTreeMap::new();
    for spec in ports {
        let (remote, local) = match spec.split_once(':') {
            Some((remote, local)) => (remote, Some(local)),
            None => (spec.as_str(), None),
        };
        let remote_port = match remote.parse::<u16>() {
            Ok(port) => port,
            Err(_) => declared
                .iter()
                .find(|(name, _)| name.as_deref() == Some(remote))
                .map(|(_, port)| *port)
                .ok_or_else(|| {
                    usage(format!(
                        "container {:?} has no port named {remote:?} (--port {spec})",
                        container.name
                    ))
                })?,
        };
        if !declared.iter().any(|(_, p)| *p == remote_port) {
            return Err(usage(format!(
                "container {:?} does not declare TCP port {remote_port} (--port {spec}); Services can only route to declared ports",
                container.name
            )));
        }
        let local_port = match local {
            Some(local) => local.parse::<u16>().map_err(|_| {
                usage(format!(
                    "invalid --port {spec:?}: LOCAL must be a port number"
                ))
            })?,
            None => remote_port,
        };
        routes.insert(remote_port, local_port);
    }
    Ok(routes)
}

/// How the session ended, besides the command's exit.
enum End {
    Exited(std::process::ExitStatus),
    Lost(String),
}

pub async fn run(global: &GlobalArgs, args: SwapArgs) -> anyhow::Result<ExitCode> {
    let name = parse_target(&args.target)?;
    if args.ttl < Duration::from_secs(3) || args.ttl > Duration::from_secs(3600) {
        return Err(usage("--ttl must be between 3s and 1h"));
    }
    let crash = CrashAfter::from_env()?;
    let kube = kubeclient::connect(global).await?;
    let forwards: Vec<Forward> = args
        .forwards
        .iter()
        .map(|f| Forward::parse(f, &kube.namespace))
        .collect::<Result<_, _>>()?;
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let deployment = match deployments.get(&name).await {
        Ok(d) => d,
        Err(err) if is_not_found(&err) => {
            anyhow::bail!(
                "deployment/{name} not found in namespace {}; check the name and -n",
                kube.namespace
            )
        }
        Err(err) => {
            return Err(kube.explain(err, format!("read deployment {}/{name}", kube.namespace)));
        }
    };
    let container = session::choose_container(&deployment, args.container.as_deref())?;
    let routes = resolve_ports(&container, &args.ports)?;

    sweep::settle_target(&kube, &name).await?;
    let started = Instant::now();
    let session = match Session::claim(&kube, &name, &container.name, args.ttl, crash).await? {
        Ok(session) => Arc::new(session),
        Err(held) => anyhow::bail!(
            "deployment/{name} is already swapped by {} since {} (session {}); one swap per Deployment",
            held.holder,
            held.since,
            held.session
        ),
    };
    let (renew_task, mut lost) = spawn_renewal(session.clone());

    let outcome = match swap_and_run(
        &kube,
        session.clone(),
        &deployment,
        &container,
        routes,
        forwards,
        &args,
        started,
        &mut lost,
    )
    .await
    {
        Ok(end) => end,
        Err(err) => {
            // Undo what was done; if even that fails, the Lease expires and
            // the reaper (or the next sweep) finishes the job.
            renew_task.abort();
            if let Err(undo) = session.end().await {
                eprintln!(
                    "kdev: could not undo the swap ({undo:#}); it is restored when the session's Lease expires"
                );
            }
            return Err(err);
        }
    };
    renew_task.abort();
    session.crash().reached(Step::CommandEnded);
    let restored = session.end().await.with_context(|| {
        format!(
            "failed to restore deployment/{name}; it is restored when the session's Lease expires (or run `kdev sweep`)"
        )
    })?;
    eprintln!("kdev: {}", restored.describe(&name));
    match outcome {
        End::Exited(status) => Ok(exit_code(status)),
        End::Lost(reason) => {
            eprintln!("kdev: the session ended because {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Steps 2 to 7, up to the command's exit (or the session's loss).
#[allow(clippy::too_many_arguments)]
async fn swap_and_run(
    kube: &Kube,
    session: Arc<Session>,
    deployment: &Deployment,
    container: &Container,
    routes: BTreeMap<u16, u16>,
    forwards: Vec<Forward>,
    args: &SwapArgs,
    started: Instant,
    lost: &mut mpsc::Receiver<String>,
) -> anyhow::Result<End> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let original_pod = running_pod_of(&pods, deployment).await;
    let (patched, original_replicas) = session.record().await?;
    let agent_image = args
        .agent_image
        .clone()
        .unwrap_or_else(proxy::default_agent_image);
    session
        .create_proxy(&patched, container, original_replicas, &agent_image)
        .await?;
    let step =
        crate::progress::Step::start(format!("waiting for proxy pod {}", session.proxy_name));
    let proxy = session.wait_proxy_running(args.timeout).await?;
    // The tunnel's own client: TCP_NODELAY towards the API server.
    let tunnel_pods: Api<Pod> = Api::namespaced(kube.streaming_client()?, &kube.namespace);
    let (mut current, link_task) = link::maintain(
        tunnel_pods,
        session.proxy_name.clone(),
        Arc::new(routes.clone()),
    );
    let _link_guard = AbortOnDrop(link_task);
    link::wait_up(&mut current, args.timeout).await?;
    step.done();
    session.crash().reached(Step::TunnelUp);

    let mut forward_tasks = Vec::new();
    let mut forward_env = Vec::new();
    let mut forward_lines = Vec::new();
    for forward in forwards {
        let (local, task) = link::serve_forward(forward.clone(), current.clone()).await?;
        forward_env.extend(forward.service_env(local));
        forward_lines.push(format!("{}:{} → {local}", forward.host, forward.port));
        forward_tasks.push(AbortOnDrop(task));
    }

    let root = MountRoot::create(args.mount.clone(), &session.id)?;
    let template = patched
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let fields = env::FieldSource {
        pod: original_pod.as_ref().unwrap_or(&proxy),
    };
    let mut environment = env::resolve(kube, &template, container, fields, &root.path).await?;
    environment.vars.extend(forward_env);
    environment
        .vars
        .insert("KDEV_ROOT".into(), root.path.display().to_string());
    environment
        .vars
        .insert("KDEV_SESSION".into(), session.id.clone());
    for notice in &environment.notices {
        eprintln!("kdev: note: {notice}");
    }
    if let Some(path) = &args.env_file {
        write_env_file(path, &environment.vars)?;
    }

    let name = &session.deployment;
    eprintln!(
        "kdev: swapped deployment/{name} (container {}, {original_replicas} replicas → 0) in {:.1}s; session {}",
        container.name,
        started.elapsed().as_secs_f64(),
        session.id
    );
    for (remote, local) in &routes {
        eprintln!("kdev:   port {remote} → 127.0.0.1:{local}");
    }
    for line in &forward_lines {
        eprintln!("kdev:   forward {line}");
    }
    eprintln!("kdev:   files under {} ($KDEV_ROOT)", root.path.display());

    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .envs(&environment.vars)
        .spawn()
        .with_context(|| format!("failed to start {:?}", args.command[0]))?;
    session.crash().reached(Step::CommandStarted);

    let mut interrupt = signal(SignalKind::interrupt()).context("failed to watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("failed to watch SIGHUP")?;
    let end = tokio::select! {
        status = child.wait() => End::Exited(status.context("failed to wait for the command")?),
        _ = interrupt.recv() => End::Exited(stop_child(&mut child, nix::sys::signal::Signal::SIGINT, "SIGINT").await?),
        _ = terminate.recv() => End::Exited(stop_child(&mut child, nix::sys::signal::Signal::SIGTERM, "SIGTERM").await?),
        _ = hangup.recv() => End::Exited(stop_child(&mut child, nix::sys::signal::Signal::SIGHUP, "SIGHUP").await?),
        reason = lost.recv() => {
            let reason = reason.unwrap_or_else(|| "its renewal stopped".into());
            eprintln!("kdev: session lost: {reason}; stopping the command");
            stop_child(&mut child, nix::sys::signal::Signal::SIGTERM, "the lost session").await?;
            End::Lost(reason)
        }
    };
    drop(root);
    Ok(end)
}

/// Passes the signal on, waits up to 10 s, then kills the command. A terminal's
/// Ctrl-C reaches the command by itself; the command gets 2 s to act on it first.
async fn stop_child(
    child: &mut tokio::process::Child,
    signal: nix::sys::signal::Signal,
    why: &str,
) -> anyhow::Result<std::process::ExitStatus> {
    eprintln!("kdev: {why}: ending the session");
    if signal == nix::sys::signal::Signal::SIGINT
        && let Ok(status) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await
    {
        return status.context("failed to wait for the command");
    }
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => status.context("failed to wait for the command"),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.context("failed to wait for the command")
        }
    }
}

/// Renews the Lease every third of its duration; reports a lost session once.
fn spawn_renewal(session: Arc<Session>) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<String>) {
    let (lost_tx, lost_rx) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        let period = session.ttl / 3;
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match session.renew().await {
                Ok(Ok(())) => last_ok = Instant::now(),
                Ok(Err(reason)) => {
                    let _ = lost_tx.send(reason).await;
                    return;
                }
                Err(err) => {
                    eprintln!("kdev: failed to renew the session: {err:#}");
                    if last_ok.elapsed() >= session.ttl {
                        let _ = lost_tx
                            .send(format!(
                                "it could not be renewed for {}s and may have been restored",
                                session.ttl.as_secs()
                            ))
                            .await;
                        return;
                    }
                }
            }
        }
    });
    (task, lost_rx)
}

/// A Running pod of the Deployment, for the downward API's fields.
async fn running_pod_of(pods: &Api<Pod>, deployment: &Deployment) -> Option<Pod> {
    let selector = deployment.spec.as_ref()?.selector.match_labels.as_ref()?;
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    list.items
        .into_iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
        _ => ExitCode::from(1),
    }
}

fn write_env_file(path: &std::path::Path, vars: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write --env-file {}", path.display()))?;
    for (key, value) in vars {
        writeln!(file, "{key}={}", quote_env(value))
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// Quotes a value for a dotenv file when it needs it.
fn quote_env(value: &str) -> String {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@,+=".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// The folder volumes are written to; removed on drop if kdev made it.
struct MountRoot {
    path: PathBuf,
    owned: bool,
}

impl MountRoot {
    fn create(chosen: Option<PathBuf>, session: &str) -> anyhow::Result<Self> {
        match chosen {
            Some(path) => {
                let owned = !path.exists();
                env::make_private_dir(&path)?;
                Ok(Self { path, owned })
            }
            None => {
                let path = std::env::temp_dir().join(format!("kdev-swap-{session}"));
                env::make_private_dir(&path)?;
                Ok(Self { path, owned: true })
            }
        }
    }
}

impl Drop for MountRoot {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets() {
        assert_eq!(parse_target("deploy/web").expect("valid"), "web");
        assert_eq!(parse_target("deployment.apps/web").expect("valid"), "web");
        assert!(
            parse_target("sts/web")
                .unwrap_err()
                .to_string()
                .contains("takes a Deployment")
        );
        assert!(
            parse_target("web")
                .unwrap_err()
                .to_string()
                .contains("deploy/web")
        );
        assert!(parse_target("deploy/Web").is_err());
    }

    #[test]
    fn ports_resolve_by_number_and_name() {
        let container: Container = serde_json::from_value(json!({
            "name": "app",
            "ports": [{ "name": "http", "containerPort": 8080 }, { "containerPort": 9090 }]
        }))
        .expect("valid");
        assert_eq!(
            resolve_ports(&container, &[]).expect("ok"),
            [(8080, 8080), (9090, 9090)].into()
        );
        assert_eq!(
            resolve_ports(&container, &["http:3000".into()]).expect("ok"),
            [(8080, 3000)].into()
        );
        assert_eq!(
            resolve_ports(&container, &["9090".into()]).expect("ok"),
            [(9090, 9090)].into()
        );
        assert!(resolve_ports(&container, &["grpc".into()]).is_err());
        assert!(resolve_ports(&container, &["7000".into()]).is_err());
        assert!(resolve_ports(&container, &["http:x".into()]).is_err());
    }

    #[test]
    fn env_values_are_quoted_when_needed() {
        assert_eq!(quote_env("plain-value_1"), "plain-value_1");
        assert_eq!(quote_env("two words"), "'two words'");
        assert_eq!(quote_env("it's"), "'it'\\''s'");
    }
}
