//! Launch wrappers for `kernels/cuda/optim.cu`: fused, out-of-place Adam/AdamW and SGD updates of
//! one parameter on the device. CPU reference: the update loops of `stapes-nn`'s optimizers,
//! which these kernels restate operation by operation.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg};
use super::CudaError;

/// The per-step scalars of an Adam update, already derived from the hyper-parameters and the
/// step count as the CPU loop derives them (`w1 = 1 - beta1`, `bc2s = sqrt(1 - beta2^t)`, ...).
#[derive(Clone, Copy, Debug)]
pub struct AdamScalars {
    /// `1 - beta1`, the weight of the gradient in the first-moment lerp.
    pub w1: f64,
    /// `1 - w1` (that is, `beta1`), for the lerp's second form.
    pub one_minus_w1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// `1 - beta2`, the weight of `g²` in the second moment.
    pub c2: f64,
    /// `sqrt(1 - beta2^t)`, the square root of the second moment's bias correction.
    pub bc2s: f64,
    /// Added to the denominator, `sqrt(v) / bc2s + eps`.
    pub eps: f64,
    /// `-lr / (1 - beta1^t)`, the negated step size with the first moment's bias correction.
    pub neg_step: f64,
    /// `1 - lr * wd`, the factor on the parameter under decoupled weight decay (AdamW).
    pub decay: f64,
    /// Weight decay coefficient (coupled form: `g += wd * p`).
    pub wd: f64,
    /// Negate the gradient (maximise the objective).
    pub maximize: bool,
    /// Apply weight decay (`wd != 0`).
    pub weight_decay: bool,
    /// Decoupled weight decay (AdamW): `p *= decay` instead of `g += wd * p`.
    pub decoupled: bool,
    /// AMSGrad: divide by the running maximum of the second moment.
    pub amsgrad: bool,
    /// `|1 - beta1| < 0.5`: the lerp's first form.
    pub small_w1: bool,
}

/// The per-step scalars of an SGD update.
#[derive(Clone, Copy, Debug)]
pub struct SgdScalars {
    /// Weight decay coefficient: `g += wd * p`.
    pub wd: f64,
    /// Momentum factor: `b = b * momentum + damp1 * g`.
    pub momentum: f64,
    /// `1 - dampening`, the weight of the gradient in the momentum buffer.
    pub damp1: f64,
    /// `-lr`: the update is `p += neg_lr * g`.
    pub neg_lr: f64,
    /// Negate the gradient (maximise the objective).
    pub maximize: bool,
    /// Apply weight decay (`wd != 0`).
    pub weight_decay: bool,
    /// Keep a momentum buffer (`momentum != 0`).
    pub use_momentum: bool,
    /// Nesterov momentum: step along `g + momentum * b` instead of `b`.
    pub nesterov: bool,
    /// The momentum buffer starts as the gradient.
    pub first: bool,
}

