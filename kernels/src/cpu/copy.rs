//! Strided copies: materialising a view (any shape, strides and offset) into a contiguous
//! row-major buffer, and the row iteration shared by the strided kernels.
//!
//! Dimensions are first collapsed (adjacent dims merged when they are laid out back to back,
//! size-1 dims dropped), so a contiguous or "contiguous but offset" view becomes one `memcpy`,
//! and a broadcast view reads its one source row many times. The remaining outermost dims are
//! walked with an odometer, the innermost dim is the inner loop. Work is split over rayon in
//! chunks of whole rows; each element is read once and written once.

use super::{n_tasks, SendPtr};
use rayon::prelude::*;

/// Merges adjacent dimensions of `shape` that are contiguous with respect to every stride set in
/// `strides` (all of the same rank), and drops size-1 dims. Returns the collapsed shape and one
/// stride vector per operand. A rank-0 result is returned as shape `[1]`.
pub fn collapse_dims<const N: usize>(shape: &[usize], strides: [&[usize]; N]) -> (Vec<usize>, [Vec<usize>; N]) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && (0..N).all(|o| {
                let last = *out_strides[o].last().unwrap();
                last == strides[o][d] * shape[d]
            });
        if mergeable {
            *out_shape.last_mut().unwrap() *= shape[d];
            for o in 0..N {
                *out_strides[o].last_mut().unwrap() = strides[o][d];
            }
        } else {
            out_shape.push(shape[d]);
            for o in 0..N {
                out_strides[o].push(strides[o][d]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in out_strides.iter_mut() {
            s.push(1);
        }
    }
    (out_shape, out_strides)
}

/// Walks rows `start..start + count` of a collapsed `[outer..., inner]` iteration space,
/// calling `f(row, offsets)` with each operand's element offset of the row's first element.
#[inline]
pub fn for_each_row<const N: usize>(
    outer_shape: &[usize],
    strides: &[Vec<usize>; N],
    base: [usize; N],
    start: usize,
    count: usize,
    mut f: impl FnMut(usize, [usize; N]),
) {
    let nd = outer_shape.len();
    let mut idx = vec![0usize; nd];
    let mut rem = start;
    for d in (0..nd).rev() {
        idx[d] = rem % outer_shape[d];
        rem /= outer_shape[d];
    }
    let mut offs = base;
    for o in 0..N {
        for d in 0..nd {
            offs[o] += idx[d] * strides[o][d];
        }
    }
    for r in 0..count {
        f(start + r, offs);
        // odometer increment
        let mut d = nd;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            for o in 0..N {
                offs[o] += strides[o][d];
            }
            if idx[d] < outer_shape[d] {
                break;
            }
            for o in 0..N {
                offs[o] -= strides[o][d] * outer_shape[d];
            }
            idx[d] = 0;
        }
    }
}

/// Copies the view `(shape, strides, offset)` of `src` into the contiguous `dst`
/// (`dst.len()` must equal the product of `shape`).
pub fn copy_strided<T: Copy + Send + Sync>(
    src: &[T],
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    dst: &mut [T],
) {
    let n: usize = shape.iter().product();
    assert_eq!(dst.len(), n, "copy_strided: dst has the wrong length");
    if n == 0 {
        return;
    }
    let (cshape, [cstr]) = collapse_dims(shape, [strides]);
    let inner = *cshape.last().unwrap();
    let inner_stride = *cstr.last().unwrap();
    if cshape.len() == 1 && inner_stride == 1 {
        dst.copy_from_slice(&src[offset..offset + n]);
        return;
    }
    let outer_shape = &cshape[..cshape.len() - 1];
    let outer_strides = [cstr[..cstr.len() - 1].to_vec()];
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
        for_each_row(outer_shape, &outer_strides, [offset], r0, r1 - r0, |row, [o]| {
            // SAFETY: each task writes rows r0..r1 only; rows are disjoint between tasks.
            let d = unsafe { std::slice::from_raw_parts_mut(dptr.get().add(row * inner), inner) };
            if inner_stride == 1 {
                d.copy_from_slice(&src[o..o + inner]);
            } else if inner_stride == 0 {
                d.fill(src[o]);
            } else {
                for (j, x) in d.iter_mut().enumerate() {
                    *x = src[o + j * inner_stride];
                }
            }
        });
    });
}

/// Contiguous row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_copy() {
        let src: Vec<i32> = (0..12).collect();
        // [3, 4] viewed as its transpose [4, 3]
        let mut dst = vec![0; 12];
        copy_strided(&src, &[4, 3], &[1, 4], 0, &mut dst);
        assert_eq!(dst, vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
    }

    #[test]
    fn broadcast_and_offset_copy() {
        let src: Vec<i32> = (0..6).collect();
        let mut dst = vec![0; 6];
        copy_strided(&src, &[2, 3], &[0, 1], 3, &mut dst);
        assert_eq!(dst, vec![3, 4, 5, 3, 4, 5]);
    }

    #[test]
    fn large_permute_matches_naive() {
        let (a, b, c) = (37, 41, 29);
        let src: Vec<u32> = (0..(a * b * c) as u32).collect();
        // view [c, a, b] of a contiguous [a, b, c]
        let mut dst = vec![0; a * b * c];
        copy_strided(&src, &[c, a, b], &[1, b * c, c], 0, &mut dst);
        let mut k = 0;
        for z in 0..c {
            for x in 0..a {
                for y in 0..b {
                    assert_eq!(dst[k], src[x * b * c + y * c + z]);
                    k += 1;
                }
            }
        }
    }
}
