//! What a run tells: a line per test as it ends, every failure in full at
//! the end, a JUnit XML file carrying the real error (quick-junit), a JSON
//! summary (`-o json`), and the results file `--rerun-failed` reads.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};

use super::run::{Outcome, Status};

/// The line printed when a test ends.
pub fn line(o: &Outcome) -> String {
    let mark = match o.status {
        Status::Passed => "PASS",
        Status::Failed => "FAIL",
        Status::Skipped => "SKIP",
    };
    format!(
        "{mark} {} ({}, {})",
        o.name,
        o.format.name(),
        secs_tenths(o.duration)
    )
}

/// Every failure of every failed test, with its report.
pub fn failures(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes.iter().filter(|o| o.status == Status::Failed) {
        let _ = writeln!(
            out,
            "\n=== FAIL {} ({}) in namespace {}",
            o.name, o.source, o.namespace
        );
        for f in &o.failures {
            let _ = writeln!(out, "{f}");
        }
        if !o.report.is_empty() {
            out.push_str(&o.report);
            if !o.report.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// `kdev test: 28 passed, 2 failed, 1 skipped in 12.3s`.
pub fn summary(outcomes: &[Outcome], wall: Duration) -> String {
    let count = |s| outcomes.iter().filter(|o| o.status == s).count();
    format!(
        "kdev test: {} passed, {} failed, {} skipped in {}",
        count(Status::Passed),
        count(Status::Failed),
        count(Status::Skipped),
        secs_tenths(wall)
    )
}

fn secs_tenths(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// JUnit XML: one suite, one case per test; a failure's message is its
/// first failure, its body every failure and the report.
pub fn junit(outcomes: &[Outcome], wall: Duration) -> Result<String, String> {
    let mut suite = TestSuite::new("kdev test");
    for o in outcomes {
        let status = match o.status {
            Status::Passed => TestCaseStatus::success(),
            Status::Skipped => TestCaseStatus::skipped(),
            Status::Failed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                if let Some(first) = o.failures.first() {
                    s.set_message(
                        first
                            .to_string()
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                let body: Vec<String> = o.failures.iter().map(ToString::to_string).collect();
                s.set_description(body.join("\n"));
                s
            }
        };
        let mut case = TestCase::new(o.name.clone(), status);
        case.set_classname(o.source.file.display().to_string());
        case.set_time(o.duration);
        if !o.report.is_empty() {
            case.set_system_out(o.report.clone());
        }
        suite.add_test_case(case);
    }
    suite.set_time(wall);
    let mut report = Report::new("kdev test");
    report.set_time(wall);
    report.add_test_suite(suite);
    report
        .to_string()
        .map_err(|e| format!("cannot write the JUnit report: {e}"))
}

/// `-o json`.
#[derive(Serialize)]
pub struct Json<'a> {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub tests: Vec<JsonTest<'a>>,
}

#[derive(Serialize)]
pub struct JsonTest<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub file: String,
    pub format: &'static str,
    pub status: Status,
    pub seconds: f64,
    pub namespace: &'a str,
    pub failures: Vec<String>,
}

pub fn json(outcomes: &[Outcome], wall: Duration) -> String {
    let count = |s| outcomes.iter().filter(|o| o.status == s).count();
    let doc = Json {
        passed: count(Status::Passed),
        failed: count(Status::Failed),
        skipped: count(Status::Skipped),
        seconds: wall.as_secs_f64(),
        tests: outcomes
            .iter()
            .map(|o| JsonTest {
                name: &o.name,
                id: &o.id,
                file: o.source.to_string(),
                format: o.format.name(),
                status: o.status,
                seconds: o.duration.as_secs_f64(),
                namespace: &o.namespace,
                failures: o.failures.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// What `--rerun-failed` reads: the ids of the last run's failures.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastRun {
    pub failed: BTreeSet<String>,
    pub passed: BTreeSet<String>,
}

impl LastRun {
    pub fn of(outcomes: &[Outcome]) -> LastRun {
        let ids = |s| {
            outcomes
                .iter()
                .filter(|o| o.status == s)
                .map(|o| o.id.clone())
                .collect()
        };
        LastRun {
            failed: ids(Status::Failed),
            passed: ids(Status::Passed),
        }
    }

    pub fn read(path: &Path) -> Result<LastRun, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--rerun-failed: cannot read the last run's results at {}: {e} (run kdev test once first)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "--rerun-failed: {} is not a kdev test results file: {e}",
                path.display()
            )
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::model::{Format, Source};
    use crate::testing::run::{Failure, Teardown};

    fn outcome(name: &str, status: Status) -> Outcome {
        Outcome {
            id: format!("dir#{name}"),
            name: name.into(),
            source: Source {
                file: "dir".into(),
                line: 1,
            },
            format: Format::Kuttl,
            status,
            duration: Duration::from_millis(1500),
            failures: if status == Status::Failed {
                vec![Failure {
                    step: "00-install".into(),
                    op: "assert",
                    at: Source {
                        file: "dir/00-assert.yaml".into(),
                        line: 3,
                    },
                    message: "not satisfied within 30s:\n\nConfigMap/a: not found <&>".into(),
                }]
            } else {
                Vec::new()
            },
            report: "--- events in ns (0)\n".into(),
            namespace: "ns".into(),
            teardown: Teardown::default(),
        }
    }

    #[test]
    fn junit_carries_the_real_error() {
        let xml = junit(
            &[
                outcome("a", Status::Passed),
                outcome("b", Status::Failed),
                outcome("c", Status::Skipped),
            ],
            Duration::from_secs(3),
        )
        .unwrap();
        assert!(
            xml.contains("tests=\"3\"") && xml.contains("failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "step 00-install (assert at dir/00-assert.yaml:3): not satisfied within 30s:"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("ConfigMap/a: not found &lt;&amp;&gt;"),
            "{xml}"
        );
        assert!(xml.contains("<skipped"), "{xml}");
    }

    #[test]
    fn json_and_last_run() {
        let outcomes = [outcome("a", Status::Passed), outcome("b", Status::Failed)];
        let j: serde_json::Value =
            serde_json::from_str(&json(&outcomes, Duration::from_secs(2))).unwrap();
        assert_eq!(j["failed"], 1);
        assert_eq!(j["tests"][1]["status"], "failed");
        assert_eq!(j["tests"][1]["file"], "dir:1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".kdev/test-results.json");
        LastRun::of(&outcomes).write(&path).unwrap();
        let back = LastRun::read(&path).unwrap();
        assert_eq!(back.failed.into_iter().collect::<Vec<_>>(), ["dir#b"]);
        assert!(
            LastRun::read(&dir.path().join("none"))
                .unwrap_err()
                .contains("run kdev test once first")
        );
    }

    #[test]
    fn lines_and_summary() {
        let outcomes = [outcome("a", Status::Passed), outcome("b", Status::Failed)];
        assert_eq!(line(&outcomes[0]), "PASS a (kuttl, 1.5s)");
        assert_eq!(
            summary(&outcomes, Duration::from_secs(2)),
            "kdev test: 1 passed, 1 failed, 0 skipped in 2.0s"
        );
        let text = failures(&outcomes);
        assert!(
            text.contains("=== FAIL b (dir:1) in namespace ns")
                && text.contains("--- events in ns"),
            "{text}"
        );
    }
}
