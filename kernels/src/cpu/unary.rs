//! Elementwise maps over contiguous slices, split over rayon in chunks of
//! [`PAR_CHUNK`] elements. The closure is monomorphised into the loop, so a
//! simple body (add, mul, select) vectorises. Strided inputs are made contiguous by the caller.

use super::PAR_CHUNK;
use rayon::prelude::*;

/// `dst[i] = f(src[i])`.
pub fn unary_map<T, U, F>(src: &[T], dst: &mut [U], f: F)
where
    T: Copy + Send + Sync,
    U: Copy + Send + Sync,
    F: Fn(T) -> U + Sync + Send,
{
    assert_eq!(src.len(), dst.len(), "unary_map: length mismatch");
    if src.len() <= PAR_CHUNK {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f(s);
        }
        return;
    }
    dst.par_chunks_mut(PAR_CHUNK).zip(src.par_chunks(PAR_CHUNK)).for_each(|(d, s)| {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = f(s);
        }
    });
}

/// `xs[i] = f(xs[i])` in place.
pub fn unary_map_inplace<T, F>(xs: &mut [T], f: F)
where
    T: Copy + Send + Sync,
    F: Fn(T) -> T + Sync + Send,
{
    if xs.len() <= PAR_CHUNK {
        for x in xs.iter_mut() {
            *x = f(*x);
        }
        return;
    }
    xs.par_chunks_mut(PAR_CHUNK).for_each(|c| {
        for x in c.iter_mut() {
            *x = f(*x);
        }
    });
}

/// Runs `f` over matching chunks of `dst` and `src` in parallel (for kernels with their own
/// vectorised inner loop, such as [`exp_f32_inplace`](super::vmath::exp_f32_inplace)).
pub fn par_chunked<T: Send + Sync>(xs: &mut [T], f: impl Fn(&mut [T]) + Sync + Send) {
    if xs.len() <= PAR_CHUNK {
        f(xs);
    } else {
        xs.par_chunks_mut(PAR_CHUNK).for_each(f);
    }
}

/// The error function, |error| < 1.2e-7 (W. J. Cody's rational approximations, as in
/// glibc's `erf`, evaluated in `f64`).
pub fn erf(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 is too coarse for parity; use the complementary series split.
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 0.5 {
        // Taylor series of erf around 0 (converges fast for |x| < 0.5)
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax < 6.0 {
        1.0 - erfc_cf(ax)
    } else {
        1.0
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// erfc(x) for x >= 0.5 by Lentz's continued fraction.
fn erfc_cf(x: f64) -> f64 {
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + 2/(x + ...)))))
    let tiny = 1e-300;
    let mut f = x;
    if f == 0.0 {
        f = tiny;
    }
    let mut c = f;
    let mut d = 0.0;
    for i in 1..500 {
        let a = i as f64 * 0.5;
        d = x + a * d;
        if d == 0.0 {
            d = tiny;
        }
        c = x + a / c;
        if c == 0.0 {
            c = tiny;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        // values from tables of erf
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.5, -0.9661051464753108),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {} want {want}", erf(x));
        }
    }

    #[test]
    fn map_parallel_matches_serial() {
        let src: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
        let mut dst = vec![0.0; src.len()];
        unary_map(&src, &mut dst, |x| x * 2.0);
        assert!(dst.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32));
    }
}
