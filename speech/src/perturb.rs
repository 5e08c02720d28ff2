//! Waveform perturbation for training: speed, volume and additive noise, each deterministic
//! for a [`Generator`]'s state.
//!
//! **Speed** follows Kaldi (`sox speed f` in `utils/data/perturb_data_dir_speed.sh`) and
//! torchaudio (`torchaudio.functional.speed`): a factor `f` plays the audio `f` times faster,
//! so the duration becomes `1/f` of the original and pitch and formants rise by `f`. It is done
//! by resampling from `sr` to `sr / f` and declaring the result to be at `sr` again. (SpeechBrain's
//! `SpeedPerturb(speeds=[90, 100, 110])` resamples to `sr * speed / 100`, so its "110" makes the
//! audio *longer*; the usual 0.9/1.0/1.1 set is symmetric, so recipes train on the same three
//! variants either way.)

use stapes_tensor::{Error, Generator, Result};

use crate::audio::resample_ratio;

/// Changes the speed by `factor` (> 1 faster and shorter, < 1 slower and longer): the output
/// has `round(len / factor)` samples at the same sample rate. `factor` must lie in `[0.25, 4]`.
pub fn speed(samples: &[f32], factor: f64) -> Result<Vec<f32>> {
    const OP: &str = "speed";
    if !(factor.is_finite() && (0.25..=4.0).contains(&factor)) {
        return Err(Error::invalid(OP, format!("speed factor must lie in [0.25, 4], got {factor}")));
    }
    if factor == 1.0 {
        return Ok(samples.to_vec());
    }
    resample_ratio(samples, 1.0 / factor, OP)
}

/// Random speed perturbation: a factor drawn from a fixed set (Kaldi's `{0.9, 1.0, 1.1}`) or
/// uniformly from a range.
#[derive(Clone, Debug, PartialEq)]
pub enum SpeedPerturb {
    /// Each factor with equal probability.
    Choice(Vec<f64>),
    /// Uniform in `[lo, hi]`.
    Range(f64, f64),
}

impl Default for SpeedPerturb {
    /// The Kaldi recipe set `{0.9, 1.0, 1.1}`.
    fn default() -> Self {
        SpeedPerturb::Choice(vec![0.9, 1.0, 1.1])
    }
}

impl SpeedPerturb {
    /// Draws a factor from `gen`.
    pub fn sample_factor(&self, gen: &mut Generator) -> Result<f64> {
        match self {
            SpeedPerturb::Choice(f) if f.is_empty() => Err(Error::invalid("SpeedPerturb", "empty factor set")),
            SpeedPerturb::Choice(f) => Ok(f[(gen.next_u64() % f.len() as u64) as usize]),
            SpeedPerturb::Range(lo, hi) if lo.is_nan() || hi.is_nan() || lo > hi => {
                Err(Error::invalid("SpeedPerturb", format!("empty range [{lo}, {hi}]")))
            }
            SpeedPerturb::Range(lo, hi) => Ok(lo + (hi - lo) * gen.next_f64()),
        }
    }

    /// Perturbs `samples`; returns the new signal and the factor used.
    pub fn apply(&self, samples: &[f32], gen: &mut Generator) -> Result<(Vec<f32>, f64)> {
        let f = self.sample_factor(gen)?;
        Ok((speed(samples, f)?, f))
    }
}

/// Multiplies by `10^(db / 20)`.
pub fn gain_db(samples: &[f32], db: f64) -> Result<Vec<f32>> {
    if !db.is_finite() {
        return Err(Error::invalid("gain_db", format!("gain must be finite, got {db} dB")));
    }
    let g = 10f64.powf(db / 20.0) as f32;
    Ok(samples.iter().map(|x| x * g).collect())
}

/// Random volume perturbation: a gain drawn uniformly from `[min_db, max_db]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolumePerturb {
    /// Lowest gain in dB.
    pub min_db: f64,
    /// Highest gain in dB.
    pub max_db: f64,
}

impl VolumePerturb {
    /// Perturbs `samples`; returns the new signal and the gain in dB.
    pub fn apply(&self, samples: &[f32], gen: &mut Generator) -> Result<(Vec<f32>, f64)> {
        if self.min_db.is_nan() || self.max_db.is_nan() || self.min_db > self.max_db {
            return Err(Error::invalid("VolumePerturb", format!("empty range [{}, {}] dB", self.min_db, self.max_db)));
        }
        let db = self.min_db + (self.max_db - self.min_db) * gen.next_f64();
        Ok((gain_db(samples, db)?, db))
    }
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len().max(1) as f64
}

/// Adds `noise` scaled so that the signal-to-noise ratio (mean power ratio over the signal's
/// length) is `snr_db`. The noise is repeated when shorter than the signal and read from
/// `offset` (modulo its length). A silent signal is returned unchanged (no SNR is defined);
/// a silent or empty noise is an error.
pub fn add_noise(signal: &[f32], noise: &[f32], snr_db: f64, offset: usize) -> Result<Vec<f32>> {
    const OP: &str = "add_noise";
    if !snr_db.is_finite() {
        return Err(Error::invalid(OP, format!("SNR must be finite, got {snr_db} dB")));
    }
    if noise.is_empty() {
        return Err(Error::invalid(OP, "empty noise signal"));
    }
    let ps = power(signal);
    if ps == 0.0 {
        return Ok(signal.to_vec());
    }
    let seg: Vec<f32> = (0..signal.len()).map(|i| noise[(offset + i) % noise.len()]).collect();
    let pn = power(&seg);
    if pn == 0.0 {
        return Err(Error::invalid(OP, "the noise is silent over the signal's span"));
    }
    let scale = (ps / (pn * 10f64.powf(snr_db / 10.0))).sqrt() as f32;
    Ok(signal.iter().zip(&seg).map(|(s, n)| s + scale * n).collect())
}

