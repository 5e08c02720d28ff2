//! The GEMM of `kernels/src/cuda/gemm.rs` against a plain f64 triple loop: the tiled reference
//! kernel (`gemm.cu`) on the emulator and on the GPU, and cuBLAS (`cuda::gemm::gemm`) on the GPU
//! when one is present. Shapes around the 64 x 64 x 16 tile (1, 7, 33, 65, 130), every pair of
//! transpose flags, leading dimensions larger than the rows, offsets, batches with strides
//! (including a stride-0 broadcast operand), alpha/beta, and the empty cases (m, n or batch 0;
//! k = 0, which gives beta * C).
//!
//! Tolerance: |got - want| <= tol * (|alpha| * sum_p |a_ip b_pj| + |beta c_ij|) + tiny, with tol
//! 1e-6 for f32 (K terms of FP32 rounding), one output rounding for f16 (1e-3) and bf16 (8e-3)
//! (inputs are exact in both; accumulation is f32), 1e-14 for f64.

use half::{bf16, f16};
use stapes_kernels::cuda::gemm::{self, GemmConfig, GemmElem};
use stapes_kernels::cuda::parity::backends;
use stapes_kernels::cuda::{Backend, DeviceElem};

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

trait TestElem: GemmElem {
    fn from_f32(v: f32) -> Self;
    const TOL: f64;
}
impl TestElem for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    const TOL: f64 = 1e-6;
}
impl TestElem for f64 {
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    const TOL: f64 = 1e-14;
}
impl TestElem for f16 {
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    const TOL: f64 = 1e-3;
}
impl TestElem for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    const TOL: f64 = 8e-3;
}

