//! `tpri bench --cell`: each cell's TP-RI and BP rows, on the CPU reference and on the GPU
//! (the GPU test fails, as every GPU test here, where no adapter is found).

mod cli_support;

use cli_support::{ok, scratch};
use serde_json::Value;

/// Runs `tpri bench` with `args` and `--json`; the report's measurements and fits.
fn bench(name: &str, args: &[&str]) -> (Vec<Value>, Vec<Value>) {
    let dir = scratch(name);
    let json = dir.join("bench.json");
    let mut all = vec!["bench", "--json", json.to_str().unwrap()];
    all.extend(args);
    let out = ok(&all);
    assert!(out.contains("gru"), "{out}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let list = |key: &str| report[key].as_array().unwrap().clone();
    (list("measurements"), list("fits"))
}

/// A positive, finite number of seconds.
fn seconds(v: &Value) -> f64 {
    let s = v.as_f64().unwrap_or(f64::NAN);
    assert!(s.is_finite() && s > 0.0, "not a time: {v}");
    s
}

#[test]
fn bench_times_each_cell_on_the_cpu() {
    let (rows, fits) = bench(
        "cells-cpu",
        &[
            "--backend",
            "cpu",
            "--cell",
            "tanh,gru",
            "--steps",
            "3,6",
            "--hidden",
            "5",
            "--batch",
            "2",
            "--reps",
            "1",
        ],
    );
    assert_eq!(rows.len(), 8, "2 lengths × 2 cells × 2 methods: {rows:?}");
    for t in [3, 6] {
        for cell in ["tanh", "gru"] {
            for method in ["tp", "bp"] {
                let row = rows
                    .iter()
                    .find(|r| r["size"]["steps"] == t && r["cell"] == cell && r["method"] == method)
                    .unwrap_or_else(|| panic!("no {cell} {method} row at T = {t}: {rows:?}"));
                seconds(&row["iteration_s"]);
                assert_eq!(row["backend"], "cpu");
            }
        }
    }
    // Two lengths per cell and method: a line through each.
    assert!(
        fits.iter()
            .any(|f| f["cell"] == "gru" && f["method"] == "tp"),
        "{fits:?}"
    );
}

#[test]
fn bench_times_the_grus_phases_on_the_gpu() {
    let (rows, _) = bench(
        "cells-gpu",
        &[
            "--backend",
            "gpu",
            "--cell",
            "gru",
            "--steps",
            "5",
            "--hidden",
            "7",
            "--batch",
            "3",
            "--reps",
            "1",
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (method, phases) in [
        (
            "tp",
            &[
                "forward",
                "head",
                "inverse",
                "sweep",
                "bptt",
                "reductions",
                "optimizer",
            ][..],
        ),
        (
            "bp",
            &["forward", "head", "bptt", "reductions", "optimizer"][..],
        ),
    ] {
        let row = rows.iter().find(|r| r["method"] == method).unwrap();
        assert_eq!(row["cell"], "gru");
        seconds(&row["iteration_s"]);
        let timed: Vec<&str> = row["phases_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                seconds(&p[1]);
                p[0].as_str().unwrap()
            })
            .collect();
        assert_eq!(timed, phases, "{method}");
    }
    // The timed solves for the three P_g start from the last ones while W moves: they
    // iterate (a W that stood still would make the inverse phase look free).
    let tp = rows.iter().find(|r| r["method"] == "tp").unwrap();
    assert!(tp["cg_iterations"].as_u64().unwrap() >= 1, "{tp}");
}

/// `--inversion`: TP-RI rows for each inversion that applies to each cell (`tp-jacobian`
/// for both cells beside each cell's bench inversion), on the CPU and on the GPU, with
/// their per-step CG iterations; the jacobian rows' phases are timed, and an inversion that
/// applies to no cell asked for, or a cell left without one, is refused naming them.
#[test]
fn bench_times_the_inversions_asked_for() {
    let (rows, fits) = bench(
        "inversions",
        &[
            "--backend",
            "all",
            "--cell",
            "tanh,gru",
            "--inversion",
            "jacobian,analytic,per-gate",
            "--steps",
            "4,6",
            "--hidden",
            "7",
            "--batch",
            "3",
            "--reps",
            "1",
        ],
    );
    // 2 lengths × 2 backends × (2 TP-RI inversions and BP) × 2 cells.
    assert_eq!(rows.len(), 24, "{rows:?}");
    for (cell, inversions) in [
        ("tanh", ["jacobian", "analytic"]),
        ("gru", ["jacobian", "per-gate"]),
    ] {
        for backend in ["gpu", "cpu"] {
            for inversion in inversions {
                let row = rows
                    .iter()
                    .find(|r| {
                        r["cell"] == cell
                            && r["backend"] == backend
                            && r["method"] == "tp"
                            && r["inversion"] == inversion
                            && r["size"]["steps"] == 6
                    })
                    .unwrap_or_else(|| panic!("no {backend} {cell} tp {inversion} row: {rows:?}"));
                seconds(&row["iteration_s"]);
                let count = |field: &str| row[field].as_u64().unwrap();
                let (most, solves, total) = (
                    count("cg_iterations"),
                    count("cg_solves"),
                    count("cg_iterations_total"),
                );
                assert!(most >= 1, "{row}");
                // One solve for P; three for the P_g; at most steps T … 2 per-step.
                let solvable = match inversion {
                    "analytic" => 1..=1,
                    "per-gate" => 1..=3,
                    _ => 1..=5,
                };
                assert!(solvable.contains(&solves), "{row}");
                assert!(total >= most && total >= solves, "{row}");
                assert_eq!(row["reg"], 1.0, "the default r: {row}");
                let tol = if backend == "gpu" { 1e-5 } else { 1e-12 };
                assert_eq!(
                    row["cg_tol"].as_f64(),
                    Some(tol),
                    "each backend's own: {row}"
                );
            }
        }
    }
    for row in rows.iter().filter(|r| r["method"] == "bp") {
        assert!(row["inversion"].is_null() && row["reg"].is_null(), "{row}");
        assert!(row["cg_solves"].is_null() && row["cg_iterations_total"].is_null());
    }
    // The fits keep the inversions apart: one line each.
    let jacobian_fits = fits
        .iter()
        .filter(|f| f["inversion"] == "jacobian" && f["backend"] == "cpu")
        .count();
    assert_eq!(jacobian_fits, 2, "{fits:?}");
    for (args, words) in [
        (
            &["--cell", "tanh", "--inversion", "per-gate"][..],
            &["--inversion per-gate", "none of the cells"][..],
        ),
        (
            &["--cell", "tanh,gru", "--inversion", "analytic"][..],
            &["Gru", "--inversion lists none"][..],
        ),
    ] {
        let mut all = vec!["bench", "--backend", "cpu", "--steps", "4", "--reps", "1"];
        all.extend(args);
        let out = cli_support::tpri(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in words {
            assert!(err.contains(w), "{args:?}: {err}");
        }
    }
}

/// `--reg`, `--cg-tol`, `--cg-max-iter`: every TP-RI case solves as asked, which the JSON
/// records; a smaller r makes each per-step solve of the jacobian inversion harder (more
/// CG iterations), a looser tolerance cheaper; a case that fails is named in the error;
/// values training refuses are refused naming the flag.
#[test]
fn bench_times_tp_with_the_solve_asked_for() {
    // The GRU's jacobian inversion at (r, flags): its TP-RI row. At d = 40 CG needs more
    // iterations than a loose tolerance lets it run (at d = 9 it ends exactly at 9).
    let tp_row = |reg: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "--backend",
            "cpu",
            "--cell",
            "gru",
            "--inversion",
            "jacobian",
            "--steps",
            "12",
            "--hidden",
            "40",
            "--batch",
            "3",
            "--reps",
            "1",
            "--reg",
            reg,
        ];
        args.extend(extra);
        let (rows, _) = bench(&format!("reg-{reg}-{}", extra.join("")), &args);
        let tp = rows
            .into_iter()
            .find(|r| r["method"] == "tp")
            .expect("a TP-RI row");
        assert_eq!(tp["reg"].as_f64(), reg.parse::<f64>().ok(), "{tp}");
        tp
    };
    let count = |row: &serde_json::Value, field: &str| row[field].as_u64().unwrap();
    let (small, large) = (tp_row("0.01", &[]), tp_row("100", &[]));
    assert!(
        count(&small, "cg_iterations") > count(&large, "cg_iterations"),
        "CG iterations at r = 0.01: {small}, at r = 100: {large}"
    );
    // The CPU's own tolerance unless asked; a looser one costs fewer iterations.
    let loose = tp_row("0.01", &["--cg-tol", "1e-4"]);
    assert_eq!(small["cg_tol"].as_f64(), Some(1e-12), "{small}");
    assert_eq!(loose["cg_tol"].as_f64(), Some(1e-4), "{loose}");
    assert!(
        count(&loose, "cg_iterations_total") < count(&small, "cg_iterations_total"),
        "at 1e-4: {loose}, at 1e-12: {small}"
    );
    assert_eq!(small["cg_max_iter"].as_u64(), Some(100), "{small}");
    // A cap the solves cannot meet fails the case, naming it, with advice the bench takes.
    // On the GPU too, where the solves' failure record is read as training reads it. The
    // grid goes on past the failed case: BPTT's row is in the report beside the failure.
    let gru = "--cell gru --inversion jacobian --steps 12 --hidden 9 --batch 3";
    for on in ["cpu", "gpu"] {
        let side = if on == "cpu" { "the CPU" } else { "the GPU" };
        let case = format!("timing gru tp-jacobian at T = 12, d = 9, B = 3, r = 0.01 on {side}");
        let report = fails(
            &format!("--backend {on} {gru} --reg 0.01 --cg-max-iter 1"),
            &[
                "1 case(s) failed",
                &case,
                "did not converge",
                "raise --cg-max-iter",
            ],
        );
        let rows = report["measurements"].as_array().unwrap();
        assert!(rows.iter().all(|r| r["method"] == "bp"), "{report}");
        assert!(!rows.is_empty(), "{report}");
        let failed = report["failed"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{report}");
        let failure = failed[0].as_str().unwrap();
        assert!(
            failure.contains(&case) && failure.contains("--cg-max-iter"),
            "{report}"
        );
        assert!(
            !failure.contains("Hyper::"),
            "in the command line's words: {report}"
        );
    }
    // The crossover study goes on past a failed size too, and the command fails naming it.
    let report = fails(
        "--backend cpu --cell tanh --steps 4 --hidden 5 --batch 2 --crossover \
         --crossover-steps 4,5 --crossover-batch 2 --crossover-hidden 6 --reg 1e-6 \
         --cg-max-iter 1",
        &[
            "3 case(s) failed",
            "timing the crossover at T = 4, d = 6, B = 2 on the CPU",
            "timing the crossover at T = 5, d = 6, B = 2 on the CPU",
        ],
    );
    assert_eq!(
        report["crossover"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        report["failed"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    // At r = 0.25 the tanh RNN's closed-form targets blow W up in the warm-up iteration
    // (‖W‖_F 11.5 → 7.5e12), and the next solve for P fails: the error names the case.
    fails(
        "--backend cpu --cell tanh --steps 200 --hidden 100 --batch 2 --reg 0.25",
        &[
            "timing tanh tp at T = 200, d = 100, B = 2, r = 0.25 on the CPU",
            "did not converge",
        ],
    );
    let refused = [
        ("--reg", "0"),
        ("--reg", "-1"),
        ("--reg", "nan"),
        ("--reg", "inf"),
        ("--cg-tol", "0"),
        ("--cg-tol", "-1"),
        ("--cg-tol", "nan"),
        ("--cg-tol", "inf"),
        ("--cg-max-iter", "0"),
    ];
    for (flag, bad) in refused {
        let out = cli_support::tpri(&["bench", "--backend", "cpu", "--reps", "1", flag, bad]);
        assert!(!out.status.success(), "{flag} {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{flag}: ")) && !err.contains("Hyper::"),
            "{flag} {bad}: {err}"
        );
    }
}

/// `tpri bench --reps 1 ARGS --json …` (ARGS split at spaces) fails, its error holding
/// every one of `needles`; the report it wrote of the cases that did not fail.
fn fails(args: &str, needles: &[&str]) -> Value {
    let json = scratch("fails").join("bench.json");
    let mut all = vec!["bench", "--reps", "1", "--json", json.to_str().unwrap()];
    all.extend(args.split(' '));
    let out = cli_support::tpri(&all);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args}: {err}");
    for w in needles {
        assert!(err.contains(w), "{args}: {w}: {err}");
    }
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}
