"""Golden outputs of the causal Transformer LM (issue 18), from PyTorch.

The reference model is PyTorch's `word_language_model` TransformerModel with its names:
`embed` (`nn.Embedding`, scaled by sqrt(d_model)), the tutorial's sinusoidal positional encoding
(a non-persistent buffer), `encoder` (`nn.TransformerEncoder` of batch-first
`nn.TransformerEncoderLayer`s, with a final `LayerNorm` when `norm_first`), and `out`
(`nn.Linear`, optionally tied to the embedding). The causal mask is
`nn.Transformer.generate_square_subsequent_mask` with `is_causal=True`; padding is a
`src_key_padding_mask`.

Two cases: `prenorm_gelu` (norm_first, GELU, untied) and `postnorm_relu_tied` (post-norm, ReLU,
output tied to the embedding). Each writes `tests/golden/nnlm_<case>.safetensors` with the
`state_dict` (`param.<name>`, f64), a padded batch `ids` [3, 7] and its `lengths`, the logits
(`logits`, f64), each row's sequence log-probability `seq_logp` (the sum of ln p(ids[t] | ids[<t])
over its valid positions t >= 1), the mean cross-entropy `loss` of predicting ids[t] from
ids[<t] over the valid positions, and its gradients (`grad.<name>`). Train mode with dropout 0
(PyTorch's eval fast path would zero the padded outputs), f64 throughout.

Run: python tools/golden/nnlm.py   (torch 2.11.0)
"""

import math
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden")
V, D, H, L, FF, MAXLEN = 20, 32, 4, 2, 64, 64


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x):  # [B, T, D]
        return x + self.pe[: x.size(1)].to(x.dtype)


class TransformerLM(nn.Module):
    def __init__(self, norm_first, activation, tie):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.pos = PositionalEncoding(D, MAXLEN)
        layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=activation, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, L, norm=nn.LayerNorm(D) if norm_first else None,
                                             enable_nested_tensor=False)
        self.out = nn.Linear(D, V)
        if tie:
            self.out.weight = self.embed.weight

    def forward(self, ids, pad):
        t = ids.size(1)
        x = self.pos(self.embed(ids) * math.sqrt(D))
        mask = nn.Transformer.generate_square_subsequent_mask(t, dtype=x.dtype)
        h = self.encoder(x, mask=mask, src_key_padding_mask=pad, is_causal=True)
        return self.out(h)


def case(name, norm_first, activation, tie):
    torch.manual_seed(0)
    model = TransformerLM(norm_first, activation, tie).double().train()
    for p in model.parameters():  # lively weights (PyTorch's init leaves biases at zero)
        with torch.no_grad():
            p.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, V, (3, 7))
    lengths = torch.tensor([7, 5, 3])
    pad = torch.arange(7)[None, :] >= lengths[:, None]
    ids[pad] = 0
    logits = model(ids, pad)
    lp = torch.log_softmax(logits, -1)
    tgt_lp = lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    valid = ~pad[:, 1:]
    seq_logp = (tgt_lp * valid).sum(1)
    loss = -(tgt_lp * valid).sum() / valid.sum()
    loss.backward()
    t = {"ids": ids, "lengths": lengths, "logits": logits.detach(), "seq_logp": seq_logp.detach(),
         "loss": loss.detach().reshape(1)}
    for n, p in model.state_dict().items():
        t["param." + n] = p.detach().clone()
    for n, p in model.named_parameters():
        t["grad." + n] = p.grad.detach().clone()
    write_safetensors(os.path.join(OUT, f"nnlm_{name}.safetensors"), t, {"torch": torch.__version__})
    print(name, "loss", loss.item(), "seq_logp", seq_logp.tolist())


if __name__ == "__main__":
    case("prenorm_gelu", True, "gelu", False)
    case("postnorm_relu_tied", False, "relu", True)
