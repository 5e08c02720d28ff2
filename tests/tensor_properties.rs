//! Property tests of the tensor layer: broadcasting binary ops against a naive index loop, and
//! views (transpose, permute, narrow, expand, reshape) against explicit copies.

use proptest::prelude::*;
use stapes::tensor::{DType, Device, Generator, Tensor};

fn randn(seed: u64, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape.to_vec(), dtype, &Device::Cpu).unwrap()
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Value of a contiguous row-major array of `shape` at a broadcast multi-index of the output.
fn at(data: &[f64], shape: &[usize], out_idx: &[usize]) -> f64 {
    let lead = out_idx.len() - shape.len();
    let st = strides(shape);
    let mut off = 0;
    for (i, &d) in shape.iter().enumerate() {
        let k = if d == 1 { 0 } else { out_idx[lead + i] };
        off += k * st[i];
    }
    data[off]
}

fn multi_index(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn broadcasting_matches_naive_loop(
        out in prop::collection::vec(1usize..=5, 1..=4),
        mask_a in 0u32..16, mask_b in 0u32..16, drop_a in 0usize..3, drop_b in 0usize..3, seed in 0u64..10_000,
        dtype in prop::sample::select(vec![DType::F32, DType::F64, DType::BF16]),
    ) {
        let mk = |mask: u32, drop: usize| -> Vec<usize> {
            let drop = drop.min(out.len() - 1);
            out[drop..].iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect()
        };
        let (sa, sb) = (mk(mask_a, drop_a), mk(mask_b, drop_b));
        let a = randn(seed, &sa, dtype);
        let b = randn(seed + 1, &sb, dtype);
        let (av, bv) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
        let y = a.mul(&b).unwrap().add(&a).unwrap();
        let out_shape = stapes::tensor::broadcast_shapes("t", &sa, &sb).unwrap();
        prop_assert_eq!(y.dims(), out_shape.as_slice());
        let yv = y.to_vec_f64().unwrap();
        let tol = if dtype == DType::BF16 { 2e-2 } else { 1e-6 };
        for (flat, &got) in yv.iter().enumerate() {
            let idx = multi_index(flat, &out_shape);
            let (x, z) = (at(&av, &sa, &idx), at(&bv, &sb, &idx));
            let want = x * z + x;
            prop_assert!((got - want).abs() <= tol * (1.0 + want.abs()), "at {:?}: {} vs {}", idx, got, want);
        }
        // comparisons broadcast the same way
        let m = a.gt(&b).unwrap().to_vec::<u8>().unwrap();
        for (flat, &got) in m.iter().enumerate() {
            let idx = multi_index(flat, &out_shape);
            prop_assert_eq!(got == 1, at(&av, &sa, &idx) > at(&bv, &sb, &idx));
        }
    }

    #[test]
    fn views_match_copies(shape in prop::collection::vec(1usize..=5, 2..=4), seed in 0u64..10_000, start in 0usize..3) {
        let x = randn(seed, &shape, DType::F32);
        let xv = x.to_vec::<f32>().unwrap();
        let r = shape.len();
        // permute (reverse the dims): a view whose contiguous copy must match index arithmetic
        let perm: Vec<usize> = (0..r).rev().collect();
        let p = x.permute(&perm).unwrap();
        prop_assert!(p.same_storage(&x));
        let pv = p.to_vec::<f32>().unwrap();
        let pshape: Vec<usize> = perm.iter().map(|&i| shape[i]).collect();
        let st = strides(&shape);
        for (flat, &got) in pv.iter().enumerate() {
            let idx = multi_index(flat, &pshape);
            let off: usize = idx.iter().enumerate().map(|(k, &i)| i * st[perm[k]]).sum();
            prop_assert_eq!(got, xv[off]);
        }
        // narrow the last dim, then reshape (view or copy) and compare with an explicit copy
        let last = shape[r - 1];
        let s = start.min(last - 1);
        let len = last - s;
        let nv = x.narrow(r - 1, s, len).unwrap();
        let mut want = vec![];
        for (flat, &v) in xv.iter().enumerate() {
            if multi_index(flat, &shape)[r - 1] >= s {
                want.push(v);
            }
        }
        prop_assert_eq!(nv.to_vec::<f32>().unwrap(), want.clone());
        let flat_n = want.len();
        prop_assert_eq!(nv.reshape([flat_n]).unwrap().to_vec::<f32>().unwrap(), want);
        // transpose twice is the identity, and a transposed view reshapes through a copy
        let t = x.transpose(0usize, r - 1).unwrap();
        prop_assert_eq!(t.transpose(0usize, r - 1).unwrap().to_vec::<f32>().unwrap(), xv.clone());
        let tc = t.contiguous().unwrap();
        prop_assert_eq!(t.reshape([xv.len()]).unwrap().to_vec::<f32>().unwrap(), tc.to_vec::<f32>().unwrap());
        // expand: every broadcast copy equals the source
        let e = x.unsqueeze(0usize).unwrap().expand({ let mut s2 = vec![3]; s2.extend(&shape); s2 }).unwrap();
        let ev = e.to_vec::<f32>().unwrap();
        for k in 0..3 {
            prop_assert_eq!(&ev[k * xv.len()..(k + 1) * xv.len()], xv.as_slice());
        }
        // ops on a non-contiguous view equal ops on its copy
        prop_assert_eq!(t.exp().unwrap().to_vec::<f32>().unwrap(), tc.exp().unwrap().to_vec::<f32>().unwrap());
        let sum_v = t.sum([0usize], false).unwrap().to_vec::<f32>().unwrap();
        let sum_c = tc.sum([0usize], false).unwrap().to_vec::<f32>().unwrap();
        for (a, b) in sum_v.iter().zip(&sum_c) {
            prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()));
        }
    }

    #[test]
    fn reductions_match_naive(shape in prop::collection::vec(1usize..=6, 1..=3), seed in 0u64..10_000, pick in 0usize..3) {
        let x = randn(seed, &shape, DType::F64);
        let xv = x.to_vec::<f64>().unwrap();
        let d = pick % shape.len();
        let s = x.sum([d], true).unwrap().to_vec::<f64>().unwrap();
        let m = x.max([d], true).unwrap().to_vec::<f64>().unwrap();
        let am = x.argmax(d, true).unwrap().to_vec::<i64>().unwrap();
        let mut out_shape = shape.clone();
        out_shape[d] = 1;
        let mut want_s = vec![0.0; s.len()];
        let mut want_m = vec![f64::NEG_INFINITY; s.len()];
        let mut want_am = vec![0i64; s.len()];
        let ost = strides(&out_shape);
        for (flat, &v) in xv.iter().enumerate() {
            let idx = multi_index(flat, &shape);
            let o: usize = idx.iter().enumerate().map(|(k, &i)| if k == d { 0 } else { i * ost[k] }).sum();
            want_s[o] += v;
            if v > want_m[o] {
                want_m[o] = v;
                want_am[o] = idx[d] as i64;
            }
        }
        for i in 0..s.len() {
            prop_assert!((s[i] - want_s[i]).abs() < 1e-9);
            prop_assert_eq!(m[i], want_m[i]);
        }
        prop_assert_eq!(am, want_am);
    }
}

