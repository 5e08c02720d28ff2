//! The data loader: epoch order (seeded shuffle, duration sort, buckets), per-item transforms,
//! padding into tensors, and prefetching on worker threads.
//!
//! Threading: with `num_workers = N > 0`, worker `w` builds batches `w, w + N, w + 2N, ...` of
//! the epoch's plan and sends them into its own bounded channel; the consumer takes batch `b`
//! from channel `b mod N`, so batches arrive in plan order whatever the workers' speeds, and at
//! most `N * ceil(prefetch / N)` finished batches plus `N` batches under construction exist
//! at once, whatever the corpus size. Every item draws its randomness from a generator seeded
//! by `(seed, epoch, index)`, so the content of an epoch does not depend on `N` or on timing.
//! Errors (a corrupt file, a failing transform, even a panic in user code) arrive as the `Err`
//! of that batch; the epoch continues with the next batch. Dropping an [`Epoch`] stops and
//! joins its workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use stapes_tensor::{Device, Error, Generator, Result, Tensor};

use super::{Dataset, Utterance, Vocab};

/// What a transform makes of an utterance: the model input (raw audio or a feature matrix) and
/// the target ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The utterance id.
    pub id: String,
    /// Raw samples `[T]`, or features `[T, F]` row-major.
    pub input: Vec<f32>,
    /// `None` for raw audio, `Some(F)` for `F` features per frame.
    pub feature_dim: Option<usize>,
    /// Target ids (e.g. [`Vocab::encode`] of the transcript).
    pub target: Vec<i64>,
}

impl Item {
    /// Number of frames (samples for raw audio).
    pub fn frames(&self) -> usize {
        match self.feature_dim {
            Some(f) if f > 0 => self.input.len() / f,
            _ => self.input.len(),
        }
    }
}

/// A per-item transform: loading is done, this turns an [`Utterance`] into an [`Item`]
/// (augmentation, features, target encoding). The generator is seeded per `(seed, epoch,
/// index)`, so augmentation is reproducible.
pub type Transform = Arc<dyn Fn(Utterance, &mut Generator) -> Result<Item> + Send + Sync>;

/// The simplest transform: raw audio in, transcript encoded with `vocab` (lower-cased first
/// when `lowercase`).
pub fn raw_audio_transform(vocab: Vocab, lowercase: bool) -> Transform {
    Arc::new(move |u: Utterance, _: &mut Generator| {
        let text = if lowercase { u.transcript.to_lowercase() } else { u.transcript };
        Ok(Item { target: vocab.encode(&text)?, id: u.id, input: u.audio, feature_dim: None })
    })
}

/// A padded batch, on the CPU.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `f32` `[B, T]` (raw audio) or `[B, T, F]` (features), zero-padded after each item.
    pub inputs: Tensor,
    /// `i64` `[B]`: valid frames of each item.
    pub input_lengths: Tensor,
    /// `i64` `[B, S]`: target ids, padded with 0 (the blank) after each item.
    pub targets: Tensor,
    /// `i64` `[B]`: valid target ids of each item.
    pub target_lengths: Tensor,
    /// The items' ids.
    pub ids: Vec<String>,
    /// The items' dataset indices.
    pub indices: Vec<usize>,
}

/// Pads `items` into a [`Batch`]. Items must all be raw audio or all have the same feature
/// size; an empty list is an error.
pub fn collate(items: Vec<Item>, indices: Vec<usize>) -> Result<Batch> {
    const OP: &str = "collate";
    let first = items.first().ok_or_else(|| Error::invalid(OP, "empty batch"))?;
    let fd = first.feature_dim;
    if fd == Some(0) {
        return Err(Error::invalid(OP, "feature_dim must be > 0"));
    }
    for it in &items {
        if it.feature_dim != fd {
            return Err(Error::shape(
                OP,
                format!("item {:?} has feature_dim {:?}, the first {:?}", it.id, it.feature_dim, fd),
            ));
        }
        if let Some(f) = fd {
            if it.input.len() % f != 0 {
                return Err(Error::shape(
                    OP,
                    format!("item {:?}: {} values is not a multiple of {f}", it.id, it.input.len()),
                ));
            }
        }
    }
    let b = items.len();
    let f = fd.unwrap_or(1);
    let t = items.iter().map(Item::frames).max().unwrap_or(0);
    let s = items.iter().map(|i| i.target.len()).max().unwrap_or(0);
    let mut inputs = vec![0f32; b * t * f];
    let mut targets = vec![0i64; b * s];
    for (k, it) in items.iter().enumerate() {
        inputs[k * t * f..k * t * f + it.input.len()].copy_from_slice(&it.input);
        targets[k * s..k * s + it.target.len()].copy_from_slice(&it.target);
    }
    let cpu = Device::Cpu;
    let in_shape = if fd.is_some() { vec![b, t, f] } else { vec![b, t] };
    Ok(Batch {
        inputs: Tensor::from_vec(inputs, in_shape, &cpu)?,
        input_lengths: Tensor::from_vec(items.iter().map(|i| i.frames() as i64).collect::<Vec<_>>(), [b], &cpu)?,
        targets: Tensor::from_vec(targets, [b, s], &cpu)?,
        target_lengths: Tensor::from_vec(items.iter().map(|i| i.target.len() as i64).collect::<Vec<_>>(), [b], &cpu)?,
        ids: items.into_iter().map(|i| i.id).collect(),
        indices,
    })
}

