//! CUDA kernels: the `.cu` sources in `kernels/cuda/`, and two ways to run them.
//!
//! * On a GPU ([`gpu`]): NVRTC compiles a source file for the device's architecture at first
//!   use, the driver loads the cubin, kernels launch through cudarc. cudarc loads
//!   `libcuda`/`libnvrtc` at run time, and this module asks whether they are present before the
//!   first call into them, so a machine without a GPU gets [`GpuUnavailable`], not a panic.
//! * On the CPU emulator ([`emu`], `kernels/emu/`): the same `.cu` files compiled as C++ by
//!   `build.rs`, every CUDA thread a fiber; built for this crate's tests (`emu` feature).
//!
//! [`Backend`] hides the difference: buffers, launches and the typed launch wrappers take a
//! backend, so one test body checks "Rust CPU kernel == emulated CUDA kernel == GPU kernel"
//! ([`parity`]). [`nvrtc`] is the compile check that CI runs on every kernel for sm_80 and
//! sm_90 (register/spill report).
//!
//! The kernel families, one `.cu` file and one wrapper module each (CPU reference in
//! parentheses; all `f32`, the element-wise kernels also `f16`/`bf16` storage):
//! * [`elementwise`]: binary add/mul, exp (`cpu::binary`, `cpu::unary`);
//! * [`reduce`]: row sums (`cpu::reduce`); [`softmax`]: (log-)softmax over rows (`cpu::softmax`);
//! * [`ctc`]: CTC loss and gradient (`cpu::ctc`);
//! * [`rnn`]: the fused LSTM and GRU gate kernels of one time step, forward and backward
//!   (`cpu::rnn`; the GEMMs around them are cuBLAS'), and [`rnn_seq`]: a whole layer direction
//!   over a sequence from those kernels and the device GEMM (`nn`'s CPU driver as reference);
//! * [`conv`]: im2col, col2im and the bias + ReLU epilogue of a 2-D convolution and its
//!   backward (`cpu::conv`; GEMMs are cuBLAS');
//! * [`pool`]: max (with argmax) and average pooling, forward and backward (`cpu::pool`);
//! * [`norm`]: layer norm and batch norm, forward and backward (`cpu::norm`);
//! * [`tensor`]: strided copy (tiled for transposed views), fill and dtype casts under the tensor
//!   layer's CUDA dispatch;
//! * [`optim`]: fused Adam/AdamW and SGD updates of one parameter (`stapes-nn`'s optimizer loops);
//! * [`random`]: Philox4x32-10 uniform, normal and Bernoulli draws (reference [`random::philox4x32`]);
//! * [`ew`]: the tensor layer's element-wise ops (unary, broadcasting binary, comparisons,
//!   `where`, all-finite) for f32/f16/bf16/f64 (`tensor` crate's `ops/elementwise.rs`).
//! * [`gemm`]: strided batched GEMM (`f32`, `f16`, `bf16`, `f64`): cuBLAS ([`blas`]) on a GPU,
//!   the tiled reference kernel of `gemm.cu` on the emulator (`cpu` GEMM as reference);
//! * [`index`]: gather, scatter_add, index_select, index_add, concatenation slabs and padding,
//!   and the device-side check of i64 indices (`cpu::index`).
//!
//! Host↔device copies of large buffers go through pinned staging chunks on a GPU ([`staging`]).

pub mod blas;
pub mod conv;
pub mod ctc;
pub mod elementwise;
pub mod emu;
pub mod ew;
pub mod gemm;
pub mod gpu;
pub mod index;
mod launch;
pub mod memory;
pub mod norm;
pub mod nvrtc;
pub mod optim;
pub mod parity;
pub mod pool;
pub mod qgemm;
pub mod random;
pub mod reduce;
pub mod reduce_nd;
pub mod rnn;
pub mod rnn_seq;
pub mod softmax;
pub mod staging;
pub mod tensor;

pub use gpu::{GpuDevice, GpuUnavailable};
pub use launch::{emu_memory, Backend, DeviceBuffer, DeviceElem, FloatElem, KernelArg, LaunchConfig};
pub use memory::{AllocError, MemoryStats};

/// One `.cu` file: its name, its source text and the `extern "C" __global__` kernels in it
/// (found by `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File name, e.g. `elementwise.cu`.
    pub file: &'static str,
    /// The whole source.
    pub source: &'static str,
    /// Kernel names in file order.
    pub kernels: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// Kernel sources of other crates, added by [`register_kernels`].
static REGISTERED_SOURCES: std::sync::RwLock<Vec<&'static KernelSource>> = std::sync::RwLock::new(Vec::new());

/// The source file defining `kernel`, among the GPU kernels, (for the emulator) the
/// emulator's self-test kernels, and the kernels other crates registered.
pub fn find_kernel(kernel: &str) -> Option<&'static KernelSource> {
    KERNEL_SOURCES.iter().chain(EMU_SELFTEST_SOURCES).find(|s| s.kernels.contains(&kernel)).or_else(|| {
        let reg = REGISTERED_SOURCES.read().unwrap_or_else(|p| p.into_inner());
        reg.iter().copied().find(|s| s.kernels.contains(&kernel))
    })
}

/// Whether `src` is one of the sources a GPU compiles: stapes' own kernels or a registered file
/// (the emulator's self-test kernels are not).
pub(crate) fn is_gpu_source(src: &KernelSource) -> bool {
    KERNEL_SOURCES.iter().any(|k| k.file == src.file)
        || REGISTERED_SOURCES.read().unwrap_or_else(|p| p.into_inner()).iter().any(|k| k.file == src.file)
}

