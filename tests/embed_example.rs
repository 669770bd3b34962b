//! `examples/embed.rs`, the README's library example, runs: on lavapipe in CI it trains
//! on the GPU and on the CPU reference, and both held-out losses come out finite and lower
//! than they started.

use std::process::Command;

/// The `before` and `after` held-out losses the example printed for `label`.
fn losses(stdout: &str, label: &str) -> (f64, f64) {
    let prefix = format!("{label}: held-out loss ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} loss line in the example's output:\n{stdout}"));
    let mut words = line.split_whitespace();
    let before = words.next().and_then(|w| w.parse().ok());
    let arrow = words.next();
    let after = words.next().and_then(|w| w.parse().ok());
    match (before, arrow, after) {
        (Some(b), Some("->"), Some(a)) => (b, a),
        _ => panic!("malformed loss line {line:?}"),
    }
}

#[test]
fn embed_example_trains_on_gpu_and_cpu() {
    // Through cargo, so the example is built (and rebuilt when stale) in this profile.
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["run", "--quiet", "--locked", "--manifest-path", manifest]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    cmd.args(["--example", "embed"]);
    let out = cmd.output().expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example failed:\n{stdout}\n{stderr}"
    );
    // CI has an adapter (lavapipe): a GPU test never skips, so the GPU must have run.
    for label in ["gpu", "cpu"] {
        let (before, after) = losses(&stdout, label);
        assert!(
            before.is_finite() && after.is_finite(),
            "{label}: {before} -> {after}"
        );
        assert!(
            after < before,
            "{label}: the held-out loss did not decrease: {before} -> {after}"
        );
    }
}
