//! wav2vec 2.0 (Baevski et al., 2020) as transformers implements it: `Wav2Vec2Model` (the
//! encoder) and `Wav2Vec2ForCtc` (encoder + dropout + `lm_head`), with transformers' parameter
//! names so that a checkpoint's `state_dict` loads unchanged ([`Wav2Vec2ForCtc::from_pretrained`])
//! and saves back ([`Wav2Vec2ForCtc::save_pretrained`]).
//!
//! The forward pass, for raw audio `[B, S]`:
//! 1. **feature encoder**: `num_feat_extract_layers` 1-D convolutions (`conv_dim`, `conv_kernel`,
//!    `conv_stride`, `conv_bias`), each followed by GELU; with `feat_extract_norm = "group"` the
//!    first layer has a GroupNorm with one group per channel (each channel normalised over time,
//!    the base checkpoints), with `"layer"` every layer has a LayerNorm over channels (large/lv60);
//! 2. **feature projection**: LayerNorm over the conv channels, Linear to `hidden_size`, dropout;
//! 3. **encoder**: padded frames zeroed (when an attention mask is given), the grouped positional
//!    convolution (kernel `num_conv_pos_embeddings`, weight normalisation over the kernel axis,
//!    the last frame dropped for an even kernel, GELU) added; then post-norm layers
//!    (`do_stable_layer_norm = false`: LayerNorm after the embedding sum and after each residual
//!    block) or pre-norm layers (`true`: LayerNorm before each block and once at the end);
//!    attention is scaled dot-product over `num_attention_heads` heads with padded keys masked;
//! 4. **CTC head**: dropout and `lm_head` (Linear to `vocab_size`).
//!
//! Dropout sits where transformers puts it (`feat_proj_dropout`, `hidden_dropout`,
//! `attention_dropout`, `activation_dropout`, `final_dropout`) and acts in training mode only;
//! LayerDrop (`layerdrop`) skips whole layers in training.

use std::path::Path;

use serde::{Deserialize, Serialize};
use stapes_autograd::Var;
use stapes_nn::layers::{Conv1d, Conv1dConfig, Dropout, LayerNorm, Linear};
use stapes_nn::{Forward, Module, Param};
use stapes_tensor::{DType, Device, Error, Result, Tensor};

const OP: &str = "wav2vec2";

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg.into())
}

/// The fields of transformers' `Wav2Vec2Config` that the CTC checkpoints use, with its defaults
/// (wav2vec2-base). Unknown fields of a `config.json` are ignored; options this implementation
/// does not support are refused by [`Wav2Vec2Config::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Wav2Vec2Config {
    /// Must be `"wav2vec2"`.
    pub model_type: String,
    /// Output symbols of the CTC head.
    pub vocab_size: usize,
    /// Width of the Transformer encoder.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward blocks.
    pub intermediate_size: usize,
    /// Activation of the feed-forward blocks (`gelu`, `gelu_new`, `relu`, `silu`/`swish`).
    pub hidden_act: String,
    /// Activation of the feature encoder and the positional convolution.
    pub feat_extract_activation: String,
    /// Dropout after attention and feed-forward blocks and on the embeddings.
    pub hidden_dropout: f64,
    /// Dropout inside the feed-forward block.
    pub activation_dropout: f64,
    /// Dropout on the attention probabilities.
    pub attention_dropout: f64,
    /// Dropout after the feature projection.
    pub feat_proj_dropout: f64,
    /// Dropout before `lm_head`.
    pub final_dropout: f64,
    /// Probability of skipping a whole encoder layer in training.
    pub layerdrop: f64,
    /// `eps` of the encoder's and the feature projection's LayerNorms.
    pub layer_norm_eps: f64,
    /// `"group"` or `"layer"`.
    pub feat_extract_norm: String,
    /// Output channels of each feature-encoder convolution.
    pub conv_dim: Vec<usize>,
    /// Strides of the feature-encoder convolutions.
    pub conv_stride: Vec<usize>,
    /// Kernel sizes of the feature-encoder convolutions.
    pub conv_kernel: Vec<usize>,
    /// Whether the feature-encoder convolutions have a bias.
    pub conv_bias: bool,
    /// Kernel size of the positional convolution.
    pub num_conv_pos_embeddings: usize,
    /// Channel groups of the positional convolution.
    pub num_conv_pos_embedding_groups: usize,
    /// Pre-norm encoder layers (large/lv60) instead of post-norm (base).
    pub do_stable_layer_norm: bool,
    /// Whether SpecAugment-style time masking is applied in training.
    pub apply_spec_augment: bool,
    /// Fraction of frames that start a time mask in training.
    pub mask_time_prob: f64,
    /// Length of each time mask.
    pub mask_time_length: usize,
    /// Minimum number of time masks.
    pub mask_time_min_masks: usize,
    /// Fraction of channels that start a feature mask in training.
    pub mask_feature_prob: f64,
    /// The CTC blank (the tokenizer's pad token).
    pub pad_token_id: usize,
    /// `"mean"` or `"sum"`.
    pub ctc_loss_reduction: String,
    /// Infinite CTC losses (impossible alignments) count as zero.
    pub ctc_zero_infinity: bool,
    /// An adapter after the encoder (not supported).
    pub add_adapter: bool,
    /// A learned weighted sum of the layers (classification heads only; not supported).
    pub use_weighted_layer_sum: bool,
}

impl Default for Wav2Vec2Config {
    fn default() -> Self {
        Wav2Vec2Config {
            model_type: "wav2vec2".into(),
            vocab_size: 32,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            feat_extract_activation: "gelu".into(),
            hidden_dropout: 0.1,
            activation_dropout: 0.1,
            attention_dropout: 0.1,
            feat_proj_dropout: 0.0,
            final_dropout: 0.1,
            layerdrop: 0.1,
            layer_norm_eps: 1e-5,
            feat_extract_norm: "group".into(),
            conv_dim: vec![512; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: false,
            num_conv_pos_embeddings: 128,
            num_conv_pos_embedding_groups: 16,
            do_stable_layer_norm: false,
            apply_spec_augment: true,
            mask_time_prob: 0.05,
            mask_time_length: 10,
            mask_time_min_masks: 2,
            mask_feature_prob: 0.0,
            pad_token_id: 0,
            ctc_loss_reduction: "sum".into(),
            ctc_zero_infinity: false,
            add_adapter: false,
            use_weighted_layer_sum: false,
        }
    }
}

impl Wav2Vec2Config {
    /// Reads and validates a `config.json`; errors name the file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Wav2Vec2Config> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let cfg: Wav2Vec2Config =
            serde_json::from_str(&text).map_err(|e| invalid(format!("{}: not a valid config: {e}", path.display())))?;
        cfg.validate().map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// Checks the options against what this implementation supports, naming the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.model_type != "wav2vec2" {
            return Err(format!("model_type {:?} is not supported (only \"wav2vec2\")", self.model_type));
        }
        if self.feat_extract_norm != "group" && self.feat_extract_norm != "layer" {
            return Err(format!("feat_extract_norm must be \"group\" or \"layer\", got {:?}", self.feat_extract_norm));
        }
        let n = self.conv_dim.len();
        if n == 0 || self.conv_stride.len() != n || self.conv_kernel.len() != n {
            return Err(format!(
                "conv_dim, conv_stride and conv_kernel must have the same non-zero length, got {}, {} and {}",
                n,
                self.conv_stride.len(),
                self.conv_kernel.len()
            ));
        }
        if self.conv_dim.contains(&0) || self.conv_stride.contains(&0) || self.conv_kernel.contains(&0) {
            return Err("conv_dim, conv_stride and conv_kernel must be positive".into());
        }
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size ({}) must be a positive multiple of num_attention_heads ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_conv_pos_embedding_groups == 0
            || !self.hidden_size.is_multiple_of(self.num_conv_pos_embedding_groups)
        {
            return Err(format!(
                "hidden_size ({}) must be divisible by num_conv_pos_embedding_groups ({})",
                self.hidden_size, self.num_conv_pos_embedding_groups
            ));
        }
        if self.num_conv_pos_embeddings == 0 || self.vocab_size == 0 || self.intermediate_size == 0 {
            return Err("num_conv_pos_embeddings, vocab_size and intermediate_size must be positive".into());
        }
        Activation::parse(&self.hidden_act).map_err(|e| format!("hidden_act: {e}"))?;
        Activation::parse(&self.feat_extract_activation).map_err(|e| format!("feat_extract_activation: {e}"))?;
        if self.add_adapter {
            return Err("add_adapter = true is not supported".into());
        }
        if self.use_weighted_layer_sum {
            return Err("use_weighted_layer_sum = true is not supported".into());
        }
        if self.ctc_loss_reduction != "mean" && self.ctc_loss_reduction != "sum" {
            return Err(format!("ctc_loss_reduction must be \"mean\" or \"sum\", got {:?}", self.ctc_loss_reduction));
        }
        for (name, p) in [
            ("hidden_dropout", self.hidden_dropout),
            ("activation_dropout", self.activation_dropout),
            ("attention_dropout", self.attention_dropout),
            ("feat_proj_dropout", self.feat_proj_dropout),
            ("final_dropout", self.final_dropout),
            ("layerdrop", self.layerdrop),
            ("mask_time_prob", self.mask_time_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be in [0, 1], got {p}"));
            }
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps < 0.0 {
            return Err(format!("layer_norm_eps must be >= 0, got {}", self.layer_norm_eps));
        }
        Ok(())
    }

