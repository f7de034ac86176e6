//! Which pods and containers a `kdev logs` query selects: pure functions over
//! Pod objects, so every rule is tested without a cluster.
//!
//! The rules follow stern's: QUERY is a regex searched in pod names (or
//! `kind/name`, whose label selector the server applies); `-c` and `-E` match
//! container names; `--container-state` keeps containers whose current state
//! is listed; init and ephemeral containers are included unless turned off.

use std::fmt;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use regex::Regex;

/// The QUERY argument.
#[derive(Debug)]
pub enum Query {
    /// No QUERY: every pod the selectors let through.
    All,
    /// A regex searched in pod names, as stern does.
    PodName(Regex),
    /// `kind/name`: the pods of that object.
    Object { kind: Kind, name: String },
}

/// The kinds a `kind/name` query accepts, with kubectl's short names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    Service,
    Pod,
}

impl Kind {
    pub const HELP: &'static str = "deploy, sts, ds, rs, job, svc, pod";

    fn parse(text: &str) -> Option<Kind> {
        // kubectl accepts the short name, the singular, the plural, and a
        // group-qualified form of each.
        let base = text
            .split_once('.')
            .map_or(text, |(kind, _group)| kind)
            .to_ascii_lowercase();
        Some(match base.as_str() {
            "deploy" | "deployment" | "deployments" => Kind::Deployment,
            "sts" | "statefulset" | "statefulsets" => Kind::StatefulSet,
            "ds" | "daemonset" | "daemonsets" => Kind::DaemonSet,
            "rs" | "replicaset" | "replicasets" => Kind::ReplicaSet,
            "job" | "jobs" => Kind::Job,
            "svc" | "service" | "services" => Kind::Service,
            "po" | "pod" | "pods" => Kind::Pod,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
            Kind::ReplicaSet => "replicaset",
            Kind::Job => "job",
            Kind::Service => "service",
            Kind::Pod => "pod",
        })
    }
}

/// Parses QUERY. A `/` always means `kind/name`: pod names cannot hold one,
/// so a regex with a slash could never match.
pub fn parse_query(text: Option<&str>) -> Result<Query, String> {
    let Some(text) = text else {
        return Ok(Query::All);
    };
    if let Some((kind, name)) = text.split_once('/') {
        let Some(kind) = Kind::parse(kind) else {
            return Err(format!(
                "unknown kind {kind:?} in {text:?}: use one of {}, as in deploy/web",
                Kind::HELP
            ));
        };
        if name.is_empty() {
            return Err(format!("{text:?} names no object: use {kind}/NAME"));
        }
        return Ok(Query::Object {
            kind,
            name: name.to_owned(),
        });
    }
    compile("QUERY", text).map(Query::PodName)
}

/// Compiles a user's regex, naming the flag it came from when it is invalid.
pub fn compile(flag: &str, pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|err| format!("invalid regex {pattern:?} in {flag}: {err}"))
}

/// A container state, as `--container-state` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Waiting,
    Terminated,
}

/// The parsed `--container-state` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct States {
    pub running: bool,
    pub waiting: bool,
    pub terminated: bool,
}

impl fmt::Display for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.running, "running"),
            (self.waiting, "waiting"),
            (self.terminated, "terminated"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&names.join(","))
    }
}

impl States {
    /// Parses "running", "waiting", "terminated", "all", comma-separated.
    pub fn parse(values: &[String]) -> Result<States, String> {
        let mut states = States {
            running: false,
            waiting: false,
            terminated: false,
        };
        for value in values.iter().flat_map(|v| v.split(',')) {
            match value.trim() {
                "running" => states.running = true,
                "waiting" => states.waiting = true,
                "terminated" => states.terminated = true,
                "all" => {
                    states = States {
                        running: true,
                        waiting: true,
                        terminated: true,
                    }
                }
                other => {
                    return Err(format!(
                        "invalid --container-state {other:?}: use running, waiting, terminated or all"
                    ));
                }
            }
        }
        Ok(states)
    }

    fn admits(&self, state: State) -> bool {
        match state {
            State::Running => self.running,
            State::Waiting => self.waiting,
            State::Terminated => self.terminated,
        }
    }
}

