//! PNG line plots for training-loss curves and accuracy-vs-epsilon charts.
//!
//! Why this module exists instead of calling `plotters` directly at each call
//! site:
//!
//! * **No system fonts.** `plotters`' default `ttf` feature goes through
//!   `font-kit`/fontconfig, which fails on minimal machines and in CI, and its
//!   `ab_glyph` feature mis-spaces glyphs (see `text.rs`). So `plotters` only
//!   draws geometry (grid, axes, lines, markers, legend box) and all text is
//!   laid out by the `text` submodule with DejaVu Sans embedded through
//!   `include_bytes!`: identical output on every machine. The font lives at
//!   `assets/DejaVuSans.ttf` beside `src/`; its licence text
//!   (`assets/LICENSE-DejaVu.txt`) must ship with any binary that embeds it.
//! * **Dirty data is normal.** A diverging run produces NaN/inf losses; a log
//!   axis cannot show zero or negative values. Such points are skipped (not
//!   clamped, so nothing fake is drawn) and empty, single-point or constant
//!   series still give a readable chart instead of a panic.
//! * **Readers must never see a half-written PNG.** The image is rendered and
//!   encoded in memory, written to a temporary file in the destination
//!   directory and then renamed over the target, which is atomic on POSIX
//!   file systems.
//! * **Tick labels we control.** Ticks are computed here (1-2-5 steps, with a
//!   fallback for log axes spanning less than a decade, where `plotters`' own
//!   log ticks would leave the axis unlabelled).
//!
//! ```ignore
//! use std::path::Path;
//! use crate::plot::{write_png, LinePlot, Series};
//! let plot = LinePlot {
//!     title: "PGD accuracy vs ε".into(),
//!     x_label: "ε".into(),
//!     y_label: "accuracy (%)".into(),
//!     series: vec![Series {
//!         name: "candidate-c (98.9%)".into(),
//!         points: vec![(0.0, 98.9), (0.01, 90.2), (0.02, 71.5)],
//!         markers: true,
//!         smooth: None,
//!     }],
//!     y_range: Some((0.0, 100.0)),
//!     log_y: false,
//! };
//! write_png(&plot, Path::new("accuracy.png"))?;
//! ```

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters_backend::{BackendCoord, DrawingErrorKind};

mod text;
use text::{HAlign, TextItem, TextRenderer, VAlign};

/// Output width in pixels; 900×600 is legible on screen and in reports
/// without being heavy (~50–130 KB per PNG).
pub const WIDTH: u32 = 900;
/// Output height in pixels.
pub const HEIGHT: u32 = 600;

/// DejaVu Sans, embedded so rendering never depends on fontconfig.
/// Licence: `assets/LICENSE-DejaVu.txt` (Bitstream Vera + Arev notice).
/// The full font (~740 KB) is kept rather than a subset so labels such as
/// "ε", "L∞" or "≤" always have glyphs.
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");

// Text sizes are ab_glyph pixel scales (ascent-to-descent height).
const TITLE_SIZE: f32 = 23.0;
const AXIS_DESC_SIZE: f32 = 18.0;
const TICK_SIZE: f32 = 15.0;
const LEGEND_SIZE: f32 = 16.0;
const TICK_LEN: f32 = 5.0;
const TICK_LABEL_GAP: f32 = 4.0;
/// Legend box: inner padding, line-glyph width, glyph-to-text gap, and
/// distance from the plot frame (all pixels).
const LEGEND_PAD: i32 = 8;
const LEGEND_GLYPH_W: i32 = 30;
const LEGEND_GAP: i32 = 8;
const LEGEND_INSET: i32 = 10;

const BACKGROUND: RGBColor = RGBColor(255, 255, 255);
const TEXT: RGBColor = RGBColor(34, 34, 34);
const AXIS: RGBColor = RGBColor(90, 90, 90);

/// Tableau-10: distinct hues that stay distinguishable for the common forms
/// of colour blindness and print reasonably in greyscale.
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

/// One named line on a [`LinePlot`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend text, e.g. `"candidate-c (98.9%)"`. Series with an empty name
    /// get no legend entry.
    pub name: String,
    /// `(x, y)` points, connected in the given order. Points with a NaN or
    /// infinite coordinate (and, with `log_y`, with `y <= 0`) are skipped.
    pub points: Vec<(f64, f64)>,
    /// Draw a marker at every point. Useful for sparse curves (~20 points)
    /// where the reader needs to see where the measurements are.
    pub markers: bool,
    /// Centred moving-average window. `Some(w)` with `w >= 2` draws the raw
    /// data as a faint line and the average as a solid line in the same
    /// colour, which keeps per-batch noise visible without hiding the trend.
    pub smooth: Option<usize>,
}

