//! Run directories under adversity (issue 14): one owner per directory, refused commands
//! that change nothing, failed starts that leave nothing in the way, checksummed and
//! rotated checkpoints, a divergence rule that noise cannot trip, and progress printing
//! into a closed pipe. Each test failed before these were built.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tpri::train::{DivergenceCheck, Verdict, CHECKPOINT_FACTOR, FACTOR, PATIENCE};

mod cli_support;

use cli_support::{log_without_time, scratch, small, strs, tpri, write_tiny_mnist};

/// A small adding run on the CPU (T = 30, d = 32, B = 20, 100 held-out sequences, a log
/// point every iteration, an evaluation every 50): the reproduction settings,
/// with `extra` flags added or replacing these.
fn adding(dir: &Path, iterations: &str, extra: &[&str]) -> Vec<String> {
    let base = [
        ("--task", "adding"),
        ("--seq-len", "30"),
        ("--hidden", "32"),
        ("--batch-size", "20"),
        ("--eval-size", "100"),
        ("--log-every", "1"),
        ("--eval-every", "50"),
        ("--backend", "cpu"),
        ("--iterations", iterations),
        ("--run-dir", dir.to_str().unwrap()),
    ];
    let mut a = vec!["train".to_string()];
    for (flag, value) in base {
        if !extra.contains(&flag) {
            a.extend([flag.to_string(), value.to_string()]);
        }
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Runs `tpri`, expecting success; returns (stdout, stderr).
fn ok(args: &[&str]) -> (String, String) {
    let o = tpri(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?} failed: {err}");
    (out, err)
}

/// Runs `tpri`, expecting a clear failure mentioning every one of `needles`; returns stderr.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let o = tpri(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} should mention {n:?}");
    }
    err
}