/// The order of an epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Order {
    /// Dataset order, every epoch.
    Sequential,
    /// A fresh seeded permutation every epoch.
    Shuffle,
    /// Ascending duration (shortest first, as ESPnet's "sortagrad"), the same every epoch.
    SortedByDuration,
    /// Shuffled, then sorted by duration within windows of `window_batches` batches, cut into
    /// batches, and the batches shuffled: little padding, still random.
    Bucketed {
        /// Batches per sorting window.
        window_batches: usize,
    },
}

/// Settings of a [`DataLoader`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Items per batch.
    pub batch_size: usize,
    /// The epoch order.
    pub order: Order,
    /// Seed of shuffling and of the per-item generators.
    pub seed: u64,
    /// Worker threads; 0 builds batches on the consumer's thread when asked.
    pub num_workers: usize,
    /// Finished batches held ahead of the consumer (at least one per worker).
    pub prefetch: usize,
    /// Drop a final smaller batch.
    pub drop_last: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig { batch_size: 16, order: Order::Shuffle, seed: 0, num_workers: 2, prefetch: 4, drop_last: false }
    }
}

/// Batches of a [`Dataset`], transformed, padded and prefetched (see the module notes).
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    transform: Transform,
    cfg: LoaderConfig,
    durations: OnceLock<Vec<f64>>,
}

fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn shuffle<T>(v: &mut [T], g: &mut Generator) {
    for i in (1..v.len()).rev() {
        v.swap(i, (g.next_u64() % (i as u64 + 1)) as usize);
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Loads, transforms and collates one batch; a panic anywhere in user code becomes an error.
fn build_batch(ds: &dyn Dataset, tf: &Transform, seed: u64, epoch: u64, indices: &[usize]) -> Result<Batch> {
    let mut items = Vec::with_capacity(indices.len());
    for &i in indices {
        let mut g = Generator::new(mix(mix(seed, epoch), i as u64));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tf(ds.get(i)?, &mut g)));
        match r {
            Ok(item) => items.push(item?),
            Err(p) => {
                return Err(Error::invalid(
                    "DataLoader",
                    format!("item {i}: the dataset or transform panicked: {}", panic_message(p)),
                ))
            }
        }
    }
    collate(items, indices.to_vec())
}

