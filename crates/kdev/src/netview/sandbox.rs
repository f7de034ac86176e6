//! kdev's side of the command's namespaces: starts [`super::helper`],
//! receives the sockets it made inside, and asks it for more.

use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use super::fdpass;
use super::helper::tag;
use super::resolv;

/// What the command's network view holds.
#[derive(Debug, Clone)]
pub struct View {
    /// The `resolv.conf` the command reads.
    pub resolv: resolv::ResolvConf,
}

/// The command's namespaces, while its helper runs.
pub struct Sandbox {
    /// Every TCP connection the command makes arrives here (its original
    /// destination in `SO_ORIGINAL_DST`).
    pub capture: tokio::net::TcpListener,
    /// Every DNS datagram the command sends arrives here.
    pub dns: Arc<tokio::net::UdpSocket>,
    /// Connects from inside, past the NAT.
    pub inside: Inside,
    /// The netfilter queue's netlink socket, where the kernel holds the
    /// command's SYNs; or why the kernel could not.
    pub queue: Result<std::os::fd::OwnedFd, String>,
}

/// Connections into the command's namespaces (cheap to clone).
#[derive(Clone)]
pub struct Inside {
    /// The helper's pid.
    pub pid: u32,
    control: Arc<Mutex<UnixStream>>,
}

/// How long the helper may take to set the namespaces up.
const SET_UP_TIMEOUT: Duration = Duration::from_secs(20);

