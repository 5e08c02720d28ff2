//! TensorBoard event files: a [`SummaryWriter`] for scalars, histograms and text, as
//! `torch.utils.tensorboard.SummaryWriter` writes them, and a reader ([`read_events`],
//! [`read_scalars`]) for tests and for scripts that want the numbers back.
//!
//! An event file is a sequence of TFRecords (the `record` submodule: the framing, over the
//! `crc` crate's CRC32C), each holding one `tensorflow.Event` protocol buffer (the `proto`
//! submodule: `prost` messages). The subset of the schema used, with the field numbers of
//! TensorFlow's `event.proto`, `summary.proto`, `tensor.proto` and `tensor_shape.proto` (as
//! TensorBoard carries them in `tensorboard/compat/proto/`):
//!
//! ```text
//! Event          { double wall_time = 1; int64 step = 2;
//!                  oneof { string file_version = 3; Summary summary = 5; ... } }
//! Summary        { repeated Value value = 1; }
//! Summary.Value  { string tag = 1; SummaryMetadata metadata = 9;
//!                  oneof { float simple_value = 2; HistogramProto histo = 5;
//!                          TensorProto tensor = 8; ... } }
//! HistogramProto { double min = 1; double max = 2; double num = 3; double sum = 4;
//!                  double sum_squares = 5; repeated double bucket_limit = 6 [packed];
//!                  repeated double bucket = 7 [packed]; }
//! SummaryMetadata { PluginData plugin_data = 1; }   PluginData { string plugin_name = 1; bytes content = 2; }
//! TensorProto    { DataType dtype = 1; TensorShapeProto tensor_shape = 2; repeated float float_val = 5;
//!                  repeated double double_val = 6; repeated bytes string_val = 8; }
//! TensorShapeProto { repeated Dim dim = 2; }        Dim { int64 size = 1; }
//! ```
//!
//! The first record of every file is an `Event` with `file_version = "brain.Event:2"`.
//! Scalars are written as `simple_value` (what PyTorch writes by default), histograms as
//! `HistogramProto` with PyTorch's default ("tensorflow") buckets, text as a one-element
//! `DT_STRING` tensor tagged for the `text` plugin. Each of these events encodes to the bytes
//! PyTorch writes for it (a unit test checks this against a file PyTorch wrote). [`Histogram`]
//! is the `HistogramProto` message itself.
//!
//! ```no_run
//! use std::path::Path;
//! use stapes_speech::tensorboard::{read_scalars, SummaryWriter};
//!
//! let mut writer = SummaryWriter::new(Path::new("runs/exp1"))?;
//! for step in 0..100 {
//!     writer.add_scalar("train/loss", 1.0 / (step + 1) as f64, step)?;
//! }
//! writer.add_histogram("weights/fc", &[0.1, -0.2, 0.3], 100)?;
//! writer.flush()?;
//! let scalars = read_scalars(Path::new("runs/exp1"))?;
//! assert_eq!(scalars["train/loss"].len(), 100);
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

mod proto;
mod record;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stapes_tensor::{DType, Device, Error, Result, Tensor};

use prost::Message;

use proto::{
    DataType, EventWhat, PluginData, Summary, SummaryMetadata, SummaryValue, SummaryValueData, TensorProto,
    TensorShapeDim, TensorShapeProto,
};

pub use proto::HistogramProto as Histogram;

/// The `file_version` of the first event in every file, as TensorFlow and PyTorch write it.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Records reach the file at least this often (checked when an event is added), on
/// [`SummaryWriter::flush`] and when the writer is dropped.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Writes one TensorBoard event file in a log directory.
///
/// Each writer owns a new file named like TensorFlow's,
/// `events.out.tfevents.<unix seconds>.<hostname>.<pid>.<counter>`, so several writers (in
/// one process or several) never share a file. Events are buffered; see [`FLUSH_INTERVAL`].
pub struct SummaryWriter {
    log_dir: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    last_flush: Instant,
}

