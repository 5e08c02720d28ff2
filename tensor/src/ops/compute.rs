//! Moving data between a tensor's storage dtype and the dtype its kernel computes in:
//! `f16`/`bf16` widen to `f32`, `f32` and `f64` are used in place (borrowed, no copy, when the
//! layout allows), and results narrow back to the tensor's dtype.

use crate::dtype::WithDType;
use crate::layout::Layout;
use crate::storage::CpuStorage;
#[allow(unused_imports)]
use crate::WithDType as _;
use crate::{DType, Error, Result, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};
#[allow(unused_imports)]
use num_traits::{Float as _, One as _, Zero as _};
#[allow(unused_imports)]
use stapes_kernels::cpu::Float as _;
use stapes_kernels::cpu::Float;
use std::borrow::Cow;

/// A float type the CPU kernels compute in (`f32` or `f64`).
pub(crate) trait ComputeFloat: Float + WithDType {}
impl ComputeFloat for f32 {}
impl ComputeFloat for f64 {}

/// Converts a contiguous slice of any dtype to `D`.
pub(crate) fn convert_slice<S: WithDType, D: WithDType>(src: &[S]) -> Vec<D> {
    use std::any::TypeId;
    let (s, d) = (TypeId::of::<S>(), TypeId::of::<D>());
    // fast paths through `half`'s vectorised conversions
    if s == TypeId::of::<f16>() && d == TypeId::of::<f32>() {
        let src: &[f16] = bytemuck::cast_slice(src_bytes(src));
        let mut out = crate::alloc::take::<f32>(src.len());
        src.convert_to_f32_slice(&mut out);
        return cast_vec(out);
    }
    if s == TypeId::of::<bf16>() && d == TypeId::of::<f32>() {
        let src: &[bf16] = bytemuck::cast_slice(src_bytes(src));
        let mut out = crate::alloc::take::<f32>(src.len());
        src.convert_to_f32_slice(&mut out);
        return cast_vec(out);
    }
    if s == TypeId::of::<f32>() && d == TypeId::of::<f16>() {
        let src: &[f32] = bytemuck::cast_slice(src_bytes(src));
        let mut out = crate::alloc::take::<f16>(src.len());
        out.convert_from_f32_slice(src);
        return cast_vec(out);
    }
    if s == TypeId::of::<f32>() && d == TypeId::of::<bf16>() {
        let src: &[f32] = bytemuck::cast_slice(src_bytes(src));
        let mut out = crate::alloc::take::<bf16>(src.len());
        out.convert_from_f32_slice(src);
        return cast_vec(out);
    }
    if !S::DTYPE.is_float() && !D::DTYPE.is_float() {
        // integer to integer wraps (two's complement), as in PyTorch: int64 -1 -> uint8 255
        let mut out = crate::alloc::take::<D>(src.len());
        out.iter_mut().zip(src).for_each(|(o, &x)| *o = D::from_i64_wrapping(x.to_i64()));
        return out;
    }
    let mut out = crate::alloc::take::<D>(src.len());
    out.iter_mut().zip(src).for_each(|(o, &x)| *o = D::from_f64(x.to_f64()));
    out
}

fn src_bytes<S: WithDType>(src: &[S]) -> &[u8] {
    // SAFETY: every WithDType type is plain old data.
    unsafe { std::slice::from_raw_parts(src.as_ptr() as *const u8, std::mem::size_of_val(src)) }
}

fn cast_vec<A: 'static, B: 'static>(v: Vec<A>) -> Vec<B> {
    assert_eq!(std::any::TypeId::of::<A>(), std::any::TypeId::of::<B>());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: A and B are the same type (checked above).
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut B, v.len(), v.capacity()) }
}

