#!/usr/bin/env python3
"""Golden fixtures for the LSTM/GRU parity test (`tests/parity_nn_rnn.rs`).

Runs torch.nn.LSTM / torch.nn.GRU on small sizes and writes ONE file,
`tests/golden/nn_rnn.safetensors`. Variable-length cases go through
`pack_padded_sequence(x, lengths, batch_first, enforce_sorted=False)` and
`pad_packed_sequence(..., total_length=T)`, which is what stapes' `lengths` argument mirrors.

File layout, per case `<case>` (case names never contain a '.'):

  <case>.x                     the input ([T, B, I], or [B, T, I] with batch_first)
  <case>.h0, <case>.c0         the initial states [L*D, B, H] (absent: zeros, none passed)
  <case>.p.<name>              every parameter, by its PyTorch name (load_state_dict)
  <case>.output, .h_n, .c_n    the results (output zero-padded at padded positions)
  <case>.w_output, .w_h_n, .w_c_n
                               random weights: backward is that of
                               sum(output * w_output) + sum(h_n * w_h_n) + sum(c_n * w_c_n)
  <case>.grad.x, .grad.h0, .grad.c0, .grad.<name>
                               the gradients of that loss

Metadata (`__metadata__`): key = case name, value = a flat JSON object: cell ("lstm"/"gru"),
input_size, hidden_size, num_layers, bias, batch_first, bidirectional, dtype ("f32"/"f64"),
has_h0, lengths (array, or null for full-length batches). "_generator" describes the script.

Run: /root/torchenv/bin/python tools/golden/nn_rnn.py (deterministic: rerunning gives the same
bytes; torch runs single-threaded, each case seeds its own generator from its name).
"""

import json
import os
import sys
import zlib

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ops import check_written, write_safetensors  # noqa: E402  (the shared, reproducible writer)

TORCH_VERSION = "2.11.0"
if not torch.__version__.startswith(TORCH_VERSION):
    sys.exit(f"tools/golden/nn_rnn.py needs torch {TORCH_VERSION}, found {torch.__version__}")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "nn_rnn.safetensors")

TENSORS = {}
METADATA = {}
DTYPES = {"f32": torch.float32, "f64": torch.float64}


def store(key, t):
    assert key not in TENSORS, key
    TENSORS[key] = t.detach().contiguous().clone()


def case(name, cell, *, I=5, H=7, B=3, T=6, layers=2, bidirectional=True, bias=True,
         batch_first=False, dtype="f64", has_h0=True, lengths=None):
    assert "." not in name and name not in METADATA
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    torch.manual_seed(zlib.crc32(name.encode()))
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    model = cls(I, H, num_layers=layers, bias=bias, batch_first=batch_first,
                bidirectional=bidirectional).to(dt)
    D = 2 if bidirectional else 1
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dt).requires_grad_()
    h0 = torch.randn(layers * D, B, H, generator=g, dtype=torch.float64).to(dt).requires_grad_()
    c0 = torch.randn(layers * D, B, H, generator=g, dtype=torch.float64).to(dt).requires_grad_()
    state = None
    if has_h0:
        state = (h0, c0) if cell == "lstm" else h0
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, hidden = model(inp, state)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    results = {"output": out}
    if cell == "lstm":
        results["h_n"], results["c_n"] = hidden
    else:
        results["h_n"] = hidden
    loss = 0
    for k, v in results.items():
        w = torch.randn(v.shape, generator=g, dtype=torch.float64).to(dt)
        store(f"{name}.{k}", v)
        store(f"{name}.w_{k}", w)
        loss = loss + (v * w).sum()
    loss.backward()
    store(f"{name}.x", x)
    store(f"{name}.grad.x", x.grad)
    if has_h0:
        store(f"{name}.h0", h0)
        store(f"{name}.grad.h0", h0.grad)
        if cell == "lstm":
            store(f"{name}.c0", c0)
            store(f"{name}.grad.c0", c0.grad)
    for pname, p in model.named_parameters():
        store(f"{name}.p.{pname}", p)
        store(f"{name}.grad.{pname}", p.grad)
    METADATA[name] = json.dumps({
        "cell": cell, "input_size": I, "hidden_size": H, "num_layers": layers, "bias": bias,
        "batch_first": batch_first, "bidirectional": bidirectional, "dtype": dtype,
        "has_h0": has_h0, "lengths": lengths,
    })


def main():
    for cell in ("lstm", "gru"):
        # The cases: bidirectional, 2 layers, variable lengths (unsorted), given states,
        # time-major and batch_first.
        case(f"{cell}_bi2_varlen_h0", cell, lengths=[6, 2, 4])
        case(f"{cell}_bi2_varlen_batch_first", cell, batch_first=True, lengths=[3, 6, 1])
        case(f"{cell}_bi2_varlen_h0_batch_first", cell, batch_first=True, lengths=[2, 5, 6])
        # full length (no packing), f32: the vectorised f32 activations
        case(f"{cell}_bi2_full_h0_f32", cell, dtype="f32")
        case(f"{cell}_bi2_varlen_f32", cell, dtype="f32", has_h0=False, lengths=[4, 6, 5], B=3)
        # unidirectional, 3 layers, no bias, odd sizes
        case(f"{cell}_uni3_nobias_varlen", cell, I=4, H=3, B=4, T=5, layers=3, bidirectional=False,
             bias=False, lengths=[5, 1, 3, 5])
        # one layer, one sequence
        case(f"{cell}_uni1_b1", cell, I=2, H=5, B=1, T=7, layers=1, bidirectional=False)

    meta = dict(METADATA)
    meta["_generator"] = json.dumps({"script": "tools/golden/nn_rnn.py", "torch": torch.__version__,
                                     "cases": len(METADATA)})
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    write_safetensors(OUT_PATH, TENSORS, meta)
    check_written(OUT_PATH, TENSORS, meta)
    size = os.path.getsize(OUT_PATH)
    assert size < 1 << 20, f"{OUT_PATH} is {size} bytes, over 1 MiB"
    print(f"wrote {OUT_PATH}: {len(METADATA)} cases, {len(TENSORS)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
