//! The network view on this machine, without a cluster: a stand-in for the
//! agent answers the cluster's side (its DNS over TCP and one Service), so
//! what is tested is the view itself. The command runs as `nobody` (an
//! unprivileged user: the view needs no root) and as the test's user.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/static_go.rs"]
mod static_go;

use futures::future::BoxFuture;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, rdata::A};
use kdev::netview::{self, Dial, Io, Network, Routes, Sandbox, View, resolv::ResolvConf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 20), 80);
/// A pod the stand-in cannot reach (no route to it).
const GONE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 22), 80);

/// The cluster as the agent would reach it: a DNS server that knows one
/// name, and an echo Service that answers "echo:" and what it read.
#[derive(Default)]
struct StandIn {
    dialled: Mutex<Vec<SocketAddrV4>>,
    dns_streams: std::sync::atomic::AtomicUsize,
}

impl Dial for StandIn {
    fn dial(&self, to: SocketAddrV4) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> {
        self.dialled.lock().expect("the dial record").push(to);
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            match to {
                ECHO => {
                    tokio::spawn(async move {
                        let mut theirs = theirs;
                        let mut buf = [0u8; 256];
                        let n = theirs.read(&mut buf).await.unwrap_or(0);
                        let mut reply = b"echo:".to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = theirs.write_all(&reply).await;
                    });
                }
                GONE => return Err(std::io::ErrorKind::HostUnreachable.into()),
                _ => return Err(std::io::ErrorKind::ConnectionRefused.into()),
            }
            Ok(Box::new(ours) as Box<dyn Io>)
        })
    }

    fn dns(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> {
        self.dns_streams
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(dns_over_tcp(theirs));
            Ok(Box::new(ours) as Box<dyn Io>)
        })
    }
}

/// `echo.shop.svc.cluster.local` is ECHO's address; every other name does
/// not exist.
async fn dns_over_tcp(mut stream: tokio::io::DuplexStream) {
    let mut len = [0u8; 2];
    while stream.read_exact(&mut len).await.is_ok() {
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let query = Message::from_vec(&query).expect("a DNS query");
        let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
        answer.metadata.recursion_desired = query.metadata.recursion_desired;
        answer.metadata.recursion_available = true;
        answer.queries = query.queries.clone();
        let asked = query.queries[0].name().to_ascii();
        if asked == "echo.shop.svc.cluster.local." {
            if query.queries[0].query_type() == hickory_proto::rr::RecordType::A {
                answer.answers.push(Record::from_rdata(
                    query.queries[0].name().clone(),
                    5,
                    RData::A(A(*ECHO.ip())),
                ));
            }
        } else {
            answer.metadata.response_code = ResponseCode::NXDomain;
        }
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        let bytes = answer.to_vec().expect("an answer");
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// The command: reaches the laptop's loopback, the echo Service by its
/// short name, a name that does not exist; its connect() to a closed port
/// in the cluster and on the laptop is refused and one to an unreachable
/// pod hears nothing, as in a pod; then it listens for the laptop.
const SCRIPT: &str = r#"
import socket, sys, time
out = []
laptop = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
out.append("laptop=" + laptop.recv(64).decode())
echo = socket.create_connection(("echo", 80), timeout=5)
echo.sendall(b"hi")
out.append("service=" + echo.recv(64).decode())
def connect(name, address, timeout=5):
    try:
        socket.create_connection(address, timeout=timeout)
        out.append(name + "=connected")
    except TimeoutError:
        out.append(name + "=timeout")
    except OSError as err:
        out.append("%s=%s" % (name, err.errno))
connect("closed", ("10.0.0.21", 80))
connect("gone", ("10.0.0.22", 80), timeout=1)
connect("laptop-closed", ("127.0.0.1", int(sys.argv[3])))
start = time.monotonic()
try:
    socket.getaddrinfo("nothing-here", 80)
    out.append("missing=resolved")
except socket.gaierror as err:
    out.append("missing=%s in %.1fs" % (err.errno == socket.EAI_NONAME, time.monotonic() - start))
print(" ".join(out), flush=True)
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[2])))
server.listen()
print("listening", flush=True)
conn, _ = server.accept()
conn.sendall(b"from-inside:" + conn.recv(64))
conn.close()
"#;

async fn laptop_service() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("its address").port();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(b"on-the-laptop").await;
        }
    });
    (port, task)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

