//! Launch wrappers for `kernels/cuda/rnn.cu`: the fused gate kernels of one LSTM or GRU time
//! step, forward and backward, in `f32`, for every direction of a layer in one launch. CPU
//! reference: [`crate::cpu::rnn`] ([`lstm_step_forward`](crate::cpu::rnn::lstm_step_forward)
//! and the others), whose argument meanings these wrappers keep; the GEMMs of a step (cuBLAS on
//! the GPU) are the caller's.
//!
//! Differences in form, not in meaning, from the CPU signatures:
//! * the padding mask `active[b]` is computed on the device from `lengths[b]` (uploaded once
//!   per sequence batch) and the direction's time index `t`, as `t < lengths[b]`, so no
//!   per-step upload;
//! * a device buffer cannot be sliced, so each operand is a whole buffer and each direction
//!   names the *rows* of it its step uses: rows of `[B, 4H]` (LSTM gates, GRU `saved`),
//!   `[B, 3H]` (GRU `gi`/`gh`) or `[B, H]` (states, `tanh(c)`). The state before and after the
//!   step are two rows of one buffer ([`StateRows`]), the `[T + 1, B, H]` layout of the
//!   recurrent drivers (`nn/src/rnn/driver.rs`); the running gradients `dh`/`dc` are
//!   `[D, B, H]`, row `d` for direction `d`;
//! * one launch runs one step of every direction (1 or 2, the slice's length): a
//!   bidirectional layer's forward and reverse steps go together, each with its own time index
//!   and rows (the layer driver, [`super::rnn_seq`], stacks the directions' buffers).
//!
//! Every launch is one thread per `(d, b, j)` over `D·B·H` (see `rnn.cu`); nothing
//! synchronises with the host.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, KernelArg, LaunchConfig};
use super::CudaError;

/// The rows of a `[rows, B, H]` state buffer holding the state before (`prev`) and after
/// (`next`) a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRows {
    /// Row holding the state before the step (read).
    pub prev: usize,
    /// Row receiving the state after the step (written).
    pub next: usize,
}

/// One direction's part of an LSTM forward step: its time index `t` (row `b` is real when
/// `t < lengths[b]`) and its rows of the `gates`, state and `tanh_c` buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmRows {
    /// Time index of this direction's step (batch row `b` is real when `t < lengths[b]`).
    pub t: usize,
    /// Row of the `[B, 4H]` gates buffer (i f g o): pre-activations in, activations out.
    pub gates: usize,
    /// Rows of the `[rows, B, H]` `c` and `h` buffers.
    pub state: StateRows,
    /// Row of the `[B, H]` buffer receiving `tanh(c_t)`.
    pub tanh_c: usize,
}

/// One direction's part of an LSTM backward step: its time index, the rows of the saved
/// activations (`gates`), `c_{t-1}` (`c_prev`) and `tanh(c_t)`, the row of `dgates` it writes,
/// and the element offset of its batch row 0 in the output gradient (read when one is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmBackRows {
    /// Time index of this direction's step (batch row `b` is real when `t < lengths[b]`).
    pub t: usize,
    /// Row of the `[B, 4H]` activations saved by the forward step.
    pub gates: usize,
    /// Row of the `c` buffer holding `c_{t-1}`.
    pub c_prev: usize,
    /// Row of the `[B, H]` buffer holding `tanh(c_t)`.
    pub tanh_c: usize,
    /// Row of the `[B, 4H]` buffer receiving the pre-activation gradients.
    pub dgates: usize,
    /// Element offset of batch row 0 in the output gradient ([`OutputGrad`]).
    pub dy: usize,
}

