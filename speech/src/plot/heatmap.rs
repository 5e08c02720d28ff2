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

use std::path::Path;

use stapes_tensor::{Error, Result};

use super::canvas::{text_height, text_width, Canvas, Rect, Rgb};
use super::chart::{fit_text, spaced, AXIS, SCALE, TEXT};
use super::ticks::{format_tick, nice_step, nice_ticks};
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

/// Renders a `[rows, frames]` row-major matrix (row 0 = lowest frequency) as a heat map;
/// returns the canvas and the heat map's rectangle in it. Errors on an empty matrix, a
/// `data` length other than `rows * frames`, or a bad `top_db`/`vmin`/`vmax`.
pub fn render_spectrogram(data: &[f32], rows: usize, frames: usize, opts: &SpectrogramPlot) -> Result<(Canvas, Rect)> {
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

    // Values: decibels, top_db clamp, colour range.
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

    // Layout.
    let th = text_height(SCALE);
    let pad = 12;
    let hw = pixels_for(frames, 400, opts.max_width) as i32;
    let hh = pixels_for(rows, 256, opts.max_height) as i32;
    let c_ticks = {
        let target = (hh / 40).max(2) as usize;
        let step = nice_step(f64::from(hi - lo), target);
        nice_ticks(f64::from(lo), f64::from(hi), target)
            .into_iter()
            .map(|v| (v, format_tick(v, step)))
            .collect::<Vec<_>>()
    };
    let c_label_w = c_ticks.iter().map(|(_, l)| text_width(l, SCALE)).max().unwrap_or(0);
    let unit = if multiplier.is_some() { "dB" } else { "" };

    // The vertical axis: (row position, label) ticks and the axis title.
    let (y_ticks, y_title): (Vec<(f64, String)>, String) = match &opts.freq_axis {
        FreqAxis::Index { label } => {
            let target = (hh / 40).max(2) as usize;
            let step = nice_step((rows - 1) as f64, target).max(1.0);
            let ticks = super::ticks::ticks_with_step(0.0, (rows - 1) as f64, step);
            (ticks.into_iter().map(|r| (r, format_tick(r, step))).collect(), label.clone())
        }
        FreqAxis::Linear { max_hz } => {
            let (div, title) = if *max_hz >= 2000.0 { (1000.0, "frequency (kHz)") } else { (1.0, "frequency (Hz)") };
            let top = max_hz / div;
            let target = (hh / 40).max(2) as usize;
            let step = nice_step(top, target);
            let rows_per_unit = if top > 0.0 { (rows - 1) as f64 / top } else { 0.0 };
            let ticks = nice_ticks(0.0, top, target).into_iter().map(|f| (f * rows_per_unit, format_tick(f, step)));
            (ticks.collect(), title.to_string())
        }
        FreqAxis::Mel { f_min, f_max, scale } => {
            let (m0, m1) = (hz_to_mel(*f_min, *scale), hz_to_mel(*f_max, *scale));
            let (div, title) =
                if *f_max >= 2000.0 { (1000.0, "frequency (kHz, mel)") } else { (1.0, "frequency (Hz, mel)") };
            let target = (hh / 30).max(2) as usize;
            let step = nice_step((f_max - f_min) / div, target);
            let ticks = nice_ticks(f_min / div, f_max / div, target).into_iter().filter_map(|f| {
                let pos = (hz_to_mel(f * div, *scale) - m0) / (m1 - m0) * (rows + 1) as f64 - 1.0;
                (pos.is_finite() && pos >= -0.5 && pos <= rows as f64 - 0.5).then(|| (pos, format_tick(f, step)))
            });
            (ticks.collect(), title.to_string())
        }
    };
    let y_label_w = y_ticks.iter().map(|(_, l)| text_width(l, SCALE)).max().unwrap_or(0);
    let left = pad + th + pad + y_label_w + 10;
    // Below the title: room for the unit above the colour bar, or half a label (the top tick's).
    let top = pad + if opts.title.is_empty() { 0 } else { th + pad } + if unit.is_empty() { th / 2 } else { th + 8 };
    let bar_gap = 20;
    let bar_w = 18;
    let right = bar_gap + bar_w + 10 + c_label_w.max(text_width(unit, SCALE) - bar_w - 10) + pad;
    let bottom = 8 + th + pad + th + pad;
    let width = (left + hw + right) as u32;
    let height = (top + hh + bottom) as u32;
    let mut canvas = Canvas::new(width, height, Rgb::WHITE)?;
    let heat = Rect::new(left, top, hw, hh);

    // The heat map: each pixel shows the largest value of the cells it covers.
    let t_of = |v: f32| (v - lo) / (hi - lo);
    let col_ranges: Vec<(usize, usize)> = (0..hw as usize).map(|i| cell_range(i, hw as usize, frames)).collect();
    for py in 0..hh as usize {
        let (r0, r1) = cell_range(hh as usize - 1 - py, hh as usize, rows);
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
            canvas.set_pixel(i64::from(heat.x) + px as i64, i64::from(heat.y) + py as i64, color);
        }
    }
    canvas.stroke_rect(Rect::new(heat.x - 1, heat.y - 1, heat.w + 2, heat.h + 2), AXIS);

    // Vertical axis: a row position p sits at the centre of its cell.
    let row_px = |p: f64| f64::from(heat.bottom()) - (p + 0.5) * f64::from(hh) / rows as f64;
    // Spaced from the bottom up (positions negated to ascend).
    let y_ticks = spaced(y_ticks.into_iter().map(|(p, l)| (-row_px(p), l)).collect(), |_| th, 4);
    for (y, label) in &y_ticks {
        let yi = ((-y).floor() as i32).clamp(heat.y, heat.bottom() - 1);
        canvas.fill_rect(Rect::new(heat.x - 7, yi, 6, 1), AXIS);
        canvas.text(heat.x - 10 - text_width(label, SCALE), yi - th / 2 + 1, label, SCALE, TEXT);
    }
    let (y_title, y_scale) = fit_text(&y_title, hh);
    let w = text_width(&y_title, y_scale);
    canvas.text_vertical(pad, heat.y + hh / 2 - w / 2, &y_title, y_scale, TEXT);

    // Time axis: frame f is centred at f * hop / sample_rate seconds.
    let seconds = opts.sample_rate > 0 && opts.hop_length > 0;
    let per_frame = if seconds { opts.hop_length as f64 / f64::from(opts.sample_rate) } else { 1.0 };
    let t_end = (frames - 1) as f64 * per_frame;
    let x_target = (hw / 90).max(2) as usize;
    let x_step = nice_step(t_end, x_target);
    let frame_px = |t: f64| f64::from(heat.x) + (t / per_frame + 0.5) * f64::from(hw) / frames as f64;
    let x_ticks: Vec<(f64, String)> =
        nice_ticks(0.0, t_end, x_target).into_iter().map(|t| (frame_px(t), format_tick(t, x_step))).collect();
    let x_ticks = spaced(x_ticks, |l| text_width(l, SCALE), 12);
    for (x, label) in &x_ticks {
        let xi = (x.floor() as i32).clamp(heat.x, heat.right() - 1);
        canvas.fill_rect(Rect::new(xi, heat.bottom() + 1, 1, 6), AXIS);
        canvas.text(xi - text_width(label, SCALE) / 2, heat.bottom() + 8, label, SCALE, TEXT);
    }
    let x_title = if seconds { "time (s)" } else { "frame" };
    let w = text_width(x_title, SCALE);
    canvas.text(heat.x + hw / 2 - w / 2, heat.bottom() + 8 + th + pad, x_title, SCALE, TEXT);

    // Colour bar, `hi` at the top.
    let bar = Rect::new(heat.right() + bar_gap, heat.y, bar_w, hh);
    for y in 0..hh {
        let t = if hh > 1 { 1.0 - y as f32 / (hh - 1) as f32 } else { 1.0 };
        canvas.fill_rect(Rect::new(bar.x, bar.y + y, bar.w, 1), opts.colormap.color(t));
    }
    canvas.stroke_rect(Rect::new(bar.x - 1, bar.y - 1, bar.w + 2, bar.h + 2), AXIS);
    let value_px =
        |v: f64| f64::from(bar.bottom()) - 0.5 - (v - f64::from(lo)) / f64::from(hi - lo) * f64::from(hh - 1);
    let c_ticks = spaced(c_ticks.into_iter().map(|(v, l)| (-value_px(v), l)).collect(), |_| th, 4);
    for (y, label) in &c_ticks {
        let yi = (-y).floor() as i32;
        canvas.fill_rect(Rect::new(bar.right() + 1, yi, 5, 1), AXIS);
        canvas.text(bar.right() + 10, yi - th / 2 + 1, label, SCALE, TEXT);
    }
    if !unit.is_empty() {
        canvas.text(bar.x, bar.y - th - 6, unit, SCALE, TEXT);
    }

    if !opts.title.is_empty() {
        let (title, scale) = fit_text(&opts.title, width as i32 - 2 * pad);
        let w = text_width(&title, scale);
        let x = (heat.x + hw / 2 - w / 2).clamp(pad, (width as i32 - pad - w).max(0));
        canvas.text(x, pad, &title, scale, TEXT);
    }
    Ok((canvas, heat))
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
        let mel = SpectrogramPlot::for_mel(&MelSpectrogramConfig::default());
        render_spectrogram(&[1.0; 3], 1, 3, &mel).unwrap();
    }
}
