//! Learning-rate schedules, with PyTorch's semantics and arithmetic.
//!
//! A schedule is a small state machine over the step count. As with
//! `torch.optim.lr_scheduler`, [`LrSchedule::lr`] is the learning rate to use for the current
//! optimizer step, and [`LrSchedule::step`] advances to the next one; a training loop reads
//! `lr()` (and `momentum()`), runs the optimizer step, then calls `step()`. A fresh schedule is
//! at step 0, i.e. where a PyTorch scheduler is right after its construction.
//!
//! The formulas, including the order of the floating-point operations, follow PyTorch 2.11, so
//! that the schedules match it to the last bit or close to it (see `tests/parity_schedules.rs`):
//! [`StepLR`], [`MultiStepLR`], [`ExponentialLR`] and [`LinearWarmup`] update the rate
//! recursively as PyTorch does; [`CosineAnnealingLR`] uses the closed form, which agrees with
//! PyTorch's recursive form to within a few ulps and does not drift.
//!
//! Constructors validate their arguments and return a [`ScheduleError`] instead of panicking.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An invalid schedule argument.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScheduleError {
    /// An argument is out of its range; the message names it and says what is allowed.
    #[error("{schedule}: {message}")]
    InvalidArgument {
        /// The schedule being constructed, e.g. `"CyclicLR"`.
        schedule: &'static str,
        /// What is wrong, with the offending value.
        message: String,
    },
}

fn invalid(schedule: &'static str, message: String) -> ScheduleError {
    ScheduleError::InvalidArgument { schedule, message }
}

/// Checks that a learning rate (or factor) is finite and non-negative.
fn check_non_negative(schedule: &'static str, name: &str, value: f64) -> Result<(), ScheduleError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(schedule, format!("{name} must be a finite number >= 0, got {value}")))
    }
}

/// Checks that a value is finite and strictly positive.
fn check_positive(schedule: &'static str, name: &str, value: f64) -> Result<(), ScheduleError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(schedule, format!("{name} must be a finite number > 0, got {value}")))
    }
}

/// A learning-rate schedule: the learning rate (and optionally the momentum) for each step.
pub trait LrSchedule {
    /// Advances to the next step; call it after each optimizer step, like PyTorch's
    /// `scheduler.step()`.
    fn step(&mut self);
    /// The learning rate for the current step.
    fn lr(&self) -> f64;
    /// The momentum (SGD momentum, or Adam's beta1) for the current step, for schedules that
    /// cycle it; `None` for those that leave it alone.
    fn momentum(&self) -> Option<f64> {
        None
    }
    /// The whole state (configuration and position) as JSON, for checkpoints.
    fn state_dict(&self) -> serde_json::Value;
    /// Restores a state written by [`LrSchedule::state_dict`] of the same schedule type;
    /// afterwards the schedule continues exactly as the saved one would have.
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<(), ScheduleError>;
}

/// Implements the state methods of [`LrSchedule`] through serde.
macro_rules! serde_state {
    ($name:literal) => {
        fn state_dict(&self) -> serde_json::Value {
            serde_json::json!({ "schedule": $name, "state": serde_json::to_value(self).unwrap_or_default() })
        }
        fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<(), ScheduleError> {
            let kind = state.get("schedule").and_then(|v| v.as_str()).unwrap_or("<none>");
            if kind != $name {
                return Err(invalid($name, format!("cannot load the state of a {kind} schedule")));
            }
            let inner = state.get("state").cloned().unwrap_or_default();
            *self = serde_json::from_value(inner).map_err(|e| invalid($name, format!("corrupt state: {e}")))?;
            Ok(())
        }
    };
}

// ------------------------------------------------------------------------------------------------
// CyclicLR
// ------------------------------------------------------------------------------------------------

