//! Model compression against PyTorch (issue 19): `tools/golden/compress.py` computed the
//! distillation term with `F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True) · T²`
//! and fake quantization with `torch.fake_quantize_per_channel_affine` /
//! `fake_quantize_per_tensor_affine`, values and gradients.

mod common;

use std::collections::BTreeMap;

use common::{assert_close, load_golden};
use stapes::autograd::Var;
use stapes::speech::distill::kd_loss;
use stapes::tensor::{DType, Device, Tensor};

fn golden() -> BTreeMap<String, Tensor> {
    load_golden(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/compress.safetensors")).tensors
}

fn lengths(t: &Tensor) -> Vec<usize> {
    t.to_vec::<i64>().unwrap().into_iter().map(|v| v as usize).collect()
}

#[test]
fn distillation_term_and_gradient_match_kl_div() {
    let g = golden();
    for (case, skip) in [("kd", None), ("kd_skip", Some(0.6))] {
        let at = |k: &str| g[&format!("{case}.{k}")].clone();
        let temp = at("T").to_vec::<f64>().unwrap()[0];
        for dtype in [DType::F32, DType::F64] {
            let s = Var::leaf(at("student").to_dtype(dtype).unwrap());
            let (loss, n) =
                kd_loss(&s, &at("teacher").to_dtype(dtype).unwrap(), &lengths(&at("lengths")), temp, skip, 0).unwrap();
            let mask = at("mask").to_vec::<u8>().unwrap();
            assert_eq!(n, mask.iter().filter(|&&m| m == 1).count(), "{case}: frames counted");
            loss.backward().unwrap();
            // the golden values are f32 (PyTorch's f32 computation)
            let tol = Some(if dtype == DType::F32 { 1e-5 } else { 2e-6 });
            let want_loss = at("loss").to_dtype(dtype).unwrap();
            let got_loss = loss.tensor().reshape([1]).unwrap();
            assert_close(&got_loss, &want_loss, tol, Some(1e-6), &format!("{case} {dtype:?} loss"));
            let want_grad = at("grad").to_dtype(dtype).unwrap();
            assert_close(&s.grad().unwrap(), &want_grad, tol, Some(1e-7), &format!("{case} {dtype:?} gradient"));
        }
    }
    // the skip case leaves frames out: it is not the plain term
    let (a, b) = (g["kd.loss"].to_vec::<f32>().unwrap()[0], g["kd_skip.loss"].to_vec::<f32>().unwrap()[0]);
    assert!((a - b).abs() > 1e-3, "{a} vs {b}");
}

#[test]
fn distillation_term_rejects_bad_input() {
    let s = Var::leaf(Tensor::zeros([2, 4, 3], DType::F32, &Device::Cpu).unwrap());
    let t = Tensor::zeros([2, 4, 3], DType::F32, &Device::Cpu).unwrap();
    let wrong = Tensor::zeros([2, 5, 3], DType::F32, &Device::Cpu).unwrap();
    let msg = kd_loss(&s, &wrong, &[4, 4], 2.0, None, 0).err().unwrap().to_string();
    assert!(msg.contains("kd_loss") && msg.contains("[2, 5, 3]"), "{msg}");
    let msg = kd_loss(&s, &t, &[4, 5], 2.0, None, 0).err().unwrap().to_string();
    assert!(msg.contains("lengths [4, 5]"), "{msg}");
    let msg = kd_loss(&s, &t, &[4, 4], 0.0, None, 0).err().unwrap().to_string();
    assert!(msg.contains("temperature"), "{msg}");
    let msg = kd_loss(&s, &t, &[4, 4], 1.0, None, 3).err().unwrap().to_string();
    assert!(msg.contains("blank 3"), "{msg}");
    // no frame counts: zero, with a zero gradient
    let (l, n) = kd_loss(&s, &t, &[0, 0], 2.0, None, 0).unwrap();
    assert_eq!((l.tensor().to_scalar_f64().unwrap(), n), (0.0, 0));
}
