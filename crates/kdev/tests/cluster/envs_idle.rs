//! Environments deleted after a long idle: warned first, kept by
//! `kdev.dev/keep`, withdrawn by activity, listed by `--dry-run`, and
//! deleted by the controller with nothing but deploy/envs' rights, its
//! Event kept in the controller's namespace.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;

use crate::support::{TestNamespace, event_notes, eventually, kdev, with_namespace};

const DELETE_AT: &str = "kdev.dev/delete-at";

fn later(minutes: i64) -> String {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_mins(minutes))
        .expect("a time")
        .to_string()
}

fn delete_idle(ns: &TestNamespace, now: &str, args: &[&str]) -> (bool, String) {
    let output = kdev()
        .arg("--kubeconfig")
        .arg(&ns.kubeconfig)
        .args(["envs", "delete-idle"])
        .args(args)
        .env("KDEV_ENVS_NOW", now)
        .output()
        .expect("run kdev");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

async fn annotate(
    ns: &TestNamespace,
    name: &str,
    annotations: serde_json::Value,
    labels: serde_json::Value,
) {
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": annotations, "labels": labels } })),
        )
        .await
        .expect("annotate the namespace");
}

async fn annotation(ns: &TestNamespace, key: &str) -> Option<String> {
    let namespace = Api::<Namespace>::all(ns.client.clone())
        .get(&ns.name)
        .await
        .ok()?;
    namespace.annotations().get(key).cloned()
}

/// By hand (`kdev envs delete-idle`, its clock moved by the test build's
/// KDEV_ENVS_NOW): an environment idle 55 minutes of its hour is warned
/// (the annotation, a Warning Event), a dry run past its time says it
/// would be deleted and deletes nothing, `kdev.dev/keep` keeps it, activity
/// withdraws the warning, and a namespace that is not an environment is
/// never deleted.
#[tokio::test]
async fn an_idle_environment_is_warned_kept_withdrawn_and_listed_by_a_dry_run() {
    with_namespace("idle-cli", |ns| async move {
        annotate(
            &ns,
            &ns.name,
            json!({ "kdev.dev/delete-after-idle": "1h" }),
            json!({}),
        )
        .await;
        let (ok, out) = delete_idle(&ns, &later(55), &[&ns.name, "--warning", "10m"]);
        assert!(ok && out.contains("warned: deleted at"), "{out}");
        assert!(out.contains("the namespace's creation"), "{out}");
        let delete_at: jiff::Timestamp = annotation(&ns, DELETE_AT)
            .await
            .expect("the mark")
            .parse()
            .expect("a time");
        let created = jiff::Timestamp::now();
        assert!(
            delete_at
                > created
                    .checked_add(jiff::SignedDuration::from_mins(60))
                    .unwrap()
        );
        let notes = event_notes(&ns, "DeletionPlanned").await;
        assert!(
            notes.iter().any(|n| n.contains("kdev.dev/keep")),
            "{notes:?}"
        );

        let (ok, out) = delete_idle(&ns, &later(80), &[&ns.name, "--dry-run"]);
        assert!(ok && out.contains("would be deleted after 1h"), "{out}");
        assert!(
            Api::<Namespace>::all(ns.client.clone())
                .get(&ns.name)
                .await
                .is_ok()
        );

        annotate(
            &ns,
            &ns.name,
            json!({ "kdev.dev/keep": "until the release" }),
            json!({}),
        )
        .await;
        let (ok, out) = delete_idle(&ns, &later(80), &[&ns.name, "--dry-run"]);
        assert!(
            ok && out.contains("kept by annotation kdev.dev/keep"),
            "{out}"
        );
        annotate(&ns, &ns.name, json!({ "kdev.dev/keep": null }), json!({})).await;

        // Activity after the warning (what a kdev wake or logs records).
        let lease: Lease = serde_json::from_value(json!({
            "metadata": { "name": "kdev-activity" },
            "spec": { "holderIdentity": "alice@laptop: kdev logs", "renewTime": later(58) }
        }))
        .expect("a lease");
        ns.api::<Lease>()
            .create(&PostParams::default(), &lease)
            .await
            .expect("create the Lease");
        let (ok, out) = delete_idle(&ns, &later(61), &[&ns.name]);
        assert!(
            ok && out.contains("used since its warning: deletion withdrawn"),
            "{out}"
        );
        assert_eq!(annotation(&ns, DELETE_AT).await, None);
        assert!(!event_notes(&ns, "DeletionWithdrawn").await.is_empty());

        // Not an environment: never, whatever its annotation says.
        annotate(
            &ns,
            &ns.name,
            json!({}),
            json!({ "kdev.dev/environment": null }),
        )
        .await;
        let (ok, out) = delete_idle(&ns, &later(60 * 24 * 30), &[&ns.name]);
        assert!(ok && out.contains("not an environment"), "{out}");
    })
    .await;
}

