//! `kdev swap` against the real control plane. The agent runs locally and
//! kwok forwards every proxy pod's tunnel port to it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{eventually, free_port, with_namespace};
use crate::swap_support::{LocalAgent, Swap, assert_restored, deploy, simple_deployment};

/// An echo server on 127.0.0.1 standing in for the developer's process.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn many_concurrent_inbound_connections_reach_the_local_process_byte_exact() {
    with_namespace("swap-in", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let local = echo_server().await;
        let mut swap = Swap::start(
            &ns,
            &[
                "deploy/web",
                "--ttl",
                "6s",
                "--port",
                &format!("8080:{local}"),
            ],
            &["sleep", "300"],
            &[],
        );
        swap.wait_swapped().await;

        let (host, port) = agent.address(8080);
        let mut clients = Vec::new();
        for i in 0..64u32 {
            clients.push(tokio::spawn(async move {
                let payload: Vec<u8> = (0..65_536u32)
                    .map(|b| (b.wrapping_mul(31).wrapping_add(i) % 251) as u8)
                    .collect();
                let mut socket = TcpStream::connect((host, port))
                    .await
                    .expect("connect through the proxy");
                let (mut read, mut write) = socket.split();
                let sent = payload.clone();
                let writer = async move {
                    write.write_all(&sent).await.expect("send");
                    write.shutdown().await.expect("half-close");
                };
                let mut echoed = Vec::new();
                let reader = read.read_to_end(&mut echoed);
                let (_, got) = tokio::join!(writer, reader);
                got.expect("receive");
                assert_eq!(echoed.len(), payload.len(), "connection {i} lost bytes");
                assert!(echoed == payload, "connection {i} corrupted bytes");
            }));
        }
        for client in clients {
            client.await.expect("a client task");
        }

        // All along, the proxy pod was the Lease's alone: no ReplicaSet adopted it.
        let proxies = ns
            .api::<k8s_openapi::api::core::v1::Pod>()
            .list(&kube::api::ListParams::default().labels("kdev.dev/role=swap-proxy"))
            .await
            .expect("list proxies");
        let owners = proxies.items[0]
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(owners[0].kind, "Lease");
        swap.signal(Signal::SIGTERM);
        let status = swap.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(
            status.code(),
            Some(143),
            "sleep killed by SIGTERM: {}",
            swap.stderr()
        );
        assert_restored(&ns, "web", 2, Duration::from_secs(10)).await;
        assert!(
            swap.stderr().contains("scaled back to 2 replicas"),
            "{}",
            swap.stderr()
        );
    })
    .await;
}

#[tokio::test]
async fn the_local_process_reaches_a_cluster_service_through_the_agent() {
    with_namespace("swap-out", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        // The "cluster service": a Service whose port a local server answers;
        // the agent resolves its DNS name to 127.0.0.1 (no cluster DNS here).
        let backend_port = free_port();
        let backend = TcpListener::bind(("127.0.0.1", backend_port)).await.expect("bind backend");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = backend.accept().await {
                let _ = socket.write_all(b"backend says hi").await;
            }
        });
        let service: Service = serde_json::from_value(json!({
            "metadata": { "name": "backend" },
            "spec": { "selector": { "app": "backend" }, "ports": [{ "port": backend_port }] }
        }))
        .expect("valid");
        ns.api::<Service>().create(&PostParams::default(), &service).await.expect("create service");
        let _agent = LocalAgent::start(&ns, &[8080], &[format!("backend.{}.svc=127.0.0.1", ns.name)]).await;

        let out = tempfile::tempdir().expect("temp dir");
        let result = out.path().join("reply");
        let script = "import os,socket,sys\n\
            s=socket.create_connection((os.environ['BACKEND_SERVICE_HOST'],int(os.environ['BACKEND_SERVICE_PORT'])))\n\
            data=b''\n\
            while True:\n    chunk=s.recv(100)\n    if not chunk: break\n    data+=chunk\n\
            open(sys.argv[1],'wb').write(data)\n";
        let forward = format!("svc/backend:{backend_port}");
        let mut swap = Swap::start(
            &ns,
            &["deploy/web", "--ttl", "6s", "--forward", &forward],
            &["python3", "-c", script, result.to_str().expect("utf-8")],
            &[],
        );
        let status = swap.wait_exit(Duration::from_secs(60)).await;
        assert!(status.success(), "{}", swap.stderr());
        assert_eq!(std::fs::read_to_string(&result).expect("the reply"), "backend says hi");
        assert_restored(&ns, "web", 1, Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test]
