//! # stapes
//!
//! A from-scratch GPU tensor engine with reverse-mode autograd, hand-written CPU and CUDA
//! kernels, and a speech stack on top. This facade re-exports the workspace crates, each usable
//! on its own:
//!
//! | module | crate | what it holds |
//! |---|---|---|
//! | [`kernels`] | `stapes-kernels` | CPU kernels over plain slices (GEMM, conv, norms, reductions, CTC, LSTM/GRU cells, ...) and their CUDA C twins with the launch path, the caching allocator and the CPU emulator of CUDA |
//! | [`tensor`] | `stapes-tensor` | [`Tensor`](tensor::Tensor): dtypes, CPU and CUDA devices, strided views, broadcasting ops; every op returns a `Result` whose error names the op and the values |
//! | [`autograd`] | `stapes-autograd` | [`Var`](autograd::Var): define-by-run reverse-mode autodiff, custom ops with their own backward, `no_grad`, autocast, f64 gradient checking |
//! | [`nn`] | `stapes-nn` | `torch.nn` for Rust: [`Module`](nn::Module) with PyTorch `state_dict` names, layers, RNNs, attention and Transformers, losses (CTC too), optimizers, LR schedules, AMP, checkpoints |
//! | [`speech`] | `stapes-speech` | audio I/O, features (STFT, mel, MFCC), augmentation, data loading, CRDNN and DeepSpeech2, the CTC trainer, beam search with an n-gram LM, metrics, TensorBoard logs, plots |
//!
//! The `stapes` command-line program sits behind the default `cli` feature; a library user
//! depends on `stapes = { version = "0.1", default-features = false }` and builds none of its
//! dependencies.
//!
//! ```
//! use stapes::prelude::*;
//!
//! // A two-layer MLP, one Adam step on a regression target.
//! let model = Sequential::new().with(Linear::new(4, 16, true)?).with(ReLU::new()).with(Linear::new(16, 1, true)?);
//! let mut opt = Adam::new(model.parameters(), AdamConfig::adam())?;
//! let x = Var::constant(Tensor::randn([8, 4], DType::F32, &Device::Cpu)?);
//! let y = Var::constant(Tensor::zeros([8, 1], DType::F32, &Device::Cpu)?);
//! let loss = mse_loss(&model.forward(&x)?, &y, Reduction::Mean)?;
//! loss.backward()?;
//! opt.step()?;
//!
//! // Save the weights under PyTorch's names and load them back.
//! let path = std::env::temp_dir().join(format!("stapes-doc-{}.safetensors", std::process::id()));
//! stapes::save_safetensors(&path, &model.state_dict())?;
//! let state = stapes::load_safetensors(&path)?;
//! assert_eq!(state.keys().collect::<Vec<_>>(), ["0.bias", "0.weight", "2.bias", "2.weight"]);
//! model.load_state_dict(&state, true)?;
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), stapes::tensor::Error>(())
//! ```

#![warn(missing_docs)]

pub use stapes_autograd as autograd;
pub use stapes_kernels as kernels;
pub use stapes_nn as nn;
pub use stapes_speech as speech;
pub use stapes_tensor as tensor;

use std::collections::BTreeMap;
use std::path::Path;

/// Reads a safetensors file (a `state_dict` saved by PyTorch's `safetensors.torch.save_file`,
/// by [`save_safetensors`] or by Hugging Face) into named CPU tensors. A missing, truncated
/// or corrupt file is an error naming the file and the problem. For the file's string
/// metadata too, use [`nn::checkpoint::load_safetensors`].
pub fn load_safetensors(path: impl AsRef<Path>) -> tensor::Result<BTreeMap<String, tensor::Tensor>> {
    Ok(nn::checkpoint::load_safetensors(path)?.tensors)
}

/// Writes named tensors (e.g. `model.state_dict()`) as a safetensors file that PyTorch loads
/// with `safetensors.torch.load_file`; written to a temporary file, synced, then renamed, so
/// an interrupted save never leaves a truncated file.
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &BTreeMap<String, tensor::Tensor>) -> tensor::Result<()> {
    nn::checkpoint::save_safetensors(path, tensors, None)
}

/// The names most programs use, for `use stapes::prelude::*;`: tensors, autograd, modules,
/// the common layers, losses and optimizers.
pub mod prelude {
    pub use crate::autograd::{no_grad, Var};
    pub use crate::nn::layers::{
        Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, Dropout, Embedding, LayerNorm, Linear, MaxPool2d, ReLU, Sequential,
    };
    pub use crate::nn::loss::{cross_entropy, mse_loss, CrossEntropyOptions, Reduction};
    pub use crate::nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
    pub use crate::nn::rnn::{Gru, Lstm, RnnConfig};
    pub use crate::nn::{Forward, Module, StateDictExt};
    pub use crate::tensor::{DType, Device, Tensor};
}
