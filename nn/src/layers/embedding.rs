//! `Embedding`: a lookup table of `num_embeddings` vectors, with PyTorch's `padding_idx` (a
//! row that starts at zero and never receives a gradient).

use crate::init::normal;
use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

/// Resolves PyTorch's `padding_idx` (negative counts from the end) against `n` rows.
fn resolve_padding_idx(op: &'static str, padding_idx: Option<i64>, n: usize) -> Result<Option<usize>> {
    match padding_idx {
        None => Ok(None),
        Some(p) if p >= 0 && (p as u64) < n as u64 => Ok(Some(p as usize)),
        Some(p) if p < 0 && p.unsigned_abs() <= n as u64 => Ok(Some(n - p.unsigned_abs() as usize)),
        Some(p) => Err(Error::invalid(op, format!("padding_idx {p} must be within num_embeddings ({n})"))),
    }
}

/// Functional embedding lookup (`F.embedding`): rows of `weight [V, D]` picked by the i64
/// `ids` of any shape, giving `[*ids, D]`. The gradient of each picked row is summed into
/// that row of the weight's gradient, except for `padding_idx`, whose row gets none.
pub fn embedding(ids: &Tensor, weight: &Var, padding_idx: Option<usize>) -> Result<Var> {
    const OP: &str = "embedding";
    if ids.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType { op: OP, dtype: ids.dtype(), msg: "indices must be i64" });
    }
    let pad = match padding_idx {
        None => return weight.embedding(ids),
        Some(p) => p,
    };
    let w = weight.tensor();
    if w.rank() != 2 || pad >= w.dims()[0] {
        return Err(Error::invalid(
            OP,
            format!("padding_idx {pad} needs a 2-D weight with more rows, got weight {:?}", w.dims()),
        ));
    }
    let y = w.embedding(ids)?;
    // The positions whose id is not the padding row, and those ids: the backward pass sums
    // only these gradient rows into the weight's gradient.
    let flat = ids.flatten_all()?.to_vec::<i64>()?;
    let (keep_pos, keep_ids): (Vec<i64>, Vec<i64>) =
        flat.iter().enumerate().filter(|(_, &id)| id as usize != pad).map(|(i, &id)| (i as i64, id)).unzip();
    let dev = *w.device();
    let (n_keep, n_all) = (keep_pos.len(), flat.len());
    let keep_pos = Tensor::from_vec(keep_pos, n_keep, &dev)?;
    let keep_ids = Tensor::from_vec(keep_ids, n_keep, &dev)?;
    let wc = w.clone();
    Ok(Var::from_op(
        OP,
        y,
        &[weight],
        Box::new(move |g| {
            let rows = g.reshape([n_all, wc.dims()[1]])?;
            let rows = if n_keep == n_all { rows } else { rows.index_select(0usize, &keep_pos)? };
            Ok(vec![Some(wc.zeros_like()?.index_add(0usize, &keep_ids, &rows)?)])
        }),
    ))
}

/// A lookup table (`nn.Embedding`): `weight [num_embeddings, embedding_dim]`, initialised
/// `N(0, 1)`, with the `padding_idx` row (if any) zeroed. The forward pass takes i64 ids of
/// any shape and returns `[*ids, embedding_dim]`.
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Param,
    /// The row that gets no gradient (resolved to a non-negative index).
    pub padding_idx: Option<usize>,
}

impl Embedding {
    /// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)` in f32 on the CPU. A
    /// negative `padding_idx` counts from the end, as in PyTorch.
    pub fn new(num_embeddings: usize, embedding_dim: usize, padding_idx: Option<i64>) -> Result<Embedding> {
        Embedding::new_with(num_embeddings, embedding_dim, padding_idx, DType::F32, &Device::Cpu)
    }

