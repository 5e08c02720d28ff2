//! The short-time Fourier transform and `torchaudio.transforms.Spectrogram`.
//!
//! Framing follows `torch.stft`: the signal is first zero-padded by `pad` on both sides
//! (torchaudio's `pad`), then, when `center`, padded by `n_fft / 2` on both sides with
//! `pad_mode`; frame `t` covers samples `[t * hop, t * hop + n_fft)` of the padded signal and
//! there are `1 + (padded_len - n_fft) / hop` frames. The `win_length` window is zero-padded to
//! `n_fft` on both sides (`(n_fft - win_length) / 2` zeros on the left), as `torch.stft` does.
//!
//! Each frame is windowed into a scratch buffer, transformed by one shared `realfft` plan (a
//! real-to-complex FFT of length `n_fft`, in f64: an f32 FFT's round-off, about 1e-7 of the
//! frame's largest bin, is a large relative error in the weak bins that decibels and MFCCs
//! magnify, and would add to torch's own; the output is rounded to f32) and handed to a per-frame sink (power spectrum, mel
//! projection, ...) that writes that frame's output row. Frames of all batch rows are split
//! into chunks processed in parallel with rayon, each chunk with its own scratch buffers; the
//! `[frames, bins]` result is transposed to torchaudio's `[bins, frames]` at the end.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use stapes_tensor::{Error, Result, Tensor};

use super::{f32_data, par_transpose_into, tensor, transpose_into, FeatureMatrix};

/// The FFT's float type (f64: see the module comment).
type Fs = f64;

/// A float type the STFT can run its FFT in: f64 by default, f32 where the caller's
/// accuracy allows it (the mel spectrogram).
pub(crate) trait StftFloat: realfft::FftNum {
    /// An f32 sample in this type.
    fn widen(x: f32) -> Self;
    /// Rounds to f32.
    fn narrow(self) -> f32;
    /// The value in f64.
    fn to_wide(self) -> f64;
}

impl StftFloat for f32 {
    #[inline]
    fn widen(x: f32) -> Self {
        x
    }
    #[inline]
    fn narrow(self) -> f32 {
        self
    }
    #[inline]
    fn to_wide(self) -> f64 {
        f64::from(self)
    }
}

impl StftFloat for f64 {
    #[inline]
    fn widen(x: f32) -> Self {
        f64::from(x)
    }
    #[inline]
    fn narrow(self) -> f32 {
        self as f32
    }
    #[inline]
    fn to_wide(self) -> f64 {
        self
    }
}

/// The analysis window, made with `win_length` samples like torch's window functions.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Window {
    /// `torch.hann_window(win_length)` (periodic): `0.5 - 0.5 cos(2 pi n / N)`, rounded as
    /// torch's f32 computation rounds it.
    #[default]
    Hann,
    /// `torch.hamming_window(win_length)` (periodic): `0.54 - 0.46 cos(2 pi n / N)`.
    Hamming,
    /// All ones (`torch.ones(win_length)`).
    Rectangular,
    /// A window given sample by sample; its length must be `win_length`.
    Custom(Vec<f32>),
}

impl Window {
    /// The window's `win_length` samples.
    pub fn samples(&self, op: &'static str, win_length: usize) -> Result<Vec<f32>> {
        // As torch.hamming_window computes it in f32: `n * (2 pi / N)`, cosine, times -beta,
        // plus alpha, each step rounded to f32 (the cosine correctly rounded; torch's is within
        // one ulp). The weak bins of a spectrogram are sensitive to the window's last bits.
        let cosine = |alpha: f32, beta: f32| -> Vec<f32> {
            let step = (2.0 * std::f64::consts::PI / win_length as f64) as f32;
            (0..win_length).map(|n| (f64::from(n as f32 * step).cos() as f32) * -beta + alpha).collect()
        };
        Ok(match self {
            Window::Hann => cosine(0.5, 0.5),
            Window::Hamming => cosine(0.54, 0.46),
            Window::Rectangular => vec![1.0; win_length],
            Window::Custom(w) => {
                if w.len() != win_length {
                    return Err(Error::invalid(
                        op,
                        format!("custom window has {} samples, win_length is {win_length}", w.len()),
                    ));
                }
                w.clone()
            }
        })
    }
}

