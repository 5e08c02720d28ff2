//! The pooling kernels of `kernels/cuda/pool.cu` against the Rust CPU kernels
//! (`stapes_kernels::cpu::pool`), on the emulator (and on the GPU when one is present).
//!
//! Geometries: strides, paddings, dilations, both `ceil_mode`s and both `count_include_pad`s,
//! windows larger than the input, a single pixel, a 1-D row, overlapping windows (several
//! outputs share an input, so backward sums), stride larger than the window (inputs no window
//! reads), and more elements than the emulator's grid. Inputs include ties, NaNs and -inf
//! planes (argmax rules). Max pooling and both backward passes visit their windows in the CPU
//! reference's order, so the results match exactly (max pool) or to the last bit of f32 sums
//! in the same order (average pool).

use stapes_kernels::cpu::pool::{
    avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward, Pool2dGeom,
};
use stapes_kernels::cuda::emu::EmuSchedule;
use stapes_kernels::cuda::parity::{assert_close, backends, Tolerance};
use stapes_kernels::cuda::pool;
use stapes_kernels::cuda::Backend;

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

fn geom(
    (n, c, h, w): (usize, usize, usize, usize),
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    ceil_mode: bool,
    count_include_pad: bool,
) -> Pool2dGeom {
    Pool2dGeom { n, c, h, w, kh, kw, stride, padding, dilation, ceil_mode, count_include_pad }
}

/// Geometries valid for both pools (dilation 1), each with both ceil modes and divisors.
fn avg_geoms() -> Vec<Pool2dGeom> {
    let mut v = Vec::new();
    for ceil in [false, true] {
        for cip in [false, true] {
            v.push(geom((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), ceil, cip));
            v.push(geom((1, 2, 5, 5), (2, 2), (2, 2), (1, 1), (1, 1), ceil, cip));
            v.push(geom((2, 2, 8, 6), (3, 2), (2, 3), (1, 1), (1, 1), ceil, cip));
            v.push(geom((1, 3, 6, 10), (2, 4), (1, 3), (0, 2), (1, 1), ceil, cip));
            v.push(geom((2, 1, 10, 11), (3, 3), (3, 2), (0, 1), (1, 1), ceil, cip));
            v.push(geom((1, 2, 4, 4), (4, 4), (1, 1), (2, 2), (1, 1), ceil, cip));
            v.push(geom((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), ceil, cip));
            v.push(geom((3, 1, 1, 33), (1, 3), (1, 2), (0, 1), (1, 1), ceil, cip));
            v.push(geom((1, 2, 3, 2), (5, 5), (2, 2), (2, 2), (1, 1), ceil, cip));
            v.push(geom((1, 2, 9, 9), (2, 2), (4, 3), (0, 0), (1, 1), ceil, cip));
        }
    }
    // more outputs and inputs than the emulator's 2048-thread grid
    v.push(geom((2, 3, 40, 37), (3, 3), (1, 1), (1, 1), (1, 1), false, true));
    v
}

fn max_geoms() -> Vec<Pool2dGeom> {
    let mut v = avg_geoms();
    for ceil in [false, true] {
        v.push(geom((2, 2, 9, 11), (3, 3), (2, 2), (1, 1), (2, 2), ceil, true));
        v.push(geom((1, 3, 10, 7), (2, 3), (1, 2), (1, 1), (3, 2), ceil, true));
        v.push(geom((1, 1, 1, 20), (1, 3), (1, 2), (0, 1), (1, 2), ceil, true));
    }
    v
}

fn ctx(what: &str, g: &Pool2dGeom, backend: &Backend) -> String {
    format!("{what} {g:?} on the {}", backend.describe())
}

/// Inputs with ties (values quantised to eighths), a NaN or two, and an all -inf plane.
fn pool_input(g: &Pool2dGeom) -> Vec<f32> {
    let hw = g.h * g.w;
    let mut x: Vec<f32> = values(g.n * g.c * hw, 7, -2.0, 2.0).iter().map(|v| (v * 8.0).round() / 8.0).collect();
    if x.len() > 5 {
        let last = x.len() - 2;
        x[3] = f32::NAN;
        x[last] = f32::NAN;
    }
    if g.n * g.c > 1 {
        x[hw..2 * hw].fill(f32::NEG_INFINITY);
    }
    x
}

