//! Dynamic int8 quantization (issue 19), as `torch.ao.quantization.quantize_dynamic` does it
//! with the x86 (fbgemm) engine: weights become `int8` once, symmetric (zero point 0), with one
//! scale per tensor (PyTorch's default `default_dynamic_qconfig`) or per output channel
//! (`per_channel_dynamic_qconfig`); at each call the input is quantized to `uint8` with a scale
//! and zero point chosen from its own range (`reduce_range`: levels 0..=127, which keeps the
//! AVX2 kernel's pairs of products within `i16`), the product accumulates exactly in `i32`
//! (`stapes_kernels::cpu::qgemm`), and the result is scaled back to `f32` and the `f32` bias
//! added.
//!
//! [`QuantizedLinear`] is the quantized `nn.Linear` (`torch.ao.nn.quantized.dynamic.Linear`);
//! [`QuantizedLstm`] the quantized `nn.LSTM` (`torch.ao.nn.quantized.dynamic.LSTM`): per layer
//! and direction, the input projection of all steps is one quantized product (one set of
//! activation parameters for the whole sequence) and each step's `h_{t-1} W_hhᵀ` another; the
//! gate math stays in `f32`.

use crate::layers::Linear;
use crate::module::Module;
use crate::rnn::{Lstm, RnnConfig};
use stapes_kernels::cpu::qgemm::{qgemm_u8i8, PackedI8};
use stapes_tensor::{DType, Device, Error, Result, Tensor};

/// How weights are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QScheme {
    /// One scale for the whole weight (`torch.per_tensor_symmetric`, `quantize_dynamic`'s
    /// default).
    PerTensor,
    /// One scale per output channel (`torch.per_channel_symmetric`).
    #[default]
    PerChannel,
}

/// Symmetric int8 quantization of a `[rows, cols]` weight, as PyTorch's `MinMaxObserver` /
/// `PerChannelMinMaxObserver` with `qint8` and a symmetric scheme choose it:
/// `scale = max(|min|, |max|) / 127.5` (at least `f32::EPSILON`), `q = clamp(round(w / scale),
/// -128, 127)` (round half to even). Returns the int8 values and the scales (one, or one per
/// row).
///
/// # Errors
/// If `w` is not `rows × cols` values or holds a NaN or an infinity.
pub fn quantize_weight(w: &[f32], rows: usize, cols: usize, scheme: QScheme) -> Result<(Vec<i8>, Vec<f32>)> {
    const OP: &str = "quantize_weight";
    if w.len() != rows * cols {
        return Err(Error::shape(OP, format!("{} values are not [{rows}, {cols}]", w.len())));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!("weight {} at row {}, column {}", w[i], i / cols.max(1), i % cols.max(1)),
        ));
    }
    let scale_of = |vals: &[f32]| {
        let (lo, hi) = vals.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        ((-lo).max(hi) / 127.5).max(f32::EPSILON)
    };
    let scales: Vec<f32> = match scheme {
        QScheme::PerTensor => vec![scale_of(w)],
        QScheme::PerChannel => w.chunks(cols.max(1)).take(rows).map(scale_of).collect(),
    };
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales[if scales.len() == 1 { 0 } else { i / cols }];
            (v * (1.0 / s)).round_ties_even().clamp(-128.0, 127.0) as i8
        })
        .collect();
    Ok((q, scales))
}