impl DataLoader {
    /// A loader over `dataset` applying `transform`. A zero batch size or window is an error.
    pub fn new(dataset: Arc<dyn Dataset>, transform: Transform, cfg: LoaderConfig) -> Result<DataLoader> {
        if cfg.batch_size == 0 {
            return Err(Error::invalid("DataLoader::new", "batch_size must be > 0"));
        }
        if matches!(cfg.order, Order::Bucketed { window_batches: 0 }) {
            return Err(Error::invalid("DataLoader::new", "window_batches must be > 0"));
        }
        Ok(DataLoader { dataset, transform, cfg, durations: OnceLock::new() })
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Durations of every item (once per loader): from [`Dataset::duration`], or by loading
    /// the item when the dataset cannot say.
    fn durations(&self) -> Result<&[f64]> {
        if let Some(d) = self.durations.get() {
            return Ok(d);
        }
        let mut d = Vec::with_capacity(self.dataset.len());
        for i in 0..self.dataset.len() {
            d.push(match self.dataset.duration(i)? {
                Some(x) => x,
                None => {
                    let u = self.dataset.get(i)?;
                    u.audio.len() as f64 / u.sample_rate.max(1) as f64
                }
            });
        }
        Ok(self.durations.get_or_init(|| d))
    }

    /// The dataset indices of every batch of `epoch`, in delivery order.
    pub fn batch_plan(&self, epoch: u64) -> Result<Vec<Vec<usize>>> {
        let n = self.dataset.len();
        let bs = self.cfg.batch_size;
        let mut g = Generator::new(mix(self.cfg.seed, epoch ^ 0x5EED));
        let mut idx: Vec<usize> = (0..n).collect();
        let mut batches: Vec<Vec<usize>> = match self.cfg.order {
            Order::Sequential => idx.chunks(bs).map(<[usize]>::to_vec).collect(),
            Order::Shuffle => {
                shuffle(&mut idx, &mut g);
                idx.chunks(bs).map(<[usize]>::to_vec).collect()
            }
            Order::SortedByDuration => {
                let d = self.durations()?;
                idx.sort_by(|&a, &b| d[a].total_cmp(&d[b]).then(a.cmp(&b)));
                idx.chunks(bs).map(<[usize]>::to_vec).collect()
            }
            Order::Bucketed { window_batches } => {
                let d = self.durations()?;
                shuffle(&mut idx, &mut g);
                let mut out = vec![];
                for w in idx.chunks_mut(bs * window_batches) {
                    w.sort_by(|&a, &b| d[a].total_cmp(&d[b]).then(a.cmp(&b)));
                    out.extend(w.chunks(bs).map(<[usize]>::to_vec));
                }
                shuffle(&mut out, &mut g);
                out
            }
        };
        if self.cfg.drop_last {
            batches.retain(|b| b.len() == bs);
        }
        Ok(batches)
    }

    /// Starts epoch `epoch`: an iterator of batches (see the module notes for threading,
    /// ordering and errors). Dropping it stops the workers.
    pub fn epoch(&self, epoch: u64) -> Result<Epoch> {
        self.epoch_from(epoch, 0)
    }

    /// Epoch `epoch` from batch `start` on: the batches a full [`DataLoader::epoch`] would
    /// deliver after its first `start`, identical to them (items and augmentation are seeded by
    /// epoch and index, not by position), without loading the skipped ones. This is how a
    /// resumed run continues inside an epoch. `start` past the end gives an empty epoch.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<Epoch> {
        let plan = Arc::new(self.batch_plan(epoch)?);
        let start = start.min(plan.len());
        let stop = Arc::new(AtomicBool::new(false));
        let n = self.cfg.num_workers;
        let mut receivers = vec![];
        let mut handles = vec![];
        if n > 0 {
            let cap = self.cfg.prefetch.div_ceil(n).max(1);
            for w in 0..n {
                let (tx, rx) = sync_channel::<Result<Batch>>(cap);
                let (ds, tf, plan, stop) = (self.dataset.clone(), self.transform.clone(), plan.clone(), stop.clone());
                let seed = self.cfg.seed;
                let h = std::thread::Builder::new()
                    .name(format!("stapes-loader-{w}"))
                    .spawn(move || {
                        for b in (w..plan.len()).step_by(n).filter(|&b| b >= start) {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let batch = build_batch(ds.as_ref(), &tf, seed, epoch, &plan[b]);
                            if tx.send(batch).is_err() {
                                return; // the consumer is gone
                            }
                        }
                    })
                    .map_err(|e| Error::invalid("DataLoader::epoch", format!("cannot start a worker thread: {e}")))?;
                receivers.push(rx);
                handles.push(h);
            }
        }
        Ok(Epoch {
            plan,
            next: start,
            epoch,
            seed: self.cfg.seed,
            dataset: self.dataset.clone(),
            transform: self.transform.clone(),
            receivers,
            handles,
            stop,
        })
    }
}

