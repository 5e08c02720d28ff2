//! `Gru`, as `torch.nn.GRU`.

use super::driver::CellKind;
use super::{RnnBase, RnnConfig};
use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Result};

/// A multi-layer GRU (`torch.nn.GRU`): per step `r = σ(W_ir x + b_ir + W_hr h + b_hr)`,
/// `z = σ(W_iz x + b_iz + W_hz h + b_hz)`, `n = tanh(W_in x + b_in + r·(W_hn h + b_hn))`,
/// `h' = (1 - z)·n + z·h`. Fused like [`super::Lstm`]. See the [module docs](super).
pub struct Gru {
    pub(crate) base: RnnBase,
    /// The dynamically quantized form the forward pass uses, once quantized.
    pub(crate) quantized: crate::quantized::QuantizedSlot<crate::quantized::QuantizedGru>,
}

/// The results of [`Gru::forward_with`].
pub struct GruOutput {
    /// `[T, B, D·H]` (`[B, T, D·H]` with `batch_first`), zero at padded positions.
    pub output: Var,
    /// `[L·D, B, H]`: the final hidden state of every layer and direction.
    pub h_n: Var,
}

impl Gru {
    /// A new f32 GRU on the CPU, initialised as PyTorch's (`U(±1/sqrt(hidden_size))`).
    pub fn new(cfg: RnnConfig) -> Result<Gru> {
        Gru::new_with(cfg, DType::F32, &Device::Cpu)
    }
    /// A new GRU with the given parameter dtype and device.
    pub fn new_with(cfg: RnnConfig, dtype: DType, device: &Device) -> Result<Gru> {
        Ok(Gru { base: RnnBase::new(CellKind::Gru, cfg, dtype, device)?, quantized: Default::default() })
    }
    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.base.cfg
    }
    /// Runs the GRU on `x` from `h0` (`[L·D, B, H]`; zeros when `None`); `lengths` as in
    /// [`super::Lstm::forward_with`]. ([`Forward::forward`] is the common case.)
    /// Once quantized, the int8 form runs (zero initial state only, no gradient).
    pub fn forward_with(&self, x: &Var, h0: Option<&Var>, lengths: Option<&[usize]>) -> Result<GruOutput> {
        if let Some(q) = self.quantized.get() {
            if h0.is_some() {
                return Err(stapes_tensor::Error::invalid(
                    "GRU",
                    "a quantized GRU starts from a zero state (an initial state was given)",
                ));
            }
            let (y, h) = q.forward_with(x.tensor(), lengths)?;
            return Ok(GruOutput { output: Var::constant(y), h_n: Var::constant(h) });
        }
        let out = self.base.forward(x, h0, None, lengths)?;
        Ok(GruOutput { output: out.output, h_n: out.h_n })
    }
}

/// `output, _ = gru(x)`: a zero initial state, every sequence `T` frames long, the last layer's
/// output alone; [`Gru::forward_with`] gives the state and lengths.
impl Forward for Gru {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(self.forward_with(x, None, None)?.output)
    }
}

impl Module for Gru {
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
