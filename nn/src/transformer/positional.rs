//! The sinusoidal positional encoding of "Attention is all you need", as in the PyTorch
//! tutorial's `PositionalEncoding`.

use crate::layers::Dropout;
use crate::module::{Forward, Module};
use stapes_autograd::Var;
use stapes_tensor::{Device, Error, Result, Tensor};

/// The `[max_len, d_model]` f32 table `pe[pos, 2i] = sin(pos / 10000^(2i/d))`,
/// `pe[pos, 2i+1] = cos(pos / 10000^(2i/d))`.
///
/// It is computed as the PyTorch tutorial computes it, in f32: `div = exp(2i * (-ln(10000) /
/// d))` and the angle `pos * div` are rounded to f32 (at position 4999 that rounding moves the
/// angle by up to ~2e-4, so a table computed in f64 would differ from PyTorch's by as much);
/// only `exp`, `sin` and `cos` are evaluated in f64 and rounded. An odd `d_model` (which the
/// tutorial's code rejects) gets one more sine column than cosine columns.
pub fn sinusoidal_table(max_len: usize, d_model: usize) -> Result<Tensor> {
    if d_model == 0 || max_len == 0 {
        return Err(Error::invalid(
            "sinusoidal_table",
            format!("max_len ({max_len}) and d_model ({d_model}) must be positive"),
        ));
    }
    let scale = (-(10000f64.ln()) / d_model as f64) as f32;
    let div: Vec<f32> = (0..d_model).step_by(2).map(|i| ((i as f32 * scale) as f64).exp() as f32).collect();
    let mut pe = vec![0f32; max_len * d_model];
    for (pos, row) in pe.chunks_mut(d_model).enumerate() {
        for (k, &dv) in div.iter().enumerate() {
            let angle = (pos as f32 * dv) as f64;
            row[2 * k] = angle.sin() as f32;
            if 2 * k + 1 < d_model {
                row[2 * k + 1] = angle.cos() as f32;
            }
        }
    }
    Tensor::from_vec(pe, [max_len, d_model], &Device::Cpu)
}

/// Adds the sinusoidal table to a sequence and applies dropout: the tutorial's
/// `PositionalEncoding(d_model, dropout=0.1, max_len=5000)`.
///
/// The table is NOT part of the `state_dict` (the tutorial registers it as a buffer `pe`; it
/// is a fixed function of `max_len` and `d_model`, and most checkpoints of speech recipes do
/// not carry it), so loading a checkpoint that has `pe` needs a non-strict load, or dropping
/// that key. The table is kept in f32 on the CPU and converted to the input's dtype and device
/// in each forward pass (as PyTorch's f32 buffer moved by `module.to(dtype)`).
pub struct PositionalEncoding {
    /// Model dim.
    pub d_model: usize,
    /// Longest sequence the table covers.
    pub max_len: usize,
    /// Inputs are `[B, T, D]` instead of the tutorial's `[T, B, D]`.
    pub batch_first: bool,
    /// Dropout after the addition.
    pub dropout: Dropout,
    table: Tensor,
}

impl PositionalEncoding {
    /// `PositionalEncoding(d_model, dropout, max_len=5000)`, sequence-first.
    pub fn new(d_model: usize, dropout: f64) -> Result<PositionalEncoding> {
        PositionalEncoding::with_max_len(d_model, dropout, 5000, false)
    }

    /// The full constructor.
    pub fn with_max_len(d_model: usize, dropout: f64, max_len: usize, batch_first: bool) -> Result<PositionalEncoding> {
        Ok(PositionalEncoding {
            d_model,
            max_len,
            batch_first,
            dropout: Dropout::new(dropout)?,
            table: sinusoidal_table(max_len, d_model)?,
        })
    }

    /// The `[max_len, d_model]` f32 table.
    pub fn table(&self) -> &Tensor {
        &self.table
    }
}

impl Module for PositionalEncoding {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("dropout".to_string(), &self.dropout as &dyn Module)]
    }
}

impl Forward for PositionalEncoding {
    /// `dropout(x + pe[:T])` for `x` of shape `[T, B, D]` (`[B, T, D]` when batch-first) or
    /// `[T, D]`.
    fn forward(&self, x: &Var) -> Result<Var> {
        const OP: &str = "PositionalEncoding::forward";
        let d = x.dims();
        if !(2..=3).contains(&d.len()) || d[d.len() - 1] != self.d_model {
            return Err(Error::shape(OP, format!("input {d:?} must be [T, B, {0}] or [T, {0}]", self.d_model)));
        }
        let t_dim = if self.batch_first && d.len() == 3 { 1 } else { 0 };
        let t = d[t_dim];
        if t > self.max_len {
            return Err(Error::invalid(OP, format!("sequence length {t} exceeds max_len {}", self.max_len)));
        }
        let pe = self.table.narrow(0, 0, t)?;
        let pe = match (d.len(), t_dim) {
            (3, 0) => pe.unsqueeze(1usize)?,
            (3, _) => pe.unsqueeze(0usize)?,
            _ => pe,
        };
        let pe = pe.to_dtype(x.tensor().dtype())?.to_device(x.tensor().device())?;
        self.dropout.forward(&x.add(&Var::constant(pe))?)
    }
}
