//! wav2vec2 parity with transformers (issue 17). `tools/golden/wav2vec2.py` saved two
//! random-initialised `Wav2Vec2ForCTC` checkpoint directories (`group_postnorm`: the base
//! layout; `layer_prenorm`: the large/lv60 layout) and, per case, the audio batch, the feature
//! extractor's `input_values`, the logits, the feature encoder's output, the hidden states as
//! `output_hidden_states` returns them, and the loss and gradients of one fine-tuning step. Here each directory is loaded with
//! `Wav2Vec2ForCtc::from_pretrained` and every stored tensor is compared.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{assert_close, load_golden};
use stapes::autograd::Var;
use stapes::nn::checkpoint::hf::read_weights;
use stapes::nn::ctc::{ctc_loss, CtcLossOptions};
use stapes::nn::Module;
use stapes::speech::models::wav2vec2::{
    normalize_audio, CtcVocab, Wav2Vec2Config, Wav2Vec2ForCtc, Wav2Vec2Preprocessor,
};
use stapes::tensor::{DType, Device, Tensor};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wav2vec2")
}

fn preprocessor(case: &str) -> Wav2Vec2Preprocessor {
    let text = std::fs::read_to_string(golden_dir().join(case).join("preprocessor_config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Each utterance's valid samples, from the golden `audio_lengths`.
fn lengths(g: &BTreeMap<String, Tensor>) -> Vec<usize> {
    g["audio_lengths"].to_vec::<i64>().unwrap().iter().map(|&n| n as usize).collect()
}

fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let v = t.to_vec::<f32>().unwrap();
    let c = *t.dims().last().unwrap();
    v.chunks(c)
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0)
        .collect()
}

fn check_forward(case: &str) {
    let g = load_golden(golden_dir().join(format!("{case}.safetensors"))).tensors;
    let dir = golden_dir().join(case);
    let (model, unexpected) = Wav2Vec2ForCtc::from_pretrained(&dir, DType::F32, &Device::Cpu).unwrap();
    assert!(unexpected.is_empty(), "{case}: unexpected keys {unexpected:?}");
    model.eval();
    let pre = preprocessor(case);
    let lens = lengths(&g);

    // the feature extractor's per-utterance normalisation
    let audio = g["audio"].to_vec::<f32>().unwrap();
    let want_iv = g["input_values"].to_vec::<f32>().unwrap();
    let s = g["audio"].dims()[1];
    for (i, &n) in lens.iter().enumerate() {
        let got = normalize_audio(&audio[i * s..i * s + n]);
        for (j, (&a, &b)) in got.iter().zip(&want_iv[i * s..i * s + n]).enumerate() {
            assert!((a - b).abs() < 2e-5, "{case}: input_values[{i}][{j}] {a} vs {b}");
        }
        assert!(want_iv[i * s + n..(i + 1) * s].iter().all(|&x| x == pre.padding_value));
    }

    let x = Var::constant(g["input_values"].clone());
    let lens_arg = pre.return_attention_mask.then_some(lens.as_slice());
    let (logits, out) = model.forward(&x, lens_arg).unwrap();
    assert_close(
        out.extract_features.tensor(),
        &g["extract_features"],
        Some(1e-4),
        Some(1e-4),
        &format!("{case} extract_features"),
    );
    assert_close(out.encoder_input.tensor(), &g["projected"], Some(1e-4), Some(1e-4), &format!("{case} projected"));
    assert_eq!(out.hidden_states.len(), model.config().num_hidden_layers + 1);
    for (i, h) in out.hidden_states.iter().enumerate() {
        assert_close(h.tensor(), &g[&format!("hidden.{i}")], Some(1e-4), Some(1e-4), &format!("{case} hidden.{i}"));
    }
    assert_close(
        out.last_hidden_state.tensor(),
        &g["last_hidden_state"],
        Some(1e-4),
        Some(1e-4),
        &format!("{case} last_hidden_state"),
    );
    assert_close(logits.tensor(), &g["logits"], Some(0.0), Some(1e-4), &format!("{case} logits"));
    assert_eq!(argmax_rows(logits.tensor()), argmax_rows(&g["logits"]), "{case}: argmax differs");
}

#[test]
fn group_norm_post_norm_checkpoint_matches_transformers() {
    check_forward("group_postnorm");
}

#[test]
fn layer_norm_pre_norm_checkpoint_matches_transformers() {
    check_forward("layer_prenorm");
}

/// One fine-tuning step as the golden script made it: train mode with every dropout, LayerDrop
/// and masking off, the feature encoder frozen, CTC with `ctc_loss_reduction = "mean"`. The loss
/// in f32 is compared with transformers' own; the gradients come from the model and loss in f64
/// on both sides (in f32, transformers' own gradients are off from f64 by up to 1.7e-2 of a
/// tensor's largest: rounding, which would hide a real difference).
fn check_training_step(case: &str) {
    let g = load_golden(golden_dir().join(format!("{case}.safetensors"))).tensors;
    let dir = golden_dir().join(case);
    let mut cfg = Wav2Vec2Config::from_json_file(dir.join("config.json")).unwrap();
    cfg.hidden_dropout = 0.0;
    cfg.activation_dropout = 0.0;
    cfg.attention_dropout = 0.0;
    cfg.feat_proj_dropout = 0.0;
    cfg.final_dropout = 0.0;
    cfg.layerdrop = 0.0;
    cfg.apply_spec_augment = false; // the golden step had no masking
    let pre = preprocessor(case);
    let lens = lengths(&g);
    let labels = g["labels"].to_vec::<i64>().unwrap();
    let width = g["labels"].dims()[1];
    let target_lengths: Vec<usize> = labels.chunks(width).map(|r| r.iter().filter(|&&l| l >= 0).count()).collect();
    let flat: Vec<i64> = labels.iter().copied().filter(|&l| l >= 0).collect();
    let targets = Tensor::from_vec(flat.clone(), [flat.len()], &Device::Cpu).unwrap();
    let opts = CtcLossOptions { blank: cfg.pad_token_id, zero_infinity: true, batch_first: true, ..Default::default() };
    let weights = read_weights(&dir).unwrap();
    let mut grads = BTreeMap::new();
    for dtype in [DType::F32, DType::F64] {
        let model = Wav2Vec2ForCtc::new(&cfg, dtype, &Device::Cpu).unwrap();
        model.load_state_dict(&weights, true).unwrap();
        model.train(true);
        let x = Var::constant(g["input_values"].to_dtype(dtype).unwrap());
        let (logits, out) = model.forward(&x, pre.return_attention_mask.then_some(lens.as_slice())).unwrap();
        // transformers: input lengths from the attention mask, all frames when none was given
        let log_probs = logits.log_softmax(2usize).unwrap();
        let loss = ctc_loss(&log_probs, &targets, &out.frame_lengths, &target_lengths, &opts).unwrap();
        let l = loss.tensor().reshape([1]).unwrap();
        if dtype == DType::F32 {
            assert_close(&l, &g["loss"], Some(1e-5), Some(0.0), &format!("{case} loss (f32)"));
            continue;
        }
        assert_close(&l, &g["loss64"], Some(1e-12), Some(0.0), &format!("{case} loss (f64)"));
        loss.backward().unwrap();
        grads = model.named_parameters().into_iter().collect();
    }
    let mut compared = 0;
    for (name, want) in g.iter().filter_map(|(k, v)| k.strip_prefix("grad.").map(|n| (n, v))) {
        let got = grads[name].grad().unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
        let (a, b) = (got.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
        assert_eq!(a.len(), b.len(), "{case} grad {name}: length");
        let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
        let scale = b.iter().map(|y| y.abs()).fold(0f64, f64::max);
        // the key bias's gradient is zero up to rounding (softmax ignores a shift shared by all
        // keys); every other gradient to 1e-9 of the tensor's largest
        let bound = if name.ends_with("k_proj.bias") { 1e-12 } else { 1e-9 * scale };
        assert!(err <= bound, "{case} grad {name}: max abs err {err:.3e} > {bound:.3e} (max |g| {scale:.3e})");
        compared += 1;
    }
    // the frozen feature encoder has no golden gradient, nor the unused masked_spec_embed (no
    // masking in this step); every other parameter does
    let trainable = grads
        .keys()
        .filter(|k| !k.starts_with("wav2vec2.feature_extractor.") && k.as_str() != "wav2vec2.masked_spec_embed")
        .count();
    assert_eq!(compared, trainable, "{case}: gradients compared");
}

#[test]
fn group_norm_post_norm_training_step_matches_transformers() {
    check_training_step("group_postnorm");
}

#[test]
fn layer_norm_pre_norm_training_step_matches_transformers() {
    check_training_step("layer_prenorm");
}

#[test]
fn vocab_and_greedy_decoding_follow_the_ctc_tokenizer() {
    let v = CtcVocab::from_json_file(golden_dir().join("group_postnorm/vocab.json"), 0).unwrap();
    assert_eq!(v.tokens.len(), 12);
    assert_eq!(v.word_delimiter, Some(4));
    // H E E <pad> | T | | A <s> A -> "HE T AA" ... repeats collapse unless split by a blank
    let ids = [11, 5, 5, 0, 4, 6, 4, 4, 7, 1, 7, 0, 7];
    assert_eq!(v.decode_greedy(&ids), "HE T AAA");
}

#[test]
fn save_pretrained_round_trips_and_bad_directories_are_errors() {
    let src = golden_dir().join("layer_prenorm");
    let (model, _) = Wav2Vec2ForCtc::from_pretrained(&src, DType::F32, &Device::Cpu).unwrap();
    let out = std::env::temp_dir().join(format!("stapes-w2v2-save-{}", std::process::id()));
    model.save_pretrained(&out).unwrap();
    let (back, unexpected) = Wav2Vec2ForCtc::from_pretrained(&out, DType::F32, &Device::Cpu).unwrap();
    assert!(unexpected.is_empty());
    assert_eq!(back.config(), model.config());
    for ((n, a), (_, b)) in model.state_dict().iter().zip(back.state_dict().iter()) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{n}");
    }

    // the hub spelling of weight norm loads to the same model
    let legacy = std::env::temp_dir().join(format!("stapes-w2v2-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::copy(src.join("config.json"), legacy.join("config.json")).unwrap();
    let renamed: BTreeMap<String, Tensor> = model
        .state_dict()
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace("parametrizations.weight.original0", "weight_g")
                    .replace("parametrizations.weight.original1", "weight_v"),
                v,
            )
        })
        .collect();
    assert!(renamed.contains_key("wav2vec2.encoder.pos_conv_embed.conv.weight_g"));
    stapes::nn::checkpoint::save_safetensors(legacy.join("model.safetensors"), &renamed, None).unwrap();
    let (old, _) = Wav2Vec2ForCtc::from_pretrained(&legacy, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(old.state_dict().keys().collect::<Vec<_>>(), model.state_dict().keys().collect::<Vec<_>>());

    // a shape mismatch names the key; a missing key is listed; a bad config names the field
    let mut bad = renamed.clone();
    bad.insert("lm_head.weight".into(), Tensor::zeros([3, 32], DType::F32, &Device::Cpu).unwrap());
    stapes::nn::checkpoint::save_safetensors(legacy.join("model.safetensors"), &bad, None).unwrap();
    let e = Wav2Vec2ForCtc::from_pretrained(&legacy, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("lm_head.weight"), "{e}");
    let mut bad = renamed.clone();
    bad.remove("wav2vec2.encoder.layers.1.attention.q_proj.bias");
    stapes::nn::checkpoint::save_safetensors(legacy.join("model.safetensors"), &bad, None).unwrap();
    let e = Wav2Vec2ForCtc::from_pretrained(&legacy, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("layers.1.attention.q_proj.bias"), "{e}");
    std::fs::write(legacy.join("config.json"), r#"{"model_type": "hubert"}"#).unwrap();
    let e = Wav2Vec2ForCtc::from_pretrained(&legacy, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("hubert"), "{e}");
    std::fs::write(legacy.join("model.safetensors"), b"truncated").unwrap();
    std::fs::copy(src.join("config.json"), legacy.join("config.json")).unwrap();
    let e = Wav2Vec2ForCtc::from_pretrained(&legacy, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&legacy).unwrap();
}

#[test]
fn pytorch_model_bin_loads_the_same_weights_as_safetensors() {
    // the legacy directories: pytorch_model.bin (zip + pickle of an OrderedDict with _metadata)
    // with the hub's weight_g / weight_v spelling
    for case in ["group_postnorm", "layer_prenorm"] {
        let (st, _) = Wav2Vec2ForCtc::from_pretrained(golden_dir().join(case), DType::F32, &Device::Cpu).unwrap();
        let (bin, unexpected) =
            Wav2Vec2ForCtc::from_pretrained(golden_dir().join(format!("{case}_legacy")), DType::F32, &Device::Cpu)
                .unwrap();
        assert!(unexpected.is_empty(), "{case}: {unexpected:?}");
        let (a, b) = (st.state_dict(), bin.state_dict());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, v) in &a {
            assert_eq!(v.to_vec::<f32>().unwrap(), b[k].to_vec::<f32>().unwrap(), "{case}: {k}");
        }
    }
}

#[test]
fn a_malicious_pickle_is_refused_and_runs_nothing() {
    let marker = std::path::Path::new("/tmp/stapes-malicious-checkpoint-ran");
    let _ = std::fs::remove_file(marker);
    let e = Wav2Vec2ForCtc::from_pretrained(golden_dir().join("malicious"), DType::F32, &Device::Cpu)
        .err()
        .expect("a pickle calling os.system must be refused")
        .to_string();
    assert!(e.contains("posix.system") && e.contains("refused") && e.contains("pytorch_model.bin"), "{e}");
    assert!(!marker.exists(), "the pickle's command ran");

    // truncated and corrupt .bin files are errors, never panics
    let src = std::fs::read(golden_dir().join("layer_prenorm_legacy/pytorch_model.bin")).unwrap();
    let dir = std::env::temp_dir().join(format!("stapes-w2v2-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(golden_dir().join("layer_prenorm_legacy/config.json"), dir.join("config.json")).unwrap();
    for cut in [0, 100, src.len() / 2, src.len() - 30] {
        std::fs::write(dir.join("pytorch_model.bin"), &src[..cut]).unwrap();
        let e = Wav2Vec2ForCtc::from_pretrained(&dir, DType::F32, &Device::Cpu).err().expect("truncated").to_string();
        assert!(e.contains("pytorch_model.bin"), "cut at {cut}: {e}");
    }
    let mut flipped = src.clone();
    for i in (200..flipped.len()).step_by(997) {
        flipped[i] ^= 0x5a;
    }
    std::fs::write(dir.join("pytorch_model.bin"), &flipped).unwrap();
    assert!(Wav2Vec2ForCtc::from_pretrained(&dir, DType::F32, &Device::Cpu).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stapes_transcribe_with_a_checkpoint_directory_decodes_transformers_logits() {
    // utterance 0 of the golden batch (full length, so batching did not pad it) as a WAV file:
    // `stapes transcribe --model` must print the greedy decoding of transformers' logits
    for case in ["group_postnorm", "layer_prenorm_legacy"] {
        let golden_case = case.trim_end_matches("_legacy");
        let g = load_golden(golden_dir().join(format!("{golden_case}.safetensors"))).tensors;
        let audio = g["audio"].to_vec::<f32>().unwrap();
        let n = g["audio"].dims()[1];
        let wav = std::env::temp_dir().join(format!("stapes-w2v2-{case}-{}.wav", std::process::id()));
        stapes::speech::audio::write_wav(&wav, &audio[..n], 16000).unwrap();
        let logits = g["logits"].narrow(0, 0, 1).unwrap();
        let vocab = CtcVocab::from_json_file(golden_dir().join(golden_case).join("vocab.json"), 0).unwrap();
        let want = vocab.decode_greedy(&argmax_rows(&logits));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes"))
            .args(["transcribe", "--no-vad", "--model"])
            .arg(golden_dir().join(case))
            .arg(&wav)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.trim(), format!("{}: {want}", wav.display()).trim(), "{case}");
        std::fs::remove_file(&wav).unwrap();
    }
    // a directory that is not a checkpoint is a clear error, not a panic
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["transcribe", "--model", "/nonexistent-dir", "x.wav"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir") && !err.contains("panicked"), "{err}");
}

/// The small pre-norm model on `cuda:0` (the GPU when there is one, else the CUDA emulator, so
/// this runs in CI): the same logits as transformers', padding mask included.
#[test]
fn layer_norm_pre_norm_checkpoint_on_cuda_matches_transformers() {
    let Some(dev) = stapes::tensor::cuda::test_device() else {
        eprintln!("skipped: no GPU and no CUDA emulator in this build");
        return;
    };
    let case = "layer_prenorm";
    let g = load_golden(golden_dir().join(format!("{case}.safetensors"))).tensors;
    let (model, _) = Wav2Vec2ForCtc::from_pretrained(golden_dir().join(case), DType::F32, &dev).unwrap();
    model.eval();
    let lens = lengths(&g);
    let x = Var::constant(g["input_values"].to_device(&dev).unwrap());
    let (logits, out) = model.forward(&x, Some(&lens)).unwrap();
    let logits = logits.tensor().to_device(&Device::Cpu).unwrap();
    let last = out.hidden_states.last().unwrap().tensor().to_device(&Device::Cpu).unwrap();
    assert_close(&last, &g[&format!("hidden.{}", out.hidden_states.len() - 1)], Some(1e-4), Some(1e-4), "cuda hidden");
    assert_close(&logits, &g["logits"], Some(0.0), Some(1e-4), "cuda logits");
    assert_eq!(argmax_rows(&logits), argmax_rows(&g["logits"]), "cuda: argmax differs");
}

#[test]
fn stapes_eval_with_a_checkpoint_directory_scores_transformers_decodings() {
    // The golden batch as a manifest whose references are transformers' greedy decodings (each
    // over its own frames), one of them with an extra word: `stapes eval --model` batches both
    // utterances (padding mask, as the layer-norm checkpoint asks) and must count exactly that
    // one deletion.
    let case = "layer_prenorm";
    let g = load_golden(golden_dir().join(format!("{case}.safetensors"))).tensors;
    let cfg = Wav2Vec2Config::from_json_file(golden_dir().join(case).join("config.json")).unwrap();
    let vocab = CtcVocab::from_json_file(golden_dir().join(case).join("vocab.json"), 0).unwrap();
    let audio = g["audio"].to_vec::<f32>().unwrap();
    let (s, lens) = (g["audio"].dims()[1], lengths(&g));
    let ids = argmax_rows(&g["logits"]);
    let t = g["logits"].dims()[1];
    let dir = std::env::temp_dir().join(format!("stapes-w2v2-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut manifest = String::new();
    for (i, &n) in lens.iter().enumerate() {
        let wav = dir.join(format!("u{i}.wav"));
        stapes::speech::audio::write_wav(&wav, &audio[i * s..i * s + n], 16000).unwrap();
        let mut text = vocab.decode_greedy(&ids[i * t..i * t + cfg.output_frames(n)]);
        assert!(!text.is_empty());
        if i == 1 {
            text.push_str(" EXTRA");
        }
        manifest.push_str(&format!("{{\"audio\": {:?}, \"text\": {:?}}}\n", wav.display().to_string(), text));
    }
    std::fs::write(dir.join("m.jsonl"), manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["eval", "--batch-size", "2", "--model"])
        .arg(golden_dir().join(case))
        .arg("--data")
        .arg(dir.join("m.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("0 substitutions, 1 deletions, 0 insertions"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_masks_frames_with_masked_spec_embed_and_freezing_leaves_the_encoder_out() {
    let case = "layer_prenorm";
    let g = load_golden(golden_dir().join(format!("{case}.safetensors"))).tensors;
    let dir = golden_dir().join(case);
    let mut cfg = Wav2Vec2Config::from_json_file(dir.join("config.json")).unwrap();
    cfg.mask_time_prob = 0.5;
    cfg.layerdrop = 0.0;
    let model = Wav2Vec2ForCtc::new(&cfg, DType::F32, &Device::Cpu).unwrap();
    model.load_state_dict(&read_weights(&dir).unwrap(), true).unwrap();
    model.train(true);
    let lens = lengths(&g);
    let x = Var::constant(g["input_values"].clone());
    let (_, out) = model.forward(&x, Some(&lens)).unwrap();
    let mask = out.time_mask.expect("masking in training").to_vec::<u8>().unwrap();
    let h0 = out.encoder_input.tensor().to_vec::<f32>().unwrap();
    let want = g["projected"].to_vec::<f32>().unwrap();
    let embed = model.state_dict()["wav2vec2.masked_spec_embed"].to_vec::<f32>().unwrap();
    let (t, hid) = (g["projected"].dims()[1], 32);
    let mut masked = 0;
    for (f, &m) in mask.iter().enumerate() {
        let row = &h0[f * hid..(f + 1) * hid];
        if m == 1 {
            assert_eq!(row, embed.as_slice(), "frame {f}");
            assert!(f % t < out.frame_lengths[f / t], "a padded frame was masked");
            masked += 1;
        } else {
            for (a, b) in row.iter().zip(&want[f * hid..(f + 1) * hid]) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }
    assert!(masked > 0);
    // evaluation never masks
    model.eval();
    assert!(model.forward(&x, Some(&lens)).unwrap().1.time_mask.is_none());
    // freezing: everything but the feature encoder's 12 tensors (3 convs with bias, 3 LayerNorms)
    let all = model.parameters().len();
    assert_eq!(model.parameters_without_feature_encoder().len(), all - 12);
}

#[test]
fn beam_search_decodes_checkpoint_vocabularies_in_any_order() {
    // The beam search works on a character vocabulary with the blank at 0; a checkpoint's
    // vocabulary has multi-character special tokens and may put the pad token (the blank)
    // anywhere. Greedy decoding through that mapping must equal the checkpoint's own greedy
    // decoding, with the blank at 0 and with the blank moved to the end.
    let case = "layer_prenorm";
    let g = load_golden(golden_dir().join(format!("{case}.safetensors"))).tensors;
    let mut p =
        stapes::speech::models::wav2vec2::Wav2Vec2Pipeline::load(golden_dir().join(case), &Device::Cpu).unwrap();
    let audio = g["audio"].to_vec::<f32>().unwrap();
    let (s, lens) = (g["audio"].dims()[1], lengths(&g));
    let utts: Vec<&[f32]> = lens.iter().enumerate().map(|(i, &n)| &audio[i * s..i * s + n]).collect();
    let greedy = |lp: &Tensor, l: &[usize]| stapes::speech::decode::greedy_decode_batch(lp, l, 0, true);
    for blank in [0usize, 11] {
        p.vocab.blank = blank;
        let (chars, order) = p.vocab.char_vocab().unwrap();
        assert_eq!(order[0], blank);
        assert_eq!(chars.len(), p.vocab.tokens.len());
        let want = p.transcribe_batch(&utts).unwrap();
        assert!(want.iter().any(|t| !t.is_empty()));
        assert_eq!(p.transcribe_batch_with(&utts, greedy).unwrap(), want, "blank {blank}");
    }
    // a token of several characters (not a special token) cannot be a beam-search character
    p.vocab.tokens[5] = "TH".into();
    let e = p.vocab.char_vocab().unwrap_err().to_string();
    assert!(e.contains("\"TH\""), "{e}");

    // the CLI: `--beam` with a checkpoint directory decodes and says so
    let wav = std::env::temp_dir().join(format!("stapes-w2v2-beam-{}.wav", std::process::id()));
    stapes::speech::audio::write_wav(&wav, utts[0], 16000).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["transcribe", "--no-vad", "--beam", "8", "--model"])
        .arg(golden_dir().join(case))
        .arg(&wav)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{}:", wav.display())));
    std::fs::remove_file(&wav).unwrap();
}

/// Half precision: the small pre-norm model loaded in f16 and in bf16 (weights and activations),
/// and run in f32 under bf16 autocast, on the CPU and on `cuda:0` (the emulator in CI): logits
/// near transformers' f32 ones (|logits| <= 0.43 here; measured errors 7.3e-4 in f16, 5.2e-3 in
/// bf16, 3.4e-3 under autocast, the same on both devices).
#[test]
fn half_precision_inference_and_autocast_stay_near_transformers() {
    let case = "layer_prenorm";
    let g = load_golden(golden_dir().join(format!("{case}.safetensors"))).tensors;
    let lens = lengths(&g);
    let mut devices = vec![Device::Cpu];
    devices.extend(stapes::tensor::cuda::test_device());
    for dev in devices {
        for (dtype, tol) in [(DType::F16, 3e-3), (DType::BF16, 2e-2)] {
            let (model, _) = Wav2Vec2ForCtc::from_pretrained(golden_dir().join(case), dtype, &dev).unwrap();
            model.eval();
            let x = Var::constant(g["input_values"].to_dtype(dtype).unwrap().to_device(&dev).unwrap());
            let (logits, _) = stapes::autograd::no_grad(|| model.forward(&x, Some(&lens))).unwrap();
            assert_eq!(logits.tensor().dtype(), dtype);
            let logits = logits.tensor().to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
            assert_close(&logits, &g["logits"], Some(0.0), Some(tol), &format!("{dev:?} {dtype:?} logits"));
        }
        let (model, _) = Wav2Vec2ForCtc::from_pretrained(golden_dir().join(case), DType::F32, &dev).unwrap();
        model.eval();
        let x = Var::constant(g["input_values"].to_device(&dev).unwrap());
        let logits = stapes::autograd::autocast(DType::BF16, || {
            stapes::autograd::no_grad(|| model.forward(&x, Some(&lens))).map(|o| o.0)
        })
        .unwrap()
        .unwrap();
        let logits = logits.tensor().to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        assert_close(&logits, &g["logits"], Some(0.0), Some(1.5e-2), &format!("{dev:?} bf16 autocast logits"));
    }
}
