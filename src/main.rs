//! The `stapes` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use stapes::speech::data::{Dataset, Vocab};
use stapes::speech::models::CrdnnConfig;
use stapes::speech::synth::{SynthConfig, SyntheticDigits, DIGITS};
use stapes::speech::train::{open_corpus, split_corpus, train_ctc, TrainConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "stapes", version, about = "A GPU tensor engine with autograd and a speech stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Train a CRDNN with CTC on a corpus: a JSONL/CSV manifest (audio, text[, duration]) or a
    /// LibriSpeech-layout folder; evaluates greedy CER/WER on a dev set after every epoch.
    Train {
        /// Training data: a `.jsonl`/`.csv` manifest or a LibriSpeech folder.
        #[arg(long)]
        data: PathBuf,
        /// Dev data (same forms); without it, every 20th training utterance is held out.
        #[arg(long)]
        dev: Option<PathBuf>,
        /// The run directory (config, log, checkpoint, best model).
        #[arg(long)]
        run_dir: PathBuf,
        /// Maximum epochs.
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        /// Wall-time budget in seconds (training stops after the epoch that exceeds it).
        #[arg(long, default_value_t = 1e12)]
        max_seconds: f64,
        /// Utterances per batch.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Use the demo's small CRDNN (16/32 channels, BiLSTM 128, 40 mels) instead of the
        /// reference baseline (64/128/256 channels, BiLSTM 512, 80 mels).
        #[arg(long)]
        small: bool,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
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
        Command::Train { data, dev, run_dir, epochs, max_seconds, batch_size, small, seed } => {
            train(&data, dev.as_deref(), &run_dir, epochs, max_seconds, batch_size, small, seed)
        }
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

/// The demo's small CRDNN, or the reference baseline, for `vocab_size` outputs.
fn model_config(small: bool, vocab_size: usize) -> CrdnnConfig {
    if small {
        CrdnnConfig {
            n_features: 40,
            conv_channels: vec![16, 32],
            time_pool: vec![2, 1],
            rnn_hidden: 128,
            rnn_layers: 2,
            rnn_dropout: 0.1,
            vocab_size,
        }
    } else {
        CrdnnConfig { vocab_size, ..CrdnnConfig::default() }
    }
}

#[allow(clippy::too_many_arguments)]
fn train(
    data: &std::path::Path,
    dev: Option<&std::path::Path>,
    run_dir: &std::path::Path,
    epochs: usize,
    max_seconds: f64,
    batch_size: usize,
    small: bool,
    seed: u64,
) -> anyhow::Result<()> {
    let corpus = open_corpus(data).with_context(|| format!("opening {}", data.display()))?;
    let (train_set, dev_set, vocab) = match dev {
        Some(d) => {
            let dev = open_corpus(d).with_context(|| format!("opening {}", d.display()))?;
            let all: Vec<String> =
                corpus.dataset.entries().iter().chain(dev.dataset.entries()).map(|e| e.transcript.clone()).collect();
            (corpus.dataset, dev.dataset, Vocab::from_transcripts(all.iter().map(|s| s.as_str())))
        }
        None => {
            let (t, d) = split_corpus(&corpus.dataset, 0.05)?;
            (t, d, corpus.vocab)
        }
    };
    let model = model_config(small, vocab.len());
    let cfg = TrainConfig {
        n_mels: model.n_features,
        model,
        batch_size,
        epochs,
        max_seconds,
        base_lr: 1e-5,
        max_lr: 1e-4,
        step_size_up: 2000,
        clip_norm: 5.0,
        workers: 2,
        seed,
    };
    println!(
        "stapes train: {} training and {} dev utterances, {} output classes; run directory {}",
        train_set.len(),
        dev_set.len(),
        vocab.len(),
        run_dir.display()
    );
    let report = train_ctc(&cfg, Arc::new(train_set), Arc::new(dev_set), &vocab, run_dir, |l| println!("  {l}"))?;
    println!("best dev CER {:.2}%; outputs in {}", 100.0 * report.best_cer, report.run_dir.display());
    Ok(())
}

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
    let dev = SyntheticDigits::new(SynthConfig {
        seed: 9_000_000 + seed,
        num_utterances: dev_utterances,
        ..SynthConfig::default()
    })?;
    let all_words = DIGITS.join(" ");
    let vocab = Vocab::from_transcripts([all_words.as_str()]);
    let n_mels = 40;
    let cfg = TrainConfig {
        model: model_config(true, vocab.len()),
        n_mels,
        batch_size: 16,
        epochs,
        max_seconds,
        base_lr: 3e-4,
        max_lr: 3e-3,
        step_size_up: 300,
        clip_norm: 5.0,
        workers: 1,
        seed,
    };
    println!(
        "stapes demo: a CRDNN with CTC on {train_utterances} synthetic digit utterances, \
         evaluating on {dev_utterances} held-out speakers; run directory {}",
        run_dir.display()
    );
    let train: Arc<dyn Dataset> = Arc::new(train);
    let dev: Arc<dyn Dataset> = Arc::new(dev);
    let report = train_ctc(&cfg, train, dev, &vocab, &run_dir, |line| println!("  {line}"))
        .context("training the demo model")?;
    println!("\nexamples (held-out speakers):");
    for (r, h) in &report.examples {
        println!("  reference: {r:<40} hypothesis: {h}");
    }
    let last = report.epochs.last().context("no epoch ran")?;
    println!(
        "\nbest dev CER {:.2}% (last epoch: CER {:.2}%, WER {:.2}%) after {:.0}s",
        100.0 * report.best_cer,
        100.0 * last.dev_cer,
        100.0 * last.dev_wer,
        t0.elapsed().as_secs_f64()
    );
    println!("outputs in {}:", report.run_dir.display());
    for f in ["config.json", "log.jsonl", "checkpoint.safetensors", "best_model.safetensors"] {
        println!("  {}", report.run_dir.join(f).display());
    }
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
