//! Attention of one new query over cached keys and values: the inner loop of incremental
//! (token-by-token) decoding, where a prefix's keys and values sit in a cache, one row per
//! position, and each step attends with a single query per prefix.

use super::vmath::{self, exp_f32};

/// `a · b` in 16 independent lanes (one AVX-512 register; two AVX2 ones), then the tail.
#[inline(always)]
fn dot16(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

vmath::multiversion! {
    /// Multi-head attention of one query over `keys.len()` positions. `q` and every `keys[j]`
    /// and `values[j]` hold `nhead` heads of `q.len() / nhead` values each (the layout of
    /// `MultiheadAttention`'s projections); per head `h`, `out_h = Σ_j softmax_j(scale ·
    /// q_h · k_{j,h}) · v_{j,h}`. `scores` is scratch of at least `keys.len()` values.
    ///
    /// # Panics
    /// If the lengths disagree (a caller bug).
    pub fn attend_cached(
        q: &[f32],
        keys: &[&[f32]],
        values: &[&[f32]],
        nhead: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32]
    ) {
        let e = q.len();
        let t = keys.len();
        assert!(nhead > 0 && e.is_multiple_of(nhead) && out.len() == e, "attend_cached: {e} values, {nhead} heads");
        assert!(values.len() == t && scores.len() >= t, "attend_cached: {t} keys, {} values", values.len());
        assert!(keys.iter().chain(values).all(|r| r.len() >= e), "attend_cached: a cache row shorter than {e}");
        let dh = e / nhead;
        let scores = &mut scores[..t];
        for h in 0..nhead {
            let cols = h * dh..(h + 1) * dh;
            let qh = &q[cols.clone()];
            for (s, k) in scores.iter_mut().zip(keys) {
                *s = dot16(qh, &k[cols.clone()]) * scale;
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = exp_f32(*s - max);
                sum += *s;
            }
            let o = &mut out[cols.clone()];
            o.fill(0.0);
            let inv = 1.0 / sum;
            for (&p, v) in scores.iter().zip(values) {
                let w = p * inv;
                for (a, &b) in o.iter_mut().zip(&v[cols.clone()]) {
                    *a += w * b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain f64 evaluation of the same formula, for head sizes on and off the lane
    /// width.
    #[test]
    fn attend_cached_matches_the_formula() {
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32 * 4.0
        };
        for (nhead, dh, t) in [(4, 16, 9), (2, 24, 1), (3, 5, 17), (1, 64, 40)] {
            let e = nhead * dh;
            let q: Vec<f32> = (0..e).map(|_| rnd()).collect();
            let kv: Vec<Vec<f32>> = (0..2 * t).map(|_| (0..e).map(|_| rnd()).collect()).collect();
            let keys: Vec<&[f32]> = kv[..t].iter().map(Vec::as_slice).collect();
            let values: Vec<&[f32]> = kv[t..].iter().map(Vec::as_slice).collect();
            let scale = 1.0 / (dh as f32).sqrt();
            let mut out = vec![f32::NAN; e];
            let mut scores = vec![0f32; t + 3];
            attend_cached(&q, &keys, &values, nhead, scale, &mut scores, &mut out);
            for h in 0..nhead {
                let c = h * dh..(h + 1) * dh;
                let s: Vec<f64> = keys
                    .iter()
                    .map(|k| c.clone().map(|i| f64::from(q[i]) * f64::from(k[i])).sum::<f64>() * f64::from(scale))
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|a| (a - m).exp()).sum();
                for i in c.clone() {
                    let want: f64 = s.iter().zip(&values).map(|(a, v)| (a - m).exp() / z * f64::from(v[i])).sum();
                    assert!((f64::from(out[i]) - want).abs() < 1e-5, "{nhead}x{dh}, t {t}: {} vs {want}", out[i]);
                }
            }
        }
    }
}
