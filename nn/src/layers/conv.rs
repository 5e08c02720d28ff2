//! `Conv1d` and `Conv2d`: cross-correlation layers with PyTorch's arguments (stride, padding
//! including `"same"`/`"valid"`, dilation, groups, bias, zero or reflect padding mode) and
//! PyTorch's default initialisation.

use super::Size2;
use crate::init::torch_default_weight_bias;
use crate::module::{Forward, Module, Param};
use stapes_autograd::Var;
use stapes_tensor::{DType, Device, Error, PadMode, Result};

/// How a convolution pads its input: PyTorch's `padding` argument, which is either explicit
/// sizes or one of the strings `"same"` and `"valid"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPadding<P> {
    /// The same number of elements on both sides of each spatial dim.
    Explicit(P),
    /// `padding="same"`: the output has the input's length (needs stride 1). When the dilated
    /// kernel's extent minus one is odd, the extra element goes on the right, as in PyTorch.
    Same,
    /// `padding="valid"`: no padding.
    Valid,
}

/// How the padded border is filled (PyTorch's `padding_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaddingMode {
    /// `"zeros"`, the default.
    #[default]
    Zeros,
    /// `"reflect"`: mirror the input without repeating the edge; every pad must be smaller
    /// than the padded dim.
    Reflect,
}

/// The optional arguments of [`Conv1d`], PyTorch's defaults in [`Default`]: stride 1, padding
/// 0, dilation 1, groups 1, with bias, zero padding, f32 on the CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv1dConfig {
    /// Step between output positions.
    pub stride: usize,
    /// Input padding.
    pub padding: ConvPadding<usize>,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups: `in_channels` and `out_channels` must both divide by it.
    pub groups: usize,
    /// Whether the layer adds a learned bias.
    pub bias: bool,
    /// How the padded border is filled.
    pub padding_mode: PaddingMode,
    /// Parameter dtype.
    pub dtype: DType,
    /// Parameter device.
    pub device: Device,
}

