//! Vectorisable math for the hot `f32` kernels.
//!
//! `f32::exp` calls into libm one element at a time, which no compiler vectorises. The
//! `exp_f32` below is branch-free (range reduction `x = n·ln2 + r` in two Cody–Waite steps and a
//! degree-6 polynomial for `e^r`, then `2^n` built in the exponent bits), so a loop over a slice
//! compiles to SIMD code. Its error is within 2 ulp on the normal range; results that would be
//! subnormal are flushed to zero, overflow gives `inf` and NaN propagates.
//!
//! The slice loops are compiled three times (baseline, AVX2+FMA, AVX-512) and the widest one the
//! running CPU supports is chosen at run time, so a binary built for generic x86-64 still runs
//! 16-wide on an AVX-512 machine.

/// `e^x` in `f32` without branches (see the module header for its accuracy).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Clamp so that the integer exponent stays in range; out-of-range inputs are fixed below.
    let xc = x.clamp(-87.5, 88.75);
    // Round to the nearest integer by adding 1.5·2^23: the sum's low mantissa bits then hold n
    // (two's complement), which avoids a float-to-int conversion that does not vectorise.
    const MAGIC: f32 = 12_582_912.0;
    let k = xc * LOG2E + MAGIC;
    let n = k - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // e^r on [-ln2/2, ln2/2]: Taylor-like minimax coefficients (Cephes expf).
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n as two factors 2^h · 2^(n-h), so n = 128 (x just below the overflow bound) is exact
    let m = k.to_bits().wrapping_sub(0x4B40_0000) as i32;
    let h = m >> 1;
    let s1 = f32::from_bits(((h + 127) as u32) << 23);
    let s2 = f32::from_bits(((m - h + 127) as u32) << 23);
    let y = er * s1 * s2;
    let y = if x < -87.336_54 { 0.0 } else { y };
    let y = if x > 88.722_83 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// Defines a slice function compiled for the baseline target, AVX2+FMA and AVX-512, with a
/// run-time choice of the widest version the CPU supports.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return unsafe { v3($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use multiversion;

/// The error function in `f32` without branches. For `|x| < 0.5`, its Maclaurin series to
/// `x^13` (truncation below 1e-9 relative); above, Abramowitz & Stegun 7.1.26,
/// `erf(x) = 1 - (a1·t + … + a5·t^5)·e^(-x²)` with `t = 1 / (1 + p·|x|)`, the formula of
/// PyTorch's vectorised CPU `erf` (`Vectorized<float>::erf`). Absolute error below 4e-7, relative
/// error below 1e-6 for `|x| < 0.5`. NaN propagates.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let ax = x.abs();
    let y = if ax < 0.5 { erf_small(ax) } else { 1.0 - erfc_as(ax) };
    y.copysign(x)
}

/// `erf(a)` for `0 <= a < 0.5`: `2/√π · Σ (-1)^n a^(2n+1) / (n! (2n+1))`, n ≤ 6.
#[inline(always)]
fn erf_small(a: f32) -> f32 {
    const C: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_4,
        0.112_837_91,
        -0.026_866_17,
        0.005_223_977_6,
        -8.548_327e-4,
        1.205_533_3e-4,
    ];
    let z = a * a;
    let p = (((((C[6] * z + C[5]) * z + C[4]) * z + C[3]) * z + C[2]) * z + C[1]) * z + C[0];
    a * p
}

/// `erfc(a)` for `a >= 0` by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erfc_as(a: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let t = 1.0 / (P * a + 1.0);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    poly * exp_f32(-a * a)
}

/// `Φ(x) = (1 + erf(x/√2)) / 2`, computed as `erfc(|x|/√2) / 2` for negative `x` below -0.7
/// (no cancellation in the lower tail).
#[inline(always)]
fn normal_cdf_f32(x: f32) -> f32 {
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    if a < 0.5 {
        0.5 + 0.5 * erf_small(a).copysign(x)
    } else {
        let q = 0.5 * erfc_as(a);
        if x < 0.0 {
            q
        } else {
            1.0 - q
        }
    }
}

