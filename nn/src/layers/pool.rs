//! `MaxPool2d` and `AvgPool2d` over `[N, C, H, W]` (or unbatched `[C, H, W]`) inputs, with
//! PyTorch's arguments: stride defaulting to the kernel, padding, dilation (max pooling),
//! `ceil_mode` and `count_include_pad` (average pooling).

use super::Size2;
use crate::module::{Forward, Module};
use stapes_autograd::Var;
use stapes_tensor::{Error, Result};

fn check_pool_args(
    op: &'static str,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Result<()> {
    if kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
        return Err(Error::invalid(
            op,
            format!("kernel_size {kernel:?}, stride {stride:?} and dilation {dilation:?} must be positive"),
        ));
    }
    if padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
        return Err(Error::invalid(
            op,
            format!("pad should be at most half of kernel size, but got padding {padding:?} for kernel {kernel:?}"),
        ));
    }
    Ok(())
}

/// Runs `f` on a 4-D input, adding and removing a batch dim for an unbatched 3-D one.
fn pool_input(op: &'static str, x: &Var, f: impl FnOnce(&Var) -> Result<Var>) -> Result<Var> {
    match x.dims().len() {
        4 => f(x),
        3 => f(&x.unsqueeze(0usize)?)?.squeeze(0usize),
        _ => Err(Error::shape(
            op,
            format!("expected a 3-D (unbatched) or 4-D (batched) input, got shape {:?}", x.dims()),
        )),
    }
}

/// The optional arguments of [`MaxPool2d`]; the defaults are PyTorch's (stride = kernel, no
/// padding, dilation 1, floor mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxPool2dConfig {
    /// Step between windows; `None` = the kernel size.
    pub stride: Option<[usize; 2]>,
    /// Implicit `-inf` padding on both sides, at most half the kernel.
    pub padding: [usize; 2],
    /// Spacing between window elements; `None` = 1.
    pub dilation: Option<[usize; 2]>,
    /// Round the output size up instead of down (a last window may start in the padding's
    /// right half, never past it).
    pub ceil_mode: bool,
}

/// 2-D max pooling (`nn.MaxPool2d`). The gradient goes to each window's maximum.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    /// Window `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Implicit `-inf` padding.
    pub padding: [usize; 2],
    /// Spacing between window elements.
    pub dilation: [usize; 2],
    /// Output size rounded up.
    pub ceil_mode: bool,
}

impl MaxPool2dConfig {
    /// Sets the stride (one number or a pair).
    pub fn stride(mut self, stride: impl Into<Size2>) -> Self {
        self.stride = Some(stride.into().0);
        self
    }
    /// Sets the padding (one number or a pair).
    pub fn padding(mut self, padding: impl Into<Size2>) -> Self {
        self.padding = padding.into().0;
        self
    }
    /// Sets the dilation (one number or a pair).
    pub fn dilation(mut self, dilation: impl Into<Size2>) -> Self {
        self.dilation = Some(dilation.into().0);
        self
    }
    /// Sets `ceil_mode`.
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
    }
}

impl MaxPool2d {
    /// `nn.MaxPool2d(kernel_size)`: stride = kernel, no padding. `kernel_size` is one number
    /// or a pair: `MaxPool2d::new(2)`, `MaxPool2d::new([2, 1])`.
    pub fn new(kernel_size: impl Into<Size2>) -> Result<MaxPool2d> {
        MaxPool2d::new_with(kernel_size, MaxPool2dConfig::default())
    }
    /// The full constructor, e.g. `MaxPool2d::new_with(3, MaxPool2dConfig::default().stride(2).padding(1))`;
    /// a zero kernel, stride or dilation, or padding over half the kernel, is an error.
    pub fn new_with(kernel_size: impl Into<Size2>, cfg: MaxPool2dConfig) -> Result<MaxPool2d> {
        let kernel_size = kernel_size.into().0;
        let stride = cfg.stride.unwrap_or(kernel_size);
        let dilation = cfg.dilation.unwrap_or([1, 1]);
        check_pool_args("MaxPool2d", kernel_size, stride, cfg.padding, dilation)?;
        Ok(MaxPool2d { kernel_size, stride, padding: cfg.padding, dilation, ceil_mode: cfg.ceil_mode })
    }
}

