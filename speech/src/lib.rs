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

#![warn(missing_docs)]

pub mod audio;
pub mod augment;
pub mod beam;
pub mod config;
pub mod data;
pub mod decode;
pub mod features;
pub mod infer;
pub mod lm;
pub mod metrics;
pub mod models;
pub mod perturb;
pub mod plot;
pub mod synth;
pub mod tensorboard;
pub mod train;
pub mod vad;