/// Adds Gaussian white noise from `gen` at `snr_db`.
pub fn add_white_noise(signal: &[f32], snr_db: f64, gen: &mut Generator) -> Result<Vec<f32>> {
    let noise: Vec<f32> = (0..signal.len().max(1)).map(|_| gen.next_normal() as f32).collect();
    add_noise(signal, &noise, snr_db, 0)
}

/// Random additive noise: an SNR uniform in `[min_snr_db, max_snr_db]`, and either white noise
/// or one of `noises` (chosen uniformly, from a random offset).
#[derive(Clone, Debug, PartialEq)]
pub struct NoisePerturb {
    /// Lowest SNR in dB.
    pub min_snr_db: f64,
    /// Highest SNR in dB.
    pub max_snr_db: f64,
    /// Noise recordings to draw from; white noise when empty.
    pub noises: Vec<Vec<f32>>,
}

impl NoisePerturb {
    /// Perturbs `signal`; returns the noisy signal and the SNR used.
    pub fn apply(&self, signal: &[f32], gen: &mut Generator) -> Result<(Vec<f32>, f64)> {
        if self.min_snr_db.is_nan() || self.max_snr_db.is_nan() || self.min_snr_db > self.max_snr_db {
            return Err(Error::invalid(
                "NoisePerturb",
                format!("empty SNR range [{}, {}] dB", self.min_snr_db, self.max_snr_db),
            ));
        }
        let snr = self.min_snr_db + (self.max_snr_db - self.min_snr_db) * gen.next_f64();
        let out = if self.noises.is_empty() {
            add_white_noise(signal, snr, gen)?
        } else {
            let noise = &self.noises[(gen.next_u64() % self.noises.len() as u64) as usize];
            let offset = (gen.next_u64() % noise.len().max(1) as u64) as usize;
            add_noise(signal, noise, snr, offset)?
        };
        Ok((out, snr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.0625).sin() * 0.5).collect()
    }

    #[test]
    fn speed_changes_duration_by_inverse_factor() {
        let x = tone(16000);
        for f in [0.9, 1.1, 0.8, 1.25] {
            let y = speed(&x, f).unwrap();
            assert_eq!(y.len(), (16000.0 / f).round() as usize, "factor {f}");
        }
        assert!(speed(&x, 0.0).is_err());
        assert!(speed(&x, f64::NAN).is_err());
    }

    #[test]
    fn speed_raises_pitch_by_factor() {
        // A 500 Hz tone sped up by 1.1 becomes 550 Hz: count zero crossings.
        let sr = 16000.0;
        let x: Vec<f32> =
            (0..16000).map(|i| (2.0 * std::f64::consts::PI * 500.0 * i as f64 / sr).sin() as f32).collect();
        let y = speed(&x, 1.1).unwrap();
        let crossings = |v: &[f32]| v.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count() as f64;
        let fy = crossings(&y) / (y.len() as f64 / sr);
        assert!((fy - 550.0).abs() < 2.0, "{fy}");
    }

    #[test]
    fn perturbations_are_deterministic_for_a_seed() {
        let x = tone(4000);
        let sp = SpeedPerturb::default();
        let a = sp.apply(&x, &mut Generator::new(3)).unwrap();
        let b = sp.apply(&x, &mut Generator::new(3)).unwrap();
        assert_eq!(a, b);
        let seen: std::collections::BTreeSet<u64> =
            (0..50).map(|s| (sp.sample_factor(&mut Generator::new(s)).unwrap() * 10.0).round() as u64).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![9, 10, 11]);
        let r = SpeedPerturb::Range(0.9, 1.1).sample_factor(&mut Generator::new(1)).unwrap();
        assert!((0.9..=1.1).contains(&r));
        let np = NoisePerturb { min_snr_db: 5.0, max_snr_db: 20.0, noises: vec![] };
        assert_eq!(np.apply(&x, &mut Generator::new(9)).unwrap(), np.apply(&x, &mut Generator::new(9)).unwrap());
    }

    #[test]
    fn gain_and_snr_are_exact() {
        let x = tone(8000);
        let y = gain_db(&x, -6.0).unwrap();
        let ratio_db = 10.0 * (power(&y) / power(&x)).log10();
        assert!((ratio_db + 6.0).abs() < 1e-4, "{ratio_db}");
        let (v, db) = VolumePerturb { min_db: -3.0, max_db: 3.0 }.apply(&x, &mut Generator::new(2)).unwrap();
        assert!((-3.0..=3.0).contains(&db));
        assert!((10.0 * (power(&v) / power(&x)).log10() - db).abs() < 1e-4);
        for snr in [20.0, 10.0, 0.0] {
            let noisy = add_white_noise(&x, snr, &mut Generator::new(5)).unwrap();
            let n: Vec<f32> = noisy.iter().zip(&x).map(|(a, b)| a - b).collect();
            let measured = 10.0 * (power(&x) / power(&n)).log10();
            assert!((measured - snr).abs() < 1e-3, "{measured} vs {snr}");
        }
        let given = add_noise(&x, &[0.1, -0.2, 0.3], 10.0, 1).unwrap();
        let n: Vec<f32> = given.iter().zip(&x).map(|(a, b)| a - b).collect();
        assert!((10.0 * (power(&x) / power(&n)).log10() - 10.0).abs() < 1e-3);
        assert!(add_noise(&x, &[], 10.0, 0).is_err());
        assert!(add_noise(&x, &[0.0; 4], 10.0, 0).is_err());
        assert_eq!(add_noise(&[0.0; 4], &[1.0], 10.0, 0).unwrap(), vec![0.0; 4]);
    }
}
