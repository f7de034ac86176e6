//! Environments that sleep and wake: the annotations the CLI, the controller
//! and the dashboard share, and the pure decisions over them.
//!
//! A workload (Deployment, StatefulSet, CronJob) that kdev put to sleep
//! carries one annotation, [`SLEEP_ANNOTATION`], written in the same guarded
//! write that scales it down (or suspends it). It holds what the workload
//! had before, so a wake restores exactly that; a workload without it is
//! never scaled up by kdev. Keys read from kube-downscaler (`downscaler/…`)
//! mean what they mean there; kdev's own key wins on the same object.

pub mod deletion;
pub mod patch;
pub mod savings;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The label that makes a namespace an environment, for the controller,
/// the dashboard and `kdev sleep -A` (their `--environments` selector by
/// default): environments are opted into, never every namespace.
pub const ENVIRONMENT_LABEL: &str = "kdev.dev/environment";

/// Namespaces that are never an environment, whatever their labels: the
/// cluster's own; `--protected` adds more.
pub const PROTECTED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The record of a sleep, on the workload (JSON, see [`SleepRecord`]).
pub const SLEEP_ANNOTATION: &str = "kdev.dev/sleep";
/// Opt-out: any value but "false" keeps the object (or a whole namespace)
/// awake. Read as an annotation or a label.
pub const EXCLUDE_KEYS: [&str; 2] = ["kdev.dev/exclude", "downscaler/exclude"];
/// Opt-in for DaemonSets, on a DaemonSet or its namespace: "true" makes
/// them workloads a sleep takes (a DaemonSet is often the node's plumbing,
/// so none sleeps unless asked).
pub const DAEMONSETS_ANNOTATION: &str = "kdev.dev/sleep-daemonsets";
/// The node selector a sleeping DaemonSet's pod template carries: no node
/// has the label, so its pods go (as GoKubeDownscaler does).
pub const ASLEEP_NODE_SELECTOR: &str = "kdev.dev/asleep";

/// Why a DaemonSet is no workload of its environment: not opted in, on
/// itself or its namespace ([`DAEMONSETS_ANNOTATION`]).
pub fn daemonset_left_out(
    own: &BTreeMap<String, String>,
    namespace: &BTreeMap<String, String>,
) -> Option<String> {
    let opted_in = |annotations: &BTreeMap<String, String>| {
        annotations
            .get(DAEMONSETS_ANNOTATION)
            .is_some_and(|v| v.trim() == "true")
    };
    (!opted_in(own) && !opted_in(namespace)).then(|| {
        format!("a DaemonSet sleeps only when opted in ({DAEMONSETS_ANNOTATION}: \"true\" on it or its namespace)")
    })
}

/// Replicas while asleep (default 0), on a workload or its namespace.
pub const DOWNTIME_REPLICAS_KEYS: [&str; 2] =
    ["kdev.dev/downtime-replicas", "downscaler/downtime-replicas"];

/// When an environment is up (kube-downscaler's uptime), on a namespace or a
/// workload; kdev's key first.
pub const UPTIME_KEYS: [&str; 2] = ["kdev.dev/uptime", "downscaler/uptime"];
/// When an environment sleeps (kube-downscaler's downtime).
pub const DOWNTIME_KEYS: [&str; 2] = ["kdev.dev/downtime", "downscaler/downtime"];

/// Wake on request: while an environment sleeps, each sleeping Deployment
/// or StatefulSet that a Service selects has a waker Pod carrying its pod
/// template's labels and this value under `kdev.dev/role`. The first
/// connection wakes the environment; the waker holds connections until a
/// pod of the workload is Ready, hands them over, and exits.
pub const ROLE_WAKER: &str = "env-waker";
/// On a namespace: "false" turns wake on request off (default on).
pub const WAKE_ON_REQUEST_ANNOTATION: &str = "kdev.dev/wake-on-request";
/// On a namespace: what a request wakes, a comma list of `deploy/NAME`,
/// `sts/NAME`, `cronjob/NAME` (default: the whole namespace).
pub const WAKE_WORKLOADS_ANNOTATION: &str = "kdev.dev/wake-workloads";
/// The ServiceAccount a waker runs as, in the environment's namespace.
pub const WAKER_SERVICE_ACCOUNT: &str = "kdev-waker";
/// The ClusterRole it is bound to there (deploy/env-waker.yaml): the
/// starter's rights plus reading pods.
pub const WAKER_CLUSTER_ROLE: &str = "kdev-env-waker";

/// Whether a namespace with these annotations wakes on request.
pub fn wakes_on_request(ns_annotations: &BTreeMap<String, String>) -> Result<bool, BadValue> {
    match ns_annotations
        .get(WAKE_ON_REQUEST_ANNOTATION)
        .map(|v| v.trim())
    {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(BadValue {
            key: WAKE_ON_REQUEST_ANNOTATION,
            value: other.to_owned(),
            expected: "\"true\" or \"false\"",
        }),
    }
}

