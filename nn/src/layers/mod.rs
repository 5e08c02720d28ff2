//! Layers named as in `torch.nn`, each a [`crate::Module`] whose parameter and buffer names
//! match PyTorch's `state_dict` keys for the same layer, with PyTorch's constructor defaults
//! and default initialisation. Every layer implements [`crate::Forward`], so any of them can
//! be chained in a [`Sequential`]. Size arguments take one number or a pair ([`Size2`]), as
//! PyTorch's do: `MaxPool2d::new(2)`, `Conv2d::new(1, 64, 3)`.
//!
//! | stapes | PyTorch |
//! |---|---|
//! | [`Linear`], [`linear`] | `nn.Linear`, `F.linear` |
//! | [`PackedLinear`] (from [`Linear::packed`]) | a frozen `nn.Linear` for CPU inference, weights packed once |
//! | [`Conv1d`], [`Conv2d`] (config: [`Conv1dConfig`], [`Conv2dConfig`]) | `nn.Conv1d`, `nn.Conv2d` |
//! | [`MaxPool2d`], [`AvgPool2d`], [`max_pool2d`], [`avg_pool2d`] | `nn.MaxPool2d`, `nn.AvgPool2d`, `F.max_pool2d`, `F.avg_pool2d` |
//! | [`BatchNorm1d`], [`BatchNorm2d`], [`BatchNorm3d`] | `nn.BatchNorm1d/2d/3d` |
//! | [`LayerNorm`] | `nn.LayerNorm` |
//! | [`Embedding`], [`embedding`] | `nn.Embedding`, `F.embedding` |
//! | [`Dropout`], [`dropout`] | `nn.Dropout`, `F.dropout` |
//! | [`ReLU`], [`LeakyReLU`], [`GELU`], [`SiLU`], [`Tanh`], [`Sigmoid`], [`Softmax`], [`LogSoftmax`] | the same names |
//! | [`Identity`], [`Flatten`], [`Sequential`] | the same names |

mod activation;
mod batch_norm;
mod conv;
mod dropout;
mod embedding;
mod layer_norm;
mod linear;
mod pool;
mod sequential;
mod size;

pub use activation::{
    Flatten, GeluApproximate, Hardtanh, Identity, LeakyReLU, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Tanh, GELU,
};
pub use batch_norm::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormConfig};
pub use conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, ConvPadding, PaddingMode};
pub use dropout::{dropout, Dropout};
pub use embedding::{embedding, Embedding};
pub use layer_norm::LayerNorm;
pub(crate) use linear::check_in_features;
pub use linear::{linear, Linear, PackedLinear};
pub use pool::{avg_pool2d, max_pool2d, AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
pub use sequential::Sequential;
pub use size::Size2;