/// The inputs of an Adam step: parameter, gradient, first and second moments, running maximum.
pub type AdamInputs<'a, T> =
    (&'a DeviceBuffer<T>, &'a DeviceBuffer<T>, &'a DeviceBuffer<T>, &'a DeviceBuffer<T>, &'a DeviceBuffer<T>);

fn check<T: DeviceElem>(op: &'static str, n: usize, lens: &[(&str, usize)]) -> Result<(), CudaError> {
    if T::NAME != "f32" && T::NAME != "f64" {
        return Err(CudaError::Shape { op, message: format!("updates compute in f32 or f64, not {}", T::NAME) });
    }
    for (name, len) in lens {
        if *len < n {
            return Err(CudaError::Shape { op, message: format!("{name} holds {len} elements, the parameter {n}") });
        }
    }
    Ok(())
}

/// One Adam/AdamW step over `n` elements: reads `p`, `g`, `m`, `v` (and `vmax` with AMSGrad),
/// writes `p_out`, `m_out`, `v_out` (and `vmax_out`). Without AMSGrad `vmax`/`vmax_out` may be
/// empty buffers; they are not touched.
#[allow(clippy::too_many_arguments)]
pub fn adam_step<T: DeviceElem>(
    backend: &Backend,
    n: usize,
    s: &AdamScalars,
    (p, g, m, v, vmax): AdamInputs<'_, T>,
    p_out: &mut DeviceBuffer<T>,
    m_out: &mut DeviceBuffer<T>,
    v_out: &mut DeviceBuffer<T>,
    vmax_out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::optim::adam_step";
    let mut lens = vec![("p", p.len()), ("g", g.len()), ("m", m.len()), ("v", v.len())];
    lens.extend([("p_out", p_out.len()), ("m_out", m_out.len()), ("v_out", v_out.len())]);
    if s.amsgrad {
        lens.extend([("vmax", vmax.len()), ("vmax_out", vmax_out.len())]);
    }
    check::<T>(OP, n, &lens)?;
    if n == 0 {
        return Ok(());
    }
    let flags = s.maximize as u32
        | (s.weight_decay as u32) << 1
        | (s.decoupled as u32) << 2
        | (s.amsgrad as u32) << 3
        | (!s.small_w1 as u32) << 4;
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(p),
        KernelArg::input(g),
        KernelArg::input(m),
        KernelArg::input(v),
        KernelArg::input(vmax),
        KernelArg::output(p_out),
        KernelArg::output(m_out),
        KernelArg::output(v_out),
        KernelArg::output(vmax_out),
        KernelArg::u64(n as u64),
        KernelArg::compute_float::<T>(s.w1),
        KernelArg::compute_float::<T>(s.one_minus_w1),
        KernelArg::compute_float::<T>(s.beta2),
        KernelArg::compute_float::<T>(s.c2),
        KernelArg::compute_float::<T>(s.bc2s),
        KernelArg::compute_float::<T>(s.eps),
        KernelArg::compute_float::<T>(s.neg_step),
        KernelArg::compute_float::<T>(s.decay),
        KernelArg::compute_float::<T>(s.wd),
        KernelArg::u32(flags),
    ];
    // SAFETY: adam_step_<T>(5 inputs, 4 outputs, n, 9 scalars of T, unsigned flags) touches
    // [0, n) of p, g, m, v and the outputs (lengths checked), and vmax/vmax_out only with the
    // AMSGrad flag (then checked too).
    unsafe { backend.launch(&format!("adam_step_{}", T::NAME), cfg, &mut args) }
}

/// One SGD step over `n` elements: reads `p`, `g` (and the momentum buffer `b` unless this is
/// its first step), writes `p_out` (and `b_out` with momentum).
pub fn sgd_step<T: DeviceElem>(
    backend: &Backend,
    n: usize,
    s: &SgdScalars,
    (p, g, b): (&DeviceBuffer<T>, &DeviceBuffer<T>, &DeviceBuffer<T>),
    p_out: &mut DeviceBuffer<T>,
    b_out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::optim::sgd_step";
    let mut lens = vec![("p", p.len()), ("g", g.len()), ("p_out", p_out.len())];
    if s.use_momentum {
        lens.push(("b_out", b_out.len()));
        if !s.first {
            lens.push(("b", b.len()));
        }
    }
    check::<T>(OP, n, &lens)?;
    if n == 0 {
        return Ok(());
    }
    let flags = s.maximize as u32
        | (s.weight_decay as u32) << 1
        | (s.use_momentum as u32) << 2
        | (s.nesterov as u32) << 3
        | (s.first as u32) << 4;
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(p),
        KernelArg::input(g),
        KernelArg::input(b),
        KernelArg::output(p_out),
        KernelArg::output(b_out),
        KernelArg::u64(n as u64),
        KernelArg::compute_float::<T>(s.wd),
        KernelArg::compute_float::<T>(s.momentum),
        KernelArg::compute_float::<T>(s.damp1),
        KernelArg::compute_float::<T>(s.neg_lr),
        KernelArg::u32(flags),
    ];
    // SAFETY: sgd_step_<T>(p, g, b, p_out, b_out, n, 4 scalars of T, flags) touches [0, n) of p, g,
    // p_out, and of b_out (and b unless first) only with momentum; all checked above.
    unsafe { backend.launch(&format!("sgd_step_{}", T::NAME), cfg, &mut args) }
}
