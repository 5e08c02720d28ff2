//! Quantization-aware training, as PyTorch's `prepare_qat` / `convert` for dynamic quantization:
//! during training, the weights of the layers [`crate::quantized::quantize_dynamic`] converts
//! (Linear, LSTM, GRU) pass through fake quantization — quantized to int8 and back with the
//! scales dynamic quantization will pick, so the forward pass sees the rounding the int8 model
//! will have — and, optionally, so do their inputs (the uint8 reduce-range scheme, range taken
//! per call); the backward pass is the straight-through estimator (the gradient passes where
//! the value fell inside the quantized range, zero where it was clamped). After fine-tuning,
//! `quantize_dynamic` converts the float weights as usual.
//!
//! The fake-quantize ops match `torch.fake_quantize_per_channel_affine` and
//! `torch.fake_quantize_per_tensor_affine` (`tests/parity_compress.rs`). They compute on the
//! host: a model on a GPU copies the weights there and back on each forward (correct, not fast).
//! The recurrent layers fake-quantize their weights and each layer's input; the hidden state
//! between time steps (quantized per step by the int8 LSTM) is not, because the fused
//! recurrent kernels keep it inside.

use crate::module::Module;
use crate::quantized::{activation_qparams, QScheme};
use stapes_autograd::Var;
use stapes_kernels::cpu::qgemm::minmax_finite_f32;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

/// What a layer prepared for QAT fake-quantizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeQuant {
    /// The weight scheme the conversion will use (default: per channel).
    pub scheme: QScheme,
    /// Also fake-quantize the layer's input per call (uint8, range 0..=127, as dynamic
    /// quantization quantizes activations; default: true).
    pub activations: bool,
}

impl Default for FakeQuant {
    fn default() -> Self {
        FakeQuant { scheme: QScheme::PerChannel, activations: true }
    }
}

/// `out = (clamp(round(x / scale) + zp, qmin, qmax) − zp) · scale` with one `(scale, zp)` per
/// index of `axis` (`scale.len() == zp.len() == x.dims()[axis]`), and its straight-through
/// gradient: the output gradient where `qmin ≤ round(x / scale) + zp ≤ qmax`, zero elsewhere.
/// As `torch.fake_quantize_per_channel_affine` (rounding half to even; for `f32` input the
/// arithmetic is `f32` with the reciprocal of the scale, as PyTorch's kernel).
///
/// # Errors
/// For a non-float input, an axis out of range, scales of the wrong count or not positive and
/// finite, or `qmin > qmax`.
pub fn fake_quantize_per_channel_affine(
    x: &Var,
    scale: &[f32],
    zero_point: &[i32],
    axis: usize,
    quant_min: i32,
    quant_max: i32,
) -> Result<Var> {
    const OP: &str = "fake_quantize_per_channel_affine";
    let dims = x.dims().to_vec();
    if axis >= dims.len() {
        return Err(Error::invalid(OP, format!("axis {axis} for an input of shape {dims:?}")));
    }
    if scale.len() != dims[axis] || zero_point.len() != dims[axis] {
        return Err(Error::shape(
            OP,
            format!(
                "{} scales and {} zero points for {} channels (input {dims:?}, axis {axis})",
                scale.len(),
                zero_point.len(),
                dims[axis]
            ),
        ));
    }
    let inner: usize = dims[axis + 1..].iter().product();
    fake_quantize(OP, x, scale, zero_point, |i| (i / inner.max(1)) % dims[axis].max(1), quant_min, quant_max)
}

/// [`fake_quantize_per_channel_affine`] with one scale and zero point for the whole tensor, as
/// `torch.fake_quantize_per_tensor_affine`.
///
/// # Errors
/// As [`fake_quantize_per_channel_affine`].
pub fn fake_quantize_per_tensor_affine(
    x: &Var,
    scale: f32,
    zero_point: i32,
    quant_min: i32,
    quant_max: i32,
) -> Result<Var> {
    fake_quantize("fake_quantize_per_tensor_affine", x, &[scale], &[zero_point], |_| 0, quant_min, quant_max)
}

