//! Strided batched GEMM on a [`Backend`]: cuBLAS on a GPU ([`super::blas`]), the tiled reference
//! kernel of `kernels/cuda/gemm.cu` on the emulator (which has no cuBLAS) or when asked for
//! ([`gemm_kernel`], the reference the cuBLAS path is tested against).
//!
//! Everything is row-major, as the tensor layer: for `z in 0..batch`,
//! `C_z = alpha * op(A_z) * op(B_z) + beta * C_z`, with `C_z` an `m x n` matrix at
//! `c[offset_c + z * stride_c]` with row stride `ldc`, `op(A_z)` `m x k` and `op(B_z)` `k x n`.
//! Without a transpose `A_z` is stored `m x k` with row stride `lda`; with one it is stored
//! `k x m` (so a transposed view of a contiguous matrix needs no copy). Likewise `B`.
//! `f16`/`bf16` accumulate in `f32` (tensor cores on a GPU), `f32` in `f32` (TF32 tensor cores
//! only when [`GemmConfig::allow_tf32`]), `f64` in `f64`. `beta == 0` never reads `C`.
//! The CPU reference is [`crate::cpu`]'s GEMM as the tensor layer's `matmul` calls it.

use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg, LaunchConfig};
use super::CudaError;
use cudarc::cublas::sys::cudaDataType;

/// Element types with a GEMM: `f32`, `f16`, `bf16`, `f64`.
pub trait GemmElem: DeviceElem {
    /// The reference kernel's name.
    const KERNEL: &'static str;
    /// The cuBLAS data type.
    const CUDA_TYPE: cudaDataType;
    /// Whether the accumulation is in `f64` (else `f32`).
    const ACC_F64: bool;
}

impl GemmElem for f32 {
    const KERNEL: &'static str = "gemm_f32";
    const CUDA_TYPE: cudaDataType = cudaDataType::CUDA_R_32F;
    const ACC_F64: bool = false;
}
impl GemmElem for half::f16 {
    const KERNEL: &'static str = "gemm_f16";
    const CUDA_TYPE: cudaDataType = cudaDataType::CUDA_R_16F;
    const ACC_F64: bool = false;
}
impl GemmElem for half::bf16 {
    const KERNEL: &'static str = "gemm_bf16";
    const CUDA_TYPE: cudaDataType = cudaDataType::CUDA_R_16BF;
    const ACC_F64: bool = false;
}
impl GemmElem for f64 {
    const KERNEL: &'static str = "gemm_f64";
    const CUDA_TYPE: cudaDataType = cudaDataType::CUDA_R_64F;
    const ACC_F64: bool = true;
}

/// The shape, strides and scalars of one (strided batched) GEMM; see the module docs.
/// All strides and offsets are in elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmConfig {
    /// `A` is stored `k x m` (op(A) = A^T).
    pub transa: bool,
    /// `B` is stored `n x k` (op(B) = B^T).
    pub transb: bool,
    /// Rows of `op(A)` and of `C`.
    pub m: usize,
    /// Columns of `op(B)` and of `C`.
    pub n: usize,
    /// Columns of `op(A)`, rows of `op(B)`: the reduced dimension.
    pub k: usize,
    /// Number of matrices.
    pub batch: usize,
    /// Scale of the product `op(A) * op(B)`.
    pub alpha: f64,
    /// Scale of the previous `C` (0: `C` is not read).
    pub beta: f64,
    /// Row stride of `A` as stored.
    pub lda: usize,
    /// Row stride of `B` as stored.
    pub ldb: usize,
    /// Row stride of `C`.
    pub ldc: usize,
    /// Distance between consecutive `A_z` (0 broadcasts one matrix over the batch).
    pub stride_a: usize,
    /// Distance between consecutive `B_z` (0 broadcasts one matrix over the batch).
    pub stride_b: usize,
    /// Distance between consecutive `C_z` (the `C_z` must not overlap).
    pub stride_c: usize,
    /// Element index of `A_0` in its buffer.
    pub offset_a: usize,
    /// Element index of `B_0` in its buffer.
    pub offset_b: usize,
    /// Element index of `C_0` in its buffer.
    pub offset_c: usize,
    /// Lets an `f32` GEMM on a GPU use TF32 tensor cores (10-bit mantissa products), like
    /// `torch.backends.cuda.matmul.allow_tf32`. Ignored by the reference kernel (plain FP32).
    pub allow_tf32: bool,
}

impl GemmConfig {
    /// A single `C = A * B` of dense row-major operands (no transposes, no offsets, batch 1).
    /// The leading dimensions are at least 1 (BLAS's rule), so an empty `k` or `n` is valid.
    pub fn dense(m: usize, n: usize, k: usize) -> Self {
        GemmConfig {
            transa: false,
            transb: false,
            m,
            n,
            k,
            batch: 1,
            alpha: 1.0,
            beta: 0.0,
            lda: k.max(1),
            ldb: n.max(1),
            ldc: n.max(1),
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            offset_a: 0,
            offset_b: 0,
            offset_c: 0,
            allow_tf32: false,
        }
    }

    /// Whether the GEMM writes nothing (`m`, `n` or `batch` is 0).
    pub fn is_empty(&self) -> bool {
        self.m == 0 || self.n == 0 || self.batch == 0
    }

