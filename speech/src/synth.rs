//! A built-in synthetic corpus: spoken digit strings ("three one four") from a small formant
//! (source–filter) synthesizer, so that the speech stack can be trained and tested end to end
//! with no downloaded data.
//!
//! Each digit word is a sequence of phone-like segments with formant targets (F1–F3, from
//! Peterson & Barney's vowel averages and textbook consonant loci), a voicing amplitude and a
//! frication noise band. Per sample, the targets are interpolated within a segment (glides and
//! diphthongs) and smoothed across segments (coarticulation); a Rosenberg glottal pulse train
//! (differentiated for lip radiation) at a declining, jittered pitch, plus aspiration noise,
//! excites a cascade of three second-order resonators (Klatt's `A x + B y1 + C y2`); fricatives
//! and bursts are noise through their own resonator. Per utterance, pitch, a formant scale
//! (vocal-tract length), the speaking rate, pauses and background noise are random,
//! deterministically from the seed and the utterance index.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use stapes_tensor::{Error, Generator, Result};

use crate::audio::wav_bytes;
use crate::data::{Dataset, Utterance};

/// The sample rate of the synthetic corpus.
pub const SAMPLE_RATE: u32 = 16000;

/// The ten digit words, indexed by their value.
pub const DIGITS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// One phone-like segment of a word.
#[derive(Clone, Copy, Debug)]
struct Phone {
    /// Duration in ms at the normal speaking rate.
    ms: f64,
    /// Formants at the start and end of the segment (Hz; equal for steady segments).
    f0: [f64; 3],
    f1: [f64; 3],
    /// Voicing amplitude.
    voice: f64,
    /// Aspiration: noise through the formant cascade.
    aspiration: f64,
    /// Frication: noise through its own resonator at `fric_hz` with bandwidth `fric_bw`.
    frication: f64,
    fric_hz: f64,
    fric_bw: f64,
}

const fn vowel(ms: f64, f: [f64; 3]) -> Phone {
    Phone { ms, f0: f, f1: f, voice: 1.0, aspiration: 0.0, frication: 0.0, fric_hz: 0.0, fric_bw: 1.0 }
}
const fn glide(ms: f64, a: [f64; 3], b: [f64; 3]) -> Phone {
    Phone { ms, f0: a, f1: b, voice: 1.0, aspiration: 0.0, frication: 0.0, fric_hz: 0.0, fric_bw: 1.0 }
}
const fn approx(ms: f64, f: [f64; 3], voice: f64) -> Phone {
    Phone { ms, f0: f, f1: f, voice, aspiration: 0.0, frication: 0.0, fric_hz: 0.0, fric_bw: 1.0 }
}
const fn fric(ms: f64, hz: f64, bw: f64, amp: f64, voice: f64) -> Phone {
    const N: [f64; 3] = [400.0, 1500.0, 2500.0];
    Phone { ms, f0: N, f1: N, voice, aspiration: 0.0, frication: amp, fric_hz: hz, fric_bw: bw }
}
const fn closure(ms: f64) -> Phone {
    fric(ms, 1000.0, 500.0, 0.0, 0.0)
}
const fn burst(ms: f64, hz: f64, f: [f64; 3]) -> Phone {
    Phone { ms, f0: f, f1: f, voice: 0.0, aspiration: 0.35, frication: 0.6, fric_hz: hz, fric_bw: 1500.0 }
}

const IY: [f64; 3] = [270.0, 2290.0, 3010.0];
const IH: [f64; 3] = [390.0, 1990.0, 2550.0];
const EH: [f64; 3] = [530.0, 1840.0, 2480.0];
const AH: [f64; 3] = [640.0, 1190.0, 2390.0];
const AA: [f64; 3] = [730.0, 1090.0, 2440.0];
const AO: [f64; 3] = [570.0, 840.0, 2410.0];
const UW: [f64; 3] = [300.0, 870.0, 2240.0];
const OW: [f64; 3] = [500.0, 1000.0, 2400.0];
const OW2: [f64; 3] = [380.0, 800.0, 2350.0];
const EY2: [f64; 3] = [320.0, 2200.0, 2900.0];
const R: [f64; 3] = [420.0, 1150.0, 1600.0];
const W: [f64; 3] = [300.0, 610.0, 2200.0];
const NAS: [f64; 3] = [260.0, 1700.0, 2600.0];

