//! Neural-network ops: softmax/log_softmax, matmul, conv1d/conv2d, max/avg pooling, layer norm
//! and batch norm, each with the backward functions the autograd uses. The kernels live in
//! `stapes_kernels::cpu::{softmax, matmul, conv, pool, norm}`.

use super::compute::{float_data, float_strided, from_compute};
use crate::shape::{broadcast_shapes, Dim};
#[allow(unused_imports)]
use crate::WithDType as _;
use crate::{DType, Error, Result, Tensor};
#[allow(unused_imports)]
use num_traits::{Float as _, One as _, Zero as _};
use stapes_kernels::cpu::conv::{self as kconv, Conv2dGeom};
use stapes_kernels::cpu::copy::collapse_dims;
use stapes_kernels::cpu::matmul::{gemm_batched, MatLayout};
use stapes_kernels::cpu::norm as knorm;
use stapes_kernels::cpu::pool::{self as kpool, Pool2dGeom};
use stapes_kernels::cpu::softmax::{softmax_backward_last, softmax_last};
#[allow(unused_imports)]
use stapes_kernels::cpu::Float as _;

fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype(), msg: "expected a floating point tensor" });
    }
    Ok(())
}

impl Tensor {
    fn softmax_impl<D: Dim>(&self, dim: D, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax" } else { "softmax" };
        let d = dim.to_index(self.rank().max(1), name)?;
        if self.rank() == 0 {
            return self.reshape([1])?.softmax_impl(0usize, log)?.reshape(());
        }
        if self.device().is_cuda() {
            return crate::cuda::nn_ops::softmax(self, d, log, name);
        }
        let last = self.rank() - 1;
        let x = if d == last { self.clone() } else { self.transpose(d, last)? };
        let n = x.dims()[last];
        let rows = x.elem_count().checked_div(n).unwrap_or(0);
        let y = float_dispatch!(self.dtype(), name, |T| {
            let data = float_data::<T>(&x)?;
            let mut out = crate::alloc::take::<T>(data.len());
            softmax_last(&data, rows, n, log, &mut out);
            from_compute(out, x.shape(), self.dtype())?
        });
        if d == last {
            Ok(y)
        } else {
            y.transpose(d, last)
        }
    }

    /// Softmax along `dim` (numerically stable; a row of all `-inf` gives NaN, as PyTorch).
    pub fn softmax<D: Dim>(&self, dim: D) -> Result<Tensor> {
        self.softmax_impl(dim, false)
    }
    /// Log-softmax along `dim`.
    pub fn log_softmax<D: Dim>(&self, dim: D) -> Result<Tensor> {
        self.softmax_impl(dim, true)
    }
    /// Gradient of softmax (`log == false`) or log-softmax along `dim`, given the forward output
    /// `y` (self) and the upstream gradient.
    pub fn softmax_backward<D: Dim>(&self, grad: &Tensor, dim: D, log: bool) -> Result<Tensor> {
        let name = "softmax_backward";
        self.check_same(grad, name, true)?;
        if self.dims() != grad.dims() {
            return Err(Error::shape(name, format!("output {:?} and gradient {:?} differ", self.dims(), grad.dims())));
        }
        if self.rank() == 0 {
            return self.reshape([1])?.softmax_backward(&grad.reshape([1])?, 0usize, log)?.reshape(());
        }
        let d = dim.to_index(self.rank(), name)?;
        if self.device().is_cuda() {
            return crate::cuda::nn_ops::softmax_backward(self, grad, d, log, name);
        }
        let last = self.rank() - 1;
        let (y, g) =
            if d == last { (self.clone(), grad.clone()) } else { (self.transpose(d, last)?, grad.transpose(d, last)?) };
        let n = y.dims()[last];
        let rows = y.elem_count().checked_div(n).unwrap_or(0);
        let gx = float_dispatch!(self.dtype(), name, |T| {
            let yd = float_data::<T>(&y)?;
            let gd = float_data::<T>(&g)?;
            let mut out = crate::alloc::take::<T>(yd.len());
            softmax_backward_last(&yd, &gd, rows, n, log, &mut out);
            from_compute(out, y.shape(), self.dtype())?
        });
        if d == last {
            Ok(gx)
        } else {
            gx.transpose(d, last)
        }
    }

