//! Elementwise binary (and ternary) maps with NumPy broadcasting over strided operands.
//!
//! The caller passes each operand's strides already broadcast to the output shape (stride 0 on
//! a broadcast dim). Dims are collapsed jointly (see [`collapse_dims`]); the innermost collapsed
//! dim is the inner loop, specialised for the stride pairs that matter: both contiguous, one
//! operand broadcast along the row (a scalar per row) and the general strided case. The output
//! is contiguous. Each output element costs one read per operand and one write.

use super::copy::{collapse_dims, for_each_row};
use super::{n_tasks, SendPtr};
use rayon::prelude::*;

/// A strided operand: `data[offset + Σ idx[d]·strides[d]]`, strides broadcast to the output.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a, T> {
    /// The operand's elements.
    pub data: &'a [T],
    /// Element strides, one per output dim (0 on broadcast dims).
    pub strides: &'a [usize],
    /// Element index of the operand's first element in `data`.
    pub offset: usize,
}

/// `dst[i] = f(lhs[i], rhs[i])` over the broadcast output `shape` (dst contiguous).
pub fn binary_map<T, U, V, F>(shape: &[usize], lhs: Strided<'_, T>, rhs: Strided<'_, U>, dst: &mut [V], f: F)
where
    T: Copy + Send + Sync,
    U: Copy + Send + Sync,
    V: Copy + Send + Sync,
    F: Fn(T, U) -> V + Sync + Send,
{
    let n: usize = shape.iter().product();
    assert_eq!(dst.len(), n, "binary_map: dst has the wrong length");
    if n == 0 {
        return;
    }
    let (cshape, [ls, rs]) = collapse_dims(shape, [lhs.strides, rhs.strides]);
    let inner = *cshape.last().unwrap();
    let (li, ri) = (*ls.last().unwrap(), *rs.last().unwrap());
    let outer_shape = &cshape[..cshape.len() - 1];
    let outer = [ls[..ls.len() - 1].to_vec(), rs[..rs.len() - 1].to_vec()];
    let rows = n / inner;
    let dptr = SendPtr(dst.as_mut_ptr());
    let (a, b) = (lhs.data, rhs.data);
    let row_kernel = |row: usize, lo: usize, ro: usize, c0: usize, c1: usize| {
        let len = c1 - c0;
        // SAFETY: every (row, column range) pair is written by exactly one task.
        let d = unsafe { std::slice::from_raw_parts_mut(dptr.get().add(row * inner + c0), len) };
        match (li, ri) {
            (1, 1) => {
                let (a, b) = (&a[lo + c0..lo + c1], &b[ro + c0..ro + c1]);
                for j in 0..len {
                    d[j] = f(a[j], b[j]);
                }
            }
            (1, 0) => {
                let (a, bv) = (&a[lo + c0..lo + c1], b[ro]);
                for j in 0..len {
                    d[j] = f(a[j], bv);
                }
            }
            (0, 1) => {
                let (av, b) = (a[lo], &b[ro + c0..ro + c1]);
                for j in 0..len {
                    d[j] = f(av, b[j]);
                }
            }
            _ => {
                for j in 0..len {
                    d[j] = f(a[lo + (c0 + j) * li], b[ro + (c0 + j) * ri]);
                }
            }
        }
    };
    let tasks = n_tasks(n);
    if rows >= tasks {
        // split by whole rows
        let rows_per = rows.div_ceil(tasks);
        (0..tasks).into_par_iter().for_each(|t| {
            let r0 = t * rows_per;
            let r1 = ((t + 1) * rows_per).min(rows);
            if r0 < r1 {
                for_each_row(outer_shape, &outer, [lhs.offset, rhs.offset], r0, r1 - r0, |r, [lo, ro]| {
                    row_kernel(r, lo, ro, 0, inner)
                });
            }
        });
    } else {
        // few long rows: split each row into column blocks
        let cols_per = inner.div_ceil(tasks.div_ceil(rows));
        let blocks = inner.div_ceil(cols_per);
        (0..rows * blocks).into_par_iter().for_each(|t| {
            let (r, blk) = (t / blocks, t % blocks);
            let c0 = blk * cols_per;
            let c1 = (c0 + cols_per).min(inner);
            for_each_row(outer_shape, &outer, [lhs.offset, rhs.offset], r, 1, |r, [lo, ro]| {
                row_kernel(r, lo, ro, c0, c1)
            });
        });
    }
}

