//! Datasets and batching, as a PyTorch `Dataset`/`DataLoader` give them.
//!
//! * [`Dataset`]: `len` and `get(index)`, loading lazily; [`ManifestDataset`] reads a JSONL or
//!   CSV manifest, [`LibriSpeech`] the LibriSpeech folder layout, and
//!   [`crate::synth::SyntheticDigits`] generates utterances.
//! * [`Vocab`]: characters to CTC target ids, blank at 0.
//! * [`DataLoader`]: seeded shuffling, duration sorting or bucketing, per-item transforms,
//!   padding into [`Batch`]es of tensors, and prefetching on worker threads with a bounded
//!   number of batches in memory.

mod dataset;
mod loader;
mod vocab;

pub use dataset::{Dataset, LibriSpeech, ManifestDataset, ManifestEntry, Utterance};
pub use loader::{collate, raw_audio_transform, Batch, DataLoader, Epoch, Item, LoaderConfig, Order, Transform};
pub use vocab::Vocab;
