//! Index and shape ops on a CUDA device: gather, scatter_add, index_select, index_add (and so
//! embedding and its backward), cat (and so stack), pad. Kernels: `kernels/cuda/index.cu`.
//!
//! Indices are checked on the device ([`checked_indices`]: a kernel flags the first
//! out-of-range position, one 16-byte download), so errors are the CPU's `IndexOutOfRange`
//! with the same index. gather, index_select, cat and pad move bytes (every dtype);
//! scatter_add and index_add accumulate with atomics in f32 (f32, and f16/bf16 widened and
//! rounded once at the end, as the CPU does) or f64.

use super::{cuda_buf_dispatch, cuda_err, merge_dims, CudaBuf};
use crate::ops::shape_ops::PadMode;
use crate::{DType, Error, Result, Tensor, WithDType};
use stapes_kernels::cuda::{self as kc, Backend};

/// The indices as a dense i64 CUDA tensor, after checking on the device that all lie in
/// `[0, size)` (the CPU's `index_data` errors: dtype first, then the first bad index).
pub(crate) fn checked_indices(op: &'static str, idx: &Tensor, dim: usize, size: usize) -> Result<Tensor> {
    if idx.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype: idx.dtype(), msg: "indices must be i64" });
    }
    let dense = idx.cuda_dense()?;
    let (_, backend) = dense.cuda_parts(op)?;
    let buf = dense.cuda_typed::<i64>(op)?;
    if let Some((_, bad)) = kc::index::first_out_of_range(backend, buf, idx.elem_count(), size).map_err(cuda_err(op))? {
        return Err(Error::IndexOutOfRange { op, index: bad, dim, size });
    }
    Ok(dense)
}

/// A fresh dense buffer holding `t`'s elements (never shared with `t`: the adds write it).
fn fresh_copy(op: &'static str, t: &Tensor) -> Result<CudaBuf> {
    let (s, backend) = t.cuda_parts(op)?;
    let n = t.elem_count();
    let l = t.layout();
    let (dims, strides) = merge_dims(l.dims(), l.strides());
    Ok(cuda_buf_dispatch!(&s.buf, |src: T| {
        let mut dst = backend.zeros::<T>(n).map_err(cuda_err(op))?;
        if n > 0 {
            kc::tensor::copy_strided(backend, src, &dims, &strides, l.offset(), &mut dst).map_err(cuda_err(op))?;
        }
        T::into_cuda(dst)
    }))
}

fn float_check(op: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(()),
        dtype => {
            Err(Error::UnsupportedDType { op, dtype, msg: "expected a floating point tensor (f16, bf16, f32, f64)" })
        }
    }
}

/// `gather` (shapes checked by the caller).
pub(crate) fn gather(x: &Tensor, d: usize, index: &Tensor) -> Result<Tensor> {
    const OP: &str = "gather";
    let idx = checked_indices(OP, index, d, x.dims()[d])?;
    let idx_buf = idx.cuda_typed::<i64>(OP)?;
    let src = x.cuda_dense()?;
    let (s, backend) = src.cuda_parts(OP)?;
    let n = index.elem_count();
    let buf = cuda_buf_dispatch!(&s.buf, |b: T| {
        let mut out = backend.zeros::<T>(n).map_err(cuda_err(OP))?;
        kc::index::gather(backend, b, x.dims(), d, idx_buf, index.dims(), &mut out).map_err(cuda_err(OP))?;
        T::into_cuda(out)
    });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), index.shape().clone(), *x.device()))
}

/// The accumulation buffers of scatter_add/index_add: a fresh copy of `x` and a dense `src`,
/// both in `acc` (f32 or f64), and the dtype to round the result back to.
fn accumulate_in(
    op: &'static str,
    x: &Tensor,
    src: &Tensor,
    run: impl FnOnce(&Backend, &mut CudaBuf, &CudaBuf) -> Result<()>,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let acc = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
    let (xa, sa) = (x.to_dtype(acc)?, src.to_dtype(acc)?.cuda_dense()?);
    let mut out = fresh_copy(op, &xa)?;
    let (s, backend) = sa.cuda_parts(op)?;
    run(backend, &mut out, &s.buf)?;
    Tensor::from_cuda_buf(out, backend.clone(), x.shape().clone(), *x.device()).to_dtype(dtype)
}

/// `scatter_add` (devices and shapes checked by the caller).
pub(crate) fn scatter_add(x: &Tensor, d: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
    const OP: &str = "scatter_add";
    let idx = checked_indices(OP, index, d, x.dims()[d])?;
    float_check(OP, x)?;
    let idx_buf = idx.cuda_typed::<i64>(OP)?;
    accumulate_in(OP, x, src, |backend, out, s| {
        match (out, s) {
            (CudaBuf::F32(o), CudaBuf::F32(s)) => {
                kc::index::scatter_add(backend, o, x.dims(), d, idx_buf, index.dims(), s, src.dims())
            }
            (CudaBuf::F64(o), CudaBuf::F64(s)) => {
                kc::index::scatter_add(backend, o, x.dims(), d, idx_buf, index.dims(), s, src.dims())
            }
            _ => unreachable_dtype(OP)?,
        }
        .map_err(cuda_err(OP))
    })
}

