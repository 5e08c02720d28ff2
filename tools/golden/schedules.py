#!/usr/bin/env python3
"""Golden fixtures for the learning-rate schedule parity test (`tests/parity_schedules.rs`).

Drives each PyTorch scheduler below on a dummy `torch.optim.SGD([param], lr=..., momentum=0.9)`
exactly as a training loop does (`optimizer.step(); scheduler.step()`), recording the learning
rate in effect at each step (and the momentum, for the schedules that cycle it), and writes ONE
file, `tests/golden/schedules.safetensors`.

File layout, per configuration `<case>` (case names never contain a '.'):

  <case>.lr         f64[n]  param_groups[0]["lr"] before the n-th optimizer step (step 0 first)
  <case>.momentum   f64[n]  param_groups[0]["momentum"] likewise (cyclic/onecycle only)

Metadata (`__metadata__`): key = case name, value = a flat JSON object of the scheduler's
arguments, with `"schedule"` naming the torch class. `_generator` records script and version.
"""

import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

TORCH_VERSION = "2.11.0"
if not torch.__version__.startswith(TORCH_VERSION):
    sys.exit(f"tools/golden/schedules.py needs torch {TORCH_VERSION}, found {torch.__version__}")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "schedules.safetensors")
MAX_BYTES = 1 << 20

TENSORS = {}
METADATA = {}


def record(case, make_scheduler, lr, steps, params, momentum=False):
    """Run `steps` steps of the scheduler made by `make_scheduler(optimizer)` and store them."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=lr, momentum=0.9)
    scheduler = make_scheduler(optimizer)
    lrs, moms = [], []
    for _ in range(steps):
        group = optimizer.param_groups[0]
        lrs.append(float(group["lr"]))
        moms.append(float(group["momentum"]))
        optimizer.step()
        scheduler.step()
    TENSORS[f"{case}.lr"] = torch.tensor(lrs, dtype=torch.float64)
    if momentum:
        TENSORS[f"{case}.momentum"] = torch.tensor(moms, dtype=torch.float64)
    METADATA[case] = json.dumps(dict(params, steps=steps), sort_keys=True)
    return lrs


S = torch.optim.lr_scheduler

# CyclicLR: the reference recipe (triangular2, 1e-5..1e-4, 2000 steps up), plain triangular with
# an asymmetric cycle, and exp_range (scale_mode "iterations").
record(
    "cyclic_triangular2",
    lambda o: S.CyclicLR(o, base_lr=1e-5, max_lr=1e-4, step_size_up=2000, mode="triangular2"),
    lr=1e-5, steps=10000, momentum=True,
    params={"schedule": "CyclicLR", "base_lr": 1e-5, "max_lr": 1e-4, "step_size_up": 2000,
            "mode": "triangular2", "cycle_momentum": True, "base_momentum": 0.8,
            "max_momentum": 0.9},
)
record(
    "cyclic_triangular",
    lambda o: S.CyclicLR(o, base_lr=1e-3, max_lr=6e-3, step_size_up=300, step_size_down=700,
                         mode="triangular", cycle_momentum=False),
    lr=1e-3, steps=5000,
    params={"schedule": "CyclicLR", "base_lr": 1e-3, "max_lr": 6e-3, "step_size_up": 300,
            "step_size_down": 700, "mode": "triangular", "cycle_momentum": False},
)
record(
    "cyclic_exp_range",
    lambda o: S.CyclicLR(o, base_lr=1e-4, max_lr=1e-3, step_size_up=500, step_size_down=1500,
                         mode="exp_range", gamma=0.9997, base_momentum=0.85, max_momentum=0.95),
    lr=1e-4, steps=10000, momentum=True,
    params={"schedule": "CyclicLR", "base_lr": 1e-4, "max_lr": 1e-3, "step_size_up": 500,
            "step_size_down": 1500, "mode": "exp_range", "gamma": 0.9997, "cycle_momentum": True,
            "base_momentum": 0.85, "max_momentum": 0.95},
)
record(
    "step",
    lambda o: S.StepLR(o, step_size=300, gamma=0.7),
    lr=0.1, steps=3000,
    params={"schedule": "StepLR", "lr": 0.1, "step_size": 300, "gamma": 0.7},
)
record(
    "multistep",
    lambda o: S.MultiStepLR(o, milestones=[100, 700, 700, 1500], gamma=0.3),
    lr=0.05, steps=3000,
    params={"schedule": "MultiStepLR", "lr": 0.05, "milestones": [100, 700, 700, 1500],
            "gamma": 0.3},
)
record(
    "exponential",
    lambda o: S.ExponentialLR(o, gamma=0.999),
    lr=0.1, steps=5000,
    params={"schedule": "ExponentialLR", "lr": 0.1, "gamma": 0.999},
)
# T_max well below the run length: covers the restart branch and the periodic continuation.
cos_lrs = record(
    "cosine",
    lambda o: S.CosineAnnealingLR(o, T_max=2500, eta_min=1e-6),
    lr=0.1, steps=10000,
    params={"schedule": "CosineAnnealingLR", "lr": 0.1, "T_max": 2500, "eta_min": 1e-6},
)
closed = [1e-6 + (0.1 - 1e-6) * (1 + math.cos(math.pi * e / 2500)) / 2 for e in range(10000)]
rel = max(abs(a - b) / abs(b) for a, b in zip(cos_lrs, closed))
print(f"CosineAnnealingLR: recursive vs closed form, max relative difference {rel:.3e}")
record(
    "onecycle_cos",
    lambda o: S.OneCycleLR(o, max_lr=0.01, total_steps=10000),
    lr=0.01, steps=10000, momentum=True,
    params={"schedule": "OneCycleLR", "max_lr": 0.01, "total_steps": 10000, "pct_start": 0.3,
            "anneal_strategy": "cos", "div_factor": 25.0, "final_div_factor": 1e4,
            "three_phase": False, "cycle_momentum": True, "base_momentum": 0.85,
            "max_momentum": 0.95},
)
record(
    "onecycle_linear_three_phase",
    lambda o: S.OneCycleLR(o, max_lr=0.02, total_steps=10000, pct_start=0.25,
                           anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0,
                           three_phase=True),
    lr=0.02, steps=10000, momentum=True,
    params={"schedule": "OneCycleLR", "max_lr": 0.02, "total_steps": 10000, "pct_start": 0.25,
            "anneal_strategy": "linear", "div_factor": 10.0, "final_div_factor": 100.0,
            "three_phase": True, "cycle_momentum": True, "base_momentum": 0.85,
            "max_momentum": 0.95},
)
record(
    "linear_warmup",
    lambda o: S.LinearLR(o, start_factor=0.01, end_factor=1.0, total_iters=1000),
    lr=3e-4, steps=2000,
    params={"schedule": "LinearLR", "lr": 3e-4, "start_factor": 0.01, "end_factor": 1.0,
            "total_iters": 1000},
)

METADATA["_generator"] = f"tools/golden/schedules.py, torch {torch.__version__}"
TENSORS = {k: v.contiguous() for k, v in sorted(TENSORS.items())}
os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
save_file(TENSORS, OUT_PATH, metadata=METADATA)
size = os.path.getsize(OUT_PATH)
assert size < MAX_BYTES, f"{OUT_PATH} is {size} bytes, over the 1 MiB budget"
print(f"wrote {OUT_PATH}: {len(METADATA) - 1} cases, {len(TENSORS)} series, {size} bytes")
