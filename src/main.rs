//! The `stapes` command.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stapes::nn::Module;
use stapes::speech::audio::write_wav;
use stapes::speech::beam::{beam_search_decode_batch, BeamSearchConfig, NeuralLm};
use stapes::speech::config::RunConfig;
use stapes::speech::data::{Dataset, Vocab};
use stapes::speech::decode::greedy_decode_batch;
use stapes::speech::infer::{transcribe_file, SegmentOptions, TranscriptSegment};
use stapes::speech::lm::NgramLm;
use stapes::speech::lm_train::{load_lm_run, LmEvent, LmRunConfig, LmTrainOptions};
use stapes::speech::metrics::ErrorCounts;
use stapes::speech::models::wav2vec2::CtcVocab;
use stapes::speech::synth::{SynthConfig, SyntheticDigits, DIGITS};
use stapes::speech::train::{
    evaluate_with, filter_by_duration, load_run, open_corpus, small_crdnn, split_by_speakers, split_corpus, train_ctc,
    TrainEvent, TrainOptions,
};
use stapes::tensor::{Device, Result as TResult, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "stapes", version, about = "A GPU tensor engine with autograd and a speech stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How `eval` and `transcribe` decode.
#[derive(clap::Args, Clone, Debug)]
struct DecodeArgs {
    /// Prefix beam search with this beam width (default: greedy decoding; `--lm` implies a
    /// beam of 100).
    #[arg(long)]
    beam: Option<usize>,
    /// A word n-gram language model in ARPA format, fused during beam search.
    #[arg(long)]
    lm: Option<PathBuf>,
    /// LM weight.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Word insertion bonus.
    #[arg(long, default_value_t = 1.5)]
    beta: f64,
    /// A character Transformer LM, the run directory of `stapes lm train`: fused into the beam
    /// search (shallow fusion), or with `--rescore` used to rescore its n-best list. Combines
    /// with `--lm`; implies a beam of 100.
    #[arg(long)]
    nnlm: Option<PathBuf>,
    /// Weight of the Transformer LM's log-probabilities.
    #[arg(long, default_value_t = 0.5)]
    nnlm_weight: f64,
    /// Bonus per word with the Transformer LM.
    #[arg(long, default_value_t = 1.0)]
    nnlm_bonus: f64,
    /// Rescore the beam's n-best hypotheses with `--nnlm` instead of fusing it into the search.
    #[arg(long, requires = "nnlm")]
    rescore: bool,
    /// Where the acoustic model runs: `cpu`, `cuda`, `cuda:N` or `auto` (decoding is on the CPU).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
}

type DecodeFn = Box<dyn FnMut(&Tensor, &[usize]) -> TResult<Vec<Vec<usize>>>>;

impl DecodeArgs {
    /// The beam-search decoder for a `--model` checkpoint's vocabulary, when `--beam` or `--lm`
    /// asks for one (`None`: greedy).
    fn build_for_checkpoint(&self, vocab: &CtcVocab) -> anyhow::Result<Option<(DecodeFn, String)>> {
        if self.beam.is_none() && self.lm.is_none() && self.nnlm.is_none() {
            return Ok(None);
        }
        let (chars, _) = vocab.char_vocab()?;
        Ok(Some(self.build(&chars)?))
    }
    /// The decoder, and its name for the report.
    fn build(&self, vocab: &Vocab) -> anyhow::Result<(DecodeFn, String)> {
        let blank = vocab.blank() as usize;
        if self.beam.is_none() && self.lm.is_none() && self.nnlm.is_none() {
            return Ok((Box::new(move |lp, l| greedy_decode_batch(lp, l, blank, true)), "greedy".into()));
        }
        let nnlm = match &self.nnlm {
            Some(dir) => {
                let run = load_lm_run(dir).with_context(|| format!("loading the LM run {}", dir.display()))?;
                let n = NeuralLm {
                    model: Arc::new(run.model),
                    tokenizer: Arc::new(run.tokenizer),
                    weight: self.nnlm_weight,
                    word_bonus: self.nnlm_bonus,
                };
                n.class_ids(vocab)?; // refuse an LM that cannot spell the model's characters now
                Some(Arc::new(n))
            }
            None => None,
        };
        let lm = match &self.lm {
            Some(p) => Some(Arc::new(NgramLm::from_arpa_file(p).with_context(|| format!("loading {}", p.display()))?)),
            None => None,
        };
        let cfg = BeamSearchConfig {
            beam_width: self.beam.unwrap_or(100),
            alpha: self.alpha,
            beta: self.beta,
            lm,
            nnlm: if self.rescore { None } else { nnlm.clone() },
            ..BeamSearchConfig::default()
        };
        cfg.validate()?;
        let mut name = match &self.lm {
            Some(p) => {
                format!("beam {} with LM {} (alpha {}, beta {})", cfg.beam_width, p.display(), self.alpha, self.beta)
            }
            None => format!("beam {}", cfg.beam_width),
        };
        if let Some(p) = &self.nnlm {
            let how = if self.rescore { "rescoring the n-best" } else { "fused" };
            name += &format!(
                ", Transformer LM {} {how} (weight {}, word bonus {})",
                p.display(),
                self.nnlm_weight,
                self.nnlm_bonus
            );
        }
        let rescorer = if self.rescore { nnlm } else { None };
        let vocab = vocab.clone();
        Ok((
            Box::new(move |lp, l| {
                let mut nbest = beam_search_decode_batch(lp, l, true, &vocab, &cfg)?;
                if let Some(r) = &rescorer {
                    for n in &mut nbest {
                        r.rescore(n)?;
                    }
                }
                Ok(nbest.into_iter().map(|n| n.into_iter().next().map(|h| h.tokens).unwrap_or_default()).collect())
            }),
            name,
        ))
    }
}

#[derive(Subcommand)]
enum LmCommand {
    /// Train a causal Transformer LM on text files (one sentence per line, streamed): a
    /// character tokenizer, packed blocks, AdamW with the Noam schedule by default, held-out
    /// perplexity each epoch, a run directory with `--resume`.
    Train {
        /// Text files.
        #[arg(long, required = true, num_args = 1..)]
        text: Vec<PathBuf>,
        /// A TOML configuration (`[model]`, `[tokenizer]`, `[training]`, `[optimizer]`,
        /// `[schedule]`, `[logging]`; see `stapes_speech::lm_train`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The run directory.
        #[arg(long)]
        run_dir: PathBuf,
        /// Continue the run in `--run-dir` from its checkpoint (with its own config.toml).
        #[arg(long)]
        resume: bool,
        /// Override the number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Where it trains: `cpu`, `cuda`, `cuda:N`, `auto`.
        #[arg(long, default_value = "cpu", value_parser = parse_device)]
        device: Device,
    },
    /// The perplexity of a trained LM on text files (every line).
    Eval {
        /// The run directory of `stapes lm train`.
        #[arg(long)]
        run: PathBuf,
        /// Text files.
        #[arg(long, required = true, num_args = 1..)]
        text: Vec<PathBuf>,
    },
    /// Generate text with a trained LM (the KV cache: no recomputation of the prefix).
    Sample {
        /// The run directory of `stapes lm train`.
        #[arg(long)]
        run: PathBuf,
        /// The start of the text.
        #[arg(long, default_value = "")]
        prompt: String,
        /// Most tokens generated per sample.
        #[arg(long, default_value_t = 100)]
        max_tokens: usize,
        /// Sampling temperature (0: greedy).
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Samples.
        #[arg(long, default_value_t = 1)]
        n: usize,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Train a small CRDNN speech recogniser with CTC on the built-in synthetic digits corpus,
    /// evaluate it on held-out synthetic speakers and transcribe a few examples.
    Demo {
        /// Where the run directory goes (created; default `runs/demo-<unix time>`).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Training utterances.
        #[arg(long, default_value_t = 2400)]
        train_utterances: usize,
        /// Held-out utterances (other speakers: a different corpus seed).
        #[arg(long, default_value_t = 200)]
        dev_utterances: usize,
        /// Maximum epochs.
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        /// Wall-time budget in seconds: training stops after the epoch that exceeds it.
        #[arg(long, default_value_t = 420.0)]
        max_seconds: f64,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train a CTC recogniser (CRDNN, DeepSpeech2, or a fine-tuned wav2vec2 checkpoint
    /// directory; from a TOML configuration) on a JSONL/CSV manifest (audio, text[, duration])
    /// or a LibriSpeech-layout folder; evaluates greedy CER/WER on a dev set after every epoch.
    /// `--resume` continues an interrupted run.
    Train(TrainArgs),
    /// Train a student with knowledge distillation from a teacher (a run of `stapes train` or
    /// a Hugging Face wav2vec2 CTC directory): the loss is `alpha · T² · KL(teacher ‖ student)`
    /// on tempered softmaxes plus `(1 − alpha) · CTC`. The student takes the teacher's
    /// vocabulary and must share its frame rate; everything else (run directory, resume,
    /// TensorBoard, evaluation) is `stapes train`'s, and `stapes train --resume` continues it.
    Distill(DistillArgs),
    /// Decode a data set with a trained run and report WER and CER with their substitution,
    /// deletion and insertion counts.
    Eval {
        /// The run directory of `stapes train`.
        #[arg(long, required_unless_present = "model", conflicts_with = "model")]
        run: Option<PathBuf>,
        /// A Hugging Face wav2vec2 CTC checkpoint directory (greedy, or beam search with `--beam`/`--lm`).
        #[arg(long)]
        model: Option<PathBuf>,
        /// A manifest or LibriSpeech folder.
        #[arg(long)]
        data: PathBuf,
        /// Utterances per batch.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Print every reference and hypothesis.
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        decode: DecodeArgs,
    },
    /// Transcribe audio files with a trained run; long recordings are split at pauses by the
    /// VAD and each segment is printed with its times.
    Transcribe {
        /// The run directory of `stapes train`.
        #[arg(long, required_unless_present = "model", conflicts_with = "model")]
        run: Option<PathBuf>,
        /// A Hugging Face wav2vec2 CTC checkpoint directory (`config.json`, `model.safetensors`
        /// or `pytorch_model.bin`, `vocab.json`, `preprocessor_config.json`), as
        /// `huggingface-cli download facebook/wav2vec2-base-960h --local-dir <dir>` leaves it.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Audio files (WAV, FLAC, OGG, MP3).
        #[arg(required = true)]
        audio: Vec<PathBuf>,
        /// Decode each file whole (no VAD), cut only at `--max-segment` seconds.
        #[arg(long)]
        no_vad: bool,
        /// Longest piece decoded at once, in seconds.
        #[arg(long, default_value_t = 20.0)]
        max_segment: f64,
        #[command(flatten)]
        decode: DecodeArgs,
    },
    /// Export a trained run for another toolkit: `--hf <dir>` writes a wav2vec2 run as a
    /// Hugging Face checkpoint directory (`config.json`, `model.safetensors`, `vocab.json`,
    /// `tokenizer_config.json`, `preprocessor_config.json`) that transformers'
    /// `Wav2Vec2ForCTC.from_pretrained` and `Wav2Vec2Processor.from_pretrained` load.
    Export {
        /// The run directory of `stapes train` (its best model is exported).
        #[arg(long)]
        run: PathBuf,
        /// The directory to write (created).
        #[arg(long)]
        hf: PathBuf,
    },
    /// Quantize a trained run dynamically to int8, as PyTorch's `quantize_dynamic`: its Linear
    /// LSTM and GRU weights become int8 with per-output-channel scales (`--per-tensor`: one scale
    /// per weight), inputs are quantized per call. Writes a new run directory that `stapes
    /// eval` and `stapes transcribe --run` use as any other (inference only).
    Quantize {
        /// The run directory of `stapes train`.
        #[arg(long)]
        run: PathBuf,
        /// The quantized run's directory (new, or empty).
        #[arg(long)]
        out: PathBuf,
        /// One scale per weight tensor (PyTorch's default qconfig) instead of per channel.
        #[arg(long)]
        per_tensor: bool,
        /// The run trained with quantization-aware training (`stapes train --qat`): convert it
        /// with the scheme it trained for (`convert` after `prepare_qat`).
        #[arg(long)]
        from_qat: bool,
    },
    /// The Transformer language model: `train` on text, `eval` (perplexity), `sample`.
    #[command(subcommand)]
    Lm(LmCommand),
    /// Print the build's devices and thread count.
    Info,
    /// Compute the features of an audio file and draw them as a PNG image (a heat map with
    /// time and frequency axes and a colour bar); prints the image path and the feature shape.
    Features {
        /// The audio file (WAV, FLAC, OGG/Vorbis or MP3); channels are averaged.
        audio: PathBuf,
        /// Where the PNG goes.
        #[arg(long)]
        png: PathBuf,
        /// Which features.
        #[arg(long, value_enum, default_value_t = FeatureKind::Mel)]
        kind: FeatureKind,
        /// Mel bands (mel and MFCC).
        #[arg(long, default_value_t = 80)]
        n_mels: usize,
        /// MFCC coefficients (default: 40, or n_mels when smaller).
        #[arg(long)]
        n_mfcc: Option<usize>,
        /// The audio is resampled to this rate first.
        #[arg(long, default_value_t = 16000)]
        sample_rate: u32,
        /// FFT size (and window length) in samples.
        #[arg(long, default_value_t = 400)]
        n_fft: usize,
        /// Hop between frames in samples.
        #[arg(long, default_value_t = 160)]
        hop_length: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo { run_dir, train_utterances, dev_utterances, epochs, max_seconds, seed } => {
            demo(run_dir, train_utterances, dev_utterances, epochs, max_seconds, seed)
        }
        Command::Train(args) => train(args),
        Command::Distill(args) => distill(args),
        Command::Eval { run, model, data, batch_size, verbose, decode } => match (run, model) {
            (_, Some(dir)) => eval_hf(&dir, &data, batch_size, verbose, &decode),
            (Some(run), None) => eval(&run, &data, batch_size, verbose, &decode),
            (None, None) => anyhow::bail!("eval needs --run or --model"),
        },
        Command::Transcribe { run, model, audio, no_vad, max_segment, decode } => match (run, model) {
            (_, Some(dir)) => transcribe_hf(&dir, &audio, no_vad, max_segment, &decode),
            (Some(run), None) => transcribe(&run, &audio, no_vad, max_segment, &decode),
            (None, None) => anyhow::bail!("transcribe needs --run or --model"),
        },
        Command::Export { run, hf } => export_hf(&run, &hf),
        Command::Quantize { run, out, per_tensor, from_qat } => quantize(&run, &out, per_tensor, from_qat),
        Command::Lm(c) => lm_command(c),
        Command::Info => info(),
        Command::Features { audio, png, kind, n_mels, n_mfcc, sample_rate, n_fft, hop_length } => {
            features(&audio, &png, kind, n_mels, n_mfcc, sample_rate, n_fft, hop_length)
        }
    }
}

fn info() -> anyhow::Result<()> {
    println!("stapes {}", env!("CARGO_PKG_VERSION"));
    println!("devices: cpu (the CUDA tensor backend is not wired yet; CUDA kernels are verified in emulation)");
    println!("rayon threads: {}", rayon::current_num_threads());
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Progress display
// ------------------------------------------------------------------------------------------------

/// Shows [`TrainEvent`]s: a progress bar per epoch on a terminal (loss, learning rate,
/// utterances per second, ETA), plain lines every few batches otherwise (logs, CI).
struct Progress {
    bar: Option<ProgressBar>,
    quiet_every: usize,
}

impl Progress {
    fn new() -> Progress {
        Progress { bar: None, quiet_every: 10 }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(s),
            _ => println!("{s}"),
        }
    }

    fn event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Start { model, parameters, train_utterances, dev_utterances, resumed } => {
                self.line(&format!(
                    "  model: {model} with {parameters} parameters; {train_utterances} training and \
                     {dev_utterances} dev utterances"
                ));
                if let Some((epoch, batches, step)) = resumed {
                    self.line(&format!("  resuming at epoch {epoch}, after batch {batches} of it (step {step})"));
                }
            }
            TrainEvent::EpochStart { epoch, epochs, batches, done } => {
                let bar = ProgressBar::with_draw_target(Some(*batches as u64), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("epoch {epoch}/{epochs}"));
                bar.set_position(*done as u64);
                bar.reset_eta();
                bar.enable_steady_tick(Duration::from_millis(250));
                self.bar = Some(bar);
            }
            TrainEvent::Step { epoch, batch, batches, step, loss, lr, grad_norm, utterances_per_s, loss_scale } => {
                let scale = loss_scale.map(|s| format!(" scale {s:.0}")).unwrap_or_default();
                let msg = format!("loss {loss:.3} lr {lr:.2e} {utterances_per_s:.1} utt/s{scale}");
                match &self.bar {
                    Some(b) if !b.is_hidden() => {
                        b.set_position(*batch as u64);
                        b.set_message(msg);
                    }
                    _ => {
                        if *batch == 1 || batch % self.quiet_every == 0 || batch == batches {
                            println!(
                                "  epoch {epoch} batch {batch}/{batches} step {step} {msg} grad-norm {grad_norm:.2}"
                            );
                        }
                    }
                }
            }
            TrainEvent::Evaluating { .. } => {
                if let Some(b) = &self.bar {
                    b.set_message("evaluating on the dev set");
                }
            }
            TrainEvent::EpochEnd(log) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                println!(
                    "  epoch {}: train loss {:.3}, dev CER {:.2}% WER {:.2}%, {:.1} utt/s ({:.0}s)",
                    log.epoch,
                    log.train_loss,
                    100.0 * log.dev_cer,
                    100.0 * log.dev_wer,
                    log.utterances_per_s,
                    log.elapsed_s
                );
            }
            TrainEvent::Checkpoint { .. } => {}
            TrainEvent::Message(m) => self.line(&format!("  {m}")),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// train
// ------------------------------------------------------------------------------------------------

#[derive(clap::Args)]
struct TrainArgs {
    /// The run configuration (TOML; see `stapes::speech::config`). Defaults: the reference
    /// CRDNN recipe.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training data: a `.jsonl`/`.csv` manifest or a LibriSpeech folder (with `--resume`:
    /// taken from the run directory unless given).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Dev data (same forms); without it, a fraction of the training data is held out.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Without `--dev`: hold out these many whole speakers (named by the manifest's `speaker`
    /// field or the LibriSpeech layout) instead of every k-th utterance, so that the dev error
    /// rates are those of unseen voices.
    #[arg(long, conflicts_with = "dev")]
    dev_speakers: Option<usize>,
    /// The run directory.
    #[arg(long)]
    run_dir: PathBuf,
    /// Continue the run in `--run-dir` from its last checkpoint, with its own configuration.
    #[arg(long)]
    resume: bool,
    /// Override `training.epochs`.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override `training.batch_size`.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Override `training.seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Override `training.checkpoint_every_steps`.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Stop after the epoch in which this session has run this many seconds.
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Use the demo's small CRDNN on 40 mels, with the `small` preset's schedule, instead of
    /// the configured model and schedule.
    #[arg(long)]
    small: bool,
    /// Start from a named recipe instead of the reference one: `small` (short commands, little
    /// data), `crdnn`, `deepspeech2` (see `RunConfig::preset`).
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// Turn off speed perturbation and SpecAugment.
    #[arg(long)]
    no_augment: bool,
    /// Where to train: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, or `auto` (cuda:0 when a GPU can
    /// be used, else the CPU).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Fine-tune: start from the weights of this run directory, with its configuration and
    /// vocabulary unless `--config` is given.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Quantization-aware training: Linear, LSTM and GRU layers train with fake-quantized
    /// weights and inputs (per-channel int8, as `stapes quantize` will convert them; a `[qat]`
    /// table in the configuration sets the scheme). Usually with `--init-from` a trained run,
    /// then `stapes quantize --from-qat`.
    #[arg(long)]
    qat: bool,
    /// A constant learning rate instead of the configured schedule (for fine-tuning).
    #[arg(long)]
    lr: Option<f64>,
    /// Run the learning-rate range test instead of training (fastai's and Lightning's
    /// `lr_find`): 100 steps with the rate growing from 1e-7 to 1, the smoothed loss of each,
    /// and the rate where it falls fastest; draws `lr_find.png` in the run directory.
    #[arg(long, conflicts_with = "resume")]
    find_lr: bool,
}

#[derive(clap::Args)]
struct DistillArgs {
    /// The teacher: a run directory of `stapes train` or a Hugging Face wav2vec2 CTC
    /// checkpoint directory (not needed with `--resume`).
    #[arg(long, required_unless_present = "resume")]
    teacher: Option<PathBuf>,
    /// The student's run configuration (TOML; default: the reference CRDNN recipe, or the
    /// demo's small CRDNN with `--small`).
    #[arg(long)]
    student_config: Option<PathBuf>,
    /// Weight of the distillation term; `1 - alpha` weighs CTC.
    #[arg(long, default_value_t = 0.7)]
    alpha: f64,
    /// Softmax temperature of teacher and student.
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// Run the teacher once over the training data and keep its logits in the run directory
    /// (always so when its front end differs from the student's).
    #[arg(long)]
    cache_teacher: bool,
    /// Leave out frames where the teacher's blank probability exceeds this.
    #[arg(long)]
    skip_blank_above: Option<f64>,
    #[command(flatten)]
    train: TrainArgs,
}

fn distill(a: DistillArgs) -> anyhow::Result<()> {
    let mut t = a.train;
    if t.config.is_some() {
        bail!("stapes distill takes the student's configuration as --student-config");
    }
    if t.resume {
        if a.teacher.is_some() || a.student_config.is_some() {
            bail!("--resume continues with the run's own config.toml (teacher included); leave out --teacher and --student-config");
        }
        return train_with(t, None);
    }
    t.config = a.student_config;
    let d = stapes::speech::config::DistillConfig {
        teacher: abs(&a.teacher.context("--teacher is required")?),
        alpha: a.alpha,
        temperature: a.temperature,
        cache_teacher: a.cache_teacher,
        skip_blank_above: a.skip_blank_above,
    };
    train_with(t, Some(d))
}

/// `cpu`, `cuda`, `cuda:N` or `auto`.
fn parse_device(s: &str) -> std::result::Result<Device, String> {
    match s.trim() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => Ok(Device::Cuda(0)),
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => Err(format!("unknown device {s:?}: expected cpu, cuda, cuda:N or auto")),
        },
    }
}

/// The data of a run, kept in `run.json` so that `--resume` needs only the run directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunData {
    data: PathBuf,
    dev: Option<PathBuf>,
    #[serde(default)]
    dev_speakers: Option<usize>,
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    train_with(a, None)
}

/// `stapes train`, or with `distill` a distillation run (`stapes distill`).
fn train_with(a: TrainArgs, distill: Option<stapes::speech::config::DistillConfig>) -> anyhow::Result<()> {
    if a.device.is_cuda() {
        // fail before any data is read when the GPU cannot be used
        Tensor::zeros([1], stapes::tensor::DType::F32, &a.device).context("--device")?;
    }
    let run_json = a.run_dir.join("run.json");
    let mut dev_speakers = a.dev_speakers;
    let (mut cfg, data, dev) = if a.resume {
        if a.config.is_some()
            || a.small
            || a.no_augment
            || a.init_from.is_some()
            || a.qat
            || a.lr.is_some()
            || a.preset.is_some()
        {
            bail!(
                "--resume continues with the run's own config.toml; leave out --config, --preset, --small, \
                 --no-augment, --init-from, --qat and --lr"
            );
        }
        let cfg = RunConfig::from_toml_file(a.run_dir.join("config.toml"))
            .with_context(|| format!("resuming {}", a.run_dir.display()))?;
        if cfg.quantization.is_some() {
            bail!(
                "{} is a quantized run (stapes quantize): it is for inference; resume the float run it came from",
                a.run_dir.display()
            );
        }
        let saved: Option<RunData> = std::fs::read_to_string(&run_json)
            .ok()
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .with_context(|| format!("reading {}", run_json.display()))?;
        let data = a.data.clone().or_else(|| saved.as_ref().map(|s| s.data.clone()));
        dev_speakers = dev_speakers.or_else(|| saved.as_ref().and_then(|s| s.dev_speakers));
        let dev = a.dev.clone().or_else(|| saved.and_then(|s| s.dev));
        let data = data.with_context(|| format!("no --data given and no {} to take it from", run_json.display()))?;
        (cfg, data, dev)
    } else {
        let cfg = match (&a.config, &a.init_from) {
            (None, _) if a.preset.is_some() => RunConfig::preset(a.preset.as_deref().unwrap_or_default())?,
            (Some(p), _) => RunConfig::from_toml_file(p)?,
            (None, Some(init)) => {
                let mut c = RunConfig::from_toml_file(init.join("config.toml"))
                    .with_context(|| format!("--init-from {}", init.display()))?;
                // a new run: not the source's distillation or quantization
                (c.distillation, c.quantization) = (None, None);
                c
            }
            (None, None) => RunConfig::default(),
        };
        let data = a.data.clone().context("--data is required (a manifest or a LibriSpeech folder)")?;
        (cfg, data, a.dev.clone())
    };
    if a.small {
        let small = RunConfig::preset("small")?;
        (cfg.model, cfg.features.n_mels, cfg.schedule) = (small.model, small.features.n_mels, small.schedule);
    }
    if a.no_augment {
        cfg.augment = stapes::speech::config::AugmentConfig::none();
    }
    if let Some(e) = a.epochs {
        cfg.training.epochs = e;
    }
    if let Some(b) = a.batch_size {
        cfg.training.batch_size = b;
    }
    if let Some(s) = a.seed {
        cfg.training.seed = s;
    }
    if let Some(c) = a.checkpoint_every {
        cfg.training.checkpoint_every_steps = c;
    }
    if distill.is_some() {
        cfg.distillation = distill;
    }
    if a.qat && cfg.qat.is_none() {
        cfg.qat = Some(stapes::nn::qat::FakeQuant::default());
    }
    if let Some(lr) = a.lr {
        cfg.schedule = stapes::speech::config::ScheduleConfig::Constant { lr };
    }
    cfg.validate()?;

    let corpus = open_corpus(&data).with_context(|| format!("opening {}", data.display()))?;
    let (train_set, dev_set, vocab) = match &dev {
        Some(d) => {
            let dv = open_corpus(d).with_context(|| format!("opening {}", d.display()))?;
            let all: Vec<String> =
                corpus.dataset.entries().iter().chain(dv.dataset.entries()).map(|e| e.transcript.clone()).collect();
            (corpus.dataset, dv.dataset, Vocab::from_transcripts(all.iter().map(|s| s.as_str())))
        }
        None => match dev_speakers {
            Some(n) => {
                let (t, d, held) = split_by_speakers(&corpus.dataset, n, cfg.training.seed)?;
                println!("dev: {} utterances of {n} held-out speaker(s) ({})", d.len(), held.join(", "));
                (t, d, corpus.vocab)
            }
            None => {
                let (t, d) = split_corpus(&corpus.dataset, cfg.training.dev_fraction)?;
                println!(
                    "dev: every {}-th utterance ({}; its speakers are training speakers too, so the dev error \
                     rates overstate accuracy on new voices: --dev-speakers N holds out whole speakers)",
                    (1.0 / cfg.training.dev_fraction).round(),
                    d.len()
                );
                (t, d, corpus.vocab)
            }
        },
    };
    let vocab = if a.resume {
        let saved = stapes::speech::train::load_vocab(&a.run_dir)?;
        if saved != vocab {
            bail!(
                "the data's characters {:?} differ from the run's vocab.json {:?}",
                vocab.chars().iter().collect::<String>(),
                saved.chars().iter().collect::<String>()
            );
        }
        saved
    } else if let Some(init) = a.init_from.as_ref().filter(|_| a.config.is_none()) {
        // the source run's characters, so that its output layer keeps its meaning
        let iv = stapes::speech::train::load_vocab(init)?;
        let missing = missing_chars(&vocab, &iv);
        if !missing.is_empty() {
            bail!("the transcripts use {missing:?}, which the run {} cannot emit", init.display());
        }
        iv
    } else if let Some(d) = &cfg.distillation {
        // the student emits the teacher's characters
        let tv = stapes::speech::distill::teacher_vocab(&d.teacher)
            .with_context(|| format!("reading the teacher's vocabulary in {}", d.teacher.display()))?;
        let missing = missing_chars(&vocab, &tv);
        if !missing.is_empty() {
            bail!(
                "the transcripts use {missing:?}, which the teacher {} cannot emit (its characters: {:?})",
                d.teacher.display(),
                tv.chars().iter().collect::<String>()
            );
        }
        tv
    } else {
        vocab
    };
    let train_set = filter_by_duration(train_set, cfg.training.max_duration_s);
    if !a.resume
        && cfg.features.f_max.is_none()
        && matches!(cfg.frontend(), stapes::speech::train::Frontend::LogMel { .. })
    {
        // band-limited features for narrowband recordings: above their Nyquist frequency the
        // resampled audio holds only resampler noise, which per-band normalisation amplifies
        if let Some(sr) = stapes::speech::train::max_source_rate(train_set.entries())?.filter(|&r| r < 16_000) {
            cfg.features.f_max = Some(f64::from(sr) / 2.0);
            println!(
                "the training audio is at most {sr} Hz: mel bands up to {} Hz ([features] f_max; set it to override)",
                sr / 2
            );
        }
    }
    if a.find_lr {
        return find_lr_cmd(&cfg, train_set, &vocab, &a);
    }
    std::fs::create_dir_all(&a.run_dir).with_context(|| format!("creating {}", a.run_dir.display()))?;
    let rd = serde_json::to_string_pretty(&RunData { data: abs(&data), dev: dev.as_deref().map(abs), dev_speakers })?;
    stapes::nn::checkpoint::write_atomic(&run_json, rd.as_bytes())?;
    println!(
        "stapes train: {} training and {} dev utterances, {} output classes; run directory {}",
        train_set.len(),
        dev_set.len(),
        vocab.len(),
        a.run_dir.display()
    );
    let mut progress = Progress::new();
    if let Device::Cuda(n) = a.device {
        println!("stapes train: on {} ({})", a.device, stapes::tensor::cuda::describe(n));
    }
    let opts =
        TrainOptions { resume: a.resume, max_seconds: a.max_seconds, device: a.device, init_from: a.init_from.clone() };
    let report =
        train_ctc(&cfg, Arc::new(train_set), Arc::new(dev_set), &vocab, &a.run_dir, &opts, |e| progress.event(e))?;
    println!("best dev CER {:.2}%; outputs in {}", 100.0 * report.best_cer, report.run_dir.display());
    Ok(())
}

/// `stapes train --find-lr`.
fn find_lr_cmd(
    cfg: &RunConfig,
    train_set: stapes::speech::data::ManifestDataset,
    vocab: &Vocab,
    a: &TrainArgs,
) -> anyhow::Result<()> {
    use stapes::speech::plot::{plot_figure, Chart, Series};
    println!("stapes train --find-lr: 100 steps, learning rate 1e-7 -> 1 ({} training utterances)", train_set.len());
    let r = stapes::speech::train::find_lr(cfg, Arc::new(train_set), vocab, a.device, 1e-7, 1.0, 100)?;
    for (i, (lr, loss)) in r.points.iter().enumerate() {
        if i % 10 == 0 || i + 1 == r.points.len() {
            println!("  step {i:3}  lr {lr:.2e}  smoothed loss {loss:.4}");
        }
    }
    if r.points.len() < 100 {
        println!("stopped after {} steps: the loss diverged", r.points.len());
    }
    std::fs::create_dir_all(&a.run_dir).with_context(|| format!("creating {}", a.run_dir.display()))?;
    let pts: Vec<(f64, f64)> = r.points.iter().map(|&(lr, l)| (lr.log10(), l)).collect();
    let chart = Chart::new("learning-rate range test")
        .labels("log10 learning rate", "smoothed loss")
        .with_series(Series::new("loss", pts));
    let png = a.run_dir.join("lr_find.png");
    plot_figure(&png, &[chart], 1)?;
    match r.suggestion {
        Some(lr) => println!(
            "suggested learning rate {lr:.2e} (steepest descent of the loss; a cyclic schedule's max_lr is often \
             about this, base_lr a tenth of it); plot in {}",
            png.display()
        ),
        None => println!("no suggestion: the loss did not fall (plot in {})", png.display()),
    }
    Ok(())
}

/// The characters of `data` that `model` cannot emit, in `data`'s order.
fn missing_chars(data: &Vocab, model: &Vocab) -> String {
    data.chars().iter().filter(|c| !model.chars().contains(c)).collect()
}

fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

// ------------------------------------------------------------------------------------------------
// eval and transcribe
// ------------------------------------------------------------------------------------------------

fn eval(run: &Path, data: &Path, batch_size: usize, verbose: bool, decode: &DecodeArgs) -> anyhow::Result<()> {
    let loaded = load_run(run).with_context(|| format!("loading the run {}", run.display()))?;
    loaded.model.to_device(&decode.device).context("--device")?;
    let corpus = open_corpus(data).with_context(|| format!("opening {}", data.display()))?;
    let missing = missing_chars(&corpus.vocab, &loaded.vocab);
    if !missing.is_empty() {
        bail!("the data's transcripts use characters the model cannot emit: {missing:?}");
    }
    let n = corpus.dataset.len();
    let speakers: Vec<Option<String>> = corpus.dataset.entries().iter().map(|e| e.speaker.clone()).collect();
    let (decoder, name) = decode.build(&loaded.vocab)?;
    let t0 = Instant::now();
    let ds: Arc<dyn Dataset> = Arc::new(corpus.dataset);
    let ev = evaluate_with(&loaded.model, &loaded.frontend(), ds, &loaded.vocab, batch_size, decoder)?;
    if verbose {
        for (r, h) in &ev.pairs {
            println!("REF: {r}\nHYP: {h}\n");
        }
    }
    println!("{n} utterances decoded ({name}) in {:.1}s", t0.elapsed().as_secs_f64());
    print_error_rates(&ev.wer, &ev.cer);
    print_by_speaker(speakers.iter().zip(&ev.pairs).map(|(s, (r, h))| (s.as_deref(), r.as_str(), h.as_str())));
    Ok(())
}

/// WER and CER per speaker, when every utterance names one.
fn print_by_speaker<'a>(triples: impl Iterator<Item = (Option<&'a str>, &'a str, &'a str)>) {
    let triples: Option<Vec<(&str, &str, &str)>> = triples.map(|(s, r, h)| s.map(|s| (s, r, h))).collect();
    let Some(triples) = triples else { return };
    let by = stapes::speech::metrics::error_rates_by_speaker(triples);
    if by.len() < 2 {
        return;
    }
    println!("by speaker:");
    for (s, (w, c)) in &by {
        println!("  {s}: WER {:.2}% ({} words), CER {:.2}%", 100.0 * w.rate(), w.reference_len, 100.0 * c.rate());
    }
}

