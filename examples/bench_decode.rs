//! Decoding speed with the Transformer LM (issue 18): CTC prefix beam search without an LM,
//! with shallow fusion, and n-best rescoring, on the same utterances and beam.
//!
//! The test set is the LM-fusion test's (`tests/support/confusable.rs`): sentences of a small
//! grammar turned into synthetic posteriors with character confusions. A character LM is
//! trained on 3,000 other sentences of the grammar first (not timed), at one of two sizes:
//! `small` (d_model 64, 2 layers, the test's) or `base` (d_model 256, 4 layers, 4 heads,
//! feed-forward 1024: the LM training benchmark's shape). Each decoder runs `reps` times over
//! all utterances (`beam_search_decode_batch`, in parallel over the batch); the median is
//! reported as one JSON line.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_decode -- [small|base] [utterances] [reps] [fusion]`
//! (`fusion`: time only the fused search, for profiling it).

#[path = "../tests/support/confusable.rs"]
mod confusable;

use std::sync::Arc;

use confusable::{sentence, synthesize};
use stapes::speech::beam::{beam_search_decode_batch, BeamSearchConfig, Hypothesis, NeuralLm};
use stapes::speech::config::ScheduleConfig;
use stapes::speech::data::Vocab;
use stapes::speech::lm_train::{train_lm, LmRunConfig, LmTrainOptions};
use stapes::speech::metrics::corpus_error_rates;
use stapes::speech::nnlm::TransformerLmConfig;
use stapes::tensor::random::Generator;
use stapes::tensor::{Device, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn wer(refs: &[String], hyps: &[Vec<Hypothesis>]) -> f64 {
    let texts: Vec<&str> = hyps.iter().map(|h| h[0].text.as_str()).collect();
    corpus_error_rates(refs.iter().map(String::as_str).zip(texts)).0.rate()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size = args.get(1).map_or("small", String::as_str);
    let n_utts: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(40);
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    // `fusion`: time only the fused search (for profiling it)
    let only_fusion = args.get(4).is_some_and(|a| a == "fusion");
    let (model, epochs) = match size {
        "small" => (
            TransformerLmConfig {
                d_model: 64,
                nhead: 4,
                num_layers: 2,
                dim_feedforward: 128,
                dropout: 0.0,
                max_len: 128,
                ..TransformerLmConfig::default()
            },
            4,
        ),
        "base" => (
            TransformerLmConfig {
                d_model: 256,
                nhead: 4,
                num_layers: 4,
                dim_feedforward: 1024,
                dropout: 0.0,
                max_len: 128,
                ..TransformerLmConfig::default()
            },
            1,
        ),
        other => return Err(format!("size must be small or base, got {other:?}").into()),
    };
    let vocab = Vocab::english();
    let c = vocab.len();

    // the LM, trained on other sentences of the grammar than the test's
    let mut g = Generator::new(2025);
    let train: Vec<String> = (0..3000).map(|_| sentence(&mut g)).collect();
    let dir = std::env::temp_dir().join(format!("stapes_bench_decode_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("text.txt"), train.join("\n"))?;
    let mut cfg = LmRunConfig { model, ..LmRunConfig::default() };
    cfg.tokenizer.chars = Some(vocab.chars().iter().collect());
    cfg.training.batch_size = 16;
    cfg.training.seq_len = 64;
    cfg.training.epochs = epochs;
    cfg.training.checkpoint_every_steps = 0;
    cfg.schedule = ScheduleConfig::Constant { lr: if size == "small" { 2e-3 } else { 5e-4 } };
    cfg.logging.tensorboard = false;
    let t0 = std::time::Instant::now();
    let report = train_lm(&cfg, &[dir.join("text.txt")], &dir.join("run"), &LmTrainOptions::default(), |_| {})?;
    let train_s = t0.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir)?;
    let ppl = report.epochs.last().map_or(f64::NAN, |e| e.dev_perplexity);
    let params: usize = {
        use stapes::nn::Module;
        report.model.parameters().iter().map(|p| p.elem_count()).sum()
    };
    let nnlm = Arc::new(NeuralLm {
        model: Arc::new(report.model),
        tokenizer: Arc::new(report.tokenizer),
        weight: 0.8,
        word_bonus: 1.0,
    });

    // the test set, batch-first [B, T, C]
    let mut g = Generator::new(7);
    let refs: Vec<String> = (0..n_utts).map(|_| sentence(&mut g)).collect();
    let utts: Vec<Vec<f32>> = refs.iter().map(|r| synthesize(&mut g, &vocab, r, 0.12)).collect();
    let lens: Vec<usize> = utts.iter().map(|u| u.len() / c).collect();
    let t = lens.iter().copied().max().unwrap_or(0);
    let mut data = vec![0f32; n_utts * t * c];
    for (b, u) in utts.iter().enumerate() {
        data[b * t * c..b * t * c + u.len()].copy_from_slice(u);
    }
    let x = Tensor::from_vec(data, [n_utts, t, c], &Device::Cpu)?;

    let beam = BeamSearchConfig { beam_width: 16, ..Default::default() };
    let fusion = BeamSearchConfig { nnlm: Some(nnlm.clone()), ..beam.clone() };
    let time = |f: &mut dyn FnMut() -> Result<Vec<Vec<Hypothesis>>, Box<dyn std::error::Error>>| {
        let mut times = vec![];
        let mut out = vec![];
        for _ in 0..reps.max(1) {
            let t0 = std::time::Instant::now();
            out = f()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok::<_, Box<dyn std::error::Error>>((median(times), out))
    };
    let (fusion_s, fused) = time(&mut || Ok(beam_search_decode_batch(&x, &lens, true, &vocab, &fusion)?))?;
    if only_fusion {
        println!("{{\"bench\":\"decode\",\"lm\":\"{size}\",\"fusion_ms\":{:.2}}}", fusion_s * 1e3);
        return Ok(());
    }
    let (beam_s, no_lm) = time(&mut || Ok(beam_search_decode_batch(&x, &lens, true, &vocab, &beam)?))?;
    let (rescore_s, rescored) = time(&mut || {
        let mut r = no_lm.clone();
        for h in &mut r {
            nnlm.rescore(h)?;
        }
        Ok(r)
    })?;
    let audio_frames: usize = lens.iter().sum();
    println!(
        "{{\"bench\":\"decode\",\"lm\":\"{size}\",\"lm_params\":{params},\"lm_dev_perplexity\":{ppl:.3},\
         \"lm_train_s\":{train_s:.1},\"utterances\":{n_utts},\"frames\":{audio_frames},\"beam_width\":16,\
         \"threads\":{},\"beam_ms\":{:.2},\"fusion_ms\":{:.2},\"rescore_ms\":{:.2},\
         \"beam_utt_per_s\":{:.1},\"fusion_utt_per_s\":{:.1},\"fusion_over_beam\":{:.2},\
         \"wer_beam\":{:.4},\"wer_rescore\":{:.4},\"wer_fusion\":{:.4}}}",
        rayon::current_num_threads(),
        beam_s * 1e3,
        fusion_s * 1e3,
        rescore_s * 1e3,
        n_utts as f64 / beam_s,
        n_utts as f64 / fusion_s,
        fusion_s / beam_s,
        wer(&refs, &no_lm),
        wer(&refs, &rescored),
        wer(&refs, &fused),
    );
    Ok(())
}