/// How the edges are padded when `center` is true (`torch.stft`'s `pad_mode`), and how
/// [`ComputeDeltas`](super::ComputeDeltas) pads the time axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PadMode {
    /// Mirror without repeating the edge sample (`"reflect"`); needs a pad shorter than the
    /// signal, as in torch.
    #[default]
    Reflect,
    /// Zeros (`"constant"`).
    Constant,
    /// Repeat the edge sample (`"replicate"`).
    Replicate,
    /// Wrap around (`"circular"`); needs a pad no longer than the signal, as in torch.
    Circular,
}

impl PadMode {
    /// The index into a signal of length `len` that padded position `i` (counted from
    /// `-pad`) reads, or `None` for a zero (constant mode). The caller has checked `len`
    /// against the pad with [`PadMode::check`].
    pub(crate) fn source(self, i: isize, len: usize) -> Option<usize> {
        let n = len as isize;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        match self {
            PadMode::Constant => None,
            PadMode::Reflect => Some(if i < 0 { -i } else { 2 * (n - 1) - i } as usize),
            PadMode::Replicate => Some(if i < 0 { 0 } else { len - 1 }),
            PadMode::Circular => Some(i.rem_euclid(n) as usize),
        }
    }

    /// Whether a signal of `len` samples can be padded by `pad` on each side; the error says
    /// what torch says.
    pub(crate) fn check(self, op: &'static str, pad: usize, len: usize) -> Result<()> {
        let ok = match self {
            PadMode::Constant => true,
            PadMode::Reflect => pad < len,
            PadMode::Replicate => len > 0 || pad == 0,
            PadMode::Circular => pad <= len,
        };
        if ok {
            return Ok(());
        }
        let need = match self {
            PadMode::Reflect => "reflect padding needs a pad smaller than the input (torch: \"Padding size should be less than the corresponding input dimension\")",
            PadMode::Circular => "circular padding needs a pad no larger than the input",
            _ => "replicate padding needs a non-empty input",
        };
        Err(Error::invalid(op, format!("{need}: pad {pad} on each side of a signal of {len} samples")))
    }
}

/// Spectrogram normalisation (torchaudio's `normalized`: `false`, `true` = `"window"`, or
/// `"frame_length"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SpecNorm {
    /// No normalisation (`normalized=False`).
    #[default]
    None,
    /// Divide by the window's L2 norm (`normalized=True` or `"window"`).
    Window,
    /// Divide by `sqrt(n_fft)` (`normalized="frame_length"`, `torch.stft(normalized=True)`).
    FrameLength,
}

/// The parameters of `torchaudio.transforms.Spectrogram`, with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SpectrogramConfig {
    /// FFT size; `n_fft / 2 + 1` bins when `onesided`. Default 400.
    pub n_fft: usize,
    /// Window length, at most `n_fft`. Default (`None`): `n_fft`.
    pub win_length: Option<usize>,
    /// Hop between frames. Default (`None`): `win_length / 2`.
    pub hop_length: Option<usize>,
    /// Zeros added on both sides of the signal before anything else. Default 0.
    pub pad: usize,
    /// The window. Default: periodic Hann.
    pub window: Window,
    /// Exponent of the magnitude (`2.0` power, `1.0` magnitude); `None` returns the complex
    /// STFT as a trailing dim of 2 (real, imaginary), the layout of `torch.view_as_real` of
    /// torchaudio's complex output. Default `Some(2.0)`.
    pub power: Option<f32>,
    /// Normalisation. Default none.
    pub normalized: SpecNorm,
    /// Pad by `n_fft / 2` on both sides so frame `t` is centred at `t * hop`. Default true.
    pub center: bool,
    /// Padding mode when `center`. Default reflect.
    pub pad_mode: PadMode,
    /// Return `n_fft / 2 + 1` bins (true) or all `n_fft` (false). Default true.
    pub onesided: bool,
}

