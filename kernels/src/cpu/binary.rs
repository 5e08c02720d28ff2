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
    pub data: &'a [T],
    pub strides: &'a [usize],
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

/// `dst[i] = f(a[i], b[i], c[i])` over the broadcast output `shape` (used by `where`).
/// General strided loop without inner specialisation.
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
    let tasks = n_tasks(n).min(rows);
    let rows_per = rows.div_ceil(tasks);
    let dptr = SendPtr(dst.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        let r0 = t * rows_per;
        let r1 = ((t + 1) * rows_per).min(rows);
        if r0 >= r1 {
            return;
        }
        for_each_row(outer_shape, &outer, [a.offset, b.offset, c.offset], r0, r1 - r0, |r, [oa, ob, oc]| {
            // SAFETY: rows are disjoint between tasks.
            let d = unsafe { std::slice::from_raw_parts_mut(dptr.get().add(r * inner), inner) };
            for (j, x) in d.iter_mut().enumerate() {
                *x = f(a.data[oa + j * ia], b.data[ob + j * ib], c.data[oc + j * ic]);
            }
        });
    });
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
