//! The environments dashboard against the real local control plane: every
//! endpoint and action over HTTP (states, guarded writes, rejections, the
//! Events written, the rights it acts with), and a real browser.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::{TestNamespace, event_notes, eventually, free_port, kubectl, with_namespace};
use crate::swap_support::{Controller, deploy, simple_deployment};

/// An HTTP answer.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 exchange on 127.0.0.1 (the server closes after the body).
/// The Host is 127.0.0.1:PORT unless `headers` name one.
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Reply> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    exchange(
        stream,
        &format!("127.0.0.1:{port}"),
        method,
        path,
        headers,
        body,
    )
    .await
}

/// The same exchange on a unix socket (the auth proxy's way in).
pub async fn request_unix(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Reply> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    exchange(stream, "127.0.0.1", method, path, headers, body).await
}

async fn exchange<S>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Reply>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Boxed: its state is large, and every test awaits it many times.
    Box::pin(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut head = format!("{method} {path} HTTP/1.0\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {host}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        stream.write_all(body.as_bytes()).await.ok()?;
        // Read to the end of the body its Content-Length gives: a port-forward
        // need not pass the server's close on.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|length| raw.len() >= split + 4 + length) {
                    break;
                }
            }
        }
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Some(Reply {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    })
    .await
}

/// A form body from pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The account the test's dashboard acts as, created in `ns`.
pub const ACCOUNT: &str = "dashboard";

/// A dashboard of the test's own: a controller serving it on a free port,
/// its actions written as ServiceAccount `dashboard` of the namespace, which
/// may wake there (kdev-env-starter, bound in the namespace) and, with
/// `keeper`, sleep and keep awake (kdev-env-keeper).
pub async fn dashboard(ns: &TestNamespace, keeper: bool) -> (Controller, u16) {
    // The two ClusterRoles as deploy/ ships them (the same for every test).
    let deploy_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let applied = kubectl()
        .args(["apply", "--server-side", "--force-conflicts"])
        .arg("-f")
        .arg(deploy_dir.join("env-starter.yaml"))
        .arg("-f")
        .arg(deploy_dir.join("env-keeper.yaml"))
        .output()
        .expect("run kubectl apply");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": ACCOUNT } })).expect("an account");
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .expect("create the dashboard's account");
    bind(ns, "kdev-env-starter").await;
    if keeper {
        bind(ns, "kdev-env-keeper").await;
    }
    let port = free_port();
    let user = format!("system:serviceaccount:{}:{ACCOUNT}", ns.name);
    let listen = format!("127.0.0.1:{port}");
    let controller = Controller::launch(
        ns,
        &ns.kubeconfig,
        &[
            "--dashboard",
            "--dashboard-listen",
            &listen,
            "--dashboard-as",
            &user,
        ],
        &[],
    );
    (controller, port)
}

/// Binds ClusterRole `role` to the dashboard's account in the namespace.
pub async fn bind(ns: &TestNamespace, role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": role },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns.name }]
    }))
    .expect("a binding");
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the binding");
    // The API server's authorizer learns of the binding from a watch of its
    // own, which lags under load: an action taken at once could be refused.
    // Wait until a review grants the role's first rule to the account.
    let role = Api::<ClusterRole>::all(ns.client.clone())
        .get(role)
        .await
        .expect("read the ClusterRole");
    let rule = &role.rules.as_deref().unwrap_or_default()[0];
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{}:{ACCOUNT}", ns.name),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", ns.name), "system:authenticated"],
            "resourceAttributes": {
                "namespace": ns.name,
                "verb": rule.verbs[0],
                "group": rule.api_groups.as_deref().unwrap_or_default()[0],
                "resource": rule.resources.as_deref().unwrap_or_default()[0],
            }
        }
    }))
    .expect("a review");
    let reviews: Api<SubjectAccessReview> = Api::all(ns.client.clone());
    eventually(
        Duration::from_secs(30),
        "the binding to take effect",
        || async {
            let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
            answer.status?.allowed.then_some(())
        },
    )
    .await;
}

/// Labels the namespace as owned by `owner` (the dashboard's filter).
pub async fn own(ns: &TestNamespace, owner: &str) {
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    namespaces
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "kdev.dev/owner": owner } } })),
        )
        .await
        .expect("label the namespace");
}

/// The environment as `/api/envs` shows it, once it shows it.
pub async fn env_of(port: u16, ns: &TestNamespace) -> Value {
    eventually(
        Duration::from_secs(30),
        "the dashboard to list the environment",
        || async {
            let reply = request(
                port,
                "GET",
                &format!("/api/envs?owner={}", ns.name),
                &[],
                "",
            )
            .await?;
            let list = serde_json::from_slice::<Value>(&reply.body).ok()?;
            list.as_array()?
                .iter()
                .find(|e| e["namespace"] == ns.name.as_str())
                .cloned()
        },
    )
    .await
}

/// The page's form token.
pub async fn csrf(port: u16) -> String {
    let page = request(port, "GET", "/", &[], "")
        .await
        .expect("the page")
        .text();
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form token on the page");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("a closing quote")].to_owned()
}

