//! The normalisation kernels of `kernels/cuda/norm.cu` against the Rust CPU kernels
//! (`stapes_kernels::cpu::norm`), on the emulator (and on the GPU when one is present).
//!
//! Layer norm: rows from 1 to 70 001 columns (one block loops over a long row), more rows than
//! the emulator's row grid (blocks loop over rows), enough rows that the parameter gradients
//! are reduced in several chunks, data far from zero (mean 10, where a one-pass variance would
//! cancel), every combination of optional weight, bias and parameter gradients.
//! Batch norm: `BatchNorm1d` (`s = 1`, more channels than the grid), planes longer and shorter
//! than a block, training with both, one or no running statistics, inference, and the
//! backward in both modes with and without parameter gradients.
//!
//! The GPU side accumulates in `f32` (Welford, tree sums), the CPU in `f64`: tolerances are a
//! few `f32` roundings of the quantities involved (stated at each comparison).

use stapes_kernels::cpu::norm::{batch_norm_backward, batch_norm_forward, layer_norm_backward, layer_norm_forward};
use stapes_kernels::cuda::emu::EmuSchedule;
use stapes_kernels::cuda::norm;
use stapes_kernels::cuda::parity::{assert_close, backends, Tolerance};
use stapes_kernels::cuda::{Backend, DeviceBuffer};

/// Deterministic values uniform in `[lo, hi)`.
fn values(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            lo + (hi - lo) * ((s >> 8) as f32 / (1u32 << 24) as f32)
        })
        .collect()
}

/// `(rows, cols)`.
const LN_SHAPES: &[(usize, usize)] =
    &[(1, 1), (3, 7), (5, 64), (2, 33), (4, 255), (3, 257), (2, 2500), (1, 70_001), (300, 17), (40, 300), (700, 9)];

const EPS: f64 = 1e-5;

/// Normalised values are O(1) after rounding x ~ 10 to f32 (ulp 1e-6): the mean and rstd agree
/// to a few f32 ulps, so y (|y| <~ 3) to about 2e-6 absolute.
fn ln_forward_tol() -> Tolerance {
    Tolerance::new(2e-6, 3e-6)
}

fn upload_opt(backend: &Backend, v: &Option<Vec<f32>>) -> Option<DeviceBuffer<f32>> {
    v.as_ref().map(|v| backend.upload(v).unwrap())
}

