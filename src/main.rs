//! The `stapes` command-line program.

use anyhow::Context;
use clap::{Parser, Subcommand};
use stapes::autograd::Var;
use stapes::tensor::{DType, Device, Generator, Tensor};

#[derive(Parser)]
#[command(name = "stapes", version, about = "stapes: a GPU tensor engine and speech stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a small classifier end to end with the autograd engine (the speech recogniser demo
    /// replaces this once the speech stack lands).
    Demo {
        /// Training steps.
        #[arg(long, default_value_t = 400)]
        steps: usize,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Print the build's devices and thread count.
    Info,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { steps, seed } => demo(steps, seed),
        Command::Info => info(),
    }
}

fn info() -> anyhow::Result<()> {
    println!("stapes {}", env!("CARGO_PKG_VERSION"));
    println!("devices: cpu (CUDA backend not built yet)");
    println!("rayon threads: {}", rayon_threads());
    Ok(())
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// Three interleaved spirals in 2-D, `n` points per class: `(points [3n, 2], labels [3n])`.
fn spirals(n: usize, gen: &mut Generator) -> anyhow::Result<(Tensor, Tensor)> {
    let mut xs = Vec::with_capacity(6 * n);
    let mut ys = Vec::with_capacity(3 * n);
    for class in 0..3 {
        for i in 0..n {
            let r = i as f64 / n as f64;
            let theta = class as f64 * 2.094 + r * 4.0 + 0.2 * gen.next_normal();
            xs.push((r * theta.sin()) as f32);
            xs.push((r * theta.cos()) as f32);
            ys.push(class as i64);
        }
    }
    Ok((Tensor::from_vec(xs, [3 * n, 2], &Device::Cpu)?, Tensor::from_vec(ys, [3 * n], &Device::Cpu)?))
}

/// Mean negative log-likelihood of `labels` under `logits` `[n, classes]`.
fn cross_entropy(logits: &Var, labels: &Tensor) -> anyhow::Result<Var> {
    let n = labels.elem_count();
    let logp = logits.log_softmax(1usize)?;
    let picked = logp.gather(1usize, &labels.reshape([n, 1])?)?;
    Ok(picked.mean_all()?.neg()?)
}

fn demo(steps: usize, seed: u64) -> anyhow::Result<()> {
    println!("stapes demo: a 2-layer MLP learns three spirals with reverse-mode autograd on the CPU");
    let mut gen = Generator::new(seed);
    let (x, y) = spirals(200, &mut gen)?;
    let hidden = 64;
    let init = |gen: &mut Generator, shape: [usize; 2], fan_in: usize| -> anyhow::Result<Var> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        Ok(Var::leaf(Tensor::rand_with(gen, -bound, bound, shape, DType::F32, &Device::Cpu)?))
    };
    let mut params = vec![
        init(&mut gen, [2, hidden], 2)?,
        init(&mut gen, [1, hidden], 2)?,
        init(&mut gen, [hidden, 3], hidden)?,
        init(&mut gen, [1, 3], hidden)?,
    ];
    let xv = Var::constant(x);
    let lr = 1.0;
    let start = std::time::Instant::now();
    let mut last_loss = f64::NAN;
    for step in 0..=steps {
        let h = xv.matmul(&params[0])?.add(&params[1])?.relu()?;
        let logits = h.matmul(&params[2])?.add(&params[3])?;
        let loss = cross_entropy(&logits, &y)?;
        last_loss = loss.tensor().to_scalar_f64()?;
        if !last_loss.is_finite() {
            anyhow::bail!("loss became {last_loss} at step {step}");
        }
        if step % 50 == 0 || step == steps {
            let pred = logits.tensor().argmax(1usize, false)?;
            let acc = pred.eq(&y)?.to_dtype(DType::F32)?.mean_all()?.to_scalar_f64()?;
            println!("step {step:4}  loss {last_loss:.4}  accuracy {:5.1}%", acc * 100.0);
        }
        if step == steps {
            break;
        }
        loss.backward()?;
        // plain SGD: each parameter becomes a new leaf p - lr * grad
        params = params
            .iter()
            .map(|p| {
                let g = p.grad().context("parameter without gradient")?;
                Ok(Var::leaf(p.tensor().sub(&g.mul_scalar(lr)?)?))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    println!("trained {steps} steps in {:.2?}; final loss {last_loss:.4}", start.elapsed());
    Ok(())
}
