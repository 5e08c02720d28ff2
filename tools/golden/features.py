#!/usr/bin/env python3
"""Golden fixtures for the speech-feature parity test (`tests/parity_features.rs`).

Runs torchaudio's transforms on the CPU on one fixed synthetic signal and writes ONE file,
`tests/golden/features.safetensors`:

  signal            f32 [16000]: 1 s at 16 kHz, two chirps, an amplitude-modulated tone and
                    white noise, from a seeded generator (see make_signal).
  <case>.out        the transform's output for case <case>.
  <case>.out_f64    (MFCC cases) the same transform run by torchaudio in float64, rounded to
                    f32: a reference for how far torchaudio's own f32 result is from exact.
  fbank_* / dct_*   filterbank and DCT matrices (functional.melscale_fbanks / create_dct).

Metadata (`__metadata__`): key = case name, value = a flat JSON object with an "op" key and
the transform's parameters under torchaudio's names. The input of a case is either
  "input": "mono"   -> signal[:n_samples], shape [n_samples]
  "input": "batch"  -> stack(signal[0:n_samples], signal[6000:6000+n_samples]), shape
                       [2, n_samples] (the second row starts at sample 6000)
or "input_case": "<other case>" -> that case's .out (optionally reshaped with "reshape").
"_generator" describes the script and versions.

torch and torchaudio 2.11.0, one thread, deterministic: the file is byte-for-byte
reproducible (sorted header, fixed seed). Regenerate with
    /root/torchenv/bin/python tools/golden/features.py
"""

import json
import math
import os
import sys

import torch
import torchaudio
import torchaudio.functional as AF
import torchaudio.transforms as T
from safetensors import safe_open
from golden_io import write_safetensors  # noqa: E402  (the one reproducible writer)

VERSION = "2.11.0"
if not (torch.__version__.startswith(VERSION) and torchaudio.__version__.startswith(VERSION)):
    sys.exit(f"needs torch and torchaudio {VERSION}, found {torch.__version__}, {torchaudio.__version__}")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "features.safetensors")
SR = 16000
BATCH_OFFSET = 6000

TENSORS = {}
METADATA = {}
ST_DTYPES = {torch.float32: "F32"}


def make_signal():
    """1 s at 16 kHz: a linear chirp 100 -> 3000 Hz, an exponential chirp 200 -> 6000 Hz, a
    440 Hz tone with 3 Hz amplitude modulation, and white noise (std 0.02). Built in f64 from
    a seeded generator, then rounded to f32."""
    g = torch.Generator().manual_seed(20240606)
    t = torch.arange(SR, dtype=torch.float64) / SR
    lin = 0.4 * torch.sin(2 * math.pi * (100 * t + 0.5 * (3000 - 100) * t**2))
    k = math.log(6000 / 200)
    expo = 0.25 * torch.sin(2 * math.pi * 200 * (torch.exp(k * t) - 1) / k)
    tone = 0.2 * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t)) * torch.sin(2 * math.pi * 440 * t)
    noise = 0.02 * torch.randn(SR, generator=g, dtype=torch.float64)
    return (lin + expo + tone + noise).to(torch.float32)


SIGNAL = make_signal()


def input_of(p):
    if "input_case" in p:
        x = TENSORS[p["input_case"] + ".out"]
        return x.reshape(p["reshape"]) if "reshape" in p else x
    n = p["n_samples"]
    if p["input"] == "mono":
        return SIGNAL[:n].clone()
    return torch.stack([SIGNAL[:n], SIGNAL[BATCH_OFFSET:BATCH_OFFSET + n]])


def add(name, params, out):
    assert "." not in name and name not in METADATA, name
    assert out.dtype == torch.float32, (name, out.dtype)
    METADATA[name] = json.dumps(params, sort_keys=True)
    TENSORS[name + ".out"] = out.contiguous()


WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window}