/// Distinguishes the files of writers created in the same second by one process.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl SummaryWriter {
    /// Creates `log_dir` (and its parents) if needed, a new event file in it, and writes the
    /// file-version event. Errors name the directory or file that could not be created.
    pub fn new(log_dir: &Path) -> Result<SummaryWriter> {
        const OP: &str = "SummaryWriter::new";
        std::fs::create_dir_all(log_dir).map_err(|e| Error::io(OP, log_dir, e))?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let host = hostname();
        let pid = std::process::id();
        let (path, file) = loop {
            let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = log_dir.join(format!("events.out.tfevents.{secs:010}.{host}.{pid}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                // Another writer (another process with a recycled pid) took this name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(OP, &path, e)),
            }
        };
        let mut writer = SummaryWriter {
            log_dir: log_dir.to_path_buf(),
            path,
            file: BufWriter::new(file),
            last_flush: Instant::now(),
        };
        writer.write_event(OP, 0, EventWhat::FileVersion(FILE_VERSION.to_string()))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The directory this writer logs to.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The event file this writer writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs a scalar (stored as a 32-bit float `simple_value`, as TensorBoard's scalar
    /// dashboard reads it; NaN and infinities are stored as they are).
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        let value = summary_value(tag, None, SummaryValueData::SimpleValue(value as f32));
        self.write_event("SummaryWriter::add_scalar", step, value)
    }

    /// Logs a histogram of `values` (see [`Histogram::from_values`] for the buckets). NaN and
    /// infinite values are counted and left out; the count is returned. A slice with no finite
    /// value gives an empty histogram (`num = 0`, no buckets), which TensorBoard shows as empty.
    pub fn add_histogram(&mut self, tag: &str, values: &[f32], step: i64) -> Result<usize> {
        let (histogram, skipped) = Histogram::from_values(values);
        let value = summary_value(tag, None, SummaryValueData::Histo(histogram));
        self.write_event("SummaryWriter::add_histogram", step, value)?;
        Ok(skipped)
    }

    /// [`add_histogram`](Self::add_histogram) of a float tensor of any dtype and shape (its
    /// elements are converted to f32). Integer tensors are refused with `UnsupportedDType`.
    pub fn add_histogram_tensor(&mut self, tag: &str, tensor: &Tensor, step: i64) -> Result<usize> {
        const OP: &str = "SummaryWriter::add_histogram_tensor";
        if !tensor.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: tensor.dtype(),
                msg: "histograms are made from float tensors (f16, bf16, f32, f64)",
            });
        }
        let values = tensor.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec::<f32>()?;
        self.add_histogram(tag, &values, step)
    }

    /// Logs a text for TensorBoard's text dashboard (which renders it as Markdown): a
    /// one-element `DT_STRING` tensor whose metadata names the `text` plugin. The tag is used
    /// as given (PyTorch appends `/text_summary` to its tags).
    pub fn add_text(&mut self, tag: &str, text: &str, step: i64) -> Result<()> {
        self.write_event("SummaryWriter::add_text", step, text_value(tag, text))
    }

    /// Writes all buffered events to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io("SummaryWriter::flush", &self.path, e))?;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Appends an `Event` at the current wall time holding `what`.
    fn write_event(&mut self, op: &'static str, step: i64, what: EventWhat) -> Result<()> {
        let event = proto::Event { wall_time: wall_time(), step, what: Some(what) }.encode_to_vec();
        let mut record = Vec::with_capacity(event.len() + 16);
        record::write_record(&mut record, &event);
        self.file.write_all(&record).map_err(|e| Error::io(op, &self.path, e))?;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        // Nothing can report an error from drop; call `flush` first to see one.
        let _ = self.file.flush();
    }
}

/// The machine's name for event file names: `/etc/hostname`, else `localhost`, with any
/// character other than ASCII letters, digits, `-`, `_` and `.` replaced by `_`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() {
        return "localhost".to_string();
    }
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The `what` of an `Event` holding a `Summary` with one value.
fn summary_value(tag: &str, metadata: Option<SummaryMetadata>, value: SummaryValueData) -> EventWhat {
    EventWhat::Summary(Summary { value: vec![SummaryValue { tag: tag.to_string(), metadata, value: Some(value) }] })
}

/// The `what` of an `Event` holding a text for the `text` plugin, as PyTorch writes it: a
/// one-element `DT_STRING` tensor.
fn text_value(tag: &str, text: &str) -> EventWhat {
    let metadata =
        SummaryMetadata { plugin_data: Some(PluginData { plugin_name: "text".to_string(), content: Vec::new() }) };
    let tensor = TensorProto {
        dtype: DataType::String.into(),
        tensor_shape: Some(TensorShapeProto { dim: vec![TensorShapeDim { size: 1 }] }),
        string_val: vec![text.as_bytes().to_vec()],
        ..TensorProto::default()
    };
    summary_value(tag, Some(metadata), SummaryValueData::Tensor(tensor))
}

