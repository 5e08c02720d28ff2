//! The element-wise ops on `Device::Cuda(0)` (kernels/cuda/ew.cu) against the same ops on the
//! CPU: every unary op (with its parameters), binary op and comparison, `where_cond`,
//! `masked_fill`, `isnan` and `all_finite`, for every float dtype (comparisons and `where` for
//! every dtype), with broadcasting, 0-dim and empty tensors, strided and transposed views, sizes
//! that are not multiples of 4 or of the 256-thread block, and NaN, infinities and -0.0 in the
//! data. The same bodies run on the emulator (CI) and on a GPU (`cuda::test_device`).
//!
//! Tolerances, stated per comparison:
//! * exact (bit for bit, NaN matching any NaN) where both devices evaluate the same IEEE
//!   formula: neg, abs, relu, sqrt, rsqrt, recip, sqr, sign, clamp, affine (add/mul_scalar),
//!   powf(2), add, sub, mul, div, maximum, minimum, comparisons, where; for f16/bf16 too, since
//!   both compute in f32 and round once;
//! * transcendental functions (exp, log, sin, cos, tanh, sigmoid, pow, powf): 4 ulps of f32
//!   (CUDA's libdevice and Rust's libm each round within 1 to 2 ulps), 1e-13 relative for f64,
//!   and one rounding of the storage type for f16 (2^-10) and bf16 (2^-7), as rounding a value
//!   that differs in its last f32 bit can flip the half rounding by one unit;
//! * the GELU family: the CPU evaluates it in f64 with an erf of |error| < 1.2e-7 and rounds
//!   once; the GPU in the compute type. Absolute 1e-6 plus the transcendental relative
//!   tolerance (the cancellation in 1 + erf(x/√2) for negative x costs absolute, not relative,
//!   accuracy).

use stapes_tensor::ops::elementwise::{BinaryOp, CmpOp, UnaryOp};
use stapes_tensor::{cuda, DType, Device, Error, Tensor};

const FLOATS: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];
const ALL: [DType; 7] = [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::U8, DType::I8];

/// `n` values over about [-5, 5], with NaN, ±inf, ±0 and a tiny value sprinkled in (unless
/// `finite`). Deterministic.
fn values(n: usize, seed: usize, finite: bool) -> Vec<f64> {
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1e-30, 1.0, -1.0];
    (0..n)
        .map(|i| {
            let j = i * 7 + seed * 13;
            if !finite && j % 19 == 3 {
                specials[(j / 19) % specials.len()]
            } else if j % 23 == 5 {
                [-0.0, 0.0, 2.0, 0.5][(j / 23) % 4]
            } else {
                ((j * 37 + seed * 11) % 201) as f64 * 0.05 - 5.0
            }
        })
        .collect()
}

