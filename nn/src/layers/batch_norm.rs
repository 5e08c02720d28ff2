//! `BatchNorm1d`, `BatchNorm2d` and `BatchNorm3d`: batch normalisation over the channel dim
//! with PyTorch's running statistics (`running_mean`, `running_var`, and the i64 scalar
//! `num_batches_tracked`), momentum or cumulative averaging, and train/eval behaviour.

use crate::module::{Buffer, Forward, Module, Param, TrainingFlag};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

/// The optional arguments of a batch-norm layer, PyTorch's defaults in [`Default`]:
/// `eps = 1e-5`, `momentum = Some(0.1)`, affine, tracking running statistics, f32 on the CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the new batch statistic in the running averages; `None` = a cumulative
    /// moving average (the running statistics are the mean over all batches seen).
    pub momentum: Option<f64>,
    /// Whether the layer has a learned per-channel `weight` (ones) and `bias` (zeros).
    pub affine: bool,
    /// Whether the layer keeps running statistics (used in evaluation). Without them the
    /// batch statistics are used in both modes, as in PyTorch.
    pub track_running_stats: bool,
    /// Parameter and statistic dtype.
    pub dtype: DType,
    /// Parameter and statistic device.
    pub device: Device,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// Batch normalisation over the channel dim 1 of inputs with `D` spatial dims (PyTorch's
/// `_BatchNorm`); use it through [`BatchNorm1d`] (`[N, C]` or `[N, C, L]`), [`BatchNorm2d`]
/// (`[N, C, H, W]`) or [`BatchNorm3d`] (`[N, C, D, H, W]`).
///
/// In training the batch's mean and biased variance normalise the input, and the running
/// statistics (if tracked) move towards the batch mean and the *unbiased* batch variance:
/// `running = (1 - m) * running + m * batch`, with `m = momentum`, or `m = 1 /
/// num_batches_tracked` for a cumulative average. In evaluation the running statistics are
/// used. The state-dict names are PyTorch's: `weight`, `bias`, `running_mean`,
/// `running_var`, `num_batches_tracked`.
pub struct BatchNorm<const D: usize> {
    /// Channels (`C`).
    pub num_features: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Running-average factor; `None` = cumulative moving average.
    pub momentum: Option<f64>,
    /// `[C]` scale, if affine.
    pub weight: Option<Param>,
    /// `[C]` shift, if affine.
    pub bias: Option<Param>,
    /// `[C]` running mean, if tracking running statistics.
    pub running_mean: Option<Buffer>,
    /// `[C]` running (unbiased) variance, if tracking running statistics.
    pub running_var: Option<Buffer>,
    /// Number of training batches seen, an i64 scalar, if tracking running statistics.
    pub num_batches_tracked: Option<Buffer>,
    training: TrainingFlag,
}

/// `nn.BatchNorm1d`: inputs `[N, C]` or `[N, C, L]`.
pub type BatchNorm1d = BatchNorm<1>;
/// `nn.BatchNorm2d`: inputs `[N, C, H, W]`.
pub type BatchNorm2d = BatchNorm<2>;
/// `nn.BatchNorm3d`: inputs `[N, C, D, H, W]`.
pub type BatchNorm3d = BatchNorm<3>;

