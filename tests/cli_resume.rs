//! `stapes train --resume` after the process is killed mid-epoch (SIGKILL, no chance to clean
//! up): the run directory survives, and the resumed run ends with exactly the weights,
//! optimizer state and per-epoch metrics of a run that was never interrupted.

use stapes::nn::checkpoint::Checkpoint;
use stapes::speech::synth::{SynthConfig, SyntheticDigits};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn train_cmd(manifest: &Path, run_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stapes"));
    c.args(["train", "--small", "--epochs", "2", "--batch-size", "4", "--checkpoint-every", "2", "--seed", "7"])
        .arg("--data")
        .arg(manifest)
        .arg("--run-dir")
        .arg(run_dir);
    c
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stapes failed:\n{log}");
    log
}

/// The per-epoch numbers that must agree (not the timings).
fn metrics(run_dir: &Path) -> Vec<(u64, String, String)> {
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap();
    log.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["train_loss"].to_string(), v["dev_cer"].to_string())
        })
        .collect()
}

#[test]
fn resume_after_a_kill_mid_epoch_continues_exactly() {
    let dir = std::env::temp_dir().join(format!("stapes-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let synth =
        SyntheticDigits::new(SynthConfig { seed: 11, num_utterances: 40, max_words: 2, ..SynthConfig::default() })
            .unwrap();
    let manifest = synth.write_corpus(dir.join("corpus")).unwrap();

    // The reference: two epochs straight through (38 training utterances: 10 batches each).
    let straight = dir.join("straight");
    run_ok(train_cmd(&manifest, &straight));

    // The same run, killed as soon as its first mid-epoch checkpoint lands.
    let killed = dir.join("killed");
    let mut child = train_cmd(&manifest, &killed).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let ck = killed.join("checkpoint.safetensors");
    let t0 = Instant::now();
    while !ck.is_file() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = Checkpoint::load(&ck).unwrap();
    assert!(at_kill.step >= 2 && at_kill.step < 20, "killed at step {}", at_kill.step);
    for f in ["config.toml", "vocab.json", "run.json"] {
        assert!(killed.join(f).is_file(), "{f} lost by the kill");
    }

    // Resume with nothing but the run directory.
    let log = run_ok({
        let mut c = Command::new(env!("CARGO_BIN_EXE_stapes"));
        c.args(["train", "--resume", "--run-dir"]).arg(&killed);
        c
    });
    assert!(log.contains("resuming at epoch"), "{log}");

    let a = Checkpoint::load(straight.join("checkpoint.safetensors")).unwrap();
    let b = Checkpoint::load(&ck).unwrap();
    assert_eq!(a.step, 20);
    assert_eq!(b.step, a.step);
    assert_eq!(a.model.len(), b.model.len());
    for (name, t) in &a.model {
        let u = &b.model[name];
        assert_eq!(t.dims(), u.dims(), "{name}");
        if name.ends_with("num_batches_tracked") {
            assert_eq!(t.to_vec::<i64>().unwrap(), u.to_vec::<i64>().unwrap(), "{name}");
        } else {
            let (x, y) = (t.to_vec::<f32>().unwrap(), u.to_vec::<f32>().unwrap());
            let same = x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{name} differs after resuming (killed at step {})", at_kill.step);
        }
    }
    for (name, t) in &a.optimizer_tensors {
        let (x, y) = (t.to_vec::<f32>().unwrap(), b.optimizer_tensors[name].to_vec::<f32>().unwrap());
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "optimizer {name} differs");
    }
    assert_eq!(a.scheduler, b.scheduler);
    assert_eq!(a.rng, b.rng);
    assert_eq!(metrics(&straight), metrics(&killed));
    assert_eq!(metrics(&killed).len(), 2);

    // Resuming a finished run has nothing left to do; resuming an empty folder is an error.
    let out = Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["train", "--resume", "--run-dir"])
        .arg(dir.join("nothing-here"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing-here"));
    std::fs::remove_dir_all(&dir).ok();
}
