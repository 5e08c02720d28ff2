//! The configuration of a training run, read from (and written as) TOML.
//!
//! Every table and key is optional; what is left out takes the default shown below, which is
//! the reference CRDNN recipe (SpeechBrain's TIMIT/LibriSpeech CRDNN: Adam, CyclicLR
//! triangular2 between 1e-5 and 1e-4 with a half-cycle of 2000 steps, clipping at norm 5).
//! Unknown keys are errors, so a misspelt option never passes silently.
//!
//! ```toml
//! [model]
//! kind = "crdnn"                 # or "deepspeech2", "wav2vec2" (see models::Wav2Vec2RunConfig)
//! conv_channels = [64, 128, 256]
//! time_pool = [2, 1, 1]
//! rnn_hidden = 512
//! rnn_layers = 2
//! rnn_dropout = 0.15
//!
//! [features]
//! n_mels = 80
//! f_max = 8000.0                 # the top mel band (4000 for recordings made at 8 kHz)
//! preemphasis = 0.0              # Kaldi's 0.97 to turn it on
//! dither = 0.0                   # Gaussian dither of training audio (std, sample units)
//!
//! [training]
//! batch_size = 16
//! epochs = 10
//! clip_norm = 5.0
//! precision = "f32"              # "bf16" or "f16": autocast (+ GradScaler for f16)
//! checkpoint_every_steps = 200   # mid-epoch checkpoints for --resume
//!
//! [optimizer]
//! kind = "adam"                  # "adamw", "sgd"
//! weight_decay = 0.0
//!
//! [schedule]
//! kind = "cyclic"                # "constant", "step", "exponential", "cosine", "onecycle", "noam"
//! base_lr = 1e-5
//! max_lr = 1e-4
//! step_size_up = 2000
//! mode = "triangular2"
//!
//! [augment]
//! speed_factors = [0.9, 1.0, 1.1]
//! time_masks = 2
//! time_mask_param = 40
//! freq_masks = 2
//! freq_mask_param = 15
//! mask_p = 1.0                   # no mask wider than this fraction of its axis
//! vtlp = []                      # e.g. [0.9, 1.1]: vocal-tract-length perturbation
//! noise_snr_db = []              # e.g. [5.0, 30.0]: white noise at a random SNR,
//! noise_prob = 0.5               #   on this share of the training utterances
//!
//! [logging]
//! tensorboard = true
//! histograms_every_epochs = 1
//! ```
//!
//! The model's `n_features` and `vocab_size` are not read from the file: the trainer sets them
//! from `[features]` and from the data's character set (the `config.toml` it writes into the
//! run directory holds the values used).

use crate::models::ModelConfig;
use serde::{Deserialize, Serialize};
use stapes_nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use stapes_nn::schedule::{
    AnnealStrategy, CosineAnnealingLR, CyclicLR, CyclicLRConfig, CyclicMode, ExponentialLR, LrSchedule, OneCycleLR,
    OneCycleLRConfig, StepLR,
};
use stapes_nn::Param;
use stapes_tensor::{DType, Error, Result};
use std::path::{Path, PathBuf};

/// The names [`RunConfig::preset`] knows.
pub const PRESETS: [&str; 3] = ["small", "crdnn", "deepspeech2"];

/// A whole run: model, features, training loop, optimizer, schedule, augmentation, logging.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The acoustic model.
    pub model: ModelConfig,
    /// The feature front end.
    pub features: FeatureConfig,
    /// The training loop.
    pub training: TrainingConfig,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// On-the-fly data augmentation (training only).
    pub augment: AugmentConfig,
    /// TensorBoard and plots.
    pub logging: LoggingConfig,
    /// Set in a run written by `stapes quantize` ([`crate::train::quantize_run`]): its Linear,
    /// LSTM and GRU layers are dynamically quantized to int8 (inference only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationConfig>,
    /// Knowledge distillation from a teacher (`stapes distill`): the loss becomes `alpha · T² ·
    /// KL + (1 − alpha) · CTC`, see [`crate::distill`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distillation: Option<DistillConfig>,
    /// Quantization-aware training (`stapes train --qat`): the Linear, LSTM and GRU layers
    /// train with fake-quantized weights (and inputs), as `prepare_qat` makes them; `stapes
    /// quantize --from-qat` converts the run afterwards. See [`stapes_nn::qat`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qat: Option<stapes_nn::qat::FakeQuant>,
}

