//! One direction of one recurrent layer (LSTM or GRU) over a whole sequence on a [`Backend`],
//! forward and backward, in `f32`: the device counterpart of `nn/src/rnn/driver.rs` (same
//! buffers, same row order, same formulas), built from the device GEMM ([`super::gemm`]: cuBLAS
//! on a GPU, the tiled kernel on the emulator) and the fused step kernels of [`super::rnn`].
//!
//! Forward: one GEMM for the input projection of every step (`x [T·B, I] · W_ihᵀ`) plus the
//! bias epilogue (`b_ih`, and `b_hh` for the LSTM); then per step one GEMM
//! `h_{t-1} · W_hhᵀ` (`beta = 1` into that step's gate rows; the GRU's go into a separate
//! `gh` buffer pre-filled with `b_hh`, since its `n` gate needs `W_hn h + b_hn` apart) and the
//! fused step kernel. Backward: per step (reverse order) the fused gradient kernel and one GEMM
//! `dh_{t-1} += dgates_t · W_hh`; then `dW_hh = dghᵀ · h_prev` and `dW_ih = dgiᵀ · x` as one GEMM
//! each over all steps (the previous states of all steps are one `[T·B, H]` block of the state
//! buffer), the bias gradients as column sums. The input gradient `Σ_dir dgi_dir · W_ih_dir` is
//! the caller's ([`rnn_input_grad_f32`]), which sums the directions.
//!
//! State buffers are `[T + 1, B, H]`: the state before time `t` is row `t` (forward) or `t + 1`
//! (reverse). Nothing synchronises with the host: every launch is queued on the backend's
//! stream.

use super::conv::{bias_act_f32, bias_grad_f32, Activation};
use super::elementwise::launch_config;
use super::gemm::{gemm, GemmConfig};
use super::index::cat_slab;
use super::launch::{Backend, DeviceBuffer, KernelArg};
use super::rnn::{
    gru_step_backward_f32, gru_step_forward_f32, lstm_step_backward_f32, lstm_step_forward_f32, RowsAt, StateRows,
    StepMask,
};
use super::tensor::copy_strided;
use super::CudaError;

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCell {
    /// Gates i, f, g, o; a cell state.
    Lstm,
    /// Gates r, z, n.
    Gru,
}

impl SeqCell {
    /// Gates per hidden unit (4 or 3).
    pub fn gates(self) -> usize {
        match self {
            SeqCell::Lstm => 4,
            SeqCell::Gru => 3,
        }
    }
    /// The PyTorch class name.
    pub fn name(self) -> &'static str {
        match self {
            SeqCell::Lstm => "LSTM",
            SeqCell::Gru => "GRU",
        }
    }
}

/// The sizes of one layer: `T`, `B`, `I`, `H`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSizes {
    pub steps: usize,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
}

/// One direction's weights (`[G·H, I]`, `[G·H, H]`, `[G·H]`), dense.
#[derive(Clone, Copy, Debug)]
pub struct SeqWeights<'a> {
    pub w_ih: &'a DeviceBuffer<f32>,
    pub w_hh: &'a DeviceBuffer<f32>,
    pub b_ih: Option<&'a DeviceBuffer<f32>>,
    pub b_hh: Option<&'a DeviceBuffer<f32>>,
}

/// What the forward pass of one direction keeps for backward.
#[derive(Debug)]
pub struct SeqSaved {
    pub cell: SeqCell,
    pub reverse: bool,
    /// LSTM: the gate activations `[T, B, 4H]`; GRU: `r, z, n, W_hn h + b_hn` `[T, B, 4H]`.
    pub gates: DeviceBuffer<f32>,
    /// `[T + 1, B, H]` hidden states (row order in the module docs).
    pub hs: DeviceBuffer<f32>,
    /// `[T + 1, B, H]` cell states (LSTM only).
    pub cs: Option<DeviceBuffer<f32>>,
    /// `[T, B, H]` `tanh(c_t)` (LSTM only).
    pub tanh_c: Option<DeviceBuffer<f32>>,
}