/// A 2-D line chart rendered to a [`WIDTH`]×[`HEIGHT`] PNG by [`write_png`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinePlot {
    /// Chart title; omitted when empty.
    pub title: String,
    /// X-axis description; omitted when empty.
    pub x_label: String,
    /// Y-axis description; omitted when empty.
    pub y_label: String,
    /// Series in drawing order; colours follow the order (10-colour cycle).
    pub series: Vec<Series>,
    /// Fixed y range `(lo, hi)`, e.g. `(0.0, 100.0)` for accuracies, so that
    /// charts from different runs are comparable. `None` fits the data.
    /// Parts of lines outside the range are clipped.
    pub y_range: Option<(f64, f64)>,
    /// Logarithmic y axis, for losses spanning several orders of magnitude.
    pub log_y: bool,
}

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The requested `y_range` cannot be drawn.
    #[error("invalid y range ({lo}, {hi}): {reason}")]
    InvalidRange {
        /// Requested lower bound.
        lo: f64,
        /// Requested upper bound.
        hi: f64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The data spans more than `f64` can represent after padding.
    #[error("data range is too large to plot (values near ±f64::MAX)")]
    DataRange,
    /// The output path does not name a file.
    #[error("output path {0:?} does not name a file")]
    InvalidPath(PathBuf),
    /// The embedded font could not be parsed (a broken build, not bad input).
    #[error("embedded font assets/DejaVuSans.ttf could not be loaded")]
    Font,
    /// `plotters` failed while drawing into the in-memory bitmap.
    #[error("drawing the chart failed: {0}")]
    Render(String),
    /// PNG encoding of the rendered bitmap failed.
    #[error("encoding the PNG failed")]
    Encode(#[from] png::EncodingError),
    /// Writing the temporary file or renaming it into place failed.
    #[error("{action} {path:?} failed")]
    Io {
        /// The step that failed, e.g. "creating temporary file".
        action: &'static str,
        /// The file the step was working on.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Renders `plot` and writes it as a PNG to `path`, atomically.
///
/// The parent directory must exist. On error no partial file is left at
/// `path`; an older file there stays untouched.
pub fn write_png(plot: &LinePlot, path: &Path) -> Result<(), PlotError> {
    let bytes = render_png(plot)?;
    write_atomic(path, &bytes)
}

/// Renders `plot` to PNG bytes in memory (also the first half of
/// [`write_png`]); handy for embedding or for tests.
pub fn render_png(plot: &LinePlot) -> Result<Vec<u8>, PlotError> {
    let fonts = TextRenderer::new(FONT_BYTES).ok_or(PlotError::Font)?;
    let prepared = prepare(plot)?;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    let texts = {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let texts = draw(&root, plot, &prepared, &fonts)?;
        root.present().map_err(render_err)?;
        texts
    };
    for item in &texts {
        fonts.draw(&mut rgb, WIDTH, HEIGHT, item);
    }
    encode_png(&rgb)
}

fn render_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Render(e.to_string())
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>, PlotError> {
    let mut out = Vec::with_capacity(128 * 1024);
    {
        let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

/// Writes the PNG with [`spartan_train::fsutil::write_atomic`] (temp file + rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    if path.file_name().is_none() {
        return Err(PlotError::InvalidPath(path.to_path_buf()));
    }
    spartan_train::fsutil::write_atomic(path, bytes).map_err(|source| PlotError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------
// Data preparation: cleaning, smoothing, ranges and ticks.
// ---------------------------------------------------------------------------

/// One series after cleaning, in plot space (y is `log10(y)` on log axes).
struct PreparedSeries {
    color: RGBColor,
    shape: MarkerShape,
    /// Finite points in plot space, original order.
    raw: Vec<(f64, f64)>,
    /// Moving average in plot space, if smoothing applies.
    smooth: Option<Vec<(f64, f64)>>,
}

/// An axis in plot space, with its tick positions and label format.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    minor: Vec<f64>,
    format: TickFormat,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TickFormat {
    /// Fixed number of decimals, chosen from the tick step.
    Fixed(usize),
    /// Scientific notation with this many mantissa decimals.
    Sci(usize),
    /// The tick position is `log10(value)`; print the value compactly.
    Log10,
}

/// Our own coordinate type rather than `plotters`' `WithKeyPoints`, which
/// cannot be combined with custom label formatters on `f64` axes.
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.lo) / (self.hi - self.lo);
        let px = f64::from(limit.0) + t * f64::from(limit.1 - limit.0);
        // Clamp so far-off coordinates cannot overflow the pixel type.
        px.round().clamp(-1e7, 1e7) as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // `plotters` asks once for bold (labelled) and once for light points.
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl Axis {
    fn label(&self, v: f64) -> String {
        let s = match self.format {
            TickFormat::Fixed(d) => format!("{v:.d$}"),
            TickFormat::Sci(d) => format!("{v:.d$e}"),
            TickFormat::Log10 => compact_number(10f64.powf(v)),
        };
        // "-0.0" next to "0.5" looks like a bug to readers.
        if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
            s[1..].to_string()
        } else {
            s
        }
    }
}

struct Prepared {
    series: Vec<PreparedSeries>,
    x: Axis,
    y: Axis,
    /// Whether any series has at least one drawable point.
    has_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MarkerShape {
    None,
    Circle,
    Square,
    Triangle,
    Diamond,
}

/// Shapes cycle together with colours so that 4–8 curves stay
/// distinguishable even where colours are hard to tell apart.
const SHAPES: [MarkerShape; 4] = [
    MarkerShape::Circle,
    MarkerShape::Square,
    MarkerShape::Triangle,
    MarkerShape::Diamond,
];

fn prepare(plot: &LinePlot) -> Result<Prepared, PlotError> {
    let to_plot_y = |y: f64| if plot.log_y { y.log10() } else { y };
    let series: Vec<PreparedSeries> = plot
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let clean: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!plot.log_y || y > 0.0))
                .collect();
            // Averaging happens on the data values (an arithmetic moving
            // average of the loss, as people expect), then maps to plot space.
            let smooth = match s.smooth {
                Some(w) if w >= 2 && clean.len() >= 2 => Some(
                    moving_average(&clean, w)
                        .into_iter()
                        .map(|(x, y)| (x, to_plot_y(y)))
                        .collect(),
                ),
                _ => None,
            };
            PreparedSeries {
                color: PALETTE[i % PALETTE.len()],
                shape: if s.markers || clean.len() == 1 {
                    SHAPES[i % SHAPES.len()]
                } else {
                    MarkerShape::None
                },
                raw: clean.into_iter().map(|(x, y)| (x, to_plot_y(y))).collect(),
                smooth,
            }
        })
        .collect();

    let has_data = series.iter().any(|s| !s.raw.is_empty());
    let (x_lo, x_hi) = data_extent(series.iter().flat_map(|s| s.raw.iter().map(|p| p.0)))
        .map(|(lo, hi)| pad_range(lo, hi, 0.03, false))
        .unwrap_or((0.0, 1.0));

    let (y_lo, y_hi) = match plot.y_range {
        Some((lo, hi)) => {
            let bad = |reason| PlotError::InvalidRange { lo, hi, reason };
            if !lo.is_finite() || !hi.is_finite() {
                return Err(bad("bounds must be finite"));
            }
            if lo >= hi {
                return Err(bad("lower bound must be below upper bound"));
            }
            if plot.log_y && lo <= 0.0 {
                return Err(bad("a log y axis needs a positive lower bound"));
            }
            (to_plot_y(lo), to_plot_y(hi))
        }
        None => {
            let ys = series
                .iter()
                .flat_map(|s| s.raw.iter().chain(s.smooth.iter().flatten()).map(|p| p.1));
            match data_extent(ys) {
                Some((lo, hi)) => pad_range(lo, hi, 0.05, plot.log_y),
                None if plot.log_y => (-1.0, 1.0),
                None => (0.0, 1.0),
            }
        }
    };
    if !(x_lo.is_finite() && x_hi.is_finite() && y_lo.is_finite() && y_hi.is_finite()) {
        return Err(PlotError::DataRange);
    }

    let x = linear_axis(x_lo, x_hi, 9);
    let y = if plot.log_y {
        log_axis(y_lo, y_hi)
    } else {
        linear_axis(y_lo, y_hi, 7)
    };
    Ok(Prepared {
        series,
        x,
        y,
        has_data,
    })
}

