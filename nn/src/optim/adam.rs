//! Adam and AdamW, as `torch.optim.Adam` / `torch.optim.AdamW`.

use super::{
    checked_grad, compute_dtype, compute_slice, device_operands, for_chunks, json_bool, json_f64, new_param_buffer,
    round_to, saved_group, split_state_keys, write_device_param, write_param, Buf, Optimizer, Real,
};
use crate::module::Param;
use serde_json::{json, Value};
use stapes_tensor::{DType, Error, Result, Tensor};
use std::collections::BTreeMap;

/// Hyper-parameters of [`Adam`]. [`AdamConfig::adam`] (also the `Default`) and
/// [`AdamConfig::adamw`] give PyTorch's defaults of `Adam` and `AdamW`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Weight decay: an L2 penalty added to the gradient (Adam) or, with
    /// `decoupled_weight_decay`, a shrinking `p = p · (1 - lr · weight_decay)` (AdamW).
    pub weight_decay: f64,
    /// AMSGrad: use the running maximum of the second moment.
    pub amsgrad: bool,
    /// Maximise the objective instead of minimising it.
    pub maximize: bool,
    /// AdamW's decoupled weight decay.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig::adam()
    }
}

impl AdamConfig {
    /// `torch.optim.Adam`'s defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: false,
        }
    }
    /// `torch.optim.AdamW`'s defaults: as Adam, with decoupled weight decay 1e-2.
    pub fn adamw() -> Self {
        AdamConfig { weight_decay: 1e-2, decoupled_weight_decay: true, ..AdamConfig::adam() }
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "Adam";
        for (name, v) in [("lr", self.lr), ("eps", self.eps), ("weight_decay", self.weight_decay)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(OP, format!("{name} must be finite and >= 0, got {v}")));
            }
        }
        for (name, b) in [("betas.0", self.betas.0), ("betas.1", self.betas.1)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(OP, format!("{name} must be in [0, 1), got {b}")));
            }
        }
        Ok(())
    }
}

/// Adam (and AdamW) with PyTorch's single-tensor update, per element, for step `t`:
///
/// ```text
/// g = ±grad; AdamW: p = p · (1 - lr · wd); Adam with wd: g = g + wd · p
/// m = lerp(m, g, 1 - β1)                 v = v · β2 + ((1 - β2) · g) · g
/// AMSGrad: v_max = max(v_max, v), used for v below
/// p = p + (-lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
/// ```
///
/// The bias corrections and the step size are computed in f64, as Python does.
pub struct Adam {
    params: Vec<Param>,
    cfg: AdamConfig,
    state: Vec<Option<AdamState>>,
}

/// The state of one parameter.
#[derive(Clone, Debug)]
struct AdamState {
    step: u64,
    exp_avg: Buf,
    exp_avg_sq: Buf,
    /// Only with AMSGrad.
    max_exp_avg_sq: Option<Buf>,
}

