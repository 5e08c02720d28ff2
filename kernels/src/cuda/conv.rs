//! Launch wrappers for `kernels/cuda/conv.cu`: im2col and col2im of a 2-D convolution and its
//! bias + activation epilogue, `f32`. The GEMMs between them are the caller's (cuBLAS on the
//! GPU); see `conv.cu` for the column layout and the products. CPU reference:
//! [`crate::cpu::conv`] (same [`Conv2dGeom`], same results as
//! [`conv2d_forward`](crate::cpu::conv::conv2d_forward),
//! [`conv2d_backward_input`](crate::cpu::conv::conv2d_backward_input),
//! [`conv2d_backward_weight`](crate::cpu::conv::conv2d_backward_weight) and
//! [`conv2d_backward_bias`](crate::cpu::conv::conv2d_backward_bias) once the GEMMs are done).
//!
//! The column kernels work on a range of images, so a caller can bound the workspace
//! ([`col_len`] floats); nothing synchronises with the host.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, KernelArg, LaunchConfig};
use super::reduce::row_launch_config;
use super::CudaError;
pub use crate::cpu::conv::Conv2dGeom;
use std::ops::Range;

/// The activation of the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// No activation: `y = y + bias`.
    Identity,
    /// ReLU: `y = max(y + bias, 0)`.
    Relu,
}

/// Rows of one image's column matrix: `c_in · kh · kw`.
pub fn col_rows(g: &Conv2dGeom) -> usize {
    g.c_in * g.kh * g.kw
}

/// Floats of the column matrix of `images` images: `images · c_in·kh·kw · oh·ow`.
pub fn col_len(g: &Conv2dGeom, images: usize) -> usize {
    images * col_rows(g) * g.out_h() * g.out_w()
}

fn check_geom(op: &'static str, g: &Conv2dGeom, images: &Range<usize>) -> Result<(), CudaError> {
    let bad = |m: &str| Err(CudaError::Shape { op, message: format!("{m} ({g:?})") });
    if g.groups == 0 || !g.c_in.is_multiple_of(g.groups) || !g.c_out.is_multiple_of(g.groups) {
        return bad("channels must be divisible by a positive number of groups");
    }
    if g.stride.0 == 0 || g.stride.1 == 0 || g.dilation.0 == 0 || g.dilation.1 == 0 || g.kh == 0 || g.kw == 0 {
        return bad("stride, dilation and kernel size must be positive");
    }
    if images.start > images.end || images.end > g.n {
        return bad(&format!("images {images:?} are not a range of the batch of {}", g.n));
    }
    Ok(())
}

fn geom_args<'a>(g: &Conv2dGeom) -> [KernelArg<'a>; 13] {
    let v = |x: usize| KernelArg::u64(x as u64);
    [
        v(g.c_in),
        v(g.h),
        v(g.w),
        v(g.kh),
        v(g.kw),
        v(g.stride.0),
        v(g.stride.1),
        v(g.padding.0),
        v(g.padding.1),
        v(g.dilation.0),
        v(g.dilation.1),
        v(g.out_h()),
        v(g.out_w()),
    ]
}

/// Positions each thread of im2col/col2im takes along a row, so the row's index decomposition
/// (64-bit divisions, once per row and thread) is spread over that many elements. (With one
/// position per thread, ncu on an H100 showed im2col compute-bound at 82% SM throughput and
/// 13% DRAM throughput, 58% of the conv forward's time.)
const POSITIONS_PER_THREAD: usize = 8;

/// The launch shape of im2col/col2im: `rows` rows (column rows, or input planes) over grid.y
/// (at most 65535 per pass), a row's `len` positions over grid.x, about
/// [`POSITIONS_PER_THREAD`] per thread; the emulator gets a small grid, so its tests walk both
/// grid-stride loops.
fn plane_grid(backend: &Backend, len: usize, rows: usize) -> LaunchConfig {
    let (x, y) = if backend.is_emulator() {
        (len.div_ceil(256).clamp(1, 2), rows.clamp(1, 3))
    } else {
        (len.div_ceil(256 * POSITIONS_PER_THREAD).max(1), rows.clamp(1, 65_535))
    };
    LaunchConfig { grid: (x as u32, y as u32, 1), block: (256, 1, 1), shared_mem_bytes: 0 }
}