/// The amplitude policy of [`CyclicLR`], as PyTorch's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum CyclicMode {
    /// A plain triangle, constant amplitude (scale 1, per cycle).
    Triangular,
    /// A triangle whose amplitude halves each cycle (scale `1 / 2^(cycle - 1)`).
    Triangular2,
    /// Amplitude scaled by `gamma^step`, per step (PyTorch's `exp_range`, scale mode
    /// "iterations").
    ExpRange {
        /// The per-step decay of the amplitude, in (0, ∞); usually just below 1.
        gamma: f64,
    },
}

/// The arguments of [`CyclicLR`]; the defaults are PyTorch's (apart from the rates, which
/// PyTorch requires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CyclicLRConfig {
    /// The lower bound of the cycle.
    pub base_lr: f64,
    /// The upper bound of the cycle (reached only with scale 1).
    pub max_lr: f64,
    /// Steps in the increasing half of a cycle (>= 1). PyTorch default: 2000.
    pub step_size_up: usize,
    /// Steps in the decreasing half; `None` means `step_size_up`.
    pub step_size_down: Option<usize>,
    /// The amplitude policy. Default: triangular.
    pub mode: CyclicMode,
    /// Whether the momentum cycles inversely to the learning rate. Default: true.
    pub cycle_momentum: bool,
    /// The lower momentum bound (at the peak learning rate). Default: 0.8.
    pub base_momentum: f64,
    /// The upper momentum bound (at the base learning rate). Default: 0.9.
    pub max_momentum: f64,
}

impl Default for CyclicLRConfig {
    fn default() -> Self {
        Self {
            base_lr: 1e-3,
            max_lr: 6e-3,
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        }
    }
}

/// Cyclical learning rates (Smith, 2017), as `torch.optim.lr_scheduler.CyclicLR`: the rate
/// moves linearly from `base_lr` towards `max_lr` over `step_size_up` steps, and back over
/// `step_size_down`, with the amplitude scaled by the [`CyclicMode`]. With `cycle_momentum`,
/// the momentum moves the opposite way between `max_momentum` and `base_momentum`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CyclicLR {
    config: CyclicLRConfig,
    total_size: f64,
    step_ratio: f64,
    step: u64,
    lr: f64,
    momentum: f64,
}

impl CyclicLR {
    /// Validates the configuration and returns the schedule at step 0.
    pub fn new(config: CyclicLRConfig) -> Result<Self, ScheduleError> {
        const NAME: &str = "CyclicLR";
        check_non_negative(NAME, "base_lr", config.base_lr)?;
        check_non_negative(NAME, "max_lr", config.max_lr)?;
        if config.step_size_up == 0 {
            return Err(invalid(NAME, "step_size_up must be >= 1, got 0".into()));
        }
        if let CyclicMode::ExpRange { gamma } = config.mode {
            check_positive(NAME, "exp_range gamma", gamma)?;
        }
        if config.cycle_momentum {
            check_non_negative(NAME, "base_momentum", config.base_momentum)?;
            check_non_negative(NAME, "max_momentum", config.max_momentum)?;
        }
        let up = config.step_size_up as f64;
        let down = config.step_size_down.map_or(up, |d| d as f64);
        let total_size = up + down;
        let mut s = Self { step_ratio: up / total_size, total_size, config, step: 0, lr: 0.0, momentum: 0.0 };
        s.update();
        Ok(s)
    }

    /// PyTorch's `scale_fn`, applied to the cycle number or the step as its `scale_mode` says.
    fn scale(&self, cycle: f64) -> f64 {
        match self.config.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange { gamma } => gamma.powf(self.step as f64),
        }
    }

    /// `CyclicLR.get_lr` for the current step, operation for operation.
    fn update(&mut self) {
        let epoch = self.step as f64;
        let cycle = (1.0 + epoch / self.total_size).floor();
        let x = 1.0 + epoch / self.total_size - cycle;
        let scale_factor = if x <= self.step_ratio { x / self.step_ratio } else { (x - 1.0) / (self.step_ratio - 1.0) };
        let scale = self.scale(cycle);
        let c = &self.config;
        self.lr = c.base_lr + (c.max_lr - c.base_lr) * scale_factor * scale;
        self.momentum = c.max_momentum - (c.max_momentum - c.base_momentum) * scale_factor * scale;
    }
}