/// On a namespace: put the environment to sleep after this long without
/// activity (`4h`, `90m`); the controller's `--idle-after` is the default.
pub const IDLE_AFTER_ANNOTATION: &str = "kdev.dev/sleep-after-idle";
/// On a namespace: when the controller last put the environment to sleep
/// for inactivity (RFC 3339). Activity after it starts the clock again.
pub const IDLE_SLEPT_ANNOTATION: &str = "kdev.dev/idle-slept";
/// The Lease in an environment's namespace whose `renewTime` is its last
/// activity by a person or a request (`kdev logs`, `kdev wake`, `kdev
/// swap`, a waker), and whose `holderIdentity` says who.
pub const ACTIVITY_LEASE: &str = "kdev-activity";

/// How long an environment may be idle, from its namespace's annotation or
/// the controller's default; `None` when inactivity does not count.
pub fn idle_after(
    ns_annotations: &BTreeMap<String, String>,
    default: Option<jiff::SignedDuration>,
) -> Result<Option<jiff::SignedDuration>, BadValue> {
    let Some(raw) = ns_annotations.get(IDLE_AFTER_ANNOTATION) else {
        return Ok(default);
    };
    let raw = raw.trim();
    if raw == "never" {
        return Ok(None);
    }
    match crate::duration::parse(raw).map(jiff::SignedDuration::try_from) {
        Ok(Ok(idle)) if idle.is_positive() => Ok(Some(idle)),
        _ => Err(BadValue {
            key: IDLE_AFTER_ANNOTATION,
            value: raw.chars().take(100).collect(),
            expected: "a positive duration (4h, 90m, 1h30m) or \"never\"",
        }),
    }
}

/// What inactivity asks of an environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Idle long enough: sleep now.
    SleepNow,
    /// Not yet: look again then.
    At(jiff::Timestamp),
    /// Put to sleep for inactivity already, with no activity since.
    Slept,
}

/// The inactivity rule: an environment whose last activity is `last`
/// sleeps `idle` later, once; activity after that sleep starts it again.
pub fn idle_decision(
    last: jiff::Timestamp,
    idle: jiff::SignedDuration,
    idle_slept: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Idle {
    if idle_slept.is_some_and(|slept| slept >= last) {
        return Idle::Slept;
    }
    match last.checked_add(idle) {
        Ok(deadline) if deadline > now => Idle::At(deadline),
        _ => Idle::SleepNow,
    }
}

/// On a namespace: the state the controller last put the environment in by
/// its schedule, and when (`asleep 2026-12-02T19:00:00Z`). The controller
/// acts when the schedule's state differs from it, that is at each edge of
/// the schedule, and leaves people alone in between: a `kdev wake` in the
/// evening holds until the next sleep edge (or the inactivity rule).
pub const SCHEDULE_APPLIED_ANNOTATION: &str = "kdev.dev/schedule-applied";

/// What the schedule asks of an environment whose last applied state is
/// `applied` (read from [`SCHEDULE_APPLIED_ANNOTATION`]): `Some(true)` wake,
/// `Some(false)` sleep, `None` nothing.
pub fn scheduled(schedule: &Schedule, applied: Option<&str>, now: jiff::Timestamp) -> Option<bool> {
    let awake = schedule.awake(now);
    let applied_awake = match applied.and_then(|a| a.split_whitespace().next()) {
        Some("awake") => Some(true),
        Some("asleep") => Some(false),
        _ => None,
    };
    (applied_awake != Some(awake)).then_some(awake)
}

/// The value of [`SCHEDULE_APPLIED_ANNOTATION`] for a state applied at `at`.
pub fn applied_value(awake: bool, at: jiff::Timestamp) -> String {
    format!("{} {at}", if awake { "awake" } else { "asleep" })
}

/// An environment's schedule and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub uptime: crate::schedule::Spec,
    pub downtime: crate::schedule::Spec,
    /// Awake whenever this holds, whatever uptime and downtime say
    /// (kube-downscaler's `force-uptime`: `true`, `false` or a schedule).
    pub force_uptime: crate::schedule::Spec,
    /// Awake, whatever the schedule says, until then (`kdev envs keep-awake`).
    pub keep_awake_until: Option<jiff::Timestamp>,
    /// The keys it was read from, for "why".
    pub from: Vec<&'static str>,
}

/// Forced uptime (kube-downscaler's `force-uptime`), on a namespace.
pub const FORCE_UPTIME_KEYS: [&str; 2] = ["kdev.dev/force-uptime", "downscaler/force-uptime"];

/// On a namespace: keep the environment awake until this instant (RFC 3339),
/// whatever its schedule says; written by `kdev envs keep-awake`.
pub const KEEP_AWAKE_ANNOTATION: &str = "kdev.dev/keep-awake-until";

/// A schedule-related annotation that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadSchedule {
    pub key: &'static str,
    pub problem: String,
}

