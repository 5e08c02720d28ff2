//! Multi-head attention (`nn.MultiheadAttention`) and the causal mask
//! (`nn.Transformer.generate_square_subsequent_mask`).
//!
//! The computation follows PyTorch's `F.multi_head_attention_forward`: the packed input
//! projection (`in_proj_weight [3E, E]`), heads split as `[B*H, L, E/H]`, the query scaled by
//! `1/sqrt(E/H)`, masks merged into one additive mask (`-inf` = not allowed), softmax, dropout
//! on the weights in training, the weighted sum of the values and `out_proj`.
//!
//! Fully-masked rows (a query that may attend to no key) behave as in PyTorch 2.11, whose two
//! paths differ:
//! * with `need_weights` (the plain softmax path) the row's weights are NaN, and so are its
//!   output and every gradient it reaches;
//! * without `need_weights` (PyTorch goes through `scaled_dot_product_attention`, which uses a
//!   "safe" softmax) the row's weights are 0, so its attention output is 0 (the output is
//!   `out_proj.bias`) and it sends no gradient.
//!
//! Transformer layers call attention without weights, so padded batches never produce NaN
//! there, as in PyTorch.

use crate::init::{torch_default_weight_bias, xavier_uniform};
use crate::layers::{dropout, linear, Linear};
use crate::module::{Forward, Module, Param, TrainingFlag};
use stapes_autograd::Var;
use stapes_tensor::{CmpOp, DType, Device, Error, ReduceOp, Result, Tensor};

/// The causal mask of `nn.Transformer.generate_square_subsequent_mask(n)`: an `[n, n]` float
/// tensor with `-inf` above the diagonal (position `i` may not attend to `j > i`) and `0` on
/// and below it.
pub fn generate_square_subsequent_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    causal_mask(n, n, dtype, device)
}

/// `[l, s]` additive mask with `-inf` where `j > i` (the top-left aligned causal mask of
/// `scaled_dot_product_attention(is_causal=True)`).
fn causal_mask(l: usize, s: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    if !dtype.is_float() {
        return Err(Error::UnsupportedDType {
            op: "generate_square_subsequent_mask",
            dtype,
            msg: "an additive mask is floating point",
        });
    }
    let v: Vec<f64> = (0..l).flat_map(|i| (0..s).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(v, [l, s], device)?.to_dtype(dtype)
}

/// Converts a mask to PyTorch's canonical additive form (`F._canonical_mask`): a boolean (u8)
/// mask becomes `-inf` where set and `0` elsewhere; a float mask is cast to `dtype`.
fn additive_mask(op: &'static str, mask: &Tensor, dtype: DType) -> Result<Tensor> {
    match mask.dtype() {
        DType::U8 => {
            let ninf = Tensor::full(f64::NEG_INFINITY, (), dtype, mask.device())?;
            let zero = Tensor::zeros((), dtype, mask.device())?;
            mask.where_cond(&ninf, &zero)
        }
        d if d.is_float() => {
            if d == dtype {
                Ok(mask.clone())
            } else {
                mask.to_dtype(dtype)
            }
        }
        d => Err(Error::UnsupportedDType {
            op,
            dtype: d,
            msg: "only boolean (u8, true = not allowed) and floating-point (additive) masks are supported",
        }),
    }
}

/// Softmax over the last dim whose rows of all `-inf` give 0 instead of NaN (and no gradient):
/// what PyTorch's `scaled_dot_product_attention` does for fully-masked rows.
fn safe_softmax_last(x: &Var) -> Result<Var> {
    let t = x.tensor();
    let d = t.rank() - 1;
    let y = t.softmax(d)?;
    let row_max = t.reduce(&[d], true, ReduceOp::Max)?;
    let dead = row_max.cmp_scalar(f64::NEG_INFINITY, CmpOp::Eq)?;
    let y = y.masked_fill(&dead, 0.0)?;
    let yc = y.clone();
    // The backward y * (g - Σ g·y) is 0 on the zeroed rows.
    Ok(Var::from_op("safe_softmax", y, &[x], Box::new(move |g| Ok(vec![Some(yc.softmax_backward(g, d, false)?)]))))
}

/// The optional arguments of [`MultiheadAttention::forward`], defaulted as in PyTorch
/// (`need_weights=True`, `average_attn_weights=True`, no masks, not causal).
#[derive(Clone, Copy, Debug)]
pub struct MhaOptions<'a> {
    /// `[B, S]` (or `[S]` for unbatched input): boolean (u8, 1 = ignore this key) or float
    /// (added to the scores).
    pub key_padding_mask: Option<&'a Tensor>,
    /// `[L, S]` or `[B*num_heads, L, S]`: boolean (u8, 1 = not allowed) or float (added to the
    /// scores, `-inf` = not allowed). Float masks are cast to the query's dtype.
    pub attn_mask: Option<&'a Tensor>,
    /// Whether to return the attention weights.
    pub need_weights: bool,
    /// Whether the returned weights are averaged over heads (`[B, L, S]`) or per head
    /// (`[B, num_heads, L, S]`).
    pub average_attn_weights: bool,
    /// A hint that `attn_mask` is the causal mask. PyTorch requires `attn_mask` with it; here,
    /// when `attn_mask` is `None`, the causal mask is applied (`j > i` not allowed), which is
    /// what the hint promises. When a mask is given, the mask is used.
    pub is_causal: bool,
}

