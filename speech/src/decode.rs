//! CTC decoding: greedy (best path). Prefix beam search, with or without a language model, is
//! in [`crate::beam`].

use stapes_tensor::{Error, Result, Tensor};

/// Best-path CTC decoding of one utterance: the arg-max class per frame, repeats merged, blanks
/// removed. `log_probs` is `[T, C]` (log-probabilities or logits: the arg-max is the same);
/// only the first `length` frames are used.
pub fn greedy_decode(log_probs: &Tensor, length: usize, blank: usize) -> Result<Vec<usize>> {
    const OP: &str = "greedy_decode";
    let d = log_probs.dims();
    if d.len() != 2 {
        return Err(Error::shape(OP, format!("expects [T, C], got {d:?}")));
    }
    if length > d[0] {
        return Err(Error::invalid(OP, format!("length {length} exceeds the {} frames", d[0])));
    }
    if blank >= d[1] {
        return Err(Error::invalid(OP, format!("blank {blank} out of range for {} classes", d[1])));
    }
    let best = log_probs.narrow(0usize, 0, length)?.argmax(1usize, false)?.to_vec::<i64>()?;
    Ok(collapse(best.into_iter().map(|b| b as usize), blank))
}

/// Greedy decoding of a batch `[B, T, C]` (batch-first) or `[T, B, C]` with per-utterance
/// lengths.
pub fn greedy_decode_batch(
    log_probs: &Tensor,
    lengths: &[usize],
    blank: usize,
    batch_first: bool,
) -> Result<Vec<Vec<usize>>> {
    let d = log_probs.dims();
    if d.len() != 3 {
        return Err(Error::shape("greedy_decode_batch", format!("expects a 3-D tensor, got {d:?}")));
    }
    let b = if batch_first { d[0] } else { d[1] };
    if lengths.len() != b {
        return Err(Error::invalid("greedy_decode_batch", format!("{} lengths for a batch of {b}", lengths.len())));
    }
    let bt = if batch_first { log_probs.clone() } else { log_probs.transpose(0usize, 1usize)? };
    (0..b).map(|i| greedy_decode(&bt.narrow(0usize, i, 1)?.squeeze(0usize)?, lengths[i], blank)).collect()
}

/// Merges repeated classes and drops blanks: the CTC collapse.
pub fn collapse(path: impl IntoIterator<Item = usize>, blank: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev = None;
    for c in path {
        if Some(c) != prev && c != blank {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::Device;

    #[test]
    fn collapses_repeats_and_blanks() {
        assert_eq!(collapse([0, 1, 1, 0, 1, 2, 2, 0], 0), vec![1, 1, 2]);
        let lp = Tensor::from_vec(
            vec![0.9f32, 0.1, 0.0, 0.1, 0.8, 0.1, 0.1, 0.8, 0.1, 0.9, 0.0, 0.1, 0.0, 0.2, 0.8],
            [5, 3],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(greedy_decode(&lp, 5, 0).unwrap(), vec![1, 2]);
        assert_eq!(greedy_decode(&lp, 3, 0).unwrap(), vec![1]);
        assert!(greedy_decode(&lp, 6, 0).is_err());
        assert!(greedy_decode(&lp, 5, 3).is_err());
        let batch = Tensor::stack(&[&lp, &lp], 0usize).unwrap();
        assert_eq!(greedy_decode_batch(&batch, &[5, 3], 0, true).unwrap(), vec![vec![1, 2], vec![1]]);
    }
}