impl fmt::Display for BadSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "annotation {}: {}", self.key, self.problem)
    }
}

impl std::error::Error for BadSchedule {}

/// The namespace's keep-awake time, if it has one.
fn keep_awake_until(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<jiff::Timestamp>, BadSchedule> {
    let until = match annotations.get(KEEP_AWAKE_ANNOTATION) {
        None => None,
        Some(value) => {
            Some(
                value
                    .trim()
                    .parse::<jiff::Timestamp>()
                    .map_err(|err| BadSchedule {
                        key: KEEP_AWAKE_ANNOTATION,
                        problem: format!(
                            "{:?} is not an RFC 3339 time: {err}",
                            value.chars().take(60).collect::<String>()
                        ),
                    })?,
            )
        }
    };
    Ok(until)
}

/// The controller's schedule for namespaces that have none of their own
/// (`--default-uptime`, `--default-downtime`, as kube-downscaler's flags).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    pub uptime: Option<crate::schedule::Spec>,
    pub downtime: Option<crate::schedule::Spec>,
}

/// Whether an annotation key is one the schedules read (on a namespace or
/// a workload): a change of any other, such as kdev's own records, does not
/// change what a schedule asks.
pub fn is_schedule_key(key: &str) -> bool {
    UPTIME_KEYS
        .iter()
        .chain(&DOWNTIME_KEYS)
        .chain(&FORCE_UPTIME_KEYS)
        .chain(&EXCLUDE_KEYS)
        .chain(&EXCLUDE_UNTIL_KEYS)
        .chain(&DOWNTIME_REPLICAS_KEYS)
        .any(|k| *k == key)
}

/// Whether a workload carries a schedule of its own, which then wins over
/// its namespace's (and the controller's default).
pub fn has_own_schedule(annotations: &BTreeMap<String, String>) -> bool {
    UPTIME_KEYS
        .iter()
        .chain(&DOWNTIME_KEYS)
        .chain(&FORCE_UPTIME_KEYS)
        .any(|key| annotations.contains_key(*key))
}

impl Schedule {
    /// Reads the schedule from `annotations`, else from the controller's
    /// `defaults`; `None` when there is neither (always awake). Precedence:
    /// kdev's key, then kube-downscaler's, on the object; then the defaults.
    pub fn read_or(
        annotations: &BTreeMap<String, String>,
        defaults: &Defaults,
    ) -> Result<Option<Self>, BadSchedule> {
        if let Some(schedule) = Self::read(annotations)? {
            return Ok(Some(schedule));
        }
        if defaults.uptime.is_none() && defaults.downtime.is_none() {
            return Ok(None);
        }
        let mut from = Vec::new();
        if defaults.uptime.is_some() {
            from.push("--default-uptime");
        }
        if defaults.downtime.is_some() {
            from.push("--default-downtime");
        }
        Ok(Some(Self {
            uptime: defaults
                .uptime
                .clone()
                .unwrap_or(crate::schedule::Spec::Always),
            downtime: defaults
                .downtime
                .clone()
                .unwrap_or(crate::schedule::Spec::Never),
            force_uptime: crate::schedule::Spec::Never,
            keep_awake_until: keep_awake_until(annotations)?,
            from,
        }))
    }

    /// Reads the schedule from `annotations`; `None` when there is none
    /// (uptime "always", downtime "never": always awake).
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, BadSchedule> {
        let mut from = Vec::new();
        let mut spec = |keys: [&'static str; 2], default| {
            for key in keys {
                if let Some(value) = annotations.get(key) {
                    from.push(key);
                    if FORCE_UPTIME_KEYS.contains(&key) {
                        match value.trim().to_ascii_lowercase().as_str() {
                            "true" => return Ok(crate::schedule::Spec::Always),
                            "false" => return Ok(crate::schedule::Spec::Never),
                            _ => {}
                        }
                    }
                    return crate::schedule::parse(value).map_err(|error| BadSchedule {
                        key,
                        problem: error.to_string(),
                    });
                }
            }
            Ok(default)
        };
        let uptime = spec(UPTIME_KEYS, crate::schedule::Spec::Always)?;
        let downtime = spec(DOWNTIME_KEYS, crate::schedule::Spec::Never)?;
        let force_uptime = spec(FORCE_UPTIME_KEYS, crate::schedule::Spec::Never)?;
        if from.is_empty() {
            return Ok(None);
        }
        let keep_awake_until = keep_awake_until(annotations)?;
        Ok(Some(Self {
            uptime,
            downtime,
            force_uptime,
            keep_awake_until,
            from,
        }))
    }

    /// Awake at `at`: kept awake until later, or within uptime and not
    /// within downtime (kube-downscaler's rule).
    pub fn awake(&self, at: jiff::Timestamp) -> bool {
        self.keep_awake_until.is_some_and(|until| at < until)
            || self.force_uptime.holds(at)
            || (self.uptime.holds(at) && !self.downtime.holds(at))
    }

