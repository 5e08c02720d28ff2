//! The int8 GEMM of dynamic quantization on a [`Backend`], dequantization fused
//! (`kernels/cuda/qgemm.cu`, `__dp4a`): `y[i][j] = (Σ_p (a[i][p] − zero_point) · b[j][p]) ·
//! mult[j] + bias[j]` for `uint8` activations `a` `[m, k]`, `int8` weights `b` `[n, k]` (as
//! stored, `[out, in]`) and `f32` `y` `[m, n]`, all row-major. The same numbers as the CPU
//! kernel [`crate::cpu::qgemm::qgemm_u8i8_dequant`], to the bit: the sum is exact in `int32`
//! and the scaling rounds twice in the same order.

use super::launch::{Backend, DeviceBuffer, KernelArg, LaunchConfig};
use super::CudaError;

/// The kernel's output tile (see `qgemm.cu`).
const TILE: usize = 64;
/// The largest `k` whose sums fit `int32` (`k · 255 · 128 < 2³¹`).
pub const MAX_K: usize = 65_793;

/// The shape of one [`qgemm_u8i8_dequant`]: row strides in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QGemmConfig {
    /// Rows of `a` and `y`.
    pub m: usize,
    /// Rows of `b` (output features), columns of `y`.
    pub n: usize,
    /// The reduced dimension (input features).
    pub k: usize,
    /// Row stride of `a` (at least `k`).
    pub lda: usize,
    /// Row stride of `b` (at least `k`).
    pub ldb: usize,
    /// Row stride of `y` (at least `n`).
    pub ldy: usize,
}

impl QGemmConfig {
    /// Dense operands: strides `k`, `k`, `n`.
    pub fn dense(m: usize, n: usize, k: usize) -> QGemmConfig {
        QGemmConfig { m, n, k, lda: k.max(1), ldb: k.max(1), ldy: n.max(1) }
    }
}

/// `y = dequantize(a · bᵀ)` on `backend`; see the module docs. `mult` and `bias` have `n`
/// values; `zero_point` is the activations' (`0..=255`).
///
/// # Errors
/// For strides shorter than the rows, buffers too short for the shape, `k` beyond [`MAX_K`],
/// sizes beyond 32-bit kernel arguments, a zero point outside `0..=255`, or a failed launch.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_u8i8_dequant(
    backend: &Backend,
    cfg: &QGemmConfig,
    a: &DeviceBuffer<u8>,
    b: &DeviceBuffer<i8>,
    zero_point: i32,
    mult: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f32>>,
    y: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::qgemm_u8i8_dequant";
    let err = |message: String| Err(CudaError::Shape { op: OP, message });
    let QGemmConfig { m, n, k, lda, ldb, ldy } = *cfg;
    if [m, n, k, lda, ldb, ldy].iter().any(|&v| v > i32::MAX as usize) {
        return err(format!("sizes beyond 32-bit kernel arguments: {cfg:?}"));
    }
    if k > MAX_K {
        return err(format!("k = {k} can overflow the int32 sums (at most {MAX_K})"));
    }
    if !(0..=255).contains(&zero_point) {
        return err(format!("zero point {zero_point} is not a uint8 level"));
    }
    if lda < k || ldb < k || ldy < n {
        return err(format!("strides lda {lda}, ldb {ldb}, ldy {ldy} are shorter than the rows ({cfg:?})"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let need = |rows: usize, ld: usize, cols: usize| (rows - 1) * ld + cols;
    for (name, have, want) in [
        ("a", a.len(), if k == 0 { 0 } else { need(m, lda, k) }),
        ("b", b.len(), if k == 0 { 0 } else { need(n, ldb, k) }),
        ("y", y.len(), need(m, ldy, n)),
        ("mult", mult.len(), n),
        ("bias", bias.map_or(n, |b| b.len()), n),
    ] {
        if have < want {
            return err(format!("{name} holds {have} elements, the shape needs {want} ({cfg:?})"));
        }
    }
    let grid_y = m.div_ceil(TILE);
    if grid_y > 65_535 {
        return err(format!("m = {m} needs {grid_y} row tiles, more than the 65535 a grid holds"));
    }
    let launch =
        LaunchConfig { grid: (n.div_ceil(TILE) as u32, grid_y as u32, 1), block: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = [
        KernelArg::input(a),
        KernelArg::input(b),
        KernelArg::output(y),
        KernelArg::input(mult),
        KernelArg::input(bias.unwrap_or(mult)),
        KernelArg::i32(bias.is_some() as i32),
        KernelArg::i32(m as i32),
        KernelArg::i32(n as i32),
        KernelArg::i32(k as i32),
        KernelArg::i64(lda as i64),
        KernelArg::i64(ldb as i64),
        KernelArg::i64(ldy as i64),
        KernelArg::i32(zero_point),
    ];
    // SAFETY: qgemm_u8i8_dequant(const unsigned char* a, const signed char* b, float* y,
    // const float* mult, const float* bias, int has_bias, int m, int n, int k, long long lda,
    // long long ldb, long long ldy, int zero_point), matching the list above. The kernel reads a,
    // b only at rows < m (n) and columns < k, y at rows < m and columns < n, mult and bias at
    // columns < n (bias only when has_bias): all inside the lengths checked above; each y
    // element is written by one thread.
    unsafe { backend.launch("qgemm_u8i8_dequant", launch, &mut args) }
}

/// Quantizes finite `f32` activations to `uint8` levels `0..=qmax` (the input of
/// [`qgemm_u8i8_dequant`]): `q = clamp(round_half_even(x · inv_scale) + zero_point, 0, qmax)`,
/// the CPU kernel [`crate::cpu::qgemm::quantize_u8_f32`]'s arithmetic, level for level.
///
/// # Errors
/// If `q` is shorter than `x`, `qmax` is outside `0..=255`, or the launch fails.
pub fn quantize_u8_f32(
    backend: &Backend,
    x: &DeviceBuffer<f32>,
    inv_scale: f32,
    zero_point: i32,
    qmax: u8,
    q: &mut DeviceBuffer<u8>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::quantize_u8_f32";
    if q.len() < x.len() {
        return Err(CudaError::Shape { op: OP, message: format!("{} levels for {} values", q.len(), x.len()) });
    }
    if x.is_empty() {
        return Ok(());
    }
    let blocks = x.len().div_ceil(256).min(4096) as u32;
    let launch = LaunchConfig { grid: (blocks, 1, 1), block: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = [
        KernelArg::input(x),
        KernelArg::output(q),
        KernelArg::i64(x.len() as i64),
        KernelArg::f32(inv_scale),
        KernelArg::f32(zero_point as f32),
        KernelArg::f32(f32::from(qmax)),
    ];
    // SAFETY: quantize_u8_f32(const float* x, unsigned char* q, long long n, float inv_scale,
    // float zero_point, float qmax), matching the list; the kernel touches x and q at indices
    // < n = x.len() <= q.len(), one thread per element.
    unsafe { backend.launch("quantize_u8_f32", launch, &mut args) }
}
