//! Random tensors on a CUDA device: Philox4x32-10 keyed by one draw of the host generator,
//! checked word for word against the CPU reference (`stapes_kernels::cuda::random`), so the
//! values provably depend on the seed and the element index only, not on the launch shape.

use half::{bf16, f16};
use stapes_kernels::cuda::random::{philox4x32, unit24, unit53};
use stapes_tensor::random::Generator;
use stapes_tensor::{cuda, DType, Device, Error, Tensor};

/// The key a fresh `Generator::new(seed)` hands the kernels.
fn key(seed: u64) -> u64 {
    Generator::new(seed).next_u64()
}

#[test]
fn uniform_matches_the_philox_reference_exactly() {
    let Some(dev) = cuda::test_device() else { return };
    for n in [1usize, 3, 4, 5, 255, 1024, 3001] {
        let t = Tensor::rand_with(&mut Generator::new(11), 0.0, 1.0, [n], DType::F32, &dev).unwrap();
        assert_eq!(t.device(), &dev);
        let got = t.to_vec::<f32>().unwrap();
        let k = key(11);
        for (i, &g) in got.iter().enumerate() {
            let want = unit24(philox4x32((i / 4) as u64, k)[i % 4]);
            assert_eq!(g, want, "n={n} element {i}");
        }
        // half dtypes: the same f32 value, rounded once
        let h = Tensor::rand_with(&mut Generator::new(11), 0.0, 1.0, [n], DType::F16, &dev).unwrap();
        let hb = Tensor::rand_with(&mut Generator::new(11), 0.0, 1.0, [n], DType::BF16, &dev).unwrap();
        let (h, hb) = (h.to_vec::<f16>().unwrap(), hb.to_vec::<bf16>().unwrap());
        for i in 0..n {
            assert_eq!(h[i], f16::from_f32(got[i]));
            assert_eq!(hb[i], bf16::from_f32(got[i]));
        }
    }
    // f64: 53 bits from two words per element
    let t =
        Tensor::rand_with(&mut Generator::new(3), 0.0, 1.0, [101], DType::F64, &dev).unwrap().to_vec::<f64>().unwrap();
    let k = key(3);
    for (i, &g) in t.iter().enumerate() {
        let w = philox4x32((i / 2) as u64, k);
        assert_eq!(g, unit53(w[2 * (i % 2)], w[2 * (i % 2) + 1]), "element {i}");
    }
    // a range: lo + (hi - lo) * u (within one rounding: the GPU may fuse the multiply-add)
    let r =
        Tensor::rand_with(&mut Generator::new(4), -2.0, 3.0, [999], DType::F32, &dev).unwrap().to_vec::<f32>().unwrap();
    let k = key(4);
    for (i, &g) in r.iter().enumerate() {
        let want = -2.0f32 + 5.0 * unit24(philox4x32((i / 4) as u64, k)[i % 4]);
        assert!((g - want).abs() <= 4.0 * f32::EPSILON && (-2.0..3.0).contains(&g), "{i}: {g} vs {want}");
    }
}

