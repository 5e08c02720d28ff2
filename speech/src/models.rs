//! Speech recognisers trained with CTC.
//!
//! [`Crdnn`]: convolutional blocks over (time, frequency) — Conv2d, BatchNorm2d, ReLU and a
//! max-pool that halves the frequency axis (and the time axis where asked) —, then a
//! bidirectional multi-layer LSTM over time, then a linear projection to the vocabulary
//! (blank included). The SpeechBrain reference baseline is 3 conv blocks starting at 64
//! channels and a BiLSTM of hidden size 512; [`CrdnnConfig::default`] is that, and the demo uses
//! a smaller one.
//!
//! [`DeepSpeech2`]: 2-D convolutions over (time, frequency) with striding (BatchNorm and a
//! clipped ReLU, `Hardtanh(0, 20)`, after each), a stack of bidirectional GRU or LSTM layers and
//! a linear output layer, after Amodei et al. 2016 and deepspeech.pytorch.
//!
//! [`wav2vec2::Wav2Vec2ForCtc`]: transformers' wav2vec2 with a CTC head, fed the waveform
//! itself, usually fine-tuned from a pretrained checkpoint directory ([`Wav2Vec2RunConfig`]).
//!
//! [`AcousticModel`] holds any of them, built from a [`ModelConfig`] (the `[model]` table of a
//! run's TOML configuration, `kind = "crdnn"`, `"deepspeech2"` or `"wav2vec2"`).
//!
//! Parameter names follow the module tree (`cnn.0.weight`, `cnn.1.running_mean`,
//! `rnn.weight_ih_l0_reverse`, `out.weight`), so an equivalent PyTorch model
//! (`benches/torch/crdnn.py` style: `nn.Sequential` CNN, `nn.LSTM`, `nn.Linear`) exchanges
//! `state_dict`s with it.

pub mod wav2vec2;

use crate::data::Vocab;
use serde::{Deserialize, Serialize};
use stapes_autograd::Var;
use stapes_nn::layers::{
    BatchNorm2d, Conv2d, Conv2dConfig, ConvPadding, Hardtanh, Linear, MaxPool2d, ReLU, Sequential,
};
use stapes_nn::rnn::{Gru, Lstm, RnnConfig};
use stapes_nn::Param;
use stapes_nn::{Forward, Module};
use stapes_tensor::{DType, Device, Error, Result};
use std::fmt;
use std::path::PathBuf;
use wav2vec2::{CtcVocab, Wav2Vec2Config, Wav2Vec2ForCtc, Wav2Vec2Preprocessor};

/// The shape of a [`Crdnn`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrdnnConfig {
    /// Features per input frame (mel bands).
    pub n_features: usize,
    /// Output channels of each conv block; each block halves the frequency axis.
    pub conv_channels: Vec<usize>,
    /// Time pooling factor of each conv block (1 keeps the frame rate); the product is the
    /// model's frame subsampling.
    pub time_pool: Vec<usize>,
    /// LSTM hidden size per direction.
    pub rnn_hidden: usize,
    /// Stacked LSTM layers.
    pub rnn_layers: usize,
    /// Dropout between LSTM layers (training only).
    pub rnn_dropout: f64,
    /// Output classes, blank included (0 in a configuration file: taken from the data).
    pub vocab_size: usize,
}

impl Default for CrdnnConfig {
    /// The reference baseline: 80 mels, 3 conv blocks of 64/128/256 channels (time pooled by 2
    /// in the first), a 2-layer BiLSTM of 512, 40 outputs.
    fn default() -> Self {
        CrdnnConfig {
            n_features: 80,
            conv_channels: vec![64, 128, 256],
            time_pool: vec![2, 1, 1],
            rnn_hidden: 512,
            rnn_layers: 2,
            rnn_dropout: 0.15,
            vocab_size: 40,
        }
    }
}

/// CRDNN: CNN blocks, a bidirectional LSTM and a linear output layer.
pub struct Crdnn {
    cfg: CrdnnConfig,
    cnn: Sequential,
    rnn: Lstm,
    out: Linear,
}

