//! Programs of other runtimes as the swapped command on the real node: a
//! statically linked Go binary (Go's own resolver, no libc: what
//! `LD_PRELOAD` tools miss) and the JVM (its own socket layer, libc's
//! resolver) see the cluster's names as a pod does.

use std::time::Duration;

use crate::real_node::{busybox_web, headless_web, require_real_node};
use crate::support::{TestNamespace, eventually, with_namespace};
use crate::swap_support::{Swap, assert_restored};

const GO_PROBE: &str = r#"package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func get(url string) string {
	client := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	answer, err := client.Get(url)
	if err != nil {
		return "failed " + err.Error()
	}
	defer answer.Body.Close()
	body, _ := io.ReadAll(answer.Body)
	return strings.TrimSpace(string(body))
}

func main() {
	ns := os.Args[2]
	var out strings.Builder
	for _, probe := range [][2]string{
		{"short", "http://web/"},
		{"name.ns", "http://web." + ns + "/"},
		{"fqdn", "http://web." + ns + ".svc.cluster.local/"},
		{"headless", "http://kafka-0.kafka:8080/"},
	} {
		fmt.Fprintf(&out, "%s=%s\n", probe[0], get(probe[1]))
	}
	_, err := net.LookupHost("nothing-here." + ns + ".svc.cluster.local")
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		out.WriteString("missing=NXDOMAIN\n")
	} else {
		fmt.Fprintf(&out, "missing=%v\n", err)
	}
	os.WriteFile(os.Args[1]+".tmp", []byte(out.String()), 0o644)
	os.Rename(os.Args[1]+".tmp", os.Args[1])
}
"#;

const JVM_PROBE: &str = r#"
import java.io.*;
import java.net.*;
import java.nio.file.*;

public class Probe {
    static String get(String host, int port) {
        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress(host, port), 10000);
            socket.getOutputStream().write("GET / HTTP/1.0\r\nHost: x\r\n\r\n".getBytes());
            String answer = new String(socket.getInputStream().readAllBytes());
            return answer.substring(answer.indexOf("\r\n\r\n") + 4).trim();
        } catch (Exception e) {
            return "failed " + e;
        }
    }

    public static void main(String[] args) throws Exception {
        String ns = args[1];
        StringBuilder out = new StringBuilder();
        out.append("short=").append(get("web", 80)).append('\n');
        out.append("name.ns=").append(get("web." + ns, 80)).append('\n');
        out.append("fqdn=").append(get("web." + ns + ".svc.cluster.local", 80)).append('\n');
        out.append("headless=").append(get("kafka-0.kafka", 8080)).append('\n');
        try {
            InetAddress.getByName("nothing-here." + ns + ".svc.cluster.local");
            out.append("missing=resolved\n");
        } catch (UnknownHostException e) {
            out.append("missing=NXDOMAIN\n");
        }
        Files.writeString(Paths.get(args[0] + ".tmp"), out.toString());
        Files.move(Paths.get(args[0] + ".tmp"), Paths.get(args[0]));
    }
}
"#;

/// Each program, as the command of a swap of deploy/app: a Service by its
/// short name, `name.namespace` and full name, a headless StatefulSet's pod
/// by name, and a missing name is NXDOMAIN; the swap ends with the program
/// and the Deployment is restored.
#[tokio::test]
async fn a_static_go_binary_and_the_jvm_live_in_the_clusters_network_on_the_real_node() {
    with_namespace("real-runtimes", |ns| async move {
        require_real_node(&ns).await;
        busybox_web(&ns, "web", 1, "from-the-cluster").await;
        busybox_web(&ns, "app", 1, "from-the-app-pod").await;
        headless_web(&ns, "kafka", "from-kafka-0").await;
        let dir = tempfile::tempdir().expect("temp dir");

        let go_binary = crate::static_go::build(dir.path(), GO_PROBE);
        let java_source = dir.path().join("Probe.java");
        std::fs::write(&java_source, JVM_PROBE).expect("write the Java program");

        let programs: [(&str, Vec<String>); 2] = [
            ("go", vec![go_binary.display().to_string()]),
            (
                "jvm",
                vec!["java".into(), java_source.display().to_string()],
            ),
        ];
        for (runtime, program) in programs {
            let report = dir.path().join(format!("{runtime}-report"));
            let mut command: Vec<String> = program;
            command.extend([report.display().to_string(), ns.name.clone()]);
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            let mut swap = Swap::start(&ns, &["deploy/app", "--ttl", "10s"], &command, &[]);
            let status = swap.wait_exit(Duration::from_secs(120)).await;
            assert!(status.success(), "{runtime}: {status:?}\n{}", swap.stderr());
            let lines = std::fs::read_to_string(&report).unwrap_or_else(|err| {
                panic!("{runtime} wrote no report ({err}):\n{}", swap.stderr())
            });
            for line in [
                "short=from-the-cluster",
                "name.ns=from-the-cluster",
                "fqdn=from-the-cluster",
                "headless=from-kafka-0",
                "missing=NXDOMAIN",
            ] {
                assert!(
                    lines.lines().any(|l| l == line),
                    "{runtime}: expected {line:?} in:\n{lines}\n{}",
                    swap.stderr()
                );
            }
            assert_restored(&ns, "app", 1, Duration::from_secs(30)).await;
            wait_app_ready(&ns).await;
        }
    })
    .await;
}

/// Waits until deploy/app's pod serves again, so the next swap finds it.
async fn wait_app_ready(ns: &TestNamespace) {
    eventually(
        Duration::from_secs(60),
        "deploy/app to be Ready again",
        || async {
            let app = ns
                .api::<k8s_openapi::api::apps::v1::Deployment>()
                .get("app")
                .await
                .ok()?;
            (app.status?.ready_replicas == Some(1)).then_some(())
        },
    )
    .await;
}
