//! Element types. Floating types compute on the CPU in `f32` (f16, bf16, f32) or `f64`.

use crate::storage::CpuStorage;
use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision (the default float type).
    F32,
    /// IEEE double precision (used by gradient checks).
    F64,
    /// 64-bit signed integers (labels, indices).
    I64,
    /// Unsigned bytes (boolean masks: 0 or 1).
    U8,
    /// Signed bytes (quantized weights).
    I8,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::U8 | DType::I8 => 1,
        }
    }
    /// Whether this is a floating point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }
    /// Lower-case name as PyTorch prints it (`float32`, `int64`, ...).
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::I8 => "int8",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.torch_name())
    }
}

/// A Rust type that is the element of one [`DType`].
pub trait WithDType:
    Copy + Send + Sync + std::fmt::Debug + PartialOrd + crate::alloc::Pooled + stapes_kernels::cuda::DeviceElem + 'static
{
    /// The matching dtype.
    const DTYPE: DType;
    /// Wraps a vector as CPU storage.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Borrows the storage's data when it holds this type.
    fn storage_slice(s: &CpuStorage) -> Option<&[Self]>;
    /// Conversion to `f64` (exact for all but i64 beyond 2^53).
    fn to_f64(self) -> f64;
    /// Conversion from `f64`, rounding (floats) or truncating and saturating (integers), as a
    /// PyTorch cast does.
    fn from_f64(v: f64) -> Self;
    /// Integer value as `i64` (exact for the integer dtypes; floats truncate and saturate).
    fn to_i64(self) -> i64;
    /// From `i64`, wrapping for the narrower integer dtypes (two's complement, like PyTorch's
    /// integer casts and Rust's `as`); floats round to nearest.
    fn from_i64_wrapping(v: i64) -> Self;
    /// Wraps a device buffer as CUDA storage data.
    fn into_cuda(b: stapes_kernels::cuda::DeviceBuffer<Self>) -> crate::cuda::CudaBuf;
    /// Borrows the CUDA storage's buffer when it holds this type.
    fn cuda_buf(b: &crate::cuda::CudaBuf) -> Option<&stapes_kernels::cuda::DeviceBuffer<Self>>;
}

macro_rules! with_dtype {
    ($t:ty, $d:ident, $to:expr, $from:expr, $to_i:expr, $from_i:expr) => {
        impl WithDType for $t {
            const DTYPE: DType = DType::$d;
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$d(v)
            }
            fn storage_slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$d(v) => Some(v),
                    _ => None,
                }
            }
            fn into_cuda(b: stapes_kernels::cuda::DeviceBuffer<Self>) -> crate::cuda::CudaBuf {
                crate::cuda::CudaBuf::$d(b)
            }
            fn cuda_buf(b: &crate::cuda::CudaBuf) -> Option<&stapes_kernels::cuda::DeviceBuffer<Self>> {
                match b {
                    crate::cuda::CudaBuf::$d(v) => Some(v),
                    _ => None,
                }
            }
            #[inline]
            fn to_f64(self) -> f64 {
                let f: fn($t) -> f64 = $to;
                f(self)
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                let f: fn(f64) -> $t = $from;
                f(v)
            }
            #[inline]
            fn to_i64(self) -> i64 {
                let f: fn($t) -> i64 = $to_i;
                f(self)
            }
            #[inline]
            fn from_i64_wrapping(v: i64) -> Self {
                let f: fn(i64) -> $t = $from_i;
                f(v)
            }
        }
    };
}

with_dtype!(f16, F16, |x| x.to_f64(), f16::from_f64, |x| x.to_f64() as i64, |v| f16::from_f64(v as f64));
with_dtype!(bf16, BF16, |x| x.to_f64(), bf16::from_f64, |x| x.to_f64() as i64, |v| bf16::from_f64(v as f64));
with_dtype!(f32, F32, |x| x as f64, |v| v as f32, |x| x as i64, |v| v as f32);
with_dtype!(f64, F64, |x| x, |v| v, |x| x as i64, |v| v as f64);
with_dtype!(i64, I64, |x| x as f64, |v| v as i64, |x| x, |v| v);
with_dtype!(u8, U8, |x| x as f64, |v| v as u8, |x| x as i64, |v| v as u8);
with_dtype!(i8, I8, |x| x as f64, |v| v as i8, |x| x as i64, |v| v as i8);
