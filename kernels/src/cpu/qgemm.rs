//! int8 GEMM for dynamically quantized layers: `C[m, n] = Σ_k A[m, k] · B[n, k]` with `A`
//! unsigned 8-bit (activations quantized per call), `B` signed 8-bit (weights quantized once)
//! and `C` accumulated exactly in `i32`.
//!
//! No crate of the dependency list does int8 GEMM (the `gemm` crate is floating-point only), so
//! this is ours. `B` (`[N, K]`, one row per output channel, as a Linear layer stores its weight)
//! is packed once by [`PackedI8::pack`] into panels of [`QNR`] = 16 columns: for every group of
//! four `k`, 64 contiguous bytes holding the four weights of each of the 16 columns, which is
//! one AVX-512 register (and two AVX2 ones). The micro-kernels broadcast four bytes of a row of
//! `A` to every lane and multiply-accumulate them against a panel register:
//!
//! - AVX-512 VNNI: `vpdpbusd` (four `u8 × i8` products summed into each `i32` lane in one
//!   instruction); tiles of 4 rows × 32 columns, 8 `zmm` accumulators.
//! - AVX2: `vpmaddubsw` (pairs of `u8 × i8` products summed into `i16`, saturating) then
//!   `vpmaddwd` by ones into `i32`; tiles of 4 rows × 16 columns. Exact when a pair's sum fits
//!   `i16`: always with activations in `[0, 127]` (PyTorch's `reduce_range`, which fbgemm uses
//!   for the same reason); with activations up to 255 and weights of -128 a pair can saturate,
//!   so [`qgemm_u8i8`] takes the portable path for such inputs unless VNNI is there.
//! - Portable: plain `i32` loops (any CPU, and the reference of the tests).
//!
//! The kernel is chosen at run time ([`best_qisa`]; `STAPES_CPU_QGEMM=avx2|portable` caps it).
//! Columns are shared among threads in whole panels.

use super::vmath;
use rayon::prelude::*;
use std::sync::OnceLock;

vmath::multiversion! {
    /// The minimum and maximum of `xs` (0 when empty) and whether every value is finite, in
    /// one pass.
    pub fn minmax_finite_f32(xs: &[f32]) -> (f32, f32, bool) {
        let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
        let mut bad = [false; 16];
        let chunks = xs.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            for k in 0..16 {
                lo[k] = if c[k] < lo[k] { c[k] } else { lo[k] };
                hi[k] = if c[k] > hi[k] { c[k] } else { hi[k] };
                bad[k] |= !c[k].is_finite();
            }
        }
        let (mut l, mut h, mut b) = (0f32, 0f32, false);
        for k in 0..16 {
            l = l.min(lo[k]);
            h = h.max(hi[k]);
            b |= bad[k];
        }
        for &v in tail {
            l = if v < l { v } else { l };
            h = if v > h { v } else { h };
            b |= !v.is_finite();
        }
        (l, h, !b)
    }
}

vmath::multiversion! {
    /// `out[i] = clamp(round_half_even(xs[i] · inv_scale) + zero_point, 0, qmax)` for finite
    /// inputs (rounding by the `1.5 · 2²³` trick, exact for the clamped range, so the loop
    /// vectorises without SSE4.1's `roundps`).
    pub fn quantize_u8_f32(xs: &[f32], inv_scale: f32, zero_point: f32, qmax: f32, out: &mut [u8]) {
        const MAGIC: f32 = 12_582_912.0;
        for (o, &v) in out.iter_mut().zip(xs) {
            let t = (v * inv_scale).clamp(-1024.0, 1024.0);
            let r = (t + MAGIC) - MAGIC;
            *o = (r + zero_point).clamp(0.0, qmax) as u8;
        }
    }
}

/// Columns per packed panel.
pub const QNR: usize = 16;
/// Rows per micro-tile.
const MR: usize = 4;

/// The int8 micro-kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QIsa {
    /// AVX-512 VNNI (`vpdpbusd`).
    Vnni512,
    /// AVX2 (`vpmaddubsw` + `vpmaddwd`).
    Avx2,
    /// Plain `i32` loops.
    Portable,
}

/// The best int8 kernel this CPU runs (detected once); `STAPES_CPU_QGEMM=avx2` or `=portable`
/// caps it.
pub fn best_qisa() -> QIsa {
    static ISA: OnceLock<QIsa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = std::env::var("STAPES_CPU_QGEMM").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") && cap != "avx2" && cap != "portable" {
                return QIsa::Vnni512;
            }
            if has!("avx2") && cap != "portable" {
                return QIsa::Avx2;
            }
        }
        let _ = cap;
        QIsa::Portable
    })
}

