//! `Linear`: `y = x Wᵀ + b` over the last dim.

use crate::init::torch_default_weight_bias;
use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_kernels::cpu::packed::{gemm_packed, PackedRhs};
use stapes_kernels::cpu::rnn::Strided;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

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

/// The error of an input `[*, k]` whose `k` is not `in_features` (or that has no dims).
pub(crate) fn check_in_features(op: &'static str, dims: &[usize], in_features: usize) -> Result<()> {
    if dims.last() == Some(&in_features) {
        return Ok(());
    }
    Err(Error::shape(
        op,
        format!("input {dims:?} does not match in_features {in_features} (expects [*, {in_features}])"),
    ))
}

/// A fully connected layer (`nn.Linear`): parameters `weight [out, in]` and `bias [out]`,
/// initialised as PyTorch does (`U(±1/sqrt(in))`).
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Param,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Param>,
    /// The dynamically quantized form the forward pass uses, once quantized
    /// ([`crate::quantized::quantize_dynamic`]).
    pub(crate) quantized: crate::quantized::QuantizedSlot<crate::quantized::QuantizedLinear>,
    /// Fake quantization for quantization-aware training ([`crate::qat::prepare_qat`]).
    pub(crate) fake_quant: crate::quantized::QuantizedSlot<crate::qat::FakeQuant>,
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
        Ok(Linear::from_params(Param::new(w), b.map(Param::new)))
    }
    /// A layer over existing parameters (`weight [out, in]`, `bias [out]`).
    pub fn from_params(weight: Param, bias: Option<Param>) -> Linear {
        Linear { weight, bias, quantized: Default::default(), fake_quant: Default::default() }
    }
    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The layer's current weights packed once for repeated inference on the CPU (see
    /// [`PackedLinear`]). Later changes to the parameters are not seen by the packed copy.
    ///
    /// # Errors
    /// If the weights are not `f32` on the CPU.
    pub fn packed(&self) -> Result<PackedLinear> {
        let bias = self.bias.as_ref().map(|b| b.tensor());
        PackedLinear::from_weight(&self.weight.tensor(), bias.as_ref())
    }
}

/// A [`Linear`] layer frozen for CPU inference: `Wᵀ` packed once into the panels of
/// `stapes_kernels::cpu::packed`, so that each call runs the packed micro-kernels instead of
/// re-packing the weight inside a general GEMM. That is what a few rows per call (a streaming
/// decoder's frames, an LM's next-token step) want. `f32` only, no autograd.
#[derive(Debug)]
pub struct PackedLinear {
    weight_t: PackedRhs<f32>,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl PackedLinear {
    /// Packs `y = x Wᵀ + b` from a weight `[out, in]` and an optional bias `[out]`, both `f32`
    /// on the CPU (for layers that hold their projection as raw parameters, such as
    /// `MultiheadAttention`'s `in_proj_weight`).
    ///
    /// # Errors
    /// If the weight is not a CPU `f32` matrix or the bias does not match it.
    pub fn from_weight(weight: &Tensor, bias: Option<&Tensor>) -> Result<PackedLinear> {
        const OP: &str = "PackedLinear::from_weight";
        for t in std::iter::once(weight).chain(bias) {
            if t.device() != &Device::Cpu {
                return Err(Error::invalid(
                    OP,
                    format!("packs CPU weights; this one is on {} (move it to the CPU first)", t.device()),
                ));
            }
            if t.dtype() != DType::F32 {
                return Err(Error::UnsupportedDType { op: OP, dtype: t.dtype(), msg: "packs f32 weights" });
            }
        }
        let wd = weight.dims();
        if wd.len() != 2 {
            return Err(Error::shape(OP, format!("the weight must be [out, in], got {wd:?}")));
        }
        let (out_f, in_f) = (wd[0], wd[1]);
        if let Some(b) = bias {
            if b.dims() != [out_f] {
                return Err(Error::shape(OP, format!("bias {:?} does not match weight {wd:?}", b.dims())));
            }
        }
        let wv = weight.contiguous()?.to_vec::<f32>()?;
        // Wᵀ [in, out] from W [out, in] stored row-major.
        let weight_t = PackedRhs::pack(in_f, out_f, &wv, Strided::rows(0, in_f).t());
        let bias = bias.map(|b| b.contiguous()?.to_vec::<f32>()).transpose()?;
        Ok(PackedLinear { weight_t, bias, in_features: in_f, out_features: out_f })
    }

    /// `y = x Wᵀ + b` on host rows: `x` holds `rows` rows of `in_features`, the result `rows`
    /// rows of `out_features`. Runs on the calling thread when the product is small (a few
    /// rows of a small layer: splitting it would cost more than it saves), else on the rayon
    /// pool.
    ///
    /// # Errors
    /// If `x` does not hold `rows × in_features` values.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if x.len() != rows * self.in_features {
            return Err(Error::shape(
                "PackedLinear::forward_rows",
                format!("{} values are not {rows} rows of in_features {}", x.len(), self.in_features),
            ));
        }
        let n = self.out_features;
        let mut y = vec![0f32; rows * n];
        let accumulate = match &self.bias {
            Some(b) => {
                y.chunks_exact_mut(n.max(1)).for_each(|r| r.copy_from_slice(b));
                true
            }
            None => false,
        };
        let threads = if rows * n * self.in_features < 1 << 18 { 1 } else { rayon::current_num_threads() };
        gemm_packed(rows, &mut y, n, accumulate, x, self.in_features, &self.weight_t, threads);
        Ok(y)
    }

    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `y = x Wᵀ + b` for a CPU `f32` tensor `x` of shape `[*, in_features]`; `y` is
    /// `[*, out_features]`, equal to [`Linear`]'s forward up to `f32` rounding.
    ///
    /// # Errors
    /// If `x` is not an `f32` CPU tensor or its last dim is not `in_features`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "PackedLinear::forward";
        if x.device() != &Device::Cpu {
            return Err(Error::DeviceMismatch { op: OP, lhs: *x.device(), rhs: Device::Cpu });
        }
        if x.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op: OP, dtype: x.dtype(), msg: "takes f32 input" });
        }
        let xd = x.dims().to_vec();
        check_in_features(OP, &xd, self.in_features)?;
        let rows: usize = xd[..xd.len() - 1].iter().product();
        let y = self.forward_rows(&x.contiguous()?.to_vec::<f32>()?, rows)?;
        let mut out = xd;
        *out.last_mut().expect("checked non-empty") = self.out_features;
        Tensor::from_vec(y, out, &Device::Cpu)
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
    fn as_quantizable(&self) -> Option<&dyn crate::quantized::Quantizable> {
        Some(self)
    }
}

