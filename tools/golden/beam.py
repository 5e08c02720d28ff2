#!/usr/bin/env python3
"""Golden fixtures for `tests/speech_decode.rs`: pyctcdecode's CTC beam search, without and with a
kenlm language model, and kenlm's sentence scores.

Writes ONE file, `tests/golden/beam.safetensors` (pyctcdecode 0.5.0, kenlm 0.3.0 python module,
numpy; torch only for the writer in golden_io.py; byte-for-byte reproducible: every case seeds
its own generator from its name).

The labels are pyctcdecode's `["", " ", "a", "b", "c"]`: blank at 0, then stapes'
`Vocab::new(" abc")`, so class ids agree. Each decoding case is one `[T, C]` matrix of
natural-log probabilities (log_softmax of scaled Gaussian logits, clipped to stay above
pyctcdecode's ln(1e-15) floor so that its re-normalisation changes nothing) decoded with
`decode_beams`, either with pyctcdecode's default pruning (beam_width 100, beam_prune_logp -10,
token_min_logp -5, prune_history False) or, for the short `*exact*` cases, with none (every
prefix is kept, so pyctcdecode and stapes both compute every transcript's exact score).

Cases:
    nolm_*     no language model
    lm_*       the bigram `tests/data/lm/abc_bigram.arpa` through kenlm, alpha 1 (where
               pyctcdecode's unscaled partial-word penalty equals stapes' alpha-scaled one),
               beta 0.7, unk_score_offset -10, lm_score_boundary False or (`*boundary`) True,
               the unigram list passed explicitly (pyctcdecode's ARPA reader skips unigram
               lines without a backoff weight)
    kenlm_sentences   kenlm's `Model.score(s, bos=True, eos=True)` of sentences of that model,
               unknown words included

`__metadata__` maps each case name to a flat JSON object:
    "texts":  the output texts, best first (pyctcdecode normalises whitespace)
    "logit_scores": their acoustic log-probabilities (pyctcdecode's logit_score)
    "scores": (lm_*) their fused scores (pyctcdecode's lm_score: acoustic + LM)
    "beam_width", "beam_prune_logp", "token_min_logp": the parameters used
    "alpha", "beta", "unk_score_offset", "score_boundary": (lm_*) the LM parameters
    "sentences", "log10": (kenlm_sentences) the sentences and kenlm's log10 scores
Tensors:
    <case>.log_probs   float32 [T, C] (decoding cases)
"""

import json
import os
import sys
import zlib

import numpy as np
import torch
from golden_io import write_safetensors  # noqa: E402  (the one reproducible writer)

from importlib.metadata import version  # noqa: E402

import kenlm  # noqa: E402
from pyctcdecode import build_ctcdecoder  # noqa: E402

for package, pinned in [("pyctcdecode", "0.5.0"), ("kenlm", "0.3.0")]:
    if version(package) != pinned:
        sys.exit(f"tools/golden/beam.py needs {package} {pinned}, found {version(package)}")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "beam.safetensors")

LABELS = ["", " ", "a", "b", "c"]
# pyctcdecode's default pruning, and none at all (every prefix kept: both searches are exact).
DEFAULT = {"beam_width": 100, "beam_prune_logp": -10.0, "token_min_logp": -5.0}
EXACT = {"beam_width": 1000000, "beam_prune_logp": -1000.0, "token_min_logp": -1000.0}
LM_PATH = os.path.join(ROOT, "tests", "data", "lm", "abc_bigram.arpa")
LM = {"alpha": 1.0, "beta": 0.7, "unk_score_offset": -10.0, "score_boundary": False}
LM_BOUNDARY = {**LM, "score_boundary": True}
# name -> (frames, logit scale, pruning, LM parameters or None): a larger scale gives peakier
# frames.
CASES = {
    "nolm_short_flat": (8, 1.0, DEFAULT, None),
    "nolm_short_peaky": (10, 3.0, DEFAULT, None),
    "nolm_medium_mixed": (24, 2.0, DEFAULT, None),
    "nolm_medium_flat": (24, 1.2, DEFAULT, None),
    "nolm_long_peaky": (60, 3.5, DEFAULT, None),
    "nolm_long_mixed": (60, 2.2, DEFAULT, None),
    "nolm_exact_flat": (5, 1.0, EXACT, None),
    "nolm_exact_mixed": (6, 2.0, EXACT, None),
    "lm_exact_flat": (6, 1.0, EXACT, LM),
    "lm_exact_mixed": (7, 2.0, EXACT, LM),
    "lm_exact_boundary": (6, 1.5, EXACT, LM_BOUNDARY),
    "lm_medium_mixed": (24, 2.0, DEFAULT, LM),
    "lm_medium_boundary": (24, 2.0, DEFAULT, LM_BOUNDARY),
    "lm_long_mixed": (60, 2.2, DEFAULT, LM),
}
SENTENCES = ["", "a", "a ab", "cab abc ba a", "zz", "a zz ab", "cc", "ab ab ab", "ba cab zz cc a"]


def make_log_probs(name, frames, scale):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    logits = rng.standard_normal((frames, len(LABELS))) * scale
    logits[:, 0] += 0.5 * scale  # blanks a little more likely, as in a trained model
    lp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), dim=1)
    lp = torch.clamp(lp, min=-30.0)
    lp = torch.log_softmax(lp, dim=1)  # renormalise after the clamp
    return lp.to(torch.float32)


def main():
    plain = build_ctcdecoder(LABELS)
    words = sorted(w for w in load_words(LM_PATH) if w not in ("<s>", "</s>", "<unk>"))
    tensors, metadata = {}, {}
    for name, (frames, scale, params, lm) in sorted(CASES.items()):
        lp = make_log_probs(name, frames, scale)
        decoder = plain
        if lm is not None:
            decoder = build_ctcdecoder(LABELS, LM_PATH, unigrams=words, alpha=lm["alpha"], beta=lm["beta"],
                                       unk_score_offset=lm["unk_score_offset"],
                                       lm_score_boundary=lm["score_boundary"])
        beams = decoder.decode_beams(lp.numpy(), prune_history=False, **params)
        meta = {"texts": [b[0] for b in beams], "logit_scores": [float(b[3]) for b in beams], **params}
        if lm is not None:
            meta.update(lm, scores=[float(b[4]) for b in beams])
        tensors[f"{name}.log_probs"] = lp
        metadata[name] = json.dumps(meta, sort_keys=True)
        print(f"{name}: T={frames} best={beams[0][0]!r} logit_score={beams[0][3]:.4f} "
              f"score={beams[0][4]:.4f} ({len(beams)} beams)")
    model = kenlm.Model(LM_PATH)
    scores = [model.score(s, bos=True, eos=True) for s in SENTENCES]
    metadata["kenlm_sentences"] = json.dumps({"sentences": SENTENCES, "log10": scores}, sort_keys=True)
    write_safetensors(OUT_PATH, tensors, metadata)
    print(f"wrote {OUT_PATH}")


def load_words(arpa_path):
    """The unigrams of an ARPA file (all of them, with or without a backoff weight)."""
    out, in_unigrams = [], False
    with open(arpa_path) as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif line.startswith("\\"):
                in_unigrams = False
            elif in_unigrams and line:
                out.append(line.split()[1])
    return out


if __name__ == "__main__":
    main()
