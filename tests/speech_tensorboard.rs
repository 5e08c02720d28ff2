//! TensorBoard event files: stapes writes and reads back its own files, reads a file written
//! by PyTorch's `torch.utils.tensorboard.SummaryWriter` (`tests/golden/tensorboard/`, made by
//! `tools/golden/tensorboard_events.py`), and bins histograms exactly as PyTorch does.
//!
//! `STAPES_TB_KEEP=DIR cargo test --test speech_tensorboard -- stapes_file` writes the stapes
//! file into DIR (which must hold no event file yet) and keeps it, for
//! `tools/golden/tensorboard_events.py --check DIR`, which reads it with TensorBoard itself.

use std::path::{Path, PathBuf};

use stapes::speech::tensorboard::{read_events, read_scalars, Event, Histogram, SummaryWriter, ValueKind};
use stapes::tensor::{DType, Device, Tensor};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stapes-speech-tensorboard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn golden_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tensorboard/events.out.tfevents.pytorch")
}

/// The finite values of the stapes `weights` histogram at `step` (as `stapes_values` in the
/// Python script: dyadic, so exact in f32 and in any summation order).
fn stapes_values(step: i64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..200).map(|i| (((i * 37) % 101) as f32 - 50.0) / 16.0 * (step + 1) as f32).collect();
    v.extend([2f32.powi(-30), 0.0]);
    v
}

/// The values of the PyTorch `weights` histogram (`histogram_values` in the Python script).
fn pytorch_histogram_values() -> Vec<f32> {
    let mut v: Vec<f32> = (0..101).map(|i| (i as f32 - 50.0) / 8.0).collect();
    v.extend([2f32.powi(-20), -(2f32.powi(-20)), 0.0, 0.0, 1024.0, -4096.5]);
    v
}

