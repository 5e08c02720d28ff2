"""PyTorch side of the Transformer LM training comparison (`examples/bench_lm.rs` is the stapes
side), issue 18: the word_language_model-style TransformerModel of `tools/golden/nnlm.py`
(embedding x sqrt(d), sinusoidal positions, `nn.TransformerEncoder` of pre-norm GELU layers under
a causal mask, final LayerNorm, linear output) with d_model 256, 4 heads, 4 layers,
feed-forward 1024, dropout 0.1, vocab 64; batches of 32 x 128 random tokens; cross-entropy,
backward, gradient clipping at 1.0, AdamW step. f32 on the CPU, 2 threads. 2 warm-up steps, then
`reps` timed steps; one JSON line with the median step and tokens per second.

Run: OMP_NUM_THREADS=2 python benches/torch/lm.py [reps]
"""

import json
import math
import sys
import time

import torch
import torch.nn as nn

V, D, H, L, FF, B, T = 64, 256, 4, 4, 1024, 32, 128


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x):
        return x + self.pe[: x.size(1)]


class TransformerLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.pos = PositionalEncoding(D, 1024)
        self.drop = nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.1, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, L, norm=nn.LayerNorm(D), enable_nested_tensor=False)
        self.out = nn.Linear(D, V)

    def forward(self, ids):
        t = ids.size(1)
        x = self.drop(self.pos(self.embed(ids) * math.sqrt(D)))
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        return self.out(self.encoder(x, mask=mask, is_causal=True))


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = TransformerLM().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, V, (B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    times = []
    for i in range(reps + 2):
        t = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"name": "transformer_lm_train_step", "median_s": med, "min_s": times[0],
                      "tokens_per_s": B * T / med, "reps": reps, "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