/// `x·Φ(x)`, the exact GELU, with [`erf_f32`]'s approximations.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    x * normal_cdf_f32(x)
}

/// `d gelu / dx = Φ(x) + x·φ(x)`.
#[inline(always)]
pub fn gelu_grad_f32(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    normal_cdf_f32(x) + x * INV_SQRT_2PI * exp_f32(-0.5 * x * x)
}

multiversion! {
    /// `xs[i] = gelu(xs[i])` (exact GELU, [`gelu_f32`]).
    pub fn gelu_f32_inplace(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = gelu_f32(*x);
        }
    }
}

multiversion! {
    /// `xs[i] = gelu'(xs[i])` ([`gelu_grad_f32`]).
    pub fn gelu_grad_f32_inplace(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = gelu_grad_f32(*x);
        }
    }
}

multiversion! {
    /// `xs[i] = e^xs[i]` for every element.
    pub fn exp_f32_inplace(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = exp_f32(*x);
        }
    }
}

multiversion! {
    /// `dst[i] = e^(src[i] - shift)`, returning the sum of the results (16 lanes, then a tree).
    pub fn exp_shift_sum_f32(src: &[f32], shift: f32, dst: &mut [f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        let mut s = src.chunks_exact(16);
        let mut d = dst.chunks_exact_mut(16);
        for (sc, dc) in (&mut s).zip(&mut d) {
            for i in 0..16 {
                let e = exp_f32(sc[i] - shift);
                dc[i] = e;
                acc[i] += e;
            }
        }
        let mut tail = 0.0;
        for (x, y) in s.remainder().iter().zip(d.into_remainder()) {
            let e = exp_f32(*x - shift);
            *y = e;
            tail += e;
        }
        lanes_sum(&acc) + tail
    }
}

multiversion! {
    /// Sum of `e^(src[i] - shift)` without storing the terms.
    pub fn exp_shift_sum_only_f32(src: &[f32], shift: f32) -> f32 {
        let mut acc = [0.0f32; 16];
        let mut s = src.chunks_exact(16);
        for sc in &mut s {
            for i in 0..16 {
                acc[i] += exp_f32(sc[i] - shift);
            }
        }
        let mut tail = 0.0;
        for x in s.remainder() {
            tail += exp_f32(*x - shift);
        }
        lanes_sum(&acc) + tail
    }
}

multiversion! {
    /// Maximum of a slice with NaN propagation (`-inf` for an empty slice).
    pub fn max_f32(xs: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 16];
        let mut nan = [false; 16];
        let mut c = xs.chunks_exact(16);
        for ch in &mut c {
            for i in 0..16 {
                acc[i] = if ch[i] > acc[i] { ch[i] } else { acc[i] };
                nan[i] |= ch[i].is_nan();
            }
        }
        let mut m = f32::NEG_INFINITY;
        let mut any_nan = nan.iter().any(|&b| b);
        for &x in c.remainder() {
            any_nan |= x.is_nan();
            m = if x > m { x } else { m };
        }
        if any_nan {
            return f32::NAN;
        }
        acc.iter().fold(m, |a, &b| a.max(b))
    }
}

multiversion! {
    /// Sum of a slice: 16 lanes within blocks of 4096, block sums added in `f64`.
    pub fn sum_f32(xs: &[f32]) -> f32 {
        let mut total = 0.0f64;
        for block in xs.chunks(4096) {
            let mut acc = [0.0f32; 16];
            let mut c = block.chunks_exact(16);
            for ch in &mut c {
                for i in 0..16 {
                    acc[i] += ch[i];
                }
            }
            let tail: f32 = c.remainder().iter().sum();
            total += (lanes_sum(&acc) + tail) as f64;
        }
        total as f32
    }
}

