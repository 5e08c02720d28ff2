//! CTC loss against PyTorch: every case of `tests/golden/ctc.safetensors` (made by
//! `tools/golden/ctc.py`, torch 2.11.0; its docstring describes the layout), plus warp-ctc's
//! published test cases.
//!
//! Each golden case is run twice, in PyTorch's `[T, B, C]` layout and transposed with
//! `batch_first`; the loss and the gradient are compared with `assert_close`'s per-dtype
//! tolerances. NaN gradients (an impossible alignment without `zero_infinity`, as PyTorch gives
//! them) must sit exactly where PyTorch's are. Failures are collected and reported together; a
//! case with an unread parameter or tensor is a failure too.
//! `STAPES_PARITY_VERBOSE=1 cargo test --test parity_ctc -- --nocapture` prints each case's
//! largest errors.

mod common;

use std::collections::BTreeSet;

use common::{close_margin, load_golden, to_f64_vec, Params};
use stapes::autograd::Var;
use stapes::nn::ctc::{ctc_loss, ctc_loss_from_logits, CtcLossOptions};
use stapes::nn::loss::Reduction;
use stapes::tensor::{DType, Device, Tensor};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/ctc.safetensors");

type Res<T> = Result<T, String>;

fn verbose() -> bool {
    std::env::var("STAPES_PARITY_VERBOSE").is_ok_and(|v| v == "1")
}

