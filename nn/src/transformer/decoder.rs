//! `TransformerDecoderLayer` and the `TransformerDecoder` stack.

use super::encoder::copy_values;
use super::{feed_forward_block, Activation, TransformerLayerConfig};
use crate::attention::{MhaOptions, MultiheadAttention};
use crate::layers::{Dropout, LayerNorm, Linear};
use crate::module::{Forward, Module};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Result, Tensor};

/// The masks and causal hints of a decoder forward pass, as PyTorch's keyword arguments
/// (all `None`/false by default). Boolean masks are u8 with 1 = not allowed; float masks are
/// additive.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecoderMasks<'a> {
    /// `[T, T]` or `[B*nhead, T, T]`: the target self-attention mask.
    pub tgt_mask: Option<&'a Tensor>,
    /// `[T, S]` or `[B*nhead, T, S]`: the cross-attention mask.
    pub memory_mask: Option<&'a Tensor>,
    /// `[B, T]`: padded target positions.
    pub tgt_key_padding_mask: Option<&'a Tensor>,
    /// `[B, S]`: padded memory positions.
    pub memory_key_padding_mask: Option<&'a Tensor>,
    /// `tgt_mask` is causal; without a `tgt_mask`, the causal mask is applied.
    pub tgt_is_causal: bool,
    /// `memory_mask` is causal; without a `memory_mask`, the causal mask is applied.
    pub memory_is_causal: bool,
}

/// `nn.TransformerDecoderLayer`: self-attention over the target, cross-attention over the
/// encoder's memory, and a feed-forward block, each with a residual connection and a norm.
///
/// Children, named as in PyTorch: `self_attn`, `multihead_attn`, `linear1`, `dropout`,
/// `linear2`, `norm1`, `norm2`, `norm3`, `dropout1`, `dropout2`, `dropout3`.
pub struct TransformerDecoderLayer {
    /// Self-attention over the target.
    pub self_attn: MultiheadAttention,
    /// Cross-attention (queries from the target, keys and values from the memory).
    pub multihead_attn: MultiheadAttention,
    /// `d_model -> dim_feedforward`.
    pub linear1: Linear,
    /// Dropout after the activation.
    pub dropout: Dropout,
    /// `dim_feedforward -> d_model`.
    pub linear2: Linear,
    /// Norm of the self-attention sub-block.
    pub norm1: LayerNorm,
    /// Norm of the cross-attention sub-block.
    pub norm2: LayerNorm,
    /// Norm of the feed-forward sub-block.
    pub norm3: LayerNorm,
    /// Dropout on the self-attention branch.
    pub dropout1: Dropout,
    /// Dropout on the cross-attention branch.
    pub dropout2: Dropout,
    /// Dropout on the feed-forward branch.
    pub dropout3: Dropout,
    /// The feed-forward activation.
    pub activation: Activation,
    /// Pre-norm when true.
    pub norm_first: bool,
}

impl TransformerDecoderLayer {
    /// `nn.TransformerDecoderLayer(d_model, nhead)` with PyTorch's defaults, f32 on the CPU.
    pub fn new(d_model: usize, nhead: usize) -> Result<TransformerDecoderLayer> {
        TransformerDecoderLayer::from_config(&TransformerLayerConfig::new(d_model, nhead), DType::F32, &Device::Cpu)
    }

    /// A layer from its full configuration.
    pub fn from_config(cfg: &TransformerLayerConfig, dtype: DType, device: &Device) -> Result<TransformerDecoderLayer> {
        let self_attn = cfg.attention(dtype, device)?;
        let multihead_attn = cfg.attention(dtype, device)?;
        let (linear1, dropout, linear2) = cfg.feed_forward(dtype, device)?;
        Ok(TransformerDecoderLayer {
            self_attn,
            multihead_attn,
            linear1,
            dropout,
            linear2,
            norm1: cfg.norm(dtype, device)?,
            norm2: cfg.norm(dtype, device)?,
            norm3: cfg.norm(dtype, device)?,
            dropout1: Dropout::new(cfg.dropout)?,
            dropout2: Dropout::new(cfg.dropout)?,
            dropout3: Dropout::new(cfg.dropout)?,
            activation: cfg.activation,
            norm_first: cfg.norm_first,
        })
    }

