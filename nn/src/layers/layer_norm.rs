//! `LayerNorm` over the trailing dims.

use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Result, Tensor};

/// Layer normalisation over the last `normalized_shape.len()` dims (`nn.LayerNorm`), with an
/// optional elementwise affine (`weight` initialised to ones, `bias` to zeros).
pub struct LayerNorm {
    /// The normalised trailing shape.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
    /// Scale, if `elementwise_affine`.
    pub weight: Option<Param>,
    /// Shift, if `elementwise_affine` and `bias`.
    pub bias: Option<Param>,
}

impl LayerNorm {
    /// `nn.LayerNorm(normalized_shape, eps=1e-5)` in f32 on the CPU.
    pub fn new(normalized_shape: &[usize]) -> Result<LayerNorm> {
        LayerNorm::new_with(normalized_shape, 1e-5, true, true, DType::F32, &Device::Cpu)
    }
    /// The full constructor.
    pub fn new_with(
        normalized_shape: &[usize],
        eps: f64,
        elementwise_affine: bool,
        bias: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<LayerNorm> {
        let (weight, b) = if elementwise_affine {
            let w = Param::new(Tensor::ones(normalized_shape, dtype, device)?);
            let b = if bias { Some(Param::new(Tensor::zeros(normalized_shape, dtype, device)?)) } else { None };
            (Some(w), b)
        } else {
            (None, None)
        };
        Ok(LayerNorm { normalized_shape: normalized_shape.to_vec(), eps, weight, bias: b })
    }
}

impl Module for LayerNorm {
    fn local_params(&self) -> Vec<(String, Param)> {
        let mut v = Vec::new();
        if let Some(w) = &self.weight {
            v.push(("weight".to_string(), w.clone()));
        }
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

impl Forward for LayerNorm {
    fn forward(&self, x: &Var) -> Result<Var> {
        let w = self.weight.as_ref().map(|p| p.var());
        let b = self.bias.as_ref().map(|p| p.var());
        x.layer_norm(&self.normalized_shape, w.as_ref(), b.as_ref(), self.eps)
    }
}
