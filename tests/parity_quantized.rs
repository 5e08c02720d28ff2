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

/// The 2-layer bidirectional `kind` ("lstm" or "gru") of the golden file: its configuration
/// and PyTorch's int8 projections per layer and direction.
fn golden_rnn(g: &BTreeMap<String, Tensor>, kind: &str) -> (RnnConfig, Vec<(QuantizedLinear, QuantizedLinear)>) {
    let cfg = RnnConfig { num_layers: 2, bidirectional: true, batch_first: true, ..RnnConfig::new(12, 10) };
    let mut cells = Vec::new();
    for key in ["l0", "l0_reverse", "l1", "l1_reverse"] {
        let at = |k: &str| &g[&format!("{kind}.{key}.{k}")];
        let lin = |w: &str, b: &str| {
            let t = at(&format!("{w}_q"));
            let (o, i) = (t.dims()[0], t.dims()[1]);
            QuantizedLinear::from_parts(i8s(t), f32s(at(&format!("{w}_scale"))), Some(f32s(at(b))), o, i).unwrap()
        };
        cells.push((lin("w_ih", "b_ih"), lin("w_hh", "b_hh")));
    }
    (cfg, cells)
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
    let (cfg, cells) = golden_rnn(&g, "lstm");
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

/// A packed batch (lengths 7, 4, 5): padded frames are not projected or quantized, the reverse
/// direction starts at each sequence's end, as PyTorch's quantized LSTM on a `PackedSequence`.
#[test]
fn quantized_lstm_with_lengths_matches_pytorch_packed() {
    let g = golden();
    let (cfg, cells) = golden_rnn(&g, "lstm");
    let lstm = QuantizedLstm::from_parts(cfg, cells).unwrap();
    let lens: Vec<usize> = g["lstm.lengths"].to_vec::<i64>().unwrap().iter().map(|&n| n as usize).collect();
    let (y, h, c) = lstm.forward_with(&g["lstm.x"], Some(&lens)).unwrap();
    for (name, got, want) in
        [("y", &y, "lstm.y_packed"), ("h_n", &h, "lstm.h_n_packed"), ("c_n", &c, "lstm.c_n_packed")]
    {
        let (a, b) = (f32s(got), f32s(&g[want]));
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        eprintln!("packed lstm {name}: max |stapes - PyTorch| {worst:e}");
        assert!(worst < 1e-4, "packed lstm {name}: max |stapes - PyTorch| {worst}");
    }
    let e = lstm.forward_with(&g["lstm.x"], Some(&[7, 0, 5])).unwrap_err().to_string();
    assert!(e.contains("lengths"), "{e}");
}

/// `quantize_dynamic` on a model: every Linear and LSTM converted in place, sizes reported,
/// outputs close to the float model's; the quantized state saves and loads into a fresh model
/// with identical outputs; quantizing twice, a model with nothing to quantize and a corrupted
/// scale are clear errors.
#[test]
fn quantize_dynamic_converts_saves_and_loads_a_model() {
    use stapes::autograd::Var;
    use stapes::nn::layers::{LayerNorm, Linear, Sequential};
    use stapes::nn::quantized::{is_quantized, load_quantized_state_dict, quantize_dynamic, quantized_state_dict};
    use stapes::nn::rnn::Lstm;
    use stapes::nn::{Forward, Module};
    use stapes::tensor::{DType, Device, Generator};
    let build = |seed: u64| {
        stapes::tensor::manual_seed(seed);
        let mut m = Sequential::new();
        m.push(Lstm::new(RnnConfig { bidirectional: true, batch_first: true, ..RnnConfig::new(16, 32) }).unwrap());
        m.push(Linear::new(64, 48, true).unwrap());
        m
    };
    let m = build(1);
    m.eval();
    let mut g = Generator::new(4);
    let x = Var::constant(Tensor::randn_with(&mut g, 0.0, 1.0, &[2, 9, 16][..], DType::F32, &Device::Cpu).unwrap());
    let float = f32s(m.forward(&x).unwrap().tensor());
    let report = quantize_dynamic(&m, QScheme::PerChannel).unwrap();
    assert_eq!(report.layers, vec!["0".to_string(), "1".to_string()]);
    // int8 weights (a quarter of f32) plus one f32 scale per output channel: 2 × (128 + 128)
    // for the LSTM's two directions, 48 for the Linear
    assert_eq!(report.int8_bytes, report.f32_bytes / 4 + 4 * (2 * 256 + 48), "{report:?}");
    assert!(is_quantized(&m));
    let quant = f32s(m.forward(&x).unwrap().tensor());
    let worst = float.iter().zip(&quant).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = float.iter().fold(0f32, |a, b| a.max(b.abs()));
    assert!(worst > 0.0 && worst < 0.02 * scale, "quantized vs float: {worst} (outputs up to {scale})");
    let e = quantize_dynamic(&m, QScheme::PerChannel).unwrap_err().to_string();
    assert!(e.contains("already quantized: 0, 1"), "{e}");
    let e = quantize_dynamic(&LayerNorm::new(&[4]).unwrap(), QScheme::PerTensor).unwrap_err().to_string();
    assert!(e.contains("no quantizable layers"), "{e}");

    // save, load into a fresh model of other weights: the same outputs, bit for bit
    let state = quantized_state_dict(&m).unwrap();
    assert!(state.contains_key("0.weight_ih_l0_int8") && state.contains_key("1.weight_scale"));
    assert!(!state.contains_key("1.weight") && state.contains_key("1.bias"));
    let fresh = build(2);
    fresh.eval();
    assert_eq!(load_quantized_state_dict(&fresh, &state).unwrap(), vec!["0".to_string(), "1".to_string()]);
    assert_eq!(f32s(fresh.forward(&x).unwrap().tensor()), quant);

    // a corrupted scale, a missing key: errors naming them, the model left as it was
    let mut bad = state.clone();
    bad.insert("1.weight_scale".into(), Tensor::from_vec(vec![f32::NAN; 48], [48], &Device::Cpu).unwrap());
    let other = build(3);
    let e = load_quantized_state_dict(&other, &bad).unwrap_err().to_string();
    assert!(e.contains("layer 1") && e.contains("weight_scale holds NaN"), "{e}");
    assert!(!is_quantized(&other));
    let mut bad = state.clone();
    bad.remove("1.bias");
    let e = load_quantized_state_dict(&other, &bad).unwrap_err().to_string();
    assert!(e.contains("missing keys") && e.contains("1.bias"), "{e}");
    let e = load_quantized_state_dict(&other, &other.state_dict()).unwrap_err().to_string();
    assert!(e.contains("no int8 weights"), "{e}");
}

/// The quantized GRU (gates r, z, n) against PyTorch's, on the plain and the packed batch.
#[test]
fn quantized_gru_matches_pytorch() {
    use stapes::nn::quantized::QuantizedGru;
    let g = golden();
    let (cfg, cells) = golden_rnn(&g, "gru");
    let gru = QuantizedGru::from_parts(cfg, cells).unwrap();
    let lens: Vec<usize> = g["gru.lengths"].to_vec::<i64>().unwrap().iter().map(|&n| n as usize).collect();
    for (lengths, sfx) in [(None, ""), (Some(lens.as_slice()), "_packed")] {
        let (y, h) = gru.forward_with(&g["gru.x"], lengths).unwrap();
        for (name, got) in [("y", &y), ("h_n", &h)] {
            let (a, b) = (f32s(got), f32s(&g[&format!("gru.{name}{sfx}")]));
            let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            eprintln!("gru{sfx} {name}: max |stapes - PyTorch| {worst:e}");
            assert!(worst < 1e-4, "gru{sfx} {name}: max |stapes - PyTorch| {worst}");
        }
    }
}

/// A GRU converts, saves and loads like an LSTM.
#[test]
fn quantize_dynamic_converts_a_gru() {
    use stapes::autograd::Var;
    use stapes::nn::quantized::{load_quantized_state_dict, quantize_dynamic, quantized_state_dict};
    use stapes::nn::rnn::Gru;
    use stapes::nn::Forward;
    use stapes::tensor::{DType, Device, Generator};
    let build = |seed: u64| {
        stapes::tensor::manual_seed(seed);
        Gru::new(RnnConfig { num_layers: 2, bidirectional: true, ..RnnConfig::new(8, 16) }).unwrap()
    };
    let m = build(5);
    let mut g = Generator::new(6);
    let x = Var::constant(Tensor::randn_with(&mut g, 0.0, 1.0, &[6, 3, 8][..], DType::F32, &Device::Cpu).unwrap());
    let float = f32s(m.forward(&x).unwrap().tensor());
    let report = quantize_dynamic(&m, QScheme::PerChannel).unwrap();
    assert_eq!(report.layers, vec![String::new()]);
    let quant = f32s(m.forward(&x).unwrap().tensor());
    let worst = float.iter().zip(&quant).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst > 0.0 && worst < 0.02, "quantized vs float GRU: {worst}");
    let e = m.forward_with(&x, Some(&x), None).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("zero state"), "{e}");
    let fresh = build(7);
    load_quantized_state_dict(&fresh, &quantized_state_dict(&m).unwrap()).unwrap();
    assert_eq!(f32s(fresh.forward(&x).unwrap().tensor()), quant);
}

