//! guard: the example of kdev's controller dev loop (README, "Develop a
//! controller with kdev").
//!
//! - A controller (kube-runtime) over the ConfigMaps labelled
//!   `guard.kdev.dev/watch`: each gets the annotation
//!   `guard.kdev.dev/checked: <VERSION>`.
//! - A validating webhook (HTTPS, `POST /validate` on `GUARD_PORT`, 9443)
//!   that denies a ConfigMap labelled `guard.kdev.dev/deny=true` with
//!   `denied by guard <VERSION>`.
//!
//! Its serving certificate is read from `$KDEV_ROOT` plus
//! controller-runtime's folder (`/tmp/k8s-webhook-server/serving-certs`),
//! so the same binary finds it in a pod (no `KDEV_ROOT`) and under
//! `kdev swap`. Its client is `kube::Client::try_default()`: `KUBECONFIG`
//! first, which `kdev swap` points at the Deployment's ServiceAccount.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};

/// What the webhook and the controller say; the dev loop's benchmark edits it.
const VERSION: &str = "v1";

const WATCH_LABEL: &str = "guard.kdev.dev/watch";
const DENY_LABEL: &str = "guard.kdev.dev/deny";
const CHECKED: &str = "guard.kdev.dev/checked";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let client = Client::try_default()
        .await
        .context("failed to find the API server (KUBECONFIG or in-cluster)")?;
    let webhook = tokio::spawn(serve_webhook());
    let controller = tokio::spawn(run_controller(client));
    tracing::info!(version = VERSION, "guard started");
    // Either ending ends the process: nothing runs unwatched.
    tokio::select! {
        ended = webhook => ended.context("the webhook server panicked")?,
        ended = controller => ended.context("the controller panicked")?,
    }
}

async fn run_controller(client: Client) -> anyhow::Result<()> {
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    Controller::new(maps.clone(), watcher::Config::default().labels(WATCH_LABEL))
        .run(reconcile, error_policy, Arc::new(maps))
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::warn!(error = %err, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("failed to annotate the ConfigMap: {0}")]
struct Failed(#[source] kube::Error);

async fn reconcile(map: Arc<ConfigMap>, maps: Arc<Api<ConfigMap>>) -> Result<Action, Failed> {
    if map.annotations().get(CHECKED).map(String::as_str) != Some(VERSION) {
        let patch = json!({ "metadata": { "annotations": { CHECKED: VERSION } } });
        maps.patch(
            &map.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Failed)?;
        tracing::info!(configmap = %map.name_any(), version = VERSION, "checked");
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<ConfigMap>, _: &Failed, _: Arc<Api<ConfigMap>>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

/// The AdmissionReview answer for a request.
fn review(request: &Value) -> Value {
    let uid = request["request"]["uid"].clone();
    let denied = request["request"]["object"]["metadata"]["labels"][DENY_LABEL] == "true";
    let mut response = json!({ "uid": uid, "allowed": !denied });
    if denied {
        response["status"] =
            json!({ "code": 403, "message": format!("denied by guard {VERSION}") });
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response })
}

async fn serve_webhook() -> anyhow::Result<()> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let root = std::env::var("KDEV_ROOT").unwrap_or_default();
    let dir = std::env::var("GUARD_CERT_DIR")
        .unwrap_or_else(|_| "/tmp/k8s-webhook-server/serving-certs".into());
    let dir = format!("{root}{dir}");
    let certs = CertificateDer::pem_file_iter(format!("{dir}/tls.crt"))
        .with_context(|| format!("failed to read {dir}/tls.crt"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("failed to read {dir}/tls.crt"))?;
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/tls.key"))
        .with_context(|| format!("failed to read {dir}/tls.key"))?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("failed to set up TLS")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("failed to load the serving certificate")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let port: u16 = std::env::var("GUARD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9443);
    let app = axum::Router::new()
        .route(
            "/validate",
            axum::routing::post(|axum::Json(request): axum::Json<Value>| async move {
                axum::Json(review(&request))
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    // Loopback under kdev swap is enough; a pod needs every address.
    let host = if root.is_empty() {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("failed to listen on {host}:{port}"))?;
    tracing::info!(%host, port, "webhook serving");
    loop {
        let (socket, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(socket).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_denies_only_what_is_labelled() {
        let ask = |labels: Value| {
            review(
                &json!({ "request": { "uid": "u", "object": { "metadata": { "labels": labels } } } }),
            )
        };
        let denied = ask(json!({ DENY_LABEL: "true" }));
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(
            denied["response"]["status"]["message"],
            format!("denied by guard {VERSION}")
        );
        assert_eq!(denied["response"]["uid"], "u");
        assert_eq!(ask(json!({}))["response"]["allowed"], true);
    }
}