/// The WER and CER lines of `eval`, with their substitution, deletion and insertion counts.
fn print_error_rates(wer: &ErrorCounts, cer: &ErrorCounts) {
    for (name, c) in [("WER", wer), ("CER", cer)] {
        println!(
            "{name} {:.2}% ({} errors / {} reference tokens: {} substitutions, {} deletions, {} insertions)",
            100.0 * c.rate(),
            c.errors(),
            c.reference_len,
            c.substitutions,
            c.deletions,
            c.insertions
        );
    }
}

/// The segments of `transcribe`: the recording's text, then each piece with its times when the
/// VAD cut it.
fn print_transcript(path: &Path, segs: &[TranscriptSegment]) {
    let text: Vec<&str> = segs.iter().map(|s| s.text.trim()).filter(|t| !t.is_empty()).collect();
    println!("{}: {}", path.display(), text.join(" "));
    if segs.len() > 1 {
        for s in segs {
            println!("  [{:7.2}s - {:7.2}s] {}", s.start, s.end, s.text.trim());
        }
    }
}

/// How `transcribe` cuts recordings.
fn segment_options(no_vad: bool, max_segment: f64) -> SegmentOptions {
    SegmentOptions {
        vad: if no_vad { None } else { SegmentOptions::default().vad },
        max_segment_s: max_segment,
        ..SegmentOptions::default()
    }
}

