"""PyTorch twin of `stapes train --preset small` (issue 16): the same recipe, end to end.

The corpus is the synthetic eSpeak one written by

    cargo run --release --example espeak_corpus -- /tmp/esp 250 50 0

(`/tmp/esp/train/manifest.jsonl`, 2000 utterances, and the held-out speakers' test set
`/tmp/esp/test/manifest.jsonl`, 200 utterances; spelt-out digits and short commands, 16-bit
PCM mono WAVs at 16 or 8 kHz, all resampled to 16 kHz on load).

Recipe, as stapes' `small` preset:
  * split: utterance i of the training manifest goes to dev when i % k == k - 1 (k = 20, the
    CLI's default dev_fraction 0.05; --dev-every), else to train;
    vocabulary: blank 0, then the sorted characters of all training-manifest transcripts;
  * features: 40 log-mels (25 ms Hann windows, 10 ms hop, HTK mel, 0-8 kHz), ln(x + 1e-6),
    each band normalised per utterance to zero mean, unit (population) variance;
  * model: the small CRDNN, Conv(16)-BN-ReLU-Pool(2,2), Conv(32)-BN-ReLU-Pool(1,2),
    a 2-layer BiLSTM of 128 per direction (dropout 0.1) over packed sequences, Linear;
  * training augmentation, redrawn every epoch: speed perturbation {0.9, 1.0, 1.1}, white
    noise at 10-30 dB SNR with probability 0.5, VTLP alpha in [0.9, 1.1]; no SpecAugment
    masks (--masks 2: two time masks of at most min(40, 10 % of T) frames and two frequency
    masks of at most 5 bands, the preset as first written);
  * optimisation: batches of 16 from length-sorted buckets of 8 batches, CTC (mean), Adam,
    gradient clipping at 5, triangular2 cyclic LR 3e-4..3e-3 (300 steps up), 19 epochs,
    the model with the best dev CER (greedy decoding) kept and evaluated on the test set.

Run: OMP_NUM_THREADS=2 python3 benches/torch/espeak_small.py [--data /tmp/esp] [--epochs 19]
     [--masks 0] [--dev-every 20]
(on a machine whose cores are all busy with other jobs use OMP_NUM_THREADS=1: libgomp's
barriers then made two threads 10 to 50 times slower than one here; only float rounding differs).
Prints one line per epoch (epoch, mean train loss, dev CER, dev WER, seconds), then one JSON
line {"side": "pytorch", "test_wer", "test_cer", "best_dev_cer", "epochs", "seconds",
"per_speaker": {speaker: {"wer", "cer", "utterances"}}}.
"""

import argparse
import copy
import json
import math
import os
import random
import time
import wave

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
import torchaudio.functional as AF
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

SR = 16000
N_MELS = 40
NYQUIST = SR / 2


# ---------------------------------------------------------------- data

def read_manifest(path):
    root = os.path.dirname(path)
    with open(path) as f:
        items = [json.loads(line) for line in f if line.strip()]
    for it in items:
        it["path"] = os.path.join(root, it["audio"])
    return items


def load_wav(path):
    """16-bit PCM mono WAV -> float32 tensor at 16 kHz, in [-1, 1)."""
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    return AF.resample(x, sr, SR) if sr != SR else x


# ---------------------------------------------------------------- features

MEL = torchaudio.transforms.MelSpectrogram(
    sample_rate=SR, n_fft=400, win_length=400, hop_length=160, f_min=0.0, f_max=NYQUIST,
    n_mels=N_MELS, power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk",
    window_fn=torch.hann_window)  # hann_window is periodic by default


def vtlp_warp(f, alpha, f_hi=0.6 * NYQUIST, nyquist=NYQUIST):
    """Piecewise-linear VTLP frequency warp (Jaitly & Hinton 2013), elementwise on a tensor."""
    boundary = f_hi * min(alpha, 1.0) / alpha
    top = f_hi * min(alpha, 1.0)
    high = nyquist - (nyquist - top) / (nyquist - boundary) * (nyquist - f)
    return torch.where(f <= boundary, f * alpha, high)


def vtlp_fbanks(alpha):
    """torchaudio's melscale_fbanks(201, 0, 8000, 40, 16000, norm=None, "htk") evaluated at
    warped FFT-bin frequencies: [201, 40]."""
    all_freqs = vtlp_warp(torch.linspace(0, NYQUIST, 201), alpha)
    mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)
    m_pts = torch.linspace(mel(0.0), mel(NYQUIST), N_MELS + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.min(down, up), min=0.0)


def log_mel(x, alpha=1.0):
    """Waveform [N] -> normalised log-mel [40, T]; `alpha` != 1 warps the filterbank (VTLP)."""
    if alpha == 1.0:
        mel = MEL(x)
    else:
        mel = (MEL.spectrogram(x).transpose(0, 1) @ vtlp_fbanks(alpha)).transpose(0, 1)
    feats = torch.log(mel + 1e-6)
    mean = feats.mean(dim=1, keepdim=True)
    var = feats.var(dim=1, unbiased=False, keepdim=True)
    return (feats - mean) / torch.sqrt(var + 1e-5)


