//! Launch wrappers for `kernels/cuda/rnn.cu`: the fused gate kernels of one LSTM or GRU time
//! step, forward and backward, in `f32`. CPU reference: [`crate::cpu::rnn`]
//! ([`lstm_step_forward`](crate::cpu::rnn::lstm_step_forward) and the others), whose argument
//! meanings these wrappers keep; the GEMMs of a step (cuBLAS on the GPU) are the caller's.
//!
//! Differences in form, not in meaning, from the CPU signatures:
//! * the padding mask `active[b]` is computed on the device from `lengths[b]` (uploaded once
//!   per sequence batch) and the step `t`, as `t < lengths[b]`, so no per-step upload;
//! * a device buffer cannot be sliced, so each operand is a whole time-major buffer and the
//!   *row* of it the step uses: rows of `[B, 4H]` (LSTM gates, GRU `saved`), `[B, 3H]`
//!   (GRU `gi`/`gh`) or `[B, H]` (states, `tanh(c)`). The state before and after the step are
//!   two rows of one buffer ([`StateRows`]), the `[T + 1, B, H]` layout of the recurrent
//!   drivers (`nn/src/rnn/driver.rs`).
//!
//! Every launch is one thread per `(b, j)` over `B·H` (see `rnn.cu`); nothing synchronises with
//! the host.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, KernelArg, LaunchConfig};
use super::CudaError;

/// Which rows of the batch have a real frame at step `t`: row `b` does when `t < lengths[b]`.
#[derive(Clone, Copy, Debug)]
pub struct StepMask<'a> {
    /// Sequence length per batch row, `[B]` (the batch size is its length).
    pub lengths: &'a DeviceBuffer<i64>,
    /// The time index of the step.
    pub t: usize,
}

/// The rows of a `[rows, B, H]` state buffer holding the state before (`prev`) and after
/// (`next`) a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRows {
    pub prev: usize,
    pub next: usize,
}

/// A step's output gradient `dy`: row `b` at `buf[offset + b * stride..][..H]` (the layer
/// output `[T, B, D·H]` interleaves the directions: `offset = t·B·D·H + dir·H`,
/// `stride = D·H`). The CPU kernels' `dy: Option<(&[T], usize)>`.
#[derive(Clone, Copy, Debug)]
pub struct RowsAt<'a> {
    pub buf: &'a DeviceBuffer<f32>,
    pub offset: usize,
    pub stride: usize,
}

fn shape_err(op: &'static str, message: String) -> CudaError {
    CudaError::Shape { op, message }
}

/// Checks that row `row` of width `width` lies inside `buf`; returns its element offset.
fn row_offset(op: &'static str, what: &str, len: usize, row: usize, width: usize) -> Result<usize, CudaError> {
    let end = (row + 1).checked_mul(width).filter(|&e| e <= len);
    match end {
        Some(e) => Ok(e - width),
        None => Err(shape_err(op, format!("{what} row {row} of {width} elements is outside its buffer of {len}"))),
    }
}

fn check_dy(op: &'static str, dy: &Option<RowsAt<'_>>, batch: usize, hidden: usize) -> Result<(), CudaError> {
    if let Some(d) = dy {
        if batch > 0 && hidden > 0 {
            let need = d.offset + (batch - 1) * d.stride + hidden;
            if need > d.buf.len() || d.stride < hidden {
                let message = format!(
                    "dy (offset {}, row stride {}) needs {need} elements for [B={batch}, H={hidden}] with a stride \
                     of at least H; its buffer has {}",
                    d.offset,
                    d.stride,
                    d.buf.len()
                );
                return Err(shape_err(op, message));
            }
        }
    }
    Ok(())
}