fn check_layer_norm(backend: &Backend, rows: usize, cols: usize, affine: (bool, bool), grads: (bool, bool)) {
    let ctx = |what: &str| {
        format!(
            "layer_norm {what} [{rows}, {cols}] weight/bias {affine:?} grads {grads:?} on the {}",
            backend.describe()
        )
    };
    let x: Vec<f32> = values(rows * cols, 1, -3.0, 3.0).iter().map(|v| v + 10.0).collect();
    let w = affine.0.then(|| values(cols, 2, 0.5, 1.5));
    let b = affine.1.then(|| values(cols, 3, -1.0, 1.0));
    let (mut y, mut mean, mut rstd) = (vec![0.0f32; rows * cols], vec![0.0f32; rows], vec![0.0f32; rows]);
    layer_norm_forward(&x, rows, cols, w.as_deref(), b.as_deref(), EPS, &mut y, &mut mean, &mut rstd);
    let d_x = backend.upload(&x).unwrap();
    let (d_w, d_b) = (upload_opt(backend, &w), upload_opt(backend, &b));
    let mut d_y = backend.upload(&vec![f32::NAN; rows * cols]).unwrap();
    let (mut d_mean, mut d_rstd) = (backend.zeros::<f32>(rows).unwrap(), backend.zeros::<f32>(rows).unwrap());
    norm::layer_norm_forward_f32(
        backend,
        &d_x,
        rows,
        cols,
        d_w.as_ref(),
        d_b.as_ref(),
        EPS,
        &mut d_y,
        &mut d_mean,
        &mut d_rstd,
    )
    .unwrap();
    assert_close(&backend.download(&d_y).unwrap(), &y, ln_forward_tol(), &ctx("forward y"));
    assert_close(&backend.download(&d_mean).unwrap(), &mean, Tolerance::new(2e-6, 0.0), &ctx("forward mean"));
    assert_close(&backend.download(&d_rstd).unwrap(), &rstd, Tolerance::new(4e-6, 0.0), &ctx("forward rstd"));

    // backward from the CPU's statistics
    let gy = values(rows * cols, 4, -1.0, 1.0);
    let mut gx = vec![0.0f32; rows * cols];
    let mut gw = grads.0.then(|| vec![0.0f32; cols]);
    let mut gb = grads.1.then(|| vec![0.0f32; cols]);
    layer_norm_backward(&x, &gy, rows, cols, w.as_deref(), &mean, &rstd, &mut gx, gw.as_deref_mut(), gb.as_deref_mut());
    let d_gy = backend.upload(&gy).unwrap();
    let (d_mean, d_rstd) = (backend.upload(&mean).unwrap(), backend.upload(&rstd).unwrap());
    let mut d_gx = backend.upload(&vec![f32::NAN; rows * cols]).unwrap();
    let mut d_gw = grads.0.then(|| backend.upload(&vec![f32::NAN; cols]).unwrap());
    let mut d_gb = grads.1.then(|| backend.upload(&vec![f32::NAN; cols]).unwrap());
    norm::layer_norm_backward_f32(
        backend,
        &d_x,
        &d_gy,
        rows,
        cols,
        d_w.as_ref(),
        &d_mean,
        &d_rstd,
        &mut d_gx,
        d_gw.as_mut(),
        d_gb.as_mut(),
    )
    .unwrap();
    // grad_x = rstd (d - mean(d) - xhat mean(d xhat)): |d| <~ 1.5, rstd ~ 0.6, and the two
    // means are f32 sums of cols terms (f64 on the CPU): a few 1e-6 absolute
    assert_close(&backend.download(&d_gx).unwrap(), &gx, Tolerance::new(2e-6, 3e-6), &ctx("backward grad_x"));
    // column sums over `rows` terms of size <~ 2: f32 tree order vs f64
    let sum_tol = Tolerance::new(1e-5, 1e-6 * rows as f64 + 1e-6);
    if let (Some(d), Some(want)) = (&d_gw, &gw) {
        assert_close(&backend.download(d).unwrap(), want, sum_tol, &ctx("backward grad_weight"));
    }
    if let (Some(d), Some(want)) = (&d_gb, &gb) {
        assert_close(&backend.download(d).unwrap(), want, sum_tol, &ctx("backward grad_bias"));
    }
}

#[test]
fn layer_norm_matches_cpu() {
    for backend in backends() {
        for &(rows, cols) in LN_SHAPES {
            check_layer_norm(&backend, rows, cols, (true, true), (true, true));
        }
        for &(rows, cols) in &[(3, 7), (300, 17), (2, 257)] {
            for affine in [(false, false), (true, false), (false, true)] {
                for grads in [(false, false), (true, false), (false, true)] {
                    check_layer_norm(&backend, rows, cols, affine, grads);
                }
            }
        }
    }
}

/// `(n, c, s)`.
const BN_SHAPES: &[(usize, usize, usize)] =
    &[(2, 3, 5), (4, 1, 1), (8, 37, 1), (3, 2, 777), (1, 1, 5000), (2, 5, 33), (16, 4, 31), (2, 3, 256)];

#[derive(Clone, Copy, Debug)]
struct BnCase {
    training: bool,
    affine: (bool, bool),
    running: (bool, bool),
    grads: (bool, bool),
}