def spectrogram_cases():
    cases = [
        ("spec_power2_center_400_320_160", dict(input="batch", n_samples=4000, n_fft=400, win_length=320, hop_length=160)),
        ("spec_power1_nocenter_256", dict(input="batch", n_samples=4000, n_fft=256, hop_length=128, power=1.0, center=False)),
        ("spec_norm_window_512_400_200", dict(input="batch", n_samples=4000, n_fft=512, win_length=400, hop_length=200, normalized=True)),
        ("spec_norm_frame_length_hamming", dict(input="batch", n_samples=4000, n_fft=256, power=1.0, normalized="frame_length", window="hamming")),
        ("spec_power1p5_pad50_constant", dict(input="batch", n_samples=4000, n_fft=200, hop_length=100, power=1.5, pad=50, pad_mode="constant")),
        ("spec_twosided_64", dict(input="mono", n_samples=1000, n_fft=64, hop_length=32, onesided=False)),
        ("spec_complex_128", dict(input="mono", n_samples=2000, n_fft=128, hop_length=64, power=None)),
        ("spec_replicate_128_odd_win", dict(input="mono", n_samples=2000, n_fft=128, win_length=101, hop_length=50, pad_mode="replicate")),
        ("spec_circular_odd_nfft", dict(input="mono", n_samples=2000, n_fft=127, hop_length=60, pad_mode="circular")),
    ]
    for name, p in cases:
        kw = {k: v for k, v in p.items() if k not in ("input", "n_samples", "window")}
        t = T.Spectrogram(window_fn=WINDOWS[p.get("window", "hann")], **kw)
        out = t(input_of(p))
        if out.is_complex():
            out = torch.view_as_real(out)
        add(name, dict(op="spectrogram", **p), out)


REF = dict(sample_rate=SR, n_fft=400, win_length=320, hop_length=160, n_mels=80)


def mel_cases():
    cases = [
        ("mel_ref_mono", dict(input="mono", n_samples=16000, **REF)),
        ("mel_ref_batch", dict(input="batch", n_samples=8000, **REF)),
        ("mel_slaney_scale", dict(input="mono", n_samples=8000, **REF, mel_scale="slaney")),
        ("mel_slaney_scale_slaney_norm", dict(input="mono", n_samples=8000, **REF, mel_scale="slaney", norm="slaney")),
        ("mel_htk_slaney_norm", dict(input="mono", n_samples=8000, **REF, norm="slaney")),
        ("mel_fmin20_fmax7600", dict(input="mono", n_samples=8000, **REF, f_min=20.0, f_max=7600.0)),
        ("mel_fmin300_fmax4000_40_power1", dict(input="mono", n_samples=8000, sample_rate=SR, n_fft=512, hop_length=256, n_mels=40, f_min=300.0, f_max=4000.0, power=1.0)),
        ("mel_defaults_128", dict(input="mono", n_samples=8000)),
    ]
    for name, p in cases:
        kw = {k: v for k, v in p.items() if k not in ("input", "n_samples")}
        add(name, dict(op="mel_spectrogram", **p), T.MelSpectrogram(**kw)(input_of(p)))
    # The filterbanks themselves.
    for name, p in [
        ("fbank_201_80_htk", dict(n_freqs=201, f_min=0.0, f_max=8000.0, n_mels=80, sample_rate=SR, norm=None, mel_scale="htk")),
        ("fbank_129_40_slaney_slaney", dict(n_freqs=129, f_min=50.0, f_max=7000.0, n_mels=40, sample_rate=SR, norm="slaney", mel_scale="slaney")),
    ]:
        add(name, dict(op="melscale_fbanks", **p), AF.melscale_fbanks(**p))


def db_cases():
    cases = [
        ("db_power", dict(input_case="mel_ref_batch", stype="power", top_db=None)),
        ("db_power_top80_3d", dict(input_case="mel_ref_batch", stype="power", top_db=80.0)),
        ("db_power_top40_4d", dict(input_case="mel_ref_batch", reshape=[2, 1, 80, 51], stype="power", top_db=40.0)),
        ("db_magnitude_top60", dict(input_case="spec_power1_nocenter_256", stype="magnitude", top_db=60.0)),
    ]
    for name, p in cases:
        add(name, dict(op="amplitude_to_db", **p), T.AmplitudeToDB(p["stype"], p["top_db"])(input_of(p)))


