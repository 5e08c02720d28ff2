"""The transformers side of the wav2vec2 export check (issue 17): loads a directory written by
stapes' `save_pretrained` (`examples/wav2vec2_roundtrip.rs`) with
`Wav2Vec2ForCTC.from_pretrained`, strictly (no missing, unexpected or mismatched keys), and
compares its logits on the stored batch with the ones stapes computed.

Run: python tools/golden/wav2vec2_roundtrip.py <out dir>
"""

import sys

import torch
from safetensors.torch import load_file
from transformers import Wav2Vec2ForCTC


def main():
    out = sys.argv[1]
    model, info = Wav2Vec2ForCTC.from_pretrained(out, output_loading_info=True, attn_implementation="eager")
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading info: {bad}"
    model.eval()
    t = load_file(f"{out}/stapes_logits.safetensors")
    x, lengths = t["input_values"], t["audio_lengths"]
    mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        logits = model(x, attention_mask=mask).logits
    err = (logits - t["logits"]).abs().max().item()
    same = torch.equal(logits.argmax(-1), t["logits"].argmax(-1))
    print(f"transformers {__import__('transformers').__version__}: loaded {out} strictly; "
          f"max |logits - stapes| = {err:.2e}; argmax equal: {same}")
    assert err < 1e-4 and same


if __name__ == "__main__":
    main()
