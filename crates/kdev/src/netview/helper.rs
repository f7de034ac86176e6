//! `kdev __netview`: the process inside the command's namespaces.
//!
//! Started by [`super::sandbox`], it
//! 1. ties itself to kdev's life (`PR_SET_PDEATHSIG`) and connects to kdev's
//!    control socket (a path in a private folder; a unix socket path works
//!    across network namespaces);
//! 2. enters a new user, network and mount namespace, mapping the user it
//!    runs as to root inside, which holds every capability over the new
//!    network namespace and nothing outside it;
//! 3. brings up the loopback, routes every IPv4 address through it, and has
//!    the kernel's NAT (`iptables`, nf_tables backend) send every TCP
//!    connection to the capture socket and every UDP datagram to port 53 to
//!    the DNS socket, except those of sockets marked [`MARK`] (kdev's own, for
//!    reaching the command's listeners);
//! 4. bind-mounts the view's `resolv.conf` (and an `nsswitch.conf` whose
//!    hosts line is `files dns`, so a host's systemd-resolved or mDNS module
//!    does not answer instead) over the host's, in its own mount namespace;
//!    When the kernel allows, each SYN the command sends waits in a
//!    netfilter queue for kdev's verdict ([`super::queue`]);
//! 5. makes the capture and DNS sockets (and the queue's netlink socket)
//!    and sends them to kdev;
//! 6. starts the command through `kdev __exec-child --map-user`, which enters
//!    one more user namespace mapping root back to the real user, so the
//!    command runs as itself with no capability;
//! 7. then, until the command exits: answers kdev's requests for marked TCP
//!    sockets, and passes on signals that a process sent (a terminal's
//!    Ctrl-C reaches the command by itself).
//!
//! It exits with the command's status (128 + N for a signal). Nothing here
//! outlives it: the namespaces go with their last process.
//!
//! It runs before any thread exists (the kernel refuses a new user namespace
//! to a threaded process) and uses no async runtime.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;

use super::fdpass;

/// The mark on kdev's own sockets inside: the NAT leaves them alone ("KD").
pub const MARK: u32 = 0x4b44;
/// Where every TCP connection of the command lands (a port the command,
/// holding no capability, cannot bind).
pub const CAPTURE_PORT: u16 = 1;
/// Where every DNS datagram of the command lands.
pub const DNS_PORT: u16 = 53;

/// Message tags on the control socket.
pub mod tag {
    /// helper → kdev: ready; carries the capture and DNS sockets, and the
    /// netfilter queue's socket when there is one (else the text says why
    /// not).
    pub const READY: u8 = b'O';
    /// helper → kdev: set-up failed; the text says why.
    pub const FAILED: u8 = b'E';
    /// kdev → helper: a marked TCP socket, please; helper → kdev: here it is.
    pub const SOCKET: u8 = b'S';
    /// kdev → helper: a socket diagnostics socket (which ports the command
    /// listens on), please; helper → kdev: here it is.
    pub const DIAG: u8 = b'D';
}

/// What `kdev __netview` is told.
#[derive(Debug, Clone)]
pub struct Args {
    pub parent: i32,
    pub control: PathBuf,
    pub resolv_conf: PathBuf,
    pub nsswitch_conf: Option<PathBuf>,
    pub command: Vec<String>,
}

pub fn main(args: Args) -> ExitCode {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || nix::unistd::getppid().as_raw() != args.parent
    {
        return ExitCode::from(1);
    }
    let control = match UnixStream::connect(&args.control) {
        Ok(control) => control,
        Err(err) => {
            eprintln!("kdev: the network view's helper could not reach kdev: {err}");
            return ExitCode::from(1);
        }
    };
    let sockets = match set_up(&args) {
        Ok(sockets) => sockets,
        Err(err) => {
            let _ = fdpass::send(&control, tag::FAILED, &format!("{err:#}"), &[]);
            return ExitCode::from(1);
        }
    };
    // Signals are read from a descriptor from here on; std's spawn clears
    // the mask in the command.
    let mut mask = SigSet::empty();
    for signal in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        mask.add(*signal);
    }
    let signals = match mask.thread_block().and_then(|()| SignalFd::new(&mask)) {
        Ok(fd) => fd,
        Err(err) => {
            let _ = fdpass::send(
                &control,
                tag::FAILED,
                &format!("failed to take signals: {err}"),
                &[],
            );
            return ExitCode::from(1);
        }
    };
    let child = match start_command(&args.command) {
        Ok(child) => child,
        Err(err) => {
            let _ = fdpass::send(&control, tag::FAILED, &format!("{err:#}"), &[]);
            return ExitCode::from(127);
        }
    };
    let mut fds = vec![sockets.capture.as_fd(), sockets.dns.as_fd()];
    let no_queue = match &sockets.queue {
        Ok(queue) => {
            fds.push(queue.as_fd());
            String::new()
        }
        Err(why) => why.clone(),
    };
    if fdpass::send(&control, tag::READY, &no_queue, &fds).is_err() {
        return ExitCode::from(1);
    }
    drop(sockets);
    serve(&control, &signals, child)
}

