//! Checkpoint interoperability with PyTorch: a `state_dict` saved by PyTorch
//! (`tools/golden/nn_checkpoint.py`) loads into the same architecture built with stapes-nn and
//! reproduces PyTorch's output; stapes writes it back as a safetensors file with the same
//! names, dtypes, shapes and values (the script's `--check` mode loads that file into PyTorch);
//! mismatched architectures give errors that list the offending keys.

mod common;

use stapes_autograd::Var;
use stapes_nn::checkpoint::{load_module, load_safetensors, save_module};
use stapes_nn::layers::{
    BatchNorm2d, Conv2d, Conv2dConfig, ConvPadding, Flatten, LayerNorm, Linear, MaxPool2d, ReLU, Sequential,
};
use stapes_nn::{Forward, Module};

fn model(out_features: usize) -> Sequential {
    let conv =
        Conv2d::new_with(1, 4, [3, 3], Conv2dConfig { padding: ConvPadding::Explicit([1, 1]), ..Default::default() })
            .unwrap();
    Sequential::new()
        .with(conv)
        .with(BatchNorm2d::new(4).unwrap())
        .with(ReLU::new())
        .with(MaxPool2d::new([2, 2]).unwrap())
        .with(Flatten::new(1, -1))
        .with(Linear::new(64, out_features, true).unwrap())
        .with(LayerNorm::new(&[out_features]).unwrap())
}

#[test]
fn pytorch_state_dict_loads_and_round_trips() {
    let m = model(10);
    load_module("tests/golden/torch_state_dict.safetensors", &m, true).unwrap();
    m.eval();
    let io = load_safetensors("tests/golden/torch_state_dict_io.safetensors").unwrap().tensors;
    let y = m.forward(&Var::constant(io["input"].clone())).unwrap();
    common::assert_close(y.tensor(), &io["output"], Some(1e-5), Some(1e-5), "eval output of the loaded model");

    // Write it back and compare with PyTorch's file tensor by tensor.
    let dir = std::env::temp_dir().join(format!("stapes-nn-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = match std::env::var("STAPES_WRITE_STATE") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => dir.join("stapes_state_dict.safetensors"),
    };
    save_module(&path, &m).unwrap();
    let ours = load_safetensors(&path).unwrap().tensors;
    let theirs = load_safetensors("tests/golden/torch_state_dict.safetensors").unwrap().tensors;
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (k, t) in &theirs {
        let o = &ours[k];
        assert_eq!((o.dims(), o.dtype()), (t.dims(), t.dtype()), "{k}");
        assert!(o.equal(t).unwrap(), "{k} differs after the round trip");
    }
    assert_eq!(theirs["1.num_batches_tracked"].to_vec::<i64>().unwrap(), vec![2]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mismatched_architectures_name_the_keys() {
    let wrong = model(11);
    let e = load_module("tests/golden/torch_state_dict.safetensors", &wrong, true).unwrap_err().to_string();
    assert!(e.contains("5.weight") && e.contains("[10, 64]") && e.contains("[11, 64]"), "{e}");

    let mut shorter = model(10);
    shorter = shorter.with(Linear::new(10, 3, true).unwrap());
    let e = load_module("tests/golden/torch_state_dict.safetensors", &shorter, true).unwrap_err().to_string();
    assert!(e.contains("missing keys") && e.contains("7.weight") && e.contains("7.bias"), "{e}");
    // Non-strict loading fills what matches.
    load_module("tests/golden/torch_state_dict.safetensors", &shorter, false).unwrap();
}
