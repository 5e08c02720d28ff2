//! Mixed precision: the autocast scope (re-exported from `stapes-autograd`) and a
//! [`GradScaler`] with PyTorch's dynamic loss scaling.
//!
//! A mixed-precision step, as with `torch.amp`:
//! ```
//! use stapes_autograd::Var;
//! use stapes_nn::amp::{autocast, GradScaler, GradScalerConfig};
//! use stapes_nn::layers::Linear;
//! use stapes_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use stapes_nn::{Forward, Module};
//! use stapes_tensor::{DType, Device, Tensor};
//!
//! let model = Linear::new(4, 2, true)?;
//! let mut scaler = GradScaler::new(GradScalerConfig::default())?;
//! let x = Var::constant(Tensor::ones([3, 4], DType::F32, &Device::Cpu)?);
//! // Matmul runs in bf16 inside the scope; the loss reduction runs in f32.
//! let loss = autocast(DType::BF16, || model.forward(&x)?.sqr()?.mean_all())??;
//! scaler.scale(&loss)?.backward()?;
//! let params = model.parameters();
//! let mut opt = Sgd::new(params.clone(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
//! let stepped = scaler.step(&params, || opt.step())?;
//! scaler.update()?;
//! assert!(stepped);
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

use crate::module::Param;
use serde::{Deserialize, Serialize};
use stapes_autograd::Var;
pub use stapes_autograd::{autocast, autocast_dtype, AutocastGuard};
use stapes_tensor::{Error, Result};

/// The settings of a [`GradScaler`], with `torch.amp.GradScaler`'s defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradScalerConfig {
    /// The initial loss scale (65536 = 2^16).
    pub init_scale: f64,
    /// Multiplies the scale after `growth_interval` steps without inf/NaN (2.0).
    pub growth_factor: f64,
    /// Multiplies the scale after a step with inf/NaN gradients (0.5).
    pub backoff_factor: f64,
    /// Consecutive finite steps before the scale grows (2000).
    pub growth_interval: u64,
    /// When false every method is a pass-through (scale 1, steps always taken).
    pub enabled: bool,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        GradScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            enabled: true,
        }
    }
}

/// Where the scaler is within the current step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum Stage {
    Ready,
    Unscaled { found_inf: bool },
    Stepped { found_inf: bool },
}

/// Dynamic loss scaling (`torch.amp.GradScaler`): multiply the loss by a scale before
/// `backward` so small f16 gradients do not flush to zero; before the optimizer step divide
/// the gradients by the scale and skip the step if any is inf or NaN; then halve the scale
/// after a skipped step, or double it after `growth_interval` finite steps in a row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GradScaler {
    config: GradScalerConfig,
    scale: f64,
    growth_tracker: u64,
    stage: Stage,
    skipped_steps: u64,
}

impl GradScaler {
    /// A scaler with `config`; factors and the initial scale are validated.
    pub fn new(config: GradScalerConfig) -> Result<GradScaler> {
        const OP: &str = "GradScaler::new";
        if !(config.init_scale.is_finite() && config.init_scale > 0.0) {
            return Err(Error::invalid(OP, format!("init_scale must be finite and > 0, got {}", config.init_scale)));
        }
        if !(config.growth_factor.is_finite() && config.growth_factor > 1.0) {
            return Err(Error::invalid(OP, format!("growth_factor must be > 1, got {}", config.growth_factor)));
        }
        if !(config.backoff_factor > 0.0 && config.backoff_factor < 1.0) {
            return Err(Error::invalid(OP, format!("backoff_factor must be in (0, 1), got {}", config.backoff_factor)));
        }
        if config.growth_interval == 0 {
            return Err(Error::invalid(OP, "growth_interval must be >= 1, got 0"));
        }
        // PyTorch keeps the scale in an f32 tensor.
        let scale = config.init_scale as f32 as f64;
        Ok(GradScaler { config, scale, growth_tracker: 0, stage: Stage::Ready, skipped_steps: 0 })
    }

    /// The current loss scale (1 when disabled).
    pub fn get_scale(&self) -> f64 {
        if self.config.enabled {
            self.scale
        } else {
            1.0
        }
    }

    /// Whether scaling is enabled.
    pub fn is_enabled(&self) -> bool {
        self.config.enabled
    }

    /// How many optimizer steps were skipped for inf/NaN gradients so far.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// `loss * scale`, to call `backward` on.
    pub fn scale(&self, loss: &Var) -> Result<Var> {
        if !self.config.enabled {
            return Ok(loss.clone());
        }
        loss.mul_scalar(self.scale)
    }

    /// Divides every parameter gradient by the scale in place and returns whether any was
    /// inf or NaN. Call it before gradient clipping; `step` calls it when you did not.
    /// Calling it twice in one step is an error, as in PyTorch.
    pub fn unscale(&mut self, params: &[Param]) -> Result<bool> {
        if !self.config.enabled {
            return Ok(false);
        }
        if self.stage != Stage::Ready {
            return Err(Error::invalid(
                "GradScaler::unscale",
                "unscale was already called since the last update (call update after each step)",
            ));
        }
        // PyTorch: inv_scale = scale.double().reciprocal().float(), then grad * inv_scale.
        let inv = (1.0 / self.scale) as f32 as f64;
        let mut found_inf = false;
        for p in params {
            if let Some(g) = p.grad() {
                let u = g.mul_scalar(inv)?;
                if !found_inf && !u.all_finite()? {
                    found_inf = true;
                }
                p.set_grad(Some(u));
            }
        }
        self.stage = Stage::Unscaled { found_inf };
        Ok(found_inf)
    }

