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
//! gate math stays in `f32`. [`QuantizedGru`] does the same for `nn.GRU`.

use std::collections::BTreeMap;

use crate::layers::Linear;
use crate::module::Module;
use crate::rnn::{Gru, Lstm, RnnConfig};
use stapes_kernels::cpu::qgemm::{minmax_finite_f32, qgemm_u8i8_dequant, quantize_u8_f32, PackedI8};
use stapes_kernels::cpu::rnn::{lstm_cell_f32, sigmoid_f32_inplace, tanh_f32_inplace, LstmCellRow};
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
    let scales = weight_scales("quantize_weight", w, rows, cols, scheme)?;
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

/// The symmetric int8 scales of a `[rows, cols]` weight ([`quantize_weight`]'s choice): one,
/// or one per row. `op` names the caller in errors.
///
/// # Errors
/// If `w` is not `rows × cols` values or holds a NaN or an infinity.
pub(crate) fn weight_scales(
    op: &'static str,
    w: &[f32],
    rows: usize,
    cols: usize,
    scheme: QScheme,
) -> Result<Vec<f32>> {
    if w.len() != rows * cols {
        return Err(Error::shape(op, format!("{} values are not [{rows}, {cols}]", w.len())));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            op,
            format!("weight {} at row {}, column {}", w[i], i / cols.max(1), i % cols.max(1)),
        ));
    }
    let scale_of = |vals: &[f32]| {
        let (lo, hi) = vals.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        ((-lo).max(hi) / 127.5).max(f32::EPSILON)
    };
    Ok(match scheme {
        QScheme::PerTensor => vec![scale_of(w)],
        QScheme::PerChannel => w.chunks(cols.max(1)).take(rows).map(scale_of).collect(),
    })
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

/// Quantizes `x` (finite values) with `scale` and `zero_point` to levels `0..=127`.
pub fn quantize_activation(x: &[f32], scale: f32, zero_point: i32) -> Vec<u8> {
    // every element is written: a recycled buffer of the caching allocator will do
    let mut out = stapes_tensor::alloc::take::<u8>(x.len());
    quantize_u8_f32(x, 1.0 / scale, zero_point as f32, 127.0, &mut out);
    out
}

/// An activation tensor quantized for [`QuantizedLinear::forward_quantized`]: `uint8` levels,
/// scale and zero point (PyTorch's choice, see [`activation_qparams`]).
pub struct QuantizedInput {
    /// The levels, row-major.
    pub values: Vec<u8>,
    /// The scale.
    pub scale: f32,
    /// The zero point.
    pub zero_point: i32,
}

impl Drop for QuantizedInput {
    fn drop(&mut self) {
        stapes_tensor::alloc::give(std::mem::take(&mut self.values));
    }
}

impl QuantizedInput {
    /// Quantizes `x` as a whole.
    ///
    /// # Errors
    /// If `x` holds a NaN or an infinity.
    pub fn new(x: &[f32]) -> Result<QuantizedInput> {
        let (lo, hi, finite) = minmax_finite_f32(x);
        if !finite {
            let v = x.iter().find(|v| !v.is_finite()).copied().unwrap_or(f32::NAN);
            return Err(Error::invalid(
                "QuantizedLinear::forward",
                format!("input value {v} (dynamic quantization needs finite inputs)"),
            ));
        }
        let (scale, zero_point) = activation_qparams(&[lo, hi]);
        Ok(QuantizedInput { values: quantize_activation(x, scale, zero_point), scale, zero_point })
    }
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
    /// The int8 weight and the bias on the CUDA device last used (uploaded once).
    on_device: DeviceCopy,
}

/// A layer's int8 weight `[out, in]` and `f32` bias on one CUDA device.
#[derive(Default)]
struct DeviceCopy(std::sync::Mutex<Option<(Device, Tensor, Option<Tensor>)>>);

impl Clone for DeviceCopy {
    fn clone(&self) -> Self {
        DeviceCopy::default()
    }
}

impl std::fmt::Debug for DeviceCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCopy")
    }
}

