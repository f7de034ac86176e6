//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The controller's metrics, kept in one registry.
pub struct Metrics {
    registry: Registry,
    leading: Gauge,
    restores: Counter,
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
        Self {
            registry,
            leading,
            restores,
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

    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone)]
pub struct State {
    pub ready: watch::Receiver<bool>,
    pub leading: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

pub async fn serve(listener: TcpListener, state: State) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!(error = %err, "health and metrics server stopped");
    }
}

async fn readyz(Extract(state): Extract<State>) -> impl IntoResponse {
    if *state.ready.borrow() {
        let role = if *state.leading.borrow() {
            "leader"
        } else {
            "follower"
        };
        (StatusCode::OK, format!("ok ({role})"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the API server yet".to_owned(),
        )
    }
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
