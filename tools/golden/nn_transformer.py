#!/usr/bin/env python3
"""Golden fixtures for the attention and Transformer parity test (`tests/parity_nn_transformer.rs`).

Runs `nn.MultiheadAttention`, `nn.TransformerEncoderLayer`, `nn.TransformerDecoderLayer`,
`nn.Transformer` and the tutorial's sinusoidal positional encoding with PyTorch on the CPU and
writes ONE file, `tests/golden/nn_transformer.safetensors`.

Every module runs in TRAIN mode with dropout 0 and with grad enabled, so PyTorch takes its
plain math path (not the `_transformer_encoder_layer_fwd` / nested-tensor fast path, which only
runs in eval mode without grad). Layers call attention with `need_weights=False`, i.e. through
`scaled_dot_product_attention`, whose fully-masked rows give 0 (not NaN); `MultiheadAttention`
with `need_weights=True` uses a plain softmax, whose fully-masked rows give NaN. Both are cases.

File layout, per case `<case>` (case names never contain a '.'):

  <case>.in.<name>            float inputs (query/key/value, src/tgt/memory, x), autograd leaves.
                              When query, key and value are the same tensor (self-attention) only
                              `in.query` is stored and the metadata says "self_attention": true.
  <case>.mask.<name>          masks: bool masks stored as uint8 (1 = not allowed), float masks in
                              the case dtype (additive, may hold -inf).
  <case>.param.<state name>   the module's state_dict (randomised, not PyTorch's init), loaded by
                              name with a strict load, which checks the names.
  <case>.out                  the output.
  <case>.weights              the attention weights (MHA with need_weights only).
  <case>.gout, <case>.gweights  the random weights of the loss: backward of
                              (out * gout).sum() + (weights * gweights).sum().
  <case>.grad.in.<name>       d(loss)/d(input).
  <case>.grad.param.<name>    d(loss)/d(parameter), for every parameter.
  <case>.pe                   (positional-encoding cases) rows of the table, see "rows".

Metadata (`__metadata__`): key = case name, value = a flat JSON object with "kind" (mha,
encoder_layer, decoder_layer, transformer, positional_encoding), "dtype" and the constructor and
forward arguments. `_generator` records the script and torch version.
"""

import json
import math
import os
import sys
import zlib

import torch
import torch.nn as nn
from safetensors import safe_open
from golden_io import write_safetensors  # noqa: E402  (the one reproducible writer)

TORCH_VERSION = "2.11.0"
if not torch.__version__.startswith(TORCH_VERSION):
    sys.exit(f"tools/golden/nn_transformer.py needs torch {TORCH_VERSION}, found {torch.__version__}")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "nn_transformer.safetensors")

TENSORS = {}
METADATA = {}
F32 = torch.float32
F64 = torch.float64
DT_NAME = {F32: "f32", F64: "f64"}

E, H, L, S, B, FF = 16, 4, 5, 7, 3, 32


class Rng:
    def __init__(self, name):
        self.g = torch.Generator().manual_seed(zlib.crc32(name.encode()))

    def randn(self, *shape, dtype=F64):
        return torch.randn(shape, generator=self.g, dtype=F64).to(dtype)

    def rand(self, *shape):
        return torch.rand(shape, generator=self.g, dtype=F64)


def put(name, t):
    t = t.detach().contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    assert t.numel() <= 4096, (name, t.shape)
    TENSORS[name] = t.clone()


def randomise(module, rng, dtype):
    """Random parameters (PyTorch's init leaves biases at 0 and norms at 1, which would hide a
    bias that is ignored)."""
    with torch.no_grad():
        for _, p in module.named_parameters():
            if p.dim() >= 2:
                p.copy_(rng.randn(*p.shape, dtype=dtype) / math.sqrt(p.shape[-1]))
            else:
                p.copy_(rng.randn(*p.shape, dtype=dtype) * 0.1)
        for n, p in module.named_parameters():
            if "norm" in n and n.endswith("weight"):
                p.add_(1.0)


def causal_mask(n, dtype):
    return nn.Transformer.generate_square_subsequent_mask(n, dtype=dtype)


def padding_mask(lengths, n):
    """[B, n] bool, True past each sequence's length (padding at the end)."""
    return torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]


