//! 2-D max and average pooling on NCHW slices, forward and backward, with PyTorch's semantics.
//!
//! Algorithm: one rayon task per group of `(n, c)` planes. Within a plane, for each output row
//! the kernel taps are visited in PyTorch's window order (`ky` outer, `kx` inner) and each tap
//! updates a whole row of outputs: `acc[ox] = op(acc[ox], in[iy][ox*sw + kx*dw - pw])` over the
//! precomputed range of `ox` whose input column is inside the image. The inner loop is a
//! contiguous (stride 1) or strided row sweep with no bounds tests, so it vectorises; visiting
//! taps in window order per output keeps PyTorch's tie-breaking (first maximum wins) and NaN
//! rule (a NaN is the maximum; a later NaN replaces an earlier one).
//!
//! Backward scatters `grad_out` into a zeroed `grad_in` plane: max pool through the saved
//! argmax, average pool through the same tap sweep with `grad_out / divisor`.
//!
//! Memory traffic: forward reads each input row about `kh` times from L1/L2 (one plane is
//! usually cache resident) and writes the output (+ i64 argmax) once; backward reads
//! `grad_out` (+ argmax) once and writes `grad_in` once.

use super::{Float, PAR_CHUNK};
use rayon::prelude::*;

/// Geometry of a 2-D pooling. Tuples are `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    /// Max pool only; average pool uses `(1, 1)`.
    pub dilation: (usize, usize),
    pub ceil_mode: bool,
    /// Average pool only (PyTorch's default is `true`).
    pub count_include_pad: bool,
}

/// PyTorch's `pooling_output_shape`: floor or ceil division, and with `ceil_mode` the last
/// window must start inside the input or the left padding.
fn pool_out_len(i: usize, k: usize, s: usize, p: usize, d: usize, ceil_mode: bool) -> usize {
    let reach = d * (k.max(1) - 1) + 1;
    let extra = if ceil_mode { s - 1 } else { 0 };
    if s == 0 || i + 2 * p + extra < reach {
        return 0;
    }
    let mut out = (i + 2 * p + extra - reach) / s + 1;
    if ceil_mode && out > 0 && (out - 1) * s >= i + p {
        out -= 1;
    }
    out
}

impl Pool2dGeom {
    /// Output height (PyTorch's formula, including the `ceil_mode` rule).
    pub fn out_h(&self) -> usize {
        pool_out_len(self.h, self.kh, self.stride.0, self.padding.0, self.dilation.0, self.ceil_mode)
    }
    /// Output width (PyTorch's formula, including the `ceil_mode` rule).
    pub fn out_w(&self) -> usize {
        pool_out_len(self.w, self.kw, self.stride.1, self.padding.1, self.dilation.1, self.ceil_mode)
    }
    fn check(&self, input_len: usize, output_len: usize, what: &str) {
        assert!(self.kh > 0 && self.kw > 0, "{what}: kernel must be non-empty");
        assert!(self.stride.0 > 0 && self.stride.1 > 0, "{what}: stride must be positive");
        assert!(self.dilation.0 > 0 && self.dilation.1 > 0, "{what}: dilation must be positive");
        assert_eq!(input_len, self.n * self.c * self.h * self.w, "{what}: input length");
        assert_eq!(output_len, self.n * self.c * self.out_h() * self.out_w(), "{what}: output length");
    }
    /// Planes per rayon task.
    fn planes_per_task(&self) -> usize {
        (PAR_CHUNK / (self.h * self.w).max(1)).max(1)
    }
}

/// For each kernel column `kx`: the range `[lo, hi)` of output columns whose input column
/// `ox*s + kx*d - p` is inside `[0, w)`, and the offset `kx*d - p` (may be negative).
fn valid_cols(w: usize, ow: usize, kw: usize, s: usize, p: usize, d: usize) -> Vec<(usize, usize, isize)> {
    (0..kw)
        .map(|kx| {
            let off = kx * d;
            let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
            let hi = if w + p < off + 1 { 0 } else { ((w - 1 + p - off) / s + 1).min(ow) };
            (lo.min(hi), hi, off as isize - p as isize)
        })
        .collect()
}

/// Input row of kernel row `ky` at output row `oy`, if inside the image.
#[inline]
fn input_row(oy: usize, ky: usize, s: usize, p: usize, d: usize, h: usize) -> Option<usize> {
    let iy = (oy * s + ky * d).wrapping_sub(p);
    (iy < h).then_some(iy)
}

/// First valid input index of a max-pool window starting at `start` (PyTorch steps the start
/// forward by the dilation until it is inside the input).
#[inline]
fn first_valid(start: isize, d: usize) -> isize {
    if start >= 0 {
        start
    } else {
        start + ((-start) as usize).div_ceil(d) as isize * d as isize
    }
}

