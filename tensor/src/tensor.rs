//! The `Tensor` type: a shared storage, a strided layout, a dtype and a device. Cloning a
//! tensor or taking a view is O(rank); data is copied only by ops that must.

use crate::dtype::{DType, WithDType};
use crate::layout::Layout;
use crate::shape::{Dim, Shape};
use crate::storage::{CpuStorage, Storage};
use crate::{Device, Error, Result};
use half::{bf16, f16};
use stapes_kernels::cpu::copy::copy_strided;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A unique id per tensor value (views get their own id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) struct TensorImpl {
    pub(crate) id: TensorId,
    pub(crate) storage: Arc<Storage>,
    pub(crate) layout: Layout,
    pub(crate) device: Device,
}

/// An n-dimensional array with a dtype, on a device. Immutable: every op returns a new tensor.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorImpl>);

impl Tensor {
    pub(crate) fn from_parts(storage: Arc<Storage>, layout: Layout, device: Device) -> Tensor {
        Tensor(Arc::new(TensorImpl { id: TensorId::new(), storage, layout, device }))
    }

    /// Wraps CPU storage with a contiguous layout of `shape` (lengths must agree).
    pub fn from_cpu_storage(storage: CpuStorage, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if storage.len() != shape.elem_count() {
            return Err(Error::ElementCount {
                op: "from_storage",
                src: vec![storage.len()],
                src_n: storage.len(),
                dst: shape.to_vec(),
                dst_n: shape.elem_count(),
            });
        }
        Ok(Self::from_parts(Arc::new(Storage::Cpu(storage)), Layout::contiguous(shape), Device::Cpu))
    }

    /// Checks that `device` can be used (opens a GPU at first use).
    fn check_device(op: &'static str, device: &Device) -> Result<()> {
        match device {
            Device::Cpu => Ok(()),
            d => crate::cuda::backend(op, d).map(|_| ()),
        }
    }

    /// A tensor holding `data` with `shape` (the element count must match).
    pub fn from_vec<T: WithDType>(data: Vec<T>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Self::check_device("from_vec", device)?;
        let shape = shape.into();
        if data.len() != shape.elem_count() {
            return Err(Error::ElementCount {
                op: "from_vec",
                src: vec![data.len()],
                src_n: data.len(),
                dst: shape.to_vec(),
                dst_n: shape.elem_count(),
            });
        }
        if device.is_cuda() {
            return Self::cuda_upload(&data, shape, device);
        }
        Self::from_cpu_storage(T::into_storage(data), shape)
    }

