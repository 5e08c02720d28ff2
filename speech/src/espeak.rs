//! Speech corpora spoken by `espeak-ng` voices: digit strings and short commands, each voice a
//! speaker, with noise at chosen SNRs and a share of the recordings at 8 kHz (telephone band),
//! for training and evaluating on disjoint voices (issue 16).
//!
//! The formant synthesiser is not a human, but its voices differ in accent (`en-us`, `en-gb`,
//! `en-gb-scotland`, ...) and in the variant's pitch, formants and voice quality (`+m1` ...
//! `+f5`), and the corpus varies speaking rate and pitch per utterance: a model that learned the
//! training voices' acoustics and not the words fails on the held-out ones, which is what these
//! corpora measure. `espeak-ng` is a system package (`apt-get install espeak-ng`); it is run as
//! a subprocess (`--stdout`, a 22,050 Hz WAV), and [`espeak_available`] says whether it can be.

use std::path::{Path, PathBuf};
use std::process::Command;

use rayon::prelude::*;
use stapes_tensor::{Error, Generator, Result};

use crate::audio::resample;
use crate::synth::DIGITS;

/// Voices for training: eight accent and variant pairs.
pub const TRAIN_VOICES: [&str; 8] =
    ["en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-gb-scotland+m5", "en-029+f1", "en-gb-x-rp+m7", "en-us+m6"];

/// Voices held out for testing: variants none of [`TRAIN_VOICES`] uses, and two accents they
/// do not have.
pub const TEST_VOICES: [&str; 4] = ["en-gb-x-gbclan+f3", "en-us+m4", "en-gb+f5", "en-gb-x-gbcwmd+m2"];

/// Short commands, spoken as they are written.
pub const COMMANDS: [&str; 20] = [
    "turn on the light",
    "turn off the light",
    "go forward",
    "go back",
    "stop",
    "open the door",
    "close the window",
    "play music",
    "next song",
    "call home",
    "set an alarm",
    "what time is it",
    "volume up",
    "volume down",
    "yes",
    "no",
    "left",
    "right",
    "start the timer",
    "cancel",
];

/// What [`write_espeak_corpus`] speaks and how.
#[derive(Clone, Debug, PartialEq)]
pub struct EspeakConfig {
    /// The voices (`espeak-ng -v` names); each is a speaker of the manifest.
    pub voices: Vec<String>,
    /// Utterances per voice.
    pub per_voice: usize,
    /// Fraction of utterances that are digit strings (the rest are [`COMMANDS`]).
    pub digit_fraction: f64,
    /// Digits per digit string, inclusive range.
    pub digits: (usize, usize),
    /// Speaking rate in words per minute (`-s`), drawn per utterance.
    pub rate: (u32, u32),
    /// Pitch (`-p`, 0-99), drawn per utterance.
    pub pitch: (u32, u32),
    /// White-noise SNRs in dB, one drawn per utterance; `None` entries leave it clean.
    pub snr_db: Vec<Option<f64>>,
    /// Fraction of utterances stored at 8 kHz (resampled down: telephone band); the rest at
    /// 16 kHz.
    pub narrowband_fraction: f64,
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        EspeakConfig {
            voices: TRAIN_VOICES.iter().map(|v| v.to_string()).collect(),
            per_voice: 100,
            digit_fraction: 0.6,
            digits: (2, 5),
            rate: (130, 200),
            pitch: (30, 70),
            snr_db: vec![None, Some(30.0), Some(20.0), Some(10.0)],
            narrowband_fraction: 0.25,
            seed: 0,
        }
    }
}

