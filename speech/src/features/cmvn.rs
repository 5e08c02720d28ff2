//! Cepstral mean and variance normalisation over the time axis of `[..., feat, time]`
//! features: per utterance ([`Cmvn`]) or with statistics accumulated over a dataset
//! ([`GlobalCmvn`], whose [`CmvnState`] can be saved as JSON).
//!
//! Both normalise feature `f` as `(x - mean_f) / max(std_f, eps)` (or only subtract the mean
//! when `norm_vars` is false), with the population standard deviation
//! (`torch.std(unbiased=False)`). Statistics are accumulated in f64.

use serde::{Deserialize, Serialize};
use stapes_tensor::{Error, Result, Tensor};

use super::{f32_data, tensor};

/// Per-feature sums over time of one `[feat, time]` block, added into `sum` and `sum_sq`.
fn accumulate(x: &[f32], feats: usize, frames: usize, sum: &mut [f64], sum_sq: &mut [f64]) {
    for f in 0..feats {
        for &v in &x[f * frames..(f + 1) * frames] {
            let v = f64::from(v);
            sum[f] += v;
            sum_sq[f] += v * v;
        }
    }
}

/// Normalises a `[feat, time]` block in place with per-feature mean and scale.
fn apply(x: &mut [f32], frames: usize, mean: &[f64], inv_std: Option<&[f64]>) {
    for (f, row) in x.chunks_mut(frames.max(1)).enumerate() {
        let (m, s) = (mean[f], inv_std.map_or(1.0, |s| s[f]));
        row.iter_mut().for_each(|v| *v = ((f64::from(*v) - m) * s) as f32);
    }
}

fn feat_time(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    if t.rank() < 2 {
        return Err(Error::shape(op, format!("expected [..., feat, time], got shape {:?}", t.dims())));
    }
    let d = t.dims();
    Ok((d[d.len() - 2], d[d.len() - 1]))
}

/// Per-utterance CMVN: each `[feat, time]` item is normalised with its own statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cmvn {
    /// Divide by the standard deviation too (else only subtract the mean). Default true.
    pub norm_vars: bool,
    /// Floor of the standard deviation. Default 1e-10.
    pub eps: f64,
}

impl Default for Cmvn {
    fn default() -> Self {
        Cmvn { norm_vars: true, eps: 1e-10 }
    }
}

impl Cmvn {
    /// Normalises every `[feat, time]` item of a `[..., feat, time]` f32 tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (feats, frames) = feat_time("Cmvn", x)?;
        let mut data = f32_data("Cmvn", x, 2)?.into_owned();
        if frames == 0 {
            return tensor(data, x.dims().to_vec());
        }
        for item in data.chunks_mut(feats * frames) {
            let (mut sum, mut sq) = (vec![0.0; feats], vec![0.0; feats]);
            accumulate(item, feats, frames, &mut sum, &mut sq);
            let n = frames as f64;
            let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
            let inv: Vec<f64> =
                sq.iter().zip(&mean).map(|(q, m)| 1.0 / (q / n - m * m).max(0.0).sqrt().max(self.eps)).collect();
            apply(item, frames, &mean, self.norm_vars.then_some(&inv[..]));
        }
        tensor(data, x.dims().to_vec())
    }
}

/// The saved statistics of a [`GlobalCmvn`]: frame count and per-feature sums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CmvnState {
    /// Number of frames accumulated.
    pub count: u64,
    /// Per-feature sum of values.
    pub sum: Vec<f64>,
    /// Per-feature sum of squared values.
    pub sum_sq: Vec<f64>,
}

/// Global CMVN: statistics accumulated over a dataset with [`GlobalCmvn::accumulate`], then
/// applied to every utterance with [`GlobalCmvn::forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalCmvn {
    state: CmvnState,
    /// Divide by the standard deviation too. Default true.
    pub norm_vars: bool,
    /// Floor of the standard deviation. Default 1e-10.
    pub eps: f64,
}

impl GlobalCmvn {
    /// Empty statistics for `n_features` features.
    pub fn new(n_features: usize) -> GlobalCmvn {
        GlobalCmvn {
            state: CmvnState { count: 0, sum: vec![0.0; n_features], sum_sq: vec![0.0; n_features] },
            norm_vars: true,
            eps: 1e-10,
        }
    }

    /// Continues from saved statistics.
    pub fn from_state(state: CmvnState) -> Result<GlobalCmvn> {
        if state.sum.len() != state.sum_sq.len() {
            return Err(Error::invalid(
                "GlobalCmvn::from_state",
                format!("sum has {} features, sum_sq {}", state.sum.len(), state.sum_sq.len()),
            ));
        }
        Ok(GlobalCmvn { state, norm_vars: true, eps: 1e-10 })
    }

