//! Line charts of training curves ([`Chart`], [`plot_curves`]) and grids of them
//! ([`plot_figure`]): title, axes with nice ticks and grid lines, optional log or percent y
//! axis, one colour per series and a legend placed in the corner of the plot area that hides
//! the fewest points.
//!
//! Points that are not finite (and, on a log axis, values <= 0) are skipped and break the
//! line; a chart without any drawable point still renders its axes with a "no data" note.

use std::path::Path;

use stapes_tensor::{Error, Result};

use super::canvas::{text_height, text_width, Canvas, Rect, Rgb};
use super::ticks::{format_log_tick, format_tick, log_ticks, nice_range, nice_step, nice_ticks};

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

pub(crate) const TEXT: Rgb = Rgb(25, 25, 25);
pub(crate) const AXIS: Rgb = Rgb(70, 70, 70);
const GRID: Rgb = Rgb(228, 228, 228);
const MUTED: Rgb = Rgb(140, 140, 140);
/// Font scale of every label.
pub(crate) const SCALE: u32 = 2;
const LINE_WIDTH: f64 = 2.0;
/// Series with at most this many points get a marker on each.
const MARKER_MAX_POINTS: usize = 30;
/// The smallest chart that can be laid out.
const MIN_WIDTH: u32 = 240;
const MIN_HEIGHT: u32 = 160;

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
    /// The y range; `None` fits the data and widens it to nice tick values.
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

/// Draws `chart` into a new canvas of its size.
pub fn render_chart(chart: &Chart) -> Result<Canvas> {
    check_size(chart)?;
    let mut canvas = Canvas::new(chart.width, chart.height, Rgb::WHITE)?;
    draw_chart(&mut canvas, Rect::new(0, 0, chart.width as i32, chart.height as i32), chart)?;
    Ok(canvas)
}

/// Draws `charts` in a grid of `cols` columns (row by row), each cell as large as the largest
/// chart. Errors on no charts, `cols == 0`, or a chart that [`render_chart`] would refuse.
pub fn render_figure(charts: &[Chart], cols: usize) -> Result<Canvas> {
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
    let mut canvas = Canvas::new(w, h, Rgb::WHITE)?;
    for (i, c) in charts.iter().enumerate() {
        let (col, row) = ((i % cols) as i32, (i / cols) as i32);
        let area = Rect::new(col * cell_w as i32, row * cell_h as i32, c.width as i32, c.height as i32);
        draw_chart(&mut canvas, area, c)?;
    }
    Ok(canvas)
}

/// Draws `chart` and writes it to `path` as a PNG file (atomically).
pub fn plot_curves(path: impl AsRef<Path>, chart: &Chart) -> Result<()> {
    render_chart(chart)?.write_png(path)
}

