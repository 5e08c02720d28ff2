//! Spectrogram images ([`spectrogram_png`]): a `[rows, frames]` feature matrix as a heat map,
//! low rows (low frequencies) at the bottom, with a time axis in seconds, a frequency axis in
//! kHz (linear or mel-warped) or in row indices, and a colour bar.
//!
//! Values can first be turned into decibels (`10 log10` of a power, `20 log10` of an
//! amplitude, floored at 1e-10 like torchaudio) and clamped to `top_db` below the maximum
//! (torchaudio's `AmplitudeToDB(top_db=80)`). The colour range is then the finite minimum and
//! maximum (or the given `vmin`/`vmax`). When the matrix has more frames (rows) than the image
//! has pixel columns (rows), each pixel shows the largest value it covers, so narrow peaks
//! stay visible; when it has fewer, cells are drawn as blocks of whole pixels. Missing values
//! (NaN) are drawn grey.
//!
//! plotters lays out and draws the axes, ticks, labels and title; the heat map and colour bar
//! pixels are then written straight into the image, inside the plotting areas plotters
//! reports.

use std::path::Path;

use stapes_tensor::{Error, Result};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::chart::{
    drawing_failed, fitting_ticks, linear_ticks, Area, TickFormat, TickedAxis, AXIS, LABEL_PX, PAD, TEXT, TICK,
    TITLE_PX,
};
use super::font::{ensure_registered, fit_text, text, text_width};
use super::image::{Rect, Rgb, RgbImage, MAX_IMAGE_SIDE};
use crate::features::{hz_to_mel, MelScaleKind, MelSpectrogramConfig, SpectrogramConfig};

/// A perceptually uniform colour map, defined by 9 control points and interpolated linearly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Colormap {
    /// matplotlib's viridis: dark purple through teal to yellow.
    #[default]
    Viridis,
    /// matplotlib's magma: black through purple and orange to pale yellow.
    Magma,
    /// Black to white.
    Gray,
}

const VIRIDIS: [Rgb; 9] = [
    Rgb(68, 1, 84),
    Rgb(71, 45, 123),
    Rgb(59, 82, 139),
    Rgb(44, 114, 142),
    Rgb(33, 145, 140),
    Rgb(40, 174, 128),
    Rgb(94, 201, 98),
    Rgb(173, 220, 48),
    Rgb(253, 231, 37),
];

const MAGMA: [Rgb; 9] = [
    Rgb(0, 0, 4),
    Rgb(29, 17, 71),
    Rgb(81, 18, 124),
    Rgb(130, 38, 129),
    Rgb(183, 55, 121),
    Rgb(231, 82, 99),
    Rgb(252, 137, 97),
    Rgb(254, 194, 135),
    Rgb(252, 253, 191),
];

const MISSING: Rgb = Rgb(128, 128, 128);

impl Colormap {
    /// The colour at `t` in `[0, 1]` (clamped; NaN gives the low end).
    pub fn color(self, t: f32) -> Rgb {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let table: &[Rgb] = match self {
            Colormap::Viridis => &VIRIDIS,
            Colormap::Magma => &MAGMA,
            Colormap::Gray => return Rgb::BLACK.lerp(Rgb::WHITE, t),
        };
        let pos = t * (table.len() - 1) as f32;
        let i = (pos.floor() as usize).min(table.len() - 2);
        table[i].lerp(table[i + 1], pos - i as f32)
    }
}

/// How the values are turned into colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ValueScale {
    /// As they are (log-mels, MFCCs, normalised features).
    Linear,
    /// Powers, shown in decibels: `10 log10(max(x, 1e-10))`.
    #[default]
    PowerDb,
    /// Magnitudes, shown in decibels: `20 log10(max(x, 1e-10))`.
    AmplitudeDb,
}

/// What the rows of the matrix are, for the vertical axis.
#[derive(Clone, Debug, PartialEq)]
pub enum FreqAxis {
    /// Row indices under a label ("mel band", "coefficient", "bin").
    Index {
        /// The axis label.
        label: String,
    },
    /// Linear FFT bins: row `r` of `rows` is `r * max_hz / (rows - 1)` Hz (a one-sided
    /// spectrum has `max_hz = sample_rate / 2`).
    Linear {
        /// The frequency of the last row.
        max_hz: f64,
    },
    /// Mel bands as torchaudio's filterbank spaces them: band `m` of `n` is centred at the mel
    /// `mel(f_min) + (m + 1) (mel(f_max) - mel(f_min)) / (n + 1)`; ticks are in kHz.
    Mel {
        /// Lowest frequency of the filterbank.
        f_min: f64,
        /// Highest frequency of the filterbank.
        f_max: f64,
        /// The mel scale.
        scale: MelScaleKind,
    },
}

