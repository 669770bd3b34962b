//! Figures: both formats are written with the right content, degenerate data
//! does not panic, and write failures name the file.

use std::fs;
use std::path::{Path, PathBuf};

use tpri::plot::{heat_map, heat_map_with, line_chart, HeatAxes, Series};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Heat map input: `(iteration, value per time step)`.
type Rows = Vec<(f64, Vec<f64>)>;

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let name = format!("tpri-plot-{}-{test}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn stem(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Checks both files of `stem` and returns the SVG text.
fn read_outputs(stem: &Path) -> String {
    let png = fs::read(stem.with_extension("png")).unwrap();
    assert!(png.len() > 1000, "PNG of {} bytes", png.len());
    assert!(png.starts_with(PNG_MAGIC));
    let svg = fs::read_to_string(stem.with_extension("svg")).unwrap();
    assert!(svg.contains("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    svg
}

fn curve(label: &str, f: impl Fn(f64) -> f64) -> Series {
    let points = (0..200).map(|i| (i as f64, f(i as f64))).collect();
    Series {
        label: label.into(),
        points,
    }
}

fn norms(iterations: usize, steps: usize) -> Rows {
    (0..iterations)
        .map(|i| {
            let decay = (-(i as f64) / 100.0).exp();
            let row = (1..=steps).map(|t| decay * (t as f64 / 50.0).exp() / 1e4);
            ((i * 10) as f64, row.collect())
        })
        .collect()
}

#[test]
fn line_chart_writes_labelled_svg_and_png() {
    let dir = TempDir::new("line");
    let series = [
        curve("TP-RI (γ = 0.1)", |x| 2.3 * (-x / 50.0).exp() + 0.1),
        curve("BPTT & <SGD>", |x| 2.3 * (-x / 90.0).exp() + 0.2),
    ];
    for log_y in [false, true] {
        let stem = dir.stem(&format!("loss-{log_y}"));
        line_chart(&stem, "Training loss", "iteration", "loss", &series, log_y).unwrap();
        let svg = read_outputs(&stem);
        for text in ["Training loss", "iteration", "loss", "TP-RI (γ = 0.1)"] {
            assert!(svg.contains(text), "{text:?} missing from the SVG");
        }
        assert!(svg.contains("BPTT &amp; &lt;SGD&gt;"), "label not escaped");
    }
}

#[test]
fn line_chart_survives_degenerate_data() {
    let dir = TempDir::new("line-edge");
    let series = |points: Vec<(f64, f64)>| {
        vec![Series {
            label: "s".into(),
            points,
        }]
    };
    let cases = [
        ("no-series", vec![]),
        ("no-points", series(vec![])),
        ("one-point", series(vec![(3.0, 0.5)])),
        ("constant", series(vec![(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)])),
        ("same-x", series(vec![(5.0, 1.0), (5.0, 2.0)])),
        ("huge", series(vec![(0.0, -1e300), (1e300, 1e300)])),
        (
            "non-finite",
            series(vec![
                (0.0, f64::NAN),
                (f64::INFINITY, 1.0),
                (2.0, 3.0),
                (3.0, f64::NEG_INFINITY),
            ]),
        ),
        (
            "zeros",
            series(vec![(0.0, 0.0), (1.0, -1.0), (2.0, 1e-3), (3.0, 0.0)]),
        ),
        ("all-non-positive", series(vec![(0.0, 0.0), (1.0, -2.0)])),
        ("tiny", series(vec![(0.0, 1e-320), (1.0, 1e-300)])),
    ];
    for (name, series) in cases {
        for log_y in [false, true] {
            let stem = dir.stem(&format!("{name}-{log_y}"));
            line_chart(&stem, name, "x", "y", &series, log_y).unwrap();
            read_outputs(&stem);
        }
    }
}

#[test]
fn heat_map_of_784_steps_writes_compact_svg_and_png() {
    let dir = TempDir::new("heat");
    let stem = dir.stem("norms");
    heat_map(&stem, "Target displacement norms", &norms(300, 784), true).unwrap();
    let svg = read_outputs(&stem);
    assert!(svg.contains("Target displacement norms"));
    assert!(svg.contains("time step"));
    assert!(svg.len() < 2_000_000, "SVG of {} bytes", svg.len());
}

#[test]
fn heat_map_with_parameter_axes_labels_axes_bar_and_cells() {
    let dir = TempDir::new("heat-axes");
    let stem = dir.stem("regimes");
    let hidden = [128.0, 16.0, 64.0];
    let axes = HeatAxes {
        x_label: "sequence length T",
        y_label: "hidden size d",
        colour_label: "TP / BP time",
        y_values: Some(&hidden),
        annotate: true,
        names: &[],
    };
    let rows = vec![
        (8.0, vec![3.25, 1.5, 2.0]),
        (32.0, vec![1.75, 0.5, f64::NAN]),
    ];
    heat_map_with(&stem, "Regime map", &rows, false, &axes).unwrap();
    let svg = read_outputs(&stem);
    for text in [
        "Regime map",
        "sequence length T",
        "hidden size d",
        "TP / BP time",
    ] {
        assert!(svg.contains(text), "missing {text}");
    }
    assert!(!svg.contains("time step") && !svg.contains("iteration"));
    for value in ["3.25", "1.50", "0.50"] {
        assert!(
            svg.lines().any(|line| line.trim() == value),
            "cell value {value} not written"
        );
    }
    // Named cells (a winner map): each cell's value is an index into the names.
    let names = ["tp".to_string(), "bp".to_string()];
    let named = HeatAxes {
        names: &names,
        ..axes
    };
    let stem = dir.stem("winner");
    let winners = vec![(8.0, vec![1.0, 0.0, 1.0]), (32.0, vec![1.0, 1.0, f64::NAN])];
    heat_map_with(&stem, "winner", &winners, false, &named).unwrap();
    let svg = read_outputs(&stem);
    let count = |name: &str| svg.lines().filter(|l| l.trim() == name).count();
    assert_eq!(
        (count("tp"), count("bp")),
        (1, 4),
        "cells named by their winners"
    );
    assert!(
        !svg.lines().any(|l| l.trim() == "1.00"),
        "no numbers in named cells"
    );
    // The default axes are those of `heat_map`.
    assert_eq!(HeatAxes::TIME_STEPS.x_label, "iteration");
    assert_eq!(HeatAxes::TIME_STEPS.y_label, "time step");
    // Degenerate positions do not panic.
    let odd = [f64::NAN, 5.0];
    for y_values in [Some(&[][..]), Some(&odd[..]), Some(&[1.0][..])] {
        let axes = HeatAxes { y_values, ..axes };
        let stem = dir.stem(&format!("odd-{}", y_values.map_or(0, <[f64]>::len)));
        heat_map_with(&stem, "t", &rows, true, &axes).unwrap();
        read_outputs(&stem);
    }
}

#[test]
fn heat_map_survives_degenerate_data() {
    let dir = TempDir::new("heat-edge");
    let cases: [(&str, Rows); 10] = [
        ("no-rows", vec![]),
        ("empty-rows", vec![(0.0, vec![]), (1.0, vec![])]),
        ("one-cell", vec![(7.0, vec![2.0])]),
        ("huge", vec![(-1e300, vec![-1e300]), (1e300, vec![1e300])]),
        ("constant", vec![(0.0, vec![1.0; 5]), (1.0, vec![1.0; 5])]),
        (
            "zeros",
            vec![(0.0, vec![0.0, -1.0, 3.0]), (1.0, vec![0.0; 3])],
        ),
        ("all-zero", vec![(0.0, vec![0.0; 4]), (1.0, vec![0.0; 4])]),
        ("ragged", vec![(0.0, vec![1.0]), (5.0, vec![1.0, 2.0, 3.0])]),
        (
            "unsorted",
            vec![
                (9.0, vec![1.0, 2.0]),
                (2.0, vec![3.0, 4.0]),
                (2.0, vec![5.0, 6.0]),
            ],
        ),
        (
            "non-finite",
            vec![
                (f64::NAN, vec![1.0]),
                (1.0, vec![f64::NAN, f64::INFINITY, 1e-300, 1e300]),
            ],
        ),
    ];
    for (name, rows) in cases {
        for log_color in [false, true] {
            let stem = dir.stem(&format!("{name}-{log_color}"));
            heat_map(&stem, name, &rows, log_color).unwrap();
            read_outputs(&stem);
        }
    }
}

#[test]
fn dots_in_the_stem_are_kept() {
    let dir = TempDir::new("dots");
    let stem = dir.stem("run.v1");
    line_chart(&stem, "t", "x", "y", &[curve("a", |x| x)], false).unwrap();
    assert!(dir.0.join("run.v1.svg").is_file());
    assert!(dir.0.join("run.v1.png").is_file());
}

#[test]
fn writing_into_a_missing_directory_fails_naming_the_file() {
    let dir = TempDir::new("missing");
    let stem = dir.0.join("no-such-dir").join("fig");
    let errors = [
        line_chart(&stem, "t", "x", "y", &[curve("a", |x| x)], false).unwrap_err(),
        heat_map(&stem, "t", &norms(3, 4), false).unwrap_err(),
    ];
    for error in errors {
        let message = format!("{error:#}");
        assert!(message.contains(&stem.display().to_string()), "{message}");
    }
}

/// A run directory holding only a log.csv with these (iteration, train loss, eval
/// accuracy) rows.
fn run_with_log(root: &Path, name: &str, rows: &[(u64, f64, f64)]) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let mut text = format!("{}\n", tpri::run_dir::LOG_HEADER);
    for (it, loss, acc) in rows {
        text += &format!("{it},0.1,{loss},{loss},{acc},,,,,,\n");
    }
    fs::write(dir.join("log.csv"), text).unwrap();
    dir
}

#[test]
fn pooled_gathers_the_runs_values_at_each_iteration() {
    let a = [(0.0, 1.0), (10.0, 2.0), (20.0, f64::NAN)];
    let b = [(0.0, 3.0), (20.0, 5.0), (30.0, 7.0)];
    let got = tpri::figures::pooled([&a[..], &b[..]]);
    let want = vec![
        (0.0, vec![1.0, 3.0]),
        (10.0, vec![2.0]),
        (20.0, vec![5.0]),
        (30.0, vec![7.0]),
    ];
    assert_eq!(got, want);
}

#[test]
fn groups_of_runs_are_drawn_as_their_mean_and_band() {
    let dir = TempDir::new("groups");
    let seeds = vec![
        run_with_log(&dir.0, "tp-1", &[(0, 2.0, 0.1), (100, 1.0, 0.5)]),
        run_with_log(&dir.0, "tp-2", &[(0, 2.2, 0.1), (100, 1.4, 0.7)]),
    ];
    let alone = vec![run_with_log(
        &dir.0,
        "bp",
        &[(0, 2.1, 0.1), (100, 1.9, 0.2)],
    )];
    let out = dir.stem("figures");
    let groups = [("TP-RI".to_string(), seeds), ("BPTT".to_string(), alone)];
    let written = tpri::figures::draw_groups(&groups, &out, false).unwrap();
    // No step_norms.csv: no heat maps, only the three charts in both formats.
    assert_eq!(written.len(), 6, "{written:?}");
    let svg = read_outputs(&out.join("eval_accuracy"));
    for text in [
        "mean, min to max over runs",
        "TP-RI (2 runs)",
        "BPTT (1 run)",
    ] {
        assert!(svg.contains(text), "{text:?} missing from the SVG");
    }
    // Runs of one curve each keep the plain chart.
    let single = [("BPTT".to_string(), vec![dir.0.join("bp")])];
    tpri::figures::draw_groups(&single, &dir.stem("one"), false).unwrap();
    let svg = read_outputs(&dir.stem("one").join("eval_accuracy"));
    assert!(!svg.contains("over runs") && svg.contains("BPTT"));
}
