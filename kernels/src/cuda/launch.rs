//! Backend-neutral buffers and launches: the same [`KernelArg`] list launches a kernel on the
//! GPU (cudarc, `void** args` through the driver) or on the emulator (`void** args` through
//! the generated C launcher), so a launch wrapper is written once for both.

use super::emu::{self, EmuSchedule};
use super::gpu::{GpuDevice, GpuUnavailable};
use super::CudaError;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, SyncOnDrop, ValidAsZeroBits};
use std::ffi::c_void;
use std::sync::Arc;

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
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
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

    /// A description for test reports, including the emulator's schedule and seed.
    pub fn describe(&self) -> String {
        match self {
            Backend::Emu(s) => format!("CUDA emulator ({})", s.describe()),
            Backend::Gpu(d) => d.describe(),
        }
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

    /// Copies `host` into a new device buffer.
    pub fn upload<T: DeviceElem>(&self, host: &[T]) -> Result<DeviceBuffer<T>, CudaError> {
        Ok(DeviceBuffer(match self {
            Backend::Emu(_) => Inner::Host(host.to_vec()),
            Backend::Gpu(_) if host.is_empty() => Inner::Gpu(None),
            Backend::Gpu(d) => Inner::Gpu(Some(d.upload(host)?)),
        }))
    }

    /// A new zero-filled device buffer of `len` elements.
    pub fn zeros<T: DeviceElem>(&self, len: usize) -> Result<DeviceBuffer<T>, CudaError> {
        Ok(DeviceBuffer(match self {
            Backend::Emu(_) => Inner::Host(vec![T::default(); len]),
            Backend::Gpu(_) if len == 0 => Inner::Gpu(None),
            Backend::Gpu(d) => Inner::Gpu(Some(d.zeros(len)?)),
        }))
    }

    /// Copies a device buffer back to the host (waits for the kernels writing it).
    pub fn download<T: DeviceElem>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>, CudaError> {
        match (&buf.0, self) {
            (Inner::Host(v), Backend::Emu(_)) => Ok(v.clone()),
            (Inner::Gpu(Some(s)), Backend::Gpu(d)) => d.download(s),
            (Inner::Gpu(None), Backend::Gpu(_)) => Ok(Vec::new()),
            (b, _) => Err(CudaError::BackendMismatch { buffer: b.kind(), launch: self.kind() }),
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

/// A buffer in the memory of one [`Backend`]: device memory, or host memory for the emulator.
pub struct DeviceBuffer<T: DeviceElem>(Inner<T>);

enum Inner<T: DeviceElem> {
    Host(Vec<T>),
    /// `None` for an empty buffer: the driver cannot allocate zero bytes.
    Gpu(Option<CudaSlice<T>>),
}

impl<T: DeviceElem> Inner<T> {
    fn kind(&self) -> &'static str {
        match self {
            Inner::Host(_) => "emulator",
            Inner::Gpu(_) => "GPU",
        }
    }
}

impl<T: DeviceElem> DeviceBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.0 {
            Inner::Host(v) => v.len(),
            Inner::Gpu(s) => s.as_ref().map_or(0, |s| s.len()),
        }
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: DeviceElem> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer<{}>({} elements on the {})", T::NAME, self.len(), self.0.kind())
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
        self.0.kind()
    }
    fn host_ptr(&self) -> Option<*const c_void> {
        match &self.0 {
            Inner::Host(v) => Some(v.as_ptr() as *const c_void),
            Inner::Gpu(_) => None,
        }
    }
    fn host_ptr_mut(&mut self) -> Option<*mut c_void> {
        match &mut self.0 {
            Inner::Host(v) => Some(v.as_mut_ptr() as *mut c_void),
            Inner::Gpu(_) => None,
        }
    }
    fn gpu_ptr<'s>(&'s self, stream: &'s CudaStream) -> Option<(u64, SyncOnDrop<'s>)> {
        match &self.0 {
            Inner::Gpu(Some(s)) => Some(s.device_ptr(stream)),
            Inner::Gpu(None) => Some((0, SyncOnDrop::Record(None))),
            Inner::Host(_) => None,
        }
    }
    fn gpu_ptr_mut<'s>(&'s mut self, stream: &'s CudaStream) -> Option<(u64, SyncOnDrop<'s>)> {
        match &mut self.0 {
            Inner::Gpu(Some(s)) => Some(s.device_ptr_mut(stream)),
            Inner::Gpu(None) => Some((0, SyncOnDrop::Record(None))),
            Inner::Host(_) => None,
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

    fn buffer_kind(&self) -> Option<&'static str> {
        match &self.0 {
            ArgKind::Input(b) => Some(b.kind()),
            ArgKind::Output(b) => Some(b.kind()),
            ArgKind::Scalar(_) => None,
        }
    }
}

impl From<GpuUnavailable> for CudaError {
    fn from(e: GpuUnavailable) -> Self {
        CudaError::driver("opening the GPU", e)
    }
}
