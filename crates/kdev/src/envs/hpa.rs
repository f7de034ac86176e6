//! HorizontalPodAutoscalers of sleeping workloads. At 0 replicas an HPA
//! stands down by itself (Kubernetes does not scale a target at 0), so a
//! sleep to 0 needs nothing here. A sleep to `downtime-replicas` above 0
//! would be undone by an HPA whose `minReplicas` is larger, so kdev lowers
//! that minimum to the sleeping size, recording the original on the HPA
//! (`kdev.dev/sleep`, `{"minReplicas":N}`) in the same guarded write, and
//! the wake puts it back.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};

use super::workload::Kind;
use crate::k8s::Kube;
use crate::k8s::guarded::{self, Decision};
use kdev_contract::envs::SLEEP_ANNOTATION;

/// What was done to an HPA, for the workload's line.
pub type Note = String;

/// The namespace's HPAs (listed once per environment, when needed).
pub async fn list(kube: &Kube, namespace: &str) -> anyhow::Result<Vec<HorizontalPodAutoscaler>> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(kube.client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|err| kube.explain(err, format!("list HPAs in namespace {namespace}")))?;
    Ok(list.items)
}

fn targets(hpa: &HorizontalPodAutoscaler, kind: Kind, name: &str) -> bool {
    let target = &hpa.spec.scale_target_ref;
    let wanted = match kind {
        Kind::Deployment => "Deployment",
        Kind::StatefulSet => "StatefulSet",
        Kind::Rollout => "Rollout",
        Kind::CronJob | Kind::Job | Kind::ScaledObject | Kind::DaemonSet => return false,
    };
    target.kind == wanted && target.name == name
}

/// Lowers (sleep, `Some(to)`) or restores (wake, `None`) the minimum of the
/// HPAs that target `kind/name`.
pub async fn adjust(
    kube: &Kube,
    namespace: &str,
    hpas: &[HorizontalPodAutoscaler],
    kind: Kind,
    name: &str,
    sleeping_to: Option<i32>,
) -> anyhow::Result<Vec<Note>> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(kube.client.clone(), namespace);
    let mut notes = Vec::new();
    for hpa in hpas.iter().filter(|h| targets(h, kind, name)) {
        let hpa_name = hpa.name_any();
        let what = format!("horizontalpodautoscaler {namespace}/{hpa_name}");
        let updated = guarded::update(kube, &api, &hpa_name, &what, |current| {
            let Some(current) = current else {
                return Ok(Decision::Keep(None));
            };
            let min = current.spec.min_replicas.unwrap_or(1);
            let recorded = current
                .annotations()
                .get(SLEEP_ANNOTATION)
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
                .and_then(|r| r["minReplicas"].as_i64())
                .and_then(|n| i32::try_from(n).ok());
            Ok(match (sleeping_to, recorded) {
                (Some(to), None) if min > to => Decision::Write(
                    serde_json::json!({
                        "metadata": { "annotations": {
                            SLEEP_ANNOTATION: serde_json::json!({ "minReplicas": min }).to_string()
                        } },
                        "spec": { "minReplicas": to.max(1) }
                    }),
                    Some(format!(
                        "HPA {hpa_name}: minReplicas {min} → {} while asleep",
                        to.max(1)
                    )),
                ),
                (None, Some(original)) => Decision::Write(
                    serde_json::json!({
                        "metadata": { "annotations": { SLEEP_ANNOTATION: null } },
                        "spec": { "minReplicas": original }
                    }),
                    Some(format!("HPA {hpa_name}: minReplicas back to {original}")),
                ),
                _ => Decision::Keep(None),
            })
        })
        .await?;
        notes.extend(updated.value);
    }
    Ok(notes)
}
