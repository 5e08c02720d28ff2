//! Reductions, softmax and norms on `Device::Cuda(0)` against the CPU ops: every op and float
//! dtype, dims in every position and several at once, keepdim both ways, strided inputs, row
//! lengths around the warp and block sizes, few long rows (the grid-level two-pass path: the
//! emulator has 2 SMs, so a row of 20000 is split into chunks), NaN and infinities.
//! `cuda::test_device()` serves cuda:0 from the GPU when there is one, else the emulator.
//!
//! Tolerances: the kernels accumulate in a different order than the CPU (tree sums per block,
//! Welford for var), so f32 results agree to about 1e-5 relative, plus an absolute term that
//! grows with the row length for sums (cancellation); f64 to 1e-10; f16/bf16 results are rounded
//! once from f32 on both sides, so they agree to one unit in the last place (2^-10 and 2^-7
//! relative).

use stapes_tensor::{cuda, DType, Device, Error, Tensor};

const FLOATS: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

/// Deterministic values in [-2, 2) (a small LCG).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// Relative tolerance of a dtype (one ulp for the half types).
fn rtol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F64 => 1e-10,
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        _ => 0.0,
    }
}

/// Compares a CUDA result with the CPU's: same shape and dtype, NaN where the CPU has NaN, equal
/// infinities, else |a - e| <= atol + rtol |e|.
fn assert_close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64, ctx: &str) {
    assert!(got.device().is_cuda(), "{ctx}: result on {}", got.device());
    assert_eq!(got.dims(), want.dims(), "{ctx}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{ctx}: dtype");
    let g = got.to_vec_f64().unwrap();
    let w = want.to_vec_f64().unwrap();
    let mut worst = (0.0f64, 0usize);
    for (i, (&a, &e)) in g.iter().zip(&w).enumerate() {
        if e.is_nan() || a.is_nan() {
            assert!(e.is_nan() && a.is_nan(), "{ctx}: element {i}: got {a}, expected {e}");
            continue;
        }
        if e.is_infinite() || a.is_infinite() {
            assert_eq!(a, e, "{ctx}: element {i}");
            continue;
        }
        let excess = (a - e).abs() - (atol + rtol * e.abs());
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    if worst.0 > 0.0 {
        let i = worst.1;
        panic!("{ctx}: element {i}: got {}, expected {} (rtol {rtol}, atol {atol})", g[i], w[i]);
    }
}

/// A CPU tensor of `dtype` and its copy on `dev`.
fn pair(data: Vec<f32>, shape: &[usize], dtype: DType, dev: &Device) -> (Tensor, Tensor) {
    let c = Tensor::from_vec(data, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let g = c.to_device(dev).unwrap();
    (c, g)
}

type Reduction = (&'static str, fn(&Tensor, &[usize], bool) -> stapes_tensor::Result<Tensor>);

const REDUCTIONS: [Reduction; 8] = [
    ("sum", |t, d, k| t.sum(d, k)),
    ("mean", |t, d, k| t.mean(d, k)),
    ("max", |t, d, k| t.max(d, k)),
    ("min", |t, d, k| t.min(d, k)),
    ("logsumexp", |t, d, k| t.logsumexp(d, k)),
    ("var(1)", |t, d, k| t.var(d, 1, k)),
    ("var(0)", |t, d, k| t.var(d, 0, k)),
    ("std(1)", |t, d, k| t.std(d, 1, k)),
];

/// Checks every reduction of (cpu, gpu) over `dims` (keepdim both ways); `r` is the number of
/// elements reduced per output (for the absolute tolerance of sums).
fn check_reductions(cpu: &Tensor, gpu: &Tensor, dims: &[usize], r: usize, what: &str) {
    let dt = cpu.dtype();
    for keepdim in [false, true] {
        for (name, f) in REDUCTIONS {
            let want = f(cpu, dims, keepdim).unwrap();
            let got = f(gpu, dims, keepdim).unwrap();
            // sums: order-dependent rounding of a sum of r terms of magnitude <= 2 (+ an offset)
            let scale = cpu.abs().unwrap().max(&[] as &[usize], false).unwrap().to_vec_f64().unwrap()[0].max(1.0);
            let atol = match name {
                "sum" => 4.0 * rtol(dt).min(1e-6) * r as f64 * scale + 1e-6,
                _ => rtol(dt) * scale * 0.5,
            };
            let ctx = format!("{name} over {dims:?} keepdim={keepdim} of {what} {:?} {dt}", cpu.dims());
            assert_close(&got, &want, rtol(dt), atol, &ctx);
        }
    }
}

#[test]
fn reductions_match_cpu_every_dtype_and_dim() {
    let Some(dev) = cuda::test_device() else { return };
    let shape = [3, 5, 7];
    let dim_sets: [&[usize]; 8] = [&[0], &[1], &[2], &[0, 1], &[1, 2], &[0, 2], &[0, 1, 2], &[]];
    for dt in FLOATS {
        let (c, g) = pair(values(105, 1), &shape, dt, &dev);
        for dims in dim_sets {
            let r: usize = if dims.is_empty() { 105 } else { dims.iter().map(|&d| shape[d]).product() };
            check_reductions(&c, &g, dims, r, "dense");
        }
        // strided inputs: a transpose and a narrowed permutation
        let (c, g) = pair(values(7 * 5 * 6, 2), &[7, 5, 6], dt, &dev);
        let (ct, gt) = (c.transpose(0, 2).unwrap(), g.transpose(0, 2).unwrap());
        let (cn, gn) = (ct.narrow(0, 1, 4).unwrap(), gt.narrow(0, 1, 4).unwrap());
        for dims in [&[0usize][..], &[2], &[1, 2], &[0, 2]] {
            check_reductions(&ct, &gt, dims, 7, "transposed");
            check_reductions(&cn, &gn, dims, 7, "narrowed transpose");
        }
        // sum_all / mean_all (0-dim results)
        let (c, g) = pair(values(105, 3), &shape, dt, &dev);
        assert_close(&g.sum_all().unwrap(), &c.sum_all().unwrap(), rtol(dt), 1e-3, "sum_all");
        assert_close(&g.mean_all().unwrap(), &c.mean_all().unwrap(), rtol(dt), 1e-4, "mean_all");
        // a 0-dim input
        let (c, g) = pair(vec![1.5], &[], dt, &dev);
        check_reductions(&c, &g, &[], 1, "scalar");
    }
}

#[test]
fn row_lengths_around_warp_and_block_sizes() {
    let Some(dev) = cuda::test_device() else { return };
    // (f64 and bf16 share these code paths; they are covered by the other tests)
    for dt in [DType::F32, DType::F16] {
        for n in [1usize, 31, 32, 33, 255, 257, 1000] {
            let (c, g) = pair(values(3 * n, n as u64), &[3, n], dt, &dev);
            check_reductions(&c, &g, &[1], n, "rows");
            check_reductions(&c, &g, &[0], 3, "columns");
        }
    }
}

#[test]
fn middle_dims_reduce_in_place() {
    let Some(dev) = cuda::test_device() else { return };
    for dt in FLOATS {
        // [a, r, b] with b >= 32: the column kernel; [600, 40] over dim 0 leaves 40 outputs, too
        // few for the (emulated) GPU: the reduced dim is split into chunks and finished
        let (c, g) = pair(values(3 * 7 * 40, 30), &[3, 7, 40], dt, &dev);
        check_reductions(&c, &g, &[1], 7, "[3, 7, 40]");
        check_reductions(&c, &g, &[0, 1], 21, "[3, 7, 40]");
        let (c, g) = pair(values(600 * 40, 31).iter().map(|v| v + 10.0).collect(), &[600, 40], dt, &dev);
        check_reductions(&c, &g, &[0], 600, "[600, 40]");
        // a strided view: made dense, then reduced in place
        let (c, g) = pair(values(40 * 6 * 5, 32), &[40, 6, 5], dt, &dev);
        let (ct, gt) = (c.permute(&[1, 2, 0]).unwrap(), g.permute(&[1, 2, 0]).unwrap());
        check_reductions(&ct, &gt, &[0, 1], 30, "permuted [6, 5, 40]");
        // sum_to_shape of a broadcast gradient over leading dims
        let (c, g) = pair(values(8 * 4 * 64, 33), &[8, 4, 64], dt, &dev);
        assert_close(
            &g.sum_to_shape(&[64]).unwrap(),
            &c.sum_to_shape(&[64]).unwrap(),
            rtol(dt),
            1e-3,
            "sum_to_shape [64]",
        );
        assert_close(
            &g.sum_to_shape(&[4, 64]).unwrap(),
            &c.sum_to_shape(&[4, 64]).unwrap(),
            rtol(dt),
            1e-3,
            "sum_to_shape [4, 64]",
        );
    }
}

#[test]
fn few_long_rows_take_the_grid_path() {
    let Some(dev) = cuda::test_device() else { return };
    for dt in FLOATS {
        // 1 x 20000 and 2 x 9000: fewer rows than 2 per SM and rows of at least 8192: chunked
        for (rows, n) in [(1usize, 20_000usize), (2, 9_000)] {
            let mut x = values(rows * n, 7);
            // an offset, so var must not cancel catastrophically
            x.iter_mut().for_each(|v| *v += 100.0);
            let (c, g) = pair(x, &[rows, n], dt, &dev);
            check_reductions(&c, &g, &[1], n, "long rows");
        }
        let (c, g) = pair(values(20_000, 8), &[100, 200], dt, &dev);
        assert_close(&g.sum_all().unwrap(), &c.sum_all().unwrap(), rtol(dt), 2e-2, "sum_all [100, 200]");
        assert_close(&g.mean_all().unwrap(), &c.mean_all().unwrap(), rtol(dt), 1e-5, "mean_all [100, 200]");
        check_reductions(&c, &g, &[], 20_000, "all of [100, 200]");
    }
}

#[test]
fn nan_and_infinities_as_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let n = 40;
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let mut x = values(8 * n, 9);
    x[3] = nan; // row 0: one NaN
    x[n + 5] = inf; // row 1: +inf
    x[2 * n..3 * n].fill(-inf); // row 2: all -inf
    x[3 * n + 1] = inf; // row 3: +inf and -inf
    x[3 * n + 2] = -inf;
    x[4 * n + 7] = inf; // row 4: two +inf
    x[4 * n + 30] = inf;
    x[5 * n + 10] = -inf; // row 5: one -inf
    x[6 * n + 2] = nan; // row 6: NaN and +inf
    x[6 * n + 9] = inf;
    for dt in FLOATS {
        let (c, g) = pair(x.clone(), &[8, n], dt, &dev);
        check_reductions(&c, &g, &[1], n, "special values");
        for want_max in [true, false] {
            let (cw, gw) = if want_max {
                (c.argmax(1, false).unwrap(), g.argmax(1, false).unwrap())
            } else {
                (c.argmin(1, false).unwrap(), g.argmin(1, false).unwrap())
            };
            assert_eq!(gw.to_vec::<i64>().unwrap(), cw.to_vec::<i64>().unwrap(), "arg max={want_max} {dt}");
        }
    }
    // a NaN deep inside a long row (grid path)
    let mut long = values(20_000, 10);
    long[15_000] = nan;
    let (c, g) = pair(long.clone(), &[1, 20_000], DType::F32, &dev);
    check_reductions(&c, &g, &[1], 20_000, "long row with a NaN");
    long[15_000] = inf;
    let (c, g) = pair(long, &[1, 20_000], DType::F32, &dev);
    check_reductions(&c, &g, &[1], 20_000, "long row with +inf");
}

#[test]
fn argmax_argmin_first_index_on_ties() {
    let Some(dev) = cuda::test_device() else { return };
    // few distinct values: many ties
    let x: Vec<f32> = (0..4 * 6 * 37).map(|i| ((i * 7 + i / 5) % 5) as f32).collect();
    for dt in FLOATS {
        let (c, g) = pair(x.clone(), &[4, 6, 37], dt, &dev);
        for dim in 0..3 {
            for keepdim in [false, true] {
                let want = c.argmax(dim, keepdim).unwrap();
                let got = g.argmax(dim, keepdim).unwrap();
                assert_eq!(got.dims(), want.dims());
                assert_eq!(got.dtype(), DType::I64);
                assert_eq!(got.to_vec::<i64>().unwrap(), want.to_vec::<i64>().unwrap(), "argmax {dim} {dt}");
                let want = c.argmin(dim, keepdim).unwrap();
                let got = g.argmin(dim, keepdim).unwrap();
                assert_eq!(got.to_vec::<i64>().unwrap(), want.to_vec::<i64>().unwrap(), "argmin {dim} {dt}");
            }
        }
        // transposed input, a long row, and a 0-dim input
        let (ct, gt) = (c.transpose(0, 2).unwrap(), g.transpose(0, 2).unwrap());
        assert_eq!(
            gt.argmax(1, false).unwrap().to_vec::<i64>().unwrap(),
            ct.argmax(1, false).unwrap().to_vec::<i64>().unwrap()
        );
        let (c, g) = pair(values(5000, 11), &[5000], dt, &dev);
        assert_eq!(
            g.argmin(0, false).unwrap().to_vec::<i64>().unwrap(),
            c.argmin(0, false).unwrap().to_vec::<i64>().unwrap()
        );
        let (c, g) = pair(vec![3.0], &[], dt, &dev);
        let got = g.argmax(0, false).unwrap();
        assert_eq!(got.dims(), c.argmax(0, false).unwrap().dims());
        assert_eq!(got.to_vec::<i64>().unwrap(), vec![0]);
    }
}

#[test]
fn sum_to_shape_matches_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for dt in FLOATS {
        let (c, g) = pair(values(2 * 4 * 3 * 5, 12), &[2, 4, 3, 5], dt, &dev);
        for shape in [&[4usize, 3, 5][..], &[3, 1], &[1, 5], &[4, 1, 5], &[1], &[], &[2, 1, 1, 5], &[2, 4, 3, 5]] {
            let want = c.sum_to_shape(shape).unwrap();
            let got = g.sum_to_shape(shape).unwrap();
            assert_close(&got, &want, rtol(dt), 1e-4 * 120.0, &format!("sum_to_shape {shape:?} {dt}"));
        }
        assert!(g.sum_to_shape(&[4, 2]).is_err());
    }
}

#[test]
fn errors_are_the_cpus() {
    let Some(dev) = cuda::test_device() else { return };
    let (c, g) = pair(values(12, 13), &[3, 4], DType::F32, &dev);
    let same = |a: Error, b: Error| assert_eq!(a.to_string(), b.to_string());
    same(c.sum(5usize, false).unwrap_err(), g.sum(5usize, false).unwrap_err());
    same(c.max(-3i64, false).unwrap_err(), g.max(-3i64, false).unwrap_err());
    same(c.argmax(2usize, false).unwrap_err(), g.argmax(2usize, false).unwrap_err());
    let (ce, ge) = pair(vec![], &[3, 0], DType::F32, &dev);
    same(ce.max(1usize, false).unwrap_err(), ge.max(1usize, false).unwrap_err());
    same(ce.argmin(1usize, false).unwrap_err(), ge.argmin(1usize, false).unwrap_err());
    // empty reductions give the CPU's values (sum 0, mean NaN, logsumexp -inf)
    for (name, f) in REDUCTIONS.iter().filter(|(n, _)| !matches!(*n, "max" | "min")) {
        assert_close(&f(&ge, &[1], false).unwrap(), &f(&ce, &[1], false).unwrap(), 0.0, 0.0, name);
    }
    let (ci, gi) = (c.to_dtype(DType::I64).unwrap(), g.to_dtype(DType::I64).unwrap());
    same(ci.sum(0usize, false).unwrap_err(), gi.sum(0usize, false).unwrap_err());
    same(ci.softmax(0usize).unwrap_err(), gi.softmax(0usize).unwrap_err());
}

// ---------------------------------------------------------------------------------------------
// softmax
// ---------------------------------------------------------------------------------------------

fn softmax_tol(dt: DType) -> (f64, f64) {
    match dt {
        DType::F32 => (1e-5, 1e-6),
        DType::F64 => (1e-10, 1e-12),
        _ => (rtol(dt), rtol(dt) * 0.1),
    }
}

fn check_softmax(c: &Tensor, g: &Tensor, dim: usize, what: &str) {
    let dt = c.dtype();
    let (rt, at) = softmax_tol(dt);
    let gy_c = Tensor::from_vec(values(c.elem_count(), 21), c.dims(), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
    let gy_g = gy_c.to_device(g.device()).unwrap();
    for log in [false, true] {
        let (want, got) = if log {
            (c.log_softmax(dim).unwrap(), g.log_softmax(dim).unwrap())
        } else {
            (c.softmax(dim).unwrap(), g.softmax(dim).unwrap())
        };
        let name = if log { "log_softmax" } else { "softmax" };
        // log-softmax values are O(log n): an absolute term
        let at = if log { at.max(rt) * 10.0 } else { at };
        assert_close(&got, &want, rt, at, &format!("{name} dim {dim} of {what} {:?} {dt}", c.dims()));
        assert!(got.is_contiguous());
        // backward from the CPU's forward output (so both see the same y)
        let y_g = want.to_device(g.device()).unwrap();
        let want_b = want.softmax_backward(&gy_c, dim, log).unwrap();
        let got_b = y_g.softmax_backward(&gy_g, dim, log).unwrap();
        let n = c.dims().get(dim).copied().unwrap_or(1) as f64;
        assert_close(&got_b, &want_b, rt, rt * 4.0 * n.sqrt(), &format!("{name}_backward dim {dim} of {what} {dt}"));
    }
}

#[test]
fn softmax_matches_cpu_every_dtype_and_dim() {
    let Some(dev) = cuda::test_device() else { return };
    for dt in FLOATS {
        let (c, g) = pair(values(4 * 5 * 33, 14).iter().map(|v| v * 4.0).collect(), &[4, 5, 33], dt, &dev);
        for dim in 0..3 {
            check_softmax(&c, &g, dim, "dense");
        }
        let (ct, gt) = (c.transpose(0, 2).unwrap(), g.transpose(0, 2).unwrap());
        for dim in 0..3 {
            check_softmax(&ct, &gt, dim, "transposed");
        }
        // up to 8 elements per thread take the register path, 5000 (> 256 x 8) the two-pass loop
        for n in [1usize, 31, 32, 257, 1000, 2048, 2049, 5000] {
            let (c, g) = pair(values(3 * n, n as u64), &[3, n], dt, &dev);
            check_softmax(&c, &g, 1, "rows");
        }
        let (c, g) = pair(vec![0.25], &[], dt, &dev);
        check_softmax(&c, &g, 0, "scalar");
    }
}

#[test]
fn softmax_special_values_as_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let n = 50;
    let mut x = values(5 * n, 15);
    x[..n].iter_mut().for_each(|v| *v += 1e4); // a large offset
    for j in (0..n).step_by(3) {
        x[n + j] = f32::NEG_INFINITY; // masked entries
    }
    x[2 * n..3 * n].fill(f32::NEG_INFINITY); // fully masked: NaN
    x[3 * n + 17] = f32::NAN; // NaN row
    x[4 * n + 3] = f32::INFINITY; // +inf: exp(inf - inf) makes the row NaN, as on the CPU
    for dt in [DType::F32, DType::F64] {
        let (c, g) = pair(x.clone(), &[5, n], dt, &dev);
        let (rt, at) = softmax_tol(dt);
        assert_close(&g.softmax(1).unwrap(), &c.softmax(1).unwrap(), rt, at, &format!("softmax specials {dt}"));
        let got = g.log_softmax(1).unwrap();
        assert_close(&got, &c.log_softmax(1).unwrap(), rt, 1e-4, &format!("log_softmax specials {dt}"));
    }
}

// ---------------------------------------------------------------------------------------------
// norms
// ---------------------------------------------------------------------------------------------

fn to_dev(t: &Option<Tensor>, dev: &Device) -> Option<Tensor> {
    t.as_ref().map(|t| t.to_device(dev).unwrap())
}

fn norm_tol(dt: DType) -> (f64, f64) {
    match dt {
        DType::F32 => (1e-4, 1e-4),
        _ => (2.0 * rtol(dt), 2.0 * rtol(dt)),
    }
}

#[test]
fn layer_norm_matches_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let (rt, at) = norm_tol(dt);
        for (shape, norm) in [(&[4usize, 3, 37][..], &[37usize][..]), (&[6, 5, 8], &[5, 8]), (&[2, 300], &[300])] {
            let count: usize = shape.iter().product();
            let cols: usize = norm.iter().product();
            let (c, g) = pair(values(count, 16).iter().map(|v| v * 3.0 + 1.0).collect(), shape, dt, &dev);
            for affine in [false, true] {
                let w = affine.then(|| pair(values(cols, 17), norm, dt, &dev).0);
                let b = affine.then(|| pair(values(cols, 18), norm, dt, &dev).0);
                let (wg, bg) = (to_dev(&w, &dev), to_dev(&b, &dev));
                let want = c.layer_norm_with_stats(norm, w.as_ref(), b.as_ref(), 1e-5).unwrap();
                let got = g.layer_norm_with_stats(norm, wg.as_ref(), bg.as_ref(), 1e-5).unwrap();
                let ctx = format!("layer_norm {shape:?} over {norm:?} affine={affine} {dt}");
                assert_close(&got.y, &want.y, rt, at, &ctx);
                assert_close(&got.mean, &want.mean, 1e-4, 1e-4, &format!("{ctx}: mean"));
                assert_close(&got.rstd, &want.rstd, 1e-4, 1e-4, &format!("{ctx}: rstd"));
                assert_close(&g.layer_norm(norm, wg.as_ref(), bg.as_ref(), 1e-5).unwrap(), &want.y, rt, at, &ctx);
                let (gy_c, gy_g) = pair(values(count, 19), shape, dt, &dev);
                let want_b =
                    Tensor::layer_norm_backward(&c, &gy_c, norm, w.as_ref(), affine, &want.mean, &want.rstd).unwrap();
                let got_b =
                    Tensor::layer_norm_backward(&g, &gy_g, norm, wg.as_ref(), affine, &got.mean, &got.rstd).unwrap();
                assert_close(&got_b.0, &want_b.0, rt, at * 10.0, &format!("{ctx}: grad_x"));
                assert_eq!(got_b.1.is_some(), want_b.1.is_some());
                assert_eq!(got_b.2.is_some(), want_b.2.is_some());
                let rows = (count / cols) as f64;
                if let (Some(gw), Some(ww)) = (&got_b.1, &want_b.1) {
                    assert_close(gw, ww, rt, at * rows, &format!("{ctx}: grad_weight"));
                }
                if let (Some(gb), Some(wb)) = (&got_b.2, &want_b.2) {
                    assert_close(gb, wb, rt, at * rows, &format!("{ctx}: grad_bias"));
                }
            }
        }
    }
    // f64 has no CUDA norm kernel yet
    let (_, g) = pair(values(12, 20), &[3, 4], DType::F64, &dev);
    assert!(matches!(g.layer_norm(&[4], None, None, 1e-5), Err(Error::NoCudaKernel { .. })));
}

