//! The sweep's figures (DIR/figures): heat maps of a metric over two axes (mean over
//! seeds), winner maps, the best value of a searched axis, a metric against one axis,
//! and training curves with a band over seeds.
//!
//! With a search, every cell of the other axes shows its best value of the searched
//! axis. Figures split by the axes they do not show (one file per combination, with the
//! combination in its name), at most `[figures] max_figures` of each kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::plot::{heat_map_with, HeatAxes};

use super::collect::{cell_stats, Choice, Outcome, Stat};
use super::expand::short_keys;
use super::manifest::{run_dir, Manifest};
use super::metric::Metric;
use super::spec::Axis;
use super::value::file_safe;

/// Draws the figures into DIR/figures; returns the files written and notes on what was
/// left out.
pub fn draw(
    dir: &Path,
    m: &Manifest,
    outcomes: &[Outcome],
    choices: Option<&[Choice]>,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let out = dir.join("figures");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let g = Grid::new(dir, m, outcomes, choices);
    let mut files = Vec::new();
    let mut notes = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let max = m.figures.max_figures.unwrap_or(60);
    let mut emit =
        |kind: &'static str, stem: PathBuf, draw: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
            let n = kinds.entry(kind).or_default();
            *n += 1;
            if *n > max {
                if *n == max + 1 {
                    notes.push(format!(
                    "{kind} figures beyond the first {max} were left out ([figures] max_figures)"
                ));
                }
                return Ok(());
            }
            draw(&stem)?;
            files.extend(["svg", "png"].map(|e| PathBuf::from(format!("{}.{e}", stem.display()))));
            Ok(())
        };
    let metrics = g.metrics();
    if let Some((x, y)) = g.heat_axes() {
        // A heat map over the searched axis itself shows every value, not the best.
        let raw = g.search.is_some_and(|s| s == x || s == y);
        let shown = [Some(x), Some(y), g.search];
        for panel in g.panels(&shown) {
            for &metric in &metrics {
                let stem = out.join(format!("heatmap_{}{}", metric.name(), g.suffix(&panel)));
                emit("heatmap", stem, &|s| {
                    g.heatmap(s, (x, y), &panel, (metric, raw))
                })?;
            }
            if let Some(s) = g.search.filter(|&s| !raw && numeric(&m.axes[s])) {
                let stem = out.join(format!("best_{}{}", g.short[s], g.suffix(&panel)));
                emit("best-value", stem, &|f| g.best_map(f, (x, y), &panel, s))?;
            }
        }
        if let Some(w) = g.winner {
            for panel in g.panels(&[Some(x), Some(y), g.search, Some(w)]) {
                let stem = out.join(format!("winner{}", g.suffix(&panel)));
                emit("winner", stem, &|f| {
                    g.winner_map(f, (x, y), &panel, w, (metrics[0], raw))
                })?;
            }
        }
    } else if let Some(x) = g.profile_axis() {
        for panel in g.panels(&[Some(x), g.search, g.curves.filter(|&c| c != x)]) {
            for &metric in &metrics {
                let stem = out.join(format!("profile_{}{}", metric.name(), g.suffix(&panel)));
                emit("profile", stem, &|f| g.profile(f, x, &panel, metric))?;
            }
        }
    }
    // The cosine with BPTT's gradient where runs measured it (`alignment`).
    let aligned = m
        .runs
        .iter()
        .any(|r| run_dir(g.dir, &r.name).join("alignment.csv").is_file());
    let mut kinds = vec![("train_loss", true), ("eval_accuracy", false)];
    if aligned {
        kinds.push(("grad_cosine", false));
    }
    for panel in g.panels(&[g.curves, g.search]) {
        for &(what, log_y) in &kinds {
            let stem = out.join(format!("curves_{what}{}", g.suffix(&panel)));
            emit("curves", stem, &|f| g.curves(f, &panel, what, log_y))?;
        }
    }
    Ok((files, notes))
}

/// Whether every value of the axis is a number.
pub(super) fn numeric(axis: &Axis) -> bool {
    axis.values.iter().all(|v| v.is_integer() || v.is_float())
}

fn number(v: &toml::Value) -> f64 {
    v.as_float()
        .or(v.as_integer().map(|i| i as f64))
        .unwrap_or(f64::NAN)
}

/// One combination of the axes a figure does not show: (axis, value index) pairs.
pub(super) type Panel = Vec<(usize, usize)>;

/// The grid, its statistics and the axes' roles.
pub(super) struct Grid<'a> {
    pub(super) dir: &'a Path,
    pub(super) m: &'a Manifest,
    pub(super) short: Vec<String>,
    pub(super) search: Option<usize>,
    pub(super) winner: Option<usize>,
    pub(super) curves: Option<usize>,
    /// Cell with the searched axis at 0 → the cell it stands for (itself, or the best
    /// value's cell).
    pub(super) chosen: BTreeMap<Vec<usize>, Vec<usize>>,
    pub(super) stats: BTreeMap<Metric, BTreeMap<Vec<usize>, Stat>>,
    /// Run indices of each cell.
    pub(super) runs: BTreeMap<Vec<usize>, Vec<usize>>,
}