/// The bucket edges of PyTorch's (and TensorFlow's) default histogram: `0`, then
/// `±1e-12 · 1.1^k` for every such magnitude below `1e20`, sorted (1549 edges). Computed by
/// repeated multiplication exactly as `torch.utils.tensorboard.SummaryWriter.__init__` does,
/// so that the edges are bit-identical to PyTorch's.
fn default_edges() -> &'static [f64] {
    static EDGES: OnceLock<Vec<f64>> = OnceLock::new();
    EDGES.get_or_init(|| {
        let mut positive = Vec::new();
        let mut v = 1e-12f64;
        while v < 1e20 {
            positive.push(v);
            v *= 1.1;
        }
        let mut edges: Vec<f64> = positive.iter().rev().map(|v| -v).collect();
        edges.push(0.0);
        edges.extend_from_slice(&positive);
        edges
    })
}

impl Histogram {
    /// The histogram of the finite `values` and the number of NaN/infinite values left out.
    ///
    /// The buckets are those of `torch.utils.tensorboard` (`bins="tensorflow"`), so a stapes
    /// histogram looks like a PyTorch one: exponentially spaced edges `±1e-12 · 1.1^k` and 0
    /// (about 10% wide, fine near zero and coarse far from it), trimmed to the buckets from the
    /// first to the last non-empty one, with an empty bucket in front whose right edge is the
    /// left edge of the first non-empty one (TensorBoard draws bucket `i` from
    /// `bucket_limit[i-1]` to `bucket_limit[i]`). Finite values beyond `±1e20`, which numpy
    /// would drop, are kept in an outermost bucket that reaches to `min` or `max`.
    pub fn from_values(values: &[f32]) -> (Histogram, usize) {
        let edges = default_edges();
        // Slot k holds the values x with edges[k-1] <= x < edges[k] (slot 0: below edges[0],
        // slot edges.len(): at or above the last edge).
        let mut counts = vec![0u64; edges.len() + 1];
        let (mut min, mut max, mut sum, mut sum_squares) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0.0f64);
        let mut skipped = 0usize;
        for &v in values {
            if !v.is_finite() {
                skipped += 1;
                continue;
            }
            let x = v as f64;
            min = min.min(x);
            max = max.max(x);
            sum += x;
            sum_squares += x * x;
            counts[edges.partition_point(|&e| e <= x)] += 1;
        }
        let num = values.len() - skipped;
        let (Some(first), Some(last)) = (counts.iter().position(|&c| c > 0), counts.iter().rposition(|&c| c > 0))
        else {
            return (Histogram::default(), skipped);
        };
        let left_edge = |k: usize| if k == 0 { min } else { edges[k - 1] };
        let right_edge = |k: usize| if k == edges.len() { max } else { edges[k] };
        let mut bucket_limit = vec![left_edge(first)];
        let mut bucket = vec![0.0];
        for (k, &count) in counts.iter().enumerate().take(last + 1).skip(first) {
            bucket_limit.push(right_edge(k));
            bucket.push(count as f64);
        }
        let histogram = Histogram { min, max, num: num as f64, sum, sum_squares, bucket_limit, bucket };
        (histogram, skipped)
    }
}

/// One event read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch when the event was written.
    pub wall_time: f64,
    /// The training step it belongs to.
    pub step: i64,
    /// Set on the first event of a file (`"brain.Event:2"`).
    pub file_version: Option<String>,
    /// The summary values (none for the file-version event).
    pub values: Vec<Value>,
}

/// One tagged summary value.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// The series name, e.g. `train/loss`.
    pub tag: String,
    /// What the value holds.
    pub kind: ValueKind,
}

/// The kinds of summary value the reader understands.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// A scalar: `simple_value`, or a one-element float/double tensor for the `scalars`
    /// plugin (PyTorch's `new_style` scalars).
    Scalar(f32),
    /// A histogram (`histo`).
    Histogram(Histogram),
    /// A text for the `text` plugin (the first string of its tensor; invalid UTF-8 is
    /// replaced with U+FFFD).
    Text(String),
    /// Anything else (images, audio, other plugins' tensors).
    Other,
}

