//! Training a CTC recogniser: the loop behind `stapes train` and `stapes demo`.
//!
//! [`train_ctc`] trains an [`AcousticModel`] (CRDNN, DeepSpeech2, or wav2vec2 fine-tuned from a
//! checkpoint directory) described by a [`RunConfig`] on any [`Dataset`]: on-the-fly inputs
//! from the model's [`Frontend`] (log-mel features, per-utterance mean/variance normalised, or
//! the waveform for wav2vec2) with speed perturbation and SpecAugment (log-mel only; wav2vec2
//! masks its own encoder features) for training utterances, CTC over
//! characters, the configured optimizer and LR schedule (stepped per optimizer step), gradient
//! clipping, optional mixed precision (autocast, with a GradScaler for f16), greedy CER/WER on
//! a dev set after every epoch, and a run directory:
//!
//! | file | what |
//! |---|---|
//! | `config.toml` | the configuration used (model sizes filled in) |
//! | `vocab.json` | the output characters (index 0 is the CTC blank) |
//! | `checkpoint.safetensors` | model, optimizer, schedule, scaler, RNG, position: for `--resume` |
//! | `best_model.safetensors` | the `state_dict` with the lowest dev CER |
//! | `log.jsonl` | one JSON line per epoch |
//! | `tensorboard/` | event files: scalars every step, histograms every epoch |
//! | `curves.png` | loss, learning rate and error rates per epoch |
//!
//! Every file is written atomically. A checkpoint is written at the end of every epoch and
//! every `training.checkpoint_every_steps` steps; [`TrainOptions::resume`] continues from it
//! exactly: the same batches in the same order, the same dropout masks and augmentation, the
//! same weights as a run that was never interrupted.

use crate::augment::SpecAugment;
use crate::config::{Precision, RunConfig};
use crate::data::{
    DataLoader, Dataset, Item, LibriSpeech, LoaderConfig, ManifestDataset, ManifestEntry, Order, Transform, Utterance,
    Vocab,
};
use crate::decode::greedy_decode_batch;
use crate::features::{MelSpectrogram, MelSpectrogramConfig, SpectrogramConfig};
use crate::metrics::{corpus_error_rates, ErrorCounts};
use crate::models::wav2vec2::normalize_audio;
use crate::models::{AcousticModel, ModelConfig};
use crate::perturb::speed;
use crate::plot::{plot_figure, Chart, Series};
use crate::tensorboard::SummaryWriter;
use serde::{Deserialize, Serialize};
use stapes_autograd::{autocast, no_grad, Var};
use stapes_nn::amp::{GradScaler, GradScalerConfig};
use stapes_nn::checkpoint::{save_module, write_atomic, Checkpoint};
use stapes_nn::clip::clip_grad_norm;
use stapes_nn::ctc::{ctc_loss_from_logits, CtcLossOptions};
use stapes_nn::loss::Reduction;
use stapes_nn::optim::Optimizer;
use stapes_nn::schedule::LrSchedule;
use stapes_nn::Module;
use stapes_tensor::{Device, Error, Generator, Result, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Dev-set character error rate (greedy decoding).
    pub dev_cer: f64,
    /// Dev-set word error rate.
    pub dev_wer: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Seconds of training so far (summed over resumed sessions).
    pub elapsed_s: f64,
    /// Training utterances per second during this epoch.
    pub utterances_per_s: f64,
}

/// Progress of a run, reported to the caller's observer as it happens.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// Training starts (or resumes).
    Start {
        /// `"CRDNN"` or `"DeepSpeech2"`.
        model: &'static str,
        /// Trainable parameters.
        parameters: usize,
        /// Training utterances.
        train_utterances: usize,
        /// Dev utterances.
        dev_utterances: usize,
        /// `Some((epoch, batches done in it, step))` when resuming from a checkpoint.
        resumed: Option<(usize, usize, u64)>,
    },
    /// An epoch starts.
    EpochStart {
        /// Epoch number, from 1.
        epoch: usize,
        /// Epochs in the run.
        epochs: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Batches already done (non-zero when resuming mid-epoch).
        done: usize,
    },
    /// An optimizer step finished.
    Step {
        /// Epoch number.
        epoch: usize,
        /// Batches done in this epoch.
        batch: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Optimizer steps so far.
        step: u64,
        /// The batch's loss.
        loss: f64,
        /// Learning rate used for the step.
        lr: f64,
        /// Gradient L2 norm before clipping.
        grad_norm: f64,
        /// Training utterances per second in this epoch so far.
        utterances_per_s: f64,
        /// The GradScaler's scale (f16 only).
        loss_scale: Option<f64>,
    },
    /// Evaluation on the dev set starts.
    Evaluating {
        /// Epoch number.
        epoch: usize,
    },
    /// An epoch ended and was evaluated.
    EpochEnd(EpochLog),
    /// A checkpoint was written.
    Checkpoint {
        /// Optimizer steps in the checkpoint.
        step: u64,
        /// Written at the end of an epoch (not mid-epoch).
        epoch_end: bool,
    },
    /// Anything else worth a line.
    Message(String),
}

/// How to run [`train_ctc`] beyond the configuration.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue from `run_dir/checkpoint.safetensors` (an error if there is none).
    pub resume: bool,
    /// Stop after the epoch in which this session has run this long (overrides
    /// `training.max_seconds`).
    pub max_seconds: Option<f64>,
    /// Where the model trains (`Device::Cpu` by default; `Device::Cuda(n)` keeps the model,
    /// the optimizer state and every activation on that GPU, batches are uploaded as they come
    /// from the loader). Checkpoints are device-independent: a run may resume on another device.
    pub device: Device,
    /// Start a new run from the weights of this run directory's model (fine-tuning, e.g.
    /// quantization-aware training of a trained run); its architecture must be the configured
    /// one. Ignored when resuming.
    pub init_from: Option<PathBuf>,
}

/// The outcome of [`train_ctc`].
pub struct TrainReport {
    /// Per-epoch logs (of earlier sessions too, when resumed).
    pub epochs: Vec<EpochLog>,
    /// The best dev CER seen.
    pub best_cer: f64,
    /// A few dev examples `(reference, hypothesis)` from the last evaluation.
    pub examples: Vec<(String, String)>,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The trained model.
    pub model: AcousticModel,
    /// The configuration, with the model's input and output sizes filled in.
    pub config: RunConfig,
}

/// Per-band normalised log-mel features in `[rows, frames]` layout.
fn normalised_log_mel(mel: &MelSpectrogram, audio: &[f32]) -> Result<(Vec<f32>, usize, usize)> {
    log_mel_normalised_by(mel, audio, None)
}

/// Log-mel `[rows, frames]`, each band normalised per utterance or, with `global`
/// (`(mean, 1 / std)` per band), by the training set's statistics; with `raw`-like statistics
/// (zero mean, unit scale) it gives the plain log-mel.
fn log_mel_normalised_by(
    mel: &MelSpectrogram,
    audio: &[f32],
    global: Option<&(Vec<f32>, Vec<f32>)>,
) -> Result<(Vec<f32>, usize, usize)> {
    let m = mel.forward_slice(audio)?;
    let (rows, frames) = (m.rows, m.frames);
    let mut out = vec![0f32; rows * frames];
    for r in 0..rows {
        let row = &m.data[r * frames..(r + 1) * frames];
        let dst = &mut out[r * frames..(r + 1) * frames];
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = (v + 1e-6).ln();
        }
        let (mean, inv) = match global {
            Some((m, i)) => (m[r], i[r]),
            None => {
                let mean = dst.iter().sum::<f32>() / frames.max(1) as f32;
                let var = dst.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / frames.max(1) as f32;
                (mean, 1.0 / (var + 1e-5).sqrt())
            }
        };
        for d in dst.iter_mut() {
            *d = (*d - mean) * inv;
        }
    }
    Ok((out, rows, frames))
}