async fn the_local_process_gets_env_envfrom_downward_api_and_volume_files() {
    with_namespace("swap-env", |ns| async move {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "settings" },
            "data": { "LEVEL": "debug", "app.conf": "port = 8080\n" }
        }))
        .expect("valid");
        ns.api::<ConfigMap>().create(&PostParams::default(), &cm).await.expect("create configmap");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": "creds" },
            "stringData": { "password": "s3cr3t-value", "token": "tok-123" }
        }))
        .expect("valid");
        ns.api::<Secret>().create(&PostParams::default(), &secret).await.expect("create secret");
        deploy(&ns, json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "api" },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": "api" } },
                "template": {
                    "metadata": { "labels": { "app": "api", "tier": "backend" } },
                    "spec": {
                        "containers": [{
                            "name": "app",
                            "image": "example.invalid/api:1",
                            "ports": [{ "containerPort": 8080 }],
                            "envFrom": [{ "configMapRef": { "name": "settings" }, "prefix": "CFG_" }],
                            "env": [
                                { "name": "PLAIN", "value": "literal" },
                                { "name": "URL", "value": "http://$(PLAIN):1" },
                                { "name": "LEVEL", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "LEVEL" } } },
                                { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
                                { "name": "MY_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                                { "name": "MY_POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                                { "name": "MY_TIER", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['tier']" } } }
                            ],
                            "volumeMounts": [
                                { "name": "config", "mountPath": "/etc/app" },
                                { "name": "secret", "mountPath": "/var/run/secrets/app", "readOnly": true }
                            ]
                        }],
                        "volumes": [
                            { "name": "config", "configMap": { "name": "settings", "items": [{ "key": "app.conf", "path": "app.conf" }] } },
                            { "name": "secret", "secret": { "secretName": "creds" } }
                        ]
                    }
                }
            }
        }))
        .await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let out = tempfile::tempdir().expect("temp dir");
        let script = r#"env > "$1/env" && cp -r "$KDEV_ROOT" "$1/root" && stat -c %a "$KDEV_ROOT/var/run/secrets/app/password" > "$1/mode" && exit 7"#;
        let mut swap = Swap::start(
            &ns,
            &["deploy/api", "--ttl", "6s"],
            &["sh", "-c", script, "sh", out.path().to_str().expect("utf-8")],
            &[],
        );
        let status = swap.wait_exit(Duration::from_secs(60)).await;
        assert_eq!(status.code(), Some(7), "kdev exits with the command's code: {}", swap.stderr());

        let env = std::fs::read_to_string(out.path().join("env")).expect("env dump");
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{name} missing from the environment"))
        };
        assert_eq!(var("PLAIN"), "literal");
        assert_eq!(var("URL"), "http://literal:1");
        assert_eq!(var("LEVEL"), "debug");
        assert_eq!(var("CFG_LEVEL"), "debug");
        assert_eq!(var("PASSWORD"), "s3cr3t-value");
        assert_eq!(var("MY_NAMESPACE"), ns.name);
        assert!(var("MY_POD").starts_with("api-"), "an original pod's name: {}", var("MY_POD"));
        assert_eq!(var("MY_TIER"), "backend");
        let root = std::path::PathBuf::from(var("KDEV_ROOT"));
        let copy = out.path().join("root");
        assert_eq!(std::fs::read_to_string(copy.join("etc/app/app.conf")).expect("config file"), "port = 8080\n");
        assert_eq!(std::fs::read_to_string(copy.join("var/run/secrets/app/token")).expect("secret file"), "tok-123");
        assert_eq!(std::fs::read_to_string(out.path().join("mode")).expect("mode").trim(), "600");
        assert!(!root.exists(), "the private dir {} is removed at the end", root.display());
        // Secret values never reach kdev's own output.
        assert!(!swap.stderr().contains("s3cr3t-value"), "{}", swap.stderr());
        assert_restored(&ns, "api", 1, Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test]
