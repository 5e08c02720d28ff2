//! `nn.Transformer`: an encoder stack and a decoder stack, each with a final LayerNorm.

use super::{DecoderMasks, TransformerDecoder, TransformerEncoder, TransformerLayerConfig};
use crate::init::xavier_uniform;
use crate::module::Module;
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

/// The constructor arguments of [`Transformer`], defaulted as `nn.Transformer()`:
/// `d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
/// dropout=0.1, activation=relu, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
/// bias=True`.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerConfig {
    /// The configuration of every encoder and decoder layer.
    pub layer: TransformerLayerConfig,
    /// Encoder depth.
    pub num_encoder_layers: usize,
    /// Decoder depth.
    pub num_decoder_layers: usize,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        TransformerConfig { layer: TransformerLayerConfig::new(512, 8), num_encoder_layers: 6, num_decoder_layers: 6 }
    }
}

/// The masks and causal hints of [`Transformer::forward`], as PyTorch's keyword arguments.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransformerMasks<'a> {
    /// `[S, S]` or `[B*nhead, S, S]`: the encoder self-attention mask.
    pub src_mask: Option<&'a Tensor>,
    /// `[T, T]` or `[B*nhead, T, T]`: the decoder self-attention mask (usually
    /// [`Transformer::generate_square_subsequent_mask`]).
    pub tgt_mask: Option<&'a Tensor>,
    /// `[T, S]` or `[B*nhead, T, S]`: the cross-attention mask.
    pub memory_mask: Option<&'a Tensor>,
    /// `[B, S]`: padded source positions.
    pub src_key_padding_mask: Option<&'a Tensor>,
    /// `[B, T]`: padded target positions.
    pub tgt_key_padding_mask: Option<&'a Tensor>,
    /// `[B, S]`: padded memory positions (usually the source's padding mask).
    pub memory_key_padding_mask: Option<&'a Tensor>,
    /// `src_mask` is causal (or, without one, apply the causal mask).
    pub src_is_causal: bool,
    /// `tgt_mask` is causal (or, without one, apply the causal mask).
    pub tgt_is_causal: bool,
    /// `memory_mask` is causal (or, without one, apply the causal mask).
    pub memory_is_causal: bool,
}

/// `nn.Transformer`: children `encoder` (`encoder.layers.N`, `encoder.norm`) and `decoder`
/// (`decoder.layers.N`, `decoder.norm`), as in PyTorch's `state_dict`.
///
/// Initialisation is PyTorch's: every parameter with more than one dim is re-drawn
/// xavier-uniform after the layers are built (`Transformer._reset_parameters`).
pub struct Transformer {
    /// The encoder stack.
    pub encoder: TransformerEncoder,
    /// The decoder stack.
    pub decoder: TransformerDecoder,
    /// Model dim.
    pub d_model: usize,
    /// Number of heads.
    pub nhead: usize,
    /// Whether inputs and output are batch-first.
    pub batch_first: bool,
}

impl Transformer {
    /// A model from its configuration.
    pub fn new(cfg: &TransformerConfig, dtype: DType, device: &Device) -> Result<Transformer> {
        let l = &cfg.layer;
        let encoder = TransformerEncoder::new(l, cfg.num_encoder_layers, Some(l.norm(dtype, device)?), dtype, device)?;
        let decoder = TransformerDecoder::new(l, cfg.num_decoder_layers, Some(l.norm(dtype, device)?), dtype, device)?;
        let model = Transformer { encoder, decoder, d_model: l.d_model, nhead: l.nhead, batch_first: l.batch_first };
        for (_, p) in model.named_parameters() {
            if p.dims().len() > 1 {
                p.set_tensor(xavier_uniform(p.dims(), 1.0, dtype, device)?)?;
            }
        }
        Ok(model)
    }

    /// `nn.Transformer.generate_square_subsequent_mask(n)`: `[n, n]`, `-inf` above the
    /// diagonal, `0` elsewhere.
    pub fn generate_square_subsequent_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        crate::attention::generate_square_subsequent_mask(n, dtype, device)
    }

    /// `model(src, tgt, ...masks)`: encodes `src` (`[S, B, E]`), then decodes `tgt`
    /// (`[T, B, E]`) against the memory; returns `[T, B, E]` (batch first: `[B, *, E]`;
    /// unbatched `[S, E]`/`[T, E]` also work).
    pub fn forward(&self, src: &Var, tgt: &Var, m: &TransformerMasks) -> Result<Var> {
        const OP: &str = "Transformer::forward";
        let (sd, td) = (src.dims(), tgt.dims());
        if sd.len() != td.len() || !(2..=3).contains(&sd.len()) {
            return Err(Error::shape(OP, format!("src {sd:?} and tgt {td:?} must both be 3-D (or both 2-D)")));
        }
        if sd.len() == 3 {
            let bdim = if self.batch_first { 0 } else { 1 };
            if sd[bdim] != td[bdim] {
                return Err(Error::shape(
                    OP,
                    format!(
                        "the batch number of src {sd:?} and tgt {td:?} must be equal (batch_first = {})",
                        self.batch_first
                    ),
                ));
            }
        }
        if sd[sd.len() - 1] != self.d_model || td[td.len() - 1] != self.d_model {
            return Err(Error::shape(
                OP,
                format!("the feature number of src {sd:?} and tgt {td:?} must be equal to d_model ({})", self.d_model),
            ));
        }
        let memory = self.encoder.forward(src, m.src_mask, m.src_key_padding_mask, m.src_is_causal)?;
        let dm = DecoderMasks {
            tgt_mask: m.tgt_mask,
            memory_mask: m.memory_mask,
            tgt_key_padding_mask: m.tgt_key_padding_mask,
            memory_key_padding_mask: m.memory_key_padding_mask,
            tgt_is_causal: m.tgt_is_causal,
            memory_is_causal: m.memory_is_causal,
        };
        self.decoder.forward(tgt, &memory, &dm)
    }
}

impl Module for Transformer {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("encoder".to_string(), &self.encoder as &dyn Module), ("decoder".to_string(), &self.decoder)]
    }
}