    /// A tensor copied from `data` with `shape`.
    pub fn from_slice<T: WithDType>(data: &[T], shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape, device)
    }

    /// A 0-dim tensor holding `v`.
    pub fn scalar<T: WithDType>(v: T, device: &Device) -> Result<Tensor> {
        Self::from_vec(vec![v], (), device)
    }

    /// A tensor of `shape` filled with `value` (converted to `dtype`).
    pub fn full(value: f64, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Self::check_device("full", device)?;
        let shape = shape.into();
        if device.is_cuda() {
            return Self::cuda_full(value, shape, dtype, device);
        }
        let n = shape.elem_count();
        let s = match dtype {
            DType::F16 => CpuStorage::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::from_f64(value); n]),
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::I64 => CpuStorage::I64(vec![value as i64; n]),
            DType::U8 => CpuStorage::U8(vec![value as u8; n]),
            DType::I8 => CpuStorage::I8(vec![value as i8; n]),
        };
        Self::from_cpu_storage(s, shape)
    }

    /// Zeros of `shape`.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Self::full(0.0, shape, dtype, device)
    }

    /// Ones of `shape`.
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Self::full(1.0, shape, dtype, device)
    }

    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Self::zeros(self.shape(), self.dtype(), self.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Self::ones(self.shape(), self.dtype(), self.device())
    }

    /// `start, start + step, ...` up to (excluding) `end`, like `torch.arange`.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid("arange", format!("invalid range start={start} end={end} step={step}")));
        }
        let count = ((end - start) / step).ceil().max(0.0);
        // the most elements any buffer can hold (the byte size of f64 values must fit an isize)
        if count > (isize::MAX as usize / 8) as f64 {
            return Err(Error::invalid(
                "arange",
                format!("start={start} end={end} step={step} would make {count:e} elements"),
            ));
        }
        let n = count as usize;
        if device.is_cuda() {
            // computed on the device (the same f64 values), then cast there
            return Tensor::cuda_arange_f64(start, step, n, device)?.to_dtype(dtype);
        }
        let vals: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Tensor::from_vec(vals, n, device)?.to_dtype(dtype)
    }

    /// The unique id of this tensor value.
    pub fn id(&self) -> TensorId {
        self.0.id
    }
    /// The layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    /// The dims.
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.dims().len()
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape().elem_count()
    }
    /// The size of one dim.
    pub fn dim<D: Dim>(&self, d: D) -> Result<usize> {
        Ok(self.dims()[d.to_index(self.rank(), "dim")?])
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }
    /// The device.
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    /// Whether the layout is row-major contiguous.
    pub fn is_contiguous(&self) -> bool {
        self.layout().is_contiguous()
    }
    /// The storage (shared with views).
    pub fn storage(&self) -> &Storage {
        &self.0.storage
    }
    /// The host storage; on a CUDA device an error naming the caller's location: an op reached
    /// its CPU kernel with a CUDA tensor, i.e. it has no CUDA kernel yet.
    #[track_caller]
    pub(crate) fn cpu_storage(&self) -> Result<&CpuStorage> {
        match &*self.0.storage {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(_) => Err(self.no_cuda_kernel("cpu kernel")),
        }
    }

    /// The error of an op without a CUDA kernel, with the caller's source location.
    #[track_caller]
    pub(crate) fn no_cuda_kernel(&self, op: &'static str) -> Error {
        let at = std::panic::Location::caller();
        Error::NoCudaKernel { op, device: *self.device(), location: format!("{}:{}", at.file(), at.line()) }
    }
    /// Whether two tensors share one storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// A view with another layout over the same storage.
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), layout, self.0.device)
    }

    /// The elements in row-major order as a vector of `T` (which must be this dtype).
    pub fn to_vec<T: WithDType>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        if self.device().is_cuda() {
            let host = self.cuda_download()?;
            return Ok(T::storage_slice(&host).expect("dtype checked").to_vec());
        }
        Ok(self.contiguous_slice::<T>()?.into_owned())
    }

    /// The elements in row-major order converted to `f64`.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        self.to_dtype(DType::F64)?.to_vec::<f64>()
    }

    /// The single element of a one-element tensor, as `f64`.
    pub fn to_scalar_f64(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                format!("expected one element, the tensor has shape {:?}", self.dims()),
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// The single element of a one-element tensor of dtype `T`.
    pub fn to_scalar<T: WithDType>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                format!("expected one element, the tensor has shape {:?}", self.dims()),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// Calls `f` with the elements in row-major order: borrowed, without a copy, from a
    /// contiguous CPU tensor (copied from a strided view or a CUDA tensor). For kernels outside
    /// this crate that read a tensor's data once.
    ///
    /// # Errors
    /// If `T` is not the tensor's dtype, or a CUDA download fails.
    pub fn with_slice<T: WithDType, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "with_slice", lhs: self.dtype(), rhs: T::DTYPE });
        }
        if self.device().is_cuda() {
            return Ok(f(&self.to_vec::<T>()?));
        }
        Ok(f(&self.contiguous_slice::<T>()?))
    }

    /// The row-major elements of a tensor of dtype `T`: borrowed when contiguous, else copied.
    #[track_caller]
    pub(crate) fn contiguous_slice<T: WithDType>(&self) -> Result<Cow<'_, [T]>> {
        let data = T::storage_slice(self.cpu_storage()?).ok_or(Error::DTypeMismatch {
            op: "contiguous_slice",
            lhs: self.dtype(),
            rhs: T::DTYPE,
        })?;
        let l = self.layout();
        let n = self.elem_count();
        if l.is_contiguous() {
            return Ok(Cow::Borrowed(&data[l.offset()..l.offset() + n]));
        }
        let mut out = vec_uninit::<T>(n);
        copy_strided(data, l.dims(), l.strides(), l.offset(), &mut out);
        Ok(Cow::Owned(out))
    }

    /// A contiguous tensor with the same values (itself when already contiguous from offset 0).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.device().is_cuda() {
            return self.cuda_dense();
        }
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let s = match self.cpu_storage()? {
            CpuStorage::F16(_) => CpuStorage::F16(self.contiguous_slice::<f16>()?.into_owned()),
            CpuStorage::BF16(_) => CpuStorage::BF16(self.contiguous_slice::<bf16>()?.into_owned()),
            CpuStorage::F32(_) => CpuStorage::F32(self.contiguous_slice::<f32>()?.into_owned()),
            CpuStorage::F64(_) => CpuStorage::F64(self.contiguous_slice::<f64>()?.into_owned()),
            CpuStorage::I64(_) => CpuStorage::I64(self.contiguous_slice::<i64>()?.into_owned()),
            CpuStorage::U8(_) => CpuStorage::U8(self.contiguous_slice::<u8>()?.into_owned()),
            CpuStorage::I8(_) => CpuStorage::I8(self.contiguous_slice::<i8>()?.into_owned()),
        };
        Tensor::from_cpu_storage(s, self.shape())
    }

    /// Moves (copies) the tensor to `device`.
    ///
    /// CPU to CUDA uploads the row-major elements; CUDA to CPU downloads them (waiting for the
    /// kernels that write them); between two CUDA devices the data goes through the host. A
    /// tensor already on `device` is returned as is (sharing storage).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        Self::check_device("to_device", device)?;
        if device == self.device() {
            return Ok(self.clone());
        }
        match (self.device(), device) {
            (Device::Cuda(_), Device::Cpu) => Tensor::from_cpu_storage(self.cuda_download()?, self.shape().clone()),
            (Device::Cuda(_), Device::Cuda(_)) => self.to_device(&Device::Cpu)?.to_device(device),
            // upload the row-major elements (borrowed when the view is contiguous, else copied)
            (Device::Cpu, _) => all_dispatch!(self.dtype(), |T| {
                Self::cuda_upload(&self.contiguous_slice::<T>()?, self.shape().clone(), device)
            }),
        }
    }

    /// Checks that two tensors share a device and (for `same_dtype`) a dtype.
    pub(crate) fn check_same(&self, other: &Tensor, op: &'static str, same_dtype: bool) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch { op, lhs: *self.device(), rhs: *other.device() });
        }
        if same_dtype && self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: other.dtype() });
        }
        Ok(())
    }
}

/// A vector of `n` elements whose content will be fully overwritten by the caller (from the
/// caching allocator; never uninitialised memory).
pub(crate) fn vec_uninit<T: WithDType>(n: usize) -> Vec<T> {
    crate::alloc::take(n)
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {}, {}]", self.dims(), self.dtype(), self.device())
    }
}