impl Default for SpectrogramConfig {
    fn default() -> Self {
        SpectrogramConfig {
            n_fft: 400,
            win_length: None,
            hop_length: None,
            pad: 0,
            window: Window::Hann,
            power: Some(2.0),
            normalized: SpecNorm::None,
            center: true,
            pad_mode: PadMode::Reflect,
            onesided: true,
        }
    }
}

/// `torchaudio.transforms.Spectrogram`, built: the window (scaled by the normalisation) and
/// the FFT plan are made once and reused by every call.
#[derive(Clone)]
pub struct Spectrogram {
    config: SpectrogramConfig,
    win_length: usize,
    hop_length: usize,
    /// The window (f32 values like torch's, widened), already multiplied by the normalisation
    /// factor.
    window: Vec<Fs>,
    /// The same window rounded to f32, for the f32 FFT.
    window32: Vec<f32>,
    /// Offset of the window inside the `n_fft` frame.
    win_offset: usize,
    fft: Arc<dyn RealToComplex<Fs>>,
    /// The f32 plan, used by the mel spectrogram.
    fft32: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for Spectrogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spectrogram").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Where the frames of one row read their samples: `head` is the start of the padded signal
/// (or all of it, with `tail_start` at `usize::MAX`), `tail` its end from `tail_start`, and
/// the samples between come from the row `x`, which starts at `lead` in padded coordinates.
struct Framer<'a> {
    x: &'a [f32],
    lead: usize,
    head: Vec<f32>,
    tail: Vec<f32>,
    tail_start: usize,
}

impl Framer<'_> {
    /// Padded samples `[s, s + n)`, `n` at most `n_fft`.
    #[inline]
    fn window(&self, s: usize, n: usize) -> &[f32] {
        if s + n <= self.head.len() {
            &self.head[s..s + n]
        } else if s >= self.lead && s + n <= self.lead + self.x.len() {
            &self.x[s - self.lead..s - self.lead + n]
        } else {
            &self.tail[s - self.tail_start..s - self.tail_start + n]
        }
    }
}

/// Frames per parallel chunk: enough chunks to balance the threads, few enough to amortise
/// the per-chunk scratch buffers.
fn chunk_frames(total: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (total / (threads * 4)).clamp(8, 256)
}

impl Spectrogram {
    /// Checks the parameters and precomputes the window and FFT plan. Errors: `n_fft` of 0,
    /// `win_length` of 0 or above `n_fft`, a hop of 0, a power that is not finite and > 0, a
    /// custom window of the wrong length.
    pub fn new(config: SpectrogramConfig) -> Result<Spectrogram> {
        const OP: &str = "Spectrogram";
        let n_fft = config.n_fft;
        if n_fft == 0 {
            return Err(Error::invalid(OP, "n_fft must be positive, got 0"));
        }
        let win_length = config.win_length.unwrap_or(n_fft);
        if win_length == 0 || win_length > n_fft {
            return Err(Error::invalid(
                OP,
                format!("expected 0 < win_length <= n_fft, got win_length {win_length}, n_fft {n_fft}"),
            ));
        }
        let hop_length = config.hop_length.unwrap_or(win_length / 2);
        if hop_length == 0 {
            return Err(Error::invalid(OP, format!("hop_length must be positive, got 0 (win_length {win_length})")));
        }
        if let Some(p) = config.power {
            if !(p.is_finite() && p > 0.0) {
                return Err(Error::invalid(OP, format!("power must be finite and > 0, got {p}")));
            }
        }
        let window = config.window.samples(OP, win_length)?;
        let scale = match config.normalized {
            SpecNorm::None => 1.0,
            SpecNorm::Window => 1.0 / window.iter().map(|&w| f64::from(w) * f64::from(w)).sum::<f64>().sqrt(),
            SpecNorm::FrameLength => 1.0 / (n_fft as f64).sqrt(),
        };
        let window: Vec<Fs> = window.iter().map(|&w| (f64::from(w) * scale) as Fs).collect();
        let window32 = window.iter().map(|&w| w as f32).collect();
        let fft = RealFftPlanner::<Fs>::new().plan_fft_forward(n_fft);
        let fft32 = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        Ok(Spectrogram {
            win_offset: (n_fft - win_length) / 2,
            config,
            win_length,
            hop_length,
            window,
            window32,
            fft,
            fft32,
        })
    }

