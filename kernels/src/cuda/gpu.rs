//! The GPU path: a CUDA device opened through cudarc, kernels compiled by NVRTC per source file
//! at first use (cubin for the device's exact architecture) and cached for the process.
//!
//! Every entry point checks that `libcuda` (and `libnvrtc`) can be loaded before calling into
//! cudarc, whose dynamically loaded bindings panic on a missing library: on a machine without
//! a GPU, [`GpuDevice::open`] returns [`GpuUnavailable`] and nothing else happens.

use super::launch::{ArgKind, KernelArg, LaunchConfig, Scalar};
use super::memory::{CachingAllocator, RawAllocError, RawAllocator};
use super::staging::PinnedStaging;
use super::{find_kernel, is_gpu_source, nvrtc, CudaError};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Why no GPU can be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuUnavailable {
    /// `libcuda` could not be loaded: no NVIDIA driver.
    #[error("no CUDA driver: libcuda could not be loaded (no NVIDIA driver on this machine)")]
    NoDriver,
    /// The driver failed to initialise or to count devices; holds its message.
    #[error("the CUDA driver failed to initialise: {0}")]
    DriverInit(String),
    /// The requested ordinal is not below the device count.
    #[error("CUDA device {ordinal} requested, the driver reports {count} device(s)")]
    NoDevice {
        /// The requested device ordinal.
        ordinal: usize,
        /// The number of devices the driver reports.
        count: usize,
    },
    /// A GPU is present but `libnvrtc.so.13` could not be loaded.
    #[error("a GPU is present but NVRTC is not: libnvrtc.so.13 could not be loaded (put it on LD_LIBRARY_PATH)")]
    NoNvrtc,
    /// Creating the device's context or reading its properties failed.
    #[error("opening CUDA device {ordinal}: {message}")]
    Open {
        /// The device ordinal.
        ordinal: usize,
        /// The driver's error message.
        message: String,
    },
}

/// Whether `libcuda` can be loaded (checked once).
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library's candidate names.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// An open CUDA device with one stream and a cache of compiled kernel modules.
pub struct GpuDevice {
    ordinal: usize,
    name: String,
    compute_capability: (i32, i32),
    multiprocessors: u32,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Loaded modules by source file name.
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// The cuBLAS handle, created at the first GEMM ([`super::blas`]).
    blas: super::blas::BlasSlot,
    /// The caching allocator every buffer of this device comes from.
    memory: Arc<CachingAllocator<GpuMemory>>,
    /// Pinned host chunks for large host↔device copies ([`super::staging`]).
    staging: PinnedStaging,
}

/// Raw device memory of one GPU: stream-ordered allocations on the device's stream.
pub struct GpuMemory {
    stream: Arc<CudaStream>,
    name: String,
}

