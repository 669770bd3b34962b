//! Figures for training runs, written as both SVG and PNG.
//!
//! [`line_chart`] draws loss/accuracy curves against iterations (one curve per
//! method or configuration); [`heat_map`] draws a per-time-step quantity (for
//! example a norm) over (iteration × time step); [`band_chart`] draws curves with a
//! shaded band each (a spread over seeds).
//!
//! Text is rendered with DejaVu Sans embedded in the binary (see
//! `assets/DejaVuSans-LICENSE.txt`), so no system fonts or fontconfig are needed.
//! Non-finite values are skipped (and non-positive ones on log scales); nothing
//! here panics on empty, constant or degenerate data.

mod heat;
mod line;

use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::Ranged;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Figure size in pixels.
const SIZE: (u32, u32) = (900, 600);
/// Font family name used for all text; the embedded font is registered under it.
const FAMILY: &str = "sans-serif";
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
/// Font sizes (plotters draws text at about 0.8 of the size given).
const TITLE_FONT: (&str, u32) = (FAMILY, 30);
const DESC_FONT: (&str, u32) = (FAMILY, 22);
const LABEL_FONT: (&str, u32) = (FAMILY, 18);
/// Pixels to move y tick labels down in PNGs, to centre them on their ticks:
/// plotters 0.3.7's ab_glyph text rendering puts glyphs about a quarter of
/// the font size too high (SVG text is placed by the viewer, correctly).
const PNG_LABEL_SHIFT: i32 = LABEL_FONT.1 as i32 / 4;

/// One curve.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// `(x, y)` points, drawn in order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// Writes `<stem>.svg` and `<stem>.png`: one line per series with a legend.
///
/// With `log_y` the y axis is logarithmic and points with `y <= 0` are skipped.
/// The legend goes into the corner of the plot crossed by the fewest points.
/// Fails (naming the file) when a file cannot be written, e.g. when the
/// directory of `stem` does not exist.
pub fn line_chart(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let chart = line::LineChart::new(title, x_label, y_label, series, log_y);
    save(stem, &chart, &chart)
}

/// A curve with a band around it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BandSeries {
    /// Legend entry.
    pub label: String,
    /// `(x, y, low, high)`: the curve passes through `(x, y)`, the band spans
    /// `low..high` at `x`; points with a non-finite value are skipped.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Writes `<stem>.svg` and `<stem>.png`: [`line_chart`] with a shaded band around each
/// curve, in the curve's colour (with `log_y`, points whose values are not all positive
/// are skipped).
pub fn band_chart(
    stem: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[BandSeries],
    log_y: bool,
) -> Result<()> {
    let chart = line::LineChart::with_bands(title, (x_label, y_label), series, log_y);
    save(stem, &chart, &chart)
}

/// Writes `<stem>.svg` and `<stem>.png`: a heat map with one column per row of `rows`
/// (x = the iteration given with it, y = time step 1..T), colour = value (log10
/// colour scale when `log_color`; non-positive cells drawn as a neutral grey),
/// with a colour bar legend showing the value range.
///
/// Non-finite values (and missing ones, when rows differ in length) are grey
/// too; rows with a non-finite iteration are skipped. Large inputs are
/// downsampled by averaging (in log10 space when `log_color`): to at most
/// about one cell per pixel in the PNG and 150 × 100 cells in the SVG, which
/// keeps the SVG well under 2 MB. Fails (naming the file) when a file cannot
/// be written.
pub fn heat_map(stem: &Path, title: &str, rows: &[(f64, Vec<f64>)], log_color: bool) -> Result<()> {
    heat_map_with(stem, title, rows, log_color, &HeatAxes::TIME_STEPS)
}

/// Axis descriptions and y positions of a heat map (see [`heat_map_with`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeatAxes<'a> {
    /// Description of the x axis (the position given with each row).
    pub x_label: &'a str,
    /// Description of the y axis.
    pub y_label: &'a str,
    /// Description of the colour bar; none when empty.
    pub colour_label: &'a str,
    /// Where value `i` of each row sits on the y axis; `None`: time step `i + 1`.
    pub y_values: Option<&'a [f64]>,
    /// Write each cell's value (two decimals) in it; for small grids.
    pub annotate: bool,
    /// With `annotate`, cells whose values are indices (a winner map's) get the name at
    /// their index instead of the number; empty: the numbers.
    pub names: &'a [String],
}

impl HeatAxes<'_> {
    /// What [`heat_map`] draws: x = iteration, y = time step 1..T, no colour
    /// bar description, no cell values.
    pub const TIME_STEPS: HeatAxes<'static> = HeatAxes {
        x_label: "iteration",
        y_label: "time step",
        colour_label: "",
        y_values: None,
        annotate: false,
        names: &[],
    };
}