    /// Matrix product with `torch.matmul` semantics: 1-D operands are promoted (and the added
    /// dim removed), batch dims broadcast. Strided (e.g. transposed) operands are read in place.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let name = "matmul";
        self.check_same(rhs, name, true)?;
        check_float(name, self)?;
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::shape(
                name,
                format!("both operands must have at least 1 dim, got {:?} and {:?}", self.dims(), rhs.dims()),
            ));
        }
        let a = if self.rank() == 1 { self.unsqueeze(0usize)? } else { self.clone() };
        let b = if rhs.rank() == 1 { rhs.unsqueeze(1usize)? } else { rhs.clone() };
        let (ar, br) = (a.rank(), b.rank());
        let (m, k) = (a.dims()[ar - 2], a.dims()[ar - 1]);
        let (k2, n) = (b.dims()[br - 2], b.dims()[br - 1]);
        if k != k2 {
            return Err(Error::shape(
                name,
                format!(
                    "lhs {:?} and rhs {:?} do not agree on the contracted dim ({k} vs {k2})",
                    self.dims(),
                    rhs.dims()
                ),
            ));
        }
        let batch = broadcast_shapes(name, &a.dims()[..ar - 2], &b.dims()[..br - 2])?;
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let nb: usize = batch.iter().product();
        if self.device().is_cuda() {
            let out = crate::cuda::matmul::matmul(&a, &b, &batch, m, n, k)?;
            return match (self.rank() == 1, rhs.rank() == 1) {
                (true, true) => out.reshape(()),
                (true, false) => out.squeeze(-2i32),
                (false, true) => out.squeeze(-1i32),
                (false, false) => Ok(out),
            };
        }
        let out = float_dispatch!(self.dtype(), name, |T| {
            let (ad, al) = float_strided::<T>(&a)?;
            let (bd, bl) = float_strided::<T>(&b)?;
            let mut a_shape = batch.clone();
            a_shape.extend([m, k]);
            let mut b_shape = batch.clone();
            b_shape.extend([k, n]);
            let al = al.broadcast_as(name, &a_shape)?;
            let bl = bl.broadcast_as(name, &b_shape)?;
            let nbd = batch.len();
            let out_batch_strides: Vec<usize> =
                stapes_kernels::cpu::copy::contiguous_strides(&batch).iter().map(|s| s * m * n).collect();
            let (cshape, [sa, sb, so]) =
                collapse_dims(&batch, [&al.strides()[..nbd], &bl.strides()[..nbd], &out_batch_strides]);
            let mut out = crate::alloc::take::<T>(nb * m * n);
            if nb > 0 {
                let inner_b = *cshape.last().unwrap();
                let outer_shape = &cshape[..cshape.len() - 1];
                let outer = [sa[..sa.len() - 1].to_vec(), sb[..sb.len() - 1].to_vec(), so[..so.len() - 1].to_vec()];
                let n_outer: usize = outer_shape.iter().product();
                let (ia, ib, io) = (*sa.last().unwrap(), *sb.last().unwrap(), *so.last().unwrap());
                stapes_kernels::cpu::copy::for_each_row(
                    outer_shape,
                    &outer,
                    [al.offset(), bl.offset(), 0],
                    0,
                    n_outer,
                    |_, [oa, ob, oo]| {
                        let lhs_l = MatLayout {
                            offset: oa,
                            batch_stride: ia,
                            row_stride: al.strides()[nbd],
                            col_stride: al.strides()[nbd + 1],
                        };
                        let rhs_l = MatLayout {
                            offset: ob,
                            batch_stride: ib,
                            row_stride: bl.strides()[nbd],
                            col_stride: bl.strides()[nbd + 1],
                        };
                        let dst_l = MatLayout { offset: oo, batch_stride: io, row_stride: n, col_stride: 1 };
                        gemm_batched(inner_b, m, n, k, &ad, lhs_l, &bd, rhs_l, &mut out, dst_l, false);
                    },
                );
            }
            from_compute(out, out_shape, self.dtype())?
        });
        match (self.rank() == 1, rhs.rank() == 1) {
            (true, true) => out.reshape(()),
            (true, false) => out.squeeze(-2i32),
            (false, true) => out.squeeze(-1i32),
            (false, false) => Ok(out),
        }
    }
}

