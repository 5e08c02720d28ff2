//! # stapes-nn
//!
//! The layer a PyTorch user reaches for, named as in `torch.nn`: the [`Module`] pattern
//! (parameters and buffers with `state_dict` names), layers, initialisation, losses,
//! optimizers, learning-rate schedules, mixed precision and checkpoints. Parity with PyTorch
//! is checked by the `tests/parity_nn_*.rs` and `tests/parity_schedules.rs` tests at the
//! workspace root, against golden files written by `tools/golden/nn*.py`.
//!
//! ```
//! use stapes_autograd::Var;
//! use stapes_nn::layers::{Conv2d, Conv2dConfig, Flatten, Linear, MaxPool2d, ReLU, Sequential};
//! use stapes_nn::loss::{cross_entropy, CrossEntropyOptions};
//! use stapes_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use stapes_nn::{Forward, Module};
//! use stapes_tensor::{DType, Device, Tensor};
//!
//! let net = Sequential::new()
//!     .with(Conv2d::new_with(1, 8, 3, Conv2dConfig::default().padding(1))?)
//!     .with(ReLU::new())
//!     .with(MaxPool2d::new(2)?)
//!     .with(Flatten::new(1, -1))
//!     .with(Linear::new(8 * 4 * 4, 10, true)?);
//! let mut opt = Sgd::new(net.parameters(), SgdConfig { lr: 0.1, ..Default::default() })?;
//! let x = Var::constant(Tensor::randn([4, 1, 8, 8], DType::F32, &Device::Cpu)?);
//! let y = Tensor::from_vec(vec![1i64, 0, 3, 9], [4], &Device::Cpu)?;
//! let loss = cross_entropy(&net.forward(&x)?, &y, &CrossEntropyOptions::default())?;
//! loss.backward()?;
//! opt.step()?;
//! assert!(net.state_dict().contains_key("4.weight")); // PyTorch's state_dict names
//! # Ok::<(), stapes_tensor::Error>(())
//! ```
//!
//! Learning-rate schedules step like PyTorch's:
//!
//! ```
//! use stapes_nn::schedule::{CyclicLR, CyclicLRConfig, CyclicMode, LrSchedule};
//!
//! let mut sched = CyclicLR::new(CyclicLRConfig {
//!     base_lr: 1e-5,
//!     max_lr: 1e-4,
//!     step_size_up: 2000,
//!     mode: CyclicMode::Triangular2,
//!     ..CyclicLRConfig::default()
//! })?;
//! for _ in 0..2000 {
//!     // optimizer.step() with sched.lr() and sched.momentum(), then:
//!     sched.step();
//! }
//! assert!((sched.lr() - 1e-4).abs() < 1e-18);
//! # Ok::<(), stapes_nn::schedule::ScheduleError>(())
//! ```

#![warn(missing_docs)]

pub mod amp;
pub mod attention;
pub mod checkpoint;
pub mod clip;
pub mod ctc;
pub mod init;
pub mod layers;
mod lengths;
pub mod loss;
pub mod module;
pub mod optim;
pub mod qat;
pub mod quantized;
pub mod rnn;
pub mod schedule;
pub mod transformer;

pub use lengths::Lengths;
pub use module::{Buffer, Forward, IncompatibleKeys, Module, Param, StateDictExt, TrainingFlag};
