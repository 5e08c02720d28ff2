//! Speech features as `torchaudio.transforms` computes them, on the CPU in f32: the
//! short-time Fourier transform ([`Spectrogram`]), mel filterbanks ([`melscale_fbanks`],
//! [`MelScale`], [`MelSpectrogram`]), decibels ([`AmplitudeToDB`]), cepstra ([`create_dct`],
//! [`Mfcc`]), deltas ([`ComputeDeltas`]) and mean/variance normalisation ([`Cmvn`],
//! [`GlobalCmvn`]).
//!
//! Parameter names and defaults are torchaudio's (2.11): a transform is configured with a
//! plain struct whose `Default` is torchaudio's default, then built once with `new`, which
//! checks the parameters and precomputes what every call reuses (the window, the FFT plan, the
//! sparse mel filterbank, the DCT matrix). A built transform takes a
//! [`stapes_tensor::Tensor`] of shape `[..., time]` (f32, CPU) and returns `[..., freq, frames]`
//! like torchaudio, or a plain `&[f32]` signal through its `*_slice` method.
//!
//! Bad parameters and bad input are [`stapes_tensor::Error`]s naming the transform and the
//! offending values, never panics.
//!
//! Parity with torchaudio is tested in `tests/parity_features.rs` against fixtures made by
//! `tools/golden/features.py`.

mod cmvn;
mod deltas;
mod mel;
mod mfcc;
mod stft;

pub use cmvn::{Cmvn, CmvnState, GlobalCmvn};
pub use deltas::{compute_deltas, ComputeDeltas};
pub use mel::{
    hz_to_mel, mel_to_hz, melscale_fbanks, vtlp_fbanks, vtlp_warp, MelNorm, MelScale, MelScaleConfig, MelScaleKind,
    MelSpectrogram, MelSpectrogramConfig,
};
pub use mfcc::{amplitude_to_db, create_dct, AmplitudeToDB, DctNorm, Mfcc, MfccConfig, SType};
pub use stft::{PadMode, SpecNorm, Spectrogram, SpectrogramConfig, Window};

use std::borrow::Cow;

use rayon::prelude::*;

use stapes_tensor::{CpuStorage, DType, Device, Error, Result, Storage, Tensor};

/// The f32 elements of `t` in row-major order: borrowed when `t` is contiguous, else copied.
/// Errors when `t` is not f32 or has fewer than `min_rank` dims.
pub(crate) fn f32_data<'a>(op: &'static str, t: &'a Tensor, min_rank: usize) -> Result<Cow<'a, [f32]>> {
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
            msg: "expected an f32 tensor (convert with to_dtype(DType::F32))",
        });
    }
    if t.rank() < min_rank {
        return Err(Error::shape(op, format!("expected a tensor of rank >= {min_rank}, got shape {:?}", t.dims())));
    }
    if t.is_contiguous() {
        let Storage::Cpu(CpuStorage::F32(v)) = t.storage() else {
            return Err(Error::invalid(op, "expected CPU f32 storage"));
        };
        let off = t.layout().offset();
        return Ok(Cow::Borrowed(&v[off..off + t.elem_count()]));
    }
    Ok(Cow::Owned(t.to_vec::<f32>()?))
}

/// A feature matrix from a `&[f32]` entry point: `data` is row-major `[rows, frames]` (rows =
/// frequency bins, mel bands or coefficients; the complex spectrogram has `[rows, frames, 2]`).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMatrix {
    /// The values, row-major.
    pub data: Vec<f32>,
    /// Number of rows (frequency bins, mel bands, coefficients).
    pub rows: usize,
    /// Number of frames (time steps).
    pub frames: usize,
}

/// A CPU f32 tensor of `shape` holding `data`.
pub(crate) fn tensor(data: Vec<f32>, shape: Vec<usize>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// [`transpose_into`] split over the rayon threads by bands of `dst` rows (used on the
/// features' `[frames, bins]` results, which are large enough to be worth it).
pub(crate) fn par_transpose_into<T: Copy + Send + Sync>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const BAND: usize = 8;
    if rows == 0 || cols == 0 {
        return;
    }
    dst.par_chunks_mut(rows * BAND).enumerate().for_each(|(bi, band)| {
        let c0 = bi * BAND;
        let width = band.len() / rows;
        for r in 0..rows {
            let row = &src[r * cols + c0..r * cols + c0 + width];
            for (k, &v) in row.iter().enumerate() {
                band[k * rows + r] = v;
            }
        }
    });
}

/// Transposes a row-major `[rows, cols]` block of `src` into `dst` as `[cols, rows]`, in
/// cache-sized tiles.
pub(crate) fn transpose_into<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}
