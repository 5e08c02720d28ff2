//! Mel filterbanks (`torchaudio.functional.melscale_fbanks`), `MelScale` and
//! `MelSpectrogram`.
//!
//! A triangular mel filter is non-zero on a narrow band of FFT bins only (about
//! `n_freqs / n_mels * 2` of them), so the filterbank is kept sparse: per mel band, the first
//! non-zero bin and the weights up to the last one. The mel spectrogram projects each frame's
//! power spectrum onto the bands right after its FFT, while the spectrum is still in cache,
//! which costs about `2 * n_freqs` multiply-adds per frame instead of `n_freqs * n_mels`.

use stapes_tensor::{Error, Result, Tensor};

use super::stft::{Spectrogram, SpectrogramConfig};
use super::{f32_data, par_transpose_into, tensor, FeatureMatrix};

/// The mel scale (`mel_scale`): HTK's `2595 log10(1 + f / 700)` or Slaney's (linear below
/// 1 kHz, logarithmic above), as torchaudio defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MelScaleKind {
    /// `"htk"` (torchaudio's default).
    #[default]
    Htk,
    /// `"slaney"`.
    Slaney,
}

/// Filter normalisation (`norm`): none, or Slaney's area normalisation (each triangle divided
/// by its width in Hz, times 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MelNorm {
    /// `norm=None` (the default).
    #[default]
    None,
    /// `norm="slaney"`.
    Slaney,
}

const SLANEY_F_SP: f64 = 200.0 / 3.0;
const SLANEY_MIN_LOG_HZ: f64 = 1000.0;

fn slaney_logstep() -> f64 {
    6.4f64.ln() / 27.0
}

/// Hertz to mels (`torchaudio.functional._hz_to_mel`).
pub fn hz_to_mel(freq: f64, scale: MelScaleKind) -> f64 {
    match scale {
        MelScaleKind::Htk => 2595.0 * (1.0 + freq / 700.0).log10(),
        MelScaleKind::Slaney => {
            if freq >= SLANEY_MIN_LOG_HZ {
                SLANEY_MIN_LOG_HZ / SLANEY_F_SP + (freq / SLANEY_MIN_LOG_HZ).ln() / slaney_logstep()
            } else {
                freq / SLANEY_F_SP
            }
        }
    }
}

/// Mels to hertz (`torchaudio.functional._mel_to_hz`).
pub fn mel_to_hz(mel: f64, scale: MelScaleKind) -> f64 {
    match scale {
        MelScaleKind::Htk => 700.0 * (10f64.powf(mel / 2595.0) - 1.0),
        MelScaleKind::Slaney => {
            let min_log_mel = SLANEY_MIN_LOG_HZ / SLANEY_F_SP;
            if mel >= min_log_mel {
                SLANEY_MIN_LOG_HZ * (slaney_logstep() * (mel - min_log_mel)).exp()
            } else {
                SLANEY_F_SP * mel
            }
        }
    }
}

/// [`mel_to_hz`] evaluated with torchaudio's f32 tensor operations, each rounded to f32 in the
/// same order (the power and exponential correctly rounded), so that the filterbank edges
/// agree with torchaudio's to the last bit in almost every case.
fn mel_to_hz_f32(mel: f32, scale: MelScaleKind) -> f32 {
    match scale {
        MelScaleKind::Htk => {
            let p = 10f64.powf(f64::from(mel / 2595.0)) as f32;
            700.0 * (p - 1.0)
        }
        MelScaleKind::Slaney => {
            let min_log_mel = (SLANEY_MIN_LOG_HZ / SLANEY_F_SP) as f32;
            if mel >= min_log_mel {
                let e = f64::from(slaney_logstep() as f32 * (mel - min_log_mel)).exp() as f32;
                SLANEY_MIN_LOG_HZ as f32 * e
            } else {
                SLANEY_F_SP as f32 * mel
            }
        }
    }
}

/// `torch.linspace(start, end, steps)` in f32, computed the way torch's CPU kernel does (from
/// the start for the first half, from the end for the second).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps).map(|i| if i < half { start + step * i as f32 } else { end - step * (steps - i - 1) as f32 }).collect()
}