/// The `uint8` quantization parameters of an activation tensor, as fbgemm's
/// `ChooseQuantizationParams` picks them for `quantize_dynamic` (`reduce_range`: levels
/// 0..=127): the range is widened to include 0; `scale = (max - min) / 127` (0.1 when that is 0
/// or too small to invert); the zero point is the level of 0.0, rounded and clamped.
pub fn activation_qparams(x: &[f32]) -> (f32, i32) {
    const QMAX: f64 = 127.0;
    let (lo, hi) = x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let mut scale = (hi - lo) / QMAX;
    if scale as f32 == 0.0 || (1.0 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    let zp_from_min = -lo / scale;
    let zp_from_max = QMAX - hi / scale;
    let err_min = -(lo / scale).abs();
    let err_max = QMAX - (hi / scale).abs();
    let zp = if err_min < err_max { zp_from_min } else { zp_from_max };
    let zp = zp.clamp(0.0, QMAX).round_ties_even() as i32;
    (scale as f32, zp)
}

/// Quantizes `x` with `scale` and `zero_point` to levels `0..=127`.
pub fn quantize_activation(x: &[f32], scale: f32, zero_point: i32) -> Vec<u8> {
    let inv = 1.0 / scale;
    x.iter().map(|&v| ((v * inv).round_ties_even() + zero_point as f32).clamp(0.0, 127.0) as u8).collect()
}

/// A dynamically quantized `nn.Linear` (`torch.ao.nn.quantized.dynamic.Linear`): `int8` weights
/// packed once, `f32` bias, inputs quantized per call. Inference only (no autograd).
#[derive(Debug, Clone)]
pub struct QuantizedLinear {
    weight: Vec<i8>,
    scales: Vec<f32>,
    bias: Option<Vec<f32>>,
    packed: PackedI8,
    in_features: usize,
    out_features: usize,
}

impl QuantizedLinear {
    /// Quantizes a Linear layer's current weights (moved to the CPU and `f32` first).
    ///
    /// # Errors
    /// If the weights hold a NaN or an infinity.
    pub fn from_linear(lin: &Linear, scheme: QScheme) -> Result<QuantizedLinear> {
        let (out_f, in_f) = (lin.out_features(), lin.in_features());
        let host = |t: Tensor| -> Result<Vec<f32>> {
            t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()
        };
        let (q, scales) = quantize_weight(&host(lin.weight.tensor())?, out_f, in_f, scheme)?;
        let bias = lin.bias.as_ref().map(|b| host(b.tensor())).transpose()?;
        QuantizedLinear::from_parts(q, scales, bias, out_f, in_f)
    }

    /// A layer from int8 weights `[out, in]` (row-major), their scales (one, or one per output
    /// channel) and an optional bias `[out]`.
    ///
    /// # Errors
    /// If the sizes disagree, or a scale is not positive and finite.
    pub fn from_parts(
        weight: Vec<i8>,
        scales: Vec<f32>,
        bias: Option<Vec<f32>>,
        out_features: usize,
        in_features: usize,
    ) -> Result<QuantizedLinear> {
        const OP: &str = "QuantizedLinear";
        if weight.len() != out_features * in_features {
            return Err(Error::shape(
                OP,
                format!("{} int8 weights are not [{out_features}, {in_features}]", weight.len()),
            ));
        }
        if scales.len() != 1 && scales.len() != out_features {
            return Err(Error::shape(
                OP,
                format!("{} scales for {out_features} output channels (need 1 or {out_features})", scales.len()),
            ));
        }
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::invalid(OP, format!("weight scale {s} (scales must be positive and finite)")));
        }
        if let Some(b) = &bias {
            if b.len() != out_features {
                return Err(Error::shape(OP, format!("bias of {} for {out_features} output channels", b.len())));
            }
        }
        let packed = PackedI8::pack(&weight, out_features, in_features);
        Ok(QuantizedLinear { weight, scales, bias, packed, in_features, out_features })
    }

    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// The int8 weights, `[out, in]` row-major.
    pub fn weight(&self) -> &[i8] {
        &self.weight
    }
    /// The weight scales (one, or one per output channel).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
    /// The bias.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    /// The scheme of the weights' scales.
    pub fn scheme(&self) -> QScheme {
        if self.scales.len() == 1 && self.out_features != 1 {
            QScheme::PerTensor
        } else {
            QScheme::PerChannel
        }
    }
    /// Bytes of the quantized layer's data (int8 weights, scales, bias).
    pub fn bytes(&self) -> usize {
        self.weight.len() + 4 * self.scales.len() + 4 * self.bias.as_ref().map_or(0, Vec::len)
    }

    /// `y = x Wᵀ + b` for host rows: `x` holds `rows` rows of `in_features`; quantized as a whole
    /// (one scale and zero point for the call, as PyTorch's dynamic Linear does).
    ///
    /// # Errors
    /// If `x` is not `rows × in_features` values or holds a NaN or an infinity.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        const OP: &str = "QuantizedLinear::forward";
        let (k, n) = (self.in_features, self.out_features);
        if x.len() != rows * k {
            return Err(Error::shape(OP, format!("{} values are not {rows} rows of in_features {k}", x.len())));
        }
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(OP, format!("input value {v} (dynamic quantization needs finite inputs)")));
        }
        let (sx, zp) = activation_qparams(x);
        let xq = quantize_activation(x, sx, zp);
        let mut acc = vec![0i32; rows * n];
        qgemm_u8i8(rows, &xq, k, &self.packed, &mut acc, n, rayon::current_num_threads(), None);
        let sums = self.packed.row_sums();
        let mut y = vec![0f32; rows * n];
        for (yr, ar) in y.chunks_exact_mut(n.max(1)).zip(acc.chunks_exact(n.max(1))) {
            for j in 0..n {
                let sw = self.scales[if self.scales.len() == 1 { 0 } else { j }];
                let v = (ar[j] - zp * sums[j]) as f32 * (sx * sw);
                yr[j] = match &self.bias {
                    Some(b) => v + b[j],
                    None => v,
                };
            }
        }
        Ok(y)
    }

    /// `y = x Wᵀ + b` for an `f32` (or other float) tensor `[*, in_features]` on any device;
    /// the product runs on the CPU and `y` (`f32`) comes back on `x`'s device.
    ///
    /// # Errors
    /// If the last dim of `x` is not `in_features`, `x` is not floating point, or it holds a NaN
    /// or an infinity.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "QuantizedLinear::forward";
        let xd = x.dims().to_vec();
        if xd.last() != Some(&self.in_features) {
            return Err(Error::shape(
                OP,
                format!(
                    "input {xd:?} does not match in_features {} (expects [*, {}])",
                    self.in_features, self.in_features
                ),
            ));
        }
        if !x.dtype().is_float() {
            return Err(Error::UnsupportedDType { op: OP, dtype: x.dtype(), msg: "takes floating-point input" });
        }
        let rows: usize = xd[..xd.len() - 1].iter().product();
        let host = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
        let y = self.forward_rows(&host, rows)?;
        let mut out = xd;
        *out.last_mut().expect("checked non-empty") = self.out_features;
        Tensor::from_vec(y, out, &Device::Cpu)?.to_device(x.device())
    }
}

