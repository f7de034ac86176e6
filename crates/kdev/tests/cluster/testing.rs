//! `kdev test` against the real control plane: the greeter example's suite
//! in both formats, what a failure prints (diff, Events, the pods' logs, on
//! the real node), bad input, --rerun-failed, negative assertions and
//! namespaces held by finalizers.

use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::real_node::{BUSYBOX, require_real_node};
use crate::support::{client_for, eventually, kdev, kubeconfig, unique_name, with_namespace};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The greeter example, built by `cargo build --bins` (scripts/test).
fn greeter() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_kdev")).with_file_name("greeter");
    assert!(
        bin.is_file(),
        "{} is missing: build the example with `cargo build --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// `kdev test ARGS` in `dir`, against the test cluster.
fn kdev_test(dir: &Path, args: &[&str]) -> Output {
    kdev()
        .current_dir(dir)
        .env("KUBECONFIG", kubeconfig())
        .arg("test")
        .args(args)
        .output()
        .expect("run kdev test")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
    std::fs::write(full, content).expect("write fixture");
}

#[tokio::test]
async fn the_greeter_suite_passes_in_both_formats() {
    let work = tempfile::tempdir().expect("tempdir");
    let junit = work.path().join("junit.xml");
    let e2e = repo().join("examples/greeter/e2e");
    let greeter = greeter();
    let output = kdev_test(
        work.path(),
        &[
            e2e.join("kuttl").to_str().expect("utf-8"),
            e2e.join("chainsaw").to_str().expect("utf-8"),
            "-o",
            "json",
            "--junit",
            junit.to_str().expect("utf-8"),
            "--wait-cleanup",
            "--run-controller",
            "--",
            greeter.to_str().expect("utf-8"),
        ],
    );
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["passed"], 4, "{shown}");
    let formats: Vec<_> = summary["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["format"].as_str().unwrap_or(""),
                t["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "kuttl/greets",
        "kuttl/owned",
        "chainsaw/greets",
        "chainsaw/owned",
    ] {
        assert!(formats.contains(&want.to_owned()), "{want} in {formats:?}");
    }
    let xml = std::fs::read_to_string(&junit).expect("the JUnit report");
    assert!(
        xml.contains("tests=\"4\"") && xml.contains("failures=\"0\""),
        "{xml}"
    );
    // The test namespaces are gone when kdev test returns.
    let client = client_for(&kubeconfig()).await;
    let namespaces: Api<Namespace> = Api::all(client);
    for t in summary["tests"].as_array().expect("tests") {
        let ns = t["namespace"].as_str().expect("a namespace");
        assert!(
            namespaces.get_opt(ns).await.expect("read").is_none(),
            "{ns} is left"
        );
    }
}

#[tokio::test]
async fn a_failure_shows_every_mismatch_the_events_and_the_logs() {
    // The namespace helper is only used to check the real node is there.
    with_namespace("test-failure", |ns| async move {
        require_real_node(&ns).await;
        let work = tempfile::tempdir().expect("tempdir");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "talker", "labels": {"app": "talker"}},
            "spec": {
                "nodeSelector": {"kdev.dev/node": "real"},
                "tolerations": [{"key": "kdev.dev/node", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{
                    "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo talker-says-hello; sleep 3600"],
                }],
            },
        });
        let test = json!({
            "apiVersion": "chainsaw.kyverno.io/v1alpha1", "kind": "Test",
            "metadata": {"name": "mismatches"},
            "spec": {"timeouts": {"assert": "4s"}, "steps": [{"try": [
                {"apply": {"resource": pod}},
                {"apply": {"resource": {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "settings"}, "data": {"mode": "fast", "size": "3"}}}},
                {"wait": {"apiVersion": "v1", "kind": "Pod", "name": "talker", "timeout": "60s",
                    "for": {"condition": {"name": "Ready"}}}},
                {"assert": {"resource": {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "settings"}, "data": {"mode": "slow", "size": "4", "extra": "x"}}}},
            ]}]},
        });
        write(work.path(), "t/chainsaw-test.yaml", &serde_json::to_string_pretty(&test).expect("json"));
        let output = kdev_test(work.path(), &["t"]);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "{shown}");
        let out = String::from_utf8_lossy(&output.stdout);
        // Every mismatch, not only the first, and a diff of just those fields.
        for want in [
            "data.mode: expected \"slow\", got \"fast\"",
            "data.size: expected \"4\", got \"3\"",
            "data.extra: expected \"x\", but it is missing",
            "-   mode: slow",
            "+   mode: fast",
            "chainsaw-test.yaml:",
        ] {
            assert!(out.contains(want), "{want:?} missing from:\n{shown}");
        }
        assert!(!out.contains("managedFields"), "{shown}");
        // The namespace's Events and its pod's log.
        assert!(out.contains("--- events in kdev-test-mismatches-"), "{shown}");
        assert!(out.contains("Pod/talker"), "{shown}");
        assert!(out.contains("talker main talker-says-hello"), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn bad_input_exits_2_naming_file_and_line_and_applies_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let name = unique_name("never-applied");
    write(
        work.path(),
        "t/chainsaw-test.yaml",
        &format!(
            "apiVersion: chainsaw.kyverno.io/v1alpha1\nkind: Test\nmetadata:\n  name: bad\nspec:\n  steps:\n  - try:\n    - apply:\n        resource:\n          apiVersion: v1\n          kind: ConfigMap\n          metadata:\n            name: {name}\n    - asert:\n        file: x.yaml\n"
        ),
    );
    let output = kdev_test(work.path(), &["t"]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("t/chainsaw-test.yaml:14: unknown operation `asert`"),
        "{shown}"
    );
    assert!(shown.contains("nothing was applied"), "{shown}");
    let client = client_for(&kubeconfig()).await;
    let maps: Api<ConfigMap> = Api::all(client);
    let found = maps
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .expect("list");
    assert!(found.items.is_empty(), "{name} was applied");
}