impl<const D: usize> BatchNorm<D> {
    fn name() -> &'static str {
        match D {
            1 => "BatchNorm1d",
            2 => "BatchNorm2d",
            3 => "BatchNorm3d",
            _ => "BatchNorm",
        }
    }

    /// A layer for `num_features` channels with PyTorch's defaults.
    pub fn new(num_features: usize) -> Result<Self> {
        Self::new_with(num_features, BatchNormConfig::default())
    }

    /// The full constructor. Zero features, a negative or NaN `eps`, or a momentum outside
    /// `[0, 1]` are errors.
    pub fn new_with(num_features: usize, cfg: BatchNormConfig) -> Result<Self> {
        let op = Self::name();
        if !(1..=3).contains(&D) {
            return Err(Error::invalid(op, format!("batch norm supports 1 to 3 spatial dims, got {D}")));
        }
        if num_features == 0 {
            return Err(Error::invalid(op, "num_features must be positive, got 0"));
        }
        if cfg.eps.is_nan() || cfg.eps < 0.0 {
            return Err(Error::invalid(op, format!("eps must be >= 0, got {}", cfg.eps)));
        }
        if let Some(m) = cfg.momentum {
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::invalid(op, format!("momentum must be in [0, 1] (or None), got {m}")));
            }
        }
        if !cfg.dtype.is_float() {
            return Err(Error::UnsupportedDType { op, dtype: cfg.dtype, msg: "batch norm holds floating point" });
        }
        let (dt, dev) = (cfg.dtype, &cfg.device);
        let (weight, bias) = if cfg.affine {
            (
                Some(Param::new(Tensor::ones(num_features, dt, dev)?)),
                Some(Param::new(Tensor::zeros(num_features, dt, dev)?)),
            )
        } else {
            (None, None)
        };
        let (running_mean, running_var, num_batches_tracked) = if cfg.track_running_stats {
            (
                Some(Buffer::new(Tensor::zeros(num_features, dt, dev)?)),
                Some(Buffer::new(Tensor::ones(num_features, dt, dev)?)),
                Some(Buffer::new(Tensor::zeros((), DType::I64, dev)?)),
            )
        } else {
            (None, None, None)
        };
        Ok(BatchNorm {
            num_features,
            eps: cfg.eps,
            momentum: cfg.momentum,
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            training: TrainingFlag::default(),
        })
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training.get()
    }

    /// Whether the layer has a learned weight and bias.
    pub fn affine(&self) -> bool {
        self.weight.is_some()
    }

    /// Whether the layer tracks running statistics.
    pub fn track_running_stats(&self) -> bool {
        self.running_mean.is_some()
    }

    /// Resets the running statistics to mean 0, variance 1, no batches tracked.
    pub fn reset_running_stats(&self) -> Result<()> {
        if let (Some(m), Some(v), Some(n)) = (&self.running_mean, &self.running_var, &self.num_batches_tracked) {
            let t = m.tensor();
            m.set_tensor(t.zeros_like()?)?;
            v.set_tensor(t.ones_like()?)?;
            n.set_tensor(Tensor::zeros((), DType::I64, t.device())?)?;
        }
        Ok(())
    }

    /// Resets the running statistics and the affine parameters (weight 1, bias 0).
    pub fn reset_parameters(&self) -> Result<()> {
        self.reset_running_stats()?;
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            w.set_tensor(w.tensor().ones_like()?)?;
            b.set_tensor(b.tensor().zeros_like()?)?;
        }
        Ok(())
    }

    fn check_input(&self, x: &Var) -> Result<()> {
        let r = x.dims().len();
        let ok = if D == 1 { r == 2 || r == 3 } else { r == D + 2 };
        if !ok {
            let want = if D == 1 { "2D or 3D".to_string() } else { format!("{}D", D + 2) };
            return Err(Error::shape(
                Self::name(),
                format!("expected {want} input, got {r}D input of shape {:?}", x.dims()),
            ));
        }
        if x.dims()[1] != self.num_features {
            return Err(Error::shape(
                Self::name(),
                format!("expected input {:?} to have {} channels in dim 1", x.dims(), self.num_features),
            ));
        }
        Ok(())
    }
}

impl<const D: usize> Module for BatchNorm<D> {
    fn local_params(&self) -> Vec<(String, Param)> {
        let mut v = Vec::new();
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            v.push(("weight".to_string(), w.clone()));
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
    fn local_buffers(&self) -> Vec<(String, Buffer)> {
        let mut v = Vec::new();
        if let (Some(m), Some(r), Some(n)) = (&self.running_mean, &self.running_var, &self.num_batches_tracked) {
            v.push(("running_mean".to_string(), m.clone()));
            v.push(("running_var".to_string(), r.clone()));
            v.push(("num_batches_tracked".to_string(), n.clone()));
        }
        v
    }
    fn set_local_training(&self, training: bool) {
        self.training.set(training)
    }
}

impl<const D: usize> Forward for BatchNorm<D> {
    fn forward(&self, x: &Var) -> Result<Var> {
        self.check_input(x)?;
        let training = self.training.get();
        let rm = self.running_mean.as_ref().map(|b| b.tensor());
        let rv = self.running_var.as_ref().map(|b| b.tensor());
        // As PyTorch: the batch statistics are used in training, and in evaluation when no
        // running statistics are kept.
        let use_batch_stats = training || rm.is_none();
        let updating = training && rm.is_some();
        let batches = match (&self.num_batches_tracked, updating) {
            (Some(n), true) => Some(n.tensor().to_scalar::<i64>()? + 1),
            _ => None,
        };
        let factor = match (self.momentum, batches) {
            (Some(m), _) => m,
            (None, Some(n)) => 1.0 / n as f64,
            (None, None) => 0.0,
        };
        let w = self.weight.as_ref().map(|p| p.var());
        let b = self.bias.as_ref().map(|p| p.var());
        let (y, stats) =
            x.batch_norm(rm.as_ref(), rv.as_ref(), w.as_ref(), b.as_ref(), use_batch_stats, factor, self.eps)?;
        if let (Some((m, v)), Some(bm), Some(bv)) = (stats, &self.running_mean, &self.running_var) {
            bm.set_tensor(m)?;
            bv.set_tensor(v)?;
        }
        if let (Some(n), Some(count)) = (&self.num_batches_tracked, batches) {
            n.set_tensor(Tensor::scalar(count, n.tensor().device())?)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> Vec<f64> {
        t.to_vec_f64().unwrap()
    }

    #[test]
    fn state_names_and_defaults() {
        let bn = BatchNorm2d::new(3).unwrap();
        let names: Vec<String> = bn.state_dict().into_keys().collect();
        assert_eq!(names, ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]);
        let nbt = bn.num_batches_tracked.as_ref().unwrap().tensor();
        assert_eq!((nbt.dtype(), nbt.dims().len()), (DType::I64, 0));
        assert_eq!(v(&bn.weight.as_ref().unwrap().tensor()), [1.0; 3]);
        assert_eq!(v(&bn.running_var.as_ref().unwrap().tensor()), [1.0; 3]);
        let plain = BatchNorm1d::new_with(
            4,
            BatchNormConfig { affine: false, track_running_stats: false, ..Default::default() },
        );
        assert!(plain.unwrap().state_dict().is_empty());
        // to_dtype converts the statistics but keeps the counter an integer.
        bn.to_dtype(DType::F64).unwrap();
        assert_eq!(bn.running_mean.as_ref().unwrap().tensor().dtype(), DType::F64);
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().tensor().dtype(), DType::I64);
    }