/// Compares with the default tolerances after checking that NaNs coincide (then zeroing them).
/// Returns the largest absolute error.
fn compare(actual: &Tensor, expected: &Tensor, what: &str) -> Res<f64> {
    let a = to_f64_vec(actual)?;
    let e = to_f64_vec(expected)?;
    if a.len() != e.len() {
        return Err(format!("{what}: {} elements, expected {}", a.len(), e.len()));
    }
    if let Some(i) = (0..a.len()).find(|&i| a[i].is_nan() != e[i].is_nan()) {
        return Err(format!("{what}: NaN mismatch at flat index {i}: actual {}, expected {}", a[i], e[i]));
    }
    let zero_nan = |v: &[f64], like: &Tensor| -> Res<Tensor> {
        let v: Vec<f64> = v.iter().map(|x| if x.is_nan() { 0.0 } else { *x }).collect();
        Tensor::from_vec(v, like.dims().to_vec(), &Device::Cpu)
            .and_then(|t| t.to_dtype(like.dtype()))
            .map_err(|e| e.to_string())
    };
    if actual.dtype() != expected.dtype() {
        return Err(format!("{what}: dtype {:?}, expected {:?}", actual.dtype(), expected.dtype()));
    }
    // f32 gradients: the occupancy is exp(alpha + beta + nll - e) with |alpha|, |beta| up to a
    // few hundred, whose f32 rounding (ulp 1.5e-5 at 200) PyTorch and stapes incur in different
    // orders; so f32 gets atol 3e-5 (the default 1e-5 elsewhere). f64 uses the defaults.
    let (rtol, atol) = if expected.dtype() == DType::F32 { (Some(1e-5), Some(3e-5)) } else { (None, None) };
    close_margin(&zero_nan(&a, actual)?, &zero_nan(&e, expected)?, rtol, atol, what)?;
    Ok(a.iter().zip(&e).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
}

fn run_case(g: &common::Golden, name: &str, json: &str, batch_first: bool) -> Res<(f64, f64)> {
    let p = Params::parse(json)?;
    let mut used = BTreeSet::new();
    let mut t = |part: &str| -> Res<Tensor> {
        used.insert(part.to_string());
        g.tensors.get(&format!("{name}.{part}")).cloned().ok_or_else(|| format!("{name}: missing tensor {part}"))
    };
    let input = t("input")?;
    let targets = t("targets")?;
    let want_out = t("out")?;
    let want_grad = t("grad")?;
    let dtype = match p.str("dtype")? {
        "f32" => DType::F32,
        "f64" => DType::F64,
        d => return Err(format!("{name}: unknown dtype {d}")),
    };
    if input.dtype() != dtype {
        return Err(format!("{name}: input is {:?}, metadata says {dtype:?}", input.dtype()));
    }
    let reduction = match p.str("reduction")? {
        "none" => Reduction::None,
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        r => return Err(format!("{name}: unknown reduction {r}")),
    };
    let opts =
        CtcLossOptions { blank: p.usize("blank")?, reduction, zero_infinity: p.bool("zero_infinity")?, batch_first };
    let fmt = p.str("targets")?;
    if (fmt == "padded") != (targets.dims().len() == 2) {
        return Err(format!("{name}: targets {:?} are not {fmt}", targets.dims()));
    }
    let (il, tl) = (p.usizes("input_lengths")?, p.usizes("target_lengths")?);
    let e = |e: stapes::tensor::Error| format!("{name}: {e}");
    let bf = |x: &Tensor| -> Res<Tensor> {
        if batch_first {
            x.transpose(0, 1).and_then(|x| x.contiguous()).map_err(e)
        } else {
            Ok(x.clone())
        }
    };
    let x = Var::leaf(bf(&input)?);
    let loss = match p.str("path")? {
        "log_probs" => ctc_loss(&x, &targets, &il, &tl, &opts),
        // The logits cases pass the lengths as i64 tensors (as PyTorch takes them), the
        // log_probs cases as slices: both forms are checked against PyTorch.
        "logits" => {
            let as_tensor = |l: &[usize]| {
                Tensor::from_vec(
                    l.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                    [l.len()],
                    &stapes::tensor::Device::Cpu,
                )
            };
            let (il_t, tl_t) = (as_tensor(&il).map_err(e)?, as_tensor(&tl).map_err(e)?);
            ctc_loss_from_logits(&x, &targets, &il_t, &tl_t, &opts)
        }
        other => return Err(format!("{name}: unknown path {other}")),
    }
    .map_err(e)?;
    if reduction == Reduction::None {
        loss.backward_with(&t("gout")?).map_err(e)?;
    } else {
        loss.backward().map_err(e)?;
    }
    let grad = x.grad().ok_or_else(|| format!("{name}: no gradient"))?;
    let layout = if batch_first { " (batch_first)" } else { "" };
    let a = compare(loss.tensor(), &want_out, &format!("{name}{layout}: loss"))?;
    let b = compare(&grad, &bf(&want_grad)?, &format!("{name}{layout}: grad"))?;
    let unused = p.unused();
    if !unused.is_empty() {
        return Err(format!("{name}: unread parameters {unused:?}"));
    }
    let all: BTreeSet<String> =
        g.tensors.keys().filter_map(|k| k.strip_prefix(&format!("{name}.")).map(str::to_string)).collect();
    let left: Vec<&String> = all.difference(&used).collect();
    if !left.is_empty() {
        return Err(format!("{name}: unused tensors {left:?}"));
    }
    Ok((a, b))
}

#[test]
fn ctc_matches_pytorch() {
    let g = load_golden(GOLDEN);
    let mut failures = Vec::new();
    let mut n = 0;
    let (mut worst_loss, mut worst_grad) = ([0.0f64; 2], [0.0f64; 2]);
    for (name, json) in g.metadata.iter().filter(|(k, _)| !k.starts_with('_')) {
        for batch_first in [false, true] {
            match run_case(&g, name, json, batch_first) {
                Ok((a, b)) => {
                    let d = usize::from(json.contains("\"f64\""));
                    worst_loss[d] = worst_loss[d].max(a);
                    worst_grad[d] = worst_grad[d].max(b);
                    if verbose() {
                        eprintln!("{name} batch_first={batch_first}: max abs err loss {a:.2e}, grad {b:.2e}");
                    }
                }
                Err(msg) => failures.push(msg),
            }
            n += 1;
        }
    }
    eprintln!(
        "{n} CTC runs; max abs err f32: loss {:.2e}, grad {:.2e}; f64: loss {:.2e}, grad {:.2e}",
        worst_loss[0], worst_grad[0], worst_loss[1], worst_grad[1]
    );
    assert!(n >= 100, "only {n} runs: the golden file lost its cases?");
    assert!(failures.is_empty(), "{} of {n} CTC parity runs failed:\n{}", failures.len(), failures.join("\n"));
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::MIN, f64::max);
    let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
    row.iter().map(|v| (v - m).exp() / s).collect()
}

/// warp-ctc's `small_test` (tests/test_cpu.cpp): T = 2, alphabet 5, labels [1, 2]; only one
/// path emits "1 2" in two frames, so the score is `softmax(a_0)[1] · softmax(a_1)[2]`, computed
/// here from the activations as warp-ctc does.
#[test]
fn warpctc_small_test() {
    let acts = [0.1, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.6, 0.1, 0.1];
    let expected_score = softmax(&acts[..5])[1] * softmax(&acts[5..])[2];
    let x = Var::leaf(
        Tensor::from_vec(acts.iter().map(|&v| v as f32).collect::<Vec<_>>(), [2, 1, 5], &Device::Cpu).unwrap(),
    );
    let targets = Tensor::from_vec(vec![1i64, 2], [1, 2], &Device::Cpu).unwrap();
    let opts = CtcLossOptions { reduction: Reduction::Sum, ..Default::default() };
    let loss = ctc_loss_from_logits(&x, &targets, &[2], &[2], &opts).unwrap();
    let score = (-loss.tensor().to_scalar_f64().unwrap()).exp();
    assert!((score - expected_score).abs() < 1e-6, "score {score}, expected {expected_score}");
}

