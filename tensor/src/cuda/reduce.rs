//! Reductions on CUDA tensors, with the kernels of `kernels/cuda/reduce_nd.cu`: a block of
//! adjacent reduced dims followed by at least a warp's worth of elements (`[a, r, b]`, `b >= 32`:
//! sums over the batch dims of a gradient, statistics over a batch) is reduced in place by the
//! column kernel; otherwise the reduced dims are permuted last and the data made dense, and the
//! row kernels reduce a `[rows, r]` matrix (one block per row, or the grid-level two-pass path
//! for few long rows). Results are fresh
//! dense tensors on the input's device. The callers in `ops/reduce.rs` have already checked the
//! arguments, so errors are the CPU's.

use super::{cuda_err, CudaBuf};
use crate::{Error, Result, Tensor, WithDType};
use stapes_kernels::cuda::reduce_nd::{self as kr, RowReduce};
use stapes_kernels::cuda::{Backend, DeviceBuffer};

fn not_float(op: &'static str, t: &Tensor) -> Error {
    Error::UnsupportedDType { op, dtype: t.dtype(), msg: "expected a floating point tensor (f16, bf16, f32, f64)" }
}

/// `x` with the dims `dims` (resolved, each < rank) moved last, as a dense `[rows, r]` matrix.
fn rows_matrix(x: &Tensor, dims: &[usize]) -> Result<(Tensor, usize, usize)> {
    let rank = x.rank();
    let mut perm: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
    let rows: usize = perm.iter().map(|&d| x.dims()[d]).product();
    let r: usize = dims.iter().map(|&d| x.dims()[d]).product();
    perm.extend(dims);
    let dense =
        if perm.iter().enumerate().all(|(i, &p)| i == p) { x.cuda_dense()? } else { x.permute(&perm)?.cuda_dense()? };
    Ok((dense, rows, r))
}

fn run_rows<T: WithDType>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    rows: usize,
    r: usize,
    op: RowReduce,
    name: &'static str,
) -> Result<CudaBuf> {
    let mut out = backend.zeros::<T>(rows).map_err(cuda_err(name))?;
    kr::reduce_rows(backend, x, rows, r, op, &mut out).map_err(cuda_err(name))?;
    Ok(T::into_cuda(out))
}

fn run_mid<T: WithDType>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    arb: (usize, usize, usize),
    op: RowReduce,
    name: &'static str,
) -> Result<CudaBuf> {
    let mut out = backend.zeros::<T>(arb.0 * arb.2).map_err(cuda_err(name))?;
    kr::reduce_mid(backend, x, arb, op, &mut out).map_err(cuda_err(name))?;
    Ok(T::into_cuda(out))
}

/// Trailing elements at least, after a block of reduced dims, for the in-place middle-dim
/// kernel (a warp's worth of consecutive columns); fewer go through the permuted copy.
const MID_MIN_COLS: usize = 32;

/// `op` over the resolved `dims` of the CUDA tensor `x`, with the result shape `out_shape`.
/// Reduced dims forming one block `[a, r, b]` with `b >= 32` are reduced in place (after a
/// dense copy only if `x` is a strided view); any other set is permuted last.
pub(crate) fn reduce(
    x: &Tensor,
    dims: &[usize],
    out_shape: Vec<usize>,
    op: RowReduce,
    name: &'static str,
) -> Result<Tensor> {
    if !x.dtype().is_float() {
        return Err(not_float(name, x));
    }
    let block = dims.windows(2).all(|w| w[1] == w[0] + 1);
    if let (true, Some(&first), Some(&last)) = (block, dims.first(), dims.last()) {
        let a: usize = x.dims()[..first].iter().product();
        let r: usize = x.dims()[first..=last].iter().product();
        let b: usize = x.dims()[last + 1..].iter().product();
        if b >= MID_MIN_COLS {
            let dense = x.cuda_dense()?;
            let (s, backend) = dense.cuda_parts(name)?;
            let buf = match &s.buf {
                CudaBuf::F16(v) => run_mid(backend, v, (a, r, b), op, name)?,
                CudaBuf::BF16(v) => run_mid(backend, v, (a, r, b), op, name)?,
                CudaBuf::F32(v) => run_mid(backend, v, (a, r, b), op, name)?,
                CudaBuf::F64(v) => run_mid(backend, v, (a, r, b), op, name)?,
                _ => return Err(not_float(name, x)),
            };
            return Ok(Tensor::from_cuda_buf(buf, backend.clone(), out_shape, *x.device()));
        }
    }
    let (dense, rows, r) = rows_matrix(x, dims)?;
    let (s, backend) = dense.cuda_parts(name)?;
    let buf = match &s.buf {
        CudaBuf::F16(b) => run_rows(backend, b, rows, r, op, name)?,
        CudaBuf::BF16(b) => run_rows(backend, b, rows, r, op, name)?,
        CudaBuf::F32(b) => run_rows(backend, b, rows, r, op, name)?,
        CudaBuf::F64(b) => run_rows(backend, b, rows, r, op, name)?,
        _ => return Err(not_float(name, x)),
    };
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), out_shape, *x.device()))
}

fn run_arg<T: WithDType>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    rows: usize,
    r: usize,
    want_max: bool,
    name: &'static str,
) -> Result<CudaBuf> {
    let mut out = backend.zeros::<i64>(rows).map_err(cuda_err(name))?;
    kr::arg_reduce_rows(backend, x, rows, r, want_max, &mut out).map_err(cuda_err(name))?;
    Ok(CudaBuf::I64(out))
}

/// argmax/argmin over dim `d` of the CUDA tensor `x` (rank >= 1, dim `d` not empty): an i64
/// tensor of shape `out_shape`.
pub(crate) fn arg_reduce(
    x: &Tensor,
    d: usize,
    out_shape: Vec<usize>,
    want_max: bool,
    name: &'static str,
) -> Result<Tensor> {
    if !x.dtype().is_float() {
        return Err(not_float(name, x));
    }
    let (dense, rows, r) = rows_matrix(x, &[d])?;
    let (s, backend) = dense.cuda_parts(name)?;
    let buf = match &s.buf {
        CudaBuf::F16(b) => run_arg(backend, b, rows, r, want_max, name)?,
        CudaBuf::BF16(b) => run_arg(backend, b, rows, r, want_max, name)?,
        CudaBuf::F32(b) => run_arg(backend, b, rows, r, want_max, name)?,
        CudaBuf::F64(b) => run_arg(backend, b, rows, r, want_max, name)?,
        _ => return Err(not_float(name, x)),
    };
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), out_shape, *x.device()))
}