/// `eval --model <dir>`: a Hugging Face wav2vec2 checkpoint on a manifest or LibriSpeech folder,
/// greedy decoding, in batches of `batch_size` utterances sorted by length.
fn eval_hf(dir: &Path, data: &Path, batch_size: usize, verbose: bool, decode: &DecodeArgs) -> anyhow::Result<()> {
    use stapes::speech::audio::resample;
    use stapes::speech::metrics::corpus_error_rates;
    use stapes::speech::models::wav2vec2::Wav2Vec2Pipeline;
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let p = Wav2Vec2Pipeline::load(dir, &decode.device)
        .with_context(|| format!("loading the checkpoint directory {}", dir.display()))?;
    let mut decoder = decode.build_for_checkpoint(&p.vocab)?;
    let corpus = open_corpus(data).with_context(|| format!("opening {}", data.display()))?;
    let ds = &corpus.dataset;
    let upper = p.vocab_is_upper_case();
    let sr = p.preprocessor.sampling_rate;
    let t0 = Instant::now();
    let mut utts = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        let u = ds.get(i).with_context(|| format!("utterance {i} of {}", data.display()))?;
        let audio = if u.sample_rate == sr { u.audio } else { resample(&u.audio, u.sample_rate, sr)? };
        let reference = if upper { u.transcript.to_uppercase() } else { u.transcript };
        utts.push((audio, reference, ds.entries()[i].speaker.clone()));
    }
    utts.sort_by_key(|(a, _, _)| a.len());
    let mut pairs = Vec::with_capacity(utts.len());
    let mut speakers = Vec::with_capacity(utts.len());
    for chunk in utts.chunks(batch_size) {
        speakers.extend(chunk.iter().map(|(_, _, s)| s.clone()));
        let audio: Vec<&[f32]> = chunk.iter().map(|(a, _, _)| a.as_slice()).collect();
        let hyps = match decoder.as_mut() {
            Some((d, _)) => p.transcribe_batch_with(&audio, d)?,
            None => p.transcribe_batch(&audio)?,
        };
        for ((_, r, _), h) in chunk.iter().zip(hyps) {
            pairs.push((r.split_whitespace().collect::<Vec<_>>().join(" "), h));
        }
    }
    if verbose {
        for (r, h) in &pairs {
            println!("REF: {r}\nHYP: {h}\n");
        }
    }
    let name = decoder.map_or_else(|| "greedy".to_string(), |(_, n)| n);
    println!("{} utterances decoded ({name}) in {:.1}s", pairs.len(), t0.elapsed().as_secs_f64());
    let (wer, cer) = corpus_error_rates(pairs.iter().map(|(r, h)| (r.as_str(), h.as_str())));
    print_error_rates(&wer, &cer);
    print_by_speaker(speakers.iter().zip(&pairs).map(|(s, (r, h))| (s.as_deref(), r.as_str(), h.as_str())));
    Ok(())
}