impl Sandbox {
    /// Starts `command` in its own network view. Its files (a resolv.conf,
    /// an nsswitch.conf, the control socket) go in `dir`, a private folder
    /// the caller owns and removes (a swap's session folder, which the crash
    /// sweep removes too). `configure` sets what the command inherits (its
    /// environment, its stdio) before the start. Returns the sandbox and the
    /// helper process, whose exit status is the command's.
    pub async fn start(
        command: &[String],
        view: &View,
        dir: &Path,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> anyhow::Result<(Sandbox, tokio::process::Child)> {
        let kdev = std::env::current_exe().context("failed to find kdev's own executable")?;
        Self::start_with(&kdev, command, view, dir, configure).await
    }

    /// [`Sandbox::start`] with the kdev executable named (a test's binary is
    /// not kdev).
    pub async fn start_with(
        kdev: &Path,
        command: &[String],
        view: &View,
        dir: &Path,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> anyhow::Result<(Sandbox, tokio::process::Child)> {
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(&resolv_conf, view.resolv.render())
            .with_context(|| format!("failed to write {}", resolv_conf.display()))?;
        let nsswitch_conf = match std::fs::read_to_string("/etc/nsswitch.conf") {
            Ok(host) => {
                let path = dir.join("nsswitch.conf");
                std::fs::write(&path, resolv::nsswitch(&host))
                    .with_context(|| format!("failed to write {}", path.display()))?;
                Some(path)
            }
            Err(_) => None,
        };
        let control_path = dir.join("control.sock");
        let _ = std::fs::remove_file(&control_path);
        let listener = UnixListener::bind(&control_path)
            .with_context(|| format!("failed to listen on {}", control_path.display()))?;
        // The socket belongs to the folder's owner: the user the helper runs
        // as (kdev's own, unless root starts it for another).
        let owner =
            std::fs::metadata(dir).with_context(|| format!("failed to read {}", dir.display()))?;
        std::os::unix::fs::chown(
            &control_path,
            Some(std::os::unix::fs::MetadataExt::uid(&owner)),
            Some(std::os::unix::fs::MetadataExt::gid(&owner)),
        )
        .with_context(|| {
            format!(
                "failed to hand {} to the folder's owner",
                control_path.display()
            )
        })?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;

        let mut helper = tokio::process::Command::new(kdev);
        helper
            .arg("__netview")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--control")
            .arg(&control_path)
            .arg("--resolv-conf")
            .arg(&resolv_conf);
        if let Some(path) = &nsswitch_conf {
            helper.arg("--nsswitch-conf").arg(path);
        }
        helper.arg("--").args(command);
        configure(&mut helper);
        let mut child = helper
            .spawn()
            .context("failed to start the network view's helper")?;

        let handshake = async {
            let (stream, _) = listener.accept().await?;
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            tokio::task::spawn_blocking(move || fdpass::recv(&stream).map(|m| (m, stream)))
                .await
                .map_err(std::io::Error::other)?
        };
        let (message, stream) = tokio::select! {
            done = tokio::time::timeout(SET_UP_TIMEOUT, handshake) => done
                .context("the network view's helper did not set up within 20 s")?
                .context("failed to hear from the network view's helper")?,
            status = child.wait() => {
                anyhow::bail!("the network view's helper exited before it was set up ({})", status?);
            }
        };
        let Some(mut message) = message else {
            anyhow::bail!("the network view's helper closed its socket before it was set up");
        };
        if message.tag == tag::FAILED {
            let _ = child.wait().await;
            anyhow::bail!("the network view could not be set up: {}", message.text);
        }
        if message.tag != tag::READY || !(2..=3).contains(&message.fds.len()) {
            anyhow::bail!("the network view's helper sent an unexpected answer");
        }
        let queue = if message.fds.len() == 3 {
            Ok(message.fds.pop().expect("three descriptors"))
        } else {
            Err(message.text.clone())
        };
        let dns = std::net::UdpSocket::from(message.fds.pop().expect("two descriptors"));
        let capture = std::net::TcpListener::from(message.fds.pop().expect("two descriptors"));
        capture.set_nonblocking(true)?;
        dns.set_nonblocking(true)?;
        let pid = child.id().context("the network view's helper is gone")?;
        Ok((
            Sandbox {
                capture: tokio::net::TcpListener::from_std(capture)?,
                dns: Arc::new(tokio::net::UdpSocket::from_std(dns)?),
                inside: Inside {
                    pid,
                    control: Arc::new(Mutex::new(stream)),
                },
                queue,
            },
            child,
        ))
    }
}

impl Inside {
    /// Connects to `to` from inside the namespaces, past the NAT: how the
    /// laptop reaches the command's listeners.
    pub async fn connect_inside(&self, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = std::net::TcpStream::from(self.ask(tag::SOCKET).await?);
        socket.set_nonblocking(true)?;
        tokio::net::TcpSocket::from_std_stream(socket)
            .connect(to)
            .await
    }

    /// What tells which ports the command listens on: the socket
    /// diagnostics of its namespace, or, where the kernel has none, its
    /// `/proc` listing.
    pub async fn listeners(&self) -> Listeners {
        match self.ask(tag::DIAG).await.and_then(super::ports::Diag::new) {
            Ok(diag) => Listeners::Diag(diag),
            Err(err) => {
                tracing::debug!(error = %err, "no socket diagnostics in the network view: reading /proc for its listening ports");
                Listeners::Proc(self.pid)
            }
        }
    }

    /// Asks the helper for a socket it makes inside (`tag` says which).
    async fn ask(&self, what: u8) -> std::io::Result<std::os::fd::OwnedFd> {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || {
            let control = control
                .lock()
                .map_err(|_| std::io::Error::other("control socket poisoned"))?;
            fdpass::send(&control, what, "", &[])?;
            let Some(mut reply) = fdpass::recv(&control)? else {
                return Err(std::io::Error::other("the network view's helper is gone"));
            };
            match reply.fds.pop() {
                Some(fd) if reply.tag == what => Ok(fd),
                _ => Err(std::io::Error::other(format!(
                    "the network view's helper made no socket: {}",
                    reply.text
                ))),
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Which ports the command listens on, asked each time.
pub enum Listeners {
    Diag(super::ports::Diag),
    /// The helper's pid: `/proc/<pid>/net/tcp` lists the sockets inside.
    Proc(u32),
}

impl Listeners {
    /// The command's listening ports (not the capture socket's).
    pub fn ports(&mut self) -> std::io::Result<std::collections::BTreeSet<u16>> {
        let mut ports = match self {
            Listeners::Diag(diag) => diag.listening()?,
            Listeners::Proc(pid) => {
                let mut ports = std::collections::BTreeSet::new();
                let read = |file: &str| {
                    std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/net/{file}")))
                };
                ports.extend(super::ports::listening(&read("tcp")?));
                // Absent where the kernel has no IPv6.
                if let Ok(text) = read("tcp6") {
                    ports.extend(super::ports::listening(&text));
                }
                ports
            }
        };
        ports.remove(&super::helper::CAPTURE_PORT);
        Ok(ports)
    }

    /// How long to wait before asking again: a `/proc` read costs a
    /// hundred times a dump, so it is asked less often.
    pub fn interval(&self) -> Duration {
        match self {
            Listeners::Diag(_) => Duration::from_millis(25),
            Listeners::Proc(_) => Duration::from_millis(250),
        }
    }
}
