//! The element-wise ops of `ops/elementwise.rs` on CUDA devices: unary maps (with their scalar
//! parameters: powf, clamp, affine, add/mul_scalar), broadcasting binary maps, comparisons into
//! u8 masks, `where_cond` (and so `masked_fill`), and `all_finite`, through the kernels of
//! `kernels/cuda/ew.cu` (`stapes_kernels::cuda::ew`).
//!
//! The ops check their arguments (dtypes, devices, broadcastable shapes) before dispatching
//! here, so both devices report the same errors. Results are fresh dense tensors on the
//! operands' device. Binary ops, comparisons and `where` read views (transposes, narrows,
//! broadcasts) in place through per-operand strides, with no dense copy first; when every
//! operand turns out dense and of the output's shape, the binary ops take the contiguous kernel
//! (float4 loads for f32). Unary ops and `all_finite` take dense input (a view is copied first).

use super::{cuda_buf_dispatch, cuda_err, CudaBuf};
use crate::layout::Layout;
use crate::ops::elementwise::{BinaryOp, CmpOp, UnaryOp};
use crate::{DType, Error, Result, Tensor, WithDType};
use stapes_kernels::cuda::ew::{self as kew, Operand};

/// Runs `$body` with `$T` bound to the element type of a float dtype, else returns the CPU
/// path's error for a non-float dtype (the callers check first; this keeps the match total).
macro_rules! float_elem {
    ($dtype:expr, $op:expr, |$T:ident| $body:block) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::F16 => {
                type $T = half::f16;
                $body
            }
            DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            d => {
                return Err(Error::UnsupportedDType {
                    op: $op,
                    dtype: d,
                    msg: "expected a floating point tensor (f16, bf16, f32, f64)",
                })
            }
        }
    };
}

fn kernel_unary(op: UnaryOp) -> kew::UnaryOp {
    match op {
        UnaryOp::Neg => kew::UnaryOp::Neg,
        UnaryOp::Exp => kew::UnaryOp::Exp,
        UnaryOp::Log => kew::UnaryOp::Log,
        UnaryOp::Sqrt => kew::UnaryOp::Sqrt,
        UnaryOp::Rsqrt => kew::UnaryOp::Rsqrt,
        UnaryOp::Abs => kew::UnaryOp::Abs,
        UnaryOp::Relu => kew::UnaryOp::Relu,
        UnaryOp::Gelu => kew::UnaryOp::Gelu,
        UnaryOp::GeluTanh => kew::UnaryOp::GeluTanh,
        UnaryOp::Sigmoid => kew::UnaryOp::Sigmoid,
        UnaryOp::Tanh => kew::UnaryOp::Tanh,
        UnaryOp::Sin => kew::UnaryOp::Sin,
        UnaryOp::Cos => kew::UnaryOp::Cos,
        UnaryOp::Powf(e) => kew::UnaryOp::Powf(e),
        UnaryOp::Clamp(lo, hi) => kew::UnaryOp::Clamp(lo, hi),
        UnaryOp::Affine(m, a) => kew::UnaryOp::Affine(m, a),
        UnaryOp::Recip => kew::UnaryOp::Recip,
        UnaryOp::Sqr => kew::UnaryOp::Sqr,
        UnaryOp::Sign => kew::UnaryOp::Sign,
        UnaryOp::GeluGrad => kew::UnaryOp::GeluGrad,
        UnaryOp::GeluTanhGrad => kew::UnaryOp::GeluTanhGrad,
    }
}

fn kernel_binary(op: BinaryOp) -> kew::BinaryOp {
    match op {
        BinaryOp::Add => kew::BinaryOp::Add,
        BinaryOp::Sub => kew::BinaryOp::Sub,
        BinaryOp::Mul => kew::BinaryOp::Mul,
        BinaryOp::Div => kew::BinaryOp::Div,
        BinaryOp::Maximum => kew::BinaryOp::Maximum,
        BinaryOp::Minimum => kew::BinaryOp::Minimum,
        BinaryOp::Pow => kew::BinaryOp::Pow,
    }
}

fn kernel_cmp(op: CmpOp) -> kew::CmpOp {
    match op {
        CmpOp::Eq => kew::CmpOp::Eq,
        CmpOp::Ne => kew::CmpOp::Ne,
        CmpOp::Lt => kew::CmpOp::Lt,
        CmpOp::Le => kew::CmpOp::Le,
        CmpOp::Gt => kew::CmpOp::Gt,
        CmpOp::Ge => kew::CmpOp::Ge,
    }
}

/// The operands' layouts broadcast to `shape`, walked with as few dims as possible: dims of size
/// 1 dropped, and adjacent dims merged where every operand is contiguous across them.
struct Walk {
    dims: Vec<usize>,
    strides: Vec<Vec<usize>>,
    offsets: Vec<usize>,
}