impl QuantizedLinear {
    /// Quantizes a Linear layer's current weights (moved to the CPU and `f32` first).
    ///
    /// # Errors
    /// If the weights hold a NaN or an infinity.
    pub fn from_linear(lin: &Linear, scheme: QScheme) -> Result<QuantizedLinear> {
        let (out_f, in_f) = (lin.out_features(), lin.in_features());
        let (q, scales) = quantize_weight(&host_f32(&lin.weight.tensor())?, out_f, in_f, scheme)?;
        let bias = lin.bias.as_ref().map(|b| host_f32(&b.tensor())).transpose()?;
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
        Ok(QuantizedLinear {
            weight,
            scales,
            bias,
            packed,
            in_features,
            out_features,
            on_device: DeviceCopy::default(),
        })
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
    /// Bytes of the int8 weights and their scales.
    pub fn weight_bytes(&self) -> usize {
        self.weight.len() + 4 * self.scales.len()
    }
    /// Bytes of the quantized layer's data (int8 weights, scales, bias).
    pub fn bytes(&self) -> usize {
        self.weight_bytes() + 4 * self.bias.as_ref().map_or(0, Vec::len)
    }

    /// `y = x Wᵀ + b` for host rows: `x` holds `rows` rows of `in_features`; quantized as a whole
    /// (one scale and zero point for the call, as PyTorch's dynamic Linear does).
    ///
    /// # Errors
    /// If `x` is not `rows × in_features` values or holds a NaN or an infinity.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if x.len() != rows * self.in_features {
            return Err(Error::shape(
                "QuantizedLinear::forward",
                format!("{} values are not {rows} rows of in_features {}", x.len(), self.in_features),
            ));
        }
        self.forward_quantized(&QuantizedInput::new(x)?, rows)
    }

    /// `y = x Wᵀ + b` from an input quantized already (shared by layers that read the same
    /// input, such as an LSTM's two directions).
    ///
    /// # Errors
    /// If the input is not `rows × in_features` values.
    pub fn forward_quantized(&self, x: &QuantizedInput, rows: usize) -> Result<Vec<f32>> {
        let (k, n) = (self.in_features, self.out_features);
        if x.values.len() != rows * k {
            return Err(Error::shape(
                "QuantizedLinear::forward",
                format!("{} values are not {rows} rows of in_features {k}", x.values.len()),
            ));
        }
        let mult: Vec<f32> =
            (0..n).map(|j| x.scale * self.scales[if self.scales.len() == 1 { 0 } else { j }]).collect();
        // every element is written (recycled buffers: no fresh pages per call)
        let mut y = stapes_tensor::alloc::take::<f32>(rows * n);
        qgemm_u8i8_dequant(
            rows,
            &x.values,
            k,
            &self.packed,
            x.zero_point,
            &mult,
            self.bias.as_deref(),
            &mut y,
            n,
            rayon::current_num_threads(),
        );
        Ok(y)
    }

    /// `y = x Wᵀ + b` for an `f32` (or other float) tensor `[*, in_features]`; `y` is `f32` on
    /// `x`'s device. On a CUDA device the product runs there (the `__dp4a` kernel), with the
    /// CPU path's numbers.
    ///
    /// # Errors
    /// If the last dim of `x` is not `in_features`, `x` is not floating point, or it holds a NaN
    /// or an infinity.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "QuantizedLinear::forward";
        let xd = x.dims().to_vec();
        crate::layers::check_in_features(OP, &xd, self.in_features)?;
        if !x.dtype().is_float() {
            return Err(Error::UnsupportedDType { op: OP, dtype: x.dtype(), msg: "takes floating-point input" });
        }
        let rows: usize = xd[..xd.len() - 1].iter().product();
        let mut out = xd;
        *out.last_mut().expect("checked non-empty") = self.out_features;
        if x.device().is_cuda() {
            return self.forward_cuda(&x.to_dtype(DType::F32)?, rows, out);
        }
        let y = x.to_dtype(DType::F32)?.with_slice(|s: &[f32]| self.forward_rows(s, rows))??;
        Tensor::from_vec(y, out, &Device::Cpu)
    }

    /// The forward pass on a CUDA device: the activations quantized there (their range read
    /// back, two scalars), the int8 product with fused dequantization by the `__dp4a` kernel
    /// (`stapes_kernels::cuda::qgemm`); the same levels and sums as on the CPU, so the same
    /// outputs to the bit.
    fn forward_cuda(&self, x: &Tensor, rows: usize, out_dims: Vec<usize>) -> Result<Tensor> {
        use stapes_kernels::cuda::qgemm::{qgemm_u8i8_dequant, quantize_u8_f32, QGemmConfig};
        const OP: &str = "QuantizedLinear::forward";
        let device = *x.device();
        let cuda = |e: stapes_kernels::cuda::CudaError| Error::invalid(OP, e.to_string());
        let (k, n) = (self.in_features, self.out_features);
        let x = x.cuda_contiguous()?;
        let flat = x.reshape([rows * k])?;
        let (lo, hi) = if rows * k == 0 {
            (0.0, 0.0)
        } else {
            (flat.min(0usize, false)?.to_scalar_f64()?, flat.max(0usize, false)?.to_scalar_f64()?)
        };
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(Error::invalid(
                OP,
                format!("input range [{lo}, {hi}] (dynamic quantization needs finite inputs)"),
            ));
        }
        let (scale, zero_point) = activation_qparams(&[lo as f32, hi as f32]);
        let backend = x.cuda_backend(OP)?;
        let mut levels = backend.alloc::<u8>(rows * k).map_err(cuda)?;
        quantize_u8_f32(&backend, x.cuda_buffer::<f32>(OP)?, 1.0 / scale, zero_point, 127, &mut levels)
            .map_err(cuda)?;
        let (w, bias) = self.device_copy(&device)?;
        let mult: Vec<f32> = (0..n).map(|j| scale * self.scales[if self.scales.len() == 1 { 0 } else { j }]).collect();
        let mult = backend.upload(&mult).map_err(cuda)?;
        let mut y = backend.alloc::<f32>(rows * n).map_err(cuda)?;
        let bias = bias.as_ref().map(|b| b.cuda_buffer::<f32>(OP)).transpose()?;
        qgemm_u8i8_dequant(
            &backend,
            &QGemmConfig::dense(rows, n, k),
            &levels,
            w.cuda_buffer::<i8>(OP)?,
            zero_point,
            &mult,
            bias,
            &mut y,
        )
        .map_err(cuda)?;
        Tensor::from_cuda_buffer(y, backend, out_dims, &device)
    }

    /// The int8 weight and the bias on `device`, uploaded at the first call there.
    fn device_copy(&self, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
        let mut slot = self.on_device.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, w, b)) = slot.as_ref() {
            if d == device {
                return Ok((w.clone(), b.clone()));
            }
        }
        let w = Tensor::from_vec(self.weight.clone(), [self.out_features, self.in_features], &Device::Cpu)?
            .to_device(device)?;
        let b = self
            .bias
            .as_ref()
            .map(|b| Tensor::from_vec(b.clone(), [self.out_features], &Device::Cpu)?.to_device(device))
            .transpose()?;
        *slot = Some((*device, w.clone(), b.clone()));
        Ok((w, b))
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
    /// GRU cells (gates r, z, n) instead of LSTM ones (the engine of [`QuantizedGru`]).
    gru: bool,
}

