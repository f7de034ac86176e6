//! Every manifest in deploy/ is accepted by a real API server.

use serde_json::Value;

use crate::support::{kubectl_apply, render_deploy, with_namespace};

#[tokio::test]
async fn deploy_manifests_pass_server_side_dry_run() {
    with_namespace("deploy", |ns| async move {
        let manifests = render_deploy(
            &ns.name,
            &["telepresence", "envs", "dashboard", "dashboard-auth-proxy"],
        );
        let applied = kubectl_apply(&manifests.manifests, &["--dry-run=server", "-o", "json"]);
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
        // The telepresence component switches the cleaner on and grants what it needs.
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert!(args.contains(&"--telepresence"), "{args:?}");
        assert!(args.contains(&"--schedules"), "{args:?}");
        let envs_role = format!("kdev-controller-envs-{}", ns.name);
        for role in [envs_role.as_str(), "kdev-env-starter", "kdev-env-waker"] {
            assert!(
                items
                    .iter()
                    .any(|i| i["kind"] == "ClusterRole" && i["metadata"]["name"] == role),
                "the {role} ClusterRole"
            );
        }
        assert!(
            items.iter().any(|i| i["kind"] == "ClusterRole"
                && i["metadata"]["name"] == format!("kdev-controller-telepresence-{}", ns.name)),
            "the telepresence ClusterRole"
        );
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["capabilities"]["drop"][0], "ALL");
        assert!(security["capabilities"]["add"].is_null());
    })
    .await;
}
