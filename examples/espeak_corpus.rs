//! Writes the espeak-ng corpora of issue 16: `DIR/train` spoken by the eight training voices
//! and `DIR/test` by the four held-out ones (`stapes::speech::espeak`), digit strings and short
//! commands with noise at 10-30 dB SNR on three in four utterances and a quarter at 8 kHz.
//!
//! `cargo run --release --example espeak_corpus -- DIR [train_per_voice] [test_per_voice] [seed]`
//! (defaults 250, 50, 0), then for instance
//! `stapes train --preset small --data DIR/train/manifest.jsonl --dev DIR/test/manifest.jsonl ...`.
//! Needs `espeak-ng` (`apt-get install espeak-ng`).

use stapes::speech::espeak::{espeak_available, write_espeak_corpus, EspeakConfig, TEST_VOICES, TRAIN_VOICES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next().ok_or("usage: espeak_corpus DIR [train_per_voice] [test_per_voice] [seed]")?,
    );
    let train_n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(250);
    let test_n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    if !espeak_available() {
        return Err("espeak-ng is not installed (apt-get install espeak-ng)".into());
    }
    let t0 = std::time::Instant::now();
    for (name, voices, n, s) in
        [("train", &TRAIN_VOICES[..], train_n, seed), ("test", &TEST_VOICES[..], test_n, seed + 1)]
    {
        let cfg = EspeakConfig {
            voices: voices.iter().map(|v| v.to_string()).collect(),
            per_voice: n,
            seed: s,
            ..EspeakConfig::default()
        };
        let m = write_espeak_corpus(&cfg, dir.join(name))?;
        println!("{name}: {} utterances of {} voices -> {}", n * voices.len(), voices.len(), m.display());
    }
    println!("in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}