/// Whether this CPU can run `isa`.
pub fn qisa_available(isa: QIsa) -> bool {
    match isa {
        QIsa::Portable => true,
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
        #[cfg(target_arch = "x86_64")]
        QIsa::Vnni512 => {
            use std::arch::is_x86_feature_detected as has;
            has!("avx512f") && has!("avx512bw") && has!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    }
}

/// An int8 matrix `B` `[N, K]` packed for [`qgemm_u8i8`], with its row sums (for the
/// activations' zero point: `Σ_k (a - z) b = Σ_k a b - z Σ_k b`).
#[derive(Clone, Debug)]
pub struct PackedI8 {
    n: usize,
    k: usize,
    /// `ceil(K / 4)` groups of four.
    groups: usize,
    /// `ceil(N / 16)` panels of `groups × 64` bytes.
    data: Vec<i8>,
    row_sums: Vec<i32>,
}

impl PackedI8 {
    /// Packs `b`, row-major `[n, k]`.
    ///
    /// # Panics
    /// If `b` does not hold `n × k` values (a caller bug).
    pub fn pack(b: &[i8], n: usize, k: usize) -> PackedI8 {
        assert_eq!(b.len(), n * k, "PackedI8::pack: {} values are not [{n}, {k}]", b.len());
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(QNR);
        let mut data = vec![0i8; panels * groups * 64];
        for (col, row) in b.chunks_exact(k.max(1)).enumerate().take(n) {
            let (p, j) = (col / QNR, col % QNR);
            let base = p * groups * 64 + j * 4;
            for (kk, &v) in row.iter().enumerate() {
                data[base + (kk / 4) * 64 + kk % 4] = v;
            }
        }
        let row_sums = if k == 0 {
            vec![0; n]
        } else {
            b.chunks_exact(k).map(|r| r.iter().map(|&v| i32::from(v)).sum()).collect()
        };
        PackedI8 { n, k, groups, data, row_sums }
    }

    /// `N` (output columns).
    pub fn n(&self) -> usize {
        self.n
    }
    /// `K` (the shared dimension).
    pub fn k(&self) -> usize {
        self.k
    }
    /// `Σ_k B[n, k]` per column `n`.
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }
    /// Bytes held (the packed panels and the row sums).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.row_sums.len()
    }

    fn panel(&self, p: usize) -> &[i8] {
        &self.data[p * self.groups * 64..(p + 1) * self.groups * 64]
    }
}

/// Four bytes of `row` from `k0`, zero-padded past its end, as one little-endian `i32`.
#[inline(always)]
fn quad(row: &[u8], k0: usize) -> i32 {
    let mut b = [0u8; 4];
    let n = row.len().saturating_sub(k0).min(4);
    b[..n].copy_from_slice(&row[k0..k0 + n]);
    i32::from_le_bytes(b)
}

/// `C[m, n] = Σ_k A[m, k] · B[n, k]` (overwriting `C`): `A` row-major `[m, K]` with row
/// stride `lda`, `C` `[m, N]` with row stride `ldc`, on `threads` threads of the current rayon
/// pool, with the kernel `isa` (`None`: [`best_qisa`]; a kernel the CPU lacks falls back to the
/// portable one).
///
/// # Panics
/// If `a` or `c` is too short for the given rows and strides (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn qgemm_u8i8(
    m: usize,
    a: &[u8],
    lda: usize,
    b: &PackedI8,
    c: &mut [i32],
    ldc: usize,
    threads: usize,
    isa: Option<QIsa>,
) {
    if m == 0 || b.n == 0 {
        return;
    }
    assert!(ldc >= b.n && (m - 1) * ldc + b.n <= c.len(), "qgemm_u8i8: C [{m}, {}] (stride {ldc}) out of bounds", b.n);
    qgemm_impl(m, a, lda, b, threads, isa, Out::I32 { c: SyncPtr(c.as_mut_ptr()), ldc });
}

/// The dequantized product: `Y[m, j] = (C[m, j] - zero_point · Σ_k B[j, k]) · mult[j] +
/// bias[j]` with `C` as [`qgemm_u8i8`] computes it, written straight from the micro-kernels'
/// tiles (no `i32` matrix in memory; the scaling runs on every thread). `mult` has `N` entries
/// (the activation scale times each output channel's weight scale); `bias` `N` or none.
///
/// # Panics
/// If a slice is too short for the given shapes (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn qgemm_u8i8_dequant(
    m: usize,
    a: &[u8],
    lda: usize,
    b: &PackedI8,
    zero_point: i32,
    mult: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    ldy: usize,
    threads: usize,
) {
    if m == 0 || b.n == 0 {
        return;
    }
    assert!(
        ldy >= b.n && (m - 1) * ldy + b.n <= y.len(),
        "qgemm_u8i8_dequant: Y [{m}, {}] (stride {ldy}) out of bounds",
        b.n
    );
    assert!(
        mult.len() == b.n && bias.is_none_or(|v| v.len() == b.n),
        "qgemm_u8i8_dequant: {} scales for {} columns",
        mult.len(),
        b.n
    );
    qgemm_impl(m, a, lda, b, threads, None, Out::F32 { y: SyncPtr(y.as_mut_ptr()), ldy, zero_point, mult, bias });
}