fn fake_quantize(
    op: &'static str,
    x: &Var,
    scale: &[f32],
    zero_point: &[i32],
    channel: impl Fn(usize) -> usize,
    qmin: i32,
    qmax: i32,
) -> Result<Var> {
    let t = x.tensor();
    let dtype = t.dtype();
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType { op, dtype, msg: "fake quantization takes float input" });
    }
    if qmin > qmax {
        return Err(Error::invalid(op, format!("quant_min {qmin} > quant_max {qmax}")));
    }
    if let Some(s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::invalid(op, format!("scale {s} (scales must be positive and finite)")));
    }
    let device = *t.device();
    let host = t.to_device(&Device::Cpu)?.contiguous()?;
    let (lo, hi) = (f64::from(qmin), f64::from(qmax));
    let n = host.elem_count();
    let mut mask = vec![0u8; n];
    let out = if dtype == DType::F64 {
        let v = host.to_vec::<f64>()?;
        let mut o = vec![0f64; n];
        for i in 0..n {
            let c = channel(i);
            let (s, zp) = (f64::from(scale[c]), f64::from(zero_point[c]));
            let q = (v[i] * (1.0 / s)).round_ties_even() + zp;
            mask[i] = u8::from(q >= lo && q <= hi);
            o[i] = (q.clamp(lo, hi) - zp) * s;
        }
        Tensor::from_vec(o, host.dims(), &Device::Cpu)?
    } else {
        let v = host.to_dtype(DType::F32)?.to_vec::<f32>()?;
        let mut o = vec![0f32; n];
        for i in 0..n {
            let c = channel(i);
            let (s, zp) = (scale[c], zero_point[c] as f32);
            let q = (v[i] * (1.0 / s)).round_ties_even() + zp;
            mask[i] = u8::from(f64::from(q) >= lo && f64::from(q) <= hi);
            o[i] = (q.clamp(lo as f32, hi as f32) - zp) * s;
        }
        Tensor::from_vec(o, host.dims(), &Device::Cpu)?.to_dtype(dtype)?
    };
    let out = out.to_device(&device)?;
    let mask = Tensor::from_vec(mask, host.dims(), &Device::Cpu)?.to_dtype(dtype)?.to_device(&device)?;
    Ok(Var::from_op(op, out, &[x], Box::new(move |g: &Tensor| Ok(vec![Some(g.mul(&mask)?)]))))
}

/// The weight `[out, in]` fake-quantized as [`crate::quantized::quantize_weight`] will quantize
/// it: symmetric int8 (`-128..=127`, zero point 0) with `scale = max|w| / 127.5` per output
/// channel or per tensor. The scales follow the weight (no gradient flows into them).
///
/// # Errors
/// For a weight that is not 2-D or holds a NaN or an infinity.
pub fn fake_quantize_weight(w: &Var, scheme: QScheme) -> Result<Var> {
    const OP: &str = "fake_quantize_weight";
    let dims = w.dims();
    if dims.len() != 2 {
        return Err(Error::shape(OP, format!("expected a [out, in] weight, got {dims:?}")));
    }
    let (rows, cols) = (dims[0], dims[1]);
    let v = w.tensor().to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
    let scales = crate::quantized::weight_scales(OP, &v, rows, cols, scheme)?;
    match scheme {
        QScheme::PerTensor => fake_quantize_per_tensor_affine(w, scales[0], 0, -128, 127),
        QScheme::PerChannel => fake_quantize_per_channel_affine(w, &scales, &vec![0; rows], 0, -128, 127),
    }
}

/// An activation fake-quantized as dynamic quantization quantizes it: uint8 levels `0..=127`
/// with the scale and zero point of [`activation_qparams`] over the tensor's range.
///
/// # Errors
/// If `x` holds a NaN or an infinity.
pub fn fake_quantize_activation(x: &Var) -> Result<Var> {
    const OP: &str = "fake_quantize_activation";
    let v = x.tensor().to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
    let (lo, hi, finite) = minmax_finite_f32(&v);
    if !finite {
        let bad = v.iter().find(|x| !x.is_finite()).copied().unwrap_or(f32::NAN);
        return Err(Error::invalid(OP, format!("input value {bad} (fake quantization needs finite inputs)")));
    }
    let (scale, zp) = activation_qparams(&[lo, hi]);
    fake_quantize_per_tensor_affine(x, scale, zp, 0, 127)
}

/// Prepares every Linear, LSTM and GRU layer of `m` for quantization-aware training
/// (`prepare_qat`): their forward passes fake-quantize as `fq` says until
/// [`crate::quantized::quantize_dynamic`] converts them (or [`disable_qat`]). Returns how many
/// layers were prepared.
///
/// # Errors
/// If the module has no such layer or is quantized already.
pub fn prepare_qat(m: &dyn Module, fq: FakeQuant) -> Result<usize> {
    const OP: &str = "prepare_qat";
    let mut layers = Vec::new();
    crate::quantized::quantizables(m, "", &mut layers);
    if layers.is_empty() {
        return Err(Error::invalid(OP, "the module has no Linear, LSTM or GRU layer to train for quantization"));
    }
    if layers.iter().any(|(_, q)| q.is_quantized()) {
        return Err(Error::invalid(OP, "the module is quantized already (QAT prepares a float model)"));
    }
    layers.iter().for_each(|(_, q)| q.set_fake_quant(Some(fq)));
    Ok(layers.len())
}

/// Turns fake quantization off in every layer of `m`.
pub fn disable_qat(m: &dyn Module) {
    let mut layers = Vec::new();
    crate::quantized::quantizables(m, "", &mut layers);
    layers.iter().for_each(|(_, q)| q.set_fake_quant(None));
}