fn transpose(x: &[f32], rows: usize, frames: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * frames];
    for r in 0..rows {
        for t in 0..frames {
            out[t * rows + r] = x[r * frames + t];
        }
    }
    out
}

/// Features for the model: log-mel `[frames, n_mels]`, each band normalised to zero mean and
/// unit variance over the utterance.
pub fn log_mel_features(mel: &MelSpectrogram, audio: &[f32]) -> Result<(Vec<f32>, usize)> {
    let (x, rows, frames) = normalised_log_mel(mel, audio)?;
    Ok((transpose(&x, rows, frames), frames))
}

/// The mel front end used for training: 16 kHz, 25 ms windows (n_fft 400), 10 ms hop.
pub fn mel_frontend(n_mels: usize) -> Result<MelSpectrogram> {
    mel_frontend_to(n_mels, None)
}

/// [`mel_frontend`] with the mel bands ending at `f_max` Hz (all of 0-8 kHz when `None`).
pub fn mel_frontend_to(n_mels: usize, f_max: Option<f64>) -> Result<MelSpectrogram> {
    MelSpectrogram::new(MelSpectrogramConfig {
        sample_rate: 16000,
        spectrogram: SpectrogramConfig { n_fft: 400, hop_length: Some(160), ..SpectrogramConfig::default() },
        n_mels,
        f_max,
        ..MelSpectrogramConfig::default()
    })
}

/// `y[n] = x[n] - coef * x[n - 1]` over the whole signal (`y[0] = x[0]`).
fn preemphasize(x: &[f32], coef: f64) -> Vec<f32> {
    let c = coef as f32;
    let mut out = Vec::with_capacity(x.len());
    let mut prev = 0.0f32;
    for (i, &v) in x.iter().enumerate() {
        out.push(if i == 0 { v } else { v - c * prev });
        prev = v;
    }
    out
}

/// Training-time augmentation applied inside the loader's transform.
#[derive(Clone, Debug, Default)]
pub(crate) struct Augment {
    speeds: Vec<f64>,
    spec: Option<SpecAugment>,
    /// VTLP warp factor range.
    vtlp: Option<(f64, f64)>,
    /// White noise: SNR range in dB and the probability of adding it.
    noise: Option<(f64, f64, f64)>,
    /// Standard deviation of the Gaussian dither added to the samples.
    dither: f64,
}

fn uniform(g: &mut Generator, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * g.next_f64()
}

/// What a model is fed, made from 16 kHz audio.
#[derive(Clone, Debug, PartialEq)]
pub enum Frontend {
    /// Log-mel features `[T, n_mels]` ([`mel_frontend`]), each band normalised to zero mean and
    /// unit variance over the utterance (CRDNN, DeepSpeech2).
    LogMel {
        /// Mel bands.
        n_mels: usize,
        /// The top of the mel bands in Hz (`None`: 8 kHz). Below 8 kHz for audio recorded at
        /// less than 16 kHz, whose upper bands hold only resampling noise.
        f_max: Option<f64>,
        /// Pre-emphasis coefficient (0: none), applied to the waveform.
        preemphasis: f64,
        /// Cut leading and trailing silence first (`[features] trim_silence`).
        trim_silence: bool,
        /// Normalise each band by the training set's statistics instead of per utterance
        /// (`[features] cmvn = "global"`).
        global_cmvn: Option<crate::config::GlobalCmvn>,
    },
    /// The waveform itself `[S]` (wav2vec2), normalised to zero mean and unit variance when
    /// `normalize` (the checkpoint's `do_normalize`).
    Waveform {
        /// Per-utterance normalisation.
        normalize: bool,
    },
}

impl Frontend {
    /// The front end with its STFT and mel filterbank built, for many utterances.
    pub(crate) fn build(&self) -> Result<BuiltFrontend> {
        Ok(match self {
            Frontend::LogMel { n_mels, f_max, preemphasis, trim_silence, global_cmvn } => BuiltFrontend {
                mel: Some((Arc::new(mel_frontend_to(*n_mels, *f_max)?), *n_mels)),
                preemphasis: *preemphasis,
                normalize: false,
                trim_silence: *trim_silence,
                global: global_cmvn.as_ref().map(|g| {
                    (g.mean.iter().map(|&m| m as f32).collect(), g.std.iter().map(|&s| 1.0 / s as f32).collect())
                }),
            },
            Frontend::Waveform { normalize } => {
                BuiltFrontend { mel: None, preemphasis: 0.0, normalize: *normalize, trim_silence: false, global: None }
            }
        })
    }

    /// The model input of one utterance: values and frames (`[frames, F]` row-major, or the
    /// samples).
    pub fn prepare(&self, audio: &[f32]) -> Result<(Vec<f32>, usize)> {
        self.build()?.prepare(audio)
    }
}

/// A [`Frontend`] ready to run: the mel front end built once (training transforms and
/// transcription feed it many utterances).
pub(crate) struct BuiltFrontend {
    mel: Option<(Arc<MelSpectrogram>, usize)>,
    preemphasis: f64,
    normalize: bool,
    trim_silence: bool,
    /// `(mean, 1 / std)` per band for global normalisation.
    global: Option<(Vec<f32>, Vec<f32>)>,
}

/// `audio` from 0.1 s before the first speech the VAD finds to 0.1 s after the last (all of it
/// when it finds none).
fn trim_silence(audio: &[f32]) -> Result<std::borrow::Cow<'_, [f32]>> {
    let segs = crate::vad::detect_speech(audio, 16_000, &crate::vad::VadConfig::default())?;
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return Ok(std::borrow::Cow::Borrowed(audio));
    };
    let at = |t: f64| ((t.max(0.0) * 16_000.0).round() as usize).min(audio.len());
    let (a, b) = (at(first.start - 0.1), at(last.end + 0.1));
    Ok(if b > a { std::borrow::Cow::Owned(audio[a..b].to_vec()) } else { std::borrow::Cow::Borrowed(audio) })
}

impl BuiltFrontend {
    /// Mel bands, or `None` for the waveform front end.
    fn n_mels(&self) -> Option<usize> {
        self.mel.as_ref().map(|(_, n)| *n)
    }

    /// Per-band normalised log-mel features `[n_mels, frames]` (pre-emphasis applied, the
    /// filterbank warped by VTLP factor `vtlp` when given), with rows and frames; an error for
    /// the waveform front end.
    fn log_mel_rows(&self, audio: &[f32], vtlp: Option<f64>) -> Result<(Vec<f32>, usize, usize)> {
        let (mel, _) = self.mel.as_ref().ok_or_else(|| Error::invalid("Frontend", "not a log-mel front end"))?;
        let emphasised;
        let audio = if self.preemphasis > 0.0 {
            emphasised = preemphasize(audio, self.preemphasis);
            &emphasised
        } else {
            audio
        };
        match vtlp {
            Some(alpha) => log_mel_normalised_by(&mel.vtlp(alpha)?, audio, self.global.as_ref()),
            None => log_mel_normalised_by(mel, audio, self.global.as_ref()),
        }
    }

    /// The audio the features are made from: trimmed when the front end says so.
    fn trimmed<'a>(&self, audio: &'a [f32]) -> Result<std::borrow::Cow<'a, [f32]>> {
        if self.trim_silence {
            trim_silence(audio)
        } else {
            Ok(std::borrow::Cow::Borrowed(audio))
        }
    }

    /// The model input of one utterance (see [`Frontend::prepare`]).
    fn prepare(&self, audio: &[f32]) -> Result<(Vec<f32>, usize)> {
        let audio = &*self.trimmed(audio)?;
        if self.mel.is_none() {
            let x = if self.normalize { normalize_audio(audio) } else { audio.to_vec() };
            return Ok((x, audio.len()));
        }
        let (x, rows, frames) = self.log_mel_rows(audio, None)?;
        Ok((transpose(&x, rows, frames), frames))
    }

    /// A batch of one prepared utterance, `[1, frames, F]` or `[1, S]`.
    pub(crate) fn batch_of_one(&self, audio: &[f32]) -> Result<(Tensor, usize)> {
        let (x, frames) = self.prepare(audio)?;
        let t = match self.n_mels() {
            Some(n_mels) => Tensor::from_vec(x, [1, frames, n_mels], &Device::Cpu)?,
            None => Tensor::from_vec(x, [1, frames], &Device::Cpu)?,
        };
        Ok((t, frames))
    }
}

