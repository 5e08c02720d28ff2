//! Helpers for the tests that hold every CUDA kernel to its Rust CPU reference:
//! [`backends`] lists where to run (the emulator always, the GPU when there is one), and
//! [`assert_close`] compares with per-dtype tolerances and reports the worst element.

use super::emu;
use super::gpu::GpuDevice;
use super::launch::{Backend, DeviceElem};
use std::sync::Once;

/// `|actual - expected| <= atol + rtol * |expected|`, elementwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance, scaled by `|expected|`.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Tolerance {
    /// A tolerance.
    pub const fn new(rtol: f64, atol: f64) -> Self {
        Tolerance { rtol, atol }
    }

    /// The defaults of `torch.testing.assert_close` for the dtype (exact for integers): about
    /// one rounding of the dtype, which is what a kernel computing in `f32` and rounding once
    /// may differ by from a reference that does the same in another order.
    pub fn for_dtype<T: DeviceElem>() -> Self {
        match T::NAME {
            "f64" => Tolerance::new(1e-7, 1e-7),
            "f32" => Tolerance::new(1.3e-6, 1e-5),
            "f16" => Tolerance::new(1e-3, 1e-5),
            "bf16" => Tolerance::new(1.6e-2, 1e-5),
            _ => Tolerance::new(0.0, 0.0),
        }
    }
}

/// Compares elementwise; NaN matches NaN and infinities must match exactly. On failure, says
/// how many elements differ and which one differs most (relative to its allowance).
pub fn check_close<T: DeviceElem>(actual: &[T], expected: &[T], tol: Tolerance) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!("length {} != expected length {}", actual.len(), expected.len()));
    }
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (a.as_f64(), e.as_f64());
        let ok = if a.is_nan() || e.is_nan() {
            a.is_nan() && e.is_nan()
        } else if a.is_infinite() || e.is_infinite() {
            a == e
        } else {
            (a - e).abs() <= tol.atol + tol.rtol * e.abs()
        };
        if !ok {
            bad += 1;
            let allowed = tol.atol + tol.rtol * e.abs();
            let score = if (a - e).is_nan() { f64::INFINITY } else { (a - e).abs() / allowed.max(f64::MIN_POSITIVE) };
            if worst.is_none_or(|(_, s)| score > s) {
                worst = Some((i, score));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => {
            let (a, e) = (actual[i].as_f64(), expected[i].as_f64());
            Err(format!(
                "{bad} of {} {} elements differ (rtol {:e}, atol {:e}); worst at index {i}: actual {a:?}, expected {e:?}, \
                 |diff| {:e}",
                actual.len(),
                T::NAME,
                tol.rtol,
                tol.atol,
                (a - e).abs()
            ))
        }
    }
}

/// [`check_close`], panicking with `context` (say the kernel, the shape and
/// [`Backend::describe`], which carries the emulator's seed) on failure.
#[track_caller]
pub fn assert_close<T: DeviceElem>(actual: &[T], expected: &[T], tol: Tolerance, context: &str) {
    if let Err(e) = check_close(actual, expected, tol) {
        panic!("{context}: {e}");
    }
}

/// The backends a parity test runs on: the emulator (when built), then GPU 0 when one can be
/// opened. Without a GPU it prints, once per process, why the GPU half is skipped.
/// (With `STAPES_TEST_CUDA=gpu` a missing GPU panics, so the GPU suite cannot pass on the
/// emulator alone.)
pub fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    if emu::is_built() {
        out.push(Backend::emulator());
    }
    match GpuDevice::first() {
        Ok(d) => out.push(Backend::Gpu(d)),
        Err(why) => {
            // The GPU suite (scripts/gpu-suite.sh) sets STAPES_TEST_CUDA=gpu: there a missing GPU
            // must fail the run instead of passing on the emulator alone.
            if std::env::var("STAPES_TEST_CUDA").is_ok_and(|v| v.trim() == "gpu") {
                panic!("STAPES_TEST_CUDA=gpu but no GPU can be used: {why}");
            }
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| eprintln!("note: CUDA kernels checked on the emulator only; no GPU: {why}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_and_not_close() {
        let t = Tolerance::new(1e-3, 0.0);
        assert!(check_close(&[1.0f32, f32::NAN, f32::INFINITY], &[1.0005, f32::NAN, f32::INFINITY], t).is_ok());
        let e = check_close(&[1.0f32, 2.0, 3.1], &[1.0, 2.01, 3.0], t).unwrap_err();
        assert!(e.contains("2 of 3") && e.contains("index 2"), "{e}");
        assert!(check_close(&[f32::NAN], &[1.0f32], t).is_err());
        assert!(check_close(&[f32::INFINITY], &[f32::NEG_INFINITY], t).is_err());
        assert!(check_close(&[1.0f32], &[1.0, 2.0], t).is_err());
    }
}