/// The `[distillation]` table: where the teacher is and how its soft labels are weighted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    /// The teacher: a stapes run directory (`config.toml`, as `stapes train` writes it) or a
    /// Hugging Face wav2vec2 CTC checkpoint directory (`config.json`, `vocab.json`). It must
    /// emit the student's vocabulary at the student's frame rate.
    pub teacher: PathBuf,
    /// Weight of the distillation term (PyTorch users' usual 0.7); `1 − alpha` weighs CTC.
    pub alpha: f64,
    /// Softmax temperature of both distributions (2); the term is scaled by `T²` so that its
    /// gradients keep their size as `T` changes.
    pub temperature: f64,
    /// Run the teacher once over the training set and keep its logits
    /// (`teacher_logits.safetensors` in the run directory) instead of running it on every
    /// batch. Always the case when the teacher's front end differs from the student's (a
    /// wav2vec2 teacher of a log-mel student); then speed perturbation is unavailable (the
    /// student's frames would no longer line up with the cached ones).
    pub cache_teacher: bool,
    /// Leave out of the distillation term the frames where the teacher's blank probability
    /// exceeds this (the blank dominates CTC posteriors; matching it everywhere teaches the
    /// student little). `None`: every valid frame counts.
    pub skip_blank_above: Option<f64>,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            teacher: PathBuf::new(),
            alpha: 0.7,
            temperature: 2.0,
            cache_teacher: false,
            skip_blank_above: None,
        }
    }
}

/// The `[quantization]` table of a quantized run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuantizationConfig {
    /// `"per_channel"` (one weight scale per output channel) or `"per_tensor"`.
    pub scheme: stapes_nn::quantized::QScheme,
}

/// Log-mel features: 16 kHz audio, 25 ms windows (`n_fft` 400), 10 ms hop, per-utterance
/// mean/variance normalisation of every band.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureConfig {
    /// Mel bands (the model's input features).
    pub n_mels: usize,
    /// The top of the mel bands in Hz (default: 8 kHz, Nyquist of 16 kHz). For recordings made
    /// at 8 kHz, 4000: their upper half, after resampling to 16 kHz, holds only resampler
    /// noise, which per-band normalisation would amplify.
    pub f_max: Option<f64>,
    /// Pre-emphasis `y[n] = x[n] - c x[n-1]` of the waveform (Kaldi's 0.97; 0: none).
    pub preemphasis: f64,
    /// Gaussian dither added to training waveforms, as a standard deviation in sample units
    /// (Kaldi's `dither`; 0: none). Dev and eval audio is never dithered.
    pub dither: f64,
    /// Cut leading and trailing silence (the energy VAD of [`crate::vad`], with 0.1 s kept on
    /// each side) before the features, in training, evaluation and transcription alike; audio
    /// in which the VAD finds no speech is kept whole.
    pub trim_silence: bool,
    /// How each log-mel band is normalised: `"utterance"` (zero mean and unit variance over the
    /// utterance, the default) or `"global"` (SpeechBrain's `InputNormalization` with
    /// `norm_type = "global"`: the mean and deviation of every band over the training set,
    /// measured once when training starts and kept in `global_cmvn`).
    pub cmvn: CmvnKind,
    /// The training set's statistics for `cmvn = "global"` (filled by the trainer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_cmvn: Option<GlobalCmvn>,
}

/// See [`FeatureConfig::cmvn`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmvnKind {
    /// Per utterance.
    #[default]
    Utterance,
    /// The training set's statistics.
    Global,
}

/// Per-band mean and standard deviation of the log-mel features over a training set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalCmvn {
    /// Means, one per band.
    pub mean: Vec<f64>,
    /// Standard deviations, one per band.
    pub std: Vec<f64>,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            n_mels: 80,
            f_max: None,
            preemphasis: 0.0,
            dither: 0.0,
            trim_silence: false,
            cmvn: CmvnKind::Utterance,
            global_cmvn: None,
        }
    }
}

/// Numeric precision of the forward and backward passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Autocast to bf16 for matmul and conv (parameters and optimizer stay f32).
    Bf16,
    /// Autocast to f16 with a dynamic loss scale (GradScaler).
    F16,
}

