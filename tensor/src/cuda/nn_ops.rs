//! Softmax, log-softmax and their backward, layer norm and batch norm (forward and backward) on
//! CUDA tensors. Softmax runs `kernels/cuda/softmax.cu` over the last dim (the softmax dim is
//! moved last and made dense when it is not) for every float dtype. The norms run the `f32`
//! kernels of `kernels/cuda/norm.cu`; `f16`/`bf16` operands are cast to `f32` on the device and
//! the results cast back, exactly as the CPU ops compute half dtypes in `f32` (statistics stay
//! `f32`, as on the CPU). `f64` norms have no CUDA kernel yet (`Error::NoCudaKernel`). The
//! callers in `ops/nn.rs` have already checked the arguments, so errors are the CPU's.

use super::{check_f32_compute, cuda_err, not_float, wrap_f32, CudaBuf};
use crate::ops::nn::{BatchNormOutput, LayerNormOutput};
use crate::{DType, Result, Tensor, WithDType};
use stapes_kernels::cuda::{self as kc, Backend, DeviceBuffer};

/// `x` with dim `d` moved last (swapped with the last dim), dense.
fn dim_last(x: &Tensor, d: usize) -> Result<Tensor> {
    let last = x.rank() - 1;
    if d == last {
        x.cuda_dense()
    } else {
        x.transpose(d, last)?.cuda_dense()
    }
}

/// Undoes [`dim_last`] on a result, giving a fresh dense tensor in `x`'s dim order.
fn dim_back(y: Tensor, d: usize) -> Result<Tensor> {
    let last = y.rank() - 1;
    if d == last {
        Ok(y)
    } else {
        y.transpose(d, last)?.cuda_dense()
    }
}

fn softmax_buf<T: WithDType>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    rows: usize,
    n: usize,
    log: bool,
    name: &'static str,
) -> Result<CudaBuf> {
    let mut y = backend.alloc::<T>(rows * n).map_err(cuda_err(name))?;
    kc::softmax::softmax_last(backend, x, rows, n, log, &mut y).map_err(cuda_err(name))?;
    Ok(T::into_cuda(y))
}

/// softmax / log_softmax along dim `d` (rank >= 1).
pub(crate) fn softmax(x: &Tensor, d: usize, log: bool, name: &'static str) -> Result<Tensor> {
    if !x.dtype().is_float() {
        return Err(not_float(name, x));
    }
    let xl = dim_last(x, d)?;
    let n = xl.dims()[xl.rank() - 1];
    let rows = xl.elem_count().checked_div(n).unwrap_or(0);
    let (s, backend) = xl.cuda_parts(name)?;
    let buf = match &s.buf {
        CudaBuf::F16(b) => softmax_buf(backend, b, rows, n, log, name)?,
        CudaBuf::BF16(b) => softmax_buf(backend, b, rows, n, log, name)?,
        CudaBuf::F32(b) => softmax_buf(backend, b, rows, n, log, name)?,
        CudaBuf::F64(b) => softmax_buf(backend, b, rows, n, log, name)?,
        _ => return Err(not_float(name, x)),
    };
    let y = Tensor::from_cuda_buf(buf, backend.clone(), xl.shape().clone(), *x.device());
    dim_back(y, d)
}

#[allow(clippy::too_many_arguments)]
fn softmax_backward_buf<T: WithDType>(
    backend: &Backend,
    y: &DeviceBuffer<T>,
    g: &Tensor,
    rows: usize,
    n: usize,
    log: bool,
    name: &'static str,
) -> Result<CudaBuf> {
    let g = g.cuda_typed::<T>(name)?;
    let mut gx = backend.alloc::<T>(rows * n).map_err(cuda_err(name))?;
    kc::softmax::softmax_backward_last(backend, y, g, rows, n, log, &mut gx).map_err(cuda_err(name))?;
    Ok(T::into_cuda(gx))
}

/// The softmax / log-softmax gradient along dim `d` from the forward output `y` and the upstream
/// `grad` (same shape, dtype and device, rank >= 1; checked by the caller).
pub(crate) fn softmax_backward(y: &Tensor, grad: &Tensor, d: usize, log: bool, name: &'static str) -> Result<Tensor> {
    if !y.dtype().is_float() {
        return Err(not_float(name, y));
    }
    let yl = dim_last(y, d)?;
    let gl = dim_last(grad, d)?;
    let n = yl.dims()[yl.rank() - 1];
    let rows = yl.elem_count().checked_div(n).unwrap_or(0);
    let (s, backend) = yl.cuda_parts(name)?;
    let buf = match &s.buf {
        CudaBuf::F16(b) => softmax_backward_buf(backend, b, &gl, rows, n, log, name)?,
        CudaBuf::BF16(b) => softmax_backward_buf(backend, b, &gl, rows, n, log, name)?,
        CudaBuf::F32(b) => softmax_backward_buf(backend, b, &gl, rows, n, log, name)?,
        CudaBuf::F64(b) => softmax_backward_buf(backend, b, &gl, rows, n, log, name)?,
        _ => return Err(not_float(name, y)),
    };
    let gx = Tensor::from_cuda_buf(buf, backend.clone(), yl.shape().clone(), *y.device());
    dim_back(gx, d)
}