/// Centred moving average with a window that shrinks at the ends, so the
/// smoothed line neither lags the data nor loses its first/last points.
/// O(n) via prefix sums.
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let n = points.len();
    let window = window.min(n).max(1);
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    let mut acc = 0.0;
    for &(_, y) in points {
        acc += y;
        prefix.push(acc);
    }
    let half = window / 2;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let lo = i.saturating_sub(half);
            let hi = (i + window - half).min(n);
            (x, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

fn data_extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Adds `frac` of the span on both sides so that lines and markers do not sit
/// on the frame; a zero-width range (single point or constant data) gets a
/// sensible width instead, since a zero span cannot be mapped to pixels.
fn pad_range(lo: f64, hi: f64, frac: f64, log_space: bool) -> (f64, f64) {
    let span = hi - lo;
    let mid = lo / 2.0 + hi / 2.0;
    if span <= mid.abs() * 1e-9 || span == 0.0 {
        let d = if log_space {
            0.3 // a factor of 2 either way
        } else if mid.abs() > 1e-12 {
            mid.abs() * 0.1
        } else {
            1.0
        };
        (mid - d, mid + d)
    } else {
        (lo - span * frac, hi + span * frac)
    }
}

/// A 1-2-5 step giving roughly `target` intervals over `span`.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Multiples of `step` inside `[lo, hi]`.
fn multiples(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 1000.0 {
        return vec![lo, hi];
    }
    let mut out = Vec::new();
    let mut k = first;
    while k <= last {
        out.push(k * step);
        k += 1.0;
    }
    out
}

fn linear_axis(lo: f64, hi: f64, target: usize) -> Axis {
    let step = nice_step(hi - lo, target);
    let ticks = multiples(lo, hi, step);
    let max_abs = lo.abs().max(hi.abs());
    let step_exp = step.log10().floor();
    let format = if max_abs >= 1e6 || (step < 1e-4 && max_abs > 0.0) {
        let mantissa = (max_abs.log10().floor() - step_exp).clamp(0.0, 6.0) as usize;
        TickFormat::Sci(mantissa)
    } else {
        TickFormat::Fixed((-step_exp).clamp(0.0, 10.0) as usize)
    };
    Axis {
        lo,
        hi,
        ticks,
        minor: Vec::new(),
        format,
    }
}

/// Log axis over `[lo, hi]` in log10 space. Prefers 1-2-5 labels, drops to
/// powers of ten when there would be too many, and falls back to linear
/// 1-2-5 ticks on the values when the range is too narrow to contain three
/// such labels (e.g. a loss between 0.21 and 0.48).
fn log_axis(lo: f64, hi: f64) -> Axis {
    let eps = 1e-9;
    let mut one_two_five = Vec::new();
    let mut decades = Vec::new();
    let mut minor = Vec::new();
    let (k_lo, k_hi) = (lo.floor() as i64, hi.ceil() as i64);
    if k_hi - k_lo <= 300 {
        for k in k_lo..=k_hi {
            for m in 1..10 {
                let t = (m as f64).log10() + k as f64;
                if t < lo - eps || t > hi + eps {
                    continue;
                }
                if m == 1 {
                    decades.push(t);
                }
                if matches!(m, 1 | 2 | 5) {
                    one_two_five.push(t);
                } else {
                    minor.push(t);
                }
            }
        }
    }
    let (ticks, minor) = if one_two_five.len() >= 3 && one_two_five.len() <= 10 {
        (one_two_five, minor)
    } else if one_two_five.len() > 10 {
        let every = decades.len().div_ceil(8).max(1);
        let ticks = decades.iter().copied().step_by(every).collect();
        let minor = if hi - lo <= 6.0 { minor } else { Vec::new() };
        (ticks, minor)
    } else {
        let (v_lo, v_hi) = (10f64.powf(lo), 10f64.powf(hi));
        let step = nice_step(v_hi - v_lo, 6);
        let ticks = multiples(v_lo, v_hi, step)
            .into_iter()
            .filter(|&v| v > 0.0)
            .map(f64::log10)
            .collect();
        (ticks, Vec::new())
    };
    Axis {
        lo,
        hi,
        ticks,
        minor,
        format: TickFormat::Log10,
    }
}

/// Short label for a log-axis value: `0.05`, `2`, `1000`, `1e-5`.
fn compact_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exp = v.abs().log10().floor();
    // Round to 3 significant digits first: 10^log10(0.05) is not exactly 0.05.
    let scale = 10f64.powf(2.0 - exp);
    let r = (v * scale).round() / scale;
    if !(1e-3..1e5).contains(&r.abs()) {
        return format!("{r:e}");
    }
    let decimals = (2.0 - exp).clamp(0.0, 6.0) as usize;
    let s = format!("{r:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// Clipping and legend placement (plot space).
// ---------------------------------------------------------------------------

/// The visible part of a segment and whether each end was cut.
struct Clipped {
    start: (f64, f64),
    end: (f64, f64),
    start_moved: bool,
    end_moved: bool,
}

/// Liang–Barsky clipping of segment `a→b` to the axis box. Returns the
/// visible part and whether each end was moved. Done here because `plotters`
/// does not clip paths to the plotting area, so with a fixed `y_range` lines
/// would spill over the axes and title.
fn clip_segment(a: (f64, f64), b: (f64, f64), x: &Axis, y: &Axis) -> Option<Clipped> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let mut t0: f64 = 0.0;
    let mut t1: f64 = 1.0;
    for (p, q) in [
        (-dx, a.0 - x.lo),
        (dx, x.hi - a.0),
        (-dy, a.1 - y.lo),
        (dy, y.hi - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    Some(Clipped {
        start: at(t0),
        end: at(t1),
        start_moved: t0 > 0.0,
        end_moved: t1 < 1.0,
    })
}

/// Splits a polyline into the runs visible inside the axis box.
fn clip_polyline(points: &[(f64, f64)], x: &Axis, y: &Axis) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for pair in points.windows(2) {
        match clip_segment(pair[0], pair[1], x, y) {
            Some(Clipped {
                start: a,
                end: b,
                start_moved: a_moved,
                end_moved: b_moved,
            }) => {
                if a_moved || current.is_empty() {
                    if current.len() >= 2 {
                        runs.push(std::mem::take(&mut current));
                    }
                    current.clear();
                    current.push(a);
                }
                current.push(b);
                if b_moved {
                    runs.push(std::mem::take(&mut current));
                }
            }
            None => {
                if current.len() >= 2 {
                    runs.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    if current.len() >= 2 {
        runs.push(current);
    }
    runs
}

fn inside(p: (f64, f64), x: &Axis, y: &Axis) -> bool {
    let slack_x = (x.hi - x.lo) * 1e-9;
    let slack_y = (y.hi - y.lo) * 1e-9;
    p.0 >= x.lo - slack_x && p.0 <= x.hi + slack_x && p.1 >= y.lo - slack_y && p.1 <= y.hi + slack_y
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Corner {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

/// Picks the plot corner whose legend box would cover the least ink, like
/// matplotlib's `loc="best"`: decaying losses want the upper right, while
/// accuracy curves of robust models fill exactly that corner.
fn best_legend_corner(
    runs: &[Vec<(f64, f64)>],
    markers: &[(f64, f64)],
    x: &Axis,
    y: &Axis,
    box_frac: (f64, f64),
) -> Corner {
    let (bw, bh) = (box_frac.0.min(1.0), box_frac.1.min(1.0));
    let norm = |p: (f64, f64)| ((p.0 - x.lo) / (x.hi - x.lo), (p.1 - y.lo) / (y.hi - y.lo));
    // Order matters for ties: the upper right is the conventional spot.
    let corners = [
        (Corner::UpperRight, 1.0 - bw, 1.0 - bh),
        (Corner::UpperLeft, 0.0, 1.0 - bh),
        (Corner::LowerRight, 1.0 - bw, 0.0),
        (Corner::LowerLeft, 0.0, 0.0),
    ];
    let mut counts = [0usize; 4];
    let mut hit = |p: (f64, f64)| {
        let (u, v) = norm(p);
        for (i, &(_, x0, y0)) in corners.iter().enumerate() {
            if u >= x0 && u <= x0 + bw && v >= y0 && v <= y0 + bh {
                counts[i] += 1;
            }
        }
    };
    for run in runs {
        for pair in run.windows(2) {
            // Sample along segments so sparse lines crossing a corner count.
            let (a, b) = (norm(pair[0]), norm(pair[1]));
            let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
            let steps = ((len / 0.01).ceil() as usize).clamp(1, 200);
            for s in 0..steps {
                let t = s as f64 / steps as f64;
                hit((
                    pair[0].0 + t * (pair[1].0 - pair[0].0),
                    pair[0].1 + t * (pair[1].1 - pair[0].1),
                ));
            }
        }
        if let Some(&last) = run.last() {
            hit(last);
        }
    }
    for &m in markers {
        for _ in 0..5 {
            hit(m); // a marker is a bigger blot than a line sample
        }
    }
    let best = (0..corners.len()).min_by_key(|&i| counts[i]).unwrap_or(0);
    corners[best].0
}

// ---------------------------------------------------------------------------
// Drawing.
// ---------------------------------------------------------------------------

/// A filled marker in any coordinate system; used both on the chart and in
/// the legend, so the legend glyph matches the curve.
struct Marker<C> {
    at: C,
    shape: MarkerShape,
    color: RGBColor,
}

impl<'a, C> PointCollection<'a, C> for &'a Marker<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for Marker<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _parent_dim: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = points.next() else {
            return Ok(());
        };
        let style = self.color.filled();
        let r = 4;
        match self.shape {
            MarkerShape::None => Ok(()),
            MarkerShape::Circle => backend.draw_circle((x, y), r as u32, &style, true),
            MarkerShape::Square => backend.draw_rect((x - r, y - r), (x + r, y + r), &style, true),
            MarkerShape::Triangle => backend.fill_polygon(
                [(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)],
                &style,
            ),
            MarkerShape::Diamond => backend.fill_polygon(
                [
                    (x, y - r - 1),
                    (x + r + 1, y),
                    (x, y + r + 1),
                    (x - r - 1, y),
                ],
                &style,
            ),
        }
    }
}
/// Pixel geometry decided before drawing, from measured text sizes, so
/// long tick labels or a missing title never waste or overflow space.
struct Frame {
    top: u32,
    bottom: u32,
    left: u32,
    right: u32,
}

fn layout_frame(
    plot: &LinePlot,
    x_labels: &[(f64, String)],
    y_labels: &[(f64, String)],
    fonts: &TextRenderer<'_>,
) -> Frame {
    let width = |s: &str, size| fonts.measure(s, size).0;
    let tick_h = fonts.measure("0", TICK_SIZE).1;
    let desc_h = fonts.measure("Ag", AXIS_DESC_SIZE).1;
    let y_label_w = y_labels
        .iter()
        .map(|(_, l)| width(l, TICK_SIZE))
        .fold(0.0, f32::max);
    let first_x_w = x_labels.first().map_or(0.0, |(_, l)| width(l, TICK_SIZE));
    let last_x_w = x_labels.last().map_or(0.0, |(_, l)| width(l, TICK_SIZE));

    let top = if plot.title.is_empty() {
        16.0
    } else {
        14.0 + fonts.measure(&plot.title, TITLE_SIZE).1 + 10.0
    };
    let y_desc = if plot.y_label.is_empty() {
        0.0
    } else {
        desc_h + 10.0
    };
    let x_desc = if plot.x_label.is_empty() {
        0.0
    } else {
        desc_h + 8.0
    };
    let left = (12.0 + y_desc + y_label_w + TICK_LABEL_GAP + TICK_LEN).max(first_x_w / 2.0 + 6.0);
    let bottom = TICK_LEN + TICK_LABEL_GAP + tick_h + x_desc + 12.0;
    let right = (24.0f32).max(last_x_w / 2.0 + 6.0);
    Frame {
        top: top.ceil() as u32,
        bottom: bottom.ceil() as u32,
        left: left.ceil() as u32,
        right: right.ceil() as u32,
    }
}

fn text_item(text: &str, size: f32, at: (f32, f32), h: HAlign, v: VAlign) -> TextItem {
    TextItem {
        text: text.to_string(),
        size,
        at,
        h,
        v,
        rotated: false,
        color: (TEXT.0, TEXT.1, TEXT.2),
    }
}

/// Draws everything except text with `plotters`, and returns the text to be
/// drawn afterwards by [`TextRenderer`] (text goes last so it sits on top).
fn draw(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    plot: &LinePlot,
    prep: &Prepared,
    fonts: &TextRenderer<'_>,
) -> Result<Vec<TextItem>, PlotError> {
    root.fill(&BACKGROUND).map_err(render_err)?;
    let (x, y) = (&prep.x, &prep.y);
    let x_labels: Vec<(f64, String)> = x.ticks.iter().map(|&t| (t, x.label(t))).collect();
    let y_labels: Vec<(f64, String)> = y.ticks.iter().map(|&t| (t, y.label(t))).collect();
    let frame = layout_frame(plot, &x_labels, &y_labels, fonts);
    let area = root.margin(frame.top, frame.bottom, frame.left, frame.right);
    let mut chart = ChartBuilder::on(&area)
        .build_cartesian_2d(x.clone(), y.clone())
        .map_err(render_err)?;
    let (px_range, py_range) = chart.plotting_area().get_pixel_range();
    let (x0, x1) = (px_range.start, px_range.end - 1);
    let (y0, y1) = (py_range.start, py_range.end - 1);
    let mut texts = Vec::new();

    // Grid: minor lines first, so major lines stay visible where they meet.
    for (ticks, alpha) in [(&x.minor, 0.05), (&x.ticks, 0.12)] {
        let style = RGBColor(0, 0, 0).mix(alpha);
        chart
            .draw_series(
                ticks
                    .iter()
                    .map(|&t| PathElement::new(vec![(t, y.lo), (t, y.hi)], style)),
            )
            .map_err(render_err)?;
    }
    for (ticks, alpha) in [(&y.minor, 0.05), (&y.ticks, 0.12)] {
        let style = RGBColor(0, 0, 0).mix(alpha);
        chart
            .draw_series(
                ticks
                    .iter()
                    .map(|&t| PathElement::new(vec![(x.lo, t), (x.hi, t)], style)),
            )
            .map_err(render_err)?;
    }

    // Axes (left and bottom only: the grid already frames the data), tick
    // marks and tick labels.
    let axis_style = ShapeStyle {
        color: AXIS.to_rgba(),
        filled: false,
        stroke_width: 1,
    };
    let tick_len = TICK_LEN as i32;
    root.draw(&PathElement::new(
        vec![(x0, y0), (x0, y1), (x1, y1)],
        axis_style,
    ))
    .map_err(render_err)?;
    for (t, label) in &x_labels {
        let (px, _) = chart.backend_coord(&(*t, y.lo));
        root.draw(&PathElement::new(
            vec![(px, y1), (px, y1 + tick_len)],
            axis_style,
        ))
        .map_err(render_err)?;
        texts.push(text_item(
            label,
            TICK_SIZE,
            (px as f32, (y1 + tick_len) as f32 + TICK_LABEL_GAP),
            HAlign::Center,
            VAlign::Top,
        ));
    }
    for (t, label) in &y_labels {
        let (_, py) = chart.backend_coord(&(x.lo, *t));
        root.draw(&PathElement::new(
            vec![(x0 - tick_len, py), (x0, py)],
            axis_style,
        ))
        .map_err(render_err)?;
        texts.push(text_item(
            label,
            TICK_SIZE,
            ((x0 - tick_len) as f32 - TICK_LABEL_GAP, py as f32),
            HAlign::Right,
            VAlign::Center,
        ));
    }

    let centre_x = (x0 + x1) as f32 / 2.0;
    if !plot.title.is_empty() {
        texts.push(text_item(
            &plot.title,
            TITLE_SIZE,
            (centre_x, 14.0),
            HAlign::Center,
            VAlign::Top,
        ));
    }
    if !plot.x_label.is_empty() {
        texts.push(text_item(
            &plot.x_label,
            AXIS_DESC_SIZE,
            (centre_x, HEIGHT as f32 - 12.0),
            HAlign::Center,
            VAlign::Bottom,
        ));
    }
    if !plot.y_label.is_empty() {
        let desc_h = fonts.measure(&plot.y_label, AXIS_DESC_SIZE).1;
        texts.push(TextItem {
            rotated: true,
            ..text_item(
                &plot.y_label,
                AXIS_DESC_SIZE,
                (12.0 + desc_h / 2.0, (y0 + y1) as f32 / 2.0),
                HAlign::Center,
                VAlign::Center,
            )
        });
    }

    let mut all_runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut all_markers: Vec<(f64, f64)> = Vec::new();

    // Faint raw lines first, so no series' noise hides another's trend.
    for s in &prep.series {
        if s.smooth.is_some() {
            let style = ShapeStyle {
                color: s.color.mix(0.28),
                filled: false,
                stroke_width: 1,
            };
            let runs = clip_polyline(&s.raw, x, y);
            chart
                .draw_series(runs.iter().map(|r| PathElement::new(r.clone(), style)))
                .map_err(render_err)?;
            all_runs.extend(runs);
        }
    }

    let mut legend: Vec<(&str, &PreparedSeries)> = Vec::new();
    for (s, src) in prep.series.iter().zip(&plot.series) {
        let main = s.smooth.as_deref().unwrap_or(&s.raw);
        let runs = clip_polyline(main, x, y);
        chart
            .draw_series(
                runs.iter()
                    .map(|r| PathElement::new(r.clone(), line_style(s.color))),
            )
            .map_err(render_err)?;
        all_runs.extend(runs);
        if s.shape != MarkerShape::None {
            let visible: Vec<(f64, f64)> =
                s.raw.iter().copied().filter(|&p| inside(p, x, y)).collect();
            chart
                .draw_series(visible.iter().map(|&p| Marker {
                    at: p,
                    shape: s.shape,
                    color: s.color,
                }))
                .map_err(render_err)?;
            all_markers.extend(visible);
        }
        if !src.name.is_empty() && !s.raw.is_empty() {
            legend.push((&src.name, s));
        }
    }

    if !prep.has_data {
        texts.push(text_item(
            "no finite data points to plot",
            AXIS_DESC_SIZE,
            (centre_x, (y0 + y1) as f32 / 2.0),
            HAlign::Center,
            VAlign::Center,
        ));
    }

    if !legend.is_empty() {
        let text_w = legend
            .iter()
            .map(|(name, _)| fonts.measure(name, LEGEND_SIZE).0)
            .fold(0.0, f32::max);
        let row_h = (LEGEND_SIZE * 1.4).round() as i32;
        let pad = LEGEND_PAD;
        let box_w = pad * 2 + LEGEND_GLYPH_W + LEGEND_GAP + text_w.ceil() as i32;
        let box_h = pad * 2 + row_h * legend.len() as i32;
        let (pw, ph) = ((x1 - x0).max(1), (y1 - y0).max(1));
        let corner = best_legend_corner(
            &all_runs,
            &all_markers,
            x,
            y,
            (
                f64::from(box_w + LEGEND_INSET) / f64::from(pw),
                f64::from(box_h + LEGEND_INSET) / f64::from(ph),
            ),
        );
        let bx = match corner {
            Corner::UpperLeft | Corner::LowerLeft => x0 + LEGEND_INSET,
            Corner::UpperRight | Corner::LowerRight => x1 - LEGEND_INSET - box_w,
        };
        let by = match corner {
            Corner::UpperLeft | Corner::UpperRight => y0 + LEGEND_INSET,
            Corner::LowerLeft | Corner::LowerRight => y1 - LEGEND_INSET - box_h,
        };
        root.draw(&Rectangle::new(
            [(bx, by), (bx + box_w, by + box_h)],
            BACKGROUND.mix(0.9).filled(),
        ))
        .map_err(render_err)?;
        root.draw(&Rectangle::new(
            [(bx, by), (bx + box_w, by + box_h)],
            RGBColor(0, 0, 0).mix(0.25),
        ))
        .map_err(render_err)?;
        for (i, (name, s)) in legend.iter().enumerate() {
            let cy = by + pad + row_h * i as i32 + row_h / 2;
            let gx = bx + pad;
            root.draw(&PathElement::new(
                vec![(gx, cy), (gx + LEGEND_GLYPH_W, cy)],
                line_style(s.color),
            ))
            .map_err(render_err)?;
            root.draw(&Marker {
                at: (gx + LEGEND_GLYPH_W / 2, cy),
                shape: s.shape,
                color: s.color,
            })
            .map_err(render_err)?;
            texts.push(text_item(
                name,
                LEGEND_SIZE,
                ((gx + LEGEND_GLYPH_W + LEGEND_GAP) as f32, cy as f32),
                HAlign::Left,
                VAlign::Center,
            ));
        }
    }
    Ok(texts)
}

fn line_style(color: RGBColor) -> ShapeStyle {
    ShapeStyle {
        color: color.to_rgba(),
        filled: false,
        stroke_width: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let data = fs::read(path).expect("png exists");
        let decoder = png::Decoder::new(std::io::Cursor::new(data));
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
        let info = reader.next_frame(&mut buf).expect("png frame");
        buf.truncate(info.buffer_size());
        assert_eq!(info.color_type, png::ColorType::Rgb);
        (info.width, info.height, buf)
    }

    fn distinct_colours(rgb: &[u8]) -> usize {
        let mut set = std::collections::HashSet::new();
        for px in rgb.chunks_exact(3) {
            set.insert((px[0], px[1], px[2]));
        }
        set.len()
    }

    /// Counts pixels close to `c`, to check a series colour was really drawn.
    fn pixels_near(rgb: &[u8], c: RGBColor) -> usize {
        rgb.chunks_exact(3)
            .filter(|p| {
                (i32::from(p[0]) - i32::from(c.0)).abs() < 12
                    && (i32::from(p[1]) - i32::from(c.1)).abs() < 12
                    && (i32::from(p[2]) - i32::from(c.2)).abs() < 12
            })
            .count()
    }

    fn loss_plot(log_y: bool) -> LinePlot {
        let series = (0..2)
            .map(|s| Series {
                name: format!("run-{s}"),
                points: (0..3000)
                    .map(|i| {
                        let t = i as f64;
                        let noise = ((t * 12.9898 + s as f64).sin() * 43758.5453).fract() * 0.3;
                        (t, 2.3 * (-t / 700.0).exp() + 0.05 + noise.abs())
                    })
                    .collect(),
                markers: false,
                smooth: Some(50),
            })
            .collect();
        LinePlot {
            title: "Training loss".into(),
            x_label: "iteration".into(),
            y_label: "loss".into(),
            series,
            y_range: None,
            log_y,
        }
    }

    #[test]
    fn writes_readable_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        write_png(&loss_plot(true), &path).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        assert!(distinct_colours(&rgb) > 20, "image looks blank");
        assert!(pixels_near(&rgb, PALETTE[0]) > 200, "series 0 not drawn");
        assert!(pixels_near(&rgb, PALETTE[1]) > 200, "series 1 not drawn");
        // Text is anti-aliased dark grey; plenty of such pixels means the
        // embedded font rendered.
        assert!(pixels_near(&rgb, TEXT) > 300, "no text rendered");
        // Only the final file remains: the temporary file was renamed.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn overwrites_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        fs::write(&path, b"old").unwrap();
        write_png(&loss_plot(false), &path).unwrap();
        assert_eq!(decode(&path).0, WIDTH);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("p.png");
        let err = write_png(&loss_plot(false), &path).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }), "{err}");
        assert!(err.to_string().contains("nope/p.png"), "{err}");
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = |points: Vec<(f64, f64)>, smooth| Series {
            name: "s".into(),
            points,
            markers: true,
            smooth,
        };
        // (name, series, log_y, y_range)
        type Case = (&'static str, Vec<Series>, bool, Option<(f64, f64)>);
        let cases: Vec<Case> = vec![
            ("no-series", vec![], false, None),
            ("empty", vec![s(vec![], Some(10))], false, None),
            ("empty-log", vec![s(vec![], None)], true, None),
            ("single", vec![s(vec![(3.0, 7.0)], Some(5))], false, None),
            ("single-log", vec![s(vec![(3.0, 7.0)], None)], true, None),
            (
                "constant",
                vec![s(vec![(0.0, 1.0), (1.0, 1.0)], None)],
                false,
                None,
            ),
            (
                "zeros",
                vec![s(vec![(0.0, 0.0), (0.0, 0.0)], None)],
                false,
                None,
            ),
            (
                "nan-inf",
                vec![s(
                    vec![
                        (f64::NAN, 1.0),
                        (1.0, f64::INFINITY),
                        (2.0, f64::NEG_INFINITY),
                        (3.0, 2.0),
                        (4.0, f64::NAN),
                    ],
                    Some(3),
                )],
                false,
                None,
            ),
            (
                "all-nan",
                vec![s(vec![(f64::NAN, f64::NAN); 10], Some(3))],
                true,
                None,
            ),
            (
                "nonpositive-log",
                vec![s(
                    vec![(0.0, -1.0), (1.0, 0.0), (2.0, 0.5), (3.0, 0.25)],
                    None,
                )],
                true,
                None,
            ),
            (
                "outside-fixed-range",
                vec![s(vec![(0.0, -50.0), (1.0, 50.0), (2.0, 150.0)], None)],
                false,
                Some((0.0, 100.0)),
            ),
            (
                "huge",
                vec![s(vec![(0.0, -1e300), (1e300, 1e300)], None)],
                false,
                None,
            ),
            (
                "tiny-log-range",
                vec![s(vec![(0.0, 0.21), (1.0, 0.48)], None)],
                true,
                None,
            ),
            (
                "wide-log-range",
                vec![s(vec![(0.0, 1e-12), (1.0, 1e12)], None)],
                true,
                None,
            ),
            (
                "window-larger-than-data",
                vec![s(vec![(0.0, 1.0), (1.0, 2.0)], Some(1000))],
                false,
                None,
            ),
            ("unnamed", vec![Series::default()], false, None),
        ];
        for (name, series, log_y, y_range) in cases {
            let plot = LinePlot {
                title: name.into(),
                x_label: "x".into(),
                y_label: "y".into(),
                series,
                y_range,
                log_y,
            };
            let path = dir.path().join(format!("{name}.png"));
            write_png(&plot, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (w, h, rgb) = decode(&path);
            assert_eq!((w, h), (WIDTH, HEIGHT), "{name}");
            assert!(distinct_colours(&rgb) > 5, "{name}: blank");
        }
    }

    #[test]
    fn invalid_ranges_are_errors() {
        let mut plot = loss_plot(true);
        plot.y_range = Some((0.0, 10.0));
        let err = render_png(&plot).unwrap_err();
        assert!(err.to_string().contains("positive lower bound"), "{err}");
        plot.log_y = false;
        plot.y_range = Some((5.0, 5.0));
        assert!(matches!(
            render_png(&plot),
            Err(PlotError::InvalidRange { .. })
        ));
        plot.y_range = Some((f64::NAN, 5.0));
        assert!(matches!(
            render_png(&plot),
            Err(PlotError::InvalidRange { .. })
        ));
    }

    #[test]
    fn path_without_file_name_is_an_error() {
        let err = write_png(&loss_plot(false), Path::new("/")).unwrap_err();
        assert!(matches!(err, PlotError::InvalidPath(_)), "{err}");
    }

    #[test]
    fn moving_average_is_centred_and_keeps_ends() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, i as f64)).collect();
        let avg = moving_average(&pts, 3);
        assert_eq!(avg.len(), 5);
        assert_eq!(avg[0], (0.0, 0.5));
        assert_eq!(avg[2], (2.0, 2.0));
        assert_eq!(avg[4], (4.0, 3.5));
    }

    #[test]
    fn tick_labels_are_clean() {
        let a = linear_axis(-0.0015, 0.031, 9);
        let labels: Vec<String> = a.ticks.iter().map(|&t| a.label(t)).collect();
        assert!(labels.contains(&"0.000".to_string()), "{labels:?}");
        assert!(labels.contains(&"0.030".to_string()), "{labels:?}");
        let l = log_axis(0.04f64.log10(), 3.0f64.log10());
        let labels: Vec<String> = l.ticks.iter().map(|&t| l.label(t)).collect();
        assert_eq!(labels, ["0.05", "0.1", "0.2", "0.5", "1", "2"]);
        let narrow = log_axis(0.21f64.log10(), 0.48f64.log10());
        assert!(narrow.ticks.len() >= 3, "{:?}", narrow.ticks);
        assert_eq!(compact_number(1e-5), "1e-5");
        assert_eq!(compact_number(250000.0), "2.5e5");
    }

    #[test]
    fn clipping_splits_runs_at_the_frame() {
        let x = linear_axis(0.0, 10.0, 5);
        let y = linear_axis(0.0, 10.0, 5);
        let runs = clip_polyline(&[(1.0, 1.0), (2.0, 20.0), (3.0, 2.0), (4.0, 3.0)], &x, &y);
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().flatten().all(|&p| inside(p, &x, &y)));
    }
}
