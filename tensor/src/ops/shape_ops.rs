//! Shape ops. Views share storage (reshape when the strides allow, transpose, permute, narrow,
//! squeeze, unsqueeze, expand); cat, stack and pad copy; split and chunk return views.

use super::compute::index_data;
use crate::layout::Layout;
use crate::shape::{broadcast_shapes, Dim, Shape};
#[allow(unused_imports)]
use crate::WithDType as _;
use crate::{Error, Result, Tensor, WithDType};
#[allow(unused_imports)]
use num_traits::{Float as _, One as _, Zero as _};
#[allow(unused_imports)]
use stapes_kernels::cpu::Float as _;

/// Padding modes of [`Tensor::pad`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Fill with a constant value.
    Constant,
    /// Mirror the input without repeating the edge (PyTorch's `reflect`).
    Reflect,
}

impl Tensor {
    /// A tensor with the same elements in `shape` (a view when the layout allows, else a copy).
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ElementCount {
                op: "reshape",
                src: self.dims().to_vec(),
                src_n: self.elem_count(),
                dst: shape.to_vec(),
                dst_n: shape.elem_count(),
            });
        }
        match self.layout().reshape_view(shape.dims()) {
            Some(l) => Ok(self.with_layout(l)),
            None => {
                let c = self.contiguous()?;
                Ok(c.with_layout(Layout::contiguous(shape)))
            }
        }
    }

    /// Reshape where one dim may be `-1` (inferred), as `torch.reshape`.
    pub fn reshape_infer(&self, shape: &[i64]) -> Result<Tensor> {
        let known: i64 = shape.iter().filter(|&&d| d != -1).product();
        let n_infer = shape.iter().filter(|&&d| d == -1).count();
        if n_infer > 1 || shape.iter().any(|&d| d < -1) {
            return Err(Error::invalid(
                "reshape",
                format!("invalid shape {shape:?}: at most one -1 and no other negative dim"),
            ));
        }
        let n = self.elem_count() as i64;
        let dims: Vec<usize> = if n_infer == 1 {
            if known == 0 || n % known != 0 {
                return Err(Error::invalid("reshape", format!("shape {shape:?} is invalid for input of size {n}")));
            }
            shape.iter().map(|&d| if d == -1 { (n / known) as usize } else { d as usize }).collect()
        } else {
            shape.iter().map(|&d| d as usize).collect()
        };
        self.reshape(dims)
    }

    /// Flattens all dims into one.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(self.elem_count())
    }

    /// Swaps two dims (a view).
    pub fn transpose<D0: Dim, D1: Dim>(&self, d0: D0, d1: D1) -> Result<Tensor> {
        let a = d0.to_index(self.rank(), "transpose")?;
        let b = d1.to_index(self.rank(), "transpose")?;
        Ok(self.with_layout(self.layout().transpose(a, b)))
    }

    /// The transpose of a 2-D tensor.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::shape("t", format!("expects a 2-D tensor, got shape {:?}", self.dims())));
        }
        self.transpose(0usize, 1usize)
    }

    /// Reorders dims: output dim `i` is input dim `perm[i]` (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank {
            return Err(Error::shape(
                "permute",
                format!(
                    "permutation {perm:?} has {} dims, the tensor has {rank} (shape {:?})",
                    perm.len(),
                    self.dims()
                ),
            ));
        }
        for &p in perm {
            if p >= rank || seen[p] {
                return Err(Error::invalid("permute", format!("{perm:?} is not a permutation of 0..{rank}")));
            }
            seen[p] = true;
        }
        Ok(self.with_layout(self.layout().permute(perm)))
    }

    /// The sub-tensor `start..start + len` along `dim` (a view).
    pub fn narrow<D: Dim>(&self, dim: D, start: usize, len: usize) -> Result<Tensor> {
        let d = dim.to_index(self.rank(), "narrow")?;
        let size = self.dims()[d];
        if start.checked_add(len).is_none_or(|e| e > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} out of bounds for dim {d} of size {size} (shape {:?})",
                    start + len,
                    self.dims()
                ),
            ));
        }
        Ok(self.with_layout(self.layout().narrow(d, start, len)))
    }

    /// Removes dim `dim`, which must have size 1 (a view).
    pub fn squeeze<D: Dim>(&self, dim: D) -> Result<Tensor> {
        let d = dim.to_index(self.rank(), "squeeze")?;
        if self.dims()[d] != 1 {
            // PyTorch leaves a dim of size != 1 alone
            return Ok(self.clone());
        }
        Ok(self.with_layout(self.layout().squeeze(d)))
    }

    /// Inserts a dim of size 1 at `dim` (`-1` appends), a view.
    pub fn unsqueeze<D: Dim>(&self, dim: D) -> Result<Tensor> {
        let d = dim.to_index_plus_one(self.rank(), "unsqueeze")?;
        Ok(self.with_layout(self.layout().unsqueeze(d)))
    }

    /// Broadcasts to `shape` (stride-0 view; PyTorch's `expand`).
    pub fn expand(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        Ok(self.with_layout(self.layout().broadcast_as("expand", shape.dims())?))
    }

    /// Alias of [`Tensor::expand`].
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        self.expand(shape)
    }

    /// Broadcasts both operands to their common shape.
    pub fn broadcast_pair(&self, other: &Tensor, op: &'static str) -> Result<(Tensor, Tensor)> {
        let s = broadcast_shapes(op, self.dims(), other.dims())?;
        Ok((self.expand(s.clone())?, other.expand(s)?))
    }

    /// Concatenates tensors along `dim`. All must share rank, dtype, device and every other dim.
    pub fn cat<D: Dim>(tensors: &[&Tensor], dim: D) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "expects at least one tensor"))?;
        let rank = first.rank();
        let d = dim.to_index(rank, "cat")?;
        for (i, t) in tensors.iter().enumerate().skip(1) {
            first.check_same(t, "cat", true)?;
            let ok =
                t.rank() == rank && t.dims().iter().zip(first.dims()).enumerate().all(|(k, (a, b))| k == d || a == b);
            if !ok {
                return Err(Error::shape("cat", format!(
                    "shape mismatch in cat: tensor 0 has shape {:?}, tensor {i} has shape {:?} (they must agree except in dim {d})",
                    first.dims(), t.dims()
                )));
            }
        }
        let mut out_shape = first.dims().to_vec();
        out_shape[d] = tensors.iter().map(|t| t.dims()[d]).sum();
        let outer: usize = out_shape[..d].iter().product();
        let inner: usize = out_shape[d + 1..].iter().product();
        if first.device().is_cuda() {
            return crate::cuda::index::cat(tensors, d, out_shape);
        }
        let row = out_shape[d] * inner;
        let storage = all_dispatch!(first.dtype(), |T| {
            let mut out: Vec<T> = crate::alloc::take::<T>(outer * row);
            let mut col = 0;
            for t in tensors {
                let w = t.dims()[d] * inner;
                let data = t.contiguous_slice::<T>()?;
                if w > 0 {
                    for o in 0..outer {
                        out[o * row + col..o * row + col + w].copy_from_slice(&data[o * w..(o + 1) * w]);
                    }
                }
                col += w;
            }
            T::into_storage(out)
        });
        Tensor::from_cpu_storage(storage, out_shape)
    }

    /// Stacks same-shaped tensors along a new dim `dim`.
    pub fn stack<D: Dim>(tensors: &[&Tensor], dim: D) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("stack", "expects at least one tensor"))?;
        let d = dim.to_index_plus_one(first.rank(), "stack")?;
        for (i, t) in tensors.iter().enumerate() {
            if t.dims() != first.dims() {
                return Err(Error::shape(
                    "stack",
                    format!(
                        "shape mismatch in stack: tensor 0 has shape {:?}, tensor {i} has shape {:?}",
                        first.dims(),
                        t.dims()
                    ),
                ));
            }
        }
        let us: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(d)).collect::<Result<_>>()?;
        Tensor::cat(&us.iter().collect::<Vec<_>>(), d)
    }

    /// Splits along `dim` into pieces of the given sizes (views; the sizes must sum to the dim).
    pub fn split<D: Dim>(&self, sizes: &[usize], dim: D) -> Result<Vec<Tensor>> {
        let d = dim.to_index(self.rank(), "split")?;
        let total: usize = sizes.iter().sum();
        if total != self.dims()[d] {
            return Err(Error::shape(
                "split",
                format!(
                    "sizes {sizes:?} sum to {total}, but dim {d} has size {} (shape {:?})",
                    self.dims()[d],
                    self.dims()
                ),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let t = self.narrow(d, start, s);
                start += s;
                t
            })
            .collect()
    }

    /// Splits along `dim` into `n` chunks of `ceil(size / n)` (the last may be smaller, and
    /// fewer than `n` chunks may result, as `torch.chunk`).
    pub fn chunk<D: Dim>(&self, n: usize, dim: D) -> Result<Vec<Tensor>> {
        let d = dim.to_index(self.rank(), "chunk")?;
        if n == 0 {
            return Err(Error::invalid("chunk", "number of chunks must be positive"));
        }
        let size = self.dims()[d];
        let step = size.div_ceil(n).max(1);
        let mut sizes = vec![];
        let mut s = 0;
        while s < size {
            sizes.push(step.min(size - s));
            s += step;
        }
        if sizes.is_empty() {
            sizes.push(0);
        }
        self.split(&sizes, d)
    }

    /// Pads the trailing dims. `pads` lists `(before, after)` pairs in PyTorch's `F.pad` order:
    /// the last dim first. `Reflect` needs each pad smaller than its dim.
    pub fn pad(&self, pads: &[usize], mode: PadMode, value: f64) -> Result<Tensor> {
        if !pads.len().is_multiple_of(2) || pads.len() / 2 > self.rank() {
            return Err(Error::invalid(
                "pad",
                format!("pads {pads:?} must be (before, after) pairs for at most {} dims", self.rank()),
            ));
        }
        if self.device().is_cuda() {
            // the checks of the loop below, in its order, then one kernel for all dims
            for (i, pair) in pads.chunks(2).enumerate() {
                let d = self.rank() - 1 - i;
                if mode == PadMode::Reflect && (pair[0], pair[1]) != (0, 0) {
                    self.check_reflect_pad(d, pair[0], pair[1])?;
                }
            }
            if pads.iter().all(|&p| p == 0) {
                return Ok(self.clone());
            }
            return crate::cuda::index::pad(self, pads, mode, value);
        }
        let mut x = self.clone();
        for (i, pair) in pads.chunks(2).enumerate() {
            let d = self.rank() - 1 - i;
            let (lo, hi) = (pair[0], pair[1]);
            if lo == 0 && hi == 0 {
                continue;
            }
            x = match mode {
                PadMode::Constant => {
                    let mut ls = x.dims().to_vec();
                    ls[d] = lo;
                    let mut hs = x.dims().to_vec();
                    hs[d] = hi;
                    let l = Tensor::full(value, ls, x.dtype(), x.device())?;
                    let h = Tensor::full(value, hs, x.dtype(), x.device())?;
                    Tensor::cat(&[&l, &x, &h], d)?
                }
                PadMode::Reflect => {
                    self.check_reflect_pad(d, lo, hi)?;
                    x.index_select(d, &reflect_indices(x.dims()[d], lo, hi)?)?
                }
            };
        }
        Ok(x)
    }
}

