//! Reductions over contiguous data.
//!
//! Two layouts cover every reduction after the tensor layer has arranged its input:
//! * *last*: `[rows, r]`, each row reduced to one value (rows in parallel; `f32` sums and maxima
//!   use the 16-lane vectorised helpers of [`vmath`]);
//! * *mid*: `[a, r, b]` reduced over `r` to `[a, b]`, accumulating whole `b`-long rows so the
//!   inner loop is a contiguous, vectorisable `acc[j] += x[j]` (used for the gradient of a
//!   broadcast, which sums over leading dims).
//!
//! Sums accumulate in `T` within blocks and in `f64` across blocks; var is two-pass
//! (mean, then squared deviations) in `f64`; logsumexp subtracts the row maximum.

use super::{vmath, Float, SendPtr, PAR_CHUNK};
use rayon::prelude::*;
use std::any::TypeId;

/// Reduction applied to each row by [`reduce_last`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReduceOp {
    /// Sum of the row.
    Sum,
    /// Mean of the row.
    Mean,
    /// Maximum of the row (NaN if any element is NaN).
    Max,
    /// Minimum of the row (NaN if any element is NaN).
    Min,
    /// `log Σ exp(x)`, stable.
    LogSumExp,
    /// Variance with Bessel-style `correction` (0: biased, 1: unbiased).
    Var {
        /// Subtracted from the count in the divisor: `Σ (x - mean)² / (n - correction)`.
        correction: usize,
    },
}

/// Sum of a row.
#[inline]
fn row_sum<T: Float>(row: &[T]) -> T {
    if let Some(r) = downcast_f32(row) {
        return T::from_f64_lossy(vmath::sum_f32(r) as f64);
    }
    let mut total = 0.0f64;
    for block in row.chunks(1024) {
        let mut acc = [T::zero(); 8];
        let mut c = block.chunks_exact(8);
        for ch in &mut c {
            for i in 0..8 {
                acc[i] += ch[i];
            }
        }
        let s: T = acc.iter().copied().sum::<T>() + c.remainder().iter().copied().sum::<T>();
        total += s.to_f64_lossy();
    }
    T::from_f64_lossy(total)
}

/// Maximum (or minimum) of a row with NaN propagation.
#[inline]
fn row_max<T: Float>(row: &[T], want_max: bool) -> T {
    if want_max {
        if let Some(r) = downcast_f32(row) {
            return T::from_f64_lossy(vmath::max_f32(r) as f64);
        }
    }
    let mut m = if want_max { T::neg_infinity() } else { T::infinity() };
    for &x in row {
        if x.is_nan() {
            return x;
        }
        if (want_max && x > m) || (!want_max && x < m) {
            m = x;
        }
    }
    m
}

/// Reinterprets a generic slice as `&[f32]` when `T` is `f32`.
#[inline]
pub(crate) fn downcast_f32<T: 'static>(xs: &[T]) -> Option<&[f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32.
        Some(unsafe { std::slice::from_raw_parts(xs.as_ptr() as *const f32, xs.len()) })
    } else {
        None
    }
}

/// Mutable counterpart of [`downcast_f32`].
#[inline]
pub(crate) fn downcast_f32_mut<T: 'static>(xs: &mut [T]) -> Option<&mut [f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32.
        Some(unsafe { std::slice::from_raw_parts_mut(xs.as_mut_ptr() as *mut f32, xs.len()) })
    } else {
        None
    }
}

fn reduce_row<T: Float>(row: &[T], op: ReduceOp) -> T {
    let n = row.len();
    match op {
        ReduceOp::Sum => row_sum(row),
        ReduceOp::Mean => {
            if n == 0 {
                T::nan()
            } else {
                T::from_f64_lossy(row_sum(row).to_f64_lossy() / n as f64)
            }
        }
        ReduceOp::Max => row_max(row, true),
        ReduceOp::Min => row_max(row, false),
        ReduceOp::LogSumExp => {
            let m = row_max(row, true);
            if m.is_nan() {
                return m;
            }
            if m.is_infinite() {
                // all -inf gives -inf; any +inf gives +inf
                return m;
            }
            let s = if let Some(r) = downcast_f32(row) {
                vmath::exp_shift_sum_only_f32(r, m.to_f64_lossy() as f32) as f64
            } else {
                row.iter().map(|&x| (x - m).to_f64_lossy().exp()).sum::<f64>()
            };
            T::from_f64_lossy(m.to_f64_lossy() + s.ln())
        }
        ReduceOp::Var { correction } => {
            let mean = row.iter().map(|x| x.to_f64_lossy()).sum::<f64>() / n as f64;
            let ss: f64 = row.iter().map(|x| (x.to_f64_lossy() - mean).powi(2)).sum();
            let denom = n as f64 - correction as f64;
            T::from_f64_lossy(if denom <= 0.0 { f64::NAN } else { ss / denom })
        }
    }
}

