//! Who and where kdev runs, for Lease holders and leader identities.

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// `user@host`, as telepresence and kubectl's audit logs name people.
pub fn user_at_host() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{}", hostname())
}

/// Where kdev keeps its local state: `$KDEV_HOME`, else `~/.cache/kdev`.
pub fn kdev_home() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("KDEV_HOME") {
        return std::path::PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    std::path::PathBuf::from(home).join(".cache").join("kdev")
}

/// A process as it was when seen: its id and its start time (clock ticks
/// since boot, field 22 of `/proc/PID/stat`), so a reused id is not taken
/// for the same process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start: u64,
}

impl ProcessId {
    /// This process.
    pub fn this() -> Option<Self> {
        let pid = std::process::id() as i32;
        Some(Self {
            pid,
            start: start_time(pid)?,
        })
    }

    /// True while that very process runs.
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_is_not() {
        let me = ProcessId::this().expect("/proc is readable");
        assert!(me.is_alive());
        let other = ProcessId {
            start: me.start + 1,
            ..me
        };
        assert!(!other.is_alive());
    }

    #[test]
    fn start_time_is_read_after_a_name_with_parentheses() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 10";
        assert_eq!(parse_start_time(stat), Some(777));
        assert_eq!(parse_start_time("garbage"), None);
    }

    proptest::proptest! {
        #[test]
        fn stat_lines_never_panic(line in proptest::prelude::any::<String>()) {
            let _ = parse_start_time(&line);
        }
    }
}