/// A dynamically quantized `nn.LSTM` (`torch.ao.nn.quantized.dynamic.LSTM`) for inference:
/// zero initial states, every sequence full length. Gates in PyTorch's order (input, forget,
/// cell, output).
#[derive(Debug, Clone)]
pub struct QuantizedLstm {
    cfg: RnnConfig,
    /// Per layer and direction (`l0`, `l0_reverse`, `l1`, …): the input and hidden projections,
    /// each with its bias.
    cells: Vec<(QuantizedLinear, QuantizedLinear)>,
}

impl QuantizedLstm {
    /// Quantizes an LSTM's current weights.
    ///
    /// # Errors
    /// If the weights hold a NaN or an infinity.
    pub fn from_lstm(lstm: &Lstm, scheme: QScheme) -> Result<QuantizedLstm> {
        let cfg = lstm.config().clone();
        let params: std::collections::HashMap<String, crate::module::Param> =
            lstm.named_parameters().into_iter().collect();
        let host = |name: &str| -> Result<Option<(Vec<f32>, Vec<usize>)>> {
            params
                .get(name)
                .map(|p| {
                    let t = p.tensor();
                    Ok((
                        t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?,
                        t.dims().to_vec(),
                    ))
                })
                .transpose()
        };
        let mut cells = Vec::new();
        for l in 0..cfg.num_layers {
            for dir in 0..if cfg.bidirectional { 2 } else { 1 } {
                let sfx = format!("l{l}{}", if dir == 1 { "_reverse" } else { "" });
                let lin = |w: &str, b: &str| -> Result<QuantizedLinear> {
                    let (wv, d) = host(&format!("{w}_{sfx}"))?
                        .ok_or_else(|| Error::invalid("QuantizedLstm", format!("the LSTM has no {w}_{sfx}")))?;
                    let (q, scales) = quantize_weight(&wv, d[0], d[1], scheme)?;
                    let bias = host(&format!("{b}_{sfx}"))?.map(|(v, _)| v);
                    QuantizedLinear::from_parts(q, scales, bias, d[0], d[1])
                };
                cells.push((lin("weight_ih", "bias_ih")?, lin("weight_hh", "bias_hh")?));
            }
        }
        QuantizedLstm::from_parts(cfg, cells)
    }