/// The column matrices of `images` of `x` (`[n, c_in, h, w]`) into `col`
/// (`[images.len(), c_in·kh·kw, oh·ow]`, overwritten; exactly [`col_len`] floats).
pub fn im2col_f32(
    backend: &Backend,
    g: &Conv2dGeom,
    x: &DeviceBuffer<f32>,
    images: Range<usize>,
    col: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::conv::im2col_f32";
    check_geom(OP, g, &images)?;
    let count = images.end - images.start;
    let need = col_len(g, count);
    if x.len() != g.n * g.c_in * g.h * g.w || col.len() != need {
        let message = format!(
            "x has {} elements (expected n·c_in·h·w = {}), col {} (expected {need}) for {g:?}",
            x.len(),
            g.n * g.c_in * g.h * g.w,
            col.len()
        );
        return Err(CudaError::Shape { op: OP, message });
    }
    if need == 0 {
        return Ok(());
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12] = geom_args(g);
    let mut args = [
        KernelArg::input(x),
        KernelArg::u64(images.start as u64),
        KernelArg::u64(count as u64),
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
        a11,
        a12,
        KernelArg::output(col),
    ];
    let cfg = plane_grid(backend, g.out_h() * g.out_w(), count * col_rows(g));
    // SAFETY: row rr < images·K, position q < OHW: col[rr·OHW + q] < images·K·OHW (its length);
    // x is read only at in-image coordinates of images first..first + count <= n (checked),
    // inside its n·c_in·h·w elements.
    unsafe { backend.launch("im2col_f32", cfg, &mut args) }
}

/// The input gradient of `images` (rows of `grad_in`, `[n, c_in, h, w]`, overwritten there)
/// from their column gradients `col` (`[images.len(), c_in·kh·kw, oh·ow]`): the transpose of
/// [`im2col_f32`], summing (not atomically adding) every tap's contribution.
pub fn col2im_f32(
    backend: &Backend,
    g: &Conv2dGeom,
    col: &DeviceBuffer<f32>,
    images: Range<usize>,
    grad_in: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::conv::col2im_f32";
    check_geom(OP, g, &images)?;
    let count = images.end - images.start;
    let need = col_len(g, count);
    if grad_in.len() != g.n * g.c_in * g.h * g.w || col.len() != need {
        let message = format!(
            "grad_in has {} elements (expected n·c_in·h·w = {}), col {} (expected {need}) for {g:?}",
            grad_in.len(),
            g.n * g.c_in * g.h * g.w,
            col.len()
        );
        return Err(CudaError::Shape { op: OP, message });
    }
    let n = count * g.c_in * g.h * g.w;
    if n == 0 {
        return Ok(());
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12] = geom_args(g);
    let mut args = [
        KernelArg::input(col),
        KernelArg::u64(images.start as u64),
        KernelArg::u64(count as u64),
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
        a11,
        a12,
        KernelArg::output(grad_in),
    ];
    let cfg = plane_grid(backend, g.h * g.w, count * g.c_in);
    // SAFETY: grad_in is written for the count images from first (<= n, checked); col is read at
    // (img·K + r)·OHW + oy·OW + ox with 0 <= oy < OH, 0 <= ox < OW: inside its count·K·OHW floats
    // (with no output positions nothing is read and grad_in becomes 0).
    unsafe { backend.launch("col2im_f32", cfg, &mut args) }
}

fn check_ncs(op: &'static str, what: &str, len: usize, n: usize, c: usize, s: usize) -> Result<(), CudaError> {
    if len != n * c * s {
        let message = format!("{what} has {len} elements, expected [n={n}, c={c}, s={s}] = {}", n * c * s);
        return Err(CudaError::Shape { op, message });
    }
    Ok(())
}

