//! Augmentation for short inputs and new speakers (issue 16): SpecAugment masks never exceed
//! their cap (`mask_p` of the axis, torchaudio's `p`), VTLP's frequency warp is a monotone map of
//! the band onto itself that moves the mel filters, and bad augmentation settings are errors
//! naming the field.

use proptest::prelude::*;
use stapes::speech::augment::SpecAugment;
use stapes::speech::config::RunConfig;
use stapes::speech::features::{melscale_fbanks, vtlp_fbanks, vtlp_warp, MelNorm, MelScaleKind};
use stapes::tensor::random::Generator;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_mask_exceeds_its_cap(
        frames in 1usize..120,
        freqs in 1usize..48,
        time_param in 0usize..60,
        freq_param in 0usize..30,
        masks in 0usize..4,
        p in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        let s = SpecAugment { p, zero_masking: true, ..SpecAugment::new(masks, time_param, masks, freq_param) };
        let mut data = vec![1.0f32; freqs * frames];
        let mut g = Generator::new(seed);
        let applied = s.apply_slice(&mut data, freqs, frames, &mut g).unwrap();
        let cap = |len: usize, param: usize| param.min((len as f64 * p) as usize);
        for spans in &applied.time {
            for span in spans {
                prop_assert!(span.width() <= cap(frames, time_param), "time mask {} > cap {}", span.width(), cap(frames, time_param));
                prop_assert!(span.end <= frames);
            }
        }
        for spans in &applied.freq {
            for span in spans {
                prop_assert!(span.width() <= cap(freqs, freq_param));
                prop_assert!(span.end <= freqs);
            }
        }
        // the masked values are exactly the spans' (zero masking)
        let zeros = data.iter().filter(|&&v| v == 0.0).count();
        prop_assert!(zeros <= masks * (cap(frames, time_param) * freqs + cap(freqs, freq_param) * frames));
    }

    #[test]
    fn the_vtlp_warp_maps_the_band_onto_itself(alpha in 0.8f64..1.25, a in 0.0f64..8000.0, b in 0.0f64..8000.0) {
        let (f_hi, ny) = (4800.0, 8000.0);
        prop_assert!(vtlp_warp(0.0, alpha, f_hi, ny).abs() < 1e-9);
        prop_assert!((vtlp_warp(ny, alpha, f_hi, ny) - ny).abs() < 1e-6);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        prop_assert!(vtlp_warp(lo, alpha, f_hi, ny) <= vtlp_warp(hi, alpha, f_hi, ny) + 1e-9);
    }
}

#[test]
fn vtlp_moves_the_mel_filters_and_leaves_them_at_one() {
    let plain = melscale_fbanks(201, 0.0, 8000.0, 40, 16000, MelNorm::None, MelScaleKind::Htk).unwrap();
    let same = vtlp_fbanks(201, 0.0, 8000.0, 40, 16000, MelNorm::None, MelScaleKind::Htk, 1.0).unwrap();
    assert_eq!(plain, same);
    // the peak bin of filter m: a factor above 1 stretches the spectrum, so each filter listens
    // lower down; below 1, higher up
    let peak = |fb: &[f32], m: usize| (0..201).max_by(|&a, &b| fb[a * 40 + m].total_cmp(&fb[b * 40 + m])).unwrap();
    let up = vtlp_fbanks(201, 0.0, 8000.0, 40, 16000, MelNorm::None, MelScaleKind::Htk, 1.1).unwrap();
    let down = vtlp_fbanks(201, 0.0, 8000.0, 40, 16000, MelNorm::None, MelScaleKind::Htk, 0.9).unwrap();
    for m in [10, 20, 30] {
        assert!(peak(&up, m) < peak(&plain, m), "filter {m}: {} vs {}", peak(&up, m), peak(&plain, m));
        assert!(peak(&down, m) > peak(&plain, m), "filter {m}");
    }
    assert!(vtlp_fbanks(201, 0.0, 8000.0, 40, 16000, MelNorm::None, MelScaleKind::Htk, 3.0).is_err());
}

#[test]
fn bad_augmentation_settings_name_the_field() {
    for (toml, field) in [
        ("[augment]\nmask_p = 1.5\n", "mask_p"),
        ("[augment]\nvtlp = [1.1, 0.9]\n", "vtlp"),
        ("[augment]\nvtlp = [0.9]\n", "vtlp"),
        ("[augment]\nnoise_snr_db = [10.0]\n", "noise_snr_db"),
        ("[augment]\nnoise_prob = -0.1\n", "noise_prob"),
    ] {
        let e = RunConfig::from_toml_str(toml).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains(field), "{toml}: {e}");
    }
    let ok =
        RunConfig::from_toml_str("[augment]\nmask_p = 0.2\nvtlp = [0.9, 1.1]\nnoise_snr_db = [5.0, 20.0]\n").unwrap();
    ok.validate().unwrap();
}

