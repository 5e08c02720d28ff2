//! Layers named as in `torch.nn`, each a [`crate::Module`] whose parameter names match
//! PyTorch's `state_dict` keys for the same layer.

mod dropout;
mod layer_norm;
mod linear;

pub use dropout::{dropout, Dropout};
pub use layer_norm::LayerNorm;
pub use linear::{linear, Linear};
