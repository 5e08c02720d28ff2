"""Writes the small audio fixtures under tests/data/audio/ that tests/speech_audio.rs reads.

One deterministic test signal (no random numbers: a sum of sines and a chirp under a smooth
envelope, 16 kHz, 0.5 s, mono) is quantised to 16-bit integers and written with soundfile
(libsndfile) as WAV (PCM_16), FLAC (PCM_16), OGG/Vorbis and MP3. A stereo 16-bit WAV (left and
right different sines, 0.1 s) checks channel handling and down-mixing. The Rust test recomputes
the same signal from the same formula and compares.

Run from anywhere: /root/torchenv/bin/python tools/golden/audio_fixtures.py
"""

import pathlib

import numpy as np
import soundfile as sf

SR = 16000
N = 8000  # 0.5 s
OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"


def test_signal(n: int, sr: int) -> np.ndarray:
    """The formula of `test_signal` in tests/speech_audio.rs (keep the two in step)."""
    t = np.arange(n, dtype=np.float64) / sr
    x = 0.30 * np.sin(2 * np.pi * 440.0 * t)
    x += 0.15 * np.sin(2 * np.pi * 1250.0 * t + 0.5)
    x += 0.10 * np.sin(2 * np.pi * (300.0 * t + 1500.0 * t * t))  # chirp 300 Hz -> 1800 Hz
    env = np.sin(np.pi * np.arange(n, dtype=np.float64) / (n - 1)) ** 0.5
    return x * env


def quantise(x: np.ndarray) -> np.ndarray:
    return np.round(x * 32767.0).astype(np.int16)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    q = quantise(test_signal(N, SR))
    sf.write(OUT / "signal.wav", q, SR, format="WAV", subtype="PCM_16")
    sf.write(OUT / "signal.flac", q, SR, format="FLAC", subtype="PCM_16")
    # Lossy codecs take float input: give them exactly the quantised values.
    xf = q.astype(np.float64) / 32768.0
    sf.write(OUT / "signal.ogg", xf, SR, format="OGG", subtype="VORBIS")
    sf.write(OUT / "signal.mp3", xf, SR, format="MP3", subtype="MPEG_LAYER_III")

    n2 = 1600
    t = np.arange(n2, dtype=np.float64) / SR
    left = quantise(0.4 * np.sin(2 * np.pi * 500.0 * t))
    right = quantise(0.2 * np.sin(2 * np.pi * 900.0 * t))
    sf.write(OUT / "stereo.wav", np.stack([left, right], axis=1), SR, format="WAV", subtype="PCM_16")

    for p in sorted(OUT.iterdir()):
        print(f"{p.name:14s} {p.stat().st_size:6d} bytes")


if __name__ == "__main__":
    main()
