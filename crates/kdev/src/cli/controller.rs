//! `kdev controller` flags.

use clap::Args;

use super::{parse_days, parse_duration};
use crate::controller::Config;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kdev controller --listen 0.0.0.0:8080")]
pub struct ControllerArgs {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Namespace of the leader-election Lease (default: the pod's namespace, else the -n namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the leader election (default: the pod's name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reap swap sessions in this namespace only (default: every namespace; needs only namespaced RBAC).
    #[arg(long, value_name = "NAME")]
    pub watch_namespace: Option<String>,
    /// Also clean up after dead telepresence 1 proxies, every 30s (needs deploy/telepresence's RBAC).
    #[arg(long)]
    pub telepresence: bool,
    /// With --telepresence: leave proxies younger than this alone.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub telepresence_min_age: std::time::Duration,
    /// Put environments (namespaces) to sleep and wake them by their schedule annotations (needs deploy/envs' RBAC).
    #[arg(long)]
    pub schedules: bool,
    /// With --schedules: at a sleep edge, workloads created less than this ago stay awake.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub grace_period: std::time::Duration,
    /// With --schedules: place no wakers when an environment sleeps (no wake on request).
    #[arg(long)]
    pub no_wake_on_request: bool,
    /// With --schedules: the wakers' image (kdev's agent image).
    #[arg(long, env = "KDEV_AGENT_IMAGE", value_name = "IMAGE")]
    pub agent_image: Option<String>,
    /// With --schedules: when namespaces without a schedule of their own are awake (kube-downscaler's --default-uptime; same syntax as kdev.dev/uptime).
    #[arg(long, value_name = "SCHEDULE")]
    pub default_uptime: Option<String>,
    /// With --schedules: when namespaces without a schedule of their own sleep (kube-downscaler's --default-downtime).
    #[arg(long, value_name = "SCHEDULE")]
    pub default_downtime: Option<String>,
    /// With --schedules: put environments to sleep after this long without activity (a namespace's kdev.dev/sleep-after-idle overrides it; default: only namespaces that ask).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_after: Option<std::time::Duration>,
    /// With --schedules: delete environments after this long without activity, warned first (14d; a namespace's kdev.dev/delete-after-idle overrides it, kdev.dev/keep keeps one; default: only namespaces that ask).
    #[arg(long, value_parser = parse_days, value_name = "DURATION")]
    pub delete_after_idle: Option<jiff::SignedDuration>,
    /// With --schedules: how long before such a deletion its warning comes (an Event, the dashboard).
    #[arg(long, value_parser = parse_days, default_value = "3d", value_name = "DURATION")]
    pub delete_warning: jiff::SignedDuration,
    /// Serve the environments dashboard (needs deploy/dashboard's RBAC); `kdev envs dashboard` opens it.
    #[arg(long)]
    pub dashboard: bool,
    /// With --dashboard: where it listens. Loopback by default: reached by port-forward or an auth proxy in the pod.
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    pub dashboard_listen: std::net::SocketAddr,
    /// With --dashboard: the user its actions are written as (default: ServiceAccount kdev-dashboard of the controller's namespace).
    #[arg(long, value_name = "USER")]
    pub dashboard_as: Option<String>,
    /// With --dashboard: a host name it is served as besides loopback (an auth proxy's external host); repeatable. Requests naming any other host are refused.
    #[arg(long = "dashboard-host", value_name = "HOST")]
    pub dashboard_hosts: Vec<String>,
    /// With --dashboard: also listen on this unix socket for an auth proxy in the pod; only its requests may name the signed-in user (X-Forwarded-Email/User).
    #[arg(long, value_name = "PATH")]
    pub dashboard_proxy_socket: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub scope: super::envs::ScopeArgs,
    /// Testing: the scheduler's clock starts at this instant (RFC 3339) and runs at the real pace. Only in test builds.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "TIME")]
    pub clock_start: Option<String>,
}

impl ControllerArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        if let Some(ns) = &self.lease_namespace {
            crate::k8s::validate_dns_label("--lease-namespace", ns)?;
        }
        if let Some(ns) = &self.watch_namespace {
            crate::k8s::validate_dns_label("--watch-namespace", ns)?;
        }
        for host in &self.dashboard_hosts {
            check_host(host)?;
        }
        #[cfg(feature = "test-hooks")]
        let clock_start = &self.clock_start;
        #[cfg(not(feature = "test-hooks"))]
        let clock_start: &Option<String> = &None;
        let clock = match clock_start {
            Some(text) => {
                let start: jiff::Timestamp = text.parse().map_err(|err| {
                    crate::error::usage(format!(
                        "--clock-start {text:?} is not an RFC 3339 time: {err}"
                    ))
                })?;
                crate::controller::schedule::Clock::starting_at(start)
            }
            None => crate::controller::schedule::Clock::real(),
        };
        let spec = |flag: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    kdev_contract::schedule::parse(text).map_err(|err| {
                        crate::error::usage(format!("{flag} {text:?} is not a schedule: {err}"))
                    })
                })
                .transpose()
        };
        let defaults = kdev_contract::envs::Defaults {
            uptime: spec("--default-uptime", &self.default_uptime)?,
            downtime: spec("--default-downtime", &self.default_downtime)?,
        };
        let scope = self.scope.resolve()?;
        let waker = (!self.no_wake_on_request).then(|| {
            self.agent_image
                .clone()
                .unwrap_or_else(kdev_contract::keys::default_agent_image)
        });
        Ok(Config {
            dashboard: self.dashboard.then(|| crate::controller::Dashboard {
                listen: self.dashboard_listen,
                act_as: self.dashboard_as.clone(),
                hosts: self.dashboard_hosts.clone(),
                proxy_socket: self.dashboard_proxy_socket.clone(),
                // Wakers are placed with the scheduler's rights.
                waker: if self.schedules { waker.clone() } else { None },
                scope: scope.clone(),
            }),
            listen: self.listen,
            lease_namespace: self.lease_namespace,
            identity: self.identity,
            watch_namespace: self.watch_namespace.clone(),
            telepresence_min_age: self.telepresence.then_some(self.telepresence_min_age),
            schedules: self
                .schedules
                .then(|| crate::controller::schedule::Options {
                    grace: self.grace_period,
                    clock,
                    namespace: self.watch_namespace.clone(),
                    defaults,
                    idle_after: self
                        .idle_after
                        .and_then(|d| jiff::SignedDuration::try_from(d).ok()),
                    waker: waker.clone(),
                    scope,
                    delete_after: self.delete_after_idle,
                    delete_warning: self.delete_warning,
                    // The controller's namespace, known once it connects.
                    home: String::new(),
                }),
        })
    }
}

/// `--dashboard-host`: a host name or IP address as a browser sends it in
/// `Host`, optionally with a port; anything else could never match.
fn check_host(text: &str) -> anyhow::Result<()> {
    let host = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            port.parse::<u16>().map_err(|_| {
                crate::error::usage(format!("--dashboard-host {text:?}: {port:?} is not a port"))
            })?;
            host
        }
        _ => text,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if name_ok || host.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(crate::error::usage(format!(
            "--dashboard-host {text:?} is not a host name (kdev.example.com), an IP address or either with a port"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dashboard_hosts_are_names_or_addresses_with_an_optional_port() {
        for good in [
            "kdev.example.com",
            "kdev.example.com:8443",
            "10.0.0.1",
            "[::1]:8081",
            "::1",
            "localhost",
        ] {
            assert!(check_host(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "https://kdev.example.com",
            "kdev example",
            "kdev.example.com:x",
            "a..b",
            "-a.b",
            "kdev.example.com/",
        ] {
            let err = check_host(bad).expect_err(bad).to_string();
            assert!(err.contains("--dashboard-host"), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn any_host_text_is_an_error_or_accepted_never_a_panic(text in ".{0,80}") {
            let _ = check_host(&text);
        }
    }
}