impl Module for MaxPool2d {}

impl Forward for MaxPool2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        pool_input("MaxPool2d", x, |x| {
            x.max_pool2d(self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        })
    }
}

/// The optional arguments of [`AvgPool2d`]; the defaults are PyTorch's (stride = kernel, no
/// padding, floor mode, padding counted in the divisor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2dConfig {
    /// Step between windows; `None` = the kernel size.
    pub stride: Option<[usize; 2]>,
    /// Implicit zero padding on both sides, at most half the kernel.
    pub padding: [usize; 2],
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
    /// Whether the zero padding counts in a window's divisor (the part of a `ceil_mode`
    /// window past the padding never does).
    pub count_include_pad: bool,
}

impl Default for AvgPool2dConfig {
    fn default() -> Self {
        AvgPool2dConfig { stride: None, padding: [0, 0], ceil_mode: false, count_include_pad: true }
    }
}

/// 2-D average pooling (`nn.AvgPool2d`, without `divisor_override`).
#[derive(Clone, Debug)]
pub struct AvgPool2d {
    /// Window `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Implicit zero padding.
    pub padding: [usize; 2],
    /// Output size rounded up.
    pub ceil_mode: bool,
    /// Whether the padding counts in the divisor.
    pub count_include_pad: bool,
}

impl AvgPool2dConfig {
    /// Sets the stride (one number or a pair).
    pub fn stride(mut self, stride: impl Into<Size2>) -> Self {
        self.stride = Some(stride.into().0);
        self
    }
    /// Sets the padding (one number or a pair).
    pub fn padding(mut self, padding: impl Into<Size2>) -> Self {
        self.padding = padding.into().0;
        self
    }
    /// Sets `ceil_mode`.
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
    }
    /// Sets `count_include_pad`.
    pub fn count_include_pad(mut self, count_include_pad: bool) -> Self {
        self.count_include_pad = count_include_pad;
        self
    }
}

impl AvgPool2d {
    /// `nn.AvgPool2d(kernel_size)`: stride = kernel, no padding. `kernel_size` is one number
    /// or a pair.
    pub fn new(kernel_size: impl Into<Size2>) -> Result<AvgPool2d> {
        AvgPool2d::new_with(kernel_size, AvgPool2dConfig::default())
    }
    /// The full constructor; a zero kernel or stride, or padding over half the kernel, is an
    /// error.
    pub fn new_with(kernel_size: impl Into<Size2>, cfg: AvgPool2dConfig) -> Result<AvgPool2d> {
        let kernel_size = kernel_size.into().0;
        let stride = cfg.stride.unwrap_or(kernel_size);
        check_pool_args("AvgPool2d", kernel_size, stride, cfg.padding, [1, 1])?;
        Ok(AvgPool2d {
            kernel_size,
            stride,
            padding: cfg.padding,
            ceil_mode: cfg.ceil_mode,
            count_include_pad: cfg.count_include_pad,
        })
    }
}

impl Module for AvgPool2d {}

impl Forward for AvgPool2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        pool_input("AvgPool2d", x, |x| {
            x.avg_pool2d(self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)
        })
    }
}

/// `F.max_pool2d(x, kernel_size, ...)`: max pooling of a `[N, C, H, W]` or `[C, H, W]` input,
/// the optional arguments in `cfg` with PyTorch's defaults.
///
/// ```
/// use stapes_autograd::Var;
/// use stapes_nn::layers::{max_pool2d, MaxPool2dConfig};
/// use stapes_tensor::{DType, Device, Tensor};
/// let x = Var::constant(Tensor::randn([1, 3, 8, 8], DType::F32, &Device::Cpu)?);
/// assert_eq!(max_pool2d(&x, 2, MaxPool2dConfig::default())?.dims(), &[1, 3, 4, 4]);
/// assert_eq!(max_pool2d(&x, 3, MaxPool2dConfig::default().stride(1).padding(1))?.dims(), &[1, 3, 8, 8]);
/// # Ok::<(), stapes_tensor::Error>(())
/// ```
pub fn max_pool2d(x: &Var, kernel_size: impl Into<Size2>, cfg: MaxPool2dConfig) -> Result<Var> {
    MaxPool2d::new_with(kernel_size, cfg)?.forward(x)
}

