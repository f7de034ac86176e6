//! The schedule grammar environments sleep and wake by: kube-downscaler's
//! time specifications, read as kube-downscaler reads them, plus windows
//! that cross midnight.
//!
//! A specification is `always`, `never`, or a comma-separated list of
//! windows; it holds at an instant when any window does:
//! - weekly: `Mon-Fri 09:00-19:00 Europe/Berlin` (days `Mon`..`Sun`, any
//!   case; a range may wrap, `Sun-Thu`; a single day `Sat` means `Sat-Sat`;
//!   times `HH:MM`, the end may be `24:00`; the zone is an IANA name). The
//!   window runs from the start, inclusive, to the end, exclusive, on each
//!   listed day. When the end is before the start the window crosses
//!   midnight: `Fri 22:00-06:00` runs from Friday 22:00 to Saturday 06:00
//!   (kube-downscaler never matches such a window; kdev's reading is the
//!   only one that means anything). An end equal to the start is empty.
//! - absolute: `2026-12-24T18:00:00+01:00-2027-01-02T08:00:00+01:00`, both
//!   ends inclusive, as in kube-downscaler.
//!
//! Everything here is pure: the instant to judge is always an argument.

use std::fmt;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan as _};

/// A parsed time specification.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Always,
    Never,
    Windows(Vec<Window>),
}

/// One window of a [`Spec`].
#[derive(Clone, Debug, PartialEq)]
pub enum Window {
    Weekly {
        /// First and last listed day; `first > last` wraps over Sunday.
        first: Weekday,
        last: Weekday,
        /// Minutes after local midnight; `end` may be 1440 (`24:00`).
        start: u16,
        end: u16,
        zone: Zone,
    },
    /// Both ends inclusive.
    Absolute { from: Timestamp, to: Timestamp },
}

/// A time zone with the name it was written as.
#[derive(Clone, Debug)]
pub struct Zone {
    pub name: String,
    pub tz: TimeZone,
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Why a specification cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    /// The part of the specification that is wrong.
    pub part: String,
    pub problem: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {} (expected \"always\", \"never\", or windows like \"Mon-Fri 09:00-19:00 Europe/Berlin\" \
             or \"2026-12-24T18:00:00+01:00-2027-01-02T08:00:00+01:00\", separated by commas)",
            self.part, self.problem
        )
    }
}

impl std::error::Error for ScheduleError {}

fn error(part: &str, problem: impl Into<String>) -> ScheduleError {
    ScheduleError {
        part: part.to_owned(),
        problem: problem.into(),
    }
}

/// The longest specification read; annotations are small, and a schedule is
/// a handful of windows.
const MAX_LEN: usize = 4096;

/// Reads a specification.
pub fn parse(text: &str) -> Result<Spec, ScheduleError> {
    let trimmed = text.trim();
    if trimmed.len() > MAX_LEN {
        return Err(error(
            &trimmed.chars().take(40).collect::<String>(),
            format!("longer than {MAX_LEN} bytes"),
        ));
    }
    if trimmed.eq_ignore_ascii_case("always") {
        return Ok(Spec::Always);
    }
    if trimmed.eq_ignore_ascii_case("never") {
        return Ok(Spec::Never);
    }
    let windows = trimmed
        .split(',')
        .map(|part| parse_window(part.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Spec::Windows(windows))
}

fn parse_window(part: &str) -> Result<Window, ScheduleError> {
    if part.is_empty() {
        return Err(error(part, "an empty window"));
    }
    if part.as_bytes()[0].is_ascii_digit() {
        return parse_absolute(part);
    }
    let fields: Vec<&str> = part.split_whitespace().collect();
    let [days, times, zone] = fields[..] else {
        return Err(error(
            part,
            "a weekly window has three parts: days, times and a time zone",
        ));
    };
    let (first, last) = match days.split_once('-') {
        Some((a, b)) => (weekday(part, a)?, weekday(part, b)?),
        None => {
            let day = weekday(part, days)?;
            (day, day)
        }
    };
    let Some((start, end)) = times.split_once('-') else {
        return Err(error(
            part,
            format!("{times:?} is not a time range like 09:00-19:00"),
        ));
    };
    let start = minutes(part, start)?;
    let end = minutes(part, end)?;
    if start == 1440 {
        return Err(error(part, "a window cannot start at 24:00"));
    }
    let tz = TimeZone::get(zone).map_err(|_| {
        error(
            part,
            format!("unknown time zone {zone:?} (use an IANA name such as Europe/Berlin or UTC)"),
        )
    })?;
    Ok(Window::Weekly {
        first,
        last,
        start,
        end,
        zone: Zone {
            name: zone.to_owned(),
            tz,
        },
    })
}

fn weekday(part: &str, text: &str) -> Result<Weekday, ScheduleError> {
    let day = match text.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => {
            return Err(error(
                part,
                format!("{text:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"),
            ));
        }
    };
    Ok(day)
}

