//! Loss functions, as `torch.nn.functional`: [`cross_entropy`], [`nll_loss`], [`kl_div`],
//! [`mse_loss`], [`binary_cross_entropy_with_logits`] and Hinton's [`distillation_loss`].
//!
//! Each is built from differentiable [`Var`] ops (`log_softmax`, `gather`, `masked_fill`, ...),
//! so gradients come from autograd. The formulas, including how `ignore_index`, class weights
//! and `label_smoothing` interact and what `mean` divides by, follow PyTorch 2.11
//! (`aten/src/ATen/native/LossNLL.cpp`, `Loss.cpp`); `tests/parity_nn_loss_optim.rs` checks
//! values and input gradients against it.
//!
//! Class-index targets, class-probability targets and class weights are plain [`Tensor`]s (no
//! gradient flows into them); the float targets of [`kl_div`], [`mse_loss`] and
//! [`binary_cross_entropy_with_logits`] are `Var`s, so they can be differentiated too (wrap a
//! tensor with [`Var::constant`]). Bad input (mismatched shapes, wrong dtypes, a class index
//! out of range that is not `ignore_index`, an invalid option) is an `Err`, never a panic.

use stapes_autograd::Var;
use stapes_tensor::{CmpOp, DType, Error, Result, Tensor};

/// How a loss reduces its per-element values, as PyTorch's `reduction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// No reduction: one loss value per element (per sample for classification losses).
    None,
    /// The mean (weighted mean for class-weighted losses; non-ignored targets only).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// The reductions of [`kl_div`]: those of [`Reduction`] plus `BatchMean`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KlReduction {
    /// No reduction.
    None,
    /// The mean over all elements (PyTorch's default, which is not the KL divergence).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// The sum divided by the batch size (the first dim): the mathematically correct KL
    /// divergence per sample.
    BatchMean,
}

/// Options of [`cross_entropy`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct CrossEntropyOptions {
    /// A weight per class (`[C]`, the input's dtype), or `None` for equal weights.
    pub weight: Option<Tensor>,
    /// Class-index targets equal to this are ignored (default -100); `mean` divides by the
    /// (weighted) number of the others. Not used with probability targets.
    pub ignore_index: i64,
    /// The reduction (default `Mean`).
    pub reduction: Reduction,
    /// Label smoothing in `[0, 1]` (default 0): the target becomes a mix of the one-hot
    /// target and the uniform distribution, `(1 - ε) one_hot + ε / C`.
    pub label_smoothing: f64,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean, label_smoothing: 0.0 }
    }
}

/// Options of [`nll_loss`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct NllLossOptions {
    /// A weight per class (`[C]`, the input's dtype), or `None`.
    pub weight: Option<Tensor>,
    /// Targets equal to this are ignored (default -100).
    pub ignore_index: i64,
    /// The reduction (default `Mean`, a weighted mean over the non-ignored targets).
    pub reduction: Reduction,
}

impl Default for NllLossOptions {
    fn default() -> Self {
        NllLossOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean }
    }
}

/// Options of [`binary_cross_entropy_with_logits`].
#[derive(Clone, Debug, Default)]
pub struct BceWithLogitsOptions {
    /// A rescaling weight broadcast to the input's shape, or `None`.
    pub weight: Option<Tensor>,
    /// A weight of the positive term, broadcast along the last dim (one per class), or `None`.
    pub pos_weight: Option<Tensor>,
    /// The reduction (default `Mean`).
    pub reduction: Reduction,
}

fn check_float(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::invalid(op, format!("{what} must be floating point, got {}", t.dtype())));
    }
    Ok(())
}

fn check_same_dtype(op: &'static str, input: &Tensor, other: &Tensor) -> Result<()> {
    if input.dtype() != other.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: input.dtype(), rhs: other.dtype() });
    }
    Ok(())
}

fn check_same_shape(op: &'static str, what: &str, input: &[usize], other: &[usize]) -> Result<()> {
    if input != other {
        return Err(Error::shape(op, format!("{what} has shape {other:?}, the input has shape {input:?}")));
    }
    Ok(())
}

/// A 0-dim constant of `dtype`.
fn scalar_const(v: f64, like: &Tensor) -> Result<Var> {
    Ok(Var::constant(Tensor::full(v, (), like.dtype(), like.device())?))
}

/// Checks a class weight: `[C]`, the input's dtype.
fn check_class_weight(op: &'static str, w: &Tensor, input: &Tensor, c: usize) -> Result<()> {
    if w.dims() != [c] {
        return Err(Error::shape(op, format!("weight has shape {:?}, expected [{c}] (one per class)", w.dims())));
    }
    check_same_dtype(op, input, w)
}

