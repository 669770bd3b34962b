//! The language model from the command line (docs/ALGORITHM.md §13): `tpri train --task lm`
//! on a small corpus the test writes, on the CPU reference and on the GPU (which needs an
//! adapter: lavapipe will do), reporting perplexity; the presets; clear errors.

use std::path::Path;

mod cli_support;

use cli_support::{scratch, tpri};

/// A small Penn Treebank-layout directory: sentences of a few words from a list of ten.
fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let list = [
        "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away",
    ];
    let text = |lines: usize, salt: usize| -> String {
        (0..lines)
            .map(|i| {
                let n = 2 + (i * 7 + salt) % 5;
                let ws: Vec<&str> = (0..n).map(|k| list[(i * 3 + k * k + salt) % 10]).collect();
                ws.join(" ") + "\n"
            })
            .collect()
    };
    std::fs::write(dir.join("ptb.train.txt"), text(40, 0)).unwrap();
    std::fs::write(dir.join("ptb.test.txt"), text(12, 1)).unwrap();
}

/// `tpri train --task lm` on `data` into `run` with `backend` and `method`.
fn train(data: &Path, run: &Path, backend: &str, method: &str) -> String {
    train_with(data, run, backend, method, &[])
}

/// `train` with `extra` flags.
fn train_with(data: &Path, run: &Path, backend: &str, method: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        "--task",
        "lm",
        "--data-dir",
        data.to_str().unwrap(),
        "--seq-len",
        "6",
        "--vocab",
        "13",
        "--embedding-dim",
        "5",
        "--hidden",
        "7",
        "--batch-size",
        "5",
        "--eval-size",
        "9",
        "--method",
        method,
        "--lr",
        "0.5",
        "--lr-target",
        "1",
        "--iterations",
        "20",
        "--eval-every",
        "10",
        "--log-every",
        "5",
        "--backend",
        backend,
        "--run-dir",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = tpri(&args);
    assert!(
        out.status.success(),
        "{backend} {method}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Column `name` of a run's log.csv, the rows that have it.
fn log_column(run: &Path, name: &str) -> Vec<f64> {
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    let mut lines = log.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == name).unwrap();
    lines
        .filter_map(|l| l.split(',').nth(k).and_then(|v| v.parse().ok()))
        .collect()
}

/// The run's summary, checked: its perplexities are exp of the last losses.
fn checked_summary(run: &Path) -> serde_json::Value {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let last = &summary["last"];
    let eval_loss = last["eval"]["loss"].as_f64().unwrap();
    let train_loss = last["train_loss"].as_f64().unwrap();
    let ppl = &summary["perplexity"];
    assert!((ppl["eval"].as_f64().unwrap() - eval_loss.exp()).abs() < 1e-9 * eval_loss.exp());
    assert!((ppl["train"].as_f64().unwrap() - train_loss.exp()).abs() < 1e-9 * train_loss.exp());
    summary
}

#[test]
fn the_language_model_trains_on_the_cpu_reporting_perplexity() {
    let root = scratch("lm-cpu");
    let data = root.join("ptb");
    write_corpus(&data);
    for method in ["tp", "bp"] {
        let run = root.join(format!("run-{method}"));
        let out = train(&data, &run, "cpu", method);
        assert!(
            out.contains("eval ppl") && out.contains("train ppl"),
            "{out}"
        );
        checked_summary(&run);
        let eval = log_column(&run, "eval_loss");
        assert_eq!(eval.len(), 3, "iterations 0, 10 and 20");
        // A uniform guess over the 13 outputs scores ln 13; training lowers the loss.
        assert!((eval[0] - 13f64.ln()).abs() < 0.5, "{eval:?}");
        assert!(eval[2] < eval[0], "{method}: {eval:?}");
        let steps = std::fs::read_to_string(run.join("step_norms.csv")).unwrap();
        assert_eq!(steps.lines().next().unwrap().split(',').count(), 1 + 6);
    }
}

/// The same runs on the GPU (lavapipe will do; fails without an adapter): perplexity
/// reported, and the loss curve within 1e-3 of the reference's.
#[test]
fn the_language_model_trains_on_the_gpu_as_on_the_cpu() {
    let root = scratch("lm-gpu");
    let data = root.join("ptb");
    write_corpus(&data);
    for method in ["tp", "bp"] {
        let (cpu, gpu) = (
            root.join(format!("cpu-{method}")),
            root.join(format!("gpu-{method}")),
        );
        train(&data, &cpu, "cpu", method);
        let out = train(&data, &gpu, "gpu", method);
        assert!(out.contains("eval ppl") && out.contains("gpu"), "{out}");
        checked_summary(&gpu);
        for column in ["train_loss", "eval_loss", "eval_accuracy"] {
            let (c, g) = (log_column(&cpu, column), log_column(&gpu, column));
            assert_eq!(c.len(), g.len(), "{method} {column}");
            for (a, b) in c.iter().zip(&g) {
                assert!(
                    (a - b).abs() <= 1e-3 * a.abs().max(1e-3),
                    "{method} {column}: {c:?} vs {g:?}"
                );
            }
        }
    }
}

/// The trained embedding table of a run directory's newest checkpoint, row-major.
fn trained_table(root: &Path, run: &Path) -> Vec<f64> {
    let file = root.join(format!(
        "{}.safetensors",
        run.file_name().unwrap().to_str().unwrap()
    ));
    let out = tpri(&[
        "export",
        run.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli_support::floats(&file, "embed.weight")
}

/// `--train-embedding` on both backends, TP-RI and BP: the table starts as the frozen
/// runs' (the same held-out loss at iteration 0), moves, and the held-out loss falls; the
/// GPU's loss curve follows the reference's. The losses are printed for the record.
#[test]
fn a_trained_embedding_moves_and_the_loss_falls_on_both_backends() {
    let root = scratch("lm-embed");
    let data = root.join("ptb");
    write_corpus(&data);
    let spec = tpri::tasks::TaskSpec::Lm {
        dir: data.clone(),
        seq_len: 6,
        vocab: 13,
        embedding_dim: 5,
        train_tokens: None,
        eval_split: tpri::tasks::EvalSplit::Test,
        train_embedding: true,
    };
    // The runs' seed is 0: the table every run starts from.
    let start = tpri::tasks::build_task(&spec, 0, 9)
        .unwrap()
        .embedding_table()
        .unwrap();
    let start: Vec<f64> = start.transpose().iter().copied().collect();
    for method in ["tp", "bp"] {
        let frozen = root.join(format!("frozen-{method}"));
        train(&data, &frozen, "cpu", method);
        let frozen_eval = log_column(&frozen, "eval_loss");
        let mut curves = Vec::new();
        for backend in ["cpu", "gpu"] {
            let run = root.join(format!("{backend}-{method}"));
            let out = train_with(&data, &run, backend, method, &["--train-embedding"]);
            assert!(out.contains("eval ppl"), "{out}");
            let eval = log_column(&run, "eval_loss");
            let train = log_column(&run, "train_loss");
            eprintln!("{backend} {method} --train-embedding: eval loss {eval:?}, train loss {train:?} (frozen: eval {frozen_eval:?})");
            assert!(eval.iter().chain(&train).all(|l| l.is_finite()));
            assert!(
                (eval[0] - frozen_eval[0]).abs() <= 1e-5 * frozen_eval[0],
                "{eval:?} vs {frozen_eval:?}"
            );
            assert!(eval[2] < eval[0], "{backend} {method}: {eval:?}");
            let table = trained_table(&root, &run);
            assert_eq!(table.len(), start.len());
            let moved = table
                .iter()
                .zip(&start)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            eprintln!("{backend} {method}: largest change of an entry of E {moved:.3e}");
            assert!(moved > 1e-3, "{backend} {method}: E did not move");
            // The table and its optimizer slots come back from the checkpoint: resuming
            // checks them against the run's vocabulary and the parameters.
            let out = tpri(&[
                "train",
                "--resume",
                run.to_str().unwrap(),
                "--iterations",
                "30",
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let last = log_column(&run, "iteration").last().copied();
            assert_eq!(last, Some(30.0), "{backend} {method}: resumed to 30");
            curves.push(eval);
        }
        for (a, b) in curves[0].iter().zip(&curves[1]) {
            assert!((a - b).abs() <= 1e-3 * a.abs(), "{method}: {curves:?}");
        }
    }
}

#[test]
fn presets_list_the_published_language_model() {
    let out = tpri(&["presets"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["ptb-tp", "ptb-bp"] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn language_model_errors_name_the_file_or_flag() {
    let root = scratch("lm-bad");
    let missing = root.join("nowhere");
    let out = tpri(&[
        "train",
        "--task",
        "lm",
        "--data-dir",
        missing.to_str().unwrap(),
        "--backend",
        "cpu",
        "--run-dir",
        root.join("run").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ptb.train.txt") && err.contains("README"),
        "{err}"
    );
    assert!(
        !root.join("run").exists(),
        "a refused run leaves nothing behind"
    );
    let out = tpri(&["train", "--task", "adding", "--vocab", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lm task only"));
    let out = tpri(&["train", "--task", "adding", "--train-embedding"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lm task only") && err.contains("--train-embedding"),
        "{err}"
    );
    let data = root.join("ptb");
    write_corpus(&data);
    let out = tpri(&[
        "train",
        "--task",
        "lm",
        "--data-dir",
        data.to_str().unwrap(),
        "--vocab",
        "0",
        "--backend",
        "cpu",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vocab"), "{err}");
}

/// `--alignment` with a trained embedding table compares its gradient too (a column
/// `embed.weight`), on both backends; at iteration 0 (the same parameters) they agree.
/// At r = 100: at r = 1 the language model's targets explode (docs/REPRODUCTION.md), the
/// states saturate and both gradients vanish, leaving nothing to compare.
#[test]
fn alignment_covers_a_trained_embedding() {
    let root = scratch("lm-alignment");
    let data = root.join("data");
    write_corpus(&data);
    let rows = |backend: &str| {
        let run = root.join(backend);
        let extra = ["--train-embedding", "--alignment", "--reg", "100"];
        train_with(&data, &run, backend, "tp", &extra);
        let text = std::fs::read_to_string(run.join("alignment.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("iteration,cosine,norm_ratio,rnn.w_hh,rnn.w_ih,rnn.b_ih,rnn.b_hh,embed.weight")
        );
        lines
            .map(|l| {
                l.split(',')
                    .map(|v| v.parse::<f64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let (cpu, gpu) = (rows("cpu"), rows("gpu"));
    assert_eq!(cpu.len(), 3, "evaluations at 0, 10 and 20");
    assert_eq!(gpu.len(), 3);
    for row in cpu.iter().chain(&gpu) {
        assert!(row.iter().all(|v| v.is_finite()), "{row:?}");
    }
    let err = cpu[0]
        .iter()
        .zip(&gpu[0])
        .map(|(c, g)| (c - g).powi(2))
        .sum::<f64>()
        .sqrt()
        / cpu[0].iter().map(|c| c * c).sum::<f64>().sqrt();
    assert!(
        err < 1e-4,
        "iteration 0: cpu {:?}, gpu {:?}",
        cpu[0],
        gpu[0]
    );
}
