//! One recurrent layer (all its directions) as a single fused autograd op.
//!
//! The op's value is one flat tensor `[Y | h_n | c_n]` (`Y` `[T, B, D·H]`, `h_n` and `c_n`
//! `[D, B, H]`; no `c_n` for the GRU) recorded with [`Var::from_op`]; the caller takes the three
//! parts as views. Its backward runs [`dir_backward`] for every direction (the two directions
//! of a bidirectional layer in parallel, one thread each) and then the input gradient
//! `Σ_dir dgates_dir · W_ih_dir` on all threads. On a CUDA device the same op runs
//! `stapes_tensor::cuda::rnn` (device GEMMs + the fused step kernels of `kernels/cuda/rnn.cu`;
//! both directions together: each step one batched GEMM and one step kernel for the two).

use super::driver::{dir_backward, dir_forward, final_row, step_rows, CellKind, DirSaved, DirWeights, RnnElem, Sizes};
use stapes_autograd::Var;
use stapes_kernels::cpu::rnn::{gemm_strided, Strided};
use stapes_tensor::alloc::{give, take, zeros};
use stapes_tensor::cuda::rnn::{rnn_layer_backward, rnn_layer_forward, RnnCell, RnnDirParams};
use stapes_tensor::{DType, Device, Error, Result, Storage, Tensor, WithDType};

/// One direction's parameters as `Var`s (biases absent when the layer has none).
pub(crate) struct DirVars {
    pub(crate) w_ih: Var,
    pub(crate) w_hh: Var,
    pub(crate) b_ih: Option<Var>,
    pub(crate) b_hh: Option<Var>,
}

/// The outputs of one layer.
pub(crate) struct LayerOut {
    /// `[T, B, D·H]`, zeros at padded positions.
    pub(crate) y: Var,
    /// `[D, B, H]`.
    pub(crate) h_n: Var,
    /// `[D, B, H]` (LSTM only).
    pub(crate) c_n: Option<Var>,
}

/// The contiguous elements of a CPU tensor of element type `T`.
fn slice<'a, T: WithDType>(op: &'static str, t: &'a Tensor) -> Result<&'a [T]> {
    if !t.is_contiguous() {
        return Err(Error::invalid(op, "internal: expected a contiguous tensor"));
    }
    #[allow(unreachable_patterns)]
    let data = match t.storage() {
        Storage::Cpu(s) => T::storage_slice(s),
        _ => None,
    };
    let data = data.ok_or(Error::DTypeMismatch { op, lhs: t.dtype(), rhs: T::DTYPE })?;
    let off = t.layout().offset();
    Ok(&data[off..off + t.elem_count()])
}

/// Runs one layer: `x` `[T, B, I]` (time-major), `h0`/`c0` `[D, B, H]` (zeros when `None`),
/// every sequence `b` real for `t < lengths[b]`.
pub(crate) fn layer_forward(
    kind: CellKind,
    x: &Var,
    h0: Option<&Var>,
    c0: Option<&Var>,
    dirs: &[DirVars],
    lengths: &[usize],
    hidden: usize,
) -> Result<LayerOut> {
    if x.tensor().device().is_cuda() {
        return layer_forward_cuda(kind, x, h0, c0, dirs, lengths, hidden);
    }
    match x.tensor().dtype() {
        DType::F32 => layer_forward_t::<f32>(kind, x, h0, c0, dirs, lengths, hidden),
        DType::F64 => layer_forward_t::<f64>(kind, x, h0, c0, dirs, lengths, hidden),
        dtype => Err(Error::UnsupportedDType { op: kind.name(), dtype, msg: "recurrent layers compute in f32 or f64" }),
    }
}

/// Per-direction tensors kept for backward.
struct DirTensors {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Option<Tensor>,
    b_hh: Option<Tensor>,
}