/// One direction's part of a GRU forward step: its time index and rows of `gi`, `gh`,
/// `saved` and the state buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GruRows {
    /// Time index of this direction's step (batch row `b` is real when `t < lengths[b]`).
    pub t: usize,
    /// Row of the `[B, 3H]` input projection `x W_ihᵀ + b_ih` (r z n).
    pub gi: usize,
    /// Row of the `[B, 3H]` hidden projection `h_{t-1} W_hhᵀ + b_hh` (r z n).
    pub gh: usize,
    /// Row of the `[B, 4H]` buffer receiving `r, z, n, W_hn h + b_hn`.
    pub saved: usize,
    /// Rows of the `[rows, B, H]` `h` buffer.
    pub state: StateRows,
}

/// One direction's part of a GRU backward step: its time index, the rows of `saved` and
/// `h_{t-1}` (`h_prev`), the row of `dgi`/`dgh` it writes (`dg`), and the element offset of its
/// batch row 0 in the output gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GruBackRows {
    /// Time index of this direction's step (batch row `b` is real when `t < lengths[b]`).
    pub t: usize,
    /// Row of the `[B, 4H]` values saved by the forward step.
    pub saved: usize,
    /// Row of the `h` buffer holding `h_{t-1}`.
    pub h_prev: usize,
    /// Row of the `[B, 3H]` `dgi` and `dgh` buffers it writes.
    pub dg: usize,
    /// Element offset of batch row 0 in the output gradient ([`OutputGrad`]).
    pub dy: usize,
}

/// A step's output gradient: direction `d`'s row `b` at `buf[dy_d + b * stride..][..H]` (the
/// layer output `[T, B, D·H]` interleaves the directions: `dy_d = t_d·B·D·H + d·H`,
/// `stride = D·H`). The CPU kernels' `dy: Option<(&[T], usize)>`.
#[derive(Clone, Copy, Debug)]
pub struct OutputGrad<'a> {
    /// The layer output's gradient, `[T, B, D·H]`.
    pub buf: &'a DeviceBuffer<f32>,
    /// Elements between consecutive batch rows (`D·H`).
    pub stride: usize,
}

fn shape_err(op: &'static str, message: String) -> CudaError {
    CudaError::Shape { op, message }
}

/// Checks that row `row` of width `width` lies inside `buf`.
fn check_row(op: &'static str, what: &str, len: usize, row: usize, width: usize) -> Result<(), CudaError> {
    match (row + 1).checked_mul(width).filter(|&e| e <= len) {
        Some(_) => Ok(()),
        None => Err(shape_err(op, format!("{what} row {row} of {width} elements is outside its buffer of {len}"))),
    }
}

/// The number of directions of a launch (1 or 2), checked.
fn check_dirs<R>(op: &'static str, dirs: &[R]) -> Result<usize, CudaError> {
    match dirs.len() {
        1 | 2 => Ok(dirs.len()),
        n => Err(shape_err(op, format!("a step runs 1 or 2 directions, not {n}"))),
    }
}

/// Checks the `[D, B, H]` running gradient buffers.
fn check_running(op: &'static str, what: &str, len: usize, dirs: usize, bh: usize) -> Result<(), CudaError> {
    if len != dirs * bh {
        return Err(shape_err(op, format!("{what} has {len} elements, expected [D={dirs}, B·H={bh}]")));
    }
    Ok(())
}

fn check_dy(
    op: &'static str,
    dy: &Option<OutputGrad<'_>>,
    offset: usize,
    batch: usize,
    hidden: usize,
) -> Result<(), CudaError> {
    if let Some(d) = dy {
        if batch > 0 && hidden > 0 {
            let need = offset + (batch - 1) * d.stride + hidden;
            if need > d.buf.len() || d.stride < hidden {
                let message = format!(
                    "dy (offset {offset}, row stride {}) needs {need} elements for [B={batch}, H={hidden}] with a \
                     stride of at least H; its buffer has {}",
                    d.stride,
                    d.buf.len()
                );
                return Err(shape_err(op, message));
            }
        }
    }
    Ok(())
}