fn check_batch_norm(backend: &Backend, (n, c, s): (usize, usize, usize), case: BnCase) {
    let ctx = |what: &str| format!("batch_norm {what} [{n}, {c}, {s}] {case:?} on the {}", backend.describe());
    let len = n * c * s;
    let x: Vec<f32> = values(len, 11, -2.0, 2.0).iter().enumerate().map(|(i, v)| v + (i / s % c) as f32).collect();
    let w = case.affine.0.then(|| values(c, 12, 0.5, 1.5));
    let b = case.affine.1.then(|| values(c, 13, -1.0, 1.0));
    let rm0 = values(c, 14, -0.5, 0.5);
    let rv0 = values(c, 15, 0.5, 2.0);
    let (momentum, eps) = (0.1, 1e-5);
    // CPU
    let mut rm = case.running.0.then(|| rm0.clone());
    let mut rv = case.running.1.then(|| rv0.clone());
    let (mut y, mut sm, mut sr) = (vec![0.0f32; len], vec![0.0f32; c], vec![0.0f32; c]);
    batch_norm_forward(
        &x,
        n,
        c,
        s,
        w.as_deref(),
        b.as_deref(),
        rm.as_deref_mut(),
        rv.as_deref_mut(),
        case.training,
        momentum,
        eps,
        &mut y,
        &mut sm,
        &mut sr,
    );
    // device
    let d_x = backend.upload(&x).unwrap();
    let (d_w, d_b) = (upload_opt(backend, &w), upload_opt(backend, &b));
    let mut d_rm = case.running.0.then(|| backend.upload(&rm0).unwrap());
    let mut d_rv = case.running.1.then(|| backend.upload(&rv0).unwrap());
    let mut d_y = backend.upload(&vec![f32::NAN; len]).unwrap();
    let (mut d_sm, mut d_sr) = (backend.zeros::<f32>(c).unwrap(), backend.zeros::<f32>(c).unwrap());
    norm::batch_norm_forward_f32(
        backend,
        &d_x,
        (n, c, s),
        d_w.as_ref(),
        d_b.as_ref(),
        d_rm.as_mut(),
        d_rv.as_mut(),
        case.training,
        momentum,
        eps,
        &mut d_y,
        &mut d_sm,
        &mut d_sr,
    )
    .unwrap();
    // statistics of up to 15 000 values in f32 Welford vs f64: a few 1e-6 relative; |mean| up to
    // 37, so the mean's error is ~1e-6 absolute
    assert_close(&backend.download(&d_sm).unwrap(), &sm, Tolerance::new(2e-6, 2e-6), &ctx("save_mean"));
    assert_close(&backend.download(&d_sr).unwrap(), &sr, Tolerance::new(4e-6, 0.0), &ctx("save_rstd"));
    if let (Some(d), Some(want)) = (&d_rm, &rm) {
        assert_close(&backend.download(d).unwrap(), want, Tolerance::new(1e-5, 1e-6), &ctx("running_mean"));
    }
    if let (Some(d), Some(want)) = (&d_rv, &rv) {
        assert_close(&backend.download(d).unwrap(), want, Tolerance::new(2e-5, 1e-6), &ctx("running_var"));
    }
    // y = x·scale + shift with |x·scale| up to ~40·0.6: a few ulps of 24 absolute
    assert_close(&backend.download(&d_y).unwrap(), &y, Tolerance::new(2e-6, 6e-6), &ctx("y"));

    // backward from the CPU's saved statistics
    let gy = values(len, 16, -1.0, 1.0);
    let mut gx = vec![0.0f32; len];
    let mut gw = case.grads.0.then(|| vec![0.0f32; c]);
    let mut gb = case.grads.1.then(|| vec![0.0f32; c]);
    batch_norm_backward(
        &x,
        &gy,
        n,
        c,
        s,
        w.as_deref(),
        &sm,
        &sr,
        case.training,
        &mut gx,
        gw.as_deref_mut(),
        gb.as_deref_mut(),
    );
    let d_gy = backend.upload(&gy).unwrap();
    let (d_sm, d_sr) = (backend.upload(&sm).unwrap(), backend.upload(&sr).unwrap());
    let mut d_gx = backend.upload(&vec![f32::NAN; len]).unwrap();
    let mut d_gw = case.grads.0.then(|| backend.upload(&vec![f32::NAN; c]).unwrap());
    let mut d_gb = case.grads.1.then(|| backend.upload(&vec![f32::NAN; c]).unwrap());
    norm::batch_norm_backward_f32(
        backend,
        &d_x,
        &d_gy,
        (n, c, s),
        d_w.as_ref(),
        &d_sm,
        &d_sr,
        case.training,
        &mut d_gx,
        d_gw.as_mut(),
        d_gb.as_mut(),
    )
    .unwrap();
    assert_close(&backend.download(&d_gx).unwrap(), &gx, Tolerance::new(2e-6, 3e-6), &ctx("grad_x"));
    // per-channel sums of n·s terms of size <~ 2: f32 tree order vs f64
    let sum_tol = Tolerance::new(1e-5, 1e-6 * (n * s) as f64 + 1e-6);
    if let (Some(d), Some(want)) = (&d_gw, &gw) {
        assert_close(&backend.download(d).unwrap(), want, sum_tol, &ctx("grad_weight"));
    }
    if let (Some(d), Some(want)) = (&d_gb, &gb) {
        assert_close(&backend.download(d).unwrap(), want, sum_tol, &ctx("grad_bias"));
    }
}

