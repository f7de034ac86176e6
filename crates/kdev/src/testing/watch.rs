//! `kdev test --watch`: which tests a batch of changed files calls for.
//! Pure; the runner watches ([`crate::fswatch`]) and reruns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a batch of changes calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rerun {
    /// Every test (and the suite's setup again): a file outside every
    /// test's folder changed (a suite file, a script tests share), or a
    /// watched path.
    pub all: bool,
    /// `--run-controller`'s process is restarted first: a `--watch-path`
    /// (the controller's source) changed.
    pub restart: bool,
    /// The ids of the tests whose folder holds a changed file.
    pub tests: BTreeSet<String>,
}

impl Rerun {
    pub fn is_empty(&self) -> bool {
        !self.all && self.tests.is_empty()
    }
}

/// `tests` are (id, folder) pairs, `extra` the `--watch-path` roots, all
/// canonical, as the changed paths are.
pub fn rerun(tests: &[(String, PathBuf)], extra: &[PathBuf], changed: &[PathBuf]) -> Rerun {
    let mut out = Rerun::default();
    for path in changed {
        if extra.iter().any(|root| path.starts_with(root)) {
            out.all = true;
            out.restart = true;
            continue;
        }
        let mut inside = false;
        for (id, dir) in tests {
            if path.starts_with(dir) {
                out.tests.insert(id.clone());
                inside = true;
            }
        }
        if !inside {
            out.all = true;
        }
    }
    out
}

/// A test folder as the changed paths name it: canonical where it exists.
pub fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tests() -> Vec<(String, PathBuf)> {
        vec![
            ("a#a".into(), PathBuf::from("/s/tests/a")),
            ("b#b".into(), PathBuf::from("/s/tests/b")),
        ]
    }

    #[test]
    fn a_file_in_a_tests_folder_reruns_that_test() {
        let r = rerun(&tests(), &[], &[PathBuf::from("/s/tests/a/01-assert.yaml")]);
        assert_eq!(r.tests, BTreeSet::from(["a#a".to_owned()]));
        assert!(!r.all && !r.restart);
    }

    #[test]
    fn a_folder_named_like_another_is_not_inside_it() {
        // `/s/tests/ab` does not start with the component `/s/tests/a`.
        let r = rerun(&tests(), &[], &[PathBuf::from("/s/tests/ab/00-x.yaml")]);
        assert!(r.all, "outside every test: {r:?}");
        assert!(r.tests.is_empty());
    }

    #[test]
    fn a_shared_file_reruns_everything_and_a_watched_path_restarts_the_controller() {
        let shared = rerun(&tests(), &[], &[PathBuf::from("/s/kuttl-test.yaml")]);
        assert!(shared.all && !shared.restart);
        let source = rerun(
            &tests(),
            &[PathBuf::from("/src")],
            &[PathBuf::from("/src/main.rs")],
        );
        assert!(source.all && source.restart);
    }

    #[test]
    fn several_changes_add_up() {
        let r = rerun(
            &tests(),
            &[],
            &[
                PathBuf::from("/s/tests/a/00-install.yaml"),
                PathBuf::from("/s/tests/b/00-install.yaml"),
            ],
        );
        assert_eq!(r.tests.len(), 2);
        assert!(!r.all);
        assert!(rerun(&tests(), &[], &[]).is_empty());
    }
}