impl<'a> Grid<'a> {
    fn new(
        dir: &'a Path,
        m: &'a Manifest,
        outcomes: &[Outcome],
        choices: Option<&[Choice]>,
    ) -> Self {
        let index = |key: &str| m.axes.iter().position(|a| a.key == key);
        let search = m.search.as_ref().and_then(|s| index(&s.axis));
        let f = &m.figures;
        let winner = match &f.winner {
            Some(k) => index(k),
            None => index("hyper.method"),
        }
        .filter(|&w| Some(w) != search);
        let curves = match &f.curves {
            Some(k) => index(k),
            None => winner.or_else(|| (0..m.axes.len()).find(|&i| Some(i) != search)),
        };
        let mut runs: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        for (i, r) in m.runs.iter().enumerate() {
            runs.entry(r.cell.clone()).or_default().push(i);
        }
        let chosen = match (search, choices) {
            (Some(s), Some(choices)) => choices
                .iter()
                .filter(|c| c.best.is_some())
                .map(|c| {
                    let mut outer = c.cell.clone();
                    outer[s] = 0;
                    (outer, c.cell.clone())
                })
                .collect(),
            _ => runs.keys().map(|c| (c.clone(), c.clone())).collect(),
        };
        let stats = Metric::ALL
            .iter()
            .map(|&metric| (metric, cell_stats(m, outcomes, metric)))
            .collect();
        Self {
            dir,
            m,
            short: short_keys(&m.axes),
            search,
            winner,
            curves,
            chosen,
            stats,
            runs,
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        let f = &self.m.figures;
        f.metrics
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                vec![self
                    .m
                    .search
                    .as_ref()
                    .map_or(Metric::FinalTrainLoss, |s| s.criterion)]
            })
    }

    /// The axes that are neither searched nor the winner axis.
    fn free(&self) -> Vec<usize> {
        (0..self.m.axes.len())
            .filter(|&i| Some(i) != self.search && Some(i) != self.winner)
            .collect()
    }

    /// x and y of heat maps: as `[figures] heatmap` says, else the first two free axes.
    fn heat_axes(&self) -> Option<(usize, usize)> {
        let index = |key: &String| self.m.axes.iter().position(|a| &a.key == key);
        match &self.m.figures.heatmap {
            Some(h) => Some((index(&h[0])?, index(&h[1])?)),
            None => match self.free()[..] {
                [x, y, ..] => Some((x, y)),
                _ => None,
            },
        }
    }

    /// The x axis of metric-against-axis figures: the one free axis, if there is one.
    fn profile_axis(&self) -> Option<usize> {
        match self.free()[..] {
            [x] => Some(x),
            _ => None,
        }
    }

    /// Every combination of the axes not in `shown`.
    fn panels(&self, shown: &[Option<usize>]) -> Vec<Panel> {
        let rest: Vec<usize> = (0..self.m.axes.len())
            .filter(|i| !shown.contains(&Some(*i)))
            .collect();
        let mut out: Vec<Panel> = vec![Vec::new()];
        for &a in &rest {
            out = out
                .into_iter()
                .flat_map(|p| {
                    (0..self.m.axes[a].values.len()).map(move |v| {
                        let mut p = p.clone();
                        p.push((a, v));
                        p
                    })
                })
                .collect();
        }
        out
    }

    fn suffix(&self, panel: &Panel) -> String {
        panel
            .iter()
            .map(|&(a, v)| {
                format!(
                    "_{}={}",
                    file_safe(&self.short[a]),
                    file_safe(&self.m.axes[a].labels[v])
                )
            })
            .collect()
    }

    pub(super) fn describe(&self, panel: &Panel) -> String {
        let parts: Vec<String> = panel
            .iter()
            .map(|&(a, v)| format!("{} = {}", self.short[a], self.m.axes[a].labels[v]))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }

    /// The cell (searched axis at 0) with `panel` and `set` applied.
    pub(super) fn outer(&self, panel: &Panel, set: &[(usize, usize)]) -> Vec<usize> {
        let mut cell = vec![0; self.m.axes.len()];
        for &(a, v) in panel.iter().chain(set) {
            cell[a] = v;
        }
        cell
    }

    /// The statistics of `metric` in the cell `outer` stands for, if every seed has it.
    pub(super) fn stat(&self, metric: Metric, outer: &[usize]) -> Option<Stat> {
        self.stat_in(metric, outer, false)
    }

    /// [`Grid::stat`], or with `raw` of the cell `outer` itself (its searched value as
    /// given, not the best).
    fn stat_in(&self, metric: Metric, outer: &[usize], raw: bool) -> Option<Stat> {
        let cell = if raw { outer } else { self.chosen.get(outer)? };
        self.stats[&metric]
            .get(cell)
            .filter(|s| s.complete)
            .copied()
    }

    /// Positions of an axis's values and the axis description.
    pub(super) fn positions(&self, a: usize) -> (Vec<f64>, String) {
        let axis = &self.m.axes[a];
        if numeric(axis) {
            let v: Vec<f64> = axis.values.iter().map(number).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
            // Widths, lengths and rates are usually listed as ratios (16, 32, 64; 16, 56,
            // 196): a log axis spaces such cells evenly.
            if axis.log || (lo > 0.0 && hi / lo >= 4.0) {
                return (
                    v.iter().map(|x| x.log10()).collect(),
                    format!("log10 {}", axis.key),
                );
            }
            return (v, axis.key.clone());
        }
        let names: Vec<String> = axis
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{i} = {l}"))
            .collect();
        (
            (0..axis.values.len()).map(|i| i as f64).collect(),
            format!("{}: {}", axis.key, names.join(", ")),
        )
    }

    /// A heat map over x and y of `value(i, j)`; `(colour label, log colour, annotate)`,
    /// and with `names` each annotated cell named by its value as an index.
    fn heat(
        &self,
        stem: &Path,
        title: &str,
        (x, y): (usize, usize),
        value: &dyn Fn(usize, usize) -> f64,
        (colour, log, annotate): (&str, bool, bool),
        names: &[String],
    ) -> Result<()> {
        let (xs, x_label) = self.positions(x);
        let (ys, y_label) = self.positions(y);
        let rows: Vec<(f64, Vec<f64>)> = xs
            .iter()
            .enumerate()
            .map(|(i, &px)| (px, (0..ys.len()).map(|j| value(i, j)).collect()))
            .collect();
        let axes = HeatAxes {
            x_label: &x_label,
            y_label: &y_label,
            colour_label: colour,
            y_values: Some(&ys),
            annotate: annotate && xs.len() <= 12 && ys.len() <= 12,
            names,
        };
        heat_map_with(stem, title, &rows, log, &axes)
    }

    pub(super) fn seeds_text(&self) -> String {
        let mut t = format!("mean over {} seeds", self.m.seeds.len());
        if let Some(s) = self.search {
            t += &format!(", best {}", self.short[s]);
        }
        t
    }

    fn heatmap(
        &self,
        stem: &Path,
        xy: (usize, usize),
        panel: &Panel,
        (metric, raw): (Metric, bool),
    ) -> Result<()> {
        let value = |i: usize, j: usize| {
            self.stat_in(metric, &self.outer(panel, &[(xy.0, i), (xy.1, j)]), raw)
                .map_or(f64::NAN, |s| s.mean)
        };
        let title = format!(
            "{} ({}){}",
            metric.name(),
            self.seeds_text(),
            self.describe(panel)
        );
        self.heat(
            stem,
            &title,
            xy,
            &value,
            (metric.name(), metric.log_scale(), true),
            &[],
        )
    }

    fn best_map(&self, stem: &Path, xy: (usize, usize), panel: &Panel, s: usize) -> Result<()> {
        let axis = &self.m.axes[s];
        let value = |i: usize, j: usize| {
            self.chosen
                .get(&self.outer(panel, &[(xy.0, i), (xy.1, j)]))
                .map_or(f64::NAN, |cell| number(&axis.values[cell[s]]))
        };
        let title = format!(
            "best {} by {}{}",
            axis.key,
            self.m.search.as_ref().map_or("", |c| c.criterion.name()),
            self.describe(panel)
        );
        let log = axis.values.iter().all(|v| number(v) > 0.0);
        self.heat(stem, &title, xy, &value, (&axis.key, log, true), &[])
    }

    fn winner_map(
        &self,
        stem: &Path,
        xy: (usize, usize),
        panel: &Panel,
        w: usize,
        (metric, raw): (Metric, bool),
    ) -> Result<()> {
        let axis = &self.m.axes[w];
        let value = |i: usize, j: usize| {
            let scores = (0..axis.values.len()).filter_map(|k| {
                let cell = self.outer(panel, &[(xy.0, i), (xy.1, j), (w, k)]);
                let s = self.stat_in(metric, &cell, raw)?;
                Some((k, s.mean))
            });
            let best = scores.reduce(|a, b| {
                let better = if metric.higher_is_better() {
                    b.1 > a.1
                } else {
                    b.1 < a.1
                };
                if better {
                    b
                } else {
                    a
                }
            });
            best.map_or(f64::NAN, |(k, _)| k as f64)
        };
        let names: Vec<String> = axis
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{i} = {l}"))
            .collect();
        let title = format!(
            "winner by {} ({}){}",
            metric.name(),
            self.seeds_text(),
            self.describe(panel)
        );
        let colour = format!("winner: {}", names.join(", "));
        // Each cell names its winner, so a map one method wins throughout still reads.
        self.heat(
            stem,
            &title,
            xy,
            &value,
            (&colour, false, true),
            &axis.labels,
        )
    }
}