impl Crdnn {
    /// Builds the model (f32, CPU) with PyTorch's default initialisation per layer.
    pub fn new(cfg: CrdnnConfig) -> Result<Crdnn> {
        const OP: &str = "Crdnn::new";
        if cfg.conv_channels.is_empty() || cfg.conv_channels.len() != cfg.time_pool.len() {
            return Err(Error::invalid(
                OP,
                format!(
                    "conv_channels ({}) and time_pool ({}) must be non-empty and of the same length",
                    cfg.conv_channels.len(),
                    cfg.time_pool.len()
                ),
            ));
        }
        if cfg.time_pool.contains(&0) || cfg.vocab_size < 2 || cfg.n_features == 0 {
            return Err(Error::invalid(OP, format!("invalid configuration {cfg:?}")));
        }
        let mut cnn = Sequential::new();
        let mut cin = 1;
        let mut freq = cfg.n_features;
        for (&c, &tp) in cfg.conv_channels.iter().zip(&cfg.time_pool) {
            let conv_cfg = Conv2dConfig { padding: ConvPadding::Explicit([1, 1]), ..Default::default() };
            cnn.push(Conv2d::new_with(cin, c, [3, 3], conv_cfg)?);
            cnn.push(BatchNorm2d::new(c)?);
            cnn.push(ReLU::new());
            cnn.push(MaxPool2d::new([tp, 2])?);
            cin = c;
            freq /= 2;
            if freq == 0 {
                return Err(Error::invalid(
                    OP,
                    format!("{} features cannot be halved {} times", cfg.n_features, cfg.conv_channels.len()),
                ));
            }
        }
        let rnn = Lstm::new(RnnConfig {
            num_layers: cfg.rnn_layers,
            bidirectional: true,
            batch_first: true,
            dropout: cfg.rnn_dropout,
            ..RnnConfig::new(cin * freq, cfg.rnn_hidden)
        })?;
        let out = Linear::new(2 * cfg.rnn_hidden, cfg.vocab_size, true)?;
        Ok(Crdnn { cfg, cnn, rnn, out })
    }

    /// The configuration.
    pub fn config(&self) -> &CrdnnConfig {
        &self.cfg
    }

    /// Frames out per frame in (the product of the time pooling factors).
    pub fn subsampling(&self) -> usize {
        self.cfg.time_pool.iter().product()
    }

    /// Output lengths for input lengths (each pool floors).
    pub fn output_lengths(&self, input_lengths: &[usize]) -> Vec<usize> {
        input_lengths.iter().map(|&l| self.cfg.time_pool.iter().fold(l, |n, &p| n / p).max(1)).collect()
    }

    /// Logits `[B, T', vocab]` for features `[B, T, F]` with per-utterance lengths; padded
    /// frames do not affect the real ones through the LSTM (the conv blocks see the zero
    /// padding, as in PyTorch).
    pub fn forward(&self, features: &Var, lengths: &[usize]) -> Result<Var> {
        let (x, out_lens) = conv_front(
            "Crdnn::forward",
            &self.cnn,
            features,
            self.cfg.n_features,
            lengths,
            self.output_lengths(lengths),
        )?;
        let h = self.rnn.forward_with(&x, None, Some(&out_lens))?.output;
        self.out.forward(&h)
    }
}

/// The part both models share: checks features `[B, T, n_features]` and their lengths, runs
/// the conv stack over `[B, 1, T, F]` and flattens channels and frequency into a sequence
/// `[B, T', C·F']`; returns it with `out_lens` clamped to `T'`.
fn conv_front(
    op: &'static str,
    conv: &Sequential,
    features: &Var,
    n_features: usize,
    lengths: &[usize],
    out_lens: Vec<usize>,
) -> Result<(Var, Vec<usize>)> {
    let d = features.dims();
    if d.len() != 3 || d[2] != n_features {
        return Err(Error::shape(op, format!("expects features [B, T, {n_features}], got {d:?}")));
    }
    let (b, t) = (d[0], d[1]);
    if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
        return Err(Error::invalid(op, format!("lengths {lengths:?} for a batch [B={b}, T={t}]")));
    }
    let x = conv.forward(&features.unsqueeze(1usize)?)?; // [B, C, T', F']
    let xd = x.dims().to_vec();
    let x = x.permute(&[0, 2, 1, 3])?.reshape([xd[0], xd[2], xd[1] * xd[3]])?; // [B, T', C·F']
    Ok((x, out_lens.into_iter().map(|l| l.min(xd[2])).collect()))
}