#[tokio::test]
async fn rerun_failed_runs_only_what_failed_last_time() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path();
    write(
        root,
        "s/kuttl-test.yaml",
        "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\ntestDirs: [./tests]\ntimeout: 3\n",
    );
    let cm = |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
    write(root, "s/tests/good/00-apply.yaml", &cm("a"));
    write(root, "s/tests/good/00-assert.yaml", &cm("a"));
    write(root, "s/tests/flaky/00-apply.yaml", &cm("a"));
    write(root, "s/tests/flaky/00-assert.yaml", &cm("b"));
    let names = |o: &Output| -> Vec<String> {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(o)));
        v["tests"]
            .as_array()
            .expect("tests")
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["name"].as_str().unwrap_or(""),
                    t["status"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let first = kdev_test(root, &["s", "-o", "json"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let mut all = names(&first);
    all.sort();
    assert_eq!(all, ["flaky:failed", "good:passed"]);
    // Fixed: only the failure runs again, and passes.
    write(
        root,
        "s/tests/flaky/00-apply.yaml",
        &format!("{}---\n{}", cm("a"), cm("b")),
    );
    let second = kdev_test(root, &["s", "-o", "json", "--rerun-failed"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(names(&second), ["flaky:passed"]);
    let third = kdev_test(root, &["s", "--rerun-failed"]);
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert!(
        text(&third).contains("nothing failed in the last run"),
        "{}",
        text(&third)
    );
}

#[tokio::test]
async fn a_kuttl_command_with_ignore_failure_that_fails_passes_its_step_as_kuttl_does() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path();
    write(
        root,
        "s/kuttl-test.yaml",
        "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\ntestDirs: [./tests]\ntimeout: 10\n",
    );
    // A failing command (kubectl deleting what is not there) with and
    // without ignoreFailure, then a command that must still run.
    let step = |ignore: bool| {
        format!(
            "apiVersion: kuttl.dev/v1beta1\nkind: TestStep\ncommands:\n- command: kubectl delete configmap absent\n  namespaced: true\n  ignoreFailure: {ignore}\n- script: kubectl create configmap after -n $NAMESPACE\n"
        )
    };
    let after = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n";
    write(root, "s/tests/ignored/00-step.yaml", &step(true));
    write(root, "s/tests/ignored/00-assert.yaml", after);
    write(root, "s/tests/counted/00-step.yaml", &step(false));
    write(root, "s/tests/counted/00-assert.yaml", after);
    let output = kdev_test(root, &["s", "-o", "json"]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    let mut verdicts: Vec<String> = summary["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["name"].as_str().unwrap_or(""),
                t["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    verdicts.sort();
    assert_eq!(verdicts, ["counted:failed", "ignored:passed"], "{shown}");
}

#[tokio::test]
async fn a_negative_assertion_must_keep_holding_for_its_window() {
    let work = tempfile::tempdir().expect("tempdir");
    // The object does not exist when the error check starts, and appears
    // a moment later (as a controller's mistake would).
    write(
        work.path(),
        "late/chainsaw-test.yaml",
        "apiVersion: chainsaw.kyverno.io/v1alpha1\nkind: Test\nmetadata:\n  name: late\nspec:\n  steps:\n  - try:\n    - script:\n        content: (sleep 1; kubectl create configmap late -n $NAMESPACE) >/dev/null 2>&1 &\n    - error:\n        resource:\n          apiVersion: v1\n          kind: ConfigMap\n          metadata:\n            name: late\n",
    );
    let output = kdev_test(work.path(), &["late", "--errors-window", "10s"]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(
            "ConfigMap/late must not exist, and one appeared within the 10s errors window"
        ),
        "{shown}"
    );
}

#[tokio::test]
async fn a_namespace_held_by_a_finalizer_is_reported_and_force_cleanup_frees_it() {
    let work = tempfile::tempdir().expect("tempdir");
    write(
        work.path(),
        "held/00-apply.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers:\n  - example.kdev.dev/hold\n",
    );
    let namespace_of = |o: &Output| -> String {
        let summary: Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(o)));
        summary["tests"][0]["namespace"]
            .as_str()
            .expect("ns")
            .to_owned()
    };
    // Waiting at the end: the namespace that cannot go is named with what
    // holds it.
    let first = kdev_test(
        work.path(),
        &[
            "held",
            "--wait-cleanup",
            "--cleanup-timeout",
            "3s",
            "-o",
            "json",
        ],
    );
    let shown = text(&first);
    assert_eq!(first.status.code(), Some(0), "{shown}");
    let held = namespace_of(&first);
    assert!(
        shown.contains(&format!("namespace {held} is still being deleted after 3s"))
            && shown.contains("held by configmaps./held (finalizers: example.kdev.dev/hold) (--force-cleanup removes them)"),
        "{shown}"
    );
    // Not waiting (the default): the next run reports what an earlier run
    // left, and --force-cleanup frees it.
    let second = kdev_test(
        work.path(),
        &[
            "held",
            "--cleanup-timeout",
            "1s",
            "--force-cleanup",
            "-o",
            "json",
        ],
    );
    let shown = text(&second);
    assert_eq!(second.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(&format!("from an earlier run: namespace {held}")),
        "{shown}"
    );
    assert!(
        shown.contains("removed the finalizers of configmaps./held"),
        "{shown}"
    );
    assert!(
        shown.contains("1 test namespace is being deleted in the background"),
        "{shown}"
    );
    let client = client_for(&kubeconfig()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(
        std::time::Duration::from_secs(60),
        "the freed namespace to go",
        || async {
            namespaces
                .get_opt(&held)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        },
    )
    .await;
    // The second run's own namespace is held the same way: free it here.
    let maps: Api<ConfigMap> = Api::namespaced(client, &namespace_of(&second));
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove the finalizer");
}

/// A kuttl test that applies a ConfigMap and asserts `data.a` is `want`
/// (2 s to hold).
fn configmap_test(root: &Path, name: &str, want: &str) {
    write(
        root,
        &format!("{name}/00-apply.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\n",
    );
    write(
        root,
        &format!("{name}/00-assert.yaml"),
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"{want}\"\n---\napiVersion: kuttl.dev/v1beta1\nkind: TestAssert\ntimeout: 2\n"
        ),
    );
}

#[tokio::test]
async fn a_suite_runs_on_a_local_cluster_of_its_own_which_is_removed_after_it() {
    let work = tempfile::tempdir().expect("tempdir");
    configmap_test(work.path(), "alone", "1");
    let output = kdev()
        .current_dir(work.path())
        .env_remove("KUBECONFIG")
        .args(["test", "alone", "--cluster", "local", "--node", "kwok"])
        .output()
        .expect("run kdev test");
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(shown.contains("PASS alone"), "{shown}");
    let name = shown
        .split("starting the local cluster ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the cluster is named: {shown}"))
        .to_owned();
    let dir = kdev::host::kdev_home().join("kwok/clusters").join(&name);
    assert!(
        !dir.exists(),
        "{} is removed after the suite",
        dir.display()
    );
}

#[tokio::test]
async fn apply_kustomize_waits_for_the_controllers_deployment_before_any_test() {
    with_namespace("kustomize", |ns| async move {
        let work = tempfile::tempdir().expect("tempdir");
        configmap_test(work.path(), "after", "1");
        let deployment = |name: &str, extra: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{extra}      containers:\n      - name: c\n        image: example.invalid/controller:1\n"
            )
        };
        write(
            work.path(),
            "good/kustomization.yaml",
            &format!("namespace: {}\nresources: [controller.yaml]\n", ns.name),
        );
        write(work.path(), "good/controller.yaml", &deployment("controller", ""));
        let output = kdev_test(work.path(), &["after", "--apply-kustomize", "good"]);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(0), "{shown}");
        let waited = shown
            .find(&format!("waiting for deployment {}/controller to be Available", ns.name))
            .unwrap_or_else(|| panic!("it waits for the Deployment: {shown}"));
        assert!(waited < shown.len() && shown.contains("PASS after"), "{shown}");

        // One that never becomes Available stops the suite, naming it.
        write(
            work.path(),
            "stuck/kustomization.yaml",
            &format!("namespace: {}\nresources: [controller.yaml]\n", ns.name),
        );
        write(
            work.path(),
            "stuck/controller.yaml",
            &deployment("stuck", "      nodeSelector: {kdev.dev/no-such-node: \"true\"}\n"),
        );
        let output = kdev_test(
            work.path(),
            &["after", "--apply-kustomize", "stuck", "--deploy-timeout", "3s"],
        );
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "{shown}");
        assert!(
            shown.contains(&format!(
                "deployment {}/stuck (the controller under test) was not Available within 3s",
                ns.name
            )),
            "{shown}"
        );
        assert!(!shown.contains("PASS after"), "no test ran: {shown}");
    })
    .await;
}

