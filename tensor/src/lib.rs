//! # stapes-tensor
//!
//! Tensors with shapes, strides and views; dtypes f32, f16, bf16, f64 and integer types; a CPU
//! device and CUDA devices (see [`cuda`]). Ops return `Result<Tensor>`; bad input (mismatched
//! shapes, dtypes or devices, out-of-range dims or indices) is an [`Error`] that names the op
//! and the offending values, never a panic.
//!
//! ```
//! use stapes_tensor::{Device, Tensor};
//! let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &Device::Cpu)?;
//! let b = Tensor::from_vec(vec![10.0f32, 20.0, 30.0], [3], &Device::Cpu)?;
//! let c = a.add(&b)?.sum([1], false)?; // broadcasting, then a reduction
//! assert_eq!(c.to_vec::<f32>()?, vec![66.0, 75.0]);
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

#![warn(missing_docs)]

/// Runs `$body` with the type alias `$T` bound to the compute type of a float dtype
/// (`f32` for f16/bf16/f32, `f64` for f64); other dtypes return `UnsupportedDType`.
macro_rules! float_dispatch {
    ($dtype:expr, $op:expr, |$T:ident| $body:block) => {
        match $dtype {
            $crate::DType::F32 | $crate::DType::F16 | $crate::DType::BF16 => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            d => {
                return Err($crate::Error::UnsupportedDType {
                    op: $op,
                    dtype: d,
                    msg: "expected a floating point tensor (f16, bf16, f32, f64)",
                })
            }
        }
    };
}

/// Runs `$body` with `$T` bound to the Rust element type of any dtype.
macro_rules! all_dispatch {
    ($dtype:expr, |$T:ident| $body:block) => {
        match $dtype {
            $crate::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
        }
    };
}

pub mod alloc;
pub mod cuda;
mod device;
mod dtype;
mod error;
mod layout;
pub mod ops;
pub mod random;
mod shape;
mod storage;
mod tensor;

pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use ops::elementwise::{BinaryOp, CmpOp, UnaryOp};
pub use ops::nn::{BatchNormOutput, LayerNormOutput, Pool2d};
pub use ops::reduce::ReduceOp;
pub use ops::shape_ops::PadMode;
pub use random::{
    default_generator_state, manual_seed, set_default_generator_state, with_default_generator, Generator,
};
pub use shape::{broadcast_shapes, Dim, Dims, Shape};
pub use storage::{CpuStorage, Storage};
pub use tensor::{Tensor, TensorId};