impl Default for MhaOptions<'_> {
    fn default() -> Self {
        MhaOptions {
            key_padding_mask: None,
            attn_mask: None,
            need_weights: true,
            average_attn_weights: true,
            is_causal: false,
        }
    }
}

impl<'a> MhaOptions<'a> {
    /// Sets `key_padding_mask`.
    pub fn key_padding_mask(mut self, m: Option<&'a Tensor>) -> Self {
        self.key_padding_mask = m;
        self
    }
    /// Sets `attn_mask`.
    pub fn attn_mask(mut self, m: Option<&'a Tensor>) -> Self {
        self.attn_mask = m;
        self
    }
    /// Sets `need_weights`.
    pub fn need_weights(mut self, b: bool) -> Self {
        self.need_weights = b;
        self
    }
    /// Sets `average_attn_weights`.
    pub fn average_attn_weights(mut self, b: bool) -> Self {
        self.average_attn_weights = b;
        self
    }
    /// Sets `is_causal`.
    pub fn is_causal(mut self, b: bool) -> Self {
        self.is_causal = b;
        self
    }
}

/// The constructor arguments of [`MultiheadAttention`], defaulted as PyTorch.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiheadAttentionConfig {
    /// Model dim `E` (query, key and value all have it: `kdim`/`vdim` are not supported).
    pub embed_dim: usize,
    /// Number of heads; must divide `embed_dim`.
    pub num_heads: usize,
    /// Dropout on the attention weights in training (default 0).
    pub dropout: f64,
    /// Whether the input and output projections have biases (default true).
    pub bias: bool,
    /// Inputs and output are `[B, L, E]` instead of `[L, B, E]` (default false).
    pub batch_first: bool,
}

impl MultiheadAttentionConfig {
    /// `nn.MultiheadAttention(embed_dim, num_heads)`'s defaults.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        MultiheadAttentionConfig { embed_dim, num_heads, dropout: 0.0, bias: true, batch_first: false }
    }
}

/// `nn.MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False)`
/// with `kdim = vdim = embed_dim` (separate key/value dims, `add_bias_kv` and `add_zero_attn`
/// are not supported).
///
/// Parameters, named as in PyTorch's `state_dict`: `in_proj_weight [3E, E]` (xavier-uniform),
/// `in_proj_bias [3E]` (zeros), and the child `Linear` `out_proj` (`out_proj.weight` with
/// Linear's default init, `out_proj.bias` zeros).
pub struct MultiheadAttention {
    /// `E`.
    pub embed_dim: usize,
    /// `H`.
    pub num_heads: usize,
    /// Dropout probability on the attention weights (training only).
    pub dropout: f64,
    /// Whether inputs and output are batch-first.
    pub batch_first: bool,
    /// `[3E, E]`: the query, key and value projections stacked.
    pub in_proj_weight: Param,
    /// `[3E]`, if the layer has biases.
    pub in_proj_bias: Option<Param>,
    /// The output projection.
    pub out_proj: Linear,
    training: TrainingFlag,
}

impl MultiheadAttention {
    /// `nn.MultiheadAttention(embed_dim, num_heads)` in f32 on the CPU.
    pub fn new(embed_dim: usize, num_heads: usize) -> Result<MultiheadAttention> {
        MultiheadAttention::from_config(&MultiheadAttentionConfig::new(embed_dim, num_heads), DType::F32, &Device::Cpu)
    }

