//! Automatic mixed precision: an autocast scope, like `torch.autocast`.
//!
//! Inside [`autocast`] (or while an [`AutocastGuard`] lives) on this thread, the `Var` ops
//! follow PyTorch's autocast op lists:
//! - **lower precision** (the scope's f16 or bf16): `matmul` and the convolutions (so `linear`,
//!   `conv1d`, `conv2d`), with their floating inputs cast to the scope's dtype;
//! - **f32**: `softmax`, `log_softmax`, `layer_norm`, `batch_norm`, `exp`, `log`, `powf`,
//!   `pow`, `recip`, `rsqrt`, and the reductions (`sum`, `sum_all`, `mean`, `mean_all`,
//!   `logsumexp`, `var`, `std`), with f16/bf16 inputs cast to f32 — the losses, built from
//!   these, therefore run in f32;
//! - **widest input type**: the binary ops (`add`, `sub`, `mul`, `div`, `maximum`, `minimum`,
//!   `pow`, `where_cond`) cast mixed floating inputs to the wider dtype (f16 with bf16 gives
//!   f32), PyTorch's type promotion. Outside autocast mixed dtypes stay an error.
//!
//! Every cast is a recorded `to_dtype`, so gradients flow back in each leaf's own dtype.
//! The state is per thread, like PyTorch's.

use crate::var::Var;
use stapes_tensor::{DType, Error, Result};
use std::cell::Cell;

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The lower-precision dtype of the autocast scope active on this thread, if any.
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Keeps an autocast scope (or, with `None`, a scope with autocast disabled) active while it
/// lives; the previous state is restored on drop.
pub struct AutocastGuard {
    prev: Option<DType>,
}

impl AutocastGuard {
    /// Enters a scope that runs matmul/conv in `dtype` (f16 or bf16), or leaves autocast for
    /// the scope with `None` (like `torch.autocast(enabled=False)`).
    pub fn new(dtype: Option<DType>) -> Result<AutocastGuard> {
        if let Some(d) = dtype {
            if !matches!(d, DType::F16 | DType::BF16) {
                return Err(Error::UnsupportedDType {
                    op: "autocast",
                    dtype: d,
                    msg: "autocast runs in f16 or bf16 (use no scope for f32)",
                });
            }
        }
        let prev = AUTOCAST.with(|a| a.replace(dtype));
        Ok(AutocastGuard { prev })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.prev));
    }
}

/// Runs `f` in an autocast scope with `dtype` (f16 or bf16).
pub fn autocast<R>(dtype: DType, f: impl FnOnce() -> R) -> Result<R> {
    let _g = AutocastGuard::new(Some(dtype))?;
    Ok(f())
}

/// For a lower-precision op: `v` cast to the scope's dtype when it is a floating tensor of
/// another dtype; `None` when nothing needs casting.
pub(crate) fn lower(v: &Var) -> Result<Option<Var>> {
    match autocast_dtype() {
        Some(d) if v.tensor().dtype().is_float() && v.tensor().dtype() != d => Ok(Some(v.to_dtype(d)?)),
        _ => Ok(None),
    }
}

/// For a lower-precision op over several inputs: all of them cast, or `None` when none needs it.
pub(crate) fn lower_all(vs: &[&Var]) -> Result<Option<Vec<Var>>> {
    let mut any = false;
    let mut out = Vec::with_capacity(vs.len());
    for v in vs {
        match lower(v)? {
            Some(c) => {
                any = true;
                out.push(c)
            }
            None => out.push((*v).clone()),
        }
    }
    Ok(if any { Some(out) } else { None })
}

/// For an f32 op: `v` cast to f32 when autocast is active and `v` is f16 or bf16.
pub(crate) fn full(v: &Var) -> Result<Option<Var>> {
    match autocast_dtype() {
        Some(_) if matches!(v.tensor().dtype(), DType::F16 | DType::BF16) => Ok(Some(v.to_dtype(DType::F32)?)),
        _ => Ok(None),
    }
}

/// For a normalisation (f32 op with an optional affine): input, weight and bias, each cast to
/// f32 when it is f16/bf16 under autocast; `None` when none needs casting.
pub(crate) fn full_norm(x: &Var, weight: Option<&Var>, bias: Option<&Var>) -> Result<Option<NormInputs>> {
    if autocast_dtype().is_none() {
        return Ok(None);
    }
    let (cx, cw, cb) = (full(x)?, weight.map(full).transpose()?.flatten(), bias.map(full).transpose()?.flatten());
    if cx.is_none() && cw.is_none() && cb.is_none() {
        return Ok(None);
    }
    Ok(Some((cx.unwrap_or_else(|| x.clone()), cw.or_else(|| weight.cloned()), cb.or_else(|| bias.cloned()))))
}