/// A CPU tensor of `dtype` with the given values (converted with the CPU's cast rules).
fn cpu(vals: Vec<f64>, dims: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(vals, dims.to_vec(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

#[derive(Clone, Copy, Debug)]
struct Tol {
    rtol: f64,
    atol: f64,
}
const EXACT: Tol = Tol { rtol: 0.0, atol: 0.0 };

/// The transcendental tolerance of a dtype (see the module header).
fn approx(dtype: DType) -> Tol {
    match dtype {
        DType::F32 => Tol { rtol: 4.0 * f32::EPSILON as f64, atol: 0.0 },
        DType::F64 => Tol { rtol: 1e-13, atol: 1e-300 },
        DType::F16 => Tol { rtol: 2f64.powi(-10), atol: 2f64.powi(-24) },
        DType::BF16 => Tol { rtol: 2f64.powi(-7), atol: 1e-38 },
        _ => EXACT,
    }
}

/// The GELU family's tolerance (see the module header).
fn gelu_tol(dtype: DType) -> Tol {
    let t = approx(dtype);
    Tol { rtol: t.rtol.max(1e-6), atol: t.atol.max(1e-6) }
}

/// `got` (on the CUDA device) equals `want` (on the CPU) within `tol`: dtype, shape, values;
/// exact comparisons are bitwise (so -0.0 != 0.0), NaN matches any NaN.
#[track_caller]
fn assert_matches(got: &Tensor, want: &Tensor, tol: Tol, what: &str) {
    assert!(got.device().is_cuda(), "{what}: result on {}", got.device());
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert!(got.is_contiguous() && got.layout().offset() == 0, "{what}: result not dense");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (&a, &e)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_nan() || e.is_nan() {
            a.is_nan() && e.is_nan()
        } else if tol.rtol == 0.0 && tol.atol == 0.0 || a.is_infinite() || e.is_infinite() {
            a.to_bits() == e.to_bits()
        } else {
            (a - e).abs() <= tol.atol + tol.rtol * e.abs()
        };
        assert!(
            ok,
            "{what}: element {i} of {}: CUDA {a:e} ({:#x}), CPU {e:e} ({:#x}); tolerance {tol:?}",
            g.len(),
            a.to_bits(),
            e.to_bits()
        );
    }
}

/// The tolerance of an op for a dtype.
type TolFn = fn(DType) -> Tol;

/// Every unary op, with the tolerance its formula allows.
fn unary_cases() -> Vec<(UnaryOp, TolFn)> {
    fn exact(_: DType) -> Tol {
        EXACT
    }
    vec![
        (UnaryOp::Neg, exact),
        (UnaryOp::Exp, approx),
        (UnaryOp::Log, approx),
        (UnaryOp::Sqrt, exact),
        (UnaryOp::Rsqrt, exact),
        (UnaryOp::Abs, exact),
        (UnaryOp::Relu, exact),
        (UnaryOp::Gelu, gelu_tol),
        (UnaryOp::GeluTanh, gelu_tol),
        (UnaryOp::Sigmoid, approx),
        (UnaryOp::Tanh, approx),
        (UnaryOp::Sin, approx),
        (UnaryOp::Cos, approx),
        (UnaryOp::Powf(2.0), exact),
        (UnaryOp::Powf(3.0), approx),
        (UnaryOp::Powf(0.5), approx),
        (UnaryOp::Powf(-1.5), approx),
        (UnaryOp::Clamp(-1.0, 2.5), exact),
        (UnaryOp::Clamp(0.1, 0.1), exact),
        (UnaryOp::Affine(1.5, -0.25), exact),
        (UnaryOp::Affine(0.1, 0.3), exact),
        (UnaryOp::Recip, exact),
        (UnaryOp::Sqr, exact),
        (UnaryOp::Sign, exact),
        (UnaryOp::GeluGrad, gelu_tol),
        (UnaryOp::GeluTanhGrad, gelu_tol),
    ]
}

#[test]
fn unary_ops_match_cpu_for_every_float_dtype() {
    let Some(dev) = cuda::test_device() else { return };
    // 7 x 37 = 259 elements: not a multiple of 4, more than one 256-thread block
    let dims = [7, 37];
    for dtype in FLOATS {
        let x = cpu(values(259, 1, false), &dims, dtype);
        let g = x.to_device(&dev).unwrap();
        for (op, tol) in unary_cases() {
            let what = format!("{op:?} {dtype}");
            assert_matches(&g.unary(op).unwrap(), &x.unary(op).unwrap(), tol(dtype), &what);
        }
        // a transposed view (copied to dense on the device first), and the named methods
        let (xt, gt) = (x.transpose(0, 1).unwrap(), g.transpose(0, 1).unwrap());
        for (op, tol) in unary_cases() {
            let what = format!("{op:?} {dtype} transposed");
            assert_matches(&gt.unary(op).unwrap(), &xt.unary(op).unwrap(), tol(dtype), &what);
        }
        type Method = fn(&Tensor) -> stapes_tensor::Result<Tensor>;
        let methods: [(&str, Method); 8] = [
            ("exp", |t| t.exp()),
            ("add_scalar", |t| t.add_scalar(0.75)),
            ("mul_scalar", |t| t.mul_scalar(-3.0)),
            ("affine", |t| t.affine(2.0, 1.0)),
            ("clamp", |t| t.clamp(-0.5, 0.5)),
            ("powf", |t| t.powf(2.0)),
            ("relu", |t| t.relu()),
            ("sign", |t| t.sign()),
        ];
        for (name, m) in methods {
            let tol = if name == "exp" { approx(dtype) } else { EXACT };
            assert_matches(&m(&gt).unwrap(), &m(&xt).unwrap(), tol, &format!("{name} {dtype} transposed"));
        }
    }
}

#[test]
fn unary_sizes_empty_scalar_and_grid_stride() {
    let Some(dev) = cuda::test_device() else { return };
    // f32 exercises the float4 body and the scalar tail (n % 4 = 0..3), f16/bf16 the 8-element
    // body and its tail (n % 8 = 0..7); 9001 elements make the emulator's grid (8 blocks x 256
    // threads) loop even over float4s, 16397 (= 8 * 2049 + 5) over 8-element vectors
    for n in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 255, 256, 257, 1029, 9001, 16397] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let x = cpu(values(n, 2, false), &[n], dtype);
            let g = x.to_device(&dev).unwrap();
            for op in [UnaryOp::Neg, UnaryOp::Affine(1.25, 0.5), UnaryOp::Sqr] {
                assert_matches(&g.unary(op).unwrap(), &x.unary(op).unwrap(), EXACT, &format!("{op:?} {dtype} n={n}"));
            }
        }
    }
    // 0-dim and empty multi-dim tensors
    for dims in [vec![], vec![0, 3], vec![2, 0]] {
        let n = dims.iter().product();
        let x = cpu(values(n, 3, true), &dims, DType::F32);
        let g = x.to_device(&dev).unwrap();
        assert_matches(&g.exp().unwrap(), &x.exp().unwrap(), approx(DType::F32), &format!("exp {dims:?}"));
    }
    // a narrowed view that is contiguous but starts past element 0
    let x = cpu(values(40, 4, false), &[8, 5], DType::F64);
    let g = x.to_device(&dev).unwrap();
    let (xv, gv) = (x.narrow(0, 3, 4).unwrap(), g.narrow(0, 3, 4).unwrap());
    assert_matches(&gv.neg().unwrap(), &xv.neg().unwrap(), EXACT, "neg of narrow");
    let (xv, gv) = (x.narrow(0, 0, 2).unwrap(), g.narrow(0, 0, 2).unwrap());
    assert_matches(&gv.neg().unwrap(), &xv.neg().unwrap(), EXACT, "neg of narrow at 0");
}

