//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Both act on the gradients accumulated in [`Param`]s (replacing them with
//! [`Param::set_grad`]) and skip parameters without a gradient.

use crate::module::Param;
use crate::optim::compute_slice;
use rayon::prelude::*;
use stapes_tensor::{DType, Device, Error, Result, Tensor, WithDType};

/// The `p`-norm of `values` as `torch.linalg.vector_norm` defines it: `(Σ |x|^p)^(1/p)`, the
/// largest (`p = ∞`) or smallest (`p = -∞`) `|x|`, or the number of nonzero elements (`p = 0`).
fn vector_norm(values: impl Iterator<Item = f64>, p: f64) -> f64 {
    if p == f64::INFINITY {
        values.fold(0.0, |m, x| if x.abs() > m || x.is_nan() { x.abs() } else { m })
    } else if p == f64::NEG_INFINITY {
        values.fold(f64::INFINITY, |m, x| if x.abs() < m || x.is_nan() { x.abs() } else { m })
    } else if p == 0.0 {
        values.filter(|&x| x != 0.0).count() as f64
    } else if p == 1.0 {
        values.map(f64::abs).sum()
    } else if p == 2.0 {
        values.map(|x| x * x).sum::<f64>().sqrt()
    } else {
        values.map(|x| x.abs().powf(p)).sum::<f64>().powf(1.0 / p)
    }
}

/// Rounds `x` to `dtype` (where PyTorch's result is a tensor of that dtype).
fn round_to(x: f64, dtype: DType) -> Result<f64> {
    if dtype == DType::F64 {
        return Ok(x);
    }
    Tensor::full(x, (), dtype, &Device::Cpu)?.to_scalar_f64()
}

/// The dtype PyTorch promotes two float dtypes to.
fn promote(a: DType, b: DType) -> DType {
    use DType::*;
    match (a, b) {
        _ if a == b => a,
        (F64, _) | (_, F64) => F64,
        _ => F32,
    }
}

/// Clips the gradients of `params` so that their total norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`, and returns the total norm before clipping.
///
/// The total norm is the `norm_type`-norm of the per-parameter gradient norms (`2.0`,
/// `f64::INFINITY`, or any other `p`), each rounded to its gradient's dtype as PyTorch's
/// norm tensors are. Every gradient is then multiplied by `min(max_norm / (total + 1e-6), 1)`
/// (computed in the gradients' dtype). With `error_if_nonfinite`, a NaN or infinite total is
/// an error and the gradients are left alone. With no gradient at all, the result is 0.
pub fn clip_grad_norm(params: &[Param], max_norm: f64, norm_type: f64, error_if_nonfinite: bool) -> Result<f64> {
    const OP: &str = "clip_grad_norm";
    if norm_type.is_nan() {
        return Err(Error::invalid(OP, "norm_type must not be NaN"));
    }
    if max_norm.is_nan() {
        return Err(Error::invalid(OP, "max_norm must not be NaN"));
    }
    let grads: Vec<(Param, Tensor)> = params.iter().filter_map(|p| p.grad().map(|g| (p.clone(), g))).collect();
    if grads.is_empty() {
        return Ok(0.0);
    }
    // The per-gradient norms, each rounded to its gradient's dtype, and the promoted dtype.
    let (norms, dtype) = if grads.iter().any(|(_, g)| g.device().is_cuda()) {
        device_norms(&grads, norm_type)?
    } else {
        host_norms(&grads, norm_type)?
    };
    let total = round_to(vector_norm(norms.into_iter(), norm_type), dtype)?;
    if error_if_nonfinite && !total.is_finite() {
        return Err(Error::invalid(
            OP,
            format!(
                "the total norm of order {norm_type} of the gradients is {total}, so they cannot be clipped \
                 (pass error_if_nonfinite = false to clip anyway)"
            ),
        ));
    }
    let coef = round_to(max_norm / round_to(total + 1e-6, dtype)?, dtype)?.min(1.0);
    // PyTorch multiplies by the clamped coefficient even when it is 1, which changes nothing
    // (x · 1 = x), so the gradients are left as they are then.
    if coef < 1.0 || coef.is_nan() {
        for (p, g) in grads {
            p.set_grad(Some(scale(&g, coef)?));
        }
    }
    Ok(total)
}

/// The rounded norm of every host gradient, computed in parallel in f64, and the promoted dtype.
fn host_norms(grads: &[(Param, Tensor)], norm_type: f64) -> Result<(Vec<f64>, DType)> {
    const OP: &str = "clip_grad_norm";
    let mut norms = Vec::with_capacity(grads.len());
    let mut dtype = grads[0].1.dtype();
    for (_, g) in grads {
        let d = g.dtype();
        if !d.is_float() {
            return Err(Error::UnsupportedDType { op: OP, dtype: d, msg: "gradients must be floating point" });
        }
        let n = match (d, norm_type == 2.0) {
            (DType::F64, true) => l2_norm(&compute_slice::<f64>(g)?),
            (_, true) => l2_norm(&compute_slice::<f32>(g)?),
            (DType::F64, false) => vector_norm(compute_slice::<f64>(g)?.iter().copied(), norm_type),
            _ => vector_norm(compute_slice::<f32>(g)?.iter().map(|&x| x as f64), norm_type),
        };
        norms.push(round_to(n, d)?);
        dtype = promote(dtype, d);
    }
    Ok((norms, dtype))
}

