//! 2-D convolution (and 1-D as `h = 1`) on NCHW slices: forward, input, weight and bias grads.
//!
//! Algorithm: im2col + GEMM, blocked over output columns so the column matrix stays in cache.
//! For one image and one group, the column matrix `col` is `[K, oh*ow]` with
//! `K = c_in/groups * kh * kw`; row `(ci, ky, kx)` holds the input pixels that kernel tap
//! multiplies for every output position (zero where the tap falls into the padding). We never
//! build the whole matrix: a task owns one image and a block of `nb` output columns (about
//! `COL_BLOCK_BYTES` of `col`, so it lives in L2 between its write and gemm's packing read).
//!
//! * forward: `out[g] (cog x nb) = W[g] (cog x K) · col (K x nb)` (+ bias, written first and
//!   accumulated into). Tasks = images x column blocks, all independent, run on rayon with a
//!   single-threaded gemm each.
//! * backward input: `gcol (K x nb) = W[g]ᵀ · grad_out[g] (cog x nb)`, then col2im scatters
//!   (adds) `gcol` back into `grad_in`. Column blocks of one image overlap in `grad_in`, so an
//!   image is cut into bands of output rows that are at least the kernel's reach tall: bands
//!   two apart never touch the same input row, and even bands then odd bands run in parallel.
//! * backward weight: `dW[g] (cog x K) += grad_out[g] (cog x nb) · colᵀ (nb x K)` summed over
//!   all images and blocks; each rayon fold keeps its own `dW` accumulator, summed at the end.
//! * backward bias: per output channel, the sum of its `n` planes of `grad_out`.
//!
//! Transposed operands are passed to `gemm` as strides (no copies). A pointwise convolution
//! (1x1, stride 1, no padding) skips im2col: the input itself is the column matrix.
//!
//! Memory traffic per pass: the input/grad_out/output once from DRAM, the column matrix
//! (K·oh·ow elements per image) written and read once in L2, the weights re-read per block
//! (from cache). im2col/col2im inner loops are contiguous copies/adds over a precomputed valid
//! range of output columns per kernel column (no per-element bounds tests or div/mod).

use super::{Float, SendPtr, PAR_CHUNK};
use gemm::Parallelism;
use rayon::prelude::*;

/// Geometry of a 2-D convolution. conv1d is called with `h = 1`, `kh = 1`, `stride.0 = 1`,
/// `padding.0 = 0`, `dilation.0 = 1`.
///
/// Tuples are `(height, width)`. `c_in` and `c_out` must be multiples of `groups`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    /// Batch size (images).
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride, `(height, width)`.
    pub stride: (usize, usize),
    /// Zero padding added to both sides, `(height, width)`.
    pub padding: (usize, usize),
    /// Spacing between kernel taps, `(height, width)`; 1 is a dense kernel.
    pub dilation: (usize, usize),
    /// Channel groups: each maps `c_in / groups` input channels to `c_out / groups` outputs.
    pub groups: usize,
}

/// PyTorch's output length `(i + 2p - d(k-1) - 1) / s + 1`, or 0 when the dilated kernel does
/// not fit in the padded input (the caller rejects that case).
fn conv_out_len(i: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
    let reach = d * (k.max(1) - 1) + 1;
    if i + 2 * p < reach || s == 0 {
        0
    } else {
        (i + 2 * p - reach) / s + 1
    }
}

