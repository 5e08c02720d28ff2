//! Elementwise ops: unary maps, broadcasting binary maps, comparisons into u8 masks, `where`
//! and `masked_fill`. One closure per op is monomorphised into the kernel loop, so the inner
//! loops have no per-element dispatch.

use super::compute::{check_mask, float_data, float_strided, from_compute, ComputeFloat};
use crate::shape::broadcast_shapes;
#[allow(unused_imports)]
use crate::WithDType as _;
use crate::{Error, Result, Tensor, WithDType};
#[allow(unused_imports)]
use num_traits::{Float as _, One as _, Zero as _};
use stapes_kernels::cpu::binary::{binary_map, ternary_map, Strided};
use stapes_kernels::cpu::unary::{erf, par_chunked, unary_map, unary_map_inplace};
#[allow(unused_imports)]
use stapes_kernels::cpu::Float as _;
use stapes_kernels::cpu::Float;
use std::borrow::Cow;

/// Unary float ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// Negation, `-x`.
    Neg,
    /// Exponential, `e^x`.
    Exp,
    /// Natural logarithm, `ln x`.
    Log,
    /// Square root, `√x`.
    Sqrt,
    /// Reciprocal square root, `1 / √x`.
    Rsqrt,
    /// Absolute value, `|x|`.
    Abs,
    /// ReLU, `max(x, 0)` (NaN and -0 pass through).
    Relu,
    /// GELU with the exact erf form.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
    /// Logistic sigmoid, `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent, `tanh x`.
    Tanh,
    /// Sine, `sin x` (radians).
    Sin,
    /// Cosine, `cos x` (radians).
    Cos,
    /// `x^e` for a scalar exponent.
    Powf(f64),
    /// `min(max(x, lo), hi)`.
    Clamp(f64, f64),
    /// `x * mul + add`.
    Affine(f64, f64),
    /// Reciprocal, `1 / x`.
    Recip,
    /// Square, `x * x`.
    Sqr,
    /// `sign(x)` (0 at 0).
    Sign,
    /// Derivative of [`UnaryOp::Gelu`].
    GeluGrad,
    /// Derivative of [`UnaryOp::GeluTanh`].
    GeluTanhGrad,
}

impl UnaryOp {
    /// The op's name, as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Relu => "relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Clamp(..) => "clamp",
            UnaryOp::Affine(..) => "affine",
            UnaryOp::Recip => "recip",
            UnaryOp::Sqr => "sqr",
            UnaryOp::Sign => "sign",
            UnaryOp::GeluGrad => "gelu_grad",
            UnaryOp::GeluTanhGrad => "gelu_tanh_grad",
        }
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

#[inline(always)]
fn c<T: Float>(v: f64) -> T {
    T::from_f64_lossy(v)
}

/// Applies a slice kernel that works in place, in cache-sized chunks in parallel: on owned data
/// directly; on borrowed data, each chunk copied into the output and transformed there (one
/// pass over memory).
fn slice_inplace<T: ComputeFloat>(src: Cow<'_, [T]>, f: impl Fn(&mut [T]) + Sync + Send) -> Vec<T> {
    match src {
        Cow::Owned(mut v) => {
            par_chunked(&mut v, f);
            v
        }
        Cow::Borrowed(s) => {
            use rayon::prelude::*;
            let mut out = crate::alloc::take::<T>(s.len());
            let chunk = stapes_kernels::cpu::PAR_CHUNK;
            out.par_chunks_mut(chunk).zip(s.par_chunks(chunk)).for_each(|(o, i)| {
                o.copy_from_slice(i);
                f(o);
            });
            out
        }
    }
}

