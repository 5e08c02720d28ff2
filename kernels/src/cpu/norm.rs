//! Layer norm and batch norm, forward and backward, on contiguous slices.
//!
//! Statistics are two-pass (mean, then the sum of squared deviations) and accumulated in `f64`
//! with 8 independent lanes so the loops vectorise; the elementwise passes run in `T`.
//!
//! * layer norm: rows are independent; one rayon task per group of rows (about
//!   [`PAR_CHUNK`] elements). Forward reads `x` twice (in L1/L2 for rows up to ~100k elements)
//!   and writes `y` once. Backward reads `x` and `grad_y` twice per row and writes `grad_x`; the
//!   column sums for `grad_weight`/`grad_bias` are per-task `f64` partials, summed in task order
//!   (deterministic).
//! * batch norm on `[n, c, s]`: a channel's elements are `n` planes of `s` contiguous values.
//!   Per-channel sums are computed by tasks over ranges of planes, each keeping per-channel
//!   `f64` partials (works both for large `s` and for `BatchNorm1d`'s `s = 1`), summed in task
//!   order. Forward reads `x` twice for the statistics and once for `y`; backward reads `x` and
//!   `grad_y` once for the sums and once for `grad_x`.

use super::reduce::{downcast_f32, downcast_f32_mut};
use super::{n_tasks, vmath, Float, PAR_CHUNK};
use rayon::prelude::*;

/// Sum of `xs` in `f64` (8 lanes).
fn sum_f64<T: Float>(xs: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v.to_f64_lossy();
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|v| v.to_f64_lossy()).sum::<f64>()
}

/// Sum of `(x - mean)^2` in `f64` (8 lanes).
fn sum_sq_dev<T: Float>(xs: &[T], mean: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            let d = v.to_f64_lossy() - mean;
            *a += d * d;
        }
    }
    let t: f64 = tail.iter().map(|v| (v.to_f64_lossy() - mean).powi(2)).sum();
    acc.iter().sum::<f64>() + t
}

/// `(Σ g·w, Σ g·w·(x - mean))` in `f64` (8 lanes); `w = None` means all ones.
fn sum_grad_dev<T: Float>(x: &[T], g: &[T], w: Option<&[T]>, mean: f64) -> (f64, f64) {
    let n = x.len().min(g.len());
    let (x, g) = (&x[..n], &g[..n]);
    let (mut a, mut b) = ([0.0f64; 8], [0.0f64; 8]);
    let (mut sa, mut sb) = (0.0, 0.0);
    match w {
        Some(w) => {
            let w = &w[..n];
            let full = n / 8 * 8;
            for ((xc, gc), wc) in x.chunks_exact(8).zip(g.chunks_exact(8)).zip(w.chunks_exact(8)) {
                for l in 0..8 {
                    let gw = gc[l].to_f64_lossy() * wc[l].to_f64_lossy();
                    a[l] += gw;
                    b[l] += gw * (xc[l].to_f64_lossy() - mean);
                }
            }
            for j in full..n {
                let gw = g[j].to_f64_lossy() * w[j].to_f64_lossy();
                sa += gw;
                sb += gw * (x[j].to_f64_lossy() - mean);
            }
        }
        None => {
            let full = n / 8 * 8;
            for (xc, gc) in x.chunks_exact(8).zip(g.chunks_exact(8)) {
                for l in 0..8 {
                    let gv = gc[l].to_f64_lossy();
                    a[l] += gv;
                    b[l] += gv * (xc[l].to_f64_lossy() - mean);
                }
            }
            for j in full..n {
                let gv = g[j].to_f64_lossy();
                sa += gv;
                sb += gv * (x[j].to_f64_lossy() - mean);
            }
        }
    }
    (sa + a.iter().sum::<f64>(), sb + b.iter().sum::<f64>())
}

