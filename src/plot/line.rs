//! Line charts: one curve per series, with a legend.

use std::ops::Range;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    log_axis_range, min_max, padded, style_axes, BandSeries, Figure, Series, LABEL_FONT, TITLE_FONT,
};

/// Matplotlib's "tab10" colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A line chart with its points already filtered to the drawable ones, each point
/// `[x, y, low, high]`: with `bands`, a shaded band spans low … high around each curve
/// (plain series have low = high = y).
pub(super) struct LineChart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: Vec<(&'a str, Vec<[f64; 4]>)>,
    log_y: bool,
    bands: bool,
}

impl<'a> LineChart<'a> {
    /// Keeps the finite points of each series (with `y > 0` when `log_y`).
    pub(super) fn new(
        title: &'a str,
        x_label: &'a str,
        y_label: &'a str,
        series: &'a [Series],
        log_y: bool,
    ) -> Self {
        let series = series
            .iter()
            .map(|s| {
                let points = s.points.iter().map(|&(x, y)| [x, y, y, y]);
                (
                    s.label.as_str(),
                    points.filter(|p| drawable(p, log_y)).collect(),
                )
            })
            .collect();
        Self {
            title,
            x_label,
            y_label,
            series,
            log_y,
            bands: false,
        }
    }

    /// A chart with a band around each curve: keeps the points whose values are all
    /// finite (and positive when `log_y`), sorted by x.
    pub(super) fn with_bands(
        title: &'a str,
        (x_label, y_label): (&'a str, &'a str),
        series: &'a [BandSeries],
        log_y: bool,
    ) -> Self {
        let series = series
            .iter()
            .map(|s| {
                let mut points: Vec<[f64; 4]> = s
                    .points
                    .iter()
                    .map(|&(x, y, lo, hi)| [x, y, lo.min(y), hi.max(y)])
                    .filter(|p| drawable(p, log_y))
                    .collect();
                points.sort_by(|a, b| a[0].total_cmp(&b[0]));
                (s.label.as_str(), points)
            })
            .collect();
        Self {
            title,
            x_label,
            y_label,
            series,
            log_y,
            bands: true,
        }
    }

    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series
            .iter()
            .flat_map(|(_, points)| points.iter().map(|p| (p[0], p[1])))
    }

    /// The y value as plotted: log10 of it on a log axis.
    fn y_scaled(&self, y: f64) -> f64 {
        if self.log_y {
            y.log10()
        } else {
            y
        }
    }

    fn x_range(&self) -> Range<f64> {
        let (lo, hi) = min_max(self.points().map(|p| p.0)).unwrap_or((0.0, 1.0));
        padded(lo, hi, 0.0)
    }

    /// The y range over curves and bands, 5% padded, in log10 units on a log axis.
    fn y_range_scaled(&self) -> Range<f64> {
        let ys = self
            .series
            .iter()
            .flat_map(|(_, points)| points.iter().flat_map(|p| [p[2], p[3]]))
            .map(|y| self.y_scaled(y));
        let (lo, hi) = min_max(ys).unwrap_or((0.0, 1.0));
        padded(lo, hi, 0.05)
    }

    /// The corner of the plot (40% × 30% of it) that the fewest points fall in.
    fn legend_corner(&self, x: &Range<f64>, y: &Range<f64>) -> SeriesLabelPosition {
        let unit = |v: f64, r: &Range<f64>| (v - r.start) / (r.end - r.start);
        let count = |right: bool, upper: bool| {
            let in_corner = |&(px, py): &(f64, f64)| {
                let (u, v) = (unit(px, x), unit(self.y_scaled(py), y));
                (if right { u > 0.6 } else { u < 0.4 }) && (if upper { v > 0.7 } else { v < 0.3 })
            };
            self.points().filter(in_corner).count()
        };
        [
            (SeriesLabelPosition::UpperRight, count(true, true)),
            (SeriesLabelPosition::UpperLeft, count(false, true)),
            (SeriesLabelPosition::LowerRight, count(true, false)),
            (SeriesLabelPosition::LowerLeft, count(false, false)),
        ]
        .into_iter()
        .min_by_key(|&(_, n)| n)
        .map_or(SeriesLabelPosition::UpperRight, |(corner, _)| corner)
    }

    fn draw_with<DB: DrawingBackend, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        (y_coord, y_labels): (Y, usize),
        label_shift: i32,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, TITLE_FONT)
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(self.x_range(), y_coord)?;
        let mut mesh = chart.configure_mesh();
        style_axes(&mut mesh, (self.x_label, self.y_label), label_shift);
        mesh.y_labels(y_labels).draw()?;
        for (i, (_, points)) in self.series.iter().enumerate() {
            if !self.bands || points.len() < 2 {
                continue;
            }
            let outline: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p[0], p[2]))
                .chain(points.iter().rev().map(|p| (p[0], p[3])))
                .collect();
            let colour = PALETTE[i % PALETTE.len()].mix(0.2).filled();
            chart.draw_series(std::iter::once(Polygon::new(outline, colour)))?;
        }
        for (i, (label, points)) in self.series.iter().enumerate() {
            let style = PALETTE[i % PALETTE.len()].stroke_width(2);
            // A lone point has no line segment: mark it instead.
            let marker = if points.len() == 1 { 4 } else { 0 };
            let line =
                LineSeries::new(points.iter().map(|p| (p[0], p[1])), style).point_size(marker);
            chart
                .draw_series(line)?
                .label(*label)
                // In PNGs the label text sits `label_shift` too high: match it.
                .legend(move |(x, y)| {
                    let y = y - label_shift;
                    PathElement::new([(x, y), (x + 24, y)], style)
                });
        }
        if !self.series.is_empty() {
            chart
                .configure_series_labels()
                .position(self.legend_corner(&self.x_range(), &self.y_range_scaled()))
                .margin(12)
                .label_font(LABEL_FONT)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.5))
                .draw()?;
        }
        Ok(())
    }
}

impl Figure for LineChart<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        label_shift: i32,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let y = self.y_range_scaled();
        if self.log_y {
            // Over a decade or more, a small label count makes plotters label
            // only powers of ten, not also 2..9 times each (which crowd).
            let labels = if y.end - y.start >= 1.0 { 5 } else { 10 };
            let y_coord = log_axis_range(y).log_scale();
            self.draw_with(root, (y_coord, labels), label_shift)
        } else {
            self.draw_with(root, (y, 10), label_shift)
        }
    }
}

/// Whether `p` = [x, y, low, high] can be drawn: all finite, and positive on a log axis.
fn drawable(p: &[f64; 4], log_y: bool) -> bool {
    p.iter().all(|v| v.is_finite()) && (!log_y || p[1..].iter().all(|&v| v > 0.0))
}
