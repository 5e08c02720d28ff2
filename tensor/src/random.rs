//! Seeded random tensors: uniform, normal and Bernoulli, reproducible for a seed.
//!
//! The generator is xoshiro256++ seeded through SplitMix64 (the scheme of the `rand` crate's
//! small generators). A process-wide default generator is set by [`manual_seed`], like
//! `torch.manual_seed`; explicit [`Generator`]s give independent streams.
//!
//! On a CUDA device the values come from a counter-based generator (Philox4x32-10,
//! `kernels/cuda/random.cu`) keyed by one 64-bit draw of the host generator: element i depends
//! only on that key and i, so a seed gives the same tensor whatever the launch shape, on every
//! GPU and on the emulator. As in PyTorch, CPU and CUDA streams of one seed differ.

use crate::{DType, Device, Error, Result, Shape, Tensor, WithDType};
use std::sync::Mutex;

/// A seeded pseudo-random generator (xoshiro256++).
#[derive(Clone, Debug)]
pub struct Generator {
    s: [u64; 4],
}

impl Generator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Generator { s: [next(), next(), next(), next()] }
    }

    /// The internal state, for checkpoints (restore with [`Generator::from_state`]).
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator continuing from a saved [`Generator::state`]. The all-zero state is not a
    /// valid xoshiro state and is an error.
    pub fn from_state(s: [u64; 4]) -> Result<Self> {
        if s == [0; 4] {
            return Err(Error::invalid("Generator::from_state", "the all-zero state is invalid for xoshiro256++"));
        }
        Ok(Generator { s })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform sample in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

static DEFAULT: Mutex<Option<Generator>> = Mutex::new(None);

/// Seeds the process-wide default generator (like `torch.manual_seed`).
pub fn manual_seed(seed: u64) {
    *DEFAULT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Generator::new(seed));
}

/// The state of the process-wide default generator (like `torch.get_rng_state`).
pub fn default_generator_state() -> [u64; 4] {
    with_default(|g| g.state())
}

/// Restores the process-wide default generator (like `torch.set_rng_state`).
pub fn set_default_generator_state(s: [u64; 4]) -> Result<()> {
    let g = Generator::from_state(s)?;
    *DEFAULT.lock().unwrap_or_else(|e| e.into_inner()) = Some(g);
    Ok(())
}

/// Runs `f` with the process-wide default generator (the one [`manual_seed`] seeds), for
/// code outside this crate that draws random numbers (initialisation, dropout masks).
pub fn with_default_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    with_default(f)
}

fn with_default<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    let mut g = DEFAULT.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Generator::new(0)))
}

/// What a CUDA random fill draws.
#[derive(Clone, Copy)]
enum Draw {
    /// Uniform in `[lo, hi)`.
    Uniform(f64, f64),
    /// Normal with mean and standard deviation.
    Normal(f64, f64),
}

/// A new CUDA tensor of `shape` and float `dtype` filled by the Philox kernels, keyed by one
/// draw of `gen`.
fn cuda_random(
    op: &'static str,
    gen: &mut Generator,
    draw: Draw,
    shape: Shape,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    use stapes_kernels::cuda::random as kr;
    let backend = crate::cuda::backend(op, device)?;
    let key = gen.next_u64();
    let buf = all_dispatch!(dtype, |T| {
        let mut b = backend.alloc::<T>(shape.elem_count()).map_err(crate::cuda::cuda_err(op))?;
        match draw {
            Draw::Uniform(lo, hi) => kr::uniform(&backend, &mut b, key, 0, lo, hi),
            Draw::Normal(mean, std) => kr::normal(&backend, &mut b, key, 0, mean, std),
        }
        .map_err(crate::cuda::cuda_err(op))?;
        T::into_cuda(b)
    });
    Ok(Tensor::from_cuda_buf(buf, backend, shape, *device))
}

