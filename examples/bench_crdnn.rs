//! stapes side of the CRDNN training-step comparison (`benches/torch/crdnn.py` is the PyTorch
//! side, and writes the file this reads).
//!
//! Workload (issue 8): the reference CRDNN baseline ([`CrdnnConfig::default`]: 80 mels, conv
//! blocks of 64/128/256 channels, a 2-layer BiLSTM of 512, 40 outputs), f32, batch 8 of up to
//! 4 s (401 frames), one training step = zero_grad, forward, [`ctc_loss_from_logits`] (`mean`,
//! `zero_infinity`, batch first), backward, [`clip_grad_norm`] to 5, [`Adam`] (lr 1e-3) step,
//! with the model in training mode.
//!
//! `crdnn.py` writes the initial PyTorch `state_dict` (`model.*`), the inputs (`input.*`) and,
//! in the metadata, the loss and gradient norm of PyTorch's first two steps from that state.
//! This loads the weights with a strict `load_state_dict` (same names and shapes, or an error),
//! runs the same two steps as warm-up and prints both sides' losses and norms with their
//! relative differences (step 2 follows one Adam update, so it checks backward and the
//! optimizer too), then times `steps` single steps: one JSON line
//! `{"name": ..., "median_s": ..., "min_s": ..., "reps": ..., "loss1": ..., "loss2": ...,
//! "torch_loss1": ..., "torch_loss2": ..., "phases": {"forward_s": ..., "backward_s": ...,
//! "clip_s": ..., "adam_s": ...}}` (phases: medians of the same steps split at forward+loss /
//! backward / clip / Adam). Step 1 also compares every parameter's gradient norm (before
//! clipping) with PyTorch's and prints the largest relative differences.
//!
//! ```text
//! OMP_NUM_THREADS=2 /root/torchenv/bin/python benches/torch/crdnn.py 10   # writes the file
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_crdnn [steps] [path]
//! ```

use stapes::autograd::Var;
use stapes::nn::checkpoint::load_safetensors;
use stapes::nn::clip::clip_grad_norm;
use stapes::nn::ctc::{ctc_loss_from_logits, CtcLossOptions};
use stapes::nn::loss::Reduction;
use stapes::nn::optim::{Adam, AdamConfig, Optimizer};
use stapes::nn::Module;
use stapes::speech::models::{Crdnn, CrdnnConfig};
use stapes::tensor::Tensor;
use std::collections::BTreeMap;
use std::time::Instant;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

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

fn lengths(t: &Tensor) -> BoxResult<Vec<usize>> {
    Ok(t.to_vec::<i64>()?.into_iter().map(|v| v as usize).collect())
}