    /// The next instant the schedule moves the environment, and whether it
    /// then wakes (`true`) or sleeps.
    pub fn next_transition(&self, at: jiff::Timestamp) -> Option<(jiff::Timestamp, bool)> {
        let now = self.awake(at);
        let mut cursor = at;
        // Each step passes one edge of either spec; a week holds few.
        for _ in 0..64 {
            let next = [
                self.uptime.next_change(cursor),
                self.downtime.next_change(cursor),
                self.force_uptime.next_change(cursor),
                self.keep_awake_until.filter(|until| *until > cursor),
            ]
            .into_iter()
            .flatten()
            .min()?;
            if self.awake(next) != now {
                return Some((next, !now));
            }
            cursor = next;
        }
        None
    }
}

/// What a workload had before kdev put it to sleep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepRecord {
    /// Replicas before the sleep (for a CronJob: 1 when it was running).
    pub replicas: i32,
    /// Replicas kdev set (for a CronJob: 0, suspended).
    pub to: i32,
    /// When (RFC 3339).
    pub at: String,
    /// Who or what: `user@host`, or the schedule and where it is written.
    pub by: String,
}

/// A kdev annotation or label that cannot be read; nothing is changed
/// because of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadValue {
    pub key: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}={:?} is not {}",
            self.key, self.value, self.expected
        )
    }
}

impl std::error::Error for BadValue {}

impl SleepRecord {
    /// Whether a workload of `size` is still as this sleep left it.
    pub fn holds(&self, size: i32) -> bool {
        size == self.to
    }

    /// The annotation to write with the change that puts the workload to sleep.
    pub fn annotation(&self) -> (String, String) {
        (
            SLEEP_ANNOTATION.to_owned(),
            serde_json::to_string(self).expect("a record serializes"),
        )
    }

    /// Reads the record back; `None` when the workload is not asleep.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, BadValue> {
        let Some(raw) = annotations.get(SLEEP_ANNOTATION) else {
            return Ok(None);
        };
        let bad = || BadValue {
            key: SLEEP_ANNOTATION,
            value: raw.chars().take(200).collect(),
            expected: "a sleep record ({\"replicas\":N,\"to\":N,\"at\":…,\"by\":…})",
        };
        let record: SleepRecord = serde_json::from_str(raw).map_err(|_| bad())?;
        if record.replicas < 0 || record.to < 0 {
            return Err(bad());
        }
        Ok(Some(record))
    }
}

/// Whether `key`'s value opts out: kube-downscaler's rule, anything but
/// "false" (any case) excludes, to be on the safe side.
fn opts_out(values: &BTreeMap<String, String>) -> Option<&'static str> {
    EXCLUDE_KEYS.into_iter().find(|key| {
        values
            .get(*key)
            .is_some_and(|value| !value.trim().eq_ignore_ascii_case("false"))
    })
}

/// The opt-out that keeps an object awake, if any: the key and where
/// (annotation or label).
pub fn exclusion(
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    now: jiff::Timestamp,
) -> Option<String> {
    opts_out(annotations)
        .map(|key| format!("annotation {key}"))
        .or_else(|| opts_out(labels).map(|key| format!("label {key}")))
        .or_else(|| excluded_until(annotations, now))
}

/// Temporary opt-out until an instant, kube-downscaler's `exclude-until`.
pub const EXCLUDE_UNTIL_KEYS: [&str; 2] = ["kdev.dev/exclude-until", "downscaler/exclude-until"];

/// Why `exclude-until` keeps the object awake at `now`, if it does. Reads
/// kube-downscaler's forms: `2026-12-24T08:00:00Z` (any RFC 3339 offset),
/// `2026-12-24 08:00` and `2026-12-24` (UTC). A value that cannot be read
/// keeps it awake too, and says so: the safe side, as for `exclude`.
fn excluded_until(annotations: &BTreeMap<String, String>, now: jiff::Timestamp) -> Option<String> {
    let (key, value) = EXCLUDE_UNTIL_KEYS
        .iter()
        .find_map(|key| Some((*key, annotations.get(*key)?.trim())))?;
    match parse_until(value) {
        Some(until) if now < until => Some(format!("annotation {key} (until {until})")),
        Some(_) => None,
        None => Some(format!(
            "annotation {key}={value:?}, which is not a time (use 2026-12-24T08:00:00Z, 2026-12-24 08:00 or 2026-12-24)"
        )),
    }
}

fn parse_until(value: &str) -> Option<jiff::Timestamp> {
    if let Ok(at) = value.parse::<jiff::Timestamp>() {
        return Some(at);
    }
    let utc = |dt: jiff::civil::DateTime| {
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    };
    if let Ok(dt) = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", value) {
        return utc(dt);
    }
    jiff::civil::Date::strptime("%Y-%m-%d", value)
        .ok()
        .and_then(|d| utc(d.to_datetime(jiff::civil::Time::midnight())))
}

