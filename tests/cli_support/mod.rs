//! What the CLI tests share: a scratch directory and a way to run the binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh, empty directory for one test of one test binary.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tpri-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `tpri` binary with `args`.
pub fn tpri(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tpri"))
        .args(args)
        .output()
        .expect("spawn tpri")
}
