//! Integration tests against a real local control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kwok).
//!
//! `scripts/test` starts the cluster and points `KDEV_TEST_KUBECONFIG` at it.
//! Without it every test here fails with a message saying so: a missing
//! cluster is never a silent skip.

mod controller;
mod crash;
mod dashboard;
mod deploy_manifests;
mod envs;
mod envs_crash_kinds;
mod envs_idle;
mod envs_patch;
mod envs_savings;
mod hardening;
mod kinds;
mod kwok_emulation;
mod lifecycle;
mod logs;
mod netview_runtimes;
mod real_node;
mod resilience;
mod run;
#[path = "../common/static_go.rs"]
mod static_go;
mod support;
mod swap;
mod swap_support;
mod telepresence;
mod testing;
mod workloads;
