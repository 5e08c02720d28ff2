//! # stapes-kernels
//!
//! The compute kernels of stapes, with no knowledge of `Tensor`: every kernel works on plain
//! slices (CPU) so a researcher can benchmark or test one kernel in isolation.
//!
//! * [`cpu`]: Rust CPU kernels, multi-threaded with rayon, with contiguous fast paths.
//! * [`cuda`]: the CUDA C kernels of `kernels/cuda/`, launched on a GPU (cudarc + NVRTC) or on
//!   the CPU emulator (the scheduler in `kernels/emu/`, the header in `stapes-cuda-build`; the
//!   `emu` feature), with NVRTC compile checks. Kernels of other crates join them through
//!   [`cuda::register_kernels`] (see the `custom-op` example).
//!
//! ```
//! use stapes_kernels::cpu::softmax::softmax_last;
//! // Softmax over the last dim of a [2, 3] row-major array, straight on slices.
//! let x = [1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0];
//! let mut y = [0.0f32; 6];
//! softmax_last(&x, 2, 3, false, &mut y);
//! assert!((y[2] - 0.665_240_9).abs() < 1e-6 && (y[3] - 1.0 / 3.0).abs() < 1e-6);
//! ```
//!
//! Conventions shared by all kernels:
//! * Float kernels are generic over [`cpu::Float`] (`f32`, `f64`); half-precision types are
//!   converted to `f32` by the caller (the tensor layer) and computed in `f32`.
//! * Shapes and strides are in elements; strides are non-negative (views never flip an axis).
//! * Kernels never allocate their outputs when the caller can: they write into `&mut [T]`.

#![warn(missing_docs)]

pub mod cpu;
pub mod cuda;
