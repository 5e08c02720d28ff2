//! CTC loss (Graves et al. 2006) and its gradient, as PyTorch's `ctc_loss` CPU kernel computes
//! them (`aten/src/ATen/native/LossCTC.cpp`), plus the fused logits path of warp-ctc.
//!
//! Algorithm, per sample `b` (input length `T_b`, target `l` of length `S`), in log space:
//! * the extended label sequence `l'` of length `L = 2S + 1` (blanks around every label); the
//!   transition `s-2 -> s` is allowed when `l'_s` is a label different from `l'_(s-2)`, so a
//!   repeated label needs a blank between its copies;
//! * the emissions `e[t][s] = log_probs[t, b, l'_s]` are gathered once into a dense
//!   `[T_b, L]` table (one strided read of `T_b · L` elements instead of re-reading the
//!   `[T, B, C]` tensor three times);
//! * `alpha[t][s] = e[t][s] + lse(alpha[t-1][s], alpha[t-1][s-1], alpha[t-1][s-2])` and
//!   `beta[t][s] = e[t][s] + lse(beta[t+1][s], beta[t+1][s+1], beta[t+1][s+2])` (both include
//!   the emission at `t`, as PyTorch's), `nll = -lse(alpha[T_b-1][L-1], alpha[T_b-1][L-2])`;
//! * the gradient PyTorch returns for `log_probs` (which assumes they came from `log_softmax`):
//!   `grad[t][c] = exp(lp[t][c]) - gamma[t][c]`, with the occupancy
//!   `gamma[t][c] = sum_{s: l'_s = c} exp(alpha[t][s] + beta[t][s] + nll - e[t][s])`, and 0 for
//!   `t >= T_b`. Composed with `log_softmax` this is exactly the gradient w.r.t. the logits
//!   (`softmax - gamma`), which the fused path returns directly (warp-ctc's formulation);
//! * an impossible alignment gives `nll = inf` and (as in PyTorch) NaN gradients for
//!   `t < T_b`, or 0 and zero gradients with `zero_infinity`.
//!
//! "Log zero" is the finite [`LOG_ZERO`] (-1e30) rather than `-inf`, so that the three-way
//! log-add-exp needs no special case (`-inf - -inf` would be NaN) and vectorises: a state only
//! reachable through log-zero stays below -1e29 and is read as impossible at the end. Rows are
//! padded with two log-zero entries so `s-1` and `s-2` (`s+1`, `s+2` for beta) need no bounds
//! test. For `f32` the row recursions use the branch-free `exp`/`ln` of this crate, compiled
//! for AVX-512 and AVX2 (16 and 8 states per instruction); `f64` uses libm.
//!
//! Parallelism: rayon over the samples; when the batch is smaller than the thread pool the
//! alpha and beta recursions of a sample run concurrently (`rayon::join`).
//!
//! Memory traffic per sample: reads `T_b · L` emissions (strided gather from the input, or
//! `T_b · C` logits for the fused path), writes and reads back the alpha and beta tables
//! (`2 · T_b · (L + 2)` elements, L2-resident for speech-sized inputs), writes `T · C`
//! gradient elements. Work: `2 · T_b · L` three-way log-add-exps plus `T_b · (L + C)` exps.

use super::reduce::downcast_f32;
use super::vmath::{self, exp_f32, multiversion};
use super::{Float, SendPtr};
use rayon::prelude::*;

/// The finite "log zero" of the recursions (see the module header).
pub const LOG_ZERO: f64 = -1e30;

/// Log-likelihoods below this are impossible alignments (`nll = inf`).
const IMPOSSIBLE: f64 = -1e29;

/// Memory layout of the `[T, B, C]` log-probabilities (or logits) and of the gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CtcLayout {
    /// `[T, B, C]`, PyTorch's layout.
    #[default]
    TimeMajor,
    /// `[B, T, C]`.
    BatchFirst,
}