async fn the_command_sees_the_cluster_and_the_laptop(user: Option<u32>) {
    let (laptop_port, _laptop) = laptop_service().await;
    let inside_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    if let Some(uid) = user {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).expect("chown the folder");
    }
    let view = View {
        resolv: ResolvConf::for_pod("shop", "cluster.local", netview::VIEW_NAMESERVER),
    };
    let command: Vec<String> = ["python3", "-c", SCRIPT]
        .into_iter()
        .map(String::from)
        .chain([
            laptop_port.to_string(),
            inside_port.to_string(),
            free_port().to_string(),
        ])
        .collect();
    let (sandbox, mut helper) = Sandbox::start_with(
        Path::new(env!("CARGO_BIN_EXE_kdev")),
        &command,
        &view,
        dir.path(),
        |cmd| {
            cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true);
            if let Some(uid) = user {
                cmd.uid(uid).gid(uid);
            }
        },
    )
    .await
    .expect("the view starts");
    let stand_in = Arc::new(StandIn::default());
    let serving = netview::serve(
        sandbox,
        Network::new(
            Routes {
                cluster: vec!["10.0.0.0/24".parse().expect("a range")],
            },
            stand_in.clone(),
        ),
    );

    let stdout = helper.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the command reports within 30 s")
        .expect("read")
        .expect("a line");
    assert!(first.contains("laptop=on-the-laptop"), "{first}");
    assert!(first.contains("service=echo:hi"), "{first}");
    // ECONNREFUSED (111) at connect(), not a connection reset later; an
    // unreachable pod does not answer.
    assert!(first.contains("closed=111"), "{first}");
    assert!(first.contains("gone=timeout"), "{first}");
    assert!(first.contains("laptop-closed=111"), "{first}");
    assert!(
        first.contains("missing=True in 0."),
        "a name that does not exist fails at once: {first}"
    );
    let second = lines.next_line().await.expect("read").expect("a line");
    assert_eq!(second, "listening");

    // The laptop reaches the command's port on its own 127.0.0.1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        if let Ok(mut conn) =
            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, inside_port)).await
        {
            conn.write_all(b"knock").await.expect("write");
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).await.expect("read");
            if !reply.is_empty() {
                break String::from_utf8_lossy(&reply).into_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the laptop never reached the command's port"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply, "from-inside:knock");
    let status = helper.wait().await.expect("wait");
    assert!(
        status.success(),
        "the command's status comes back: {status}"
    );
    serving.abort();

    let dialled = stand_in.dialled.lock().expect("the dial record").clone();
    assert!(
        stand_in
            .dns_streams
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "names were asked of the cluster"
    );
    assert!(
        dialled.contains(&ECHO),
        "the Service was dialled in the cluster: {dialled:?}"
    );
    assert!(
        dialled.iter().all(|to| to.ip().octets()[0] == 10),
        "only cluster addresses went to the cluster: {dialled:?}"
    );
}

#[tokio::test]
async fn an_unprivileged_command_sees_the_cluster_and_the_laptop() {
    the_command_sees_the_cluster_and_the_laptop(Some(65534)).await;
}

#[tokio::test]
async fn the_users_command_sees_the_cluster_and_the_laptop() {
    the_command_sees_the_cluster_and_the_laptop(None).await;
}

/// `sleep 600` in a view: the sandbox and its helper.
async fn sleeping(dir: &Path) -> (Sandbox, tokio::process::Child) {
    let view = View {
        resolv: ResolvConf::for_pod("shop", "cluster.local", netview::VIEW_NAMESERVER),
    };
    let command = vec!["sleep".to_owned(), "600".to_owned()];
    Sandbox::start_with(
        Path::new(env!("CARGO_BIN_EXE_kdev")),
        &command,
        &view,
        dir,
        |cmd| {
            cmd.kill_on_drop(true);
        },
    )
    .await
    .expect("the view starts")
}

