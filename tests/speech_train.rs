//! The training loop end to end on a tiny synthetic corpus: it trains (the loss falls), writes
//! the run directory (config, log, checkpoint, best model), and the saved model loads back
//! into a fresh CRDNN by name and decodes the same as the trained one.

use stapes::nn::checkpoint::{load_module, Checkpoint};
use stapes::nn::Module;
use stapes::speech::data::{Dataset, Vocab};
use stapes::speech::models::{Crdnn, CrdnnConfig};
use stapes::speech::synth::{SynthConfig, SyntheticDigits, DIGITS};
use stapes::speech::train::{evaluate, train_ctc, TrainConfig};
use std::sync::Arc;

#[test]
fn tiny_run_trains_and_writes_its_run_directory() {
    let words = DIGITS.join(" ");
    let vocab = Vocab::from_transcripts([words.as_str()]);
    let synth =
        |seed, n| SyntheticDigits::new(SynthConfig { seed, num_utterances: n, max_words: 2, ..SynthConfig::default() });
    let train: Arc<dyn Dataset> = Arc::new(synth(1, 48).unwrap());
    let dev: Arc<dyn Dataset> = Arc::new(synth(2, 8).unwrap());
    let model = CrdnnConfig {
        n_features: 16,
        conv_channels: vec![4],
        time_pool: vec![2],
        rnn_hidden: 16,
        rnn_layers: 1,
        rnn_dropout: 0.0,
        vocab_size: vocab.len(),
    };
    let cfg = TrainConfig {
        model: model.clone(),
        n_mels: 16,
        batch_size: 8,
        epochs: 3,
        max_seconds: 600.0,
        base_lr: 1e-3,
        max_lr: 5e-3,
        step_size_up: 6,
        clip_norm: 5.0,
        workers: 1,
        seed: 3,
    };
    let dir = std::env::temp_dir().join(format!("stapes-train-{}", std::process::id()));
    let mut lines = 0;
    let report = train_ctc(&cfg, train, dev.clone(), &vocab, &dir, |_| lines += 1).unwrap();
    assert_eq!(report.epochs.len(), 3);
    assert!(lines >= 6);
    let (first, last) = (report.epochs[0].train_loss, report.epochs[2].train_loss);
    assert!(first.is_finite() && last < first, "the loss must fall: {first} -> {last}");
    for f in ["config.json", "log.jsonl", "checkpoint.safetensors", "best_model.safetensors"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    let ck = Checkpoint::load(dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.step, 3 * 6);

    // The last checkpoint's model reloads into a fresh CRDNN and decodes like the trained one.
    let fresh = Crdnn::new(model).unwrap();
    fresh.load_state_dict(&ck.model, true).unwrap();
    let a = evaluate(&report.model, dev.clone(), &vocab, 16, 4).unwrap();
    let b = evaluate(&fresh, dev, &vocab, 16, 4).unwrap();
    assert_eq!(a, b);
    load_module(dir.join("best_model.safetensors"), &fresh, true).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
