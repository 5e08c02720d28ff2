//! A custom fused op for stapes, the path a kernel researcher takes: `y = silu(x + b)` for a
//! row-major `x [rows, cols]` and a bias `b [cols]`, in one pass instead of two (the add, then
//! SiLU's `z * sigmoid(z)`), with
//!
//! * a **CPU kernel** over plain slices ([`cpu`]), generic over f32 and f64;
//! * a **CUDA kernel** (`cuda/bias_silu.cu`), found and built by `build.rs` through
//!   `stapes-cuda-build`: compiled by NVRTC on a GPU, and run by stapes' CUDA emulator on a
//!   machine without one (the `emu` feature, on by default);
//! * a **backward** that recomputes the activation from `x` and `b` (nothing saved but the
//!   inputs) and gives the gradients of both, `dz = dy * s * (1 + z * (1 - s))` and
//!   `db = sum over rows of dz`;
//! * tests (`tests/bias_silu.rs`): the CPU kernel against stapes' own ops, the CUDA kernels
//!   against the CPU kernel (emulated here, with a random thread schedule in CI), and a
//!   finite-difference [`stapes_autograd::gradcheck`] in f64 on both devices.
//!
//! ```
//! use stapes_autograd::Var;
//! use stapes_tensor::{DType, Device, Tensor};
//! let x = Var::leaf(Tensor::randn([4, 3], DType::F32, &Device::Cpu)?);
//! let b = Var::leaf(Tensor::zeros([3], DType::F32, &Device::Cpu)?);
//! let y = stapes_example_custom_op::bias_silu(&x, &b)?;
//! y.sum_all()?.backward()?;
//! assert_eq!(b.grad().unwrap().dims(), &[3]);
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

#![warn(missing_docs)]

use stapes_autograd::Var;
use stapes_kernels::cuda::{Backend, KernelArg, LaunchConfig};
use stapes_tensor::{DType, Error, Result, Tensor, WithDType};

/// The generated tables of `cuda/*.cu` (sources for NVRTC, launchers for the emulator) and
/// their `register()`.
mod kernels {
    include!(concat!(env!("OUT_DIR"), "/bias_silu_kernels.rs"));
}

const OP: &str = "bias_silu";

/// The CUDA C sources of this crate (`cuda/*.cu`), as NVRTC compiles them on a GPU.
pub fn kernel_sources() -> &'static [stapes_kernels::cuda::KernelSource] {
    kernels::SOURCES
}

/// The CPU kernels, over slices.
pub mod cpu {
    use num_traits::Float;

    fn sigmoid<T: Float>(z: T) -> T {
        T::one() / (T::one() + (-z).exp())
    }

    /// `y[r, c] = silu(x[r, c] + b[c])` for row-major `x` with `b.len()` columns.
    pub fn forward<T: Float>(x: &[T], b: &[T], y: &mut [T]) {
        if b.is_empty() {
            return; // no columns, so no elements
        }
        for (xr, yr) in x.chunks(b.len()).zip(y.chunks_mut(b.len())) {
            for ((&xi, yi), &bi) in xr.iter().zip(yr).zip(b) {
                let z = xi + bi;
                *yi = z * sigmoid(z);
            }
        }
    }

    /// `dz = dy * s * (1 + z * (1 - s))` with `z = x + b`, `s = sigmoid(z)`.
    pub fn backward<T: Float>(x: &[T], b: &[T], dy: &[T], dz: &mut [T]) {
        let cols = b.len();
        for (i, ((&xi, &g), d)) in x.iter().zip(dy).zip(dz.iter_mut()).enumerate() {
            let z = xi + b[i % cols];
            let s = sigmoid(z);
            *d = g * s * (T::one() + z * (T::one() - s));
        }
    }

    /// `db[c] = sum over rows of dz[r, c]`, rows added in order.
    pub fn bias_grad<T: Float>(dz: &[T], db: &mut [T]) {
        db.iter_mut().for_each(|v| *v = T::zero());
        if db.is_empty() {
            return;
        }
        for row in dz.chunks(db.len()) {
            for (acc, &v) in db.iter_mut().zip(row) {
                *acc = *acc + v;
            }
        }
    }
}

/// The fused op with its gradient: `silu(x + b)` for `x [rows, cols]` and `b [cols]`, both f32
/// or both f64, both on the CPU or both on one CUDA device.
pub fn bias_silu(x: &Var, b: &Var) -> Result<Var> {
    let (xt, bt) = (x.tensor().clone(), b.tensor().clone());
    let cols = check(&xt, &bt)?;
    let y = forward(&xt, &bt, cols)?;
    let backward = move |dy: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let dz = input_grad(&xt, &bt, dy, cols)?;
        let db = bias_grad(&dz, cols)?;
        Ok(vec![Some(dz), Some(db)])
    };
    Ok(Var::from_op(OP, y, &[x, b], Box::new(backward)))
}

/// The number of columns, after checking shapes, dtypes and devices.
fn check(x: &Tensor, b: &Tensor) -> Result<usize> {
    let [_, cols] = x.dims() else {
        return Err(Error::shape(OP, format!("x must be [rows, cols], got {:?}", x.dims())));
    };
    if b.dims() != [*cols] {
        return Err(Error::shape(OP, format!("b must be [{cols}] for x of shape {:?}, got {:?}", x.dims(), b.dims())));
    }
    if x.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: OP, lhs: x.dtype(), rhs: b.dtype() });
    }
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Err(Error::UnsupportedDType { op: OP, dtype: x.dtype(), msg: "f32 and f64 only" });
    }
    if x.device() != b.device() {
        return Err(Error::DeviceMismatch { op: OP, lhs: *x.device(), rhs: *b.device() });
    }
    Ok(*cols)
}