    /// Checks the leading dimensions (as BLAS: at least the stored row length), that every
    /// element addressed lies inside the buffers, that the `C_z` do not overlap, and that the
    /// sizes fit the 32-bit arguments of the kernels and of cuBLAS.
    pub fn validate(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<(), CudaError> {
        const OP: &str = "cuda::gemm";
        let err = |message: String| Err(CudaError::Shape { op: OP, message });
        let c = self;
        let int_max = i32::MAX as usize;
        if [c.m, c.n, c.k, c.batch, c.lda, c.ldb, c.ldc].iter().any(|&v| v > int_max) {
            return err(format!("sizes beyond 32-bit GEMM arguments: {c:?}"));
        }
        if self.is_empty() {
            return Ok(());
        }
        // (rows, cols) of A and B as stored.
        let (ar, ac) = if c.transa { (c.k, c.m) } else { (c.m, c.k) };
        let (br, bc) = if c.transb { (c.n, c.k) } else { (c.k, c.n) };
        let operands =
            [("A", ar, ac, c.lda, c.stride_a, c.offset_a, a_len), ("B", br, bc, c.ldb, c.stride_b, c.offset_b, b_len)];
        for (name, rows, cols, ld, stride, offset, len) in operands {
            if ld < cols.max(1) {
                return err(format!("ld{} = {ld} is smaller than the stored row length {cols}", name.to_lowercase()));
            }
            if rows == 0 || cols == 0 {
                continue;
            }
            let last = offset + (c.batch - 1) * stride + (rows - 1) * ld + cols - 1;
            if last >= len {
                return err(format!("{name} reaches element {last} of a {len}-element buffer ({c:?})"));
            }
        }
        if c.ldc < c.n {
            return err(format!("ldc = {} is smaller than n = {}", c.ldc, c.n));
        }
        let c_extent = (c.m - 1) * c.ldc + c.n;
        if c.batch > 1 && c.stride_c < c_extent {
            return err(format!("stride_c = {} makes the C matrices overlap (each spans {c_extent})", c.stride_c));
        }
        let last = c.offset_c + (c.batch - 1) * c.stride_c + c_extent - 1;
        if last >= c_len {
            return err(format!("C reaches element {last} of a {c_len}-element buffer ({c:?})"));
        }
        Ok(())
    }
}

/// The GEMM of `cfg` on `backend`: cuBLAS on a GPU, the reference kernel on the emulator.
pub fn gemm<T: GemmElem>(
    backend: &Backend,
    cfg: &GemmConfig,
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    c: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    match backend {
        Backend::Gpu(dev) => {
            cfg.validate(a.len(), b.len(), c.len())?;
            if cfg.is_empty() {
                return Ok(());
            }
            super::blas::gemm(dev, cfg, a, b, c)
        }
        Backend::Emu(_) => gemm_kernel(backend, cfg, a, b, c),
    }
}

/// Blocks in the z dimension of one launch (the CUDA limit); larger batches take several.
const MAX_GRID_Z: usize = 65_535;
/// The reference kernel's tile (see `gemm.cu`).
const TILE: usize = 64;

/// The GEMM of `cfg` by the tiled reference kernel of `gemm.cu`, on any backend.
pub fn gemm_kernel<T: GemmElem>(
    backend: &Backend,
    cfg: &GemmConfig,
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    c: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    cfg.validate(a.len(), b.len(), c.len())?;
    if cfg.is_empty() {
        return Ok(());
    }
    let grid_y = cfg.m.div_ceil(TILE);
    if grid_y > MAX_GRID_Z {
        let message = format!("m = {} needs {grid_y} row tiles, more than the 65535 a grid holds", cfg.m);
        return Err(CudaError::Shape { op: "cuda::gemm", message });
    }
    let grid_x = cfg.n.div_ceil(TILE) as u32;
    let mut z0 = 0;
    while z0 < cfg.batch {
        let nz = (cfg.batch - z0).min(MAX_GRID_Z);
        let launch = LaunchConfig { grid: (grid_x, grid_y as u32, nz as u32), block: (256, 1, 1), shared_mem_bytes: 0 };
        let mut args = [
            KernelArg::input(a),
            KernelArg::input(b),
            KernelArg::output(c),
            KernelArg::i32(cfg.transa as i32),
            KernelArg::i32(cfg.transb as i32),
            KernelArg::i32(cfg.m as i32),
            KernelArg::i32(cfg.n as i32),
            KernelArg::i32(cfg.k as i32),
            KernelArg::i64(cfg.lda as i64),
            KernelArg::i64(cfg.ldb as i64),
            KernelArg::i64(cfg.ldc as i64),
            KernelArg::i64(cfg.stride_a as i64),
            KernelArg::i64(cfg.stride_b as i64),
            KernelArg::i64(cfg.stride_c as i64),
            KernelArg::i64((cfg.offset_a + z0 * cfg.stride_a) as i64),
            KernelArg::i64((cfg.offset_b + z0 * cfg.stride_b) as i64),
            KernelArg::i64((cfg.offset_c + z0 * cfg.stride_c) as i64),
            KernelArg::f64(cfg.alpha),
            KernelArg::f64(cfg.beta),
        ];
        // SAFETY: gemm_<T>(const T* a, const T* b, T* c, int transa, int transb, int m, int n,
        // int k, long long lda, ldb, ldc, stride_a, stride_b, stride_c, off_a, off_b, off_c,
        // double alpha, double beta), matching the list above. The kernel touches A, B and C only
        // at the indices `validate` bounded by the buffer lengths (batches z0..z0+nz of the
        // checked 0..batch), bounds-checks rows >= m, columns >= n and k indices >= k, and C
        // matrices of different z do not overlap (checked), so no two threads write one element.
        unsafe { backend.launch(T::KERNEL, launch, &mut args)? };
        z0 += nz;
    }
    Ok(())
}
