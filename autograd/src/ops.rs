//! The differentiable ops on [`Var`]: the same names and arguments as the `Tensor` ops, each
//! with its backward formula. Gradients of broadcasting ops are summed back to each input's
//! shape; views propagate gradients through the inverse view.

use crate::var::{BackwardFn, Var};
use stapes_tensor::ops::nn::Conv2dParams;
use stapes_tensor::ops::shape_ops::reflect_indices;
use stapes_tensor::{DType, Dim, Dims, Error, PadMode, Pool2d, Result, Shape, Tensor};

fn bw(f: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static) -> BackwardFn {
    Box::new(f)
}

/// `g` where the u8 `mask` is set, 0 elsewhere (PyTorch's `threshold_backward`): one pass
/// over `g` and the mask, without converting the mask to `g`'s dtype first.
fn mask_mul(g: &Tensor, mask: &Tensor) -> Result<Tensor> {
    mask.where_cond(g, &Tensor::zeros((), g.dtype(), g.device())?)
}

impl Var {
    fn unary_with(
        &self,
        name: &'static str,
        y: Tensor,
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Var {
        // f(grad, x, y) -> grad_x
        let x = self.tensor().clone();
        let yc = y.clone();
        Var::from_op(name, y, &[self], bw(move |g| Ok(vec![Some(f(g, &x, &yc)?)])))
    }

    /// `-x`.
    pub fn neg(&self) -> Result<Var> {
        Ok(self.unary_with("neg", self.tensor().neg()?, |g, _, _| g.neg()))
    }
    /// `e^x`.
    pub fn exp(&self) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.exp();
        }
        Ok(self.unary_with("exp", self.tensor().exp()?, |g, _, y| g.mul(y)))
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.log();
        }
        Ok(self.unary_with("log", self.tensor().log()?, |g, x, _| g.div(x)))
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Var> {
        Ok(self.unary_with("sqrt", self.tensor().sqrt()?, |g, _, y| g.div(&y.mul_scalar(2.0)?)))
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.rsqrt();
        }
        Ok(self.unary_with("rsqrt", self.tensor().rsqrt()?, |g, _, y| g.mul(&y.powf(3.0)?.mul_scalar(-0.5)?)))
    }
    /// `|x|` (gradient `sign(x)`, 0 at 0).
    pub fn abs(&self) -> Result<Var> {
        Ok(self.unary_with("abs", self.tensor().abs()?, |g, x, _| g.mul(&x.sign()?)))
    }
    /// `max(x, 0)`.
    pub fn relu(&self) -> Result<Var> {
        Ok(self.unary_with("relu", self.tensor().relu()?, |g, _, y| {
            mask_mul(g, &y.cmp_scalar(0.0, stapes_tensor::CmpOp::Gt)?)
        }))
    }
    /// GELU (erf form).
    pub fn gelu(&self) -> Result<Var> {
        Ok(self.unary_with("gelu", self.tensor().gelu()?, |g, x, _| g.mul(&x.unary(stapes_tensor::UnaryOp::GeluGrad)?)))
    }
    /// GELU (tanh approximation).
    pub fn gelu_tanh(&self) -> Result<Var> {
        Ok(self.unary_with("gelu_tanh", self.tensor().gelu_tanh()?, |g, x, _| {
            g.mul(&x.unary(stapes_tensor::UnaryOp::GeluTanhGrad)?)
        }))
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Result<Var> {
        Ok(self.unary_with("sigmoid", self.tensor().sigmoid()?, |g, _, y| g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)))
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Var> {
        Ok(self.unary_with("tanh", self.tensor().tanh()?, |g, _, y| g.mul(&y.sqr()?.affine(-1.0, 1.0)?)))
    }
    /// Sine.
    pub fn sin(&self) -> Result<Var> {
        Ok(self.unary_with("sin", self.tensor().sin()?, |g, x, _| g.mul(&x.cos()?)))
    }
    /// Cosine.
    pub fn cos(&self) -> Result<Var> {
        Ok(self.unary_with("cos", self.tensor().cos()?, |g, x, _| g.mul(&x.sin()?.neg()?)))
    }
    /// `x ^ e`.
    pub fn powf(&self, e: f64) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.powf(e);
        }
        Ok(self.unary_with("powf", self.tensor().powf(e)?, move |g, x, _| g.mul(&x.powf(e - 1.0)?.mul_scalar(e)?)))
    }
    /// Clamps into `[min, max]` (gradient 1 inside, 0 outside).
    pub fn clamp(&self, min: f64, max: f64) -> Result<Var> {
        Ok(self.unary_with("clamp", self.tensor().clamp(min, max)?, move |g, x, _| {
            let lo = x.cmp_scalar(min, stapes_tensor::CmpOp::Ge)?;
            let hi = x.cmp_scalar(max, stapes_tensor::CmpOp::Le)?;
            mask_mul(&mask_mul(g, &lo)?, &hi)
        }))
    }
    /// `x * mul + add`.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Var> {
        Ok(self.unary_with("affine", self.tensor().affine(mul, add)?, move |g, _, _| g.mul_scalar(mul)))
    }
    /// `x * v`.
    pub fn mul_scalar(&self, v: f64) -> Result<Var> {
        self.affine(v, 0.0)
    }
    /// `x + v`.
    pub fn add_scalar(&self, v: f64) -> Result<Var> {
        self.affine(1.0, v)
    }
    /// `x * x`.
    pub fn sqr(&self) -> Result<Var> {
        Ok(self.unary_with("sqr", self.tensor().sqr()?, |g, x, _| g.mul(&x.mul_scalar(2.0)?)))
    }
    /// `1 / x`.
    pub fn recip(&self) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.recip();
        }
        Ok(self.unary_with("recip", self.tensor().recip()?, |g, _, y| g.mul(&y.sqr()?.neg()?)))
    }

    fn binary_with(
        &self,
        rhs: &Var,
        name: &'static str,
        y: Tensor,
        f: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> + Send + Sync + 'static,
    ) -> Var {
        // f(grad, a, b, y) -> (grad_a, grad_b) in the broadcast shape; summed back here
        let (a, b, yc) = (self.tensor().clone(), rhs.tensor().clone(), y.clone());
        let (need_a, need_b) = (self.requires_grad(), rhs.requires_grad());
        Var::from_op(
            name,
            y,
            &[self, rhs],
            bw(move |g| {
                let (ga, gb) = f(g, &a, &b, &yc)?;
                let ga = if need_a { ga.map(|t| t.sum_to_shape(a.dims())).transpose()? } else { None };
                let gb = if need_b { gb.map(|t| t.sum_to_shape(b.dims())).transpose()? } else { None };
                Ok(vec![ga, gb])
            }),
        )
    }

    /// `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Var) -> Result<Var> {
        if let Some((a, b)) = crate::autocast::promote(self, rhs)? {
            return a.add(&b);
        }
        Ok(self.binary_with(rhs, "add", self.tensor().add(rhs.tensor())?, |g, _, _, _| {
            Ok((Some(g.clone()), Some(g.clone())))
        }))
    }
    /// `self - rhs` with broadcasting.
    pub fn sub(&self, rhs: &Var) -> Result<Var> {
        if let Some((a, b)) = crate::autocast::promote(self, rhs)? {
            return a.sub(&b);
        }
        Ok(self.binary_with(rhs, "sub", self.tensor().sub(rhs.tensor())?, |g, _, _, _| {
            Ok((Some(g.clone()), Some(g.neg()?)))
        }))
    }
    /// `self * rhs` with broadcasting.
    pub fn mul(&self, rhs: &Var) -> Result<Var> {
        if let Some((a, b)) = crate::autocast::promote(self, rhs)? {
            return a.mul(&b);
        }
        Ok(self.binary_with(rhs, "mul", self.tensor().mul(rhs.tensor())?, |g, a, b, _| {
            Ok((Some(g.mul(b)?), Some(g.mul(a)?)))
        }))
    }
    /// `self / rhs` with broadcasting.
    pub fn div(&self, rhs: &Var) -> Result<Var> {
        if let Some((a, b)) = crate::autocast::promote(self, rhs)? {
            return a.div(&b);
        }
        Ok(self.binary_with(rhs, "div", self.tensor().div(rhs.tensor())?, |g, _, b, y| {
            Ok((Some(g.div(b)?), Some(g.mul(y)?.div(b)?.neg()?)))
        }))
    }
    /// Elementwise maximum (ties split the gradient evenly, as PyTorch).
    pub fn maximum(&self, rhs: &Var) -> Result<Var> {
        if let Some((a, b)) = crate::autocast::promote(self, rhs)? {
            return a.maximum(&b);
        }
        Ok(self.binary_with(rhs, "maximum", self.tensor().maximum(rhs.tensor())?, |g, a, b, _| {
            minmax_grads(g, a, b, true)
        }))
    }
    /// Elementwise minimum (ties split the gradient evenly).
    pub fn minimum(&self, rhs: &Var) -> Result<Var> {
        if let Some((a, b)) = crate::autocast::promote(self, rhs)? {
            return a.minimum(&b);
        }
        Ok(self.binary_with(rhs, "minimum", self.tensor().minimum(rhs.tensor())?, |g, a, b, _| {
            minmax_grads(g, a, b, false)
        }))
    }
    /// `self ^ rhs` with broadcasting.
    pub fn pow(&self, rhs: &Var) -> Result<Var> {
        if let Some((a, b)) = crate::autocast::promote(self, rhs)? {
            return a.pow(&b);
        }
        Ok(self.binary_with(rhs, "pow", self.tensor().pow(rhs.tensor())?, |g, a, b, y| {
            let ga = g.mul(&b.mul(&a.pow(&b.add_scalar(-1.0)?)?)?)?;
            // d/db a^b = a^b ln a; defined as 0 where a == 0 (PyTorch's convention)
            let zero_base = a.cmp_scalar(0.0, stapes_tensor::CmpOp::Eq)?;
            let gb = g.mul(y)?.mul(&a.log()?.masked_fill(&zero_base.expand(a.shape().clone())?, 0.0)?)?;
            Ok((Some(ga), Some(gb)))
        }))
    }

    /// Picks `on_true` where the u8 `mask` is set, `on_false` elsewhere (broadcasting).
    pub fn where_cond(mask: &Tensor, on_true: &Var, on_false: &Var) -> Result<Var> {
        if let Some((t, f)) = crate::autocast::promote(on_true, on_false)? {
            return Var::where_cond(mask, &t, &f);
        }
        let y = mask.where_cond(on_true.tensor(), on_false.tensor())?;
        let (m, ts, fs) = (mask.clone(), on_true.dims().to_vec(), on_false.dims().to_vec());
        Ok(Var::from_op(
            "where_cond",
            y,
            &[on_true, on_false],
            bw(move |g| {
                let z = Tensor::zeros((), g.dtype(), g.device())?;
                let gt = m.where_cond(g, &z)?.sum_to_shape(&ts)?;
                let gf = m.where_cond(&z, g)?.sum_to_shape(&fs)?;
                Ok(vec![Some(gt), Some(gf)])
            }),
        ))
    }

    /// Replaces elements where `mask` is set by `value` (no gradient there).
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Var> {
        let y = self.tensor().masked_fill(mask, value)?;
        let m = mask.clone();
        Ok(Var::from_op("masked_fill", y, &[self], bw(move |g| Ok(vec![Some(g.masked_fill(&m, 0.0)?)]))))
    }

    // ---- reductions ----

    fn reduce_keep_grad(g: &Tensor, x_dims: &[usize], dims: &[usize], keepdim: bool) -> Result<Tensor> {
        // reshape g to the keepdim shape, then broadcast to x
        let dims: Vec<usize> = if dims.is_empty() { (0..x_dims.len()).collect() } else { dims.to_vec() };
        let g = if keepdim {
            g.clone()
        } else {
            let keep: Vec<usize> =
                x_dims.iter().enumerate().map(|(i, &d)| if dims.contains(&i) { 1 } else { d }).collect();
            g.reshape(keep)?
        };
        g.expand(x_dims.to_vec())
    }

    /// Sum over `dims`.
    pub fn sum<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.sum(dims, keepdim);
        }
        let d = dims.to_indexes(self.tensor().rank(), "sum")?;
        self.sum_resolved(d, keepdim)
    }
    fn sum_resolved(&self, d: Vec<usize>, keepdim: bool) -> Result<Var> {
        let y = self.tensor().reduce(&d, keepdim, stapes_tensor::ReduceOp::Sum)?;
        let xd = self.dims().to_vec();
        Ok(Var::from_op("sum", y, &[self], bw(move |g| Ok(vec![Some(Var::reduce_keep_grad(g, &xd, &d, keepdim)?)]))))
    }
    /// Sum of all elements.
    pub fn sum_all(&self) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.sum_all();
        }
        self.sum_resolved(vec![], false)
    }
    /// Mean over `dims`.
    pub fn mean<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.mean(dims, keepdim);
        }
        let d = dims.to_indexes(self.tensor().rank(), "mean")?;
        self.mean_resolved(d, keepdim)
    }
    fn mean_resolved(&self, d: Vec<usize>, keepdim: bool) -> Result<Var> {
        let y = self.tensor().reduce(&d, keepdim, stapes_tensor::ReduceOp::Mean)?;
        let xd = self.dims().to_vec();
        let n: usize = if d.is_empty() { xd.iter().product() } else { d.iter().map(|&i| xd[i]).product() };
        Ok(Var::from_op(
            "mean",
            y,
            &[self],
            bw(move |g| Ok(vec![Some(Var::reduce_keep_grad(&g.mul_scalar(1.0 / n as f64)?, &xd, &d, keepdim)?)])),
        ))
    }
    /// Mean of all elements.
    pub fn mean_all(&self) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.mean_all();
        }
        self.mean_resolved(vec![], false)
    }
    fn extreme(&self, d: Vec<usize>, keepdim: bool, max: bool) -> Result<Var> {
        let op = if max { stapes_tensor::ReduceOp::Max } else { stapes_tensor::ReduceOp::Min };
        let y = self.tensor().reduce(&d, keepdim, op)?;
        let (x, yc) = (self.tensor().clone(), y.clone());
        Ok(Var::from_op(
            if max { "max" } else { "min" },
            y,
            &[self],
            bw(move |g| {
                // the gradient is shared evenly between the elements equal to the extreme (amax)
                let yk = Var::reduce_keep_grad(&yc, x.dims(), &d, keepdim)?;
                let mask = x.eq(&yk)?.to_dtype(g.dtype())?;
                let count = mask.reduce(&d, true, stapes_tensor::ReduceOp::Sum)?;
                let gk = Var::reduce_keep_grad(g, x.dims(), &d, keepdim)?;
                Ok(vec![Some(gk.mul(&mask)?.div(&count)?)])
            }),
        ))
    }
    /// Maximum over `dims` (values).
    pub fn max<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Var> {
        let d = dims.to_indexes(self.tensor().rank(), "max")?;
        self.extreme(d, keepdim, true)
    }
    /// Minimum over `dims` (values).
    pub fn min<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Var> {
        let d = dims.to_indexes(self.tensor().rank(), "min")?;
        self.extreme(d, keepdim, false)
    }
    /// `log Σ exp(x)` over `dims`.
    pub fn logsumexp<D: Dims>(&self, dims: D, keepdim: bool) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.logsumexp(dims, keepdim);
        }
        let d = dims.to_indexes(self.tensor().rank(), "logsumexp")?;
        let y = self.tensor().reduce(&d, keepdim, stapes_tensor::ReduceOp::LogSumExp)?;
        let (x, yc) = (self.tensor().clone(), y.clone());
        Ok(Var::from_op(
            "logsumexp",
            y,
            &[self],
            bw(move |g| {
                let yk = Var::reduce_keep_grad(&yc, x.dims(), &d, keepdim)?;
                let gk = Var::reduce_keep_grad(g, x.dims(), &d, keepdim)?;
                Ok(vec![Some(gk.mul(&x.sub(&yk)?.exp()?)?)])
            }),
        ))
    }
    /// Variance over `dims` with `correction`.
    pub fn var<D: Dims>(&self, dims: D, correction: usize, keepdim: bool) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.var(dims, correction, keepdim);
        }
        let d = dims.to_indexes(self.tensor().rank(), "var")?;
        let y = self.tensor().reduce(&d, keepdim, stapes_tensor::ReduceOp::Var { correction })?;
        let x = self.tensor().clone();
        let n: usize = if d.is_empty() { x.elem_count() } else { d.iter().map(|&i| x.dims()[i]).product() };
        Ok(Var::from_op(
            "var",
            y,
            &[self],
            bw(move |g| {
                let mean = x.reduce(&d, true, stapes_tensor::ReduceOp::Mean)?;
                let gk = Var::reduce_keep_grad(g, x.dims(), &d, keepdim)?;
                let scale = 2.0 / (n as f64 - correction as f64);
                Ok(vec![Some(gk.mul(&x.sub(&mean)?)?.mul_scalar(scale)?)])
            }),
        ))
    }
    /// Standard deviation over `dims` with `correction`.
    pub fn std<D: Dims>(&self, dims: D, correction: usize, keepdim: bool) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.std(dims, correction, keepdim);
        }
        self.var(dims, correction, keepdim)?.sqrt()
    }

    // ---- softmax, matmul ----

    /// Softmax along `dim`.
    pub fn softmax<D: Dim>(&self, dim: D) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.softmax(dim);
        }
        let d = dim.to_index(self.tensor().rank().max(1), "softmax")?;
        let y = self.tensor().softmax(d)?;
        let yc = y.clone();
        Ok(Var::from_op("softmax", y, &[self], bw(move |g| Ok(vec![Some(yc.softmax_backward(g, d, false)?)]))))
    }
    /// Log-softmax along `dim`.
    pub fn log_softmax<D: Dim>(&self, dim: D) -> Result<Var> {
        if let Some(x) = crate::autocast::full(self)? {
            return x.log_softmax(dim);
        }
        let d = dim.to_index(self.tensor().rank().max(1), "log_softmax")?;
        let y = self.tensor().log_softmax(d)?;
        let yc = y.clone();
        Ok(Var::from_op("log_softmax", y, &[self], bw(move |g| Ok(vec![Some(yc.softmax_backward(g, d, true)?)]))))
    }
    /// Matrix product (`torch.matmul` semantics, 1-D operands promoted).
    pub fn matmul(&self, rhs: &Var) -> Result<Var> {
        if let Some(v) = crate::autocast::lower_all(&[self, rhs])? {
            return v[0].matmul(&v[1]);
        }
        match (self.tensor().rank(), rhs.tensor().rank()) {
            (0, _) | (_, 0) => {
                self.tensor().matmul(rhs.tensor())?;
                Err(Error::shape("matmul", "both operands must have at least 1 dim"))
            }
            (1, 1) => self.unsqueeze(0usize)?.matmul(&rhs.unsqueeze(1usize)?)?.reshape(()),
            (1, _) => self.unsqueeze(0usize)?.matmul(rhs)?.squeeze(-2i32),
            (_, 1) => self.matmul(&rhs.unsqueeze(1usize)?)?.squeeze(-1i32),
            _ => {
                let y = self.tensor().matmul(rhs.tensor())?;
                let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
                let (need_a, need_b) = (self.requires_grad(), rhs.requires_grad());
                Ok(Var::from_op(
                    "matmul",
                    y,
                    &[self, rhs],
                    bw(move |g| {
                        let ga = if need_a {
                            Some(g.matmul(&b.transpose(-1i32, -2i32)?)?.sum_to_shape(a.dims())?)
                        } else {
                            None
                        };
                        let gb = if need_b {
                            Some(a.transpose(-1i32, -2i32)?.matmul(g)?.sum_to_shape(b.dims())?)
                        } else {
                            None
                        };
                        Ok(vec![ga, gb])
                    }),
                ))
            }
        }
    }

    // ---- views and shape ops ----

    /// Reshape (a view when possible).
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Var> {
        let y = self.tensor().reshape(shape)?;
        let xd = self.dims().to_vec();
        Ok(Var::from_op("reshape", y, &[self], bw(move |g| Ok(vec![Some(g.reshape(xd.clone())?)]))))
    }
    /// Swaps two dims.
    pub fn transpose<D0: Dim, D1: Dim>(&self, d0: D0, d1: D1) -> Result<Var> {
        let a = d0.to_index(self.tensor().rank(), "transpose")?;
        let b = d1.to_index(self.tensor().rank(), "transpose")?;
        let y = self.tensor().transpose(a, b)?;
        Ok(Var::from_op("transpose", y, &[self], bw(move |g| Ok(vec![Some(g.transpose(a, b)?)]))))
    }
    /// Reorders dims.
    pub fn permute(&self, perm: &[usize]) -> Result<Var> {
        let y = self.tensor().permute(perm)?;
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(Var::from_op("permute", y, &[self], bw(move |g| Ok(vec![Some(g.permute(&inv)?)]))))
    }
    /// `start..start + len` along `dim` (a view).
    pub fn narrow<D: Dim>(&self, dim: D, start: usize, len: usize) -> Result<Var> {
        let d = dim.to_index(self.tensor().rank(), "narrow")?;
        let y = self.tensor().narrow(d, start, len)?;
        let xd = self.dims().to_vec();
        Ok(Var::from_op(
            "narrow",
            y,
            &[self],
            bw(move |g| {
                // zero-pad the gradient back to the input's extent along d
                let rank = xd.len();
                let mut pads = vec![0usize; 2 * (rank - d)];
                let k = 2 * (rank - 1 - d);
                pads[k] = start;
                pads[k + 1] = xd[d] - start - len;
                Ok(vec![Some(g.pad(&pads, PadMode::Constant, 0.0)?)])
            }),
        ))
    }
    /// Removes a size-1 dim.
    pub fn squeeze<D: Dim>(&self, dim: D) -> Result<Var> {
        let xd = self.dims().to_vec();
        let y = self.tensor().squeeze(dim)?;
        Ok(Var::from_op("squeeze", y, &[self], bw(move |g| Ok(vec![Some(g.reshape(xd.clone())?)]))))
    }
    /// Inserts a size-1 dim.
    pub fn unsqueeze<D: Dim>(&self, dim: D) -> Result<Var> {
        let xd = self.dims().to_vec();
        let y = self.tensor().unsqueeze(dim)?;
        Ok(Var::from_op("unsqueeze", y, &[self], bw(move |g| Ok(vec![Some(g.reshape(xd.clone())?)]))))
    }
    /// Broadcasts to `shape` (gradient summed back).
    pub fn expand(&self, shape: impl Into<Shape>) -> Result<Var> {
        let y = self.tensor().expand(shape)?;
        let xd = self.dims().to_vec();
        Ok(Var::from_op("expand", y, &[self], bw(move |g| Ok(vec![Some(g.sum_to_shape(&xd)?)]))))
    }
    /// A contiguous copy (identity for gradients).
    pub fn contiguous(&self) -> Result<Var> {
        let y = self.tensor().contiguous()?;
        Ok(Var::from_op("contiguous", y, &[self], bw(|g| Ok(vec![Some(g.clone())]))))
    }
    /// Casts to `dtype` (the gradient is cast back).
    pub fn to_dtype(&self, dtype: DType) -> Result<Var> {
        let y = self.tensor().to_dtype(dtype)?;
        let src = self.tensor().dtype();
        Ok(Var::from_op("to_dtype", y, &[self], bw(move |g| Ok(vec![Some(g.to_dtype(src)?)]))))
    }

    /// Concatenates along `dim`.
    pub fn cat<D: Dim>(vars: &[&Var], dim: D) -> Result<Var> {
        let ts: Vec<&Tensor> = vars.iter().map(|v| v.tensor()).collect();
        let first = ts.first().ok_or_else(|| Error::invalid("cat", "expects at least one tensor"))?;
        let d = dim.to_index(first.rank(), "cat")?;
        let y = Tensor::cat(&ts, d)?;
        let sizes: Vec<usize> = ts.iter().map(|t| t.dims()[d]).collect();
        Ok(Var::from_op("cat", y, vars, bw(move |g| Ok(g.split(&sizes, d)?.into_iter().map(Some).collect()))))
    }
    /// Stacks along a new dim.
    pub fn stack<D: Dim>(vars: &[&Var], dim: D) -> Result<Var> {
        let first = vars.first().ok_or_else(|| Error::invalid("stack", "expects at least one tensor"))?;
        let d = dim.to_index_plus_one(first.tensor().rank(), "stack")?;
        for (i, v) in vars.iter().enumerate() {
            if v.dims() != first.dims() {
                return Err(Error::shape(
                    "stack",
                    format!(
                        "shape mismatch in stack: tensor 0 has shape {:?}, tensor {i} has shape {:?}",
                        first.dims(),
                        v.dims()
                    ),
                ));
            }
        }
        let us: Vec<Var> = vars.iter().map(|v| v.unsqueeze(d)).collect::<Result<_>>()?;
        Var::cat(&us.iter().collect::<Vec<_>>(), d)
    }
    /// Splits into pieces of `sizes` along `dim`.
    pub fn split<D: Dim>(&self, sizes: &[usize], dim: D) -> Result<Vec<Var>> {
        let d = dim.to_index(self.tensor().rank(), "split")?;
        self.tensor().split(sizes, d)?; // validates
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let v = self.narrow(d, start, s);
                start += s;
                v
            })
            .collect()
    }
    /// Splits into `n` chunks along `dim` (as `torch.chunk`).
    pub fn chunk<D: Dim>(&self, n: usize, dim: D) -> Result<Vec<Var>> {
        let d = dim.to_index(self.tensor().rank(), "chunk")?;
        let sizes: Vec<usize> = self.tensor().chunk(n, d)?.iter().map(|t| t.dims()[d]).collect();
        self.split(&sizes, d)
    }
    /// Pads trailing dims (`pads` in `F.pad` order, last dim first).
    pub fn pad(&self, pads: &[usize], mode: PadMode, value: f64) -> Result<Var> {
        // validate everything up front with the tensor op's checks
        self.tensor().pad(pads, mode, value)?;
        let rank = self.tensor().rank();
        let mut x = self.clone();
        for (i, pair) in pads.chunks(2).enumerate() {
            let d = rank - 1 - i;
            let (lo, hi) = (pair[0], pair[1]);
            if lo == 0 && hi == 0 {
                continue;
            }
            x = match mode {
                PadMode::Constant => {
                    let mut ls = x.dims().to_vec();
                    ls[d] = lo;
                    let mut hs = x.dims().to_vec();
                    hs[d] = hi;
                    let t = x.tensor();
                    let l = Var::constant(Tensor::full(value, ls, t.dtype(), t.device())?);
                    let h = Var::constant(Tensor::full(value, hs, t.dtype(), t.device())?);
                    Var::cat(&[&l, &x, &h], d)?
                }
                PadMode::Reflect => x.index_select(d, &reflect_indices(x.dims()[d], lo, hi)?)?,
            };
        }
        Ok(x)
    }

    // ---- indexing ----

    /// Selects entries along `dim` by 1-D i64 indices.
    pub fn index_select<D: Dim>(&self, dim: D, indices: &Tensor) -> Result<Var> {
        let d = dim.to_index(self.tensor().rank(), "index_select")?;
        let y = self.tensor().index_select(d, indices)?;
        let (x, idx) = (self.tensor().clone(), indices.clone());
        Ok(Var::from_op(
            "index_select",
            y,
            &[self],
            bw(move |g| Ok(vec![Some(x.zeros_like()?.index_add(d, &idx, g)?)])),
        ))
    }
    /// Gathers along `dim` by an i64 index tensor.
    pub fn gather<D: Dim>(&self, dim: D, index: &Tensor) -> Result<Var> {
        let d = dim.to_index(self.tensor().rank(), "gather")?;
        let y = self.tensor().gather(d, index)?;
        let (x, idx) = (self.tensor().clone(), index.clone());
        Ok(Var::from_op("gather", y, &[self], bw(move |g| Ok(vec![Some(x.zeros_like()?.scatter_add(d, &idx, g)?)]))))
    }
    /// A copy of `self` with `src` added at the indexed positions along `dim`.
    pub fn scatter_add<D: Dim>(&self, dim: D, index: &Tensor, src: &Var) -> Result<Var> {
        let d = dim.to_index(self.tensor().rank(), "scatter_add")?;
        let y = self.tensor().scatter_add(d, index, src.tensor())?;
        let (idx, sd) = (index.clone(), src.dims().to_vec());
        Ok(Var::from_op(
            "scatter_add",
            y,
            &[self, src],
            bw(move |g| {
                let gs = g.gather(d, &idx)?;
                // src positions outside the index's extent get no gradient
                let mut pads = vec![];
                for i in (0..sd.len()).rev() {
                    pads.extend([0, sd[i] - idx.dims()[i]]);
                }
                let gs = gs.pad(&pads, PadMode::Constant, 0.0)?;
                Ok(vec![Some(g.clone()), Some(gs)])
            }),
        ))
    }
    /// Embedding lookup with `self` as the `[num_embeddings, dim]` weight.
    pub fn embedding(&self, ids: &Tensor) -> Result<Var> {
        let y = self.tensor().embedding(ids)?;
        let (w, flat) = (self.tensor().clone(), ids.flatten_all()?);
        Ok(Var::from_op(
            "embedding",
            y,
            &[self],
            bw(move |g| {
                let rows = g.reshape([flat.elem_count(), w.dims()[1]])?;
                Ok(vec![Some(w.zeros_like()?.index_add(0usize, &flat, &rows)?)])
            }),
        ))
    }

    // ---- convolution, pooling, normalisation ----

    /// 2-D convolution.
    pub fn conv2d(
        &self,
        weight: &Var,
        bias: Option<&Var>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<Var> {
        if crate::autocast::autocast_dtype().is_some() {
            let mut ins = vec![self, weight];
            ins.extend(bias);
            if let Some(v) = crate::autocast::lower_all(&ins)? {
                return v[0].conv2d(&v[1], v.get(2), stride, padding, dilation, groups);
            }
        }
        let p = Conv2dParams { stride, padding, dilation, groups };
        let y = self.tensor().conv2d(weight.tensor(), bias.map(|b| b.tensor()), stride, padding, dilation, groups)?;
        let (x, w) = (self.tensor().clone(), weight.tensor().clone());
        let (need_x, need_w) = (self.requires_grad(), weight.requires_grad());
        let mut inputs = vec![self, weight];
        let need_b = bias.is_some_and(|b| b.requires_grad());
        if let Some(b) = bias {
            inputs.push(b);
        }
        let has_bias = bias.is_some();
        Ok(Var::from_op(
            "conv2d",
            y,
            &inputs,
            bw(move |g| {
                let gx = if need_x { Some(Tensor::conv2d_backward_input(g, &w, x.dims(), &p)?) } else { None };
                let gw = if need_w { Some(Tensor::conv2d_backward_weight(&x, g, w.dims(), &p)?) } else { None };
                let mut out = vec![gx, gw];
                if has_bias {
                    out.push(if need_b { Some(g.sum([0usize, 2, 3], false)?) } else { None });
                }
                Ok(out)
            }),
        ))
    }
    /// 1-D convolution.
    pub fn conv1d(
        &self,
        weight: &Var,
        bias: Option<&Var>,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Var> {
        if self.tensor().rank() != 3 || weight.tensor().rank() != 3 {
            return Err(Error::shape(
                "conv1d",
                format!(
                    "expects a 3-D input [N, C, L] and a 3-D weight [O, C/groups, k], got {:?} and {:?}",
                    self.dims(),
                    weight.dims()
                ),
            ));
        }
        let y = self.unsqueeze(2usize)?.conv2d(
            &weight.unsqueeze(2usize)?,
            bias,
            [1, stride],
            [0, padding],
            [1, dilation],
            groups,
        )?;
        y.squeeze(2usize)
    }
    /// Max pooling.
    pub fn max_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> Result<Var> {
        let p = Pool2d { kernel, stride, padding, dilation, ceil_mode, count_include_pad: true };
        let (y, idx) = self.tensor().max_pool2d_with_indices(&p)?;
        let xd = self.dims().to_vec();
        Ok(Var::from_op(
            "max_pool2d",
            y,
            &[self],
            bw(move |g| Ok(vec![Some(Tensor::max_pool2d_backward(g, &idx, &xd, &p)?)])),
        ))
    }
    /// Average pooling.
    pub fn avg_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Result<Var> {
        let p = Pool2d { kernel, stride, padding, dilation: [1, 1], ceil_mode, count_include_pad };
        let y = self.tensor().avg_pool2d(kernel, stride, padding, ceil_mode, count_include_pad)?;
        let xd = self.dims().to_vec();
        Ok(Var::from_op(
            "avg_pool2d",
            y,
            &[self],
            bw(move |g| Ok(vec![Some(Tensor::avg_pool2d_backward(g, &xd, &p)?)])),
        ))
    }
    /// Layer norm over the trailing `normalized_shape` dims.
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Var>,
        bias: Option<&Var>,
        eps: f64,
    ) -> Result<Var> {
        if let Some((x, w, b)) = crate::autocast::full_norm(self, weight, bias)? {
            return x.layer_norm(normalized_shape, w.as_ref(), b.as_ref(), eps);
        }
        let out = self.tensor().layer_norm_with_stats(
            normalized_shape,
            weight.map(|w| w.tensor()),
            bias.map(|b| b.tensor()),
            eps,
        )?;
        let (x, w) = (self.tensor().clone(), weight.map(|w| w.tensor().clone()));
        let ns = normalized_shape.to_vec();
        let (mean, rstd) = (out.mean, out.rstd);
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        Ok(Var::from_op(
            "layer_norm",
            out.y,
            &inputs,
            bw(move |g| {
                let (gx, gw, gb) = Tensor::layer_norm_backward(&x, g, &ns, w.as_ref(), has_b, &mean, &rstd)?;
                Ok(norm_input_grads(gx, gw, gb, has_w, has_b))
            }),
        ))
    }
    /// Batch norm over `[N, C, *]`; returns the output and, in training with running
    /// statistics, their updated values.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Var>,
        bias: Option<&Var>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<(Var, Option<(Tensor, Tensor)>)> {
        if let Some((x, w, b)) = crate::autocast::full_norm(self, weight, bias)? {
            return x.batch_norm(running_mean, running_var, w.as_ref(), b.as_ref(), training, momentum, eps);
        }
        let out = self.tensor().batch_norm(
            running_mean,
            running_var,
            weight.map(|w| w.tensor()),
            bias.map(|b| b.tensor()),
            training,
            momentum,
            eps,
        )?;
        let stats = match (out.running_mean, out.running_var) {
            (Some(m), Some(v)) => Some((m, v)),
            _ => None,
        };
        let (x, w) = (self.tensor().clone(), weight.map(|w| w.tensor().clone()));
        let (sm, sr) = (out.save_mean, out.save_rstd);
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        let y = Var::from_op(
            "batch_norm",
            out.y,
            &inputs,
            bw(move |g| {
                let (gx, gw, gb) = Tensor::batch_norm_backward(&x, g, w.as_ref(), has_b, &sm, &sr, training)?;
                Ok(norm_input_grads(gx, gw, gb, has_w, has_b))
            }),
        );
        Ok((y, stats))
    }
}

