//! Datasets and the DataLoader over corpora written to disk by the synthetic digit
//! synthesizer: manifests (JSONL, CSV), the LibriSpeech layout, exactly-once delivery,
//! deterministic order, error surfacing and memory bounded independently of corpus size.
//!
//! The tests in this file run one at a time (a shared lock), so that the peak-memory
//! measurement sees only its own allocations.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use stapes::speech::audio::load_audio;
use stapes::speech::data::{
    raw_audio_transform, DataLoader, Dataset, Item, LibriSpeech, LoaderConfig, ManifestDataset, Order, Transform,
    Utterance, Vocab,
};
use stapes::speech::perturb::SpeedPerturb;
use stapes::speech::synth::{SynthConfig, SyntheticDigits};
use stapes::tensor::Generator;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh empty folder under the system temp dir, unique to this process and name.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stapes-speech-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Short one-word utterances (about 0.4–0.7 s).
fn short_corpus(seed: u64, n: usize) -> SyntheticDigits {
    SyntheticDigits::new(SynthConfig {
        seed,
        num_utterances: n,
        min_words: 1,
        max_words: 2,
        edge_silence: (0.02, 0.05),
        ..Default::default()
    })
    .unwrap()
}

fn digits_vocab() -> Vocab {
    Vocab::from_transcripts(stapes::speech::synth::DIGITS.iter().copied().chain([" "]))
}

fn config(order: Order, seed: u64, workers: usize) -> LoaderConfig {
    LoaderConfig { batch_size: 8, order, seed, num_workers: workers, prefetch: 4, drop_last: false }
}

