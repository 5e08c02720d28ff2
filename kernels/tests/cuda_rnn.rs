//! The recurrent gate kernels of `kernels/cuda/rnn.cu` against the Rust CPU kernels
//! (`stapes_kernels::cpu::rnn`), on the emulator (and on the GPU when one is present).
//!
//! * single steps of the LSTM and the GRU, forward and backward, on shapes around a warp, a
//!   block and more elements than the emulator's grid (so the grid-stride loop iterates), with
//!   padded rows (lengths shorter than the step, and 0), the operands at non-zero rows of
//!   time-major buffers, with and without `dy`, for one direction and for two directions in
//!   one launch (each with its own time index and rows);
//! * whole sequences: a multi-step LSTM and GRU forward and backward (both directions) where
//!   every GEMM runs on the CPU and every gate step in the emulated kernel, against the same
//!   loop with the CPU gate kernels: hidden outputs, final states and every gradient.

use stapes_kernels::cpu::rnn::{
    gemm_strided, gru_step_backward, gru_step_forward, lstm_step_backward, lstm_step_forward, Strided,
};
use stapes_kernels::cuda::emu::EmuSchedule;
use stapes_kernels::cuda::parity::{assert_close, backends, Tolerance};
use stapes_kernels::cuda::rnn::{self, GruBackRows, GruRows, LstmBackRows, LstmRows, OutputGrad, StateRows};
use stapes_kernels::cuda::Backend;

/// Deterministic values uniform in `[lo, hi)`.
fn values(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            lo + (hi - lo) * ((s >> 8) as f32 / (1u32 << 24) as f32)
        })
        .collect()
}

/// `(B, H)`: single rows, odd sizes, one block, and B·H = 2700 > the emulator's 2048-thread grid.
const STEP_SHAPES: &[(usize, usize)] = &[(1, 1), (3, 5), (7, 33), (2, 257), (4, 64), (9, 300)];

/// The time step the single-step tests run: rows with a length of at most `T_STEP` are padded.
const T_STEP: usize = 2;

fn lengths_for(b: usize) -> Vec<i64> {
    // 0 (never active), T_STEP (just ended), longer ones
    (0..b).map(|i| [5i64, 2, 0, 3, 7][i % 5]).collect()
}

fn f32_tol() -> Tolerance {
    Tolerance::for_dtype::<f32>()
}

/// Rows `row` of width `w` of a host buffer.
fn row(v: &[f32], r: usize, w: usize) -> &[f32] {
    &v[r * w..(r + 1) * w]
}

/// Direction `d`'s time index in the single-step tests: the two directions of a launch see
/// different padding.
fn t_step(d: usize) -> usize {
    T_STEP + d
}

fn check_lstm_step(backend: &Backend, bsz: usize, hd: usize, nd: usize) {
    let bh = bsz * hd;
    let lengths = lengths_for(bsz);
    let active = |d: usize| -> Vec<bool> { lengths.iter().map(|&l| (t_step(d) as i64) < l).collect() };
    let ctx = |what: &str| format!("LSTM step {what} [D={nd}, B={bsz}, H={hd}] on the {}", backend.describe());
    // Per direction d: gates 3 rows [3, B, 4H] (the step in row 1), states [3, B, H] (prev row 2,
    // next row 0), tanh_c [2, B, H] (row 1); direction d's rows follow direction d - 1's.
    let gates0 = values(nd * 3 * 4 * bh, 1, -3.0, 3.0);
    let c0 = values(nd * 3 * bh, 2, -2.0, 2.0);
    let h0 = values(nd * 3 * bh, 3, -1.0, 1.0);
    let tanh0 = values(nd * 2 * bh, 4, -1.0, 1.0);
    let fwd_rows = |d: usize| LstmRows {
        t: t_step(d),
        gates: 3 * d + 1,
        state: StateRows { prev: 3 * d + 2, next: 3 * d },
        tanh_c: 2 * d + 1,
    };
    // CPU, direction by direction
    let mut g_cpu = gates0.clone();
    let (mut c_cpu, mut h_cpu, mut tc_cpu) = (c0.clone(), h0.clone(), tanh0.clone());
    for d in 0..nd {
        let r = fwd_rows(d);
        let (cp, hp) = (row(&c_cpu, r.state.prev, bh).to_vec(), row(&h_cpu, r.state.prev, bh).to_vec());
        let n = r.state.next * bh..(r.state.next + 1) * bh;
        lstm_step_forward(
            hd,
            &active(d),
            &mut g_cpu[r.gates * 4 * bh..(r.gates + 1) * 4 * bh],
            &cp,
            &hp,
            &mut c_cpu[n.clone()],
            &mut h_cpu[n],
            &mut tc_cpu[r.tanh_c * bh..(r.tanh_c + 1) * bh],
        );
    }
    // device, all directions in one launch
    let d_len = backend.upload(&lengths).unwrap();
    let mut d_g = backend.upload(&gates0).unwrap();
    let (mut d_c, mut d_h, mut d_tc) =
        (backend.upload(&c0).unwrap(), backend.upload(&h0).unwrap(), backend.upload(&tanh0).unwrap());
    let dirs: Vec<LstmRows> = (0..nd).map(fwd_rows).collect();
    rnn::lstm_step_forward_f32(backend, hd, &d_len, &dirs, &mut d_g, &mut d_c, &mut d_h, &mut d_tc).unwrap();
    assert_close(&backend.download(&d_g).unwrap(), &g_cpu, f32_tol(), &ctx("forward gates"));
    assert_close(&backend.download(&d_c).unwrap(), &c_cpu, f32_tol(), &ctx("forward c"));
    assert_close(&backend.download(&d_h).unwrap(), &h_cpu, f32_tol(), &ctx("forward h"));
    assert_close(&backend.download(&d_tc).unwrap(), &tc_cpu, f32_tol(), &ctx("forward tanh_c"));

    // backward from the CPU's saved values (so both sides see the same inputs); dy is the
    // layer output [4, B, 2H]: direction d's columns d·H.., at its time step
    let dy = values(4 * bsz * 2 * hd, 5, -1.0, 1.0);
    let dy_off = |d: usize| t_step(d) * bsz * 2 * hd + d * hd;
    let back_rows = |d: usize| {
        let f = fwd_rows(d);
        LstmBackRows {
            t: f.t,
            gates: f.gates,
            c_prev: f.state.prev,
            tanh_c: f.tanh_c,
            dgates: 2 * d + 1,
            dy: dy_off(d),
        }
    };
    let d_dy = backend.upload(&dy).unwrap();
    let d_gs = backend.upload(&g_cpu).unwrap();
    let d_cs = backend.upload(&c_cpu).unwrap();
    let d_tcs = backend.upload(&tc_cpu).unwrap();
    for with_dy in [true, false] {
        let dh0 = values(nd * bh, 6, -1.0, 1.0);
        let dc0 = values(nd * bh, 7, -1.0, 1.0);
        let dg0 = values(nd * 2 * 4 * bh, 8, -1.0, 1.0);
        let (mut dh, mut dc, mut dg) = (dh0.clone(), dc0.clone(), dg0.clone());
        for d in 0..nd {
            let r = back_rows(d);
            let dy_cpu = with_dy.then(|| (&dy[r.dy..], 2 * hd));
            lstm_step_backward(
                hd,
                &active(d),
                row(&g_cpu, r.gates, 4 * bh),
                row(&c_cpu, r.c_prev, bh),
                row(&tc_cpu, r.tanh_c, bh),
                dy_cpu,
                &mut dh[d * bh..(d + 1) * bh],
                &mut dc[d * bh..(d + 1) * bh],
                &mut dg[r.dgates * 4 * bh..(r.dgates + 1) * 4 * bh],
            );
        }
        let (mut d_dh, mut d_dc, mut d_dg) =
            (backend.upload(&dh0).unwrap(), backend.upload(&dc0).unwrap(), backend.upload(&dg0).unwrap());
        let dy_dev = with_dy.then_some(OutputGrad { buf: &d_dy, stride: 2 * hd });
        let dirs: Vec<LstmBackRows> = (0..nd).map(back_rows).collect();
        rnn::lstm_step_backward_f32(
            backend, hd, &d_len, &dirs, &d_gs, &d_cs, &d_tcs, dy_dev, &mut d_dh, &mut d_dc, &mut d_dg,
        )
        .unwrap();
        let w = if with_dy { "backward (dy)" } else { "backward (no dy)" };
        assert_close(&backend.download(&d_dg).unwrap(), &dg, f32_tol(), &ctx(&format!("{w} dgates")));
        assert_close(&backend.download(&d_dh).unwrap(), &dh, f32_tol(), &ctx(&format!("{w} dh")));
        assert_close(&backend.download(&d_dc).unwrap(), &dc, f32_tol(), &ctx(&format!("{w} dc")));
    }
}