impl Conv2dGeom {
    /// Output height (PyTorch's formula).
    pub fn out_h(&self) -> usize {
        conv_out_len(self.h, self.kh, self.stride.0, self.padding.0, self.dilation.0)
    }
    /// Output width (PyTorch's formula).
    pub fn out_w(&self) -> usize {
        conv_out_len(self.w, self.kw, self.stride.1, self.padding.1, self.dilation.1)
    }
    fn cig(&self) -> usize {
        self.c_in / self.groups
    }
    fn cog(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of one group's column matrix.
    fn kg(&self) -> usize {
        self.cig() * self.kh * self.kw
    }
    /// 1x1, stride 1, no padding: the input plane is already the column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.padding == (0, 0)
    }
    fn check(&self) {
        assert!(self.groups > 0, "conv2d: groups must be positive");
        assert!(
            self.cig() * self.groups == self.c_in && self.cog() * self.groups == self.c_out,
            "conv2d: channels must be divisible by groups"
        );
        assert!(self.stride.0 > 0 && self.stride.1 > 0, "conv2d: stride must be positive");
        assert!(self.dilation.0 > 0 && self.dilation.1 > 0, "conv2d: dilation must be positive");
        assert!(self.kh > 0 && self.kw > 0, "conv2d: kernel must be non-empty");
    }
    fn input_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    fn output_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
    fn weight_len(&self) -> usize {
        self.c_out * self.kg()
    }
}

/// Target size in bytes of one task's column-matrix block (fits in L2 with gemm's packing).
const COL_BLOCK_BYTES: usize = 384 * 1024;

/// Output columns per task: about `COL_BLOCK_BYTES` of column matrix, at least 64 columns.
fn col_block<T>(g: &Conv2dGeom) -> usize {
    let ohw = g.out_h() * g.out_w();
    let nb = COL_BLOCK_BYTES / std::mem::size_of::<T>() / g.kg().max(1);
    (nb.max(64) / 16 * 16).min(ohw).max(1)
}

