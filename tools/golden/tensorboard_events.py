#!/usr/bin/env python3
"""TensorBoard event-file interoperability for `tests/speech_tensorboard.rs`.

Without arguments, writes `tests/golden/tensorboard/events.out.tfevents.pytorch` with
`torch.utils.tensorboard.SummaryWriter` (torch 2.11.0, tensorboard installed):

  * `loss`: simple_value scalars 1/(step+1) at steps 0..4 and at step 1_000_000 (a varint of
    three bytes), wall times 1.7e9 + step;
  * `lr`: new-style scalar (a float tensor for the `scalars` plugin) 0.125 at step 3;
  * `weights`: a histogram (default "tensorflow" bins) of `histogram_values()` at step 5;
  * `notes/text_summary`: the text "hello from PyTorch" at step 6.

The Rust test reads it with `stapes::speech::tensorboard::read_events` and checks these values,
and that stapes bins `histogram_values()` into exactly PyTorch's buckets.

With `--check DIR`, reads a directory written by stapes (`STAPES_TB_KEEP=DIR cargo test --test
speech_tensorboard -- stapes_file`) with TensorBoard's own readers and asserts its contents:
`EventAccumulator` (scalars, histograms, text tensor) and `plugin_event_accumulator` (what the
TensorBoard UI uses: histograms and scalars migrated into the `histograms`/`scalars` plugins).
The stapes histograms are also compared bucket by bucket with PyTorch's `make_histogram` of the
same values. The series (kept in step with `stapes_file` in the Rust test):

  * `train/loss` = 1/(step+1) and `train/lr` = 0.1 * 0.9**step (as f32), steps 0..9;
  * `weights` at steps 0, 5, 9: `stapes_values(step)`, with 3 NaN/inf values that are skipped;
  * `notes` at step 9: "hello from **stapes**".
"""

import glob
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

TORCH_VERSION = "2.11.0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(ROOT, "tests", "golden", "tensorboard")
OUT_NAME = "events.out.tfevents.pytorch"


def histogram_values():
    """Dyadic values (exact in f32, and their sums exact in f64 in any order) spanning zero,
    small and large magnitudes."""
    vals = [(i - 50) / 8 for i in range(101)]
    vals += [2.0**-20, -(2.0**-20), 0.0, 0.0, 1024.0, -4096.5]
    return vals


def stapes_values(step):
    """The values of the stapes `weights` histogram at `step` (finite part)."""
    return [(((i * 37) % 101) - 50) / 16 * (step + 1) for i in range(200)] + [2.0**-30, 0.0]