/// One batch of CTC problems: the shape of the scores, the targets and the lengths.
#[derive(Clone, Copy, Debug)]
pub struct CtcProblem<'a> {
    /// `T`, the time extent of the score tensor.
    pub max_time: usize,
    /// `B`, the batch size.
    pub batch: usize,
    /// `C`, the number of classes (blank included).
    pub classes: usize,
    /// Layout of the scores and the gradient.
    pub layout: CtcLayout,
    /// The labels of all samples; sample `b`'s are `targets[target_offsets[b]..][..target_lengths[b]]`
    /// (padded `[B, S]` targets have offsets `b · S`, concatenated ones the running sum).
    pub targets: &'a [i64],
    /// Start of each sample's labels in `targets`.
    pub target_offsets: &'a [usize],
    /// Target length of each sample.
    pub target_lengths: &'a [usize],
    /// Input length (time steps used) of each sample, at most `max_time`.
    pub input_lengths: &'a [usize],
    /// The blank class.
    pub blank: usize,
}

impl CtcProblem<'_> {
    /// Checks lengths, offsets and labels; the message names the offending sample and value.
    pub fn check(&self) -> Result<(), String> {
        let b = self.batch;
        if self.input_lengths.len() != b || self.target_lengths.len() != b || self.target_offsets.len() != b {
            return Err(format!(
                "batch size {b}, but {} input lengths, {} target lengths and {} target offsets",
                self.input_lengths.len(),
                self.target_lengths.len(),
                self.target_offsets.len()
            ));
        }
        if self.blank >= self.classes {
            return Err(format!("blank {} is out of range for {} classes", self.blank, self.classes));
        }
        for i in 0..b {
            let (il, tl, off) = (self.input_lengths[i], self.target_lengths[i], self.target_offsets[i]);
            if il > self.max_time {
                return Err(format!(
                    "input length {il} of sample {i} exceeds the input's time extent {}",
                    self.max_time
                ));
            }
            if off.checked_add(tl).is_none_or(|end| end > self.targets.len()) {
                return Err(format!(
                    "target length {tl} of sample {i} (from offset {off}) exceeds the {} target labels",
                    self.targets.len()
                ));
            }
            for (j, &label) in self.targets[off..off + tl].iter().enumerate() {
                if label < 0 || label as u64 >= self.classes as u64 {
                    return Err(format!(
                        "label {label} (sample {i}, position {j}) is out of range for {} classes",
                        self.classes
                    ));
                }
                if label as usize == self.blank {
                    return Err(format!("label {label} (sample {i}, position {j}) is the blank index"));
                }
            }
        }
        Ok(())
    }

    /// Offset of the score row `(t, b)`.
    #[inline]
    fn row(&self, t: usize, b: usize) -> usize {
        match self.layout {
            CtcLayout::TimeMajor => (t * self.batch + b) * self.classes,
            CtcLayout::BatchFirst => (b * self.max_time + t) * self.classes,
        }
    }

    /// Number of score elements, `T · B · C`.
    pub fn score_len(&self) -> usize {
        self.max_time * self.batch * self.classes
    }
}

/// What the scores are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtcInput {
    /// Log-probabilities (the output of `log_softmax`); the gradient is PyTorch's.
    LogProbs,
    /// Unnormalised logits: `log_softmax` is fused in and the gradient is w.r.t. the logits.
    Logits,
}

/// Negative log-likelihood of every sample into `nll` (`[B]`), and, when `grad` is given, the
/// per-sample gradient for an upstream gradient of 1 (`[T, B, C]` or `[B, T, C]`, as the input;
/// scale row `(t, b)` by sample `b`'s upstream gradient to finish the backward pass).
///
/// `zero_infinity`: impossible alignments give 0 and zero gradients instead of `inf` and NaN.
///
/// # Panics
/// If [`CtcProblem::check`] fails or a slice length does not match the problem (callers
/// validate first).
pub fn ctc_loss<T: Float>(
    p: &CtcProblem<'_>,
    scores: &[T],
    input: CtcInput,
    zero_infinity: bool,
    nll: &mut [T],
    grad: Option<&mut [T]>,
) {
    if let Err(e) = p.check() {
        panic!("ctc_loss: {e}");
    }
    assert_eq!(scores.len(), p.score_len(), "ctc_loss: scores length");
    assert_eq!(nll.len(), p.batch, "ctc_loss: nll length");
    let grad_ptr = grad.map(|g| {
        assert_eq!(g.len(), p.score_len(), "ctc_loss: grad length");
        SendPtr(g.as_mut_ptr())
    });
    let inner_parallel = p.batch < rayon::current_num_threads();
    nll.par_iter_mut().enumerate().for_each(|(b, out)| {
        *out = sample(p, b, scores, input, zero_infinity, grad_ptr, inner_parallel);
    });
}

