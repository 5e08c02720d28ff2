//! Tensors on `Device::Cuda(0)`: data movement (upload, download, dense copies of views, fill,
//! casts) against the CPU. `cuda::test_device()` serves cuda:0 from the GPU when there is one,
//! else from the CUDA emulator (built into the tests), so these bodies run in CI and on a GPU.

use half::{bf16, f16};
use stapes_tensor::{cuda, DType, Device, Error, Tensor};

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173).collect()
}

#[test]
fn upload_download_round_trip_every_dtype() {
    let Some(dev) = cuda::test_device() else { return };
    let x = Tensor::from_vec(values(3 * 5 * 7), [3, 5, 7], &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8, DType::I8] {
        let c = x.to_dtype(dtype).unwrap();
        let g = c.to_device(&dev).unwrap();
        assert_eq!(g.device(), &dev);
        assert_eq!(g.dtype(), dtype);
        assert_eq!(g.dims(), &[3, 5, 7]);
        let back = g.to_device(&Device::Cpu).unwrap();
        assert_eq!(back.device(), &Device::Cpu);
        assert_eq!(back.to_vec_f64().unwrap(), c.to_vec_f64().unwrap(), "{dtype}");
    }
    // to_vec on a CUDA tensor downloads
    let g = x.to_device(&dev).unwrap();
    assert_eq!(g.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    // from_vec / from_slice straight onto the device
    let d = Tensor::from_vec(vec![1i64, -2, 3], 3, &dev).unwrap();
    assert_eq!(d.device(), &dev);
    assert_eq!(d.to_vec::<i64>().unwrap(), vec![1, -2, 3]);
    // empty tensors
    let e = Tensor::from_vec(Vec::<f32>::new(), [0, 4], &dev).unwrap();
    assert_eq!(e.to_vec::<f32>().unwrap(), Vec::<f32>::new());
}

#[test]
fn views_become_dense_on_the_device() {
    let Some(dev) = cuda::test_device() else { return };
    let x = Tensor::from_vec(values(4 * 6 * 5), [4, 6, 5], &Device::Cpu).unwrap();
    let g = x.to_device(&dev).unwrap();
    type View = fn(&Tensor) -> Tensor;
    let views: [(&str, View); 6] = [
        ("transpose(0, 2)", |t| t.transpose(0, 2).unwrap()),
        ("permute(1, 2, 0)", |t| t.permute(&[1, 2, 0]).unwrap()),
        ("narrow(1, 2, 3)", |t| t.narrow(1, 2, 3).unwrap()),
        ("narrow(0, 1, 2) of transpose", |t| t.transpose(1, 2).unwrap().narrow(0, 1, 2).unwrap()),
        ("expand", |t| t.narrow(0, 0, 1).unwrap().expand([3, 6, 5]).unwrap()),
        ("unsqueeze + broadcast", |t| t.narrow(2, 1, 1).unwrap().unsqueeze(0).unwrap().expand([2, 4, 6, 1]).unwrap()),
    ];
    for (name, view) in views {
        let want = view(&x).contiguous().unwrap();
        for dtype in [DType::F32, DType::F16, DType::F64, DType::I8] {
            let got = view(&g.to_dtype(dtype).unwrap());
            assert_eq!(got.device(), &dev);
            let dense = got.contiguous().unwrap();
            assert!(dense.is_contiguous() && dense.layout().offset() == 0, "{name}");
            assert_eq!(dense.dims(), want.dims(), "{name}");
            let want = want.to_dtype(dtype).unwrap().to_vec_f64().unwrap();
            // downloading the view itself goes through the same copy
            assert_eq!(got.to_vec_f64().unwrap(), want, "{name} {dtype}");
            assert_eq!(dense.to_device(&Device::Cpu).unwrap().to_vec_f64().unwrap(), want, "{name} {dtype}");
        }
    }
    // a strided CPU view uploads its row-major elements
    let v = x.transpose(0, 1).unwrap().narrow(0, 1, 3).unwrap();
    assert_eq!(v.to_device(&dev).unwrap().to_vec::<f32>().unwrap(), v.to_vec::<f32>().unwrap());
    // reshape of a transposed CUDA tensor (needs a dense copy)
    let r = g.transpose(0, 1).unwrap().reshape([6, 20]).unwrap();
    assert_eq!(
        r.to_vec::<f32>().unwrap(),
        x.transpose(0, 1).unwrap().reshape([6, 20]).unwrap().to_vec::<f32>().unwrap()
    );
}

#[test]
fn full_zeros_ones_on_the_device() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8, DType::I8] {
        for value in [0.0, 1.0, -2.5, 300.7] {
            let g = Tensor::full(value, [3, 37], dtype, &dev).unwrap();
            let c = Tensor::full(value, [3, 37], dtype, &Device::Cpu).unwrap();
            assert_eq!(g.device(), &dev);
            assert_eq!(g.to_vec_f64().unwrap(), c.to_vec_f64().unwrap(), "{value} as {dtype}");
        }
    }
    let z = Tensor::zeros([1000], DType::F32, &dev).unwrap();
    assert!(z.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
    let o = Tensor::ones([2, 3], DType::BF16, &dev).unwrap().ones_like().unwrap();
    assert_eq!(o.device(), &dev);
    assert_eq!(o.to_vec::<bf16>().unwrap(), vec![bf16::ONE; 6]);
}

