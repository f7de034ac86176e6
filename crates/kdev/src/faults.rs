//! Test hooks: the environment variables kdev's own tests use to inject a
//! crash at a chosen step or to fix a value in advance.
//!
//! They exist only in builds with the `test-hooks` feature, which the
//! integration tests turn on (the crate is its own dev-dependency with that
//! feature) and release builds never do. Without it, [`var`] is `None` for
//! every name, so a hook's variable set on a user's machine or in a cluster
//! changes nothing, and the compiler drops the hook's code.
//!
//! Every hook reads its variable through [`var`]; the names are listed here
//! so that one place says what a test build honours.

/// `kdev swap` kills itself after step N (1 to 10) of its start-up and end.
pub const SWAP_CRASH_AFTER: &str = "KDEV_SWAP_CRASH_AFTER";
/// `kdev swap` uses this tunnel token (64 hex digits) instead of a random
/// one, so a test's stand-in agent knows it in advance.
pub const SWAP_TOKEN: &str = "KDEV_SWAP_TOKEN";
/// A restorer kills itself after restoring a Deployment, before it deletes
/// the session's Lease.
pub const RESTORE_CRASH_AFTER_DEPLOYMENT: &str = "KDEV_RESTORE_CRASH_AFTER_DEPLOYMENT";
/// An environment's transition kills its process after its N-th write.
pub const ENVS_CRASH_AFTER: &str = "KDEV_ENVS_CRASH_AFTER";
/// `kdev sleep`, `kdev wake` and `kdev envs --savings` take this RFC 3339
/// time as now, so a test can script a week of sleeps and wakes.
pub const ENVS_NOW: &str = "KDEV_ENVS_NOW";
/// The controller's reaper returns once its caches have synced.
pub const END_REAPER_AFTER_SYNC: &str = "KDEV_FAULT_END_REAPER_AFTER_SYNC";

/// The value of a test hook's variable; always `None` outside test builds.
#[cfg(feature = "test-hooks")]
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The value of a test hook's variable; always `None` outside test builds.
#[cfg(not(feature = "test-hooks"))]
pub fn var(_name: &str) -> Option<String> {
    None
}

/// Ends this process at once with SIGKILL, as a crash would, after saying
/// where on stderr.
pub fn crash(point: &str) {
    eprintln!("kdev: crash injected after {point}");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
}

#[cfg(all(test, not(feature = "test-hooks")))]
mod tests {
    #[test]
    fn a_build_without_test_hooks_ignores_their_variables() {
        // PATH is always set; a hook reading it would see a value.
        assert_eq!(super::var("PATH"), None);
    }
}
