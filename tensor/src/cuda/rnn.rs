//! Recurrent layers (LSTM, GRU) on CUDA tensors: one layer, every direction, forward and
//! backward, as the `nn` crate's fused layer op needs them. Built on
//! `stapes_kernels::cuda::rnn_seq` (device GEMMs + the fused step kernels of `rnn.cu`); the
//! two directions of a bidirectional layer run together, each step one batched GEMM and one
//! step kernel for both.
//!
//! The forward returns the layer's packed output `[Y | h_n | c_n]` (one flat tensor: `Y`
//! `[T, B, D·H]` zero at padded positions, `h_n` and `c_n` `[D, B, H]`, no `c_n` for the GRU),
//! the layout of `nn/src/rnn/layer.rs`, and an opaque [`RnnLayerSaved`] for the backward,
//! which takes the gradient of that packed output.
//!
//! Compute and storage are `f32`, as the CPU path's `f32` (the CPU path also runs `f64`, which
//! has no CUDA kernel here: [`Error::NoCudaKernel`]; `f16`/`bf16` are refused by both paths).

use super::{cuda_err, CudaBuf};
use crate::{DType, Device, Error, Result, Tensor};
use stapes_kernels::cuda::rnn_seq::{
    packed_len, rnn_layer_backward_f32, rnn_layer_forward_f32, rnn_layer_output_f32, LayerSaved, LayerWeights,
    SeqSizes, StepAlgo,
};
use stapes_kernels::cuda::{Backend, DeviceBuffer};
use std::sync::atomic::{AtomicBool, Ordering};

static PERSISTENT_LSTM: AtomicBool = AtomicBool::new(true);

/// Whether the forward of small LSTM layers on a GPU runs as one persistent kernel per layer
/// (the recurrent weights and the state kept in shared memory for the whole sequence, no launch
/// per step), when `4H(H + 1) + 6BH` floats fit in 48 KiB; larger layers, the GRU and every
/// backward keep the per-step GEMM and kernel. On by default: on an H100 a 1-layer LSTM
/// (I = H = 48, B = 8, T = 400) ran its forward in 2.36 ms this way against 6.54 ms with two
/// launches per step (`benches/RESULTS.md`). `false` forces the per-step path. Results agree
/// with the per-step path to f32 rounding (a different summation order of `h · W_hhᵀ`).
pub fn set_persistent_lstm(on: bool) {
    PERSISTENT_LSTM.store(on, Ordering::Relaxed);
}

/// Whether small LSTM forwards may use the persistent kernel ([`set_persistent_lstm`]).
pub fn persistent_lstm() -> bool {
    PERSISTENT_LSTM.load(Ordering::Relaxed)
}

pub use stapes_kernels::cuda::rnn_seq::SeqCell as RnnCell;

/// One direction's parameters: `w_ih` `[G·H, I]`, `w_hh` `[G·H, H]`, biases `[G·H]`.
#[derive(Clone, Copy, Debug)]
pub struct RnnDirParams<'a> {
    /// Input-to-hidden weights, `[G·H, I]`.
    pub w_ih: &'a Tensor,
    /// Hidden-to-hidden weights, `[G·H, H]`.
    pub w_hh: &'a Tensor,
    /// Input-to-hidden bias, `[G·H]`.
    pub b_ih: Option<&'a Tensor>,
    /// Hidden-to-hidden bias, `[G·H]`.
    pub b_hh: Option<&'a Tensor>,
}

/// A layer's parameters with the directions stacked, dense f32 CUDA tensors (kept for
/// backward): `w_ih` `[D·G·H, I]`, `w_hh` `[D·G·H, H]`, biases `[D·G·H]`.
struct Stacked {
    dirs: usize,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Option<Tensor>,
    b_hh: Option<Tensor>,
}

