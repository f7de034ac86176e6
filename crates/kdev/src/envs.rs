//! Dev environments that sleep and wake (`kdev sleep`, `kdev wake`,
//! `kdev envs`).
//!
//! An environment is a namespace. Its workloads (Deployments, StatefulSets,
//! CronJobs) sleep by a guarded write that sets their size and records what
//! it was ([`kdev_contract::envs::SleepRecord`]) in the same PATCH, and wake
//! by the reverse; a workload without a record is never scaled up. The
//! decisions are pure, in the contract; this module reads the cluster,
//! writes, and reports.

pub mod act;
pub mod hpa;
pub mod idle;
pub mod patched;
pub mod place;
pub mod savings;
pub mod waker;
pub mod workload;

use std::collections::BTreeMap;
use std::process::ExitCode;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt as _};
use serde::Serialize;

pub use self::act::{Change, Config, Direction, Done, Selection};
use self::workload::{Kind, Workload};
use crate::k8s::{self, Kube};
use kdev_contract::envs::{self as contract, Schedule, SleepRecord};

/// Runs `kdev sleep` or `kdev wake`. Exit 1 when any workload failed.
pub async fn run(flags: &k8s::Flags, config: Config) -> anyhow::Result<ExitCode> {
    let kube = k8s::connect(flags).await?;
    let report = act::run(&kube, &config).await?;
    let changes = &report.changes;
    for change in changes {
        if config.json {
            println!("{}", serde_json::to_string(change)?);
        } else {
            println!("{}", change.line());
        }
    }
    for placed in &report.wakers {
        if config.json {
            println!("{}", serde_json::to_string(placed)?);
        } else {
            println!("{}", placed.line());
        }
    }
    if changes.is_empty() && !config.json {
        println!("no workloads (Deployments, StatefulSets, CronJobs) in the selected namespaces");
    }
    let failed = changes
        .iter()
        .any(|c| matches!(c.done, Done::Failed { .. }));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `kdev envs`: which environments to list and how.
#[derive(Clone, Debug)]
pub struct ListConfig {
    pub selection: Selection,
    pub json: bool,
    /// The environments' Events instead of their state.
    pub history: bool,
    /// What sleeping saved instead of their state.
    pub savings: bool,
}

/// What `kdev envs` does.
#[derive(Clone, Debug)]
pub enum EnvsAction {
    List(ListConfig),
    /// Wake now and hold awake until then, whatever the schedule says.
    KeepAwake {
        config: Config,
        until: jiff::Timestamp,
    },
    /// Sleep now and end any keep-awake.
    SleepNow(Config),
    /// Delete environments idle too long, warned first.
    DeleteIdle {
        selection: Selection,
        rule: idle::Rule,
        json: bool,
    },
}

/// Runs `kdev envs` and its subcommands.
pub async fn envs(flags: &k8s::Flags, action: EnvsAction) -> anyhow::Result<ExitCode> {
    match action {
        EnvsAction::List(config) if config.history => history(flags, config).await,
        EnvsAction::List(config) if config.savings => savings_report(flags, config).await,
        EnvsAction::List(config) => list(flags, config).await,
        EnvsAction::KeepAwake { config, until } => {
            let code = run(flags, config.clone()).await?;
            set_keep_awake(flags, &config, Some(until)).await?;
            Ok(code)
        }
        EnvsAction::DeleteIdle {
            selection,
            rule,
            json,
        } => {
            let kube = k8s::connect(flags).await?;
            let ok = idle::run(&kube, &selection, &rule, json).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        EnvsAction::SleepNow(config) => {
            set_keep_awake(flags, &config, None).await?;
            run(flags, config).await
        }
    }
}

/// `kdev envs --savings`.
async fn savings_report(flags: &k8s::Flags, config: ListConfig) -> anyhow::Result<ExitCode> {
    let kube = k8s::connect(flags).await?;
    let mut selection = config.selection.clone();
    selection.all = selection.namespaces.is_empty() && selection.selector.is_none();
    let now = now();
    let mut rows = Vec::new();
    for namespace in act::namespaces(&kube, &selection).await? {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(kube.client.clone(), &namespace);
        let lease = api.get_opt(contract::ACTIVITY_LEASE).await.map_err(|err| {
            kube.explain(
                err,
                format!("read lease {namespace}/{}", contract::ACTIVITY_LEASE),
            )
        })?;
        let annotations = lease.map(|l| l.annotations().clone()).unwrap_or_default();
        match savings::saved(&namespace, &annotations, now) {
            Ok(saved) => rows.push(saved),
            Err(err) => eprintln!("kdev: namespace {namespace}: {err}; it is left out"),
        }
    }
    let total = |pick: fn(&savings::Saved) -> savings::Hours| {
        rows.iter()
            .map(pick)
            .fold(savings::Hours::default(), savings::Hours::plus)
    };
    let (week, month) = (total(|s| s.last_7_days), total(|s| s.last_30_days));
    if config.json {
        let out = serde_json::json!({
            "environments": rows,
            "total": { "last7Days": week, "last30Days": month },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", savings::table(&rows, week, month));
    Ok(ExitCode::SUCCESS)
}

/// Now, for a command (a test build may fix it: [`crate::faults::ENVS_NOW`]).
pub fn now() -> jiff::Timestamp {
    crate::faults::var(crate::faults::ENVS_NOW)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(jiff::Timestamp::now)
}

/// Writes (or removes) the namespace's keep-awake time, saying so.
async fn set_keep_awake(
    flags: &k8s::Flags,
    config: &Config,
    until: Option<jiff::Timestamp>,
) -> anyhow::Result<()> {
    let kube = k8s::connect(flags).await?;
    for name in &config.selection.namespaces {
        let changed = keep_awake(&kube, name, until, config.dry_run).await?;
        if changed && !config.json {
            let would = if config.dry_run { "would be " } else { "" };
            match until {
                Some(t) => println!(
                    "namespace {name}: {would}kept awake until {t} ({})",
                    contract::KEEP_AWAKE_ANNOTATION
                ),
                None => println!("namespace {name}: {would}no longer kept awake"),
            }
        }
    }
    Ok(())
}

/// Sets (or with `None` removes) namespace `name`'s keep-awake time by a
/// guarded write; whether it changed (or, dry, would).
pub async fn keep_awake(
    kube: &Kube,
    name: &str,
    until: Option<jiff::Timestamp>,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let what = format!("namespace {name}");
    let wanted = until.map(|t| t.to_string());
    let updated = k8s::guarded::update(kube, &api, name, &what, |current| {
        let Some(ns) = current else {
            anyhow::bail!("{what} not found");
        };
        let now = ns
            .annotations()
            .get(contract::KEEP_AWAKE_ANNOTATION)
            .cloned();
        if now == wanted || dry_run {
            return Ok(k8s::guarded::Decision::Keep(now != wanted));
        }
        let patch = serde_json::json!({
            "metadata": { "annotations": { contract::KEEP_AWAKE_ANNOTATION: wanted } }
        });
        Ok(k8s::guarded::Decision::Write(patch, true))
    })
    .await?;
    Ok(updated.value)
}

/// A keep-awake's end: an RFC 3339 time, or a duration from `now` (4h,
/// 90m; a bare number has no unit and is refused, as kubectl refuses it).
pub fn parse_until(text: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    let bad = || {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-12-02T23:00:00Z) nor a duration (4h, 90m)"
        )
    };
    if text.is_empty() || text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let after: jiff::SignedDuration = text.parse().map_err(|_| bad())?;
    if after.is_negative() {
        return Err(bad());
    }
    now.checked_add(after)
        .map_err(|_| format!("{text:?} is too far away"))
}

/// The reasons of the Events environments' changes are recorded with.
pub const HISTORY_REASONS: [&str; 5] = [
    "Slept",
    "Woke",
    "ChangedWhileAsleep",
    "BadSchedule",
    "KeptAwake",
];

/// `kdev envs --history`: the environments' Events, oldest first.
async fn history(flags: &k8s::Flags, config: ListConfig) -> anyhow::Result<ExitCode> {
    use k8s_openapi::api::events::v1::Event;
    let kube = k8s::connect(flags).await?;
    let mut selection = config.selection.clone();
    selection.all = selection.namespaces.is_empty() && selection.selector.is_none();
    let mut rows = Vec::new();
    for name in act::namespaces(&kube, &selection).await? {
        let api: Api<Event> = Api::namespaced(kube.client.clone(), &name);
        let list = api
            .list(&Default::default())
            .await
            .map_err(|err| kube.explain(err, format!("list events in namespace {name}")))?;
        for event in list.items {
            let reason = event.reason.clone().unwrap_or_default();
            if !HISTORY_REASONS.contains(&reason.as_str()) {
                continue;
            }
            let at = event
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0.to_string())
                .or_else(|| event.event_time.as_ref().map(|t| t.0.to_string()))
                .or_else(|| {
                    event
                        .deprecated_last_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string())
                })
                .unwrap_or_default();
            let object = event
                .regarding
                .as_ref()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.kind.clone().unwrap_or_default().to_lowercase(),
                        r.name.clone().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            rows.push(serde_json::json!({
                "at": at,
                "namespace": name,
                "object": object,
                "reason": reason,
                "note": event.note.unwrap_or_default(),
            }));
        }
    }
    rows.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
    if config.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!(
            "no sleeps or wakes recorded (the API server keeps Events for an hour by default)"
        );
    } else {
        let now = jiff::Timestamp::now();
        for row in &rows {
            let at = row["at"].as_str().unwrap_or_default();
            println!(
                "{}  {}  {}  {}  {}",
                local_time(at, now),
                row["namespace"].as_str().unwrap_or_default(),
                row["object"].as_str().unwrap_or_default(),
                row["reason"].as_str().unwrap_or_default(),
                row["note"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An instant as people read it: in this machine's zone, to the second,
/// and how long ago (`2026-12-07 16:36:42 (5m ago)`); text that is not an
/// instant as it is.
pub fn local_time(at: &str, now: jiff::Timestamp) -> String {
    match at.parse::<jiff::Timestamp>() {
        Ok(instant) => format!(
            "{} ({})",
            instant
                .to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S"),
            age(instant, now)
        ),
        Err(_) => at.to_owned(),
    }
}

/// An environment's state, from its workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No workload asleep, every replica Ready.
    Awake,
    /// No workload asleep, some replicas not Ready yet.
    Waking,
    /// Every workload that can sleep is asleep.
    Asleep,
    /// Some asleep, some not (a swap holds one, one was excluded or woken
    /// by hand).
    Partly,
    /// No workloads.
    Empty,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRow {
    pub kind: Kind,
    pub name: String,
    pub size: i32,
    pub ready: i32,
    /// The size before the sleep, when asleep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_session: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Next {
    pub at: String,
    pub to: &'static str,
    pub why: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Env {
    pub namespace: String,
    pub state: State,
    pub workloads: Vec<WorkloadRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Next>,
    /// A schedule that cannot be read, said instead of `next`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The latest sleep among its workloads: when and by whom.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slept: Option<String>,
    /// The last activity its `kdev-activity` Lease records: when, and what
    /// and who (`kdev logs by alice@laptop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
}

/// Which namespaces are environments: those whose labels match a selector
/// (by default they carry [`contract::ENVIRONMENT_LABEL`]), never a
/// protected one. Bulk selections (`-A`, `-l`), the scheduler and the
/// dashboard act within it; a namespace named outright is taken as named,
/// unless it is protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub selector: kdev_contract::selector::Selector,
    pub protected: std::collections::BTreeSet<String>,
}

impl Default for Scope {
    fn default() -> Self {
        Self::new(
            contract::ENVIRONMENT_LABEL
                .parse()
                .expect("the environment label is a valid selector"),
            [],
        )
    }
}

impl Scope {
    /// The selector, and the protected namespaces beyond the cluster's own.
    pub fn new(
        selector: kdev_contract::selector::Selector,
        protected: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut all: std::collections::BTreeSet<String> = contract::PROTECTED_NAMESPACES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        all.extend(protected);
        Self {
            selector,
            protected: all,
        }
    }

    pub fn is_protected(&self, namespace: &str) -> bool {
        self.protected.contains(namespace)
    }

    /// Whether a namespace with these labels is an environment.
    pub fn admits(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        !self.is_protected(namespace) && self.selector.matches(labels)
    }

    /// The label selector to list environments with, narrowed by `more`
    /// (a user's `-l`): both must hold.
    pub fn label_selector(&self, more: Option<&str>) -> String {
        let own = self.selector.to_string();
        match more.filter(|m| !m.trim().is_empty()) {
            Some(more) if own.is_empty() => more.to_owned(),
            Some(more) => format!("{own},{more}"),
            None => own,
        }
    }

    /// Refuses a namespace named outright that is protected.
    pub fn check_named(&self, namespace: &str) -> anyhow::Result<()> {
        if self.is_protected(namespace) {
            return Err(crate::error::usage(format!(
                "namespace {namespace} is protected: kdev never puts it to sleep or wakes it (protected: {})",
                self.protected
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }
}

/// Judges one environment from its namespace's annotations and workloads.
pub fn judge(
    namespace: &str,
    annotations: &BTreeMap<String, String>,
    workloads: &[Workload],
    now: jiff::Timestamp,
) -> Env {
    let ns_excluded = contract::exclusion(annotations, &BTreeMap::new(), now);
    let mut rows = Vec::new();
    let (mut asleep, mut sleepable, mut unready) = (0, 0, false);
    let mut slept: Option<SleepRecord> = None;
    for w in workloads {
        // A record on a workload back at its size is a wake not cleaned up yet.
        let record = SleepRecord::read(&w.annotations)
            .ok()
            .flatten()
            .filter(|r| r.holds(w.size));
        let excluded = ns_excluded
            .clone()
            .or_else(|| contract::exclusion(&w.annotations, &w.labels, now))
            .or_else(|| {
                let left_out = (w.kind == Kind::DaemonSet)
                    .then(|| contract::daemonset_left_out(&w.annotations, annotations));
                left_out.flatten()
            });
        // At 0 without a record, or a Job run to its end, nothing runs: it
        // neither keeps the environment awake nor asleep. A swapped
        // workload is in use (at 0, its traffic goes to someone's laptop):
        // awake.
        let runs = w.size > 0 && !w.finished;
        if excluded.is_none() && (record.is_some() || runs || w.swap_session.is_some()) {
            sleepable += 1;
            asleep += usize::from(record.is_some());
        }
        unready |= w.ready < w.size;
        if let Some(r) = &record
            && slept.as_ref().is_none_or(|s| s.at < r.at)
        {
            slept = Some(r.clone());
        }
        rows.push(WorkloadRow {
            kind: w.kind,
            name: w.name.clone(),
            size: w.size,
            ready: w.ready,
            original: record.map(|r| r.replicas),
            excluded,
            swap_session: w.swap_session.clone(),
        });
    }
    let state = match (sleepable, asleep) {
        (0, _) if workloads.is_empty() => State::Empty,
        (0, _) => State::Awake,
        (_, 0) if unready => State::Waking,
        (_, 0) => State::Awake,
        (s, a) if s == a => State::Asleep,
        _ => State::Partly,
    };
    let (next, problem) = match Schedule::read(annotations) {
        Ok(Some(schedule)) => (
            schedule.next_transition(now).map(|(at, wakes)| {
                let from = if schedule.keep_awake_until == Some(at) {
                    contract::KEEP_AWAKE_ANNOTATION.to_owned()
                } else {
                    schedule.from.join(", ")
                };
                Next {
                    at: at.to_string(),
                    to: if wakes { "awake" } else { "asleep" },
                    why: format!("{from} on namespace {namespace}"),
                }
            }),
            None,
        ),
        Ok(None) => (None, None),
        Err(err) => (None, Some(err.to_string())),
    };
    Env {
        namespace: namespace.to_owned(),
        state,
        workloads: rows,
        next,
        problem,
        slept: slept.map(|r| format!("{} by {}", r.at, r.by)),
        last_activity: None,
    }
}

/// Runs `kdev envs`. Every environment: a handful of requests for the
/// whole cluster (namespaces, the three kinds, the activity Leases); named
/// ones: a few per namespace.
pub async fn list(flags: &k8s::Flags, config: ListConfig) -> anyhow::Result<ExitCode> {
    use k8s_openapi::api::coordination::v1::Lease;
    let kube = k8s::connect(flags).await?;
    let named = !config.selection.namespaces.is_empty();
    let now = jiff::Timestamp::now();
    let mut found: Vec<Found> = Vec::new();
    if named {
        for name in &config.selection.namespaces {
            let annotations = namespace_annotations(&kube, name).await?;
            let workloads = workload::in_namespace(&kube, name).await?;
            let leases: Api<Lease> = Api::namespaced(kube.client.clone(), name);
            // Best effort: an account that may not read Leases sees no activity.
            let lease = leases
                .get_opt(contract::ACTIVITY_LEASE)
                .await
                .ok()
                .flatten();
            found.push(Found {
                name: name.clone(),
                annotations,
                workloads,
                lease,
            });
        }
    } else {
        let namespaces: Api<Namespace> = Api::all(kube.client.clone());
        let params = kube::api::ListParams::default().labels(
            &config
                .selection
                .scope
                .label_selector(config.selection.selector.as_deref()),
        );
        let activity = kube::api::ListParams::default().labels(&format!(
            "{}={}",
            kdev_contract::session::ROLE_LABEL,
            k8s::activity::ROLE_ACTIVITY
        ));
        let leases: Api<Lease> = Api::all(kube.client.clone());
        let (namespaces, mut workloads, leases) = tokio::try_join!(
            async {
                namespaces
                    .list(&params)
                    .await
                    .map_err(|err| kube.explain(err, "list namespaces"))
            },
            workload::listed_everywhere(&kube),
            async {
                Ok(leases
                    .list(&activity)
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default())
            },
        )?;
        let mut leases: BTreeMap<String, Lease> = leases
            .into_iter()
            .filter_map(|l| Some((l.namespace()?, l)))
            .collect();
        for ns in namespaces.items {
            let name = ns.name_any();
            if config.selection.scope.is_protected(&name) {
                continue;
            }
            let Some(listed) = workloads.remove(&name) else {
                continue;
            };
            let lease = leases.remove(&name);
            found.push(Found {
                annotations: ns.annotations().clone(),
                name,
                workloads: listed.views(),
                lease,
            });
        }
    }
    let envs: Vec<Env> = found
        .into_iter()
        .map(|found| Env {
            last_activity: found
                .lease
                .as_ref()
                .and_then(k8s::activity::last)
                .map(|(at, who)| format!("{at} ({who})")),
            ..judge(&found.name, &found.annotations, &found.workloads, now)
        })
        .collect();
    if config.json {
        println!("{}", serde_json::to_string_pretty(&envs)?);
    } else {
        print_table(&envs);
    }
    Ok(ExitCode::SUCCESS)
}

/// One environment as `kdev envs` read it.
struct Found {
    name: String,
    annotations: BTreeMap<String, String>,
    workloads: Vec<Workload>,
    /// Its `kdev-activity` Lease.
    lease: Option<k8s_openapi::api::coordination::v1::Lease>,
}

async fn namespace_annotations(
    kube: &Kube,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let ns = api
        .get(name)
        .await
        .map_err(|err| kube.explain(err, format!("read namespace {name}")))?;
    Ok(ns.annotations().clone())
}

fn print_table(envs: &[Env]) {
    print!("{}", table(envs, jiff::Timestamp::now()));
}

/// `kdev envs`' table, as kubectl prints one: columns as wide as their
/// contents, times relative to `now` (`3h ago`, `in 20m`), so a row fits a
/// 120-column terminal. `-o json` has every field in full (the exact times,
/// which annotation set the next change).
fn table(envs: &[Env], now: jiff::Timestamp) -> String {
    if envs.is_empty() {
        return "no environments (namespaces with Deployments, StatefulSets or CronJobs)\n"
            .to_owned();
    }
    // "<RFC 3339> …" with the time shown relative to now, and people as
    // their user name (`alice`, not `alice@alices-laptop.local`).
    let relative = |text: &str| -> String {
        let (at, rest) = text.split_once(' ').unwrap_or((text, ""));
        let rest: Vec<&str> = rest
            .trim_matches(|c| c == '(' || c == ')')
            .split(' ')
            .map(|word| word.split_once('@').map_or(word, |(user, _)| user))
            .collect();
        match at.parse::<jiff::Timestamp>() {
            Ok(at) => format!("{} {}", age(at, now), rest.join(" "))
                .trim_end()
                .to_owned(),
            Err(_) => text.to_owned(),
        }
    };
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "STATE".to_owned(),
        "REPLICAS".to_owned(),
        "NEXT".to_owned(),
        "SLEPT".to_owned(),
        "LAST ACTIVITY".to_owned(),
    ]];
    for env in envs {
        let now_size: i32 = env.workloads.iter().map(|w| w.size).sum();
        let original: i32 = env
            .workloads
            .iter()
            .map(|w| w.original.unwrap_or(w.size))
            .sum();
        let next = match (&env.next, &env.problem) {
            (_, Some(_)) => "schedule error (see -o json)".to_owned(),
            (Some(next), None) => match next.at.parse::<jiff::Timestamp>() {
                Ok(at) => format!("{} {}", next.to, age(at, now)),
                Err(_) => format!("{} at {}", next.to, next.at),
            },
            (None, None) => "-".to_owned(),
        };
        rows.push([
            env.namespace.clone(),
            serde_json::to_value(env.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            format!("{now_size}/{original}"),
            next,
            env.slept
                .as_deref()
                .map_or_else(|| "-".to_owned(), relative),
            env.last_activity
                .as_deref()
                .map_or_else(|| "-".to_owned(), relative),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How far `at` is from `now`, as kubectl shows ages: `45s ago`, `3h ago`,
/// `in 20m`, `in 2d`.
/// How long ago (or how soon) `at` is, as people say it: `45s ago`,
/// `12m ago`, `in 3h`, `2d ago`.
pub fn age(at: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = now.as_second() - at.as_second();
    let span = seconds.unsigned_abs();
    let short = match span {
        0..120 => format!("{span}s"),
        120..7_200 => format!("{}m", span / 60),
        7_200..172_800 => format!("{}h", span / 3_600),
        _ => format!("{}d", span / 86_400),
    };
    if seconds >= 0 {
        format!("{short} ago")
    } else {
        format!("in {short}")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn environments_are_labelled_namespaces_and_never_the_clusters_own() {
        let scope = Scope::default();
        let labelled: BTreeMap<String, String> =
            [("kdev.dev/environment".to_owned(), "team-a".to_owned())].into();
        assert!(scope.admits("team-a", &labelled));
        assert!(!scope.admits("ingress-nginx", &BTreeMap::new()));
        assert!(!scope.admits("kube-system", &labelled));
        assert_eq!(scope.label_selector(None), "kdev.dev/environment");
        assert_eq!(
            scope.label_selector(Some("team=a")),
            "kdev.dev/environment,team=a"
        );
        let everything = Scope::new(String::new().parse().unwrap(), ["payments".to_owned()]);
        assert!(everything.admits("ingress-nginx", &BTreeMap::new()));
        assert!(!everything.admits("payments", &BTreeMap::new()));
        assert_eq!(everything.label_selector(Some("team=a")), "team=a");
        let err = everything.check_named("kube-node-lease").unwrap_err();
        assert!(err.to_string().contains("is protected"), "{err}");
        assert!(everything.check_named("team-a").is_ok());
    }

    use super::*;

    fn workload(name: &str, size: i32, ready: i32, annotations: &[(&str, &str)]) -> Workload {
        Workload {
            kind: Kind::Deployment,
            namespace: "dev".into(),
            name: name.into(),
            size,
            ready,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels: BTreeMap::new(),
            swap_session: None,
            swap_original: None,
            created: None,
            finished: false,
        }
    }

    fn asleep(original: i32) -> (&'static str, String) {
        let record = SleepRecord {
            replicas: original,
            to: 0,
            at: "2026-12-02T19:00:00Z".into(),
            by: "alice@laptop".into(),
        };
        (contract::SLEEP_ANNOTATION, record.annotation().1)
    }

    /// Regression: the table's fixed columns (24 + 8 + 12 + 40 + 40 and
    /// the activity) wrapped in a 120-column terminal.
    #[test]
    fn the_table_fits_120_columns() {
        let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let env = Env {
            namespace: "team-payments-feature-x".into(),
            state: State::Asleep,
            workloads: Vec::new(),
            next: Some(Next {
                at: "2026-12-03T07:00:00Z".into(),
                to: "awake",
                why: "kdev.dev/uptime on namespace team-payments-feature-x".into(),
            }),
            problem: None,
            slept: Some("2026-12-01T19:00:00Z by alice@alices-laptop.local".into()),
            last_activity: Some(
                "2026-12-01T18:55:00Z (kdev logs by alice@alices-laptop.local)".into(),
            ),
        };
        let shown = table(&[env], now);
        for line in shown.lines() {
            assert!(
                line.chars().count() <= 120,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert!(shown.contains("awake in 19h"), "{shown}");
        assert!(shown.contains("17h ago by alice "), "{shown}");
        assert!(shown.contains("17h ago kdev logs by alice"), "{shown}");
        assert_eq!(age("2026-12-02T11:59:15Z".parse().unwrap(), now), "45s ago");
        assert_eq!(age("2026-12-02T12:20:00Z".parse().unwrap(), now), "in 20m");
        assert_eq!(age("2026-11-29T12:00:00Z".parse().unwrap(), now), "3d ago");
    }

    #[test]
    fn states_follow_the_workloads() {
        let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let none = BTreeMap::new();
        let (key, value) = asleep(3);
        let slept = workload("a", 0, 0, &[(key, &value)]);
        let up = workload("b", 2, 2, &[]);
        let starting = workload("c", 2, 1, &[]);
        let state = |ws: &[Workload]| judge("dev", &none, ws, now).state;
        assert_eq!(state(std::slice::from_ref(&up)), State::Awake);
        assert_eq!(state(&[starting]), State::Waking);
        assert_eq!(state(std::slice::from_ref(&slept)), State::Asleep);
        assert_eq!(state(&[slept.clone(), up]), State::Partly);
        let at_zero = workload("d", 0, 0, &[]);
        assert_eq!(state(&[slept.clone(), at_zero]), State::Asleep);
        // A Job that ran to its end keeps nothing awake.
        let done = Workload {
            kind: Kind::Job,
            finished: true,
            ..workload("e", 1, 1, &[])
        };
        assert_eq!(state(&[slept.clone(), done.clone()]), State::Asleep);
        assert_eq!(state(std::slice::from_ref(&done)), State::Awake);
        assert_eq!(state(&[]), State::Empty);
        let env = judge("dev", &none, &[slept], now);
        assert_eq!(env.workloads[0].original, Some(3));
        assert_eq!(
            env.slept.as_deref(),
            Some("2026-12-02T19:00:00Z by alice@laptop")
        );
    }

    #[test]
    fn the_next_transition_and_a_bad_schedule_are_said() {
        let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let ns: BTreeMap<String, String> = [(
            "downscaler/uptime".to_owned(),
            "Mon-Fri 09:00-19:00 UTC".to_owned(),
        )]
        .into();
        let env = judge("dev", &ns, &[workload("a", 1, 1, &[])], now);
        let next = env.next.expect("a next transition");
        assert_eq!(
            (next.at.as_str(), next.to),
            ("2026-12-02T19:00:00Z", "asleep")
        );
        assert!(
            next.why.contains("downscaler/uptime on namespace dev"),
            "{}",
            next.why
        );
        let bad: BTreeMap<String, String> =
            [("downscaler/uptime".to_owned(), "weekdays".to_owned())].into();
        let env = judge("dev", &bad, &[], now);
        assert!(env.problem.unwrap().contains("downscaler/uptime"));
    }

    #[test]
    fn history_times_are_local_to_the_second_with_their_age() {
        let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let shown = local_time("2026-12-02T11:55:00.987654Z", now);
        assert!(shown.ends_with(" (5m ago)"), "{shown}");
        assert!(!shown.contains('.') && !shown.contains('T'), "{shown}");
        assert_eq!(local_time("not a time", now), "not a time");
    }
}