impl Default for Conv1dConfig {
    fn default() -> Self {
        Conv1dConfig {
            stride: 1,
            padding: ConvPadding::Explicit(0),
            dilation: 1,
            groups: 1,
            bias: true,
            padding_mode: PaddingMode::Zeros,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// The optional arguments of [`Conv2d`] (per spatial dim `[height, width]`), PyTorch's
/// defaults in [`Default`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dConfig {
    /// Step between output positions.
    pub stride: [usize; 2],
    /// Input padding.
    pub padding: ConvPadding<[usize; 2]>,
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Channel groups: `in_channels` and `out_channels` must both divide by it.
    pub groups: usize,
    /// Whether the layer adds a learned bias.
    pub bias: bool,
    /// How the padded border is filled.
    pub padding_mode: PaddingMode,
    /// Parameter dtype.
    pub dtype: DType,
    /// Parameter device.
    pub device: Device,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: [1, 1],
            padding: ConvPadding::Explicit([0, 0]),
            dilation: [1, 1],
            groups: 1,
            bias: true,
            padding_mode: PaddingMode::Zeros,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// The builder setters Conv1dConfig and Conv2dConfig share (their per-dim ones differ).
macro_rules! conv_config_setters {
    ($cfg:ty) => {
        impl $cfg {
            /// `padding="same"` (stride 1 only).
            pub fn padding_same(mut self) -> Self {
                self.padding = ConvPadding::Same;
                self
            }
            /// Sets the channel groups.
            pub fn groups(mut self, groups: usize) -> Self {
                self.groups = groups;
                self
            }
            /// Whether the layer has a bias.
            pub fn bias(mut self, bias: bool) -> Self {
                self.bias = bias;
                self
            }
            /// Sets how the padded border is filled.
            pub fn padding_mode(mut self, mode: PaddingMode) -> Self {
                self.padding_mode = mode;
                self
            }
            /// Sets the parameters' dtype and device.
            pub fn to(mut self, dtype: DType, device: &Device) -> Self {
                self.dtype = dtype;
                self.device = *device;
                self
            }
        }
    };
}
conv_config_setters!(Conv1dConfig);
conv_config_setters!(Conv2dConfig);

impl Conv1dConfig {
    /// Sets the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    /// Sets an explicit padding on both sides.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = ConvPadding::Explicit(padding);
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }
}

impl Conv2dConfig {
    /// Sets the stride (one number or a pair).
    pub fn stride(mut self, stride: impl Into<Size2>) -> Self {
        self.stride = stride.into().0;
        self
    }
    /// Sets an explicit padding (one number or a pair).
    pub fn padding(mut self, padding: impl Into<Size2>) -> Self {
        self.padding = ConvPadding::Explicit(padding.into().0);
        self
    }
    /// Sets the dilation (one number or a pair).
    pub fn dilation(mut self, dilation: impl Into<Size2>) -> Self {
        self.dilation = dilation.into().0;
        self
    }
}

/// Checks the arguments shared by Conv1d and Conv2d (per-dim slices) and returns the
/// `(before, after)` padding of each spatial dim.
#[allow(clippy::too_many_arguments)]
fn check_conv_args(
    op: &'static str,
    in_channels: usize,
    out_channels: usize,
    kernel: &[usize],
    stride: &[usize],
    padding: ConvPadding<&[usize]>,
    dilation: &[usize],
    groups: usize,
) -> Result<Vec<(usize, usize)>> {
    if in_channels == 0 || out_channels == 0 {
        return Err(Error::invalid(
            op,
            format!("in_channels ({in_channels}) and out_channels ({out_channels}) must be positive"),
        ));
    }
    if groups == 0 {
        return Err(Error::invalid(op, "groups must be a positive integer, got 0"));
    }
    if !in_channels.is_multiple_of(groups) {
        return Err(Error::invalid(op, format!("in_channels ({in_channels}) must be divisible by groups ({groups})")));
    }
    if !out_channels.is_multiple_of(groups) {
        return Err(Error::invalid(
            op,
            format!("out_channels ({out_channels}) must be divisible by groups ({groups})"),
        ));
    }
    if kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
        return Err(Error::invalid(
            op,
            format!("kernel_size {kernel:?}, stride {stride:?} and dilation {dilation:?} must be positive"),
        ));
    }
    Ok(match padding {
        ConvPadding::Explicit(p) => p.iter().map(|&p| (p, p)).collect(),
        ConvPadding::Valid => vec![(0, 0); kernel.len()],
        ConvPadding::Same => {
            if stride.iter().any(|&s| s != 1) {
                return Err(Error::invalid(
                    op,
                    format!("padding='same' is not supported for strided convolutions (stride {stride:?})"),
                ));
            }
            kernel
                .iter()
                .zip(dilation)
                .map(|(&k, &d)| {
                    let total = d * (k - 1);
                    (total / 2, total - total / 2)
                })
                .collect()
        }
    })
}

/// Pads `x` (whose trailing dims are the spatial ones) for a convolution and returns the
/// padded input and the symmetric padding left for the convolution op itself. Zero padding
/// is left to the op, except the extra right-hand element of an asymmetric `"same"`; reflect
/// padding is applied here in full.
fn pad_input(x: &Var, pads: &[(usize, usize)], mode: PaddingMode) -> Result<(Var, Vec<usize>)> {
    // F.pad order: the last dim first.
    let (f_pad, conv_pad): (Vec<usize>, Vec<usize>) = match mode {
        PaddingMode::Zeros => {
            (pads.iter().rev().flat_map(|&(lo, hi)| [0, hi - lo]).collect(), pads.iter().map(|p| p.0).collect())
        }
        PaddingMode::Reflect => (pads.iter().rev().flat_map(|&(lo, hi)| [lo, hi]).collect(), vec![0; pads.len()]),
    };
    let x = if f_pad.iter().all(|&p| p == 0) {
        x.clone()
    } else {
        let m = if mode == PaddingMode::Reflect { PadMode::Reflect } else { PadMode::Constant };
        x.pad(&f_pad, m, 0.0)?
    };
    Ok((x, conv_pad))
}

/// Accepts a batched input of rank `batched` or an unbatched one of rank `batched - 1`
/// (which gets a leading batch dim of 1); checks the channel count.
fn batched_input(op: &'static str, x: &Var, batched: usize, channels: usize, groups: usize) -> Result<(Var, bool)> {
    let r = x.dims().len();
    let (x, unbatched) = if r == batched {
        (x.clone(), false)
    } else if r + 1 == batched {
        (x.unsqueeze(0usize)?, true)
    } else {
        return Err(Error::shape(
            op,
            format!(
                "expected a {}-D (unbatched) or {batched}-D (batched) input, got shape {:?}",
                batched - 1,
                x.dims()
            ),
        ));
    };
    if x.dims()[1] != channels {
        return Err(Error::shape(
            op,
            format!(
                "expected input {:?} to have {channels} channels (groups={groups}), but got {} channels",
                x.dims(),
                x.dims()[1]
            ),
        ));
    }
    Ok((x, unbatched))
}

fn params_list(weight: &Param, bias: &Option<Param>) -> Vec<(String, Param)> {
    let mut v = vec![("weight".to_string(), weight.clone())];
    if let Some(b) = bias {
        v.push(("bias".to_string(), b.clone()));
    }
    v
}

/// A 1-D convolution over `[N, C_in, L]` (or unbatched `[C_in, L]`) inputs (`nn.Conv1d`):
/// `weight [C_out, C_in / groups, k]`, `bias [C_out]`, both `U(±1/sqrt(fan_in))` with
/// `fan_in = C_in / groups * k`, as PyTorch initialises them.
pub struct Conv1d {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel length.
    pub kernel_size: usize,
    /// Step between output positions.
    pub stride: usize,
    /// Input padding.
    pub padding: ConvPadding<usize>,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
    /// How the padded border is filled.
    pub padding_mode: PaddingMode,
    /// `[out_channels, in_channels / groups, kernel_size]`.
    pub weight: Param,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Param>,
    pads: (usize, usize),
}

impl Conv1d {
    /// `nn.Conv1d(in_channels, out_channels, kernel_size)` with the default stride 1, no
    /// padding, a bias, in f32 on the CPU.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Result<Conv1d> {
        Conv1d::new_with(in_channels, out_channels, kernel_size, Conv1dConfig::default())
    }