/// One LSTM step (the CPU's [`lstm_step_forward`](crate::cpu::rnn::lstm_step_forward)):
/// `gates` row `gates_row` (`[B, 4H]`, i f g o) holds the pre-activations `x W_ihᵀ + b_ih +
/// h_{t-1} W_hhᵀ + b_hh` and is overwritten with the activations; `c`/`h` rows `state.prev` are
/// read and rows `state.next` written; `tanh_c` row `tanh_c_row` receives `tanh(c_t)`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_forward_f32(
    backend: &Backend,
    hidden: usize,
    mask: StepMask<'_>,
    gates: &mut DeviceBuffer<f32>,
    gates_row: usize,
    c: &mut DeviceBuffer<f32>,
    h: &mut DeviceBuffer<f32>,
    state: StateRows,
    tanh_c: &mut DeviceBuffer<f32>,
    tanh_c_row: usize,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::lstm_step_forward_f32";
    let batch = mask.lengths.len();
    let bh = batch * hidden;
    let g_off = row_offset(OP, "gates", gates.len(), gates_row, 4 * bh)?;
    let cp = row_offset(OP, "c (previous state)", c.len(), state.prev, bh)?;
    let cn = row_offset(OP, "c (next state)", c.len(), state.next, bh)?;
    let hp = row_offset(OP, "h (previous state)", h.len(), state.prev, bh)?;
    let hn = row_offset(OP, "h (next state)", h.len(), state.next, bh)?;
    let tc = row_offset(OP, "tanh_c", tanh_c.len(), tanh_c_row, bh)?;
    if bh == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::input(mask.lengths),
        KernelArg::i64(mask.t as i64),
        KernelArg::output(gates),
        KernelArg::u64(g_off as u64),
        KernelArg::output(c),
        KernelArg::u64(cp as u64),
        KernelArg::u64(cn as u64),
        KernelArg::output(h),
        KernelArg::u64(hp as u64),
        KernelArg::u64(hn as u64),
        KernelArg::output(tanh_c),
        KernelArg::u64(tc as u64),
    ];
    // SAFETY: thread k < B·H touches lengths[b] (b < B = lengths.len()), gates[g_off + b·4H + q·H
    // + j] (q < 4) and the rows of c, h, tanh_c at their offsets: all checked to fit above.
    unsafe { backend.launch("lstm_step_forward_f32", launch_config(backend, bh), &mut args) }
}

/// The gradient of one LSTM step (the CPU's
/// [`lstm_step_backward`](crate::cpu::rnn::lstm_step_backward)): reads the activations `gates`
/// row `gates_row`, `c_{t-1}` (row `c_prev_row` of `c`) and `tanh_c` row `tanh_c_row` saved by
/// the forward step, and `dy` when given; `dh`/`dc` (`[B, H]`) hold the gradients of `h_t`/`c_t`
/// on entry, and on return 0 (active rows; the caller adds `dgates · W_hh`) and that of
/// `c_{t-1}`; `dgates` row `dgates_row` receives the pre-activation gradients.
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_backward_f32(
    backend: &Backend,
    hidden: usize,
    mask: StepMask<'_>,
    gates: &DeviceBuffer<f32>,
    gates_row: usize,
    c: &DeviceBuffer<f32>,
    c_prev_row: usize,
    tanh_c: &DeviceBuffer<f32>,
    tanh_c_row: usize,
    dy: Option<RowsAt<'_>>,
    dh: &mut DeviceBuffer<f32>,
    dc: &mut DeviceBuffer<f32>,
    dgates: &mut DeviceBuffer<f32>,
    dgates_row: usize,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::lstm_step_backward_f32";
    let batch = mask.lengths.len();
    let bh = batch * hidden;
    let g_off = row_offset(OP, "gates", gates.len(), gates_row, 4 * bh)?;
    let cp = row_offset(OP, "c (previous state)", c.len(), c_prev_row, bh)?;
    let tc = row_offset(OP, "tanh_c", tanh_c.len(), tanh_c_row, bh)?;
    row_offset(OP, "dh", dh.len(), 0, bh)?;
    row_offset(OP, "dc", dc.len(), 0, bh)?;
    let dg_off = row_offset(OP, "dgates", dgates.len(), dgates_row, 4 * bh)?;
    check_dy(OP, &dy, batch, hidden)?;
    if bh == 0 {
        return Ok(());
    }
    let (dy_buf, dy_off, dy_stride) = match dy {
        Some(d) => (d.buf, d.offset, d.stride),
        None => (gates, 0, 0), // not read (has_dy = 0); any buffer of this backend
    };
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::input(mask.lengths),
        KernelArg::i64(mask.t as i64),
        KernelArg::input(gates),
        KernelArg::u64(g_off as u64),
        KernelArg::input(c),
        KernelArg::u64(cp as u64),
        KernelArg::input(tanh_c),
        KernelArg::u64(tc as u64),
        KernelArg::input(dy_buf),
        KernelArg::u64(dy_off as u64),
        KernelArg::u64(dy_stride as u64),
        KernelArg::u32(dy.is_some() as u32),
        KernelArg::output(dh),
        KernelArg::output(dc),
        KernelArg::output(dgates),
        KernelArg::u64(dg_off as u64),
    ];
    // SAFETY: as in the forward; dy is read at dy_off + b·stride + j < its length (checked).
    unsafe { backend.launch("lstm_step_backward_f32", launch_config(backend, bh), &mut args) }
}