fn check_gru_step(backend: &Backend, bsz: usize, hd: usize, nd: usize) {
    let bh = bsz * hd;
    let lengths = lengths_for(bsz);
    let active = |d: usize| -> Vec<bool> { lengths.iter().map(|&l| (t_step(d) as i64) < l).collect() };
    let ctx = |what: &str| format!("GRU step {what} [D={nd}, B={bsz}, H={hd}] on the {}", backend.describe());
    // Per direction d: gi in row 2 of [3, B, 3H], gh row 0 of [1, B, 3H], saved row 1 of
    // [2, B, 4H], states [2, B, H] with prev row 0 and next row 1 (direction d's rows after d - 1's)
    let gi = values(nd * 3 * 3 * bh, 11, -3.0, 3.0);
    let gh = values(nd * 3 * bh, 12, -3.0, 3.0);
    let saved0 = values(nd * 2 * 4 * bh, 13, -1.0, 1.0);
    let h0 = values(nd * 2 * bh, 14, -1.0, 1.0);
    let fwd_rows = |d: usize| GruRows {
        t: t_step(d),
        gi: 3 * d + 2,
        gh: d,
        saved: 2 * d + 1,
        state: StateRows { prev: 2 * d, next: 2 * d + 1 },
    };
    let mut saved = saved0.clone();
    let mut h = h0.clone();
    for d in 0..nd {
        let r = fwd_rows(d);
        let hp = row(&h, r.state.prev, bh).to_vec();
        gru_step_forward(
            hd,
            &active(d),
            row(&gi, r.gi, 3 * bh),
            row(&gh, r.gh, 3 * bh),
            &mut saved[r.saved * 4 * bh..(r.saved + 1) * 4 * bh],
            &hp,
            &mut h[r.state.next * bh..(r.state.next + 1) * bh],
        );
    }
    let d_len = backend.upload(&lengths).unwrap();
    let (d_gi, d_gh) = (backend.upload(&gi).unwrap(), backend.upload(&gh).unwrap());
    let (mut d_s, mut d_h) = (backend.upload(&saved0).unwrap(), backend.upload(&h0).unwrap());
    let dirs: Vec<GruRows> = (0..nd).map(fwd_rows).collect();
    rnn::gru_step_forward_f32(backend, hd, &d_len, &dirs, &d_gi, &d_gh, &mut d_s, &mut d_h).unwrap();
    assert_close(&backend.download(&d_s).unwrap(), &saved, f32_tol(), &ctx("forward saved"));
    assert_close(&backend.download(&d_h).unwrap(), &h, f32_tol(), &ctx("forward h"));

    // dy: direction d's rows at offset 3 + d·H with a row stride of D·H
    let dy = values(3 + bsz * nd * hd, 15, -1.0, 1.0);
    let d_dy = backend.upload(&dy).unwrap();
    let back_rows = |d: usize| {
        let f = fwd_rows(d);
        GruBackRows { t: f.t, saved: f.saved, h_prev: f.state.prev, dg: d, dy: 3 + d * hd }
    };
    let (d_ss, d_hs) = (backend.upload(&saved).unwrap(), backend.upload(&h).unwrap());
    for with_dy in [true, false] {
        let dh0 = values(nd * bh, 16, -1.0, 1.0);
        let dgi0 = values(nd * 3 * bh, 17, -1.0, 1.0);
        let dgh0 = values(nd * 3 * bh, 18, -1.0, 1.0);
        let (mut dh, mut dgi, mut dgh) = (dh0.clone(), dgi0.clone(), dgh0.clone());
        for d in 0..nd {
            let r = back_rows(d);
            let dy_cpu = with_dy.then(|| (&dy[r.dy..], nd * hd));
            let g = r.dg * 3 * bh..(r.dg + 1) * 3 * bh;
            gru_step_backward(
                hd,
                &active(d),
                row(&saved, r.saved, 4 * bh),
                row(&h, r.h_prev, bh),
                dy_cpu,
                &mut dh[d * bh..(d + 1) * bh],
                &mut dgi[g.clone()],
                &mut dgh[g],
            );
        }
        let (mut d_dh, mut d_dgi, mut d_dgh) =
            (backend.upload(&dh0).unwrap(), backend.upload(&dgi0).unwrap(), backend.upload(&dgh0).unwrap());
        let dy_dev = with_dy.then_some(OutputGrad { buf: &d_dy, stride: nd * hd });
        let dirs: Vec<GruBackRows> = (0..nd).map(back_rows).collect();
        rnn::gru_step_backward_f32(backend, hd, &d_len, &dirs, &d_ss, &d_hs, dy_dev, &mut d_dh, &mut d_dgi, &mut d_dgh)
            .unwrap();
        let w = if with_dy { "backward (dy)" } else { "backward (no dy)" };
        assert_close(&backend.download(&d_dgi).unwrap(), &dgi, f32_tol(), &ctx(&format!("{w} dgi")));
        assert_close(&backend.download(&d_dgh).unwrap(), &dgh, f32_tol(), &ctx(&format!("{w} dgh")));
        assert_close(&backend.download(&d_dh).unwrap(), &dh, f32_tol(), &ctx(&format!("{w} dh")));
    }
}