impl Module for Crdnn {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("cnn".into(), &self.cnn as &dyn Module), ("rnn".into(), &self.rnn), ("out".into(), &self.out)]
    }
}

/// The recurrent cell of a [`DeepSpeech2`] stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RnnType {
    /// `nn.GRU` (DeepSpeech2's choice).
    Gru,
    /// `nn.LSTM`.
    Lstm,
}

impl fmt::Display for RnnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RnnType::Gru => "GRU",
            RnnType::Lstm => "LSTM",
        })
    }
}

/// The shape of a [`DeepSpeech2`]. Kernel sizes and strides are `[time, frequency]`; each conv
/// pads by half its kernel on both axes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeepSpeech2Config {
    /// Features per input frame (mel bands).
    pub n_features: usize,
    /// Output channels of each conv layer.
    pub conv_channels: Vec<usize>,
    /// Kernel `[time, frequency]` of each conv layer.
    pub conv_kernels: Vec<[usize; 2]>,
    /// Stride `[time, frequency]` of each conv layer.
    pub conv_strides: Vec<[usize; 2]>,
    /// GRU or LSTM.
    pub rnn_type: RnnType,
    /// Hidden size per direction.
    pub rnn_hidden: usize,
    /// Stacked bidirectional layers.
    pub rnn_layers: usize,
    /// Dropout between recurrent layers (training only).
    pub rnn_dropout: f64,
    /// Output classes, blank included (0 in a configuration file: taken from the data).
    pub vocab_size: usize,
}

impl Default for DeepSpeech2Config {
    /// deepspeech.pytorch's model: two convs of 32 channels with kernels (11, 41) and (11, 21),
    /// strides (2, 2) and (1, 2); five bidirectional GRUs... here three layers of 512, which is
    /// its small recipe's size, and 80 mel features.
    fn default() -> Self {
        DeepSpeech2Config {
            n_features: 80,
            conv_channels: vec![32, 32],
            conv_kernels: vec![[11, 41], [11, 21]],
            conv_strides: vec![[2, 2], [1, 2]],
            rnn_type: RnnType::Gru,
            rnn_hidden: 512,
            rnn_layers: 3,
            rnn_dropout: 0.0,
            vocab_size: 29,
        }
    }
}

/// The output length of a strided conv over `n` inputs padded by `pad` on both sides.
fn conv_out_len(n: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (n + 2 * pad).saturating_sub(kernel) / stride + 1
}

enum Recurrent {
    Gru(Gru),
    Lstm(Lstm),
}

/// DeepSpeech2: strided 2-D convolutions, bidirectional recurrent layers, a linear output.
pub struct DeepSpeech2 {
    cfg: DeepSpeech2Config,
    conv: Sequential,
    rnn: Recurrent,
    out: Linear,
}