/// Every file of a directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The iterations of log.csv's rows.
fn logged(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("log.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

fn checkpoint_iteration(dir: &Path) -> u64 {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint.json")).unwrap())
            .unwrap();
    meta["iteration"].as_u64().unwrap()
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a long run in the background and waits for its first checkpoint.
fn spawn_long(dir: &Path) -> Killed {
    let a = adding(dir, "10000000", &["--checkpoint-every", "3"]);
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_tpri"))
            .args(strs(&a))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !dir.join("checkpoint.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn a_live_run_owns_its_directory_and_a_killed_one_is_taken_over() {
    let dir = scratch("owner").join("run");
    let child = spawn_long(&dir);
    let pid = child.0.id();
    let owner = format!("process {pid}");
    let before = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    // A second run into the directory, a resume of it, a resume with more iterations:
    // each refused, naming the owner.
    refused(&strs(&adding(&dir, "400", &[])), &[&owner, "in use"]);
    let d = dir.to_str().unwrap();
    refused(&["train", "--resume", d, "--backend", "cpu"], &[&owner]);
    refused(
        &[
            "train",
            "--resume",
            d,
            "--iterations",
            "5",
            "--backend",
            "cpu",
        ],
        &[&owner],
    );
    // None of them touched the live run's log: it only grew.
    let after = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    assert!(
        after.starts_with(&before),
        "the live run's log was rewritten"
    );
    // kill -9 leaves the lock behind; the next run takes it over, naming the process.
    drop(child);
    assert!(
        dir.join("run.lock").exists(),
        "a killed run leaves its lock"
    );
    // checkpoint.json is written after its checkpoint: a kill between the two leaves it one
    // checkpoint (3 iterations) behind, so ask for more than that.
    let done = checkpoint_iteration(&dir);
    let total = done + 10;
    let (out, err) = ok(&[
        "train",
        "--resume",
        d,
        "--iterations",
        &total.to_string(),
        "--backend",
        "cpu",
    ]);
    assert!(
        out.contains(&format!("resuming {d} from iteration")),
        "{out}"
    );
    assert!(
        err.contains(&owner) && err.contains("no longer running"),
        "the stale lock is reported: {err}"
    );
    assert!(!dir.join("run.lock").exists(), "released at the end");
    let rows = logged(&dir);
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "one row per iteration, in order: {rows:?}"
    );
    assert_eq!(rows.last(), Some(&total));
    let leftovers: Vec<String> = snapshot(&dir)
        .into_keys()
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_refused_command_changes_nothing() {
    let dir = scratch("refused").join("run");
    ok(&strs(&adding(&dir, "12", &["--checkpoint-every", "3"])));
    let before = snapshot(&dir);
    let d = dir.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--lr", "0.1"], "only --iterations"),
        (vec!["--iterations", "0"], "--iterations must be at least 1"),
        (vec![], "nothing to run"),
        (vec!["--iterations", "6"], "nothing to run"),
        (
            vec!["--iterations", "20", "--storage", "f16"],
            "--storage f16",
        ),
    ];
    for (extra, needle) in cases {
        let mut a = vec!["train", "--resume", d, "--backend", "cpu"];
        a.extend(extra);
        refused(&a, &[needle]);
        assert!(snapshot(&dir) == before, "{a:?} changed the run directory");
    }
    refused(&strs(&adding(&dir, "12", &[])), &["already holds a run"]);
    assert!(snapshot(&dir) == before, "a refused start changed the run");
}

#[test]
fn another_runs_files_are_not_overwritten() {
    let root = scratch("foreign");
    let (src, dst) = (root.join("src"), root.join("dst"));
    ok(&strs(&adding(&src, "6", &["--checkpoint-every", "3"])));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["checkpoint.safetensors", "log.csv"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let before = snapshot(&dst);
    refused(
        &strs(&adding(&dst, "6", &[])),
        &["checkpoint.safetensors", "log.csv", "no config.toml"],
    );
    assert!(snapshot(&dst) == before);
}

#[test]
fn a_failed_start_leaves_nothing_in_the_way() {
    let root = scratch("start");
    // Bad data: refused before the run directory exists; the corrected rerun runs.
    let data = root.join("data");
    write_tiny_mnist(&data);
    std::fs::write(data.join("train-images-idx3-ubyte"), b"not an IDX file").unwrap();
    let dir = root.join("pixel");
    let pixel = [
        "train",
        "--task",
        "pixel",
        "--chunk",
        "28",
        "--data-dir",
        data.to_str().unwrap(),
        "--hidden",
        "8",
        "--batch-size",
        "2",
        "--eval-size",
        "2",
        "--iterations",
        "2",
        "--backend",
        "cpu",
        "--run-dir",
        dir.to_str().unwrap(),
    ];
    refused(&pixel, &["train-images-idx3-ubyte"]);
    assert!(!dir.exists(), "a refused start created {}", dir.display());
    write_tiny_mnist(&data);
    ok(&pixel);
    // A run that fails before its first checkpoint (CG misses its tolerance) may be
    // started again with corrected settings.
    let dir = root.join("cg");
    let err = refused(
        &strs(&adding(&dir, "20", &["--cg-max-iter", "1"])),
        &["no checkpoint was written before it"],
    );
    assert!(err.contains("did not converge"), "{err}");
    let (_, err) = ok(&strs(&adding(&dir, "20", &[])));
    assert!(err.contains("never reached a checkpoint"), "{err}");
    // --iterations 0 is an error up front, not "already reached its iteration count".
    let dir = root.join("zero");
    refused(
        &strs(&adding(&dir, "0", &[])),
        &["--iterations must be at least 1"],
    );
    assert!(!dir.exists());
    // The same preset twice: two runs, two directories.
    let out = root.join("compare");
    ok(&[
        "compare",
        "adding-30-bp",
        "adding-30-bp",
        "--iterations",
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
    ]);
    for run in ["adding-30-bp", "adding-30-bp-2"] {
        assert!(out.join(run).join("summary.json").is_file(), "{run}");
    }
}

/// Flips one bit near the end of a file (inside the last tensor's data).
fn flip_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one_exactly() {
    let root = scratch("damaged");
    let (whole, split) = (root.join("whole"), root.join("split"));
    ok(&strs(&small(&whole, "12")));
    ok(&strs(&small(&split, "8")));
    assert!(split.join("checkpoint.prev.safetensors").is_file());
    flip_bit(&split.join("checkpoint.safetensors"));
    let s = split.to_str().unwrap();
    let (out, err) = ok(&[
        "train",
        "--resume",
        s,
        "--iterations",
        "12",
        "--backend",
        "cpu",
    ]);
    assert!(
        err.contains("checksum mismatch") && err.contains("previous checkpoint"),
        "{err}"
    );
    assert!(out.contains("from iteration 4"), "{out}");
    assert!(split.join("checkpoint.damaged.safetensors").is_file());
    // From the previous checkpoint the run is still exactly the uninterrupted one.
    assert_eq!(log_without_time(&whole), log_without_time(&split));
    let cfg: tpri::train::RunConfig =
        toml::from_str(&std::fs::read_to_string(whole.join("config.toml")).unwrap()).unwrap();
    let load = |d: &Path| {
        tpri::run_dir::load_checkpoint(&d.join("checkpoint.safetensors"), &cfg)
            .unwrap()
            .params
    };
    assert_eq!(load(&whole), load(&split));
    // Both checkpoints damaged: an error naming both, and nothing changed.
    flip_bit(&split.join("checkpoint.safetensors"));
    flip_bit(&split.join("checkpoint.prev.safetensors"));
    let before = snapshot(&split);
    refused(
        &[
            "train",
            "--resume",
            s,
            "--iterations",
            "16",
            "--backend",
            "cpu",
        ],
        &[
            "no usable checkpoint",
            "checkpoint.safetensors",
            "checkpoint.prev.safetensors",
        ],
    );
    assert!(snapshot(&split) == before);
    // The library's loader checks the sum too.
    let err =
        tpri::run_dir::load_checkpoint(&split.join("checkpoint.safetensors"), &cfg).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn a_lost_checkpoint_is_not_a_restart_and_extensions_are_saved() {
    let dir = scratch("lost").join("run");
    ok(&strs(&small(&dir, "8")));
    let d = dir.to_str().unwrap();
    // Stale temporary files of killed writes go at the next start.
    for f in [".checkpoint.safetensors.tmp4000000", ".log.csv.tmp77"] {
        std::fs::write(dir.join(f), b"partial").unwrap();
    }
    std::fs::remove_file(dir.join("checkpoint.safetensors")).unwrap();
    let (out, err) = ok(&[
        "train",
        "--resume",
        d,
        "--iterations",
        "10",
        "--backend",
        "cpu",
    ]);
    assert!(out.contains("from iteration 4"), "{out}");
    assert!(
        err.contains("is missing") && err.contains("previous"),
        "{err}"
    );
    assert!(!dir.join(".checkpoint.safetensors.tmp4000000").exists());
    assert!(!dir.join(".log.csv.tmp77").exists());
    // The extension to 10 iterations was saved: a plain --resume has nothing left to do.
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(cfg.contains("iterations = 10"), "{cfg}");
    refused(
        &["train", "--resume", d, "--backend", "cpu"],
        &["completed 10 iterations of its 10"],
    );
    // Every checkpoint gone but checkpoint.json records one: an error, not a restart.
    std::fs::remove_file(dir.join("checkpoint.safetensors")).unwrap();
    std::fs::remove_file(dir.join("checkpoint.prev.safetensors")).unwrap();
    let before = snapshot(&dir);
    refused(
        &[
            "train",
            "--resume",
            d,
            "--iterations",
            "12",
            "--backend",
            "cpu",
        ],
        &["checkpoint.safetensors is missing", "iteration 10"],
    );
    assert!(snapshot(&dir) == before);
}

#[test]
fn the_last_good_checkpoint_resumes_without_diverging() {
    let dir = scratch("lastgood").join("run");
    let err = refused(
        &strs(&adding(
            &dir,
            "100",
            &["--method", "bp", "--lr", "0.7", "--checkpoint-every", "1"],
        )),
        &[
            "diverged at iteration",
            "the last good checkpoint is from iteration",
        ],
    );
    let saved: u64 = err
        .rsplit("the last good checkpoint is from iteration ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(checkpoint_iteration(&dir), saved);
    // Frozen at the last good checkpoint, the run must not diverge.
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(cfg.contains("lr = 0.7"), "{cfg}");
    std::fs::write(
        dir.join("config.toml"),
        cfg.replace("lr = 0.7", "lr = 1e-12"),
    )
    .unwrap();
    ok(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--iterations",
        "300",
        "--backend",
        "cpu",
    ]);
}

#[test]
fn frozen_parameters_and_tiny_batches_never_diverge() {
    let root = scratch("frozen");
    for seed in ["1", "3"] {
        let dir = root.join(format!("bp{seed}"));
        ok(&strs(&adding(
            &dir,
            "300",
            &[
                "--method",
                "bp",
                "--lr",
                "1e-12",
                "--batch-size",
                "4",
                "--eval-size",
                "10",
                "--seed",
                seed,
            ],
        )));
    }
    // Iteration 1 scores the initial parameters: it can never be a divergence.
    ok(&[
        "train",
        "--preset",
        "adding-30-tp",
        "--seq-len",
        "10",
        "--hidden",
        "4",
        "--batch-size",
        "8",
        "--eval-size",
        "8",
        "--iterations",
        "30",
        "--backend",
        "cpu",
        "--run-dir",
        root.join("tp").to_str().unwrap(),
    ]);
}

#[test]
fn a_diverging_rate_is_caught_naming_the_iteration_and_what_exists() {
    let dir = scratch("diverging").join("run");
    let err = refused(
        &strs(&adding(&dir, "200", &["--method", "bp", "--lr", "100"])),
        &[
            "diverged at iteration",
            "no checkpoint was written before it",
        ],
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
    assert!((2..20).contains(&at), "{err}");
    assert!(!dir.join("checkpoint.safetensors").exists());
}

/// A deterministic stream of uniform numbers in [0, 1).
fn uniform(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn the_divergence_rule() {
    // The first log point (iteration 1, no update yet) never diverges, however high.
    let mut d = DivergenceCheck::new(0.1);
    assert_eq!(d.observe(50.0), Verdict::Healthy);
    assert_eq!(d.reference, Some(50.0));
    // Non-finite values diverge at once, even first.
    assert!(matches!(
        DivergenceCheck::new(0.1).observe(f64::NAN),
        Verdict::Diverged(_)
    ));
    // Noisy losses around a constant mean (exponentially distributed, as heavy a tail as
    // minibatches of squared errors have) never diverge in 100 000 log points.
    let mut d = DivergenceCheck::new(1.0);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..100_000 {
        let loss = -(1.0 - uniform(&mut state)).ln();
        assert!(!matches!(d.observe(loss), Verdict::Diverged(_)));
    }
    // A loss that grows 50 % per log point diverges, after PATIENCE log points above
    // FACTOR × the start.
    let mut d = DivergenceCheck::new(1.0);
    let (mut loss, mut rising) = (1.0, 0);
    let at = (1..200)
        .find(|_| {
            let v = d.observe(loss);
            loss *= 1.5;
            if v == Verdict::Rising {
                rising += 1;
            }
            matches!(v, Verdict::Diverged(_))
        })
        .expect("a growing loss diverges");
    assert_eq!(rising, PATIENCE - 1);
    assert!(d.smoothed.unwrap() > FACTOR, "at log point {at}");
    // Checkpoints: only for a held-out loss at most CHECKPOINT_FACTOR × the start, while
    // no streak runs.
    let mut d = DivergenceCheck::new(1.0);
    d.observe(1.0);
    assert!(d.healthy_with(0.9 * CHECKPOINT_FACTOR));
    assert!(!d.healthy_with(1.1 * CHECKPOINT_FACTOR));
    assert!(!d.healthy_with(f64::INFINITY));
    for _ in 0..30 {
        d.observe(100.0);
    }
    assert!(!d.healthy_with(1.0));
}

#[test]
fn progress_into_a_closed_pipe_does_not_stop_the_run() {
    let dir = scratch("pipe").join("run");
    // An evaluation line per iteration: far more than a pipe buffer holds.
    let a = adding(
        &dir,
        "2000",
        &[
            "--method",
            "bp",
            "--hidden",
            "8",
            "--eval-size",
            "20",
            "--eval-every",
            "1",
        ],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tpri"))
        .args(strs(&a))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped: stdout is a closed pipe from here on (`| head -1`).
    assert!(first.starts_with("training with"), "{first}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the run died with its pipe: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["iterations"], 2000);
}

/// The rows of log.csv, split into fields, after checking its header is `header`.
fn log_rows(dir: &Path, header: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header));
    lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn log_counts_the_solves_and_a_log_from_before_the_count_resumes() {
    let dir = scratch("solves").join("run");
    let gru = [
        "--cell",
        "gru",
        "--seq-len",
        "20",
        "--hidden",
        "8",
        "--batch-size",
        "4",
        "--reg",
        "0.25",
        "--checkpoint-every",
        "2",
    ];
    ok(&strs(&adding(&dir, "4", &gru)));
    let header = tpri::run_dir::LOG_HEADER;
    let column = |name: &str| header.split(',').position(|c| c == name).unwrap();
    let (most, solves, total) = (
        column("cg_iterations"),
        column("cg_solves"),
        column("cg_iterations_total"),
    );
    let rows = log_rows(&dir, header);
    let counted: Vec<&Vec<String>> = rows.iter().filter(|r| !r[solves].is_empty()).collect();
    assert_eq!(
        counted.len(),
        4,
        "every iteration's row has its count: {rows:?}"
    );
    for r in counted {
        let n = |i: usize| r[i].parse::<usize>().unwrap();
        // The jacobian inversion solves steps T … 2 (19 of them), each for at least one
        // iteration at r = 1/4, so together they ran more than their slowest step did.
        assert!((1..=19).contains(&n(solves)), "{r:?}");
        assert!(n(total) >= n(most) && n(total) >= n(solves), "{r:?}");
        assert!(n(total) > n(most) || n(solves) == 1, "{r:?}");
    }

    // The same log as runs wrote it before the two columns: it resumes, its rows padded.
    let old = tpri::run_dir::LOG_HEADER_BEFORE_SOLVES;
    let width = old.split(',').count();
    let mut text = format!("{old}\n");
    for r in &rows {
        text += &format!("{}\n", r[..width].join(","));
    }
    std::fs::write(dir.join("log.csv"), text).unwrap();
    let figures = dir.parent().unwrap().join("figures");
    ok(&[
        "plot",
        dir.to_str().unwrap(),
        "--out",
        figures.to_str().unwrap(),
    ]);
    ok(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--iterations",
        "6",
    ]);
    let resumed = log_rows(&dir, header);
    assert!(resumed.iter().all(|r| r.len() == header.split(',').count()));
    let before: Vec<&Vec<String>> = resumed
        .iter()
        .filter(|r| r[0].parse::<u64>().unwrap() <= 4)
        .collect();
    assert!(before
        .iter()
        .all(|r| r[solves].is_empty() && r[total].is_empty()));
    assert_eq!(before.len(), rows.len());
    assert!(resumed
        .iter()
        .filter(|r| r[0].parse::<u64>().unwrap() > 4)
        .all(|r| !r[solves].is_empty()));
    ok(&[
        "plot",
        dir.to_str().unwrap(),
        "--out",
        figures.to_str().unwrap(),
    ]);
}
