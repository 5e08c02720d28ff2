#!/usr/bin/env python3
"""Golden fixtures for `tests/parity_ctc.rs`: `torch.nn.functional.ctc_loss`, loss and gradients.

Writes ONE file, `tests/golden/ctc.safetensors` (torch 2.11.0, CPU, one thread, byte-for-byte
reproducible: every case seeds its own generator from its name).

`__metadata__` maps each case name to a flat JSON object:
    "path": "log_probs" | "logits"   what the Rust side differentiates: the log-probabilities
                                     (torch's ctc_loss gradient, which assumes log_softmax inputs)
                                     or the logits (ctc_loss(log_softmax(x)) differentiated w.r.t. x,
                                     compared with stapes' fused ctc_loss_from_logits)
    "dtype": "f32" | "f64", "reduction": "none" | "sum" | "mean", "blank", "zero_infinity",
    "targets": "padded" | "concat", "input_lengths", "target_lengths"
Tensors:
    <case>.input     [T, B, C] log-probabilities (path log_probs) or logits (path logits)
    <case>.targets   int64, [B, S] padded or [sum(target_lengths)] concatenated
    <case>.out       the loss ([B] for reduction none, else a scalar)
    <case>.gout      the upstream gradient for reduction none (else backward() of the scalar)
    <case>.grad      the gradient w.r.t. <case>.input
"""

import json
import os
import sys
import zlib

import torch
import torch.nn.functional as F
from safetensors import safe_open
from golden_io import write_safetensors  # noqa: E402  (the one reproducible writer)

TORCH_VERSION = "2.11.0"
if not torch.__version__.startswith(TORCH_VERSION):
    sys.exit(f"tools/golden/ctc.py needs torch {TORCH_VERSION}, found {torch.__version__}")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "ctc.safetensors")
DTYPES = {"f32": torch.float32, "f64": torch.float64}
TENSORS = {}
METADATA = {}


def gen(name):
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def store(key, t):
    assert key not in TENSORS, key
    TENSORS[key] = t.detach().contiguous().clone()


def case(name, x, targets, input_lengths, target_lengths, *, path, reduction, blank=0, zero_infinity=False):
    """x: [T, B, C] logits in the case's dtype; targets: padded [B, S] or concatenated."""
    assert "." not in name and name not in METADATA, name
    g = gen(name + ".gout")
    if path == "log_probs":
        inp = x.log_softmax(-1).detach().requires_grad_(True)
        lp = inp
    else:
        inp = x.detach().clone().requires_grad_(True)
        lp = inp.log_softmax(-1)
    loss = F.ctc_loss(lp, targets, torch.tensor(input_lengths), torch.tensor(target_lengths), blank=blank,
                      reduction=reduction, zero_infinity=zero_infinity)
    if reduction == "none":
        gout = torch.randn(loss.shape, generator=g, dtype=loss.dtype)
        loss.backward(gout)
        store(f"{name}.gout", gout)
    else:
        loss.backward()
    store(f"{name}.input", inp)
    store(f"{name}.targets", targets)
    store(f"{name}.out", loss)
    store(f"{name}.grad", inp.grad)
    METADATA[name] = json.dumps({
        "path": path, "dtype": {torch.float32: "f32", torch.float64: "f64"}[x.dtype], "reduction": reduction,
        "blank": blank, "zero_infinity": zero_infinity, "targets": "padded" if targets.dim() == 2 else "concat",
        "input_lengths": list(input_lengths), "target_lengths": list(target_lengths),
    }, sort_keys=True)


def random_targets(g, b, s_max, c, blank, target_lengths, repeat_prob):
    """Labels in [0, C) without the blank; with probability repeat_prob a label repeats the previous one."""
    labels = [k for k in range(c) if k != blank]
    rows = []
    for i in range(b):
        row = []
        for j in range(s_max):
            if j > 0 and torch.rand((), generator=g).item() < repeat_prob:
                row.append(row[-1])
            else:
                row.append(labels[torch.randint(len(labels), (), generator=g).item()])
        rows.append(row)
    return torch.tensor(rows, dtype=torch.int64).reshape(b, s_max)


