//! Model compression against PyTorch (issue 19): `tools/golden/compress.py` computed the
//! distillation term with `F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True) · T²`
//! and fake quantization with `torch.fake_quantize_per_channel_affine` /
//! `fake_quantize_per_tensor_affine`, values and gradients.

mod common;

use std::collections::BTreeMap;

use common::{assert_close, load_golden};
use stapes::autograd::Var;
use stapes::nn::layers::{Linear, Sequential};
use stapes::nn::qat::{
    disable_qat, fake_quantize_activation, fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine,
    fake_quantize_weight, prepare_qat, FakeQuant,
};
use stapes::nn::quantized::{activation_qparams, quantize_dynamic, quantize_weight, QScheme};
use stapes::nn::rnn::{Lstm, RnnConfig};
use stapes::nn::{Forward, Module};
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

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn fake_quantize_matches_pytorch_values_and_straight_through_gradients() {
    let g = golden();
    for case in ["fq_channel", "fq_channel_asym"] {
        let at = |k: &str| g[&format!("{case}.{k}")].clone();
        let axis = at("axis").to_vec::<i64>().unwrap()[0] as usize;
        let zp: Vec<i32> = at("zp").to_vec::<i64>().unwrap().into_iter().map(|v| v as i32).collect();
        let x = Var::leaf(at("x"));
        let y = fake_quantize_per_channel_affine(&x, &f32s(&at("scale")), &zp, axis, -128, 127).unwrap();
        assert_close(y.tensor(), &at("out"), Some(0.0), Some(1e-7), &format!("{case} out"));
        y.backward_with(&at("go")).unwrap();
        assert_close(&x.grad().unwrap(), &at("grad"), Some(0.0), Some(0.0), &format!("{case} grad"));
        // some values were clamped: the gradient is not the upstream one everywhere
        assert_ne!(f32s(&at("grad")), f32s(&at("go")), "{case}: the golden case clamps nothing");
    }
    let qp = g["fq_tensor.qparams"].to_vec::<f64>().unwrap();
    let (scale, zp) = activation_qparams(&f32s(&g["fq_tensor.x"]));
    assert_eq!((scale, zp), (qp[0] as f32, qp[1] as i32), "activation qparams");
    for (label, mul) in [("", 1.0), ("_clamped", 3.0)] {
        let x = Var::leaf(g["fq_tensor.x"].affine(mul, 0.0).unwrap());
        let y = fake_quantize_per_tensor_affine(&x, scale, zp, 0, 127).unwrap();
        assert_close(y.tensor(), &g[&format!("fq_tensor.out{label}")], Some(0.0), Some(1e-7), "per-tensor out");
        y.backward_with(&g["fq_tensor.go"]).unwrap();
        assert_close(&x.grad().unwrap(), &g[&format!("fq_tensor.grad{label}")], Some(0.0), Some(0.0), "grad");
    }
    // the activation scheme picks the same parameters
    let x = Var::leaf(g["fq_tensor.x"].clone());
    let y = fake_quantize_activation(&x).unwrap();
    assert_close(y.tensor(), &g["fq_tensor.out"], Some(0.0), Some(1e-7), "fake_quantize_activation");
}