fn apply_unary<T: ComputeFloat>(src: Cow<'_, [T]>, op: UnaryOp) -> Vec<T> {
    // Ops whose result only depends on x: map either in place (owned data) or into a new buffer.
    macro_rules! map {
        ($f:expr) => {{
            let f = $f;
            match src {
                Cow::Owned(mut v) => {
                    unary_map_inplace(&mut v, f);
                    v
                }
                Cow::Borrowed(s) => {
                    let mut out = crate::alloc::take::<T>(s.len());
                    unary_map(s, &mut out, f);
                    out
                }
            }
        }};
    }
    // f32 ops with a vectorised slice kernel (compiled for AVX-512/AVX2, chosen at run time)
    fn on_f32<T: 'static>(xs: &mut [T], f: fn(&mut [f32])) {
        f(stapes_kernels::cpu::as_f32_mut(xs).expect("T is f32"))
    }
    let is_f32 = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
    match op {
        UnaryOp::Gelu if is_f32 => {
            slice_inplace(src, |xs: &mut [T]| on_f32(xs, stapes_kernels::cpu::vmath::gelu_f32_inplace))
        }
        UnaryOp::GeluGrad if is_f32 => {
            slice_inplace(src, |xs: &mut [T]| on_f32(xs, stapes_kernels::cpu::vmath::gelu_grad_f32_inplace))
        }
        UnaryOp::Neg => map!(|x: T| -x),
        UnaryOp::Exp => slice_inplace(src, T::exp_slice),
        UnaryOp::Log => map!(|x: T| x.ln()),
        UnaryOp::Sqrt => map!(|x: T| x.sqrt()),
        UnaryOp::Rsqrt => map!(|x: T| T::one() / x.sqrt()),
        UnaryOp::Abs => map!(|x: T| x.abs()),
        UnaryOp::Relu => map!(|x: T| if x < T::zero() { T::zero() } else { x }),
        UnaryOp::Gelu => map!(|x: T| {
            let xf = x.to_f64_lossy();
            c::<T>(0.5 * xf * (1.0 + erf(xf * std::f64::consts::FRAC_1_SQRT_2)))
        }),
        UnaryOp::GeluTanh => map!(|x: T| {
            let xf = x.to_f64_lossy();
            let inner = SQRT_2_OVER_PI * (xf + GELU_C * xf * xf * xf);
            c::<T>(0.5 * xf * (1.0 + inner.tanh()))
        }),
        UnaryOp::Sigmoid => map!(|x: T| T::one() / (T::one() + (-x).exp())),
        UnaryOp::Tanh => map!(|x: T| x.tanh()),
        UnaryOp::Sin => map!(|x: T| x.sin()),
        UnaryOp::Cos => map!(|x: T| x.cos()),
        UnaryOp::Powf(e) => {
            let et = c::<T>(e);
            if e == 2.0 {
                map!(|x: T| x * x)
            } else {
                map!(move |x: T| x.powf(et))
            }
        }
        UnaryOp::Clamp(lo, hi) => {
            let (lo, hi) = (c::<T>(lo), c::<T>(hi));
            map!(move |x: T| if x < lo {
                lo
            } else if x > hi {
                hi
            } else {
                x
            })
        }
        UnaryOp::Affine(m, a) => {
            let (m, a) = (c::<T>(m), c::<T>(a));
            map!(move |x: T| x * m + a)
        }
        UnaryOp::Recip => map!(|x: T| T::one() / x),
        UnaryOp::Sqr => map!(|x: T| x * x),
        UnaryOp::Sign => map!(|x: T| if x > T::zero() {
            T::one()
        } else if x < T::zero() {
            -T::one()
        } else {
            x * T::zero()
        }),
        UnaryOp::GeluGrad => map!(|x: T| {
            let xf = x.to_f64_lossy();
            let cdf = 0.5 * (1.0 + erf(xf * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * xf * xf).exp() / (2.0 * std::f64::consts::PI).sqrt();
            c::<T>(cdf + xf * pdf)
        }),
        UnaryOp::GeluTanhGrad => map!(|x: T| {
            let xf = x.to_f64_lossy();
            let inner = SQRT_2_OVER_PI * (xf + GELU_C * xf * xf * xf);
            let t = inner.tanh();
            let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * xf * xf);
            c::<T>(0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * dinner)
        }),
    }
}

/// Binary float ops (broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// Addition, `a + b`.
    Add,
    /// Subtraction, `a - b`.
    Sub,
    /// Multiplication, `a * b`.
    Mul,
    /// Division, `a / b`.
    Div,
    /// Elementwise maximum; NaN in either operand propagates.
    Maximum,
    /// Elementwise minimum; NaN in either operand propagates.
    Minimum,
    /// Power, `a^b`.
    Pow,
}

