//! Heat maps of a per-time-step quantity over (iteration × time step), or of
//! any quantity over a grid of two parameters (see [`HeatAxes`]).

use std::iter::once;
use std::ops::Range;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    log_axis_range, min_max, padded, style_axes, tick_label, Figure, HeatAxes, DESC_FONT,
    LABEL_FONT, TITLE_FONT,
};

/// Colour of cells without a value (non-finite, missing, or non-positive on a log scale).
const NO_VALUE: RGBColor = RGBColor(190, 190, 190);
/// Width in pixels of the colour bar area at the right.
const BAR_WIDTH: u32 = 130;
/// Extra width of the colour bar area when the bar has a description.
const BAR_DESC_WIDTH: u32 = 40;
/// Number of colour steps in the colour bar.
const BAR_STEPS: usize = 128;
/// Viridis (matplotlib's default colour map) sampled at 10 evenly spaced points.
const VIRIDIS: [(u8, u8, u8); 10] = [
    (0x44, 0x01, 0x54),
    (0x48, 0x28, 0x78),
    (0x3e, 0x4a, 0x89),
    (0x31, 0x68, 0x8e),
    (0x26, 0x82, 0x8e),
    (0x1f, 0x9e, 0x89),
    (0x35, 0xb7, 0x79),
    (0x6d, 0xcd, 0x59),
    (0xb4, 0xde, 0x2c),
    (0xfd, 0xe7, 0x25),
];

/// Cells on a rectilinear grid: columns are iterations, rows are time steps.
pub(super) struct Grid {
    /// Column boundaries, one more than there are columns.
    x_edges: Vec<f64>,
    /// Row boundaries, one more than there are rows.
    y_edges: Vec<f64>,
    /// `cells[column][row]`: the colour value (log10 of the value on a log
    /// scale), `None` where there is none.
    cells: Vec<Vec<Option<f64>>>,
}

impl Grid {
    /// One column per row of `rows` with a finite iteration, sorted by
    /// iteration. Without `y_values`, time step `t` (1-based) spans
    /// `t - 0.5..t + 0.5`; with them, value `i` of a row sits at `y_values[i]`
    /// (sorted; non-finite positions and the values beyond them are dropped),
    /// with cell boundaries midway between neighbours.
    pub(super) fn new(rows: &[(f64, Vec<f64>)], log: bool, y_values: Option<&[f64]>) -> Self {
        let mut rows: Vec<_> = rows.iter().filter(|(x, _)| x.is_finite()).collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (order, y_edges): (Vec<usize>, Vec<f64>) = match y_values {
            None => {
                let steps = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
                let y_edges = (0..=steps).map(|t| t as f64 + 0.5).collect();
                ((0..steps).collect(), y_edges)
            }
            Some(ys) => {
                let mut order: Vec<usize> = (0..ys.len()).filter(|&i| ys[i].is_finite()).collect();
                order.sort_by(|&a, &b| ys[a].total_cmp(&ys[b]));
                let centres: Vec<f64> = order.iter().map(|&i| ys[i]).collect();
                (order, edges(&centres))
            }
        };
        let column = |values: &Vec<f64>| {
            order
                .iter()
                .map(|&i| values.get(i).and_then(|&v| colour_value(v, log)))
                .collect()
        };
        let xs: Vec<f64> = rows.iter().map(|(x, _)| *x).collect();
        Self {
            x_edges: edges(&xs),
            y_edges,
            cells: rows.iter().map(|(_, values)| column(values)).collect(),
        }
    }

    /// At most `max_cols × max_rows` cells, each the mean of the values in the
    /// block of cells it covers.
    fn downsample(&self, (max_cols, max_rows): (usize, usize)) -> Self {
        let cols = bins(self.cells.len(), max_cols);
        let rows = bins(self.y_edges.len() - 1, max_rows);
        let block = |c: &Range<usize>, r: &Range<usize>| {
            let values = self.cells[c.clone()].iter();
            mean(values.flat_map(|column| column[r.clone()].iter().flatten().copied()))
        };
        Self {
            x_edges: bin_edges(&self.x_edges, &cols),
            y_edges: bin_edges(&self.y_edges, &rows),
            cells: cols
                .iter()
                .map(|c| rows.iter().map(|r| block(c, r)).collect())
                .collect(),
        }
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.cells.iter().flatten().flatten().copied()
    }