/// The gradients of one direction.
#[derive(Debug)]
pub struct SeqGrads {
    /// `[T·B, G·H]` gradient of the input projection (for [`rnn_input_grad_f32`]).
    pub dgi: DeviceBuffer<f32>,
    pub dw_ih: DeviceBuffer<f32>,
    pub dw_hh: DeviceBuffer<f32>,
    pub db_ih: DeviceBuffer<f32>,
    pub db_hh: DeviceBuffer<f32>,
    /// `[B, H]`.
    pub dh0: DeviceBuffer<f32>,
    /// `[B, H]` (LSTM only).
    pub dc0: Option<DeviceBuffer<f32>>,
}

fn shape_err<T>(op: &'static str, message: String) -> Result<T, CudaError> {
    Err(CudaError::Shape { op, message })
}

fn check_len(op: &'static str, what: &str, len: usize, want: usize) -> Result<(), CudaError> {
    if len != want {
        return shape_err(op, format!("{what} has {len} elements, expected {want}"));
    }
    Ok(())
}

/// Time index of processing step `s`, and the state rows before and after it.
fn step_rows(s: usize, steps: usize, reverse: bool) -> (usize, usize, usize) {
    if reverse {
        let t = steps - 1 - s;
        (t, t + 1, t)
    } else {
        (s, s, s + 1)
    }
}

/// Row of the state buffer holding the final state.
pub fn final_row(steps: usize, reverse: bool) -> usize {
    if reverse {
        0
    } else {
        steps
    }
}

fn check_weights(op: &'static str, cell: SeqCell, sz: SeqSizes, w: &SeqWeights<'_>) -> Result<(), CudaError> {
    let gw = cell.gates() * sz.hidden;
    check_len(op, "w_ih", w.w_ih.len(), gw * sz.input)?;
    check_len(op, "w_hh", w.w_hh.len(), gw * sz.hidden)?;
    if let Some(b) = w.b_ih {
        check_len(op, "b_ih", b.len(), gw)?;
    }
    if let Some(b) = w.b_hh {
        check_len(op, "b_hh", b.len(), gw)?;
    }
    Ok(())
}

/// A fresh buffer holding `src[offset..offset + n]`.
pub fn copy_range_f32(
    backend: &Backend,
    src: &DeviceBuffer<f32>,
    offset: usize,
    n: usize,
) -> Result<DeviceBuffer<f32>, CudaError> {
    let mut dst = backend.alloc::<f32>(n)?;
    if n > 0 {
        copy_strided(backend, src, &[n], &[1], offset, &mut dst)?;
    }
    Ok(dst)
}

/// `dst[offset..offset + src.len()] = src`.
pub fn write_range_f32(
    backend: &Backend,
    src: &DeviceBuffer<f32>,
    dst: &mut DeviceBuffer<f32>,
    offset: usize,
) -> Result<(), CudaError> {
    let row = dst.len();
    cat_slab(backend, src, dst, (1, src.len(), row, offset))
}