impl QuantizedLstm {
    /// Quantizes an LSTM's current weights.
    ///
    /// # Errors
    /// If the weights hold a NaN or an infinity.
    pub fn from_lstm(lstm: &Lstm, scheme: QScheme) -> Result<QuantizedLstm> {
        QuantizedLstm::quantize_module(lstm, lstm.config().clone(), scheme, false)
    }

    fn quantize_module(m: &dyn Module, cfg: RnnConfig, scheme: QScheme, gru: bool) -> Result<QuantizedLstm> {
        rnn_cells(m, cfg, gru, |_, w| {
            let d = w.dims();
            quantize_weight(&host_f32(w)?, d[0], d[1], scheme)
        })
    }

    /// An LSTM from its quantized projections, per layer and direction in PyTorch's order
    /// (`l0`, `l0_reverse`, `l1`, …): `(W_ih with b_ih, W_hh with b_hh)`.
    ///
    /// # Errors
    /// If the count or a projection's shape does not fit `cfg`.
    pub fn from_parts(cfg: RnnConfig, cells: Vec<(QuantizedLinear, QuantizedLinear)>) -> Result<QuantizedLstm> {
        QuantizedLstm::from_parts_kind(cfg, cells, false)
    }

    fn from_parts_kind(
        cfg: RnnConfig,
        cells: Vec<(QuantizedLinear, QuantizedLinear)>,
        gru: bool,
    ) -> Result<QuantizedLstm> {
        let op = if gru { "QuantizedGru" } else { "QuantizedLstm" };
        let g = if gru { 3 } else { 4 };
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        if cells.len() != cfg.num_layers * dirs {
            return Err(Error::invalid(
                op,
                format!("{} projections pairs for {} layers × {dirs} directions", cells.len(), cfg.num_layers),
            ));
        }
        let h = cfg.hidden_size;
        for (i, (ih, hh)) in cells.iter().enumerate() {
            let input = if i / dirs == 0 { cfg.input_size } else { dirs * h };
            if (ih.out_features, ih.in_features, hh.out_features, hh.in_features) != (g * h, input, g * h, h) {
                return Err(Error::shape(
                    op,
                    format!(
                        "layer {} direction {}: W_ih [{}, {}] and W_hh [{}, {}] (expected [{}, {input}] and [{}, {h}])",
                        i / dirs,
                        i % dirs,
                        ih.out_features,
                        ih.in_features,
                        hh.out_features,
                        hh.in_features,
                        g * h,
                        g * h
                    ),
                ));
            }
        }
        Ok(QuantizedLstm { cfg, cells, gru })
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
        self.forward_with(x, None)
    }