/// Max pooling forward: `input [n, c, h, w]` -> `out [n, c, oh, ow]` and `argmax` (same shape),
/// the index inside the `h*w` plane of each maximum (PyTorch's `return_indices`). Padding acts
/// as `-inf`; a NaN in a window is its maximum.
pub fn max_pool2d_forward<T: Float>(g: &Pool2dGeom, input: &[T], out: &mut [T], argmax: &mut [i64]) {
    g.check(input.len(), out.len(), "max_pool2d_forward");
    assert_eq!(argmax.len(), out.len(), "max_pool2d_forward: argmax length");
    let (h, w, oh, ow) = (g.h, g.w, g.out_h(), g.out_w());
    let (hw, ohw) = (h * w, oh * ow);
    if ohw == 0 || hw == 0 {
        return;
    }
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let vc = valid_cols(w, ow, g.kw, sw, pw, dw);
    // PyTorch's initial index when every element is -inf: the window's first valid element.
    let first_col: Vec<i64> =
        (0..ow).map(|ox| first_valid(ox as isize * sw as isize - pw as isize, dw) as i64).collect();
    let ppt = g.planes_per_task();
    out.par_chunks_mut(ohw * ppt)
        .zip(argmax.par_chunks_mut(ohw * ppt))
        .zip(input.par_chunks(hw * ppt))
        .for_each(|((out, idx), input)| {
            for ((out, idx), plane) in out.chunks_exact_mut(ohw).zip(idx.chunks_exact_mut(ohw)).zip(input.chunks_exact(hw)) {
                for oy in 0..oh {
                    let orow = &mut out[oy * ow..(oy + 1) * ow];
                    let irow = &mut idx[oy * ow..(oy + 1) * ow];
                    let iy0 = first_valid(oy as isize * sh as isize - ph as isize, dh) as i64;
                    orow.fill(T::neg_infinity());
                    for (i, f) in irow.iter_mut().zip(&first_col) {
                        *i = iy0 * w as i64 + f;
                    }
                    for ky in 0..g.kh {
                        let Some(iy) = input_row(oy, ky, sh, ph, dh, h) else { continue };
                        let src = &plane[iy * w..(iy + 1) * w];
                        for &(lo, hi, off) in &vc {
                            if lo >= hi {
                                continue;
                            }
                            let ix0 = (lo as isize * sw as isize + off) as usize;
                            let base = (iy * w) as i64 + off as i64;
                            let (o, ix) = (&mut orow[lo..hi], &mut irow[lo..hi]);
                            let mut upd = |k: usize, ox: usize, v: T| {
                                if v > o[k] || v.is_nan() {
                                    o[k] = v;
                                    ix[k] = base + (ox * sw) as i64;
                                }
                            };
                            if sw == 1 {
                                for (k, &v) in src[ix0..ix0 + (hi - lo)].iter().enumerate() {
                                    upd(k, lo + k, v);
                                }
                            } else {
                                for (k, &v) in src[ix0..].iter().step_by(sw).take(hi - lo).enumerate() {
                                    upd(k, lo + k, v);
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// Max pooling backward: `grad_in` (overwritten) receives each `grad_out` element at its
/// saved `argmax` position (summed where windows share a maximum).
pub fn max_pool2d_backward<T: Float>(g: &Pool2dGeom, grad_out: &[T], argmax: &[i64], grad_in: &mut [T]) {
    g.check(grad_in.len(), grad_out.len(), "max_pool2d_backward");
    assert_eq!(argmax.len(), grad_out.len(), "max_pool2d_backward: argmax length");
    let (hw, ohw) = (g.h * g.w, g.out_h() * g.out_w());
    if hw == 0 {
        return;
    }
    if ohw == 0 {
        grad_in.fill(T::zero());
        return;
    }
    let ppt = g.planes_per_task();
    grad_in
        .par_chunks_mut(hw * ppt)
        .zip(grad_out.par_chunks(ohw * ppt))
        .zip(argmax.par_chunks(ohw * ppt))
        .for_each(|((gi, go), am)| {
            gi.fill(T::zero());
            for ((gi, go), am) in gi.chunks_exact_mut(hw).zip(go.chunks_exact(ohw)).zip(am.chunks_exact(ohw)) {
                for (&v, &i) in go.iter().zip(am) {
                    gi[i as usize] += v;
                }
            }
        });
}

/// Per output position along one axis: the window size counted for the divisor with
/// `count_include_pad` (clipped to input + padding) and without (clipped to the input).
fn avg_axis_counts(i: usize, o: usize, k: usize, s: usize, p: usize) -> Vec<(usize, usize)> {
    (0..o)
        .map(|oi| {
            let start = (oi * s) as isize - p as isize;
            let end = (start + k as isize).min((i + p) as isize);
            let with_pad = (end - start).max(0) as usize;
            let valid = (end.min(i as isize) - start.max(0)).max(0) as usize;
            (with_pad, valid)
        })
        .collect()
}

/// `1 / divisor` for every output position of a plane (0 for windows with no input element,
/// whose output PyTorch sets to 0).
fn avg_scales<T: Float>(g: &Pool2dGeom) -> Vec<T> {
    let rows = avg_axis_counts(g.h, g.out_h(), g.kh, g.stride.0, g.padding.0);
    let cols = avg_axis_counts(g.w, g.out_w(), g.kw, g.stride.1, g.padding.1);
    let mut scales = Vec::with_capacity(rows.len() * cols.len());
    for &(rp, rv) in &rows {
        for &(cp, cv) in &cols {
            let div = if g.count_include_pad { rp * cp } else { rv * cv };
            let empty = rv == 0 || cv == 0;
            scales.push(if empty { T::zero() } else { T::one() / T::from_usize(div).unwrap() });
        }
    }
    scales
}

fn check_avg(g: &Pool2dGeom) {
    assert_eq!(g.dilation, (1, 1), "avg_pool2d: dilation must be (1, 1)");
}

/// Average pooling forward: `input [n, c, h, w]` -> `out [n, c, oh, ow]`, with PyTorch's
/// divisor (window clipped to input + padding when `count_include_pad`, else the number of
/// input elements in the window; windows with no input element give 0).
pub fn avg_pool2d_forward<T: Float>(g: &Pool2dGeom, input: &[T], out: &mut [T]) {
    g.check(input.len(), out.len(), "avg_pool2d_forward");
    check_avg(g);
    let (h, w, oh, ow) = (g.h, g.w, g.out_h(), g.out_w());
    let (hw, ohw) = (h * w, oh * ow);
    if ohw == 0 || hw == 0 {
        return;
    }
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let vc = valid_cols(w, ow, g.kw, sw, pw, 1);
    let scales = avg_scales::<T>(g);
    let ppt = g.planes_per_task();
    out.par_chunks_mut(ohw * ppt).zip(input.par_chunks(hw * ppt)).for_each(|(out, input)| {
        for (out, plane) in out.chunks_exact_mut(ohw).zip(input.chunks_exact(hw)) {
            for oy in 0..oh {
                let orow = &mut out[oy * ow..(oy + 1) * ow];
                orow.fill(T::zero());
                for ky in 0..g.kh {
                    let Some(iy) = input_row(oy, ky, sh, ph, 1, h) else { continue };
                    let src = &plane[iy * w..(iy + 1) * w];
                    for &(lo, hi, off) in &vc {
                        if lo >= hi {
                            continue;
                        }
                        let ix0 = (lo as isize * sw as isize + off) as usize;
                        let o = &mut orow[lo..hi];
                        if sw == 1 {
                            for (d, &v) in o.iter_mut().zip(&src[ix0..ix0 + (hi - lo)]) {
                                *d += v;
                            }
                        } else {
                            for (d, &v) in o.iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                                *d += v;
                            }
                        }
                    }
                }
                for (d, &s) in orow.iter_mut().zip(&scales[oy * ow..(oy + 1) * ow]) {
                    *d *= s;
                }
            }
        }
    });
}

/// Average pooling backward: `grad_in` (overwritten) receives `grad_out / divisor` at every
/// input element of each window (the transpose of [`avg_pool2d_forward`]).
pub fn avg_pool2d_backward<T: Float>(g: &Pool2dGeom, grad_out: &[T], grad_in: &mut [T]) {
    g.check(grad_in.len(), grad_out.len(), "avg_pool2d_backward");
    check_avg(g);
    let (h, w, oh, ow) = (g.h, g.w, g.out_h(), g.out_w());
    let (hw, ohw) = (h * w, oh * ow);
    if hw == 0 {
        return;
    }
    if ohw == 0 {
        grad_in.fill(T::zero());
        return;
    }
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let vc = valid_cols(w, ow, g.kw, sw, pw, 1);
    let scales = avg_scales::<T>(g);
    let ppt = g.planes_per_task();
    grad_in.par_chunks_mut(hw * ppt).zip(grad_out.par_chunks(ohw * ppt)).for_each(|(gi, go)| {
        let mut scaled = vec![T::zero(); ow];
        gi.fill(T::zero());
        for (gi, go) in gi.chunks_exact_mut(hw).zip(go.chunks_exact(ohw)) {
            for oy in 0..oh {
                for ((d, &v), &s) in scaled.iter_mut().zip(&go[oy * ow..(oy + 1) * ow]).zip(&scales[oy * ow..]) {
                    *d = v * s;
                }
                for ky in 0..g.kh {
                    let Some(iy) = input_row(oy, ky, sh, ph, 1, h) else { continue };
                    let dst = &mut gi[iy * w..(iy + 1) * w];
                    for &(lo, hi, off) in &vc {
                        if lo >= hi {
                            continue;
                        }
                        let ix0 = (lo as isize * sw as isize + off) as usize;
                        let src = &scaled[lo..hi];
                        if sw == 1 {
                            for (d, &v) in dst[ix0..ix0 + (hi - lo)].iter_mut().zip(src) {
                                *d += v;
                            }
                        } else {
                            for (d, &v) in dst[ix0..].iter_mut().step_by(sw).zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    });
}