impl LrSchedule for CyclicLR {
    serde_state!("CyclicLR");
    fn step(&mut self) {
        self.step += 1;
        self.update();
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn momentum(&self) -> Option<f64> {
        self.config.cycle_momentum.then_some(self.momentum)
    }
}

// ------------------------------------------------------------------------------------------------
// StepLR, MultiStepLR, ExponentialLR
// ------------------------------------------------------------------------------------------------

/// Multiplies the rate by `gamma` every `step_size` steps, as `torch.optim.lr_scheduler.StepLR`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLR {
    step_size: u64,
    gamma: f64,
    step: u64,
    lr: f64,
}

impl StepLR {
    /// A schedule starting at `lr` that decays by `gamma` every `step_size` (>= 1) steps.
    pub fn new(lr: f64, step_size: usize, gamma: f64) -> Result<Self, ScheduleError> {
        check_non_negative("StepLR", "lr", lr)?;
        check_non_negative("StepLR", "gamma", gamma)?;
        if step_size == 0 {
            return Err(invalid("StepLR", "step_size must be >= 1, got 0".into()));
        }
        Ok(Self { step_size: step_size as u64, gamma, step: 0, lr })
    }
}

impl LrSchedule for StepLR {
    serde_state!("StepLR");
    fn step(&mut self) {
        self.step += 1;
        if self.step.is_multiple_of(self.step_size) {
            self.lr *= self.gamma;
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
}

/// Multiplies the rate by `gamma` at each milestone step, as
/// `torch.optim.lr_scheduler.MultiStepLR` (a milestone listed `n` times multiplies by
/// `gamma^n`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultiStepLR {
    /// Sorted milestones, with repeats.
    milestones: Vec<u64>,
    gamma: f64,
    step: u64,
    lr: f64,
}

impl MultiStepLR {
    /// A schedule starting at `lr` that decays by `gamma` at each step in `milestones` (any
    /// order; repeats count).
    pub fn new(lr: f64, milestones: &[usize], gamma: f64) -> Result<Self, ScheduleError> {
        check_non_negative("MultiStepLR", "lr", lr)?;
        check_non_negative("MultiStepLR", "gamma", gamma)?;
        let mut milestones: Vec<u64> = milestones.iter().map(|&m| m as u64).collect();
        milestones.sort_unstable();
        Ok(Self { milestones, gamma, step: 0, lr })
    }
}

impl LrSchedule for MultiStepLR {
    serde_state!("MultiStepLR");
    fn step(&mut self) {
        self.step += 1;
        let n = self.milestones.iter().filter(|&&m| m == self.step).count();
        if n > 0 {
            // PyTorch: group["lr"] * gamma ** count, a float power.
            self.lr *= self.gamma.powf(n as f64);
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
}

/// Multiplies the rate by `gamma` every step, as `torch.optim.lr_scheduler.ExponentialLR`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExponentialLR {
    gamma: f64,
    lr: f64,
}

impl ExponentialLR {
    /// A schedule starting at `lr`, decaying by `gamma` per step.
    pub fn new(lr: f64, gamma: f64) -> Result<Self, ScheduleError> {
        check_non_negative("ExponentialLR", "lr", lr)?;
        check_non_negative("ExponentialLR", "gamma", gamma)?;
        Ok(Self { gamma, lr })
    }
}

impl LrSchedule for ExponentialLR {
    serde_state!("ExponentialLR");
    fn step(&mut self) {
        self.lr *= self.gamma;
    }
    fn lr(&self) -> f64 {
        self.lr
    }
}

// ------------------------------------------------------------------------------------------------
// CosineAnnealingLR
// ------------------------------------------------------------------------------------------------

/// Cosine annealing from `lr` down to `eta_min` over `t_max` steps, as
/// `torch.optim.lr_scheduler.CosineAnnealingLR` (SGDR without restarts). Past `t_max` the
/// cosine continues, climbing back to `lr` at `2 * t_max`, as in PyTorch.
///
/// Computed in PyTorch's closed form,
/// `eta_min + (lr - eta_min) * (1 + cos(pi * step / t_max)) / 2`; PyTorch's own `step()` uses a
/// recursive form that agrees with it to about 1e-14 relative over 10,000 steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CosineAnnealingLR {
    base_lr: f64,
    t_max: f64,
    eta_min: f64,
    step: u64,
}

impl CosineAnnealingLR {
    /// A schedule from `lr` to `eta_min` over `t_max` (>= 1) steps.
    pub fn new(lr: f64, t_max: usize, eta_min: f64) -> Result<Self, ScheduleError> {
        check_non_negative("CosineAnnealingLR", "lr", lr)?;
        check_non_negative("CosineAnnealingLR", "eta_min", eta_min)?;
        if t_max == 0 {
            return Err(invalid("CosineAnnealingLR", "t_max must be >= 1, got 0".into()));
        }
        Ok(Self { base_lr: lr, t_max: t_max as f64, eta_min, step: 0 })
    }
}

impl LrSchedule for CosineAnnealingLR {
    serde_state!("CosineAnnealingLR");
    fn step(&mut self) {
        self.step += 1;
    }
    fn lr(&self) -> f64 {
        let e = self.step as f64;
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + (std::f64::consts::PI * e / self.t_max).cos()) / 2.0
    }
}

