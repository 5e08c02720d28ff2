"""PyTorch side of the dynamic-quantization comparison (issue 19; examples/bench_quant.rs is the
stapes side, benches/run_quant.sh runs both): the same three workloads, f32 against
`torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)` with
the default qconfig (per-tensor weight scales) and the x86 engine, inference under
`torch.inference_mode()`, 2 threads:

- `crdnn`: the reference CRDNN of benches/torch/crdnn.py in eval mode on its packed batch (8
  utterances, lengths 401, 396, ..., 366, 80 log-mels);
- `crdnn_rnn`: its LSTM (2 layers, bidirectional, 512, over 2560 features) and output Linear
  alone on a packed [8, 201, 2560] batch, lengths halved;
- `linear_stack`: 4 x (Linear 512 -> 2048, ReLU, Linear 2048 -> 512) on 64 rows.

One JSON line per workload and precision: the median forward time over `reps` and the bytes of
the quantized layers' weights (f32, or int8 plus scales: `weight().int_repr()` and its scale).

Run: OMP_NUM_THREADS=2 python3 benches/torch/quant.py [reps]
"""

import json
import os
import statistics
import sys
import time
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crdnn import Crdnn, make_inputs  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def median_time(reps, f):
    f()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def report(name, precision, s, nbytes):
    print(json.dumps({"side": "pytorch", "bench": name, "precision": precision, "median_ms": round(s * 1e3, 3),
                      "weight_bytes": nbytes, "threads": torch.get_num_threads()}), flush=True)


def f32_bytes(model):
    return sum(4 * p.numel() for n, p in model.named_parameters()
               if n.split(".")[-1].startswith("weight") and ("rnn" in n or "out" in n or "lin" in n or n[0].isdigit()))


def int8_bytes(qmodel):
    total = 0
    for m in qmodel.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            w = m.weight()
            total += w.int_repr().numel() + 4 * (1 if w.qscheme() == torch.per_tensor_affine else w.q_per_channel_scales().numel())
        elif isinstance(m, torch.ao.nn.quantized.dynamic.LSTM):
            for wv in m._all_weight_values:
                for packed in wv.param.__getstate__()[0][4]:
                    w, _ = torch.ops.quantized.linear_unpack(packed)
                    total += w.int_repr().numel() + 4
    return total


class Rnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(2560, 512, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(1024, 40)

    def forward(self, x, lengths):
        h, _ = self.rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        return self.out(h)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    torch.set_num_threads(2)
    torch.backends.quantized.engine = "x86"
    torch.manual_seed(0)
    q = lambda m: torch.ao.quantization.quantize_dynamic(m, {nn.LSTM, nn.Linear}, dtype=torch.qint8)

    model = Crdnn(0.0).eval()
    feats, lengths, _, _ = make_inputs(False)
    with torch.inference_mode():
        report("crdnn", "f32", median_time(reps, lambda: model(feats, lengths, True)),
               sum(4 * p.numel() for n, p in model.named_parameters() if n.startswith(("rnn.weight", "out.weight"))))
        qm = q(model)
        report("crdnn", "int8", median_time(reps, lambda: qm(feats, lengths, True)), int8_bytes(qm))

    rnn = Rnn().eval()
    x = torch.randn(8, 201, 2560)
    half = (lengths + 1) // 2
    with torch.inference_mode():
        report("crdnn_rnn", "f32", median_time(reps, lambda: rnn(x, half)),
               sum(4 * p.numel() for n, p in rnn.named_parameters() if ".weight" in n))
        qr = q(rnn)
        report("crdnn_rnn", "int8", median_time(reps, lambda: qr(x, half)), int8_bytes(qr))

    layers = []
    for _ in range(4):
        layers += [nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 512)]
    stack = nn.Sequential(*layers).eval()
    x = torch.randn(64, 512)
    with torch.inference_mode():
        report("linear_stack", "f32", median_time(reps * 10, lambda: stack(x)),
               sum(4 * p.numel() for n, p in stack.named_parameters() if n.endswith("weight")))
        qs = q(stack)
        report("linear_stack", "int8", median_time(reps * 10, lambda: qs(x)), int8_bytes(qs))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, engine {torch.backends.quantized.engine}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}", file=sys.stderr)


if __name__ == "__main__":
    main()
