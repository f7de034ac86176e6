//! kwok's fake kubelet serves a pod's logs from a local file, runs its exec
//! as a local command and forwards its ports to a local TCP port: the tools
//! kdev's own tests use to stand in for containers.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{
    ApiResource, AttachParams, DynamicObject, GroupVersionKind, LogParams, PostParams,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{TestNamespace, eventually, with_namespace};
use crate::workloads::is_running;

/// Creates a one-container pod and waits until kwok reports it Running.
pub async fn running_pod(ns: &TestNamespace, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": { "containers": [{
            "name": "app",
            "image": "example.invalid/app:1",
            "ports": [{ "containerPort": 8080 }]
        }] }
    }))
    .expect("a valid Pod");
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    eventually(Duration::from_secs(60), "the pod to be Running", || async {
        let pod = pods.get(name).await.ok()?;
        is_running(&pod).then_some(pod)
    })
    .await
}

/// One of kwok's resource kinds (`Logs`, `ClusterPortForward`, …).
fn kwok_resource(kind: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", kind);
    let lower = kind.to_lowercase();
    let plural = if lower.ends_with('s') {
        lower
    } else {
        format!("{lower}s")
    };
    ApiResource::from_gvk_with_plural(&gvk, &plural)
}

/// Creates one of kwok's cluster-wide resources (ClusterLogs, ClusterExec, ClusterPortForward).
pub async fn create_kwok_cluster(
    client: &kube::Client,
    kind: &str,
    name: &str,
    spec: serde_json::Value,
) {
    let resource = kwok_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let object = DynamicObject::new(name, &resource).data(json!({ "spec": spec }));
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("create kwok {kind} {name}: {err}"));
}

/// Creates one of kwok's per-pod resources (Logs, Exec, PortForward), named
/// after the pod it applies to.
pub async fn create_kwok(ns: &TestNamespace, kind: &str, pod: &str, spec: serde_json::Value) {
    let resource = kwok_resource(kind);
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let object = DynamicObject::new(pod, &resource).data(json!({ "spec": spec }));
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("create kwok {kind} for pod {pod}: {err}"));
}

#[tokio::test]
async fn a_pods_logs_come_from_a_local_file() {
    with_namespace("kwok-logs", |ns| async move {
        running_pod(&ns, "talker").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("talker.log");
        std::fs::write(
            &file,
            "2026-01-01T00:00:00.000000000Z stdout F first line\n\
             2026-01-01T00:00:01.000000000Z stderr F second line\n",
        )
        .expect("write log file");
        create_kwok(
            &ns,
            "Logs",
            "talker",
            json!({ "logs": [{ "containers": ["app"], "logsFile": file, "follow": false }] }),
        )
        .await;

        let pods = ns.api::<Pod>();
        let logs = eventually(
            Duration::from_secs(30),
            "the file's lines as logs",
            || async {
                let logs = pods.logs("talker", &LogParams::default()).await.ok()?;
                logs.contains("second line").then_some(logs)
            },
        )
        .await;
        assert_eq!(logs, "first line\nsecond line\n");
    })
    .await;
}

#[tokio::test]
async fn a_pods_exec_runs_a_local_command() {
    with_namespace("kwok-exec", |ns| async move {
        running_pod(&ns, "shell").await;
        let dir = tempfile::tempdir().expect("temp dir");
        create_kwok(
            &ns,
            "Exec",
            "shell",
            json!({ "execs": [{ "containers": ["app"], "local": {
                "workDir": dir.path(),
                "envs": [{ "name": "KDEV_TEST_MARK", "value": "from-kwok" }]
            } }] }),
        )
        .await;

        let pods = ns.api::<Pod>();
        let want = format!("from-kwok {}", dir.path().display());
        let output = eventually(Duration::from_secs(30), "exec to run locally", || async {
            let params = AttachParams::default()
                .stdout(true)
                .stderr(false)
                .container("app");
            let mut process = pods
                .exec(
                    "shell",
                    ["sh", "-c", "echo \"$KDEV_TEST_MARK $(pwd)\""],
                    &params,
                )
                .await
                .ok()?;
            let mut stdout = process.stdout()?;
            let mut output = String::new();
            stdout.read_to_string(&mut output).await.ok()?;
            let _ = process.join().await;
            (output.trim() == want).then_some(output)
        })
        .await;
        assert_eq!(output.trim(), want);
    })
    .await;
}

#[tokio::test]
async fn a_port_forward_reaches_a_local_port_chosen_at_test_time() {
    with_namespace("kwok-pf", |ns| async move {
        running_pod(&ns, "server").await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    let mut reply = b"echo:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = socket.write_all(&reply).await;
                });
            }
        });
        create_kwok(
            &ns,
            "PortForward",
            "server",
            json!({ "forwards": [{ "ports": [8080], "target": { "port": local.port(), "address": "127.0.0.1" } }] }),
        )
        .await;

        let pods = ns.api::<Pod>();
        let reply = eventually(Duration::from_secs(30), "the forwarded port to answer", || async {
            let mut forwarder = pods.portforward("server", &[8080]).await.ok()?;
            let mut stream = forwarder.take_stream(8080)?;
            stream.write_all(b"ping").await.ok()?;
            let mut reply = Vec::new();
            let mut buf = [0u8; 64];
            while reply.len() < 9 {
                let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                if n == 0 {
                    break;
                }
                reply.extend_from_slice(&buf[..n]);
            }
            drop(stream);
            let _ = forwarder.join().await;
            (reply == b"echo:ping").then_some(reply)
        })
        .await;
        assert_eq!(reply, b"echo:ping");
    })
    .await;
}
