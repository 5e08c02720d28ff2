//! 2-D convolution on CUDA tensors: im2col (`kernels/cuda/conv.cu`) + GEMM (cuBLAS on a GPU,
//! the tiled kernel on the emulator) + the bias epilogue, and the backward passes as col2im of a
//! GEMM (input) and GEMMs accumulated over images (weight). See `conv.cu` for the column layout
//! and the per-group products.
//!
//! Compute is `f32` (f16/bf16 operands are widened on the device and the result rounded once,
//! as the CPU kernels compute them in `f32`); `f64` convolutions have no CUDA kernel. The column
//! workspace is bounded: images are processed in chunks of at most [`COL_BUDGET`] floats.

use super::{check_f32_compute, cuda_err, wrap_f32};
use crate::{DType, Error, Result, Tensor};
use stapes_kernels::cuda::conv::{self as kc, Activation, Conv2dGeom};
use stapes_kernels::cuda::gemm::{gemm, GemmConfig};

/// Floats of column workspace per chunk of images (256 MiB).
pub const COL_BUDGET: usize = 64 << 20;

/// Images per chunk so that the chunk's column matrix stays under [`COL_BUDGET`].
fn chunk_images(g: &Conv2dGeom) -> usize {
    let per_image = kc::col_len(g, 1).max(1);
    (COL_BUDGET / per_image).clamp(1, g.n.max(1))
}

/// `conv2d` forward: `[n, c_out, oh, ow]`.
pub(crate) fn conv2d_forward(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    g: &Conv2dGeom,
) -> Result<Tensor> {
    check_f32_compute(op, x)?;
    let (xd, wd) = (x.cuda_f32()?, w.cuda_f32()?);
    let bd = bias.map(Tensor::cuda_f32).transpose()?;
    let (_, backend) = xd.cuda_parts(op)?;
    let (xb, wb) = (xd.cuda_typed::<f32>(op)?, wd.cuda_typed::<f32>(op)?);
    let (oh, ow) = (g.out_h(), g.out_w());
    let ohw = oh * ow;
    let k = kc::col_rows(g);
    let (cg, kg) = (g.c_out / g.groups, k / g.groups);
    let mut out = backend.alloc::<f32>(g.n * g.c_out * ohw).map_err(cuda_err(op))?;
    if g.n * g.c_out * ohw > 0 {
        let chunk = chunk_images(g);
        let mut i0 = 0;
        while i0 < g.n {
            let i1 = (i0 + chunk).min(g.n);
            let mut col = backend.alloc::<f32>(kc::col_len(g, i1 - i0)).map_err(cuda_err(op))?;
            kc::im2col_f32(backend, g, xb, i0..i1, &mut col).map_err(cuda_err(op))?;
            for gi in 0..g.groups {
                // out[i][gi] (cg x ohw) = W[gi] (cg x kg) . col[i][gi] (kg x ohw), for every image
                let cfg = GemmConfig {
                    batch: i1 - i0,
                    lda: kg,
                    stride_a: 0,
                    offset_a: gi * cg * kg,
                    ldb: ohw,
                    stride_b: k * ohw,
                    offset_b: gi * kg * ohw,
                    ldc: ohw,
                    stride_c: g.c_out * ohw,
                    offset_c: i0 * g.c_out * ohw + gi * cg * ohw,
                    ..GemmConfig::dense(cg, ohw, kg)
                };
                gemm(backend, &cfg, wb, &col, &mut out).map_err(cuda_err(op))?;
            }
            i0 = i1;
        }
        let bb = match &bd {
            Some(b) => Some(b.cuda_typed::<f32>(op)?),
            None => None,
        };
        kc::bias_act_f32(backend, &mut out, (g.n, g.c_out, ohw), bb, Activation::Identity).map_err(cuda_err(op))?;
    }
    wrap_f32(out, backend, &[g.n, g.c_out, oh, ow], x, x.dtype())
}

