//! The sweep's figures that are curves with a band over seeds: a metric against one
//! axis, and the training curves (train loss, eval accuracy, and where runs measured it
//! the cosine with BPTT's gradient, against iterations).

use std::path::Path;

use anyhow::Result;

use crate::figures::{pooled, read_log, RunLog};
use crate::plot::{band_chart, BandSeries};

use super::collect::Stat;
use super::figures::{Grid, Panel};
use super::manifest::run_dir;
use super::metric::Metric;
use super::spec::Band;

impl Grid<'_> {
    /// The curve through `points` with the band the spec asks for.
    pub(super) fn band(
        &self,
        label: String,
        points: impl Iterator<Item = (f64, Stat)>,
    ) -> BandSeries {
        let points = points
            .map(|(x, s)| match self.m.figures.band {
                Band::MinMax => (x, s.mean, s.min, s.max),
                Band::Std => (x, s.mean, s.mean - s.std, s.mean + s.std),
            })
            .collect();
        BandSeries { label, points }
    }

    /// The values of the series axis as (label, panel entry); one series of all runs
    /// without one, or when it is `shown` on the x axis.
    pub(super) fn series(&self, shown: Option<usize>) -> Vec<(String, Option<(usize, usize)>)> {
        match self.curves.filter(|&c| Some(c) != shown) {
            Some(c) => self.m.axes[c]
                .labels
                .iter()
                .enumerate()
                .map(|(k, l)| (l.clone(), Some((c, k))))
                .collect(),
            None => vec![("all runs".into(), None)],
        }
    }

    pub(super) fn profile(
        &self,
        stem: &Path,
        x: usize,
        panel: &Panel,
        metric: Metric,
    ) -> Result<()> {
        let (xs, x_label) = self.positions(x);
        let series: Vec<BandSeries> = self
            .series(Some(x))
            .into_iter()
            .map(|(label, s)| {
                let points = xs.iter().enumerate().filter_map(|(i, &px)| {
                    let set: Vec<(usize, usize)> = s.into_iter().chain([(x, i)]).collect();
                    Some((px, self.stat(metric, &self.outer(panel, &set))?))
                });
                self.band(label, points)
            })
            .collect();
        let title = format!(
            "{} ({}){}",
            metric.name(),
            self.seeds_text(),
            self.describe(panel)
        );
        let log_y = metric.log_scale() && spans_decade(&series);
        band_chart(stem, &title, (&x_label, metric.name()), &series, log_y)
    }

    pub(super) fn curves(&self, stem: &Path, panel: &Panel, what: &str, log_y: bool) -> Result<()> {
        let mut series = Vec::new();
        for (label, s) in self.series(None) {
            let outer = self.outer(panel, &s.into_iter().collect::<Vec<_>>());
            let Some(cell) = self.chosen.get(&outer) else {
                continue;
            };
            let logs: Vec<RunLog> = self
                .runs
                .get(cell)
                .into_iter()
                .flatten()
                .filter_map(|&r| read_log(&run_dir(self.dir, &self.m.runs[r].name)).ok())
                .collect();
            let at = pooled(logs.iter().map(|log| match what {
                "train_loss" => log.train_loss.as_slice(),
                "grad_cosine" => log.cosine.as_slice(),
                _ => log.eval_accuracy.as_slice(),
            }));
            let label = match self.search {
                Some(sv) => format!(
                    "{label} ({} = {})",
                    self.short[sv], self.m.axes[sv].labels[cell[sv]]
                ),
                None => label,
            };
            let points = at
                .into_iter()
                .filter_map(|(it, v)| Some((it, Stat::of(&v, v.len())?)));
            series.push(self.band(label, points));
        }
        let band = match self.m.figures.band {
            Band::MinMax => "min to max",
            Band::Std => "mean ± std",
        };
        let title = format!(
            "{} ({band} over seeds){}",
            what.replace('_', " "),
            self.describe(panel)
        );
        let log_y = log_y && spans_decade(&series);
        band_chart(
            stem,
            &title,
            ("iteration", &what.replace('_', " ")),
            &series,
            log_y,
        )
    }
}

/// Whether the bands' values are positive and span a decade or more (a log axis over
/// less has too few ticks to read).
fn spans_decade(series: &[BandSeries]) -> bool {
    let values = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.2, p.3]))
    };
    let (lo, hi) = values().fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    values().all(|v| v > 0.0) && hi >= 10.0 * lo
}