/// Makes the kernels of another crate launchable by name through [`Backend::launch`]: on a GPU
/// their `sources` are compiled by NVRTC at first use (like stapes' own), on the emulator the
/// `emulated` launchers run them. Both tables are what `stapes-cuda-build` generates for a
/// crate's `build.rs` (its generated `register()` calls this). Registering the same tables
/// again is a no-op; a kernel or file name that stapes or another registration already uses
/// is an error, and nothing is registered.
pub fn register_kernels(
    sources: &'static [KernelSource],
    emulated: &'static [emu::EmuKernel],
) -> Result<(), CudaError> {
    let mut reg = REGISTERED_SOURCES.write().unwrap_or_else(|p| p.into_inner());
    let mut new = Vec::new();
    for src in sources {
        let known = || KERNEL_SOURCES.iter().chain(EMU_SELFTEST_SOURCES).chain(reg.iter().copied());
        if reg.iter().any(|r| std::ptr::eq(*r, src)) {
            continue;
        }
        let taken_file = known().any(|s| s.file == src.file);
        if taken_file {
            return Err(CudaError::Registration(format!(
                "a kernel file named `{}` is already registered; rename the .cu file",
                src.file
            )));
        }
        for k in src.kernels {
            let owner = known().find(|s| s.kernels.contains(k));
            if let Some(owner) = owner {
                return Err(CudaError::Registration(format!(
                    "kernel `{k}` of {} is already defined in {}: kernel names are global",
                    src.file, owner.file
                )));
            }
        }
        new.push(src);
    }
    for e in emulated {
        if !sources.iter().any(|s| s.kernels.contains(&e.name)) {
            return Err(CudaError::Registration(format!(
                "emulated kernel `{}` ({}) has no source among the registered ones",
                e.name, e.file
            )));
        }
    }
    reg.extend(new);
    emu::register(emulated);
    Ok(())
}

/// Errors of the CUDA paths (GPU and emulator).
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No registered kernel has this name.
    #[error("no CUDA kernel named `{0}` (kernels are the `extern \"C\" __global__` functions of kernels/cuda/*.cu)")]
    UnknownKernel(String),
    /// A launch's arguments do not fit the kernel (shapes, lengths or dtypes).
    #[error("{op}: {message}")]
    Shape {
        /// The kernel wrapper's name, e.g. `cuda::gemm`.
        op: &'static str,
        /// What does not fit, e.g. `out holds 6 elements, expected 8`.
        message: String,
    },
    /// A buffer of one backend was passed to a launch on the other.
    #[error("a buffer of the {buffer} backend was passed to a launch on the {launch} backend")]
    BackendMismatch {
        /// The backend that owns the buffer: `GPU` or `emulator`.
        buffer: &'static str,
        /// The backend of the launch: `GPU` or `emulator`.
        launch: &'static str,
    },
    /// The emulator was asked for, but the `emu` feature is off.
    #[error(
        "the CUDA emulator is not built into this binary (enable the `emu` feature of stapes-kernels; \
         its own tests enable it)"
    )]
    EmulatorNotBuilt,
    /// A kernel failed on the emulator; holds the emulator's message.
    #[error("{0}")]
    Emulator(String),
    /// [`register_kernels`] rejected a table: a file or kernel name is already taken.
    #[error("register_kernels: {0}")]
    Registration(String),
    /// `libnvrtc.so.13` could not be loaded.
    #[error(
        "NVRTC is not available: libnvrtc.so.13 could not be loaded. Install it with \
         `eval \"$(scripts/install-nvrtc.sh)\"` (a CUDA 13.0 NVRTC from PyPI, no GPU needed), or put a \
         CUDA 13 toolkit's lib64 on LD_LIBRARY_PATH"
    )]
    NvrtcMissing,
    /// A kernel source includes CUDA headers that no include directory holds.
    #[error(
        "{file} includes CUDA headers ({header}) but no include directory has them; searched: {searched}. \
         Run `eval \"$(scripts/install-nvrtc.sh)\"` (sets STAPES_NVRTC_DIR) or set CUDA_HOME"
    )]
    HeadersMissing {
        /// The source file, e.g. `elementwise.cu`.
        file: &'static str,
        /// The first missing header, e.g. `cuda_fp16.h`.
        header: &'static str,
        /// The directories searched, comma-separated.
        searched: String,
    },
    /// NVRTC failed to compile a kernel source.
    #[error("NVRTC failed to compile {file} for {arch}:\n{log}")]
    Compile {
        /// The source file, e.g. `elementwise.cu`.
        file: &'static str,
        /// The target architecture, e.g. `sm_90`.
        arch: String,
        /// NVRTC's compile log.
        log: String,
    },
    /// An NVRTC call failed (other than the compilation itself).
    #[error("NVRTC error on {file}: {message}")]
    Nvrtc {
        /// The source file being compiled.
        file: &'static str,
        /// NVRTC's error message.
        message: String,
    },
    /// A device allocation failed: out of memory, or another driver error.
    #[error("{0}")]
    Alloc(memory::AllocError),
    /// `libcublas.so.13` could not be loaded.
    #[error(
        "cuBLAS is not available: libcublas.so.13 could not be loaded (GEMMs on a GPU need it; put a CUDA 13 \
         toolkit's lib64, or the nvidia-cublas wheel's nvidia/cu13/lib, on LD_LIBRARY_PATH)"
    )]
    CublasMissing,
    /// cuBLAS failed; holds what was being done and cuBLAS's message.
    #[error("cuBLAS error: {0}")]
    Cublas(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver error in {context}: {message}")]
    Driver {
        /// What was being done, e.g. `launching ew_add_f32`.
        context: String,
        /// The driver's error message.
        message: String,
    },
}

impl CudaError {
    pub(crate) fn driver(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        CudaError::Driver { context: context.into(), message: err.to_string() }
    }
}