#[test]
fn lstm_step_matches_cpu() {
    for backend in backends() {
        for &(b, h) in STEP_SHAPES {
            for nd in [1, 2] {
                check_lstm_step(&backend, b, h, nd);
            }
        }
    }
}

#[test]
fn gru_step_matches_cpu() {
    for backend in backends() {
        for &(b, h) in STEP_SHAPES {
            for nd in [1, 2] {
                check_gru_step(&backend, b, h, nd);
            }
        }
    }
}

#[test]
fn rnn_step_shapes_are_checked() {
    let backend = Backend::emulator();
    let d_len = backend.upload(&[3i64, 1]).unwrap();
    let mut g = backend.zeros::<f32>(2 * 4 * 5).unwrap();
    let (mut c, mut h, mut tc) =
        (backend.zeros::<f32>(2 * 5).unwrap(), backend.zeros::<f32>(2 * 2 * 5).unwrap(), backend.zeros(10).unwrap());
    let rows = LstmRows { t: 0, gates: 0, state: StateRows { prev: 0, next: 1 }, tanh_c: 0 };
    let e = rnn::lstm_step_forward_f32(&backend, 5, &d_len, &[rows], &mut g, &mut c, &mut h, &mut tc).unwrap_err();
    assert!(e.to_string().contains("c (next state) row 1"), "{e}");
    let rows1 = LstmRows { gates: 1, ..rows };
    let e = rnn::lstm_step_forward_f32(&backend, 5, &d_len, &[rows1], &mut g, &mut h, &mut c, &mut tc).unwrap_err();
    assert!(e.to_string().contains("gates row 1"), "{e}");
    // the second direction's rows are checked too, and at most two directions run
    let ok = LstmRows { state: StateRows { prev: 0, next: 0 }, ..rows };
    let e = rnn::lstm_step_forward_f32(&backend, 5, &d_len, &[ok, rows1], &mut g, &mut h, &mut c, &mut tc).unwrap_err();
    assert!(e.to_string().contains("gates row 1"), "{e}");
    let e = rnn::lstm_step_forward_f32(&backend, 5, &d_len, &[ok; 3], &mut g, &mut h, &mut c, &mut tc).unwrap_err();
    assert!(e.to_string().contains("1 or 2 directions, not 3"), "{e}");
    let e = rnn::lstm_step_forward_f32(&backend, 5, &d_len, &[], &mut g, &mut h, &mut c, &mut tc).unwrap_err();
    assert!(e.to_string().contains("not 0"), "{e}");
    // the running gradients are [D, B, H]
    let mut dh = backend.zeros::<f32>(5).unwrap();
    let mut dc = backend.zeros::<f32>(2 * 5).unwrap();
    let back = LstmBackRows { t: 0, gates: 0, c_prev: 0, tanh_c: 0, dgates: 0, dy: 0 };
    let mut dg = backend.copy(&g).unwrap();
    let e = rnn::lstm_step_backward_f32(&backend, 5, &d_len, &[back], &g, &h, &tc, None, &mut dh, &mut dc, &mut dg)
        .unwrap_err();
    assert!(e.to_string().contains("dh has 5 elements"), "{e}");
}

// ------------------------------------------------------------------------------------------
// Whole sequences: CPU GEMMs + CPU gate kernels against CPU GEMMs + emulated gate kernels
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// One direction of one layer: sizes, weights, inputs.
struct Problem {
    cell: Cell,
    steps: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    reverse: bool,
    lengths: Vec<usize>,
    x: Vec<f32>,    // [T, B, I]
    w_ih: Vec<f32>, // [G·H, I]
    w_hh: Vec<f32>, // [G·H, H]
    b_ih: Vec<f32>, // [G·H]
    b_hh: Vec<f32>, // [G·H]
    h0: Vec<f32>,   // [B, H]
    c0: Vec<f32>,   // [B, H]
    dy: Vec<f32>,   // [T, B, H]
    dh_n: Vec<f32>, // [B, H]
    dc_n: Vec<f32>, // [B, H]
}

impl Problem {
    fn new(cell: Cell, sizes: (usize, usize, usize, usize), reverse: bool) -> Self {
        Problem::with_seed(cell, sizes, reverse, 0)
    }

    /// Weights and data drawn with `seed` added to every generator's seed.
    fn with_seed(
        cell: Cell,
        (steps, batch, input, hidden): (usize, usize, usize, usize),
        reverse: bool,
        seed: u32,
    ) -> Self {
        let gh = cell.gates() * hidden;
        let values = |n: usize, s: u32, lo: f32, hi: f32| values(n, s + seed, lo, hi);
        let scale = 1.0 / (hidden as f32).sqrt();
        let lengths = (0..batch).map(|b| [steps, steps - 1, 1, steps, 0, steps / 2][b % 6]).collect();
        Problem {
            cell,
            steps,
            batch,
            input,
            hidden,
            reverse,
            lengths,
            x: values(steps * batch * input, 21, -1.0, 1.0),
            w_ih: values(gh * input, 22, -scale, scale),
            w_hh: values(gh * hidden, 23, -scale, scale),
            b_ih: values(gh, 24, -scale, scale),
            b_hh: values(gh, 25, -scale, scale),
            h0: values(batch * hidden, 26, -0.5, 0.5),
            c0: values(batch * hidden, 27, -0.5, 0.5),
            dy: values(steps * batch * hidden, 28, -1.0, 1.0),
            dh_n: values(batch * hidden, 29, -1.0, 1.0),
            dc_n: values(batch * hidden, 30, -1.0, 1.0),
        }
    }

