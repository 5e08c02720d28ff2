//! Launch wrapper for `kernels/cuda/softmax.cu`: softmax and log-softmax over the last dim of a
//! contiguous `[rows, n]` `f32` matrix. CPU reference: [`crate::cpu::softmax::softmax_last`].

use super::launch::{Backend, DeviceBuffer, KernelArg};
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
