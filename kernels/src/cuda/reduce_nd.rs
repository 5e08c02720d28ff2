//! Launch wrappers for `kernels/cuda/reduce_nd.cu`: the row reductions behind the tensor ops
//! (sum, mean, max, min, logsumexp, var, std, argmax, argmin) over a contiguous `[rows, n]`
//! matrix of `f16`, `bf16`, `f32` or `f64`. CPU reference: [`crate::cpu::reduce::reduce_last`]
//! and [`crate::cpu::reduce::arg_reduce_last`] (same special-value rules; see the `.cu` header).
//!
//! Many rows: one block per row. Few long rows (at most 4 per SM): the grid-level
//! path, each row split into chunks reduced by separate blocks into a small workspace of partial
//! states (`3·rows·chunks` accumulators), then merged by a finish kernel; nothing synchronises
//! with the host.

use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg, LaunchConfig};
use super::reduce::{row_launch_config, ROW_BLOCKS_PER_SM};
use super::CudaError;

/// A reduction of each row to one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowReduce {
    /// Sum of the row.
    Sum,
    /// Mean of the row.
    Mean,
    /// Maximum of the row (NaN if any element is NaN).
    Max,
    /// Minimum of the row (NaN if any element is NaN).
    Min,
    /// `log Σ exp(x)`, stable.
    LogSumExp,
    /// Variance with `correction` (1: unbiased).
    Var {
        /// Subtracted from the count in the divisor: `Σ (x - mean)² / (n - correction)`.
        correction: usize,
    },
    /// Standard deviation with `correction`.
    Std {
        /// Subtracted from the count in the divisor, as for `Var`.
        correction: usize,
    },
}

impl RowReduce {
    /// The op code of `reduce_nd.cu` and the correction.
    fn code(self) -> (i32, u64) {
        match self {
            RowReduce::Sum => (0, 0),
            RowReduce::Mean => (1, 0),
            RowReduce::Max => (2, 0),
            RowReduce::Min => (3, 0),
            RowReduce::LogSumExp => (4, 0),
            RowReduce::Var { correction } => (5, correction as u64),
            RowReduce::Std { correction } => (6, correction as u64),
        }
    }
}

/// Elements per chunk at least, on the grid-level path (a block of 256 threads folds 16 each).
const MIN_CHUNK: usize = 4096;

/// The number of chunks per row for the grid-level path, or `None` for the one-block-per-row
/// path: when the rows alone fill at most half of the row grid (`8·SMs` blocks) and each row is
/// long enough to split into chunks of at least [`MIN_CHUNK`] elements, the rows are split so
/// that about `8·SMs` blocks run.
fn grid_chunks(backend: &Backend, rows: usize, n: usize) -> Option<usize> {
    let slots = backend.multiprocessor_count() as usize * ROW_BLOCKS_PER_SM as usize;
    if rows == 0 || 2 * rows > slots || n < 2 * MIN_CHUNK {
        return None;
    }
    let chunks = slots.div_ceil(rows).min(n / MIN_CHUNK).min(65_535);
    (chunks >= 2).then_some(chunks)
}

fn check_float<T: DeviceElem>(op: &'static str) -> Result<(), CudaError> {
    match T::NAME {
        "f16" | "bf16" | "f32" | "f64" => Ok(()),
        other => Err(CudaError::Shape { op, message: format!("no reduction kernel for {other}") }),
    }
}