/// Forward and backward of sample `b`; returns its loss and writes its gradient rows.
fn sample<T: Float>(
    p: &CtcProblem<'_>,
    b: usize,
    scores: &[T],
    input: CtcInput,
    zero_infinity: bool,
    grad: Option<SendPtr<T>>,
    inner_parallel: bool,
) -> T {
    let (tb, c) = (p.input_lengths[b], p.classes);
    let labels = &p.targets[p.target_offsets[b]..p.target_offsets[b] + p.target_lengths[b]];
    let l = 2 * labels.len() + 1;
    let neg = T::from_f64_lossy(LOG_ZERO);
    let ext: Vec<usize> = (0..l).map(|s| if s % 2 == 0 { p.blank } else { labels[s / 2] as usize }).collect();
    // skip[s]: addend of the s-2 -> s transition (0 allowed, log-zero not)
    let skip: Vec<T> =
        (0..l).map(|s| if s % 2 == 1 && s >= 3 && ext[s] != ext[s - 2] { T::zero() } else { neg }).collect();

    // Log-probability rows of this sample: borrowed, or log_softmax of the logits.
    let lsm: Vec<T> = match input {
        CtcInput::LogProbs => Vec::new(),
        CtcInput::Logits => {
            let mut out = vec![T::zero(); tb * c];
            for t in 0..tb {
                let r = p.row(t, b);
                log_softmax_row(&scores[r..r + c], &mut out[t * c..(t + 1) * c]);
            }
            out
        }
    };
    let lp_row = |t: usize| -> &[T] {
        match input {
            CtcInput::LogProbs => &scores[p.row(t, b)..p.row(t, b) + c],
            CtcInput::Logits => &lsm[t * c..(t + 1) * c],
        }
    };

    // Emissions [tb, l], clamped to log-zero (a -inf log-probability must not make NaN).
    let mut e = vec![T::zero(); tb * l];
    for t in 0..tb {
        let row = lp_row(t);
        for (d, &k) in e[t * l..(t + 1) * l].iter_mut().zip(&ext) {
            *d = if row[k] > neg { row[k] } else { neg };
        }
    }

    let w = l + 2;
    let mut alpha = vec![neg; tb * w];
    let mut beta = vec![neg; tb * w];
    if tb > 0 {
        let run_alpha = |alpha: &mut [T]| alpha_table(alpha, &e, &skip, tb, l);
        let run_beta = |beta: &mut [T]| {
            if grad.is_some() {
                beta_table(beta, &e, &skip, tb, l)
            }
        };
        if inner_parallel && grad.is_some() {
            rayon::join(|| run_alpha(&mut alpha), || run_beta(&mut beta));
        } else {
            run_alpha(&mut alpha);
            run_beta(&mut beta);
        }
    }
    let ll = if tb == 0 {
        if l == 1 {
            T::zero()
        } else {
            T::neg_infinity()
        }
    } else {
        let last = &alpha[(tb - 1) * w + 2..tb * w];
        let a = last[l - 1];
        let v = if l > 1 { lse2(a, last[l - 2]) } else { a };
        if v.to_f64_lossy() < IMPOSSIBLE {
            T::neg_infinity()
        } else {
            v
        }
    };
    let mut loss = -ll;
    let impossible = loss == T::infinity();
    if impossible && zero_infinity {
        loss = T::zero();
    }

    if let Some(g) = grad {
        let row_out = |t: usize| -> &mut [T] {
            // SAFETY: row (t, b) belongs to this sample only; rows of different (t, b) are disjoint.
            unsafe { std::slice::from_raw_parts_mut(g.get().add(p.row(t, b)), c) }
        };
        for t in tb..p.max_time {
            row_out(t).fill(T::zero());
        }
        if impossible {
            // PyTorch: exp(lp) - exp(-inf + inf - lp) = NaN, or zeros with zero_infinity.
            let v = if zero_infinity { T::zero() } else { T::nan() };
            for t in 0..tb {
                row_out(t).fill(v);
            }
        } else {
            let nll_v = -ll;
            let mut post = vec![T::zero(); l];
            for t in 0..tb {
                let out = row_out(t);
                occupancy_row(
                    &alpha[t * w + 2..t * w + 2 + l],
                    &beta[t * w..t * w + l],
                    &e[t * l..(t + 1) * l],
                    nll_v,
                    &mut post,
                );
                out.copy_from_slice(lp_row(t));
                T::exp_slice(out);
                for (&k, &v) in ext.iter().zip(&post) {
                    out[k] -= v;
                }
            }
        }
    }
    loss
}