/// Where the tiles go.
#[derive(Clone, Copy)]
enum Out<'a> {
    I32 { c: SyncPtr<i32>, ldc: usize },
    F32 { y: SyncPtr<f32>, ldy: usize, zero_point: i32, mult: &'a [f32], bias: Option<&'a [f32]> },
}

#[allow(clippy::too_many_arguments)]
fn qgemm_impl(m: usize, a: &[u8], lda: usize, b: &PackedI8, threads: usize, isa: Option<QIsa>, out: Out<'_>) {
    let (n, k) = (b.n, b.k);
    assert!(lda >= k && (m - 1) * lda + k <= a.len(), "qgemm_u8i8: A [{m}, {k}] (stride {lda}) out of bounds");
    let mut isa = isa.unwrap_or_else(best_qisa);
    if !qisa_available(isa) {
        isa = QIsa::Portable;
    }
    // vpmaddubsw saturates pairs of products beyond i16: exact only for activations <= 127
    if isa == QIsa::Avx2 && (0..m).any(|r| a[r * lda..r * lda + k].iter().any(|&v| v > 127)) {
        isa = QIsa::Portable;
    }
    let panels = n.div_ceil(QNR);
    // whole panels (pairs for the AVX-512 tile) per task
    let step = if isa == QIsa::Vnni512 { 2 } else { 1 };
    let work = m * n * k;
    let tasks = if threads <= 1 || work < 1 << 20 { 1 } else { threads.min(panels.div_ceil(step)) };
    let per = panels.div_ceil(step).div_ceil(tasks) * step;
    let run = |p0: usize| columns(isa, m, a, lda, b, p0, (p0 + per).min(panels), out);
    if tasks == 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().map(|t| t * per).filter(|&p0| p0 < panels).for_each(run);
    }
}

#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: used only to hand disjoint column ranges of one output buffer to the tasks of one
// call, which ends before the buffer's borrow does.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

/// Bytes of `A` a block of rows may hold: the rows a panel is multiplied with stay in L2
/// while that panel sits in L1.
const A_BLOCK_BYTES: usize = 96 << 10;

/// Panels `[p0, p1)` of the output for every row. Rows go in blocks of about
/// [`A_BLOCK_BYTES`] of `A`; within a block each panel (pair) is loaded once and multiplied by
/// every 4-row tile of the block, so `B` is streamed once per block instead of once per tile.
#[allow(clippy::too_many_arguments)]
fn columns(isa: QIsa, m: usize, a: &[u8], lda: usize, b: &PackedI8, p0: usize, p1: usize, out: Out<'_>) {
    let k = b.k;
    let block = (A_BLOCK_BYTES / k.max(1)).max(MR) / MR * MR;
    let mut b0 = 0;
    while b0 < m {
        let b1 = (b0 + block).min(m);
        let mut p = p0;
        while p < p1 {
            let pair = isa == QIsa::Vnni512 && p + 1 < p1;
            let mut r0 = b0;
            while r0 < b1 {
                let rows = (b1 - r0).min(MR);
                let arows: [&[u8]; MR] = std::array::from_fn(|i| {
                    let r = r0 + i.min(rows - 1);
                    &a[r * lda..r * lda + k]
                });
                let mut tile = [[0i32; 2 * QNR]; MR];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the kernel's features were checked by qisa_available.
                    QIsa::Vnni512 => unsafe { tile_vnni(&arows, b, p, pair, &mut tile) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above.
                    QIsa::Avx2 => unsafe { tile_avx2(&arows, b, p, &mut tile) },
                    _ => tile_portable(&arows, b, p, pair, &mut tile),
                }
                let cols = if pair { 2 * QNR } else { QNR };
                let (c0, width) = (p * QNR, (b.n - p * QNR).min(cols));
                for (i, t) in tile.iter().enumerate().take(rows) {
                    match out {
                        Out::I32 { c, ldc } => {
                            // SAFETY: row r0 + i < m and columns [c0, c0 + width) < n are within
                            // the output (checked by the caller); tasks own disjoint columns.
                            let dst = unsafe { std::slice::from_raw_parts_mut(c.0.add((r0 + i) * ldc + c0), width) };
                            dst.copy_from_slice(&t[..width]);
                        }
                        Out::F32 { y, ldy, zero_point, mult, bias } => {
                            // SAFETY: as above.
                            let dst = unsafe { std::slice::from_raw_parts_mut(y.0.add((r0 + i) * ldy + c0), width) };
                            let sums = &b.row_sums[c0..c0 + width];
                            let bias = bias.map_or(&[][..], |v| &v[c0..c0 + width]);
                            dequantize_slice(&t[..width], sums, zero_point, &mult[c0..c0 + width], bias, dst);
                        }
                    }
                }
                r0 += rows;
            }
            p += if pair { 2 } else { 1 };
        }
        b0 = b1;
    }
}

