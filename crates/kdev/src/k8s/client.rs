//! From kubectl's flags to a connected client, and API errors a person can act on.
//!
//! Config is found as kubectl finds it: `--kubeconfig` if given; else the files
//! listed in `KUBECONFIG` (merged; missing ones skipped); else `~/.kube/config`;
//! else, inside a pod, the service account.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::names::validate_dns_label;
use crate::error::usage;

/// kubectl's global flags, as every command takes them. The CLI fills this
/// in; no command module owns it.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// Every `-n` given, in order (only `kdev logs` reads more than the last).
    pub namespaces: Vec<String>,
}

/// A client with the namespace and server it was resolved for.
#[derive(Clone)]
pub struct Kube {
    pub client: Client,
    /// What the client was built from, for [`Kube::streaming_client`].
    config: Config,
    /// The `-n` namespace, else the context's, else "default".
    pub namespace: String,
    /// The API server's URL, for error messages.
    pub server: String,
}

/// Where the config came from, for error messages.
enum Source {
    Flag(PathBuf),
    Env(Vec<PathBuf>),
    Home(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(path) | Source::Home(path) => write!(f, "{}", path.display()),
            Source::Env(paths) => {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(f, "KUBECONFIG ({})", list.join(":"))
            }
        }
    }
}

/// Resolves the global flags into a client. Fails with a usage error (exit 2)
/// for a bad flag, such as an unknown context, and never contacts the server.
pub async fn connect(global: &Flags) -> anyhow::Result<Kube> {
    let config = load_config(global).await?;
    // A repeated -n means the last one, as kubectl reads repeated flags
    // (only `kdev logs` reads them all).
    let namespace = global
        .namespaces
        .last()
        .cloned()
        .unwrap_or_else(|| config.default_namespace.clone());
    validate_dns_label("namespace", &namespace)?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config.clone())
        .with_context(|| format!("failed to build a client for the API server at {server}"))?;
    Ok(Kube {
        client,
        config,
        namespace,
        server,
    })
}

async fn load_config(global: &Flags) -> anyhow::Result<Config> {
    let Some((kubeconfig, source)) = read_kubeconfig(global.kubeconfig.as_deref())? else {
        if let Some(context) = &global.context {
            return Err(usage(format!(
                "--context {context:?} given, but no kubeconfig was found (KUBECONFIG is unset and ~/.kube/config does not exist)"
            )));
        }
        let mut config = Config::incluster().map_err(|err| {
            anyhow::anyhow!(
                "no kubeconfig found and not running in a pod ({err}); pass --kubeconfig, set KUBECONFIG, \
                 or start a local cluster with `kdev cluster up` and `export KUBECONFIG=$(kdev cluster kubeconfig)`"
            )
        })?;
        // Verify the API server as `kubernetes.default.svc`, a name every
        // cluster's serving certificate carries, rather than the Service's
        // IP, which some leave out (kwokctl's, so the local cluster's).
        // The cluster's CA still decides; only the name checked differs.
        config.tls_server_name = Some("kubernetes.default.svc".into());
        tune(&mut config);
        return Ok(config);
    };

    let context = match global
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
    {
        Some(context) => context,
        None => {
            return Err(usage(format!(
                "{source} has no current context; pass --context (available: {})",
                context_names(&kubeconfig)
            )));
        }
    };
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        return Err(usage(format!(
            "context {context:?} not found in {source} (available: {})",
            context_names(&kubeconfig)
        )));
    }
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..KubeConfigOptions::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("failed to load context {context:?} from {source}"))?;
    tune(&mut config);
    Ok(config)
}

/// Fails fast when nothing listens, rather than after kube's default 30 s.
fn tune(config: &mut Config) {
    config.connect_timeout = Some(Duration::from_secs(10));
}

fn read_kubeconfig(flag: Option<&Path>) -> anyhow::Result<Option<(Kubeconfig, Source)>> {
    if let Some(path) = flag {
        let kubeconfig = Kubeconfig::read_from(path).map_err(|err| {
            usage(format!(
                "failed to read kubeconfig {} given by --kubeconfig: {err}",
                path.display()
            ))
        })?;
        return Ok(Some((kubeconfig, Source::Flag(path.to_owned()))));
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        // kubectl skips listed files that do not exist.
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty() && p.exists())
            .collect();
        if !paths.is_empty() {
            let mut merged = Kubeconfig::default();
            for path in &paths {
                let one = Kubeconfig::read_from(path).map_err(|err| {
                    usage(format!(
                        "failed to read kubeconfig {} listed in KUBECONFIG: {err}",
                        path.display()
                    ))
                })?;
                merged = merged
                    .merge(one)
                    .with_context(|| format!("failed to merge kubeconfig {}", path.display()))?;
            }
            return Ok(Some((merged, Source::Env(paths))));
        }
    }
    let Some(home) = std::env::var_os("HOME") else {
        return Ok(None);
    };
    let path = PathBuf::from(home).join(".kube").join("config");
    if !path.exists() {
        return Ok(None);
    }
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|err| {
        usage(format!(
            "failed to read kubeconfig {}: {err}",
            path.display()
        ))
    })?;
    Ok(Some((kubeconfig, Source::Home(path))))
}