// ------------------------------------------------------------------------------------------------
// OneCycleLR
// ------------------------------------------------------------------------------------------------

/// How [`OneCycleLR`] interpolates within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnnealStrategy {
    /// Half a cosine (PyTorch's default, `"cos"`).
    Cos,
    /// A straight line (`"linear"`).
    Linear,
}

/// The arguments of [`OneCycleLR`]; the defaults are PyTorch's (apart from `max_lr` and
/// `total_steps`, which PyTorch requires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneCycleLRConfig {
    /// The peak learning rate.
    pub max_lr: f64,
    /// The number of steps in the cycle (>= 1).
    pub total_steps: usize,
    /// The fraction of the cycle spent increasing the rate, in [0, 1] (in [0, 0.5] with
    /// `three_phase`). Default: 0.3.
    pub pct_start: f64,
    /// The interpolation within each phase. Default: cos.
    pub anneal_strategy: AnnealStrategy,
    /// The initial rate is `max_lr / div_factor`. Default: 25.
    pub div_factor: f64,
    /// The final rate is `initial_lr / final_div_factor`. Default: 1e4.
    pub final_div_factor: f64,
    /// Three phases (up, back down to the initial rate symmetrically, then down to the final
    /// rate) instead of two (up, then down to the final rate). Default: false.
    pub three_phase: bool,
    /// Whether the momentum cycles inversely to the learning rate. Default: true.
    pub cycle_momentum: bool,
    /// The momentum at the peak learning rate. Default: 0.85.
    pub base_momentum: f64,
    /// The momentum at the start and end. Default: 0.95.
    pub max_momentum: f64,
}

impl Default for OneCycleLRConfig {
    fn default() -> Self {
        Self {
            max_lr: 1e-3,
            total_steps: 1000,
            pct_start: 0.3,
            anneal_strategy: AnnealStrategy::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
        }
    }
}

/// One phase of [`OneCycleLR`]: from `(start_lr, start_momentum)` to `(end_lr, end_momentum)`,
/// ending at step `end_step`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Phase {
    end_step: f64,
    start_lr: f64,
    end_lr: f64,
    start_momentum: f64,
    end_momentum: f64,
}

