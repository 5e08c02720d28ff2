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
    BroadcastIncompatible {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The left shape (for `broadcast_as`, the source shape).
        lhs: Vec<usize>,
        /// The right shape (for `broadcast_as`, the target shape).
        rhs: Vec<usize>,
        /// The conflicting dimension, indexed in the right-aligned broadcast shape.
        dim: usize,
        /// The size of `lhs` at `dim`.
        l: usize,
        /// The size of `rhs` at `dim`.
        r: usize,
    },
    /// Shapes that must agree do not; `msg` says how.
    #[error("{op}: {msg}")]
    ShapeMismatch {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// What disagrees, e.g. the two shapes.
        msg: String,
    },
    /// Two operands have different dtypes.
    #[error("{op}: dtype mismatch, {lhs:?} vs {rhs:?}")]
    DTypeMismatch {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The dtype of the left operand.
        lhs: DType,
        /// The dtype of the right operand.
        rhs: DType,
    },
    /// The operation does not support this dtype.
    #[error("{op}: unsupported dtype {dtype:?} ({msg})")]
    UnsupportedDType {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The rejected dtype.
        dtype: DType,
        /// What the operation expected, e.g. `expected a float dtype`.
        msg: &'static str,
    },
    /// A dimension index is out of range.
    #[error("{op}: dim {dim} out of range for a tensor of rank {rank} (valid: {lo}..={hi})", lo = -(*rank as i64).max(1), hi = (*rank as i64 - 1).max(0))]
    DimOutOfRange {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The requested dimension, possibly negative (counted from the end).
        dim: i64,
        /// The rank of the tensor.
        rank: usize,
    },
    /// An element index is out of range.
    #[error("{op}: index {index} out of range for dim {dim} of size {size}")]
    IndexOutOfRange {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The offending index.
        index: i64,
        /// The dimension being indexed.
        dim: usize,
        /// The size of `dim`.
        size: usize,
    },
    /// A reshape to a different element count.
    #[error("{op}: cannot reshape {src:?} ({src_n} elements) into {dst:?} ({dst_n} elements)")]
    ElementCount {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The source shape (for a flat buffer, its length).
        src: Vec<usize>,
        /// The element count of the source.
        src_n: usize,
        /// The requested shape.
        dst: Vec<usize>,
        /// The element count of `dst`.
        dst_n: usize,
    },
    /// Operands on different devices.
    #[error("{op}: operands on different devices, {lhs:?} and {rhs:?}")]
    DeviceMismatch {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The device of the left operand.
        lhs: Device,
        /// The device of the right operand.
        rhs: Device,
    },
    /// The device cannot be used on this machine or build.
    #[error("{op}: device {device} is not available: {msg}")]
    DeviceUnavailable {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The requested device.
        device: Device,
        /// Why it cannot be used.
        msg: String,
    },
    /// The op has no CUDA kernel yet; `location` is the call site that needed host data.
    #[error(
        "{op}: no CUDA kernel for this operation yet, and the tensor is on {device} (move it with \
         .to_device(&Device::Cpu) first; needed at {location})"
    )]
    NoCudaKernel {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The CUDA device the tensor is on.
        device: Device,
        /// The call site, as `file:line`.
        location: String,
    },
    /// The device has no room for an allocation, even after its cache was released.
    #[error("{op}: {msg}")]
    OutOfMemory {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The allocator's report: requested size, device and memory statistics.
        msg: String,
    },
    /// A CUDA kernel launch, copy or allocation failed.
    #[error("{op}: CUDA: {msg}")]
    Cuda {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The error from the CUDA backend.
        msg: String,
    },
    /// An argument has an invalid value.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// Which argument is invalid and why.
        msg: String,
    },
    /// A file could not be read or written, or its contents are corrupt.
    #[error("{op}: {path}: {msg}")]
    Io {
        /// The operation's name, e.g. `matmul`.
        op: &'static str,
        /// The file's path.
        path: String,
        /// What went wrong, e.g. the OS error or the corruption found.
        msg: String,
    },
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