/// `out[r] = op(x[r·n .. (r + 1)·n])` for the contiguous `[rows, n]` matrix `x`, computed in
/// `f32` (`f64` for `f64`) and rounded once to `T`. `n == 0` gives the CPU's empty-row values
/// (sum 0, logsumexp -inf, mean/var/std/max/min NaN).
pub fn reduce_rows<T: DeviceElem>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    rows: usize,
    n: usize,
    op: RowReduce,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::reduce_nd::reduce_rows";
    check_float::<T>(OP)?;
    if x.len() != rows * n || out.len() != rows {
        let message = format!("x has {} elements, out {}, for [rows={rows}, n={n}]", x.len(), out.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if rows == 0 {
        return Ok(());
    }
    let (code, correction) = op.code();
    if let Some(chunks) = grid_chunks(backend, rows, n) {
        return if T::NAME == "f64" {
            reduce_grid::<T, f64>(backend, x, rows, n, chunks, code, correction, out)
        } else {
            reduce_grid::<T, f32>(backend, x, rows, n, chunks, code, correction, out)
        };
    }
    let cfg = row_launch_config(backend, rows, n);
    let mut args = [
        KernelArg::input(x),
        KernelArg::output(out),
        KernelArg::u64(rows as u64),
        KernelArg::u64(n as u64),
        KernelArg::i32(code),
        KernelArg::u64(correction),
    ];
    // SAFETY: reduce_rows_<T>(const T* x, T* out, rows, n, int op, correction) reads
    // x[0, rows·n) and writes out[0, rows), the buffers' lengths (checked above); T is one of the
    // four float types the kernels exist for (checked).
    unsafe { backend.launch(&format!("reduce_rows_{}", T::NAME), cfg, &mut args) }
}

/// The grid-level path: partial states per (row, chunk) in an `A` workspace, then a finish kernel.
#[allow(clippy::too_many_arguments)]
fn reduce_grid<T: DeviceElem, A: DeviceElem>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    rows: usize,
    n: usize,
    chunks: usize,
    code: i32,
    correction: u64,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    let per_chunk = n.div_ceil(chunks);
    let blocks = rows * chunks;
    let mut partial = backend.zeros::<A>(3 * blocks)?;
    let cfg = LaunchConfig::linear(blocks.min(65_535) as u32, 256);
    let mut args = [
        KernelArg::input(x),
        KernelArg::output(&mut partial),
        KernelArg::u64(rows as u64),
        KernelArg::u64(n as u64),
        KernelArg::u64(chunks as u64),
        KernelArg::u64(per_chunk as u64),
        KernelArg::i32(code),
    ];
    // SAFETY: reduce_partial_<T>(const T* x, A* partial, rows, n, chunks, per_chunk, op): block
    // b < rows·chunks reads x[row·n + j] for j < n of its row, and writes partial[3b .. 3b + 3)
    // < 3·rows·chunks, the workspace's length. A is the kernel's accumulator (f64 for f64, else
    // f32, chosen by the caller).
    unsafe { backend.launch(&format!("reduce_partial_{}", T::NAME), cfg, &mut args)? };
    reduce_finish(backend, &partial, out, (rows, chunks, n), code, correction)
}

/// The second pass of the split reductions: `out[o]` from the `chunks` partial
/// `(count, mean, M2)` triples of each of the `outputs` results, over `n` elements in all.
fn reduce_finish<T: DeviceElem, A: DeviceElem>(
    backend: &Backend,
    partial: &DeviceBuffer<A>,
    out: &mut DeviceBuffer<T>,
    (outputs, chunks, n): (usize, usize, usize),
    code: i32,
    correction: u64,
) -> Result<(), CudaError> {
    let cfg = row_launch_config(backend, outputs, chunks);
    let mut args = [
        KernelArg::input(partial),
        KernelArg::output(out),
        KernelArg::u64(outputs as u64),
        KernelArg::u64(chunks as u64),
        KernelArg::u64(n as u64),
        KernelArg::i32(code),
        KernelArg::u64(correction),
    ];
    // SAFETY: reduce_finish_<T>(const A* partial, T* out, outputs, chunks, n, op, correction)
    // reads partial[0, 3·outputs·chunks) (both callers size the workspace so) and writes
    // out[0, outputs) (checked by the callers). The workspace is freed in stream order after
    // the kernel.
    unsafe { backend.launch(&format!("reduce_finish_{}", T::NAME), cfg, &mut args) }
}