/// `arange` on the device (an f64 kernel, then the cast) gives the CPU's values exactly: steps
/// that are not binary fractions, negative steps, empty ranges, every dtype, and more values than
/// the emulator's grid has threads.
#[test]
fn arange_on_the_device_matches_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let ranges =
        [(0.0, 10.0, 1.0), (-1.5, 2.0, 0.1), (5.0, -5.0, -0.7), (3.0, 3.0, 1.0), (0.0, 4100.3, 0.3), (1.0, 0.0, 1.0)];
    for (start, end, step) in ranges {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8] {
            let g = Tensor::arange(start, end, step, dtype, &dev).unwrap();
            let c = Tensor::arange(start, end, step, dtype, &Device::Cpu).unwrap();
            assert_eq!(g.device(), &dev);
            assert_eq!(g.dims(), c.dims(), "arange({start}, {end}, {step}) as {dtype}");
            let (gv, cv) = (g.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
            assert!(
                gv.iter().zip(&cv).all(|(a, b)| a.to_bits() == b.to_bits()),
                "arange({start}, {end}, {step}) as {dtype}"
            );
        }
    }
    for bad in [(0.0, 1.0, 0.0), (0.0, f64::INFINITY, 1.0), (0.0, 1e300, 1e-300)] {
        let e = Tensor::arange(bad.0, bad.1, bad.2, DType::F32, &dev).unwrap_err();
        assert!(e.to_string().contains("arange"), "{bad:?}: {e}");
    }
}

#[test]
fn casts_match_the_cpu_for_every_dtype_pair() {
    let Some(dev) = cuda::test_device() else { return };
    // Rounding ties, NaN, infinities, saturation, negative to unsigned, integer wrap-around.
    let special = [
        0.0,
        -0.0,
        0.5,
        1.5,
        2.5,
        -1.7,
        127.9,
        128.0,
        -129.0,
        255.5,
        256.0,
        300.0,
        -1000.0,
        65504.0,
        65520.0,
        1e10,
        -1e19,
        1e-8,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1.0 + 2f64.powi(-11),         // an f16 tie in f64
        1.0 + 2f64.powi(-11) + 1e-15, // just above it: must round up in one step
        3.0e38,
    ];
    let mut data: Vec<f64> = special.to_vec();
    data.extend((0..200).map(|i| ((i as f64) * 7.31).sin() * 10f64.powi(i % 7 - 2)));
    let x64 = Tensor::from_vec(data.clone(), data.len(), &Device::Cpu).unwrap();
    let dtypes = [DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::U8, DType::I8];
    for src in dtypes {
        let s = x64.to_dtype(src).unwrap();
        let g = s.to_device(&dev).unwrap();
        for dst in dtypes {
            let want = s.to_dtype(dst).unwrap();
            let got = g.to_dtype(dst).unwrap();
            assert_eq!(got.device(), &dev);
            assert_eq!(got.dtype(), dst);
            let (w, h) = (want.to_vec_f64().unwrap(), got.to_vec_f64().unwrap());
            for (i, (a, b)) in w.iter().zip(&h).enumerate() {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{src} -> {dst}, element {i} ({}): cpu {a}, cuda {b}",
                    data[i]
                );
            }
        }
    }
    // a cast of a strided view
    let m = Tensor::from_vec(values(12), [3, 4], &Device::Cpu).unwrap();
    let got = m.to_device(&dev).unwrap().t().unwrap().to_dtype(DType::F16).unwrap();
    assert_eq!(got.to_vec::<f16>().unwrap(), m.t().unwrap().to_dtype(DType::F16).unwrap().to_vec::<f16>().unwrap());
}

#[test]
fn device_errors_are_clear() {
    let Some(dev) = cuda::test_device() else { return };
    let c = Tensor::from_vec(values(6), [2, 3], &Device::Cpu).unwrap();
    let g = c.to_device(&dev).unwrap();
    // operands on two devices
    match c.add(&g) {
        Err(Error::DeviceMismatch { lhs, rhs, .. }) => assert_eq!((lhs, rhs), (Device::Cpu, dev)),
        other => panic!("expected DeviceMismatch, got {other:?}"),
    }
    if cuda::is_emulated() {
        // the emulator serves cuda:0 only
        let e = Tensor::zeros(3, DType::F32, &Device::Cuda(3)).unwrap_err();
        assert!(matches!(e, Error::DeviceUnavailable { device: Device::Cuda(3), .. }), "{e}");
        assert!(e.to_string().contains("cuda:0 only"), "{e}");
        assert!(!cuda::describe(0).is_empty());
    }
    assert_eq!(Device::cuda_if_available(), Device::Cuda(0));
}