/// The reference: `(value, magnitude)` of every element of every `C_z` (row-major, ldc = n).
fn reference<T: DeviceElem>(cfg: &GemmConfig, a: &[T], b: &[T], c: &[T]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for z in 0..cfg.batch {
        for i in 0..cfg.m {
            for j in 0..cfg.n {
                let (mut s, mut mag) = (0.0f64, 0.0f64);
                for p in 0..cfg.k {
                    let ai =
                        cfg.offset_a + z * cfg.stride_a + if cfg.transa { p * cfg.lda + i } else { i * cfg.lda + p };
                    let bi =
                        cfg.offset_b + z * cfg.stride_b + if cfg.transb { j * cfg.ldb + p } else { p * cfg.ldb + j };
                    let prod = a[ai].as_f64() * b[bi].as_f64();
                    s += prod;
                    mag += prod.abs();
                }
                let ci = cfg.offset_c + z * cfg.stride_c + i * cfg.ldc + j;
                let mut v = cfg.alpha * s;
                mag *= cfg.alpha.abs();
                if cfg.beta != 0.0 {
                    v += cfg.beta * c[ci].as_f64();
                    mag += (cfg.beta * c[ci].as_f64()).abs();
                }
                out.push((v, mag));
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn config(
    transa: bool,
    transb: bool,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    pad: usize,
    broadcast_b: bool,
) -> GemmConfig {
    let (ar, ac) = if transa { (k, m) } else { (m, k) };
    let (br, bc) = if transb { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
    GemmConfig {
        transa,
        transb,
        m,
        n,
        k,
        batch,
        alpha: 1.0,
        beta: 0.0,
        lda,
        ldb,
        ldc,
        stride_a: ar * lda + pad,
        stride_b: if broadcast_b { 0 } else { br * ldb },
        stride_c: m * ldc + pad,
        offset_a: pad,
        offset_b: 2 * pad,
        offset_c: pad,
        allow_tf32: false,
    }
}

type GemmFn<T> = fn(
    &Backend,
    &GemmConfig,
    &stapes_kernels::cuda::DeviceBuffer<T>,
    &stapes_kernels::cuda::DeviceBuffer<T>,
    &mut stapes_kernels::cuda::DeviceBuffer<T>,
) -> Result<(), stapes_kernels::cuda::CudaError>;

fn check<T: TestElem>(backend: &Backend, cfg: &GemmConfig, name: &str, run: GemmFn<T>) {
    let (ar, ac) = if cfg.transa { (cfg.k, cfg.m) } else { (cfg.m, cfg.k) };
    let (br, bc) = if cfg.transb { (cfg.n, cfg.k) } else { (cfg.k, cfg.n) };
    let a_len = cfg.offset_a + cfg.batch.saturating_sub(1) * cfg.stride_a + ar * cfg.lda.max(ac) + 3;
    let b_len = cfg.offset_b + cfg.batch.saturating_sub(1) * cfg.stride_b + br * cfg.ldb.max(bc) + 3;
    let c_len = cfg.offset_c + cfg.batch * cfg.stride_c.max(cfg.m * cfg.ldc) + 3;
    let a: Vec<T> = values(a_len, 1, -1.0, 1.0).into_iter().map(T::from_f32).collect();
    let b: Vec<T> = values(b_len, 2, -1.0, 1.0).into_iter().map(T::from_f32).collect();
    // C starts as NaN where beta == 0 (must not be read), values otherwise.
    let c0: Vec<T> = if cfg.beta == 0.0 {
        vec![T::from_f32(f32::NAN); c_len]
    } else {
        values(c_len, 3, -1.0, 1.0).into_iter().map(T::from_f32).collect()
    };
    let want = reference(cfg, &a, &b, &c0);
    let (ad, bd) = (backend.upload(&a).unwrap(), backend.upload(&b).unwrap());
    let mut cd = backend.upload(&c0).unwrap();
    run(backend, cfg, &ad, &bd, &mut cd).unwrap_or_else(|e| panic!("{name} {cfg:?}: {e}"));
    let got = backend.download(&cd).unwrap();
    let mut at = 0;
    let mut written = vec![false; c_len];
    for z in 0..cfg.batch {
        for i in 0..cfg.m {
            for j in 0..cfg.n {
                let ci = cfg.offset_c + z * cfg.stride_c + i * cfg.ldc + j;
                written[ci] = true;
                let (v, mag) = want[at];
                at += 1;
                let g = got[ci].as_f64();
                let allowed = T::TOL * mag.max(v.abs()) + 1e-30;
                assert!(
                    (g - v).abs() <= allowed,
                    "{name} {} on the {}: C_{z}[{i}][{j}] = {g}, expected {v} (allowed {allowed:e}); {cfg:?}",
                    T::NAME,
                    backend.describe()
                );
            }
        }
    }
    // Elements outside the C matrices are untouched.
    for (ci, w) in written.iter().enumerate() {
        if !w {
            assert_eq!(got[ci].as_f64().to_bits(), c0[ci].as_f64().to_bits(), "{name}: C[{ci}] outside C was written");
        }
    }
}

fn check_all<T: TestElem>(backend: &Backend, cfg: &GemmConfig) {
    check::<T>(backend, cfg, "gemm_kernel", gemm::gemm_kernel::<T>);
    if matches!(backend, Backend::Gpu(_)) {
        check::<T>(backend, cfg, "gemm (cuBLAS)", gemm::gemm::<T>);
    }
}

const DIMS: &[usize] = &[1, 7, 33, 65, 130];

#[test]
fn gemm_matches_reference_all_shapes_f32() {
    for backend in backends() {
        for &m in DIMS {
            for &n in DIMS {
                for &k in DIMS {
                    if m * n * k > 65 * 65 * 130 {
                        continue;
                    }
                    check_all::<f32>(&backend, &config(false, false, m, n, k, 1, 0, false));
                }
            }
        }
    }
}

#[test]
fn gemm_transposes_batches_and_strides() {
    for backend in backends() {
        for (transa, transb) in [(false, false), (true, false), (false, true), (true, true)] {
            for &(m, n, k, batch, pad, bcast) in &[
                (7, 33, 65, 3, 0, false),
                (65, 7, 33, 2, 3, true),
                (33, 65, 130, 1, 5, false),
                (1, 130, 7, 4, 1, true),
            ] {
                let cfg = config(transa, transb, m, n, k, batch, pad, bcast);
                check_all::<f32>(&backend, &cfg);
                check_all::<f64>(&backend, &cfg);
                check_all::<f16>(&backend, &cfg);
                check_all::<bf16>(&backend, &cfg);
            }
        }
    }
}

#[test]
fn gemm_alpha_beta_and_empty() {
    for backend in backends() {
        let mut cfg = config(true, false, 33, 65, 7, 2, 2, false);
        cfg.alpha = 0.5;
        cfg.beta = -2.0;
        check_all::<f32>(&backend, &cfg);
        check_all::<f64>(&backend, &cfg);
        check_all::<bf16>(&backend, &cfg);
        // k = 0: C = beta * C, or 0 when beta == 0 (NaN in C is not read)
        check_all::<f32>(&backend, &cfg_k0(-2.0));
        check_all::<f32>(&backend, &cfg_k0(0.0));
        // nothing to write
        for (m, n, batch) in [(0, 5, 1), (5, 0, 1), (5, 5, 0)] {
            let cfg = config(false, false, m, n, 3, batch, 0, false);
            check_all::<f32>(&backend, &cfg);
        }
    }
}

fn cfg_k0(beta: f64) -> GemmConfig {
    let mut cfg = config(false, true, 7, 9, 0, 2, 1, false);
    cfg.beta = beta;
    cfg
}

#[test]
fn gemm_rejects_bad_configs() {
    for backend in backends() {
        let a = backend.zeros::<f32>(12).unwrap();
        let b = backend.zeros::<f32>(12).unwrap();
        let mut c = backend.zeros::<f32>(9).unwrap();
        // lda smaller than the row
        let mut cfg = GemmConfig::dense(3, 3, 4);
        cfg.lda = 3;
        assert!(gemm::gemm(&backend, &cfg, &a, &b, &mut c).is_err());
        // A beyond its buffer
        let cfg = GemmConfig::dense(4, 3, 4);
        assert!(gemm::gemm(&backend, &cfg, &a, &b, &mut c).is_err());
        // overlapping C matrices
        let mut cfg = GemmConfig::dense(1, 3, 4);
        cfg.batch = 2;
        cfg.stride_a = 0;
        cfg.stride_c = 1;
        assert!(gemm::gemm(&backend, &cfg, &a, &b, &mut c).is_err());
        // fine
        let cfg = GemmConfig::dense(3, 3, 4);
        gemm::gemm(&backend, &cfg, &a, &b, &mut c).unwrap();
    }
}

/// The int8 GEMM (`qgemm.cu`, `__dp4a`) equals the CPU kernel bit for bit, on ragged shapes
/// around its 64 × 64 × 16 tile, with strides, activations across the whole uint8 range
/// (above 127 too), several zero points, with and without bias; bad shapes are errors.
#[test]
fn int8_gemm_matches_the_cpu_kernel_bitwise() {
    use stapes_kernels::cpu::qgemm::{qgemm_u8i8_dequant as cpu_qgemm, PackedI8};
    use stapes_kernels::cuda::qgemm::{qgemm_u8i8_dequant, QGemmConfig};
    for backend in backends() {
        for &(m, n, k) in &[(1, 1, 1), (7, 33, 17), (65, 70, 130), (130, 65, 33), (3, 129, 512)] {
            for (zp, bias_on, pad) in [(0, true, 0), (64, false, 3), (200, true, 5)] {
                let cfg = QGemmConfig { m, n, k, lda: k + pad, ldb: k + 2 * pad, ldy: n + pad };
                let a: Vec<u8> = values(m * cfg.lda, 5, 0.0, 256.0).into_iter().map(|v| v as u8).collect();
                let b: Vec<i8> = values(n * cfg.ldb, 6, -128.0, 128.0).into_iter().map(|v| v.floor() as i8).collect();
                let mult = values(n, 7, 1e-5, 1e-3);
                let bias = values(n, 8, -1.0, 1.0);
                // the CPU kernel on dense copies
                let a_dense: Vec<u8> = (0..m).flat_map(|i| a[i * cfg.lda..i * cfg.lda + k].to_vec()).collect();
                let b_dense: Vec<i8> = (0..n).flat_map(|j| b[j * cfg.ldb..j * cfg.ldb + k].to_vec()).collect();
                let packed = PackedI8::pack(&b_dense, n, k);
                let mut want = vec![0f32; m * n];
                cpu_qgemm(m, &a_dense, k, &packed, zp, &mult, bias_on.then_some(&bias[..]), &mut want, n, 1);
                let y0 = vec![f32::NAN; m * cfg.ldy];
                let (ad, bd, md, bsd) = (
                    backend.upload(&a).unwrap(),
                    backend.upload(&b).unwrap(),
                    backend.upload(&mult).unwrap(),
                    backend.upload(&bias).unwrap(),
                );
                let mut yd = backend.upload(&y0).unwrap();
                qgemm_u8i8_dequant(&backend, &cfg, &ad, &bd, zp, &md, bias_on.then_some(&bsd), &mut yd).unwrap();
                let got = backend.download(&yd).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        assert_eq!(
                            got[i * cfg.ldy + j].to_bits(),
                            want[i * n + j].to_bits(),
                            "y[{i}][{j}] {} vs {} on the {} ({cfg:?}, zero point {zp})",
                            got[i * cfg.ldy + j],
                            want[i * n + j],
                            backend.describe()
                        );
                    }
                    // the row padding is untouched
                    assert!(got[i * cfg.ldy + n..(i + 1) * cfg.ldy].iter().all(|v| v.is_nan()));
                }
            }
        }
        // bad input
        let a = backend.upload(&[0u8; 8]).unwrap();
        let b = backend.upload(&[0i8; 8]).unwrap();
        let mult = backend.upload(&[1f32; 2]).unwrap();
        let mut y = backend.upload(&[0f32; 4]).unwrap();
        let bad = |cfg: QGemmConfig, zp: i32, y: &mut stapes_kernels::cuda::DeviceBuffer<f32>| {
            qgemm_u8i8_dequant(&backend, &cfg, &a, &b, zp, &mult, None, y).unwrap_err().to_string()
        };
        assert!(bad(QGemmConfig::dense(2, 2, 5), 0, &mut y).contains("a holds 8"));
        assert!(bad(QGemmConfig::dense(2, 2, 4), 300, &mut y).contains("zero point 300"));
        assert!(bad(QGemmConfig::dense(2, 3, 2), 0, &mut y).contains("y holds 4"));
        assert!(bad(QGemmConfig::dense(2, 2, 70_000), 0, &mut y).contains("overflow"));
        assert!(bad(QGemmConfig { lda: 2, ..QGemmConfig::dense(2, 2, 4) }, 0, &mut y).contains("strides"));
    }
}

/// The activation quantizer (`qgemm.cu`) gives the CPU kernel's levels, ties and clamping
/// included, at several scales, zero points and level ranges; a short output is an error.
#[test]
fn int8_activation_levels_match_the_cpu_kernel() {
    use stapes_kernels::cpu::qgemm::quantize_u8_f32 as cpu_quantize;
    use stapes_kernels::cuda::qgemm::quantize_u8_f32;
    for backend in backends() {
        let mut x = values(3000, 9, -3.0, 3.0);
        // exact ties at scale 0.5: k + 0.5 levels round to even
        x.extend((0..40).map(|k| (k as f32 - 20.0 + 0.5) * 0.5));
        for (scale, zp, qmax) in [(0.05f32, 60, 127u8), (0.5, 20, 127), (0.01, 0, 255), (0.02, 128, 255)] {
            let mut want = vec![0u8; x.len()];
            cpu_quantize(&x, 1.0 / scale, zp as f32, f32::from(qmax), &mut want);
            let xd = backend.upload(&x).unwrap();
            let mut qd = backend.upload(&vec![0u8; x.len()]).unwrap();
            quantize_u8_f32(&backend, &xd, 1.0 / scale, zp, qmax, &mut qd).unwrap();
            assert_eq!(
                backend.download(&qd).unwrap(),
                want,
                "scale {scale}, zero point {zp} on the {}",
                backend.describe()
            );
        }
        let xd = backend.upload(&x).unwrap();
        let mut short = backend.upload(&[0u8; 4]).unwrap();
        let msg = quantize_u8_f32(&backend, &xd, 1.0, 0, 127, &mut short).unwrap_err().to_string();
        assert!(msg.contains("4 levels"), "{msg}");
    }
}
