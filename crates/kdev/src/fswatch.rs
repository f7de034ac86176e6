//! The one file watch: folders and files watched recursively, changes
//! debounced into batches, ignored paths left out. `kdev test --watch` uses
//! it; a command that restarts on save would too.
//!
//! The watching itself is the `notify` crate (inotify here, FSEvents and
//! ReadDirectoryChangesW elsewhere) behind `notify-debouncer-full`, which
//! folds an editor's write-to-temp-then-rename into one change of the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// What is never worth a rerun: version control, build output, kdev's own
/// results and editors' swap files.
pub const DEFAULT_IGNORES: &[&str] = &[".git", "target", ".kdev", "*.swp", "*.swx", "*~", "4913"];

/// A running watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
    batches: mpsc::UnboundedReceiver<Result<Vec<PathBuf>, String>>,
    ignore: GlobSet,
    /// The watched roots, canonical.
    pub roots: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("failed to watch {path}: {cause}")]
    Path { path: String, cause: String },
    #[error("bad ignore pattern {pattern:?}: {cause}")]
    Pattern { pattern: String, cause: String },
    #[error("failed to start watching files: {0}")]
    Start(String),
}

impl Watch {
    /// Watches `paths` (each a file or a folder, watched with everything
    /// below it); changes within `debounce` of each other come as one batch.
    /// `ignore` holds globs, as [`Ignore::matches`] reads them.
    pub fn new(
        paths: &[PathBuf],
        ignore: &[String],
        debounce: Duration,
    ) -> Result<Watch, WatchError> {
        let ignore = ignore_set(ignore)?;
        let (tx, batches) = mpsc::unbounded_channel();
        let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
            let batch = match result {
                Ok(events) => Ok(events
                    .into_iter()
                    // Reading a file is not changing it.
                    .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                    .flat_map(|e| e.event.paths.clone())
                    .collect()),
                Err(errors) => Err(errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")),
            };
            // The receiver gone means the watch is being dropped.
            let _ = tx.send(batch);
        })
        .map_err(|e| WatchError::Start(e.to_string()))?;
        let mut roots = Vec::new();
        for path in paths {
            let root = path.canonicalize().map_err(|e| WatchError::Path {
                path: path.display().to_string(),
                cause: e.to_string(),
            })?;
            debouncer
                .watch(&root, RecursiveMode::Recursive)
                .map_err(|e| WatchError::Path {
                    path: path.display().to_string(),
                    cause: e.to_string(),
                })?;
            roots.push(root);
        }
        Ok(Watch {
            _debouncer: debouncer,
            batches,
            ignore,
            roots,
        })
    }

    /// The next batch of changed paths that are not ignored (canonical
    /// where they still exist). `Err` when the watch itself failed.
    pub async fn changed(&mut self) -> Result<Vec<PathBuf>, WatchError> {
        loop {
            let batch = self
                .batches
                .recv()
                .await
                .ok_or_else(|| WatchError::Start("the file watcher stopped".into()))?
                .map_err(WatchError::Start)?;
            let mut kept: Vec<PathBuf> = batch
                .into_iter()
                .filter(|p| !ignored(&self.ignore, p, &self.roots))
                .collect();
            kept.sort();
            kept.dedup();
            if !kept.is_empty() {
                return Ok(kept);
            }
        }
    }
}

fn ignore_set(patterns: &[String]) -> Result<GlobSet, WatchError> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| WatchError::Pattern {
            pattern: pattern.clone(),
            cause: e.to_string(),
        })?;
        set.add(glob);
    }
    set.build().map_err(|e| WatchError::Pattern {
        pattern: patterns.join(", "),
        cause: e.to_string(),
    })
}

/// Whether `path` is ignored: a pattern matches the path relative to the
/// watched root it is under (`src/gen/*.rs`), or any one of its components
/// (`target`, `*.swp`), as `.gitignore` patterns without a slash do.
fn ignored(set: &GlobSet, path: &Path, roots: &[PathBuf]) -> bool {
    if set.is_empty() {
        return false;
    }
    let relative = roots
        .iter()
        .find_map(|root| path.strip_prefix(root).ok())
        .unwrap_or(path);
    set.is_match(relative)
        || relative
            .components()
            .any(|c| set.is_match(Path::new(c.as_os_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> GlobSet {
        ignore_set(&patterns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_pattern_without_a_slash_matches_any_component() {
        let roots = [PathBuf::from("/w")];
        let s = set(&["target", "*.swp"]);
        assert!(ignored(&s, Path::new("/w/target/debug/x"), &roots));
        assert!(ignored(&s, Path::new("/w/src/.main.rs.swp"), &roots));
        assert!(!ignored(&s, Path::new("/w/src/main.rs"), &roots));
        // Above the root does not count: a project that lives under a
        // folder named target is still watched.
        assert!(!ignored(
            &s,
            Path::new("/target/w/src/main.rs"),
            &[PathBuf::from("/target/w")]
        ));
    }

    #[test]
    fn a_pattern_with_a_slash_matches_the_path_below_the_root() {
        let roots = [PathBuf::from("/w")];
        let s = set(&["src/gen/*.rs"]);
        assert!(ignored(&s, Path::new("/w/src/gen/a.rs"), &roots));
        assert!(!ignored(&s, Path::new("/w/src/a.rs"), &roots));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = ignore_set(&["a[".to_owned()]).expect_err("an error");
        assert!(err.to_string().contains("\"a[\""), "{err}");
    }

    #[tokio::test]
    async fn a_change_comes_as_one_batch_and_ignored_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".kdev")).unwrap();
        let ignores: Vec<String> = DEFAULT_IGNORES.iter().map(|s| (*s).to_owned()).collect();
        let mut watch = Watch::new(
            &[dir.path().to_owned()],
            &ignores,
            Duration::from_millis(100),
        )
        .unwrap();
        std::fs::write(dir.path().join(".kdev/results.json"), "{}").unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a: 1").unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a: 2").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("a batch within 10 s")
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(batch, vec![root.join("a.yaml")]);
    }
}