/// `index_add` (shapes checked by the caller).
pub(crate) fn index_add(x: &Tensor, d: usize, indices: &Tensor, src: &Tensor) -> Result<Tensor> {
    const OP: &str = "index_add";
    x.check_same(indices, OP, false)?;
    let size = x.dims()[d];
    let idx = checked_indices(OP, indices, d, size)?;
    float_check(OP, x)?;
    let idx_buf = idx.cuda_typed::<i64>(OP)?;
    let outer: usize = x.dims()[..d].iter().product();
    let inner: usize = x.dims()[d + 1..].iter().product();
    let nidx = indices.elem_count();
    accumulate_in(OP, x, src, |backend, out, s| {
        match (out, s) {
            (CudaBuf::F32(o), CudaBuf::F32(s)) => {
                kc::index::index_add(backend, o, (outer, size, inner), idx_buf, nidx, s)
            }
            (CudaBuf::F64(o), CudaBuf::F64(s)) => {
                kc::index::index_add(backend, o, (outer, size, inner), idx_buf, nidx, s)
            }
            _ => unreachable_dtype(OP)?,
        }
        .map_err(cuda_err(OP))
    })
}

/// The accumulation buffers are f32 or f64 by construction; an error rather than a panic.
fn unreachable_dtype<T>(op: &'static str) -> Result<T> {
    Err(Error::Cuda { op, msg: "internal: accumulation buffers must be f32 or f64".into() })
}

/// `index_select` (rank of the indices checked by the caller).
pub(crate) fn index_select(x: &Tensor, d: usize, indices: &Tensor) -> Result<Tensor> {
    const OP: &str = "index_select";
    let size = x.dims()[d];
    let idx = checked_indices(OP, indices, d, size)?;
    let idx_buf = idx.cuda_typed::<i64>(OP)?;
    let outer: usize = x.dims()[..d].iter().product();
    let inner: usize = x.dims()[d + 1..].iter().product();
    let nidx = indices.elem_count();
    let mut out_shape = x.dims().to_vec();
    out_shape[d] = nidx;
    let src = x.cuda_dense()?;
    let (s, backend) = src.cuda_parts(OP)?;
    let buf = cuda_buf_dispatch!(&s.buf, |b: T| {
        let mut out = backend.zeros::<T>(outer * nidx * inner).map_err(cuda_err(OP))?;
        kc::index::index_select(backend, b, (outer, size, inner), idx_buf, nidx, &mut out).map_err(cuda_err(OP))?;
        T::into_cuda(out)
    });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), out_shape, *x.device()))
}

/// `cat` along `d` into `out_shape` (devices, dtypes and shapes checked by the caller).
pub(crate) fn cat(tensors: &[&Tensor], d: usize, out_shape: Vec<usize>) -> Result<Tensor> {
    const OP: &str = "cat";
    let first = tensors[0];
    let (_, backend) = first.cuda_parts(OP)?;
    let outer: usize = out_shape[..d].iter().product();
    let inner: usize = out_shape[d + 1..].iter().product();
    let row = out_shape[d] * inner;
    let buf = all_dispatch!(first.dtype(), |T| {
        let mut out = backend.zeros::<T>(outer * row).map_err(cuda_err(OP))?;
        let mut col = 0;
        for t in tensors {
            let w = t.dims()[d] * inner;
            if w > 0 && outer > 0 {
                let dense = t.cuda_dense()?;
                let src = dense.cuda_typed::<T>(OP)?;
                kc::index::cat_slab(backend, src, &mut out, (outer, w, row, col)).map_err(cuda_err(OP))?;
            }
            col += w;
        }
        T::into_cuda(out)
    });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), out_shape, *first.device()))
}

/// `pad` (pairs and reflect sizes checked by the caller; `pads` in `F.pad` order).
pub(crate) fn pad(x: &Tensor, pads: &[usize], mode: PadMode, value: f64) -> Result<Tensor> {
    const OP: &str = "pad";
    let rank = x.rank();
    if pads.iter().all(|&p| p == 0) {
        return Ok(x.clone());
    }
    let mut pairs = vec![(0usize, 0usize); rank];
    for (i, pair) in pads.chunks(2).enumerate() {
        pairs[rank - 1 - i] = (pair[0], pair[1]);
    }
    let out_shape: Vec<usize> = x.dims().iter().zip(&pairs).map(|(&d, &(lo, hi))| d + lo + hi).collect();
    let kind = match mode {
        PadMode::Constant => kc::index::PadKind::Constant,
        PadMode::Reflect => kc::index::PadKind::Reflect,
    };
    let src = x.cuda_dense()?;
    let (_, backend) = src.cuda_parts(OP)?;
    let n: usize = out_shape.iter().product();
    let buf = all_dispatch!(x.dtype(), |T| {
        let b = src.cuda_typed::<T>(OP)?;
        let mut out = backend.zeros::<T>(n).map_err(cuda_err(OP))?;
        let v = <T as WithDType>::from_f64(value);
        kc::index::pad(backend, b, x.dims(), &pairs, kind, v, &mut out).map_err(cuda_err(OP))?;
        T::into_cuda(out)
    });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), out_shape, *x.device()))
}