impl BinaryOp {
    /// The op's name, as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Pow => "pow",
        }
    }
}

/// Comparisons, producing u8 masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// Equal, `a == b`.
    Eq,
    /// Not equal, `a != b` (true when either is NaN).
    Ne,
    /// Less than, `a < b`.
    Lt,
    /// Less or equal, `a <= b`.
    Le,
    /// Greater than, `a > b`.
    Gt,
    /// Greater or equal, `a >= b`.
    Ge,
}

impl CmpOp {
    /// The op's name, as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }
}

/// Strides of `layout` broadcast to `shape`.
fn bcast(op: &'static str, layout: &crate::Layout, shape: &[usize]) -> Result<(Vec<usize>, usize)> {
    let l = layout.broadcast_as(op, shape)?;
    Ok((l.strides().to_vec(), l.offset()))
}

impl Tensor {
    /// Applies a unary float op.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        float_dispatch!(self.dtype(), op.name(), |T| {
            if self.device().is_cuda() {
                return crate::cuda::elementwise::unary(self, op);
            }
            let out = apply_unary::<T>(float_data::<T>(self)?, op);
            from_compute(out, self.shape(), self.dtype())
        })
    }

    /// Applies a broadcasting binary float op. Both operands must share dtype and device.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let name = op.name();
        self.check_same(rhs, name, true)?;
        let shape = broadcast_shapes(name, self.dims(), rhs.dims())?;
        float_dispatch!(self.dtype(), name, |T| {
            if self.device().is_cuda() {
                return crate::cuda::elementwise::binary(self, rhs, op, &shape);
            }
            let (ld, ll) = float_strided::<T>(self)?;
            let (rd, rl) = float_strided::<T>(rhs)?;
            let (ls, lo) = bcast(name, &ll, &shape)?;
            let (rs, ro) = bcast(name, &rl, &shape)?;
            let l = Strided { data: &ld, strides: &ls, offset: lo };
            let r = Strided { data: &rd, strides: &rs, offset: ro };
            let n: usize = shape.iter().product();
            let mut out = crate::alloc::take::<T>(n);
            match op {
                BinaryOp::Add => binary_map(&shape, l, r, &mut out, |a: T, b: T| a + b),
                BinaryOp::Sub => binary_map(&shape, l, r, &mut out, |a: T, b: T| a - b),
                BinaryOp::Mul => binary_map(&shape, l, r, &mut out, |a: T, b: T| a * b),
                BinaryOp::Div => binary_map(&shape, l, r, &mut out, |a: T, b: T| a / b),
                BinaryOp::Maximum => {
                    binary_map(&shape, l, r, &mut out, |a: T, b: T| if a.is_nan() || a > b { a } else { b })
                }
                BinaryOp::Minimum => {
                    binary_map(&shape, l, r, &mut out, |a: T, b: T| if a.is_nan() || a < b { a } else { b })
                }
                BinaryOp::Pow => binary_map(&shape, l, r, &mut out, |a: T, b: T| a.powf(b)),
            }
            from_compute(out, shape, self.dtype())
        })
    }

    /// Elementwise comparison with broadcasting into a u8 mask (1 where true). Works for every
    /// dtype; both operands must share it.
    pub fn cmp(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        let name = op.name();
        self.check_same(rhs, name, true)?;
        let shape = broadcast_shapes(name, self.dims(), rhs.dims())?;
        if self.device().is_cuda() {
            return crate::cuda::elementwise::cmp(self, rhs, op, &shape);
        }
        let n: usize = shape.iter().product();
        let mut out = crate::alloc::take::<u8>(n);
        all_dispatch!(self.dtype(), |T| {
            let ld = T::storage_slice(self.cpu_storage()?).expect("dtype");
            let rd = T::storage_slice(rhs.cpu_storage()?).expect("dtype");
            let (ls, lo) = bcast(name, self.layout(), &shape)?;
            let (rs, ro) = bcast(name, rhs.layout(), &shape)?;
            let l = Strided { data: ld, strides: &ls, offset: lo };
            let r = Strided { data: rd, strides: &rs, offset: ro };
            match op {
                CmpOp::Eq => binary_map(&shape, l, r, &mut out, |a: T, b: T| (a == b) as u8),
                CmpOp::Ne => binary_map(&shape, l, r, &mut out, |a: T, b: T| (a != b) as u8),
                CmpOp::Lt => binary_map(&shape, l, r, &mut out, |a: T, b: T| (a < b) as u8),
                CmpOp::Le => binary_map(&shape, l, r, &mut out, |a: T, b: T| (a <= b) as u8),
                CmpOp::Gt => binary_map(&shape, l, r, &mut out, |a: T, b: T| (a > b) as u8),
                CmpOp::Ge => binary_map(&shape, l, r, &mut out, |a: T, b: T| (a >= b) as u8),
            }
        });
        Tensor::from_vec(out, shape, self.device())
    }

    /// Compares with a scalar (converted to this dtype).
    pub fn cmp_scalar(&self, value: f64, op: CmpOp) -> Result<Tensor> {
        let s = Tensor::full(value, (), self.dtype(), self.device())?;
        self.cmp(&s, op)
    }

    /// `self` is a u8 mask: picks `on_true` where it is nonzero, `on_false` elsewhere, with
    /// broadcasting of all three.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let name = "where_cond";
        check_mask(name, self)?;
        on_true.check_same(on_false, name, true)?;
        self.check_same(on_true, name, false)?;
        let shape = broadcast_shapes(name, self.dims(), on_true.dims())?;
        let shape = broadcast_shapes(name, &shape, on_false.dims())?;
        if self.device().is_cuda() {
            return crate::cuda::elementwise::where_cond(self, on_true, on_false, &shape);
        }
        let mask = u8::storage_slice(self.cpu_storage()?).expect("dtype");
        let (ms, mo) = bcast(name, self.layout(), &shape)?;
        let n: usize = shape.iter().product();
        let storage = all_dispatch!(on_true.dtype(), |T| {
            let a = T::storage_slice(on_true.cpu_storage()?).expect("dtype");
            let b = T::storage_slice(on_false.cpu_storage()?).expect("dtype");
            let (as_, ao) = bcast(name, on_true.layout(), &shape)?;
            let (bs, bo) = bcast(name, on_false.layout(), &shape)?;
            let mut out: Vec<T> = crate::alloc::take::<T>(n);
            ternary_map(
                &shape,
                Strided { data: mask, strides: &ms, offset: mo },
                Strided { data: a, strides: &as_, offset: ao },
                Strided { data: b, strides: &bs, offset: bo },
                &mut out,
                |m: u8, x: T, y: T| if m != 0 { x } else { y },
            );
            T::into_storage(out)
        });
        Tensor::from_cpu_storage(storage, shape)
    }

    /// Replaces the elements where the u8 `mask` (broadcast to this shape) is nonzero by `value`.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        check_mask("masked_fill", mask)?;
        let shape = broadcast_shapes("masked_fill", self.dims(), mask.dims())?;
        if shape != self.dims() {
            return Err(Error::shape(
                "masked_fill",
                format!("mask of shape {:?} does not broadcast to the tensor's shape {:?}", mask.dims(), self.dims()),
            ));
        }
        let v = Tensor::full(value, (), self.dtype(), self.device())?;
        mask.where_cond(&v, self)
    }
}

