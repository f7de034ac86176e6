//! The environments dashboard, served by `kdev controller --dashboard`:
//! every environment with its state, workloads, last sleep or wake and next
//! transition, updated live; and three actions (wake, sleep now, keep awake
//! until), each with a reason that goes into the Event.
//!
//! Reading comes from watches ([`view`]). Actions are written as the
//! dashboard's own ServiceAccount (`kdev-dashboard`, impersonated): a wake
//! needs no more than `kdev-env-starter` (read workloads, patch their scale
//! subresource, write Events); sleep now and keep awake record what they
//! change, which takes `kdev-env-keeper` (see `deploy/dashboard`). The
//! controller's own rights never write on the dashboard's behalf, except to
//! place the wakers of an environment put to sleep, as at a scheduled sleep.
//!
//! It listens on loopback by default: whoever may port-forward to the
//! controller reaches it (`kdev envs dashboard`), or an auth proxy the team
//! puts in front (`deploy/dashboard-auth-proxy`), which reaches it on a
//! unix socket of its own in the pod (`--dashboard-proxy-socket`): only
//! requests on that socket may name the signed-in user (`X-Forwarded-Email`,
//! `X-Forwarded-User`), since a port-forward reaches every TCP port of the
//! pod but no socket file. What every request must pass is in [`guard`].

pub mod chart;
pub mod guard;
pub mod open;
pub mod page;
pub mod view;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde::{Deserialize, Serialize};

use crate::envs;
use crate::envs::act::{self, Config, Direction, Selection};
use crate::k8s::Kube;
use view::{Row, View};

/// How the dashboard is served and acts.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: std::net::SocketAddr,
    /// The user actions are written as (`system:serviceaccount:NS:kdev-dashboard`).
    pub act_as: String,
    /// The wakers' image for environments put to sleep; `None` places none.
    pub waker: Option<String>,
    /// External host names it is served as (behind an auth proxy), beside
    /// the loopback names.
    pub hosts: Vec<String>,
    /// A unix socket for an auth proxy in the pod, whose requests may name
    /// the signed-in user.
    pub proxy_socket: Option<std::path::PathBuf>,
    /// Which namespaces are environments: the only ones shown and acted on.
    pub scope: envs::Scope,
}

/// The most live views (`/events` streams) served at once; one more is
/// refused with 503. Each holds a connection and a copy of its last update.
pub const MAX_LIVE_VIEWS: usize = 256;

/// The longest reason an action takes (an Event's note holds 1 kB).
const MAX_REASON: usize = 200;

#[derive(Clone)]
struct App {
    view: View,
    /// The controller's client: reads (filters) and wakers.
    kube: Kube,
    /// The dashboard's own identity: every action's write.
    acting: Kube,
    act_as: String,
    waker: Option<String>,
    /// The external hosts it answers to, beside loopback names.
    hosts: std::sync::Arc<Vec<String>>,
    /// Whether the requests are the auth proxy's (its socket): only then do
    /// its user headers name who acted.
    proxied: bool,
    /// Every action's outcome, for the live streams: an action runs to its
    /// end even when its request is gone, and says so here.
    said: tokio::sync::broadcast::Sender<Said>,
    /// The live views' updates, rendered once per change and distinct
    /// filter, whatever the number of views showing it.
    renders: std::sync::Arc<std::sync::Mutex<Renders>>,
    /// Permits for live views ([`MAX_LIVE_VIEWS`]).
    live_views: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The updates rendered for the view's change number `change`, by filter.
#[derive(Default)]
struct Renders {
    change: u64,
    by_filter: std::collections::HashMap<(String, String, usize), std::sync::Arc<String>>,
}

/// An action's outcome, as the live stream sends it (event `said`).
#[derive(Clone, Debug, Serialize)]
struct Said {
    namespace: String,
    ok: bool,
    message: String,
}

/// Serves `router` on `listener` as `axum::serve` does, with hyper's
/// `half_close` on: a client that sends its form and goes away (a closed
/// tab, a proxy's timeout) has its action run. Without it hyper drops the
/// request's handler when it reads the client's end before the handler has
/// read the form, which CI caught as an action that never ran.
async fn serve_half_close<L: axum::serve::Listener>(
    mut listener: L,
    router: Router,
) -> std::io::Result<()> {
    use tower::ServiceExt as _;
    loop {
        let (io, _) = listener.accept().await;
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "a dashboard connection ended");
            }
        });
    }
}

