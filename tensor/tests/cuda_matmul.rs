//! `matmul` on `Device::Cuda(0)` against the CPU: cuBLAS on a GPU, the tiled `gemm.cu` kernel on
//! the emulator (`cuda::test_device()` picks). Shapes with M, N, K in {1, 7, 33, 65, 130}
//! (around the kernel's 64 x 64 x 16 tile), batched and broadcast batch dims, transposed and
//! offset views (used in place), views that need a dense copy, 1-D operands, empty dims, every
//! float dtype, and the errors (identical on both devices).
//!
//! Tolerances (|cuda - cpu| <= atol + rtol * |cpu|, values in [-1, 1], K <= 130): f32 and f64
//! rtol 1e-5, atol 1e-5 (f32; the two sides sum in different orders; true FP32 on both, TF32 is
//! off by default); f16 rtol 1e-3, atol 1e-3 and bf16 rtol 1e-2, atol 1e-2 (both sides
//! accumulate in f32 and round once, so they differ by at most one unit in the last place).

use stapes_tensor::{cuda, DType, Device, Error, Tensor};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            -1.0 + 2.0 * ((s >> 8) as f32 / (1u32 << 24) as f32)
        })
        .collect()
}

fn rand(shape: &[usize], seed: u32, dtype: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (1e-3, 1e-3),
        DType::BF16 => (1e-2, 1e-2),
        _ => (1e-5, 1e-5),
    }
}

/// `f(a, b)` on the CPU and on `dev` (operands uploaded first, views taken on each device).
fn check(dev: &Device, what: &str, a: &Tensor, b: &Tensor, f: impl Fn(&Tensor, &Tensor) -> Tensor) {
    let want = f(a, b);
    let got = f(&a.to_device(dev).unwrap(), &b.to_device(dev).unwrap());
    assert_eq!(got.device(), dev, "{what}");
    assert_eq!(got.dims(), want.dims(), "{what}");
    assert_eq!(got.dtype(), want.dtype(), "{what}");
    let (rtol, atol) = tol(want.dtype());
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (x, y)) in g.iter().zip(&w).enumerate() {
        assert!((x - y).abs() <= atol + rtol * y.abs(), "{what} {}: element {i}: cuda {x}, cpu {y}", want.dtype());
    }
}

fn mm(a: &Tensor, b: &Tensor) -> Tensor {
    a.matmul(b).unwrap()
}

const DIMS: &[usize] = &[1, 7, 33, 65, 130];

#[test]
fn matmul_shapes_f32() {
    let Some(dev) = cuda::test_device() else { return };
    for &m in DIMS {
        for &n in DIMS {
            for &k in DIMS {
                if m * n * k > 65 * 65 * 130 {
                    continue;
                }
                let a = rand(&[m, k], 1, DType::F32);
                let b = rand(&[k, n], 2, DType::F32);
                check(&dev, &format!("[{m}, {k}] @ [{k}, {n}]"), &a, &b, mm);
            }
        }
    }
}

#[test]
fn matmul_every_float_dtype() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        let a = rand(&[2, 33, 65], 3, dtype);
        let b = rand(&[2, 65, 7], 4, dtype);
        check(&dev, "batched", &a, &b, mm);
        check(&dev, "transposed rhs", &a, &rand(&[2, 7, 65], 5, dtype), |a, b| {
            a.matmul(&b.transpose(1, 2).unwrap()).unwrap()
        });
    }
}

#[test]
fn matmul_batched_and_broadcast() {
    let Some(dev) = cuda::test_device() else { return };
    let f = DType::F32;
    // plain batch
    check(&dev, "[3,7,33]@[3,33,65]", &rand(&[3, 7, 33], 1, f), &rand(&[3, 33, 65], 2, f), mm);
    // one side broadcast (stride 0 over the batch)
    check(&dev, "[4,7,33]@[33,65]", &rand(&[4, 7, 33], 1, f), &rand(&[33, 65], 2, f), mm);
    check(&dev, "[33,7]@[4,7,65]", &rand(&[33, 7], 1, f), &rand(&[4, 7, 65], 2, f), mm);
    // broadcast in different dims: the batch dims cannot merge, outer launches loop
    check(&dev, "[2,1,7,33]@[3,33,5]", &rand(&[2, 1, 7, 33], 1, f), &rand(&[3, 33, 5], 2, f), mm);
    check(&dev, "[2,3,1,7,9]@[1,3,4,9,5]", &rand(&[2, 3, 1, 7, 9], 1, f), &rand(&[1, 3, 4, 9, 5], 2, f), mm);
    // mergeable multi-dim batch
    check(&dev, "[2,3,7,9]@[2,3,9,5]", &rand(&[2, 3, 7, 9], 1, f), &rand(&[2, 3, 9, 5], 2, f), mm);
}