/// Signals a process may send the helper that the command gets in turn.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

struct Sockets {
    capture: std::net::TcpListener,
    dns: std::net::UdpSocket,
    /// The netfilter queue's socket, or why there is none.
    queue: Result<std::os::fd::OwnedFd, String>,
}

fn set_up(args: &Args) -> anyhow::Result<Sockets> {
    use anyhow::Context as _;
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS,
    )
    .map_err(|err| {
        anyhow::anyhow!(
            "this machine does not let a user make a user and network namespace ({err}); \
             use --network host (on Debian and Ubuntu, sysctl kernel.unprivileged_userns_clone=1 \
             or AppArmor's kernel.apparmor_restrict_unprivileged_userns=0 allow it)"
        )
    })?;
    map_user(0, uid, 0, gid)?;
    // Kept across the namespace change, but set again rather than trusted.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    for step in [
        &["ip", "link", "set", "lo", "up"][..],
        &[
            "ip",
            "route",
            "add",
            "default",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ],
    ] {
        run(step)?;
    }
    let iptables = ["iptables-nft", "iptables"]
        .into_iter()
        .find(|name| on_path(name))
        .context("the network view needs iptables (the nf_tables backend, `iptables-nft`) on PATH; install it or use --network host")?;
    // Kernel NAT inside: kdev's own (marked) sockets pass; DNS datagrams go
    // to the DNS socket, every TCP connection to the capture socket.
    for rule in [
        format!("-t nat -A OUTPUT -m mark --mark {MARK:#x} -j RETURN"),
        format!("-t nat -A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports {DNS_PORT}"),
        format!("-t nat -A OUTPUT -p tcp -j REDIRECT --to-ports {CAPTURE_PORT}"),
    ] {
        let mut step = vec![iptables];
        step.extend(rule.split_whitespace());
        run(&step).context("the network view's NAT rules need the kernel's nf_tables NAT (modules nf_nat and nft_redir, or xt_REDIRECT); load them or use --network host")?;
    }
    let queue = hold_syns(iptables);
    mount_view(args)?;
    let capture = std::net::TcpListener::bind(("127.0.0.1", CAPTURE_PORT))
        .context("failed to listen for the command's connections")?;
    let dns = std::net::UdpSocket::bind(("127.0.0.1", DNS_PORT))
        .context("failed to listen for the command's DNS queries")?;
    Ok(Sockets {
        capture,
        dns,
        queue,
    })
}

/// Has the kernel hold each SYN of the command in a netfilter queue until
/// kdev's verdict ([`super::queue`]), and answers the SYNs kdev marks
/// refused with a reset, as the far end did. Returns the
/// netlink socket for the queue, or why there is none: then every
/// connection is completed by the capture socket and a refused one is
/// reset after its handshake.
fn hold_syns(iptables: &str) -> Result<std::os::fd::OwnedFd, String> {
    use super::queue::{MARK_REFUSED, QUEUE};
    let rules = [
        // Answered here, not captured.
        format!("-t nat -I OUTPUT 1 -m mark --mark {MARK_REFUSED:#x} -j RETURN"),
        format!(
            "-A OUTPUT -p tcp -m mark --mark {MARK_REFUSED:#x} -j REJECT --reject-with tcp-reset"
        ),
        // Last: with the answers in place. --queue-bypass passes SYNs on
        // while nothing reads the queue.
        format!(
            "-t mangle -A OUTPUT -p tcp --syn -m mark ! --mark {MARK:#x} -j NFQUEUE --queue-num {QUEUE} --queue-bypass"
        ),
    ];
    for rule in &rules {
        let mut step = vec![iptables];
        step.extend(rule.split_whitespace());
        run(&step).map_err(|err| format!("{err:#}"))?;
    }
    rustix::net::socket(
        rustix::net::AddressFamily::NETLINK,
        rustix::net::SocketType::RAW,
        Some(rustix::net::netlink::NETFILTER),
    )
    .map_err(|err| format!("failed to open a netfilter socket: {err}"))
}

