//! Load a PyTorch `state_dict` into the same architecture built with stapes, and check that
//! both compute the same output.
//!
//! The files come from `tools/golden/nn_checkpoint.py` (PyTorch 2.11): a Conv/BatchNorm/Linear/
//! LayerNorm `nn.Sequential` after two SGD steps, saved with `safetensors.torch.save_file`,
//! and an input with the model's eval-mode output. To export your own model from PyTorch:
//!
//! ```python
//! from safetensors.torch import save_file
//! save_file(model.state_dict(), "model.safetensors")
//! ```
//!
//! `cargo run --example load_pytorch_state_dict [-- STATE_DICT IO]`

use stapes::nn::layers::{BatchNorm2d, Flatten};
use stapes::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let state_path = args.next().unwrap_or_else(|| "tests/golden/torch_state_dict.safetensors".into());
    let io_path = args.next().unwrap_or_else(|| "tests/golden/torch_state_dict_io.safetensors".into());

    // The PyTorch model, layer for layer:
    //   nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
    //                 nn.Flatten(), nn.Linear(64, 10), nn.LayerNorm(10))
    let model = Sequential::new()
        .with(Conv2d::new_with(1, 4, 3, Conv2dConfig::default().padding(1))?)
        .with(BatchNorm2d::new(4)?)
        .with(ReLU::new())
        .with(MaxPool2d::new(2)?)
        .with(Flatten::new(1, -1))
        .with(Linear::new(64, 10, true)?)
        .with(LayerNorm::new(&[10])?);

    // Keys are PyTorch's ("0.weight", "1.running_mean", "1.num_batches_tracked", ...); strict
    // loading lists any key that is missing or unexpected.
    let state = stapes::load_safetensors(&state_path)?;
    let report = model.load_state_dict(&state, true)?;
    println!(
        "loaded {} tensors from {state_path} (missing: {:?}, unexpected: {:?})",
        state.len(),
        report.missing_keys,
        report.unexpected_keys
    );

    model.eval(); // BatchNorm uses its running statistics, as model.eval() in PyTorch
    let io = stapes::load_safetensors(&io_path)?;
    let y = no_grad(|| model.forward(&Var::constant(io["input"].clone())))?;
    let (got, want) = (y.tensor().to_vec::<f32>()?, io["output"].to_vec::<f32>()?);
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("output {:?}: max |stapes - PyTorch| = {worst:.2e}", y.dims());
    if worst > 1e-5 {
        return Err(format!("outputs differ by {worst} (more than 1e-5)").into());
    }

    // A sub-module out of the larger state, as `model[5].load_state_dict(...)` would take it.
    let head = Linear::new(64, 10, true)?;
    head.load_state_dict_prefixed(&state, "5", true)?;
    println!(
        "the Linear head alone loaded from the keys under \"5.\": {:?}",
        state.filter_prefix("5").keys().collect::<Vec<_>>()
    );
    Ok(())
}
