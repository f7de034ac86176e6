//! Finding and stopping a local cluster's processes by the folder they run from.
//!
//! Every component kwokctl starts names a file in the cluster's folder on its
//! command line (data dir, certificates, kubeconfig), so "processes whose
//! command line mentions the folder" is exactly the cluster's processes.
//!
//! Kept as a dozen lines over `/proc` rather than a process crate (sysinfo,
//! procfs): the one question asked is "whose cmdline mentions this path".

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The processes whose command line mentions `dir`, other than this one.
pub fn pids_under(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                cmdline.contains(&needle)
            })
        })
        .collect()
}

/// Stops every process under `dir`: SIGTERM, then SIGKILL after 5 s.
/// Returns how many there were. (Processes that are not this one's children
/// give no event to wait on, so their exit is checked every 100 ms.)
pub async fn kill_under(dir: &Path) -> usize {
    let pids = pids_under(dir);
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !pids_under(dir).is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in pids_under(dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    pids.len()
}
