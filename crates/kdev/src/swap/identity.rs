//! `--as-service-account`: the local process acts as the swapped
//! Deployment's ServiceAccount, so it meets exactly the RBAC the container
//! would, not its developer's.
//!
//! # Expected flow
//! 1. After the proxy step, a token is requested for the ServiceAccount
//!    (TokenRequest, `serviceaccounts/token`), **bound to the session's token
//!    Secret**. That Secret is owned by the session Lease, so when the Lease
//!    goes (the session's end, the reaper, garbage collection) the Secret
//!    goes and the API server stops accepting the token. The Lease itself
//!    cannot be a bound object: TokenRequest binds to Pods, Secrets and Nodes
//!    only.
//! 2. The token, the API server's CA and the namespace are written where a
//!    pod finds them, under `$KDEV_ROOT`
//!    (`var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`),
//!    with a kubeconfig beside them that reads the token file
//!    (`tokenFile`, which client-go and kube-rs read again as it changes);
//!    `KUBECONFIG`, `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`
//!    point the process at them and at the API server kdev itself uses.
//! 3. The token lives an hour and is requested again at 80 % of its life,
//!    the file replaced in one rename, for as long as the session lasts.
//!
//! # Guarantees
//! - The token dies with the session, whatever kills it: nothing to clean.
//! - The token's value is only ever in that file (mode 0600, in the session
//!   folder that is removed at the end) and the kubeconfig names the file,
//!   not the value.
//!
//! # Assumptions
//! - The developer may create `serviceaccounts/token` for that
//!   ServiceAccount; when not, and the identity was not asked for
//!   explicitly, the process runs with the developer's own kubeconfig and a
//!   notice says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;

use crate::host::make_private_dir;
use crate::k8s::Kube;

/// `--as-service-account` / `--no-service-account`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Choice {
    /// On when the pod template names a ServiceAccount.
    #[default]
    Auto,
    /// On, with the template's ServiceAccount or `default`.
    On,
    Off,
}

/// Where a pod finds its ServiceAccount's files, below `$KDEV_ROOT`.
pub const SERVICE_ACCOUNT_DIR: &str = "var/run/secrets/kubernetes.io/serviceaccount";

/// How long a requested token lives (the API server's minimum is 10 min).
const TOKEN_LIFE: Duration = Duration::from_secs(3600);

/// The identity the local process got: what to add to its environment, and
/// the task that keeps its token fresh (aborted with the session).
pub struct Established {
    pub service_account: String,
    pub vars: BTreeMap<String, String>,
    refresh: tokio::task::JoinHandle<()>,
}

impl Drop for Established {
    fn drop(&mut self) {
        self.refresh.abort();
    }
}

/// Which ServiceAccount the choice gives, and why none when none.
pub fn service_account(template: &PodSpec, choice: Choice) -> Result<String, String> {
    #[allow(deprecated)]
    let named = template
        .service_account_name
        .clone()
        .or_else(|| template.service_account.clone())
        .filter(|n| !n.is_empty());
    match (choice, named) {
        (Choice::Off, _) => Err("--no-service-account".into()),
        (Choice::Auto, None) => Err(
            "the pod template names no ServiceAccount (--as-service-account uses `default`)".into(),
        ),
        (Choice::Auto, Some(_)) if template.automount_service_account_token == Some(false) => {
            Err("the pod template sets automountServiceAccountToken: false, so its container has no token either (--as-service-account gives one anyway)".into())
        }
        (_, Some(name)) => Ok(name),
        (Choice::On, None) => Ok("default".into()),
    }
}

/// Requests the token and writes the files. `secret` is the session's token
/// Secret (owned by its Lease), which the token is bound to.
pub async fn establish(
    kube: &Kube,
    service_account: &str,
    secret: &str,
    root: &Path,
) -> anyhow::Result<Established> {
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let bound = secrets
        .get(secret)
        .await
        .map_err(|err| kube.explain(err, format!("read the session's Secret {secret}")))?;
    let uid = bound.metadata.uid.clone().unwrap_or_default();
    let dir = root.join(SERVICE_ACCOUNT_DIR);
    make_private_dir(&dir)?;
    let token_path = dir.join("token");
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let request = Requester {
        accounts,
        service_account: service_account.to_owned(),
        secret: secret.to_owned(),
        uid,
        what: format!(
            "request a token for serviceaccount {}/{service_account} (serviceaccounts/token create)",
            kube.namespace
        ),
    };
    let life = request.write(kube, &token_path).await?;

    let ca = ca_pem(kube).await?;
    write_private(&dir.join("ca.crt"), ca.as_bytes())?;
    write_private(&dir.join("namespace"), kube.namespace.as_bytes())?;
    let url = kube.cluster_url();
    let kubeconfig = dir.join("kubeconfig");
    write_private(
        &kubeconfig,
        render_kubeconfig(
            &url.to_string(),
            &dir.join("ca.crt"),
            &token_path,
            &kube.namespace,
            service_account,
        )
        .as_bytes(),
    )?;
    let (host, port) = host_port(url);
    let vars = BTreeMap::from([
        ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
        ("KUBERNETES_SERVICE_HOST".to_owned(), host),
        ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_string()),
    ]);
    let refresh = tokio::spawn({
        let kube = kube.clone();
        async move {
            let mut life = life;
            loop {
                tokio::time::sleep(life.mul_f64(0.8)).await;
                match request.write(&kube, &token_path).await {
                    Ok(next) => life = next,
                    Err(err) => {
                        eprintln!("kdev: failed to renew the ServiceAccount token: {err:#}");
                        life = Duration::from_secs(60);
                    }
                }
            }
        }
    });
    Ok(Established {
        service_account: service_account.to_owned(),
        vars,
        refresh,
    })
}