/// One GRU step (the CPU's [`gru_step_forward`](crate::cpu::rnn::gru_step_forward)): `gi` row
/// `gi_row` and `gh` row `gh_row` (`[B, 3H]`, r z n) are the two projections, `saved` row
/// `saved_row` (`[B, 4H]`) receives `r, z, n, W_hn h + b_hn`, `h` row `state.prev` is read and
/// row `state.next` written.
#[allow(clippy::too_many_arguments)]
pub fn gru_step_forward_f32(
    backend: &Backend,
    hidden: usize,
    mask: StepMask<'_>,
    gi: &DeviceBuffer<f32>,
    gi_row: usize,
    gh: &DeviceBuffer<f32>,
    gh_row: usize,
    saved: &mut DeviceBuffer<f32>,
    saved_row: usize,
    h: &mut DeviceBuffer<f32>,
    state: StateRows,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::gru_step_forward_f32";
    let batch = mask.lengths.len();
    let bh = batch * hidden;
    let gi_off = row_offset(OP, "gi", gi.len(), gi_row, 3 * bh)?;
    let gh_off = row_offset(OP, "gh", gh.len(), gh_row, 3 * bh)?;
    let s_off = row_offset(OP, "saved", saved.len(), saved_row, 4 * bh)?;
    let hp = row_offset(OP, "h (previous state)", h.len(), state.prev, bh)?;
    let hn = row_offset(OP, "h (next state)", h.len(), state.next, bh)?;
    if bh == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::input(mask.lengths),
        KernelArg::i64(mask.t as i64),
        KernelArg::input(gi),
        KernelArg::u64(gi_off as u64),
        KernelArg::input(gh),
        KernelArg::u64(gh_off as u64),
        KernelArg::output(saved),
        KernelArg::u64(s_off as u64),
        KernelArg::output(h),
        KernelArg::u64(hp as u64),
        KernelArg::u64(hn as u64),
    ];
    // SAFETY: thread k < B·H touches lengths[b], gi/gh[off + b·3H + q·H + j] (q < 3),
    // saved[off + b·4H + q·H + j] (q < 4) and two rows of h: all checked to fit above.
    unsafe { backend.launch("gru_step_forward_f32", launch_config(backend, bh), &mut args) }
}

/// The gradient of one GRU step (the CPU's
/// [`gru_step_backward`](crate::cpu::rnn::gru_step_backward)): reads `saved` row `saved_row` and
/// `h_{t-1}` (row `h_prev_row` of `h`), `dy` when given; `dh` (`[B, H]`) holds the gradient of
/// `h_t` on entry and, for active rows, `dh_t · z` on return; `dgi`/`dgh` rows `dg_row`
/// (`[B, 3H]`) receive the gradients of the two projections.
#[allow(clippy::too_many_arguments)]
pub fn gru_step_backward_f32(
    backend: &Backend,
    hidden: usize,
    mask: StepMask<'_>,
    saved: &DeviceBuffer<f32>,
    saved_row: usize,
    h: &DeviceBuffer<f32>,
    h_prev_row: usize,
    dy: Option<RowsAt<'_>>,
    dh: &mut DeviceBuffer<f32>,
    dgi: &mut DeviceBuffer<f32>,
    dgh: &mut DeviceBuffer<f32>,
    dg_row: usize,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::gru_step_backward_f32";
    let batch = mask.lengths.len();
    let bh = batch * hidden;
    let s_off = row_offset(OP, "saved", saved.len(), saved_row, 4 * bh)?;
    let hp = row_offset(OP, "h (previous state)", h.len(), h_prev_row, bh)?;
    row_offset(OP, "dh", dh.len(), 0, bh)?;
    let gi_off = row_offset(OP, "dgi", dgi.len(), dg_row, 3 * bh)?;
    let gh_off = row_offset(OP, "dgh", dgh.len(), dg_row, 3 * bh)?;
    check_dy(OP, &dy, batch, hidden)?;
    if bh == 0 {
        return Ok(());
    }
    let (dy_buf, dy_off, dy_stride) = match dy {
        Some(d) => (d.buf, d.offset, d.stride),
        None => (saved, 0, 0), // not read (has_dy = 0)
    };
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::input(mask.lengths),
        KernelArg::i64(mask.t as i64),
        KernelArg::input(saved),
        KernelArg::u64(s_off as u64),
        KernelArg::input(h),
        KernelArg::u64(hp as u64),
        KernelArg::input(dy_buf),
        KernelArg::u64(dy_off as u64),
        KernelArg::u64(dy_stride as u64),
        KernelArg::u32(dy.is_some() as u32),
        KernelArg::output(dh),
        KernelArg::output(dgi),
        KernelArg::u64(gi_off as u64),
        KernelArg::output(dgh),
        KernelArg::u64(gh_off as u64),
    ];
    // SAFETY: as in the forward; dy is read at dy_off + b·stride + j < its length (checked).
    unsafe { backend.launch("gru_step_backward_f32", launch_config(backend, bh), &mut args) }
}

