//! GEMM with a right-hand operand packed once and reused for many products: the weights of a
//! recurrent layer (one `[B, H] × [H, G·H]` product per time step) or of a Linear layer at
//! inference, where the left operand has few rows.
//!
//! A general GEMM (the `gemm` crate, MKL, oneDNN) packs both operands into cache-sized panels
//! on every call. With a left operand of a handful of rows, packing the right one costs as much
//! as the product itself, and a recurrent layer would pay it at every step for the same
//! weights. [`PackedRhs::pack`] does it once: `B` `[K, N]` is stored as column panels of
//! [`NR`] = 16 values, each panel `K` rows deep and contiguous, so the product streams every
//! panel once, front to back, which the hardware prefetchers follow.
//!
//! [`gemm_packed`] then runs register-blocked micro-kernels written with `std::arch`
//! intrinsics and chosen at run time: AVX-512 (a tile of up to 8 rows × 32 columns, 16 `zmm`
//! accumulators, two panels side by side) and AVX2 + FMA (up to 6 rows × 16 columns, 12 `ymm`
//! accumulators). `K` is split into blocks of [`KC`] so that the rows of the left operand a
//! tile reads stay in L1. The right operand's columns are shared out among `threads` threads
//! of the current rayon pool in whole panels.
//!
//! Element types and machines without these kernels (`f64`; CPUs without AVX2/FMA; other
//! architectures) keep `B` as a plain row-major `[K, N]` matrix and call the `gemm` crate, so
//! the API is the same everywhere.
//!
//! Summation order: each output element is one FMA chain over `k` per `KC` block, blocks
//! added in order; results match a reference product to the usual `f32` rounding, not bit for
//! bit with the `gemm` crate.

use super::rnn::{gemm_strided, Strided};
use super::Float;
use std::any::TypeId;
use std::sync::OnceLock;

/// Columns per packed panel.
pub const NR: usize = 16;
/// Depth of a `K` block: a tile's rows of the left operand (`8 × KC` values) stay in L1.
pub const KC: usize = 256;

/// The instruction set a packed operand was laid out for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedIsa {
    /// AVX-512F micro-kernel (8 × 32 tiles).
    Avx512,
    /// AVX2 + FMA micro-kernel (6 × 16 tiles).
    Avx2,
    /// No micro-kernel here: a plain row-major copy multiplied by the `gemm` crate.
    Plain,
}

/// The best packed kernel this CPU runs for `f32` (detected once). `STAPES_CPU_PACKED=avx2` or
/// `=plain` caps it, to compare the kernels or to rule them out.
pub fn best_isa() -> PackedIsa {
    static ISA: OnceLock<PackedIsa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = std::env::var("STAPES_CPU_PACKED").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            if has!("avx512f") && avx2 && cap != "avx2" && cap != "plain" {
                return PackedIsa::Avx512;
            }
            if avx2 && cap != "plain" {
                return PackedIsa::Avx2;
            }
        }
        let _ = cap;
        PackedIsa::Plain
    })
}

/// Whether [`PackedRhs::pack`] lays out `T` for a micro-kernel of this CPU (`f32` on a CPU
/// with AVX2 + FMA); otherwise it only copies the operand for the `gemm` crate.
pub fn packs_for_kernels<T: Float>() -> bool {
    PackedRhs::<T>::layout_isa(best_isa()) != PackedIsa::Plain
}

/// Whether `isa`'s kernels can run on this CPU.
pub fn isa_available(isa: PackedIsa) -> bool {
    match isa {
        PackedIsa::Plain => true,
        #[cfg(target_arch = "x86_64")]
        PackedIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
        #[cfg(target_arch = "x86_64")]
        PackedIsa::Avx512 => std::arch::is_x86_feature_detected!("avx512f") && isa_available(PackedIsa::Avx2),
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    }
}

/// A right-hand GEMM operand `B` `[K, N]`, packed once for many products with
/// [`gemm_packed`].
#[derive(Debug)]
pub struct PackedRhs<T> {
    k: usize,
    n: usize,
    isa: PackedIsa,
    /// Panels: `ceil(N / NR)` blocks of `[K, NR]` (the last zero-padded); plain: `[K, N]`.
    data: Vec<T>,
}