/// warp-ctc's `options_test` input (Alex Graves' probabilities, T = 5, alphabet 6, blank 5),
/// sample 0 with target [0, 1, 2, 1, 0]: its published cost is 3.3421143650988143.
#[test]
fn warpctc_options_test_published_cost() {
    let probs = [
        [0.633766, 0.221185, 0.0917319, 0.0129757, 0.0142857, 0.0260553],
        [0.111121, 0.588392, 0.278779, 0.0055756, 0.00569609, 0.010436],
        [0.0357786, 0.633813, 0.321418, 0.00249248, 0.00272882, 0.0037688],
        [0.0663296, 0.643849, 0.280111, 0.00283995, 0.0035545, 0.00331533],
        [0.458235, 0.396634, 0.123377, 0.00648837, 0.00903441, 0.00623107],
    ];
    let logp: Vec<f64> = probs.iter().flatten().map(|p: &f64| p.ln()).collect();
    let targets = Tensor::from_vec(vec![0i64, 1, 2, 1, 0], [1, 5], &Device::Cpu).unwrap();
    let opts = CtcLossOptions { blank: 5, reduction: Reduction::None, ..Default::default() };
    for dtype in [DType::F64, DType::F32] {
        let t = Tensor::from_vec(logp.clone(), [5, 1, 6], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        // the probabilities as given (as log-probabilities), and through the fused softmax (the
        // given rows sum to 1 only to about 5e-7, so renormalising moves the cost by 1.8e-6)
        let f64_tol = [1e-12, 1e-5];
        for (k, loss) in [
            ctc_loss(&Var::constant(t.clone()), &targets, &[5], &[5], &opts).unwrap(),
            ctc_loss_from_logits(&Var::constant(t.clone()), &targets, &[5], &[5], &opts).unwrap(),
        ]
        .into_iter()
        .enumerate()
        {
            let tol = if dtype == DType::F64 { f64_tol[k] } else { 1e-5 };
            let cost = loss.tensor().to_vec_f64().unwrap()[0];
            assert!((cost - 3.342_114_365_098_814_3).abs() < tol, "{dtype:?} path {k}: cost {cost}");
        }
    }
}

/// warp-ctc's `inf_test`: T = 50, alphabet 15, a 10-label target containing label 2 whose
/// activation is -1e30 at every frame: the cost is infinite. warp-ctc then requires gradients
/// without NaN; PyTorch (and so stapes) gives NaN gradients unless `zero_infinity`, which
/// gives a zero loss and zero gradients.
#[test]
fn warpctc_inf_test() {
    let (t, c, l) = (50usize, 15usize, 10usize);
    let mut acts: Vec<f32> = (0..t * c).map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5).collect();
    for i in 0..t {
        acts[i * c + 2] = -1e30;
    }
    let mut labels: Vec<i64> = (0..l).map(|i| 1 + (i as i64 * 5) % (c as i64 - 1)).collect();
    labels[0] = 2;
    let targets = Tensor::from_vec(labels, [1, l], &Device::Cpu).unwrap();
    let x = Var::leaf(Tensor::from_vec(acts, [t, 1, c], &Device::Cpu).unwrap());
    let opts = CtcLossOptions { reduction: Reduction::Sum, ..Default::default() };
    let loss = ctc_loss_from_logits(&x, &targets, &[t], &[l], &opts).unwrap();
    assert_eq!(loss.tensor().to_scalar_f64().unwrap(), f64::INFINITY);
    loss.backward().unwrap();
    assert!(x.grad().unwrap().to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()), "PyTorch gives NaN here");
    x.zero_grad();
    let zi = CtcLossOptions { zero_infinity: true, ..opts };
    let loss = ctc_loss_from_logits(&x, &targets, &[t], &[l], &zi).unwrap();
    assert_eq!(loss.tensor().to_scalar_f64().unwrap(), 0.0);
    loss.backward().unwrap();
    assert!(x.grad().unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
}
