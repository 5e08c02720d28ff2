//! `matmul` on a CUDA device: strided batched GEMMs through [`stapes_kernels::cuda::gemm`]
//! (cuBLAS on a GPU, the tiled `gemm.cu` kernel on the emulator).
//!
//! Operands are used in place wherever the layout allows: a matrix whose columns are contiguous
//! is a plain operand with its row stride as leading dimension, one whose rows are contiguous
//! (a transposed view of a contiguous matrix) is a transposed operand, and only other layouts
//! are copied dense first. Batch dims (broadcast like `torch.matmul`, stride 0 where an operand
//! is broadcast) are merged where all three operands agree, the innermost merged dim becomes the
//! GEMM's batch, and any remaining outer dims loop over launches with offsets (no copies).

use super::{cuda_err, Tensor};
use crate::{DType, Error, Result, WithDType};
use stapes_kernels::cuda::gemm::{self, GemmConfig, GemmElem};
use std::sync::atomic::{AtomicBool, Ordering};

static ALLOW_TF32: AtomicBool = AtomicBool::new(false);

/// Lets `f32` matmuls on a GPU use TF32 tensor cores (inputs rounded to a 10-bit mantissa,
/// products accumulated in FP32), like `torch.backends.cuda.matmul.allow_tf32 = True`. Off by
/// default: `f32` matmuls are true FP32. No effect on the CPU or on the emulator.
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
}

/// Whether `f32` matmuls on a GPU may use TF32 ([`set_allow_tf32`]).
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

const OP: &str = "matmul";

