//! `Dropout`: zeroes elements with probability `p` in training and scales the rest by
//! `1/(1-p)`; the identity in evaluation.

use crate::module::{Forward, Module, TrainingFlag};
use rayon::prelude::*;
use stapes_autograd::Var;
use stapes_tensor::{with_default_generator, DType, Error, Result, Tensor};

/// Elements per independently seeded chunk of a dropout mask.
const DROPOUT_CHUNK: usize = 1 << 16;

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
    // Keep an element when its 24-bit uniform draw is >= p. The mask is drawn in fixed chunks,
    // in parallel, each from its own generator seeded by one draw of the default generator and
    // the chunk's index: the same mask whatever the thread count, and one draw of the default
    // stream per call (so checkpoints that save it resume exactly).
    let threshold = (p * (1u64 << 24) as f64).ceil() as u64;
    let seed = with_default_generator(|g| g.next_u64());
    let mut mask: Vec<f32> = stapes_tensor::alloc::take(n);
    mask.par_chunks_mut(DROPOUT_CHUNK).enumerate().for_each(|(k, chunk)| {
        let mut g = stapes_tensor::Generator::new(seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for pair in chunk.chunks_mut(2) {
            let r = g.next_u64();
            for (j, m) in pair.iter_mut().enumerate() {
                let u = (r >> (j * 32 + 8)) & 0xFF_FFFF;
                *m = if u >= threshold { scale } else { 0.0 };
            }
        }
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
