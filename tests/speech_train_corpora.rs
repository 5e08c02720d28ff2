//! `stapes train` on both on-disk corpus forms: a JSONL manifest (written by the synthetic
//! corpus) and a LibriSpeech-layout folder (FLAC files next to `*.trans.txt`). Each run must
//! finish and leave its run directory.

use stapes::speech::synth::{SynthConfig, SyntheticDigits};
use std::path::Path;
use std::process::Command;

fn train(data: &Path, run_dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["train", "--small", "--epochs", "1", "--batch-size", "4", "--data"])
        .arg(data)
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .unwrap();
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stapes train failed:\n{log}");
    assert!(log.contains("dev CER"), "{log}");
    for f in ["config.toml", "vocab.json", "run.json", "log.jsonl", "checkpoint.safetensors", "best_model.safetensors"]
    {
        assert!(run_dir.join(f).is_file(), "{f} missing after training on {}:\n{log}", data.display());
    }
}

#[test]
fn trains_on_a_manifest_and_on_a_librispeech_folder() {
    let dir = std::env::temp_dir().join(format!("stapes-corpora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let synth =
        SyntheticDigits::new(SynthConfig { seed: 5, num_utterances: 12, max_words: 2, ..SynthConfig::default() })
            .unwrap();
    let manifest = synth.write_corpus(dir.join("synth")).unwrap();
    train(&manifest, &dir.join("run-manifest"));

    // The trained run decodes a data set (`stapes eval`) and audio files (`stapes transcribe`).
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["eval", "--run"])
        .arg(dir.join("run-manifest"))
        .arg("--data")
        .arg(&manifest)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stapes eval failed:\n{log}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("12 utterances decoded") && log.contains("WER") && log.contains("substitutions"), "{log}");
    // Beam search with an ARPA LM through the same command.
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["eval", "--beam", "8", "--lm", "tests/data/lm/tiny_trigram.arpa", "--run"])
        .arg(dir.join("run-manifest"))
        .arg("--data")
        .arg(&manifest)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stapes eval --lm failed:\n{log}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("(beam 8 with LM") && log.contains("CER"), "{log}");
    let wav = std::fs::read_dir(dir.join("synth").join("wav"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wav"))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["transcribe", "--run"])
        .arg(dir.join("run-manifest"))
        .arg(&wav)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stapes transcribe failed:\n{log}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.starts_with(&format!("{}:", wav.display())), "{log}");
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["transcribe", "--run"])
        .arg(dir.join("run-manifest"))
        .arg(dir.join("nothing.wav"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing.wav"));

    // A LibriSpeech-layout folder built from the committed FLAC fixture.
    let chapter = dir.join("libri").join("19").join("198");
    std::fs::create_dir_all(&chapter).unwrap();
    let texts = ["HELLO WORLD", "A TONE", "THE SAME SIGNAL", "NOT SPEECH", "FOUR", "FIVE SIX"];
    let mut trans = String::new();
    for (i, t) in texts.iter().enumerate() {
        let id = format!("19-198-{i:04}");
        std::fs::copy("tests/data/audio/signal.flac", chapter.join(format!("{id}.flac"))).unwrap();
        trans.push_str(&format!("{id} {t}\n"));
    }
    std::fs::write(chapter.join("19-198.trans.txt"), trans).unwrap();
    train(&dir.join("libri"), &dir.join("run-libri"));

    // Bad input is a clear error, not a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["train", "--small", "--epochs", "1", "--run-dir"])
        .arg(dir.join("run-bad"))
        .arg("--data")
        .arg(dir.join("missing.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"));
    std::fs::remove_dir_all(&dir).ok();
}