    /// Frames the feature encoder makes from `samples` samples (transformers'
    /// `_get_feat_extract_output_lengths`): `(n - kernel) / stride + 1` per layer, 0 when too short.
    pub fn output_frames(&self, samples: usize) -> usize {
        let mut n = samples;
        for (&k, &s) in self.conv_kernel.iter().zip(&self.conv_stride) {
            n = if n < k { 0 } else { (n - k) / s + 1 };
        }
        n
    }
}

/// The activations transformers' `ACT2FN` maps these names to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activation {
    Gelu,
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    fn parse(name: &str) -> std::result::Result<Activation, String> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(format!("activation {other:?} is not supported (gelu, gelu_new, relu, silu)")),
        }
    }
    fn apply(self, x: &Var) -> Result<Var> {
        match self {
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.mul(&x.sigmoid()?),
        }
    }
}

/// `nn.GroupNorm(C, C)` on `[B, C, T]`: each channel of each item normalised over time, then a
/// per-channel affine (eps 1e-5, PyTorch's default, as transformers builds it).
struct ChannelNorm {
    weight: Param,
    bias: Param,
}

impl ChannelNorm {
    fn new(c: usize, dtype: DType, device: &Device) -> Result<ChannelNorm> {
        Ok(ChannelNorm {
            weight: Param::new(Tensor::ones([c], dtype, device)?),
            bias: Param::new(Tensor::zeros([c], dtype, device)?),
        })
    }
    fn forward(&self, x: &Var) -> Result<Var> {
        let (c, t) = (x.dims()[1], x.dims()[2]);
        let y = x.layer_norm(&[t], None, None, 1e-5)?;
        y.mul(&self.weight.var().reshape([1, c, 1])?)?.add(&self.bias.var().reshape([1, c, 1])?)
    }
}

impl Module for ChannelNorm {
    fn local_params(&self) -> Vec<(String, Param)> {
        vec![("weight".into(), self.weight.clone()), ("bias".into(), self.bias.clone())]
    }
}

enum ConvNorm {
    None,
    Group(ChannelNorm),
    Layer(LayerNorm),
}

/// One feature-encoder layer: conv, its norm (if any), the activation.
struct FeatureConvLayer {
    conv: Conv1d,
    norm: ConvNorm,
    act: Activation,
}

impl FeatureConvLayer {
    fn forward(&self, x: &Var) -> Result<Var> {
        let y = self.conv.forward(x)?;
        let y = match &self.norm {
            ConvNorm::None => y,
            ConvNorm::Group(n) => n.forward(&y)?,
            ConvNorm::Layer(n) => n.forward(&y.transpose(1, 2)?)?.transpose(1, 2)?,
        };
        self.act.apply(&y)
    }
}

impl Module for FeatureConvLayer {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> = vec![("conv".into(), &self.conv)];
        match &self.norm {
            ConvNorm::None => {}
            ConvNorm::Group(n) => v.push(("layer_norm".into(), n)),
            ConvNorm::Layer(n) => v.push(("layer_norm".into(), n)),
        }
        v
    }
}

/// The convolutional feature encoder (`feature_extractor`): raw audio `[B, S]` to `[B, C, T]`.
pub struct FeatureEncoder {
    conv_layers: Layers<FeatureConvLayer>,
}

impl FeatureEncoder {
    fn new(cfg: &Wav2Vec2Config, dtype: DType, device: &Device) -> Result<FeatureEncoder> {
        let act = Activation::parse(&cfg.feat_extract_activation).map_err(invalid)?;
        let mut conv_layers = Vec::new();
        let mut cin = 1;
        for i in 0..cfg.conv_dim.len() {
            let cout = cfg.conv_dim[i];
            let conv = Conv1d::new_with(
                cin,
                cout,
                cfg.conv_kernel[i],
                Conv1dConfig {
                    stride: cfg.conv_stride[i],
                    bias: cfg.conv_bias,
                    dtype,
                    device: *device,
                    ..Default::default()
                },
            )?;
            let norm = match (cfg.feat_extract_norm.as_str(), i) {
                ("group", 0) => ConvNorm::Group(ChannelNorm::new(cout, dtype, device)?),
                ("layer", _) => ConvNorm::Layer(LayerNorm::new_with(&[cout], 1e-5, true, true, dtype, device)?),
                _ => ConvNorm::None,
            };
            conv_layers.push(FeatureConvLayer { conv, norm, act });
            cin = cout;
        }
        Ok(FeatureEncoder { conv_layers: Layers(conv_layers) })
    }

    /// `[B, S]` audio to `[B, C, T]` features.
    pub fn forward(&self, audio: &Var) -> Result<Var> {
        let mut x = audio.unsqueeze(1)?;
        for l in self.conv_layers.iter() {
            x = l.forward(&x)?;
        }
        Ok(x)
    }
}

impl Module for FeatureEncoder {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("conv_layers".into(), &self.conv_layers as &dyn Module)]
    }
}

/// Modules named `0`, `1`, ... (`nn.ModuleList`).
struct Layers<M>(Vec<M>);

impl<M> std::ops::Deref for Layers<M> {
    type Target = Vec<M>;
    fn deref(&self) -> &Vec<M> {
        &self.0
    }
}

impl<M: Module> Module for Layers<M> {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.0.iter().enumerate().map(|(i, m)| (i.to_string(), m as &dyn Module)).collect()
    }
}

