//! Decibels (`torchaudio.transforms.AmplitudeToDB`), the DCT matrix
//! (`torchaudio.functional.create_dct`) and `torchaudio.transforms.MFCC`.

use stapes_tensor::{Device, Error, Result, Tensor};

use super::mel::{MelSpectrogram, MelSpectrogramConfig};
use super::{f32_data, tensor, FeatureMatrix};

/// What [`AmplitudeToDB`] is given (`stype`): a power (`10 log10`) or a magnitude (`20 log10`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SType {
    /// `"power"` (the default).
    #[default]
    Power,
    /// `"magnitude"`.
    Magnitude,
}

/// Smallest value before the logarithm (torchaudio's `amin`).
const AMIN: f32 = 1e-10;

/// `torchaudio.functional.amplitude_to_DB` with `amin = 1e-10` and `ref = 1` (so
/// `db_multiplier = 0`), in place on `x` holding a tensor of shape `dims`:
/// `multiplier * log10(max(x, amin))`, then, with `top_db`, clamped below at
/// `max - top_db`. The maximum is taken like torchaudio: over the whole tensor when it has
/// at most 3 dims, else per `[..., c, f, t]` block of the last 3 dims.
pub fn amplitude_to_db(x: &mut [f32], dims: &[usize], multiplier: f32, top_db: Option<f32>) {
    for v in x.iter_mut() {
        *v = multiplier * v.max(AMIN).log10();
    }
    if let Some(top_db) = top_db {
        let block = if dims.len() <= 3 { x.len() } else { dims[dims.len() - 3..].iter().product() };
        for chunk in x.chunks_mut(block.max(1)) {
            let floor = chunk.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) - top_db;
            chunk.iter_mut().for_each(|v| *v = v.max(floor));
        }
    }
}

/// `torchaudio.transforms.AmplitudeToDB`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AmplitudeToDB {
    /// Power or magnitude input. Default power.
    pub stype: SType,
    /// Clamp to at most this many dB below the maximum. Default none.
    pub top_db: Option<f32>,
}

impl AmplitudeToDB {
    /// A transform; errors on a negative or non-finite `top_db`, as torchaudio.
    pub fn new(stype: SType, top_db: Option<f32>) -> Result<AmplitudeToDB> {
        if let Some(t) = top_db {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(Error::invalid("AmplitudeToDB", format!("top_db must be a finite value >= 0, got {t}")));
            }
        }
        Ok(AmplitudeToDB { stype, top_db })
    }

    fn multiplier(&self) -> f32 {
        match self.stype {
            SType::Power => 10.0,
            SType::Magnitude => 20.0,
        }
    }

    /// Decibels of an f32 tensor of any shape (see [`amplitude_to_db`] for how `top_db`
    /// groups it).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut data = f32_data("AmplitudeToDB", x, 0)?.into_owned();
        amplitude_to_db(&mut data, x.dims(), self.multiplier(), self.top_db);
        tensor(data, x.dims().to_vec())
    }

    /// Decibels of a slice, in place, treated as one block for `top_db`.
    pub fn forward_slice(&self, x: &mut [f32]) {
        amplitude_to_db(x, &[x.len()], self.multiplier(), self.top_db);
    }
}

/// Whether the DCT is orthonormal (`norm="ortho"`) or unnormalised (`norm=None`, a factor 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DctNorm {
    /// `"ortho"` (MFCC's default).
    #[default]
    Ortho,
    /// `None`.
    None,
}

/// The DCT-II matrix of `torchaudio.functional.create_dct`, `[n_mels, n_mfcc]` row-major:
/// `cos(pi / n_mels * (n + 0.5) * k)`, times 2 (`norm=None`), or orthonormal (column 0 times
/// `1/sqrt(2)`, all times `sqrt(2 / n_mels)`).
pub fn create_dct(n_mfcc: usize, n_mels: usize, norm: DctNorm) -> Result<Vec<f32>> {
    if n_mfcc == 0 || n_mels == 0 {
        return Err(Error::invalid("create_dct", format!("need n_mfcc, n_mels > 0, got {n_mfcc}, {n_mels}")));
    }
    // As torchaudio, in f32: the argument `(pi / n_mels * (n + 0.5)) * k` rounded at each
    // step (its rounding dominates the matrix's error), the cosine correctly rounded.
    let step = (std::f64::consts::PI / n_mels as f64) as f32;
    let first = std::f64::consts::FRAC_1_SQRT_2 as f32;
    let scale = (2.0 / n_mels as f64).sqrt() as f32;
    let mut out = vec![0.0f32; n_mels * n_mfcc];
    for n in 0..n_mels {
        for k in 0..n_mfcc {
            let arg = step * (n as f32 + 0.5) * k as f32;
            let mut v = f64::from(arg).cos() as f32;
            match norm {
                DctNorm::None => v *= 2.0,
                DctNorm::Ortho => {
                    if k == 0 {
                        v *= first;
                    }
                    v *= scale;
                }
            }
            out[n * n_mfcc + k] = v;
        }
    }
    Ok(out)
}

