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

use super::{n_tasks, Float, PAR_CHUNK};
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

/// `(Σ g·w, Σ g·w·(x - mean))` in `f64` (4 lanes); `w = None` means all ones.
fn sum_grad_dev<T: Float>(x: &[T], g: &[T], w: Option<&[T]>, mean: f64) -> (f64, f64) {
    let (mut a, mut b) = ([0.0f64; 4], [0.0f64; 4]);
    let mut step = |l: usize, x: T, g: f64| {
        a[l] += g;
        b[l] += g * (x.to_f64_lossy() - mean);
    };
    match w {
        Some(w) => {
            for (j, ((&x, &g), &w)) in x.iter().zip(g).zip(w).enumerate() {
                step(j & 3, x, g.to_f64_lossy() * w.to_f64_lossy());
            }
        }
        None => {
            for (j, (&x, &g)) in x.iter().zip(g).enumerate() {
                step(j & 3, x, g.to_f64_lossy());
            }
        }
    }
    (a.iter().sum(), b.iter().sum())
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
    y.par_chunks_mut(rpt * cols)
        .zip(x.par_chunks(rpt * cols))
        .zip(mean.par_chunks_mut(rpt).zip(rstd.par_chunks_mut(rpt)))
        .for_each(|((y, x), (mean, rstd))| {
            for (((y, x), m), r) in y.chunks_exact_mut(cols).zip(x.chunks_exact(cols)).zip(mean).zip(rstd) {
                let mu = sum_f64(x) / cols as f64;
                let var = sum_sq_dev(x, mu) / cols as f64;
                let rs = 1.0 / (var + eps).sqrt();
                *m = T::from_f64_lossy(mu);
                *r = T::from_f64_lossy(rs);
                let (mu, rs) = (T::from_f64_lossy(mu), T::from_f64_lossy(rs));
                match (weight, bias) {
                    (Some(w), Some(b)) => {
                        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                            *y = (x - mu) * rs * w + b;
                        }
                    }
                    (Some(w), None) => {
                        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                            *y = (x - mu) * rs * w;
                        }
                    }
                    (None, Some(b)) => {
                        for ((y, &x), &b) in y.iter_mut().zip(x).zip(b) {
                            *y = (x - mu) * rs + b;
                        }
                    }
                    (None, None) => {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = (x - mu) * rs;
                        }
                    }
                }
            }
        });
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
    let fold = |out: &mut [T], pick: &dyn Fn(&(Vec<f64>, Vec<f64>)) -> &[f64]| {
        let mut acc = vec![0.0f64; cols];
        for p in &partials {
            for (a, v) in acc.iter_mut().zip(pick(p)) {
                *a += v;
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = T::from_f64_lossy(*a);
        }
    };
    if let Some(gw) = grad_weight {
        fold(gw, &|p| &p.0);
    }
    if let Some(gb) = grad_bias {
        fold(gb, &|p| &p.1);
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