/// The lines a child prints on stdout and stderr, as they come.
struct Lines {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn start(mut command: tokio::process::Command) -> Lines {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the child");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for reader in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(reader).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        Lines {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `marker`; the lines before it are kept.
    async fn until(&mut self, marker: &str) -> &[String] {
        let start = self.seen.len();
        let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = self.lines.recv().await {
                let hit = line.contains(marker);
                self.seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            found == Ok(true),
            "no line with {marker:?}; saw:\n{}",
            self.seen.join("\n")
        );
        &self.seen[start..]
    }
}

#[tokio::test]
async fn watch_reruns_the_test_a_change_touches_and_restarts_the_controller_for_its_source() {
    let work = tempfile::tempdir().expect("tempdir");
    configmap_test(work.path(), "one", "1");
    configmap_test(work.path(), "two", "1");
    write(work.path(), "src/main.rs", "fn main() {}\n");
    // The controller records each start, then waits. Outside the watched
    // folder: its write must not be a change that reruns the suite.
    let records = tempfile::tempdir().expect("tempdir");
    let starts = records.path().join("starts");
    let controller = format!("echo $$ >> {}; exec sleep 600", starts.display());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kdev"));
    command
        .current_dir(work.path())
        .env("KUBECONFIG", kubeconfig())
        .args([
            "test",
            "one",
            "two",
            "--watch",
            "--watch-path",
            "src",
            "--run-controller",
            "--",
            "sh",
            "-c",
            &controller,
        ]);
    let mut run = Lines::start(command);
    // The summary (stdout) and "watching" (stderr) may come in either order.
    run.until("2 passed, 0 failed").await;
    if !run.seen.iter().any(|l| l.contains("watching")) {
        run.until("watching").await;
    }
    let first = run.seen.join("\n");
    assert!(
        first.contains("PASS one") && first.contains("PASS two"),
        "{first}"
    );

    // A change to one test reruns that test alone.
    write(
        work.path(),
        "two/00-assert.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"2\"\n---\napiVersion: kuttl.dev/v1beta1\nkind: TestAssert\ntimeout: 2\n",
    );
    let rerun = run.until("0 passed, 1 failed").await.join("\n");
    assert!(rerun.contains("FAIL two"), "{rerun}");
    assert!(
        rerun.contains("data.a: expected \"2\", got \"1\""),
        "{rerun}"
    );
    assert!(!rerun.contains(" one "), "only the changed test: {rerun}");
    assert!(!rerun.contains("restarting"), "{rerun}");

    // A change to the controller's source restarts it and reruns everything.
    write(work.path(), "src/main.rs", "fn main() { loop {} }\n");
    let after = run.until("1 passed, 1 failed").await.join("\n");
    assert!(after.contains("restarting the controller sh"), "{after}");
    assert!(
        after.contains("PASS one") && after.contains("FAIL two"),
        "{after}"
    );
    let pids: Vec<i32> = std::fs::read_to_string(&starts)
        .expect("the controller's starts")
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "started twice: {pids:?}");