fn context_names(kubeconfig: &Kubeconfig) -> String {
    if kubeconfig.contexts.is_empty() {
        return "none".into();
    }
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    names.join(", ")
}

impl Kube {
    /// The same cluster as `user` (`Impersonate-User`), with the groups the
    /// API server gives that user (a ServiceAccount's own). What the
    /// dashboard acts as: the caller needs `impersonate` on that user.
    pub fn impersonating(&self, user: &str) -> anyhow::Result<Kube> {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config.clone()).with_context(|| {
            format!(
                "failed to build a client acting as {user} for the API server at {}",
                self.server
            )
        })?;
        Ok(Kube {
            client,
            config,
            namespace: self.namespace.clone(),
            server: self.server.clone(),
        })
    }

    /// The API server's URL, as the kubeconfig gives it.
    pub fn cluster_url(&self) -> &http::Uri {
        &self.config.cluster_url
    }

    /// The CA certificates (DER) the kubeconfig trusts for the API server,
    /// if it names any.
    pub fn root_certs(&self) -> Option<&[Vec<u8>]> {
        self.config.root_cert.as_deref()
    }

    /// A client for long-lived byte streams (the swap tunnel's port-forward)
    /// whose connections to the API server set `TCP_NODELAY`. kube's own
    /// client leaves Nagle's algorithm on, which holds back small WebSocket
    /// frames until the previous one is acknowledged: up to a delayed-ACK
    /// timeout (~40 ms) on an interactive request. Same base URI, TLS and
    /// credentials as [`Kube::client`].
    pub fn streaming_client(&self) -> anyhow::Result<Client> {
        use hyper_util::client::legacy::connect::HttpConnector;
        use kube::client::ConfigExt as _;
        use tower::ServiceBuilder;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.config.connect_timeout);
        let https = self
            .config
            .rustls_https_connector_with_connector(http)
            .context("failed to set up TLS for the API server")?;
        let hyper =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, kube::client::Body>(https);
        let service = ServiceBuilder::new()
            .layer(self.config.base_uri_layer())
            .option_layer(
                self.config
                    .auth_layer()
                    .context("failed to set up API credentials")?,
            )
            .layer(
                self.config
                    .extra_headers_layer()
                    .context("failed to set up API headers")?,
            )
            .map_err(|err| Box::new(err) as Box<dyn std::error::Error + Send + Sync>)
            .service(hyper);
        Ok(Client::new(service, self.config.default_namespace.clone()))
    }

    /// Turns a failed API call into a message saying what failed and what to
    /// do: `action` names the call and its object, e.g. "get deployment team/web".
    pub fn explain(&self, err: kube::Error, action: impl fmt::Display) -> anyhow::Error {
        explain(&self.server, err, action)
    }
}

/// See [`Kube::explain`].
pub fn explain(server: &str, err: kube::Error, action: impl fmt::Display) -> anyhow::Error {
    match &err {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => {
                    "; the credentials in the kubeconfig were rejected: log in again or use another --context"
                }
                403 => "; ask a cluster admin for this permission, or use another --context",
                404 => "; check the name and the namespace (-n)",
                409 => "; someone else changed it at the same time: run the command again",
                _ => "",
            };
            anyhow::Error::new(Refused {
                code: status.code,
                text: format!("failed to {action}: {}{hint}", status.message),
            })
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => anyhow::anyhow!(
            "failed to {action}: cannot reach the API server at {server}: {}; is the cluster running? \
             (for a local one: `kdev cluster up`)",
            root_cause(&err)
        ),
        _ => anyhow::Error::new(err).context(format!("failed to {action}")),
    }
}

/// The API server refused a call; the text says what, why and what to do.
#[derive(Debug)]
pub struct Refused {
    /// The HTTP status code (403 forbidden, 404 not found, ...).
    pub code: u16,
    text: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Refused {}

/// The status code of the API server's refusal somewhere in `err`'s chain.
pub fn refused_with(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Refused>())
        .map(|refused| refused.code)
}

/// The innermost error's message: for a refused connection that is
/// "Connection refused (os error 111)" rather than hyper's "client error (Connect)".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// True when the error is the API server's 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// Whether the API server serves `api`'s resource (a CRD's may not be
/// installed): one list of at most one object. Any error but 404 is the
/// caller's to judge (a 403 says the resource exists).
pub async fn served<K>(api: &kube::Api<K>) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(err) if is_not_found(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// True when the error is the API server's 409 (conflict or already exists).
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}