/// The parameters of `torchaudio.transforms.MFCC`, with its defaults (`dct_type` is always 2,
/// the only type torchaudio supports).
#[derive(Clone, Debug, PartialEq)]
pub struct MfccConfig {
    /// Sample rate in Hz; overrides `melkwargs.sample_rate`, as torchaudio. Default 16000.
    pub sample_rate: u32,
    /// Number of coefficients kept, at most `n_mels`. Default 40.
    pub n_mfcc: usize,
    /// DCT normalisation. Default ortho.
    pub norm: DctNorm,
    /// `log(mel + 1e-6)` instead of decibels with `top_db = 80`. Default false.
    pub log_mels: bool,
    /// The mel spectrogram's parameters. Default: `MelSpectrogram`'s defaults.
    pub melkwargs: MelSpectrogramConfig,
}

impl Default for MfccConfig {
    fn default() -> Self {
        MfccConfig {
            sample_rate: 16000,
            n_mfcc: 40,
            norm: DctNorm::Ortho,
            log_mels: false,
            melkwargs: MelSpectrogramConfig::default(),
        }
    }
}

impl MfccConfig {
    /// `MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc)` with torchaudio's defaults; the mel
    /// arguments (`melkwargs`) are set by the chained setters, not by nesting configs:
    ///
    /// ```
    /// use stapes_speech::features::MfccConfig;
    /// let cfg = MfccConfig::new(16000, 13).n_mels(40).n_fft(400).hop_length(160);
    /// assert_eq!((cfg.melkwargs.n_mels, cfg.melkwargs.spectrogram.n_fft), (40, 400));
    /// ```
    pub fn new(sample_rate: u32, n_mfcc: usize) -> MfccConfig {
        let melkwargs = MelSpectrogramConfig { sample_rate, ..MelSpectrogramConfig::default() };
        MfccConfig { sample_rate, n_mfcc, melkwargs, ..MfccConfig::default() }
    }
    /// Sets the number of mel bands (`melkwargs["n_mels"]`).
    pub fn n_mels(mut self, n_mels: usize) -> Self {
        self.melkwargs.n_mels = n_mels;
        self
    }
    /// Sets the FFT size (`melkwargs["n_fft"]`).
    pub fn n_fft(mut self, n_fft: usize) -> Self {
        self.melkwargs = self.melkwargs.n_fft(n_fft);
        self
    }
    /// Sets the window length (`melkwargs["win_length"]`).
    pub fn win_length(mut self, win_length: usize) -> Self {
        self.melkwargs = self.melkwargs.win_length(win_length);
        self
    }
    /// Sets the hop between frames (`melkwargs["hop_length"]`).
    pub fn hop_length(mut self, hop_length: usize) -> Self {
        self.melkwargs = self.melkwargs.hop_length(hop_length);
        self
    }
    /// Sets the filterbank's frequency range (`melkwargs["f_min"]`, `melkwargs["f_max"]`).
    pub fn f_range(mut self, f_min: f64, f_max: f64) -> Self {
        self.melkwargs = self.melkwargs.f_min(f_min).f_max(f_max);
        self
    }
    /// Sets the DCT normalisation.
    pub fn norm(mut self, norm: DctNorm) -> Self {
        self.norm = norm;
        self
    }
    /// `log(mel + 1e-6)` instead of decibels.
    pub fn log_mels(mut self, log_mels: bool) -> Self {
        self.log_mels = log_mels;
        self
    }
}

/// `torchaudio.transforms.MFCC`: waveform `[..., time]` to `[..., n_mfcc, frames]`.
///
/// Without `log_mels`, the decibel clamp (`top_db = 80`) follows torchaudio's
/// `amplitude_to_DB`: for a `[batch, n_mels, frames]` mel spectrogram (a `[batch, time]`
/// input) the maximum is taken over the whole batch, not per item.
#[derive(Clone, Debug)]
pub struct Mfcc {
    config: MfccConfig,
    mel: MelSpectrogram,
    /// The DCT matrix transposed, `[n_mfcc, n_mels]`, in f64: the left operand of the GEMM
    /// that turns each `[n_mels, frames]` spectrogram into `[n_mfcc, frames]` coefficients.
    dct_t: Tensor,
}

