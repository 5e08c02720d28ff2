//! # stapes-kernels
//!
//! The compute kernels of stapes, with no knowledge of `Tensor`: every kernel works on plain
//! slices (CPU) so a researcher can benchmark or test one kernel in isolation.
//!
//! * [`cpu`]: Rust CPU kernels, multi-threaded with rayon, with contiguous fast paths.
//! * [`cuda`]: the CUDA C kernels of `kernels/cuda/`, launched on a GPU (cudarc + NVRTC) or on
//!   the CPU emulator of `kernels/emu/` (tests), with NVRTC compile checks.
//!
//! Conventions shared by all kernels:
//! * Float kernels are generic over [`cpu::Float`] (`f32`, `f64`); half-precision types are
//!   converted to `f32` by the caller (the tensor layer) and computed in `f32`.
//! * Shapes and strides are in elements; strides are non-negative (views never flip an axis).
//! * Kernels never allocate their outputs when the caller can: they write into `&mut [T]`.

#![warn(missing_docs)]

pub mod cpu;
pub mod cuda;
