//! Speech the tests make (issue 16): an espeak-ng corpus of digit strings and short commands,
//! eight training voices and four held-out ones (other accents and variants), with noise at
//! 10-30 dB on three utterances in four and a quarter of the recordings at 8 kHz. The `small`
//! preset, trained briefly on the training voices (its dev set: utterances of those voices),
//! transcribes the held-out voices; `stapes eval` reports them per speaker.
//!
//! A shortened run (CI time): the measured 10-minute result is in `benches/RESULTS.md`.
//! `espeak-ng` is a system package that `.ci/run` installs; without it the test says so and
//! passes, except under CI (`CI` set), where a missing voice would hide the test.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use stapes::speech::config::RunConfig;
use stapes::speech::data::Dataset;
use stapes::speech::espeak::{espeak_available, write_espeak_corpus, EspeakConfig, TEST_VOICES, TRAIN_VOICES};
use stapes::speech::train::{evaluate, load_run, open_corpus, split_corpus, train_ctc, TrainOptions};

fn corpus(dir: &Path, voices: &[&str], per_voice: usize, seed: u64) -> std::path::PathBuf {
    let cfg = EspeakConfig {
        voices: voices.iter().map(|v| v.to_string()).collect(),
        per_voice,
        seed,
        ..EspeakConfig::default()
    };
    write_espeak_corpus(&cfg, dir).unwrap()
}

#[test]
fn the_small_preset_transcribes_held_out_espeak_voices() {
    if !espeak_available() {
        assert!(std::env::var_os("CI").is_none(), "CI must install espeak-ng (.ci/run does)");
        eprintln!("skipped: espeak-ng is not installed (apt-get install espeak-ng)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("stapes-espeak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let train_m = corpus(&dir.join("train"), &TRAIN_VOICES, 60, 0);
    let test_m = corpus(&dir.join("test"), &TEST_VOICES, 20, 1);
    // the same corpus again: the draws depend only on the seed
    let again = corpus(&dir.join("again"), &TEST_VOICES[..1], 3, 1);
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(lines(&again)[..3], lines(&test_m)[..3]);

    let train = open_corpus(&train_m).unwrap();
    let test = open_corpus(&test_m).unwrap();
    assert_eq!(train.dataset.len(), 480);
    let (tr, dev) = split_corpus(&train.dataset, 0.1).unwrap();
    let mut cfg = RunConfig::preset("small").unwrap();
    cfg.training.epochs = 20;
    cfg.training.workers = 1;
    cfg.logging.plots = false;
    let run = dir.join("run");
    let vocab = train.vocab.clone();
    let report = train_ctc(&cfg, Arc::new(tr), Arc::new(dev), &vocab, &run, &TrainOptions::default(), |_| {}).unwrap();
    let loaded = load_run(&run).unwrap();
    let test_set: Arc<dyn Dataset> = Arc::new(test.dataset);
    let ev = evaluate(&loaded.model, &loaded.frontend(), test_set, &loaded.vocab, 16).unwrap();
    let (cer, wer) = (ev.cer.rate(), ev.wer.rate());
    eprintln!(
        "held-out voices: CER {:.2}%, WER {:.2}% (dev CER on the training voices {:.2}%, {} epochs)",
        100.0 * cer,
        100.0 * wer,
        100.0 * report.best_cer,
        report.epochs.len()
    );
    assert!(wer < 0.5, "WER {wer} on held-out voices after a short run");

    // `stapes eval` names every held-out voice with its own WER
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["eval", "--run", run.to_str().unwrap(), "--data", test_m.to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for v in TEST_VOICES {
        assert!(log.contains(v), "no line for {v} in:\n{log}");
    }

    // 8 kHz recordings: `stapes train` limits the mel bands to 4 kHz by itself; `--find-lr`
    // runs the range test and draws it
    let narrow = EspeakConfig {
        voices: TRAIN_VOICES[..2].iter().map(|v| v.to_string()).collect(),
        per_voice: 10,
        narrowband_fraction: 1.0,
        ..EspeakConfig::default()
    };
    let narrow_m = write_espeak_corpus(&narrow, dir.join("narrow")).unwrap();
    let lr_dir = dir.join("lr");
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["train", "--preset", "small", "--find-lr", "--data", narrow_m.to_str().unwrap()])
        .args(["--run-dir", lr_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("mel bands up to 4000 Hz"), "{log}");
    assert!(log.contains("suggested learning rate") || log.contains("no suggestion"), "{log}");
    assert!(log.contains("step   0") && log.contains("lr 1.00e-7"), "{log}");
    assert!(lr_dir.join("lr_find.png").is_file());
    assert!(!lr_dir.join("checkpoint.safetensors").exists(), "the range test trains nothing to keep");
    let _ = std::fs::remove_dir_all(&dir);
}