    /// Time index of processing step `s` and the state rows before/after it (the driver's
    /// layout: the state before time t is row t forward, row t + 1 in reverse).
    fn step_rows(&self, s: usize) -> (usize, usize, usize) {
        if self.reverse {
            let t = self.steps - 1 - s;
            (t, t + 1, t)
        } else {
            (s, s, s + 1)
        }
    }

    fn active(&self, t: usize) -> Vec<bool> {
        self.lengths.iter().map(|&l| t < l).collect()
    }

    fn gw(&self) -> usize {
        self.cell.gates() * self.hidden
    }

    /// `x W_ihᵀ + b_ih (+ b_hh for the LSTM)`, `[T·B, G·H]`.
    fn input_projection(&self) -> Vec<f32> {
        let gw = self.gw();
        let mut bias = self.b_ih.clone();
        if self.cell == Cell::Lstm {
            bias.iter_mut().zip(&self.b_hh).for_each(|(a, b)| *a += b);
        }
        let mut proj: Vec<f32> = (0..self.steps * self.batch).flat_map(|_| bias.iter().copied()).collect();
        let rows = self.steps * self.batch;
        let (i, wl) = (self.input, Strided::rows(0, self.input).t());
        gemm_strided(
            rows,
            gw,
            i,
            &mut proj,
            Strided::rows(0, gw),
            true,
            &self.x,
            Strided::rows(0, i),
            &self.w_ih,
            wl,
            1,
        );
        proj
    }

    /// `dst [B, G·H] (+)= h [B, H] W_hhᵀ` with h at row `p` of `hs`.
    fn recurrent(&self, dst: &mut [f32], hs: &[f32], p: usize) {
        let (gw, hd, bh) = (self.gw(), self.hidden, self.batch * self.hidden);
        let wt = Strided::rows(0, hd).t();
        let hl = Strided::rows(p * bh, hd);
        gemm_strided(self.batch, gw, hd, dst, Strided::rows(0, gw), true, hs, hl, &self.w_hh, wt, 1);
    }

    /// `dh [B, H] += dg [B, G·H] W_hh`.
    fn recurrent_back(&self, dh: &mut [f32], dg: &[f32]) {
        let (gw, hd) = (self.gw(), self.hidden);
        let (dl, wl) = (Strided::rows(0, gw), Strided::rows(0, hd));
        gemm_strided(self.batch, hd, gw, dh, Strided::rows(0, hd), true, dg, dl, &self.w_hh, wl, 1);
    }

    /// The weight and input gradients from the per-step gate gradients (`dgi`, `dgh`
    /// `[T·B, G·H]`) and the saved states: `dW_ih`, `dW_hh`, `db_ih`, `db_hh`, `dx`.
    fn param_grads(&self, dgi: &[f32], dgh: &[f32], hs: &[f32]) -> [Vec<f32>; 5] {
        let (gw, hd, i, bh) = (self.gw(), self.hidden, self.input, self.batch * self.hidden);
        let rows = self.steps * self.batch;
        let prev_off = if self.reverse { bh } else { 0 };
        let mut dw_hh = vec![0.0f32; gw * hd];
        let g_t = Strided::rows(0, gw).t();
        gemm_strided(
            gw,
            hd,
            rows,
            &mut dw_hh,
            Strided::rows(0, hd),
            false,
            dgh,
            g_t,
            hs,
            Strided::rows(prev_off, hd),
            1,
        );
        let mut dw_ih = vec![0.0f32; gw * i];
        gemm_strided(gw, i, rows, &mut dw_ih, Strided::rows(0, i), false, dgi, g_t, &self.x, Strided::rows(0, i), 1);
        let col_sums = |m: &[f32]| {
            let mut out = vec![0.0f32; gw];
            for r in m.chunks_exact(gw) {
                out.iter_mut().zip(r).for_each(|(o, v)| *o += v);
            }
            out
        };
        let mut dx = vec![0.0f32; rows * i];
        gemm_strided(
            rows,
            i,
            gw,
            &mut dx,
            Strided::rows(0, i),
            false,
            dgi,
            Strided::rows(0, gw),
            &self.w_ih,
            Strided::rows(0, i),
            1,
        );
        [dw_ih, dw_hh, col_sums(dgi), col_sums(dgh), dx]
    }
}

/// Everything a sequence run produces, for comparison.
struct SeqResult {
    /// LSTM: the saved gate activations `[T, B, 4H]`; GRU: empty.
    gates: Vec<f32>,
    /// LSTM: `tanh(c_t)` `[T, B, H]`; GRU: empty.
    tanh_c: Vec<f32>,
    hs: Vec<f32>,
    cs: Vec<f32>,
    dh0: Vec<f32>,
    dc0: Vec<f32>,
    grads: [Vec<f32>; 5],
}

