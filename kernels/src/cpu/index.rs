//! Indexing kernels: index_select / embedding, index_add (their backward), gather and
//! scatter_add. Indices are `i64` and must already be validated by the caller (in range,
//! non-negative); the kernels only `debug_assert` them.
//!
//! `index_select` views its operands as `[outer, n, inner]` and copies whole `inner`-long rows
//! (one read and one write per element). `gather`/`scatter_add` walk the (contiguous) index
//! tensor and address the source with its strides.

use super::copy::contiguous_strides;
use super::{Float, SendPtr};
use rayon::prelude::*;

/// `dst[o, i, :] = src[o, idx[i], :]` with `src` `[outer, n_src, inner]` and `dst`
/// `[outer, idx.len(), inner]`, all contiguous.
pub fn index_select<T: Copy + Send + Sync>(
    src: &[T],
    outer: usize,
    n_src: usize,
    inner: usize,
    idx: &[i64],
    dst: &mut [T],
) {
    let n_idx = idx.len();
    assert_eq!(src.len(), outer * n_src * inner);
    assert_eq!(dst.len(), outer * n_idx * inner);
    if inner == 0 {
        return;
    }
    dst.par_chunks_mut(inner).enumerate().for_each(|(row, d)| {
        let (o, i) = (row / n_idx.max(1), row % n_idx.max(1));
        let s = idx[i] as usize;
        debug_assert!(s < n_src);
        let base = (o * n_src + s) * inner;
        d.copy_from_slice(&src[base..base + inner]);
    });
}

/// `dst[o, idx[i], :] += src[o, i, :]` (the backward of [`index_select`]); `dst` is
/// `[outer, n_dst, inner]`. Duplicate indices accumulate. Parallel over `outer`, sequential
/// over the indices (so duplicates never race).
pub fn index_add<T: Float>(dst: &mut [T], outer: usize, n_dst: usize, inner: usize, idx: &[i64], src: &[T]) {
    let n_idx = idx.len();
    assert_eq!(dst.len(), outer * n_dst * inner);
    assert_eq!(src.len(), outer * n_idx * inner);
    if outer == 0 || inner == 0 {
        return;
    }
    let work = |o: usize, d: &mut [T]| {
        for (i, &k) in idx.iter().enumerate() {
            let k = k as usize;
            let s = &src[(o * n_idx + i) * inner..(o * n_idx + i + 1) * inner];
            let t = &mut d[k * inner..(k + 1) * inner];
            for j in 0..inner {
                t[j] += s[j];
            }
        }
    };
    if outer > 1 {
        dst.par_chunks_mut(n_dst * inner).enumerate().for_each(|(o, d)| work(o, d));
    } else {
        // one slab: parallelise over column blocks of `inner` instead
        let cols = 256.max(inner.div_ceil(rayon::current_num_threads() * 4));
        let ptr = SendPtr(dst.as_mut_ptr());
        (0..inner.div_ceil(cols)).into_par_iter().for_each(|b| {
            let (c0, c1) = (b * cols, ((b + 1) * cols).min(inner));
            for (i, &k) in idx.iter().enumerate() {
                let k = k as usize;
                for j in c0..c1 {
                    // SAFETY: column block [c0, c1) is owned by this task.
                    unsafe { *ptr.get().add(k * inner + j) += src[i * inner + j] };
                }
            }
        });
    }
}

/// Iterates the multi-indices of a contiguous tensor of `shape`, calling `f(flat, multi)`.
fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..n {
        f(flat, &idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `dst[p] = src[p with p[dim] replaced by index[p]]` for every position `p` of the contiguous
/// `index` tensor (shape `idx_shape`); `src` is contiguous with shape `src_shape` (same rank).
pub fn gather<T: Copy + Send + Sync>(
    src: &[T],
    src_shape: &[usize],
    dim: usize,
    index: &[i64],
    idx_shape: &[usize],
    dst: &mut [T],
) {
    assert_eq!(dst.len(), index.len());
    let ss = contiguous_strides(src_shape);
    for_each_index(idx_shape, |flat, p| {
        let mut off = 0;
        for d in 0..p.len() {
            let i = if d == dim { index[flat] as usize } else { p[d] };
            off += i * ss[d];
        }
        dst[flat] = src[off];
    });
}

/// `dst[p with p[dim] replaced by index[p]] += src[p]` for every position `p` of the contiguous
/// `index` tensor; `src` is contiguous with shape `src_shape` (at least `idx_shape` in every
/// dim), `dst` contiguous with shape `dst_shape`.
pub fn scatter_add<T: Float>(
    dst: &mut [T],
    dst_shape: &[usize],
    dim: usize,
    index: &[i64],
    idx_shape: &[usize],
    src: &[T],
    src_shape: &[usize],
) {
    let ds = contiguous_strides(dst_shape);
    let ss = contiguous_strides(src_shape);
    for_each_index(idx_shape, |flat, p| {
        let mut doff = 0;
        let mut soff = 0;
        for d in 0..p.len() {
            let i = if d == dim { index[flat] as usize } else { p[d] };
            doff += i * ds[d];
            soff += p[d] * ss[d];
        }
        dst[doff] += src[soff];
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_and_add_roundtrip() {
        let src: Vec<f32> = (0..12).map(|i| i as f32).collect(); // [1, 4, 3]
        let idx = [2i64, 0, 2];
        let mut dst = vec![0.0; 9];
        index_select(&src, 1, 4, 3, &idx, &mut dst);
        assert_eq!(dst, vec![6., 7., 8., 0., 1., 2., 6., 7., 8.]);
        let mut acc = vec![0.0f32; 12];
        index_add(&mut acc, 1, 4, 3, &idx, &dst);
        assert_eq!(&acc[6..9], &[12., 14., 16.]);
        assert_eq!(&acc[0..3], &[0., 1., 2.]);
    }

    #[test]
    fn gather_scatter_dim1() {
        let src: Vec<f64> = (0..6).map(|i| i as f64).collect(); // [2, 3]
        let idx = [2i64, 0, 1, 1]; // [2, 2]
        let mut g = vec![0.0; 4];
        gather(&src, &[2, 3], 1, &idx, &[2, 2], &mut g);
        assert_eq!(g, vec![2., 0., 4., 4.]);
        let mut d = vec![0.0; 6];
        scatter_add(&mut d, &[2, 3], 1, &idx, &[2, 2], &g, &[2, 2]);
        assert_eq!(d, vec![0., 0., 2., 0., 8., 0.]);
    }
}
