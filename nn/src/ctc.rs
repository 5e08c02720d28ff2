//! Connectionist temporal classification loss, as `torch.nn.functional.ctc_loss`, and the
//! fused logits path of warp-ctc.
//!
//! Both are single autograd ops ([`Var::from_op`]) over the CPU kernel
//! [`stapes_kernels::cpu::ctc`]: the forward pass runs the alpha and beta recursions and, when
//! a gradient is wanted, also the per-sample gradient for an upstream gradient of 1; the
//! backward pass only scales each sample's rows by its upstream gradient (and the reduction's
//! factor). So one `loss.backward()` costs one forward-backward sweep, as in warp-ctc.
//!
//! * [`ctc_loss`] takes log-probabilities and returns, like PyTorch, the gradient
//!   `exp(log_probs) - occupancy` (PyTorch's CTC backward assumes its input came from
//!   `log_softmax`; through `log_softmax`'s backward this is the exact logits gradient, but on
//!   its own it is not the derivative of the loss w.r.t. arbitrary `log_probs`).
//! * [`ctc_loss_from_logits`] takes unnormalised logits, applies `log_softmax` inside and returns
//!   the exact gradient w.r.t. the logits, `softmax - occupancy`: the same values as
//!   `ctc_loss(log_softmax(logits))` differentiated w.r.t. `logits`, without materialising the
//!   log-probabilities or running a separate softmax backward.
//!
//! `tests/parity_ctc.rs` checks both against PyTorch 2.11; bad input (lengths beyond `T` or the
//! padded target width, labels out of range or equal to the blank, wrong dtypes or shapes) is an
//! `Err` naming the operation and the offending value.

use crate::loss::Reduction;
use crate::Lengths;
use stapes_autograd::{is_grad_enabled, Var};
use stapes_kernels::cpu::ctc::{self as kernel, CtcInput, CtcLayout, CtcProblem};
use stapes_kernels::cpu::Float;
use stapes_tensor::{DType, Error, Result, Tensor, WithDType};

/// Options of [`ctc_loss`] and [`ctc_loss_from_logits`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtcLossOptions {
    /// The blank class (default 0).
    pub blank: usize,
    /// `None`: one loss per sample; `Sum`; `Mean` (default): each loss divided by its target
    /// length (clamped to at least 1), then the mean over the batch, as PyTorch.
    pub reduction: Reduction,
    /// Replace infinite losses (impossible alignments) and their gradients by 0.
    pub zero_infinity: bool,
    /// The scores are `[B, T, C]` instead of PyTorch's `[T, B, C]`.
    pub batch_first: bool,
}

/// CTC loss of `log_probs` (`[T, B, C]`, or `[B, T, C]` with `batch_first`; f32 or f64, or
/// f16/bf16 inside an autocast scope, which computes in f32; the output of `log_softmax` over C) against `targets`: i64 labels, either padded `[B, S]` or
/// the concatenation of all targets `[Σ target_lengths]`. `input_lengths[b] <= T` and
/// `target_lengths[b]` give each sample's lengths.
///
/// Returns `[B]` losses (reduction `None`) or a scalar. The gradient w.r.t. `log_probs` is
/// PyTorch's (see the module docs).
///
/// The lengths are slices, arrays or `Vec`s of `usize`, or 1-D integer tensors ([`Lengths`]),
/// as PyTorch takes tensors or lists.
pub fn ctc_loss(
    log_probs: &Var,
    targets: &Tensor,
    input_lengths: &(impl Lengths + ?Sized),
    target_lengths: &(impl Lengths + ?Sized),
    opts: &CtcLossOptions,
) -> Result<Var> {
    const OP: &str = "ctc_loss";
    let (il, tl) = (input_lengths.to_lengths(OP, "input_lengths")?, target_lengths.to_lengths(OP, "target_lengths")?);
    ctc(OP, log_probs, CtcInput::LogProbs, targets, &il, &tl, opts)
}