/// The weight viewed as `[1, C, 1, ...]` for an input of rank `rank`.
fn class_weight_bcast(w: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1usize; rank];
    shape[1] = w.elem_count();
    w.reshape(shape)
}

/// What [`class_targets`] derives from a class-index target.
struct ClassTargets {
    /// The targets with ignored entries replaced by 0, shaped `[N, 1, d1, ...]` for `gather`.
    index: Tensor,
    /// Per target: minus its class weight (0 where ignored), the input's dtype, `[N, d1, ...]`.
    neg_weight: Tensor,
    /// 1 where the target is ignored (u8, `[N, d1, ...]`).
    ignored: Tensor,
    /// The sum of the weights of the non-ignored targets (the divisor of `mean`).
    total_weight: f64,
}

/// Validates class-index targets for an input `[N, C, d1, ...]` and derives the gather index,
/// the per-target weights and the ignore mask.
fn class_targets(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
) -> Result<ClassTargets> {
    let d = input.dims();
    let c = d[1];
    let mut want = vec![d[0]];
    want.extend_from_slice(&d[2..]);
    if target.dims() != want.as_slice() {
        return Err(Error::shape(
            op,
            format!("target has shape {:?}, expected {want:?} for an input of shape {d:?}", target.dims()),
        ));
    }
    let t = target.to_vec::<i64>()?;
    let w: Option<Vec<f64>> = match weight {
        Some(w) => {
            check_class_weight(op, w, input, c)?;
            Some(w.to_vec_f64()?)
        }
        None => None,
    };
    let mut safe = Vec::with_capacity(t.len());
    let mut neg_w = Vec::with_capacity(t.len());
    let mut ignored = Vec::with_capacity(t.len());
    let mut total = 0.0f64;
    for (i, &ti) in t.iter().enumerate() {
        if ti == ignore_index {
            safe.push(0i64);
            neg_w.push(0.0);
            ignored.push(1u8);
            continue;
        }
        if ti < 0 || ti as usize >= c {
            return Err(Error::invalid(
                op,
                format!(
                    "target {ti} at flat index {i} is out of range for {c} classes (valid: 0..{c}, or \
                     ignore_index {ignore_index})"
                ),
            ));
        }
        let wi = w.as_ref().map_or(1.0, |w| w[ti as usize]);
        safe.push(ti);
        neg_w.push(-wi);
        ignored.push(0u8);
        total += wi;
    }
    let dev = input.device();
    let mut idx_shape = want.clone();
    idx_shape.insert(1, 1);
    Ok(ClassTargets {
        index: Tensor::from_vec(safe, idx_shape, dev)?,
        neg_weight: Tensor::from_vec(neg_w, want.clone(), dev)?.to_dtype(input.dtype())?,
        ignored: Tensor::from_vec(ignored, want, dev)?,
        total_weight: total,
    })
}

/// `[C]` input with a 0-dim target: runs `f` on the batch of one and drops the batch dim of an
/// unreduced result.
fn unbatched(
    input: &Var,
    target: &Tensor,
    reduction: Reduction,
    prob_target: bool,
    f: impl FnOnce(&Var, &Tensor) -> Result<Var>,
) -> Result<Var> {
    let x = input.unsqueeze(0usize)?;
    let t = if prob_target { target.unsqueeze(0usize)? } else { target.reshape([1])? };
    let y = f(&x, &t)?;
    match reduction {
        Reduction::None => y.reshape(()),
        _ => Ok(y),
    }
}

fn check_class_input(op: &'static str, input: &Var) -> Result<()> {
    check_float(op, "input", input.tensor())?;
    if input.dims().is_empty() {
        return Err(Error::shape(op, "input must have at least 1 dim ([C], [N, C] or [N, C, d1, ...])"));
    }
    Ok(())
}

/// The negative log-likelihood loss over log-probabilities `input` (`[N, C]`, `[N, C, d1, ...]`
/// or `[C]`) and class-index targets (i64, `[N]`, `[N, d1, ...]` or `[]`), as
/// `F.nll_loss`: `loss_i = -w[t_i] · input[i, t_i]`, 0 for ignored targets; `Mean` divides the
/// sum by `Σ w[t_i]` over the non-ignored targets (NaN when every target is ignored, as in
/// PyTorch).
pub fn nll_loss(input: &Var, target: &Tensor, opts: &NllLossOptions) -> Result<Var> {
    const OP: &str = "nll_loss";
    check_class_input(OP, input)?;
    if input.dims().len() == 1 {
        return unbatched(input, target, opts.reduction, false, |x, t| nll_loss(x, t, opts));
    }
    let ct = class_targets(OP, input.tensor(), target, opts.weight.as_ref(), opts.ignore_index)?;
    nll_reduced(input, &ct, opts.reduction)
}

