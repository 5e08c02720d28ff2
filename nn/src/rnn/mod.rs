//! Recurrent layers: [`Lstm`] and [`Gru`], as `torch.nn.LSTM` and `torch.nn.GRU`.
//!
//! Same options (`input_size`, `hidden_size`, `num_layers`, `bias`, `batch_first`, `dropout`
//! between layers in training, `bidirectional`), same parameter names and order
//! (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`, with `_reverse` for
//! the backward direction), same gate order (i, f, g, o and r, z, n) and initialisation
//! (`U(±1/sqrt(hidden_size))`), so a PyTorch `state_dict` loads as is.
//!
//! Variable-length batches: pass the per-sequence lengths and the layer behaves like PyTorch on
//! a packed sequence (`pack_padded_sequence(.., enforce_sorted=False)` then
//! `pad_packed_sequence(.., total_length=T)`): padded frames affect neither the outputs at
//! real positions nor the final states (the reverse direction starts at each sequence's own
//! last frame), and the outputs at padded positions are zero.
//!
//! Each layer runs as one fused autograd op (see `layer.rs` and `driver.rs`): one GEMM for the
//! input projection of all time steps, one small GEMM plus a fused gate kernel
//! (`stapes_kernels::cpu::rnn`) per step, backward through time by hand, and the weight
//! gradients as single GEMMs over all steps. The two directions of a bidirectional layer run
//! in parallel.
//!
//! ```
//! use stapes_autograd::Var;
//! use stapes_nn::rnn::{Lstm, RnnConfig};
//! use stapes_tensor::{DType, Device, Tensor};
//!
//! let lstm = Lstm::new(RnnConfig { num_layers: 2, bidirectional: true, ..RnnConfig::new(5, 7) })?;
//! let x = Var::constant(Tensor::randn([6, 3, 5], DType::F32, &Device::Cpu)?); // [T, B, I]
//! let out = lstm.forward_with(&x, None, Some(&[6, 2, 4]))?;
//! assert_eq!(out.output.dims(), &[6, 3, 14]);
//! assert_eq!(out.h_n.dims(), &[4, 3, 7]);
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

mod driver;
mod gru;
mod layer;
mod lstm;

pub use gru::{Gru, GruOutput};
pub use lstm::{Lstm, LstmOutput};

use crate::init::uniform;
use crate::layers::dropout;
use crate::module::{Param, TrainingFlag};
use driver::CellKind;
use layer::{layer_forward, DirVars};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result};

/// The options of a recurrent layer, named as PyTorch's constructor arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnConfig {
    /// Features per input frame.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Whether the layers have `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
    /// Input and output are `[B, T, F]` instead of `[T, B, F]` (default false). States are
    /// `[L·D, B, H]` either way, as in PyTorch.
    pub batch_first: bool,
    /// Dropout probability on the outputs of every layer but the last, in training (default 0).
    pub dropout: f64,
    /// Two directions per layer, outputs concatenated (default false).
    pub bidirectional: bool,
}

impl RnnConfig {
    /// One unidirectional layer with biases, time-major, no dropout.
    pub fn new(input_size: usize, hidden_size: usize) -> RnnConfig {
        RnnConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
        }
    }
    /// 2 when bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// One direction of one layer.
struct DirParams {
    w_ih: Param,
    w_hh: Param,
    b_ih: Option<Param>,
    b_hh: Option<Param>,
}

impl DirParams {
    fn vars(&self) -> DirVars {
        DirVars {
            w_ih: self.w_ih.var(),
            w_hh: self.w_hh.var(),
            b_ih: self.b_ih.as_ref().map(|p| p.var()),
            b_hh: self.b_hh.as_ref().map(|p| p.var()),
        }
    }
}

