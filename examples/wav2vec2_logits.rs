//! stapes' side of the `stapes export --hf` check (issue 17): loads a checkpoint directory with
//! `Wav2Vec2Pipeline` (as `stapes transcribe --model` does), runs it on one audio file and
//! writes `<out.safetensors>` with the prepared `input_values` and the logits, and prints the
//! greedy transcript. `tools/golden/wav2vec2_export_check.py` loads the same directory with
//! transformers' `Wav2Vec2Processor` and `Wav2Vec2ForCTC` and compares all three.
//!
//! `cargo run --release --example wav2vec2_logits -- <dir> <file.wav> <out.safetensors>`

use std::collections::BTreeMap;

use stapes::autograd::{no_grad, Var};
use stapes::nn::checkpoint::save_safetensors;
use stapes::speech::audio::{load_audio, resample};
use stapes::speech::models::wav2vec2::{normalize_audio, Wav2Vec2Pipeline};
use stapes::tensor::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, wav, out] = args.as_slice() else {
        return Err("usage: wav2vec2_logits <checkpoint dir> <file.wav> <out.safetensors>".into());
    };
    let p = Wav2Vec2Pipeline::load(dir, &Device::Cpu)?;
    let a = load_audio(wav, true)?;
    let sr = p.preprocessor.sampling_rate;
    let samples = if a.sample_rate == sr { a.samples } else { resample(&a.samples, a.sample_rate, sr)? };
    let iv = if p.preprocessor.do_normalize { normalize_audio(&samples) } else { samples.clone() };
    let x = Tensor::from_vec(iv, [1, samples.len()], &Device::Cpu)?;
    let (logits, _) = no_grad(|| p.model.forward(&Var::constant(x.clone()), None))?;
    let tensors = BTreeMap::from([("input_values".to_string(), x), ("logits".to_string(), logits.tensor().clone())]);
    save_safetensors(out, &tensors, None)?;
    println!("{}", p.transcribe_piece(&samples)?);
    Ok(())
}
