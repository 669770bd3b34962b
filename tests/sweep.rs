//! `tpri sweep`: spec parsing and expansion, a local sweep end to end (results.csv,
//! search.csv, figures), resuming (finished runs skipped, an interrupted one resumed), a
//! failed run recorded without stopping the sweep, and the Slurm engine's job script run
//! task by task behind a stand-in `sbatch` (tests/slurm/run.sh runs it on a real Slurm).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod cli_support;

use cli_support::{scratch, tpri};
use tpri::sweep::{expand, Manifest, Spec, Status};

/// A tiny TP-RI run on temporal order (T = 12, d = 8, 20 iterations): tens of ms.
const BASE: &str =
    "backend = \"cpu\"\nset = { task = { name = \"temporal-order\", seq_len = 12 }, \
    hidden = 8, batch_size = 4, eval_size = 16, iterations = 20, eval_every = 5, log_every = 5, \
    checkpoint_every = 5, hyper.tp.lr_target = 0.1 }\n";

/// Writes `BASE` + `rest` to DIR/NAME.
fn write_spec(dir: &Path, name: &str, rest: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{BASE}{rest}")).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    tpri(args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed:\n{}", text(&o));
    text(&o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// results.csv as rows of (column → value), in order.
fn results(dir: &Path, file: &str) -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            // The error column (last) may hold commas: split into the header's count.
            let fields: Vec<&str> = l.splitn(header.len(), ',').collect();
            let unquote = |f: &str| match f.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
                Some(inner) => inner.replace("\"\"", "\""),
                None => f.to_owned(),
            };
            header
                .iter()
                .cloned()
                .zip(fields.iter().map(|f| unquote(f)))
                .collect()
        })
        .collect()
}

fn field<'a>(row: &'a [(String, String)], key: &str) -> &'a str {
    &row.iter().find(|(k, _)| k == key).unwrap().1
}

fn manifest(dir: &Path) -> Manifest {
    Manifest::load(dir).unwrap().unwrap()
}

/// DIR/evaluations.csv against every run's log.csv and alignment.csv: a row per
/// evaluation with the same values; DIR/evaluations.md: a row per cell whose entries are
/// its seeds' held-out accuracies (in percent) at each column's iteration, `·` where a
/// seed has none there.
fn assert_evaluations(out: &Path) {
    let m = manifest(out);
    let evals = results(out, "evaluations.csv");
    let num = |v: &str| v.parse::<f64>().ok();
    let rows_of = |dir: &Path, file: &str| {
        if dir.join(file).exists() {
            results(dir, file)
        } else {
            Vec::new()
        }
    };
    for run in &m.runs {
        let dir = out.join("runs").join(&run.name);
        let (log, cos) = (rows_of(&dir, "log.csv"), rows_of(&dir, "alignment.csv"));
        let want: Vec<_> = log
            .iter()
            .filter(|r| !field(r, "eval_loss").is_empty())
            .collect();
        let got: Vec<_> = evals
            .iter()
            .filter(|r| field(r, "name") == run.name)
            .collect();
        assert_eq!(got.len(), want.len(), "{}: {got:?}", run.name);
        for (g, w) in got.iter().zip(want) {
            let it = field(w, "iteration");
            assert_eq!(field(g, "iteration"), it);
            assert_eq!(field(g, "seed"), run.seed.to_string());
            assert_eq!(field(g, "status"), run.status.name());
            for key in ["eval_loss", "eval_accuracy"] {
                assert_eq!(num(field(g, key)), num(field(w, key)), "{} {key}", run.name);
            }
            let c = cos
                .iter()
                .find(|c| field(c, "iteration") == it)
                .and_then(|c| num(field(c, "cosine")));
            assert_eq!(num(field(g, "grad_cosine")), c, "{} at {it}", run.name);
        }
    }
    let md = std::fs::read_to_string(out.join("evaluations.md")).unwrap();
    let mut lines = md.lines().filter(|l| l.starts_with('|'));
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(lines.next().unwrap());
    assert_eq!(header[0], "cell");
    let mut seeds: Vec<u64> = m.runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let rows: Vec<Vec<String>> = lines.skip(1).map(cells).collect();
    let mut cell_names: Vec<String> = m
        .runs
        .iter()
        .map(|r| r.name.rsplit_once("_seed=").unwrap().0.replace('_', " "))
        .collect();
    cell_names.dedup();
    assert_eq!(rows.len(), cell_names.len(), "{md}");
    for (row, cell) in rows.iter().zip(&cell_names) {
        assert_eq!(&row[0], cell, "{md}");
        for (iteration, entry) in header[1..].iter().zip(&row[1..]) {
            let want: Vec<String> = seeds
                .iter()
                .map(|seed| {
                    let name = format!("{}_seed={seed}", cell.replace(' ', "_"));
                    evals
                        .iter()
                        .find(|r| field(r, "name") == name && field(r, "iteration") == iteration)
                        .and_then(|r| num(field(r, "eval_accuracy")))
                        .map_or("·".to_owned(), |a| format!("{:.1}", 100.0 * a))
                })
                .collect();
            assert_eq!(entry, &want.join(", "), "{cell} at {iteration}: {md}");
        }
    }
}

