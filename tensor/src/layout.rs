//! Strided layouts: a shape, a stride per dim and an offset into the storage. Views (transpose,
//! permute, narrow, broadcast, squeeze, unsqueeze, reshape where possible) only compute a new
//! layout and share the storage.

use crate::shape::Shape;
use crate::{Error, Result};

/// How a tensor's elements are found in its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A contiguous row-major layout of `shape` starting at `offset`.
    pub fn contiguous_with_offset(shape: impl Into<Shape>, offset: usize) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset }
    }
    /// A contiguous row-major layout of `shape` at offset 0.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        Self::contiguous_with_offset(shape, 0)
    }
    /// Builds a layout from its parts.
    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        Layout { shape, strides, offset }
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The dims.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    /// The strides (in elements).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// Offset of the first element (in elements).
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Whether the layout is row-major contiguous (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }
    /// Largest storage index addressed plus one (0 for an empty tensor).
    pub fn storage_span(&self) -> usize {
        if self.shape.elem_count() == 0 {
            return 0;
        }
        self.offset + self.dims().iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }
    /// Swaps two dims.
    pub fn transpose(&self, d0: usize, d1: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.swap(d0, d1);
        strides.swap(d0, d1);
        Layout { shape: dims.into(), strides, offset: self.offset }
    }
    /// Reorders dims: new dim `i` is old dim `perm[i]` (`perm` already validated).
    pub fn permute(&self, perm: &[usize]) -> Layout {
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims()[p]).collect();
        let strides = perm.iter().map(|&p| self.strides[p]).collect();
        Layout { shape: dims.into(), strides, offset: self.offset }
    }
    /// Restricts `dim` to `start..start + len` (validated by the caller).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        dims[dim] = len;
        let offset = if len == 0 { self.offset } else { self.offset + start * self.strides[dim] };
        Layout { shape: dims.into(), strides: self.strides.clone(), offset }
    }
    /// A view of this layout broadcast to `target` (stride 0 on stretched dims).
    pub fn broadcast_as(&self, op: &'static str, target: &[usize]) -> Result<Layout> {
        let src = self.dims();
        if target.len() < src.len() {
            return Err(Error::shape(op, format!("cannot broadcast {src:?} to the lower-rank shape {target:?}")));
        }
        let pad = target.len() - src.len();
        let mut strides = vec![0; target.len()];
        for i in 0..target.len() {
            if i < pad {
                continue;
            }
            let (s, t) = (src[i - pad], target[i]);
            if s == t {
                strides[i] = self.strides[i - pad];
            } else if s == 1 {
                strides[i] = 0;
            } else {
                return Err(Error::BroadcastIncompatible {
                    op,
                    lhs: src.to_vec(),
                    rhs: target.to_vec(),
                    dim: i,
                    l: s,
                    r: t,
                });
            }
        }
        Ok(Layout { shape: target.to_vec().into(), strides, offset: self.offset })
    }
    /// Inserts a size-1 dim at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        let s = if dim < dims.len() { dims[dim] * strides[dim] } else { 1 };
        dims.insert(dim, 1);
        strides.insert(dim, s);
        Layout { shape: dims.into(), strides, offset: self.offset }
    }
    /// Removes the size-1 dim `dim`.
    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.remove(dim);
        strides.remove(dim);
        Layout { shape: dims.into(), strides, offset: self.offset }
    }
    /// The layout of a reshape to `target` without a copy, if the strides allow it (the
    /// algorithm of PyTorch's `computeStride`: each run of target dims must fit inside a run of
    /// source dims that is contiguous in memory).
    pub fn reshape_view(&self, target: &[usize]) -> Option<Layout> {
        let n = self.shape.elem_count();
        if self.is_contiguous() {
            return Some(Layout::contiguous_with_offset(target.to_vec(), self.offset));
        }
        if n == 0 {
            return None;
        }
        let old_d = self.dims();
        let old_s = &self.strides;
        let mut new_strides = vec![0usize; target.len()];
        let mut view_d = target.len() as isize - 1;
        let mut chunk_base_stride = *old_s.last().unwrap_or(&1);
        let mut tensor_numel = 1usize;
        let mut view_numel = 1usize;
        for tensor_d in (0..old_d.len()).rev() {
            tensor_numel *= old_d[tensor_d];
            if tensor_d == 0 || (old_d[tensor_d - 1] != 1 && old_s[tensor_d - 1] != tensor_numel * chunk_base_stride) {
                while view_d >= 0 && (view_numel < tensor_numel || target[view_d as usize] == 1) {
                    new_strides[view_d as usize] = view_numel * chunk_base_stride;
                    view_numel *= target[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if tensor_d > 0 {
                    chunk_base_stride = old_s[tensor_d - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if view_d != -1 {
            return None;
        }
        Some(Layout { shape: target.to_vec().into(), strides: new_strides, offset: self.offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity_and_views() {
        let l = Layout::contiguous([2, 3, 4]);
        assert!(l.is_contiguous());
        let t = l.transpose(0, 2);
        assert_eq!(t.dims(), &[4, 3, 2]);
        assert_eq!(t.strides(), &[1, 4, 12]);
        assert!(!t.is_contiguous());
        let n = l.narrow(1, 1, 2);
        assert_eq!(n.offset(), 4);
        assert_eq!(n.storage_span(), 4 + 12 + 4 + 4);
        let b = Layout::contiguous([3, 1]).broadcast_as("t", &[2, 3, 5]).unwrap();
        assert_eq!(b.strides(), &[0, 1, 0]);
        assert!(Layout::contiguous([3, 2]).broadcast_as("t", &[3, 4]).is_err());
    }

    #[test]
    fn reshape_view_of_non_contiguous() {
        // [2, 3, 4] narrowed on dim 0 stays viewable as [6, 4] ... and a transpose is not.
        let l = Layout::contiguous([4, 3, 4]).narrow(0, 1, 2);
        let v = l.reshape_view(&[6, 4]).unwrap();
        assert_eq!(v.strides(), &[4, 1]);
        let t = Layout::contiguous([3, 4]).transpose(0, 1);
        assert!(t.reshape_view(&[12]).is_none());
        // splitting a dim of a transposed view is fine
        let s = t.reshape_view(&[2, 2, 3]).unwrap();
        assert_eq!(s.strides(), &[2, 1, 4]);
    }
}
