//! Op parity with PyTorch: every case in `tests/golden/ops.safetensors` (made by
//! `tools/golden/ops.py`, see `tools/golden/README.md` for the file layout) is rebuilt with
//! stapes `Var`s; the forward outputs and, after `backward_with(gout)`, every input gradient
//! are compared with PyTorch's.
//!
//! The test fails on any case it cannot run: an `op` with no handler below, a parameter the
//! handler did not read, a tensor name it does not understand. All cases run; the failures are
//! collected and reported together at the end.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{close_margin, load_golden, Params};
use stapes::autograd::Var;
use stapes::tensor::{DType, PadMode, Tensor};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/ops.safetensors");

/// Environment knobs: `STAPES_GOLDEN_OPS=path` reads another golden file (e.g. a deliberately
/// corrupted copy, to check the test catches it); `STAPES_PARITY_VERBOSE=1` prints, per case,
/// the largest fraction of the tolerance any compared element used.
fn golden_path() -> String {
    std::env::var("STAPES_GOLDEN_OPS").unwrap_or_else(|_| GOLDEN.to_string())
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One case of the golden file, grouped from its `<case>.<part>` tensors.
struct Case {
    name: String,
    params: Params,
    inputs: Vec<Tensor>,
    /// `.out` (single) or `.out0`, `.out1`, ... (multi).
    outs: Vec<Tensor>,
    multi: bool,
    /// Per output: its upstream gradient, if the case has a backward pass.
    gouts: Vec<Option<Tensor>>,
    /// Per input: its expected gradient (present = the input is a leaf that requires grad).
    grads: Vec<Option<Tensor>>,
}

/// The inputs as a handler sees them: float inputs as `Var`s (after any `transpose_inN`
/// view), and every input as a `Tensor`.
struct Inputs<'a> {
    vars: Vec<Option<Var>>,
    tensors: Vec<Tensor>,
    p: &'a Params,
}

impl Inputs<'_> {
    fn len(&self) -> usize {
        self.tensors.len()
    }
    /// Float input `i` as a `Var`.
    fn x(&self, i: usize) -> Res<&Var> {
        match self.vars.get(i) {
            Some(Some(v)) => Ok(v),
            Some(None) => Err(format!("in{i} is not a float input").into()),
            None => Err(format!("missing in{i}").into()),
        }
    }
    /// Input `i` as a `Tensor` (indices, masks).
    fn t(&self, i: usize) -> Res<&Tensor> {
        self.tensors.get(i).ok_or_else(|| format!("missing in{i}").into())
    }
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

// ------------------------------------------------------------------------------------------------
// Tolerances
// ------------------------------------------------------------------------------------------------

/// `(rtol, atol)` overrides for an op; `None` = the per-dtype defaults of `assert_close`
/// (those of `torch.testing.assert_close`).
fn tolerance(op: &str, dtype: DType) -> (Option<f64>, Option<f64>) {
    match (op, dtype) {
        // PyTorch's f32 matmul and convolutions run through MKL/oneDNN GEMM kernels that block
        // the K dimension and accumulate with FMA in a different order than stapes' GEMM /
        // im2col; sums of K products then differ by a few ulps of the *partial sums*, which
        // relative to a result near zero is far more than 1.3e-6. 1e-4 is what PyTorch's own
        // tests allow for f32 matmul/conv against a reference.
        ("matmul" | "conv1d" | "conv2d", DType::F32) => (Some(1e-4), Some(1e-5)),
        _ => (None, None),
    }
}

// ------------------------------------------------------------------------------------------------
// Op handlers
// ------------------------------------------------------------------------------------------------