impl Precision {
    /// The dtype autocast runs matmuls and convolutions in (`None`: plain f32).
    pub fn autocast_dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::F16 => Some(DType::F16),
        }
    }
}

/// The training loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Utterances per batch.
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after the epoch during which this much wall time has passed (no limit if absent).
    pub max_seconds: Option<f64>,
    /// Gradient clipping by global L2 norm (0 disables it).
    pub clip_norm: f64,
    /// Loader worker threads.
    pub workers: usize,
    /// Seed of shuffling, initialisation, dropout and augmentation.
    pub seed: u64,
    /// f32, or mixed precision.
    pub precision: Precision,
    /// Write `checkpoint.safetensors` every this many optimizer steps as well as at the end of
    /// every epoch (0: only at epoch ends). `--resume` continues from the newest one, inside
    /// the epoch where it was written.
    pub checkpoint_every_steps: usize,
    /// Without a dev set, every `1 / dev_fraction`-th training utterance is held out.
    pub dev_fraction: f64,
    /// Utterances longer than this many seconds are left out of training (none if absent).
    pub max_duration_s: Option<f64>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            batch_size: 16,
            epochs: 10,
            max_seconds: None,
            clip_norm: 5.0,
            workers: 2,
            seed: 0,
            precision: Precision::F32,
            checkpoint_every_steps: 500,
            dev_fraction: 0.05,
            max_duration_s: None,
        }
    }
}

/// The optimizer kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (L2 weight decay added to the gradient).
    #[default]
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
    /// SGD with optional momentum and Nesterov.
    Sgd,
}

/// The optimizer. The learning rate comes from [`ScheduleConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// Weight decay (L2 for Adam and SGD, decoupled for AdamW).
    pub weight_decay: f64,
    /// Adam's betas.
    pub betas: [f64; 2],
    /// Adam's epsilon.
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            weight_decay: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            momentum: 0.9,
            nesterov: false,
        }
    }
}

impl OptimizerConfig {
    /// Builds the optimizer over `params` with the initial learning rate `lr`.
    pub fn build(&self, params: Vec<Param>, lr: f64) -> Result<Box<dyn Optimizer>> {
        Ok(match self.kind {
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                let base = if self.kind == OptimizerKind::AdamW { AdamConfig::adamw() } else { AdamConfig::adam() };
                Box::new(Adam::new(
                    params,
                    AdamConfig {
                        lr,
                        betas: (self.betas[0], self.betas[1]),
                        eps: self.eps,
                        weight_decay: self.weight_decay,
                        ..base
                    },
                )?)
            }
            OptimizerKind::Sgd => Box::new(Sgd::new(
                params,
                SgdConfig {
                    lr,
                    momentum: self.momentum,
                    nesterov: self.nesterov,
                    weight_decay: self.weight_decay,
                    ..SgdConfig::default()
                },
            )?),
        })
    }
}

/// CyclicLR's amplitude policy, as PyTorch's `mode` strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CyclicModeName {
    /// Constant amplitude.
    Triangular,
    /// Amplitude halves every cycle (the default here, as in SpeechBrain's CRDNN recipe).
    #[default]
    Triangular2,
    /// Amplitude scaled by `gamma^step`.
    ExpRange,
}

