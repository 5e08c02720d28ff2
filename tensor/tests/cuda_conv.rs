//! conv2d (forward, input and weight gradients) and conv1d on CUDA tensors against the CPU:
//! im2col + GEMM + bias epilogue, col2im, and GEMMs accumulated over images, with strides,
//! padding, dilation and groups.

use stapes_tensor::ops::nn::Conv2dParams;
use stapes_tensor::{cuda, DType, Device, Generator, Tensor};

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu).unwrap()
}

fn close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}[{i}]: cuda {a} vs cpu {b}");
    }
}

#[test]
fn conv2d_forward_and_backward_match_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    // (n, c_in, h, w, c_out, kh, kw, stride, padding, dilation, groups)
    type Case = (usize, usize, usize, usize, usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], usize);
    let cases: [Case; 5] = [
        (2, 3, 9, 11, 4, 3, 3, [1, 1], [1, 1], [1, 1], 1),
        (1, 1, 8, 40, 8, 3, 3, [1, 1], [1, 1], [1, 1], 1),
        (3, 4, 10, 7, 6, 3, 2, [2, 1], [1, 0], [1, 2], 2),
        (2, 6, 7, 7, 6, 1, 1, [1, 1], [0, 0], [1, 1], 3),
        (1, 2, 5, 6, 3, 5, 3, [1, 2], [2, 1], [1, 1], 1),
    ];
    for (ci, &(n, c_in, h, w, c_out, kh, kw, stride, padding, dilation, groups)) in cases.iter().enumerate() {
        let x = randn(10 + ci as u64, &[n, c_in, h, w]);
        let wt = randn(20 + ci as u64, &[c_out, c_in / groups, kh, kw]).mul_scalar(0.3).unwrap();
        let b = randn(30 + ci as u64, &[c_out]);
        let p = Conv2dParams { stride, padding, dilation, groups };
        let y = x.conv2d(&wt, Some(&b), stride, padding, dilation, groups).unwrap();
        let gy = randn(40 + ci as u64, y.dims());
        let gx = Tensor::conv2d_backward_input(&gy, &wt, x.dims(), &p).unwrap();
        let gw = Tensor::conv2d_backward_weight(&x, &gy, wt.dims(), &p).unwrap();

        let (xd, wd, bd, gyd) = (
            x.to_device(&dev).unwrap(),
            wt.to_device(&dev).unwrap(),
            b.to_device(&dev).unwrap(),
            gy.to_device(&dev).unwrap(),
        );
        let yd = xd.conv2d(&wd, Some(&bd), stride, padding, dilation, groups).unwrap();
        assert_eq!(yd.device(), &dev);
        close(&format!("case {ci} forward"), &yd, &y, 1e-5);
        let yn = xd.conv2d(&wd, None, stride, padding, dilation, groups).unwrap();
        close(
            &format!("case {ci} forward without bias"),
            &yn,
            &x.conv2d(&wt, None, stride, padding, dilation, groups).unwrap(),
            1e-5,
        );
        let gxd = Tensor::conv2d_backward_input(&gyd, &wd, x.dims(), &p).unwrap();
        close(&format!("case {ci} grad input"), &gxd, &gx, 1e-5);
        let gwd = Tensor::conv2d_backward_weight(&xd, &gyd, wt.dims(), &p).unwrap();
        close(&format!("case {ci} grad weight"), &gwd, &gw, 1e-5);
        // a strided (transposed-then-back) input view is read correctly
        let xv = xd.transpose(2, 3).unwrap().transpose(2, 3).unwrap();
        close(
            &format!("case {ci} view"),
            &xv.conv2d(&wd, Some(&bd), stride, padding, dilation, groups).unwrap(),
            &y,
            1e-5,
        );
    }
    // half precision: computed in f32, rounded once, as on the CPU
    let x = randn(1, &[2, 3, 6, 6]).to_dtype(DType::BF16).unwrap();
    let wt = randn(2, &[4, 3, 3, 3]).to_dtype(DType::BF16).unwrap();
    let want = x.conv2d(&wt, None, [1, 1], [1, 1], [1, 1], 1).unwrap();
    let got = x.to_device(&dev).unwrap().conv2d(&wt.to_device(&dev).unwrap(), None, [1, 1], [1, 1], [1, 1], 1).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    close("bf16 forward", &got, &want, 1e-2);
    // conv1d goes through conv2d
    let x1 = randn(3, &[2, 4, 30]);
    let w1 = randn(4, &[5, 4, 3]);
    let want = x1.conv1d(&w1, None, 2, 1, 1, 1).unwrap();
    let got = x1.to_device(&dev).unwrap().conv1d(&w1.to_device(&dev).unwrap(), None, 2, 1, 1, 1).unwrap();
    close("conv1d", &got, &want, 1e-5);
    // errors as on the CPU
    let e = xd_err(&dev);
    assert!(e.contains("conv2d"), "{e}");
}

