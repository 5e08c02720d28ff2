//! Training a CTC recogniser: the loop behind `stapes demo` (and, later, `stapes train`).
//!
//! [`train_ctc`] trains a [`Crdnn`] on any [`Dataset`] with on-the-fly log-mel features
//! (per-utterance mean/variance normalised), CTC over characters, Adam with CyclicLR
//! (triangular2), gradient clipping, greedy-decoding evaluation (CER/WER) on a dev set each
//! epoch, and a run directory holding the configuration, a checkpoint per epoch (atomic), the
//! best model's `state_dict` and a JSON-lines log.

use crate::data::{
    DataLoader, Dataset, Item, LibriSpeech, LoaderConfig, ManifestDataset, ManifestEntry, Order, Transform, Utterance,
    Vocab,
};
use crate::decode::greedy_decode_batch;
use crate::features::{MelSpectrogram, MelSpectrogramConfig, SpectrogramConfig};
use crate::metrics::{corpus_error_rates, ErrorCounts};
use crate::models::{Crdnn, CrdnnConfig};
use serde::{Deserialize, Serialize};
use stapes_autograd::{no_grad, Var};
use stapes_nn::checkpoint::{save_module, write_atomic, Checkpoint};
use stapes_nn::clip::clip_grad_norm;
use stapes_nn::ctc::{ctc_loss_from_logits, CtcLossOptions};
use stapes_nn::loss::Reduction;
use stapes_nn::optim::{Adam, AdamConfig, Optimizer};
use stapes_nn::schedule::{CyclicLR, CyclicLRConfig, CyclicMode, LrSchedule};
use stapes_nn::Module;
use stapes_tensor::{Error, Generator, Result, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Settings of a training run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model.
    pub model: CrdnnConfig,
    /// Mel bands of the features (must equal `model.n_features`).
    pub n_mels: usize,
    /// Utterances per batch.
    pub batch_size: usize,
    /// Passes over the training set (the run may stop earlier on `max_seconds`).
    pub epochs: usize,
    /// Stop after the epoch during which this much wall time has passed.
    pub max_seconds: f64,
    /// CyclicLR's lower and upper learning rates.
    pub base_lr: f64,
    /// CyclicLR's peak learning rate.
    pub max_lr: f64,
    /// CyclicLR's half-cycle in optimizer steps.
    pub step_size_up: usize,
    /// Gradient clipping by global L2 norm.
    pub clip_norm: f64,
    /// Loader worker threads.
    pub workers: usize,
    /// Seed of shuffling, initialisation and dropout.
    pub seed: u64,
}

/// What one epoch measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Dev-set character error rate (greedy decoding).
    pub dev_cer: f64,
    /// Dev-set word error rate.
    pub dev_wer: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Seconds since the start of training.
    pub elapsed_s: f64,
    /// Training utterances per second during this epoch.
    pub utterances_per_s: f64,
}

/// The outcome of [`train_ctc`].
pub struct TrainReport {
    /// Per-epoch logs.
    pub epochs: Vec<EpochLog>,
    /// The best dev CER seen.
    pub best_cer: f64,
    /// A few dev examples `(reference, hypothesis)` from the last evaluation.
    pub examples: Vec<(String, String)>,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The trained model.
    pub model: Crdnn,
}

/// Features for the model: log-mel `[frames, n_mels]`, each band normalised to zero mean and
/// unit variance over the utterance.
pub fn log_mel_features(mel: &MelSpectrogram, audio: &[f32]) -> Result<(Vec<f32>, usize)> {
    let m = mel.forward_slice(audio)?;
    let (rows, frames) = (m.rows, m.frames);
    let mut out = vec![0f32; rows * frames];
    for r in 0..rows {
        let row = &m.data[r * frames..(r + 1) * frames];
        let logs: Vec<f32> = row.iter().map(|&v| (v + 1e-6).ln()).collect();
        let mean = logs.iter().sum::<f32>() / frames.max(1) as f32;
        let var = logs.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / frames.max(1) as f32;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for (t, v) in logs.iter().enumerate() {
            out[t * rows + r] = (v - mean) * inv;
        }
    }
    Ok((out, frames))
}

/// The mel front end used for training: 16 kHz, 25 ms windows (n_fft 400), 10 ms hop.
pub fn mel_frontend(n_mels: usize) -> Result<MelSpectrogram> {
    MelSpectrogram::new(MelSpectrogramConfig {
        sample_rate: 16000,
        spectrogram: SpectrogramConfig { n_fft: 400, hop_length: Some(160), ..SpectrogramConfig::default() },
        n_mels,
        ..MelSpectrogramConfig::default()
    })
}

