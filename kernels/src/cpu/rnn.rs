//! Fused pointwise kernels of the recurrent layers (LSTM, GRU), one time step at a time, and
//! the strided GEMM with explicit threading that the recurrent drivers call.
//!
//! A recurrent layer spends its time in GEMMs (the input projection of all time steps at once,
//! one small `[B, H] x [H, G·H]` product per step, and the weight gradients over all steps);
//! everything else is the gate arithmetic below, fused so that each step reads and writes every
//! gate element once:
//!
//! * [`lstm_step_forward`]: pre-activations `[B, 4H]` (gate order i, f, g, o, as PyTorch) →
//!   activations (kept for backward, written in place), `c_t = f·c_{t-1} + i·g`,
//!   `h_t = o·tanh(c_t)`. Traffic per step: reads `4BH + 2BH`, writes `4BH + 3BH` values.
//! * [`lstm_step_backward`]: the saved activations, `c_{t-1}`, `tanh(c_t)` and the incoming
//!   `dh`, `dc`, `dy` → pre-activation gradients `[B, 4H]` and `dc_{t-1}`; `dh` is zeroed so the
//!   caller's GEMM can accumulate `dgates · W_hh` into it.
//! * [`gru_step_forward`] / [`gru_step_backward`]: the same for PyTorch's GRU (gate order r, z, n,
//!   `n = tanh(W_in x + b_in + r·(W_hn h + b_hn))`, `h' = (1 - z)·n + z·h`).
//!
//! Variable-length batches: every kernel takes `active[b]`, whether row `b` has a real frame at
//! this step. An inactive row carries its state through unchanged (`h_t = h_{t-1}`,
//! `c_t = c_{t-1}`), gets all-zero saved activations and gate gradients, and passes its state
//! gradients through unchanged in backward. That is what packed sequences do in PyTorch.
//!
//! `f32` activations use the branch-free [`vmath::exp_f32`](super::vmath::exp_f32) in loops
//! compiled for AVX-512 and AVX2 (chosen at run time); `f64` uses the standard library.

use super::vmath::{exp_f32, multiversion};
use super::Float;

/// The activations a recurrent cell needs, applied to a whole slice (vectorised for `f32`).
pub trait RnnFloat: Float {
    /// `x = 1 / (1 + e^-x)` for every element.
    fn sigmoid_inplace(xs: &mut [Self]);
    /// `x = tanh(x)` for every element.
    fn tanh_inplace(xs: &mut [Self]);
    /// The LSTM cell of one batch row, given its gate pre-activations `i, f, g, o` (each
    /// `[H]`, replaced by their activations) and `c_prev`: writes `c = σ(f)·c_prev + σ(i)·tanh(g)`,
    /// `tanh_c = tanh(c)` and `h = σ(o)·tanh_c`. `f32` does it in one vectorised pass.
    #[allow(clippy::too_many_arguments)]
    fn lstm_cell(
        i: &mut [Self],
        f: &mut [Self],
        g: &mut [Self],
        o: &mut [Self],
        c_prev: &[Self],
        c: &mut [Self],
        h: &mut [Self],
        tanh_c: &mut [Self],
    ) {
        Self::sigmoid_inplace(i);
        Self::sigmoid_inplace(f);
        Self::tanh_inplace(g);
        Self::sigmoid_inplace(o);
        for j in 0..i.len() {
            let cv = f[j] * c_prev[j] + i[j] * g[j];
            c[j] = cv;
            tanh_c[j] = cv;
        }
        Self::tanh_inplace(tanh_c);
        for j in 0..i.len() {
            h[j] = o[j] * tanh_c[j];
        }
    }
}

/// `tanh` in `f32` without branches: an odd polynomial for `|x| < 0.0625` (relative error
/// below 1e-9 there), else `(1 - e) / (1 + e)` with `e = exp(-2|x|)`; absolute error ≤ 2e-7.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let e = exp_f32(-2.0 * a);
    let big = (1.0 - e) / (1.0 + e);
    let x2 = x * x;
    // tanh x = x - x³/3 + 2x⁵/15 - 17x⁷/315 + ...
    let small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    let r = if a < 0.0625 { small } else { big.copysign(x) };
    if x.is_nan() {
        x
    } else {
        r
    }
}