/// Shapes of binary operands: broadcast in both directions, 0-dim, 1-element, dense same-shape
/// (the contiguous kernels), empty, and sizes that are not multiples of 4.
fn binary_shapes() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![3, 1, 5], vec![4, 5]),
        (vec![4, 5], vec![4, 5]),
        (vec![1031], vec![1031]),
        (vec![], vec![2, 3]),
        (vec![2, 3], vec![]),
        (vec![1], vec![7]),
        (vec![6, 1], vec![1, 9]),
        (vec![0, 5], vec![1, 5]),
        (vec![2, 3, 4, 5], vec![3, 1, 5]),
    ]
}

fn binary_tol(op: BinaryOp, dtype: DType) -> Tol {
    match op {
        BinaryOp::Pow => approx(dtype),
        _ => EXACT,
    }
}

const BINARY_OPS: [BinaryOp; 7] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Pow];

#[test]
fn binary_ops_match_cpu_with_broadcasting() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in FLOATS {
        for (i, (da, db)) in binary_shapes().into_iter().enumerate() {
            let a = cpu(values(da.iter().product(), i, false), &da, dtype);
            let b = cpu(values(db.iter().product(), i + 5, false), &db, dtype);
            let (ga, gb) = (a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
            for op in BINARY_OPS {
                let what = format!("{op:?} {dtype} {da:?} with {db:?}");
                assert_matches(&ga.binary(&gb, op).unwrap(), &a.binary(&b, op).unwrap(), binary_tol(op, dtype), &what);
            }
        }
    }
    // more elements than the emulator's grid has threads (8 blocks x 256), so the grid-stride
    // loops iterate: the dense f32 kernel over float4s (8195 = 4 * 2048 + 3, a scalar tail of
    // 3), the dense f16/bf16 kernels over 8-element vectors (16397 = 8 * 2049 + 5: one vector
    // more than the grid's threads, and a tail of 5), and the broadcasting kernel (4125 elements)
    for (da, db) in [(vec![8195], vec![8195]), (vec![16397], vec![16397]), (vec![5, 1, 33], vec![1, 25, 33])] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let a = cpu(values(da.iter().product(), 1, false), &da, dtype);
            let b = cpu(values(db.iter().product(), 2, false), &db, dtype);
            let (ga, gb) = (a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
            for op in [BinaryOp::Sub, BinaryOp::Div, BinaryOp::Minimum] {
                let what = format!("{op:?} {dtype} {da:?} with {db:?}");
                assert_matches(&ga.binary(&gb, op).unwrap(), &a.binary(&b, op).unwrap(), EXACT, &what);
            }
        }
    }
}

