//! Gather, scatter_add, index_add and embedding lookup. Indices are i64 and validated before
//! any kernel runs: an out-of-range index is an `IndexOutOfRange` error naming it.

use super::compute::{float_data, from_compute, index_data};
use crate::shape::Dim;
#[allow(unused_imports)]
use crate::WithDType as _;
use crate::{Error, Result, Tensor};
#[allow(unused_imports)]
use num_traits::{Float as _, One as _, Zero as _};
use stapes_kernels::cpu::index as k;
#[allow(unused_imports)]
use stapes_kernels::cpu::Float as _;

impl Tensor {
    fn check_index_shape(&self, op: &'static str, d: usize, index: &Tensor, other: Option<&Tensor>) -> Result<()> {
        if index.rank() != self.rank() {
            return Err(Error::shape(
                op,
                format!(
                    "index has rank {} (shape {:?}), the tensor has rank {} (shape {:?})",
                    index.rank(),
                    index.dims(),
                    self.rank(),
                    self.dims()
                ),
            ));
        }
        for (i, (&a, &b)) in index.dims().iter().zip(self.dims()).enumerate() {
            if i != d && a > b {
                return Err(Error::shape(
                    op,
                    format!("index shape {:?} exceeds the tensor shape {:?} in dim {i}", index.dims(), self.dims()),
                ));
            }
        }
        if let Some(src) = other {
            if src.rank() != index.rank() || index.dims().iter().zip(src.dims()).any(|(a, b)| a > b) {
                return Err(Error::shape(
                    op,
                    format!("index shape {:?} exceeds the src shape {:?}", index.dims(), src.dims()),
                ));
            }
        }
        Ok(())
    }

    /// `out[p] = self[p with p[dim] = index[p]]`; the output has the index's shape.
    pub fn gather<D: Dim>(&self, dim: D, index: &Tensor) -> Result<Tensor> {
        let d = dim.to_index(self.rank(), "gather")?;
        self.check_same(index, "gather", false)?;
        self.check_index_shape("gather", d, index, None)?;
        if self.device().is_cuda() {
            return crate::cuda::index::gather(self, d, index);
        }
        let idx = index_data("gather", index, d, self.dims()[d])?;
        let storage = all_dispatch!(self.dtype(), |T| {
            let src = self.contiguous_slice::<T>()?;
            let mut out: Vec<T> = crate::alloc::take::<T>(idx.len());
            k::gather(&src, self.dims(), d, &idx, index.dims(), &mut out);
            T::into_storage(out)
        });
        Tensor::from_cpu_storage(storage, index.shape())
    }

    /// A copy of `self` with `src[p]` added at `p with p[dim] = index[p]` for every position `p`
    /// of `index` (duplicates accumulate).
    pub fn scatter_add<D: Dim>(&self, dim: D, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let d = dim.to_index(self.rank(), "scatter_add")?;
        self.check_same(src, "scatter_add", true)?;
        self.check_same(index, "scatter_add", false)?;
        self.check_index_shape("scatter_add", d, index, Some(src))?;
        if self.device().is_cuda() {
            return crate::cuda::index::scatter_add(self, d, index, src);
        }
        let idx = index_data("scatter_add", index, d, self.dims()[d])?;
        float_dispatch!(self.dtype(), "scatter_add", |T| {
            let mut out = float_data::<T>(self)?.into_owned();
            let s = float_data::<T>(src)?;
            k::scatter_add(&mut out, self.dims(), d, &idx, index.dims(), &s, src.dims());
            from_compute(out, self.shape(), self.dtype())
        })
    }

    /// A copy of `self` with `src`'s slices added at the 1-D `indices` along `dim`
    /// (`torch.index_add`; the backward of `index_select`).
    pub fn index_add<D: Dim>(&self, dim: D, indices: &Tensor, src: &Tensor) -> Result<Tensor> {
        let d = dim.to_index(self.rank(), "index_add")?;
        self.check_same(src, "index_add", true)?;
        if indices.rank() != 1 {
            return Err(Error::shape("index_add", format!("indices must be 1-D, got shape {:?}", indices.dims())));
        }
        let mut want = self.dims().to_vec();
        want[d] = indices.elem_count();
        if src.dims() != want.as_slice() {
            return Err(Error::shape("index_add", format!("src has shape {:?}, expected {want:?}", src.dims())));
        }
        if self.device().is_cuda() {
            return crate::cuda::index::index_add(self, d, indices, src);
        }
        let size = self.dims()[d];
        let idx = index_data("index_add", indices, d, size)?;
        let outer: usize = self.dims()[..d].iter().product();
        let inner: usize = self.dims()[d + 1..].iter().product();
        float_dispatch!(self.dtype(), "index_add", |T| {
            let mut out = float_data::<T>(self)?.into_owned();
            let s = float_data::<T>(src)?;
            k::index_add(&mut out, outer, size, inner, &idx, &s);
            from_compute(out, self.shape(), self.dtype())
        })
    }

    /// Embedding lookup: `self` is the `[num_embeddings, dim]` weight, `ids` any-shaped i64;
    /// the result has shape `ids.shape + [dim]` (`F.embedding`).
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::shape(
                "embedding",
                format!("weight must be 2-D [num_embeddings, dim], got shape {:?}", self.dims()),
            ));
        }
        let flat = ids.flatten_all()?;
        let rows = self.index_select(0usize, &flat).map_err(|e| match e {
            Error::IndexOutOfRange { index, size, .. } => {
                Error::IndexOutOfRange { op: "embedding", index, dim: 0, size }
            }
            e => e,
        })?;
        let mut shape = ids.dims().to_vec();
        shape.push(self.dims()[1]);
        rows.reshape(shape)
    }
}