/// Checks mel parameters; shared by [`melscale_fbanks`] and the transforms.
fn check_mel(op: &'static str, n_freqs: usize, f_min: f64, f_max: f64, n_mels: usize, sample_rate: u32) -> Result<()> {
    if n_freqs < 2 {
        return Err(Error::invalid(op, format!("need at least 2 frequency bins, got n_freqs {n_freqs}")));
    }
    if n_mels == 0 {
        return Err(Error::invalid(op, "n_mels must be positive, got 0"));
    }
    if sample_rate == 0 {
        return Err(Error::invalid(op, "sample_rate must be positive, got 0"));
    }
    if !(f_min.is_finite() && f_max.is_finite()) || f_min < 0.0 {
        return Err(Error::invalid(op, format!("need finite 0 <= f_min, f_max; got f_min {f_min}, f_max {f_max}")));
    }
    if f_min > f_max {
        return Err(Error::invalid(op, format!("require f_min <= f_max, got f_min {f_min}, f_max {f_max}")));
    }
    let nyquist = f64::from(sample_rate / 2);
    if f_max > nyquist {
        return Err(Error::invalid(
            op,
            format!("f_max {f_max} is above the Nyquist frequency {nyquist} of sample_rate {sample_rate} (torchaudio allows it; its filters above Nyquist are then cut off)"),
        ));
    }
    Ok(())
}

/// The triangular filterbank of `torchaudio.functional.melscale_fbanks`, `[n_freqs, n_mels]`
/// row-major: column `m` is mel filter `m` over the `n_freqs` FFT bins, which span
/// `0..=sample_rate / 2` (integer division, as torchaudio). Computed in f32 like torchaudio
/// (the band edges from f64 mels, as its Python floats).
pub fn melscale_fbanks(
    n_freqs: usize,
    f_min: f64,
    f_max: f64,
    n_mels: usize,
    sample_rate: u32,
    norm: MelNorm,
    mel_scale: MelScaleKind,
) -> Result<Vec<f32>> {
    fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale, None)
}

/// Vocal-tract-length perturbation's frequency warp (Jaitly & Hinton 2013, the piecewise linear
/// map of Kaldi's VTLN): `f * alpha` up to `f_hi * min(alpha, 1) / alpha`, then the straight line
/// that takes the rest of the band onto itself, so 0 and `nyquist` stay fixed and the map is
/// increasing.
pub fn vtlp_warp(f: f64, alpha: f64, f_hi: f64, nyquist: f64) -> f64 {
    let boundary = f_hi * alpha.min(1.0) / alpha;
    if f <= boundary {
        f * alpha
    } else {
        let top = f_hi * alpha.min(1.0);
        nyquist - (nyquist - top) / (nyquist - boundary) * (nyquist - f)
    }
}

/// The filterbank of [`melscale_fbanks`] with the FFT bins' frequencies warped by
/// [`vtlp_warp`] with factor `alpha` (the upper boundary at 0.6 of Nyquist, 4.8 kHz at 16 kHz):
/// VTLP, a new "speaker" per utterance. `alpha = 1` is the unwarped filterbank.
#[allow(clippy::too_many_arguments)]
pub fn vtlp_fbanks(
    n_freqs: usize,
    f_min: f64,
    f_max: f64,
    n_mels: usize,
    sample_rate: u32,
    norm: MelNorm,
    mel_scale: MelScaleKind,
    alpha: f64,
) -> Result<Vec<f32>> {
    if !(alpha > 0.5 && alpha < 2.0) {
        return Err(Error::invalid("vtlp_fbanks", format!("warp factor {alpha} is outside (0.5, 2)")));
    }
    fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale, Some(alpha))
}

#[allow(clippy::too_many_arguments)]
fn fbanks(
    n_freqs: usize,
    f_min: f64,
    f_max: f64,
    n_mels: usize,
    sample_rate: u32,
    norm: MelNorm,
    mel_scale: MelScaleKind,
    warp: Option<f64>,
) -> Result<Vec<f32>> {
    check_mel("melscale_fbanks", n_freqs, f_min, f_max, n_mels, sample_rate)?;
    let mut all_freqs = linspace_f32(0.0, (sample_rate / 2) as f32, n_freqs);
    if let Some(alpha) = warp.filter(|&a| a != 1.0) {
        let nyquist = f64::from(sample_rate / 2);
        for f in &mut all_freqs {
            *f = vtlp_warp(f64::from(*f), alpha, 0.6 * nyquist, nyquist) as f32;
        }
    }
    let m_pts = linspace_f32(hz_to_mel(f_min, mel_scale) as f32, hz_to_mel(f_max, mel_scale) as f32, n_mels + 2);
    let f_pts: Vec<f32> = m_pts.iter().map(|&m| mel_to_hz_f32(m, mel_scale)).collect();
    let mut fb = vec![0.0f32; n_freqs * n_mels];
    for m in 0..n_mels {
        let (lo, mid, hi) = (f_pts[m], f_pts[m + 1], f_pts[m + 2]);
        let enorm = match norm {
            MelNorm::None => 1.0,
            MelNorm::Slaney => 2.0 / (hi - lo),
        };
        for (k, &f) in all_freqs.iter().enumerate() {
            let down = -(lo - f) / (mid - lo);
            let up = (hi - f) / (hi - mid);
            fb[k * n_mels + m] = 0.0f32.max(down.min(up)) * enorm;
        }
    }
    Ok(fb)
}

