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
//! The max-pool update (a compare plus selects of a value and an i64 index) only vectorises with
//! AVX2 blends or AVX-512 masks, so its plane loop is compiled three times (baseline, AVX2,
//! AVX-512) and chosen at run time, like `vmath`'s `multiversion!` (which takes no generics).
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
    /// Batch size (images).
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Stride, `(height, width)`.
    pub stride: (usize, usize),
    /// Implicit padding on both sides, `(height, width)`.
    pub padding: (usize, usize),
    /// Max pool only; average pool uses `(1, 1)`.
    pub dilation: (usize, usize),
    /// Output size by ceiling instead of floor division (the last window must still start inside
    /// the input or the left padding).
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
    let vc = valid_cols(w, ow, g.kw, g.stride.1, g.padding.1, g.dilation.1);
    // PyTorch's initial index when every element is -inf: the window's first valid element.
    let first_col: Vec<i64> = (0..ow)
        .map(|ox| first_valid(ox as isize * g.stride.1 as isize - g.padding.1 as isize, g.dilation.1) as i64)
        .collect();
    let ppt = g.planes_per_task();
    out.par_chunks_mut(ohw * ppt)
        .zip(argmax.par_chunks_mut(ohw * ppt))
        .zip(input.par_chunks(hw * ppt))
        .for_each(|((out, idx), input)| max_pool_planes(g, &vc, &first_col, out, idx, input));
}

/// [`max_pool_planes_body`] compiled for the widest SIMD the CPU has: its select-based update
/// (f32/f64 compare + i64 index) only vectorises with AVX2 blends or AVX-512 masks, which the
/// baseline x86-64 target lacks (about 7x faster on an AVX-512 machine).
fn max_pool_planes<T: Float>(
    g: &Pool2dGeom,
    vc: &[(usize, usize, isize)],
    first_col: &[i64],
    out: &mut [T],
    idx: &mut [i64],
    input: &[T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        unsafe fn v4<T: Float>(
            g: &Pool2dGeom,
            vc: &[(usize, usize, isize)],
            fc: &[i64],
            out: &mut [T],
            idx: &mut [i64],
            input: &[T],
        ) {
            max_pool_planes_body(g, vc, fc, out, idx, input)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3<T: Float>(
            g: &Pool2dGeom,
            vc: &[(usize, usize, isize)],
            fc: &[i64],
            out: &mut [T],
            idx: &mut [i64],
            input: &[T],
        ) {
            max_pool_planes_body(g, vc, fc, out, idx, input)
        }
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            // SAFETY: the CPU supports the enabled features.
            return unsafe { v4(g, vc, first_col, out, idx, input) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { v3(g, vc, first_col, out, idx, input) };
        }
    }
    max_pool_planes_body(g, vc, first_col, out, idx, input)
}

/// Max pooling of whole planes: `out`/`idx` hold `k` output planes, `input` the `k` matching
/// input planes. For each output row, each kernel tap sweeps the row with [`max_update`].
#[inline(always)]
fn max_pool_planes_body<T: Float>(
    g: &Pool2dGeom,
    vc: &[(usize, usize, isize)],
    first_col: &[i64],
    out: &mut [T],
    idx: &mut [i64],
    input: &[T],
) {
    let (h, w, oh, ow) = (g.h, g.w, g.out_h(), g.out_w());
    let (sh, sw) = g.stride;
    let (ph, dh) = (g.padding.0, g.dilation.0);
    let mut gathered = vec![T::zero(); ow];
    for ((out, idx), plane) in
        out.chunks_exact_mut(oh * ow).zip(idx.chunks_exact_mut(oh * ow)).zip(input.chunks_exact(h * w))
    {
        for oy in 0..oh {
            let orow = &mut out[oy * ow..(oy + 1) * ow];
            let irow = &mut idx[oy * ow..(oy + 1) * ow];
            let iy0 = first_valid(oy as isize * sh as isize - ph as isize, dh) as i64;
            orow.fill(T::neg_infinity());
            for (i, f) in irow.iter_mut().zip(first_col) {
                *i = iy0 * w as i64 + f;
            }
            for ky in 0..g.kh {
                let Some(iy) = input_row(oy, ky, sh, ph, dh, h) else { continue };
                let src = &plane[iy * w..(iy + 1) * w];
                for &(lo, hi, off) in vc {
                    if lo >= hi {
                        continue;
                    }
                    let ix0 = (lo as isize * sw as isize + off) as usize;
                    // plane index of the first input element of this sweep
                    let first = (iy * w + ix0) as i64;
                    let (o, ix) = (&mut orow[lo..hi], &mut irow[lo..hi]);
                    if sw == 1 {
                        max_update(o, ix, &src[ix0..ix0 + (hi - lo)], first, 1);
                    } else {
                        // gather the strided inputs so the update loop vectorises
                        let tmp = &mut gathered[..hi - lo];
                        for (t, &v) in tmp.iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                            *t = v;
                        }
                        max_update(o, ix, tmp, first, sw as i64);
                    }
                }
            }
        }
    }
}