/// The 1cycle policy (Smith & Topin, 2018), as `torch.optim.lr_scheduler.OneCycleLR`.
///
/// PyTorch raises an error when stepped more than `total_steps` times; here the rate and
/// momentum stay at their values for the last step (`total_steps - 1`) instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneCycleLR {
    phases: Vec<Phase>,
    anneal: AnnealStrategy,
    cycle_momentum: bool,
    total_steps: u64,
    step: u64,
    lr: f64,
    momentum: f64,
}

impl OneCycleLR {
    /// Validates the configuration and returns the schedule at step 0.
    pub fn new(c: OneCycleLRConfig) -> Result<Self, ScheduleError> {
        const NAME: &str = "OneCycleLR";
        check_non_negative(NAME, "max_lr", c.max_lr)?;
        if c.total_steps == 0 {
            return Err(invalid(NAME, "total_steps must be >= 1, got 0".into()));
        }
        if !(0.0..=1.0).contains(&c.pct_start) {
            return Err(invalid(NAME, format!("pct_start must be in [0, 1], got {}", c.pct_start)));
        }
        if c.three_phase && c.pct_start > 0.5 {
            return Err(invalid(NAME, format!("pct_start must be in [0, 0.5] with three_phase, got {}", c.pct_start)));
        }
        check_positive(NAME, "div_factor", c.div_factor)?;
        check_positive(NAME, "final_div_factor", c.final_div_factor)?;
        if c.cycle_momentum {
            check_non_negative(NAME, "base_momentum", c.base_momentum)?;
            check_non_negative(NAME, "max_momentum", c.max_momentum)?;
        }
        let total = c.total_steps as f64;
        let initial_lr = c.max_lr / c.div_factor;
        let min_lr = initial_lr / c.final_div_factor;
        let (max_m, base_m) = (c.max_momentum, c.base_momentum);
        let up_end = c.pct_start * total - 1.0;
        let phases = if c.three_phase {
            vec![
                Phase {
                    end_step: up_end,
                    start_lr: initial_lr,
                    end_lr: c.max_lr,
                    start_momentum: max_m,
                    end_momentum: base_m,
                },
                Phase {
                    end_step: 2.0 * c.pct_start * total - 2.0,
                    start_lr: c.max_lr,
                    end_lr: initial_lr,
                    start_momentum: base_m,
                    end_momentum: max_m,
                },
                Phase {
                    end_step: total - 1.0,
                    start_lr: initial_lr,
                    end_lr: min_lr,
                    start_momentum: max_m,
                    end_momentum: max_m,
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: up_end,
                    start_lr: initial_lr,
                    end_lr: c.max_lr,
                    start_momentum: max_m,
                    end_momentum: base_m,
                },
                Phase {
                    end_step: total - 1.0,
                    start_lr: c.max_lr,
                    end_lr: min_lr,
                    start_momentum: base_m,
                    end_momentum: max_m,
                },
            ]
        };
        let mut s = Self {
            phases,
            anneal: c.anneal_strategy,
            cycle_momentum: c.cycle_momentum,
            total_steps: c.total_steps as u64,
            step: 0,
            lr: 0.0,
            momentum: 0.0,
        };
        s.update();
        Ok(s)
    }