impl RawAllocator for GpuMemory {
    type Block = CudaSlice<u8>;
    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>, RawAllocError> {
        // SAFETY: the bytes are uninitialised device memory; every user writes before reading
        // (`Backend::zeros` memsets, uploads copy, kernels write their outputs).
        unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| {
            if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                RawAllocError::OutOfMemory
            } else {
                RawAllocError::Other(e.to_string())
            }
        })
    }
    fn released(&self) {
        // cuMemFreeAsync returns memory to the driver's pool in stream order: wait for it, so the
        // retry sees the freed bytes.
        let _ = self.stream.synchronize();
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl GpuDevice {
    /// Opens device `ordinal`, or says why it cannot.
    pub fn open(ordinal: usize) -> Result<Arc<Self>, GpuUnavailable> {
        if !driver_present() {
            return Err(GpuUnavailable::NoDriver);
        }
        let count = CudaContext::device_count().map_err(|e| GpuUnavailable::DriverInit(e.to_string()))?;
        if ordinal >= count.max(0) as usize {
            return Err(GpuUnavailable::NoDevice { ordinal, count: count.max(0) as usize });
        }
        if !nvrtc::library_present() {
            return Err(GpuUnavailable::NoNvrtc);
        }
        let open_err = |e: cudarc::driver::DriverError| GpuUnavailable::Open { ordinal, message: e.to_string() };
        let ctx = CudaContext::new(ordinal).map_err(open_err)?;
        let name = ctx.name().map_err(open_err)?;
        let compute_capability = ctx.compute_capability().map_err(open_err)?;
        let multiprocessors =
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(open_err)?.max(1)
                as u32;
        let stream = ctx.default_stream();
        let memory =
            CachingAllocator::new(GpuMemory { stream: stream.clone(), name: format!("GPU {ordinal} ({name})") });
        Ok(Arc::new(GpuDevice {
            memory,
            ordinal,
            name,
            compute_capability,
            multiprocessors,
            ctx,
            stream,
            modules: Mutex::new(HashMap::new()),
            blas: Default::default(),
            staging: PinnedStaging::new(),
        }))
    }

    /// Device 0, opened once per process (the error is kept too, so the probe runs once).
    pub fn first() -> Result<Arc<Self>, GpuUnavailable> {
        static FIRST: OnceLock<Result<Arc<GpuDevice>, GpuUnavailable>> = OnceLock::new();
        FIRST.get_or_init(|| GpuDevice::open(0)).clone()
    }

    /// `GPU 0: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)`.
    pub fn describe(&self) -> String {
        format!("GPU {}: {} ({}, {} SMs)", self.ordinal, self.name, self.arch(), self.multiprocessors)
    }

    /// The architecture NVRTC compiles for, `sm_<major><minor>`.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.compute_capability.0, self.compute_capability.1)
    }

    /// Streaming multiprocessors.
    pub fn multiprocessor_count(&self) -> u32 {
        self.multiprocessors
    }

    /// The context (for cuBLAS and friends).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch of this device goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The slot of the device's cuBLAS handle.
    pub(crate) fn blas_slot(&self) -> &super::blas::BlasSlot {
        &self.blas
    }

    /// Waits for all work queued on the stream.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(|e| CudaError::driver("synchronize", e))
    }

    /// How host↔device copies are made: whether and from what size they are staged through
    /// pinned memory ([`super::staging`]), or why not.
    pub fn describe_transfers(&self) -> String {
        self.staging.describe()
    }

    /// Copies `src` into the first `src.len()` bytes of `dst`, queued on the device's stream:
    /// through the pinned staging chunks when the copy is large enough, else (or when they are
    /// unavailable or busy) straight from pageable memory. Either way `src` may be reused when
    /// this returns.
    pub(crate) fn copy_to_device(&self, src: &[u8], dst: &mut CudaSlice<u8>) -> Result<(), CudaError> {
        if self.staging.upload(&self.ctx, &self.stream, src, dst)? {
            return Ok(());
        }
        self.stream
            .memcpy_htod(src, &mut dst.slice_mut(0..src.len()))
            .map_err(|e| CudaError::driver(format!("copy to device of {} bytes", src.len()), e))
    }

    /// Copies the first `dst.len()` bytes of `src` into `dst` after everything queued on the
    /// device's stream, and returns once they are there (staged like [`Self::copy_to_device`]).
    pub(crate) fn copy_to_host(&self, src: &CudaSlice<u8>, dst: &mut [u8]) -> Result<(), CudaError> {
        if self.staging.download(&self.ctx, &self.stream, src, dst)? {
            return Ok(());
        }
        let bytes = dst.len();
        self.stream
            .memcpy_dtoh(&src.slice(0..bytes), dst)
            .map_err(|e| CudaError::driver(format!("copy to host of {bytes} bytes"), e))
    }

    /// The device's caching allocator.
    pub fn memory(&self) -> &Arc<CachingAllocator<GpuMemory>> {
        &self.memory
    }

    /// Free and total device memory in bytes, as the driver reports them.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        self.ctx.mem_get_info().map_err(|e| CudaError::driver("cuMemGetInfo", e))
    }

    /// The kernel's function handle, compiling and loading its source file at first use.
    pub fn function(&self, kernel: &str) -> Result<CudaFunction, CudaError> {
        let src = find_kernel(kernel)
            .filter(|s| is_gpu_source(s))
            .ok_or_else(|| CudaError::UnknownKernel(kernel.to_string()))?;
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(src.file) {
                Some(m) => m.clone(),
                None => {
                    let compiled = nvrtc::compile(src, &self.arch(), false)?;
                    let m = self
                        .ctx
                        .load_module(Ptx::from_binary(compiled.cubin))
                        .map_err(|e| CudaError::driver(format!("loading the cubin of {}", src.file), e))?;
                    modules.insert(src.file, m.clone());
                    m
                }
            }
        };
        module.load_function(kernel).map_err(|e| CudaError::driver(format!("finding kernel {kernel}"), e))
    }

    /// Queues `kernel` on the device's stream (asynchronous; [`Self::synchronize`] or a download
    /// waits for it). See [`super::Backend::launch`] for the contract on `args`.
    pub(crate) fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &mut [KernelArg<'_>]) -> Result<(), CudaError> {
        enum Value {
            Ptr(u64),
            Scalar(Scalar),
        }
        let func = self.function(kernel)?;
        let mut values = Vec::with_capacity(args.len());
        // The guards record the stream's events when dropped, after the launch is queued:
        // cudarc's read/write tracking for buffers shared between streams.
        let mut guards = Vec::with_capacity(args.len());
        let stream: &CudaStream = &self.stream;
        for a in args.iter_mut() {
            match &mut a.0 {
                ArgKind::Input(b) => {
                    let (p, g) = b.gpu_ptr(stream).expect("checked by Backend::launch");
                    values.push(Value::Ptr(p));
                    guards.push(g);
                }
                ArgKind::Output(b) => {
                    let (p, g) = b.gpu_ptr_mut(stream).expect("checked by Backend::launch");
                    values.push(Value::Ptr(p));
                    guards.push(g);
                }
                ArgKind::Scalar(s) => values.push(Value::Scalar(*s)),
            }
        }
        let mut builder = self.stream.launch_builder(&func);
        for v in &values {
            match v {
                Value::Ptr(p) => builder.arg(p),
                Value::Scalar(Scalar::I32(x)) => builder.arg(x),
                Value::Scalar(Scalar::U32(x)) => builder.arg(x),
                Value::Scalar(Scalar::I64(x)) => builder.arg(x),
                Value::Scalar(Scalar::U64(x)) => builder.arg(x),
                Value::Scalar(Scalar::F32(x)) => builder.arg(x),
                Value::Scalar(Scalar::F64(x)) => builder.arg(x),
            };
        }
        let launch_cfg = cudarc::driver::LaunchConfig {
            grid_dim: cfg.grid,
            block_dim: cfg.block,
            shared_mem_bytes: cfg.shared_mem_bytes,
        };
        // SAFETY: the argument list matches the kernel (the caller's contract); the buffers stay
        // borrowed until the guards are dropped, after the launch is queued.
        unsafe { builder.launch(launch_cfg) }.map_err(|e| CudaError::driver(format!("launching {kernel}"), e))?;
        drop(guards);
        Ok(())
    }
}
