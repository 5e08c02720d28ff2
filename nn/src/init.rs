//! Parameter initialisation, as `torch.nn.init`: uniform, normal, constant, xavier
//! (Glorot) and kaiming (He), with PyTorch's fan and gain rules.
//!
//! Every function draws from the process-wide default generator (seeded by
//! [`stapes_tensor::manual_seed`]), or from an explicit [`Generator`] with the `_with`
//! variants, so a model is initialised reproducibly for a seed. The streams differ from
//! PyTorch's (a different generator), so parity tests load PyTorch's weights instead; the
//! distributions (bounds, standard deviations) are the same.

use stapes_tensor::{with_default_generator, DType, Device, Error, Generator, Result, Shape, Tensor};

/// The nonlinearity a layer is followed by, for [`calculate_gain`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// Linear, conv and sigmoid layers: gain 1.
    Linear,
    /// Sigmoid: gain 1.
    Sigmoid,
    /// Tanh: gain 5/3.
    Tanh,
    /// ReLU: gain √2.
    Relu,
    /// Leaky ReLU with the given negative slope: gain √(2 / (1 + slope²)).
    LeakyRelu(f64),
    /// SELU: gain 3/4.
    Selu,
}

/// The recommended gain for a nonlinearity (`torch.nn.init.calculate_gain`).
pub fn calculate_gain(nl: Nonlinearity) -> f64 {
    match nl {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu(slope) => (2.0 / (1.0 + slope * slope)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// `(fan_in, fan_out)` of a weight of shape `[out, in, *kernel]`, as PyTorch computes them:
/// `fan_in = in * prod(kernel)`, `fan_out = out * prod(kernel)`. Needs at least 2 dims.
pub fn calculate_fan_in_and_fan_out(dims: &[usize]) -> Result<(usize, usize)> {
    if dims.len() < 2 {
        return Err(Error::shape(
            "calculate_fan_in_and_fan_out",
            format!("fan in and fan out need a tensor with at least 2 dims, got shape {dims:?}"),
        ));
    }
    let receptive: usize = dims[2..].iter().product();
    Ok((dims[1] * receptive, dims[0] * receptive))
}

/// Which fan kaiming initialisation preserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// Preserve the variance of the forward activations (the default).
    FanIn,
    /// Preserve the variance of the backward gradients.
    FanOut,
}

fn float_dtype(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype, msg: "initialisation produces floating point" })
    }
}

/// Uniform samples in `[lo, hi)` from `gen`.
pub fn uniform_with(
    gen: &mut Generator,
    shape: impl Into<Shape>,
    lo: f64,
    hi: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    float_dtype("init::uniform", dtype)?;
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(Error::invalid("init::uniform", format!("needs lo <= hi, got lo = {lo}, hi = {hi}")));
    }
    Tensor::rand_with(gen, lo, hi, shape, dtype, device)
}

/// Normal samples with `mean` and `std` from `gen`.
pub fn normal_with(
    gen: &mut Generator,
    shape: impl Into<Shape>,
    mean: f64,
    std: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    float_dtype("init::normal", dtype)?;
    if std.is_nan() || std < 0.0 {
        return Err(Error::invalid("init::normal", format!("std must be >= 0, got {std}")));
    }
    Tensor::randn_with(gen, mean, std, shape, dtype, device)
}

/// Uniform samples in `[lo, hi)` from the default generator (`nn.init.uniform_`).
pub fn uniform(shape: impl Into<Shape>, lo: f64, hi: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    with_default_generator(|g| uniform_with(g, shape, lo, hi, dtype, device))
}

/// Normal samples from the default generator (`nn.init.normal_`).
pub fn normal(shape: impl Into<Shape>, mean: f64, std: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    with_default_generator(|g| normal_with(g, shape, mean, std, dtype, device))
}

/// Xavier/Glorot uniform: `U(-b, b)` with `b = gain * sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(shape: impl Into<Shape>, gain: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    let (fi, fo) = calculate_fan_in_and_fan_out(shape.dims())?;
    let b = gain * (6.0 / (fi + fo) as f64).sqrt();
    uniform(shape, -b, b, dtype, device)
}

/// Xavier/Glorot normal: `N(0, std²)` with `std = gain * sqrt(2 / (fan_in + fan_out))`.
pub fn xavier_normal(shape: impl Into<Shape>, gain: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    let (fi, fo) = calculate_fan_in_and_fan_out(shape.dims())?;
    let std = gain * (2.0 / (fi + fo) as f64).sqrt();
    normal(shape, 0.0, std, dtype, device)
}

