//! Fine-tuning a wav2vec2 checkpoint directory through the training loop (`[model] kind =
//! "wav2vec2"`, issue 17): the encoder's weights come from the directory, the head is new and
//! sized to the run's vocabulary, the feature encoder stays frozen, a resumed run equals an
//! uninterrupted one, the run loads back, and `save_pretrained` (what `stapes export --hf`
//! writes) gives a directory that `Wav2Vec2Pipeline` loads with the same logits. That
//! transformers loads the exported directory is checked by `tools/golden/wav2vec2_roundtrip.py`
//! (see `benches/RESULTS.md`), as CI has no Python.

use std::path::PathBuf;
use std::sync::Arc;

use stapes::autograd::{no_grad, Var};
use stapes::nn::checkpoint::hf::read_weights;
use stapes::nn::Module;
use stapes::speech::config::{AugmentConfig, OptimizerConfig, OptimizerKind, RunConfig, ScheduleConfig};
use stapes::speech::data::{Dataset, Vocab};
use stapes::speech::models::wav2vec2::{normalize_audio, Wav2Vec2Pipeline};
use stapes::speech::models::{AcousticModel, ModelConfig, Wav2Vec2RunConfig};
use stapes::speech::synth::{SynthConfig, SyntheticDigits, DIGITS};
use stapes::speech::train::{evaluate, load_run, train_ctc, TrainOptions};
use stapes::tensor::{Device, Tensor};

/// Training draws from the process-wide default generator (as PyTorch's does), so the tests of
/// this binary that train run one at a time: a concurrent run would take numbers from the
/// stream of another and break its exact-resume check.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn pretrained() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wav2vec2/layer_prenorm")
}

fn config(epochs: usize) -> RunConfig {
    let mut cfg = RunConfig {
        model: ModelConfig::Wav2Vec2(Box::new(Wav2Vec2RunConfig {
            pretrained: Some(pretrained()),
            mask_time_prob: Some(0.3),
            mask_time_length: Some(3),
            layerdrop: Some(0.2),
            ..Wav2Vec2RunConfig::default()
        })),
        ..RunConfig::default()
    };
    cfg.training.batch_size = 4;
    cfg.training.epochs = epochs;
    cfg.training.workers = 1;
    cfg.training.seed = 5;
    cfg.training.checkpoint_every_steps = 0;
    cfg.optimizer = OptimizerConfig { kind: OptimizerKind::AdamW, ..OptimizerConfig::default() };
    cfg.schedule = ScheduleConfig::Constant { lr: 1e-3 };
    cfg.augment = AugmentConfig { speed_factors: vec![0.9, 1.0, 1.1], ..AugmentConfig::none() };
    cfg.logging.tensorboard = false;
    cfg.logging.plots = false;
    cfg
}