impl DeepSpeech2 {
    /// Builds the model (f32, CPU) with PyTorch's default initialisation per layer.
    pub fn new(cfg: DeepSpeech2Config) -> Result<DeepSpeech2> {
        const OP: &str = "DeepSpeech2::new";
        let n = cfg.conv_channels.len();
        if n == 0 || cfg.conv_kernels.len() != n || cfg.conv_strides.len() != n {
            return Err(Error::invalid(
                OP,
                format!(
                    "conv_channels ({}), conv_kernels ({}) and conv_strides ({}) must be non-empty and of one length",
                    n,
                    cfg.conv_kernels.len(),
                    cfg.conv_strides.len()
                ),
            ));
        }
        let zero = |v: &[[usize; 2]]| v.iter().any(|k| k[0] == 0 || k[1] == 0);
        if zero(&cfg.conv_kernels)
            || zero(&cfg.conv_strides)
            || cfg.conv_channels.contains(&0)
            || cfg.vocab_size < 2
            || cfg.n_features == 0
            || cfg.rnn_hidden == 0
            || cfg.rnn_layers == 0
        {
            return Err(Error::invalid(OP, format!("invalid configuration {cfg:?}")));
        }
        let mut conv = Sequential::new();
        let (mut cin, mut freq) = (1, cfg.n_features);
        for i in 0..n {
            let (k, s) = (cfg.conv_kernels[i], cfg.conv_strides[i]);
            let conv_cfg = Conv2dConfig {
                stride: s,
                padding: ConvPadding::Explicit([k[0] / 2, k[1] / 2]),
                bias: false,
                ..Default::default()
            };
            conv.push(Conv2d::new_with(cin, cfg.conv_channels[i], k, conv_cfg)?);
            conv.push(BatchNorm2d::new(cfg.conv_channels[i])?);
            conv.push(Hardtanh::new(0.0, 20.0)?);
            cin = cfg.conv_channels[i];
            if freq + 2 * (k[1] / 2) < k[1] {
                return Err(Error::invalid(
                    OP,
                    format!("{} features are too few for conv kernels {:?}", cfg.n_features, cfg.conv_kernels),
                ));
            }
            freq = conv_out_len(freq, k[1], s[1], k[1] / 2);
        }
        let rnn_cfg = RnnConfig {
            num_layers: cfg.rnn_layers,
            bidirectional: true,
            batch_first: true,
            dropout: cfg.rnn_dropout,
            ..RnnConfig::new(cin * freq, cfg.rnn_hidden)
        };
        let rnn = match cfg.rnn_type {
            RnnType::Gru => Recurrent::Gru(Gru::new(rnn_cfg)?),
            RnnType::Lstm => Recurrent::Lstm(Lstm::new(rnn_cfg)?),
        };
        let out = Linear::new(2 * cfg.rnn_hidden, cfg.vocab_size, true)?;
        Ok(DeepSpeech2 { cfg, conv, rnn, out })
    }

    /// The configuration.
    pub fn config(&self) -> &DeepSpeech2Config {
        &self.cfg
    }

    /// Output lengths for input lengths (the conv arithmetic over time).
    pub fn output_lengths(&self, input_lengths: &[usize]) -> Vec<usize> {
        input_lengths
            .iter()
            .map(|&l| {
                self.cfg
                    .conv_kernels
                    .iter()
                    .zip(&self.cfg.conv_strides)
                    .fold(l, |n, (k, s)| conv_out_len(n, k[0], s[0], k[0] / 2))
                    .max(1)
            })
            .collect()
    }

    /// Logits `[B, T', vocab]` for features `[B, T, F]` with per-utterance lengths.
    pub fn forward(&self, features: &Var, lengths: &[usize]) -> Result<Var> {
        let op = "DeepSpeech2::forward";
        let (x, out_lens) =
            conv_front(op, &self.conv, features, self.cfg.n_features, lengths, self.output_lengths(lengths))?;
        let h = match &self.rnn {
            Recurrent::Gru(g) => g.forward_with(&x, None, Some(&out_lens))?.output,
            Recurrent::Lstm(l) => l.forward_with(&x, None, Some(&out_lens))?.output,
        };
        self.out.forward(&h)
    }
}

impl Module for DeepSpeech2 {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let rnn: &dyn Module = match &self.rnn {
            Recurrent::Gru(g) => g,
            Recurrent::Lstm(l) => l,
        };
        vec![("conv".into(), &self.conv as &dyn Module), ("rnn".into(), rnn), ("out".into(), &self.out)]
    }
}

