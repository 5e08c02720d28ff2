"""Golden outputs of model compression (issue 19): the distillation loss and fake quantization.

Cases, each written to `tests/golden/compress.safetensors` under its prefix:
- `kd.`: the knowledge-distillation term of `stapes distill` on a padded batch. `student` and
  `teacher` logits [3, 7, 6] (class 0 is the CTC blank), valid frames `lengths` [7, 5, 3],
  temperature `T` 2. The term is the per-frame
  `F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True, reduction="sum") * T**2`
  averaged over the valid frames (`reduction="batchmean"` over the valid frames stacked as rows);
  stored: `loss` and its gradient `grad` with respect to the student logits (zero on padding).
- `kd_skip.`: the same, but frames where the teacher's blank probability (at temperature 1)
  exceeds 0.6 are left out as well; the teacher is made blank-dominated on some frames. `mask`
  holds the frames that count.
- `fq_channel.`: `torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis=0, -128, 127)`
  of `x` [5, 9] (some values beyond the int8 range of their channel) with symmetric per-channel
  scales (zero points 0), and `fq_channel_asym.` with zero points 3, -2, 0, 5, -7 and axis 1 of
  a [4, 5] input; stored: `out`, the upstream gradient `go` and the input gradient `grad`
  (the straight-through estimator: `go` where `round(x/scale) + zp` falls inside the range, 0
  outside).
- `fq_tensor.`: `torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 127)` of `x`
  [6, 8], the uint8 reduce-range activation scheme of dynamic quantization with the scale and
  zero point `torch._choose_qparams_per_tensor(x, reduce_range=True)` picks (`qparams`), and of
  `x * 3` with the same parameters (values clamped); `out`, `out_clamped`, `go`, `grad`,
  `grad_clamped`.

Run: python tools/golden/compress.py   (torch 2.11.0)
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden")


def kd_case(t, name, student, teacher, lengths, temp, skip_blank_above):
    s = student.clone().requires_grad_(True)
    b, n, c = s.shape
    valid = torch.arange(n)[None, :] < lengths[:, None]
    if skip_blank_above is not None:
        valid = valid & (teacher.softmax(-1)[..., 0] <= skip_blank_above)
    rows_s = (s / temp).log_softmax(-1)[valid]
    rows_t = (teacher / temp).log_softmax(-1)[valid]
    loss = F.kl_div(rows_s, rows_t, log_target=True, reduction="batchmean") * temp ** 2
    loss.backward()
    t.update({f"{name}.student": student, f"{name}.teacher": teacher, f"{name}.lengths": lengths,
              f"{name}.T": torch.tensor([temp], dtype=torch.float64), f"{name}.loss": loss.detach().reshape(1),
              f"{name}.grad": s.grad.clone(), f"{name}.mask": valid.to(torch.uint8)})


def fq_channel_case(t, name, x, scale, zp, axis):
    xv = x.clone().requires_grad_(True)
    out = torch.fake_quantize_per_channel_affine(xv, scale, zp.to(torch.int32), axis, -128, 127)
    go = torch.randn_like(x)
    out.backward(go)
    t.update({f"{name}.x": x, f"{name}.scale": scale, f"{name}.zp": zp.to(torch.int64),
              f"{name}.axis": torch.tensor([axis], dtype=torch.int64), f"{name}.out": out.detach(),
              f"{name}.go": go, f"{name}.grad": xv.grad.clone()})


def main():
    torch.manual_seed(1923)
    t = {}
    lengths = torch.tensor([7, 5, 3], dtype=torch.int64)
    student = torch.randn(3, 7, 6) * 2.0
    teacher = torch.randn(3, 7, 6) * 3.0
    kd_case(t, "kd", student, teacher, lengths, 2.0, None)
    teacher_b = teacher.clone()
    teacher_b[0, 1:4, 0] += 9.0
    teacher_b[1, 0, 0] += 9.0
    teacher_b[2, 2, 0] += 9.0
    kd_case(t, "kd_skip", student, teacher_b, lengths, 2.0, 0.6)

    # per-channel symmetric int8 weights, scale = max|w| / 127.5 per row, then widened so that
    # some rows clip (the scale of rows 1 and 3 is halved)
    w = torch.randn(5, 9) * torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0])[:, None]
    scale = w.abs().amax(1) / 127.5
    scale[1] /= 2
    scale[3] /= 2
    fq_channel_case(t, "fq_channel", w, scale, torch.zeros(5, dtype=torch.int64), 0)
    x2 = torch.randn(4, 5) * 2
    fq_channel_case(t, "fq_channel_asym", x2, torch.tensor([0.01, 0.02, 0.005, 0.03, 0.015]),
                    torch.tensor([3, -2, 0, 5, -7]), 1)

    x = torch.randn(6, 8) * 1.5 + 0.4
    sc, zp = torch._choose_qparams_per_tensor(x, True)
    go = torch.randn_like(x)
    res = {}
    for label, inp in [("", x), ("_clamped", x * 3)]:
        xv = inp.clone().requires_grad_(True)
        out = torch.fake_quantize_per_tensor_affine(xv, sc, zp, 0, 127)
        out.backward(go)
        res[f"fq_tensor.out{label}"] = out.detach()
        res[f"fq_tensor.grad{label}"] = xv.grad.clone()
    t.update(res)
    t.update({"fq_tensor.x": x, "fq_tensor.go": go,
              "fq_tensor.qparams": torch.tensor([sc, float(zp)], dtype=torch.float64)})
    write_safetensors(os.path.join(OUT, "compress.safetensors"), t, {"torch": torch.__version__})
    print("wrote", len(t), "tensors")


if __name__ == "__main__":
    main()
