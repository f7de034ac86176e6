//! What sleeping saved ([`kdev_contract::envs::savings`]): after each
//! sleep or wake of an environment, how much of it is asleep (the pods its
//! workloads' sleep records say are gone, times each pod's requests) is
//! recorded in the ledger on its activity Lease; `kdev envs --savings` and
//! the dashboard read the ledgers.
//!
//! Counted: Deployments, StatefulSets and Argo Rollouts, whose replicas a
//! sleep sets. Not counted: CronJobs and Jobs (what their runs would have
//! used is not known), DaemonSets, KEDA's targets and resources slept by
//! patch (their pods are a count their controllers set, not kdev).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{Api, ResourceExt as _};
use serde::Serialize;

use super::workload::{self, Kind, Rollout, Scalable};
use crate::k8s::guarded::{self, Decision};
use crate::k8s::{self, Kube};
pub use kdev_contract::envs::savings::Hours;
use kdev_contract::envs::savings::{self as contract, Amount, Ledger};
use kdev_contract::envs::{ACTIVITY_LEASE, SleepRecord};

/// What one pod of `template` requests: its containers' requests (their
/// limits where a request is not given, as the API server defaults it),
/// and sidecars' (init containers that keep running).
pub fn per_pod(template: &PodTemplateSpec) -> Amount {
    let Some(spec) = template.spec.as_ref() else {
        return Amount {
            pods: 1,
            ..Amount::default()
        };
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let (mut cpu, mut memory) = (0.0, 0.0);
    for container in spec.containers.iter().chain(sidecars) {
        let resources = container.resources.as_ref();
        let asked = |name: &str| {
            let of = |map: Option<
                &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >| {
                map.and_then(|m| m.get(name))
                    .and_then(|q| contract::quantity(&q.0))
            };
            of(resources.and_then(|r| r.requests.as_ref()))
                .or_else(|| of(resources.and_then(|r| r.limits.as_ref())))
                .unwrap_or(0.0)
        };
        cpu += asked("cpu");
        memory += asked("memory");
    }
    Amount {
        pods: 1,
        cpu_millis: (cpu * 1000.0).round() as u64,
        memory_bytes: memory.round() as u64,
    }
}

/// What `object` has asleep: the replicas its sleep record says it had,
/// less those it has; nothing for the kinds not counted (see above).
pub fn asleep_of<K: Scalable>(object: &K) -> Amount {
    if !matches!(
        K::KIND,
        Kind::Deployment | Kind::StatefulSet | Kind::Rollout
    ) {
        return Amount::default();
    }
    let Ok(Some(record)) = SleepRecord::read(object.annotations()) else {
        return Amount::default();
    };
    let gone = record.replicas.saturating_sub(object.size()).max(0) as u64;
    match object.pods() {
        Some(pods) => per_pod(pods.template).times(gone),
        None => Amount {
            pods: gone,
            ..Amount::default()
        },
    }
}

/// How much of `namespace` is asleep now.
pub async fn asleep(kube: &Kube, namespace: &str) -> anyhow::Result<Amount> {
    let (deployments, statefulsets, rollouts) = tokio::try_join!(
        workload::list_kind::<Deployment>(kube, Some(namespace)),
        workload::list_kind::<StatefulSet>(kube, Some(namespace)),
        workload::list_kind::<Rollout>(kube, Some(namespace)),
    )?;
    Ok(deployments
        .iter()
        .map(asleep_of)
        .chain(statefulsets.iter().map(asleep_of))
        .chain(rollouts.iter().map(asleep_of))
        .fold(Amount::default(), Amount::plus))
}

/// Records in `namespace`'s ledger what is asleep there from `now` on:
/// `known` when the transition saw every workload's state after it, else
/// what a listing finds. Best effort, after the transition it follows: an
/// account that may not write the activity Lease records nothing (and the
/// log says so); a process killed before it leaves the previous amount
/// counting until the next record.
pub async fn record(kube: &Kube, namespace: &str, now: jiff::Timestamp, known: Option<Amount>) {
    if let Err(err) = try_record(kube, namespace, now, known).await {
        tracing::warn!(namespace, "what sleeping saves was not recorded: {err:#}");
    }
}

async fn try_record(
    kube: &Kube,
    namespace: &str,
    now: jiff::Timestamp,
    known: Option<Amount>,
) -> anyhow::Result<()> {
    let amount = match known {
        Some(amount) => amount,
        None => asleep(kube, namespace).await?,
    };
    let api: Api<Lease> = Api::namespaced(kube.client.clone(), namespace);
    let what = format!("lease {namespace}/{ACTIVITY_LEASE}");
    let written = guarded::update(kube, &api, ACTIVITY_LEASE, &what, |current| {
        let Some(lease) = current else {
            return Ok(Decision::Keep(false));
        };
        // A ledger that cannot be read starts again rather than block.
        let ledger = Ledger::read(lease.annotations()).unwrap_or_default();
        let next = ledger.record(now, amount);
        let patch = serde_json::json!({
            "metadata": { "annotations": { contract::SAVINGS_ANNOTATION: next.text() } }
        });
        Ok(Decision::Write(patch, true))
    })
    .await?;
    if !written.value {
        // No holder and no renew time: a ledger is no sign of activity.
        let mut lease = k8s::activity::lease("kdev");
        lease.spec = None;
        lease.metadata.annotations = Some(BTreeMap::from([(
            contract::SAVINGS_ANNOTATION.to_owned(),
            Ledger::default().record(now, amount).text(),
        )]));
        match api.create(&Default::default(), &lease).await {
            Ok(_) => {}
            // Made since the read: the next record writes the ledger.
            Err(err) if k8s::is_conflict(&err) => {}
            Err(err) => return Err(kube.explain(err, format!("create {what}"))),
        }
    }
    Ok(())
}

/// One environment's savings, as `kdev envs --savings` and the dashboard
/// show them.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub namespace: String,
    /// When its ledger began (none: nothing recorded yet).
    pub since: Option<jiff::Timestamp>,
    /// What is asleep now.
    pub asleep_now: Amount,
    pub last_7_days: Hours,
    pub last_30_days: Hours,
    /// The last 30 days, oldest first.
    pub daily: Vec<Day>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Day {
    pub day: String,
    #[serde(flatten)]
    pub hours: Hours,
}

/// `namespace`'s savings from its activity Lease's annotations, as of `now`.
pub fn saved(
    namespace: &str,
    annotations: &BTreeMap<String, String>,
    now: jiff::Timestamp,
) -> Result<Saved, String> {
    let ledger = Ledger::read(annotations)?;
    Ok(Saved {
        namespace: namespace.to_owned(),
        since: ledger.since,
        asleep_now: ledger.open.as_ref().map(|o| o.amount).unwrap_or_default(),
        last_7_days: ledger.window(now, 7),
        last_30_days: ledger.window(now, 30),
        daily: ledger
            .daily(now, 30)
            .into_iter()
            .map(|(day, hours)| Day { day, hours })
            .collect(),
    })
}

/// The table `kdev envs --savings` prints.
pub fn table(rows: &[Saved], week: Hours, month: Hours) -> String {
    let name_width = rows
        .iter()
        .map(|r| r.namespace.len())
        .chain([11])
        .max()
        .unwrap_or(11);
    let mut out = format!(
        "{:<name_width$}  {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}\n",
        "ENVIRONMENT", "POD-H 7D", "CPU-H 7D", "GIB-H 7D", "POD-H 30D", "CPU-H 30D", "GIB-H 30D"
    );
    let line = |name: &str, w: Hours, m: Hours| {
        format!(
            "{name:<name_width$}  {:>9.1} {:>9.1} {:>9.1}   {:>9.1} {:>9.1} {:>9.1}\n",
            w.pods, w.cpu, w.memory_gib, m.pods, m.cpu, m.memory_gib
        )
    };
    for row in rows {
        out.push_str(&line(&row.namespace, row.last_7_days, row.last_30_days));
    }
    out.push_str(&line("total", week, month));
    let since = rows.iter().filter_map(|r| r.since).min();
    out.push_str(&match since {
        Some(since) => format!(
            "hours asleep of the pods kdev's sleeps removed and their requests (Deployments, StatefulSets, Rollouts); recorded since {}\n",
            since.strftime("%Y-%m-%d %H:%M UTC")
        ),
        None => "nothing recorded yet: each sleep and wake records what is asleep from then on\n"
            .to_owned(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_asks_for_its_containers_and_sidecars_requests_or_their_limits() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {
                "initContainers": [
                    { "name": "setup", "resources": { "requests": { "cpu": "4" } } },
                    { "name": "proxy", "restartPolicy": "Always", "resources": { "requests": { "cpu": "50m", "memory": "64Mi" } } }
                ],
                "containers": [
                    { "name": "app", "resources": { "requests": { "cpu": "250m", "memory": "256Mi" } } },
                    { "name": "cache", "resources": { "limits": { "cpu": "0.5", "memory": "1Gi" } } },
                    { "name": "bare" }
                ]
            }
        }))
        .unwrap();
        let amount = per_pod(&template);
        assert_eq!(amount.pods, 1);
        assert_eq!(amount.cpu_millis, 800);
        assert_eq!(amount.memory_bytes, (64 + 256 + 1024) * 1024 * 1024);
    }

    #[test]
    fn the_table_has_a_row_per_environment_and_a_total() {
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let ledger = Ledger::default().record(
            "2026-12-07T10:00:00Z".parse().unwrap(),
            Amount {
                pods: 3,
                cpu_millis: 1500,
                memory_bytes: 3 << 30,
            },
        );
        let annotations =
            BTreeMap::from([(contract::SAVINGS_ANNOTATION.to_owned(), ledger.text())]);
        let a = saved("team-a", &annotations, now).unwrap();
        let b = saved("team-b", &BTreeMap::new(), now).unwrap();
        let text = table(&[a.clone(), b], a.last_7_days, a.last_30_days);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[1].starts_with("team-a") && lines[1].contains("6.0"),
            "{text}"
        );
        assert!(lines[1].contains("3.0"), "{text}");
        assert!(lines[3].starts_with("total"), "{text}");
        assert!(lines[4].contains("since 2026-12-07 10:00 UTC"), "{text}");
    }
}