    /// The full constructor. Zero rows or columns, or a `padding_idx` outside
    /// `[-num_embeddings, num_embeddings)`, are errors.
    pub fn new_with(
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: Option<i64>,
        dtype: DType,
        device: &Device,
    ) -> Result<Embedding> {
        const OP: &str = "Embedding";
        if num_embeddings == 0 || embedding_dim == 0 {
            return Err(Error::invalid(
                OP,
                format!("num_embeddings ({num_embeddings}) and embedding_dim ({embedding_dim}) must be positive"),
            ));
        }
        let pad = resolve_padding_idx(OP, padding_idx, num_embeddings)?;
        let mut w = normal([num_embeddings, embedding_dim], 0.0, 1.0, dtype, device)?;
        if let Some(p) = pad {
            // Zero the padding row: keep every other row, splice in zeros.
            let zero = Tensor::zeros([1, embedding_dim], dtype, device)?;
            let before = w.narrow(0usize, 0, p)?;
            let after = w.narrow(0usize, p + 1, num_embeddings - p - 1)?;
            w = Tensor::cat(&[&before, &zero, &after], 0usize)?;
        }
        Ok(Embedding { weight: Param::new(w), padding_idx: pad })
    }

    /// A layer holding `weight [num_embeddings, embedding_dim]` as given (PyTorch's
    /// `from_pretrained(weight, freeze=False)`: the padding row is not zeroed).
    pub fn from_weight(weight: Tensor, padding_idx: Option<i64>) -> Result<Embedding> {
        const OP: &str = "Embedding::from_weight";
        if weight.rank() != 2 || !weight.dtype().is_float() {
            return Err(Error::shape(
                OP,
                format!("weight must be a 2-D float tensor, got {:?} of shape {:?}", weight.dtype(), weight.dims()),
            ));
        }
        let pad = resolve_padding_idx(OP, padding_idx, weight.dims()[0])?;
        Ok(Embedding { weight: Param::new(weight), padding_idx: pad })
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Row length.
    pub fn embedding_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Looks up the i64 `ids`.
    pub fn forward_ids(&self, ids: &Tensor) -> Result<Var> {
        embedding(ids, &self.weight.var(), self.padding_idx)
    }
}

impl Module for Embedding {
    fn local_params(&self) -> Vec<(String, Param)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}

impl Forward for Embedding {
    /// Looks up the ids held by `x` (an i64 tensor, e.g. `Var::constant(ids)`).
    fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_ids(x.tensor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_padding_row_and_gradient() {
        let e = Embedding::new(400, 50, Some(-1)).unwrap();
        assert_eq!(e.padding_idx, Some(399));
        let w = e.weight.tensor().to_vec::<f32>().unwrap();
        assert!(w[399 * 50..].iter().all(|&v| v == 0.0));
        let body = &w[..399 * 50];
        let mean = body.iter().map(|&v| v as f64).sum::<f64>() / body.len() as f64;
        let var = body.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / body.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");

        let ids = Tensor::from_vec(vec![3i64, 399, 3, 0], [2, 2], &Device::Cpu).unwrap();
        let y = e.forward(&Var::constant(ids)).unwrap();
        assert_eq!(y.dims(), [2, 2, 50]);
        y.sum_all().unwrap().backward().unwrap();
        let g = e.weight.grad().unwrap().to_vec::<f32>().unwrap();
        assert!(g[3 * 50..4 * 50].iter().all(|&v| v == 2.0));
        assert!(g[..50].iter().all(|&v| v == 1.0));
        assert!(g[399 * 50..].iter().all(|&v| v == 0.0));
        assert_eq!(g.iter().sum::<f32>(), 150.0);
    }

    #[test]
    fn errors() {
        assert!(Embedding::new(0, 4, None).is_err());
        assert!(Embedding::new(5, 0, None).is_err());
        assert!(Embedding::new(5, 4, Some(5)).is_err());
        assert!(Embedding::new(5, 4, Some(-6)).is_err());
        assert_eq!(Embedding::new(5, 4, Some(-5)).unwrap().padding_idx, Some(0));
        let e = Embedding::new(5, 4, Some(1)).unwrap();
        let ids = |v: Vec<i64>| Tensor::from_vec(v, 2, &Device::Cpu).unwrap();
        assert!(e.forward_ids(&ids(vec![0, 5])).is_err());
        assert!(e.forward_ids(&ids(vec![-1, 0])).is_err());
        assert!(e.forward_ids(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()).is_err());
        assert!(Embedding::from_weight(Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(), None).is_err());
    }
}
