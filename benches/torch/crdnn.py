"""PyTorch side of the CRDNN training-step comparison (examples/bench_crdnn.rs is the stapes side).

Workload (issue 8): the reference CRDNN baseline, f32, the same layer order, shapes and
parameter names as stapes' `Crdnn` with `CrdnnConfig::default()`:

    cnn = Sequential(                       # over [B, 1, T, 80] (time, mel)
        Conv2d(1, 64, 3, padding=1),   BatchNorm2d(64),  ReLU(), MaxPool2d((2, 2)),
        Conv2d(64, 128, 3, padding=1), BatchNorm2d(128), ReLU(), MaxPool2d((1, 2)),
        Conv2d(128, 256, 3, padding=1), BatchNorm2d(256), ReLU(), MaxPool2d((1, 2)))
    rnn = LSTM(256 * 10, 512, num_layers=2, batch_first=True, bidirectional=True, dropout=p)
    out = Linear(1024, 40)

on a batch of 8 utterances of at most 4 s (401 frames of 80 log-mels, 10 ms hop), lengths
401, 396, ..., 366 (padded frames are zero); the LSTM sees the lengths as a packed sequence
(`pack_padded_sequence(enforce_sorted=False)`), which is what stapes' `lengths` argument means.
Targets: random labels 1..39 (blank 0), 50 to 60 per utterance.

One training step: zero_grad, forward, `F.ctc_loss(logits.transpose(0, 1).log_softmax(2), ...,
reduction="mean", zero_infinity=True)`, backward, `clip_grad_norm_(params, 5.0)`, `Adam(lr=1e-3)`
step (PyTorch's default implementation choice for CPU tensors). The model is in training mode
(BatchNorm uses batch statistics and updates its running ones). Dropout between the LSTM
layers is 0 by default (`--dropout 0.15` for the configured baseline: the two sides then draw
different masks, so the losses no longer match exactly).

The script first writes everything the stapes side needs into one safetensors file (default
`target/crdnn_bench.safetensors`, ~76 MB, not committed): the initial `state_dict` under the
prefix `model.`, the inputs under `input.` (`features` [8, 401, 80] f32, `lengths` [8],
`targets` [8, 60] zero-padded, `target_lengths` [8], i64), and in the metadata (`crdnn_bench`,
JSON) the dropout, the per-step losses and gradient norms of the first two steps from this
state (step 2 runs after one Adam update, so it checks backward and the optimizer too) and the
torch version, and the norm of each parameter's gradient in step 1 (`param_grad_norms`, before
clipping, computed in f64). Then it times the step: 2 warm-up steps (the two reference steps), then STEPS
single steps with `time.perf_counter`, and prints one JSON line on stdout
{"name": ..., "median_s": ..., "min_s": ..., "reps": ..., "loss1": ..., "loss2": ...,
 "phases": {"forward_s": ..., "backward_s": ..., "clip_s": ..., "adam_s": ...}}
(phases: medians of the same steps split at forward+loss / backward / clip / Adam),
and the torch version and thread count on stderr.

Run: OMP_NUM_THREADS=2 /root/torchenv/bin/python benches/torch/crdnn.py [steps] [--out PATH]
     [--dropout P] [--full-length]
(`--full-length`: every utterance 401 frames and the LSTM on the plain padded tensor, which
lets PyTorch use its oneDNN LSTM; stapes gets the same inputs.)
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

TORCH_VERSION = "2.11.0"
THREADS = 2
B, T_MAX, N_MELS, VOCAB = 8, 401, 80, 40
CHANNELS, TIME_POOL = (64, 128, 256), (2, 1, 1)
HIDDEN, LAYERS = 512, 2
CLIP, LR = 5.0, 1e-3


class Crdnn(nn.Module):
    """The CRDNN baseline; names as stapes' `Crdnn` (`cnn.N.*`, `rnn.*`, `out.*`)."""

    def __init__(self, dropout):
        super().__init__()
        layers, cin, freq = [], 1, N_MELS
        for c, tp in zip(CHANNELS, TIME_POOL):
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d((tp, 2))]
            cin, freq = c, freq // 2
        self.cnn = nn.Sequential(*layers)
        self.rnn = nn.LSTM(cin * freq, HIDDEN, num_layers=LAYERS, batch_first=True, bidirectional=True,
                           dropout=dropout)
        self.out = nn.Linear(2 * HIDDEN, VOCAB)

    def output_lengths(self, lengths):
        for tp in TIME_POOL:
            lengths = lengths // tp
        return lengths

    def forward(self, x, lengths, packed):
        x = self.cnn(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        out_lens = self.output_lengths(lengths).clamp(max=t)
        if packed:
            h, _ = self.rnn(pack_padded_sequence(x, out_lens, batch_first=True, enforce_sorted=False))
            h, _ = pad_packed_sequence(h, batch_first=True, total_length=t)
        else:
            h, _ = self.rnn(x)
        return self.out(h), out_lens


def make_inputs(full_length):
    g = torch.Generator().manual_seed(8)
    lengths = torch.full((B,), T_MAX) if full_length else torch.tensor([T_MAX - 5 * i for i in range(B)])
    feats = torch.randn(B, T_MAX, N_MELS, generator=g)
    for i, n in enumerate(lengths.tolist()):
        feats[i, n:] = 0.0
    target_lengths = torch.randint(50, 61, (B,), generator=g)
    targets = torch.randint(1, VOCAB, (B, 60), generator=g)
    for i, n in enumerate(target_lengths.tolist()):
        targets[i, n:] = 0
    return feats, lengths, targets, target_lengths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("steps", nargs="?", type=int, default=10)
    ap.add_argument("--out", default="target/crdnn_bench.safetensors")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--full-length", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    if not torch.__version__.startswith(TORCH_VERSION):
        print(f"warning: torch {torch.__version__}, the project pins {TORCH_VERSION}", file=sys.stderr)
    print(f"torch {torch.__version__}: {torch.get_num_threads()} threads, "
          f"mkldnn={torch.backends.mkldnn.is_available()}, capability={torch.backends.cpu.get_cpu_capability()}",
          file=sys.stderr)

    torch.manual_seed(0)
    model = Crdnn(args.dropout).train()
    feats, lengths, targets, target_lengths = make_inputs(args.full_length)
    packed = not args.full_length
    initial = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    params = list(model.parameters())

    names = [n for n, _ in model.named_parameters()]

    def step(phases=None, param_norms=None):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, out_lens = model(feats, lengths, packed)
        loss = F.ctc_loss(logits.transpose(0, 1).log_softmax(2), targets, out_lens, target_lengths,
                          blank=0, reduction="mean", zero_infinity=True)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if param_norms is not None:
            param_norms.update({n: p.grad.double().norm().item() for n, p in zip(names, params)})
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if phases is not None:
            phases.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        return loss.item(), norm.item()

    # The two warm-up steps are the reference steps the stapes side checks against.
    param_norms = {}
    ref = [step(param_norms=param_norms), step()]
    meta = {"dropout": args.dropout, "full_length": args.full_length, "clip": CLIP, "lr": LR,
            "loss": [r[0] for r in ref], "grad_norm": [r[1] for r in ref], "param_grad_norms": param_norms,
            "torch": torch.__version__}
    print(f"reference steps: loss {meta['loss']}, grad norm {meta['grad_norm']}", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tensors = dict(initial)
    tensors.update({"input.features": feats.contiguous(), "input.lengths": lengths.to(torch.int64),
                    "input.targets": targets.contiguous(), "input.target_lengths": target_lengths.to(torch.int64)})
    save_file(tensors, args.out, metadata={"crdnn_bench": json.dumps(meta)})

    samples, phases = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        step(phases)
        samples.append(time.perf_counter() - t)
    name = f"crdnn_b{B}_t{T_MAX}_{'full' if args.full_length else 'packed'}_p{args.dropout:g}"
    med = lambda i: statistics.median(p[i] for p in phases)  # noqa: E731
    print(json.dumps({"name": name, "median_s": statistics.median(samples), "min_s": min(samples),
                      "reps": args.steps, "loss1": meta["loss"][0], "loss2": meta["loss"][1],
                      "phases": {"forward_s": med(0), "backward_s": med(1), "clip_s": med(2), "adam_s": med(3)}}),
          flush=True)


if __name__ == "__main__":
    main()
