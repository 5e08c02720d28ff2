//! Axis ticks: "nice" values (1, 2 or 5 times a power of ten) on linear axes, decades (and
//! their 2× and 5× multiples when there are few) on logarithmic ones, and their labels.

/// Most ticks an axis gets, whatever it is asked for.
const MAX_TICKS: usize = 200;

/// The smallest step of the form 1, 2 or 5 × 10^k that splits `range` into at most about
/// `target` intervals. Returns 1 for a range that is not finite and positive.
pub fn nice_step(range: f64, target: usize) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 + 1e-9 {
        1.0
    } else if norm <= 2.0 + 1e-9 {
        2.0
    } else if norm <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The multiples of [`nice_step`]`(hi - lo, target)` inside `[lo, hi]`, ascending. Empty
/// when the range is not finite or `hi < lo`; `[lo]` when `lo == hi`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    if hi == lo {
        return vec![lo];
    }
    let step = nice_step(hi - lo, target);
    ticks_with_step(lo, hi, step)
}

/// The multiples of `step` inside `[lo, hi]` (with a little slack for round-off), at most
/// [`MAX_TICKS`] of them.
pub(crate) fn ticks_with_step(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if !(first.is_finite() && last.is_finite()) || last < first || last - first > MAX_TICKS as f64 {
        return Vec::new();
    }
    // Round to the step's decimals, so that 3 * 0.2 is 0.6, not 0.6000000000000001.
    let decimals = (-(step.log10() + 1e-9).floor()).clamp(0.0, 300.0) as i32;
    let p = 10f64.powi(decimals);
    (0..=(last - first) as usize)
        .map(|k| {
            let v = (first + k as f64) * step;
            let v = if decimals > 0 { (v * p).round() / p } else { v };
            if v == 0.0 {
                0.0 // not -0
            } else {
                v
            }
        })
        .collect()
}

/// `[lo, hi]` widened to the nearest multiples of the nice step for `target` ticks; a range
/// of zero width is first widened around its value.
pub fn nice_range(lo: f64, hi: f64, target: usize) -> (f64, f64) {
    let (mut lo, mut hi) = (lo, hi);
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return (0.0, 1.0);
    }
    if hi == lo {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= d;
        hi += d;
    }
    let step = nice_step(hi - lo, target);
    let (a, b) = ((lo / step + 1e-9).floor() * step, (hi / step - 1e-9).ceil() * step);
    if a.is_finite() && b.is_finite() && b > a {
        (a, b)
    } else {
        (lo, hi)
    }
}

/// Ticks for a logarithmic axis over `[lo, hi]` (both > 0): every decade (every k-th when
/// there are more than 10), plus 2× and 5× of each when the range spans at most 3 decades.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi >= lo) {
        return Vec::new();
    }
    let e0 = (lo.log10() + 1e-9).floor() as i32;
    let e1 = (hi.log10() - 1e-9).ceil() as i32;
    let decades = (e1 - e0).max(1);
    let every = (decades as usize).div_ceil(10).max(1);
    let mults: &[f64] = if decades <= 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let mut out = Vec::new();
    for e in (e0..=e1).step_by(every) {
        for &m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    out
}

/// The label of tick `v` on an axis whose ticks are `step` apart: as many decimals as the
/// step needs, or scientific notation (`2.5e-5`, `1e6`) for very small or large values.
pub fn format_tick(v: f64, step: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let step = if step.is_finite() && step > 0.0 { step } else { v.abs().max(1.0) };
    if v.abs() < step * 1e-6 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        let exp = a.log10().floor();
        let mantissa = v / 10f64.powf(exp);
        let digits = (exp - (step.log10() + 1e-9).floor()).clamp(0.0, 6.0) as usize;
        let m = trim_zeros(format!("{mantissa:.digits$}"));
        return format!("{m}e{}", exp as i32);
    }
    let decimals = (-(step.log10() + 1e-9).floor()).clamp(0.0, 10.0) as usize;
    format!("{v:.decimals$}")
}

/// The label of a tick on a logarithmic axis: plain decimals from 0.001 to 99999, else
/// scientific notation.
pub fn format_log_tick(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return format!("{v}");
    }
    let exp = (v.log10() + 1e-9).floor();
    if (-3.0..5.0).contains(&exp) {
        let decimals = (-exp).max(0.0) as usize;
        trim_zeros(format!("{v:.decimals$}"))
    } else {
        let mantissa = trim_zeros(format!("{:.2}", v / 10f64.powf(exp)));
        format!("{mantissa}e{}", exp as i32)
    }
}

/// `"2.50"` → `"2.5"`, `"3.00"` → `"3"`; integers are left alone.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_all_close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1e-300), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_all_close(
            &[nice_step(10.0, 5), nice_step(1.0, 4), nice_step(3.4, 5), nice_step(0.07, 7), nice_step(12000.0, 5)],
            &[2.0, 0.5, 1.0, 0.01, 5000.0],
        );
        assert_eq!(nice_step(f64::NAN, 5), 1.0);
    }

    #[test]
    fn ticks_cover_the_range_without_round_off() {
        // Exact equality: the ticks are rounded to the step's decimals.
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(-0.3, 0.3, 6), vec![-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3]);
        assert_eq!(nice_ticks(1.0, 10.0, 5), vec![2.0, 4.0, 6.0, 8.0, 10.0]);
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
        assert_eq!(nice_ticks(2.0, 2.0, 5), vec![2.0]);
        let (a, b) = nice_range(0.13, 3.4, 6);
        assert_all_close(&[a, b], &[0.0, 4.0]);
        let (a, b) = nice_range(5.0, 5.0, 4);
        assert_all_close(&[a, b], &[4.5, 5.5]);
        assert!(nice_ticks(0.0, 1e300, 1).len() <= MAX_TICKS + 1);
    }

    #[test]
    fn log_ticks_are_decades_and_their_multiples() {
        assert_all_close(&log_ticks(0.01, 1.0), &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        assert_all_close(&log_ticks(1.0, 1e6), &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]);
        assert_eq!(log_ticks(1e-30, 1e30).len(), 11);
        assert!(log_ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn labels_use_the_decimals_the_step_needs() {
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(2.0, 0.5), "2.0");
        assert_eq!(format_tick(1500.0, 500.0), "1500");
        assert_eq!(format_tick(-1e-17, 0.1), "0");
        assert_eq!(format_tick(2.5e-5, 5e-6), "2.5e-5");
        assert_eq!(format_tick(3e6, 1e6), "3e6");
        assert_eq!(format_log_tick(0.001), "0.001");
        assert_eq!(format_log_tick(200.0), "200");
        assert_eq!(format_log_tick(1e-5), "1e-5");
        assert_eq!(format_log_tick(5e7), "5e7");
    }
}
