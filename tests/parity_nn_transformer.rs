//! Attention and Transformer parity with PyTorch: every case in
//! `tests/golden/nn_transformer.safetensors` (made by `tools/golden/nn_transformer.py`, whose
//! docstring gives the file layout) builds the stapes module from the case's arguments, loads
//! PyTorch's `state_dict` by name with a strict load (so every parameter name must match),
//! runs the forward pass with the stored inputs and masks, and compares the output, the
//! attention weights, and, after backward of `(out * gout).sum() + (weights * gweights).sum()`,
//! the gradient of every input and every parameter.
//!
//! NaN must appear exactly where PyTorch has it (fully-masked rows with `need_weights`), and
//! every stored tensor of a case must be used. Failures are collected over all cases and
//! reported together; `STAPES_PARITY_VERBOSE=1` prints each case's largest errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{close_margin, load_golden, to_f64_vec, Params};
use stapes::autograd::Var;
use stapes::nn::attention::{MhaOptions, MultiheadAttention, MultiheadAttentionConfig};
use stapes::nn::transformer::{
    sinusoidal_table, Activation, DecoderMasks, PositionalEncoding, Transformer, TransformerConfig,
    TransformerDecoderLayer, TransformerEncoderLayer, TransformerLayerConfig, TransformerMasks,
};
use stapes::nn::{Forward, Module};
use stapes::tensor::{DType, Device, Tensor};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/nn_transformer.safetensors");

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One case's tensors, by the part of the name after `<case>.`; records which were read.
struct CaseTensors {
    map: BTreeMap<String, Tensor>,
    used: BTreeSet<String>,
}

impl CaseTensors {
    fn get(&mut self, key: &str) -> Option<Tensor> {
        let t = self.map.get(key).cloned();
        if t.is_some() {
            self.used.insert(key.to_string());
        }
        t
    }
    fn need(&mut self, key: &str) -> Res<Tensor> {
        self.get(key).ok_or_else(|| format!("missing tensor {key:?}"))
    }
    /// All tensors whose name starts with `prefix`, keyed by the rest of the name.
    fn with_prefix(&mut self, prefix: &str) -> BTreeMap<String, Tensor> {
        let keys: Vec<String> = self.map.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        keys.into_iter().map(|k| (k[prefix.len()..].to_string(), self.get(&k).unwrap())).collect()
    }
    fn unused(&self) -> Vec<&String> {
        self.map.keys().filter(|k| !self.used.contains(*k)).collect()
    }
}

/// Largest absolute errors seen per kind of compared tensor, for the verbose report.
#[derive(Default)]
struct Worst {
    out: f64,
    grad_in: f64,
    grad_param: f64,
}

fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        // Several f32 GEMMs, softmaxes and LayerNorms deep; PyTorch's SDPA also sums in another
        // order (its CPU flash kernel).
        DType::F32 => (1e-4, 2e-5),
        _ => (1e-9, 1e-10),
    }
}

/// Compares with NaN in exactly the same places; returns the largest absolute error.
fn compare(actual: &Tensor, expected: &Tensor, what: &str) -> Res<f64> {
    let (a, e) = (to_f64_vec(actual)?, to_f64_vec(expected)?);
    if actual.dims() != expected.dims() {
        return Err(format!("{what}: shape {:?}, expected {:?}", actual.dims(), expected.dims()));
    }
    if let Some(i) = (0..a.len()).find(|&i| a[i].is_nan() != e[i].is_nan()) {
        return Err(format!("{what}: NaN mismatch at flat index {i}: actual {}, expected {}", a[i], e[i]));
    }
    let (a_fin, e_fin) = if e.iter().any(|v| v.is_nan()) {
        let (an, en) = (actual.isnan().map_err(err)?, expected.isnan().map_err(err)?);
        (actual.masked_fill(&an, 0.0).map_err(err)?, expected.masked_fill(&en, 0.0).map_err(err)?)
    } else {
        (actual.clone(), expected.clone())
    };
    let (rtol, atol) = tolerance(expected.dtype());
    close_margin(&a_fin, &e_fin, Some(rtol), Some(atol), what)?;
    let max_abs = a
        .iter()
        .zip(&e)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    Ok(max_abs)
}

fn dtype_of(p: &Params) -> Res<DType> {
    match p.str("dtype")? {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        d => Err(format!("unknown dtype {d:?}")),
    }
}

fn layer_config(p: &Params) -> Res<TransformerLayerConfig> {
    Ok(TransformerLayerConfig {
        d_model: p.usize("d_model")?,
        nhead: p.usize("nhead")?,
        dim_feedforward: p.usize("dim_feedforward")?,
        dropout: 0.0,
        activation: Activation::from_name(p.str("activation")?).map_err(err)?,
        layer_norm_eps: p.f64("layer_norm_eps")?,
        batch_first: if p.has("batch_first") { p.bool("batch_first")? } else { false },
        norm_first: p.bool("norm_first")?,
        bias: if p.has("bias") { p.bool("bias")? } else { true },
    })
}

