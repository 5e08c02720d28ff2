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

use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stapes_autograd::{no_grad, Var};
use stapes_kernels::cpu::attention::attend_cached;
use stapes_kernels::cpu::norm::layer_norm_forward;
use stapes_nn::layers::{Embedding, LayerNorm, Linear, PackedLinear};
use stapes_nn::transformer::{
    sinusoidal_table, Activation, TransformerEncoder, TransformerEncoderLayer, TransformerLayerConfig,
};
use stapes_nn::{Forward, Module, Param};
use stapes_tensor::{DType, Device, Error, Result, Tensor, TensorId};

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
    /// The weights packed for [`step`](Self::step) on the CPU, built on first use and rebuilt
    /// when a parameter has changed since (parameters are immutable tensors: a change is a new
    /// tensor id).
    host: Mutex<Option<Arc<HostDecoder>>>,
}

/// One token of a prefix: its keys and values in every layer (`[layer][keys E | values E]`,
/// f32), linked to the token before it. Prefixes that share a beginning (the beams of a search)
/// share its nodes, so extending a prefix costs one node, not a copy of its cache.
struct KvNode {
    parent: Option<Arc<KvNode>>,
    kv: Box<[f32]>,
}

impl Drop for KvNode {
    /// Frees a chain iteratively (a recursive drop of a long chain could exhaust the stack).
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(node) = next {
            match Arc::try_unwrap(node) {
                Ok(mut n) => next = n.parent.take(),
                Err(_) => break,
            }
        }
    }
}

/// The cached keys and values of one prefix (on the host, shared with the prefixes it was
/// extended from) and its length. Cloning is cheap.
#[derive(Clone)]
pub struct LmState {
    last: Option<Arc<KvNode>>,
    len: usize,
}

