//! Every manifest in deploy/ is accepted by a real API server.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{kubectl, with_namespace};

#[tokio::test]
async fn deploy_manifests_pass_server_side_dry_run() {
    with_namespace("deploy", |ns| async move {
        // An overlay moves everything into this test's namespace, so the
        // namespaced objects have a namespace to be validated in. kustomize
        // takes only relative resource paths: deploy/ is copied beside it.
        let overlay = tempfile::tempdir().expect("temp dir");
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let base = overlay.path().join("base");
        std::fs::create_dir(&base).expect("create base");
        for entry in std::fs::read_dir(&deploy).expect("deploy/ exists") {
            let path = entry.expect("read deploy/").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, base.join(path.file_name().expect("a file name")))
                    .expect("copy");
            }
        }
        std::fs::write(
            overlay.path().join("kustomization.yaml"),
            format!("namespace: {}\nresources:\n- base\n", ns.name),
        )
        .expect("write overlay");
        let rendered = kubectl()
            .arg("kustomize")
            .arg(overlay.path())
            .output()
            .expect("run kubectl kustomize");
        assert!(
            rendered.status.success(),
            "kustomize failed: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );

        let mut apply = kubectl()
            .args(["apply", "--dry-run=server", "-o", "json", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl apply");
        apply
            .stdin
            .take()
            .expect("stdin")
            .write_all(&rendered.stdout)
            .expect("write manifests");
        let applied = apply.wait_with_output().expect("kubectl apply finishes");
        assert!(
            applied.status.success(),
            "server-side dry run rejected deploy/: {}",
            String::from_utf8_lossy(&applied.stderr)
        );

        let list: Value = serde_json::from_slice(&applied.stdout).expect("kubectl prints JSON");
        let items = list["items"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![list.clone()]);
        let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Deployment",
        ] {
            assert!(kinds.contains(&kind), "deploy/ has no {kind}: {kinds:?}");
        }

        // The controller runs unprivileged.
        let deployment = items
            .iter()
            .find(|i| i["kind"] == "Deployment")
            .expect("a Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["args"][0], "controller");
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["capabilities"]["drop"][0], "ALL");
        assert!(security["capabilities"]["add"].is_null());
    })
    .await;
}
