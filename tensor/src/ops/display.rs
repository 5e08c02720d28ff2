//! A readable `Display` for tensors, in the style of PyTorch's printing: nested brackets,
//! 4 decimals for floats, and `...` in place of the middle of dims longer than 6 once the
//! tensor has more than 1000 elements.

use crate::{DType, Tensor};
use std::fmt;

const THRESHOLD: usize = 1000;
const EDGE: usize = 3;

fn fmt_value(v: f64, dtype: DType) -> String {
    if dtype.is_float() {
        if v.is_nan() {
            "nan".into()
        } else if v.is_infinite() {
            if v > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            }
        } else if v != 0.0 && (v.abs() >= 1e8 || v.abs() < 1e-4) {
            format!("{v:.4e}")
        } else {
            format!("{v:.4}")
        }
    } else {
        format!("{}", v as i64)
    }
}

#[allow(clippy::too_many_arguments)]
fn write_dim(
    f: &mut String,
    vals: &[f64],
    dims: &[usize],
    strides: &[usize],
    base: usize,
    dtype: DType,
    summarize: bool,
    indent: usize,
) {
    if dims.is_empty() {
        f.push_str(&fmt_value(vals[base], dtype));
        return;
    }
    let n = dims[0];
    let idx: Vec<Option<usize>> = if summarize && n > 2 * EDGE {
        (0..EDGE).map(Some).chain(std::iter::once(None)).chain((n - EDGE..n).map(Some)).collect()
    } else {
        (0..n).map(Some).collect()
    };
    f.push('[');
    for (k, i) in idx.iter().enumerate() {
        if k > 0 {
            if dims.len() > 1 {
                f.push_str(",\n");
                f.push_str(&" ".repeat(indent + 1));
            } else {
                f.push_str(", ");
            }
        }
        match i {
            Some(i) => {
                write_dim(f, vals, &dims[1..], &strides[1..], base + i * strides[0], dtype, summarize, indent + 1)
            }
            None => f.push_str("..."),
        }
    }
    f.push(']');
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vals = match self.to_vec_f64() {
            Ok(v) => v,
            Err(e) => return write!(f, "<tensor: {e}>"),
        };
        let strides = self.shape().contiguous_strides();
        let mut s = String::from("tensor(");
        write_dim(&mut s, &vals, self.dims(), &strides, 0, self.dtype(), self.elem_count() > THRESHOLD, 7);
        write!(f, "{s}, shape={:?}, dtype={})", self.dims(), self.dtype())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Device, Tensor};

    #[test]
    fn small_and_truncated() {
        let t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 4.0], [2, 2], &Device::Cpu).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([[1.0000, 2.5000],\n        [-3.0000, 4.0000]], shape=[2, 2], dtype=float32)"
        );
        let big = Tensor::zeros([100, 100], crate::DType::F32, &Device::Cpu).unwrap();
        let s = big.to_string();
        assert!(s.contains("..."), "{s}");
        assert!(s.len() < 2000);
    }
}