/// Runs a CPU kernel on f32 or f64 data: `f` gets the inputs as slices and fills the output.
fn on_cpu<T: WithDType + num_traits::Zero>(
    inputs: &[&Tensor],
    out_len: usize,
    out_shape: &[usize],
    f: impl Fn(&[Vec<T>], &mut [T]),
) -> Result<Tensor> {
    let data: Vec<Vec<T>> = inputs.iter().map(|t| t.to_vec::<T>()).collect::<Result<_>>()?;
    let mut out = vec![T::zero(); out_len];
    f(&data, &mut out);
    Tensor::from_vec(out, out_shape, &stapes_tensor::Device::Cpu)
}

/// The kernel name for the dtype: `bias_silu_<stage>_f32` or `_f64`.
fn kernel_name(stage: &str, dtype: DType) -> String {
    format!("bias_silu_{stage}_{}", if dtype == DType::F64 { "f64" } else { "f32" })
}

/// A 1-D grid-stride launch over `n` elements.
fn elementwise_launch(n: usize) -> LaunchConfig {
    LaunchConfig::linear(n.div_ceil(256).clamp(1, 65_535) as u32, 256)
}

/// Launches `kernel` on the backend of `inputs[0]` with the dense buffers of `inputs`, one
/// output of `out_shape`, then the scalars; returns the output tensor.
fn on_cuda<T: WithDType>(
    kernel: &str,
    inputs: &[&Tensor],
    out_shape: &[usize],
    scalars: &[i64],
    cfg: LaunchConfig,
) -> Result<Tensor> {
    kernels::register().map_err(|e| Error::invalid(OP, e.to_string()))?;
    let dense: Vec<Tensor> = inputs.iter().map(|t| t.cuda_contiguous()).collect::<Result<_>>()?;
    let backend: Backend = dense[0].cuda_backend(OP)?;
    let n: usize = out_shape.iter().product();
    let mut out = backend.alloc::<T>(n).map_err(|e| Error::invalid(OP, e.to_string()))?;
    {
        let mut args: Vec<KernelArg<'_>> =
            dense.iter().map(|t| t.cuda_buffer::<T>(OP).map(KernelArg::input)).collect::<Result<_>>()?;
        args.push(KernelArg::output(&mut out));
        args.extend(scalars.iter().map(|&v| KernelArg::i64(v)));
        // SAFETY: the arguments are the kernel's parameters in order (input buffers, the output,
        // then the sizes), every buffer holds the elements the sizes describe, and the kernels
        // only write their output.
        unsafe { backend.launch(kernel, cfg, &mut args) }.map_err(|e| Error::invalid(OP, e.to_string()))?;
    }
    Tensor::from_cuda_buffer(out, backend, out_shape, inputs[0].device())
}

fn forward(x: &Tensor, b: &Tensor, cols: usize) -> Result<Tensor> {
    let n = x.elem_count();
    if x.device().is_cuda() {
        let cfg = elementwise_launch(n);
        let name = kernel_name("forward", x.dtype());
        return match x.dtype() {
            DType::F64 => on_cuda::<f64>(&name, &[x, b], x.dims(), &[n as i64, cols as i64], cfg),
            _ => on_cuda::<f32>(&name, &[x, b], x.dims(), &[n as i64, cols as i64], cfg),
        };
    }
    match x.dtype() {
        DType::F64 => on_cpu::<f64>(&[x, b], n, x.dims(), |d, y| cpu::forward(&d[0], &d[1], y)),
        _ => on_cpu::<f32>(&[x, b], n, x.dims(), |d, y| cpu::forward(&d[0], &d[1], y)),
    }
}

fn input_grad(x: &Tensor, b: &Tensor, dy: &Tensor, cols: usize) -> Result<Tensor> {
    let n = x.elem_count();
    if x.device().is_cuda() {
        let cfg = elementwise_launch(n);
        let name = kernel_name("backward", x.dtype());
        return match x.dtype() {
            DType::F64 => on_cuda::<f64>(&name, &[x, b, dy], x.dims(), &[n as i64, cols as i64], cfg),
            _ => on_cuda::<f32>(&name, &[x, b, dy], x.dims(), &[n as i64, cols as i64], cfg),
        };
    }
    match x.dtype() {
        DType::F64 => on_cpu::<f64>(&[x, b, dy], n, x.dims(), |d, dz| cpu::backward(&d[0], &d[1], &d[2], dz)),
        _ => on_cpu::<f32>(&[x, b, dy], n, x.dims(), |d, dz| cpu::backward(&d[0], &d[1], &d[2], dz)),
    }
}

fn bias_grad(dz: &Tensor, cols: usize) -> Result<Tensor> {
    let rows = dz.dims()[0];
    if dz.device().is_cuda() {
        // One block of 256 threads per column (the kernel's tree reduction needs that size).
        let cfg = LaunchConfig::linear(cols.max(1) as u32, 256);
        let name = kernel_name("bias_grad", dz.dtype());
        if cols == 0 {
            return Tensor::zeros([0], dz.dtype(), dz.device());
        }
        return match dz.dtype() {
            DType::F64 => on_cuda::<f64>(&name, &[dz], &[cols], &[rows as i64, cols as i64], cfg),
            _ => on_cuda::<f32>(&name, &[dz], &[cols], &[rows as i64, cols as i64], cfg),
        };
    }
    match dz.dtype() {
        DType::F64 => on_cpu::<f64>(&[dz], cols, &[cols], |d, db| cpu::bias_grad(&d[0], db)),
        _ => on_cpu::<f32>(&[dz], cols, &[cols], |d, db| cpu::bias_grad(&d[0], db)),
    }
}
