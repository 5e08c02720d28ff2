"""PyTorch side of the op comparison: the workloads of benches/ops.rs and
examples/bench_table.rs, timed the same way, on 2 CPU threads.

Timing: warm up (at least 2 calls and 0.3 s), then time single calls with
time.perf_counter until at least 10 calls and 2 s (at most 200 calls); report the median.
Output: one JSON line per workload on stdout, in the format of examples/bench_table.rs:
{"name": ..., "median_s": ..., "min_s": ..., "reps": ..., "flops": ..., "bytes": ...}
and the torch version and thread count on stderr.

Run: OMP_NUM_THREADS=2 /root/torchenv/bin/python benches/torch/ops.py [name-filter ...]
(benches/run_comparison.sh does this).
"""

import json
import statistics
import sys
import time

import torch

TORCH_VERSION = "2.11.0"  # the version the project pins (tools/golden use the same)
THREADS = 2
F32 = 4


def timeit(fn):
    start = time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - start < 0.3:
        fn()
        calls += 1
    samples = []
    start = time.perf_counter()
    while len(samples) < 10 or (time.perf_counter() - start < 2.0 and len(samples) < 200):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), min(samples), len(samples)


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def workloads():
    g = torch.Generator().manual_seed(0)
    out = []
    for name, n in (("matmul_1024", 1024), ("matmul_256", 256)):
        a, b = randn(g, n, n), randn(g, n, n)
        out.append((name, 2 * n**3, 0, lambda a=a, b=b: torch.matmul(a, b)))

    x = randn(g, 4096, 4096)
    out.append(("softmax_4096x4096", 0, 2 * x.numel() * F32, lambda x=x: torch.softmax(x, dim=-1)))

    a, b = randn(g, 4096, 4096), randn(g, 4096)
    out.append(("add_bcast_4096x4096", 0, (2 * a.numel() + b.numel()) * F32, lambda a=a, b=b: torch.add(a, b)))

    x = randn(g, 16 << 20)
    out.append(("exp_16M", 0, 2 * x.numel() * F32, lambda x=x: torch.exp(x)))

    x = randn(g, 4096, 4096)
    out.append(("sum_lastdim_4096x4096", 0, (x.numel() + 4096) * F32, lambda x=x: torch.sum(x, dim=1)))

    x, w, b = randn(g, 4096, 1024), randn(g, 1024), randn(g, 1024)
    out.append((
        "layer_norm_4096x1024", 0, (2 * x.numel() + 2 * 1024) * F32,
        lambda x=x, w=w, b=b: torch.nn.functional.layer_norm(x, (1024,), w, b, 1e-5),
    ))

    # Conv stack training step: forward, backward from a fixed random upstream gradient,
    # gradients of both weights and both biases (the input does not require grad).
    x = randn(g, 8, 1, 80, 400)
    w1 = (randn(g, 64, 1, 3, 3) / 3).requires_grad_()
    b1 = (randn(g, 64) * 0.1).requires_grad_()
    w2 = (randn(g, 128, 64, 3, 3) / 24).requires_grad_()
    b2 = (randn(g, 128) * 0.1).requires_grad_()
    gy = randn(g, 8, 128, 80, 400)
    params = (w1, b1, w2, b2)
    F = torch.nn.functional

    def conv_step():
        for p in params:
            p.grad = None
        h = F.relu(F.conv2d(x, w1, b1, stride=1, padding=1))
        y = F.conv2d(h, w2, b2, stride=1, padding=1)
        y.backward(gy)
        assert all(p.grad is not None for p in params)

    hw = 80 * 400
    conv1, conv2 = 2 * 8 * 64 * 9 * hw, 2 * 8 * 128 * 64 * 9 * hw
    out.append(("conv2d_fwd_bwd", 2 * conv1 + 3 * conv2, 0, conv_step))
    return out


def main():
    torch.set_num_threads(THREADS)
    if not torch.__version__.startswith(TORCH_VERSION):
        print(f"warning: torch {torch.__version__}, the project pins {TORCH_VERSION}", file=sys.stderr)
    print(f"torch {torch.__version__}: {torch.get_num_threads()} threads, "
          f"mkldnn={torch.backends.mkldnn.is_available()}, capability={torch.backends.cpu.get_cpu_capability()}",
          file=sys.stderr)
    filters = sys.argv[1:]
    for name, flops, nbytes, fn in workloads():
        if filters and not any(f in name for f in filters):
            continue
        # The non-conv inputs do not require grad; no_grad only makes that explicit.
        if name == "conv2d_fwd_bwd":
            med, mn, reps = timeit(fn)
        else:
            with torch.no_grad():
                med, mn, reps = timeit(fn)
        print(json.dumps({"name": name, "median_s": med, "min_s": mn, "reps": reps,
                          "flops": flops, "bytes": nbytes}), flush=True)


if __name__ == "__main__":
    main()