    /// The full constructor. Zero channels or kernel, a zero stride or dilation, groups that
    /// do not divide both channel counts, or `"same"` padding with a stride are errors.
    pub fn new_with(in_channels: usize, out_channels: usize, kernel_size: usize, cfg: Conv1dConfig) -> Result<Conv1d> {
        let padding = match &cfg.padding {
            ConvPadding::Explicit(p) => ConvPadding::Explicit(std::slice::from_ref(p)),
            ConvPadding::Same => ConvPadding::Same,
            ConvPadding::Valid => ConvPadding::Valid,
        };
        let pads = check_conv_args(
            "Conv1d",
            in_channels,
            out_channels,
            &[kernel_size],
            &[cfg.stride],
            padding,
            &[cfg.dilation],
            cfg.groups,
        )?;
        let (w, b) = torch_default_weight_bias(
            &[out_channels, in_channels / cfg.groups, kernel_size],
            cfg.bias,
            cfg.dtype,
            &cfg.device,
        )?;
        Ok(Conv1d {
            in_channels,
            out_channels,
            kernel_size,
            stride: cfg.stride,
            padding: cfg.padding,
            dilation: cfg.dilation,
            groups: cfg.groups,
            padding_mode: cfg.padding_mode,
            weight: Param::new(w),
            bias: b.map(Param::new),
            pads: pads[0],
        })
    }
}

impl Module for Conv1d {
    fn local_params(&self) -> Vec<(String, Param)> {
        params_list(&self.weight, &self.bias)
    }
}

impl Forward for Conv1d {
    fn forward(&self, x: &Var) -> Result<Var> {
        let (x, unbatched) = batched_input("Conv1d", x, 3, self.in_channels, self.groups)?;
        let (x, pad) = pad_input(&x, &[self.pads], self.padding_mode)?;
        let b = self.bias.as_ref().map(|b| b.var());
        let y = x.conv1d(&self.weight.var(), b.as_ref(), self.stride, pad[0], self.dilation, self.groups)?;
        if unbatched {
            y.squeeze(0usize)
        } else {
            Ok(y)
        }
    }
}

/// A 2-D convolution over `[N, C_in, H, W]` (or unbatched `[C_in, H, W]`) inputs
/// (`nn.Conv2d`): `weight [C_out, C_in / groups, kH, kW]`, `bias [C_out]`, both
/// `U(±1/sqrt(fan_in))` with `fan_in = C_in / groups * kH * kW`, as PyTorch initialises them.
pub struct Conv2d {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Step between output positions.
    pub stride: [usize; 2],
    /// Input padding.
    pub padding: ConvPadding<[usize; 2]>,
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// How the padded border is filled.
    pub padding_mode: PaddingMode,
    /// `[out_channels, in_channels / groups, kH, kW]`.
    pub weight: Param,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Param>,
    pads: [(usize, usize); 2],
}

