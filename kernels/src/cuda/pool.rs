//! Launch wrappers for `kernels/cuda/pool.cu`: 2-D max and average pooling over NCHW `f32`
//! planes, forward and backward. CPU reference: [`crate::cpu::pool`] (same [`Pool2dGeom`], same
//! window order, tie and NaN rules, argmax convention and average divisors).
//!
//! Every kernel is one thread per output (forward) or per input element (backward, which
//! gathers instead of scattering: deterministic, no atomics); nothing synchronises with the
//! host.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, KernelArg};
use super::CudaError;
pub use crate::cpu::pool::Pool2dGeom;

fn check(
    op: &'static str,
    g: &Pool2dGeom,
    input_len: usize,
    output_len: usize,
    argmax_len: Option<usize>,
) -> Result<(), CudaError> {
    let err = |message: String| Err(CudaError::Shape { op, message });
    if g.kh == 0 || g.kw == 0 || g.stride.0 == 0 || g.stride.1 == 0 || g.dilation.0 == 0 || g.dilation.1 == 0 {
        return err(format!("kernel size, stride and dilation must be positive ({g:?})"));
    }
    let (want_in, want_out) = (g.n * g.c * g.h * g.w, g.n * g.c * g.out_h() * g.out_w());
    if input_len != want_in || output_len != want_out || argmax_len.is_some_and(|l| l != want_out) {
        let am = argmax_len.map_or(String::new(), |l| format!(", argmax {l}"));
        return err(format!(
            "input has {input_len} elements (expected {want_in}), output {output_len} (expected {want_out}){am} \
             for {g:?}"
        ));
    }
    Ok(())
}

fn check_avg(op: &'static str, g: &Pool2dGeom) -> Result<(), CudaError> {
    if g.dilation != (1, 1) {
        return Err(CudaError::Shape { op, message: format!("average pooling has no dilation ({g:?})") });
    }
    Ok(())
}

/// `planes, h, w, oh, ow, kh, kw, sh, sw, ph, pw`: the kernels' common parameters.
fn geom_args<'a>(g: &Pool2dGeom) -> [KernelArg<'a>; 11] {
    let i = |v: usize| KernelArg::i64(v as i64);
    [
        KernelArg::u64((g.n * g.c) as u64),
        i(g.h),
        i(g.w),
        i(g.out_h()),
        i(g.out_w()),
        i(g.kh),
        i(g.kw),
        i(g.stride.0),
        i(g.stride.1),
        i(g.padding.0),
        i(g.padding.1),
    ]
}

/// Max pooling forward: `x` `[n, c, h, w]` → `out` and `argmax` `[n, c, oh, ow]` (the index of
/// each maximum inside its `h·w` plane, as PyTorch's `return_indices`).
pub fn max_pool2d_forward_f32(
    backend: &Backend,
    g: &Pool2dGeom,
    x: &DeviceBuffer<f32>,
    out: &mut DeviceBuffer<f32>,
    argmax: &mut DeviceBuffer<i64>,
) -> Result<(), CudaError> {
    check("cuda::pool::max_pool2d_forward_f32", g, x.len(), out.len(), Some(argmax.len()))?;
    let n = out.len();
    if n == 0 || x.is_empty() {
        return Ok(());
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10] = geom_args(g);
    let mut args = [
        KernelArg::input(x),
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        a8,
        a9,
        a10,
        KernelArg::i64(g.dilation.0 as i64),
        KernelArg::i64(g.dilation.1 as i64),
        KernelArg::output(out),
        KernelArg::output(argmax),
    ];
    // SAFETY: one thread per output element < n (out and argmax hold n); x is read at in-plane
    // coordinates of plane < n·c, inside its n·c·h·w elements (checked).
    unsafe { backend.launch("max_pool2d_forward_f32", launch_config(backend, n), &mut args) }
}

/// Max pooling backward: `grad_in` `[n, c, h, w]` (overwritten) receives each `grad_out`
/// element at its `argmax` position (from [`max_pool2d_forward_f32`]), summed where windows
/// share a maximum.
pub fn max_pool2d_backward_f32(
    backend: &Backend,
    g: &Pool2dGeom,
    grad_out: &DeviceBuffer<f32>,
    argmax: &DeviceBuffer<i64>,
    grad_in: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    check("cuda::pool::max_pool2d_backward_f32", g, grad_in.len(), grad_out.len(), Some(argmax.len()))?;
    let n = grad_in.len();
    if n == 0 {
        return Ok(());
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10] = geom_args(g);
    let mut args = [
        KernelArg::input(grad_out),
        KernelArg::input(argmax),
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        a8,
        a9,
        a10,
        KernelArg::i64(g.dilation.0 as i64),
        KernelArg::i64(g.dilation.1 as i64),
        KernelArg::output(grad_in),
    ];
    // SAFETY: one thread per input element < n; grad_out/argmax are read at outputs 0 <= oy < OH,
    // 0 <= ox < OW of the same plane: inside their n·c·OH·OW elements (checked).
    unsafe { backend.launch("max_pool2d_backward_f32", launch_config(backend, n), &mut args) }
}

/// Average pooling forward: `x` `[n, c, h, w]` → `out` `[n, c, oh, ow]`, with PyTorch's divisor
/// (`g.count_include_pad`).
pub fn avg_pool2d_forward_f32(
    backend: &Backend,
    g: &Pool2dGeom,
    x: &DeviceBuffer<f32>,
    out: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::pool::avg_pool2d_forward_f32";
    check(OP, g, x.len(), out.len(), None)?;
    check_avg(OP, g)?;
    let n = out.len();
    if n == 0 || x.is_empty() {
        return Ok(());
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10] = geom_args(g);
    let mut args = [
        KernelArg::input(x),
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        a8,
        a9,
        a10,
        KernelArg::u32(g.count_include_pad as u32),
        KernelArg::output(out),
    ];
    // SAFETY: as max_pool2d_forward_f32.
    unsafe { backend.launch("avg_pool2d_forward_f32", launch_config(backend, n), &mut args) }
}

/// Average pooling backward: `grad_in` `[n, c, h, w]` (overwritten) receives
/// `grad_out / divisor` from every window that covers each element.
pub fn avg_pool2d_backward_f32(
    backend: &Backend,
    g: &Pool2dGeom,
    grad_out: &DeviceBuffer<f32>,
    grad_in: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::pool::avg_pool2d_backward_f32";
    check(OP, g, grad_in.len(), grad_out.len(), None)?;
    check_avg(OP, g)?;
    let n = grad_in.len();
    if n == 0 {
        return Ok(());
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10] = geom_args(g);
    let mut args = [
        KernelArg::input(grad_out),
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        a8,
        a9,
        a10,
        KernelArg::u32(g.count_include_pad as u32),
        KernelArg::output(grad_in),
    ];
    // SAFETY: as max_pool2d_backward_f32.
    unsafe { backend.launch("avg_pool2d_backward_f32", launch_config(backend, n), &mut args) }
}