    /// [`forward`](Self::forward) for sequences of `lengths[b]` frames (each in `1..=T`;
    /// `None`: all `T`), as PyTorch runs a `PackedSequence`: the valid frames' input projection
    /// is quantized at once (padded frames never take part), each time step quantizes the
    /// hidden states of the sequences that reach it, the reverse direction starts at each
    /// sequence's own last frame, and the outputs at padded positions are zero. The results
    /// come back on `x`'s device.
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and for lengths that do not fit the batch.
    pub fn forward_with(&self, x: &Tensor, lengths: Option<&[usize]>) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "QuantizedLstm::forward";
        let d = x.dims().to_vec();
        if d.len() != 3 || d[2] != self.cfg.input_size {
            return Err(Error::shape(
                OP,
                format!("input {d:?} (expects 3 dims with {} features)", self.cfg.input_size),
            ));
        }
        let xt = if self.cfg.batch_first { x.transpose(0usize, 1usize)? } else { x.clone() };
        let (t, b) = (xt.dims()[0], xt.dims()[1]);
        let lens: Vec<usize> = match lengths {
            None => vec![t; b],
            Some(l) => {
                if l.len() != b || l.iter().any(|&n| n == 0 || n > t) {
                    return Err(Error::invalid(
                        OP,
                        format!("lengths {l:?} do not fit a batch of {b} sequences of {t} frames"),
                    ));
                }
                l.to_vec()
            }
        };
        let mut input = host_f32(&xt)?;
        let h = self.cfg.hidden_size;
        let dirs = if self.cfg.bidirectional { 2 } else { 1 };
        // As PyTorch's quantized LSTM runs a PackedSequence: the input projection of every valid
        // frame in one product (one quantization; padded frames never take part), then per
        // time step the hidden states of the sequences that reach it. A plain batch is the
        // case of every frame valid.
        let lens_ref = &lens;
        let valid: Vec<usize> =
            (0..t).flat_map(|s| (0..b).filter(move |&r| s < lens_ref[r]).map(move |r| s * b + r)).collect();
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for l in 0..self.cfg.num_layers {
            let (width, in_w) = (dirs * h, input.len() / (t * b).max(1));
            let mut out = stapes_tensor::alloc::zeros::<f32>(t * b * width);
            // the valid frames, quantized once for both directions
            // recycled buffers here and below: fresh megabytes per call cost page faults
            let mut packed = stapes_tensor::alloc::take::<f32>(valid.len() * in_w);
            for (dst, &p) in packed.chunks_exact_mut(in_w.max(1)).zip(&valid) {
                dst.copy_from_slice(&input[p * in_w..(p + 1) * in_w]);
            }
            let xq = QuantizedInput::new(&packed);
            stapes_tensor::alloc::give(packed);
            let xq = xq?;
            for dir in 0..dirs {
                let (ih, hh) = &self.cells[l * dirs + dir];
                let gx_valid = ih.forward_quantized(&xq, valid.len())?;
                // row of each (time, sequence) in gx_valid
                let mut row_of = vec![usize::MAX; t * b];
                for (k, &p) in valid.iter().enumerate() {
                    row_of[p] = k;
                }
                let (mut hs, mut cs) = (vec![0f32; b * h], vec![0f32; b * h]);
                let (mut c_new, mut h_new, mut tanh_c) = (vec![0f32; h], vec![0f32; h], vec![0f32; h]);
                let mut h_act = Vec::with_capacity(b * h);
                for s in 0..t {
                    // the time index: forward, or from the end (each sequence's reverse pass
                    // starts at its own last frame and joins when the time reaches it)
                    let i = if dir == 0 { s } else { t - 1 - s };
                    let active: Vec<usize> = (0..b).filter(|&r| i < lens[r]).collect();
                    if active.is_empty() {
                        continue;
                    }
                    h_act.clear();
                    for &r in &active {
                        h_act.extend_from_slice(&hs[r * h..(r + 1) * h]);
                    }
                    let mut gates = hh.forward_rows(&h_act, active.len())?;
                    if self.gru {
                        for (k, &r) in active.iter().enumerate() {
                            let gh = &mut gates[k * 3 * h..(k + 1) * 3 * h];
                            let gx = &gx_valid[row_of[i * b + r] * 3 * h..(row_of[i * b + r] + 1) * 3 * h];
                            // r, z = σ(x W_i + b_i + h W_h + b_h); n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
                            let (rz, gh_n) = gh.split_at_mut(2 * h);
                            rz.iter_mut().zip(&gx[..2 * h]).for_each(|(a, &x)| *a += x);
                            sigmoid_f32_inplace(rz);
                            for j in 0..h {
                                gh_n[j] = gx[2 * h + j] + rz[j] * gh_n[j];
                            }
                            tanh_f32_inplace(gh_n);
                            for j in 0..h {
                                let z = rz[h + j];
                                h_new[j] = (1.0 - z) * gh_n[j] + z * hs[r * h + j];
                            }
                            hs[r * h..(r + 1) * h].copy_from_slice(&h_new);
                            let at = (i * b + r) * width + dir * h;
                            out[at..at + h].copy_from_slice(&h_new);
                        }
                        continue;
                    }
                    for (k, &r) in active.iter().enumerate() {
                        let gr = &mut gates[k * 4 * h..(k + 1) * 4 * h];
                        let gxr = &gx_valid[row_of[i * b + r] * 4 * h..(row_of[i * b + r] + 1) * 4 * h];
                        gr.iter_mut().zip(gxr).for_each(|(a, &x)| *a += x);
                        let (gi, rest) = gr.split_at_mut(h);
                        let (gf, rest) = rest.split_at_mut(h);
                        let (gg, go) = rest.split_at_mut(h);
                        lstm_cell_f32(LstmCellRow {
                            gates: [gi, gf, gg, go],
                            c_prev: &cs[r * h..(r + 1) * h],
                            out: [&mut c_new, &mut h_new, &mut tanh_c],
                        });
                        cs[r * h..(r + 1) * h].copy_from_slice(&c_new);
                        hs[r * h..(r + 1) * h].copy_from_slice(&h_new);
                        let at = (i * b + r) * width + dir * h;
                        out[at..at + h].copy_from_slice(&h_new);
                    }
                }
                h_n.extend_from_slice(&hs);
                c_n.extend_from_slice(&cs);
                stapes_tensor::alloc::give(gx_valid);
            }
            stapes_tensor::alloc::give(std::mem::replace(&mut input, out));
        }
        let ld = self.cfg.num_layers * dirs;
        let dev = x.device();
        let y = Tensor::from_vec(input, [t, b, dirs * h], &Device::Cpu)?;
        let y = if self.cfg.batch_first { y.transpose(0usize, 1usize)?.contiguous()? } else { y };
        Ok((
            y.to_device(dev)?,
            Tensor::from_vec(h_n, [ld, b, h], &Device::Cpu)?.to_device(dev)?,
            Tensor::from_vec(c_n, [ld, b, h], &Device::Cpu)?.to_device(dev)?,
        ))
    }

    /// Bytes of the quantized layers' data.
    pub fn bytes(&self) -> usize {
        self.cells.iter().map(|(a, b)| a.bytes() + b.bytes()).sum()
    }
}

