//! Checkpoints: safetensors files, written atomically.
//!
//! - [`save_safetensors`] / [`load_safetensors`]: a plain name → tensor file, the format of
//!   `safetensors.torch.save_file(model.state_dict(), path)`. A model's `state_dict` saved here
//!   loads into PyTorch with `model.load_state_dict(load_file(path))`, and a file PyTorch wrote
//!   for the same architecture loads here with [`load_module`].
//! - [`Checkpoint`]: everything needed to resume training exactly: the model's state, the
//!   optimizer's state tensors and settings, the LR schedule, the GradScaler, the step and the
//!   default generator's state. Tensors go into one safetensors file under the prefixes
//!   `model.` and `optimizer.`; the rest is JSON in the file's `__metadata__` under the key
//!   `stapes_checkpoint`.
//!
//! Every write goes to a temporary file in the same folder, is flushed to disk (fsync), then
//! renamed over the target, so an interrupted save never leaves a truncated checkpoint and
//! never destroys the previous one.

pub mod hf;
pub mod torch_pickle;

use crate::module::Module;
use safetensors::tensor::{Dtype, View};
use stapes_tensor::{DType, Device, Error, Result, Tensor};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metadata key under which a [`Checkpoint`] keeps its JSON.
pub const CHECKPOINT_METADATA_KEY: &str = "stapes_checkpoint";
/// The format tag written into every [`Checkpoint`].
pub const CHECKPOINT_FORMAT: &str = "stapes-checkpoint-v1";

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Result<Bytes> {
    let t = t.to_device(&Device::Cpu)?;
    let (dtype, data) = match t.dtype() {
        DType::F32 => (Dtype::F32, bytemuck::cast_slice(&t.to_vec::<f32>()?).to_vec()),
        DType::F64 => (Dtype::F64, bytemuck::cast_slice(&t.to_vec::<f64>()?).to_vec()),
        DType::F16 => (Dtype::F16, bytemuck::cast_slice(&t.to_vec::<half::f16>()?).to_vec()),
        DType::BF16 => (Dtype::BF16, bytemuck::cast_slice(&t.to_vec::<half::bf16>()?).to_vec()),
        DType::I64 => (Dtype::I64, bytemuck::cast_slice(&t.to_vec::<i64>()?).to_vec()),
        DType::U8 => (Dtype::U8, t.to_vec::<u8>()?),
        DType::I8 => (Dtype::I8, bytemuck::cast_slice(&t.to_vec::<i8>()?).to_vec()),
    };
    Ok(Bytes { dtype, shape: t.dims().to_vec(), data })
}

/// Copies little-endian bytes into a fresh, aligned vector.
fn collect<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
    let n = b.len() / std::mem::size_of::<T>();
    let mut v = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&b[..n * std::mem::size_of::<T>()]);
    v
}

pub(crate) fn from_bytes(
    op: &'static str,
    path: &Path,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    b: &[u8],
) -> Result<Tensor> {
    let dev = Device::Cpu;
    let t = match dtype {
        Dtype::F32 => Tensor::from_vec(collect::<f32>(b), shape, &dev),
        Dtype::F64 => Tensor::from_vec(collect::<f64>(b), shape, &dev),
        Dtype::F16 => Tensor::from_vec(collect::<half::f16>(b), shape, &dev),
        Dtype::BF16 => Tensor::from_vec(collect::<half::bf16>(b), shape, &dev),
        Dtype::I64 => Tensor::from_vec(collect::<i64>(b), shape, &dev),
        Dtype::I32 => {
            let v: Vec<i64> = collect::<i32>(b).into_iter().map(i64::from).collect();
            Tensor::from_vec(v, shape, &dev)
        }
        Dtype::I16 => {
            let v: Vec<i64> = collect::<i16>(b).into_iter().map(i64::from).collect();
            Tensor::from_vec(v, shape, &dev)
        }
        Dtype::U8 | Dtype::BOOL => Tensor::from_vec(b.to_vec(), shape, &dev),
        Dtype::I8 => Tensor::from_vec(collect::<i8>(b), shape, &dev),
        other => return Err(Error::io(op, path, format!("tensor {name:?} has unsupported dtype {other:?}"))),
    };
    t.map_err(|e| Error::io(op, path, format!("tensor {name:?}: {e}")))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, then an
/// fsync of the folder so the rename itself is durable.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    const OP: &str = "write_atomic";
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| Error::io(OP, path, "not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename durable; not every platform can open a folder, which is fine.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(OP, path, e)
    })
}

