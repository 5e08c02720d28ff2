//! The on/off table of issue 16: single spoken words (0.3-1 s) from a handful of espeak-ng
//! voices, all recorded at 8 kHz (telephone band, as the public digit corpora), trained on five
//! voices and tested on three held-out ones. Each variant of the `small` preset trains for the
//! same number of epochs; the table gives the held-out WER and CER (greedy decoding, best model
//! by dev CER on the training voices).
//!
//! `cargo run --release --example ablation_words -- [DIR] [epochs] [per_voice]` (defaults: a
//! temporary folder, 30 epochs, 80 words per voice). Needs `espeak-ng`.

use std::sync::Arc;

use stapes::speech::config::{AugmentConfig, RunConfig};
use stapes::speech::data::Dataset;
use stapes::speech::espeak::{espeak_available, write_espeak_corpus, EspeakConfig};
use stapes::speech::train::{evaluate, load_run, open_corpus, split_corpus, train_ctc, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(std::path::PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("stapes-ablation"));
    let epochs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let per_voice: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(80);
    if !espeak_available() {
        return Err("espeak-ng is not installed (apt-get install espeak-ng)".into());
    }
    let words = |voices: &[&str], seed| EspeakConfig {
        voices: voices.iter().map(|v| v.to_string()).collect(),
        per_voice,
        digit_fraction: 1.0,
        digits: (1, 1),
        narrowband_fraction: 1.0,
        seed,
        ..EspeakConfig::default()
    };
    let train_voices = ["en-us+m1", "en-gb+f4", "en-gb-scotland+m5", "en-029+f1", "en-us+m6"];
    let test_voices = ["en-gb-x-gbclan+f3", "en-us+m4", "en-gb+f5"];
    let train_m = write_espeak_corpus(&words(&train_voices, 10), dir.join("train"))?;
    let test_m = write_espeak_corpus(&words(&test_voices, 11), dir.join("test"))?;
    let train = open_corpus(&train_m)?;
    let test: Arc<dyn Dataset> = Arc::new(open_corpus(&test_m)?.dataset);
    let (tr, dev) = split_corpus(&train.dataset, 0.1)?;
    let (tr, dev): (Arc<dyn Dataset>, Arc<dyn Dataset>) = (Arc::new(tr), Arc::new(dev));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "cpu: {cpu}; {} training words of {} voices, {} held-out words of {} voices, {epochs} epochs, 8 kHz",
        train.dataset.len(),
        train_voices.len(),
        test.len(),
        test_voices.len()
    );
    // what `stapes train --preset small` runs on this corpus: the preset, with the mel bands
    // limited to 4 kHz because every recording is at 8 kHz
    let base = {
        let mut c = RunConfig::preset("small")?;
        c.training.epochs = epochs;
        c.features.f_max = Some(4000.0);
        c.logging.plots = false;
        c.logging.tensorboard = false;
        c
    };
    let variants: Vec<(&str, RunConfig)> = vec![
        ("`--preset small` (speed, noise, VTLP; no masks; bands to 4 kHz)", base.clone()),
        ("full band (f_max 8 kHz)", {
            let mut c = base.clone();
            c.features.f_max = None;
            c
        }),
        ("no VTLP", {
            let mut c = base.clone();
            c.augment.vtlp = vec![];
            c
        }),
        ("no augmentation at all", {
            let mut c = base.clone();
            c.augment = AugmentConfig::none();
            c
        }),
        ("with SpecAugment masks, capped (2 × ≤ 10% of the frames, 2 × ≤ 5 bands)", {
            let mut c = base.clone();
            (c.augment.time_masks, c.augment.freq_masks) = (2, 2);
            c
        }),
        ("with the reference recipe's masks (2 × 40 frames, 2 × 15 bands, uncapped)", {
            let mut c = base.clone();
            (c.augment.time_masks, c.augment.freq_masks) = (2, 2);
            (c.augment.time_mask_param, c.augment.freq_mask_param, c.augment.mask_p) = (40, 15, 1.0);
            c
        }),
    ];
    println!("| variant | held-out WER | held-out CER | dev CER (training voices) | time |");
    println!("|---|---|---|---|---|");
    for (i, (name, cfg)) in variants.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let run = dir.join(format!("run-{i}"));
        let _ = std::fs::remove_dir_all(&run);
        let r = train_ctc(cfg, tr.clone(), dev.clone(), &train.vocab, &run, &TrainOptions::default(), |_| {})?;
        let l = load_run(&run)?;
        let ev = evaluate(&l.model, &l.frontend(), test.clone(), &l.vocab, 32)?;
        println!(
            "| {name} | {:.2}% | {:.2}% | {:.2}% | {:.0} s |",
            100.0 * ev.wer.rate(),
            100.0 * ev.cer.rate(),
            100.0 * r.best_cer,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