fn transcribe(
    run: &Path,
    audio: &[PathBuf],
    no_vad: bool,
    max_segment: f64,
    decode: &DecodeArgs,
) -> anyhow::Result<()> {
    let loaded = load_run(run).with_context(|| format!("loading the run {}", run.display()))?;
    loaded.model.to_device(&decode.device).context("--device")?;
    let opts = segment_options(no_vad, max_segment);
    let (mut decoder, _) = decode.build(&loaded.vocab)?;
    for path in audio {
        let segs = transcribe_file(&loaded.model, &loaded.frontend(), &loaded.vocab, path, &opts, &mut decoder)
            .with_context(|| format!("transcribing {}", path.display()))?;
        print_transcript(path, &segs);
    }
    Ok(())
}

/// `transcribe --model <dir>`: a Hugging Face wav2vec2 checkpoint, greedy CTC decoding.
fn transcribe_hf(
    dir: &Path,
    audio: &[PathBuf],
    no_vad: bool,
    max_segment: f64,
    decode: &DecodeArgs,
) -> anyhow::Result<()> {
    use stapes::speech::audio::{load_audio, resample};
    use stapes::speech::models::wav2vec2::Wav2Vec2Pipeline;
    let p = Wav2Vec2Pipeline::load(dir, &decode.device)
        .with_context(|| format!("loading the checkpoint directory {}", dir.display()))?;
    let mut decoder = decode.build_for_checkpoint(&p.vocab)?.map(|(d, _)| d);
    let opts = segment_options(no_vad, max_segment);
    let sr = p.preprocessor.sampling_rate;
    for path in audio {
        let mut run = || -> anyhow::Result<Vec<TranscriptSegment>> {
            let a = load_audio(path, true)?;
            let samples = if a.sample_rate == sr { a.samples } else { resample(&a.samples, a.sample_rate, sr)? };
            Ok(p.transcribe_samples_with(&samples, &opts, decoder.as_mut())?)
        };
        let segs = run().with_context(|| format!("transcribing {}", path.display()))?;
        print_transcript(path, &segs);
    }
    Ok(())
}

