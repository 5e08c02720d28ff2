//! Layer parity with PyTorch: every case in `tests/golden/nn_layers.safetensors` (made by
//! `tools/golden/nn_layers.py`, whose docstring describes the file) names a `torch.nn` layer and
//! its constructor arguments. The test builds the stapes layer from those arguments, loads
//! PyTorch's state dict by name with `load_state_dict(.., strict = true)` (so every parameter and
//! buffer name and shape must match PyTorch's), runs the same steps in the same mode, and
//! compares per step the output, the input gradient and every parameter gradient, and at the
//! end every buffer (batch norm's running statistics and `num_batches_tracked`).
//!
//! The test fails on a layer it cannot build, a parameter it did not read, or a tensor in the
//! file it did not compare. All cases run; failures are collected and reported together.
//! `STAPES_PARITY_VERBOSE=1 cargo test --test parity_nn_layers -- --nocapture` prints, per
//! case, the largest absolute error and the largest fraction of the tolerance used;
//! `STAPES_GOLDEN_NN_LAYERS=path` reads another file (e.g. a deliberately corrupted copy).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{close_margin, load_golden, to_f64_vec, Json, Params};
use stapes::autograd::Var;
use stapes::nn::layers::*;
use stapes::nn::Forward;
use stapes::tensor::{DType, Tensor};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/nn_layers.safetensors");

type Res<T> = Result<T, Box<dyn std::error::Error>>;

// ------------------------------------------------------------------------------------------------
// Building a layer from the case's metadata
// ------------------------------------------------------------------------------------------------

/// Reads the keys of one (possibly nested) layer: `prefix` is `""` or `"<index>."`.
struct Spec<'a> {
    p: &'a Params,
    prefix: String,
}

impl Spec<'_> {
    fn k(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
    fn usize(&self, key: &str) -> Res<usize> {
        Ok(self.p.usize(&self.k(key))?)
    }
    fn i64(&self, key: &str) -> Res<i64> {
        Ok(self.p.i64(&self.k(key))?)
    }
    fn f64(&self, key: &str) -> Res<f64> {
        Ok(self.p.f64(&self.k(key))?)
    }
    fn bool(&self, key: &str) -> Res<bool> {
        Ok(self.p.bool(&self.k(key))?)
    }
    fn str(&self, key: &str) -> Res<String> {
        Ok(self.p.str(&self.k(key))?.to_string())
    }
    fn usize2(&self, key: &str) -> Res<[usize; 2]> {
        Ok(self.p.usize2(&self.k(key))?)
    }
    fn usizes(&self, key: &str) -> Res<Vec<usize>> {
        Ok(self.p.usizes(&self.k(key))?)
    }
    /// The raw value (`null` included); a missing key is an error.
    fn raw(&self, key: &str) -> Res<Json> {
        self.p.get(&self.k(key)).cloned().ok_or_else(|| format!("missing parameter {:?}", self.k(key)).into())
    }
    fn opt_usize2(&self, key: &str) -> Res<Option<[usize; 2]>> {
        Ok(match self.raw(key)? {
            Json::Null => None,
            _ => Some(self.usize2(key)?),
        })
    }
    fn padding_mode(&self) -> Res<PaddingMode> {
        match self.str("padding_mode")?.as_str() {
            "zeros" => Ok(PaddingMode::Zeros),
            "reflect" => Ok(PaddingMode::Reflect),
            m => Err(format!("padding_mode {m:?} has no stapes counterpart").into()),
        }
    }
    /// `padding` as a number/array, or the strings "same" and "valid".
    fn padding<P>(&self, explicit: impl FnOnce() -> Res<P>) -> Res<ConvPadding<P>> {
        Ok(match self.raw("padding")? {
            Json::Str(s) if s == "same" => ConvPadding::Same,
            Json::Str(s) if s == "valid" => ConvPadding::Valid,
            Json::Str(s) => return Err(format!("padding {s:?}").into()),
            _ => ConvPadding::Explicit(explicit()?),
        })
    }
    fn bn_config(&self) -> Res<BatchNormConfig> {
        Ok(BatchNormConfig {
            eps: self.f64("eps")?,
            momentum: match self.raw("momentum")? {
                Json::Null => None,
                _ => Some(self.f64("momentum")?),
            },
            affine: self.bool("affine")?,
            track_running_stats: self.bool("track_running_stats")?,
            ..Default::default()
        })
    }
}