/// The rounded norm of every gradient on a CUDA device: each reduced on the device (in f32, f64
/// for f64 gradients), all of them downloaded at once; and the promoted dtype.
fn device_norms(grads: &[(Param, Tensor)], norm_type: f64) -> Result<(Vec<f64>, DType)> {
    const OP: &str = "clip_grad_norm";
    let device = *grads[0].1.device();
    let mut dtype = grads[0].1.dtype();
    let mut norms = Vec::with_capacity(grads.len());
    for (_, g) in grads {
        if g.device() != &device {
            return Err(Error::DeviceMismatch { op: OP, lhs: device, rhs: *g.device() });
        }
        let d = g.dtype();
        if !d.is_float() {
            return Err(Error::UnsupportedDType { op: OP, dtype: d, msg: "gradients must be floating point" });
        }
        dtype = promote(dtype, d);
        let x = g.to_dtype(if d == DType::F64 { DType::F64 } else { DType::F32 })?.abs()?;
        let n = if norm_type == f64::INFINITY {
            let n = x.elem_count();
            x.reshape([n])?.max([0usize], false)?
        } else if norm_type == 2.0 {
            x.sqr()?.sum_all()?.sqrt()?
        } else {
            // the general p-norm on the device; 0 and -inf are rare enough to have no kernel
            if norm_type <= 0.0 {
                return Err(Error::NoCudaKernel {
                    op: OP,
                    device,
                    location: format!("norm_type {norm_type} ({}:{})", file!(), line!()),
                });
            }
            x.powf(norm_type)?.sum_all()?.powf(1.0 / norm_type)?
        };
        norms.push(n.to_dtype(DType::F64)?.reshape([1])?);
    }
    let refs: Vec<&Tensor> = norms.iter().collect();
    let per = Tensor::cat(&refs, 0)?.to_vec::<f64>()?; // one download
    let per = grads.iter().zip(per).map(|((_, g), n)| round_to(n, g.dtype())).collect::<Result<_>>()?;
    Ok((per, dtype))
}

/// Elements per parallel chunk of the norm and the scaling.
const CHUNK: usize = 1 << 15;

/// `sqrt(Σ x²)` accumulated in f64: chunks on the rayon pool, 8 independent partial sums per
/// chunk so the loop vectorises.
fn l2_norm<T: Copy + Into<f64> + Sync>(xs: &[T]) -> f64 {
    let sum_sq = |c: &[T]| {
        let mut acc = [0.0f64; 8];
        let mut it = c.chunks_exact(8);
        for b in &mut it {
            for k in 0..8 {
                let x: f64 = b[k].into();
                acc[k] += x * x;
            }
        }
        let tail: f64 = it.remainder().iter().map(|&x| x.into() * x.into()).sum();
        acc.iter().sum::<f64>() + tail
    };
    xs.par_chunks(CHUNK).map(sum_sq).sum::<f64>().sqrt()
}

/// `g · coef`, computed in `g`'s compute type (f64 for f64, f32 otherwise) and rounded back:
/// a device kernel on a GPU, else in parallel into a buffer from the tensor crate's CPU cache.
fn scale(g: &Tensor, coef: f64) -> Result<Tensor> {
    if g.device().is_cuda() {
        return g.mul_scalar(coef);
    }
    fn scaled<T: WithDType + std::ops::Mul<Output = T>>(xs: &[T], c: T) -> Vec<T> {
        let mut out = stapes_tensor::alloc::take::<T>(xs.len());
        out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = x * c;
            }
        });
        out
    }
    let dims = g.dims().to_vec();
    if g.dtype() == DType::F64 {
        return Tensor::from_vec(scaled(&compute_slice::<f64>(g)?, coef), dims, g.device());
    }
    let v = scaled(&compute_slice::<f32>(g)?, coef as f32);
    Tensor::from_vec(v, dims, g.device())?.to_dtype(g.dtype())
}

/// Clamps every gradient element into `[-clip_value, clip_value]`, as
/// `torch.nn.utils.clip_grad_value_` (NaN stays NaN). `clip_value` must be `>= 0`.
pub fn clip_grad_value(params: &[Param], clip_value: f64) -> Result<()> {
    const OP: &str = "clip_grad_value";
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::invalid(OP, format!("clip_value must be >= 0, got {clip_value}")));
    }
    for p in params {
        if let Some(g) = p.grad() {
            p.set_grad(Some(g.clamp(-clip_value, clip_value)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_with_grad(g: Vec<f32>) -> Param {
        let n = g.len();
        let p = Param::new(Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap());
        p.set_grad(Some(Tensor::from_vec(g, n, &Device::Cpu).unwrap()));
        p
    }

    #[test]
    fn clips_to_max_norm() {
        let ps = [
            param_with_grad(vec![3.0, 0.0]),
            param_with_grad(vec![4.0]),
            Param::new(Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()),
        ];
        let total = clip_grad_norm(&ps, 1.0, 2.0, true).unwrap();
        assert!((total - 5.0).abs() < 1e-6);
        let g0 = ps[0].grad().unwrap().to_vec::<f32>().unwrap();
        assert!((g0[0] - 0.6).abs() < 1e-6);
        assert!(ps[2].grad().is_none());
        let inf = clip_grad_norm(&ps, 10.0, f64::INFINITY, false).unwrap();
        assert!((inf - 0.8).abs() < 1e-6);
        // below max_norm: unchanged
        assert!((ps[1].grad().unwrap().to_vec::<f32>().unwrap()[0] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn nonfinite_is_an_error_when_asked() {
        let ps = [param_with_grad(vec![f32::NAN, 1.0])];
        let e = clip_grad_norm(&ps, 1.0, 2.0, true).unwrap_err().to_string();
        assert!(e.contains("NaN") && e.contains("clip_grad_norm"), "{e}");
        assert!(clip_grad_value(&ps, -1.0).is_err());
        clip_grad_value(&ps, 0.5).unwrap();
        let g = ps[0].grad().unwrap().to_vec::<f32>().unwrap();
        assert!(g[0].is_nan() && g[1] == 0.5);
    }
}