/// Options of [`spectrogram_png`].
#[derive(Clone, Debug, PartialEq)]
pub struct SpectrogramPlot {
    /// The title (none when empty).
    pub title: String,
    /// Decibel conversion. Default [`ValueScale::PowerDb`].
    pub values: ValueScale,
    /// With a decibel scale, clamp values to at most this many dB below the maximum. Default
    /// 80, as torchaudio's MFCC uses.
    pub top_db: Option<f32>,
    /// The value of the lowest colour; default the (clamped) minimum.
    pub vmin: Option<f32>,
    /// The value of the highest colour; default the maximum.
    pub vmax: Option<f32>,
    /// Sample rate in Hz, for the time axis (0: label frames instead of seconds).
    pub sample_rate: u32,
    /// Samples between frames, for the time axis.
    pub hop_length: usize,
    /// The vertical axis.
    pub freq_axis: FreqAxis,
    /// The colour map. Default viridis.
    pub colormap: Colormap,
    /// Largest heat-map width in pixels (more frames are merged). Default 1200.
    pub max_width: u32,
    /// Largest heat-map height in pixels (more rows are merged). Default 512.
    pub max_height: u32,
}

impl Default for SpectrogramPlot {
    fn default() -> Self {
        SpectrogramPlot {
            title: String::new(),
            values: ValueScale::PowerDb,
            top_db: Some(80.0),
            vmin: None,
            vmax: None,
            sample_rate: 16000,
            hop_length: 160,
            freq_axis: FreqAxis::Index { label: "bin".to_string() },
            colormap: Colormap::Viridis,
            max_width: 1200,
            max_height: 512,
        }
    }
}

/// The hop a spectrogram configuration uses (torchaudio: `win_length / 2` by default).
fn hop_of(c: &SpectrogramConfig) -> usize {
    c.hop_length.unwrap_or(c.win_length.unwrap_or(c.n_fft) / 2)
}

impl SpectrogramPlot {
    /// Options for the output of a `MelSpectrogram` with `config`: decibels of the power (or
    /// magnitude), a mel-warped kHz axis, seconds from its hop and sample rate.
    pub fn for_mel(config: &MelSpectrogramConfig) -> SpectrogramPlot {
        let spec = &config.spectrogram;
        SpectrogramPlot {
            values: if spec.power == Some(1.0) { ValueScale::AmplitudeDb } else { ValueScale::PowerDb },
            sample_rate: config.sample_rate,
            hop_length: hop_of(spec),
            freq_axis: FreqAxis::Mel {
                f_min: config.f_min,
                f_max: config.f_max.unwrap_or(f64::from(config.sample_rate / 2)),
                scale: config.mel_scale,
            },
            ..SpectrogramPlot::default()
        }
    }

    /// Options for the output of a one-sided `Spectrogram` with `config` at `sample_rate`:
    /// decibels, a linear kHz axis.
    pub fn for_spectrogram(config: &SpectrogramConfig, sample_rate: u32) -> SpectrogramPlot {
        SpectrogramPlot {
            values: if config.power == Some(1.0) { ValueScale::AmplitudeDb } else { ValueScale::PowerDb },
            sample_rate,
            hop_length: hop_of(config),
            freq_axis: FreqAxis::Linear { max_hz: f64::from(sample_rate) / 2.0 },
            ..SpectrogramPlot::default()
        }
    }

    /// Options for MFCCs (or any feature rows) with `hop_length` at `sample_rate`: values as
    /// they are, row indices labelled `row_label`.
    pub fn for_coefficients(row_label: &str, hop_length: usize, sample_rate: u32) -> SpectrogramPlot {
        SpectrogramPlot {
            values: ValueScale::Linear,
            top_db: None,
            sample_rate,
            hop_length,
            freq_axis: FreqAxis::Index { label: row_label.to_string() },
            ..SpectrogramPlot::default()
        }
    }
}

/// The cells `[a, b)` of `n` that output pixel `i` of `m` covers (at least one).
fn cell_range(i: usize, m: usize, n: usize) -> (usize, usize) {
    let a = i * n / m;
    let b = ((i + 1) * n / m).max(a + 1).min(n);
    (a.min(n - 1), b)
}

