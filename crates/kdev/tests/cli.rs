//! The kdev binary's behaviour on bad input, where no cluster is involved:
//! exit codes (2 usage, 1 failure) and messages that say what to do.

use std::process::{Command, Output};

fn kdev(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kdev"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run kdev")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A kubeconfig with two contexts whose server nothing listens on.
fn kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n\
         clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\n\
         users:\n- name: u\n  user:\n    token: t\n\
         contexts:\n- name: dev\n  context: {cluster: c, user: u, namespace: team}\n\
         - name: prod\n  context: {cluster: c, user: u}\n",
    )
    .expect("write kubeconfig");
    path
}

#[test]
fn version_client_prints_the_version() {
    let out = kdev(&["version", "--client"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kdev {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = kdev(&["version", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_unknown_context_names_the_available_ones_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path());
    let out = kdev(&[
        "version",
        "--kubeconfig",
        config.to_str().expect("utf-8"),
        "--context",
        "staging",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("context \"staging\" not found"), "{err}");
    assert!(err.contains("available: dev, prod"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn an_unreachable_server_is_one_clear_line_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path());
    let out = kdev(&["version", "--kubeconfig", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the API server at https://127.0.0.1:9"),
        "{err}"
    );
    assert!(err.contains("is the cluster running"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn kubeconfig_env_lists_several_files_and_skips_missing_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path());
    let list = format!(
        "{}:{}",
        dir.path().join("missing").display(),
        config.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kdev"))
        .args(["version", "--context", "nope"])
        .env("KUBECONFIG", list)
        .output()
        .expect("run kdev");
    // The listed file was read: its contexts are offered.
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("available: dev, prod"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_kubeconfig_file_is_a_usage_error() {
    let out = kdev(&["version", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/kubeconfig"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_kubeconfig_at_all_says_how_to_get_one() {
    let out = kdev(&["version"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("kdev cluster up"), "{}", stderr(&out));
}

#[test]
fn an_invalid_namespace_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path());
    let out = kdev(&[
        "version",
        "--kubeconfig",
        config.to_str().expect("utf-8"),
        "-n",
        "Bad_NS",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid namespace \"Bad_NS\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_cluster_name_is_a_usage_error() {
    let out = kdev(&["cluster", "up", "--name", "Not_Valid"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid cluster name"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_control_plane_binaries_are_named_with_the_command_that_builds_them() {
    let empty = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kdev"))
        .args(["cluster", "up", "--name", "nobins"])
        .env("KDEV_BIN_DIR", empty.path())
        .env("KDEV_HOME", empty.path())
        .env("PATH", empty.path())
        .output()
        .expect("run kdev");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("missing control-plane binaries: kwokctl, kwok, etcd, kube-apiserver"),
        "{err}"
    );
    assert!(err.contains("scripts/install-control-plane"), "{err}");
}

#[test]
fn kubeconfig_of_an_unknown_cluster_says_how_to_start_it() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kdev"))
        .args(["cluster", "kubeconfig", "--name", "nothere"])
        .env("KDEV_HOME", home.path())
        .output()
        .expect("run kdev");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("kdev cluster up --name nothere"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completion_scripts_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = kdev(&["completion", shell]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("kdev"));
    }
}

#[test]
fn logs_bad_input_is_a_usage_error_naming_the_flag_before_any_request() {
    // The kubeconfig points at a port nothing listens on: each of these must
    // fail on its own before kdev tries to connect.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path());
    let config = config.to_str().expect("utf-8 path");
    for (args, says) in [
        (&["logs", "web-("][..], "invalid regex \"web-(\" in QUERY"),
        (&["logs", "cronjob/x"], "unknown kind \"cronjob\""),
        (&["logs", "-c", "a["], "in -c/--container"),
        (&["logs", "-i", "("], "in -i/--include"),
        (&["logs", "-E", "*"], "in -E/--exclude-container"),
        (
            &["logs", "--container-state", "sleeping"],
            "invalid --container-state \"sleeping\"",
        ),
        (&["logs", "--file", "app.log"], "give an absolute path"),
        (&["logs", "--file", "/var/log/$(id)"], "is not allowed"),
        (&["logs", "--max-log-requests", "0"], "at least 1"),
        (
            &["logs", "-A", "-n", "x"],
            "-A and -n cannot be used together",
        ),
        (&["logs", "-A", "deploy/web"], "give -n instead of -A"),
        (&["logs", "--since", "ten"], "invalid duration"),
    ] {
        let mut all = vec!["--kubeconfig", config];
        all.extend_from_slice(args);
        let out = kdev(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// Environments are opted into: a protected namespace named outright, or a
/// selector that is not one, is refused before any request.
#[test]
fn envs_bad_scope_is_a_usage_error_before_any_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path());
    let config = config.to_str().expect("utf-8 path");
    for (args, says) in [
        (
            &["-n", "kube-system", "sleep"][..],
            "namespace kube-system is protected",
        ),
        (
            &["-n", "team-a", "wake", "--protected", "team-a"],
            "namespace team-a is protected",
        ),
        (
            &["envs", "sleep-now", "kube-public"],
            "namespace kube-public is protected",
        ),
        (
            &["sleep", "-A", "--environments", "team in a"],
            "--environments \"team in a\" is not a label selector",
        ),
        (
            &["wake", "-l", "team=(x"],
            "-l \"team=(x\" is not a label selector",
        ),
        (&["envs", "-l", "!"], "is not a label selector"),
        (&["sleep", "-A", "--protected", "Bad_Name"], "--protected"),
    ] {
        let mut all = vec!["--kubeconfig", config];
        all.extend_from_slice(args);
        let out = kdev(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// Regression: `--since 99999999999999999999h` panicked (exit 101) in the
/// duration parser instead of being a usage error.
#[test]
fn an_enormous_duration_is_a_usage_error_not_a_panic() {
    let out = kdev(&["logs", "--since", "99999999999999999999h"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid duration"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// The local command is started through `kdev __exec-child`, which dies with
/// the process it names; one that cannot start says so and exits 127.
#[test]
fn exec_child_names_a_command_that_cannot_start() {
    let me = std::process::id().to_string();
    let out = kdev(&[
        "__exec-child",
        "--parent",
        &me,
        "--",
        "/nonexistent/kdev-test-command",
    ]);
    // Its parent is this test process only if it was started by it: it was.
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed to start \"/nonexistent/kdev-test-command\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_default_schedule_is_a_usage_error_naming_the_flag() {
    let out = kdev(&[
        "controller",
        "--schedules",
        "--default-downtime",
        "Mon-Fri 25:00-07:00",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--default-downtime"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kdev_test_bad_input_exits_2_before_any_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let test = dir.path().join("t");
    std::fs::create_dir_all(&test).expect("mkdir");
    // No kubeconfig at all: the files are judged before any connection.
    let cases: [(&str, &str, &str); 4] = [
        (
            "00-apply.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n",
            "00-apply.yaml:",
        ),
        (
            "00-apply.yaml",
            "kind: ConfigMap\n",
            "00-apply.yaml:1: this object has no `apiVersion`",
        ),
        (
            "chainsaw-test.yaml",
            "apiVersion: chainsaw.kyverno.io/v1alpha1\nkind: Test\nspec:\n  steps:\n  - try:\n    - assert:\n        resource:\n          apiVersion: v1\n          kind: Pod\n          (length(x): 1\n",
            "chainsaw-test.yaml:10: (length(x) is not a JMESPath expression",
        ),
        (
            "chainsaw-test.yaml",
            "apiVersion: chainsaw.kyverno.io/v1alpha1\nkind: Test\nspec:\n  steps:\n  - try:\n    - apply:\n        file: missing.yaml\n",
            "chainsaw-test.yaml:7: cannot read",
        ),
    ];
    for (name, text, says) in cases {
        for entry in std::fs::read_dir(&test).expect("list") {
            std::fs::remove_file(entry.expect("entry").path()).expect("rm");
        }
        std::fs::write(test.join(name), text).expect("write");
        let out = kdev(&["test", test.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(2), "{says}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{says}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("nothing was applied"),
            "{}",
            stderr(&out)
        );
    }
    let out = kdev(&["test", test.to_str().expect("utf-8"), "--", "my-controller"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--run-controller"),
        "{}",
        stderr(&out)
    );
    let out = kdev(&["test", dir.path().join("none").to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no such directory"),
        "{}",
        stderr(&out)
    );
}

/// A one-step kuttl test in `dir`.
fn one_test(dir: &std::path::Path) {
    std::fs::write(
        dir.join("00-apply.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
    )
    .expect("write step");
}

#[test]
fn kdev_test_names_what_its_cluster_and_deploy_options_lack_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    one_test(dir.path());
    let here = dir.path().to_str().expect("utf-8");
    // An empty PATH: neither kind, Docker, Podman nor skaffold.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kdev"))
            .arg("test")
            .arg(here)
            .args(args)
            .env("PATH", "")
            .env("HOME", env!("CARGO_TARGET_TMPDIR"))
            .output()
            .expect("run kdev")
    };
    let out = run(&["--cluster", "kind"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kind is not on PATH")
            && stderr(&out).contains("use --cluster local"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--skaffold"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no skaffold on PATH; nothing was applied"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--keep-cluster"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("add --cluster local"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--apply-kustomize", "/nonexistent/kustomize"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/kustomize: no such directory"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--watch-path", here]);
    assert_eq!(out.status.code(), Some(2), "--watch-path needs --watch");
    let out = run(&[
        "--watch",
        "--watch-ignore",
        "a[",
        "--run-controller",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bad ignore pattern \"a[\""),
        "{}",
        stderr(&out)
    );
}

/// The test hooks (`crate::faults`) exist in the binaries the tests build
/// and in no other. The release build is the agent's, which
/// `scripts/build-agent` (run by `scripts/test`) makes without the tests'
/// feature, as every release is made.
#[test]
fn release_builds_ignore_the_test_hooks() {
    let release = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-gnu/release/kdev");
    assert!(
        release.exists(),
        "{} is missing: run scripts/build-agent (scripts/test does) to build the release binary",
        release.display()
    );
    // A crash point that does not exist is refused before any request, but
    // only by a binary that reads the hook.
    let run = |binary: &std::path::Path| {
        Command::new(binary)
            .args([
                "swap",
                "deploy/web",
                "--kubeconfig",
                "/nonexistent/config",
                "--",
                "true",
            ])
            .env("KDEV_SWAP_CRASH_AFTER", "0")
            .env("HOME", env!("CARGO_TARGET_TMPDIR"))
            .output()
            .expect("run kdev")
    };
    let tested = run(std::path::Path::new(env!("CARGO_BIN_EXE_kdev")));
    assert_eq!(tested.status.code(), Some(2), "{}", stderr(&tested));
    assert!(
        stderr(&tested).contains("KDEV_SWAP_CRASH_AFTER"),
        "{}",
        stderr(&tested)
    );
    let released = run(&release);
    assert!(
        !stderr(&released).contains("KDEV_SWAP_CRASH_AFTER"),
        "a release build read a test hook: {}",
        stderr(&released)
    );
    assert!(
        stderr(&released).contains("/nonexistent/config"),
        "{}",
        stderr(&released)
    );
    // Nor does it take the scheduler's testing clock.
    let clock = Command::new(&release)
        .args(["controller", "--clock-start", "2026-12-02T18:59:58Z"])
        .output()
        .expect("run kdev");
    assert_eq!(clock.status.code(), Some(2), "{}", stderr(&clock));
    assert!(
        stderr(&clock).contains("--clock-start"),
        "{}",
        stderr(&clock)
    );
}

#[test]
fn a_bad_cluster_range_or_one_without_the_network_view_is_a_usage_error() {
    let out = kdev(&[
        "swap",
        "deploy/web",
        "--cluster-cidr",
        "db:5432",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an IPv4 range"),
        "{}",
        stderr(&out)
    );
    let out = kdev(&[
        "swap",
        "deploy/web",
        "--network",
        "host",
        "--cluster-cidr",
        "10.96.0.0/12",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--cluster-cidr needs --network view"),
        "{}",
        stderr(&out)
    );
}
