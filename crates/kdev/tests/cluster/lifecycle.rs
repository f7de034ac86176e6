//! `kdev cluster up|kubeconfig|down` on a cluster of its own.

use std::time::Instant;

use crate::support::{OwnCluster, kdev, unique_name};

#[test]
fn cluster_up_serves_a_ready_node_and_down_leaves_no_process() {
    let name = unique_name("life");
    let started = Instant::now();
    let up = kdev()
        .args(["cluster", "up", "--node", "kwok", "--name", &name])
        .output()
        .expect("run kdev");
    assert!(
        up.status.success(),
        "kdev cluster up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    eprintln!(
        "kdev cluster up took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let guard = OwnCluster(name.clone());

    let path = kdev()
        .args(["cluster", "kubeconfig", "--name", &name])
        .output()
        .expect("run kdev");
    assert!(path.status.success());
    let kubeconfig = String::from_utf8(path.stdout)
        .expect("utf-8 path")
        .trim()
        .to_owned();
    let dir = std::path::Path::new(&kubeconfig)
        .parent()
        .expect("cluster dir")
        .to_owned();

    let binaries = kdev::cluster::Binaries::locate().expect("binaries");
    let nodes = std::process::Command::new(&binaries.kubectl)
        .args(["--kubeconfig", &kubeconfig, "get", "nodes", "--no-headers"])
        .output()
        .expect("run kubectl");
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        nodes
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some("Ready")),
        "no Ready node in:\n{nodes}"
    );

    // A second `up` finds it running and returns at once.
    let again = kdev()
        .args(["cluster", "up", "--node", "kwok", "--name", &name])
        .output()
        .expect("run kdev");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    assert!(
        !kdev::cluster::processes::pids_under(&dir).is_empty(),
        "the cluster runs processes"
    );
    drop(guard);
    let left = kdev::cluster::processes::pids_under(&dir);
    assert!(
        left.is_empty(),
        "processes left behind after down: {left:?}"
    );
    assert!(!dir.exists(), "cluster folder left behind");

    let gone = kdev()
        .args(["cluster", "kubeconfig", "--name", &name])
        .output()
        .expect("run kdev");
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("kdev cluster up"));
}

/// kwokctl picks ports by counting down from the same number in every
/// process, so clusters created at the same moment used to get the same
/// ports and one never came up (a CI failure). Both must come up, apart.
#[test]
fn two_clusters_started_at_once_both_come_up_on_their_own_ports() {
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| OwnCluster::up("twin"));
        let b = scope.spawn(|| OwnCluster::up("twin"));
        (a.join(), b.join())
    });
    let ((_a, kubeconfig_a), (_b, kubeconfig_b)) =
        (a.expect("first cluster up"), b.expect("second cluster up"));
    assert_ne!(server(&kubeconfig_a), server(&kubeconfig_b));
    assert!(
        answers(&kubeconfig_a),
        "{} does not answer",
        kubeconfig_a.display()
    );
    assert!(
        answers(&kubeconfig_b),
        "{} does not answer",
        kubeconfig_b.display()
    );
}

/// kwokctl hands out the ports that are free right now, so a cluster created
/// while another's API server was down took its port and the other could not
/// start again (a CI failure). kdev records each cluster's ports instead.
#[tokio::test]
async fn a_cluster_created_while_another_is_down_leaves_it_its_ports() {
    let (_first, kubeconfig) = OwnCluster::up("keeper");
    let dir = kubeconfig.parent().expect("cluster dir").to_owned();
    let stopped = crate::support::kill_component(&dir, "kube-apiserver").await;
    let (_second, other) = OwnCluster::up("newcomer");
    assert_ne!(server(&kubeconfig), server(&other));
    stopped.start();
    crate::support::eventually(
        std::time::Duration::from_secs(60),
        "the first cluster's API server to answer again",
        || async { answers(&kubeconfig).then_some(()) },
    )
    .await;
    assert!(answers(&other));
}

fn server(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    text.lines()
        .find_map(|line| line.trim().strip_prefix("server: ").map(str::to_owned))
        .expect("a server in the kubeconfig")
}

fn answers(kubeconfig: &std::path::Path) -> bool {
    crate::support::kubectl_for(kubeconfig)
        .args(["get", "--raw", "/version"])
        .output()
        .is_ok_and(|out| out.status.success())
}
