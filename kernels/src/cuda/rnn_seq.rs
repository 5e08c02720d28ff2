//! One recurrent layer (LSTM or GRU, one direction or both) over a whole sequence on a
//! [`Backend`], forward and backward, in `f32`: the device counterpart of
//! `nn/src/rnn/driver.rs` (same formulas, same row order per direction), built from the device
//! GEMM ([`super::gemm`]: cuBLAS on a GPU, the tiled kernel on the emulator) and the fused step
//! kernels of [`super::rnn`].
//!
//! The directions of a bidirectional layer run together: every buffer stacks them
//! (`[D, T, B, ·]`, direction 1 the reverse one), processing step `s` handles time `s` of the
//! forward direction and time `T - 1 - s` of the reverse one, and each step is one strided
//! batched GEMM over the directions plus one step kernel for all of them (half the launches of
//! running the directions one after the other, and twice the work per launch, which is what
//! small per-step GEMMs need to fill a GPU).
//!
//! Forward: one batched GEMM for the input projection of every step and direction
//! (`x [T·B, I] · W_ih_dᵀ`) and the biases as rank-1 updates (`1 · b_ih_d`, and `b_hh_d` for the
//! LSTM); then per step one GEMM `h_{t-1} · W_hh_dᵀ` (`beta = 1` into that step's gate rows; the
//! GRU's go into a separate `gh` buffer pre-filled with `b_hh`, since its `n` gate needs
//! `W_hn h + b_hn` apart) and the fused step kernel. Backward: per step (reverse order) the
//! fused gradient kernel and one GEMM `dh_{t-1} += dgates_t · W_hh_d`; then
//! `dW_hh_d = dgh_dᵀ · h_prev_d` and `dW_ih_d = dgi_dᵀ · x` as one batched GEMM each over all
//! steps (the previous states of all steps are one `[T·B, H]` block of a direction's state
//! buffer), the bias gradients as `1ᵀ · dgi_d`, and the input gradient `Σ_d dgi_d · W_ih_d`.
//!
//! Strides between the directions' operands of a step's GEMM are positive with this layout:
//! the state rows before step `s` are `s` and `(T + 1) + (T - s)`, the gate rows `s` and
//! `T + (T - 1 - s)`. State buffers are `[D, T + 1, B, H]`: the state before time `t` is row `t`
//! of direction 0 and row `t + 1` of direction 1. Nothing synchronises with the host: every
//! launch is queued on the backend's stream.

use super::elementwise::launch_config;
use super::gemm::{gemm, GemmConfig};
use super::index::cat_slab;
use super::launch::{Backend, DeviceBuffer, KernelArg};
use super::rnn::{
    gru_step_backward_f32, gru_step_forward_f32, lstm_forward_persistent_f32, lstm_persistent_shared_bytes,
    lstm_step_backward_f32, lstm_step_forward_f32, GruBackRows, GruRows, LstmBackRows, LstmRows, OutputGrad, StateRows,
    LSTM_PERSISTENT_MAX_SHARED_BYTES,
};
use super::tensor::{copy_strided, fill};
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
    /// Sequence length `T`.
    pub steps: usize,
    /// Batch size `B`.
    pub batch: usize,
    /// Input features `I`.
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
}

/// A layer's weights, the directions stacked: `w_ih` `[D, G·H, I]`, `w_hh` `[D, G·H, H]`,
/// `b_ih`/`b_hh` `[D, G·H]` (absent when the layer has no biases), dense.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'a> {
    /// Directions: 1, or 2 with direction 1 running in reverse.
    pub dirs: usize,
    /// Input-to-hidden weights, `[D, G·H, I]`.
    pub w_ih: &'a DeviceBuffer<f32>,
    /// Hidden-to-hidden weights, `[D, G·H, H]`.
    pub w_hh: &'a DeviceBuffer<f32>,
    /// Input-to-hidden biases, `[D, G·H]`.
    pub b_ih: Option<&'a DeviceBuffer<f32>>,
    /// Hidden-to-hidden biases, `[D, G·H]`.
    pub b_hh: Option<&'a DeviceBuffer<f32>>,
}

