//! Speech-feature parity with torchaudio 2.11: every case in
//! `tests/golden/features.safetensors` (made by `tools/golden/features.py`) is recomputed with
//! `stapes::speech::features` from the same f32 signal and compared with torchaudio's output.
//!
//! Error measure, per element: `|a - b| / max(|b|, FLOOR * max_j |b_j|)`, with `a` stapes'
//! value, `b` torchaudio's and the maximum over the whole expected tensor; FLOOR = 1e-2. So an
//! element passes when its relative error is at most `MAX_REL` (1e-4) or, for elements below
//! 1% of the tensor's largest, when its absolute error is at most 1e-6 of that largest value.
//! The floor keeps elements that are tiny next to the largest (spectrogram bins 60 dB down,
//! MFCCs near zero that are differences of large dB values) from measuring f32 round-off alone:
//! torchaudio's own f32 MFCC differs from its f64 MFCC by 2.3e-4 with a floor of 1e-3, but
//! 2.7e-5 with 1e-2. The test also prints each case's error with a floor of 1e-3, for
//! information.
//!
//! MFCC cases also carry torchaudio's float64 result (`<case>.out_f64`). An MFCC is a sum of
//! decibels of mel bands, and the weak bands' f32 FFT round-off (torchaudio's, relative 1e-4
//! and more in bands 80 dB down) shows in it: there the test requires stapes to be within
//! `MAX_REL` of the float64 result, and within `MAX_REL` of torchaudio's f32 result or no
//! further from it than torchaudio's f32 result is from its float64 one (whichever is larger).
//! stapes computes the FFT in f64, so it is the closer of the two to the float64 result.
//!
//! Every case must stay at or below `MAX_REL`; the test prints each case's worst element and
//! fails listing every case above it, and fails on a case it does not know or a parameter it
//! did not read.

mod common;

use common::{load_golden, Params};
use stapes::speech::features::{
    create_dct, melscale_fbanks, AmplitudeToDB, Cmvn, ComputeDeltas, DctNorm, MelNorm, MelScaleKind, MelSpectrogram,
    MelSpectrogramConfig, Mfcc, MfccConfig, PadMode, SType, SpecNorm, Spectrogram, SpectrogramConfig, Window,
};
use stapes::tensor::{Device, Tensor};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/features.safetensors");
/// The floor of the denominator, relative to the expected tensor's largest magnitude.
const FLOOR: f64 = 1e-2;
/// A stricter floor, whose errors are printed for information.
const FLOOR_STRICT: f64 = 1e-3;
/// Largest error allowed (f32).
const MAX_REL: f64 = 1e-4;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Worst error of `actual` against `expected` under the measure above: (error, flat index,
/// actual value, expected value).
fn worst_rel(actual: &Tensor, expected: &Tensor, floor: f64) -> Res<(f64, usize, f64, f64)> {
    if actual.dims() != expected.dims() {
        return Err(format!("shape {:?}, expected {:?}", actual.dims(), expected.dims()).into());
    }
    let a = actual.to_vec::<f32>()?;
    let b = expected.to_vec::<f32>()?;
    let max = b.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    let floor = (floor * max).max(f64::MIN_POSITIVE);
    let mut worst = (0.0, 0, 0.0, 0.0);
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        let (x, y) = (f64::from(x), f64::from(y));
        let e = if x.is_finite() { (x - y).abs() / y.abs().max(floor) } else { f64::INFINITY };
        if e > worst.0 || e.is_nan() {
            worst = (if e.is_nan() { f64::INFINITY } else { e }, i, x, y);
        }
    }
    Ok(worst)
}