def record(case, meta, module, inputs, masks, out, weights, rng, dtype):
    """Stores inputs, masks, state, outputs, the loss weights and every gradient."""
    for n, t in inputs.items():
        put(f"{case}.in.{n}", t)
    for n, m in masks.items():
        put(f"{case}.mask.{n}", m)
    for n, t in module.state_dict().items():
        put(f"{case}.param.{n}", t)
    gout = rng.randn(*out.shape, dtype=dtype)
    loss = (out * gout).sum()
    put(f"{case}.out", out)
    put(f"{case}.gout", gout)
    if weights is not None:
        gw = rng.randn(*weights.shape, dtype=dtype)
        loss = loss + (weights * gw).sum()
        put(f"{case}.weights", weights)
        put(f"{case}.gweights", gw)
    loss.backward()
    for n, t in inputs.items():
        put(f"{case}.grad.in.{n}", t.grad)
    for n, p in module.named_parameters():
        put(f"{case}.grad.param.{n}", p.grad)
    meta = dict(meta)
    meta["dtype"] = DT_NAME[dtype]
    METADATA[case] = json.dumps(meta, sort_keys=True)


def leaf(rng, *shape, dtype):
    return rng.randn(*shape, dtype=dtype).requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# MultiheadAttention
# ---------------------------------------------------------------------------------------------

def mha_case(case, *, self_attention=False, batch_first=False, bias=True, kpm=None, attn_mask=None,
             need_weights=True, average=True, is_causal=False, length=L, dtype=F32):
    rng = Rng(case)
    mha = nn.MultiheadAttention(E, H, dropout=0.0, bias=bias, batch_first=batch_first, dtype=dtype)
    mha.train()
    randomise(mha, rng, dtype)
    s = length if self_attention else S

    def seq(n):
        return (B, n, E) if batch_first else (n, B, E)

    if self_attention:
        x = leaf(rng, *seq(length), dtype=dtype)
        inputs = {"query": x}
        q = k = v = x
    else:
        q = leaf(rng, *seq(length), dtype=dtype)
        k = leaf(rng, *seq(s), dtype=dtype)
        v = leaf(rng, *seq(s), dtype=dtype)
        inputs = {"query": q, "key": k, "value": v}
    masks = {}
    kpm_t = None
    if kpm is not None:
        kpm_t = kpm(rng, s)
        kpm_t = kpm_t.to(dtype) if kpm_t.is_floating_point() else kpm_t
        masks["key_padding_mask"] = kpm_t
    am_t = None
    if attn_mask is not None:
        am_t = attn_mask(rng, length, s)
        am_t = am_t.to(dtype) if am_t.is_floating_point() else am_t
        masks["attn_mask"] = am_t
    out, w = mha(q, k, v, key_padding_mask=kpm_t, attn_mask=am_t, need_weights=need_weights,
                 average_attn_weights=average, is_causal=is_causal)
    meta = {"kind": "mha", "embed_dim": E, "num_heads": H, "batch_first": batch_first, "bias": bias,
            "self_attention": self_attention, "need_weights": need_weights, "average_attn_weights": average,
            "is_causal": is_causal}
    record(case, meta, mha, inputs, masks, out, w, rng, dtype)


def kpm_bool(rng, s):
    return padding_mask([s, s - 2, s - 4], s)


def kpm_one_row_all_masked(rng, s):
    m = padding_mask([s, s - 3, s], s)
    m[2, :] = True
    return m


def kpm_float(rng, s):
    m = padding_mask([s - 1, s, s - 3], s)
    return torch.zeros(B, s, dtype=F64).masked_fill(m, float("-inf"))


def mask_bool_2d(rng, l, s):
    m = rng.rand(l, s) < 0.3
    m[:, 0] = False  # never a fully masked row
    return m


def mask_float_2d(rng, l, s):
    m = rng.randn(l, s)
    m[rng.rand(l, s) < 0.25] = float("-inf")
    m[:, 1] = 0.5
    return m


def mask_bool_3d(rng, l, s):
    m = rng.rand(B * H, l, s) < 0.3
    m[:, :, 0] = False
    return m


def mask_causal(rng, l, s):
    assert l == s
    return causal_mask(l, F64)


mha_case("mha_plain_f64", need_weights=True, average=True, dtype=F64)
mha_case("mha_kpm_avg_weights", kpm=kpm_bool, need_weights=True, average=True)
mha_case("mha_bool_mask_head_weights", attn_mask=mask_bool_2d, need_weights=True, average=False)
mha_case("mha_float_mask_no_weights", attn_mask=mask_float_2d, need_weights=False)
mha_case("mha_float_mask_weights", attn_mask=mask_float_2d, need_weights=True, average=False)
mha_case("mha_both_masks_3d_f64", kpm=kpm_bool, attn_mask=mask_bool_3d, need_weights=True, average=True, dtype=F64)
mha_case("mha_both_masks_no_weights", kpm=kpm_float, attn_mask=mask_float_2d, need_weights=False)
mha_case("mha_causal_self_no_weights", self_attention=True, attn_mask=mask_causal, is_causal=True,
         need_weights=False)