/// Serves until the listener fails. The watches run alongside.
pub async fn serve(
    listener: tokio::net::TcpListener,
    kube: Kube,
    options: Options,
) -> anyhow::Result<()> {
    let (view, watches) = view::start(&kube, &options.scope);
    let acting = kube.impersonating(&options.act_as)?;
    let app = App {
        view,
        kube,
        acting,
        act_as: options.act_as,
        waker: options.waker,
        hosts: std::sync::Arc::new(options.hosts),
        proxied: false,
        said: tokio::sync::broadcast::channel(64).0,
        renders: Default::default(),
        live_views: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_LIVE_VIEWS)),
    };
    let proxied = match &options.proxy_socket {
        Some(path) => {
            // A socket left by an earlier run of this pod would refuse the bind.
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path).map_err(|err| {
                anyhow::anyhow!(
                    "failed to listen on {} (--dashboard-proxy-socket): {err}",
                    path.display()
                )
            })?;
            let router = router(App {
                proxied: true,
                ..app.clone()
            });
            futures::future::Either::Left(async move {
                serve_half_close(listener, router)
                    .await
                    .map_err(|err| anyhow::anyhow!("the dashboard's proxy socket stopped: {err}"))
            })
        }
        None => futures::future::Either::Right(std::future::pending()),
    };
    let server = async {
        serve_half_close(listener, router(app))
            .await
            .map_err(|err| anyhow::anyhow!("the dashboard server stopped: {err}"))
    };
    let watches = futures::future::join_all(watches);
    tokio::select! {
        served = server => served,
        served = proxied => served,
        _ = watches => Err(anyhow::anyhow!("the dashboard's watches ended")),
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/envs", get(api_envs))
        .route("/events", get(events))
        .route("/envs/{namespace}", axum::routing::post(act_on))
        .layer(axum::middleware::from_fn_with_state(app.clone(), checked))
        .with_state(app)
}

/// Every request: answered only when its Host names the dashboard
/// ([`guard::allowed_host`]); every answer hardened ([`guard::harden`]).
async fn checked(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let mut response = if guard::allowed_host(host, &app.hosts) {
        next.run(request).await
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard is not served under that host name; open it as 127.0.0.1 (kdev envs dashboard) or a host named with --dashboard-host\n",
        )
            .into_response()
    };
    guard::harden(response.headers_mut());
    response
}

#[derive(Debug, Default, Deserialize)]
struct Filter {
    #[serde(default)]
    selector: String,
    #[serde(default)]
    owner: String,
    /// The message of the action just done (no-script form posts).
    #[serde(default)]
    said: String,
    /// Which page of rows ([`page::PAGE_ROWS`] each), from 1.
    #[serde(default)]
    page: Option<usize>,
}

impl App {
    /// The rows the filter keeps, or why the filter was refused. The label
    /// selector is judged here against the watched namespaces' labels: no
    /// request to the API server, however many views or changes.
    async fn rows(&self, filter: &Filter) -> (Vec<Row>, Option<String>) {
        self.view.ready().await;
        let now = jiff::Timestamp::now();
        match filter.selector() {
            Ok(selector) => (
                self.view.rows(now, |_, labels| selector.matches(labels)),
                None,
            ),
            Err(problem) => (Vec::new(), Some(problem)),
        }
    }