/// The two scalar arguments (directions 0 and 1) of a per-direction row; the second repeats the
/// first for a one-direction launch (the kernel does not read it).
fn pair<'a, R>(dirs: &[R], f: impl Fn(&R) -> usize) -> [KernelArg<'a>; 2] {
    let v0 = f(&dirs[0]);
    let v1 = dirs.get(1).map(&f).unwrap_or(v0);
    [KernelArg::i64(v0 as i64), KernelArg::i64(v1 as i64)]
}

/// One LSTM step of every direction in `dirs` (the CPU's
/// [`lstm_step_forward`](crate::cpu::rnn::lstm_step_forward) per direction): direction `d`'s
/// `gates` row (`[B, 4H]`, i f g o) holds the pre-activations `x W_ihᵀ + b_ih + h_{t-1}
/// W_hhᵀ + b_hh` and is overwritten with the activations; `c`/`h` rows `state.prev` are read
/// and rows `state.next` written; `tanh_c` row `tanh_c` receives `tanh(c_t)`. The batch size is
/// `lengths.len()`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_forward_f32(
    backend: &Backend,
    hidden: usize,
    lengths: &DeviceBuffer<i64>,
    dirs: &[LstmRows],
    gates: &mut DeviceBuffer<f32>,
    c: &mut DeviceBuffer<f32>,
    h: &mut DeviceBuffer<f32>,
    tanh_c: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::lstm_step_forward_f32";
    let nd = check_dirs(OP, dirs)?;
    let batch = lengths.len();
    let bh = batch * hidden;
    for r in dirs {
        check_row(OP, "gates", gates.len(), r.gates, 4 * bh)?;
        for (what, buf) in [("c", c.len()), ("h", h.len())] {
            check_row(OP, &format!("{what} (previous state)"), buf, r.state.prev, bh)?;
            check_row(OP, &format!("{what} (next state)"), buf, r.state.next, bh)?;
        }
        check_row(OP, "tanh_c", tanh_c.len(), r.tanh_c, bh)?;
    }
    if bh == 0 {
        return Ok(());
    }
    let [t0, t1] = pair(dirs, |r| r.t);
    let [g0, g1] = pair(dirs, |r| r.gates);
    let [p0, p1] = pair(dirs, |r| r.state.prev);
    let [q0, q1] = pair(dirs, |r| r.state.next);
    let [tc0, tc1] = pair(dirs, |r| r.tanh_c);
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::u64(nd as u64),
        KernelArg::input(lengths),
        t0,
        t1,
        KernelArg::output(gates),
        g0,
        g1,
        KernelArg::output(c),
        KernelArg::output(h),
        p0,
        p1,
        q0,
        q1,
        KernelArg::output(tanh_c),
        tc0,
        tc1,
    ];
    // SAFETY: thread (d, b, j) of D·B·H touches lengths[b] (b < B = lengths.len()), direction
    // d's gates row at row·4BH + b·4H + q·H + j (q < 4) and its rows of c, h, tanh_c: all
    // checked to fit above, for every direction.
    unsafe { backend.launch("lstm_step_forward_f32", launch_config(backend, nd * bh), &mut args) }
}