// ---------------------------------------------------------------------------------------------
// Norms (f32 kernels; f16/bf16 through f32)
// ---------------------------------------------------------------------------------------------

/// A fresh f32 copy of `t` that a kernel may overwrite (never `t`'s own storage).
fn fresh_f32(t: &Tensor, op: &'static str) -> Result<DeviceBuffer<f32>> {
    let d = t.cuda_f32()?;
    let (_, backend) = d.cuda_parts(op)?;
    let src = d.cuda_typed::<f32>(op)?;
    let n = t.elem_count();
    let mut dst = backend.zeros::<f32>(n).map_err(cuda_err(op))?;
    if n > 0 {
        kc::tensor::copy_strided(backend, src, &[n], &[1], 0, &mut dst).map_err(cuda_err(op))?;
    }
    Ok(dst)
}

/// Layer norm of `x` as `[rows, cols]` (arguments checked by the caller).
pub(crate) fn layer_norm(
    x: &Tensor,
    rows: usize,
    cols: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<LayerNormOutput> {
    const OP: &str = "layer_norm";
    check_f32_compute(OP, x)?;
    let xf = x.cuda_f32()?;
    let wf = weight.map(Tensor::cuda_f32).transpose()?;
    let bf = bias.map(Tensor::cuda_f32).transpose()?;
    let (_, backend) = xf.cuda_parts(OP)?;
    let mut y = backend.alloc::<f32>(rows * cols).map_err(cuda_err(OP))?;
    let mut mean = backend.zeros::<f32>(rows).map_err(cuda_err(OP))?;
    let mut rstd = backend.zeros::<f32>(rows).map_err(cuda_err(OP))?;
    kc::norm::layer_norm_forward_f32(
        backend,
        xf.cuda_typed::<f32>(OP)?,
        rows,
        cols,
        wf.as_ref().map(|w| w.cuda_typed::<f32>(OP)).transpose()?,
        bf.as_ref().map(|b| b.cuda_typed::<f32>(OP)).transpose()?,
        eps,
        &mut y,
        &mut mean,
        &mut rstd,
    )
    .map_err(cuda_err(OP))?;
    Ok(LayerNormOutput {
        y: wrap_f32(y, backend, x.dims(), x, x.dtype())?,
        mean: wrap_f32(mean, backend, &[rows], x, DType::F32)?,
        rstd: wrap_f32(rstd, backend, &[rows], x, DType::F32)?,
    })
}

/// Layer norm gradients (arguments checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_backward(
    x: &Tensor,
    grad_y: &Tensor,
    (rows, cols): (usize, usize),
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    has_bias: bool,
    mean: &Tensor,
    rstd: &Tensor,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    const OP: &str = "layer_norm_backward";
    let NormGrad { xf, gf, wf, mf, rf, mut gx, mut gw, mut gb } =
        norm_grad_operands(OP, x, grad_y, weight, has_bias, (mean, rstd), cols)?;
    let (_, backend) = xf.cuda_parts(OP)?;
    kc::norm::layer_norm_backward_f32(
        backend,
        xf.cuda_typed::<f32>(OP)?,
        gf.cuda_typed::<f32>(OP)?,
        rows,
        cols,
        wf.as_ref().map(|w| w.cuda_typed::<f32>(OP)).transpose()?,
        mf.cuda_typed::<f32>(OP)?,
        rf.cuda_typed::<f32>(OP)?,
        &mut gx,
        gw.as_mut(),
        gb.as_mut(),
    )
    .map_err(cuda_err(OP))?;
    wrap_norm_grads(x, backend, (gx, gw, gb), normalized_shape)
}