/// `dst[i] = f(a[i], b[i], c[i])` over the broadcast output `shape` (used by `where`). The
/// inner loop is specialised for contiguous operands with at most one of `b`, `c` broadcast
/// along the row; other strides take the general loop.
pub fn ternary_map<A, B, C, V, F>(
    shape: &[usize],
    a: Strided<'_, A>,
    b: Strided<'_, B>,
    c: Strided<'_, C>,
    dst: &mut [V],
    f: F,
) where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    C: Copy + Send + Sync,
    V: Copy + Send + Sync,
    F: Fn(A, B, C) -> V + Sync + Send,
{
    let n: usize = shape.iter().product();
    assert_eq!(dst.len(), n, "ternary_map: dst has the wrong length");
    if n == 0 {
        return;
    }
    let (cshape, [sa, sb, sc]) = collapse_dims(shape, [a.strides, b.strides, c.strides]);
    let inner = *cshape.last().unwrap();
    let (ia, ib, ic) = (*sa.last().unwrap(), *sb.last().unwrap(), *sc.last().unwrap());
    let outer_shape = &cshape[..cshape.len() - 1];
    let outer = [sa[..sa.len() - 1].to_vec(), sb[..sb.len() - 1].to_vec(), sc[..sc.len() - 1].to_vec()];
    let rows = n / inner;
    let dptr = SendPtr(dst.as_mut_ptr());
    let row_kernel = |row: usize, oa: usize, ob: usize, oc: usize, c0: usize, c1: usize| {
        let len = c1 - c0;
        // SAFETY: every (row, column range) pair is written by exactly one task.
        let d = unsafe { std::slice::from_raw_parts_mut(dptr.get().add(row * inner + c0), len) };
        let (oa, ob, oc) = (oa + c0 * ia, ob + c0 * ib, oc + c0 * ic);
        match (ia, ib, ic) {
            // contiguous operands, or one of the two values a scalar per row (`where(mask, g,
            // 0)`, ReLU's backward): slices, so the loop has no index arithmetic
            (1, 1, 1) => {
                let (a, b, c) = (&a.data[oa..oa + len], &b.data[ob..ob + len], &c.data[oc..oc + len]);
                for j in 0..len {
                    d[j] = f(a[j], b[j], c[j]);
                }
            }
            (1, 1, 0) => {
                let (a, b, cv) = (&a.data[oa..oa + len], &b.data[ob..ob + len], c.data[oc]);
                for j in 0..len {
                    d[j] = f(a[j], b[j], cv);
                }
            }
            (1, 0, 1) => {
                let (a, bv, c) = (&a.data[oa..oa + len], b.data[ob], &c.data[oc..oc + len]);
                for j in 0..len {
                    d[j] = f(a[j], bv, c[j]);
                }
            }
            _ => {
                for (j, x) in d.iter_mut().enumerate() {
                    *x = f(a.data[oa + j * ia], b.data[ob + j * ib], c.data[oc + j * ic]);
                }
            }
        }
    };
    let offsets = [a.offset, b.offset, c.offset];
    let tasks = n_tasks(n);
    if rows >= tasks {
        // split by whole rows
        let rows_per = rows.div_ceil(tasks);
        (0..tasks).into_par_iter().for_each(|t| {
            let r0 = t * rows_per;
            let r1 = ((t + 1) * rows_per).min(rows);
            if r0 < r1 {
                for_each_row(outer_shape, &outer, offsets, r0, r1 - r0, |r, [oa, ob, oc]| {
                    row_kernel(r, oa, ob, oc, 0, inner)
                });
            }
        });
    } else {
        // few long rows (a contiguous `where` collapses to one): split rows into column blocks
        let cols_per = inner.div_ceil(tasks.div_ceil(rows));
        let blocks = inner.div_ceil(cols_per);
        (0..rows * blocks).into_par_iter().for_each(|t| {
            let (r, blk) = (t / blocks, t % blocks);
            let c0 = blk * cols_per;
            let c1 = (c0 + cols_per).min(inner);
            for_each_row(outer_shape, &outer, offsets, r, 1, |r, [oa, ob, oc]| row_kernel(r, oa, ob, oc, c0, c1));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_row_and_column() {
        // [3, 4] + [4]
        let a: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let b = vec![10.0f32, 20.0, 30.0, 40.0];
        let mut d = vec![0.0; 12];
        binary_map(
            &[3, 4],
            Strided { data: &a, strides: &[4, 1], offset: 0 },
            Strided { data: &b, strides: &[0, 1], offset: 0 },
            &mut d,
            |x, y| x + y,
        );
        assert_eq!(&d[4..8], &[14.0, 25.0, 36.0, 47.0]);
        // [3, 1] * [1, 4] -> [3, 4]
        let c = vec![1.0f32, 2.0, 3.0];
        binary_map(
            &[3, 4],
            Strided { data: &c, strides: &[1, 0], offset: 0 },
            Strided { data: &b, strides: &[0, 1], offset: 0 },
            &mut d,
            |x, y| x * y,
        );
        assert_eq!(&d[8..12], &[30.0, 60.0, 90.0, 120.0]);
    }

    #[test]
    fn ternary_contiguous_and_broadcast() {
        // where(mask, a, 0) over one long collapsed row (split into column blocks), and over a
        // [rows, 3] shape with a per-row `b`, against the plain definition.
        let n = (1 << 18) + 5;
        let m: Vec<u8> = (0..n).map(|i| (i % 3 != 0) as u8).collect();
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut d = vec![-1.0f32; n];
        ternary_map(
            &[n],
            Strided { data: &m, strides: &[1], offset: 0 },
            Strided { data: &a, strides: &[1], offset: 0 },
            Strided { data: &[0.0f32], strides: &[0], offset: 0 },
            &mut d,
            |m, x, y| if m != 0 { x } else { y },
        );
        assert!(d.iter().enumerate().all(|(i, &v)| v == if i % 3 != 0 { i as f32 } else { 0.0 }));
        let rows = 5;
        let col: Vec<f32> = (0..rows).map(|r| 100.0 + r as f32).collect();
        let mut d = vec![0.0f32; rows * 3];
        ternary_map(
            &[rows, 3],
            Strided { data: &m, strides: &[3, 1], offset: 1 },
            Strided { data: &col, strides: &[1, 0], offset: 0 },
            Strided { data: &a, strides: &[3, 1], offset: 0 },
            &mut d,
            |m, x, y| if m != 0 { x } else { y },
        );
        for r in 0..rows {
            for c in 0..3 {
                let want = if m[1 + 3 * r + c] != 0 { col[r] } else { a[3 * r + c] };
                assert_eq!(d[3 * r + c], want, "row {r} col {c}");
            }
        }
    }

    #[test]
    fn long_single_row_split_into_blocks() {
        let n = 1 << 18;
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut d = vec![0.0; n];
        binary_map(
            &[n],
            Strided { data: &a, strides: &[1], offset: 0 },
            Strided { data: &[2.0f32], strides: &[0], offset: 0 },
            &mut d,
            |x, y| x * y,
        );
        assert!(d.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32));
    }
}