#[test]
fn binary_ops_read_views_in_place() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in FLOATS {
        let a = cpu(values(6 * 7, 1, false), &[6, 7], dtype);
        let b = cpu(values(7 * 6, 2, false), &[7, 6], dtype);
        let (ga, gb) = (a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
        type View = fn(&Tensor, &Tensor) -> (Tensor, Tensor);
        let views: [(&str, View); 4] = [
            ("a + b^T", |a, b| (a.clone(), b.transpose(0, 1).unwrap())),
            ("a^T + b", |a, b| (a.transpose(0, 1).unwrap(), b.clone())),
            ("narrow + narrow", |a, b| {
                (a.narrow(1, 2, 4).unwrap(), b.narrow(0, 3, 4).unwrap().transpose(0, 1).unwrap())
            }),
            ("row broadcast of a narrow", |a, b| (a.narrow(0, 5, 1).unwrap(), b.transpose(0, 1).unwrap())),
        ];
        for (name, view) in views {
            let (x, y) = view(&a, &b);
            let (gx, gy) = view(&ga, &gb);
            for op in BINARY_OPS {
                let what = format!("{op:?} {dtype} {name}");
                assert_matches(&gx.binary(&gy, op).unwrap(), &x.binary(&y, op).unwrap(), binary_tol(op, dtype), &what);
            }
        }
        // the named methods
        assert_matches(&ga.add(&ga).unwrap(), &a.add(&a).unwrap(), EXACT, "add");
        assert_matches(&ga.maximum(&gb.t().unwrap()).unwrap(), &a.maximum(&b.t().unwrap()).unwrap(), EXACT, "maximum");
    }
}

#[test]
fn maximum_minimum_nan_and_signed_zero() {
    let Some(dev) = cuda::test_device() else { return };
    let a = [f64::NAN, 1.0, f64::NAN, 0.0, -0.0, f64::INFINITY, -1.0, 2.0];
    let b = [1.0, f64::NAN, f64::NAN, -0.0, 0.0, 3.0, f64::NEG_INFINITY, 2.0];
    for dtype in FLOATS {
        let (x, y) = (cpu(a.to_vec(), &[8], dtype), cpu(b.to_vec(), &[8], dtype));
        let (gx, gy) = (x.to_device(&dev).unwrap(), y.to_device(&dev).unwrap());
        for op in [BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Add, BinaryOp::Div] {
            assert_matches(&gx.binary(&gy, op).unwrap(), &x.binary(&y, op).unwrap(), EXACT, &format!("{op:?} {dtype}"));
        }
    }
}

const CMP_OPS: [CmpOp; 6] = [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge];

#[test]
fn comparisons_match_cpu_for_every_dtype() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in ALL {
        for (i, (da, db)) in binary_shapes().into_iter().enumerate() {
            // few distinct values, so equality is common
            let round =
                |v: Vec<f64>| v.into_iter().map(|x| if x.is_finite() { (x * 0.6).round() } else { x }).collect();
            let a = cpu(round(values(da.iter().product(), i, false)), &da, dtype);
            let b = cpu(round(values(db.iter().product(), i + 3, false)), &db, dtype);
            let (ga, gb) = (a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
            for op in CMP_OPS {
                let what = format!("{op:?} {dtype} {da:?} with {db:?}");
                assert_matches(&ga.cmp(&gb, op).unwrap(), &a.cmp(&b, op).unwrap(), EXACT, &what);
            }
        }
        // scalars, a transposed view, isnan
        let x = cpu(values(5 * 9, 4, false), &[5, 9], dtype);
        let g = x.to_device(&dev).unwrap();
        for op in CMP_OPS {
            for s in [0.0, -1.0, 2.5] {
                let what = format!("{op:?} {dtype} scalar {s}");
                assert_matches(&g.cmp_scalar(s, op).unwrap(), &x.cmp_scalar(s, op).unwrap(), EXACT, &what);
            }
            // a transposed view against a broadcast column of a narrowed view
            let (xt, gt) = (x.t().unwrap(), g.t().unwrap());
            let (xc, gc) = (xt.narrow(1, 2, 1).unwrap(), gt.narrow(1, 2, 1).unwrap());
            let what = format!("{op:?} {dtype} transposed");
            assert_matches(&gt.cmp(&gc, op).unwrap(), &xt.cmp(&xc, op).unwrap(), EXACT, &what);
        }
        assert_matches(&g.isnan().unwrap(), &x.isnan().unwrap(), EXACT, &format!("isnan {dtype}"));
        assert_matches(&g.lt(&g).unwrap(), &x.lt(&x).unwrap(), EXACT, &format!("lt {dtype}"));
    }
}