/// On a CUDA device (the emulator here, a GPU in the GPU suite) a quantized Linear runs the
/// `__dp4a` kernel and gives the CPU path's outputs to the bit; a quantized model's Linear
/// layers do so too; a NaN input is an error naming the op.
#[test]
fn quantized_linear_on_cuda_matches_the_cpu_bitwise() {
    let Some(dev) = stapes::tensor::cuda::test_device() else { return };
    let g = golden();
    for case in ["lin_tensor", "lin_channel"] {
        let at = |k: &str| &g[&format!("{case}.{k}")];
        let (o, i) = (at("wq").dims()[0], at("wq").dims()[1]);
        let lin = QuantizedLinear::from_parts(i8s(at("wq")), f32s(at("scales")), Some(f32s(at("bias"))), o, i).unwrap();
        for x in [at("x").clone(), at("x").narrow(0usize, 0, 1).unwrap(), at("x").affine(40.0, -3.0).unwrap()] {
            let want = lin.forward(&x).unwrap();
            let got = lin.forward(&x.to_device(&dev).unwrap()).unwrap();
            assert_eq!(got.device(), &dev);
            assert_eq!(got.dims(), want.dims());
            let (a, b) = (f32s(&got.to_device(&stapes::tensor::Device::Cpu).unwrap()), f32s(&want));
            assert!(a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()), "{case}: {a:?} vs {b:?}");
        }
        let bad =
            Tensor::from_vec(vec![f32::NAN; i], [1, i], &stapes::tensor::Device::Cpu).unwrap().to_device(&dev).unwrap();
        let msg = lin.forward(&bad).unwrap_err().to_string();
        assert!(msg.contains("QuantizedLinear::forward") && msg.contains("finite"), "{msg}");
    }
}