/// Parameters of a 2-D convolution (conv1d uses the second entry of each pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Stride, `[height, width]`.
    pub stride: [usize; 2],
    /// Zero padding added to both sides, `[height, width]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps, `[height, width]`; 1 is a dense kernel.
    pub dilation: [usize; 2],
    /// Channel groups; input and output channels must be multiples of it.
    pub groups: usize,
}

impl Conv2dParams {
    fn geom(&self, op: &'static str, input: &[usize], weight: &[usize]) -> Result<Conv2dGeom> {
        if input.len() != 4 || weight.len() != 4 {
            return Err(Error::shape(op, format!("expects a 4-D input [N, C, H, W] and a 4-D weight [O, C/groups, kH, kW], got {input:?} and {weight:?}")));
        }
        let g = self.groups;
        if g == 0 || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err(Error::invalid(
                op,
                format!("stride {:?}, dilation {:?} and groups {g} must be positive", self.stride, self.dilation),
            ));
        }
        let (c_in, c_out) = (input[1], weight[0]);
        if c_in % g != 0 || c_out % g != 0 || weight[1] * g != c_in {
            return Err(Error::shape(op, format!(
                "input {input:?} has {c_in} channels and weight {weight:?} expects {} x {g} groups; both channel counts must divide by groups={g}",
                weight[1]
            )));
        }
        let geom = Conv2dGeom {
            n: input[0],
            c_in,
            h: input[2],
            w: input[3],
            c_out,
            kh: weight[2],
            kw: weight[3],
            stride: (self.stride[0], self.stride[1]),
            padding: (self.padding[0], self.padding[1]),
            dilation: (self.dilation[0], self.dilation[1]),
            groups: g,
        };
        let eff_h = self.dilation[0] * (geom.kh.max(1) - 1) + 1;
        let eff_w = self.dilation[1] * (geom.kw.max(1) - 1) + 1;
        if geom.h + 2 * geom.padding.0 < eff_h || geom.w + 2 * geom.padding.1 < eff_w || geom.kh == 0 || geom.kw == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "input {input:?} (padded by {:?}) is smaller than the dilated kernel ({eff_h}, {eff_w})",
                    self.padding
                ),
            ));
        }
        Ok(geom)
    }
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch): input `[N, C, H, W]`, weight
    /// `[O, C/groups, kH, kW]`, optional bias `[O]`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<Tensor> {
        let p = Conv2dParams { stride, padding, dilation, groups };
        self.conv2d_p(weight, bias, &p, "conv2d")
    }

    fn conv2d_p(&self, weight: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams, op: &'static str) -> Result<Tensor> {
        self.check_same(weight, op, true)?;
        check_float(op, self)?;
        let g = p.geom(op, self.dims(), weight.dims())?;
        if let Some(b) = bias {
            self.check_same(b, op, true)?;
            if b.dims() != [g.c_out] {
                return Err(Error::shape(op, format!("bias has shape {:?}, expected [{}]", b.dims(), g.c_out)));
            }
        }
        if self.device().is_cuda() {
            return crate::cuda::conv::conv2d_forward(op, self, weight, bias, &g);
        }
        let out_shape = [g.n, g.c_out, g.out_h(), g.out_w()];
        float_dispatch!(self.dtype(), op, |T| {
            let x = float_data::<T>(self)?;
            let w = float_data::<T>(weight)?;
            let b = match bias {
                Some(b) => Some(float_data::<T>(b)?),
                None => None,
            };
            let mut out = crate::alloc::take::<T>(out_shape.iter().product());
            kconv::conv2d_forward(&g, &x, &w, b.as_deref(), &mut out);
            from_compute(out, out_shape, self.dtype())
        })
    }

    /// Gradient of conv2d with respect to its input of shape `input_dims`.
    pub fn conv2d_backward_input(
        grad_out: &Tensor,
        weight: &Tensor,
        input_dims: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        let op = "conv2d_backward_input";
        let g = p.geom(op, input_dims, weight.dims())?;
        if grad_out.dims() != [g.n, g.c_out, g.out_h(), g.out_w()] {
            return Err(Error::shape(
                op,
                format!(
                    "grad_out has shape {:?}, expected {:?}",
                    grad_out.dims(),
                    [g.n, g.c_out, g.out_h(), g.out_w()]
                ),
            ));
        }
        if grad_out.device().is_cuda() || weight.device().is_cuda() {
            grad_out.check_same(weight, op, true)?;
            return crate::cuda::conv::conv2d_backward_input(op, grad_out, weight, &g);
        }
        float_dispatch!(weight.dtype(), op, |T| {
            let go = float_data::<T>(grad_out)?;
            let w = float_data::<T>(weight)?;
            let mut gi = crate::alloc::zeros::<T>(input_dims.iter().product());
            kconv::conv2d_backward_input(&g, &go, &w, &mut gi);
            from_compute(gi, input_dims, weight.dtype())
        })
    }

    /// Gradient of conv2d with respect to its weight of shape `weight_dims`.
    pub fn conv2d_backward_weight(
        input: &Tensor,
        grad_out: &Tensor,
        weight_dims: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        let op = "conv2d_backward_weight";
        let g = p.geom(op, input.dims(), weight_dims)?;
        if grad_out.dims() != [g.n, g.c_out, g.out_h(), g.out_w()] {
            return Err(Error::shape(
                op,
                format!(
                    "grad_out has shape {:?}, expected {:?}",
                    grad_out.dims(),
                    [g.n, g.c_out, g.out_h(), g.out_w()]
                ),
            ));
        }
        if input.device().is_cuda() || grad_out.device().is_cuda() {
            input.check_same(grad_out, op, true)?;
            return crate::cuda::conv::conv2d_backward_weight(op, input, grad_out, &g);
        }
        float_dispatch!(input.dtype(), op, |T| {
            let x = float_data::<T>(input)?;
            let go = float_data::<T>(grad_out)?;
            let mut gw = crate::alloc::zeros::<T>(weight_dims.iter().product());
            kconv::conv2d_backward_weight(&g, &x, &go, &mut gw);
            from_compute(gw, weight_dims, input.dtype())
        })
    }

    /// 1-D convolution: input `[N, C, L]`, weight `[O, C/groups, k]`, optional bias `[O]`.
    pub fn conv1d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Tensor> {
        if self.rank() != 3 || weight.rank() != 3 {
            return Err(Error::shape(
                "conv1d",
                format!(
                    "expects a 3-D input [N, C, L] and a 3-D weight [O, C/groups, k], got {:?} and {:?}",
                    self.dims(),
                    weight.dims()
                ),
            ));
        }
        let p = Conv2dParams { stride: [1, stride], padding: [0, padding], dilation: [1, dilation], groups };
        let y = self.unsqueeze(2usize)?.conv2d_p(&weight.unsqueeze(2usize)?, bias, &p, "conv1d")?;
        y.squeeze(2usize)
    }
}