impl Forward for Linear {
    /// `x Wᵀ + b`; once the layer is quantized, its int8 form (no gradient); prepared for QAT,
    /// with the weight (and input) fake-quantized.
    fn forward(&self, x: &Var) -> Result<Var> {
        if let Some(q) = self.quantized.get() {
            return Ok(Var::constant(q.forward(x.tensor())?));
        }
        let b = self.bias.as_ref().map(|b| b.var());
        if let Some(fq) = self.fake_quant.get() {
            let w = crate::qat::fake_quantize_weight(&self.weight.var(), fq.scheme)?;
            let x = if fq.activations { crate::qat::fake_quantize_activation(x)? } else { x.clone() };
            return linear(&x, &w, b.as_ref());
        }
        linear(x, &self.weight.var(), b.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::Generator;

    #[test]
    fn packed_linear_matches_forward_and_rejects_bad_input() {
        stapes_tensor::manual_seed(3);
        let mut g = Generator::new(5);
        for bias in [true, false] {
            let lin = Linear::new(37, 70, bias).unwrap();
            let packed = lin.packed().unwrap();
            assert_eq!((packed.in_features(), packed.out_features()), (37, 70));
            for shape in [vec![3, 5, 37], vec![1, 37], vec![0, 37], vec![37]] {
                let x = Tensor::randn_with(&mut g, 0.0, 1.0, shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
                let want = lin.forward(&Var::constant(x.clone())).unwrap().tensor().clone();
                let got = packed.forward(&x).unwrap();
                assert_eq!(got.dims(), want.dims(), "shape {shape:?}");
                let (a, b) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
                for (u, v) in a.iter().zip(&b) {
                    assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "shape {shape:?} bias {bias}: {u} vs {v}");
                }
            }
        }
        let lin = Linear::new(4, 3, true).unwrap();
        let packed = lin.packed().unwrap();
        let wrong_dim = Tensor::zeros([2, 5], DType::F32, &Device::Cpu).unwrap();
        let msg = packed.forward(&wrong_dim).unwrap_err().to_string();
        assert!(msg.contains("PackedLinear::forward") && msg.contains("[2, 5]"), "{msg}");
        let f64_in = Tensor::zeros([2, 4], DType::F64, &Device::Cpu).unwrap();
        let msg = packed.forward(&f64_in).unwrap_err().to_string();
        assert!(msg.contains("PackedLinear::forward"), "{msg}");
        let f64_layer = Linear::new_with(4, 3, true, DType::F64, &Device::Cpu).unwrap();
        let msg = f64_layer.packed().unwrap_err().to_string();
        assert!(msg.contains("PackedLinear::from_weight") && msg.contains("F64"), "{msg}");
        let msg = packed.forward_rows(&[0.0; 7], 2).unwrap_err().to_string();
        assert!(msg.contains("forward_rows") && msg.contains("7 values"), "{msg}");
        let msg = PackedLinear::from_weight(
            &lin.weight.tensor(),
            Some(&Tensor::zeros([4], DType::F32, &Device::Cpu).unwrap()),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("bias [4]"), "{msg}");
    }
}
