//! CTC loss on CUDA tensors: `kernels/cuda/ctc.cu` (alpha/beta recursions in shared memory, one
//! block per sample, then the gradient rows), with no host synchronisation. The nn layer's
//! `ctc_loss` calls this for log-probabilities on a CUDA device.

use super::cuda_err;
use crate::{DType, Error, Result, Tensor};
pub use stapes_kernels::cpu::ctc::CtcProblem;
use stapes_kernels::cuda::ctc::{ctc_loss_f32, CtcRows};

/// The per-sample negative log-likelihoods `[B]` of the f32 log-probabilities `log_probs` (on a
/// CUDA device, laid out as `p.layout` says), and with `want_grad` PyTorch's unscaled gradient
/// `exp(lp) - occupancy` in the scores' shape (the gradient with respect to the logits when
/// `log_probs` is their log-softmax).
pub fn ctc_loss(
    log_probs: &Tensor,
    p: &CtcProblem<'_>,
    zero_infinity: bool,
    want_grad: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    const OP: &str = "ctc_loss";
    match log_probs.dtype() {
        DType::F32 => {}
        DType::F64 => return Err(log_probs.no_cuda_kernel(OP)),
        d => return Err(Error::UnsupportedDType { op: OP, dtype: d, msg: "CTC loss computes in f32 or f64" }),
    }
    p.check().map_err(|m| Error::invalid(OP, m))?;
    let lp = log_probs.cuda_exact()?;
    let (_, backend) = lp.cuda_parts(OP)?;
    let out = ctc_loss_f32(backend, p, lp.cuda_typed::<f32>(OP)?, zero_infinity, want_grad, CtcRows::Auto)
        .map_err(cuda_err(OP))?;
    let device = *log_probs.device();
    let nll = Tensor::from_cuda_buf(super::CudaBuf::F32(out.nll), backend.clone(), vec![p.batch], device);
    let grad = out
        .grad
        .map(|g| Tensor::from_cuda_buf(super::CudaBuf::F32(g), backend.clone(), log_probs.shape().clone(), device));
    Ok((nll, grad))
}
