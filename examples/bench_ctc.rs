//! CTC loss forward + backward on the CPU, the workload of issue 7: T = 200, B = 16, C = 41,
//! S = 50 (every input and target full length), f32, `mean` reduction, timed the same way as
//! `benches/torch/ctc.py` (PyTorch's `ctc_loss` on `log_softmax` output, forward + backward).
//!
//! Two workloads: `ctc_log_softmax` (`log_softmax` then [`ctc_loss`], backward through both:
//! what a PyTorch user writes) and `ctc_fused_logits` ([`ctc_loss_from_logits`]: softmax and the
//! CTC gradient in one pass, as warp-ctc). Timing: warm up (at least 2 calls and 0.3 s), then
//! single calls until at least 10 calls and 2 s (at most 200); the median. One JSON line per
//! workload: `{"name": ..., "median_s": ..., "min_s": ..., "reps": ...}`.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_ctc`

use stapes::autograd::Var;
use stapes::nn::ctc::{ctc_loss, ctc_loss_from_logits, CtcLossOptions};
use stapes::tensor::{DType, Device, Generator, Tensor};
use std::time::Instant;

const T: usize = 200;
const B: usize = 16;
const C: usize = 41;
const S: usize = 50;

/// One timed call: the loss of a forward pass (backward is run by the caller).
type Workload<'a> = Box<dyn Fn() -> stapes::tensor::Result<Var> + 'a>;

fn time(mut f: impl FnMut()) -> (f64, f64, usize) {
    let start = Instant::now();
    let mut calls = 0;
    while calls < 2 || start.elapsed().as_secs_f64() < 0.3 {
        f();
        calls += 1;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 10 || (start.elapsed().as_secs_f64() < 2.0 && samples.len() < 200) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0], samples.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut gen = Generator::new(0);
    let x = Var::leaf(Tensor::randn_with(&mut gen, 0.0, 1.0, [T, B, C], DType::F32, &Device::Cpu)?);
    // labels 1..C-1 (blank 0), from a fixed xorshift sequence
    let mut s = 0x2545_f491u64;
    let labels: Vec<i64> = (0..B * S)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            1 + (s % (C as u64 - 1)) as i64
        })
        .collect();
    let targets = Tensor::from_vec(labels, [B, S], &Device::Cpu)?;
    let (il, tl) = (vec![T; B], vec![S; B]);
    let opts = CtcLossOptions::default();
    eprintln!("rayon threads: {}", rayon::current_num_threads());
    let workloads: [(&str, Workload); 2] = [
        ("ctc_log_softmax", Box::new(|| ctc_loss(&x.log_softmax(2)?, &targets, &il, &tl, &opts))),
        ("ctc_fused_logits", Box::new(|| ctc_loss_from_logits(&x, &targets, &il, &tl, &opts))),
    ];
    for (name, f) in &workloads {
        let (median, min, reps) = time(|| {
            x.zero_grad();
            let loss = f().expect("ctc");
            loss.backward().expect("backward");
        });
        println!("{{\"name\": \"{name}\", \"median_s\": {median:e}, \"min_s\": {min:e}, \"reps\": {reps}}}");
    }
    Ok(())
}
