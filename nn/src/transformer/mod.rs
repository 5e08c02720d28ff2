//! The Transformer of "Attention is all you need", named and defaulted as `torch.nn`:
//! [`TransformerEncoderLayer`], [`TransformerDecoderLayer`], the stacks [`TransformerEncoder`]
//! and [`TransformerDecoder`], the full [`Transformer`], and the sinusoidal
//! [`PositionalEncoding`] of the PyTorch tutorial.
//!
//! Shapes are sequence-first (`[T, B, E]`) unless `batch_first`, as in PyTorch. Masks are
//! boolean (u8, 1 = not allowed) or float (additive, `-inf` = not allowed); see
//! [`crate::attention::MhaOptions`]. Every `state_dict` name matches PyTorch's, so a PyTorch
//! checkpoint loads with a strict [`crate::Module::load_state_dict`].
//!
//! The computation is PyTorch's plain math path (the one it takes in training); its inference
//! fast path (`_transformer_encoder_layer_fwd`, nested tensors) computes the same function.

mod decoder;
mod encoder;
mod model;
mod positional;

pub use decoder::{DecoderMasks, TransformerDecoder, TransformerDecoderLayer};
pub use encoder::{TransformerEncoder, TransformerEncoderLayer};
pub use model::{Transformer, TransformerConfig, TransformerMasks};
pub use positional::{sinusoidal_table, PositionalEncoding};

pub use crate::attention::generate_square_subsequent_mask;

use crate::attention::{MultiheadAttention, MultiheadAttentionConfig};
use crate::layers::{Dropout, LayerNorm, Linear};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result};

/// The feed-forward activation of a Transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// `F.relu` (PyTorch's default).
    #[default]
    Relu,
    /// `F.gelu` (exact, erf form).
    Gelu,
}

impl Activation {
    /// Parses PyTorch's names, `"relu"` and `"gelu"`.
    pub fn from_name(name: &str) -> Result<Activation> {
        match name {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            _ => Err(Error::invalid("Activation::from_name", format!("activation should be relu/gelu, not {name:?}"))),
        }
    }
    /// Applies the activation.
    pub fn apply(self, x: &Var) -> Result<Var> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
        }
    }
}

/// The constructor arguments shared by [`TransformerEncoderLayer`] and
/// [`TransformerDecoderLayer`], defaulted as PyTorch: `dim_feedforward=2048`, `dropout=0.1`,
/// `activation=relu`, `layer_norm_eps=1e-5`, `batch_first=False`, `norm_first=False`,
/// `bias=True`.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerLayerConfig {
    /// Model dim.
    pub d_model: usize,
    /// Number of attention heads; must divide `d_model`.
    pub nhead: usize,
    /// Hidden size of the feed-forward block.
    pub dim_feedforward: usize,
    /// Dropout probability (attention weights, feed-forward, residual branches).
    pub dropout: f64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Inputs and outputs are `[B, T, E]`.
    pub batch_first: bool,
    /// Pre-norm (`x + f(norm(x))`) instead of post-norm (`norm(x + f(x))`).
    pub norm_first: bool,
    /// Whether linear layers and LayerNorms have biases.
    pub bias: bool,
}

impl TransformerLayerConfig {
    /// PyTorch's defaults for `d_model` and `nhead`.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        TransformerLayerConfig {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
        }
    }

    fn attention(&self, dtype: DType, device: &Device) -> Result<MultiheadAttention> {
        let cfg = MultiheadAttentionConfig {
            embed_dim: self.d_model,
            num_heads: self.nhead,
            dropout: self.dropout,
            bias: self.bias,
            batch_first: self.batch_first,
        };
        MultiheadAttention::from_config(&cfg, dtype, device)
    }

    fn norm(&self, dtype: DType, device: &Device) -> Result<LayerNorm> {
        LayerNorm::new_with(&[self.d_model], self.layer_norm_eps, true, self.bias, dtype, device)
    }

    fn feed_forward(&self, dtype: DType, device: &Device) -> Result<(Linear, Dropout, Linear)> {
        if self.dim_feedforward == 0 {
            return Err(Error::invalid("TransformerLayer::new", "dim_feedforward must be positive"));
        }
        Ok((
            Linear::new_with(self.d_model, self.dim_feedforward, self.bias, dtype, device)?,
            Dropout::new(self.dropout)?,
            Linear::new_with(self.dim_feedforward, self.d_model, self.bias, dtype, device)?,
        ))
    }
}

