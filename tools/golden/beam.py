#!/usr/bin/env python3
"""Golden fixtures for `tests/speech_decode.rs`: pyctcdecode's CTC beam search, no language model.

Writes ONE file, `tests/golden/beam.safetensors` (pyctcdecode 0.5.0, numpy; torch only for the
writer in golden_io.py; byte-for-byte reproducible: every case seeds its own generator from its
name).

The labels are pyctcdecode's `["", " ", "a", "b", "c"]`: blank at 0, then stapes'
`Vocab::new(" abc")`, so class ids agree. Each case decodes one `[T, C]` matrix of natural-log
probabilities (log_softmax of scaled Gaussian logits, clipped to stay above pyctcdecode's
ln(1e-15) floor so that its re-normalisation changes nothing) with `decode_beams`, either with
pyctcdecode's default pruning (beam_width 100, beam_prune_logp -10, token_min_logp -5,
prune_history False) or, for the short `exact_*` cases, with none (every prefix is kept, so both
pyctcdecode and stapes compute every transcript's exact probability).

`__metadata__` maps each case name to a flat JSON object:
    "texts":  the output texts, best first (pyctcdecode normalises whitespace)
    "logit_scores": their acoustic log-probabilities (pyctcdecode's logit_score)
    "beam_width", "beam_prune_logp", "token_min_logp": the parameters used
Tensors:
    <case>.log_probs   float32 [T, C]
"""

import json
import os
import sys
import zlib

import numpy as np
import torch
from golden_io import write_safetensors  # noqa: E402  (the one reproducible writer)

from importlib.metadata import version  # noqa: E402

from pyctcdecode import build_ctcdecoder  # noqa: E402

PYCTCDECODE_VERSION = "0.5.0"
if version("pyctcdecode") != PYCTCDECODE_VERSION:
    sys.exit(f"tools/golden/beam.py needs pyctcdecode {PYCTCDECODE_VERSION}, found {version('pyctcdecode')}")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "beam.safetensors")

LABELS = ["", " ", "a", "b", "c"]
# pyctcdecode's default pruning, and none at all (every prefix kept: both searches are exact).
DEFAULT = {"beam_width": 100, "beam_prune_logp": -10.0, "token_min_logp": -5.0}
EXACT = {"beam_width": 1000000, "beam_prune_logp": -1000.0, "token_min_logp": -1000.0}
# name -> (frames, logit scale, pruning): a larger scale gives peakier frames.
CASES = {
    "short_flat": (8, 1.0, DEFAULT),
    "short_peaky": (10, 3.0, DEFAULT),
    "medium_mixed": (24, 2.0, DEFAULT),
    "medium_flat": (24, 1.2, DEFAULT),
    "long_peaky": (60, 3.5, DEFAULT),
    "long_mixed": (60, 2.2, DEFAULT),
    "exact_flat": (5, 1.0, EXACT),
    "exact_mixed": (6, 2.0, EXACT),
}


def make_log_probs(name, frames, scale):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    logits = rng.standard_normal((frames, len(LABELS))) * scale
    logits[:, 0] += 0.5 * scale  # blanks a little more likely, as in a trained model
    lp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), dim=1)
    lp = torch.clamp(lp, min=-30.0)
    lp = torch.log_softmax(lp, dim=1)  # renormalise after the clamp
    return lp.to(torch.float32)


def main():
    decoder = build_ctcdecoder(LABELS)
    tensors, metadata = {}, {}
    for name, (frames, scale, params) in sorted(CASES.items()):
        lp = make_log_probs(name, frames, scale)
        beams = decoder.decode_beams(lp.numpy(), prune_history=False, **params)
        texts = [b[0] for b in beams]
        scores = [float(b[3]) for b in beams]
        tensors[f"{name}.log_probs"] = lp
        metadata[name] = json.dumps({"texts": texts, "logit_scores": scores, **params}, sort_keys=True)
        print(f"{name}: T={frames} best={texts[0]!r} logit_score={scores[0]:.4f} ({len(texts)} beams)")
    write_safetensors(OUT_PATH, tensors, metadata)
    print(f"wrote {OUT_PATH}")


if __name__ == "__main__":
    main()