impl Walk {
    fn new(op: &'static str, shape: &[usize], layouts: &[&Layout]) -> Result<Walk> {
        let mut bcast = Vec::with_capacity(layouts.len());
        for l in layouts {
            bcast.push(l.broadcast_as(op, shape)?);
        }
        let offsets = bcast.iter().map(|l| l.offset()).collect();
        let mut dims: Vec<usize> = Vec::with_capacity(shape.len());
        let mut strides: Vec<Vec<usize>> = vec![Vec::with_capacity(shape.len()); layouts.len()];
        for (d, &dim) in shape.iter().enumerate() {
            if dim == 1 {
                continue;
            }
            let mergeable = dims.last().is_some()
                && bcast.iter().zip(&strides).all(|(l, s)| s.last() == Some(&(l.strides()[d] * dim)));
            if mergeable {
                *dims.last_mut().expect("nonempty") *= dim;
                for (l, s) in bcast.iter().zip(strides.iter_mut()) {
                    *s.last_mut().expect("nonempty") = l.strides()[d];
                }
            } else {
                dims.push(dim);
                for (l, s) in bcast.iter().zip(strides.iter_mut()) {
                    s.push(l.strides()[d]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for s in strides.iter_mut() {
                s.push(0);
            }
        }
        Ok(Walk { dims, strides, offsets })
    }

    /// Whether every operand is read densely from element 0 (the contiguous kernels apply).
    fn is_dense(&self) -> bool {
        self.dims.len() == 1 && self.strides.iter().all(|s| s[0] == 1) && self.offsets.iter().all(|&o| o == 0)
    }

    fn operand<'a, T: stapes_kernels::cuda::DeviceElem>(
        &'a self,
        k: usize,
        buf: &'a stapes_kernels::cuda::DeviceBuffer<T>,
    ) -> Operand<'a, T> {
        Operand { buf, strides: &self.strides[k], offset: self.offsets[k] }
    }
}

/// The typed buffer of a CUDA tensor whose dtype the caller has matched to `T`.
fn typed<'a, T: WithDType>(op: &'static str, t: &'a Tensor) -> Result<&'a stapes_kernels::cuda::DeviceBuffer<T>> {
    t.cuda_typed::<T>(op)
}

/// [`Tensor::unary`] on a CUDA device.
pub(crate) fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let name = op.name();
    let dense = x.cuda_dense()?;
    let (_, backend) = dense.cuda_parts(name)?;
    let n = x.elem_count();
    let buf = float_elem!(x.dtype(), name, |T| {
        let src = typed::<T>(name, &dense)?;
        let mut out = backend.alloc::<T>(n).map_err(cuda_err(name))?;
        kew::unary(backend, kernel_unary(op), n, src, &mut out).map_err(cuda_err(name))?;
        T::into_cuda(out)
    });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), x.shape().clone(), *x.device()))
}

/// [`Tensor::binary`] on a CUDA device; `shape` is the broadcast shape, already checked.
pub(crate) fn binary(a: &Tensor, b: &Tensor, op: BinaryOp, shape: &[usize]) -> Result<Tensor> {
    let name = op.name();
    let (_, backend) = a.cuda_parts(name)?;
    let n: usize = shape.iter().product();
    let walk = Walk::new(name, shape, &[a.layout(), b.layout()])?;
    let kop = kernel_binary(op);
    let buf = float_elem!(a.dtype(), name, |T| {
        let (ab, bb) = (typed::<T>(name, a)?, typed::<T>(name, b)?);
        let mut out = backend.alloc::<T>(n).map_err(cuda_err(name))?;
        if walk.is_dense() {
            kew::binary(backend, kop, n, ab, bb, &mut out)
        } else {
            kew::binary_bcast(backend, kop, &walk.dims, walk.operand(0, ab), walk.operand(1, bb), &mut out)
        }
        .map_err(cuda_err(name))?;
        T::into_cuda(out)
    });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), shape, *a.device()))
}

/// [`Tensor::cmp`] on a CUDA device; `shape` is the broadcast shape, already checked.
pub(crate) fn cmp(a: &Tensor, b: &Tensor, op: CmpOp, shape: &[usize]) -> Result<Tensor> {
    let name = op.name();
    let (sa, backend) = a.cuda_parts(name)?;
    let n: usize = shape.iter().product();
    let walk = Walk::new(name, shape, &[a.layout(), b.layout()])?;
    let mut out = backend.alloc::<u8>(n).map_err(cuda_err(name))?;
    cuda_buf_dispatch!(&sa.buf, |ab: T| {
        let bb = typed::<T>(name, b)?;
        kew::cmp(backend, kernel_cmp(op), &walk.dims, walk.operand(0, ab), walk.operand(1, bb), &mut out)
            .map_err(cuda_err(name))?;
    });
    Ok(Tensor::from_cuda_buf(CudaBuf::U8(out), backend.clone(), shape, *a.device()))
}

/// [`Tensor::where_cond`] on a CUDA device; `shape` is the broadcast shape, already checked.
pub(crate) fn where_cond(mask: &Tensor, on_true: &Tensor, on_false: &Tensor, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "where_cond";
    let (st, backend) = on_true.cuda_parts(OP)?;
    let n: usize = shape.iter().product();
    let walk = Walk::new(OP, shape, &[mask.layout(), on_true.layout(), on_false.layout()])?;
    let mb = typed::<u8>(OP, mask)?;
    let buf = cuda_buf_dispatch!(&st.buf, |ab: T| {
        let bb = typed::<T>(OP, on_false)?;
        let mut out = backend.alloc::<T>(n).map_err(cuda_err(OP))?;
        kew::where_cond(backend, &walk.dims, walk.operand(0, mb), walk.operand(1, ab), walk.operand(2, bb), &mut out)
            .map_err(cuda_err(OP))?;
        T::into_cuda(out)
    });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), shape, *on_true.device()))
}

/// [`Tensor::all_finite`] on a CUDA device (a float tensor): one flag, downloaded.
pub(crate) fn all_finite(x: &Tensor) -> Result<bool> {
    const OP: &str = "all_finite";
    let dense = x.cuda_dense()?;
    let (_, backend) = dense.cuda_parts(OP)?;
    let n = x.elem_count();
    float_elem!(x.dtype(), OP, |T| {
        let src = typed::<T>(OP, &dense)?;
        kew::all_finite(backend, n, src).map_err(cuda_err(OP))
    })
}