impl RunConfig {
    /// The front end a run's model is fed through: `[features]` for log-mel models, the
    /// checkpoint's preprocessing for wav2vec2.
    pub fn frontend(&self) -> Frontend {
        match &self.model {
            ModelConfig::Wav2Vec2(w) => {
                Frontend::Waveform { normalize: w.preprocessor.as_ref().is_none_or(|p| p.do_normalize) }
            }
            _ => Frontend::LogMel {
                n_mels: self.features.n_mels,
                f_max: self.features.f_max,
                preemphasis: self.features.preemphasis,
                trim_silence: self.features.trim_silence,
                global_cmvn: match self.features.cmvn {
                    crate::config::CmvnKind::Global => self.features.global_cmvn.clone(),
                    crate::config::CmvnKind::Utterance => None,
                },
            },
        }
    }
}

pub(crate) fn input_transform(vocab: Vocab, frontend: &Frontend, aug: Augment) -> Result<Transform> {
    let front = frontend.build()?;
    Ok(Arc::new(move |u: Utterance, g: &mut Generator| -> Result<Item> {
        if u.sample_rate != 16000 {
            return Err(Error::invalid(
                "input_transform",
                format!("{}: sample rate {} (expected 16000; resample first)", u.id, u.sample_rate),
            ));
        }
        let clean = if front.trim_silence { front.trimmed(&u.audio)?.into_owned() } else { u.audio };
        let mut audio = if aug.speeds.is_empty() {
            clean
        } else {
            let f = aug.speeds[(g.next_u64() % aug.speeds.len() as u64) as usize];
            speed(&clean, f)?
        };
        if let Some((lo, hi, prob)) = aug.noise {
            if g.next_f64() < prob {
                let snr = uniform(g, lo, hi);
                audio = crate::perturb::add_white_noise(&audio, snr, g)?;
            }
        }
        if aug.dither > 0.0 {
            for v in &mut audio {
                *v += (aug.dither * g.next_normal()) as f32;
            }
        }
        let target = vocab.encode(&u.transcript.to_lowercase())?;
        let Some(n_mels) = front.n_mels() else {
            let (input, _) = front.prepare(&audio)?;
            return Ok(Item { id: u.id, input, feature_dim: None, target });
        };
        let alpha = aug.vtlp.map(|(lo, hi)| uniform(g, lo, hi));
        let (mut x, rows, frames) = front.log_mel_rows(&audio, alpha)?;
        if let Some(s) = &aug.spec {
            s.apply_slice(&mut x, rows, frames, g)?;
        }
        Ok(Item { id: u.id, input: transpose(&x, rows, frames), feature_dim: Some(n_mels), target })
    }))
}

pub(crate) fn lengths(t: &Tensor) -> Result<Vec<usize>> {
    Ok(t.to_vec::<i64>()?.into_iter().map(|v| v.max(0) as usize).collect())
}

/// One optimizer step of a training loop: backward of the (scaled) loss, unscaling, clipping at
/// `clip_norm` (0: the norm is measured, nothing clipped), the scheduled rate, the GradScaler's
/// step and update, then the schedule's step. Returns the rate used and the gradient norm before
/// clipping.
pub(crate) fn backward_and_step(
    loss: &Var,
    opt: &mut dyn Optimizer,
    sched: &mut dyn LrSchedule,
    scaler: &mut GradScaler,
    clip_norm: f64,
) -> Result<(f64, f64)> {
    scaler.scale(loss)?.backward()?;
    scaler.unscale(opt.params())?;
    let max_norm = if clip_norm > 0.0 { clip_norm } else { f64::INFINITY };
    let grad_norm = clip_grad_norm(opt.params(), max_norm, 2.0, false)?;
    opt.apply_schedule(sched);
    let lr = opt.lr();
    let params = opt.params().to_vec();
    scaler.step(&params, || opt.step())?;
    scaler.update()?;
    sched.step();
    Ok((lr, grad_norm))
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Word error counts over the set.
    pub wer: ErrorCounts,
    /// Character error counts over the set.
    pub cer: ErrorCounts,
    /// Every `(reference, hypothesis)` pair, in data-set order.
    pub pairs: Vec<(String, String)>,
}

/// Log-probabilities `[B, T', C]` of a batch and their lengths, without autograd.
/// The batch runs on the model's device; the log-probabilities come back to the host, where
/// the decoders run.
pub fn batch_log_probs(model: &AcousticModel, inputs: &Tensor, in_lens: &[usize]) -> Result<(Tensor, Vec<usize>)> {
    let device = model.parameters().first().map(|p| *p.tensor().device()).unwrap_or(Device::Cpu);
    let x = inputs.to_device(&device)?;
    let logits = no_grad(|| model.forward(&Var::constant(x), in_lens))?;
    let lp = logits.tensor().log_softmax(-1)?.to_device(&Device::Cpu)?;
    Ok((lp, model.output_lengths(in_lens)))
}

/// Decodes a data set with `decode` (log-probabilities `[B, T', C]`, output lengths → one
/// label sequence per utterance, blank-free) and scores it, feeding the model through its
/// [`Frontend`]. Leaves the model in eval mode.
pub fn evaluate_with(
    model: &AcousticModel,
    frontend: &Frontend,
    dataset: Arc<dyn Dataset>,
    vocab: &Vocab,
    batch_size: usize,
    mut decode: impl FnMut(&Tensor, &[usize]) -> Result<Vec<Vec<usize>>>,
) -> Result<Evaluation> {
    model.eval();
    let transform = input_transform(vocab.clone(), frontend, Augment::default())?;
    let loader = DataLoader::new(
        dataset,
        transform,
        LoaderConfig { batch_size, order: Order::Sequential, num_workers: 1, ..LoaderConfig::default() },
    )?;
    let mut pairs = Vec::new();
    let result = (|| {
        for batch in loader.epoch(0)? {
            let batch = batch?;
            let in_lens = lengths(&batch.input_lengths)?;
            let (lp, out_lens) = batch_log_probs(model, &batch.inputs, &in_lens)?;
            let hyps = decode(&lp, &out_lens)?;
            let tl = lengths(&batch.target_lengths)?;
            let targets = batch.targets.to_vec::<i64>()?;
            let s = batch.targets.dims()[1];
            for (i, h) in hyps.iter().enumerate() {
                let reference = vocab.decode(&targets[i * s..i * s + tl[i]])?;
                let hyp = vocab.decode(&h.iter().map(|&c| c as i64).collect::<Vec<_>>())?;
                pairs.push((reference, hyp));
            }
        }
        Ok(())
    })();
    result?;
    let (w, c) = corpus_error_rates(pairs.iter().map(|(r, h)| (r.as_str(), h.as_str())));
    Ok(Evaluation { wer: w, cer: c, pairs })
}

/// Greedy-decodes a data set and scores it. Leaves the model in eval mode.
pub fn evaluate(
    model: &AcousticModel,
    frontend: &Frontend,
    dataset: Arc<dyn Dataset>,
    vocab: &Vocab,
    batch_size: usize,
) -> Result<Evaluation> {
    let blank = vocab.blank() as usize;
    evaluate_with(model, frontend, dataset, vocab, batch_size, |lp, lens| greedy_decode_batch(lp, lens, blank, true))
}