impl<T: Float> PackedRhs<T> {
    /// Packs `B` `[k, n]`, element `(i, j)` at `src[layout.offset + i * layout.row_stride + j *
    /// layout.col_stride]`, for the best kernel of this CPU. A weight `W` `[n, k]` stored
    /// row-major is used as `Wᵀ` with `Strided::rows(0, k).t()`.
    ///
    /// # Panics
    /// If `layout` addresses memory outside `src` (a caller bug, checked up front).
    pub fn pack(k: usize, n: usize, src: &[T], layout: Strided) -> Self {
        Self::pack_for(best_isa(), k, n, src, layout)
    }

    /// As [`pack`](Self::pack), for a given kernel (which must be
    /// [available](isa_available)); element types other than `f32` always pack
    /// [`PackedIsa::Plain`].
    ///
    /// # Panics
    /// If `layout` addresses memory outside `src`, or `isa` cannot run on this CPU.
    pub fn pack_for(isa: PackedIsa, k: usize, n: usize, src: &[T], layout: Strided) -> Self {
        Self::pack_into(Vec::new(), isa, k, n, src, layout)
    }

    /// As [`pack_for`](Self::pack_for), storing the panels in `buf` (its contents are
    /// overwritten; its allocation is reused when large enough), so that a caller packing
    /// the same shape at every training step can recycle the buffer from
    /// [`into_vec`](Self::into_vec).
    ///
    /// # Panics
    /// As [`pack_for`](Self::pack_for).
    pub fn pack_into(mut buf: Vec<T>, isa: PackedIsa, k: usize, n: usize, src: &[T], layout: Strided) -> Self {
        assert!(isa_available(isa), "PackedRhs::pack_for: {isa:?} kernels do not run on this CPU");
        if k > 0 && n > 0 {
            let last = layout.offset + (k - 1) * layout.row_stride + (n - 1) * layout.col_stride;
            assert!(last < src.len(), "PackedRhs::pack: operand [{k}, {n}] out of bounds of {} values", src.len());
        }
        let isa = Self::layout_isa(isa);
        let at = |i: usize, j: usize| src[layout.offset + i * layout.row_stride + j * layout.col_stride];
        let len = Self::packed_len(isa, k, n);
        // Every element is written below, padding included: no zero fill first.
        buf.resize(len, T::zero());
        buf.truncate(len);
        match isa {
            _ if len == 0 => {}
            PackedIsa::Plain => {
                for (i, row) in buf.chunks_exact_mut(n.max(1)).take(k).enumerate() {
                    row.iter_mut().enumerate().for_each(|(j, v)| *v = at(i, j));
                }
            }
            PackedIsa::Avx512 | PackedIsa::Avx2 => {
                let (off, rs, cs) = (layout.offset, layout.row_stride, layout.col_stride);
                for (p, panel) in buf.chunks_exact_mut(k * NR).enumerate() {
                    let width = NR.min(n - p * NR);
                    if width < NR {
                        panel.fill(T::zero());
                    }
                    if cs == 1 {
                        // Row-major B: each panel row is a contiguous run of the source.
                        for (i, row) in panel.chunks_exact_mut(NR).enumerate() {
                            let start = off + i * rs + p * NR;
                            row[..width].copy_from_slice(&src[start..start + width]);
                        }
                    } else if rs == 1 {
                        // A transposed weight: each panel column is a contiguous source row.
                        // Whole 8 × 8 blocks go through an AVX transpose (when the panel was
                        // laid out for SIMD, `T` is `f32` and AVX is present); the rest, and
                        // the blocks of a partial panel, element by element, in blocks of 16
                        // rows so that the panel block stays in L1.
                        let base = off + p * NR * cs;
                        let full_i = if width == NR { k - k % 8 } else { 0 };
                        #[cfg(target_arch = "x86_64")]
                        if full_i > 0 {
                            // SAFETY: `T` is `f32` (panels are only laid out for `f32`); every
                            // source row `p·NR + j < n` holds `k` values from `base + j·cs`
                            // (bounds checked above), and the panel holds `k × NR`.
                            unsafe {
                                let s = src.as_ptr() as *const f32;
                                let d = panel.as_mut_ptr() as *mut f32;
                                for i0 in (0..full_i).step_by(8) {
                                    for j0 in [0, 8] {
                                        x86::transpose8(s.add(base + j0 * cs + i0), cs, d.add(i0 * NR + j0), NR);
                                    }
                                }
                            }
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        let full_i = 0;
                        for i0 in (full_i..k).step_by(NR) {
                            let i1 = (i0 + NR).min(k);
                            for j in 0..width {
                                let start = base + j * cs;
                                let col = &src[start + i0..start + i1];
                                for (i, &v) in col.iter().enumerate() {
                                    panel[(i0 + i) * NR + j] = v;
                                }
                            }
                        }
                    } else {
                        for i in 0..k {
                            for j in 0..width {
                                panel[i * NR + j] = at(i, p * NR + j);
                            }
                        }
                    }
                }
            }
        }
        PackedRhs { k, n, isa, data: buf }
    }

    /// The layout `pack_for(isa, ..)` produces for `T`: `isa` for `f32`, plain otherwise.
    fn layout_isa(isa: PackedIsa) -> PackedIsa {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            isa
        } else {
            PackedIsa::Plain
        }
    }

