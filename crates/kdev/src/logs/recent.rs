//! The last lines of every container in a namespace, read once: what
//! `kdev test` shows beside a failure. The same selection ([`select`]) and
//! rendering ([`Formatter`]) as `kdev logs`, without following.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

use super::output::{Format, Formatter};
use super::select::{self, Filter, States};
use crate::k8s::Kube;

/// Every container's last `tail` lines (init containers and stopped ones
/// too), pod by pod, as `pod container message`; a log that cannot be read
/// says why in its place.
pub async fn recent(
    kube: &Kube,
    namespace: &str,
    selector: Option<&str>,
    pod: Option<&str>,
    tail: i64,
) -> String {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), namespace);
    let lp = match selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    let list = match pods.list(&lp).await {
        Ok(list) => list,
        Err(e) => return format!("(cannot list pods in {namespace}: {e})\n"),
    };
    let filter = Filter {
        pod: pod.and_then(|name| regex::Regex::new(&format!("^{}$", regex::escape(name))).ok()),
        exclude_pod: Vec::new(),
        container: None,
        exclude_container: Vec::new(),
        states: States {
            running: true,
            waiting: true,
            terminated: true,
        },
        init_containers: true,
        ephemeral_containers: false,
    };
    let formatter = Formatter {
        format: Format::Default,
        color: false,
        timestamps: false,
        namespaces: false,
        include: Vec::new(),
        exclude: Vec::new(),
        highlight: Vec::new(),
    };
    let mut out = Vec::new();
    for pod in &list.items {
        for (target, instance) in select::select(pod, &filter) {
            let prefix = formatter.prefix(&target, None);
            if instance.id.is_none() {
                formatter.line(&prefix, None, b"(not started yet)", &mut out);
                continue;
            }
            let params = LogParams {
                container: Some(target.container.clone()),
                tail_lines: Some(tail),
                ..LogParams::default()
            };
            match pods.logs(&target.pod, &params).await {
                Ok(text) => {
                    for line in text.lines() {
                        formatter.line(&prefix, None, line.as_bytes(), &mut out);
                    }
                }
                Err(e) => {
                    let why = format!("(cannot read this log: {e})");
                    formatter.line(&prefix, None, why.as_bytes(), &mut out);
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
