//! The training loop end to end on a tiny synthetic corpus: it trains (the loss falls), writes
//! the run directory (config, vocabulary, log, checkpoint, best model), the saved run loads
//! back and decodes the same as the trained model, and DeepSpeech2 trains through the same
//! loop.

use stapes::nn::checkpoint::{load_module, Checkpoint};
use stapes::nn::Module;
use stapes::speech::config::{AugmentConfig, RunConfig, ScheduleConfig};
use stapes::speech::data::{Dataset, Vocab};
use stapes::speech::models::{AcousticModel, CrdnnConfig, DeepSpeech2Config, ModelConfig, RnnType};
use stapes::speech::synth::{SynthConfig, SyntheticDigits, DIGITS};
use stapes::speech::tensorboard::{read_events, read_scalars, ValueKind};
use stapes::speech::train::{evaluate, load_run, train_ctc, TrainEvent, TrainOptions};
use std::sync::Arc;

fn tiny_config(model: ModelConfig) -> RunConfig {
    let mut cfg = RunConfig { model, ..RunConfig::default() };
    cfg.features.n_mels = 16;
    cfg.training.batch_size = 8;
    cfg.training.epochs = 3;
    cfg.training.workers = 1;
    cfg.training.seed = 3;
    cfg.schedule = ScheduleConfig::Constant { lr: 3e-3 };
    cfg.augment = AugmentConfig {
        speed_factors: vec![0.9, 1.0, 1.1],
        time_masks: 1,
        time_mask_param: 5,
        freq_masks: 1,
        freq_mask_param: 3,
        mask_p: 0.3,
        vtlp: vec![0.9, 1.1],
        noise_snr_db: vec![15.0, 30.0],
        noise_prob: 0.5,
    };
    cfg.logging.tensorboard = false;
    cfg.logging.plots = false;
    cfg
}

fn corpus() -> (Arc<dyn Dataset>, Arc<dyn Dataset>, Vocab) {
    let words = DIGITS.join(" ");
    let vocab = Vocab::from_transcripts([words.as_str()]);
    let synth =
        |seed, n| SyntheticDigits::new(SynthConfig { seed, num_utterances: n, max_words: 2, ..SynthConfig::default() });
    (Arc::new(synth(1, 48).unwrap()), Arc::new(synth(2, 8).unwrap()), vocab)
}