/// Parameters of a 2-D pooling op (PyTorch's `MaxPool2d` / `AvgPool2d` arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Window size, `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride, `[height, width]`.
    pub stride: [usize; 2],
    /// Implicit padding on both sides, `[height, width]`.
    pub padding: [usize; 2],
    /// Spacing between window taps, `[height, width]` (max pool only; average pool uses `[1, 1]`).
    pub dilation: [usize; 2],
    /// Output size by ceiling instead of floor division (PyTorch's `ceil_mode`).
    pub ceil_mode: bool,
    /// Average pool: count padded positions in the divisor (PyTorch's default, `true`).
    pub count_include_pad: bool,
}

impl Pool2d {
    fn geom(&self, op: &'static str, input: &[usize]) -> Result<Pool2dGeom> {
        if input.len() != 4 {
            return Err(Error::shape(op, format!("expects a 4-D input [N, C, H, W], got {input:?}")));
        }
        if self.kernel.contains(&0) || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err(Error::invalid(
                op,
                format!(
                    "kernel {:?}, stride {:?} and dilation {:?} must be positive",
                    self.kernel, self.stride, self.dilation
                ),
            ));
        }
        for i in 0..2 {
            if self.padding[i] * 2 > self.kernel[i] {
                return Err(Error::invalid(
                    op,
                    format!("padding {:?} must be at most half of the kernel {:?}", self.padding, self.kernel),
                ));
            }
        }
        let g = Pool2dGeom {
            n: input[0],
            c: input[1],
            h: input[2],
            w: input[3],
            kh: self.kernel[0],
            kw: self.kernel[1],
            stride: (self.stride[0], self.stride[1]),
            padding: (self.padding[0], self.padding[1]),
            dilation: (self.dilation[0], self.dilation[1]),
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
        };
        let eff_h = self.dilation[0] * (self.kernel[0] - 1) + 1;
        let eff_w = self.dilation[1] * (self.kernel[1] - 1) + 1;
        if g.h + 2 * g.padding.0 < eff_h || g.w + 2 * g.padding.1 < eff_w || g.out_h() == 0 || g.out_w() == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "input {input:?} is too small for kernel {:?} with padding {:?} and dilation {:?}",
                    self.kernel, self.padding, self.dilation
                ),
            ));
        }
        Ok(g)
    }
}

