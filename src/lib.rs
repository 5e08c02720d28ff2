//! # stapes
//!
//! A from-scratch GPU tensor engine with reverse-mode autograd and a speech stack.
//! This facade re-exports the workspace crates:
//!
//! * [`kernels`]: the compute kernels over plain slices;
//! * [`tensor`]: tensors with dtypes, devices, strided views and ops;
//! * [`autograd`]: define-by-run reverse-mode automatic differentiation;
//! * [`nn`]: neural-network building blocks (learning-rate schedules so far).

pub use stapes_autograd as autograd;
pub use stapes_kernels as kernels;
pub use stapes_nn as nn;
pub use stapes_speech as speech;
pub use stapes_tensor as tensor;