/// Where a run stands, kept in the checkpoint's `extra` field.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Position {
    /// The epoch being trained (from 1).
    epoch: usize,
    /// Batches of it already done.
    batches_done: usize,
    /// Whether the epoch is complete and evaluated.
    epoch_complete: bool,
    /// Running sums of the epoch so far.
    loss_sum: f64,
    n_loss: usize,
    n_utts: usize,
    /// Training seconds of this epoch before the checkpoint.
    epoch_seconds: f64,
    /// Training seconds of the run before the checkpoint.
    elapsed_s: f64,
    best_cer: Option<f64>,
    logs: Vec<EpochLog>,
    /// `(step, loss, lr)` of the run so far, thinned to at most [`HISTORY_MAX`] points, for
    /// `curves.png`.
    #[serde(default)]
    history: Vec<(u64, f32, f32)>,
    /// Keep every this many steps in `history` (doubles when it fills up).
    #[serde(default = "one_u64")]
    history_every: u64,
}

const HISTORY_MAX: usize = 2000;

fn one_u64() -> u64 {
    1
}

impl Position {
    fn record(&mut self, step: u64, loss: f64, lr: f64) {
        if self.history_every == 0 {
            self.history_every = 1;
        }
        if !step.is_multiple_of(self.history_every) {
            return;
        }
        self.history.push((step, loss as f32, lr as f32));
        if self.history.len() >= HISTORY_MAX {
            self.history_every *= 2;
            let every = self.history_every;
            self.history.retain(|h| h.0.is_multiple_of(every));
        }
    }

    /// The next epoch's position, carrying the run-level fields over.
    fn next_epoch(&mut self) -> Position {
        Position {
            epoch: self.epoch + 1,
            elapsed_s: self.elapsed_s,
            best_cer: self.best_cer,
            logs: std::mem::take(&mut self.logs),
            history: std::mem::take(&mut self.history),
            history_every: self.history_every,
            ..Position::default()
        }
    }
}

/// Draws `curves.png`: the training loss per step (thinned) and per epoch, the dev error rates
/// per epoch, and the learning rate.
pub fn plot_training_curves(path: &Path, history: &[(u64, f32, f32)], logs: &[EpochLog]) -> Result<()> {
    let loss: Vec<(f64, f64)> = history.iter().map(|&(s, l, _)| (s as f64, l as f64)).collect();
    let lr: Vec<(f64, f64)> = history.iter().map(|&(s, _, r)| (s as f64, r as f64)).collect();
    let epoch_loss: Vec<(f64, f64)> = logs.iter().map(|l| (l.step as f64, l.train_loss)).collect();
    let cer: Vec<(f64, f64)> = logs.iter().map(|l| (l.step as f64, l.dev_cer)).collect();
    let wer: Vec<(f64, f64)> = logs.iter().map(|l| (l.step as f64, l.dev_wer)).collect();
    let mut loss_chart = Chart::new("training loss (CTC)")
        .labels("step", "loss")
        .with_series(Series::new("per step", loss))
        .with_series(Series::new("epoch mean", epoch_loss));
    loss_chart.log_y = true;
    let mut err = Chart::new("dev error rates (greedy)")
        .labels("step", "error rate")
        .with_series(Series::new("CER", cer))
        .with_series(Series::new("WER", wer));
    err.percent_y = true;
    let top = logs.iter().map(|l| l.dev_cer.max(l.dev_wer)).fold(0.05, f64::max);
    err.y_range = Some((0.0, top * 1.05));
    let mut lr_chart = Chart::new("learning rate").labels("step", "lr").with_series(Series::new("lr", lr));
    lr_chart.log_y = true;
    plot_figure(path, &[loss_chart, err, lr_chart], 3)
}

/// The output characters of a run, as written to `vocab.json`.
#[derive(Serialize, Deserialize)]
struct VocabFile {
    blank: usize,
    chars: String,
}

/// Writes `vocab.json` into a run directory.
pub fn save_vocab(run_dir: &Path, vocab: &Vocab) -> Result<()> {
    let v = VocabFile { blank: 0, chars: vocab.chars().iter().collect() };
    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::invalid("save_vocab", e.to_string()))?;
    write_atomic(run_dir.join("vocab.json"), text.as_bytes())
}