/// The learning-rate schedule, stepped after every optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// `CyclicLR` (momentum is not cycled).
    Cyclic {
        /// Lower bound.
        base_lr: f64,
        /// Upper bound.
        max_lr: f64,
        /// Steps of the rising half-cycle.
        step_size_up: usize,
        /// Steps of the falling half-cycle (default: `step_size_up`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_size_down: Option<usize>,
        /// `triangular`, `triangular2` or `exp_range`.
        #[serde(default)]
        mode: CyclicModeName,
        /// `exp_range`'s gamma.
        #[serde(default = "one")]
        gamma: f64,
    },
    /// A fixed rate.
    Constant {
        /// The rate.
        lr: f64,
    },
    /// `StepLR`: multiply by `gamma` every `step_size` optimizer steps.
    Step {
        /// Initial rate.
        lr: f64,
        /// Steps between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// `ExponentialLR`: multiply by `gamma` every optimizer step.
    Exponential {
        /// Initial rate.
        lr: f64,
        /// Decay factor per step.
        gamma: f64,
    },
    /// `CosineAnnealingLR` over `t_max` steps.
    Cosine {
        /// Initial rate.
        lr: f64,
        /// Half-period in steps.
        t_max: usize,
        /// Minimum rate.
        #[serde(default)]
        eta_min: f64,
    },
    /// `OneCycleLR` (cosine annealing, momentum not cycled).
    OneCycle {
        /// Peak rate.
        max_lr: f64,
        /// Steps of the whole cycle.
        total_steps: usize,
        /// Fraction of the cycle spent rising.
        #[serde(default = "pct_start")]
        pct_start: f64,
    },
    /// The Transformer schedule (`Noam`): `factor * d_model^-0.5 * min(n^-0.5, n * warmup^-1.5)`
    /// at step `n`, rising linearly for `warmup` steps, then decaying as `n^-0.5`.
    Noam {
        /// Scale.
        #[serde(default = "one")]
        factor: f64,
        /// The model width the rate is scaled by.
        d_model: usize,
        /// Warm-up steps.
        warmup: usize,
    },
}

fn one() -> f64 {
    1.0
}

fn pct_start() -> f64 {
    0.3
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig::Cyclic {
            base_lr: 1e-5,
            max_lr: 1e-4,
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicModeName::Triangular2,
            gamma: 1.0,
        }
    }
}

impl ScheduleConfig {
    /// Steps the rate takes to reach its peak: CyclicLR's `step_size_up`, Noam's `warmup`,
    /// OneCycleLR's `pct_start * total_steps`; `None` for schedules that start at their peak.
    pub fn warmup_steps(&self) -> Option<usize> {
        match *self {
            ScheduleConfig::Cyclic { step_size_up, .. } => Some(step_size_up),
            ScheduleConfig::Noam { warmup, .. } => Some(warmup),
            ScheduleConfig::OneCycle { total_steps, pct_start, .. } => Some((pct_start * total_steps as f64) as usize),
            _ => None,
        }
    }

    /// Builds the schedule.
    pub fn build(&self) -> Result<Box<dyn LrSchedule>> {
        let err = |e: stapes_nn::schedule::ScheduleError| Error::invalid("ScheduleConfig::build", e.to_string());
        Ok(match *self {
            ScheduleConfig::Cyclic { base_lr, max_lr, step_size_up, step_size_down, mode, gamma } => Box::new(
                CyclicLR::new(CyclicLRConfig {
                    base_lr,
                    max_lr,
                    step_size_up,
                    step_size_down,
                    mode: match mode {
                        CyclicModeName::Triangular => CyclicMode::Triangular,
                        CyclicModeName::Triangular2 => CyclicMode::Triangular2,
                        CyclicModeName::ExpRange => CyclicMode::ExpRange { gamma },
                    },
                    cycle_momentum: false,
                    ..CyclicLRConfig::default()
                })
                .map_err(err)?,
            ),
            ScheduleConfig::Constant { lr } => Box::new(StepLR::new(lr, usize::MAX, 1.0).map_err(err)?),
            ScheduleConfig::Noam { factor, d_model, warmup } => {
                Box::new(stapes_nn::schedule::Noam::new(factor, d_model, warmup).map_err(err)?)
            }
            ScheduleConfig::Step { lr, step_size, gamma } => Box::new(StepLR::new(lr, step_size, gamma).map_err(err)?),
            ScheduleConfig::Exponential { lr, gamma } => Box::new(ExponentialLR::new(lr, gamma).map_err(err)?),
            ScheduleConfig::Cosine { lr, t_max, eta_min } => {
                Box::new(CosineAnnealingLR::new(lr, t_max, eta_min).map_err(err)?)
            }
            ScheduleConfig::OneCycle { max_lr, total_steps, pct_start } => Box::new(
                OneCycleLR::new(OneCycleLRConfig {
                    max_lr,
                    total_steps,
                    pct_start,
                    anneal_strategy: AnnealStrategy::Cos,
                    cycle_momentum: false,
                    ..OneCycleLRConfig::default()
                })
                .map_err(err)?,
            ),
        })
    }
}