/// Whether `espeak-ng` can be run.
pub fn espeak_available() -> bool {
    Command::new("espeak-ng").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Speaks `text` with `voice` at `rate` words per minute and pitch `pitch`: mono samples and
/// their rate.
///
/// # Errors
/// If `espeak-ng` cannot be run, fails (an unknown voice), or returns no audio.
pub fn speak(text: &str, voice: &str, rate: u32, pitch: u32) -> Result<(Vec<f32>, u32)> {
    const OP: &str = "espeak";
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &rate.to_string(), "-p", &pitch.to_string(), "--stdout", text])
        .output()
        .map_err(|e| {
            Error::invalid(OP, format!("cannot run espeak-ng ({e}); install it (apt-get install espeak-ng)"))
        })?;
    if !out.status.success() {
        return Err(Error::invalid(
            OP,
            format!("espeak-ng -v {voice} failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    let (samples, sr) = parse_wav_pcm16(&out.stdout)
        .ok_or_else(|| Error::invalid(OP, format!("espeak-ng -v {voice} returned no 16-bit WAV for {text:?}")))?;
    if samples.is_empty() {
        return Err(Error::invalid(OP, format!("espeak-ng -v {voice} returned no audio for {text:?}")));
    }
    Ok((samples, sr))
}

/// The samples and rate of a mono 16-bit PCM WAV in memory (espeak-ng's `--stdout`, whose
/// header may give the data size as unknown: the data chunk then runs to the end).
fn parse_wav_pcm16(b: &[u8]) -> Option<(Vec<f32>, u32)> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let (mut at, mut rate, mut fmt_ok) = (12, 0u32, false);
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = u32::from_le_bytes(b[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let f = b.get(body..body + 16)?;
            let (format, channels) = (u16::from_le_bytes([f[0], f[1]]), u16::from_le_bytes([f[2], f[3]]));
            rate = u32::from_le_bytes(f[4..8].try_into().ok()?);
            fmt_ok = format == 1 && channels == 1 && u16::from_le_bytes([f[14], f[15]]) == 16;
        } else if id == b"data" {
            if !fmt_ok {
                return None;
            }
            let end =
                if size == 0 || size == u32::MAX as usize || body + size > b.len() { b.len() } else { body + size };
            let s =
                b[body..end].chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0).collect();
            return Some((s, rate));
        }
        at = body + size + (size & 1);
    }
    None
}

fn uniform_u32(g: &mut Generator, (lo, hi): (u32, u32)) -> u32 {
    lo + (g.next_f64() * f64::from(hi - lo + 1)) as u32
}

/// Writes a corpus spoken by `cfg.voices` into `dir`: `wav/<id>.wav` and `manifest.jsonl`
/// (`id`, `audio`, `text`, `speaker`, `duration`, `sample_rate`), ids `<voice>-<n>` with the
/// voice's `+` spelt `_`. Utterances are synthesised in parallel; the draws depend only on the
/// seed, so the same configuration writes the same corpus.
///
/// # Errors
/// If espeak-ng fails or a file cannot be written.
pub fn write_espeak_corpus(cfg: &EspeakConfig, dir: impl AsRef<Path>) -> Result<PathBuf> {
    const OP: &str = "write_espeak_corpus";
    let dir = dir.as_ref();
    if cfg.voices.is_empty() || cfg.per_voice == 0 {
        return Err(Error::invalid(OP, "needs at least one voice and one utterance per voice"));
    }
    if cfg.rate.0 > cfg.rate.1 || cfg.pitch.0 > cfg.pitch.1 || cfg.digits.0 == 0 || cfg.digits.0 > cfg.digits.1 {
        return Err(Error::invalid(OP, format!("empty ranges in {cfg:?}")));
    }
    let wav_dir = dir.join("wav");
    std::fs::create_dir_all(&wav_dir).map_err(|e| Error::io(OP, &wav_dir, e))?;
    let jobs: Vec<(usize, usize)> =
        (0..cfg.voices.len()).flat_map(|v| (0..cfg.per_voice).map(move |i| (v, i))).collect();
    let lines: Vec<String> = jobs
        .par_iter()
        .map(|&(v, i)| -> Result<String> {
            let voice = &cfg.voices[v];
            let mut g = Generator::new(cfg.seed.wrapping_mul(1_000_003).wrapping_add((v * 100_003 + i) as u64));
            let text = if g.next_f64() < cfg.digit_fraction {
                let n = cfg.digits.0 + (g.next_f64() * (cfg.digits.1 - cfg.digits.0 + 1) as f64) as usize;
                (0..n).map(|_| DIGITS[(g.next_f64() * 10.0) as usize % 10]).collect::<Vec<_>>().join(" ")
            } else {
                COMMANDS[(g.next_f64() * COMMANDS.len() as f64) as usize % COMMANDS.len()].to_string()
            };
            let (rate, pitch) = (uniform_u32(&mut g, cfg.rate), uniform_u32(&mut g, cfg.pitch));
            let (raw, sr) = speak(&text, voice, rate, pitch)?;
            let narrow = g.next_f64() < cfg.narrowband_fraction;
            let out_sr = if narrow { 8_000 } else { 16_000 };
            let mut audio = resample(&raw, sr, out_sr)?;
            let snr = if cfg.snr_db.is_empty() {
                None
            } else {
                cfg.snr_db[(g.next_f64() * cfg.snr_db.len() as f64) as usize % cfg.snr_db.len()]
            };
            if let Some(snr) = snr {
                let power = audio.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / audio.len().max(1) as f64;
                let sigma = (power / 10f64.powf(snr / 10.0)).sqrt();
                for x in audio.iter_mut() {
                    *x += (sigma * g.next_normal()) as f32;
                }
            }
            let peak = audio.iter().fold(0f32, |m, x| m.max(x.abs()));
            if peak > 0.99 {
                audio.iter_mut().for_each(|x| *x *= 0.99 / peak);
            }
            let id = format!("{}-{i:04}", voice.replace('+', "_"));
            let rel = format!("wav/{id}.wav");
            crate::audio::write_wav(dir.join(&rel), &audio, out_sr)?;
            Ok(serde_json::json!({
                "id": id, "audio": rel, "text": text, "speaker": voice,
                "duration": audio.len() as f64 / f64::from(out_sr), "sample_rate": out_sr,
            })
            .to_string())
        })
        .collect::<Result<_>>()?;
    crate::synth::write_manifest(dir, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_espeak_style_wav_headers() {
        let mut b = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        b.extend(16u32.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.extend(22_050u32.to_le_bytes());
        b.extend((22_050u32 * 2).to_le_bytes());
        b.extend(2u16.to_le_bytes());
        b.extend(16u16.to_le_bytes());
        b.extend(b"data");
        b.extend(u32::MAX.to_le_bytes()); // size unknown (a pipe)
        b.extend(16384i16.to_le_bytes());
        b.extend((-32768i16).to_le_bytes());
        let (s, sr) = parse_wav_pcm16(&b).unwrap();
        assert_eq!((s, sr), (vec![0.5, -1.0], 22_050));
        assert!(parse_wav_pcm16(b"RIFF").is_none());
        let mut stereo = b.clone();
        stereo[22] = 2;
        assert!(parse_wav_pcm16(&stereo).is_none());
    }
}
