//! Line charts of training curves ([`Chart`], [`plot_curves`]) and grids of them
//! ([`plot_figure`]), drawn by plotters into an [`RgbImage`]: title, axes with plotters' 1-2-5
//! ticks and grid lines, optional log (decade labels, 2..9 grid lines) or percent y axis, one
//! colour per series and a legend in the corner of the plot area that hides the fewest points.
//!
//! Points that are not finite (and, on a log axis, values <= 0) are skipped and break the
//! line; segments are clipped to the axis ranges; a chart without any drawable point still
//! renders its axes with a "no data" note.

use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use stapes_tensor::{Error, Result};

use super::font::{ensure_registered, fit_text, text, text_width};
use super::image::{Rgb, RgbImage};

/// The series colours, in order (matplotlib's "tab10").
pub const PALETTE: [Rgb; 10] = [
    Rgb(31, 119, 180),
    Rgb(255, 127, 14),
    Rgb(44, 160, 44),
    Rgb(214, 39, 40),
    Rgb(148, 103, 189),
    Rgb(140, 86, 75),
    Rgb(227, 119, 194),
    Rgb(127, 127, 127),
    Rgb(188, 189, 34),
    Rgb(23, 190, 207),
];

/// The colour of titles, labels and legend text.
pub(crate) const TEXT: Rgb = Rgb(25, 25, 25);
/// The colour of the frame, axes and tick marks.
pub(crate) const AXIS: Rgb = Rgb(70, 70, 70);
const GRID: Rgb = Rgb(225, 225, 225);
const MINOR_GRID: Rgb = Rgb(243, 243, 243);
const MUTED: Rgb = Rgb(140, 140, 140);
/// Pixels per em of tick labels, axis titles and the legend.
pub(crate) const LABEL_PX: f64 = 16.0;
/// Pixels per em of titles (shrunk to [`LABEL_PX`], then cut, when they do not fit).
pub(crate) const TITLE_PX: f64 = 20.0;
/// Space around the chart and between its parts.
pub(crate) const PAD: i32 = 10;
/// Tick marks are this long; plotters puts their labels twice as far from the axis.
pub(crate) const TICK: i32 = 5;
const LINE_WIDTH: u32 = 2;
/// Series with at most this many points get a marker on each.
const MARKER_MAX_POINTS: usize = 30;
/// The smallest chart that can be laid out.
const MIN_WIDTH: u32 = 240;
const MIN_HEIGHT: u32 = 160;

/// A drawing area of plotters' bitmap backend, in pixel coordinates.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// One curve: `(x, y)` points in drawing order, a legend label and an optional colour
/// (default: the next [`PALETTE`] colour).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend label (an empty label leaves the series out of the legend).
    pub label: String,
    /// The points, drawn in this order.
    pub points: Vec<(f64, f64)>,
    /// The colour; `None` picks [`PALETTE`]`[index % 10]`.
    pub color: Option<Rgb>,
}

impl Series {
    /// A series with the palette colour of its position in the chart.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { label: label.into(), points, color: None }
    }

    /// The same series drawn in `color`.
    pub fn with_color(mut self, color: Rgb) -> Series {
        self.color = Some(color);
        self
    }
}

/// A line chart: what [`plot_curves`] draws.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The title, centred above the plot.
    pub title: String,
    /// The x axis label (e.g. "step", "epoch").
    pub x_label: String,
    /// The y axis label, drawn vertically.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
    /// A logarithmic y axis (values <= 0 are then skipped).
    pub log_y: bool,
    /// Label the y ticks as percentages of 1 (`0.25` → `25%`), for error rates.
    pub percent_y: bool,
    /// The x range; `None` fits the data.
    pub x_range: Option<(f64, f64)>,
    /// The y range; `None` fits the data (with a 5% margin, or whole decades on a log axis).
    pub y_range: Option<(f64, f64)>,
    /// Image width in pixels (at least 240). Default 800.
    pub width: u32,
    /// Image height in pixels (at least 160). Default 500.
    pub height: u32,
}