/// `out[j], idx[j] = v[j], first + j*step` where `v[j] > out[j]` or `v[j]` is NaN (PyTorch's
/// update rule), written with selects so that it vectorises.
#[inline(always)]
fn max_update<T: Float>(out: &mut [T], idx: &mut [i64], v: &[T], first: i64, step: i64) {
    let n = out.len().min(idx.len()).min(v.len());
    let (out, idx, v) = (&mut out[..n], &mut idx[..n], &v[..n]);
    for j in 0..n {
        let take = v[j] > out[j] || v[j].is_nan();
        out[j] = if take { v[j] } else { out[j] };
        idx[j] = if take { first + j as i64 * step } else { idx[j] };
    }
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
    grad_in.par_chunks_mut(hw * ppt).zip(grad_out.par_chunks(ohw * ppt)).zip(argmax.par_chunks(ohw * ppt)).for_each(
        |((gi, go), am)| {
            gi.fill(T::zero());
            for ((gi, go), am) in gi.chunks_exact_mut(hw).zip(go.chunks_exact(ohw)).zip(am.chunks_exact(ohw)) {
                for (&v, &i) in go.iter().zip(am) {
                    gi[i as usize] += v;
                }
            }
        },
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cpu::test_rng::Rng;

    #[allow(clippy::too_many_arguments)]
    fn geom(
        (n, c, h, w): (usize, usize, usize, usize),
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Pool2dGeom {
        Pool2dGeom { n, c, h, w, kh, kw, stride, padding, dilation, ceil_mode, count_include_pad }
    }

    /// Geometries valid for both pools (dilation 1), each with both ceil modes.
    fn avg_geoms() -> Vec<Pool2dGeom> {
        let mut v = Vec::new();
        for ceil in [false, true] {
            for cip in [false, true] {
                v.push(geom((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), ceil, cip));
                v.push(geom((1, 2, 5, 5), (2, 2), (2, 2), (1, 1), (1, 1), ceil, cip));
                v.push(geom((2, 2, 8, 6), (3, 2), (2, 3), (1, 1), (1, 1), ceil, cip));
                v.push(geom((1, 3, 6, 10), (2, 4), (1, 3), (0, 2), (1, 1), ceil, cip));
                v.push(geom((2, 1, 10, 11), (3, 3), (3, 2), (0, 1), (1, 1), ceil, cip));
                v.push(geom((1, 2, 4, 4), (4, 4), (1, 1), (2, 2), (1, 1), ceil, cip));
            }
        }
        v
    }

    fn max_geoms() -> Vec<Pool2dGeom> {
        let mut v = avg_geoms();
        for ceil in [false, true] {
            v.push(geom((2, 2, 9, 11), (3, 3), (2, 2), (1, 1), (2, 2), ceil, true));
            v.push(geom((1, 3, 10, 7), (2, 3), (1, 2), (1, 1), (3, 2), ceil, true));
            v.push(geom((1, 1, 1, 20), (1, 3), (1, 2), (0, 1), (1, 2), ceil, true));
        }
        v
    }

    /// PyTorch's CPU max pool, literally.
    fn naive_max(g: &Pool2dGeom, x: &[f64]) -> (Vec<f64>, Vec<i64>) {
        let (oh, ow) = (g.out_h() as isize, g.out_w() as isize);
        let (h, w) = (g.h as isize, g.w as isize);
        let (mut out, mut idx) = (Vec::new(), Vec::new());
        for p in 0..g.n * g.c {
            let plane = &x[p * g.h * g.w..];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut ih0 = oy * g.stride.0 as isize - g.padding.0 as isize;
                    let mut iw0 = ox * g.stride.1 as isize - g.padding.1 as isize;
                    let ih1 = (ih0 + (g.kh as isize - 1) * g.dilation.0 as isize + 1).min(h);
                    let iw1 = (iw0 + (g.kw as isize - 1) * g.dilation.1 as isize + 1).min(w);
                    while ih0 < 0 {
                        ih0 += g.dilation.0 as isize;
                    }
                    while iw0 < 0 {
                        iw0 += g.dilation.1 as isize;
                    }
                    let (mut m, mut mi) = (f64::NEG_INFINITY, ih0 * w + iw0);
                    let mut ih = ih0;
                    while ih < ih1 {
                        let mut iw = iw0;
                        while iw < iw1 {
                            let v = plane[(ih * w + iw) as usize];
                            if v > m || v.is_nan() {
                                m = v;
                                mi = ih * w + iw;
                            }
                            iw += g.dilation.1 as isize;
                        }
                        ih += g.dilation.0 as isize;
                    }
                    out.push(m);
                    idx.push(mi as i64);
                }
            }
        }
        (out, idx)
    }

    /// PyTorch's CPU average pool, literally; returns (out, divisor per output).
    fn naive_avg(g: &Pool2dGeom, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (oh, ow) = (g.out_h() as isize, g.out_w() as isize);
        let (h, w) = (g.h as isize, g.w as isize);
        let (ph, pw) = (g.padding.0 as isize, g.padding.1 as isize);
        let (mut out, mut divs) = (Vec::new(), Vec::new());
        for p in 0..g.n * g.c {
            let plane = &x[p * g.h * g.w..];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut ih0 = oy * g.stride.0 as isize - ph;
                    let mut iw0 = ox * g.stride.1 as isize - pw;
                    let mut ih1 = (ih0 + g.kh as isize).min(h + ph);
                    let mut iw1 = (iw0 + g.kw as isize).min(w + pw);
                    let pool_size = (ih1 - ih0) * (iw1 - iw0);
                    ih0 = ih0.max(0);
                    iw0 = iw0.max(0);
                    ih1 = ih1.min(h);
                    iw1 = iw1.min(w);
                    if ih0 >= ih1 || iw0 >= iw1 {
                        out.push(0.0);
                        divs.push(f64::INFINITY);
                        continue;
                    }
                    let div = if g.count_include_pad { pool_size } else { (ih1 - ih0) * (iw1 - iw0) } as f64;
                    let mut s = 0.0;
                    for ih in ih0..ih1 {
                        for iw in iw0..iw1 {
                            s += plane[(ih * w + iw) as usize];
                        }
                    }
                    out.push(s / div);
                    divs.push(div);
                }
            }
        }
        (out, divs)
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            let same = a == b || (a.is_nan() && b.is_nan());
            assert!(same || (a - b).abs() <= tol * (1.0 + b.abs()), "{what}: element {i}: got {a}, want {b}");
        }
    }

    fn out_len(g: &Pool2dGeom) -> usize {
        g.n * g.c * g.out_h() * g.out_w()
    }

    #[test]
    fn pool_out_size_matches_pytorch() {
        let g = |h, k, s, p, ceil| geom((1, 1, h, h), (k, k), (s, s), (p, p), (1, 1), ceil, true).out_h();
        assert_eq!(g(5, 2, 2, 0, false), 2);
        assert_eq!(g(5, 2, 2, 0, true), 3);
        assert_eq!(g(6, 3, 2, 1, true), 4);
        // ceil mode would start the last window in the right padding: dropped
        assert_eq!(g(5, 2, 2, 1, true), 3);
        assert_eq!(g(5, 2, 2, 1, false), 3);
        let d = geom((1, 1, 9, 9), (3, 3), (2, 2), (1, 1), (2, 2), false, true);
        assert_eq!(d.out_h(), 4);
    }

    #[test]
    fn max_pool_matches_naive() {
        let mut rng = Rng(7);
        for g in max_geoms() {
            let x = rng.vec(g.n * g.c * g.h * g.w);
            let (want, want_idx) = naive_max(&g, &x);
            let mut out = vec![0.0; out_len(&g)];
            let mut idx = vec![-1; out_len(&g)];
            max_pool2d_forward(&g, &x, &mut out, &mut idx);
            assert_close(&out, &want, 0.0, &format!("max {g:?}"));
            assert_eq!(idx, want_idx, "argmax {g:?}");
            // f32
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut out32 = vec![0f32; out_len(&g)];
            max_pool2d_forward(&g, &x32, &mut out32, &mut idx);
            assert_eq!(idx, want_idx, "argmax f32 {g:?}");
            // backward: scatter through argmax
            let go = rng.vec(out_len(&g));
            let mut want_gi = vec![0.0; x.len()];
            for (o, &i) in want_idx.iter().enumerate() {
                want_gi[o / (g.out_h() * g.out_w()) * g.h * g.w + i as usize] += go[o];
            }
            let mut gi = vec![f64::NAN; x.len()];
            max_pool2d_backward(&g, &go, &idx, &mut gi);
            assert_close(&gi, &want_gi, 1e-15, &format!("max backward {g:?}"));
        }
    }

    #[test]
    fn max_pool_nan_ties_and_neg_inf() {
        let g = geom((1, 1, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), false, true);
        #[rustfmt::skip]
        let x = [
            1.0, f64::NAN, 2.0, 2.0,
            f64::NAN, 0.0, 2.0, 1.0,
            f64::NEG_INFINITY, f64::NEG_INFINITY, 5.0, f64::NAN,
            f64::NEG_INFINITY, f64::NEG_INFINITY, f64::INFINITY, 3.0,
        ];
        let (want, want_idx) = naive_max(&g, &x);
        let mut out = vec![0.0; 4];
        let mut idx = vec![0; 4];
        max_pool2d_forward(&g, &x, &mut out, &mut idx);
        assert!(out[0].is_nan() && out[3].is_nan());
        assert_eq!((out[1], out[2]), (2.0, f64::NEG_INFINITY));
        assert_eq!(idx, vec![4, 2, 8, 11]);
        assert_eq!(idx, want_idx);
        assert_close(&out, &want, 0.0, "nan case");
    }

    #[test]
    fn avg_pool_matches_naive() {
        let mut rng = Rng(11);
        for g in avg_geoms() {
            let x = rng.vec(g.n * g.c * g.h * g.w);
            let (want, divs) = naive_avg(&g, &x);
            let mut out = vec![f64::NAN; out_len(&g)];
            avg_pool2d_forward(&g, &x, &mut out);
            assert_close(&out, &want, 1e-14, &format!("avg {g:?}"));
            // backward: each window spreads go / div over its input elements
            let go = rng.vec(out_len(&g));
            let ohw = g.out_h() * g.out_w();
            let mut want_gi = vec![0.0; x.len()];
            for (o, &gv) in go.iter().enumerate() {
                let (p, oy, ox) = (o / ohw, o % ohw / g.out_w(), o % g.out_w());
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.stride.0 + ky) as isize - g.padding.0 as isize;
                        let ix = (ox * g.stride.1 + kx) as isize - g.padding.1 as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                            want_gi[p * g.h * g.w + iy as usize * g.w + ix as usize] += gv / divs[o];
                        }
                    }
                }
            }
            let mut gi = vec![f64::NAN; x.len()];
            avg_pool2d_backward(&g, &go, &mut gi);
            assert_close(&gi, &want_gi, 1e-14, &format!("avg backward {g:?}"));
        }
    }

    /// Gradients of `Σ pool(x) * r` against central finite differences (distinct random inputs,
    /// so max pool has no ties within eps).
    #[test]
    fn pool_gradients_match_finite_differences() {
        let mut rng = Rng(99);
        for (i, g) in max_geoms().into_iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            let x = rng.vec(g.n * g.c * g.h * g.w);
            let r = rng.vec(out_len(&g));
            let eps = 1e-6;
            let fd = |f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
                (0..x.len())
                    .map(|j| {
                        let (mut p, mut m) = (x.clone(), x.clone());
                        p[j] += eps;
                        m[j] -= eps;
                        (f(&p) - f(&m)) / (2.0 * eps)
                    })
                    .collect()
            };
            let max_loss = |x: &[f64]| {
                let mut out = vec![0.0; out_len(&g)];
                let mut idx = vec![0; out_len(&g)];
                max_pool2d_forward(&g, x, &mut out, &mut idx);
                out.iter().zip(&r).map(|(o, r)| o * r).sum::<f64>()
            };
            let mut out = vec![0.0; out_len(&g)];
            let mut idx = vec![0; out_len(&g)];
            max_pool2d_forward(&g, &x, &mut out, &mut idx);
            let mut gi = vec![0.0; x.len()];
            max_pool2d_backward(&g, &r, &idx, &mut gi);
            assert_close(&gi, &fd(&max_loss), 1e-6, &format!("fd max {i} {g:?}"));
            if g.dilation == (1, 1) {
                let avg_loss = |x: &[f64]| {
                    let mut out = vec![0.0; out_len(&g)];
                    avg_pool2d_forward(&g, x, &mut out);
                    out.iter().zip(&r).map(|(o, r)| o * r).sum::<f64>()
                };
                avg_pool2d_backward(&g, &r, &mut gi);
                assert_close(&gi, &fd(&avg_loss), 1e-6, &format!("fd avg {i} {g:?}"));
            }
        }
    }
}