/// Reads `vocab.json` from a run directory.
pub fn load_vocab(run_dir: &Path) -> Result<Vocab> {
    const OP: &str = "load_vocab";
    let path = run_dir.join("vocab.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(OP, &path, e))?;
    let v: VocabFile = serde_json::from_str(&text).map_err(|e| Error::io(OP, &path, format!("corrupt: {e}")))?;
    if v.blank != 0 {
        return Err(Error::io(OP, &path, format!("blank index {} (stapes vocabularies put it at 0)", v.blank)));
    }
    Vocab::new(&v.chars).map_err(|e| Error::io(OP, &path, e.to_string()))
}

/// A trained run loaded back: configuration, vocabulary and model.
pub struct LoadedRun {
    /// The run's configuration.
    pub config: RunConfig,
    /// Its output characters.
    pub vocab: Vocab,
    /// The model, in eval mode.
    pub model: AcousticModel,
}

impl LoadedRun {
    /// The front end its model was trained with.
    pub fn frontend(&self) -> Frontend {
        self.config.frontend()
    }
}

/// Loads `config.toml`, `vocab.json` and the best model (or, failing that, the last
/// checkpoint's) from a run directory.
pub fn load_run(run_dir: &Path) -> Result<LoadedRun> {
    const OP: &str = "load_run";
    if !run_dir.is_dir() {
        return Err(Error::io(OP, run_dir, "not a directory (expected a run directory from `stapes train`)"));
    }
    let config = RunConfig::from_toml_file(run_dir.join("config.toml"))?;
    let vocab = load_vocab(run_dir)?;
    if config.model.vocab_size() != vocab.len() {
        return Err(Error::io(
            OP,
            run_dir,
            format!("config.toml says {} outputs, vocab.json has {}", config.model.vocab_size(), vocab.len()),
        ));
    }
    let model = AcousticModel::new(&config.model)?;
    let best = run_dir.join("best_model.safetensors");
    if config.quantization.is_some() {
        // a run of `stapes quantize`: int8 weights and scales beside the float tensors
        let f = stapes_nn::checkpoint::load_safetensors(&best)?;
        stapes_nn::quantized::load_quantized_state_dict(&model, &f.tensors)
            .map_err(|e| Error::io(OP, &best, e.to_string()))?;
    } else if best.is_file() {
        stapes_nn::checkpoint::load_module(&best, &model, true)?;
    } else {
        let ck = Checkpoint::load(run_dir.join("checkpoint.safetensors"))?;
        model.load_state_dict(&ck.model, true)?;
    }
    model.eval();
    Ok(LoadedRun { config, vocab, model })
}

/// `stapes quantize`: the run `run_dir` with its Linear, LSTM and GRU layers dynamically quantized
/// to int8 ([`stapes_nn::quantized::quantize_dynamic`]), written as a new run directory
/// `out_dir` that `load_run` (and `stapes eval`/`transcribe`) use as any other:
/// `config.toml` with a `[quantization]` table, `vocab.json`, `run.json` when the run has one,
/// and `best_model.safetensors` holding `<weight>_int8` (`I8`) and `<weight>_scale` (`F32`)
/// for each quantized weight and the float tensors of everything else. Inference only: no
/// training checkpoint is written.
///
/// With `from_qat`, the run must have trained with quantization-aware training (`[qat]`), and
/// its scheme replaces `scheme`.
///
/// # Errors
/// If the run is quantized already, has no quantizable layers, is not a QAT run with
/// `from_qat`, `out_dir` is the run itself or a non-empty directory, or a file cannot be read or
/// written.
pub fn quantize_run(
    run_dir: &Path,
    out_dir: &Path,
    scheme: stapes_nn::quantized::QScheme,
    from_qat: bool,
) -> Result<stapes_nn::quantized::QuantizeReport> {
    const OP: &str = "quantize_run";
    let loaded = load_run(run_dir)?;
    if loaded.config.quantization.is_some() {
        return Err(Error::io(OP, run_dir, "the run is quantized already (quantize its float run instead)"));
    }
    if out_dir.exists() {
        let same = std::fs::canonicalize(out_dir).ok() == std::fs::canonicalize(run_dir).ok();
        let empty = std::fs::read_dir(out_dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if same || !empty {
            return Err(Error::io(OP, out_dir, "exists and is not empty (give a new directory for the quantized run)"));
        }
    }
    let scheme = match (from_qat, loaded.config.qat) {
        (true, Some(fq)) => fq.scheme,
        (true, None) => {
            return Err(Error::io(
                OP,
                run_dir,
                "--from-qat: the run did not train with quantization-aware training ([qat])",
            ))
        }
        (false, _) => scheme,
    };
    let report = stapes_nn::quantized::quantize_dynamic(&loaded.model, scheme)
        .map_err(|e| Error::invalid(OP, format!("{}: {e}", run_dir.display())))?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(OP, out_dir, e))?;
    let mut cfg = loaded.config.clone();
    cfg.quantization = Some(crate::config::QuantizationConfig { scheme });
    cfg.qat = None;
    cfg.distillation = None;
    let state = stapes_nn::quantized::quantized_state_dict(&loaded.model)?;
    let meta = std::collections::HashMap::from([
        ("quantization".to_string(), format!("{scheme:?}")),
        ("source_run".to_string(), run_dir.display().to_string()),
    ]);
    stapes_nn::checkpoint::save_safetensors(out_dir.join("best_model.safetensors"), &state, Some(meta))?;
    save_vocab(out_dir, &loaded.vocab)?;
    let run_json = run_dir.join("run.json");
    if run_json.is_file() {
        let bytes = std::fs::read(&run_json).map_err(|e| Error::io(OP, &run_json, e))?;
        write_atomic(out_dir.join("run.json"), &bytes)?;
    }
    // config.toml last: a directory without it is not a run
    write_atomic(out_dir.join("config.toml"), cfg.to_toml_string()?.as_bytes())?;
    Ok(report)
}

/// Trains the model `cfg` describes with CTC on `train`, evaluating on `dev` after every epoch,
/// and writes the run directory (see the module docs). `observer` sees every [`TrainEvent`].
///
/// The model's `n_features` and `vocab_size` are set from `cfg.features.n_mels` and `vocab`.
/// With [`TrainOptions::resume`], the configuration and vocabulary must be the run's own
/// (the caller reads them from the run directory) and training continues from its checkpoint.
pub fn train_ctc(
    cfg: &RunConfig,
    train: Arc<dyn Dataset>,
    dev: Arc<dyn Dataset>,
    vocab: &Vocab,
    run_dir: &Path,
    opts: &TrainOptions,
    mut observer: impl FnMut(&TrainEvent),
) -> Result<TrainReport> {
    const OP: &str = "train_ctc";
    if cfg.quantization.is_some() {
        return Err(Error::invalid(
            OP,
            "the configuration is a quantized run's (`[quantization]`): quantized runs are for inference; train \
             the float run",
        ));
    }
    let mut cfg = cfg.clone();
    cfg.model.set_io(cfg.features.n_mels, vocab.len())?;
    cfg.validate()?;
    if train.is_empty() || dev.is_empty() {
        return Err(Error::invalid(
            OP,
            format!("needs training and dev utterances, got {} and {}", train.len(), dev.len()),
        ));
    }
    let ck_path = run_dir.join("checkpoint.safetensors");
    let resume_from = if opts.resume {
        if !ck_path.is_file() {
            return Err(Error::io(OP, &ck_path, "nothing to resume from: no checkpoint in the run directory"));
        }
        Some(Checkpoint::load(&ck_path)?)
    } else {
        None
    };
    if cfg.features.cmvn == crate::config::CmvnKind::Global && cfg.features.global_cmvn.is_none() {
        let t0 = Instant::now();
        let probe = RunConfig {
            features: crate::config::FeatureConfig { cmvn: crate::config::CmvnKind::Utterance, ..cfg.features.clone() },
            ..cfg.clone()
        };
        cfg.features.global_cmvn = Some(global_cmvn_stats(&probe.frontend(), train.as_ref())?);
        observer(&TrainEvent::Message(format!(
            "global CMVN: statistics of {} training utterances in {:.1}s",
            train.len(),
            t0.elapsed().as_secs_f64()
        )));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(OP, run_dir, e))?;
    write_atomic(run_dir.join("config.toml"), cfg.to_toml_string()?.as_bytes())?;
    save_vocab(run_dir, vocab)?;

    let tc = cfg.training.clone();
    stapes_tensor::manual_seed(tc.seed);
    // a resumed run takes every weight from its checkpoint
    let model =
        if resume_from.is_some() { AcousticModel::new(&cfg.model)? } else { AcousticModel::for_training(&cfg.model)? };
    if let (Some(init), None) = (&opts.init_from, &resume_from) {
        let src = load_run(init)?;
        if src.config.quantization.is_some() {
            return Err(Error::io(
                OP,
                init,
                "--init-from: a quantized run holds int8 weights; start from its float run",
            ));
        }
        model.load_state_dict(&src.model.state_dict(), true).map_err(|e| {
            Error::invalid(
                OP,
                format!("--init-from {}: its model does not fit the configured one: {e}", init.display()),
            )
        })?;
        observer(&TrainEvent::Message(format!("starting from the weights of {}", init.display())));
    }
    if let Some(fq) = cfg.qat {
        let n = stapes_nn::qat::prepare_qat(&model, fq)?;
        observer(&TrainEvent::Message(format!(
            "quantization-aware training: {n} layers fake-quantize their weights ({:?}){}",
            fq.scheme,
            if fq.activations { " and inputs" } else { "" }
        )));
    }
    let device = opts.device;
    model.to_device(&device)?;
    let mut sched = cfg.schedule.build()?;
    let mut opt = cfg.optimizer.build(model.trainable_parameters(), sched.lr())?;
    let mut scaler =
        GradScaler::new(GradScalerConfig { enabled: tc.precision == Precision::F16, ..GradScalerConfig::default() })?;
    let mut step = 0u64;
    let mut pos = Position { epoch: 1, history_every: 1, ..Position::default() };
    if let Some(ck) = &resume_from {
        ck.restore(&ck_path, &model, opt.as_mut(), sched.as_mut(), &mut scaler)?;
        step = ck.step;
        pos = serde_json::from_value(ck.extra.clone())
            .map_err(|e| Error::io(OP, &ck_path, format!("corrupt position: {e}")))?;
        if pos.epoch_complete {
            pos = pos.next_epoch();
        }
    }
    let batches_per_epoch = train.len().div_ceil(tc.batch_size.max(1));
    let total_steps = batches_per_epoch * tc.epochs;
    if let Some(w) = cfg.schedule.warmup_steps().filter(|&w| w > total_steps) {
        observer(&TrainEvent::Message(format!(
            "warning: the schedule takes {w} steps to reach its peak learning rate, but the run has {total_steps} \
             ({} epochs of {batches_per_epoch} batches): the rate never gets there. Shorten the warm-up (for \
             instance to {}) or train longer",
            tc.epochs,
            (total_steps / 4).max(1)
        )));
    }
    observer(&TrainEvent::Start {
        model: cfg.model.name(),
        parameters: model.num_parameters(),
        train_utterances: train.len(),
        dev_utterances: dev.len(),
        resumed: resume_from.as_ref().map(|_| (pos.epoch, pos.batches_done, step)),
    });
    let lc = cfg.logging.clone();
    let mut tb = if lc.tensorboard { Some(SummaryWriter::new(&run_dir.join("tensorboard"))?) } else { None };
    if let Some(w) = tb.as_mut() {
        if resume_from.is_none() {
            w.add_text("config", &format!("```toml\n{}\n```", cfg.to_toml_string()?), 0)?;
        }
    }
    let aug = &cfg.augment;
    let frontend = cfg.frontend();
    let log_mel = matches!(frontend, Frontend::LogMel { .. });
    if !log_mel && aug.time_masks + aug.freq_masks > 0 {
        observer(&TrainEvent::Message(
            "[augment]'s SpecAugment masks apply to log-mel features: wav2vec2 masks its own encoder \
             features (mask_time_prob, mask_time_length in [model])"
                .into(),
        ));
    }
    let augment = Augment {
        speeds: if aug.speed_factors.iter().all(|&f| f == 1.0) { vec![] } else { aug.speed_factors.clone() },
        spec: (log_mel && aug.time_masks + aug.freq_masks > 0).then(|| SpecAugment {
            zero_masking: true,
            p: aug.mask_p,
            ..SpecAugment::new(aug.time_masks, aug.time_mask_param, aug.freq_masks, aug.freq_mask_param)
        }),
        vtlp: (log_mel && aug.vtlp.len() == 2).then(|| (aug.vtlp[0], aug.vtlp[1])),
        noise: (aug.noise_snr_db.len() == 2 && aug.noise_prob > 0.0)
            .then(|| (aug.noise_snr_db[0], aug.noise_snr_db[1], aug.noise_prob)),
        dither: if log_mel { cfg.features.dither } else { 0.0 },
    };
    let train_set = train.clone();
    let loader = DataLoader::new(
        train,
        input_transform(vocab.clone(), &frontend, augment)?,
        LoaderConfig {
            batch_size: tc.batch_size,
            order: Order::Bucketed { window_batches: 8 },
            seed: tc.seed,
            num_workers: tc.workers,
            prefetch: 4,
            drop_last: false,
        },
    )?;
    let distiller = match &cfg.distillation {
        Some(d) => Some(crate::distill::Distiller::new(
            d,
            &model,
            &frontend,
            vocab,
            &train_set,
            &cfg.augment,
            run_dir,
            device,
            tc.batch_size,
            &mut |m| observer(&TrainEvent::Message(m)),
        )?),
        None => None,
    };
    let ctc_opts = CtcLossOptions {
        blank: vocab.blank() as usize,
        reduction: Reduction::Mean,
        zero_infinity: true,
        batch_first: true,
    };
    let amp_dtype = tc.precision.autocast_dtype();
    let session_start = Instant::now();
    let max_seconds = opts.max_seconds.or(tc.max_seconds).unwrap_or(f64::INFINITY);
    let mut examples = Vec::new();
    let save =
        |pos: &Position, step: u64, opt: &dyn Optimizer, sched: &dyn LrSchedule, scaler: &GradScaler| -> Result<()> {
            let extra = serde_json::to_value(pos).map_err(|e| Error::invalid(OP, e.to_string()))?;
            Checkpoint::capture(&model, opt, sched, scaler, step, extra)?.save(&ck_path)
        };
    while pos.epoch <= tc.epochs {
        let epoch = pos.epoch;
        let t_epoch = Instant::now();
        let seconds_before = pos.epoch_seconds;
        let batches = loader.epoch_from(epoch as u64, pos.batches_done)?;
        let n_batches = batches.num_batches();
        observer(&TrainEvent::EpochStart { epoch, epochs: tc.epochs, batches: n_batches, done: pos.batches_done });
        for batch in batches {
            let batch = batch?;
            let in_lens = lengths(&batch.input_lengths)?;
            let tgt_lens = lengths(&batch.target_lengths)?;
            opt.zero_grad();
            // the loss, and with a teacher its two terms (distillation, CTC)
            let forward = || -> Result<(Var, Option<(Var, Var)>)> {
                let logits = model.forward(&Var::constant(batch.inputs.to_device(&device)?), &in_lens)?;
                let out_lens = model.output_lengths(&in_lens);
                let ctc = ctc_loss_from_logits(&logits, &batch.targets, &out_lens, &tgt_lens, &ctc_opts)?;
                let Some(d) = &distiller else { return Ok((ctc, None)) };
                let kd = d.term(&logits, &batch, &in_lens, &out_lens)?;
                let alpha = d.config().alpha;
                let ctc32 = ctc.to_dtype(kd.tensor().dtype())?;
                let loss = kd.mul_scalar(alpha)?.add(&ctc32.mul_scalar(1.0 - alpha)?)?;
                Ok((loss, Some((kd, ctc32))))
            };
            let (loss, terms) = match amp_dtype {
                Some(dt) => autocast(dt, forward)??,
                None => forward()?,
            };
            let terms = match terms {
                Some((kd, ctc)) => Some((kd.tensor().to_scalar_f64()?, ctc.tensor().to_scalar_f64()?)),
                None => None,
            };
            let l = loss.tensor().to_scalar_f64()?;
            if !l.is_finite() && !scaler.is_enabled() {
                return Err(Error::invalid(
                    OP,
                    format!("the loss became {l} at step {step} (epoch {epoch}, batch {})", pos.batches_done + 1),
                ));
            }
            let (lr, grad_norm) = backward_and_step(&loss, opt.as_mut(), sched.as_mut(), &mut scaler, tc.clip_norm)?;
            step += 1;
            pos.batches_done += 1;
            if l.is_finite() {
                pos.loss_sum += l;
                pos.n_loss += 1;
            }
            pos.n_utts += in_lens.len();
            pos.record(step, l, lr);
            let secs = seconds_before + t_epoch.elapsed().as_secs_f64();
            if let Some(w) = tb.as_mut() {
                if step.is_multiple_of(lc.scalars_every_steps.max(1) as u64) {
                    let st = step as i64;
                    w.add_scalar("train/loss", l, st)?;
                    w.add_scalar("train/lr", lr, st)?;
                    w.add_scalar("train/grad_norm", grad_norm, st)?;
                    if let Some((kd, ctc)) = terms {
                        w.add_scalar("train/kd_loss", kd, st)?;
                        w.add_scalar("train/ctc_loss", ctc, st)?;
                    }
                    w.add_scalar("train/utterances_per_s", pos.n_utts as f64 / secs.max(1e-9), st)?;
                    if scaler.is_enabled() {
                        w.add_scalar("train/loss_scale", scaler.get_scale(), st)?;
                    }
                }
            }
            observer(&TrainEvent::Step {
                epoch,
                batch: pos.batches_done,
                batches: n_batches,
                step,
                loss: l,
                lr,
                grad_norm,
                utterances_per_s: pos.n_utts as f64 / secs.max(1e-9),
                loss_scale: scaler.is_enabled().then(|| scaler.get_scale()),
            });
            if tc.checkpoint_every_steps > 0 && step.is_multiple_of(tc.checkpoint_every_steps as u64) {
                let p = Position {
                    epoch_seconds: secs,
                    elapsed_s: pos.elapsed_s + t_epoch.elapsed().as_secs_f64(),
                    ..pos.clone()
                };
                save(&p, step, opt.as_ref(), sched.as_ref(), &scaler)?;
                observer(&TrainEvent::Checkpoint { step, epoch_end: false });
            }
        }
        let epoch_secs = seconds_before + t_epoch.elapsed().as_secs_f64();
        pos.elapsed_s += t_epoch.elapsed().as_secs_f64();
        if let Some(w) = tb.as_mut() {
            if lc.histograms_every_epochs > 0 && epoch.is_multiple_of(lc.histograms_every_epochs) {
                for (name, p) in model.named_parameters() {
                    w.add_histogram_tensor(&format!("weights/{name}"), &p.tensor(), step as i64)?;
                    if let Some(g) = p.grad() {
                        w.add_histogram_tensor(&format!("grads/{name}"), &g, step as i64)?;
                    }
                }
            }
        }
        observer(&TrainEvent::Evaluating { epoch });
        let ev = evaluate(&model, &frontend, dev.clone(), vocab, tc.batch_size)?;
        model.train(true);
        examples = ev.pairs.iter().take(5).cloned().collect();
        let log = EpochLog {
            epoch,
            step,
            train_loss: pos.loss_sum / pos.n_loss.max(1) as f64,
            dev_cer: ev.cer.rate(),
            dev_wer: ev.wer.rate(),
            lr: sched.lr(),
            elapsed_s: pos.elapsed_s,
            utterances_per_s: pos.n_utts as f64 / epoch_secs.max(1e-9),
        };
        if pos.best_cer.is_none_or(|b| log.dev_cer < b) {
            pos.best_cer = Some(log.dev_cer);
            save_module(run_dir.join("best_model.safetensors"), &model)?;
        }
        pos.logs.push(log.clone());
        pos.epoch_complete = true;
        pos.epoch_seconds = epoch_secs;
        save(&pos, step, opt.as_ref(), sched.as_ref(), &scaler)?;
        observer(&TrainEvent::Checkpoint { step, epoch_end: true });
        let lines: String = pos.logs.iter().map(|l| serde_json::to_string(l).unwrap_or_default() + "\n").collect();
        write_atomic(run_dir.join("log.jsonl"), lines.as_bytes())?;
        if let Some(w) = tb.as_mut() {
            let st = step as i64;
            w.add_scalar("dev/cer", log.dev_cer, st)?;
            w.add_scalar("dev/wer", log.dev_wer, st)?;
            w.add_scalar("train/epoch_loss", log.train_loss, st)?;
            w.flush()?;
        }
        if lc.plots {
            plot_training_curves(&run_dir.join("curves.png"), &pos.history, &pos.logs)?;
        }
        observer(&TrainEvent::EpochEnd(log));
        pos = pos.next_epoch();
        if session_start.elapsed().as_secs_f64() >= max_seconds && pos.epoch <= tc.epochs {
            observer(&TrainEvent::Message(format!(
                "stopping after epoch {epoch}: the time budget of {max_seconds:.0}s is spent"
            )));
            break;
        }
    }
    Ok(TrainReport {
        epochs: pos.logs,
        best_cer: pos.best_cer.unwrap_or(f64::INFINITY),
        examples,
        run_dir: run_dir.to_path_buf(),
        model,
        config: cfg,
    })
}

/// Per-band mean and standard deviation of the log-mel features of `data` (clean audio, the
/// front end's pre-emphasis and trimming applied), for `[features] cmvn = "global"`.
///
/// # Errors
/// For a waveform front end, an empty data set, or an utterance that cannot be read.
pub fn global_cmvn_stats(frontend: &Frontend, data: &dyn Dataset) -> Result<crate::config::GlobalCmvn> {
    use rayon::prelude::*;
    const OP: &str = "global_cmvn_stats";
    let Frontend::LogMel { n_mels, f_max, preemphasis, trim_silence, .. } = frontend else {
        return Err(Error::invalid(OP, "global CMVN applies to log-mel features"));
    };
    if data.is_empty() {
        return Err(Error::invalid(OP, "no utterances to measure"));
    }
    let n = *n_mels;
    // the plain log-mel: "global" statistics of zero mean and unit scale
    let raw = Frontend::LogMel {
        n_mels: n,
        f_max: *f_max,
        preemphasis: *preemphasis,
        trim_silence: *trim_silence,
        global_cmvn: Some(crate::config::GlobalCmvn { mean: vec![0.0; n], std: vec![1.0; n] }),
    }
    .build()?;
    let (sum, sq, frames) = (0..data.len())
        .into_par_iter()
        .map(|i| -> Result<(Vec<f64>, Vec<f64>, usize)> {
            let u = data.get(i)?;
            let audio = raw.trimmed(&u.audio)?;
            let (x, rows, t) = raw.log_mel_rows(&audio, None)?;
            let mut s = vec![0f64; rows];
            let mut q = vec![0f64; rows];
            for r in 0..rows {
                for &v in &x[r * t..(r + 1) * t] {
                    s[r] += f64::from(v);
                    q[r] += f64::from(v) * f64::from(v);
                }
            }
            Ok((s, q, t))
        })
        .try_reduce(
            || (vec![0f64; n], vec![0f64; n], 0usize),
            |a, b| {
                Ok((
                    a.0.iter().zip(&b.0).map(|(x, y)| x + y).collect(),
                    a.1.iter().zip(&b.1).map(|(x, y)| x + y).collect(),
                    a.2 + b.2,
                ))
            },
        )?;
    let t = frames.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / t).collect();
    let std = sq.iter().zip(&mean).map(|(q, m)| (q / t - m * m).max(0.0).sqrt().max(1e-3)).collect();
    Ok(crate::config::GlobalCmvn { mean, std })
}

