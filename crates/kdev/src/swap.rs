//! `kdev swap deploy/NAME -- COMMAND`: replace a Deployment's container with
//! a local process, and never leave the cluster broken.
//!
//! `kdev run deploy/NAME -- COMMAND` ([`Mode::Run`]) is the same session
//! without the workload's traffic: the command gets the container's
//! environment, files, identity and network view while the Deployment keeps
//! running untouched; several run sessions of one Deployment coexist.
//!
//! - [`session`]: the ordered, crash-safe writes (claim, record, proxy, end).
//! - [`restore`]: restoring a session from cluster state (CLI, sweep, reaper).
//! - [`proxy`]: the proxy Pod. [`link`]: the tunnel to its agent.
//! - [`env`]: the container's environment and files for the local process.
//! - [`identity`]: the Deployment's ServiceAccount for the local process.
//! - [`sessions`]: finding sessions and judging them alive, expired or orphaned.
//! - [`child`]: the local command, which dies with kdev; [`reload`]: it
//!   restarted when its files change (`--watch`, `--build`).
//! - [`local`]: the session's folder on this machine.

pub mod child;
pub mod env;
pub mod identity;
pub mod link;
pub mod local;
pub mod network;
pub mod proxy;
pub mod reload;
pub mod restore;
pub mod session;
pub mod sessions;
pub mod webhooks;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::ListParams;
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use self::link::Forward;
use self::local::MountRoot;
use self::session::{CrashAfter, Session, Step};
use self::workload::{Workload, WorkloadKind, WorkloadRef};
use crate::error::usage;
use crate::k8s::{self, Kube};
pub use kdev_contract::session::Mode;

/// `kdev swap`'s and `kdev run`'s configuration, checked before any request.
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    /// The workload (a Deployment, StatefulSet, ReplicaSet or Rollout).
    pub target: WorkloadRef,
    /// A StatefulSet's pod whose identity the command gets (`--ordinal`).
    pub ordinal: Option<u32>,
    /// The container to replace (default: the only one, or the default-container).
    pub container: Option<String>,
    /// `--port REMOTE[:LOCAL]` values, resolved against the container.
    pub ports: Vec<String>,
    /// `--forward` values.
    pub forwards: Vec<String>,
    pub env_file: Option<PathBuf>,
    pub mount: Option<PathBuf>,
    pub ttl: Duration,
    pub timeout: Duration,
    pub agent_image: Option<String>,
    /// Whether the command acts as the Deployment's ServiceAccount.
    pub identity: identity::Choice,
    /// `--watch`, `--watch-ignore`, `--build`.
    pub reload: reload::Config,
    /// `--network`, `--cluster-cidr`.
    pub network: NetworkMode,
    pub command: Vec<String>,
}

/// The command's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// This machine's, as any process's (`--network host`).
    Host,
    /// A pod's, in namespaces of its own ([`crate::netview`]), with these
    /// ranges routed to the cluster beside those kdev finds.
    View {
        cluster_cidrs: Vec<crate::netview::Cidr>,
    },
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
    /// A signal arrived before the command started.
    Interrupted(Signal),
}

/// SIGINT, SIGTERM and SIGHUP, watched from before the claim to the end, so
/// that a signal at any point after step 1 restores at once.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("failed to watch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("failed to watch SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("failed to watch SIGHUP")?,
        })
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
            _ = self.hangup.recv() => Signal::SIGHUP,
        }
    }
}