/// `feature_projection`: LayerNorm over the conv channels, Linear to `hidden_size`, dropout.
struct FeatureProjection {
    layer_norm: LayerNorm,
    projection: Linear,
    dropout: Dropout,
}

impl Module for FeatureProjection {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("layer_norm".into(), &self.layer_norm as &dyn Module),
            ("projection".into(), &self.projection),
            ("dropout".into(), &self.dropout),
        ]
    }
}

/// The grouped positional convolution with weight normalisation over the kernel axis
/// (`weight_norm(conv, dim=2)`: `weight = g · v / ‖v‖`, the norm over output and input
/// channels for each kernel tap), parameters named as transformers 5 saves them.
struct PositionalConvEmbedding {
    bias: Param,
    /// `g`, `[1, 1, kernel]`.
    weight_g: Param,
    /// `v`, `[hidden, hidden / groups, kernel]`.
    weight_v: Param,
    kernel: usize,
    groups: usize,
    act: Activation,
}

impl PositionalConvEmbedding {
    /// The normalised weight `g · v / ‖v‖`.
    fn weight(&self) -> Result<Var> {
        let v = self.weight_v.var();
        let norm = v.sqr()?.sum([0usize, 1], true)?.sqrt()?;
        v.mul(&self.weight_g.var().div(&norm)?)
    }

    /// `[B, T, H]` to the positional embedding `[B, T, H]`.
    fn forward(&self, h: &Var) -> Result<Var> {
        let t = h.dims()[1];
        let x = h.transpose(1, 2)?;
        let y = x.conv1d(&self.weight()?, Some(&self.bias.var()), 1, self.kernel / 2, 1, self.groups)?;
        // an even kernel gives one frame too many: transformers' SamePadLayer drops the last
        let y = if y.dims()[2] > t { y.narrow(2, 0, t)? } else { y };
        self.act.apply(&y)?.transpose(1, 2)
    }
}

/// Scaled dot-product self-attention with separate `q_proj`, `k_proj`, `v_proj`, `out_proj`.
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    dropout: Dropout,
}

impl Attention {
    /// `h` `[B, T, H]`; `key_pad` `[B, 1, 1, T]` u8, set on padded keys.
    fn forward(&self, h: &Var, key_pad: Option<&Tensor>) -> Result<Var> {
        let (b, t, hid) = (h.dims()[0], h.dims()[1], h.dims()[2]);
        let hd = hid / self.heads;
        let split = |x: Var| -> Result<Var> { x.reshape([b, t, self.heads, hd])?.transpose(1, 2) };
        let q = split(self.q_proj.forward(h)?)?;
        let k = split(self.k_proj.forward(h)?)?;
        let v = split(self.v_proj.forward(h)?)?;
        let scores = q.matmul(&k.transpose(2, 3)?)?.mul_scalar((hd as f64).powf(-0.5))?;
        let scores = match key_pad {
            Some(m) => scores.masked_fill(m, f32::MIN as f64)?,
            None => scores,
        };
        let p = self.dropout.forward(&scores.softmax(3usize)?)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape([b, t, hid])?;
        self.out_proj.forward(&o)
    }
}

impl Module for Attention {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("k_proj".into(), &self.k_proj as &dyn Module),
            ("v_proj".into(), &self.v_proj),
            ("q_proj".into(), &self.q_proj),
            ("out_proj".into(), &self.out_proj),
            ("dropout".into(), &self.dropout),
        ]
    }
}

/// `intermediate_dense` → activation → dropout → `output_dense` → dropout.
struct FeedForward {
    intermediate_dense: Linear,
    output_dense: Linear,
    intermediate_dropout: Dropout,
    output_dropout: Dropout,
    act: Activation,
}

impl FeedForward {
    fn forward(&self, x: &Var) -> Result<Var> {
        let y = self.act.apply(&self.intermediate_dense.forward(x)?)?;
        let y = self.intermediate_dropout.forward(&y)?;
        self.output_dropout.forward(&self.output_dense.forward(&y)?)
    }
}

impl Module for FeedForward {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("intermediate_dropout".into(), &self.intermediate_dropout as &dyn Module),
            ("intermediate_dense".into(), &self.intermediate_dense),
            ("output_dense".into(), &self.output_dense),
            ("output_dropout".into(), &self.output_dropout),
        ]
    }
}

/// One encoder layer, post-norm (base) or pre-norm (`do_stable_layer_norm`).
struct EncoderLayer {
    attention: Attention,
    dropout: Dropout,
    layer_norm: LayerNorm,
    feed_forward: FeedForward,
    final_layer_norm: LayerNorm,
    pre_norm: bool,
}

impl EncoderLayer {
    fn forward(&self, h: &Var, key_pad: Option<&Tensor>) -> Result<Var> {
        if self.pre_norm {
            let a = self.attention.forward(&self.layer_norm.forward(h)?, key_pad)?;
            let h = h.add(&self.dropout.forward(&a)?)?;
            h.add(&self.feed_forward.forward(&self.final_layer_norm.forward(&h)?)?)
        } else {
            let a = self.attention.forward(h, key_pad)?;
            let h = self.layer_norm.forward(&h.add(&self.dropout.forward(&a)?)?)?;
            self.final_layer_norm.forward(&h.add(&self.feed_forward.forward(&h)?)?)
        }
    }
}

impl Module for EncoderLayer {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("attention".into(), &self.attention as &dyn Module),
            ("dropout".into(), &self.dropout),
            ("layer_norm".into(), &self.layer_norm),
            ("feed_forward".into(), &self.feed_forward),
            ("final_layer_norm".into(), &self.final_layer_norm),
        ]
    }
}

/// The Transformer encoder with its positional convolution.
struct Encoder {
    pos_conv_embed: PositionalConvEmbedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
    layers: Layers<EncoderLayer>,
    pre_norm: bool,
    layerdrop: f64,
    training: stapes_nn::TrainingFlag,
}

impl Encoder {
    /// `h` `[B, T, H]`; `frame_pad` `[B, T]` u8 set on padded frames. Returns the last hidden
    /// state and the hidden states as transformers (5.x) `output_hidden_states` gives them: the
    /// first layer's input (after the positional convolution, and the layer norm in the
    /// post-norm stack), then every layer's output (before the pre-norm stack's final layer
    /// norm).
    fn forward(&self, h: &Var, frame_pad: Option<&Tensor>) -> Result<(Var, Vec<Var>)> {
        let (b, t) = (h.dims()[0], h.dims()[1]);
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let (h, key_pad) = match frame_pad {
            Some(m) => (h.masked_fill(&m.reshape([b, t, 1])?, 0.0)?, Some(m.reshape([b, 1, 1, t])?)),
            None => (h.clone(), None),
        };
        let mut h = h.add(&self.pos_conv_embed.forward(&h)?)?;
        if !self.pre_norm {
            h = self.layer_norm.forward(&h)?;
        }
        h = self.dropout.forward(&h)?;
        states.push(h.clone());
        for layer in self.layers.iter() {
            let skip = self.training.get()
                && self.layerdrop > 0.0
                && stapes_tensor::random::with_default_generator(|g| g.next_f64()) < self.layerdrop;
            if !skip {
                h = layer.forward(&h, key_pad.as_ref())?;
            }
            states.push(h.clone());
        }
        if self.pre_norm {
            h = self.layer_norm.forward(&h)?;
        }
        Ok((h, states))
    }
}

impl Module for Encoder {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("pos_conv_embed".into(), &self.pos_conv_embed as &dyn Module),
            ("layer_norm".into(), &self.layer_norm),
            ("dropout".into(), &self.dropout),
            ("layers".into(), &self.layers),
        ]
    }
    fn set_local_training(&self, training: bool) {
        self.training.set(training)
    }
}