impl std::fmt::Debug for LmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LmState {{ len: {} }}", self.len)
    }
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

    /// The prefix's tokens' nodes, first to last.
    fn nodes(&self) -> Vec<&KvNode> {
        let mut v = Vec::with_capacity(self.len);
        let mut at = self.last.as_deref();
        while let Some(n) = at {
            v.push(n);
            at = n.parent.as_deref();
        }
        v.reverse();
        v
    }

    /// This prefix extended by a token whose keys and values are `kv`.
    fn push(&self, kv: Vec<f32>) -> LmState {
        LmState { last: Some(Arc::new(KvNode { parent: self.last.clone(), kv: kv.into() })), len: self.len + 1 }
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
            host: Mutex::new(None),
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
        self.check_token_ids(&ids.to_vec::<i64>()?)
    }

    fn check_token_ids(&self, ids: &[i64]) -> Result<()> {
        let v = self.config.vocab_size as i64;
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= v) {
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
        LmState { last: None, len: 0 }
    }

    /// Feeds one token to each of `states` (its prefix so far) in one batched pass over cached
    /// keys and values: returns the next-token log-probabilities `[N, vocab]` (f32, on the CPU)
    /// and each prefix's extended state. The same numbers as [`forward`](Self::forward) on the
    /// whole prefixes, without their `T×T` recomputation. Evaluation mode is assumed (no dropout).
    ///
    /// An f32 model on the CPU runs the step on the host with its weights packed once (see
    /// [`PackedLinear`]): four packed GEMMs per layer for the batch, attention over each
    /// prefix's cache in place, no tensor ops. Other models (CUDA, f16/bf16, f64) run it as
    /// tensor ops on their device.
    pub fn step(&self, states: &[&LmState], tokens: &[i64]) -> Result<(Tensor, Vec<LmState>)> {
        if states.len() != tokens.len() || states.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("step: {} states for {} tokens (need as many, at least one)", states.len(), tokens.len()),
            ));
        }
        let cfg = &self.config;
        if let Some(s) = states.iter().find(|s| s.len >= cfg.max_len) {
            return Err(Error::invalid(
                OP,
                format!("step: a prefix of {} tokens reached max_len {}", s.len, cfg.max_len),
            ));
        }
        self.check_token_ids(tokens)?;
        let width = cfg.num_layers * 2 * cfg.d_model;
        if let Some(s) = states.iter().find(|s| s.last.as_ref().is_some_and(|n| n.kv.len() != width)) {
            return Err(Error::invalid(
                OP,
                format!(
                    "step: a state of {} tokens comes from another model (its cache rows hold {} values, this \
                     model's {width})",
                    s.len,
                    s.last.as_ref().map_or(0, |n| n.kv.len())
                ),
            ));
        }
        match self.host_decoder()? {
            Some(d) => d.step(states, tokens),
            None => self.step_tensors(states, tokens),
        }
    }

    /// The packed host decoder of an f32 CPU model (`None` for other models), rebuilt when a
    /// parameter changed since it was built.
    fn host_decoder(&self) -> Result<Option<Arc<HostDecoder>>> {
        if self.device() != Device::Cpu || self.embed.weight.tensor().dtype() != DType::F32 {
            return Ok(None);
        }
        let mut slot = self.host.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slot.as_ref().filter(|d| d.handles.iter().zip(&d.ids).all(|(p, &id)| p.tensor().id() == id)) {
            return Ok(Some(d.clone()));
        }
        let handles = self.parameters();
        if handles.iter().any(|p| p.tensor().dtype() != DType::F32 || p.tensor().device() != &Device::Cpu) {
            return Ok(None);
        }
        let d = Arc::new(HostDecoder::new(self, handles)?);
        *slot = Some(d.clone());
        Ok(Some(d))
    }

    /// [`step`](Self::step) as tensor ops on the model's device and dtype.
    fn step_tensors(&self, states: &[&LmState], tokens: &[i64]) -> Result<(Tensor, Vec<LmState>)> {
        let n = states.len();
        let cfg = &self.config;
        let ids = Tensor::from_vec(tokens.to_vec(), [n], &Device::Cpu)?;
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
            let chains: Vec<Vec<&KvNode>> = states.iter().map(|s| s.nodes()).collect();
            let mut new_kv = vec![vec![0f32; cfg.num_layers * 2 * e]; n];
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
                // every prefix's cached keys and values with the new ones appended, gathered on
                // the host and sent to the model's device in one piece
                let k_new = k.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
                let v_new = v.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
                let mut kbuf = vec![0f32; n * t_max * e];
                let mut vbuf = vec![0f32; n * t_max * e];
                let at = l * 2 * e;
                for (i, chain) in chains.iter().enumerate() {
                    for (j, node) in chain.iter().enumerate() {
                        let r = (i * t_max + j) * e;
                        kbuf[r..r + e].copy_from_slice(&node.kv[at..at + e]);
                        vbuf[r..r + e].copy_from_slice(&node.kv[at + e..at + 2 * e]);
                    }
                    let r = (i * t_max + chain.len()) * e;
                    kbuf[r..r + e].copy_from_slice(&k_new[i * e..(i + 1) * e]);
                    vbuf[r..r + e].copy_from_slice(&v_new[i * e..(i + 1) * e]);
                    new_kv[i][at..at + e].copy_from_slice(&k_new[i * e..(i + 1) * e]);
                    new_kv[i][at + e..at + 2 * e].copy_from_slice(&v_new[i * e..(i + 1) * e]);
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
            let new_states = states.iter().zip(new_kv).map(|(s, kv)| s.push(kv)).collect();
            Ok((lp, new_states))
        })
    }
}

fn feed_forward(layer: &TransformerEncoderLayer, x: &Tensor) -> Result<Tensor> {
    let h = layer.linear1.forward(&Var::constant(x.clone()))?;
    let h = layer.activation.apply(&h)?;
    Ok(layer.linear2.forward(&h)?.tensor().clone())
}

/// A LayerNorm's parameters on the host.
struct HostNorm {
    weight: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    eps: f64,
}

