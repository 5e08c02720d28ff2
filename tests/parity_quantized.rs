//! Dynamic int8 quantization against PyTorch (issue 19): `tools/golden/quantized.py` ran
//! `torch.ao.quantization.quantize_dynamic` (x86 engine) on a Linear layer (per-tensor and
//! per-channel weight scales) and on a 2-layer bidirectional LSTM. From PyTorch's own int8
//! weights and scales, stapes' quantized layers give PyTorch's outputs within one quantization
//! step; stapes' weight quantizer reproduces PyTorch's int8 weights and scales, and its choice
//! of activation parameters PyTorch's `_choose_qparams_per_tensor(x, reduce_range=True)`.

mod common;

use std::collections::BTreeMap;

use common::load_golden;
use stapes::nn::quantized::{activation_qparams, quantize_weight, QScheme, QuantizedLinear, QuantizedLstm};
use stapes::nn::rnn::RnnConfig;
use stapes::tensor::Tensor;

fn golden() -> BTreeMap<String, Tensor> {
    load_golden(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/quantized.safetensors")).tensors
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn i8s(t: &Tensor) -> Vec<i8> {
    t.to_vec::<i8>().unwrap()
}

#[test]
fn quantized_linear_matches_pytorch() {
    let g = golden();
    for (case, scheme) in [("lin_tensor", QScheme::PerTensor), ("lin_channel", QScheme::PerChannel)] {
        let at = |k: &str| &g[&format!("{case}.{k}")];
        let (w, wq, scales) = (f32s(at("weight")), i8s(at("wq")), f32s(at("scales")));
        // the weight quantizer: PyTorch's int8 values and scales
        let (q, s) = quantize_weight(&w, 40, 48, scheme).unwrap();
        assert_eq!(s.len(), scales.len(), "{case}");
        for (a, b) in s.iter().zip(&scales) {
            assert!((a - b).abs() <= b * 1e-6, "{case}: scale {a} vs {b}");
        }
        let differ = q.iter().zip(&wq).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{case}: {differ} int8 weights differ from PyTorch's");
        // the activation parameters
        let x = at("x");
        let xv = f32s(x);
        let (sx, zp) = activation_qparams(&xv);
        let want = at("x_qparams").to_vec::<f64>().unwrap();
        assert!((f64::from(sx) - want[0]).abs() <= want[0] * 1e-6, "{case}: x scale {sx} vs {}", want[0]);
        assert_eq!(f64::from(zp), want[1], "{case}: x zero point");
        // the layer, from PyTorch's int8 weights: within one quantization step of the output
        // (one input level times the largest weight scale) of PyTorch's
        let lin = QuantizedLinear::from_parts(wq, scales.clone(), Some(f32s(at("bias"))), 40, 48).unwrap();
        assert_eq!(lin.scheme(), scheme);
        let y = lin.forward(x).unwrap();
        assert_eq!(y.dims(), &[2, 5, 40]);
        let step = sx * scales.iter().cloned().fold(0f32, f32::max);
        let (got, want) = (f32s(&y), f32s(at("y")));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= step, "{case}: max |stapes - PyTorch| {worst} exceeds one step {step}");
        eprintln!("{case}: max |stapes - PyTorch| {worst:e} (one step {step:e})");
    }
}

#[test]
fn quantized_lstm_matches_pytorch() {
    let g = golden();
    let cfg = RnnConfig { num_layers: 2, bidirectional: true, batch_first: true, ..RnnConfig::new(12, 10) };
    let mut cells = Vec::new();
    for key in ["l0", "l0_reverse", "l1", "l1_reverse"] {
        let at = |k: &str| &g[&format!("lstm.{key}.{k}")];
        let lin = |w: &str, b: &str| {
            let t = at(&format!("{w}_q"));
            let (o, i) = (t.dims()[0], t.dims()[1]);
            QuantizedLinear::from_parts(i8s(t), f32s(at(&format!("{w}_scale"))), Some(f32s(at(b))), o, i).unwrap()
        };
        cells.push((lin("w_ih", "b_ih"), lin("w_hh", "b_hh")));
    }
    let lstm = QuantizedLstm::from_parts(cfg, cells).unwrap();
    let (y, h, c) = lstm.forward(&g["lstm.x"]).unwrap();
    assert_eq!(y.dims(), &[3, 7, 20]);
    for (name, got, want) in [("y", &y, "lstm.y"), ("h_n", &h, "lstm.h_n"), ("c_n", &c, "lstm.c_n")] {
        let (a, b) = (f32s(got), f32s(&g[want]));
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        eprintln!("lstm {name}: max |stapes - PyTorch| {worst:e}");
        assert!(worst < 1e-4, "lstm {name}: max |stapes - PyTorch| {worst}");
    }
}
