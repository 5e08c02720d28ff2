//! Optimizers with PyTorch's update rules: [`Sgd`] (momentum, dampening, Nesterov, weight
//! decay, maximize) and [`Adam`] (bias corrections, L2 weight decay or AdamW's decoupled weight
//! decay, AMSGrad), behind the common [`Optimizer`] trait.
//!
//! An optimizer owns handles to the parameters it updates (`module.parameters()`), one
//! parameter group (every parameter shares the hyper-parameters). [`Optimizer::step`] reads
//! each parameter's gradient and replaces its value; parameters without a gradient are skipped
//! and get no state, as in PyTorch. The per-element update runs in one fused pass over
//! contiguous data, in chunks on the rayon pool, and follows the order of the floating-point
//! operations of PyTorch's single-tensor path (`torch/optim/sgd.py`, `adam.py`, used on the
//! CPU), each op rounding to the compute type, so results agree with PyTorch to the rounding of
//! that type: `f32` for f32, f16 and bf16 parameters (the half types are widened, updated and
//! rounded back; their optimizer state stays in f32), `f64` for f64 parameters. (PyTorch's
//! vectorised kernels fuse some multiply-adds; stapes does not, which can differ in the last
//! bit of single steps.)
//!
//! The state (moment buffers, step counts, hyper-parameters) is saved with
//! [`Optimizer::state_dict`] as tensors named like PyTorch's (`state.{i}.exp_avg`,
//! `state.{i}.exp_avg_sq`, `state.{i}.max_exp_avg_sq`, `state.{i}.momentum_buffer`, `i` = the
//! parameter's index) plus a JSON value; [`Optimizer::load_state_dict`] restores it, and a run
//! continued after a save and load is bit-identical to an uninterrupted one.
//!
//! ```
//! use stapes_nn::layers::Linear;
//! use stapes_nn::optim::{Adam, AdamConfig, Optimizer};
//! use stapes_nn::{Forward, Module};
//! use stapes_autograd::Var;
//! use stapes_tensor::{DType, Device, Tensor};
//!
//! let model = Linear::new(3, 1, true)?;
//! let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 1e-2, ..AdamConfig::adamw() })?;
//! let x = Var::constant(Tensor::ones([4, 3], DType::F32, &Device::Cpu)?);
//! for _ in 0..3 {
//!     opt.zero_grad();
//!     let loss = model.forward(&x)?.sqr()?.mean_all()?;
//!     loss.backward()?;
//!     opt.step()?;
//! }
//! let (tensors, meta) = opt.state_dict()?;
//! assert!(tensors.contains_key("state.0.exp_avg"));
//! assert_eq!(meta["state"]["0"]["step"], 3);
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

mod adam;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use sgd::{Sgd, SgdConfig};

use crate::module::Param;
use crate::schedule::LrSchedule;
use rayon::prelude::*;
use serde_json::Value;
use stapes_tensor::{DType, Error, Result, Storage, Tensor, WithDType};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// An optimizer over one group of parameters.
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient.
    fn step(&mut self) -> Result<()>;
    /// The parameters, in the order their state is indexed.
    fn params(&self) -> &[Param];
    /// Clears every parameter's gradient (PyTorch's default `set_to_none=True`).
    fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (for the next [`Optimizer::step`]).
    fn set_lr(&mut self, lr: f64);
    /// The momentum: SGD's `momentum`, Adam's `beta1`.
    fn momentum(&self) -> f64;
    /// Sets the momentum (SGD's `momentum`, Adam's `beta1`), as a cycling schedule does.
    fn set_momentum(&mut self, momentum: f64);
    /// Takes the learning rate (and the momentum, if the schedule cycles it) from `schedule`;
    /// call before each `step`, then advance the schedule.
    fn apply_schedule(&mut self, schedule: &dyn LrSchedule) {
        self.set_lr(schedule.lr());
        if let Some(m) = schedule.momentum() {
            self.set_momentum(m);
        }
    }
    /// The state: per-parameter tensors by name (`state.{i}.exp_avg`, ...) and a JSON value
    /// with the optimizer's name, its hyper-parameters (`param_groups`) and per-parameter step
    /// counts (`state`).
    fn state_dict(&self) -> Result<(BTreeMap<String, Tensor>, Value)>;
    /// Restores a state saved by [`Optimizer::state_dict`] from an optimizer of the same kind
    /// over parameters of the same shapes: hyper-parameters and per-parameter state. Fails,
    /// changing nothing, on a different kind, parameter count, shape or dtype, or a missing or
    /// unexpected entry.
    fn load_state_dict(&mut self, tensors: &BTreeMap<String, Tensor>, meta: &Value) -> Result<()>;
}