/// The phones of digit `d`.
fn word(d: usize) -> Vec<Phone> {
    let z = fric(90.0, 5000.0, 1800.0, 0.35, 0.45);
    let s = fric(110.0, 5200.0, 1800.0, 0.55, 0.0);
    let f = fric(100.0, 6500.0, 3000.0, 0.22, 0.0);
    let th = fric(100.0, 6000.0, 4000.0, 0.15, 0.0);
    let v = fric(70.0, 6000.0, 3000.0, 0.12, 0.5);
    let n = approx(80.0, NAS, 0.35);
    match d {
        0 => vec![z, vowel(70.0, IH), approx(60.0, R, 0.8), glide(160.0, OW, OW2)],
        1 => vec![approx(70.0, W, 0.7), vowel(140.0, AH), n],
        2 => vec![closure(45.0), burst(55.0, 4500.0, UW), glide(190.0, UW, [280.0, 800.0, 2200.0])],
        3 => vec![th, approx(60.0, R, 0.8), vowel(170.0, IY)],
        4 => vec![f, vowel(140.0, AO), approx(110.0, R, 0.9)],
        5 => vec![f, glide(200.0, AA, EY2), v],
        6 => vec![s, vowel(90.0, IH), closure(50.0), burst(35.0, 2200.0, IH), s],
        7 => vec![s, vowel(110.0, EH), v, vowel(60.0, AH), n],
        8 => vec![glide(190.0, EH, EY2), closure(50.0), burst(45.0, 4500.0, EY2)],
        _ => vec![n, glide(190.0, AA, EY2), approx(90.0, NAS, 0.35)],
    }
}

/// Settings of the synthetic corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Seed of the whole corpus; utterance `i` depends only on `(seed, i)`.
    pub seed: u64,
    /// Number of utterances.
    pub num_utterances: usize,
    /// Fewest digits per utterance (at least 1).
    pub min_words: usize,
    /// Most digits per utterance.
    pub max_words: usize,
    /// Range of the base pitch in Hz.
    pub pitch_hz: (f64, f64),
    /// Range of the formant scale (vocal-tract length: ~0.88 long, ~1.2 short).
    pub formant_scale: (f64, f64),
    /// Range of the speaking rate (1 = the phone durations above; 1.25 = 25% faster).
    pub rate: (f64, f64),
    /// Range of the background white-noise SNR in dB.
    pub snr_db: (f64, f64),
    /// Range of the leading and trailing silence in seconds.
    pub edge_silence: (f64, f64),
    /// Range of the pause between words in seconds.
    pub pause: (f64, f64),
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            num_utterances: 1000,
            min_words: 1,
            max_words: 5,
            pitch_hz: (90.0, 240.0),
            formant_scale: (0.88, 1.18),
            rate: (0.8, 1.25),
            snr_db: (15.0, 40.0),
            edge_silence: (0.1, 0.3),
            pause: (0.04, 0.15),
        }
    }
}

/// One utterance's drawn parameters, before rendering.
struct Plan {
    digits: Vec<usize>,
    /// (phone, duration in samples); `None` is silence.
    segments: Vec<(Option<Phone>, usize)>,
    pitch: f64,
    scale: f64,
    snr_db: f64,
    level: f64,
}

/// The synthetic digit corpus: a lazily generated, in-memory [`Dataset`]; any index is
/// reproducible on its own.
#[derive(Clone, Debug)]
pub struct SyntheticDigits {
    cfg: SynthConfig,
}

fn uniform(g: &mut Generator, r: (f64, f64)) -> f64 {
    r.0 + (r.1 - r.0) * g.next_f64()
}

