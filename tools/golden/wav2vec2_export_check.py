"""transformers' side of the `stapes export --hf` check (issue 17): loads the exported directory
with `Wav2Vec2Processor.from_pretrained` (feature extractor and CTC tokenizer from
`preprocessor_config.json`, `vocab.json`, `tokenizer_config.json`) and
`Wav2Vec2ForCTC.from_pretrained` (strictly: no missing, unexpected or mismatched keys), runs it
on the audio file, and compares the prepared input, the logits and the greedy transcript with
what stapes computed (`examples/wav2vec2_logits.rs`).

Run: python tools/golden/wav2vec2_export_check.py <dir> <file.wav> <stapes.safetensors> "<stapes transcript>"
"""

import sys

import wave

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor


def main():
    out, wav, stapes_file, stapes_text = sys.argv[1:5]
    processor = Wav2Vec2Processor.from_pretrained(out)
    model, info = Wav2Vec2ForCTC.from_pretrained(out, output_loading_info=True, attn_implementation="eager")
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading info: {bad}"
    model.eval()
    with wave.open(wav) as w:  # 16-bit PCM mono, as stapes writes it
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, (w.getsampwidth(), w.getnchannels())
        sr = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    assert sr == processor.feature_extractor.sampling_rate, sr
    inputs = processor(audio, sampling_rate=sr, return_tensors="pt")
    with torch.no_grad():
        logits = model(inputs.input_values).logits
    text = processor.batch_decode(logits.argmax(-1))[0]
    s = load_file(stapes_file)
    iv_err = (inputs.input_values - s["input_values"]).abs().max().item()
    err = (logits - s["logits"]).abs().max().item()
    same = torch.equal(logits.argmax(-1), s["logits"].argmax(-1))
    print(f"transformers {transformers.__version__}: loaded {out} strictly; "
          f"max |input_values - stapes| = {iv_err:.2e}; max |logits - stapes| = {err:.2e}; "
          f"argmax equal: {same}; transcript {text!r} (stapes {stapes_text!r})")
    assert iv_err < 1e-5 and err < 1e-4 and same and text == stapes_text


if __name__ == "__main__":
    main()