/// Maps `inside_uid` to `outside_uid` (and the same for groups) in the
/// user namespace just entered. Only one id each: all an unprivileged user
/// may map.
pub fn map_user(
    inside_uid: u32,
    outside_uid: u32,
    inside_gid: u32,
    outside_gid: u32,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write("/proc/self/setgroups", "deny")
        .context("failed to write /proc/self/setgroups")?;
    std::fs::write(
        "/proc/self/uid_map",
        format!("{inside_uid} {outside_uid} 1"),
    )
    .context("failed to map the user into the namespace")?;
    std::fs::write(
        "/proc/self/gid_map",
        format!("{inside_gid} {outside_gid} 1"),
    )
    .context("failed to map the group into the namespace")?;
    Ok(())
}

fn mount_view(args: &Args) -> anyhow::Result<()> {
    use nix::mount::{MsFlags, mount};
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|err| anyhow::anyhow!("failed to make the mount namespace private: {err}"))?;
    let mut binds = vec![(args.resolv_conf.as_path(), Path::new("/etc/resolv.conf"))];
    if let Some(nsswitch) = &args.nsswitch_conf {
        binds.push((nsswitch.as_path(), Path::new("/etc/nsswitch.conf")));
    }
    for (source, target) in binds {
        // A symlink (systemd-resolved's stub) is followed to the file it names.
        if std::fs::metadata(target).is_err() {
            anyhow::bail!(
                "{} does not exist on this machine, so the network view cannot put its own in place; use --network host",
                target.display()
            );
        }
        mount(Some(source), target, none, MsFlags::MS_BIND, none).map_err(|err| {
            anyhow::anyhow!(
                "failed to put {} in place of {}: {err}",
                source.display(),
                target.display()
            )
        })?;
    }
    Ok(())
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| dir.join(name).is_file())
}

/// Runs one set-up command; its output is part of the error when it fails.
fn run(step: &[&str]) -> anyhow::Result<()> {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    path.push(":/usr/sbin:/sbin");
    let output = std::process::Command::new(step[0])
        .args(&step[1..])
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| anyhow::anyhow!("failed to run `{}`: {err}", step.join(" ")))?;
    if !output.status.success() {
        anyhow::bail!(
            "`{}` failed ({}): {}",
            step.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn start_command(command: &[String]) -> anyhow::Result<std::process::Child> {
    use anyhow::Context as _;
    let kdev = std::env::current_exe().context("failed to find kdev's own executable")?;
    // Root inside this namespace is the real user outside; the command's
    // own namespace maps it back.
    let real = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let real_gid = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    let outside = |map: &str| map.split_whitespace().nth(1).unwrap_or("0").to_owned();
    std::process::Command::new(kdev)
        .arg("__exec-child")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--map-user")
        .arg(format!("{}:{}", outside(&real), outside(&real_gid)))
        .arg("--")
        .args(command)
        .spawn()
        .with_context(|| format!("failed to start {:?}", command.first()))
}

fn serve(control: &UnixStream, signals: &SignalFd, mut child: std::process::Child) -> ExitCode {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut control_open = true;
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if control_open {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let control_ready = control_open
            && fds[1].revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            });
        let signal_ready = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(fds);
        if signal_ready && let Ok(Some(info)) = signals.read_signal() {
            let signal = Signal::try_from(info.ssi_signo as i32).ok();
            // A terminal's signals come from the kernel (no sending
            // process); the command, in the same process group, has them.
            let sent_by_a_process = info.ssi_pid != 0;
            if let Some(signal) = signal
                && signal != Signal::SIGCHLD
                && sent_by_a_process
            {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return exit_code(status);
        }
        if control_ready {
            match fdpass::recv(control) {
                Ok(Some(message)) if matches!(message.tag, tag::SOCKET | tag::DIAG) => {
                    let reply: std::io::Result<std::os::fd::OwnedFd> = if message.tag == tag::SOCKET
                    {
                        marked_socket().map(Into::into)
                    } else {
                        diag_socket()
                    };
                    let sent = match &reply {
                        Ok(socket) => fdpass::send(control, message.tag, "", &[socket.as_fd()]),
                        Err(err) => fdpass::send(control, tag::FAILED, &err.to_string(), &[]),
                    };
                    if sent.is_err() {
                        control_open = false;
                    }
                }
                Ok(Some(_)) => {}
                // kdev went away; its death signal ends this process.
                Ok(None) | Err(_) => control_open = false,
            }
        }
    }
}

/// A socket diagnostics socket in this namespace ([`super::ports::Diag`]).
fn diag_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    Ok(rustix::net::socket(
        rustix::net::AddressFamily::NETLINK,
        rustix::net::SocketType::DGRAM,
        Some(rustix::net::netlink::SOCK_DIAG),
    )?)
}

/// A TCP socket in this namespace that the NAT leaves alone.
fn marked_socket() -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &MARK)
        .map_err(std::io::Error::from)?;
    Ok(socket)
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from(128u8.saturating_add(signal as u8)),
        _ => ExitCode::from(1),
    }
}