/// `log(e^a + e^b)` for finite `a`, `b`.
#[inline]
fn lse2<T: Float>(a: T, b: T) -> T {
    let m = if a > b { a } else { b };
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Fills the alpha table `[tb, l + 2]` (state `s` at column `s + 2`, columns 0 and 1 log-zero).
fn alpha_table<T: Float>(alpha: &mut [T], e: &[T], skip: &[T], tb: usize, l: usize) {
    let w = l + 2;
    alpha[2] = e[0];
    if l > 1 {
        alpha[3] = e[1];
    }
    for t in 1..tb {
        let (done, rest) = alpha.split_at_mut(t * w);
        let prev = &done[(t - 1) * w..];
        let out = &mut rest[2..w];
        let et = &e[t * l..(t + 1) * l];
        if let (Some(pf), Some(sf), Some(ef)) = (downcast_f32(prev), downcast_f32(skip), downcast_f32(et)) {
            // SAFETY: T is f32 (checked by downcast_f32 above).
            let of = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut f32, out.len()) };
            rows::alpha_step_f32(pf, sf, ef, of);
        } else {
            for s in 0..l {
                out[s] = lse3(prev[s + 2], prev[s + 1], prev[s] + skip[s]) + et[s];
            }
        }
    }
}

/// Fills the beta table `[tb, l + 2]` (state `s` at column `s`, columns `l`, `l + 1` log-zero).
fn beta_table<T: Float>(beta: &mut [T], e: &[T], skip: &[T], tb: usize, l: usize) {
    let w = l + 2;
    let last = (tb - 1) * w;
    beta[last + l - 1] = e[(tb - 1) * l + l - 1];
    if l > 1 {
        beta[last + l - 2] = e[(tb - 1) * l + l - 2];
    }
    // skip_next[s] = skip[s + 2]: the addend of the s -> s + 2 transition
    let neg = T::from_f64_lossy(LOG_ZERO);
    let skip_next: Vec<T> = (0..l).map(|s| if s + 2 < l { skip[s + 2] } else { neg }).collect();
    for t in (0..tb - 1).rev() {
        let (head, tail) = beta.split_at_mut((t + 1) * w);
        let next = &tail[..w];
        let out = &mut head[t * w..t * w + l];
        let et = &e[t * l..(t + 1) * l];
        if let (Some(nf), Some(sf), Some(ef)) = (downcast_f32(next), downcast_f32(&skip_next), downcast_f32(et)) {
            // SAFETY: T is f32 (checked by downcast_f32 above).
            let of = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut f32, out.len()) };
            rows::beta_step_f32(nf, sf, ef, of);
        } else {
            for s in 0..l {
                out[s] = lse3(next[s], next[s + 1], next[s + 2] + skip_next[s]) + et[s];
            }
        }
    }
}