    /// The live update for `filter` at change number `change`: rendered
    /// by the first view that asks, shared by the others (it carries no
    /// form token; the page's script gives new rows the page's).
    async fn update(&self, filter: &Filter, change: u64) -> std::sync::Arc<String> {
        let key = (
            filter.selector.trim().to_owned(),
            filter.owner.trim().to_owned(),
            filter.page.unwrap_or(1),
        );
        if let Ok(renders) = self.renders.lock()
            && renders.change == change
            && let Some(data) = renders.by_filter.get(&key)
        {
            return data.clone();
        }
        let (rows, _) = self.rows(filter).await;
        let data = std::sync::Arc::new(
            serde_json::json!({
                "summary": page::summary(&rows),
                "rows": page::rows(page::window(&rows, filter.page.unwrap_or(1)), ""),
            })
            .to_string(),
        );
        if let Ok(mut renders) = self.renders.lock() {
            if renders.change != change {
                renders.change = change;
                renders.by_filter.clear();
            }
            renders.by_filter.insert(key, data.clone());
        }
        data
    }
}

impl Filter {
    /// The selector and the owner as one label selector.
    fn selector(&self) -> Result<kdev_contract::selector::Selector, String> {
        let mut text = self.selector.trim().to_owned();
        let owner = self.owner.trim();
        if !owner.is_empty() {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(&format!("{}={owner}", view::OWNER_LABEL));
        }
        text.parse()
            .map_err(|err| format!("the label selector {text:?} is not valid: {err}"))
    }
}

async fn index(
    State(app): State<App>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let cookie = guard::cookie_token(&headers);
    let token = cookie.clone().unwrap_or_else(guard::new_token);
    let (rows, problem) = app.rows(&filter).await;
    let saved: Vec<&envs::savings::Saved> = rows.iter().filter_map(|r| r.saved.as_ref()).collect();
    let savings = chart::section(&saved);
    let html = page::page(&page::Page {
        savings: &savings,
        rows: &rows,
        selector: &filter.selector,
        owner: &filter.owner,
        said: (!filter.said.is_empty()).then_some(filter.said.as_str()),
        problem: problem.as_deref(),
        csrf: &token,
        page: filter.page.unwrap_or(1),
    });
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let body = if gzip {
        gzipped(html.as_bytes())
    } else {
        html.into_bytes()
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if cookie.is_none()
        && let Ok(value) = HeaderValue::from_str(&guard::set_cookie(&token))
    {
        headers.insert(header::SET_COOKIE, value);
    }
    // Read by scripts/bench-dashboard: the server's own time for the page.
    if let Ok(value) = HeaderValue::from_str(&format!(
        "render;dur={:.1}",
        started.elapsed().as_secs_f64() * 1000.0
    )) {
        headers.insert("server-timing", value);
    }
    response
}

/// The page gzipped. flate2 is linked already (image layers); a
/// compression middleware would bring a second stack for one response.
fn gzipped(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// One environment for `/api/envs`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiRow<'a> {
    #[serde(flatten)]
    env: &'a envs::Env,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_awake_until: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<String>,
    seen: &'a str,
    /// What sleeping saved (`kdev envs --savings`'s figures).
    #[serde(skip_serializing_if = "Option::is_none")]
    savings: Option<&'a envs::savings::Saved>,
}

async fn api_envs(State(app): State<App>, Query(filter): Query<Filter>) -> Response {
    let (rows, problem) = app.rows(&filter).await;
    if let Some(problem) = problem {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": problem })),
        )
            .into_response();
    }
    let out: Vec<ApiRow<'_>> = rows
        .iter()
        .map(|row| ApiRow {
            env: &row.env,
            owner: row.owner.as_deref(),
            keep_awake_until: row.keep_awake.as_deref(),
            excluded: row.excluded.as_deref(),
            last: row
                .last
                .as_ref()
                .map(|l| format!("{} at {}: {}", l.reason, l.at, l.note)),
            seen: &row.seen,
            savings: row.saved.as_ref(),
        })
        .collect();
    axum::Json(out).into_response()
}

