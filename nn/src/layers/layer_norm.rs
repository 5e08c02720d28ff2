//! `LayerNorm` over the trailing dims.

use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

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
    /// The full constructor. An empty `normalized_shape`, a zero dim in it, or a negative or
    /// NaN `eps` is an error.
    pub fn new_with(
        normalized_shape: &[usize],
        eps: f64,
        elementwise_affine: bool,
        bias: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<LayerNorm> {
        if normalized_shape.is_empty() || normalized_shape.contains(&0) {
            return Err(Error::invalid(
                "LayerNorm",
                format!("normalized_shape must be non-empty with positive dims, got {normalized_shape:?}"),
            ));
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::invalid("LayerNorm", format!("eps must be >= 0, got {eps}")));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_errors_and_normalisation() {
        let ln = LayerNorm::new(&[2, 3]).unwrap();
        let names: Vec<String> = ln.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight", "bias"]);
        let nb = LayerNorm::new_with(&[3], 1e-5, true, false, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(nb.named_parameters().len(), 1);
        assert!(LayerNorm::new(&[]).is_err());
        assert!(LayerNorm::new(&[4, 0]).is_err());
        assert!(LayerNorm::new_with(&[3], -1.0, true, true, DType::F32, &Device::Cpu).is_err());
        let x =
            Var::constant(Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 2, 3], &Device::Cpu).unwrap());
        let y = ln.forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        let sd = (35.0f32 / 12.0 + 1e-5).sqrt();
        for (a, v) in y.iter().zip([1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]) {
            assert!((a - (v - 3.5) / sd).abs() < 1e-5, "{a}");
        }
        assert!(ln.forward(&Var::constant(Tensor::zeros([2, 3, 2], DType::F32, &Device::Cpu).unwrap())).is_err());
    }
}