fn lm_command(c: LmCommand) -> anyhow::Result<()> {
    match c {
        LmCommand::Train { text, config, run_dir, resume, epochs, device } => {
            let mut cfg = if resume {
                if config.is_some() {
                    bail!("--resume continues with the run's own config.toml; leave out --config");
                }
                LmRunConfig::from_toml_file(run_dir.join("config.toml"))
                    .with_context(|| format!("resuming {}", run_dir.display()))?
            } else {
                match &config {
                    Some(p) => LmRunConfig::from_toml_file(p)?,
                    None => LmRunConfig::default(),
                }
            };
            if let Some(e) = epochs {
                cfg.training.epochs = e;
            }
            println!("stapes lm train: {} text file(s), run directory {}", text.len(), run_dir.display());
            let opts = LmTrainOptions { resume, device };
            let report = stapes::speech::lm_train::train_lm(&cfg, &text, &run_dir, &opts, |e| match e {
                LmEvent::Start { parameters, vocab_size, resumed } => {
                    println!("  model: Transformer LM with {parameters} parameters, {vocab_size} token ids");
                    if let Some((epoch, batches, step)) = resumed {
                        println!("  resuming at epoch {epoch}, after batch {batches} of it (step {step})");
                    }
                }
                LmEvent::Step { epoch, step, loss, lr, tokens_per_s } if step % 50 == 0 => {
                    println!("  epoch {epoch} step {step} loss {loss:.3} lr {lr:.2e} {tokens_per_s:.0} tokens/s");
                }
                LmEvent::EpochEnd(l) => println!(
                    "  epoch {}: train loss {:.3}, held-out perplexity {:.3}, {:.0} tokens/s ({:.0}s)",
                    l.epoch, l.train_loss, l.dev_perplexity, l.tokens_per_s, l.elapsed_s
                ),
                _ => {}
            })?;
            let last = report.epochs.last().context("no epoch ran")?;
            println!("held-out perplexity {:.3}; outputs in {}", last.dev_perplexity, run_dir.display());
            Ok(())
        }
        LmCommand::Eval { run, text } => {
            let lm = load_lm_run(&run).with_context(|| format!("loading the LM run {}", run.display()))?;
            let t = &lm.config.training;
            let (ppl, n) =
                stapes::speech::lm_train::perplexity(&lm.model, &lm.tokenizer, &text, None, t.seq_len, t.batch_size)?;
            println!("perplexity {ppl:.4} over {n} tokens");
            Ok(())
        }
        LmCommand::Sample { run, prompt, max_tokens, temperature, n, seed } => {
            let lm = load_lm_run(&run).with_context(|| format!("loading the LM run {}", run.display()))?;
            let mut g = stapes::tensor::Generator::new(seed);
            for _ in 0..n {
                let ids = stapes::speech::lm_train::sample(
                    &lm.model,
                    &lm.tokenizer,
                    &prompt,
                    max_tokens,
                    temperature,
                    &mut g,
                )?;
                println!("{prompt}{}", lm.tokenizer.decode(&ids));
            }
            Ok(())
        }
    }
}

