//! Environments deleted after a long idle, as Okteto does, for clusters
//! that fill with environments nobody uses: opted into per namespace or by
//! the controller's default, warned about first, never a namespace that
//! carries [`KEEP_KEYS`].

use std::collections::BTreeMap;

use super::BadValue;

/// On a namespace: delete the environment after this long without
/// activity (`14d`); `never` opts one out of the controller's default
/// (`--delete-after-idle`).
pub const DELETE_AFTER_IDLE_ANNOTATION: &str = "kdev.dev/delete-after-idle";
/// On a namespace, as an annotation or a label: any value but "false"
/// keeps it, however long idle.
pub const KEEP_KEYS: [&str; 1] = ["kdev.dev/keep"];
/// On a namespace: when it is to be deleted, written with the warning
/// (RFC 3339); removed when activity starts the clock again.
pub const DELETE_AT_ANNOTATION: &str = "kdev.dev/delete-at";

/// How long an environment may be idle before it is deleted, from its
/// namespace's annotation or the controller's default; `None`: never.
pub fn delete_after(
    ns_annotations: &BTreeMap<String, String>,
    default: Option<jiff::SignedDuration>,
) -> Result<Option<jiff::SignedDuration>, BadValue> {
    let Some(raw) = ns_annotations.get(DELETE_AFTER_IDLE_ANNOTATION) else {
        return Ok(default);
    };
    let raw = raw.trim();
    if raw == "never" {
        return Ok(None);
    }
    match parse_days(raw) {
        Some(after) if after.is_positive() => Ok(Some(after)),
        _ => Err(BadValue {
            key: DELETE_AFTER_IDLE_ANNOTATION,
            value: raw.chars().take(100).collect(),
            expected: "a positive duration (14d, 336h) or \"never\"",
        }),
    }
}

/// A duration that may count days (`14d`, a day being 24 hours), or any
/// duration [`crate::duration::parse`] reads.
pub fn parse_days(text: &str) -> Option<jiff::SignedDuration> {
    let text = text.trim();
    if let Some(days) = text.strip_suffix('d')
        && let Ok(days) = days.parse::<i64>()
    {
        return days
            .checked_mul(86_400)
            .map(jiff::SignedDuration::from_secs)
            .filter(|d| !d.is_negative());
    }
    crate::duration::parse(text)
        .ok()
        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
}

/// Why the namespace is kept whatever its idle time, if it is.
pub fn kept(
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Option<String> {
    let keeps = |values: &BTreeMap<String, String>| {
        KEEP_KEYS.into_iter().find(|key| {
            values
                .get(*key)
                .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"))
        })
    };
    keeps(annotations)
        .map(|key| format!("annotation {key}"))
        .or_else(|| keeps(labels).map(|key| format!("label {key}")))
}

/// What the rule asks of an environment now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Not idle long enough to warn: look again then.
    WarnAt(jiff::Timestamp),
    /// Warn now that it will be deleted at this time (and record it).
    Warn { delete_at: jiff::Timestamp },
    /// Warned; to be deleted then.
    Warned { delete_at: jiff::Timestamp },
    /// Activity since the warning: remove it, the clock starts again.
    Withdraw,
    /// Warned, and the time has come.
    Delete,
}

