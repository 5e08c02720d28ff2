//! Matrix multiplication through the `gemm` crate.
//!
//! `gemm` takes arbitrary row and column strides for every operand, so transposed or otherwise
//! strided views need no copy. Batches run one after another with gemm's internal rayon
//! parallelism when a single product is large, or in parallel (one thread per product) when the
//! products are small.

use super::reduce::{downcast_f32, downcast_f32_mut};
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
    /// Element index of element `(0, 0)` of matrix `b` of the batch.
    fn start(&self, b: usize) -> usize {
        self.offset + b * self.batch_stride
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
    if let (Some(l), Some(r), Some(d)) = (downcast_f32(lhs), downcast_f32(rhs), downcast_f32_mut(dst)) {
        if small_m_transposed_rhs(m, n, k, &lhs_l, &rhs_l, &dst_l) {
            for b in 0..batch {
                small_m_dots(m, n, k, l, lhs_l, r, rhs_l, d, dst_l, b, accumulate);
            }
            return;
        }
        if tall_transposed_rhs(m, n, k, &lhs_l, &rhs_l, &dst_l) {
            for b in 0..batch {
                packed_transposed_rhs(m, n, k, l, lhs_l, r, rhs_l, d, dst_l, b, accumulate, threads);
            }
            return;
        }
    }
    let dst_ptr = SendPtr(dst.as_mut_ptr());
    let one = T::one();
    let run = |b: usize, par: gemm::Parallelism| unsafe {
        let d = dst_ptr.get().add(dst_l.start(b));
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
            lhs.as_ptr().add(lhs_l.start(b)),
            lhs_l.col_stride as isize,
            lhs_l.row_stride as isize,
            rhs.as_ptr().add(rhs_l.start(b)),
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

    type PathTest = fn(usize, usize, usize, &MatLayout, &MatLayout, &MatLayout) -> bool;

    /// A product against a transposed operand through the path `takes` selects: batches with
    /// offsets, overwrite and accumulate, against an f64 reference.
    fn check_transposed_rhs(batch: usize, m: usize, n: usize, k: usize, takes: PathTest) {
        let mut rng = crate::cpu::test_rng::Rng(0x2545_f491_4f6c_dd1d);
        let lhs: Vec<f32> = (0..3 + batch * m * k).map(|_| rng.next() as f32).collect();
        let w: Vec<f32> = (0..batch * n * k).map(|_| rng.next() as f32).collect(); // [batch, n, k]
        let lhs_l = MatLayout { offset: 3, batch_stride: m * k, row_stride: k, col_stride: 1 };
        let rhs_l = MatLayout { offset: 0, batch_stride: n * k, row_stride: 1, col_stride: k };
        assert!(takes(m, n, k, &lhs_l, &rhs_l, &MatLayout::contiguous(m, n)));
        for accumulate in [false, true] {
            let init: Vec<f32> = (0..batch * m * n).map(|_| rng.next() as f32).collect();
            let mut dst = init.clone();
            gemm_batched(batch, m, n, k, &lhs, lhs_l, &w, rhs_l, &mut dst, MatLayout::contiguous(m, n), accumulate);
            for b in 0..batch {
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|t| lhs[3 + b * m * k + i * k + t] as f64 * w[b * n * k + j * k + t] as f64)
                            .sum();
                        let idx = b * m * n + i * n + j;
                        let want = dot + if accumulate { init[idx] as f64 } else { 0.0 };
                        assert!(
                            (dst[idx] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "b{b} ({i}, {j}) acc {accumulate}: {} vs {want}",
                            dst[idx]
                        );
                    }
                }
            }
        }
    }

    /// Few rows: the dot-product path.
    #[test]
    fn small_m_transposed_rhs_matches_reference() {
        check_transposed_rhs(2, 5, 300, 70, small_m_transposed_rhs);
    }

    /// Many rows (odd sizes, not multiples of any tile): the packed path, where this CPU has it.
    #[test]
    fn tall_transposed_rhs_matches_reference() {
        if !crate::cpu::packed::packs_for_kernels::<f32>() {
            eprintln!("no AVX2/AVX-512: the packed path is not taken on this CPU; checking the gemm path");
            check_transposed_rhs(2, 41, 310, 350, |_, _, _, _, _, _| true);
            return;
        }
        check_transposed_rhs(2, 41, 310, 350, tall_transposed_rhs);
        // a second call reuses the thread's panel buffer for another shape
        check_transposed_rhs(1, 100, 97, 1000, tall_transposed_rhs);
    }

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

/// Whether a product takes the small-M dot-product path: `f32` (checked by the caller), at most
/// 16 rows against a wide and deep right operand stored transposed (`row_stride == 1`, as
/// `x Wᵀ` of a Linear layer views its weight), with contiguous rows everywhere. Each output is
/// then a dot product of two contiguous rows, and the weight streams once, front to back. The
/// `gemm` crate took 7.7 ms for `[8, 1024] × Wᵀ`, `W` `[4096, 1024]`, on 2 threads of an AMD
/// EPYC (it packs `Wᵀ` through a strided gather on every call).
fn small_m_transposed_rhs(m: usize, n: usize, k: usize, lhs: &MatLayout, rhs: &MatLayout, dst: &MatLayout) -> bool {
    m <= 16 && n >= 256 && k >= 64 && rows_against_transposed_rhs(n, k, lhs, rhs, dst)
}