// ------------------------------------------------------------------------------------------------
// Compute types and buffers
// ------------------------------------------------------------------------------------------------

/// A float type the update computes in: `f32` (f16, bf16 and f32 parameters) or `f64`.
pub(crate) trait Real:
    WithDType
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// Rounds an `f64` hyper-parameter to this type (as PyTorch casts a Python scalar).
    fn of(v: f64) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn is_nan(self) -> bool;
    /// The state buffer of this type, or an error naming the mismatch.
    fn buf_mut<'a>(b: &'a mut Buf, op: &'static str) -> Result<&'a mut Vec<Self>>;
    /// Wraps a vector as a state buffer.
    fn wrap(v: Vec<Self>) -> Buf;
}

macro_rules! real {
    ($t:ty, $v:ident) => {
        impl Real for $t {
            #[inline]
            fn of(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn buf_mut<'a>(b: &'a mut Buf, op: &'static str) -> Result<&'a mut Vec<Self>> {
                match b {
                    Buf::$v(v) => Ok(v),
                    other => Err(Error::DTypeMismatch { op, lhs: other.dtype(), rhs: <$t>::DTYPE }),
                }
            }
            fn wrap(v: Vec<Self>) -> Buf {
                Buf::$v(v)
            }
        }
    };
}
real!(f32, F32);
real!(f64, F64);

/// One per-element state buffer, in the compute type of its parameter: host memory for CPU
/// parameters, a tensor on the parameter's device for CUDA parameters.
#[derive(Clone, Debug)]
pub(crate) enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// State of a parameter on a CUDA device (f32 or f64), updated by fused kernels.
    Dev(Tensor),
}

impl Buf {
    fn dtype(&self) -> DType {
        match self {
            Buf::F32(_) => DType::F32,
            Buf::F64(_) => DType::F64,
            Buf::Dev(t) => t.dtype(),
        }
    }
    /// A host tensor of `dims` holding a copy of the buffer (device state is downloaded: saved
    /// state lives in files).
    pub(crate) fn to_tensor(&self, dims: &[usize]) -> Result<Tensor> {
        let dev = stapes_tensor::Device::Cpu;
        match self {
            Buf::F32(v) => Tensor::from_slice(v, dims.to_vec(), &dev),
            Buf::F64(v) => Tensor::from_slice(v, dims.to_vec(), &dev),
            Buf::Dev(t) => t.to_device(&dev),
        }
    }
    /// The device tensor of a CUDA parameter's state, or an error when the state is on the host
    /// (the parameter moved between devices after it was stepped).
    pub(crate) fn dev(&self, op: &'static str, i: usize) -> Result<&Tensor> {
        match self {
            Buf::Dev(t) => Ok(t),
            _ => Err(Error::invalid(
                op,
                format!("parameter {i} is on a CUDA device but its optimizer state is in host memory (the parameter moved after it was stepped)"),
            )),
        }
    }
    /// A buffer for parameter `i` (`p`) from a saved tensor, checked for shape and dtype.
    pub(crate) fn from_tensor(op: &'static str, name: &str, t: &Tensor, p: &Param) -> Result<Buf> {
        if t.dims() != p.dims().as_slice() {
            return Err(Error::shape(
                op,
                format!("{name} has shape {:?}, the parameter has shape {:?}", t.dims(), p.dims()),
            ));
        }
        let want = compute_dtype(op, p.dtype())?;
        if t.dtype() != want {
            return Err(Error::invalid(
                op,
                format!("{name} has dtype {}, expected {want} for a {} parameter", t.dtype(), p.dtype()),
            ));
        }
        if p.tensor().device().is_cuda() {
            return Ok(Buf::Dev(t.to_device(p.tensor().device())?));
        }
        Ok(match want {
            DType::F64 => Buf::F64(t.to_vec::<f64>()?),
            _ => Buf::F32(t.to_vec::<f32>()?),
        })
    }
}

