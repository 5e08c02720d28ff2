//! Backend-neutral buffers and launches: the same [`KernelArg`] list launches a kernel on the
//! GPU (cudarc, `void** args` through the driver) or on the emulator (`void** args` through
//! the generated C launcher), so a launch wrapper is written once for both.

use super::emu::{self, EmuSchedule};
use super::gpu::{GpuDevice, GpuMemory, GpuUnavailable};
use super::memory::{AllocError, Block, CachingAllocator, EmuMemory, MemoryStats};
use super::CudaError;
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, SyncOnDrop, ValidAsZeroBits};
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

/// Element types a kernel buffer may hold.
pub trait DeviceElem: Copy + Default + Send + Sync + DeviceRepr + ValidAsZeroBits + std::fmt::Debug + 'static {
    /// The dtype's name, also the suffix of its kernels (`binary_add_f16`).
    const NAME: &'static str;
    /// The value as `f64` (for comparisons and reports).
    fn as_f64(self) -> f64;
}

macro_rules! device_elem {
    ($($t:ty => $name:literal, |$v:ident| $conv:expr;)*) => {$(
        impl DeviceElem for $t {
            const NAME: &'static str = $name;
            #[inline]
            fn as_f64(self) -> f64 {
                let $v = self;
                $conv
            }
        }
    )*};
}

device_elem! {
    f32 => "f32", |v| v as f64;
    f64 => "f64", |v| v;
    half::f16 => "f16", |v| v.to_f64();
    half::bf16 => "bf16", |v| v.to_f64();
    i32 => "i32", |v| v as f64;
    u32 => "u32", |v| v as f64;
    i64 => "i64", |v| v as f64;
    u64 => "u64", |v| v as f64;
    u8 => "u8", |v| v as f64;
    i8 => "i8", |v| v as f64;
}

/// The floating-point dtypes the element-wise kernels exist for (`f32`, `f16`, `bf16`).
pub trait FloatElem: DeviceElem {
    /// Widening to `f32`, the compute type of every float kernel.
    fn to_f32(self) -> f32;
    /// Rounding from `f32` to nearest even.
    fn from_f32(v: f32) -> Self;
}

impl FloatElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl FloatElem for half::f16 {
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}
impl FloatElem for half::bf16 {
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

/// Grid and block shape of a launch, and its dynamic shared memory in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks per grid, `(x, y, z)`.
    pub grid: (u32, u32, u32),
    /// Threads per block, `(x, y, z)`.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_mem_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch with no dynamic shared memory.
    pub fn linear(grid: u32, block: u32) -> Self {
        LaunchConfig { grid: (grid, 1, 1), block: (block, 1, 1), shared_mem_bytes: 0 }
    }
}

/// Where kernels run: the GPU, or the CPU emulator of `kernels/emu/`.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The emulator, with its thread schedule.
    Emu(EmuSchedule),
    /// A CUDA device.
    Gpu(Arc<GpuDevice>),
}

impl Backend {
    /// The emulator with the schedule chosen by the environment ([`EmuSchedule::from_env`]).
    pub fn emulator() -> Self {
        Backend::Emu(EmuSchedule::from_env())
    }

    /// The emulator with a given schedule (the self-tests force the random one).
    pub fn emulator_with(schedule: EmuSchedule) -> Self {
        Backend::Emu(schedule)
    }

    /// CUDA device `ordinal`, or why there is none (never panics on a machine without CUDA).
    pub fn gpu(ordinal: usize) -> Result<Self, GpuUnavailable> {
        GpuDevice::open(ordinal).map(Backend::Gpu)
    }

    /// How host↔device copies are made (plain host copies on the emulator; on a GPU, whether
    /// and from what size they are staged through pinned memory).
    pub fn describe_transfers(&self) -> String {
        match self {
            Backend::Emu(_) => "emulator: plain host copies".to_string(),
            Backend::Gpu(d) => d.describe_transfers(),
        }
    }

