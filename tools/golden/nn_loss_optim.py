#!/usr/bin/env python3
"""Golden fixtures for `tests/parity_nn_loss_optim.rs`: losses, optimizers, gradient clipping.

Writes ONE file, `tests/golden/nn_loss_optim.safetensors` (torch 2.11.0, CPU, one thread,
byte-for-byte reproducible: every case seeds its own generator from its name).

Three kinds of case; `__metadata__` maps each case name to a flat JSON object with `"kind"`:

* kind "loss" (`"loss"`: cross_entropy | nll_loss | kl_div | mse_loss | bce_with_logits |
  distillation, plus the options: reduction, ignore_index, label_smoothing, log_target,
  temperature, alpha, target_grad):
    <case>.input, <case>.target     the input (a leaf) and the target (class indices int64 or
                                    floats; a leaf too when "target_grad" is true)
    <case>.weight, <case>.pos_weight, <case>.teacher   optional extra inputs (constants)
    <case>.out                      the loss
    <case>.gout                     upstream gradient (reduction "none" only; else backward())
    <case>.grad_input, <case>.grad_target   the gradients
* kind "optim" (`"optimizer"`: sgd | adam | adamw, its hyper-parameters, `"dtype"`,
  `"steps"`): a 2-layer MLP fc1 = Linear(8, 16), tanh, fc2 = Linear(16, 4), trained with
  cross_entropy (mean) on fixed data for `steps` steps (`zero_grad; loss; backward; step`):
    <case>.x, <case>.y              the data
    <case>.init.<param>             the initial parameters (`fc1.weight`, ...)
    <case>.final.<param>            the parameters after the last step
    <case>.losses                   the loss before each step
    <case>.state.<i>.<name>         the optimizer state after the last step
                                    (exp_avg, exp_avg_sq, max_exp_avg_sq, momentum_buffer);
                                    the step count is the metadata's "steps"
* kind "clip" (`"clip"`: norm | value, max_norm, norm_type as a number or "inf"/"-inf",
  clip_value): three parameters with gradients <case>.grad0..2, the clipped gradients
  <case>.clipped0..2 and (norm) the returned total norm <case>.total_norm.
"""

import json
import os
import sys
import warnings
import zlib

import torch
import torch.nn.functional as F
from safetensors import safe_open
from golden_io import write_safetensors  # noqa: E402  (the one reproducible writer)

TORCH_VERSION = "2.11.0"
if not torch.__version__.startswith(TORCH_VERSION):
    sys.exit(f"tools/golden/nn_loss_optim.py needs torch {TORCH_VERSION}, found {torch.__version__}")

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="reduction: 'mean' divides")  # kl_div's 'mean' notice
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "nn_loss_optim.safetensors")
F32, F64 = torch.float32, torch.float64
TENSORS = {}
METADATA = {}


def gen(name):
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def store(key, t):
    assert key not in TENSORS, key
    TENSORS[key] = t.detach().contiguous().clone()