/// A filterbank stored per band: the first non-zero bin and the weights up to the last one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SparseFilterbank {
    n_freqs: usize,
    /// Per band: first bin, and the range of its weights in `weights`.
    bands: Vec<(usize, usize, usize)>,
    weights: Vec<f32>,
}

impl SparseFilterbank {
    fn from_dense(fb: &[f32], n_freqs: usize, n_mels: usize) -> Self {
        let mut bands = Vec::with_capacity(n_mels);
        let mut weights = Vec::new();
        for m in 0..n_mels {
            let col = |k: usize| fb[k * n_mels + m];
            let first = (0..n_freqs).find(|&k| col(k) != 0.0);
            let start = weights.len();
            let first_bin = match first {
                Some(first) => {
                    let last = (0..n_freqs).rev().find(|&k| col(k) != 0.0).unwrap_or(first);
                    weights.extend((first..=last).map(col));
                    first
                }
                None => 0,
            };
            bands.push((first_bin, start, weights.len()));
        }
        SparseFilterbank { n_freqs, bands, weights }
    }

    fn n_mels(&self) -> usize {
        self.bands.len()
    }

    /// `out[m] = sum_k fb[k, m] * spectrum[k]` for one frame.
    #[inline]
    fn project(&self, spectrum: &[f32], out: &mut [f32]) {
        for (o, &(first, a, b)) in out.iter_mut().zip(&self.bands) {
            let w = &self.weights[a..b];
            *o = w.iter().zip(&spectrum[first..first + w.len()]).map(|(w, s)| w * s).sum();
        }
    }

    /// `out[m, :] = sum_k fb[k, m] * spec[k, :]` for a `[n_freqs, frames]` block.
    fn project_rows(&self, spec: &[f32], frames: usize, out: &mut [f32]) {
        for (row, &(first, a, b)) in out.chunks_mut(frames.max(1)).zip(&self.bands) {
            row.fill(0.0);
            for (j, &w) in self.weights[a..b].iter().enumerate() {
                let src = &spec[(first + j) * frames..(first + j + 1) * frames];
                row.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    }
}

/// The parameters of `torchaudio.transforms.MelScale`, with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct MelScaleConfig {
    /// Number of mel bands. Default 128.
    pub n_mels: usize,
    /// Sample rate in Hz. Default 16000.
    pub sample_rate: u32,
    /// Lowest frequency. Default 0.
    pub f_min: f64,
    /// Highest frequency; `None` = `sample_rate / 2`. Must not exceed `sample_rate / 2`.
    pub f_max: Option<f64>,
    /// Number of STFT bins (`n_fft / 2 + 1`). Default 201.
    pub n_stft: usize,
    /// Filter normalisation. Default none.
    pub norm: MelNorm,
    /// Mel scale. Default HTK.
    pub mel_scale: MelScaleKind,
}

impl Default for MelScaleConfig {
    fn default() -> Self {
        MelScaleConfig {
            n_mels: 128,
            sample_rate: 16000,
            f_min: 0.0,
            f_max: None,
            n_stft: 201,
            norm: MelNorm::None,
            mel_scale: MelScaleKind::Htk,
        }
    }
}

/// `torchaudio.transforms.MelScale`: a `[..., n_stft, time]` spectrogram to
/// `[..., n_mels, time]`.
#[derive(Clone, Debug)]
pub struct MelScale {
    config: MelScaleConfig,
    dense: Vec<f32>,
    fb: SparseFilterbank,
}

impl MelScale {
    /// Checks the parameters and builds the filterbank.
    pub fn new(config: MelScaleConfig) -> Result<MelScale> {
        let f_max = config.f_max.unwrap_or(f64::from(config.sample_rate / 2));
        check_mel("MelScale", config.n_stft, config.f_min, f_max, config.n_mels, config.sample_rate)?;
        let dense = melscale_fbanks(
            config.n_stft,
            config.f_min,
            f_max,
            config.n_mels,
            config.sample_rate,
            config.norm,
            config.mel_scale,
        )?;
        let fb = SparseFilterbank::from_dense(&dense, config.n_stft, config.n_mels);
        Ok(MelScale { config, dense, fb })
    }