fn xd_err(dev: &Device) -> String {
    let x = Tensor::zeros([1, 3, 5, 5], DType::F32, dev).unwrap();
    let w = Tensor::zeros([2, 4, 3, 3], DType::F32, dev).unwrap();
    x.conv2d(&w, None, [1, 1], [0, 0], [1, 1], 1).unwrap_err().to_string()
}

#[test]
fn pooling_forward_and_backward_match_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let x = randn(50, &[2, 3, 11, 9]);
    let xd = x.to_device(&dev).unwrap();
    use stapes_tensor::Pool2d;
    let pools = [
        Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
        },
        Pool2d {
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: true,
            count_include_pad: false,
        },
        Pool2d {
            kernel: [2, 3],
            stride: [1, 2],
            padding: [0, 1],
            dilation: [2, 1],
            ceil_mode: false,
            count_include_pad: true,
        },
    ];
    for (i, p) in pools.iter().enumerate() {
        let (y, idx) = x.max_pool2d_with_indices(p).unwrap();
        let (yd, idxd) = xd.max_pool2d_with_indices(p).unwrap();
        assert_eq!((yd.device(), idxd.device()), (&dev, &dev));
        close(&format!("max pool {i}"), &yd, &y, 0.0);
        assert_eq!(idxd.to_vec::<i64>().unwrap(), idx.to_vec::<i64>().unwrap(), "argmax {i}");
        let gy = randn(60 + i as u64, y.dims());
        let gx = Tensor::max_pool2d_backward(&gy, &idx, x.dims(), p).unwrap();
        let gxd = Tensor::max_pool2d_backward(&gy.to_device(&dev).unwrap(), &idxd, x.dims(), p).unwrap();
        close(&format!("max pool {i} backward"), &gxd, &gx, 1e-6);
        if p.dilation == [1, 1] {
            let a = x.avg_pool2d(p.kernel, p.stride, p.padding, p.ceil_mode, p.count_include_pad).unwrap();
            let ad = xd.avg_pool2d(p.kernel, p.stride, p.padding, p.ceil_mode, p.count_include_pad).unwrap();
            close(&format!("avg pool {i}"), &ad, &a, 1e-6);
            let ga = Tensor::avg_pool2d_backward(&gy, x.dims(), p).unwrap();
            let gad = Tensor::avg_pool2d_backward(&gy.to_device(&dev).unwrap(), x.dims(), p).unwrap();
            close(&format!("avg pool {i} backward"), &gad, &ga, 1e-6);
        }
    }
    // a narrowed (non-exact buffer) input
    let xn = xd.narrow(0, 0, 1).unwrap();
    let p = &pools[0];
    close(
        "narrowed input",
        &xn.max_pool2d_with_indices(p).unwrap().0,
        &x.narrow(0, 0, 1).unwrap().max_pool2d_with_indices(p).unwrap().0,
        0.0,
    );
    close(
        "narrowed conv input",
        &xn.conv2d(&Tensor::ones([2, 3, 3, 3], DType::F32, &dev).unwrap(), None, [1, 1], [0, 0], [1, 1], 1).unwrap(),
        &x.narrow(0, 0, 1)
            .unwrap()
            .conv2d(&Tensor::ones([2, 3, 3, 3], DType::F32, &Device::Cpu).unwrap(), None, [1, 1], [0, 0], [1, 1], 1)
            .unwrap(),
        1e-5,
    );
}