    // Ctrl-C ends the watch and the controller with it.
    let pid = run.child.id().expect("running") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), run.child.wait())
        .await
        .expect("kdev test ends on Ctrl-C")
        .expect("wait");
    assert_eq!(status.code(), Some(130));
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        assert!(!alive, "the controller {pid} is gone");
    }
}

#[tokio::test]
async fn a_field_the_schema_does_not_know_fails_the_write_instead_of_being_dropped() {
    let work = tempfile::tempdir().expect("tempdir");
    write(
        work.path(),
        "typo/00-apply.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndatta:\n  a: \"1\"\n",
    );
    let output = kdev_test(work.path(), &["typo"]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("FAIL typo") && shown.contains("unknown field \"datta\""),
        "{shown}"
    );
}

#[tokio::test]
async fn the_demo_apps_suite_passes_on_the_real_node_and_its_failing_case_says_why() {
    // What the README's demo runs: the sample app's suite in both formats
    // (its pods and a client Job in real containers), then a test that fails
    // on purpose.
    with_namespace("test-demo", |ns| async move {
        require_real_node(&ns).await;
        let work = tempfile::tempdir().expect("tempdir");
        let results = work.path().join("results.json");
        let results = results.to_str().expect("utf-8");
        let suite = repo().join("demo/e2e");
        let output = kdev_test(
            work.path(),
            &[suite.to_str().expect("utf-8"), "--results", results],
        );
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(0), "{shown}");
        assert!(
            shown.contains("PASS serves (kuttl") && shown.contains("PASS endpoints (chainsaw"),
            "{shown}"
        );

        let failing = repo().join("demo/e2e-failing");
        let output = kdev_test(
            work.path(),
            &[failing.to_str().expect("utf-8"), "--results", results],
        );
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "{shown}");
        for want in [
            "FAIL wrong-greeting",
            "data.GREETING: expected \"hola from the cluster\", got \"hello from the cluster\"",
            "-   GREETING: hola from the cluster",
            "+   GREETING: hello from the cluster",
            "--- events in kdev-test-wrong-greeting-",
            "Started",
            "web listening on :8080",
        ] {
            assert!(shown.contains(want), "{want:?} missing from:\n{shown}");
        }
    })
    .await;
}