/// What is matched on the client side (the server applies `-l`,
/// `--field-selector` and `--node`).
#[derive(Debug)]
pub struct Filter {
    pub pod: Option<Regex>,
    pub exclude_pod: Vec<Regex>,
    pub container: Option<Regex>,
    pub exclude_container: Vec<Regex>,
    pub states: States,
    pub init_containers: bool,
    pub ephemeral_containers: bool,
}

/// One container of one pod: the unit that gets a log stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    /// A pod deleted and created again under the same name is a new target.
    pub uid: String,
    pub container: String,
}

/// A container's current run, from the pod's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Changes when the container restarts; None before it first starts.
    pub id: Option<String>,
    pub restarts: i32,
    pub state: State,
}

impl Instance {
    /// True when `other` is a later run of the container than this one.
    pub fn restarted_as(&self, other: &Instance) -> bool {
        other.restarts > self.restarts || (other.id.is_some() && other.id != self.id)
    }
}

/// The containers of `pod` that `filter` selects, each with its current run.
/// A pod being deleted still counts: its containers run until they stop.
pub fn select(pod: &Pod, filter: &Filter) -> Vec<(Target, Instance)> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if filter.pod.as_ref().is_some_and(|re| !re.is_match(name))
        || filter.exclude_pod.iter().any(|re| re.is_match(name))
    {
        return Vec::new();
    }
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let mut names: Vec<(&str, Option<&ContainerStatus>)> = Vec::new();
    fn find<'a>(list: Option<&'a Vec<ContainerStatus>>, name: &str) -> Option<&'a ContainerStatus> {
        list.and_then(|l| l.iter().find(|s| s.name == name))
    }
    if filter.init_containers {
        let list = status.and_then(|s| s.init_container_statuses.as_ref());
        for c in spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
        {
            names.push((&c.name, find(list, &c.name)));
        }
    }
    let list = status.and_then(|s| s.container_statuses.as_ref());
    for c in spec.map(|s| &s.containers).into_iter().flatten() {
        names.push((&c.name, find(list, &c.name)));
    }
    if filter.ephemeral_containers {
        let list = status.and_then(|s| s.ephemeral_container_statuses.as_ref());
        for c in spec
            .and_then(|s| s.ephemeral_containers.as_ref())
            .into_iter()
            .flatten()
        {
            names.push((&c.name, find(list, &c.name)));
        }
    }

    names
        .into_iter()
        .filter(|(container, _)| {
            filter
                .container
                .as_ref()
                .is_none_or(|re| re.is_match(container))
                && !filter
                    .exclude_container
                    .iter()
                    .any(|re| re.is_match(container))
        })
        .filter_map(|(container, status)| {
            let instance = instance(status);
            filter.states.admits(instance.state).then(|| {
                (
                    Target {
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        pod: name.to_owned(),
                        uid: pod.metadata.uid.clone().unwrap_or_default(),
                        container: container.to_owned(),
                    },
                    instance,
                )
            })
        })
        .collect()
}

