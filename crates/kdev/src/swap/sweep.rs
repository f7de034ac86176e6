//! `kdev sweep` (the reaper's work, once, from the CLI) and `kdev sessions`.
//!
//! A session is found from either of its records: its Lease, or the marks on
//! its Deployment. It is
//! - **orphaned** when the Deployment carries marks and no Lease exists (the
//!   Lease is created before the marks and deleted after them, so marks
//!   without a Lease mean the session's end was interrupted);
//! - **expired** when its Lease went unchanged for a whole duration, watched
//!   on this machine's clock ([`kdev_contract::lease`]);
//! - **alive** otherwise.
//!
//! Deployments are read before Leases: a session being started concurrently
//! has its Lease before its marks, so it can never look orphaned.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kdev_contract::lease::Observation;
use kdev_contract::session::{
    self, DeploymentMarks, ROLE_LABEL, ROLE_SESSION, SESSION_LABEL, SWAPPED_LABEL,
    TARGET_ANNOTATION,
};
use kube::Api;
use kube::api::ListParams;

use super::restore::{self, Target};
use crate::cli::GlobalArgs;
use crate::controller::leader::record_of;
use crate::kubeclient::{self, Kube};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kdev sweep -A --dry-run")]
pub struct SweepArgs {
    /// Sweep every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Say what would be restored; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also restore Deployments left at 0 by dead telepresence 1 proxies, and delete the proxies.
    #[arg(long)]
    pub telepresence: bool,
    /// With --telepresence: leave proxies younger than this alone.
    #[arg(long, default_value = "2m", value_parser = crate::cli::parse_duration)]
    pub min_age: Duration,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kdev sessions -A")]
pub struct SessionsArgs {
    /// List sessions in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// One session as the cluster records it.
#[derive(Clone, Debug)]
pub struct Found {
    pub namespace: String,
    pub deployment: String,
    pub session: String,
    pub lease: Option<Lease>,
    pub marked: bool,
}

impl Found {
    fn target(&self) -> Target {
        Target {
            namespace: self.namespace.clone(),
            deployment: self.deployment.clone(),
            session: self.session.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Alive,
    Expired,
    Orphaned,
}

/// Every session in `namespace` (all namespaces when `None`).
pub async fn find(kube: &Kube, namespace: Option<&str>) -> anyhow::Result<Vec<Found>> {
    let (deployments, leases): (Api<Deployment>, Api<Lease>) = match namespace {
        Some(ns) => (
            Api::namespaced(kube.client.clone(), ns),
            Api::namespaced(kube.client.clone(), ns),
        ),
        None => (Api::all(kube.client.clone()), Api::all(kube.client.clone())),
    };
    let marked = deployments
        .list(&ListParams::default().labels(SWAPPED_LABEL))
        .await
        .map_err(|err| kube.explain(err, "list swapped deployments"))?;
    let leases = leases
        .list(&ListParams::default().labels(&format!("{ROLE_LABEL}={ROLE_SESSION}")))
        .await
        .map_err(|err| kube.explain(err, "list swap session leases"))?;

    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    for deployment in marked.items {
        let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
        let Ok(Some(marks)) = DeploymentMarks::read(&annotations) else {
            continue;
        };
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        let name = deployment.metadata.name.clone().unwrap_or_default();
        found.insert(
            (namespace.clone(), name.clone()),
            Found {
                namespace,
                deployment: name,
                session: marks.session,
                lease: None,
                marked: true,
            },
        );
    }
    for lease in leases.items {
        let namespace = lease.metadata.namespace.clone().unwrap_or_default();
        let Some(deployment) = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TARGET_ANNOTATION))
            .and_then(|t| t.strip_prefix("deployment/"))
            .map(str::to_owned)
        else {
            continue;
        };
        let session = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SESSION_LABEL))
            .cloned()
            .unwrap_or_default();
        let entry = found
            .entry((namespace.clone(), deployment.clone()))
            .or_insert_with(|| Found {
                namespace,
                deployment,
                session: session.clone(),
                lease: None,
                marked: false,
            });
        entry.lease = Some(lease);
        entry.session = session;
    }
    Ok(found.into_values().collect())
}