/// The logistic sigmoid in `f32` without branches (0 and 1 at the extremes, no NaN).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

multiversion! {
    /// `x = sigmoid(x)` for every element of an `f32` slice.
    pub fn sigmoid_f32_inplace(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = sigmoid_f32(*x);
        }
    }
}

multiversion! {
    /// `x = tanh(x)` for every element of an `f32` slice.
    pub fn tanh_f32_inplace(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = tanh_f32(*x);
        }
    }
}

/// The per-row arguments of [`lstm_cell_f32`].
pub struct LstmCellRow<'a> {
    /// Gate pre-activations in, activations out: `i`, `f`, `g`, `o`, each `[H]`.
    pub gates: [&'a mut [f32]; 4],
    /// `c_{t-1}` `[H]`.
    pub c_prev: &'a [f32],
    /// `c_t`, `h_t`, `tanh(c_t)` out, each `[H]`.
    pub out: [&'a mut [f32]; 3],
}

multiversion! {
    /// [`RnnFloat::lstm_cell`] for `f32` in a single pass over the row (each element's five
    /// activations and the state update at once).
    pub fn lstm_cell_f32(row: LstmCellRow<'_>) {
        let LstmCellRow { gates: [i, f, g, o], c_prev, out: [c, h, tanh_c] } = row;
        let n = i.len();
        let (f, g, o, c_prev) = (&mut f[..n], &mut g[..n], &mut o[..n], &c_prev[..n]);
        let (c, h, tanh_c) = (&mut c[..n], &mut h[..n], &mut tanh_c[..n]);
        for j in 0..n {
            let (iv, fv, gv, ov) = (sigmoid_f32(i[j]), sigmoid_f32(f[j]), tanh_f32(g[j]), sigmoid_f32(o[j]));
            let cv = fv * c_prev[j] + iv * gv;
            let tc = tanh_f32(cv);
            i[j] = iv;
            f[j] = fv;
            g[j] = gv;
            o[j] = ov;
            c[j] = cv;
            tanh_c[j] = tc;
            h[j] = ov * tc;
        }
    }
}

impl RnnFloat for f32 {
    fn sigmoid_inplace(xs: &mut [f32]) {
        sigmoid_f32_inplace(xs)
    }
    fn tanh_inplace(xs: &mut [f32]) {
        tanh_f32_inplace(xs)
    }
    fn lstm_cell(
        i: &mut [f32],
        f: &mut [f32],
        g: &mut [f32],
        o: &mut [f32],
        c_prev: &[f32],
        c: &mut [f32],
        h: &mut [f32],
        tanh_c: &mut [f32],
    ) {
        lstm_cell_f32(LstmCellRow { gates: [i, f, g, o], c_prev, out: [c, h, tanh_c] })
    }
}

impl RnnFloat for f64 {
    fn sigmoid_inplace(xs: &mut [f64]) {
        for x in xs {
            *x = 1.0 / (1.0 + (-*x).exp());
        }
    }
    fn tanh_inplace(xs: &mut [f64]) {
        for x in xs {
            *x = x.tanh();
        }
    }
}

/// One LSTM time step for a batch (see the module header).
///
/// * `gates` `[B, 4H]`: on entry the pre-activations `x W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh`
///   (i, f, g, o); on return the activations `σ(i), σ(f), tanh(g), σ(o)` (zeros for inactive
///   rows), which [`lstm_step_backward`] needs.
/// * `c_prev`, `h_prev` `[B, H]`: the state before the step.
/// * `c`, `h`, `tanh_c` `[B, H]`: the state after the step and `tanh(c)` (zeros for inactive
///   rows; their `c`, `h` are copies of the previous state).
///
/// # Panics
/// If a slice is shorter than its shape says (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_forward<T: RnnFloat>(
    hidden: usize,
    active: &[bool],
    gates: &mut [T],
    c_prev: &[T],
    h_prev: &[T],
    c: &mut [T],
    h: &mut [T],
    tanh_c: &mut [T],
) {
    let hd = hidden;
    let zero = T::zero();
    for (b, &on) in active.iter().enumerate() {
        let g = &mut gates[b * 4 * hd..(b + 1) * 4 * hd];
        let rows = b * hd..(b + 1) * hd;
        let (cp, hp) = (&c_prev[rows.clone()], &h_prev[rows.clone()]);
        let (cr, hr, tc) = (&mut c[rows.clone()], &mut h[rows.clone()], &mut tanh_c[rows]);
        if !on {
            g.fill(zero);
            tc.fill(zero);
            cr.copy_from_slice(cp);
            hr.copy_from_slice(hp);
            continue;
        }
        let (ig, rest) = g.split_at_mut(hd);
        let (fg, rest) = rest.split_at_mut(hd);
        let (gg, og) = rest.split_at_mut(hd);
        T::lstm_cell(ig, fg, gg, og, cp, cr, hr, tc);
    }
}