#[test]
fn half_types_round_trip_and_compute_in_f32() {
    let x = Tensor::from_vec(vec![1.0f32, -2.5, 3.25, 1e-3], [4], &Device::Cpu).unwrap();
    for dt in [DType::F16, DType::BF16] {
        let h = x.to_dtype(dt).unwrap();
        assert_eq!(h.dtype(), dt);
        let y = h.exp().unwrap();
        assert_eq!(y.dtype(), dt);
        let want = x.exp().unwrap().to_vec::<f32>().unwrap();
        let got = y.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-2 * w.abs().max(1.0), "{dt:?}: {g} vs {w}");
        }
    }
    // integer casts truncate toward zero, like PyTorch
    assert_eq!(x.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap(), vec![1, -2, 3, 0]);
}

#[test]
fn creation_and_display() {
    let a = Tensor::arange(0.0, 5.0, 1.0, DType::I64, &Device::Cpu).unwrap();
    assert_eq!(a.to_vec::<i64>().unwrap(), vec![0, 1, 2, 3, 4]);
    let f = Tensor::full(2.5, [2, 2], DType::F32, &Device::Cpu).unwrap();
    assert_eq!(f.to_vec::<f32>().unwrap(), vec![2.5; 4]);
    stapes::tensor::manual_seed(42);
    let r1 = Tensor::rand([5], DType::F32, &Device::Cpu).unwrap();
    stapes::tensor::manual_seed(42);
    let r2 = Tensor::rand([5], DType::F32, &Device::Cpu).unwrap();
    assert!(r1.equal(&r2).unwrap());
    assert!(format!("{f}").starts_with("tensor([[2.5000, 2.5000]"));
    assert_eq!(Tensor::scalar(3.5f64, &Device::Cpu).unwrap().to_scalar::<f64>().unwrap(), 3.5);
}
