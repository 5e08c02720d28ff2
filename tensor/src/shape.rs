//! Shapes, dimension arguments (negative dims count from the end, as in PyTorch) and
//! broadcasting rules.

use crate::{Error, Result};

/// The extent of each dimension of a tensor.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// The dims as a slice.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar).
    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }
    /// The dims as a vector.
    pub fn to_vec(&self) -> Vec<usize> {
        self.0.clone()
    }
    /// Row-major contiguous strides for this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        stapes_kernels::cpu::copy::contiguous_strides(&self.0)
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&Vec<usize>> for Shape {
    fn from(v: &Vec<usize>) -> Self {
        Shape(v.clone())
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(v: &[usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}
impl From<usize> for Shape {
    fn from(n: usize) -> Self {
        Shape(vec![n])
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}

/// A single dimension argument: `usize`, or a signed integer where `-1` is the last dim.
pub trait Dim: Copy + std::fmt::Debug {
    /// Resolves the dim for a tensor of `rank` dims.
    fn to_index(self, rank: usize, op: &'static str) -> Result<usize>;
    /// Resolves the dim for inserting a new dim (`unsqueeze`, `stack`): `rank + 1` slots.
    fn to_index_plus_one(self, rank: usize, op: &'static str) -> Result<usize> {
        self.to_index(rank + 1, op)
    }
}

impl Dim for usize {
    fn to_index(self, rank: usize, op: &'static str) -> Result<usize> {
        if self < rank {
            Ok(self)
        } else {
            Err(Error::DimOutOfRange { op, dim: self as i64, rank })
        }
    }
}

macro_rules! signed_dim {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            fn to_index(self, rank: usize, op: &'static str) -> Result<usize> {
                let d = self as i64;
                let r = rank as i64;
                let i = if d < 0 { d + r } else { d };
                if i >= 0 && i < r {
                    Ok(i as usize)
                } else {
                    Err(Error::DimOutOfRange { op, dim: d, rank })
                }
            }
        }
    )*};
}
signed_dim!(i32, i64, isize);

/// A set of dimension arguments (for reductions): one dim, a slice, an array or a vector.
pub trait Dims {
    /// Resolves to sorted, distinct dim indices; a repeated dim is an error.
    fn to_indexes(&self, rank: usize, op: &'static str) -> Result<Vec<usize>>;
}

fn finish_dims(mut v: Vec<usize>, op: &'static str) -> Result<Vec<usize>> {
    v.sort_unstable();
    for w in v.windows(2) {
        if w[0] == w[1] {
            return Err(Error::invalid(op, format!("dim {} appears more than once", w[0])));
        }
    }
    Ok(v)
}

macro_rules! dims_impls {
    ($($t:ty),*) => {$(
        impl Dims for $t {
            fn to_indexes(&self, rank: usize, op: &'static str) -> Result<Vec<usize>> {
                Ok(vec![self.to_index(rank, op)?])
            }
        }
        impl Dims for [$t] {
            fn to_indexes(&self, rank: usize, op: &'static str) -> Result<Vec<usize>> {
                finish_dims(self.iter().map(|d| d.to_index(rank, op)).collect::<Result<_>>()?, op)
            }
        }
        impl Dims for &[$t] {
            fn to_indexes(&self, rank: usize, op: &'static str) -> Result<Vec<usize>> {
                (**self).to_indexes(rank, op)
            }
        }
        impl<const N: usize> Dims for [$t; N] {
            fn to_indexes(&self, rank: usize, op: &'static str) -> Result<Vec<usize>> {
                self[..].to_indexes(rank, op)
            }
        }
        impl<const N: usize> Dims for &[$t; N] {
            fn to_indexes(&self, rank: usize, op: &'static str) -> Result<Vec<usize>> {
                self[..].to_indexes(rank, op)
            }
        }
        impl Dims for Vec<$t> {
            fn to_indexes(&self, rank: usize, op: &'static str) -> Result<Vec<usize>> {
                self[..].to_indexes(rank, op)
            }
        }
    )*};
}
dims_impls!(usize, i32, i64, isize);

/// The broadcast of two shapes (NumPy rules: align right, a 1 stretches).
pub fn broadcast_shapes(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let l = if i + lhs.len() >= rank { lhs[i + lhs.len() - rank] } else { 1 };
        let r = if i + rhs.len() >= rank { rhs[i + rhs.len() - rank] } else { 1 };
        out[i] = if l == r || r == 1 {
            l
        } else if l == 1 {
            r
        } else {
            return Err(Error::BroadcastIncompatible { op, lhs: lhs.to_vec(), rhs: rhs.to_vec(), dim: i, l, r });
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_dims_and_errors() {
        assert_eq!((-1i32).to_index(3, "t").unwrap(), 2);
        assert_eq!(0usize.to_index(3, "t").unwrap(), 0);
        let e = 3usize.to_index(3, "sum").unwrap_err();
        assert_eq!(e.to_string(), "sum: dim 3 out of range for a tensor of rank 3 (valid: -3..=2)");
        assert!([0i32, -3].to_indexes(3, "sum").is_err());
        assert_eq!([-1i32, 0].to_indexes(3, "sum").unwrap(), vec![0, 2]);
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_shapes("add", &[4, 1, 5], &[3, 1]).unwrap(), vec![4, 3, 5]);
        let e = broadcast_shapes("add", &[2, 3], &[4]).unwrap_err();
        assert!(e.to_string().contains("[2, 3] and [4]"), "{e}");
    }
}
