//! # stapes-nn
//!
//! Neural-network building blocks for stapes. For now this holds the learning-rate schedules
//! ([`schedule`]), pure `f64` arithmetic with no tensors, checked step by step against
//! PyTorch's `torch.optim.lr_scheduler` by `tests/parity_schedules.rs` at the workspace root.
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

pub mod schedule;