impl Stacked {
    fn weights(&self, op: &'static str) -> Result<LayerWeights<'_>> {
        Ok(LayerWeights {
            dirs: self.dirs,
            w_ih: self.w_ih.cuda_typed::<f32>(op)?,
            w_hh: self.w_hh.cuda_typed::<f32>(op)?,
            b_ih: self.b_ih.as_ref().map(|b| b.cuda_typed::<f32>(op)).transpose()?,
            b_hh: self.b_hh.as_ref().map(|b| b.cuda_typed::<f32>(op)).transpose()?,
        })
    }
}

/// What [`rnn_layer_forward`] keeps for [`rnn_layer_backward`].
pub struct RnnLayerSaved {
    cell: RnnCell,
    sizes: SeqSizes,
    device: Device,
    backend: Backend,
    lengths: DeviceBuffer<i64>,
    x: Tensor,
    params: Stacked,
    layer: LayerSaved,
}

impl RnnLayerSaved {
    /// Elements of the packed output `[Y | h_n | c_n]`.
    pub fn packed_len(&self) -> usize {
        packed_len(self.cell, self.sizes, self.params.dirs)
    }
}

/// The gradients of one direction's parameters (biases when the layer has them).
pub struct RnnDirGrads {
    /// Gradient of `w_ih`, `[G·H, I]`.
    pub w_ih: Tensor,
    /// Gradient of `w_hh`, `[G·H, H]`.
    pub w_hh: Tensor,
    /// Gradient of `b_ih`, `[G·H]`.
    pub b_ih: Option<Tensor>,
    /// Gradient of `b_hh`, `[G·H]`.
    pub b_hh: Option<Tensor>,
}

/// The gradients of one layer: `x` `[T, B, I]` (when asked for), `h0`/`c0` `[D, B, H]`
/// (`c0` for the LSTM), and every direction's parameters.
pub struct RnnLayerGrads {
    /// Gradient of the input, `[T, B, I]`, when asked for.
    pub x: Option<Tensor>,
    /// Gradient of the initial hidden state, `[D, B, H]`.
    pub h0: Tensor,
    /// Gradient of the initial cell state, `[D, B, H]` (LSTM only).
    pub c0: Option<Tensor>,
    /// Parameter gradients, one entry per direction.
    pub dirs: Vec<RnnDirGrads>,
}

/// Checks that `t` lives on `device`, is f32 and has shape `dims`; returns its dense f32 data.
fn operand(op: &'static str, what: &str, t: &Tensor, device: &Device, dims: &[usize]) -> Result<Tensor> {
    if t.device() != device {
        return Err(Error::DeviceMismatch { op, lhs: *device, rhs: *t.device() });
    }
    if t.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch { op, lhs: DType::F32, rhs: t.dtype() });
    }
    if t.dims() != dims {
        return Err(Error::shape(op, format!("expected {what} of shape {dims:?}, got {:?}", t.dims())));
    }
    t.cuda_exact()
}

/// The directions' `what` parameters (each checked to be of shape `dims`) stacked along dim 0.
fn stack(op: &'static str, what: &str, parts: &[&Tensor], device: &Device, dims: &[usize]) -> Result<Tensor> {
    let parts: Vec<Tensor> = parts.iter().map(|t| operand(op, what, t, device, dims)).collect::<Result<_>>()?;
    match parts.as_slice() {
        [one] => Ok(one.clone()),
        _ => Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0)?.cuda_exact(),
    }
}

/// A bias of every direction, or of none.
fn all_or_none<'a>(op: &'static str, parts: Vec<Option<&'a Tensor>>) -> Result<Option<Vec<&'a Tensor>>> {
    match parts.iter().copied().collect::<Option<Vec<_>>>() {
        Some(b) => Ok(Some(b)),
        None if parts.iter().all(|p| p.is_none()) => Ok(None),
        None => Err(Error::invalid(op, "either every direction has a given bias or none does")),
    }
}

