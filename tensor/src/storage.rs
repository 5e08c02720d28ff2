//! Storage: an enum over devices, and for the CPU an enum over dtypes (the candle model).
//! Storage is immutable once built and shared between views through an `Arc`.

use crate::dtype::DType;
use half::{bf16, f16};

/// Host storage, one vector per dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// `f16` elements (IEEE half precision).
    F16(Vec<f16>),
    /// `bf16` elements (bfloat16).
    BF16(Vec<bf16>),
    /// `f32` elements (IEEE single precision).
    F32(Vec<f32>),
    /// `f64` elements (IEEE double precision).
    F64(Vec<f64>),
    /// `i64` elements (labels, indices).
    I64(Vec<i64>),
    /// `u8` elements (boolean masks: 0 or 1).
    U8(Vec<u8>),
    /// `i8` elements (quantized weights).
    I8(Vec<i8>),
}

impl CpuStorage {
    /// The element type held.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::I8(_) => DType::I8,
        }
    }
    /// Number of elements held.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
            CpuStorage::U8(v) => v.len(),
            CpuStorage::I8(v) => v.len(),
        }
    }
    /// Whether no element is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for CpuStorage {
    fn drop(&mut self) {
        use crate::alloc::give;
        match self {
            CpuStorage::F16(v) => give(std::mem::take(v)),
            CpuStorage::BF16(v) => give(std::mem::take(v)),
            CpuStorage::F32(v) => give(std::mem::take(v)),
            CpuStorage::F64(v) => give(std::mem::take(v)),
            CpuStorage::I64(v) => give(std::mem::take(v)),
            CpuStorage::U8(v) => give(std::mem::take(v)),
            CpuStorage::I8(v) => give(std::mem::take(v)),
        }
    }
}

/// A tensor's storage on some device.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// A CUDA device's memory (or the emulator's, standing in for one).
    Cuda(crate::cuda::CudaStorage),
}

impl Storage {
    /// The element type held.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }
}
