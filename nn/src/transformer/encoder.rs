//! `TransformerEncoderLayer` and the `TransformerEncoder` stack.

use super::{feed_forward_block, Activation, TransformerLayerConfig};
use crate::attention::{MhaOptions, MultiheadAttention};
use crate::layers::{Dropout, LayerNorm, Linear};
use crate::module::{Forward, Module};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Result, Tensor};

/// `nn.TransformerEncoderLayer`: self-attention and a feed-forward block, each with a residual
/// connection and a LayerNorm (after the residual sum, or before the block with `norm_first`).
///
/// Children, named as in PyTorch: `self_attn`, `linear1`, `dropout`, `linear2`, `norm1`,
/// `norm2`, `dropout1`, `dropout2`.
pub struct TransformerEncoderLayer {
    /// Self-attention.
    pub self_attn: MultiheadAttention,
    /// `d_model -> dim_feedforward`.
    pub linear1: Linear,
    /// Dropout after the activation.
    pub dropout: Dropout,
    /// `dim_feedforward -> d_model`.
    pub linear2: Linear,
    /// Norm of the attention sub-block.
    pub norm1: LayerNorm,
    /// Norm of the feed-forward sub-block.
    pub norm2: LayerNorm,
    /// Dropout on the attention branch.
    pub dropout1: Dropout,
    /// Dropout on the feed-forward branch.
    pub dropout2: Dropout,
    /// The feed-forward activation.
    pub activation: Activation,
    /// Pre-norm when true.
    pub norm_first: bool,
}

impl TransformerEncoderLayer {
    /// `nn.TransformerEncoderLayer(d_model, nhead)` with PyTorch's defaults, f32 on the CPU.
    pub fn new(d_model: usize, nhead: usize) -> Result<TransformerEncoderLayer> {
        TransformerEncoderLayer::from_config(&TransformerLayerConfig::new(d_model, nhead), DType::F32, &Device::Cpu)
    }

    /// A layer from its full configuration (PyTorch's initialisation of each sub-layer).
    pub fn from_config(cfg: &TransformerLayerConfig, dtype: DType, device: &Device) -> Result<TransformerEncoderLayer> {
        let self_attn = cfg.attention(dtype, device)?;
        let (linear1, dropout, linear2) = cfg.feed_forward(dtype, device)?;
        Ok(TransformerEncoderLayer {
            self_attn,
            linear1,
            dropout,
            linear2,
            norm1: cfg.norm(dtype, device)?,
            norm2: cfg.norm(dtype, device)?,
            dropout1: Dropout::new(cfg.dropout)?,
            dropout2: Dropout::new(cfg.dropout)?,
            activation: cfg.activation,
            norm_first: cfg.norm_first,
        })
    }

    /// `layer(src, src_mask, src_key_padding_mask, is_causal)`: `src` is `[S, B, E]`
    /// (`[B, S, E]` when batch-first, or unbatched `[S, E]`); `src_mask` is `[S, S]` or
    /// `[B*nhead, S, S]`; `src_key_padding_mask` is `[B, S]`. With `is_causal` and no
    /// `src_mask`, the causal mask is applied.
    pub fn forward(
        &self,
        src: &Var,
        src_mask: Option<&Tensor>,
        src_key_padding_mask: Option<&Tensor>,
        is_causal: bool,
    ) -> Result<Var> {
        let sa = |x: &Var| -> Result<Var> {
            let opts = MhaOptions::default()
                .attn_mask(src_mask)
                .key_padding_mask(src_key_padding_mask)
                .need_weights(false)
                .is_causal(is_causal);
            self.dropout1.forward(&self.self_attn.forward(x, x, x, &opts)?.0)
        };
        let ff = |x: &Var| {
            feed_forward_block(x, &self.linear1, self.activation, &self.dropout, &self.linear2, &self.dropout2)
        };
        if self.norm_first {
            let x = src.add(&sa(&self.norm1.forward(src)?)?)?;
            x.add(&ff(&self.norm2.forward(&x)?)?)
        } else {
            let x = self.norm1.forward(&src.add(&sa(src)?)?)?;
            self.norm2.forward(&x.add(&ff(&x)?)?)
        }
    }
}

impl Module for TransformerEncoderLayer {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("self_attn".to_string(), &self.self_attn as &dyn Module),
            ("linear1".to_string(), &self.linear1),
            ("dropout".to_string(), &self.dropout),
            ("linear2".to_string(), &self.linear2),
            ("norm1".to_string(), &self.norm1),
            ("norm2".to_string(), &self.norm2),
            ("dropout1".to_string(), &self.dropout1),
            ("dropout2".to_string(), &self.dropout2),
        ]
    }
}

/// The layer without masks.
impl Forward for TransformerEncoderLayer {
    fn forward(&self, x: &Var) -> Result<Var> {
        TransformerEncoderLayer::forward(self, x, None, None, false)
    }
}

/// Copies every parameter value of `from` into `to` (same structure): the deep copy PyTorch's
/// `_get_clones` makes of a layer.
pub(super) fn copy_values(from: &dyn Module, to: &dyn Module) -> Result<()> {
    to.load_state_dict(&from.state_dict(), true).map(drop)
}

/// `nn.TransformerEncoder(encoder_layer, num_layers, norm)`: a stack of encoder layers and an
/// optional final LayerNorm. Children: `layers.0`, `layers.1`, ..., and `norm`.
pub struct TransformerEncoder {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer>,
    /// The final norm, if any.
    pub norm: Option<LayerNorm>,
}

impl TransformerEncoder {
    /// `num_layers` layers built from `cfg`. Like PyTorch, which deep-copies the one layer it
    /// is given, all layers start with the same parameter values (independent parameters).
    pub fn new(
        cfg: &TransformerLayerConfig,
        num_layers: usize,
        norm: Option<LayerNorm>,
        dtype: DType,
        device: &Device,
    ) -> Result<TransformerEncoder> {
        let layers: Vec<TransformerEncoderLayer> =
            (0..num_layers).map(|_| TransformerEncoderLayer::from_config(cfg, dtype, device)).collect::<Result<_>>()?;
        for l in layers.iter().skip(1) {
            copy_values(&layers[0], l)?;
        }
        Ok(TransformerEncoder { layers, norm })
    }

    /// A stack of the given layers (e.g. independently initialised ones).
    pub fn from_layers(layers: Vec<TransformerEncoderLayer>, norm: Option<LayerNorm>) -> TransformerEncoder {
        TransformerEncoder { layers, norm }
    }

    /// `encoder(src, mask, src_key_padding_mask, is_causal)`: each layer with the same masks,
    /// then the norm.
    pub fn forward(
        &self,
        src: &Var,
        mask: Option<&Tensor>,
        src_key_padding_mask: Option<&Tensor>,
        is_causal: bool,
    ) -> Result<Var> {
        let mut x = src.clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask, src_key_padding_mask, is_causal)?;
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

impl Module for TransformerEncoder {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> =
            self.layers.iter().enumerate().map(|(i, l)| (format!("layers.{i}"), l as &dyn Module)).collect();
        if let Some(n) = &self.norm {
            v.push(("norm".to_string(), n));
        }
        v
    }
}

/// The stack without masks.
impl Forward for TransformerEncoder {
    fn forward(&self, x: &Var) -> Result<Var> {
        TransformerEncoder::forward(self, x, None, None, false)
    }
}