fn json_f64s(meta: &serde_json::Value, key: &str) -> Vec<f64> {
    meta[key].as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default()
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let path = args.get(1).cloned().unwrap_or_else(|| "target/crdnn_bench.safetensors".into());
    eprintln!("stapes: {} rayon threads, reading {path}", rayon::current_num_threads());
    let file = load_safetensors(&path)?;
    let meta: serde_json::Value = serde_json::from_str(
        file.metadata.get("crdnn_bench").ok_or("no `crdnn_bench` metadata: write the file with crdnn.py")?,
    )?;
    let dropout = meta["dropout"].as_f64().unwrap_or(0.0);
    let clip = meta["clip"].as_f64().unwrap_or(5.0);
    let lr = meta["lr"].as_f64().unwrap_or(1e-3);
    let full = meta["full_length"].as_bool().unwrap_or(false);

    let model = Crdnn::new(CrdnnConfig { rnn_dropout: dropout, ..CrdnnConfig::default() })?;
    let state: BTreeMap<String, Tensor> =
        file.tensors.iter().filter_map(|(k, v)| k.strip_prefix("model.").map(|k| (k.to_string(), v.clone()))).collect();
    model.load_state_dict(&state, true)?;
    model.train(true);
    eprintln!("loaded {} tensors, {} parameters (strict)", state.len(), model.num_parameters());
    let input = |k: &str| file.tensors.get(&format!("input.{k}")).cloned().ok_or(format!("no input.{k} in {path}"));
    let features = Var::constant(input("features")?);
    let in_lens = lengths(&input("lengths")?)?;
    let targets = input("targets")?;
    let tgt_lens = lengths(&input("target_lengths")?)?;
    let out_lens = model.output_lengths(&in_lens);
    let opts = CtcLossOptions { blank: 0, reduction: Reduction::Mean, zero_infinity: true, batch_first: true };
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr, ..AdamConfig::adam() })?;

    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    // One step; returns (loss, grad norm) and pushes (forward, backward, clip, Adam) seconds;
    // with `norms`, also each parameter's gradient norm before clipping.
    let mut step = |phases: &mut Vec<[f64; 4]>, norms: Option<&mut Vec<f64>>| -> BoxResult<(f64, f64)> {
        let t0 = Instant::now();
        opt.zero_grad();
        let logits = model.forward(&features, &in_lens)?;
        let loss = ctc_loss_from_logits(&logits, &targets, &out_lens, &tgt_lens, &opts)?;
        let l = loss.tensor().to_scalar_f64()?;
        let t1 = Instant::now();
        loss.backward()?;
        let t2 = Instant::now();
        if let Some(norms) = norms {
            for p in opt.params() {
                let g = p.grad().ok_or("a parameter got no gradient")?.to_vec::<f32>()?;
                norms.push(g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt());
            }
        }
        let t2b = Instant::now();
        let norm = clip_grad_norm(opt.params(), clip, 2.0, false)?;
        let t3 = Instant::now();
        opt.step()?;
        let t4 = Instant::now();
        let s = |a: Instant, b: Instant| (b - a).as_secs_f64();
        phases.push([s(t0, t1), s(t1, t2), s(t2b, t3), s(t3, t4)]);
        Ok((l, norm))
    };

    // The two reference steps (warm-up), compared with PyTorch's.
    let mut warm = Vec::new();
    let mut norms = Vec::new();
    let ours = [step(&mut warm, Some(&mut norms))?, step(&mut warm, None)?];
    let (t_loss, t_norm) = (json_f64s(&meta, "loss"), json_f64s(&meta, "grad_norm"));
    for (i, (l, n)) in ours.iter().enumerate() {
        let (tl, tn) = (t_loss.get(i).copied().unwrap_or(f64::NAN), t_norm.get(i).copied().unwrap_or(f64::NAN));
        eprintln!(
            "step {}: loss stapes {l:.7} torch {tl:.7} (rel diff {:.2e}); grad norm stapes {n:.6} torch {tn:.6} (rel diff {:.2e})",
            i + 1,
            ((l - tl) / tl).abs(),
            ((n - tn) / tn).abs()
        );
    }
    // Per-parameter gradient norms of step 1: the largest relative differences among the
    // gradients that matter (norm at least 1e-4 of the total; the conv biases in front of a
    // BatchNorm have a zero gradient in exact arithmetic, so theirs are rounding noise, ~1e-7).
    let total = t_norm.first().copied().unwrap_or(f64::NAN);
    let mut diffs: Vec<(f64, &str, f64, f64)> = Vec::new();
    let mut noise = Vec::new();
    for (name, &ours) in names.iter().zip(&norms) {
        let Some(theirs) = meta["param_grad_norms"][name.as_str()].as_f64() else { continue };
        if theirs < 1e-4 * total {
            noise.push(format!("{name} ({ours:.1e} vs {theirs:.1e})"));
            continue;
        }
        diffs.push((((ours - theirs) / theirs).abs(), name.as_str(), ours, theirs));
    }
    diffs.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!("step 1 gradient norms, {} parameters compared; largest relative differences:", diffs.len());
    for (d, name, ours, theirs) in diffs.iter().take(4) {
        eprintln!("  {name}: stapes {ours:.6e} torch {theirs:.6e} (rel diff {d:.2e})");
    }
    eprintln!("  (negligible gradients, not compared: {})", noise.join(", "));
    // PyTorch's clip_grad_norm_ sums squares in f32; its gradients' total norm in f64:
    let torch_f64: f64 =
        names.iter().filter_map(|n| meta["param_grad_norms"][n.as_str()].as_f64()).map(|v| v * v).sum::<f64>().sqrt();
    eprintln!(
        "step 1 total gradient norm from PyTorch's per-parameter f64 norms: {torch_f64:.6} (stapes {:.6}, rel diff {:.2e})",
        ours[0].1,
        ((ours[0].1 - torch_f64) / torch_f64).abs()
    );

    let mut samples = Vec::with_capacity(steps);
    let mut phases = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        step(&mut phases, None)?;
        samples.push(t.elapsed().as_secs_f64());
    }
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let median = median_of(&mut samples);
    let phase = |i: usize| median_of(&mut phases.iter().map(|p| p[i]).collect::<Vec<_>>());
    let (fwd, bwd, clip_s, adam_s) = (phase(0), phase(1), phase(2), phase(3));
    let name =
        format!("crdnn_b{}_t{}_{}_p{dropout}", in_lens.len(), features.dims()[1], if full { "full" } else { "packed" });
    println!(
        "{{\"name\": \"{name}\", \"median_s\": {median}, \"min_s\": {min}, \"reps\": {steps}, \"loss1\": {}, \"loss2\": {}, \"torch_loss1\": {}, \"torch_loss2\": {}, \"phases\": {{\"forward_s\": {fwd}, \"backward_s\": {bwd}, \"clip_s\": {clip_s}, \"adam_s\": {adam_s}}}}}",
        ours[0].0,
        ours[1].0,
        t_loss.first().copied().unwrap_or(f64::NAN),
        t_loss.get(1).copied().unwrap_or(f64::NAN)
    );

    Ok(())
}
