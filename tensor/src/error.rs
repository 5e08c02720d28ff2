//! The one error type of stapes-tensor. Every variant names the operation that failed and the
//! offending values (shapes, dtypes, devices, indices), so a message explains itself.

use crate::{DType, Device};

/// Result alias for tensor operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors returned by tensor operations. No tensor operation panics on bad input.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum Error {
    /// Two shapes that must be broadcast together cannot be.
    #[error("{op}: shapes {lhs:?} and {rhs:?} cannot be broadcast together (dim {dim}: {l} vs {r})")]
    BroadcastIncompatible { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize>, dim: usize, l: usize, r: usize },
    /// Shapes that must agree do not; `msg` says how.
    #[error("{op}: {msg}")]
    ShapeMismatch { op: &'static str, msg: String },
    /// Two operands have different dtypes.
    #[error("{op}: dtype mismatch, {lhs:?} vs {rhs:?}")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },
    /// The operation does not support this dtype.
    #[error("{op}: unsupported dtype {dtype:?} ({msg})")]
    UnsupportedDType { op: &'static str, dtype: DType, msg: &'static str },
    /// A dimension index is out of range.
    #[error("{op}: dim {dim} out of range for a tensor of rank {rank} (valid: {lo}..={hi})", lo = -(*rank as i64).max(1), hi = (*rank as i64 - 1).max(0))]
    DimOutOfRange { op: &'static str, dim: i64, rank: usize },
    /// An element index is out of range.
    #[error("{op}: index {index} out of range for dim {dim} of size {size}")]
    IndexOutOfRange { op: &'static str, index: i64, dim: usize, size: usize },
    /// A reshape to a different element count.
    #[error("{op}: cannot reshape {src:?} ({src_n} elements) into {dst:?} ({dst_n} elements)")]
    ElementCount { op: &'static str, src: Vec<usize>, src_n: usize, dst: Vec<usize>, dst_n: usize },
    /// Operands on different devices.
    #[error("{op}: operands on different devices, {lhs:?} and {rhs:?}")]
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },
    /// The device cannot be used on this machine or build.
    #[error("{op}: device {device} is not available: {msg}")]
    DeviceUnavailable { op: &'static str, device: Device, msg: String },
    /// The op has no CUDA kernel yet; `location` is the call site that needed host data.
    #[error(
        "{op}: no CUDA kernel for this operation yet, and the tensor is on {device} (move it with \
         .to_device(&Device::Cpu) first; needed at {location})"
    )]
    NoCudaKernel { op: &'static str, device: Device, location: String },
    /// The device has no room for an allocation, even after its cache was released.
    #[error("{op}: {msg}")]
    OutOfMemory { op: &'static str, msg: String },
    /// A CUDA kernel launch, copy or allocation failed.
    #[error("{op}: CUDA: {msg}")]
    Cuda { op: &'static str, msg: String },
    /// An argument has an invalid value.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// A file could not be read or written, or its contents are corrupt.
    #[error("{op}: {path}: {msg}")]
    Io { op: &'static str, path: String, msg: String },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl AsRef<std::path::Path>, msg: impl std::fmt::Display) -> Self {
        Error::Io { op, path: path.as_ref().display().to_string(), msg: msg.to_string() }
    }
    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::ShapeMismatch { op, msg: msg.into() }
    }
}