/// The gradient of one LSTM step of every direction in `dirs` (the CPU's
/// [`lstm_step_backward`](crate::cpu::rnn::lstm_step_backward) per direction): reads the
/// activations, `c_{t-1}` and `tanh(c_t)` rows saved by the forward step, and `dy` when given;
/// `dh`/`dc` (`[D, B, H]`) hold the gradients of `h_t`/`c_t` on entry, and on return 0 (active
/// rows; the caller adds `dgates · W_hh`) and that of `c_{t-1}`; each direction's `dgates` row
/// receives the pre-activation gradients.
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_backward_f32(
    backend: &Backend,
    hidden: usize,
    lengths: &DeviceBuffer<i64>,
    dirs: &[LstmBackRows],
    gates: &DeviceBuffer<f32>,
    c: &DeviceBuffer<f32>,
    tanh_c: &DeviceBuffer<f32>,
    dy: Option<OutputGrad<'_>>,
    dh: &mut DeviceBuffer<f32>,
    dc: &mut DeviceBuffer<f32>,
    dgates: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::lstm_step_backward_f32";
    let nd = check_dirs(OP, dirs)?;
    let batch = lengths.len();
    let bh = batch * hidden;
    for r in dirs {
        check_row(OP, "gates", gates.len(), r.gates, 4 * bh)?;
        check_row(OP, "c (previous state)", c.len(), r.c_prev, bh)?;
        check_row(OP, "tanh_c", tanh_c.len(), r.tanh_c, bh)?;
        check_row(OP, "dgates", dgates.len(), r.dgates, 4 * bh)?;
        check_dy(OP, &dy, r.dy, batch, hidden)?;
    }
    check_running(OP, "dh", dh.len(), nd, bh)?;
    check_running(OP, "dc", dc.len(), nd, bh)?;
    if bh == 0 {
        return Ok(());
    }
    let (dy_buf, dy_stride) = match dy {
        Some(d) => (d.buf, d.stride),
        None => (gates, 0), // not read (has_dy = 0); any buffer of this backend
    };
    let [t0, t1] = pair(dirs, |r| r.t);
    let [g0, g1] = pair(dirs, |r| r.gates);
    let [p0, p1] = pair(dirs, |r| r.c_prev);
    let [tc0, tc1] = pair(dirs, |r| r.tanh_c);
    let [y0, y1] = pair(dirs, |r| r.dy);
    let [dg0, dg1] = pair(dirs, |r| r.dgates);
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::u64(nd as u64),
        KernelArg::input(lengths),
        t0,
        t1,
        KernelArg::input(gates),
        g0,
        g1,
        KernelArg::input(c),
        p0,
        p1,
        KernelArg::input(tanh_c),
        tc0,
        tc1,
        KernelArg::input(dy_buf),
        y0,
        y1,
        KernelArg::u64(dy_stride as u64),
        KernelArg::u32(dy.is_some() as u32),
        KernelArg::output(dh),
        KernelArg::output(dc),
        KernelArg::output(dgates),
        dg0,
        dg1,
    ];
    // SAFETY: as in the forward; dh/dc[d·B·H + k] < D·B·H (checked); dy is read at
    // dy_d + b·stride + j < its length (checked per direction).
    unsafe { backend.launch("lstm_step_backward_f32", launch_config(backend, nd * bh), &mut args) }
}

/// One GRU step of every direction in `dirs` (the CPU's
/// [`gru_step_forward`](crate::cpu::rnn::gru_step_forward) per direction): the `gi` and `gh`
/// rows (`[B, 3H]`, r z n) are the two projections, the `saved` row (`[B, 4H]`) receives
/// `r, z, n, W_hn h + b_hn`, `h` row `state.prev` is read and row `state.next` written.
#[allow(clippy::too_many_arguments)]
pub fn gru_step_forward_f32(
    backend: &Backend,
    hidden: usize,
    lengths: &DeviceBuffer<i64>,
    dirs: &[GruRows],
    gi: &DeviceBuffer<f32>,
    gh: &DeviceBuffer<f32>,
    saved: &mut DeviceBuffer<f32>,
    h: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::gru_step_forward_f32";
    let nd = check_dirs(OP, dirs)?;
    let batch = lengths.len();
    let bh = batch * hidden;
    for r in dirs {
        check_row(OP, "gi", gi.len(), r.gi, 3 * bh)?;
        check_row(OP, "gh", gh.len(), r.gh, 3 * bh)?;
        check_row(OP, "saved", saved.len(), r.saved, 4 * bh)?;
        check_row(OP, "h (previous state)", h.len(), r.state.prev, bh)?;
        check_row(OP, "h (next state)", h.len(), r.state.next, bh)?;
    }
    if bh == 0 {
        return Ok(());
    }
    let [t0, t1] = pair(dirs, |r| r.t);
    let [i0, i1] = pair(dirs, |r| r.gi);
    let [h0, h1] = pair(dirs, |r| r.gh);
    let [s0, s1] = pair(dirs, |r| r.saved);
    let [p0, p1] = pair(dirs, |r| r.state.prev);
    let [q0, q1] = pair(dirs, |r| r.state.next);
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::u64(nd as u64),
        KernelArg::input(lengths),
        t0,
        t1,
        KernelArg::input(gi),
        i0,
        i1,
        KernelArg::input(gh),
        h0,
        h1,
        KernelArg::output(saved),
        s0,
        s1,
        KernelArg::output(h),
        p0,
        p1,
        q0,
        q1,
    ];
    // SAFETY: thread (d, b, j) of D·B·H touches lengths[b], direction d's gi/gh rows at
    // row·3BH + b·3H + q·H + j (q < 3), its saved row (q < 4) and two rows of h: all checked to
    // fit above, for every direction.
    unsafe { backend.launch("gru_step_forward_f32", launch_config(backend, nd * bh), &mut args) }
}