    #[test]
    fn train_updates_running_stats_and_eval_uses_them() {
        // One channel, values 1..=4 in a [2, 1, 2] input: mean 2.5, biased var 1.25,
        // unbiased var 5/3.
        let x = Var::constant(Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 1, 2], &Device::Cpu).unwrap());
        let bn = BatchNorm1d::new(1).unwrap();
        let y = v(bn.forward(&x).unwrap().tensor());
        let rs = 1.0 / (1.25f64 + 1e-5).sqrt();
        for (a, e) in y.iter().zip([-1.5, -0.5, 0.5, 1.5]) {
            assert!((a - e * rs).abs() < 1e-5, "{a} {}", e * rs);
        }
        let rm = v(&bn.running_mean.as_ref().unwrap().tensor())[0];
        let rv = v(&bn.running_var.as_ref().unwrap().tensor())[0];
        assert!((rm - 0.25).abs() < 1e-6 && (rv - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "{rm} {rv}");
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().tensor().to_scalar::<i64>().unwrap(), 1);
        bn.eval();
        let y = v(bn.forward(&x).unwrap().tensor());
        assert!((y[0] - (1.0 - rm) / (rv + 1e-5).sqrt()).abs() < 1e-5);
        // Evaluation leaves the statistics alone.
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().tensor().to_scalar::<i64>().unwrap(), 1);
        assert!((v(&bn.running_mean.as_ref().unwrap().tensor())[0] - rm).abs() == 0.0);
    }

    #[test]
    fn cumulative_average_and_untracked() {
        let cfg = BatchNormConfig { momentum: None, ..Default::default() };
        let bn = BatchNorm1d::new_with(1, cfg).unwrap();
        for (i, vals) in [[0.0f32, 2.0], [10.0, 12.0]].iter().enumerate() {
            bn.forward(&Var::constant(Tensor::from_slice(vals, [2, 1], &Device::Cpu).unwrap())).unwrap();
            let rm = v(&bn.running_mean.as_ref().unwrap().tensor())[0];
            assert!((rm - [1.0, 6.0][i]).abs() < 1e-6, "{rm}");
        }
        // Without running statistics, evaluation still normalises with the batch's.
        let cfg = BatchNormConfig { track_running_stats: false, ..Default::default() };
        let bn = BatchNorm1d::new_with(1, cfg).unwrap();
        bn.eval();
        let y = v(bn
            .forward(&Var::constant(Tensor::from_slice(&[3.0f32, 5.0], [2, 1], &Device::Cpu).unwrap()))
            .unwrap()
            .tensor());
        assert!((y[0] + 1.0).abs() < 1e-4 && (y[1] - 1.0).abs() < 1e-4, "{y:?}");
    }

    #[test]
    fn errors() {
        assert!(BatchNorm2d::new(0).is_err());
        assert!(BatchNorm2d::new_with(3, BatchNormConfig { momentum: Some(1.5), ..Default::default() }).is_err());
        assert!(BatchNorm2d::new_with(3, BatchNormConfig { eps: -1.0, ..Default::default() }).is_err());
        assert!(BatchNorm2d::new_with(3, BatchNormConfig { dtype: DType::I64, ..Default::default() }).is_err());
        assert!(BatchNorm::<4>::new(3).is_err());
        let bn = BatchNorm2d::new(3).unwrap();
        let e = bn.forward(&Var::constant(Tensor::zeros([2, 3, 4], DType::F32, &Device::Cpu).unwrap()));
        assert!(e.err().unwrap().to_string().contains("expected 4D input"));
        assert!(bn.forward(&Var::constant(Tensor::zeros([2, 4, 2, 2], DType::F32, &Device::Cpu).unwrap())).is_err());
        // One value per channel cannot be normalised in training; nothing is counted.
        assert!(bn.forward(&Var::constant(Tensor::zeros([1, 3, 1, 1], DType::F32, &Device::Cpu).unwrap())).is_err());
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().tensor().to_scalar::<i64>().unwrap(), 0);
        let b1 = BatchNorm1d::new(3).unwrap();
        assert!(b1.forward(&Var::constant(Tensor::zeros([2, 3, 2, 2], DType::F32, &Device::Cpu).unwrap())).is_err());
    }
}
