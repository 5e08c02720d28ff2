//! Speech recognisers trained with CTC.
//!
//! [`Crdnn`]: convolutional blocks over (time, frequency) — Conv2d, BatchNorm2d, ReLU and a
//! max-pool that halves the frequency axis (and the time axis where asked) —, then a
//! bidirectional multi-layer LSTM over time, then a linear projection to the vocabulary
//! (blank included). The SpeechBrain reference baseline is 3 conv blocks starting at 64
//! channels and a BiLSTM of hidden size 512; [`CrdnnConfig::default`] is that, and the demo uses
//! a smaller one.
//!
//! Parameter names follow the module tree (`cnn.0.weight`, `cnn.1.running_mean`,
//! `rnn.weight_ih_l0_reverse`, `out.weight`), so an equivalent PyTorch model
//! (`benches/torch/crdnn.py` style: `nn.Sequential` CNN, `nn.LSTM`, `nn.Linear`) exchanges
//! `state_dict`s with it.

use serde::{Deserialize, Serialize};
use stapes_autograd::Var;
use stapes_nn::layers::{BatchNorm2d, Conv2d, Conv2dConfig, ConvPadding, Linear, MaxPool2d, ReLU, Sequential};
use stapes_nn::rnn::{Lstm, RnnConfig};
use stapes_nn::{Forward, Module};
use stapes_tensor::{Error, Result};

/// The shape of a [`Crdnn`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Output classes, blank included.
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
        let d = features.dims();
        if d.len() != 3 || d[2] != self.cfg.n_features {
            return Err(Error::shape(
                "Crdnn::forward",
                format!("expects features [B, T, {}], got {d:?}", self.cfg.n_features),
            ));
        }
        let (b, t) = (d[0], d[1]);
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
            return Err(Error::invalid("Crdnn::forward", format!("lengths {lengths:?} for a batch [B={b}, T={t}]")));
        }
        let x = self.cnn.forward(&features.unsqueeze(1usize)?)?; // [B, C, T', F']
        let xd = x.dims().to_vec();
        let x = x.permute(&[0, 2, 1, 3])?.reshape([xd[0], xd[2], xd[1] * xd[3]])?; // [B, T', C·F']
        let out_lens: Vec<usize> = self.output_lengths(lengths).into_iter().map(|l| l.min(xd[2])).collect();
        let h = self.rnn.forward(&x, None, Some(&out_lens))?.output;
        self.out.forward(&h)
    }
}

impl Module for Crdnn {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("cnn".into(), &self.cnn as &dyn Module), ("rnn".into(), &self.rnn), ("out".into(), &self.out)]
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
}
