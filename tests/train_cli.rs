//! `tpri train` end to end: the run directory, exact resumption on the CPU, bad input,
//! and a run killed mid-way.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod cli_support;

use cli_support::{
    checkpoint_tensors, log_without_time, ok, scratch, small, strs, tpri, write_tiny_mnist,
};

#[test]
fn a_run_writes_its_directory() {
    let dir = scratch("dir").join("run");
    let out = ok(&strs(&small(&dir, "8")));
    assert!(out.contains("eval loss"), "{out}");
    for f in [
        "config.toml",
        "log.csv",
        "step_norms.csv",
        "checkpoint.safetensors",
        "checkpoint.json",
        "summary.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let log = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    let rows: Vec<&str> = log.lines().collect();
    assert!(rows[0].starts_with("iteration,elapsed_s,train_loss,eval_loss"));
    // Iteration 0, then 1, 2, 4, 6, 8.
    assert_eq!(rows.len(), 1 + 6, "{log}");
    let norms = std::fs::read_to_string(dir.join("step_norms.csv")).unwrap();
    let first = norms.lines().next().unwrap();
    assert_eq!(
        first.split(',').count(),
        1 + 12,
        "iteration then T = 12 displacement norms"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["iterations"], 8);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(meta["iteration"], 8);
    assert_eq!(meta["next_batch"], 8);
    // The same run directory cannot be started twice.
    let again = tpri(&strs(&small(&dir, "8")));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));
}

/// `--lr-head` reaches the run's config.toml (and only when given), and moves the head at
/// its own rate: the recurrent tensors of the first step are those of a run without it.
#[test]
fn head_learning_rate_from_the_command_line() {
    let dir = scratch("lr-head");
    let run = |name: &str, extra: &[&str]| {
        let at = dir.join(name);
        let mut args = small(&at, "1");
        args.extend(extra.iter().map(|s| s.to_string()));
        ok(&strs(&args));
        let config = std::fs::read_to_string(at.join("config.toml")).unwrap();
        (config, checkpoint_tensors(&at))
    };
    let (plain_config, plain) = run("plain", &[]);
    let (config, split) = run("split", &["--lr-head", "0.5"]);
    assert!(!plain_config.contains("lr_head"), "{plain_config}");
    assert!(config.contains("lr_head = 0.5"), "{config}");
    let mut compared = 0;
    for ((name, got), (_, want)) in split.iter().zip(&plain) {
        if name.starts_with("params.head.") {
            assert_ne!(got, want, "{name} must move at 0.5, not at --lr 0.05");
            compared += 1;
        } else if name.starts_with("params.rnn.") {
            assert_eq!(got, want, "{name} must move at --lr as without --lr-head");
            compared += 1;
        }
    }
    assert_eq!(compared, 6, "the six parameter tensors of the checkpoint");
}