    /// An LSTM from its quantized projections, per layer and direction in PyTorch's order
    /// (`l0`, `l0_reverse`, `l1`, …): `(W_ih with b_ih, W_hh with b_hh)`.
    ///
    /// # Errors
    /// If the count or a projection's shape does not fit `cfg`.
    pub fn from_parts(cfg: RnnConfig, cells: Vec<(QuantizedLinear, QuantizedLinear)>) -> Result<QuantizedLstm> {
        const OP: &str = "QuantizedLstm";
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        if cells.len() != cfg.num_layers * dirs {
            return Err(Error::invalid(
                OP,
                format!("{} projections pairs for {} layers × {dirs} directions", cells.len(), cfg.num_layers),
            ));
        }
        let h = cfg.hidden_size;
        for (i, (ih, hh)) in cells.iter().enumerate() {
            let input = if i / dirs == 0 { cfg.input_size } else { dirs * h };
            if (ih.out_features, ih.in_features, hh.out_features, hh.in_features) != (4 * h, input, 4 * h, h) {
                return Err(Error::shape(
                    OP,
                    format!(
                        "layer {} direction {}: W_ih [{}, {}] and W_hh [{}, {}] (expected [{}, {input}] and [{}, {h}])",
                        i / dirs,
                        i % dirs,
                        ih.out_features,
                        ih.in_features,
                        hh.out_features,
                        hh.in_features,
                        4 * h,
                        4 * h
                    ),
                ));
            }
        }
        Ok(QuantizedLstm { cfg, cells })
    }

    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.cfg
    }
    /// The projections per layer and direction.
    pub fn cells(&self) -> &[(QuantizedLinear, QuantizedLinear)] {
        &self.cells
    }

    /// Runs the LSTM on `x` (`[T, B, input]`, or `[B, T, input]` with `batch_first`) from zero
    /// states; returns the output (`[T, B, D·H]` or `[B, T, D·H]`), `h_n` and `c_n`
    /// (`[L·D, B, H]`), `f32` on the CPU.
    ///
    /// # Errors
    /// If `x` is not 3-D with `input_size` features, or holds a NaN or an infinity.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "QuantizedLstm::forward";
        let d = x.dims().to_vec();
        if d.len() != 3 || d[2] != self.cfg.input_size {
            return Err(Error::shape(
                OP,
                format!("input {d:?} (expects 3 dims with {} features)", self.cfg.input_size),
            ));
        }
        let xt = if self.cfg.batch_first { x.transpose(0usize, 1usize)? } else { x.clone() };
        let (t, b) = (d[if self.cfg.batch_first { 1 } else { 0 }], d[if self.cfg.batch_first { 0 } else { 1 }]);
        let mut input = xt.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
        let h = self.cfg.hidden_size;
        let dirs = if self.cfg.bidirectional { 2 } else { 1 };
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for l in 0..self.cfg.num_layers {
            let width = dirs * h;
            let mut out = vec![0f32; t * b * width];
            for dir in 0..dirs {
                let (ih, hh) = &self.cells[l * dirs + dir];
                // every step's input projection in one product (one quantization of the sequence)
                let gx = ih.forward_rows(&input, t * b)?;
                let (mut hs, mut cs) = (vec![0f32; b * h], vec![0f32; b * h]);
                for s in 0..t {
                    let step = if dir == 0 { s } else { t - 1 - s };
                    let gh = hh.forward_rows(&hs, b)?;
                    for r in 0..b {
                        let gxr = &gx[(step * b + r) * 4 * h..(step * b + r + 1) * 4 * h];
                        let ghr = &gh[r * 4 * h..(r + 1) * 4 * h];
                        for j in 0..h {
                            let gate = |k: usize| gxr[k * h + j] + ghr[k * h + j];
                            let (i, f, g, o) = (sigmoid(gate(0)), sigmoid(gate(1)), gate(2).tanh(), sigmoid(gate(3)));
                            let c = f * cs[r * h + j] + i * g;
                            cs[r * h + j] = c;
                            hs[r * h + j] = o * c.tanh();
                        }
                        let at = (step * b + r) * width + dir * h;
                        out[at..at + h].copy_from_slice(&hs[r * h..(r + 1) * h]);
                    }
                }
                h_n.extend_from_slice(&hs);
                c_n.extend_from_slice(&cs);
            }
            input = out;
        }
        let ld = self.cfg.num_layers * dirs;
        let y = Tensor::from_vec(input, [t, b, dirs * h], &Device::Cpu)?;
        let y = if self.cfg.batch_first { y.transpose(0usize, 1usize)?.contiguous()? } else { y };
        Ok((y, Tensor::from_vec(h_n, [ld, b, h], &Device::Cpu)?, Tensor::from_vec(c_n, [ld, b, h], &Device::Cpu)?))
    }

    /// Bytes of the quantized layers' data.
    pub fn bytes(&self) -> usize {
        self.cells.iter().map(|(a, b)| a.bytes() + b.bytes()).sum()
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_qparams_cover_the_range_and_zero_exactly() {
        // all-positive: zero point 0, scale max/127
        let (s, z) = activation_qparams(&[0.5, 2.54, 1.0]);
        assert_eq!(z, 0);
        assert!((s - 2.54 / 127.0).abs() < 1e-7);
        // mixed signs: 0.0 maps to a level exactly
        let x = [-1.0f32, 3.0, 0.0, 0.7];
        let (s, z) = activation_qparams(&x);
        let q = quantize_activation(&x, s, z);
        assert_eq!(q[2] as i32, z);
        for (&v, &qv) in x.iter().zip(&q) {
            assert!(((qv as i32 - z) as f32 * s - v).abs() <= s / 2.0 + 1e-6, "{v} -> {qv}");
        }
        // all zeros: PyTorch's fallback scale
        assert_eq!(activation_qparams(&[0.0; 4]), (0.1, 0));
    }

    #[test]
    fn bad_parts_are_clear_errors() {
        let e = QuantizedLinear::from_parts(vec![1; 6], vec![0.1; 2], None, 2, 3).unwrap();
        assert_eq!(e.scheme(), QScheme::PerChannel);
        let msg = QuantizedLinear::from_parts(vec![1; 6], vec![0.1; 3], None, 2, 3).unwrap_err().to_string();
        assert!(msg.contains("3 scales"), "{msg}");
        let msg = QuantizedLinear::from_parts(vec![1; 6], vec![f32::NAN], None, 2, 3).unwrap_err().to_string();
        assert!(msg.contains("NaN"), "{msg}");
        let msg = QuantizedLinear::from_parts(vec![1; 5], vec![0.1], None, 2, 3).unwrap_err().to_string();
        assert!(msg.contains("5 int8 weights"), "{msg}");
        let msg = e.forward_rows(&[1.0, f32::INFINITY, 0.0], 1).unwrap_err().to_string();
        assert!(msg.contains("inf"), "{msg}");
        let msg = quantize_weight(&[0.0, f32::NAN], 1, 2, QScheme::PerTensor).unwrap_err().to_string();
        assert!(msg.contains("column 1"), "{msg}");
    }
}
