//! Waiting until a local cluster can run pods.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::kwokctl::Kwokctl;
use crate::progress::Step;

/// A client for the cluster behind `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("failed to read {}", kubeconfig.display()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("failed to load the local cluster's kubeconfig")?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).context("failed to build a client for the local cluster")
}

/// True when the API server behind `kubeconfig` answers.
pub async fn served(kubeconfig: &Path) -> bool {
    let Ok(client) = client(kubeconfig).await else {
        return false;
    };
    tokio::time::timeout(Duration::from_secs(3), client.apiserver_version())
        .await
        .is_ok_and(|answer| answer.is_ok())
}

/// Waits for what a test or demo needs before its first request: a Ready
/// node, the default ServiceAccount (without it pods are refused), and kwok's
/// Logs/Exec/PortForward APIs being served.
pub async fn wait(
    kubeconfig: &Path,
    kwokctl: &Kwokctl<'_>,
    wanted: super::Nodes,
    deadline: Instant,
) -> anyhow::Result<()> {
    use super::Nodes;
    let client = client(kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client.clone());

    let step = Step::start("waiting for Ready nodes");
    if wanted != Nodes::Real {
        let fake = nodes
            .list(&ListParams::default().labels("type=kwok"))
            .await
            .map(|list| !list.items.is_empty())?;
        if !fake {
            kwokctl.scale_nodes(1).await?;
        }
    }
    poll(deadline, "the cluster's nodes to be Ready", || async {
        let list = nodes.list(&ListParams::default()).await?;
        let real = list
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(super::node::NODE_NAME) && is_ready(n));
        let fake = list
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() != Some(super::node::NODE_NAME) && is_ready(n));
        let done = match wanted {
            Nodes::Real => real,
            Nodes::Kwok => fake,
            Nodes::Both => real && fake,
        };
        Ok(done.then_some(()))
    })
    .await?;
    step.done();
    if wanted != Nodes::Kwok {
        let step = Step::start("waiting for cluster DNS (CoreDNS)");
        super::node::dns_service(&client).await?;
        poll(deadline, "CoreDNS to be ready", || async {
            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(client.clone(), "kube-system");
            let list = pods
                .list(&ListParams::default().labels("k8s-app=kube-dns"))
                .await?;
            Ok(list
                .items
                .iter()
                .any(crate::k8s::objects::pod_ready)
                .then_some(()))
        })
        .await?;
        step.done();
    }

    let step = Step::start("waiting for the default ServiceAccount and kwok's APIs");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    poll(deadline, "the default ServiceAccount", || async {
        match accounts.get_opt("default").await? {
            Some(_) => Ok(Some(())),
            None => Ok(None),
        }
    })
    .await?;
    poll(
        deadline,
        "kwok's Logs, Exec and PortForward APIs",
        || async {
            match client
                .list_api_group_resources("kwok.x-k8s.io/v1alpha1")
                .await
            {
                Ok(list) => {
                    let served: Vec<String> = list.resources.into_iter().map(|r| r.kind).collect();
                    let all = super::kwokctl::KWOK_CRDS
                        .iter()
                        .all(|kind| served.iter().any(|s| s == kind));
                    Ok(all.then_some(()))
                }
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
                Err(err) => Err(err),
            }
        },
    )
    .await?;
    step.done();
    Ok(())
}

pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Calls `check` every 200 ms until it returns `Some`, or fails at `deadline`
/// naming what was awaited and the last error seen.
async fn poll<T, F, Fut>(deadline: Instant, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, kube::Error>>,
{
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err),
        }
        if Instant::now() >= deadline {
            let cause = last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            anyhow::bail!(
                "timed out waiting for {what}{cause}; raise --timeout or look at the component logs"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