    /// A layer from its full configuration, with the given dtype and device.
    pub fn from_config(cfg: &MultiheadAttentionConfig, dtype: DType, device: &Device) -> Result<MultiheadAttention> {
        const OP: &str = "MultiheadAttention::new";
        let (e, h) = (cfg.embed_dim, cfg.num_heads);
        if e == 0 || h == 0 || e % h != 0 {
            return Err(Error::invalid(
                OP,
                format!("embed_dim ({e}) must be positive and divisible by num_heads ({h})"),
            ));
        }
        if !(0.0..=1.0).contains(&cfg.dropout) {
            return Err(Error::invalid(OP, format!("dropout has to be between 0 and 1, but got {}", cfg.dropout)));
        }
        let in_proj_weight = Param::new(xavier_uniform([3 * e, e], 1.0, dtype, device)?);
        let in_proj_bias = if cfg.bias { Some(Param::new(Tensor::zeros(3 * e, dtype, device)?)) } else { None };
        // NonDynamicallyQuantizableLinear: Linear's weight init, then the bias is zeroed.
        let (w, _) = torch_default_weight_bias(&[e, e], false, dtype, device)?;
        let out_bias = if cfg.bias { Some(Param::new(Tensor::zeros(e, dtype, device)?)) } else { None };
        Ok(MultiheadAttention {
            embed_dim: e,
            num_heads: h,
            dropout: cfg.dropout,
            batch_first: cfg.batch_first,
            in_proj_weight,
            in_proj_bias,
            out_proj: Linear::from_params(Param::new(w), out_bias),
            training: TrainingFlag::default(),
        })
    }

    /// Whether the layer is in training mode (dropout on the weights).
    pub fn is_training(&self) -> bool {
        self.training.get()
    }

