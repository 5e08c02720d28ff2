//! cuBLAS on a GPU: one handle per [`GpuDevice`], created at the first GEMM and kept for the
//! device's lifetime, bound to the device's stream (so GEMMs are ordered with every kernel
//! launch, no synchronisation). `libcublas` is probed before cudarc is called (cudarc's dynamic
//! loading panics on a missing library): a GPU without it gets [`CudaError::CublasMissing`].
//!
//! Row-major GEMMs go through the usual swap: cuBLAS is column-major, and a row-major `m x n`
//! matrix with row stride `ld` is the column-major `n x m` matrix with leading dimension `ld`,
//! so `C = op(A) op(B)` (row-major) is `C^T = op(B)^T op(A)^T` (column-major): cuBLAS gets
//! `(n, m, k)`, `B` first with `transb`, then `A` with `transa`, unchanged leading dimensions.
//! One `cublasGemmStridedBatchedEx` per call, with the compute type:
//! * `f32`: `CUBLAS_COMPUTE_32F` (true FP32), or `CUBLAS_COMPUTE_32F_FAST_TF32` when
//!   [`GemmConfig::allow_tf32`];
//! * `f16`, `bf16`: `CUBLAS_COMPUTE_32F` (f32 accumulation on tensor cores, `C` rounded once);
//! * `f64`: `CUBLAS_COMPUTE_64F`.

use super::gemm::{GemmConfig, GemmElem};
use super::gpu::GpuDevice;
use super::launch::{DeviceBuffer, RawBuffer};
use super::CudaError;
use cudarc::cublas::{sys, CudaBlas};
use std::ffi::c_void;
use std::sync::OnceLock;

/// Whether `libcublas` can be loaded (checked once).
pub fn cublas_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library's candidate names.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// The per-device handle slot, a field of [`GpuDevice`] (the error is kept, so a failure is
/// reported the same way every time without retrying).
pub(crate) type BlasSlot = OnceLock<Result<CudaBlas, String>>;

/// The device's cuBLAS handle, created at first use.
fn handle(dev: &GpuDevice) -> Result<&CudaBlas, CudaError> {
    if !cublas_present() {
        return Err(CudaError::CublasMissing);
    }
    dev.blas_slot()
        .get_or_init(|| {
            let blas = CudaBlas::new(dev.stream().clone()).map_err(|e| format!("creating the cuBLAS handle: {e}"))?;
            // SAFETY: a valid handle; the default math mode keeps FP32 GEMMs in FP32 (TF32 is
            // asked for per call through the compute type).
            unsafe { sys::cublasSetMathMode(*blas.handle(), sys::cublasMath_t::CUBLAS_DEFAULT_MATH) }
                .result()
                .map_err(|e| format!("cublasSetMathMode: {e}"))?;
            Ok(blas)
        })
        .as_ref()
        .map_err(|e| CudaError::Cublas(e.clone()))
}

/// `cfg` (already validated, not empty) through `cublasGemmStridedBatchedEx`.
pub(crate) fn gemm<T: GemmElem>(
    dev: &GpuDevice,
    cfg: &GemmConfig,
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    c: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    let blas = handle(dev)?;
    dev.context().bind_to_thread().map_err(|e| CudaError::driver("binding the context for cuBLAS", e))?;
    let stream = dev.stream();
    let size = std::mem::size_of::<T>() as u64;
    let (pa, ga) = a.gpu_ptr(stream).ok_or(CudaError::BackendMismatch { buffer: "emulator", launch: "GPU" })?;
    let (pb, gb) = b.gpu_ptr(stream).ok_or(CudaError::BackendMismatch { buffer: "emulator", launch: "GPU" })?;
    let (pc, gc) = c.gpu_ptr_mut(stream).ok_or(CudaError::BackendMismatch { buffer: "emulator", launch: "GPU" })?;
    let (pa, pb, pc) =
        (pa + cfg.offset_a as u64 * size, pb + cfg.offset_b as u64 * size, pc + cfg.offset_c as u64 * size);
    let op = |t: bool| if t { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N };
    let compute = if T::ACC_F64 {
        sys::cublasComputeType_t::CUBLAS_COMPUTE_64F
    } else if cfg.allow_tf32 && T::CUDA_TYPE == sys::cudaDataType::CUDA_R_32F {
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
    } else {
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
    };
    // alpha and beta in the compute type (host pointers: the handle's default pointer mode).
    let (alpha64, beta64) = (cfg.alpha, cfg.beta);
    let (alpha32, beta32) = (cfg.alpha as f32, cfg.beta as f32);
    let (alpha, beta): (*const c_void, *const c_void) = if T::ACC_F64 {
        (&alpha64 as *const f64 as *const c_void, &beta64 as *const f64 as *const c_void)
    } else {
        (&alpha32 as *const f32 as *const c_void, &beta32 as *const f32 as *const c_void)
    };
    // SAFETY: the handle is bound to `stream`, on which the buffers are ordered (the guards
    // record their use when dropped). `cfg` was validated against the buffer lengths: every
    // element cuBLAS addresses (the column-major restatement of the same row-major matrices,
    // see the module docs) lies inside the buffers, the leading dimensions are at least the
    // stored row lengths, and all sizes fit in c_int. alpha/beta point to locals of the compute
    // type that outlive the call (cuBLAS reads host scalars before returning).
    let status = unsafe {
        sys::cublasGemmStridedBatchedEx(
            *blas.handle(),
            op(cfg.transb),
            op(cfg.transa),
            cfg.n as i32,
            cfg.m as i32,
            cfg.k as i32,
            alpha,
            pb as *const c_void,
            T::CUDA_TYPE,
            cfg.ldb as i32,
            cfg.stride_b as i64,
            pa as *const c_void,
            T::CUDA_TYPE,
            cfg.lda as i32,
            cfg.stride_a as i64,
            beta,
            pc as *mut c_void,
            T::CUDA_TYPE,
            cfg.ldc as i32,
            cfg.stride_c as i64,
            cfg.batch as i32,
            compute,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    };
    drop((ga, gb, gc));
    status.result().map_err(|e| CudaError::Cublas(format!("cublasGemmStridedBatchedEx: {e}")))
}