#[test]
fn specs_expand_into_validated_runs() {
    let spec = Spec::parse(&format!(
        "{BASE}seeds = [1, 2, 3]\n[axes]\n\"hyper.opt.lr\" = {{ log = [1e-3, 1e-1], points = 3 }}\n\
         hyper.method = [\"tp\", \"bp\"]\nhyper.tp.cg_max_iter = {{ linear = [50, 100], points = 2 }}\n"
    ))
    .unwrap();
    let runs = expand(&spec).unwrap();
    assert_eq!(runs.len(), 3 * 2 * 2 * 3);
    // The first axis varies slowest, the seed fastest.
    let names: Vec<&str> = runs.iter().take(4).map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "lr=1e-3_method=tp_cg_max_iter=50_seed=1",
            "lr=1e-3_method=tp_cg_max_iter=50_seed=2",
            "lr=1e-3_method=tp_cg_max_iter=50_seed=3",
            "lr=1e-3_method=tp_cg_max_iter=100_seed=1",
        ]
    );
    let last = runs.last().unwrap();
    assert_eq!(last.name, "lr=0.1_method=bp_cg_max_iter=100_seed=3");
    assert_eq!(last.config.hyper.opt.lr, 0.1);
    assert_eq!(last.config.hyper.tp.cg_max_iter, 100);
    assert_eq!(last.config.seed, 3);
    assert_eq!(last.config.hyper.method, tpri::config::Method::Bp);
    assert_eq!(last.config.iterations, 20);
    assert_eq!(
        last.config.task,
        tpri::tasks::TaskSpec::TemporalOrder { seq_len: 12 }
    );
    // The config `tpri train --config` reads is the run's, exactly.
    let back: tpri::train::RunConfig = toml::from_str(&last.config_toml).unwrap();
    assert_eq!(back, last.config);

    // A new cell takes its inversion; a task of another kind starts afresh.
    let spec = Spec::parse(
        "[set]\niterations = 20\n[axes]\ncell = [\"tanh\", \"gru\"]\ntask = { values = [{ name = \"adding\", seq_len = 10 }, { name = \"temporal-order\", seq_len = 20 }], labels = [\"add\", \"order\"] }\n"
    )
    .unwrap();
    let runs = expand(&spec).unwrap();
    assert_eq!(runs[2].name, "cell=gru_task=add_seed=0");
    assert_eq!(
        runs[2].config.hyper.tp.inversion,
        tpri::config::Inversion::Jacobian
    );
    assert_eq!(
        runs[2].config.task,
        tpri::tasks::TaskSpec::Adding { seq_len: 10 }
    );
    assert_eq!(runs[2].config.hyper.loss, tpri::config::Loss::Mse);
}

