//! Delta coefficients (`torchaudio.functional.compute_deltas`,
//! `torchaudio.transforms.ComputeDeltas`).

use stapes_tensor::{Error, Result, Tensor};

use super::stft::PadMode;
use super::{f32_data, tensor};

/// Deltas along the last axis of `x`, rows of `len` values, into `out` (same size):
/// `d_t = sum_{n=1}^{N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1}^{N} n^2)` with
/// `N = (win_length - 1) / 2`, the edges padded with `mode` (torchaudio: replicate).
pub fn compute_deltas(x: &[f32], len: usize, win_length: usize, mode: PadMode, out: &mut [f32]) -> Result<()> {
    const OP: &str = "compute_deltas";
    if win_length < 3 {
        return Err(Error::invalid(OP, format!("win_length must be >= 3, got {win_length}")));
    }
    if x.len() != out.len() || (len == 0 && !x.is_empty()) || (len > 0 && !x.len().is_multiple_of(len)) {
        return Err(Error::shape(OP, format!("{} input values, {} outputs, rows of {len}", x.len(), out.len())));
    }
    let n = (win_length - 1) / 2;
    if len == 0 {
        return Ok(());
    }
    mode.check(OP, n, len)?;
    let denom = (n * (n + 1) * (2 * n + 1)) as f32 / 3.0;
    for (row, dst) in x.chunks(len).zip(out.chunks_mut(len)) {
        let at = |i: isize| mode.source(i, len).map_or(0.0, |j| row[j]);
        for (t, d) in dst.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for j in -(n as isize)..=(n as isize) {
                acc += j as f32 * at(t as isize + j);
            }
            *d = acc / denom;
        }
    }
    Ok(())
}

/// `torchaudio.transforms.ComputeDeltas`: deltas of a `[..., freq, time]` tensor along time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComputeDeltas {
    /// Window length, at least 3. Default 5.
    pub win_length: usize,
    /// Edge padding. Default replicate.
    pub mode: PadMode,
}

impl Default for ComputeDeltas {
    fn default() -> Self {
        ComputeDeltas { win_length: 5, mode: PadMode::Replicate }
    }
}

impl ComputeDeltas {
    /// The deltas of an f32 tensor of rank >= 1, along its last axis; same shape.
    pub fn forward(&self, specgram: &Tensor) -> Result<Tensor> {
        let x = f32_data("ComputeDeltas", specgram, 1)?;
        let len = specgram.dims()[specgram.rank() - 1];
        let mut out = vec![0.0f32; x.len()];
        compute_deltas(&x, len, self.win_length, self.mode, &mut out)?;
        tensor(out, specgram.dims().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ramp_has_unit_slope_inside() {
        let x: Vec<f32> = (0..10).map(|i| 3.0 * i as f32).collect();
        let mut d = vec![0.0; 10];
        compute_deltas(&x, 10, 5, PadMode::Replicate, &mut d).unwrap();
        for &v in &d[2..8] {
            assert!((v - 3.0).abs() < 1e-6);
        }
        // Replicate padding at t = 0: (1*(3 - 0) + 2*(6 - 0)) / 10.
        assert!((d[0] - 1.5).abs() < 1e-6);
        assert!(compute_deltas(&x, 10, 2, PadMode::Replicate, &mut d).is_err());
        assert!(compute_deltas(&x[..2], 2, 5, PadMode::Reflect, &mut d[..2]).is_err());
    }
}