/// Output pixels for `n` cells: whole-pixel blocks up to `min` pixels, at most `max`.
fn pixels_for(n: usize, min: u32, max: u32) -> u32 {
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    if n32 >= max {
        max
    } else {
        let k = min.div_ceil(n32.max(1)).max(1);
        n32.saturating_mul(k).min(max).max(n32)
    }
}

/// The colour range and unit of the values after the decibel conversion and `top_db` clamp.
struct Levels {
    vals: Vec<f32>,
    lo: f32,
    hi: f32,
    unit: &'static str,
}

fn levels(data: &[f32], opts: &SpectrogramPlot) -> Levels {
    let mut vals = data.to_vec();
    let multiplier = match opts.values {
        ValueScale::Linear => None,
        ValueScale::PowerDb => Some(10.0f32),
        ValueScale::AmplitudeDb => Some(20.0),
    };
    if let Some(m) = multiplier {
        for v in vals.iter_mut().filter(|v| !v.is_nan()) {
            *v = m * v.max(1e-10).log10();
        }
        if let Some(top) = opts.top_db {
            let max = vals.iter().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            if max.is_finite() {
                vals.iter_mut().filter(|v| !v.is_nan()).for_each(|v| *v = v.max(max - top));
            }
        }
    }
    let finite = || vals.iter().copied().filter(|v| v.is_finite());
    let lo = opts.vmin.unwrap_or_else(|| finite().fold(f32::INFINITY, f32::min));
    let hi = opts.vmax.unwrap_or_else(|| finite().fold(f32::NEG_INFINITY, f32::max));
    let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
        (true, true) if hi > lo => (lo, hi),
        (true, _) => (lo, lo + 1.0),
        (false, true) => (hi - 1.0, hi),
        (false, false) => (0.0, 1.0),
    };
    Levels { vals, lo, hi, unit: if multiplier.is_some() { "dB" } else { "" } }
}

/// The ticks of the vertical axis as (row position, label), row `r` centred at position `r`,
/// and the axis title. Ticks closer than `min_rows` to the one below are dropped (mel ticks
/// crowd at high frequencies).
fn row_ticks(rows: usize, axis: &FreqAxis, max_ticks: usize, min_rows: f64) -> (Vec<(f64, String)>, String) {
    let (ticks, title) = all_row_ticks(rows, axis, max_ticks);
    let mut kept: Vec<(f64, String)> = Vec::new();
    for t in ticks {
        if kept.last().is_none_or(|k| t.0 - k.0 >= min_rows) {
            kept.push(t);
        }
    }
    (kept, title)
}

fn all_row_ticks(rows: usize, axis: &FreqAxis, max_ticks: usize) -> (Vec<(f64, String)>, String) {
    let labelled = |values: Vec<f64>, pos: &dyn Fn(f64) -> f64| {
        let f = TickFormat::for_ticks(&values, false);
        values
            .into_iter()
            .map(|v| (pos(v), f.format(v)))
            .filter(|(p, _)| p.is_finite() && *p >= -0.5 && *p <= rows as f64 - 0.5)
            .collect::<Vec<_>>()
    };
    let top_row = (rows - 1) as f64;
    match axis {
        FreqAxis::Index { label } => {
            let values = linear_ticks(&(0.0..top_row), max_ticks).into_iter().filter(|v| v.fract() == 0.0).collect();
            (labelled(values, &|v| v), label.clone())
        }
        FreqAxis::Linear { max_hz } => {
            let (div, title) = if *max_hz >= 2000.0 { (1000.0, "frequency (kHz)") } else { (1.0, "frequency (Hz)") };
            let top = max_hz / div;
            let rows_per_unit = if top > 0.0 { top_row / top } else { 0.0 };
            (labelled(linear_ticks(&(0.0..top), max_ticks), &|f| f * rows_per_unit), title.to_string())
        }
        FreqAxis::Mel { f_min, f_max, scale } => {
            let (m0, m1) = (hz_to_mel(*f_min, *scale), hz_to_mel(*f_max, *scale));
            let (div, title) =
                if *f_max >= 2000.0 { (1000.0, "frequency (kHz, mel)") } else { (1.0, "frequency (Hz, mel)") };
            let pos = |f: f64| (hz_to_mel(f * div, *scale) - m0) / (m1 - m0) * (rows + 1) as f64 - 1.0;
            (labelled(linear_ticks(&(f_min / div..f_max / div), max_ticks), &pos), title.to_string())
        }
    }
}