/// What LSTM and GRU share: the configuration, the parameters and the stacking of layers.
pub(crate) struct RnnBase {
    kind: CellKind,
    cfg: RnnConfig,
    /// Index `layer * D + direction`.
    params: Vec<DirParams>,
    training: TrainingFlag,
    /// Fake quantization for quantization-aware training ([`crate::qat::prepare_qat`]).
    pub(crate) fake_quant: crate::quantized::QuantizedSlot<crate::qat::FakeQuant>,
}

/// The results of [`RnnBase::forward`].
struct BaseOut {
    output: Var,
    h_n: Var,
    c_n: Option<Var>,
}

impl RnnBase {
    fn new(kind: CellKind, cfg: RnnConfig, dtype: DType, device: &Device) -> Result<RnnBase> {
        let op = kind.name();
        if cfg.hidden_size == 0 || cfg.num_layers == 0 {
            return Err(Error::invalid(
                op,
                format!("hidden_size and num_layers must be positive, got {} and {}", cfg.hidden_size, cfg.num_layers),
            ));
        }
        if !(0.0..=1.0).contains(&cfg.dropout) {
            return Err(Error::invalid(
                op,
                format!("dropout should be a number in range [0, 1] representing the probability of an element being zeroed, got {}", cfg.dropout),
            ));
        }
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op, dtype, msg: "recurrent layers hold floating point" });
        }
        let (h, g) = (cfg.hidden_size, kind.gates() * cfg.hidden_size);
        let bound = 1.0 / (h as f64).sqrt();
        let mut params = Vec::new();
        for layer in 0..cfg.num_layers {
            let inp = if layer == 0 { cfg.input_size } else { h * cfg.num_directions() };
            for _ in 0..cfg.num_directions() {
                let u = |shape: Vec<usize>| uniform(shape, -bound, bound, dtype, device).map(Param::new);
                let w_ih = u(vec![g, inp])?;
                let w_hh = u(vec![g, h])?;
                let (b_ih, b_hh) = if cfg.bias { (Some(u(vec![g])?), Some(u(vec![g])?)) } else { (None, None) };
                params.push(DirParams { w_ih, w_hh, b_ih, b_hh });
            }
        }
        Ok(RnnBase { kind, cfg, params, training: TrainingFlag::default(), fake_quant: Default::default() })
    }

    /// Parameters with PyTorch's names, in PyTorch's order.
    fn local_params(&self) -> Vec<(String, Param)> {
        let nd = self.cfg.num_directions();
        let mut v = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let suffix = if i % nd == 1 { "_reverse" } else { "" };
            let k = i / nd;
            v.push((format!("weight_ih_l{k}{suffix}"), p.w_ih.clone()));
            v.push((format!("weight_hh_l{k}{suffix}"), p.w_hh.clone()));
            if let Some(b) = &p.b_ih {
                v.push((format!("bias_ih_l{k}{suffix}"), b.clone()));
            }
            if let Some(b) = &p.b_hh {
                v.push((format!("bias_hh_l{k}{suffix}"), b.clone()));
            }
        }
        v
    }

    /// Checks an initial state against `[L·D, B, H]` and the input dtype.
    fn check_state(&self, what: &str, s: &Var, batch: usize, dtype: DType) -> Result<()> {
        let op = self.kind.name();
        let want = [self.cfg.num_layers * self.cfg.num_directions(), batch, self.cfg.hidden_size];
        if s.dims() != want {
            return Err(Error::shape(
                op,
                format!(
                    "expected {what} of shape {want:?} ([num_layers * num_directions, batch, hidden_size]), got {:?}",
                    s.dims()
                ),
            ));
        }
        if s.tensor().dtype() != dtype {
            return Err(Error::DTypeMismatch { op, lhs: dtype, rhs: s.tensor().dtype() });
        }
        Ok(())
    }

    fn forward(&self, x: &Var, h0: Option<&Var>, c0: Option<&Var>, lengths: Option<&[usize]>) -> Result<BaseOut> {
        let op = self.kind.name();
        let cfg = &self.cfg;
        if x.dims().len() != 3 {
            let layout = if cfg.batch_first { "[B, T, input_size] (batch_first)" } else { "[T, B, input_size]" };
            return Err(Error::shape(op, format!("expected a 3-D input {layout}, got shape {:?}", x.dims())));
        }
        let dtype = x.tensor().dtype();
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::UnsupportedDType { op, dtype, msg: "recurrent layers compute in f32 or f64" });
        }
        let pdt = self.params[0].w_ih.dtype();
        if pdt != dtype {
            return Err(Error::DTypeMismatch { op, lhs: pdt, rhs: dtype });
        }
        if x.dims()[2] != cfg.input_size {
            return Err(Error::shape(
                op,
                format!(
                    "input.size(-1) must be equal to input_size: expected {}, got {} (input shape {:?})",
                    cfg.input_size,
                    x.dims()[2],
                    x.dims()
                ),
            ));
        }
        let xt = if cfg.batch_first { x.transpose(0usize, 1usize)? } else { x.clone() };
        let (steps, batch) = (xt.dims()[0], xt.dims()[1]);
        if steps == 0 || batch == 0 {
            return Err(Error::shape(op, format!("expected a non-empty input, got shape {:?}", x.dims())));
        }
        let lengths: Vec<usize> = match lengths {
            None => vec![steps; batch],
            Some(l) => {
                if l.len() != batch {
                    return Err(Error::shape(
                        op,
                        format!("expected {batch} lengths (one per sequence of the batch), got {}", l.len()),
                    ));
                }
                if let Some((b, &bad)) = l.iter().enumerate().find(|(_, &v)| v == 0 || v > steps) {
                    return Err(Error::invalid(
                        op,
                        format!("lengths must be in 1..={steps} (the padded length), got lengths[{b}] = {bad}"),
                    ));
                }
                l.to_vec()
            }
        };
        if let Some(h) = h0 {
            self.check_state("h0", h, batch, dtype)?;
        }
        if let Some(c) = c0 {
            self.check_state("c0", c, batch, dtype)?;
        }
        let nd = cfg.num_directions();
        let mut inp = xt;
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for layer in 0..cfg.num_layers {
            let h0l = h0.map(|h| h.narrow(0usize, layer * nd, nd)).transpose()?;
            let c0l = c0.map(|c| c.narrow(0usize, layer * nd, nd)).transpose()?;
            let mut dirs: Vec<DirVars> = self.params[layer * nd..(layer + 1) * nd].iter().map(|p| p.vars()).collect();
            if let Some(fq) = self.fake_quant.get() {
                for d in &mut dirs {
                    d.w_ih = crate::qat::fake_quantize_weight(&d.w_ih, fq.scheme)?;
                    d.w_hh = crate::qat::fake_quantize_weight(&d.w_hh, fq.scheme)?;
                }
                if fq.activations {
                    inp = crate::qat::fake_quantize_activation(&inp)?;
                }
            }
            let out = layer_forward(self.kind, &inp, h0l.as_ref(), c0l.as_ref(), &dirs, &lengths, cfg.hidden_size)?;
            hs.push(out.h_n);
            cs.extend(out.c_n);
            inp = out.y;
            if layer + 1 < cfg.num_layers && cfg.dropout > 0.0 && self.training.get() {
                inp = dropout(&inp, cfg.dropout, true)?;
            }
        }
        let cat = |v: &Vec<Var>| -> Result<Var> {
            if v.len() == 1 {
                Ok(v[0].clone())
            } else {
                Var::cat(&v.iter().collect::<Vec<_>>(), 0usize)
            }
        };
        let h_n = cat(&hs)?;
        let c_n = if cs.is_empty() { None } else { Some(cat(&cs)?) };
        let output = if cfg.batch_first { inp.transpose(0usize, 1usize)? } else { inp };
        Ok(BaseOut { output, h_n, c_n })
    }
}

#[cfg(test)]
mod tests;