/// The all-CPU path (the structure of `nn/src/rnn/driver.rs`, one direction).
fn run_cpu(p: &Problem) -> SeqResult {
    let (t_n, bh, gw) = (p.steps, p.batch * p.hidden, p.gw());
    let mut proj = p.input_projection();
    let mut hs = vec![0.0f32; (t_n + 1) * bh];
    let mut cs = vec![0.0f32; (t_n + 1) * bh];
    let start = if p.reverse { t_n } else { 0 };
    hs[start * bh..(start + 1) * bh].copy_from_slice(&p.h0);
    cs[start * bh..(start + 1) * bh].copy_from_slice(&p.c0);
    let mut tanh_c = vec![0.0f32; t_n * bh];
    let mut saved = vec![0.0f32; t_n * p.batch * 4 * p.hidden];
    let bg = p.batch * gw;
    for s in 0..t_n {
        let (t, pr, q) = p.step_rows(s);
        let active = p.active(t);
        match p.cell {
            Cell::Lstm => {
                let mut g = proj[t * bg..(t + 1) * bg].to_vec();
                p.recurrent(&mut g, &hs, pr);
                let (hp, cp) = (hs[pr * bh..(pr + 1) * bh].to_vec(), cs[pr * bh..(pr + 1) * bh].to_vec());
                let (mut hn, mut cn) = (vec![0.0; bh], vec![0.0; bh]);
                lstm_step_forward(
                    p.hidden,
                    &active,
                    &mut g,
                    &cp,
                    &hp,
                    &mut cn,
                    &mut hn,
                    &mut tanh_c[t * bh..(t + 1) * bh],
                );
                proj[t * bg..(t + 1) * bg].copy_from_slice(&g);
                hs[q * bh..(q + 1) * bh].copy_from_slice(&hn);
                cs[q * bh..(q + 1) * bh].copy_from_slice(&cn);
            }
            Cell::Gru => {
                let mut gh: Vec<f32> = (0..p.batch).flat_map(|_| p.b_hh.iter().copied()).collect();
                p.recurrent(&mut gh, &hs, pr);
                let hp = hs[pr * bh..(pr + 1) * bh].to_vec();
                let mut hn = vec![0.0; bh];
                let sv = &mut saved[t * 4 * bh..(t + 1) * 4 * bh];
                gru_step_forward(p.hidden, &active, &proj[t * bg..(t + 1) * bg], &gh, sv, &hp, &mut hn);
                hs[q * bh..(q + 1) * bh].copy_from_slice(&hn);
            }
        }
    }
    // backward
    let (mut dh, mut dc) = (p.dh_n.clone(), p.dc_n.clone());
    let mut dgi = vec![0.0f32; t_n * bg];
    let mut dgh = vec![0.0f32; t_n * bg];
    for s in (0..t_n).rev() {
        let (t, pr, _) = p.step_rows(s);
        let active = p.active(t);
        let dyt = Some((&p.dy[t * bh..], p.hidden));
        let rows = t * bg..(t + 1) * bg;
        match p.cell {
            Cell::Lstm => {
                let cp = &cs[pr * bh..(pr + 1) * bh];
                let tc = &tanh_c[t * bh..(t + 1) * bh];
                lstm_step_backward(
                    p.hidden,
                    &active,
                    &proj[rows.clone()],
                    cp,
                    tc,
                    dyt,
                    &mut dh,
                    &mut dc,
                    &mut dgi[rows.clone()],
                );
                dgh[rows.clone()].copy_from_slice(&dgi[rows.clone()]);
            }
            Cell::Gru => {
                let sv = &saved[t * 4 * bh..(t + 1) * 4 * bh];
                let hp = &hs[pr * bh..(pr + 1) * bh];
                gru_step_backward(
                    p.hidden,
                    &active,
                    sv,
                    hp,
                    dyt,
                    &mut dh,
                    &mut dgi[rows.clone()],
                    &mut dgh[rows.clone()],
                );
            }
        }
        p.recurrent_back(&mut dh, &dgh[rows]);
    }
    let grads = p.param_grads(&dgi, &dgh, &hs);
    let gates = if p.cell == Cell::Lstm { proj } else { Vec::new() };
    SeqResult { gates, tanh_c, hs, cs, dh0: dh, dc0: dc, grads }
}

/// The same loop with every gate step in the emulated (or GPU) kernel: the GEMMs run on the
/// host between kernel launches, on buffers copied back and forth (a GPU driver would run them
/// with cuBLAS on the device instead). The time-major buffers stay on the device, and each
/// launch addresses its step's rows in them.
fn run_device(backend: &Backend, p: &Problem) -> SeqResult {
    let (t_n, bh, gw) = (p.steps, p.batch * p.hidden, p.gw());
    let bg = p.batch * gw;
    let proj = p.input_projection();
    let lengths: Vec<i64> = p.lengths.iter().map(|&l| l as i64).collect();
    let d_len = backend.upload(&lengths).unwrap();
    let mut hs = vec![0.0f32; (t_n + 1) * bh];
    let mut cs = vec![0.0f32; (t_n + 1) * bh];
    let start = if p.reverse { t_n } else { 0 };
    hs[start * bh..(start + 1) * bh].copy_from_slice(&p.h0);
    cs[start * bh..(start + 1) * bh].copy_from_slice(&p.c0);
    let mut d_hs = backend.upload(&hs).unwrap();
    let mut d_cs = backend.upload(&cs).unwrap();
    let mut d_tanh = backend.zeros::<f32>(t_n * bh).unwrap();
    let mut d_saved = backend.zeros::<f32>(t_n * 4 * bh).unwrap(); // LSTM: gates, GRU: saved
    let mut host_gates = proj.clone();
    let d_gi = backend.upload(&proj).unwrap();
    let mut d_gh = backend.zeros::<f32>(bg).unwrap();
    for s in 0..t_n {
        let (t, pr, q) = p.step_rows(s);
        let state = StateRows { prev: pr, next: q };
        let hs_now = backend.download(&d_hs).unwrap();
        match p.cell {
            Cell::Lstm => {
                // pre-activations of row t = projection + h_{t-1} W_hhᵀ (host GEMM), then the kernel
                // turns row t of the device gates buffer into activations
                p.recurrent(&mut host_gates[t * bg..(t + 1) * bg], &hs_now, pr);
                let mut d_gates = backend.upload(&host_gates).unwrap();
                let rows = LstmRows { t, gates: t, state, tanh_c: t };
                rnn::lstm_step_forward_f32(
                    backend,
                    p.hidden,
                    &d_len,
                    &[rows],
                    &mut d_gates,
                    &mut d_cs,
                    &mut d_hs,
                    &mut d_tanh,
                )
                .unwrap();
                host_gates = backend.download(&d_gates).unwrap();
            }
            Cell::Gru => {
                let mut gh: Vec<f32> = (0..p.batch).flat_map(|_| p.b_hh.iter().copied()).collect();
                p.recurrent(&mut gh, &hs_now, pr);
                d_gh = backend.upload(&gh).unwrap();
                let rows = GruRows { t, gi: t, gh: 0, saved: t, state };
                rnn::gru_step_forward_f32(backend, p.hidden, &d_len, &[rows], &d_gi, &d_gh, &mut d_saved, &mut d_hs)
                    .unwrap();
            }
        }
    }
    let _ = d_gh;
    let d_gates = backend.upload(&host_gates).unwrap();
    let d_dy = backend.upload(&p.dy).unwrap();
    let mut d_dh = backend.upload(&p.dh_n).unwrap();
    let mut d_dc = backend.upload(&p.dc_n).unwrap();
    let mut d_dgi = backend.zeros::<f32>(t_n * bg).unwrap();
    let mut d_dgh = backend.zeros::<f32>(t_n * bg).unwrap();
    for s in (0..t_n).rev() {
        let (t, pr, _) = p.step_rows(s);
        let dy = Some(OutputGrad { buf: &d_dy, stride: p.hidden });
        match p.cell {
            Cell::Lstm => {
                let rows = LstmBackRows { t, gates: t, c_prev: pr, tanh_c: t, dgates: t, dy: t * bh };
                rnn::lstm_step_backward_f32(
                    backend,
                    p.hidden,
                    &d_len,
                    &[rows],
                    &d_gates,
                    &d_cs,
                    &d_tanh,
                    dy,
                    &mut d_dh,
                    &mut d_dc,
                    &mut d_dgi,
                )
                .unwrap()
            }
            Cell::Gru => {
                let rows = GruBackRows { t, saved: t, h_prev: pr, dg: t, dy: t * bh };
                rnn::gru_step_backward_f32(
                    backend,
                    p.hidden,
                    &d_len,
                    &[rows],
                    &d_saved,
                    &d_hs,
                    dy,
                    &mut d_dh,
                    &mut d_dgi,
                    &mut d_dgh,
                )
                .unwrap()
            }
        }
        let dg_all = backend.download(if p.cell == Cell::Lstm { &d_dgi } else { &d_dgh }).unwrap();
        let mut dh = backend.download(&d_dh).unwrap();
        p.recurrent_back(&mut dh, &dg_all[t * bg..(t + 1) * bg]);
        d_dh = backend.upload(&dh).unwrap();
    }
    let dgi = backend.download(&d_dgi).unwrap();
    let dgh = if p.cell == Cell::Lstm { dgi.clone() } else { backend.download(&d_dgh).unwrap() };
    let hs = backend.download(&d_hs).unwrap();
    let grads = p.param_grads(&dgi, &dgh, &hs);
    SeqResult {
        gates: host_gates,
        tanh_c: backend.download(&d_tanh).unwrap(),
        hs,
        cs: backend.download(&d_cs).unwrap(),
        dh0: backend.download(&d_dh).unwrap(),
        dc0: backend.download(&d_dc).unwrap(),
        grads,
    }
}