impl Tensor {
    /// A reflect pad `(lo, hi)` of dim `d` must be smaller than the dim.
    fn check_reflect_pad(&self, d: usize, lo: usize, hi: usize) -> Result<()> {
        let size = self.dims()[d];
        if lo >= size || hi >= size {
            return Err(Error::invalid(
                "pad",
                format!(
                    "reflect padding ({lo}, {hi}) must be smaller than dim {d} of size {size} (shape {:?})",
                    self.dims()
                ),
            ));
        }
        Ok(())
    }
}

/// Source indices of a reflect pad of a dim of `size` by `(lo, hi)`: `[lo, ..., 1, 0, 1, ...,
/// size-1, size-2, ..., size-1-hi]`.
pub fn reflect_indices(size: usize, lo: usize, hi: usize) -> Result<Tensor> {
    let mut idx: Vec<i64> = (1..=lo).rev().map(|i| i as i64).collect();
    idx.extend(0..size as i64);
    idx.extend((0..hi).map(|i| (size - 2 - i) as i64));
    let n = idx.len();
    Tensor::from_vec(idx, n, &crate::Device::Cpu)
}

impl Tensor {
    /// Selects entries along `dim` by the 1-D i64 `indices` (copies).
    pub fn index_select<D: Dim>(&self, dim: D, indices: &Tensor) -> Result<Tensor> {
        let d = dim.to_index(self.rank(), "index_select")?;
        self.check_same(indices, "index_select", false)?;
        if indices.rank() != 1 {
            return Err(Error::shape("index_select", format!("indices must be 1-D, got shape {:?}", indices.dims())));
        }
        if self.device().is_cuda() {
            return crate::cuda::index::index_select(self, d, indices);
        }
        let size = self.dims()[d];
        let idx = index_data("index_select", indices, d, size)?;
        let outer: usize = self.dims()[..d].iter().product();
        let inner: usize = self.dims()[d + 1..].iter().product();
        let mut out_shape = self.dims().to_vec();
        out_shape[d] = idx.len();
        let storage = all_dispatch!(self.dtype(), |T| {
            let src = self.contiguous_slice::<T>()?;
            let mut out: Vec<T> = crate::alloc::take::<T>(outer * idx.len() * inner);
            stapes_kernels::cpu::index::index_select(&src, outer, size, inner, &idx, &mut out);
            T::into_storage(out)
        });
        Tensor::from_cpu_storage(storage, out_shape)
    }
}