/// The input gradient `[n, c_in, h, w]` of a conv2d from `grad_out` and the weight.
pub(crate) fn conv2d_backward_input(op: &'static str, gy: &Tensor, w: &Tensor, g: &Conv2dGeom) -> Result<Tensor> {
    check_f32_compute(op, w)?;
    let (gyd, wd) = (gy.cuda_f32()?, w.cuda_f32()?);
    let (_, backend) = gyd.cuda_parts(op)?;
    let (gyb, wb) = (gyd.cuda_typed::<f32>(op)?, wd.cuda_typed::<f32>(op)?);
    let ohw = g.out_h() * g.out_w();
    let k = kc::col_rows(g);
    let (cg, kg) = (g.c_out / g.groups, k / g.groups);
    let mut gx = backend.zeros::<f32>(g.n * g.c_in * g.h * g.w).map_err(cuda_err(op))?;
    if g.n * g.c_in * g.h * g.w > 0 && ohw > 0 {
        let chunk = chunk_images(g);
        let mut i0 = 0;
        while i0 < g.n {
            let i1 = (i0 + chunk).min(g.n);
            let mut gcol = backend.alloc::<f32>(kc::col_len(g, i1 - i0)).map_err(cuda_err(op))?;
            for gi in 0..g.groups {
                // gcol[i][gi] (kg x ohw) = W[gi]^T (kg x cg) . gy[i][gi] (cg x ohw)
                let cfg = GemmConfig {
                    transa: true,
                    batch: i1 - i0,
                    lda: kg,
                    stride_a: 0,
                    offset_a: gi * cg * kg,
                    ldb: ohw,
                    stride_b: g.c_out * ohw,
                    offset_b: i0 * g.c_out * ohw + gi * cg * ohw,
                    ldc: ohw,
                    stride_c: k * ohw,
                    offset_c: gi * kg * ohw,
                    ..GemmConfig::dense(kg, ohw, cg)
                };
                gemm(backend, &cfg, wb, gyb, &mut gcol).map_err(cuda_err(op))?;
            }
            kc::col2im_f32(backend, g, &gcol, i0..i1, &mut gx).map_err(cuda_err(op))?;
            i0 = i1;
        }
    }
    wrap_f32(gx, backend, &[g.n, g.c_in, g.h, g.w], gy, w.dtype())
}

/// The weight gradient `[c_out, c_in / groups, kh, kw]` of a conv2d from its input and `grad_out`.
pub(crate) fn conv2d_backward_weight(op: &'static str, x: &Tensor, gy: &Tensor, g: &Conv2dGeom) -> Result<Tensor> {
    check_f32_compute(op, x)?;
    let (xd, gyd) = (x.cuda_f32()?, gy.cuda_f32()?);
    let (_, backend) = xd.cuda_parts(op)?;
    let (xb, gyb) = (xd.cuda_typed::<f32>(op)?, gyd.cuda_typed::<f32>(op)?);
    let ohw = g.out_h() * g.out_w();
    let k = kc::col_rows(g);
    let (cg, kg) = (g.c_out / g.groups, k / g.groups);
    let mut gw = backend.zeros::<f32>(g.c_out * kg).map_err(cuda_err(op))?;
    if g.c_out * kg > 0 && g.n * ohw > 0 {
        let chunk = chunk_images(g);
        let mut i0 = 0;
        while i0 < g.n {
            let i1 = (i0 + chunk).min(g.n);
            let mut col = backend.alloc::<f32>(kc::col_len(g, i1 - i0)).map_err(cuda_err(op))?;
            kc::im2col_f32(backend, g, xb, i0..i1, &mut col).map_err(cuda_err(op))?;
            for z in 0..i1 - i0 {
                for gi in 0..g.groups {
                    // dW[gi] (cg x kg) += gy[i][gi] (cg x ohw) . col[i][gi]^T (ohw x kg)
                    let cfg = GemmConfig {
                        transb: true,
                        beta: 1.0,
                        lda: ohw,
                        offset_a: (i0 + z) * g.c_out * ohw + gi * cg * ohw,
                        ldb: ohw,
                        offset_b: z * k * ohw + gi * kg * ohw,
                        ldc: kg,
                        offset_c: gi * cg * kg,
                        ..GemmConfig::dense(cg, kg, ohw)
                    };
                    gemm(backend, &cfg, gyb, &col, &mut gw).map_err(cuda_err(op))?;
                }
            }
            i0 = i1;
        }
    }
    wrap_f32(gw, backend, &[g.c_out, g.c_in / g.groups, g.kh, g.kw], x, x.dtype())
}

