//! Train a small MLP classifier in your own binary: the training loop of a PyTorch tutorial,
//! written with stapes.
//!
//! The data are two interleaved spirals (2-D points, 2 classes); a 2-64-64-2 MLP with ReLU,
//! cross-entropy and Adam learns to separate them. Runs on `cuda:0` when a GPU is usable,
//! else on the CPU. Exits with an error unless the final training accuracy reaches 95%.
//!
//! `cargo run --release --example train_mlp`

use stapes::prelude::*;

/// `n` points per class on two spirals, shuffled, with labels.
fn spirals(n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut state = seed;
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..n {
        let r = i as f32 / n as f32 * 2.0 + 0.2;
        let t = 1.75 * i as f32 / n as f32 * 2.0 * std::f32::consts::PI;
        for class in 0..2 {
            let t = t + class as f32 * std::f32::consts::PI;
            xs.extend([r * t.cos() + noise(), r * t.sin() + noise()]);
            ys.push(class as i64);
        }
    }
    (xs, ys)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::cuda_if_available();
    let (xs, ys) = spirals(500, 7);
    let n = ys.len();
    let x = Var::constant(Tensor::from_vec(xs, [n, 2], &Device::Cpu)?.to_device(&device)?);
    let y = Tensor::from_vec(ys.clone(), [n], &Device::Cpu)?.to_device(&device)?;

    let model = Sequential::new()
        .with(Linear::new(2, 64, true)?)
        .with(ReLU::new())
        .with(Linear::new(64, 64, true)?)
        .with(ReLU::new())
        .with(Linear::new(64, 2, true)?);
    model.to_device(&device)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 1e-2, ..AdamConfig::adam() })?;
    println!("{} parameters on {device}", model.num_parameters());

    let mut accuracy = 0.0;
    for epoch in 1..=300 {
        opt.zero_grad();
        let logits = model.forward(&x)?;
        let loss = cross_entropy(&logits, &y, &CrossEntropyOptions::default())?;
        loss.backward()?;
        opt.step()?;
        if epoch % 50 == 0 {
            let predicted = logits.tensor().argmax(1usize, false)?.to_vec::<i64>()?;
            let correct = predicted.iter().zip(&ys).filter(|(p, t)| p == t).count();
            accuracy = correct as f64 / n as f64;
            println!("epoch {epoch:3}  loss {:.4}  accuracy {:.1}%", loss.tensor().to_scalar_f64()?, 100.0 * accuracy);
        }
    }
    if accuracy < 0.95 {
        return Err(format!("the MLP reached only {:.1}% accuracy", 100.0 * accuracy).into());
    }
    let path = std::env::temp_dir().join("stapes_mlp.safetensors");
    stapes::save_safetensors(&path, &model.state_dict())?;
    println!("saved the weights to {} (loads in PyTorch with safetensors.torch.load_file)", path.display());
    Ok(())
}