impl Module for PositionalConvEmbedding {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }
    fn local_params(&self) -> Vec<(String, Param)> {
        vec![
            ("conv.bias".into(), self.bias.clone()),
            ("conv.parametrizations.weight.original0".into(), self.weight_g.clone()),
            ("conv.parametrizations.weight.original1".into(), self.weight_v.clone()),
        ]
    }
}

/// SpecAugment-style time masks as transformers' `_compute_mask_indices` draws them, for items
/// of `lengths` valid frames out of `frames`: each item gets
/// `max(min_masks, floor(mask_prob · len / mask_length + u))` spans (`u` uniform in [0, 1)),
/// at most `len / mask_length` (`floor`), with start frames drawn without replacement from
/// `0..=len - mask_length` and `mask_length` frames each (spans may overlap). Items shorter than
/// `mask_length` get none. Returns `[B, frames]` flags, row-major.
pub fn compute_time_mask(
    lengths: &[usize],
    frames: usize,
    mask_prob: f64,
    mask_length: usize,
    min_masks: usize,
    gen: &mut stapes_tensor::Generator,
) -> Vec<bool> {
    let mut mask = vec![false; lengths.len() * frames];
    if mask_length == 0 || mask_prob <= 0.0 {
        return mask;
    }
    for (b, &len) in lengths.iter().enumerate() {
        let len = len.min(frames);
        if len < mask_length {
            continue;
        }
        let want = ((mask_prob * len as f64 / mask_length as f64 + gen.next_f64()).floor() as usize).max(min_masks);
        let spans = want.min(len / mask_length);
        // a partial Fisher-Yates shuffle of the candidate start frames
        let mut starts: Vec<usize> = (0..=len - mask_length).collect();
        for i in 0..spans.min(starts.len()) {
            let j = i + (gen.next_u64() % (starts.len() - i) as u64) as usize;
            starts.swap(i, j);
            let s0 = starts[i];
            mask[b * frames + s0..b * frames + s0 + mask_length].fill(true);
        }
    }
    mask
}

/// What [`Wav2Vec2Model::forward`] returns.
pub struct Wav2Vec2Output {
    /// `[B, T, hidden_size]`.
    pub last_hidden_state: Var,
    /// The feature encoder's output after the feature projection's LayerNorm,
    /// `[B, T, conv_dim[-1]]` (what transformers returns as `extract_features`).
    pub extract_features: Var,
    /// `num_hidden_layers + 1` states, as transformers' (5.x) `output_hidden_states` returns
    /// them: the first encoder layer's input (after the positional convolution, and its
    /// LayerNorm in the post-norm stack), then every layer's output (before the pre-norm
    /// stack's final LayerNorm, which gives `last_hidden_state`).
    pub hidden_states: Vec<Var>,
    /// The encoder's input `[B, T, hidden_size]`: the feature projection's output, with the
    /// frames SpecAugment masks replaced by `masked_spec_embed` in training.
    pub encoder_input: Var,
    /// `[B, T]` u8, set on padded frames (when an attention mask was given).
    pub frame_padding: Option<Tensor>,
    /// Valid frames per item.
    pub frame_lengths: Vec<usize>,
    /// `[B, T]` u8, set on the frames replaced by `masked_spec_embed` (training with
    /// `mask_time_prob > 0` only).
    pub time_mask: Option<Tensor>,
}

/// The wav2vec2 encoder (`Wav2Vec2Model`).
pub struct Wav2Vec2Model {
    config: Wav2Vec2Config,
    feature_extractor: FeatureEncoder,
    feature_projection: FeatureProjection,
    /// The learned vector that replaces masked frames in training (present when masking is
    /// configured, as in transformers).
    masked_spec_embed: Option<Param>,
    encoder: Encoder,
}