/// The row-major contiguous data of a float tensor in compute type `T`.
#[track_caller]
pub(crate) fn float_data<T: ComputeFloat>(t: &Tensor) -> Result<Cow<'_, [T]>> {
    if t.dtype() == T::DTYPE {
        return t.contiguous_slice::<T>();
    }
    Ok(Cow::Owned(match t.dtype() {
        DType::F16 => convert_slice::<f16, T>(&t.contiguous_slice::<f16>()?),
        DType::BF16 => convert_slice::<bf16, T>(&t.contiguous_slice::<bf16>()?),
        DType::F32 => convert_slice::<f32, T>(&t.contiguous_slice::<f32>()?),
        DType::F64 => convert_slice::<f64, T>(&t.contiguous_slice::<f64>()?),
        d => {
            return Err(Error::UnsupportedDType { op: "float_data", dtype: d, msg: "expected a floating point tensor" })
        }
    }))
}

/// The data of a float tensor in compute type `T` together with a layout addressing it:
/// the storage itself with the tensor's layout when the dtype already is `T` (no copy), else a
/// converted contiguous copy.
#[track_caller]
pub(crate) fn float_strided<T: ComputeFloat>(t: &Tensor) -> Result<(Cow<'_, [T]>, Layout)> {
    if t.dtype() == T::DTYPE {
        let s = T::storage_slice(t.cpu_storage()?).expect("dtype checked");
        return Ok((Cow::Borrowed(s), t.layout().clone()));
    }
    Ok((float_data::<T>(t)?, Layout::contiguous(t.shape())))
}

/// A tensor of `dtype` and `shape` from compute-type data (narrowed if `dtype` is f16/bf16).
pub(crate) fn from_compute<T: ComputeFloat>(
    data: Vec<T>,
    shape: impl Into<crate::Shape>,
    dtype: DType,
) -> Result<Tensor> {
    let storage = match dtype {
        d if d == T::DTYPE => T::into_storage(data),
        DType::F16 => CpuStorage::F16(convert_slice::<T, f16>(&data)),
        DType::BF16 => CpuStorage::BF16(convert_slice::<T, bf16>(&data)),
        DType::F32 => CpuStorage::F32(convert_slice::<T, f32>(&data)),
        DType::F64 => CpuStorage::F64(convert_slice::<T, f64>(&data)),
        d => return Err(Error::UnsupportedDType { op: "from_compute", dtype: d, msg: "expected a float dtype" }),
    };
    Tensor::from_cpu_storage(storage, shape)
}

/// Validates and reads an index tensor (dtype i64) as a contiguous slice; every index must be in
/// `0..size` (`IndexOutOfRange` names the first offender).
#[track_caller]
pub(crate) fn index_data<'a>(op: &'static str, idx: &'a Tensor, dim: usize, size: usize) -> Result<Cow<'a, [i64]>> {
    if idx.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype: idx.dtype(), msg: "indices must be i64" });
    }
    let d = idx.contiguous_slice::<i64>()?;
    if let Some(&bad) = d.iter().find(|&&i| i < 0 || i as usize >= size) {
        return Err(Error::IndexOutOfRange { op, index: bad, dim, size });
    }
    Ok(d)
}

/// Checks that a mask tensor has dtype u8.
pub(crate) fn check_mask(op: &'static str, mask: &Tensor) -> Result<()> {
    if mask.dtype() != DType::U8 {
        return Err(Error::UnsupportedDType { op, dtype: mask.dtype(), msg: "masks must be u8 (0 or 1)" });
    }
    Ok(())
}

impl Tensor {
    /// Casts to `dtype`: floats round to nearest; float to integer truncates toward zero and
    /// saturates (NaN gives 0); integer to integer wraps (two's complement), as PyTorch does.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if self.device().is_cuda() {
            return self.cuda_to_dtype(dtype);
        }
        let src = self.dtype();
        let storage = all_dispatch!(src, |S| {
            let data = self.contiguous_slice::<S>()?;
            all_dispatch!(dtype, |D| { D::into_storage(convert_slice::<S, D>(&data)) })
        });
        Tensor::from_cpu_storage(storage, self.shape())
    }
}