/// Where a layer keeps its quantized form (empty until quantized).
pub struct QuantizedSlot<T>(std::sync::RwLock<Option<std::sync::Arc<T>>>);

impl<T> Default for QuantizedSlot<T> {
    fn default() -> Self {
        QuantizedSlot(std::sync::RwLock::new(None))
    }
}

impl<T> QuantizedSlot<T> {
    /// The quantized form, if any.
    pub fn get(&self) -> Option<std::sync::Arc<T>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Sets or clears it.
    pub fn set(&self, v: Option<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = v.map(std::sync::Arc::new);
    }
}

/// A layer that dynamic quantization converts (`Linear`, `Lstm`, `Gru`).
pub trait Quantizable {
    /// Quantizes the current float weights; the forward pass then runs in int8.
    fn quantize(&self, scheme: QScheme) -> Result<()>;
    /// Goes back to the float weights.
    fn dequantize(&self);
    /// Whether the layer runs quantized.
    fn is_quantized(&self) -> bool;
    /// The local names of the float parameters its quantized form replaces.
    fn replaced_params(&self) -> Vec<String>;
    /// The quantized state by local name: `<weight>_int8` (`I8`) and `<weight>_scale` (`F32`,
    /// one value or one per output channel) for each replaced weight.
    fn quantized_state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Loads such a state (local names); biases come from the layer's float parameters.
    fn load_quantized(&self, state: &BTreeMap<String, Tensor>) -> Result<()>;
    /// Bytes of the replaced float weights (as `f32`) and of the quantized data.
    fn sizes(&self) -> (usize, usize);
    /// Sets or clears fake quantization for quantization-aware training ([`crate::qat`]).
    fn set_fake_quant(&self, fq: Option<crate::qat::FakeQuant>);
    /// The fake quantization in effect, if any.
    fn fake_quant(&self) -> Option<crate::qat::FakeQuant>;
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()
}

/// The int8 weight and scales of `name` in a quantized state, checked.
fn int8_weight(state: &BTreeMap<String, Tensor>, name: &str, rows: usize, cols: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    const OP: &str = "load_quantized";
    let get = |k: String| state.get(&k).ok_or_else(|| Error::invalid(OP, format!("missing {k}")));
    let (w, s) = (get(format!("{name}_int8"))?, get(format!("{name}_scale"))?);
    if w.dtype() != DType::I8 || w.dims() != [rows, cols] {
        return Err(Error::invalid(
            OP,
            format!("{name}_int8 is {:?} {:?} (expected I8 [{rows}, {cols}])", w.dtype(), w.dims()),
        ));
    }
    if s.dtype() != DType::F32 || s.rank() != 1 || (s.dims()[0] != 1 && s.dims()[0] != rows) {
        return Err(Error::invalid(
            OP,
            format!("{name}_scale is {:?} {:?} (expected F32 [1] or [{rows}])", s.dtype(), s.dims()),
        ));
    }
    let scales = s.to_vec::<f32>()?;
    if let Some(v) = scales.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::invalid(OP, format!("{name}_scale holds {v} (scales must be positive and finite)")));
    }
    Ok((w.to_vec::<i8>()?, scales))
}

fn scale_tensor(scales: &[f32]) -> Result<Tensor> {
    Tensor::from_vec(scales.to_vec(), [scales.len()], &Device::Cpu)
}