    /// The parameters it was built with.
    pub fn config(&self) -> &MelScaleConfig {
        &self.config
    }

    /// The dense filterbank, `[n_stft, n_mels]` row-major (torchaudio's `fb` buffer).
    pub fn filterbank(&self) -> &[f32] {
        &self.dense
    }

    /// Applies the filterbank to a `[..., n_stft, time]` f32 spectrogram.
    pub fn forward(&self, specgram: &Tensor) -> Result<Tensor> {
        let x = f32_data("MelScale", specgram, 2)?;
        let dims = specgram.dims();
        let (freqs, frames) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if freqs != self.fb.n_freqs {
            return Err(Error::shape(
                "MelScale",
                format!("expected {} frequency bins (dim -2), got shape {dims:?}", self.fb.n_freqs),
            ));
        }
        let rows: usize = dims[..dims.len() - 2].iter().product();
        let n_mels = self.fb.n_mels();
        let mut out = vec![0.0f32; rows * n_mels * frames];
        if frames > 0 {
            for (src, dst) in x.chunks(freqs * frames).zip(out.chunks_mut(n_mels * frames)) {
                self.fb.project_rows(src, frames, dst);
            }
        }
        let mut shape = dims[..dims.len() - 2].to_vec();
        shape.extend([n_mels, frames]);
        tensor(out, shape)
    }
}

/// The parameters of `torchaudio.transforms.MelSpectrogram`, with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct MelSpectrogramConfig {
    /// Sample rate in Hz. Default 16000.
    pub sample_rate: u32,
    /// The STFT parameters (`n_fft`, `win_length`, `hop_length`, `pad`, `window`, `power`,
    /// `normalized`, `center`, `pad_mode`); `onesided` is forced true and `power` must be
    /// `Some`, as in torchaudio.
    pub spectrogram: SpectrogramConfig,
    /// Lowest frequency. Default 0.
    pub f_min: f64,
    /// Highest frequency; `None` = `sample_rate / 2`.
    pub f_max: Option<f64>,
    /// Number of mel bands. Default 128.
    pub n_mels: usize,
    /// Filter normalisation. Default none.
    pub norm: MelNorm,
    /// Mel scale. Default HTK.
    pub mel_scale: MelScaleKind,
}

impl Default for MelSpectrogramConfig {
    fn default() -> Self {
        MelSpectrogramConfig {
            sample_rate: 16000,
            spectrogram: SpectrogramConfig::default(),
            f_min: 0.0,
            f_max: None,
            n_mels: 128,
            norm: MelNorm::None,
            mel_scale: MelScaleKind::Htk,
        }
    }
}

impl MelSpectrogramConfig {
    /// `MelSpectrogram(sample_rate=sample_rate, n_mels=n_mels)`, every other argument at
    /// torchaudio's default; chain the setters for the rest, without nesting configs:
    ///
    /// ```
    /// use stapes_speech::features::MelSpectrogramConfig;
    /// let cfg = MelSpectrogramConfig::new(16000, 80).n_fft(400).hop_length(160).f_max(7600.0);
    /// assert_eq!((cfg.spectrogram.n_fft, cfg.spectrogram.hop_length), (400, Some(160)));
    /// ```
    pub fn new(sample_rate: u32, n_mels: usize) -> MelSpectrogramConfig {
        MelSpectrogramConfig { sample_rate, n_mels, ..MelSpectrogramConfig::default() }
    }
    /// Sets the FFT size (the STFT's `n_fft`).
    pub fn n_fft(mut self, n_fft: usize) -> Self {
        self.spectrogram.n_fft = n_fft;
        self
    }
    /// Sets the window length (default `n_fft`).
    pub fn win_length(mut self, win_length: usize) -> Self {
        self.spectrogram.win_length = Some(win_length);
        self
    }
    /// Sets the hop between frames (default `win_length / 2`).
    pub fn hop_length(mut self, hop_length: usize) -> Self {
        self.spectrogram.hop_length = Some(hop_length);
        self
    }
    /// Sets the spectrogram's power (1 magnitude, 2 power; the default is 2).
    pub fn power(mut self, power: f32) -> Self {
        self.spectrogram.power = Some(power);
        self
    }
    /// Sets whether frames are centred (the signal reflect-padded by `n_fft / 2`).
    pub fn center(mut self, center: bool) -> Self {
        self.spectrogram.center = center;
        self
    }
    /// Sets the lowest frequency of the filterbank.
    pub fn f_min(mut self, f_min: f64) -> Self {
        self.f_min = f_min;
        self
    }
    /// Sets the highest frequency of the filterbank (default `sample_rate / 2`).
    pub fn f_max(mut self, f_max: f64) -> Self {
        self.f_max = Some(f_max);
        self
    }
    /// Sets the filter normalisation.
    pub fn norm(mut self, norm: MelNorm) -> Self {
        self.norm = norm;
        self
    }
    /// Sets the mel scale.
    pub fn mel_scale(mut self, mel_scale: MelScaleKind) -> Self {
        self.mel_scale = mel_scale;
        self
    }
}