impl Conv2d {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)` with the default stride 1, no
    /// padding, a bias, in f32 on the CPU.
    /// `kernel_size` is one number or a pair: `Conv2d::new(1, 64, 3)`, `Conv2d::new(1, 64, [3, 5])`.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Into<Size2>) -> Result<Conv2d> {
        Conv2d::new_with(in_channels, out_channels, kernel_size, Conv2dConfig::default())
    }

    /// The full constructor. Zero channels or kernel, a zero stride or dilation, groups that
    /// do not divide both channel counts, or `"same"` padding with a stride are errors.
    pub fn new_with(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Into<Size2>,
        cfg: Conv2dConfig,
    ) -> Result<Conv2d> {
        let kernel_size = kernel_size.into().0;
        let padding = match &cfg.padding {
            ConvPadding::Explicit(p) => ConvPadding::Explicit(&p[..]),
            ConvPadding::Same => ConvPadding::Same,
            ConvPadding::Valid => ConvPadding::Valid,
        };
        let pads = check_conv_args(
            "Conv2d",
            in_channels,
            out_channels,
            &kernel_size,
            &cfg.stride,
            padding,
            &cfg.dilation,
            cfg.groups,
        )?;
        let (w, b) = torch_default_weight_bias(
            &[out_channels, in_channels / cfg.groups, kernel_size[0], kernel_size[1]],
            cfg.bias,
            cfg.dtype,
            &cfg.device,
        )?;
        Ok(Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride: cfg.stride,
            padding: cfg.padding,
            dilation: cfg.dilation,
            groups: cfg.groups,
            padding_mode: cfg.padding_mode,
            weight: Param::new(w),
            bias: b.map(Param::new),
            pads: [pads[0], pads[1]],
        })
    }
}

impl Module for Conv2d {
    fn local_params(&self) -> Vec<(String, Param)> {
        params_list(&self.weight, &self.bias)
    }
}

impl Forward for Conv2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        let (x, unbatched) = batched_input("Conv2d", x, 4, self.in_channels, self.groups)?;
        let (x, pad) = pad_input(&x, &self.pads, self.padding_mode)?;
        let b = self.bias.as_ref().map(|b| b.var());
        let y = x.conv2d(&self.weight.var(), b.as_ref(), self.stride, [pad[0], pad[1]], self.dilation, self.groups)?;
        if unbatched {
            y.squeeze(0usize)
        } else {
            Ok(y)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::Tensor;

    fn max_abs(t: &stapes_tensor::Tensor) -> f64 {
        t.to_vec_f64().unwrap().iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    #[test]
    fn init_is_kaiming_uniform_with_the_fan_in_bound() {
        let c = Conv2d::new_with(8, 64, [3, 3], Conv2dConfig { groups: 2, ..Default::default() }).unwrap();
        assert_eq!(c.weight.dims(), [64, 4, 3, 3]);
        let bound = 1.0 / (4.0f64 * 9.0).sqrt();
        let mw = max_abs(&c.weight.tensor());
        assert!(mw <= bound && mw > 0.95 * bound, "{mw} vs {bound}");
        let mb = max_abs(&c.bias.as_ref().unwrap().tensor());
        assert!(mb <= bound && mb > 0.5 * bound, "{mb} vs {bound}");
        let c1 = Conv1d::new(5, 200, 4).unwrap();
        let bound = 1.0 / 20.0f64.sqrt();
        let mw = max_abs(&c1.weight.tensor());
        assert!(mw <= bound && mw > 0.95 * bound, "{mw} vs {bound}");
        let names: Vec<String> = c1.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight", "bias"]);
    }

    #[test]
    fn output_shapes() {
        let x = Var::constant(Tensor::randn([2, 3, 11, 9], DType::F32, &Device::Cpu).unwrap());
        let cfg = Conv2dConfig { stride: [2, 1], padding: ConvPadding::Explicit([1, 2]), ..Default::default() };
        let c = Conv2d::new_with(3, 5, [3, 4], cfg).unwrap();
        assert_eq!(c.forward(&x).unwrap().dims(), [2, 5, 6, 10]);
        for (k, d) in [([4, 3], [1, 1]), ([3, 2], [2, 3])] {
            for mode in [PaddingMode::Zeros, PaddingMode::Reflect] {
                let cfg =
                    Conv2dConfig { padding: ConvPadding::Same, dilation: d, padding_mode: mode, ..Default::default() };
                let c = Conv2d::new_with(3, 2, k, cfg).unwrap();
                assert_eq!(c.forward(&x).unwrap().dims(), [2, 2, 11, 9], "{k:?} {d:?} {mode:?}");
            }
        }
        let c = Conv2d::new_with(3, 2, [3, 3], Conv2dConfig { padding: ConvPadding::Valid, ..Default::default() });
        let y = c.unwrap().forward(&Var::constant(x.tensor().narrow(0usize, 0, 1).unwrap().squeeze(0usize).unwrap()));
        assert_eq!(y.unwrap().dims(), [2, 9, 7]);
        let x1 = Var::constant(Tensor::randn([2, 4, 10], DType::F32, &Device::Cpu).unwrap());
        let cfg = Conv1dConfig { padding: ConvPadding::Same, padding_mode: PaddingMode::Reflect, ..Default::default() };
        assert_eq!(Conv1d::new_with(4, 6, 4, cfg).unwrap().forward(&x1).unwrap().dims(), [2, 6, 10]);
        let cfg = Conv1dConfig { stride: 3, dilation: 2, groups: 2, ..Default::default() };
        assert_eq!(Conv1d::new_with(4, 6, 3, cfg).unwrap().forward(&x1).unwrap().dims(), [2, 6, 2]);
    }

    #[test]
    fn builders_match_the_struct_configs() {
        let built =
            Conv2d::new_with(2, 4, 3, Conv2dConfig::default().stride(2).padding((1, 0)).dilation(1).bias(false))
                .unwrap();
        assert_eq!((built.kernel_size, built.stride, built.padding), ([3, 3], [2, 2], ConvPadding::Explicit([1, 0])));
        assert!(built.bias.is_none());
        let x = Var::constant(stapes_tensor::Tensor::zeros([1, 2, 9, 9], DType::F32, &Device::Cpu).unwrap());
        assert_eq!(built.forward(&x).unwrap().dims(), [1, 4, 5, 4]);
        let c1 =
            Conv1d::new_with(4, 8, 5, Conv1dConfig::default().padding_same().groups(2).to(DType::F64, &Device::Cpu))
                .unwrap();
        assert_eq!((c1.padding, c1.groups, c1.weight.dtype()), (ConvPadding::Same, 2, DType::F64));
        assert!(Conv2d::new_with(2, 4, 3, Conv2dConfig::default().stride(2).padding_same()).is_err());
    }

    #[test]
    fn bad_configs_and_inputs_are_errors() {
        let d = Conv2dConfig::default;
        assert!(Conv2d::new(0, 4, [3, 3]).is_err());
        assert!(Conv2d::new(3, 0, [3, 3]).is_err());
        assert!(Conv2d::new(3, 4, [0, 3]).is_err());
        assert!(Conv2d::new_with(3, 4, [3, 3], Conv2dConfig { groups: 2, ..d() }).is_err());
        assert!(Conv2d::new_with(4, 6, [3, 3], Conv2dConfig { groups: 4, ..d() }).is_err());
        assert!(Conv2d::new_with(4, 4, [3, 3], Conv2dConfig { groups: 0, ..d() }).is_err());
        assert!(Conv2d::new_with(4, 4, [3, 3], Conv2dConfig { stride: [0, 1], ..d() }).is_err());
        let e = Conv2d::new_with(4, 4, [3, 3], Conv2dConfig { stride: [2, 1], padding: ConvPadding::Same, ..d() })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("same") && e.contains("Conv2d"), "{e}");
        assert!(Conv1d::new_with(4, 4, 3, Conv1dConfig { dilation: 0, ..Default::default() }).is_err());
        let c = Conv2d::new(3, 4, [3, 3]).unwrap();
        let e = c.forward(&Var::constant(Tensor::zeros([1, 2, 5, 5], DType::F32, &Device::Cpu).unwrap()));
        assert!(e.err().unwrap().to_string().contains("3 channels"));
        assert!(c.forward(&Var::constant(Tensor::zeros([5, 5], DType::F32, &Device::Cpu).unwrap())).is_err());
        assert!(c.forward(&Var::constant(Tensor::zeros([1, 3, 2, 2], DType::F32, &Device::Cpu).unwrap())).is_err());
        let r = Conv2dConfig { padding: ConvPadding::Explicit([3, 0]), padding_mode: PaddingMode::Reflect, ..d() };
        let c = Conv2d::new_with(3, 4, [3, 3], r).unwrap();
        assert!(c.forward(&Var::constant(Tensor::zeros([1, 3, 3, 5], DType::F32, &Device::Cpu).unwrap())).is_err());
    }
}
