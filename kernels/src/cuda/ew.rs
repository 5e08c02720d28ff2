//! Launch wrappers for `kernels/cuda/ew.cu`, the element-wise ops under the tensor layer's CUDA
//! dispatch: unary float ops with scalar parameters, binary float ops (dense, or broadcasting
//! with per-operand strides), comparisons into u8 masks, `where`, and the all-finite check.
//! CPU reference: the tensor crate's `ops/elementwise.rs` (whose formulas `ew.cu` restates);
//! the tensor tests (`tensor/tests/cuda_elementwise.rs`) hold each op to it.
//!
//! The op is a kernel argument (an int code), so each family has one kernel per dtype.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg};
use super::CudaError;

/// The float dtypes of the float kernels: `f32`, `f64`, and `f16`/`bf16` (computed in `f32`).
pub trait EwFloat: DeviceElem {}
impl EwFloat for f32 {}
impl EwFloat for f64 {}
impl EwFloat for half::f16 {}
impl EwFloat for half::bf16 {}

/// Unary float ops, with their scalar parameters.
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
    /// GELU, erf form.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// Logistic sigmoid, `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent, `tanh x`.
    Tanh,
    /// Sine, `sin x` (radians).
    Sin,
    /// Cosine, `cos x` (radians).
    Cos,
    /// `x^e`.
    Powf(f64),
    /// `min(max(x, lo), hi)` (NaN passes through).
    Clamp(f64, f64),
    /// `x * mul + add`, rounded after the product and after the sum (no FMA).
    Affine(f64, f64),
    /// Reciprocal, `1 / x`.
    Recip,
    /// Square, `x * x`.
    Sqr,
    /// -1, 0 or 1 (signed zeros and NaN kept).
    Sign,
    /// d gelu / dx.
    GeluGrad,
    /// d gelu_tanh / dx.
    GeluTanhGrad,
}

impl UnaryOp {
    /// The kernel's op code and its two scalar parameters (`ew.cu`'s `unary_op`).
    pub fn code(self) -> (i32, f64, f64) {
        match self {
            UnaryOp::Neg => (0, 0.0, 0.0),
            UnaryOp::Exp => (1, 0.0, 0.0),
            UnaryOp::Log => (2, 0.0, 0.0),
            UnaryOp::Sqrt => (3, 0.0, 0.0),
            UnaryOp::Rsqrt => (4, 0.0, 0.0),
            UnaryOp::Abs => (5, 0.0, 0.0),
            UnaryOp::Relu => (6, 0.0, 0.0),
            UnaryOp::Gelu => (7, 0.0, 0.0),
            UnaryOp::GeluTanh => (8, 0.0, 0.0),
            UnaryOp::Sigmoid => (9, 0.0, 0.0),
            UnaryOp::Tanh => (10, 0.0, 0.0),
            UnaryOp::Sin => (11, 0.0, 0.0),
            UnaryOp::Cos => (12, 0.0, 0.0),
            // x^2 is x * x, as on the CPU (exact, where powf may not be)
            UnaryOp::Powf(e) => {
                if e == 2.0 {
                    (17, 0.0, 0.0)
                } else {
                    (13, e, 0.0)
                }
            }
            UnaryOp::Clamp(lo, hi) => (14, lo, hi),
            UnaryOp::Affine(m, a) => (15, m, a),
            UnaryOp::Recip => (16, 0.0, 0.0),
            UnaryOp::Sqr => (17, 0.0, 0.0),
            UnaryOp::Sign => (18, 0.0, 0.0),
            UnaryOp::GeluGrad => (19, 0.0, 0.0),
            UnaryOp::GeluTanhGrad => (20, 0.0, 0.0),
        }
    }
}

/// Binary float ops.
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
    /// NaN in either operand propagates; otherwise `a > b ? a : b`.
    Maximum,
    /// NaN in either operand propagates; otherwise `a < b ? a : b`.
    Minimum,
    /// Power, `a^b`.
    Pow,
}

impl BinaryOp {
    /// The kernel's op code (`ew.cu`'s `binary_op`).
    pub fn code(self) -> i32 {
        match self {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
            BinaryOp::Maximum => 4,
            BinaryOp::Minimum => 5,
            BinaryOp::Pow => 6,
        }
    }
}

/// Comparisons (IEEE: NaN compares unequal to everything).
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
    /// The kernel's op code (`ew.cu`'s `cmp_op`).
    pub fn code(self) -> i32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Ne => 1,
            CmpOp::Lt => 2,
            CmpOp::Le => 3,
            CmpOp::Gt => 4,
            CmpOp::Ge => 5,
        }
    }
}