impl Quantizable for Linear {
    fn quantize(&self, scheme: QScheme) -> Result<()> {
        self.quantized.set(Some(QuantizedLinear::from_linear(self, scheme)?));
        Ok(())
    }
    fn dequantize(&self) {
        self.quantized.set(None)
    }
    fn is_quantized(&self) -> bool {
        self.quantized.get().is_some()
    }
    fn replaced_params(&self) -> Vec<String> {
        vec!["weight".into()]
    }
    fn quantized_state(&self) -> Result<Vec<(String, Tensor)>> {
        let q = self.quantized.get().ok_or_else(|| Error::invalid("quantized_state", "the Linear is not quantized"))?;
        Ok(vec![
            ("weight_int8".into(), Tensor::from_vec(q.weight.clone(), [q.out_features, q.in_features], &Device::Cpu)?),
            ("weight_scale".into(), scale_tensor(&q.scales)?),
        ])
    }
    fn load_quantized(&self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let (w, scales) = int8_weight(state, "weight", self.out_features(), self.in_features())?;
        let bias = self.bias.as_ref().map(|b| host_f32(&b.tensor())).transpose()?;
        self.quantized.set(Some(QuantizedLinear::from_parts(
            w,
            scales,
            bias,
            self.out_features(),
            self.in_features(),
        )?));
        Ok(())
    }
    fn sizes(&self) -> (usize, usize) {
        let f = 4 * self.weight.elem_count();
        (f, self.quantized.get().map_or(0, |q| q.weight_bytes()))
    }
    fn set_fake_quant(&self, fq: Option<crate::qat::FakeQuant>) {
        self.fake_quant.set(fq)
    }
    fn fake_quant(&self) -> Option<crate::qat::FakeQuant> {
        self.fake_quant.get().map(|f| *f)
    }
}

/// The int8 state of a quantized LSTM or GRU, by local name.
fn rnn_quantized_state(q: &QuantizedLstm) -> Result<Vec<(String, Tensor)>> {
    let dirs = if q.cfg.bidirectional { 2 } else { 1 };
    let mut out = Vec::new();
    for (i, (ih, hh)) in q.cells.iter().enumerate() {
        let sfx = format!("l{}{}", i / dirs, if i % dirs == 1 { "_reverse" } else { "" });
        for (name, lin) in [("weight_ih", ih), ("weight_hh", hh)] {
            out.push((
                format!("{name}_{sfx}_int8"),
                Tensor::from_vec(lin.weight.clone(), [lin.out_features, lin.in_features], &Device::Cpu)?,
            ));
            out.push((format!("{name}_{sfx}_scale"), scale_tensor(&lin.scales)?));
        }
    }
    Ok(out)
}

/// A quantized LSTM or GRU from the module's weights (`int8_of(name, weight)` gives each
/// weight's int8 values and scales) and its float biases, per layer and direction in PyTorch's
/// order.
fn rnn_cells(
    m: &dyn Module,
    cfg: RnnConfig,
    gru: bool,
    int8_of: impl Fn(&str, &Tensor) -> Result<(Vec<i8>, Vec<f32>)>,
) -> Result<QuantizedLstm> {
    let params: BTreeMap<String, crate::module::Param> = m.named_parameters().into_iter().collect();
    let dirs = if cfg.bidirectional { 2 } else { 1 };
    let mut cells = Vec::new();
    for i in 0..cfg.num_layers * dirs {
        let sfx = format!("l{}{}", i / dirs, if i % dirs == 1 { "_reverse" } else { "" });
        let lin = |w: &str, b: &str| -> Result<QuantizedLinear> {
            let name = format!("{w}_{sfx}");
            let weight = params
                .get(&name)
                .map(|p| p.tensor())
                .ok_or_else(|| Error::invalid("QuantizedLstm", format!("the recurrent layer has no {name}")))?;
            let (q, scales) = int8_of(&name, &weight)?;
            let bias = params.get(&format!("{b}_{sfx}")).map(|p| host_f32(&p.tensor())).transpose()?;
            QuantizedLinear::from_parts(q, scales, bias, weight.dims()[0], weight.dims()[1])
        };
        cells.push((lin("weight_ih", "bias_ih")?, lin("weight_hh", "bias_hh")?));
    }
    QuantizedLstm::from_parts_kind(cfg, cells, gru)
}

/// A quantized LSTM or GRU from an int8 state and the module's float biases.
fn rnn_load_quantized(
    m: &dyn Module,
    cfg: RnnConfig,
    gru: bool,
    state: &BTreeMap<String, Tensor>,
) -> Result<QuantizedLstm> {
    rnn_cells(m, cfg, gru, |name, w| int8_weight(state, name, w.dims()[0], w.dims()[1]))
}

/// f32 bytes of a recurrent layer's weights and int8 bytes of its quantized form.
fn rnn_sizes(m: &dyn Module, q: Option<&QuantizedLstm>) -> (usize, usize) {
    let f =
        m.named_parameters().iter().filter(|(n, _)| n.starts_with("weight_")).map(|(_, p)| 4 * p.elem_count()).sum();
    (f, q.map_or(0, |q| q.cells.iter().map(|(a, b)| a.weight_bytes() + b.weight_bytes()).sum()))
}