#[test]
fn a_band_limited_front_end_ignores_what_lies_above_f_max() {
    use stapes::speech::train::Frontend;
    // no band of a 4 kHz bank reaches above 4 kHz, where 8 kHz recordings resampled to 16 kHz
    // hold only resampler noise
    let fb = melscale_fbanks(201, 0.0, 4000.0, 40, 16000, MelNorm::None, MelScaleKind::Htk).unwrap();
    for k in 101..201 {
        assert!((0..40).all(|m| fb[k * 40 + m] == 0.0), "bin {k} ({} Hz) is in a band", k * 40);
    }
    // the front end: same frames, other features, with f_max and with pre-emphasis
    let x: Vec<f32> = (0..8000).map(|i| 0.3 * (i as f32 * 0.37).sin() + 0.2 * (i as f32 * 2.1).sin()).collect();
    let full = Frontend::LogMel { n_mels: 40, f_max: None, preemphasis: 0.0, trim_silence: false, global_cmvn: None }
        .prepare(&x)
        .unwrap();
    let low =
        Frontend::LogMel { n_mels: 40, f_max: Some(4000.0), preemphasis: 0.0, trim_silence: false, global_cmvn: None }
            .prepare(&x)
            .unwrap();
    let pre = Frontend::LogMel { n_mels: 40, f_max: None, preemphasis: 0.97, trim_silence: false, global_cmvn: None }
        .prepare(&x)
        .unwrap();
    assert_eq!((full.1, full.0.len()), (low.1, low.0.len()));
    assert_ne!(full.0, low.0);
    assert_ne!(full.0, pre.0);
    // trimming: a burst in 1 s of quiet noise on each side gives the frames of the burst and
    // 0.1 s of margin on each side; silence alone is kept whole
    let mut g = stapes::tensor::Generator::new(3);
    let burst: Vec<f32> = (0..8000).map(|i| 0.3 * (i as f32 * 0.2).sin() * (i as f32 * 0.01).sin().abs()).collect();
    let quiet =
        |g: &mut stapes::tensor::Generator| -> Vec<f32> { (0..16000).map(|_| 1e-4 * g.next_normal() as f32).collect() };
    let padded: Vec<f32> = quiet(&mut g).into_iter().chain(burst.iter().copied()).chain(quiet(&mut g)).collect();
    let trim = Frontend::LogMel { n_mels: 40, f_max: None, preemphasis: 0.0, trim_silence: true, global_cmvn: None };
    let untrimmed =
        Frontend::LogMel { n_mels: 40, f_max: None, preemphasis: 0.0, trim_silence: false, global_cmvn: None };
    let (_, frames) = trim.prepare(&padded).unwrap();
    let (_, all) = untrimmed.prepare(&padded).unwrap();
    assert_eq!(all, 1 + padded.len() / 160);
    assert!((65..=75).contains(&frames), "{frames} frames after trimming (the burst is 50, margins 20)");
    let silence = quiet(&mut g);
    assert_eq!(trim.prepare(&silence).unwrap().1, untrimmed.prepare(&silence).unwrap().1);
    let c = RunConfig::from_toml_str("[features]\ntrim_silence = true\n").unwrap();
    assert!(matches!(c.frontend(), Frontend::LogMel { trim_silence: true, .. }));
    let e = RunConfig::from_toml_str("[features]\nf_max = 9000.0\n").unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("f_max"), "{e}");
    let e = RunConfig::from_toml_str("[features]\npreemphasis = 1.2\n").unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("preemphasis"), "{e}");
}

/// Global CMVN: the statistics of a data set make its features zero-mean and unit-variance per
/// band over the whole set (not per utterance: one utterance's own mean stays where it is);
/// `cmvn = "global"` without statistics is per-utterance until the trainer fills them; bad
/// statistics are a clear error.
#[test]
fn global_cmvn_normalises_over_the_training_set() {
    use stapes::speech::config::{CmvnKind, GlobalCmvn};
    use stapes::speech::synth::{SynthConfig, SyntheticDigits};
    use stapes::speech::train::global_cmvn_stats;
    let data = SyntheticDigits::new(SynthConfig { seed: 5, num_utterances: 12, ..SynthConfig::default() }).unwrap();
    let mut cfg = RunConfig::default();
    cfg.features.n_mels = 20;
    let stats = global_cmvn_stats(&cfg.frontend(), &data).unwrap();
    assert_eq!((stats.mean.len(), stats.std.len()), (20, 20));
    cfg.features.cmvn = CmvnKind::Global;
    assert!(matches!(cfg.frontend(), stapes::speech::train::Frontend::LogMel { global_cmvn: None, .. }));
    cfg.features.global_cmvn = Some(stats.clone());
    cfg.validate().unwrap();
    let front = cfg.frontend();
    let (mut sum, mut sq, mut n) = (vec![0f64; 20], vec![0f64; 20], 0usize);
    let mut first_mean = 0f64;
    for i in 0..12 {
        let u = stapes::speech::data::Dataset::get(&data, i).unwrap();
        let (x, frames) = front.prepare(&u.audio).unwrap();
        for t in 0..frames {
            for b in 0..20 {
                let v = f64::from(x[t * 20 + b]);
                sum[b] += v;
                sq[b] += v * v;
            }
        }
        if i == 0 {
            first_mean = (0..frames).map(|t| f64::from(x[t * 20 + 3])).sum::<f64>() / frames as f64;
        }
        n += frames;
    }
    for b in 0..20 {
        let m = sum[b] / n as f64;
        let sd = (sq[b] / n as f64 - m * m).sqrt();
        assert!(m.abs() < 1e-3 && (sd - 1.0).abs() < 1e-3, "band {b}: mean {m}, std {sd}");
    }
    assert!(first_mean.abs() > 1e-3, "one utterance is not normalised on its own");
    cfg.features.global_cmvn = Some(GlobalCmvn { mean: vec![0.0; 19], std: vec![1.0; 19] });
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("global_cmvn has 19 means"), "{e}");
    cfg.features.global_cmvn = Some(GlobalCmvn { mean: vec![0.0; 20], std: vec![0.0; 20] });
    assert!(cfg.validate().unwrap_err().to_string().contains("deviation"));
}
