//! Tensor operations, by family. Each op validates its arguments (returning an [`Error`] that
//! names the op and the offending values), then calls a CPU kernel of `stapes-kernels`.
//!
//! [`Error`]: crate::Error

pub(crate) mod compute;
mod display;
pub mod elementwise;
pub mod index;
pub mod nn;
pub mod reduce;
pub mod shape_ops;