/// A generator for utterance `i` of corpus `seed` (SplitMix-style mixing, so neighbouring
/// indices give unrelated streams).
fn utterance_generator(seed: u64, i: usize) -> Generator {
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    Generator::new(z ^ (z >> 33))
}

/// Two-pole resonator in Klatt's form (`y = A x + B y1 + C y2`); coefficients are set by
/// [`Resonator::tune`] (every few samples: formants move slowly).
#[derive(Default, Clone, Copy)]
struct Resonator {
    a: f64,
    b: f64,
    c: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn tune(&mut self, f: f64, bw: f64, sr: f64) {
        self.c = -(-2.0 * PI * bw / sr).exp();
        self.b = 2.0 * (-PI * bw / sr).exp() * (2.0 * PI * f / sr).cos();
        self.a = 1.0 - self.b - self.c;
    }

    fn step(&mut self, x: f64) -> f64 {
        let y = self.a * x + self.b * self.y1 + self.c * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Resonator coefficients are recomputed every this many samples (0.5 ms at 16 kHz).
const RETUNE: usize = 8;

impl SyntheticDigits {
    /// A corpus with the given settings. Invalid ranges are an error.
    pub fn new(cfg: SynthConfig) -> Result<Self> {
        const OP: &str = "SyntheticDigits::new";
        if cfg.min_words == 0 || cfg.min_words > cfg.max_words {
            return Err(Error::invalid(
                OP,
                format!("need 1 <= min_words <= max_words, got {:?}", (cfg.min_words, cfg.max_words)),
            ));
        }
        let ranges = [cfg.pitch_hz, cfg.formant_scale, cfg.rate, cfg.snr_db, cfg.edge_silence, cfg.pause];
        if ranges.iter().any(|r| !(r.0.is_finite() && r.1.is_finite() && r.0 <= r.1)) {
            return Err(Error::invalid(OP, "every range must be finite with lo <= hi"));
        }
        // Ranges are finite here, so plain comparisons are total.
        let in_range = cfg.pitch_hz.0 >= 40.0
            && cfg.pitch_hz.1 <= 500.0
            && cfg.formant_scale.0 > 0.5
            && cfg.formant_scale.1 < 1.5
            && cfg.rate.0 > 0.3
            && cfg.rate.1 < 3.0
            && cfg.edge_silence.0 >= 0.0
            && cfg.pause.0 >= 0.0;
        if !in_range {
            return Err(Error::invalid(
                OP,
                "pitch (40–500 Hz), formant scale (0.5–1.5), rate (0.3–3) or a negative silence out of range",
            ));
        }
        Ok(SyntheticDigits { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    fn plan(&self, index: usize) -> Plan {
        let c = &self.cfg;
        let mut g = utterance_generator(c.seed, index);
        let n_words = c.min_words + (g.next_u64() % (c.max_words - c.min_words + 1) as u64) as usize;
        let digits: Vec<usize> = (0..n_words).map(|_| (g.next_u64() % 10) as usize).collect();
        let pitch = uniform(&mut g, c.pitch_hz);
        let scale = uniform(&mut g, c.formant_scale);
        let rate = uniform(&mut g, c.rate);
        let snr_db = uniform(&mut g, c.snr_db);
        let level = uniform(&mut g, (0.05, 0.15));
        let sr = SAMPLE_RATE as f64;
        let secs = |s: f64| (s * sr).round() as usize;
        let mut segments = vec![(None, secs(uniform(&mut g, c.edge_silence)))];
        for (k, &d) in digits.iter().enumerate() {
            if k > 0 {
                segments.push((None, secs(uniform(&mut g, c.pause))));
            }
            for p in word(d) {
                // Each phone's duration varies by +-15% around the rate-scaled value.
                let jitter = 0.85 + 0.3 * g.next_f64();
                segments.push((Some(p), secs(p.ms / 1000.0 / rate * jitter).max(1)));
            }
        }
        segments.push((None, secs(uniform(&mut g, c.edge_silence))));
        Plan { digits, segments, pitch, scale, snr_db, level }
    }

    /// Duration of utterance `index` in seconds (known without rendering it).
    pub fn duration_of(&self, index: usize) -> f64 {
        self.plan(index).segments.iter().map(|s| s.1).sum::<usize>() as f64 / SAMPLE_RATE as f64
    }

    fn render(&self, index: usize, plan: &Plan) -> Vec<f32> {
        let sr = SAMPLE_RATE as f64;
        let mut g = utterance_generator(self.cfg.seed ^ 0xA5A5_5A5A_1234_8765, index);
        let total: usize = plan.segments.iter().map(|s| s.1).sum();
        let mut out = Vec::with_capacity(total);
        // Smoothed parameters (one-pole smoothing: formants ~12 ms, amplitudes ~4 ms).
        let kf = 1.0 - (-1.0 / (0.012 * sr)).exp();
        let ka = 1.0 - (-1.0 / (0.004 * sr)).exp();
        let first = plan.segments.iter().find_map(|s| s.0).map(|p| p.f0).unwrap_or([500.0, 1500.0, 2500.0]);
        let mut form = first.map(|f| f * plan.scale);
        let (mut voice, mut asp, mut fr, mut fr_hz, mut fr_bw) = (0.0, 0.0, 0.0, 4000.0, 1000.0);
        let mut res = [Resonator::default(); 3];
        let mut fres = Resonator::default();
        let mut phase = 0.0f64;
        let mut glottal_prev = 0.0f64;
        let mut period_f0 = plan.pitch;
        let bws = [70.0, 100.0, 160.0];
        let mut t = 0usize;
        for &(phone, len) in &plan.segments {
            for k in 0..len {
                let (target, tv, ta, tf, thz, tbw) = match phone {
                    Some(p) => {
                        let u = k as f64 / len as f64;
                        let f = [0, 1, 2].map(|j| (p.f0[j] + (p.f1[j] - p.f0[j]) * u) * plan.scale);
                        (f, p.voice, p.aspiration, p.frication, p.fric_hz * plan.scale.sqrt(), p.fric_bw)
                    }
                    None => (form, 0.0, 0.0, 0.0, fr_hz, fr_bw),
                };
                for j in 0..3 {
                    form[j] += kf * (target[j] - form[j]);
                }
                voice += ka * (tv - voice);
                asp += ka * (ta - asp);
                fr += ka * (tf - fr);
                fr_hz += kf * (thz - fr_hz);
                fr_bw += kf * (tbw - fr_bw);
                // Pitch: declination over the utterance and a new 2% jitter each period.
                phase += period_f0 / sr;
                if phase >= 1.0 {
                    phase -= 1.0;
                    let decl = 1.0 - 0.15 * t as f64 / total.max(1) as f64;
                    period_f0 = plan.pitch * decl * (1.0 + 0.02 * g.next_normal());
                }
                // Rosenberg pulse: opening 40% of the period, closing 16%, then closed.
                let glottal = if phase < 0.4 {
                    0.5 * (1.0 - (PI * phase / 0.4).cos())
                } else if phase < 0.56 {
                    (PI / 2.0 * (phase - 0.4) / 0.16).cos()
                } else {
                    0.0
                };
                let source = (glottal - glottal_prev) * voice * 8.0 + asp * 0.3 * g.next_normal();
                glottal_prev = glottal;
                if t.is_multiple_of(RETUNE) {
                    for j in 0..3 {
                        res[j].tune(form[j].min(0.45 * sr), bws[j] * plan.scale, sr);
                    }
                    fres.tune(fr_hz.min(0.45 * sr), fr_bw, sr);
                }
                let y = res.iter_mut().fold(source, |y, r| r.step(y));
                let noise = fres.step(g.next_normal()) * fr * 1.5;
                out.push(y + noise);
                t += 1;
            }
        }
        // Level: scale the loudest 50 ms to the drawn level, then add background noise.
        let rms = out.iter().map(|v| v * v).sum::<f64>() / out.len().max(1) as f64;
        let gain = if rms > 0.0 { plan.level / rms.sqrt() } else { 0.0 };
        let noise_sigma = plan.level * 10f64.powf(-plan.snr_db / 20.0);
        out.iter().map(|v| ((v * gain + noise_sigma * g.next_normal()).clamp(-0.99, 0.99)) as f32).collect()
    }

    /// Utterance `index`: its audio (mono, 16 kHz), its transcript and its id.
    pub fn utterance(&self, index: usize) -> Result<Utterance> {
        if index >= self.cfg.num_utterances {
            return Err(Error::IndexOutOfRange {
                op: "SyntheticDigits::get",
                index: index as i64,
                dim: 0,
                size: self.cfg.num_utterances,
            });
        }
        let plan = self.plan(index);
        let audio = self.render(index, &plan);
        let transcript = plan.digits.iter().map(|&d| DIGITS[d]).collect::<Vec<_>>().join(" ");
        Ok(Utterance {
            id: format!("synth{:04x}-{index:06}", self.cfg.seed & 0xFFFF),
            audio,
            sample_rate: SAMPLE_RATE,
            transcript,
        })
    }

    /// Writes the corpus under `dir`: `dir/wav/<id>.wav` (16-bit) and `dir/manifest.jsonl`
    /// (one `{"id", "audio", "text", "duration"}` object per line, audio paths relative to the
    /// manifest). Files are rendered in parallel. Each WAV appears whole (temp file + rename)
    /// but is not fsynced on its own, which would dominate the cost; the manifest is written
    /// last, atomically and fsynced. After a power loss, regenerate the corpus from its seed.
    /// Returns the manifest's path.
    pub fn write_corpus(&self, dir: impl AsRef<Path>) -> Result<PathBuf> {
        use rayon::prelude::*;
        const OP: &str = "SyntheticDigits::write_corpus";
        let dir = dir.as_ref();
        let wav_dir = dir.join("wav");
        std::fs::create_dir_all(&wav_dir).map_err(|e| Error::io(OP, &wav_dir, e))?;
        let lines: Vec<String> = (0..self.cfg.num_utterances)
            .into_par_iter()
            .map(|i| {
                let u = self.utterance(i)?;
                let rel = format!("wav/{}.wav", u.id);
                let path = dir.join(&rel);
                // Temp file + rename, but no fsync per file (see the doc comment).
                let tmp = wav_dir.join(format!(".{}.wav.tmp", u.id));
                std::fs::write(&tmp, wav_bytes(&u.audio, SAMPLE_RATE, &path)?)
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| Error::io(OP, &path, e))?;
                let obj = serde_json::json!({
                    "id": u.id, "audio": rel, "text": u.transcript,
                    "duration": u.audio.len() as f64 / SAMPLE_RATE as f64,
                });
                Ok(obj.to_string())
            })
            .collect::<Result<_>>()?;
        write_manifest(dir, &lines)
    }
}

/// Writes `dir/manifest.jsonl` (one JSON object per line) atomically and returns its path.
pub(crate) fn write_manifest(dir: &Path, lines: &[String]) -> Result<PathBuf> {
    let manifest = dir.join("manifest.jsonl");
    let mut text = lines.join("\n");
    text.push('\n');
    stapes_nn::checkpoint::write_atomic(&manifest, text.as_bytes())?;
    Ok(manifest)
}

impl Dataset for SyntheticDigits {
    fn len(&self) -> usize {
        self.cfg.num_utterances
    }

    fn get(&self, index: usize) -> Result<Utterance> {
        self.utterance(index)
    }

    fn duration(&self, index: usize) -> Result<Option<f64>> {
        Ok((index < self.cfg.num_utterances).then(|| self.duration_of(index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(n: usize) -> SyntheticDigits {
        SyntheticDigits::new(SynthConfig { seed: 7, num_utterances: n, ..Default::default() }).unwrap()
    }

    #[test]
    fn reproducible_by_index_and_seed() {
        let c = corpus(20);
        let a = c.get(13).unwrap();
        let b = corpus(20).get(13).unwrap();
        assert_eq!(a, b);
        assert_ne!(c.get(12).unwrap().audio, a.audio);
        let other = SyntheticDigits::new(SynthConfig { seed: 8, num_utterances: 20, ..Default::default() }).unwrap();
        assert_ne!(other.get(13).unwrap().audio, a.audio);
        assert!((a.audio.len() as f64 / 16000.0 - c.duration_of(13)).abs() < 1e-9);
        assert!(c.get(20).is_err());
    }

    #[test]
    fn transcripts_are_digit_words_and_audio_is_sane() {
        let c = corpus(30);
        for i in 0..30 {
            let u = c.get(i).unwrap();
            let words: Vec<&str> = u.transcript.split(' ').collect();
            assert!((1..=5).contains(&words.len()), "{}", u.transcript);
            assert!(words.iter().all(|w| DIGITS.contains(w)));
            assert!(u.audio.iter().all(|v| v.is_finite() && v.abs() < 1.0));
            let rms = (u.audio.iter().map(|v| v * v).sum::<f32>() / u.audio.len() as f32).sqrt();
            assert!(rms > 0.01 && rms < 0.3, "rms {rms}");
        }
    }

    /// Long-term average spectra of the words differ: a nearest-centroid classifier on coarse
    /// band energies of single-word utterances from different speakers beats chance by far.
    #[test]
    fn words_are_acoustically_distinguishable() {
        let cfg = SynthConfig { seed: 3, num_utterances: 400, min_words: 1, max_words: 1, ..Default::default() };
        let c = SyntheticDigits::new(cfg).unwrap();
        let bands = |x: &[f32]| -> Vec<f64> {
            // Energy in 8 bands x 4 time quarters via Goertzel-like correlation at band centres.
            let n = x.len();
            let mut v = vec![];
            for q in 0..4 {
                let seg = &x[q * n / 4..(q + 1) * n / 4];
                for b in 0..8 {
                    let f = 250.0 * 1.5f64.powi(b);
                    let (mut re, mut im) = (0.0, 0.0);
                    for (i, &s) in seg.iter().enumerate() {
                        let w = 2.0 * PI * f * i as f64 / 16000.0;
                        re += s as f64 * w.cos();
                        im += s as f64 * w.sin();
                    }
                    v.push((re * re + im * im + 1e-9).ln());
                }
            }
            v
        };
        let mut train: Vec<(usize, Vec<f64>)> = vec![];
        let mut test: Vec<(usize, Vec<f64>)> = vec![];
        for i in 0..400 {
            let u = c.get(i).unwrap();
            let d = DIGITS.iter().position(|w| *w == u.transcript).unwrap();
            let f = bands(&vad_trim(&u.audio));
            if i < 300 {
                train.push((d, f))
            } else {
                test.push((d, f))
            }
        }
        let mut centroids = vec![vec![0.0; 32]; 10];
        let mut counts = [0usize; 10];
        for (d, f) in &train {
            counts[*d] += 1;
            for (c, v) in centroids[*d].iter_mut().zip(f) {
                *c += v;
            }
        }
        for (c, n) in centroids.iter_mut().zip(counts) {
            c.iter_mut().for_each(|v| *v /= n.max(1) as f64);
        }
        let correct = test
            .iter()
            .filter(|(d, f)| {
                let dist = |c: &Vec<f64>| c.iter().zip(f).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
                (0..10).min_by(|&a, &b| dist(&centroids[a]).total_cmp(&dist(&centroids[b]))).unwrap() == *d
            })
            .count();
        eprintln!("nearest-centroid word accuracy {correct}/{}", test.len());
        assert!(correct as f64 / test.len() as f64 > 0.5, "accuracy {correct}/{}", test.len());
    }

    fn vad_trim(x: &[f32]) -> Vec<f32> {
        let t = crate::vad::trim(x, 16000, &crate::vad::VadConfig { threshold_db: 6.0, ..Default::default() }).unwrap();
        if t.len() < 400 {
            x.to_vec()
        } else {
            t
        }
    }
}
