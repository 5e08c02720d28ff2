//! Optimizer updates of parameters on a CUDA device, one fused kernel per parameter
//! (`kernels/cuda/optim.cu`). `stapes-nn`'s optimizers call these for CUDA parameters; the
//! state tensors stay on the device.

use super::{cuda_buf_dispatch, cuda_err, CudaBuf};
use crate::{DType, Error, Result, Tensor, WithDType};
pub use stapes_kernels::cuda::optim::{AdamScalars, SgdScalars};

fn check(op: &'static str, p: &Tensor, others: &[(&str, &Tensor)]) -> Result<()> {
    if !p.device().is_cuda() {
        return Err(Error::invalid(op, format!("expected a parameter on a CUDA device, got one on {}", p.device())));
    }
    if !matches!(p.dtype(), DType::F32 | DType::F64) {
        return Err(Error::UnsupportedDType { op, dtype: p.dtype(), msg: "updates compute in f32 or f64" });
    }
    for (name, t) in others {
        p.check_same(t, op, true)?;
        if t.dims() != p.dims() {
            return Err(Error::shape(op, format!("{name} has shape {:?}, the parameter {:?}", t.dims(), p.dims())));
        }
    }
    Ok(())
}

fn wrap(buf: CudaBuf, like: &Tensor) -> Result<Tensor> {
    let (_, backend) = like.cuda_parts("optimizer step")?;
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), like.shape().clone(), *like.device()))
}

/// One Adam/AdamW step: the new parameter, first and second moments, and (with AMSGrad) the
/// running maximum. `p`, `g` and the state share the compute dtype (f32 or f64) and shape.
pub fn adam_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    vmax: Option<&Tensor>,
    s: &AdamScalars,
) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
    const OP: &str = "Adam::step";
    let mut others = vec![("grad", g), ("exp_avg", m), ("exp_avg_sq", v)];
    if let Some(x) = vmax {
        others.push(("max_exp_avg_sq", x));
    }
    check(OP, p, &others)?;
    if s.amsgrad != vmax.is_some() {
        return Err(Error::invalid(OP, "max_exp_avg_sq must be given exactly when amsgrad is on"));
    }
    let (p, g, m, v) = (p.cuda_exact()?, g.cuda_exact()?, m.cuda_exact()?, v.cuda_exact()?);
    let vmax = vmax.map(|x| x.cuda_exact()).transpose()?;
    let (ps, backend) = p.cuda_parts(OP)?;
    let n = p.elem_count();
    let (np, nm, nv, nx) = cuda_buf_dispatch!(&ps.buf, |pb: T| {
        let (gb, mb, vb) = (g.cuda_typed::<T>(OP)?, m.cuda_typed::<T>(OP)?, v.cuda_typed::<T>(OP)?);
        let none = backend.zeros::<T>(0).map_err(cuda_err(OP))?;
        let xb = match &vmax {
            Some(x) => x.cuda_typed::<T>(OP)?,
            None => &none,
        };
        let alloc = |len: usize| backend.alloc::<T>(len).map_err(cuda_err(OP));
        let (mut op_, mut om, mut ov) = (alloc(n)?, alloc(n)?, alloc(n)?);
        let mut ox = alloc(if s.amsgrad { n } else { 0 })?;
        stapes_kernels::cuda::optim::adam_step(
            backend,
            n,
            s,
            (pb, gb, mb, vb, xb),
            &mut op_,
            &mut om,
            &mut ov,
            &mut ox,
        )
        .map_err(cuda_err(OP))?;
        (T::into_cuda(op_), T::into_cuda(om), T::into_cuda(ov), s.amsgrad.then(|| T::into_cuda(ox)))
    });
    Ok((wrap(np, &p)?, wrap(nm, &p)?, wrap(nv, &p)?, nx.map(|b| wrap(b, &p)).transpose()?))
}

/// One SGD step: the new parameter and (with momentum) the new momentum buffer. `b` is the
/// previous buffer (`None` on the first momentum step, when the buffer starts as the gradient).
pub fn sgd_step(p: &Tensor, g: &Tensor, b: Option<&Tensor>, s: &SgdScalars) -> Result<(Tensor, Option<Tensor>)> {
    const OP: &str = "Sgd::step";
    let mut others = vec![("grad", g)];
    if let Some(b) = b {
        others.push(("momentum_buffer", b));
    }
    check(OP, p, &others)?;
    if s.use_momentum && !s.first && b.is_none() {
        return Err(Error::invalid(OP, "a momentum step after the first needs the momentum buffer"));
    }
    let (p, g) = (p.cuda_exact()?, g.cuda_exact()?);
    let b = b.map(|b| b.cuda_exact()).transpose()?;
    let (ps, backend) = p.cuda_parts(OP)?;
    let n = p.elem_count();
    let (np, nb) = cuda_buf_dispatch!(&ps.buf, |pb: T| {
        let gb = g.cuda_typed::<T>(OP)?;
        let none = backend.zeros::<T>(0).map_err(cuda_err(OP))?;
        let bb = match &b {
            Some(b) if !s.first => b.cuda_typed::<T>(OP)?,
            _ => &none,
        };
        let mut op_ = backend.alloc::<T>(n).map_err(cuda_err(OP))?;
        let mut ob = backend.alloc::<T>(if s.use_momentum { n } else { 0 }).map_err(cuda_err(OP))?;
        stapes_kernels::cuda::optim::sgd_step(backend, n, s, (pb, gb, bb), &mut op_, &mut ob).map_err(cuda_err(OP))?;
        (T::into_cuda(op_), s.use_momentum.then(|| T::into_cuda(ob)))
    });
    Ok((wrap(np, &p)?, nb.map(|b| wrap(b, &p)).transpose()?))
}
