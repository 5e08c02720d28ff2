//! `Lstm`, as `torch.nn.LSTM`.

use super::driver::CellKind;
use super::{RnnBase, RnnConfig};
use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result};

/// A multi-layer LSTM (`torch.nn.LSTM`): per step
/// `i, f, g, o = σ, σ, tanh, σ (W_ih x + b_ih + W_hh h + b_hh)`, `c' = f·c + i·g`,
/// `h' = o·tanh(c')`. See the [module docs](super) for options and variable lengths.
pub struct Lstm {
    pub(crate) base: RnnBase,
    /// The dynamically quantized form the forward pass uses, once quantized.
    pub(crate) quantized: crate::quantized::QuantizedSlot<crate::quantized::QuantizedLstm>,
}

/// The results of [`Lstm::forward_with`].
pub struct LstmOutput {
    /// `[T, B, D·H]` (`[B, T, D·H]` with `batch_first`): the last layer's hidden state at every
    /// step, zero at padded positions.
    pub output: Var,
    /// `[L·D, B, H]`: the final hidden state of every layer and direction.
    pub h_n: Var,
    /// `[L·D, B, H]`: the final cell state of every layer and direction.
    pub c_n: Var,
}

impl Lstm {
    /// A new f32 LSTM on the CPU, initialised as PyTorch's (`U(±1/sqrt(hidden_size))`).
    pub fn new(cfg: RnnConfig) -> Result<Lstm> {
        Lstm::new_with(cfg, DType::F32, &Device::Cpu)
    }
    /// A new LSTM with the given parameter dtype and device.
    pub fn new_with(cfg: RnnConfig, dtype: DType, device: &Device) -> Result<Lstm> {
        Ok(Lstm { base: RnnBase::new(CellKind::Lstm, cfg, dtype, device)?, quantized: Default::default() })
    }
    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.base.cfg
    }
    /// Runs the LSTM on `x` (`[T, B, input_size]`, or `[B, T, input_size]` with `batch_first`)
    /// from the initial states `(h0, c0)` (`[L·D, B, H]` each; zeros when `None`).
    /// `lengths[b]` (each in `1..=T`) is the number of real frames of sequence `b`; `None`
    /// means all `T`. Errors for a wrong input rank or size, bad lengths, wrong state shapes
    /// and dtype mismatches. ([`Forward::forward`] is the common case: zero initial states,
    /// full lengths, the output alone.)
    /// Once quantized, the int8 form runs (zero initial states only, no gradient).
    pub fn forward_with(&self, x: &Var, state: Option<(&Var, &Var)>, lengths: Option<&[usize]>) -> Result<LstmOutput> {
        if let Some(q) = self.quantized.get() {
            if state.is_some() {
                return Err(Error::invalid(
                    "LSTM",
                    "a quantized LSTM starts from zero states (initial states were given)",
                ));
            }
            let (y, h, c) = q.forward_with(x.tensor(), lengths)?;
            return Ok(LstmOutput { output: Var::constant(y), h_n: Var::constant(h), c_n: Var::constant(c) });
        }
        let (h0, c0) = match state {
            Some((h, c)) => (Some(h), Some(c)),
            None => (None, None),
        };
        let out = self.base.forward(x, h0, c0, lengths)?;
        let c_n = out.c_n.ok_or_else(|| Error::invalid("LSTM", "internal: the layers returned no cell state"))?;
        Ok(LstmOutput { output: out.output, h_n: out.h_n, c_n })
    }
}

/// `output, _ = lstm(x)`: zero initial states, every sequence `T` frames long, the last
/// layer's output alone (`[T, B, D·H]`, or `[B, T, D·H]` with `batch_first`). So an `Lstm` can
/// sit in a [`crate::layers::Sequential`]; [`Lstm::forward_with`] gives states and lengths.
impl Forward for Lstm {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(self.forward_with(x, None, None)?.output)
    }
}

impl Module for Lstm {
    fn local_params(&self) -> Vec<(String, Param)> {
        self.base.local_params()
    }
    fn set_local_training(&self, training: bool) {
        self.base.training.set(training)
    }
    fn as_quantizable(&self) -> Option<&dyn crate::quantized::Quantizable> {
        Some(self)
    }
}