fn serialize(tensors: &BTreeMap<String, Tensor>, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Bytes)> =
        tensors.iter().map(|(k, t)| Ok((k.clone(), to_bytes(t)?))).collect::<Result<_>>()?;
    safetensors::serialize(bytes.iter().map(|(k, b)| (k.as_str(), b)), metadata)
        .map_err(|e| Error::invalid("save_safetensors", format!("cannot serialize: {e}")))
}

/// Saves named tensors (e.g. a `state_dict`) as a safetensors file, atomically, with optional
/// string metadata.
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = serialize(tensors, metadata)?;
    write_atomic(path, &bytes)
}

/// The tensors and the `__metadata__` of a safetensors file.
pub struct SafetensorsFile {
    /// Tensors by name, on the CPU. `bool`, `i16` and `i32` tensors are read as `u8`, `i64`.
    pub tensors: BTreeMap<String, Tensor>,
    /// The string metadata (empty when the file has none).
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file. A missing, truncated or corrupt file is an error naming the file
/// and the problem.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
    const OP: &str = "load_safetensors";
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(OP, path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::io(OP, path, format!("not a valid safetensors file: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::io(OP, path, format!("not a valid safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = from_bytes(OP, path, &name, view.dtype(), view.shape(), view.data())?;
        tensors.insert(name, t);
    }
    Ok(SafetensorsFile { tensors, metadata: meta.metadata().clone().unwrap_or_default() })
}

/// Saves a module's `state_dict` as a safetensors file PyTorch can load.
pub fn save_module(path: impl AsRef<Path>, module: &dyn Module) -> Result<()> {
    save_safetensors(path, &module.state_dict(), None)
}

/// Loads a safetensors `state_dict` (e.g. written by PyTorch for the same architecture) into a
/// module; see [`Module::load_state_dict`] for `strict`, the errors and the returned keys.
pub fn load_module(path: impl AsRef<Path>, module: &dyn Module, strict: bool) -> Result<crate::IncompatibleKeys> {
    let f = load_safetensors(path.as_ref())?;
    module.load_state_dict(&f.tensors, strict)
}

/// Everything needed to resume training exactly.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// The model's `state_dict`.
    pub model: BTreeMap<String, Tensor>,
    /// The optimizer's state tensors (its `state_dict` tensors).
    pub optimizer_tensors: BTreeMap<String, Tensor>,
    /// The optimizer's settings and counters.
    pub optimizer: serde_json::Value,
    /// The LR schedule's state (`LrSchedule::state_dict`).
    pub scheduler: serde_json::Value,
    /// The GradScaler's state.
    pub scaler: serde_json::Value,
    /// The training step.
    pub step: u64,
    /// The default generator's state (`stapes_tensor::default_generator_state`).
    pub rng: Option<[u64; 4]>,
    /// Anything else the caller wants to keep (epoch, configuration, metrics).
    pub extra: serde_json::Value,
}

impl Checkpoint {
    /// The whole training state: the model's `state_dict`, the optimizer's, the schedule's and
    /// the GradScaler's states, the step, the default generator's state, and `extra`.
    pub fn capture(
        model: &dyn Module,
        optimizer: &dyn crate::optim::Optimizer,
        scheduler: &dyn crate::schedule::LrSchedule,
        scaler: &crate::amp::GradScaler,
        step: u64,
        extra: serde_json::Value,
    ) -> Result<Checkpoint> {
        let (optimizer_tensors, optimizer_state) = optimizer.state_dict()?;
        Ok(Checkpoint {
            model: model.state_dict(),
            optimizer_tensors,
            optimizer: optimizer_state,
            scheduler: scheduler.state_dict(),
            scaler: scaler.state_dict(),
            step,
            rng: Some(stapes_tensor::default_generator_state()),
            extra,
        })
    }

