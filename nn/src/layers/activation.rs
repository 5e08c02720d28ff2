//! Parameter-free layers named as in `torch.nn`: the activations `ReLU`, `LeakyReLU`, `GELU`
//! (exact and tanh approximation), `SiLU`, `Tanh`, `Sigmoid`, `Softmax`, `LogSoftmax`, and
//! the shape layers `Identity` and `Flatten`, so they can be chained in a
//! [`super::Sequential`].

use crate::module::{Forward, Module};
use stapes_autograd::Var;
use stapes_tensor::{CmpOp, Dim, Error, Result};

macro_rules! unit_activation {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            /// The layer (it has no arguments).
            pub fn new() -> Self {
                $name
            }
        }

        impl Module for $name {}

        impl Forward for $name {
            fn forward(&self, $x: &Var) -> Result<Var> {
                $body
            }
        }
    };
}

unit_activation!(
    /// `nn.ReLU`: `max(x, 0)` (gradient 0 at 0, as PyTorch).
    ReLU,
    |x| x.relu()
);
unit_activation!(
    /// `nn.Tanh`.
    Tanh,
    |x| x.tanh()
);
unit_activation!(
    /// `nn.Sigmoid`: `1 / (1 + e^-x)`.
    Sigmoid,
    |x| x.sigmoid()
);
unit_activation!(
    /// `nn.SiLU` (swish): `x * sigmoid(x)`.
    SiLU,
    |x| x.mul(&x.sigmoid()?)
);
unit_activation!(
    /// `nn.Identity`: returns its input.
    Identity,
    |x| Ok(x.clone())
);

/// Which GELU formula [`GELU`] uses (PyTorch's `approximate` argument).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeluApproximate {
    /// `"none"`: `x * Φ(x)` with the exact normal CDF.
    #[default]
    None,
    /// `"tanh"`: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    Tanh,
}

/// `nn.GELU(approximate=...)`.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GELU {
    /// The formula.
    pub approximate: GeluApproximate,
}

impl GELU {
    /// The exact GELU (`approximate="none"`).
    pub fn new() -> Self {
        GELU { approximate: GeluApproximate::None }
    }
    /// GELU with the given formula.
    pub fn with_approximate(approximate: GeluApproximate) -> Self {
        GELU { approximate }
    }
}

impl Module for GELU {}

impl Forward for GELU {
    fn forward(&self, x: &Var) -> Result<Var> {
        match self.approximate {
            GeluApproximate::None => x.gelu(),
            GeluApproximate::Tanh => x.gelu_tanh(),
        }
    }
}

/// `nn.LeakyReLU(negative_slope=0.01)`: `x` for `x > 0`, `negative_slope * x` otherwise (the
/// gradient at 0 is `negative_slope`, as PyTorch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyReLU {
    /// Slope for `x <= 0`.
    pub negative_slope: f64,
}

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU { negative_slope: 0.01 }
    }
}

impl LeakyReLU {
    /// A leaky ReLU with the given slope (finite).
    pub fn new(negative_slope: f64) -> Result<Self> {
        if !negative_slope.is_finite() {
            return Err(Error::invalid("LeakyReLU", format!("negative_slope must be finite, got {negative_slope}")));
        }
        Ok(LeakyReLU { negative_slope })
    }
}

impl Module for LeakyReLU {}

impl Forward for LeakyReLU {
    fn forward(&self, x: &Var) -> Result<Var> {
        let positive = x.tensor().cmp_scalar(0.0, CmpOp::Gt)?;
        Var::where_cond(&positive, x, &x.mul_scalar(self.negative_slope)?)
    }
}

/// `nn.Hardtanh(min_val, max_val)`: `x` clamped into `[min_val, max_val]`; DeepSpeech2 uses
/// `Hardtanh(0, 20)` (a clipped ReLU). The gradient is 1 strictly inside the range and 0
/// outside; at the two boundary points it is 1 (PyTorch's hardtanh gives 0 there, a
/// measure-zero difference).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hardtanh {
    /// Lower bound.
    pub min_val: f64,
    /// Upper bound.
    pub max_val: f64,
}

impl Default for Hardtanh {
    fn default() -> Self {
        Hardtanh { min_val: -1.0, max_val: 1.0 }
    }
}

impl Hardtanh {
    /// A hardtanh with finite bounds, `min_val < max_val`.
    pub fn new(min_val: f64, max_val: f64) -> Result<Self> {
        if !(min_val.is_finite() && max_val.is_finite() && min_val < max_val) {
            return Err(Error::invalid(
                "Hardtanh",
                format!("needs finite bounds with min_val < max_val, got {min_val} and {max_val}"),
            ));
        }
        Ok(Hardtanh { min_val, max_val })
    }
}

impl Module for Hardtanh {}

impl Forward for Hardtanh {
    fn forward(&self, x: &Var) -> Result<Var> {
        x.clamp(self.min_val, self.max_val)
    }
}

