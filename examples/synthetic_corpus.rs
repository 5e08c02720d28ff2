//! Writes the built-in synthetic digit corpus to disk as WAV files and a JSONL manifest, the
//! form `stapes train --data` and `stapes eval --data` read: a quick corpus to try a
//! configuration on (for instance fine-tuning a wav2vec2 checkpoint directory) before real data.
//!
//! `cargo run --release --example synthetic_corpus -- <out dir> [utterances] [seed]`; prints the
//! manifest's path.

use stapes::speech::synth::{SynthConfig, SyntheticDigits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        return Err("usage: synthetic_corpus <out dir> [utterances] [seed]".into());
    };
    let num_utterances = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(400);
    let seed = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let corpus = SyntheticDigits::new(SynthConfig { seed, num_utterances, ..SynthConfig::default() })?;
    println!("{}", corpus.write_corpus(out)?.display());
    Ok(())
}