    fn anneal(&self, start: f64, end: f64, pct: f64) -> f64 {
        match self.anneal {
            AnnealStrategy::Cos => {
                let cos_out = (std::f64::consts::PI * pct).cos() + 1.0;
                end + (start - end) / 2.0 * cos_out
            }
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }

    /// `OneCycleLR.get_lr` for the current step (clamped to the last one).
    fn update(&mut self) {
        let step = self.step.min(self.total_steps.saturating_sub(1)) as f64;
        let mut start_step = 0.0;
        let last = self.phases.len().saturating_sub(1);
        for (i, phase) in self.phases.iter().enumerate() {
            if step <= phase.end_step || i == last {
                let span = phase.end_step - start_step;
                // A zero-length phase (PyTorch divides by zero there) sits at its end values.
                let pct = if span == 0.0 { 1.0 } else { (step - start_step) / span };
                self.lr = self.anneal(phase.start_lr, phase.end_lr, pct);
                self.momentum = self.anneal(phase.start_momentum, phase.end_momentum, pct);
                return;
            }
            start_step = phase.end_step;
        }
    }
}

impl LrSchedule for OneCycleLR {
    serde_state!("OneCycleLR");
    fn step(&mut self) {
        self.step += 1;
        self.update();
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn momentum(&self) -> Option<f64> {
        self.cycle_momentum.then_some(self.momentum)
    }
}

// ------------------------------------------------------------------------------------------------
// LinearWarmup
// ------------------------------------------------------------------------------------------------

/// Linear warm-up from `start_factor * lr` to `lr` over `warmup_steps` steps, then constant:
/// `torch.optim.lr_scheduler.LinearLR(start_factor, end_factor=1.0, total_iters=warmup_steps)`,
/// with PyTorch's recursive update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearWarmup {
    start_factor: f64,
    warmup_steps: u64,
    step: u64,
    lr: f64,
}

impl LinearWarmup {
    /// A warm-up to `lr` from `start_factor * lr` (`start_factor` in (0, 1]) over
    /// `warmup_steps` (>= 1) steps.
    pub fn new(lr: f64, start_factor: f64, warmup_steps: usize) -> Result<Self, ScheduleError> {
        const NAME: &str = "LinearWarmup";
        check_non_negative(NAME, "lr", lr)?;
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(invalid(NAME, format!("start_factor must be in (0, 1], got {start_factor}")));
        }
        if warmup_steps == 0 {
            return Err(invalid(NAME, "warmup_steps must be >= 1, got 0".into()));
        }
        Ok(Self { start_factor, warmup_steps: warmup_steps as u64, step: 0, lr: lr * start_factor })
    }
}