/// Reduces each row of the contiguous `[rows, r]` matrix `x` into `out[rows]`.
pub fn reduce_last<T: Float>(x: &[T], rows: usize, r: usize, op: ReduceOp, out: &mut [T]) {
    assert_eq!(x.len(), rows * r, "reduce_last: input length");
    assert_eq!(out.len(), rows, "reduce_last: output length");
    if r == 0 {
        let v = match op {
            ReduceOp::Sum => T::zero(),
            ReduceOp::Max | ReduceOp::Min => T::nan(),
            ReduceOp::LogSumExp => T::neg_infinity(),
            ReduceOp::Mean | ReduceOp::Var { .. } => T::nan(),
        };
        out.fill(v);
        return;
    }
    let threads = rayon::current_num_threads();
    if rows < threads
        && r >= 4 * PAR_CHUNK
        && matches!(op, ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::Min)
    {
        // few long rows: reduce pieces of each row in parallel, then combine the partials
        for (i, v) in out.iter_mut().enumerate() {
            let row = &x[i * r..(i + 1) * r];
            let piece_op = if op == ReduceOp::Mean { ReduceOp::Sum } else { op };
            let partials: Vec<T> = row.par_chunks(PAR_CHUNK * 4).map(|c| reduce_row(c, piece_op)).collect();
            *v = reduce_row(&partials, piece_op);
            if op == ReduceOp::Mean {
                *v = T::from_f64_lossy(v.to_f64_lossy() / r as f64);
            }
        }
        return;
    }
    let rows_per_task = (PAR_CHUNK / r).max(1);
    out.par_chunks_mut(rows_per_task).enumerate().for_each(|(t, o)| {
        let r0 = t * rows_per_task;
        for (i, v) in o.iter_mut().enumerate() {
            let row = &x[(r0 + i) * r..(r0 + i + 1) * r];
            *v = reduce_row(row, op);
        }
    });
}

/// Index of the maximum (`want_max`) or minimum of each row of `[rows, r]`; the first one on
/// ties; a NaN counts as the extreme (PyTorch's behaviour).
pub fn arg_reduce_last<T: Float>(x: &[T], rows: usize, r: usize, want_max: bool, out: &mut [i64]) {
    assert_eq!(x.len(), rows * r, "arg_reduce_last: input length");
    assert_eq!(out.len(), rows, "arg_reduce_last: output length");
    let rows_per_task = (PAR_CHUNK / r.max(1)).max(1);
    out.par_chunks_mut(rows_per_task).enumerate().for_each(|(t, o)| {
        let r0 = t * rows_per_task;
        for (i, v) in o.iter_mut().enumerate() {
            let row = &x[(r0 + i) * r..(r0 + i + 1) * r];
            let mut best = 0usize;
            for (j, &y) in row.iter().enumerate().skip(1) {
                let b = row[best];
                if b.is_nan() {
                    break;
                }
                if y.is_nan() || (want_max && y > b) || (!want_max && y < b) {
                    best = j;
                }
            }
            *v = best as i64;
        }
    });
}