def random_cases():
    """Random T, B, C, lengths; every reduction, path, target format, both dtypes."""
    i = 0
    for dtype in ("f32", "f64"):
        for path in ("log_probs", "logits"):
            for reduction in ("none", "sum", "mean"):
                for fmt in ("padded", "concat"):
                    name = f"random_{i}_{dtype}_{path}_{reduction}_{fmt}"
                    i += 1
                    g = gen(name)
                    t = int(torch.randint(1, 25, (), generator=g))
                    b = int(torch.randint(1, 5, (), generator=g))
                    c = int(torch.randint(2, 10, (), generator=g))
                    blank = 0 if i % 3 else int(torch.randint(0, c, (), generator=g))
                    input_lengths = [int(torch.randint(max(1, t // 2), t + 1, (), generator=g)) for _ in range(b)]
                    input_lengths[0] = t
                    # target lengths up to about half the input length, so most alignments exist
                    target_lengths = [int(torch.randint(0, max(1, il // 2) + 1, (), generator=g)) for il in input_lengths]
                    s_max = max(target_lengths) + int(torch.randint(0, 3, (), generator=g))
                    padded = random_targets(g, b, s_max, c, blank, target_lengths, 0.3)
                    targets = padded if fmt == "padded" else torch.cat(
                        [padded[k, :target_lengths[k]] for k in range(b)])
                    x = torch.randn(t, b, c, generator=g, dtype=DTYPES[dtype]) * 2
                    case(name, x, targets, input_lengths, target_lengths, path=path, reduction=reduction, blank=blank)


def special_cases():
    for dtype in ("f32", "f64"):
        dt = DTYPES[dtype]
        g = gen("special_" + dtype)
        # T = 1: empty target (only the blank path) and a one-label target
        x = torch.randn(1, 2, 4, generator=g, dtype=dt)
        case(f"t1_{dtype}", x, torch.tensor([[0], [3]]), [1, 1], [0, 1], path="log_probs", reduction="none")
        # all targets empty; input length 0 with an empty target (loss 0)
        x = torch.randn(6, 3, 5, generator=g, dtype=dt)
        case(f"s0_{dtype}", x, torch.zeros(3, 0, dtype=torch.int64), [6, 3, 0], [0, 0, 0], path="logits",
             reduction="mean")
        # repeated labels: "1 1" needs 3 frames, "2 2 2" needs 5; impossible with fewer
        x = torch.randn(5, 4, 4, generator=g, dtype=dt)
        tg = torch.tensor([[1, 1, 0], [2, 2, 2], [1, 1, 0], [3, 3, 3]])
        for zi in (False, True):
            for red in ("none", "sum", "mean"):
                case(f"repeat_zi{int(zi)}_{red}_{dtype}", x, tg, [3, 5, 2, 4], [2, 3, 2, 3], path="log_probs",
                     reduction=red, zero_infinity=zi)
            case(f"repeat_logits_zi{int(zi)}_{dtype}", x, tg, [3, 5, 2, 4], [2, 3, 2, 3], path="logits",
                 reduction="mean", zero_infinity=zi)
        # target longer than the input: impossible (input length 1 for a non-empty target too)
        x = torch.randn(4, 3, 6, generator=g, dtype=dt)
        tg = torch.tensor([1, 2, 3, 4, 5, 1, 2, 5])
        case(f"too_long_zi0_{dtype}", x, tg, [4, 1, 4], [5, 1, 2], path="log_probs", reduction="none")
        case(f"too_long_zi1_{dtype}", x, tg, [4, 1, 4], [5, 1, 2], path="logits", reduction="sum",
             zero_infinity=True)
        # blank in the middle and last, long sequences (deep recursions)
        x = torch.randn(60, 2, 7, generator=g, dtype=dt) * 3
        tg = torch.randint(0, 6, (2, 20), generator=g)
        tg_mid = torch.where(tg >= 3, tg + 1, tg)  # skip class 3
        case(f"blank_mid_{dtype}", x, tg_mid, [60, 45], [20, 17], path="log_probs", reduction="mean", blank=3)
        case(f"blank_last_{dtype}", x, tg, [60, 50], [20, 20], path="logits", reduction="none", blank=6)
    # warp-ctc's options test input (probabilities from Alex Graves' implementation, blank 5):
    # the loss of sample 0 is published as 3.3421143650988143
    probs = torch.tensor([[[0.633766, 0.221185, 0.0917319, 0.0129757, 0.0142857, 0.0260553]],
                          [[0.111121, 0.588392, 0.278779, 0.0055756, 0.00569609, 0.010436]],
                          [[0.0357786, 0.633813, 0.321418, 0.00249248, 0.00272882, 0.0037688]],
                          [[0.0663296, 0.643849, 0.280111, 0.00283995, 0.0035545, 0.00331533]],
                          [[0.458235, 0.396634, 0.123377, 0.00648837, 0.00903441, 0.00623107]]],
                         dtype=torch.float64)
    case("warpctc_options_f64", probs.log(), torch.tensor([[0, 1, 2, 1, 0]]), [5], [5], path="logits",
         reduction="none", blank=5)


def main():
    random_cases()
    special_cases()
    METADATA["_generator"] = f"tools/golden/ctc.py, torch {torch.__version__}"
    write_safetensors(OUT_PATH, TENSORS, METADATA)
    size = os.path.getsize(OUT_PATH)
    assert size < 1 << 20, size
    print(f"wrote {OUT_PATH}: {len(METADATA) - 1} cases, {len(TENSORS)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