/// An operand of a broadcasting kernel: a buffer, and the element at output multi-index `i`
/// is `buf[offset + Σ_k i_k · strides[k]]` (strides in elements, 0 on broadcast dims).
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a, T: DeviceElem> {
    /// The buffer holding the operand.
    pub buf: &'a DeviceBuffer<T>,
    /// Element strides, one per output dim (0 on broadcast dims).
    pub strides: &'a [usize],
    /// Element index of the operand's first element in `buf`.
    pub offset: usize,
}

impl<T: DeviceElem> Operand<'_, T> {
    /// Checks the strides' rank and that every element the kernel will read is in the buffer.
    fn check(&self, op: &'static str, name: &str, dims: &[usize]) -> Result<(), CudaError> {
        if self.strides.len() != dims.len() {
            let message = format!("{name}: {} strides for {} dims", self.strides.len(), dims.len());
            return Err(CudaError::Shape { op, message });
        }
        if dims.contains(&0) {
            return Ok(());
        }
        let last = self.offset + dims.iter().zip(self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>();
        if last >= self.buf.len() {
            let message = format!(
                "{name} (dims {dims:?}, strides {:?}, offset {}) reaches element {last} of a {}-element buffer",
                self.strides,
                self.offset,
                self.buf.len()
            );
            return Err(CudaError::Shape { op, message });
        }
        Ok(())
    }
}

/// The `meta` buffer of a broadcasting launch: dims, then each operand's strides.
fn upload_meta(backend: &Backend, dims: &[usize], strides: &[&[usize]]) -> Result<DeviceBuffer<i64>, CudaError> {
    let meta: Vec<i64> = dims.iter().chain(strides.iter().flat_map(|s| s.iter())).map(|&v| v as i64).collect();
    backend.upload(&meta)
}

/// Every named buffer must hold at least `n` elements.
fn check_len(op: &'static str, n: usize, bufs: &[(&str, usize)]) -> Result<(), CudaError> {
    for &(name, len) in bufs {
        if len < n {
            return Err(CudaError::Shape { op, message: format!("{name} holds {len} elements, fewer than {n}") });
        }
    }
    Ok(())
}

fn check_out(op: &'static str, n: usize, out: usize) -> Result<(), CudaError> {
    if out != n {
        return Err(CudaError::Shape { op, message: format!("out holds {out} elements, expected {n}") });
    }
    Ok(())
}

/// `out[i] = op(x[i])` for `i < n`, dense buffers holding at least `n` elements.
pub fn unary<T: EwFloat>(
    backend: &Backend,
    op: UnaryOp,
    n: usize,
    x: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::ew::unary";
    check_len(OP, n, &[("x", x.len()), ("out", out.len())])?;
    if n == 0 {
        return Ok(());
    }
    let (code, p0, p1) = op.code();
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(x),
        KernelArg::output(out),
        KernelArg::i32(code),
        KernelArg::f64(p0),
        KernelArg::f64(p1),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: ew_unary_<T>(const T* x, T* out, int op, double p0, double p1, unsigned long long n)
    // reads x[0, n) and writes out[0, n); both hold at least n elements (checked).
    unsafe { backend.launch(&format!("ew_unary_{}", T::NAME), cfg, &mut args) }
}

/// `out[i] = op(a[i], b[i])` for `i < n`, dense buffers holding at least `n` elements.
pub fn binary<T: EwFloat>(
    backend: &Backend,
    op: BinaryOp,
    n: usize,
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::ew::binary";
    check_len(OP, n, &[("a", a.len()), ("b", b.len()), ("out", out.len())])?;
    if n == 0 {
        return Ok(());
    }
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(a),
        KernelArg::input(b),
        KernelArg::output(out),
        KernelArg::i32(op.code()),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: ew_binary_<T>(const T* a, const T* b, T* out, int op, unsigned long long n) reads
    // a[0, n), b[0, n) and writes out[0, n); all hold at least n elements (checked).
    unsafe { backend.launch(&format!("ew_binary_{}", T::NAME), cfg, &mut args) }
}

