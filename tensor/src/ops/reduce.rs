//! Reductions over chosen dims (with `keepdim`), argmax/argmin, and `sum_to_shape` (the
//! reduction of a broadcast gradient back to an operand's shape).
//!
//! Layout strategy: a reduction over a block of adjacent dims of a contiguous tensor runs
//! directly on it (`[a, r, b]`, either the last-dim kernel when `b == 1` or the middle-dim
//! kernel for sums); any other case permutes the reduced dims last and copies once.

use super::compute::{float_data, from_compute};
use crate::shape::{Dim, Dims};
#[allow(unused_imports)]
use crate::WithDType as _;
use crate::{Error, Result, Tensor};
#[allow(unused_imports)]
use num_traits::{Float as _, One as _, Zero as _};
pub use stapes_kernels::cpu::reduce::ReduceOp;
use stapes_kernels::cpu::reduce::{arg_reduce_last, reduce_last, sum_mid};
#[allow(unused_imports)]
use stapes_kernels::cpu::Float as _;
use stapes_kernels::cuda::reduce_nd::RowReduce;

fn op_name(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Mean => "mean",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
        ReduceOp::LogSumExp => "logsumexp",
        ReduceOp::Var { .. } => "var",
    }
}

impl Tensor {
    /// Shape after reducing `dims` (kept as size 1 with `keepdim`).
    fn reduced_shape(&self, dims: &[usize], keepdim: bool) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.rank());
        for (i, &d) in self.dims().iter().enumerate() {
            if dims.contains(&i) {
                if keepdim {
                    out.push(1);
                }
            } else {
                out.push(d);
            }
        }
        out
    }

    /// Reduces over the resolved, sorted `dims` with `op`.
    pub fn reduce(&self, dims: &[usize], keepdim: bool, op: ReduceOp) -> Result<Tensor> {
        self.reduce_impl(dims, keepdim, op, false)
    }

    /// [`Tensor::reduce`]; `sqrt` (with `ReduceOp::Var`) asks for the standard deviation, which
    /// the CUDA kernels compute in the same pass.
    fn reduce_impl(&self, dims: &[usize], keepdim: bool, op: ReduceOp, sqrt: bool) -> Result<Tensor> {
        let name = op_name(op);
        let rank = self.rank();
        let dims: Vec<usize> = if dims.is_empty() { (0..rank).collect() } else { dims.to_vec() };
        if let Some(&d) = dims.iter().find(|&&d| d >= rank.max(1)) {
            return Err(Error::DimOutOfRange { op: name, dim: d as i64, rank });
        }
        let out_shape = self.reduced_shape(&dims, keepdim);
        let dims: Vec<usize> = dims.into_iter().filter(|&d| d < rank).collect();
        let r: usize = dims.iter().map(|&d| self.dims()[d]).product();
        if r == 0 && matches!(op, ReduceOp::Max | ReduceOp::Min) {
            return Err(Error::invalid(name, format!("cannot reduce over an empty dim (shape {:?})", self.dims())));
        }
        if self.device().is_cuda() {
            let row_op = match op {
                ReduceOp::Sum => RowReduce::Sum,
                ReduceOp::Mean => RowReduce::Mean,
                ReduceOp::Max => RowReduce::Max,
                ReduceOp::Min => RowReduce::Min,
                ReduceOp::LogSumExp => RowReduce::LogSumExp,
                ReduceOp::Var { correction } if sqrt => RowReduce::Std { correction },
                ReduceOp::Var { correction } => RowReduce::Var { correction },
            };
            return crate::cuda::reduce::reduce(self, &dims, out_shape, row_op, name);
        }
        if sqrt {
            return self.reduce_impl(&dims, keepdim, op, false)?.sqrt();
        }
        let total = self.elem_count();
        let rows = total.checked_div(r).unwrap_or_else(|| out_shape.iter().product());
        float_dispatch!(self.dtype(), name, |T| {
            let block = dims.windows(2).all(|w| w[1] == w[0] + 1);
            let mut out = crate::alloc::take::<T>(rows);
            if block && !dims.is_empty() {
                let first = dims[0];
                let last = *dims.last().unwrap();
                let a: usize = self.dims()[..first].iter().product();
                let b: usize = self.dims()[last + 1..].iter().product();
                if b == 1 {
                    let x = float_data::<T>(self)?;
                    reduce_last(&x, a, r, op, &mut out);
                    return from_compute(out, out_shape, self.dtype());
                }
                if matches!(op, ReduceOp::Sum | ReduceOp::Mean) {
                    let x = float_data::<T>(self)?;
                    sum_mid(&x, a, r, b, &mut out);
                    if op == ReduceOp::Mean {
                        let inv = T::from_f64_lossy(1.0 / r as f64);
                        out.iter_mut().for_each(|v| *v *= inv);
                    }
                    return from_compute(out, out_shape, self.dtype());
                }
            }
            let mut perm: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
            perm.extend(&dims);
            let p = self.permute(&perm)?;
            let x = float_data::<T>(&p)?;
            reduce_last(&x, rows, r, op, &mut out);
            from_compute(out, out_shape, self.dtype())
        })
    }

    /// Sum over `dims` (PyTorch `sum(dim, keepdim)`).
    pub fn sum<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Tensor> {
        let d = dims.to_indexes(self.rank(), "sum")?;
        self.reduce(&d, keepdim, ReduceOp::Sum)
    }
    /// Mean over `dims`.
    pub fn mean<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Tensor> {
        let d = dims.to_indexes(self.rank(), "mean")?;
        self.reduce(&d, keepdim, ReduceOp::Mean)
    }
    /// Maximum over `dims` (values only; `torch.amax`).
    pub fn max<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Tensor> {
        let d = dims.to_indexes(self.rank(), "max")?;
        self.reduce(&d, keepdim, ReduceOp::Max)
    }
    /// Minimum over `dims` (values only; `torch.amin`).
    pub fn min<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Tensor> {
        let d = dims.to_indexes(self.rank(), "min")?;
        self.reduce(&d, keepdim, ReduceOp::Min)
    }
    /// `log Σ exp(x)` over `dims`, numerically stable.
    pub fn logsumexp<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Tensor> {
        let d = dims.to_indexes(self.rank(), "logsumexp")?;
        self.reduce(&d, keepdim, ReduceOp::LogSumExp)
    }
    /// Variance over `dims` with `correction` (1: unbiased, PyTorch's default).
    pub fn var<D: Dims>(&self, dims: D, correction: usize, keepdim: bool) -> Result<Tensor> {
        let d = dims.to_indexes(self.rank(), "var")?;
        self.reduce(&d, keepdim, ReduceOp::Var { correction })
    }
    /// Standard deviation over `dims` with `correction`.
    pub fn std<D: Dims>(&self, dims: D, correction: usize, keepdim: bool) -> Result<Tensor> {
        if self.device().is_cuda() {
            let d = dims.to_indexes(self.rank(), "var")?;
            return self.reduce_impl(&d, keepdim, ReduceOp::Var { correction }, true);
        }
        self.var(dims, correction, keepdim)?.sqrt()
    }
    /// Sum of all elements (a 0-dim tensor).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.reduce(&[], false, ReduceOp::Sum)
    }
    /// Mean of all elements (a 0-dim tensor).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.reduce(&[], false, ReduceOp::Mean)
    }

    fn arg_reduce<D: Dim>(&self, dim: D, keepdim: bool, want_max: bool, name: &'static str) -> Result<Tensor> {
        let d = dim.to_index(self.rank().max(1), name)?;
        let x = if self.rank() == 0 { self.reshape([1])? } else { self.clone() };
        let r = x.dims()[d];
        if r == 0 {
            return Err(Error::invalid(name, format!("cannot reduce over an empty dim (shape {:?})", x.dims())));
        }
        let out_shape = x.reduced_shape(&[d], keepdim);
        if x.device().is_cuda() {
            let out_shape = if self.rank() == 0 { vec![] } else { out_shape };
            return crate::cuda::reduce::arg_reduce(&x, d, out_shape, want_max, name);
        }
        let rows = x.elem_count() / r;
        let mut out = crate::alloc::take::<i64>(rows);
        float_dispatch!(x.dtype(), name, |T| {
            let mut perm: Vec<usize> = (0..x.rank()).filter(|&i| i != d).collect();
            perm.push(d);
            let p = x.permute(&perm)?;
            let data = float_data::<T>(&p)?;
            arg_reduce_last(&data, rows, r, want_max, &mut out);
        });
        let out_shape = if self.rank() == 0 { vec![] } else { out_shape };
        Tensor::from_vec(out, out_shape, self.device())
    }

    /// Index of the maximum along `dim` (i64; first on ties, NaN counts as maximal).
    pub fn argmax<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(dim, keepdim, true, "argmax")
    }
    /// Index of the minimum along `dim` (i64).
    pub fn argmin<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(dim, keepdim, false, "argmin")
    }

    /// Sums a broadcast result back to `shape` (which must broadcast to this tensor's shape):
    /// the gradient of a broadcast.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.dims() == shape {
            return Ok(self.clone());
        }
        let rank = self.rank();
        if shape.len() > rank {
            return Err(Error::shape(
                "sum_to_shape",
                format!("cannot sum {:?} to the higher-rank {shape:?}", self.dims()),
            ));
        }
        let lead = rank - shape.len();
        let mut dims: Vec<usize> = (0..lead).collect();
        for (i, &s) in shape.iter().enumerate() {
            let d = self.dims()[lead + i];
            if s == 1 && d != 1 {
                dims.push(lead + i);
            } else if s != d {
                return Err(Error::shape("sum_to_shape", format!("{shape:?} does not broadcast to {:?}", self.dims())));
            }
        }
        if dims.is_empty() {
            return self.reshape(shape);
        }
        self.reduce(&dims, true, ReduceOp::Sum)?.reshape(shape)
    }
}