impl Tensor {
    /// Max pooling returning the values and, per output element, the argmax index inside its
    /// `H*W` input plane (PyTorch's `return_indices=True`).
    pub fn max_pool2d_with_indices(&self, p: &Pool2d) -> Result<(Tensor, Tensor)> {
        let op = "max_pool2d";
        let g = p.geom(op, self.dims())?;
        let out_shape = [g.n, g.c, g.out_h(), g.out_w()];
        let n_out: usize = out_shape.iter().product();
        if self.device().is_cuda() {
            return crate::cuda::conv::max_pool2d(op, self, &g);
        }
        let mut idx = crate::alloc::take::<i64>(n_out);
        let out = float_dispatch!(self.dtype(), op, |T| {
            let x = float_data::<T>(self)?;
            let mut out = crate::alloc::take::<T>(n_out);
            kpool::max_pool2d_forward(&g, &x, &mut out, &mut idx);
            from_compute(out, out_shape, self.dtype())?
        });
        Ok((out, Tensor::from_vec(idx, out_shape, self.device())?))
    }

    /// Max pooling over `[N, C, H, W]`.
    pub fn max_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> Result<Tensor> {
        let p = Pool2d { kernel, stride, padding, dilation, ceil_mode, count_include_pad: true };
        Ok(self.max_pool2d_with_indices(&p)?.0)
    }

    /// Gradient of max pooling: routes `grad_out` to the argmax positions.
    pub fn max_pool2d_backward(
        grad_out: &Tensor,
        indices: &Tensor,
        input_dims: &[usize],
        p: &Pool2d,
    ) -> Result<Tensor> {
        let op = "max_pool2d_backward";
        let g = p.geom(op, input_dims)?;
        if grad_out.dims() != indices.dims() || grad_out.dims() != [g.n, g.c, g.out_h(), g.out_w()] {
            return Err(Error::shape(
                op,
                format!("grad_out {:?} and indices {:?} must have the pooled shape", grad_out.dims(), indices.dims()),
            ));
        }
        if grad_out.device().is_cuda() || indices.device().is_cuda() {
            return crate::cuda::conv::max_pool2d_backward(op, grad_out, indices, input_dims, &g);
        }
        let idx = super::compute::index_data(op, indices, 2, g.h * g.w)?;
        float_dispatch!(grad_out.dtype(), op, |T| {
            let go = float_data::<T>(grad_out)?;
            let mut gi = crate::alloc::zeros::<T>(input_dims.iter().product());
            kpool::max_pool2d_backward(&g, &go, &idx, &mut gi);
            from_compute(gi, input_dims, grad_out.dtype())
        })
    }