/// CTC loss of unnormalised `logits` (shapes and options as [`ctc_loss`]): equal to
/// `ctc_loss(log_softmax(logits, -1))`, with `log_softmax` and the CTC gradient fused; the
/// gradient w.r.t. the logits is `softmax(logits) - occupancy` per frame, 0 past an input length.
pub fn ctc_loss_from_logits(
    logits: &Var,
    targets: &Tensor,
    input_lengths: &(impl Lengths + ?Sized),
    target_lengths: &(impl Lengths + ?Sized),
    opts: &CtcLossOptions,
) -> Result<Var> {
    const OP: &str = "ctc_loss_from_logits";
    let (il, tl) = (input_lengths.to_lengths(OP, "input_lengths")?, target_lengths.to_lengths(OP, "target_lengths")?);
    ctc(OP, logits, CtcInput::Logits, targets, &il, &tl, opts)
}

fn ctc(
    op: &'static str,
    scores: &Var,
    input: CtcInput,
    targets: &Tensor,
    input_lengths: &[usize],
    target_lengths: &[usize],
    opts: &CtcLossOptions,
) -> Result<Var> {
    // Under autocast CTC is an f32 op, as in PyTorch's autocast lists: f16/bf16 scores (the
    // output of an autocast matmul) are cast up, and the gradient flows back through the cast.
    if stapes_autograd::autocast_dtype().is_some() && matches!(scores.tensor().dtype(), DType::F16 | DType::BF16) {
        let up = scores.to_dtype(DType::F32)?;
        return ctc(op, &up, input, targets, input_lengths, target_lengths, opts);
    }
    let x = scores.tensor();
    let what = if input == CtcInput::Logits { "logits" } else { "log_probs" };
    if x.dims().len() != 3 {
        let want = if opts.batch_first { "[B, T, C]" } else { "[T, B, C]" };
        return Err(Error::shape(op, format!("{what} must be {want}, got shape {:?}", x.dims())));
    }
    let (t, b, c) = match opts.batch_first {
        false => (x.dims()[0], x.dims()[1], x.dims()[2]),
        true => (x.dims()[1], x.dims()[0], x.dims()[2]),
    };
    if targets.dtype() != DType::I64 {
        return Err(Error::invalid(op, format!("targets must be i64 class indices, got {:?}", targets.dtype())));
    }
    for (name, lens) in [("input_lengths", input_lengths), ("target_lengths", target_lengths)] {
        if lens.len() != b {
            return Err(Error::shape(op, format!("{name} has {} entries for a batch of {b}", lens.len())));
        }
    }
    let offsets: Vec<usize> = match targets.dims() {
        [rows, width] => {
            if *rows != b {
                return Err(Error::shape(
                    op,
                    format!("padded targets have shape {:?}, expected [{b}, S] (one row per sample)", targets.dims()),
                ));
            }
            if let Some((i, &l)) = target_lengths.iter().enumerate().find(|(_, &l)| l > *width) {
                return Err(Error::invalid(
                    op,
                    format!("target length {l} of sample {i} exceeds the padded target width {width}"),
                ));
            }
            (0..b).map(|i| i * width).collect()
        }
        [_] => target_lengths
            .iter()
            .scan(0usize, |acc, &l| {
                let o = *acc;
                *acc = acc.saturating_add(l);
                Some(o)
            })
            .collect(),
        d => return Err(Error::shape(op, format!("targets must be [B, S] (padded) or 1-D (concatenated), got {d:?}"))),
    };
    let labels = targets.to_vec::<i64>()?;
    let problem = CtcProblem {
        max_time: t,
        batch: b,
        classes: c,
        layout: if opts.batch_first { CtcLayout::BatchFirst } else { CtcLayout::TimeMajor },
        targets: &labels,
        target_offsets: &offsets,
        target_lengths,
        input_lengths,
        blank: opts.blank,
    };
    problem.check().map_err(|m| Error::invalid(op, m))?;
    if x.device().is_cuda() {
        return run_device(op, scores, input, &problem, opts);
    }
    match x.dtype() {
        DType::F32 => run::<f32>(op, scores, input, &problem, opts),
        DType::F64 => run::<f64>(op, scores, input, &problem, opts),
        other => Err(Error::UnsupportedDType { op, dtype: other, msg: "CTC loss computes in f32 or f64" }),
    }
}