/// The highest sample rate among the audio files of `entries`, read from their headers (the
/// band a front end can use: [`crate::config::FeatureConfig::f_max`] for recordings below
/// 16 kHz). `None` for no entries.
///
/// # Errors
/// If a file is missing or not audio.
pub fn max_source_rate(entries: &[crate::data::ManifestEntry]) -> Result<Option<u32>> {
    use rayon::prelude::*;
    entries
        .par_iter()
        .map(|e| crate::audio::audio_info(&e.audio).map(|i| Some(i.sample_rate)))
        .try_reduce(|| None, |a, b| Ok(a.max(b)))
}

/// The result of [`find_lr`].
#[derive(Clone, Debug, PartialEq)]
pub struct LrFinder {
    /// `(learning rate, smoothed loss)` per step, in order (the search stops early when the
    /// loss diverges).
    pub points: Vec<(f64, f64)>,
    /// The rate where the smoothed loss falls fastest (Lightning's and fastai's suggestion);
    /// `None` when the search was too short to tell.
    pub suggestion: Option<f64>,
}

/// The learning-rate range test of fastai and Lightning (`trainer.tuner.lr_find`): trains a fresh
/// model of `cfg` for up to `steps` batches of `train` with the rate growing exponentially from
/// `min_lr` to `max_lr` (the schedule is ignored), records the loss smoothed with an exponential
/// average (β 0.98, bias-corrected), and stops once it exceeds four times its best or is not
/// finite. Nothing is written; the model is dropped.
///
/// # Errors
/// For an empty data set, a bad range (`0 < min_lr < max_lr`) or fewer than 2 steps, or what
/// training itself can raise.
pub fn find_lr(
    cfg: &RunConfig,
    train: Arc<dyn Dataset>,
    vocab: &Vocab,
    device: Device,
    min_lr: f64,
    max_lr: f64,
    steps: usize,
) -> Result<LrFinder> {
    const OP: &str = "find_lr";
    if !(min_lr > 0.0 && min_lr < max_lr && max_lr.is_finite()) || steps < 2 {
        return Err(Error::invalid(
            OP,
            format!("needs 0 < min_lr < max_lr and steps >= 2, got {min_lr}, {max_lr}, {steps}"),
        ));
    }
    if train.is_empty() {
        return Err(Error::invalid(OP, "no training utterances"));
    }
    let mut cfg = cfg.clone();
    cfg.model.set_io(cfg.features.n_mels, vocab.len())?;
    cfg.validate()?;
    stapes_tensor::manual_seed(cfg.training.seed);
    let model = AcousticModel::for_training(&cfg.model)?;
    model.to_device(&device)?;
    let mut opt = cfg.optimizer.build(model.trainable_parameters(), min_lr)?;
    let frontend = cfg.frontend();
    let loader = DataLoader::new(
        train,
        input_transform(vocab.clone(), &frontend, Augment::default())?,
        LoaderConfig {
            batch_size: cfg.training.batch_size,
            order: Order::Bucketed { window_batches: 8 },
            seed: cfg.training.seed,
            num_workers: cfg.training.workers,
            prefetch: 4,
            drop_last: false,
        },
    )?;
    let ctc_opts = CtcLossOptions {
        blank: vocab.blank() as usize,
        reduction: Reduction::Mean,
        zero_infinity: true,
        batch_first: true,
    };
    let (mut points, mut avg, mut best) = (Vec::new(), 0.0f64, f64::INFINITY);
    let mut epoch = 0u64;
    'outer: loop {
        for batch in loader.epoch(epoch)? {
            let i = points.len();
            if i >= steps {
                break 'outer;
            }
            let batch = batch?;
            let lr = min_lr * (max_lr / min_lr).powf(i as f64 / (steps - 1) as f64);
            opt.set_lr(lr);
            opt.zero_grad();
            let in_lens = lengths(&batch.input_lengths)?;
            let tgt_lens = lengths(&batch.target_lengths)?;
            let logits = model.forward(&Var::constant(batch.inputs.to_device(&device)?), &in_lens)?;
            let out_lens = model.output_lengths(&in_lens);
            let loss = ctc_loss_from_logits(&logits, &batch.targets, &out_lens, &tgt_lens, &ctc_opts)?;
            let l = loss.tensor().to_scalar_f64()?;
            if !l.is_finite() {
                break 'outer;
            }
            loss.backward()?;
            if cfg.training.clip_norm > 0.0 {
                clip_grad_norm(opt.params(), cfg.training.clip_norm, 2.0, false)?;
            }
            opt.step()?;
            avg = 0.98 * avg + 0.02 * l;
            let smoothed = avg / (1.0 - 0.98f64.powi(i as i32 + 1));
            points.push((lr, smoothed));
            best = best.min(smoothed);
            if smoothed > 4.0 * best {
                break 'outer;
            }
        }
        epoch += 1;
    }
    Ok(LrFinder { suggestion: steepest_descent(&points), points })
}