    /// Average pooling over `[N, C, H, W]`.
    pub fn avg_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Result<Tensor> {
        let p = Pool2d { kernel, stride, padding, dilation: [1, 1], ceil_mode, count_include_pad };
        let op = "avg_pool2d";
        let g = p.geom(op, self.dims())?;
        let out_shape = [g.n, g.c, g.out_h(), g.out_w()];
        if self.device().is_cuda() {
            return crate::cuda::conv::avg_pool2d(op, self, &g);
        }
        float_dispatch!(self.dtype(), op, |T| {
            let x = float_data::<T>(self)?;
            let mut out = crate::alloc::zeros::<T>(out_shape.iter().product());
            kpool::avg_pool2d_forward(&g, &x, &mut out);
            from_compute(out, out_shape, self.dtype())
        })
    }

    /// Gradient of average pooling.
    pub fn avg_pool2d_backward(grad_out: &Tensor, input_dims: &[usize], p: &Pool2d) -> Result<Tensor> {
        let op = "avg_pool2d_backward";
        let g = p.geom(op, input_dims)?;
        if grad_out.dims() != [g.n, g.c, g.out_h(), g.out_w()] {
            return Err(Error::shape(op, format!("grad_out {:?} must have the pooled shape", grad_out.dims())));
        }
        if grad_out.device().is_cuda() {
            return crate::cuda::conv::avg_pool2d_backward(op, grad_out, input_dims, &g);
        }
        float_dispatch!(grad_out.dtype(), op, |T| {
            let go = float_data::<T>(grad_out)?;
            let mut gi = crate::alloc::zeros::<T>(input_dims.iter().product());
            kpool::avg_pool2d_backward(&g, &go, &mut gi);
            from_compute(gi, input_dims, grad_out.dtype())
        })
    }
}

/// Layer norm output with the statistics saved for backward.
#[derive(Debug)]
pub struct LayerNormOutput {
    /// The normalized output, shape of the input.
    pub y: Tensor,
    /// Per-row mean, shape `[rows]`.
    pub mean: Tensor,
    /// Per-row `1 / sqrt(var + eps)`, shape `[rows]`.
    pub rstd: Tensor,
}

/// Batch norm output with the statistics saved for backward and updated running statistics.
#[derive(Debug)]
pub struct BatchNormOutput {
    /// The normalized output, shape of the input.
    pub y: Tensor,
    /// Per-channel mean used (batch mean in training, running mean in inference).
    pub save_mean: Tensor,
    /// Per-channel `1 / sqrt(var + eps)` used.
    pub save_rstd: Tensor,
    /// Updated running mean (training with running statistics only).
    pub running_mean: Option<Tensor>,
    /// Updated running variance (training with running statistics only).
    pub running_var: Option<Tensor>,
}

fn check_param(op: &'static str, what: &str, p: Option<&Tensor>, want: &[usize], x: &Tensor) -> Result<()> {
    if let Some(p) = p {
        x.check_same(p, op, true)?;
        if p.dims() != want {
            return Err(Error::shape(op, format!("{what} has shape {:?}, expected {want:?}", p.dims())));
        }
    }
    Ok(())
}

impl Tensor {
    fn layer_norm_rows(&self, normalized_shape: &[usize]) -> Result<(usize, usize)> {
        let op = "layer_norm";
        let r = self.rank();
        if normalized_shape.is_empty()
            || normalized_shape.len() > r
            || self.dims()[r - normalized_shape.len()..] != *normalized_shape
        {
            return Err(Error::shape(
                op,
                format!(
                    "normalized_shape {normalized_shape:?} does not match the trailing dims of the input {:?}",
                    self.dims()
                ),
            ));
        }
        let cols: usize = normalized_shape.iter().product();
        Ok((self.elem_count().checked_div(cols).unwrap_or(0), cols))
    }