#[test]
fn bad_keys_and_values_are_errors_naming_them_and_nothing_is_written() {
    let dir = scratch("sweep-bad");
    let out = dir.join("out");
    // [set] itself, as a table.
    let spec = dir.join("set.toml");
    std::fs::write(&spec, "[set]\nhidden = 8\nhyper.tp.regg = 2\n").unwrap();
    let o = run(&["sweep", s(&spec), "--out", s(&out)]);
    assert!(
        !o.status.success() && text(&o).contains("hyper.tp.regg = 2"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    for (rest, says) in [
        ("[axes]\n\"hyper.opt.lrr\" = [0.1]\n", "hyper.opt.lrr"),
        ("[figures]\nmetrics = [\"final-loss\"]\n", "final-loss"),
        ("[axes]\nhyper.opt.kind = [\"sgd\", \"adamw\"]\n", "adamw"),
        (
            "[axes]\n\"hyper.opt.lr\" = [0.1, -1]\n",
            "hyper.opt.lr = -1",
        ),
        ("[axes]\nhyper.tp.cg_max_iter = { log = [1, 2], points = 5 }\n", "cg_max_iter"),
        (
            "[axes]\n\"hyper.tp.reg\" = [1]\n[search]\naxis = \"lr\"\ncriterion = \"accuracy-auc\"\n",
            "lr",
        ),
        ("[axes]\niterations = [8]\n", "iterations"),
        (
            "[axes]\n\"hyper.tp.reg\" = [1]\n[figures]\nwinner = \"method\"\n",
            "method",
        ),
        ("reach = 1.5\n[axes]\n\"hyper.tp.reg\" = [1]\n", "reach is a held-out accuracy in (0, 1], not 1.5"),
        (
            "[axes]\n\"hyper.tp.reg\" = [1]\n[figures]\nmetrics = [\"reach-iteration\"]\n",
            "[figures] metrics names reach-iteration, but the spec sets no reach",
        ),
    ] {
        let spec = write_spec(&dir, "bad.toml", rest);
        let o = run(&["sweep", s(&spec), "--out", s(&out)]);
        assert!(!o.status.success(), "{rest} was accepted");
        assert!(text(&o).contains(says), "{rest}: {}", text(&o));
        assert!(!out.exists(), "{rest}: the sweep directory was written");
    }
}

/// A 2 × 2 grid (lr searched by final train loss, r) with 2 seeds.
const GRID: &str = r#"seeds = [1, 2]
reach = 0.4
[axes]
"hyper.opt.lr" = [0.05, 0.1]
"hyper.tp.reg" = [0.5, 1.0]
[search]
axis = "hyper.opt.lr"
criterion = "final-train-loss"
[figures]
heatmap = ["hyper.opt.lr", "hyper.tp.reg"]
"#;

/// Every grid the docs ship parses and expands into validated runs, with the counts the
/// docs give for the regime maps.
#[test]
fn the_shipped_sweep_specs_expand() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sweeps");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = Spec::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let runs = expand(&spec).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let name = path.file_name().unwrap().to_str().unwrap();
            match name {
                "regime-map.toml" => assert_eq!(runs.len(), 1512),
                "regime-map-cpu.toml" => assert_eq!(runs.len(), 378),
                _ => assert!(!runs.is_empty(), "{name}"),
            }
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} specs in {}", dir.display());
}

/// A per-method step, as the published regime map searches it: one axis named `step`
/// writes BPTT's lr and TP-RI's target step into `hyper`, and the method axis after it
/// overrides TP-RI's lr; without `key` on both, the overlap is refused.
#[test]
fn keyed_axes_let_a_later_axis_override_an_earlier_one() {
    let base = BASE.replace(", hyper.tp.lr_target = 0.1", "");
    let spec = Spec::parse(&format!(
        "{base}[axes]\nstep = {{ key = \"hyper\", values = [{{ opt = {{ lr = 1e-3 }}, tp = {{ lr_target = 1e-3 }} }}, \
         {{ opt = {{ lr = 1e-2 }}, tp = {{ lr_target = 1e-2 }} }}], labels = [\"small\", \"large\"] }}\n\
         method = {{ key = \"hyper\", values = [{{ method = \"tp\", opt = {{ lr = 0.1 }} }}, {{ method = \"bp\" }}], \
         labels = [\"tp\", \"bp\"] }}\n[search]\naxis = \"step\"\ncriterion = \"train-loss-auc\"\n"
    ))
    .unwrap();
    let runs = expand(&spec).unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "step=small_method=tp_seed=0",
            "step=small_method=bp_seed=0",
            "step=large_method=tp_seed=0",
            "step=large_method=bp_seed=0",
        ]
    );
    let (tp, bp) = (&runs[2].config.hyper, &runs[3].config.hyper);
    assert_eq!(
        (tp.method, tp.opt.lr, tp.tp.lr_target),
        (tpri::config::Method::Tp, 0.1, 1e-2)
    );
    assert_eq!((bp.method, bp.opt.lr), (tpri::config::Method::Bp, 1e-2));

    let refused = Spec::parse(&format!(
        "{BASE}[axes]\nstep = {{ key = \"hyper\", values = [{{ opt = {{ lr = 1e-3 }} }}] }}\n\
         hyper.method = [\"tp\", \"bp\"]\n"
    ))
    .unwrap_err();
    assert!(format!("{refused:#}").contains("overlap"), "{refused:#}");
}

