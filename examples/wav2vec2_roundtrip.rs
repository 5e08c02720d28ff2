//! Writes a wav2vec2 checkpoint directory from stapes for transformers to load (issue 17's
//! export check; `tools/golden/wav2vec2_roundtrip.py` is the transformers side).
//!
//! Loads `<src>` (a checkpoint directory), takes one SGD step (lr 0.01) on a CTC loss over the
//! golden batch so the weights differ from any file transformers wrote, saves the model with
//! `save_pretrained(<out>)`, and writes `<out>/stapes_logits.safetensors`: the batch and stapes'
//! logits of the saved model (eval mode).
//!
//! `cargo run --release --example wav2vec2_roundtrip -- <src> <golden.safetensors> <out>`

use std::collections::BTreeMap;

use stapes::autograd::Var;
use stapes::nn::checkpoint::{load_safetensors, save_safetensors};
use stapes::nn::ctc::{ctc_loss, CtcLossOptions};
use stapes::nn::Module;
use stapes::speech::models::wav2vec2::Wav2Vec2ForCtc;
use stapes::tensor::{DType, Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, golden, out] = args.as_slice() else {
        return Err("usage: wav2vec2_roundtrip <src dir> <golden.safetensors> <out dir>".into());
    };
    let g = load_safetensors(golden)?.tensors;
    let (model, _) = Wav2Vec2ForCtc::from_pretrained(src, DType::F32, &Device::Cpu)?;
    model.train(true);
    let x = Var::constant(g["input_values"].clone());
    let lens: Vec<usize> = g["audio_lengths"].to_vec::<i64>()?.iter().map(|&n| n as usize).collect();
    let (logits, o) = model.forward(&x, Some(&lens))?;
    let targets = Tensor::from_vec(vec![5i64, 6, 4, 7, 8, 9, 10, 11, 5], [9], &Device::Cpu)?;
    let loss = ctc_loss(
        &logits.log_softmax(2usize)?,
        &targets,
        &o.frame_lengths,
        &[6usize, 3],
        &CtcLossOptions { batch_first: true, zero_infinity: true, ..Default::default() },
    )?;
    loss.backward()?;
    for p in model.parameters() {
        if let Some(gr) = p.grad() {
            p.set_tensor(p.tensor().sub(&gr.affine(0.01, 0.0)?)?)?;
        }
    }
    model.eval();
    model.save_pretrained(out)?;
    let (logits, _) = stapes::autograd::no_grad(|| model.forward(&x, Some(&lens)))?;
    let mut t = BTreeMap::new();
    t.insert("input_values".to_string(), g["input_values"].clone());
    t.insert("audio_lengths".to_string(), g["audio_lengths"].clone());
    t.insert("logits".to_string(), logits.tensor().clone());
    save_safetensors(std::path::Path::new(out).join("stapes_logits.safetensors"), &t, None)?;
    println!("saved {out} (loss before the step {:.4})", loss.tensor().to_vec::<f32>()?[0]);
    Ok(())
}
