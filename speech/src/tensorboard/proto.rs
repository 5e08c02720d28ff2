//! The protocol buffer messages of an event file, as `prost` messages: the subset of
//! TensorFlow's schema that stapes writes and reads (the parent module's docs list it).
//!
//! Field numbers and types are those of TensorFlow's `tensorflow/core/util/event.proto` and
//! `tensorflow/core/framework/{summary,histogram,tensor,tensor_shape,types}.proto`, which
//! TensorBoard carries as `tensorboard/compat/proto/*.proto`. Fields not listed here are
//! skipped when decoding (as protobuf does with unknown fields) and never written. Repeated
//! numeric fields are packed, proto3's default and `prost`'s. `prost` writes fields in the
//! order they are declared: they are declared in field-number order (oneofs where their
//! numbers fall), the order of the official encoders, so that an event encodes to the same
//! bytes as PyTorch writes.

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// The `what` oneof.
    #[prost(oneof = "EventWhat", tags = "3, 5")]
    pub what: Option<EventWhat>,
}

/// `Event.what` (of its variants, `graph_def = 4`, `log_message = 6`, `session_log = 7`,
/// `tagged_run_metadata = 8` and `meta_graph_def = 9` are left out).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventWhat {
    /// `string file_version = 3`: `"brain.Event:2"` in the first event of a file.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// `Summary summary = 5`.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`: a set of tagged values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// `repeated Value value = 1`.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` (`node_name = 7` left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// The series name.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The `value` oneof.
    #[prost(oneof = "SummaryValueData", tags = "2, 5, 8")]
    pub value: Option<SummaryValueData>,
    /// Which plugin reads the value.
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// `Summary.Value.value` (of its variants, `obsolete_old_style_histogram = 3`, `image = 4`
/// and `audio = 6` are left out).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SummaryValueData {
    /// `float simple_value = 2`.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    /// `HistogramProto histo = 5`.
    #[prost(message, tag = "5")]
    Histo(HistogramProto),
    /// `TensorProto tensor = 8`.
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// A histogram as TensorBoard stores it (`tensorflow.HistogramProto`, public as
/// `stapes_speech::tensorboard::Histogram`): summary statistics of the values, and buckets
/// given by their right edges. Bucket `i` counts the values in
/// `[bucket_limit[i-1], bucket_limit[i])`; bucket 0 extends to the left without bound.
/// [`from_values`](Self::from_values) makes one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    /// The smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// The largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// The number of values (a double in the proto).
    #[prost(double, tag = "3")]
    pub num: f64,
    /// The sum of the values.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// The sum of the squares of the values.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// The right edge of each bucket.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// The count of each bucket (doubles in the proto); they add up to `num`.
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorflow.SummaryMetadata` (`display_name = 2`, `summary_description = 3` and
/// `data_class = 4` left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// `PluginData plugin_data = 1`.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    /// The plugin that reads the value, e.g. `text` or `scalars`.
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// Plugin-specific content (usually a serialized protocol buffer).
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto` (only the fields listed; the other `*_val` fields, `version_number`
/// and `tensor_content` left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// The element type.
    #[prost(enumeration = "DataType", tag = "1")]
    pub dtype: i32,
    /// The shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// The elements of a `DT_FLOAT` tensor.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// The elements of a `DT_DOUBLE` tensor.
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    /// The elements of a `DT_STRING` tensor.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` (`unknown_rank = 3` left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

/// `tensorflow.TensorShapeProto.Dim` (`name = 2` left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeDim {
    /// The size of the dimension.
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorflow.DataType`: the values used here (of `types.proto`'s many).
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    /// `DT_INVALID = 0`.
    Invalid = 0,
    /// `DT_FLOAT = 1`.
    Float = 1,
    /// `DT_DOUBLE = 2`.
    Double = 2,
    /// `DT_STRING = 7`.
    String = 7,
}