/// A case's forward pass: (inputs, masks) by name -> (output, attention weights).
type CaseForward<'a> = dyn Fn(&BTreeMap<String, Var>, &BTreeMap<String, Tensor>) -> Res<(Var, Option<Var>)> + 'a;

/// Runs a module case: strict load, forward, loss, backward, and every comparison.
fn run_module_case(module: &dyn Module, ct: &mut CaseTensors, forward: &CaseForward<'_>) -> Res<Worst> {
    let state = ct.with_prefix("param.");
    module.load_state_dict(&state, true).map_err(|e| format!("load_state_dict: {e}"))?;
    let inputs: BTreeMap<String, Var> = ct.with_prefix("in.").into_iter().map(|(k, t)| (k, Var::leaf(t))).collect();
    let masks = ct.with_prefix("mask.");
    let (out, weights) = forward(&inputs, &masks)?;
    let mut worst = Worst { out: compare(out.tensor(), &ct.need("out")?, "out")?, ..Worst::default() };
    let mut loss = out.mul(&Var::constant(ct.need("gout")?)).map_err(err)?.sum_all().map_err(err)?;
    match (weights, ct.get("weights")) {
        (Some(w), Some(ew)) => {
            worst.out = worst.out.max(compare(w.tensor(), &ew, "weights")?);
            let gw = w.mul(&Var::constant(ct.need("gweights")?)).map_err(err)?.sum_all().map_err(err)?;
            loss = loss.add(&gw).map_err(err)?;
        }
        (None, None) => {}
        (w, ew) => return Err(format!("weights returned: {}, expected: {}", w.is_some(), ew.is_some())),
    }
    loss.backward().map_err(err)?;
    let expected_in = ct.with_prefix("grad.in.");
    if expected_in.keys().ne(inputs.keys()) {
        return Err(format!("input grads {:?} for inputs {:?}", expected_in.keys(), inputs.keys()));
    }
    for (k, eg) in &expected_in {
        let g = inputs[k].grad().ok_or_else(|| format!("input {k} got no gradient"))?;
        worst.grad_in = worst.grad_in.max(compare(&g, eg, &format!("grad of input {k}"))?);
    }
    let mut expected_p = ct.with_prefix("grad.param.");
    for (k, p) in module.named_parameters() {
        let eg = expected_p.remove(&k).ok_or_else(|| format!("no expected gradient for parameter {k}"))?;
        let g = p.grad().ok_or_else(|| format!("parameter {k} got no gradient"))?;
        worst.grad_param = worst.grad_param.max(compare(&g, &eg, &format!("grad of {k}"))?);
    }
    if !expected_p.is_empty() {
        return Err(format!("gradients for unknown parameters {:?}", expected_p.keys()));
    }
    Ok(worst)
}

fn mask<'a>(masks: &'a BTreeMap<String, Tensor>, k: &str) -> Option<&'a Tensor> {
    masks.get(k)
}