#[test]
fn manifest_corpus_round_trip_and_exactly_once() {
    let _g = serial();
    let dir = temp_dir("once");
    let synth = short_corpus(11, 200);
    let manifest = synth.write_corpus(&dir).unwrap();
    let ds = Arc::new(ManifestDataset::open(&manifest).unwrap());
    assert_eq!(ds.len(), 200);
    // What is on disk is the synthesizer's output, quantised to 16 bits.
    for i in [0, 57, 199] {
        let disk = ds.get(i).unwrap();
        let mem = synth.get(i).unwrap();
        assert_eq!(disk.id, mem.id);
        assert_eq!(disk.transcript, mem.transcript);
        assert_eq!(disk.audio.len(), mem.audio.len());
        let err = disk.audio.iter().zip(&mem.audio).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        // Written as round(x * 32767), read as q / 32768: at most 1.5 / 32767 apart.
        assert!(err <= 1.5 / 32767.0, "{err}");
        assert!((ds.duration(i).unwrap().unwrap() - mem.audio.len() as f64 / 16000.0).abs() < 1e-9);
    }
    let vocab = digits_vocab();
    for order in [Order::Shuffle, Order::Bucketed { window_batches: 4 }, Order::SortedByDuration] {
        for workers in [0, 2] {
            let loader =
                DataLoader::new(ds.clone(), raw_audio_transform(vocab.clone(), false), config(order, 3, workers))
                    .unwrap();
            let mut seen = vec![0usize; 200];
            for batch in loader.epoch(0).unwrap() {
                let b = batch.unwrap();
                let tl = b.target_lengths.to_vec::<i64>().unwrap();
                let t = b.targets.to_vec::<i64>().unwrap();
                let s = b.targets.dims()[1];
                let il = b.input_lengths.to_vec::<i64>().unwrap();
                assert_eq!(b.inputs.dims()[0], b.indices.len());
                for (k, &i) in b.indices.iter().enumerate() {
                    seen[i] += 1;
                    let text = vocab.decode(&t[k * s..k * s + tl[k] as usize]).unwrap();
                    assert_eq!(text, ds.entries()[i].transcript);
                    assert_eq!(il[k] as f64 / 16000.0, ds.duration(i).unwrap().unwrap());
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{order:?}/{workers}: not exactly once");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn order_is_deterministic_per_seed_and_epoch() {
    let _g = serial();
    let ds: Arc<dyn Dataset> = Arc::new(short_corpus(5, 64));
    // A transform with randomness: speed perturbation drawn from the per-item generator.
    let vocab = digits_vocab();
    let tf: Transform = Arc::new(move |u: Utterance, g: &mut Generator| {
        let (audio, _) = SpeedPerturb::default().apply(&u.audio, g)?;
        Ok(Item { id: u.id, input: audio, feature_dim: None, target: vocab.encode(&u.transcript)? })
    });
    let run = |seed: u64, epoch: u64, workers: usize| -> Vec<(Vec<usize>, Vec<f32>)> {
        let l = DataLoader::new(ds.clone(), tf.clone(), config(Order::Shuffle, seed, workers)).unwrap();
        l.epoch(epoch).unwrap().map(|b| b.unwrap()).map(|b| (b.indices, b.inputs.to_vec::<f32>().unwrap())).collect()
    };
    let a = run(1, 0, 2);
    assert_eq!(a, run(1, 0, 2));
    assert_eq!(a, run(1, 0, 0), "worker count must not change the epoch");
    assert_eq!(a, run(1, 0, 3));
    let order = |r: &[(Vec<usize>, Vec<f32>)]| r.iter().flat_map(|b| b.0.clone()).collect::<Vec<_>>();
    assert_ne!(order(&a), order(&run(2, 0, 2)), "another seed, another order");
    assert_ne!(order(&a), order(&run(1, 1, 2)), "another epoch, another order");
}

#[test]
fn csv_manifest_and_errors_surface() {
    let _g = serial();
    let dir = temp_dir("csv");
    let synth = short_corpus(2, 6);
    synth.write_corpus(&dir).unwrap();
    let ids: Vec<String> = (0..6).map(|i| synth.get(i).unwrap().id).collect();
    let mut csv = String::from("id,audio,text,duration\n");
    for (i, id) in ids.iter().enumerate() {
        let dur = if i == 2 { String::new() } else { "0.5".into() };
        csv.push_str(&format!("{id},wav/{id}.wav,\"say, \"\"{i}\"\"\",{dur}\n"));
    }
    csv.push_str("missing,wav/nope.wav,gone,0.5\n");
    std::fs::write(dir.join("m.csv"), &csv).unwrap();
    let ds = ManifestDataset::open(dir.join("m.csv")).unwrap();
    assert_eq!(ds.len(), 7);
    assert_eq!(ds.entries()[3].transcript, "say, \"3\"");
    assert_eq!(ds.duration(0).unwrap(), Some(0.5));
    // No duration in the manifest: read from the WAV header.
    let real = synth.get(2).unwrap().audio.len() as f64 / 16000.0;
    assert!((ds.duration(2).unwrap().unwrap() - real).abs() < 1e-9);
    let e = ds.get(6).unwrap_err().to_string();
    assert!(e.contains("nope.wav"), "{e}");
    // The loader hands the error to the consumer at that batch and carries on.
    let tf: Transform = Arc::new(|u: Utterance, _: &mut Generator| {
        Ok(Item { id: u.id, input: u.audio, feature_dim: None, target: vec![] })
    });
    let cfg = LoaderConfig { batch_size: 2, order: Order::Sequential, num_workers: 2, ..Default::default() };
    let res: Vec<_> = DataLoader::new(Arc::new(ds), tf, cfg).unwrap().epoch(0).unwrap().collect();
    assert_eq!(res.len(), 4);
    assert!(res[..3].iter().all(|r| r.is_ok()));
    assert!(res[3].as_ref().unwrap_err().to_string().contains("nope.wav"));
    // Malformed manifests name the file and line.
    std::fs::write(dir.join("bad.csv"), "audio,text\nx.wav,hi,extra\n").unwrap();
    let e = ManifestDataset::open(dir.join("bad.csv")).unwrap_err().to_string();
    assert!(e.contains("bad.csv") && e.contains("line 2"), "{e}");
    std::fs::write(dir.join("bad.jsonl"), "{\"audio\": \"a.wav\", \"text\": \"x\"}\n{\"text\": \"y\"}\n").unwrap();
    let e = ManifestDataset::open(dir.join("bad.jsonl")).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("line 2"), "{e}");
    std::fs::write(dir.join("bad2.jsonl"), "not json\n").unwrap();
    assert!(ManifestDataset::open(dir.join("bad2.jsonl")).is_err());
    assert!(ManifestDataset::open(dir.join("m.txt")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn librispeech_layout() {
    let _g = serial();
    let root = temp_dir("libri");
    let flac = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio/signal.flac");
    let chapter = root.join("19/198");
    std::fs::create_dir_all(&chapter).unwrap();
    let other = root.join("103/1240");
    std::fs::create_dir_all(&other).unwrap();
    for id in ["19-198-0001", "19-198-0000"] {
        std::fs::copy(&flac, chapter.join(format!("{id}.flac"))).unwrap();
    }
    std::fs::copy(&flac, other.join("103-1240-0000.flac")).unwrap();
    std::fs::write(chapter.join("19-198.trans.txt"), "19-198-0000 NORTHANGER ABBEY\n19-198-0001 THIS LITTLE WORK\n")
        .unwrap();
    std::fs::write(other.join("103-1240.trans.txt"), "103-1240-0000 CHAPTER ONE\n").unwrap();
    let ls = LibriSpeech::open(&root).unwrap();
    let ids: Vec<&str> = ls.entries().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["103-1240-0000", "19-198-0000", "19-198-0001"]);
    let u = ls.get(1).unwrap();
    assert_eq!(u.transcript, "NORTHANGER ABBEY");
    assert_eq!(u.sample_rate, 16000);
    assert_eq!(u.audio, load_audio(&flac, true).unwrap().samples);
    assert_eq!(ls.duration(0).unwrap(), Some(0.5));
    let enc = raw_audio_transform(Vocab::english(), true)(u, &mut Generator::new(0)).unwrap();
    assert_eq!(Vocab::english().decode(&enc.target).unwrap(), "northanger abbey");
    // A transcript whose audio is missing is an error naming the file.
    std::fs::write(other.join("103-1240.trans.txt"), "103-1240-0000 CHAPTER ONE\n103-1240-0001 GONE\n").unwrap();
    let e = LibriSpeech::open(&root).unwrap_err().to_string();
    assert!(e.contains("103-1240-0001.flac"), "{e}");
    std::fs::write(other.join("103-1240.trans.txt"), "no-space-here\n").unwrap();
    assert!(LibriSpeech::open(&root).unwrap_err().to_string().contains("line 1"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Peak resident memory (VmHWM) in KiB.
fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets VmHWM to the current resident size (Linux `clear_refs` value 5).
fn reset_hwm() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS through /proc/self/clear_refs");
}

/// Runs one epoch, checking that items made by the transform never run ahead of the consumer
/// by more than the loader's bound; returns the peak RSS growth in KiB over the epoch.
fn epoch_peak_growth(ds: Arc<dyn Dataset>, workers: usize, prefetch: usize) -> (u64, usize) {
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let tf: Transform = Arc::new(move |u: Utterance, _: &mut Generator| {
        m.fetch_add(1, Ordering::SeqCst);
        Ok(Item { id: u.id, input: u.audio, feature_dim: None, target: vec![1, 2, 3] })
    });
    let bs = 8;
    let cfg = LoaderConfig {
        batch_size: bs,
        order: Order::Shuffle,
        seed: 9,
        num_workers: workers,
        prefetch,
        drop_last: false,
    };
    let loader = DataLoader::new(ds, tf, cfg).unwrap();
    let bound = workers * (prefetch.div_ceil(workers) + 1) * bs;
    let mut consumed = 0;
    let mut max_ahead = 0;
    let before = vm_hwm_kib();
    for b in loader.epoch(0).unwrap() {
        let b = b.unwrap();
        consumed += b.indices.len();
        std::thread::sleep(std::time::Duration::from_micros(200)); // a consumer that trains
        let ahead = made.load(Ordering::SeqCst) - consumed;
        max_ahead = max_ahead.max(ahead);
        assert!(ahead <= bound, "{ahead} items made ahead of the consumer, bound {bound}");
    }
    (vm_hwm_kib().saturating_sub(before), max_ahead)
}

#[test]
fn memory_is_bounded_independently_of_corpus_size() {
    let _g = serial();
    let dir = temp_dir("mem");
    let small = ManifestDataset::open(short_corpus(21, 200).write_corpus(dir.join("small")).unwrap()).unwrap();
    let large = ManifestDataset::open(short_corpus(22, 2000).write_corpus(dir.join("large")).unwrap()).unwrap();
    reset_hwm();
    let (g_small, a_small) = epoch_peak_growth(Arc::new(small), 2, 4);
    reset_hwm();
    let (g_large, a_large) = epoch_peak_growth(Arc::new(large), 2, 4);
    eprintln!(
        "peak RSS growth: 200 utterances {g_small} KiB, 2000 utterances {g_large} KiB; items ahead {a_small}/{a_large}"
    );
    // The 2000-utterance corpus holds ~26 MB of audio; a loader that kept it would grow by that.
    assert!(g_large < g_small + 4096, "peak grew from {g_small} KiB to {g_large} KiB with a 10x corpus");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loader_throughput_with_workers() {
    let _g = serial();
    let dir = temp_dir("speed");
    let ds: Arc<dyn Dataset> =
        Arc::new(ManifestDataset::open(short_corpus(31, 128).write_corpus(&dir).unwrap()).unwrap());
    let vocab = digits_vocab();
    // Load + speed perturbation (0.9/1.0/1.1: a sinc resampling per item) + target encoding.
    let tf: Transform = Arc::new(move |u: Utterance, g: &mut Generator| {
        let (audio, _) = SpeedPerturb::default().apply(&u.audio, g)?;
        Ok(Item { id: u.id, input: audio, feature_dim: None, target: vocab.encode(&u.transcript)? })
    });
    let mut reference: Option<Vec<Vec<f32>>> = None;
    // A consumer that only takes batches, then one that "trains" 20 ms per batch (a sleep, so
    // it uses no CPU): with workers, loading overlaps the training step.
    for train_ms in [0u64, 20] {
        for workers in [0, 1, 2, 4] {
            let cfg = LoaderConfig {
                batch_size: 16,
                order: Order::Shuffle,
                seed: 4,
                num_workers: workers,
                prefetch: 4,
                drop_last: false,
            };
            let loader = DataLoader::new(ds.clone(), tf.clone(), cfg).unwrap();
            let t0 = Instant::now();
            let mut batches = vec![];
            for b in loader.epoch(0).unwrap() {
                batches.push(b.unwrap().inputs.to_vec::<f32>().unwrap());
                std::thread::sleep(std::time::Duration::from_millis(train_ms));
            }
            let secs = t0.elapsed().as_secs_f64();
            eprintln!(
                "loader throughput: consumer {train_ms} ms/batch, {workers} workers: {} batches of 16 in {secs:.3} s = {:.1} batches/s",
                batches.len(),
                batches.len() as f64 / secs
            );
            match &reference {
                None => reference = Some(batches),
                Some(r) => assert!(r == &batches, "{workers} workers delivered different batches"),
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
