//! Recurrent layers (LSTM, GRU) on CUDA tensors: one layer, every direction, forward and
//! backward, as the `nn` crate's fused layer op needs them. Built on
//! `stapes_kernels::cuda::rnn_seq` (device GEMMs + the fused step kernels of `rnn.cu`); the
//! directions of a bidirectional layer run one after the other on the device's one stream
//! (concurrent streams are a later step).
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
    copy_range_f32, final_row, rnn_input_grad_f32, rnn_seq_backward_f32, rnn_seq_forward_f32, rnn_seq_output_f32,
    write_range_f32, SeqSaved, SeqSizes, SeqWeights,
};
use stapes_kernels::cuda::{Backend, DeviceBuffer};

pub use stapes_kernels::cuda::rnn_seq::SeqCell as RnnCell;

/// One direction's parameters: `w_ih` `[G·H, I]`, `w_hh` `[G·H, H]`, biases `[G·H]`.
#[derive(Clone, Copy, Debug)]
pub struct RnnDirParams<'a> {
    pub w_ih: &'a Tensor,
    pub w_hh: &'a Tensor,
    pub b_ih: Option<&'a Tensor>,
    pub b_hh: Option<&'a Tensor>,
}

/// One direction's parameters as dense f32 CUDA tensors (kept for backward).
struct DirTensors {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Option<Tensor>,
    b_hh: Option<Tensor>,
}

