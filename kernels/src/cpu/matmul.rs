//! Matrix multiplication through the `gemm` crate.
//!
//! `gemm` takes arbitrary row and column strides for every operand, so transposed or otherwise
//! strided views need no copy. Batches run one after another with gemm's internal rayon
//! parallelism when a single product is large, or in parallel (one thread per product) when the
//! products are small.

use super::SendPtr;
use rayon::prelude::*;

/// A strided 2-D operand inside a batch: element `(b, i, j)` is at
/// `offset + b * batch_stride + i * row_stride + j * col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatLayout {
    /// Element index of element `(0, 0, 0)`.
    pub offset: usize,
    /// Elements between consecutive matrices of the batch.
    pub batch_stride: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
}

impl MatLayout {
    /// A contiguous row-major `[batch, rows, cols]` layout.
    pub fn contiguous(rows: usize, cols: usize) -> Self {
        MatLayout { offset: 0, batch_stride: rows * cols, row_stride: cols, col_stride: 1 }
    }
    /// The transpose of this layout (swap row and column strides).
    pub fn t(self) -> Self {
        MatLayout { row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }
}

/// Work (m·n·k) below which one product is computed without threads.
const SMALL_GEMM: usize = 64 * 64 * 64;

/// `dst[b] = beta * dst[b] + lhs[b] @ rhs[b]` for `b in 0..batch`, with `lhs[b]` `[m, k]`,
/// `rhs[b]` `[k, n]` and `dst[b]` `[m, n]` (all strided).
///
/// With `accumulate == false` the previous content of `dst` is ignored (beta = 0).
/// `T` must be `f32`, `f64` or `half::f16` (gemm's supported types).
///
/// # Panics
/// If an operand's layout addresses memory outside its slice (a caller bug, checked up front).
#[allow(clippy::too_many_arguments)]
pub fn gemm_batched<T: Copy + Send + Sync + 'static + num_traits::One>(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: &[T],
    lhs_l: MatLayout,
    rhs: &[T],
    rhs_l: MatLayout,
    dst: &mut [T],
    dst_l: MatLayout,
    accumulate: bool,
) {
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let span = |l: &MatLayout, r: usize, c: usize| {
        l.offset
            + (batch - 1) * l.batch_stride
            + r.saturating_sub(1) * l.row_stride
            + c.saturating_sub(1) * l.col_stride
    };
    if k > 0 {
        assert!(span(&lhs_l, m, k) < lhs.len(), "gemm_batched: lhs layout out of bounds");
        assert!(span(&rhs_l, k, n) < rhs.len(), "gemm_batched: rhs layout out of bounds");
    }
    assert!(span(&dst_l, m, n) < dst.len(), "gemm_batched: dst layout out of bounds");
    let work = m * n * k.max(1);
    let threads = rayon::current_num_threads();
    let dst_ptr = SendPtr(dst.as_mut_ptr());
    let one = T::one();
    let run = |b: usize, par: gemm::Parallelism| unsafe {
        let d = dst_ptr.get().add(dst_l.offset + b * dst_l.batch_stride);
        if k == 0 {
            if !accumulate {
                for i in 0..m {
                    for j in 0..n {
                        // zero-sized contraction: the product is all zeros
                        *d.add(i * dst_l.row_stride + j * dst_l.col_stride) = std::mem::zeroed::<T>();
                    }
                }
            }
            return;
        }
        gemm::gemm(
            m,
            n,
            k,
            d,
            dst_l.col_stride as isize,
            dst_l.row_stride as isize,
            accumulate,
            lhs.as_ptr().add(lhs_l.offset + b * lhs_l.batch_stride),
            lhs_l.col_stride as isize,
            lhs_l.row_stride as isize,
            rhs.as_ptr().add(rhs_l.offset + b * rhs_l.batch_stride),
            rhs_l.col_stride as isize,
            rhs_l.row_stride as isize,
            one,
            one,
            false,
            false,
            false,
            par,
        )
    };
    // dst batches must not alias for the parallel path; a zero batch stride means all products
    // accumulate into one matrix, which must run sequentially.
    let disjoint = dst_l.batch_stride != 0 || batch == 1;
    if batch > 1 && work < SMALL_GEMM * 4 && threads > 1 && disjoint {
        (0..batch).into_par_iter().for_each(|b| run(b, gemm::Parallelism::None));
    } else {
        let par =
            if work < SMALL_GEMM || threads == 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };
        for b in 0..batch {
            run(b, par);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        c
    }

    #[test]
    fn matches_naive_including_transposed_rhs() {
        let (m, n, k) = (7, 5, 11);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let want = naive(m, n, k, &a, &b);
        let mut got = vec![0.0; m * n];
        gemm_batched(
            1,
            m,
            n,
            k,
            &a,
            MatLayout::contiguous(m, k),
            &b,
            MatLayout::contiguous(k, n),
            &mut got,
            MatLayout::contiguous(m, n),
            false,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12);
        }
        // rhs stored as [n, k] and read transposed
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut got2 = vec![0.0; m * n];
        gemm_batched(
            1,
            m,
            n,
            k,
            &a,
            MatLayout::contiguous(m, k),
            &bt,
            MatLayout::contiguous(n, k).t(),
            &mut got2,
            MatLayout::contiguous(m, n),
            false,
        );
        for (g, w) in got2.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12);
        }
    }
}