    /// Attention of `query` over `key`/`value`: returns the output (the query's shape) and,
    /// with `need_weights`, the attention weights (`[B, L, S]` averaged over heads, or
    /// `[B, H, L, S]`; without the batch dim for unbatched input).
    ///
    /// Shapes: `query [L, B, E]`, `key`/`value [S, B, E]` (`[B, L, E]`/`[B, S, E]` when
    /// `batch_first`), or unbatched `[L, E]`/`[S, E]`. Pass the same `Var` three times for
    /// self-attention. See [`MhaOptions`] for the masks.
    pub fn forward(&self, query: &Var, key: &Var, value: &Var, opts: &MhaOptions) -> Result<(Var, Option<Var>)> {
        const OP: &str = "MultiheadAttention::forward";
        let (qd, kd, vd) = (query.dims().to_vec(), key.dims().to_vec(), value.dims().to_vec());
        let batched = match (qd.len(), kd.len(), vd.len()) {
            (3, 3, 3) => true,
            (2, 2, 2) => false,
            _ => {
                return Err(Error::shape(
                    OP,
                    format!(
                        "query {qd:?}, key {kd:?} and value {vd:?} must all be 3-D (batched) or all 2-D (unbatched)"
                    ),
                ))
            }
        };
        // To the sequence-first batched layout [T, B, E].
        let to_seq_first = |x: &Var| -> Result<Var> {
            if !batched {
                x.unsqueeze(1usize)
            } else if self.batch_first {
                x.transpose(0usize, 1usize)
            } else {
                Ok(x.clone())
            }
        };
        let (q_in, k_in, v_in) = (to_seq_first(query)?, to_seq_first(key)?, to_seq_first(value)?);
        let (l, b, e) = (q_in.dims()[0], q_in.dims()[1], q_in.dims()[2]);
        let s = k_in.dims()[0];
        let (h, hd) = (self.num_heads, self.embed_dim / self.num_heads);
        if e != self.embed_dim {
            return Err(Error::shape(OP, format!("query {qd:?} has embedding dim {e}, expected {}", self.embed_dim)));
        }
        if k_in.dims() != v_in.dims() || k_in.dims()[1] != b || k_in.dims()[2] != e {
            return Err(Error::shape(
                OP,
                format!(
                    "key {kd:?} and value {vd:?} must have the same shape, with the query's batch size and \
                     embedding dim (query {qd:?}, batch_first = {})",
                    self.batch_first
                ),
            ));
        }
        let dtype = query.tensor().dtype();
        let device = *query.tensor().device();

        // The additive mask, [1 or B*H, L, S].
        let mut mask: Option<Tensor> = None;
        if let Some(am) = opts.attn_mask {
            let am = additive_mask(OP, am, dtype)?;
            let ok2 = [l, s];
            let ok3 = [b * h, l, s];
            mask = Some(match am.rank() {
                2 if am.dims() == ok2 => am.unsqueeze(0usize)?,
                3 if am.dims() == ok3 => am,
                _ => {
                    return Err(Error::shape(
                        OP,
                        format!("attn_mask has shape {:?}, expected {ok2:?} or {ok3:?}", am.dims()),
                    ))
                }
            });
        } else if opts.is_causal {
            mask = Some(causal_mask(l, s, dtype, &device)?.unsqueeze(0usize)?);
        }
        if let Some(kpm) = opts.key_padding_mask {
            let expected: Vec<usize> = if batched { vec![b, s] } else { vec![s] };
            if kpm.dims() != expected.as_slice() {
                return Err(Error::shape(
                    OP,
                    format!("key_padding_mask has shape {:?}, expected {expected:?}", kpm.dims()),
                ));
            }
            let kpm = additive_mask(OP, kpm, dtype)?
                .reshape([b, 1, 1, s])?
                .expand([b, h, 1, s])?
                .contiguous()?
                .reshape([b * h, 1, s])?;
            mask = Some(match mask {
                Some(m) => m.add(&kpm)?,
                None => kpm,
            });
        }

        // Input projections: rows [0, E) of the packed weight for q, [E, 2E) for k, [2E, 3E) for v.
        let w = self.in_proj_weight.var();
        let bias = self.in_proj_bias.as_ref().map(|p| p.var());
        let project = |x: &Var, i: usize| -> Result<Var> {
            let wi = w.narrow(0usize, i * e, e)?;
            let bi = bias.as_ref().map(|b| b.narrow(0usize, i * e, e)).transpose()?;
            linear(x, &wi, bi.as_ref())
        };
        let heads = |x: Var, t: usize| -> Result<Var> { x.reshape([t, b * h, hd])?.transpose(0usize, 1usize) };
        let q = heads(project(&q_in, 0)?, l)?;
        let k = heads(project(&k_in, 1)?, s)?;
        let v = heads(project(&v_in, 2)?, s)?;

        // Scores [B*H, L, S], weights, weighted values.
        let q = q.mul_scalar(1.0 / (hd as f64).sqrt())?;
        let mut scores = q.matmul(&k.transpose(1usize, 2usize)?)?;
        if let Some(m) = mask {
            scores = scores.add(&Var::constant(m))?;
        }
        let weights = if opts.need_weights { scores.softmax(-1i32)? } else { safe_softmax_last(&scores)? };
        let weights = dropout(&weights, self.dropout, self.training.get())?;
        let attn = weights.matmul(&v)?.transpose(0usize, 1usize)?.reshape([l, b, e])?;
        let mut out = self.out_proj.forward(&attn)?;
        if !batched {
            out = out.squeeze(1usize)?;
        } else if self.batch_first {
            out = out.transpose(0usize, 1usize)?;
        }
        if !opts.need_weights {
            return Ok((out, None));
        }
        let mut wts = weights.reshape([b, h, l, s])?;
        if opts.average_attn_weights {
            wts = wts.mean(1usize, false)?;
        }
        if !batched {
            wts = wts.squeeze(0usize)?;
        }
        Ok((out, Some(wts)))
    }
}

impl Module for MultiheadAttention {
    fn local_params(&self) -> Vec<(String, Param)> {
        let mut v = vec![("in_proj_weight".to_string(), self.in_proj_weight.clone())];
        if let Some(b) = &self.in_proj_bias {
            v.push(("in_proj_bias".to_string(), b.clone()));
        }
        v
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("out_proj".to_string(), &self.out_proj as &dyn Module)]
    }
    fn set_local_training(&self, training: bool) {
        self.training.set(training)
    }
}