fn minutes(part: &str, text: &str) -> Result<u16, ScheduleError> {
    let bad = || {
        error(
            part,
            format!("{text:?} is not a time of day HH:MM (00:00 to 24:00)"),
        )
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `FROM-TO`, each `YYYY-MM-DDTHH:MM:SS±HH:MM` (25 characters).
fn parse_absolute(part: &str) -> Result<Window, ScheduleError> {
    const LEN: usize = 25;
    let bad = || {
        error(
            part,
            "an absolute window is FROM-TO, each like 2026-12-24T18:00:00+01:00",
        )
    };
    // An ASCII '-' at byte LEN makes both LEN and LEN + 1 char boundaries.
    if part.len() != 2 * LEN + 1 || part.as_bytes()[LEN] != b'-' {
        return Err(bad());
    }
    let stamp = |text: &str| -> Result<Timestamp, ScheduleError> {
        text.parse::<Timestamp>()
            .map_err(|e| error(part, format!("{text:?} is not a time with an offset: {e}")))
    };
    let from = stamp(&part[..LEN])?;
    let to = stamp(&part[LEN + 1..])?;
    if to < from {
        return Err(error(part, "the window ends before it starts"));
    }
    Ok(Window::Absolute { from, to })
}

impl Spec {
    /// Whether the specification holds at `at`.
    pub fn holds(&self, at: Timestamp) -> bool {
        match self {
            Spec::Always => true,
            Spec::Never => false,
            Spec::Windows(windows) => windows.iter().any(|w| w.holds(at)),
        }
    }

    /// The first instant after `at` where [`Spec::holds`] changes, if one
    /// comes within the next eight days (weekly windows repeat within that).
    pub fn next_change(&self, at: Timestamp) -> Option<Timestamp> {
        let Spec::Windows(windows) = self else {
            return None;
        };
        let mut edges: Vec<Timestamp> = windows.iter().flat_map(|w| w.edges(at)).collect();
        edges.retain(|edge| *edge > at);
        edges.sort();
        edges.dedup();
        let now = self.holds(at);
        edges.into_iter().find(|edge| self.holds(*edge) != now)
    }
}

impl Window {
    fn holds(&self, at: Timestamp) -> bool {
        match self {
            Window::Absolute { from, to } => *from <= at && at <= *to,
            Window::Weekly { .. } => self
                .intervals_around(at)
                .any(|(start, end)| start <= at && at < end),
        }
    }

    /// The instants around `at` where this window starts or ends.
    fn edges(&self, at: Timestamp) -> Vec<Timestamp> {
        match self {
            Window::Absolute { from, to } => {
                // The first instant after the inclusive end: the window
                // holds at `to` and no longer a nanosecond later (as
                // kube-downscaler's `start <= now <= end`), so that is when
                // the next state is due, not a second later.
                vec![
                    *from,
                    to.saturating_add(SignedDuration::from_nanos(1))
                        .unwrap_or(*to),
                ]
            }
            Window::Weekly { .. } => self
                .intervals_around(at)
                .flat_map(|(start, end)| [start, end])
                .collect(),
        }
    }

    /// The weekly window's occurrences that start from the day before `at`
    /// to eight days after it, as half-open intervals.
    fn intervals_around(&self, at: Timestamp) -> impl Iterator<Item = (Timestamp, Timestamp)> {
        let Window::Weekly {
            first,
            last,
            start,
            end,
            zone,
        } = self
        else {
            unreachable!("intervals of a weekly window")
        };
        let today = at.to_zoned(zone.tz.clone()).date();
        let (first, last, start, end, tz) = (*first, *last, *start, *end, zone.tz.clone());
        (-1..=8i64).filter_map(move |offset| {
            let day = today.checked_add(offset.days()).ok()?;
            if !listed(first, last, day.weekday()) || start == end {
                return None;
            }
            let from = instant(day, start, &tz)?;
            let to = if end > start {
                instant(day, end, &tz)?
            } else {
                instant(day.tomorrow().ok()?, end, &tz)?
            };
            Some((from, to))
        })
    }
}

/// Whether `day` is in the range `first..=last` (wrapping over Sunday).
fn listed(first: Weekday, last: Weekday, day: Weekday) -> bool {
    let (f, l, d) = (
        first.to_monday_zero_offset(),
        last.to_monday_zero_offset(),
        day.to_monday_zero_offset(),
    );
    if f <= l {
        f <= d && d <= l
    } else {
        d >= f || d <= l
    }
}

/// The instant `minutes` after local midnight of `day` (1440 is the next
/// midnight). A local time skipped by a clock change is read as the time
/// after it, and a repeated one as its first occurrence.
fn instant(day: Date, minutes: u16, tz: &TimeZone) -> Option<Timestamp> {
    let (day, minutes) = if minutes == 1440 {
        (day.tomorrow().ok()?, 0)
    } else {
        (day, minutes)
    };
    let time = day.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
    Some(time.to_zoned(tz.clone()).ok()?.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a test timestamp")
    }

    #[test]
    fn always_and_never_in_any_case() {
        assert_eq!(parse("Always"), Ok(Spec::Always));
        assert_eq!(parse(" never "), Ok(Spec::Never));
        assert!(parse("always").unwrap().holds(at("2026-12-02T10:00:00Z")));
        assert!(!parse("never").unwrap().holds(at("2026-12-02T10:00:00Z")));
    }

    #[test]
    fn a_work_week_in_a_zone() {
        let spec = parse("Mon-Fri 09:00-19:00 Asia/Tokyo").unwrap();
        // Wednesday 2026-12-02 10:00 in Tokyo is 01:00 UTC.
        assert!(spec.holds(at("2026-12-02T01:00:00Z")));
        // 19:00 Tokyo: the end is exclusive.
        assert!(!spec.holds(at("2026-12-02T10:00:00Z")));
        assert!(spec.holds(at("2026-12-02T09:59:59Z")));
        // Saturday.
        assert!(!spec.holds(at("2026-12-05T01:00:00Z")));
        assert_eq!(
            spec.next_change(at("2026-12-02T01:00:00Z")),
            Some(at("2026-12-02T10:00:00Z"))
        );
        // Friday evening → Monday 09:00 Tokyo.
        assert_eq!(
            spec.next_change(at("2026-12-04T12:00:00Z")),
            Some(at("2026-12-07T00:00:00Z"))
        );
    }

    #[test]
    fn kube_downscalers_examples_read_as_it_reads_them() {
        let spec = parse("Sat-Sun 00:00-24:00 CET,Fri-Fri 20:00-24:00 CET").unwrap();
        // Friday 2026-12-04 21:00 CET = 20:00 UTC.
        assert!(spec.holds(at("2026-12-04T20:00:00Z")));
        assert!(spec.holds(at("2026-12-05T12:00:00Z")));
        assert!(!spec.holds(at("2026-12-07T12:00:00Z")));
        // The windows join: from Friday 20:00 CET the next change is Monday 00:00 CET.
        assert_eq!(
            spec.next_change(at("2026-12-04T20:00:00Z")),
            Some(at("2026-12-06T23:00:00Z"))
        );
        let spec = parse("2019-04-01T08:00:00+00:00-2019-04-01T18:00:00+00:00").unwrap();
        assert!(
            spec.holds(at("2019-04-01T18:00:00Z")),
            "the end is inclusive"
        );
        assert!(!spec.holds(at("2019-04-01T18:00:00.000000001Z")));
        assert_eq!(
            spec.next_change(at("2019-04-01T12:00:00Z")),
            Some(at("2019-04-01T18:00:00.000000001Z")),
            "due as soon as the window no longer holds"
        );
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let spec = parse("Fri 22:00-06:00 UTC").unwrap();
        assert!(spec.holds(at("2026-12-04T23:00:00Z")));
        assert!(spec.holds(at("2026-12-05T05:59:00Z")), "Saturday morning");
        assert!(!spec.holds(at("2026-12-05T06:00:00Z")));
        assert!(!spec.holds(at("2026-12-04T05:00:00Z")), "Friday morning");
        assert_eq!(
            spec.next_change(at("2026-12-04T12:00:00Z")),
            Some(at("2026-12-04T22:00:00Z"))
        );
    }

    #[test]
    fn day_ranges_wrap_over_sunday() {
        let spec = parse("sun-thu 08:00-17:00 Asia/Jerusalem").unwrap();
        // Sunday 2026-12-06 10:00 Jerusalem = 08:00 UTC.
        assert!(spec.holds(at("2026-12-06T08:00:00Z")));
        // Friday.
        assert!(!spec.holds(at("2026-12-04T08:00:00Z")));
    }

    #[test]
    fn a_clock_change_moves_the_edge_with_the_zone() {
        let spec = parse("Mon-Sun 09:00-17:00 Europe/Berlin").unwrap();
        // 2026-03-29 is the switch to summer time: 09:00 is 07:00 UTC that day.
        assert_eq!(
            spec.next_change(at("2026-03-29T01:00:00Z")),
            Some(at("2026-03-29T07:00:00Z"))
        );
        assert_eq!(
            spec.next_change(at("2026-03-28T01:00:00Z")),
            Some(at("2026-03-28T08:00:00Z"))
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("Mon-Fry 09:00-17:00 UTC", "\"Fry\" is not a day"),
            ("Mon-Fri 9:00-17:00 UTC", "\"9:00\" is not a time of day"),
            ("Mon-Fri 09:00-17:60 UTC", "\"17:60\""),
            (
                "Mon-Fri 09:00-17:00 Mars/Olympus",
                "unknown time zone \"Mars/Olympus\"",
            ),
            ("Mon-Fri 09:00-17:00", "three parts"),
            ("Mon-Fri 24:00-17:00 UTC", "cannot start at 24:00"),
            ("Mon-Fri 09:00-17:00 UTC,", "an empty window"),
            (
                "2019-04-01T18:00:00+00:00-2019-04-01T08:00:00+00:00",
                "ends before it starts",
            ),
            ("2019-04-01-2019-04-02", "FROM-TO"),
            // Found by the property test in CI: a multi-byte character where
            // the dash belongs must be an error, not a slice inside it.
            (
                "2019-04-01T18:00:00+00:00\u{16AD0}2019-04-01T08:00:00+00",
                "FROM-TO",
            ),
            (
                "2019-04-01T18:00:00+00:0\u{e9}2019-04-01T08:00:00+00:00",
                "FROM-TO",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    proptest! {
        #[test]
        fn any_text_is_an_error_or_a_spec_never_a_panic(text in "\\PC{0,80}") {
            if let Ok(spec) = parse(&text) {
                let now = at("2026-12-02T10:00:00Z");
                let _ = spec.holds(now);
                let _ = spec.next_change(now);
            }
        }

        #[test]
        fn absolute_shapes_never_panic(text in "[0-9T:+-]{20,25}\\PC{1,2}[0-9T:+-]{20,26}") {
            let _ = parse(&text);
        }

        #[test]
        fn near_misses_never_panic(
            days in "(Mon|tue|SAT|Xyz|)(-(Fri|sun|Q))?",
            h1 in 0u16..30, m1 in 0u16..70, h2 in 0u16..30, m2 in 0u16..70,
            zone in "(UTC|Europe/Berlin|Asia/Tokyo|Nowhere/X|)",
        ) {
            let text = format!("{days} {h1:02}:{m1:02}-{h2:02}:{m2:02} {zone}");
            let _ = parse(&text);
        }

        #[test]
        fn the_next_change_is_a_real_change(
            start in 0u16..1440, end in 0u16..=1440, day in 0i64..400, minute in 0i64..1440,
        ) {
            let text = format!("Mon-Fri {:02}:{:02}-{:02}:{:02} Europe/Berlin",
                start / 60, start % 60, end / 60, end % 60);
            let spec = parse(&text).unwrap();
            let now = at("2026-01-01T00:00:00Z")
                .checked_add(SignedDuration::from_mins(day * 1440 + minute)).unwrap();
            if let Some(next) = spec.next_change(now) {
                prop_assert!(next > now);
                prop_assert_ne!(spec.holds(next), spec.holds(now));
                // A minute before it, nothing has changed yet.
                let before = next.checked_sub(SignedDuration::from_mins(1)).unwrap();
                prop_assert_eq!(spec.holds(before.max(now)), spec.holds(now));
            } else {
                prop_assert!(start == end, "only an empty window never changes: {}", text);
            }
        }
    }
}