def write_golden():
    from torch.utils.tensorboard import SummaryWriter

    assert torch.__version__.split("+")[0] == TORCH_VERSION, torch.__version__
    tmp = tempfile.mkdtemp()
    try:
        w = SummaryWriter(log_dir=tmp)
        for step in list(range(5)) + [1_000_000]:
            w.add_scalar("loss", 1.0 / (step + 1), step, walltime=1.7e9 + step)
        w.add_scalar("lr", 0.125, 3, walltime=1.7e9 + 3, new_style=True)
        w.add_histogram("weights", np.array(histogram_values(), dtype=np.float32), 5, walltime=1.7e9 + 5)
        w.add_text("notes", "hello from PyTorch", 6, walltime=1.7e9 + 6)
        w.close()
        files = glob.glob(os.path.join(tmp, "events.out.tfevents.*"))
        assert len(files) == 1, files
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        os.makedirs(OUT_DIR)
        dst = os.path.join(OUT_DIR, OUT_NAME)
        shutil.copyfile(files[0], dst)
        size = os.path.getsize(dst)
        assert size < 20_000, size
        print(f"wrote {dst} ({size} bytes)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check(log_dir):
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
    from tensorboard.util import tensor_util
    from torch.utils.tensorboard.summary import make_histogram
    from torch.utils.tensorboard.writer import SummaryWriter

    files = glob.glob(os.path.join(log_dir, "*tfevents*"))
    assert len(files) == 1, f"expected one event file in {log_dir}, found {files}"

    acc = event_accumulator.EventAccumulator(log_dir, size_guidance={k: 0 for k in event_accumulator.DEFAULT_SIZE_GUIDANCE})
    acc.Reload()
    tags = acc.Tags()
    print("EventAccumulator tags:", {k: v for k, v in tags.items() if v})
    assert acc.file_version == 2.0, acc.file_version

    for tag, f in [("train/loss", lambda s: 1.0 / (s + 1)), ("train/lr", lambda s: 0.1 * 0.9**s)]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(range(10)), (tag, events)
        for e in events:
            want = float(np.float32(f(e.step)))
            assert e.value == want, (tag, e.step, e.value, want)
            assert abs(e.wall_time - events[0].wall_time) < 600, e.wall_time
        print(f"scalars {tag}: {[round(e.value, 6) for e in events]}")

    # The default bins of torch's SummaryWriter, as its __init__ builds them.
    tmp = tempfile.mkdtemp()
    try:
        torch_writer = SummaryWriter(log_dir=tmp)
        default_bins = torch_writer.default_bins
        torch_writer.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    histos = acc.Histograms("weights")
    assert [h.step for h in histos] == [0, 5, 9], [h.step for h in histos]
    for h in histos:
        hv = h.histogram_value
        values = np.array(stapes_values(h.step), dtype=np.float32)
        want = make_histogram(values.astype(float), default_bins)
        assert hv.num == len(values) == sum(hv.bucket), (hv.num, sum(hv.bucket))
        assert (hv.min, hv.max) == (want.min, want.max), (hv.min, hv.max, want.min, want.max)
        assert math.isclose(hv.sum, want.sum, rel_tol=1e-12) and math.isclose(hv.sum_squares, want.sum_squares, rel_tol=1e-12)
        assert list(hv.bucket_limit) == list(want.bucket_limit), "bucket limits differ from PyTorch's"
        assert list(hv.bucket) == list(want.bucket), "bucket counts differ from PyTorch's"
        print(f"histogram weights step {h.step}: num {hv.num:.0f}, min {hv.min}, max {hv.max}, "
              f"{len(hv.bucket)} buckets, identical to torch make_histogram")

    texts = acc.Tensors("notes")
    assert len(texts) == 1 and texts[0].step == 9, texts
    assert texts[0].tensor_proto.string_val == [b"hello from **stapes**"], texts[0].tensor_proto
    assert acc.SummaryMetadata("notes").plugin_data.plugin_name == "text"
    print("text notes:", texts[0].tensor_proto.string_val[0].decode())

    # What the TensorBoard UI reads: values migrated into plugin tensors by data_compat.
    pacc = plugin_event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0})
    pacc.Reload()
    active = pacc.ActivePlugins()
    print("plugins:", sorted(active))
    assert {"scalars", "histograms", "text"} <= set(active), active
    for tag, step_values in [("train/loss", 10), ("weights", 3), ("notes", 1)]:
        assert len(pacc.Tensors(tag)) == step_values, tag
    hist = pacc.Tensors("weights")[0]
    arr = tensor_util.make_ndarray(hist.tensor_proto)
    assert arr.ndim == 2 and arr.shape[1] == 3, arr.shape
    assert arr[:, 2].sum() == len(stapes_values(0)), arr[:, 2].sum()
    assert (arr[:, 0] <= arr[:, 1]).all(), "a backwards bucket"
    print(f"plugin histogram weights step 0: {arr.shape[0]} buckets [left, right, count], counts sum {arr[:, 2].sum():.0f}")
    print("OK: TensorBoard reads the stapes event file")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    elif len(sys.argv) == 1:
        write_golden()
    else:
        sys.exit(f"usage: {sys.argv[0]} [--check LOG_DIR]")


if __name__ == "__main__":
    main()