    /// Unscales (if not done yet) and runs `optimizer_step` unless a gradient was inf or NaN.
    /// Returns whether the step was taken.
    pub fn step(&mut self, params: &[Param], optimizer_step: impl FnOnce() -> Result<()>) -> Result<bool> {
        if !self.config.enabled {
            optimizer_step()?;
            return Ok(true);
        }
        let found_inf = match self.stage {
            Stage::Ready => self.unscale(params)?,
            Stage::Unscaled { found_inf } => found_inf,
            Stage::Stepped { .. } => {
                return Err(Error::invalid("GradScaler::step", "step was already called since the last update"))
            }
        };
        if found_inf {
            self.skipped_steps += 1;
        } else {
            optimizer_step()?;
        }
        self.stage = Stage::Stepped { found_inf };
        Ok(!found_inf)
    }

    /// Adjusts the scale for the next step: back off after inf/NaN, grow after
    /// `growth_interval` finite steps in a row. Must follow `step` (or `unscale`).
    pub fn update(&mut self) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let found_inf = match self.stage {
            Stage::Ready => {
                return Err(Error::invalid(
                    "GradScaler::update",
                    "update needs a step (or unscale) since the last update",
                ))
            }
            Stage::Unscaled { found_inf } | Stage::Stepped { found_inf } => found_inf,
        };
        // torch._amp_update_scale_, in f32 like the scale tensor.
        if found_inf {
            self.scale = (self.scale as f32 * self.config.backoff_factor as f32) as f64;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.config.growth_interval {
                let grown = self.scale as f32 * self.config.growth_factor as f32;
                if grown.is_finite() {
                    self.scale = grown as f64;
                }
                self.growth_tracker = 0;
            }
        }
        self.stage = Stage::Ready;
        Ok(())
    }

    /// The state (scale, growth tracker, settings) as JSON, for checkpoints.
    pub fn state_dict(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Restores a state written by [`GradScaler::state_dict`].
    pub fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: GradScaler = serde_json::from_value(state.clone())
            .map_err(|e| Error::invalid("GradScaler::load_state_dict", format!("corrupt state: {e}")))?;
        GradScaler::new(s.config.clone())?;
        if !(s.scale.is_finite() && s.scale > 0.0) {
            return Err(Error::invalid("GradScaler::load_state_dict", format!("invalid scale {}", s.scale)));
        }
        *self = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::{DType, Device, Tensor};

    fn param_with_grad(g: &[f32]) -> Param {
        let p = Param::new(Tensor::zeros(g.len(), DType::F32, &Device::Cpu).unwrap());
        p.set_grad(Some(Tensor::from_slice(g, g.len(), &Device::Cpu).unwrap()));
        p
    }

    #[test]
    fn skips_inf_steps_backs_off_and_grows() {
        let cfg = GradScalerConfig { init_scale: 1024.0, growth_interval: 3, ..GradScalerConfig::default() };
        let mut s = GradScaler::new(cfg).unwrap();
        let p = param_with_grad(&[2048.0, f32::INFINITY]);
        let mut taken = 0;
        assert!(!s
            .step(std::slice::from_ref(&p), || {
                taken += 1;
                Ok(())
            })
            .unwrap());
        assert_eq!(taken, 0);
        s.update().unwrap();
        assert_eq!(s.get_scale(), 512.0);
        assert_eq!(s.skipped_steps(), 1);
        for _ in 0..3 {
            let p = param_with_grad(&[512.0, -1024.0]);
            assert!(s.step(std::slice::from_ref(&p), || Ok(())).unwrap());
            assert_eq!(p.grad().unwrap().to_vec::<f32>().unwrap(), vec![1.0, -2.0]);
            s.update().unwrap();
        }
        assert_eq!(s.get_scale(), 1024.0);
        // NaN is caught like inf.
        let p = param_with_grad(&[f32::NAN]);
        assert!(s.unscale(std::slice::from_ref(&p)).unwrap());
        assert!(s.unscale(std::slice::from_ref(&p)).is_err());
        s.update().unwrap();
        assert_eq!(s.get_scale(), 512.0);
        assert!(s.update().is_err());
    }

    #[test]
    fn state_round_trip_and_validation() {
        let mut s = GradScaler::new(GradScalerConfig::default()).unwrap();
        s.step(&[param_with_grad(&[1.0])], || Ok(())).unwrap();
        s.update().unwrap();
        let st = s.state_dict();
        let mut t = GradScaler::new(GradScalerConfig { init_scale: 2.0, ..GradScalerConfig::default() }).unwrap();
        t.load_state_dict(&st).unwrap();
        assert_eq!(t.get_scale(), 65536.0);
        assert!(t.load_state_dict(&serde_json::json!({"scale": -1})).is_err());
        assert!(GradScaler::new(GradScalerConfig { backoff_factor: 2.0, ..GradScalerConfig::default() }).is_err());
        let off = GradScaler::new(GradScalerConfig { enabled: false, ..GradScalerConfig::default() }).unwrap();
        assert_eq!(off.get_scale(), 1.0);
    }
}
