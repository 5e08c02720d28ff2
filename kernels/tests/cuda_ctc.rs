//! The CTC kernels of `kernels/cuda/ctc.cu` against the Rust CPU kernel
//! (`stapes_kernels::cpu::ctc`), on the emulator (every run; once more with a forced random
//! thread order, so that a missing barrier shows) and on the GPU when one is present.
//!
//! Cases: mixed input and target lengths in one batch (an input of length 0, empty targets,
//! repeated labels, impossible alignments, with and without `zero_infinity`), batch-first scores
//! with a blank that is not 0, more samples than the emulator's grid (blocks loop over
//! samples), and 2S+1 = 301 states, more than the 256 threads of a block (threads loop over
//! states), each with the rows in shared memory and in global memory.

use stapes_kernels::cpu::ctc::{ctc_loss, CtcInput, CtcLayout, CtcProblem};
use stapes_kernels::cuda::ctc::{ctc_loss_f32, CtcRows};
use stapes_kernels::cuda::emu::EmuSchedule;
use stapes_kernels::cuda::parity::{assert_close, backends, Tolerance};
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

/// Log-softmax over the last dim of `[rows, c]` (in f64, rounded once).
fn log_softmax(x: &[f32], c: usize) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|r| {
            let m = r.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
            r.iter().map(move |&v| (v as f64 - m - s.ln()) as f32).collect::<Vec<_>>()
        })
        .collect()
}

struct Case {
    name: &'static str,
    t: usize,
    c: usize,
    layout: CtcLayout,
    blank: usize,
    targets: Vec<i64>,
    offsets: Vec<usize>,
    target_lengths: Vec<usize>,
    input_lengths: Vec<usize>,
}

impl Case {
    fn problem(&self) -> CtcProblem<'_> {
        CtcProblem {
            max_time: self.t,
            batch: self.input_lengths.len(),
            classes: self.c,
            layout: self.layout,
            targets: &self.targets,
            target_offsets: &self.offsets,
            target_lengths: &self.target_lengths,
            input_lengths: &self.input_lengths,
            blank: self.blank,
        }
    }
}

fn cases() -> Vec<Case> {
    // padded [B, 4] targets; sample 3 ("1 1" in 2 frames) and sample 5 (input length 0 with a
    // label) are impossible; sample 4 has an input of length 0 and an empty target (loss 0)
    let mixed = Case {
        name: "mixed lengths",
        t: 7,
        c: 5,
        layout: CtcLayout::TimeMajor,
        blank: 0,
        targets: vec![1, 2, 2, 3, 4, 4, 4, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 1, 3, 1],
        offsets: (0..7).map(|b| 4 * b).collect(),
        target_lengths: vec![4, 3, 0, 2, 0, 1, 4],
        input_lengths: vec![7, 7, 3, 2, 0, 0, 6],
    };
    // batch-first, blank 2, concatenated targets; 20 samples > the emulator's 16-block grid
    let b = 20;
    let mut targets = Vec::new();
    let mut offsets = Vec::new();
    let mut target_lengths = Vec::new();
    for i in 0..b {
        offsets.push(targets.len());
        let n = i % 4;
        for j in 0..n {
            targets.push([0i64, 1, 3][(i + j * (i % 3)) % 3]);
        }
        target_lengths.push(n);
    }
    let many = Case {
        name: "batch-first, blank 2, 20 samples",
        t: 9,
        c: 4,
        layout: CtcLayout::BatchFirst,
        blank: 2,
        targets,
        offsets,
        target_lengths,
        input_lengths: (0..b).map(|i| 9 - i % 3).collect(),
    };
    // 150 labels: 301 states, more than a block's 256 threads
    let long_targets: Vec<i64> = (0..150).map(|i| 1 + (i * 7 % 5) as i64).collect();
    let long = Case {
        name: "301 states",
        t: 170,
        c: 6,
        layout: CtcLayout::TimeMajor,
        blank: 0,
        targets: long_targets,
        offsets: vec![0],
        target_lengths: vec![150],
        input_lengths: vec![170],
    };
    vec![mixed, many, long]
}

fn check(backend: &Backend, case: &Case, rows: CtcRows, zero_infinity: bool) {
    let p = case.problem();
    let lp = log_softmax(&values(p.score_len(), 3, -3.0, 3.0), p.classes);
    let mut nll = vec![0.0f32; p.batch];
    let mut grad = vec![0.0f32; p.score_len()];
    ctc_loss(&p, &lp, CtcInput::LogProbs, zero_infinity, &mut nll, Some(&mut grad));
    let d_lp = backend.upload(&lp).unwrap();
    let out = ctc_loss_f32(backend, &p, &d_lp, zero_infinity, true, rows).unwrap();
    let ctx = format!("{} ({rows:?} rows, zero_infinity {zero_infinity}) on the {}", case.name, backend.describe());
    // libm expf/logf on the device, the crate's polynomial ones on the CPU, and the long case
    // accumulates 170 steps with |alpha| ~ 400 (f32 ulp 3e-5)
    assert_close(&backend.download(&out.nll).unwrap(), &nll, Tolerance::new(2e-6, 1e-5), &format!("nll: {ctx}"));
    let g = backend.download(out.grad.as_ref().unwrap()).unwrap();
    assert_close(&g, &grad, Tolerance::new(1e-5, 1e-4), &format!("grad: {ctx}"));
    // without a gradient the loss is the same and no gradient buffer is made
    let out = ctc_loss_f32(backend, &p, &d_lp, zero_infinity, false, rows).unwrap();
    assert!(out.grad.is_none());
    assert_close(&backend.download(&out.nll).unwrap(), &nll, Tolerance::new(2e-6, 1e-5), &format!("nll only: {ctx}"));
}

fn run_all(backend: &Backend) {
    for case in cases() {
        for rows in [CtcRows::Auto, CtcRows::Global] {
            for zi in [false, true] {
                check(backend, &case, rows, zi);
            }
        }
    }
}

#[test]
fn ctc_matches_cpu() {
    for backend in backends() {
        run_all(&backend);
    }
}

/// The same cases with shuffled thread orders (a missing `__syncthreads` would let a thread read
/// a row before it is written and fail the comparison).
#[test]
fn ctc_matches_cpu_with_random_schedule() {
    run_all(&Backend::emulator_with(EmuSchedule::random(0xc7c)));
}

#[test]
fn bad_problems_are_errors() {
    let backend = Backend::emulator();
    let case = &cases()[0];
    let mut p = case.problem();
    let lp = backend.upload(&vec![0.0f32; p.score_len() - 1]).unwrap();
    let e = ctc_loss_f32(&backend, &p, &lp, false, true, CtcRows::Auto).unwrap_err();
    assert!(e.to_string().contains("expected T·B·C"), "{e}");
    let lp = backend.upload(&vec![0.0f32; p.score_len()]).unwrap();
    p.blank = 1;
    let e = ctc_loss_f32(&backend, &p, &lp, false, true, CtcRows::Auto).unwrap_err();
    assert!(e.to_string().contains("blank index"), "{e}");
}
