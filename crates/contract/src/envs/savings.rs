//! What sleeping saved: pod-hours, CPU-hours and memory-hours asleep, per
//! environment and per day.
//!
//! Events cannot carry it: the API server keeps them for `--event-ttl`, an
//! hour by default and on the large managed offerings. So each sleep and
//! wake records, on the environment's activity Lease (annotation
//! [`SAVINGS_ANNOTATION`], a [`Ledger`]), how much is asleep from then on:
//! the pods its workloads' sleep records say are gone, times each pod's
//! requests. Time asleep is folded into per-day totals (UTC days) at each
//! record and when read, so the figures are exact to the second however
//! long ago, for the last [`KEPT_DAYS`] days.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The ledger, on the `kdev-activity` Lease of each environment.
pub const SAVINGS_ANNOTATION: &str = "kdev.dev/savings";
/// Days of totals a ledger keeps (30 whole days and today).
pub const KEPT_DAYS: i64 = 31;

/// What is asleep at a moment: pods and their requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub pods: u64,
    /// CPU requested, in millicores.
    #[serde(rename = "cpuMillis")]
    pub cpu_millis: u64,
    /// Memory requested, in bytes.
    #[serde(rename = "memoryBytes")]
    pub memory_bytes: u64,
}

impl Amount {
    pub fn is_zero(&self) -> bool {
        *self == Amount::default()
    }

    /// `count` pods of `self` each.
    pub fn times(self, count: u64) -> Amount {
        Amount {
            pods: self.pods.saturating_mul(count),
            cpu_millis: self.cpu_millis.saturating_mul(count),
            memory_bytes: self.memory_bytes.saturating_mul(count),
        }
    }