impl DirTensors {
    fn weights(&self, op: &'static str) -> Result<SeqWeights<'_>> {
        Ok(SeqWeights {
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
    params: Vec<DirTensors>,
    seqs: Vec<SeqSaved>,
}

impl RnnLayerSaved {
    /// Elements of the packed output `[Y | h_n | c_n]`.
    pub fn packed_len(&self) -> usize {
        packed_len(self.cell, self.sizes, self.params.len())
    }
}

fn packed_len(cell: RnnCell, sz: SeqSizes, dirs: usize) -> usize {
    let n_state = if cell == RnnCell::Lstm { 2 } else { 1 };
    sz.steps * sz.batch * dirs * sz.hidden + n_state * dirs * sz.batch * sz.hidden
}

/// The gradients of one direction's parameters (biases when the layer has them).
pub struct RnnDirGrads {
    pub w_ih: Tensor,
    pub w_hh: Tensor,
    pub b_ih: Option<Tensor>,
    pub b_hh: Option<Tensor>,
}

/// The gradients of one layer: `x` `[T, B, I]` (when asked for), `h0`/`c0` `[D, B, H]`
/// (`c0` for the LSTM), and every direction's parameters.
pub struct RnnLayerGrads {
    pub x: Option<Tensor>,
    pub h0: Tensor,
    pub c0: Option<Tensor>,
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
    let params: Vec<DirTensors> = dirs
        .iter()
        .map(|d| {
            Ok(DirTensors {
                w_ih: operand(op, "weight_ih", d.w_ih, &device, &[gw, input])?,
                w_hh: operand(op, "weight_hh", d.w_hh, &device, &[gw, hidden])?,
                b_ih: d.b_ih.map(|b| operand(op, "bias_ih", b, &device, &[gw])).transpose()?,
                b_hh: d.b_hh.map(|b| operand(op, "bias_hh", b, &device, &[gw])).transpose()?,
            })
        })
        .collect::<Result<_>>()?;
    let state = |what: &str, s: Option<&Tensor>, d: usize| -> Result<DeviceBuffer<f32>> {
        match s {
            Some(s) => {
                let s = operand(op, what, s, &device, &[nd, batch, hidden])?;
                let sd = s.narrow(0usize, d, 1)?.cuda_exact()?;
                let buf = sd.cuda_typed::<f32>(op)?;
                backend.copy(buf).map_err(cuda_err(op))
            }
            None => backend.zeros::<f32>(bh).map_err(cuda_err(op)),
        }
    };
    let lengths_i64: Vec<i64> = lengths.iter().map(|&l| l as i64).collect();
    let len_buf = backend.upload(&lengths_i64).map_err(cuda_err(op))?;
    let xb = xd.cuda_typed::<f32>(op)?;
    let tf32 = super::allow_tf32();
    let mut seqs = Vec::with_capacity(nd);
    for (d, p) in params.iter().enumerate() {
        let h = state("h0", h0, d)?;
        let c = if cell == RnnCell::Lstm { Some(state("c0", c0, d)?) } else { None };
        let w = p.weights(op)?;
        let saved = rnn_seq_forward_f32(&backend, cell, sz, d == 1, tf32, &len_buf, xb, &w, &h, c.as_ref())
            .map_err(cuda_err(op))?;
        seqs.push(saved);
    }
    // Pack [Y | h_n | c_n]: every element is written below.
    let y_len = steps * batch * nd * hidden;
    let total = packed_len(cell, sz, nd);
    let mut packed = backend.alloc::<f32>(total).map_err(cuda_err(op))?;
    for (d, sv) in seqs.iter().enumerate() {
        rnn_seq_output_f32(&backend, sz, nd, d, &len_buf, sv, &mut packed, 0).map_err(cuda_err(op))?;
        let f = final_row(steps, sv.reverse);
        let h_n = copy_range_f32(&backend, &sv.hs, f * bh, bh).map_err(cuda_err(op))?;
        write_range_f32(&backend, &h_n, &mut packed, y_len + d * bh).map_err(cuda_err(op))?;
        if let Some(cs) = &sv.cs {
            let c_n = copy_range_f32(&backend, cs, f * bh, bh).map_err(cuda_err(op))?;
            write_range_f32(&backend, &c_n, &mut packed, y_len + (nd + d) * bh).map_err(cuda_err(op))?;
        }
    }
    let out = Tensor::from_cuda_buf(CudaBuf::F32(packed), backend.clone(), vec![total], device);
    let saved = RnnLayerSaved { cell, sizes: sz, device, backend, lengths: len_buf, x: xd, params, seqs };
    Ok((out, saved))
}

/// The backward of [`rnn_layer_forward`]: `grad` is the gradient of the packed output
/// (`[saved.packed_len()]`, on the same device). `need_x`: whether to compute the input
/// gradient (the per-direction GEMM `dgi · W_ih`, summed over the directions).
pub fn rnn_layer_backward(saved: &RnnLayerSaved, grad: &Tensor, need_x: bool) -> Result<RnnLayerGrads> {
    let cell = saved.cell;
    let op = cell.name();
    let SeqSizes { steps, batch, input, hidden } = saved.sizes;
    let nd = saved.params.len();
    let bh = batch * hidden;
    let y_len = steps * batch * nd * hidden;
    let g = operand(op, "the output gradient", grad, &saved.device, &[saved.packed_len()])?;
    let gb = g.cuda_typed::<f32>(op)?;
    let backend = &saved.backend;
    let xb = saved.x.cuda_typed::<f32>(op)?;
    let tf32 = super::allow_tf32();
    let mut grads = Vec::with_capacity(nd);
    for (d, (p, sv)) in saved.params.iter().zip(&saved.seqs).enumerate() {
        let dh_n = copy_range_f32(backend, gb, y_len + d * bh, bh).map_err(cuda_err(op))?;
        let dc_n = match cell {
            RnnCell::Lstm => Some(copy_range_f32(backend, gb, y_len + (nd + d) * bh, bh).map_err(cuda_err(op))?),
            RnnCell::Gru => None,
        };
        let w = p.weights(op)?;
        let gr = rnn_seq_backward_f32(
            backend,
            saved.sizes,
            tf32,
            &saved.lengths,
            xb,
            &w,
            sv,
            gb,
            d * hidden,
            nd * hidden,
            dh_n,
            dc_n,
        )
        .map_err(cuda_err(op))?;
        grads.push(gr);
    }
    let dev = saved.device;
    let wrap =
        |buf: DeviceBuffer<f32>, dims: Vec<usize>| Tensor::from_cuda_buf(CudaBuf::F32(buf), backend.clone(), dims, dev);
    let dx = if need_x {
        let mut dx = backend.zeros::<f32>(steps * batch * input).map_err(cuda_err(op))?;
        for (d, (gr, p)) in grads.iter().zip(&saved.params).enumerate() {
            let w_ih = p.w_ih.cuda_typed::<f32>(op)?;
            rnn_input_grad_f32(backend, cell, saved.sizes, tf32, &gr.dgi, w_ih, &mut dx, d > 0)
                .map_err(cuda_err(op))?;
        }
        Some(wrap(dx, vec![steps, batch, input]))
    } else {
        None
    };
    let mut dh0 = backend.alloc::<f32>(nd * bh).map_err(cuda_err(op))?;
    let mut dc0 = if cell == RnnCell::Lstm { Some(backend.alloc::<f32>(nd * bh).map_err(cuda_err(op))?) } else { None };
    let mut dirs = Vec::with_capacity(nd);
    for (d, (gr, p)) in grads.into_iter().zip(&saved.params).enumerate() {
        write_range_f32(backend, &gr.dh0, &mut dh0, d * bh).map_err(cuda_err(op))?;
        if let (Some(dst), Some(src)) = (dc0.as_mut(), gr.dc0.as_ref()) {
            write_range_f32(backend, src, dst, d * bh).map_err(cuda_err(op))?;
        }
        let gw = cell.gates() * hidden;
        dirs.push(RnnDirGrads {
            w_ih: wrap(gr.dw_ih, vec![gw, input]),
            w_hh: wrap(gr.dw_hh, vec![gw, hidden]),
            b_ih: p.b_ih.as_ref().map(|_| wrap(gr.db_ih, vec![gw])),
            b_hh: p.b_hh.as_ref().map(|_| wrap(gr.db_hh, vec![gw])),
        });
    }
    Ok(RnnLayerGrads {
        x: dx,
        h0: wrap(dh0, vec![nd, batch, hidden]),
        c0: dc0.map(|b| wrap(b, vec![nd, batch, hidden])),
        dirs,
    })
}