/// One TokenRequest, bound to the session's Secret.
struct Requester {
    accounts: Api<ServiceAccount>,
    service_account: String,
    secret: String,
    uid: String,
    what: String,
}

impl Requester {
    /// Requests a token and replaces the file in one rename; returns how
    /// long the token lives.
    async fn write(&self, kube: &Kube, path: &Path) -> anyhow::Result<Duration> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // The API server's own audience, as a pod's projected token.
                audiences: Some(Vec::new()),
                expiration_seconds: Some(TOKEN_LIFE.as_secs() as i64),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(self.secret.clone()),
                    uid: Some(self.uid.clone()),
                }),
            }),
            ..TokenRequest::default()
        };
        let answer: TokenRequest = self
            .accounts
            .create_subresource(
                "token",
                &self.service_account,
                &PostParams::default(),
                &request,
            )
            .await
            .map_err(|err| kube.explain(err, &self.what))?;
        let status = answer
            .status
            .ok_or_else(|| anyhow::anyhow!("failed to {}: the answer holds no token", self.what))?;
        let token = status
            .token
            .ok_or_else(|| anyhow::anyhow!("failed to {}: the answer holds no token", self.what))?;
        let fresh = path.with_extension("new");
        write_private(&fresh, token.as_bytes())?;
        std::fs::rename(&fresh, path)
            .with_context(|| format!("failed to replace {}", path.display()))?;
        let now = jiff::Timestamp::now();
        let left = status
            .expiration_timestamp
            .and_then(|at| Duration::try_from(at.0.duration_since(now)).ok())
            .unwrap_or(TOKEN_LIFE);
        Ok(left.max(Duration::from_secs(60)))
    }
}

/// The CA that verifies the API server at kdev's own URL: the kubeconfig's,
/// else the cluster's as pods get it (`kube-root-ca.crt`).
async fn ca_pem(kube: &Kube) -> anyhow::Result<String> {
    if let Some(certs) = kube.root_certs()
        && !certs.is_empty()
    {
        return Ok(certs.iter().map(|der| pem("CERTIFICATE", der)).collect());
    }
    let maps: Api<ConfigMap> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let map = maps
        .get("kube-root-ca.crt")
        .await
        .map_err(|err| kube.explain(err, "read configmap kube-root-ca.crt"))?;
    map.data
        .and_then(|d| d.get("ca.crt").cloned())
        .ok_or_else(|| anyhow::anyhow!("configmap kube-root-ca.crt holds no ca.crt"))
}

/// DER as PEM: base64 in lines of 64.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A kubeconfig for the ServiceAccount that names files, not values.
fn render_kubeconfig(
    server: &str,
    ca: &Path,
    token: &Path,
    namespace: &str,
    account: &str,
) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let server = server.trim_end_matches('/');
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: kdev\nclusters:\n- name: kdev\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {}\n  user:\n    tokenFile: {}\ncontexts:\n- name: kdev\n  context:\n    cluster: kdev\n    user: {}\n    namespace: {}\n",
        quote(server),
        quote(&ca.display().to_string()),
        quote(&format!("system:serviceaccount:{namespace}:{account}")),
        quote(&token.display().to_string()),
        quote(&format!("system:serviceaccount:{namespace}:{account}")),
        quote(namespace),
    )
}

/// The API server's host (bare, as the in-cluster variable holds it) and port.
fn host_port(url: &http::Uri) -> (String, u16) {
    let host = url
        .host()
        .unwrap_or("127.0.0.1")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url
        .port_u16()
        .unwrap_or(if url.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    (host, port)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::host::write_file(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).expect("a pod spec")
    }

    #[test]
    fn the_template_decides_unless_told() {
        let named = spec(serde_json::json!({"serviceAccountName": "ctl", "containers": []}));
        let unnamed = spec(serde_json::json!({"containers": []}));
        let no_token = spec(serde_json::json!({
            "serviceAccountName": "ctl", "automountServiceAccountToken": false, "containers": []
        }));
        assert_eq!(service_account(&named, Choice::Auto), Ok("ctl".into()));
        assert!(service_account(&unnamed, Choice::Auto).is_err());
        assert!(
            service_account(&no_token, Choice::Auto)
                .unwrap_err()
                .contains("automount")
        );
        assert_eq!(service_account(&no_token, Choice::On), Ok("ctl".into()));
        assert_eq!(service_account(&unnamed, Choice::On), Ok("default".into()));
        assert!(service_account(&named, Choice::Off).is_err());
    }

    #[test]
    fn the_kubeconfig_names_files_and_the_in_cluster_address_is_bare() {
        let text = render_kubeconfig(
            "https://127.0.0.1:6443/",
            Path::new("/r/ca.crt"),
            Path::new("/r/token"),
            "team",
            "ctl",
        );
        assert!(
            text.contains("server: \"https://127.0.0.1:6443\""),
            "{text}"
        );
        assert!(text.contains("tokenFile: \"/r/token\""), "{text}");
        assert!(!text.contains("token:"), "no value: {text}");
        let uri: http::Uri = "https://[::1]:6443".parse().unwrap();
        assert_eq!(host_port(&uri), ("::1".into(), 6443));
        let uri: http::Uri = "https://api.example.com".parse().unwrap();
        assert_eq!(host_port(&uri), ("api.example.com".into(), 443));
    }

    #[test]
    fn pem_wraps_at_64() {
        let text = pem("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }
}