/// The gradient of one LSTM time step (see the module header).
///
/// * `gates`, `c_prev`, `tanh_c`: what [`lstm_step_forward`] saved for this step.
/// * `dy`: the gradient of this step's output, row `b` at `dy[b * dy_stride..][..H]` (the
///   layer output interleaves the directions), or `None`.
/// * `dh` `[B, H]`: on entry the gradient of `h_t` from later steps; on return 0 for active
///   rows (the caller adds `dgates · W_hh`), unchanged for inactive rows.
/// * `dc` `[B, H]`: on entry the gradient of `c_t`; on return that of `c_{t-1}`.
/// * `dgates` `[B, 4H]`: the gradient of the pre-activations (zeros for inactive rows).
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_backward<T: RnnFloat>(
    hidden: usize,
    active: &[bool],
    gates: &[T],
    c_prev: &[T],
    tanh_c: &[T],
    dy: Option<(&[T], usize)>,
    dh: &mut [T],
    dc: &mut [T],
    dgates: &mut [T],
) {
    let hd = hidden;
    let one = T::one();
    for (b, &on) in active.iter().enumerate() {
        let dg = &mut dgates[b * 4 * hd..(b + 1) * 4 * hd];
        if !on {
            dg.fill(T::zero());
            continue;
        }
        let g = &gates[b * 4 * hd..(b + 1) * 4 * hd];
        let rows = b * hd..(b + 1) * hd;
        let (cp, tc) = (&c_prev[rows.clone()], &tanh_c[rows.clone()]);
        let (dhr, dcr) = (&mut dh[rows.clone()], &mut dc[rows]);
        let dyr = dy.map(|(d, stride)| &d[b * stride..b * stride + hd]);
        let (di, rest) = dg.split_at_mut(hd);
        let (df, rest) = rest.split_at_mut(hd);
        let (dgg, dout) = rest.split_at_mut(hd);
        for j in 0..hd {
            let (i, f, gg, o) = (g[j], g[hd + j], g[2 * hd + j], g[3 * hd + j]);
            let dht = match dyr {
                Some(d) => dhr[j] + d[j],
                None => dhr[j],
            };
            let t = tc[j];
            let dct = dcr[j] + dht * o * (one - t * t);
            dout[j] = dht * t * o * (one - o);
            di[j] = dct * gg * i * (one - i);
            df[j] = dct * cp[j] * f * (one - f);
            dgg[j] = dct * i * (one - gg * gg);
            dcr[j] = dct * f;
            dhr[j] = T::zero();
        }
    }
}

/// One GRU time step for a batch (see the module header).
///
/// * `gi` `[B, 3H]`: `x W_ihᵀ + b_ih` (r, z, n).
/// * `gh` `[B, 3H]`: `h_{t-1} W_hhᵀ + b_hh`.
/// * `saved` `[B, 4H]`: on return `r, z, n` and `W_hn h_{t-1} + b_hn` for backward (zeros for
///   inactive rows).
/// * `h_prev`, `h` `[B, H]`: the state before and after the step.
pub fn gru_step_forward<T: RnnFloat>(
    hidden: usize,
    active: &[bool],
    gi: &[T],
    gh: &[T],
    saved: &mut [T],
    h_prev: &[T],
    h: &mut [T],
) {
    let hd = hidden;
    for (b, &on) in active.iter().enumerate() {
        let s = &mut saved[b * 4 * hd..(b + 1) * 4 * hd];
        let rows = b * hd..(b + 1) * hd;
        let (hp, hr) = (&h_prev[rows.clone()], &mut h[rows]);
        if !on {
            s.fill(T::zero());
            hr.copy_from_slice(hp);
            continue;
        }
        let x = &gi[b * 3 * hd..(b + 1) * 3 * hd];
        let y = &gh[b * 3 * hd..(b + 1) * 3 * hd];
        for j in 0..2 * hd {
            s[j] = x[j] + y[j];
        }
        T::sigmoid_inplace(&mut s[..2 * hd]);
        let (rz, nh) = s.split_at_mut(2 * hd);
        let (n, hn) = nh.split_at_mut(hd);
        for j in 0..hd {
            hn[j] = y[2 * hd + j];
            n[j] = x[2 * hd + j] + rz[j] * hn[j];
        }
        T::tanh_inplace(n);
        for j in 0..hd {
            let z = rz[hd + j];
            hr[j] = n[j] + z * (hp[j] - n[j]);
        }
    }
}

