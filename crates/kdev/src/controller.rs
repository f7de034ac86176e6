//! `kdev controller`: kdev's in-cluster part, deployed from `deploy/`.
//!
//! Replicas elect a leader with a Lease ([`leader`]); only the leader acts.
//! Every replica serves `/healthz` (the process is alive), `/readyz` (it has
//! reached the API server) and `/metrics` (Prometheus text) from [`serve`].
//! The work the leader does (restoring expired swap sessions, later sleep
//! schedules) runs as tasks that start when it leads and stop when it no
//! longer does.

pub mod leader;
mod reaper;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use crate::cli::{ControllerArgs, GlobalArgs};
use crate::kubeclient;
use kdev_contract::keys;

pub async fn run(global: &GlobalArgs, args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let kube = kubeclient::connect(global).await?;
    let namespace = args
        .lease_namespace
        .unwrap_or_else(|| kube.namespace.clone());
    let identity = args.identity.unwrap_or_else(default_identity);
    kubeclient::validate_dns_label("lease namespace", &namespace)?;

    let metrics = Arc::new(serve::Metrics::default());
    let (ready_tx, ready_rx) = watch::channel(false);
    let (leading_tx, leading_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {} (--listen)", args.listen))?;
    tracing::info!(listen = %args.listen, %identity, %namespace, "controller starting");
    let server = tokio::spawn(serve::serve(
        listener,
        serve::State {
            ready: ready_rx,
            leading: leading_rx.clone(),
            metrics: metrics.clone(),
        },
    ));

    let version = kube
        .client
        .apiserver_version()
        .await
        .map_err(|err| kube.explain(err, "reach the API server"))?;
    tracing::info!(server = %version.git_version, "connected");
    let _ = ready_tx.send(true);

    let reporter = Reporter {
        controller: "kdev-controller".into(),
        instance: Some(identity.clone()),
    };
    let recorder = Recorder::new(kube.client.clone(), reporter);
    if let Some(ns) = &args.watch_namespace {
        kubeclient::validate_dns_label("--watch-namespace", ns)?;
    }
    let reaper = tokio::spawn(reaper::run(
        kube.clone(),
        args.watch_namespace.clone(),
        leading_rx.clone(),
        recorder,
        metrics.clone(),
    ));

    let janitor = args.telepresence.then(|| {
        let options = crate::telepresence::Options {
            min_age: args.telepresence_min_age,
            dry_run: false,
            tries: 3,
        };
        tokio::spawn(telepresence_janitor(
            kube.clone(),
            args.watch_namespace.clone(),
            options,
            leading_rx.clone(),
        ))
    });

    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &namespace);
    let elector = leader::Elector::new(
        leases,
        keys::CONTROLLER_LEADER_LEASE.to_owned(),
        identity,
        leader::Timing::default(),
    );
    let outcome = elector.run(leading_tx, metrics, shutdown_signal()).await;
    server.abort();
    reaper.abort();
    if let Some(janitor) = janitor {
        janitor.abort();
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

/// While leading, sweeps telepresence 1 proxies every 30 s.
async fn telepresence_janitor(
    kube: kubeclient::Kube,
    namespace: Option<String>,
    options: crate::telepresence::Options,
    mut leading: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        match crate::telepresence::sweep(&kube, namespace.as_deref(), options).await {
            Ok(reports) => {
                for report in reports.iter().filter(|r| r.restored) {
                    tracing::info!(namespace = %report.namespace, pod = %report.pod, "telepresence proxy: {}", report.line);
                }
            }
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "telepresence sweep failed"),
        }
    }
}

/// The pod's name is the natural identity; outside a pod, the host name plus
/// the process id keeps two local runs apart.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}-{}", std::process::id())
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C ends the controller gracefully.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    // Give in-flight HTTP probes a moment; the Lease is released by the caller.
    tokio::time::sleep(Duration::from_millis(50)).await;
}
