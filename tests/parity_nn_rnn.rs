//! Parity of `stapes_nn::rnn::{Lstm, Gru}` with `torch.nn.LSTM/GRU` on the golden cases of
//! `tools/golden/nn_rnn.py` (`tests/golden/nn_rnn.safetensors`): outputs, final states and,
//! after backward of a random weighted sum of them, the gradients of the input, the initial
//! states and every parameter. PyTorch's weights are loaded by name with `load_state_dict`;
//! variable-length cases are packed sequences on the PyTorch side.

mod common;

use common::{close_margin, load_golden, to_f64_vec, Golden, Params};
use stapes::autograd::Var;
use stapes::nn::rnn::{Gru, Lstm, RnnConfig};
use stapes::nn::Module;
use stapes::tensor::{DType, Tensor};
use std::collections::BTreeMap;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/nn_rnn.safetensors");

fn get<'a>(g: &'a Golden, key: &str) -> &'a Tensor {
    g.tensors.get(key).unwrap_or_else(|| panic!("golden file has no tensor {key}"))
}

/// Largest absolute difference (for the summary line).
fn max_abs(a: &Tensor, e: &Tensor) -> f64 {
    let (a, e) = (to_f64_vec(a).unwrap(), to_f64_vec(e).unwrap());
    a.iter().zip(&e).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Runs one case; returns (largest abs error of values, of gradients).
fn run_case(g: &Golden, name: &str, p: &Params, failures: &mut Vec<String>) -> (f64, f64) {
    let cell = p.str("cell").unwrap().to_string();
    let cfg = RnnConfig {
        input_size: p.usize("input_size").unwrap(),
        hidden_size: p.usize("hidden_size").unwrap(),
        num_layers: p.usize("num_layers").unwrap(),
        bias: p.bool("bias").unwrap(),
        batch_first: p.bool("batch_first").unwrap(),
        dropout: 0.0,
        bidirectional: p.bool("bidirectional").unwrap(),
    };
    let dtype = match p.str("dtype").unwrap() {
        "f32" => DType::F32,
        "f64" => DType::F64,
        d => panic!("{name}: unknown dtype {d}"),
    };
    let has_h0 = p.bool("has_h0").unwrap();
    let lengths =
        if matches!(p.get("lengths"), Some(common::Json::Null)) { None } else { Some(p.usizes("lengths").unwrap()) };
    assert!(p.unused().is_empty(), "{name}: unread parameters {:?}", p.unused());

    let prefix = format!("{name}.p.");
    let state: BTreeMap<String, Tensor> =
        g.tensors.iter().filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_string(), t.clone()))).collect();
    let x = Var::leaf(get(g, &format!("{name}.x")).clone());
    let h0 = has_h0.then(|| Var::leaf(get(g, &format!("{name}.h0")).clone()));
    let is_lstm = cell == "lstm";
    let c0 = (has_h0 && is_lstm).then(|| Var::leaf(get(g, &format!("{name}.c0")).clone()));

    let (module, results): (Box<dyn Module>, Vec<(&str, Var)>) = if is_lstm {
        let m = Lstm::new_with(cfg, dtype, &stapes::tensor::Device::Cpu).unwrap();
        m.load_state_dict(&state, true).unwrap();
        let st = h0.as_ref().zip(c0.as_ref());
        let o = m.forward_with(&x, st, lengths.as_deref()).unwrap();
        (Box::new(m), vec![("output", o.output), ("h_n", o.h_n), ("c_n", o.c_n)])
    } else {
        let m = Gru::new_with(cfg, dtype, &stapes::tensor::Device::Cpu).unwrap();
        m.load_state_dict(&state, true).unwrap();
        let o = m.forward_with(&x, h0.as_ref(), lengths.as_deref()).unwrap();
        (Box::new(m), vec![("output", o.output), ("h_n", o.h_n)])
    };

    // f64: much tighter than torch.testing's defaults (the kernels are exact to rounding there);
    // f32: the defaults (rtol 1.3e-6, atol 1e-5).
    let (rtol, atol) = if dtype == DType::F64 { (Some(1e-10), Some(1e-12)) } else { (None, None) };
    let check = |failures: &mut Vec<String>, what: &str, actual: &Tensor, expected: &Tensor| -> f64 {
        if let Err(e) = close_margin(actual, expected, rtol, atol, &format!("{name}: {what}")) {
            failures.push(e);
        }
        max_abs(actual, expected)
    };
    let mut worst_val = 0f64;
    let mut loss: Option<Var> = None;
    for (k, v) in &results {
        worst_val = worst_val.max(check(failures, k, v.tensor(), get(g, &format!("{name}.{k}"))));
        let w = Var::constant(get(g, &format!("{name}.w_{k}")).clone());
        let term = v.mul(&w).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => l.add(&term).unwrap(),
            None => term,
        });
    }
    loss.unwrap().backward().unwrap();

    let mut worst_grad = 0f64;
    let mut grads: Vec<(String, Option<Tensor>)> = vec![("x".into(), x.grad())];
    if let Some(h) = &h0 {
        grads.push(("h0".into(), h.grad()));
    }
    if let Some(c) = &c0 {
        grads.push(("c0".into(), c.grad()));
    }
    let named = module.named_parameters();
    assert_eq!(named.len(), state.len(), "{name}: parameter count");
    for (n, prm) in named {
        grads.push((n, prm.grad()));
    }
    for (what, got) in grads {
        let want = get(g, &format!("{name}.grad.{what}"));
        match got {
            Some(t) => worst_grad = worst_grad.max(check(failures, &format!("grad of {what}"), &t, want)),
            None => failures.push(format!("{name}: no gradient for {what}")),
        }
    }
    (worst_val, worst_grad)
}

#[test]
fn lstm_and_gru_match_pytorch() {
    let g = load_golden(GOLDEN);
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, meta) in &g.metadata {
        if name.starts_with('_') {
            continue;
        }
        let p = Params::parse(meta).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (v, gr) = run_case(&g, name, &p, &mut failures);
        println!("{name}: max abs err values {v:.2e}, gradients {gr:.2e}");
        n += 1;
    }
    assert_eq!(n, 14, "expected the 14 cases of tools/golden/nn_rnn.py");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