#[test]
fn fake_quantize_rejects_bad_input() {
    let x = Var::leaf(Tensor::zeros([2, 3], DType::F32, &Device::Cpu).unwrap());
    let msg = fake_quantize_per_channel_affine(&x, &[0.1; 2], &[0; 2], 1, -128, 127).err().unwrap().to_string();
    assert!(msg.contains("2 scales") && msg.contains("3 channels"), "{msg}");
    let msg = fake_quantize_per_channel_affine(&x, &[0.1; 2], &[0; 2], 2, -128, 127).err().unwrap().to_string();
    assert!(msg.contains("axis 2"), "{msg}");
    let msg = fake_quantize_per_tensor_affine(&x, 0.0, 0, 0, 127).err().unwrap().to_string();
    assert!(msg.contains("scale 0"), "{msg}");
    let msg = fake_quantize_per_tensor_affine(&x, 0.1, 0, 5, 1).err().unwrap().to_string();
    assert!(msg.contains("quant_min 5 > quant_max 1"), "{msg}");
    let i = Var::constant(Tensor::zeros([2], DType::I64, &Device::Cpu).unwrap());
    assert!(fake_quantize_per_tensor_affine(&i, 0.1, 0, 0, 127).is_err());
    let nan = Var::leaf(Tensor::from_vec(vec![1.0f32, f32::NAN], [1, 2], &Device::Cpu).unwrap());
    let msg = fake_quantize_activation(&nan).err().unwrap().to_string();
    assert!(msg.contains("NaN"), "{msg}");
    let msg = fake_quantize_weight(&nan, QScheme::PerChannel).err().unwrap().to_string();
    assert!(msg.contains("NaN") && msg.contains("column 1"), "{msg}");
}

/// A model prepared for QAT computes, in training, what the converted int8 model's weights
/// give: the fake-quantized weight equals `int8 · scale` of `quantize_weight`; gradients reach
/// the float weights; `quantize_dynamic` converts it afterwards and turns fake quantization off.
#[test]
fn prepared_layers_see_the_int8_weights_and_still_train() {
    stapes::tensor::manual_seed(7);
    let model = Sequential::new()
        .with(Lstm::new(RnnConfig { batch_first: true, ..RnnConfig::new(6, 5) }).unwrap())
        .with(Linear::new(5, 4, true).unwrap());
    let lin = Linear::new(6, 4, true).unwrap();
    for scheme in [QScheme::PerChannel, QScheme::PerTensor] {
        let w = Var::leaf(lin.weight.tensor());
        let fq = fake_quantize_weight(&w, scheme).unwrap();
        let (q, scales) = quantize_weight(&f32s(&lin.weight.tensor()), 4, 6, scheme).unwrap();
        let want: Vec<f32> =
            q.iter().enumerate().map(|(i, &v)| v as f32 * scales[if scales.len() == 1 { 0 } else { i / 6 }]).collect();
        assert_eq!(f32s(fq.tensor()), want, "{scheme:?}");
    }
    assert_eq!(prepare_qat(&model, FakeQuant { scheme: QScheme::PerChannel, activations: true }).unwrap(), 2);
    let x = Tensor::randn([2, 3, 6], DType::F32, &Device::Cpu).unwrap();
    let y = model.forward(&Var::constant(x.clone())).unwrap();
    y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for (name, p) in model.named_parameters() {
        let g = p.grad().unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(f32s(&g).iter().any(|v| *v != 0.0), "{name}: zero gradient");
    }
    // the prepared output differs from the float one, and is close to the int8 model's
    let prepared = f32s(y.tensor());
    disable_qat(&model);
    let float = f32s(model.forward(&Var::constant(x.clone())).unwrap().tensor());
    assert_ne!(prepared, float);
    prepare_qat(&model, FakeQuant { scheme: QScheme::PerChannel, activations: true }).unwrap();
    quantize_dynamic(&model, QScheme::PerChannel).unwrap();
    let int8 = f32s(model.forward(&Var::constant(x)).unwrap().tensor());
    let err_prepared = prepared.iter().zip(&int8).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let err_float = float.iter().zip(&int8).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err_prepared < 0.02, "prepared vs int8: {err_prepared} (float vs int8: {err_float})");
    let msg = prepare_qat(&model, FakeQuant::default()).err().unwrap().to_string();
    assert!(msg.contains("quantized already"), "{msg}");
    let msg = prepare_qat(&Sequential::new(), FakeQuant::default()).err().unwrap().to_string();
    assert!(msg.contains("no Linear, LSTM or GRU"), "{msg}");
}
