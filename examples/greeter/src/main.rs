//! greeter: a small kube-runtime controller, the example kdev's tests and
//! docs use. Each `Greeting` (example.kdev.dev/v1) gets a ConfigMap
//! `<name>-greeting` holding `message: "<greeting>, <spec.name>!"`, owned by
//! the Greeting, and a `Ready` condition; each change is an Event.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;

const MANAGER: &str = "greeter";

struct Ctx {
    client: Client,
    resource: ApiResource,
    recorder: Recorder,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let client = Client::try_default().await?;
    let gvk = GroupVersionKind::gvk("example.kdev.dev", "v1", "Greeting");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "greetings");
    let greetings: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
    );
    let ctx = Arc::new(Ctx {
        client,
        resource: resource.clone(),
        recorder,
    });
    tracing::info!("greeter started");
    Controller::new_with(greetings, watcher::Config::default(), resource)
        .owns(
            maps,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=greeter"),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

async fn reconcile(greeting: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let namespace = greeting.namespace().unwrap_or_default();
    let name = greeting.name_any();
    if greeting.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let who = greeting.data["spec"]["name"].as_str().unwrap_or("");
    let word = greeting.data["spec"]["greeting"]
        .as_str()
        .unwrap_or("Hello");
    let message = format!("{word}, {who}!");
    let map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": format!("{name}-greeting"),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGER, "example.kdev.dev/greeting": name},
            "ownerReferences": [{
                "apiVersion": "example.kdev.dev/v1",
                "kind": "Greeting",
                "name": name,
                "uid": greeting.uid().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "data": {"message": message},
    });
    let apply = PatchParams::apply(MANAGER).force();
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    maps.patch(&format!("{name}-greeting"), &apply, &Patch::Apply(&map))
        .await
        .map_err(|e| Failed(format!("writing the ConfigMap of {namespace}/{name}: {e}")))?;
    let already = greeting.data["status"]["message"].as_str() == Some(message.as_str());
    if !already {
        let status = json!({"status": {
            "phase": "Ready",
            "message": message,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "Greeted",
                "message": format!("ConfigMap {name}-greeting says {message:?}"),
            }],
        }});
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.resource);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| Failed(format!("writing the status of {namespace}/{name}: {e}")))?;
        let reference = greeting.object_ref(&ctx.resource);
        let event = Event {
            type_: EventType::Normal,
            reason: "Greeted".into(),
            note: Some(format!("said {message:?}")),
            action: "Greet".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "could not record an event");
        }
        tracing::info!(%namespace, %name, %message, "greeted");
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<DynamicObject>, error: &Failed, _: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "retrying in 2s");
    Action::requeue(Duration::from_secs(2))
}
