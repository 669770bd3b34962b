//! Issue 14's reproductions of classes 4 and 5 through the `tpri` binary: absurd sizes,
//! nonsense files and flags each end in a clear error naming the flag, tensor, file or
//! line — never a panic, a segfault, an aborted allocation, a hang or a silent success.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cli_support::{ok, scratch, tpri};

fn corpus(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

/// Runs `tpri args`, expecting a prompt failure whose message contains every needle.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let start = Instant::now();
    let out: Output = tpri(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail cleanly: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: {needle:?} missing from {err:?}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{args:?} took {:?}",
        start.elapsed()
    );
    err
}

/// Class 4: sizes that segfaulted, panicked ("capacity overflow") or aborted ("memory
/// allocation failed") are refused before anything is allocated or created.
#[test]
fn absurd_training_sizes_are_refused_at_once() {
    let root = scratch("sizes");
    let cases: [(&[&str], &[&str]); 8] = [
        (
            &["--hidden", "4294967296"],
            &["d = 4294967296 (--hidden)", "64 bits"],
        ),
        (&["--hidden", "3037000500"], &["--hidden", "64 bits"]),
        (
            &["--seq-len", "18446744073709551615"],
            &["--seq-len", "64 bits"],
        ),
        (&["--hidden", "100000"], &["parameters", "MemAvailable"]),
        (
            &["--batch-size", "1000000000"],
            &["B = 1000000000", "MemAvailable"],
        ),
        (
            &["--seq-len", "1000000000"],
            &["evaluation set", "MemAvailable"],
        ),
        (
            &["--eval-size", "1000000000"],
            &["evaluation set", "MemAvailable"],
        ),
        (&["--seq-len", "0"], &["--seq-len", "T"]),
    ];
    for (i, (extra, needles)) in cases.iter().enumerate() {
        let dir = root.join(format!("run{i}"));
        let mut args = vec![
            "train",
            "--task",
            "adding",
            "--backend",
            "cpu",
            "--iterations",
            "2",
            "--run-dir",
            dir.to_str().unwrap(),
        ];
        for (flag, default) in [
            ("--seq-len", "30"),
            ("--hidden", "32"),
            ("--batch-size", "20"),
            ("--eval-size", "100"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        args.extend(extra.iter());
        refused(&args, needles);
        assert!(
            !dir.exists(),
            "{extra:?}: a refused run created {}",
            dir.display()
        );
    }
}

#[test]
fn bench_refuses_zero_sizes_naming_the_flag() {
    for flag in [
        "--hidden", "--input", "--output", "--batch", "--steps", "--reps",
    ] {
        let args = [
            "bench",
            "--backend",
            "cpu",
            "--steps",
            "4",
            "--hidden",
            "4",
            "--batch",
            "2",
            "--reps",
            "1",
            "--input",
            "1",
            "--output",
            "2",
        ];
        let mut args: Vec<&str> = args.to_vec();
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = "0";
        let err = refused(&args, &[flag, "at least 1"]);
        assert!(!err.contains("inf"), "{err}");
    }
    refused(
        &[
            "bench",
            "--backend",
            "cpu",
            "--hidden",
            "100000",
            "--steps",
            "4",
            "--batch",
            "2",
        ],
        &["MemAvailable"],
    );
}

/// `--model-only` prints the cost model without a device: every phase with its binding
/// term and the TP/BP floor ratio, of each cell asked for; a device figure of 0 is refused
/// naming its flag.
#[test]
fn bench_model_only_needs_no_device() {
    let out = ok(&[
        "bench",
        "--model-only",
        "--assume",
        "h100",
        "--steps",
        "784",
        "--hidden",
        "512",
        "--batch",
        "16,512",
    ]);
    assert!(out.contains("67000 GFLOP/s"), "{out}");
    assert_eq!(out.matches("TP/BP").count(), 2, "{out}");
    assert!(out.contains("cache"), "{out}");
    for phase in ["forward", "inverse", "sweep", "bptt", "reductions"] {
        assert!(out.contains(phase), "{phase} missing:\n{out}");
    }
    // Both cells' models, the GRU's with its fused backward loop (no bptt row for TP).
    let out = ok(&[
        "bench",
        "--model-only",
        "--cell",
        "tanh,gru",
        "--steps",
        "784",
        "--hidden",
        "100",
        "--batch",
        "16",
    ]);
    assert_eq!(out.matches("TP/BP").count(), 2, "{out}");
    let gru = &out[out
        .find("gru at T=784 d=100 B=16")
        .expect("the GRU's model")..];
    assert!(out.contains("tanh at T=784 d=100 B=16"), "{out}");
    assert_eq!(gru.matches("bptt").count(), 1, "{gru}");
    refused(
        &["bench", "--model-only", "--cache-gbs", "0"],
        &["--cache-gbs", "positive"],
    );
}

/// Class 5 through `tpri trace`: non-finite values, empty batches, unknown, mixed and
/// duplicate tensors, sizes of 0 and huge shapes, and paths that are not files.
#[test]
fn trace_refuses_nonsense_files_naming_the_tensor() {
    let dir = scratch("trace");
    let out = dir.join("o.safetensors");
    let (good_p, good_b) = (
        corpus("params/valid_tanh.safetensors"),
        corpus("batch/valid_labels.safetensors"),
    );
    let cases: Vec<(String, String, &[&str])> = vec![
        (
            corpus("params/inf.safetensors"),
            good_b.clone(),
            &["tensor head.w holds inf"],
        ),
        (
            good_p.clone(),
            corpus("batch/nan_x.safetensors"),
            &["tensor x holds NaN"],
        ),
        (
            good_p.clone(),
            corpus("batch/b0.safetensors"),
            &["tensor x", "[0, 5, 2]"],
        ),
        (
            good_p.clone(),
            corpus("batch/y_short.safetensors"),
            &["tensor y", "[3]"],
        ),
        (
            good_p.clone(),
            corpus("batch/junk_tensor.safetensors"),
            &["unknown tensor junk"],
        ),
        (
            corpus("params/bhh.safetensors"),
            good_b.clone(),
            &["holds rnn.b beside rnn.b_ih or rnn.b_hh"],
        ),
        (
            corpus("params/junk.safetensors"),
            good_b.clone(),
            &["unknown tensor junk"],
        ),
        (
            corpus("params/mixed.safetensors"),
            good_b.clone(),
            &["rnn.* and gru.*"],
        ),
        (
            corpus("params/dup.safetensors"),
            good_b.clone(),
            &["\"rnn.w_hh\" twice"],
        ),
        (
            corpus("params/d0.safetensors"),
            good_b.clone(),
            &["tensor rnn.w_hh", "[0, 0]"],
        ),
        (
            corpus("params/p0.safetensors"),
            good_b.clone(),
            &["tensor rnn.w_ih", "[3, 0]"],
        ),
        (
            corpus("params/huge.safetensors"),
            good_b.clone(),
            &["tensor rnn.w_hh"],
        ),
        ("/dev/zero".into(), good_b.clone(), &["character device"]),
        (
            dir.to_string_lossy().into_owned(),
            good_b.clone(),
            &["a directory"],
        ),
    ];
    for (p, b, needles) in &cases {
        refused(
            &[
                "trace",
                "--params",
                p,
                "--batch",
                b,
                "--loss",
                "ce",
                "--method",
                "tp",
                "--out",
                out.to_str().unwrap(),
                "--backend",
                "cpu",
            ],
            needles,
        );
    }
    // The library's API names come back as the command line's: flags and file tensors.
    refused(
        &[
            "trace",
            "--params",
            &good_p,
            "--batch",
            &good_b,
            "--loss",
            "mse",
            "--method",
            "bp",
            "--out",
            out.to_str().unwrap(),
            "--backend",
            "cpu",
        ],
        &["--loss", "tensor y"],
    );
    refused(
        &[
            "trace",
            "--params",
            &good_p,
            "--batch",
            &good_b,
            "--loss",
            "ce",
            "--method",
            "tp",
            "--reg",
            "0",
            "--out",
            out.to_str().unwrap(),
            "--backend",
            "cpu",
        ],
        &["--reg: the regularization r"],
    );
    assert!(!out.exists());
}

#[test]
fn meaningless_flags_are_refused() {
    refused(
        &["check", "--backend", "cpu"],
        &["--backend cpu", "nothing to compare"],
    );
    let dir = scratch("flags");
    let run = dir.join("r");
    refused(
        &[
            "train",
            "--task",
            "adding",
            "--seq-len",
            "10",
            "--hidden",
            "4",
            "--backend",
            "cpu",
            "--adapter",
            "",
            "--run-dir",
            run.to_str().unwrap(),
        ],
        &["--adapter", "empty"],
    );
    refused(
        &[
            "trace",
            "--params",
            &corpus("params/valid_tanh.safetensors"),
            "--batch",
            &corpus("batch/valid_labels.safetensors"),
            "--loss",
            "ce",
            "--method",
            "tp",
            "--adapter",
            "",
            "--out",
            dir.join("o").to_str().unwrap(),
        ],
        &["--adapter", "empty"],
    );
}

/// A negative number after a flag is its value: the check that names the flag refuses it,
/// not the parser with "unexpected argument".
#[test]
fn negative_values_reach_the_checks_that_name_them() {
    let dir = scratch("negative");
    let run = dir.join("r");
    let run = run.to_str().unwrap();
    let train = [
        "train",
        "--preset",
        "adding-30-tp",
        "--backend",
        "cpu",
        "--run-dir",
        run,
    ];
    for (flag, value, needle) in [
        (
            "--reg",
            "-1",
            "--reg: the regularization r must be positive",
        ),
        ("--lr", "-0.1", "--lr: the learning rate must be positive"),
        ("--lr-target", "-0.001", "--lr-target: the target step"),
        (
            "--lr-head",
            "-0.1",
            "--lr-head: the head's learning rate must be positive",
        ),
        (
            "--clip-norm",
            "0",
            "--clip-norm: the largest gradient norm must be positive",
        ),
    ] {
        let args: Vec<&str> = train.iter().copied().chain([flag, value]).collect();
        let err = refused(&args, &[needle]);
        assert!(
            !err.contains("unexpected argument"),
            "{flag} {value}: {err}"
        );
    }
    assert!(!Path::new(run).exists(), "a refused run wrote {run}");
}

/// A flag the run's method or optimizer does not read is named in a warning; the run goes
/// on (`tpri compare` hands the same flags to TP-RI and BPTT runs).
#[test]
fn flags_the_run_does_not_read_are_named() {
    let dir = scratch("unread");
    let run = dir.join("r");
    let out = tpri(&[
        "train",
        "--preset",
        "adding-30-bp",
        "--backend",
        "cpu",
        "--iterations",
        "1",
        "--optimizer",
        "sgd",
        "--reg",
        "0.5",
        "--noise",
        "0.1",
        "--momentum",
        "0.5",
        "--lr",
        "0.01",
        "--precondition",
        "none",
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for flag in [
        "--reg sets",
        "--noise sets",
        "--momentum sets",
        "--precondition sets",
    ] {
        assert!(
            err.contains(&format!("warning: {flag}")),
            "{flag} not named: {err}"
        );
    }
    assert!(!err.contains("--lr "), "--lr is read by BPTT: {err}");
    assert!(run.join("checkpoint.safetensors").exists());
}

#[test]
fn plot_refuses_groups_it_cannot_read() {
    let out = scratch("plot-groups").join("figures");
    let out = out.to_str().unwrap();
    refused(&["plot", "--out", out], &["give run directories"]);
    refused(
        &["plot", "--out", out, "--group", "runs/a"],
        &["--group", "LABEL=RUN"],
    );
    refused(
        &["plot", "--out", out, "--group", "TP="],
        &["at least one run directory"],
    );
    refused(
        &["plot", "--out", out, "--group", "TP=/nonexistent/run"],
        &["/nonexistent/run"],
    );
}

/// A run directory with `log` as its log.csv (after the header logs had before
/// `cg_solves`, which tpri still reads and checks by the same rule) and `norms` as its
/// step_norms.csv.
fn run_dir(root: &Path, name: &str, log: &str, norms: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("log.csv"),
        format!("{}\n{log}", tpri::run_dir::LOG_HEADER_BEFORE_SOLVES),
    )
    .unwrap();
    std::fs::write(dir.join("step_norms.csv"), norms).unwrap();
    dir
}

#[test]
fn plot_refuses_damaged_logs_naming_file_and_line() {
    let root = scratch("plot");
    let first = "0,0.0,,1.0,0.5,,,,1.0\n";
    let cases = [
        (
            "ragged",
            format!("{first}1,0.1,0.9\n"),
            "",
            "log.csv line 3",
            "3 fields",
        ),
        (
            "nan",
            format!("{first}1,0.1,NaN,,,,,,\n"),
            "",
            "log.csv line 3",
            "NaN",
        ),
        (
            "text",
            format!("{first}x,0.1,0.9,,,,,,\n"),
            "",
            "log.csv line 3",
            "\"x\"",
        ),
        (
            "inf",
            format!("{first}1,0.1,inf,,,,,,\n"),
            "",
            "log.csv line 3",
            "inf",
        ),
        (
            "norms",
            first.to_string(),
            "1,0.5,0.4\n2,0.3\n",
            "step_norms.csv line 2",
            "line 1 has 2",
        ),
        (
            "norms_nan",
            first.to_string(),
            "1,0.5,NaN\n",
            "step_norms.csv line 1",
            "NaN",
        ),
        // A norm may overflow to +inf (a run with --clip-norm goes on), never to −inf.
        (
            "grad_norm_negative_inf",
            format!("{first}1,0.1,0.9,,,,,-inf,\n"),
            "",
            "log.csv line 3",
            "grad_norm is -inf",
        ),
        (
            "norms_negative_inf",
            first.to_string(),
            "1,0.5,-inf\n",
            "step_norms.csv line 1",
            "-inf",
        ),
    ];
    let out = root.join("figures");
    for (name, log, norms, at, what) in cases {
        let dir = run_dir(&root, name, &log, norms);
        refused(
            &[
                "plot",
                dir.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[at, what],
        );
    }
    // With a gradient norm and a step norm past the float range, as a run with
    // --clip-norm logs them: drawn without those points.
    let good = run_dir(
        &root,
        "good",
        &format!("{first}1,0.1,0.9,,,,,inf,\n"),
        "1,0.5,0.4\n2,inf,0.3\n",
    );
    let o = tpri(&[
        "plot",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A run's alignment.csv (--alignment) is checked by the same rule, and drawn.
    let header = "iteration,cosine,norm_ratio,rnn.w_hh,rnn.w_ih,rnn.b_ih,rnn.b_hh\n";
    for (alignment, at, what) in [
        ("0,0.9,0.1,0.9,0.8,0.7,0.7\n", "", ""),
        ("0,0.9,0.1\n", "alignment.csv line 2", "3 fields"),
        (
            "0,NaN,0.1,0.9,0.8,0.7,0.7\n",
            "alignment.csv line 2",
            "cosine is NaN",
        ),
    ] {
        std::fs::write(good.join("alignment.csv"), format!("{header}{alignment}")).unwrap();
        let args = [
            "plot",
            good.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if at.is_empty() {
            let o = tpri(&args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(out.join("grad_cosine.svg").is_file());
        } else {
            refused(&args, &[at, what]);
        }
    }
    std::fs::write(good.join("alignment.csv"), "iteration,loss\n").unwrap();
    refused(
        &[
            "plot",
            good.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &["alignment.csv line 1", "not tpri's header"],
    );
}

#[cfg(unix)]
#[test]
fn idx_paths_are_named_for_what_they_are() {
    let root = scratch("idx");
    let target = |name: &str| root.join(name).join("train-images-idx3-ubyte");
    for name in ["dir", "zero", "dangling", "loop", "fifo"] {
        std::fs::create_dir_all(root.join(name)).unwrap();
    }
    std::fs::create_dir_all(target("dir")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", target("zero")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), target("dangling")).unwrap();
    std::os::unix::fs::symlink(root.join("loop/l2"), target("loop")).unwrap();
    std::os::unix::fs::symlink(target("loop"), root.join("loop/l2")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(target("fifo"))
        .status()
        .is_ok_and(|s| s.success());
    let mut cases = vec![
        ("dir", "a directory"),
        ("zero", "a character device"),
        ("dangling", "a dangling symbolic link"),
        ("loop", "a loop of symbolic links"),
    ];
    if fifo {
        cases.push(("fifo", "a FIFO"));
    }
    for (name, kind) in cases {
        let dir = root.join(name);
        let run = root.join(format!("run-{name}"));
        let err = refused(
            &[
                "train",
                "--task",
                "pixel",
                "--data-dir",
                dir.to_str().unwrap(),
                "--backend",
                "cpu",
                "--iterations",
                "1",
                "--run-dir",
                run.to_str().unwrap(),
            ],
            &[kind, "train-images-idx3-ubyte"],
        );
        assert!(!err.contains("missing"), "{err}");
    }
}

/// A hidden size past the GPU kernels' limit is refused before the CPU builds its initial
/// weights (minutes on lavapipe at d = 2049 before) and before the run directory exists.
#[test]
fn gpu_limits_are_checked_before_the_weights_are_built() {
    let dir = scratch("gpu-limit").join("run");
    let args = [
        "train",
        "--task",
        "adding",
        "--seq-len",
        "30",
        "--hidden",
        "2049",
        "--batch-size",
        "4",
        "--iterations",
        "2",
        "--backend",
        "gpu",
        "--run-dir",
    ];
    let mut args: Vec<&str> = args.to_vec();
    args.push(dir.to_str().unwrap());
    let start = Instant::now();
    refused(&args, &["--hidden = 2049", "2048"]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(!dir.exists(), "a refused run created {}", dir.display());
}

/// A loss the task cannot take, set in a config file, is refused rather than replaced by
/// the task's; a file that sets the task's own loss, or none, runs.
#[test]
fn a_config_files_loss_is_checked_against_the_task() {
    let root = scratch("config-loss");
    let run = |loss: Option<&str>, name: &str| {
        let config = root.join(format!("{name}.toml"));
        let text = loss.map_or(String::new(), |l| format!("[hyper]\nloss = \"{l}\"\n"));
        std::fs::write(&config, text).unwrap();
        let dir = root.join(name);
        let args = [
            "train",
            "--task",
            "adding",
            "--seq-len",
            "30",
            "--hidden",
            "8",
            "--batch-size",
            "4",
            "--eval-size",
            "8",
            "--iterations",
            "2",
            "--backend",
            "cpu",
            "--config",
            config.to_str().unwrap(),
            "--run-dir",
            dir.to_str().unwrap(),
        ];
        (tpri(&args), dir)
    };
    let (out, dir) = run(Some("ce"), "ce");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("scored with Mse") && err.contains("CrossEntropy"),
        "{err}"
    );
    assert!(!dir.exists());
    for (loss, name) in [(Some("mse"), "mse"), (None, "none")] {
        let (out, dir) = run(loss, name);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dir.join("summary.json").exists());
    }
}

/// The device a check speaks for is the one asked for: the CPU reference's own solves
/// (Cholesky) trace on the CPU, and the GPU refuses them, naming the flag.
#[test]
fn cpu_only_solves_trace_on_the_cpu_and_are_refused_on_the_gpu() {
    let root = scratch("cpu-only-solve");
    let (params, batch) = (
        corpus("params/valid_tanh.safetensors"),
        corpus("batch/valid_labels.safetensors"),
    );
    let out = root.join("trace.safetensors");
    let args = |backend: &'static str| {
        vec![
            "trace".to_string(),
            "--params".into(),
            params.clone(),
            "--batch".into(),
            batch.clone(),
            "--loss".into(),
            "ce".into(),
            "--method".into(),
            "tp".into(),
            "--solver".into(),
            "cholesky".into(),
            "--backend".into(),
            backend.into(),
            "--out".into(),
            out.to_string_lossy().into_owned(),
        ]
    };
    let cpu = args("cpu");
    let run = tpri(&cpu.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.exists());
    let gpu = args("gpu");
    refused(
        &gpu.iter().map(String::as_str).collect::<Vec<_>>(),
        &["--solver", "Cholesky"],
    );
}