    /// The statistics, to save (e.g. with `serde_json`).
    pub fn state(&self) -> &CmvnState {
        &self.state
    }

    /// Adds the frames of a `[..., feat, time]` f32 tensor to the statistics.
    pub fn accumulate(&mut self, x: &Tensor) -> Result<()> {
        let (feats, frames) = self.check("GlobalCmvn::accumulate", x)?;
        let data = f32_data("GlobalCmvn::accumulate", x, 2)?;
        if frames == 0 {
            return Ok(());
        }
        for item in data.chunks(feats * frames) {
            accumulate(item, feats, frames, &mut self.state.sum, &mut self.state.sum_sq);
            self.state.count += frames as u64;
        }
        Ok(())
    }

    /// Per-feature mean and standard deviation (floored at `eps`); an error before any frame
    /// was accumulated.
    pub fn mean_std(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        if self.state.count == 0 {
            return Err(Error::invalid("GlobalCmvn", "no frames accumulated yet"));
        }
        let n = self.state.count as f64;
        let mean: Vec<f64> = self.state.sum.iter().map(|s| s / n).collect();
        let std =
            self.state.sum_sq.iter().zip(&mean).map(|(q, m)| (q / n - m * m).max(0.0).sqrt().max(self.eps)).collect();
        Ok((mean, std))
    }

    /// Normalises a `[..., feat, time]` f32 tensor with the accumulated statistics.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (feats, frames) = self.check("GlobalCmvn", x)?;
        let (mean, std) = self.mean_std()?;
        let inv: Vec<f64> = std.iter().map(|s| 1.0 / s).collect();
        let mut data = f32_data("GlobalCmvn", x, 2)?.into_owned();
        if frames > 0 {
            for item in data.chunks_mut(feats * frames) {
                apply(item, frames, &mean, self.norm_vars.then_some(&inv[..]));
            }
        }
        tensor(data, x.dims().to_vec())
    }

    fn check(&self, op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
        let (feats, frames) = feat_time(op, x)?;
        if feats != self.state.sum.len() {
            return Err(Error::shape(
                op,
                format!("statistics are for {} features, got shape {:?}", self.state.sum.len(), x.dims()),
            ));
        }
        Ok((feats, frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::Device;

    #[test]
    fn global_stats_of_two_utterances_equal_those_of_their_concatenation() {
        let a: Vec<f32> = (0..3 * 5).map(|i| (i as f32 * 0.7).sin()).collect();
        let b: Vec<f32> = (0..3 * 4).map(|i| (i as f32 * 0.3).cos() * 2.0).collect();
        let mut g = GlobalCmvn::new(3);
        g.accumulate(&Tensor::from_vec(a.clone(), [3, 5], &Device::Cpu).unwrap()).unwrap();
        g.accumulate(&Tensor::from_vec(b.clone(), [1, 3, 4], &Device::Cpu).unwrap()).unwrap();
        let (mean, std) = g.mean_std().unwrap();
        for f in 0..3 {
            let vals: Vec<f64> =
                a[f * 5..f * 5 + 5].iter().chain(&b[f * 4..f * 4 + 4]).map(|&v| f64::from(v)).collect();
            let m = vals.iter().sum::<f64>() / 9.0;
            let s = (vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / 9.0).sqrt();
            assert!((mean[f] - m).abs() < 1e-12 && (std[f] - s).abs() < 1e-12);
        }
        let json = serde_json::to_string(g.state()).unwrap();
        let back = GlobalCmvn::from_state(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.state(), g.state());
        assert!(g.accumulate(&Tensor::from_vec(a, [5, 3], &Device::Cpu).unwrap()).is_err());
        assert!(GlobalCmvn::new(3).mean_std().is_err());
    }

    #[test]
    fn per_utterance_output_has_zero_mean_unit_variance() {
        let x: Vec<f32> = (0..2 * 4 * 50).map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0).collect();
        let y = Cmvn::default().forward(&Tensor::from_vec(x, [2, 4, 50], &Device::Cpu).unwrap()).unwrap();
        for row in y.to_vec::<f32>().unwrap().chunks(50) {
            let m = row.iter().map(|&v| f64::from(v)).sum::<f64>() / 50.0;
            let v = row.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / 50.0;
            assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-4, "mean {m}, var {v}");
        }
    }
}