/// Batch norm of `x` as `[n, c, s]` (arguments checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm(
    x: &Tensor,
    (n, c, s): (usize, usize, usize),
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<BatchNormOutput> {
    const OP: &str = "batch_norm";
    check_f32_compute(OP, x)?;
    let xf = x.cuda_f32()?;
    let wf = weight.map(Tensor::cuda_f32).transpose()?;
    let bf = bias.map(Tensor::cuda_f32).transpose()?;
    // the kernels update the running statistics in place: work on copies
    let mut rm = running_mean.map(|t| fresh_f32(t, OP)).transpose()?;
    let mut rv = running_var.map(|t| fresh_f32(t, OP)).transpose()?;
    let (_, backend) = xf.cuda_parts(OP)?;
    let mut y = backend.alloc::<f32>(n * c * s).map_err(cuda_err(OP))?;
    let mut sm = backend.zeros::<f32>(c).map_err(cuda_err(OP))?;
    let mut sr = backend.zeros::<f32>(c).map_err(cuda_err(OP))?;
    kc::norm::batch_norm_forward_f32(
        backend,
        xf.cuda_typed::<f32>(OP)?,
        (n, c, s),
        wf.as_ref().map(|w| w.cuda_typed::<f32>(OP)).transpose()?,
        bf.as_ref().map(|b| b.cuda_typed::<f32>(OP)).transpose()?,
        rm.as_mut(),
        rv.as_mut(),
        training,
        momentum,
        eps,
        &mut y,
        &mut sm,
        &mut sr,
    )
    .map_err(cuda_err(OP))?;
    let dt = x.dtype();
    let (running_mean, running_var) = if training {
        (
            rm.map(|v| wrap_f32(v, backend, &[c], x, dt)).transpose()?,
            rv.map(|v| wrap_f32(v, backend, &[c], x, dt)).transpose()?,
        )
    } else {
        (None, None)
    };
    Ok(BatchNormOutput {
        y: wrap_f32(y, backend, x.dims(), x, dt)?,
        save_mean: wrap_f32(sm, backend, &[c], x, DType::F32)?,
        save_rstd: wrap_f32(sr, backend, &[c], x, DType::F32)?,
        running_mean,
        running_var,
    })
}

/// Batch norm gradients (arguments checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_backward(
    x: &Tensor,
    grad_y: &Tensor,
    (n, c, s): (usize, usize, usize),
    weight: Option<&Tensor>,
    has_bias: bool,
    save_mean: &Tensor,
    save_rstd: &Tensor,
    training: bool,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    const OP: &str = "batch_norm_backward";
    let NormGrad { xf, gf, wf, mf, rf, mut gx, mut gw, mut gb } =
        norm_grad_operands(OP, x, grad_y, weight, has_bias, (save_mean, save_rstd), c)?;
    let (_, backend) = xf.cuda_parts(OP)?;
    kc::norm::batch_norm_backward_f32(
        backend,
        xf.cuda_typed::<f32>(OP)?,
        gf.cuda_typed::<f32>(OP)?,
        (n, c, s),
        wf.as_ref().map(|w| w.cuda_typed::<f32>(OP)).transpose()?,
        mf.cuda_typed::<f32>(OP)?,
        rf.cuda_typed::<f32>(OP)?,
        training,
        &mut gx,
        gw.as_mut(),
        gb.as_mut(),
    )
    .map_err(cuda_err(OP))?;
    wrap_norm_grads(x, backend, (gx, gw, gb), &[c])
}

/// What a norm backward's kernel takes: `x`, `grad_y`, the weight and the saved statistics as
/// dense f32 (checked to live with `x`), a `grad_x` buffer the kernel writes in full, and zeroed
/// gradient buffers of `params` elements for the weight and bias the layer has.
struct NormGrad {
    xf: Tensor,
    gf: Tensor,
    wf: Option<Tensor>,
    mf: Tensor,
    rf: Tensor,
    gx: DeviceBuffer<f32>,
    gw: Option<DeviceBuffer<f32>>,
    gb: Option<DeviceBuffer<f32>>,
}

fn norm_grad_operands(
    op: &'static str,
    x: &Tensor,
    grad_y: &Tensor,
    weight: Option<&Tensor>,
    has_bias: bool,
    (mean, rstd): (&Tensor, &Tensor),
    params: usize,
) -> Result<NormGrad> {
    check_f32_compute(op, x)?;
    for t in [grad_y, mean, rstd].into_iter().chain(weight) {
        x.check_same(t, op, false)?;
    }
    let xf = x.cuda_f32()?;
    let (_, backend) = xf.cuda_parts(op)?;
    let gx = backend.alloc::<f32>(x.elem_count()).map_err(cuda_err(op))?;
    let gw = weight.map(|_| backend.zeros::<f32>(params)).transpose().map_err(cuda_err(op))?;
    let gb = if has_bias { Some(backend.zeros::<f32>(params).map_err(cuda_err(op))?) } else { None };
    Ok(NormGrad {
        gf: grad_y.cuda_f32()?,
        wf: weight.map(Tensor::cuda_f32).transpose()?,
        mf: mean.cuda_f32()?,
        rf: rstd.cuda_f32()?,
        xf,
        gx,
        gw,
        gb,
    })
}

/// The gradients of a norm backward as tensors of `x`'s dtype: `grad_x` of `x`'s shape, the
/// parameter gradients of `param_shape`.
fn wrap_norm_grads(
    x: &Tensor,
    backend: &Backend,
    (gx, gw, gb): (DeviceBuffer<f32>, Option<DeviceBuffer<f32>>, Option<DeviceBuffer<f32>>),
    param_shape: &[usize],
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let dt = x.dtype();
    Ok((
        wrap_f32(gx, backend, x.dims(), x, dt)?,
        gw.map(|g| wrap_f32(g, backend, param_shape, x, dt)).transpose()?,
        gb.map(|g| wrap_f32(g, backend, param_shape, x, dt)).transpose()?,
    ))
}
