//! An environment's last activity: the `kdev-activity` Lease in its
//! namespace, renewed by whatever a person or a request does there (`kdev
//! logs`, `kdev wake`, `kdev swap`, a waker). The controller's inactivity
//! rule reads it with the other signs of life it sees itself (rollouts,
//! live swap sessions).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kdev_contract::envs::ACTIVITY_LEASE;
use kdev_contract::keys::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use kdev_contract::session::ROLE_LABEL;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};

use super::Kube;

/// The value of `kdev.dev/role` on the activity Lease.
pub const ROLE_ACTIVITY: &str = "env-activity";

/// The activity Lease as created (renewed now by `who`).
pub fn lease(who: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(ACTIVITY_LEASE.into()),
            labels: Some(
                [
                    (ROLE_LABEL.to_owned(), ROLE_ACTIVITY.to_owned()),
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(who.to_owned()),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    }
}

/// Records activity in `namespace` by `who` (like "alice@laptop: kdev
/// logs"). Best effort: an account that may not write the Lease records
/// nothing, and says so at debug level only.
pub async fn record(kube: Kube, namespace: String, who: String) {
    let (namespace, who) = (namespace.as_str(), who.as_str());
    let api: Api<Lease> = Api::namespaced(kube.client.clone(), namespace);
    let patch = serde_json::json!({
        "spec": {
            "holderIdentity": who,
            "renewTime": MicroTime(jiff::Timestamp::now()),
        }
    });
    let params = PatchParams {
        field_manager: Some(kdev_contract::keys::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let outcome = match api
        .patch(ACTIVITY_LEASE, &params, &Patch::Merge(&patch))
        .await
    {
        Err(err) if super::is_not_found(&err) => api
            .create(&PostParams::default(), &lease(who))
            .await
            .map(drop),
        other => other.map(drop),
    };
    if let Err(err) = outcome {
        tracing::debug!(namespace, error = %err, "activity not recorded");
    }
}

/// The last activity the Lease records, and who.
pub fn last(lease: &Lease) -> Option<(jiff::Timestamp, String)> {
    let spec = lease.spec.as_ref()?;
    Some((
        spec.renew_time.as_ref()?.0,
        spec.holder_identity.clone().unwrap_or_default(),
    ))
}