/// Replicas while asleep: the first of kdev's key and kube-downscaler's on
/// the workload, then on its namespace, else 0.
pub fn downtime_replicas(
    workload: &BTreeMap<String, String>,
    namespace: &BTreeMap<String, String>,
) -> Result<i32, BadValue> {
    for annotations in [workload, namespace] {
        for key in DOWNTIME_REPLICAS_KEYS {
            if let Some(value) = annotations.get(key) {
                return value
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or(BadValue {
                        key,
                        value: value.chars().take(200).collect(),
                        expected: "a replica count (a whole number ≥ 0)",
                    });
            }
        }
    }
    Ok(0)
}

/// A `kdev swap` session holding a Deployment: its id and the count its
/// restore puts back (`kdev.dev/original-replicas`, see [`crate::session`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Swapped<'a> {
    pub session: &'a str,
    pub original: i32,
}

/// What putting one workload to sleep does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sleep {
    /// Scale from `from` to `to` (suspend a CronJob) and write the record.
    Scale { from: i32, to: i32 },
    /// A swap holds it (at 0, its traffic on a laptop): leave its replicas
    /// to the swap, but set the count the swap's restore puts back to `to`
    /// and write the record with `from`, in one write. A swap that ends
    /// while the environment sleeps then leaves it asleep, and the wake
    /// restores `from`.
    UnderSwap { session: String, from: i32, to: i32 },
    /// Already asleep (it carries a record); nothing to do.
    AlreadyAsleep,
    /// At or below the sleeping size already (a workload kept at 0 on
    /// purpose): left alone, so a wake leaves it there too.
    AlreadySmall { replicas: i32 },
    /// Opted out.
    Excluded { why: String },
}

/// Decides how to put a workload with `replicas` now to sleep at `to`
/// replicas. `swap` is the session holding it, if any.
pub fn sleep_plan(
    replicas: i32,
    to: i32,
    annotations: &BTreeMap<String, String>,
    exclusion: Option<String>,
    swap: Option<Swapped<'_>>,
) -> Result<Sleep, BadValue> {
    if let Some(why) = exclusion {
        return Ok(Sleep::Excluded { why });
    }
    let size = swap.map_or(replicas, |s| s.original);
    // A record with the workload not at its sleep size: woken since
    // through the scale subresource (a starter or a waker, who cannot
    // remove the record) or resized by hand. Awake, then; this sleep's
    // record replaces that one.
    if let Some(record) = SleepRecord::read(annotations)?
        && size == record.to
    {
        return Ok(Sleep::AlreadyAsleep);
    }
    if size <= to {
        return Ok(Sleep::AlreadySmall { replicas: size });
    }
    Ok(match swap {
        Some(swap) => Sleep::UnderSwap {
            session: swap.session.to_owned(),
            from: size,
            to,
        },
        None => Sleep::Scale { from: size, to },
    })
}

/// What waking one workload does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Still as the sleep left it: scale back to `to` and remove the record.
    Scale { to: i32 },
    /// A swap holds it: set the count its restore puts back to `to` and
    /// remove the record, in one write; the replicas stay the swap's.
    UnderSwap { session: String, to: i32 },
    /// Someone changed replicas while it slept: keep theirs, remove the
    /// record, say so.
    KeepChanged { current: i32, original: i32 },
    /// Back at its size from before the sleep already (woken through the
    /// scale subresource, by someone who may not remove the record): remove it.
    Cleanup,
    /// Not asleep (no record): nothing to do.
    NotAsleep,
}