/// The loss of scores on a CUDA device: `kernels/cuda/ctc.cu` through
/// `stapes_tensor::cuda::ctc`, the reduction and the backward's per-sample scaling as device
/// ops (no host synchronisation; only the problem's lengths and labels, already on the host,
/// are uploaded).
fn run_device(
    op: &'static str,
    scores: &Var,
    input: CtcInput,
    p: &CtcProblem<'_>,
    opts: &CtcLossOptions,
) -> Result<Var> {
    let x = scores.tensor();
    let lp = match input {
        CtcInput::LogProbs => x.clone(),
        CtcInput::Logits => x.log_softmax(2)?,
    };
    let want_grad = is_grad_enabled() && scores.requires_grad();
    let (nll, grad) = stapes_tensor::cuda::ctc::ctc_loss(&lp, p, opts.zero_infinity, want_grad)?;
    let b = p.batch;
    let device = *x.device();
    // Mean: each sample's loss over its target length (at least 1), averaged over the batch.
    let weights: Vec<f32> = p.target_lengths.iter().map(|&l| (1.0 / (b as f64 * l.max(1) as f64)) as f32).collect();
    let weights = Tensor::from_vec(weights, [b], &device)?;
    let out = match opts.reduction {
        Reduction::None => nll,
        Reduction::Sum => nll.sum_all()?,
        Reduction::Mean => nll.mul(&weights)?.sum_all()?,
    };
    let Some(grad) = grad else {
        return Ok(Var::constant(out));
    };
    let (reduction, batch_first) = (opts.reduction, opts.batch_first);
    let scale_shape = if batch_first { [b, 1, 1] } else { [1, b, 1] };
    let backward = move |gout: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let scale = match reduction {
            Reduction::None => gout.reshape(scale_shape)?,
            Reduction::Sum => gout.reshape([1, 1, 1])?,
            Reduction::Mean => weights.mul(gout)?.reshape(scale_shape)?,
        };
        Ok(vec![Some(grad.mul(&scale)?)])
    };
    Ok(Var::from_op(op, out, &[scores], Box::new(backward)))
}