/// A wav2vec2 CTC model in a training run (`[model] kind = "wav2vec2"`): usually fine-tuned
/// from a checkpoint directory, as a transformers fine-tuning script does it.
///
/// ```toml
/// [model]
/// kind = "wav2vec2"
/// pretrained = "models/wav2vec2-base"   # a directory as save_pretrained writes it
/// freeze_feature_encoder = true         # the default
/// mask_time_prob = 0.05                 # optional overrides of the checkpoint's config.json
/// layerdrop = 0.1
/// ```
///
/// The encoder's weights come from `pretrained`; the CTC head is new, one output per character
/// of the run's vocabulary (blank = 0, as `pad_token_id`). The trainer fills `encoder` (the
/// checkpoint's `config.json` with the overrides applied) and `preprocessor` (its
/// `preprocessor_config.json`), so the run's `config.toml` describes the model without the
/// checkpoint directory; an `encoder` table given without `pretrained` trains that architecture
/// from random initialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Wav2Vec2RunConfig {
    /// The checkpoint directory the encoder's weights come from.
    pub pretrained: Option<PathBuf>,
    /// Keep the convolutional feature encoder fixed (transformers' `freeze_feature_encoder()`).
    pub freeze_feature_encoder: bool,
    /// Overrides `mask_time_prob` (SpecAugment time masking, filled with `masked_spec_embed`).
    pub mask_time_prob: Option<f64>,
    /// Overrides `mask_time_length`.
    pub mask_time_length: Option<usize>,
    /// Overrides `layerdrop`.
    pub layerdrop: Option<f64>,
    /// Overrides `hidden_dropout`.
    pub hidden_dropout: Option<f64>,
    /// Overrides `activation_dropout`.
    pub activation_dropout: Option<f64>,
    /// Overrides `attention_dropout`.
    pub attention_dropout: Option<f64>,
    /// Overrides `feat_proj_dropout`.
    pub feat_proj_dropout: Option<f64>,
    /// Overrides `final_dropout`.
    pub final_dropout: Option<f64>,
    /// The architecture (filled from `pretrained` by the trainer).
    pub encoder: Option<Wav2Vec2Config>,
    /// How audio is prepared for it (filled from `pretrained` by the trainer).
    pub preprocessor: Option<Wav2Vec2Preprocessor>,
}

impl Default for Wav2Vec2RunConfig {
    fn default() -> Self {
        Wav2Vec2RunConfig {
            pretrained: None,
            freeze_feature_encoder: true,
            mask_time_prob: None,
            mask_time_length: None,
            layerdrop: None,
            hidden_dropout: None,
            activation_dropout: None,
            attention_dropout: None,
            feat_proj_dropout: None,
            final_dropout: None,
            encoder: None,
            preprocessor: None,
        }
    }
}

impl Wav2Vec2RunConfig {
    /// Fills `encoder` and `preprocessor` from the `pretrained` directory when absent, applies
    /// the overrides and sets the head to `vocab_size` outputs with the blank at 0. Errors name
    /// the directory or the field.
    pub fn resolve(&mut self, vocab_size: usize) -> Result<()> {
        const OP: &str = "Wav2Vec2RunConfig::resolve";
        if self.encoder.is_none() {
            let dir = self.pretrained.as_ref().ok_or_else(|| {
                Error::invalid(
                    OP,
                    "[model] kind = \"wav2vec2\" needs `pretrained` (a checkpoint directory) or an `encoder` table",
                )
            })?;
            if !dir.is_dir() {
                return Err(Error::io(OP, dir, "pretrained: not a directory"));
            }
            self.encoder = Some(Wav2Vec2Config::from_json_file(dir.join("config.json"))?);
            if self.preprocessor.is_none() {
                self.preprocessor = Some(Wav2Vec2Preprocessor::from_dir(dir)?);
            }
        }
        let pre = self.preprocessor.get_or_insert_with(Wav2Vec2Preprocessor::default);
        if pre.sampling_rate != 16_000 {
            return Err(Error::invalid(
                OP,
                format!("the checkpoint expects {} Hz audio; stapes trains on 16 kHz", pre.sampling_rate),
            ));
        }
        let e = self.encoder.as_mut().expect("filled above");
        let probs = [
            (self.mask_time_prob, &mut e.mask_time_prob),
            (self.layerdrop, &mut e.layerdrop),
            (self.hidden_dropout, &mut e.hidden_dropout),
            (self.activation_dropout, &mut e.activation_dropout),
            (self.attention_dropout, &mut e.attention_dropout),
            (self.feat_proj_dropout, &mut e.feat_proj_dropout),
            (self.final_dropout, &mut e.final_dropout),
        ];
        for (over, field) in probs {
            if let Some(v) = over {
                *field = v;
            }
        }
        if let Some(l) = self.mask_time_length {
            e.mask_time_length = l;
        }
        e.vocab_size = vocab_size;
        e.pad_token_id = 0;
        e.validate().map_err(|m| Error::invalid(OP, format!("[model.encoder]: {m}")))
    }
}

/// A wav2vec2 CTC model with its run configuration.
pub struct Wav2Vec2Acoustic {
    /// The model (state-dict names as transformers': `wav2vec2.*`, `lm_head.*`).
    pub model: Wav2Vec2ForCtc,
    /// The configuration, resolved (`encoder` and `preprocessor` filled).
    pub config: Wav2Vec2RunConfig,
}

