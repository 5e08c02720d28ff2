//! Tensors on `Device::Cuda(n)`: CUDA storage, the device registry, and the data movement every
//! CUDA op builds on (upload, download, dense copies of views, fills, casts).
//!
//! # Where kernels run
//! `Device::Cuda(n)` is served by a [`Backend`]: normally the n-th GPU, opened through cudarc at
//! first use (the driver is probed first, so a machine without one gets an error naming what is
//! missing, never a panic). A process may instead make `Device::Cuda(0)` the CUDA *emulator*
//! ([`use_emulator`]): the same `kernels/cuda/*.cu` kernels compiled as C++ and run on the CPU.
//! The test suites use [`test_device`]: the real GPU when there is one, else the emulator when it
//! is built in (the tests' builds), so every CUDA dispatch path runs in CI without a GPU and the
//! same test bodies run on a GPU when one is lent.
//!
//! # Storage
//! [`CudaStorage`] holds one typed [`DeviceBuffer`] ([`CudaBuf`]) and the backend it lives on.
//! Views share it exactly as CPU views share host storage. Kernels take dense operands from
//! element 0 ([`Tensor::cuda_contiguous`] copies a view that is not), and write fresh buffers.
//!
//! # Ops
//! An op with a CUDA kernel checks `is_cuda()` first and dispatches here; an op without one
//! returns [`Error::NoCudaKernel`] naming the call site (never a silent trip through the host).

use crate::layout::Layout;
use crate::shape::Shape;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Result, Tensor, WithDType};
use half::{bf16, f16};
use stapes_kernels::cuda::{self as kc, Backend, CudaError, DeviceBuffer, GpuDevice, GpuUnavailable};
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) mod conv;
pub mod ctc;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod matmul;
pub mod rnn;
pub use matmul::{allow_tf32, set_allow_tf32};
pub use rnn::{persistent_lstm, set_persistent_lstm};
pub(crate) mod nn_ops;
pub mod optim;
pub(crate) mod reduce;

/// A device buffer of one dtype.
pub enum CudaBuf {
    /// `f16` elements (IEEE half precision).
    F16(DeviceBuffer<f16>),
    /// `bf16` elements (bfloat16).
    BF16(DeviceBuffer<bf16>),
    /// `f32` elements (IEEE single precision).
    F32(DeviceBuffer<f32>),
    /// `f64` elements (IEEE double precision).
    F64(DeviceBuffer<f64>),
    /// `i64` elements (labels, indices).
    I64(DeviceBuffer<i64>),
    /// `u8` elements (boolean masks: 0 or 1).
    U8(DeviceBuffer<u8>),
    /// `i8` elements (quantized weights).
    I8(DeviceBuffer<i8>),
}

