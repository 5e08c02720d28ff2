//! Log scalars and histograms from your own training loop to TensorBoard, as
//! `torch.utils.tensorboard.SummaryWriter` does, then read them back.
//!
//! `cargo run --example tensorboard_scalars [-- LOG_DIR]`, then
//! `pip install tensorboard && tensorboard --logdir LOG_DIR` and open http://localhost:6006.

use stapes::prelude::*;
use stapes::speech::tensorboard::{read_scalars, SummaryWriter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("stapes-tensorboard-example-{}", std::process::id())));
    let mut writer = SummaryWriter::new(&dir)?;

    // Fit y = 3x - 1 with one Linear layer and SGD, logging as we go.
    let model = Linear::new(1, 1, true)?;
    let mut opt = Sgd::new(model.parameters(), SgdConfig { lr: 0.1, ..Default::default() })?;
    let x = Tensor::randn([64, 1], DType::F32, &Device::Cpu)?;
    let y = Var::constant(x.mul_scalar(3.0)?.add_scalar(-1.0)?);
    let x = Var::constant(x);
    for step in 0..100 {
        opt.zero_grad();
        let loss = mse_loss(&model.forward(&x)?, &y, Reduction::Mean)?;
        loss.backward()?;
        opt.step()?;
        writer.add_scalar("train/loss", loss.tensor().to_scalar_f64()?, step)?;
        writer.add_scalar("train/weight", model.weight.tensor().to_scalar_f64()?, step)?;
        if step % 25 == 0 {
            for (name, p) in model.named_parameters() {
                writer.add_histogram_tensor(&format!("params/{name}"), &p.tensor(), step)?;
            }
        }
    }
    writer.add_text("notes", "a linear fit of y = 3x - 1", 0)?;
    writer.flush()?;
    println!("wrote {}", writer.path().display());

    // The event file read back, as TensorBoard reads it.
    let scalars = read_scalars(&dir)?;
    let loss = &scalars["train/loss"];
    let weight = &scalars["train/weight"];
    println!("train/loss: {} points, {:.4} -> {:.2e}", loss.len(), loss[0].1, loss.last().unwrap().1);
    println!("train/weight at the last step: {:.4}", weight.last().unwrap().1);
    if loss.len() != 100 || (weight.last().unwrap().1 - 3.0).abs() > 1e-2 {
        return Err("the logged run did not converge to y = 3x - 1".into());
    }
    Ok(())
}