class SpeedPerturb:
    """Speed perturbation as resampling 16 kHz -> round(16 kHz / factor) (so 1.1 is shorter):
    torchaudio's sinc resampler with its own kernel, applied sparsely. For 0.9 the kernel is
    [8889, 8014] with only 13 non-zero taps per row, and its dense conv1d costs ~0.25 s per
    utterance; gathering the ~16 taps around each row's first non-zero gives the same sums."""

    def __init__(self, factor):
        r = torchaudio.transforms.Resample(SR, round(SR / factor))
        kernel = r.kernel[:, 0, :]                                  # [new, orig + 2 * width]
        self.orig, self.new, self.width = r.orig_freq // r.gcd, r.new_freq // r.gcd, r.width
        self.first = (kernel != 0).int().argmax(dim=1)             # first tap of each phase
        cols = self.first.unsqueeze(1) + torch.arange(2 * self.width + 2)
        inside = cols < kernel.shape[1]
        self.taps = torch.where(inside, kernel.gather(1, cols.clamp(max=kernel.shape[1] - 1)), 0.0)
        assert torch.equal((self.taps != 0).sum(1), (kernel != 0).sum(1))  # no tap left out
        self.offsets = torch.arange(2 * self.width + 2)

    def __call__(self, x):
        n_out = math.ceil(self.new * x.shape[0] / self.orig)
        padded = F.pad(x, (self.width, self.width + self.orig))
        m = torch.arange(n_out)
        phase = m % self.new
        start = (m // self.new) * self.orig + self.first[phase]
        idx = (start.unsqueeze(1) + self.offsets).clamp(max=padded.shape[0] - 1)
        return (padded[idx] * self.taps[phase]).sum(dim=1)


SPEED = {f: SpeedPerturb(f) for f in (0.9, 1.1)}


def augment(x):
    """Training features of waveform x: speed, noise, VTLP, SpecAugment -> [40, T]."""
    factor = random.choice([0.9, 1.0, 1.1])
    if factor != 1.0:
        x = SPEED[factor](x)
    if random.random() < 0.5:
        snr_db = random.uniform(10.0, 30.0)
        power = x.pow(2).mean()
        x = x + torch.randn_like(x) * torch.sqrt(power / 10 ** (snr_db / 10))
    feats = log_mel(x, random.uniform(0.9, 1.1))
    n_bands, t = feats.shape
    for _ in range(MASKS):  # time masks
        width = random.randint(0, min(40, int(0.1 * t)))
        start = random.randint(0, t - width)
        feats[:, start:start + width] = 0.0
    for _ in range(MASKS):  # frequency masks
        width = random.randint(0, 5)
        start = random.randint(0, n_bands - width)
        feats[start:start + width, :] = 0.0
    return feats


def collate(feats, texts, vocab):
    """List of [40, T] features -> ([B, T, 40] zero-padded, lengths, targets, target lengths)."""
    lengths = torch.tensor([f.shape[1] for f in feats])
    x = torch.zeros(len(feats), int(lengths.max()), N_MELS)
    for b, f in enumerate(feats):
        x[b, :f.shape[1]] = f.transpose(0, 1)
    targets = torch.tensor([vocab[c] for t in texts for c in t])
    target_lengths = torch.tensor([len(t) for t in texts])
    return x, lengths, targets, target_lengths


def bucketed_batches(n, durations, rng, batch_size=16, window_batches=8):
    """stapes' Order::Bucketed: shuffle, sort windows of 8 batches by duration, cut, shuffle."""
    idx = list(range(n))
    rng.shuffle(idx)
    batches = []
    for w0 in range(0, n, batch_size * window_batches):
        window = sorted(idx[w0:w0 + batch_size * window_batches], key=lambda i: (durations[i], i))
        batches += [window[b:b + batch_size] for b in range(0, len(window), batch_size)]
    rng.shuffle(batches)
    return batches


# ---------------------------------------------------------------- model

class SmallCrdnn(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d((2, 2)),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d((1, 2)))
        self.rnn = nn.LSTM(32 * 10, 128, num_layers=2, bidirectional=True, batch_first=True,
                           dropout=0.1)
        self.out = nn.Linear(256, vocab_size)

    def forward(self, x, lengths):
        """x [B, T, 40], lengths [B] -> logits [B, T', C], output lengths [B]."""
        h = self.cnn(x.unsqueeze(1))                       # [B, 32, T', 10]
        b, c, t, f = h.shape
        h = h.permute(0, 2, 1, 3).reshape(b, t, c * f)     # [B, T', 320]
        out_lengths = torch.clamp(lengths // 2, min=1, max=t)
        packed = pack_padded_sequence(h, out_lengths, batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=t)
        return self.out(h), out_lengths


# ---------------------------------------------------------------- decoding and scoring

def greedy_decode(logits, lengths, chars):
    best = logits.argmax(dim=-1)
    hyps = []
    for b in range(best.shape[0]):
        ids = torch.unique_consecutive(best[b, :lengths[b]]).tolist()
        hyps.append("".join(chars[i] for i in ids if i != 0))
    return hyps


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_counts(refs, hyps):
    """(char errors, ref chars, word errors, ref words) summed over the set."""
    ce = sum(edit_distance(r, h) for r, h in zip(refs, hyps))
    we = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    return ce, sum(len(r) for r in refs), we, sum(len(r.split()) for r in refs)


@torch.no_grad()
def transcribe(model, feats, chars, batch_size=32):
    model.eval()
    hyps = []
    for b0 in range(0, len(feats), batch_size):
        chunk = feats[b0:b0 + batch_size]
        x, lengths, _, _ = collate(chunk, [""] * len(chunk), {})
        logits, out_lengths = model(x, lengths)
        hyps += greedy_decode(logits, out_lengths, chars)
    return hyps


MASKS = 0  # SpecAugment masks of each kind (set from --masks)

# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/esp")
    ap.add_argument("--epochs", type=int, default=19)
    ap.add_argument("--masks", type=int, default=0,
                    help="SpecAugment masks of each kind (0, as the preset now; 2 as first written)")
    ap.add_argument("--dev-every", type=int, default=20,
                    help="every k-th training utterance goes to dev (20: stapes' dev_fraction 0.05)")
    args = ap.parse_args()
    global MASKS
    MASKS = args.masks
    torch.manual_seed(0)
    random.seed(0)
    t_start = time.time()

    items = read_manifest(os.path.join(args.data, "train", "manifest.jsonl"))
    test = read_manifest(os.path.join(args.data, "test", "manifest.jsonl"))
    k = args.dev_every
    train = [it for i, it in enumerate(items) if i % k != k - 1]
    dev = [it for i, it in enumerate(items) if i % k == k - 1]
    chars = ["<blank>"] + sorted({c for it in items for c in it["text"]})
    vocab = {c: i for i, c in enumerate(chars)}
    print(f"train {len(train)}, dev {len(dev)}, test {len(test)}, vocab {len(chars)}: "
          f"{''.join(chars[1:])!r}, torch {torch.__version__}, threads {torch.get_num_threads()}",
          flush=True)

    dev_feats = [log_mel(load_wav(it["path"])) for it in dev]
    test_feats = [log_mel(load_wav(it["path"])) for it in test]
    durations = [it["duration"] for it in train]

    model = SmallCrdnn(len(chars))
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=3e-4, max_lr=3e-3, step_size_up=300,
                                              mode="triangular2", cycle_momentum=False)
    order_rng = random.Random(0)
    best_cer, best_state = math.inf, None

    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        model.train()
        losses = []
        for batch in bucketed_batches(len(train), durations, order_rng):
            feats = [augment(load_wav(train[i]["path"])) for i in batch]
            x, lengths, targets, target_lengths = collate(
                feats, [train[i]["text"] for i in batch], vocab)
            logits, out_lengths = model(x, lengths)
            loss = F.ctc_loss(logits.transpose(0, 1).log_softmax(2), targets, out_lengths,
                              target_lengths, blank=0, reduction="mean", zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())

        dev_hyps = transcribe(model, dev_feats, chars)
        ce, nc, we, nw = error_counts([it["text"] for it in dev], dev_hyps)
        dev_cer, dev_wer = ce / nc, we / nw
        if dev_cer < best_cer:
            best_cer, best_state = dev_cer, copy.deepcopy(model.state_dict())
        print(f"epoch {epoch:2d}  loss {sum(losses) / len(losses):.4f}  dev CER {dev_cer:.4f}  "
              f"dev WER {dev_wer:.4f}  {time.time() - t0:.1f}s", flush=True)

    model.load_state_dict(best_state)
    refs = [it["text"] for it in test]
    hyps = transcribe(model, test_feats, chars)
    ce, nc, we, nw = error_counts(refs, hyps)
    per_speaker = {}
    for spk in sorted({it["speaker"] for it in test}):
        sel = [k for k, it in enumerate(test) if it["speaker"] == spk]
        sce, snc, swe, snw = error_counts([refs[k] for k in sel], [hyps[k] for k in sel])
        per_speaker[spk] = {"wer": swe / snw, "cer": sce / snc, "utterances": len(sel)}
    print(json.dumps({"side": "pytorch", "test_wer": we / nw, "test_cer": ce / nc,
                      "best_dev_cer": best_cer, "epochs": args.epochs,
                      "seconds": round(time.time() - t_start, 1), "per_speaker": per_speaker}),
          flush=True)


if __name__ == "__main__":
    main()
