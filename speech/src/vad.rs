//! Energy-based voice activity detection.
//!
//! 1. Frame energies in dB over 25 ms windows every 10 ms.
//! 2. The noise floor is a low percentile (10th by default) of the frame energies; frames more
//!    than `threshold_db` above it are speech.
//! 3. Runs of speech frames separated by less than `min_silence` are merged, then segments
//!    shorter than `min_speech` dropped.
//! 4. Each boundary is refined with 4 ms windows every 1 ms within one long frame of the
//!    coarse boundary (the first/last short window above the threshold), so boundaries are
//!    accurate to a few milliseconds rather than a 25 ms frame.
//! 5. A hangover extends every segment's end (speech trails off below the threshold).

use stapes_tensor::{Error, Result};

/// Settings of [`detect_speech`]. The defaults suit 8–48 kHz speech in stationary noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VadConfig {
    /// Analysis window in seconds (default 0.025).
    pub window: f64,
    /// Hop between windows in seconds (default 0.010).
    pub hop: f64,
    /// Percentile (0–100) of frame energies taken as the noise floor (default 10).
    pub floor_percentile: f64,
    /// dB above the noise floor that counts as speech (default 3; lower finds quieter speech in
    /// noise, higher rejects more noise bursts).
    pub threshold_db: f64,
    /// Segments shorter than this (seconds) are dropped (default 0.1).
    pub min_speech: f64,
    /// Pauses shorter than this (seconds) do not split a segment (default 0.15).
    pub min_silence: f64,
    /// Seconds added after each segment's end (default 0).
    pub hangover: f64,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            window: 0.025,
            hop: 0.010,
            floor_percentile: 10.0,
            threshold_db: 3.0,
            min_speech: 0.1,
            min_silence: 0.15,
            hangover: 0.0,
        }
    }
}

/// A stretch of speech, in seconds from the start of the signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// Start time in seconds.
    pub start: f64,
    /// End time in seconds.
    pub end: f64,
}

/// Energies in dB of windows of `win` samples every `hop` samples (a final partial window is
/// dropped; a signal shorter than one window gives one frame over all of it).
fn frame_energies_db(x: &[f32], win: usize, hop: usize) -> Vec<f64> {
    let energy = |s: &[f32]| {
        let p = s.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / s.len().max(1) as f64;
        10.0 * (p + 1e-10).log10()
    };
    if x.len() <= win {
        return vec![energy(x)];
    }
    (0..=(x.len() - win) / hop).map(|i| energy(&x[i * hop..i * hop + win])).collect()
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let k = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[k.min(s.len() - 1)]
}

fn validate(cfg: &VadConfig, sr: u32) -> Result<()> {
    const OP: &str = "detect_speech";
    if sr == 0 {
        return Err(Error::invalid(OP, "sample rate must be > 0"));
    }
    let pos = |v: f64| v.is_finite() && v > 0.0;
    let nonneg = |v: f64| v.is_finite() && v >= 0.0;
    if !pos(cfg.window) || !pos(cfg.hop) || cfg.hop > cfg.window {
        return Err(Error::invalid(OP, format!("need 0 < hop <= window, got {} and {}", cfg.hop, cfg.window)));
    }
    if !(0.0..=100.0).contains(&cfg.floor_percentile) || !cfg.threshold_db.is_finite() {
        return Err(Error::invalid(OP, "floor_percentile must lie in [0, 100] and threshold_db be finite"));
    }
    if !nonneg(cfg.min_speech) || !nonneg(cfg.min_silence) || !nonneg(cfg.hangover) {
        return Err(Error::invalid(OP, "min_speech, min_silence and hangover must be finite and >= 0"));
    }
    Ok(())
}