#[test]
fn where_and_masked_fill_match_cpu_for_every_dtype() {
    let Some(dev) = cuda::test_device() else { return };
    let shapes: [(&[usize], &[usize], &[usize]); 6] = [
        (&[4, 5], &[4, 5], &[4, 5]),
        (&[4, 1], &[1, 5], &[4, 5]),
        (&[3, 1, 5], &[4, 5], &[]),
        (&[], &[2, 3], &[2, 3]),
        (&[0, 3], &[1, 3], &[3]),
        (&[259], &[259], &[1]),
    ];
    for dtype in ALL {
        for (i, (dm, da, db)) in shapes.iter().enumerate() {
            let m: Vec<f64> =
                (0..dm.iter().product()).map(|j: usize| (j * 5 + i).is_multiple_of(3) as u8 as f64).collect();
            let mask = cpu(m, dm, DType::U8);
            let a = cpu(values(da.iter().product(), i, false), da, dtype);
            let b = cpu(values(db.iter().product(), i + 2, false), db, dtype);
            let (gm, ga, gb) = (mask.to_device(&dev).unwrap(), a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
            let what = format!("where {dtype} mask {dm:?}, {da:?}, {db:?}");
            assert_matches(&gm.where_cond(&ga, &gb).unwrap(), &mask.where_cond(&a, &b).unwrap(), EXACT, &what);
        }
        // masked_fill with a broadcast mask, on a transposed view, with special fill values
        let x = cpu(values(6 * 4, 7, false), &[6, 4], dtype);
        let g = x.to_device(&dev).unwrap();
        let mask = cpu(vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0], &[6], DType::U8);
        let gm = mask.to_device(&dev).unwrap();
        for v in [0.0, -1e9, f64::NEG_INFINITY, f64::NAN] {
            let what = format!("masked_fill {dtype} {v}");
            let (xt, gt) = (x.t().unwrap(), g.t().unwrap());
            assert_matches(&gt.masked_fill(&gm, v).unwrap(), &xt.masked_fill(&mask, v).unwrap(), EXACT, &what);
        }
        // a comparison's mask feeding where on the device
        let gmask = g.gt(&g.narrow(1, 1, 1).unwrap()).unwrap();
        let cmask = x.gt(&x.narrow(1, 1, 1).unwrap()).unwrap();
        let (gy, y) = (
            g.t().unwrap().contiguous().unwrap().reshape([6, 4]).unwrap(),
            x.t().unwrap().contiguous().unwrap().reshape([6, 4]).unwrap(),
        );
        let what = format!("where(gt) {dtype}");
        assert_matches(&gmask.where_cond(&g, &gy).unwrap(), &cmask.where_cond(&x, &y).unwrap(), EXACT, &what);
    }
}

#[test]
fn all_finite_matches_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in FLOATS {
        for n in [0usize, 1, 7, 300, 2500] {
            let base = values(n, 1, true);
            let mut cases = vec![("finite", base.clone())];
            for (name, bad) in [("nan", f64::NAN), ("inf", f64::INFINITY), ("-inf", f64::NEG_INFINITY)] {
                for at in [0, n / 2, n.saturating_sub(1)] {
                    if n > 0 {
                        let mut v = base.clone();
                        v[at] = bad;
                        cases.push((name, v));
                    }
                }
            }
            for (name, v) in cases {
                let x = cpu(v, &[n], dtype);
                let g = x.to_device(&dev).unwrap();
                assert_eq!(g.all_finite().unwrap(), x.all_finite().unwrap(), "all_finite {dtype} n={n} {name}");
            }
        }
        // a value that overflows f16/bf16 only on the cast is infinite there, on both devices
        let x = cpu(vec![1.0, 1e6, 1e39], &[3], dtype);
        assert_eq!(x.to_device(&dev).unwrap().all_finite().unwrap(), x.all_finite().unwrap(), "{dtype} overflow");
        // strided view: the non-finite element is outside the view
        let mut v = values(20, 2, true);
        v[1] = f64::NAN;
        let x = cpu(v, &[4, 5], dtype);
        let g = x.to_device(&dev).unwrap();
        let (xv, gv) = (x.narrow(1, 2, 3).unwrap(), g.narrow(1, 2, 3).unwrap());
        assert_eq!(gv.all_finite().unwrap(), xv.all_finite().unwrap(), "{dtype} view");
        assert!(gv.all_finite().unwrap());
    }
    // integer tensors are always finite
    let g = cpu(vec![1.0, 2.0], &[2], DType::I64).to_device(&dev).unwrap();
    assert!(g.all_finite().unwrap());
}