def meta(name, params):
    assert "." not in name and name not in METADATA, name
    METADATA[name] = json.dumps(params, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def loss_case(name, loss, inp, target, fn, params, extras=None, target_grad=False):
    """fn(input, target, extras) -> loss tensor."""
    extras = extras or {}
    x = inp.detach().clone().requires_grad_(True)
    t = target.detach().clone()
    if target_grad:
        t.requires_grad_(True)
    out = fn(x, t, extras)
    store(f"{name}.input", inp)
    store(f"{name}.target", target)
    for k, v in extras.items():
        store(f"{name}.{k}", v)
    store(f"{name}.out", out)
    if out.dim() == 0:
        out.backward()
    else:
        g = torch.randn(out.shape, generator=gen(name + "gout"), dtype=F64).to(out.dtype)
        store(f"{name}.gout", g)
        out.backward(g)
    store(f"{name}.grad_input", x.grad)
    if target_grad:
        store(f"{name}.grad_target", t.grad)
    meta(name, {"kind": "loss", "loss": loss, "target_grad": target_grad, **params})


def randn(g, *shape, dtype=F64, scale=1.0):
    return (torch.randn(shape, generator=g, dtype=F64) * scale).to(dtype)


def class_targets(g, c, shape, ignore=None, n_ignored=0):
    t = torch.randint(0, c, shape, generator=g)
    if n_ignored:
        flat = t.view(-1)
        pos = torch.randperm(flat.numel(), generator=g)[:n_ignored]
        flat[pos] = ignore
    return t


def ce_cases():
    def ce(reduction, ignore_index=-100, label_smoothing=0.0):
        def fn(x, t, e):
            return F.cross_entropy(x, t, weight=e.get("weight"), ignore_index=ignore_index,
                                   reduction=reduction, label_smoothing=label_smoothing)
        return fn

    def idx(name, shape, reduction, ignore_index=-100, n_ignored=0, ls=0.0, weight=False, dtype=F64):
        g = gen(name)
        c = shape[1] if len(shape) > 1 else shape[0]
        x = randn(g, *shape, dtype=dtype, scale=2.0)
        tshape = (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()
        t = class_targets(g, c, tshape, ignore_index, n_ignored)
        extras = {"weight": torch.rand(c, generator=g, dtype=F64).add(0.2).to(dtype)} if weight else {}
        loss_case(name, "cross_entropy", x, t, ce(reduction, ignore_index, ls),
                  {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": ls}, extras)

    for r in ["mean", "sum", "none"]:
        idx(f"ce_{r}", (6, 5), r)
        idx(f"ce_weight_{r}", (6, 5), r, weight=True)
        idx(f"ce_ls_{r}", (6, 5), r, ls=0.1)
        idx(f"ce_ls_weight_ignore_{r}", (7, 5), r, n_ignored=2, ls=0.15, weight=True)
        idx(f"ce_ignore_{r}", (7, 4), r, n_ignored=3)
    idx("ce_ignore_custom_mean", (8, 4), "mean", ignore_index=1, n_ignored=0)
    idx("ce_ls_ignore_mean", (8, 6), "mean", n_ignored=3, ls=0.2)
    idx("ce_weight_ignore_mean", (8, 6), "mean", n_ignored=2, weight=True)
    idx("ce_nd_ignore_mean", (2, 4, 3, 5), "mean", n_ignored=4)
    idx("ce_nd_ls_weight_ignore_none", (2, 4, 3, 5), "none", n_ignored=4, ls=0.1, weight=True)
    idx("ce_nd_ls_weight_ignore_mean", (2, 4, 7), "mean", n_ignored=3, ls=0.3, weight=True)
    idx("ce_unbatched_mean", (5,), "mean")
    idx("ce_unbatched_none", (5,), "none", ls=0.1)
    idx("ce_f32_mean", (6, 5), "mean", dtype=F32)
    idx("ce_f32_ls_weight_ignore_mean", (16, 10), "mean", n_ignored=3, ls=0.1, weight=True, dtype=F32)

    def prob(name, shape, reduction, ls=0.0, weight=False, dtype=F64):
        g = gen(name)
        c = shape[1] if len(shape) > 1 else shape[0]
        x = randn(g, *shape, dtype=dtype, scale=2.0)
        cdim = 1 if len(shape) > 1 else 0
        t = torch.rand(shape, generator=g, dtype=F64).softmax(cdim).to(dtype)
        extras = {"weight": torch.rand(c, generator=g, dtype=F64).add(0.2).to(dtype)} if weight else {}
        loss_case(name, "cross_entropy", x, t, ce(reduction, label_smoothing=ls),
                  {"reduction": reduction, "ignore_index": -100, "label_smoothing": ls}, extras)

    for r in ["mean", "sum", "none"]:
        prob(f"ce_prob_{r}", (6, 5), r)
        prob(f"ce_prob_ls_weight_{r}", (6, 5), r, ls=0.2, weight=True)
    prob("ce_prob_ls_mean", (6, 5), "mean", ls=0.1)
    prob("ce_prob_nd_mean", (2, 4, 3), "mean", ls=0.05)
    prob("ce_prob_unbatched_sum", (5,), "sum")
    prob("ce_prob_f32_mean", (6, 5), "mean", dtype=F32)


def nll_cases():
    def case(name, shape, reduction, ignore_index=-100, n_ignored=0, weight=False):
        g = gen(name)
        c = shape[1]
        x = randn(g, *shape).log_softmax(1)
        tshape = (shape[0],) + tuple(shape[2:])
        t = class_targets(g, c, tshape, ignore_index, n_ignored)
        extras = {"weight": torch.rand(c, generator=g, dtype=F64).add(0.2)} if weight else {}

        def fn(x, t, e):
            return F.nll_loss(x, t, weight=e.get("weight"), ignore_index=ignore_index, reduction=reduction)

        loss_case(name, "nll_loss", x, t, fn, {"reduction": reduction, "ignore_index": ignore_index}, extras)

    for r in ["mean", "sum", "none"]:
        case(f"nll_{r}", (6, 5), r)
        case(f"nll_weight_ignore_{r}", (8, 5), r, n_ignored=2, weight=True)
    case("nll_ignore_custom_mean", (8, 3), "mean", ignore_index=0)
    case("nll_nd_ignore_mean", (2, 5, 3), "mean", n_ignored=2)


def kl_cases():
    def case(name, reduction, log_target, target_grad=False, zeros=False, dtype=F64, shape=(4, 6)):
        g = gen(name)
        x = randn(g, *shape).log_softmax(-1).to(dtype)
        p = torch.rand(shape, generator=g, dtype=F64)
        if zeros:
            p[torch.rand(shape, generator=g) < 0.3] = 0.0
        p = p / p.sum(-1, keepdim=True)
        t = (p.clamp_min(1e-300).log() if log_target else p).to(dtype)

        def fn(x, t, e):
            return F.kl_div(x, t, reduction=reduction, log_target=log_target)

        loss_case(name, "kl_div", x, t, fn, {"reduction": reduction, "log_target": log_target},
                  target_grad=target_grad)

    for r in ["none", "mean", "sum", "batchmean"]:
        case(f"kl_{r}", r, False, zeros=True)
        case(f"kl_logtarget_{r}", r, True, target_grad=True)
    case("kl_target_grad_batchmean", "batchmean", False, target_grad=True)
    case("kl_3d_sum", "sum", False, target_grad=True, shape=(2, 3, 4))
    case("kl_f32_batchmean", "batchmean", False, zeros=True, dtype=F32)


def mse_cases():
    for dtype, r in [(F64, "none"), (F64, "mean"), (F64, "sum"), (F32, "mean")]:
        name = f"mse_{'f32_' if dtype == F32 else ''}{r}"
        g = gen(name)
        x, t = randn(g, 3, 5, dtype=dtype), randn(g, 3, 5, dtype=dtype)
        loss_case(name, "mse_loss", x, t, lambda x, t, e, r=r: F.mse_loss(x, t, reduction=r),
                  {"reduction": r}, target_grad=True)


def bce_cases():
    def case(name, reduction, weight=False, pos_weight=False, dtype=F64):
        g = gen(name)
        x = randn(g, 4, 3, dtype=dtype, scale=3.0)
        t = torch.rand(4, 3, generator=g, dtype=F64).to(dtype)
        extras = {}
        if weight:
            extras["weight"] = torch.rand(4, 3, generator=g, dtype=F64).add(0.5).to(dtype)
        if pos_weight:
            extras["pos_weight"] = torch.rand(3, generator=g, dtype=F64).mul(3).add(0.2).to(dtype)

        def fn(x, t, e):
            return F.binary_cross_entropy_with_logits(x, t, weight=e.get("weight"), pos_weight=e.get("pos_weight"),
                                                      reduction=reduction)

        loss_case(name, "bce_with_logits", x, t, fn, {"reduction": reduction}, extras, target_grad=True)

    for r in ["none", "mean", "sum"]:
        case(f"bce_{r}", r)
        case(f"bce_weight_pos_weight_{r}", r, weight=True, pos_weight=True)
    case("bce_pos_weight_mean", "mean", pos_weight=True)
    case("bce_f32_weight_mean", "mean", weight=True, dtype=F32)


def distill_cases():
    def case(name, temperature, alpha, dtype=F64):
        g = gen(name)
        s = randn(g, 6, 5, dtype=dtype, scale=2.0)
        te = randn(g, 6, 5, dtype=dtype, scale=2.0)
        t = torch.randint(0, 5, (6,), generator=g)

        def fn(s, t, e):
            T = temperature
            soft = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(e["teacher"] / T, dim=1), reduction="batchmean")
            return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(s, t)

        loss_case(name, "distillation", s, t, fn, {"temperature": temperature, "alpha": alpha}, {"teacher": te})

    case("distill_t2_a05", 2.0, 0.5)
    case("distill_t4_a09", 4.0, 0.9)
    case("distill_t1_a0", 1.0, 0.0)
    case("distill_f32_t3_a07", 3.0, 0.7, dtype=F32)


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


STEPS = 100


def optim_case(name, kind, dtype, **hp):
    torch.manual_seed(zlib.crc32(name.encode()))
    model = Mlp().to(dtype)
    g = gen(name + "data")
    x = torch.randn(32, 8, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, 4, (32,), generator=g)
    store(f"{name}.x", x)
    store(f"{name}.y", y)
    for k, v in model.state_dict().items():
        store(f"{name}.init.{k}", v)
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), foreach=False, **hp)
    elif kind == "adam":
        opt = torch.optim.Adam(model.parameters(), foreach=False, **hp)
    else:
        opt = torch.optim.AdamW(model.parameters(), foreach=False, **hp)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    store(f"{name}.losses", torch.tensor(losses, dtype=F64).to(dtype))
    for k, v in model.state_dict().items():
        store(f"{name}.final.{k}", v)
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if k == "step":
                assert int(v.item()) == STEPS
            elif v is not None:
                store(f"{name}.state.{i}.{k}", v)
    params = {"kind": "optim", "optimizer": kind, "dtype": str(dtype).removeprefix("torch."), "steps": STEPS}
    for k, v in hp.items():
        params[k] = list(v) if isinstance(v, tuple) else v
    meta(name, params)


def optim_cases():
    for dtype, suffix in [(F64, ""), (F32, "_f32")]:
        optim_case(f"sgd{suffix}", "sgd", dtype, lr=0.1)
        optim_case(f"sgd_momentum_dampening{suffix}", "sgd", dtype, lr=0.05, momentum=0.9, dampening=0.1)
        optim_case(f"sgd_nesterov_wd{suffix}", "sgd", dtype, lr=0.05, momentum=0.8, nesterov=True,
                   weight_decay=1e-2)
        optim_case(f"sgd_maximize_wd{suffix}", "sgd", dtype, lr=0.01, momentum=0.5, weight_decay=1e-3,
                   maximize=True)
        optim_case(f"adam{suffix}", "adam", dtype, lr=1e-2)
        optim_case(f"adam_amsgrad_wd{suffix}", "adam", dtype, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2,
                   amsgrad=True)
        optim_case(f"adamw{suffix}", "adamw", dtype, lr=1e-2, weight_decay=0.1)
        optim_case(f"adamw_amsgrad_eps{suffix}", "adamw", dtype, lr=3e-3, betas=(0.95, 0.9), eps=1e-3,
                   amsgrad=True)


# ---------------------------------------------------------------------------------------------
# Clipping
# ---------------------------------------------------------------------------------------------


def clip_case(name, mode, dtype=F32, **kw):
    g = gen(name)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    ps = []
    for i, s in enumerate(shapes):
        p = torch.zeros(s, dtype=dtype, requires_grad=True)
        p.grad = (torch.randn(s, generator=g, dtype=F64) * 0.7).to(dtype)
        store(f"{name}.grad{i}", p.grad)
        ps.append(p)
    params = {"kind": "clip", "clip": mode}
    if mode == "norm":
        nt = kw["norm_type"]
        total = torch.nn.utils.clip_grad_norm_(ps, kw["max_norm"], norm_type=nt, foreach=False)
        store(f"{name}.total_norm", total)
        params.update(max_norm=kw["max_norm"], norm_type=nt if abs(nt) != float("inf") else str(nt))
    else:
        torch.nn.utils.clip_grad_value_(ps, kw["clip_value"], foreach=False)
        params.update(clip_value=kw["clip_value"])
    for i, p in enumerate(ps):
        store(f"{name}.clipped{i}", p.grad)
    meta(name, params)


def clip_cases():
    clip_case("clip_l2", "norm", max_norm=1.0, norm_type=2.0)
    clip_case("clip_l2_no_clip", "norm", max_norm=100.0, norm_type=2.0)
    clip_case("clip_inf", "norm", max_norm=0.5, norm_type=float("inf"))
    clip_case("clip_l1", "norm", max_norm=2.0, norm_type=1.0)
    clip_case("clip_p3", "norm", max_norm=0.7, norm_type=3.0)
    clip_case("clip_f64_l2", "norm", dtype=F64, max_norm=0.5, norm_type=2.0)
    clip_case("clip_value", "value", clip_value=0.3)
    clip_case("clip_value_f64", "value", dtype=F64, clip_value=1.0)


ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def main():
    ce_cases()
    nll_cases()
    kl_cases()
    mse_cases()
    bce_cases()
    distill_cases()
    optim_cases()
    clip_cases()
    METADATA["_generator"] = f"tools/golden/nn_loss_optim.py, torch {torch.__version__}"
    write_safetensors(OUT_PATH, TENSORS, METADATA)
    size = os.path.getsize(OUT_PATH)
    assert size < 1 << 20, size
    print(f"wrote {OUT_PATH}: {len(METADATA) - 1} cases, {len(TENSORS)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