/// `out[i] = op(a[..], b[..])` over the dense output of shape `dims`, each operand read through
/// its own strides (broadcasting, views).
pub fn binary_bcast<T: EwFloat>(
    backend: &Backend,
    op: BinaryOp,
    dims: &[usize],
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::ew::binary_bcast";
    let n: usize = dims.iter().product();
    check_out(OP, n, out.len())?;
    a.check(OP, "a", dims)?;
    b.check(OP, "b", dims)?;
    if n == 0 {
        return Ok(());
    }
    let meta = upload_meta(backend, dims, &[a.strides, b.strides])?;
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(a.buf),
        KernelArg::input(b.buf),
        KernelArg::output(out),
        KernelArg::i32(op.code()),
        KernelArg::input(&meta),
        KernelArg::i32(dims.len() as i32),
        KernelArg::i64(a.offset as i64),
        KernelArg::i64(b.offset as i64),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: ew_binary_bcast_<T>(const T* a, const T* b, T* out, int op, const long long* meta,
    // int rank, long long a_off, long long b_off, unsigned long long n) reads meta[0, 3·rank),
    // a and b at indices up to their checked last element, and writes out[0, n) (checked). meta
    // is freed in stream order after the launch (see tensor::copy_strided).
    unsafe { backend.launch(&format!("ew_binary_bcast_{}", T::NAME), cfg, &mut args) }
}

/// `out[i] = cmp(a[..], b[..])` as 0 or 1, broadcasting as [`binary_bcast`]; any dtype.
pub fn cmp<T: DeviceElem>(
    backend: &Backend,
    op: CmpOp,
    dims: &[usize],
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    out: &mut DeviceBuffer<u8>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::ew::cmp";
    let n: usize = dims.iter().product();
    check_out(OP, n, out.len())?;
    a.check(OP, "a", dims)?;
    b.check(OP, "b", dims)?;
    if !matches!(T::NAME, "f32" | "f16" | "bf16" | "f64" | "i64" | "u8" | "i8") {
        return Err(CudaError::Shape { op: OP, message: format!("no comparison kernel for {}", T::NAME) });
    }
    if n == 0 {
        return Ok(());
    }
    let meta = upload_meta(backend, dims, &[a.strides, b.strides])?;
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(a.buf),
        KernelArg::input(b.buf),
        KernelArg::output(out),
        KernelArg::i32(op.code()),
        KernelArg::input(&meta),
        KernelArg::i32(dims.len() as i32),
        KernelArg::i64(a.offset as i64),
        KernelArg::i64(b.offset as i64),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: ew_cmp_<T>(const T* a, const T* b, unsigned char* out, int op, const long long*
    // meta, int rank, long long a_off, long long b_off, unsigned long long n): reads as
    // binary_bcast, writes out[0, n) (checked); T is one of the dtypes with a kernel (checked).
    unsafe { backend.launch(&format!("ew_cmp_{}", T::NAME), cfg, &mut args) }
}

/// `out[i] = mask[..] != 0 ? a[..] : b[..]`, each operand through its own strides; any dtype.
pub fn where_cond<T: DeviceElem>(
    backend: &Backend,
    dims: &[usize],
    mask: Operand<'_, u8>,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::ew::where_cond";
    let n: usize = dims.iter().product();
    check_out(OP, n, out.len())?;
    mask.check(OP, "mask", dims)?;
    a.check(OP, "on_true", dims)?;
    b.check(OP, "on_false", dims)?;
    let suffix = match std::mem::size_of::<T>() {
        1 => "b1",
        2 => "b2",
        4 => "b4",
        8 => "b8",
        s => return Err(CudaError::Shape { op: OP, message: format!("no kernel for {s}-byte elements") }),
    };
    if n == 0 {
        return Ok(());
    }
    let meta = upload_meta(backend, dims, &[mask.strides, a.strides, b.strides])?;
    let cfg = launch_config(backend, n);
    let mut args = [
        KernelArg::input(mask.buf),
        KernelArg::input(a.buf),
        KernelArg::input(b.buf),
        KernelArg::output(out),
        KernelArg::input(&meta),
        KernelArg::i32(dims.len() as i32),
        KernelArg::i64(mask.offset as i64),
        KernelArg::i64(a.offset as i64),
        KernelArg::i64(b.offset as i64),
        KernelArg::u64(n as u64),
    ];
    // SAFETY: ew_where_bK(const unsigned char* mask, const U* a, const U* b, U* out, const long
    // long* meta, int rank, long long m_off, a_off, b_off, unsigned long long n) with U of K =
    // size_of::<T>() bytes: reads meta[0, 4·rank) and each operand up to its checked last
    // element, writes out[0, n) (checked).
    unsafe { backend.launch(&format!("ew_where_{suffix}"), cfg, &mut args) }
}

/// Whether every element of `x[0, n)` is finite (neither NaN nor infinite). Waits for the result.
pub fn all_finite<T: EwFloat>(backend: &Backend, n: usize, x: &DeviceBuffer<T>) -> Result<bool, CudaError> {
    check_len("cuda::ew::all_finite", n, &[("x", x.len())])?;
    if n == 0 {
        return Ok(true);
    }
    let mut flag = backend.upload(&[1u32])?;
    let cfg = launch_config(backend, n);
    let mut args = [KernelArg::input(x), KernelArg::output(&mut flag), KernelArg::u64(n as u64)];
    // SAFETY: ew_all_finite_<T>(const T* x, unsigned int* flag, unsigned long long n) reads
    // x[0, n) (x holds at least n, checked) and writes flag[0], which holds one element.
    unsafe { backend.launch(&format!("ew_all_finite_{}", T::NAME), cfg, &mut args)? };
    Ok(backend.download(&flag)?.first() == Some(&1))
}