/// The gradient of one GRU time step (see the module header).
///
/// * `saved`, `h_prev`: what [`gru_step_forward`] saved and read for this step.
/// * `dy`: as in [`lstm_step_backward`].
/// * `dh` `[B, H]`: on entry the gradient of `h_t`; on return, for active rows, the part of the
///   gradient of `h_{t-1}` that does not go through `W_hh` (`dh_t · z`; the caller adds
///   `dgh · W_hh`), unchanged for inactive rows.
/// * `dgi`, `dgh` `[B, 3H]`: gradients of `x W_ihᵀ + b_ih` and of `h W_hhᵀ + b_hh` (zeros for
///   inactive rows).
#[allow(clippy::too_many_arguments)]
pub fn gru_step_backward<T: RnnFloat>(
    hidden: usize,
    active: &[bool],
    saved: &[T],
    h_prev: &[T],
    dy: Option<(&[T], usize)>,
    dh: &mut [T],
    dgi: &mut [T],
    dgh: &mut [T],
) {
    let hd = hidden;
    let one = T::one();
    for (b, &on) in active.iter().enumerate() {
        let gi = &mut dgi[b * 3 * hd..(b + 1) * 3 * hd];
        let gh = &mut dgh[b * 3 * hd..(b + 1) * 3 * hd];
        if !on {
            gi.fill(T::zero());
            gh.fill(T::zero());
            continue;
        }
        let s = &saved[b * 4 * hd..(b + 1) * 4 * hd];
        let rows = b * hd..(b + 1) * hd;
        let (hp, dhr) = (&h_prev[rows.clone()], &mut dh[rows]);
        let dyr = dy.map(|(d, stride)| &d[b * stride..b * stride + hd]);
        for j in 0..hd {
            let (r, z, n, hn) = (s[j], s[hd + j], s[2 * hd + j], s[3 * hd + j]);
            let dht = match dyr {
                Some(d) => dhr[j] + d[j],
                None => dhr[j],
            };
            let dn = dht * (one - z) * (one - n * n);
            let dz = dht * (hp[j] - n) * z * (one - z);
            let dr = dn * hn * r * (one - r);
            gi[j] = dr;
            gh[j] = dr;
            gi[hd + j] = dz;
            gh[hd + j] = dz;
            gi[2 * hd + j] = dn;
            gh[2 * hd + j] = dn * r;
            dhr[j] = dht * z;
        }
    }
}

/// A strided matrix operand: element `(i, j)` at `offset + i * row_stride + j * col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    /// Element index of element `(0, 0)`.
    pub offset: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
}