/// Live updates: the rows again whenever a watched object changed (changes
/// within 100 ms go out as one update), as server-sent events named `envs`
/// carrying `{"summary": …, "rows": …}`. At most [`MAX_LIVE_VIEWS`] at once.
async fn events(State(app): State<App>, Query(filter): Query<Filter>) -> Response {
    let Ok(permit) = app.live_views.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            format!(
                "this dashboard already serves {MAX_LIVE_VIEWS} live views; close some of its tabs, or reload later\n"
            ),
        )
            .into_response();
    };
    live(app, filter, permit).into_response()
}

fn live(
    app: App,
    filter: Filter,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let changed = app.view.changed.clone();
    let app_said = app.said.subscribe();
    // The view's permit goes with its stream: released when it ends.
    let stream = futures::stream::unfold(
        (app, filter, changed, None, true, permit),
        move |(app, filter, mut changed, last, first, permit)| async move {
            let mut last: Option<std::sync::Arc<String>> = last;
            loop {
                if !first || last.is_some() {
                    if changed.changed().await.is_err() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let change = *changed.borrow_and_update();
                let data = app.update(&filter, change).await;
                if last.as_ref().is_none_or(|last| *last != data) {
                    let event = SseEvent::default().event("envs").data(data.as_str());
                    last = Some(data);
                    return Some((Ok(event), (app, filter, changed, last, false, permit)));
                }
            }
        },
    );
    let said = futures::stream::unfold(app_said, |mut said| async move {
        loop {
            match said.recv().await {
                Ok(outcome) => {
                    let data = serde_json::to_string(&outcome).unwrap_or_default();
                    let event = SseEvent::default().event("said").data(data);
                    return Some((Ok(event), said));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures::stream::select(stream, said)).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
struct ActForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    seen: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    until: String,
}

/// What an action answers: a status and a sentence.
struct Answer {
    status: StatusCode,
    message: String,
}

impl Answer {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

async fn act_on(
    State(app): State<App>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActForm>,
) -> Response {
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    // The action is a task of its own: a client that goes away (a closed
    // tab, a proxy's timeout, a rollout of the proxy) does not cut it off
    // half-way. Its outcome goes to the live streams as well.
    let task = {
        let app = app.clone();
        let headers = headers.clone();
        tokio::spawn(async move {
            tracing::info!(namespace = %namespace, action = %form.action, "dashboard action asked");
            let answer = app.act(&namespace, &headers, &form).await;
            tracing::info!(
                namespace = %namespace,
                action = %form.action,
                status = answer.status.as_u16(),
                "dashboard action done: {}",
                answer.message
            );
            let _ = app.said.send(Said {
                namespace,
                ok: answer.status.is_success(),
                message: answer.message.clone(),
            });
            answer
        })
    };
    let answer = match task.await {
        Ok(answer) => answer,
        Err(err) => Answer::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the action failed unexpectedly: {err}"),
        ),
    };
    let ok = answer.status.is_success();
    if json {
        return (
            answer.status,
            axum::Json(serde_json::json!({ "ok": ok, "message": answer.message })),
        )
            .into_response();
    }
    if ok {
        let location = format!("/?said={}", percent_encode(&answer.message));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kdev: not done</title></head>\
<body><h1>Not done</h1><p role=\"alert\">{}</p><p><a href=\"/\">Back to the environments</a></p></body></html>",
        page::esc(&answer.message)
    );
    (
        answer.status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

impl App {
    async fn act(&self, namespace: &str, headers: &HeaderMap, form: &ActForm) -> Answer {
        // A form from another site (a page the user has open elsewhere
        // posting to this port) has a foreign origin, and cannot carry the
        // page's cookie and token together.
        if let Some(why) = guard::foreign_origin(headers) {
            return Answer::new(
                StatusCode::FORBIDDEN,
                format!("{why}; actions are taken only from the dashboard's own page"),
            );
        }
        if !guard::token_matches(headers, &form.csrf) {
            return Answer::new(
                StatusCode::FORBIDDEN,
                "this form did not come from this dashboard page (its token does not match the page's cookie); reload the page and try again",
            );
        }
        let direction = match form.action.as_str() {
            "wake" | "keep-awake" => Direction::Wake,
            "sleep" => Direction::Sleep,
            other => {
                return Answer::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown action {other:?}: the dashboard wakes, sleeps and keeps awake"
                    ),
                );
            }
        };
        let reason = form.reason.trim();
        if reason.is_empty() {
            return Answer::new(
                StatusCode::BAD_REQUEST,
                "say why in a few words (the reason goes into the environment's Event)",
            );
        }
        if reason.chars().count() > MAX_REASON {
            return Answer::new(
                StatusCode::BAD_REQUEST,
                format!("the reason is longer than {MAX_REASON} characters; shorten it"),
            );
        }
        let until = if form.action == "keep-awake" {
            match envs::parse_until(&form.until, jiff::Timestamp::now()) {
                Ok(at) if at > jiff::Timestamp::now() => Some(at),
                Ok(at) => {
                    return Answer::new(
                        StatusCode::BAD_REQUEST,
                        format!("keep awake until {at}: that time has passed"),
                    );
                }
                Err(err) => {
                    return Answer::new(StatusCode::BAD_REQUEST, format!("keep awake until {err}"));
                }
            }
        } else {
            None
        };
        self.view.ready().await;
        let Some(row) = self
            .view
            .rows(jiff::Timestamp::now(), |name, _| name == namespace)
            .pop()
        else {
            return Answer::new(
                StatusCode::NOT_FOUND,
                format!(
                    "{namespace} is not an environment here (no namespace of that name with Deployments, StatefulSets or CronJobs, labelled as an environment and not protected)"
                ),
            );
        };
        if row.seen != form.seen {
            return Answer::new(
                StatusCode::CONFLICT,
                format!(
                    "someone else acted first: {namespace} changed since the page was loaded (it is {} now); look again, then act",
                    page::state_word(row.env.state)
                ),
            );
        }
        if let Some(w) = row.env.workloads.iter().find(|w| w.swap_session.is_some()) {
            return Answer::new(
                StatusCode::CONFLICT,
                format!(
                    "{namespace} is in use: {}/{} is held by kdev swap session {}; its end puts it back",
                    w.kind.short(),
                    w.name,
                    w.swap_session.as_deref().unwrap_or_default()
                ),
            );
        }
        if let Some(why) = &row.excluded {
            return Answer::new(
                StatusCode::CONFLICT,
                format!("{namespace} is excluded from sleeping and waking: {why}"),
            );
        }
        let who = actor(headers, self.proxied);
        let config = Config {
            direction,
            selection: Selection {
                namespaces: vec![namespace.to_owned()],
                ..Selection::default()
            },
            dry_run: false,
            reason: Some(reason.to_owned()),
            json: false,
            actor: Some(who.clone()),
            grace: None,
            waker: None,
        };
        let mut said = Vec::new();
        // Sleep now ends a keep-awake first (or the scheduler would wake it
        // again); keep awake wakes first, then holds.
        if direction == Direction::Sleep && row.keep_awake.is_some() {
            if let Err(err) = envs::keep_awake(&self.acting, namespace, None, false).await {
                return self.refused(namespace, "end its keep-awake", &err);
            }
            said.push(format!("{namespace} is no longer kept awake"));
        }
        let report = match act::run(&self.acting, &config).await {
            Ok(report) => report,
            Err(err) => return self.refused(namespace, form.action.as_str(), &err),
        };
        let (mut failed, mut forbidden) = (false, false);
        for change in &report.changes {
            if let act::Done::Failed { error } = &change.done {
                failed = true;
                forbidden |= error.contains(" is forbidden: ");
            }
            said.push(change.line());
        }
        if forbidden {
            said.push(format!(
                "the dashboard acts as {}, which may wake (kdev-env-starter) but needs kdev-env-keeper to sleep or keep awake; deploy/dashboard binds both",
                self.act_as
            ));
        }
        if direction == Direction::Sleep
            && !failed
            && let Some(image) = &self.waker
        {
            let with_waker = Config {
                waker: Some(image.clone()),
                ..config.clone()
            };
            let annotations = self.view.namespace_annotations(namespace);
            if let Some(placed) =
                act::place_wakers(&self.kube, &with_waker, namespace, &annotations).await
            {
                said.push(placed.line());
            }
        }
        if let Some(until) = until
            && !failed
        {
            if let Err(err) = envs::keep_awake(&self.acting, namespace, Some(until), false).await {
                return self.refused(namespace, "keep it awake", &err);
            }
            self.record_keep_awake(namespace, until, &who, reason).await;
            said.push(format!("{namespace} is kept awake until {until}"));
        }
        let status = match (failed, forbidden) {
            (_, true) => StatusCode::FORBIDDEN,
            (true, false) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::OK,
        };
        Answer::new(status, said.join("; "))
    }

    /// An action the API server refused, said with the identity it was
    /// refused to.
    fn refused(&self, namespace: &str, what: &str, err: &anyhow::Error) -> Answer {
        let forbidden = crate::k8s::refused_with(err) == Some(403);
        let message = if forbidden {
            format!(
                "the dashboard may not {what} {namespace}: {} lacks the rights ({err:#}); deploy/dashboard binds kdev-env-starter (wake) and kdev-env-keeper (sleep now, keep awake) to it",
                self.act_as
            )
        } else {
            format!("failed to {what} {namespace}: {err:#}")
        };
        Answer::new(
            if forbidden {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_GATEWAY
            },
            message,
        )
    }

    /// A keep-awake is an Event of its own: the wake may have had nothing
    /// to do.
    async fn record_keep_awake(
        &self,
        namespace: &str,
        until: jiff::Timestamp,
        who: &str,
        reason: &str,
    ) {
        let recorder = Recorder::new(
            self.acting.client.clone(),
            Reporter {
                controller: "kdev".into(),
                instance: Some(who.to_owned()),
            },
        );
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(namespace.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: "KeptAwake".into(),
            note: Some(format!("until {until} by {who}: {reason}")),
            action: "KeepAwake".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %err, "failed to record the keep-awake as an Event");
        }
    }
}

/// Who acted, for the Event: the dashboard, and the user an auth proxy in
/// front of it names (oauth2-proxy's headers) when the request came through
/// the proxy's own socket (`proxied`); anyone else's such headers are
/// ignored.
fn actor(headers: &HeaderMap, proxied: bool) -> String {
    if !proxied {
        return "dashboard".to_owned();
    }
    let named = [
        "x-forwarded-email",
        "x-forwarded-user",
        "x-auth-request-email",
    ]
    .iter()
    .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
    .map(|v| {
        v.chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect::<String>()
    });
    match named {
        Some(user) if !user.is_empty() => format!("dashboard ({user})"),
        _ => "dashboard".to_owned(),
    }
}

/// Text for a URL's query: unreserved characters kept, the rest %XX.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_query_string() {
        assert_eq!(percent_encode("a b/c→"), "a%20b%2Fc%E2%86%92");
    }

    /// Regression: the user headers were believed from anyone, so whoever
    /// could port-forward wrote "by dashboard (ceo@corp)" into Events.
    #[test]
    fn the_actor_is_the_dashboard_and_only_the_proxys_user() {
        let mut headers = HeaderMap::new();
        assert_eq!(actor(&headers, true), "dashboard");
        headers.insert(
            "x-forwarded-email",
            HeaderValue::from_static("alice@example.com"),
        );
        assert_eq!(actor(&headers, true), "dashboard (alice@example.com)");
        assert_eq!(actor(&headers, false), "dashboard");
    }
}
