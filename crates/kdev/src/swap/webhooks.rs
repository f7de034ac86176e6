//! Webhooks that call the swapped Deployment reach the local process: the
//! session issues a serving certificate for the Deployment's Services,
//! writes it where the container reads its certificate, and points the
//! webhooks' `caBundle` at the session's CA (the decisions and the record
//! are [`kdev_contract::webhook`]'s). Any restorer of the session puts the
//! `caBundle`s back ([`restore`], called first by `swap::restore`).
//!
//! # Expected flow
//! 1. The Deployment's Services: those whose selector picks its template.
//! 2. Validating and mutating webhook configurations, and CRDs with a
//!    conversion webhook, that call one of them. None: nothing more.
//! 3. A CA and a certificate for the Services' DNS names (rcgen, ECDSA
//!    P-256), written as `tls.crt`, `tls.key` and `ca.crt` into the folder
//!    the container mounts its certificate Secret at, under `$KDEV_ROOT`
//!    (else controller-runtime's default, `/tmp/k8s-webhook-server/serving-certs`).
//! 4. One guarded write per object: the session's CA in, the record of
//!    what it replaced beside it.
//!
//! # Guarantees
//! - Crash after 4: the session's Lease expires, and the restore (the
//!   reaper's, or `kdev sweep`'s) puts the `caBundle`s back before it
//!   touches the Deployment.
//! - Without the right to patch an object, it is left as it is and the
//!   local process keeps the certificate copied from the cluster's Secret,
//!   which the webhook's CA already trusts; a notice says so.
//!
//! # Assumptions
//! - The CA's key lives in this process only; the certificate is valid for
//!   30 days, and trusted by the webhooks only while the session lasts.

use super::workload::WorkloadRef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kdev_contract::webhook::{self, Kind};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};

use crate::k8s::guarded::{self, Decision};
use crate::k8s::{Kube, refused_with};

/// Where controller-runtime reads its serving certificate by default.
pub const DEFAULT_CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";

/// What a session redirected.
#[derive(Debug, Default)]
pub struct Redirected {
    /// `kind/name` of each object now trusting the session's CA.
    pub objects: Vec<String>,
    /// The certificate folder, under `$KDEV_ROOT`.
    pub cert_dir: Option<PathBuf>,
    /// What could not be done, for the user to read.
    pub notices: Vec<String>,
}

fn resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Validating => ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
        Kind::Mutating => ApiResource::erase::<MutatingWebhookConfiguration>(&()),
        Kind::Conversion => ApiResource::erase::<CustomResourceDefinition>(&()),
    }
}

fn describe(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Validating => format!("validatingwebhookconfiguration/{name}"),
        Kind::Mutating => format!("mutatingwebhookconfiguration/{name}"),
        Kind::Conversion => format!("customresourcedefinition/{name}"),
    }
}

const KINDS: [Kind; 3] = [Kind::Validating, Kind::Mutating, Kind::Conversion];

/// Every object of the three kinds, as objects and as JSON; the API's own
/// error when one cannot be listed (a 403 the callers judge).
async fn every_object(
    kube: &Kube,
) -> Result<Vec<(Kind, Api<DynamicObject>, DynamicObject, serde_json::Value)>, (Kind, kube::Error)>
{
    let mut out = Vec::new();
    for kind in KINDS {
        let api: Api<DynamicObject> = Api::all_with(kube.client.clone(), &resource(kind));
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|err| (kind, err))?;
        for object in list.items {
            let value = serde_json::to_value(&object).unwrap_or_default();
            out.push((kind, api.clone(), object, value));
        }
    }
    Ok(out)
}

/// A listing error, explained.
fn listing_failed(kube: &Kube, (kind, err): (Kind, kube::Error)) -> anyhow::Error {
    kube.explain(err, format!("list {}", resource(kind).plural))
}