/// How a `rows x cols` matrix with strides `(rs, cs)` enters a GEMM without a copy: `(trans,
/// ld)`, or `None` when neither its rows nor its columns are contiguous.
fn matrix_operand(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(bool, usize)> {
    if (cols <= 1 || cs == 1) && (rows <= 1 || rs >= cols) {
        return Some((false, if rows <= 1 { cols.max(1) } else { rs }));
    }
    if (rows <= 1 || rs == 1) && (cols <= 1 || cs >= rows) {
        return Some((true, if cols <= 1 { rows.max(1) } else { cs }));
    }
    None
}

/// An operand broadcast to `batch + [rows, cols]`: the tensor (maybe a dense copy), its
/// transpose flag and leading dimension, its batch strides and offset.
struct Operand {
    t: Tensor,
    trans: bool,
    ld: usize,
    batch_strides: Vec<usize>,
    offset: usize,
}

fn operand(t: &Tensor, batch: &[usize], rows: usize, cols: usize) -> Result<Operand> {
    let mut shape = batch.to_vec();
    shape.extend([rows, cols]);
    let nb = batch.len();
    let l = t.layout().broadcast_as(OP, &shape)?;
    let (rs, cs) = (l.strides()[nb], l.strides()[nb + 1]);
    if let Some((trans, ld)) = matrix_operand(rows, cols, rs, cs) {
        return Ok(Operand { t: t.clone(), trans, ld, batch_strides: l.strides()[..nb].to_vec(), offset: l.offset() });
    }
    let dense = t.cuda_dense()?;
    let l = dense.layout().broadcast_as(OP, &shape)?;
    Ok(Operand { trans: false, ld: cols.max(1), batch_strides: l.strides()[..nb].to_vec(), offset: 0, t: dense })
}

/// `a @ b` for `a` of shape `batch_a + [m, k]` and `b` of `batch_b + [k, n]` (rank >= 2 both,
/// dtypes checked equal and float, shapes checked by the caller), `batch` the broadcast batch
/// shape; the result has shape `batch + [m, n]`.
pub(crate) fn matmul(a: &Tensor, b: &Tensor, batch: &[usize], m: usize, n: usize, k: usize) -> Result<Tensor> {
    match a.dtype() {
        DType::F32 => run::<f32>(a, b, batch, m, n, k),
        DType::F16 => run::<half::f16>(a, b, batch, m, n, k),
        DType::BF16 => run::<half::bf16>(a, b, batch, m, n, k),
        DType::F64 => run::<f64>(a, b, batch, m, n, k),
        dtype => Err(Error::UnsupportedDType {
            op: OP,
            dtype,
            msg: "expected a floating point tensor (f16, bf16, f32, f64)",
        }),
    }
}

fn run<T: WithDType + GemmElem>(
    a: &Tensor,
    b: &Tensor,
    batch: &[usize],
    m: usize,
    n: usize,
    k: usize,
) -> Result<Tensor> {
    let (_, backend) = a.cuda_parts(OP)?;
    let backend = backend.clone();
    let mut out_shape = batch.to_vec();
    out_shape.extend([m, n]);
    let nb: usize = batch.iter().product();
    let mut c = backend.zeros::<T>(nb * m * n).map_err(cuda_err(OP))?;
    if nb * m * n == 0 || k == 0 {
        // empty, or a sum over nothing: zeros
        return Ok(Tensor::from_cuda_buf(T::into_cuda(c), backend, out_shape, *a.device()));
    }
    let oa = operand(a, batch, m, k)?;
    let ob = operand(b, batch, k, n)?;

    // Merge batch dims (dropping size-1 dims) where A, B and C all step uniformly across them.
    let c_strides = crate::layout::Layout::contiguous(out_shape.clone()).strides()[..batch.len()].to_vec();
    let mut dims: Vec<(usize, [usize; 3])> = Vec::new();
    for (i, &d) in batch.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let s = [oa.batch_strides[i], ob.batch_strides[i], c_strides[i]];
        match dims.last_mut() {
            Some((ld, ls)) if (0..3).all(|j| ls[j] == s[j] * d) => {
                *ld *= d;
                *ls = s;
            }
            _ => dims.push((d, s)),
        }
    }
    let (inner, inner_strides) = dims.pop().unwrap_or((1, [0, 0, m * n]));
    let outer_count: usize = dims.iter().map(|(d, _)| d).product();

    let a_buf = oa.t.cuda_typed::<T>(OP)?;
    let b_buf = ob.t.cuda_typed::<T>(OP)?;
    let mut cfg = GemmConfig {
        transa: oa.trans,
        transb: ob.trans,
        m,
        n,
        k,
        batch: inner,
        alpha: 1.0,
        beta: 0.0,
        lda: oa.ld,
        ldb: ob.ld,
        ldc: n,
        stride_a: inner_strides[0],
        stride_b: inner_strides[1],
        stride_c: inner_strides[2],
        offset_a: 0,
        offset_b: 0,
        offset_c: 0,
        allow_tf32: allow_tf32(),
    };
    for o in 0..outer_count {
        // the row-major multi-index of `o` over the outer merged dims
        let mut rem = o;
        let mut offs = [oa.offset, ob.offset, 0];
        for (d, s) in dims.iter().rev() {
            let i = rem % d;
            rem /= d;
            for j in 0..3 {
                offs[j] += i * s[j];
            }
        }
        cfg.offset_a = offs[0];
        cfg.offset_b = offs[1];
        cfg.offset_c = offs[2];
        gemm::gemm(&backend, &cfg, a_buf, b_buf, &mut c).map_err(cuda_err(OP))?;
    }
    Ok(Tensor::from_cuda_buf(T::into_cuda(c), backend, out_shape, *a.device()))
}

#[cfg(test)]
mod tests {
    use super::matrix_operand;

    #[test]
    fn operands_in_place_where_the_layout_allows() {
        assert_eq!(matrix_operand(7, 33, 33, 1), Some((false, 33))); // contiguous
        assert_eq!(matrix_operand(7, 33, 40, 1), Some((false, 40))); // narrowed columns
        assert_eq!(matrix_operand(33, 7, 1, 33), Some((true, 33))); // transposed contiguous
        assert_eq!(matrix_operand(9, 7, 1, 40), Some((true, 40))); // narrowed transpose
        assert_eq!(matrix_operand(1, 5, 0, 1), Some((false, 5))); // one row: any row stride
        assert_eq!(matrix_operand(5, 1, 1, 0), Some((false, 1))); // one column
        assert_eq!(matrix_operand(7, 33, 0, 1), None); // expanded rows
        assert_eq!(matrix_operand(7, 33, 66, 2), None); // stepped
    }
}