impl Wav2Vec2Acoustic {
    fn build(cfg: &Wav2Vec2RunConfig, load_pretrained: bool) -> Result<Wav2Vec2Acoustic> {
        let enc = cfg.encoder.as_ref().ok_or_else(|| {
            Error::invalid("AcousticModel::new", "a wav2vec2 model needs its resolved `encoder` configuration")
        })?;
        let model = match (&cfg.pretrained, load_pretrained) {
            (Some(dir), true) => {
                Wav2Vec2ForCtc::from_pretrained_with_config(dir, enc, true, DType::F32, &Device::Cpu)?.0
            }
            _ => Wav2Vec2ForCtc::new(enc, DType::F32, &Device::Cpu)?,
        };
        if cfg.freeze_feature_encoder {
            model.freeze_feature_encoder();
        }
        let mut config = cfg.clone();
        config.preprocessor.get_or_insert_with(Wav2Vec2Preprocessor::default);
        Ok(Wav2Vec2Acoustic { model, config })
    }

    /// How audio is prepared for the model.
    pub fn preprocessor(&self) -> Wav2Vec2Preprocessor {
        self.config.preprocessor.clone().unwrap_or_default()
    }

    /// The run's characters as a transformers CTC vocabulary: `<pad>` (the blank) at 0, then
    /// the characters in id order with the space spelt `|`, the word delimiter.
    pub fn ctc_vocab(vocab: &Vocab) -> Result<CtcVocab> {
        let chars = vocab.chars();
        if chars.contains(&'|') && chars.contains(&' ') {
            return Err(Error::invalid(
                "Wav2Vec2Acoustic::ctc_vocab",
                "the vocabulary has both ' ' and '|', and transformers spells the space '|'",
            ));
        }
        let mut tokens = vec!["<pad>".to_string()];
        tokens.extend(chars.iter().map(|&c| if c == ' ' { "|".to_string() } else { c.to_string() }));
        let word_delimiter = tokens.iter().position(|t| t == "|");
        Ok(CtcVocab { tokens, blank: 0, word_delimiter })
    }

    /// Writes a checkpoint directory that transformers' `Wav2Vec2ForCTC.from_pretrained` and
    /// `Wav2Vec2Processor.from_pretrained` load (and [`Wav2Vec2Pipeline::load`]): `config.json`,
    /// `model.safetensors`, `vocab.json` and `tokenizer_config.json` for `vocab` (see
    /// [`Wav2Vec2Acoustic::ctc_vocab`]), `preprocessor_config.json`; each file atomically.
    ///
    /// [`Wav2Vec2Pipeline::load`]: wav2vec2::Wav2Vec2Pipeline::load
    pub fn save_pretrained(&self, vocab: &Vocab, dir: impl AsRef<std::path::Path>) -> Result<()> {
        let dir = dir.as_ref();
        if vocab.len() != self.model.config().vocab_size {
            return Err(Error::invalid(
                "Wav2Vec2Acoustic::save_pretrained",
                format!(
                    "{} symbols in the vocabulary, {} outputs in the model",
                    vocab.len(),
                    self.model.config().vocab_size
                ),
            ));
        }
        let ctc = Self::ctc_vocab(vocab)?;
        self.model.save_pretrained(dir)?;
        ctc.save(dir)?;
        self.preprocessor().save(dir)
    }
}

/// Which acoustic model to build: the `[model]` table of a run configuration, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// A [`Crdnn`].
    Crdnn(CrdnnConfig),
    /// A [`DeepSpeech2`].
    #[serde(rename = "deepspeech2")]
    DeepSpeech2(DeepSpeech2Config),
    /// A wav2vec2 CTC model, see [`Wav2Vec2RunConfig`].
    #[serde(rename = "wav2vec2")]
    Wav2Vec2(Box<Wav2Vec2RunConfig>),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Crdnn(CrdnnConfig::default())
    }
}

