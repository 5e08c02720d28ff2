//! # stapes-nn
//!
//! The layer a PyTorch user reaches for, named as in `torch.nn`: the [`Module`] pattern
//! (parameters and buffers with `state_dict` names), layers, initialisation, losses,
//! optimizers, learning-rate schedules, mixed precision and checkpoints. Parity with PyTorch
//! is checked by the `tests/parity_nn_*.rs` and `tests/parity_schedules.rs` tests at the
//! workspace root, against golden files written by `tools/golden/nn*.py`.
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
pub mod rnn;
pub mod schedule;
pub mod transformer;

pub use lengths::Lengths;
pub use module::{Buffer, Forward, IncompatibleKeys, Module, Param, StateDictExt, TrainingFlag};