/// `out[r]` = the index of the maximum (`want_max`) or minimum of row `r` of the contiguous
/// `[rows, n]` matrix `x`: the first on ties, a NaN counting as the extreme (the first NaN).
/// `n` must be positive when `rows > 0`.
pub fn arg_reduce_rows<T: DeviceElem>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    rows: usize,
    n: usize,
    want_max: bool,
    out: &mut DeviceBuffer<i64>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::reduce_nd::arg_reduce_rows";
    check_float::<T>(OP)?;
    if x.len() != rows * n || out.len() != rows {
        let message = format!("x has {} elements, out {}, for [rows={rows}, n={n}]", x.len(), out.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if rows == 0 {
        return Ok(());
    }
    if n == 0 {
        return Err(CudaError::Shape { op: OP, message: "cannot take the arg-extreme of an empty row".into() });
    }
    let cfg = row_launch_config(backend, rows, n);
    let mut args = [
        KernelArg::input(x),
        KernelArg::output(out),
        KernelArg::u64(rows as u64),
        KernelArg::u64(n as u64),
        KernelArg::i32(want_max as i32),
    ];
    // SAFETY: argreduce_rows_<T>(const T* x, long long* out, rows, n, int want_max) reads
    // x[0, rows·n) and writes out[0, rows) (lengths checked above).
    unsafe { backend.launch(&format!("argreduce_rows_{}", T::NAME), cfg, &mut args) }
}

/// Threads the column kernels aim for before splitting the reduced dim (about 2048 per SM).
const COL_THREADS_PER_SM: usize = 2048;

/// `out[i·b + j] = op(x[i, 0..r, j])` for the contiguous `[a, r, b]` tensor `x`: a reduction over
/// the middle dim read in place (consecutive threads read consecutive columns). When the `a·b`
/// outputs are too few to fill the GPU, the reduced dim is split into chunks (partial states in
/// a workspace, then the finish kernel). Best for `b` of at least a warp; for small `b` the caller
/// should rather move the reduced dim last and use [`reduce_rows`].
pub fn reduce_mid<T: DeviceElem>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    (a, r, b): (usize, usize, usize),
    op: RowReduce,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::reduce_nd::reduce_mid";
    check_float::<T>(OP)?;
    if x.len() != a * r * b || out.len() != a * b {
        let message = format!("x has {} elements, out {}, for [a={a}, r={r}, b={b}]", x.len(), out.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    let outputs = a * b;
    if outputs == 0 {
        return Ok(());
    }
    let (code, correction) = op.code();
    let target = backend.multiprocessor_count() as usize * COL_THREADS_PER_SM;
    let chunks = if outputs * 2 >= target { 1 } else { (target / outputs).min(r / 64).clamp(1, 65_535) };
    let grid_x = outputs.div_ceil(256).min(65_535) as u32;
    if chunks == 1 {
        let cfg = LaunchConfig::linear(grid_x, 256);
        let mut args = [
            KernelArg::input(x),
            KernelArg::output(out),
            KernelArg::u64(a as u64),
            KernelArg::u64(r as u64),
            KernelArg::u64(b as u64),
            KernelArg::i32(code),
            KernelArg::u64(correction),
        ];
        // SAFETY: reduce_cols_<T>(const T* x, T* out, a, r, b, int op, correction): output
        // o < a·b reads x[(o / b)·r·b + k·b + o % b] < a·r·b and writes out[o] (lengths checked).
        return unsafe { backend.launch(&format!("reduce_cols_{}", T::NAME), cfg, &mut args) };
    }
    if T::NAME == "f64" {
        reduce_mid_split::<T, f64>(backend, x, (a, r, b), chunks, grid_x, code, correction, out)
    } else {
        reduce_mid_split::<T, f32>(backend, x, (a, r, b), chunks, grid_x, code, correction, out)
    }
}

#[allow(clippy::too_many_arguments)]
fn reduce_mid_split<T: DeviceElem, A: DeviceElem>(
    backend: &Backend,
    x: &DeviceBuffer<T>,
    (a, r, b): (usize, usize, usize),
    chunks: usize,
    grid_x: u32,
    code: i32,
    correction: u64,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    let outputs = a * b;
    let per_chunk = r.div_ceil(chunks);
    let mut partial = backend.zeros::<A>(3 * outputs * chunks)?;
    let cfg = LaunchConfig { grid: (grid_x, chunks as u32, 1), block: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = [
        KernelArg::input(x),
        KernelArg::output(&mut partial),
        KernelArg::u64(a as u64),
        KernelArg::u64(r as u64),
        KernelArg::u64(b as u64),
        KernelArg::u64(chunks as u64),
        KernelArg::u64(per_chunk as u64),
        KernelArg::i32(code),
    ];
    // SAFETY: reduce_cols_partial_<T>(const T* x, A* partial, a, r, b, chunks, per_chunk, op):
    // output o < a·b, chunk c < chunks reads x inside a·r·b and writes partial[3(o·chunks + c) ..
    // + 3) < 3·a·b·chunks, the workspace's length; A is the kernel's accumulator type.
    unsafe { backend.launch(&format!("reduce_cols_partial_{}", T::NAME), cfg, &mut args)? };
    reduce_finish(backend, &partial, out, (outputs, chunks, r), code, correction)
}