/// The controller, with nothing but deploy/envs' rights (its admission
/// policy included), warns an environment idle past `--delete-warning`
/// of its `kdev.dev/delete-after-idle`, and after the warning's time
/// deletes it; the deletion's Event stays in the controller's namespace.
/// The policy refuses the controller's account a namespace it keeps.
#[tokio::test]
async fn the_controller_deletes_an_idle_environment_after_its_warning_with_deploy_envs_rights() {
    with_namespace("idle-home", |home| async move {
        let deployed = crate::support::render_deploy(&home.name, &["envs"]);
        let applied = crate::support::kubectl_apply(&deployed.manifests, &[]);
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let account = format!("system:serviceaccount:{}:kdev-controller", home.name);
        let as_controller = crate::support::kubeconfig_as(&account, dir.path());
        with_namespace("idle-env", |env| async move {
            annotate(
                &env,
                &env.name,
                json!({ "kdev.dev/delete-after-idle": "1h" }),
                json!({}),
            )
            .await;
            let args = |clock: &str| -> Vec<String> {
                [
                    "--schedules",
                    "--delete-warning",
                    "10m",
                    "--clock-start",
                    clock,
                ]
                .map(String::from)
                .to_vec()
            };
            let first = args(&later(55));
            let first: Vec<&str> = first.iter().map(String::as_str).collect();
            let controller = crate::swap_support::Controller::launch_in(
                &home.name,
                &env.name,
                &as_controller,
                &first,
                &[],
            );
            eventually(Duration::from_secs(30), "the warning", || async {
                annotation(&env, DELETE_AT).await.map(|_| ())
            })
            .await;
            controller.stop();
            assert!(!event_notes(&env, "DeletionPlanned").await.is_empty());

            // The policy: a namespace someone keeps is refused to the
            // controller's account, whatever it asks.
            annotate(
                &env,
                &env.name,
                json!({ "kdev.dev/keep": "true" }),
                json!({}),
            )
            .await;
            let client = crate::support::client_for(&as_controller).await;
            let refused = eventually(Duration::from_secs(30), "the policy in force", || async {
                let dry = DeleteParams {
                    dry_run: true,
                    ..DeleteParams::default()
                };
                Api::<Namespace>::all(client.clone())
                    .delete(&env.name, &dry)
                    .await
                    .err()
                    .filter(|err| err.to_string().contains("never deleted"))
            })
            .await;
            assert!(refused.to_string().contains("kdev.dev/keep"), "{refused}");
            annotate(&env, &env.name, json!({ "kdev.dev/keep": null }), json!({})).await;

            let second = args(&later(70));
            let second: Vec<&str> = second.iter().map(String::as_str).collect();
            let controller = crate::swap_support::Controller::launch_in(
                &home.name,
                &env.name,
                &as_controller,
                &second,
                &[],
            );
            eventually(
                Duration::from_secs(30),
                "the environment deleted",
                || async {
                    let namespace = Api::<Namespace>::all(env.client.clone())
                        .get_opt(&env.name)
                        .await
                        .ok()?;
                    namespace
                        .is_none_or(|n| n.metadata.deletion_timestamp.is_some())
                        .then_some(())
                },
            )
            .await;
            let log = controller.log();
            controller.stop();
            let notes = event_notes(&home, "DeletedAfterIdle").await;
            assert!(
                notes.iter().any(|n| n.contains(&env.name)
                    && n.contains("by kdev-controller")
                    && n.contains("1h")),
                "{notes:?}\n{log}"
            );
        })
        .await;
    })
    .await;
}
