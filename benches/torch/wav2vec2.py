"""transformers side of the wav2vec2 comparison (`examples/bench_wav2vec2.rs` is the stapes
side), issue 17: `Wav2Vec2ForCTC(Wav2Vec2Config())` (wav2vec2-base's configuration, vocab 32),
randomly initialised, eval mode, `torch.no_grad()`, eager attention, one utterance of `seconds`
of 16 kHz audio, f32 on the CPU, 2 threads. 2 warm-up passes, then `reps` timed passes; one JSON
line with the median and minimum.

Run: OMP_NUM_THREADS=2 python benches/torch/wav2vec2.py [reps] [seconds]
"""

import json
import sys
import time

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = Wav2Vec2Config()
    config._attn_implementation = "eager"
    model = Wav2Vec2ForCTC(config).eval()
    x = torch.randn(1, int(seconds * 16000))
    times = []
    with torch.no_grad():
        for i in range(reps + 2):
            t = time.perf_counter()
            model(x)
            if i >= 2:
                times.append(time.perf_counter() - t)
    times.sort()
    print(json.dumps({"name": f"wav2vec2_base_fwd_{seconds}s", "median_s": times[len(times) // 2],
                      "min_s": times[0], "reps": reps, "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in model.parameters()),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