/// `quantize --run <run> --out <dir> [--per-tensor] [--from-qat]`.
fn quantize(run: &Path, out: &Path, per_tensor: bool, from_qat: bool) -> anyhow::Result<()> {
    use stapes::nn::quantized::QScheme;
    if from_qat && per_tensor {
        bail!("--from-qat takes the scheme the run trained with; leave out --per-tensor");
    }
    let scheme = if per_tensor { QScheme::PerTensor } else { QScheme::PerChannel };
    let r = stapes::speech::train::quantize_run(run, out, scheme, from_qat)
        .with_context(|| format!("quantizing the run {}", run.display()))?;
    println!(
        "quantized {} layers ({}): weights {:.2} MB f32 -> {:.2} MB int8 ({:.3}x); wrote {}",
        r.layers.len(),
        r.layers.join(", "),
        r.f32_bytes as f64 / 1e6,
        r.int8_bytes as f64 / 1e6,
        r.int8_bytes as f64 / r.f32_bytes.max(1) as f64,
        out.display()
    );
    Ok(())
}

fn export_hf(run: &Path, out: &Path) -> anyhow::Result<()> {
    use stapes::speech::models::AcousticModel;
    let loaded = load_run(run).with_context(|| format!("loading the run {}", run.display()))?;
    let AcousticModel::Wav2Vec2(m) = &loaded.model else {
        bail!(
            "--hf exports wav2vec2 runs; {} is a {} run, which has no transformers counterpart",
            run.display(),
            loaded.config.model.name()
        );
    };
    m.save_pretrained(&loaded.vocab, out).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} (load it with Wav2Vec2ForCTC.from_pretrained, or stapes transcribe --model)", out.display());
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// demo
// ------------------------------------------------------------------------------------------------