/// Builds the layer with stapes' constructors: the defaults a user gets (f32, CPU), with only
/// the arguments the metadata names.
fn build(s: &Spec) -> Res<Box<dyn Forward>> {
    let layer = s.str("layer")?;
    Ok(match layer.as_str() {
        "Sequential" => {
            let mut seq = Sequential::new();
            for i in 0..s.usize("children")? {
                seq.push_boxed(build(&Spec { p: s.p, prefix: format!("{}{i}.", s.prefix) })?);
            }
            Box::new(seq)
        }
        "Linear" => Box::new(Linear::new(s.usize("in_features")?, s.usize("out_features")?, s.bool("bias")?)?),
        "Conv1d" => {
            let cfg = Conv1dConfig {
                stride: s.usize("stride")?,
                padding: s.padding(|| s.usize("padding"))?,
                dilation: s.usize("dilation")?,
                groups: s.usize("groups")?,
                bias: s.bool("bias")?,
                padding_mode: s.padding_mode()?,
                ..Default::default()
            };
            Box::new(Conv1d::new_with(s.usize("in_channels")?, s.usize("out_channels")?, s.usize("kernel_size")?, cfg)?)
        }
        "Conv2d" => {
            let cfg = Conv2dConfig {
                stride: s.usize2("stride")?,
                padding: s.padding(|| s.usize2("padding"))?,
                dilation: s.usize2("dilation")?,
                groups: s.usize("groups")?,
                bias: s.bool("bias")?,
                padding_mode: s.padding_mode()?,
                ..Default::default()
            };
            Box::new(Conv2d::new_with(
                s.usize("in_channels")?,
                s.usize("out_channels")?,
                s.usize2("kernel_size")?,
                cfg,
            )?)
        }
        "MaxPool2d" => {
            let cfg = MaxPool2dConfig {
                stride: s.opt_usize2("stride")?,
                padding: s.usize2("padding")?,
                dilation: Some(s.usize2("dilation")?),
                ceil_mode: s.bool("ceil_mode")?,
            };
            Box::new(MaxPool2d::new_with(s.usize2("kernel_size")?, cfg)?)
        }
        "AvgPool2d" => {
            let cfg = AvgPool2dConfig {
                stride: s.opt_usize2("stride")?,
                padding: s.usize2("padding")?,
                ceil_mode: s.bool("ceil_mode")?,
                count_include_pad: s.bool("count_include_pad")?,
            };
            Box::new(AvgPool2d::new_with(s.usize2("kernel_size")?, cfg)?)
        }
        "BatchNorm1d" => Box::new(BatchNorm1d::new_with(s.usize("num_features")?, s.bn_config()?)?),
        "BatchNorm2d" => Box::new(BatchNorm2d::new_with(s.usize("num_features")?, s.bn_config()?)?),
        "LayerNorm" => Box::new(LayerNorm::new_with(
            &s.usizes("normalized_shape")?,
            s.f64("eps")?,
            s.bool("elementwise_affine")?,
            s.bool("bias")?,
            DType::F32,
            &stapes::tensor::Device::Cpu,
        )?),
        "Embedding" => {
            let pad = match s.raw("padding_idx")? {
                Json::Null => None,
                _ => Some(s.i64("padding_idx")?),
            };
            Box::new(Embedding::new(s.usize("num_embeddings")?, s.usize("embedding_dim")?, pad)?)
        }
        "GELU" => Box::new(GELU::with_approximate(match s.str("approximate")?.as_str() {
            "none" => GeluApproximate::None,
            "tanh" => GeluApproximate::Tanh,
            a => return Err(format!("GELU approximate {a:?}").into()),
        })),
        "LeakyReLU" => Box::new(LeakyReLU::new(s.f64("negative_slope")?)?),
        "Softmax" => Box::new(Softmax::new(s.i64("dim")?)),
        "LogSoftmax" => Box::new(LogSoftmax::new(s.i64("dim")?)),
        "Flatten" => Box::new(Flatten::new(s.i64("start_dim")?, s.i64("end_dim")?)),
        "Dropout" => Box::new(Dropout::new(s.f64("p")?)?),
        "ReLU" => Box::new(ReLU),
        "Tanh" => Box::new(Tanh),
        "Sigmoid" => Box::new(Sigmoid),
        "SiLU" => Box::new(SiLU),
        "Identity" => Box::new(Identity),
        other => return Err(format!("no stapes layer for {other:?}").into()),
    })
}

// ------------------------------------------------------------------------------------------------
// Running a case
// ------------------------------------------------------------------------------------------------

/// The largest absolute error and fraction of tolerance used, over a case's comparisons.
#[derive(Default)]
struct Worst {
    abs: f64,
    margin: f64,
    compared: usize,
}

struct Case<'a> {
    name: &'a str,
    parts: BTreeMap<&'a str, &'a Tensor>,
    used: BTreeSet<&'a str>,
    worst: Worst,
}

