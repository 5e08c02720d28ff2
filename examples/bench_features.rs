//! Speech-feature timings for the side-by-side comparison with torchaudio
//! (`benches/torch/features.py --stapes <this binary>` runs both, interleaved, and prints the
//! table recorded in `benches/RESULTS.md`).
//!
//! Workloads (10 s of 16 kHz noise, f32): the reference `MelSpectrogram` (n_fft 400,
//! win_length 320, hop_length 160, n_mels 80, power 2, centred, reflect padding), the same on a
//! batch of 8 one-second signals, the power `Spectrogram` and `MFCC` (40 coefficients, dB).
//! Timing as in `examples/bench_table.rs`: warm up (at least 3 calls and 0.2 s), then time
//! single calls until at least 20 calls and `STAPES_BENCH_SECONDS` (default 1 s), and report
//! the median. One JSON line per workload on stdout:
//! `{"name": ..., "median_s": ..., "min_s": ..., "reps": ...}`.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_features [name-filter...]`

use stapes::speech::features::{
    MelSpectrogram, MelSpectrogramConfig, Mfcc, MfccConfig, Spectrogram, SpectrogramConfig,
};
use stapes::tensor::{DType, Device, Generator, Tensor};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn time(seconds: f64, run: &mut dyn FnMut()) -> (f64, f64, usize) {
    let start = Instant::now();
    let mut calls = 0;
    while calls < 3 || start.elapsed() < Duration::from_millis(200) {
        run();
        calls += 1;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 20 || (start.elapsed().as_secs_f64() < seconds && samples.len() < 2000) {
        let t = Instant::now();
        run();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 { samples[n / 2] } else { 0.5 * (samples[n / 2 - 1] + samples[n / 2]) };
    (median, samples[0], n)
}

fn reference() -> MelSpectrogramConfig {
    MelSpectrogramConfig {
        sample_rate: 16000,
        spectrogram: SpectrogramConfig {
            n_fft: 400,
            win_length: Some(320),
            hop_length: Some(160),
            ..Default::default()
        },
        n_mels: 80,
        ..Default::default()
    }
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = std::env::var("STAPES_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let randn = |shape: &[usize]| {
        Tensor::randn_with(&mut Generator::new(0), 0.0, 0.1, shape, DType::F32, &Device::Cpu).expect("randn")
    };
    let ten_s = randn(&[160_000]);
    let batch = randn(&[8, 16_000]);
    let mel = MelSpectrogram::new(reference()).expect("MelSpectrogram");
    let spec = Spectrogram::new(reference().spectrogram).expect("Spectrogram");
    let mfcc = Mfcc::new(MfccConfig { n_mfcc: 40, melkwargs: reference(), ..Default::default() }).expect("MFCC");
    let ten_s_vec = ten_s.to_vec::<f32>().expect("to_vec");
    type Call<'a> = Box<dyn FnMut() + 'a>;
    let workloads: Vec<(&str, Call)> = vec![
        ("mel_10s_ref", Box::new(|| drop(black_box(mel.forward(&ten_s).expect("mel"))))),
        ("mel_10s_ref_slice", Box::new(|| drop(black_box(mel.forward_slice(&ten_s_vec).expect("mel"))))),
        ("mel_batch8x1s_ref", Box::new(|| drop(black_box(mel.forward(&batch).expect("mel"))))),
        ("spectrogram_10s", Box::new(|| drop(black_box(spec.forward(&ten_s).expect("spec"))))),
        ("mfcc40_10s", Box::new(|| drop(black_box(mfcc.forward(&ten_s).expect("mfcc"))))),
    ];
    for (name, mut call) in workloads {
        if !wanted(name) {
            continue;
        }
        let (median, min, reps) = time(seconds, &mut *call);
        println!("{{\"name\": \"{name}\", \"median_s\": {median:.9}, \"min_s\": {min:.9}, \"reps\": {reps}}}");
    }
}