    /// The parameters it was built with.
    pub fn config(&self) -> &SpectrogramConfig {
        &self.config
    }

    /// The resolved hop length.
    pub fn hop_length(&self) -> usize {
        self.hop_length
    }

    /// The resolved window length.
    pub fn win_length(&self) -> usize {
        self.win_length
    }

    /// Number of frequency bins of the output: `n_fft / 2 + 1` when onesided, else `n_fft`.
    pub fn n_freqs(&self) -> usize {
        if self.config.onesided {
            self.config.n_fft / 2 + 1
        } else {
            self.config.n_fft
        }
    }

    /// Number of frames for a signal of `len` samples, or the error torch would give: too
    /// short for the padding mode, or shorter than `n_fft` without centring.
    pub fn n_frames(&self, len: usize) -> Result<usize> {
        const OP: &str = "Spectrogram";
        let n_fft = self.config.n_fft;
        if len == 0 {
            return Err(Error::invalid(OP, "the signal is empty"));
        }
        let mut padded = len + 2 * self.config.pad;
        if self.config.center {
            self.config.pad_mode.check(OP, n_fft / 2, padded)?;
            padded += 2 * (n_fft / 2);
        }
        if padded < n_fft {
            return Err(Error::invalid(
                OP,
                format!("the (padded) signal has {padded} samples, fewer than n_fft {n_fft} (torch.stft: \"expected 0 < n_fft <= input length\")"),
            ));
        }
        Ok(1 + (padded - n_fft) / self.hop_length)
    }

    /// Sample `i` of one row's padded signal (`pad` zeros on both sides, then the centre
    /// padding, which reads the zero-padded signal).
    fn padded_at(&self, x: &[f32], i: usize) -> f32 {
        let pad = self.config.pad;
        let c = if self.config.center { self.config.n_fft / 2 } else { 0 };
        let zero_padded_len = x.len() + 2 * pad;
        let zp = |j: usize| if j >= pad && j < pad + x.len() { x[j - pad] } else { 0.0 };
        let j = i as isize - c as isize;
        if (0..zero_padded_len as isize).contains(&j) {
            zp(j as usize)
        } else {
            self.config.pad_mode.source(j, zero_padded_len).map_or(0.0, zp)
        }
    }