/// Self-attention without masks (`mha(x, x, x, need_weights=False)[0]`), so the layer can be
/// chained with other [`Forward`] modules.
impl Forward for MultiheadAttention {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(MultiheadAttention::forward(self, x, x, x, &MhaOptions::default().need_weights(false))?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::manual_seed;

    fn randn(shape: &[usize]) -> Var {
        Var::leaf(Tensor::randn(shape, DType::F64, &Device::Cpu).unwrap())
    }

    fn mha(e: usize, h: usize) -> MultiheadAttention {
        let m = MultiheadAttention::from_config(&MultiheadAttentionConfig::new(e, h), DType::F64, &Device::Cpu);
        m.unwrap()
    }

    #[test]
    fn names_shapes_and_init() {
        manual_seed(3);
        let m = MultiheadAttention::new(16, 4).unwrap();
        let names: Vec<(String, Vec<usize>)> = m.named_parameters().into_iter().map(|(n, p)| (n, p.dims())).collect();
        assert_eq!(
            names,
            [
                ("in_proj_weight".to_string(), vec![48, 16]),
                ("in_proj_bias".to_string(), vec![48]),
                ("out_proj.weight".to_string(), vec![16, 16]),
                ("out_proj.bias".to_string(), vec![16]),
            ]
        );
        // xavier bound sqrt(6 / (16 + 48)); Linear's bound 1/sqrt(16); biases zero.
        let w = m.in_proj_weight.tensor().to_vec::<f32>().unwrap();
        let bound = (6.0f32 / 64.0).sqrt();
        assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| x.abs() > 0.9 * bound));
        let w = m.out_proj.weight.tensor().to_vec::<f32>().unwrap();
        assert!(w.iter().all(|x| x.abs() <= 0.25) && w.iter().any(|x| x.abs() > 0.2));
        assert!(m.in_proj_bias.unwrap().tensor().to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
        let nb = MultiheadAttentionConfig { bias: false, ..MultiheadAttentionConfig::new(8, 2) };
        let m = MultiheadAttention::from_config(&nb, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.state_dict().keys().collect::<Vec<_>>(), ["in_proj_weight", "out_proj.weight"]);
        assert!(MultiheadAttention::new(10, 4).is_err());
        assert!(MultiheadAttention::new(8, 0).is_err());
    }