    fn x_range(&self) -> Range<f64> {
        outer(&self.x_edges)
    }

    fn y_range(&self) -> Range<f64> {
        outer(&self.y_edges)
    }
}

/// The value a cell is coloured by, if it has one.
fn colour_value(v: f64, log: bool) -> Option<f64> {
    match (v.is_finite(), log) {
        (false, _) => None,
        (true, false) => Some(v),
        (true, true) => (v > 0.0).then(|| v.log10()),
    }
}

/// Viridis at `u` in `0..=1` (clamped; NaN maps to 0), linearly interpolated.
fn viridis(u: f64) -> RGBColor {
    let u = if u.is_nan() { 0.0 } else { u.clamp(0.0, 1.0) };
    let pos = u * (VIRIDIS.len() - 1) as f64;
    let i = (pos as usize).min(VIRIDIS.len() - 2);
    let (a, b, t) = (VIRIDIS[i], VIRIDIS[i + 1], pos - i as f64);
    let mix = |p: u8, q: u8| (f64::from(p) + (f64::from(q) - f64::from(p)) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Cell boundaries around sorted `centres`: midpoints between neighbours,
/// and half a spacing beyond the outer ones (a single centre gets width 1).
fn edges(centres: &[f64]) -> Vec<f64> {
    let n = centres.len();
    if n < 2 {
        return centres
            .first()
            .map_or(vec![0.0], |c| vec![c - 0.5, c + 0.5]);
    }
    let first = centres[0] - (centres[1] - centres[0]) / 2.0;
    let last = centres[n - 1] + (centres[n - 1] - centres[n - 2]) / 2.0;
    let mids = centres.windows(2).map(|w| (w[0] + w[1]) / 2.0);
    once(first).chain(mids).chain(once(last)).collect()
}

/// `0..n` split into at most `max` contiguous, nearly equal ranges.
fn bins(n: usize, max: usize) -> Vec<Range<usize>> {
    let count = n.min(max);
    (0..count)
        .map(|i| i * n / count..(i + 1) * n / count)
        .collect()
}

/// The boundaries of the blocks `bins` of the cells with boundaries `edges`.
fn bin_edges(edges: &[f64], bins: &[Range<usize>]) -> Vec<f64> {
    let starts = bins.iter().map(|b| edges[b.start]);
    starts.chain(edges.last().copied()).collect()
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (count > 0).then(|| sum / count as f64)
}

/// The span from the first to the last of `edges`, non-empty.
fn outer(edges: &[f64]) -> Range<f64> {
    let first = edges.first().copied().unwrap_or(0.0);
    let last = edges.last().copied().unwrap_or(0.0);
    padded(first, last, 0.0)
}

/// A heat map ready to draw: the (downsampled) grid and its colour scale.
pub(super) struct HeatMap<'a> {
    title: &'a str,
    axes: &'a HeatAxes<'a>,
    grid: Grid,
    /// Colour values mapped to the ends of the colour map (log10 units on a log scale).
    range: Range<f64>,
    log: bool,
}

impl<'a> HeatMap<'a> {
    /// `grid` downsampled to at most `max_cells` (columns, rows), coloured over
    /// the full range of its values.
    pub(super) fn new(
        title: &'a str,
        axes: &'a HeatAxes<'a>,
        grid: &Grid,
        max_cells: (usize, usize),
        log: bool,
    ) -> Self {
        let (lo, hi) = min_max(grid.values()).unwrap_or((0.0, 1.0));
        Self {
            title,
            axes,
            grid: grid.downsample(max_cells),
            range: padded(lo, hi, 0.0),
            log,
        }
    }

    /// The colour of colour value `v`.
    fn colour(&self, v: Option<f64>) -> RGBColor {
        let Some(v) = v else { return NO_VALUE };
        let Range { start, end } = self.range;
        viridis((v - start) / (end - start))
    }

    fn cells(&self) -> impl Iterator<Item = Rectangle<(f64, f64)>> + '_ {
        let (xs, ys) = (&self.grid.x_edges, &self.grid.y_edges);
        self.grid
            .cells
            .iter()
            .enumerate()
            .flat_map(move |(c, column)| {
                column.iter().enumerate().map(move |(r, &v)| {
                    let corners = [(xs[c], ys[r]), (xs[c + 1], ys[r + 1])];
                    Rectangle::new(corners, self.colour(v).filled())
                })
            })
    }

    fn draw_cells<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        label_shift: i32,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let mut chart = ChartBuilder::on(area)
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d(self.grid.x_range(), self.grid.y_range())?;
        let mut mesh = chart.configure_mesh();
        style_axes(
            &mut mesh,
            (self.axes.x_label, self.axes.y_label),
            label_shift,
        );
        mesh.disable_mesh().draw()?;
        chart.draw_series(self.cells())?;
        if self.axes.annotate {
            chart.draw_series(self.annotations())?;
        }
        Ok(())
    }

    /// The value of each cell written at its centre, white on dark colours.
    fn annotations(&self) -> Vec<Text<'_, (f64, f64), String>> {
        let (xs, ys) = (&self.grid.x_edges, &self.grid.y_edges);
        let Range { start, end } = self.range;
        let mut out = Vec::new();
        for (c, column) in self.grid.cells.iter().enumerate() {
            for (r, v) in column.iter().enumerate() {
                let Some(v) = *v else { continue };
                let dark = (v - start) / (end - start) < 0.6;
                let style = DESC_FONT
                    .into_font()
                    .color(if dark { &WHITE } else { &BLACK })
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let value = if self.log { 10f64.powf(v) } else { v };
                let centre = ((xs[c] + xs[c + 1]) / 2.0, (ys[r] + ys[r + 1]) / 2.0);
                let name = (value >= 0.0)
                    .then(|| self.axes.names.get(value.round() as usize))
                    .flatten();
                let text = name.cloned().unwrap_or_else(|| format!("{value:.2}"));
                out.push(Text::new(text, centre, style));
            }
        }
        out
    }

    /// The colour bar, on axis `y_coord` over the value range (not log10 units).
    fn draw_bar<DB: DrawingBackend, Y>(
        &self,
        area: &DrawingArea<DB, Shift>,
        y_coord: Y,
        label_shift: i32,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let desc = self.axes.colour_label;
        let extra = if desc.is_empty() { 0 } else { BAR_DESC_WIDTH };
        let mut chart = ChartBuilder::on(area)
            .margin_top(20)
            .margin_bottom(20)
            .margin_right(10)
            .x_label_area_size(60)
            .right_y_label_area_size(80 + extra)
            .build_cartesian_2d(0.0..1.0, y_coord)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_mesh()
            .disable_x_axis()
            .y_label_formatter(if self.log { &power_label } else { &tick_label })
            .label_style(LABEL_FONT)
            .y_label_offset(label_shift);
        if !desc.is_empty() {
            mesh.y_desc(desc).axis_desc_style(DESC_FONT);
        }
        mesh.draw()?;
        let Range { start, end } = self.range;
        let value = |k: usize| {
            let v = start + (end - start) * k as f64 / BAR_STEPS as f64;
            if self.log {
                10f64.powf(v)
            } else {
                v
            }
        };
        chart.draw_series((0..BAR_STEPS).map(|k| {
            let colour = viridis((k as f64 + 0.5) / BAR_STEPS as f64);
            Rectangle::new([(0.0, value(k)), (1.0, value(k + 1))], colour.filled())
        }))?;
        Ok(())
    }
}

/// Tick label on a log colour bar: `1e-3` (a uniform width aligns better
/// than mixing `0.01` and `1e-5`).
fn power_label(v: &f64) -> String {
    format!("{v:.0e}")
}

impl Figure for HeatMap<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        label_shift: i32,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let body = root.margin(20, 0, 0, 0).titled(self.title, TITLE_FONT)?;
        let width = body.dim_in_pixel().0;
        let bar_width = match self.axes.colour_label {
            "" => BAR_WIDTH,
            _ => BAR_WIDTH + BAR_DESC_WIDTH,
        };
        let (main, bar) = body.split_horizontally(width.saturating_sub(bar_width));
        self.draw_cells(&main, label_shift)?;
        if self.log {
            let y_coord = log_axis_range(self.range.clone()).log_scale();
            self.draw_bar(&bar, y_coord, label_shift)
        } else {
            self.draw_bar(&bar, self.range.clone(), label_shift)
        }
    }
}