/// Builds the stapes computation for one case; returns its outputs in file order.
fn run_op(op: &str, inp: &Inputs) -> Res<Vec<Var>> {
    let p = inp.p;
    let one = |v: Var| -> Res<Vec<Var>> { Ok(vec![v]) };
    match op {
        // -- unary --
        "neg" => one(inp.x(0)?.neg()?),
        "exp" => one(inp.x(0)?.exp()?),
        "log" => one(inp.x(0)?.log()?),
        "sqrt" => one(inp.x(0)?.sqrt()?),
        "rsqrt" => one(inp.x(0)?.rsqrt()?),
        "abs" => one(inp.x(0)?.abs()?),
        "relu" => one(inp.x(0)?.relu()?),
        "gelu" => one(inp.x(0)?.gelu()?),
        "gelu_tanh" => one(inp.x(0)?.gelu_tanh()?),
        "sigmoid" => one(inp.x(0)?.sigmoid()?),
        "tanh" => one(inp.x(0)?.tanh()?),
        "sin" => one(inp.x(0)?.sin()?),
        "cos" => one(inp.x(0)?.cos()?),
        "powf" => one(inp.x(0)?.powf(p.f64("exponent")?)?),
        "clamp" => one(inp.x(0)?.clamp(p.f64("min")?, p.f64("max")?)?),

        // -- binary, broadcasting --
        "add" => one(inp.x(0)?.add(inp.x(1)?)?),
        "sub" => one(inp.x(0)?.sub(inp.x(1)?)?),
        "mul" => one(inp.x(0)?.mul(inp.x(1)?)?),
        "div" => one(inp.x(0)?.div(inp.x(1)?)?),
        "maximum" => one(inp.x(0)?.maximum(inp.x(1)?)?),
        "minimum" => one(inp.x(0)?.minimum(inp.x(1)?)?),
        "pow" => one(inp.x(0)?.pow(inp.x(1)?)?),

        // -- comparisons (Tensor only, U8 out), where, masked_fill --
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            let (a, b) = (inp.t(0)?, inp.t(1)?);
            let m = match op {
                "eq" => a.eq(b)?,
                "ne" => a.ne(b)?,
                "lt" => a.lt(b)?,
                "le" => a.le(b)?,
                "gt" => a.gt(b)?,
                _ => a.ge(b)?,
            };
            one(Var::constant(m))
        }
        "where" => one(Var::where_cond(inp.t(0)?, inp.x(1)?, inp.x(2)?)?),
        "masked_fill" => one(inp.x(0)?.masked_fill(inp.t(1)?, p.f64("value")?)?),

        // -- reductions --
        "sum" | "mean" | "max" | "min" | "logsumexp" => {
            let dims = dims_param(p, "dims")?;
            let keep = p.bool("keepdim")?;
            let x = inp.x(0)?;
            one(match op {
                "sum" => x.sum(dims.as_slice(), keep)?,
                "mean" => x.mean(dims.as_slice(), keep)?,
                "max" => x.max(dims.as_slice(), keep)?,
                "min" => x.min(dims.as_slice(), keep)?,
                _ => x.logsumexp(dims.as_slice(), keep)?,
            })
        }
        "var" | "std" => {
            let dims = dims_param(p, "dims")?;
            let corr = p.usize("correction")?;
            let keep = p.bool("keepdim")?;
            let x = inp.x(0)?;
            one(if op == "var" { x.var(dims.as_slice(), corr, keep)? } else { x.std(dims.as_slice(), corr, keep)? })
        }
        "sum_all" => one(inp.x(0)?.sum_all()?),
        "argmax" => one(Var::constant(inp.t(0)?.argmax(dim_param(p, "dim")?, p.bool("keepdim")?)?)),

        // -- softmax --
        "softmax" => one(inp.x(0)?.softmax(dim_param(p, "dim")?)?),
        "log_softmax" => one(inp.x(0)?.log_softmax(dim_param(p, "dim")?)?),

        // -- matmul --
        "matmul" => one(inp.x(0)?.matmul(inp.x(1)?)?),

        // -- shape and indexing --
        "cat" | "stack" => {
            let xs: Vec<&Var> = (0..inp.len()).map(|i| inp.x(i)).collect::<Res<_>>()?;
            let dim = dim_param(p, "dim")?;
            one(if op == "cat" { Var::cat(&xs, dim)? } else { Var::stack(&xs, dim)? })
        }
        "split" => Ok(inp.x(0)?.split(&p.usizes("sizes")?, dim_param(p, "dim")?)?),
        "chunk" => Ok(inp.x(0)?.chunk(p.usize("chunks")?, dim_param(p, "dim")?)?),
        "pad" => {
            let mode = match p.str("mode")? {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                m => return Err(format!("unknown pad mode {m:?}").into()),
            };
            one(inp.x(0)?.pad(&p.usizes("pads")?, mode, p.f64("value")?)?)
        }
        "index_select" => one(inp.x(0)?.index_select(dim_param(p, "dim")?, inp.t(1)?)?),
        "gather" => one(inp.x(0)?.gather(dim_param(p, "dim")?, inp.t(1)?)?),
        "scatter_add" => one(inp.x(0)?.scatter_add(dim_param(p, "dim")?, inp.t(1)?, inp.x(2)?)?),
        "embedding" => one(inp.x(0)?.embedding(inp.t(1)?)?),
        "cast" => {
            let dtype = match p.str("dtype")? {
                "f32" => DType::F32,
                "f64" => DType::F64,
                "f16" => DType::F16,
                "bf16" => DType::BF16,
                d => return Err(format!("unknown dtype {d:?}").into()),
            };
            one(inp.x(0)?.to_dtype(dtype)?)
        }

        // -- convolution, pooling, normalisation --
        "conv1d" => {
            let bias = if p.bool("bias")? { Some(inp.x(2)?) } else { None };
            one(inp.x(0)?.conv1d(
                inp.x(1)?,
                bias,
                p.usize("stride")?,
                p.usize("padding")?,
                p.usize("dilation")?,
                p.usize("groups")?,
            )?)
        }
        "conv2d" => {
            let bias = if p.bool("bias")? { Some(inp.x(2)?) } else { None };
            one(inp.x(0)?.conv2d(
                inp.x(1)?,
                bias,
                p.usize2("stride")?,
                p.usize2("padding")?,
                p.usize2("dilation")?,
                p.usize("groups")?,
            )?)
        }
        "max_pool2d" => one(inp.x(0)?.max_pool2d(
            p.usize2("kernel")?,
            p.usize2("stride")?,
            p.usize2("padding")?,
            p.usize2("dilation")?,
            p.bool("ceil_mode")?,
        )?),
        "avg_pool2d" => one(inp.x(0)?.avg_pool2d(
            p.usize2("kernel")?,
            p.usize2("stride")?,
            p.usize2("padding")?,
            p.bool("ceil_mode")?,
            p.bool("count_include_pad")?,
        )?),
        "layer_norm" => {
            let (w, b) = if p.bool("affine")? { (Some(inp.x(1)?), Some(inp.x(2)?)) } else { (None, None) };
            one(inp.x(0)?.layer_norm(&p.usizes("normalized_shape")?, w, b, p.f64("eps")?)?)
        }
        "batch_norm" => {
            // Inputs: x, (weight, bias if affine), (running_mean, running_var if running_stats).
            let affine = p.bool("affine")?;
            let stats = p.bool("running_stats")?;
            let training = p.bool("training")?;
            let (w, b) = if affine { (Some(inp.x(1)?), Some(inp.x(2)?)) } else { (None, None) };
            let s = if affine { 3 } else { 1 };
            let (rm, rv) = if stats { (Some(inp.t(s)?), Some(inp.t(s + 1)?)) } else { (None, None) };
            let (y, updated) = inp.x(0)?.batch_norm(rm, rv, w, b, training, p.f64("momentum")?, p.f64("eps")?)?;
            match (training && stats, updated) {
                (true, Some((m, v))) => Ok(vec![y, Var::constant(m), Var::constant(v)]),
                (true, None) => Err("training batch_norm returned no updated running stats".into()),
                (false, _) => one(y),
            }
        }

        // -- views, then an op so the gradient flows through the view --
        "reshape" | "transpose" | "permute" | "narrow" | "squeeze" | "unsqueeze" | "expand" => {
            let x = inp.x(0)?;
            let v = match op {
                "reshape" => x.reshape(p.usizes("shape")?)?,
                "transpose" => {
                    let d = p.usizes("dims")?;
                    x.transpose(d[0], d[1])?
                }
                "permute" => x.permute(&p.usizes("dims")?)?,
                "narrow" => x.narrow(dim_param(p, "dim")?, p.usize("start")?, p.usize("len")?)?,
                "squeeze" => x.squeeze(dim_param(p, "dim")?)?,
                "unsqueeze" => x.unsqueeze(dim_param(p, "dim")?)?,
                _ => x.expand(p.usizes("shape")?)?,
            };
            match p.get("then") {
                None => one(v),
                Some(_) => match p.str("then")? {
                    "mul" => one(v.mul(inp.x(1)?)?),
                    "sum" => one(v.sum(dims_param(p, "then_dims")?.as_slice(), false)?),
                    t => Err(format!("unknown \"then\" {t:?}").into()),
                },
            }
        }

        _ => Err(format!("no Rust handler for op {op:?}").into()),
    }
}