/// Judges each session, watching live Leases for up to their duration.
pub async fn judge(kube: &Kube, found: Vec<Found>) -> anyhow::Result<Vec<(Found, State)>> {
    let start = Instant::now();
    let mut watching: Vec<(Found, Observation)> = Vec::new();
    let mut judged = Vec::new();
    for session in found {
        match &session.lease {
            None => judged.push((session, State::Orphaned)),
            Some(lease) => {
                let seen = Observation::new(record_of(lease), start);
                watching.push((session, seen));
            }
        }
    }
    if watching.is_empty() {
        return Ok(judged);
    }
    let longest = watching
        .iter()
        .map(|(_, o)| o.record().duration)
        .max()
        .unwrap_or_default();
    let step = crate::progress::Step::start(format!(
        "watching {} session lease(s) for up to {}s to tell live ones from expired ones",
        watching.len(),
        longest.as_secs() + 1
    ));
    loop {
        let now = Instant::now();
        let mut still = Vec::new();
        for (session, mut seen) in watching {
            let api: Api<Lease> = Api::namespaced(kube.client.clone(), &session.namespace);
            let name = session::lease_name(&session.deployment);
            match api.get_opt(&name).await {
                Ok(Some(lease)) => {
                    let before = seen.record().clone();
                    seen.observe(record_of(&lease), now);
                    if *seen.record() != before {
                        judged.push((session, State::Alive));
                    } else if seen.expired(now) {
                        judged.push((session, State::Expired));
                    } else {
                        still.push((session, seen));
                    }
                }
                // Ended meanwhile: restored by its holder or another restorer.
                Ok(None) => {}
                Err(err) => {
                    return Err(
                        kube.explain(err, format!("read lease {}/{name}", session.namespace))
                    );
                }
            }
        }
        watching = still;
        if watching.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    step.done();
    Ok(judged)
}

/// What `kdev swap` does before claiming: restore an expired or orphaned
/// session of its target; refuse if a live one holds it.
pub async fn settle_target(kube: &Kube, deployment: &str) -> anyhow::Result<()> {
    let found: Vec<Found> = find(kube, Some(&kube.namespace))
        .await?
        .into_iter()
        .filter(|f| f.deployment == deployment)
        .collect();
    for (session, state) in judge(kube, found).await? {
        match state {
            State::Alive => {
                let spec = session
                    .lease
                    .as_ref()
                    .and_then(|l| l.spec.clone())
                    .unwrap_or_default();
                anyhow::bail!(
                    "deployment/{deployment} is already swapped by {} since {} (session {}); one swap per Deployment",
                    spec.holder_identity.unwrap_or_else(|| "someone".into()),
                    spec.acquire_time
                        .map(|t| t.0.to_string())
                        .unwrap_or_else(|| "an unknown time".into()),
                    session.session
                );
            }
            State::Expired | State::Orphaned => {
                let why = reason(state);
                let outcome = restore::restore(kube, &session.target(), why, None).await?;
                eprintln!(
                    "kdev: restored an earlier session ({why}): {}",
                    outcome.describe(deployment)
                );
            }
        }
    }
    Ok(())
}

fn reason(state: State) -> &'static str {
    match state {
        State::Alive => "alive",
        State::Expired => "its Lease expired",
        State::Orphaned => "it had no Lease left",
    }
}

pub async fn sweep(global: &GlobalArgs, args: SweepArgs) -> anyhow::Result<ExitCode> {
    let kube = kubeclient::connect(global).await?;
    let namespace = (!args.all_namespaces).then_some(kube.namespace.as_str());
    let mut failed = false;
    if args.telepresence {
        let options = crate::telepresence::Options {
            min_age: args.min_age,
            dry_run: args.dry_run,
            tries: 3,
        };
        let reports = crate::telepresence::sweep(&kube, namespace, options).await?;
        if reports.is_empty() {
            eprintln!("no telepresence proxies found");
        }
        for report in reports {
            println!("{}/pod/{}: {}", report.namespace, report.pod, report.line);
        }
    }
    let found = find(&kube, namespace).await?;
    if found.is_empty() {
        eprintln!("no swap sessions found");
        return Ok(ExitCode::SUCCESS);
    }
    for (session, state) in judge(&kube, found).await? {
        let name = format!("{}/deployment/{}", session.namespace, session.deployment);
        match state {
            State::Alive => println!("{name}: alive (session {}), left alone", session.session),
            _ if args.dry_run => println!("{name}: would restore ({})", reason(state)),
            _ => match restore::restore(&kube, &session.target(), reason(state), None).await {
                Ok(outcome) => println!(
                    "{name}: {} ({})",
                    outcome.describe(&session.deployment),
                    reason(state)
                ),
                Err(err) => {
                    failed = true;
                    eprintln!("error: {name}: {err:#}");
                }
            },
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn sessions(global: &GlobalArgs, args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let kube = kubeclient::connect(global).await?;
    let namespace = (!args.all_namespaces).then_some(kube.namespace.as_str());
    let found = find(&kube, namespace).await?;
    if found.is_empty() {
        eprintln!("no swap sessions found");
        return Ok(ExitCode::SUCCESS);
    }
    let now = Timestamp::now();
    let mut rows = vec![
        [
            "NAMESPACE",
            "TARGET",
            "HOLDER",
            "SESSION",
            "AGE",
            "RENEWED",
            "STATE",
        ]
        .map(String::from),
    ];
    for session in found {
        let spec = session
            .lease
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let ago = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
            t.map(|t| human(now.duration_since(t.0).as_secs()))
        };
        let renewed_secs = spec
            .renew_time
            .as_ref()
            .map(|t| now.duration_since(t.0).as_secs());
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        // A listing cannot wait a whole duration: this state compares the
        // holder's clock with this one, and is a hint. Sweep and the reaper
        // never judge this way.
        let state = match (&session.lease, renewed_secs) {
            (None, _) => "orphaned",
            (Some(_), Some(secs)) if secs <= duration => "alive",
            _ => "expired",
        };
        rows.push([
            session.namespace.clone(),
            format!("deployment/{}", session.deployment),
            spec.holder_identity.clone().unwrap_or_else(|| "-".into()),
            session.session.chars().take(8).collect(),
            ago(spec.acquire_time.as_ref()).unwrap_or_else(|| "-".into()),
            ago(spec.renew_time.as_ref())
                .map(|a| format!("{a} ago"))
                .unwrap_or_else(|| "-".into()),
            state.into(),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn human(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
    }
}

fn print_table(rows: &[[String; 7]]) {
    let mut widths = [0usize; 7];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}