/// `linear2(dropout(activation(linear1(x))))`, then `dropout2`: the feed-forward block.
fn feed_forward_block(
    x: &Var,
    linear1: &Linear,
    activation: Activation,
    dropout: &Dropout,
    linear2: &Linear,
    dropout2: &Dropout,
) -> Result<Var> {
    use crate::module::Forward;
    let h = activation.apply(&linear1.forward(x)?)?;
    dropout2.forward(&linear2.forward(&dropout.forward(&h)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Forward, Module};
    use stapes_tensor::{manual_seed, Tensor};

    fn names(m: &dyn Module) -> Vec<String> {
        m.named_parameters().into_iter().map(|(n, _)| n).collect()
    }

    const MHA: [&str; 4] = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"];

    #[test]
    fn state_dict_names_match_pytorch() {
        let small = TransformerLayerConfig { dim_feedforward: 16, ..TransformerLayerConfig::new(8, 2) };
        let enc = TransformerEncoderLayer::from_config(&small, DType::F32, &Device::Cpu).unwrap();
        let mut want: Vec<String> = MHA.iter().map(|n| format!("self_attn.{n}")).collect();
        for n in ["linear1", "linear2", "norm1", "norm2"] {
            want.push(format!("{n}.weight"));
            want.push(format!("{n}.bias"));
        }
        assert_eq!(names(&enc), want);
        let dec = TransformerDecoderLayer::from_config(&small, DType::F32, &Device::Cpu).unwrap();
        let mut want: Vec<String> = MHA.iter().map(|n| format!("self_attn.{n}")).collect();
        want.extend(MHA.iter().map(|n| format!("multihead_attn.{n}")));
        for n in ["linear1", "linear2", "norm1", "norm2", "norm3"] {
            want.push(format!("{n}.weight"));
            want.push(format!("{n}.bias"));
        }
        assert_eq!(names(&dec), want);
        let cfg = TransformerConfig { layer: small, num_encoder_layers: 2, num_decoder_layers: 1 };
        let t = Transformer::new(&cfg, DType::F32, &Device::Cpu).unwrap();
        let n = names(&t);
        assert_eq!(n.len(), 2 * 12 + 2 + 18 + 2);
        for k in ["encoder.layers.1.norm2.bias", "encoder.norm.weight", "decoder.layers.0.multihead_attn.in_proj_bias"]
        {
            assert!(n.contains(&k.to_string()), "{k}");
        }
        assert_eq!(n.last().unwrap(), "decoder.norm.bias");
        let nb = TransformerLayerConfig { bias: false, ..TransformerLayerConfig::new(8, 2) };
        let enc = TransformerEncoderLayer::from_config(&nb, DType::F32, &Device::Cpu).unwrap();
        assert!(names(&enc).iter().all(|n| !n.ends_with("bias")));
    }

    #[test]
    fn stacks_start_from_copies_and_transformer_redraws_xavier() {
        manual_seed(1);
        let cfg = TransformerLayerConfig { dim_feedforward: 16, ..TransformerLayerConfig::new(8, 2) };
        let enc = TransformerEncoder::new(&cfg, 3, None, DType::F32, &Device::Cpu).unwrap();
        let w0 = enc.layers[0].linear1.weight.tensor();
        assert!(enc.layers[2].linear1.weight.tensor().equal(&w0).unwrap());
        assert!(!enc.layers[2].linear1.weight.same(&enc.layers[0].linear1.weight));
        let t = Transformer::new(&TransformerConfig { layer: cfg, ..Default::default() }, DType::F32, &Device::Cpu)
            .unwrap();
        let (a, b) = (&t.encoder.layers[0].linear1.weight, &t.encoder.layers[1].linear1.weight);
        assert!(!a.tensor().equal(&b.tensor()).unwrap());
        // xavier bound for [16, 8]: sqrt(6 / 24) = 0.5.
        let w = a.tensor().to_vec::<f32>().unwrap();
        assert!(w.iter().all(|x| x.abs() <= 0.5) && w.iter().any(|x| x.abs() > 0.4));
        let d = TransformerConfig::default();
        assert_eq!((d.layer.d_model, d.layer.nhead, d.num_encoder_layers, d.layer.dim_feedforward), (512, 8, 6, 2048));
    }

    #[test]
    fn layers_run_and_check_shapes() {
        manual_seed(2);
        let cfg = TransformerLayerConfig {
            dim_feedforward: 16,
            dropout: 0.0,
            activation: Activation::Gelu,
            ..TransformerLayerConfig::new(8, 2)
        };
        let t = Transformer::new(
            &TransformerConfig { layer: cfg, num_encoder_layers: 1, num_decoder_layers: 1 },
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
        let src = Var::leaf(Tensor::randn([6, 2, 8], DType::F64, &Device::Cpu).unwrap());
        let tgt = Var::leaf(Tensor::randn([4, 2, 8], DType::F64, &Device::Cpu).unwrap());
        let causal = Transformer::generate_square_subsequent_mask(4, DType::F64, &Device::Cpu).unwrap();
        let with_mask = TransformerMasks { tgt_mask: Some(&causal), ..Default::default() };
        let y = t.forward(&src, &tgt, &with_mask).unwrap();
        assert_eq!(y.dims(), [4, 2, 8]);
        let hinted = TransformerMasks { tgt_is_causal: true, ..Default::default() };
        assert!(t.forward(&src, &tgt, &hinted).unwrap().tensor().equal(y.tensor()).unwrap());
        let bad = Var::leaf(Tensor::randn([4, 3, 8], DType::F64, &Device::Cpu).unwrap());
        assert!(t.forward(&src, &bad, &Default::default()).is_err());
        let bad = Var::leaf(Tensor::randn([4, 2, 6], DType::F64, &Device::Cpu).unwrap());
        assert!(t.forward(&src, &bad, &Default::default()).is_err());
        assert!(Activation::from_name("swish").is_err());
        assert!(TransformerEncoderLayer::new(10, 3).is_err());
        // eval/train reaches every dropout.
        t.eval();
        assert!(!t.decoder.layers[0].dropout3.is_training() && !t.encoder.layers[0].self_attn.is_training());
    }

    #[test]
    fn positional_table_and_forward() {
        let t = sinusoidal_table(10, 6).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(&t[..6], &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        // pos 3, pair 1: angle 3 / 10000^(2/6).
        let a = 3.0 / 10000f64.powf(2.0 / 6.0);
        assert!((t[3 * 6 + 2] as f64 - a.sin()).abs() < 1e-6 && (t[3 * 6 + 3] as f64 - a.cos()).abs() < 1e-6);
        let odd = sinusoidal_table(4, 5).unwrap();
        assert_eq!(odd.dims(), [4, 5]);
        let pe = PositionalEncoding::with_max_len(6, 0.0, 10, true).unwrap();
        assert!(pe.state_dict().is_empty());
        let x = Var::leaf(Tensor::zeros([2, 3, 6], DType::F64, &Device::Cpu).unwrap());
        let y = pe.forward(&x).unwrap().tensor().to_vec::<f64>().unwrap();
        assert_eq!(&y[..18], &sinusoidal_table(3, 6).unwrap().to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap());
        assert!(pe.forward(&Var::leaf(Tensor::zeros([2, 11, 6], DType::F64, &Device::Cpu).unwrap())).is_err());
        assert!(pe.forward(&Var::leaf(Tensor::zeros([2, 3, 5], DType::F64, &Device::Cpu).unwrap())).is_err());
    }
}