/// Runs `$body` with `$T` bound to the element type of the [`CudaBuf`] `$buf` and `$b` to its
/// `&DeviceBuffer<$T>`.
macro_rules! cuda_buf_dispatch {
    ($buf:expr, |$b:ident: $T:ident| $body:block) => {
        match $buf {
            $crate::cuda::CudaBuf::F16($b) => {
                #[allow(dead_code)]
                type $T = half::f16;
                $body
            }
            $crate::cuda::CudaBuf::BF16($b) => {
                #[allow(dead_code)]
                type $T = half::bf16;
                $body
            }
            $crate::cuda::CudaBuf::F32($b) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::cuda::CudaBuf::F64($b) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::cuda::CudaBuf::I64($b) => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            $crate::cuda::CudaBuf::U8($b) => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            $crate::cuda::CudaBuf::I8($b) => {
                #[allow(dead_code)]
                type $T = i8;
                $body
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use cuda_buf_dispatch;

impl CudaBuf {
    /// The element type held.
    pub fn dtype(&self) -> DType {
        match self {
            CudaBuf::F16(_) => DType::F16,
            CudaBuf::BF16(_) => DType::BF16,
            CudaBuf::F32(_) => DType::F32,
            CudaBuf::F64(_) => DType::F64,
            CudaBuf::I64(_) => DType::I64,
            CudaBuf::U8(_) => DType::U8,
            CudaBuf::I8(_) => DType::I8,
        }
    }
    /// Elements held.
    pub fn len(&self) -> usize {
        cuda_buf_dispatch!(self, |b: T| { b.len() })
    }
    /// Whether no element is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tensor's storage on a CUDA device (or on the emulator standing in for one).
pub struct CudaStorage {
    pub(crate) backend: Backend,
    pub(crate) buf: CudaBuf,
}

impl CudaStorage {
    /// The element type held.
    pub fn dtype(&self) -> DType {
        self.buf.dtype()
    }
    /// Elements held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Whether no element is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The backend the buffer lives on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
    /// The buffer.
    pub fn buf(&self) -> &CudaBuf {
        &self.buf
    }
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({} x {} on {})", self.len(), self.dtype(), self.backend.describe())
    }
}

/// A [`CudaError`] as a tensor [`Error`] of `op` (out-of-memory keeps its own variant).
pub(crate) fn cuda_err(op: &'static str) -> impl Fn(CudaError) -> Error {
    move |e| match e {
        CudaError::Alloc(a @ kc::AllocError::OutOfMemory { .. }) => Error::OutOfMemory { op, msg: a.to_string() },
        e => Error::Cuda { op, msg: e.to_string() },
    }
}

/// The caching allocator's statistics of CUDA `device` (like `torch.cuda.memory_stats`):
/// allocated, reserved and peak bytes, driver allocations and cache hits.
pub fn memory_stats(device: &Device) -> Result<kc::MemoryStats> {
    Ok(backend("memory_stats", device)?.memory_stats())
}

/// Waits for every kernel and copy queued on CUDA `device` (like `torch.cuda.synchronize`).
pub fn synchronize(device: &Device) -> Result<()> {
    backend("synchronize", device)?.synchronize().map_err(cuda_err("synchronize"))
}

/// A copy of a dense CUDA tensor made by the driver's device-to-device copy (no kernel): the
/// bandwidth reference the benchmarks compare kernels with.
pub fn device_copy(t: &Tensor) -> Result<Tensor> {
    const OP: &str = "device_copy";
    let dense = t.cuda_dense()?;
    let (s, backend) = dense.cuda_parts(OP)?;
    let buf = cuda_buf_dispatch!(&s.buf, |b: T| { T::into_cuda(backend.copy(b).map_err(cuda_err(OP))?) });
    Ok(Tensor::from_cuda_buf(buf, backend.clone(), t.shape().clone(), *t.device()))
}

/// Releases the cached free blocks of `device` to the driver (like `torch.cuda.empty_cache`).
pub fn empty_cache(device: &Device) -> Result<()> {
    backend("empty_cache", device)?.empty_cache();
    Ok(())
}

/// Sets the peak statistics of `device` to the current values.
pub fn reset_peak_memory_stats(device: &Device) -> Result<()> {
    backend("reset_peak_memory_stats", device)?.reset_peak_memory_stats();
    Ok(())
}

/// Caps the memory the emulator may hand out (`None`: no cap), so tests can exercise the
/// out-of-memory path. No effect on a GPU.
pub fn set_emulator_memory_limit(limit: Option<usize>) {
    kc::emu_memory().raw().set_limit(limit);
}

// ---------------------------------------------------------------------------------------------
// The device registry
// ---------------------------------------------------------------------------------------------

/// Set once by [`use_emulator`]: `Device::Cuda(0)` is then the emulator for the whole process.
static EMULATOR: OnceLock<Backend> = OnceLock::new();

/// What opening a GPU gave.
type Opened = std::result::Result<Backend, GpuUnavailable>;

/// Opened GPUs by ordinal (errors kept too, so a missing driver is probed once).
fn gpus() -> &'static Mutex<Vec<Option<Opened>>> {
    static GPUS: OnceLock<Mutex<Vec<Option<Opened>>>> = OnceLock::new();
    GPUS.get_or_init(|| Mutex::new(Vec::new()))
}

fn open_gpu(ordinal: usize) -> std::result::Result<Backend, GpuUnavailable> {
    let mut g = gpus().lock().unwrap_or_else(|p| p.into_inner());
    if g.len() <= ordinal {
        g.resize_with(ordinal + 1, || None);
    }
    g[ordinal]
        .get_or_insert_with(|| {
            if ordinal == 0 { GpuDevice::first() } else { GpuDevice::open(ordinal) }.map(Backend::Gpu)
        })
        .clone()
}

/// Makes `Device::Cuda(0)` the CUDA emulator for the rest of the process: every CUDA op then runs
/// its kernel on the CPU through `kernels/emu/`. For tests and debugging; an error when the
/// emulator is not built into this binary (the `emu` feature of stapes-kernels) or when a GPU
/// has already served `Device::Cuda(0)`.
pub fn use_emulator() -> Result<()> {
    if !kc::emu::is_built() {
        return Err(Error::DeviceUnavailable {
            op: "use_emulator",
            device: Device::Cuda(0),
            msg: "the CUDA emulator is not built into this binary (enable the `emu` feature of stapes-kernels)".into(),
        });
    }
    let g = gpus().lock().unwrap_or_else(|p| p.into_inner());
    if matches!(g.first(), Some(Some(Ok(_)))) {
        return Err(Error::DeviceUnavailable {
            op: "use_emulator",
            device: Device::Cuda(0),
            msg: "a GPU already serves cuda:0 in this process".into(),
        });
    }
    EMULATOR.get_or_init(Backend::emulator);
    Ok(())
}

/// Whether `Device::Cuda(0)` is the emulator in this process.
pub fn is_emulated() -> bool {
    EMULATOR.get().is_some()
}

/// The backend serving `device` (which must be a CUDA device), opening the GPU at first use.
pub fn backend(op: &'static str, device: &Device) -> Result<Backend> {
    let ordinal = match device {
        Device::Cuda(n) => *n,
        Device::Cpu => return Err(Error::invalid(op, "the CPU has no CUDA backend")),
    };
    if let Some(emu) = EMULATOR.get() {
        if ordinal == 0 {
            return Ok(emu.clone());
        }
        return Err(Error::DeviceUnavailable {
            op,
            device: *device,
            msg: "the CUDA emulator serves cuda:0 only".into(),
        });
    }
    open_gpu(ordinal).map_err(|e| Error::DeviceUnavailable { op, device: *device, msg: e.to_string() })
}

/// Whether `Device::Cuda(ordinal)` can be used (a GPU and NVRTC are present, or the emulator
/// serves it). Never panics; probes the driver once.
pub fn is_available(ordinal: usize) -> bool {
    backend("is_available", &Device::Cuda(ordinal)).is_ok()
}

/// A short description of what serves `Device::Cuda(ordinal)`, or why nothing does.
pub fn describe(ordinal: usize) -> String {
    match backend("describe", &Device::Cuda(ordinal)) {
        Ok(b) => b.describe(),
        Err(e) => e.to_string(),
    }
}

/// How host↔device copies of `Device::Cuda(ordinal)` are made (on a GPU: whether, and from what
/// size, they are staged through pinned memory; `STAPES_PINNED_STAGING_MIN_BYTES` sets it), or
/// why nothing serves that device.
pub fn describe_transfers(ordinal: usize) -> String {
    match backend("describe_transfers", &Device::Cuda(ordinal)) {
        Ok(b) => b.describe_transfers(),
        Err(e) => e.to_string(),
    }
}

/// The CUDA device the test suites run their CUDA bodies on: `cuda:0` on a GPU when one is
/// present, else `cuda:0` on the emulator when it is built in (switched on here), else `None`
/// (the caller skips its CUDA body). Says on stderr, once per process, which it is (or why the
/// bodies are skipped). `STAPES_TEST_CUDA=gpu` makes a missing GPU a panic (for the GPU suite,
/// so that it cannot pass by emulating).
pub fn test_device() -> Option<Device> {
    let d = pick_test_device();
    static NOTICE: std::sync::Once = std::sync::Once::new();
    NOTICE.call_once(|| match d {
        Some(d) => eprintln!("CUDA tests on {d}: {}", describe(0)),
        None => eprintln!("skipped: no GPU and no CUDA emulator in this build"),
    });
    d
}

fn pick_test_device() -> Option<Device> {
    let want_gpu = std::env::var("STAPES_TEST_CUDA").is_ok_and(|v| v.trim() == "gpu");
    if !is_emulated() {
        match open_gpu(0) {
            Ok(_) => return Some(Device::Cuda(0)),
            Err(e) if want_gpu => panic!("STAPES_TEST_CUDA=gpu but no GPU can be used: {e}"),
            Err(_) => {}
        }
    }
    if want_gpu && is_emulated() {
        panic!("STAPES_TEST_CUDA=gpu but cuda:0 is the emulator in this process");
    }
    use_emulator().ok().map(|_| Device::Cuda(0))
}

/// The error of a non-float operand, worded as the CPU ops' `float_dispatch!`.
pub(crate) fn not_float(op: &'static str, t: &Tensor) -> Error {
    Error::UnsupportedDType { op, dtype: t.dtype(), msg: "expected a floating point tensor (f16, bf16, f32, f64)" }
}

/// Checks that `t` can go through the f32 kernels (norms, convolution, pooling): f32 as is,
/// f16/bf16 widened on the device; f64 has no CUDA kernel there.
pub(crate) fn check_f32_compute(op: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F16 | DType::BF16 | DType::F32 => Ok(()),
        DType::F64 => Err(t.no_cuda_kernel(op)),
        _ => Err(not_float(op, t)),
    }
}

/// Wraps an f32 result buffer as a tensor of `shape` on `like`'s device, cast to `dtype`.
pub(crate) fn wrap_f32(
    buf: DeviceBuffer<f32>,
    backend: &Backend,
    shape: &[usize],
    like: &Tensor,
    dtype: DType,
) -> Result<Tensor> {
    Tensor::from_cuda_buf(CudaBuf::F32(buf), backend.clone(), shape, *like.device()).to_dtype(dtype)
}

// ---------------------------------------------------------------------------------------------
// Tensor-level data movement
// ---------------------------------------------------------------------------------------------

/// Drops dims of size 1 and merges adjacent dims that are contiguous with each other, so a
/// strided copy walks as few dims as possible (a dense tensor becomes one dim).
pub(crate) fn merge_dims(dims: &[usize], strides: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut d: Vec<usize> = Vec::with_capacity(dims.len());
    let mut s: Vec<usize> = Vec::with_capacity(dims.len());
    for (&dim, &stride) in dims.iter().zip(strides) {
        if dim == 1 {
            continue;
        }
        match (d.last_mut(), s.last_mut()) {
            (Some(ld), Some(ls)) if *ls == stride * dim => {
                *ld *= dim;
                *ls = stride;
            }
            _ => {
                d.push(dim);
                s.push(stride);
            }
        }
    }
    if d.is_empty() {
        d.push(1);
        s.push(1);
    }
    (d, s)
}

/// The smallest rows and columns for which the dense copy of a transposed view takes the tiled
/// kernel: below it most of a 32 x 32 tile is idle and `copy_strided`'s reads are already close
/// to coalesced (a heuristic, not yet measured on a GPU).
const TILED_TRANSPOSE_MIN: usize = 8;

/// The `[batch, rows, cols]` dims and strides of a merged view (the output of [`merge_dims`])
/// whose dense copy is a batched transpose, for [`kc::tensor::transpose_copy`]: rank 2 or 3, the
/// second-to-last dim of unit stride, the last one not (a `t()`/`transpose` of a dense tensor;
/// the batch dim may have any stride), rows and cols at least [`TILED_TRANSPOSE_MIN`]. `None`
/// for every other layout (those go through `copy_strided`).
pub(crate) fn as_batched_transpose(dims: &[usize], strides: &[usize]) -> Option<([usize; 3], [usize; 3])> {
    let (d, s) = match (dims, strides) {
        (&[r, c], &[sr, sc]) => ([1, r, c], [0, sr, sc]),
        (&[b, r, c], &[sb, sr, sc]) => ([b, r, c], [sb, sr, sc]),
        _ => return None,
    };
    let tiled = s[1] == 1 && s[2] != 1 && d[1] >= TILED_TRANSPOSE_MIN && d[2] >= TILED_TRANSPOSE_MIN;
    tiled.then_some((d, s))
}

/// # Kernels of your own
///
/// The pieces a custom op needs to run its own CUDA kernel on tensors (see the `custom-op`
/// example): a dense operand buffer, the backend to launch on, and a tensor around the
/// buffer the kernel wrote. Kernels of another crate are made launchable by name with
/// `stapes_kernels::cuda::register_kernels` (generated by `stapes-cuda-build`).
impl Tensor {
    /// This CUDA tensor as a dense tensor whose buffer holds exactly its elements in row-major
    /// order (itself when it already is one, else a copy on the device): the form in which
    /// [`Tensor::cuda_buffer`] hands its buffer to a kernel. A CPU tensor is an error.
    pub fn cuda_contiguous(&self) -> Result<Tensor> {
        self.cuda_exact()
    }

    /// The device buffer of a dense CUDA tensor of element type `T` (from
    /// [`Tensor::cuda_contiguous`]), to pass to `KernelArg::input`. An error names `op` when the
    /// tensor is on the CPU, of another dtype, or a view that is not dense.
    pub fn cuda_buffer<T: WithDType>(&self, op: &'static str) -> Result<&DeviceBuffer<T>> {
        if !self.cuda_is_exact(op)? {
            let l = self.layout();
            return Err(Error::invalid(
                op,
                format!(
                    "a kernel operand must be dense (shape {:?}, strides {:?}, offset {}); call cuda_contiguous() first",
                    l.dims(),
                    l.strides(),
                    l.offset()
                ),
            ));
        }
        self.cuda_typed(op)
    }

    /// The backend (GPU or emulator) a CUDA tensor lives on, to allocate outputs and launch on.
    pub fn cuda_backend(&self, op: &'static str) -> Result<Backend> {
        Ok(self.cuda_parts(op)?.1.clone())
    }

    /// A tensor of `shape` on CUDA `device` around `buf`, a buffer a kernel wrote in full (row
    /// major) on `backend`. Its length must be the shape's element count.
    pub fn from_cuda_buffer<T: WithDType>(
        buf: DeviceBuffer<T>,
        backend: Backend,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if !device.is_cuda() {
            return Err(Error::invalid("from_cuda_buffer", format!("{device} is not a CUDA device")));
        }
        if buf.len() != shape.elem_count() {
            return Err(Error::shape(
                "from_cuda_buffer",
                format!("a buffer of {} elements cannot hold shape {:?}", buf.len(), shape.dims()),
            ));
        }
        Ok(Tensor::from_cuda_buf(T::into_cuda(buf), backend, shape, *device))
    }
}

impl Tensor {
    /// The CUDA storage and backend of a tensor an op needs on a CUDA device.
    pub(crate) fn cuda_parts(&self, op: &'static str) -> Result<(&CudaStorage, &Backend)> {
        match &*self.0.storage {
            Storage::Cuda(s) => Ok((s, &s.backend)),
            Storage::Cpu(_) => Err(Error::invalid(op, "expected a tensor on a CUDA device, got one on the CPU")),
        }
    }

    /// The typed buffer of a CUDA tensor of dtype `T`.
    pub(crate) fn cuda_typed<T: WithDType>(&self, op: &'static str) -> Result<&DeviceBuffer<T>> {
        let (s, _) = self.cuda_parts(op)?;
        T::cuda_buf(&s.buf).ok_or(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: T::DTYPE })
    }

    /// Wraps a freshly written dense device buffer as a tensor of `shape` on `device`.
    pub(crate) fn from_cuda_buf(buf: CudaBuf, backend: Backend, shape: impl Into<Shape>, device: Device) -> Tensor {
        let shape = shape.into();
        debug_assert!(buf.len() >= shape.elem_count());
        Tensor::from_parts(Arc::new(Storage::Cuda(CudaStorage { backend, buf })), Layout::contiguous(shape), device)
    }

    /// A tensor of `shape` holding `data`, uploaded to CUDA `device`.
    pub(crate) fn cuda_upload<T: WithDType>(data: &[T], shape: Shape, device: &Device) -> Result<Tensor> {
        const OP: &str = "to_device";
        let backend = backend(OP, device)?;
        let buf = backend.upload(data).map_err(cuda_err(OP))?;
        Ok(Tensor::from_cuda_buf(T::into_cuda(buf), backend, shape, *device))
    }

    /// This tensor, or a dense copy of it: contiguous and starting at element 0 of its buffer, as
    /// every CUDA kernel takes its operands.
    pub(crate) fn cuda_dense(&self) -> Result<Tensor> {
        self.cuda_parts("contiguous")?;
        let l = self.layout();
        if l.is_contiguous() && l.offset() == 0 {
            return Ok(self.clone());
        }
        self.cuda_copy_dense()
    }

    /// `self` as a dense f32 CUDA tensor whose buffer holds exactly its elements (a cast on the
    /// device for f16/bf16): the operand form of the f32 kernels.
    pub(crate) fn cuda_f32(&self) -> Result<Tensor> {
        self.to_dtype(DType::F32)?.cuda_exact()
    }

    /// Like [`Tensor::cuda_dense`], and the buffer holds exactly the tensor's elements (for
    /// kernels whose wrappers check buffer lengths against the shape).
    pub(crate) fn cuda_exact(&self) -> Result<Tensor> {
        if self.cuda_is_exact("contiguous")? {
            return Ok(self.clone());
        }
        self.cuda_copy_dense()
    }

    /// Whether this CUDA tensor is dense from element 0 and its buffer holds exactly its
    /// elements: the operand form of the kernels.
    fn cuda_is_exact(&self, op: &'static str) -> Result<bool> {
        let (s, _) = self.cuda_parts(op)?;
        let l = self.layout();
        Ok(l.is_contiguous() && l.offset() == 0 && s.len() == self.elem_count())
    }

    /// A fresh dense copy of exactly this tensor's elements.
    fn cuda_copy_dense(&self) -> Result<Tensor> {
        const OP: &str = "contiguous";
        let (s, backend) = self.cuda_parts(OP)?;
        let l = self.layout();
        let n = self.elem_count();
        let (dims, strides) = merge_dims(l.dims(), l.strides());
        let transposed = as_batched_transpose(&dims, &strides);
        let buf = cuda_buf_dispatch!(&s.buf, |src: T| {
            let mut dst = backend.alloc::<T>(n).map_err(cuda_err(OP))?;
            if n > 0 {
                match transposed {
                    Some((d, st)) => kc::tensor::transpose_copy(backend, src, d, st, l.offset(), &mut dst),
                    None => kc::tensor::copy_strided(backend, src, &dims, &strides, l.offset(), &mut dst),
                }
                .map_err(cuda_err(OP))?;
            }
            T::into_cuda(dst)
        });
        Ok(Tensor::from_cuda_buf(buf, backend.clone(), self.shape().clone(), *self.device()))
    }

    /// The elements of a CUDA tensor, in row-major order, as host storage.
    pub(crate) fn cuda_download(&self) -> Result<CpuStorage> {
        const OP: &str = "to_device";
        let dense = self.cuda_dense()?;
        let (s, backend) = dense.cuda_parts(OP)?;
        let n = self.elem_count();
        Ok(cuda_buf_dispatch!(&s.buf, |b: T| {
            let mut v = backend.download(b).map_err(cuda_err(OP))?;
            v.truncate(n);
            T::into_storage(v)
        }))
    }

    /// `full` on a CUDA device: a fill kernel over a fresh buffer.
    pub(crate) fn cuda_full(value: f64, shape: Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        const OP: &str = "full";
        let backend = backend(OP, device)?;
        let n = shape.elem_count();
        let buf = all_dispatch!(dtype, |T| {
            let mut b = backend.alloc::<T>(n).map_err(cuda_err(OP))?;
            let v = <T as WithDType>::from_f64(value);
            kc::tensor::fill(&backend, &mut b, v).map_err(cuda_err(OP))?;
            T::into_cuda(b)
        });
        Ok(Tensor::from_cuda_buf(buf, backend, shape, *device))
    }

    /// `[start, start + step, ...]` (`n` values) in f64 on a CUDA device (`Tensor::arange`).
    pub(crate) fn cuda_arange_f64(start: f64, step: f64, n: usize, device: &Device) -> Result<Tensor> {
        const OP: &str = "arange";
        let backend = backend(OP, device)?;
        let mut b = backend.alloc::<f64>(n).map_err(cuda_err(OP))?;
        kc::tensor::arange_f64(&backend, start, step, &mut b).map_err(cuda_err(OP))?;
        Ok(Tensor::from_cuda_buf(CudaBuf::F64(b), backend, Shape::from(n), *device))
    }

    /// `to_dtype` on a CUDA device: a cast kernel over the dense data.
    pub(crate) fn cuda_to_dtype(&self, dtype: DType) -> Result<Tensor> {
        const OP: &str = "to_dtype";
        let dense = self.cuda_dense()?;
        let (s, backend) = dense.cuda_parts(OP)?;
        let n = self.elem_count();
        let buf = cuda_buf_dispatch!(&s.buf, |src: S| {
            all_dispatch!(dtype, |D| {
                let mut dst = backend.alloc::<D>(src.len()).map_err(cuda_err(OP))?;
                if n > 0 {
                    kc::tensor::cast(backend, src, &mut dst).map_err(cuda_err(OP))?;
                }
                D::into_cuda(dst)
            })
        });
        Ok(Tensor::from_cuda_buf(buf, backend.clone(), self.shape().clone(), *self.device()))
    }
}

#[cfg(test)]
mod tests {
    use super::{as_batched_transpose, merge_dims};

    #[test]
    fn transposed_layouts_take_the_tiled_copy() {
        // x.t() of a dense [40, 50]: dims [50, 40], strides [1, 50]
        let (d, s) = merge_dims(&[50, 40], &[1, 50]);
        assert_eq!(as_batched_transpose(&d, &s), Some(([1, 50, 40], [0, 1, 50])));
        // transpose(2, 3) of a dense [2, 3, 40, 50]: the two batch dims merge into one
        let (d, s) = merge_dims(&[2, 3, 50, 40], &[6000, 2000, 1, 50]);
        assert_eq!(as_batched_transpose(&d, &s), Some(([6, 50, 40], [2000, 1, 50])));
        // a size-1 batch dim is dropped
        let (d, s) = merge_dims(&[1, 50, 40], &[2000, 1, 50]);
        assert_eq!(as_batched_transpose(&d, &s), Some(([1, 50, 40], [0, 1, 50])));
        // not a transpose: dense, permuted so the unit stride is elsewhere, two unmergeable batch
        // dims, or too few rows/cols for a tile to pay
        for (dims, strides) in [
            (vec![40, 50], vec![50, 1]),
            (vec![5, 6, 4], vec![1, 5, 30]),
            (vec![2, 3, 50, 40], vec![1, 2, 6, 300]),
            (vec![3, 2, 50, 40], vec![4000, 12000, 1, 50]),
            (vec![4, 100], vec![1, 4]),
            (vec![100, 4], vec![1, 100]),
        ] {
            let (d, s) = merge_dims(&dims, &strides);
            assert_eq!(as_batched_transpose(&d, &s), None, "{dims:?} {strides:?}");
        }
    }
}