/// The rate at the most negative slope of the smoothed loss against log rate (central
/// differences), skipping the first tenth of the points, where the average has not settled.
fn steepest_descent(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 5 {
        return None;
    }
    let skip = (points.len() / 10).max(1);
    (skip..points.len() - 1)
        .map(|i| {
            let (l0, l1) = (points[i - 1], points[i + 1]);
            ((l1.1 - l0.1) / (l1.0.ln() - l0.0.ln()), points[i].0)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(slope, _)| *slope < 0.0)
        .map(|(_, lr)| lr)
}

/// A training corpus on disk: a JSONL/CSV manifest file or a LibriSpeech-layout folder,
/// resampled to 16 kHz on load, with a character vocabulary built from its transcripts
/// (lower-cased, blank at 0).
pub struct Corpus {
    /// The utterances.
    pub dataset: ManifestDataset,
    /// Characters of the transcripts.
    pub vocab: Vocab,
}

/// Opens `path` as a manifest (a file ending in `.jsonl`, `.json` or `.csv`) or as a
/// LibriSpeech folder (`*/*/*.trans.txt` next to `.flac` files).
pub fn open_corpus(path: &Path) -> Result<Corpus> {
    let entries = if path.is_dir() {
        LibriSpeech::open(path)?.entries().to_vec()
    } else {
        ManifestDataset::open(path)?.entries().to_vec()
    };
    if entries.is_empty() {
        return Err(Error::io("open_corpus", path, "the corpus has no utterances"));
    }
    let entries: Vec<ManifestEntry> =
        entries.into_iter().map(|e| ManifestEntry { transcript: e.transcript.to_lowercase(), ..e }).collect();
    let vocab = Vocab::from_transcripts(entries.iter().map(|e| e.transcript.as_str()));
    Ok(Corpus { dataset: ManifestDataset::from_entries(entries).with_sample_rate(16000), vocab })
}

/// Splits a corpus into training and held-out parts: every `k`-th utterance (at least one) goes
/// to the held-out part, where `k` is about `1 / fraction`.
pub fn split_corpus(corpus: &ManifestDataset, fraction: f64) -> Result<(ManifestDataset, ManifestDataset)> {
    let entries = corpus.entries();
    if entries.len() < 2 || !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(
            "split_corpus",
            format!("needs at least 2 utterances and a fraction in (0, 1), got {} and {fraction}", entries.len()),
        ));
    }
    let k = ((1.0 / fraction).round() as usize).clamp(2, entries.len());
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (i, e) in entries.iter().enumerate() {
        if i % k == k - 1 {
            dev.push(e.clone());
        } else {
            train.push(e.clone());
        }
    }
    Ok((
        ManifestDataset::from_entries(train).with_sample_rate(16000),
        ManifestDataset::from_entries(dev).with_sample_rate(16000),
    ))
}