/// `--clip-norm` reaches the run's config.toml and caps the step: with SGD, runs limited
/// to 1e-3 and 2e-3 take steps lr·max·g/(‖g‖ + 1e-6) along the same first gradient, so
/// their parameters lie lr·1e-3 apart (to the 1e-6 in the scale).
#[test]
fn clip_norm_from_the_command_line() {
    let dir = scratch("clip-norm");
    let run = |name: &str, max: &str| {
        let at = dir.join(name);
        let mut args = small(&at, "1");
        args.extend(["--clip-norm", max].map(String::from));
        ok(&strs(&args));
        let config = std::fs::read_to_string(at.join("config.toml")).unwrap();
        assert!(config.contains(&format!("clip_norm = {max}")), "{config}");
        checkpoint_tensors(&at)
            .into_iter()
            .filter(|(name, _)| name.starts_with("params."))
            .flat_map(|(_, bytes)| {
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (run("a", "0.001"), run("b", "0.002"));
    assert_eq!(a.len(), b.len());
    let apart = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let lr = 0.05;
    assert!(
        (apart - lr * 1e-3).abs() <= 1e-3 * lr * 1e-3,
        "the two runs lie {apart:e} apart, not lr·1e-3 = {:e}",
        lr * 1e-3
    );
}

#[test]
fn resume_reproduces_an_uninterrupted_run_exactly() {
    let root = scratch("resume");
    let (whole, split) = (root.join("whole"), root.join("split"));
    ok(&strs(&small(&whole, "12")));
    ok(&strs(&small(&split, "8")));
    let out = ok(&[
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--iterations",
        "12",
        "--backend",
        "cpu",
    ]);
    assert!(out.contains("resuming"), "{out}");
    assert_eq!(log_without_time(&whole), log_without_time(&split));
    assert_eq!(
        std::fs::read_to_string(whole.join("step_norms.csv")).unwrap(),
        std::fs::read_to_string(split.join("step_norms.csv")).unwrap()
    );
    assert_eq!(checkpoint_tensors(&whole), checkpoint_tensors(&split));
    // Nothing may be added to a resumed run but iterations and the backend.
    let bad = tpri(&["train", "--resume", split.to_str().unwrap(), "--lr", "0.1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("only --iterations"));
}

/// A CPU run gives the same bits on one core as on all of them (`taskset -c 0`), where the
/// sizes split every time loop and per-step solve over the cores: the per-step solves stop
/// each sequence on its own, and every product computes each column alike. On a
/// one-core machine both runs take one core, and the test says so.
#[test]
fn cpu_results_do_not_depend_on_the_core_count() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("one core here: both runs use it, so this compares nothing");
    }
    let root = scratch("cores");
    for (name, flags) in [
        ("tanh-jacobian", &["--inversion", "jacobian"][..]),
        ("gru-jacobian", &["--cell", "gru"][..]),
        ("tanh-per-step", &["--solver", "per-step"][..]),
    ] {
        let run = |dir: &Path, one_core: bool| {
            let mut args: Vec<&str> = vec![
                "train",
                "--task",
                "adding",
                "--seq-len",
                "200",
                "--hidden",
                "64",
                "--batch-size",
                "16",
                "--iterations",
                "4",
                "--log-every",
                "1",
                "--backend",
                "cpu",
                "--run-dir",
                dir.to_str().unwrap(),
            ];
            args.extend(flags);
            let mut command = if one_core {
                let mut c = Command::new("taskset");
                c.args(["-c", "0", env!("CARGO_BIN_EXE_tpri")]);
                c
            } else {
                Command::new(env!("CARGO_BIN_EXE_tpri"))
            };
            let out = command
                .args(&args)
                .output()
                .expect("spawn (taskset is util-linux's)");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (one, all) = (
            root.join(format!("{name}-1")),
            root.join(format!("{name}-all")),
        );
        run(&one, true);
        run(&all, false);
        assert_eq!(log_without_time(&one), log_without_time(&all), "{name}");
        assert!(
            checkpoint_tensors(&one) == checkpoint_tensors(&all),
            "{name}: other bits on one core"
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let root = scratch("bad");
    let run = |extra: &[&str]| {
        let mut a = vec!["train", "--backend", "cpu", "--iterations", "1"];
        let dir = root.join(format!("r{}", extra.join("_").replace(['/', '-', '.'], "")));
        let dir = dir.to_str().unwrap().to_owned();
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--run-dir", &dir]);
        tpri(&a)
    };
    let cfg_bad = root.join("bad.toml");
    std::fs::write(&cfg_bad, "hidden = 8\nno_such_setting = 3\n").unwrap();
    let cfg_broken = root.join("broken.toml");
    std::fs::write(&cfg_broken, "hidden = [").unwrap();
    let empty = root.join("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    let images = root.join("images");
    write_tiny_mnist(&images);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--preset", "no-such-preset"], "unknown preset"),
        (vec!["--task", "no-such-task"], "invalid value"),
        (vec!["--reg", "0"], "regularization"),
        (vec!["--reg=-1"], "regularization"),
        (vec!["--lr", "0"], "learning rate"),
        (vec!["--lr=-0.1"], "learning rate"),
        (vec!["--task", "adding", "--seq-len", "0"], "T"),
        (vec!["--hidden", "0"], "hidden"),
        (
            vec![
                "--task",
                "pixel",
                "--chunk",
                "5",
                "--data-dir",
                images.to_str().unwrap(),
            ],
            "784",
        ),
        (
            vec!["--task", "pixel", "--data-dir", empty.to_str().unwrap()],
            "empty-data",
        ),
        (vec!["--task", "adding", "--chunk", "2"], "pixel task only"),
        (
            vec!["--config", cfg_bad.to_str().unwrap()],
            "no_such_setting",
        ),
        (
            vec!["--config", cfg_broken.to_str().unwrap()],
            "broken.toml",
        ),
        (vec!["--config", "/nonexistent.toml"], "nonexistent.toml"),
    ];
    for (extra, needle) in cases {
        let o = run(&extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} should fail");
        assert!(
            err.contains(needle),
            "{extra:?}: {err:?} should mention {needle:?}"
        );
        assert!(!err.contains("panicked"), "{extra:?} panicked: {err}");
    }
    // A checkpoint of another shape.
    let (a, b) = (root.join("a"), root.join("b"));
    ok(&strs(&small(&a, "4")));
    ok(&strs(&small(&b, "4"))
        .iter()
        .map(|s| if *s == "8" { "9" } else { s })
        .collect::<Vec<_>>());
    std::fs::copy(
        b.join("checkpoint.safetensors"),
        a.join("checkpoint.safetensors"),
    )
    .unwrap();
    let o = tpri(&[
        "train",
        "--resume",
        a.to_str().unwrap(),
        "--iterations",
        "6",
        "--backend",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("checkpoint") && !err.contains("panicked"),
        "{err}"
    );
    let o = tpri(&["train", "--resume", root.join("nothing").to_str().unwrap()]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not a run directory")
    );
}

#[test]
fn killing_a_run_leaves_a_loadable_checkpoint() {
    let dir = scratch("kill").join("run");
    let mut a = small(&dir, "100000");
    let at = a.iter().position(|f| f == "--checkpoint-every").unwrap();
    a[at + 1] = "1".into();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tpri"))
        .args(strs(&a))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let ckpt = dir.join("checkpoint.json");
    while !ckpt.exists() || start.elapsed() < Duration::from_millis(1500) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ckpt).unwrap()).unwrap();
    let done = meta["iteration"].as_u64().unwrap();
    let more = (done + 2).to_string();
    let out = ok(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--iterations",
        &more,
        "--backend",
        "cpu",
    ]);
    assert!(out.contains("resuming"), "{out}");
}

#[test]
fn compare_runs_configs_side_by_side_and_draws_the_figures() {
    let out = scratch("compare");
    let o = ok(&[
        "compare",
        "adding-30-tp",
        "adding-30-bp",
        "--iterations",
        "4",
        "--seed",
        "3",
        "--backend",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--",
        "--hidden",
        "8",
        "--eval-size",
        "16",
        "--eval-every",
        "2",
    ]);
    assert!(
        o.contains("== adding-30-tp") && o.contains("== adding-30-bp"),
        "{o}"
    );
    for f in [
        "train_loss.png",
        "train_loss.svg",
        "eval_mse.png",
        "eval_mse.svg",
        "step_norms_adding-30-tp.png",
        "step_norms_adding-30-bp.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("train_loss.svg")).unwrap();
    assert!(
        svg.contains("adding-30-tp") && svg.contains("adding-30-bp"),
        "legend names both runs"
    );
    // Both runs saw the same data: the same seed is in both configs.
    for run in ["adding-30-tp", "adding-30-bp"] {
        assert!(std::fs::read_to_string(out.join(run).join("config.toml"))
            .unwrap()
            .contains("seed = 3"));
    }
    // Last, the runs side by side: each line holds its log.csv's last row's values.
    let header = o
        .lines()
        .position(|l| l.starts_with("run ") && l.contains("held-out MSE"))
        .unwrap_or_else(|| panic!("no side-by-side table in {o}"));
    for (line, run) in o
        .lines()
        .skip(header + 1)
        .zip(["adding-30-tp", "adding-30-bp"])
    {
        let log = std::fs::read_to_string(out.join(run).join("log.csv")).unwrap();
        let last: Vec<f64> = log
            .lines()
            .last()
            .unwrap()
            .split(',')
            .map(|v| v.parse().unwrap_or(f64::NAN))
            .collect();
        let want = format!(
            "{run}  {:>10}  {:>10.5}  {:>13.5}  {:>8.4}",
            last[0], last[2], last[3], last[4]
        );
        assert!(line.starts_with(&want), "{line:?} against {want:?}");
    }
    // A sweep over r.
    let sweep = scratch("sweep");
    ok(&[
        "compare",
        "adding-30-tp",
        "--vary",
        "reg=0.5,2",
        "--iterations",
        "2",
        "--backend",
        "cpu",
        "--out",
        sweep.to_str().unwrap(),
        "--",
        "--hidden",
        "8",
        "--eval-size",
        "16",
    ]);
    let cfg =
        std::fs::read_to_string(sweep.join("adding-30-tp_reg=2").join("config.toml")).unwrap();
    assert!(cfg.contains("reg = 2.0"), "{cfg}");
    // Runs on different tasks cannot be compared.
    let o = tpri(&[
        "compare",
        "adding-30-tp",
        "temporal-order-60-tp",
        "--out",
        sweep.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("different tasks"));
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("diverge").join("run");
    let o = tpri(&[
        "train",
        "--task",
        "adding",
        "--seq-len",
        "10",
        "--hidden",
        "8",
        "--batch-size",
        "8",
        "--eval-size",
        "32",
        "--method",
        "bp",
        "--lr",
        "300",
        "--iterations",
        "200",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1",
        "--backend",
        "cpu",
        "--run-dir",
        dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "lr 300 should diverge");
    assert!(
        err.contains("diverged at iteration") && !err.contains("panicked"),
        "{err}"
    );
    let at: u64 = err
        .split("diverged at iteration ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The message says which checkpoint exists, and it is the one on disk.
    if err.contains("no checkpoint was written before it") {
        assert!(!dir.join("checkpoint.safetensors").exists(), "{err}");
        return;
    }
    let saved: u64 = err
        .rsplit("the last good checkpoint is from iteration ")
        .next()
        .unwrap_or_else(|| panic!("the message names the checkpoint: {err}"))
        .trim()
        .parse()
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(meta["iteration"].as_u64(), Some(saved));
    assert!(
        saved < at,
        "checkpoint {saved} must predate the divergence at {at}"
    );
    let ckpt = tpri::run_dir::load_checkpoint(
        &dir.join("checkpoint.safetensors"),
        &toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap(),
    )
    .unwrap();
    assert!(ckpt.params.w_hh.iter().all(|v| v.is_finite()));
}

/// `--storage f16` trains on the GPU (and says so), `tpri check --storage f16` passes its
/// f16 bounds, and f16 with the CPU reference is refused rather than ignored.
#[test]
fn f16_storage_from_the_command_line() {
    let dir = scratch("f16").join("run");
    let mut a = small(&dir, "4");
    let backend = a.iter().position(|s| s == "--backend").unwrap();
    a[backend + 1] = "gpu".into();
    a.extend(["--storage".into(), "f16".into()]);
    let out = ok(&strs(&a));
    assert!(out.contains("f16 storage"), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary.to_string().contains("f16 storage"),
        "the summary names the storage: {summary}"
    );
    let out = ok(&["check", "--storage", "f16"]);
    assert!(out.contains("all 18 cases pass"), "{out}");
    let mut a = small(&scratch("f16").join("cpu"), "1");
    a.extend(["--storage".into(), "f16".into()]);
    let refused = tpri(&strs(&a));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--storage f16 applies to the GPU backend"),
        "{err}"
    );
}

/// `--steps-per-dispatch K` trains on the GPU in launches of at most K steps, `tpri check`
/// passes with it, and the CPU reference refuses it rather than ignoring it.
#[test]
fn steps_per_dispatch_from_the_command_line() {
    let dir = scratch("steps-per-dispatch").join("run");
    let mut a = small(&dir, "4");
    let backend = a.iter().position(|s| s == "--backend").unwrap();
    a[backend + 1] = "gpu".into();
    a.extend(["--steps-per-dispatch".into(), "3".into()]);
    ok(&strs(&a));
    assert!(dir.join("summary.json").exists());
    let out = ok(&["check", "--steps-per-dispatch", "2"]);
    assert!(out.contains("cases pass"), "{out}");
    let mut a = small(&scratch("steps-per-dispatch").join("cpu"), "1");
    a.extend(["--steps-per-dispatch".into(), "3".into()]);
    let refused = tpri(&strs(&a));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--steps-per-dispatch 3 applies to the GPU backend"),
        "{err}"
    );
}

/// `--sequences-per-workgroup B`, `--lanes-per-unit L` and `--steps-per-block K` train on
/// the GPU with B sequences per workgroup, L lanes per unit and blocks of at most K steps
/// in the time loops; a count that is not a power of two (B, L), that does not fit the
/// kernels' workgroup memory or (lanes) the adapter's workgroup at the run's d, or that is
/// out of range (K), is refused with a message, and so are the flags on the CPU reference.
#[test]
fn time_loop_settings_from_the_command_line() {
    let dir = scratch("sequences-per-workgroup");
    let gpu = |name: &str, flag: &str, count: &str, hidden: &str| {
        let mut a = small(&dir.join(name), "3");
        let backend = a.iter().position(|s| s == "--backend").unwrap();
        a[backend + 1] = "gpu".into();
        let h = a.iter().position(|s| s == "--hidden").unwrap();
        a[h + 1] = hidden.into();
        a.extend([flag.into(), count.into()]);
        a
    };
    let seqs = "--sequences-per-workgroup";
    let lanes = "--lanes-per-unit";
    let blocks = "--steps-per-block";
    ok(&strs(&gpu("four", seqs, "4", "8")));
    assert!(dir.join("four").join("summary.json").exists());
    ok(&strs(&gpu("lanes", lanes, "4", "8")));
    assert!(dir.join("lanes").join("summary.json").exists());
    ok(&strs(&gpu("blocks", blocks, "5", "8")));
    assert!(dir.join("blocks").join("summary.json").exists());
    for (flag, count, hidden, want) in [
        (seqs, "3", "8", "power of two from 1 to 16, got 3"),
        (seqs, "16", "200", "use 8 or fewer"),
        (
            lanes,
            "3",
            "8",
            "lanes per unit must be `auto` or a power of two",
        ),
        // 16 × 100 invocations: more than lavapipe's 1024.
        (lanes, "16", "100", "use 8 or fewer"),
        (blocks, "0", "8", "count from 1 to 32, got 0"),
        (blocks, "33", "8", "count from 1 to 32, got 33"),
    ] {
        let refused = tpri(&strs(&gpu(&format!("{flag}{count}"), flag, count, hidden)));
        assert!(!refused.status.success(), "{flag} {count} at d = {hidden}");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains(want), "{err}");
    }
    for flag in [seqs, lanes, blocks] {
        let mut a = small(&dir.join(format!("cpu{flag}")), "1");
        a.extend([flag.into(), "2".into()]);
        let refused = tpri(&strs(&a));
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains(&format!("{flag} 2 applies to the GPU backend")),
            "{err}"
        );
    }
    let mut a = small(&dir.join("cpu--backward"), "1");
    a.extend(["--backward".into(), "separate".into()]);
    let refused = tpri(&strs(&a));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--backward separate applies to the GPU backend"),
        "{err}"
    );
}

/// `tpri train --cell gru --inversion per-gate` end to end on the CPU reference and the GPU
/// (lavapipe will do), with `--init` saved in the run's config; and the published GRU
/// preset (per-gate, PyTorch init, fixed pixel standardization) on a tiny image set.
#[test]
fn per_gate_gru_trains_on_both_backends() {
    for backend in ["cpu", "gpu"] {
        let dir = scratch("per-gate").join(backend);
        let mut a = small(&dir, "6");
        let at = a.iter().position(|s| s == "--backend").unwrap();
        a[at + 1] = backend.into();
        a.extend(
            [
                "--cell",
                "gru",
                "--inversion",
                "per-gate",
                "--init",
                "orthogonal",
            ]
            .map(String::from),
        );
        let out = ok(&strs(&a));
        assert!(out.contains("eval loss"), "{backend}: {out}");
        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        assert!(
            config.contains("inversion = \"per-gate\"") && config.contains("init = \"orthogonal\""),
            "{backend}: {config}"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["iterations"], 6, "{backend}: {summary}");
    }
    let data = scratch("per-gate-preset").join("data");
    write_tiny_mnist(&data);
    let run = data.parent().unwrap().join("run");
    let out = ok(&[
        "train",
        "--preset",
        "fashion-mnist-gru-tp",
        "--data-dir",
        data.to_str().unwrap(),
        "--hidden",
        "6",
        "--batch-size",
        "2",
        "--eval-size",
        "2",
        "--iterations",
        "2",
        "--eval-every",
        "1",
        "--backend",
        "cpu",
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(out.contains("eval loss"), "{out}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    // Without the preset's standardization: --standardize false drops its constants, and
    // asking for both is refused, as are bad constants and constants for a task without
    // pixels.
    let base = [
        "train",
        "--preset",
        "fashion-mnist-gru-tp",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    for (extra, needle) in [
        (
            &["--mean-std", "0.3,0"][..],
            "--mean-std: the pixels' mean must be finite",
        ),
        (
            &["--mean-std", "0.3,0.2", "--standardize", "false"][..],
            "cannot go with --standardize false",
        ),
        (
            &["--task", "adding", "--mean-std", "0.3,0.2"][..],
            "apply to the pixel task only",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = tpri(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{extra:?}: {err}"
        );
    }
    for want in [
        "inversion = \"per-gate\"",
        "init = \"pytorch\"",
        "mean_std = [0.286, 0.3202]",
    ] {
        assert!(config.contains(want), "{want} in {config}");
    }
}

/// A step that fails because the update before it blew W up says so, on both backends,
/// instead of leaving only the failed solve's advice (more CG iterations, which cannot
/// help): TP-RI on temporal order at lr 1e6.
#[test]
fn a_blown_up_update_is_named_as_the_cause() {
    let dir = scratch("blown-up");
    for backend in ["cpu", "gpu"] {
        let run = dir.join(backend);
        let out = tpri(&[
            "train",
            "--preset",
            "temporal-order-60-tp",
            "--lr",
            "1e6",
            "--iterations",
            "5",
            "--log-every",
            "1",
            "--backend",
            backend,
            "--run-dir",
            run.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{backend}: the run should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the parameters blew up before iteration")
                && err.contains("‖W‖_F")
                && err.contains("--lr-target")
                && err.contains("no checkpoint was written"),
            "{backend}: {err}"
        );
    }
}