    /// How many values `pack_for(isa, k, n, ..)` stores for `T` (the length of
    /// [`into_vec`](Self::into_vec)), for a caller that recycles buffers of exactly that length.
    pub fn packed_len(isa: PackedIsa, k: usize, n: usize) -> usize {
        match Self::layout_isa(isa) {
            PackedIsa::Plain => k * n,
            _ => n.div_ceil(NR) * k * NR,
        }
    }

    /// `K`, the rows of `B`.
    pub fn k(&self) -> usize {
        self.k
    }
    /// `N`, the columns of `B`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// The kernel this operand was packed for.
    pub fn isa(&self) -> PackedIsa {
        self.isa
    }
    /// The packed values (for returning the buffer to a cache).
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
}

/// `dst = (accumulate ? dst : 0) + lhs · B` with `lhs` `[m, K]` (row `i` at `lhs[i * lda..]`),
/// `dst` `[m, N]` (row `i` at `dst[i * ldd..]`), `B` packed, on `threads` threads of the
/// current rayon pool (`1`: the calling thread only).
///
/// # Panics
/// If `lhs` or `dst` is too short for the given rows and strides (a caller bug, checked up
/// front).
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed<T: Float>(
    m: usize,
    dst: &mut [T],
    ldd: usize,
    accumulate: bool,
    lhs: &[T],
    lda: usize,
    b: &PackedRhs<T>,
    threads: usize,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldd >= n && (m - 1) * ldd + n <= dst.len(), "gemm_packed: dst [{m}, {n}] (row stride {ldd}) out of bounds");
    assert!(lda >= k && (m - 1) * lda + k <= lhs.len(), "gemm_packed: lhs [{m}, {k}] (row stride {lda}) out of bounds");
    match b.isa {
        PackedIsa::Plain => gemm_strided(
            m,
            n,
            k,
            dst,
            Strided::rows(0, ldd),
            accumulate,
            lhs,
            Strided::rows(0, lda),
            &b.data,
            Strided::rows(0, n),
            threads,
        ),
        #[cfg(target_arch = "x86_64")]
        isa @ (PackedIsa::Avx512 | PackedIsa::Avx2) => {
            // SAFETY: only `f32` operands are packed for these kernels (see `pack_for`), so `T`
            // is `f32` here; the bounds were checked above and `dst` does not alias `lhs` or
            // the packed data.
            unsafe {
                x86::run(
                    isa,
                    m,
                    n,
                    k,
                    dst.as_mut_ptr() as *mut f32,
                    ldd,
                    accumulate,
                    lhs.as_ptr() as *const f32,
                    lda,
                    b.data.as_ptr() as *const f32,
                    threads,
                )
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only PackedIsa::Plain is available off x86_64"),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PackedIsa, KC, NR};
    use std::arch::x86_64::*;

    /// `dst[q·ldd + r] = src[r·lds + q]` for an 8 × 8 block (unpack, shuffle and lane-permute
    /// steps of AVX).
    ///
    /// # Safety
    /// AVX is present (every CPU with the packed kernels has it); 8 rows of 8 values are
    /// readable from `src` and writable at `dst` with the given strides.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (q, v) in out.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(q * ldd), v);
        }
    }

    /// A raw pointer that may cross to another thread (the threads write disjoint columns).
    #[derive(Clone, Copy)]
    struct Ptr<P>(P);
    unsafe impl<P> Send for Ptr<P> {}
    unsafe impl<P> Sync for Ptr<P> {}

    /// Splits the panels among `threads` threads and runs [`columns`] on each share.
    ///
    /// # Safety
    /// `isa` runs on this CPU; `dst`, `lhs` and `b` address `[m, n]`, `[m, k]` and the packed
    /// panels of `[k, n]` with the given row strides; `dst` aliases neither input.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run(
        isa: PackedIsa,
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        ldd: usize,
        accumulate: bool,
        lhs: *const f32,
        lda: usize,
        b: *const f32,
        threads: usize,
    ) {
        let panels = n.div_ceil(NR);
        // Whole panel pairs per thread (the AVX-512 tile is two panels wide); no split below
        // a product of ~1 MFLOP, where a rayon hand-off costs more than it saves.
        let threads = if 2 * m * n * k < 1 << 20 { 1 } else { threads.clamp(1, panels.div_ceil(2)) };
        if threads == 1 {
            return columns(isa, m, n, k, 0, panels, dst, ldd, accumulate, lhs, lda, b);
        }
        let pairs = panels.div_ceil(2);
        let (dst, lhs, b) = (Ptr(dst), Ptr(lhs), Ptr(b));
        rayon::scope(|s| {
            for t in 0..threads {
                let p0 = (pairs * t / threads) * 2;
                let p1 = ((pairs * (t + 1) / threads) * 2).min(panels);
                s.spawn(move |_| {
                    let (dst, lhs, b) = (dst, lhs, b);
                    // SAFETY: the caller's contract; threads write disjoint column ranges.
                    unsafe { columns(isa, m, n, k, p0, p1, dst.0, ldd, accumulate, lhs.0, lda, b.0) }
                });
            }
        });
    }

    /// Panels per column block (even: the AVX-512 tile takes panel pairs).
    const NCP: usize = 32;
    /// Above this many rows (many row tiles re-reading each `B` block) the blocking changes to
    /// deep `K` blocks over narrow column blocks: a tile's accumulators then live through up
    /// to [`KC_TALL`] of `K` (one pass over `dst` instead of `K / KC` read-modify-write
    /// passes), and the `B` block (`KC_TALL × NCP_TALL·NR` values, 256 KiB) stays in L2.
    /// Measured on the LSTM's input projection `[800, 1024] × [1024, 2048]` (AMD EPYC, one
    /// core per direction): the whole forward 80.7–81.3 ms against 83.4–84.8 ms.
    const TALL_ROWS: usize = 64;
    const KC_TALL: usize = 1024;
    const NCP_TALL: usize = 4;

    /// Panels `p0..p1` of the product: `K` blocks outermost, then column blocks, then row
    /// tiles, then panels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn columns(
        isa: PackedIsa,
        m: usize,
        n: usize,
        k: usize,
        p0: usize,
        p1: usize,
        dst: *mut f32,
        ldd: usize,
        accumulate: bool,
        lhs: *const f32,
        lda: usize,
        b: *const f32,
    ) {
        let mut k0 = 0;
        loop {
            let (kcb, ncp) = if m > TALL_ROWS { (KC_TALL, NCP_TALL) } else { (KC, NCP) };
            let kc = kcb.min(k - k0);
            // The first block overwrites unless accumulating; K = 0 zero-fills.
            let acc = accumulate || k0 > 0;
            // Column blocks of `ncp` panels (KC × NCP·NR values, 512 KiB; see TALL_ROWS): with
            // many rows, every row tile re-reads the block, which then comes from L2.
            let mut q0 = p0;
            while q0 < p1 {
                let q1 = (q0 + ncp).min(p1);
                match isa {
                    PackedIsa::Avx512 => avx512_block(m, n, k, k0, kc, q0, q1, dst, ldd, acc, lhs, lda, b),
                    PackedIsa::Avx2 => avx2_block(m, n, k, k0, kc, q0, q1, dst, ldd, acc, lhs, lda, b),
                    PackedIsa::Plain => unreachable!("plain operands use the gemm crate"),
                }
                q0 = q1;
            }
            k0 += kc;
            if k0 >= k {
                break;
            }
        }
    }

    /// Writes a finished tile (`tile`, `rows × width` at a row stride of `tw`) into `dst`,
    /// for the `cols ≤ width` columns that exist.
    #[inline(always)]
    unsafe fn store_edge(tile: &[f32], tw: usize, rows: usize, cols: usize, dst: *mut f32, ldd: usize, acc: bool) {
        for r in 0..rows {
            for c in 0..cols {
                let d = dst.add(r * ldd + c);
                *d = if acc { *d + tile[r * tw + c] } else { tile[r * tw + c] };
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512_block(
        m: usize,
        n: usize,
        k: usize,
        k0: usize,
        kc: usize,
        p0: usize,
        p1: usize,
        dst: *mut f32,
        ldd: usize,
        acc: bool,
        lhs: *const f32,
        lda: usize,
        b: *const f32,
    ) {
        let mut r0 = 0;
        while r0 < m {
            let rows = (m - r0).min(8);
            let a = lhs.add(r0 * lda + k0);
            let mut p = p0;
            while p < p1 {
                let two = p + 1 < p1;
                let b0 = b.add((p * k + k0) * NR);
                let b1 = if two { b.add(((p + 1) * k + k0) * NR) } else { b0 };
                let c = dst.add(r0 * ldd + p * NR);
                let cols = (n - p * NR).min(if two { 2 * NR } else { NR });
                let kernel = match rows {
                    8 => tile512_8,
                    7 => tile512_7,
                    6 => tile512_6,
                    5 => tile512_5,
                    4 => tile512_4,
                    3 => tile512_3,
                    2 => tile512_2,
                    _ => tile512_1,
                };
                kernel(kc, a, lda, b0, b1, two, c, ldd, cols, acc);
                p += 2;
            }
            r0 += rows;
        }
    }

    /// Defines `$name`: one `R × 32` tile, `C (+)= A[R, kc] · [B0 | B1][kc, 32]`, for the rows
    /// listed with their two accumulators. Named accumulators, not an array indexed in the `k`
    /// loop: LLVM kept such an array on the stack (a spill and reload per FMA, half speed).
    /// When `two` is false only `B0` exists (`b1` repeats it) and the right half is dropped.
    macro_rules! tile512 {
        ($name:ident; $(($r:literal, $x0:ident, $x1:ident)),+) => {
            #[allow(clippy::too_many_arguments)]
            #[inline]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn $name(
                kc: usize,
                a: *const f32,
                lda: usize,
                b0: *const f32,
                b1: *const f32,
                two: bool,
                c: *mut f32,
                ldd: usize,
                cols: usize,
                acc: bool,
            ) {
                $(let mut $x0 = _mm512_setzero_ps(); let mut $x1 = _mm512_setzero_ps();)+
                for kk in 0..kc {
                    let v0 = _mm512_loadu_ps(b0.add(kk * NR));
                    let v1 = _mm512_loadu_ps(b1.add(kk * NR));
                    $(
                        let x = _mm512_set1_ps(*a.add($r * lda + kk));
                        $x0 = _mm512_fmadd_ps(x, v0, $x0);
                        $x1 = _mm512_fmadd_ps(x, v1, $x1);
                    )+
                }
                let s0 = [$($x0),+];
                let s1 = [$($x1),+];
                finish512(&s0, &s1, two, c, ldd, cols, acc);
            }
        };
    }
    tile512!(tile512_1; (0, a0, b0_));
    tile512!(tile512_2; (0, a0, b0_), (1, a1, b1_));
    tile512!(tile512_3; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_));
    tile512!(tile512_4; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_));
    tile512!(tile512_5; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_), (4, a4, b4_));
    tile512!(tile512_6; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_), (4, a4, b4_), (5, a5, b5_));
    tile512!(tile512_7; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_), (4, a4, b4_), (5, a5, b5_), (6, a6, b6_));
    tile512!(tile512_8; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_), (4, a4, b4_), (5, a5, b5_), (6, a6, b6_), (7, a7, b7_));

    /// Stores the accumulators of a `rows × 32` tile (`rows × 16` when `two` is false).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn finish512(s0: &[__m512], s1: &[__m512], two: bool, c: *mut f32, ldd: usize, cols: usize, acc: bool) {
        let width = if two { 2 * NR } else { NR };
        if cols == width {
            for (r, (&x0, &x1)) in s0.iter().zip(s1).enumerate() {
                let d = c.add(r * ldd);
                let (mut x0, mut x1) = (x0, x1);
                if acc {
                    x0 = _mm512_add_ps(x0, _mm512_loadu_ps(d));
                    if two {
                        x1 = _mm512_add_ps(x1, _mm512_loadu_ps(d.add(NR)));
                    }
                }
                _mm512_storeu_ps(d, x0);
                if two {
                    _mm512_storeu_ps(d.add(NR), x1);
                }
            }
        } else {
            let mut tile = [0f32; 8 * 32];
            for (r, (&x0, &x1)) in s0.iter().zip(s1).enumerate() {
                _mm512_storeu_ps(tile.as_mut_ptr().add(r * 32), x0);
                _mm512_storeu_ps(tile.as_mut_ptr().add(r * 32 + NR), x1);
            }
            store_edge(&tile, 32, s0.len(), cols, c, ldd, acc);
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_block(
        m: usize,
        n: usize,
        k: usize,
        k0: usize,
        kc: usize,
        p0: usize,
        p1: usize,
        dst: *mut f32,
        ldd: usize,
        acc: bool,
        lhs: *const f32,
        lda: usize,
        b: *const f32,
    ) {
        let mut r0 = 0;
        while r0 < m {
            let rows = (m - r0).min(6);
            let a = lhs.add(r0 * lda + k0);
            for p in p0..p1 {
                let bp = b.add((p * k + k0) * NR);
                let c = dst.add(r0 * ldd + p * NR);
                let cols = (n - p * NR).min(NR);
                let kernel = match rows {
                    6 => tile256_6,
                    5 => tile256_5,
                    4 => tile256_4,
                    3 => tile256_3,
                    2 => tile256_2,
                    _ => tile256_1,
                };
                kernel(kc, a, lda, bp, c, ldd, cols, acc);
            }
            r0 += rows;
        }
    }

    /// Defines `$name`: one `R × 16` tile, `C (+)= A[R, kc] · B[kc, 16]` (named accumulators,
    /// as in `tile512`).
    macro_rules! tile256 {
        ($name:ident; $(($r:literal, $x0:ident, $x1:ident)),+) => {
            #[allow(clippy::too_many_arguments)]
            #[inline]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $name(kc: usize, a: *const f32, lda: usize, bp: *const f32, c: *mut f32, ldd: usize, cols: usize, acc: bool) {
                $(let mut $x0 = _mm256_setzero_ps(); let mut $x1 = _mm256_setzero_ps();)+
                for kk in 0..kc {
                    let v0 = _mm256_loadu_ps(bp.add(kk * NR));
                    let v1 = _mm256_loadu_ps(bp.add(kk * NR + 8));
                    $(
                        let x = _mm256_set1_ps(*a.add($r * lda + kk));
                        $x0 = _mm256_fmadd_ps(x, v0, $x0);
                        $x1 = _mm256_fmadd_ps(x, v1, $x1);
                    )+
                }
                let s0 = [$($x0),+];
                let s1 = [$($x1),+];
                finish256(&s0, &s1, c, ldd, cols, acc);
            }
        };
    }
    tile256!(tile256_1; (0, a0, b0_));
    tile256!(tile256_2; (0, a0, b0_), (1, a1, b1_));
    tile256!(tile256_3; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_));
    tile256!(tile256_4; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_));
    tile256!(tile256_5; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_), (4, a4, b4_));
    tile256!(tile256_6; (0, a0, b0_), (1, a1, b1_), (2, a2, b2_), (3, a3, b3_), (4, a4, b4_), (5, a5, b5_));

    /// Stores the accumulators of a `rows × 16` tile.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn finish256(s0: &[__m256], s1: &[__m256], c: *mut f32, ldd: usize, cols: usize, acc: bool) {
        if cols == NR {
            for (r, (&x0, &x1)) in s0.iter().zip(s1).enumerate() {
                let d = c.add(r * ldd);
                let (mut x0, mut x1) = (x0, x1);
                if acc {
                    x0 = _mm256_add_ps(x0, _mm256_loadu_ps(d));
                    x1 = _mm256_add_ps(x1, _mm256_loadu_ps(d.add(8)));
                }
                _mm256_storeu_ps(d, x0);
                _mm256_storeu_ps(d.add(8), x1);
            }
        } else {
            let mut tile = [0f32; 6 * NR];
            for (r, (&x0, &x1)) in s0.iter().zip(s1).enumerate() {
                _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR), x0);
                _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR + 8), x1);
            }
            store_edge(&tile, NR, s0.len(), cols, c, ldd, acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_rng::Rng;

    fn reference(m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| a[i * lda + t] as f64 * b[t * n + j] as f64).sum();
            }
        }
        out
    }

    /// Every kernel this CPU runs, every row count up to two tiles, panel edges, `K` across
    /// block boundaries, overwrite and accumulate, one and two threads, a transposed source.
    #[test]
    fn packed_products_match_f64_reference() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let isas: Vec<PackedIsa> =
            [PackedIsa::Plain, PackedIsa::Avx2, PackedIsa::Avx512].into_iter().filter(|&i| isa_available(i)).collect();
        for &(m, n, k) in &[
            (1, 1, 1),
            (8, 2048, 512),
            (3, 17, 5),
            (13, 40, 300),
            (6, 33, KC),
            (17, 96, 2 * KC + 3),
            (70, 40, 1030),
            (2, 15, 0),
        ] {
            let lda = k + 3;
            let a: Vec<f32> = (0..m * lda).map(|_| rng.next() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.next() as f32).collect();
            // The same B stored as W = Bᵀ [n, k], packed through a transposed layout.
            let mut w = vec![0f32; n * k];
            for t in 0..k {
                for j in 0..n {
                    w[j * k + t] = b[t * n + j];
                }
            }
            let want = reference(m, n, k, &a, lda, &b);
            for &isa in &isas {
                for (src, layout) in [(&b, Strided::rows(0, n)), (&w, Strided::rows(0, k).t())] {
                    let packed = PackedRhs::pack_for(isa, k, n, src, layout);
                    for threads in [1, 2] {
                        for accumulate in [false, true] {
                            let ldd = n + 1;
                            let init: Vec<f32> = (0..m * ldd).map(|_| rng.next() as f32).collect();
                            let mut dst = init.clone();
                            gemm_packed(m, &mut dst, ldd, accumulate, &a, lda, &packed, threads);
                            for i in 0..m {
                                for j in 0..n {
                                    let base = if accumulate { init[i * ldd + j] as f64 } else { 0.0 };
                                    let e = want[i * n + j] + base;
                                    let got = dst[i * ldd + j] as f64;
                                    let tol = 1e-5 * (1.0 + (k as f64).sqrt() * 4.0);
                                    assert!(
                                        (got - e).abs() <= tol,
                                        "{isa:?} m{m} n{n} k{k} t{threads} acc {accumulate}: ({i}, {j}) {got} vs {e}"
                                    );
                                }
                                // The padding column between rows is untouched.
                                assert_eq!(dst[i * ldd + n], init[i * ldd + n]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn f64_operands_pack_plain_and_multiply() {
        let b: Vec<f64> = (0..12).map(|v| v as f64).collect(); // [3, 4]
        let packed = PackedRhs::pack(3, 4, &b, Strided::rows(0, 4));
        assert_eq!(packed.isa(), PackedIsa::Plain);
        let a = [1.0, 2.0, 3.0];
        let mut dst = [0.0f64; 4];
        gemm_packed(1, &mut dst, 4, false, &a, 3, &packed, 1);
        assert_eq!(dst, [32.0, 38.0, 44.0, 50.0]);
    }
}