/// Posts an action, asking for JSON, with the page's cookie for the form's
/// token (as the browser that loaded the page sends it).
async fn act(port: u16, ns: &str, pairs: &[(&str, &str)]) -> (u16, String) {
    let token = pairs
        .iter()
        .find(|(k, _)| *k == "csrf")
        .map(|(_, v)| *v)
        .unwrap_or_default();
    let cookie = format!("kdev-dashboard-token={token}");
    let reply = request(
        port,
        "POST",
        &format!("/envs/{ns}"),
        &[("Accept", "application/json"), ("Cookie", &cookie)],
        &form(pairs),
    )
    .await
    .expect("the dashboard answers");
    let json = reply.json();
    (
        reply.status,
        json["message"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn replicas(ns: &TestNamespace, name: &str) -> i32 {
    let d = ns
        .api::<Deployment>()
        .get(name)
        .await
        .expect("read deployment");
    d.spec.and_then(|s| s.replicas).unwrap_or(1)
}

#[tokio::test]
async fn the_dashboard_lists_acts_as_its_own_account_and_refuses_what_it_must() {
    with_namespace("dash-http", |ns| async move {
        own(&ns, &ns.name).await;
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let (controller, port) = dashboard(&ns, false).await;
        let env = env_of(port, &ns).await;
        assert_eq!(env["state"], "awake", "{env} {}", controller.log());
        let token = csrf(port).await;
        let seen = env["seen"].as_str().expect("a seen token").to_owned();
        let name = ns.name.as_str();

        // The page: every environment's row, the filter carried back, gzip
        // when asked, and the server's own time said.
        let page = request(
            port,
            "GET",
            &format!("/?owner={name}"),
            &[("Accept-Encoding", "gzip")],
            "",
        )
        .await
        .expect("the page");
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-encoding"), Some("gzip"));
        assert!(
            page.header("server-timing")
                .is_some_and(|t| t.starts_with("render;dur="))
        );
        let mut html = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&page.body[..]), &mut html)
            .expect("gzip");
        assert!(
            html.contains(&format!("<tr id=\"env-{name}\" data-state=\"awake\"")),
            "{html}"
        );
        assert!(html.contains("1 environment: 1 awake"), "{html}");
        // A selector the API server refuses is said, not a blank page.
        let bad = request(port, "GET", "/?selector=a%20b%20c", &[], "")
            .await
            .expect("the page");
        assert!(bad.text().contains("is not valid"), "{}", bad.text());
        let bad = request(port, "GET", "/api/envs?selector=a%20b%20c", &[], "")
            .await
            .expect("json");
        assert_eq!(bad.status, 400, "{}", bad.text());

        // Refused before anything is written: no token, no reason, a stale
        // page, an unknown action, a time in the past.
        let base = [
            ("seen", seen.as_str()),
            ("csrf", token.as_str()),
            ("reason", "testing"),
        ];
        let (status, said) = act(
            port,
            name,
            &[("action", "sleep"), ("seen", &seen), ("reason", "x")],
        )
        .await;
        assert_eq!(status, 403, "{said}");
        let (status, said) = act(
            port,
            name,
            &[("action", "sleep"), ("seen", &seen), ("csrf", &token)],
        )
        .await;
        assert_eq!(status, 400, "{said}");
        assert!(said.contains("say why"), "{said}");
        let (status, said) = act(
            port,
            name,
            &[
                ("action", "sleep"),
                ("seen", "0"),
                ("csrf", &token),
                ("reason", "x"),
            ],
        )
        .await;
        assert_eq!(status, 409, "{said}");
        assert!(said.contains("someone else acted first"), "{said}");
        let (status, said) = act(port, name, &[&base[..], &[("action", "explode")]].concat()).await;
        assert_eq!(status, 400, "{said}");
        let (status, said) = act(
            port,
            name,
            &[
                &base[..],
                &[("action", "keep-awake"), ("until", "2020-01-01T00:00:00Z")],
            ]
            .concat(),
        )
        .await;
        assert_eq!(status, 400, "{said}");
        assert!(said.contains("has passed"), "{said}");
        let cross = request(
            port,
            "POST",
            &format!("/envs/{name}"),
            &[("Sec-Fetch-Site", "cross-site")],
            &form(&[&base[..], &[("action", "sleep")]].concat()),
        )
        .await
        .expect("an answer");
        assert_eq!(cross.status, 403, "{}", cross.text());
        assert_eq!(replicas(&ns, "web").await, 2, "nothing written");

        // With kdev-env-starter alone the account may not record a sleep:
        // refused, saying which account and which Role, nothing changed.
        let (status, said) = act(port, name, &[&base[..], &[("action", "sleep")]].concat()).await;
        assert_eq!(status, 403, "{said}");
        assert!(said.contains("needs kdev-env-keeper"), "{said}");
        assert_eq!(replicas(&ns, "web").await, 2, "{said}");

        // With kdev-env-keeper: the sleep, its record, and an Event with
        // the reason and who.
        bind(&ns, "kdev-env-keeper").await;
        let (status, said) = act(
            port,
            name,
            &[
                ("action", "sleep"),
                ("seen", &seen),
                ("csrf", &token),
                ("reason", "lunch break"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{said} {}", controller.log());
        assert_eq!(replicas(&ns, "web").await, 0, "{said}");
        let notes = event_notes(&ns, "Slept").await;
        assert!(
            notes
                .iter()
                .any(|n| n.contains("by dashboard: lunch break")),
            "{notes:?}"
        );
        let env = eventually(
            Duration::from_secs(30),
            "the page to show the sleep",
            || async {
                let env = env_of(port, &ns).await;
                (env["state"] == "asleep").then_some(env)
            },
        )
        .await;
        assert_eq!(env["workloads"][0]["original"], 2, "{env}");

        // Live updates: a change by someone else reaches an open page.
        let mut live = Live::open(port, &format!("/events?owner={name}")).await;
        let first = live.next().await;
        assert!(
            first["rows"].as_str().unwrap().contains("asleep"),
            "{first}"
        );

        // The wake with kdev-env-starter alone: through the scale
        // subresource, exactly back to 2.
        let dbs: Api<RoleBinding> = ns.api();
        dbs.delete("kdev-env-keeper", &DeleteParams::default())
            .await
            .expect("unbind");
        let seen = env["seen"].as_str().unwrap().to_owned();
        let (status, said) = act(
            port,
            name,
            &[
                ("action", "wake"),
                ("seen", &seen),
                ("csrf", &token),
                ("reason", "demo at 3"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{said} {}", controller.log());
        assert_eq!(replicas(&ns, "web").await, 2, "{said}");
        let woke = live
            .until(|d| {
                d["rows"]
                    .as_str()
                    .is_some_and(|r| r.contains("2/2 ready") || r.contains("/2 ready"))
            })
            .await;
        assert!(
            !woke["rows"]
                .as_str()
                .unwrap()
                .contains("data-state=\"asleep\""),
            "{woke}"
        );
        let notes = event_notes(&ns, "Woke").await;
        assert!(
            notes.iter().any(|n| n.contains("by dashboard: demo at 3")),
            "{notes:?}"
        );

        // Keep awake: the namespace's time and an Event of its own.
        bind(&ns, "kdev-env-keeper").await;
        let env = env_of(port, &ns).await;
        let seen = env["seen"].as_str().unwrap().to_owned();
        let (status, said) = act(
            port,
            name,
            &[
                ("action", "keep-awake"),
                ("until", "4h"),
                ("seen", &seen),
                ("csrf", &token),
                ("reason", "release"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{said}");
        let namespaces: Api<Namespace> = Api::all(ns.client.clone());
        let annotations = namespaces
            .get(name)
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default();
        assert!(
            annotations.contains_key("kdev.dev/keep-awake-until"),
            "{annotations:?}"
        );
        let notes = eventually(Duration::from_secs(10), "the KeptAwake Event", || async {
            let notes = event_notes(&ns, "KeptAwake").await;
            (!notes.is_empty()).then_some(notes)
        })
        .await;
        assert!(notes[0].contains("by dashboard: release"), "{notes:?}");

        // The page sent without script: a redirect carrying the message.
        let env = env_of(port, &ns).await;
        let seen = env["seen"].as_str().unwrap().to_owned();
        let cookie = format!("kdev-dashboard-token={token}");
        let reply = request(
            port,
            "POST",
            &format!("/envs/{name}"),
            &[("Cookie", &cookie)],
            &form(&[
                ("action", "wake"),
                ("seen", &seen),
                ("csrf", &token),
                ("reason", "again"),
            ]),
        )
        .await
        .expect("an answer");
        assert_eq!(reply.status, 303, "{}", reply.text());
        assert!(
            reply
                .header("location")
                .is_some_and(|l| l.starts_with("/?said="))
        );

        // Excluded: refused, nothing written.
        namespaces
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "metadata": { "annotations": { "kdev.dev/exclude": "true" } } }),
                ),
            )
            .await
            .expect("exclude");
        let env = eventually(Duration::from_secs(30), "the exclusion to show", || async {
            let env = env_of(port, &ns).await;
            env["excluded"].is_string().then_some(env)
        })
        .await;
        let seen = env["seen"].as_str().unwrap().to_owned();
        let (status, said) = act(
            port,
            name,
            &[
                ("action", "sleep"),
                ("seen", &seen),
                ("csrf", &token),
                ("reason", "x"),
            ],
        )
        .await;
        assert_eq!(status, 409, "{said}");
        assert!(said.contains("excluded"), "{said}");
        assert_eq!(replicas(&ns, "web").await, 2);
        drop(live);
        controller.stop();
    })
    .await;
}

/// A workload a swap session holds: every action on its environment is
/// refused, and nothing is written. (The environment is another namespace
/// than the controller's reaper watches, so the marks stay as written.)
/// Regression: every namespace but kube-* was an environment, so the
/// dashboard could put ingress-nginx or a policy webhook to sleep. Now only
/// namespaces labelled kdev.dev/environment are shown or acted on, and the
/// live views are capped.
#[tokio::test]
async fn only_labelled_namespaces_are_environments_and_live_views_are_capped() {
    with_namespace("dash-scope", |ns| async move {
        with_namespace("dash-other", |other| async move {
            // `other` is a plain namespace: not an environment.
            label(&other, json!({ "kdev.dev/environment": null })).await;
            own(&ns, &ns.name).await;
            deploy(&ns, simple_deployment("web", 1, &[8080])).await;
            deploy(&other, simple_deployment("web", 1, &[8080])).await;
            let (controller, port) = dashboard(&ns, true).await;
            env_of(port, &ns).await;
            let listed = |port: u16, name: String| async move {
                let reply = request(port, "GET", "/api/envs", &[], "").await?;
                let list = serde_json::from_slice::<Value>(&reply.body).ok()?;
                Some(
                    list.as_array()?
                        .iter()
                        .any(|e| e["namespace"] == name.as_str()),
                )
            };
            assert_eq!(listed(port, other.name.clone()).await, Some(false));
            let token = csrf(port).await;
            let (status, message) = act(
                port,
                &other.name,
                &[
                    ("action", "sleep"),
                    ("reason", "test"),
                    ("seen", "x"),
                    ("csrf", &token),
                ],
            )
            .await;
            assert_eq!(status, 404, "{message}");
            assert!(message.contains("labelled as an environment"), "{message}");
            assert_eq!(replicas(&other, "web").await, 1);
            // Labelled, it is one; the label gone, it is not, live.
            label(&other, json!({ "kdev.dev/environment": "team" })).await;
            eventually(
                Duration::from_secs(20),
                "the labelled namespace listed",
                || {
                    let name = other.name.clone();
                    async move { listed(port, name).await.filter(|l| *l).map(|_| ()) }
                },
            )
            .await;
            label(&other, json!({ "kdev.dev/environment": null })).await;
            eventually(
                Duration::from_secs(20),
                "the unlabelled namespace gone",
                || {
                    let name = other.name.clone();
                    async move { listed(port, name).await.filter(|l| !*l).map(|_| ()) }
                },
            )
            .await;

            // Live views: up to the cap, then 503 at once; one closed
            // makes room for another.
            let cap = kdev::dashboard::MAX_LIVE_VIEWS;
            let mut views = Vec::new();
            for _ in 0..cap {
                views.push(open_live_view(port).await);
            }
            for view in &views {
                assert!(view.1.starts_with("HTTP/1.1 200"), "{}", view.1);
            }
            let (_extra, refused) = open_live_view(port).await;
            assert!(
                refused.starts_with("HTTP/1.1 503"),
                "{refused}\n{}",
                controller.log()
            );
            drop(views.pop());
            let again = eventually(Duration::from_secs(10), "room for a live view", || async {
                let (stream, head) = open_live_view(port).await;
                head.starts_with("HTTP/1.1 200").then_some(stream)
            })
            .await;
            drop(again);
        })
        .await;
    })
    .await;
}

/// Opens `/events` and reads its status line (the stream stays open while
/// the socket is kept).
async fn open_live_view(port: u16) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the dashboard");
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("ask for a live view");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// Merges `labels` into the namespace's labels (null removes one).
async fn label(ns: &TestNamespace, labels: Value) {
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    namespaces
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": labels } })),
        )
        .await
        .expect("label the namespace");
}

#[tokio::test]
async fn an_environment_held_by_a_swap_is_not_acted_on() {
    with_namespace("dash-ctl", |ctl| async move {
        let (controller, port) = dashboard(&ctl, true).await;
        Box::pin(with_namespace("dash-held", |ns| async move {
            own(&ns, &ns.name).await;
            let mut web = simple_deployment("web", 0, &[8080]);
            web["metadata"]["annotations"] = json!({
                "kdev.dev/session": "alice-1234",
                "kdev.dev/original-replicas": "2"
            });
            deploy(&ns, web).await;
            let env = env_of(port, &ns).await;
            assert_eq!(env["workloads"][0]["swapSession"], "alice-1234", "{env}");
            let token = csrf(port).await;
            let seen = env["seen"].as_str().unwrap().to_owned();
            let (status, said) = act(
                port,
                &ns.name,
                &[
                    ("action", "wake"),
                    ("seen", &seen),
                    ("csrf", &token),
                    ("reason", "x"),
                ],
            )
            .await;
            assert_eq!(status, 409, "{said}");
            assert!(
                said.contains("held by kdev swap session alice-1234"),
                "{said}"
            );
            assert_eq!(replicas(&ns, "web").await, 0);
            let (status, _) = act(
                port,
                "no-such-namespace",
                &[
                    ("action", "wake"),
                    ("seen", &seen),
                    ("csrf", &token),
                    ("reason", "x"),
                ],
            )
            .await;
            assert_eq!(status, 404);
        }))
        .await;
        controller.stop();
    })
    .await;
}

/// Two replicas behind one Service: a page loaded from one replica acts
/// through the other (regression: each process had a token of its own, so
/// about half the actions failed). A page asked for under another host name
/// gets no token and no action (DNS rebinding), a post from another origin
/// is refused, every answer forbids framing, and only requests on the auth
/// proxy's socket may name the user in the Event.
#[tokio::test]
async fn any_replica_takes_any_replicas_page_and_foreign_hosts_origins_and_user_headers_are_refused()
 {
    with_namespace("dash-guard", |ns| async move {
        let (first, port) = dashboard(&ns, true).await;
        let sockets = tempfile::tempdir().expect("temp dir");
        let socket = sockets.path().join("proxy.sock");
        let second_port = free_port();
        let user = format!("system:serviceaccount:{}:{ACCOUNT}", ns.name);
        let second = Controller::launch(
            &ns,
            &ns.kubeconfig,
            &[
                "--dashboard",
                "--dashboard-listen",
                &format!("127.0.0.1:{second_port}"),
                "--dashboard-as",
                &user,
                "--dashboard-proxy-socket",
                socket.to_str().expect("utf-8"),
            ],
            &[],
        );
        own(&ns, &ns.name).await;
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let name = ns.name.as_str();
        let env = env_of(second_port, &ns).await;
        let seen = env["seen"].as_str().expect("seen").to_owned();
        let token = csrf(port).await;
        let cookie = format!("kdev-dashboard-token={token}");
        let sleep = form(&[
            ("action", "sleep"),
            ("seen", &seen),
            ("csrf", &token),
            ("reason", "from the other replica"),
        ]);

        let evil = request(port, "GET", "/", &[("Host", "evil.test")], "")
            .await
            .expect("an answer");
        assert_eq!(evil.status, 421, "{}", evil.text());
        assert!(evil.header("set-cookie").is_none(), "a token for evil.test");
        assert!(!evil.text().contains("csrf"), "{}", evil.text());
        let evil = request(
            second_port,
            "POST",
            &format!("/envs/{name}"),
            &[("Host", "evil.test:80"), ("Cookie", &cookie)],
            &sleep,
        )
        .await
        .expect("an answer");
        assert_eq!(evil.status, 421, "{}", evil.text());
        for answer in [
            evil,
            request(port, "GET", "/", &[], "").await.expect("the page"),
        ] {
            assert_eq!(
                answer.header("content-security-policy"),
                Some("frame-ancestors 'none'")
            );
            assert_eq!(answer.header("x-frame-options"), Some("DENY"));
        }
        let foreign = request(
            second_port,
            "POST",
            &format!("/envs/{name}"),
            &[("Origin", "http://evil.test"), ("Cookie", &cookie)],
            &sleep,
        )
        .await
        .expect("an answer");
        assert_eq!(foreign.status, 403, "{}", foreign.text());
        let no_cookie = request(
            second_port,
            "POST",
            &format!("/envs/{name}"),
            &[("Accept", "application/json")],
            &sleep,
        )
        .await
        .expect("an answer");
        assert_eq!(no_cookie.status, 403, "{}", no_cookie.text());
        assert_eq!(replicas(&ns, "web").await, 2, "nothing written");

        // The first replica's page, acted on through the second, with user
        // headers anyone can send on a port-forward: believed from nobody.
        let origin = format!("http://127.0.0.1:{second_port}");
        let done = request(
            second_port,
            "POST",
            &format!("/envs/{name}"),
            &[
                ("Accept", "application/json"),
                ("Cookie", &cookie),
                ("Origin", &origin),
                ("X-Forwarded-Email", "ceo@example.com"),
            ],
            &sleep,
        )
        .await
        .expect("an answer");
        assert_eq!(done.status, 200, "{}", done.text());
        assert_eq!(replicas(&ns, "web").await, 0);
        let notes = eventually(Duration::from_secs(10), "the sleep's Event", || async {
            let notes = event_notes(&ns, "Slept").await;
            (!notes.is_empty()).then_some(notes)
        })
        .await;
        assert!(
            notes[0].contains("by dashboard: from the other replica"),
            "{notes:?}"
        );
        assert!(!notes.iter().any(|n| n.contains("ceo@")), "{notes:?}");

        // Through the auth proxy's socket the signed-in user is named.
        let env = env_of(second_port, &ns).await;
        let seen = env["seen"].as_str().expect("seen").to_owned();
        let woke = request_unix(
            &socket,
            "POST",
            &format!("/envs/{name}"),
            &[
                ("Accept", "application/json"),
                ("Cookie", &cookie),
                ("X-Forwarded-Email", "alice@example.com"),
            ],
            &form(&[
                ("action", "wake"),
                ("seen", &seen),
                ("csrf", &token),
                ("reason", "signed in"),
            ]),
        )
        .await
        .expect("an answer on the proxy's socket");
        assert_eq!(woke.status, 200, "{}", woke.text());
        let notes = eventually(Duration::from_secs(10), "the wake's Event", || async {
            let notes = event_notes(&ns, "Woke").await;
            (!notes.is_empty()).then_some(notes)
        })
        .await;
        assert!(
            notes[0].contains("by dashboard (alice@example.com): signed in"),
            "{notes:?}"
        );
        second.stop();
        first.stop();
    })
    .await;
}

/// Regression: an action ran inside its HTTP request, so a client that went
/// away (a closed tab, a proxy's timeout) could cut it off half-way. Now a
/// post whose connection closes at once still sleeps the environment, and
/// the outcome reaches the page's live stream.
#[tokio::test]
async fn an_action_runs_to_its_end_when_its_request_is_gone_and_the_live_stream_says_so() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    with_namespace("dash-cut", |ns| async move {
        let (controller, port) = dashboard(&ns, true).await;
        own(&ns, &ns.name).await;
        deploy(&ns, simple_deployment("web", 2, &[8080])).await;
        let env = env_of(port, &ns).await;
        let seen = env["seen"].as_str().expect("seen").to_owned();
        let token = csrf(port).await;
        let cookie = format!("kdev-dashboard-token={token}");
        let mut live = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        live.write_all(
            format!(
                "GET /events?owner={} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n",
                ns.name
            )
            .as_bytes(),
        )
        .await
        .expect("open the live stream");
        // Its first rows: the stream is listening before the action.
        let mut seen_on_stream = String::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut chunk = [0u8; 8192];
            while !seen_on_stream.contains("event: envs") {
                let n = live.read(&mut chunk).await.expect("the live stream");
                assert!(n > 0, "the live stream ended: {seen_on_stream}");
                seen_on_stream.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
        .await
        .expect("the live stream's first rows");
        seen_on_stream.clear();
        let body = form(&[
            ("action", "sleep"),
            ("seen", &seen),
            ("csrf", &token),
            ("reason", "cut off"),
        ]);
        {
            let mut post = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let head = format!(
                "POST /envs/{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                ns.name,
                body.len()
            );
            post.write_all(head.as_bytes()).await.expect("post");
            // Gone without waiting for the answer.
        }
        let slept = tokio::time::timeout(Duration::from_secs(30), async {
            while replicas(&ns, "web").await != 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if slept.is_err() {
            // Seen once in CI (a9a7780): say what the dashboard did.
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(2), live.read(&mut chunk))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            panic!(
                "the sleep did not finish within 30 s; the live stream said: {}; the controller's log: {}",
                String::from_utf8_lossy(&chunk[..n]),
                controller.log()
            );
        }
        let said = tokio::time::timeout(Duration::from_secs(30), async {
            let mut chunk = [0u8; 8192];
            loop {
                let n = live.read(&mut chunk).await.expect("the live stream");
                assert!(n > 0, "the live stream ended: {seen_on_stream}");
                seen_on_stream.push_str(&String::from_utf8_lossy(&chunk[..n]));
                if let Some(at) = seen_on_stream.find("event: said") {
                    return seen_on_stream[at..].to_owned();
                }
            }
        })
        .await
        .expect("an outcome on the live stream");
        assert!(said.contains(&ns.name), "{said}");
        assert!(said.contains("\"ok\":true"), "{said}");
        controller.stop();
    })
    .await;
}

/// deploy/dashboard as shipped, on the real node: the API server's judgement
/// of its rights (the controller impersonates the dashboard's account and
/// no other; that account may scale and patch workloads and read no
/// Secret), then the controller running in the cluster with them, opened
/// by `kdev envs dashboard` through a port-forward, and a wake through it.
#[tokio::test]
async fn deploy_dashboard_grants_nothing_but_its_actions_and_kdev_envs_dashboard_opens_it() {
    with_namespace("dash-rbac", |ns| async move {
        let deployed = crate::support::render_deploy(&ns.name, &["dashboard"]);
        let applied = crate::support::kubectl_apply(
            &deployed.manifests,
            &["--server-side", "--force-conflicts"],
        );
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
        let reviews: Api<SubjectAccessReview> = Api::all(ns.client.clone());
        let may = |user: String, verb: &str, group: &str, resource: &str, sub: &str, name: &str| {
            let reviews = reviews.clone();
            let ns = ns.name.clone();
            let review: SubjectAccessReview = serde_json::from_value(json!({
                "spec": {
                    "user": user,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                    "resourceAttributes": {
                        "namespace": ns, "verb": verb, "group": group,
                        "resource": resource, "subresource": sub, "name": name
                    }
                }
            }))
            .expect("a review");
            async move {
                let answer = reviews.create(&PostParams::default(), &review).await.expect("review");
                answer.status.map(|s| s.allowed).unwrap_or(false)
            }
        };
        let controller = format!("system:serviceaccount:{}:kdev-controller", ns.name);
        let dashboard = format!("system:serviceaccount:{}:kdev-dashboard", ns.name);
        assert!(may(controller.clone(), "impersonate", "", "serviceaccounts", "", "kdev-dashboard").await);
        assert!(!may(controller.clone(), "impersonate", "", "serviceaccounts", "", "default").await);
        assert!(!may(controller.clone(), "get", "", "secrets", "", "").await);
        assert!(may(dashboard.clone(), "patch", "apps", "deployments", "scale", "web").await);
        assert!(may(dashboard.clone(), "patch", "apps", "deployments", "", "web").await);
        assert!(may(dashboard.clone(), "create", "events.k8s.io", "events", "", "").await);
        for (verb, group, resource) in [
            ("get", "", "secrets"),
            ("list", "", "secrets"),
            ("delete", "apps", "deployments"),
            ("create", "", "pods"),
            ("update", "apps", "deployments"),
            ("create", "rbac.authorization.k8s.io", "rolebindings"),
        ] {
            assert!(
                !may(dashboard.clone(), verb, group, resource, "", "").await,
                "the dashboard's account may {verb} {resource}"
            );
        }

        // deploy/dashboard's admission policy: the cluster-wide roles reach
        // environments only (regression: the dashboard could put any
        // namespace to sleep, ingress-nginx included).
        Box::pin(acts_only_in_environments(&ns)).await;
        // Boxed: the whole test's future is too large for the test thread's stack.
        Box::pin(opened_by_kdev_envs_dashboard(&ns)).await;
    })
    .await;
}

/// As deploy/dashboard's account: scaling and annotating in an environment
/// is allowed; the same in a plain namespace is refused by the policy.
async fn acts_only_in_environments(ns: &TestNamespace) {
    with_namespace("dash-plain", |other| async move {
        label(&other, json!({ "kdev.dev/environment": null })).await;
        deploy(ns, simple_deployment("scoped", 1, &[8080])).await;
        deploy(&other, simple_deployment("scoped", 1, &[8080])).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let account = format!("system:serviceaccount:{}:kdev-dashboard", ns.name);
        let client = crate::support::client_for(&crate::support::kubeconfig_as(&account, dir.path())).await;
        let scale = Patch::Merge(json!({ "spec": { "replicas": 0 } }));
        let annotate = Patch::Merge(json!({ "metadata": { "annotations": { "kdev.dev/keep-awake-until": "2026-12-31T00:00:00Z" } } }));
        // An admission policy is in force a moment after it is created:
        // wait for it with dry runs, which it judges too.
        let plain: Api<Deployment> = Api::namespaced(client.clone(), &other.name);
        eventually(Duration::from_secs(30), "the dashboard policy in force", || async {
            plain
                .patch_scale("scoped", &PatchParams::default().dry_run(), &scale)
                .await
                .err()
                .filter(|err| err.to_string().contains("is not a dev environment"))
                .map(|_| ())
        })
        .await;
        let in_env: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
        in_env
            .patch_scale("scoped", &PatchParams::default(), &scale)
            .await
            .expect("the dashboard's account scales in an environment");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .patch(&ns.name, &PatchParams::default(), &annotate)
            .await
            .expect("the dashboard's account keeps an environment awake");
        let refused = plain
            .patch_scale("scoped", &PatchParams::default(), &scale)
            .await
            .expect_err("the dashboard's account may not scale outside environments");
        assert!(
            refused.to_string().contains("is not a dev environment"),
            "{refused}"
        );
        let refused = namespaces
            .patch(&other.name, &PatchParams::default(), &annotate)
            .await
            .expect_err("the dashboard's account may not annotate a plain namespace");
        assert!(
            refused.to_string().contains("is not a dev environment"),
            "{refused}"
        );
        // Nor make it an environment by labelling it in the same write.
        let refused = namespaces
            .patch(
                &other.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "kdev.dev/environment": "x" } } })),
            )
            .await
            .expect_err("the dashboard's account may not label a namespace into an environment");
        assert!(refused.to_string().contains("is not a dev environment"), "{refused}");
    })
    .await;
}

/// The controller of `deploy/` (rendered into the namespace) on the real
/// node, opened by `kdev envs dashboard`, a sleep and a wake through it.
async fn opened_by_kdev_envs_dashboard(ns: &TestNamespace) {
    // The controller in the cluster, on the real node, with the agent
    // image scripts/test loads (a static kdev), as deploy/ runs it.
    crate::real_node::require_real_node(ns).await;
    let place = json!({ "spec": { "replicas": 1, "template": { "spec": crate::real_node::on_real_node() } } });
    ns.api::<Deployment>()
        .patch(
            "kdev-controller",
            &PatchParams::default(),
            &Patch::Merge(place),
        )
        .await
        .expect("put the controller on the real node");
    eventually(
        Duration::from_secs(120),
        "the controller pod Ready",
        || async {
            // The rollout done: the first apply's pods (on kwok's node, Ready
            // without a process) gone, the one on the real node Ready.
            let d = ns.api::<Deployment>().get("kdev-controller").await.ok()?;
            let generation = d.metadata.generation;
            let status = d.status?;
            (status.observed_generation == generation
                && status.updated_replicas == Some(1)
                && status.ready_replicas == Some(1)
                && status.replicas == Some(1))
            .then_some(())
        },
    )
    .await;
    // deploy/ marks the controller's own namespace (here this one)
    // excluded; this test's environment is not.
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    namespaces
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { "kdev.dev/exclude": null } } })),
        )
        .await
        .expect("include the namespace");
    own(ns, &ns.name).await;
    deploy(ns, simple_deployment("web", 1, &[8080])).await;
    let port = free_port();
    let mut open = tokio::process::Command::new(env!("CARGO_BIN_EXE_kdev"))
        .arg("--kubeconfig")
        .arg(&ns.kubeconfig)
        .args([
            "envs",
            "dashboard",
            "--controller-namespace",
            &ns.name,
            "--no-browser",
        ])
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run kdev envs dashboard");
    let stdout = open.stdout.take().expect("its stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("kdev envs dashboard prints its URL")
        .expect("read")
        .expect("a line");
    assert!(
        line.starts_with(&format!("dashboard: http://127.0.0.1:{port}/")),
        "{line}"
    );
    let env = env_of(port, ns).await;
    assert_eq!(env["state"], "awake", "{env}");
    // A sleep and a wake through the port-forward, written by the
    // controller in the cluster as kdev-dashboard.
    let token = csrf(port).await;
    let seen = env["seen"].as_str().expect("a seen token").to_owned();
    let (status, said) = act(
        port,
        &ns.name,
        &[
            ("action", "sleep"),
            ("seen", &seen),
            ("csrf", &token),
            ("reason", "in-cluster"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{said}");
    assert_eq!(replicas(ns, "web").await, 0, "{said}");
    let env = eventually(Duration::from_secs(30), "the sleep on the page", || async {
        let env = env_of(port, ns).await;
        (env["state"] == "asleep").then_some(env)
    })
    .await;
    let seen = env["seen"].as_str().expect("a seen token").to_owned();
    let (status, said) = act(
        port,
        &ns.name,
        &[
            ("action", "wake"),
            ("seen", &seen),
            ("csrf", &token),
            ("reason", "in-cluster"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{said}");
    assert_eq!(replicas(ns, "web").await, 1, "{said}");
    let notes = event_notes(ns, "Woke").await;
    assert!(
        notes.iter().any(|n| n.contains("by dashboard: in-cluster")),
        "{notes:?}"
    );
    drop(open);
}

/// A server-sent event stream, read as it comes.
pub struct Live {
    stream: tokio::net::TcpStream,
    buffer: String,
}

impl Live {
    pub async fn open(port: u16, path: &str) -> Self {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let head =
            format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("send");
        Self {
            stream,
            buffer: String::new(),
        }
    }

    /// The next `envs` event's data.
    pub async fn next(&mut self) -> Value {
        use tokio::io::AsyncReadExt as _;
        let read = async {
            loop {
                if let Some(at) = self.buffer.find("data: ")
                    && let Some(end) = self.buffer[at..].find('\n')
                {
                    let data = self.buffer[at + 6..at + end].to_owned();
                    self.buffer.drain(..at + end);
                    return serde_json::from_str::<Value>(&data).expect("JSON data");
                }
                let mut chunk = [0u8; 65536];
                let n = self.stream.read(&mut chunk).await.expect("read the stream");
                assert!(n > 0, "the live updates ended");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("a live update within a minute")
    }

    /// Events until one satisfies `ok`.
    pub async fn until(&mut self, ok: impl Fn(&Value) -> bool) -> Value {
        loop {
            let data = self.next().await;
            if ok(&data) {
                return data;
            }
        }
    }
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "chromedriver is not on PATH: install Debian's chromium and chromium-driver \
                 (.ci/run does); the browser test needs them",
            );
        // Up once it accepts connections (its answers keep the connection
        // open, so a read-to-end request would not return).
        eventually(
            Duration::from_secs(30),
            "chromedriver to listen",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the browser test's screenshots go (under target/, never committed).
fn screenshot_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot dir");
    dir
}

/// Headless Chromium, driven through WebDriver, on a real environment on
/// the real node: it sees the environment asleep, types a reason, presses
/// Wake, sees the pods come up (a readiness delay makes "waking" last) and
/// the environment awake, and the cluster has the workload back at its size.
#[tokio::test]
async fn a_browser_wakes_an_environment_and_watches_its_pods_come_up() {
    use fantoccini::{ClientBuilder, Locator};
    with_namespace("dash-browser", |ns| async move {
        crate::real_node::require_real_node(&ns).await;
        own(&ns, &ns.name).await;
        crate::real_node::busybox_web(&ns, "web", 2, "hello from the dashboard test").await;
        let probe = json!({ "spec": { "template": { "spec": { "containers": [{
            "name": "app",
            "readinessProbe": { "httpGet": { "path": "/", "port": 8080 }, "initialDelaySeconds": 3, "periodSeconds": 1 },
            "resources": { "requests": { "cpu": "50m", "memory": "32Mi" } }
        }] } } } });
        ns.api::<Deployment>()
            .patch("web", &PatchParams::default(), &Patch::Strategic(probe))
            .await
            .expect("add a readiness delay");
        let slept = crate::support::kdev()
            .arg("--kubeconfig")
            .arg(&ns.kubeconfig)
            .args(["sleep", "-n", &ns.name, "--no-wake-on-request", "--reason", "before the browser test"])
            // Asleep since a day ago (a test build's clock), so the savings
            // chart has a day to draw: 2 pods of 50m for 24 h, 2.4 CPU-hours.
            .env("KDEV_ENVS_NOW", jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(24)).unwrap().to_string())
            .output()
            .expect("run kdev sleep");
        assert!(slept.status.success(), "{}", String::from_utf8_lossy(&slept.stderr));
        let (controller, port) = dashboard(&ns, true).await;
        let env = env_of(port, &ns).await;
        assert_eq!(env["state"], "asleep", "{env}");

        let driver = Driver::start().await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"] }),
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("start headless Chromium through chromedriver");
        eprintln!("browser: started");
        let shots = screenshot_dir();
        let shoot = |name: &'static str| {
            let browser = browser.clone();
            let path = shots.join(name);
            async move {
                let png = browser.screenshot().await.expect("a screenshot");
                std::fs::write(&path, png).expect("save the screenshot");
            }
        };
        let name = ns.name.clone();
        browser
            .goto(&format!("http://127.0.0.1:{port}/?owner={name}"))
            .await
            .expect("open the dashboard");
        let row = format!("#env-{name}");
        browser
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(&format!("{row}[data-state=asleep]")))
            .await
            .expect("the environment asleep on the page");
        // What sleeping saved, drawn on the server: this environment's
        // band in the last two days' bars (the day it slept, and today).
        let bands = browser
            .find_all(Locator::Css(&format!("#savings-chart rect.saved[data-env=\"{name}\"]")))
            .await
            .expect("the savings chart");
        assert!(!bands.is_empty() && bands.len() <= 2, "{} bands", bands.len());
        let total = browser
            .find(Locator::Css("#savings .legend li"))
            .await
            .expect("the chart's legend")
            .text()
            .await
            .expect("its text");
        assert!(total.starts_with(&name) && total.contains("CPU-hours"), "{total}");
        let figure: f64 = total
            .rsplit('(')
            .next()
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_default();
        assert!((2.3..=2.6).contains(&figure), "{total}");
        shoot("1-asleep.png").await;
        browser
            .find(Locator::Css(&format!("#r-{name}")))
            .await
            .expect("the reason field")
            .send_keys("checking the dashboard")
            .await
            .expect("type a reason");
        browser
            .find(Locator::Css(&format!("{row} button[value=wake]")))
            .await
            .expect("the Wake button")
            .click()
            .await
            .expect("press Wake");
        let waking = browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css(&format!("{row}[data-state=waking] progress")))
            .await;
        if let Err(err) = waking {
            let page = browser.source().await.unwrap_or_default();
            panic!("the wake's progress on the page: {err}; the page: {page}; {}", controller.log());
        }
        shoot("2-waking.png").await;
        browser
            .wait()
            .at_most(Duration::from_secs(90))
            .for_element(Locator::Css(&format!("{row}[data-state=awake]")))
            .await
            .unwrap_or_else(|err| panic!("the environment awake on the page: {err}; {}", controller.log()));
        shoot("3-awake.png").await;
        // Times read as people read them: an age on the page, the instant
        // in the viewer's zone on hover (the script's; the server's says UTC).
        let time = browser
            .find(Locator::Css(&format!("{row} time[datetime]")))
            .await
            .expect("a time on the row");
        let shown = time.text().await.expect("its text");
        assert!(shown.ends_with(" ago") || shown.starts_with("in "), "{shown}");
        let title = time.attr("title").await.expect("its title").unwrap_or_default();
        assert!(!title.is_empty() && !title.ends_with(" UTC"), "{title}");
        let said = browser
            .find(Locator::Id("said"))
            .await
            .expect("the status line")
            .text()
            .await
            .expect("its text");
        assert!(said.contains("deployment/web"), "{said}");
        assert_eq!(replicas(&ns, "web").await, 2);
        let ready = ns.api::<Deployment>().get("web").await.unwrap().status.unwrap().ready_replicas;
        assert_eq!(ready, Some(2));
        // The same page on a phone's screen.
        browser.set_window_size(390, 844).await.expect("resize");
        shoot("4-phone.png").await;
        eprintln!("dashboard screenshots: {}", shots.display());
        browser.close().await.expect("close the browser");
        controller.stop();
    })
    .await;
}

/// Regression: a controller whose account has deploy/dashboard's RBAC from
/// before Jobs, DaemonSets, Rollouts and ScaledObjects (a cluster upgraded
/// kdev but not its roles) had its watches of those refused (403) and
/// retried forever, so the dashboard was never ready and listed nothing.
/// Now such a kind shows none, and the log says why and what to apply.
#[tokio::test]
async fn a_kind_the_controllers_account_may_not_list_is_shown_as_none_not_waited_for() {
    with_namespace("dash-old-rbac", |ns| async move {
        own(&ns, &ns.name).await;
        deploy(&ns, simple_deployment("web", 1, &[])).await;
        let role = format!("{}-old-dashboard", ns.name);
        let uid = Api::<Namespace>::all(ns.client.clone())
            .get(&ns.name)
            .await
            .expect("the namespace")
            .metadata
            .uid;
        let owner = json!([{ "apiVersion": "v1", "kind": "Namespace", "name": ns.name, "uid": uid }]);
        let account = format!("system:serviceaccount:{}:old-controller", ns.name);
        let objects = json!({ "apiVersion": "v1", "kind": "List", "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": role, "ownerReferences": owner },
                "rules": [
                    { "apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list", "watch"] },
                    { "apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"] },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": { "name": role, "ownerReferences": owner },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
                "subjects": [{ "kind": "ServiceAccount", "name": "old-controller", "namespace": ns.name }],
            },
        ]});
        let _owned = crate::support::ClusterScoped(vec![
            format!("clusterrole/{role}"),
            format!("clusterrolebinding/{role}"),
        ]);
        let applied = crate::support::kubectl_apply(objects.to_string().as_bytes(), &[]);
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
        let reviews: Api<SubjectAccessReview> = Api::all(ns.client.clone());
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": { "user": account, "resourceAttributes": { "verb": "list", "group": "apps", "resource": "deployments" } }
        }))
        .expect("a review");
        eventually(Duration::from_secs(30), "the binding to take effect", || async {
            let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
            answer.status?.allowed.then_some(())
        })
        .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let as_old = crate::support::kubeconfig_as(&account, dir.path());
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let controller = Controller::launch(
            &ns,
            &as_old,
            &["--dashboard", "--dashboard-listen", &listen],
            &[],
        );
        let env = env_of(port, &ns).await;
        let text = env.to_string();
        assert!(text.contains("\"web\""), "{text}\n{}", controller.log());
        let log = controller.log();
        for kind in ["Job", "DaemonSet", "Rollout", "ScaledObject"] {
            assert!(
                log.contains(&format!("may not list {kind}s (403)")),
                "{kind}: {log}"
            );
        }
        controller.stop();
    })
    .await;
}