    /// Puts the state [`capture`](Self::capture) took back into a freshly built model,
    /// optimizer, schedule and scaler, and the default generator; errors name `path` (where the
    /// checkpoint came from) and the part that did not fit.
    pub fn restore(
        &self,
        path: &Path,
        model: &dyn Module,
        optimizer: &mut dyn crate::optim::Optimizer,
        scheduler: &mut dyn crate::schedule::LrSchedule,
        scaler: &mut crate::amp::GradScaler,
    ) -> Result<()> {
        const OP: &str = "Checkpoint::restore";
        model.load_state_dict(&self.model, true).map_err(|e| Error::io(OP, path, format!("model: {e}")))?;
        optimizer
            .load_state_dict(&self.optimizer_tensors, &self.optimizer)
            .map_err(|e| Error::io(OP, path, format!("optimizer: {e}")))?;
        scheduler.load_state_dict(&self.scheduler).map_err(|e| Error::io(OP, path, format!("schedule: {e}")))?;
        if !self.scaler.is_null() {
            scaler.load_state_dict(&self.scaler).map_err(|e| Error::io(OP, path, format!("scaler: {e}")))?;
        }
        if let Some(r) = self.rng {
            stapes_tensor::set_default_generator_state(r).map_err(|e| Error::io(OP, path, format!("rng: {e}")))?;
        }
        Ok(())
    }

    /// Writes the checkpoint to `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut tensors = BTreeMap::new();
        for (k, t) in &self.model {
            tensors.insert(format!("model.{k}"), t.clone());
        }
        for (k, t) in &self.optimizer_tensors {
            tensors.insert(format!("optimizer.{k}"), t.clone());
        }
        // u64 words as strings: JSON numbers lose precision past 2^53 in many readers.
        let rng = self.rng.map(|s| s.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        let meta = serde_json::json!({
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "rng": rng,
            "extra": self.extra,
        });
        let mut m = HashMap::new();
        m.insert(CHECKPOINT_METADATA_KEY.to_string(), meta.to_string());
        save_safetensors(path, &tensors, Some(m))
    }