/// `Quantizable` for a recurrent layer whose slot holds `$q`: `$wrap` makes one from the
/// shared engine ([`QuantizedLstm`]), `$engine` reads the engine back.
macro_rules! recurrent_quantizable {
    ($layer:ty, $q:ty, $name:literal, $gru:literal, $wrap:expr, $engine:expr) => {
        impl Quantizable for $layer {
            fn quantize(&self, scheme: QScheme) -> Result<()> {
                let q = QuantizedLstm::quantize_module(self, self.config().clone(), scheme, $gru)?;
                self.quantized.set(Some($wrap(q)));
                Ok(())
            }
            fn dequantize(&self) {
                self.quantized.set(None)
            }
            fn is_quantized(&self) -> bool {
                self.quantized.get().is_some()
            }
            fn replaced_params(&self) -> Vec<String> {
                self.named_parameters().into_iter().map(|(n, _)| n).filter(|n| n.starts_with("weight_")).collect()
            }
            fn quantized_state(&self) -> Result<Vec<(String, Tensor)>> {
                let q = self
                    .quantized
                    .get()
                    .ok_or_else(|| Error::invalid("quantized_state", concat!("the ", $name, " is not quantized")))?;
                let engine: fn(&$q) -> &QuantizedLstm = $engine;
                rnn_quantized_state(engine(&q))
            }
            fn load_quantized(&self, state: &BTreeMap<String, Tensor>) -> Result<()> {
                let q = rnn_load_quantized(self, self.config().clone(), $gru, state)?;
                self.quantized.set(Some($wrap(q)));
                Ok(())
            }
            fn sizes(&self) -> (usize, usize) {
                let engine: fn(&$q) -> &QuantizedLstm = $engine;
                rnn_sizes(self, self.quantized.get().as_deref().map(engine))
            }
            fn set_fake_quant(&self, fq: Option<crate::qat::FakeQuant>) {
                self.base.fake_quant.set(fq)
            }
            fn fake_quant(&self) -> Option<crate::qat::FakeQuant> {
                self.base.fake_quant.get().map(|f| *f)
            }
        }
    };
}

recurrent_quantizable!(Lstm, QuantizedLstm, "LSTM", false, |q| q, |q| q);
recurrent_quantizable!(Gru, QuantizedGru, "GRU", true, QuantizedGru, |q| &q.0);

/// A dynamically quantized `nn.GRU` (`torch.ao.nn.quantized.dynamic.GRU`) for inference, as
/// [`QuantizedLstm`] runs an LSTM: gates in PyTorch's order (reset, update, new), `n = tanh(x
/// W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))`.
#[derive(Debug, Clone)]
pub struct QuantizedGru(QuantizedLstm);

impl QuantizedGru {
    /// Quantizes a GRU's current weights.
    ///
    /// # Errors
    /// If the weights hold a NaN or an infinity.
    pub fn from_gru(gru: &Gru, scheme: QScheme) -> Result<QuantizedGru> {
        Ok(QuantizedGru(QuantizedLstm::quantize_module(gru, gru.config().clone(), scheme, true)?))
    }
    /// A GRU from its quantized projections (`[3H, in]` and `[3H, H]` with their biases), per
    /// layer and direction in PyTorch's order.
    ///
    /// # Errors
    /// If the count or a projection's shape does not fit `cfg`.
    pub fn from_parts(cfg: RnnConfig, cells: Vec<(QuantizedLinear, QuantizedLinear)>) -> Result<QuantizedGru> {
        Ok(QuantizedGru(QuantizedLstm::from_parts_kind(cfg, cells, true)?))
    }
    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.0.cfg
    }
    /// Runs the GRU from zero states (lengths as [`QuantizedLstm::forward_with`]); returns the
    /// output and `h_n`.
    ///
    /// # Errors
    /// As [`QuantizedLstm::forward_with`].
    pub fn forward_with(&self, x: &Tensor, lengths: Option<&[usize]>) -> Result<(Tensor, Tensor)> {
        let (y, h, _) = self.0.forward_with(x, lengths)?;
        Ok((y, h))
    }
}