fn demo(
    run_dir: Option<PathBuf>,
    train_utterances: usize,
    dev_utterances: usize,
    epochs: usize,
    max_seconds: f64,
    seed: u64,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let run_dir = run_dir.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        PathBuf::from(format!("runs/demo-{secs}"))
    });
    let train = SyntheticDigits::new(SynthConfig {
        seed: 1000 + seed,
        num_utterances: train_utterances,
        ..SynthConfig::default()
    })?;
    // Held-out speakers: another corpus seed draws other pitches, vocal tracts, rates and noise.
    let dev_cfg = SynthConfig { seed: 9_000_000 + seed, num_utterances: dev_utterances, ..SynthConfig::default() };
    let dev = SyntheticDigits::new(dev_cfg.clone())?;
    let all_words = DIGITS.join(" ");
    let vocab = Vocab::from_transcripts([all_words.as_str()]);
    let mut cfg = RunConfig { model: small_crdnn(), ..RunConfig::default() };
    cfg.features.n_mels = 40;
    cfg.training.batch_size = 16;
    cfg.training.epochs = epochs;
    cfg.training.max_seconds = Some(max_seconds);
    cfg.training.workers = 1;
    cfg.training.seed = seed;
    cfg.training.checkpoint_every_steps = 0;
    cfg.schedule = stapes::speech::config::ScheduleConfig::Cyclic {
        base_lr: 3e-4,
        max_lr: 3e-3,
        step_size_up: 300,
        step_size_down: None,
        mode: stapes::speech::config::CyclicModeName::Triangular2,
        gamma: 1.0,
    };
    // The synthetic corpus is clean and small: no augmentation, so the demo converges fast.
    cfg.augment = stapes::speech::config::AugmentConfig::none();
    println!(
        "stapes demo: a CRDNN with CTC on {train_utterances} synthetic digit utterances, \
         evaluating on {dev_utterances} held-out speakers; run directory {}",
        run_dir.display()
    );
    let train: Arc<dyn Dataset> = Arc::new(train);
    let dev: Arc<dyn Dataset> = Arc::new(dev);
    let mut progress = Progress::new();
    let report = train_ctc(&cfg, train, dev.clone(), &vocab, &run_dir, &TrainOptions::default(), |e| progress.event(e))
        .context("training the demo model")?;
    let last = report.epochs.last().context("no epoch ran")?;

    // Transcribe a few held-out recordings from disk, as `stapes transcribe` would.
    let ex_dir = run_dir.join("examples");
    std::fs::create_dir_all(&ex_dir)?;
    let loaded = load_run(&run_dir)?;
    let blank = loaded.vocab.blank() as usize;
    println!("\ntranscribing held-out recordings (best model, VAD segmentation):");
    for i in 0..dev.len().min(4) {
        let u = dev.get(i)?;
        let wav = ex_dir.join(format!("{}.wav", u.id));
        write_wav(&wav, &u.audio, u.sample_rate)?;
        let segs = transcribe_file(
            &loaded.model,
            &loaded.frontend(),
            &loaded.vocab,
            &wav,
            &SegmentOptions::default(),
            |lp, l| greedy_decode_batch(lp, l, blank, true),
        )?;
        let hyp: Vec<&str> = segs.iter().map(|s| s.text.trim()).collect();
        println!("  {}\n    reference:  {}\n    hypothesis: {}", wav.display(), u.transcript, hyp.join(" "));
    }
    println!(
        "\nbest dev CER {:.2}% (last epoch: CER {:.2}%, WER {:.2}%) after {:.0}s",
        100.0 * report.best_cer,
        100.0 * last.dev_cer,
        100.0 * last.dev_wer,
        t0.elapsed().as_secs_f64()
    );
    println!("outputs in {}:", report.run_dir.display());
    for f in [
        "config.toml",
        "vocab.json",
        "log.jsonl",
        "checkpoint.safetensors",
        "best_model.safetensors",
        "curves.png",
        "tensorboard/",
        "examples/",
    ] {
        println!("  {}", report.run_dir.join(f).display());
    }
    println!("view the training curves: tensorboard --logdir {}", report.run_dir.join("tensorboard").display());
    println!("try: stapes transcribe --run {} {}", report.run_dir.display(), ex_dir.join("<file>.wav").display());
    Ok(())
}