fn feature_transform(vocab: Vocab, n_mels: usize) -> Result<Transform> {
    let mel = Arc::new(mel_frontend(n_mels)?);
    Ok(Arc::new(move |u: Utterance, _g: &mut Generator| -> Result<Item> {
        if u.sample_rate != 16000 {
            return Err(Error::invalid(
                "feature_transform",
                format!("{}: sample rate {} (expected 16000; resample first)", u.id, u.sample_rate),
            ));
        }
        let (input, _) = log_mel_features(&mel, &u.audio)?;
        let target = vocab.encode(&u.transcript.to_lowercase())?;
        Ok(Item { id: u.id, input, feature_dim: Some(n_mels), target })
    }))
}

fn lengths(t: &Tensor) -> Result<Vec<usize>> {
    Ok(t.to_vec::<i64>()?.into_iter().map(|v| v.max(0) as usize).collect())
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Word error counts over the set.
    pub wer: ErrorCounts,
    /// Character error counts over the set.
    pub cer: ErrorCounts,
    /// The first few `(reference, hypothesis)` pairs.
    pub examples: Vec<(String, String)>,
}

/// Greedy-decodes a data set and scores it.
pub fn evaluate(
    model: &Crdnn,
    dataset: Arc<dyn Dataset>,
    vocab: &Vocab,
    n_mels: usize,
    batch_size: usize,
) -> Result<Evaluation> {
    model.eval();
    let transform = feature_transform(vocab.clone(), n_mels)?;
    let loader = DataLoader::new(
        dataset,
        transform,
        LoaderConfig { batch_size, order: Order::Sequential, num_workers: 1, ..LoaderConfig::default() },
    )?;
    let mut pairs = Vec::new();
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let in_lens = lengths(&batch.input_lengths)?;
        let logits = no_grad(|| model.forward(&Var::constant(batch.inputs.clone()), &in_lens))?;
        let out_lens = model.output_lengths(&in_lens);
        let hyps = greedy_decode_batch(logits.tensor(), &out_lens, vocab.blank() as usize, true)?;
        let tl = lengths(&batch.target_lengths)?;
        let targets = batch.targets.to_vec::<i64>()?;
        let s = batch.targets.dims()[1];
        for (i, h) in hyps.iter().enumerate() {
            let reference = vocab.decode(&targets[i * s..i * s + tl[i]])?;
            let hyp = vocab.decode(&h.iter().map(|&c| c as i64).collect::<Vec<_>>())?;
            pairs.push((reference, hyp));
        }
    }
    model.train(true);
    let (w, c) = corpus_error_rates(pairs.iter().map(|(r, h)| (r.as_str(), h.as_str())));
    pairs.truncate(5);
    Ok(Evaluation { wer: w, cer: c, examples: pairs })
}