/// [`heat_map`] with the axes described by `axes`: with `axes.y_values`, value
/// `i` of each row is drawn at y = `y_values[i]` (cells reach halfway to their
/// neighbours; positions may come in any order, non-finite ones are dropped),
/// so the map can show a quantity over a grid of two parameters.
pub fn heat_map_with(
    stem: &Path,
    title: &str,
    rows: &[(f64, Vec<f64>)],
    log_color: bool,
    axes: &HeatAxes<'_>,
) -> Result<()> {
    let grid = heat::Grid::new(rows, log_color, axes.y_values);
    let svg = heat::HeatMap::new(title, axes, &grid, (150, 100), log_color);
    let png = heat::HeatMap::new(title, axes, &grid, (700, 500), log_color);
    save(stem, &svg, &png)
}

/// Something that draws itself onto any plotters backend.
trait Figure {
    /// Draws on `root`, moving y tick labels down by `label_shift` pixels.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        label_shift: i32,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Renders `svg` to `<stem>.svg` and `png` to `<stem>.png`.
fn save(stem: &Path, svg: &impl Figure, png: &impl Figure) -> Result<()> {
    register_embedded_font()?;
    let svg_path = with_suffix(stem, ".svg");
    let mut text = String::new();
    render(
        SVGBackend::with_string(&mut text, SIZE).into_drawing_area(),
        svg,
        0,
        &svg_path,
    )?;
    std::fs::write(&svg_path, text).with_context(|| format!("writing {}", svg_path.display()))?;
    let png_path = with_suffix(stem, ".png");
    render(
        BitMapBackend::new(&png_path, SIZE).into_drawing_area(),
        png,
        PNG_LABEL_SHIFT,
        &png_path,
    )
}

/// Draws `figure` on a white background and presents it (which writes bitmap files).
fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    figure: &impl Figure,
    label_shift: i32,
    path: &Path,
) -> Result<()> {
    root.fill(&WHITE)
        .and_then(|()| figure.draw(&root, label_shift))
        .and_then(|()| root.present())
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

/// `stem` with `suffix` appended (unlike `Path::with_extension`, keeps any dots in `stem`).
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(stem.as_os_str());
    name.push(suffix);
    name.into()
}

/// Registers the embedded font with plotters, once per process.
fn register_embedded_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    ensure!(
        ok,
        "the embedded font assets/DejaVuSans.ttf could not be parsed"
    );
    Ok(())
}

/// `lo..hi` widened by `frac` of its width on each side; a degenerate range
/// (`lo == hi`) is widened to a non-empty one around `lo`.
fn padded(lo: f64, hi: f64, frac: f64) -> Range<f64> {
    let pad = if hi > lo {
        (hi - lo) * frac
    } else {
        0.5f64.max(lo.abs() * 0.05)
    };
    lo - pad..hi + pad
}

/// The values spanned by the log10 range `log_range`, for a log axis. The ends
/// are kept within `1e-150..=1e150`, so that their ratio is finite (plotters
/// divides them to place ticks, and never finishes on an infinite ratio),
/// and apart.
fn log_axis_range(log_range: Range<f64>) -> Range<f64> {
    let lo = log_range.start.clamp(-150.0, 149.0);
    let hi = log_range.end.clamp(lo + 1e-3, 150.0);
    10f64.powf(lo)..10f64.powf(hi)
}

/// Minimum and maximum of `values`, or `None` when there are none.
fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Axis descriptions, fonts and tick labels shared by all charts (see
/// [`Figure::draw`] for `label_shift`).
fn style_axes<X, Y, DB>(
    mesh: &mut MeshStyle<'_, '_, X, Y, DB>,
    (x_desc, y_desc): (&str, &str),
    label_shift: i32,
) where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
    DB: DrawingBackend,
{
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(LABEL_FONT)
        .axis_desc_style(DESC_FONT)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .y_label_offset(label_shift);
}

/// Tick label without trailing zeros: plain for moderate magnitudes,
/// scientific (`1e-5`) otherwise.
fn tick_label(v: &f64) -> String {
    let plain = (1e-3..1e6).contains(&v.abs());
    let text = if plain || *v == 0.0 {
        format!("{v:.6}")
    } else {
        format!("{v:.1e}")
    };
    trim_zeros(&text)
}

/// Drops trailing zeros of the mantissa: `"0.0100"` → `"0.01"`, `"1.0e-5"` → `"1e-5"`.
fn trim_zeros(text: &str) -> String {
    let (mantissa, exponent) = text.split_at(text.find('e').unwrap_or(text.len()));
    let mantissa = match mantissa.contains('.') {
        true => mantissa.trim_end_matches('0').trim_end_matches('.'),
        false => mantissa,
    };
    format!("{mantissa}{exponent}")
}