/// kill -9 of the helper (what kdev's own death brings about, through its
/// death signal) takes the command with it: nothing is left running.
#[tokio::test]
async fn the_command_dies_with_its_helper() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (sandbox, mut helper) = sleeping(dir.path()).await;
    let pid = sandbox.inside.pid;
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the helper's children");
    let command_pid: i32 = children
        .split_whitespace()
        .next()
        .expect("the command runs")
        .parse()
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    helper.wait().await.expect("wait");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{command_pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{command_pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(Instant::now() < deadline, "the command outlived its helper");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A signal a process sends the helper (kdev stopping the command) reaches
/// the command, and the command's status comes back as the helper's: a
/// `sleep` ended by SIGTERM is 143, as a shell reports it.
#[tokio::test]
async fn a_signal_to_the_helper_reaches_the_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (sandbox, mut helper) = sleeping(dir.path()).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sandbox.inside.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(5), helper.wait())
        .await
        .expect("the command ends within 5 s of SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(143), "{status}");
}

/// A statically linked Go program (`CGO_ENABLED=0`: Go's own resolver, no
/// libc, what `LD_PRELOAD` tools miss) resolves a Service by its short name
/// through the pod's search list and reaches it, and reaches the laptop's
/// loopback. Needs Go on PATH (CI has it for the control plane).
#[tokio::test]
async fn a_static_go_binary_sees_the_cluster_and_the_laptop() {
    const PROGRAM: &str = r#"package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	out := ""
	laptop, err := net.DialTimeout("tcp", "127.0.0.1:"+os.Args[1], 5*time.Second)
	if err == nil {
		b, _ := io.ReadAll(laptop)
		out += "laptop=" + string(b) + " "
	} else {
		out += "laptop=" + err.Error() + " "
	}
	addrs, err := net.LookupHost("echo")
	out += fmt.Sprintf("lookup=%v/%v ", addrs, err)
	echo, err := net.DialTimeout("tcp", "echo:80", 5*time.Second)
	if err == nil {
		echo.Write([]byte("go"))
		b := make([]byte, 64)
		n, _ := echo.Read(b)
		out += "service=" + string(b[:n])
	} else {
		out += "service=" + err.Error()
	}
	fmt.Println(out)
}
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = static_go::build(dir.path(), PROGRAM);

    let said = report_in_view(dir.path(), |laptop_port| {
        vec![
            binary.to_string_lossy().into_owned(),
            laptop_port.to_string(),
        ]
    })
    .await;
    assert!(said.contains("laptop=on-the-laptop"), "{said}");
    assert!(said.contains("lookup=[10.0.0.20]/<nil>"), "{said}");
    assert!(said.contains("service=echo:go"), "{said}");
}

/// The JVM (its own socket layer, IPv6 sockets carrying IPv4, the system
/// resolver through libc) resolves a Service by its short name and reaches
/// it, and reaches the laptop's loopback. Needs `java` (11 or later: a
/// single source file runs as is).
#[tokio::test]
async fn a_jvm_program_sees_the_cluster_and_the_laptop() {
    const PROGRAM: &str = r#"
import java.io.*;
import java.net.*;

public class Probe {
    public static void main(String[] args) throws Exception {
        StringBuilder out = new StringBuilder();
        try (Socket laptop = new Socket()) {
            laptop.connect(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 5000);
            out.append("laptop=").append(new String(laptop.getInputStream().readAllBytes())).append(' ');
        }
        out.append("lookup=").append(InetAddress.getByName("echo").getHostAddress()).append(' ');
        try (Socket echo = new Socket()) {
            echo.connect(new InetSocketAddress("echo", 80), 5000);
            echo.getOutputStream().write("jvm".getBytes());
            byte[] b = new byte[64];
            int n = echo.getInputStream().read(b);
            out.append("service=").append(new String(b, 0, n));
        }
        System.out.println(out);
    }
}
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("Probe.java");
    std::fs::write(&source, PROGRAM).expect("write the program");
    let said = report_in_view(dir.path(), |laptop_port| {
        vec![
            "java".to_owned(),
            source.to_string_lossy().into_owned(),
            laptop_port.to_string(),
        ]
    })
    .await;
    assert!(said.contains("laptop=on-the-laptop"), "{said}");
    assert!(said.contains("lookup=10.0.0.20"), "{said}");
    assert!(said.contains("service=echo:jvm"), "{said}");
}

/// Runs the command `command(laptop_port)` makes in a view of the stand-in
/// cluster beside a laptop service, and returns what it printed once it
/// exited with success.
async fn report_in_view(dir: &Path, command: impl FnOnce(u16) -> Vec<String>) -> String {
    let (laptop_port, _laptop) = laptop_service().await;
    let view = View {
        resolv: ResolvConf::for_pod("shop", "cluster.local", netview::VIEW_NAMESERVER),
    };
    let (sandbox, mut helper) = Sandbox::start_with(
        Path::new(env!("CARGO_BIN_EXE_kdev")),
        &command(laptop_port),
        &view,
        dir,
        |cmd| {
            cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true);
        },
    )
    .await
    .expect("the view starts");
    let serving = netview::serve(
        sandbox,
        Network::new(
            Routes {
                cluster: vec!["10.0.0.0/24".parse().expect("a range")],
            },
            Arc::new(StandIn::default()),
        ),
    );
    let mut stdout = helper.stdout.take().expect("stdout");
    let mut said = String::new();
    tokio::time::timeout(Duration::from_secs(60), stdout.read_to_string(&mut said))
        .await
        .expect("the program reports within 60 s")
        .expect("read");
    let status = helper.wait().await.expect("wait");
    serving.abort();
    assert!(status.success(), "the program exited {status}: {said}");
    said
}