/// gemm's own threading only when there are fewer tasks than threads.
fn inner_parallelism(tasks: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if tasks < threads && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`, every operand given by row and column
/// strides. Calls `gemm` directly (rather than `matmul::gemm_batched`) to choose its threading:
/// most calls run inside an already parallel task and must stay single-threaded.
///
/// # Safety
/// Every addressed element must be in bounds of its allocation; `dst` must not alias the
/// operands nor be written concurrently by another task.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: *const T,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const T,
    (rhs_rs, rhs_cs): (usize, usize),
    par: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        T::one(),
        T::one(),
        false,
        false,
        false,
        par,
    )
}

/// For each kernel column `kx`, the range `[lo, hi)` of output columns whose input column
/// `ox*sw + kx*dw - pw` lies inside `[0, w)`.
fn valid_cols(g: &Conv2dGeom) -> Vec<(usize, usize)> {
    let (ow, sw, pw, dw) = (g.out_w(), g.stride.1, g.padding.1, g.dilation.1);
    (0..g.kw)
        .map(|kx| {
            let off = kx * dw;
            let lo = if off >= pw { 0 } else { (pw - off).div_ceil(sw) };
            let hi = if g.w + pw < off + 1 { 0 } else { ((g.w - 1 + pw - off) / sw + 1).min(ow) };
            (lo.min(hi), hi)
        })
        .collect()
}

/// Walks the output positions `q0..q1` of one output plane row segment by row segment:
/// calls `f(j, oy, xs, xe)` where `j` is the column offset inside the block and `[xs, xe)` the
/// output columns of row `oy` that belong to the block.
#[inline]
fn for_row_segments(ow: usize, q0: usize, q1: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut q = q0;
    while q < q1 {
        let oy = q / ow;
        let xs = q - oy * ow;
        let xe = ow.min(xs + (q1 - q));
        f(q - q0, oy, xs, xe);
        q += xe - xs;
    }
}

/// Input row hit by kernel row `ky` at output row `oy`, if inside the image.
#[inline]
fn input_row(g: &Conv2dGeom, oy: usize, ky: usize) -> Option<usize> {
    let iy = (oy * g.stride.0 + ky * g.dilation.0).wrapping_sub(g.padding.0);
    (iy < g.h).then_some(iy)
}

/// Fills `col` (`[kg, q1 - q0]`, row-major) with the im2col block for output positions
/// `q0..q1` of one image's channel group `x` (`[cig, h, w]`).
fn im2col<T: Float>(g: &Conv2dGeom, vc: &[(usize, usize)], x: &[T], q0: usize, q1: usize, col: &mut [T]) {
    let (h, w, ow) = (g.h, g.w, g.out_w());
    let (sw, pw, dw) = (g.stride.1, g.padding.1, g.dilation.1);
    let nbk = q1 - q0;
    let mut rows = col.chunks_exact_mut(nbk);
    for plane in x.chunks_exact(h * w).take(g.cig()) {
        for ky in 0..g.kh {
            for (kx, &(lo, hi)) in vc.iter().enumerate() {
                let row = rows.next().expect("im2col: column buffer too small");
                for_row_segments(ow, q0, q1, |j, oy, xs, xe| {
                    let seg = &mut row[j..j + (xe - xs)];
                    let Some(iy) = input_row(g, oy, ky) else {
                        seg.fill(T::zero());
                        return;
                    };
                    let src = &plane[iy * w..(iy + 1) * w];
                    let a = lo.clamp(xs, xe);
                    let b = hi.clamp(a, xe);
                    seg[..a - xs].fill(T::zero());
                    seg[b - xs..].fill(T::zero());
                    if a < b {
                        let ix0 = a * sw + kx * dw - pw;
                        let dst = &mut seg[a - xs..b - xs];
                        if sw == 1 {
                            dst.copy_from_slice(&src[ix0..ix0 + (b - a)]);
                        } else {
                            for (d, s) in dst.iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                                *d = *s;
                            }
                        }
                    }
                });
            }
        }
    }
}

/// Adds the column block `col` (`[kg, q1 - q0]`) back into one image's channel group of
/// `grad_in` (`[cig, h, w]` starting at `gi`).
///
/// # Safety
/// `gi` must address `cig * h * w` elements, and no other task may write the input rows this
/// block touches while it runs.
unsafe fn col2im_add<T: Float>(g: &Conv2dGeom, vc: &[(usize, usize)], col: &[T], q0: usize, q1: usize, gi: *mut T) {
    let (h, w, ow) = (g.h, g.w, g.out_w());
    let (sw, pw, dw) = (g.stride.1, g.padding.1, g.dilation.1);
    let nbk = q1 - q0;
    let mut rows = col.chunks_exact(nbk);
    for ci in 0..g.cig() {
        for ky in 0..g.kh {
            for (kx, &(lo, hi)) in vc.iter().enumerate() {
                let row = rows.next().expect("col2im: column buffer too small");
                for_row_segments(ow, q0, q1, |j, oy, xs, xe| {
                    let Some(iy) = input_row(g, oy, ky) else { return };
                    let a = lo.clamp(xs, xe);
                    let b = hi.clamp(a, xe);
                    if a >= b {
                        return;
                    }
                    // SAFETY: row `iy` of channel `ci` is in bounds and owned by this task.
                    let dst_row = std::slice::from_raw_parts_mut(gi.add((ci * h + iy) * w), w);
                    let ix0 = a * sw + kx * dw - pw;
                    let src = &row[j + (a - xs)..j + (b - xs)];
                    if sw == 1 {
                        for (d, s) in dst_row[ix0..ix0 + (b - a)].iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst_row[ix0..].iter_mut().step_by(sw).zip(src) {
                            *d += *s;
                        }
                    }
                });
            }
        }
    }
}

/// Convolution forward: `input [n, c_in, h, w]`, `weight [c_out, c_in/groups, kh, kw]`,
/// `bias [c_out]` -> `out [n, c_out, oh, ow]` (overwritten).
pub fn conv2d_forward<T: Float>(g: &Conv2dGeom, input: &[T], weight: &[T], bias: Option<&[T]>, out: &mut [T]) {
    conv2d_forward_blocked(g, input, weight, bias, out, col_block::<T>(g));
}

fn conv2d_forward_blocked<T: Float>(
    g: &Conv2dGeom,
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    nb: usize,
) {
    g.check();
    assert_eq!(input.len(), g.input_len(), "conv2d_forward: input length");
    assert_eq!(weight.len(), g.weight_len(), "conv2d_forward: weight length");
    assert_eq!(out.len(), g.output_len(), "conv2d_forward: out length");
    if let Some(b) = bias {
        assert_eq!(b.len(), g.c_out, "conv2d_forward: bias length");
    }
    let ohw = g.out_h() * g.out_w();
    if out.is_empty() {
        return;
    }
    if input.is_empty() {
        // no input channels or an empty image: every output is its bias
        for (i, o) in out.iter_mut().enumerate() {
            *o = bias.map_or(T::zero(), |b| b[i / ohw % g.c_out]);
        }
        return;
    }
    let (hw, cig, cog, kg) = (g.h * g.w, g.cig(), g.cog(), g.kg());
    let vc = valid_cols(g);
    let blocks = ohw.div_ceil(nb);
    let tasks = g.n * blocks;
    let par = inner_parallelism(tasks);
    let pointwise = g.is_pointwise();
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..tasks).into_par_iter().for_each_init(Vec::new, |col: &mut Vec<T>, t| {
        let out_ptr = &out_ptr;
        let (b, q0) = (t / blocks, (t % blocks) * nb);
        let q1 = (q0 + nb).min(ohw);
        let nbk = q1 - q0;
        for grp in 0..g.groups {
            let x = &input[(b * g.c_in + grp * cig) * hw..][..cig * hw];
            let (rhs, rhs_rs) = if pointwise {
                (&x[q0..], hw)
            } else {
                col.resize(kg * nbk, T::zero());
                im2col(g, &vc, x, q0, q1, col);
                (&col[..], nbk)
            };
            // SAFETY: this task alone writes columns q0..q1 of these output planes.
            unsafe {
                let dst = out_ptr.0.add((b * g.c_out + grp * cog) * ohw + q0);
                if let Some(bias) = bias {
                    for co in 0..cog {
                        std::slice::from_raw_parts_mut(dst.add(co * ohw), nbk).fill(bias[grp * cog + co]);
                    }
                }
                gemm_strided(
                    (cog, nbk, kg),
                    dst,
                    (ohw, 1),
                    bias.is_some(),
                    weight.as_ptr().add(grp * cog * kg),
                    (kg, 1),
                    rhs.as_ptr(),
                    (rhs_rs, 1),
                    par,
                );
            }
        }
    });
}

/// Gradient w.r.t. the input: `grad_out [n, c_out, oh, ow]` -> `grad_in [n, c_in, h, w]`
/// (overwritten).
pub fn conv2d_backward_input<T: Float>(g: &Conv2dGeom, grad_out: &[T], weight: &[T], grad_in: &mut [T]) {
    conv2d_backward_input_blocked(g, grad_out, weight, grad_in, col_block::<T>(g), None);
}

fn conv2d_backward_input_blocked<T: Float>(
    g: &Conv2dGeom,
    grad_out: &[T],
    weight: &[T],
    grad_in: &mut [T],
    nb: usize,
    bands_hint: Option<usize>,
) {
    g.check();
    assert_eq!(grad_out.len(), g.output_len(), "conv2d_backward_input: grad_out length");
    assert_eq!(weight.len(), g.weight_len(), "conv2d_backward_input: weight length");
    assert_eq!(grad_in.len(), g.input_len(), "conv2d_backward_input: grad_in length");
    let (oh, ow) = (g.out_h(), g.out_w());
    let ohw = oh * ow;
    let (hw, cig, cog, kg) = (g.h * g.w, g.cig(), g.cog(), g.kg());
    let threads = rayon::current_num_threads();
    let gi_ptr = SendPtr(grad_in.as_mut_ptr());
    if g.is_pointwise() && ohw > 0 {
        // Every input pixel gets exactly one contribution: gemm straight into grad_in.
        let blocks = ohw.div_ceil(nb);
        let tasks = g.n * blocks;
        let par = inner_parallelism(tasks);
        (0..tasks).into_par_iter().for_each(|t| {
            let gi_ptr = &gi_ptr;
            let (b, q0) = (t / blocks, (t % blocks) * nb);
            let nbk = (q0 + nb).min(ohw) - q0;
            for grp in 0..g.groups {
                // SAFETY: this task alone writes columns q0..q1 of these grad_in planes.
                unsafe {
                    gemm_strided(
                        (cig, nbk, cog),
                        gi_ptr.0.add((b * g.c_in + grp * cig) * hw + q0),
                        (hw, 1),
                        false,
                        weight.as_ptr().add(grp * cog * kg),
                        (1, kg),
                        grad_out.as_ptr().add((b * g.c_out + grp * cog) * ohw + q0),
                        (ohw, 1),
                        par,
                    );
                }
            }
        });
        return;
    }
    grad_in.par_chunks_mut(PAR_CHUNK).for_each(|c| c.fill(T::zero()));
    if ohw == 0 || grad_in.is_empty() {
        return;
    }
    // Bands of output rows at least the kernel's vertical reach tall: bands two apart touch
    // disjoint input rows.
    let min_rows = g.dilation.0 * (g.kh - 1) + 1;
    let max_bands = (oh / min_rows).max(1);
    let want = bands_hint.unwrap_or_else(|| 2 * (4 * threads).div_ceil(g.n));
    let bands = want.clamp(1, max_bands);
    let band_rows = |i: usize| (oh * i / bands, oh * (i + 1) / bands);
    let vc = valid_cols(g);
    for phase in 0..2 {
        let per_image = (bands + 1 - phase) / 2;
        let tasks = g.n * per_image;
        if tasks == 0 {
            continue;
        }
        let par = inner_parallelism(tasks);
        (0..tasks).into_par_iter().for_each_init(Vec::new, |col: &mut Vec<T>, t| {
            let gi_ptr = &gi_ptr;
            let (b, band) = (t / per_image, 2 * (t % per_image) + phase);
            let (r0, r1) = band_rows(band);
            let (qa, qb) = (r0 * ow, r1 * ow);
            let mut q0 = qa;
            while q0 < qb {
                let q1 = (q0 + nb).min(qb);
                let nbk = q1 - q0;
                col.resize(kg * nbk, T::zero());
                for grp in 0..g.groups {
                    // SAFETY: col is this task's buffer; the grad_in rows this band touches are
                    // touched by no other band of this phase.
                    unsafe {
                        gemm_strided(
                            (kg, nbk, cog),
                            col.as_mut_ptr(),
                            (nbk, 1),
                            false,
                            weight.as_ptr().add(grp * cog * kg),
                            (1, kg),
                            grad_out.as_ptr().add((b * g.c_out + grp * cog) * ohw + q0),
                            (ohw, 1),
                            par,
                        );
                        col2im_add(g, &vc, col, q0, q1, gi_ptr.0.add((b * g.c_in + grp * cig) * hw));
                    }
                }
                q0 = q1;
            }
        });
    }
}

/// Gradient w.r.t. the weight: `input [n, c_in, h, w]`, `grad_out [n, c_out, oh, ow]` ->
/// `grad_weight [c_out, c_in/groups, kh, kw]` (overwritten).
pub fn conv2d_backward_weight<T: Float>(g: &Conv2dGeom, input: &[T], grad_out: &[T], grad_weight: &mut [T]) {
    conv2d_backward_weight_blocked(g, input, grad_out, grad_weight, col_block::<T>(g));
}

fn conv2d_backward_weight_blocked<T: Float>(
    g: &Conv2dGeom,
    input: &[T],
    grad_out: &[T],
    grad_weight: &mut [T],
    nb: usize,
) {
    g.check();
    assert_eq!(input.len(), g.input_len(), "conv2d_backward_weight: input length");
    assert_eq!(grad_out.len(), g.output_len(), "conv2d_backward_weight: grad_out length");
    assert_eq!(grad_weight.len(), g.weight_len(), "conv2d_backward_weight: grad_weight length");
    let ohw = g.out_h() * g.out_w();
    let (hw, cig, cog, kg) = (g.h * g.w, g.cig(), g.cog(), g.kg());
    let wlen = grad_weight.len();
    if ohw == 0 || input.is_empty() || wlen == 0 {
        grad_weight.fill(T::zero());
        return;
    }
    let vc = valid_cols(g);
    let blocks = ohw.div_ceil(nb);
    let tasks = g.n * blocks;
    let par = inner_parallelism(tasks);
    let pointwise = g.is_pointwise();
    let total = (0..tasks)
        .into_par_iter()
        .fold(
            || (vec![T::zero(); wlen], Vec::new()),
            |(mut acc, mut col): (Vec<T>, Vec<T>), t| {
                let (b, q0) = (t / blocks, (t % blocks) * nb);
                let q1 = (q0 + nb).min(ohw);
                let nbk = q1 - q0;
                for grp in 0..g.groups {
                    let x = &input[(b * g.c_in + grp * cig) * hw..][..cig * hw];
                    // colᵀ as a [nbk, kg] operand: (q, kk) at kk * row_stride + q.
                    let (rhs, rhs_cs) = if pointwise {
                        (&x[q0..], hw)
                    } else {
                        col.resize(kg * nbk, T::zero());
                        im2col(g, &vc, x, q0, q1, &mut col);
                        (&col[..], nbk)
                    };
                    // SAFETY: acc is this fold's own buffer; operands are in bounds.
                    unsafe {
                        gemm_strided(
                            (cog, kg, nbk),
                            acc.as_mut_ptr().add(grp * cog * kg),
                            (kg, 1),
                            true,
                            grad_out.as_ptr().add((b * g.c_out + grp * cog) * ohw + q0),
                            (ohw, 1),
                            rhs.as_ptr(),
                            (1, rhs_cs),
                            par,
                        );
                    }
                }
                (acc, col)
            },
        )
        .map(|(acc, _)| acc)
        .reduce_with(|mut a, b| {
            for (x, y) in a.iter_mut().zip(&b) {
                *x += *y;
            }
            a
        });
    match total {
        Some(t) => grad_weight.copy_from_slice(&t),
        None => grad_weight.fill(T::zero()),
    }
}

/// Gradient w.r.t. the bias: `grad_bias[co]` (overwritten) is the sum of `grad_out[:, co]`
/// over the batch and the output plane, accumulated in `f64`.
pub fn conv2d_backward_bias<T: Float>(g: &Conv2dGeom, grad_out: &[T], grad_bias: &mut [T]) {
    assert_eq!(grad_out.len(), g.output_len(), "conv2d_backward_bias: grad_out length");
    assert_eq!(grad_bias.len(), g.c_out, "conv2d_backward_bias: grad_bias length");
    let ohw = g.out_h() * g.out_w();
    let c_out = g.c_out;
    let min_len = (PAR_CHUNK / (g.n * ohw).max(1)).max(1);
    grad_bias.par_iter_mut().with_min_len(min_len).enumerate().for_each(|(co, gb)| {
        let mut s = 0.0f64;
        for b in 0..g.n {
            s += sum_f64(&grad_out[(b * c_out + co) * ohw..][..ohw]);
        }
        *gb = T::from_f64_lossy(s);
    });
}

/// Sum of a slice in `f64`, with 8 independent accumulators so it vectorises.
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cpu::test_rng::Rng;

    #[allow(clippy::too_many_arguments)]
    fn geom(
        n: usize,
        c_in: usize,
        (h, w): (usize, usize),
        c_out: usize,
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    ) -> Conv2dGeom {
        Conv2dGeom { n, c_in, h, w, c_out, kh, kw, stride, padding, dilation, groups }
    }

    fn geoms() -> Vec<Conv2dGeom> {
        vec![
            geom(2, 3, (7, 9), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            geom(2, 4, (8, 7), 6, (3, 2), (2, 1), (1, 0), (1, 1), 2),
            geom(1, 2, (9, 10), 3, (3, 3), (1, 2), (2, 1), (2, 2), 1),
            geom(3, 4, (6, 11), 4, (2, 3), (2, 2), (1, 2), (2, 1), 2),
            geom(2, 4, (5, 6), 6, (1, 1), (1, 1), (0, 0), (1, 1), 2),
            geom(2, 3, (6, 7), 2, (1, 1), (2, 2), (0, 0), (1, 1), 1),
            geom(2, 3, (1, 20), 4, (1, 5), (1, 2), (0, 2), (1, 1), 1),
            geom(1, 2, (5, 5), 2, (2, 2), (3, 3), (1, 1), (1, 1), 1),
            geom(2, 1, (12, 13), 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        ]
    }

    /// Element (b, c, y, x) of an NCHW tensor, or None outside the image.
    fn at(c: usize, h: usize, w: usize, b: usize, ch: usize, y: isize, x: isize) -> Option<usize> {
        (y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w)
            .then(|| ((b * c + ch) * h + y as usize) * w + x as usize)
    }

    /// Calls `f(out_index, in_index, weight_index)` for every multiply of the convolution.
    fn each_tap(g: &Conv2dGeom, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow, cig, cog) = (g.out_h(), g.out_w(), g.c_in / g.groups, g.c_out / g.groups);
        for b in 0..g.n {
            for co in 0..g.c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let o = ((b * g.c_out + co) * oh + oy) * ow + ox;
                        for ci in 0..cig {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride.0 + ky * g.dilation.0) as isize - g.padding.0 as isize;
                                    let ix = (ox * g.stride.1 + kx * g.dilation.1) as isize - g.padding.1 as isize;
                                    let ch = co / cog * cig + ci;
                                    if let Some(i) = at(g.c_in, g.h, g.w, b, ch, iy, ix) {
                                        f(o, i, ((co * cig + ci) * g.kh + ky) * g.kw + kx);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn naive_forward(g: &Conv2dGeom, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
        let ohw = g.out_h() * g.out_w();
        let mut out: Vec<f64> = (0..g.n * g.c_out * ohw).map(|o| bias.map_or(0.0, |b| b[o / ohw % g.c_out])).collect();
        each_tap(g, |o, i, k| out[o] += x[i] * w[k]);
        out
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: element {i}: got {a}, want {b}");
        }
    }

    #[test]
    fn conv_out_size_matches_pytorch() {
        let g = geom(1, 1, (80, 400), 1, (3, 3), (1, 1), (1, 1), (1, 1), 1);
        assert_eq!((g.out_h(), g.out_w()), (80, 400));
        let g = geom(1, 1, (7, 10), 1, (3, 2), (2, 3), (1, 0), (2, 1), 1);
        assert_eq!((g.out_h(), g.out_w()), (3, 3));
    }

    #[test]
    fn conv_forward_matches_naive() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for g in geoms() {
            let x = rng.vec(g.input_len());
            let w = rng.vec(g.weight_len());
            let b = rng.vec(g.c_out);
            for bias in [None, Some(&b[..])] {
                let want = naive_forward(&g, &x, &w, bias);
                for nb in [col_block::<f64>(&g), 1, 5, 13] {
                    let mut out = vec![f64::NAN; g.output_len()];
                    conv2d_forward_blocked(&g, &x, &w, bias, &mut out, nb);
                    assert_close(&out, &want, 1e-12, &format!("forward {g:?} nb {nb}"));
                }
                // f32 against the f64 reference
                let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
                let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
                let mut out = vec![f32::NAN; g.output_len()];
                conv2d_forward(&g, &x32, &w32, bias.map(|_| &b32[..]), &mut out);
                let out: Vec<f64> = out.iter().map(|&v| v as f64).collect();
                assert_close(&out, &want, 1e-5, &format!("forward f32 {g:?}"));
            }
        }
    }

    #[test]
    fn conv_backward_matches_naive() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for g in geoms() {
            let x = rng.vec(g.input_len());
            let w = rng.vec(g.weight_len());
            let go = rng.vec(g.output_len());
            let mut want_gi = vec![0.0; g.input_len()];
            let mut want_gw = vec![0.0; g.weight_len()];
            each_tap(&g, |o, i, k| {
                want_gi[i] += go[o] * w[k];
                want_gw[k] += go[o] * x[i];
            });
            for nb in [col_block::<f64>(&g), 1, 5, 13] {
                for bands in [None, Some(1), Some(2), Some(3), Some(100)] {
                    let mut gi = vec![f64::NAN; g.input_len()];
                    conv2d_backward_input_blocked(&g, &go, &w, &mut gi, nb, bands);
                    assert_close(&gi, &want_gi, 1e-12, &format!("grad_in {g:?} nb {nb} bands {bands:?}"));
                }
                let mut gw = vec![f64::NAN; g.weight_len()];
                conv2d_backward_weight_blocked(&g, &x, &go, &mut gw, nb);
                assert_close(&gw, &want_gw, 1e-12, &format!("grad_weight {g:?} nb {nb}"));
            }
            let ohw = g.out_h() * g.out_w();
            let mut want_gb = vec![0.0; g.c_out];
            for (o, v) in go.iter().enumerate() {
                want_gb[o / ohw % g.c_out] += v;
            }
            let mut gb = vec![f64::NAN; g.c_out];
            conv2d_backward_bias(&g, &go, &mut gb);
            assert_close(&gb, &want_gb, 1e-12, &format!("grad_bias {g:?}"));
        }
    }

    #[test]
    fn conv_without_input_channels_gives_bias() {
        let g = geom(2, 0, (3, 4), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1);
        let bias = [1.0, 2.0, 3.0];
        let mut out = vec![0.0; g.output_len()];
        conv2d_forward(&g, &[], &[], Some(&bias), &mut out);
        assert!(out.iter().enumerate().all(|(i, &v)| v == bias[i / 12 % 3]));
        conv2d_backward_input(&g, &out, &[], &mut []);
        conv2d_backward_weight(&g, &[], &out, &mut []);
    }

    /// Gradients of `loss = Σ conv(x, w, b) * r` against central finite differences.
    #[test]
    fn conv_gradients_match_finite_differences() {
        let mut rng = Rng(42);
        for g in geoms().into_iter().take(4) {
            let x = rng.vec(g.input_len());
            let w = rng.vec(g.weight_len());
            let b = rng.vec(g.c_out);
            let r = rng.vec(g.output_len());
            let loss = |x: &[f64], w: &[f64], b: &[f64]| {
                let mut out = vec![0.0; g.output_len()];
                conv2d_forward(&g, x, w, Some(b), &mut out);
                out.iter().zip(&r).map(|(o, r)| o * r).sum::<f64>()
            };
            let fd = |v: &[f64], f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
                let eps = 1e-4;
                (0..v.len())
                    .map(|i| {
                        let (mut p, mut m) = (v.to_vec(), v.to_vec());
                        p[i] += eps;
                        m[i] -= eps;
                        (f(&p) - f(&m)) / (2.0 * eps)
                    })
                    .collect()
            };
            let mut gi = vec![0.0; g.input_len()];
            conv2d_backward_input(&g, &r, &w, &mut gi);
            assert_close(&gi, &fd(&x, &|x| loss(x, &w, &b)), 1e-7, "fd grad_in");
            let mut gw = vec![0.0; g.weight_len()];
            conv2d_backward_weight(&g, &x, &r, &mut gw);
            assert_close(&gw, &fd(&w, &|w| loss(&x, w, &b)), 1e-7, "fd grad_weight");
            let mut gb = vec![0.0; g.c_out];
            conv2d_backward_bias(&g, &r, &mut gb);
            assert_close(&gb, &fd(&b, &|b| loss(&x, &w, b)), 1e-7, "fd grad_bias");
        }
    }
}