async fn a_second_swap_of_the_same_deployment_is_refused_with_its_holder() {
    with_namespace("swap-twice", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let first = Swap::start(&ns, &["deploy/web", "--ttl", "6s"], &["sleep", "300"], &[]);
        first.wait_swapped().await;
        let mut second = Swap::start(&ns, &["deploy/web", "--ttl", "6s"], &["true"], &[]);
        let status = second.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(1));
        let err = second.stderr();
        assert!(
            err.contains("deployment/web is already swapped by"),
            "{err}"
        );
        assert!(err.contains('@'), "names user@host: {err}");
        assert!(err.contains(" since "), "says since when: {err}");
        // The first session is untouched.
        let d = ns.api::<Deployment>().get("web").await.expect("deployment");
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(0));
        first.signal(Signal::SIGTERM);
        assert_restored(&ns, "web", 1, Duration::from_secs(20)).await;
    })
    .await;
}

#[tokio::test]
async fn a_manual_scale_during_a_swap_is_kept_and_reported() {
    with_namespace("swap-scale", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let mut swap = Swap::start(&ns, &["deploy/web", "--ttl", "6s"], &["sleep", "300"], &[]);
        swap.wait_swapped().await;
        ns.api::<Deployment>()
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": 5 } })),
            )
            .await
            .expect("scale by hand");
        swap.signal(Signal::SIGTERM);
        swap.wait_exit(Duration::from_secs(20)).await;
        assert_restored(&ns, "web", 5, Duration::from_secs(10)).await;
        let err = swap.stderr();
        assert!(err.contains("kept at 5 replicas"), "{err}");
        assert!(err.contains("it was 2 before"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn deleting_the_lease_under_a_running_session_ends_it_and_restores() {
    with_namespace("swap-lease", |ns| async move {
        deploy(&ns, simple_deployment("web", 3, &[8080])).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let mut swap = Swap::start(&ns, &["deploy/web", "--ttl", "3s"], &["sleep", "300"], &[]);
        swap.wait_swapped().await;
        ns.api::<Lease>()
            .delete("kdev-swap-web", &DeleteParams::default())
            .await
            .expect("delete the session lease");
        let status = swap.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(1), "{}", swap.stderr());
        assert!(swap.stderr().contains("was deleted"), "{}", swap.stderr());
        assert_restored(&ns, "web", 3, Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_a_usage_error_and_changes_nothing() {
    with_namespace("swap-bad", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        for (args, message) in [
            (vec!["cronjob/web"], "takes a Deployment, StatefulSet"),
            (
                vec!["deploy/web", "--ordinal", "1"],
                "--ordinal is for StatefulSets",
            ),
            (
                vec!["deploy/web", "--port", "9999"],
                "does not declare TCP port 9999",
            ),
            (vec!["deploy/web", "--ttl", "1s"], "--ttl must be between"),
            (
                vec!["deploy/web", "--forward", "svc/db"],
                "invalid --forward",
            ),
            (
                vec!["deploy/web", "-c", "nope"],
                "has no container \"nope\"",
            ),
        ] {
            let mut swap = Swap::start(&ns, &args, &["true"], &[]);
            let status = swap.wait_exit(Duration::from_secs(20)).await;
            assert_eq!(status.code(), Some(2), "{args:?}: {}", swap.stderr());
            assert!(
                swap.stderr().contains(message),
                "{args:?}: {}",
                swap.stderr()
            );
        }
        let mut missing = Swap::start(&ns, &["deploy/absent"], &["true"], &[]);
        assert_eq!(
            missing.wait_exit(Duration::from_secs(20)).await.code(),
            Some(1)
        );
        assert!(
            missing.stderr().contains("deployment/absent not found"),
            "{}",
            missing.stderr()
        );
        let d = ns.api::<Deployment>().get("web").await.expect("deployment");
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(1));
        assert!(
            ns.api::<Lease>()
                .get_opt("kdev-swap-web")
                .await
                .expect("read")
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn swap_sweeps_an_expired_session_of_its_target_first() {
    with_namespace("swap-stale", |ns| async move {
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        // A session whose CLI died right after scaling to 0.
        let mut dead = Swap::start(
            &ns,
            &["deploy/web", "--ttl", "3s"],
            &["sleep", "300"],
            &[("KDEV_SWAP_CRASH_AFTER", "2")],
        );
        dead.wait_exit(Duration::from_secs(30)).await;
        let d = ns.api::<Deployment>().get("web").await.expect("deployment");
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(0));

        let mut next = Swap::start(&ns, &["deploy/web", "--ttl", "6s"], &["true"], &[]);
        let status = next.wait_exit(Duration::from_secs(60)).await;
        assert!(status.success(), "{}", next.stderr());
        assert!(
            next.stderr()
                .contains("restored an earlier session (its Lease expired)"),
            "{}",
            next.stderr()
        );
        // The new session recorded the true original count (2), not the 0 it found.
        assert!(
            next.stderr().contains("2 replicas → 0"),
            "{}",
            next.stderr()
        );
        assert_restored(&ns, "web", 2, Duration::from_secs(10)).await;
    })
    .await;
}

/// Kept short so the module's helper stays used when filtering tests.
#[tokio::test]
async fn sessions_lists_a_live_swap() {
    with_namespace("swap-list", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let swap = Swap::start(&ns, &["deploy/web", "--ttl", "6s"], &["sleep", "300"], &[]);
        swap.wait_swapped().await;
        let out = crate::support::kdev()
            .arg("--kubeconfig")
            .arg(crate::support::kubeconfig())
            .args(["-n", &ns.name, "sessions"])
            .output()
            .expect("run kdev sessions");
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains("deployment/web"), "{table}");
        assert!(table.contains("alive"), "{table}");
        swap.signal(Signal::SIGTERM);
        eventually(Duration::from_secs(20), "the session to end", || async {
            ns.api::<Lease>()
                .get_opt("kdev-swap-web")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn sweep_gives_webhooks_back_the_ca_of_a_session_that_is_gone_and_leaves_a_live_ones_alone() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use kube::Api;
    with_namespace("sweep-webhooks", |ns| async move {
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(ns.client.clone());
        // What a session leaves when its restorer could not list webhooks:
        // the session's CA in, the original and cert-manager's annotation
        // in the record.
        let record = |session: &str, deployment: &str| {
            json!({
                "session": session,
                "deployment": format!("{}/{deployment}", ns.name),
                "caBundles": { "w.kdev.dev": "T1JJRw==" },
                "annotations": { "cert-manager.io/inject-ca-from": "x/y" }
            })
            .to_string()
        };
        let config = |name: &str, record: String| -> ValidatingWebhookConfiguration {
            serde_json::from_value(json!({
                "metadata": { "name": name, "annotations": { "kdev.dev/swap-webhooks": record } },
                "webhooks": [{
                    "name": "w.kdev.dev",
                    "clientConfig": { "service": { "namespace": ns.name, "name": "guard" }, "caBundle": "U0VTU0lPTg==" },
                    "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"] }],
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns.name } },
                    "objectSelector": { "matchLabels": { "never": "matched" } },
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"]
                }]
            }))
            .expect("a webhook configuration")
        };
        let gone = format!("kdev-test-gone-{}", ns.name);
        let live = format!("kdev-test-live-{}", ns.name);
        configs
            .create(&PostParams::default(), &config(&gone, record("s-gone", "old")))
            .await
            .expect("create");
        configs
            .create(&PostParams::default(), &config(&live, record("s-live", "web")))
            .await
            .expect("create");
        // The live session's Lease.
        let lease: Lease = serde_json::from_value(json!({
            "metadata": { "name": "kdev-swap-web", "labels": { "kdev.dev/session": "s-live" } },
            "spec": { "holderIdentity": "someone", "leaseDurationSeconds": 600 }
        }))
        .expect("a lease");
        ns.api::<Lease>()
            .create(&PostParams::default(), &lease)
            .await
            .expect("create lease");

        let output = crate::support::kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["-n", &ns.name, "sweep"])
            .output()
            .expect("run kdev sweep");
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            text.contains(&format!("validatingwebhookconfiguration/{gone}: got back its CA")),
            "{text}"
        );
        let restored = configs.get(&gone).await.expect("get");
        let annotations = restored.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key("kdev.dev/swap-webhooks"), "{annotations:?}");
        assert_eq!(annotations.get("cert-manager.io/inject-ca-from").map(String::as_str), Some("x/y"));
        let bundle = restored.webhooks.unwrap_or_default()[0]
            .client_config
            .ca_bundle
            .clone()
            .expect("a bundle");
        assert_eq!(bundle.0, b"ORIG");
        let untouched = configs.get(&live).await.expect("get");
        assert!(untouched
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kdev.dev/swap-webhooks"));
        for name in [gone, live] {
            configs.delete(&name, &DeleteParams::default()).await.expect("delete");
        }
    })
    .await;
}

#[tokio::test]
async fn an_interactive_command_gets_the_terminal() {
    // What a debugger needs (`kdev swap deploy/x -- dlv debug`, `-- rust-gdb
    // target/debug/x`): the command's stdin and stdout are the terminal kdev
    // runs in. kdev runs under a pseudo-terminal (Python's pty module), and
    // the command both sees a terminal and reads a line typed into it.
    with_namespace("swap-tty", |ns| async move {
        deploy(&ns, simple_deployment("web", 1, &[8080])).await;
        let _agent = LocalAgent::start(&ns, &[8080], &[]).await;
        let script =
            "if [ -t 0 ] && [ -t 1 ]; then echo TERMINAL-OK; fi; read line; echo \"got:$line\"";
        let mut command = tokio::process::Command::new("python3");
        command
            .args([
                "-c",
                "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)",
            ])
            .arg(env!("CARGO_BIN_EXE_kdev"))
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args([
                "-n",
                &ns.name,
                "swap",
                "deploy/web",
                "--ttl",
                "6s",
                "--",
                "sh",
                "-c",
                script,
            ])
            .env("KDEV_SWAP_TOKEN", crate::swap_support::test_token_hex())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start kdev under a pty");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        // Everything the terminal shows, until the command asks for input.
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        let asked = tokio::time::timeout(Duration::from_secs(60), async {
            while !String::from_utf8_lossy(&seen).contains("TERMINAL-OK") {
                let n = stdout.read(&mut chunk).await.expect("read the terminal");
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        assert!(
            asked.is_ok() && String::from_utf8_lossy(&seen).contains("TERMINAL-OK"),
            "the command saw no terminal: {}",
            String::from_utf8_lossy(&seen)
        );
        stdin.write_all(b"typed-in\n").await.expect("type");
        let finished = tokio::time::timeout(Duration::from_secs(60), async {
            let mut rest = Vec::new();
            stdout.read_to_end(&mut rest).await.expect("read");
            rest
        })
        .await
        .expect("kdev ends when the command does");
        seen.extend(finished);
        let shown = String::from_utf8_lossy(&seen);
        assert!(shown.contains("got:typed-in"), "{shown}");
        let status = child.wait().await.expect("wait");
        assert!(status.success(), "{shown}");
        assert_restored(&ns, "web", 1, Duration::from_secs(30)).await;
    })
    .await;
}