fn check_sequence(backend: &Backend, cell: Cell, sizes: (usize, usize, usize, usize), reverse: bool) {
    let p = Problem::new(cell, sizes, reverse);
    let want = run_cpu(&p);
    let got = run_device(backend, &p);
    let ctx = |what: &str| {
        format!("{cell:?} sequence {what}, [T, B, I, H] = {sizes:?}, reverse {reverse}, on the {}", backend.describe())
    };
    // The gate kernels differ from the CPU's in the last bits of their activations (libm vs
    // polynomial); over several steps and through the GEMMs that stays within a few f32 ulps
    // of values of order 1: a relative 1e-5 and an absolute 1e-5.
    let tol = Tolerance::new(1e-5, 1e-5);
    assert_close(&got.hs, &want.hs, tol, &ctx("hidden states"));
    if cell == Cell::Lstm {
        assert_close(&got.gates, &want.gates, tol, &ctx("gate activations"));
        assert_close(&got.tanh_c, &want.tanh_c, tol, &ctx("tanh(c)"));
        assert_close(&got.cs, &want.cs, tol, &ctx("cell states"));
        assert_close(&got.dc0, &want.dc0, tol, &ctx("dc0"));
    }
    assert_close(&got.dh0, &want.dh0, tol, &ctx("dh0"));
    for (name, (g, w)) in ["dW_ih", "dW_hh", "db_ih", "db_hh", "dx"].iter().zip(got.grads.iter().zip(&want.grads)) {
        assert_close(g, w, tol, &ctx(name));
    }
}

/// `(T, B, I, H)`: a small odd case, and one with B·H = 2 · 1050 > the emulator's grid.
const SEQ_SIZES: &[(usize, usize, usize, usize)] = &[(6, 7, 5, 37), (3, 2, 4, 1050)];

#[test]
fn lstm_sequence_matches_cpu() {
    for backend in backends() {
        for &sizes in SEQ_SIZES {
            for reverse in [false, true] {
                check_sequence(&backend, Cell::Lstm, sizes, reverse);
            }
        }
    }
}

#[test]
fn gru_sequence_matches_cpu() {
    for backend in backends() {
        for &sizes in SEQ_SIZES {
            for reverse in [false, true] {
                check_sequence(&backend, Cell::Gru, sizes, reverse);
            }
        }
    }
}

/// The step kernels have no barriers, but a random schedule must not change anything either.
#[test]
fn rnn_steps_match_cpu_with_random_schedule() {
    let backend = Backend::emulator_with(EmuSchedule::random(0x7a7e));
    for &(b, h) in &STEP_SHAPES[..4] {
        check_lstm_step(&backend, b, h, 2);
        check_gru_step(&backend, b, h, 2);
    }
    check_sequence(&backend, Cell::Lstm, SEQ_SIZES[0], true);
}

// ------------------------------------------------------------------------------------------
// The persistent LSTM forward: one launch for the whole sequence and both directions
// ------------------------------------------------------------------------------------------

fn check_persistent(backend: &Backend, sizes: (usize, usize, usize, usize), directions: usize) {
    let probs: Vec<Problem> =
        (0..directions).map(|d| Problem::with_seed(Cell::Lstm, sizes, d == 1, 100 * d as u32)).collect();
    let want: Vec<SeqResult> = probs.iter().map(run_cpu).collect();
    let cat = |f: &dyn Fn(&Problem) -> Vec<f32>| probs.iter().flat_map(f).collect::<Vec<f32>>();
    let (steps, batch, _, hidden) = sizes;
    let bh = batch * hidden;
    let lengths: Vec<i64> = probs[0].lengths.iter().map(|&l| l as i64).collect();
    let d_len = backend.upload(&lengths).unwrap();
    let mut d_gates = backend.upload(&cat(&|p| p.input_projection())).unwrap();
    let d_w = backend.upload(&cat(&|p| p.w_hh.clone())).unwrap();
    let d_h0 = backend.upload(&cat(&|p| p.h0.clone())).unwrap();
    let d_c0 = backend.upload(&cat(&|p| p.c0.clone())).unwrap();
    let state_len = directions * (steps + 1) * bh;
    let mut d_hs = backend.upload(&vec![f32::NAN; state_len]).unwrap();
    let mut d_cs = backend.upload(&vec![f32::NAN; state_len]).unwrap();
    let mut d_tc = backend.upload(&vec![f32::NAN; directions * steps * bh]).unwrap();
    rnn::lstm_forward_persistent_f32(
        backend,
        steps,
        hidden,
        directions,
        &d_len,
        &mut d_gates,
        &d_w,
        &d_h0,
        &d_c0,
        &mut d_hs,
        &mut d_cs,
        &mut d_tc,
    )
    .unwrap();
    let got = [&d_gates, &d_tc, &d_hs, &d_cs].map(|b| backend.download(b).unwrap());
    // the recurrent products are dot products in k order here, gemm's order on the CPU: the
    // same few-ulp tolerance as the step-by-step sequence test
    let tol = Tolerance::new(1e-5, 1e-5);
    for (d, w) in want.iter().enumerate() {
        let ctx = |what: &str| {
            format!(
                "persistent LSTM {what}, direction {d} of {directions}, [T, B, I, H] = {sizes:?}, on the {}",
                backend.describe()
            )
        };
        let part = |v: &[f32], n: usize| v[d * n..(d + 1) * n].to_vec();
        assert_close(&part(&got[0], steps * 4 * bh), &w.gates, tol, &ctx("gate activations"));
        assert_close(&part(&got[1], steps * bh), &w.tanh_c, tol, &ctx("tanh(c)"));
        assert_close(&part(&got[2], (steps + 1) * bh), &w.hs, tol, &ctx("hidden states"));
        assert_close(&part(&got[3], (steps + 1) * bh), &w.cs, tol, &ctx("cell states"));
    }
}