/// Finds the speech segments of a mono signal. Pure noise or silence gives no segments.
pub fn detect_speech(samples: &[f32], sample_rate: u32, cfg: &VadConfig) -> Result<Vec<Segment>> {
    validate(cfg, sample_rate)?;
    if samples.is_empty() {
        return Ok(vec![]);
    }
    let sr = sample_rate as f64;
    let win = ((cfg.window * sr).round() as usize).max(1);
    let hop = ((cfg.hop * sr).round() as usize).max(1);
    let e = frame_energies_db(samples, win, hop);
    let floor = percentile(&e, cfg.floor_percentile);
    let thr = floor + cfg.threshold_db;

    // Coarse runs of speech frames, as sample ranges [first window start, last window end).
    let mut runs: Vec<(usize, usize)> = vec![];
    let mut i = 0;
    while i < e.len() {
        if e[i] > thr {
            let s = i;
            while i < e.len() && e[i] > thr {
                i += 1;
            }
            runs.push((s * hop, ((i - 1) * hop + win).min(samples.len())));
        } else {
            i += 1;
        }
    }

    // Refine each boundary with short windows: the onset is the centre of the first short window
    // above the threshold inside the run's first long window, the offset the centre of the last
    // one inside its last long window.
    let sw = ((0.004 * sr).round() as usize).clamp(1, win);
    let sh = ((0.001 * sr).round() as usize).max(1);
    let short_e = |a: usize| {
        let b = (a + sw).min(samples.len());
        let p = samples[a..b].iter().map(|&v| v as f64 * v as f64).sum::<f64>() / (b - a).max(1) as f64;
        10.0 * (p + 1e-10).log10()
    };
    let mut segs: Vec<(f64, f64)> = runs
        .iter()
        .map(|&(a, b)| {
            let onset = (a..(a + win).min(b))
                .step_by(sh)
                .find(|&p| p + sw <= samples.len() && short_e(p) > thr)
                .map(|p| p + sw / 2)
                .unwrap_or(a + win / 2);
            let lo = b.saturating_sub(win).max(a);
            let offset = (lo..b.saturating_sub(sw).max(lo) + 1)
                .step_by(sh)
                .rfind(|&p| p + sw <= samples.len() && short_e(p) > thr)
                .map(|p| p + sw / 2)
                .unwrap_or(b.saturating_sub(win / 2));
            (onset as f64 / sr, offset.max(onset) as f64 / sr)
        })
        .collect();

    // Merge across short pauses, then drop short segments.
    let mut merged: Vec<(f64, f64)> = vec![];
    for s in segs.drain(..) {
        match merged.last_mut() {
            Some(last) if s.0 - last.1 < cfg.min_silence => last.1 = last.1.max(s.1),
            _ => merged.push(s),
        }
    }
    let total = samples.len() as f64 / sr;
    Ok(merged
        .into_iter()
        .filter(|s| s.1 - s.0 >= cfg.min_speech)
        .map(|(start, end)| Segment { start, end: (end + cfg.hangover).min(total) })
        .collect())
}

