//! What the CLI tests share: a scratch directory, a way to run the binary, and a small
//! training run.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tpri::config::Loss;
use tpri::model::Params;
use tpri::tasks::Batch;
use tpri::tensor_file::{save_batch, save_params};

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

/// Runs the `tpri` binary with `args`, asserting that it succeeds; its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = tpri(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs an independent implementation, `python3 SCRIPT ARGS…`, and asserts that it agrees
/// (exits 0); `what` names the case. Needs numpy and safetensors (`.ci/run` installs them).
pub fn python_agrees(script: &Path, args: &[&str], what: &str) {
    let check = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is needed for this test (.ci/run installs numpy and safetensors)");
    // Each tensor's relative error, shown with --nocapture.
    eprintln!("{what}:\n{}", String::from_utf8_lossy(&check.stdout));
    assert!(
        check.status.success(),
        "{what} disagrees or python3 lacks numpy/safetensors:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Runs an independent implementation on a trace's params, batch and output files (the
/// paths [`run_trace`] returns), then `args`; `what` names the case.
pub fn numpy_agrees(script: &Path, paths: &[PathBuf; 3], args: &[&str], what: &str) {
    let files = paths.each_ref().map(|p| p.to_str().unwrap());
    python_agrees(script, &[&files[..], args].concat(), what);
}

/// The value of `--loss` for `loss`.
pub fn loss_flag(loss: Loss) -> &'static str {
    match loss {
        Loss::Mse => "mse",
        Loss::CrossEntropy => "ce",
        Loss::CrossEntropySeq => "ce-seq",
    }
}

/// Writes `params` and `batch` into `dir`, runs `tpri trace` on them with `flags`, and
/// returns the three paths (params, batch, output).
pub fn run_trace(
    dir: &Path,
    params: &Params,
    batch: &Batch,
    loss: Loss,
    flags: &[&str],
) -> [PathBuf; 3] {
    let paths = ["p", "b", "o"].map(|n| dir.join(format!("{n}.safetensors")));
    save_params(&paths[0], params).unwrap();
    save_batch(&paths[1], batch).unwrap();
    let [p, b, o] = paths.each_ref().map(|p| p.to_str().unwrap());
    let mut args = vec![
        "trace",
        "--params",
        p,
        "--batch",
        b,
        "--loss",
        loss_flag(loss),
    ];
    args.extend_from_slice(&["--out", o]);
    args.extend_from_slice(flags);
    ok(&args);
    paths
}

/// The float tensor `name` of the safetensors file at `path`.
pub fn floats(path: &Path, name: &str) -> Vec<f64> {
    match &tpri::tensor_file::read_tensors(path).unwrap()[name].data {
        tpri::tensor_file::TensorData::Float(v) => v.clone(),
        tpri::tensor_file::TensorData::Int(_) => panic!("{name} is not float"),
    }
}

/// The arguments of a small TP run on temporal order (T = 12, d = 8, B = 4) on the CPU,
/// logging every 2 iterations, evaluating and checkpointing every 4, into `dir`.
pub fn small(dir: &Path, iterations: &str) -> Vec<String> {
    [
        "train",
        "--task",
        "temporal-order",
        "--seq-len",
        "12",
        "--hidden",
        "8",
        "--batch-size",
        "4",
        "--eval-size",
        "16",
        "--method",
        "tp",
        "--lr",
        "0.05",
        "--lr-target",
        "0.1",
        "--reg",
        "1",
        "--eval-every",
        "4",
        "--log-every",
        "2",
        "--checkpoint-every",
        "4",
        "--backend",
        "cpu",
        "--iterations",
        iterations,
        "--run-dir",
        dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// `v` as the `&str`s `tpri` takes.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A run's `log.csv` without its wall-clock column, the one column that legitimately
/// differs between a run and its resumed twin.
pub fn log_without_time(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(1);
            f.join(",")
        })
        .collect()
}

/// Two 28×28 images per split, as raw IDX files.
pub fn write_tiny_mnist(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for split in ["train", "t10k"] {
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
        images.extend((0..2 * 784).map(|i| (i % 251) as u8));
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(
            dir.join(format!("{split}-labels-idx1-ubyte")),
            [0, 0, 8, 1, 0, 0, 0, 2, 3, 7],
        )
        .unwrap();
    }
}

/// A CIFAR-10 binary directory: the five training files with `train[i]` records each, and
/// `test` records in test_batch.bin. Record n (counted over the training files, then the
/// test file) has label `3n mod 10` and pixel j `(31n + 7j + 50·channel) mod 256`, so
/// every image differs from the others and within each plane.
pub fn write_tiny_cifar(dir: &Path, train: [usize; 5], test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    let mut records = |count: usize| -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..count {
            bytes.push((3 * n % 10) as u8);
            bytes.extend((0..3072).map(|j| ((31 * n + 7 * j + 50 * (j / 1024)) % 256) as u8));
            n += 1;
        }
        bytes
    };
    for (i, &count) in train.iter().enumerate() {
        std::fs::write(
            dir.join(format!("data_batch_{}.bin", i + 1)),
            records(count),
        )
        .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), records(test)).unwrap();
}

/// The tensors of `dir/checkpoint.safetensors`, by name: what two runs must agree on bit
/// for bit (the header's elapsed time may differ).
pub fn checkpoint_tensors(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let f = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = f
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}