/// Layer norm over the last `cols` elements of each of `rows` rows:
/// `y = (x - mean) * rstd * weight + bias`, with the biased variance and
/// `rstd = 1 / sqrt(var + eps)` (PyTorch). `mean` and `rstd` (`rows` entries) are saved for
/// [`layer_norm_backward`]. `weight` and `bias` have `cols` entries.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward<T: Float>(
    x: &[T],
    rows: usize,
    cols: usize,
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    eps: f64,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) {
    assert_eq!(x.len(), rows * cols, "layer_norm_forward: x length");
    assert_eq!(y.len(), rows * cols, "layer_norm_forward: y length");
    assert_eq!(mean.len(), rows, "layer_norm_forward: mean length");
    assert_eq!(rstd.len(), rows, "layer_norm_forward: rstd length");
    assert!(weight.is_none_or(|w| w.len() == cols), "layer_norm_forward: weight length");
    assert!(bias.is_none_or(|b| b.len() == cols), "layer_norm_forward: bias length");
    if rows == 0 {
        return;
    }
    if cols == 0 {
        mean.fill(T::zero());
        rstd.fill(T::from_f64_lossy(1.0 / eps.sqrt()));
        return;
    }
    let rpt = (PAR_CHUNK / cols).max(1);
    let stream = vmath::stream_store::worth_it(std::mem::size_of_val(y));
    y.par_chunks_mut(rpt * cols)
        .zip(x.par_chunks(rpt * cols))
        .zip(mean.par_chunks_mut(rpt).zip(rstd.par_chunks_mut(rpt)))
        .for_each(|((y, x), (mean, rstd))| {
            // f32: the statistics and the normalisation in 16-wide SIMD (AVX-512 or AVX2 chosen
            // at run time), the sums in f32 lanes within 4096-element blocks and in f64 across.
            if let (Some(xf), Some(yf)) = (downcast_f32(x), downcast_f32_mut(y)) {
                let (wf, bf) = (weight.and_then(downcast_f32), bias.and_then(downcast_f32));
                for (((y, x), m), r) in yf.chunks_exact_mut(cols).zip(xf.chunks_exact(cols)).zip(mean).zip(rstd) {
                    let mu = (vmath::sum_f32(x) as f64 / cols as f64) as f32;
                    let var = vmath::sum_sq_dev_f32(x, mu) / cols as f64;
                    let rs = (1.0 / (var + eps).sqrt()) as f32;
                    *m = T::from_f64_lossy(mu as f64);
                    *r = T::from_f64_lossy(rs as f64);
                    if stream {
                        vmath::stream_store::normalise_row(x, mu, rs, wf, bf, y);
                    } else {
                        normalise_row_f32(x, mu, rs, wf, bf, y);
                    }
                }
                if stream {
                    vmath::stream_store::fence();
                }
                return;
            }
            for (((y, x), m), r) in y.chunks_exact_mut(cols).zip(x.chunks_exact(cols)).zip(mean).zip(rstd) {
                let mu = sum_f64(x) / cols as f64;
                let var = sum_sq_dev(x, mu) / cols as f64;
                let rs = 1.0 / (var + eps).sqrt();
                *m = T::from_f64_lossy(mu);
                *r = T::from_f64_lossy(rs);
                normalise_row(x, T::from_f64_lossy(mu), T::from_f64_lossy(rs), weight, bias, y);
            }
        });
}

/// One layer-norm row: `y = (x - mean) * rstd * w + b` (`w`, `b` of the row's length, or
/// absent: ones and zeros).
#[inline(always)]
fn normalise_row<T: Float>(x: &[T], mean: T, rstd: T, w: Option<&[T]>, b: Option<&[T]>, y: &mut [T]) {
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - mean) * rstd * w + b;
            }
        }
        (Some(w), None) => {
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = (x - mean) * rstd * w;
            }
        }
        (None, Some(b)) => {
            for ((y, &x), &b) in y.iter_mut().zip(x).zip(b) {
                *y = (x - mean) * rstd + b;
            }
        }
        (None, None) => {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x - mean) * rstd;
            }
        }
    }
}

vmath::multiversion! {
    /// [`layer_norm_forward`]'s normalisation of one `f32` row, compiled for AVX-512, AVX2+FMA
    /// and the baseline, the widest chosen at run time.
    pub fn normalise_row_f32(x: &[f32], mean: f32, rstd: f32, w: Option<&[f32]>, b: Option<&[f32]>, y: &mut [f32]) {
        normalise_row(x, mean, rstd, w, b, y)
    }
}