/// Sums the contiguous `[a, r, b]` tensor `x` over its middle dim into `out[a, b]`.
pub fn sum_mid<T: Float>(x: &[T], a: usize, r: usize, b: usize, out: &mut [T]) {
    assert_eq!(x.len(), a * r * b, "sum_mid: input length");
    assert_eq!(out.len(), a * b, "sum_mid: output length");
    // Parallel over (a, block of b); each task accumulates r rows of its block in f64-safe
    // blocks of 256 rows.
    let bb = 1024.min(b.max(1));
    let blocks = b.div_ceil(bb);
    let optr = SendPtr(out.as_mut_ptr());
    (0..a * blocks).into_par_iter().for_each(|t| {
        let (ai, blk) = (t / blocks, t % blocks);
        let c0 = blk * bb;
        let c1 = (c0 + bb).min(b);
        let w = c1 - c0;
        // SAFETY: every (ai, block) is written by exactly one task.
        let o = unsafe { std::slice::from_raw_parts_mut(optr.get().add(ai * b + c0), w) };
        let mut total = vec![0.0f64; w];
        let mut acc = vec![T::zero(); w];
        for (k, ri) in (0..r).enumerate() {
            let row = &x[(ai * r + ri) * b + c0..(ai * r + ri) * b + c1];
            for j in 0..w {
                acc[j] += row[j];
            }
            if k % 256 == 255 {
                for j in 0..w {
                    total[j] += acc[j].to_f64_lossy();
                    acc[j] = T::zero();
                }
            }
        }
        for j in 0..w {
            o[j] = T::from_f64_lossy(total[j] + acc[j].to_f64_lossy());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_naive() {
        let (rows, r) = (5, 37);
        let x: Vec<f64> = (0..rows * r).map(|i| ((i * 31 % 17) as f64) - 8.0 + i as f64 * 1e-3).collect();
        let mut out = vec![0.0; rows];
        for op in [
            ReduceOp::Sum,
            ReduceOp::Mean,
            ReduceOp::Max,
            ReduceOp::Min,
            ReduceOp::LogSumExp,
            ReduceOp::Var { correction: 1 },
        ] {
            reduce_last(&x, rows, r, op, &mut out);
            for i in 0..rows {
                let row = &x[i * r..(i + 1) * r];
                let mean = row.iter().sum::<f64>() / r as f64;
                let want = match op {
                    ReduceOp::Sum => row.iter().sum(),
                    ReduceOp::Mean => mean,
                    ReduceOp::Max => row.iter().cloned().fold(f64::MIN, f64::max),
                    ReduceOp::Min => row.iter().cloned().fold(f64::MAX, f64::min),
                    ReduceOp::LogSumExp => row.iter().map(|v| v.exp()).sum::<f64>().ln(),
                    ReduceOp::Var { .. } => row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (r - 1) as f64,
                };
                assert!((out[i] - want).abs() < 1e-9 * want.abs().max(1.0), "{op:?}");
            }
        }
        let mut am = vec![0i64; rows];
        arg_reduce_last(&x, rows, r, true, &mut am);
        for i in 0..rows {
            let row = &x[i * r..(i + 1) * r];
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            assert_eq!(am[i] as usize, row.iter().position(|&v| v == m).unwrap());
        }
    }

    #[test]
    fn long_rows_split_across_threads() {
        let n = 1 << 20;
        let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0 + if i == 777_777 { 100.0 } else { 0.0 }).collect();
        let want_sum: f64 = x.iter().map(|&v| v as f64).sum();
        let mut out = [0.0f32];
        reduce_last(&x, 1, n, ReduceOp::Sum, &mut out);
        assert!((out[0] as f64 - want_sum).abs() < 1e-2, "{} vs {want_sum}", out[0]);
        reduce_last(&x, 1, n, ReduceOp::Max, &mut out);
        assert_eq!(out[0], x.iter().cloned().fold(f32::MIN, f32::max));
        assert!(out[0] > 90.0);
        reduce_last(&x, 1, n, ReduceOp::Mean, &mut out);
        assert!((out[0] as f64 - want_sum / n as f64).abs() < 1e-6);
    }

    #[test]
    fn sum_mid_matches_naive() {
        let (a, r, b) = (3, 300, 1500);
        let x: Vec<f32> = (0..a * r * b).map(|i| (i % 13) as f32 * 0.5).collect();
        let mut out = vec![0.0; a * b];
        sum_mid(&x, a, r, b, &mut out);
        for ai in 0..a {
            for bi in (0..b).step_by(97) {
                let want: f64 = (0..r).map(|ri| x[(ai * r + ri) * b + bi] as f64).sum();
                assert!((out[ai * b + bi] as f64 - want).abs() < 1e-3);
            }
        }
    }
}