fn kaiming_std(op: &'static str, dims: &[usize], mode: FanMode, nl: Nonlinearity) -> Result<f64> {
    let (fi, fo) = calculate_fan_in_and_fan_out(dims)?;
    let fan = match mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    };
    if fan == 0 {
        return Err(Error::invalid(op, format!("the fan of shape {dims:?} is zero")));
    }
    Ok(calculate_gain(nl) / (fan as f64).sqrt())
}

/// Kaiming/He uniform: `U(-b, b)` with `b = gain * sqrt(3 / fan)`. PyTorch's default for
/// Linear and Conv weights is `kaiming_uniform(.., FanIn, LeakyRelu(√5))`, which gives
/// `b = 1/sqrt(fan_in)`.
pub fn kaiming_uniform(
    shape: impl Into<Shape>,
    mode: FanMode,
    nl: Nonlinearity,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let b = 3f64.sqrt() * kaiming_std("init::kaiming_uniform", shape.dims(), mode, nl)?;
    uniform(shape, -b, b, dtype, device)
}

/// Kaiming/He normal: `N(0, std²)` with `std = gain / sqrt(fan)`.
pub fn kaiming_normal(
    shape: impl Into<Shape>,
    mode: FanMode,
    nl: Nonlinearity,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let std = kaiming_std("init::kaiming_normal", shape.dims(), mode, nl)?;
    normal(shape, 0.0, std, dtype, device)
}

/// The weight and bias of a Linear or Conv layer as PyTorch's `reset_parameters` makes them:
/// weight `U(±1/sqrt(fan_in))` (kaiming uniform with a = √5) and bias `U(±1/sqrt(fan_in))`.
pub fn torch_default_weight_bias(
    weight_dims: &[usize],
    bias: bool,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let w = kaiming_uniform(weight_dims, FanMode::FanIn, Nonlinearity::LeakyRelu(5f64.sqrt()), dtype, device)?;
    let b = if bias {
        let (fan_in, _) = calculate_fan_in_and_fan_out(weight_dims)?;
        let bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
        Some(uniform(weight_dims[0], -bound, bound, dtype, device)?)
    } else {
        None
    };
    Ok((w, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Tests that seed the process-wide generator run one at a time.
    static SEED_LOCK: Mutex<()> = Mutex::new(());

    fn stats(t: &Tensor) -> (f64, f64, f64) {
        let v = t.to_vec_f64().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let maxabs = v.iter().fold(0f64, |m, x| m.max(x.abs()));
        (mean, var.sqrt(), maxabs)
    }

    #[test]
    fn fans_and_gains() {
        assert_eq!(calculate_fan_in_and_fan_out(&[8, 3, 5, 5]).unwrap(), (75, 200));
        assert!(calculate_fan_in_and_fan_out(&[8]).is_err());
        assert!((calculate_gain(Nonlinearity::LeakyRelu(5f64.sqrt())) - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn distributions_have_the_torch_bounds_and_spreads() {
        let _l = SEED_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        stapes_tensor::manual_seed(3);
        let d = Device::Cpu;
        let (w, b) = torch_default_weight_bias(&[256, 400], true, DType::F32, &d).unwrap();
        let bound = 1.0 / 20.0;
        let (m, s, mx) = stats(&w);
        assert!(mx <= bound && mx > 0.99 * bound, "{mx}");
        assert!(m.abs() < 1e-3 && (s - bound / 3f64.sqrt()).abs() < 1e-3, "{m} {s}");
        assert!(stats(&b.unwrap()).2 <= bound);
        let x = xavier_normal([300, 500], 1.0, DType::F32, &d).unwrap();
        assert!((stats(&x).1 - (2.0f64 / 800.0).sqrt()).abs() < 2e-3);
        let k = kaiming_normal([300, 500], FanMode::FanOut, Nonlinearity::Relu, DType::F64, &d).unwrap();
        assert!((stats(&k).1 - (2.0f64 / 300.0).sqrt()).abs() < 2e-3);
        assert!(uniform(3, 1.0, 0.0, DType::F32, &d).is_err());
        assert!(normal(3, 0.0, 1.0, DType::I64, &d).is_err());
    }

    #[test]
    fn seeded_is_reproducible() {
        let _l = SEED_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        stapes_tensor::manual_seed(11);
        let a = uniform(10, -1.0, 1.0, DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap();
        stapes_tensor::manual_seed(11);
        let b = uniform(10, -1.0, 1.0, DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
    }
}