fn check_max(backend: &Backend, g: &Pool2dGeom) {
    let x = pool_input(g);
    let out_len = g.n * g.c * g.out_h() * g.out_w();
    let mut want = vec![0.0f32; out_len];
    let mut want_idx = vec![0i64; out_len];
    max_pool2d_forward(g, &x, &mut want, &mut want_idx);
    let d_x = backend.upload(&x).unwrap();
    let mut d_out = backend.zeros::<f32>(out_len).unwrap();
    let mut d_idx = backend.zeros::<i64>(out_len).unwrap();
    pool::max_pool2d_forward_f32(backend, g, &d_x, &mut d_out, &mut d_idx).unwrap();
    assert_close(
        &backend.download(&d_out).unwrap(),
        &want,
        Tolerance::new(0.0, 0.0),
        &ctx("max_pool2d forward", g, backend),
    );
    assert_eq!(backend.download(&d_idx).unwrap(), want_idx, "{}", ctx("max_pool2d argmax", g, backend));

    let go = values(out_len, 8, -1.0, 1.0);
    let mut want_gi = vec![0.0f32; x.len()];
    max_pool2d_backward(g, &go, &want_idx, &mut want_gi);
    let d_go = backend.upload(&go).unwrap();
    let mut d_gi = backend.upload(&vec![f32::NAN; x.len()]).unwrap();
    pool::max_pool2d_backward_f32(backend, g, &d_go, &d_idx, &mut d_gi).unwrap();
    // the same additions in the same order: exact
    assert_close(
        &backend.download(&d_gi).unwrap(),
        &want_gi,
        Tolerance::new(0.0, 0.0),
        &ctx("max_pool2d backward", g, backend),
    );
}

fn check_avg(backend: &Backend, g: &Pool2dGeom) {
    let x = values(g.n * g.c * g.h * g.w, 9, -2.0, 2.0);
    let out_len = g.n * g.c * g.out_h() * g.out_w();
    let mut want = vec![0.0f32; out_len];
    avg_pool2d_forward(g, &x, &mut want);
    let d_x = backend.upload(&x).unwrap();
    let mut d_out = backend.upload(&vec![f32::NAN; out_len]).unwrap();
    pool::avg_pool2d_forward_f32(backend, g, &d_x, &mut d_out).unwrap();
    // same sum order and the same reciprocal divisor: equal up to FMA contraction on a GPU
    let tol = Tolerance::for_dtype::<f32>();
    assert_close(&backend.download(&d_out).unwrap(), &want, tol, &ctx("avg_pool2d forward", g, backend));

    let go = values(out_len, 10, -1.0, 1.0);
    let mut want_gi = vec![0.0f32; x.len()];
    avg_pool2d_backward(g, &go, &mut want_gi);
    let d_go = backend.upload(&go).unwrap();
    let mut d_gi = backend.upload(&vec![f32::NAN; x.len()]).unwrap();
    pool::avg_pool2d_backward_f32(backend, g, &d_go, &mut d_gi).unwrap();
    assert_close(&backend.download(&d_gi).unwrap(), &want_gi, tol, &ctx("avg_pool2d backward", g, backend));
}

#[test]
fn max_pool_matches_cpu() {
    for backend in backends() {
        for g in max_geoms() {
            check_max(&backend, &g);
        }
    }
}

#[test]
fn avg_pool_matches_cpu() {
    for backend in backends() {
        for g in avg_geoms() {
            check_avg(&backend, &g);
        }
    }
}

#[test]
fn pool_matches_cpu_with_random_schedule() {
    let backend = Backend::emulator_with(EmuSchedule::random(0x9001));
    for g in max_geoms().into_iter().step_by(5) {
        check_max(&backend, &g);
        if g.dilation == (1, 1) {
            check_avg(&backend, &g);
        }
    }
}

#[test]
fn pool_shapes_are_checked() {
    let backend = Backend::emulator();
    let g = geom((1, 2, 5, 5), (2, 2), (2, 2), (0, 0), (1, 1), false, true);
    let x = backend.zeros::<f32>(50).unwrap();
    let mut out = backend.zeros::<f32>(8).unwrap();
    let mut idx = backend.zeros::<i64>(7).unwrap();
    let e = pool::max_pool2d_forward_f32(&backend, &g, &x, &mut out, &mut idx).unwrap_err();
    assert!(e.to_string().contains("argmax 7"), "{e}");
    let dilated = Pool2dGeom { dilation: (2, 1), ..g };
    let e = pool::avg_pool2d_forward_f32(&backend, &dilated, &x, &mut out).unwrap_err();
    assert!(e.to_string().contains("no dilation"), "{e}");
}
