//! # stapes-autograd
//!
//! Define-by-run reverse-mode automatic differentiation over [`stapes_tensor::Tensor`].
//!
//! Ops on [`Var`]s run eagerly and, when an input requires a gradient and grad mode is on,
//! record a node holding the op's backward closure and the tensors it saved. [`Var::backward`]
//! walks the recorded graph in reverse topological order, accumulating gradients into the
//! leaves; the nodes' saved tensors are freed as soon as they have been used, unless the graph
//! is retained ([`Var::backward_with_options`]). Fused ops with their own backward (CTC, LSTM)
//! are registered with [`Var::from_op`].
//!
//! ```
//! use stapes_autograd::Var;
//! use stapes_tensor::{Device, Tensor};
//! let x = Var::leaf(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], &Device::Cpu)?);
//! let y = x.mul(&x)?.sum_all()?; // y = Σ x²
//! y.backward()?;
//! assert_eq!(x.grad().unwrap().to_vec::<f32>()?, vec![2.0, 4.0, 6.0]);
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

#![warn(missing_docs)]

pub mod autocast;
mod gradcheck;
mod ops;
mod var;

pub use autocast::{autocast, autocast_dtype, AutocastGuard};
pub use gradcheck::{gradcheck, GradcheckReport};
pub use var::{is_grad_enabled, no_grad, BackwardFn, NoGradGuard, Var};
