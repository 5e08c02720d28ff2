//! Autograd on CUDA tensors: the same graph built from `Var`s on cuda:0 and on the CPU gives the
//! same loss, the same gradients and, after a few plain SGD steps written with tensor ops, the
//! same parameters. cuda:0 is the GPU when there is one, else the CUDA emulator (the tests'
//! builds), so this runs in CI.

use stapes_autograd::Var;
use stapes_tensor::{cuda, DType, Device, Generator, Tensor};

fn randn(seed: u64, shape: &[usize], scale: f64) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, scale, shape, DType::F32, &Device::Cpu).unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let (g, w) = (got.to_device(&Device::Cpu).unwrap().to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}[{i}]: cuda {a} vs cpu {b}");
    }
}

/// A two-layer MLP classifier: `log_softmax(tanh(x W1 + b1) W2 + b2)`, cross-entropy through
/// `gather`, plus an L2 term through `sqr` and `mean`, so the backward pass crosses matmul,
/// broadcasting (bias grads are reductions), element-wise grads, softmax and index ops.
fn loss(x: &Var, labels: &Tensor, params: &[Var]) -> Var {
    let [w1, b1, w2, b2] = params else { unreachable!() };
    let h = x.matmul(w1).unwrap().add(b1).unwrap().tanh().unwrap();
    let logits = h.matmul(w2).unwrap().add(b2).unwrap();
    let lp = logits.log_softmax(1).unwrap();
    let picked = lp.gather(1, labels).unwrap(); // [B, 1]
    let nll = picked.mean_all().unwrap().neg().unwrap();
    let l2 = w1.sqr().unwrap().mean_all().unwrap().mul_scalar(1e-2).unwrap();
    nll.add(&l2).unwrap()
}

#[test]
fn mlp_gradients_and_sgd_steps_match_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let (b, i, h, c) = (12, 7, 33, 5);
    let init = [randn(1, &[i, h], 0.4), randn(2, &[h], 0.1), randn(3, &[h, c], 0.3), randn(4, &[c], 0.1)];
    let x = randn(5, &[b, i], 1.0);
    let labels =
        Tensor::from_vec((0..b as i64).map(|k| (k * 3) % c as i64).collect::<Vec<_>>(), [b, 1], &Device::Cpu).unwrap();

    let run = |d: &Device| -> (Vec<f32>, Vec<Vec<Tensor>>, Vec<Tensor>) {
        let mut params: Vec<Var> = init.iter().map(|t| Var::leaf(t.to_device(d).unwrap())).collect();
        let xv = Var::constant(x.to_device(d).unwrap());
        let y = labels.to_device(d).unwrap();
        let (mut losses, mut grads) = (Vec::new(), Vec::new());
        for _step in 0..4 {
            let l = loss(&xv, &y, &params);
            assert_eq!(l.tensor().device(), d);
            losses.push(l.tensor().to_scalar_f64().unwrap() as f32);
            l.backward().unwrap();
            let g: Vec<Tensor> = params.iter().map(|p| p.grad().expect("grad")).collect();
            for gi in &g {
                assert_eq!(gi.device(), d, "gradients stay on the parameters' device");
            }
            // plain SGD with tensor ops: p <- p - 0.5 g
            params = params
                .iter()
                .zip(&g)
                .map(|(p, g)| Var::leaf(p.tensor().sub(&g.mul_scalar(0.5).unwrap()).unwrap()))
                .collect();
            grads.push(g);
        }
        (losses, grads, params.iter().map(|p| p.tensor().clone()).collect())
    };
    let (l_cpu, g_cpu, p_cpu) = run(&Device::Cpu);
    let (l_gpu, g_gpu, p_gpu) = run(&dev);
    for (s, (a, b)) in l_gpu.iter().zip(&l_cpu).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "loss at step {s}: cuda {a} vs cpu {b}");
    }
    assert!(l_cpu[3] < l_cpu[0], "the loss falls: {l_cpu:?}");
    for (s, (gg, gc)) in g_gpu.iter().zip(&g_cpu).enumerate() {
        for (k, (a, b)) in gg.iter().zip(gc).enumerate() {
            assert_close(&format!("step {s} grad of param {k}"), a, b, 2e-5);
        }
    }
    for (k, (a, b)) in p_gpu.iter().zip(&p_cpu).enumerate() {
        assert_close(&format!("final param {k}"), a, b, 2e-5);
    }
}