impl Strided {
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub fn rows(offset: usize, cols: usize) -> Strided {
        Strided { offset, row_stride: cols, col_stride: 1 }
    }
    /// The transpose of this operand.
    pub fn t(self) -> Strided {
        Strided { row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }
    fn last(&self, r: usize, c: usize) -> usize {
        self.offset + r.saturating_sub(1) * self.row_stride + c.saturating_sub(1) * self.col_stride
    }
}

/// `dst = (accumulate ? dst : 0) + lhs @ rhs` with `lhs` `[m, k]`, `rhs` `[k, n]`, `dst`
/// `[m, n]`, through the `gemm` crate, on `threads` threads of the current rayon pool
/// (`1`: the calling thread only, which is what a caller that already runs one product per
/// thread wants).
///
/// The `gemm` microkernel runs fastest when the operand that maps onto the longer side of a
/// row-major `dst` is contiguous along that side (no packing): a recurrent step `h W_hhᵀ`
/// therefore wants `W_hhᵀ` stored `[H, G·H]`.
///
/// # Panics
/// If an operand addresses memory outside its slice (a caller bug, checked up front).
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_l: Strided,
    accumulate: bool,
    lhs: &[T],
    lhs_l: Strided,
    rhs: &[T],
    rhs_l: Strided,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_l.last(m, n) < dst.len(), "gemm_strided: dst out of bounds");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[dst_l.offset + i * dst_l.row_stride + j * dst_l.col_stride] = T::zero();
                }
            }
        }
        return;
    }
    assert!(lhs_l.last(m, k) < lhs.len(), "gemm_strided: lhs out of bounds");
    assert!(rhs_l.last(k, n) < rhs.len(), "gemm_strided: rhs out of bounds");
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the bounds of all three operands were checked above; dst does not alias lhs or
    // rhs (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_l.offset),
            dst_l.col_stride as isize,
            dst_l.row_stride as isize,
            accumulate,
            lhs.as_ptr().add(lhs_l.offset),
            lhs_l.col_stride as isize,
            lhs_l.row_stride as isize,
            rhs.as_ptr().add(rhs_l.offset),
            rhs_l.col_stride as isize,
            rhs_l.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_rng::Rng;

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn f32_activations_are_accurate() {
        let mut worst_t = 0f64;
        let mut worst_s = 0f64;
        let mut x = -20.0f32;
        while x < 20.0 {
            worst_t = worst_t.max((tanh_f32(x) as f64 - (x as f64).tanh()).abs());
            worst_s = worst_s.max((sigmoid_f32(x) as f64 - sig(x as f64)).abs());
            x += 0.001;
        }
        assert!(worst_t < 3e-7 && worst_s < 2e-7, "{worst_t} {worst_s}");
        for x in [1e-30f32, -1e-5, 0.01, 0.0624, -0.0626] {
            assert!(((tanh_f32(x) as f64 - (x as f64).tanh()) / (x as f64).tanh()).abs() < 1e-6, "{x}");
        }
        assert_eq!(tanh_f32(100.0), 1.0);
        assert_eq!(tanh_f32(-100.0), -1.0);
        assert_eq!(sigmoid_f32(-200.0), 0.0);
        assert_eq!(sigmoid_f32(200.0), 1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        let mut v: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let want: Vec<f32> = v.iter().map(|&x| tanh_f32(x)).collect();
        f32::tanh_inplace(&mut v);
        assert_eq!(v, want);
    }

    /// LSTM step against the formulas, in f64, with one inactive row; and the backward step
    /// against central finite differences of a weighted sum of (h, c).
    #[test]
    fn lstm_step_matches_formulas_and_finite_differences() {
        let (bsz, hd) = (3, 5);
        let mut rng = Rng(7);
        let pre = rng.vec(bsz * 4 * hd);
        let (cp, hp) = (rng.vec(bsz * hd), rng.vec(bsz * hd));
        let (wh, wc) = (rng.vec(bsz * hd), rng.vec(bsz * hd));
        let active = [true, false, true];
        let run = |pre: &[f64], cp: &[f64]| {
            let mut g = pre.to_vec();
            let (mut c, mut h, mut tc) = (vec![0.0; bsz * hd], vec![0.0; bsz * hd], vec![0.0; bsz * hd]);
            lstm_step_forward(hd, &active, &mut g, cp, &hp, &mut c, &mut h, &mut tc);
            (g, c, h, tc)
        };
        let (g, c, h, tc) = run(&pre, &cp);
        for b in 0..bsz {
            for j in 0..hd {
                let k = b * hd + j;
                if !active[b] {
                    assert_eq!((c[k], h[k]), (cp[k], hp[k]));
                    continue;
                }
                let p = |q: usize| pre[b * 4 * hd + q * hd + j];
                let want_c = sig(p(1)) * cp[k] + sig(p(0)) * p(2).tanh();
                assert!((c[k] - want_c).abs() < 1e-14);
                assert!((h[k] - sig(p(3)) * want_c.tanh()).abs() < 1e-14);
            }
        }
        let loss = |pre: &[f64], cp: &[f64]| {
            let (_, c, h, _) = run(pre, cp);
            (0..bsz * hd).map(|k| wh[k] * h[k] + wc[k] * c[k]).sum::<f64>()
        };
        let (mut dh, mut dc) = (wh.clone(), wc.clone());
        let mut dg = vec![0.0; bsz * 4 * hd];
        lstm_step_backward(hd, &active, &g, &cp, &tc, None, &mut dh, &mut dc, &mut dg);
        let eps = 1e-6;
        for q in 0..pre.len() {
            let (mut a, mut b) = (pre.clone(), pre.clone());
            a[q] += eps;
            b[q] -= eps;
            let fd = (loss(&a, &cp) - loss(&b, &cp)) / (2.0 * eps);
            assert!((fd - dg[q]).abs() < 1e-8, "dgates[{q}]: {fd} vs {}", dg[q]);
        }
        for k in 0..bsz * hd {
            if !active[k / hd] {
                assert_eq!((dh[k], dc[k]), (wh[k], wc[k]), "inactive rows pass gradients through");
                continue;
            }
            assert_eq!(dh[k], 0.0);
            let (mut a, mut b) = (cp.clone(), cp.clone());
            a[k] += eps;
            b[k] -= eps;
            let fd = (loss(&pre, &a) - loss(&pre, &b)) / (2.0 * eps);
            assert!((fd - dc[k]).abs() < 1e-8, "dc[{k}]");
        }
    }

    /// GRU step backward against central finite differences of a weighted sum of h.
    #[test]
    fn gru_step_matches_finite_differences() {
        let (bsz, hd) = (2, 4);
        let mut rng = Rng(11);
        let (gi, gh, hp, w) = (rng.vec(bsz * 3 * hd), rng.vec(bsz * 3 * hd), rng.vec(bsz * hd), rng.vec(bsz * hd));
        let active = [true, true];
        let run = |gi: &[f64], gh: &[f64], hp: &[f64]| {
            let (mut s, mut h) = (vec![0.0; bsz * 4 * hd], vec![0.0; bsz * hd]);
            gru_step_forward(hd, &active, gi, gh, &mut s, hp, &mut h);
            (s, h)
        };
        let loss =
            |gi: &[f64], gh: &[f64], hp: &[f64]| run(gi, gh, hp).1.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
        let (s, h) = run(&gi, &gh, &hp);
        let (r, z) = (sig(gi[0] + gh[0]), sig(gi[hd] + gh[hd]));
        let n = (gi[2 * hd] + r * gh[2 * hd]).tanh();
        assert!((h[0] - ((1.0 - z) * n + z * hp[0])).abs() < 1e-14 && (s[2 * hd] - n).abs() < 1e-14);
        let mut dh = w.clone();
        let (mut dgi, mut dgh) = (vec![0.0; gi.len()], vec![0.0; gh.len()]);
        gru_step_backward(hd, &active, &s, &hp, None, &mut dh, &mut dgi, &mut dgh);
        let eps = 1e-6;
        let fd = |which: usize, q: usize| {
            let mut v = [gi.clone(), gh.clone(), hp.clone()];
            v[which][q] += eps;
            let a = loss(&v[0], &v[1], &v[2]);
            v[which][q] -= 2.0 * eps;
            (a - loss(&v[0], &v[1], &v[2])) / (2.0 * eps)
        };
        for q in 0..gi.len() {
            assert!((fd(0, q) - dgi[q]).abs() < 1e-8, "dgi[{q}]");
            assert!((fd(1, q) - dgh[q]).abs() < 1e-8, "dgh[{q}]");
        }
        for (q, d) in dh.iter().enumerate() {
            assert!((fd(2, q) - d).abs() < 1e-8, "dh[{q}] (direct part)");
        }
    }

    #[test]
    fn gemm_strided_matches_naive() {
        let (m, n, k) = (6, 4, 9);
        let mut rng = Rng(3);
        let a = rng.vec(m * k);
        let bt = rng.vec(n * k); // rhs stored transposed [n, k]
        let mut d = rng.vec(m * n);
        let d0 = d.clone();
        gemm_strided(
            m,
            n,
            k,
            &mut d,
            Strided::rows(0, n),
            true,
            &a,
            Strided::rows(0, k),
            &bt,
            Strided::rows(0, k).t(),
            1,
        );
        for i in 0..m {
            for j in 0..n {
                let want = d0[i * n + j] + (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f64>();
                assert!((d[i * n + j] - want).abs() < 1e-12);
            }
        }
    }
}