    /// The frame sources of one row: the padded signal's edges (all of it for a short signal)
    /// and the row itself for the frames inside it, so the interior is never copied.
    fn framer<'a>(&self, x: &'a [f32]) -> Framer<'a> {
        let lead = self.config.pad + if self.config.center { self.config.n_fft / 2 } else { 0 };
        let padded_len = x.len() + 2 * lead;
        let edge = lead + self.config.n_fft;
        if padded_len <= 4 * edge {
            let full = (0..padded_len).map(|i| self.padded_at(x, i)).collect();
            return Framer { x, lead, head: full, tail: Vec::new(), tail_start: usize::MAX };
        }
        let tail_start = padded_len - edge;
        let head = (0..edge).map(|i| self.padded_at(x, i)).collect();
        let tail = (tail_start..padded_len).map(|i| self.padded_at(x, i)).collect();
        Framer { x, lead, head, tail, tail_start }
    }

    /// Runs the STFT over `rows` signals of `len` samples (row-major in `x`) and calls
    /// `sink(spectrum, scratch, out)` for every frame, where `spectrum` holds the
    /// `n_fft / 2 + 1` complex bins, `scratch` is `scratch_len` floats of the sink's own and
    /// `out` the frame's `out_len` output values. Returns `[rows, frames, out_len]` and the
    /// number of frames per row.
    pub(crate) fn run_frames<F>(
        &self,
        x: &[f32],
        rows: usize,
        len: usize,
        out_len: usize,
        scratch_len: usize,
        sink: F,
    ) -> Result<(Vec<f32>, usize)>
    where
        F: Fn(&[Complex<Fs>], &mut [f32], &mut [f32]) + Sync,
    {
        self.run_frames_with(&*self.fft, &self.window, x, rows, len, out_len, scratch_len, sink)
    }

    /// [`Spectrogram::run_frames`] with the FFT in f32 (about 1e-7 of each frame's largest
    /// bin of round-off; see the module comment).
    pub(crate) fn run_frames_f32<F>(
        &self,
        x: &[f32],
        rows: usize,
        len: usize,
        out_len: usize,
        scratch_len: usize,
        sink: F,
    ) -> Result<(Vec<f32>, usize)>
    where
        F: Fn(&[Complex<f32>], &mut [f32], &mut [f32]) + Sync,
    {
        self.run_frames_with(&*self.fft32, &self.window32, x, rows, len, out_len, scratch_len, sink)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_frames_with<T: StftFloat, F>(
        &self,
        fft: &dyn RealToComplex<T>,
        win: &[T],
        x: &[f32],
        rows: usize,
        len: usize,
        out_len: usize,
        scratch_len: usize,
        sink: F,
    ) -> Result<(Vec<f32>, usize)>
    where
        F: Fn(&[Complex<T>], &mut [f32], &mut [f32]) + Sync,
    {
        let frames = self.n_frames(len)?;
        let framers: Vec<Framer> = x.chunks(len).map(|r| self.framer(r)).collect();
        let total = rows * frames;
        let mut out = vec![0.0f32; total * out_len];
        if total == 0 || out_len == 0 {
            return Ok((out, frames));
        }
        let chunk = chunk_frames(total);
        let (n_fft, hop, off) = (self.config.n_fft, self.hop_length, self.win_offset);
        let zero = T::widen(0.0);
        out.par_chunks_mut(chunk * out_len).enumerate().for_each(|(ci, block)| {
            let mut frame = vec![zero; n_fft];
            let mut spectrum = vec![Complex::new(zero, zero); n_fft / 2 + 1];
            let mut fft_scratch = vec![Complex::new(zero, zero); fft.get_scratch_len()];
            let mut sink_scratch = vec![0.0f32; scratch_len];
            for (j, dst) in block.chunks_mut(out_len).enumerate() {
                let g = ci * chunk + j;
                let (row, t) = (g / frames, g % frames);
                let src = framers[row].window(t * hop + off, win.len());
                frame[..off].fill(zero);
                frame[off + win.len()..].fill(zero);
                for ((f, &s), &w) in frame[off..off + win.len()].iter_mut().zip(src).zip(win) {
                    *f = T::widen(s) * w;
                }
                // Lengths are right by construction, so the FFT cannot fail.
                fft.process_with_scratch(&mut frame, &mut spectrum, &mut fft_scratch).expect("realfft buffer lengths");
                sink(&spectrum, &mut sink_scratch, dst);
            }
        });
        Ok((out, frames))
    }

    /// Writes the (power-raised) magnitude of the `n_freqs` bins of one frame into `out`.
    pub(crate) fn magnitude_into<T: StftFloat>(&self, spectrum: &[Complex<T>], out: &mut [f32]) {
        let p = self.config.power.unwrap_or(1.0);
        let half = spectrum.len();
        let (lo, hi) = out.split_at_mut(half.min(out.len()));
        if p == 2.0 {
            lo.iter_mut().zip(spectrum).for_each(|(o, c)| *o = (c.re * c.re + c.im * c.im).narrow());
        } else if p == 1.0 {
            lo.iter_mut().zip(spectrum).for_each(|(o, c)| *o = (c.re * c.re + c.im * c.im).to_wide().sqrt() as f32);
        } else {
            let half_p = f64::from(p) / 2.0;
            lo.iter_mut()
                .zip(spectrum)
                .for_each(|(o, c)| *o = (c.re * c.re + c.im * c.im).to_wide().powf(half_p) as f32);
        }
        // Two-sided: bin k > n_fft / 2 mirrors bin n_fft - k.
        let n_fft = self.config.n_fft;
        for (i, o) in hi.iter_mut().enumerate() {
            *o = lo[n_fft - (half + i)];
        }
    }

    /// Writes the complex bins of one frame as (re, im) pairs into `out`.
    fn complex_into(&self, spectrum: &[Complex<Fs>], out: &mut [f32]) {
        let n_fft = self.config.n_fft;
        for k in 0..out.len() / 2 {
            let c = if k < spectrum.len() { spectrum[k] } else { spectrum[n_fft - k].conj() };
            out[2 * k] = c.re as f32;
            out[2 * k + 1] = c.im as f32;
        }
    }

    /// The spectrogram of `rows` signals of `len` samples, as `[rows, n_freqs, frames]`
    /// (`[rows, n_freqs, frames, 2]` for the complex STFT) and the frame count.
    fn compute(&self, x: &[f32], rows: usize, len: usize) -> Result<(Vec<f32>, usize)> {
        let bins = self.n_freqs();
        let pair = if self.config.power.is_some() { 1 } else { 2 };
        let (tf, frames) = if pair == 1 {
            self.run_frames(x, rows, len, bins, 0, |s, _, o| self.magnitude_into(s, o))?
        } else {
            self.run_frames(x, rows, len, bins * 2, 0, |s, _, o| self.complex_into(s, o))?
        };
        let mut out = vec![0.0f32; tf.len()];
        let per_row = frames * bins * pair;
        for (src, dst) in tf.chunks(per_row.max(1)).zip(out.chunks_mut(per_row.max(1))) {
            if pair == 1 {
                par_transpose_into(src, frames, bins, dst);
            } else {
                let src: Vec<[f32; 2]> = src.chunks(2).map(|c| [c[0], c[1]]).collect();
                let mut tmp = vec![[0.0f32; 2]; src.len()];
                transpose_into(&src, frames, bins, &mut tmp);
                dst.iter_mut().zip(tmp.iter().flatten()).for_each(|(d, &s)| *d = s);
            }
        }
        Ok((out, frames))
    }

    /// The spectrogram of a `[..., time]` f32 tensor: `[..., freq, frames]`, or
    /// `[..., freq, frames, 2]` (real, imaginary) when `power` is `None`.
    pub fn forward(&self, waveform: &Tensor) -> Result<Tensor> {
        let x = f32_data("Spectrogram", waveform, 1)?;
        let dims = waveform.dims();
        let len = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let (data, frames) = self.compute(&x, rows, len)?;
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.extend([self.n_freqs(), frames]);
        if self.config.power.is_none() {
            shape.push(2);
        }
        tensor(data, shape)
    }

    /// The spectrogram of one signal: `[freq, frames]` row-major (`[freq, frames, 2]` for the
    /// complex STFT).
    pub fn forward_slice(&self, waveform: &[f32]) -> Result<FeatureMatrix> {
        let (data, frames) = self.compute(waveform, 1, waveform.len())?;
        Ok(FeatureMatrix { data, rows: self.n_freqs(), frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct DFT of one frame, in f64.
    fn dft_power(frame: &[f64], k: usize) -> f64 {
        let n = frame.len() as f64;
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &x) in frame.iter().enumerate() {
            let a = -2.0 * std::f64::consts::PI * (k * i) as f64 / n;
            re += x * a.cos();
            im += x * a.sin();
        }
        re * re + im * im
    }

    #[test]
    fn matches_a_direct_dft() {
        let x: Vec<f32> = (0..300).map(|i| ((i as f32) * 0.37).sin() + 0.1 * ((i * i) as f32 * 0.01).cos()).collect();
        let cfg = SpectrogramConfig { n_fft: 64, win_length: Some(48), hop_length: Some(20), ..Default::default() };
        let s = Spectrogram::new(cfg).unwrap();
        let m = s.forward_slice(&x).unwrap();
        assert_eq!((m.rows, m.frames), (33, 1 + 300 / 20));
        let w = Window::Hann.samples("t", 48).unwrap();
        // Frame 5 of the reflect-padded signal.
        let padded: Vec<f64> =
            (-32..300 + 32).map(|i: isize| f64::from(x[PadMode::Reflect.source(i, 300).unwrap()])).collect();
        let t = 5;
        let mut frame = vec![0.0f64; 64];
        for i in 0..48 {
            frame[8 + i] = padded[t * 20 + 8 + i] * f64::from(w[i]);
        }
        let max = (0..33).map(|k| dft_power(&frame, k)).fold(0.0, f64::max);
        for k in 0..33 {
            let want = dft_power(&frame, k);
            let got = f64::from(m.data[k * m.frames + t]);
            assert!((got - want).abs() <= 1e-5 * max, "bin {k}: {got} vs {want}");
        }
    }

    #[test]
    fn errors_on_bad_parameters_and_input() {
        let bad = |cfg: SpectrogramConfig| Spectrogram::new(cfg).unwrap_err().to_string();
        assert!(
            bad(SpectrogramConfig { n_fft: 64, win_length: Some(65), ..Default::default() }).contains("win_length 65")
        );
        assert!(bad(SpectrogramConfig { n_fft: 64, hop_length: Some(0), ..Default::default() }).contains("hop_length"));
        assert!(bad(SpectrogramConfig { power: Some(-1.0), ..Default::default() }).contains("power"));
        let s = Spectrogram::new(SpectrogramConfig { n_fft: 64, ..Default::default() }).unwrap();
        let e = s.forward_slice(&[0.0; 32]).unwrap_err().to_string();
        assert!(e.contains("reflect") && e.contains("32"), "{e}");
        assert!(s.forward_slice(&[0.0; 33]).is_ok());
        let s = Spectrogram::new(SpectrogramConfig { n_fft: 64, center: false, ..Default::default() }).unwrap();
        assert!(s.forward_slice(&[0.0; 63]).unwrap_err().to_string().contains("n_fft 64"));
        let ints = Tensor::from_vec(vec![1i64, 2, 3], [3], &stapes_tensor::Device::Cpu).unwrap();
        assert!(s.forward(&ints).unwrap_err().to_string().contains("I64"));
    }

    #[test]
    fn batch_rows_equal_single_rows_and_two_sided_mirrors() {
        let x: Vec<f32> = (0..2 * 500).map(|i| ((i as f32) * 0.05).sin()).collect();
        let cfg = SpectrogramConfig { n_fft: 32, hop_length: Some(8), onesided: false, ..Default::default() };
        let s = Spectrogram::new(cfg).unwrap();
        let t = Tensor::from_vec(x.clone(), [2, 500], &stapes_tensor::Device::Cpu).unwrap();
        let out = s.forward(&t).unwrap();
        assert_eq!(out.dims(), &[2, 32, 63]);
        let all = out.to_vec::<f32>().unwrap();
        let second = s.forward_slice(&x[500..]).unwrap();
        assert_eq!(&all[32 * 63..], &second.data[..]);
        for k in 1..16 {
            assert_eq!(&second.data[k * 63..(k + 1) * 63], &second.data[(32 - k) * 63..(33 - k) * 63]);
        }
    }
}
