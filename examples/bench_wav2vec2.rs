//! stapes side of the wav2vec2 comparison (`benches/torch/wav2vec2.py` is the transformers
//! side), issue 17.
//!
//! Workload: `Wav2Vec2ForCTC` with wav2vec2-base's configuration (7 conv layers of 512 channels,
//! hidden 768, 12 layers, 12 heads, feed-forward 3072, positional conv 128 × 16 groups, vocab
//! 32), randomly initialised, evaluation mode, no graph; input one utterance of `seconds` of
//! audio at 16 kHz (default 10 s), f32 on the CPU. Timing as the PyTorch script: 2 warm-up
//! passes, then `reps` passes; one JSON line with the median and minimum.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_wav2vec2 [reps] [seconds]`

use stapes::autograd::{no_grad, Var};
use stapes::nn::Module;
use stapes::speech::models::wav2vec2::{Wav2Vec2Config, Wav2Vec2ForCtc};
use stapes::tensor::{DType, Device, Tensor};
use std::time::Instant;

fn main() -> Result<(), stapes::tensor::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    stapes::tensor::manual_seed(0);
    let cfg = Wav2Vec2Config::default();
    let model = Wav2Vec2ForCtc::new(&cfg, DType::F32, &Device::Cpu)?;
    model.eval();
    let n = (seconds * 16000.0) as usize;
    let x = Var::constant(Tensor::randn([1, n], DType::F32, &Device::Cpu)?);
    let mut times = Vec::new();
    for i in 0..reps + 2 {
        let t = Instant::now();
        let (logits, _) = no_grad(|| model.forward(&x, None))?;
        std::hint::black_box(logits.tensor().dims());
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"name\": \"wav2vec2_base_fwd_{seconds}s\", \"median_s\": {}, \"min_s\": {}, \"reps\": {reps}, \"threads\": {}, \"params\": {}}}",
        times[times.len() / 2],
        times[0],
        rayon::current_num_threads(),
        model.num_parameters()
    );
    Ok(())
}