impl HostNorm {
    fn new(ln: &LayerNorm) -> Result<HostNorm> {
        let host = |p: &Option<Param>| p.as_ref().map(|p| p.tensor().contiguous()?.to_vec::<f32>()).transpose();
        Ok(HostNorm { weight: host(&ln.weight)?, bias: host(&ln.bias)?, eps: ln.eps })
    }

    /// Normalises each row of `e` values of `x` (the engine's CPU layer norm).
    fn apply(&self, x: &[f32], e: usize) -> Vec<f32> {
        let rows = x.len() / e;
        let mut y = vec![0f32; x.len()];
        let (mut mean, mut rstd) = (vec![0f32; rows], vec![0f32; rows]);
        layer_norm_forward(
            x,
            rows,
            e,
            self.weight.as_deref(),
            self.bias.as_deref(),
            self.eps,
            &mut y,
            &mut mean,
            &mut rstd,
        );
        y
    }
}

/// One encoder layer's weights, packed for the host step.
struct HostLayer {
    norm_first: bool,
    norm1: HostNorm,
    norm2: HostNorm,
    in_proj: PackedLinear,
    out_proj: PackedLinear,
    linear1: PackedLinear,
    linear2: PackedLinear,
    gelu: bool,
}

impl HostLayer {
    fn feed_forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut h = self.linear1.forward_rows(x, rows)?;
        if self.gelu {
            stapes_kernels::cpu::vmath::gelu_f32_inplace(&mut h);
        } else {
            h.iter_mut().for_each(|a| *a = a.max(0.0));
        }
        self.linear2.forward_rows(&h, rows)
    }
}

/// A [`TransformerLm`]'s weights frozen for the host step: the embedding, the position table,
/// every projection packed once ([`PackedLinear`]) and the norms, with the parameter ids they
/// were taken from.
struct HostDecoder {
    /// The parameters, and the ids of the tensors they held when this was built.
    handles: Vec<Param>,
    ids: Vec<TensorId>,
    embed: Vec<f32>,
    pe: Vec<f32>,
    layers: Vec<HostLayer>,
    norm: Option<HostNorm>,
    out: PackedLinear,
    d_model: usize,
    nhead: usize,
    vocab: usize,
}