/// Input gradients of a normalisation recorded with inputs `[x, weight?, bias?]`: one entry per
/// recorded input, in that order.
fn norm_input_grads(
    gx: Tensor,
    gw: Option<Tensor>,
    gb: Option<Tensor>,
    has_w: bool,
    has_b: bool,
) -> Vec<Option<Tensor>> {
    let mut v = vec![Some(gx)];
    if has_w {
        v.push(gw);
    }
    if has_b {
        v.push(gb);
    }
    v
}

/// Gradients of elementwise maximum (`max == true`) or minimum: the larger (smaller) operand
/// gets the gradient, ties split it in halves.
fn minmax_grads(g: &Tensor, a: &Tensor, b: &Tensor, max: bool) -> Result<(Option<Tensor>, Option<Tensor>)> {
    use stapes_tensor::CmpOp;
    let (a_wins, b_wins) =
        if max { (a.cmp(b, CmpOp::Gt)?, a.cmp(b, CmpOp::Lt)?) } else { (a.cmp(b, CmpOp::Lt)?, a.cmp(b, CmpOp::Gt)?) };
    let tie = a.cmp(b, CmpOp::Eq)?.to_dtype(g.dtype())?.mul_scalar(0.5)?;
    let wa = a_wins.to_dtype(g.dtype())?.add(&tie)?;
    let wb = b_wins.to_dtype(g.dtype())?.add(&tie)?;
    Ok((Some(g.mul(&wa)?), Some(g.mul(&wb)?)))
}