    /// A description for test reports, including the emulator's schedule and seed.
    pub fn describe(&self) -> String {
        match self {
            Backend::Emu(s) => format!("CUDA emulator ({})", s.describe()),
            Backend::Gpu(d) => d.describe(),
        }
    }

    /// Whether this is the CPU emulator (not a GPU).
    pub fn is_emulator(&self) -> bool {
        matches!(self, Backend::Emu(_))
    }

    fn kind(&self) -> &'static str {
        match self {
            Backend::Emu(_) => "emulator",
            Backend::Gpu(_) => "GPU",
        }
    }

    /// Streaming multiprocessors, for sizing grids. The emulator reports 2, which keeps its grids
    /// small (fewer fibers) and makes grid-stride loops iterate even on small test inputs.
    pub fn multiprocessor_count(&self) -> u32 {
        match self {
            Backend::Emu(_) => 2,
            Backend::Gpu(d) => d.multiprocessor_count(),
        }
    }

    /// A new buffer of `len` elements whose contents are unspecified (kernels that write every
    /// element take their outputs from here; the emulator fills it with a NaN-like pattern).
    pub fn alloc<T: DeviceElem>(&self, len: usize) -> Result<DeviceBuffer<T>, CudaError> {
        let bytes = len * std::mem::size_of::<T>();
        let mem = match self {
            Backend::Emu(_) => Mem::Host(emu_memory().alloc(bytes)?),
            Backend::Gpu(_) if len == 0 => Mem::Gpu(None),
            Backend::Gpu(d) => Mem::Gpu(Some(d.memory().alloc(bytes)?)),
        };
        Ok(DeviceBuffer { mem, len, _t: PhantomData })
    }

    /// Copies `host` into a new device buffer. On a GPU, copies of at least 1 MiB go through
    /// the device's pinned staging chunks ([`super::staging`]); the copy may still be in flight
    /// when this returns (ordered before every later launch), but `host` may be reused.
    pub fn upload<T: DeviceElem>(&self, host: &[T]) -> Result<DeviceBuffer<T>, CudaError> {
        let mut buf = self.alloc::<T>(host.len())?;
        let bytes = std::mem::size_of_val(host);
        // SAFETY: plain-old-data elements viewed as bytes.
        let src = unsafe { std::slice::from_raw_parts(host.as_ptr() as *const u8, bytes) };
        match (&mut buf.mem, self) {
            (Mem::Host(b), _) => {
                // SAFETY: the block holds at least `bytes` bytes (its size class).
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), b.get_mut().as_mut_ptr(), bytes) }
            }
            (Mem::Gpu(Some(b)), Backend::Gpu(d)) => d.copy_to_device(src, b.get_mut())?,
            _ => {}
        }
        Ok(buf)
    }

    /// A new zero-filled device buffer of `len` elements.
    pub fn zeros<T: DeviceElem>(&self, len: usize) -> Result<DeviceBuffer<T>, CudaError> {
        let mut buf = self.alloc::<T>(len)?;
        let bytes = len * std::mem::size_of::<T>();
        match (&mut buf.mem, self) {
            (Mem::Host(b), _) => {
                // SAFETY: the block holds at least `bytes` bytes.
                unsafe { std::ptr::write_bytes(b.get_mut().as_mut_ptr(), 0, bytes) }
            }
            (Mem::Gpu(Some(b)), Backend::Gpu(d)) => d
                .stream()
                .memset_zeros(&mut b.get_mut().slice_mut(0..bytes))
                .map_err(|e| CudaError::driver("memset", e))?,
            _ => {}
        }
        Ok(buf)
    }

    /// Copies a device buffer back to the host (waits for the kernels writing it). On a GPU,
    /// large copies go through the pinned staging chunks, like [`Backend::upload`]'s.
    pub fn download<T: DeviceElem>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>, CudaError> {
        let bytes = buf.len * std::mem::size_of::<T>();
        let mut out = vec![T::default(); buf.len];
        // SAFETY: plain-old-data elements viewed as bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, bytes) };
        match (&buf.mem, self) {
            (Mem::Host(b), Backend::Emu(_)) => {
                // SAFETY: the block holds at least `bytes` bytes.
                unsafe { std::ptr::copy_nonoverlapping(b.get().as_ptr(), dst.as_mut_ptr(), bytes) }
            }
            (Mem::Gpu(Some(b)), Backend::Gpu(d)) => d.copy_to_host(b.get(), dst)?,
            (Mem::Gpu(None), Backend::Gpu(_)) => {}
            (m, _) => return Err(CudaError::BackendMismatch { buffer: m.kind(), launch: self.kind() }),
        }
        Ok(out)
    }

    /// A new buffer holding a copy of `src` (a device-to-device copy on a GPU: the bandwidth
    /// reference of the benchmarks).
    pub fn copy<T: DeviceElem>(&self, src: &DeviceBuffer<T>) -> Result<DeviceBuffer<T>, CudaError> {
        let mut dst = self.alloc::<T>(src.len)?;
        let bytes = src.len * std::mem::size_of::<T>();
        match (&src.mem, &mut dst.mem, self) {
            (Mem::Host(s), Mem::Host(d), _) => {
                // SAFETY: both blocks hold at least `bytes` bytes and are distinct.
                unsafe { std::ptr::copy_nonoverlapping(s.get().as_ptr(), d.get_mut().as_mut_ptr(), bytes) }
            }
            (Mem::Gpu(Some(s)), Mem::Gpu(Some(d)), Backend::Gpu(dev)) => dev
                .stream()
                .memcpy_dtod(&s.get().slice(0..bytes), &mut d.get_mut().slice_mut(0..bytes))
                .map_err(|e| CudaError::driver("device-to-device copy", e))?,
            (Mem::Gpu(None), _, Backend::Gpu(_)) => {}
            (m, _, _) => return Err(CudaError::BackendMismatch { buffer: m.kind(), launch: self.kind() }),
        }
        Ok(dst)
    }

    /// Waits until every queued launch and copy has finished (a no-op on the emulator, whose
    /// launches are synchronous).
    pub fn synchronize(&self) -> Result<(), CudaError> {
        match self {
            Backend::Emu(_) => Ok(()),
            Backend::Gpu(d) => d.synchronize(),
        }
    }

    /// This backend's allocator statistics (like `torch.cuda.memory_stats()`).
    pub fn memory_stats(&self) -> MemoryStats {
        match self {
            Backend::Emu(_) => emu_memory().stats(),
            Backend::Gpu(d) => d.memory().stats(),
        }
    }

    /// Releases the cached free blocks to the driver (like `torch.cuda.empty_cache()`).
    pub fn empty_cache(&self) {
        match self {
            Backend::Emu(_) => emu_memory().empty_cache(),
            Backend::Gpu(d) => d.memory().empty_cache(),
        }
    }

    /// Resets the peak statistics to the current values.
    pub fn reset_peak_memory_stats(&self) {
        match self {
            Backend::Emu(_) => emu_memory().reset_peaks(),
            Backend::Gpu(d) => d.memory().reset_peaks(),
        }
    }

    /// Launches `kernel` (an `extern "C" __global__` function of `kernels/cuda/*.cu`).
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number, order and type, and the buffers
    /// must be large enough for every index the kernel computes from `cfg` and the scalars;
    /// buffers passed with [`KernelArg::input`] must not be written by the kernel. The kernel
    /// runs unchecked (the emulator at least checks the argument count and sizes).
    pub unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &mut [KernelArg<'_>]) -> Result<(), CudaError> {
        for a in args.iter() {
            if let Some(b) = a.buffer_kind() {
                if b != self.kind() {
                    return Err(CudaError::BackendMismatch { buffer: b, launch: self.kind() });
                }
            }
        }
        match self {
            Backend::Emu(s) => emu::launch(kernel, cfg, s, args),
            Backend::Gpu(d) => d.launch(kernel, cfg, args),
        }
    }
}

