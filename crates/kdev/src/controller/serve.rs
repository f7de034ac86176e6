//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The controller's metrics, kept in one registry.
pub struct Metrics {
    registry: Registry,
    leading: Gauge,
    restores: Counter,
    telepresence: Family<VerdictLabel, Counter>,
    env_checks: Counter,
    env_changes: Family<VerdictLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kdev_controller");
        let leading = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leading.clone(),
        );
        let info: Gauge = Gauge::default();
        info.set(1);
        registry.register(
            "build_info",
            concat!("kdev version ", env!("CARGO_PKG_VERSION")),
            info,
        );
        let restores = Counter::default();
        registry.register(
            "swap_restores",
            "Swap sessions this replica restored",
            restores.clone(),
        );
        let telepresence = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "telepresence_proxies",
            "Dead telepresence 1 proxies handled, by verdict (restored, left-for-human)",
            telepresence.clone(),
        );
        let env_checks = Counter::default();
        registry.register(
            "env_checks",
            "Environments the scheduler looked at (a namespace changed or a schedule edge came)",
            env_checks.clone(),
        );
        let env_changes = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "env_transitions",
            "Environments the scheduler put to sleep or woke, by verdict (asleep, awake)",
            env_changes.clone(),
        );
        Self {
            registry,
            leading,
            restores,
            telepresence,
            env_checks,
            env_changes,
        }
    }
}

impl Metrics {
    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    pub fn restored(&self) {
        self.restores.inc();
    }

    pub fn telepresence(&self, verdict: crate::cleanup::telepresence::Verdict) {
        let verdict = serde_json::to_value(verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.telepresence
            .get_or_create(&VerdictLabel { verdict })
            .inc();
    }

    pub fn env_checked(&self) {
        self.env_checks.inc();
    }

    pub fn env_transition(&self, awake: bool) {
        let verdict = if awake { "awake" } else { "asleep" }.to_owned();
        self.env_changes
            .get_or_create(&VerdictLabel { verdict })
            .inc();
    }

    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone)]
pub struct State {
    /// The API server answered.
    pub connected: watch::Receiver<bool>,
    /// The reaper's watches hold a full list.
    pub synced: watch::Receiver<bool>,
    pub leading: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

/// Serves until the listener fails; the controller ends when this returns.
pub async fn serve(listener: TcpListener, state: State) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .await
        .map_err(|err| anyhow::anyhow!("the health and metrics server stopped: {err}"))
}

/// Ready once the API server answered and the watches have synced: a replica
/// that cannot list what it must watch (missing RBAC, say) never turns ready.
async fn readyz(Extract(state): Extract<State>) -> impl IntoResponse {
    if !*state.connected.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the API server yet".to_owned(),
        );
    }
    if !*state.synced.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "watches of session leases and swapped deployments have not synced yet".to_owned(),
        );
    }
    let role = if *state.leading.borrow() {
        "leader"
    } else {
        "follower"
    };
    (StatusCode::OK, format!("ok ({role})"))
}

async fn metrics(Extract(state): Extract<State>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