    #[test]
    fn causal_mask_values() {
        let m = generate_square_subsequent_mask(3, DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap();
        let ni = f32::NEG_INFINITY;
        assert_eq!(m, [0.0, ni, ni, 0.0, 0.0, ni, 0.0, 0.0, 0.0]);
        assert!(generate_square_subsequent_mask(3, DType::U8, &Device::Cpu).is_err());
    }

    #[test]
    fn is_causal_without_mask_equals_the_causal_mask() {
        manual_seed(5);
        let m = mha(8, 2);
        let x = randn(&[4, 2, 8]);
        let mask = generate_square_subsequent_mask(4, DType::F64, &Device::Cpu).unwrap();
        let (a, wa) = m.forward(&x, &x, &x, &MhaOptions::default().attn_mask(Some(&mask))).unwrap();
        let (c, wc) = m.forward(&x, &x, &x, &MhaOptions::default().is_causal(true)).unwrap();
        assert!(a.tensor().equal(c.tensor()).unwrap());
        assert!(wa.unwrap().tensor().equal(wc.as_ref().unwrap().tensor()).unwrap());
        // Query 0 attends only to key 0.
        let w = wc.unwrap().tensor().to_vec::<f64>().unwrap();
        assert_eq!(&w[..4], &[1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn fully_masked_rows_nan_with_weights_zero_without() {
        manual_seed(7);
        let m = mha(8, 2);
        let (q, k) = (randn(&[3, 2, 8]), randn(&[4, 2, 8]));
        let kpm = Tensor::from_vec(vec![1u8, 1, 1, 1, 0, 0, 1, 0], [2, 4], &Device::Cpu).unwrap();
        let opts = MhaOptions::default().key_padding_mask(Some(&kpm));
        let (o, w) = m.forward(&q, &k, &k, &opts).unwrap();
        let o = o.tensor().to_vec::<f64>().unwrap(); // [L, B, E]: batch 0 is NaN, batch 1 finite
        for (i, v) in o.iter().enumerate() {
            assert_eq!(v.is_nan(), (i / 8) % 2 == 0, "{i}");
        }
        assert!(w.unwrap().tensor().to_vec::<f64>().unwrap()[..12].iter().all(|v| v.is_nan()));
        let (o, w) = m.forward(&q, &k, &k, &opts.need_weights(false)).unwrap();
        assert!(w.is_none());
        let ov = o.tensor().to_vec::<f64>().unwrap();
        assert!(ov.iter().all(|v| v.is_finite()));
        // out_proj.bias is zero at init, so the fully masked batch gives exactly 0.
        assert!(ov.iter().enumerate().filter(|(i, _)| (i / 8) % 2 == 0).all(|(_, &v)| v == 0.0));
        o.sum_all().unwrap().backward().unwrap();
        let g = q.grad().unwrap().to_vec::<f64>().unwrap();
        assert!(g.iter().enumerate().all(|(i, &v)| v.is_finite() && ((i / 8) % 2 == 1 || v == 0.0)));
    }

    #[test]
    fn unbatched_and_batch_first_agree_with_seq_first() {
        manual_seed(11);
        let m = mha(8, 4);
        let (q, k) = (randn(&[3, 2, 8]), randn(&[5, 2, 8]));
        let kpm = Tensor::from_vec(vec![0u8, 0, 0, 1, 1, 0, 0, 0, 0, 1], [2, 5], &Device::Cpu).unwrap();
        let opts = MhaOptions::default().key_padding_mask(Some(&kpm)).average_attn_weights(false);
        let (o, w) = m.forward(&q, &k, &k, &opts).unwrap();
        let w = w.unwrap();
        assert_eq!(w.dims(), [2, 4, 3, 5]);
        // Unbatched: batch 1 alone.
        let q1 = Var::constant(q.tensor().narrow(1, 1, 1).unwrap().squeeze(1).unwrap());
        let k1 = Var::constant(k.tensor().narrow(1, 1, 1).unwrap().squeeze(1).unwrap());
        let kpm1 = kpm.narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
        let (o1, w1) = m.forward(&q1, &k1, &k1, &opts.key_padding_mask(Some(&kpm1))).unwrap();
        let want = o.tensor().narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        let diff = o1.tensor().sub(&want).unwrap().abs().unwrap().to_vec::<f64>().unwrap();
        assert!(diff.iter().all(|&d| d < 1e-12));
        assert_eq!(w1.unwrap().dims(), [4, 3, 5]);
        // Batch first.
        let mbf = MultiheadAttention {
            batch_first: true,
            in_proj_weight: m.in_proj_weight.clone(),
            in_proj_bias: m.in_proj_bias.clone(),
            out_proj: Linear::from_params(m.out_proj.weight.clone(), m.out_proj.bias.clone()),
            training: TrainingFlag::default(),
            ..mha(8, 4)
        };
        let qb = q.transpose(0usize, 1usize).unwrap();
        let kb = k.transpose(0usize, 1usize).unwrap();
        let (ob, _) = mbf.forward(&qb, &kb, &kb, &opts).unwrap();
        let back = ob.tensor().transpose(0, 1).unwrap();
        let diff = back.sub(o.tensor()).unwrap().abs().unwrap().to_vec::<f64>().unwrap();
        assert!(diff.iter().all(|&d| d < 1e-12));
    }

    #[test]
    fn dropout_on_weights_in_training_only() {
        manual_seed(13);
        let cfg = MultiheadAttentionConfig { dropout: 0.5, ..MultiheadAttentionConfig::new(8, 2) };
        let m = MultiheadAttention::from_config(&cfg, DType::F64, &Device::Cpu).unwrap();
        let x = randn(&[6, 1, 8]);
        let (_, w) = m.forward(&x, &x, &x, &MhaOptions::default().average_attn_weights(false)).unwrap();
        let w = w.unwrap().tensor().to_vec::<f64>().unwrap();
        assert!(w.contains(&0.0) && w.iter().any(|&v| v > 0.0));
        m.eval();
        let (_, w) = m.forward(&x, &x, &x, &MhaOptions::default()).unwrap();
        let w = w.unwrap().tensor().to_vec::<f64>().unwrap();
        // Rows sum to one without dropout.
        for row in w.chunks(6) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_shapes_and_masks_are_errors() {
        let m = mha(8, 2);
        let (q, k) = (randn(&[3, 2, 8]), randn(&[4, 2, 8]));
        let d = MhaOptions::default();
        assert!(m.forward(&q, &k, &randn(&[5, 2, 8]), &d).is_err());
        assert!(m.forward(&randn(&[3, 2, 6]), &k, &k, &d).is_err());
        assert!(m.forward(&q, &randn(&[4, 3, 8]), &randn(&[4, 3, 8]), &d).is_err());
        assert!(m.forward(&randn(&[3, 8]), &k, &k, &d).is_err());
        let bad = Tensor::zeros([3, 3], DType::U8, &Device::Cpu).unwrap();
        let e = m.forward(&q, &k, &k, &d.attn_mask(Some(&bad))).unwrap_err().to_string();
        assert!(e.contains("attn_mask") && e.contains("[3, 3]"), "{e}");
        let bad = Tensor::zeros([2, 3], DType::U8, &Device::Cpu).unwrap();
        let e = m.forward(&q, &k, &k, &d.key_padding_mask(Some(&bad))).unwrap_err().to_string();
        assert!(e.contains("key_padding_mask"), "{e}");
        let bad = Tensor::zeros([2, 4], DType::I64, &Device::Cpu).unwrap();
        assert!(m.forward(&q, &k, &k, &d.key_padding_mask(Some(&bad))).is_err());
    }
}