impl DirTensors {
    fn weights<T: WithDType>(&self, op: &'static str) -> Result<DirWeights<'_, T>> {
        Ok(DirWeights {
            w_ih: slice(op, &self.w_ih)?,
            w_hh: slice(op, &self.w_hh)?,
            b_ih: self.b_ih.as_ref().map(|b| slice(op, b)).transpose()?,
            b_hh: self.b_hh.as_ref().map(|b| slice(op, b)).transpose()?,
        })
    }
}

/// Runs `f(dir)` for every direction: both at once on two threads for a bidirectional layer
/// when the pool has them, each then using one thread for its GEMMs.
fn per_direction<R: Send>(n_dirs: usize, f: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
    let threads = rayon::current_num_threads();
    if n_dirs == 2 && threads > 1 {
        let per = (threads / 2).max(1);
        let (a, b) = rayon::join(|| f(0, per), || f(1, per));
        vec![a, b]
    } else {
        (0..n_dirs).map(|d| f(d, threads)).collect()
    }
}

fn layer_forward_t<T: RnnElem>(
    kind: CellKind,
    x: &Var,
    h0: Option<&Var>,
    c0: Option<&Var>,
    dirs: &[DirVars],
    lengths: &[usize],
    hidden: usize,
) -> Result<LayerOut> {
    let op = kind.name();
    let xt = x.tensor().contiguous()?;
    let (steps, batch, input) = (xt.dims()[0], xt.dims()[1], xt.dims()[2]);
    let sz = Sizes { steps, batch, input, hidden };
    let nd = dirs.len();
    let bh = batch * hidden;
    let tensors: Vec<DirTensors> = dirs
        .iter()
        .map(|d| {
            Ok(DirTensors {
                w_ih: d.w_ih.tensor().contiguous()?,
                w_hh: d.w_hh.tensor().contiguous()?,
                b_ih: d.b_ih.as_ref().map(|b| b.tensor().contiguous()).transpose()?,
                b_hh: d.b_hh.as_ref().map(|b| b.tensor().contiguous()).transpose()?,
            })
        })
        .collect::<Result<_>>()?;
    let zero_state = vec![T::zero(); nd * bh];
    let h0t = h0.map(|v| v.tensor().contiguous()).transpose()?;
    let c0t = c0.map(|v| v.tensor().contiguous()).transpose()?;
    let h0s: &[T] = match &h0t {
        Some(t) => slice(op, t)?,
        None => &zero_state,
    };
    let c0s: &[T] = match &c0t {
        Some(t) => slice(op, t)?,
        None => &zero_state,
    };
    let xs: &[T] = slice(op, &xt)?;
    let weights: Vec<DirWeights<'_, T>> = tensors.iter().map(|t| t.weights(op)).collect::<Result<_>>()?;
    let saved: Vec<DirSaved<T>> = per_direction(nd, |d, threads| {
        let (h, c) = (&h0s[d * bh..(d + 1) * bh], &c0s[d * bh..(d + 1) * bh]);
        dir_forward(kind, sz, xs, &weights[d], h, c, lengths, d == 1, threads)
    });
    drop(weights);

    // Pack [Y | h_n | c_n]: Y from the per-step states, zero at padded positions.
    let y_len = steps * batch * nd * hidden;
    let n_state = if kind == CellKind::Lstm { 2 } else { 1 };
    let mut packed = zeros::<T>(y_len + n_state * nd * bh);
    for (d, sv) in saved.iter().enumerate() {
        for s in 0..steps {
            let (t, _, q) = step_rows(s, steps, d == 1);
            for (b, &len) in lengths.iter().enumerate() {
                if t < len {
                    let dst = (t * batch + b) * nd * hidden + d * hidden;
                    let src = q * bh + b * hidden;
                    packed[dst..dst + hidden].copy_from_slice(&sv.hs[src..src + hidden]);
                }
            }
        }
        let f = final_row(steps, d == 1);
        packed[y_len + d * bh..y_len + (d + 1) * bh].copy_from_slice(&sv.hs[f * bh..(f + 1) * bh]);
        if kind == CellKind::Lstm {
            let o = y_len + nd * bh + d * bh;
            packed[o..o + bh].copy_from_slice(&sv.cs[f * bh..(f + 1) * bh]);
        }
    }
    let total = packed.len();
    let out = Tensor::from_vec(packed, total, &Device::Cpu)?;

    let inputs = op_inputs(x, h0, c0, dirs);
    let need_x = x.requires_grad();
    let (has_h0, has_c0) = (h0.is_some(), c0.is_some());
    let lengths = lengths.to_vec();
    let in_dims = x.dims().to_vec();
    let backward = move |g: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let g = g.contiguous()?;
        let gs: &[T] = slice(op, &g)?;
        let (dy, rest) = gs.split_at(y_len);
        let (dhn, dcn) = rest.split_at(nd * bh);
        let xs: &[T] = slice(op, &xt)?;
        let weights: Vec<DirWeights<'_, T>> = tensors.iter().map(|t| t.weights(op)).collect::<Result<_>>()?;
        let grads = per_direction(nd, |d, threads| {
            let dcn_d: &[T] = if kind == CellKind::Lstm { &dcn[d * bh..(d + 1) * bh] } else { &[] };
            let dhn_d = &dhn[d * bh..(d + 1) * bh];
            dir_backward(kind, sz, xs, &weights[d], &saved[d], dy, nd, d, dhn_d, dcn_d, &lengths, threads)
        });
        let dev = &Device::Cpu;
        let mut out: Vec<Option<Tensor>> = Vec::new();
        if need_x {
            let gh_w = kind.gates() * hidden;
            let mut dx = take::<T>(steps * batch * input);
            for (d, gr) in grads.iter().enumerate() {
                gemm_strided(
                    steps * batch,
                    input,
                    gh_w,
                    &mut dx,
                    Strided::rows(0, input),
                    d > 0,
                    &gr.dgi,
                    Strided::rows(0, gh_w),
                    weights[d].w_ih,
                    Strided::rows(0, input),
                    rayon::current_num_threads(),
                );
            }
            out.push(Some(Tensor::from_vec(dx, in_dims.clone(), dev)?));
        } else {
            out.push(None);
        }
        if has_h0 {
            let v: Vec<T> = grads.iter().flat_map(|g| g.dh0.iter().copied()).collect();
            out.push(Some(Tensor::from_vec(v, [nd, batch, hidden], dev)?));
        }
        if has_c0 {
            let v: Vec<T> = grads.iter().flat_map(|g| g.dc0.iter().copied()).collect();
            out.push(Some(Tensor::from_vec(v, [nd, batch, hidden], dev)?));
        }
        for (gr, t) in grads.into_iter().zip(&tensors) {
            give(gr.dgi);
            out.push(Some(Tensor::from_vec(gr.dw_ih, t.w_ih.dims(), dev)?));
            out.push(Some(Tensor::from_vec(gr.dw_hh, t.w_hh.dims(), dev)?));
            if t.b_ih.is_some() {
                out.push(Some(Tensor::from_vec(gr.db_ih, t.w_ih.dims()[0], dev)?));
            }
            if t.b_hh.is_some() {
                out.push(Some(Tensor::from_vec(gr.db_hh, t.w_hh.dims()[0], dev)?));
            }
        }
        Ok(out)
    };
    let packed = Var::from_op(op, out, &inputs, Box::new(backward));
    split_packed(kind, &packed, Sizes { steps, batch, input, hidden }, nd)
}