/// Runs one recurrent layer on CUDA tensors: `x` `[T, B, I]` (time-major), `h0`/`c0`
/// `[D, B, H]` (zeros when `None`; `c0` for the LSTM only), `dirs` one or two directions (the
/// second runs in reverse), `lengths[b]` (at most `T`) the real frames of sequence `b`.
/// Returns the packed output `[Y | h_n | c_n]` (see the module docs) and what the backward
/// needs. Errors (never panics) for tensors off the device, other dtypes than f32, and wrong
/// shapes or lengths.
pub fn rnn_layer_forward(
    cell: RnnCell,
    x: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    dirs: &[RnnDirParams<'_>],
    lengths: &[usize],
    hidden: usize,
) -> Result<(Tensor, RnnLayerSaved)> {
    let op = cell.name();
    let device = *x.device();
    if !device.is_cuda() {
        return Err(Error::invalid(op, "rnn_layer_forward runs on CUDA tensors; this input is on the CPU"));
    }
    match x.dtype() {
        DType::F32 => {}
        DType::F64 => return Err(x.no_cuda_kernel(op)),
        dtype => return Err(Error::UnsupportedDType { op, dtype, msg: "recurrent layers compute in f32 or f64" }),
    }
    if x.dims().len() != 3 {
        return Err(Error::shape(op, format!("expected a 3-D input [T, B, I], got shape {:?}", x.dims())));
    }
    let (steps, batch, input) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let nd = dirs.len();
    if !(1..=2).contains(&nd) {
        return Err(Error::invalid(op, format!("expected 1 or 2 directions, got {nd}")));
    }
    if lengths.len() != batch {
        return Err(Error::shape(op, format!("expected {batch} lengths, got {}", lengths.len())));
    }
    if let Some((b, &l)) = lengths.iter().enumerate().find(|(_, &l)| l > steps) {
        return Err(Error::invalid(op, format!("lengths[{b}] = {l} exceeds the padded length {steps}")));
    }
    if cell == RnnCell::Gru && c0.is_some() {
        return Err(Error::invalid(op, "the GRU has no cell state (c0)"));
    }
    let sz = SeqSizes { steps, batch, input, hidden };
    let gw = cell.gates() * hidden;
    let bh = batch * hidden;
    let xd = operand(op, "input", x, &device, &[steps, batch, input])?;
    let backend = xd.cuda_parts(op)?.1.clone();
    let w_ih: Vec<&Tensor> = dirs.iter().map(|d| d.w_ih).collect();
    let w_hh: Vec<&Tensor> = dirs.iter().map(|d| d.w_hh).collect();
    let params = Stacked {
        dirs: nd,
        w_ih: stack(op, "weight_ih", &w_ih, &device, &[gw, input])?,
        w_hh: stack(op, "weight_hh", &w_hh, &device, &[gw, hidden])?,
        b_ih: all_or_none(op, dirs.iter().map(|d| d.b_ih).collect())?
            .map(|b| stack(op, "bias_ih", &b, &device, &[gw]))
            .transpose()?,
        b_hh: all_or_none(op, dirs.iter().map(|d| d.b_hh).collect())?
            .map(|b| stack(op, "bias_hh", &b, &device, &[gw]))
            .transpose()?,
    };
    let state = |what: &str, s: Option<&Tensor>| -> Result<Option<Tensor>> {
        s.map(|s| operand(op, what, s, &device, &[nd, batch, hidden])).transpose()
    };
    let (h0, c0) = (state("h0", h0)?, state("c0", c0)?);
    let zeros = |s: &Option<Tensor>| -> Result<Option<DeviceBuffer<f32>>> {
        match s {
            Some(_) => Ok(None),
            None => backend.zeros::<f32>(nd * bh).map(Some).map_err(cuda_err(op)),
        }
    };
    let (h0_zero, c0_zero) = (zeros(&h0)?, if cell == RnnCell::Lstm { zeros(&c0)? } else { None });
    let h0_buf = match (&h0, &h0_zero) {
        (Some(t), _) => t.cuda_typed::<f32>(op)?,
        (None, Some(z)) => z,
        (None, None) => return Err(Error::invalid(op, "internal: no initial hidden state")),
    };
    let c0_buf = match (&c0, &c0_zero) {
        (Some(t), _) => Some(t.cuda_typed::<f32>(op)?),
        (None, z) => z.as_ref(),
    };
    let lengths_i64: Vec<i64> = lengths.iter().map(|&l| l as i64).collect();
    let len_buf = backend.upload(&lengths_i64).map_err(cuda_err(op))?;
    let xb = xd.cuda_typed::<f32>(op)?;
    let w = params.weights(op)?;
    let algo = if persistent_lstm() { StepAlgo::PersistentIfSmall } else { StepAlgo::Steps };
    let layer = rnn_layer_forward_f32(&backend, cell, sz, algo, super::allow_tf32(), &len_buf, xb, &w, h0_buf, c0_buf)
        .map_err(cuda_err(op))?;
    let total = packed_len(cell, sz, nd);
    // Every element of the packed output is written by rnn_layer_output_f32.
    let mut packed = backend.alloc::<f32>(total).map_err(cuda_err(op))?;
    rnn_layer_output_f32(&backend, sz, &len_buf, &layer, &mut packed).map_err(cuda_err(op))?;
    let out = Tensor::from_cuda_buf(CudaBuf::F32(packed), backend.clone(), vec![total], device);
    let saved = RnnLayerSaved { cell, sizes: sz, device, backend, lengths: len_buf, x: xd, params, layer };
    Ok((out, saved))
}

/// The backward of [`rnn_layer_forward`]: `grad` is the gradient of the packed output
/// (`[saved.packed_len()]`, on the same device). `need_x`: whether to compute the input
/// gradient (`Σ_dir dgi · W_ih`).
pub fn rnn_layer_backward(saved: &RnnLayerSaved, grad: &Tensor, need_x: bool) -> Result<RnnLayerGrads> {
    let cell = saved.cell;
    let op = cell.name();
    let SeqSizes { steps, batch, input, hidden } = saved.sizes;
    let nd = saved.params.dirs;
    let g = operand(op, "the output gradient", grad, &saved.device, &[saved.packed_len()])?;
    let backend = &saved.backend;
    let w = saved.params.weights(op)?;
    let gr = rnn_layer_backward_f32(
        backend,
        saved.sizes,
        super::allow_tf32(),
        &saved.lengths,
        saved.x.cuda_typed::<f32>(op)?,
        &w,
        &saved.layer,
        g.cuda_typed::<f32>(op)?,
        need_x,
    )
    .map_err(cuda_err(op))?;
    let dev = saved.device;
    let wrap =
        |buf: DeviceBuffer<f32>, dims: Vec<usize>| Tensor::from_cuda_buf(CudaBuf::F32(buf), backend.clone(), dims, dev);
    let gw = cell.gates() * hidden;
    let dw_ih = wrap(gr.dw_ih, vec![nd, gw, input]);
    let dw_hh = wrap(gr.dw_hh, vec![nd, gw, hidden]);
    let db_ih = wrap(gr.db_ih, vec![nd, gw]);
    let db_hh = wrap(gr.db_hh, vec![nd, gw]);
    let dir = |t: &Tensor, d: usize| -> Result<Tensor> { t.narrow(0usize, d, 1)?.squeeze(0usize) };
    let has_bias = (saved.params.b_ih.is_some(), saved.params.b_hh.is_some());
    let dirs = (0..nd)
        .map(|d| {
            Ok(RnnDirGrads {
                w_ih: dir(&dw_ih, d)?,
                w_hh: dir(&dw_hh, d)?,
                b_ih: if has_bias.0 { Some(dir(&db_ih, d)?) } else { None },
                b_hh: if has_bias.1 { Some(dir(&db_hh, d)?) } else { None },
            })
        })
        .collect::<Result<_>>()?;
    Ok(RnnLayerGrads {
        x: gr.dx.map(|b| wrap(b, vec![steps, batch, input])),
        h0: wrap(gr.dh0, vec![nd, batch, hidden]),
        c0: gr.dc0.map(|b| wrap(b, vec![nd, batch, hidden])),
        dirs,
    })
}