/// `F.avg_pool2d(x, kernel_size, ...)`: average pooling of a `[N, C, H, W]` or `[C, H, W]`
/// input, the optional arguments in `cfg` with PyTorch's defaults.
pub fn avg_pool2d(x: &Var, kernel_size: impl Into<Size2>, cfg: AvgPool2dConfig) -> Result<Var> {
    AvgPool2d::new_with(kernel_size, cfg)?.forward(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stapes_tensor::{DType, Device, Tensor};

    #[test]
    fn shapes_values_and_errors() {
        let x = Tensor::arange(0.0, 32.0, 1.0, DType::F32, &Device::Cpu).unwrap().reshape([2, 4, 4]).unwrap();
        let x = Var::constant(x);
        let m = MaxPool2d::new([2, 2]).unwrap();
        assert_eq!(m.stride, [2, 2]);
        let y = m.forward(&x).unwrap();
        assert_eq!(y.dims(), [2, 2, 2]);
        assert_eq!(y.tensor().to_vec::<f32>().unwrap()[..4], [5.0, 7.0, 13.0, 15.0]);
        let a = AvgPool2d::new([2, 2]).unwrap().forward(&x).unwrap();
        assert_eq!(a.tensor().to_vec::<f32>().unwrap()[..4], [2.5, 4.5, 10.5, 12.5]);
        let cfg = MaxPool2dConfig { stride: Some([2, 2]), padding: [1, 1], ceil_mode: true, ..Default::default() };
        assert_eq!(MaxPool2d::new_with([3, 3], cfg).unwrap().forward(&x).unwrap().dims(), [2, 3, 3]);
        let cfg = AvgPool2dConfig { stride: Some([1, 1]), padding: [1, 0], ..Default::default() };
        assert_eq!(AvgPool2d::new_with([2, 2], cfg).unwrap().forward(&x).unwrap().dims(), [2, 5, 3]);

        // One number for both sides, and the builder, as PyTorch's keyword arguments.
        let same = MaxPool2d::new_with(3, MaxPool2dConfig::default().stride(2).padding(1).ceil_mode(true)).unwrap();
        assert_eq!((same.kernel_size, same.stride, same.padding), ([3, 3], [2, 2], [1, 1]));
        assert_eq!(same.forward(&x).unwrap().dims(), [2, 3, 3]);
        assert_eq!(
            max_pool2d(&x, 2, MaxPool2dConfig::default()).unwrap().tensor().to_vec::<f32>().unwrap()[..4],
            [5.0, 7.0, 13.0, 15.0]
        );
        let a2 = avg_pool2d(&x, (2, 2), AvgPool2dConfig::default().stride([1, 1]).padding([1, 0])).unwrap();
        assert_eq!(a2.dims(), [2, 5, 3]);
        assert!(max_pool2d(&x, 3, MaxPool2dConfig::default().padding(2)).is_err());

        assert!(MaxPool2d::new([0, 2]).is_err());
        assert!(MaxPool2d::new_with([2, 2], MaxPool2dConfig { stride: Some([0, 1]), ..Default::default() }).is_err());
        assert!(MaxPool2d::new_with([2, 2], MaxPool2dConfig { dilation: Some([1, 0]), ..Default::default() }).is_err());
        assert!(AvgPool2d::new_with([3, 3], AvgPool2dConfig { padding: [2, 0], ..Default::default() }).is_err());
        assert!(m.forward(&Var::constant(Tensor::zeros([4, 4], DType::F32, &Device::Cpu).unwrap())).is_err());
        assert!(m.forward(&Var::constant(Tensor::zeros([1, 1, 1, 1], DType::F32, &Device::Cpu).unwrap())).is_err());
    }
}
