#!/usr/bin/env python3
"""Checkpoint interoperability fixtures for `tests/nn_checkpoint.rs`.

Writes, with PyTorch 2.11.0 on the CPU:
  tests/golden/torch_state_dict.safetensors   the state_dict of a small Conv/BN/Linear model
                                              after two training steps (so BatchNorm's running
                                              statistics and num_batches_tracked are not the
                                              defaults), saved by safetensors.torch.save_file;
  tests/golden/torch_state_dict_io.safetensors an input and the model's eval-mode output.

The Rust test loads the first file into the same architecture built with stapes-nn and must
reproduce the output; it then saves the model with stapes and reloads it.

With `--check FILE`, instead loads a state_dict written by stapes (`STAPES_WRITE_STATE=FILE
cargo test --test nn_checkpoint`) into the PyTorch model with strict=True and checks the
output against the fixture: the other direction of the interop.
"""

import sys

import torch
from safetensors.torch import load_file, save_file

TORCH_VERSION = "2.11.0"


def model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 10),
        torch.nn.LayerNorm(10),
    )


def main():
    assert torch.__version__.split("+")[0] == TORCH_VERSION, torch.__version__
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(2):
        x = torch.randn(5, 1, 8, 8)
        loss = m(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        y = m(x)
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        other = model()
        other.load_state_dict(load_file(sys.argv[2]), strict=True)
        other.eval()
        with torch.no_grad():
            y2 = other(x)
        err = (y2 - y).abs().max().item()
        print(f"stapes-written state_dict loads into PyTorch (strict); max |diff| of outputs = {err:.3g}")
        assert err < 1e-5
        return
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, "tests/golden/torch_state_dict.safetensors")
    save_file({"input": x, "output": y}, "tests/golden/torch_state_dict_io.safetensors")


if __name__ == "__main__":
    main()
