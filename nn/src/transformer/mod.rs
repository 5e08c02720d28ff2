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