#[test]
fn batch_norm_matches_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let (rt, at) = norm_tol(dt);
        for shape in [&[8usize, 3][..], &[4, 5, 6, 7], &[2, 3, 300]] {
            let count: usize = shape.iter().product();
            let ch = shape[1];
            let (c, g) = pair(values(count, 22).iter().map(|v| v * 2.0 - 0.5).collect(), shape, dt, &dev);
            let rm = pair(values(ch, 23), &[ch], dt, &dev).0;
            let rv = pair(values(ch, 24).iter().map(|v| v.abs() + 0.5).collect(), &[ch], dt, &dev).0;
            let (rmg, rvg) = (rm.to_device(&dev).unwrap(), rv.to_device(&dev).unwrap());
            let w = pair(values(ch, 25), &[ch], dt, &dev).0;
            let b = pair(values(ch, 26), &[ch], dt, &dev).0;
            let (wg, bg) = (w.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
            for training in [true, false] {
                for affine in [false, true] {
                    let ctx = format!("batch_norm {shape:?} training={training} affine={affine} {dt}");
                    let (wc, bc) = if affine { (Some(&w), Some(&b)) } else { (None, None) };
                    let (wgo, bgo) = if affine { (Some(&wg), Some(&bg)) } else { (None, None) };
                    let want = c.batch_norm(Some(&rm), Some(&rv), wc, bc, training, 0.1, 1e-5).unwrap();
                    let got = g.batch_norm(Some(&rmg), Some(&rvg), wgo, bgo, training, 0.1, 1e-5).unwrap();
                    assert_close(&got.y, &want.y, rt, at, &ctx);
                    assert_close(&got.save_mean, &want.save_mean, 1e-4, 1e-4, &format!("{ctx}: save_mean"));
                    assert_close(&got.save_rstd, &want.save_rstd, 1e-4, 1e-4, &format!("{ctx}: save_rstd"));
                    assert_eq!(got.running_mean.is_some(), want.running_mean.is_some());
                    if let (Some(a), Some(e)) = (&got.running_mean, &want.running_mean) {
                        assert_close(a, e, rt, at, &format!("{ctx}: running_mean"));
                    }
                    if let (Some(a), Some(e)) = (&got.running_var, &want.running_var) {
                        assert_close(a, e, rt, at, &format!("{ctx}: running_var"));
                    }
                    // the given running statistics are not modified in place
                    assert_eq!(rmg.to_vec_f64().unwrap(), rm.to_vec_f64().unwrap(), "{ctx}: running_mean input");
                    let (gy_c, gy_g) = pair(values(count, 27), shape, dt, &dev);
                    let want_b =
                        Tensor::batch_norm_backward(&c, &gy_c, wc, affine, &want.save_mean, &want.save_rstd, training)
                            .unwrap();
                    let got_b =
                        Tensor::batch_norm_backward(&g, &gy_g, wgo, affine, &got.save_mean, &got.save_rstd, training)
                            .unwrap();
                    let per = (count / ch) as f64;
                    assert_close(&got_b.0, &want_b.0, rt, at * 10.0, &format!("{ctx}: grad_x"));
                    if let (Some(a), Some(e)) = (&got_b.1, &want_b.1) {
                        assert_close(a, e, rt, at * per, &format!("{ctx}: grad_weight"));
                    }
                    if let (Some(a), Some(e)) = (&got_b.2, &want_b.2) {
                        assert_close(a, e, rt, at * per, &format!("{ctx}: grad_bias"));
                    }
                }
            }
        }
    }
    let (_, g) = pair(values(12, 28), &[4, 3], DType::F64, &dev);
    assert!(matches!(g.batch_norm(None, None, None, None, true, 0.1, 1e-5), Err(Error::NoCudaKernel { .. })));
}