/// Splits a corpus by speaker: `n` whole speakers, chosen by a shuffle of the sorted speaker
/// ids seeded with `seed`, go to the held-out part, so that dev accuracy is measured on voices
/// the model never heard (a random utterance split overstates it). Returns the two parts and
/// the held-out speakers. Entries without a speaker, or `n` not below the number of speakers,
/// are errors.
pub fn split_by_speakers(
    corpus: &ManifestDataset,
    n: usize,
    seed: u64,
) -> Result<(ManifestDataset, ManifestDataset, Vec<String>)> {
    const OP: &str = "split_by_speakers";
    let entries = corpus.entries();
    if let Some(e) = entries.iter().find(|e| e.speaker.is_none()) {
        return Err(Error::invalid(
            OP,
            format!("utterance {:?} names no speaker (a `speaker` field, or a LibriSpeech layout)", e.id),
        ));
    }
    let mut speakers: Vec<String> = entries.iter().filter_map(|e| e.speaker.clone()).collect();
    speakers.sort();
    speakers.dedup();
    if n == 0 || n >= speakers.len() {
        return Err(Error::invalid(
            OP,
            format!("cannot hold out {n} of {} speakers (at least 1, and one left to train on)", speakers.len()),
        ));
    }
    let mut g = Generator::new(seed ^ 0x5EED_5EED);
    for i in (1..speakers.len()).rev() {
        let j = (g.next_u64() % (i as u64 + 1)) as usize;
        speakers.swap(i, j);
    }
    let mut held: Vec<String> = speakers[..n].to_vec();
    held.sort();
    let (dev, train): (Vec<ManifestEntry>, Vec<ManifestEntry>) =
        entries.iter().cloned().partition(|e| e.speaker.as_ref().is_some_and(|s| held.contains(s)));
    Ok((
        ManifestDataset::from_entries(train).with_sample_rate(16000),
        ManifestDataset::from_entries(dev).with_sample_rate(16000),
        held,
    ))
}

/// Keeps the entries no longer than `max_s` seconds (entries without a known duration stay).
pub fn filter_by_duration(corpus: ManifestDataset, max_s: Option<f64>) -> ManifestDataset {
    match max_s {
        None => corpus,
        Some(m) => ManifestDataset::from_entries(
            corpus.entries().iter().filter(|e| e.duration.is_none_or(|d| d <= m)).cloned().collect(),
        )
        .with_sample_rate(16000),
    }
}

/// The model configuration of `stapes demo` (`--small` in `stapes train`): a CRDNN with two conv
/// blocks of 16 and 32 channels and a 2-layer BiLSTM of 128, on 40 mels.
pub fn small_crdnn() -> ModelConfig {
    ModelConfig::Crdnn(crate::models::CrdnnConfig {
        n_features: 40,
        conv_channels: vec![16, 32],
        time_pool: vec![2, 1],
        rnn_hidden: 128,
        rnn_layers: 2,
        rnn_dropout: 0.1,
        vocab_size: 0,
    })
}