fn corpus() -> (Arc<dyn Dataset>, Arc<dyn Dataset>, Vocab) {
    let words = DIGITS.join(" ");
    let vocab = Vocab::from_transcripts([words.as_str()]);
    let synth =
        |seed, n| SyntheticDigits::new(SynthConfig { seed, num_utterances: n, max_words: 2, ..SynthConfig::default() });
    (Arc::new(synth(11, 12).unwrap()), Arc::new(synth(12, 4).unwrap()), vocab)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stapes-w2v2-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn logits(model: &AcousticModel, audio: &[f32]) -> Vec<f32> {
    model.eval();
    let x = Tensor::from_vec(normalize_audio(audio), [1, audio.len()], &Device::Cpu).unwrap();
    no_grad(|| model.forward(&Var::constant(x), &[audio.len()])).unwrap().tensor().to_vec::<f32>().unwrap()
}

#[test]
fn a_checkpoint_directory_fine_tunes_resumes_and_exports() {
    let _serial = serial();
    let (train, dev, vocab) = corpus();
    let dir = tmp("run");
    let report = train_ctc(&config(2), train.clone(), dev.clone(), &vocab, &dir, &TrainOptions::default(), |_| {})
        .expect("training");
    assert_eq!(report.epochs.len(), 2);
    assert!(report.epochs.iter().all(|e| e.train_loss.is_finite()), "{:?}", report.epochs);

    // the resolved configuration: the checkpoint's architecture, the overrides, the run's head
    let ModelConfig::Wav2Vec2(rc) = &report.config.model else { panic!("not a wav2vec2 config") };
    let enc = rc.encoder.as_ref().expect("resolved encoder");
    assert_eq!((enc.vocab_size, enc.pad_token_id), (vocab.len(), 0));
    assert_eq!((enc.mask_time_prob, enc.mask_time_length, enc.layerdrop), (0.3, 3, 0.2));
    assert!(rc.preprocessor.as_ref().expect("resolved preprocessor").return_attention_mask);

    // frozen feature encoder: still the checkpoint's weights; the rest trained
    let original = read_weights(&pretrained()).unwrap();
    let trained = report.model.state_dict();
    let mut moved = 0;
    for (k, v) in &trained {
        let Some(o) = original.get(k) else { continue };
        let same = v.to_vec::<f32>().unwrap() == o.to_vec::<f32>().unwrap();
        if k.contains("feature_extractor") {
            assert!(same, "{k}: the frozen feature encoder changed");
        } else if !same {
            moved += 1;
        }
    }
    assert!(moved > 10, "only {moved} pretrained tensors changed");
    assert!(!report.model.trainable_parameters().is_empty());
    assert!(report.model.trainable_parameters().len() < report.model.parameters().len());

    // interrupted after one epoch and resumed = uninterrupted, bit for bit
    let dir2 = tmp("resumed");
    train_ctc(&config(1), train.clone(), dev.clone(), &vocab, &dir2, &TrainOptions::default(), |_| {}).unwrap();
    let resumed_cfg = RunConfig::from_toml_file(dir2.join("config.toml")).unwrap();
    let mut resumed_cfg = resumed_cfg;
    resumed_cfg.training.epochs = 2;
    let resumed = train_ctc(
        &resumed_cfg,
        train,
        dev.clone(),
        &vocab,
        &dir2,
        &TrainOptions { resume: true, ..TrainOptions::default() },
        |_| {},
    )
    .unwrap();
    let (a, b) = (report.model.state_dict(), resumed.model.state_dict());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(v.to_vec::<f32>().unwrap(), b[k].to_vec::<f32>().unwrap(), "{k} differs after resuming");
    }

    // the run loads back from its directory alone (config.toml holds the architecture)
    let run = load_run(&dir).unwrap();
    assert!(matches!(run.model, AcousticModel::Wav2Vec2(_)));
    let u = dev.get(0).unwrap();
    let want = logits(&run.model, &u.audio);
    let ev = evaluate(&run.model, &run.frontend(), dev.clone(), &vocab, 2).unwrap();
    assert_eq!(ev.pairs.len(), dev.len());

    // exported as a Hugging Face directory: the pipeline loads it and gives the same logits
    let AcousticModel::Wav2Vec2(m) = &run.model else { unreachable!() };
    let hf = tmp("hf");
    m.save_pretrained(&vocab, &hf).unwrap();
    for f in ["config.json", "model.safetensors", "vocab.json", "tokenizer_config.json", "preprocessor_config.json"] {
        assert!(hf.join(f).is_file(), "{f} missing");
    }
    let p = Wav2Vec2Pipeline::load(&hf, &Device::Cpu).unwrap();
    assert_eq!(p.vocab.tokens[0], "<pad>");
    assert_eq!(p.vocab.word_delimiter.map(|i| p.vocab.tokens[i].as_str()), Some("|"));
    let x = Tensor::from_vec(normalize_audio(&u.audio), [1, u.audio.len()], &Device::Cpu).unwrap();
    let got = no_grad(|| p.model.forward(&Var::constant(x), None)).unwrap().0.tensor().to_vec::<f32>().unwrap();
    assert_eq!(got, want, "the exported directory's logits differ from the run's");
    // the same transcript, the run's characters with `|` as the space
    let via_run = &ev.pairs[0].1;
    assert_eq!(&p.transcribe_piece(&u.audio).unwrap(), via_run);

    for d in [dir, dir2, hf] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn bad_wav2vec2_runs_are_errors() {
    let _serial = serial();
    let (train, dev, vocab) = corpus();
    let dir = tmp("bad");
    // neither a checkpoint directory nor an architecture
    let mut cfg = config(1);
    cfg.model = ModelConfig::Wav2Vec2(Box::default());
    let e = train_ctc(&cfg, train.clone(), dev.clone(), &vocab, &dir, &TrainOptions::default(), |_| {})
        .err()
        .expect("an error");
    assert!(e.to_string().contains("pretrained"), "{e}");
    // a directory that is not there
    cfg.model = ModelConfig::Wav2Vec2(Box::new(Wav2Vec2RunConfig {
        pretrained: Some("/nonexistent/w2v2".into()),
        ..Default::default()
    }));
    let e = train_ctc(&cfg, train.clone(), dev.clone(), &vocab, &dir, &TrainOptions::default(), |_| {})
        .err()
        .expect("an error");
    assert!(e.to_string().contains("/nonexistent/w2v2"), "{e}");
    // an override out of range names the field
    cfg.model = ModelConfig::Wav2Vec2(Box::new(Wav2Vec2RunConfig {
        pretrained: Some(pretrained()),
        mask_time_prob: Some(1.5),
        ..Default::default()
    }));
    let e = train_ctc(&cfg, train, dev, &vocab, &dir, &TrainOptions::default(), |_| {}).err().expect("an error");
    assert!(e.to_string().contains("mask_time_prob"), "{e}");
    // the TOML form parses, and unknown keys are refused
    let c = RunConfig::from_toml_str("[model]\nkind = \"wav2vec2\"\npretrained = \"x\"\nlayerdrop = 0.05\n").unwrap();
    assert!(matches!(c.model, ModelConfig::Wav2Vec2(ref w) if w.layerdrop == Some(0.05) && w.freeze_feature_encoder));
    assert!(RunConfig::from_toml_str("[model]\nkind = \"wav2vec2\"\npretrainde = \"x\"\n").is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn stapes(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes")).args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_cli_fine_tunes_exports_and_transcribes() {
    let _serial = serial();
    let dir = tmp("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let synth =
        SyntheticDigits::new(SynthConfig { seed: 21, num_utterances: 10, max_words: 2, ..SynthConfig::default() })
            .unwrap();
    let manifest = synth.write_corpus(dir.join("corpus")).unwrap();
    let toml = format!(
        "[model]\nkind = \"wav2vec2\"\npretrained = {:?}\nmask_time_prob = 0.1\n\n[training]\nworkers = 1\n\n\
         [schedule]\nkind = \"constant\"\nlr = 1e-4\n\n[logging]\ntensorboard = false\nplots = false\n",
        pretrained().display().to_string()
    );
    std::fs::write(dir.join("w2v2.toml"), toml).unwrap();
    let run = dir.join("run");
    let hf = dir.join("hf");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let (ok, log) = stapes(&[
        os("train"),
        os("--config"),
        dir.join("w2v2.toml").as_os_str(),
        os("--data"),
        manifest.as_os_str(),
        os("--run-dir"),
        run.as_os_str(),
        os("--epochs"),
        os("1"),
        os("--batch-size"),
        os("4"),
    ]);
    assert!(ok, "stapes train failed:\n{log}");
    assert!(log.contains("wav2vec2"), "{log}");
    let (ok, log) = stapes(&[os("export"), os("--run"), run.as_os_str(), os("--hf"), hf.as_os_str()]);
    assert!(ok, "stapes export failed:\n{log}");
    let wav = dir
        .join("corpus/wav")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wav"));
    let wav = wav.expect("a wav file in the corpus");
    // the exported directory and the run directory transcribe the same file alike
    let (ok, by_model) = stapes(&[os("transcribe"), os("--model"), hf.as_os_str(), os("--no-vad"), wav.as_os_str()]);
    assert!(ok, "stapes transcribe --model failed:\n{by_model}");
    let (ok, by_run) = stapes(&[os("transcribe"), os("--run"), run.as_os_str(), os("--no-vad"), wav.as_os_str()]);
    assert!(ok, "stapes transcribe --run failed:\n{by_run}");
    assert_eq!(by_model.lines().next(), by_run.lines().next());
    // export errors name the problem
    let (ok, log) = stapes(&[os("export"), os("--run"), dir.join("nope").as_os_str(), os("--hf"), hf.as_os_str()]);
    assert!(!ok && log.contains("nope"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Mixed precision (f16 autocast with the GradScaler, and bf16 autocast) through the same loop,
/// on the CPU and on `cuda:0` (the emulator in CI): finite losses, the loss scale reported, and
/// a model that still evaluates.
#[test]
fn mixed_precision_fine_tuning_runs_on_cpu_and_cuda() {
    let _serial = serial();
    use stapes::speech::config::Precision;
    use stapes::speech::train::TrainEvent;
    let words = DIGITS.join(" ");
    let vocab = Vocab::from_transcripts([words.as_str()]);
    let synth = |seed, n| -> Arc<dyn Dataset> {
        Arc::new(
            SyntheticDigits::new(SynthConfig { seed, num_utterances: n, max_words: 1, ..SynthConfig::default() })
                .unwrap(),
        )
    };
    let (train, dev) = (synth(31, 4), synth(32, 2));
    let mut devices = vec![Device::Cpu];
    devices.extend(stapes::tensor::cuda::test_device());
    for device in devices {
        for precision in [Precision::F16, Precision::Bf16] {
            let mut cfg = config(1);
            cfg.training.precision = precision;
            let dir = tmp(&format!("amp-{device:?}-{precision:?}"));
            let mut scales = Vec::new();
            let report = train_ctc(
                &cfg,
                train.clone(),
                dev.clone(),
                &vocab,
                &dir,
                &TrainOptions { device, ..TrainOptions::default() },
                |e| {
                    if let TrainEvent::Step { loss_scale, .. } = e {
                        scales.push(*loss_scale);
                    }
                },
            )
            .unwrap_or_else(|e| panic!("{device:?} {precision:?}: {e}"));
            assert!(report.epochs[0].train_loss.is_finite(), "{device:?} {precision:?}: {:?}", report.epochs);
            assert!(!scales.is_empty());
            assert!(scales.iter().all(|s| s.is_some() == (precision == Precision::F16)), "{scales:?}");
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}