/// A dim parameter as stapes takes it (negative = from the end).
fn dim_param(p: &Params, key: &str) -> Res<i32> {
    Ok(i32::try_from(p.i64(key)?)?)
}

/// A list-of-dims parameter as stapes takes it (negative = from the end).
fn dims_param(p: &Params, key: &str) -> Res<Vec<i32>> {
    p.i64s(key)?.into_iter().map(|d| Ok(i32::try_from(d)?)).collect()
}

// ------------------------------------------------------------------------------------------------
// Running a case
// ------------------------------------------------------------------------------------------------

/// The outcome of one case that ran: its mismatches (empty = pass) and the largest fraction
/// of the tolerance any compared element used.
struct Outcome {
    failures: Vec<String>,
    margin: f64,
}

/// Runs one case.
fn run_case(c: &Case) -> Res<Outcome> {
    let op = c.params.str("op")?.to_string();
    // Leaves (for the gradients) and the viewed inputs the handler sees.
    let mut leaves: Vec<Option<Var>> = Vec::new();
    let mut vars = Vec::new();
    let mut tensors = Vec::new();
    for (i, t) in c.inputs.iter().enumerate() {
        let transpose = format!("transpose_in{i}");
        let view = if c.params.has(&transpose) {
            let d = c.params.usizes(&transpose)?;
            if d.len() != 2 {
                return Err(format!("{transpose}: expected 2 dims, got {d:?}").into());
            }
            Some((d[0], d[1]))
        } else {
            None
        };
        if is_float(t.dtype()) {
            let leaf = if c.grads[i].is_some() { Var::leaf(t.clone()) } else { Var::constant(t.clone()) };
            let v = match view {
                Some((a, b)) => leaf.transpose(a, b)?,
                None => leaf.clone(),
            };
            tensors.push(v.tensor().clone());
            vars.push(Some(v));
            leaves.push(Some(leaf));
        } else {
            tensors.push(match view {
                Some((a, b)) => t.transpose(a, b)?,
                None => t.clone(),
            });
            vars.push(None);
            leaves.push(None);
        }
    }
    let inputs = Inputs { vars, tensors, p: &c.params };
    let outs = run_op(&op, &inputs)?;
    let unused = c.params.unused();
    if !unused.is_empty() {
        return Err(format!("parameters not read by the Rust handler: {unused:?}").into());
    }

    let mut failures = Vec::new();
    let mut margin = 0.0f64;
    let mut compare = |got: &Tensor, want: &Tensor, what: &str, failures: &mut Vec<String>| {
        let (rtol, atol) = tolerance(&op, want.dtype());
        match close_margin(got, want, rtol, atol, what) {
            Ok(m) => margin = margin.max(m),
            Err(e) => failures.push(e),
        }
    };
    if outs.len() != c.outs.len() {
        failures.push(format!("stapes gave {} outputs, PyTorch {}", outs.len(), c.outs.len()));
        return Ok(Outcome { failures, margin });
    }
    for (k, (got, want)) in outs.iter().zip(&c.outs).enumerate() {
        let what = if c.multi { format!("out{k}") } else { "out".to_string() };
        compare(got.tensor(), want, &what, &mut failures);
    }

    if c.gouts.iter().all(Option::is_none) {
        return Ok(Outcome { failures, margin });
    }
    if c.multi {
        // backward of sum_k (out_k * gout_k).sum()
        let mut loss: Option<Var> = None;
        for (o, g) in outs.iter().zip(&c.gouts) {
            if let Some(g) = g {
                let term = o.mul(&Var::constant(g.clone()))?.sum_all()?;
                loss = Some(match loss {
                    None => term,
                    Some(l) => l.add(&term)?,
                });
            }
        }
        loss.expect("some gout").backward()?;
    } else {
        outs[0].backward_with(c.gouts[0].as_ref().unwrap())?;
    }
    for (i, (leaf, want)) in leaves.iter().zip(&c.grads).enumerate() {
        let (Some(leaf), Some(want)) = (leaf, want) else { continue };
        match leaf.grad() {
            None => failures.push(format!("grad{i}: stapes computed no gradient for in{i}")),
            Some(g) => compare(&g, want, &format!("grad{i}"), &mut failures),
        }
    }
    Ok(Outcome { failures, margin })
}

