//! Durations on the command line: `90s`, `2m`, `1h30m`, `500ms`, `1.5s`.
//!
//! jiff's "friendly" duration format reads Go's duration syntax (what
//! kubectl's flags take) and more (`1h 30m`, `PT90S`), and reports overflow
//! as an error rather than panicking, which the hand-written parser did not.

use std::time::Duration;

use jiff::SignedDuration;

/// Parses a duration flag; negative, unitless or out-of-range values are errors.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("invalid duration {text:?}: {why}; use a number with a unit, like 30s, 2m or 1h30m")
    };
    let trimmed = text.trim();
    // jiff reads a bare "0" as zero; kubectl's flags want a unit.
    if trimmed.is_empty() || trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("no unit"));
    }
    let signed: SignedDuration = trimmed.parse().map_err(|err| bad(&format!("{err}")))?;
    Duration::try_from(signed).map_err(|_| bad("it is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "10", "s", "10x", "ten seconds", "-5s", "0"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// Regression: `--since 99999999999999999999h` panicked in
    /// `Duration::from_secs_f64`.
    #[test]
    fn an_enormous_duration_is_an_error_not_a_panic() {
        let err = parse_duration("99999999999999999999h").expect_err("out of range");
        assert!(err.contains("invalid duration"), "{err}");
    }

    proptest! {
        #[test]
        fn never_panics(text in any::<String>()) {
            let _ = parse_duration(&text);
        }

        #[test]
        fn never_panics_on_duration_shaped_text(text in "[0-9.]{0,30}(ns|us|ms|s|m|h|d)?([0-9.]{0,25}(ms|s|m|h))?") {
            let _ = parse_duration(&text);
        }
    }
}