macro_rules! unary_methods {
    ($($(#[$m:meta])* $name:ident => $op:expr;)*) => {
        impl Tensor {
            $($(#[$m])* pub fn $name(&self) -> Result<Tensor> { self.unary($op) })*
        }
    };
}

unary_methods! {
    /// `-x`.
    neg => UnaryOp::Neg;
    /// `e^x`.
    exp => UnaryOp::Exp;
    /// Natural logarithm.
    log => UnaryOp::Log;
    /// Square root.
    sqrt => UnaryOp::Sqrt;
    /// `1 / sqrt(x)`.
    rsqrt => UnaryOp::Rsqrt;
    /// `|x|`.
    abs => UnaryOp::Abs;
    /// `max(x, 0)` (NaN stays NaN).
    relu => UnaryOp::Relu;
    /// GELU, exact (erf) form, as `torch.nn.functional.gelu`.
    gelu => UnaryOp::Gelu;
    /// GELU, tanh approximation, as `gelu(x, approximate="tanh")`.
    gelu_tanh => UnaryOp::GeluTanh;
    /// Logistic sigmoid.
    sigmoid => UnaryOp::Sigmoid;
    /// Hyperbolic tangent.
    tanh => UnaryOp::Tanh;
    /// Sine.
    sin => UnaryOp::Sin;
    /// Cosine.
    cos => UnaryOp::Cos;
    /// `1 / x`.
    recip => UnaryOp::Recip;
    /// `x * x`.
    sqr => UnaryOp::Sqr;
    /// The sign of each element (-1, 0 or 1).
    sign => UnaryOp::Sign;
}

macro_rules! binary_methods {
    ($($(#[$m:meta])* $name:ident => $op:expr;)*) => {
        impl Tensor {
            $($(#[$m])* pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> { self.binary(rhs, $op) })*
        }
    };
}

binary_methods! {
    /// `self + rhs` with broadcasting.
    add => BinaryOp::Add;
    /// `self - rhs` with broadcasting.
    sub => BinaryOp::Sub;
    /// `self * rhs` with broadcasting.
    mul => BinaryOp::Mul;
    /// `self / rhs` with broadcasting.
    div => BinaryOp::Div;
    /// Elementwise maximum (NaN propagates).
    maximum => BinaryOp::Maximum;
    /// Elementwise minimum (NaN propagates).
    minimum => BinaryOp::Minimum;
    /// `self ^ rhs` with broadcasting.
    pow => BinaryOp::Pow;
}

macro_rules! cmp_methods {
    ($($(#[$m:meta])* $name:ident => $op:expr;)*) => {
        impl Tensor {
            $($(#[$m])* pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> { self.cmp(rhs, $op) })*
        }
    };
}

cmp_methods! {
    /// `self == rhs` as a u8 mask.
    eq => CmpOp::Eq;
    /// `self != rhs` as a u8 mask.
    ne => CmpOp::Ne;
    /// `self < rhs` as a u8 mask.
    lt => CmpOp::Lt;
    /// `self <= rhs` as a u8 mask.
    le => CmpOp::Le;
    /// `self > rhs` as a u8 mask.
    gt => CmpOp::Gt;
    /// `self >= rhs` as a u8 mask.
    ge => CmpOp::Ge;
}

impl Tensor {
    /// `x ^ e` for a scalar exponent.
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(e))
    }
    /// Clamps every element into `[min, max]`.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        if min > max {
            return Err(Error::invalid("clamp", format!("min {min} is greater than max {max}")));
        }
        self.unary(UnaryOp::Clamp(min, max))
    }
    /// `x * mul + add`.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine(mul, add))
    }
    /// `x + v`.
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    /// `x * v`.
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    /// The u8 mask of elements that are NaN.
    pub fn isnan(&self) -> Result<Tensor> {
        self.ne(self)
    }
    /// Whether every element is finite (no NaN or infinity).
    pub fn all_finite(&self) -> Result<bool> {
        if !self.dtype().is_float() {
            return Ok(true);
        }
        float_dispatch!(self.dtype(), "all_finite", |T| {
            if self.device().is_cuda() {
                return crate::cuda::elementwise::all_finite(self);
            }
            Ok(float_data::<T>(self)?.iter().all(|x| x.is_finite()))
        })
    }
    /// Whether the two tensors have the same shape and elements (bitwise-equal values, NaN
    /// compared by bits), after conversion to f64.
    pub fn equal(&self, other: &Tensor) -> Result<bool> {
        if self.dims() != other.dims() {
            return Ok(false);
        }
        let (a, b) = (self.to_vec_f64()?, other.to_vec_f64()?);
        Ok(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()))
    }
}