/// The compute dtype for a parameter dtype (f64 for f64, f32 for the other float types).
pub(crate) fn compute_dtype(op: &'static str, dtype: DType) -> Result<DType> {
    match dtype {
        DType::F64 => Ok(DType::F64),
        DType::F32 | DType::F16 | DType::BF16 => Ok(DType::F32),
        d => Err(Error::UnsupportedDType { op, dtype: d, msg: "optimizers update floating-point parameters" }),
    }
}

/// The elements of `t` in the compute type `T`: borrowed from the storage when `t` is
/// contiguous and already of type `T`, converted otherwise.
pub(crate) fn compute_slice<T: Real>(t: &Tensor) -> Result<Cow<'_, [T]>> {
    if t.device().is_cuda() {
        // The optimizers' update loops are CPU code; a CUDA parameter must not be updated through
        // a silent round trip to the host (nor come back on the CPU).
        return Err(Error::NoCudaKernel {
            op: "optimizer step",
            device: *t.device(),
            location: format!("{}:{}", file!(), line!()),
        });
    }
    if t.dtype() == T::DTYPE && t.is_contiguous() {
        if let Storage::Cpu(s) = t.storage() {
            if let Some(data) = T::storage_slice(s) {
                let off = t.layout().offset();
                return Ok(Cow::Borrowed(&data[off..off + t.elem_count()]));
            }
        }
    }
    Ok(Cow::Owned(t.to_dtype(T::DTYPE)?.to_vec::<T>()?))
}

/// A CUDA parameter and its gradient in the compute dtype `cd` (cast on the device if needed).
pub(crate) fn device_operands(p: &Param, g: &Tensor, cd: DType) -> Result<(Tensor, Tensor)> {
    let pt = p.tensor();
    let pc = if pt.dtype() == cd { pt } else { pt.to_dtype(cd)? };
    let gc = if g.dtype() == cd { g.clone() } else { g.to_dtype(cd)? };
    Ok((pc, gc))
}

/// Stores a CUDA parameter's new value (compute dtype), rounded to the parameter's dtype.
pub(crate) fn write_device_param(p: &Param, t: Tensor) -> Result<()> {
    let t = if t.dtype() == p.dtype() { t } else { t.to_dtype(p.dtype())? };
    p.set_tensor(t)
}

/// `x` rounded to the compute dtype, as the CPU loops' `T::of` rounds hyper-parameters.
pub(crate) fn round_to(cd: DType, x: f64) -> f64 {
    if cd == DType::F64 {
        x
    } else {
        x as f32 as f64
    }
}

/// Stores `data` (the compute type) as `p`'s new value, rounding to `p`'s dtype.
pub(crate) fn write_param<T: Real>(p: &Param, data: Vec<T>) -> Result<()> {
    let t = Tensor::from_cpu_storage(T::into_storage(data), p.dims())?;
    let t = if p.dtype() == T::DTYPE { t } else { t.to_dtype(p.dtype())? };
    p.set_tensor(t)
}

/// The gradient of `p`, checked against the parameter's shape (`None`: no gradient).
pub(crate) fn checked_grad(op: &'static str, i: usize, p: &Param) -> Result<Option<Tensor>> {
    let Some(g) = p.grad() else { return Ok(None) };
    if g.dims() != p.dims().as_slice() {
        return Err(Error::shape(
            op,
            format!("the gradient of parameter {i} has shape {:?}, the parameter {:?}", g.dims(), p.dims()),
        ));
    }
    Ok(Some(g))
}

/// `b` in chunks of [`CHUNK`], or as many empty slices as `n` elements make chunks when `b` is
/// empty (an unused buffer).
fn split_chunks<T>(b: &mut [T], n: usize) -> Vec<&mut [T]> {
    if b.is_empty() {
        (0..n.div_ceil(CHUNK)).map(|_| <&mut [T]>::default()).collect()
    } else {
        b.chunks_mut(CHUNK).collect()
    }
}

/// Elements per parallel chunk of a fused update.
pub(crate) const CHUNK: usize = 1 << 15;