#[test]
fn tiny_run_trains_and_writes_its_run_directory() {
    let (train, dev, vocab) = corpus();
    let cfg = tiny_config(ModelConfig::Crdnn(CrdnnConfig {
        conv_channels: vec![4],
        time_pool: vec![2],
        rnn_hidden: 16,
        rnn_layers: 1,
        rnn_dropout: 0.0,
        ..CrdnnConfig::default()
    }));
    let mut cfg = cfg;
    cfg.logging.tensorboard = true;
    cfg.logging.plots = true;
    // a band-limited, pre-emphasised, dithered front end: evaluation must use the same one
    cfg.features.f_max = Some(7000.0);
    cfg.features.preemphasis = 0.97;
    cfg.features.dither = 1e-4;
    let dir = std::env::temp_dir().join(format!("stapes-train-{}", std::process::id()));
    let mut steps = 0;
    let report = train_ctc(&cfg, train, dev.clone(), &vocab, &dir, &TrainOptions::default(), |e| {
        if matches!(e, TrainEvent::Step { .. }) {
            steps += 1
        }
    })
    .unwrap();
    assert_eq!(report.epochs.len(), 3);
    assert_eq!(steps, 18);
    let (first, last) = (report.epochs[0].train_loss, report.epochs[2].train_loss);
    assert!(first.is_finite() && last < first, "the loss must fall: {first} -> {last}");
    for f in
        ["config.toml", "vocab.json", "log.jsonl", "checkpoint.safetensors", "best_model.safetensors", "curves.png"]
    {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let png = std::fs::read(dir.join("curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // TensorBoard: the scalars of every step and epoch, and histograms of every parameter and
    // its gradient after every epoch, read back from the event file.
    let scalars = read_scalars(&dir.join("tensorboard")).unwrap();
    let loss = &scalars["train/loss"];
    assert_eq!(loss.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=18).collect::<Vec<i64>>());
    assert!(loss.iter().all(|s| s.1.is_finite() && s.1 > 0.0));
    for tag in ["train/lr", "train/grad_norm", "train/utterances_per_s"] {
        assert_eq!(scalars[tag].len(), 18, "{tag}");
    }
    let cer = &scalars["dev/cer"];
    assert_eq!(cer.iter().map(|s| s.0).collect::<Vec<_>>(), vec![6, 12, 18]);
    for (e, l) in report.epochs.iter().zip(cer) {
        assert_eq!(l.1, e.dev_cer as f32);
    }
    let tb_file = std::fs::read_dir(dir.join("tensorboard")).unwrap().next().unwrap().unwrap().path();
    let events = read_events(&tb_file).unwrap();
    let n_params = report.model.named_parameters().len();
    let mut hists = std::collections::BTreeMap::<String, Vec<i64>>::new();
    for ev in &events {
        for v in &ev.values {
            if let ValueKind::Histogram(h) = &v.kind {
                assert!(h.num > 0.0 && h.bucket.iter().sum::<f64>() == h.num, "{}", v.tag);
                hists.entry(v.tag.clone()).or_default().push(ev.step);
            }
        }
    }
    assert_eq!(hists.len(), 2 * n_params, "{:?}", hists.keys());
    for (name, _) in report.model.named_parameters() {
        assert_eq!(hists[&format!("weights/{name}")], vec![6, 12, 18]);
        assert_eq!(hists[&format!("grads/{name}")], vec![6, 12, 18]);
    }
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    let ck = Checkpoint::load(dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.step, 3 * 6);

    // The written config reads back as the one used (sizes filled in from the data).
    let saved = RunConfig::from_toml_file(dir.join("config.toml")).unwrap();
    assert_eq!(saved, report.config);
    assert_eq!(saved.model.vocab_size(), vocab.len());
    assert_eq!(saved.model.n_features(), 16);

    // The last checkpoint's model reloads into a fresh model and decodes like the trained one.
    let fresh = AcousticModel::new(&saved.model).unwrap();
    fresh.load_state_dict(&ck.model, true).unwrap();
    let frontend = saved.frontend();
    let a = evaluate(&report.model, &frontend, dev.clone(), &vocab, 4).unwrap();
    let b = evaluate(&fresh, &frontend, dev.clone(), &vocab, 4).unwrap();
    assert_eq!(a, b);
    load_module(dir.join("best_model.safetensors"), &fresh, true).unwrap();
    let run = load_run(&dir).unwrap();
    assert_eq!(run.vocab, vocab);
    let c = evaluate(&run.model, &run.frontend(), dev, &vocab, 4).unwrap();
    assert_eq!(
        c,
        evaluate(
            &fresh,
            &frontend,
            Arc::new(
                SyntheticDigits::new(SynthConfig {
                    seed: 2,
                    num_utterances: 8,
                    max_words: 2,
                    ..SynthConfig::default()
                })
                .unwrap()
            ),
            &vocab,
            4
        )
        .unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn deepspeech2_trains_through_the_same_loop() {
    let (train, dev, vocab) = corpus();
    let cfg = tiny_config(ModelConfig::DeepSpeech2(DeepSpeech2Config {
        conv_channels: vec![4, 4],
        conv_kernels: vec![[5, 7], [5, 5]],
        conv_strides: vec![[2, 2], [1, 2]],
        rnn_type: RnnType::Gru,
        rnn_hidden: 16,
        rnn_layers: 2,
        ..DeepSpeech2Config::default()
    }));
    let dir = std::env::temp_dir().join(format!("stapes-train-ds2-{}", std::process::id()));
    let report = train_ctc(&cfg, train, dev, &vocab, &dir, &TrainOptions::default(), |_| {}).unwrap();
    let (first, last) = (report.epochs[0].train_loss, report.epochs[2].train_loss);
    assert!(first.is_finite() && last < first, "the loss must fall: {first} -> {last}");
    let run = load_run(&dir).unwrap();
    assert!(matches!(run.config.model, ModelConfig::DeepSpeech2(_)));
    assert!(run.model.named_parameters().iter().any(|(n, _)| n == "rnn.weight_ih_l1_reverse"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_runs_are_errors() {
    let (train, dev, vocab) = corpus();
    let dir = std::env::temp_dir().join(format!("stapes-train-bad-{}", std::process::id()));
    let cfg = tiny_config(ModelConfig::default());
    // Nothing to resume from.
    let e = train_ctc(
        &cfg,
        train.clone(),
        dev.clone(),
        &vocab,
        &dir,
        &TrainOptions { resume: true, max_seconds: None, ..Default::default() },
        |_| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("checkpoint"), "{e}");
    let mut bad = cfg.clone();
    bad.training.batch_size = 0;
    assert!(train_ctc(&bad, train, dev, &vocab, &dir, &TrainOptions::default(), |_| {}).is_err());
    assert!(load_run(&dir.join("missing")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mixed_precision_runs_train_and_keep_the_loss_scale() {
    use stapes::speech::config::Precision;
    let (train, dev, vocab) = corpus();
    for precision in [Precision::Bf16, Precision::F16] {
        let mut cfg = tiny_config(ModelConfig::Crdnn(CrdnnConfig {
            conv_channels: vec![4],
            time_pool: vec![2],
            rnn_hidden: 16,
            rnn_layers: 1,
            rnn_dropout: 0.0,
            ..CrdnnConfig::default()
        }));
        cfg.training.precision = precision;
        cfg.training.epochs = 2;
        let dir = std::env::temp_dir().join(format!("stapes-train-{precision:?}-{}", std::process::id()));
        let mut scales = vec![];
        let report = train_ctc(&cfg, train.clone(), dev.clone(), &vocab, &dir, &TrainOptions::default(), |e| {
            if let TrainEvent::Step { loss_scale, .. } = e {
                scales.push(*loss_scale)
            }
        })
        .unwrap();
        let (first, last) = (report.epochs[0].train_loss, report.epochs[1].train_loss);
        assert!(first.is_finite() && last < first, "{precision:?}: the loss must fall: {first} -> {last}");
        let ck = Checkpoint::load(dir.join("checkpoint.safetensors")).unwrap();
        match precision {
            Precision::F16 => {
                assert!(scales.iter().all(|s| s.is_some_and(|v| v > 0.0)), "{scales:?}");
                assert!(ck.scaler["scale"].as_f64().is_some_and(|s| s > 0.0), "{}", ck.scaler);
            }
            _ => assert!(scales.iter().all(Option::is_none)),
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// The configurations shown in the README parse, validate and build their models (the wav2vec2
/// one with the golden checkpoint directory in place of the README's download).
#[test]
fn the_readme_configurations_are_valid() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("a closed block")])
        .filter(|b| b.contains("[model]"))
        .collect();
    assert_eq!(blocks.len(), 2, "the README's run configurations");
    let mut kinds = Vec::new();
    for block in blocks {
        let mut cfg = RunConfig::from_toml_str(block).unwrap();
        cfg.validate().unwrap();
        kinds.push(cfg.model.name());
        if let ModelConfig::Wav2Vec2(w) = &mut cfg.model {
            w.pretrained = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/wav2vec2/group_postnorm").into());
        }
        let mut model = cfg.model.clone();
        model.set_io(cfg.features.n_mels, 29).unwrap();
        AcousticModel::for_training(&model).unwrap();
    }
    assert_eq!(kinds, ["wav2vec2", "DeepSpeech2"]);
}

/// A schedule whose warm-up outlasts the run is reported (the reference recipe's 2000-step
/// CyclicLR rise on a small corpus never reaches its peak rate).
#[test]
fn a_warm_up_longer_than_the_run_is_reported() {
    let (train, dev, vocab) = corpus();
    let mut cfg = tiny_config(ModelConfig::Crdnn(CrdnnConfig {
        conv_channels: vec![4],
        time_pool: vec![2],
        rnn_hidden: 8,
        rnn_layers: 1,
        rnn_dropout: 0.0,
        ..CrdnnConfig::default()
    }));
    cfg.training.epochs = 1;
    cfg.schedule = ScheduleConfig::default(); // CyclicLR, step_size_up 2000
    let dir = std::env::temp_dir().join(format!("stapes-warmup-{}", std::process::id()));
    let mut messages = Vec::new();
    train_ctc(&cfg, train, dev, &vocab, &dir, &TrainOptions::default(), |e| {
        if let TrainEvent::Message(m) = e {
            messages.push(m.clone());
        }
    })
    .unwrap();
    assert!(messages.iter().any(|m| m.contains("2000 steps") && m.contains("never gets there")), "{messages:?}");
    std::fs::remove_dir_all(&dir).ok();
}