multiversion! {
    /// `Σ (x - mean)²` of a slice: 64 lanes of `f32` within blocks of 4096, blocks added in `f64`
    /// (layer norm's second statistics pass, with the mean already known).
    pub fn sum_sq_dev_f32(xs: &[f32], mean: f32) -> f64 {
        let mut total = 0.0f64;
        for block in xs.chunks(4096) {
            let mut acc = [0.0f32; 64];
            let mut c = block.chunks_exact(64);
            for ch in &mut c {
                for i in 0..64 {
                    let d = ch[i] - mean;
                    acc[i] += d * d;
                }
            }
            let tail: f32 = c.remainder().iter().map(|&x| (x - mean) * (x - mean)).sum();
            total += (lanes_sum64(&acc) + tail) as f64;
        }
        total
    }
}

multiversion! {
    /// `xs[i] *= s` for every element.
    pub fn scale_f32(xs: &mut [f32], s: f32) {
        for x in xs.iter_mut() {
            *x *= s;
        }
    }
}

/// Non-temporal (streaming) stores for large outputs that the op writes once and does not read.
///
/// An ordinary store first reads the destination line into the cache (read-for-ownership), so a
/// kernel that reads `n` bytes and writes `n` moves `3n` over the memory bus; streaming stores
/// write whole lines without reading them (`2n`). Worth it only when the output is far larger
/// than what the caches would keep for its consumer: [`worth_it`](stream_store::worth_it)
/// takes outputs of at least [`STREAM_BYTES`](stream_store::STREAM_BYTES). Every task that
/// streamed calls [`fence`](stream_store::fence) before it ends, so its stores are
/// visible to whoever reads the output next.
pub mod stream_store {
    /// Outputs of at least this many bytes are written with streaming stores (the order of
    /// glibc's `memcpy` threshold for non-temporal copies, a fraction of the last-level cache).
    pub const STREAM_BYTES: usize = 8 << 20;

    /// Whether an output of `bytes` should be streamed: large enough, on a CPU with AVX2 (the
    /// 32-byte streaming store used here); `STAPES_CPU_STREAM=0` turns streaming off.
    pub fn worth_it(bytes: usize) -> bool {
        use std::sync::LazyLock;
        static ON: LazyLock<bool> = LazyLock::new(|| {
            let env = std::env::var("STAPES_CPU_STREAM").map(|v| v != "0").unwrap_or(true);
            #[cfg(target_arch = "x86_64")]
            let cpu = std::arch::is_x86_feature_detected!("avx2");
            #[cfg(not(target_arch = "x86_64"))]
            let cpu = false;
            env && cpu
        });
        bytes >= STREAM_BYTES && *ON
    }

    /// Orders this thread's streaming stores before its later stores (`sfence`).
    pub fn fence() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: sfence has no operands and is available on every x86-64 CPU.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        }
    }

    /// `y = (x - mean) * rstd * w + b` for one row (`w`, `b` absent: ones and zeros), the same
    /// operations in the same order as the cached version (bit-identical results), written with
    /// streaming stores where `y` is 32-byte aligned. Call only when [`worth_it`] said so (it
    /// checked AVX2); otherwise this falls back to plain stores.
    pub fn normalise_row(x: &[f32], mean: f32, rstd: f32, w: Option<&[f32]>, b: Option<&[f32]>, y: &mut [f32]) {
        let n = y.len().min(x.len());
        assert!(w.is_none_or(|w| w.len() >= n) && b.is_none_or(|b| b.len() >= n), "normalise_row: lengths");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; every access is within the first n elements of each slice.
            unsafe { normalise_row_avx2(&x[..n], mean, rstd, w, b, &mut y[..n]) };
            return;
        }
        for i in 0..n {
            let v = (x[i] - mean) * rstd;
            let v = if let Some(w) = w { v * w[i] } else { v };
            y[i] = if let Some(b) = b { v + b[i] } else { v };
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn normalise_row_avx2(x: &[f32], mean: f32, rstd: f32, w: Option<&[f32]>, b: Option<&[f32]>, y: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = y.len();
        let scalar = |i: usize, y: &mut [f32]| {
            let v = (x[i] - mean) * rstd;
            let v = if let Some(w) = w { v * w[i] } else { v };
            y[i] = if let Some(b) = b { v + b[i] } else { v };
        };
        // a head of plain stores up to the first 32-byte boundary of y
        let head = (y.as_ptr().align_offset(32)).min(n);
        for i in 0..head {
            scalar(i, y);
        }
        let (vm, vr) = (_mm256_set1_ps(mean), _mm256_set1_ps(rstd));
        let mut i = head;
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        while i + 8 <= n {
            let mut v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), vm), vr);
            if let Some(w) = w {
                v = _mm256_mul_ps(v, _mm256_loadu_ps(w.as_ptr().add(i)));
            }
            if let Some(b) = b {
                v = _mm256_add_ps(v, _mm256_loadu_ps(b.as_ptr().add(i)));
            }
            _mm256_stream_ps(yp.add(i), v);
            i += 8;
        }
        for j in i..n {
            scalar(j, y);
        }
    }
}

