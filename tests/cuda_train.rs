//! Training on a CUDA device end to end: the tiny CRDNN of `speech_train.rs` trains on cuda:0
//! (the GPU when there is one, else the CUDA emulator, so this runs in CI) with the same
//! configuration and seed as on the CPU, and gives the CPU run's per-epoch losses and weights:
//! conv, batch norm, pooling, the LSTM, linear layers, log_softmax, the CTC loss, gradient
//! clipping and Adam all run on the device. The checkpoint it writes loads on the CPU.

use stapes::nn::Module;
use stapes::speech::config::{AugmentConfig, Precision, RunConfig, ScheduleConfig};
use stapes::speech::data::{Dataset, Vocab};
use stapes::speech::models::{CrdnnConfig, ModelConfig};
use stapes::speech::synth::{SynthConfig, SyntheticDigits, DIGITS};
use stapes::speech::train::{load_run, train_ctc, TrainOptions};
use stapes::tensor::{cuda, Device};
use std::sync::Arc;

#[test]
fn crdnn_trains_on_cuda_as_on_the_cpu() {
    let Some(dev) = cuda::test_device() else {
        eprintln!("skipped: no GPU and no CUDA emulator in this build");
        return;
    };
    let mut cfg = RunConfig {
        model: ModelConfig::Crdnn(CrdnnConfig {
            conv_channels: vec![4],
            time_pool: vec![2],
            rnn_hidden: 12,
            rnn_layers: 1,
            rnn_dropout: 0.0,
            ..CrdnnConfig::default()
        }),
        ..RunConfig::default()
    };
    cfg.features.n_mels = 16;
    cfg.training.batch_size = 8;
    cfg.training.epochs = 2;
    cfg.training.workers = 1;
    cfg.training.seed = 5;
    cfg.schedule = ScheduleConfig::Constant { lr: 3e-3 };
    cfg.augment = AugmentConfig { speed_factors: vec![1.0], ..AugmentConfig::none() };
    cfg.logging.tensorboard = false;
    cfg.logging.plots = false;
    let words = DIGITS.join(" ");
    let vocab = Vocab::from_transcripts([words.as_str()]);
    let synth = |seed, n| -> Arc<dyn Dataset> {
        Arc::new(
            SyntheticDigits::new(SynthConfig { seed, num_utterances: n, max_words: 2, ..SynthConfig::default() })
                .unwrap(),
        )
    };
    let (train, dev_set) = (synth(1, 24), synth(2, 8));
    let base = std::env::temp_dir().join(format!("stapes-cuda-train-{}", std::process::id()));
    let mut reports = Vec::new();
    for d in [Device::Cpu, dev] {
        let dir = base.join(d.to_string().replace(':', "_"));
        let opts = TrainOptions { device: d, ..TrainOptions::default() };
        reports
            .push((dir.clone(), train_ctc(&cfg, train.clone(), dev_set.clone(), &vocab, &dir, &opts, |_| {}).unwrap()));
    }
    let ((cpu_dir, cpu), (gpu_dir, gpu)) = (&reports[0], &reports[1]);
    assert_eq!(cpu.epochs.len(), 2);
    for (a, b) in gpu.epochs.iter().zip(&cpu.epochs) {
        let rel = (a.train_loss - b.train_loss).abs() / b.train_loss.abs();
        assert!(rel < 1e-3, "epoch {}: loss on {dev} {} vs cpu {}", a.epoch, a.train_loss, b.train_loss);
    }
    // the device run's checkpoint loads on the CPU, with weights close to the CPU run's
    let (mc, mg) = (load_run(cpu_dir).unwrap().model, load_run(gpu_dir).unwrap().model);
    let (sc, sg) = (mc.state_dict(), mg.state_dict());
    assert_eq!(sc.keys().collect::<Vec<_>>(), sg.keys().collect::<Vec<_>>());
    // Adam takes steps of about lr whatever the gradient's size, so a weight whose gradient is
    // rounding noise (the conv bias right before batch norm, which cancels it) may drift by up
    // to lr per step between the runs, and the batch norm's running mean follows that bias;
    // every other weight stays close.
    let bias_tracking = |k: &str| k.starts_with("cnn.0.bias") || k.starts_with("cnn.1.running_mean");
    let steps = cpu.epochs.last().unwrap().step as f64;
    let (mut worst, mut worst_key) = (0.0f64, String::new());
    for (k, tc) in &sc {
        let tg = &sg[k];
        assert_eq!(tg.device(), &Device::Cpu, "{k}");
        let (a, b) = (tg.to_vec_f64().unwrap(), tc.to_vec_f64().unwrap());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let d = (x - y).abs();
            assert!(d <= 3e-3 * steps, "{k}[{i}]: {dev} {x} vs cpu {y}");
            if d > worst && !bias_tracking(k) {
                (worst, worst_key) = (d, format!("{k}[{i}]: {x} vs {y}"));
            }
        }
    }
    eprintln!(
        "largest weight difference outside the pre-BN conv bias and its running mean: {worst:.2e} at {worst_key}"
    );
    assert!(worst < 1e-3, "{worst_key}");
    // mixed precision on the device: autocast casts there, the GradScaler unscales and checks
    // for infinities with device ops
    for precision in [Precision::Bf16, Precision::F16] {
        let mut c = cfg.clone();
        c.training.precision = precision;
        c.training.epochs = 1;
        let dir = base.join(format!("{precision:?}"));
        let opts = TrainOptions { device: dev, ..TrainOptions::default() };
        let r = train_ctc(&c, train.clone(), dev_set.clone(), &vocab, &dir, &opts, |_| {}).unwrap();
        let l = r.epochs[0].train_loss;
        assert!(l.is_finite() && (l - cpu.epochs[0].train_loss).abs() < 0.05 * l, "{precision:?}: {l}");
    }
    std::fs::remove_dir_all(&base).ok();
}

/// `stapes train --device` takes cpu, cuda, cuda:N or auto; a device that cannot be used is a
/// clear error before any data is read, not a panic.
#[test]
fn cli_device_flag_errors_clearly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["train", "--data", "/nonexistent-corpus", "--run-dir", "/tmp/stapes-no-run", "--device", "cuda:7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cuda:7") && !err.contains("panicked"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes"))
        .args(["train", "--data", "x", "--run-dir", "y", "--device", "tpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("expected cpu, cuda, cuda:N or auto"), "{err}");
}
