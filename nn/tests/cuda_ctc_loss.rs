//! The CTC loss on CUDA tensors (kernels/cuda/ctc.cu behind `stapes_nn::ctc`) against the CPU:
//! every reduction, log-probabilities and logits, padded and concatenated targets, both layouts,
//! repeated labels, inputs shorter than T, an impossible alignment with and without
//! zero_infinity, and the gradients.

use stapes_autograd::Var;
use stapes_nn::ctc::{ctc_loss, ctc_loss_from_logits, CtcLossOptions};
use stapes_nn::loss::Reduction;
use stapes_tensor::{cuda, DType, Device, Generator, Tensor};

fn close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_infinite() && a == b) || (a - b).abs() <= tol * (1.0 + b.abs());
        assert!(ok, "{what}[{i}]: cuda {a} vs cpu {b}");
    }
}

#[test]
fn ctc_loss_on_cuda_matches_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let (t, b, c) = (12, 4, 6);
    // sample 3 needs 2*3 - 1... its labels 2,2,2 need 5 frames, it gets 4: impossible
    let padded =
        Tensor::from_vec(vec![1i64, 2, 2, 3, 5, 1, 0, 0, 4, 4, 0, 0, 2, 2, 2, 0], [b, 4], &Device::Cpu).unwrap();
    let concat = Tensor::from_vec(vec![1i64, 2, 2, 3, 5, 1, 4, 4, 2, 2, 2], [11], &Device::Cpu).unwrap();
    let (il, tl) = ([12usize, 9, 7, 4], [4usize, 2, 2, 3]);
    for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        for zero_infinity in [true, false] {
            for (targets, batch_first) in [(&padded, false), (&concat, true)] {
                for logits in [false, true] {
                    let shape = if batch_first { [b, t, c] } else { [t, b, c] };
                    let x =
                        Tensor::randn_with(&mut Generator::new(7), 0.0, 1.0, shape, DType::F32, &Device::Cpu).unwrap();
                    let o = CtcLossOptions { blank: 0, reduction, zero_infinity, batch_first };
                    let what =
                        format!("{reduction:?} zero_inf={zero_infinity} batch_first={batch_first} logits={logits}");
                    let run = |x: &Tensor| -> (Tensor, Tensor) {
                        let v = Var::leaf(x.clone());
                        let loss = if logits {
                            ctc_loss_from_logits(&v, targets, &il, &tl, &o).unwrap()
                        } else {
                            ctc_loss(&v.log_softmax(2).unwrap(), targets, &il, &tl, &o).unwrap()
                        };
                        // a seed that is not all ones, so per-sample scaling is checked
                        let seed = if reduction == Reduction::None {
                            Tensor::from_vec(vec![1.0f32, 0.5, 2.0, 1.5], [b], x.device()).unwrap()
                        } else {
                            Tensor::full(0.7, (), DType::F32, x.device()).unwrap()
                        };
                        loss.backward_with(&seed).unwrap();
                        (loss.tensor().clone(), v.grad().unwrap())
                    };
                    let (lc, gc) = run(&x);
                    let (lg, gg) = run(&x.to_device(&dev).unwrap());
                    assert_eq!((lg.device(), gg.device()), (&dev, &dev), "{what}");
                    close(&format!("{what} loss"), &lg, &lc, 1e-5);
                    if zero_infinity {
                        close(&format!("{what} grad"), &gg, &gc, 1e-5);
                    }
                }
            }
        }
    }
    // f64 has no CUDA kernel: a clear error, not a trip through the host
    let x = Tensor::zeros([t, b, c], DType::F64, &dev).unwrap();
    let o = CtcLossOptions::default();
    let e = ctc_loss_from_logits(&Var::leaf(x), &padded, &il, &tl, &o).unwrap_err();
    assert!(e.to_string().contains("no CUDA kernel"), "{e}");
}
