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
//! [`AcousticModel`] holds either, built from a [`ModelConfig`] (the `[model]` table of a run's
//! TOML configuration, `kind = "crdnn"` or `kind = "deepspeech2"`).
//!
//! Parameter names follow the module tree (`cnn.0.weight`, `cnn.1.running_mean`,
//! `rnn.weight_ih_l0_reverse`, `out.weight`), so an equivalent PyTorch model
//! (`benches/torch/crdnn.py` style: `nn.Sequential` CNN, `nn.LSTM`, `nn.Linear`) exchanges
//! `state_dict`s with it.

pub mod wav2vec2;

use serde::{Deserialize, Serialize};
use stapes_autograd::Var;
use stapes_nn::layers::{
    BatchNorm2d, Conv2d, Conv2dConfig, ConvPadding, Hardtanh, Linear, MaxPool2d, ReLU, Sequential,
};
use stapes_nn::rnn::{Gru, Lstm, RnnConfig};
use stapes_nn::{Forward, Module};
use stapes_tensor::{Error, Result};
use std::fmt;

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

/// Which acoustic model to build: the `[model]` table of a run configuration, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// A [`Crdnn`].
    Crdnn(CrdnnConfig),
    /// A [`DeepSpeech2`].
    #[serde(rename = "deepspeech2")]
    DeepSpeech2(DeepSpeech2Config),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Crdnn(CrdnnConfig::default())
    }
}

impl ModelConfig {
    /// Features per input frame.
    pub fn n_features(&self) -> usize {
        match self {
            ModelConfig::Crdnn(c) => c.n_features,
            ModelConfig::DeepSpeech2(c) => c.n_features,
        }
    }
    /// Output classes.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Crdnn(c) => c.vocab_size,
            ModelConfig::DeepSpeech2(c) => c.vocab_size,
        }
    }
    /// Sets the feature count and the output classes.
    pub fn set_io(&mut self, n_features: usize, vocab_size: usize) {
        match self {
            ModelConfig::Crdnn(c) => (c.n_features, c.vocab_size) = (n_features, vocab_size),
            ModelConfig::DeepSpeech2(c) => (c.n_features, c.vocab_size) = (n_features, vocab_size),
        }
    }
    /// A short name, `"CRDNN"` or `"DeepSpeech2"`.
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Crdnn(_) => "CRDNN",
            ModelConfig::DeepSpeech2(_) => "DeepSpeech2",
        }
    }
}

/// A CTC acoustic model of either architecture.
pub enum AcousticModel {
    /// A CRDNN.
    Crdnn(Crdnn),
    /// A DeepSpeech2.
    DeepSpeech2(DeepSpeech2),
}

impl AcousticModel {
    /// Builds the model a configuration describes.
    pub fn new(cfg: &ModelConfig) -> Result<AcousticModel> {
        Ok(match cfg {
            ModelConfig::Crdnn(c) => AcousticModel::Crdnn(Crdnn::new(c.clone())?),
            ModelConfig::DeepSpeech2(c) => AcousticModel::DeepSpeech2(DeepSpeech2::new(c.clone())?),
        })
    }
    /// The configuration it was built from.
    pub fn config(&self) -> ModelConfig {
        match self {
            AcousticModel::Crdnn(m) => ModelConfig::Crdnn(m.config().clone()),
            AcousticModel::DeepSpeech2(m) => ModelConfig::DeepSpeech2(m.config().clone()),
        }
    }
    /// Logits `[B, T', vocab]` for features `[B, T, F]`.
    pub fn forward(&self, features: &Var, lengths: &[usize]) -> Result<Var> {
        match self {
            AcousticModel::Crdnn(m) => m.forward(features, lengths),
            AcousticModel::DeepSpeech2(m) => m.forward(features, lengths),
        }
    }
    /// Output frames for input frames.
    pub fn output_lengths(&self, input_lengths: &[usize]) -> Vec<usize> {
        match self {
            AcousticModel::Crdnn(m) => m.output_lengths(input_lengths),
            AcousticModel::DeepSpeech2(m) => m.output_lengths(input_lengths),
        }
    }
}

impl Module for AcousticModel {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        match self {
            AcousticModel::Crdnn(m) => m.children(),
            AcousticModel::DeepSpeech2(m) => m.children(),
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