/// Decides how to wake a workload with `replicas` now (for a swapped one,
/// the count its swap's restore puts back).
pub fn wake_plan(
    replicas: i32,
    annotations: &BTreeMap<String, String>,
    swap: Option<Swapped<'_>>,
) -> Result<Wake, BadValue> {
    let Some(record) = SleepRecord::read(annotations)? else {
        return Ok(Wake::NotAsleep);
    };
    let size = swap.map_or(replicas, |s| s.original);
    Ok(if size == record.to {
        match swap {
            Some(swap) => Wake::UnderSwap {
                session: swap.session.to_owned(),
                to: record.replicas,
            },
            None => Wake::Scale {
                to: record.replicas,
            },
        }
    } else if size == record.replicas {
        Wake::Cleanup
    } else {
        Wake::KeepChanged {
            current: size,
            original: record.replicas,
        }
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_controllers_defaults_apply_where_a_namespace_has_no_schedule() {
        let night = ts("2026-12-02T22:00:00Z");
        let defaults = Defaults {
            uptime: None,
            downtime: Some(crate::schedule::parse("Mon-Fri 19:00-07:00 UTC").unwrap()),
        };
        let none = BTreeMap::new();
        let by_default = Schedule::read_or(&none, &defaults).unwrap().unwrap();
        assert!(!by_default.awake(night));
        assert_eq!(by_default.from, ["--default-downtime"]);
        let own = BTreeMap::from([("kdev.dev/downtime".to_owned(), "never".to_owned())]);
        assert!(
            Schedule::read_or(&own, &defaults)
                .unwrap()
                .unwrap()
                .awake(night)
        );
        assert!(has_own_schedule(&own));
        assert!(is_schedule_key("downscaler/exclude-until"));
        assert!(!is_schedule_key(SLEEP_ANNOTATION));
        assert!(!is_schedule_key(SCHEDULE_APPLIED_ANNOTATION));
        assert!(!has_own_schedule(&none));
        assert_eq!(Schedule::read_or(&none, &Defaults::default()), Ok(None));
    }

    #[test]
    fn force_uptime_wins_over_downtime() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let night = ts("2026-12-02T22:00:00Z"); // a Wednesday
        let down = ("downscaler/downtime", "Mon-Fri 19:00-07:00 UTC");
        let schedule = Schedule::read(&ann(&[down])).unwrap().unwrap();
        assert!(!schedule.awake(night));
        let forced = Schedule::read(&ann(&[down, ("downscaler/force-uptime", "true")]))
            .unwrap()
            .unwrap();
        assert!(forced.awake(night));
        let window = ("downscaler/force-uptime", "Wed 21:00-23:00 UTC");
        let windowed = Schedule::read(&ann(&[down, window])).unwrap().unwrap();
        assert!(windowed.awake(night));
        assert!(!windowed.awake(ts("2026-12-02T23:30:00Z")));
        assert_eq!(
            windowed.next_transition(night),
            Some((ts("2026-12-02T23:00:00Z"), false))
        );
        let off = Schedule::read(&ann(&[down, ("downscaler/force-uptime", "false")]))
            .unwrap()
            .unwrap();
        assert!(!off.awake(night));
    }

    fn ts(text: &str) -> jiff::Timestamp {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn exclude_until_reads_kube_downscalers_forms_and_ends() {
        let ann = |v: &str| BTreeMap::from([("downscaler/exclude-until".to_owned(), v.to_owned())]);
        let none = BTreeMap::new();
        let before = ts("2026-12-24T07:59:00Z");
        let after = ts("2026-12-24T08:00:00Z");
        for value in [
            "2026-12-24T08:00:00Z",
            "2026-12-24T09:00:00+01:00",
            "2026-12-24 08:00",
        ] {
            assert!(exclusion(&ann(value), &none, before).is_some(), "{value}");
            assert!(exclusion(&ann(value), &none, after).is_none(), "{value}");
        }
        assert!(exclusion(&ann("2026-12-25"), &none, after).is_some());
        let unreadable = exclusion(&ann("tomorrow"), &none, after).expect("kept awake");
        assert!(unreadable.contains("not a time"), "{unreadable}");
    }

    #[test]
    fn a_record_left_by_a_wake_through_the_scale_subresource_does_not_block_the_next_sleep() {
        let record = SleepRecord {
            replicas: 3,
            to: 0,
            at: "2026-12-02T19:00:00Z".into(),
            by: "kdev-controller".into(),
        };
        let (key, value) = record.annotation();
        let annotations = BTreeMap::from([(key.to_owned(), value)]);
        assert_eq!(
            sleep_plan(0, 0, &annotations, None, None),
            Ok(Sleep::AlreadyAsleep)
        );
        assert_eq!(
            sleep_plan(3, 0, &annotations, None, None),
            Ok(Sleep::Scale { from: 3, to: 0 })
        );
    }

    #[test]
    fn inactivity_sleeps_once_after_the_last_activity() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().expect("ts");
        let idle = jiff::SignedDuration::from_hours(4);
        let last = t("2026-12-02T10:00:00Z");
        assert_eq!(
            idle_decision(last, idle, None, t("2026-12-02T12:00:00Z")),
            Idle::At(t("2026-12-02T14:00:00Z"))
        );
        assert_eq!(
            idle_decision(last, idle, None, t("2026-12-02T14:00:00Z")),
            Idle::SleepNow
        );
        // Slept for it once: not again until there is new activity.
        let slept = Some(t("2026-12-02T14:00:01Z"));
        assert_eq!(
            idle_decision(last, idle, slept, t("2026-12-02T20:00:00Z")),
            Idle::Slept
        );
        let later = t("2026-12-02T21:00:00Z");
        assert_eq!(
            idle_decision(later, idle, slept, later),
            Idle::At(t("2026-12-03T01:00:00Z"))
        );
    }

    #[test]
    fn idle_after_reads_durations_and_never() {
        let ann = |v: &str| BTreeMap::from([(IDLE_AFTER_ANNOTATION.to_owned(), v.to_owned())]);
        let h = jiff::SignedDuration::from_hours;
        assert_eq!(idle_after(&ann("4h"), None), Ok(Some(h(4))));
        assert_eq!(
            idle_after(&ann("1h30m"), None),
            Ok(Some(jiff::SignedDuration::from_mins(90)))
        );
        assert_eq!(idle_after(&ann("never"), Some(h(1))), Ok(None));
        assert_eq!(idle_after(&BTreeMap::new(), Some(h(1))), Ok(Some(h(1))));
        assert!(idle_after(&ann("soon"), None).is_err());
        assert!(idle_after(&ann("-4h"), None).is_err());
    }
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn asleep(replicas: i32, to: i32) -> BTreeMap<String, String> {
        let record = SleepRecord {
            replicas,
            to,
            at: "2026-12-02T19:00:00Z".into(),
            by: "alice@laptop".into(),
        };
        [record.annotation()].into()
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let annotations = asleep(3, 0);
        let record = SleepRecord::read(&annotations).unwrap().unwrap();
        assert_eq!((record.replicas, record.to), (3, 0));
        assert_eq!(SleepRecord::read(&map(&[])), Ok(None));
    }

    #[test]
    fn sleeping_records_and_scales_and_leaves_small_workloads_alone() {
        assert_eq!(
            sleep_plan(3, 0, &map(&[]), None, None),
            Ok(Sleep::Scale { from: 3, to: 0 })
        );
        assert_eq!(
            sleep_plan(0, 0, &map(&[]), None, None),
            Ok(Sleep::AlreadySmall { replicas: 0 })
        );
        assert_eq!(
            sleep_plan(0, 0, &asleep(3, 0), None, None),
            Ok(Sleep::AlreadyAsleep)
        );
        let swap = Some(Swapped {
            session: "s1",
            original: 3,
        });
        assert_eq!(
            sleep_plan(0, 0, &map(&[]), None, swap),
            Ok(Sleep::UnderSwap {
                session: "s1".into(),
                from: 3,
                to: 0
            })
        );
        assert_eq!(
            sleep_plan(3, 0, &map(&[]), Some("label kdev.dev/exclude".into()), swap),
            Ok(Sleep::Excluded {
                why: "label kdev.dev/exclude".into()
            })
        );
    }

    #[test]
    fn waking_restores_exactly_and_keeps_a_change_made_while_asleep() {
        assert_eq!(wake_plan(0, &asleep(3, 0), None), Ok(Wake::Scale { to: 3 }));
        assert_eq!(wake_plan(1, &asleep(3, 1), None), Ok(Wake::Scale { to: 3 }));
        assert_eq!(
            wake_plan(2, &asleep(3, 0), None),
            Ok(Wake::KeepChanged {
                current: 2,
                original: 3
            })
        );
        assert_eq!(wake_plan(3, &asleep(3, 0), None), Ok(Wake::Cleanup));
        assert_eq!(wake_plan(2, &map(&[]), None), Ok(Wake::NotAsleep));
        // Slept under a swap: the swap's restore count was set to 0.
        let swap = Some(Swapped {
            session: "s1",
            original: 0,
        });
        assert_eq!(
            wake_plan(0, &asleep(3, 0), swap),
            Ok(Wake::UnderSwap {
                session: "s1".into(),
                to: 3
            })
        );
    }

    #[test]
    fn opt_outs_read_as_kube_downscaler_reads_them() {
        let none = map(&[]);
        assert_eq!(
            exclusion(
                &map(&[("downscaler/exclude", "false")]),
                &none,
                ts("2026-12-02T12:00:00Z")
            ),
            None
        );
        assert_eq!(
            exclusion(
                &map(&[("downscaler/exclude", "yes")]),
                &none,
                ts("2026-12-02T12:00:00Z")
            )
            .as_deref(),
            Some("annotation downscaler/exclude")
        );
        assert_eq!(
            exclusion(
                &none,
                &map(&[("kdev.dev/exclude", "true")]),
                ts("2026-12-02T12:00:00Z")
            )
            .as_deref(),
            Some("label kdev.dev/exclude")
        );
    }

    #[test]
    fn downtime_replicas_prefer_the_workload_then_the_namespace() {
        let ns = map(&[("downscaler/downtime-replicas", "1")]);
        assert_eq!(downtime_replicas(&map(&[]), &ns), Ok(1));
        assert_eq!(
            downtime_replicas(&map(&[("kdev.dev/downtime-replicas", "2")]), &ns),
            Ok(2)
        );
        assert_eq!(downtime_replicas(&map(&[]), &map(&[])), Ok(0));
        let err = downtime_replicas(&map(&[("kdev.dev/downtime-replicas", "-1")]), &ns)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kdev.dev/downtime-replicas"), "{err}");
    }

    #[test]
    fn a_namespace_schedule_says_when_it_sleeps_next() {
        let schedule = Schedule::read(&map(&[("downscaler/uptime", "Mon-Fri 09:00-19:00 UTC")]))
            .unwrap()
            .unwrap();
        let wednesday_noon: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        assert!(schedule.awake(wednesday_noon));
        assert_eq!(
            schedule.next_transition(wednesday_noon),
            Some(("2026-12-02T19:00:00Z".parse().unwrap(), false))
        );
        // kdev's key wins over kube-downscaler's; downtime inside uptime sleeps.
        let schedule = Schedule::read(&map(&[
            ("downscaler/uptime", "never"),
            ("kdev.dev/uptime", "always"),
            ("downscaler/downtime", "Wed 12:00-13:00 UTC"),
        ]))
        .unwrap()
        .unwrap();
        assert!(!schedule.awake(wednesday_noon));
        assert_eq!(
            schedule.next_transition(wednesday_noon),
            Some(("2026-12-02T13:00:00Z".parse().unwrap(), true))
        );
        assert_eq!(Schedule::read(&map(&[])), Ok(None));
        let err = Schedule::read(&map(&[("downscaler/downtime", "Mon-Fri 9-5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("downscaler/downtime"), "{err}");
    }

    #[test]
    fn keep_awake_holds_until_its_time_then_the_schedule_rules() {
        let schedule = Schedule::read(&map(&[
            ("downscaler/uptime", "Mon-Fri 09:00-19:00 UTC"),
            (KEEP_AWAKE_ANNOTATION, "2026-12-02T23:00:00Z"),
        ]))
        .unwrap()
        .unwrap();
        let evening: jiff::Timestamp = "2026-12-02T20:00:00Z".parse().unwrap();
        assert!(schedule.awake(evening));
        assert_eq!(
            schedule.next_transition("2026-12-02T12:00:00Z".parse().unwrap()),
            Some(("2026-12-02T23:00:00Z".parse().unwrap(), false)),
            "the 19:00 edge passes while kept awake"
        );
        let err = Schedule::read(&map(&[
            ("downscaler/uptime", "always"),
            (KEEP_AWAKE_ANNOTATION, "tonight"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kdev.dev/keep-awake-until") && err.contains("tonight"),
            "{err}"
        );
    }

    #[test]
    fn the_schedule_acts_at_its_edges_only() {
        let schedule = Schedule::read(&map(&[("downscaler/uptime", "Mon-Fri 09:00-19:00 UTC")]))
            .unwrap()
            .unwrap();
        let evening: jiff::Timestamp = "2026-12-02T19:00:00Z".parse().unwrap();
        let morning: jiff::Timestamp = "2026-12-03T09:00:00Z".parse().unwrap();
        assert_eq!(
            scheduled(&schedule, None, evening),
            Some(false),
            "first sight: apply"
        );
        let slept = applied_value(false, evening);
        assert_eq!(scheduled(&schedule, Some(&slept), evening), None);
        // Later that night, after someone woke it by hand: still nothing.
        let night: jiff::Timestamp = "2026-12-02T23:00:00Z".parse().unwrap();
        assert_eq!(scheduled(&schedule, Some(&slept), night), None);
        assert_eq!(scheduled(&schedule, Some(&slept), morning), Some(true));
        assert_eq!(scheduled(&schedule, Some("garbage"), morning), Some(true));
    }

    proptest! {
        #[test]
        fn any_annotation_text_is_an_error_or_a_plan_never_a_panic(raw in "\\PC{0,120}", replicas in -2i32..5) {
            let annotations = map(&[(SLEEP_ANNOTATION, &raw), ("kdev.dev/downtime-replicas", &raw)]);
            let _ = wake_plan(replicas, &annotations, None);
            let _ = sleep_plan(replicas, 0, &annotations, None, None);
            let _ = downtime_replicas(&annotations, &annotations);
            // The keys this session added: idle time, wake on request,
            // exclude-until, force-uptime, and the controller's defaults.
            let keys = map(&[
                (IDLE_AFTER_ANNOTATION, &raw),
                (WAKE_ON_REQUEST_ANNOTATION, &raw),
                ("downscaler/exclude-until", &raw),
                ("downscaler/force-uptime", &raw),
            ]);
            let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
            let _ = idle_after(&keys, None);
            let _ = wakes_on_request(&keys);
            let _ = exclusion(&keys, &keys, now);
            let _ = Schedule::read_or(&keys, &Defaults::default());
            let schedule = map(&[("kdev.dev/uptime", &raw), (KEEP_AWAKE_ANNOTATION, &raw)]);
            if let Ok(Some(schedule)) = Schedule::read(&schedule) {
                let now = "2026-12-02T12:00:00Z".parse().unwrap();
                let _ = schedule.next_transition(now);
                let _ = scheduled(&schedule, Some(&raw), now);
            }
        }

        #[test]
        fn a_sleep_then_a_wake_restores_the_count(replicas in 0i32..1000, to in 0i32..3) {
            match sleep_plan(replicas, to, &map(&[]), None, None).unwrap() {
                Sleep::Scale { from, to } => {
                    prop_assert_eq!(wake_plan(to, &asleep(from, to), None).unwrap(), Wake::Scale { to: replicas });
                }
                Sleep::AlreadySmall { .. } => prop_assert!(replicas <= to),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