/// Reads every event of one event file, checking both CRCs of every record. A truncated or
/// corrupt record, or an `Event` that is not valid protobuf, is an `Error::Io` naming the file,
/// the record and its byte offset. (TensorBoard itself skips a truncated last record, which a
/// file still being written can have; this reader reports it.)
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    const OP: &str = "read_events";
    let bytes = std::fs::read(path).map_err(|e| Error::io(OP, path, e))?;
    let records = record::split_records(&bytes).map_err(|e| Error::io(OP, path, e))?;
    records
        .iter()
        .enumerate()
        .map(|(i, &(offset, data))| {
            decode_event(data)
                .map_err(|e| Error::io(OP, path, format!("record {i}: bad Event (record at byte {offset}): {e}")))
        })
        .collect()
}

/// All scalar series of the event files (names containing `tfevents`) directly in `dir`, by
/// tag: `(step, value)` pairs in the order they were written, files taken in name order
/// (which is creation-time order for files named by [`SummaryWriter`], TensorFlow or
/// PyTorch). Subdirectories, which TensorBoard shows as separate runs, are not read.
pub fn read_scalars(dir: &Path) -> Result<BTreeMap<String, Vec<(i64, f32)>>> {
    const OP: &str = "read_scalars";
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(OP, dir, e))? {
        let entry = entry.map_err(|e| Error::io(OP, dir, e))?;
        let is_events = entry.file_name().to_string_lossy().contains("tfevents");
        if is_events && entry.file_type().map_err(|e| Error::io(OP, entry.path(), e))?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    let mut scalars: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for file in files {
        for event in read_events(&file)? {
            for value in event.values {
                if let ValueKind::Scalar(x) = value.kind {
                    scalars.entry(value.tag).or_default().push((event.step, x));
                }
            }
        }
    }
    Ok(scalars)
}

/// The [`Event`] encoded in one record's data.
fn decode_event(data: &[u8]) -> std::result::Result<Event, String> {
    let event = proto::Event::decode(data).map_err(|e| e.to_string())?;
    let mut decoded = Event { wall_time: event.wall_time, step: event.step, file_version: None, values: Vec::new() };
    match event.what {
        Some(EventWhat::FileVersion(version)) => decoded.file_version = Some(version),
        Some(EventWhat::Summary(summary)) => {
            decoded.values = summary.value.into_iter().map(decode_value).collect::<std::result::Result<_, _>>()?;
        }
        None => {}
    }
    Ok(decoded)
}

