//! Train a CRDNN speech recogniser with CTC in your own binary, with your own loop: the pieces
//! `stapes train` assembles, used directly (a dataset, a feature transform run by the data
//! loader's workers, the model, CTC on logits, Adam with gradient clipping, greedy decoding).
//!
//! The data are the built-in synthetic digits corpus ("three one four" from the project's
//! formant synthesizer). A short run: the loss falls and the first transcripts appear; train
//! for longer (or run `stapes demo`) for a usable recogniser. Exits with an error unless the
//! last epoch's mean loss is below the first's.
//!
//! `cargo run --release --example train_crdnn [-- EPOCHS]`

use std::sync::Arc;

use stapes::nn::clip::clip_grad_norm;
use stapes::nn::ctc::{ctc_loss_from_logits, CtcLossOptions};
use stapes::prelude::*;
use stapes::speech::data::{DataLoader, Dataset, Item, LoaderConfig, Order, Transform, Utterance, Vocab};
use stapes::speech::decode::greedy_decode_batch;
use stapes::speech::features::{Cmvn, MelSpectrogram, MelSpectrogramConfig};
use stapes::speech::models::{Crdnn, CrdnnConfig};
use stapes::speech::synth::{SynthConfig, SyntheticDigits};
use stapes::tensor::{Generator, Result};

const N_MELS: usize = 40;

/// Utterance to features: log-mel (25 ms windows every 10 ms) normalised per utterance, as
/// `[frames, N_MELS]`, and the transcript as character ids.
fn features(vocab: Vocab) -> Result<Transform> {
    let mel = MelSpectrogram::new(MelSpectrogramConfig::new(16000, N_MELS).n_fft(400).hop_length(160))?;
    let cmvn = Cmvn::default();
    Ok(Arc::new(move |u: Utterance, _: &mut Generator| -> Result<Item> {
        let m = mel.forward_slice(&u.audio)?;
        let log_mel: Vec<f32> = m.data.iter().map(|v| (v + 1e-6).ln()).collect();
        let x = cmvn.forward(&Tensor::from_vec(log_mel, [m.rows, m.frames], &Device::Cpu)?)?; // [feat, time]
        let input = x.t()?.contiguous()?.to_vec::<f32>()?; // [time, feat]
        Ok(Item { id: u.id, input, feature_dim: Some(N_MELS), target: vocab.encode(&u.transcript)? })
    }))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let epochs: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(3);
    let device = Device::cuda_if_available();
    let corpus =
        Arc::new(SyntheticDigits::new(SynthConfig { num_utterances: 240, max_words: 3, ..SynthConfig::default() })?);
    let vocab = Vocab::from_transcripts(
        (0..corpus.len())
            .map(|i| corpus.get(i).map(|u| u.transcript))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .map(String::as_str),
    );
    println!(
        "{} utterances, vocabulary {:?} + blank",
        corpus.len(),
        vocab.decode(&(1..vocab.len() as i64).collect::<Vec<_>>())?
    );

    let loader = DataLoader::new(
        corpus,
        features(vocab.clone())?,
        LoaderConfig {
            batch_size: 16,
            order: Order::Bucketed { window_batches: 4 },
            seed: 1,
            num_workers: 2,
            ..LoaderConfig::default()
        },
    )?;
    let model = Crdnn::new(CrdnnConfig {
        n_features: N_MELS,
        conv_channels: vec![16, 32],
        time_pool: vec![2, 1],
        rnn_hidden: 96,
        rnn_layers: 1,
        rnn_dropout: 0.0,
        vocab_size: vocab.len(),
    })?;
    model.to_device(&device)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 2e-3, ..AdamConfig::adam() })?;
    let ctc =
        CtcLossOptions { blank: vocab.blank() as usize, zero_infinity: true, batch_first: true, ..Default::default() };
    println!("CRDNN with {} parameters on {device}", model.num_parameters());

    let mut epoch_losses = Vec::new();
    for epoch in 0..epochs {
        model.train(true);
        let (mut sum, mut batches) = (0.0, 0);
        for batch in loader.epoch(epoch as u64)? {
            let batch = batch?;
            let in_lens: Vec<usize> = batch.input_lengths.to_vec::<i64>()?.iter().map(|&l| l as usize).collect();
            opt.zero_grad();
            // [B, T', vocab] logits; CTC takes the lengths after the model's time pooling, and the
            // target lengths straight from the batch's i64 tensor, as PyTorch does.
            let logits = model.forward(&Var::constant(batch.inputs.to_device(&device)?), &in_lens)?;
            let out_lens = model.output_lengths(&in_lens);
            let loss = ctc_loss_from_logits(&logits, &batch.targets, &out_lens, &batch.target_lengths, &ctc)?;
            loss.backward()?;
            clip_grad_norm(&model.parameters(), 5.0, 2.0, false)?;
            opt.step()?;
            sum += loss.tensor().to_scalar_f64()?;
            batches += 1;
        }
        let mean = sum / batches as f64;
        println!("epoch {}: mean CTC loss {mean:.3} over {batches} batches", epoch + 1);
        epoch_losses.push(mean);
    }

    // Greedy transcripts of a few utterances.
    model.eval();
    let batch = loader.epoch(0)?.next().ok_or("empty loader")??;
    let in_lens: Vec<usize> = batch.input_lengths.to_vec::<i64>()?.iter().map(|&l| l as usize).collect();
    let logits = no_grad(|| model.forward(&Var::constant(batch.inputs.to_device(&device)?), &in_lens))?;
    let log_probs = logits.tensor().log_softmax(2)?.to_device(&Device::Cpu)?;
    let hyps = greedy_decode_batch(&log_probs, &model.output_lengths(&in_lens), vocab.blank() as usize, true)?;
    let targets = batch.targets.to_vec::<i64>()?;
    let width = batch.targets.dims()[1];
    let target_lens = batch.target_lengths.to_vec::<i64>()?;
    for (b, hyp) in hyps.iter().enumerate().take(3) {
        let truth = vocab.decode(&targets[b * width..b * width + target_lens[b] as usize])?;
        let said = vocab.decode(&hyp.iter().map(|&i| i as i64).collect::<Vec<_>>())?;
        println!("  {truth:>20}  ->  {said}");
    }
    let (first, last) = (epoch_losses[0], *epoch_losses.last().unwrap());
    if epochs > 1 && last >= first {
        return Err(format!("the loss did not fall: {first:.3} -> {last:.3}").into());
    }
    Ok(())
}