impl ModelConfig {
    /// Features per input frame (1 for wav2vec2, which takes the waveform).
    pub fn n_features(&self) -> usize {
        match self {
            ModelConfig::Crdnn(c) => c.n_features,
            ModelConfig::DeepSpeech2(c) => c.n_features,
            ModelConfig::Wav2Vec2(_) => 1,
        }
    }
    /// Output classes (0 for a wav2vec2 configuration not yet resolved).
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Crdnn(c) => c.vocab_size,
            ModelConfig::DeepSpeech2(c) => c.vocab_size,
            ModelConfig::Wav2Vec2(c) => c.encoder.as_ref().map_or(0, |e| e.vocab_size),
        }
    }
    /// Sets the feature count and the output classes, and for wav2vec2 resolves the
    /// configuration ([`Wav2Vec2RunConfig::resolve`]: the checkpoint's `config.json` is read).
    pub fn set_io(&mut self, n_features: usize, vocab_size: usize) -> Result<()> {
        match self {
            ModelConfig::Crdnn(c) => (c.n_features, c.vocab_size) = (n_features, vocab_size),
            ModelConfig::DeepSpeech2(c) => (c.n_features, c.vocab_size) = (n_features, vocab_size),
            ModelConfig::Wav2Vec2(c) => c.resolve(vocab_size)?,
        }
        Ok(())
    }
    /// A short name, `"CRDNN"`, `"DeepSpeech2"` or `"wav2vec2"`.
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Crdnn(_) => "CRDNN",
            ModelConfig::DeepSpeech2(_) => "DeepSpeech2",
            ModelConfig::Wav2Vec2(_) => "wav2vec2",
        }
    }
}

/// A CTC acoustic model of any of the architectures.
pub enum AcousticModel {
    /// A CRDNN.
    Crdnn(Crdnn),
    /// A DeepSpeech2.
    DeepSpeech2(DeepSpeech2),
    /// A wav2vec2 model with a CTC head.
    Wav2Vec2(Box<Wav2Vec2Acoustic>),
}

impl AcousticModel {
    /// Builds the model a configuration describes, randomly initialised (a wav2vec2
    /// configuration must be resolved; its `pretrained` weights are not read, see
    /// [`AcousticModel::for_training`]).
    pub fn new(cfg: &ModelConfig) -> Result<AcousticModel> {
        Ok(match cfg {
            ModelConfig::Crdnn(c) => AcousticModel::Crdnn(Crdnn::new(c.clone())?),
            ModelConfig::DeepSpeech2(c) => AcousticModel::DeepSpeech2(DeepSpeech2::new(c.clone())?),
            ModelConfig::Wav2Vec2(c) => AcousticModel::Wav2Vec2(Box::new(Wav2Vec2Acoustic::build(c, false)?)),
        })
    }
    /// The model a new training run starts from: as [`AcousticModel::new`], except that a
    /// wav2vec2 model takes its encoder's weights from the `pretrained` directory.
    pub fn for_training(cfg: &ModelConfig) -> Result<AcousticModel> {
        match cfg {
            ModelConfig::Wav2Vec2(c) => Ok(AcousticModel::Wav2Vec2(Box::new(Wav2Vec2Acoustic::build(c, true)?))),
            _ => AcousticModel::new(cfg),
        }
    }
    /// The configuration it was built from.
    pub fn config(&self) -> ModelConfig {
        match self {
            AcousticModel::Crdnn(m) => ModelConfig::Crdnn(m.config().clone()),
            AcousticModel::DeepSpeech2(m) => ModelConfig::DeepSpeech2(m.config().clone()),
            AcousticModel::Wav2Vec2(m) => ModelConfig::Wav2Vec2(Box::new(m.config.clone())),
        }
    }
    /// Logits `[B, T', vocab]` for features `[B, T, F]` (for wav2vec2: the prepared waveform
    /// `[B, S]`, see [`Wav2Vec2Acoustic::preprocessor`]).
    pub fn forward(&self, features: &Var, lengths: &[usize]) -> Result<Var> {
        match self {
            AcousticModel::Crdnn(m) => m.forward(features, lengths),
            AcousticModel::DeepSpeech2(m) => m.forward(features, lengths),
            AcousticModel::Wav2Vec2(m) => {
                // padding is masked where the checkpoint's feature extractor gives a mask (layer
                // norm models); group-norm models see the padded batch as in transformers
                let mask = m.preprocessor().return_attention_mask.then_some(lengths);
                if mask.is_none() && lengths.len() != features.dims().first().copied().unwrap_or(0) {
                    return Err(Error::invalid(
                        "AcousticModel::forward",
                        format!("{} lengths for a batch of shape {:?}", lengths.len(), features.dims()),
                    ));
                }
                Ok(m.model.forward(features, mask)?.0)
            }
        }
    }
    /// Output frames for input frames.
    pub fn output_lengths(&self, input_lengths: &[usize]) -> Vec<usize> {
        match self {
            AcousticModel::Crdnn(m) => m.output_lengths(input_lengths),
            AcousticModel::DeepSpeech2(m) => m.output_lengths(input_lengths),
            AcousticModel::Wav2Vec2(m) => input_lengths.iter().map(|&n| m.model.config().output_frames(n)).collect(),
        }
    }
    /// The parameters an optimizer updates: all but the frozen ones (a wav2vec2 feature encoder
    /// with `freeze_feature_encoder`).
    pub fn trainable_parameters(&self) -> Vec<Param> {
        self.parameters().into_iter().filter(|p| p.requires_grad()).collect()
    }
}