/// On-the-fly augmentation of training utterances (never of the dev set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Speed perturbation: each training utterance is resampled by a factor drawn uniformly
    /// from this list (Kaldi's 0.9/1.0/1.1 recipe); empty or `[1.0]` disables it.
    pub speed_factors: Vec<f64>,
    /// SpecAugment time masks per utterance.
    pub time_masks: usize,
    /// Maximum width of a time mask, in frames.
    pub time_mask_param: usize,
    /// SpecAugment frequency masks per utterance.
    pub freq_masks: usize,
    /// Maximum width of a frequency mask, in mel bands.
    pub freq_mask_param: usize,
    /// No mask covers more than this fraction of its axis (torchaudio's SpecAugment `p`): on a
    /// 0.5 s word of 50 frames, `mask_p = 0.2` caps a time mask at 10 frames whatever
    /// `time_mask_param` says. 1 leaves only `*_mask_param`.
    pub mask_p: f64,
    /// Vocal-tract-length perturbation: each training utterance's mel filterbank is warped by
    /// a factor drawn uniformly from `[lo, hi]` (e.g. `[0.9, 1.1]`); empty disables it.
    pub vtlp: Vec<f64>,
    /// Additive white noise at an SNR (dB) drawn uniformly from `[lo, hi]`, on a fraction
    /// `noise_prob` of the training utterances; empty disables it.
    pub noise_snr_db: Vec<f64>,
    /// The share of training utterances that get noise.
    pub noise_prob: f64,
}

impl Default for AugmentConfig {
    /// SpeechBrain's CRDNN recipe: speeds 0.95/1.0/1.05, and SpecAugment with two masks of
    /// each kind.
    fn default() -> Self {
        AugmentConfig {
            speed_factors: vec![0.95, 1.0, 1.05],
            time_masks: 2,
            time_mask_param: 40,
            freq_masks: 2,
            freq_mask_param: 15,
            mask_p: 1.0,
            vtlp: vec![],
            noise_snr_db: vec![],
            noise_prob: 0.5,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        AugmentConfig {
            speed_factors: vec![],
            time_masks: 0,
            time_mask_param: 0,
            freq_masks: 0,
            freq_mask_param: 0,
            mask_p: 1.0,
            vtlp: vec![],
            noise_snr_db: vec![],
            noise_prob: 0.0,
        }
    }
}

/// TensorBoard event files and PNG plots in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Write TensorBoard event files under `<run>/tensorboard/`.
    pub tensorboard: bool,
    /// Scalars every this many optimizer steps.
    pub scalars_every_steps: usize,
    /// Histograms of every parameter and its gradient every this many epochs (0: never).
    pub histograms_every_epochs: usize,
    /// Redraw `<run>/curves.png` after every epoch.
    pub plots: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { tensorboard: true, scalars_every_steps: 1, histograms_every_epochs: 1, plots: true }
    }
}

impl RunConfig {
    /// Parses TOML text; errors name the bad key and its line.
    pub fn from_toml_str(text: &str) -> Result<RunConfig> {
        toml::from_str(text).map_err(|e| Error::invalid("RunConfig::from_toml", e.to_string().trim_end().to_string()))
    }