/// The nll loss from log-probabilities and prepared targets.
fn nll_reduced(logp: &Var, ct: &ClassTargets, reduction: Reduction) -> Result<Var> {
    let picked = logp.gather(1usize, &ct.index)?.squeeze(1usize)?;
    let per = picked.mul(&Var::constant(ct.neg_weight.clone()))?;
    match reduction {
        Reduction::None => Ok(per),
        Reduction::Sum => per.sum_all(),
        Reduction::Mean => per.sum_all()?.div(&scalar_const(ct.total_weight, logp.tensor())?),
    }
}

/// Cross entropy between logits `input` and `target`, as `F.cross_entropy`.
///
/// `input` is `[N, C]`, `[N, C, d1, ...]` (classes in dim 1) or unbatched `[C]`. `target` is
/// either class indices (i64, the input's shape without the class dim) or class
/// probabilities (a float tensor of the input's shape and dtype); the dtype decides.
///
/// With class indices, `loss_i = -w[t_i] · log_softmax(input)[i, t_i]`; targets equal to
/// `opts.ignore_index` contribute 0 and are left out of `Mean`'s divisor, which is the sum of
/// the weights of the other targets. With `label_smoothing = ε > 0`, PyTorch's formula:
/// `(1 - ε) · nll + ε / C · smooth`, where `smooth_i = -Σ_c w[c] · log_softmax(input)[i, c]`
/// (0 for ignored targets) reduced like `nll` (for `Mean`: divided by the same weight sum).
///
/// With probabilities `p` (smoothed to `(1 - ε) p + ε / C`), `loss_i = -Σ_c w[c] p[i, c]
/// log_softmax(input)[i, c]`; `Mean` divides by the number of samples `N · d1 · ...`.
pub fn cross_entropy(input: &Var, target: &Tensor, opts: &CrossEntropyOptions) -> Result<Var> {
    const OP: &str = "cross_entropy";
    check_class_input(OP, input)?;
    let ls = opts.label_smoothing;
    if !(0.0..=1.0).contains(&ls) {
        return Err(Error::invalid(OP, format!("label_smoothing must be in [0, 1], got {ls}")));
    }
    let prob = target.dtype().is_float();
    if !prob && target.dtype() != DType::I64 {
        return Err(Error::invalid(
            OP,
            format!(
                "target must be class indices (int64) or class probabilities (floating point), got {}",
                target.dtype()
            ),
        ));
    }
    if input.dims().len() == 1 {
        return unbatched(input, target, opts.reduction, prob, |x, t| cross_entropy(x, t, opts));
    }
    if prob {
        return cross_entropy_probs(input, target, opts);
    }
    let c = input.dims()[1];
    let ct = class_targets(OP, input.tensor(), target, opts.weight.as_ref(), opts.ignore_index)?;
    let logp = input.log_softmax(1usize)?;
    let nll = nll_reduced(&logp, &ct, opts.reduction)?;
    if ls == 0.0 {
        return Ok(nll);
    }
    let weighted = match &opts.weight {
        Some(w) => logp.mul(&Var::constant(class_weight_bcast(w, input.dims().len())?))?,
        None => logp,
    };
    let smooth = weighted.sum(1usize, false)?.neg()?.masked_fill(&ct.ignored, 0.0)?;
    let smooth = match opts.reduction {
        Reduction::None => smooth,
        Reduction::Sum => smooth.sum_all()?,
        Reduction::Mean => smooth.sum_all()?.div(&scalar_const(ct.total_weight, input.tensor())?)?,
    };
    nll.mul_scalar(1.0 - ls)?.add(&smooth.mul_scalar(ls / c as f64)?)
}