/// The emulator's allocator (one per process, like one device).
pub fn emu_memory() -> &'static Arc<CachingAllocator<EmuMemory>> {
    static MEM: OnceLock<Arc<CachingAllocator<EmuMemory>>> = OnceLock::new();
    MEM.get_or_init(|| CachingAllocator::new(EmuMemory::new()))
}

/// A buffer in the memory of one [`Backend`]: device memory, or host memory for the emulator,
/// from that backend's caching allocator (the block returns to its free list when dropped).
pub struct DeviceBuffer<T: DeviceElem> {
    mem: Mem,
    len: usize,
    _t: PhantomData<T>,
}

enum Mem {
    Host(Block<EmuMemory>),
    /// `None` for an empty buffer: the driver cannot allocate zero bytes.
    Gpu(Option<Block<GpuMemory>>),
}

impl Mem {
    fn kind(&self) -> &'static str {
        match self {
            Mem::Host(_) => "emulator",
            Mem::Gpu(_) => "GPU",
        }
    }
}

impl<T: DeviceElem> DeviceBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: DeviceElem> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer<{}>({} elements on the {})", T::NAME, self.len(), self.mem.kind())
    }
}

/// Type-erased access to a buffer's address for a launch.
pub(crate) trait RawBuffer {
    fn kind(&self) -> &'static str;
    #[cfg_attr(not(feature = "emu"), allow(dead_code))]
    fn host_ptr(&self) -> Option<*const c_void>;
    #[cfg_attr(not(feature = "emu"), allow(dead_code))]
    fn host_ptr_mut(&mut self) -> Option<*mut c_void>;
    fn gpu_ptr<'s>(&'s self, stream: &'s CudaStream) -> Option<(u64, SyncOnDrop<'s>)>;
    fn gpu_ptr_mut<'s>(&'s mut self, stream: &'s CudaStream) -> Option<(u64, SyncOnDrop<'s>)>;
}