/// Groups the file's tensors into cases; panics on any tensor or metadata entry that does not
/// fit the layout (so nothing in the file goes unchecked).
fn load_cases() -> Vec<Case> {
    let path = golden_path();
    let golden = load_golden(&path);
    let mut parts: BTreeMap<String, BTreeMap<String, Tensor>> = BTreeMap::new();
    for (name, t) in golden.tensors {
        let (case, part) = name.split_once('.').unwrap_or_else(|| panic!("tensor {name:?} has no '.'"));
        parts.entry(case.to_string()).or_default().insert(part.to_string(), t);
    }
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for (name, json) in &golden.metadata {
        if name.starts_with('_') {
            continue; // generator info, not a case
        }
        let params = Params::parse(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(mut ts) = parts.remove(name) else {
            problems.push(format!("{name}: in the metadata but has no tensors"));
            continue;
        };
        let mut take_numbered = |prefix: &str| -> Vec<Tensor> {
            let mut v = Vec::new();
            while let Some(t) = ts.remove(&format!("{prefix}{}", v.len())) {
                v.push(t);
            }
            v
        };
        let inputs = take_numbered("in");
        let mut outs = take_numbered("out");
        let multi = !outs.is_empty();
        let mut gouts: Vec<Option<Tensor>> = Vec::new();
        let mut grads: Vec<Option<Tensor>> = Vec::new();
        if multi {
            gouts = (0..outs.len()).map(|k| ts.remove(&format!("gout{k}"))).collect();
        } else {
            outs.extend(ts.remove("out"));
            gouts.push(ts.remove("gout"));
        }
        for i in 0..inputs.len() {
            grads.push(ts.remove(&format!("grad{i}")));
        }
        if outs.is_empty() {
            problems.push(format!("{name}: no .out / .out0"));
        }
        if !ts.is_empty() {
            problems.push(format!("{name}: tensors not understood: {:?}", ts.keys().collect::<Vec<_>>()));
        }
        let has_backward = gouts.iter().any(Option::is_some);
        if has_backward != grads.iter().any(Option::is_some) {
            problems.push(format!("{name}: gout and grad tensors must come together"));
        }
        cases.push(Case { name: name.clone(), params, inputs, outs, multi, gouts, grads });
    }
    for name in parts.keys() {
        problems.push(format!("{name}: tensors but no metadata entry"));
    }
    assert!(problems.is_empty(), "malformed golden file {path}:\n  {}", problems.join("\n  "));
    cases
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[test]
fn parity_ops() {
    let cases = load_cases();
    assert!(!cases.is_empty(), "no cases in {}", golden_path());
    let verbose = std::env::var_os("STAPES_PARITY_VERBOSE").is_some();
    // Per op family: (passed, total), for the summary.
    let mut by_op: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for c in &cases {
        let op = c.params.get("op").map(|_| c.params.str("op").unwrap().to_string()).unwrap_or_default();
        let result = catch_unwind(AssertUnwindSafe(|| run_case(c)));
        let problem = match result {
            Ok(Ok(o)) if o.failures.is_empty() => {
                if verbose {
                    println!("{:<48} pass, used {:.3} of the tolerance", c.name, o.margin);
                }
                None
            }
            Ok(Ok(o)) => Some(o.failures.join("\n      ")),
            Ok(Err(e)) => Some(format!("error: {e}")),
            Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
        };
        let entry = by_op.entry(op).or_default();
        entry.1 += 1;
        match problem {
            None => entry.0 += 1,
            Some(msg) => failed.push((c.name.clone(), msg)),
        }
    }
    let summary: Vec<String> = by_op.iter().map(|(op, (ok, n))| format!("{op} {ok}/{n}")).collect();
    println!("parity_ops: {} of {} cases pass; by op: {}", cases.len() - failed.len(), cases.len(), summary.join(", "));
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|(n, m)| format!("  {n}:\n      {m}")).collect();
        panic!(
            "{} of {} PyTorch parity cases failed:\n{}\nfailing cases: {}",
            failed.len(),
            cases.len(),
            list.join("\n"),
            failed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" ")
        );
    }
}