/// Cross entropy with class-probability targets.
fn cross_entropy_probs(input: &Var, target: &Tensor, opts: &CrossEntropyOptions) -> Result<Var> {
    const OP: &str = "cross_entropy";
    check_same_shape(OP, "probability target", input.dims(), target.dims())?;
    check_same_dtype(OP, input.tensor(), target)?;
    let c = input.dims()[1];
    let ls = opts.label_smoothing;
    let t = if ls > 0.0 { target.mul_scalar(1.0 - ls)?.add_scalar(ls / c as f64)? } else { target.clone() };
    let mut prod = input.log_softmax(1usize)?.mul(&Var::constant(t))?;
    if let Some(w) = &opts.weight {
        check_class_weight(OP, w, input.tensor(), c)?;
        prod = prod.mul(&Var::constant(class_weight_bcast(w, input.dims().len())?))?;
    }
    match opts.reduction {
        Reduction::None => prod.sum(1usize, false)?.neg(),
        Reduction::Sum => prod.sum_all()?.neg(),
        Reduction::Mean => {
            let n = input.tensor().elem_count() / c.max(1);
            let s = prod.sum_all()?.neg()?;
            if n == 0 {
                s.add(&scalar_const(f64::NAN, input.tensor())?)
            } else {
                s.div(&scalar_const(n as f64, input.tensor())?)
            }
        }
    }
}

/// The Kullback-Leibler divergence loss, as `F.kl_div(input, target, reduction, log_target)`:
/// `input` holds log-probabilities; `target` probabilities (`loss = target · (log target -
/// input)`, 0 where `target == 0`) or, with `log_target`, log-probabilities (`loss =
/// exp(target) · (target - input)`). Shapes must be equal.
pub fn kl_div(input: &Var, target: &Var, reduction: KlReduction, log_target: bool) -> Result<Var> {
    const OP: &str = "kl_div";
    check_float(OP, "input", input.tensor())?;
    check_same_dtype(OP, input.tensor(), target.tensor())?;
    check_same_shape(OP, "target", input.dims(), target.dims())?;
    let per = if log_target {
        target.exp()?.mul(&target.sub(input)?)?
    } else {
        // xlogy(t, t) = t · log t, defined as 0 where t == 0 (log of 1 there keeps the
        // gradient finite).
        let t = target.tensor();
        let nonzero = t.cmp_scalar(0.0, CmpOp::Ne)?;
        let safe = Var::where_cond(&nonzero, target, &Var::constant(Tensor::ones((), t.dtype(), t.device())?))?;
        target.mul(&safe.log()?)?.sub(&target.mul(input)?)?
    };
    match reduction {
        KlReduction::None => Ok(per),
        KlReduction::Sum => per.sum_all(),
        KlReduction::Mean => per.mean_all(),
        KlReduction::BatchMean => {
            let s = per.sum_all()?;
            match input.dims().first() {
                Some(&n) => s.div(&scalar_const(n as f64, input.tensor())?),
                None => Ok(s),
            }
        }
    }
}

fn reduce(per: Var, reduction: Reduction) -> Result<Var> {
    match reduction {
        Reduction::None => Ok(per),
        Reduction::Sum => per.sum_all(),
        Reduction::Mean => per.mean_all(),
    }
}

/// The mean squared error, as `F.mse_loss`: `(input - target)²`, reduced. Shapes and dtypes
/// must be equal (PyTorch would broadcast with a warning; here that is an error).
pub fn mse_loss(input: &Var, target: &Var, reduction: Reduction) -> Result<Var> {
    const OP: &str = "mse_loss";
    check_float(OP, "input", input.tensor())?;
    check_same_dtype(OP, input.tensor(), target.tensor())?;
    check_same_shape(OP, "target", input.dims(), target.dims())?;
    reduce(input.sub(target)?.sqr()?, reduction)
}

/// Binary cross entropy on logits, as `F.binary_cross_entropy_with_logits`, in PyTorch's
/// numerically stable form: `loss = (1 - t) · x - l · log σ(x)` with `l = 1 + (pos_weight - 1)
/// · t` (1 without `pos_weight`) and `log σ(x) = min(x, 0) - log(1 + e^{-|x|})`, times
/// `weight`, reduced. `target` has the input's shape and dtype.
pub fn binary_cross_entropy_with_logits(input: &Var, target: &Var, opts: &BceWithLogitsOptions) -> Result<Var> {
    const OP: &str = "binary_cross_entropy_with_logits";
    let x = input.tensor();
    check_float(OP, "input", x)?;
    check_same_dtype(OP, x, target.tensor())?;
    check_same_shape(OP, "target", input.dims(), target.dims())?;
    let zero = scalar_const(0.0, x)?;
    let log1p_exp = input.abs()?.neg()?.exp()?.add_scalar(1.0)?.log()?;
    let mut log_sig = input.minimum(&zero)?.sub(&log1p_exp)?;
    if let Some(pw) = &opts.pos_weight {
        check_same_dtype(OP, x, pw)?;
        let lw = target.mul(&Var::constant(pw.add_scalar(-1.0)?))?.add_scalar(1.0)?;
        log_sig = log_sig.mul(&lw)?;
    }
    let mut per = target.affine(-1.0, 1.0)?.mul(input)?.sub(&log_sig)?;
    if let Some(w) = &opts.weight {
        check_same_dtype(OP, x, w)?;
        per = per.mul(&Var::constant(w.clone()))?;
        if per.dims() != input.dims() {
            return Err(Error::shape(
                OP,
                format!("weight {:?} does not broadcast to the input {:?}", w.dims(), x.dims()),
            ));
        }
    }
    reduce(per, opts.reduction)
}

