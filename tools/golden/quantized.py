"""Golden outputs of dynamic int8 quantization (issue 19), from PyTorch's
`torch.ao.quantization.quantize_dynamic` with the x86 engine (fbgemm kernels).

Cases, each written to `tests/golden/quantized.safetensors` under its prefix:
- `lin_tensor.` / `lin_channel.`: `nn.Linear(48, 40)` quantized with `default_dynamic_qconfig`
  (per-tensor symmetric int8 weights) and `per_channel_dynamic_qconfig` (per output channel).
  Stored: the f32 `weight` and `bias`, PyTorch's int8 weights `wq` and their `scales`, an input
  `x` [2, 5, 48] (not centred: min and max differ), the activation qparams PyTorch picks for it
  (`x_qparams` = [scale, zero_point], `torch._choose_qparams_per_tensor(x, reduce_range=True)`),
  and the quantized module's output `y`.
- `lstm.`: `nn.LSTM(12, 10, num_layers=2, bidirectional=True, batch_first=True)` quantized per
  tensor. Stored per layer and direction `l{k}{_reverse}`: `w_ih_q`, `w_ih_scale`, `w_hh_q`,
  `w_hh_scale`, `b_ih`, `b_hh` (unpacked from the quantized module), the input `x` [3, 7, 12]
  and the quantized module's output `y` [3, 7, 20] with its final `h_n`, `c_n`; and the same
  batch as a packed sequence of `lengths` 7, 4, 5 (`y_packed` zero-padded, `h_n_packed`,
  `c_n_packed`). `gru.`: the same for `nn.GRU` (no cell state).

Run: python tools/golden/quantized.py   (torch 2.11.0)
"""

import os
import sys
import warnings

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import write_safetensors  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden")
Q = torch.ao.quantization


def main():
    torch.backends.quantized.engine = "x86"
    torch.manual_seed(19)
    t = {}
    for name, qconfig in [("lin_tensor", Q.default_dynamic_qconfig), ("lin_channel", Q.per_channel_dynamic_qconfig)]:
        lin = nn.Linear(48, 40)
        x = torch.randn(2, 5, 48) * 1.5 + 0.4
        qm = Q.quantize_dynamic(nn.Sequential(lin), {nn.Linear: qconfig}, dtype=torch.qint8)
        w = qm[0].weight()
        if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            scales = torch.tensor([w.q_scale()], dtype=torch.float32)
        else:
            scales = w.q_per_channel_scales().to(torch.float32)
        scale, zp = torch._choose_qparams_per_tensor(x, True)
        with torch.no_grad():
            y = qm(x)
        t.update({f"{name}.weight": lin.weight.detach().clone(), f"{name}.bias": lin.bias.detach().clone(),
                  f"{name}.wq": w.int_repr().clone(), f"{name}.scales": scales, f"{name}.x": x,
                  f"{name}.x_qparams": torch.tensor([scale, float(zp)], dtype=torch.float64), f"{name}.y": y})

    for kind, cls in [("lstm", nn.LSTM), ("gru", nn.GRU)]:
        rnn_case(t, kind, cls)
    write_safetensors(os.path.join(OUT, "quantized.safetensors"), t,
                      {"torch": torch.__version__, "engine": torch.backends.quantized.engine})
    print("wrote", len(t), "tensors")


def rnn_case(t, kind, cls):
    rnn = cls(12, 10, num_layers=2, bidirectional=True, batch_first=True)
    q = Q.quantize_dynamic(nn.Sequential(rnn), {cls}, dtype=torch.qint8)[0]
    x = torch.randn(3, 7, 12)
    with torch.no_grad():
        out = q(x)
    y, h = out[0], out[1]
    if kind == "lstm":
        h, c = h
        t[f"{kind}.c_n"] = c
    t.update({f"{kind}.x": x, f"{kind}.y": y, f"{kind}.h_n": h})
    # the same batch as a packed sequence of lengths 7, 4, 5 (outputs zero-padded back)
    lengths = torch.tensor([7, 4, 5])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        yp, hp = q(packed)
    yp, _ = nn.utils.rnn.pad_packed_sequence(yp, batch_first=True, total_length=7)
    if kind == "lstm":
        hp, cp = hp
        t[f"{kind}.c_n_packed"] = cp
    t.update({f"{kind}.lengths": lengths, f"{kind}.y_packed": yp, f"{kind}.h_n_packed": hp})
    for i, wv in enumerate(q._all_weight_values):
        layer, reverse = divmod(i, 2)
        key = f"{kind}.l{layer}{'_reverse' if reverse else ''}"
        # ('quantized_dynamic', [b_ih, b_hh], [], [1], [packed w_ih, packed w_hh])
        state = wv.param.__getstate__()[0]
        assert state[0] == "quantized_dynamic", state[0]
        b_ih, b_hh = state[1]
        w_ih_packed, w_hh_packed = state[4]
        for nm, packed_w in [("w_ih", w_ih_packed), ("w_hh", w_hh_packed)]:
            wq, _ = torch.ops.quantized.linear_unpack(packed_w)
            assert wq.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric) and wq.q_zero_point() == 0
            t[f"{key}.{nm}_q"] = wq.int_repr().clone()
            t[f"{key}.{nm}_scale"] = torch.tensor([wq.q_scale()], dtype=torch.float32)
        t[f"{key}.b_ih"] = b_ih.detach().clone()
        t[f"{key}.b_hh"] = b_hh.detach().clone()


if __name__ == "__main__":
    main()
