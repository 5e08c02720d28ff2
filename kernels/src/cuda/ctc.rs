//! Launch wrapper for `kernels/cuda/ctc.cu`: CTC loss and its gradient in `f32`, one block per
//! sample for each of the alpha and beta recursions, then one block per gradient row. CPU
//! reference: [`crate::cpu::ctc::ctc_loss`] (same recursions and the same gradient).
//!
//! The problem (targets, lengths) comes from the host as a [`CtcProblem`], validated with
//! [`CtcProblem::check`] before anything is launched and uploaded once; the scores stay on the
//! device. Nothing synchronises with the host between the two kernels.

use super::launch::{Backend, DeviceBuffer, KernelArg, LaunchConfig};
use super::CudaError;
use crate::cpu::ctc::{CtcLayout, CtcProblem};

const OP: &str = "cuda::ctc::ctc_loss_f32";

/// Where the alpha/beta kernel keeps its previous and current rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CtcRows {
    /// Shared memory when two rows fit in 48 KiB, else global memory (the default).
    #[default]
    Auto,
    /// Always read the previous row from the global table (tests both paths).
    Global,
}

/// What [`ctc_loss_f32`] leaves on the device.
#[derive(Debug)]
pub struct CtcOutput {
    /// The loss per sample, `[B]` (0 for impossible samples with `zero_infinity`).
    pub nll: DeviceBuffer<f32>,
    /// The gradient for an upstream gradient of 1, in the scores' layout (when asked for).
    pub grad: Option<DeviceBuffer<f32>>,
}

/// CTC loss of the log-probabilities `log_probs` (`p.score_len()` floats in `p.layout`) per
/// sample, and with `want_grad` PyTorch's gradient `exp(lp) - occupancy` (unscaled).
pub fn ctc_loss_f32(
    backend: &Backend,
    p: &CtcProblem<'_>,
    log_probs: &DeviceBuffer<f32>,
    zero_infinity: bool,
    want_grad: bool,
    rows: CtcRows,
) -> Result<CtcOutput, CudaError> {
    p.check().map_err(|message| CudaError::Shape { op: OP, message })?;
    if log_probs.len() != p.score_len() {
        let message = format!(
            "log_probs has {} elements, expected T·B·C = {}·{}·{}",
            log_probs.len(),
            p.max_time,
            p.batch,
            p.classes
        );
        return Err(CudaError::Shape { op: OP, message });
    }
    let b = p.batch;
    let mut nll = backend.zeros::<f32>(b)?;
    let mut grad = if want_grad { Some(backend.zeros::<f32>(p.score_len())?) } else { None };
    if b == 0 {
        return Ok(CtcOutput { nll, grad });
    }
    let (stride_t, stride_b) = match p.layout {
        CtcLayout::TimeMajor => (b * p.classes, p.classes),
        CtcLayout::BatchFirst => (p.classes, p.max_time * p.classes),
    };
    let as_i64 = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
    // an empty buffer cannot be dereferenced; keep one element so the kernels get a valid pointer
    let targets = if p.targets.is_empty() { backend.upload(&[0i64])? } else { backend.upload(p.targets)? };
    let offsets = backend.upload(&as_i64(p.target_offsets))?;
    let input_lengths = backend.upload(&as_i64(p.input_lengths))?;
    let target_lengths = backend.upload(&as_i64(p.target_lengths))?;
    let width = 2 * p.target_lengths.iter().copied().max().unwrap_or(0) + 3;
    let table = b * p.max_time * width;
    let mut alpha = backend.zeros::<f32>(table.max(1))?;
    let mut beta = backend.zeros::<f32>(table.max(1))?;
    let mut ll = backend.zeros::<f32>(b)?;

    let use_shared = rows == CtcRows::Auto && 2 * width * 4 <= 48 * 1024;
    let block = (width.div_ceil(32) * 32).clamp(32, 256) as u32;
    let grid_b = (b as u32).min(backend.multiprocessor_count() * 8);
    let cfg = LaunchConfig {
        grid: (grid_b, 2, 1),
        block: (block, 1, 1),
        shared_mem_bytes: if use_shared { (2 * width * 4) as u32 } else { 0 },
    };
    let mut args = [
        KernelArg::input(log_probs),
        KernelArg::input(&targets),
        KernelArg::input(&offsets),
        KernelArg::input(&input_lengths),
        KernelArg::input(&target_lengths),
        KernelArg::u64(b as u64),
        KernelArg::u64(p.max_time as u64),
        KernelArg::u64(stride_t as u64),
        KernelArg::u64(stride_b as u64),
        KernelArg::i64(p.blank as i64),
        KernelArg::u64(width as u64),
        KernelArg::u32(use_shared as u32),
        KernelArg::u32(zero_infinity as u32),
        KernelArg::output(&mut alpha),
        KernelArg::output(&mut beta),
        KernelArg::output(&mut ll),
        KernelArg::output(&mut nll),
    ];
    // SAFETY: every index stays inside its buffer: samples b < B read lengths[b] and offsets[b]
    // (checked: offset + length <= targets, input length <= T, labels < C), the scores at
    // t·stride_t + b·stride_b + label < T·B·C, and the tables at (b·T + t)·width + col < B·T·width.
    unsafe { backend.launch("ctc_alpha_beta_f32", cfg, &mut args)? };

    if let Some(g) = grad.as_mut() {
        let rows_n = b * p.max_time;
        if rows_n > 0 && p.classes > 0 {
            let block = (p.classes.max(width).div_ceil(32) * 32).clamp(32, 256) as u32;
            let grid = (rows_n as u32).min(backend.multiprocessor_count() * 16);
            let mut args = [
                KernelArg::input(log_probs),
                KernelArg::input(&targets),
                KernelArg::input(&offsets),
                KernelArg::input(&input_lengths),
                KernelArg::input(&target_lengths),
                KernelArg::u64(b as u64),
                KernelArg::u64(p.max_time as u64),
                KernelArg::u64(stride_t as u64),
                KernelArg::u64(stride_b as u64),
                KernelArg::u64(p.classes as u64),
                KernelArg::i64(p.blank as i64),
                KernelArg::u64(width as u64),
                KernelArg::u32(zero_infinity as u32),
                KernelArg::input(&alpha),
                KernelArg::input(&beta),
                KernelArg::input(&ll),
                KernelArg::output(g),
            ];
            // SAFETY: as above; grad has the scores' length and layout.
            unsafe { backend.launch("ctc_grad_f32", LaunchConfig::linear(grid, block), &mut args)? };
        }
    }
    Ok(CtcOutput { nll, grad })
}