/// What the forward pass of a layer keeps for backward (every buffer direction-stacked).
#[derive(Debug)]
pub struct LayerSaved {
    /// The layer's cell.
    pub cell: SeqCell,
    /// Directions: 1, or 2 with direction 1 running in reverse.
    pub dirs: usize,
    /// LSTM: the gate activations `[D, T, B, 4H]`; GRU: `r, z, n, W_hn h + b_hn` `[D, T, B, 4H]`.
    pub gates: DeviceBuffer<f32>,
    /// `[D, T + 1, B, H]` hidden states (row order in the module docs).
    pub hs: DeviceBuffer<f32>,
    /// `[D, T + 1, B, H]` cell states (LSTM only).
    pub cs: Option<DeviceBuffer<f32>>,
    /// `[D, T, B, H]` `tanh(c_t)` (LSTM only).
    pub tanh_c: Option<DeviceBuffer<f32>>,
}

/// The gradients of a layer (direction-stacked like its weights).
#[derive(Debug)]
pub struct LayerGrads {
    /// `[T, B, I]`, when asked for.
    pub dx: Option<DeviceBuffer<f32>>,
    /// `[D, G·H, I]`.
    pub dw_ih: DeviceBuffer<f32>,
    /// `[D, G·H, H]`.
    pub dw_hh: DeviceBuffer<f32>,
    /// `[D, G·H]`.
    pub db_ih: DeviceBuffer<f32>,
    /// `[D, G·H]`.
    pub db_hh: DeviceBuffer<f32>,
    /// `[D, B, H]`.
    pub dh0: DeviceBuffer<f32>,
    /// `[D, B, H]` (LSTM only).
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

/// Elements of a layer's packed output `[Y | h_n | c_n]`: `Y` `[T, B, D·H]`, then `h_n` and
/// (LSTM) `c_n` `[D, B, H]`.
pub fn packed_len(cell: SeqCell, sz: SeqSizes, dirs: usize) -> usize {
    let n_state = if cell == SeqCell::Lstm { 2 } else { 1 };
    (sz.steps + n_state) * dirs * sz.batch * sz.hidden
}

/// The rows direction `d` uses at processing step `s` of `T`: its time index, its row of the
/// `[D·T, B, ·]` per-time buffers, and its state rows before and after the step in the
/// `[D·(T + 1), B, H]` state buffers.
#[derive(Clone, Copy, Debug)]
struct DirStep {
    t: usize,
    row: usize,
    prev: usize,
    next: usize,
}

fn dir_step(s: usize, steps: usize, d: usize) -> DirStep {
    if d == 0 {
        DirStep { t: s, row: s, prev: s, next: s + 1 }
    } else {
        let t = steps - 1 - s;
        let base = steps + 1;
        DirStep { t, row: steps + t, prev: base + t + 1, next: base + t }
    }
}

/// The `[D·(T + 1), B, H]` state row holding direction `d`'s initial (`initial`) or final state.
fn end_row(steps: usize, d: usize, initial: bool) -> usize {
    match (d, initial) {
        (0, true) => 0,
        (0, false) => steps,
        (_, true) => 2 * steps + 1,
        (_, false) => steps + 1,
    }
}

fn check_weights(op: &'static str, cell: SeqCell, sz: SeqSizes, w: &LayerWeights<'_>) -> Result<(), CudaError> {
    if !(1..=2).contains(&w.dirs) {
        return shape_err(op, format!("a layer has 1 or 2 directions, not {}", w.dirs));
    }
    let gw = cell.gates() * sz.hidden;
    check_len(op, "w_ih", w.w_ih.len(), w.dirs * gw * sz.input)?;
    check_len(op, "w_hh", w.w_hh.len(), w.dirs * gw * sz.hidden)?;
    if let Some(b) = w.b_ih {
        check_len(op, "b_ih", b.len(), w.dirs * gw)?;
    }
    if let Some(b) = w.b_hh {
        check_len(op, "b_hh", b.len(), w.dirs * gw)?;
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

/// `dst[dst_off..dst_off + n] = src[src_off..src_off + n]`.
fn move_range_f32(
    backend: &Backend,
    src: &DeviceBuffer<f32>,
    src_off: usize,
    n: usize,
    dst: &mut DeviceBuffer<f32>,
    dst_off: usize,
) -> Result<(), CudaError> {
    let part = copy_range_f32(backend, src, src_off, n)?;
    write_range_f32(backend, &part, dst, dst_off)
}

/// `n` ones.
fn ones(backend: &Backend, n: usize) -> Result<DeviceBuffer<f32>, CudaError> {
    let mut v = backend.alloc::<f32>(n)?;
    fill(backend, &mut v, 1.0f32)?;
    Ok(v)
}

/// `c_d [rows, gw] (beta)= 1 · bias_d` for every direction `d` (`c` `[D, rows, gw]`, `bias`
/// `[D, gw]`): a rank-1 GEMM, exact (no TF32: the products are `1 · b`).
fn add_bias_rows(
    backend: &Backend,
    dirs: usize,
    (rows, gw): (usize, usize),
    one: &DeviceBuffer<f32>,
    bias: &DeviceBuffer<f32>,
    beta: f64,
    c: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    let cfg = GemmConfig {
        batch: dirs,
        beta,
        lda: 1,
        stride_a: 0,
        stride_b: gw,
        stride_c: rows * gw,
        ..GemmConfig::dense(rows, gw, 1)
    };
    gemm(backend, &cfg, one, bias, c)
}

/// `db_d [gw] = Σ_rows g_d [rows, gw]` for every direction (`g` `[D, rows, gw]`): `1ᵀ · g_d`.
fn bias_grads(
    backend: &Backend,
    dirs: usize,
    (rows, gw): (usize, usize),
    one: &DeviceBuffer<f32>,
    g: &DeviceBuffer<f32>,
) -> Result<DeviceBuffer<f32>, CudaError> {
    let mut db = backend.zeros::<f32>(dirs * gw)?;
    let cfg = GemmConfig {
        batch: dirs,
        lda: rows.max(1),
        stride_a: 0,
        stride_b: rows * gw,
        stride_c: gw,
        ..GemmConfig::dense(1, gw, rows)
    };
    gemm(backend, &cfg, one, g, &mut db)?;
    Ok(db)
}

/// How a layer's forward runs its time steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepAlgo {
    /// Per step one batched GEMM and one step kernel (any size).
    #[default]
    Steps,
    /// The LSTM forward as one persistent launch ([`lstm_forward_persistent_f32`]: the
    /// recurrent weights and the state in shared memory) when the layer is small enough
    /// ([`lstm_persistent_shared_bytes`] within [`LSTM_PERSISTENT_MAX_SHARED_BYTES`]); otherwise,
    /// and for the GRU and every backward, [`StepAlgo::Steps`]. Like cuDNN's persistent
    /// algorithm, it only pays while a step's GEMM is far too small to fill the GPU.
    PersistentIfSmall,
}

/// Forward pass of a layer over the whole sequence: `x` `[T·B, I]`, `h0`/`c0` `[D, B, H]`
/// (`c0` for the LSTM only), `lengths` `[B]` (row `b` is real for `t < lengths[b]`).
#[allow(clippy::too_many_arguments)]
pub fn rnn_layer_forward_f32(
    backend: &Backend,
    cell: SeqCell,
    sz: SeqSizes,
    algo: StepAlgo,
    allow_tf32: bool,
    lengths: &DeviceBuffer<i64>,
    x: &DeviceBuffer<f32>,
    w: &LayerWeights<'_>,
    h0: &DeviceBuffer<f32>,
    c0: Option<&DeviceBuffer<f32>>,
) -> Result<LayerSaved, CudaError> {
    const OP: &str = "cuda::rnn_seq::rnn_layer_forward_f32";
    let SeqSizes { steps, batch, input, hidden } = sz;
    check_weights(OP, cell, sz, w)?;
    let nd = w.dirs;
    let gw = cell.gates() * hidden;
    let (rows, bh) = (steps * batch, batch * hidden);
    check_len(OP, "lengths", lengths.len(), batch)?;
    check_len(OP, "x", x.len(), rows * input)?;
    check_len(OP, "h0", h0.len(), nd * bh)?;
    let c0 = match (cell, c0) {
        (SeqCell::Lstm, Some(c)) => {
            check_len(OP, "c0", c.len(), nd * bh)?;
            Some(c)
        }
        (SeqCell::Lstm, None) => return shape_err(OP, "the LSTM needs c0".into()),
        (SeqCell::Gru, _) => None,
    };
    // Input projection x W_ih_dᵀ + b_ih_d (+ b_hh_d for the LSTM), [D, T·B, G·H].
    let mut proj =
        if input == 0 { backend.zeros::<f32>(nd * rows * gw)? } else { backend.alloc::<f32>(nd * rows * gw)? };
    let cfg = GemmConfig {
        transb: true,
        ldb: input.max(1),
        batch: nd,
        stride_a: 0,
        stride_b: gw * input,
        stride_c: rows * gw,
        allow_tf32,
        ..GemmConfig::dense(rows, gw, input)
    };
    gemm(backend, &cfg, x, w.w_ih, &mut proj)?;
    let one = ones(backend, rows)?;
    if let Some(b) = w.b_ih {
        add_bias_rows(backend, nd, (rows, gw), &one, b, 1.0, &mut proj)?;
    }
    // The recurrent products of step s into the step's rows of `dst` (beta = 1), both
    // directions in one batched GEMM.
    let recurrent = |hs: &DeviceBuffer<f32>, s: usize, dst: &mut DeviceBuffer<f32>| {
        let (d0, d1) = (dir_step(s, steps, 0), dir_step(s, steps, nd - 1));
        let cfg = GemmConfig {
            transb: true,
            beta: 1.0,
            ldb: hidden.max(1),
            batch: nd,
            offset_a: d0.prev * bh,
            stride_a: (d1.prev - d0.prev) * bh,
            stride_b: gw * hidden,
            offset_c: d0.row * batch * gw,
            stride_c: (d1.row - d0.row) * batch * gw,
            allow_tf32,
            ..GemmConfig::dense(batch, gw, hidden)
        };
        gemm(backend, &cfg, hs, w.w_hh, dst)
    };
    // Every row of hs is written: the start rows here, every other one by a step kernel.
    let mut hs = backend.alloc::<f32>(nd * (steps + 1) * bh)?;
    let mut cs = match c0 {
        Some(_) => Some(backend.alloc::<f32>(nd * (steps + 1) * bh)?),
        None => None,
    };
    for d in 0..nd {
        let start = end_row(steps, d, true) * bh;
        move_range_f32(backend, h0, d * bh, bh, &mut hs, start)?;
        if let (Some(c0), Some(cs)) = (c0, cs.as_mut()) {
            move_range_f32(backend, c0, d * bh, bh, cs, start)?;
        }
    }
    match (cell, cs) {
        (SeqCell::Lstm, Some(mut cs)) => {
            if let Some(b) = w.b_hh {
                add_bias_rows(backend, nd, (rows, gw), &one, b, 1.0, &mut proj)?;
            }
            let mut tanh_c = backend.alloc::<f32>(nd * steps * bh)?;
            let persistent = algo == StepAlgo::PersistentIfSmall
                && lstm_persistent_shared_bytes(batch, hidden) <= LSTM_PERSISTENT_MAX_SHARED_BYTES;
            if let (true, Some(c0)) = (persistent, c0) {
                // The same buffers, layouts and row order as the step loop below.
                lstm_forward_persistent_f32(
                    backend,
                    steps,
                    hidden,
                    nd,
                    lengths,
                    &mut proj,
                    w.w_hh,
                    h0,
                    c0,
                    &mut hs,
                    &mut cs,
                    &mut tanh_c,
                )?;
                return Ok(LayerSaved { cell, dirs: nd, gates: proj, hs, cs: Some(cs), tanh_c: Some(tanh_c) });
            }
            for s in 0..steps {
                recurrent(&hs, s, &mut proj)?;
                let rows_of = |d: usize| {
                    let p = dir_step(s, steps, d);
                    LstmRows { t: p.t, gates: p.row, state: StateRows { prev: p.prev, next: p.next }, tanh_c: p.row }
                };
                let dirs: Vec<LstmRows> = (0..nd).map(rows_of).collect();
                lstm_step_forward_f32(backend, hidden, lengths, &dirs, &mut proj, &mut cs, &mut hs, &mut tanh_c)?;
            }
            Ok(LayerSaved { cell, dirs: nd, gates: proj, hs, cs: Some(cs), tanh_c: Some(tanh_c) })
        }
        _ => {
            let mut gh = backend.zeros::<f32>(nd * rows * gw)?;
            if let Some(b) = w.b_hh {
                add_bias_rows(backend, nd, (rows, gw), &one, b, 0.0, &mut gh)?;
            }
            let mut saved = backend.alloc::<f32>(nd * rows * 4 * hidden)?;
            for s in 0..steps {
                recurrent(&hs, s, &mut gh)?;
                let rows_of = |d: usize| {
                    let p = dir_step(s, steps, d);
                    GruRows {
                        t: p.t,
                        gi: p.row,
                        gh: p.row,
                        saved: p.row,
                        state: StateRows { prev: p.prev, next: p.next },
                    }
                };
                let dirs: Vec<GruRows> = (0..nd).map(rows_of).collect();
                gru_step_forward_f32(backend, hidden, lengths, &dirs, &proj, &gh, &mut saved, &mut hs)?;
            }
            Ok(LayerSaved { cell, dirs: nd, gates: saved, hs, cs: None, tanh_c: None })
        }
    }
}

/// Writes the layer's packed output `[Y | h_n | c_n]` (see [`packed_len`]) from `saved`'s
/// states: `Y` zero at padded positions (kernel `rnn_output_f32`), `h_n`/`c_n` the final states.
pub fn rnn_layer_output_f32(
    backend: &Backend,
    sz: SeqSizes,
    lengths: &DeviceBuffer<i64>,
    saved: &LayerSaved,
    packed: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::rnn_seq::rnn_layer_output_f32";
    let SeqSizes { steps, batch, hidden, .. } = sz;
    let nd = saved.dirs;
    let bh = batch * hidden;
    check_len(OP, "lengths", lengths.len(), batch)?;
    check_len(OP, "hs", saved.hs.len(), nd * (steps + 1) * bh)?;
    check_len(OP, "packed", packed.len(), packed_len(saved.cell, sz, nd))?;
    if let Some(cs) = &saved.cs {
        check_len(OP, "cs", cs.len(), nd * (steps + 1) * bh)?;
    }
    let y_len = steps * nd * bh;
    if y_len > 0 {
        let mut args = [
            KernelArg::u64(steps as u64),
            KernelArg::u64(batch as u64),
            KernelArg::u64(hidden as u64),
            KernelArg::u64(nd as u64),
            KernelArg::input(lengths),
            KernelArg::input(&saved.hs),
            KernelArg::output(packed),
            KernelArg::u64(0),
        ];
        // SAFETY: thread k < T·B·D·H reads lengths[b] (b < B = its length), hs[(d·(T + 1) + row)·B·H
        // + b·H + j] with d < D, row <= T (hs is [D, T + 1, B, H], checked) and writes y[k] with
        // k < T·B·D·H <= packed.len() (checked).
        unsafe { backend.launch("rnn_output_f32", launch_config(backend, y_len), &mut args)? };
    }
    for d in 0..nd {
        let f = end_row(steps, d, false) * bh;
        move_range_f32(backend, &saved.hs, f, bh, packed, y_len + d * bh)?;
        if let Some(cs) = &saved.cs {
            move_range_f32(backend, cs, f, bh, packed, y_len + (nd + d) * bh)?;
        }
    }
    Ok(())
}

/// Backward pass of a layer: `dpacked` is the gradient of the packed output
/// `[Y | h_n | c_n]`; `need_x` asks for the input gradient.
#[allow(clippy::too_many_arguments)]
pub fn rnn_layer_backward_f32(
    backend: &Backend,
    sz: SeqSizes,
    allow_tf32: bool,
    lengths: &DeviceBuffer<i64>,
    x: &DeviceBuffer<f32>,
    w: &LayerWeights<'_>,
    saved: &LayerSaved,
    dpacked: &DeviceBuffer<f32>,
    need_x: bool,
) -> Result<LayerGrads, CudaError> {
    const OP: &str = "cuda::rnn_seq::rnn_layer_backward_f32";
    let SeqSizes { steps, batch, input, hidden } = sz;
    let cell = saved.cell;
    check_weights(OP, cell, sz, w)?;
    let nd = w.dirs;
    if saved.dirs != nd {
        return shape_err(OP, format!("the weights have {nd} directions, the saved forward {}", saved.dirs));
    }
    let gw = cell.gates() * hidden;
    let (rows, bh) = (steps * batch, batch * hidden);
    check_len(OP, "lengths", lengths.len(), batch)?;
    check_len(OP, "x", x.len(), rows * input)?;
    check_len(OP, "hs", saved.hs.len(), nd * (steps + 1) * bh)?;
    check_len(OP, "saved gates", saved.gates.len(), nd * rows * 4 * hidden)?;
    check_len(OP, "dpacked", dpacked.len(), packed_len(cell, sz, nd))?;
    let y_len = steps * nd * bh;
    let mut dh = copy_range_f32(backend, dpacked, y_len, nd * bh)?;
    let mut dgi = backend.alloc::<f32>(nd * rows * gw)?;
    let mut dgh_gru = if cell == SeqCell::Gru { Some(backend.alloc::<f32>(nd * rows * gw)?) } else { None };
    let dy = Some(OutputGrad { buf: dpacked, stride: nd * hidden });
    let dy_off = |p: &DirStep, d: usize| p.t * batch * nd * hidden + d * hidden;
    // dh_d [B, H] += dg_d [B, G·H] · W_hh_d for the rows of step s, both directions at once.
    let recurrent_back = |dg: &DeviceBuffer<f32>, s: usize, dh: &mut DeviceBuffer<f32>| {
        let (d0, d1) = (dir_step(s, steps, 0), dir_step(s, steps, nd - 1));
        let cfg = GemmConfig {
            beta: 1.0,
            batch: nd,
            offset_a: d0.row * batch * gw,
            stride_a: (d1.row - d0.row) * batch * gw,
            stride_b: gw * hidden,
            stride_c: bh,
            allow_tf32,
            ..GemmConfig::dense(batch, hidden, gw)
        };
        gemm(backend, &cfg, dg, w.w_hh, dh)
    };
    let mut dc = None;
    match (cell, &saved.cs, &saved.tanh_c) {
        (SeqCell::Lstm, Some(cs), Some(tanh_c)) => {
            check_len(OP, "cs", cs.len(), nd * (steps + 1) * bh)?;
            check_len(OP, "tanh_c", tanh_c.len(), nd * rows * hidden)?;
            let mut dcv = copy_range_f32(backend, dpacked, y_len + nd * bh, nd * bh)?;
            for s in (0..steps).rev() {
                let rows_of = |d: usize| {
                    let p = dir_step(s, steps, d);
                    LstmBackRows {
                        t: p.t,
                        gates: p.row,
                        c_prev: p.prev,
                        tanh_c: p.row,
                        dgates: p.row,
                        dy: dy_off(&p, d),
                    }
                };
                let dirs: Vec<LstmBackRows> = (0..nd).map(rows_of).collect();
                lstm_step_backward_f32(
                    backend,
                    hidden,
                    lengths,
                    &dirs,
                    &saved.gates,
                    cs,
                    tanh_c,
                    dy,
                    &mut dh,
                    &mut dcv,
                    &mut dgi,
                )?;
                recurrent_back(&dgi, s, &mut dh)?;
            }
            dc = Some(dcv);
        }
        (SeqCell::Gru, _, _) => {
            let dgh = dgh_gru.as_mut().ok_or_else(|| CudaError::Shape { op: OP, message: "internal".into() })?;
            for s in (0..steps).rev() {
                let rows_of = |d: usize| {
                    let p = dir_step(s, steps, d);
                    GruBackRows { t: p.t, saved: p.row, h_prev: p.prev, dg: p.row, dy: dy_off(&p, d) }
                };
                let dirs: Vec<GruBackRows> = (0..nd).map(rows_of).collect();
                gru_step_backward_f32(
                    backend,
                    hidden,
                    lengths,
                    &dirs,
                    &saved.gates,
                    &saved.hs,
                    dy,
                    &mut dh,
                    &mut dgi,
                    dgh,
                )?;
                recurrent_back(dgh, s, &mut dh)?;
            }
        }
        _ => return shape_err(OP, "the LSTM backward needs the saved cell states".into()),
    }
    let dgh: &DeviceBuffer<f32> = dgh_gru.as_ref().unwrap_or(&dgi);
    // dW_hh_d [G·H, H] = dgh_dᵀ [G·H, T·B] · h_prev_d [T·B, H]: a direction's previous states
    // are one block, rows 0..T of direction 0, rows T + 2..2T + 2 of direction 1.
    let mut dw_hh = backend.zeros::<f32>(nd * gw * hidden)?;
    let cfg = GemmConfig {
        transa: true,
        lda: gw.max(1),
        batch: nd,
        stride_a: rows * gw,
        stride_b: (steps + 2) * bh,
        stride_c: gw * hidden,
        allow_tf32,
        ..GemmConfig::dense(gw, hidden, rows)
    };
    gemm(backend, &cfg, dgh, &saved.hs, &mut dw_hh)?;
    // dW_ih_d [G·H, I] = dgi_dᵀ · x.
    let mut dw_ih = backend.zeros::<f32>(nd * gw * input)?;
    let cfg = GemmConfig {
        transa: true,
        lda: gw.max(1),
        batch: nd,
        stride_a: rows * gw,
        stride_b: 0,
        stride_c: gw * input,
        allow_tf32,
        ..GemmConfig::dense(gw, input, rows)
    };
    gemm(backend, &cfg, &dgi, x, &mut dw_ih)?;
    let one = ones(backend, rows)?;
    let db_ih = bias_grads(backend, nd, (rows, gw), &one, &dgi)?;
    let db_hh = match &dgh_gru {
        Some(g) => bias_grads(backend, nd, (rows, gw), &one, g)?,
        None => backend.copy(&db_ih)?,
    };
    // dx [T·B, I] = Σ_d dgi_d [T·B, G·H] · W_ih_d [G·H, I].
    let dx = if need_x {
        let mut dx = backend.zeros::<f32>(rows * input)?;
        for d in 0..nd {
            let cfg = GemmConfig {
                beta: if d > 0 { 1.0 } else { 0.0 },
                offset_a: d * rows * gw,
                offset_b: d * gw * input,
                allow_tf32,
                ..GemmConfig::dense(rows, input, gw)
            };
            gemm(backend, &cfg, &dgi, w.w_ih, &mut dx)?;
        }
        Some(dx)
    } else {
        None
    };
    Ok(LayerGrads { dx, dw_ih, dw_hh, db_ih, db_hh, dh0: dh, dc0: dc })
}