/// `post[s] = exp(alpha[s] + beta[s] + nll - e[s])`: the posterior of state `s` at this time.
fn occupancy_row<T: Float>(alpha: &[T], beta: &[T], e: &[T], nll: T, post: &mut [T]) {
    for s in 0..post.len() {
        post[s] = alpha[s] + beta[s] + nll - e[s];
    }
    T::exp_slice(post);
}

/// `log(e^a + e^b + e^c)` for finite arguments (libm, the `f64` path).
#[inline]
fn lse3<T: Float>(a: T, b: T, c: T) -> T {
    let m = a.max(b).max(c);
    m + ((a - m).exp() + (b - m).exp() + (c - m).exp()).ln()
}

/// `log_softmax` of one row (the fused logits path).
fn log_softmax_row<T: Float>(x: &[T], y: &mut [T]) {
    if let Some(xf) = downcast_f32(x) {
        let m = vmath::max_f32(xf);
        let shift = m + vmath::exp_shift_sum_only_f32(xf, m).ln();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v - T::from_f64_lossy(shift as f64);
        }
        return;
    }
    let m = x.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
    let s: T = x.iter().map(|&v| (v - m).exp()).sum();
    let shift = m + s.ln();
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v - shift;
    }
}

/// `ln x` for positive normal `x`, branch-free (Cephes `logf`: `x = 2^k m`, `m` in
/// `[sqrt(1/2), sqrt(2))`, a degree-9 polynomial in `m - 1`); within 2 ulp.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut k = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    k -= small as i32;
    let f = if small { m + m - 1.0 } else { m - 1.0 };
    let kf = k as f32;
    let z = f * f;
    let mut y = 7.037_683_6e-2_f32;
    y = y * f - 1.151_461_1e-1;
    y = y * f + 1.167_699_9e-1;
    y = y * f - 1.242_014_1e-1;
    y = y * f + 1.424_932_3e-1;
    y = y * f - 1.666_805_8e-1;
    y = y * f + 2.000_071_5e-1;
    y = y * f - 2.499_999_4e-1;
    y = y * f + 0.333_333_3;
    y = y * f * z;
    y += kf * -2.121_944_4e-4;
    y += -0.5 * z;
    f + y + kf * 0.693_359_4
}

/// `log(e^a + e^b + e^c)` in `f32` for finite arguments, vectorisable.
#[inline(always)]
fn lse3_f32(a: f32, b: f32, c: f32) -> f32 {
    let m = a.max(b).max(c);
    m + ln_f32(exp_f32(a - m) + exp_f32(b - m) + exp_f32(c - m))
}

/// The vectorised `f32` row steps (compiled for AVX-512, AVX2 and the baseline).
mod rows {
    use super::*;

    multiversion! {
        /// `out[s] = e[s] + lse(prev[s + 2], prev[s + 1], prev[s] + skip[s])` (`prev` padded by 2 in front).
        pub fn alpha_step_f32(prev: &[f32], skip: &[f32], e: &[f32], out: &mut [f32]) {
            let l = out.len();
            let (p0, p1, p2, skip, e) = (&prev[..l], &prev[1..l + 1], &prev[2..l + 2], &skip[..l], &e[..l]);
            for s in 0..l {
                out[s] = lse3_f32(p2[s], p1[s], p0[s] + skip[s]) + e[s];
            }
        }
    }

