"""PyTorch side of the LSTM comparison (examples/bench_lstm.rs is the stapes side).

Workload (issue 5, "LSTM and GRU"): torch.nn.LSTM(input_size=256, hidden_size=512,
num_layers=2, bidirectional=True), f32, time-major input [T=100, B=8, 256]; one training step
is forward, loss = (output * gy).sum() for a fixed random gy, backward (gradients of every
weight and of the input), with the gradients cleared before each step.

Timing: warm up 3 steps, then time STEPS single steps with time.perf_counter; report the
median step time and that median x 200 (the issue's "200 steps"). The same method as the
stapes side; then the median of STEPS forward passes under no_grad. Output: one JSON line
per model on stdout
{"name": ..., "median_s": ..., "min_s": ..., "reps": ..., "x200_s": ..., "fwd_median_s": ...}
and the torch version, thread count and oneDNN availability on stderr.

Run: OMP_NUM_THREADS=2 /root/torchenv/bin/python benches/torch/lstm.py [steps] [lstm|gru]
"""

import json
import statistics
import sys
import time

import torch

TORCH_VERSION = "2.11.0"
THREADS = 2
T, B, I, H, LAYERS = 100, 8, 256, 512, 2


def run(kind, steps):
    g = torch.Generator().manual_seed(0)
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    torch.manual_seed(0)
    model = cls(I, H, num_layers=LAYERS, bidirectional=True)
    x = torch.randn(T, B, I, generator=g).requires_grad_()
    gy = torch.randn(T, B, 2 * H, generator=g)

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = model(x)
        (out * gy).sum().backward()

    for _ in range(3):
        step()
    samples = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t)
    med = statistics.median(samples)
    fwd = []
    with torch.no_grad():
        for _ in range(steps):
            t = time.perf_counter()
            model(x)
            fwd.append(time.perf_counter() - t)
    return {"name": f"{kind}_bi2_i{I}_h{H}_b{B}_t{T}", "median_s": med, "min_s": min(samples),
            "reps": steps, "x200_s": med * 200, "fwd_median_s": statistics.median(fwd)}


def main():
    torch.set_num_threads(THREADS)
    if not torch.__version__.startswith(TORCH_VERSION):
        print(f"warning: torch {torch.__version__}, the project pins {TORCH_VERSION}", file=sys.stderr)
    print(f"torch {torch.__version__}: {torch.get_num_threads()} threads, "
          f"mkldnn={torch.backends.mkldnn.is_available()}, capability={torch.backends.cpu.get_cpu_capability()}",
          file=sys.stderr)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    kinds = sys.argv[2:] or ["lstm"]
    for kind in kinds:
        print(json.dumps(run(kind, steps)), flush=True)


if __name__ == "__main__":
    main()