#[test]
fn batch_norm_matches_cpu() {
    let full = BnCase { training: true, affine: (true, true), running: (true, true), grads: (true, true) };
    for backend in backends() {
        for &shape in BN_SHAPES {
            check_batch_norm(&backend, shape, full);
            check_batch_norm(&backend, shape, BnCase { training: false, ..full });
        }
        let cases = [
            BnCase { training: true, affine: (false, false), running: (false, false), grads: (false, false) },
            BnCase { training: true, affine: (true, false), running: (true, false), grads: (true, false) },
            BnCase { training: true, affine: (false, true), running: (false, true), grads: (false, true) },
            BnCase { training: false, affine: (false, true), running: (true, true), grads: (false, false) },
            BnCase { training: false, affine: (true, false), running: (true, true), grads: (false, true) },
        ];
        for case in cases {
            for &shape in &BN_SHAPES[..3] {
                check_batch_norm(&backend, shape, case);
            }
        }
    }
}

#[test]
fn norm_matches_cpu_with_random_schedule() {
    let backend = Backend::emulator_with(EmuSchedule::random(0x4e02));
    for &(rows, cols) in &[(3, 7), (4, 255), (300, 17), (700, 9), (2, 2500)] {
        check_layer_norm(&backend, rows, cols, (true, true), (true, true));
    }
    let full = BnCase { training: true, affine: (true, true), running: (true, true), grads: (true, true) };
    for &shape in BN_SHAPES {
        check_batch_norm(&backend, shape, full);
    }
}

#[test]
fn norm_shapes_are_checked() {
    let backend = Backend::emulator();
    let x = backend.zeros::<f32>(12).unwrap();
    let (mut y, mut m, mut r) =
        (backend.zeros::<f32>(12).unwrap(), backend.zeros(3).unwrap(), backend.zeros(4).unwrap());
    let e = norm::layer_norm_forward_f32(&backend, &x, 3, 4, None, None, 1e-5, &mut y, &mut m, &mut r).unwrap_err();
    assert!(e.to_string().contains("rstd has 4 elements, expected 3"), "{e}");
    let (mut sm, mut sr) = (backend.zeros::<f32>(3).unwrap(), backend.zeros::<f32>(3).unwrap());
    let e = norm::batch_norm_forward_f32(
        &backend,
        &x,
        (2, 3, 2),
        None,
        None,
        None,
        None,
        false,
        0.1,
        1e-5,
        &mut y,
        &mut sm,
        &mut sr,
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs running_mean and running_var"), "{e}");
}