    multiversion! {
        /// `out[s] = e[s] + lse(next[s], next[s + 1], next[s + 2] + skip_next[s])` (`next` padded by 2 behind).
        pub fn beta_step_f32(next: &[f32], skip_next: &[f32], e: &[f32], out: &mut [f32]) {
            let l = out.len();
            let (n0, n1, n2, skip, e) = (&next[..l], &next[1..l + 1], &next[2..l + 2], &skip_next[..l], &e[..l]);
            for s in 0..l {
                out[s] = lse3_f32(n0[s], n1[s], n2[s] + skip[s]) + e[s];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_rng::Rng;

    /// Brute force over all `C^T` paths: the loss and `exp(lp) - gamma` (tiny problems only).
    fn brute_force(lp: &[f64], t_len: usize, c: usize, target: &[i64], blank: usize) -> (f64, Vec<f64>) {
        let mut total = 0.0;
        let mut occ = vec![0.0; t_len * c];
        let mut path = vec![0usize; t_len];
        for code in 0..c.pow(t_len as u32) {
            let mut k = code;
            for p in path.iter_mut() {
                *p = k % c;
                k /= c;
            }
            let mut collapsed = Vec::new();
            let mut prev = usize::MAX;
            for &q in &path {
                if q != prev && q != blank {
                    collapsed.push(q as i64);
                }
                prev = q;
            }
            if collapsed != target {
                continue;
            }
            let pr: f64 = path.iter().enumerate().map(|(t, &q)| lp[t * c + q].exp()).product();
            total += pr;
            for (t, &q) in path.iter().enumerate() {
                occ[t * c + q] += pr;
            }
        }
        let grad = (0..t_len * c).map(|i| lp[i].exp() - occ[i] / total).collect();
        (-total.ln(), grad)
    }

    fn log_softmax_rows(x: &[f64], c: usize) -> Vec<f64> {
        x.chunks(c)
            .flat_map(|r| {
                let m = r.iter().cloned().fold(f64::MIN, f64::max);
                let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
                r.iter().map(move |v| v - m - s.ln()).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_enumeration() {
        let mut rng = Rng(7);
        let (t_len, c) = (5, 4);
        // repeated labels, a target needing every frame, blank != 0, empty target
        for (target, blank) in [(vec![1i64, 2], 0), (vec![1, 1], 0), (vec![2, 2, 1], 0), (vec![0, 2], 3), (vec![], 1)] {
            let lp = log_softmax_rows(&rng.vec(t_len * c).iter().map(|v| 2.0 * v).collect::<Vec<_>>(), c);
            let (want, want_grad) = brute_force(&lp, t_len, c, &target, blank);
            let p = CtcProblem {
                max_time: t_len,
                batch: 1,
                classes: c,
                layout: CtcLayout::TimeMajor,
                targets: &target,
                target_offsets: &[0],
                target_lengths: &[target.len()],
                input_lengths: &[t_len],
                blank,
            };
            let (mut nll, mut grad) = ([0.0f64], vec![0.0f64; t_len * c]);
            ctc_loss(&p, &lp, CtcInput::LogProbs, false, &mut nll, Some(&mut grad));
            assert!((nll[0] - want).abs() < 1e-12, "{target:?}: {} vs {want}", nll[0]);
            for (g, w) in grad.iter().zip(&want_grad) {
                assert!((g - w).abs() < 1e-12, "{target:?}: grad {g} vs {w}");
            }
            // f32 agrees with f64 to f32 precision
            let lp32: Vec<f32> = lp.iter().map(|&v| v as f32).collect();
            let (mut nll32, mut grad32) = ([0.0f32], vec![0.0f32; t_len * c]);
            ctc_loss(&p, &lp32, CtcInput::LogProbs, false, &mut nll32, Some(&mut grad32));
            assert!((nll32[0] as f64 - want).abs() < 1e-5 * want.abs().max(1.0));
            for (g, w) in grad32.iter().zip(&want_grad) {
                assert!((*g as f64 - w).abs() < 1e-5, "f32 grad {g} vs {w}");
            }
        }
    }

    #[test]
    fn logits_path_equals_log_probs_path_and_layouts_agree() {
        let mut rng = Rng(11);
        let (t_len, b, c) = (7, 3, 5);
        let x: Vec<f64> = rng.vec(t_len * b * c).iter().map(|v| 3.0 * v).collect();
        let lp = log_softmax_rows(&x, c);
        let targets = [1i64, 2, 2, 3, 4, 4, 1, 0, 0];
        let mk = |layout| CtcProblem {
            max_time: t_len,
            batch: b,
            classes: c,
            layout,
            targets: &targets,
            target_offsets: &[0, 3, 6],
            target_lengths: &[3, 2, 1],
            input_lengths: &[7, 5, 1],
            blank: 0,
        };
        let p = mk(CtcLayout::TimeMajor);
        let (mut n1, mut g1) = (vec![0.0; b], vec![0.0; t_len * b * c]);
        ctc_loss(&p, &lp, CtcInput::LogProbs, false, &mut n1, Some(&mut g1));
        let (mut n2, mut g2) = (vec![0.0; b], vec![0.0; t_len * b * c]);
        ctc_loss(&p, &x, CtcInput::Logits, false, &mut n2, Some(&mut g2));
        for (a, e) in n1.iter().zip(&n2).chain(g1.iter().zip(&g2)) {
            assert!((a - e).abs() < 1e-12, "{a} vs {e}");
        }
        // batch-first: transpose [T, B, C] -> [B, T, C]
        let tr = |v: &[f64]| {
            let mut o = vec![0.0; v.len()];
            for t in 0..t_len {
                for bb in 0..b {
                    for k in 0..c {
                        o[(bb * t_len + t) * c + k] = v[(t * b + bb) * c + k];
                    }
                }
            }
            o
        };
        let (mut n3, mut g3) = (vec![0.0; b], vec![0.0; t_len * b * c]);
        ctc_loss(&mk(CtcLayout::BatchFirst), &tr(&lp), CtcInput::LogProbs, false, &mut n3, Some(&mut g3));
        assert_eq!(n1, n3);
        assert_eq!(tr(&g1), g3);
        // rows past the input length have zero gradient
        assert!(n1.iter().all(|v| v.is_finite()));
        assert!((0..c).all(|k| g1[(6 * b + 1) * c + k] == 0.0));
    }

    #[test]
    fn impossible_alignments_and_zero_infinity() {
        // two repeated labels need 3 frames; 2 are given
        let targets = [1i64, 1];
        let p = CtcProblem {
            max_time: 2,
            batch: 1,
            classes: 3,
            layout: CtcLayout::TimeMajor,
            targets: &targets,
            target_offsets: &[0],
            target_lengths: &[2],
            input_lengths: &[2],
            blank: 0,
        };
        let lp = vec![(1.0f32 / 3.0).ln(); 6];
        let (mut nll, mut g) = ([0.0f32], vec![0.0f32; 6]);
        ctc_loss(&p, &lp, CtcInput::LogProbs, false, &mut nll, Some(&mut g));
        assert_eq!(nll[0], f32::INFINITY);
        assert!(g.iter().all(|v| v.is_nan()));
        ctc_loss(&p, &lp, CtcInput::LogProbs, true, &mut nll, Some(&mut g));
        assert_eq!(nll[0], 0.0);
        assert!(g.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn check_names_bad_input() {
        let targets = [1i64, 5, 0];
        let mut p = CtcProblem {
            max_time: 4,
            batch: 1,
            classes: 5,
            layout: CtcLayout::TimeMajor,
            targets: &targets,
            target_offsets: &[0],
            target_lengths: &[2],
            input_lengths: &[4],
            blank: 0,
        };
        assert!(p.check().unwrap_err().contains("label 5"));
        (p.target_offsets, p.target_lengths) = (&[2], &[1]);
        assert!(p.check().unwrap_err().contains("blank"));
        (p.target_offsets, p.target_lengths) = (&[1], &[3]);
        assert!(p.check().unwrap_err().contains("exceeds the 3 target labels"));
        p.target_lengths = &[0];
        p.input_lengths = &[5];
        assert!(p.check().unwrap_err().contains("input length 5"));
    }

    #[test]
    fn ln_f32_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = 1e-30f32;
        while x < 1e30 {
            let want = (x as f64).ln();
            let err = (ln_f32(x) as f64 - want).abs() / want.abs().max(1.0);
            worst = worst.max(err);
            x *= 1.000_37;
        }
        assert!(worst < 3.0 * f32::EPSILON as f64, "worst {worst}");
        assert_eq!(ln_f32(1.0), 0.0);
    }
}