impl<'a> Case<'a> {
    fn take(&mut self, part: &str) -> Res<&'a Tensor> {
        let (k, t) = self
            .parts
            .get_key_value(part)
            .map(|(k, t)| (*k, *t))
            .ok_or_else(|| format!("missing tensor {}.{part}", self.name))?;
        self.used.insert(k);
        Ok(t)
    }
    fn compare(&mut self, actual: &Tensor, part: &str) -> Res<()> {
        let expected = self.take(part)?;
        let what = format!("{}.{part}", self.name);
        // torch.testing.assert_close's f32 defaults (rtol 1.3e-6, atol 1e-5) for every
        // comparison, the GEMM-based Linear and Conv included: their largest errors here use
        // about a third of that tolerance.
        let margin = close_margin(actual, expected, None, None, &what)?;
        let (a, e) = (to_f64_vec(actual)?, to_f64_vec(expected)?);
        let abs = a.iter().zip(&e).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        self.worst.abs = self.worst.abs.max(abs);
        self.worst.margin = self.worst.margin.max(margin);
        self.worst.compared += 1;
        Ok(())
    }
}

fn run_case<'a>(name: &'a str, meta: &str, tensors: &'a BTreeMap<String, Tensor>) -> Res<Worst> {
    let p = Params::parse(meta)?;
    let mut case = Case {
        name,
        parts: tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(name).and_then(|r| r.strip_prefix('.')).map(|r| (r, t)))
            .collect(),
        used: BTreeSet::new(),
        worst: Worst::default(),
    };
    let model = build(&Spec { p: &p, prefix: String::new() })?;

    // PyTorch's state dict, loaded strictly by name.
    let state: BTreeMap<String, Tensor> = case
        .parts
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("state.").map(|n| (n.to_string(), (*t).clone())))
        .collect();
    model.load_state_dict(&state, true)?;
    case.used.extend(case.parts.keys().copied().filter(|k| k.starts_with("state.")));

    match p.str("mode")? {
        "train" => model.train(true),
        "eval" => model.eval(),
        m => return Err(format!("mode {m:?}").into()),
    }
    for s in 0..p.usize("steps")? {
        let x = case.take(&format!("x{s}"))?;
        let xv = if x.dtype().is_float() { Var::leaf(x.clone()) } else { Var::constant(x.clone()) };
        model.zero_grad();
        let out = model.forward(&xv)?;
        case.compare(out.tensor(), &format!("out{s}"))?;
        let gout = case.take(&format!("gout{s}"))?;
        out.mul(&Var::constant(gout.clone()))?.sum_all()?.backward()?;
        if x.dtype().is_float() {
            let g = xv.grad().ok_or("the input got no gradient")?;
            case.compare(&g, &format!("grad{s}.x"))?;
        }
        for (n, prm) in model.named_parameters() {
            let g = prm.grad().ok_or_else(|| format!("parameter {n} got no gradient"))?;
            case.compare(&g, &format!("grad{s}.{n}"))?;
        }
    }
    for (n, b) in model.named_buffers() {
        case.compare(&b.tensor(), &format!("final.{n}"))?;
    }

    let unused_params = p.unused();
    if !unused_params.is_empty() {
        return Err(format!("parameters never read: {unused_params:?}").into());
    }
    let unused: Vec<&&str> = case.parts.keys().filter(|k| !case.used.contains(*k)).collect();
    if !unused.is_empty() {
        return Err(format!("tensors never compared (a parameter or buffer stapes lacks?): {unused:?}").into());
    }
    Ok(case.worst)
}

#[test]
fn layers_match_pytorch() {
    let path = std::env::var("STAPES_GOLDEN_NN_LAYERS").unwrap_or_else(|_| GOLDEN.to_string());
    let golden = load_golden(&path);
    let verbose = std::env::var("STAPES_PARITY_VERBOSE").is_ok_and(|v| v == "1");
    let cases: Vec<(&String, &String)> = golden.metadata.iter().filter(|(k, _)| !k.starts_with('_')).collect();
    assert!(cases.len() >= 50, "only {} cases in {path}", cases.len());
    // Every tensor belongs to a case in the metadata.
    for k in golden.tensors.keys() {
        let case = k.split('.').next().unwrap();
        assert!(golden.metadata.contains_key(case), "tensor {k} belongs to no case");
    }
    let mut failures = Vec::new();
    let (mut max_abs, mut max_margin) = (0.0f64, 0.0f64);
    for (name, meta) in cases {
        let r = catch_unwind(AssertUnwindSafe(|| run_case(name, meta, &golden.tensors)));
        match r {
            Ok(Ok(w)) => {
                if verbose {
                    println!(
                        "{name:40} {:2} compared, max abs err {:.2e}, {:5.1}% of tolerance",
                        w.compared,
                        w.abs,
                        100.0 * w.margin
                    );
                }
                max_abs = max_abs.max(w.abs);
                max_margin = max_margin.max(w.margin);
            }
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(panic) => {
                let msg = panic.downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".to_string());
                failures.push(format!("{name}: panicked: {msg}"));
            }
        }
    }
    if verbose {
        println!("overall: max abs err {max_abs:.2e}, {:.1}% of tolerance", 100.0 * max_margin);
    }
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n"));
}