/// Input, weight and bias of a normalisation after [`full_norm`].
pub(crate) type NormInputs = (Var, Option<Var>, Option<Var>);

fn rank(d: DType) -> u8 {
    match d {
        DType::F16 | DType::BF16 => 1,
        DType::F32 => 2,
        DType::F64 => 3,
        _ => 0,
    }
}

/// For a binary op under autocast: both inputs cast to the wider floating dtype when they
/// differ; `None` otherwise (outside autocast, or same dtypes, or non-float operands).
pub(crate) fn promote(a: &Var, b: &Var) -> Result<Option<(Var, Var)>> {
    let (da, db) = (a.tensor().dtype(), b.tensor().dtype());
    if autocast_dtype().is_none() || da == db || !da.is_float() || !db.is_float() {
        return Ok(None);
    }
    let target = match rank(da).cmp(&rank(db)) {
        std::cmp::Ordering::Greater => da,
        std::cmp::Ordering::Less => db,
        std::cmp::Ordering::Equal => DType::F32, // f16 with bf16
    };
    let cast = |v: &Var| if v.tensor().dtype() == target { Ok(v.clone()) } else { v.to_dtype(target) };
    Ok(Some((cast(a)?, cast(b)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::{Device, Tensor};

    fn leaf(dims: &[usize], dtype: DType) -> Var {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect();
        Var::leaf(Tensor::from_vec(v, dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap())
    }

    #[test]
    fn op_lists_follow_pytorch() {
        let (x, w, b) = (leaf(&[4, 3], DType::F32), leaf(&[3, 5], DType::F32), leaf(&[5], DType::F32));
        let loss = autocast(DType::BF16, || {
            let h = x.matmul(&w).unwrap();
            assert_eq!(h.tensor().dtype(), DType::BF16);
            let h = h.add(&b).unwrap(); // bf16 + f32 promotes
            assert_eq!(h.tensor().dtype(), DType::F32);
            let h2 = x.matmul(&w).unwrap().log_softmax(1usize).unwrap();
            assert_eq!(h2.tensor().dtype(), DType::F32);
            let s = x.matmul(&w).unwrap().sum_all().unwrap();
            assert_eq!(s.tensor().dtype(), DType::F32);
            h.sum_all().unwrap().add(&h2.sum_all().unwrap()).unwrap().add(&s).unwrap()
        })
        .unwrap();
        assert_eq!(autocast_dtype(), None);
        loss.backward().unwrap();
        // Gradients come back in each leaf's own dtype.
        assert_eq!(x.grad().unwrap().dtype(), DType::F32);
        assert_eq!(w.grad().unwrap().dtype(), DType::F32);
        // Outside autocast, mixed dtypes are an error.
        let h = x.matmul(&w).unwrap();
        assert!(h.add(&leaf(&[5], DType::BF16)).is_err());
    }

    #[test]
    fn guard_nests_and_rejects_f32() {
        assert!(AutocastGuard::new(Some(DType::F32)).is_err());
        let _a = AutocastGuard::new(Some(DType::F16)).unwrap();
        {
            let _b = AutocastGuard::new(None).unwrap();
            assert_eq!(autocast_dtype(), None);
        }
        assert_eq!(autocast_dtype(), Some(DType::F16));
    }

    #[test]
    fn conv_and_norm_under_autocast() {
        let x = leaf(&[2, 3, 6, 6], DType::F32);
        let w = leaf(&[4, 3, 3, 3], DType::F32);
        let _g = AutocastGuard::new(Some(DType::BF16)).unwrap();
        let y = x.conv2d(&w, None, [1, 1], [1, 1], [1, 1], 1).unwrap();
        assert_eq!(y.tensor().dtype(), DType::BF16);
        let n = y.layer_norm(&[6], None, None, 1e-5).unwrap();
        assert_eq!(n.tensor().dtype(), DType::F32);
        n.sum_all().unwrap().backward().unwrap();
        assert_eq!(w.grad().unwrap().dtype(), DType::F32);
    }
}
