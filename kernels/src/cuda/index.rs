//! Launch wrappers for `kernels/cuda/index.cu`: the device-side check of i64 indices, gather,
//! scatter_add, index_select, index_add, the slabs of a concatenation and padding. CPU
//! references: [`crate::cpu::index`] (gather, scatter_add, index_select, index_add); the tensor
//! layer's `cat` and `pad` (copies). Shapes are checked here; out-of-range indices are skipped by
//! the kernels (memory-safe on any input), and [`first_out_of_range`] finds them for an error.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg, LaunchConfig};
use super::CudaError;

fn shape_err<T>(op: &'static str, message: String) -> Result<T, CudaError> {
    Err(CudaError::Shape { op, message })
}

/// The kernel suffix for an element size: these kernels move bytes, not values.
fn size_suffix<T: DeviceElem>(op: &'static str) -> Result<&'static str, CudaError> {
    match std::mem::size_of::<T>() {
        1 => Ok("b1"),
        2 => Ok("b2"),
        4 => Ok("b4"),
        8 => Ok("b8"),
        s => shape_err(op, format!("no kernel for {}-byte elements ({})", s, T::NAME)),
    }
}

/// The atomic-add kernels' dtype suffix (`f32`, `f64`).
fn add_suffix<T: DeviceElem>(op: &'static str) -> Result<&'static str, CudaError> {
    match T::NAME {
        "f32" | "f64" => Ok(T::NAME),
        other => shape_err(op, format!("no {other} kernel: accumulate in f32 (f16/bf16) or f64")),
    }
}

fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

/// The first position `i < n` (row-major) with `idx[i]` outside `[0, size)`, and that index,
/// or `None`. Two tiny kernels and one 16-byte download (a synchronisation), not a download of
/// the indices.
pub fn first_out_of_range(
    backend: &Backend,
    idx: &DeviceBuffer<i64>,
    n: usize,
    size: usize,
) -> Result<Option<(usize, i64)>, CudaError> {
    check_len("cuda::index::first_out_of_range", "idx", idx, n)?;
    if n == 0 {
        return Ok(None);
    }
    let mut flag = backend.upload(&[n as i64, 0])?;
    let mut args =
        [KernelArg::input(idx), KernelArg::u64(n as u64), KernelArg::i64(size as i64), KernelArg::output(&mut flag)];
    // SAFETY: index_find_bad(const long long* idx, unsigned long long n, long long size,
    // long long* first) reads idx[0, n) and atomically updates first[0] (flag holds 2).
    unsafe { backend.launch("index_find_bad", launch_config(backend, n), &mut args)? };
    let mut args = [KernelArg::input(idx), KernelArg::u64(n as u64), KernelArg::output(&mut flag)];
    // SAFETY: index_fetch_bad(const long long* idx, unsigned long long n, long long* first)
    // reads first[0] and, when it is < n, idx[first[0]], and writes first[1].
    unsafe { backend.launch("index_fetch_bad", LaunchConfig::linear(1, 1), &mut args)? };
    let f = backend.download(&flag)?;
    Ok(((f[0] as usize) < n).then(|| (f[0] as usize, f[1])))
}

fn check_len<T: DeviceElem>(op: &'static str, what: &str, buf: &DeviceBuffer<T>, want: usize) -> Result<(), CudaError> {
    if buf.len() < want {
        return shape_err(op, format!("{what} holds {} elements, needs {want}", buf.len()));
    }
    Ok(())
}

/// Index shapes against a tensor shape as gather/scatter_add need them: same rank, `dim` in
/// range, the index no larger than `dims` outside `dim`.
fn check_index_dims(op: &'static str, dims: &[usize], dim: usize, idx_dims: &[usize]) -> Result<(), CudaError> {
    if idx_dims.len() != dims.len() || dim >= dims.len() {
        return shape_err(op, format!("index dims {idx_dims:?}, tensor dims {dims:?}, dim {dim}"));
    }
    if idx_dims.iter().zip(dims).enumerate().any(|(k, (&i, &d))| k != dim && i > d) {
        return shape_err(op, format!("index dims {idx_dims:?} exceed the tensor dims {dims:?} outside dim {dim}"));
    }
    Ok(())
}

/// `out[p] = src[p with p[dim] = idx[p]]` for every position `p` of the index shape `idx_dims`
/// (`src` dense of shape `src_dims`; `out` and `idx` dense of shape `idx_dims`).
pub fn gather<T: DeviceElem>(
    backend: &Backend,
    src: &DeviceBuffer<T>,
    src_dims: &[usize],
    dim: usize,
    idx: &DeviceBuffer<i64>,
    idx_dims: &[usize],
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::index::gather";
    check_index_dims(OP, src_dims, dim, idx_dims)?;
    let n: usize = idx_dims.iter().product();
    check_len(OP, "src", src, src_dims.iter().product())?;
    check_len(OP, "idx", idx, n)?;
    check_len(OP, "out", out, n)?;
    if n == 0 {
        return Ok(());
    }
    let meta: Vec<i64> = idx_dims.iter().chain(&contiguous_strides(src_dims)).map(|&v| v as i64).collect();
    let meta = backend.upload(&meta)?;
    let mut args = [
        KernelArg::input(src),
        KernelArg::input(idx),
        KernelArg::output(out),
        KernelArg::input(&meta),
        KernelArg::i32(src_dims.len() as i32),
        KernelArg::i32(dim as i32),
        KernelArg::i64(src_dims[dim] as i64),
        KernelArg::u64(n as u64),
    ];
    let name = format!("gather_{}", size_suffix::<T>(OP)?);
    // SAFETY: gather_bK(const T* src, const long long* idx, T* out, const long long* meta, int
    // rank, int dim, long long size, unsigned long long n), K = size_of::<T>(). It reads idx and
    // writes out at [0, n) (lengths checked), meta[0, 2 rank); src at multi-indices inside
    // src_dims (the index shape is within src_dims outside `dim`, checked, and indices outside
    // [0, src_dims[dim]) are skipped).
    unsafe { backend.launch(&name, launch_config(backend, n), &mut args) }
}

/// `out[p with p[dim] = idx[p]] += src[p]` for every position `p` of the index shape (`out`
/// dense of shape `out_dims`, `src` dense of shape `src_dims`, both at least the index shape
/// outside `dim`, `src` also in `dim`). `f32` and `f64`; duplicates accumulate (atomics).
#[allow(clippy::too_many_arguments)]
pub fn scatter_add<T: DeviceElem>(
    backend: &Backend,
    out: &mut DeviceBuffer<T>,
    out_dims: &[usize],
    dim: usize,
    idx: &DeviceBuffer<i64>,
    idx_dims: &[usize],
    src: &DeviceBuffer<T>,
    src_dims: &[usize],
) -> Result<(), CudaError> {
    const OP: &str = "cuda::index::scatter_add";
    check_index_dims(OP, out_dims, dim, idx_dims)?;
    if src_dims.len() != idx_dims.len() || idx_dims.iter().zip(src_dims).any(|(i, s)| i > s) {
        return shape_err(OP, format!("index dims {idx_dims:?} exceed the src dims {src_dims:?}"));
    }
    let n: usize = idx_dims.iter().product();
    check_len(OP, "out", out, out_dims.iter().product())?;
    check_len(OP, "src", src, src_dims.iter().product())?;
    check_len(OP, "idx", idx, n)?;
    let suffix = add_suffix::<T>(OP)?;
    if n == 0 {
        return Ok(());
    }
    let meta: Vec<i64> = idx_dims
        .iter()
        .chain(&contiguous_strides(src_dims))
        .chain(&contiguous_strides(out_dims))
        .map(|&v| v as i64)
        .collect();
    let meta = backend.upload(&meta)?;
    let mut args = [
        KernelArg::input(src),
        KernelArg::input(idx),
        KernelArg::output(out),
        KernelArg::input(&meta),
        KernelArg::i32(out_dims.len() as i32),
        KernelArg::i32(dim as i32),
        KernelArg::i64(out_dims[dim] as i64),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: scatter_add_<T>(const T* src, const long long* idx, T* out, const long long* meta,
    // int rank, int dim, long long size, unsigned long long n). It reads idx[0, n), meta[0,
    // 3 rank), src at multi-indices of the index shape (within src_dims, checked) and adds into
    // out at those multi-indices with dim replaced by an index in [0, out_dims[dim]) (others
    // skipped; the index shape is within out_dims outside dim, checked).
    unsafe { backend.launch(&format!("scatter_add_{suffix}"), launch_config(backend, n), &mut args) }
}

/// `out[o, j, r] = src[o, idx[j], r]`: `src` dense `[outer, size, inner]`, `out` dense
/// `[outer, nidx, inner]` (the first `nidx` indices of `idx`).
pub fn index_select<T: DeviceElem>(
    backend: &Backend,
    src: &DeviceBuffer<T>,
    (outer, size, inner): (usize, usize, usize),
    idx: &DeviceBuffer<i64>,
    nidx: usize,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::index::index_select";
    check_len(OP, "idx", idx, nidx)?;
    let n = outer * nidx * inner;
    check_len(OP, "src", src, outer * size * inner)?;
    check_len(OP, "out", out, n)?;
    if n == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::input(src),
        KernelArg::input(idx),
        KernelArg::output(out),
        KernelArg::u64(outer as u64),
        KernelArg::u64(size as u64),
        KernelArg::u64(nidx as u64),
        KernelArg::u64(inner as u64),
    ];
    let name = format!("index_select_{}", size_suffix::<T>(OP)?);
    // SAFETY: index_select_bK(const T* src, const long long* idx, T* out, unsigned long long
    // outer, size, nidx, inner): reads idx[0, nidx), writes out[0, n) (checked), reads src at
    // (o * size + s) * inner + r < outer * size * inner for s in [0, size) (others skipped).
    unsafe { backend.launch(&name, launch_config(backend, n), &mut args) }
}

/// `out[o, idx[j], r] += src[o, j, r]`: `out` dense `[outer, size, inner]`, `src` dense
/// `[outer, nidx, inner]` (the first `nidx` indices of `idx`). `f32` and `f64`; duplicates accumulate (atomics).
pub fn index_add<T: DeviceElem>(
    backend: &Backend,
    out: &mut DeviceBuffer<T>,
    (outer, size, inner): (usize, usize, usize),
    idx: &DeviceBuffer<i64>,
    nidx: usize,
    src: &DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::index::index_add";
    check_len(OP, "idx", idx, nidx)?;
    let n = outer * nidx * inner;
    check_len(OP, "out", out, outer * size * inner)?;
    check_len(OP, "src", src, n)?;
    let suffix = add_suffix::<T>(OP)?;
    if n == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::input(src),
        KernelArg::input(idx),
        KernelArg::output(out),
        KernelArg::u64(outer as u64),
        KernelArg::u64(size as u64),
        KernelArg::u64(nidx as u64),
        KernelArg::u64(inner as u64),
    ];
    // SAFETY: index_add_<T>(const T* src, const long long* idx, T* out, unsigned long long outer,
    // size, nidx, inner): reads src[0, n) and idx[0, nidx), adds into out at (o * size + s) *
    // inner + r < outer * size * inner for s in [0, size) (others skipped).
    unsafe { backend.launch(&format!("index_add_{suffix}"), launch_config(backend, n), &mut args) }
}

/// `dst[o * row + col + x] = src[o * w + x]` for `o < outer`, `x < w`: one input of a
/// concatenation (`src` dense `[outer, w]`) into columns `col..col + w` of the `[outer, row]`
/// output.
pub fn cat_slab<T: DeviceElem>(
    backend: &Backend,
    src: &DeviceBuffer<T>,
    dst: &mut DeviceBuffer<T>,
    (outer, w, row, col): (usize, usize, usize, usize),
) -> Result<(), CudaError> {
    const OP: &str = "cuda::index::cat_slab";
    let n = outer * w;
    if col + w > row {
        return shape_err(OP, format!("columns {col}..{} outside a row of {row}", col + w));
    }
    check_len(OP, "src", src, n)?;
    check_len(OP, "dst", dst, outer * row)?;
    if n == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::input(src),
        KernelArg::output(dst),
        KernelArg::u64(outer as u64),
        KernelArg::u64(w as u64),
        KernelArg::u64(row as u64),
        KernelArg::u64(col as u64),
    ];
    let name = format!("cat_slab_{}", size_suffix::<T>(OP)?);
    // SAFETY: cat_slab_bK(const T* src, T* dst, unsigned long long outer, w, row, col): reads
    // src[0, outer * w), writes dst at o * row + col + x < outer * row (col + w <= row, checked).
    unsafe { backend.launch(&name, launch_config(backend, n), &mut args) }
}

/// Padding modes of [`pad`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadKind {
    /// The constant outside the source.
    Constant,
    /// Mirror without repeating the edge (each pad smaller than its dim).
    Reflect,
}