/// The label of the tick at `pos` among `ticks`.
fn label_at(ticks: &[(f64, String)], pos: f64) -> String {
    ticks.iter().find(|(p, _)| (p - pos).abs() < 1e-9).map(|(_, l)| l.clone()).unwrap_or_default()
}

/// Renders a `[rows, frames]` row-major matrix (row 0 = lowest frequency) as a heat map;
/// returns the image and the heat map's rectangle in it. Errors on an empty matrix, a
/// `data` length other than `rows * frames`, or a bad `top_db`/`vmin`/`vmax`.
pub fn render_spectrogram(
    data: &[f32],
    rows: usize,
    frames: usize,
    opts: &SpectrogramPlot,
) -> Result<(RgbImage, Rect)> {
    const OP: &str = "spectrogram_png";
    if rows == 0 || frames == 0 {
        return Err(Error::invalid(OP, format!("nothing to draw: {rows} rows x {frames} frames")));
    }
    if rows.checked_mul(frames) != Some(data.len()) {
        return Err(Error::shape(
            OP,
            format!("{rows} rows x {frames} frames need that many values, got {}", data.len()),
        ));
    }
    if let Some(t) = opts.top_db {
        if !(t.is_finite() && t >= 0.0) {
            return Err(Error::invalid(OP, format!("top_db must be finite and >= 0, got {t}")));
        }
    }
    for (name, v) in [("vmin", opts.vmin), ("vmax", opts.vmax)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(Error::invalid(OP, format!("{name} must be finite, got {v:?}")));
        }
    }
    if opts.max_width < 16 || opts.max_height < 16 {
        return Err(Error::invalid(OP, "max_width and max_height must be at least 16 pixels"));
    }
    ensure_registered()?;
    let fail = |e| drawing_failed(OP, e);
    let Levels { vals, lo, hi, unit } = levels(data, opts);

    // Ticks: rows, time and the colour bar.
    let hw = pixels_for(frames, 400, opts.max_width.min(MAX_IMAGE_SIDE)) as i32;
    let hh = pixels_for(rows, 256, opts.max_height.min(MAX_IMAGE_SIDE)) as i32;
    let want = (hh / if matches!(opts.freq_axis, FreqAxis::Mel { .. }) { 20 } else { 36 }).max(2);
    let (y_ticks, y_title) = row_ticks(rows, &opts.freq_axis, want as usize, 24.0 * rows as f64 / f64::from(hh));
    let seconds = opts.sample_rate > 0 && opts.hop_length > 0;
    let per_frame = if seconds { opts.hop_length as f64 / f64::from(opts.sample_rate) } else { 1.0 };
    let t_end = (frames - 1) as f64 * per_frame;
    let (x_n, x_format) = fitting_ticks(&(0.0..t_end), (hw / 80).max(2) as usize, hw, 16);
    let x_ticks: Vec<f64> = linear_ticks(&(0.0..t_end), x_n).into_iter().filter(|&t| t >= 0.0).collect();
    let c_range = f64::from(lo)..f64::from(hi);
    let c_ticks = linear_ticks(&c_range, (hh / 36).max(2) as usize);
    let c_format = TickFormat::for_ticks(&c_ticks, false);

    // Layout: the heat map is exactly hw × hh pixels.
    let label_h = LABEL_PX as i32;
    let y_label_w = y_ticks.iter().map(|(_, l)| text_width(l, LABEL_PX)).max().unwrap_or(0);
    let c_label_w = c_ticks.iter().map(|&v| text_width(&c_format.format(v), LABEL_PX)).max().unwrap_or(0);
    let title_h = if opts.title.is_empty() { 0 } else { TITLE_PX as i32 + PAD };
    let unit_h = if unit.is_empty() { label_h / 2 } else { label_h + 8 };
    let top = PAD + title_h + unit_h;
    let y_area = label_h + PAD + y_label_w + 2 * TICK + 6;
    let x_area = 2 * TICK + label_h + PAD + label_h;
    let (bar_gap, bar_w) = (20, 18);
    let bar_area = 2 * TICK + c_label_w + 6;
    let right = bar_gap + bar_w + bar_area.max(text_width(unit, LABEL_PX) - bar_w) + PAD;
    let width = PAD + y_area + hw + right;
    let height = top + hh + x_area + PAD;
    let mut image = RgbImage::new(width as u32, height as u32, Rgb::WHITE)?;

    let (heat, bar) = {
        let backend: BitMapBackend =
            BitMapBackend::with_buffer_and_format(image.pixels_mut(), (width as u32, height as u32))
                .map_err(|e| drawing_failed(OP, e))?;
        let root = backend.into_drawing_area();

        // The heat map's axes: time in seconds (frame f centred at f * hop / sample_rate) and
        // row positions (row r centred at r), labelled with the ticks worked out above.
        let x_coord = TickedAxis::new(-0.5 * per_frame..(frames as f64 - 0.5) * per_frame, x_ticks);
        let y_coord = TickedAxis::new(-0.5..rows as f64 - 0.5, y_ticks.iter().map(|t| t.0).collect());
        let mut ctx = ChartBuilder::on(&root)
            .margin_top(top)
            .margin_left(PAD)
            .margin_bottom(PAD)
            .margin_right(right)
            .x_label_area_size(x_area)
            .y_label_area_size(y_area)
            .build_cartesian_2d(x_coord, y_coord)
            .map_err(fail)?;
        let x_fmt = |v: &f64| x_format.format(*v);
        let y_fmt = |v: &f64| label_at(&y_ticks, *v);
        ctx.configure_mesh()
            .disable_mesh()
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(text(LABEL_PX, TEXT))
            .axis_desc_style(text(LABEL_PX, TEXT))
            .axis_style(RGBColor::from(AXIS))
            .set_all_tick_mark_size(TICK)
            .x_desc(if seconds { "time (s)" } else { "frame" })
            .y_desc(fit_text(&y_title, LABEL_PX, LABEL_PX - 4.0, hh).0)
            .draw()
            .map_err(fail)?;
        let heat = pixel_rect(ctx.plotting_area().get_pixel_range());
        frame(&root, heat)?;

        // The colour bar: the value range upwards, its ticks on the right.
        let bar_coord = TickedAxis::new(c_range.clone(), c_ticks.clone());
        let mut bar_ctx = ChartBuilder::on(&root)
            .margin_top(top)
            .margin_left(PAD + y_area + hw + bar_gap)
            .margin_bottom(x_area + PAD)
            .margin_right(width - (PAD + y_area + hw + bar_gap + bar_w + bar_area))
            .right_y_label_area_size(bar_area)
            .build_cartesian_2d(0.0..1.0, bar_coord)
            .map_err(fail)?;
        let c_fmt = |v: &f64| c_format.format(*v);
        bar_ctx
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_label_formatter(&c_fmt)
            .label_style(text(LABEL_PX, TEXT))
            .axis_style(RGBColor::from(AXIS))
            .set_all_tick_mark_size(TICK)
            .draw()
            .map_err(fail)?;
        let bar = pixel_rect(bar_ctx.plotting_area().get_pixel_range());
        frame(&root, bar)?;
        if !unit.is_empty() {
            let style = text(LABEL_PX, TEXT).pos(Pos::new(HPos::Left, VPos::Bottom));
            root.draw_text(unit, &style, (bar.x, bar.y - 6)).map_err(fail)?;
        }
        if !opts.title.is_empty() {
            let (title, size) = fit_text(&opts.title, TITLE_PX, LABEL_PX - 2.0, width - 2 * PAD);
            let half = text_width(&title, size) / 2;
            let centre = (heat.x + heat.w / 2).clamp(PAD + half, (width - PAD - half).max(PAD + half));
            let style = text(size, TEXT).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(&title, &style, (centre, PAD)).map_err(fail)?;
        }
        root.present().map_err(fail)?;
        (heat, bar)
    };

    // The heat map: each pixel shows the largest value of the cells it covers.
    let t_of = |v: f32| (v - lo) / (hi - lo);
    let (hw, hh) = (heat.w.max(0) as usize, heat.h.max(0) as usize);
    let col_ranges: Vec<(usize, usize)> = (0..hw).map(|i| cell_range(i, hw, frames)).collect();
    for py in 0..hh {
        let (r0, r1) = cell_range(hh - 1 - py, hh, rows);
        for (px, &(f0, f1)) in col_ranges.iter().enumerate() {
            let mut best = f32::NAN;
            for r in r0..r1 {
                for &v in &vals[r * frames + f0..r * frames + f1] {
                    if !v.is_nan() && (best.is_nan() || v > best) {
                        best = v;
                    }
                }
            }
            let color = if best.is_nan() { MISSING } else { opts.colormap.color(t_of(best)) };
            image.set_pixel(heat.x + px as i32, heat.y + py as i32, color);
        }
    }
    // The colour bar, `hi` at the top.
    for y in 0..bar.h {
        let t = if bar.h > 1 { 1.0 - y as f32 / (bar.h - 1) as f32 } else { 1.0 };
        let color = opts.colormap.color(t);
        for x in 0..bar.w {
            image.set_pixel(bar.x + x, bar.y + y, color);
        }
    }
    Ok((image, heat))
}