/// Pairwise sum of 64 lane accumulators.
#[inline(always)]
fn lanes_sum64(acc: &[f32; 64]) -> f32 {
    let mut a = *acc;
    let mut w = 32;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

/// Pairwise sum of 16 lane accumulators.
#[inline(always)]
fn lanes_sum(acc: &[f32; 16]) -> f32 {
    let mut a = *acc;
    let mut w = 8;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_gelu_match_f64_references() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4; // [-6, 6]
            let e = (erf_f32(x) as f64 - super::super::unary::erf(x as f64)).abs();
            assert!(e < 4e-7, "erf({x}) error {e}");
            worst = worst.max(e);
            let xf = x as f64;
            let g = 0.5 * xf * (1.0 + super::super::unary::erf(xf / 2f64.sqrt()));
            // erf's absolute error, scaled by x/2 (PyTorch's f32 GELU has the same), plus rounding
            // erfc's absolute error (1.5e-7) scaled by |x|/2 in the lower tail, else ~2 ulp
            assert!(
                (gelu_f32(x) as f64 - g).abs() <= 2e-7 * xf.abs() + 3e-7 * g.abs() + 1e-12,
                "gelu({x}): {} vs {g}",
                gelu_f32(x)
            );
            let pdf = (-0.5 * xf * xf).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let dg = 0.5 * (1.0 + super::super::unary::erf(xf / 2f64.sqrt())) + xf * pdf;
            assert!((gelu_grad_f32(x) as f64 - dg).abs() <= 2e-7 + 3e-7 * dg.abs(), "gelu'({x})");
        }
        assert!(worst < 4e-7, "erf worst error {worst}");
        for i in 1..5000 {
            let x = i as f32 * 1e-4; // relative accuracy near 0
            let want = super::super::unary::erf(x as f64);
            assert!(((erf_f32(x) as f64 - want) / want).abs() < 1e-6, "erf({x}) relative");
        }
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert!(erf_f32(f32::NAN).is_nan() && gelu_f32(f32::NAN).is_nan());
        assert_eq!(gelu_f32(-100.0), -0.0);
        assert_eq!(gelu_f32(100.0), 100.0);
        let mut v: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let want: Vec<f32> = v.iter().map(|&x| gelu_f32(x)).collect();
        gelu_f32_inplace(&mut v);
        assert_eq!(v, want);
    }

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        while x < 88.72 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "worst rel err {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn slice_helpers_agree_with_scalar_code() {
        let xs: Vec<f32> = (0..1037).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
        let m = max_f32(&xs);
        assert_eq!(m, xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        let mut d = vec![0.0; xs.len()];
        let s = exp_shift_sum_f32(&xs, m, &mut d);
        let want: f64 = xs.iter().map(|&x| ((x - m) as f64).exp()).sum();
        assert!(((s as f64 - want) / want).abs() < 1e-5);
        assert!(((exp_shift_sum_only_f32(&xs, m) as f64 - want) / want).abs() < 1e-5);
        let sum = sum_f32(&xs) as f64;
        let want: f64 = xs.iter().map(|&x| x as f64).sum();
        assert!((sum - want).abs() < 1e-3);
        let mut with_nan = xs.clone();
        with_nan[500] = f32::NAN;
        assert!(max_f32(&with_nan).is_nan());
    }
}