#[test]
fn normal_matches_box_muller_on_the_reference_words() {
    let Some(dev) = cuda::test_device() else { return };
    let n = 4002;
    let t = Tensor::randn_with(&mut Generator::new(9), 0.5, 2.0, [n], DType::F32, &dev).unwrap();
    let got = t.to_vec::<f32>().unwrap();
    let k = key(9);
    for (i, &g) in got.iter().enumerate() {
        let w = philox4x32((i / 4) as u64, k);
        let p = (i % 4) / 2;
        let u1 = ((w[2 * p] >> 8) + 1) as f64 / (1u64 << 24) as f64;
        let u2 = unit24(w[2 * p + 1]) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let z =
            if i % 2 == 0 { r * (std::f64::consts::TAU * u2).cos() } else { r * (std::f64::consts::TAU * u2).sin() };
        let want = 0.5 + 2.0 * z;
        assert!((g as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "{i}: {g} vs {want}");
    }
    let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = got.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    assert!((mean - 0.5).abs() < 0.1 && (var - 4.0).abs() < 0.3, "mean {mean} var {var}");
    // f64 normals are standard too
    let d = Tensor::randn_with(&mut Generator::new(2), 0.0, 1.0, [4000], DType::F64, &dev)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d.len() as f64;
    assert!(mean.abs() < 0.06 && (var - 1.0).abs() < 0.08, "mean {mean} var {var}");
}

#[test]
fn seeds_reproduce_and_streams_advance() {
    let Some(dev) = cuda::test_device() else { return };
    let mut g1 = Generator::new(5);
    let mut g2 = Generator::new(5);
    let a1 = Tensor::rand_with(&mut g1, 0.0, 1.0, [3, 50], DType::F32, &dev).unwrap();
    let a2 = Tensor::rand_with(&mut g2, 0.0, 1.0, [3, 50], DType::F32, &dev).unwrap();
    assert_eq!(a1.to_vec::<f32>().unwrap(), a2.to_vec::<f32>().unwrap());
    let b1 = Tensor::rand_with(&mut g1, 0.0, 1.0, [3, 50], DType::F32, &dev).unwrap();
    assert_ne!(a1.to_vec::<f32>().unwrap(), b1.to_vec::<f32>().unwrap(), "the next draw uses a new key");
    // the default generator too
    stapes_tensor::manual_seed(77);
    let x = Tensor::randn([64], DType::F32, &dev).unwrap().to_vec::<f32>().unwrap();
    stapes_tensor::manual_seed(77);
    let y = Tensor::randn([64], DType::F32, &dev).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(x, y);
    assert!(matches!(Tensor::rand([3], DType::I64, &dev), Err(Error::UnsupportedDType { .. })));
}

#[test]
fn bernoulli_matches_the_reference_and_rejects_bad_probabilities() {
    let Some(dev) = cuda::test_device() else { return };
    let probs: Vec<f32> = (0..1003).map(|i| (i % 11) as f32 / 10.0).map(|p| p.min(1.0)).collect();
    let p = Tensor::from_vec(probs.clone(), [1003], &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        let pd = p.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
        let m = pd.bernoulli_with(&mut Generator::new(21)).unwrap();
        assert_eq!((m.device(), m.dtype()), (&dev, dtype));
        let got = m.to_vec_f64().unwrap();
        let k = key(21);
        let pr = p.to_dtype(dtype).unwrap().to_vec_f64().unwrap();
        for i in 0..probs.len() {
            let u = if dtype == DType::F64 {
                let w = philox4x32((i / 2) as u64, k);
                unit53(w[2 * (i % 2)], w[2 * (i % 2) + 1])
            } else {
                unit24(philox4x32((i / 4) as u64, k)[i % 4]) as f64
            };
            assert_eq!(got[i], if u < pr[i] { 1.0 } else { 0.0 }, "{dtype} element {i}");
        }
    }
    // a strided view of probabilities
    let pm = Tensor::full(0.5, [8, 9], DType::F32, &dev).unwrap().t().unwrap();
    let frac = pm.bernoulli_with(&mut Generator::new(1)).unwrap().to_vec::<f32>().unwrap().iter().sum::<f32>() / 72.0;
    assert!((0.2..0.8).contains(&frac), "{frac}");
    for bad in [1.5f32, -0.1, f32::NAN] {
        let q = Tensor::from_vec(vec![0.5f32, bad, 0.25], 3, &dev).unwrap();
        let e = q.bernoulli_with(&mut Generator::new(1)).unwrap_err();
        assert!(e.to_string().contains("probabilities must be in [0, 1]"), "{e}");
        assert!(e.to_string().contains(&format!("{}", bad as f64)) || bad.is_nan(), "{e}");
    }
}

#[test]
fn philox_words_kernel_matches_the_reference_at_large_offsets() {
    let Some(dev) = cuda::test_device() else { return };
    let backend = cuda::backend("philox_words test", &dev).unwrap();
    for offset in [0u64, 1, 1 << 32, u64::MAX - 10] {
        let mut out = backend.zeros::<u32>(37).unwrap();
        stapes_kernels::cuda::random::philox_words(&backend, &mut out, 0xDEAD_BEEF_1234, offset).unwrap();
        let got = backend.download(&out).unwrap();
        for (i, &w) in got.iter().enumerate() {
            assert_eq!(
                w,
                philox4x32(offset.wrapping_add((i / 4) as u64), 0xDEAD_BEEF_1234)[i % 4],
                "offset {offset}, {i}"
            );
        }
    }
}