/// Forward pass of one direction over the whole sequence: `x` `[T·B, I]`, `h0`/`c0` `[B, H]`
/// (`c0` for the LSTM only), `lengths` `[B]` (row `b` is real for `t < lengths[b]`).
#[allow(clippy::too_many_arguments)]
pub fn rnn_seq_forward_f32(
    backend: &Backend,
    cell: SeqCell,
    sz: SeqSizes,
    reverse: bool,
    allow_tf32: bool,
    lengths: &DeviceBuffer<i64>,
    x: &DeviceBuffer<f32>,
    w: &SeqWeights<'_>,
    h0: &DeviceBuffer<f32>,
    c0: Option<&DeviceBuffer<f32>>,
) -> Result<SeqSaved, CudaError> {
    const OP: &str = "cuda::rnn_seq::rnn_seq_forward_f32";
    let SeqSizes { steps, batch, input, hidden } = sz;
    let gw = cell.gates() * hidden;
    let (rows, bh) = (steps * batch, batch * hidden);
    check_len(OP, "lengths", lengths.len(), batch)?;
    check_len(OP, "x", x.len(), rows * input)?;
    check_weights(OP, cell, sz, w)?;
    check_len(OP, "h0", h0.len(), bh)?;
    let c0 = match (cell, c0) {
        (SeqCell::Lstm, Some(c)) => {
            check_len(OP, "c0", c.len(), bh)?;
            Some(c)
        }
        (SeqCell::Lstm, None) => return shape_err(OP, "the LSTM needs c0".into()),
        (SeqCell::Gru, _) => None,
    };
    // Input projection x W_ihᵀ + b_ih (+ b_hh for the LSTM), [T·B, G·H].
    let mut proj = if input == 0 { backend.zeros::<f32>(rows * gw)? } else { backend.alloc::<f32>(rows * gw)? };
    let cfg = GemmConfig { transb: true, ldb: input, allow_tf32, ..GemmConfig::dense(rows, gw, input) };
    gemm(backend, &cfg, x, w.w_ih, &mut proj)?;
    bias_act_f32(backend, &mut proj, (rows, gw, 1), w.b_ih, Activation::Identity)?;
    if cell == SeqCell::Lstm {
        bias_act_f32(backend, &mut proj, (rows, gw, 1), w.b_hh, Activation::Identity)?;
    }
    // The recurrent product of step t into rows t of `dst` (beta = 1).
    let recurrent = |hs: &DeviceBuffer<f32>, p: usize, t: usize, dst: &mut DeviceBuffer<f32>| {
        let cfg = GemmConfig {
            transb: true,
            beta: 1.0,
            offset_a: p * bh,
            ldb: hidden,
            offset_c: t * batch * gw,
            allow_tf32,
            ..GemmConfig::dense(batch, gw, hidden)
        };
        gemm(backend, &cfg, hs, w.w_hh, dst)
    };
    // Every row of hs is written: the start row here, every other one by a step kernel.
    let mut hs = backend.alloc::<f32>((steps + 1) * bh)?;
    let start = if reverse { steps } else { 0 };
    write_range_f32(backend, h0, &mut hs, start * bh)?;
    match (cell, c0) {
        (SeqCell::Lstm, Some(c0)) => {
            let mut cs = backend.alloc::<f32>((steps + 1) * bh)?;
            write_range_f32(backend, c0, &mut cs, start * bh)?;
            let mut tanh_c = backend.alloc::<f32>(steps * bh)?;
            for s in 0..steps {
                let (t, p, q) = step_rows(s, steps, reverse);
                recurrent(&hs, p, t, &mut proj)?;
                let mask = StepMask { lengths, t };
                let state = StateRows { prev: p, next: q };
                lstm_step_forward_f32(backend, hidden, mask, &mut proj, t, &mut cs, &mut hs, state, &mut tanh_c, t)?;
            }
            Ok(SeqSaved { cell, reverse, gates: proj, hs, cs: Some(cs), tanh_c: Some(tanh_c) })
        }
        _ => {
            let mut gh = backend.zeros::<f32>(rows * gw)?;
            bias_act_f32(backend, &mut gh, (rows, gw, 1), w.b_hh, Activation::Identity)?;
            let mut saved = backend.alloc::<f32>(rows * 4 * hidden)?;
            for s in 0..steps {
                let (t, p, q) = step_rows(s, steps, reverse);
                recurrent(&hs, p, t, &mut gh)?;
                let mask = StepMask { lengths, t };
                let state = StateRows { prev: p, next: q };
                gru_step_forward_f32(backend, hidden, mask, &proj, t, &gh, t, &mut saved, t, &mut hs, state)?;
            }
            Ok(SeqSaved { cell, reverse, gates: saved, hs, cs: None, tanh_c: None })
        }
    }
}