/// The helpers themselves: the comparison reports the worst element, and the JSON reader
/// reads what `ops.py` writes.
#[test]
fn helpers_report_and_parse() {
    use stapes::tensor::Device;
    let e = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &Device::Cpu).unwrap();
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.1, 4.0, 5.5, 6.0], [2, 3], &Device::Cpu).unwrap();
    let msg = common::check_close(&a, &e, None, None, "x").unwrap_err();
    assert!(msg.contains("2 of 6 elements differ"), "{msg}");
    assert!(msg.contains("flat index 4, index [1, 1]"), "{msg}");
    assert!(msg.contains("actual 5.5, expected 5"), "{msg}");
    common::assert_close(&a, &e, Some(0.1), Some(0.0), "x");
    let r = std::panic::catch_unwind(|| common::assert_close(&a, &e, None, None, "x"));
    assert!(r.is_err());
    let inf = Tensor::from_vec(vec![f32::INFINITY, f32::NAN], [2], &Device::Cpu).unwrap();
    assert!(common::check_close(&inf, &inf, None, None, "inf").unwrap_err().contains("1 of 2"));

    let p = Params::parse(r#"{"op":"conv2d","stride":[2,1],"eps":1e-05,"v":-1e9,"b":true,"s":"x\"y"}"#).unwrap();
    assert_eq!(p.usize2("stride").unwrap(), [2, 1]);
    assert_eq!(p.f64("eps").unwrap(), 1e-5);
    assert_eq!(p.f64("v").unwrap(), -1e9);
    assert!(p.bool("b").unwrap());
    assert_eq!(p.str("s").unwrap(), "x\"y");
    assert_eq!(p.unused(), vec!["op".to_string()]);
    assert!(p.usize("eps").is_err());
}
