//! Building a statically linked Go program for a test (shared by the test
//! crates through `#[path]`).

use std::path::{Path, PathBuf};

/// Builds `source` (one `main` package file) in `dir` with `CGO_ENABLED=0`
/// (Go's own resolver, no libc: what `LD_PRELOAD` tools miss), checks that
/// the binary is static, and returns its path. Needs Go on PATH (CI has it
/// for the control plane).
pub fn build(dir: &Path, source: &str) -> PathBuf {
    let main = dir.join("main.go");
    std::fs::write(&main, source).expect("write the Go program");
    let binary = dir.join("probe");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&main)
        .env("CGO_ENABLED", "0")
        .output()
        .expect("Go on PATH (this test builds a static Go binary)");
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    // No program interpreter (the dynamic loader) in the ELF: static.
    let elf = std::fs::read(&binary).expect("read the binary");
    assert!(
        !elf.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"),
        "the Go binary is dynamically linked"
    );
    binary
}
