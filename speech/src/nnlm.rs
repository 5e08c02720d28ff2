//! A causal Transformer language model (issue 18): token embedding scaled by `sqrt(d_model)`,
//! sinusoidal positions, an `nn.TransformerEncoder` stack under a causal mask, and a linear
//! output layer (optionally tied to the embedding), as PyTorch's `word_language_model`
//! example builds it. Parameter names are that model's: `embed.weight`,
//! `encoder.layers.<i>.self_attn.in_proj_weight`, …, `encoder.norm.*` (pre-norm stacks),
//! `out.weight`, `out.bias`.
//!
//! [`TransformerLm::forward`] scores whole batches (training, rescoring);
//! [`TransformerLm::step`] extends many prefixes by one token each with cached keys and values
//! (generation, shallow fusion in the beam search), without recomputing the earlier positions.

use serde::{Deserialize, Serialize};
use stapes_autograd::{no_grad, Var};
use stapes_nn::layers::{Embedding, LayerNorm, Linear};
use stapes_nn::transformer::{
    sinusoidal_table, Activation, TransformerEncoder, TransformerEncoderLayer, TransformerLayerConfig,
};
use stapes_nn::{Forward, Module, Param};
use stapes_tensor::{DType, Device, Error, Result, Tensor};

const OP: &str = "TransformerLm";

/// The shape of a [`TransformerLm`] (the `[model]` table of an LM run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerLmConfig {
    /// Token ids, the special ones included (set from the tokenizer).
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    pub nhead: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Feed-forward width.
    pub dim_feedforward: usize,
    /// Dropout (embedding, attention, feed-forward, residual branches).
    pub dropout: f64,
    /// Longest sequence (positions of the sinusoidal table).
    pub max_len: usize,
    /// Pre-norm layers (with a final LayerNorm) instead of post-norm.
    pub norm_first: bool,
    /// `"relu"` or `"gelu"`.
    pub activation: String,
    /// The output layer reuses the embedding matrix (only `out.bias` of its own).
    pub tie_weights: bool,
}

impl Default for TransformerLmConfig {
    fn default() -> Self {
        TransformerLmConfig {
            vocab_size: 0,
            d_model: 256,
            nhead: 4,
            num_layers: 4,
            dim_feedforward: 1024,
            dropout: 0.1,
            max_len: 1024,
            norm_first: true,
            activation: "gelu".into(),
            tie_weights: false,
        }
    }
}