mha_case("mha_causal_self_weights_f64", self_attention=True, attn_mask=mask_causal, is_causal=True,
         need_weights=True, average=False, dtype=F64)
mha_case("mha_batch_first_nobias", batch_first=True, bias=False, kpm=kpm_float, need_weights=True)
mha_case("mha_kpm_bool_mask", kpm=kpm_bool, attn_mask=mask_bool_2d, need_weights=True)
# A fully masked row: NaN with need_weights (plain softmax), 0 without (SDPA's safe softmax).
mha_case("mha_fully_masked_weights", kpm=kpm_one_row_all_masked, need_weights=True)
mha_case("mha_fully_masked_no_weights", kpm=kpm_one_row_all_masked, need_weights=False)


# ---------------------------------------------------------------------------------------------
# Transformer layers
# ---------------------------------------------------------------------------------------------

def enc_layer_case(case, *, activation, norm_first, batch_first=False, bias=True, src_mask=None, kpm=None,
                   is_causal=False, dtype=F32):
    rng = Rng(case)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=FF, dropout=0.0, activation=activation,
                                       layer_norm_eps=1e-5, batch_first=batch_first, norm_first=norm_first,
                                       bias=bias, dtype=dtype)
    layer.train()
    randomise(layer, rng, dtype)
    src = leaf(rng, *((B, L, E) if batch_first else (L, B, E)), dtype=dtype)
    masks = {}
    m = None
    if src_mask is not None:
        m = src_mask(rng, L, L)
        m = m.to(dtype) if m.is_floating_point() else m
        masks["src_mask"] = m
    k = None
    if kpm is not None:
        k = kpm(rng, L)
        k = k.to(dtype) if k.is_floating_point() else k
        masks["src_key_padding_mask"] = k
    out = layer(src, src_mask=m, src_key_padding_mask=k, is_causal=is_causal)
    meta = {"kind": "encoder_layer", "d_model": E, "nhead": H, "dim_feedforward": FF, "activation": activation,
            "norm_first": norm_first, "batch_first": batch_first, "bias": bias, "is_causal": is_causal,
            "layer_norm_eps": 1e-5}
    record(case, meta, layer, {"src": src}, masks, out, None, rng, dtype)


enc_layer_case("enc_relu_post_f64", activation="relu", norm_first=False, kpm=kpm_bool, dtype=F64)
enc_layer_case("enc_gelu_post_causal", activation="gelu", norm_first=False, src_mask=mask_causal, is_causal=True)
enc_layer_case("enc_relu_pre_bool_mask", activation="relu", norm_first=True, src_mask=mask_bool_2d,
               kpm=kpm_bool)
enc_layer_case("enc_gelu_pre_batch_first_f64", dtype=F64, activation="gelu", norm_first=True, batch_first=True,
               src_mask=mask_float_2d, kpm=kpm_float)
enc_layer_case("enc_gelu_pre_nobias", activation="gelu", norm_first=True, bias=False, kpm=kpm_bool)


def dec_layer_case(case, *, activation, norm_first, batch_first=False, tgt_mask=None, memory_mask=None,
                   tgt_kpm=None, memory_kpm=None, tgt_is_causal=False, dtype=F32):
    rng = Rng(case)
    layer = nn.TransformerDecoderLayer(E, H, dim_feedforward=FF, dropout=0.0, activation=activation,
                                       layer_norm_eps=1e-5, batch_first=batch_first, norm_first=norm_first,
                                       dtype=dtype)
    layer.train()
    randomise(layer, rng, dtype)
    tgt = leaf(rng, *((B, L, E) if batch_first else (L, B, E)), dtype=dtype)
    memory = leaf(rng, *((B, S, E) if batch_first else (S, B, E)), dtype=dtype)
    masks = {}
    args = {}
    for name, fn, shape in [("tgt_mask", tgt_mask, (L, L)), ("memory_mask", memory_mask, (L, S))]:
        if fn is not None:
            m = fn(rng, *shape)
            m = m.to(dtype) if m.is_floating_point() else m
            masks[name] = m
            args[name] = m
    for name, fn, n in [("tgt_key_padding_mask", tgt_kpm, L), ("memory_key_padding_mask", memory_kpm, S)]:
        if fn is not None:
            m = fn(rng, n)
            m = m.to(dtype) if m.is_floating_point() else m
            masks[name] = m
            args[name] = m
    out = layer(tgt, memory, tgt_is_causal=tgt_is_causal, **args)
    meta = {"kind": "decoder_layer", "d_model": E, "nhead": H, "dim_feedforward": FF, "activation": activation,
            "norm_first": norm_first, "batch_first": batch_first, "bias": True, "tgt_is_causal": tgt_is_causal,
            "layer_norm_eps": 1e-5}
    record(case, meta, layer, {"tgt": tgt, "memory": memory}, masks, out, None, rng, dtype)