fn run_case(p: &Params, ct: &mut CaseTensors) -> Res<Worst> {
    let dtype = dtype_of(p)?;
    let dev = Device::Cpu;
    match p.str("kind")? {
        "mha" => {
            let cfg = MultiheadAttentionConfig {
                embed_dim: p.usize("embed_dim")?,
                num_heads: p.usize("num_heads")?,
                dropout: 0.0,
                bias: p.bool("bias")?,
                batch_first: p.bool("batch_first")?,
            };
            let m = MultiheadAttention::from_config(&cfg, dtype, &dev).map_err(err)?;
            let self_attention = p.bool("self_attention")?;
            let opts_base = MhaOptions::default()
                .need_weights(p.bool("need_weights")?)
                .average_attn_weights(p.bool("average_attn_weights")?)
                .is_causal(p.bool("is_causal")?);
            run_module_case(&m, ct, &|inp, masks| {
                let q = &inp["query"];
                let (k, v) = if self_attention { (q, q) } else { (&inp["key"], &inp["value"]) };
                let opts =
                    opts_base.key_padding_mask(mask(masks, "key_padding_mask")).attn_mask(mask(masks, "attn_mask"));
                m.forward(q, k, v, &opts).map_err(err)
            })
        }
        "encoder_layer" => {
            let cfg = layer_config(p)?;
            let is_causal = p.bool("is_causal")?;
            let l = TransformerEncoderLayer::from_config(&cfg, dtype, &dev).map_err(err)?;
            run_module_case(&l, ct, &|inp, masks| {
                let out = l
                    .forward(&inp["src"], mask(masks, "src_mask"), mask(masks, "src_key_padding_mask"), is_causal)
                    .map_err(err)?;
                Ok((out, None))
            })
        }
        "decoder_layer" => {
            let cfg = layer_config(p)?;
            let tgt_is_causal = p.bool("tgt_is_causal")?;
            let l = TransformerDecoderLayer::from_config(&cfg, dtype, &dev).map_err(err)?;
            run_module_case(&l, ct, &|inp, masks| {
                let dm = DecoderMasks {
                    tgt_mask: mask(masks, "tgt_mask"),
                    memory_mask: mask(masks, "memory_mask"),
                    tgt_key_padding_mask: mask(masks, "tgt_key_padding_mask"),
                    memory_key_padding_mask: mask(masks, "memory_key_padding_mask"),
                    tgt_is_causal,
                    memory_is_causal: false,
                };
                Ok((l.forward(&inp["tgt"], &inp["memory"], &dm).map_err(err)?, None))
            })
        }
        "transformer" => {
            let cfg = TransformerConfig {
                layer: layer_config(p)?,
                num_encoder_layers: p.usize("num_encoder_layers")?,
                num_decoder_layers: p.usize("num_decoder_layers")?,
            };
            let tgt_is_causal = p.bool("tgt_is_causal")?;
            let model = Transformer::new(&cfg, dtype, &dev).map_err(err)?;
            run_module_case(&model, ct, &|inp, masks| {
                let tm = TransformerMasks {
                    src_mask: mask(masks, "src_mask"),
                    tgt_mask: mask(masks, "tgt_mask"),
                    memory_mask: mask(masks, "memory_mask"),
                    src_key_padding_mask: mask(masks, "src_key_padding_mask"),
                    tgt_key_padding_mask: mask(masks, "tgt_key_padding_mask"),
                    memory_key_padding_mask: mask(masks, "memory_key_padding_mask"),
                    src_is_causal: false,
                    tgt_is_causal,
                    memory_is_causal: false,
                };
                Ok((model.forward(&inp["src"], &inp["tgt"], &tm).map_err(err)?, None))
            })
        }
        "positional_encoding" => {
            let (d, max_len) = (p.usize("d_model")?, p.usize("max_len")?);
            let rows = p.usizes("rows")?;
            let table = sinusoidal_table(max_len, d).map_err(err)?;
            let picked = Tensor::from_vec(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), rows.len(), &dev)
                .and_then(|idx| table.index_select(0, &idx))
                .map_err(err)?;
            // The table is f32 on both sides; sin/cos differ by at most an ulp or two.
            let mut worst = Worst::default();
            let expected = ct.need("pe")?;
            close_margin(&picked, &expected, Some(0.0), Some(5e-7), "pe rows")?;
            worst.out = compare(&picked, &expected, "pe")?;
            let pe = PositionalEncoding::with_max_len(d, 0.0, max_len, false).map_err(err)?;
            if !pe.named_parameters().is_empty() || !pe.state_dict().is_empty() {
                return Err("PositionalEncoding has state".to_string());
            }
            let x = Var::leaf(ct.need("in.x")?);
            let y = pe.forward(&x).map_err(err)?;
            worst.out = worst.out.max(compare(y.tensor(), &ct.need("out")?, "out")?);
            y.backward_with(&ct.need("gout")?).map_err(err)?;
            let g = x.grad().ok_or("no gradient for x")?;
            worst.grad_in = compare(&g, &ct.need("grad.in.x")?, "grad of x")?;
            Ok(worst)
        }
        k => Err(format!("unknown kind {k:?}")),
    }
}

#[test]
fn transformer_parity_with_pytorch() {
    let golden = load_golden(GOLDEN);
    let verbose = std::env::var("STAPES_PARITY_VERBOSE").is_ok_and(|v| v == "1");
    let mut by_case: BTreeMap<String, BTreeMap<String, Tensor>> = BTreeMap::new();
    for (k, t) in &golden.tensors {
        let (case, rest) = k.split_once('.').unwrap_or_else(|| panic!("tensor name {k:?} has no case prefix"));
        by_case.entry(case.to_string()).or_default().insert(rest.to_string(), t.clone());
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut kinds = BTreeSet::new();
    for (name, json) in &golden.metadata {
        if name.starts_with('_') {
            continue;
        }
        let params = Params::parse(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        let map = by_case.remove(name).unwrap_or_default();
        let mut ct = CaseTensors { map, used: BTreeSet::new() };
        let r = run_case(&params, &mut ct);
        ran += 1;
        kinds.insert(params.str("kind").unwrap_or("?").to_string());
        match r {
            Ok(w) => {
                if verbose {
                    println!(
                        "{name}: max abs err out {:.2e}, input grads {:.2e}, parameter grads {:.2e}",
                        w.out, w.grad_in, w.grad_param
                    );
                }
                let unused_t = ct.unused();
                let unused_p = params.unused();
                if !unused_t.is_empty() || !unused_p.is_empty() {
                    failures.push(format!("{name}: unused tensors {unused_t:?}, unused parameters {unused_p:?}"));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    if !by_case.is_empty() {
        failures.push(format!("tensors of cases with no metadata: {:?}", by_case.keys()));
    }
    assert!(failures.is_empty(), "{} of {ran} cases failed:\n{}", failures.len(), failures.join("\n"));
    // The file must hold every kind of case this test is meant to check.
    let want = ["decoder_layer", "encoder_layer", "mha", "positional_encoding", "transformer"];
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), want);
    assert!(ran >= 20, "only {ran} cases");
}