/// `x Wᵀ` with contiguous rows everywhere: the right operand stored transposed
/// (`row_stride == 1`), the left operand's and the destination's rows contiguous.
fn rows_against_transposed_rhs(n: usize, k: usize, lhs: &MatLayout, rhs: &MatLayout, dst: &MatLayout) -> bool {
    rhs.row_stride == 1
        && lhs.col_stride == 1
        && dst.col_stride == 1
        && lhs.row_stride >= k
        && rhs.col_stride >= k
        && dst.row_stride >= n
}

/// Whether a product takes the packed path: `f32` (checked by the caller) on a CPU with the
/// packed micro-kernels, more than 16 rows against a right operand stored transposed
/// (`row_stride == 1`: `x Wᵀ` of a Linear layer), contiguous rows, and enough work to amortise
/// packing `Wᵀ` (`m·n·k >= 2^22`). The `gemm` crate reached 93-130 GFLOP/s on such products on
/// 2 threads of an AMD EPYC (`[499, 3072] × Wᵀ`, `W` `[768, 3072]`: 25 ms), the packed kernels
/// 181-189 (13 ms) (`benches/RESULTS.md`, issue 17).
fn tall_transposed_rhs(m: usize, n: usize, k: usize, lhs: &MatLayout, rhs: &MatLayout, dst: &MatLayout) -> bool {
    m > 16
        && m * n * k >= 1 << 22
        && rows_against_transposed_rhs(n, k, lhs, rhs, dst)
        && super::packed::packs_for_kernels::<f32>()
}

thread_local! {
    /// The panel buffer of [`packed_transposed_rhs`], kept between calls on this thread (a
    /// fresh 10 MiB buffer per call costs its page faults every time).
    static PACK_BUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Product `b` of the batch through `PackedRhs`: `Wᵀ` packed into panels (a recycled buffer),
/// then the packed micro-kernels on `threads` threads.
#[allow(clippy::too_many_arguments)]
fn packed_transposed_rhs(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_l: MatLayout,
    rhs: &[f32],
    rhs_l: MatLayout,
    dst: &mut [f32],
    dst_l: MatLayout,
    b: usize,
    accumulate: bool,
    threads: usize,
) {
    use super::packed::{best_isa, PackedRhs};
    use super::rnn::Strided;
    let (lo, ro, d0) = (lhs_l.start(b), rhs_l.start(b), dst_l.start(b));
    // element (kk, j) of the right operand is at ro + kk + j * col_stride: the transpose of a
    // row-major [n, k] matrix with row stride col_stride
    let layout = Strided { offset: ro, row_stride: 1, col_stride: rhs_l.col_stride };
    let buf = PACK_BUF.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let packed = PackedRhs::pack_into(buf, best_isa(), k, n, rhs, layout);
    super::packed::gemm_packed(
        m,
        &mut dst[d0..],
        dst_l.row_stride,
        accumulate,
        &lhs[lo..],
        lhs_l.row_stride,
        &packed,
        threads,
    );
    let buf = packed.into_vec();
    PACK_BUF.with(|c| *c.borrow_mut() = buf);
}

super::vmath::multiversion! {
    /// `out[i] = Σ_k a[i·lda + k] · w[k]` for the `m = out.len()` rows of `a`, 16 lanes each
    /// (one row of `W` against every row of the left operand).
    pub fn dots_f32(a: &[f32], lda: usize, w: &[f32], out: &mut [f32]) {
        let k = w.len();
        for (i, o) in out.iter_mut().enumerate() {
            let row = &a[i * lda..i * lda + k];
            let mut acc = [0.0f32; 16];
            let mut rc = row.chunks_exact(16);
            let mut wc = w.chunks_exact(16);
            for (x, y) in (&mut rc).zip(&mut wc) {
                for l in 0..16 {
                    acc[l] += x[l] * y[l];
                }
            }
            let tail: f32 = rc.remainder().iter().zip(wc.remainder()).map(|(x, y)| x * y).sum();
            *o = acc.iter().sum::<f32>() + tail;
        }
    }
}

/// Product `b` of the batch as dot products: output column `j` is `lhs · W[j]`, the columns
/// shared among the rayon threads in blocks.
#[allow(clippy::too_many_arguments)]
fn small_m_dots(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_l: MatLayout,
    rhs: &[f32],
    rhs_l: MatLayout,
    dst: &mut [f32],
    dst_l: MatLayout,
    b: usize,
    accumulate: bool,
) {
    let (lo, ro, d0) = (lhs_l.start(b), rhs_l.start(b), dst_l.start(b));
    let (a, ldd) = (&lhs[lo..], dst_l.row_stride);
    let dst_ptr = SendPtr(dst[d0..].as_mut_ptr());
    const COLS: usize = 64;
    (0..n.div_ceil(COLS)).into_par_iter().for_each(|blk| {
        let mut col = [0.0f32; 16];
        for j in blk * COLS..((blk + 1) * COLS).min(n) {
            let w = &rhs[ro + j * rhs_l.col_stride..ro + j * rhs_l.col_stride + k];
            dots_f32(a, lhs_l.row_stride, w, &mut col[..m]);
            for (i, &v) in col[..m].iter().enumerate() {
                // SAFETY: (i, j) lies in this product's [m, n] block of dst (bounds checked by
                // the caller); each column is written by one task only.
                unsafe {
                    let d = dst_ptr.get().add(i * ldd + j);
                    *d = if accumulate { *d + v } else { v };
                }
            }
        }
    });
}
