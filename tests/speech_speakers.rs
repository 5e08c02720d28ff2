//! Evaluation by speaker (issue 16): manifests and LibriSpeech folders name speakers, a corpus
//! splits into disjoint training and held-out speakers, and `stapes eval` reports WER per
//! speaker.

use stapes::speech::data::{Dataset, ManifestDataset};
use stapes::speech::train::split_by_speakers;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stapes-spk-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn manifests_name_speakers_and_corpora_split_by_them() {
    let dir = tmp("split");
    let mut jsonl = String::new();
    for i in 0..24 {
        let spk = if i % 3 == 0 { format!("{}", 100 + i % 4) } else { format!("\"s{}\"", i % 4) };
        jsonl += &format!("{{\"audio\": \"a{i}.wav\", \"text\": \"x\", \"speaker_id\": {spk}}}\n");
    }
    std::fs::write(dir.join("m.jsonl"), jsonl).unwrap();
    let ds = ManifestDataset::open(dir.join("m.jsonl")).unwrap();
    assert_eq!(ds.entries()[0].speaker.as_deref(), Some("100"));
    assert_eq!(ds.entries()[1].speaker.as_deref(), Some("s1"));
    std::fs::write(dir.join("m.csv"), "audio,text,speaker\na.wav,x,alice\nb.wav,y,\n").unwrap();
    let csv = ManifestDataset::open(dir.join("m.csv")).unwrap();
    assert_eq!(csv.entries()[0].speaker.as_deref(), Some("alice"));
    assert_eq!(csv.entries()[1].speaker, None);

    let (train, dev, held) = split_by_speakers(&ds, 2, 0).unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(train.len() + dev.len(), ds.len());
    assert!(dev.entries().iter().all(|e| held.contains(e.speaker.as_ref().unwrap())));
    assert!(train.entries().iter().all(|e| !held.contains(e.speaker.as_ref().unwrap())));
    assert_eq!(split_by_speakers(&ds, 2, 0).unwrap().2, held, "the same seed, the same speakers");
    let speakers = ds.entries().iter().filter_map(|e| e.speaker.clone()).collect::<std::collections::BTreeSet<_>>();
    assert!(split_by_speakers(&ds, speakers.len(), 0).is_err());
    assert!(split_by_speakers(&ds, 0, 0).is_err());
    let e = split_by_speakers(&csv, 1, 0).unwrap_err().to_string();
    assert!(e.contains("names no speaker"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_reports_error_rates_per_speaker() {
    let dir = tmp("eval");
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wav2vec2/layer_prenorm");
    let mut manifest = String::new();
    for (i, spk) in ["ann", "bob", "ann"].iter().enumerate() {
        let audio: Vec<f32> =
            (0..6000 + 1000 * i).map(|k| 0.3 * ((k as f32) * (0.03 + 0.01 * i as f32)).sin()).collect();
        let wav = dir.join(format!("u{i}.wav"));
        stapes::speech::audio::write_wav(&wav, &audio, 16000).unwrap();
        manifest +=
            &format!("{{\"audio\": {:?}, \"text\": \"THE HAT\", \"speaker\": \"{spk}\"}}\n", wav.display().to_string());
    }
    std::fs::write(dir.join("m.jsonl"), manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["eval", "--model"])
        .arg(&golden)
        .arg("--data")
        .arg(dir.join("m.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("by speaker:"), "{stdout}");
    assert!(stdout.contains("  ann: WER") && stdout.contains("(4 words)"), "{stdout}");
    assert!(stdout.contains("  bob: WER") && stdout.contains("(2 words)"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}