/// Writes direction `dir` (of `dirs`) of the layer output `y` `[T, B, dirs·H]` (at element
/// `y_off` of `y`) from `saved`'s states: zero at padded positions (kernel `rnn_output_f32`).
#[allow(clippy::too_many_arguments)]
pub fn rnn_seq_output_f32(
    backend: &Backend,
    sz: SeqSizes,
    dirs: usize,
    dir: usize,
    lengths: &DeviceBuffer<i64>,
    saved: &SeqSaved,
    y: &mut DeviceBuffer<f32>,
    y_off: usize,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn_seq::rnn_seq_output_f32";
    let SeqSizes { steps, batch, hidden, .. } = sz;
    let n = steps * batch * hidden;
    check_len(OP, "lengths", lengths.len(), batch)?;
    check_len(OP, "hs", saved.hs.len(), (steps + 1) * batch * hidden)?;
    if dir >= dirs {
        return shape_err(OP, format!("direction {dir} of {dirs}"));
    }
    let need = y_off + n * dirs;
    if need > y.len() {
        return shape_err(OP, format!("y needs {need} elements from offset {y_off}, its buffer has {}", y.len()));
    }
    if n == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::u64(steps as u64),
        KernelArg::u64(batch as u64),
        KernelArg::u64(hidden as u64),
        KernelArg::u64(dirs as u64),
        KernelArg::u64(dir as u64),
        KernelArg::u32(saved.reverse as u32),
        KernelArg::input(lengths),
        KernelArg::input(&saved.hs),
        KernelArg::output(y),
        KernelArg::u64(y_off as u64),
    ];
    // SAFETY: thread k < T·B·H reads lengths[b] (b < B = its length), hs[row·B·H + r] with
    // row <= T (hs is [T + 1, B, H], checked) and writes y[y_off + (t·B + b)·dirs·H + dir·H + j]
    // < y_off + T·B·dirs·H <= y.len() (checked, dir < dirs).
    unsafe { backend.launch("rnn_output_f32", launch_config(backend, n), &mut args) }
}

/// Backward pass of one direction. `dy` holds the layer-output gradient: the row of batch `b`
/// at time `t` is at `dy_off + (t·B + b)·dy_stride` (`dy_stride = dirs·H`, `dy_off = dir·H` for
/// the packed layer output); `dh_n`/`dc_n` `[B, H]` are the final-state gradients (consumed:
/// they become `dh0`/`dc0`).
#[allow(clippy::too_many_arguments)]
pub fn rnn_seq_backward_f32(
    backend: &Backend,
    sz: SeqSizes,
    allow_tf32: bool,
    lengths: &DeviceBuffer<i64>,
    x: &DeviceBuffer<f32>,
    w: &SeqWeights<'_>,
    saved: &SeqSaved,
    dy: &DeviceBuffer<f32>,
    dy_off: usize,
    dy_stride: usize,
    dh_n: DeviceBuffer<f32>,
    dc_n: Option<DeviceBuffer<f32>>,
) -> Result<SeqGrads, CudaError> {
    const OP: &str = "cuda::rnn_seq::rnn_seq_backward_f32";
    let SeqSizes { steps, batch, input, hidden } = sz;
    let cell = saved.cell;
    let gw = cell.gates() * hidden;
    let (rows, bh) = (steps * batch, batch * hidden);
    check_len(OP, "lengths", lengths.len(), batch)?;
    check_len(OP, "x", x.len(), rows * input)?;
    check_weights(OP, cell, sz, w)?;
    check_len(OP, "hs", saved.hs.len(), (steps + 1) * bh)?;
    check_len(OP, "saved gates", saved.gates.len(), rows * 4 * hidden)?;
    check_len(OP, "dh_n", dh_n.len(), bh)?;
    let mut dh = dh_n;
    let mut dgi = backend.alloc::<f32>(rows * gw)?;
    let mut dgh_gru = if cell == SeqCell::Gru { Some(backend.alloc::<f32>(rows * gw)?) } else { None };
    let mut dc = None;
    match (cell, &saved.cs, &saved.tanh_c, dc_n) {
        (SeqCell::Lstm, Some(cs), Some(tanh_c), Some(dc_n)) => {
            check_len(OP, "dc_n", dc_n.len(), bh)?;
            check_len(OP, "cs", cs.len(), (steps + 1) * bh)?;
            check_len(OP, "tanh_c", tanh_c.len(), rows * hidden)?;
            let mut dcv = dc_n;
            for s in (0..steps).rev() {
                let (t, p, _) = step_rows(s, steps, saved.reverse);
                let mask = StepMask { lengths, t };
                let dyt = RowsAt { buf: dy, offset: dy_off + t * batch * dy_stride, stride: dy_stride };
                lstm_step_backward_f32(
                    backend,
                    hidden,
                    mask,
                    &saved.gates,
                    t,
                    cs,
                    p,
                    tanh_c,
                    t,
                    Some(dyt),
                    &mut dh,
                    &mut dcv,
                    &mut dgi,
                    t,
                )?;
                recurrent_back(backend, sz, gw, allow_tf32, &dgi, t, w.w_hh, &mut dh)?;
            }
            dc = Some(dcv);
        }
        (SeqCell::Gru, _, _, _) => {
            let dgh = dgh_gru.as_mut().ok_or_else(|| CudaError::Shape { op: OP, message: "internal".into() })?;
            for s in (0..steps).rev() {
                let (t, p, _) = step_rows(s, steps, saved.reverse);
                let mask = StepMask { lengths, t };
                let dyt = RowsAt { buf: dy, offset: dy_off + t * batch * dy_stride, stride: dy_stride };
                gru_step_backward_f32(
                    backend,
                    hidden,
                    mask,
                    &saved.gates,
                    t,
                    &saved.hs,
                    p,
                    Some(dyt),
                    &mut dh,
                    &mut dgi,
                    dgh,
                    t,
                )?;
                recurrent_back(backend, sz, gw, allow_tf32, dgh, t, w.w_hh, &mut dh)?;
            }
        }
        _ => return shape_err(OP, "the LSTM backward needs the saved cell states and dc_n".into()),
    }
    let dgh: &DeviceBuffer<f32> = dgh_gru.as_ref().unwrap_or(&dgi);
    // dW_hh [G·H, H] = dghᵀ [G·H, T·B] · h_prev [T·B, H] (the previous states are one block).
    let prev_off = if saved.reverse { bh } else { 0 };
    let mut dw_hh = backend.zeros::<f32>(gw * hidden)?;
    let cfg =
        GemmConfig { transa: true, lda: gw, offset_b: prev_off, allow_tf32, ..GemmConfig::dense(gw, hidden, rows) };
    gemm(backend, &cfg, dgh, &saved.hs, &mut dw_hh)?;
    // dW_ih [G·H, I] = dgiᵀ · x.
    let mut dw_ih = backend.zeros::<f32>(gw * input)?;
    let cfg = GemmConfig { transa: true, lda: gw, allow_tf32, ..GemmConfig::dense(gw, input, rows) };
    gemm(backend, &cfg, &dgi, x, &mut dw_ih)?;
    let mut db_ih = backend.alloc::<f32>(gw)?;
    bias_grad_f32(backend, &dgi, (rows, gw, 1), &mut db_ih)?;
    let db_hh = match &dgh_gru {
        Some(g) => {
            let mut d = backend.alloc::<f32>(gw)?;
            bias_grad_f32(backend, g, (rows, gw, 1), &mut d)?;
            d
        }
        None => backend.copy(&db_ih)?,
    };
    Ok(SeqGrads { dgi, dw_ih, dw_hh, db_ih, db_hh, dh0: dh, dc0: dc })
}