/// Knowledge-distillation loss (Hinton et al., 2015):
///
/// `alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 - alpha) ·
/// cross_entropy(student, targets)`,
///
/// the KL term being `kl_div(log_softmax(student / T), softmax(teacher / T), BatchMean)`.
/// The `T²` factor keeps the soft term's gradient magnitude independent of the temperature.
/// `student_logits` and `teacher_logits` are `[N, C]` (the teacher gets no gradient);
/// `targets` are class indices `[N]` for the hard term (default [`CrossEntropyOptions`]).
pub fn distillation_loss(
    student_logits: &Var,
    teacher_logits: &Tensor,
    targets: &Tensor,
    temperature: f64,
    alpha: f64,
) -> Result<Var> {
    const OP: &str = "distillation_loss";
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::invalid(OP, format!("temperature must be finite and > 0, got {temperature}")));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::invalid(OP, format!("alpha must be in [0, 1], got {alpha}")));
    }
    if student_logits.dims().len() != 2 {
        return Err(Error::shape(OP, format!("student logits must be [N, C], got {:?}", student_logits.dims())));
    }
    check_same_shape(OP, "teacher logits", student_logits.dims(), teacher_logits.dims())?;
    let log_p = student_logits.affine(1.0 / temperature, 0.0)?.log_softmax(1usize)?;
    let q = teacher_logits.affine(1.0 / temperature, 0.0)?.softmax(1usize)?;
    let soft = kl_div(&log_p, &Var::constant(q), KlReduction::BatchMean, false)?;
    let hard = cross_entropy(student_logits, targets, &CrossEntropyOptions::default())?;
    soft.mul_scalar(alpha * temperature * temperature)?.add(&hard.mul_scalar(1.0 - alpha)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::Device;

    fn var(v: Vec<f64>, shape: &[usize]) -> Var {
        Var::leaf(Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap())
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let x = var(vec![1.0, 2.0, 3.0, 0.5, 0.5, 0.5], &[2, 3]);
        let t = Tensor::from_vec(vec![2i64, 0], [2], &Device::Cpu).unwrap();
        let y = cross_entropy(&x, &t, &CrossEntropyOptions::default()).unwrap();
        let lse0 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let want = ((lse0 - 3.0) + 3f64.ln()) / 2.0;
        assert!((y.tensor().to_scalar_f64().unwrap() - want).abs() < 1e-12);
        y.backward().unwrap();
        let g = x.grad().unwrap().to_vec::<f64>().unwrap();
        // each row's gradient sums to zero (softmax - one_hot)
        assert!((g[0] + g[1] + g[2]).abs() < 1e-12 && (g[3] + g[4] + g[5]).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_problem() {
        let x = var(vec![0.0; 6], &[2, 3]);
        let bad = Tensor::from_vec(vec![3i64, 0], [2], &Device::Cpu).unwrap();
        let e = cross_entropy(&x, &bad, &CrossEntropyOptions::default()).unwrap_err().to_string();
        assert!(e.contains("target 3") && e.contains("3 classes"), "{e}");
        let shape = Tensor::from_vec(vec![0i64, 0, 0], [3], &Device::Cpu).unwrap();
        assert!(cross_entropy(&x, &shape, &CrossEntropyOptions::default()).is_err());
        let u8t = Tensor::from_vec(vec![0u8, 0], [2], &Device::Cpu).unwrap();
        assert!(cross_entropy(&x, &u8t, &CrossEntropyOptions::default()).is_err());
        let ls = CrossEntropyOptions { label_smoothing: 1.5, ..Default::default() };
        let ok = Tensor::from_vec(vec![0i64, 1], [2], &Device::Cpu).unwrap();
        assert!(cross_entropy(&x, &ok, &ls).is_err());
        let f32t = Var::constant(Tensor::zeros([2, 3], DType::F32, &Device::Cpu).unwrap());
        assert!(mse_loss(&x, &f32t, Reduction::Mean).is_err());
        assert!(kl_div(&x, &var(vec![0.0; 3], &[3]), KlReduction::Sum, false).is_err());
        assert!(distillation_loss(&x, x.tensor(), &ok, 0.0, 0.5).is_err());
    }
}
