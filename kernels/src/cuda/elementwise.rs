//! Launch wrappers for `kernels/cuda/elementwise.cu`: contiguous binary add/mul and unary exp
//! for `f32`, `f16` and `bf16` (computed in `f32`). CPU reference: [`crate::cpu::binary`],
//! [`crate::cpu::unary`].

use super::launch::{Backend, DeviceBuffer, FloatElem, KernelArg, LaunchConfig};
use super::CudaError;

/// Threads per block of the element-wise kernels.
pub const BLOCK: u32 = 256;

/// Blocks per SM the grid is capped at on a GPU: 8 blocks of 256 threads fill an SM of sm_80 or
/// sm_90 (2048 resident threads), so every SM has the most loads in flight; beyond that the
/// kernels' grid-stride loops take over. (Measured on an H100: with 4 the dense f32 add reached
/// 75% of the device-to-device copy's bandwidth.)
pub const BLOCKS_PER_SM: u32 = 8;

/// Blocks per (emulated) SM on the emulator: a small grid (2 SMs x 4 blocks x 256 threads), so
/// that the tests' sizes make every grid-stride loop iterate.
pub const EMU_BLOCKS_PER_SM: u32 = 4;

/// The launch shape for `n` elements: `min(ceil(n / 256), BLOCKS_PER_SM * SMs)` blocks of 256
/// threads (`EMU_BLOCKS_PER_SM` on the emulator).
pub fn launch_config(backend: &Backend, n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).max(1);
    let per_sm = if backend.is_emulator() { EMU_BLOCKS_PER_SM } else { BLOCKS_PER_SM };
    let cap = (backend.multiprocessor_count() * per_sm) as usize;
    LaunchConfig::linear(blocks.min(cap) as u32, BLOCK)
}

/// The binary operations of `elementwise.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// Addition, `a + b`.
    Add,
    /// Multiplication, `a * b`.
    Mul,
}

impl BinaryOp {
    /// The op's name in kernel names (`binary_<op>_<dtype>`).
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Mul => "mul",
        }
    }

    /// The op in `f32`, as the kernels compute it.
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Mul => a * b,
        }
    }
}

/// `out[i] = a[i] op b[i]` over contiguous buffers of equal length.
pub fn binary<T: FloatElem>(
    backend: &Backend,
    op: BinaryOp,
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<T>,
) -> Result<(), CudaError> {
    let n = a.len();
    if b.len() != n || out.len() != n {
        let message = format!("lengths a={}, b={}, out={} differ", n, b.len(), out.len());
        return Err(CudaError::Shape { op: "cuda::elementwise::binary", message });
    }
    if n == 0 {
        return Ok(());
    }
    let kernel = format!("binary_{}_{}", op.name(), T::NAME);
    let cfg = launch_config(backend, n);
    let mut args = [KernelArg::input(a), KernelArg::input(b), KernelArg::output(out), KernelArg::u64(n as u64)];
    // SAFETY: binary_<op>_<dtype>(const T*, const T*, T*, unsigned long long n) touches [0, n) of
    // each buffer, and every buffer holds n elements.
    unsafe { backend.launch(&kernel, cfg, &mut args) }
}

/// `out[i] = exp(x[i])` over contiguous buffers of equal length.
pub fn exp<T: FloatElem>(backend: &Backend, x: &DeviceBuffer<T>, out: &mut DeviceBuffer<T>) -> Result<(), CudaError> {
    let n = x.len();
    if out.len() != n {
        let message = format!("lengths x={}, out={} differ", n, out.len());
        return Err(CudaError::Shape { op: "cuda::elementwise::exp", message });
    }
    if n == 0 {
        return Ok(());
    }
    let kernel = format!("unary_exp_{}", T::NAME);
    let cfg = launch_config(backend, n);
    let mut args = [KernelArg::input(x), KernelArg::output(out), KernelArg::u64(n as u64)];
    // SAFETY: unary_exp_<dtype>(const T*, T*, unsigned long long n) touches [0, n) of both
    // buffers, which hold n elements.
    unsafe { backend.launch(&kernel, cfg, &mut args) }
}
