//! Launch wrappers for `kernels/cuda/softmax.cu`: softmax and log-softmax over the last dim of a
//! contiguous `[rows, n]` matrix (`f32`, and every float dtype through [`softmax_last`]), and
//! their backward ([`softmax_backward_last`]). CPU reference:
//! [`crate::cpu::softmax::softmax_last`], [`crate::cpu::softmax::softmax_backward_last`].

use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg, LaunchConfig};
use super::reduce::row_launch_config;
use super::CudaError;

/// `y = softmax(x)` (or `log_softmax` when `log`) over each row of `[rows, n]`.
pub fn softmax_last_f32(
    backend: &Backend,
    x: &DeviceBuffer<f32>,
    rows: usize,
    n: usize,
    log: bool,
    y: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    if x.len() != rows * n || y.len() != rows * n {
        let message = format!("x has {} elements, y {}, for [rows={rows}, n={n}]", x.len(), y.len());
        return Err(CudaError::Shape { op: "cuda::softmax::softmax_last_f32", message });
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let kernel = if log { "log_softmax_last_f32" } else { "softmax_last_f32" };
    let cfg = row_launch_config(backend, rows, n);
    let mut args = [KernelArg::input(x), KernelArg::output(y), KernelArg::u64(rows as u64), KernelArg::u64(n as u64)];
    // SAFETY: the kernels read x[0, rows·n) and write y[0, rows·n), the buffers' lengths.
    unsafe { backend.launch(kernel, cfg, &mut args) }
}

/// The longest row the warp-per-row kernels take (32 lanes x 32 registers).
pub const WARP_ROW_MAX: usize = 1024;

/// The launch shape of a warp-per-row kernel: blocks of 8 warps (8 rows), at most 8 blocks per
/// SM (full occupancy; the warps stride over the rows beyond that).
pub fn warp_row_launch_config(backend: &Backend, rows: usize) -> LaunchConfig {
    let cap = backend.multiprocessor_count() as usize * 8;
    LaunchConfig::linear(rows.div_ceil(8).clamp(1, cap) as u32, 256)
}

/// `y = softmax(x)` (or `log_softmax` when `log`) over each row of the contiguous `[rows, n]`
/// matrix, for `f16`, `bf16`, `f32` (computed in `f32`, rounded once) and `f64`: one warp per
/// row for rows of at most [`WARP_ROW_MAX`] elements, else one block per row.
pub fn softmax_last<T: DeviceElem>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    rows: usize,
    n: usize,
    log: bool,
    y: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::softmax::softmax_last";
    check_float::<T>(OP)?;
    if x.len() != rows * n || y.len() != rows * n {
        let message = format!("x has {} elements, y {}, for [rows={rows}, n={n}]", x.len(), y.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let (kernel, cfg) = if n <= WARP_ROW_MAX {
        (format!("{}softmax_warp_{}", if log { "log_" } else { "" }, T::NAME), warp_row_launch_config(backend, rows))
    } else {
        (format!("{}softmax_last_{}", if log { "log_" } else { "" }, T::NAME), row_launch_config(backend, rows, n))
    };
    let mut args = [KernelArg::input(x), KernelArg::output(y), KernelArg::u64(rows as u64), KernelArg::u64(n as u64)];
    // SAFETY: [log_]softmax_last_<T>(const T* x, T* y, rows, n) reads x[0, rows·n) and writes
    // y[0, rows·n), the buffers' lengths (checked); T is a float type the kernels exist for.
    unsafe { backend.launch(&kernel, cfg, &mut args) }
}

/// The gradient of [`softmax_last`] over each row: `gx = y ⊙ (g - Σ g·y)` (softmax) or
/// `gx = g - exp(y)·Σ g` (log-softmax), from the forward output `y` and the upstream `g`.
pub fn softmax_backward_last<T: DeviceElem>(
    backend: &Backend,
    y: &DeviceBuffer<T>,
    g: &DeviceBuffer<T>,
    rows: usize,
    n: usize,
    log: bool,
    gx: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::softmax::softmax_backward_last";
    check_float::<T>(OP)?;
    if y.len() != rows * n || g.len() != rows * n || gx.len() != rows * n {
        let message = format!("y has {} elements, g {}, gx {}, for [rows={rows}, n={n}]", y.len(), g.len(), gx.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let kernel = format!("{}softmax_backward_last_{}", if log { "log_" } else { "" }, T::NAME);
    let cfg = row_launch_config(backend, rows, n);
    let mut args = [
        KernelArg::input(y),
        KernelArg::input(g),
        KernelArg::output(gx),
        KernelArg::u64(rows as u64),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: [log_]softmax_backward_last_<T>(const T* y, const T* g, T* gx, rows, n) reads y and
    // g and writes gx on [0, rows·n), the buffers' lengths (checked).
    unsafe { backend.launch(&kernel, cfg, &mut args) }
}

fn check_float<T: DeviceElem>(op: &'static str) -> Result<(), CudaError> {
    match T::NAME {
        "f16" | "bf16" | "f32" | "f64" => Ok(()),
        other => Err(CudaError::Shape { op, message: format!("no softmax kernel for {other}") }),
    }
}