/// `(T, B, I, H)`: B·4H = 1036 > the block's 256 threads (threads loop), H = 1, one row.
const PERSISTENT_SIZES: &[(usize, usize, usize, usize)] = &[(6, 7, 5, 37), (4, 1, 3, 1), (5, 3, 4, 16), (1, 2, 2, 9)];

#[test]
fn lstm_persistent_forward_matches_cpu() {
    for backend in backends() {
        for &sizes in PERSISTENT_SIZES {
            for directions in [1, 2] {
                check_persistent(&backend, sizes, directions);
            }
        }
    }
    let backend = Backend::emulator_with(EmuSchedule::random(0x9e15));
    for &sizes in PERSISTENT_SIZES {
        check_persistent(&backend, sizes, 2);
    }
}

#[test]
fn lstm_persistent_refuses_large_layers() {
    let backend = Backend::emulator();
    let (t, b, h) = (2, 8, 100);
    let d_len = backend.upload(&vec![2i64; b]).unwrap();
    let mut g = backend.zeros::<f32>(t * b * 4 * h).unwrap();
    let w = backend.zeros::<f32>(4 * h * h).unwrap();
    let h0 = backend.zeros::<f32>(b * h).unwrap();
    let (mut hs, mut cs) = (backend.zeros::<f32>((t + 1) * b * h).unwrap(), backend.zeros((t + 1) * b * h).unwrap());
    let mut tc = backend.zeros::<f32>(t * b * h).unwrap();
    let e =
        rnn::lstm_forward_persistent_f32(&backend, t, h, 1, &d_len, &mut g, &w, &h0, &h0, &mut hs, &mut cs, &mut tc)
            .unwrap_err();
    assert!(e.to_string().contains("use the per-step kernels"), "{e}");
}

/// `rnn_output_f32` (through `rnn_seq::rnn_layer_output_f32`): every direction's states into
/// its columns of the packed `[Y | h_n | c_n]` output, zero at padded positions, and the final
/// states, against the host.
#[test]
fn rnn_output_matches_cpu() {
    use stapes_kernels::cuda::rnn_seq::{packed_len, rnn_layer_output_f32, LayerSaved, SeqCell, SeqSizes};
    for backend in backends() {
        for &(steps, batch, hidden) in &[(1usize, 1usize, 1usize), (5, 3, 7), (4, 9, 300), (0, 2, 3)] {
            for (cell, dirs) in [(SeqCell::Gru, 1), (SeqCell::Gru, 2), (SeqCell::Lstm, 2), (SeqCell::Lstm, 1)] {
                let sz = SeqSizes { steps, batch, input: 1, hidden };
                let lengths: Vec<i64> = (0..batch).map(|b| [steps as i64, 1, 0, (steps / 2) as i64][b % 4]).collect();
                let d_len = backend.upload(&lengths).unwrap();
                let bh = batch * hidden;
                let total = packed_len(cell, sz, dirs);
                let mut want = vec![0.0f32; total];
                let hs = values(dirs * (steps + 1) * bh, 42, -1.0, 1.0);
                let cs = values(dirs * (steps + 1) * bh, 43, -1.0, 1.0);
                let y_len = steps * dirs * bh;
                for d in 0..dirs {
                    let base = d * (steps + 1);
                    for t in 0..steps {
                        let row = base + if d == 1 { t } else { t + 1 };
                        for b in 0..batch {
                            for j in 0..hidden {
                                let v = if (t as i64) < lengths[b] { hs[row * bh + b * hidden + j] } else { 0.0 };
                                want[(t * batch + b) * dirs * hidden + d * hidden + j] = v;
                            }
                        }
                    }
                    let fin = base + if d == 1 { 0 } else { steps };
                    want[y_len + d * bh..y_len + (d + 1) * bh].copy_from_slice(row(&hs, fin, bh));
                    if cell == SeqCell::Lstm {
                        let at = y_len + (dirs + d) * bh;
                        want[at..at + bh].copy_from_slice(row(&cs, fin, bh));
                    }
                }
                let saved = LayerSaved {
                    cell,
                    dirs,
                    gates: backend.zeros(0).unwrap(),
                    hs: backend.upload(&hs).unwrap(),
                    cs: (cell == SeqCell::Lstm).then(|| backend.upload(&cs).unwrap()),
                    tanh_c: None,
                };
                let mut d_y = backend.upload(&values(total, 41, -1.0, 1.0)).unwrap();
                rnn_layer_output_f32(&backend, sz, &d_len, &saved, &mut d_y).unwrap();
                let ctx = format!(
                    "rnn_output {cell:?} [D={dirs}, T={steps}, B={batch}, H={hidden}] on the {}",
                    backend.describe()
                );
                assert_eq!(backend.download(&d_y).unwrap(), want, "{ctx}");
                let wrong =
                    LayerSaved { hs: backend.zeros(1).unwrap(), cs: None, gates: backend.zeros(0).unwrap(), ..saved };
                let e = rnn_layer_output_f32(&backend, sz, &d_len, &wrong, &mut d_y);
                assert!(e.is_err(), "{ctx}: a state buffer of the wrong size is refused");
            }
        }
    }
}