impl Default for Chart {
    fn default() -> Self {
        Chart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            log_y: false,
            percent_y: false,
            x_range: None,
            y_range: None,
            width: 800,
            height: 500,
        }
    }
}

impl Chart {
    /// An empty 800×500 chart titled `title`.
    pub fn new(title: impl Into<String>) -> Chart {
        Chart { title: title.into(), ..Chart::default() }
    }

    /// Sets the axis labels.
    pub fn labels(mut self, x_label: impl Into<String>, y_label: impl Into<String>) -> Chart {
        self.x_label = x_label.into();
        self.y_label = y_label.into();
        self
    }

    /// Adds a series.
    pub fn with_series(mut self, series: Series) -> Chart {
        self.series.push(series);
        self
    }

    /// Sets the image size.
    pub fn size(mut self, width: u32, height: u32) -> Chart {
        self.width = width;
        self.height = height;
        self
    }
}

/// Draws `chart` into a new image of its size.
pub fn render_chart(chart: &Chart) -> Result<RgbImage> {
    render_figure(std::slice::from_ref(chart), 1)
}

/// Draws `charts` in a grid of `cols` columns (row by row), each cell as large as the largest
/// chart. Errors on no charts, `cols == 0`, or a chart that [`render_chart`] would refuse.
pub fn render_figure(charts: &[Chart], cols: usize) -> Result<RgbImage> {
    const OP: &str = "plot_figure";
    if charts.is_empty() {
        return Err(Error::invalid(OP, "a figure needs at least one chart"));
    }
    if cols == 0 {
        return Err(Error::invalid(OP, "a figure needs at least one column"));
    }
    for c in charts {
        check_size(c)?;
    }
    let cols = cols.min(charts.len());
    let rows = charts.len().div_ceil(cols);
    let cell_w = charts.iter().map(|c| c.width).max().unwrap_or(0);
    let cell_h = charts.iter().map(|c| c.height).max().unwrap_or(0);
    let (w, h) = (u64::from(cell_w) * cols as u64, u64::from(cell_h) * rows as u64);
    let (w, h) = (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
    let mut image = RgbImage::new(w, h, Rgb::WHITE)?;
    ensure_registered()?;
    {
        let root = BitMapBackend::with_buffer(image.pixels_mut(), (w, h)).into_drawing_area();
        for (i, c) in charts.iter().enumerate() {
            let (col, row) = ((i % cols) as u32, (i / cols) as u32);
            let cell = root.clone().shrink((col * cell_w, row * cell_h), (c.width, c.height));
            draw_chart(&cell, c)?;
        }
        root.present().map_err(|e| drawing_failed(OP, e))?;
    }
    Ok(image)
}

/// Draws `chart` and writes it to `path` as a PNG file (atomically).
pub fn plot_curves(path: impl AsRef<Path>, chart: &Chart) -> Result<()> {
    render_chart(chart)?.write_png(path)
}

/// Draws `charts` in a grid of `cols` columns (e.g. loss beside CER) and writes the PNG.
pub fn plot_figure(path: impl AsRef<Path>, charts: &[Chart], cols: usize) -> Result<()> {
    render_figure(charts, cols)?.write_png(path)
}

/// A plotters drawing error as ours.
pub(crate) fn drawing_failed(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::invalid(op, format!("drawing failed: {e}"))
}

fn check_size(chart: &Chart) -> Result<()> {
    if chart.width < MIN_WIDTH || chart.height < MIN_HEIGHT {
        return Err(Error::invalid(
            "plot_curves",
            format!(
                "chart size {}x{} is too small to lay out (need at least {MIN_WIDTH}x{MIN_HEIGHT})",
                chart.width, chart.height
            ),
        ));
    }
    Ok(())
}

/// Checks an explicit range: finite, increasing, positive on a log axis.
fn check_range(op: &'static str, axis: &str, r: (f64, f64), log: bool) -> Result<()> {
    if !(r.0.is_finite() && r.1.is_finite() && r.0 < r.1 && (r.1 - r.0).is_finite()) || (log && r.0 <= 0.0) {
        return Err(Error::invalid(
            op,
            format!(
                "{axis} range ({}, {}) must be finite and increasing{}",
                r.0,
                r.1,
                if log { ", and positive on a log axis" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// How the tick labels of a linear axis are written: as many decimals as tell the ticks
/// apart, scientific notation (`5e6`, `2.5e-5`) for very large or small values, optionally as
/// percents.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TickFormat {
    decimals: usize,
    scientific: bool,
    percent: bool,
}

/// `v` as a mantissa in `[1, 10)` and a power of ten (`(0, 0)` for zero).
fn split_exponent(v: f64) -> (f64, i32) {
    if v == 0.0 || !v.is_finite() {
        return (v, 0);
    }
    let e = (v.abs().log10() + 1e-9).floor() as i32;
    (v / 10f64.powi(e), e)
}

impl TickFormat {
    /// The format for these tick values.
    pub(crate) fn for_ticks(ticks: &[f64], percent: bool) -> TickFormat {
        let scale = if percent { 100.0 } else { 1.0 };
        let max = ticks.iter().map(|t| (t * scale).abs()).filter(|t| t.is_finite()).fold(0.0, f64::max);
        let scientific = max >= 1e6 || (max > 0.0 && max < 1e-3);
        let shown = |t: f64| if scientific { split_exponent(t * scale).0 } else { t * scale };
        let decimals = (0..=9)
            .find(|&d| {
                ticks.iter().all(|&t| {
                    let v = shown(t) * 10f64.powi(d);
                    !v.is_finite() || (v - v.round()).abs() < 1e-6 * v.abs().max(1.0)
                })
            })
            .unwrap_or(9) as usize;
        TickFormat { decimals, scientific, percent }
    }

    /// The label of `v`.
    pub(crate) fn format(&self, v: f64) -> String {
        let v = if self.percent { v * 100.0 } else { v };
        let mut s = if self.scientific && v != 0.0 {
            let (m, e) = split_exponent(v);
            format!("{:.*}e{e}", self.decimals, m)
        } else {
            format!("{:.*}", self.decimals, v)
        };
        if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
            s.remove(0);
        }
        if self.percent {
            s.push('%');
        }
        s
    }
}

/// The label of a tick on a logarithmic axis: plain decimals from 0.001 to 99999, else
/// scientific notation (`1e-5`, `2e6`).
fn format_log_tick(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return format!("{v}");
    }
    let exp = (v.log10() + 1e-9).floor() as i32;
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if (-3..5).contains(&exp) {
        trim(format!("{:.*}", (2 - exp).max(0) as usize, v))
    } else {
        format!("{}e{exp}", trim(format!("{:.2}", v / 10f64.powi(exp))))
    }
}

/// The tick values plotters draws for a linear range with at most `n` labels.
pub(crate) fn linear_ticks(r: &Range<f64>, n: usize) -> Vec<f64> {
    RangedCoordf64::from(r.clone()).key_points(n)
}

/// A linear axis whose ticks are given (plotters' `with_key_points` has no label formatter
/// to go with it); its labels come from the mesh's label formatter.
#[derive(Clone)]
pub(crate) struct TickedAxis {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl TickedAxis {
    /// The axis over `range` with ticks at `ticks`.
    pub(crate) fn new(range: Range<f64>, ticks: Vec<f64>) -> TickedAxis {
        TickedAxis { linear: range.into(), ticks }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.max_num_points() == 0 {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// The most linear ticks (at most `want`) whose labels, `gap` pixels apart, fit in `len`
/// pixels, and their format.
pub(crate) fn fitting_ticks(r: &Range<f64>, want: usize, len: i32, gap: i32) -> (usize, TickFormat) {
    let mut n = want.max(2);
    loop {
        let ticks = linear_ticks(r, n);
        let f = TickFormat::for_ticks(&ticks, false);
        let widest = ticks.iter().map(|&t| text_width(&f.format(t), LABEL_PX)).max().unwrap_or(0);
        if n == 2 || ticks.len() as i32 * (widest + gap) <= len {
            return (n, f);
        }
        n -= 1;
    }
}

/// The data ranges, the y axis kind and tick labels of one chart, worked out before drawing.
struct Axes {
    x: Range<f64>,
    y: Range<f64>,
    x_labels: usize,
    x_format: TickFormat,
    y_labels: usize,
    y_format: Option<TickFormat>,
    has_data: bool,
}

fn draw_chart(area: &Area, chart: &Chart) -> Result<()> {
    const OP: &str = "plot_curves";
    let (w, h) = (chart.width as i32, chart.height as i32);
    let fail = |e| drawing_failed(OP, e);
    let drawable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for p in chart.series.iter().flat_map(|s| s.points.iter()).filter(|p| drawable(p)) {
        (x0, x1, y0, y1) = (x0.min(p.0), x1.max(p.0), y0.min(p.1), y1.max(p.1));
    }
    let has_data = x0 <= x1;

    // Ranges.
    let x_range = match chart.x_range {
        Some(r) => {
            check_range(OP, "x", r, false)?;
            r.0..r.1
        }
        None if !has_data => 0.0..1.0,
        None if x0 == x1 => x0 - 1.0..x0 + 1.0,
        None => x0..x1,
    };
    let y_range = match chart.y_range {
        Some(r) => {
            check_range(OP, "y", r, chart.log_y)?;
            r.0..r.1
        }
        None if !has_data && chart.log_y => 1.0..10.0,
        None if !has_data => 0.0..1.0,
        None if chart.log_y => {
            // Whole decades, widened by a hair so that rounding keeps both ends' labels.
            let lo = 10f64.powf((y0.log10() + 1e-9).floor());
            let hi = 10f64.powf((y1.log10() - 1e-9).ceil()).max(lo * 10.0);
            lo * (1.0 - 1e-9)..hi * (1.0 + 1e-9)
        }
        None if y0 == y1 => {
            let d = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.5 };
            y0 - d..y0 + d
        }
        None => {
            let d = (y1 - y0) * 0.05;
            y0 - d..y1 + d
        }
    };
    for r in [&x_range, &y_range] {
        if !(r.start.is_finite() && r.end.is_finite() && (r.end - r.start).is_finite() && r.start < r.end) {
            return Err(Error::invalid(OP, format!("values too large to plot: range {r:?}")));
        }
    }

    // Vertical layout: title, plot, x tick labels and the x axis title.
    let title_h = if chart.title.is_empty() { 0 } else { TITLE_PX as i32 + PAD };
    let top = PAD + title_h;
    let x_area = 2 * TICK + LABEL_PX as i32 + if chart.x_label.is_empty() { 0 } else { PAD + LABEL_PX as i32 };
    let plot_h = h - top - PAD - x_area;

    // Y ticks, then the horizontal layout from the widest y tick label.
    let (y_labels, y_format, y_tick_w) = if chart.log_y {
        let decades = (y_range.end / y_range.start).log10().ceil().max(1.0) as usize;
        let n = (decades + 1).min((plot_h / 28).max(2) as usize);
        let ticks = LogCoord::from((y_range.clone()).log_scale()).key_points(n);
        let w = ticks.iter().map(|&t| text_width(&format_log_tick(t), LABEL_PX)).max().unwrap_or(0);
        (n, None, w)
    } else {
        let n = (plot_h / 40).max(2) as usize;
        let ticks = linear_ticks(&y_range, n);
        let f = TickFormat::for_ticks(&ticks, chart.percent_y);
        let w = ticks.iter().map(|&t| text_width(&f.format(t), LABEL_PX)).max().unwrap_or(0);
        (n, Some(f), w)
    };
    let y_area = 2 * TICK + y_tick_w + 6 + if chart.y_label.is_empty() { 0 } else { LABEL_PX as i32 + PAD };
    let right = PAD + 14;
    let plot_w = w - PAD - y_area - right;
    if plot_w < 40 || plot_h < 40 {
        return Err(Error::invalid(OP, format!("chart size {w}x{h} leaves no room for the plot after its labels")));
    }
    let (x_labels, x_format) = fitting_ticks(&x_range, (plot_w / 80).max(2) as usize, plot_w, 16);

    if !chart.title.is_empty() {
        let (title, size) = fit_text(&chart.title, TITLE_PX, LABEL_PX - 2.0, w - 2 * PAD);
        let style = text(size, TEXT).pos(Pos::new(HPos::Center, VPos::Top));
        area.draw_text(&title, &style, (w / 2, PAD)).map_err(fail)?;
    }

    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(top)
        .margin_left(PAD)
        .margin_right(right)
        .margin_bottom(PAD)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    let axes = Axes { x: x_range, y: y_range.clone(), x_labels, x_format, y_labels, y_format, has_data };
    if chart.log_y {
        let ctx = builder.build_cartesian_2d(axes.x.clone(), y_range.log_scale()).map_err(fail)?;
        draw_plot(area, ctx, chart, &axes, |v| v.log10())
    } else {
        let ctx = builder.build_cartesian_2d(axes.x.clone(), y_range).map_err(fail)?;
        draw_plot(area, ctx, chart, &axes, |v| v)
    }
}

/// Draws the mesh, frame, curves, legend and "no data" note of `chart` into `ctx`, whose y
/// coordinate is linear or logarithmic; `y_lin` maps a y value to where it is linear (itself,
/// or its log10), for clipping.
fn draw_plot<'a, Y>(
    area: &Area,
    mut ctx: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    chart: &Chart,
    axes: &Axes,
    y_lin: impl Fn(f64) -> f64,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    const OP: &str = "plot_curves";
    let fail = |e| drawing_failed(OP, e);
    let x_fmt = |v: &f64| axes.x_format.format(*v);
    let y_fmt = |v: &f64| match &axes.y_format {
        Some(f) => f.format(*v),
        None => format_log_tick(*v),
    };
    {
        let mut mesh = ctx.configure_mesh();
        mesh.x_labels(axes.x_labels)
            .y_labels(axes.y_labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(text(LABEL_PX, TEXT))
            .axis_desc_style(text(LABEL_PX, TEXT))
            .bold_line_style(RGBColor::from(GRID))
            .light_line_style(RGBColor::from(MINOR_GRID))
            .x_max_light_lines(0)
            .y_max_light_lines(if axes.y_format.is_none() { 10 } else { 0 })
            .axis_style(RGBColor::from(AXIS))
            .set_all_tick_mark_size(TICK);
        if !chart.x_label.is_empty() {
            mesh.x_desc(chart.x_label.as_str());
        }
        if !chart.y_label.is_empty() {
            mesh.y_desc(chart.y_label.as_str());
        }
        mesh.draw().map_err(fail)?;
    }

    // The frame, just outside the plotting area (over plotters' left and bottom axis lines).
    let (px, py) = ctx.plotting_area().get_pixel_range();
    let (bx, by) = area.get_base_pixel();
    let frame = [(px.start - 1 - bx, py.start - 1 - by), (px.end - bx, py.end - by)];
    area.draw(&Rectangle::new(frame, RGBColor::from(AXIS))).map_err(fail)?;

    if !axes.has_data {
        let centre = ((px.start + px.end) / 2 - bx, (py.start + py.end) / 2 - by);
        let style = text(LABEL_PX, MUTED).pos(Pos::new(HPos::Center, VPos::Center));
        area.draw_text("no data", &style, centre).map_err(fail)?;
    }

    // The curves: runs of drawable points, each segment clipped to the axis ranges.
    let (xr, yr) = (axes.x.clone(), axes.y.start..axes.y.end);
    let lin_box = (xr.start, xr.end, y_lin(yr.start), y_lin(yr.end));
    let y_back = |v: f64| if axes.y_format.is_none() { 10f64.powf(v) } else { v };
    let drawable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0);
    let mut pixel_points = Vec::new();
    for (i, s) in chart.series.iter().enumerate() {
        let color = RGBColor::from(s.color.unwrap_or(PALETTE[i % PALETTE.len()]));
        let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: LINE_WIDTH };
        let mut paths: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut open = false;
        for pair in s.points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if !(drawable(&a) && drawable(&b)) {
                open = false;
                continue;
            }
            match clip_segment((a.0, y_lin(a.1)), (b.0, y_lin(b.1)), lin_box) {
                Some((p, q)) => {
                    let (p, q) = ((p.0, y_back(p.1)), (q.0, y_back(q.1)));
                    match paths.last_mut() {
                        Some(path) if open && path.last() == Some(&p) => path.push(q),
                        _ => paths.push(vec![p, q]),
                    }
                    open = q == b;
                }
                None => open = false,
            }
        }
        ctx.draw_series(paths.into_iter().map(|p| PathElement::new(p, style))).map_err(fail)?;

        let inside =
            |p: &(f64, f64)| drawable(p) && p.0 >= xr.start && p.0 <= xr.end && p.1 >= yr.start && p.1 <= yr.end;
        let n_drawable = s.points.iter().filter(|p| drawable(p)).count();
        let markers = s.points.iter().enumerate().filter(|&(k, p)| {
            let isolated = (k == 0 || !drawable(&s.points[k - 1])) && s.points.get(k + 1).is_none_or(|q| !drawable(q));
            inside(p) && (isolated || n_drawable <= MARKER_MAX_POINTS)
        });
        ctx.draw_series(markers.map(|(_, &p)| Circle::new(p, 3, color.filled()))).map_err(fail)?;
        pixel_points.extend(s.points.iter().filter(|p| inside(p)).map(|p| ctx.backend_coord(p)));
    }

    draw_legend(&mut ctx, chart, &pixel_points).map_err(fail)
}

/// Clips segment `a`–`b` to the box `(x0, x1, y0, y1)` (Liang–Barsky); `None` when no part of
/// it is inside.
fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    (x0, x1, y0, y1): (f64, f64, f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - x0), (dx, x1 - a.0), (-dy, a.1 - y0), (dy, y1 - a.1)] {
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
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * dx, a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

/// The legend in the corner of the plot that covers the fewest of `points` (pixels); as many
/// entries as fit, the rest counted on a last "+N more" row.
fn draw_legend<'a, Y>(
    ctx: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    chart: &Chart,
    points: &[(i32, i32)],
) -> std::result::Result<(), DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>
where
    Y: Ranged<ValueType = f64>,
{
    let mut entries: Vec<(String, Option<RGBColor>)> = chart
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.label.is_empty())
        .map(|(i, s)| (s.label.chars().take(40).collect(), Some(s.color.unwrap_or(PALETTE[i % PALETTE.len()]).into())))
        .collect();
    let (px, py) = ctx.plotting_area().get_pixel_range();
    // plotters spaces legend rows 1.25 em apart.
    let row_h = (LABEL_PX * 1.25).ceil() as i32;
    let margin = 8;
    let fit = ((py.end - py.start - 2 * margin - 10) / row_h).max(0) as usize;
    if entries.len() > fit {
        let shown = fit.saturating_sub(1);
        let more = entries.len() - shown;
        entries.truncate(shown);
        if fit > 0 {
            entries.push((format!("+{more} more"), None));
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    let sample = 30;
    let lw = entries.iter().map(|(l, _)| text_width(l, LABEL_PX)).max().unwrap_or(0) + sample + 2 * margin;
    let lh = entries.len() as i32 * row_h + 2 * margin;
    // Upper right, upper left, lower right, lower left: plotters keeps 5 pixels from the edges.
    let (left, right, up, down) = (px.start + 5, px.end - 5 - lw, py.start + 5, py.end - 5 - lh);
    let corners = [(right, up), (left, up), (right, down), (left, down)];
    let covered =
        |&(x, y): &(i32, i32)| points.iter().filter(|p| p.0 >= x && p.0 <= x + lw && p.1 >= y && p.1 <= y + lh).count();
    let best = (0..4).min_by_key(|&i| covered(&corners[i])).unwrap_or(0);
    let position = match best {
        0 => SeriesLabelPosition::UpperRight,
        1 => SeriesLabelPosition::UpperLeft,
        2 => SeriesLabelPosition::LowerRight,
        _ => SeriesLabelPosition::LowerLeft,
    };

    for (label, color) in entries {
        let anno = ctx.draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?;
        anno.label(label);
        if let Some(c) = color {
            let style = ShapeStyle { color: c.to_rgba(), filled: false, stroke_width: LINE_WIDTH + 1 };
            anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + sample - 8, y)], style));
        }
    }
    ctx.configure_series_labels()
        .position(position)
        .margin(margin as u32)
        .legend_area_size(sample as u32)
        .label_font(text(LABEL_PX, TEXT))
        .background_style(RGBColor::from(Rgb::WHITE).filled())
        .border_style(RGBColor(200, 200, 200))
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_small_or_bad_ranges_are_errors() {
        assert!(render_chart(&Chart::new("t").size(100, 100)).is_err());
        let mut c = Chart::new("t").with_series(Series::new("a", vec![(0.0, 1.0), (1.0, 2.0)]));
        c.y_range = Some((1.0, 1.0));
        assert!(render_chart(&c).is_err());
        c.y_range = Some((0.0, 1.0));
        c.log_y = true;
        assert!(render_chart(&c).is_err());
        c.y_range = Some((f64::NEG_INFINITY, 1.0));
        c.log_y = false;
        assert!(render_chart(&c).is_err());
        c.y_range = None;
        assert!(render_chart(&c).is_ok());
        assert!(render_figure(&[], 2).is_err());
        assert!(render_figure(&[c.clone()], 0).is_err());
        let huge = Chart::new("huge").with_series(Series::new("s", vec![(0.0, -f64::MAX), (1.0, f64::MAX)]));
        assert!(render_chart(&huge).is_err());
    }

    #[test]
    fn degenerate_data_renders() {
        let nan = f64::NAN;
        for pts in [vec![], vec![(nan, nan)], vec![(1.0, 5.0)], vec![(0.0, 0.0), (1.0, nan), (2.0, f64::INFINITY)]] {
            let mut c = Chart::new("degenerate").with_series(Series::new("s", pts));
            render_chart(&c).unwrap();
            c.log_y = true;
            render_chart(&c).unwrap();
        }
    }

    #[test]
    fn tick_labels_use_the_decimals_the_ticks_need() {
        let f = TickFormat::for_ticks(&[0.0, 0.2, 0.4, 0.6000000000000001], false);
        assert_eq!([f.format(0.2), f.format(0.6000000000000001), f.format(-0.0)], ["0.2", "0.6", "0.0"]);
        let f = TickFormat::for_ticks(&[0.0, 0.05, 0.1], true);
        assert_eq!([f.format(0.05), f.format(0.1)], ["5%", "10%"]);
        let f = TickFormat::for_ticks(&[-5e6, 0.0, 5e6, 1e7], false);
        assert_eq!([f.format(-5e6), f.format(0.0), f.format(1e7)], ["-5e6", "0", "1e7"]);
        let f = TickFormat::for_ticks(&[-2e-5, 0.0, 2e-5], false);
        assert_eq!([f.format(-2e-5), f.format(0.0)], ["-2e-5", "0"]);
        assert_eq!([format_log_tick(0.01), format_log_tick(300.0), format_log_tick(1e-5)], ["0.01", "300", "1e-5"]);
    }

    #[test]
    fn segments_are_clipped_to_the_box() {
        let b = (0.0, 1.0, 0.0, 1.0);
        assert_eq!(clip_segment((0.2, 0.2), (0.8, 0.8), b), Some(((0.2, 0.2), (0.8, 0.8))));
        assert_eq!(clip_segment((-1.0, 0.5), (2.0, 0.5), b), Some(((0.0, 0.5), (1.0, 0.5))));
        assert_eq!(clip_segment((2.0, 2.0), (3.0, 3.0), b), None);
        assert_eq!(clip_segment((0.5, -1.0), (0.5, -0.5), b), None);
    }
}