/// Layer norm backward. With `xhat = (x - mean) * rstd` and `d = grad_y * weight`:
/// `grad_x = rstd * (d - mean(d) - xhat * mean(d * xhat))` per row (overwritten),
/// `grad_weight = Σ_rows grad_y * xhat`, `grad_bias = Σ_rows grad_y` (overwritten when given).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward<T: Float>(
    x: &[T],
    grad_y: &[T],
    rows: usize,
    cols: usize,
    weight: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
    grad_x: &mut [T],
    grad_weight: Option<&mut [T]>,
    grad_bias: Option<&mut [T]>,
) {
    assert_eq!(x.len(), rows * cols, "layer_norm_backward: x length");
    assert_eq!(grad_y.len(), rows * cols, "layer_norm_backward: grad_y length");
    assert_eq!(grad_x.len(), rows * cols, "layer_norm_backward: grad_x length");
    assert_eq!(mean.len(), rows, "layer_norm_backward: mean length");
    assert_eq!(rstd.len(), rows, "layer_norm_backward: rstd length");
    assert!(weight.is_none_or(|w| w.len() == cols), "layer_norm_backward: weight length");
    let want_gw = grad_weight.is_some();
    let want_gb = grad_bias.is_some();
    if let Some(gw) = &grad_weight {
        assert_eq!(gw.len(), cols, "layer_norm_backward: grad_weight length");
    }
    if let Some(gb) = &grad_bias {
        assert_eq!(gb.len(), cols, "layer_norm_backward: grad_bias length");
    }
    if rows == 0 || cols == 0 {
        for g in [grad_weight, grad_bias].into_iter().flatten() {
            g.fill(T::zero());
        }
        return;
    }
    let tasks = n_tasks(rows * cols).min(rows);
    let rpt = rows.div_ceil(tasks);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = grad_x
        .par_chunks_mut(rpt * cols)
        .enumerate()
        .map(|(t, gx)| {
            let mut pw = vec![0.0f64; if want_gw { cols } else { 0 }];
            let mut pb = vec![0.0f64; if want_gb { cols } else { 0 }];
            let r0 = t * rpt;
            for (i, gx) in gx.chunks_exact_mut(cols).enumerate() {
                let r = r0 + i;
                let x = &x[r * cols..(r + 1) * cols];
                let gy = &grad_y[r * cols..(r + 1) * cols];
                let (mu64, rs64) = (mean[r].to_f64_lossy(), rstd[r].to_f64_lossy());
                let (sd, sdx) = sum_grad_dev(x, gy, weight, mu64);
                let a = T::from_f64_lossy(sd / cols as f64);
                let b = T::from_f64_lossy(sdx * rs64 / cols as f64);
                let (mu, rs) = (mean[r], rstd[r]);
                match weight {
                    Some(w) => {
                        for (((gx, &x), &gy), &w) in gx.iter_mut().zip(x).zip(gy).zip(w) {
                            *gx = rs * (gy * w - a - (x - mu) * rs * b);
                        }
                    }
                    None => {
                        for ((gx, &x), &gy) in gx.iter_mut().zip(x).zip(gy) {
                            *gx = rs * (gy - a - (x - mu) * rs * b);
                        }
                    }
                }
                if want_gw {
                    for ((p, &x), &gy) in pw.iter_mut().zip(x).zip(gy) {
                        *p += gy.to_f64_lossy() * (x.to_f64_lossy() - mu64) * rs64;
                    }
                }
                if want_gb {
                    for (p, &gy) in pb.iter_mut().zip(gy) {
                        *p += gy.to_f64_lossy();
                    }
                }
            }
            (pw, pb)
        })
        .collect();
    // Sum the per-task column partials in task order; `k` picks grad_weight (0) or grad_bias (1).
    let sum_partials = |out: &mut [T], k: usize| {
        let mut acc = vec![0.0f64; cols];
        for p in &partials {
            let part = if k == 0 { &p.0 } else { &p.1 };
            for (a, v) in acc.iter_mut().zip(part) {
                *a += v;
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = T::from_f64_lossy(*a);
        }
    };
    if let Some(gw) = grad_weight {
        sum_partials(gw, 0);
    }
    if let Some(gb) = grad_bias {
        sum_partials(gb, 1);
    }
}

/// For each channel of `[n, c, s]` data, the sum over its `n` planes of `f(ch, plane_offset)`
/// (two values). Tasks cover ranges of planes and keep per-channel partials, summed in task
/// order so the result does not depend on scheduling.
fn channel_sums<F>(n: usize, c: usize, s: usize, f: F) -> Vec<[f64; 2]>
where
    F: Fn(usize, usize) -> [f64; 2] + Sync,
{
    let planes = n * c;
    let mut total = vec![[0.0f64; 2]; c];
    if planes == 0 || s == 0 {
        return total;
    }
    let tasks = n_tasks(planes * s).min(planes);
    let ppt = planes.div_ceil(tasks);
    let partials: Vec<Vec<[f64; 2]>> = (0..planes.div_ceil(ppt))
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![[0.0f64; 2]; c];
            for p in t * ppt..((t + 1) * ppt).min(planes) {
                let ch = p % c;
                let [a, b] = f(ch, p * s);
                acc[ch][0] += a;
                acc[ch][1] += b;
            }
            acc
        })
        .collect();
    for p in &partials {
        for (t, v) in total.iter_mut().zip(p) {
            t[0] += v[0];
            t[1] += v[1];
        }
    }
    total
}

/// Applies `f(ch, src_plane, dst_plane)` to every plane of `[n, c, s]` data in parallel.
fn for_each_plane<T: Float>(n: usize, c: usize, s: usize, dst: &mut [T], f: impl Fn(usize, usize, &mut [T]) + Sync) {
    if n * c * s == 0 {
        return;
    }
    let ppt = (PAR_CHUNK / s).max(1);
    dst.par_chunks_mut(ppt * s).enumerate().for_each(|(t, d)| {
        for (i, d) in d.chunks_exact_mut(s).enumerate() {
            let p = t * ppt + i;
            f(p % c, p * s, d);
        }
    });
}

