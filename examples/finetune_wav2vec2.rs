//! Fine-tunes a wav2vec2 checkpoint directory with a new CTC head on the synthetic digit corpus
//! and saves it back as a directory transformers loads (issue 17).
//!
//! What `Wav2Vec2ForCTC.from_pretrained(dir, vocab_size=…)` + `freeze_feature_encoder()` +
//! AdamW does in a transformers fine-tuning script: the encoder's weights from `<dir>`, a new
//! randomly initialised `lm_head` for the characters of the digit words (blank = 0, `|`
//! between words), the feature encoder frozen, SpecAugment time masking and the checkpoint's
//! dropouts in training, CTC with `mean` reduction. Prints the loss and the greedy decoding of
//! a held-out utterance as it goes, then writes `<out>` (`config.json`, `model.safetensors`,
//! `vocab.json`, `preprocessor_config.json`).
//!
//! `cargo run --release --example finetune_wav2vec2 -- <dir> <out> [steps]`; with the small
//! golden model: `<dir>` = `tests/golden/wav2vec2/layer_prenorm`.

use stapes::autograd::Var;
use stapes::nn::ctc::{ctc_loss, CtcLossOptions};
use stapes::nn::optim::{Adam, AdamConfig, Optimizer};
use stapes::nn::Module;
use stapes::speech::data::Dataset;
use stapes::speech::models::wav2vec2::{normalize_audio, CtcVocab, Wav2Vec2ForCtc};
use stapes::speech::synth::{SynthConfig, SyntheticDigits};
use stapes::tensor::{DType, Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, out) = match args.as_slice() {
        [s, o, ..] => (s.clone(), o.clone()),
        _ => return Err("usage: finetune_wav2vec2 <checkpoint dir> <out dir> [steps]".into()),
    };
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    stapes::tensor::manual_seed(0);
    // characters of the digit words, blank first and `|` as the word delimiter
    let mut tokens = vec!["<pad>".to_string(), "|".to_string()];
    let mut chars: Vec<char> = stapes::speech::synth::DIGITS.iter().flat_map(|w| w.chars()).collect();
    chars.sort();
    chars.dedup();
    tokens.extend(chars.iter().map(|c| c.to_string()));
    let encode = |text: &str| -> Vec<i64> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut ids = Vec::new();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                ids.push(1);
            }
            ids.extend(
                w.chars().map(|c| tokens.iter().position(|t| *t == c.to_string()).expect("a digit letter") as i64),
            );
        }
        ids
    };
    let vocab = CtcVocab { tokens: tokens.clone(), blank: 0, word_delimiter: Some(1) };
    let (model, _) = Wav2Vec2ForCtc::from_pretrained_encoder(&src, tokens.len(), DType::F32, &Device::Cpu)?;
    let corpus = SyntheticDigits::new(SynthConfig {
        num_utterances: 400,
        min_words: 1,
        max_words: 3,
        ..SynthConfig::default()
    })?;
    let mut opt =
        Adam::new(model.parameters_without_feature_encoder(), AdamConfig { lr: 1e-3, ..AdamConfig::adamw() })?;
    let batch = 8;
    let held_out = corpus.get(399)?;
    for step in 0..steps {
        model.train(true);
        let utts: Vec<_> = (0..batch).map(|i| corpus.get((step * batch + i) % 392)).collect::<Result<_, _>>()?;
        let longest = utts.iter().map(|u| u.audio.len()).max().unwrap_or(0);
        let mut x = Vec::with_capacity(batch * longest);
        for u in &utts {
            x.extend(normalize_audio(&u.audio));
            x.extend(std::iter::repeat_n(0.0, longest - u.audio.len()));
        }
        let lens: Vec<usize> = utts.iter().map(|u| u.audio.len()).collect();
        let x = Var::constant(Tensor::from_vec(x, [batch, longest], &Device::Cpu)?);
        let (logits, o) = model.forward(&x, Some(&lens))?;
        let targets: Vec<Vec<i64>> = utts.iter().map(|u| encode(&u.transcript)).collect();
        let tl: Vec<usize> = targets.iter().map(|t| t.len()).collect();
        let flat: Vec<i64> = targets.concat();
        let flat = Tensor::from_vec(flat.clone(), [flat.len()], &Device::Cpu)?;
        let opts = CtcLossOptions { batch_first: true, zero_infinity: true, ..Default::default() };
        let loss = ctc_loss(&logits.log_softmax(2usize)?, &flat, &o.frame_lengths, &tl, &opts)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        if step % 25 == 0 || step + 1 == steps {
            model.eval();
            let hx = Var::constant(Tensor::from_vec(
                normalize_audio(&held_out.audio),
                [1, held_out.audio.len()],
                &Device::Cpu,
            )?);
            let (hl, _) = stapes::autograd::no_grad(|| model.forward(&hx, None))?;
            let ids: Vec<usize> =
                hl.tensor().argmax(2usize, false)?.to_vec::<i64>()?.iter().map(|&i| i as usize).collect();
            println!(
                "step {step:4}: loss {:.3}; held-out {:?} -> {:?}",
                loss.tensor().to_vec::<f32>()?[0],
                held_out.transcript,
                vocab.decode_greedy(&ids)
            );
        }
    }
    model.eval();
    model.save_pretrained(&out)?;
    let vocab_json: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::Value::from(i))).collect();
    std::fs::write(std::path::Path::new(&out).join("vocab.json"), serde_json::to_string_pretty(&vocab_json)?)?;
    std::fs::copy(
        std::path::Path::new(&src).join("preprocessor_config.json"),
        std::path::Path::new(&out).join("preprocessor_config.json"),
    )?;
    println!("saved {out}");
    Ok(())
}
