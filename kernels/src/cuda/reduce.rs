//! Launch wrapper for `kernels/cuda/reduce.cu`: row sums of a contiguous `[rows, n]` `f32`
//! matrix. CPU reference: [`crate::cpu::reduce::reduce_last`] with `ReduceOp::Sum`.

use super::launch::{Backend, DeviceBuffer, KernelArg, LaunchConfig};
use super::CudaError;

/// Most threads per block of the row kernels (reduce, softmax).
pub const MAX_ROW_BLOCK: u32 = 256;

/// Resident blocks per SM the row grid is capped at; more rows loop (grid-stride over rows).
pub const ROW_BLOCKS_PER_SM: u32 = 8;

/// One block per row: `min(rows, 8 * SMs)` blocks of `min(256, n rounded up to 32)` threads (a
/// whole number of warps, as the kernels' warp reductions require).
pub fn row_launch_config(backend: &Backend, rows: usize, n: usize) -> LaunchConfig {
    let block = (n.div_ceil(32) * 32).clamp(32, MAX_ROW_BLOCK as usize) as u32;
    let cap = (backend.multiprocessor_count() * ROW_BLOCKS_PER_SM) as usize;
    LaunchConfig::linear(rows.clamp(1, cap) as u32, block)
}

/// `out[r] = Σ_j x[r·n + j]` for the contiguous `[rows, n]` matrix `x`.
pub fn sum_rows_f32(
    backend: &Backend,
    x: &DeviceBuffer<f32>,
    rows: usize,
    n: usize,
    out: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    if x.len() != rows * n || out.len() != rows {
        let message = format!("x has {} elements, out {}, for [rows={rows}, n={n}]", x.len(), out.len());
        return Err(CudaError::Shape { op: "cuda::reduce::sum_rows_f32", message });
    }
    if rows == 0 {
        return Ok(());
    }
    let cfg = row_launch_config(backend, rows, n);
    let mut args = [KernelArg::input(x), KernelArg::output(out), KernelArg::u64(rows as u64), KernelArg::u64(n as u64)];
    // SAFETY: reduce_sum_rows_f32(const float* x, float* out, rows, n) reads x[0, rows·n) and
    // writes out[0, rows), the buffers' lengths (checked above).
    unsafe { backend.launch("reduce_sum_rows_f32", cfg, &mut args) }
}