impl Wav2Vec2Model {
    /// A randomly initialised model (PyTorch's default layer initialisations).
    pub fn new(cfg: &Wav2Vec2Config, dtype: DType, device: &Device) -> Result<Wav2Vec2Model> {
        cfg.validate().map_err(invalid)?;
        let hid = cfg.hidden_size;
        let act = Activation::parse(&cfg.hidden_act).map_err(invalid)?;
        let feat_act = Activation::parse(&cfg.feat_extract_activation).map_err(invalid)?;
        let c_last = *cfg.conv_dim.last().expect("validated");
        let ln = |n: usize| LayerNorm::new_with(&[n], cfg.layer_norm_eps, true, true, dtype, device);
        let lin = |i: usize, o: usize| Linear::new_with(i, o, true, dtype, device);
        let (k, groups) = (cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups);
        // transformers' init: v ~ N(0, 2 / (k · hidden)), g = ‖v‖ (so the initial weight is v)
        let std = (2.0 / (k * hid) as f64).sqrt();
        let v = Tensor::randn([hid, hid / groups, k], dtype, device)?.affine(std, 0.0)?;
        let g = v.sqr()?.sum([0usize, 1], true)?.sqrt()?;
        let bound = 1.0 / ((hid / groups * k) as f64).sqrt();
        let bias = Tensor::rand([hid], dtype, device)?.affine(2.0 * bound, -bound)?;
        let pos_conv_embed = PositionalConvEmbedding {
            bias: Param::new(bias),
            weight_g: Param::new(g),
            weight_v: Param::new(v),
            kernel: k,
            groups,
            act: feat_act,
        };
        let mut layers = Vec::new();
        for _ in 0..cfg.num_hidden_layers {
            layers.push(EncoderLayer {
                attention: Attention {
                    q_proj: lin(hid, hid)?,
                    k_proj: lin(hid, hid)?,
                    v_proj: lin(hid, hid)?,
                    out_proj: lin(hid, hid)?,
                    heads: cfg.num_attention_heads,
                    dropout: Dropout::new(cfg.attention_dropout)?,
                },
                dropout: Dropout::new(cfg.hidden_dropout)?,
                layer_norm: ln(hid)?,
                feed_forward: FeedForward {
                    intermediate_dense: lin(hid, cfg.intermediate_size)?,
                    output_dense: lin(cfg.intermediate_size, hid)?,
                    intermediate_dropout: Dropout::new(cfg.activation_dropout)?,
                    output_dropout: Dropout::new(cfg.hidden_dropout)?,
                    act,
                },
                final_layer_norm: ln(hid)?,
                pre_norm: cfg.do_stable_layer_norm,
            });
        }
        let masked_spec_embed = if cfg.mask_time_prob > 0.0 || cfg.mask_feature_prob > 0.0 {
            Some(Param::new(Tensor::rand([hid], dtype, device)?))
        } else {
            None
        };
        Ok(Wav2Vec2Model {
            config: cfg.clone(),
            feature_extractor: FeatureEncoder::new(cfg, dtype, device)?,
            feature_projection: FeatureProjection {
                layer_norm: ln(c_last)?,
                projection: lin(c_last, hid)?,
                dropout: Dropout::new(cfg.feat_proj_dropout)?,
            },
            masked_spec_embed,
            encoder: Encoder {
                pos_conv_embed,
                layer_norm: ln(hid)?,
                dropout: Dropout::new(cfg.hidden_dropout)?,
                layers: Layers(layers),
                pre_norm: cfg.do_stable_layer_norm,
                layerdrop: cfg.layerdrop,
                training: stapes_nn::TrainingFlag::default(),
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Wav2Vec2Config {
        &self.config
    }

    /// The feature encoder's parameters (what `freeze_feature_encoder` freezes).
    pub fn feature_encoder_parameters(&self) -> Vec<Param> {
        self.feature_extractor.parameters()
    }

    /// Runs the model on `input_values` `[B, S]` (normalised audio, see
    /// [`normalize_audio`]). `lengths` gives each item's valid samples: when `Some`, padded
    /// frames are zeroed and masked from attention (transformers' behaviour with an
    /// `attention_mask`); when `None`, the whole padded batch is used as is (as transformers does
    /// for group-norm checkpoints, whose feature extractor returns no mask).
    pub fn forward(&self, input_values: &Var, lengths: Option<&[usize]>) -> Result<Wav2Vec2Output> {
        let dims = input_values.dims().to_vec();
        if dims.len() != 2 {
            return Err(Error::invalid(
                "Wav2Vec2Model::forward",
                format!("input_values must be [batch, samples], got shape {dims:?}"),
            ));
        }
        let (b, s) = (dims[0], dims[1]);
        let t = self.config.output_frames(s);
        if t == 0 {
            return Err(Error::invalid(
                "Wav2Vec2Model::forward",
                format!("{s} samples are too short for the feature encoder (no output frame)"),
            ));
        }
        let feats = self.feature_extractor.forward(input_values)?.transpose(1, 2)?;
        let (frame_lengths, frame_padding) = match lengths {
            Some(l) => {
                if l.len() != b || l.iter().any(|&n| n > s) {
                    return Err(Error::invalid(
                        "Wav2Vec2Model::forward",
                        format!("lengths {l:?} do not fit a batch of {b} items of {s} samples"),
                    ));
                }
                let fl: Vec<usize> = l.iter().map(|&n| self.config.output_frames(n)).collect();
                let mut m = vec![0u8; b * t];
                for (i, &n) in fl.iter().enumerate() {
                    m[i * t + n..(i + 1) * t].fill(1);
                }
                (fl, Some(Tensor::from_vec(m, [b, t], input_values.tensor().device())?))
            }
            None => (vec![t; b], None),
        };
        let normed = self.feature_projection.layer_norm.forward(&feats)?;
        let h = self.feature_projection.projection.forward(&normed)?;
        let mut h = self.feature_projection.dropout.forward(&h)?;
        // SpecAugment in training: masked frames become the learned masked_spec_embed
        let mut time_mask = None;
        if let (true, true, Some(embed)) =
            (self.encoder.training.get(), self.config.apply_spec_augment, &self.masked_spec_embed)
        {
            let c = &self.config;
            let m = stapes_tensor::random::with_default_generator(|g| {
                compute_time_mask(&frame_lengths, t, c.mask_time_prob, c.mask_time_length, c.mask_time_min_masks, g)
            });
            if m.iter().any(|&v| v) {
                let dev = input_values.tensor().device();
                let m = Tensor::from_vec(m.into_iter().map(u8::from).collect::<Vec<u8>>(), [b, t], &Device::Cpu)?
                    .to_device(dev)?;
                let hid = self.config.hidden_size;
                let e = embed.var().reshape([1, 1, hid])?.to_dtype(h.tensor().dtype())?;
                h = Var::where_cond(&m.reshape([b, t, 1])?, &e, &h)?;
                time_mask = Some(m);
            }
        }
        let (last_hidden_state, hidden_states) = self.encoder.forward(&h, frame_padding.as_ref())?;
        let encoder_input = h;
        Ok(Wav2Vec2Output {
            last_hidden_state,
            extract_features: normed,
            hidden_states,
            encoder_input,
            frame_padding,
            frame_lengths,
            time_mask,
        })
    }
}

impl Module for Wav2Vec2Model {
    fn local_params(&self) -> Vec<(String, Param)> {
        self.masked_spec_embed.iter().map(|p| ("masked_spec_embed".to_string(), p.clone())).collect()
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("feature_extractor".into(), &self.feature_extractor as &dyn Module),
            ("feature_projection".into(), &self.feature_projection),
            ("encoder".into(), &self.encoder),
        ]
    }
}

/// `Wav2Vec2ForCTC`: the encoder, dropout and a Linear CTC head over `vocab_size` symbols.
pub struct Wav2Vec2ForCtc {
    /// The encoder (`wav2vec2.*` in the state dict).
    pub wav2vec2: Wav2Vec2Model,
    dropout: Dropout,
    /// The CTC head.
    pub lm_head: Linear,
}

impl Wav2Vec2ForCtc {
    /// A randomly initialised model.
    pub fn new(cfg: &Wav2Vec2Config, dtype: DType, device: &Device) -> Result<Wav2Vec2ForCtc> {
        Ok(Wav2Vec2ForCtc {
            wav2vec2: Wav2Vec2Model::new(cfg, dtype, device)?,
            dropout: Dropout::new(cfg.final_dropout)?,
            lm_head: Linear::new_with(cfg.hidden_size, cfg.vocab_size, true, dtype, device)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Wav2Vec2Config {
        &self.wav2vec2.config
    }

    /// Every parameter except the feature encoder's (fine-tuning with it frozen, as
    /// transformers' `freeze_feature_encoder()`).
    pub fn parameters_without_feature_encoder(&self) -> Vec<Param> {
        let frozen = self.wav2vec2.feature_encoder_parameters();
        self.parameters().into_iter().filter(|p| !frozen.iter().any(|f| f.same(p))).collect()
    }

    /// Freezes the feature encoder (transformers' `freeze_feature_encoder()`): its parameters
    /// stop requiring gradients, so backward skips the convolutions' weight gradients.
    pub fn freeze_feature_encoder(&self) {
        for p in self.wav2vec2.feature_encoder_parameters() {
            p.set_requires_grad(false);
        }
    }

    /// CTC logits `[B, T, vocab_size]` and the model's other outputs.
    pub fn forward(&self, input_values: &Var, lengths: Option<&[usize]>) -> Result<(Var, Wav2Vec2Output)> {
        let out = self.wav2vec2.forward(input_values, lengths)?;
        let logits = self.lm_head.forward(&self.dropout.forward(&out.last_hidden_state)?)?;
        Ok((logits, out))
    }
}

impl Module for Wav2Vec2ForCtc {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("wav2vec2".into(), &self.wav2vec2 as &dyn Module),
            ("dropout".into(), &self.dropout),
            ("lm_head".into(), &self.lm_head),
        ]
    }
}

/// `Wav2Vec2FeatureExtractor`'s `do_normalize`: each utterance to zero mean and unit variance
/// over its own samples (`(x - mean) / sqrt(var + 1e-7)`, the biased variance).
pub fn normalize_audio(samples: &[f32]) -> Vec<f32> {
    if samples.is_empty() {
        return Vec::new();
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = samples.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let d = (var + 1e-7).sqrt();
    samples.iter().map(|&x| ((x as f64 - mean) / d) as f32).collect()
}

/// `preprocessor_config.json`'s fields that change what the model is fed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Wav2Vec2Preprocessor {
    /// Per-utterance zero mean, unit variance ([`normalize_audio`]).
    pub do_normalize: bool,
    /// The rate the model expects; audio is resampled to it.
    pub sampling_rate: u32,
    /// Whether the model is given padding information (layer-norm checkpoints): without it a
    /// padded batch is run as is, as transformers does.
    pub return_attention_mask: bool,
    /// What padding holds.
    pub padding_value: f32,
}

impl Default for Wav2Vec2Preprocessor {
    fn default() -> Self {
        Wav2Vec2Preprocessor {
            do_normalize: true,
            sampling_rate: 16_000,
            return_attention_mask: false,
            padding_value: 0.0,
        }
    }
}

impl Wav2Vec2Preprocessor {
    /// Reads `dir/preprocessor_config.json`; the defaults when the directory has none.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Wav2Vec2Preprocessor> {
        let path = dir.as_ref().join("preprocessor_config.json");
        if !path.is_file() {
            return Ok(Wav2Vec2Preprocessor::default());
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Writes `dir/preprocessor_config.json` as `Wav2Vec2FeatureExtractor.save_pretrained` does
    /// (mono input, right padding), atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let json = serde_json::json!({
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            "feature_size": 1,
            "padding_side": "right",
            "padding_value": self.padding_value,
            "do_normalize": self.do_normalize,
            "return_attention_mask": self.return_attention_mask,
            "sampling_rate": self.sampling_rate,
        });
        let text =
            serde_json::to_string_pretty(&json).map_err(|e| invalid(format!("preprocessor_config.json: {e}")))?;
        stapes_nn::checkpoint::write_atomic(dir.as_ref().join("preprocessor_config.json"), text.as_bytes())
    }
}

/// The CTC vocabulary of `vocab.json`: token → id, the pad token as the blank and `|` as the
/// word delimiter (`Wav2Vec2CTCTokenizer`'s conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct CtcVocab {
    /// Tokens by id.
    pub tokens: Vec<String>,
    /// The blank (the tokenizer's pad token, `config.pad_token_id`).
    pub blank: usize,
    /// The word delimiter's id, when the vocabulary has `|`.
    pub word_delimiter: Option<usize>,
}

impl CtcVocab {
    /// Reads `vocab.json` (a JSON object token → id, ids 0..n without gaps).
    pub fn from_json_file(path: impl AsRef<Path>, blank: usize) -> Result<CtcVocab> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let map: std::collections::BTreeMap<String, usize> = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("{}: not a token -> id map: {e}", path.display())))?;
        let mut tokens = vec![None; map.len()];
        for (tok, &id) in &map {
            match tokens.get_mut(id) {
                Some(slot @ None) => *slot = Some(tok.clone()),
                _ => {
                    return Err(invalid(format!(
                        "{}: id {id} of {tok:?} is repeated or out of 0..{}",
                        path.display(),
                        map.len()
                    )))
                }
            }
        }
        let tokens: Vec<String> = tokens.into_iter().map(|t| t.expect("every slot filled")).collect();
        if blank >= tokens.len() {
            return Err(invalid(format!(
                "{}: pad_token_id {blank} is not in the vocabulary of {}",
                path.display(),
                tokens.len()
            )));
        }
        let word_delimiter = tokens.iter().position(|t| t == "|");
        Ok(CtcVocab { tokens, blank, word_delimiter })
    }

    /// Writes `dir/vocab.json` (token → id) and a `tokenizer_config.json` naming the blank as
    /// the pad token and `|` as the word delimiter, so `Wav2Vec2CTCTokenizer.from_pretrained`
    /// (and `Wav2Vec2Processor`) read the vocabulary back; each written atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let map: serde_json::Map<String, serde_json::Value> =
            self.tokens.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::Value::from(i))).collect();
        let text = serde_json::to_string_pretty(&map).map_err(|e| invalid(format!("vocab.json: {e}")))?;
        stapes_nn::checkpoint::write_atomic(dir.join("vocab.json"), text.as_bytes())?;
        let special = |t: &str| self.tokens.iter().any(|x| x == t).then(|| t.to_string());
        let json = serde_json::json!({
            "tokenizer_class": "Wav2Vec2CTCTokenizer",
            "pad_token": self.tokens.get(self.blank),
            "word_delimiter_token": self.word_delimiter.map(|i| self.tokens[i].clone()).unwrap_or_else(|| "|".into()),
            "unk_token": special("<unk>").unwrap_or_else(|| "<unk>".into()),
            "bos_token": special("<s>"),
            "eos_token": special("</s>"),
            "do_lower_case": false,
        });
        let text = serde_json::to_string_pretty(&json).map_err(|e| invalid(format!("tokenizer_config.json: {e}")))?;
        stapes_nn::checkpoint::write_atomic(dir.join("tokenizer_config.json"), text.as_bytes())
    }

    /// The vocabulary as the beam search's character [`Vocab`](crate::data::Vocab), with the
    /// column order that puts the log-probabilities in its id order: `order[i]` is the
    /// checkpoint's id of the beam vocabulary's id `i` (`order[0]` is the blank). `|` becomes
    /// the space; special tokens (`<s>`, `<unk>`, …) become private-use characters, which
    /// [`CtcVocab::decode_chars`] drops. Tokens of more than one character are an error.
    pub fn char_vocab(&self) -> Result<(crate::data::Vocab, Vec<usize>)> {
        let mut order = vec![self.blank];
        let mut chars = String::new();
        for (id, t) in self.tokens.iter().enumerate() {
            if id == self.blank {
                continue;
            }
            let c = if Some(id) == self.word_delimiter {
                ' '
            } else if t.starts_with('<') && t.ends_with('>') && t.len() > 2 {
                char::from_u32(0xE000 + id as u32).ok_or_else(|| invalid(format!("token id {id} is too large")))?
            } else {
                let mut it = t.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => c,
                    _ => {
                        return Err(invalid(format!(
                            "beam search decodes characters; the vocabulary's token {t:?} (id {id}) is not one"
                        )))
                    }
                }
            };
            chars.push(c);
            order.push(id);
        }
        let vocab = crate::data::Vocab::new(&chars).map_err(|e| invalid(format!("vocab.json: {e}")))?;
        Ok((vocab, order))
    }

    /// The text of characters from [`CtcVocab::char_vocab`]'s vocabulary: special tokens
    /// dropped, spaces collapsed and trimmed.
    pub fn decode_chars(text: &str) -> String {
        let kept: String = text.chars().filter(|c| !('\u{E000}'..='\u{F8FF}').contains(c)).collect();
        kept.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Greedy CTC decoding of per-frame argmax ids: repeats collapsed, blanks dropped, `|` as a
    /// space, special tokens (`<s>`, `</s>`, `<unk>`, other `<…>`) dropped, spaces trimmed.
    pub fn decode_greedy(&self, ids: &[usize]) -> String {
        let mut out = String::new();
        let mut prev = None;
        for &id in ids {
            if Some(id) != prev && id != self.blank {
                match self.tokens.get(id) {
                    Some(_) if Some(id) == self.word_delimiter => out.push(' '),
                    Some(t) if t.starts_with('<') && t.ends_with('>') => {}
                    Some(t) => out.push_str(t),
                    None => {}
                }
            }
            prev = Some(id);
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

impl Wav2Vec2ForCtc {
    /// Loads a checkpoint directory as transformers' `save_pretrained` writes it: `config.json`
    /// and `model.safetensors` (or a sharded index). Weight norm may be spelled either way;
    /// keys the model does not have (pre-training heads, ...) are ignored and returned; a
    /// missing key, a shape mismatch or an unsupported option is an error naming the file and
    /// key. A checkpoint of the bare encoder (`Wav2Vec2Model`, no `wav2vec2.` prefix) is
    /// missing `lm_head`, which is an error here (a new head for fine-tuning is made with
    /// [`Wav2Vec2ForCtc::from_pretrained_encoder`]).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Wav2Vec2ForCtc, Vec<String>)> {
        let dir = dir.as_ref();
        let cfg = Wav2Vec2Config::from_json_file(dir.join("config.json"))?;
        Self::from_pretrained_with_config(dir, &cfg, false, dtype, device)
    }

    /// The encoder of a checkpoint directory with a new, randomly initialised CTC head of
    /// `vocab_size` symbols (fine-tuning on another vocabulary, or from a pre-trained-only
    /// checkpoint).
    pub fn from_pretrained_encoder(
        dir: impl AsRef<Path>,
        vocab_size: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Wav2Vec2ForCtc, Vec<String>)> {
        let dir = dir.as_ref();
        let mut cfg = Wav2Vec2Config::from_json_file(dir.join("config.json"))?;
        if vocab_size == 0 {
            return Err(invalid("a new CTC head needs at least one symbol"));
        }
        cfg.vocab_size = vocab_size;
        Self::from_pretrained_with_config(dir, &cfg, true, dtype, device)
    }

    /// The weights of checkpoint directory `dir` in a model built from `cfg` instead of the
    /// directory's `config.json` (fine-tuning with other dropouts, LayerDrop or masking). The
    /// shapes must agree with the weights; with `new_head` the checkpoint's `lm_head` is left out
    /// and a fresh one of `cfg.vocab_size` symbols made.
    pub fn from_pretrained_with_config(
        dir: impl AsRef<Path>,
        cfg: &Wav2Vec2Config,
        new_head: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<(Wav2Vec2ForCtc, Vec<String>)> {
        use stapes_nn::StateDictExt;
        let dir = dir.as_ref();
        cfg.validate().map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        let mut state = stapes_nn::checkpoint::hf::read_weights(dir)?;
        if !state.keys().any(|k| k.starts_with("wav2vec2.")) {
            state = state.add_prefix("wav2vec2");
        }
        if new_head {
            state.retain(|k, _| !k.starts_with("lm_head."));
        }
        let model = Wav2Vec2ForCtc::new(cfg, dtype, device)?;
        let own: std::collections::BTreeSet<String> = model.state_dict().into_keys().collect();
        let missing: Vec<&String> = own
            .iter()
            .filter(|k| !state.contains_key(*k))
            .filter(|k| !(new_head && k.starts_with("lm_head.")))
            // transformers makes masked_spec_embed whenever masking is configured; checkpoints
            // saved without it load with a fresh one, as there
            .filter(|k| k.as_str() != "wav2vec2.masked_spec_embed")
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!("{}: the weights lack {missing:?}", dir.display())));
        }
        let unexpected: Vec<String> = state.keys().filter(|k| !own.contains(*k)).cloned().collect();
        state.retain(|k, _| own.contains(k));
        model.load_state_dict(&state, false).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        Ok((model, unexpected))
    }

    /// Writes a directory that transformers' `Wav2Vec2ForCTC.from_pretrained` loads:
    /// `config.json` (the loaded one with `vocab_size` updated, or one built from the config) and
    /// `model.safetensors` with `{"format": "pt"}` metadata, each written atomically.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("save_pretrained", dir, e))?;
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        stapes_nn::checkpoint::save_safetensors(dir.join("model.safetensors"), &self.state_dict(), Some(meta))?;
        let cfg = self.config();
        let json = serde_json::json!({
            "model_type": "wav2vec2",
            "architectures": ["Wav2Vec2ForCTC"],
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "intermediate_size": cfg.intermediate_size,
            "hidden_act": cfg.hidden_act,
            "feat_extract_activation": cfg.feat_extract_activation,
            "hidden_dropout": cfg.hidden_dropout,
            "activation_dropout": cfg.activation_dropout,
            "attention_dropout": cfg.attention_dropout,
            "feat_proj_dropout": cfg.feat_proj_dropout,
            "final_dropout": cfg.final_dropout,
            "layerdrop": cfg.layerdrop,
            "layer_norm_eps": cfg.layer_norm_eps,
            "feat_extract_norm": cfg.feat_extract_norm,
            "num_feat_extract_layers": cfg.conv_dim.len(),
            "conv_dim": cfg.conv_dim,
            "conv_stride": cfg.conv_stride,
            "conv_kernel": cfg.conv_kernel,
            "conv_bias": cfg.conv_bias,
            "num_conv_pos_embeddings": cfg.num_conv_pos_embeddings,
            "num_conv_pos_embedding_groups": cfg.num_conv_pos_embedding_groups,
            "do_stable_layer_norm": cfg.do_stable_layer_norm,
            "apply_spec_augment": cfg.apply_spec_augment,
            "mask_time_prob": cfg.mask_time_prob,
            "mask_time_length": cfg.mask_time_length,
            "mask_time_min_masks": cfg.mask_time_min_masks,
            "mask_feature_prob": cfg.mask_feature_prob,
            "pad_token_id": cfg.pad_token_id,
            "ctc_loss_reduction": cfg.ctc_loss_reduction,
            "ctc_zero_infinity": cfg.ctc_zero_infinity,
        });
        let text = serde_json::to_string_pretty(&json).map_err(|e| invalid(format!("config.json: {e}")))?;
        stapes_nn::checkpoint::write_atomic(dir.join("config.json"), text.as_bytes())
    }
}

