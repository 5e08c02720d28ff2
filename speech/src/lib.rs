//! # stapes-speech
//!
//! Everything between an audio file on disk and a padded batch of features on the device, as
//! torchaudio and a PyTorch `Dataset`/`DataLoader` give it: audio I/O and resampling,
//! speed/volume/noise perturbation, voice activity detection, features (STFT, mel
//! spectrogram, MFCC, deltas, normalisation), SpecAugment, datasets and a prefetching data
//! loader, a built-in synthetic corpus, CTC decoding (greedy, and prefix beam search with word
//! n-gram language model fusion), model configuration and training ([`config`], [`models`],
//! [`train`]), inference ([`infer`]), TensorBoard event files ([`tensorboard`]) and PNG images
//! of training curves and spectrograms ([`plot`]).
//!
//! ```
//! use stapes_speech::data::Vocab;
//! use stapes_speech::decode::greedy_decode_batch;
//! use stapes_speech::features::{MelSpectrogram, MelSpectrogramConfig};
//! use stapes_tensor::{Device, Tensor};
//!
//! // 80-band log-mel features of one second of a 440 Hz tone, 10 ms hop.
//! let audio: Vec<f32> = (0..16000).map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16000.0).sin()).collect();
//! let mel = MelSpectrogram::new(MelSpectrogramConfig::new(16000, 80).n_fft(400).hop_length(160))?;
//! let m = mel.forward_slice(&audio)?;
//! assert_eq!((m.rows, m.frames), (80, 101));
//!
//! // Greedy CTC decoding of [B = 1, T = 4, C] log-probabilities: blank, 'a', 'a', 'b' -> "ab".
//! let vocab = Vocab::new("ab")?;
//! let lp = |c: usize| (0..3).map(move |k| if k == c { 0.0f32 } else { -10.0 });
//! let frames: Vec<f32> = [0, 1, 1, 2].into_iter().flat_map(lp).collect();
//! let ids = greedy_decode_batch(&Tensor::from_vec(frames, [1, 4, 3], &Device::Cpu)?, &[4], 0, true)?;
//! assert_eq!(vocab.decode(&ids[0].iter().map(|&i| i as i64).collect::<Vec<_>>())?, "ab");
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

#![warn(missing_docs)]

pub mod audio;
pub mod augment;
pub mod beam;
pub mod config;
pub mod data;
pub mod decode;
pub mod distill;
pub mod espeak;
pub mod features;
pub mod infer;
pub mod lm;
pub mod lm_train;
pub mod metrics;
pub mod models;
pub mod nnlm;
pub mod perturb;
pub mod plot;
pub mod synth;
pub mod tensorboard;
pub mod train;
pub mod vad;
