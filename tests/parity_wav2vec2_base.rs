//! A base-sized wav2vec2 (transformers' default configuration: 12 post-norm layers of 768, the
//! group-norm feature encoder of wav2vec2-base) on 10 s of audio, against transformers (issue 17).
//!
//! Its 95 M weights are not stored: `tools/golden/wav2vec2_base.py` defines them by a formula of
//! IEEE-exact operations that this file evaluates to the same bits (see [`value`]), and stores
//! transformers' logits and every layer's hidden states (every 32nd frame) in
//! `tests/golden/wav2vec2/base.safetensors`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{assert_close, load_golden};
use stapes::autograd::{no_grad, Var};
use stapes::nn::Module;
use stapes::speech::models::wav2vec2::{normalize_audio, Wav2Vec2Config, Wav2Vec2ForCtc};
use stapes::tensor::{DType, Device, Tensor};

const STRIDE: usize = 32;
const SAMPLES: usize = 160_000;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wav2vec2")
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3))
}

/// `x in [-1, 1)` for element `i` of `name`, as the Python script computes it.
fn uniform(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let seed = fnv1a64(name);
    (1..=n as u64).map(move |i| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        2.0 * (z >> 11) as f64 / (1u64 << 53) as f64 - 1.0
    })
}

/// The value of the parameter `name` of shape `dims` (the script's `value`).
fn value(name: &str, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let norm_weight = (dims.len() == 1 && name.ends_with(".weight")) || name.ends_with("original0");
    let v: Vec<f32> = if norm_weight {
        uniform(name, n).map(|x| (1.0 + x / 10.0) as f32).collect()
    } else if dims.len() == 1 {
        uniform(name, n).map(|x| (x / 50.0) as f32).collect()
    } else {
        let scale = (3.0 / (n / dims[0]) as f64).sqrt();
        uniform(name, n).map(|x| (x * scale) as f32).collect()
    };
    Tensor::from_vec(v, dims.to_vec(), &Device::Cpu).unwrap()
}

fn audio() -> Vec<f32> {
    let period = 4000.0;
    uniform("audio", SAMPLES)
        .enumerate()
        .map(|(i, x)| {
            let phase = (i as f64 % period) / period;
            let env = 0.1 + 0.4 * phase.min(1.0 - phase) * 2.0;
            (x * env) as f32
        })
        .collect()
}

#[test]
fn base_sized_model_on_ten_seconds_matches_transformers() {
    let g = load_golden(golden_dir().join("base.safetensors")).tensors;
    let cfg = Wav2Vec2Config::from_json_file(golden_dir().join("base_config.json")).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.feat_extract_norm.as_str()), (768, 12, "group"));
    let model = Wav2Vec2ForCtc::new(&cfg, DType::F32, &Device::Cpu).unwrap();
    let state: BTreeMap<String, Tensor> =
        model.state_dict().into_iter().map(|(k, t)| (k.clone(), value(&k, t.dims()))).collect();
    model.load_state_dict(&state, true).unwrap();
    assert!(model.num_parameters() > 94_000_000, "{}", model.num_parameters());
    model.eval();

    let iv = normalize_audio(&audio());
    let head = Tensor::from_vec(iv[..1000].to_vec(), [1000], &Device::Cpu).unwrap();
    assert_close(&head, &g["input_values_head"], Some(0.0), Some(1e-6), "input_values");
    let x = Var::constant(Tensor::from_vec(iv, [1, SAMPLES], &Device::Cpu).unwrap());
    let (logits, out) = no_grad(|| model.forward(&x, None)).unwrap();
    let logits = logits.tensor().narrow(0, 0, 1).unwrap().reshape([499, 32]).unwrap();
    assert_close(&logits, &g["logits"], Some(0.0), Some(1e-4), "base logits");
    let argmax = |t: &Tensor| t.argmax(1usize, false).unwrap().to_vec::<i64>().unwrap();
    assert_eq!(argmax(&logits), argmax(&g["logits"]), "argmax differs");

    // every 32nd frame of the feature encoder's output and of every layer's hidden states
    let frames: Vec<i64> = (0..499).step_by(STRIDE).map(|f| f as i64).collect();
    let idx = Tensor::from_vec(frames.clone(), [frames.len()], &Device::Cpu).unwrap();
    let pick = |v: &Var| v.tensor().narrow(0, 0, 1).unwrap().squeeze(0).unwrap().index_select(0usize, &idx).unwrap();
    assert_close(&pick(&out.extract_features), &g["extract_features"], Some(0.0), Some(1e-4), "extract_features");
    assert_eq!(out.hidden_states.len(), 13);
    for (k, h) in out.hidden_states.iter().enumerate() {
        assert_close(&pick(h), &g[&format!("hidden.{k}")], Some(0.0), Some(1e-4), &format!("hidden.{k}"));
    }
}