/// `dh [B, H] += dg_t [B, G·H] · W_hh` (rows `t` of `dg`).
#[allow(clippy::too_many_arguments)]
fn recurrent_back(
    backend: &Backend,
    sz: SeqSizes,
    gw: usize,
    allow_tf32: bool,
    dg: &DeviceBuffer<f32>,
    t: usize,
    w_hh: &DeviceBuffer<f32>,
    dh: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    let cfg =
        GemmConfig { beta: 1.0, offset_a: t * sz.batch * gw, allow_tf32, ..GemmConfig::dense(sz.batch, sz.hidden, gw) };
    gemm(backend, &cfg, dg, w_hh, dh)
}

/// The input gradient `dx [T·B, I] (+)= dgi [T·B, G·H] · W_ih` of one direction (`accumulate`
/// adds to `dx`, for the second direction).
#[allow(clippy::too_many_arguments)]
pub fn rnn_input_grad_f32(
    backend: &Backend,
    cell: SeqCell,
    sz: SeqSizes,
    allow_tf32: bool,
    dgi: &DeviceBuffer<f32>,
    w_ih: &DeviceBuffer<f32>,
    dx: &mut DeviceBuffer<f32>,
    accumulate: bool,
) -> Result<(), CudaError> {
    let gw = cell.gates() * sz.hidden;
    let rows = sz.steps * sz.batch;
    let beta = if accumulate { 1.0 } else { 0.0 };
    let cfg = GemmConfig { beta, allow_tf32, ..GemmConfig::dense(rows, sz.input, gw) };
    gemm(backend, &cfg, dgi, w_ih, dx)
}