/// Batch norm forward over `x` laid out `[n, c, s]` (`s` = product of the spatial dims, 1 for
/// `BatchNorm1d` on `[n, c]`): `y = (x - mean[c]) * rstd[c] * weight[c] + bias[c]`.
///
/// * `training`: batch statistics (biased variance) are used and saved in
///   `save_mean`/`save_rstd` (`[c]`); given running stats are updated in place with
///   `running = (1 - momentum) * running + momentum * stat`, using the unbiased variance for
///   `running_var` (the caller rejects `n * s == 1`; the unbiased factor is then taken as 0).
/// * inference: `running_mean`/`running_var` (required) are used; `save_mean = running_mean`,
///   `save_rstd = 1 / sqrt(running_var + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward<T: Float>(
    x: &[T],
    n: usize,
    c: usize,
    s: usize,
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    running_mean: Option<&mut [T]>,
    running_var: Option<&mut [T]>,
    training: bool,
    momentum: f64,
    eps: f64,
    y: &mut [T],
    save_mean: &mut [T],
    save_rstd: &mut [T],
) {
    let len = n * c * s;
    assert_eq!(x.len(), len, "batch_norm_forward: x length");
    assert_eq!(y.len(), len, "batch_norm_forward: y length");
    assert_eq!(save_mean.len(), c, "batch_norm_forward: save_mean length");
    assert_eq!(save_rstd.len(), c, "batch_norm_forward: save_rstd length");
    assert!(weight.is_none_or(|w| w.len() == c), "batch_norm_forward: weight length");
    assert!(bias.is_none_or(|b| b.len() == c), "batch_norm_forward: bias length");
    assert!(running_mean.as_ref().is_none_or(|r| r.len() == c), "batch_norm_forward: running_mean length");
    assert!(running_var.as_ref().is_none_or(|r| r.len() == c), "batch_norm_forward: running_var length");
    let count = n * s;
    let (mean, var): (Vec<f64>, Vec<f64>) = if training {
        debug_assert!(count > 1, "batch_norm_forward: training needs more than one value per channel");
        let sums = channel_sums(n, c, s, |_, off| [sum_f64(&x[off..off + s]), 0.0]);
        let mean: Vec<f64> = sums.iter().map(|v| v[0] / count.max(1) as f64).collect();
        let sq = channel_sums(n, c, s, |ch, off| [sum_sq_dev(&x[off..off + s], mean[ch]), 0.0]);
        let var: Vec<f64> = sq.iter().map(|v| v[0] / count.max(1) as f64).collect();
        let unbias = if count > 1 { count as f64 / (count - 1) as f64 } else { 0.0 };
        if let Some(rm) = running_mean {
            for (r, m) in rm.iter_mut().zip(&mean) {
                *r = T::from_f64_lossy((1.0 - momentum) * r.to_f64_lossy() + momentum * m);
            }
        }
        if let Some(rv) = running_var {
            for (r, v) in rv.iter_mut().zip(&var) {
                *r = T::from_f64_lossy((1.0 - momentum) * r.to_f64_lossy() + momentum * v * unbias);
            }
        }
        (mean, var)
    } else {
        let rm = running_mean.expect("batch_norm_forward: inference needs running_mean");
        let rv = running_var.expect("batch_norm_forward: inference needs running_var");
        (rm.iter().map(|v| v.to_f64_lossy()).collect(), rv.iter().map(|v| v.to_f64_lossy()).collect())
    };
    // y = x * scale + shift with scale = w * rstd, shift = b - mean * scale.
    let mut scale = vec![T::zero(); c];
    let mut shift = vec![T::zero(); c];
    for ch in 0..c {
        let rs = 1.0 / (var[ch] + eps).sqrt();
        save_mean[ch] = T::from_f64_lossy(mean[ch]);
        save_rstd[ch] = T::from_f64_lossy(rs);
        let sc = weight.map_or(1.0, |w| w[ch].to_f64_lossy()) * rs;
        scale[ch] = T::from_f64_lossy(sc);
        shift[ch] = T::from_f64_lossy(bias.map_or(0.0, |b| b[ch].to_f64_lossy()) - mean[ch] * sc);
    }
    for_each_plane(n, c, s, y, |ch, off, y| {
        let (sc, sh) = (scale[ch], shift[ch]);
        for (y, &x) in y.iter_mut().zip(&x[off..off + s]) {
            *y = x * sc + sh;
        }
    });
}

