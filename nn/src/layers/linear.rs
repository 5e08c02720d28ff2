//! `Linear`: `y = x Wᵀ + b` over the last dim.

use crate::init::torch_default_weight_bias;
use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result};

/// `y = x Wᵀ + b` for `x` of shape `[*, in]` and `weight` of shape `[out, in]`: the leading
/// dims are flattened into one GEMM (so the weight gradient is one GEMM too, not a batch of
/// them summed).
pub fn linear(x: &Var, weight: &Var, bias: Option<&Var>) -> Result<Var> {
    let (xd, wd) = (x.dims(), weight.dims());
    if wd.len() != 2 || xd.is_empty() || xd[xd.len() - 1] != wd[1] {
        return Err(Error::shape(
            "linear",
            format!("input {xd:?} does not match weight {wd:?} (expects input [*, {}])", wd.get(1).unwrap_or(&0)),
        ));
    }
    let lead = &xd[..xd.len() - 1];
    let n: usize = lead.iter().product();
    let x2 = if xd.len() == 2 { x.clone() } else { x.reshape([n, wd[1]])? };
    let mut y = x2.matmul(&weight.transpose(0usize, 1usize)?)?;
    if let Some(b) = bias {
        if b.dims() != [wd[0]] {
            return Err(Error::shape("linear", format!("bias {:?} does not match weight {wd:?}", b.dims())));
        }
        // Under autocast PyTorch's linear (addmm) adds the bias in the lower precision too,
        // so the output stays f16/bf16 instead of being promoted to f32.
        y = match stapes_autograd::autocast_dtype() {
            Some(d) if b.tensor().dtype().is_float() && b.tensor().dtype() != d => y.add(&b.to_dtype(d)?)?,
            _ => y.add(b)?,
        };
    }
    if xd.len() == 2 {
        Ok(y)
    } else {
        let mut out = lead.to_vec();
        out.push(wd[0]);
        y.reshape(out)
    }
}

/// A fully connected layer (`nn.Linear`): parameters `weight [out, in]` and `bias [out]`,
/// initialised as PyTorch does (`U(±1/sqrt(in))`).
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Param,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Param>,
}

impl Linear {
    /// A new f32 layer on the CPU.
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        Linear::new_with(in_features, out_features, bias, DType::F32, &Device::Cpu)
    }
    /// A new layer with the given dtype and device.
    pub fn new_with(
        in_features: usize,
        out_features: usize,
        bias: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Linear> {
        let (w, b) = torch_default_weight_bias(&[out_features, in_features], bias, dtype, device)?;
        Ok(Linear { weight: Param::new(w), bias: b.map(Param::new) })
    }
    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}

impl Module for Linear {
    fn local_params(&self) -> Vec<(String, Param)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

impl Forward for Linear {
    fn forward(&self, x: &Var) -> Result<Var> {
        let b = self.bias.as_ref().map(|b| b.var());
        linear(x, &self.weight.var(), b.as_ref())
    }
}
