//! Runs the fused op on the CPU and on `cuda:0` (a GPU, or the emulator when there is none),
//! compares them, and checks the gradients by finite differences in f64.
//!
//! `cargo run -p stapes-example-custom-op`

use stapes_autograd::{gradcheck, Var};
use stapes_example_custom_op::bias_silu;
use stapes_tensor::{cuda, DType, Device, Tensor};

fn main() -> stapes_tensor::Result<()> {
    let cpu = Device::Cpu;
    let x = Tensor::randn([64, 48], DType::F32, &cpu)?;
    let b = Tensor::randn([48], DType::F32, &cpu)?;
    let on_cpu = bias_silu(&Var::constant(x.clone()), &Var::constant(b.clone()))?;
    // The same computation from stapes' own ops: (x + b) * sigmoid(x + b).
    let z = Var::constant(x.clone()).add(&Var::constant(b.clone()))?;
    let reference = z.mul(&z.sigmoid()?)?;
    let diff = max_abs_diff(on_cpu.tensor(), reference.tensor())?;
    println!("CPU kernel vs stapes ops: max |diff| = {diff:.3e}");

    // cuda:0 is a GPU when one can be used, else the emulator (built in by the `emu` feature).
    if !cuda::is_available(0) {
        cuda::use_emulator()?;
    }
    let dev = Device::Cuda(0);
    println!("cuda:0 is {}", cuda::describe(0));
    let on_dev = bias_silu(&Var::constant(x.to_device(&dev)?), &Var::constant(b.to_device(&dev)?))?;
    let diff = max_abs_diff(on_dev.tensor(), on_cpu.tensor())?;
    println!("CUDA kernel vs CPU kernel: max |diff| = {diff:.3e}");

    for device in [cpu, dev] {
        let xs = Tensor::randn([5, 7], DType::F64, &device)?;
        let bs = Tensor::randn([7], DType::F64, &device)?;
        let report = gradcheck(|v| bias_silu(&v[0], &v[1]), &[xs, bs], 1e-6, 1e-7, 1e-5)?;
        println!(
            "gradcheck on {device}: {} elements, max |analytic - numeric| = {:.3e}",
            report.checked, report.max_abs_err
        );
    }
    Ok(())
}

/// The largest element-wise difference of two tensors of one shape, on any devices.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> stapes_tensor::Result<f64> {
    let (a, b) = (a.to_vec_f64()?, b.to_vec_f64()?);
    Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
}