/// The op's inputs, in order: x, h0?, c0?, then per direction w_ih, w_hh, b_ih?, b_hh?.
fn op_inputs<'a>(x: &'a Var, h0: Option<&'a Var>, c0: Option<&'a Var>, dirs: &'a [DirVars]) -> Vec<&'a Var> {
    let mut inputs: Vec<&Var> = vec![x];
    inputs.extend(h0);
    inputs.extend(c0);
    for d in dirs {
        inputs.extend([&d.w_ih, &d.w_hh]);
        inputs.extend(d.b_ih.as_ref());
        inputs.extend(d.b_hh.as_ref());
    }
    inputs
}

/// `Y`, `h_n` and `c_n` as views of the packed output `[Y | h_n | c_n]`.
fn split_packed(kind: CellKind, packed: &Var, sz: Sizes, nd: usize) -> Result<LayerOut> {
    let Sizes { steps, batch, hidden, .. } = sz;
    let (y_len, bh) = (steps * batch * nd * hidden, batch * hidden);
    let y = packed.narrow(0, 0, y_len)?.reshape([steps, batch, nd * hidden])?;
    let h_n = packed.narrow(0, y_len, nd * bh)?.reshape([nd, batch, hidden])?;
    let c_n = match kind {
        CellKind::Lstm => Some(packed.narrow(0, y_len + nd * bh, nd * bh)?.reshape([nd, batch, hidden])?),
        CellKind::Gru => None,
    };
    Ok(LayerOut { y, h_n, c_n })
}

/// [`layer_forward`] on a CUDA device: `stapes_tensor::cuda::rnn` (device GEMMs and the fused
/// step kernels; the two directions of a bidirectional layer run together, step by step).
fn layer_forward_cuda(
    kind: CellKind,
    x: &Var,
    h0: Option<&Var>,
    c0: Option<&Var>,
    dirs: &[DirVars],
    lengths: &[usize],
    hidden: usize,
) -> Result<LayerOut> {
    let cell = match kind {
        CellKind::Lstm => RnnCell::Lstm,
        CellKind::Gru => RnnCell::Gru,
    };
    let params: Vec<RnnDirParams<'_>> = dirs
        .iter()
        .map(|d| RnnDirParams {
            w_ih: d.w_ih.tensor(),
            w_hh: d.w_hh.tensor(),
            b_ih: d.b_ih.as_ref().map(|b| b.tensor()),
            b_hh: d.b_hh.as_ref().map(|b| b.tensor()),
        })
        .collect();
    let (out, saved) =
        rnn_layer_forward(cell, x.tensor(), h0.map(|v| v.tensor()), c0.map(|v| v.tensor()), &params, lengths, hidden)?;
    let inputs = op_inputs(x, h0, c0, dirs);
    let need_x = x.requires_grad();
    let (has_h0, has_c0) = (h0.is_some(), c0.is_some());
    let backward = move |g: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let grads = rnn_layer_backward(&saved, g, need_x)?;
        let mut out: Vec<Option<Tensor>> = vec![grads.x];
        if has_h0 {
            out.push(Some(grads.h0));
        }
        if has_c0 {
            out.push(grads.c0);
        }
        for d in grads.dirs {
            out.extend([Some(d.w_ih), Some(d.w_hh)]);
            if d.b_ih.is_some() {
                out.push(d.b_ih);
            }
            if d.b_hh.is_some() {
                out.push(d.b_hh);
            }
        }
        Ok(out)
    };
    let packed = Var::from_op(kind.name(), out, &inputs, Box::new(backward));
    let (steps, batch, input) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    split_packed(kind, &packed, Sizes { steps, batch, input, hidden }, dirs.len())
}
