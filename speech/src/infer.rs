//! Inference with a trained run: load audio, split long recordings into speech segments with
//! the VAD, compute the run's features, decode each segment.

use crate::audio::{load_audio, resample};
use crate::data::Vocab;
use crate::models::AcousticModel;
use crate::train::{batch_log_probs, Frontend};
use crate::vad::{detect_speech, VadConfig};
use stapes_tensor::{Error, Result, Tensor};
use std::path::Path;

/// One decoded stretch of a recording.
#[derive(Clone, Debug, PartialEq)]
pub struct TranscriptSegment {
    /// Start, in seconds from the start of the recording.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// The decoded text.
    pub text: String,
}

/// How [`transcribe_samples`] cuts a recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentOptions {
    /// Split on silence with this VAD (`None`: decode the whole recording as one piece, cut
    /// only by `max_segment_s`).
    pub vad: Option<VadConfig>,
    /// Seconds of context kept around each VAD segment.
    pub padding_s: f64,
    /// Longer segments are cut into equal pieces no longer than this.
    pub max_segment_s: f64,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            vad: Some(VadConfig { min_silence: 0.3, ..VadConfig::default() }),
            padding_s: 0.15,
            max_segment_s: 20.0,
        }
    }
}

/// The pieces `[start, end)` in samples that [`transcribe_samples`] decodes.
pub fn plan_segments(samples: &[f32], sample_rate: u32, opts: &SegmentOptions) -> Result<Vec<(usize, usize)>> {
    const OP: &str = "plan_segments";
    let valid = opts.max_segment_s > 0.0 && opts.max_segment_s.is_finite() && opts.padding_s >= 0.0;
    if !valid {
        return Err(Error::invalid(
            OP,
            format!("max_segment_s must be > 0 and padding_s >= 0, got {} and {}", opts.max_segment_s, opts.padding_s),
        ));
    }
    let sr = sample_rate as f64;
    let n = samples.len();
    let spans: Vec<(usize, usize)> = match &opts.vad {
        None => vec![(0, n)],
        Some(v) => {
            let pad = (opts.padding_s * sr) as usize;
            let mut out: Vec<(usize, usize)> = Vec::new();
            for s in detect_speech(samples, sample_rate, v)? {
                let a = ((s.start * sr) as usize).saturating_sub(pad);
                let b = (((s.end * sr) as usize) + pad).min(n);
                match out.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b), // padding made them touch
                    _ => out.push((a, b)),
                }
            }
            out
        }
    };
    let max = ((opts.max_segment_s * sr) as usize).max(1);
    let mut pieces = Vec::new();
    for (a, b) in spans {
        if b <= a {
            continue;
        }
        let k = (b - a).div_ceil(max);
        let len = (b - a).div_ceil(k);
        let mut s = a;
        while s < b {
            pieces.push((s, (s + len).min(b)));
            s += len;
        }
    }
    Ok(pieces)
}

/// Transcribes a mono 16 kHz signal: cut it with [`plan_segments`], feed each piece to the model
/// through `frontend` (the run's, [`crate::train::LoadedRun::frontend`]), decode it with `decode`
/// (log-probabilities `[1, T, C]` and the output length → label sequences).
pub fn transcribe_samples(
    model: &AcousticModel,
    frontend: &Frontend,
    vocab: &Vocab,
    samples: &[f32],
    opts: &SegmentOptions,
    mut decode: impl FnMut(&Tensor, &[usize]) -> Result<Vec<Vec<usize>>>,
) -> Result<Vec<TranscriptSegment>> {
    const SR: u32 = 16000;
    let front = frontend.build()?;
    let mut out = Vec::new();
    for (a, b) in plan_segments(samples, SR, opts)? {
        // At least one 25 ms window of audio (also wav2vec2's receptive field), so that the
        // front end yields a frame.
        let piece = &samples[a..b.max(a + 400).min(samples.len())];
        let (x, frames) = front.batch_of_one(piece)?;
        if frames == 0 || model.output_lengths(&[frames])[0] == 0 {
            continue;
        }
        let (lp, lens) = batch_log_probs(model, &x, &[frames])?;
        let ids = decode(&lp, &lens)?.into_iter().next().unwrap_or_default();
        let text = vocab.decode(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>())?;
        out.push(TranscriptSegment { start: a as f64 / SR as f64, end: b as f64 / SR as f64, text });
    }
    Ok(out)
}

/// Loads an audio file (any format [`load_audio`] reads), down-mixes and resamples it to
/// 16 kHz, and transcribes it with [`transcribe_samples`].
pub fn transcribe_file(
    model: &AcousticModel,
    frontend: &Frontend,
    vocab: &Vocab,
    path: &Path,
    opts: &SegmentOptions,
    decode: impl FnMut(&Tensor, &[usize]) -> Result<Vec<Vec<usize>>>,
) -> Result<Vec<TranscriptSegment>> {
    let audio = load_audio(path, true)?;
    let samples =
        if audio.sample_rate == 16000 { audio.samples } else { resample(&audio.samples, audio.sample_rate, 16000)? };
    transcribe_samples(model, frontend, vocab, &samples, opts, decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_speech_and_respect_the_maximum() {
        let sr = 16000u32;
        // 1 s silence, 2 s of tone, 1 s silence, 0.5 s tone, 0.5 s silence.
        let mut x = vec![0f32; sr as usize];
        x.extend((0..2 * sr).map(|i| 0.3 * (i as f32 * 0.2).sin()));
        x.extend(vec![0f32; sr as usize]);
        x.extend((0..sr / 2).map(|i| 0.3 * (i as f32 * 0.2).sin()));
        x.extend(vec![0f32; sr as usize / 2]);
        // Low noise everywhere, so the VAD has a floor.
        let mut s = 1u32;
        for v in x.iter_mut() {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            *v += 1e-3 * ((s >> 8) as f32 / (1 << 24) as f32 - 0.5);
        }
        let p = plan_segments(&x, sr, &SegmentOptions::default()).unwrap();
        assert_eq!(p.len(), 2, "{p:?}");
        let secs = |v: usize| v as f64 / sr as f64;
        assert!((secs(p[0].0) - 0.85).abs() < 0.05 && (secs(p[0].1) - 3.15).abs() < 0.05, "{p:?}");
        assert!((secs(p[1].0) - 3.85).abs() < 0.05, "{p:?}");
        let short = SegmentOptions { max_segment_s: 1.0, ..SegmentOptions::default() };
        let q = plan_segments(&x, sr, &short).unwrap();
        assert!(q.iter().all(|(a, b)| b - a <= sr as usize), "{q:?}");
        assert_eq!(q.first().unwrap().0, p[0].0);
        assert_eq!(q.last().unwrap().1, p[1].1);
        let whole = plan_segments(&x, sr, &SegmentOptions { vad: None, ..SegmentOptions::default() }).unwrap();
        assert_eq!(whole, vec![(0, x.len())]);
        assert!(plan_segments(&x, sr, &SegmentOptions { max_segment_s: 0.0, ..SegmentOptions::default() }).is_err());
        assert!(plan_segments(&vec![0f32; 16000], sr, &SegmentOptions::default()).unwrap().is_empty());
    }
}