/// The gradient of one GRU step of every direction in `dirs` (the CPU's
/// [`gru_step_backward`](crate::cpu::rnn::gru_step_backward) per direction): reads the `saved`
/// and `h_{t-1}` rows, `dy` when given; `dh` (`[D, B, H]`) holds the gradient of `h_t` on entry
/// and, for active rows, `dh_t · z` on return; each direction's `dgi`/`dgh` row (`[B, 3H]`)
/// receives the gradients of the two projections.
#[allow(clippy::too_many_arguments)]
pub fn gru_step_backward_f32(
    backend: &Backend,
    hidden: usize,
    lengths: &DeviceBuffer<i64>,
    dirs: &[GruBackRows],
    saved: &DeviceBuffer<f32>,
    h: &DeviceBuffer<f32>,
    dy: Option<OutputGrad<'_>>,
    dh: &mut DeviceBuffer<f32>,
    dgi: &mut DeviceBuffer<f32>,
    dgh: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn::gru_step_backward_f32";
    let nd = check_dirs(OP, dirs)?;
    let batch = lengths.len();
    let bh = batch * hidden;
    for r in dirs {
        check_row(OP, "saved", saved.len(), r.saved, 4 * bh)?;
        check_row(OP, "h (previous state)", h.len(), r.h_prev, bh)?;
        check_row(OP, "dgi", dgi.len(), r.dg, 3 * bh)?;
        check_row(OP, "dgh", dgh.len(), r.dg, 3 * bh)?;
        check_dy(OP, &dy, r.dy, batch, hidden)?;
    }
    check_running(OP, "dh", dh.len(), nd, bh)?;
    if bh == 0 {
        return Ok(());
    }
    let (dy_buf, dy_stride) = match dy {
        Some(d) => (d.buf, d.stride),
        None => (saved, 0), // not read (has_dy = 0)
    };
    let [t0, t1] = pair(dirs, |r| r.t);
    let [s0, s1] = pair(dirs, |r| r.saved);
    let [p0, p1] = pair(dirs, |r| r.h_prev);
    let [y0, y1] = pair(dirs, |r| r.dy);
    let [g0, g1] = pair(dirs, |r| r.dg);
    let mut args = [
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::u64(nd as u64),
        KernelArg::input(lengths),
        t0,
        t1,
        KernelArg::input(saved),
        s0,
        s1,
        KernelArg::input(h),
        p0,
        p1,
        KernelArg::input(dy_buf),
        y0,
        y1,
        KernelArg::u64(dy_stride as u64),
        KernelArg::u32(dy.is_some() as u32),
        KernelArg::output(dh),
        KernelArg::output(dgi),
        KernelArg::output(dgh),
        g0,
        g1,
    ];
    // SAFETY: as in the forward; dh[d·B·H + k] < D·B·H (checked); dy is read at
    // dy_d + b·stride + j < its length (checked per direction).
    unsafe { backend.launch("gru_step_backward_f32", launch_config(backend, nd * bh), &mut args) }
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