/// Checks the invariants of a histogram against the values it was made from.
fn check_histogram(h: &Histogram, values: &[f32]) {
    let finite: Vec<f64> = values.iter().filter(|v| v.is_finite()).map(|&v| v as f64).collect();
    assert_eq!(h.num, finite.len() as f64);
    assert_eq!(h.bucket.iter().sum::<f64>(), h.num, "bucket counts must add up to num");
    assert_eq!(h.bucket.len(), h.bucket_limit.len());
    assert_eq!(h.min, finite.iter().cloned().fold(f64::INFINITY, f64::min));
    assert_eq!(h.max, finite.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    assert_eq!(h.sum, finite.iter().sum::<f64>());
    assert_eq!(h.sum_squares, finite.iter().map(|x| x * x).sum::<f64>());
    assert!(h.bucket_limit.windows(2).all(|w| w[0] < w[1]), "bucket limits must increase");
    // Every value lies in a bucket [limit[i-1], limit[i]) with a nonzero count; recount them.
    let mut recount = vec![0.0; h.bucket.len()];
    for &x in &finite {
        let i = h.bucket_limit.partition_point(|&l| l <= x);
        assert!(i > 0 && i < h.bucket.len(), "value {x} outside the buckets");
        recount[i] += 1.0;
    }
    assert_eq!(recount, h.bucket);
}

fn scalar(event: &Event, tag: &str) -> Option<f32> {
    event.values.iter().find(|v| v.tag == tag).and_then(|v| match v.kind {
        ValueKind::Scalar(x) => Some(x),
        _ => None,
    })
}

#[test]
fn stapes_file_round_trip() {
    let keep = std::env::var_os("STAPES_TB_KEEP").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| temp_dir("round-trip"));
    if let Some(k) = &keep {
        if let Ok(entries) = std::fs::read_dir(k) {
            let old = entries.flatten().filter(|e| e.file_name().to_string_lossy().contains("tfevents")).count();
            assert_eq!(old, 0, "STAPES_TB_KEEP={} already holds event files; use a fresh directory", k.display());
        }
    }
    let path = {
        let mut w = SummaryWriter::new(&dir).unwrap();
        for step in 0..10i64 {
            w.add_scalar("train/loss", 1.0 / (step + 1) as f64, step).unwrap();
            w.add_scalar("train/lr", 0.1 * 0.9f64.powi(step as i32), step).unwrap();
            if [0, 5, 9].contains(&step) {
                let mut values = stapes_values(step);
                values.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
                assert_eq!(w.add_histogram("weights", &values, step).unwrap(), 3, "non-finite values skipped");
            }
        }
        w.add_text("notes", "hello from **stapes**", 9).unwrap();
        w.path().to_path_buf()
    }; // dropping the writer flushes it

    let events = read_events(&path).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert_eq!(events.len(), 1 + 20 + 3 + 1);
    let wall0 = events[0].wall_time;
    assert!(events.windows(2).all(|w| w[0].wall_time <= w[1].wall_time));
    assert!(events.iter().all(|e| e.wall_time - wall0 < 600.0));

    let scalars = read_scalars(&dir).unwrap();
    assert_eq!(scalars.keys().collect::<Vec<_>>(), ["train/loss", "train/lr"]);
    for (step, value) in &scalars["train/loss"] {
        assert_eq!(*value, (1.0 / (step + 1) as f64) as f32);
    }
    let steps: Vec<i64> = scalars["train/lr"].iter().map(|s| s.0).collect();
    assert_eq!(steps, (0..10).collect::<Vec<_>>());
    assert_eq!(scalars["train/lr"][9].1, (0.1 * 0.9f64.powi(9)) as f32);

    let histograms: Vec<(i64, &Histogram)> = events
        .iter()
        .flat_map(|e| {
            e.values.iter().filter_map(move |v| match &v.kind {
                ValueKind::Histogram(h) if v.tag == "weights" => Some((e.step, h)),
                _ => None,
            })
        })
        .collect();
    assert_eq!(histograms.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 5, 9]);
    for (step, h) in histograms {
        check_histogram(h, &stapes_values(step));
        assert_eq!(h.bucket[0], 0.0, "an empty bucket in front carries the left edge");
    }
    let text = events.last().unwrap();
    assert_eq!((text.step, &text.values[0].tag), (9, &"notes".to_string()));
    assert_eq!(text.values[0].kind, ValueKind::Text("hello from **stapes**".into()));

    if keep.is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn histogram_tensor_of_every_float_dtype() {
    let dir = temp_dir("tensor");
    let data: Vec<f32> = (0..24).map(|i| (i as f32 - 10.0) / 4.0).collect();
    let t = Tensor::from_vec(data.clone(), vec![2, 3, 4], &Device::Cpu).unwrap();
    let mut w = SummaryWriter::new(&dir).unwrap();
    for (step, dtype) in [DType::F32, DType::F64, DType::F16, DType::BF16].into_iter().enumerate() {
        // A transposed (non-contiguous) view: the histogram does not depend on the layout.
        let x = t.to_dtype(dtype).unwrap().transpose(0, 2).unwrap();
        assert_eq!(w.add_histogram_tensor("t", &x, step as i64).unwrap(), 0);
    }
    let ints = t.to_dtype(DType::I64).unwrap();
    let err = w.add_histogram_tensor("t", &ints, 9).unwrap_err().to_string();
    assert!(err.contains("add_histogram_tensor") && err.contains("I64"), "{err}");
    w.flush().unwrap();
    let events = read_events(w.path()).unwrap();
    assert_eq!(events.len(), 5);
    for e in &events[1..] {
        match &e.values[0].kind {
            // Quarters in [-2.5, 3.25] are exact in f16 and bf16 too.
            ValueKind::Histogram(h) => check_histogram(h, &data),
            other => panic!("{other:?}"),
        }
    }
    drop(w);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_the_pytorch_file() {
    let events = read_events(&golden_file()).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    let loss: Vec<(i64, f32, f64)> =
        events.iter().filter_map(|e| scalar(e, "loss").map(|x| (e.step, x, e.wall_time))).collect();
    let steps = [0i64, 1, 2, 3, 4, 1_000_000];
    assert_eq!(loss.len(), steps.len());
    for ((step, value, wall), want) in loss.iter().zip(steps) {
        assert_eq!(*step, want);
        assert_eq!(*value, (1.0 / (want + 1) as f64) as f32);
        assert_eq!(*wall, 1.7e9 + want as f64);
    }
    // A new-style scalar: a float tensor for the `scalars` plugin.
    let lr: Vec<(i64, f32)> = events.iter().filter_map(|e| scalar(e, "lr").map(|x| (e.step, x))).collect();
    assert_eq!(lr, [(3, 0.125)]);
    let text: Vec<(i64, &ValueKind)> = events
        .iter()
        .flat_map(|e| e.values.iter().filter(|v| v.tag == "notes/text_summary").map(move |v| (e.step, &v.kind)))
        .collect();
    assert_eq!(text, [(6, &ValueKind::Text("hello from PyTorch".into()))]);

    let scalars = read_scalars(golden_file().parent().unwrap()).unwrap();
    assert_eq!(scalars["loss"].len(), 6);
    assert_eq!(scalars["lr"], [(3, 0.125)]);

    // The histogram PyTorch wrote is exactly the one stapes makes from the same values.
    let torch: Vec<&Histogram> = events
        .iter()
        .flat_map(|e| e.values.iter())
        .filter_map(|v| match &v.kind {
            ValueKind::Histogram(h) if v.tag == "weights" => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(torch.len(), 1);
    let values = pytorch_histogram_values();
    check_histogram(torch[0], &values);
    let (ours, skipped) = Histogram::from_values(&values);
    assert_eq!(skipped, 0);
    assert_eq!(&ours, torch[0], "stapes bins differently from torch.utils.tensorboard");
}

#[test]
fn corrupt_copies_of_the_pytorch_file_are_errors() {
    let good = std::fs::read(golden_file()).unwrap();
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.out.tfevents.bad");
    // Flip one bit at a spread of positions: header, length CRC, data, data CRC.
    for i in (0..good.len()).step_by(97).chain([0, 8, 12, good.len() - 1]) {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        std::fs::write(&path, &bad).unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("CRC") && err.contains("events.out.tfevents.bad"), "byte {i}: {err}");
        assert!(read_scalars(&dir).is_err());
    }
    // Cutting the file between two records leaves a valid shorter file; any other cut is an error.
    let mut boundaries = vec![0];
    while *boundaries.last().unwrap() < good.len() {
        let at = *boundaries.last().unwrap();
        boundaries.push(at + 16 + u64::from_le_bytes(good[at..at + 8].try_into().unwrap()) as usize);
    }
    for cut in [1, 11, 12, 20, good.len() / 3, good.len() / 2, good.len() - 4, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        match read_events(&path) {
            Ok(events) => assert_eq!(boundaries.iter().position(|&b| b == cut), Some(events.len()), "cut at {cut}"),
            Err(e) => assert!(e.to_string().contains("truncated"), "cut at {cut}: {e}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