fn run<T: Float + WithDType>(
    op: &'static str,
    scores: &Var,
    input: CtcInput,
    p: &CtcProblem<'_>,
    opts: &CtcLossOptions,
) -> Result<Var> {
    let x = scores.tensor();
    let data = x.to_vec::<T>()?;
    let want_grad = is_grad_enabled() && scores.requires_grad();
    let mut nll = vec![T::zero(); p.batch];
    let mut grad = if want_grad { vec![T::zero(); data.len()] } else { Vec::new() };
    kernel::ctc_loss(p, &data, input, opts.zero_infinity, &mut nll, want_grad.then_some(&mut grad[..]));

    let b = p.batch;
    let divisor: Vec<f64> = p.target_lengths.iter().map(|&l| l.max(1) as f64).collect();
    let device = *x.device();
    let out = match opts.reduction {
        Reduction::None => Tensor::from_vec(nll, [b], &device)?,
        Reduction::Sum => {
            let s: f64 = nll.iter().map(|v| v.to_f64_lossy()).sum();
            Tensor::from_vec(vec![T::from_f64_lossy(s)], (), &device)?
        }
        Reduction::Mean => {
            let s: f64 = nll.iter().zip(&divisor).map(|(v, d)| v.to_f64_lossy() / d).sum();
            Tensor::from_vec(vec![T::from_f64_lossy(s / b as f64)], (), &device)?
        }
    };
    if !want_grad {
        return Ok(Var::constant(out));
    }
    let (reduction, dims) = (opts.reduction, x.dims().to_vec());
    let (rows_per_b, c, batch_first) = (p.max_time, p.classes, p.layout == CtcLayout::BatchFirst);
    let backward = move |gout: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let go = gout.to_vec_f64()?;
        let scale: Vec<T> = (0..b)
            .map(|i| {
                T::from_f64_lossy(match reduction {
                    Reduction::None => go[i],
                    Reduction::Sum => go[0],
                    Reduction::Mean => go[0] / b as f64 / divisor[i],
                })
            })
            .collect();
        let mut g = grad.clone();
        for (r, row) in g.chunks_mut(c.max(1)).enumerate() {
            let s = scale[if batch_first { r / rows_per_b } else { r % b }];
            row.iter_mut().for_each(|v| *v *= s);
        }
        Ok(vec![Some(Tensor::from_vec(g, dims.clone(), &device)?)])
    };
    Ok(Var::from_op(op, out, &[scores], Box::new(backward)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_autograd::gradcheck;
    use stapes_tensor::{Device, Generator};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
    }

    fn opts(reduction: Reduction, blank: usize, batch_first: bool) -> CtcLossOptions {
        CtcLossOptions { blank, reduction, zero_infinity: false, batch_first }
    }

    /// Finite differences in f64: the logits path directly, and the log-probs path composed with
    /// log_softmax (PyTorch's CTC gradient assumes normalised inputs), every reduction, padded
    /// and concatenated targets, repeated labels, blank != 0, an input shorter than T.
    #[test]
    fn gradcheck_logits_and_log_softmax_paths() {
        let padded = Tensor::from_vec(vec![1i64, 2, 2, 3, 3, 0, 2, 0, 0], [3, 3], &Device::Cpu).unwrap();
        let concat = Tensor::from_vec(vec![1i64, 2, 2, 3, 3, 2], [6], &Device::Cpu).unwrap();
        let (il, tl) = ([6usize, 4, 5], [3usize, 2, 1]);
        for (i, reduction) in [Reduction::None, Reduction::Sum, Reduction::Mean].into_iter().enumerate() {
            for (targets, batch_first) in [(&padded, false), (&concat, true)] {
                let shape = if batch_first { [3, 6, 4] } else { [6, 3, 4] };
                let x = randn(&shape, 10 + i as u64);
                let o = opts(reduction, 0, batch_first);
                let f = |v: &[Var]| ctc_loss_from_logits(&v[0], targets, &il, &tl, &o);
                let r = gradcheck(f, std::slice::from_ref(&x), 1e-6, 1e-7, 1e-5).unwrap();
                assert!(r.checked == 72, "{r:?}");
                let g = |v: &[Var]| ctc_loss(&v[0].log_softmax(2)?, targets, &il, &tl, &o);
                gradcheck(g, std::slice::from_ref(&x), 1e-6, 1e-7, 1e-5).unwrap();
            }
        }
        // blank = 3 (labels 0..2), mean
        let t = Tensor::from_vec(vec![0i64, 0, 1, 2, 1, 0], [2, 3], &Device::Cpu).unwrap();
        let o = opts(Reduction::Mean, 3, false);
        let f = |v: &[Var]| ctc_loss_from_logits(&v[0], &t, &[7, 7], &[3, 2], &o);
        gradcheck(f, &[randn(&[7, 2, 4], 3)], 1e-6, 1e-7, 1e-5).unwrap();
    }

    /// Under autocast, bf16/f16 logits compute in f32 (PyTorch's autocast list puts ctc_loss in
    /// f32): the loss equals the f32 loss of the same (rounded) logits, and the gradient comes
    /// back in the logits' dtype. Outside autocast, half inputs stay an error.
    #[test]
    fn autocast_runs_half_logits_in_f32() {
        let t = Tensor::from_vec(vec![1i64, 1, 4, 2, 3, 0], [2, 3], &Device::Cpu).unwrap();
        let o = opts(Reduction::Mean, 0, false);
        for dt in [DType::BF16, DType::F16] {
            let half = Var::leaf(randn(&[9, 2, 5], 7).to_dtype(dt).unwrap());
            let full = Var::leaf(half.tensor().to_dtype(DType::F32).unwrap());
            assert!(ctc_loss_from_logits(&half, &t, &[9, 7], &[3, 2], &o).is_err());
            let l = stapes_autograd::autocast(dt, || ctc_loss_from_logits(&half, &t, &[9, 7], &[3, 2], &o))
                .unwrap()
                .unwrap();
            let r = ctc_loss_from_logits(&full, &t, &[9, 7], &[3, 2], &o).unwrap();
            assert_eq!(l.tensor().dtype(), DType::F32);
            assert_eq!(l.tensor().to_scalar_f64().unwrap(), r.tensor().to_scalar_f64().unwrap());
            l.backward().unwrap();
            r.backward().unwrap();
            let (gh, gf) = (half.grad().unwrap(), full.grad().unwrap());
            assert_eq!(gh.dtype(), dt);
            let got = gh.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
            let want = gf.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn logits_path_matches_log_softmax_path() {
        let x = Var::leaf(randn(&[9, 2, 5], 4).to_dtype(DType::F32).unwrap());
        let t = Tensor::from_vec(vec![1i64, 1, 4, 2, 3, 0], [2, 3], &Device::Cpu).unwrap();
        let o = CtcLossOptions::default();
        let a = ctc_loss_from_logits(&x, &t, &[9, 8], &[3, 2], &o).unwrap();
        a.backward().unwrap();
        let ga = x.grad().unwrap().to_vec::<f32>().unwrap();
        x.zero_grad();
        let b = ctc_loss(&x.log_softmax(2).unwrap(), &t, &[9, 8], &[3, 2], &o).unwrap();
        b.backward().unwrap();
        let gb = x.grad().unwrap().to_vec::<f32>().unwrap();
        assert!((a.tensor().to_scalar_f64().unwrap() - b.tensor().to_scalar_f64().unwrap()).abs() < 1e-5);
        for (p, q) in ga.iter().zip(&gb) {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
    }

    #[test]
    fn bad_input_is_an_error_naming_the_value() {
        let x = Var::leaf(randn(&[4, 2, 3], 5));
        let t = Tensor::from_vec(vec![1i64, 2, 1, 1], [2, 2], &Device::Cpu).unwrap();
        let o = CtcLossOptions::default();
        let err = |r: Result<Var>| r.map(|_| ()).expect_err("expected an error").to_string();
        assert!(err(ctc_loss(&x, &t, &[5, 4], &[2, 2], &o)).contains("input length 5"));
        assert!(err(ctc_loss(&x, &t, &[4, 4], &[3, 2], &o)).contains("target length 3"));
        assert!(err(ctc_loss(&x, &t, &[4], &[2], &o)).contains("input_lengths has 1 entries"));
        let bad = Tensor::from_vec(vec![1i64, 3, 1, 1], [2, 2], &Device::Cpu).unwrap();
        assert!(err(ctc_loss(&x, &bad, &[4, 4], &[2, 2], &o)).contains("label 3"));
        let blank = Tensor::from_vec(vec![1i64, 0, 1, 1], [2, 2], &Device::Cpu).unwrap();
        assert!(err(ctc_loss(&x, &blank, &[4, 4], &[2, 2], &o)).contains("blank"));
        let ft = Tensor::from_vec(vec![1.0f64; 4], [2, 2], &Device::Cpu).unwrap();
        assert!(err(ctc_loss(&x, &ft, &[4, 4], &[2, 2], &o)).contains("i64"));
        let x2 = Var::leaf(randn(&[4, 3], 5));
        assert!(err(ctc_loss(&x2, &t, &[4, 4], &[2, 2], &o)).contains("[T, B, C]"));
        let o3 = CtcLossOptions { blank: 3, ..o };
        assert!(err(ctc_loss(&x, &t, &[4, 4], &[2, 2], &o3)).contains("blank 3"));
        let short = Tensor::from_vec(vec![1i64, 2, 1], [3], &Device::Cpu).unwrap();
        assert!(err(ctc_loss(&x, &short, &[4, 4], &[2, 2], &o)).contains("exceeds the 3 target labels"));
    }
}