/// The [`Value`] a `Summary.Value` holds, by its oneof and, for tensors, its plugin.
fn decode_value(value: SummaryValue) -> std::result::Result<Value, String> {
    let plugin_name = value.metadata.and_then(|m| m.plugin_data).map(|p| p.plugin_name);
    let kind = match value.value {
        Some(SummaryValueData::SimpleValue(x)) => ValueKind::Scalar(x),
        Some(SummaryValueData::Histo(h)) if h.bucket_limit.len() != h.bucket.len() => {
            return Err(format!(
                "value {:?}: HistogramProto: {} bucket limits but {} bucket counts",
                value.tag,
                h.bucket_limit.len(),
                h.bucket.len()
            ));
        }
        Some(SummaryValueData::Histo(h)) => ValueKind::Histogram(h),
        Some(SummaryValueData::Tensor(t)) => match plugin_name.as_deref() {
            Some("text") if !t.string_val.is_empty() => {
                ValueKind::Text(String::from_utf8_lossy(&t.string_val[0]).into_owned())
            }
            Some("scalars") if t.float_val.len() == 1 => ValueKind::Scalar(t.float_val[0]),
            Some("scalars") if t.double_val.len() == 1 => ValueKind::Scalar(t.double_val[0] as f32),
            _ => ValueKind::Other,
        },
        None => ValueKind::Other,
    };
    Ok(Value { tag: value.tag, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stapes-tensorboard-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn default_edges_match_pytorch() {
        let edges = default_edges();
        // 774 positive edges (1e-12 * 1.1^k < 1e20 for k < 774), as many negative ones, and 0.
        assert_eq!(edges.len(), 1549);
        assert_eq!(edges[774], 0.0);
        assert_eq!(edges[775], 1e-12);
        assert_eq!(edges[773], -1e-12);
        assert!(edges.windows(2).all(|w| w[0] < w[1]));
        assert!(*edges.last().unwrap() < 1e20 && edges.last().unwrap() * 1.1 >= 1e20);
    }

    #[test]
    fn histogram_buckets() {
        let values = [0.5f32, 0.5, -0.25, 3.0, f32::NAN, f32::INFINITY, 0.0];
        let (h, skipped) = Histogram::from_values(&values);
        assert_eq!(skipped, 2);
        assert_eq!((h.min, h.max, h.num, h.sum), (-0.25, 3.0, 5.0, 3.75));
        assert_eq!(h.sum_squares, 0.25 + 0.25 + 0.0625 + 9.0);
        assert_eq!(h.bucket.iter().sum::<f64>(), 5.0);
        assert_eq!(h.bucket[0], 0.0);
        assert_eq!(*h.bucket.last().unwrap(), 1.0);
        // Every value lies in its bucket [limit[i-1], limit[i]).
        for &v in values.iter().filter(|v| v.is_finite()) {
            let x = v as f64;
            let i = h.bucket_limit.partition_point(|&l| l <= x);
            assert!(i > 0 && i < h.bucket.len() && h.bucket[i] > 0.0, "{x}");
        }
        assert!(h.bucket_limit.windows(2).all(|w| w[0] < w[1]));

        let (empty, skipped) = Histogram::from_values(&[f32::NAN, f32::NEG_INFINITY]);
        assert_eq!((skipped, empty.num, empty.bucket.len()), (2, 0.0, 0));
        let (empty, skipped) = Histogram::from_values(&[]);
        assert_eq!((skipped, empty.num, empty.bucket.len()), (0, 0.0, 0));

        // Values beyond the last edge (1e20) are kept, in a bucket that ends at max.
        let (h, _) = Histogram::from_values(&[1.0, 3e30, -2e25]);
        assert_eq!(h.num, 3.0);
        assert_eq!(h.bucket.iter().sum::<f64>(), 3.0);
        assert_eq!((h.bucket_limit[0], *h.bucket_limit.last().unwrap()), (-2e25f32 as f64, 3e30f32 as f64));
    }

    #[test]
    fn write_then_read_every_kind() {
        let dir = temp_dir("kinds");
        let path;
        {
            let mut w = SummaryWriter::new(&dir).unwrap();
            path = w.path().to_path_buf();
            w.add_scalar("loss", 0.5, 3).unwrap();
            w.add_scalar("neg_step", -1.0, -7).unwrap();
            assert_eq!(w.add_histogram("h", &[1.0, 2.0, f32::NAN], 4).unwrap(), 1);
            w.add_text("note", "hello *world*", 5).unwrap();
        } // drop flushes
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
        assert!(events[0].values.is_empty());
        let now = wall_time();
        assert!(events.iter().all(|e| e.wall_time > now - 60.0 && e.wall_time <= now));
        assert_eq!(events[1].values, [Value { tag: "loss".into(), kind: ValueKind::Scalar(0.5) }]);
        assert_eq!((events[1].step, events[2].step), (3, -7));
        match &events[3].values[0].kind {
            ValueKind::Histogram(h) => assert_eq!((h.num, h.sum, h.bucket.iter().sum::<f64>()), (2.0, 3.0, 2.0)),
            other => panic!("{other:?}"),
        }
        assert_eq!(events[4].values[0].kind, ValueKind::Text("hello *world*".into()));
        let scalars = read_scalars(&dir).unwrap();
        assert_eq!(scalars["loss"], [(3, 0.5)]);
        assert_eq!(scalars["neg_step"], [(-7, -1.0)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_encode_to_the_bytes_pytorch_writes() {
        // `tests/golden/tensorboard/`, written by PyTorch's SummaryWriter through the official
        // protobuf encoder (`tools/golden/tensorboard_events.py`).
        let golden =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/tensorboard/events.out.tfevents.pytorch");
        let bytes = std::fs::read(golden).unwrap();
        let records = record::split_records(&bytes).unwrap();
        let event = |wall_time: f64, step: i64, what: EventWhat| {
            proto::Event { wall_time, step, what: Some(what) }.encode_to_vec()
        };
        // The events stapes writes for the same values, byte for byte.
        let loss = summary_value("loss", None, SummaryValueData::SimpleValue(1.0));
        assert_eq!(event(1.7e9, 0, loss), records[1].1);
        let mut values: Vec<f32> = (0..101).map(|i| (i as f32 - 50.0) / 8.0).collect();
        values.extend([2f32.powi(-20), -(2f32.powi(-20)), 0.0, 0.0, 1024.0, -4096.5]);
        let histogram = summary_value("weights", None, SummaryValueData::Histo(Histogram::from_values(&values).0));
        assert_eq!(event(1.7e9 + 5.0, 5, histogram), records[8].1);
        let text = text_value("notes/text_summary", "hello from PyTorch");
        assert_eq!(event(1.7e9 + 6.0, 6, text), records[9].1);
        // Every event decodes and encodes again to the same bytes, except that the first loses
        // a field stapes neither reads nor writes (`source_metadata = 10`, at its end).
        for (i, &(_, data)) in records.iter().enumerate() {
            let encoded = proto::Event::decode(data).unwrap().encode_to_vec();
            if i == 0 {
                assert!(data.starts_with(&encoded) && data[encoded.len()] == (10 << 3 | 2), "{data:?}");
            } else {
                assert_eq!(encoded, data, "record {i}");
            }
        }
    }

    #[test]
    fn writers_get_distinct_files() {
        let dir = temp_dir("distinct");
        let a = SummaryWriter::new(&dir).unwrap();
        let b = SummaryWriter::new(&dir).unwrap();
        assert_ne!(a.path(), b.path());
        drop((a, b));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_truncated_files_are_errors() {
        let dir = temp_dir("corrupt");
        let path = {
            let mut w = SummaryWriter::new(&dir).unwrap();
            w.add_scalar("x", 1.0, 1).unwrap();
            w.path().to_path_buf()
        };
        let good = std::fs::read(&path).unwrap();
        let bad_path = dir.join("bad.tfevents");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            std::fs::write(&bad_path, &bad).unwrap();
            let err = read_events(&bad_path).unwrap_err().to_string();
            assert!(
                err.contains("read_events") && err.contains("bad.tfevents") && err.contains("CRC"),
                "byte {i}: {err}"
            );
        }
        // Cutting between the two records leaves a valid one-record file; any other cut is an error.
        let first_record = 16 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        for cut in 1..good.len() {
            std::fs::write(&bad_path, &good[..cut]).unwrap();
            match read_events(&bad_path) {
                Ok(events) => assert!(cut == first_record && events.len() == 1, "cut {cut}"),
                Err(e) => assert!(e.to_string().contains("truncated"), "cut {cut}: {e}"),
            }
        }
        // A record with valid CRCs but a malformed Event inside.
        let mut framed = Vec::new();
        record::write_record(&mut framed, &[0x0A, 0x05, b'a']);
        std::fs::write(&bad_path, &framed).unwrap();
        let err = read_events(&bad_path).unwrap_err().to_string();
        assert!(err.contains("record 0: bad Event (record at byte 0)") && err.contains("bad.tfevents"), "{err}");
        // A valid protobuf after a valid record, holding a histogram with fewer counts than limits.
        let histogram = Histogram { bucket_limit: vec![1.0, 2.0], bucket: vec![1.0], ..Histogram::default() };
        let what = summary_value("h", None, SummaryValueData::Histo(histogram));
        let mut framed = good[..first_record].to_vec();
        record::write_record(&mut framed, &proto::Event { wall_time: 1.0, step: 0, what: Some(what) }.encode_to_vec());
        std::fs::write(&bad_path, &framed).unwrap();
        let err = read_events(&bad_path).unwrap_err().to_string();
        assert!(err.contains(&format!("record 1: bad Event (record at byte {first_record})")), "{err}");
        assert!(err.contains("2 bucket limits but 1 bucket counts"), "{err}");
        let err = read_events(&dir.join("missing")).unwrap_err().to_string();
        assert!(err.contains("read_events") && err.contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_log_dir_is_an_error() {
        let dir = temp_dir("unwritable");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a_file");
        std::fs::write(&file, b"").unwrap();
        let err = SummaryWriter::new(&file.join("sub")).err().unwrap().to_string();
        assert!(err.contains("SummaryWriter::new") && err.contains("a_file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