def mfcc_cases():
    cases = [
        ("mfcc13_ref_batch", dict(input="batch", n_samples=8000, n_mfcc=13, log_mels=False, melkwargs=REF)),
        ("mfcc40_ref_mono_log_mels", dict(input="mono", n_samples=16000, n_mfcc=40, log_mels=True, melkwargs=REF)),
        ("mfcc40_ref_batch", dict(input="batch", n_samples=8000, n_mfcc=40, log_mels=False, melkwargs=REF)),
        ("mfcc13_defaults_log_mels", dict(input="mono", n_samples=8000, n_mfcc=13, log_mels=True, melkwargs={})),
    ]
    for name, p in cases:
        mk = {k: v for k, v in p["melkwargs"].items() if k != "sample_rate"}
        t = T.MFCC(sample_rate=SR, n_mfcc=p["n_mfcc"], log_mels=p["log_mels"], melkwargs=mk)
        flat = dict(op="mfcc", input=p["input"], n_samples=p["n_samples"], n_mfcc=p["n_mfcc"], log_mels=p["log_mels"],
                    sample_rate=SR, **{"mel_" + k: v for k, v in mk.items()})
        add(name, flat, t(input_of(p)))
        # The same transform in float64 (on the same f32 samples), rounded to f32: the MFCC's
        # f32 round-off (weak mel bands in dB) is large enough to show, so the test also
        # measures stapes and torchaudio-f32 against it.
        TENSORS[name + ".out_f64"] = t.double()(input_of(p).double()).float().contiguous()
    for name, (n_mfcc, n_mels, norm) in [("dct_13_80_ortho", (13, 80, "ortho")), ("dct_40_80_none", (40, 80, None))]:
        add(name, dict(op="create_dct", n_mfcc=n_mfcc, n_mels=n_mels, norm=norm), AF.create_dct(n_mfcc, n_mels, norm))


def delta_cases():
    cases = [
        ("deltas_mfcc13_win5", dict(input_case="mfcc13_ref_batch", win_length=5)),
        ("deltas_mfcc13_win9", dict(input_case="mfcc13_ref_batch", win_length=9)),
        ("deltas2_mfcc13_win5", dict(input_case="deltas_mfcc13_win5", win_length=5)),
        ("deltas_mel_reflect_win7", dict(input_case="db_power_top80_3d", win_length=7, mode="reflect")),
    ]
    for name, p in cases:
        mode = p.get("mode", "replicate")
        add(name, dict(op="compute_deltas", **p), T.ComputeDeltas(p["win_length"], mode)(input_of(p)))


def cmvn_cases():
    # Per-utterance CMVN as stapes defines it: (x - mean_t) / std_t, population std.
    x = input_of(dict(input_case="db_power_top80_3d")).double()
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, unbiased=False, keepdim=True).clamp(min=1e-10)
    add("cmvn_db_mel", dict(op="cmvn", input_case="db_power_top80_3d", norm_vars=True), ((x - mean) / std).float())
    add("cmvn_db_mel_mean_only", dict(op="cmvn", input_case="db_power_top80_3d", norm_vars=False), (x - mean).float())


def main():
    TENSORS["signal"] = SIGNAL
    spectrogram_cases()
    mel_cases()
    db_cases()
    mfcc_cases()
    delta_cases()
    cmvn_cases()
    meta = dict(METADATA)
    meta["_generator"] = json.dumps({"script": "tools/golden/features.py", "torch": torch.__version__,
                                     "torchaudio": torchaudio.__version__, "batch_offset": BATCH_OFFSET,
                                     "cases": len(METADATA)}, sort_keys=True)
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    write_safetensors(OUT_PATH, TENSORS, meta)
    with safe_open(OUT_PATH, "pt") as f:
        assert f.metadata() == meta
        for name, t in TENSORS.items():
            assert torch.equal(f.get_tensor(name), t), name
    size = os.path.getsize(OUT_PATH)
    assert size < 1 << 20, f"{OUT_PATH} is {size} bytes, over 1 MiB"
    print(f"wrote {OUT_PATH}: {len(METADATA)} cases, {len(TENSORS)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