/// The epilogue `y = act(y + bias[c])`, in place over `y` `[n, channels, s]` (`s = oh·ow`).
pub fn bias_act_f32(
    backend: &Backend,
    y: &mut DeviceBuffer<f32>,
    (n, channels, s): (usize, usize, usize),
    bias: Option<&DeviceBuffer<f32>>,
    act: Activation,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::conv::bias_act_f32";
    check_ncs(OP, "y", y.len(), n, channels, s)?;
    if let Some(b) = bias {
        check_ncs(OP, "bias", b.len(), 1, channels, 1)?;
    }
    let total = n * channels * s;
    if total == 0 || (bias.is_none() && act == Activation::Identity) {
        return Ok(());
    }
    // Without a bias the kernel never reads the pointer; y's own buffer cannot be passed twice,
    // so an empty buffer of the right backend (no allocation) stands in.
    let no_bias;
    let b = match bias {
        Some(b) => b,
        None => {
            no_bias = backend.zeros::<f32>(0)?;
            &no_bias
        }
    };
    let mut args = [
        KernelArg::output(y),
        KernelArg::u64(n as u64),
        KernelArg::u64(channels as u64),
        KernelArg::u64(s as u64),
        KernelArg::input(b),
        KernelArg::u32(bias.is_some() as u32),
        KernelArg::u32((act == Activation::Relu) as u32),
    ];
    // SAFETY: y[e] for e < n·c·s (its length); bias[c] for c < channels when has_bias (checked).
    unsafe { backend.launch("conv_bias_act_f32", launch_config(backend, total), &mut args) }
}

/// The bias gradient `grad_bias[c] = Σ grad[:, c, :]` of `grad` `[n, channels, s]`.
pub fn bias_grad_f32(
    backend: &Backend,
    grad: &DeviceBuffer<f32>,
    (n, channels, s): (usize, usize, usize),
    grad_bias: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::conv::bias_grad_f32";
    check_ncs(OP, "grad", grad.len(), n, channels, s)?;
    check_ncs(OP, "grad_bias", grad_bias.len(), 1, channels, 1)?;
    if channels == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::input(grad),
        KernelArg::u64(n as u64),
        KernelArg::u64(channels as u64),
        KernelArg::u64(s as u64),
        KernelArg::output(grad_bias),
    ];
    // SAFETY: reads grad[(b·C + c)·S + j] < n·c·s, writes grad_bias[c] < channels (checked).
    unsafe { backend.launch("conv_bias_grad_f32", row_launch_config(backend, channels, s), &mut args) }
}

/// Backward of [`bias_act_f32`] with [`Activation::Relu`]: `grad_pre = grad_y · (y > 0)` (`y` the
/// epilogue's output) and `grad_bias[c] = Σ grad_pre[:, c, :]`, in one pass.
pub fn bias_relu_backward_f32(
    backend: &Backend,
    grad_y: &DeviceBuffer<f32>,
    y: &DeviceBuffer<f32>,
    (n, channels, s): (usize, usize, usize),
    grad_pre: &mut DeviceBuffer<f32>,
    grad_bias: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::conv::bias_relu_backward_f32";
    check_ncs(OP, "grad_y", grad_y.len(), n, channels, s)?;
    check_ncs(OP, "y", y.len(), n, channels, s)?;
    check_ncs(OP, "grad_pre", grad_pre.len(), n, channels, s)?;
    check_ncs(OP, "grad_bias", grad_bias.len(), 1, channels, 1)?;
    if channels == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::input(grad_y),
        KernelArg::input(y),
        KernelArg::u64(n as u64),
        KernelArg::u64(channels as u64),
        KernelArg::u64(s as u64),
        KernelArg::output(grad_pre),
        KernelArg::output(grad_bias),
    ];
    // SAFETY: as bias_grad_f32; grad_y, y and grad_pre all hold n·c·s floats (checked).
    unsafe { backend.launch("conv_bias_relu_backward_f32", row_launch_config(backend, channels, s), &mut args) }
}
