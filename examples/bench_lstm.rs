//! stapes side of the LSTM comparison (`benches/torch/lstm.py` is the PyTorch side).
//!
//! Workload (issue 5, "LSTM and GRU"): a bidirectional 2-layer LSTM, input 256, hidden 512,
//! f32, time-major input `[T = 100, B = 8, 256]`; one training step is forward,
//! `loss = (output * gy).sum()` for a fixed random `gy`, backward (gradients of every weight and
//! of the input), with the gradients cleared before each step.
//!
//! Timing, the same as `lstm.py`: warm up 3 steps, then time `steps` single steps; report the
//! median step time and that median × 200 (the "200 steps"), then the median of
//! `steps` forward passes without a graph. One JSON line per model: `{"name": ..., "median_s":
//! ..., "min_s": ..., "reps": ..., "x200_s": ..., "fwd_median_s": ...}`.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_lstm [steps] [lstm|gru ...]`

use stapes::autograd::Var;
use stapes::nn::rnn::{Gru, Lstm, RnnConfig};
use stapes::nn::Module;
use stapes::tensor::{DType, Device, Generator, Tensor};
use std::time::Instant;

const T: usize = 100;
const B: usize = 8;
const I: usize = 256;
const H: usize = 512;
const LAYERS: usize = 2;

/// Sorts `v` and returns its median.
fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn run(kind: &str, steps: usize) -> Result<String, stapes::tensor::Error> {
    stapes::tensor::manual_seed(0);
    let cfg = RnnConfig { num_layers: LAYERS, bidirectional: true, ..RnnConfig::new(I, H) };
    let lstm = if kind == "lstm" { Some(Lstm::new(cfg.clone())?) } else { None };
    let gru = if kind == "gru" { Some(Gru::new(cfg)?) } else { None };
    let mut g = Generator::new(0);
    let x = Var::leaf(Tensor::randn_with(&mut g, 0.0, 1.0, [T, B, I], DType::F32, &Device::Cpu)?);
    let gy = Var::constant(Tensor::randn_with(&mut g, 0.0, 1.0, [T, B, 2 * H], DType::F32, &Device::Cpu)?);
    let step = || -> Result<(), stapes::tensor::Error> {
        x.zero_grad();
        let out = match (&lstm, &gru) {
            (Some(m), _) => {
                m.zero_grad();
                m.forward_with(&x, None, None)?.output
            }
            (_, Some(m)) => {
                m.zero_grad();
                m.forward_with(&x, None, None)?.output
            }
            _ => unreachable!("one model is built"),
        };
        out.mul(&gy)?.sum_all()?.backward()
    };
    for _ in 0..3 {
        step()?;
    }
    let mut samples = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        step()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    let median = median_of(&mut samples);
    // The forward pass alone (no graph), for the split between forward and backward.
    let mut fwd = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        stapes::autograd::no_grad(|| match (&lstm, &gru) {
            (Some(m), _) => m.forward_with(&x, None, None).map(|o| o.output),
            (_, Some(m)) => m.forward_with(&x, None, None).map(|o| o.output),
            _ => unreachable!("one model is built"),
        })?;
        fwd.push(t.elapsed().as_secs_f64());
    }
    Ok(format!(
        "{{\"name\": \"{kind}_bi2_i{I}_h{H}_b{B}_t{T}\", \"median_s\": {median}, \"min_s\": {}, \"reps\": {}, \"x200_s\": {}, \"fwd_median_s\": {}}}",
        samples[0],
        samples.len(),
        median * 200.0,
        median_of(&mut fwd)
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = args.first().and_then(|s| s.parse().ok()).unwrap_or(15);
    let kinds: Vec<&str> = args.iter().skip(1).map(|s| s.as_str()).collect();
    let kinds = if kinds.is_empty() { vec!["lstm"] } else { kinds };
    eprintln!("stapes: {} rayon threads", rayon::current_num_threads());
    for k in kinds {
        if k != "lstm" && k != "gru" {
            eprintln!("unknown model {k:?} (lstm or gru)");
            std::process::exit(2);
        }
        match run(k, steps) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{k}: {e}");
                std::process::exit(1);
            }
        }
    }
}
