"""PyTorch side of the CTC comparison (examples/bench_ctc.rs): ctc_loss on log_softmax output,
forward + backward, T = 200, B = 16, C = 41, S = 50, f32, mean reduction, 2 CPU threads.

Timing as benches/torch/ops.py: warm up (at least 2 calls and 0.3 s), then single calls until
at least 10 calls and 2 s (at most 200); the median. One JSON line on stdout:
{"name": "ctc_log_softmax", "median_s": ..., "min_s": ..., "reps": ...}

Run: OMP_NUM_THREADS=2 /root/torchenv/bin/python benches/torch/ctc.py
"""

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

THREADS = 2
T, B, C, S = 200, 16, 41, 50


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


def main():
    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, C, generator=g).requires_grad_(True)
    targets = torch.randint(1, C, (B, S), generator=g)
    il = torch.full((B,), T, dtype=torch.int64)
    tl = torch.full((B,), S, dtype=torch.int64)

    def step():
        x.grad = None
        loss = F.ctc_loss(x.log_softmax(2), targets, il, tl)
        loss.backward()

    median, low, reps = timeit(step)
    print(json.dumps({"name": "ctc_log_softmax", "median_s": median, "min_s": low, "reps": reps}))


if __name__ == "__main__":
    main()