/// Distinct small integers (exact in every dtype, bf16 and u8 included), so a misplaced element
/// shows in an exact comparison.
fn exact_values(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 37 + 11) % 251) as f64).collect()
}

#[test]
fn transposed_views_become_dense_exactly() {
    let Some(dev) = cuda::test_device() else { return };
    type View = Box<dyn Fn(&Tensor) -> Tensor>;
    // (source shape, view, what): plain t() around the 32-element tile edges, batched transposes
    // (one batch dim after merging, batches of 1 and many), and views with offsets.
    let t = |shape: &[usize]| -> (Vec<usize>, View) { (shape.to_vec(), Box::new(|x: &Tensor| x.t().unwrap())) };
    let tr = |shape: &[usize], a: usize, b: usize| -> (Vec<usize>, View) {
        (shape.to_vec(), Box::new(move |x: &Tensor| x.transpose(a, b).unwrap()))
    };
    let mut cases: Vec<(Vec<usize>, View, &str)> = Vec::new();
    for shape in [[1, 1], [8, 8], [31, 33], [32, 32], [33, 65], [7, 100], [100, 7], [64, 1], [2, 300], [97, 130]] {
        let (s, v) = t(&shape);
        cases.push((s, v, "t()"));
    }
    for (shape, a, b) in [
        (vec![3, 100, 7], 1, 2),
        (vec![3, 33, 40], 1, 2),
        (vec![1, 40, 50], 1, 2),
        (vec![300, 9, 12], 1, 2),
        (vec![5, 33, 65], 1, 2),
        (vec![2, 3, 40, 50], 2, 3),
        (vec![40, 3, 50], 0, 2),
        (vec![4, 6, 5], 0, 2),
    ] {
        let (s, v) = tr(&shape, a, b);
        cases.push((s, v, "transpose"));
    }
    cases.push((vec![40, 50], Box::new(|x: &Tensor| x.narrow(1, 3, 40).unwrap().t().unwrap()), "narrow(1) then t()"));
    cases.push((vec![50, 40], Box::new(|x: &Tensor| x.narrow(0, 9, 33).unwrap().t().unwrap()), "narrow(0) then t()"));
    cases.push((
        vec![3, 40, 50],
        Box::new(|x: &Tensor| x.narrow(1, 2, 35).unwrap().transpose(1, 2).unwrap()),
        "narrow(1) then transpose(1, 2)",
    ));
    cases.push((
        vec![4, 40, 50],
        Box::new(|x: &Tensor| x.narrow(0, 1, 2).unwrap().narrow(2, 5, 33).unwrap().transpose(1, 2).unwrap()),
        "narrow(0), narrow(2) then transpose(1, 2)",
    ));
    for (shape, view, what) in &cases {
        let n: usize = shape.iter().product();
        let x = Tensor::from_vec(exact_values(n), shape.as_slice(), &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8] {
            let c = x.to_dtype(dtype).unwrap();
            let want = view(&c).contiguous().unwrap();
            let got = view(&c.to_device(&dev).unwrap()).contiguous().unwrap();
            assert!(got.is_contiguous() && got.layout().offset() == 0, "{shape:?} {what}");
            assert_eq!(got.dims(), want.dims(), "{shape:?} {what}");
            assert_eq!(got.dtype(), dtype);
            let got = got.to_device(&Device::Cpu).unwrap().to_vec_f64().unwrap();
            assert_eq!(got, want.to_vec_f64().unwrap(), "{shape:?} {what} {dtype}");
        }
    }
}

#[test]
fn large_transfers_round_trip_exactly() {
    // 3 MiB + 12 bytes of f32: above the pinned-staging threshold (1 MiB by default) and not a
    // multiple of its 8 MiB chunk, so on a GPU the upload and download go through the staging
    // path with a partial last chunk (on the emulator, the plain copy).
    let Some(dev) = cuda::test_device() else { return };
    let n = (3 << 20) / 4 + 3;
    let data: Vec<f32> = (0..n).map(|i| (i as f32) * 0.5 - 1e5).collect();
    let x = Tensor::from_vec(data.clone(), n, &Device::Cpu).unwrap();
    let g = x.to_device(&dev).unwrap();
    assert_eq!(g.to_vec::<f32>().unwrap(), data);
    // 20 MiB + 1 byte of u8: several chunks, an odd length.
    let m = (20 << 20) + 1;
    let bytes: Vec<u8> = (0..m).map(|i| (i * 7 % 253) as u8).collect();
    let y = Tensor::from_vec(bytes.clone(), m, &Device::Cpu).unwrap();
    let back = y.to_device(&dev).unwrap().to_device(&Device::Cpu).unwrap();
    assert_eq!(back.to_vec::<u8>().unwrap(), bytes);
    // a device-side op on the uploaded data sees every element (the upload is ordered before it)
    let doubled = g.add(&g).unwrap().to_vec::<f32>().unwrap();
    assert!(doubled.iter().zip(&data).all(|(a, b)| *a == 2.0 * b));
}
