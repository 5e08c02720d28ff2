//! stapes side of the Transformer LM training comparison (issue 18; `benches/torch/lm.py` is the
//! PyTorch side, same model and step): d_model 256, 4 heads, 4 pre-norm GELU layers, feed-forward
//! 1024, dropout 0.1, vocab 64; batches of 32 x 128 random tokens; cross-entropy, backward,
//! clipping at 1.0, AdamW. f32 on the CPU. 2 warm-up steps, then `reps` timed steps; one JSON
//! line with the median step and tokens per second.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_lm -- [reps]`

use stapes::nn::clip::clip_grad_norm;
use stapes::nn::loss::{cross_entropy, CrossEntropyOptions};
use stapes::nn::optim::{Adam, AdamConfig, Optimizer};
use stapes::nn::Module;
use stapes::speech::nnlm::{TransformerLm, TransformerLmConfig};
use stapes::tensor::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let (v, b, t) = (64usize, 32usize, 128usize);
    stapes::tensor::manual_seed(0);
    let cfg = TransformerLmConfig {
        vocab_size: v,
        d_model: 256,
        nhead: 4,
        num_layers: 4,
        dim_feedforward: 1024,
        dropout: 0.1,
        max_len: 1024,
        ..TransformerLmConfig::default()
    };
    let model = TransformerLm::new(&cfg)?;
    model.train(true);
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 1e-4, weight_decay: 0.01, ..AdamConfig::adamw() })?;
    let mut g = stapes::tensor::Generator::new(1);
    let ids: Vec<i64> = (0..b * (t + 1)).map(|_| (g.next_u64() % v as u64) as i64).collect();
    let all = Tensor::from_vec(ids, [b, t + 1], &Device::Cpu)?;
    let x = all.narrow(1, 0, t)?.contiguous()?;
    let y = all.narrow(1, 1, t)?.contiguous()?.reshape([b * t])?;
    let mut times = Vec::new();
    for i in 0..reps + 2 {
        let t0 = std::time::Instant::now();
        opt.zero_grad();
        let logits = model.forward(&x, None)?.reshape([b * t, v])?;
        let loss = cross_entropy(&logits, &y, &CrossEntropyOptions::default())?;
        loss.backward()?;
        clip_grad_norm(opt.params(), 1.0, 2.0, false)?;
        opt.step()?;
        if i >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{{\"name\": \"transformer_lm_train_step\", \"median_s\": {med:.5}, \"min_s\": {:.5}, \"tokens_per_s\": {:.0}, \
         \"reps\": {reps}, \"threads\": {}, \"params\": {}}}",
        times[0],
        (b * t) as f64 / med,
        rayon::current_num_threads(),
        model.num_parameters()
    );
    Ok(())
}