#[test]
fn a_local_sweep_gathers_results_and_resumes_only_what_is_unfinished() {
    let dir = scratch("sweep-local");
    let spec = write_spec(&dir, "grid.toml", GRID);
    let out = dir.join("out");
    let said = ok(&["sweep", s(&spec), "--out", s(&out), "--jobs", "2"]);
    assert!(said.contains("8 runs: 8 finished, 0 failed"), "{said}");

    let rows = results(&out, "results.csv");
    assert_eq!(rows.len(), 8);
    let mut reached = 0;
    for row in &rows {
        assert_eq!(field(row, "status"), "finished");
        assert_eq!(field(row, "iterations"), "20");
        for key in [
            "final_train_loss",
            "final_eval_loss",
            "accuracy_auc",
            "train_loss_auc",
        ] {
            assert!(field(row, key).parse::<f64>().unwrap().is_finite(), "{key}");
        }
        // The best evaluation and the first to reach 0.4, as the run's log.csv has them.
        let evals: Vec<(String, f64)> =
            results(&out.join("runs").join(field(row, "name")), "log.csv")
                .iter()
                .filter(|r| !field(r, "eval_accuracy").is_empty())
                .map(|r| {
                    (
                        field(r, "iteration").to_owned(),
                        field(r, "eval_accuracy").parse().unwrap(),
                    )
                })
                .collect();
        assert_eq!(evals.len(), 5, "evaluations at 0, 5, 10, 15, 20");
        let best = evals.iter().map(|e| e.1).fold(f64::MIN, f64::max);
        assert_eq!(
            field(row, "best_eval_accuracy").parse::<f64>().unwrap(),
            best
        );
        let first = evals.iter().find(|e| e.1 >= 0.4).map(|e| e.0.as_str());
        assert_eq!(field(row, "reach_iteration"), first.unwrap_or(""));
        reached += usize::from(first.is_some());
        // Its line as it finished: the same final values, and the first at 0.4 if any.
        let name = field(row, "name");
        let line = said
            .lines()
            .find(|l| l.contains(&format!("] {name} finished (")))
            .unwrap_or_else(|| panic!("no line for {name} in {said}"));
        let loss: f64 = field(row, "final_train_loss").parse().unwrap();
        assert!(line.contains(&format!("train loss {loss:.4}")), "{line}");
        let at = first.map(|i| format!(", first ≥ 0.4 at {i}"));
        assert!(line.ends_with(at.as_deref().unwrap_or("")), "{line}");
        assert_eq!(line.contains("first ≥"), first.is_some(), "{line}");
    }
    assert!(
        reached > 0 && reached < 8,
        "{reached} of 8 runs reach 0.4: pick a mark that splits them"
    );
    // The summary printed: per cell, how many of its two seeds reached 0.4 and when.
    assert!(said.contains("held-out accuracy 0.4 reached by"), "{said}");
    for pair in rows.chunks(2) {
        let cell = field(&pair[0], "name")
            .trim_end_matches("_seed=1")
            .replace('_', " ");
        let mut at: Vec<u64> = pair
            .iter()
            .filter_map(|r| field(r, "reach_iteration").parse().ok())
            .collect();
        at.sort_unstable();
        let when = match at.as_slice() {
            [] => String::new(),
            [i] => format!(", at iteration {i}"),
            [lo, hi] => format!(
                ", at iterations {lo} to {hi}, median {}",
                (lo + hi) as f64 / 2.0
            ),
            _ => unreachable!("two seeds a cell"),
        };
        let want = format!("{cell} {} of 2 seeds{when}", at.len());
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            said.lines().any(|l| words(l) == want),
            "no line {want:?} in {said}"
        );
    }
    assert_eq!(field(&rows[0], "name"), "lr=0.05_reg=0.5_seed=1");
    assert_eq!(field(&rows[0], "hyper.opt.lr"), "0.05");
    // The final train loss is summary.json's (through log.csv, exactly).
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("runs/lr=0.05_reg=0.5_seed=1/summary.json")).unwrap(),
    )
    .unwrap();
    let loss: f64 = field(&rows[0], "final_train_loss").parse().unwrap();
    assert!((loss - summary["last"]["train_loss"].as_f64().unwrap()).abs() < 1e-12);

    // The search: per r, the lr of lower mean final train loss over the two seeds.
    let search = results(&out, "search.csv");
    assert_eq!(search.len(), 2);
    for (i, row) in search.iter().enumerate() {
        let mean = |lr_row: usize| {
            let a: f64 = field(&rows[lr_row], "final_train_loss").parse().unwrap();
            let b: f64 = field(&rows[lr_row + 1], "final_train_loss")
                .parse()
                .unwrap();
            (a + b) / 2.0
        };
        let (slow, fast) = (mean(2 * i), mean(4 + 2 * i));
        let best = if slow <= fast { "0.05" } else { "0.1" };
        assert_eq!(field(row, "best_hyper.opt.lr"), best);
        let got: f64 = field(row, "final_train_loss_mean").parse().unwrap();
        assert!((got - slow.min(fast)).abs() < 1e-12);
    }
    for f in [
        "heatmap_final-train-loss.png",
        "heatmap_final-train-loss.svg",
        "curves_train_loss.png",
        "curves_eval_accuracy.svg",
    ] {
        assert!(out.join("figures").join(f).exists(), "{f} missing");
    }
    let m = manifest(&out);
    assert!(m
        .runs
        .iter()
        .all(|r| r.attempts == 1 && r.status == Status::Finished));
    assert_evaluations(&out);

    // Without --resume, the directory is not reused.
    let o = run(&["sweep", s(&spec), "--out", s(&out)]);
    assert!(
        !o.status.success() && text(&o).contains("--resume"),
        "{}",
        text(&o)
    );

    // --resume with nothing to do starts nothing.
    let log_times = |names: &[&str]| -> Vec<std::time::SystemTime> {
        names
            .iter()
            .map(|n| {
                std::fs::metadata(out.join(format!("runs/{n}/log.csv")))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .collect()
    };
    let names: Vec<String> = m.runs.iter().map(|r| r.name.clone()).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = log_times(&all);
    ok(&["sweep", s(&spec), "--out", s(&out), "--resume"]);
    assert_eq!(log_times(&all), before);
    assert!(manifest(&out).runs.iter().all(|r| r.attempts == 1));

    // An interrupted run (10 of 20 iterations) is resumed; a removed one starts again.
    let (cut, gone) = (all[0], all[5]);
    let reference = results(&out, "results.csv");
    std::fs::remove_dir_all(out.join("runs").join(cut)).unwrap();
    std::fs::remove_dir_all(out.join("runs").join(gone)).unwrap();
    let config = out.join("configs").join(format!("{cut}.toml"));
    let run_dir = out.join("runs").join(cut);
    ok(&[
        "train",
        "--config",
        s(&config),
        "--run-dir",
        s(&run_dir),
        "--iterations",
        "10",
        "--backend",
        "cpu",
    ]);
    // While a local sweep holds DIR/sweep.lock (here: this live process), --collect
    // writes results.csv from a snapshot and leaves the manifest, which still says the
    // cut run finished, to that sweep.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = out.join("sweep.lock");
    std::fs::write(&lock, format!("{} {}\n", std::process::id(), host.trim())).unwrap();
    let kept = std::fs::read(out.join("manifest.json")).unwrap();
    let said = ok(&["sweep", "--collect", s(&out), "--no-figures"]);
    assert!(said.contains("manifest.json left as it is"), "{said}");
    assert!(said.contains("1 incomplete, 1 pending"), "{said}");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), kept);
    std::fs::remove_file(&lock).unwrap();
    // --collect tells an interrupted run from one a process runs now, and says how far
    // each got and, at its pace, how long the rest takes.
    let said = ok(&["sweep", "--collect", s(&out)]);
    assert!(
        said.contains("6 finished, 0 failed, 1 incomplete, 1 pending"),
        "{said}"
    );
    assert_ne!(std::fs::read(out.join("manifest.json")).unwrap(), kept);
    let line = format!("  {cut}: iteration 10 of 20 (50 %); about ");
    assert!(
        said.contains(&line) && said.contains("to go at its pace"),
        "{said}"
    );
    let live = tpri::run_dir::RunDir::open(&run_dir).unwrap();
    let said = ok(&["sweep", "--collect", s(&out)]);
    assert!(
        said.contains("1 incomplete (1 running now), 1 pending"),
        "{said}"
    );
    let line = format!("  {cut}: iteration 10 of 20 (50 %), running now; about ");
    assert!(said.contains(&line), "{said}");
    drop(live);
    let said = ok(&["sweep", s(&spec), "--out", s(&out), "--resume"]);
    assert!(said.contains("8 runs: 8 finished"), "{said}");
    let m = manifest(&out);
    for r in &m.runs {
        let want = if r.name == cut || r.name == gone {
            2
        } else {
            1
        };
        assert_eq!(r.attempts, want, "{}", r.name);
    }
    let log = std::fs::read_to_string(out.join("logs").join(format!("{cut}.log"))).unwrap();
    assert!(
        log.contains("--resume") && log.contains("resuming"),
        "{log}"
    );
    let without_time = |rows: Vec<Vec<(String, String)>>| -> Vec<Vec<(String, String)>> {
        rows.into_iter()
            .map(|r| r.into_iter().filter(|(k, _)| k != "wall_seconds").collect())
            .collect()
    };
    // CPU runs are deterministic and resume exactly: the same results as before.
    assert_eq!(
        without_time(results(&out, "results.csv")),
        without_time(reference)
    );
    assert_eq!(before.len(), 8);
    let after = log_times(&all);
    for (i, n) in all.iter().enumerate() {
        assert_eq!(after[i] == before[i], *n != cut && *n != gone, "{n}");
    }

    // A config another version of tpri wrote (the same settings in other words: here a
    // comment and another spelling of a number, and another hash recorded) resumes and is
    // rewritten; a stored config with other settings is refused, naming it.
    let name = all[1];
    let config = out.join("configs").join(format!("{name}.toml"));
    let original = std::fs::read_to_string(&config).unwrap();
    assert!(original.contains("hidden = 8\n"), "{original}");
    let reworded = original.replace("hidden = 8\n", "hidden = 0x8 # the same\n");
    std::fs::write(&config, format!("# another version\n{reworded}")).unwrap();
    let mut m = manifest(&out);
    m.runs[1].config_hash = "written-by-another-version".into();
    m.save(&out).unwrap();
    let said = ok(&["sweep", s(&spec), "--out", s(&out), "--resume"]);
    assert!(
        said.contains("1 runs' configs were written by another version"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
    assert_eq!(log_times(&all), after, "nothing ran again");
    std::fs::write(&config, original.replace("hidden = 8", "hidden = 9")).unwrap();
    let mut m = manifest(&out);
    m.runs[1].config_hash = "written-by-another-version".into();
    m.save(&out).unwrap();
    let o = run(&["sweep", s(&spec), "--out", s(&out), "--resume"]);
    assert!(
        !o.status.success() && text(&o).contains("has other settings") && text(&o).contains(name),
        "{}",
        text(&o)
    );
}

/// A spec that asks only for more iterations extends the sweep: finished runs continue
/// from their last checkpoint to the new length, and end where a run of that length from
/// the start ends (the CPU reference is deterministic).
#[test]
fn more_iterations_extend_finished_runs() {
    let dir = scratch("sweep-extend");
    let grid = "seeds = [1]\n[axes]\n\"hyper.opt.lr\" = [0.05]\n";
    let short = write_spec(&dir, "short.toml", grid);
    let long = dir.join("long.toml");
    std::fs::write(
        &long,
        format!(
            "{}{grid}",
            BASE.replace("iterations = 20", "iterations = 30")
        ),
    )
    .unwrap();
    let (out, fresh) = (dir.join("out"), dir.join("fresh"));
    ok(&["sweep", s(&short), "--out", s(&out), "--no-figures"]);
    assert_eq!(field(&results(&out, "results.csv")[0], "iterations"), "20");
    let said = ok(&[
        "sweep",
        s(&long),
        "--out",
        s(&out),
        "--resume",
        "--no-figures",
    ]);
    assert!(said.contains("1 runs get more iterations"), "{said}");
    ok(&["sweep", s(&long), "--out", s(&fresh), "--no-figures"]);
    let (extended, whole) = (
        &results(&out, "results.csv")[0],
        &results(&fresh, "results.csv")[0],
    );
    assert_eq!(field(extended, "status"), "finished");
    assert_eq!(field(extended, "iterations"), "30");
    for key in ["final_train_loss", "final_eval_loss", "accuracy_auc"] {
        assert_eq!(field(extended, key), field(whole, key), "{key}");
    }
    // Fewer iterations than a run already has is another setting, refused.
    let o = run(&["sweep", s(&short), "--out", s(&out), "--resume"]);
    assert!(
        !o.status.success() && text(&o).contains("has other settings"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_failed_run_is_recorded_and_the_others_still_run() {
    let dir = scratch("sweep-fail");
    // lr = 10^6 diverges at once; it comes first, and the sweep goes on.
    let spec = write_spec(
        &dir,
        "fail.toml",
        "seeds = [1]\n[axes]\n\"hyper.opt.lr\" = [1e6, 0.05]\n",
    );
    let out = dir.join("out");
    let o = run(&["sweep", s(&spec), "--out", s(&out), "--no-figures"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("1 of 2 runs failed"), "{}", text(&o));
    let rows = results(&out, "results.csv");
    assert_eq!(field(&rows[0], "status"), "failed");
    assert!(field(&rows[0], "error").starts_with("error: "), "{rows:?}");
    assert_eq!(field(&rows[0], "final_train_loss"), "");
    // What it logged before it diverged still shows: its best evaluation.
    let log = results(&out.join("runs").join(field(&rows[0], "name")), "log.csv");
    let best = log
        .iter()
        .filter_map(|r| field(r, "eval_accuracy").parse::<f64>().ok())
        .fold(f64::MIN, f64::max);
    assert!(best > 0.0);
    assert_eq!(
        field(&rows[0], "best_eval_accuracy")
            .parse::<f64>()
            .unwrap(),
        best
    );
    assert_eq!(field(&rows[1], "status"), "finished");
    let m = manifest(&out);
    assert!(m.runs[0].error.as_deref().unwrap().starts_with("error: "));
    // evaluations.md shows the failed run's evaluations up to where it stopped, then `·`.
    assert_evaluations(&out);
    let md = std::fs::read_to_string(out.join("evaluations.md")).unwrap();
    assert!(md.contains('·'), "{md}");

    // A sweep another live process holds (pid 1, this host) is refused; a stale lock is
    // taken over.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let lock = out.join("sweep.lock");
    std::fs::write(&lock, format!("1 {}", host.trim())).unwrap();
    let o = run(&[
        "sweep",
        s(&spec),
        "--out",
        s(&out),
        "--resume",
        "--retry-failed",
    ]);
    assert!(
        text(&o).contains("another tpri sweep (pid 1"),
        "{}",
        text(&o)
    );
    std::fs::write(&lock, format!("999999999 {}", host.trim())).unwrap();

    // --resume leaves failed runs alone; --retry-failed runs them again.
    let o = run(&[
        "sweep",
        s(&spec),
        "--out",
        s(&out),
        "--resume",
        "--no-figures",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(manifest(&out).runs[0].attempts, 1);
    let o = run(&[
        "sweep",
        s(&spec),
        "--out",
        s(&out),
        "--resume",
        "--retry-failed",
        "--no-figures",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let m = manifest(&out);
    assert_eq!((m.runs[0].attempts, m.runs[1].attempts), (2, 1));
    assert!(
        !out.join("sweep.lock").exists(),
        "the lock outlived the sweep"
    );
}

/// A directory with stand-ins for `sbatch` (records its arguments, prints a job id) and
/// `squeue` (lists job 4242 while the file BUSY exists next to it).
fn fake_slurm(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let write = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    };
    let args = bin.join("sbatch.args");
    write(
        "sbatch",
        &format!("echo \"$@\" >> '{}'\necho '4242;cluster'", args.display()),
    );
    write(
        "squeue",
        &format!(
            "[ -f '{}' ] && echo 4242\nexit 0",
            bin.join("BUSY").display()
        ),
    );
    bin
}

fn with_path(bin: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(env!("CARGO_BIN_EXE_tpri"))
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn the_slurm_engine_submits_one_array_whose_tasks_run_the_runs() {
    let dir = scratch("sweep-slurm");
    let bin = fake_slurm(&dir);
    let spec = write_spec(
        &dir,
        "slurm.toml",
        "seeds = [1, 2]\n[axes]\n\"hyper.opt.lr\" = [0.05, 0.1]\n[slurm]\ntime = \"00:05:00\"\nsbatch_args = [\"--qos=test\"]\n",
    );
    let out = dir.join("out");
    let o = with_path(
        &bin,
        &[
            "sweep",
            s(&spec),
            "--out",
            s(&out),
            "--engine",
            "slurm",
            "--cpus-per-task",
            "2",
            "--sbatch-arg=--account=abc",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("submitted job 4242"), "{}", text(&o));
    let args = std::fs::read_to_string(bin.join("sbatch.args")).unwrap();
    let script = std::fs::canonicalize(&out).unwrap().join("slurm/job.sh");
    let tasks = std::fs::canonicalize(&out)
        .unwrap()
        .join("slurm/tasks-1.txt");
    assert_eq!(
        args.trim(),
        format!(
            "--parsable --array=0-3 --qos=test --account=abc {} {}",
            script.display(),
            tasks.display()
        )
    );
    let job = std::fs::read_to_string(&script).unwrap();
    for line in [
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=00:05:00",
        "--backend 'cpu'",
    ] {
        assert!(job.contains(line), "job.sh lacks {line}:\n{job}");
    }
    assert_eq!(std::fs::read_to_string(&tasks).unwrap().lines().count(), 4);
    let m = manifest(&out);
    assert_eq!(m.submissions.len(), 1);
    assert!(m
        .runs
        .iter()
        .all(|r| r.attempts == 1 && r.status == Status::Pending));

    // While the array is queued, neither a resubmission nor the local engine runs.
    std::fs::write(bin.join("BUSY"), "").unwrap();
    for engine in ["slurm", "local"] {
        let o = with_path(
            &bin,
            &[
                "sweep",
                s(&spec),
                "--out",
                s(&out),
                "--engine",
                engine,
                "--resume",
            ],
        );
        assert!(
            !o.status.success() && text(&o).contains("still queued"),
            "{engine}: {}",
            text(&o)
        );
    }
    std::fs::remove_file(bin.join("BUSY")).unwrap();

    // Slurm runs array task i as `job.sh TASKS` with SLURM_ARRAY_TASK_ID=i: do the same,
    // leaving task 3 out.
    let tpri_dir = Path::new(env!("CARGO_BIN_EXE_tpri")).parent().unwrap();
    for i in 0..3 {
        let status = Command::new("bash")
            .arg(&script)
            .arg(&tasks)
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .env("SLURM_ARRAY_JOB_ID", "4242")
            .env("PATH", format!("{}:/usr/bin:/bin", tpri_dir.display()))
            .status()
            .unwrap();
        assert!(status.success(), "array task {i}");
    }
    let o = with_path(&bin, &["sweep", "--collect", s(&out)]);
    assert!(
        text(&o).contains("4 runs: 3 finished, 0 failed, 0 incomplete, 1 pending"),
        "{}",
        text(&o)
    );

    // A resubmission holds only the run left out.
    let o = with_path(
        &bin,
        &[
            "sweep",
            s(&spec),
            "--out",
            s(&out),
            "--engine",
            "slurm",
            "--resume",
        ],
    );
    assert!(text(&o).contains("1 runs submitted"), "{}", text(&o));
    let tasks2 = out.join("slurm/tasks-2.txt");
    let line = std::fs::read_to_string(&tasks2).unwrap();
    assert_eq!(line, format!("{} 20\n", m.runs[3].name));
    let status = Command::new("bash")
        .arg(&script)
        .arg(&tasks2)
        .env("SLURM_ARRAY_TASK_ID", "0")
        .env("SLURM_ARRAY_JOB_ID", "4243")
        .status()
        .unwrap();
    assert!(status.success());
    ok(&["sweep", "--collect", s(&out)]);

    // The same sweep run locally gives the same results.
    let local = dir.join("local");
    ok(&["sweep", s(&spec), "--out", s(&local), "--no-figures"]);
    let strip = |rows: Vec<Vec<(String, String)>>| -> Vec<Vec<(String, String)>> {
        rows.into_iter()
            .map(|r| r.into_iter().filter(|(k, _)| k != "wall_seconds").collect())
            .collect()
    };
    assert_eq!(
        strip(results(&out, "results.csv")),
        strip(results(&local, "results.csv"))
    );
}

/// With `alignment = true` in every run's settings, results.csv's `mean_cosine` is the
/// mean of each run's alignment.csv cosines over the run (trapezoids): near 1 where r is
/// so large that TP-RI's gradient is BPTT's scaled (docs/ALGORITHM.md §10), and below it
/// at r = 3; and the figures draw them.
#[test]
fn a_sweep_gives_the_mean_cosine_of_runs_that_measure_it() {
    let dir = scratch("sweep-cosine");
    let spec = dir.join("cosine.toml");
    std::fs::write(
        &spec,
        BASE.replace(
            "hyper.tp.lr_target = 0.1 }",
            "hyper.tp.lr_target = 0.1, hyper.opt.lr = 0.01, alignment = true }",
        ) + "seeds = [1]\n[axes]\n\"hyper.tp.reg\" = [3, 1e9]\n",
    )
    .unwrap();
    let out = dir.join("out");
    let said = ok(&["sweep", s(&spec), "--out", s(&out)]);
    let rows = results(&out, "results.csv");
    for row in &rows {
        let shown = format!(
            "mean cosine with BPTT's gradient {:.4}",
            field(row, "mean_cosine").parse::<f64>().unwrap()
        );
        assert!(said.contains(&shown), "{shown} not in {said}");
    }
    let mean: Vec<f64> = rows
        .iter()
        .map(|row| {
            let points: Vec<(f64, f64)> =
                results(&out.join("runs").join(field(row, "name")), "alignment.csv")
                    .iter()
                    .map(|r| {
                        let at = |k| field(r, k).parse::<f64>().unwrap();
                        (at("iteration"), at("cosine"))
                    })
                    .collect();
            assert_eq!(points.len(), 5, "evaluations at 0, 5, 10, 15, 20");
            let area: f64 = points
                .windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
                .sum();
            let want = area / 20.0;
            let got: f64 = field(row, "mean_cosine").parse().unwrap();
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "{got} against {want}"
            );
            got
        })
        .collect();
    assert!(mean[0] < 0.999 && 1.0 - mean[1] < 1e-6, "{mean:?}");
    assert_evaluations(&out);
    // Its curves over iterations, one per r, beside the loss and accuracy curves.
    let figures = out.join("figures");
    assert!(figures.join("curves_grad_cosine.svg").is_file());
    let svg = std::fs::read_to_string(figures.join("curves_grad_cosine.svg")).unwrap();
    assert!(svg.contains("1e9") && svg.contains("grad cosine"), "{svg}");
}
