//! The session's folder on this machine (`$KDEV_ROOT`): the container's
//! ConfigMap and Secret files, written 0700 and removed at the end.
//!
//! # Expected flow
//! Before anything is written into a folder kdev makes, a record
//! `$KDEV_HOME/swap-sessions/<session>.json` names the folder and the kdev
//! process that owns it (pid and start time). A normal end removes the
//! folder, then the record.
//!
//! # Guarantees
//! - A folder whose owner died without ending (`kill -9`, a crash, a power
//!   cut) is removed by the next kdev command that runs [`sweep_orphans`]
//!   (every command a person runs does) and by `kdev sweep`.
//! - A folder the user named with `--mount` that existed before is never
//!   removed; only what kdev created is.
//!
//! # Assumptions
//! - Owners are told apart by pid and start time, so a reused pid does not
//!   keep a dead session's files alive.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::host::{ProcessId, kdev_home};

/// The record beside a session folder.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    owner: ProcessId,
    root: PathBuf,
}

fn records_dir() -> PathBuf {
    kdev_home().join("swap-sessions")
}

/// The folder volumes are written to; removed on drop if kdev made it.
pub struct MountRoot {
    pub path: PathBuf,
    /// The record to remove with the folder (`None` when kdev does not own it).
    record: Option<PathBuf>,
}

impl MountRoot {
    /// Makes the folder (private, 0700), recording it first when kdev owns it.
    pub fn create(chosen: Option<PathBuf>, session: &str) -> anyhow::Result<Self> {
        let (path, owned) = match chosen {
            Some(path) => {
                let owned = !path.exists();
                (path, owned)
            }
            None => (
                std::env::temp_dir().join(format!("kdev-swap-{session}")),
                true,
            ),
        };
        let record = if owned {
            Some(write_record(session, &path)?)
        } else {
            None
        };
        crate::host::make_private_dir(&path)?;
        Ok(Self { path, record })
    }
}

impl Drop for MountRoot {
    fn drop(&mut self) {
        if let Some(record) = &self.record {
            let _ = std::fs::remove_dir_all(&self.path);
            let _ = std::fs::remove_file(record);
        }
    }
}

fn write_record(session: &str, root: &Path) -> anyhow::Result<PathBuf> {
    let dir = records_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let owner = ProcessId::this().context("failed to read this process's start time from /proc")?;
    let path = dir.join(format!("{session}.json"));
    let record = Record {
        owner,
        root: std::path::absolute(root).unwrap_or_else(|_| root.to_owned()),
    };
    let text = serde_json::to_string(&record).context("failed to encode the session record")?;
    std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// Removes the folders (and records) of sessions whose kdev is gone.
/// Returns the folders removed. Never fails: a folder that cannot be read or
/// removed now is tried again next time.
pub fn sweep_orphans() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(records_dir()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(record) = std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice::<Record>(&text).ok())
        else {
            // Unreadable: a record being written right now, or garbage. Leave it.
            continue;
        };
        if record.owner.is_alive() {
            continue;
        }
        if std::fs::remove_dir_all(&record.root).is_ok() || !record.root.exists() {
            let _ = std::fs::remove_file(&path);
            removed.push(record.root);
        }
    }
    removed
}