    /// `layer(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
    /// memory_key_padding_mask, tgt_is_causal, memory_is_causal)`: `tgt` is `[T, B, E]`,
    /// `memory` `[S, B, E]` (batch first: `[B, T, E]`, `[B, S, E]`).
    pub fn forward(&self, tgt: &Var, memory: &Var, m: &DecoderMasks) -> Result<Var> {
        let sa = |x: &Var| -> Result<Var> {
            let opts = MhaOptions::default()
                .attn_mask(m.tgt_mask)
                .key_padding_mask(m.tgt_key_padding_mask)
                .need_weights(false)
                .is_causal(m.tgt_is_causal);
            self.dropout1.forward(&self.self_attn.forward(x, x, x, &opts)?.0)
        };
        let mha = |x: &Var| -> Result<Var> {
            let opts = MhaOptions::default()
                .attn_mask(m.memory_mask)
                .key_padding_mask(m.memory_key_padding_mask)
                .need_weights(false)
                .is_causal(m.memory_is_causal);
            self.dropout2.forward(&self.multihead_attn.forward(x, memory, memory, &opts)?.0)
        };
        let ff = |x: &Var| {
            feed_forward_block(x, &self.linear1, self.activation, &self.dropout, &self.linear2, &self.dropout3)
        };
        if self.norm_first {
            let x = tgt.add(&sa(&self.norm1.forward(tgt)?)?)?;
            let x = x.add(&mha(&self.norm2.forward(&x)?)?)?;
            x.add(&ff(&self.norm3.forward(&x)?)?)
        } else {
            let x = self.norm1.forward(&tgt.add(&sa(tgt)?)?)?;
            let x = self.norm2.forward(&x.add(&mha(&x)?)?)?;
            self.norm3.forward(&x.add(&ff(&x)?)?)
        }
    }
}

impl Module for TransformerDecoderLayer {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("self_attn".to_string(), &self.self_attn as &dyn Module),
            ("multihead_attn".to_string(), &self.multihead_attn),
            ("linear1".to_string(), &self.linear1),
            ("dropout".to_string(), &self.dropout),
            ("linear2".to_string(), &self.linear2),
            ("norm1".to_string(), &self.norm1),
            ("norm2".to_string(), &self.norm2),
            ("norm3".to_string(), &self.norm3),
            ("dropout1".to_string(), &self.dropout1),
            ("dropout2".to_string(), &self.dropout2),
            ("dropout3".to_string(), &self.dropout3),
        ]
    }
}

/// `nn.TransformerDecoder(decoder_layer, num_layers, norm)`: a stack of decoder layers, each
/// attending to the same memory, and an optional final LayerNorm. Children: `layers.0`, ...,
/// and `norm`.
pub struct TransformerDecoder {
    /// The layers, applied in order.
    pub layers: Vec<TransformerDecoderLayer>,
    /// The final norm, if any.
    pub norm: Option<LayerNorm>,
}

impl TransformerDecoder {
    /// `num_layers` layers built from `cfg`, all starting with the same parameter values (as
    /// PyTorch's deep copies of one layer).
    pub fn new(
        cfg: &TransformerLayerConfig,
        num_layers: usize,
        norm: Option<LayerNorm>,
        dtype: DType,
        device: &Device,
    ) -> Result<TransformerDecoder> {
        let layers: Vec<TransformerDecoderLayer> =
            (0..num_layers).map(|_| TransformerDecoderLayer::from_config(cfg, dtype, device)).collect::<Result<_>>()?;
        for l in layers.iter().skip(1) {
            copy_values(&layers[0], l)?;
        }
        Ok(TransformerDecoder { layers, norm })
    }

    /// A stack of the given layers.
    pub fn from_layers(layers: Vec<TransformerDecoderLayer>, norm: Option<LayerNorm>) -> TransformerDecoder {
        TransformerDecoder { layers, norm }
    }

    /// `decoder(tgt, memory, ...masks)`: each layer with the same memory and masks, then the
    /// norm.
    pub fn forward(&self, tgt: &Var, memory: &Var, masks: &DecoderMasks) -> Result<Var> {
        let mut x = tgt.clone();
        for layer in &self.layers {
            x = layer.forward(&x, memory, masks)?;
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

impl Module for TransformerDecoder {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> =
            self.layers.iter().enumerate().map(|(i, l)| (format!("layers.{i}"), l as &dyn Module)).collect();
        if let Some(n) = &self.norm {
            v.push(("norm".to_string(), n));
        }
        v
    }
}