pub async fn run(flags: &k8s::Flags, args: Config) -> anyhow::Result<ExitCode> {
    let name = args.target.clone();
    let crash = CrashAfter::from_env()?;
    let mut signals = Signals::install()?;
    let kube = k8s::connect(flags).await?;
    let forwards: Vec<Forward> = args
        .forwards
        .iter()
        .map(|f| Forward::parse(f, &kube.namespace))
        .collect::<Result<_, _>>()?;
    let workload = Workload::read(&kube, &name).await?;
    if let Some(controller) = workload.controller()
        && args.mode == Mode::Swap
    {
        return Err(crate::error::usage(format!(
            "{name} is controlled by {controller}, which would scale it back: swap {controller} instead"
        )));
    }
    if let Some(ordinal) = args.ordinal
        && ordinal >= workload.replicas.max(1) as u32
    {
        return Err(crate::error::usage(format!(
            "{name} has {} replicas, so no ordinal {ordinal} (--ordinal counts from 0)",
            workload.replicas
        )));
    }
    let container = session::choose_container(&workload, args.container.as_deref())?;
    let routes = match args.mode {
        Mode::Swap => resolve_ports(&container, &args.ports)?,
        Mode::Run => BTreeMap::new(),
    };

    // The watch and the first build come before anything in the cluster
    // changes: a bad path or a broken build changes nothing.
    let mut watch = if args.reload.paths.is_empty() {
        None
    } else {
        Some(reload::Reload::start(&args.reload)?)
    };
    if let Some(build) = &args.reload.build
        && let Err(status) = reload::run_build(build).await?
    {
        anyhow::bail!(
            "the build failed ({status}); nothing in the cluster was changed. Fix it and run kdev swap again"
        );
    }

    let mode = args.mode;
    if mode == Mode::Swap {
        sessions::settle_target(&kube, &name).await?;
    }
    k8s::activity::record(
        kube.clone(),
        kube.namespace.clone(),
        format!(
            "kdev {} {name} by {}",
            mode.verb(),
            crate::host::user_at_host()
        ),
    )
    .await;
    let started = Instant::now();
    let session = match Session::claim(&kube, mode, &name, &container.name, args.ttl, crash).await?
    {
        Ok(session) => Arc::new(session),
        Err(held) => anyhow::bail!(
            "{name} is already swapped by {} since {} (session {}); one swap per workload",
            held.holder,
            held.since,
            held.session
        ),
    };
    let (renew_task, mut lost) = spawn_renewal(session.clone());

    let target = Target {
        workload,
        container,
        routes,
        forwards,
        config: args,
        started,
    };
    let mut ends = Ends {
        lost: &mut lost,
        signals: &mut signals,
        watch: watch.as_mut(),
    };
    let outcome = match swap_and_run(&kube, session.clone(), target, &mut ends).await {
        Ok(end) => end,
        Err(err) => {
            // Undo what was done; if even that fails, the Lease expires and
            // the reaper (or the next sweep) finishes the job.
            renew_task.abort();
            if let Err(undo) = session.end().await {
                eprintln!(
                    "kdev: could not undo the {} ({undo:#}); it is undone when the session's Lease expires",
                    mode.verb()
                );
            }
            return Err(err);
        }
    };
    renew_task.abort();
    session.crash().reached(Step::CommandEnded);
    let restored = session.end().await.with_context(|| {
        format!(
            "failed to end the {} session of {name}; it ends when the session's Lease expires (or run `kdev sweep`)",
            mode.verb()
        )
    })?;
    eprintln!("kdev: {}", restored.describe(&name));
    match outcome {
        End::Exited(status) => Ok(exit_code(status)),
        End::Lost(reason) => {
            eprintln!("kdev: the session ended because {reason}");
            Ok(ExitCode::from(1))
        }
        End::Interrupted(signal) => Ok(ExitCode::from(128 + signal as u8)),
    }
}

/// What `run` resolved before it changed anything in the cluster: the
/// swap's target and settings, carried as one value.
struct Target {
    workload: Workload,
    container: Container,
    /// Remote port → local port.
    routes: BTreeMap<u16, u16>,
    forwards: Vec<Forward>,
    config: Config,
    /// When the claim began, for the "swapped in" figure.
    started: Instant,
}

/// What can end or restart a running swap besides its command: the
/// session's loss, a signal, and (with `--watch`) a change of its files.
struct Ends<'a> {
    lost: &'a mut mpsc::Receiver<String>,
    signals: &'a mut Signals,
    watch: Option<&'a mut reload::Reload>,
}

