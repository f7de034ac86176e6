//! `kdev swap --watch PATH… [--build CMD]`: the local command restarted
//! when its files change.
//!
//! A batch of changes ([`crate::fswatch`], debounced) runs `--build` first,
//! while the running command keeps serving; only a build that succeeds
//! stops the old process (SIGTERM, then SIGKILL after 10 s) and starts the
//! new one. A failed build says so and leaves the old one running. A
//! command that exits by itself is started again at the next change; the
//! session goes on until a signal ends it or it is lost.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::child;
use crate::fswatch;

/// `--watch`, `--watch-ignore`, `--build`, resolved.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub paths: Vec<PathBuf>,
    pub ignore: Vec<String>,
    /// Run through `sh -c`, in the current directory.
    pub build: Option<String>,
}

/// How long changes are gathered into one batch.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The watch of a session.
pub struct Reload {
    watch: fswatch::Watch,
    build: Option<String>,
}

/// A change that calls for a restart.
pub struct Ready {
    pub changed: Vec<PathBuf>,
    /// How long `--build` took.
    pub built_in: Option<Duration>,
}

impl Reload {
    pub fn start(config: &Config) -> anyhow::Result<Reload> {
        let mut ignore: Vec<String> = fswatch::DEFAULT_IGNORES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        ignore.extend(config.ignore.iter().cloned());
        let watch =
            fswatch::Watch::new(&config.paths, &ignore, DEBOUNCE).map_err(crate::error::usage)?;
        Ok(Reload {
            watch,
            build: config.build.clone(),
        })
    }

    /// Waits for the next batch of changes whose build (if any) succeeds.
    pub async fn next(&mut self) -> anyhow::Result<Ready> {
        loop {
            let changed = self.watch.changed().await.map_err(anyhow::Error::msg)?;
            let shown: Vec<String> = changed
                .iter()
                .take(3)
                .map(|p| p.display().to_string())
                .collect();
            let more = changed.len().saturating_sub(3);
            eprintln!(
                "kdev: changed: {}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
            let Some(build) = &self.build else {
                return Ok(Ready {
                    changed,
                    built_in: None,
                });
            };
            match run_build(build).await? {
                Ok(took) => {
                    return Ok(Ready {
                        changed,
                        built_in: Some(took),
                    });
                }
                Err(status) => eprintln!(
                    "kdev: the build failed ({status}); the running command keeps serving until a change builds"
                ),
            }
        }
    }
}

/// Runs `--build` (tied to kdev's life, like the command); `Err` with its
/// status when it fails.
pub async fn run_build(build: &str) -> anyhow::Result<Result<Duration, std::process::ExitStatus>> {
    let started = Instant::now();
    eprintln!("kdev: building: {build}");
    let status = child::command(&["sh".to_owned(), "-c".to_owned(), build.to_owned()])?
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("failed to run the build {build:?}: {e}"))?;
    if status.success() {
        let took = started.elapsed();
        eprintln!("kdev: built in {:.2}s", took.as_secs_f64());
        Ok(Ok(took))
    } else {
        Ok(Err(status))
    }
}
