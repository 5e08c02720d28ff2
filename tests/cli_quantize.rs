//! `stapes quantize` (issue 19): a trained CRDNN run becomes an int8 run directory that
//! `stapes eval` and `stapes transcribe --run` use unchanged; its quantized layers take at most
//! 0.27 of their f32 bytes and its CER stays close to the float run's; quantizing it again,
//! training or resuming it, and a corrupted scale are clear errors.

use stapes::nn::checkpoint::{load_safetensors, save_safetensors};
use stapes::speech::synth::{SynthConfig, SyntheticDigits};
use std::path::Path;
use std::process::Command;

fn stapes(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stapes")).args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn ok(args: &[&str]) -> String {
    let (good, log) = stapes(args);
    assert!(good, "stapes {args:?} failed:\n{log}");
    log
}

fn cer(log: &str) -> f64 {
    let line = log.lines().find(|l| l.starts_with("CER ")).unwrap_or_else(|| panic!("no CER line in:\n{log}"));
    line[4..line.find('%').unwrap()].parse().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_quantized_run_evaluates_transcribes_and_refuses_misuse() {
    let dir = std::env::temp_dir().join(format!("stapes-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // held-out speakers (another corpus seed than the demo's)
    let synth =
        SyntheticDigits::new(SynthConfig { seed: 4242, num_utterances: 100, ..SynthConfig::default() }).unwrap();
    let manifest = synth.write_corpus(dir.join("corpus")).unwrap();
    let (run, q) = (dir.join("run"), dir.join("run-int8"));
    // the demo's recipe, shortened: about a minute, a few % CER
    ok(&["demo", "--run-dir", p(&run), "--train-utterances", "800", "--dev-utterances", "40", "--epochs", "6"]);

    let log = ok(&["quantize", "--run", p(&run), "--out", p(&q)]);
    assert!(log.contains("quantized") && log.contains("int8"), "{log}");
    let ratio: f64 = log
        .split('(')
        .nth(2)
        .and_then(|s| s.split('x').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(ratio <= 0.27, "int8 / f32 bytes of the quantized layers: {ratio}\n{log}");
    let state = load_safetensors(q.join("best_model.safetensors")).unwrap();
    assert!(state.tensors.keys().any(|k| k.ends_with("_int8")), "no int8 tensors written");
    assert!(std::fs::read_to_string(q.join("config.toml")).unwrap().contains("[quantization]"));

    // evaluation and transcription use the quantized run as any other
    let float_cer = cer(&ok(&["eval", "--run", p(&run), "--data", p(&manifest)]));
    let int8_cer = cer(&ok(&["eval", "--run", p(&q), "--data", p(&manifest)]));
    eprintln!("CER float {float_cer:.2}%, int8 {int8_cer:.2}%");
    assert!(float_cer < 10.0, "the float run did not train: CER {float_cer}%");
    assert!((int8_cer - float_cer).abs() <= 1.0, "CER float {float_cer}%, int8 {int8_cer}%");
    let wav = std::fs::read_dir(dir.join("corpus").join("wav"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wav"))
        .expect("a wav file in the corpus");
    let log = ok(&["transcribe", "--run", p(&q), p(&wav)]);
    assert!(log.chars().any(|c| c.is_ascii_lowercase()), "no transcript:\n{log}");

    // misuse: quantize again, train or resume it, into an existing non-empty directory
    let (good, log) = stapes(&["quantize", "--run", p(&q), "--out", p(&dir.join("again"))]);
    assert!(!good && log.contains("quantized already"), "{log}");
    let (good, log) = stapes(&["quantize", "--run", p(&run), "--out", p(&run)]);
    assert!(!good && log.contains("not empty"), "{log}");
    let (good, log) = stapes(&["train", "--resume", "--run-dir", p(&q)]);
    assert!(!good && log.contains("quantized"), "{log}");

    // a corrupted scale: eval names the file and the tensor
    let mut tensors = state.tensors.clone();
    let key = tensors.keys().find(|k| k.ends_with("_scale")).unwrap().clone();
    let n = tensors[&key].elem_count();
    tensors.insert(
        key.clone(),
        stapes::tensor::Tensor::from_vec(vec![-1.0f32; n], [n], &stapes::tensor::Device::Cpu).unwrap(),
    );
    save_safetensors(q.join("best_model.safetensors"), &tensors, None).unwrap();
    let (good, log) = stapes(&["eval", "--run", p(&q), "--data", p(&manifest)]);
    assert!(!good && log.contains("best_model.safetensors") && log.contains("_scale holds -1"), "{log}");

    // quantization-aware training: fine-tune the float run with fake quantization on the
    // demo's training voices, convert, and compare with post-training quantization on the
    // held-out speakers
    let ft = SyntheticDigits::new(SynthConfig { seed: 1000, num_utterances: 300, ..SynthConfig::default() }).unwrap();
    let ft_manifest = ft.write_corpus(dir.join("finetune")).unwrap();
    let qat = dir.join("qat");
    let log = ok(&[
        "train",
        "--init-from",
        p(&run),
        "--qat",
        "--lr",
        "3e-4",
        "--no-augment",
        "--data",
        p(&ft_manifest),
        "--run-dir",
        p(&qat),
        "--epochs",
        "2",
    ]);
    assert!(log.contains("quantization-aware training") && log.contains("starting from the weights"), "{log}");
    assert!(std::fs::read_to_string(qat.join("config.toml")).unwrap().contains("[qat]"));
    let (good, log) = stapes(&["quantize", "--run", p(&run), "--out", p(&dir.join("z")), "--from-qat"]);
    assert!(!good && log.contains("did not train with quantization-aware training"), "{log}");
    let qat_int8 = dir.join("qat-int8");
    ok(&["quantize", "--run", p(&qat), "--out", p(&qat_int8), "--from-qat"]);
    let qat_cer = cer(&ok(&["eval", "--run", p(&qat_int8), "--data", p(&manifest)]));
    eprintln!("held-out CER: float {float_cer:.2}%, post-training int8 {int8_cer:.2}%, QAT int8 {qat_cer:.2}%");
    assert!(qat_cer <= int8_cer, "QAT then int8: CER {qat_cer}%, post-training int8 {int8_cer}%");

    // `stapes distill`: the float run teaches a student (the demo's model here) one short epoch;
    // the student takes the teacher's vocabulary; a missing teacher is an error
    let student = dir.join("student");
    let log = ok(&[
        "distill",
        "--teacher",
        p(&run),
        "--small",
        "--no-augment",
        "--data",
        p(&manifest),
        "--run-dir",
        p(&student),
        "--epochs",
        "1",
        "--alpha",
        "0.5",
    ]);
    assert!(log.contains("distilling from") && log.contains("alpha 0.5"), "{log}");
    assert_eq!(
        std::fs::read_to_string(student.join("vocab.json")).unwrap(),
        std::fs::read_to_string(run.join("vocab.json")).unwrap()
    );
    let (good, log) = stapes(&["train", "--resume", "--run-dir", p(&student), "--epochs", "2"]);
    assert!(good && log.contains("distilling from"), "{log}");
    let (good, log) = stapes(&[
        "distill",
        "--teacher",
        p(&dir.join("nowhere")),
        "--data",
        p(&manifest),
        "--run-dir",
        p(&dir.join("x")),
    ]);
    assert!(!good && log.contains("nowhere"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}