    /// Reads a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<RunConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("RunConfig::from_toml_file", path, e))?;
        RunConfig::from_toml_str(&text).map_err(|e| Error::io("RunConfig::from_toml_file", path, e.to_string()))
    }

    /// The configuration as TOML text (what `config.toml` in a run directory holds).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::invalid("RunConfig::to_toml", e.to_string()))
    }

    /// A named recipe (`stapes train --preset`):
    /// - `small`: short commands and little data — the demo's CRDNN (conv 16/32, two 128-unit
    ///   bidirectional LSTM layers) on 40 log-mels, batch 16, a cyclic rate of 3e-4 → 3e-3 that
    ///   peaks after 300 steps (a warm-up short runs reach), and augmentation sized for 0.5-3 s
    ///   inputs: speeds 0.9/1.0/1.1, VTLP 0.9-1.1, white noise at 10-30 dB on half the
    ///   utterances, and no SpecAugment masks (measured to hurt on held-out voices; when turned
    ///   on, time masks are capped at 10% of the utterance and frequency masks at 5 bands);
    /// - `crdnn`: the reference CRDNN recipe ([`RunConfig::default`]);
    /// - `deepspeech2`: a DeepSpeech2 model with the reference recipe's loop and schedule.
    ///
    /// # Errors
    /// For another name (the error lists the presets).
    pub fn preset(name: &str) -> Result<RunConfig> {
        match name {
            "small" => {
                let mut c = RunConfig { model: crate::train::small_crdnn(), ..RunConfig::default() };
                c.features.n_mels = 40;
                c.training.batch_size = 16;
                c.training.epochs = 30;
                c.schedule = ScheduleConfig::Cyclic {
                    base_lr: 3e-4,
                    max_lr: 3e-3,
                    step_size_up: 300,
                    step_size_down: None,
                    mode: CyclicModeName::Triangular2,
                    gamma: 1.0,
                };
                // no SpecAugment masks: on held-out voices they cost more than they gave (the
                // table in benches/RESULTS.md); set time_masks / freq_masks to try them, capped
                // at 10% of the utterance and 5 bands
                c.augment = AugmentConfig {
                    speed_factors: vec![0.9, 1.0, 1.1],
                    time_masks: 0,
                    time_mask_param: 40,
                    freq_masks: 0,
                    freq_mask_param: 5,
                    mask_p: 0.1,
                    vtlp: vec![0.9, 1.1],
                    noise_snr_db: vec![10.0, 30.0],
                    noise_prob: 0.5,
                };
                Ok(c)
            }
            "crdnn" => Ok(RunConfig::default()),
            "deepspeech2" => Ok(RunConfig {
                model: ModelConfig::DeepSpeech2(crate::models::DeepSpeech2Config::default()),
                ..RunConfig::default()
            }),
            other => Err(Error::invalid(
                "RunConfig::preset",
                format!("unknown preset {other:?} (presets: {})", PRESETS.join(", ")),
            )),
        }
    }

    /// Checks the values that no type can: positive sizes, fractions in range, sensible
    /// augmentation, a buildable schedule.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "RunConfig::validate";
        let t = &self.training;
        if t.batch_size == 0 || t.epochs == 0 {
            return Err(Error::invalid(
                OP,
                format!("batch_size ({}) and epochs ({}) must be >= 1", t.batch_size, t.epochs),
            ));
        }
        if !(t.clip_norm >= 0.0 && t.clip_norm.is_finite()) {
            return Err(Error::invalid(OP, format!("clip_norm must be finite and >= 0, got {}", t.clip_norm)));
        }
        if !(t.dev_fraction > 0.0 && t.dev_fraction < 1.0) {
            return Err(Error::invalid(OP, format!("dev_fraction must be in (0, 1), got {}", t.dev_fraction)));
        }
        let f = &self.features;
        if f.n_mels == 0 {
            return Err(Error::invalid(OP, "features.n_mels must be >= 1"));
        }
        if f.f_max.is_some_and(|m| !(m > 0.0 && m <= 8000.0)) {
            return Err(Error::invalid(OP, format!("features.f_max must be in (0, 8000] Hz, got {:?}", f.f_max)));
        }
        if !((0.0..1.0).contains(&f.preemphasis) && f.dither >= 0.0 && f.dither.is_finite()) {
            return Err(Error::invalid(
                OP,
                format!("features.preemphasis ({}) must be in [0, 1) and dither ({}) >= 0", f.preemphasis, f.dither),
            ));
        }
        if let Some(g) = &f.global_cmvn {
            if g.mean.len() != f.n_mels || g.std.len() != f.n_mels {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "features.global_cmvn has {} means and {} deviations for {} mel bands",
                        g.mean.len(),
                        g.std.len(),
                        f.n_mels
                    ),
                ));
            }
            if g.mean.iter().chain(&g.std).any(|v| !v.is_finite()) || g.std.iter().any(|s| *s <= 0.0) {
                return Err(Error::invalid(OP, "features.global_cmvn holds a non-finite value or a deviation <= 0"));
            }
        }
        let a = &self.augment;
        if let Some(f) = a.speed_factors.iter().find(|f| !(**f >= 0.5 && **f <= 2.0)) {
            return Err(Error::invalid(OP, format!("speed factor {f} is outside [0.5, 2]")));
        }
        if !(0.0..=1.0).contains(&a.mask_p) || !(0.0..=1.0).contains(&a.noise_prob) {
            return Err(Error::invalid(
                OP,
                format!("augment.mask_p ({}) and noise_prob ({}) must be in [0, 1]", a.mask_p, a.noise_prob),
            ));
        }
        let range_ok =
            |r: &[f64], lo: f64, hi: f64| r.is_empty() || (r.len() == 2 && r[0] <= r[1] && r[0] > lo && r[1] < hi);
        if !range_ok(&a.vtlp, 0.5, 2.0) {
            return Err(Error::invalid(OP, format!("augment.vtlp must be [lo, hi] within (0.5, 2), got {:?}", a.vtlp)));
        }
        if !range_ok(&a.noise_snr_db, -50.0, 100.0) {
            return Err(Error::invalid(
                OP,
                format!("augment.noise_snr_db must be [lo, hi] in dB, got {:?}", a.noise_snr_db),
            ));
        }
        if let Some(d) = &self.distillation {
            if !(0.0..=1.0).contains(&d.alpha) {
                return Err(Error::invalid(OP, format!("distillation.alpha must be in [0, 1], got {}", d.alpha)));
            }
            if !(d.temperature > 0.0 && d.temperature.is_finite()) {
                return Err(Error::invalid(
                    OP,
                    format!("distillation.temperature must be finite and > 0, got {}", d.temperature),
                ));
            }
            if let Some(p) = d.skip_blank_above.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
                return Err(Error::invalid(OP, format!("distillation.skip_blank_above must be in (0, 1], got {p}")));
            }
            if d.teacher.as_os_str().is_empty() {
                return Err(Error::invalid(OP, "distillation.teacher is empty (a run or checkpoint directory)"));
            }
        }
        self.schedule.build()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{DeepSpeech2Config, RnnType};

    #[test]
    fn empty_file_is_the_reference_recipe_and_round_trips() {
        let c = RunConfig::from_toml_str("").unwrap();
        assert_eq!(c, RunConfig::default());
        assert!(matches!(
            c.schedule,
            ScheduleConfig::Cyclic { mode: CyclicModeName::Triangular2, step_size_up: 2000, .. }
        ));
        let text = c.to_toml_string().unwrap();
        assert_eq!(RunConfig::from_toml_str(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn parses_a_deepspeech2_config() {
        let c = RunConfig::from_toml_str(
            r#"
            [model]
            kind = "deepspeech2"
            rnn_type = "lstm"
            rnn_layers = 2
            conv_kernels = [[11, 41], [11, 21]]

            [optimizer]
            kind = "adamw"
            weight_decay = 0.01

            [schedule]
            kind = "onecycle"
            max_lr = 1e-3
            total_steps = 1000
            "#,
        )
        .unwrap();
        match &c.model {
            ModelConfig::DeepSpeech2(d) => {
                assert_eq!(d.rnn_type, RnnType::Lstm);
                assert_eq!(d.rnn_layers, 2);
                assert_eq!(d.rnn_hidden, DeepSpeech2Config::default().rnn_hidden);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.optimizer.kind, OptimizerKind::AdamW);
        let s = c.schedule.build().unwrap();
        assert!((s.lr() - 1e-3 / 25.0).abs() < 1e-12);
        let text = c.to_toml_string().unwrap();
        assert_eq!(RunConfig::from_toml_str(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = RunConfig::from_toml_str("[training]\nbatch_sise = 3\n").unwrap_err().to_string();
        assert!(e.contains("batch_sise"), "{e}");
        let e = RunConfig::from_toml_str("[model]\nkind = \"crdnn\"\nrnn_hiden = 3\n").unwrap_err().to_string();
        assert!(e.contains("rnn_hiden"), "{e}");
        let e = RunConfig::from_toml_str("[model]\nkind = \"transformer\"\n").unwrap_err().to_string();
        assert!(e.contains("transformer"), "{e}");
        let e = RunConfig::from_toml_str("[schedule]\nkind = \"step\"\nlr = 0.1\n").unwrap_err().to_string();
        assert!(e.contains("step_size"), "{e}");
        let bad = RunConfig::from_toml_str("[training]\nbatch_size = 0\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("batch_size"));
        let bad = RunConfig::from_toml_str("[augment]\nspeed_factors = [0.1]\n").unwrap();
        assert!(bad.validate().is_err());
        let bad = RunConfig::from_toml_str("[schedule]\nkind = \"constant\"\nlr = -1.0\n").unwrap();
        assert!(bad.validate().is_err());
    }
}