/// Batch norm backward over `[n, c, s]` data with the `save_mean`/`save_rstd` of the forward.
/// Training: `grad_x = w * rstd * (gy - mean(gy) - xhat * mean(gy * xhat))` (means over the
/// channel's `n * s` values); inference: `grad_x = gy * w * rstd`. In both modes
/// `grad_weight = Σ gy * xhat` and `grad_bias = Σ gy` per channel. Outputs are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Float>(
    x: &[T],
    grad_y: &[T],
    n: usize,
    c: usize,
    s: usize,
    weight: Option<&[T]>,
    save_mean: &[T],
    save_rstd: &[T],
    training: bool,
    grad_x: &mut [T],
    grad_weight: Option<&mut [T]>,
    grad_bias: Option<&mut [T]>,
) {
    let len = n * c * s;
    assert_eq!(x.len(), len, "batch_norm_backward: x length");
    assert_eq!(grad_y.len(), len, "batch_norm_backward: grad_y length");
    assert_eq!(grad_x.len(), len, "batch_norm_backward: grad_x length");
    assert_eq!(save_mean.len(), c, "batch_norm_backward: save_mean length");
    assert_eq!(save_rstd.len(), c, "batch_norm_backward: save_rstd length");
    assert!(weight.is_none_or(|w| w.len() == c), "batch_norm_backward: weight length");
    assert!(grad_weight.as_ref().is_none_or(|g| g.len() == c), "batch_norm_backward: grad_weight length");
    assert!(grad_bias.as_ref().is_none_or(|g| g.len() == c), "batch_norm_backward: grad_bias length");
    let need_sums = training || grad_weight.is_some() || grad_bias.is_some();
    // Per channel: Σ gy and Σ gy * (x - mean).
    let sums = if need_sums {
        channel_sums(n, c, s, |ch, off| {
            let (a, b) = sum_grad_dev(&x[off..off + s], &grad_y[off..off + s], None, save_mean[ch].to_f64_lossy());
            [a, b]
        })
    } else {
        Vec::new()
    };
    let count = (n * s).max(1) as f64;
    // grad_x = (gy - mg) * k1 - (x - mean) * k2
    let mut coef = vec![(T::zero(), T::zero(), T::zero(), T::zero()); c];
    for (ch, cf) in coef.iter_mut().enumerate() {
        let rs = save_rstd[ch].to_f64_lossy();
        let k1 = weight.map_or(1.0, |w| w[ch].to_f64_lossy()) * rs;
        let (mg, k2) = if training {
            let [sg, sgx] = sums[ch];
            (sg / count, k1 * rs * rs * sgx / count)
        } else {
            (0.0, 0.0)
        };
        *cf = (T::from_f64_lossy(mg), T::from_f64_lossy(k1), save_mean[ch], T::from_f64_lossy(k2));
    }
    for_each_plane(n, c, s, grad_x, |ch, off, gx| {
        let (mg, k1, mu, k2) = coef[ch];
        let (x, gy) = (&x[off..off + s], &grad_y[off..off + s]);
        if training {
            for ((gx, &x), &gy) in gx.iter_mut().zip(x).zip(gy) {
                *gx = (gy - mg) * k1 - (x - mu) * k2;
            }
        } else {
            for (gx, &gy) in gx.iter_mut().zip(gy) {
                *gx = gy * k1;
            }
        }
    });
    if let Some(gw) = grad_weight {
        for (ch, g) in gw.iter_mut().enumerate() {
            *g = T::from_f64_lossy(sums[ch][1] * save_rstd[ch].to_f64_lossy());
        }
    }
    if let Some(gb) = grad_bias {
        for (ch, g) in gb.iter_mut().enumerate() {
            *g = T::from_f64_lossy(sums[ch][0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cpu::test_rng::Rng;

    #[test]
    fn streaming_rows_equal_cached_rows_bit_for_bit() {
        // Every alignment of the output (head of plain stores), lengths with and without a tail
        // of fewer than 8, with and without weight and bias.
        let mut rng = Rng(5);
        let f = |v: Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (x, w, b) = (f(rng.vec(300)), f(rng.vec(300)), f(rng.vec(300)));
        for off in 0..9 {
            for n in [0, 1, 7, 8, 9, 63, 64, 200, 291] {
                for (wo, bo) in
                    [(None, None), (Some(&w[..n]), None), (None, Some(&b[..n])), (Some(&w[..n]), Some(&b[..n]))]
                {
                    let (mut y1, mut y2) = (vec![0f32; n + off], vec![0f32; n + off]);
                    normalise_row_f32(&x[..n], 0.3, 1.7, wo, bo, &mut y1[off..]);
                    vmath::stream_store::normalise_row(&x[..n], 0.3, 1.7, wo, bo, &mut y2[off..]);
                    vmath::stream_store::fence();
                    assert_eq!(y1, y2, "offset {off}, length {n}");
                }
            }
        }
    }

    #[test]
    fn large_outputs_take_the_streaming_path_and_match_f64() {
        // y of 8.4 MiB: at least STREAM_BYTES, so written with streaming stores on AVX2 CPUs.
        let (rows, cols) = (2050, 1031);
        assert!(rows * cols * 4 >= vmath::stream_store::STREAM_BYTES);
        let mut rng = Rng(12);
        let x64 = rng.vec(rows * cols);
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let (w32, b32): (Vec<f32>, Vec<f32>) = (vec![0.5; cols], vec![-0.25; cols]);
        let (mut y32, mut m32, mut r32) = (vec![0f32; rows * cols], vec![0f32; rows], vec![0f32; rows]);
        layer_norm_forward(&x32, rows, cols, Some(&w32), Some(&b32), 1e-5, &mut y32, &mut m32, &mut r32);
        let xr: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let (mut y, mut m, mut r) = (vec![0f64; rows * cols], vec![0f64; rows], vec![0f64; rows]);
        layer_norm_forward(
            &xr,
            rows,
            cols,
            Some(&vec![0.5; cols]),
            Some(&vec![-0.25; cols]),
            1e-5,
            &mut y,
            &mut m,
            &mut r,
        );
        let up = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        assert_close(&up(&y32), &y, 1e-5, "y");
    }

    #[test]
    fn f32_simd_path_matches_f64_on_long_offset_rows() {
        // Rows longer than one 4096-element block, with a large common offset (the case where a
        // one-pass variance would cancel catastrophically), and a tail that is not a multiple
        // of the 16 or 64 lanes.
        let (rows, cols) = (3, 10_007);
        let mut rng = Rng(11);
        let x64: Vec<f64> = rng.vec(rows * cols).iter().map(|v| 1000.0 + v).collect();
        let w64 = rng.vec(cols);
        let b64 = rng.vec(cols);
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (x32, w32, b32) = (f(&x64), f(&w64), f(&b64));
        let (mut y32, mut m32, mut r32) = (vec![0f32; rows * cols], vec![0f32; rows], vec![0f32; rows]);
        layer_norm_forward(&x32, rows, cols, Some(&w32), Some(&b32), 1e-5, &mut y32, &mut m32, &mut r32);
        // The f64 reference from the f32 inputs.
        let xr: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let (wr, br): (Vec<f64>, Vec<f64>) =
            (w32.iter().map(|&v| v as f64).collect(), b32.iter().map(|&v| v as f64).collect());
        let (mut y, mut m, mut r) = (vec![0f64; rows * cols], vec![0f64; rows], vec![0f64; rows]);
        layer_norm_forward(&xr, rows, cols, Some(&wr), Some(&br), 1e-5, &mut y, &mut m, &mut r);
        let up = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        assert_close(&up(&m32), &m, 1e-7, "mean");
        assert_close(&up(&r32), &r, 1e-5, "rstd");
        assert_close(&up(&y32), &y, 1e-4, "y");
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: element {i}: got {a}, want {b}");
        }
    }

    /// Central finite differences of `f` at `v`.
    fn fd(v: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
        let eps = 1e-6;
        (0..v.len())
            .map(|i| {
                let (mut p, mut m) = (v.to_vec(), v.to_vec());
                p[i] += eps;
                m[i] -= eps;
                (f(&p) - f(&m)) / (2.0 * eps)
            })
            .collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(a, b)| a * b).sum()
    }

    fn naive_layer_norm(
        x: &[f64],
        cols: usize,
        w: Option<&[f64]>,
        b: Option<&[f64]>,
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut y, mut mean, mut rstd) = (Vec::new(), Vec::new(), Vec::new());
        for row in x.chunks(cols) {
            let m = row.iter().sum::<f64>() / cols as f64;
            let v = row.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / cols as f64;
            let r = 1.0 / (v + eps).sqrt();
            for (j, x) in row.iter().enumerate() {
                y.push((x - m) * r * w.map_or(1.0, |w| w[j]) + b.map_or(0.0, |b| b[j]));
            }
            mean.push(m);
            rstd.push(r);
        }
        (y, mean, rstd)
    }

    #[test]
    fn layer_norm_forward_matches_naive() {
        let mut rng = Rng(5);
        // cols 2500 x rows 30 spans several tasks
        for &(rows, cols) in &[(1, 1), (3, 7), (5, 64), (30, 2500), (2, 33)] {
            let x: Vec<f64> = rng.vec(rows * cols).iter().map(|v| v * 3.0 + 10.0).collect();
            let (w, b) = (rng.vec(cols), rng.vec(cols));
            for (wo, bo) in [(None, None), (Some(&w[..]), Some(&b[..])), (Some(&w[..]), None), (None, Some(&b[..]))] {
                let (want, wm, wr) = naive_layer_norm(&x, cols, wo, bo, 1e-5);
                let (mut y, mut m, mut r) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
                layer_norm_forward(&x, rows, cols, wo, bo, 1e-5, &mut y, &mut m, &mut r);
                assert_close(&y, &want, 1e-10, "layer norm y");
                assert_close(&m, &wm, 1e-12, "layer norm mean");
                assert_close(&r, &wr, 1e-10, "layer norm rstd");
                // f32
                let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                let (x32, w32, b32) = (f(&x), f(&w), f(&b));
                let (mut y32, mut m32, mut r32) = (vec![0f32; rows * cols], vec![0f32; rows], vec![0f32; rows]);
                layer_norm_forward(
                    &x32,
                    rows,
                    cols,
                    wo.map(|_| &w32[..]),
                    bo.map(|_| &b32[..]),
                    1e-5,
                    &mut y32,
                    &mut m32,
                    &mut r32,
                );
                let y64: Vec<f64> = y32.iter().map(|&v| v as f64).collect();
                assert_close(&y64, &want, 1e-4, "layer norm y f32");
            }
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let mut rng = Rng(6);
        for &(rows, cols) in &[(3, 5), (4, 9), (40, 1200)] {
            let x = rng.vec(rows * cols);
            let (w, b, r) = (rng.vec(cols), rng.vec(cols), rng.vec(rows * cols));
            for affine in [false, true] {
                let (wo, bo) = if affine { (Some(&w[..]), Some(&b[..])) } else { (None, None) };
                let loss = |x: &[f64], w: Option<&[f64]>, b: Option<&[f64]>| {
                    let (y, _, _) = naive_layer_norm(x, cols, w, b, 1e-5);
                    dot(&y, &r)
                };
                let (mut y, mut m, mut rs) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
                layer_norm_forward(&x, rows, cols, wo, bo, 1e-5, &mut y, &mut m, &mut rs);
                let mut gx = vec![0.0; rows * cols];
                let (mut gw, mut gb) = (vec![0.0; cols], vec![0.0; cols]);
                let (gwo, gbo) = if affine { (Some(&mut gw[..]), Some(&mut gb[..])) } else { (None, None) };
                layer_norm_backward(&x, &r, rows, cols, wo, &m, &rs, &mut gx, gwo, gbo);
                if rows * cols > 1000 {
                    // big case: check a sample of rows against FD through one row
                    for row in [0, rows / 2, rows - 1] {
                        let xr = &x[row * cols..(row + 1) * cols];
                        let rr = &r[row * cols..(row + 1) * cols];
                        let f = |xr: &[f64]| dot(&naive_layer_norm(xr, cols, wo, bo, 1e-5).0, rr);
                        assert_close(&gx[row * cols..(row + 1) * cols], &fd(xr, &f), 1e-5, "fd ln gx (big)");
                    }
                } else {
                    assert_close(&gx, &fd(&x, &|x| loss(x, wo, bo)), 1e-6, "fd ln gx");
                }
                if affine {
                    assert_close(&gw, &fd(&w, &|w| loss(&x, Some(w), bo)), 1e-5, "fd ln gw");
                    assert_close(&gb, &fd(&b, &|b| loss(&x, wo, Some(b))), 1e-5, "fd ln gb");
                }
            }
        }
    }

    /// Naive batch norm: returns (y, batch mean, biased batch var) per channel.
    #[allow(clippy::type_complexity)]
    fn naive_batch_norm(
        x: &[f64],
        (n, c, s): (usize, usize, usize),
        w: Option<&[f64]>,
        b: Option<&[f64]>,
        stats: Option<(&[f64], &[f64])>,
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let idx = |i: usize, ch: usize, j: usize| (i * c + ch) * s + j;
        let cnt = (n * s) as f64;
        let mut mean = vec![0.0; c];
        let mut var = vec![0.0; c];
        for ch in 0..c {
            for i in 0..n {
                for j in 0..s {
                    mean[ch] += x[idx(i, ch, j)] / cnt;
                }
            }
            for i in 0..n {
                for j in 0..s {
                    var[ch] += (x[idx(i, ch, j)] - mean[ch]).powi(2) / cnt;
                }
            }
        }
        let (um, uv) = stats.unwrap_or((&mean, &var));
        let mut y = vec![0.0; x.len()];
        for i in 0..n {
            for ch in 0..c {
                for j in 0..s {
                    let k = idx(i, ch, j);
                    y[k] =
                        (x[k] - um[ch]) / (uv[ch] + eps).sqrt() * w.map_or(1.0, |w| w[ch]) + b.map_or(0.0, |b| b[ch]);
                }
            }
        }
        (y, mean, var)
    }

    const BN_SHAPES: [(usize, usize, usize); 5] = [(4, 3, 5), (7, 5, 1), (2, 2, 70000), (3000, 16, 1), (2, 3, 1)];

    #[test]
    fn batch_norm_forward_matches_naive() {
        let mut rng = Rng(8);
        let (momentum, eps) = (0.1, 1e-5);
        for (n, c, s) in BN_SHAPES {
            let x: Vec<f64> = rng.vec(n * c * s).iter().map(|v| v * 2.0 + 5.0).collect();
            let (w, b) = (rng.vec(c), rng.vec(c));
            for affine in [false, true] {
                let (wo, bo) = if affine { (Some(&w[..]), Some(&b[..])) } else { (None, None) };
                let (want, bm, bv) = naive_batch_norm(&x, (n, c, s), wo, bo, None, eps);
                // training, with running stats
                let (rm0, rv0): (Vec<f64>, Vec<f64>) = (rng.vec(c), rng.vec(c).iter().map(|v| v + 2.0).collect());
                let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
                let (mut y, mut sm, mut sr) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
                batch_norm_forward(
                    &x,
                    n,
                    c,
                    s,
                    wo,
                    bo,
                    Some(&mut rm),
                    Some(&mut rv),
                    true,
                    momentum,
                    eps,
                    &mut y,
                    &mut sm,
                    &mut sr,
                );
                assert_close(&y, &want, 1e-9, "bn train y");
                assert_close(&sm, &bm, 1e-12, "bn save_mean");
                let want_rstd: Vec<f64> = bv.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                assert_close(&sr, &want_rstd, 1e-10, "bn save_rstd");
                let cnt = (n * s) as f64;
                let want_rm: Vec<f64> = rm0.iter().zip(&bm).map(|(r, m)| 0.9 * r + 0.1 * m).collect();
                let want_rv: Vec<f64> =
                    rv0.iter().zip(&bv).map(|(r, v)| 0.9 * r + 0.1 * v * cnt / (cnt - 1.0)).collect();
                assert_close(&rm, &want_rm, 1e-12, "bn running_mean");
                assert_close(&rv, &want_rv, 1e-12, "bn running_var");
                // training without running stats gives the same y
                let mut y2 = vec![0.0; x.len()];
                batch_norm_forward(&x, n, c, s, wo, bo, None, None, true, momentum, eps, &mut y2, &mut sm, &mut sr);
                assert_close(&y2, &want, 1e-9, "bn train y (no running)");
                // inference with the running stats
                let (want_e, _, _) = naive_batch_norm(&x, (n, c, s), wo, bo, Some((&rm, &rv)), eps);
                let (rm_before, rv_before) = (rm.clone(), rv.clone());
                batch_norm_forward(
                    &x,
                    n,
                    c,
                    s,
                    wo,
                    bo,
                    Some(&mut rm),
                    Some(&mut rv),
                    false,
                    momentum,
                    eps,
                    &mut y,
                    &mut sm,
                    &mut sr,
                );
                assert_close(&y, &want_e, 1e-9, "bn eval y");
                assert_eq!((rm, rv), (rm_before.clone(), rv_before.clone()), "eval must not touch running stats");
                assert_close(&sm, &rm_before, 0.0, "bn eval save_mean");
                let want_rstd: Vec<f64> = rv_before.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                assert_close(&sr, &want_rstd, 1e-12, "bn eval save_rstd");
            }
        }
    }

    #[test]
    fn batch_norm_backward_matches_finite_differences() {
        let mut rng = Rng(9);
        let eps = 1e-5;
        for (n, c, s) in [(4, 3, 5), (7, 5, 1), (2, 2, 9), (2, 3, 1)] {
            let x = rng.vec(n * c * s);
            let (w, b, r) = (rng.vec(c), rng.vec(c), rng.vec(n * c * s));
            let rm = rng.vec(c);
            let rv: Vec<f64> = rng.vec(c).iter().map(|v| v + 1.5).collect();
            for training in [true, false] {
                let stats = if training { None } else { Some((&rm[..], &rv[..])) };
                for affine in [false, true] {
                    let (wo, bo) = if affine { (Some(&w[..]), Some(&b[..])) } else { (None, None) };
                    let loss = |x: &[f64], w: Option<&[f64]>, b: Option<&[f64]>| {
                        dot(&naive_batch_norm(x, (n, c, s), w, b, stats, eps).0, &r)
                    };
                    let (mut y, mut sm, mut sr) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
                    let (mut rm2, mut rv2) = (rm.clone(), rv.clone());
                    batch_norm_forward(
                        &x,
                        n,
                        c,
                        s,
                        wo,
                        bo,
                        Some(&mut rm2),
                        Some(&mut rv2),
                        training,
                        0.1,
                        eps,
                        &mut y,
                        &mut sm,
                        &mut sr,
                    );
                    let mut gx = vec![0.0; x.len()];
                    let (mut gw, mut gb) = (vec![0.0; c], vec![0.0; c]);
                    batch_norm_backward(&x, &r, n, c, s, wo, &sm, &sr, training, &mut gx, Some(&mut gw), Some(&mut gb));
                    let what = format!("bn {n}x{c}x{s} training {training} affine {affine}");
                    assert_close(&gx, &fd(&x, &|x| loss(x, wo, bo)), 1e-6, &format!("{what} gx"));
                    let wv = wo.map_or(vec![1.0; c], |w| w.to_vec());
                    let bv = bo.map_or(vec![0.0; c], |b| b.to_vec());
                    assert_close(&gw, &fd(&wv, &|w| loss(&x, Some(w), Some(&bv))), 1e-6, &format!("{what} gw"));
                    assert_close(&gb, &fd(&bv, &|b| loss(&x, Some(&wv), Some(b))), 1e-6, &format!("{what} gb"));
                    // without the optional outputs grad_x is unchanged
                    let mut gx2 = vec![0.0; x.len()];
                    batch_norm_backward(&x, &r, n, c, s, wo, &sm, &sr, training, &mut gx2, None, None);
                    assert_close(&gx2, &gx, 0.0, &format!("{what} gx without gw/gb"));
                }
            }
        }
    }
}
