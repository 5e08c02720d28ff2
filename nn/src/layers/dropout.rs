//! `Dropout`: zeroes elements with probability `p` in training and scales the rest by
//! `1/(1-p)`; the identity in evaluation.

use crate::module::{Forward, Module, TrainingFlag};
use stapes_autograd::Var;
use stapes_tensor::{with_default_generator, DType, Error, Result, Tensor};

/// Functional dropout (`F.dropout`): with `training` false or `p == 0` it returns `x`.
/// The mask comes from the default generator (seeded by `manual_seed`).
pub fn dropout(x: &Var, p: f64, training: bool) -> Result<Var> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("probability has to be between 0 and 1, but got {p}")));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let t = x.tensor();
    if !t.dtype().is_float() {
        return Err(Error::UnsupportedDType { op: "dropout", dtype: t.dtype(), msg: "dropout needs floating point" });
    }
    if p == 1.0 {
        return x.mul_scalar(0.0);
    }
    let n = t.elem_count();
    let scale = (1.0 / (1.0 - p)) as f32;
    // Keep an element when its 24-bit uniform draw is >= p.
    let threshold = (p * (1u64 << 24) as f64).ceil() as u64;
    let mask: Vec<f32> = with_default_generator(|g| {
        let mut m = Vec::with_capacity(n);
        while m.len() < n {
            let r = g.next_u64();
            for k in 0..2 {
                if m.len() < n {
                    let u = (r >> (k * 32 + 8)) & 0xFF_FFFF;
                    m.push(if u >= threshold { scale } else { 0.0 });
                }
            }
        }
        m
    });
    let mask = Tensor::from_vec(mask, t.shape().clone(), t.device())?;
    let mask = if t.dtype() == DType::F32 { mask } else { mask.to_dtype(t.dtype())? };
    x.mul(&Var::constant(mask))
}

/// `nn.Dropout(p)`.
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    training: TrainingFlag,
}

impl Dropout {
    /// A dropout layer; `p` must be in `[0, 1]`.
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("Dropout::new", format!("probability has to be between 0 and 1, but got {p}")));
        }
        Ok(Dropout { p, training: TrainingFlag::default() })
    }
    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training.get()
    }
}

impl Module for Dropout {
    fn set_local_training(&self, training: bool) {
        self.training.set(training)
    }
}

impl Forward for Dropout {
    fn forward(&self, x: &Var) -> Result<Var> {
        dropout(x, self.p, self.training.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::Device;

    #[test]
    fn keeps_about_1_minus_p_and_scales() {
        let x = Var::leaf(Tensor::ones(100_000, DType::F32, &Device::Cpu).unwrap());
        let d = Dropout::new(0.3).unwrap();
        let y = d.forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / 1e5;
        assert!((kept - 0.7).abs() < 0.01, "{kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        d.eval();
        let y = d.forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        assert!(y.iter().all(|&v| v == 1.0));
        assert!(Dropout::new(1.5).is_err());
    }
}