impl Adam {
    /// An optimizer over `params`; fails on invalid hyper-parameters or non-float parameters.
    pub fn new(params: Vec<Param>, cfg: AdamConfig) -> Result<Adam> {
        cfg.validate()?;
        for p in &params {
            compute_dtype("Adam", p.dtype())?;
        }
        let n = params.len();
        Ok(Adam { params, cfg, state: vec![None; n] })
    }
    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }
    /// The optimizer's name in saved states: `AdamW` with decoupled weight decay.
    fn kind(&self) -> &'static str {
        if self.cfg.decoupled_weight_decay {
            "AdamW"
        } else {
            "Adam"
        }
    }

    /// The step of a parameter on a CUDA device: one fused kernel (`kernels/cuda/optim.cu`)
    /// performing the CPU loop's operations, with the state on the device.
    fn step_param_device(&mut self, i: usize, g: &Tensor) -> Result<()> {
        const OP: &str = "Adam::step";
        let p = &self.params[i];
        let c = self.cfg;
        let cd = compute_dtype(OP, p.dtype())?;
        let (pc, gc) = device_operands(p, g, cd)?;
        let zeros = || Tensor::zeros(pc.dims(), cd, pc.device()).map(Buf::Dev);
        if self.state[i].is_none() {
            self.state[i] = Some(AdamState {
                step: 0,
                exp_avg: zeros()?,
                exp_avg_sq: zeros()?,
                max_exp_avg_sq: if c.amsgrad { Some(zeros()?) } else { None },
            });
        }
        let st = self.state[i].as_mut().expect("set above");
        if c.amsgrad && st.max_exp_avg_sq.is_none() {
            return Err(Error::invalid(
                OP,
                format!("parameter {i} has no AMSGrad state (amsgrad was enabled after it was stepped)"),
            ));
        }
        let (b1, b2) = c.betas;
        let step = (st.step + 1) as f64;
        let r = |x: f64| round_to(cd, x);
        let w1 = r(1.0 - b1);
        let s = stapes_tensor::cuda::optim::AdamScalars {
            w1,
            one_minus_w1: r(1.0 - w1),
            beta2: r(b2),
            c2: r(1.0 - b2),
            bc2s: r((1.0 - b2.powf(step)).powf(0.5)),
            eps: r(c.eps),
            neg_step: r(-(c.lr / (1.0 - b1.powf(step)))),
            decay: r(1.0 - c.lr * c.weight_decay),
            wd: r(c.weight_decay),
            maximize: c.maximize,
            weight_decay: c.weight_decay != 0.0,
            decoupled: c.decoupled_weight_decay,
            amsgrad: c.amsgrad,
            small_w1: w1.abs() < 0.5,
        };
        let vmax = match (&st.max_exp_avg_sq, c.amsgrad) {
            (Some(b), true) => Some(b.dev(OP, i)?),
            _ => None,
        };
        let (np, nm, nv, nx) = stapes_tensor::cuda::optim::adam_step(
            &pc,
            &gc,
            st.exp_avg.dev(OP, i)?,
            st.exp_avg_sq.dev(OP, i)?,
            vmax,
            &s,
        )?;
        st.step += 1;
        st.exp_avg = Buf::Dev(nm);
        st.exp_avg_sq = Buf::Dev(nv);
        if let Some(x) = nx {
            st.max_exp_avg_sq = Some(Buf::Dev(x));
        }
        write_device_param(p, np)
    }

    fn step_param<T: Real>(&mut self, i: usize, g: &Tensor) -> Result<()> {
        const OP: &str = "Adam::step";
        let p = &self.params[i];
        let c = self.cfg;
        let n = p.elem_count();
        let st = self.state[i].get_or_insert_with(|| AdamState {
            step: 0,
            exp_avg: T::wrap(vec![T::of(0.0); n]),
            exp_avg_sq: T::wrap(vec![T::of(0.0); n]),
            max_exp_avg_sq: c.amsgrad.then(|| T::wrap(vec![T::of(0.0); n])),
        });
        if c.amsgrad && st.max_exp_avg_sq.is_none() {
            // AMSGrad switched on after this parameter was stepped: PyTorch fails too (its
            // state has no `max_exp_avg_sq`).
            return Err(Error::invalid(
                OP,
                format!("parameter {i} has no AMSGrad state (amsgrad was enabled after it was stepped)"),
            ));
        }
        st.step += 1;
        let (b1, b2) = c.betas;
        let step = st.step as f64;
        let bias_correction1 = 1.0 - b1.powf(step);
        let bias_correction2 = 1.0 - b2.powf(step);
        let step_size = c.lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.powf(0.5);

        let pt = p.tensor();
        let old = compute_slice::<T>(&pt)?;
        let gt = compute_slice::<T>(g)?;
        let gs: &[T] = &gt;
        let use_wd = c.weight_decay != 0.0;
        let (decoupled, maximize, amsgrad) = (c.decoupled_weight_decay, c.maximize, c.amsgrad);
        let decay = T::of(1.0 - c.lr * c.weight_decay);
        let wd = T::of(c.weight_decay);
        let w1 = T::of(1.0 - b1);
        let one_minus_w1 = T::of(1.0) - w1;
        let small_w1 = w1.abs() < T::of(0.5);
        let (beta2, c2) = (T::of(b2), T::of(1.0 - b2));
        let (bc2s, eps, neg_step) = (T::of(bias_correction2_sqrt), T::of(c.eps), T::of(-step_size));

        let m = T::buf_mut(&mut st.exp_avg, OP)?;
        let v = T::buf_mut(&mut st.exp_avg_sq, OP)?;
        let mut empty: Vec<T> = Vec::new();
        let vmax = match &mut st.max_exp_avg_sq {
            Some(b) if amsgrad => T::buf_mut(b, OP)?,
            _ => &mut empty,
        };
        let mut out = new_param_buffer::<T>(old.len());
        // Plain Adam (no maximize, weight decay or AMSGrad, beta1 > 0.5) is the common case:
        // its loop has no per-element branches, so it vectorises; it performs the same
        // operations in the same order as the general loop below.
        let plain = !maximize && !use_wd && !amsgrad && small_w1;
        for_chunks(&old, &mut out, m, v, vmax, |off, ps, ms, vs, xs| {
            if plain {
                let gs = &gs[off..off + ps.len()];
                for (((p, m), v), &g) in ps.iter_mut().zip(ms.iter_mut()).zip(vs.iter_mut()).zip(gs) {
                    *m = *m + w1 * (g - *m);
                    *v = *v * beta2 + c2 * g * g;
                    let denom = v.sqrt() / bc2s + eps;
                    *p = *p + neg_step * *m / denom;
                }
                return;
            }
            for (j, p) in ps.iter_mut().enumerate() {
                let mut g = gs[off + j];
                if maximize {
                    g = -g;
                }
                if use_wd {
                    if decoupled {
                        *p = *p * decay;
                    } else {
                        g = g + wd * *p;
                    }
                }
                // exp_avg.lerp_(grad, 1 - beta1), PyTorch's scalar lerp
                let m = &mut ms[j];
                *m = if small_w1 { *m + w1 * (g - *m) } else { g - (g - *m) * one_minus_w1 };
                // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                let v = &mut vs[j];
                *v = *v * beta2 + c2 * g * g;
                let second = if amsgrad {
                    let x = &mut xs[j];
                    if x.is_nan() || v.is_nan() || *v > *x {
                        *x = if x.is_nan() { *x } else { *v };
                    }
                    *x
                } else {
                    *v
                };
                let denom = second.sqrt() / bc2s + eps;
                // param.addcdiv_(exp_avg, denom, value=-step_size)
                *p = *p + neg_step * *m / denom;
            }
        });
        write_param(p, out)
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        for i in 0..self.params.len() {
            let Some(g) = checked_grad("Adam::step", i, &self.params[i])? else { continue };
            if self.params[i].tensor().device().is_cuda() {
                self.step_param_device(i, &g)?;
                continue;
            }
            match compute_dtype("Adam::step", self.params[i].dtype())? {
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
        self.cfg.betas.0
    }
    fn set_momentum(&mut self, momentum: f64) {
        self.cfg.betas.0 = momentum;
    }
    fn state_dict(&self) -> Result<(BTreeMap<String, Tensor>, Value)> {
        let mut tensors = BTreeMap::new();
        let mut state = serde_json::Map::new();
        for (i, (p, s)) in self.params.iter().zip(&self.state).enumerate() {
            let Some(s) = s else { continue };
            let dims = p.dims();
            tensors.insert(format!("state.{i}.exp_avg"), s.exp_avg.to_tensor(&dims)?);
            tensors.insert(format!("state.{i}.exp_avg_sq"), s.exp_avg_sq.to_tensor(&dims)?);
            if let Some(b) = &s.max_exp_avg_sq {
                tensors.insert(format!("state.{i}.max_exp_avg_sq"), b.to_tensor(&dims)?);
            }
            state.insert(i.to_string(), json!({ "step": s.step }));
        }
        let c = &self.cfg;
        let meta = json!({
            "optimizer": self.kind(),
            "param_groups": [{
                "lr": c.lr, "betas": [c.betas.0, c.betas.1], "eps": c.eps,
                "weight_decay": c.weight_decay, "amsgrad": c.amsgrad, "maximize": c.maximize,
                "decoupled_weight_decay": c.decoupled_weight_decay,
                "params": (0..self.params.len()).collect::<Vec<_>>(),
            }],
            "state": state,
        });
        Ok((tensors, meta))
    }
    fn load_state_dict(&mut self, tensors: &BTreeMap<String, Tensor>, meta: &Value) -> Result<()> {
        const OP: &str = "Adam::load_state_dict";
        let n = self.params.len();
        let g = saved_group(OP, meta, self.kind(), n)?;
        let betas = g.get("betas").and_then(Value::as_array).and_then(|b| match b.as_slice() {
            [b1, b2] => Some((b1.as_f64()?, b2.as_f64()?)),
            _ => None,
        });
        let cfg = AdamConfig {
            lr: json_f64(OP, g, "lr")?,
            betas: betas.ok_or_else(|| Error::invalid(OP, "state: `betas` must be two numbers"))?,
            eps: json_f64(OP, g, "eps")?,
            weight_decay: json_f64(OP, g, "weight_decay")?,
            amsgrad: json_bool(OP, g, "amsgrad")?,
            maximize: json_bool(OP, g, "maximize")?,
            decoupled_weight_decay: json_bool(OP, g, "decoupled_weight_decay")?,
        };
        cfg.validate()?;
        let steps =
            meta.get("state").and_then(Value::as_object).ok_or_else(|| Error::invalid(OP, "state: missing `state`"))?;
        let per = split_state_keys(OP, tensors, n, &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])?;
        let mut state = vec![None; n];
        for (k, s) in steps {
            let i =
                k.parse::<usize>().ok().filter(|&i| i < n).ok_or_else(|| {
                    Error::invalid(OP, format!("state: entry `{k}` is not a parameter index below {n}"))
                })?;
            let step = s
                .get("step")
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::invalid(OP, format!("state: parameter {i} has no integer `step`")))?;
            let m = per.get(&i);
            let get = |name: &str| -> Result<Buf> {
                let t = m
                    .and_then(|m| m.get(name))
                    .ok_or_else(|| Error::invalid(OP, format!("state: missing tensor `state.{i}.{name}`")))?;
                Buf::from_tensor(OP, &format!("state.{i}.{name}"), t, &self.params[i])
            };
            let has_max = m.is_some_and(|m| m.contains_key("max_exp_avg_sq"));
            if has_max != cfg.amsgrad {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "state: parameter {i} has{} `max_exp_avg_sq` but amsgrad is {}",
                        if has_max { "" } else { " no" },
                        cfg.amsgrad
                    ),
                ));
            }
            state[i] = Some(AdamState {
                step,
                exp_avg: get("exp_avg")?,
                exp_avg_sq: get("exp_avg_sq")?,
                max_exp_avg_sq: if has_max { Some(get("max_exp_avg_sq")?) } else { None },
            });
        }
        if let Some(i) = per.keys().find(|i| state[**i].is_none()) {
            return Err(Error::invalid(OP, format!("state: tensors for parameter {i} but no `state.{i}` step entry")));
        }
        self.cfg = cfg;
        self.state = state;
        Ok(())
    }
}
