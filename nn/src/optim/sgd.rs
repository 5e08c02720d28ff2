//! Stochastic gradient descent, as `torch.optim.SGD`.

use super::{
    checked_grad, compute_dtype, compute_slice, device_operands, for_chunks, json_bool, json_f64, new_param_buffer,
    round_to, saved_group, split_state_keys, write_device_param, write_param, Buf, Optimizer, Real,
};
use crate::module::Param;
use serde_json::{json, Value};
use stapes_tensor::{DType, Error, Result, Tensor};
use std::collections::BTreeMap;

/// Hyper-parameters of [`Sgd`], with PyTorch's defaults (`lr` has none in PyTorch; 1e-3 here).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum's gradient term.
    pub dampening: f64,
    /// L2 penalty added to the gradient (`grad + weight_decay · param`).
    pub weight_decay: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
    /// Maximise the objective instead of minimising it.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false, maximize: false }
    }
}

impl SgdConfig {
    fn validate(&self) -> Result<()> {
        const OP: &str = "Sgd";
        for (name, v) in [("lr", self.lr), ("momentum", self.momentum), ("weight_decay", self.weight_decay)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(OP, format!("{name} must be finite and >= 0, got {v}")));
            }
        }
        if !self.dampening.is_finite() {
            return Err(Error::invalid(OP, format!("dampening must be finite, got {}", self.dampening)));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid(
                OP,
                format!(
                    "Nesterov momentum requires a momentum > 0 and zero dampening, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }
}

/// SGD with PyTorch's update: `g = ±grad + weight_decay · p`; with momentum, `buf = g` on the
/// first step, then `buf = momentum · buf + (1 - dampening) · g`, and `g = g + momentum · buf`
/// (Nesterov) or `g = buf`; finally `p = p - lr · g`.
pub struct Sgd {
    params: Vec<Param>,
    cfg: SgdConfig,
    /// Per parameter: the momentum buffer, once a step with momentum has touched it.
    momentum_buffers: Vec<Option<Buf>>,
}

impl Sgd {
    /// An optimizer over `params` (e.g. `module.parameters()`); fails on invalid
    /// hyper-parameters.
    pub fn new(params: Vec<Param>, cfg: SgdConfig) -> Result<Sgd> {
        cfg.validate()?;
        for p in &params {
            compute_dtype("Sgd", p.dtype())?;
        }
        let n = params.len();
        Ok(Sgd { params, cfg, momentum_buffers: vec![None; n] })
    }
    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// The step of a parameter on a CUDA device: one fused kernel with the momentum buffer on
    /// the device.
    fn step_param_device(&mut self, i: usize, g: &Tensor) -> Result<()> {
        const OP: &str = "Sgd::step";
        let p = &self.params[i];
        let c = self.cfg;
        let cd = compute_dtype(OP, p.dtype())?;
        let (pc, gc) = device_operands(p, g, cd)?;
        let use_mom = c.momentum != 0.0;
        let first = use_mom && self.momentum_buffers[i].is_none();
        let r = |x: f64| round_to(cd, x);
        let s = stapes_tensor::cuda::optim::SgdScalars {
            wd: r(c.weight_decay),
            momentum: r(c.momentum),
            damp1: r(1.0 - c.dampening),
            neg_lr: r(-c.lr),
            maximize: c.maximize,
            weight_decay: c.weight_decay != 0.0,
            use_momentum: use_mom,
            nesterov: c.nesterov,
            first,
        };
        let b = match (&self.momentum_buffers[i], use_mom && !first) {
            (Some(b), true) => Some(b.dev(OP, i)?),
            _ => None,
        };
        let (np, nb) = stapes_tensor::cuda::optim::sgd_step(&pc, &gc, b, &s)?;
        if let Some(nb) = nb {
            self.momentum_buffers[i] = Some(Buf::Dev(nb));
        }
        write_device_param(p, np)
    }

    fn step_param<T: Real>(&mut self, i: usize, g: &Tensor) -> Result<()> {
        const OP: &str = "Sgd::step";
        let p = &self.params[i];
        let c = self.cfg;
        let pt = p.tensor();
        let old = compute_slice::<T>(&pt)?;
        let gt = compute_slice::<T>(g)?;
        let gs: &[T] = &gt;
        let (wd, mom, damp1, neg_lr) =
            (T::of(c.weight_decay), T::of(c.momentum), T::of(1.0 - c.dampening), T::of(-c.lr));
        let (use_wd, use_mom, nesterov, maximize) = (c.weight_decay != 0.0, c.momentum != 0.0, c.nesterov, c.maximize);
        let first = use_mom && self.momentum_buffers[i].is_none();
        if first {
            self.momentum_buffers[i] = Some(T::wrap(vec![T::of(0.0); old.len()]));
        }
        let mut empty: Vec<T> = Vec::new();
        let buf: &mut Vec<T> = match (use_mom, &mut self.momentum_buffers[i]) {
            (true, Some(b)) => T::buf_mut(b, OP)?,
            _ => &mut empty,
        };
        let mut out = new_param_buffer::<T>(old.len());
        for_chunks(&old, &mut out, buf, &mut [], &mut [], |off, ps, bs, _, _| {
            for (j, p) in ps.iter_mut().enumerate() {
                let mut g = gs[off + j];
                if maximize {
                    g = -g;
                }
                if use_wd {
                    g = g + wd * *p;
                }
                if use_mom {
                    let b = &mut bs[j];
                    *b = if first { g } else { *b * mom + damp1 * g };
                    g = if nesterov { g + mom * *b } else { *b };
                }
                *p = *p + neg_lr * g;
            }
        });
        write_param(p, out)
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        for i in 0..self.params.len() {
            let Some(g) = checked_grad("Sgd::step", i, &self.params[i])? else { continue };
            if self.params[i].tensor().device().is_cuda() {
                self.step_param_device(i, &g)?;
                continue;
            }
            match compute_dtype("Sgd::step", self.params[i].dtype())? {
                DType::F64 => self.step_param::<f64>(i, &g)?,
                _ => self.step_param::<f32>(i, &g)?,
            }
        }
        Ok(())
    }
    fn params(&self) -> &[Param] {
        &self.params
    }
    fn lr(&self) -> f64 {
        self.cfg.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn momentum(&self) -> f64 {
        self.cfg.momentum
    }
    fn set_momentum(&mut self, momentum: f64) {
        self.cfg.momentum = momentum;
    }
    fn state_dict(&self) -> Result<(BTreeMap<String, Tensor>, Value)> {
        let mut tensors = BTreeMap::new();
        let mut state = serde_json::Map::new();
        for (i, (p, b)) in self.params.iter().zip(&self.momentum_buffers).enumerate() {
            if let Some(b) = b {
                tensors.insert(format!("state.{i}.momentum_buffer"), b.to_tensor(&p.dims())?);
                state.insert(i.to_string(), json!({}));
            }
        }
        let c = &self.cfg;
        let meta = json!({
            "optimizer": "SGD",
            "param_groups": [{
                "lr": c.lr, "momentum": c.momentum, "dampening": c.dampening,
                "weight_decay": c.weight_decay, "nesterov": c.nesterov, "maximize": c.maximize,
                "params": (0..self.params.len()).collect::<Vec<_>>(),
            }],
            "state": state,
        });
        Ok((tensors, meta))
    }
    fn load_state_dict(&mut self, tensors: &BTreeMap<String, Tensor>, meta: &Value) -> Result<()> {
        const OP: &str = "Sgd::load_state_dict";
        let n = self.params.len();
        let g = saved_group(OP, meta, "SGD", n)?;
        let cfg = SgdConfig {
            lr: json_f64(OP, g, "lr")?,
            momentum: json_f64(OP, g, "momentum")?,
            dampening: json_f64(OP, g, "dampening")?,
            weight_decay: json_f64(OP, g, "weight_decay")?,
            nesterov: json_bool(OP, g, "nesterov")?,
            maximize: json_bool(OP, g, "maximize")?,
        };
        cfg.validate()?;
        let per = split_state_keys(OP, tensors, n, &["momentum_buffer"])?;
        let mut bufs = vec![None; n];
        for (i, m) in per {
            let t = m["momentum_buffer"];
            bufs[i] = Some(Buf::from_tensor(OP, &format!("state.{i}.momentum_buffer"), t, &self.params[i])?);
        }
        self.cfg = cfg;
        self.momentum_buffers = bufs;
        Ok(())
    }
}
