//! [`Lengths`]: per-sample lengths given as PyTorch takes them, a tensor or a list.

use stapes_tensor::{DType, Device, Error, Result, Tensor};

/// Per-sample lengths (CTC's `input_lengths`/`target_lengths`): a slice, array or `Vec` of
/// `usize`, or a 1-D integer [`Tensor`] on any device, as PyTorch accepts a tensor or a list.
/// A tensor must hold non-negative integers (`i64`, `i8` or `u8`).
///
/// ```
/// use stapes_nn::Lengths;
/// use stapes_tensor::{Device, Tensor};
/// let t = Tensor::from_vec(vec![5i64, 3], [2], &Device::Cpu)?;
/// assert_eq!(t.to_lengths("example", "lengths")?, vec![5, 3]);
/// assert_eq!([5usize, 3].to_lengths("example", "lengths")?, vec![5, 3]);
/// # Ok::<(), stapes_tensor::Error>(())
/// ```
pub trait Lengths {
    /// The lengths as `usize`; `op` and `what` name the operation and the argument in errors.
    fn to_lengths(&self, op: &'static str, what: &str) -> Result<Vec<usize>>;
}

impl Lengths for [usize] {
    fn to_lengths(&self, _op: &'static str, _what: &str) -> Result<Vec<usize>> {
        Ok(self.to_vec())
    }
}

impl<const N: usize> Lengths for [usize; N] {
    fn to_lengths(&self, _op: &'static str, _what: &str) -> Result<Vec<usize>> {
        Ok(self.to_vec())
    }
}

impl Lengths for Vec<usize> {
    fn to_lengths(&self, _op: &'static str, _what: &str) -> Result<Vec<usize>> {
        Ok(self.clone())
    }
}

impl Lengths for Tensor {
    fn to_lengths(&self, op: &'static str, what: &str) -> Result<Vec<usize>> {
        if self.dims().len() != 1 {
            return Err(Error::shape(op, format!("{what} must be a 1-D tensor, got shape {:?}", self.dims())));
        }
        if !matches!(self.dtype(), DType::I64 | DType::I8 | DType::U8) {
            return Err(Error::invalid(op, format!("{what} must be an integer tensor, got {:?}", self.dtype())));
        }
        let values = self.to_device(&Device::Cpu)?.to_dtype(DType::I64)?.to_vec::<i64>()?;
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| usize::try_from(v).map_err(|_| Error::invalid(op, format!("{what}[{i}] = {v} is negative"))))
            .collect()
    }
}

impl<L: Lengths + ?Sized> Lengths for &L {
    fn to_lengths(&self, op: &'static str, what: &str) -> Result<Vec<usize>> {
        (**self).to_lengths(op, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_and_lists_agree_and_bad_tensors_are_errors() {
        let d = Device::Cpu;
        let want = vec![4usize, 0, 7];
        assert_eq!(want.to_lengths("t", "l").unwrap(), want);
        assert_eq!(want[..].to_lengths("t", "l").unwrap(), want);
        assert_eq!(Tensor::from_vec(vec![4i64, 0, 7], [3], &d).unwrap().to_lengths("t", "l").unwrap(), want);
        assert_eq!(Tensor::from_vec(vec![4u8, 0, 7], [3], &d).unwrap().to_lengths("t", "l").unwrap(), want);
        let e = Tensor::from_vec(vec![4i64, -1], [2], &d).unwrap().to_lengths("ctc_loss", "input_lengths");
        assert!(e.unwrap_err().to_string().contains("input_lengths[1] = -1"));
        let e = Tensor::from_vec(vec![4.0f32], [1], &d).unwrap().to_lengths("ctc_loss", "input_lengths");
        assert!(e.unwrap_err().to_string().contains("integer"));
        let e = Tensor::from_vec(vec![4i64, 1], [1, 2], &d).unwrap().to_lengths("ctc_loss", "target_lengths");
        assert!(e.unwrap_err().to_string().contains("1-D"));
    }
}