impl<T: DeviceElem> RawBuffer for DeviceBuffer<T> {
    fn kind(&self) -> &'static str {
        self.mem.kind()
    }
    fn host_ptr(&self) -> Option<*const c_void> {
        match &self.mem {
            Mem::Host(b) => Some(b.get().as_ptr() as *const c_void),
            Mem::Gpu(_) => None,
        }
    }
    fn host_ptr_mut(&mut self) -> Option<*mut c_void> {
        match &mut self.mem {
            Mem::Host(b) => Some(b.get_mut().as_mut_ptr() as *mut c_void),
            Mem::Gpu(_) => None,
        }
    }
    fn gpu_ptr<'s>(&'s self, stream: &'s CudaStream) -> Option<(u64, SyncOnDrop<'s>)> {
        match &self.mem {
            Mem::Gpu(Some(b)) => Some(b.get().device_ptr(stream)),
            Mem::Gpu(None) => Some((0, SyncOnDrop::Record(None))),
            Mem::Host(_) => None,
        }
    }
    fn gpu_ptr_mut<'s>(&'s mut self, stream: &'s CudaStream) -> Option<(u64, SyncOnDrop<'s>)> {
        match &mut self.mem {
            Mem::Gpu(Some(b)) => Some(b.get_mut().device_ptr_mut(stream)),
            Mem::Gpu(None) => Some((0, SyncOnDrop::Record(None))),
            Mem::Host(_) => None,
        }
    }
}

/// A scalar kernel argument.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scalar {
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
}