impl Tensor {
    /// Bernoulli draws on a CUDA device; probabilities outside [0, 1] (or NaN) are an error, as
    /// on the CPU (checked by the kernel, one flag downloaded).
    fn cuda_bernoulli(&self, gen: &mut Generator) -> Result<Tensor> {
        const OP: &str = "bernoulli";
        let p = self.contiguous()?;
        let (s, backend) = p.cuda_parts(OP)?;
        let n = self.elem_count();
        let key = gen.next_u64();
        let (bad, buf) = crate::cuda::cuda_buf_dispatch!(&s.buf, |b: T| {
            let mut o = backend.alloc::<T>(n).map_err(crate::cuda::cuda_err(OP))?;
            let bad = stapes_kernels::cuda::random::bernoulli(backend, b, &mut o, n, key, 0)
                .map_err(crate::cuda::cuda_err(OP))?;
            (bad.map(WithDType::to_f64), T::into_cuda(o))
        });
        if let Some(bad) = bad {
            return Err(Error::invalid(OP, format!("probabilities must be in [0, 1], found {bad}")));
        }
        Ok(Tensor::from_cuda_buf(buf, backend.clone(), self.shape().clone(), *self.device()))
    }
}

fn check_float_dtype(op: &'static str, dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::UnsupportedDType { op, dtype, msg: "random tensors are floating point" });
    }
    Ok(())
}

impl Tensor {
    /// Uniform samples in `[lo, hi)` from `gen`.
    pub fn rand_with(
        gen: &mut Generator,
        lo: f64,
        hi: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        check_float_dtype("rand", dtype)?;
        let shape = shape.into();
        if device.is_cuda() {
            return cuda_random("rand", gen, Draw::Uniform(lo, hi), shape, dtype, device);
        }
        let v: Vec<f64> = (0..shape.elem_count()).map(|_| lo + (hi - lo) * gen.next_f64()).collect();
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
    }
    /// Normal samples with `mean` and `std` from `gen`.
    pub fn randn_with(
        gen: &mut Generator,
        mean: f64,
        std: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        check_float_dtype("randn", dtype)?;
        let shape = shape.into();
        if device.is_cuda() {
            return cuda_random("randn", gen, Draw::Normal(mean, std), shape, dtype, device);
        }
        let v: Vec<f64> = (0..shape.elem_count()).map(|_| mean + std * gen.next_normal()).collect();
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
    }
    /// Uniform samples in `[0, 1)` from the default generator.
    pub fn rand(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        with_default(|g| Tensor::rand_with(g, 0.0, 1.0, shape, dtype, device))
    }
    /// Standard normal samples from the default generator.
    pub fn randn(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        with_default(|g| Tensor::randn_with(g, 0.0, 1.0, shape, dtype, device))
    }
    /// Bernoulli samples: 1 with probability `p` (per element of `self`, a float tensor of
    /// probabilities), else 0, in the dtype of `self`.
    pub fn bernoulli_with(&self, gen: &mut Generator) -> Result<Tensor> {
        check_float_dtype("bernoulli", self.dtype())?;
        if self.device().is_cuda() {
            return self.cuda_bernoulli(gen);
        }
        let p = self.to_vec_f64()?;
        if let Some(bad) = p.iter().find(|&&v| !(0.0..=1.0).contains(&v)) {
            return Err(Error::invalid("bernoulli", format!("probabilities must be in [0, 1], found {bad}")));
        }
        let v: Vec<f64> = p.iter().map(|&pi| if gen.next_f64() < pi { 1.0 } else { 0.0 }).collect();
        Tensor::from_vec(v, self.shape(), self.device())?.to_dtype(self.dtype())
    }
    /// Bernoulli samples from the default generator.
    pub fn bernoulli(&self) -> Result<Tensor> {
        with_default(|g| self.bernoulli_with(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_well_distributed() {
        let a = Tensor::randn_with(&mut Generator::new(7), 0.0, 1.0, [10000], DType::F64, &Device::Cpu).unwrap();
        let b = Tensor::randn_with(&mut Generator::new(7), 0.0, 1.0, [10000], DType::F64, &Device::Cpu).unwrap();
        assert!(a.equal(&b).unwrap());
        let v = a.to_vec::<f64>().unwrap();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        let p = Tensor::full(0.3, [10000], DType::F32, &Device::Cpu).unwrap();
        let m = p.bernoulli_with(&mut Generator::new(1)).unwrap().to_vec_f64().unwrap();
        let frac = m.iter().sum::<f64>() / m.len() as f64;
        assert!((frac - 0.3).abs() < 0.03);
    }
}