#[test]
fn equal_and_isnan_on_the_device() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in FLOATS {
        let x = cpu(values(50, 3, false), &[5, 10], dtype);
        let g = x.to_device(&dev).unwrap();
        assert_eq!(g.equal(&g).unwrap(), x.equal(&x).unwrap(), "{dtype} equal self (NaN by bits)");
        let y = g.add_scalar(1.0).unwrap();
        assert_eq!(g.equal(&y).unwrap(), x.equal(&x.add_scalar(1.0).unwrap()).unwrap(), "{dtype} equal shifted");
        assert_matches(&g.isnan().unwrap(), &x.isnan().unwrap(), EXACT, &format!("isnan {dtype}"));
    }
}

/// Both devices give the same error (its message), for the same bad call.
#[track_caller]
fn same_error(got: stapes_tensor::Result<Tensor>, want: stapes_tensor::Result<Tensor>, what: &str) {
    let (g, w) = (got.expect_err(what), want.expect_err(what));
    assert_eq!(g.to_string(), w.to_string(), "{what}");
}

#[test]
fn errors_match_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let a = cpu(values(12, 1, true), &[3, 4], DType::F32);
    let b = cpu(values(5, 2, true), &[5], DType::F32);
    let i = cpu(vec![1.0, 2.0, 3.0], &[3], DType::I64);
    let d = cpu(values(4, 3, true), &[4], DType::F64);
    let m = cpu(vec![1.0, 0.0, 1.0, 0.0], &[4], DType::U8);
    let up = |t: &Tensor| t.to_device(&dev).unwrap();
    let (ga, gb, gi, gd, gm) = (up(&a), up(&b), up(&i), up(&d), up(&m));

    // shape mismatch
    same_error(ga.add(&gb), a.add(&b), "add [3,4] + [5]");
    same_error(ga.lt(&gb), a.lt(&b), "lt [3,4] < [5]");
    same_error(gm.where_cond(&gb, &gb), m.where_cond(&b, &b), "where mask [4], [5]");
    same_error(gb.masked_fill(&gm, 0.0), b.masked_fill(&m, 0.0), "masked_fill [5] with [4]");
    let m34 = cpu(vec![1.0; 12], &[3, 4], DType::U8);
    same_error(gd.masked_fill(&up(&m34), 0.0), d.masked_fill(&m34, 0.0), "masked_fill mask larger");
    // integer dtype for float ops
    same_error(gi.exp(), i.exp(), "exp i64");
    same_error(gi.clamp(0.0, 1.0), i.clamp(0.0, 1.0), "clamp i64");
    same_error(gi.add(&gi), i.add(&i), "add i64");
    same_error(gm.affine(2.0, 1.0), m.affine(2.0, 1.0), "affine u8");
    // dtype mismatch
    same_error(ga.mul(&gd), a.mul(&d), "mul f32 * f64");
    same_error(gd.eq(&gi), d.eq(&i), "eq f64 == i64");
    same_error(gm.where_cond(&gd, &gi), m.where_cond(&d, &i), "where f64 / i64");
    // masks must be u8
    same_error(gd.where_cond(&gd, &gd), d.where_cond(&d, &d), "where f64 mask");
    same_error(gd.masked_fill(&gd, 1.0), d.masked_fill(&d, 1.0), "masked_fill f64 mask");
    // bad parameters
    same_error(ga.clamp(1.0, -1.0), a.clamp(1.0, -1.0), "clamp min > max");
    // device mismatch: CUDA with CPU, either way round
    for (what, r) in [
        ("add cuda + cpu", ga.add(&a)),
        ("add cpu + cuda", a.add(&ga)),
        ("lt cuda < cpu", gd.lt(&d)),
        ("where cuda mask, cpu values", gm.where_cond(&d, &d)),
        ("where cpu mask, cuda values", m.where_cond(&gd, &gd)),
        ("where mixed values", gm.where_cond(&gd, &d)),
    ] {
        match r {
            Err(Error::DeviceMismatch { .. }) => {}
            other => panic!("{what}: expected DeviceMismatch, got {other:?}"),
        }
    }
}