    pub fn plus(self, other: Amount) -> Amount {
        Amount {
            pods: self.pods.saturating_add(other.pods),
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// Hours asleep: pod-hours, CPU-hours (cores), memory GiB-hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hours {
    #[serde(rename = "podHours")]
    pub pods: f64,
    #[serde(rename = "cpuHours")]
    pub cpu: f64,
    #[serde(rename = "memoryGiBHours")]
    pub memory_gib: f64,
}

impl Hours {
    fn of(amount: Amount, seconds: f64) -> Hours {
        let hours = seconds / 3600.0;
        Hours {
            pods: amount.pods as f64 * hours,
            cpu: amount.cpu_millis as f64 / 1000.0 * hours,
            memory_gib: amount.memory_bytes as f64 / GIB * hours,
        }
    }

    pub fn plus(self, other: Hours) -> Hours {
        Hours {
            pods: self.pods + other.pods,
            cpu: self.cpu + other.cpu,
            memory_gib: self.memory_gib + other.memory_gib,
        }
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What is asleep since when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Open {
    pub at: jiff::Timestamp,
    #[serde(flatten)]
    pub amount: Amount,
}

/// One environment's record of what sleeping saved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// When the ledger began: figures before it are not known.
    pub since: Option<jiff::Timestamp>,
    /// What is asleep now, since when; absent when nothing is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Open>,
    /// Totals per UTC day (`YYYY-MM-DD`), up to [`KEPT_DAYS`] of them.
    #[serde(default)]
    pub days: BTreeMap<String, Hours>,
}

impl Ledger {
    /// Reads a ledger; a missing annotation is an empty one.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Self, String> {
        let Some(raw) = annotations.get(SAVINGS_ANNOTATION) else {
            return Ok(Ledger::default());
        };
        serde_json::from_str(raw).map_err(|err| {
            format!("annotation {SAVINGS_ANNOTATION} is not a savings ledger: {err}")
        })
    }

    pub fn text(&self) -> String {
        serde_json::to_string(self).expect("a ledger serializes")
    }

    /// The ledger with the time asleep up to `now` added to its days (and
    /// days older than [`KEPT_DAYS`] dropped).
    pub fn folded(&self, now: jiff::Timestamp) -> Ledger {
        let mut ledger = self.clone();
        if let Some(open) = &mut ledger.open
            && now > open.at
        {
            let mut from = open.at;
            while from < now {
                let day = from.to_zoned(jiff::tz::TimeZone::UTC).date();
                let next = day
                    .tomorrow()
                    .ok()
                    .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
                    .map(|z| z.timestamp())
                    .unwrap_or(now);
                let until = next.min(now);
                let seconds = until.duration_since(from).as_secs_f64();
                let entry = ledger.days.entry(day.to_string()).or_default();
                *entry = entry.plus(Hours::of(open.amount, seconds));
                from = until;
            }
            open.at = now;
        }
        let oldest = first_day(now, KEPT_DAYS);
        ledger.days.retain(|day, _| day.as_str() >= oldest.as_str());
        ledger
    }

    /// The ledger after recording that `amount` is asleep from `now` on.
    pub fn record(&self, now: jiff::Timestamp, amount: Amount) -> Ledger {
        let mut ledger = self.folded(now);
        ledger.since.get_or_insert(now);
        ledger.open = (!amount.is_zero()).then_some(Open { at: now, amount });
        ledger
    }

    /// Totals of today and the `days - 1` UTC days before it, as of `now`.
    pub fn window(&self, now: jiff::Timestamp, days: i64) -> Hours {
        let folded = self.folded(now);
        let first = first_day(now, days);
        folded
            .days
            .iter()
            .filter(|(day, _)| day.as_str() >= first.as_str())
            .fold(Hours::default(), |sum, (_, h)| sum.plus(*h))
    }

    /// Each of today and the `days - 1` days before it, oldest first, as of `now`.
    pub fn daily(&self, now: jiff::Timestamp, days: i64) -> Vec<(String, Hours)> {
        let folded = self.folded(now);
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        (0..days)
            .rev()
            .filter_map(|back| today.checked_sub(jiff::Span::new().days(back)).ok())
            .map(|day| {
                let key = day.to_string();
                let hours = folded.days.get(&key).copied().unwrap_or_default();
                (key, hours)
            })
            .collect()
    }
}

/// The UTC date `days - 1` days before `now`'s.
fn first_day(now: jiff::Timestamp, days: i64) -> String {
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    today
        .checked_sub(jiff::Span::new().days((days - 1).max(0)))
        .unwrap_or(today)
        .to_string()
}

/// A Kubernetes quantity (`100m`, `0.5`, `1Gi`, `512M`, `1e3`) as a number
/// of its unit; `None` for text that is not one.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => GIB,
        "Ti" => GIB * 1024.0,
        "Pi" => GIB * 1024.0 * 1024.0,
        "Ei" => GIB * 1024.0 * 1024.0 * 1024.0,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().ok()?;
            10f64.powi(power)
        }
        _ => return None,
    };
    let value = number * factor;
    (value.is_finite() && value >= 0.0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("a time")
    }

    fn amount(pods: u64) -> Amount {
        Amount {
            pods,
            cpu_millis: pods * 250,
            memory_bytes: pods * 512 * 1024 * 1024,
        }
    }

    /// A scripted week: asleep every night 19:00-07:00 and all weekend.
    #[test]
    fn a_scripted_week_of_sleeps_and_wakes_adds_up_exactly() {
        let mut ledger = Ledger::default();
        // Mon 2026-11-30 .. Sun 2026-12-06; 4 pods asleep each night,
        // Fri 19:00 to Mon 07:00 as well.
        for day in ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"] {
            ledger = ledger.record(at(&format!("{day}T19:00:00Z")), amount(4));
            let next = jiff::civil::Date::strptime("%Y-%m-%d", day)
                .unwrap()
                .tomorrow()
                .unwrap();
            ledger = ledger.record(at(&format!("{next}T07:00:00Z")), Amount::default());
        }
        ledger = ledger.record(at("2026-12-04T19:00:00Z"), amount(4));
        ledger = ledger.record(at("2026-12-07T07:00:00Z"), Amount::default());
        let now = at("2026-12-07T12:00:00Z");
        // 4 nights of 12 h and a weekend of 60 h: 108 h × 4 pods.
        let week = ledger.window(now, 8);
        assert_eq!(week.pods, 432.0);
        assert_eq!(week.cpu, 108.0);
        assert_eq!(week.memory_gib, 216.0);
        let daily = ledger.daily(now, 8);
        assert_eq!(daily.len(), 8);
        assert_eq!(
            daily[0],
            ("2026-11-30".to_owned(), Hours::of(amount(4), 5.0 * 3600.0))
        );
        // Saturday: the whole day.
        assert_eq!(daily[5].1.pods, 96.0);
        // Today: midnight to 07:00.
        assert_eq!(daily[7].1.pods, 28.0);
        // The last 7 days leave out Monday's 5 h.
        assert_eq!(ledger.window(now, 7).pods, 432.0 - 20.0);
    }

    #[test]
    fn what_is_asleep_now_counts_up_to_the_moment_read() {
        let ledger = Ledger::default().record(at("2026-12-07T10:00:00Z"), amount(2));
        assert_eq!(ledger.window(at("2026-12-07T10:30:00Z"), 7).pods, 1.0);
        assert_eq!(ledger.window(at("2026-12-07T12:00:00Z"), 7).pods, 4.0);
        let text = ledger.text();
        let annotations = BTreeMap::from([(SAVINGS_ANNOTATION.to_owned(), text)]);
        assert_eq!(Ledger::read(&annotations).unwrap(), ledger);
    }

    #[test]
    fn days_older_than_the_kept_ones_are_dropped() {
        let ledger = Ledger::default()
            .record(at("2026-10-01T00:00:00Z"), amount(1))
            .record(at("2026-12-07T00:00:00Z"), Amount::default());
        assert_eq!(ledger.days.len(), KEPT_DAYS as usize - 1);
        assert_eq!(ledger.days.keys().next().unwrap(), "2026-11-07");
        assert_eq!(ledger.since, Some(at("2026-10-01T00:00:00Z")));
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(quantity("100m"), Some(0.1));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("1Gi"), Some(GIB));
        assert_eq!(quantity("512M"), Some(512e6));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("1.5Ki"), Some(1536.0));
        assert_eq!(quantity("lots"), None);
        assert_eq!(quantity("1Xi"), None);
    }

    proptest! {
        #[test]
        fn any_quantity_text_is_a_number_or_none_never_a_panic(text in "\\PC{0,20}") {
            let _ = quantity(&text);
        }

        #[test]
        fn any_ledger_text_is_a_ledger_or_an_error_never_a_panic(text in "\\PC{0,200}") {
            let annotations = BTreeMap::from([(SAVINGS_ANNOTATION.to_owned(), text)]);
            if let Ok(ledger) = Ledger::read(&annotations) {
                let _ = ledger.window(jiff::Timestamp::now(), 30);
            }
        }

        #[test]
        fn hours_asleep_are_the_amount_times_the_time_however_it_is_cut(
            cuts in proptest::collection::vec(1i64..200_000, 1..20),
        ) {
            let start = at("2026-12-01T00:00:00Z");
            let mut ledger = Ledger::default().record(start, amount(1));
            let mut t = start;
            for cut in &cuts {
                t = t.checked_add(jiff::SignedDuration::from_secs(*cut)).unwrap();
                ledger = ledger.record(t, amount(1));
            }
            let seconds = t.duration_since(start).as_secs_f64();
            let total: f64 = ledger.days.values().map(|h| h.pods).sum();
            let days_kept = ledger.days.len() as i64;
            if days_kept < KEPT_DAYS - 1 {
                prop_assert!((total - seconds / 3600.0).abs() < 1e-6, "{total} vs {}", seconds / 3600.0);
            }
        }
    }
}
