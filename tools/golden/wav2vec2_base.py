"""Golden outputs of a base-sized wav2vec2 (issue 17): `Wav2Vec2ForCTC` with transformers' default
configuration, which is wav2vec2-base's (12 post-norm layers of 768, 7 conv layers of 512 with
group norm, a 128-tap positional conv in 16 groups), on 10 s of audio.

Its 95 M weights would be 360 MB as a file, too big to commit, so they are not random draws but
a formula both sides evaluate bit for bit (`tests/parity_wav2vec2_base.rs` has the Rust twin):
for the parameter named `name` with `n` elements, element `i` is built from
`u = splitmix64(fnv1a64(name) + (i + 1) * 0x9E3779B97F4A7C15) >> 11` (53 bits) as
`x = (2 u / 2^53 - 1)` — exact in f64 — then
* 1-D `*.weight` of a norm layer (and the weight norm's magnitude `original0`): `1 + x / 10`;
* other 1-D tensors (biases, `masked_spec_embed`): `x / 50`;
* every other weight: `x * sqrt(3 / fan_in)` (uniform with variance 1 / fan_in, fan_in the
  element count over the first dimension);
each rounded once to f32. Only IEEE-exact operations (and the correctly rounded `sqrt`) are used,
so numpy and Rust produce the same bits. The audio is the same generator's noise under a
slow triangle envelope, also exact.

Run: python tools/golden/wav2vec2_base.py   (torch 2.11.0, transformers 5.x)
Writes `tests/golden/wav2vec2/base.safetensors` (under 1 MiB): `input_values` is left out (the
test recomputes it from the formula); `logits` [1, 499, 32]; `hidden.<i>` for i = 0..=12 and
`extract_features`, every 32nd frame only (frames 0, 32, ...), to stay small; and `config.json`
beside it as `base_config.json`.
"""

import json
import os
import sys

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "wav2vec2")
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
STRIDE = 32
SAMPLES = 160_000


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def uniform(name, n):
    """x in [-1, 1), f64, exactly as the Rust twin computes it."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + i * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64)
    return 2.0 * u / 2.0**53 - 1.0


def value(name, shape):
    n = int(np.prod(shape))
    x = uniform(name, n)
    norm_weight = len(shape) == 1 and name.endswith(".weight") or name.endswith("original0")
    if norm_weight:
        v = 1.0 + x / 10.0
    elif len(shape) == 1:
        v = x / 50.0
    else:
        fan_in = n // shape[0]
        v = x * np.sqrt(3.0 / fan_in)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def audio():
    x = uniform("audio", SAMPLES)
    i = np.arange(SAMPLES, dtype=np.float64)
    period = 4000.0  # a 0.25 s triangle envelope: louder and quieter stretches
    phase = (i % period) / period
    env = 0.1 + 0.4 * np.minimum(phase, 1.0 - phase) * 2.0
    return (x * env).astype(np.float32)


def main():
    cfg = Wav2Vec2Config(vocab_size=32)
    model = Wav2Vec2ForCTC(cfg).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(value(name, tuple(p.shape)))
    a = torch.from_numpy(audio())[None]
    # the feature extractor's normalisation, in f64 as stapes' normalize_audio computes it
    a64 = a.double()
    iv = ((a64 - a64.mean()) / torch.sqrt(a64.var(unbiased=False) + 1e-7)).float()
    with torch.no_grad():
        out = model(iv, output_hidden_states=True)
        feats = model.wav2vec2.feature_extractor(iv).transpose(1, 2)
        feats = model.wav2vec2.feature_projection.layer_norm(feats)
    t = {"logits": out.logits[0].contiguous(), "extract_features": feats[0, ::STRIDE].contiguous()}
    for k, h in enumerate(out.hidden_states):
        t[f"hidden.{k}"] = h[0, ::STRIDE].contiguous()
    t["input_values_head"] = iv[0, :1000].contiguous()
    import transformers
    write_safetensors(os.path.join(OUT, "base.safetensors"), t,
                      {"torch": torch.__version__, "transformers": transformers.__version__})
    with open(os.path.join(OUT, "base_config.json"), "w") as f:
        json.dump(json.loads(cfg.to_json_string()), f, indent=2, sort_keys=True)
    print("logits", tuple(out.logits.shape), "abs max", out.logits.abs().max().item(),
          "hidden std", [round(h.std().item(), 3) for h in out.hidden_states])


if __name__ == "__main__":
    main()