/// Trains a CRDNN with CTC on `train`, evaluating on `dev` each epoch; `progress` receives
/// one line per event (batch progress, epoch summaries). Writes `config.json`, `log.jsonl`,
/// `checkpoint.safetensors` (the last epoch, for resuming) and `best_model.safetensors` into
/// `run_dir`.
pub fn train_ctc(
    cfg: &TrainConfig,
    train: Arc<dyn Dataset>,
    dev: Arc<dyn Dataset>,
    vocab: &Vocab,
    run_dir: &Path,
    mut progress: impl FnMut(&str),
) -> Result<TrainReport> {
    const OP: &str = "train_ctc";
    if cfg.n_mels != cfg.model.n_features || cfg.model.vocab_size != vocab.len() {
        return Err(Error::invalid(
            OP,
            format!(
                "n_mels {} vs model features {}, vocab {} vs model outputs {}",
                cfg.n_mels,
                cfg.model.n_features,
                vocab.len(),
                cfg.model.vocab_size
            ),
        ));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(OP, run_dir, e))?;
    let cfg_json = serde_json::to_string_pretty(cfg).map_err(|e| Error::invalid(OP, e.to_string()))?;
    write_atomic(run_dir.join("config.json"), cfg_json.as_bytes())?;

    stapes_tensor::manual_seed(cfg.seed);
    let model = Crdnn::new(cfg.model.clone())?;
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: cfg.base_lr, ..AdamConfig::adam() })?;
    progress(&format!("model: CRDNN with {} parameters", model.num_parameters()));
    let mut sched = CyclicLR::new(CyclicLRConfig {
        base_lr: cfg.base_lr,
        max_lr: cfg.max_lr,
        step_size_up: cfg.step_size_up,
        mode: CyclicMode::Triangular2,
        cycle_momentum: false,
        ..CyclicLRConfig::default()
    })
    .map_err(|e| Error::invalid(OP, e.to_string()))?;
    let loader = DataLoader::new(
        train,
        feature_transform(vocab.clone(), cfg.n_mels)?,
        LoaderConfig {
            batch_size: cfg.batch_size,
            order: Order::Bucketed { window_batches: 8 },
            seed: cfg.seed,
            num_workers: cfg.workers,
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
    let start = Instant::now();
    let mut logs: Vec<EpochLog> = Vec::new();
    let mut best_cer = f64::INFINITY;
    let mut examples = Vec::new();
    let mut step = 0u64;
    for epoch in 1..=cfg.epochs {
        let t_epoch = Instant::now();
        let batches = loader.epoch(epoch as u64)?;
        let n_batches = batches.num_batches();
        let (mut loss_sum, mut n_loss, mut n_utts) = (0.0, 0usize, 0usize);
        for (bi, batch) in batches.enumerate() {
            let batch = batch?;
            let in_lens = lengths(&batch.input_lengths)?;
            let tgt_lens = lengths(&batch.target_lengths)?;
            opt.zero_grad();
            let logits = model.forward(&Var::constant(batch.inputs.clone()), &in_lens)?;
            let out_lens = model.output_lengths(&in_lens);
            let loss = ctc_loss_from_logits(&logits, &batch.targets, &out_lens, &tgt_lens, &ctc_opts)?;
            let l = loss.tensor().to_scalar_f64()?;
            if !l.is_finite() {
                return Err(Error::invalid(OP, format!("loss became {l} at step {step}")));
            }
            loss.backward()?;
            let gnorm = clip_grad_norm(opt.params(), cfg.clip_norm, 2.0, false)?;
            opt.apply_schedule(&sched);
            opt.step()?;
            sched.step();
            step += 1;
            loss_sum += l;
            n_loss += 1;
            n_utts += in_lens.len();
            if bi % 10 == 0 || bi + 1 == n_batches {
                let el = start.elapsed().as_secs_f64();
                progress(&format!(
                    "epoch {epoch}/{} batch {}/{n_batches} loss {l:.3} lr {:.2e} grad-norm {gnorm:.2} {:.1} utt/s elapsed {el:.0}s",
                    cfg.epochs,
                    bi + 1,
                    sched.lr(),
                    n_utts as f64 / t_epoch.elapsed().as_secs_f64()
                ));
            }
        }
        let ups = n_utts as f64 / t_epoch.elapsed().as_secs_f64();
        let Evaluation { wer: w, cer: c, examples: ex } =
            evaluate(&model, dev.clone(), vocab, cfg.n_mels, cfg.batch_size)?;
        examples = ex;
        let log = EpochLog {
            epoch,
            train_loss: loss_sum / n_loss.max(1) as f64,
            dev_cer: c.rate(),
            dev_wer: w.rate(),
            lr: sched.lr(),
            elapsed_s: start.elapsed().as_secs_f64(),
            utterances_per_s: ups,
        };
        progress(&format!(
            "epoch {epoch}: train loss {:.3}, dev CER {:.2}% WER {:.2}% ({:.0}s)",
            log.train_loss,
            100.0 * log.dev_cer,
            100.0 * log.dev_wer,
            log.elapsed_s
        ));
        // Checkpoint (for resuming) and the best model, both written atomically.
        let (optimizer_tensors, optimizer) = opt.state_dict()?;
        Checkpoint {
            model: model.state_dict(),
            optimizer_tensors,
            optimizer,
            scheduler: sched.state_dict(),
            scaler: serde_json::Value::Null,
            step,
            rng: Some(stapes_tensor::default_generator_state()),
            extra: serde_json::json!({ "epoch": epoch }),
        }
        .save(run_dir.join("checkpoint.safetensors"))?;
        if log.dev_cer < best_cer {
            best_cer = log.dev_cer;
            save_module(run_dir.join("best_model.safetensors"), &model)?;
        }
        logs.push(log);
        let lines: String = logs.iter().map(|l| serde_json::to_string(l).unwrap_or_default() + "\n").collect();
        write_atomic(run_dir.join("log.jsonl"), lines.as_bytes())?;
        if start.elapsed().as_secs_f64() >= cfg.max_seconds {
            progress(&format!("stopping after epoch {epoch}: the time budget of {:.0}s is spent", cfg.max_seconds));
            break;
        }
    }
    Ok(TrainReport { epochs: logs, best_cer, examples, run_dir: run_dir.to_path_buf(), model })
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