/// Step 1: the Services in the namespace whose selector picks `labels`.
async fn services_of(
    kube: &Kube,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<String>> {
    let api: Api<Service> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|err| kube.explain(err, format!("list services in {}", kube.namespace)))?;
    Ok(list
        .items
        .into_iter()
        .filter(|s| {
            let selector = s.spec.as_ref().and_then(|spec| spec.selector.as_ref());
            selector.is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
        .filter_map(|s| s.metadata.name)
        .collect())
}

/// Steps 1 to 4. `labels` are the pod template's; files go below `root`.
pub async fn redirect(
    kube: &Kube,
    session: &str,
    workload: &WorkloadRef,
    labels: &BTreeMap<String, String>,
    template: &PodSpec,
    container: &Container,
    root: &Path,
) -> anyhow::Result<Redirected> {
    let mut out = Redirected::default();
    let services = services_of(kube, labels).await?;
    if services.is_empty() {
        return Ok(out);
    }
    let found: Vec<(Kind, DynamicObject)> = match every_object(kube).await {
        Ok(objects) => objects
            .into_iter()
            .filter(|(kind, _, _, value)| {
                !webhook::calling(*kind, value, &kube.namespace, &services).is_empty()
            })
            .map(|(kind, _, object, _)| (kind, object))
            .collect(),
        Err((kind, kube::Error::Api(status))) if status.code == 403 => {
            out.notices.push(format!(
                "webhooks are not redirected: you may not list {} ({})",
                resource(kind).plural,
                status.message
            ));
            return Ok(out);
        }
        Err(failed) => return Err(listing_failed(kube, failed)),
    };
    if found.is_empty() {
        return Ok(out);
    }

    let mut names = Vec::new();
    for service in &services {
        let ns = &kube.namespace;
        names.extend([
            service.clone(),
            format!("{service}.{ns}"),
            format!("{service}.{ns}.svc"),
            format!("{service}.{ns}.svc.cluster.local"),
        ]);
    }
    let issued = issue(&names)?;
    let (dir, files) = cert_files(kube, template, container).await;
    let full = super::env::under_root(root, &dir)?;
    crate::host::make_private_dir(&full)?;
    for (key, bytes) in [
        ("tls.crt", issued.cert.as_bytes()),
        ("tls.key", issued.key.as_bytes()),
        ("ca.crt", issued.ca.as_bytes()),
    ] {
        let name = files.get(key).map(String::as_str).unwrap_or(key);
        crate::host::write_file(&full.join(name), bytes, 0o600)?;
    }
    out.cert_dir = Some(full);

    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(issued.ca.as_bytes());
    let key = workload.record_key();
    for (kind, object) in found {
        let name = object.metadata.name.clone().unwrap_or_default();
        let what = describe(kind, &name);
        let api: Api<DynamicObject> = Api::all_with(kube.client.clone(), &resource(kind));
        let written = guarded::update_from(kube, &api, &name, &what, Some(object), |current| {
            let Some(current) = current else {
                return Ok(Decision::Keep(false));
            };
            let value = serde_json::to_value(current).unwrap_or_default();
            let patch = webhook::redirect(
                kind,
                &value,
                &kube.namespace,
                &key,
                &services,
                session,
                &bundle,
            )
            .map_err(|e| anyhow::anyhow!("cannot redirect {what}: {e}"))?;
            Ok(match patch {
                Some(patch) => Decision::Write(patch, true),
                None => Decision::Keep(false),
            })
        })
        .await;
        match written {
            Ok(updated) if updated.value => out.objects.push(what),
            Ok(_) => {}
            Err(err) if refused_with(&err) == Some(403) => out.notices.push(format!(
                "{what} keeps its CA: you may not patch it; the local process serves the certificate copied from the cluster, if the container mounts one"
            )),
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// Puts back what `session` redirected, on every object that records it;
/// the objects restored. A restorer without the right to list them gets
/// the API's error (the caller decides).
pub async fn restore(kube: &Kube, session: &str) -> anyhow::Result<Vec<String>> {
    let mut restored = Vec::new();
    let objects = every_object(kube)
        .await
        .map_err(|failed| listing_failed(kube, failed))?;
    for (kind, api, object, value) in objects {
        let ours = webhook::record_of(&value)
            .ok()
            .flatten()
            .is_some_and(|r| r.session == session);
        if !ours {
            continue;
        }
        let name = object.metadata.name.clone().unwrap_or_default();
        let what = describe(kind, &name);
        let updated = guarded::update_from(kube, &api, &name, &what, Some(object), |current| {
            let Some(current) = current else {
                return Ok(Decision::Keep(false));
            };
            let value = serde_json::to_value(current).unwrap_or_default();
            Ok(
                match webhook::restore(kind, &value, session)
                    .map_err(|e| anyhow::anyhow!("cannot restore {what}: {e}"))?
                {
                    Some(patch) => Decision::Write(patch, true),
                    None => Decision::Keep(false),
                },
            )
        })
        .await?;
        if updated.value {
            restored.push(what);
        }
    }
    Ok(restored)
}

/// Records whose session has no Lease any more (its restorer may not
/// list webhooks), put back as they say; `(object, namespace/workload)` for each.
/// Only records of `namespace`'s Deployments when given.
pub async fn restore_orphans(
    kube: &Kube,
    namespace: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    use k8s_openapi::api::coordination::v1::Lease;
    let mut done = Vec::new();
    let objects = every_object(kube)
        .await
        .map_err(|failed| listing_failed(kube, failed))?;
    for (kind, api, object, value) in objects {
        let Ok(Some(record)) = webhook::record_of(&value) else {
            continue;
        };
        let Some((ns, workload)) = record.deployment.split_once('/') else {
            continue;
        };
        let workload = WorkloadRef::from_record_key(workload);
        if namespace.is_some_and(|n| n != ns) {
            continue;
        }
        let leases: Api<Lease> = Api::namespaced(kube.client.clone(), ns);
        let lease = leases
            .get_opt(&kdev_contract::session::lease_name(&workload))
            .await
            .map_err(|err| kube.explain(err, format!("read the session lease in {ns}")))?;
        let live = lease.is_some_and(|l| {
            l.metadata
                .labels
                .unwrap_or_default()
                .get(kdev_contract::session::SESSION_LABEL)
                == Some(&record.session)
        });
        if live {
            // Its session is there: its restore puts the webhooks back.
            continue;
        }
        let name = object.metadata.name.clone().unwrap_or_default();
        let what = describe(kind, &name);
        if !dry_run {
            let session = record.session.clone();
            guarded::update_from(kube, &api, &name, &what, Some(object), |current| {
                let Some(current) = current else {
                    return Ok(Decision::Keep(()));
                };
                let value = serde_json::to_value(current).unwrap_or_default();
                Ok(match webhook::record_of(&value) {
                    Ok(Some(r)) if r.session == session => {
                        Decision::Write(webhook::restore_patch(kind, &value, &r), ())
                    }
                    _ => Decision::Keep(()),
                })
            })
            .await?;
        }
        done.push((what, record.deployment.clone()));
    }
    Ok(done)
}

/// The folder (absolute in the container) the container reads its serving
/// certificate from, and how the Secret's keys are named there: the mount
/// of a Secret that holds `tls.crt`, else controller-runtime's default.
async fn cert_files(
    kube: &Kube,
    template: &PodSpec,
    container: &Container,
) -> (String, BTreeMap<String, String>) {
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), &kube.namespace);
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = template
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
        else {
            continue;
        };
        let Some(source) = &volume.secret else {
            continue;
        };
        let items: BTreeMap<String, String> = source
            .items
            .iter()
            .flatten()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect();
        let holds_cert = if items.is_empty() {
            match source.secret_name.as_deref() {
                Some(name) => secrets
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.data)
                    .is_some_and(|d| d.contains_key("tls.crt")),
                None => false,
            }
        } else {
            items.contains_key("tls.crt")
        };
        if holds_cert {
            return (mount.mount_path.clone(), items);
        }
    }
    (DEFAULT_CERT_DIR.to_owned(), BTreeMap::new())
}

/// A session's CA and a serving certificate it signed, as PEM.
struct Issued {
    ca: String,
    cert: String,
    key: String,
}

fn issue(names: &[String]) -> anyhow::Result<Issued> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let failed =
        |e: rcgen::Error| anyhow::anyhow!("failed to issue the session's certificate: {e}");
    let today = jiff::Zoned::now().date();
    let day = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let valid_from = day(today.yesterday().unwrap_or(today));
    let valid_to = day(today
        .checked_add(jiff::Span::new().days(30))
        .unwrap_or(today));

    let mut ca = CertificateParams::new(Vec::new()).map_err(failed)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kdev swap session CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    ca.not_before = valid_from;
    ca.not_after = valid_to;
    let ca_key = KeyPair::generate().map_err(failed)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec()).map_err(failed)?;
    if let Some(first) = names.first() {
        leaf.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = valid_from;
    leaf.not_after = valid_to;
    let leaf_key = KeyPair::generate().map_err(failed)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(failed)?;
    Ok(Issued {
        ca: ca_cert.pem(),
        cert: leaf_cert.pem(),
        key: leaf_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_every_service_name_and_is_signed_by_the_ca() {
        let names = vec!["guard".to_owned(), "guard.team.svc".to_owned()];
        let issued = issue(&names).expect("issued");
        assert!(issued.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key.contains("PRIVATE KEY"));
        // rustls' verifier (webpki) accepts the chain for a Service name.
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let ca = CertificateDer::from_pem_slice(issued.ca.as_bytes()).expect("the CA parses");
        let leaf = CertificateDer::from_pem_slice(issued.cert.as_bytes()).expect("the leaf parses");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("a root");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .expect("a verifier");
        use rustls::client::danger::ServerCertVerifier as _;
        let name = ServerName::try_from("guard.team.svc").expect("a name");
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .expect("the leaf verifies for its Service name");
        let other = ServerName::try_from("evil.team.svc").expect("a name");
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
                .is_err()
        );
    }
}
