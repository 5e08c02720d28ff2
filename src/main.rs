//! The `stapes` command-line program.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "stapes", version, about = "stapes: a GPU tensor engine and speech stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the build's devices and a small autograd self-check.
    Info,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => info(),
    }
}

fn info() -> anyhow::Result<()> {
    use stapes::autograd::Var;
    use stapes::tensor::{Device, Tensor};
    println!("stapes {}", env!("CARGO_PKG_VERSION"));
    println!("rayon threads: {}", rayon_threads());
    let x = Var::leaf(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3][..], &Device::Cpu)?);
    let y = x.mul(&x)?.sum_all()?;
    y.backward()?;
    println!("d/dx sum(x*x) at x = [1, 2, 3]: {}", x.grad().expect("grad"));
    Ok(())
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    })
}