/// `out` (dense, `src_dims[k] + lo[k] + hi[k]` per dim) = `src` (dense `src_dims`) shifted by
/// `lo`, the border filled with `value` or reflected.
pub fn pad<T: DeviceElem>(
    backend: &Backend,
    src: &DeviceBuffer<T>,
    src_dims: &[usize],
    pads: &[(usize, usize)],
    kind: PadKind,
    value: T,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::index::pad";
    if pads.len() != src_dims.len() {
        return shape_err(OP, format!("{} (lo, hi) pairs for {} dims", pads.len(), src_dims.len()));
    }
    if kind == PadKind::Reflect
        && src_dims.iter().zip(pads).any(|(&d, &(lo, hi))| (lo > 0 || hi > 0) && (lo >= d || hi >= d))
    {
        return shape_err(OP, format!("reflect pads {pads:?} must be smaller than the dims {src_dims:?}"));
    }
    let out_dims: Vec<usize> = src_dims.iter().zip(pads).map(|(&d, &(lo, hi))| d + lo + hi).collect();
    let n: usize = out_dims.iter().product();
    check_len(OP, "src", src, src_dims.iter().product())?;
    check_len(OP, "out", out, n)?;
    if n == 0 {
        return Ok(());
    }
    if src_dims.contains(&0) && kind == PadKind::Reflect {
        return shape_err(OP, "reflect padding of an empty tensor".into());
    }
    let mut bits = 0u64;
    // SAFETY: copies size_of::<T>() <= 8 bytes (checked by size_suffix below before launch,
    // and DeviceElem types are at most 8 bytes) of a plain-old-data value into `bits`.
    let suffix = size_suffix::<T>(OP)?;
    unsafe {
        std::ptr::copy_nonoverlapping(
            &value as *const T as *const u8,
            &mut bits as *mut u64 as *mut u8,
            std::mem::size_of::<T>(),
        )
    };
    let meta: Vec<i64> =
        out_dims.iter().chain(src_dims).copied().chain(pads.iter().map(|p| p.0)).map(|v| v as i64).collect();
    let meta = backend.upload(&meta)?;
    let mut args = [
        KernelArg::input(src),
        KernelArg::output(out),
        KernelArg::input(&meta),
        KernelArg::i32(src_dims.len() as i32),
        KernelArg::i32((kind == PadKind::Reflect) as i32),
        KernelArg::u64(bits),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: pad_bK(const T* src, T* dst, const long long* meta, int rank, int reflect,
    // unsigned long long bits, unsigned long long n): writes dst[0, n) (checked), reads meta[0,
    // 3 rank) and src at source multi-indices inside src_dims: in constant mode positions
    // outside are not read; in reflect mode every pad is smaller than its (non-empty) dim
    // (checked), so one reflection lands inside.
    unsafe { backend.launch(&format!("pad_{suffix}"), launch_config(backend, n), &mut args) }
}