// ---------- `stapes features`: feature images ----------

/// The features `stapes features` draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum FeatureKind {
    /// Mel spectrogram, in dB.
    Mel,
    /// Linear-frequency power spectrogram, in dB.
    Spectrogram,
    /// MFCCs (from the dB mel spectrogram).
    Mfcc,
}

#[allow(clippy::too_many_arguments)]
fn features(
    audio: &std::path::Path,
    png: &std::path::Path,
    kind: FeatureKind,
    n_mels: usize,
    n_mfcc: Option<usize>,
    sample_rate: u32,
    n_fft: usize,
    hop_length: usize,
) -> anyhow::Result<()> {
    use stapes::speech::audio::{load_audio, resample};
    use stapes::speech::features::{
        MelSpectrogram, MelSpectrogramConfig, Mfcc, MfccConfig, Spectrogram, SpectrogramConfig,
    };
    use stapes::speech::plot::{spectrogram_png, SpectrogramPlot};

    let decoded = load_audio(audio, true).with_context(|| format!("loading {}", audio.display()))?;
    let samples = if decoded.sample_rate == sample_rate {
        decoded.samples
    } else {
        resample(&decoded.samples, decoded.sample_rate, sample_rate).with_context(|| {
            format!("resampling {} from {} Hz to {sample_rate} Hz", audio.display(), decoded.sample_rate)
        })?
    };
    if samples.is_empty() {
        anyhow::bail!("{}: no audio samples", audio.display());
    }
    let spectrogram = SpectrogramConfig { n_fft, hop_length: Some(hop_length), ..SpectrogramConfig::default() };
    let mel_config = MelSpectrogramConfig {
        sample_rate,
        spectrogram: spectrogram.clone(),
        n_mels,
        ..MelSpectrogramConfig::default()
    };
    let name = audio.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (m, mut opts, what) = match kind {
        FeatureKind::Mel => {
            let m = MelSpectrogram::new(mel_config.clone())?.forward_slice(&samples);
            (m, SpectrogramPlot::for_mel(&mel_config), format!("mel spectrogram, {n_mels} bands"))
        }
        FeatureKind::Spectrogram => {
            let m = Spectrogram::new(spectrogram.clone())?.forward_slice(&samples);
            (
                m,
                SpectrogramPlot::for_spectrogram(&spectrogram, sample_rate),
                format!("power spectrogram, n_fft {n_fft}"),
            )
        }
        FeatureKind::Mfcc => {
            let n_mfcc = n_mfcc.unwrap_or(40.min(n_mels));
            let config = MfccConfig { sample_rate, n_mfcc, melkwargs: mel_config, ..MfccConfig::default() };
            let m = Mfcc::new(config)?.forward_slice(&samples);
            (
                m,
                SpectrogramPlot::for_coefficients("coefficient", hop_length, sample_rate),
                format!("MFCC, {n_mfcc} coefficients"),
            )
        }
    };
    let m = m.with_context(|| format!("computing features of {}", audio.display()))?;
    opts.title = format!("{name}: {what}");
    spectrogram_png(png, &m.data, m.rows, m.frames, &opts).with_context(|| format!("writing {}", png.display()))?;
    println!(
        "wrote {} ({what}: {} x {} [rows x frames], {:.2} s at {sample_rate} Hz)",
        png.display(),
        m.rows,
        m.frames,
        samples.len() as f64 / f64::from(sample_rate)
    );
    Ok(())
}