/// `torchaudio.transforms.MelSpectrogram`: waveform `[..., time]` to `[..., n_mels, frames]`,
/// with the mel projection fused into the STFT's per-frame loop.
#[derive(Clone, Debug)]
pub struct MelSpectrogram {
    spectrogram: Spectrogram,
    mel: MelScale,
    /// Run the FFT in f32 (the default: mel bands sum many bins, and the f32 round-off stays
    /// far below the parity tolerance) or in f64 (MFCC, whose decibels magnify the weak bands'
    /// round-off).
    pub(crate) f32_fft: bool,
}

impl MelSpectrogram {
    /// Checks the parameters, builds the STFT and the filterbank.
    pub fn new(config: MelSpectrogramConfig) -> Result<MelSpectrogram> {
        if config.spectrogram.power.is_none() {
            return Err(Error::invalid("MelSpectrogram", "power must be Some(p) with p > 0, got None"));
        }
        let spec_cfg = SpectrogramConfig { onesided: true, ..config.spectrogram };
        let n_stft = spec_cfg.n_fft / 2 + 1;
        let spectrogram = Spectrogram::new(spec_cfg)?;
        let mel = MelScale::new(MelScaleConfig {
            n_mels: config.n_mels,
            sample_rate: config.sample_rate,
            f_min: config.f_min,
            f_max: config.f_max,
            n_stft,
            norm: config.norm,
            mel_scale: config.mel_scale,
        })?;
        Ok(MelSpectrogram { spectrogram, mel, f32_fft: true })
    }

    /// The same front end with its filterbank warped by VTLP factor `alpha` ([`vtlp_fbanks`]).
    pub fn vtlp(&self, alpha: f64) -> Result<MelSpectrogram> {
        let c = &self.mel.config;
        let f_max = c.f_max.unwrap_or(f64::from(c.sample_rate / 2));
        let dense = vtlp_fbanks(c.n_stft, c.f_min, f_max, c.n_mels, c.sample_rate, c.norm, c.mel_scale, alpha)?;
        let fb = SparseFilterbank::from_dense(&dense, c.n_stft, c.n_mels);
        let mel = MelScale { config: c.clone(), dense, fb };
        Ok(MelSpectrogram { spectrogram: self.spectrogram.clone(), mel, f32_fft: self.f32_fft })
    }

    /// The STFT part.
    pub fn spectrogram(&self) -> &Spectrogram {
        &self.spectrogram
    }

    /// The mel part.
    pub fn mel_scale(&self) -> &MelScale {
        &self.mel
    }

    /// Number of mel bands.
    pub fn n_mels(&self) -> usize {
        self.mel.fb.n_mels()
    }

    /// `[rows, n_mels, frames]` for `rows` signals of `len` samples, and the frame count.
    pub(crate) fn compute(&self, x: &[f32], rows: usize, len: usize) -> Result<(Vec<f32>, usize)> {
        let n_mels = self.n_mels();
        let n_freqs = self.spectrogram.n_freqs();
        let (tm, frames) = if self.f32_fft {
            self.spectrogram.run_frames_f32(x, rows, len, n_mels, n_freqs, |spectrum, power, out| {
                self.spectrogram.magnitude_into(spectrum, power);
                self.mel.fb.project(power, out);
            })?
        } else {
            self.spectrogram.run_frames(x, rows, len, n_mels, n_freqs, |spectrum, power, out| {
                self.spectrogram.magnitude_into(spectrum, power);
                self.mel.fb.project(power, out);
            })?
        };
        let mut out = vec![0.0f32; tm.len()];
        let per_row = (frames * n_mels).max(1);
        for (src, dst) in tm.chunks(per_row).zip(out.chunks_mut(per_row)) {
            par_transpose_into(src, frames, n_mels, dst);
        }
        Ok((out, frames))
    }

