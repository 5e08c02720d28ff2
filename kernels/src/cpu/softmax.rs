//! Softmax and log-softmax over the last dim of a contiguous `[rows, n]` matrix, with their
//! backward passes.
//!
//! Forward, per row (three passes over a row that stays in L1/L2): the maximum `m`;
//! `y = exp(x - m)` with the running sum `s` (vectorised `exp` for `f32`); then `y *= 1/s`
//! (softmax) or `y = x - m - ln s` (log-softmax). Rows run in parallel. Reads `n`, writes `n`.
//!
//! Backward: softmax `gx = y ⊙ (gy - Σ gy·y)`; log-softmax `gx = gy - exp(y) · Σ gy`.

use super::reduce::{downcast_f32, downcast_f32_mut};
use super::{vmath, Float, PAR_CHUNK};
use rayon::prelude::*;

fn rows_per_task(n: usize) -> usize {
    (PAR_CHUNK / n.max(1)).max(1)
}

fn softmax_row<T: Float>(x: &[T], y: &mut [T], log: bool) {
    if let (Some(xf), Some(yf)) = (downcast_f32(x), downcast_f32_mut(y)) {
        let m = vmath::max_f32(xf);
        if m == f32::NEG_INFINITY || m.is_nan() {
            // all -inf (fully masked row) or NaN: PyTorch gives NaN
            yf.fill(f32::NAN);
            return;
        }
        let s = vmath::exp_shift_sum_f32(xf, m, yf);
        if log {
            let shift = m + s.ln();
            for (o, &v) in yf.iter_mut().zip(xf) {
                *o = v - shift;
            }
        } else {
            vmath::scale_f32(yf, 1.0 / s);
        }
        return;
    }
    let m = x.iter().fold(T::neg_infinity(), |a, &b| if b > a || b.is_nan() { b } else { a });
    if m == T::neg_infinity() || m.is_nan() {
        y.fill(T::nan());
        return;
    }
    let mut s = T::zero();
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - m).exp();
        s += *o;
    }
    if log {
        let shift = m + s.ln();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v - shift;
        }
    } else {
        let inv = T::one() / s;
        for o in y.iter_mut() {
            *o *= inv;
        }
    }
}

/// Softmax (or log-softmax when `log`) of each row of `x` `[rows, n]` into `y`.
pub fn softmax_last<T: Float>(x: &[T], rows: usize, n: usize, log: bool, y: &mut [T]) {
    assert_eq!(x.len(), rows * n, "softmax_last: input length");
    assert_eq!(y.len(), rows * n, "softmax_last: output length");
    if n == 0 {
        return;
    }
    let rpt = rows_per_task(n);
    y.par_chunks_mut(rpt * n).zip(x.par_chunks(rpt * n)).for_each(|(yc, xc)| {
        for (yr, xr) in yc.chunks_mut(n).zip(xc.chunks(n)) {
            softmax_row(xr, yr, log);
        }
    });
}

/// Gradient of [`softmax_last`]: from the forward output `y` and the upstream `gy`.
pub fn softmax_backward_last<T: Float>(y: &[T], gy: &[T], rows: usize, n: usize, log: bool, gx: &mut [T]) {
    assert!(y.len() == rows * n && gy.len() == rows * n && gx.len() == rows * n);
    if n == 0 {
        return;
    }
    let rpt = rows_per_task(n);
    gx.par_chunks_mut(rpt * n).zip(y.par_chunks(rpt * n).zip(gy.par_chunks(rpt * n))).for_each(|(gc, (yc, gyc))| {
        for ((g, yr), gyr) in gc.chunks_mut(n).zip(yc.chunks(n)).zip(gyc.chunks(n)) {
            if log {
                let s: T = gyr.iter().copied().sum();
                for j in 0..n {
                    g[j] = gyr[j] - yr[j].exp() * s;
                }
            } else {
                let dot: T = yr.iter().zip(gyr).map(|(&a, &b)| a * b).sum();
                for j in 0..n {
                    g[j] = yr[j] * (gyr[j] - dot);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_sum_to_one_and_match_f64() {
        let (rows, n) = (3, 50);
        let x: Vec<f32> = (0..rows * n).map(|i| ((i * 37) % 23) as f32 * 0.3 - 3.0).collect();
        let mut y = vec![0.0; rows * n];
        softmax_last(&x, rows, n, false, &mut y);
        let mut ly = vec![0.0; rows * n];
        softmax_last(&x, rows, n, true, &mut ly);
        for r in 0..rows {
            let row = &x[r * n..(r + 1) * n];
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            for j in 0..n {
                let want = (row[j] as f64 - m).exp() / s;
                assert!((y[r * n + j] as f64 - want).abs() < 1e-6);
                assert!((ly[r * n + j] as f64 - want.ln()).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn masked_row_is_nan_like_pytorch() {
        let x = vec![f32::NEG_INFINITY; 4];
        let mut y = vec![0.0; 4];
        softmax_last(&x, 1, 4, false, &mut y);
        assert!(y.iter().all(|v| v.is_nan()));
    }
}
