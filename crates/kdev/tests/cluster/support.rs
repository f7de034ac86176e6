//! Helpers: a client for the test cluster, a namespace per test, polling.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The kubeconfig of the cluster under test. Panics (fails the test) when
/// none is set: these tests never pass without a real control plane.
pub fn kubeconfig() -> PathBuf {
    match std::env::var_os("KDEV_TEST_KUBECONFIG") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "KDEV_TEST_KUBECONFIG is not set: these integration tests need a running local cluster. \
             Run `scripts/test`, which starts one, or `kdev cluster up --name kdev-test` and \
             `export KDEV_TEST_KUBECONFIG=$(kdev cluster kubeconfig --name kdev-test)`"
        ),
    }
}

pub async fn client() -> Client {
    let path = kubeconfig();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the test kubeconfig loads");
    Client::try_from(config).expect("a client for the test cluster")
}

/// The kdev binary built for these tests.
pub fn kdev() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kdev"))
}

/// The pinned kubectl that `scripts/install-control-plane` built.
pub fn kubectl() -> Command {
    let binaries =
        kdev::cluster::Binaries::locate().expect("the control-plane binaries are installed");
    let mut command = Command::new(binaries.kubectl);
    command.arg("--kubeconfig").arg(kubeconfig());
    command
}

/// A namespace that exists for one test.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

/// Runs `test` in a fresh namespace named `<prefix>-<unique>` and deletes
/// the namespace afterwards, also when the test panics.
pub async fn with_namespace<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(TestNamespace) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let name = unique_name(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([("kdev.dev/test".to_owned(), "true".to_owned())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap_or_else(|err| panic!("cannot create namespace {name}: {err}"));
    // Pods are refused until the namespace's default ServiceAccount exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    eventually(
        Duration::from_secs(30),
        "the default ServiceAccount",
        || async { accounts.get_opt("default").await.ok().flatten().map(|_| ()) },
    )
    .await;

    let outcome = AssertUnwindSafe(test(TestNamespace {
        name: name.clone(),
        client: client.clone(),
    }))
    .catch_unwind()
    .await;
    if let Err(err) = namespaces.delete(&name, &DeleteParams::background()).await {
        eprintln!("warning: failed to delete test namespace {name}: {err}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A name unique within this run and across runs.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}{:x}{n}",
        std::process::id() % 4096,
        nanos % 65536
    )
}

/// Polls `check` every 100 ms until it returns `Some`; panics after `timeout`
/// naming what it waited for.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