    /// Reads a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        const OP: &str = "Checkpoint::load";
        let path = path.as_ref();
        let f = load_safetensors(path)?;
        let meta = f.metadata.get(CHECKPOINT_METADATA_KEY).ok_or_else(|| {
            Error::io(OP, path, format!("no {CHECKPOINT_METADATA_KEY:?} metadata: not a stapes checkpoint (a plain state_dict? use load_module)"))
        })?;
        let meta: serde_json::Value =
            serde_json::from_str(meta).map_err(|e| Error::io(OP, path, format!("corrupt checkpoint metadata: {e}")))?;
        let format = meta.get("format").and_then(|v| v.as_str()).unwrap_or("<none>");
        if format != CHECKPOINT_FORMAT {
            return Err(Error::io(
                OP,
                path,
                format!("unknown checkpoint format {format:?} (expected {CHECKPOINT_FORMAT:?})"),
            ));
        }
        let step = meta
            .get("step")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::io(OP, path, "checkpoint metadata has no step"))?;
        let rng = match meta.get("rng") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let words: Option<Vec<u64>> =
                    v.as_array().map(|a| a.iter().filter_map(|w| w.as_str()?.parse().ok()).collect());
                match words.as_deref() {
                    Some(&[a, b, c, d]) => Some([a, b, c, d]),
                    _ => return Err(Error::io(OP, path, format!("corrupt rng state {v}"))),
                }
            }
        };
        let mut ck = Checkpoint {
            step,
            rng,
            optimizer: meta.get("optimizer").cloned().unwrap_or_default(),
            scheduler: meta.get("scheduler").cloned().unwrap_or_default(),
            scaler: meta.get("scaler").cloned().unwrap_or_default(),
            extra: meta.get("extra").cloned().unwrap_or_default(),
            ..Checkpoint::default()
        };
        for (k, t) in f.tensors {
            if let Some(n) = k.strip_prefix("model.") {
                ck.model.insert(n.to_string(), t);
            } else if let Some(n) = k.strip_prefix("optimizer.") {
                ck.optimizer_tensors.insert(n.to_string(), t);
            } else {
                return Err(Error::io(OP, path, format!("unexpected tensor {k:?} (neither model. nor optimizer.)")));
            }
        }
        Ok(ck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stapes-ckpt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn every_dtype_round_trips() {
        let d = tmpdir("dtypes");
        let dev = Device::Cpu;
        let base = Tensor::from_vec(vec![1.5f32, -2.25, 3.0, 0.125, 7.0, -0.5], [2, 3], &dev).unwrap();
        let mut m = BTreeMap::new();
        for dt in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::I8] {
            m.insert(format!("{dt:?}"), base.to_dtype(dt).unwrap());
        }
        m.insert("u8".into(), Tensor::from_vec(vec![0u8, 255], 2, &dev).unwrap());
        m.insert("scalar".into(), Tensor::from_vec(vec![42i64], (), &dev).unwrap());
        let p = d.join("a.safetensors");
        save_safetensors(&p, &m, None).unwrap();
        let back = load_safetensors(&p).unwrap().tensors;
        assert_eq!(back.len(), m.len());
        for (k, t) in &m {
            let b = &back[k];
            assert_eq!((b.dims(), b.dtype()), (t.dims(), t.dtype()), "{k}");
            assert!(b.equal(t).unwrap(), "{k}");
        }
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn corrupt_files_are_errors_and_saves_are_atomic() {
        let d = tmpdir("corrupt");
        let p = d.join("c.safetensors");
        let mut m = BTreeMap::new();
        m.insert("w".to_string(), Tensor::ones([4, 4], DType::F32, &Device::Cpu).unwrap());
        save_safetensors(&p, &m, None).unwrap();
        let good = std::fs::read(&p).unwrap();
        for (what, bytes) in [
            ("empty", vec![]),
            ("truncated", good[..good.len() - 5].to_vec()),
            ("header only", good[..8].to_vec()),
            ("random", (0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = load_safetensors(&p).err().unwrap_or_else(|| panic!("{what} loaded"));
            assert!(e.to_string().contains("c.safetensors"), "{what}: {e}");
        }
        assert!(load_safetensors(d.join("missing.safetensors")).is_err());
        assert!(Checkpoint::load(d.join("missing.safetensors")).is_err());
        // A failed save (target is a folder) leaves no temporary file behind.
        assert!(save_safetensors(&d, &m, None).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        // A plain state_dict is not a checkpoint.
        std::fs::write(&p, &good).unwrap();
        assert!(Checkpoint::load(&p).unwrap_err().to_string().contains("not a stapes checkpoint"));
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn checkpoint_round_trip() {
        let d = tmpdir("ck");
        let dev = Device::Cpu;
        let mut ck = Checkpoint { step: 1234, rng: Some([1, u64::MAX, 3, 4]), ..Checkpoint::default() };
        ck.model.insert("enc.weight".into(), Tensor::ones([2, 2], DType::F32, &dev).unwrap());
        ck.optimizer_tensors.insert("state.0.exp_avg".into(), Tensor::zeros([2, 2], DType::F32, &dev).unwrap());
        ck.optimizer = serde_json::json!({"lr": 0.1f64, "step": 7});
        ck.scheduler = serde_json::json!({"schedule": "StepLR"});
        let p = d.join("ck.safetensors");
        ck.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        assert_eq!(back.step, 1234);
        assert_eq!(back.rng, Some([1, u64::MAX, 3, 4]));
        assert_eq!(back.optimizer, ck.optimizer);
        assert_eq!(back.scheduler, ck.scheduler);
        assert!(back.model["enc.weight"].equal(&ck.model["enc.weight"]).unwrap());
        assert!(back.optimizer_tensors.contains_key("state.0.exp_avg"));
        std::fs::remove_dir_all(d).ok();
    }
}