dec_layer_case("dec_relu_post_causal_f64", dtype=F64, activation="relu", norm_first=False, tgt_mask=mask_causal,
               tgt_kpm=kpm_bool, memory_kpm=kpm_bool, tgt_is_causal=True)
dec_layer_case("dec_gelu_pre_batch_first", activation="gelu", norm_first=True, batch_first=True,
               memory_mask=mask_bool_2d, memory_kpm=kpm_float)


# ---------------------------------------------------------------------------------------------
# nn.Transformer: 2 encoder + 2 decoder layers, causal target mask, padding masks
# ---------------------------------------------------------------------------------------------

def transformer_case(case, *, norm_first, activation, dtype):
    rng = Rng(case)
    model = nn.Transformer(d_model=E, nhead=H, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF,
                           dropout=0.0, activation=activation, norm_first=norm_first, dtype=dtype)
    model.train()
    randomise(model, rng, dtype)
    src = leaf(rng, S, B, E, dtype=dtype)
    tgt = leaf(rng, L, B, E, dtype=dtype)
    tgt_mask = causal_mask(L, dtype)
    src_kpm = padding_mask([S, S - 2, S - 3], S)
    tgt_kpm = padding_mask([L, L - 1, L - 2], L)
    out = model(src, tgt, tgt_mask=tgt_mask, src_key_padding_mask=src_kpm, tgt_key_padding_mask=tgt_kpm,
                memory_key_padding_mask=src_kpm, tgt_is_causal=True)
    masks = {"tgt_mask": tgt_mask, "src_key_padding_mask": src_kpm, "tgt_key_padding_mask": tgt_kpm,
             "memory_key_padding_mask": src_kpm}
    meta = {"kind": "transformer", "d_model": E, "nhead": H, "num_encoder_layers": 2, "num_decoder_layers": 2,
            "dim_feedforward": FF, "activation": activation, "norm_first": norm_first, "tgt_is_causal": True,
            "layer_norm_eps": 1e-5}
    record(case, meta, model, {"src": src, "tgt": tgt}, masks, out, None, rng, dtype)


transformer_case("transformer_2x2_post_relu_f64", norm_first=False, activation="relu", dtype=F64)
transformer_case("transformer_2x2_pre_gelu_f32", norm_first=True, activation="gelu", dtype=F32)


# ---------------------------------------------------------------------------------------------
# Sinusoidal positional encoding, as in the PyTorch tutorial (the table is computed in f32)
# ---------------------------------------------------------------------------------------------

def tutorial_pe(d_model, max_len):
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, 1, d_model)
    pe[:, 0, 0::2] = torch.sin(position * div_term)
    pe[:, 0, 1::2] = torch.cos(position * div_term)
    return pe


def pe_case(case, d_model, max_len, rows):
    pe = tutorial_pe(d_model, max_len)
    put(f"{case}.pe", pe[rows, 0, :])
    rng = Rng(case)
    x = leaf(rng, L, B, d_model, dtype=F32)
    out = x + pe[: x.size(0)]
    gout = rng.randn(*out.shape, dtype=F32)
    (out * gout).sum().backward()
    put(f"{case}.in.x", x)
    put(f"{case}.out", out)
    put(f"{case}.gout", gout)
    put(f"{case}.grad.in.x", x.grad)
    METADATA[case] = json.dumps({"kind": "positional_encoding", "d_model": d_model, "max_len": max_len,
                                 "rows": rows, "dtype": "f32"}, sort_keys=True)


pe_case("pe_d16_5000", 16, 5000, [0, 1, 2, 3, 7, 50, 100, 999, 1000, 2500, 4097, 4999])
pe_case("pe_d24_512", 24, 512, [0, 1, 5, 64, 255, 511])


ST_DTYPES = {F32: "F32", F64: "F64", torch.uint8: "U8"}


METADATA["_generator"] = f"tools/golden/nn_transformer.py, torch {torch.__version__}"
write_safetensors(OUT_PATH, TENSORS, METADATA)
with safe_open(OUT_PATH, "pt") as f:  # read back with the safetensors library
    assert f.metadata() == METADATA
    for name, t in TENSORS.items():
        assert torch.equal(f.get_tensor(name).view(-1).view(torch.uint8), t.view(-1).view(torch.uint8)), name
size = os.path.getsize(OUT_PATH)
assert size < 1 << 20, f"{OUT_PATH} is {size} bytes"
print(f"wrote {OUT_PATH}: {len(TENSORS)} tensors, {len(METADATA) - 1} cases, {size} bytes")