/// Shared memory the persistent LSTM kernel needs: `4H(H + 1) + 6BH` floats.
pub fn lstm_persistent_shared_bytes(batch: usize, hidden: usize) -> usize {
    (4 * hidden * (hidden + 1) + 6 * batch * hidden) * std::mem::size_of::<f32>()
}

/// The most shared memory [`lstm_forward_persistent_f32`] asks for: the 48 KiB every GPU gives
/// a block without an opt-in.
pub const LSTM_PERSISTENT_MAX_SHARED_BYTES: usize = 48 * 1024;

/// A whole LSTM layer forward, every direction in one launch (one block per direction looping
/// over time with `W_hh`, `h`, `c` in shared memory; see `rnn.cu`), for small `B` and `H`
/// ([`lstm_persistent_shared_bytes`] at most [`LSTM_PERSISTENT_MAX_SHARED_BYTES`], else an
/// error: use the per-step kernels). Its outputs are those of `T` steps of the recurrent GEMM
/// plus [`lstm_step_forward_f32`], in the recurrent drivers' layout, per direction `d`
/// (`directions` = 1, or 2 with `d = 1` the reverse direction):
///
/// * `gates` `[D, T, B, 4H]`: the input projection `x W_ihᵀ + b_ih + b_hh` on entry, the
///   activations on return;
/// * `w_hh` `[D, 4H, H]`, `h0`/`c0` `[D, B, H]`;
/// * `hs`/`cs` `[D, T + 1, B, H]`: the state before time `t` in row `t` (forward) or `t + 1`
///   (reverse), the initial state included;
/// * `tanh_c` `[D, T, B, H]`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_forward_persistent_f32(
    backend: &Backend,
    steps: usize,
    hidden: usize,
    directions: usize,
    lengths: &DeviceBuffer<i64>,
    gates: &mut DeviceBuffer<f32>,
    w_hh: &DeviceBuffer<f32>,
    h0: &DeviceBuffer<f32>,
    c0: &DeviceBuffer<f32>,
    hs: &mut DeviceBuffer<f32>,
    cs: &mut DeviceBuffer<f32>,
    tanh_c: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::lstm_forward_persistent_f32";
    let batch = lengths.len();
    let bh = batch * hidden;
    if !(1..=2).contains(&directions) {
        return Err(shape_err(OP, format!("directions must be 1 or 2, not {directions}")));
    }
    let d = directions;
    for (what, len, want) in [
        ("gates", gates.len(), d * steps * 4 * bh),
        ("w_hh", w_hh.len(), d * 4 * hidden * hidden),
        ("h0", h0.len(), d * bh),
        ("c0", c0.len(), d * bh),
        ("hs", hs.len(), d * (steps + 1) * bh),
        ("cs", cs.len(), d * (steps + 1) * bh),
        ("tanh_c", tanh_c.len(), d * steps * bh),
    ] {
        if len != want {
            let message =
                format!("{what} has {len} elements, expected {want} for [D={d}, T={steps}, B={batch}, H={hidden}]");
            return Err(shape_err(OP, message));
        }
    }
    let smem = lstm_persistent_shared_bytes(batch, hidden);
    if smem > LSTM_PERSISTENT_MAX_SHARED_BYTES {
        let message = format!(
            "B={batch}, H={hidden} needs {smem} bytes of shared memory, more than {LSTM_PERSISTENT_MAX_SHARED_BYTES}: \
             use the per-step kernels"
        );
        return Err(shape_err(OP, message));
    }
    if bh == 0 {
        return Ok(());
    }
    let block = ((4 * bh).div_ceil(32) * 32).clamp(32, 256) as u32;
    let cfg = LaunchConfig { grid: (d as u32, 1, 1), block: (block, 1, 1), shared_mem_bytes: smem as u32 };
    let mut args = [
        KernelArg::u64(steps as u64),
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::input(lengths),
        KernelArg::output(gates),
        KernelArg::input(w_hh),
        KernelArg::input(h0),
        KernelArg::input(c0),
        KernelArg::output(hs),
        KernelArg::output(cs),
        KernelArg::output(tanh_c),
    ];
    // SAFETY: block d < D touches direction d's slice of every buffer (lengths checked above),
    // lengths[b] for b < B, and smem bytes of dynamic shared memory (asked for in cfg).
    unsafe { backend.launch("lstm_forward_persistent_f32", cfg, &mut args) }
}