/// A checkpoint directory ready to transcribe: the model, its vocabulary and its preprocessing.
pub struct Wav2Vec2Pipeline {
    /// The CTC model (in evaluation mode).
    pub model: Wav2Vec2ForCtc,
    /// `vocab.json`.
    pub vocab: CtcVocab,
    /// `preprocessor_config.json` (defaults when the directory has none).
    pub preprocessor: Wav2Vec2Preprocessor,
}

impl Wav2Vec2Pipeline {
    /// Loads `config.json`, the weights, `vocab.json` and `preprocessor_config.json` of `dir`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Wav2Vec2Pipeline> {
        let dir = dir.as_ref();
        let (model, _) = Wav2Vec2ForCtc::from_pretrained(dir, DType::F32, device)?;
        model.eval();
        let vocab = CtcVocab::from_json_file(dir.join("vocab.json"), model.config().pad_token_id)?;
        if vocab.tokens.len() != model.config().vocab_size {
            return Err(invalid(format!(
                "{}: vocab.json has {} tokens but config.json's vocab_size is {}",
                dir.display(),
                vocab.tokens.len(),
                model.config().vocab_size
            )));
        }
        let preprocessor = Wav2Vec2Preprocessor::from_dir(dir)?;
        Ok(Wav2Vec2Pipeline { model, vocab, preprocessor })
    }

    /// Transcribes mono audio at the preprocessor's rate: cut by
    /// [`plan_segments`](crate::infer::plan_segments), each piece decoded with
    /// [`transcribe_piece`](Self::transcribe_piece).
    pub fn transcribe_samples(
        &self,
        samples: &[f32],
        opts: &crate::infer::SegmentOptions,
    ) -> Result<Vec<crate::infer::TranscriptSegment>> {
        self.transcribe_samples_with(samples, opts, None::<fn(&Tensor, &[usize]) -> Result<Vec<Vec<usize>>>>)
    }

    /// [`transcribe_samples`](Self::transcribe_samples) with a decoder as
    /// [`transcribe_batch_with`](Self::transcribe_batch_with) takes (`None`: greedy).
    pub fn transcribe_samples_with(
        &self,
        samples: &[f32],
        opts: &crate::infer::SegmentOptions,
        mut decode: Option<impl FnMut(&Tensor, &[usize]) -> Result<Vec<Vec<usize>>>>,
    ) -> Result<Vec<crate::infer::TranscriptSegment>> {
        let sr = self.preprocessor.sampling_rate;
        let mut out = Vec::new();
        for (a, b) in crate::infer::plan_segments(samples, sr, opts)? {
            let piece = &samples[a..b];
            let text = match decode.as_mut() {
                Some(d) => self.transcribe_batch_with(&[piece], d)?.pop().unwrap_or_default(),
                None => self.transcribe_piece(piece)?,
            };
            out.push(crate::infer::TranscriptSegment { start: a as f64 / sr as f64, end: b as f64 / sr as f64, text });
        }
        Ok(out)
    }

    /// Greedy CTC transcription of one piece of mono audio at the preprocessor's rate.
    pub fn transcribe_piece(&self, samples: &[f32]) -> Result<String> {
        Ok(self.transcribe_batch(&[samples])?.pop().unwrap_or_default())
    }

    /// Greedy CTC transcription of a batch of mono utterances at the preprocessor's rate, padded
    /// to the longest as transformers' feature extractor pads (each normalised over its own
    /// samples; the padding mask given to the model when `return_attention_mask`, else the
    /// padded batch run as is). Each item is decoded over its own frames.
    pub fn transcribe_batch(&self, utterances: &[&[f32]]) -> Result<Vec<String>> {
        let cfg = self.model.config();
        let longest = utterances.iter().map(|u| u.len()).max().unwrap_or(0);
        if utterances.is_empty() || cfg.output_frames(longest) == 0 {
            return Ok(vec![String::new(); utterances.len()]);
        }
        let (logits, lens) = self.logits_batch(utterances)?;
        let t = logits.dims()[1];
        let ids = logits.argmax(2usize, false)?.to_vec::<i64>()?;
        Ok(lens
            .iter()
            .enumerate()
            .map(|(i, &frames)| {
                let row: Vec<usize> = ids[i * t..i * t + frames].iter().map(|&v| v as usize).collect();
                self.vocab.decode_greedy(&row)
            })
            .collect())
    }

    /// The logits `[B, T, vocab]` of a batch prepared as [`transcribe_batch`](Self::transcribe_batch)
    /// prepares it, on the CPU, and each item's frames.
    pub fn logits_batch(&self, utterances: &[&[f32]]) -> Result<(Tensor, Vec<usize>)> {
        let cfg = self.model.config();
        let longest = utterances.iter().map(|u| u.len()).max().unwrap_or(0);
        if utterances.is_empty() || cfg.output_frames(longest) == 0 {
            return Err(invalid(format!(
                "logits_batch: {} utterances of at most {longest} samples give no frame",
                utterances.len()
            )));
        }
        let pad = self.preprocessor.padding_value;
        let mut x = Vec::with_capacity(utterances.len() * longest);
        for u in utterances {
            let v = if self.preprocessor.do_normalize { normalize_audio(u) } else { u.to_vec() };
            x.extend_from_slice(&v);
            x.extend(std::iter::repeat_n(pad, longest - u.len()));
        }
        let lens: Vec<usize> = utterances.iter().map(|u| u.len()).collect();
        let device = self.model.lm_head.weight.device();
        let x = Tensor::from_vec(x, [utterances.len(), longest], &Device::Cpu)?.to_device(&device)?;
        let mask = self.preprocessor.return_attention_mask.then_some(lens.as_slice());
        let logits = stapes_autograd::no_grad(|| self.model.forward(&Var::constant(x), mask))?.0;
        let t = logits.dims()[1];
        let logits = logits.tensor().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        Ok((logits, lens.iter().map(|&n| cfg.output_frames(n).min(t)).collect()))
    }

    /// Transcribes a batch with any CTC decoder of the character vocabulary
    /// [`CtcVocab::char_vocab`] makes (the beam search, with or without an LM): `decode` gets
    /// log-probabilities `[B, T, C]` with columns in that vocabulary's order and the frame counts,
    /// and returns each item's labels (blank-free).
    pub fn transcribe_batch_with(
        &self,
        utterances: &[&[f32]],
        mut decode: impl FnMut(&Tensor, &[usize]) -> Result<Vec<Vec<usize>>>,
    ) -> Result<Vec<String>> {
        let longest = utterances.iter().map(|u| u.len()).max().unwrap_or(0);
        if utterances.is_empty() || self.model.config().output_frames(longest) == 0 {
            return Ok(vec![String::new(); utterances.len()]);
        }
        let (chars, order) = self.vocab.char_vocab()?;
        let (logits, lens) = self.logits_batch(utterances)?;
        let mut lp = logits.log_softmax(-1)?;
        if order.iter().enumerate().any(|(i, &o)| i != o) {
            let idx =
                Tensor::from_vec(order.iter().map(|&o| o as i64).collect::<Vec<_>>(), [order.len()], &Device::Cpu)?;
            lp = lp.index_select(2usize, &idx)?;
        }
        decode(&lp, &lens)?
            .into_iter()
            .map(|ids| {
                let ids: Vec<i64> = ids.into_iter().map(|i| i as i64).collect();
                Ok(CtcVocab::decode_chars(&chars.decode(&ids)?))
            })
            .collect()
    }

    /// Whether the vocabulary's letters are all upper case (as in the English CTC checkpoints),
    /// so references are compared upper-cased.
    pub fn vocab_is_upper_case(&self) -> bool {
        let letters = self
            .vocab
            .tokens
            .iter()
            .filter(|t| !t.starts_with('<'))
            .flat_map(|t| t.chars())
            .filter(|c| c.is_alphabetic());
        let mut any = false;
        for c in letters {
            if c.is_lowercase() {
                return false;
            }
            any = true;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_masks_follow_transformers_rules() {
        let mut g = stapes_tensor::Generator::new(3);
        let (frames, ml) = (120usize, 10usize);
        let mut masked_total = 0usize;
        let draws = 400;
        for d in 0..draws {
            let lengths = [120usize, 57, 9, 10];
            let m = compute_time_mask(&lengths, frames, 0.3, ml, 2, &mut g);
            for (b, &len) in lengths.iter().enumerate() {
                let row = &m[b * frames..(b + 1) * frames];
                assert!(row[len.min(frames)..].iter().all(|&v| !v), "draw {d}: mask past the length");
                // every maximal run is at least one span long (spans may merge)
                let mut run = 0;
                for &v in row.iter().chain(std::iter::once(&false)) {
                    if v {
                        run += 1;
                    } else {
                        assert!(run == 0 || run >= ml, "draw {d}: a run of {run} < {ml}");
                        run = 0;
                    }
                }
                let count = row.iter().filter(|&&v| v).count();
                let max_spans = len / ml;
                if len < ml {
                    assert_eq!(count, 0);
                } else {
                    // min_masks = 2 spans at least (capped by what fits), at most max_spans
                    assert!(count >= ml && count <= max_spans * ml, "draw {d}: {count} masked of {len}");
                }
                if b == 0 {
                    masked_total += count;
                }
            }
        }
        // 120 frames, p = 0.3: floor(3.6 + u) = 3 or 4 spans (mean 3.6) of 10 frames, before
        // overlaps: the masked fraction is a little under 0.36
        let frac = masked_total as f64 / (draws * frames) as f64;
        assert!(frac > 0.25 && frac < 0.36, "masked fraction {frac}");
        assert!(compute_time_mask(&[50], 50, 0.0, 10, 2, &mut g).iter().all(|&v| !v));
    }
}