/// Cuts the leading and trailing silence: the samples from the first segment's start to the
/// last segment's end. A signal with no speech gives an empty vector.
pub fn trim(samples: &[f32], sample_rate: u32, cfg: &VadConfig) -> Result<Vec<f32>> {
    let segs = detect_speech(samples, sample_rate, cfg)?;
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return Ok(vec![]);
    };
    let a = ((first.start * sample_rate as f64).round() as usize).min(samples.len());
    let b = ((last.end * sample_rate as f64).round() as usize).clamp(a, samples.len());
    Ok(samples[a..b].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::Generator;

    /// Harmonic bursts (150 Hz fundamental, formant-like emphasis near 500/1500 Hz) at known
    /// times in white noise at `snr_db` (burst power over noise power).
    fn bursts(snr_db: f64, seed: u64) -> (Vec<f32>, Vec<(f64, f64)>) {
        let sr = 16000.0;
        let truth = vec![(0.30, 0.75), (1.10, 1.40), (1.85, 2.50)];
        let n = (3.0 * sr) as usize;
        let mut x = vec![0f32; n];
        for &(a, b) in &truth {
            for (i, v) in x.iter_mut().enumerate().take((b * sr) as usize).skip((a * sr) as usize) {
                let t = i as f64 / sr;
                let mut s = 0.0;
                for h in 1..20 {
                    let f = 150.0 * h as f64;
                    let w = 1.0 / (1.0 + ((f - 500.0) / 200.0).powi(2)) + 0.5 / (1.0 + ((f - 1500.0) / 300.0).powi(2));
                    s += w * (2.0 * std::f64::consts::PI * f * t).sin();
                }
                *v = s as f32;
            }
        }
        let ps: f64 =
            x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / truth.iter().map(|(a, b)| (b - a) * sr).sum::<f64>();
        let sigma = (ps / 10f64.powf(snr_db / 10.0)).sqrt();
        let mut g = Generator::new(seed);
        for v in x.iter_mut() {
            *v += (sigma * g.next_normal()) as f32;
        }
        (x, truth)
    }

    #[test]
    fn boundaries_within_20ms_at_several_snrs() {
        for snr in [20.0, 10.0, 5.0] {
            let mut worst = 0.0f64;
            for seed in 0..3 {
                let (x, truth) = bursts(snr, seed);
                let segs = detect_speech(&x, 16000, &VadConfig::default()).unwrap();
                assert_eq!(segs.len(), truth.len(), "snr {snr} seed {seed}: {segs:?}");
                for (s, t) in segs.iter().zip(&truth) {
                    assert!((s.start - t.0).abs() <= 0.020, "snr {snr}: start {} vs {}", s.start, t.0);
                    assert!((s.end - t.1).abs() <= 0.020, "snr {snr}: end {} vs {}", s.end, t.1);
                    worst = worst.max((s.start - t.0).abs()).max((s.end - t.1).abs());
                }
            }
            eprintln!("VAD at {snr} dB SNR: worst boundary error {:.1} ms", worst * 1000.0);
        }
    }

    #[test]
    fn noise_only_has_no_speech_and_trim_cuts_edges() {
        let mut g = Generator::new(1);
        let noise: Vec<f32> = (0..16000).map(|_| 0.01 * g.next_normal() as f32).collect();
        assert!(detect_speech(&noise, 16000, &VadConfig::default()).unwrap().is_empty());
        assert!(trim(&noise, 16000, &VadConfig::default()).unwrap().is_empty());
        let (x, truth) = bursts(20.0, 4);
        let t = trim(&x, 16000, &VadConfig::default()).unwrap();
        let expect = (truth[2].1 - truth[0].0) * 16000.0;
        assert!((t.len() as f64 - expect).abs() <= 2.0 * 0.020 * 16000.0, "{} vs {expect}", t.len());
    }

    #[test]
    fn min_silence_merges_hangover_extends_min_speech_drops() {
        let (x, truth) = bursts(20.0, 2);
        // Gaps are 0.35 s and 0.45 s: a 0.4 s minimum silence merges the first two bursts.
        let cfg = VadConfig { min_silence: 0.4, ..Default::default() };
        let segs = detect_speech(&x, 16000, &cfg).unwrap();
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert!((segs[0].end - truth[1].1).abs() <= 0.02);
        let base = detect_speech(&x, 16000, &VadConfig::default()).unwrap();
        let hang = detect_speech(&x, 16000, &VadConfig { hangover: 0.05, ..Default::default() }).unwrap();
        for (b, h) in base.iter().zip(&hang) {
            assert!((h.end - b.end - 0.05).abs() < 1e-9 && h.start == b.start);
        }
        // The middle burst lasts 0.3 s: a 0.35 s minimum drops it.
        let long = detect_speech(&x, 16000, &VadConfig { min_speech: 0.35, ..Default::default() }).unwrap();
        assert_eq!(long.len(), 2);
        assert!(detect_speech(&x, 0, &VadConfig::default()).is_err());
        assert!(detect_speech(&x, 16000, &VadConfig { hop: 0.0, ..Default::default() }).is_err());
        assert!(detect_speech(&[], 16000, &VadConfig::default()).unwrap().is_empty());
    }
}