/// `y[j] = (acc[j] - zero_point · sums[j]) · mult[j] + bias[j]` (`bias` empty: none) for one
/// tile row: the dequantization of [`qgemm_u8i8_dequant`], inlined (a dispatched call per 32
/// values would cost more than the work).
#[inline(always)]
fn dequantize_slice(acc: &[i32], sums: &[i32], zero_point: i32, mult: &[f32], bias: &[f32], y: &mut [f32]) {
    if bias.len() == y.len() {
        for j in 0..y.len() {
            y[j] = (acc[j] - zero_point * sums[j]) as f32 * mult[j] + bias[j];
        }
    } else {
        for j in 0..y.len() {
            y[j] = (acc[j] - zero_point * sums[j]) as f32 * mult[j];
        }
    }
}

fn tile_portable(arows: &[&[u8]; MR], b: &PackedI8, p: usize, pair: bool, tile: &mut [[i32; 2 * QNR]; MR]) {
    for half in 0..1 + usize::from(pair) {
        let panel = b.panel(p + half);
        for g in 0..b.groups {
            let w = &panel[g * 64..(g + 1) * 64];
            for (r, row) in arows.iter().enumerate() {
                let q = quad(row, 4 * g).to_le_bytes();
                for j in 0..QNR {
                    let s: i32 = (0..4).map(|x| i32::from(q[x]) * i32::from(w[4 * j + x])).sum();
                    tile[r][half * QNR + j] += s;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni(arows: &[&[u8]; MR], b: &PackedI8, p: usize, pair: bool, tile: &mut [[i32; 2 * QNR]; MR]) {
    use std::arch::x86_64::*;
    let p0 = b.panel(p).as_ptr();
    let p1 = if pair { b.panel(p + 1).as_ptr() } else { p0 };
    let (mut c00, mut c01, mut c10, mut c11) =
        (_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512());
    let (mut c20, mut c21, mut c30, mut c31) =
        (_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512());
    let full = b.k / 4;
    let (a0, a1, a2, a3) = (arows[0].as_ptr(), arows[1].as_ptr(), arows[2].as_ptr(), arows[3].as_ptr());
    for g in 0..b.groups {
        // SAFETY: g < groups, so both panel loads are within the packed data; the A loads read
        // 4 bytes at 4g < k - 3 for full groups, and the tail group goes through `quad`.
        let (b0, b1) =
            unsafe { (_mm512_loadu_si512(p0.add(g * 64) as *const _), _mm512_loadu_si512(p1.add(g * 64) as *const _)) };
        let (x0, x1, x2, x3) = if g < full {
            unsafe {
                (
                    (a0.add(4 * g) as *const i32).read_unaligned(),
                    (a1.add(4 * g) as *const i32).read_unaligned(),
                    (a2.add(4 * g) as *const i32).read_unaligned(),
                    (a3.add(4 * g) as *const i32).read_unaligned(),
                )
            }
        } else {
            (quad(arows[0], 4 * g), quad(arows[1], 4 * g), quad(arows[2], 4 * g), quad(arows[3], 4 * g))
        };
        let (v0, v1, v2, v3) =
            (_mm512_set1_epi32(x0), _mm512_set1_epi32(x1), _mm512_set1_epi32(x2), _mm512_set1_epi32(x3));
        c00 = _mm512_dpbusd_epi32(c00, v0, b0);
        c01 = _mm512_dpbusd_epi32(c01, v0, b1);
        c10 = _mm512_dpbusd_epi32(c10, v1, b0);
        c11 = _mm512_dpbusd_epi32(c11, v1, b1);
        c20 = _mm512_dpbusd_epi32(c20, v2, b0);
        c21 = _mm512_dpbusd_epi32(c21, v2, b1);
        c30 = _mm512_dpbusd_epi32(c30, v3, b0);
        c31 = _mm512_dpbusd_epi32(c31, v3, b1);
    }
    for (r, (lo, hi)) in [(c00, c01), (c10, c11), (c20, c21), (c30, c31)].into_iter().enumerate() {
        // SAFETY: each tile row holds 32 i32.
        unsafe {
            _mm512_storeu_si512(tile[r].as_mut_ptr() as *mut _, lo);
            _mm512_storeu_si512(tile[r].as_mut_ptr().add(QNR) as *mut _, hi);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2(arows: &[&[u8]; MR], b: &PackedI8, p: usize, tile: &mut [[i32; 2 * QNR]; MR]) {
    use std::arch::x86_64::*;
    let p0 = b.panel(p).as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    let full = b.k / 4;
    for g in 0..b.groups {
        // SAFETY: g < groups: both halves of the 64-byte group are within the panel.
        let (b0, b1) = unsafe {
            (
                _mm256_loadu_si256(p0.add(g * 64) as *const __m256i),
                _mm256_loadu_si256(p0.add(g * 64 + 32) as *const __m256i),
            )
        };
        for r in 0..MR {
            let x = if g < full {
                // SAFETY: 4g + 4 <= k for a full group.
                unsafe { (arows[r].as_ptr().add(4 * g) as *const i32).read_unaligned() }
            } else {
                quad(arows[r], 4 * g)
            };
            let v = _mm256_set1_epi32(x);
            acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(v, b0), ones));
            acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(v, b1), ones));
        }
    }
    for r in 0..MR {
        // SAFETY: each tile row holds 32 i32; the first 16 are written.
        unsafe {
            _mm256_storeu_si256(tile[r].as_mut_ptr() as *mut __m256i, acc[r][0]);
            _mm256_storeu_si256(tile[r].as_mut_ptr().add(8) as *mut __m256i, acc[r][1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    /// Every kernel against plain i32 sums, on shapes with ragged `K` (not a multiple of 4),
    /// ragged `N` (not of 16 or 32) and row counts around the tile's, one and two threads;
    /// AVX2 also with activations above 127 (it must fall back, not saturate).
    #[test]
    fn every_kernel_matches_plain_sums() {
        let mut seed = 7;
        for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (4, 16, 4), (5, 33, 67), (9, 48, 128), (13, 70, 257), (64, 96, 512)]
        {
            for max_a in [127u64, 255] {
                let a: Vec<u8> = (0..m * k).map(|_| (lcg(&mut seed) % (max_a + 1)) as u8).collect();
                let b: Vec<i8> = (0..n * k).map(|_| (lcg(&mut seed) % 256) as u8 as i8).collect();
                let want: Vec<i32> = (0..m * n)
                    .map(|i| (0..k).map(|x| i32::from(a[i / n * k + x]) * i32::from(b[i % n * k + x])).sum())
                    .collect();
                let packed = PackedI8::pack(&b, n, k);
                for (j, s) in packed.row_sums().iter().enumerate() {
                    assert_eq!(*s, b[j * k..(j + 1) * k].iter().map(|&v| i32::from(v)).sum::<i32>());
                }
                // the dequantized product equals the i32 one scaled
                let mult: Vec<f32> = (0..n).map(|j| 0.01 + j as f32 * 1e-3).collect();
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 3.0).collect();
                let mut y = vec![f32::NAN; m * n];
                qgemm_u8i8_dequant(m, &a, k, &packed, 7, &mult, Some(&bias), &mut y, n, 2);
                for i in 0..m * n {
                    let j = i % n;
                    let want = (want[i] - 7 * packed.row_sums()[j]) as f32 * mult[j] + bias[j];
                    assert_eq!(y[i], want, "dequant {m}x{n}x{k} at {i}");
                }
                for isa in [QIsa::Vnni512, QIsa::Avx2, QIsa::Portable] {
                    if !qisa_available(isa) {
                        continue;
                    }
                    for threads in [1, 2] {
                        let mut c = vec![i32::MIN; m * (n + 3)];
                        qgemm_u8i8(m, &a, k, &packed, &mut c, n + 3, threads, Some(isa));
                        for i in 0..m {
                            assert_eq!(
                                &c[i * (n + 3)..i * (n + 3) + n],
                                &want[i * n..(i + 1) * n],
                                "{isa:?} {m}x{n}x{k} row {i}"
                            );
                            assert!(
                                c[i * (n + 3) + n..(i + 1) * (n + 3)].iter().all(|&v| v == i32::MIN),
                                "padding written"
                            );
                        }
                    }
                }
            }
        }
    }
}