/// `nn.Softmax(dim)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    /// The dim that sums to 1 (negative counts from the end).
    pub dim: i64,
}

impl Softmax {
    /// Softmax along `dim`.
    pub fn new(dim: i64) -> Self {
        Softmax { dim }
    }
}

impl Module for Softmax {}

impl Forward for Softmax {
    fn forward(&self, x: &Var) -> Result<Var> {
        x.softmax(self.dim)
    }
}

/// `nn.LogSoftmax(dim)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSoftmax {
    /// The normalised dim (negative counts from the end).
    pub dim: i64,
}

impl LogSoftmax {
    /// Log-softmax along `dim`.
    pub fn new(dim: i64) -> Self {
        LogSoftmax { dim }
    }
}

impl Module for LogSoftmax {}

impl Forward for LogSoftmax {
    fn forward(&self, x: &Var) -> Result<Var> {
        x.log_softmax(self.dim)
    }
}

/// `nn.Flatten(start_dim=1, end_dim=-1)`: merges dims `start_dim..=end_dim` into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flatten {
    /// First merged dim (negative counts from the end).
    pub start_dim: i64,
    /// Last merged dim (negative counts from the end).
    pub end_dim: i64,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1, end_dim: -1 }
    }
}

impl Flatten {
    /// Flattens `start_dim..=end_dim`.
    pub fn new(start_dim: i64, end_dim: i64) -> Self {
        Flatten { start_dim, end_dim }
    }
}

impl Module for Flatten {}

impl Forward for Flatten {
    fn forward(&self, x: &Var) -> Result<Var> {
        let dims = x.dims();
        if dims.is_empty() {
            // PyTorch flattens a scalar to one element.
            return x.reshape([1]);
        }
        let s = self.start_dim.to_index(dims.len(), "Flatten")?;
        let e = self.end_dim.to_index(dims.len(), "Flatten")?;
        if s > e {
            return Err(Error::invalid(
                "Flatten",
                format!("start_dim {} comes after end_dim {} for shape {dims:?}", self.start_dim, self.end_dim),
            ));
        }
        let mut shape = dims[..s].to_vec();
        shape.push(dims[s..=e].iter().product());
        shape.extend_from_slice(&dims[e + 1..]);
        x.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::{DType, Device, Tensor};

    fn var(v: Vec<f32>, shape: &[usize]) -> Var {
        Var::leaf(Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
    }

    #[test]
    fn leaky_relu_values_and_gradient_at_zero() {
        let x = var(vec![-2.0, 0.0, 3.0], &[3]);
        let y = LeakyReLU::new(0.2).unwrap().forward(&x).unwrap();
        assert_eq!(y.tensor().to_vec::<f32>().unwrap(), [-0.4, 0.0, 3.0]);
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.2, 0.2, 1.0]);
        assert!(LeakyReLU::new(f64::NAN).is_err());
        assert_eq!(LeakyReLU::default().negative_slope, 0.01);
    }

    #[test]
    fn flatten_shapes_and_errors() {
        let x = Var::constant(Tensor::zeros([2, 3, 4, 5], DType::F32, &Device::Cpu).unwrap());
        assert_eq!(Flatten::default().forward(&x).unwrap().dims(), [2, 60]);
        assert_eq!(Flatten::new(0, 1).forward(&x).unwrap().dims(), [6, 4, 5]);
        assert_eq!(Flatten::new(-2, -1).forward(&x).unwrap().dims(), [2, 3, 20]);
        assert_eq!(Flatten::new(2, 2).forward(&x).unwrap().dims(), [2, 3, 4, 5]);
        assert!(Flatten::new(2, 1).forward(&x).is_err());
        assert!(Flatten::new(0, 4).forward(&x).is_err());
        let s = Var::constant(Tensor::zeros((), DType::F32, &Device::Cpu).unwrap());
        assert_eq!(Flatten::default().forward(&s).unwrap().dims(), [1]);
    }

    #[test]
    fn simple_activations() {
        let x = var(vec![-1.0, 0.5], &[2]);
        let relu = ReLU::new().forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        assert_eq!(relu, [0.0, 0.5]);
        let silu = SiLU.forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        assert!((silu[0] + 1.0 / (1.0 + 1f32.exp())).abs() < 1e-6);
        let id = Identity.forward(&x).unwrap();
        assert_eq!(id.tensor().to_vec::<f32>().unwrap(), [-1.0, 0.5]);
        let g = GELU::new().forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        let gt = GELU::with_approximate(GeluApproximate::Tanh).forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        assert!((g[0] + 0.158_655_25).abs() < 1e-6 && (g[0] - gt[0]).abs() < 1e-3 && g[0] != gt[0]);
        let sm = Softmax::new(-1).forward(&x).unwrap().tensor().to_vec::<f32>().unwrap();
        assert!((sm[0] + sm[1] - 1.0).abs() < 1e-6);
        assert!(Softmax::new(1).forward(&x).is_err());
    }
}