/// One epoch's batches, in plan order. Dropping it mid-epoch stops and joins the workers.
pub struct Epoch {
    plan: Arc<Vec<Vec<usize>>>,
    next: usize,
    epoch: u64,
    seed: u64,
    dataset: Arc<dyn Dataset>,
    transform: Transform,
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Epoch {
    /// Number of batches in the epoch.
    pub fn num_batches(&self) -> usize {
        self.plan.len()
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let b = self.next;
        if b >= self.plan.len() {
            return None;
        }
        self.next += 1;
        if self.receivers.is_empty() {
            return Some(build_batch(self.dataset.as_ref(), &self.transform, self.seed, self.epoch, &self.plan[b]));
        }
        let rx = &self.receivers[b % self.receivers.len()];
        Some(
            rx.recv()
                .unwrap_or_else(|_| Err(Error::invalid("DataLoader", format!("worker for batch {b} exited early")))),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.plan.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers makes a worker blocked on a full channel return at once.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(usize);
    impl Dataset for Counting {
        fn len(&self) -> usize {
            self.0
        }
        fn get(&self, index: usize) -> Result<Utterance> {
            if index == 13 {
                return Err(Error::invalid("Counting::get", "item 13 is broken"));
            }
            Ok(Utterance {
                id: format!("u{index}"),
                audio: vec![index as f32; 1 + index % 7],
                sample_rate: 100,
                transcript: "ab".repeat(1 + index % 3),
            })
        }
        fn duration(&self, index: usize) -> Result<Option<f64>> {
            Ok(Some((1 + index % 7) as f64 / 100.0))
        }
    }

    fn loader(n: usize, workers: usize, order: Order) -> DataLoader {
        let cfg = LoaderConfig { batch_size: 4, order, seed: 5, num_workers: workers, prefetch: 2, drop_last: false };
        DataLoader::new(Arc::new(Counting(n)), raw_audio_transform(Vocab::new("ab").unwrap(), false), cfg).unwrap()
    }

    #[test]
    fn collate_pads_and_reports_lengths() {
        let b = loader(10, 0, Order::Sequential).epoch(0).unwrap().next().unwrap().unwrap();
        assert_eq!(b.inputs.dims(), &[4, 4]);
        assert_eq!(
            b.inputs.to_vec::<f32>().unwrap(),
            vec![0., 0., 0., 0., 1., 1., 0., 0., 2., 2., 2., 0., 3., 3., 3., 3.]
        );
        assert_eq!(b.input_lengths.to_vec::<i64>().unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(b.targets.dims(), &[4, 6]);
        assert_eq!(b.target_lengths.to_vec::<i64>().unwrap(), vec![2, 4, 6, 2]);
        assert_eq!(&b.targets.to_vec::<i64>().unwrap()[0..6], &[1, 2, 0, 0, 0, 0]);
        let feat =
            |n: usize, f: Option<usize>| Item { id: "x".into(), input: vec![1.0; n], feature_dim: f, target: vec![] };
        let b = collate(vec![feat(6, Some(3)), feat(3, Some(3))], vec![0, 1]).unwrap();
        assert_eq!(b.inputs.dims(), &[2, 2, 3]);
        assert_eq!(b.targets.dims(), &[2, 0]);
        assert!(collate(vec![feat(6, Some(3)), feat(3, None)], vec![0, 1]).is_err());
        assert!(collate(vec![feat(5, Some(3))], vec![0]).is_err());
        assert!(collate(vec![], vec![]).is_err());
    }

    #[test]
    fn errors_arrive_in_place_and_workers_match_inline() {
        for order in [Order::Shuffle, Order::SortedByDuration, Order::Bucketed { window_batches: 2 }] {
            let inline: Vec<_> = loader(30, 0, order).epoch(1).unwrap().collect();
            let threaded: Vec<_> = loader(30, 3, order).epoch(1).unwrap().collect();
            assert_eq!(inline.len(), threaded.len());
            let mut errors = 0;
            for (a, b) in inline.iter().zip(&threaded) {
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.indices, b.indices);
                        assert_eq!(a.inputs.to_vec::<f32>().unwrap(), b.inputs.to_vec::<f32>().unwrap());
                    }
                    (Err(a), Err(b)) => {
                        assert_eq!(a, b);
                        assert!(a.to_string().contains("item 13 is broken"));
                        errors += 1;
                    }
                    _ => panic!("inline and threaded disagree"),
                }
            }
            assert_eq!(errors, 1);
        }
    }

    #[test]
    fn panicking_transform_is_an_error_and_drop_stops_workers() {
        let tf: Transform = Arc::new(|u: Utterance, _: &mut Generator| {
            if u.id == "u5" {
                panic!("boom in user code");
            }
            Ok(Item { id: u.id, input: u.audio, feature_dim: None, target: vec![] })
        });
        let cfg = LoaderConfig { batch_size: 2, order: Order::Sequential, num_workers: 2, ..Default::default() };
        let l = DataLoader::new(Arc::new(Counting(12)), tf, cfg).unwrap();
        let r: Vec<_> = l.epoch(0).unwrap().collect();
        let e = r[2].as_ref().unwrap_err().to_string();
        assert!(e.contains("item 5") && e.contains("boom in user code"), "{e}");
        assert!(r.iter().enumerate().all(|(k, b)| k == 2 || b.is_ok()));
        let mut ep = l.epoch(1).unwrap();
        ep.next().unwrap().unwrap();
        drop(ep); // must return: workers blocked on full channels see the receivers go
    }

    #[test]
    fn sorted_and_bucketed_plans() {
        let l = loader(40, 0, Order::SortedByDuration);
        let p = l.batch_plan(0).unwrap();
        let d: Vec<usize> = p.iter().flatten().map(|&i| 1 + i % 7).collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        let l = loader(40, 0, Order::Bucketed { window_batches: 5 });
        let p0 = l.batch_plan(0).unwrap();
        assert_ne!(p0, l.batch_plan(1).unwrap());
        assert_eq!(p0, l.batch_plan(0).unwrap());
        let mut all: Vec<usize> = p0.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        let cfg = LoaderConfig { batch_size: 3, drop_last: true, ..Default::default() };
        let l = DataLoader::new(Arc::new(Counting(10)), raw_audio_transform(Vocab::english(), false), cfg).unwrap();
        assert_eq!(l.batch_plan(0).unwrap().len(), 3);
        assert!(DataLoader::new(
            Arc::new(Counting(1)),
            raw_audio_transform(Vocab::english(), false),
            LoaderConfig { batch_size: 0, ..Default::default() }
        )
        .is_err());
    }
}