#[test]
fn matmul_views() {
    let Some(dev) = cuda::test_device() else { return };
    let f = DType::F32;
    // a transposed view of a contiguous matrix is a transpose flag (both sides, all four combos)
    let (a, b) = (rand(&[33, 7], 1, f), rand(&[65, 33], 2, f));
    check(&dev, "a.t() @ b.t()", &a, &b, |a, b| a.t().unwrap().matmul(&b.t().unwrap()).unwrap());
    check(&dev, "a.t() @ b", &a, &rand(&[33, 65], 3, f), |a, b| a.t().unwrap().matmul(b).unwrap());
    check(&dev, "a @ b.t()", &rand(&[7, 33], 4, f), &b, |a, b| a.matmul(&b.t().unwrap()).unwrap());
    // narrowed views: offsets and row strides larger than the row
    let (a, b) = (rand(&[10, 40], 5, f), rand(&[50, 30], 6, f));
    check(&dev, "narrow", &a, &b, |a, b| {
        a.narrow(0, 2, 7)
            .unwrap()
            .narrow(1, 3, 33)
            .unwrap()
            .matmul(&b.narrow(0, 1, 33).unwrap().narrow(1, 4, 20).unwrap())
            .unwrap()
    });
    // a transposed narrow view (column stride > 1 and row stride 1)
    check(&dev, "narrow of t", &a, &b, |a, b| {
        a.t().unwrap().narrow(0, 1, 9).unwrap().matmul(&b.narrow(0, 0, 10).unwrap()).unwrap()
    });
    // batched transposes and a permuted batch
    let (a, b) = (rand(&[3, 33, 7], 7, f), rand(&[5, 3, 33], 8, f));
    check(&dev, "batched transposes", &a, &b, |a, b| {
        a.transpose(1, 2).unwrap().matmul(&b.permute(&[1, 2, 0]).unwrap()).unwrap()
    });
    // layouts that need a dense copy: a stride-0 matrix dim, and steps in both dims
    let (a, b) = (rand(&[1, 33], 9, f), rand(&[66, 14], 10, f));
    check(&dev, "expanded rows and stepped view", &a, &b, |a, b| {
        let a = a.expand([7, 33]).unwrap();
        let b = b
            .reshape([33, 2, 7, 2])
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .narrow(3, 1, 1)
            .unwrap()
            .reshape([33, 7])
            .unwrap();
        a.matmul(&b).unwrap()
    });
}

#[test]
fn matmul_vectors_and_empty() {
    let Some(dev) = cuda::test_device() else { return };
    let f = DType::F32;
    check(&dev, "vec @ mat", &rand(&[33], 1, f), &rand(&[33, 7], 2, f), mm);
    check(&dev, "mat @ vec", &rand(&[7, 33], 1, f), &rand(&[33], 2, f), mm);
    check(&dev, "vec @ vec", &rand(&[65], 1, f), &rand(&[65], 2, f), mm);
    check(&dev, "vec @ batched", &rand(&[9], 1, f), &rand(&[3, 9, 4], 2, f), mm);
    check(&dev, "batched @ vec", &rand(&[3, 4, 9], 1, f), &rand(&[9], 2, f), mm);
    check(&dev, "m = 0", &rand(&[0, 5], 1, f), &rand(&[5, 3], 2, f), mm);
    check(&dev, "n = 0", &rand(&[4, 5], 1, f), &rand(&[5, 0], 2, f), mm);
    check(&dev, "k = 0", &rand(&[4, 0], 1, f), &rand(&[0, 3], 2, f), mm);
    check(&dev, "batch 0", &rand(&[0, 4, 5], 1, f), &rand(&[5, 3], 2, f), mm);
}

#[test]
fn matmul_errors_match_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    type Case = (&'static str, fn(&Device) -> Error);
    let cases: [Case; 5] = [
        ("contracted dim", |d| {
            rand(&[3, 4], 1, DType::F32)
                .to_device(d)
                .unwrap()
                .matmul(&rand(&[5, 2], 2, DType::F32).to_device(d).unwrap())
                .unwrap_err()
        }),
        ("dtype mismatch", |d| {
            rand(&[3, 4], 1, DType::F32)
                .to_device(d)
                .unwrap()
                .matmul(&rand(&[4, 2], 2, DType::F16).to_device(d).unwrap())
                .unwrap_err()
        }),
        ("integer dtype", |d| {
            rand(&[3, 4], 1, DType::I64)
                .to_device(d)
                .unwrap()
                .matmul(&rand(&[4, 2], 2, DType::I64).to_device(d).unwrap())
                .unwrap_err()
        }),
        ("rank 0", |d| {
            rand(&[], 1, DType::F32)
                .to_device(d)
                .unwrap()
                .matmul(&rand(&[4, 2], 2, DType::F32).to_device(d).unwrap())
                .unwrap_err()
        }),
        ("batch broadcast", |d| {
            rand(&[2, 3, 4], 1, DType::F32)
                .to_device(d)
                .unwrap()
                .matmul(&rand(&[3, 4, 2], 2, DType::F32).to_device(d).unwrap())
                .unwrap_err()
        }),
    ];
    for (what, f) in cases {
        assert_eq!(f(&dev).to_string(), f(&Device::Cpu).to_string(), "{what}");
    }
    // operands on different devices
    let e = rand(&[3, 4], 1, DType::F32).matmul(&rand(&[4, 2], 2, DType::F32).to_device(&dev).unwrap()).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
}

#[test]
fn tf32_is_off_by_default() {
    // (not switched on here: the tests of this binary run concurrently, and on a GPU a
    // concurrent f32 test would then see TF32 results)
    assert!(!cuda::allow_tf32(), "TF32 must be off by default");
    cuda::set_allow_tf32(false);
    assert!(!cuda::allow_tf32());
}