/// Draws `charts` in a grid of `cols` columns (e.g. loss beside CER) and writes the PNG.
pub fn plot_figure(path: impl AsRef<Path>, charts: &[Chart], cols: usize) -> Result<()> {
    render_figure(charts, cols)?.write_png(path)
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

/// A data range mapped onto `[0, 1]`, linearly or logarithmically.
#[derive(Clone, Copy, Debug)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Scale {
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

/// Checks an explicit range: finite, increasing, positive on a log axis.
fn check_range(op: &'static str, axis: &str, r: (f64, f64), log: bool) -> Result<()> {
    if !(r.0.is_finite() && r.1.is_finite() && r.0 < r.1) || (log && r.0 <= 0.0) {
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

/// `s` at the label scale if it fits in `max_w` pixels, else at scale 1, else cut with "..".
pub(crate) fn fit_text(s: &str, max_w: i32) -> (String, u32) {
    if text_width(s, SCALE) <= max_w {
        return (s.to_string(), SCALE);
    }
    if text_width(s, 1) <= max_w {
        return (s.to_string(), 1);
    }
    let mut out: String = s.chars().collect();
    while !out.is_empty() && text_width(&format!("{out}.."), 1) > max_w {
        out.pop();
    }
    (format!("{out}.."), 1)
}

/// Keeps the ticks whose labels (centred on their pixel position, `extent` pixels long along
/// the axis) do not come within `gap` pixels of the previously kept one.
pub(crate) fn spaced<T>(ticks: Vec<(f64, T)>, extent: impl Fn(&T) -> i32, gap: i32) -> Vec<(f64, T)> {
    let mut out: Vec<(f64, T)> = Vec::new();
    let mut last_end = f64::NEG_INFINITY;
    for (pos, t) in ticks {
        let half = f64::from(extent(&t)) / 2.0;
        if pos - half >= last_end + f64::from(gap) {
            last_end = pos + half;
            out.push((pos, t));
        }
    }
    out
}

fn draw_chart(canvas: &mut Canvas, area: Rect, chart: &Chart) -> Result<()> {
    const OP: &str = "plot_curves";
    let th = text_height(SCALE);
    let pad = 12;

    // The drawable points of each series, and the data ranges.
    let drawable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for p in chart.series.iter().flat_map(|s| s.points.iter()).filter(|p| drawable(p)) {
        (x0, x1, y0, y1) = (x0.min(p.0), x1.max(p.0), y0.min(p.1), y1.max(p.1));
    }
    let has_data = x0 <= x1;

    // Vertical layout first: it does not depend on the tick labels.
    let top = pad + if chart.title.is_empty() { 0 } else { th + pad };
    let bottom = pad + 6 + th + if chart.x_label.is_empty() { 0 } else { pad + th };
    let plot_h = area.h - top - bottom;

    // Y axis.
    let y_target = (plot_h / 45).max(2) as usize;
    let y_scale = match chart.y_range {
        Some(r) => {
            check_range(OP, "y", r, chart.log_y)?;
            Scale { lo: r.0, hi: r.1, log: chart.log_y }
        }
        None if !has_data => Scale {
            lo: if chart.log_y { 1.0 } else { 0.0 },
            hi: if chart.log_y { 10.0 } else { 1.0 },
            log: chart.log_y,
        },
        None if chart.log_y => {
            let lo = 10f64.powf((y0.log10() + 1e-9).floor());
            let hi = 10f64.powf((y1.log10() - 1e-9).ceil()).max(lo * 10.0);
            Scale { lo, hi, log: true }
        }
        None => {
            let (lo, hi) = nice_range(y0, y1, y_target);
            Scale { lo, hi, log: false }
        }
    };
    let y_ticks: Vec<(f64, String)> = if y_scale.log {
        log_ticks(y_scale.lo, y_scale.hi).into_iter().map(|v| (v, format_log_tick(v))).collect()
    } else {
        let step = nice_step(y_scale.hi - y_scale.lo, y_target);
        nice_ticks(y_scale.lo, y_scale.hi, y_target)
            .into_iter()
            .map(|v| {
                let label = if chart.percent_y {
                    format!("{}%", format_tick(v * 100.0, step * 100.0))
                } else {
                    format_tick(v, step)
                };
                (v, label)
            })
            .collect()
    };
    let label_w = y_ticks.iter().map(|(_, l)| text_width(l, SCALE)).max().unwrap_or(0);
    let left = pad + if chart.y_label.is_empty() { 0 } else { th + pad } + label_w + 10;
    let right = pad + 24;
    let plot = Rect::new(area.x + left, area.y + top, area.w - left - right, plot_h);
    if plot.w < 40 || plot.h < 40 {
        return Err(Error::invalid(
            OP,
            format!("chart size {}x{} leaves no room for the plot after its labels", area.w, area.h),
        ));
    }

    // X axis.
    let x_target = (plot.w / 90).max(2) as usize;
    let x_scale = match chart.x_range {
        Some(r) => {
            check_range(OP, "x", r, false)?;
            Scale { lo: r.0, hi: r.1, log: false }
        }
        None if !has_data => Scale { lo: 0.0, hi: 1.0, log: false },
        None if x0 == x1 => Scale { lo: x0 - 1.0, hi: x0 + 1.0, log: false },
        None => Scale { lo: x0, hi: x1, log: false },
    };
    let x_step = nice_step(x_scale.hi - x_scale.lo, x_target);
    let x_ticks: Vec<(f64, String)> =
        nice_ticks(x_scale.lo, x_scale.hi, x_target).into_iter().map(|v| (v, format_tick(v, x_step))).collect();

    // Data to pixel centres: the first and last pixel columns/rows inside the frame.
    let px = |x: f64| f64::from(plot.x) + 0.5 + x_scale.frac(x) * f64::from(plot.w - 1);
    let py = |y: f64| f64::from(plot.bottom()) - 0.5 - y_scale.frac(y) * f64::from(plot.h - 1);

    // Grid, frame, ticks and labels.
    // Spaced from the bottom up (positions negated to ascend), then back to pixels.
    let y_ticks: Vec<(f64, String)> = spaced(y_ticks.into_iter().map(|(v, l)| (-py(v), l)).collect(), |_| th, 4)
        .into_iter()
        .map(|(p, l)| (-p, l))
        .collect();
    let x_ticks = spaced(x_ticks.into_iter().map(|(v, l)| (px(v), l)).collect(), |l| text_width(l, SCALE), 12);
    for &(y, _) in &y_ticks {
        canvas.fill_rect(Rect::new(plot.x, y.floor() as i32, plot.w, 1), GRID);
    }
    for &(x, _) in &x_ticks {
        canvas.fill_rect(Rect::new(x.floor() as i32, plot.y, 1, plot.h), GRID);
    }
    canvas.stroke_rect(plot, AXIS);
    for (y, label) in &y_ticks {
        let yi = y.floor() as i32;
        canvas.fill_rect(Rect::new(plot.x - 6, yi, 6, 1), AXIS);
        let w = text_width(label, SCALE);
        canvas.text(plot.x - 10 - w, yi - th / 2 + 1, label, SCALE, TEXT);
    }
    for (x, label) in &x_ticks {
        let xi = x.floor() as i32;
        canvas.fill_rect(Rect::new(xi, plot.bottom(), 1, 6), AXIS);
        let w = text_width(label, SCALE);
        canvas.text(xi - w / 2, plot.bottom() + 8, label, SCALE, TEXT);
    }
    if !chart.title.is_empty() {
        let (title, scale) = fit_text(&chart.title, area.w - 2 * pad);
        let w = text_width(&title, scale);
        let x = (plot.x + plot.w / 2 - w / 2).clamp(area.x + pad, (area.right() - pad - w).max(area.x));
        canvas.text(x, area.y + pad + (th - text_height(scale)) / 2, &title, scale, TEXT);
    }
    if !chart.x_label.is_empty() {
        let (label, scale) = fit_text(&chart.x_label, plot.w);
        let w = text_width(&label, scale);
        canvas.text(plot.x + plot.w / 2 - w / 2, area.bottom() - pad - th, &label, scale, TEXT);
    }
    if !chart.y_label.is_empty() {
        let (label, scale) = fit_text(&chart.y_label, plot.h);
        let w = text_width(&label, scale);
        canvas.text_vertical(area.x + pad, plot.y + plot.h / 2 - w / 2, &label, scale, TEXT);
    }
    if !has_data {
        let note = "no data";
        let w = text_width(note, SCALE);
        canvas.text(plot.x + plot.w / 2 - w / 2, plot.y + plot.h / 2 - th / 2, note, SCALE, MUTED);
    }

    // The curves, clipped to the inside of the frame.
    let inside = Rect::new(plot.x + 1, plot.y + 1, plot.w - 2, plot.h - 2);
    let mut all_points = Vec::new();
    for (i, s) in chart.series.iter().enumerate() {
        let color = s.color.unwrap_or(PALETTE[i % PALETTE.len()]);
        let pts: Vec<(f64, f64)> =
            s.points.iter().map(|p| if drawable(p) { (px(p.0), py(p.1)) } else { (f64::NAN, f64::NAN) }).collect();
        canvas.polyline_clipped(&pts, LINE_WIDTH, color, inside);
        let n_finite = pts.iter().filter(|p| p.0.is_finite()).count();
        for (k, p) in pts.iter().enumerate() {
            let isolated = p.0.is_finite()
                && (k == 0 || !pts[k - 1].0.is_finite())
                && pts.get(k + 1).is_none_or(|q| !q.0.is_finite());
            if p.0.is_finite() && (isolated || n_finite <= MARKER_MAX_POINTS) {
                // A disc of radius 3.5, clipped like the lines (points on the frame show half).
                canvas.polyline_clipped(&[*p], 7.0, color, inside);
            }
        }
        all_points.extend(pts.into_iter().filter(|p| p.0.is_finite()));
    }

    draw_legend(canvas, chart, inside, &all_points);
    Ok(())
}

/// The legend in the corner of `inside` that covers the fewest points.
fn draw_legend(canvas: &mut Canvas, chart: &Chart, inside: Rect, points: &[(f64, f64)]) {
    let mut entries: Vec<(String, Option<Rgb>)> = chart
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.label.is_empty())
        .map(|(i, s)| (s.label.chars().take(40).collect(), Some(s.color.unwrap_or(PALETTE[i % PALETTE.len()]))))
        .collect();
    let th = text_height(SCALE);
    let row_h = th + 6;
    // As many rows as fit in the plot; the rest are counted on a last "+N more" row.
    let fit = ((inside.h - 2 * 8 - 10) / row_h).max(0) as usize;
    if entries.len() > fit {
        let shown = fit.saturating_sub(1);
        let more = entries.len() - shown;
        entries.truncate(shown);
        if fit > 0 {
            entries.push((format!("+{more} more"), None));
        }
    }
    if entries.is_empty() {
        return;
    }
    let sample = 28;
    let w = 10 + sample + 8 + entries.iter().map(|(l, _)| text_width(l, SCALE)).max().unwrap_or(0) + 10;
    let h = 8 + row_h * entries.len() as i32 + 2;
    let margin = 8;
    let corners = [
        (inside.right() - margin - w, inside.y + margin),
        (inside.x + margin, inside.y + margin),
        (inside.right() - margin - w, inside.bottom() - margin - h),
        (inside.x + margin, inside.bottom() - margin - h),
    ];
    let covered = |(x, y): (i32, i32)| {
        let r = Rect::new(x, y, w, h);
        points.iter().filter(|p| r.contains(p.0 as i32, p.1 as i32)).count()
    };
    let (x, y) = corners.into_iter().min_by_key(|&c| covered(c)).unwrap_or(corners[0]);
    let frame = Rect::new(x, y, w, h).intersect(&inside);
    canvas.fill_rect(frame, Rgb::WHITE);
    canvas.stroke_rect(frame, Rgb(200, 200, 200));
    for (k, (label, color)) in entries.iter().enumerate() {
        let ry = y + 8 + k as i32 * row_h;
        let mid = f64::from(ry + th / 2);
        let x0 = f64::from(x + 10);
        if let Some(color) = color {
            canvas.polyline_clipped(&[(x0, mid), (x0 + f64::from(sample), mid)], LINE_WIDTH + 1.0, *color, frame);
        }
        canvas.text(x + 10 + sample + 8, ry + 1, label, SCALE, if color.is_some() { TEXT } else { MUTED });
    }
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
        c.y_range = None;
        assert!(render_chart(&c).is_ok());
        assert!(render_figure(&[], 2).is_err());
        assert!(render_figure(&[c.clone()], 0).is_err());
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
    fn fit_text_shrinks_then_cuts() {
        assert_eq!(fit_text("abc", 100), ("abc".to_string(), SCALE));
        assert_eq!(fit_text("abcdefghij", 80).1, 1);
        let (s, scale) = fit_text("abcdefghijklmnopqrstuvwxyz", 60);
        assert_eq!(scale, 1);
        assert!(s.ends_with("..") && text_width(&s, 1) <= 60);
    }
}
