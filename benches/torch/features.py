#!/usr/bin/env python3
"""torchaudio timings of the workloads of `examples/bench_features.rs`, and the interleaved
side-by-side comparison with stapes.

    /root/torchenv/bin/python benches/torch/features.py                  # torchaudio only
    /root/torchenv/bin/python benches/torch/features.py --stapes BIN --rounds 5

With --stapes (the release build of examples/bench_features), each round times every
workload with torchaudio, then runs BIN once (a separate process, RAYON_NUM_THREADS=2) for the
same workloads; the two alternate, so load from other processes on the machine falls on both.
The table reports, per workload, the median over rounds of each round's median, the ratio
stapes / torchaudio, and the load average and other processes' CPU use during the run.
Timing as in the Rust example: warmup (>= 3 calls, >= 0.2 s), then >= 20 timed single calls
for >= SECONDS (default 1 s), median. torch.set_num_threads(2) (or --threads), inference mode,
f32, CPU.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torchaudio
import torchaudio.transforms as T

THREADS = 2


def timed(run, seconds):
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < 0.2:
        run()
        calls += 1
    samples = []
    start = time.perf_counter()
    while len(samples) < 20 or (time.perf_counter() - start < seconds and len(samples) < 2000):
        t = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), min(samples), len(samples)


def workloads():
    g = torch.Generator().manual_seed(0)
    ten_s = 0.1 * torch.randn(160_000, generator=g)
    batch = 0.1 * torch.randn(8, 16_000, generator=g)
    ref = dict(sample_rate=16000, n_fft=400, win_length=320, hop_length=160, n_mels=80)
    mel = T.MelSpectrogram(**ref)
    spec = T.Spectrogram(n_fft=400, win_length=320, hop_length=160)
    mfcc = T.MFCC(sample_rate=16000, n_mfcc=40, melkwargs={k: v for k, v in ref.items() if k != "sample_rate"})
    return {
        "mel_10s_ref": lambda: mel(ten_s),
        "mel_10s_ref_slice": lambda: mel(ten_s),  # torchaudio has one entry point
        "mel_batch8x1s_ref": lambda: mel(batch),
        "spectrogram_10s": lambda: spec(ten_s),
        "mfcc40_10s": lambda: mfcc(ten_s),
    }


def busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - (v[3] + v[4])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stapes", help="path of the release examples/bench_features binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=THREADS, help="threads for both (default 2)")
    args = ap.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    work = workloads()
    torch_res = {k: [] for k in work}
    stapes_res = {k: [] for k in work}
    load_before = os.getloadavg()
    hz = os.sysconf("SC_CLK_TCK")
    j0, w0, own0 = busy_jiffies(), time.time(), os.times()
    child_cpu = 0.0
    with torch.inference_mode():
        for r in range(args.rounds if args.stapes else 1):
            for name, run in work.items():
                torch_res[name].append(timed(run, args.seconds)[0])
            if args.stapes:
                env = dict(os.environ, RAYON_NUM_THREADS=str(threads), STAPES_BENCH_SECONDS=str(args.seconds))
                c0 = os.times()
                out = subprocess.run([args.stapes], env=env, check=True, capture_output=True, text=True).stdout
                c1 = os.times()
                child_cpu += (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
                for line in out.splitlines():
                    d = json.loads(line)
                    stapes_res[d["name"]].append(d["median_s"])
    j1, w1, own1 = busy_jiffies(), time.time(), os.times()
    own_cpu = (own1.user + own1.system) - (own0.user + own0.system) + child_cpu
    other = max(0.0, (j1 - j0) / hz - own_cpu) / (w1 - w0)
    load_after = os.getloadavg()

    def fmt(s):
        return f"{s * 1e3:.3f} ms"

    print("| workload | stapes | torchaudio | ratio (time stapes / torchaudio) |")
    print("|---|---|---|---|")
    for name in work:
        t = statistics.median(torch_res[name])
        if args.stapes and stapes_res[name]:
            s = statistics.median(stapes_res[name])
            print(f"| {name} | {fmt(s)} | {fmt(t)} | {s / t:.2f} |")
        else:
            print(f"| {name} | — | {fmt(t)} | — |")
    print()
    print(f"- per-round medians, torchaudio: " + "; ".join(f"{k}: " + ", ".join(f"{v * 1e3:.2f}" for v in vs) for k, vs in torch_res.items()))
    if args.stapes:
        print(f"- per-round medians, stapes: " + "; ".join(f"{k}: " + ", ".join(f"{v * 1e3:.2f}" for v in vs) for k, vs in stapes_res.items()))
    print(f"- {args.rounds if args.stapes else 1} rounds, {w1 - w0:.1f} s wall; other processes used {other:.2f} cores on average; "
          f"load average {' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after")
    print(f"- torch {torch.__version__}, torchaudio {torchaudio.__version__}, {threads} threads (torch.set_num_threads, RAYON_NUM_THREADS); {platform.machine()}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    sys.exit(main())
