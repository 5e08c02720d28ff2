//! Dynamic int8 quantization, stapes side (issue 19; `benches/torch/quant.py` is PyTorch's,
//! `benches/run_quant.sh` runs both in interleaved rounds). Inference (`no_grad`, eval mode),
//! f32 against `quantize_dynamic`, 2 threads:
//!
//! - `crdnn`: the reference CRDNN (`CrdnnConfig::default()`: three conv blocks, a 2-layer
//!   bidirectional LSTM of 512 over 2560 features, a Linear to 40) on 8 utterances of at most
//!   401 frames of 80 log-mels, lengths 401, 396, …, 366 (a packed batch).
//! - `crdnn_rnn`: its quantized layers alone: the LSTM and the Linear on the conv stack's output
//!   shape, `[8, 201, 2560]`, same lengths halved.
//! - `linear_stack`: a Transformer-sized stack, 4 × (Linear 512 → 2048, ReLU, Linear 2048 → 512)
//!   on 64 rows.
//!
//! Weights per tensor (`quantize_dynamic`'s default qconfig) as on the PyTorch side. One JSON
//! line per workload and precision: the median forward time over `reps` and the bytes of the
//! quantized layers' weights (f32, or int8 + scales).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_quant -- [reps] [workload]`

use stapes::autograd::{no_grad, Var};
use stapes::nn::layers::{Linear, ReLU, Sequential};
use stapes::nn::quantized::{quantize_dynamic, QScheme};
use stapes::nn::rnn::{Lstm, RnnConfig};
use stapes::nn::{Forward, Module};
use stapes::speech::models::{Crdnn, CrdnnConfig};
use stapes::tensor::{DType, Device, Generator, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t = Vec::new();
    for _ in 0..reps {
        let t0 = std::time::Instant::now();
        f();
        t.push(t0.elapsed().as_secs_f64());
    }
    median(t)
}

fn report(name: &str, precision: &str, s: f64, bytes: usize) {
    println!(
        "{{\"side\":\"stapes\",\"bench\":\"{name}\",\"precision\":\"{precision}\",\"median_ms\":{:.3},\"weight_bytes\":{bytes},\"threads\":{}}}",
        s * 1e3,
        rayon::current_num_threads()
    );
}

struct Rnn {
    lstm: Lstm,
    out: Linear,
}

impl Module for Rnn {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("rnn".into(), &self.lstm as &dyn Module), ("out".into(), &self.out)]
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    // an optional second argument runs only the workloads whose name contains it
    let only = std::env::args().nth(2).unwrap_or_default();
    let mut g = Generator::new(8);
    stapes::tensor::manual_seed(0);

    let lengths: Vec<usize> = (0..8).map(|i| 401 - 5 * i).collect();
    // the reference CRDNN
    if "crdnn".contains(only.as_str()) {
        let model = Crdnn::new(CrdnnConfig::default())?;
        model.eval();
        let feats = Var::constant(Tensor::randn_with(&mut g, 0.0, 1.0, &[8, 401, 80][..], DType::F32, &Device::Cpu)?);
        let f32_s = time(reps, || {
            no_grad(|| model.forward(&feats, &lengths)).expect("forward");
        });
        let r = quantize_dynamic(&model, QScheme::PerTensor)?;
        report("crdnn", "f32", f32_s, r.f32_bytes);
        let q_s = time(reps, || {
            no_grad(|| model.forward(&feats, &lengths)).expect("forward");
        });
        report("crdnn", "int8", q_s, r.int8_bytes);
    }

    // its quantized layers alone
    if "crdnn_rnn".contains(only.as_str()) {
        let rnn = Rnn {
            lstm: Lstm::new(RnnConfig {
                num_layers: 2,
                bidirectional: true,
                batch_first: true,
                ..RnnConfig::new(2560, 512)
            })?,
            out: Linear::new(1024, 40, true)?,
        };
        let x = Var::constant(Tensor::randn_with(&mut g, 0.0, 1.0, &[8, 201, 2560][..], DType::F32, &Device::Cpu)?);
        let half: Vec<usize> = lengths.iter().map(|n| n.div_ceil(2)).collect();
        let run = |rnn: &Rnn| {
            no_grad(|| -> stapes::tensor::Result<Var> {
                let h = rnn.lstm.forward_with(&x, None, Some(&half))?.output;
                rnn.out.forward(&h)
            })
            .expect("rnn forward");
        };
        let f32_s = time(reps, || run(&rnn));
        let r = quantize_dynamic(&rnn, QScheme::PerTensor)?;
        report("crdnn_rnn", "f32", f32_s, r.f32_bytes);
        report("crdnn_rnn", "int8", time(reps, || run(&rnn)), r.int8_bytes);
    }

    // a Transformer-sized Linear stack
    if !"linear_stack".contains(only.as_str()) {
        return Ok(());
    }
    let mut stack = Sequential::new();
    for _ in 0..4 {
        stack.push(Linear::new(512, 2048, true)?);
        stack.push(ReLU);
        stack.push(Linear::new(2048, 512, true)?);
    }
    let x = Var::constant(Tensor::randn_with(&mut g, 0.0, 1.0, &[64, 512][..], DType::F32, &Device::Cpu)?);
    let f32_s = time(reps * 10, || {
        no_grad(|| stack.forward(&x)).expect("forward");
    });
    let r = quantize_dynamic(&stack, QScheme::PerTensor)?;
    report("linear_stack", "f32", f32_s, r.f32_bytes);
    report(
        "linear_stack",
        "int8",
        time(reps * 10, || {
            no_grad(|| stack.forward(&x)).expect("forward");
        }),
        r.int8_bytes,
    );
    Ok(())
}
