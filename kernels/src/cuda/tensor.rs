//! Launch wrappers for `kernels/cuda/tensor.cu`, the data movement under the tensor layer's
//! CUDA dispatch: strided copy (a view to a dense buffer; a tiled variant for transposed views),
//! fill, and casts between dtypes.
//! CPU references: [`crate::cpu::copy::copy_strided`], `vec![v; n]`, and the tensor crate's
//! `convert_slice` (Rust `as` / `half` rounding rules, restated in `tensor.cu`).

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg, LaunchConfig};
use super::CudaError;

/// The kernel suffix for an element size: copies and fills move bytes, not values.
fn size_suffix<T: DeviceElem>(op: &'static str) -> Result<&'static str, CudaError> {
    match std::mem::size_of::<T>() {
        1 => Ok("b1"),
        2 => Ok("b2"),
        4 => Ok("b4"),
        8 => Ok("b8"),
        s => Err(CudaError::Shape { op, message: format!("no kernel for {}-byte elements ({})", s, T::NAME) }),
    }
}

/// Checks that a non-empty view (`dims`, `strides`, `offset`) of a `len`-element buffer stays
/// inside it: strides are unsigned, so the largest index touched is that of the last element.
fn check_view(op: &'static str, dims: &[usize], strides: &[usize], offset: usize, len: usize) -> Result<(), CudaError> {
    let last = offset + dims.iter().zip(strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>();
    if last >= len {
        let message = format!(
            "the view (dims {dims:?}, strides {strides:?}, offset {offset}) reaches element {last} of a {len}-element buffer"
        );
        return Err(CudaError::Shape { op, message });
    }
    Ok(())
}

/// `dst[i] = src[offset + Σ_k idx_k(i)·strides[k]]`, where `idx(i)` is the row-major multi-index
/// of `i` in `dims`: the dense copy of a strided view. Strides are in elements and may be 0.
pub fn copy_strided<T: DeviceElem>(
    backend: &Backend,
    src: &DeviceBuffer<T>,
    dims: &[usize],
    strides: &[usize],
    offset: usize,
    dst: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::tensor::copy_strided";
    let n: usize = dims.iter().product();
    if strides.len() != dims.len() || dst.len() != n {
        let message = format!("dims {dims:?}, strides {strides:?}: dst holds {} elements, expected {n}", dst.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if n == 0 {
        return Ok(());
    }
    check_view(OP, dims, strides, offset, src.len())?;
    let suffix = size_suffix::<T>(OP)?;
    let meta: Vec<i64> = dims.iter().chain(strides).map(|&v| v as i64).collect();
    let meta = backend.upload(&meta)?;
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(src),
        KernelArg::output(dst),
        KernelArg::input(&meta),
        KernelArg::i32(dims.len() as i32),
        KernelArg::i64(offset as i64),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: copy_strided_bK(const T*, T*, const long long* meta, int rank, long long offset,
    // unsigned long long n) with T of K bytes (our element size): it reads meta[0, 2·rank), src at
    // indices <= `last` (< src.len(), checked) and writes dst[0, n) (dst.len() == n, checked).
    // `meta` may be dropped right after the launch: cudarc frees device memory in stream order
    // (cuMemFreeAsync on the launch's stream), after the kernel has read it.
    unsafe { backend.launch(&format!("copy_strided_{suffix}"), cfg, &mut args) }
}

/// `dst[z, r, c] = src[offset + z·strides[0] + r·strides[1] + c·strides[2]]` for the dense
/// row-major `dst` of shape `dims = [batch, rows, cols]`: the same copy as [`copy_strided`] of a
/// rank-3 view, tiled through shared memory (`transpose_bK` in `tensor.cu`). Meant for transposed
/// views, where `strides[1] == 1` and `strides[2] != 1`: loads then run along the source's unit
/// stride and stores along `dst`'s rows, both coalesced, where `copy_strided` would read with
/// stride `strides[2]`. Correct for any strides (including 0), only fast for that case.
pub fn transpose_copy<T: DeviceElem>(
    backend: &Backend,
    src: &DeviceBuffer<T>,
    dims: [usize; 3],
    strides: [usize; 3],
    offset: usize,
    dst: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::tensor::transpose_copy";
    let [batch, rows, cols] = dims;
    let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| CudaError::Shape {
        op: OP,
        message: format!("dims {dims:?} hold more than usize::MAX elements"),
    })?;
    if dst.len() != n {
        let message = format!("dims {dims:?}: dst holds {} elements, expected {n}", dst.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if n == 0 {
        return Ok(());
    }
    check_view(OP, &dims, &strides, offset, src.len())?;
    let suffix = size_suffix::<T>(OP)?;
    let cfg = transpose_config(backend, dims);
    let mut args = [
        KernelArg::input(src),
        KernelArg::output(dst),
        KernelArg::i64(batch as i64),
        KernelArg::i64(rows as i64),
        KernelArg::i64(cols as i64),
        KernelArg::i64(strides[0] as i64),
        KernelArg::i64(strides[1] as i64),
        KernelArg::i64(strides[2] as i64),
        KernelArg::i64(offset as i64),
    ];
    // SAFETY: transpose_bK(const T*, T*, long long batch, rows, cols, stride_z, stride_r, stride_c,
    // offset) with T of K bytes (our element size), launched with blockDim (32, 8) as it requires:
    // it reads src at offset + z·stride_z + r·stride_r + c·stride_c for z < batch, r < rows,
    // c < cols, all <= `last` (< src.len(), checked), and writes dst[0, batch·rows·cols)
    // (dst.len() == n, checked). The kernel indexes in 64 bits; every value passed fits in i64
    // since it is at most a buffer length or a product bounded by one.
    unsafe { backend.launch(&format!("transpose_{suffix}"), cfg, &mut args) }
}

/// The launch shape of `transpose_bK`: blocks of 32 x 8 threads, one 32 x 32 tile per block
/// (x: tiles along cols, y: tiles along rows, z: batch), each grid dim capped at the hardware
/// limit (the kernel's grid-stride loops take the rest). The emulator caps every dim at 2, so
/// the parity tests walk those loops on small shapes.
fn transpose_config(backend: &Backend, [batch, rows, cols]: [usize; 3]) -> LaunchConfig {
    const TILE: usize = 32;
    let (cap_x, cap_yz) = match backend {
        Backend::Emu(_) => (2, 2),
        Backend::Gpu(_) => (i32::MAX as usize, 65535),
    };
    let grid = (
        cols.div_ceil(TILE).clamp(1, cap_x) as u32,
        rows.div_ceil(TILE).clamp(1, cap_yz) as u32,
        batch.clamp(1, cap_yz) as u32,
    );
    LaunchConfig { grid, block: (32, 8, 1), shared_mem_bytes: 0 }
}

/// `dst[i] = value` for every element.
pub fn fill<T: DeviceElem>(backend: &Backend, dst: &mut DeviceBuffer<T>, value: T) -> Result<(), CudaError> {
    const OP: &str = "cuda::tensor::fill";
    let n = dst.len();
    if n == 0 {
        return Ok(());
    }
    let suffix = size_suffix::<T>(OP)?;
    let mut bits = 0u64;
    // SAFETY: copies size_of::<T>() <= 8 bytes of a plain-old-data value into the low bytes of
    // `bits` (little-endian targets only, as CUDA itself).
    unsafe {
        std::ptr::copy_nonoverlapping(
            &value as *const T as *const u8,
            &mut bits as *mut u64 as *mut u8,
            std::mem::size_of::<T>(),
        )
    };
    let cfg = launch_config(backend, n);
    let mut args = [KernelArg::output(dst), KernelArg::u64(bits), KernelArg::u64(n as u64)];
    // SAFETY: fill_bK(T*, unsigned long long bits, unsigned long long n) writes dst[0, n).
    unsafe { backend.launch(&format!("fill_{suffix}"), cfg, &mut args) }
}

/// `dst[i] = start + i·step` in `f64` (product and sum rounded apart, as the CPU's
/// `start + i as f64 * step`), for `i < dst.len()`.
pub fn arange_f64(backend: &Backend, start: f64, step: f64, dst: &mut DeviceBuffer<f64>) -> Result<(), CudaError> {
    let n = dst.len();
    if n == 0 {
        return Ok(());
    }
    let cfg = launch_config(backend, n);
    let mut args = [KernelArg::output(dst), KernelArg::f64(start), KernelArg::f64(step), KernelArg::u64(n as u64)];
    // SAFETY: arange_f64(double*, double, double, unsigned long long n) writes dst[0, n), n = dst.len().
    unsafe { backend.launch("arange_f64", cfg, &mut args) }
}

/// `dst[i] = src[i] as D` with the tensor layer's conversion rules (see `tensor.cu`).
pub fn cast<S: DeviceElem, D: DeviceElem>(
    backend: &Backend,
    src: &DeviceBuffer<S>,
    dst: &mut DeviceBuffer<D>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::tensor::cast";
    let n = src.len();
    if dst.len() != n {
        let message = format!("src holds {n} elements, dst {}", dst.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if S::NAME == D::NAME {
        return Err(CudaError::Shape { op: OP, message: format!("a cast from {} to itself", S::NAME) });
    }
    if n == 0 {
        return Ok(());
    }
    let cfg = launch_config(backend, n);
    let mut args = [KernelArg::input(src), KernelArg::output(dst), KernelArg::u64(n as u64)];
    // SAFETY: cast_<S>_<D>(const S*, D*, unsigned long long n) reads src[0, n), writes dst[0, n).
    unsafe { backend.launch(&format!("cast_{}_{}", S::NAME, D::NAME), cfg, &mut args) }
}