/// The rule: an environment whose last activity is `last` is deleted
/// `after` later, but never before a warning `warning` earlier; activity
/// after the warning withdraws it.
pub fn deletion_decision(
    last: jiff::Timestamp,
    after: jiff::SignedDuration,
    warning: jiff::SignedDuration,
    delete_at: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Deletion {
    let due = last.checked_add(after).unwrap_or(jiff::Timestamp::MAX);
    match delete_at {
        Some(at) if due > at => Deletion::Withdraw,
        Some(at) if now >= at => Deletion::Delete,
        Some(at) => Deletion::Warned { delete_at: at },
        None => {
            let warn_at = due.checked_sub(warning).unwrap_or(due);
            if now < warn_at {
                Deletion::WarnAt(warn_at)
            } else {
                // The whole warning period, however late it is given.
                let earliest = now.checked_add(warning).unwrap_or(jiff::Timestamp::MAX);
                Deletion::Warn {
                    delete_at: due.max(earliest),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }
    fn days(n: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(24 * n)
    }

    #[test]
    fn warned_first_then_deleted_and_activity_withdraws_the_warning() {
        let last = at("2026-11-01T00:00:00Z");
        let (after, warning) = (days(14), days(3));
        assert_eq!(
            deletion_decision(last, after, warning, None, at("2026-11-10T00:00:00Z")),
            Deletion::WarnAt(at("2026-11-12T00:00:00Z"))
        );
        let warned = deletion_decision(last, after, warning, None, at("2026-11-12T00:00:00Z"));
        assert_eq!(
            warned,
            Deletion::Warn {
                delete_at: at("2026-11-15T00:00:00Z")
            }
        );
        let delete_at = Some(at("2026-11-15T00:00:00Z"));
        assert_eq!(
            deletion_decision(last, after, warning, delete_at, at("2026-11-14T00:00:00Z")),
            Deletion::Warned {
                delete_at: at("2026-11-15T00:00:00Z")
            }
        );
        assert_eq!(
            deletion_decision(last, after, warning, delete_at, at("2026-11-15T00:00:00Z")),
            Deletion::Delete
        );
        let active = at("2026-11-13T00:00:00Z");
        assert_eq!(
            deletion_decision(
                active,
                after,
                warning,
                delete_at,
                at("2026-11-14T00:00:00Z")
            ),
            Deletion::Withdraw
        );
    }

    #[test]
    fn a_warning_given_late_still_gives_its_whole_period() {
        // A controller that was down (or a rule just set) on an environment
        // idle for a month.
        let decided = deletion_decision(
            at("2026-10-01T00:00:00Z"),
            days(14),
            days(3),
            None,
            at("2026-11-20T00:00:00Z"),
        );
        assert_eq!(
            decided,
            Deletion::Warn {
                delete_at: at("2026-11-23T00:00:00Z")
            }
        );
    }

    #[test]
    fn days_durations_never_and_keep() {
        let annotations =
            |v: &str| BTreeMap::from([(DELETE_AFTER_IDLE_ANNOTATION.to_owned(), v.to_owned())]);
        assert_eq!(
            delete_after(&annotations("14d"), None).unwrap(),
            Some(days(14))
        );
        assert_eq!(
            delete_after(&annotations("36h"), None).unwrap(),
            Some(jiff::SignedDuration::from_hours(36))
        );
        assert_eq!(
            delete_after(&annotations("never"), Some(days(1))).unwrap(),
            None
        );
        assert_eq!(
            delete_after(&BTreeMap::new(), Some(days(1))).unwrap(),
            Some(days(1))
        );
        let err = delete_after(&annotations("soon"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(DELETE_AFTER_IDLE_ANNOTATION) && err.contains("14d"),
            "{err}"
        );
        assert!(delete_after(&annotations("0d"), None).is_err());
        let keep = BTreeMap::from([("kdev.dev/keep".to_owned(), "yes".to_owned())]);
        assert_eq!(
            kept(&keep, &BTreeMap::new()).as_deref(),
            Some("annotation kdev.dev/keep")
        );
        assert_eq!(
            kept(&BTreeMap::new(), &keep).as_deref(),
            Some("label kdev.dev/keep")
        );
        let not = BTreeMap::from([("kdev.dev/keep".to_owned(), "False".to_owned())]);
        assert_eq!(kept(&not, &BTreeMap::new()), None);
    }

    proptest! {
        #[test]
        fn any_annotation_text_is_a_duration_or_an_error_never_a_panic(text in "\\PC{0,30}") {
            let annotations = BTreeMap::from([(DELETE_AFTER_IDLE_ANNOTATION.to_owned(), text)]);
            let _ = delete_after(&annotations, None);
        }

        #[test]
        fn nothing_is_deleted_without_a_warning_at_least_its_period_before(
            idle_days in 0i64..60, after_days in 1i64..30, warn_days in 0i64..10, extra in 0i64..20,
        ) {
            let now = at("2026-12-01T00:00:00Z");
            let last = now.checked_sub(days(idle_days)).unwrap();
            let first = deletion_decision(last, days(after_days), days(warn_days), None, now);
            prop_assert!(first != Deletion::Delete);
            if let Deletion::Warn { delete_at } = first {
                prop_assert!(delete_at >= now.checked_add(days(warn_days)).unwrap());
                let later = now.checked_add(days(extra)).unwrap();
                let next = deletion_decision(last, days(after_days), days(warn_days), Some(delete_at), later);
                prop_assert_eq!(next == Deletion::Delete, later >= delete_at);
            }
        }
    }
}