// ---------------------------------------------------------------------------------------------
// Pooling (`kernels/cuda/pool.cu`): max pooling with argmax indices and average pooling, forward
// and backward, computed in f32.
// ---------------------------------------------------------------------------------------------

use stapes_kernels::cpu::pool::Pool2dGeom;
use stapes_kernels::cuda::pool as kp;

/// `max_pool2d_with_indices`: the pooled values and the flat `h * w` argmax of each window.
pub(crate) fn max_pool2d(op: &'static str, x: &Tensor, g: &Pool2dGeom) -> Result<(Tensor, Tensor)> {
    check_f32_compute(op, x)?;
    let xd = x.cuda_f32()?;
    let (_, backend) = xd.cuda_parts(op)?;
    let shape = [g.n, g.c, g.out_h(), g.out_w()];
    let n_out: usize = shape.iter().product();
    let mut out = backend.alloc::<f32>(n_out).map_err(cuda_err(op))?;
    let mut idx = backend.zeros::<i64>(n_out).map_err(cuda_err(op))?;
    kp::max_pool2d_forward_f32(backend, g, xd.cuda_typed::<f32>(op)?, &mut out, &mut idx).map_err(cuda_err(op))?;
    let indices = Tensor::from_cuda_buf(super::CudaBuf::I64(idx), backend.clone(), shape.to_vec(), *x.device());
    Ok((wrap_f32(out, backend, &shape, x, x.dtype())?, indices))
}

/// The input gradient of max pooling: each window's gradient goes to its argmax.
pub(crate) fn max_pool2d_backward(
    op: &'static str,
    gy: &Tensor,
    indices: &Tensor,
    input_dims: &[usize],
    g: &Pool2dGeom,
) -> Result<Tensor> {
    check_f32_compute(op, gy)?;
    gy.check_same(indices, op, false)?;
    if indices.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype: indices.dtype(), msg: "indices must be i64" });
    }
    let (gyd, idd) = (gy.cuda_f32()?, indices.cuda_exact()?);
    let (_, backend) = gyd.cuda_parts(op)?;
    let mut gx = backend.zeros::<f32>(input_dims.iter().product()).map_err(cuda_err(op))?;
    kp::max_pool2d_backward_f32(backend, g, gyd.cuda_typed::<f32>(op)?, idd.cuda_typed::<i64>(op)?, &mut gx)
        .map_err(cuda_err(op))?;
    wrap_f32(gx, backend, input_dims, gy, gy.dtype())
}

/// Average pooling forward.
pub(crate) fn avg_pool2d(op: &'static str, x: &Tensor, g: &Pool2dGeom) -> Result<Tensor> {
    check_f32_compute(op, x)?;
    let xd = x.cuda_f32()?;
    let (_, backend) = xd.cuda_parts(op)?;
    let shape = [g.n, g.c, g.out_h(), g.out_w()];
    let mut out = backend.zeros::<f32>(shape.iter().product()).map_err(cuda_err(op))?;
    kp::avg_pool2d_forward_f32(backend, g, xd.cuda_typed::<f32>(op)?, &mut out).map_err(cuda_err(op))?;
    wrap_f32(out, backend, &shape, x, x.dtype())
}

/// Average pooling backward.
pub(crate) fn avg_pool2d_backward(
    op: &'static str,
    gy: &Tensor,
    input_dims: &[usize],
    g: &Pool2dGeom,
) -> Result<Tensor> {
    check_f32_compute(op, gy)?;
    let gyd = gy.cuda_f32()?;
    let (_, backend) = gyd.cuda_parts(op)?;
    let mut gx = backend.zeros::<f32>(input_dims.iter().product()).map_err(cuda_err(op))?;
    kp::avg_pool2d_backward_f32(backend, g, gyd.cuda_typed::<f32>(op)?, &mut gx).map_err(cuda_err(op))?;
    wrap_f32(gx, backend, input_dims, gy, gy.dtype())
}
