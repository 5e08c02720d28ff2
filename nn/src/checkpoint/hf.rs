//! Weights of a Hugging Face checkpoint directory, as `save_pretrained` writes it:
//! `model.safetensors`, a sharded `model.safetensors.index.json` with its shards, or
//! `pytorch_model.bin` (read by the restricted unpickler of [`super::torch_pickle`]).
//!
//! Keys are returned as stored, except weight normalisation, which comes in two spellings:
//! hub checkpoints saved with `torch.nn.utils.weight_norm` have `<name>_g` / `<name>_v`, newer
//! saves (`torch.nn.utils.parametrizations.weight_norm`) have
//! `parametrizations.<name>.original0` / `original1`; [`read_weights`] gives the newer one,
//! which is what stapes' modules are named after and what transformers 5 writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use stapes_tensor::{Error, Result, Tensor};

use super::load_safetensors;

const OP: &str = "read_hf_weights";

/// Which weight file a directory holds, in the order transformers looks for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightFiles {
    /// `model.safetensors`.
    Safetensors,
    /// `model.safetensors.index.json` and its shards.
    ShardedSafetensors,
    /// `pytorch_model.bin` (a zip holding a pickle).
    PytorchBin,
}

/// Finds the weight file of `dir`; an error lists what was looked for.
pub fn find_weights(dir: &Path) -> Result<WeightFiles> {
    if dir.join("model.safetensors").is_file() {
        Ok(WeightFiles::Safetensors)
    } else if dir.join("model.safetensors.index.json").is_file() {
        Ok(WeightFiles::ShardedSafetensors)
    } else if dir.join("pytorch_model.bin").is_file() {
        Ok(WeightFiles::PytorchBin)
    } else {
        Err(Error::invalid(
            OP,
            format!(
                "{}: no weights found (looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin)",
                dir.display()
            ),
        ))
    }
}

/// Reads every tensor of the checkpoint in `dir` (on the CPU, in the stored dtype), with weight
/// normalisation renamed to the `parametrizations.*.original0/1` spelling.
pub fn read_weights(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let raw = match find_weights(dir)? {
        WeightFiles::Safetensors => load_safetensors(dir.join("model.safetensors"))?.tensors,
        WeightFiles::ShardedSafetensors => read_sharded(dir)?,
        WeightFiles::PytorchBin => super::torch_pickle::read_torch_state_dict(dir.join("pytorch_model.bin"))?,
    };
    Ok(rename_weight_norm(raw))
}

fn read_sharded(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(OP, &index_path, e))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::io(OP, &index_path, format!("not valid JSON: {e}")))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::io(OP, &index_path, "no \"weight_map\" object"))?;
    let mut by_file: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| Error::io(OP, &index_path, format!("weight_map[{key:?}] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(Error::io(
                OP,
                &index_path,
                format!("weight_map[{key:?}] = {file:?} is not a file in the directory"),
            ));
        }
        by_file.entry(file.to_string()).or_default().insert(key.clone());
    }
    let mut out = BTreeMap::new();
    for (file, keys) in by_file {
        let path = dir.join(&file);
        let mut shard = load_safetensors(&path)?.tensors;
        for key in keys {
            let t = shard.remove(&key).ok_or_else(|| {
                Error::io(OP, &path, format!("{key:?} is listed in model.safetensors.index.json but not in the shard"))
            })?;
            out.insert(key, t);
        }
    }
    Ok(out)
}

/// `<prefix>.<name>_g` / `_v` become `<prefix>.parametrizations.<name>.original0` / `original1`.
pub fn rename_weight_norm(raw: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let has = |k: &str| raw.contains_key(k);
    let mut renames = Vec::new();
    for k in raw.keys() {
        if let Some(stem) = k.strip_suffix("_g") {
            if has(&format!("{stem}_v")) {
                let (prefix, name) = stem.rsplit_once('.').unwrap_or(("", stem));
                let dot = if prefix.is_empty() { "" } else { "." };
                renames.push((k.clone(), format!("{prefix}{dot}parametrizations.{name}.original0")));
                renames.push((format!("{stem}_v"), format!("{prefix}{dot}parametrizations.{name}.original1")));
            }
        }
    }
    let mut out = raw;
    for (from, to) in renames {
        if let Some(t) = out.remove(&from) {
            out.insert(to, t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::{DType, Device};

    #[test]
    fn weight_norm_spellings_are_unified() {
        let t = || Tensor::zeros([1], DType::F32, &Device::Cpu).unwrap();
        let raw: BTreeMap<String, Tensor> = [
            ("enc.pos.conv.weight_g", t()),
            ("enc.pos.conv.weight_v", t()),
            ("enc.pos.conv.bias", t()),
            ("lonely_g", t()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let keys: Vec<String> = rename_weight_norm(raw).into_keys().collect();
        assert_eq!(
            keys,
            [
                "enc.pos.conv.bias",
                "enc.pos.conv.parametrizations.weight.original0",
                "enc.pos.conv.parametrizations.weight.original1",
                "lonely_g"
            ]
        );
    }

    #[test]
    fn a_directory_without_weights_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("stapes-hf-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = read_weights(&dir).unwrap_err().to_string();
        assert!(e.contains("no weights found") && e.contains("stapes-hf-empty"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