/// A container without a status yet is waiting to be created.
fn instance(status: Option<&ContainerStatus>) -> Instance {
    let Some(status) = status else {
        return Instance {
            id: None,
            restarts: 0,
            state: State::Waiting,
        };
    };
    let state = match &status.state {
        Some(s) if s.running.is_some() => State::Running,
        Some(s) if s.terminated.is_some() => State::Terminated,
        _ => State::Waiting,
    };
    Instance {
        id: status.container_id.clone().filter(|id| !id.is_empty()),
        restarts: status.restart_count,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, PodSpec,
        PodStatus,
    };

    fn filter() -> Filter {
        Filter {
            pod: None,
            exclude_pod: vec![],
            container: None,
            exclude_container: vec![],
            states: States::parse(&["running".into()]).unwrap(),
            init_containers: true,
            ephemeral_containers: true,
        }
    }

    fn running(name: &str, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            restart_count: restarts,
            container_id: Some(format!("kwok://{name}-{restarts}")),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, containers: &[&str], init: &[&str]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("team".into());
        pod.metadata.uid = Some(format!("uid-{name}"));
        let c = |n: &&str| Container {
            name: (*n).into(),
            ..Default::default()
        };
        pod.spec = Some(PodSpec {
            containers: containers.iter().map(c).collect(),
            init_containers: Some(init.iter().map(c).collect()),
            ..Default::default()
        });
        let mut init_statuses: Vec<ContainerStatus> = init.iter().map(|n| running(n, 0)).collect();
        for s in &mut init_statuses {
            s.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated::default()),
                ..Default::default()
            });
        }
        pod.status = Some(PodStatus {
            container_statuses: Some(containers.iter().map(|n| running(n, 0)).collect()),
            init_container_statuses: Some(init_statuses),
            ..Default::default()
        });
        pod
    }

    fn names(selected: Vec<(Target, Instance)>) -> Vec<String> {
        selected
            .into_iter()
            .map(|(t, _)| format!("{}/{}", t.pod, t.container))
            .collect()
    }

    #[test]
    fn queries_parse_as_regex_or_kind_and_name() {
        assert!(matches!(parse_query(None), Ok(Query::All)));
        assert!(matches!(parse_query(Some("web-.*")), Ok(Query::PodName(_))));
        for (text, kind) in [
            ("deploy/web", Kind::Deployment),
            ("deployment.apps/web", Kind::Deployment),
            ("sts/db", Kind::StatefulSet),
            ("ds/agent", Kind::DaemonSet),
            ("rs/web-1", Kind::ReplicaSet),
            ("job/migrate", Kind::Job),
            ("svc/web", Kind::Service),
            ("pod/web-1", Kind::Pod),
        ] {
            match parse_query(Some(text)) {
                Ok(Query::Object { kind: k, .. }) => assert_eq!(k, kind, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = parse_query(Some("cronjob/x")).unwrap_err();
        assert!(err.contains("unknown kind \"cronjob\""), "{err}");
        assert!(parse_query(Some("deploy/")).is_err());
        let err = parse_query(Some("web-(")).unwrap_err();
        assert!(err.contains("invalid regex \"web-(\" in QUERY"), "{err}");
    }

    #[test]
    fn container_states_parse() {
        let all = States::parse(&["all".into()]).unwrap();
        assert!(all.running && all.waiting && all.terminated);
        let two = States::parse(&["running,terminated".into()]).unwrap();
        assert!(two.running && !two.waiting && two.terminated);
        assert!(States::parse(&["sleeping".into()]).is_err());
    }

    #[test]
    fn pods_and_containers_are_filtered_by_regex() {
        let p = pod("web-1", &["app", "sidecar"], &["setup"]);
        assert_eq!(names(select(&p, &filter())), ["web-1/app", "web-1/sidecar"]);

        let mut f = filter();
        f.container = Some(Regex::new("^app$").unwrap());
        assert_eq!(names(select(&p, &f)), ["web-1/app"]);

        let mut f = filter();
        f.exclude_container = vec![Regex::new("side").unwrap()];
        assert_eq!(names(select(&p, &f)), ["web-1/app"]);

        let mut f = filter();
        f.pod = Some(Regex::new("^db").unwrap());
        assert!(select(&p, &f).is_empty());

        let mut f = filter();
        f.exclude_pod = vec![Regex::new("web").unwrap()];
        assert!(select(&p, &f).is_empty());
    }

    #[test]
    fn init_containers_follow_the_state_filter_and_their_flag() {
        let p = pod("web-1", &["app"], &["setup"]);
        let mut f = filter();
        f.states = States::parse(&["all".into()]).unwrap();
        assert_eq!(names(select(&p, &f)), ["web-1/setup", "web-1/app"]);
        f.init_containers = false;
        assert_eq!(names(select(&p, &f)), ["web-1/app"]);
    }

    #[test]
    fn a_container_without_status_is_waiting() {
        let mut p = pod("web-1", &["app"], &[]);
        p.status = None;
        assert!(select(&p, &filter()).is_empty());
        let mut f = filter();
        f.states = States::parse(&["waiting".into()]).unwrap();
        let selected = select(&p, &f);
        assert_eq!(selected[0].1.state, State::Waiting);
    }

    #[test]
    fn a_restart_is_a_new_instance() {
        let before = instance(Some(&running("app", 0)));
        let after = instance(Some(&running("app", 1)));
        assert!(before.restarted_as(&after));
        assert!(!after.restarted_as(&after.clone()));
    }

    proptest::proptest! {
        #[test]
        fn queries_and_states_never_panic(
            query in proptest::prelude::any::<String>(),
            states in proptest::collection::vec(proptest::prelude::any::<String>(), 0..4),
        ) {
            let _ = parse_query(Some(&query));
            let _ = compile("-c", &query);
            let _ = States::parse(&states);
        }
    }
}
