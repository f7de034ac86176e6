//! The local command never outlives kdev.
//!
//! `kdev swap` does not start the command itself: it starts
//! `kdev __exec-child --parent PID -- COMMAND…`, which asks the kernel to
//! SIGKILL it when its parent dies (`PR_SET_PDEATHSIG`), checks that the
//! parent is still there (it may have died before the request), and then
//! replaces itself with COMMAND. The death signal survives `execve`, so the
//! command is killed the moment kdev dies, even by `kill -9`: after the
//! reaper restores the Deployment, the local copy is not still running beside
//! it. Doing this in a separate exec keeps the crate free of `unsafe` (a
//! `pre_exec` hook would need it).
//!
//! The kernel ties the death signal to the *thread* that forked the child.
//! kdev starts the command from the thread that runs `main`'s `block_on`,
//! which lives as long as the process.
//!
//! Only the command itself is covered: processes it starts in turn get their
//! own parent. Stdin, stdout, stderr and the process group are inherited
//! unchanged, so an interactive command keeps the terminal.

use std::ffi::CString;
use std::process::ExitCode;

use nix::sys::signal::Signal;

/// Exit code when COMMAND cannot be started, as shells use.
const CANNOT_START: u8 = 127;

/// The command line that starts `command` tied to this process.
pub fn command(command: &[String]) -> anyhow::Result<tokio::process::Command> {
    use anyhow::Context as _;
    let kdev = std::env::current_exe().context("failed to find kdev's own executable")?;
    let mut wrapped = tokio::process::Command::new(kdev);
    wrapped
        .arg("__exec-child")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--")
        .args(command);
    Ok(wrapped)
}

/// `kdev __exec-child`: becomes `command`, dying with `parent`. Returns only
/// when that fails.
pub fn exec(
    parent: i32,
    map_user: Option<(u32, u32)>,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|err| anyhow::anyhow!("failed to tie the command to kdev's life: {err}"))?;
    if nix::unistd::getppid().as_raw() != parent {
        // kdev died before the request took effect: do not start at all.
        return Ok(ExitCode::from(CANNOT_START));
    }
    if let Some((uid, gid)) = map_user {
        // Inside the network view: root of the view's namespace is the
        // real user; this namespace makes the command that user again,
        // holding no capability over the view.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(|err| {
            anyhow::anyhow!("failed to enter the command's user namespace: {err}")
        })?;
        crate::netview::helper::map_user(uid, 0, gid, 0)?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|err| anyhow::anyhow!("failed to tie the command to kdev's life: {err}"))?;
        if nix::unistd::getppid().as_raw() != parent {
            return Ok(ExitCode::from(CANNOT_START));
        }
    }
    let args: Result<Vec<CString>, _> =
        command.iter().map(|a| CString::new(a.as_bytes())).collect();
    let Ok(args) = args else {
        eprintln!(
            "kdev: failed to start {:?}: an argument holds a NUL byte",
            command[0]
        );
        return Ok(ExitCode::from(CANNOT_START));
    };
    let Some(program) = args.first() else {
        eprintln!("kdev: no command to start");
        return Ok(ExitCode::from(CANNOT_START));
    };
    // The network view's helper reads its signals from a descriptor, with
    // them blocked; the command starts with none blocked, as from a shell.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // execvp returns only on failure.
    let Err(err) = nix::unistd::execvp(program, &args);
    eprintln!("kdev: failed to start {:?}: {}", command[0], err.desc());
    Ok(ExitCode::from(CANNOT_START))
}
