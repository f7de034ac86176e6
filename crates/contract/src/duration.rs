//! Durations as Go writes them (`90s`, `2m`, `1h30m`, `500ms`, `1.5h`): what
//! kubectl's flags, kuttl's and chainsaw's timeouts and kdev's annotations
//! take. The one parser kdev has for them.
//!
//! jiff's "friendly" format reads Go's syntax (and a little more: `1h 30m`,
//! `PT90S`) and reports overflow as an error instead of panicking. Two of
//! Go's rules are kept on top of it: a number needs a unit, except a bare
//! `0`; and a duration is never negative.

use std::time::Duration;

use jiff::SignedDuration;

/// Parses a Go duration; the error says what was wrong and shows the form.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("invalid duration {text:?}: {why}; use a number with a unit, like 30s, 2m or 1h30m")
    };
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    if trimmed.is_empty() || trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("no unit"));
    }
    // jiff's own message is long and speaks of its "friendly" format; the
    // user only needs to know that this is not a duration.
    let signed: SignedDuration = trimmed
        .parse()
        .map_err(|_| bad("not a duration, or out of range"))?;
    Duration::try_from(signed).map_err(|_| bad("it is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "30",
            "s",
            "10x",
            "3x",
            "ten seconds",
            "-5s",
            "1m-1s",
            "..s",
            "1e400s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// Regression: `--since 99999999999999999999h` panicked in
    /// `Duration::from_secs_f64` in the first hand-written parser.
    #[test]
    fn an_enormous_duration_is_an_error_not_a_panic() {
        let err = parse("99999999999999999999h").expect_err("out of range");
        assert!(err.contains("invalid duration"), "{err}");
    }

    proptest! {
        #[test]
        fn any_text_is_an_error_or_a_duration_never_a_panic(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn duration_shaped_text_never_panics(text in "[0-9.]{0,30}(ns|us|µs|ms|s|m|h|d|x)?([0-9.]{0,25}(ms|s|m|h))?") {
            let _ = parse(&text);
        }
    }
}