/// A plotters pixel range as a rectangle.
fn pixel_rect((x, y): (std::ops::Range<i32>, std::ops::Range<i32>)) -> Rect {
    Rect::new(x.start, y.start, x.end - x.start, y.end - y.start)
}

/// A one-pixel frame just outside `r`.
fn frame(root: &Area, r: Rect) -> Result<()> {
    root.draw(&Rectangle::new([(r.x - 1, r.y - 1), (r.right(), r.bottom())], RGBColor::from(AXIS)))
        .map_err(|e| drawing_failed("spectrogram_png", e))
}

/// Renders `data` (`[rows, frames]`, row-major, row 0 the lowest frequency) with
/// [`render_spectrogram`] and writes the PNG to `path` (atomically).
pub fn spectrogram_png(
    path: impl AsRef<Path>,
    data: &[f32],
    rows: usize,
    frames: usize,
    opts: &SpectrogramPlot,
) -> Result<()> {
    render_spectrogram(data, rows, frames, opts)?.0.write_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormaps_hit_their_ends_and_clamp() {
        assert_eq!(Colormap::Viridis.color(0.0), Rgb(68, 1, 84));
        assert_eq!(Colormap::Viridis.color(1.0), Rgb(253, 231, 37));
        assert_eq!(Colormap::Viridis.color(7.0), Rgb(253, 231, 37));
        assert_eq!(Colormap::Viridis.color(f32::NAN), Rgb(68, 1, 84));
        assert_eq!(Colormap::Magma.color(0.5), MAGMA[4]);
        assert_eq!(Colormap::Gray.color(1.0), Rgb::WHITE);
        // Viridis gets lighter all the way up.
        let luma = |c: Rgb| 0.299 * f32::from(c.0) + 0.587 * f32::from(c.1) + 0.114 * f32::from(c.2);
        for i in 0..100 {
            let (a, b) = (Colormap::Viridis.color(i as f32 / 100.0), Colormap::Viridis.color((i + 1) as f32 / 100.0));
            assert!(luma(b) >= luma(a), "{i}");
        }
    }

    #[test]
    fn cell_ranges_tile_the_cells() {
        for (m, n) in [(10, 3), (3, 10), (7, 7), (1200, 5000), (400, 1)] {
            let mut next = 0;
            for i in 0..m {
                let (a, b) = cell_range(i, m, n);
                assert!(a < b && b <= n);
                assert!(a <= next && b >= next.min(n));
                next = b;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let o = SpectrogramPlot::default();
        assert!(render_spectrogram(&[], 0, 0, &o).is_err());
        assert!(render_spectrogram(&[1.0; 5], 2, 3, &o).is_err());
        assert!(render_spectrogram(&[1.0; 6], 2, 3, &SpectrogramPlot { top_db: Some(-1.0), ..o.clone() }).is_err());
        assert!(render_spectrogram(&[1.0; 6], 2, 3, &SpectrogramPlot { vmin: Some(f32::NAN), ..o.clone() }).is_err());
        // NaN, infinities, constants and a single cell render.
        for d in [vec![f32::NAN; 6], vec![f32::INFINITY, f32::NEG_INFINITY, 0.0, -1.0, 1.0, f32::NAN], vec![3.0; 6]] {
            for values in [ValueScale::Linear, ValueScale::PowerDb] {
                render_spectrogram(&d, 2, 3, &SpectrogramPlot { values, ..o.clone() }).unwrap();
            }
        }
        render_spectrogram(&[1.0], 1, 1, &o).unwrap();
        // Wider than any image the renderers make: an error, not a panic.
        let wide = SpectrogramPlot { max_width: u32::MAX, ..o.clone() };
        assert!(render_spectrogram(&vec![1.0; 20_000], 1, 20_000, &wide).is_err());
        let mel = SpectrogramPlot::for_mel(&MelSpectrogramConfig::default());
        render_spectrogram(&[1.0; 3], 1, 3, &mel).unwrap();
    }
}