/// The layer driver with the persistent LSTM forward (`StepAlgo::PersistentIfSmall`) gives the
/// per-step driver's saved tensors and output, and its saved tensors drive the backward to the
/// same gradients; a layer too large for shared memory falls back to the per-step path.
#[test]
fn layer_forward_persistent_matches_steps() {
    use stapes_kernels::cuda::rnn_seq::{
        packed_len, rnn_layer_backward_f32, rnn_layer_forward_f32, rnn_layer_output_f32, LayerWeights, SeqCell,
        SeqSizes, StepAlgo,
    };
    for backend in backends() {
        // (T, B, I, H): small enough for shared memory, and H = 120 (too large: the fallback)
        for &(steps, batch, input, hidden) in &[(5usize, 3usize, 4usize, 6usize), (4, 2, 3, 120)] {
            for nd in [1, 2] {
                let sz = SeqSizes { steps, batch, input, hidden };
                let gw = 4 * hidden;
                let up = |n: usize, seed: u32, a: f32| backend.upload(&values(n, seed, -a, a)).unwrap();
                let scale = 1.0 / (hidden as f32).sqrt();
                let (w_ih, w_hh) = (up(nd * gw * input, 61, scale), up(nd * gw * hidden, 62, scale));
                let (b_ih, b_hh) = (up(nd * gw, 63, scale), up(nd * gw, 64, scale));
                let w = LayerWeights { dirs: nd, w_ih: &w_ih, w_hh: &w_hh, b_ih: Some(&b_ih), b_hh: Some(&b_hh) };
                let x = up(steps * batch * input, 65, 1.0);
                let (h0, c0) = (up(nd * batch * hidden, 66, 0.5), up(nd * batch * hidden, 67, 0.5));
                let lengths: Vec<i64> = (0..batch).map(|b| [steps, 1, steps - 2][b % 3] as i64).collect();
                let d_len = backend.upload(&lengths).unwrap();
                let total = packed_len(SeqCell::Lstm, sz, nd);
                let dpacked = up(total, 68, 1.0);
                let run = |algo: StepAlgo| {
                    let saved =
                        rnn_layer_forward_f32(&backend, SeqCell::Lstm, sz, algo, false, &d_len, &x, &w, &h0, Some(&c0))
                            .unwrap();
                    let mut packed = backend.alloc::<f32>(total).unwrap();
                    rnn_layer_output_f32(&backend, sz, &d_len, &saved, &mut packed).unwrap();
                    let g =
                        rnn_layer_backward_f32(&backend, sz, false, &d_len, &x, &w, &saved, &dpacked, true).unwrap();
                    let dl = |b: &stapes_kernels::cuda::DeviceBuffer<f32>| backend.download(b).unwrap();
                    vec![
                        ("output", dl(&packed)),
                        ("gates", dl(&saved.gates)),
                        ("cs", dl(saved.cs.as_ref().unwrap())),
                        ("tanh_c", dl(saved.tanh_c.as_ref().unwrap())),
                        ("dx", dl(g.dx.as_ref().unwrap())),
                        ("dW_ih", dl(&g.dw_ih)),
                        ("dW_hh", dl(&g.dw_hh)),
                        ("db", dl(&g.db_ih)),
                        ("dh0", dl(&g.dh0)),
                        ("dc0", dl(g.dc0.as_ref().unwrap())),
                    ]
                };
                let (steps_run, persistent_run) = (run(StepAlgo::Steps), run(StepAlgo::PersistentIfSmall));
                for ((name, got), (_, want)) in persistent_run.iter().zip(&steps_run) {
                    let ctx = format!(
                        "persistent layer forward {name}, D={nd} [T, B, I, H] = {:?} on the {}",
                        (steps, batch, input, hidden),
                        backend.describe()
                    );
                    assert_close(got, want, Tolerance::new(1e-5, 1e-5), &ctx);
                }
            }
        }
    }
}

/// Empty sizes (no steps, no batch rows, no hidden units, no inputs) run the layer driver
/// forward and backward without a panic, and the results have their shapes: the final states
/// are the initial ones when there are no steps.
#[test]
fn layer_driver_handles_empty_sizes() {
    use stapes_kernels::cuda::rnn_seq::{
        packed_len, rnn_layer_backward_f32, rnn_layer_forward_f32, rnn_layer_output_f32, LayerWeights, SeqCell,
        SeqSizes, StepAlgo,
    };
    let backend = Backend::emulator();
    for cell in [SeqCell::Lstm, SeqCell::Gru] {
        for &(steps, batch, input, hidden) in
            &[(0usize, 2usize, 3usize, 4usize), (3, 0, 3, 4), (3, 2, 3, 0), (3, 2, 0, 4)]
        {
            for nd in [1, 2] {
                let what = format!("{cell:?} D={nd} [T, B, I, H] = {:?}", (steps, batch, input, hidden));
                let sz = SeqSizes { steps, batch, input, hidden };
                let gw = cell.gates() * hidden;
                let up = |n: usize, seed: u32| backend.upload(&values(n, seed, -0.5, 0.5)).unwrap();
                let (w_ih, w_hh, b) = (up(nd * gw * input, 1), up(nd * gw * hidden, 2), up(nd * gw, 3));
                let w = LayerWeights { dirs: nd, w_ih: &w_ih, w_hh: &w_hh, b_ih: Some(&b), b_hh: Some(&b) };
                let x = up(steps * batch * input, 4);
                let (h0, c0) = (up(nd * batch * hidden, 5), up(nd * batch * hidden, 6));
                let c0 = (cell == SeqCell::Lstm).then_some(&c0);
                let d_len = backend.upload(&vec![steps as i64; batch]).unwrap();
                let saved = rnn_layer_forward_f32(&backend, cell, sz, StepAlgo::Steps, false, &d_len, &x, &w, &h0, c0)
                    .unwrap_or_else(|e| panic!("{what}: forward: {e}"));
                let total = packed_len(cell, sz, nd);
                let mut packed = backend.alloc::<f32>(total).unwrap();
                rnn_layer_output_f32(&backend, sz, &d_len, &saved, &mut packed).unwrap();
                let out = backend.download(&packed).unwrap();
                if steps == 0 {
                    assert_eq!(&out[..nd * batch * hidden], &backend.download(&h0).unwrap()[..], "{what}: h_n = h0");
                }
                let g = rnn_layer_backward_f32(&backend, sz, false, &d_len, &x, &w, &saved, &packed, true)
                    .unwrap_or_else(|e| panic!("{what}: backward: {e}"));
                assert_eq!(g.dx.as_ref().map(|d| d.len()), Some(steps * batch * input), "{what}");
                assert_eq!(g.dw_ih.len(), nd * gw * input, "{what}");
                assert_eq!(g.dh0.len(), nd * batch * hidden, "{what}");
            }
        }
    }
}