impl Scalar {
    /// Size in bytes and the value's bytes, zero-padded to 8 (native endianness).
    #[cfg_attr(not(feature = "emu"), allow(dead_code))]
    pub(crate) fn bytes(self) -> (usize, [u8; 8]) {
        let mut out = [0u8; 8];
        let size = match self {
            Scalar::I32(v) => copy(&mut out, &v.to_ne_bytes()),
            Scalar::U32(v) => copy(&mut out, &v.to_ne_bytes()),
            Scalar::I64(v) => copy(&mut out, &v.to_ne_bytes()),
            Scalar::U64(v) => copy(&mut out, &v.to_ne_bytes()),
            Scalar::F32(v) => copy(&mut out, &v.to_ne_bytes()),
            Scalar::F64(v) => copy(&mut out, &v.to_ne_bytes()),
        };
        (size, out)
    }
}

#[cfg_attr(not(feature = "emu"), allow(dead_code))]
fn copy(out: &mut [u8; 8], bytes: &[u8]) -> usize {
    out[..bytes.len()].copy_from_slice(bytes);
    bytes.len()
}

/// One kernel argument: a buffer the kernel reads, a buffer it writes, or a scalar.
///
/// The Rust types must match the kernel's C parameter types: a buffer for `T*`/`const T*`,
/// [`KernelArg::u64`] for `unsigned long long`, [`KernelArg::u32`] for `unsigned`, and so on.
pub struct KernelArg<'a>(pub(crate) ArgKind<'a>);

pub(crate) enum ArgKind<'a> {
    Input(&'a dyn RawBuffer),
    Output(&'a mut dyn RawBuffer),
    Scalar(Scalar),
}

impl<'a> KernelArg<'a> {
    /// A buffer the kernel only reads (`const T*`).
    pub fn input<T: DeviceElem>(buf: &'a DeviceBuffer<T>) -> Self {
        KernelArg(ArgKind::Input(buf))
    }
    /// A buffer the kernel writes (`T*`).
    pub fn output<T: DeviceElem>(buf: &'a mut DeviceBuffer<T>) -> Self {
        KernelArg(ArgKind::Output(buf))
    }
    /// `int`.
    pub fn i32(v: i32) -> Self {
        KernelArg(ArgKind::Scalar(Scalar::I32(v)))
    }
    /// `unsigned int`.
    pub fn u32(v: u32) -> Self {
        KernelArg(ArgKind::Scalar(Scalar::U32(v)))
    }
    /// `long long`.
    pub fn i64(v: i64) -> Self {
        KernelArg(ArgKind::Scalar(Scalar::I64(v)))
    }
    /// `unsigned long long` (element counts).
    pub fn u64(v: u64) -> Self {
        KernelArg(ArgKind::Scalar(Scalar::U64(v)))
    }
    /// `float`.
    pub fn f32(v: f32) -> Self {
        KernelArg(ArgKind::Scalar(Scalar::F32(v)))
    }
    /// `double`.
    pub fn f64(v: f64) -> Self {
        KernelArg(ArgKind::Scalar(Scalar::F64(v)))
    }
    /// A float scalar in `T`'s compute type: `double` for `f64` kernels, `float` for the others
    /// (f32, f16 and bf16 kernels compute in f32).
    pub fn compute_float<T: DeviceElem>(v: f64) -> Self {
        if T::NAME == "f64" {
            KernelArg::f64(v)
        } else {
            KernelArg::f32(v as f32)
        }
    }

    fn buffer_kind(&self) -> Option<&'static str> {
        match &self.0 {
            ArgKind::Input(b) => Some(b.kind()),
            ArgKind::Output(b) => Some(b.kind()),
            ArgKind::Scalar(_) => None,
        }
    }
}

impl From<AllocError> for CudaError {
    fn from(e: AllocError) -> Self {
        CudaError::Alloc(e)
    }
}

impl From<GpuUnavailable> for CudaError {
    fn from(e: GpuUnavailable) -> Self {
        CudaError::driver("opening the GPU", e)
    }
}