    /// Layer norm over the trailing `normalized_shape` dims, returning the saved statistics.
    pub fn layer_norm_with_stats(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<LayerNormOutput> {
        let op = "layer_norm";
        check_float(op, self)?;
        let (rows, cols) = self.layer_norm_rows(normalized_shape)?;
        check_param(op, "weight", weight, normalized_shape, self)?;
        check_param(op, "bias", bias, normalized_shape, self)?;
        if self.device().is_cuda() {
            return crate::cuda::nn_ops::layer_norm(self, rows, cols, weight, bias, eps);
        }
        float_dispatch!(self.dtype(), op, |T| {
            let x = float_data::<T>(self)?;
            let w = weight.map(float_data::<T>).transpose()?;
            let b = bias.map(float_data::<T>).transpose()?;
            // The kernel writes every element of all three: no zero fill (a 16 MiB memset for a
            // [4096, 1024] f32 input).
            let mut y = crate::alloc::take::<T>(x.len());
            let mut mean = crate::alloc::take::<T>(rows);
            let mut rstd = crate::alloc::take::<T>(rows);
            knorm::layer_norm_forward(&x, rows, cols, w.as_deref(), b.as_deref(), eps, &mut y, &mut mean, &mut rstd);
            let stat_dtype = if self.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
            Ok(LayerNormOutput {
                y: from_compute(y, self.shape(), self.dtype())?,
                mean: from_compute(mean, rows, stat_dtype)?,
                rstd: from_compute(rstd, rows, stat_dtype)?,
            })
        })
    }

    /// Layer norm over the trailing `normalized_shape` dims (`F.layer_norm`).
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        Ok(self.layer_norm_with_stats(normalized_shape, weight, bias, eps)?.y)
    }