impl TransformerLmConfig {
    /// Checks the sizes, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(OP, m));
        if self.vocab_size < 2 {
            return bad(format!("vocab_size must be at least 2, got {}", self.vocab_size));
        }
        if self.d_model == 0 || self.nhead == 0 || !self.d_model.is_multiple_of(self.nhead) {
            return bad(format!("d_model ({}) must be a positive multiple of nhead ({})", self.d_model, self.nhead));
        }
        if self.num_layers == 0 || self.dim_feedforward == 0 || self.max_len == 0 {
            return bad("num_layers, dim_feedforward and max_len must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Activation::from_name(&self.activation)?;
        Ok(())
    }

    fn layer(&self) -> Result<TransformerLayerConfig> {
        Ok(TransformerLayerConfig {
            dim_feedforward: self.dim_feedforward,
            dropout: self.dropout,
            activation: Activation::from_name(&self.activation)?,
            batch_first: true,
            norm_first: self.norm_first,
            ..TransformerLayerConfig::new(self.d_model, self.nhead)
        })
    }
}

/// The output layer: its own weight, or the embedding's.
struct Output {
    weight: Option<Param>,
    bias: Param,
}

impl Module for Output {
    fn local_params(&self) -> Vec<(String, Param)> {
        let mut v: Vec<(String, Param)> = self.weight.iter().map(|w| ("weight".to_string(), w.clone())).collect();
        v.push(("bias".into(), self.bias.clone()));
        v
    }
}

/// The causal Transformer LM.
pub struct TransformerLm {
    config: TransformerLmConfig,
    embed: Embedding,
    pe: Tensor,
    dropout: stapes_nn::layers::Dropout,
    encoder: TransformerEncoder,
    out: Output,
}

/// The cached keys and values of one prefix: per layer `[t, d_model]` keys and values (f32, on
/// the host), and the prefix length `t`.
#[derive(Clone, Debug)]
pub struct LmState {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl LmState {
    /// Tokens seen.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no token has been seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl TransformerLm {
    /// A randomly initialised model (PyTorch's initialisation of each layer), f32 on the CPU.
    pub fn new(config: &TransformerLmConfig) -> Result<TransformerLm> {
        config.validate()?;
        let (dtype, dev) = (DType::F32, Device::Cpu);
        let layer_cfg = config.layer()?;
        let layers = (0..config.num_layers)
            .map(|_| TransformerEncoderLayer::from_config(&layer_cfg, dtype, &dev))
            .collect::<Result<Vec<_>>>()?;
        let norm = if config.norm_first { Some(LayerNorm::new(&[config.d_model])?) } else { None };
        let embed = Embedding::new(config.vocab_size, config.d_model, None)?;
        let lin = Linear::new(config.d_model, config.vocab_size, true)?;
        let out = Output {
            weight: (!config.tie_weights).then(|| lin.weight.clone()),
            bias: lin.bias.clone().ok_or_else(|| Error::invalid(OP, "Linear without bias"))?,
        };
        Ok(TransformerLm {
            config: config.clone(),
            embed,
            pe: sinusoidal_table(config.max_len, config.d_model)?,
            dropout: stapes_nn::layers::Dropout::new(config.dropout)?,
            encoder: TransformerEncoder::from_layers(layers, norm),
            out,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TransformerLmConfig {
        &self.config
    }

    fn device(&self) -> Device {
        self.embed.weight.device()
    }

    fn output(&self, h: &Var) -> Result<Var> {
        let w = match &self.out.weight {
            Some(w) => w.var(),
            None => self.embed.weight.var(),
        };
        stapes_nn::layers::linear(h, &w, Some(&self.out.bias.var()))
    }

    fn check_ids(&self, ids: &Tensor) -> Result<()> {
        if ids.dtype() != DType::I64 {
            return Err(Error::invalid(OP, format!("token ids must be i64, got {:?}", ids.dtype())));
        }
        let v = self.config.vocab_size as i64;
        if let Some(bad) = ids.to_vec::<i64>()?.into_iter().find(|&i| i < 0 || i >= v) {
            return Err(Error::invalid(OP, format!("token id {bad} is outside the vocabulary of {v}")));
        }
        Ok(())
    }

    /// Next-token logits `[B, T, vocab]` for token ids `[B, T]` (i64): position `t` sees tokens
    /// `0..=t`. `lengths` marks each row's valid tokens; the padding after them is masked as
    /// keys (`src_key_padding_mask`), and its outputs are meaningless.
    pub fn forward(&self, ids: &Tensor, lengths: Option<&[usize]>) -> Result<Var> {
        let d = ids.dims().to_vec();
        if d.len() != 2 || d[1] == 0 {
            return Err(Error::shape(OP, format!("token ids must be [batch, time] with time > 0, got {d:?}")));
        }
        let (b, t) = (d[0], d[1]);
        if t > self.config.max_len {
            return Err(Error::invalid(OP, format!("{t} tokens exceed max_len {}", self.config.max_len)));
        }
        self.check_ids(ids)?;
        let dev = self.device();
        let x = self.embed.forward_ids(&ids.to_device(&dev)?)?.mul_scalar((self.config.d_model as f64).sqrt())?;
        let pe = self.pe.narrow(0, 0, t)?.unsqueeze(0usize)?.to_device(&dev)?.to_dtype(x.tensor().dtype())?;
        let x = self.dropout.forward(&x.add(&Var::constant(pe))?)?;
        let pad = match lengths {
            None => None,
            Some(l) => {
                if l.len() != b || l.iter().any(|&n| n > t) {
                    return Err(Error::invalid(OP, format!("lengths {l:?} do not fit ids of shape {d:?}")));
                }
                let mut m = vec![0u8; b * t];
                for (i, &n) in l.iter().enumerate() {
                    m[i * t + n..(i + 1) * t].fill(1);
                }
                Some(Tensor::from_vec(m, [b, t], &Device::Cpu)?.to_device(&dev)?)
            }
        };
        let mask = stapes_nn::attention::generate_square_subsequent_mask(t, x.tensor().dtype(), &dev)?;
        let h = self.encoder.forward(&x, Some(&mask), pad.as_ref(), true)?;
        self.output(&h)
    }

    /// The log-probability (natural log) of each token sequence: `ln p(s_1 … s_n)` summed over
    /// the predictions of `s_1 … s_n` from `s_0 … s_{n-1}` (callers put `<s>` first and `</s>`
    /// last). Without autograd; sequences of one token score 0. A sequence longer than
    /// `max_len` is scored in windows of `max_len` tokens that advance by `max_len / 2`: each
    /// token is predicted from at least the `max_len / 2` tokens before it.
    pub fn sequence_log_probs(&self, sequences: &[Vec<i64>]) -> Result<Vec<f64>> {
        if sequences.iter().any(|s| s.is_empty()) {
            return Err(Error::invalid(OP, "sequence_log_probs: an empty sequence (it needs at least <s>)"));
        }
        let max = self.config.max_len;
        let hop = (max / 2).max(1);
        // (sequence, window start, first position scored in it)
        let mut windows: Vec<(usize, usize, usize)> = Vec::new();
        for (i, s) in sequences.iter().enumerate() {
            let mut start = 0;
            let mut scored_to = 1; // positions < scored_to are scored already (0 never is)
            loop {
                let end = (start + max).min(s.len());
                windows.push((i, start, scored_to));
                scored_to = end;
                if end == s.len() {
                    break;
                }
                start += hop;
            }
        }
        let mut out = vec![0f64; sequences.len()];
        let v = self.config.vocab_size;
        for chunk in windows.chunks(64) {
            let t = chunk.iter().map(|&(i, st, _)| (sequences[i].len() - st).min(max)).max().unwrap_or(1);
            let b = chunk.len();
            let mut ids = vec![0i64; b * t];
            let mut lens = Vec::with_capacity(b);
            for (r, &(i, st, _)) in chunk.iter().enumerate() {
                let w = &sequences[i][st..(st + max).min(sequences[i].len())];
                ids[r * t..r * t + w.len()].copy_from_slice(w);
                lens.push(w.len());
            }
            let x = Tensor::from_vec(ids, [b, t], &Device::Cpu)?;
            let lp = no_grad(|| self.forward(&x, Some(&lens)))?.tensor().log_softmax(-1)?.to_device(&Device::Cpu)?;
            let lp = lp.to_dtype(DType::F32)?.to_vec::<f32>()?;
            for (r, &(i, st, first)) in chunk.iter().enumerate() {
                let s = &sequences[i];
                for pos in first.max(st + 1)..st + lens[r] {
                    let k = pos - st; // predicted from window position k - 1
                    out[i] += f64::from(lp[(r * t + k - 1) * v + s[pos] as usize]);
                }
            }
        }
        Ok(out)
    }

    /// The state of an empty prefix (no token seen).
    pub fn empty_state(&self) -> LmState {
        LmState { keys: vec![], values: vec![], len: 0 }
    }

    /// Feeds one token to each of `states` (its prefix so far) in one batched pass over cached
    /// keys and values: returns the next-token log-probabilities `[N, vocab]` (f32, on the CPU)
    /// and each prefix's extended state. The same numbers as [`forward`](Self::forward) on the
    /// whole prefixes, without their `T×T` recomputation. Evaluation mode is assumed (no dropout).
    pub fn step(&self, states: &[&LmState], tokens: &[i64]) -> Result<(Tensor, Vec<LmState>)> {
        if states.len() != tokens.len() || states.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("step: {} states for {} tokens (need as many, at least one)", states.len(), tokens.len()),
            ));
        }
        let n = states.len();
        let cfg = &self.config;
        if let Some(s) = states.iter().find(|s| s.len >= cfg.max_len) {
            return Err(Error::invalid(
                OP,
                format!("step: a prefix of {} tokens reached max_len {}", s.len, cfg.max_len),
            ));
        }
        let ids = Tensor::from_vec(tokens.to_vec(), [n], &Device::Cpu)?;
        self.check_ids(&ids)?;
        no_grad(|| {
            let dev = self.device();
            let (e, h) = (cfg.d_model, cfg.nhead);
            let dh = e / h;
            let x = self.embed.forward_ids(&ids.to_device(&dev)?)?.tensor().mul_scalar((e as f64).sqrt())?;
            let pos = Tensor::from_vec(states.iter().map(|s| s.len as i64).collect::<Vec<_>>(), [n], &Device::Cpu)?;
            let pe = self.pe.index_select(0usize, &pos)?.to_device(&dev)?.to_dtype(x.dtype())?;
            let mut x = x.add(&pe)?; // [N, E]
            let t_max = states.iter().map(|s| s.len).max().unwrap_or(0) + 1;
            // key padding: state i has len_i + 1 valid keys of t_max
            let mut pad = vec![0f32; n * t_max];
            for (i, s) in states.iter().enumerate() {
                pad[i * t_max + s.len + 1..(i + 1) * t_max].fill(f32::NEG_INFINITY);
            }
            let pad = Tensor::from_vec(pad, [n, 1, 1, t_max], &Device::Cpu)?.to_device(&dev)?.to_dtype(x.dtype())?;
            let mut new_states: Vec<LmState> =
                states.iter().map(|s| LmState { keys: vec![], values: vec![], len: s.len + 1 }).collect();
            for (l, layer) in self.encoder.layers.iter().enumerate() {
                let attn_in = if layer.norm_first {
                    layer.norm1.forward(&Var::constant(x.clone()))?.tensor().clone()
                } else {
                    x.clone()
                };
                let mha = &layer.self_attn;
                let mut qkv = attn_in.matmul(&mha.in_proj_weight.tensor().t()?)?;
                if let Some(bias) = &mha.in_proj_bias {
                    qkv = qkv.add(&bias.tensor())?;
                }
                let q = qkv.narrow(1, 0, e)?;
                let k = qkv.narrow(1, e, e)?;
                let v = qkv.narrow(1, 2 * e, e)?;
                // every prefix's keys and values with the new one appended (kept on the host:
                // one copy per prefix instead of a chain of small tensor ops), then the batch
                // padded to t_max and sent to the model's device in one piece
                let k_new = k.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
                let v_new = v.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
                let mut kbuf = vec![0f32; n * t_max * e];
                let mut vbuf = vec![0f32; n * t_max * e];
                for (i, s) in states.iter().enumerate() {
                    let mut kc = s.keys.get(l).cloned().unwrap_or_default();
                    let mut vc = s.values.get(l).cloned().unwrap_or_default();
                    kc.extend_from_slice(&k_new[i * e..(i + 1) * e]);
                    vc.extend_from_slice(&v_new[i * e..(i + 1) * e]);
                    kbuf[i * t_max * e..i * t_max * e + kc.len()].copy_from_slice(&kc);
                    vbuf[i * t_max * e..i * t_max * e + vc.len()].copy_from_slice(&vc);
                    new_states[i].keys.push(kc);
                    new_states[i].values.push(vc);
                }
                let upload = |b: Vec<f32>| -> Result<Tensor> {
                    Tensor::from_vec(b, [n, t_max, h, dh], &Device::Cpu)?.to_device(&dev)?.to_dtype(x.dtype())
                };
                let kb = upload(kbuf)?.permute(&[0, 2, 3, 1])?; // [N,H,dh,T]
                let vb = upload(vbuf)?.permute(&[0, 2, 1, 3])?; // [N,H,T,dh]
                let qb = q.reshape([n, h, 1, dh])?.mul_scalar(1.0 / (dh as f64).sqrt())?;
                let scores = qb.matmul(&kb)?.add(&pad)?; // [N,H,1,T], broadcast over heads
                let att = scores.softmax(-1)?.matmul(&vb)?.reshape([n, e])?; // [N,E]
                let att = mha.out_proj.forward(&Var::constant(att))?.tensor().clone();
                x = if layer.norm_first {
                    let x1 = x.add(&att)?;
                    let ff = feed_forward(layer, &layer.norm2.forward(&Var::constant(x1.clone()))?.tensor().clone())?;
                    x1.add(&ff)?
                } else {
                    let x1 = layer.norm1.forward(&Var::constant(x.add(&att)?))?.tensor().clone();
                    let ff = feed_forward(layer, &x1)?;
                    layer.norm2.forward(&Var::constant(x1.add(&ff)?))?.tensor().clone()
                };
            }
            let mut hv = Var::constant(x);
            if let Some(norm) = &self.encoder.norm {
                hv = norm.forward(&hv)?;
            }
            let lp = self.output(&hv)?.tensor().log_softmax(-1)?.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            Ok((lp, new_states))
        })
    }
}

fn feed_forward(layer: &TransformerEncoderLayer, x: &Tensor) -> Result<Tensor> {
    let h = layer.linear1.forward(&Var::constant(x.clone()))?;
    let h = layer.activation.apply(&h)?;
    Ok(layer.linear2.forward(&h)?.tensor().clone())
}

impl Module for TransformerLm {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("embed".into(), &self.embed as &dyn Module),
            ("dropout".into(), &self.dropout),
            ("encoder".into(), &self.encoder),
            ("out".into(), &self.out),
        ]
    }
}