/// Runs `f(offset, param_chunk, bufs_chunks...)` over matching chunks of the new parameter
/// values `out` and up to three state buffers (empty buffers are passed as empty slices).
/// Each chunk of `out` is first filled from the same chunk of `old` (the current values), so
/// `f` updates it in place while it is in cache: one pass over memory instead of a copy of the
/// whole parameter followed by the update.
pub(crate) fn for_chunks<T: Real>(
    old: &[T],
    out: &mut [T],
    b0: &mut [T],
    b1: &mut [T],
    b2: &mut [T],
    f: impl Fn(usize, &mut [T], &mut [T], &mut [T], &mut [T]) + Sync + Send,
) {
    let n = out.len();
    assert_eq!(old.len(), n, "for_chunks: the old and new parameter values differ in length");
    let (c0, c1, c2) = (split_chunks(b0, n), split_chunks(b1, n), split_chunks(b2, n));
    out.par_chunks_mut(CHUNK).zip(c0).zip(c1).zip(c2).enumerate().for_each(|(k, (((o, x0), x1), x2))| {
        o.copy_from_slice(&old[k * CHUNK..k * CHUNK + o.len()]);
        f(k * CHUNK, o, x0, x1, x2);
    });
}

/// A buffer for a parameter's new values: from the tensor crate's CPU cache (the previous
/// step's parameter storage comes back there when it is replaced), so a step does not page-fault
/// fresh memory. Its contents are unspecified until [`for_chunks`] fills it.
pub(crate) fn new_param_buffer<T: Real>(n: usize) -> Vec<T> {
    stapes_tensor::alloc::take::<T>(n)
}

// ------------------------------------------------------------------------------------------------
// JSON helpers
// ------------------------------------------------------------------------------------------------

pub(crate) fn json_f64(op: &'static str, v: &Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| Error::invalid(op, format!("state: missing or non-numeric `{key}` in {v}")))
}

pub(crate) fn json_bool(op: &'static str, v: &Value, key: &str) -> Result<bool> {
    v.get(key)
        .and_then(Value::as_bool)
        .ok_or_else(|| Error::invalid(op, format!("state: missing boolean `{key}` in {v}")))
}

/// The single parameter group of a saved state, checked for the optimizer's name and the
/// parameter count.
pub(crate) fn saved_group<'a>(op: &'static str, meta: &'a Value, kind: &str, n_params: usize) -> Result<&'a Value> {
    let saved = meta.get("optimizer").and_then(Value::as_str).unwrap_or("<missing>");
    if saved != kind {
        return Err(Error::invalid(op, format!("the state is of a `{saved}` optimizer, this is `{kind}`")));
    }
    let groups = meta
        .get("param_groups")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid(op, "state: missing `param_groups`"))?;
    if groups.len() != 1 {
        return Err(Error::invalid(op, format!("state has {} parameter groups, expected 1", groups.len())));
    }
    let g = &groups[0];
    let n = g.get("params").and_then(Value::as_array).map(|a| a.len());
    if n != Some(n_params) {
        return Err(Error::invalid(
            op,
            format!(
                "state is for {} parameters, this optimizer has {n_params}",
                n.map_or("?".into(), |n| n.to_string())
            ),
        ));
    }
    Ok(g)
}

/// Splits `state.{i}.{name}` keys into per-parameter maps, rejecting anything else.
pub(crate) fn split_state_keys<'a>(
    op: &'static str,
    tensors: &'a BTreeMap<String, Tensor>,
    n_params: usize,
    known: &[&str],
) -> Result<BTreeMap<usize, BTreeMap<&'a str, &'a Tensor>>> {
    let mut out: BTreeMap<usize, BTreeMap<&str, &Tensor>> = BTreeMap::new();
    for (k, t) in tensors {
        let parsed = k.strip_prefix("state.").and_then(|r| r.split_once('.'));
        let Some((i, name)) = parsed.and_then(|(i, n)| i.parse::<usize>().ok().map(|i| (i, n))) else {
            return Err(Error::invalid(op, format!("unexpected state tensor `{k}` (expected state.<index>.<name>)")));
        };
        if i >= n_params || !known.contains(&name) {
            return Err(Error::invalid(
                op,
                format!("unexpected state tensor `{k}` ({n_params} parameters; known names {known:?})"),
            ));
        }
        out.entry(i).or_default().insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