/// Every quantizable layer of `m` with its dotted path.
pub(crate) fn quantizables<'a>(m: &'a dyn Module, prefix: &str, out: &mut Vec<(String, &'a dyn Quantizable)>) {
    if let Some(q) = m.as_quantizable() {
        out.push((prefix.to_string(), q));
    }
    for (n, c) in m.children() {
        let p = if prefix.is_empty() { n } else { format!("{prefix}.{n}") };
        quantizables(c, &p, out);
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// What [`quantize_dynamic`] converted.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeReport {
    /// The layers, by dotted path.
    pub layers: Vec<String>,
    /// Bytes of their float weights as `f32`.
    pub f32_bytes: usize,
    /// Bytes of their int8 weights and scales.
    pub int8_bytes: usize,
}

/// `torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.LSTM, nn.GRU},
/// dtype=torch.qint8)`: converts every `Linear`, `Lstm` and `Gru` of `m` in place (biases stay `f32`; other layers, such as
/// convolutions, are unchanged). The model then runs inference only.
///
/// # Errors
/// If `m` has no quantizable layer, if one is quantized already, or if a weight holds a NaN or
/// an infinity (nothing is changed then).
pub fn quantize_dynamic(m: &dyn Module, scheme: QScheme) -> Result<QuantizeReport> {
    const OP: &str = "quantize_dynamic";
    let mut qs = Vec::new();
    quantizables(m, "", &mut qs);
    if qs.is_empty() {
        return Err(Error::invalid(OP, "the model has no quantizable layers (Linear, LSTM, GRU)"));
    }
    let done: Vec<&str> = qs.iter().filter(|(_, q)| q.is_quantized()).map(|(n, _)| n.as_str()).collect();
    if !done.is_empty() {
        return Err(Error::invalid(OP, format!("already quantized: {}", done.join(", "))));
    }
    for (i, (name, q)) in qs.iter().enumerate() {
        q.set_fake_quant(None);
        if let Err(e) = q.quantize(scheme) {
            qs[..i].iter().for_each(|(_, q)| q.dequantize());
            return Err(Error::invalid(OP, format!("layer {name}: {e}")));
        }
    }
    let (f32_bytes, int8_bytes) = qs.iter().map(|(_, q)| q.sizes()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    Ok(QuantizeReport { layers: qs.into_iter().map(|(n, _)| n).collect(), f32_bytes, int8_bytes })
}

/// Whether any layer of `m` runs quantized.
pub fn is_quantized(m: &dyn Module) -> bool {
    let mut qs = Vec::new();
    quantizables(m, "", &mut qs);
    qs.iter().any(|(_, q)| q.is_quantized())
}

/// The state of a (partly) quantized model: the float parameters and buffers, except the
/// weights replaced by int8 ones, which appear as `<path>.<weight>_int8` and
/// `<path>.<weight>_scale`.
///
/// # Errors
/// Only from reading the tensors.
pub fn quantized_state_dict(m: &dyn Module) -> Result<BTreeMap<String, Tensor>> {
    let mut state = m.state_dict();
    let mut qs = Vec::new();
    quantizables(m, "", &mut qs);
    for (prefix, q) in qs.iter().filter(|(_, q)| q.is_quantized()) {
        for r in q.replaced_params() {
            state.remove(&join(prefix, &r));
        }
        for (n, t) in q.quantized_state()? {
            state.insert(join(prefix, &n), t);
        }
    }
    Ok(state)
}

/// Loads a state written by [`quantized_state_dict`] into a model of the same architecture:
/// the layers with int8 weights in `state` become quantized, everything else loads as
/// `load_state_dict` does (strict: a missing or unexpected key is an error naming it).
///
/// # Errors
/// On missing or unexpected keys, shape or dtype mismatches, and scales that are not positive
/// and finite (a corrupted file); nothing is quantized then.
pub fn load_quantized_state_dict(m: &dyn Module, state: &BTreeMap<String, Tensor>) -> Result<Vec<String>> {
    const OP: &str = "load_quantized_state_dict";
    let mut qs = Vec::new();
    quantizables(m, "", &mut qs);
    let mut float = state.clone();
    let mut expected_missing = std::collections::BTreeSet::new();
    let mut todo = Vec::new();
    for (prefix, q) in &qs {
        let replaced = q.replaced_params();
        let marker = join(prefix, &format!("{}_int8", replaced.first().map_or("weight", String::as_str)));
        if !state.contains_key(&marker) {
            continue;
        }
        let mut local = BTreeMap::new();
        for r in &replaced {
            expected_missing.insert(join(prefix, r));
            for sfx in ["_int8", "_scale"] {
                let key = join(prefix, &format!("{r}{sfx}"));
                if let Some(t) = float.remove(&key) {
                    local.insert(format!("{r}{sfx}"), t);
                }
            }
        }
        todo.push((prefix.clone(), *q, local));
    }
    if todo.is_empty() {
        return Err(Error::invalid(OP, "the state has no int8 weights (it is not a quantized model's)"));
    }
    let keys = m.load_state_dict(&float, false)?;
    let missing: Vec<&String> = keys.missing_keys.iter().filter(|k| !expected_missing.contains(*k)).collect();
    if !missing.is_empty() || !keys.unexpected_keys.is_empty() {
        return Err(Error::invalid(
            OP,
            format!("missing keys {missing:?}, unexpected keys {:?}", keys.unexpected_keys),
        ));
    }
    for (i, (prefix, q, local)) in todo.iter().enumerate() {
        if let Err(e) = q.load_quantized(local) {
            todo[..i].iter().for_each(|(_, q, _)| q.dequantize());
            return Err(Error::invalid(OP, format!("layer {prefix}: {e}")));
        }
    }
    Ok(todo.into_iter().map(|(p, _, _)| p).collect())
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