    /// Gradients of layer norm: `(grad_x, grad_weight, grad_bias)`, the last two present when
    /// `weight` is given (`has_bias` asks for the bias gradient).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_backward(
        x: &Tensor,
        grad_y: &Tensor,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        has_bias: bool,
        mean: &Tensor,
        rstd: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let op = "layer_norm_backward";
        let (rows, cols) = x.layer_norm_rows(normalized_shape)?;
        if x.device().is_cuda() {
            return crate::cuda::nn_ops::layer_norm_backward(
                x,
                grad_y,
                (rows, cols),
                normalized_shape,
                weight,
                has_bias,
                mean,
                rstd,
            );
        }
        float_dispatch!(x.dtype(), op, |T| {
            let xd = float_data::<T>(x)?;
            let gy = float_data::<T>(grad_y)?;
            let w = weight.map(float_data::<T>).transpose()?;
            let m = float_data::<T>(mean)?;
            let r = float_data::<T>(rstd)?;
            let mut gx = crate::alloc::zeros::<T>(xd.len());
            let mut gw = weight.map(|_| crate::alloc::zeros::<T>(cols));
            let mut gb = if has_bias { Some(crate::alloc::zeros::<T>(cols)) } else { None };
            knorm::layer_norm_backward(
                &xd,
                &gy,
                rows,
                cols,
                w.as_deref(),
                &m,
                &r,
                &mut gx,
                gw.as_deref_mut(),
                gb.as_deref_mut(),
            );
            let gx = from_compute(gx, x.shape(), x.dtype())?;
            let gw = gw.map(|v| from_compute(v, normalized_shape, x.dtype())).transpose()?;
            let gb = gb.map(|v| from_compute(v, normalized_shape, x.dtype())).transpose()?;
            Ok((gx, gw, gb))
        })
    }

    fn batch_norm_dims(&self, op: &'static str) -> Result<(usize, usize, usize)> {
        if self.rank() < 2 {
            return Err(Error::shape(op, format!("expects an input [N, C, *], got shape {:?}", self.dims())));
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        let s: usize = self.dims()[2..].iter().product();
        Ok((n, c, s))
    }

    /// Batch norm over `[N, C, *]` (`F.batch_norm`). In training the batch statistics are used
    /// and, when running statistics are given, their updates are returned; in inference the
    /// running statistics are required and used.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<BatchNormOutput> {
        let op = "batch_norm";
        check_float(op, self)?;
        let (n, c, s) = self.batch_norm_dims(op)?;
        for (what, p) in
            [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)]
        {
            check_param(op, what, p, &[c], self)?;
        }
        if running_mean.is_some() != running_var.is_some() {
            return Err(Error::invalid(op, "running_mean and running_var must be given together"));
        }
        if !training && running_mean.is_none() {
            return Err(Error::invalid(op, "inference mode needs running_mean and running_var"));
        }
        if training && n * s <= 1 {
            return Err(Error::invalid(
                op,
                format!("expected more than 1 value per channel when training, got input of shape {:?}", self.dims()),
            ));
        }
        if self.device().is_cuda() {
            return crate::cuda::nn_ops::batch_norm(
                self,
                (n, c, s),
                running_mean,
                running_var,
                weight,
                bias,
                training,
                momentum,
                eps,
            );
        }
        float_dispatch!(self.dtype(), op, |T| {
            let x = float_data::<T>(self)?;
            let w = weight.map(float_data::<T>).transpose()?;
            let b = bias.map(float_data::<T>).transpose()?;
            let mut rm = running_mean.map(|t| float_data::<T>(t).map(|d| d.into_owned())).transpose()?;
            let mut rv = running_var.map(|t| float_data::<T>(t).map(|d| d.into_owned())).transpose()?;
            let mut y = crate::alloc::zeros::<T>(x.len());
            let mut sm = crate::alloc::zeros::<T>(c);
            let mut sr = crate::alloc::zeros::<T>(c);
            knorm::batch_norm_forward(
                &x,
                n,
                c,
                s,
                w.as_deref(),
                b.as_deref(),
                rm.as_deref_mut(),
                rv.as_deref_mut(),
                training,
                momentum,
                eps,
                &mut y,
                &mut sm,
                &mut sr,
            );
            let dt = self.dtype();
            let (running_mean, running_var) = if training {
                (rm.map(|v| from_compute(v, c, dt)).transpose()?, rv.map(|v| from_compute(v, c, dt)).transpose()?)
            } else {
                (None, None)
            };
            let stat_dtype = if dt == DType::F64 { DType::F64 } else { DType::F32 };
            Ok(BatchNormOutput {
                y: from_compute(y, self.shape(), dt)?,
                save_mean: from_compute(sm, c, stat_dtype)?,
                save_rstd: from_compute(sr, c, stat_dtype)?,
                running_mean,
                running_var,
            })
        })
    }

    /// Gradients of batch norm: `(grad_x, grad_weight, grad_bias)`.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_backward(
        x: &Tensor,
        grad_y: &Tensor,
        weight: Option<&Tensor>,
        has_bias: bool,
        save_mean: &Tensor,
        save_rstd: &Tensor,
        training: bool,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let op = "batch_norm_backward";
        let (n, c, s) = x.batch_norm_dims(op)?;
        if x.device().is_cuda() {
            return crate::cuda::nn_ops::batch_norm_backward(
                x,
                grad_y,
                (n, c, s),
                weight,
                has_bias,
                save_mean,
                save_rstd,
                training,
            );
        }
        float_dispatch!(x.dtype(), op, |T| {
            let xd = float_data::<T>(x)?;
            let gy = float_data::<T>(grad_y)?;
            let w = weight.map(float_data::<T>).transpose()?;
            let m = float_data::<T>(save_mean)?;
            let r = float_data::<T>(save_rstd)?;
            let mut gx = crate::alloc::zeros::<T>(xd.len());
            let mut gw = weight.map(|_| crate::alloc::zeros::<T>(c));
            let mut gb = if has_bias { Some(crate::alloc::zeros::<T>(c)) } else { None };
            knorm::batch_norm_backward(
                &xd,
                &gy,
                n,
                c,
                s,
                w.as_deref(),
                &m,
                &r,
                training,
                &mut gx,
                gw.as_deref_mut(),
                gb.as_deref_mut(),
            );
            Ok((
                from_compute(gx, x.shape(), x.dtype())?,
                gw.map(|v| from_compute(v, c, x.dtype())).transpose()?,
                gb.map(|v| from_compute(v, c, x.dtype())).transpose()?,
            ))
        })
    }
}