/// Steps 2 to 7, up to the command's exit (or the session's loss). A signal
/// before the command starts ends here with [`End::Interrupted`]; the caller
/// then restores, as at any end.
async fn swap_and_run(
    kube: &Kube,
    session: Arc<Session>,
    target: Target,
    ends: &mut Ends<'_>,
) -> anyhow::Result<End> {
    let Target {
        workload,
        container,
        routes,
        forwards,
        config: args,
        started,
    } = target;
    let Ends {
        lost,
        signals,
        watch,
    } = ends;
    let prepared = tokio::select! {
        prepared = prepare(kube, &session, &workload, &container, &routes, forwards, &args) => prepared?,
        signal = signals.recv() => {
            eprintln!("kdev: {signal} during start-up: undoing the swap");
            return Ok(End::Interrupted(signal));
        }
        reason = lost.recv() => {
            let reason = reason.unwrap_or_else(|| "its renewal stopped".into());
            return Ok(End::Lost(reason));
        }
    };
    let Prepared {
        environment,
        root,
        original_replicas,
        forward_lines,
        identity,
        network,
        _link,
        _forwards,
    } = prepared;

    let name = &session.workload;
    match session.mode {
        Mode::Swap => eprintln!(
            "kdev: swapped {name} (container {}, {original_replicas} replicas → 0) in {:.1}s; session {}",
            container.name,
            started.elapsed().as_secs_f64(),
            session.id
        ),
        Mode::Run => eprintln!(
            "kdev: running as {name} (container {}; its {original_replicas} replicas keep serving) in {:.1}s; session {}",
            container.name,
            started.elapsed().as_secs_f64(),
            session.id
        ),
    }
    for (remote, local) in &routes {
        eprintln!("kdev:   port {remote} → 127.0.0.1:{local}");
    }
    for line in &forward_lines {
        eprintln!("kdev:   forward {line}");
    }
    eprintln!("kdev:   files under {} ($KDEV_ROOT)", root.path.display());
    if let Some(identity) = &identity {
        eprintln!(
            "kdev:   as serviceaccount {}/{} ($KUBECONFIG, and $KDEV_ROOT/{}/token for in-cluster clients)",
            kube.namespace,
            identity.service_account,
            identity::SERVICE_ACCOUNT_DIR
        );
    }

    let mut view = network.as_ref().map(|(setting, _)| setting.clone());
    if let Some(setting) = &view {
        eprintln!(
            "kdev:   network: the cluster's names and addresses ({}) through the session; the rest of this machine's as before (--network host to turn off)",
            setting
                .network
                .routes
                .cluster
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // The command's connections, DNS and ports while it runs in the view.
    let mut serving: Option<AbortOnDrop> = None;
    // Started from this task (the thread of `main`'s block_on), as the
    // command's death signal requires (see [`child`]).
    let mut child =
        Some(start_command(&args.command, &environment, &mut view, &mut serving).await?);
    session.crash().reached(Step::CommandStarted);
    if watch.is_some() {
        eprintln!("kdev: restarting the command when its files change (Ctrl-C ends the session)");
    }

    let end = loop {
        tokio::select! {
            status = wait_for(&mut child) => {
                let status = status.context("failed to wait for the command")?;
                if watch.is_none() {
                    break End::Exited(status);
                }
                eprintln!("kdev: the command exited ({status}); it starts again at the next change");
                child = None;
            }
            ready = next_change(watch) => {
                let ready = ready?;
                let stopped = Instant::now();
                if let Some(running) = child.as_mut() {
                    stop_child(running, Signal::SIGTERM).await?;
                }
                child = Some(start_command(&args.command, &environment, &mut view, &mut serving).await?);
                eprintln!(
                    "kdev: restarted the command ({} changed{}; the old one stopped in {:.2}s)",
                    ready.changed.len(),
                    ready
                        .built_in
                        .map(|b| format!(", built in {:.2}s", b.as_secs_f64()))
                        .unwrap_or_default(),
                    stopped.elapsed().as_secs_f64()
                );
            }
            signal = signals.recv() => {
                break match child.as_mut() {
                    Some(running) => End::Exited(stop_child(running, signal).await?),
                    None => End::Interrupted(signal),
                };
            }
            reason = lost.recv() => {
                let reason = reason.unwrap_or_else(|| "its renewal stopped".into());
                eprintln!("kdev: session lost: {reason}; stopping the command");
                if let Some(running) = child.as_mut() {
                    stop_child(running, Signal::SIGTERM).await?;
                }
                break End::Lost(reason);
            }
        }
    };
    drop(identity);
    drop(root);
    Ok(end)
}

/// Starts the command: in its network view when there is one; when the
/// view cannot be set up on this machine, says why once and runs the
/// command on the machine's network from then on.
async fn start_command(
    command: &[String],
    environment: &BTreeMap<String, String>,
    view: &mut Option<network::Setting>,
    serving: &mut Option<AbortOnDrop>,
) -> anyhow::Result<tokio::process::Child> {
    *serving = None;
    if let Some(setting) = view.as_ref() {
        match crate::netview::Sandbox::start(command, &setting.view, &setting.dir, |helper| {
            helper.envs(environment);
        })
        .await
        {
            Ok((sandbox, child)) => {
                *serving = Some(AbortOnDrop(crate::netview::serve(
                    sandbox,
                    setting.network.clone(),
                )));
                return Ok(child);
            }
            Err(err) => {
                eprintln!("kdev: the command uses this machine's network: {err:#}");
                *view = None;
            }
        }
    }
    child::command(command)?
        .envs(environment)
        .spawn()
        .with_context(|| format!("failed to start {:?}", command[0]))
}

/// The command's exit, or never while none runs.
async fn wait_for(
    child: &mut Option<tokio::process::Child>,
) -> std::io::Result<std::process::ExitStatus> {
    match child.as_mut() {
        Some(running) => running.wait().await,
        None => std::future::pending().await,
    }
}

/// The next change that calls for a restart, or never without `--watch`.
async fn next_change(watch: &mut Option<&mut reload::Reload>) -> anyhow::Result<reload::Ready> {
    match watch.as_mut() {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// What start-up made: the command's environment and files, and the tasks
/// that keep the tunnel and the forwards up while they are held.
struct Prepared {
    environment: BTreeMap<String, String>,
    root: MountRoot,
    original_replicas: i32,
    forward_lines: Vec<String>,
    /// The ServiceAccount the command acts as, while the session lasts.
    identity: Option<identity::Established>,
    /// With `--network view`: the view and the folder for its files.
    network: Option<(network::Setting, MountRoot)>,
    _link: AbortOnDrop,
    _forwards: Vec<AbortOnDrop>,
}

/// Waits until none of a StatefulSet's own pods is ready. A set scales
/// down one pod at a time (`OrderedReady`, the default), highest ordinal
/// first, so its pod 0 runs and serves on, under the very name the proxy
/// took (`kafka-0.kafka`), until every other pod has gone; until then a
/// client could reach it instead of this machine. (A Deployment's,
/// ReplicaSet's or Rollout's pods all stop at once, and a terminating pod
/// is no Service's endpoint.)
async fn wait_set_stopped(
    kube: &Kube,
    workload: &Workload,
    timeout: Duration,
) -> anyhow::Result<()> {
    let step =
        crate::progress::Step::start(format!("waiting for {}'s pods to stop", workload.reference));
    let api = workload::api(kube, &kube.namespace, workload.reference.kind);
    let what = format!("{} in {}", workload.reference, kube.namespace);
    crate::k8s::wait::until(
        api,
        &workload.reference.name,
        timeout,
        &format!("the pods of {what} did not stop"),
        |set| {
            let Some(set) = set else {
                return crate::k8s::wait::Check::Fail(anyhow::anyhow!("{what} was deleted"));
            };
            match set.data["status"]["readyReplicas"].as_i64().unwrap_or(0) {
                0 => crate::k8s::wait::Check::Done(()),
                ready => crate::k8s::wait::Check::Wait(format!("{ready} ready")),
            }
        },
    )
    .await?;
    step.done();
    Ok(())
}

/// Steps 2 to 5 and the command's environment.
async fn prepare(
    kube: &Kube,
    session: &Session,
    workload: &Workload,
    container: &Container,
    routes: &BTreeMap<u16, u16>,
    forwards: Vec<Forward>,
    args: &Config,
) -> anyhow::Result<Prepared> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let original_pod = running_pod_of(&pods, workload, args.ordinal).await;
    let (patched, original_replicas) = session.record().await?;
    let agent_image = args
        .agent_image
        .clone()
        .unwrap_or_else(proxy::default_agent_image);
    session
        .create_proxy(
            &patched,
            container,
            original_replicas,
            &agent_image,
            args.ordinal,
            carried_labels(workload, original_pod.as_ref()),
        )
        .await?;
    let step =
        crate::progress::Step::start(format!("waiting for proxy pod {}", session.proxy_name));
    let proxy = session.wait_proxy_running(args.timeout).await?;
    // The tunnel's own client: TCP_NODELAY towards the API server.
    let tunnel_pods: Api<Pod> = Api::namespaced(kube.streaming_client()?, &kube.namespace);
    let (mut current, last_error, link_task) = link::maintain(
        tunnel_pods,
        session.proxy_name.clone(),
        session.token,
        Arc::new(routes.clone()),
    );
    let link_guard = AbortOnDrop(link_task);
    link::wait_up(&mut current, &last_error, args.timeout).await?;
    step.done();
    session.crash().reached(Step::TunnelUp);
    if args.mode == Mode::Swap && workload.reference.kind == WorkloadKind::StatefulSet {
        wait_set_stopped(kube, workload, args.timeout).await?;
    }

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
    let network = match &args.network {
        NetworkMode::Host => None,
        NetworkMode::View { cluster_cidrs } => {
            let ranges = network::cluster_ranges(kube, &proxy, cluster_cidrs).await;
            let dir = MountRoot::create(None, &format!("{}-network", session.id))?;
            Some((
                network::Setting::new(kube, current.clone(), ranges, dir.path.clone()),
                dir,
            ))
        }
    };
    let template = patched.pod_spec();
    let field_pod = original_pod.as_ref().unwrap_or(&proxy);
    let fields = env::FieldSource {
        pod: field_pod,
        node_allocatable: node_allocatable(kube, field_pod).await,
    };
    let mut environment = env::resolve(kube, &template, container, fields, &root.path).await?;
    environment.vars.extend(forward_env);
    environment
        .vars
        .insert("KDEV_ROOT".into(), root.path.display().to_string());
    environment
        .vars
        .insert("KDEV_SESSION".into(), session.id.clone());
    // Last, so that it wins over anything the template says about the API.
    let identity = match identity::service_account(&template, args.identity) {
        Err(why) => {
            if args.identity == identity::Choice::Auto {
                environment.notices.push(format!(
                    "the command uses your own kubeconfig, not a ServiceAccount: {why}"
                ));
            }
            None
        }
        Ok(account) => {
            match identity::establish(kube, &account, &session.proxy_name, &root.path).await {
                Ok(established) => {
                    environment.vars.extend(established.vars.clone());
                    Some(established)
                }
                Err(err) if args.identity == identity::Choice::Auto => {
                    environment.notices.push(format!(
                        "the command uses your own kubeconfig, not serviceaccount {account}: {err:#} (--no-service-account says so up front)"
                    ));
                    None
                }
                Err(err) => return Err(err),
            }
        }
    };
    // Webhooks that call the Deployment: the session's certificate where the
    // container reads its own, their caBundle pointed at the session's CA.
    let labels = patched.template_labels();
    let redirected = match session.mode {
        Mode::Swap => {
            session
                .redirected_webhooks
                .store(true, std::sync::atomic::Ordering::SeqCst);
            webhooks::redirect(
                kube,
                &session.id,
                &session.workload,
                &labels,
                &template,
                container,
                &root.path,
            )
            .await?
        }
        // The webhooks keep calling the Deployment's pods.
        Mode::Run => webhooks::Redirected::default(),
    };
    environment
        .notices
        .extend(redirected.notices.iter().cloned());
    for notice in &environment.notices {
        eprintln!("kdev: note: {notice}");
    }
    if !redirected.objects.is_empty()
        && let Some(dir) = &redirected.cert_dir
    {
        eprintln!(
            "kdev:   webhooks of {} call this session (its certificate: {})",
            redirected.objects.join(", "),
            dir.display()
        );
    }
    if let Some(path) = &args.env_file {
        write_env_file(path, &environment.vars)?;
    }
    Ok(Prepared {
        environment: environment.vars,
        root,
        original_replicas,
        forward_lines,
        identity,
        network,
        _link: link_guard,
        _forwards: forward_tasks,
    })
}

/// Passes the signal on, waits up to 10 s, then kills the command. A terminal's
/// Ctrl-C reaches the command by itself; the command gets 2 s to act on it first.
async fn stop_child(
    child: &mut tokio::process::Child,
    signal: Signal,
) -> anyhow::Result<std::process::ExitStatus> {
    eprintln!("kdev: {signal}: ending the session");
    if signal == Signal::SIGINT
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

/// The allocatable resources of `pod`'s node, if kdev may read the Node
/// (many developers may not; the env notice then says so).
async fn node_allocatable(
    kube: &Kube,
    pod: &Pod,
) -> Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>> {
    let node = pod.spec.as_ref()?.node_name.as_ref()?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(kube.client.clone());
    nodes.get(node).await.ok()?.status?.allocatable
}

/// What the proxy carries of an original pod's labels beside the template's:
/// a Rollout's pod hash, which its active Service selects.
fn carried_labels(workload: &Workload, pod: Option<&Pod>) -> BTreeMap<String, String> {
    if workload.reference.kind != WorkloadKind::Rollout {
        return BTreeMap::new();
    }
    pod.and_then(|p| p.metadata.labels.as_ref())
        .and_then(|l| l.get(proxy::ROLLOUT_HASH_LABEL))
        .map(|hash| [(proxy::ROLLOUT_HASH_LABEL.to_owned(), hash.clone())].into())
        .unwrap_or_default()
}

/// A Running pod of the workload, for the downward API's fields: a
/// StatefulSet's pod of the chosen ordinal (0 by default).
async fn running_pod_of(pods: &Api<Pod>, workload: &Workload, ordinal: Option<u32>) -> Option<Pod> {
    if workload.reference.kind == WorkloadKind::StatefulSet {
        let name = format!("{}-{}", workload.reference.name, ordinal.unwrap_or(0));
        let pod = pods.get_opt(&name).await.ok()??;
        let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
        return running.then_some(pod);
    }
    let selector = k8s::objects::selector_query(&workload.selector)?;
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
    let mut text = String::new();
    for (key, value) in vars {
        text.push_str(&format!("{key}={}\n", quote_env(value)));
    }
    crate::host::write_file(path, text.as_bytes(), 0o600)
        .with_context(|| format!("failed to write --env-file {}", path.display()))
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

    proptest::proptest! {
        #[test]
        fn port_flags_never_panic(specs in proptest::collection::vec(proptest::prelude::any::<String>(), 0..4)) {
            let container: Container = serde_json::from_value(json!({
                "name": "app",
                "ports": [{ "name": "http", "containerPort": 8080 }]
            }))
            .expect("valid");
            let _ = resolve_ports(&container, &specs);
        }
    }
}