impl HostDecoder {
    fn new(m: &TransformerLm, handles: Vec<Param>) -> Result<HostDecoder> {
        let ids = handles.iter().map(|p| p.tensor().id()).collect();
        let layers = m
            .encoder
            .layers
            .iter()
            .map(|l| {
                let mha = &l.self_attn;
                let bias = mha.in_proj_bias.as_ref().map(|b| b.tensor());
                Ok(HostLayer {
                    norm_first: l.norm_first,
                    norm1: HostNorm::new(&l.norm1)?,
                    norm2: HostNorm::new(&l.norm2)?,
                    in_proj: PackedLinear::from_weight(&mha.in_proj_weight.tensor(), bias.as_ref())?,
                    out_proj: mha.out_proj.packed()?,
                    linear1: l.linear1.packed()?,
                    linear2: l.linear2.packed()?,
                    gelu: matches!(l.activation, Activation::Gelu),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let out_w = match &m.out.weight {
            Some(w) => w.tensor(),
            None => m.embed.weight.tensor(),
        };
        Ok(HostDecoder {
            handles,
            ids,
            embed: m.embed.weight.tensor().contiguous()?.to_vec::<f32>()?,
            pe: m.pe.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?,
            layers,
            norm: m.encoder.norm.as_ref().map(HostNorm::new).transpose()?,
            out: PackedLinear::from_weight(&out_w, Some(&m.out.bias.tensor()))?,
            d_model: m.config.d_model,
            nhead: m.config.nhead,
            vocab: m.config.vocab_size,
        })
    }

    /// [`TransformerLm::step`] on the host (states and tokens checked by the caller).
    fn step(&self, states: &[&LmState], tokens: &[i64]) -> Result<(Tensor, Vec<LmState>)> {
        let (n, e) = (states.len(), self.d_model);
        let dh = e / self.nhead;
        let emb_scale = (e as f64).sqrt() as f32;
        let mut x = vec![0f32; n * e];
        for (i, (s, &t)) in states.iter().zip(tokens).enumerate() {
            let row = &self.embed[t as usize * e..(t as usize + 1) * e];
            let pe = &self.pe[s.len * e..(s.len + 1) * e];
            for ((o, &a), &p) in x[i * e..(i + 1) * e].iter_mut().zip(row).zip(pe) {
                *o = a * emb_scale + p;
            }
        }
        let chains: Vec<Vec<&KvNode>> = states.iter().map(|s| s.nodes()).collect();
        let mut new_kv = vec![vec![0f32; self.layers.len() * 2 * e]; n];
        let q_scale = 1.0 / (dh as f32).sqrt();
        let total_keys: usize = chains.iter().map(|c| c.len() + 1).sum();
        for (l, layer) in self.layers.iter().enumerate() {
            let normed;
            let attn_in = if layer.norm_first {
                normed = layer.norm1.apply(&x, e);
                &normed
            } else {
                &x
            };
            let qkv = layer.in_proj.forward_rows(attn_in, n)?;
            let at = l * 2 * e;
            for (i, kv) in new_kv.iter_mut().enumerate() {
                kv[at..at + 2 * e].copy_from_slice(&qkv[i * 3 * e + e..(i + 1) * 3 * e]);
            }
            let mut att = vec![0f32; n * e];
            let attend = |(keys, values, scores): &mut (Vec<_>, Vec<_>, Vec<f32>), (i, out): (usize, &mut [f32])| {
                let row = &qkv[i * 3 * e..(i + 1) * 3 * e];
                keys.clear();
                values.clear();
                for node in &chains[i] {
                    keys.push(&node.kv[at..at + e]);
                    values.push(&node.kv[at + e..at + 2 * e]);
                }
                keys.push(&row[e..2 * e]);
                values.push(&row[2 * e..3 * e]);
                scores.resize(keys.len(), 0.0);
                attend_cached(&row[..e], keys, values, self.nhead, q_scale, scores, out);
            };
            let scratch = || (Vec::new(), Vec::new(), Vec::new());
            // Parallel over prefixes only when the caches are long enough to pay for it.
            if total_keys * e >= 1 << 16 {
                att.par_chunks_mut(e).enumerate().for_each_init(scratch, attend);
            } else {
                let mut s = scratch();
                att.chunks_mut(e).enumerate().for_each(|r| attend(&mut s, r));
            }
            let o = layer.out_proj.forward_rows(&att, n)?;
            if layer.norm_first {
                x.iter_mut().zip(&o).for_each(|(a, &b)| *a += b);
                let f = layer.feed_forward(&layer.norm2.apply(&x, e), n)?;
                x.iter_mut().zip(&f).for_each(|(a, &b)| *a += b);
            } else {
                x.iter_mut().zip(&o).for_each(|(a, &b)| *a += b);
                let x1 = layer.norm1.apply(&x, e);
                let mut f = layer.feed_forward(&x1, n)?;
                f.iter_mut().zip(&x1).for_each(|(a, &b)| *a += b);
                x = layer.norm2.apply(&f, e);
            }
        }
        if let Some(norm) = &self.norm {
            x = norm.apply(&x, e);
        }
        let mut logits = self.out.forward_rows(&x, n)?;
        for row in logits.chunks_exact_mut(self.vocab) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
            let lse = f64::from(max) + row.iter().map(|&a| f64::from(a - max).exp()).sum::<f64>().ln();
            row.iter_mut().for_each(|a| *a = (f64::from(*a) - lse) as f32);
        }
        let new_states = states.iter().zip(new_kv).map(|(s, kv)| s.push(kv)).collect();
        Ok((Tensor::from_vec(logits, [n, self.vocab], &Device::Cpu)?, new_states))
    }
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