impl Mfcc {
    /// Checks the parameters and precomputes the mel transform and the DCT matrix.
    pub fn new(config: MfccConfig) -> Result<Mfcc> {
        let mut mel =
            MelSpectrogram::new(MelSpectrogramConfig { sample_rate: config.sample_rate, ..config.melkwargs.clone() })?;
        // Decibels magnify the weak bands' FFT round-off: keep the FFT in f64.
        mel.f32_fft = false;
        if config.n_mfcc > mel.n_mels() {
            return Err(Error::invalid(
                "MFCC",
                format!(
                    "cannot select more MFCC coefficients than mel bands: n_mfcc {}, n_mels {}",
                    config.n_mfcc,
                    mel.n_mels()
                ),
            ));
        }
        let dct = create_dct(config.n_mfcc, mel.n_mels(), config.norm)?;
        let dct64: Vec<f64> = dct.iter().map(|&v| f64::from(v)).collect();
        let dct_t = Tensor::from_vec(dct64, [mel.n_mels(), config.n_mfcc], &Device::Cpu)?.t()?.contiguous()?;
        Ok(Mfcc { config, mel, dct_t })
    }

    /// The mel spectrogram it starts from.
    pub fn mel_spectrogram(&self) -> &MelSpectrogram {
        &self.mel
    }

    /// `[rows, n_mfcc, frames]` and the frame count; `lead` is the shape before time.
    fn compute(&self, x: &[f32], lead: &[usize], len: usize) -> Result<(Vec<f32>, usize)> {
        let rows: usize = lead.iter().product();
        let (mut mel, frames) = self.mel.compute(x, rows, len)?;
        let n_mels = self.mel.n_mels();
        if self.config.log_mels {
            mel.iter_mut().for_each(|v| *v = (*v + 1e-6).ln());
        } else {
            let mut dims = lead.to_vec();
            dims.extend([n_mels, frames]);
            amplitude_to_db(&mut mel, &dims, 10.0, Some(80.0));
        }
        let n_mfcc = self.config.n_mfcc;
        let mut out = vec![0.0f32; rows * n_mfcc * frames];
        if frames == 0 {
            return Ok((out, frames));
        }
        // out = dctᵀ · mel, one f64 GEMM per [n_mels, frames] spectrogram: the partial sums of a
        // coefficient (hundreds of dB) are far larger than the coefficient, so f32 accumulation
        // would lose ~1e-4 of it; the GEMM (gemm's f64 kernels, AVX-512/AVX2, both threads)
        // replaces a scalar triple loop.
        for (src, dst) in mel.chunks(n_mels * frames).zip(out.chunks_mut(n_mfcc * frames)) {
            let m64: Vec<f64> = src.iter().map(|&v| f64::from(v)).collect();
            let coeffs = self.dct_t.matmul(&Tensor::from_vec(m64, [n_mels, frames], &Device::Cpu)?)?;
            dst.iter_mut().zip(coeffs.to_vec::<f64>()?).for_each(|(o, a)| *o = a as f32);
        }
        Ok((out, frames))
    }

    /// The MFCCs of a `[..., time]` f32 tensor: `[..., n_mfcc, frames]`.
    pub fn forward(&self, waveform: &Tensor) -> Result<Tensor> {
        let x = f32_data("MFCC", waveform, 1)?;
        let dims = waveform.dims();
        let lead = &dims[..dims.len() - 1];
        let (data, frames) = self.compute(&x, lead, dims[dims.len() - 1])?;
        let mut shape = lead.to_vec();
        shape.extend([self.config.n_mfcc, frames]);
        tensor(data, shape)
    }

    /// The MFCCs of one signal: `[n_mfcc, frames]` row-major.
    pub fn forward_slice(&self, waveform: &[f32]) -> Result<FeatureMatrix> {
        let (data, frames) = self.compute(waveform, &[], waveform.len())?;
        Ok(FeatureMatrix { data, rows: self.config.n_mfcc, frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ortho_dct_is_orthonormal() {
        let n = 16;
        let d = create_dct(n, n, DctNorm::Ortho).unwrap();
        for a in 0..n {
            for b in 0..n {
                let dot: f32 = (0..n).map(|m| d[m * n + a] * d[m * n + b]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-5, "columns {a}, {b}: {dot}");
            }
        }
    }

    #[test]
    fn decibels_and_top_db() {
        let mut x = vec![1.0, 10.0, 100.0, 1e-12, 0.0];
        amplitude_to_db(&mut x, &[5], 10.0, None);
        assert_eq!(&x[..3], &[0.0, 10.0, 20.0]);
        assert_eq!(x[3], -100.0);
        let mut y = vec![1.0, 10.0, 100.0, 1e-3];
        amplitude_to_db(&mut y, &[4], 20.0, Some(50.0));
        assert_eq!(y, vec![0.0, 20.0, 40.0, -10.0]);
        assert!(AmplitudeToDB::new(SType::Power, Some(-1.0)).is_err());
    }

    #[test]
    fn too_many_coefficients_is_an_error() {
        let cfg = MfccConfig { n_mfcc: 200, ..Default::default() };
        let e = Mfcc::new(cfg).unwrap_err().to_string();
        assert!(e.contains("n_mfcc 200") && e.contains("n_mels 128"), "{e}");
    }
}