    /// The mel spectrogram of a `[..., time]` f32 tensor: `[..., n_mels, frames]`.
    pub fn forward(&self, waveform: &Tensor) -> Result<Tensor> {
        let x = f32_data("MelSpectrogram", waveform, 1)?;
        let dims = waveform.dims();
        let len = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let (data, frames) = self.compute(&x, rows, len)?;
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.extend([self.n_mels(), frames]);
        tensor(data, shape)
    }

    /// The mel spectrogram of one signal: `[n_mels, frames]` row-major.
    pub fn forward_slice(&self, waveform: &[f32]) -> Result<FeatureMatrix> {
        let (data, frames) = self.compute(waveform, 1, waveform.len())?;
        Ok(FeatureMatrix { data, rows: self.n_mels(), frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scales_round_trip() {
        for scale in [MelScaleKind::Htk, MelScaleKind::Slaney] {
            for f in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
                assert!((mel_to_hz(hz_to_mel(f, scale), scale) - f).abs() < 1e-9 * (1.0 + f));
            }
        }
        assert!((hz_to_mel(700.0, MelScaleKind::Htk) - 2595.0 * 2f64.log10()).abs() < 1e-12);
        assert!((hz_to_mel(1000.0, MelScaleKind::Slaney) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn sparse_filterbank_equals_dense_product() {
        let (n_freqs, n_mels) = (65, 12);
        let dense =
            melscale_fbanks(n_freqs, 50.0, 7000.0, n_mels, 16000, MelNorm::Slaney, MelScaleKind::Slaney).unwrap();
        let sparse = SparseFilterbank::from_dense(&dense, n_freqs, n_mels);
        assert!(sparse.weights.len() < n_freqs * n_mels / 3, "{} weights kept", sparse.weights.len());
        let spectrum: Vec<f32> = (0..n_freqs).map(|k| 1.0 + (k as f32 * 0.3).sin()).collect();
        let mut out = vec![0.0; n_mels];
        sparse.project(&spectrum, &mut out);
        for m in 0..n_mels {
            let want: f32 = (0..n_freqs).map(|k| dense[k * n_mels + m] * spectrum[k]).sum();
            assert!((out[m] - want).abs() <= 1e-5 * want.abs().max(1e-3), "band {m}: {} vs {want}", out[m]);
        }
    }

    #[test]
    fn mel_spectrogram_equals_melscale_of_spectrogram() {
        let x: Vec<f32> = (0..4000).map(|i| ((i as f32) * 0.011).sin() * ((i as f32) * 0.0007).cos()).collect();
        let cfg = MelSpectrogramConfig {
            spectrogram: SpectrogramConfig { n_fft: 256, hop_length: Some(100), ..Default::default() },
            n_mels: 20,
            ..Default::default()
        };
        let ms = MelSpectrogram::new(cfg).unwrap();
        let fused = ms.forward_slice(&x).unwrap();
        let spec = ms.spectrogram().forward_slice(&x).unwrap();
        let spec = Tensor::from_vec(spec.data, [spec.rows, spec.frames], &stapes_tensor::Device::Cpu).unwrap();
        let two_step = ms.mel_scale().forward(&spec).unwrap().to_vec::<f32>().unwrap();
        let max = two_step.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
        for (a, b) in fused.data.iter().zip(&two_step) {
            assert!((a - b).abs() <= 1e-5 * max);
        }
    }

    #[test]
    fn rejects_bad_frequencies() {
        let e = melscale_fbanks(201, 0.0, 9000.0, 80, 16000, MelNorm::None, MelScaleKind::Htk).unwrap_err();
        assert!(e.to_string().contains("f_max 9000"), "{e}");
        let e = melscale_fbanks(201, 5000.0, 4000.0, 80, 16000, MelNorm::None, MelScaleKind::Htk).unwrap_err();
        assert!(e.to_string().contains("f_min 5000"), "{e}");
        let cfg = MelSpectrogramConfig {
            spectrogram: SpectrogramConfig { power: None, ..Default::default() },
            ..Default::default()
        };
        assert!(MelSpectrogram::new(cfg).is_err());
    }
}