impl Module for AcousticModel {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        match self {
            AcousticModel::Crdnn(m) => m.children(),
            AcousticModel::DeepSpeech2(m) => m.children(),
            AcousticModel::Wav2Vec2(m) => m.model.children(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::{DType, Device, Tensor};

    #[test]
    fn shapes_names_and_errors() {
        let cfg = CrdnnConfig {
            n_features: 16,
            conv_channels: vec![4, 8],
            time_pool: vec![2, 1],
            rnn_hidden: 6,
            rnn_layers: 2,
            rnn_dropout: 0.0,
            vocab_size: 5,
        };
        let m = Crdnn::new(cfg.clone()).unwrap();
        let x = Var::constant(Tensor::randn([3, 10, 16], DType::F32, &Device::Cpu).unwrap());
        let y = m.forward(&x, &[10, 7, 4]).unwrap();
        assert_eq!(y.dims(), &[3, 5, 5]);
        assert_eq!(m.output_lengths(&[10, 7, 4]), vec![5, 3, 2]);
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"cnn.0.weight".to_string()));
        assert!(names.contains(&"rnn.weight_ih_l1_reverse".to_string()));
        assert!(names.contains(&"out.bias".to_string()));
        assert!(m.state_dict().contains_key("cnn.1.running_mean"));
        assert!(m.forward(&x, &[11, 1, 1]).is_err());
        assert!(Crdnn::new(CrdnnConfig { time_pool: vec![1], ..cfg }).is_err());
    }

    #[test]
    fn deepspeech2_shapes_names_and_lengths() {
        let cfg = DeepSpeech2Config {
            n_features: 20,
            conv_channels: vec![4, 4],
            conv_kernels: vec![[5, 7], [3, 5]],
            conv_strides: vec![[2, 2], [1, 2]],
            rnn_type: RnnType::Gru,
            rnn_hidden: 6,
            rnn_layers: 2,
            rnn_dropout: 0.0,
            vocab_size: 5,
        };
        let m = DeepSpeech2::new(cfg.clone()).unwrap();
        let x = Var::constant(Tensor::randn([2, 11, 20], DType::F32, &Device::Cpu).unwrap());
        let y = m.forward(&x, &[11, 6]).unwrap();
        // time: (11 + 4 - 5) / 2 + 1 = 6, then (6 + 2 - 3) / 1 + 1 = 6
        assert_eq!(y.dims(), &[2, 6, 5]);
        assert_eq!(m.output_lengths(&[11, 6]), vec![6, 3]);
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"conv.0.weight".to_string()), "{names:?}");
        assert!(!names.contains(&"conv.0.bias".to_string()));
        assert!(names.contains(&"rnn.weight_hh_l1_reverse".to_string()));
        let lstm = DeepSpeech2::new(DeepSpeech2Config { rnn_type: RnnType::Lstm, ..cfg.clone() }).unwrap();
        assert_eq!(lstm.forward(&x, &[11, 6]).unwrap().dims(), &[2, 6, 5]);
        assert!(DeepSpeech2::new(DeepSpeech2Config { conv_strides: vec![[2, 2]], ..cfg }).is_err());
        assert!(m.forward(&x, &[12, 1]).is_err());
    }
}