fn cpu(data: Vec<f32>, shape: Vec<usize>) -> Res<Tensor> {
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// The input of a case: a prefix of the signal (mono), two slices of it (batch), or another
/// case's expected output.
fn input(
    p: &Params,
    signal: &[f32],
    outs: &std::collections::BTreeMap<String, Tensor>,
    batch_offset: usize,
) -> Res<Tensor> {
    if p.has("input_case") {
        let name = p.str("input_case")?;
        let t = outs.get(&format!("{name}.out")).ok_or_else(|| format!("no case {name}"))?.clone();
        return Ok(if p.has("reshape") { t.reshape(p.usizes("reshape")?)? } else { t });
    }
    let n = p.usize("n_samples")?;
    match p.str("input")? {
        "mono" => cpu(signal[..n].to_vec(), vec![n]),
        "batch" => {
            let mut v = signal[..n].to_vec();
            v.extend_from_slice(&signal[batch_offset..batch_offset + n]);
            cpu(v, vec![2, n])
        }
        other => Err(format!("unknown input {other:?}").into()),
    }
}

fn opt_usize(p: &Params, key: &str) -> Res<Option<usize>> {
    Ok(if p.has(key) { Some(p.usize(key)?) } else { None })
}

fn opt_f64(p: &Params, key: &str) -> Res<Option<f64>> {
    Ok(match p.get(key) {
        None | Some(common::Json::Null) => None,
        Some(_) => Some(p.f64(key)?),
    })
}

fn pad_mode(s: &str) -> Res<PadMode> {
    Ok(match s {
        "reflect" => PadMode::Reflect,
        "constant" => PadMode::Constant,
        "replicate" => PadMode::Replicate,
        "circular" => PadMode::Circular,
        _ => return Err(format!("unknown pad mode {s:?}").into()),
    })
}

fn mel_norm(p: &Params, key: &str) -> Res<MelNorm> {
    Ok(match p.get(key) {
        None | Some(common::Json::Null) => MelNorm::None,
        Some(_) if p.str(key)? == "slaney" => MelNorm::Slaney,
        Some(v) => return Err(format!("unknown norm {v:?}").into()),
    })
}

fn mel_scale(p: &Params, key: &str) -> Res<MelScaleKind> {
    Ok(match if p.has(key) { p.str(key)? } else { "htk" } {
        "htk" => MelScaleKind::Htk,
        "slaney" => MelScaleKind::Slaney,
        s => return Err(format!("unknown mel scale {s:?}").into()),
    })
}

/// The STFT parameters of a case, keys prefixed with `prefix` (MFCC's melkwargs use `mel_`).
fn spectrogram_config(p: &Params, prefix: &str) -> Res<SpectrogramConfig> {
    let k = |name: &str| format!("{prefix}{name}");
    let d = SpectrogramConfig::default();
    Ok(SpectrogramConfig {
        n_fft: opt_usize(p, &k("n_fft"))?.unwrap_or(d.n_fft),
        win_length: opt_usize(p, &k("win_length"))?,
        hop_length: opt_usize(p, &k("hop_length"))?,
        pad: opt_usize(p, &k("pad"))?.unwrap_or(0),
        window: match if p.has(&k("window")) { p.str(&k("window"))? } else { "hann" } {
            "hann" => Window::Hann,
            "hamming" => Window::Hamming,
            s => return Err(format!("unknown window {s:?}").into()),
        },
        power: match p.get(&k("power")) {
            None => Some(2.0),
            Some(common::Json::Null) => None,
            Some(_) => Some(p.f64(&k("power"))? as f32),
        },
        normalized: match p.get(&k("normalized")) {
            None | Some(common::Json::Bool(false)) => SpecNorm::None,
            Some(common::Json::Bool(true)) => SpecNorm::Window,
            Some(common::Json::Str(s)) if s == "window" => SpecNorm::Window,
            Some(common::Json::Str(s)) if s == "frame_length" => SpecNorm::FrameLength,
            Some(v) => return Err(format!("bad normalized {v:?}").into()),
        },
        center: if p.has(&k("center")) { p.bool(&k("center"))? } else { true },
        pad_mode: pad_mode(if p.has(&k("pad_mode")) { p.str(&k("pad_mode"))? } else { "reflect" })?,
        onesided: if p.has(&k("onesided")) { p.bool(&k("onesided"))? } else { true },
    })
}

fn mel_config(p: &Params, prefix: &str) -> Res<MelSpectrogramConfig> {
    let k = |name: &str| format!("{prefix}{name}");
    Ok(MelSpectrogramConfig {
        sample_rate: opt_usize(p, &k("sample_rate"))?.unwrap_or(16000) as u32,
        spectrogram: spectrogram_config(p, prefix)?,
        f_min: opt_f64(p, &k("f_min"))?.unwrap_or(0.0),
        f_max: opt_f64(p, &k("f_max"))?,
        n_mels: opt_usize(p, &k("n_mels"))?.unwrap_or(128),
        norm: mel_norm(p, &k("norm"))?,
        mel_scale: mel_scale(p, &k("mel_scale"))?,
    })
}

/// Recomputes one case with stapes.
fn run_case(
    p: &Params,
    signal: &[f32],
    outs: &std::collections::BTreeMap<String, Tensor>,
    batch_offset: usize,
) -> Res<Tensor> {
    let x = || input(p, signal, outs, batch_offset);
    Ok(match p.str("op")? {
        "spectrogram" => Spectrogram::new(spectrogram_config(p, "")?)?.forward(&x()?)?,
        "mel_spectrogram" => MelSpectrogram::new(mel_config(p, "")?)?.forward(&x()?)?,
        "melscale_fbanks" => {
            let (n_freqs, n_mels) = (p.usize("n_freqs")?, p.usize("n_mels")?);
            let fb = melscale_fbanks(
                n_freqs,
                p.f64("f_min")?,
                p.f64("f_max")?,
                n_mels,
                p.usize("sample_rate")? as u32,
                mel_norm(p, "norm")?,
                mel_scale(p, "mel_scale")?,
            )?;
            cpu(fb, vec![n_freqs, n_mels])?
        }
        "amplitude_to_db" => {
            let stype = match p.str("stype")? {
                "power" => SType::Power,
                "magnitude" => SType::Magnitude,
                s => return Err(format!("unknown stype {s:?}").into()),
            };
            AmplitudeToDB::new(stype, opt_f64(p, "top_db")?.map(|v| v as f32))?.forward(&x()?)?
        }
        "mfcc" => {
            let cfg = MfccConfig {
                sample_rate: p.usize("sample_rate")? as u32,
                n_mfcc: p.usize("n_mfcc")?,
                norm: DctNorm::Ortho,
                log_mels: p.bool("log_mels")?,
                melkwargs: mel_config(p, "mel_")?,
            };
            Mfcc::new(cfg)?.forward(&x()?)?
        }
        "create_dct" => {
            let (n_mfcc, n_mels) = (p.usize("n_mfcc")?, p.usize("n_mels")?);
            let norm = match p.get("norm") {
                Some(common::Json::Null) => DctNorm::None,
                _ if p.str("norm")? == "ortho" => DctNorm::Ortho,
                v => return Err(format!("bad dct norm {v:?}").into()),
            };
            cpu(create_dct(n_mfcc, n_mels, norm)?, vec![n_mels, n_mfcc])?
        }
        "compute_deltas" => {
            let mode = pad_mode(if p.has("mode") { p.str("mode")? } else { "replicate" })?;
            ComputeDeltas { win_length: p.usize("win_length")?, mode }.forward(&x()?)?
        }
        "cmvn" => Cmvn { norm_vars: p.bool("norm_vars")?, ..Cmvn::default() }.forward(&x()?)?,
        op => return Err(format!("unknown op {op:?}").into()),
    })
}

#[test]
fn features_match_torchaudio() {
    let golden = load_golden(GOLDEN);
    let signal = golden.tensors.get("signal").expect("signal").to_vec::<f32>().unwrap();
    let generator = Params::parse(&golden.metadata["_generator"]).unwrap();
    let batch_offset = generator.usize("batch_offset").unwrap();
    let mut failures = Vec::new();
    let mut overall = (0.0f64, String::new());
    let mut cases = 0;
    for (name, json) in golden.metadata.iter().filter(|(k, _)| !k.starts_with('_')) {
        cases += 1;
        let p = Params::parse(json).unwrap();
        let expected = &golden.tensors[&format!("{name}.out")];
        let f64_ref = golden.tensors.get(&format!("{name}.out_f64"));
        let result = run_case(&p, &signal, &golden.tensors, batch_offset).and_then(|actual| {
            let exact = match f64_ref {
                Some(r) => Some((worst_rel(&actual, r, FLOOR)?.0, worst_rel(expected, r, FLOOR)?.0)),
                None => None,
            };
            Ok((worst_rel(&actual, expected, FLOOR)?, worst_rel(&actual, expected, FLOOR_STRICT)?.0, exact))
        });
        match result {
            Ok(((err, i, a, b), strict, exact)) => {
                let shape = format!("{:?}", expected.dims());
                println!(
                    "{name:<32} {shape:<15} worst rel err {err:.2e} at {i} (stapes {a:.6e}, torchaudio {b:.6e}); \
                     with floor 1e-3: {strict:.2e}"
                );
                let mut bound = MAX_REL;
                if let Some((stapes_f64, torch_f64)) = exact {
                    println!(
                        "{:<48} vs torchaudio float64: stapes {stapes_f64:.2e}, torchaudio f32 {torch_f64:.2e}",
                        ""
                    );
                    bound = bound.max(torch_f64);
                    if stapes_f64 > MAX_REL {
                        failures.push(format!("{name}: rel err {stapes_f64:.3e} > {MAX_REL:e} against float64"));
                    }
                }
                if err > overall.0 {
                    overall = (err, name.clone());
                }
                if err > bound {
                    failures.push(format!(
                        "{name}: rel err {err:.3e} > {bound:e} at flat index {i}: stapes {a}, torchaudio {b}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        let unused = p.unused();
        if !unused.is_empty() {
            failures.push(format!("{name}: parameters not read: {unused:?}"));
        }
    }
    println!("{cases} cases; worst relative error {:.3e} ({})", overall.0, overall.1);
    assert!(cases >= 30, "only {cases} cases in {GOLDEN}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