impl LrSchedule for LinearWarmup {
    serde_state!("LinearWarmup");
    fn step(&mut self) {
        self.step += 1;
        if self.step <= self.warmup_steps {
            let delta = 1.0 - self.start_factor;
            let denom = self.warmup_steps as f64 * self.start_factor + (self.step - 1) as f64 * delta;
            self.lr *= 1.0 + delta / denom;
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
}

// ------------------------------------------------------------------------------------------------
// Noam
// ------------------------------------------------------------------------------------------------

/// The Transformer schedule of "Attention is all you need" (as ESPnet's `NoamLR`):
/// `lr = factor * d_model^-0.5 * min(n^-0.5, n * warmup^-1.5)` for step `n`, counted from 1
/// (the first optimizer step uses `n = 1`). The rate rises linearly for `warmup` steps, peaks
/// at `factor * (d_model * warmup)^-0.5`, then decays as `n^-0.5`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noam {
    scale: f64,
    warmup: f64,
    step: u64,
}

impl Noam {
    /// The schedule for model width `d_model` (>= 1) and `warmup` (>= 1) steps, scaled by
    /// `factor`.
    pub fn new(factor: f64, d_model: usize, warmup: usize) -> Result<Self, ScheduleError> {
        check_non_negative("Noam", "factor", factor)?;
        if d_model == 0 {
            return Err(invalid("Noam", "d_model must be >= 1, got 0".into()));
        }
        if warmup == 0 {
            return Err(invalid("Noam", "warmup must be >= 1, got 0".into()));
        }
        Ok(Self { scale: factor * (d_model as f64).powf(-0.5), warmup: warmup as f64, step: 1 })
    }
}

impl LrSchedule for Noam {
    serde_state!("Noam");
    fn step(&mut self) {
        self.step += 1;
    }
    fn lr(&self) -> f64 {
        let n = self.step as f64;
        self.scale * n.powf(-0.5).min(n * self.warmup.powf(-1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrs(s: &mut dyn LrSchedule, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let lr = s.lr();
                s.step();
                lr
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs() + 1e-18
    }

    #[test]
    fn noam_matches_formula_and_hand_values() {
        let mut s = Noam::new(1.0, 512, 4000).unwrap();
        let v = lrs(&mut s, 10_000);
        // Step 1: 512^-0.5 * 4000^-1.5; the peak at step 4000: (512 * 4000)^-0.5.
        assert!(close(v[0], 1.0 / (512f64.sqrt() * 4000f64.powf(1.5))));
        assert!(close(v[0], 1.746928107421711e-7));
        assert!(close(v[3999], 1.0 / (512.0f64 * 4000.0).sqrt()));
        assert!(close(v[3999], 6.987712429686843e-4));
        // Step 10000: 512^-0.5 * 10000^-0.5 = 1 / (100 * sqrt(512)).
        assert!(close(v[9999], 4.4194173824159226e-4));
        let peak = v.iter().cloned().fold(0.0, f64::max);
        assert_eq!(peak, v[3999]);
        for (i, &lr) in v.iter().enumerate() {
            let n = (i + 1) as f64;
            let expected = if n <= 4000.0 { n / (512f64.sqrt() * 4000f64.powf(1.5)) } else { 1.0 / (512.0 * n).sqrt() };
            assert!(close(lr, expected), "step {n}: {lr} vs {expected}");
        }
        let mut f = Noam::new(5.0, 256, 25_000).unwrap();
        assert!(close(f.lr(), 5.0 / 16.0 * 25_000f64.powf(-1.5)));
        f.step();
        assert!(close(f.lr(), 2.0 * 5.0 / 16.0 * 25_000f64.powf(-1.5)));
    }

    #[test]
    fn constructors_reject_bad_arguments() {
        let up0 = CyclicLR::new(CyclicLRConfig { step_size_up: 0, ..Default::default() }).unwrap_err();
        assert_eq!(up0.to_string(), "CyclicLR: step_size_up must be >= 1, got 0");
        assert!(CyclicLR::new(CyclicLRConfig { base_lr: f64::NAN, ..Default::default() }).is_err());
        assert!(
            CyclicLR::new(CyclicLRConfig { mode: CyclicMode::ExpRange { gamma: 0.0 }, ..Default::default() }).is_err()
        );
        let t0 = OneCycleLR::new(OneCycleLRConfig { total_steps: 0, ..Default::default() }).unwrap_err();
        assert_eq!(t0.to_string(), "OneCycleLR: total_steps must be >= 1, got 0");
        let pct = OneCycleLR::new(OneCycleLRConfig { pct_start: 1.5, ..Default::default() }).unwrap_err();
        assert_eq!(pct.to_string(), "OneCycleLR: pct_start must be in [0, 1], got 1.5");
        assert!(OneCycleLR::new(OneCycleLRConfig { pct_start: -0.1, ..Default::default() }).is_err());
        assert!(OneCycleLR::new(OneCycleLRConfig { pct_start: 0.6, three_phase: true, ..Default::default() }).is_err());
        assert!(OneCycleLR::new(OneCycleLRConfig { div_factor: 0.0, ..Default::default() }).is_err());
        assert!(StepLR::new(0.1, 0, 0.5).is_err());
        assert!(ExponentialLR::new(-1.0, 0.5).is_err());
        assert!(CosineAnnealingLR::new(0.1, 0, 0.0).is_err());
        assert!(LinearWarmup::new(0.1, 0.0, 10).is_err());
        assert!(LinearWarmup::new(0.1, 0.5, 0).is_err());
        assert!(Noam::new(1.0, 0, 10).is_err());
        assert!(Noam::new(1.0, 10, 0).is_err());
    }

    #[test]
    fn simple_schedules_hand_values() {
        let v = lrs(&mut StepLR::new(1.0, 2, 0.5).unwrap(), 5);
        assert_eq!(v, [1.0, 1.0, 0.5, 0.5, 0.25]);
        let v = lrs(&mut MultiStepLR::new(1.0, &[3, 1, 3], 0.5).unwrap(), 5);
        assert_eq!(v, [1.0, 0.5, 0.5, 0.125, 0.125]);
        let v = lrs(&mut ExponentialLR::new(1.0, 0.5).unwrap(), 3);
        assert_eq!(v, [1.0, 0.5, 0.25]);
        let v = lrs(&mut LinearWarmup::new(1.0, 0.5, 2).unwrap(), 4);
        assert!(close(v[0], 0.5) && close(v[1], 0.75) && close(v[2], 1.0) && close(v[3], 1.0), "{v:?}");
        let v = lrs(&mut CosineAnnealingLR::new(1.0, 2, 0.0).unwrap(), 5);
        assert!(close(v[0], 1.0) && close(v[1], 0.5) && v[2].abs() < 1e-16 && close(v[3], 0.5) && close(v[4], 1.0));
    }

    #[test]
    fn cyclic_and_onecycle_shapes() {
        let cfg = CyclicLRConfig {
            base_lr: 1.0,
            max_lr: 3.0,
            step_size_up: 2,
            mode: CyclicMode::Triangular2,
            ..Default::default()
        };
        let mut s = CyclicLR::new(cfg).unwrap();
        assert_eq!(s.momentum(), Some(0.9));
        let v = lrs(&mut s, 9);
        assert_eq!(v, [1.0, 2.0, 3.0, 2.0, 1.0, 1.5, 2.0, 1.5, 1.0]);
        let mut o =
            OneCycleLR::new(OneCycleLRConfig { max_lr: 1.0, total_steps: 11, pct_start: 0.5, ..Default::default() })
                .unwrap();
        assert!(close(o.lr(), 1.0 / 25.0));
        assert_eq!(o.momentum(), Some(0.95));
        let v = lrs(&mut o, 20);
        assert!(close(v[10], 1.0 / 25.0 / 1e4), "{}", v[10]);
        // Past total_steps the rate stays at its last value.
        assert_eq!(v[19], v[10]);
        let no_m = OneCycleLR::new(OneCycleLRConfig { cycle_momentum: false, ..Default::default() }).unwrap();
        assert_eq!(no_m.momentum(), None);
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;

    /// Saving mid-way and loading into a schedule built differently continues exactly.
    #[test]
    fn state_round_trip_continues_exactly() {
        let make = || -> Vec<Box<dyn LrSchedule>> {
            vec![
                Box::new(
                    CyclicLR::new(CyclicLRConfig {
                        base_lr: 1e-5,
                        max_lr: 1e-4,
                        step_size_up: 7,
                        mode: CyclicMode::Triangular2,
                        ..CyclicLRConfig::default()
                    })
                    .unwrap(),
                ),
                Box::new(ExponentialLR::new(0.1, 0.97).unwrap()),
                Box::new(
                    OneCycleLR::new(OneCycleLRConfig { max_lr: 0.1, total_steps: 50, ..OneCycleLRConfig::default() })
                        .unwrap(),
                ),
                Box::new(Noam::new(1.0, 256, 10).unwrap()),
            ]
        };
        let mut a = make();
        for s in a.iter_mut() {
            for _ in 0..23 {
                s.step();
            }
        }
        let saved: Vec<String> = a.iter().map(|s| s.state_dict().to_string()).collect();
        let mut b = make();
        for (s, j) in b.iter_mut().zip(&saved) {
            s.load_state_dict(&serde_json::from_str(j).unwrap()).unwrap();
        }
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            for _ in 0..40 {
                x.step();
                y.step();
                assert_eq!(x.lr().to_bits(), y.lr().to_bits());
                assert_eq!(x.momentum().map(f64::to_bits), y.momentum().map(f64::to_bits));
            }
        }
        // A state of another schedule, or garbage, is an error, not a panic.
        let mut e = ExponentialLR::new(0.1, 0.9).unwrap();
        assert!(e.load_state_dict(&serde_json::from_str(&saved[0]).unwrap()).is_err());
        assert!(e.load_state_dict(&serde_json::json!({"schedule": "ExponentialLR", "state": 3})).is_err());
    }
}
