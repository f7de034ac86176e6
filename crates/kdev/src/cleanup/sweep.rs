//! `kdev sweep` (the reaper's work, once, from the CLI) and `kdev sessions`.

use std::process::ExitCode;

use k8s_openapi::jiff::Timestamp;

use serde::Serialize;

use super::telepresence::{self, Verdict};
use super::{Output, SweepConfig};
use crate::k8s;
use crate::swap::sessions::{State, find, judge, reason};
use crate::swap::{Mode, restore};

/// `kdev sweep`'s exit code when something was left for a person: a
/// telepresence proxy whose original is ambiguous, unmatched, or whose count
/// cannot be read.
pub const EXIT_LEFT_FOR_HUMAN: u8 = 3;

/// One session's line in `-o json`.
#[derive(Serialize)]
struct SessionReport<'a> {
    kind: &'static str,
    namespace: &'a str,
    /// `kind/name`, as `deployment/web`.
    workload: String,
    session: &'a str,
    verdict: &'static str,
    line: String,
}

pub async fn sweep(flags: &k8s::Flags, config: SweepConfig) -> anyhow::Result<ExitCode> {
    let kube = k8s::connect(flags).await?;
    let namespace = (!config.all_namespaces).then_some(kube.namespace.as_str());
    let json = config.output == Output::Json;
    // One JSON object per line, so a script can read actions as they come.
    let emit = |human: String, value: serde_json::Value| {
        if json {
            println!("{value}");
        } else {
            println!("{human}");
        }
    };
    for folder in crate::swap::local::sweep_orphans() {
        eprintln!(
            "removed {}: the files of a swap session whose kdev is gone",
            folder.display()
        );
    }
    let mut failed = false;
    let mut left_for_human = false;
    if let Some(min_age) = config.telepresence_min_age {
        let options = telepresence::Options {
            min_age,
            dry_run: config.dry_run,
            tries: 3,
        };
        let reports = telepresence::sweep(&kube, namespace, options).await?;
        if reports.is_empty() {
            eprintln!("no telepresence proxies found");
        }
        for report in reports {
            left_for_human |= report.verdict == Verdict::LeftForHuman;
            let mut value = serde_json::to_value(&report).unwrap_or_default();
            value["kind"] = "telepresence-proxy".into();
            emit(
                format!("{}/pod/{}: {}", report.namespace, report.pod, report.line),
                value,
            );
        }
    }
    let found = find(&kube, namespace).await?;
    if found.is_empty() {
        eprintln!("no swap or run sessions found");
    }
    for (session, state) in judge(&kube, found).await? {
        let name = match session.mode {
            Mode::Swap => format!("{}/{}", session.namespace, session.workload),
            Mode::Run => format!("{}/{} (kdev run)", session.namespace, session.workload),
        };
        let (verdict, line) = match state {
            State::Alive => (
                "alive",
                format!("alive (session {}), left alone", session.session),
            ),
            _ if config.dry_run => (
                "would-restore",
                format!(
                    "would {} ({})",
                    match session.mode {
                        Mode::Swap => "restore",
                        Mode::Run => "end it",
                    },
                    reason(state)
                ),
            ),
            _ => match restore::restore(&kube, &session.target(), reason(state), None).await {
                Ok(outcome) => (
                    "restored",
                    format!(
                        "{} ({})",
                        outcome.describe(&session.workload),
                        reason(state)
                    ),
                ),
                Err(err) => {
                    failed = true;
                    ("failed", format!("{err:#}"))
                }
            },
        };
        let report = SessionReport {
            kind: session.mode.lease_role(),
            namespace: &session.namespace,
            workload: session.workload.to_string(),
            session: &session.session,
            verdict,
            line: line.clone(),
        };
        if verdict == "failed" && !json {
            eprintln!("error: {name}: {line}");
        } else {
            emit(
                format!("{name}: {line}"),
                serde_json::to_value(&report).unwrap_or_default(),
            );
        }
    }
    // Webhooks still pointed at the CA of a session that is gone: its
    // restorer may not have been allowed to list them.
    match crate::swap::webhooks::restore_orphans(&kube, namespace, config.dry_run).await {
        Ok(done) => {
            for (what, deployment) in done {
                let verdict = if config.dry_run {
                    "would-restore"
                } else {
                    "restored"
                };
                emit(
                    format!(
                        "{what}: {} its CA (a swap of {deployment} that is over had pointed it at its own)",
                        if config.dry_run {
                            "would get back"
                        } else {
                            "got back"
                        }
                    ),
                    serde_json::json!({ "kind": "swap-webhook", "object": what, "deployment": deployment, "verdict": verdict }),
                );
            }
        }
        Err(err) if crate::k8s::refused_with(&err) == Some(403) => {}
        Err(err) => {
            failed = true;
            eprintln!("error: {err:#}");
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else if left_for_human {
        ExitCode::from(EXIT_LEFT_FOR_HUMAN)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn sessions(flags: &k8s::Flags, all_namespaces: bool) -> anyhow::Result<ExitCode> {
    let kube = k8s::connect(flags).await?;
    let namespace = (!all_namespaces).then_some(kube.namespace.as_str());
    let found = find(&kube, namespace).await?;
    if found.is_empty() {
        eprintln!("no swap or run sessions found");
        return Ok(ExitCode::SUCCESS);
    }
    let now = Timestamp::now();
    let mut rows = vec![
        [
            "NAMESPACE",
            "KIND",
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
            session.mode.verb().into(),
            session.workload.to_string(),
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

fn print_table(rows: &[[String; 8]]) {
    let mut widths = [0usize; 8];
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
