#!/usr/bin/env python3
"""Regenerates every stapes-nn golden file (the issue's `tools/golden/nn.py`).

Runs, in order, each nn fixture script with the same interpreter (torch 2.11.0 pinned by
each script); each writes its own file under tests/golden/:

  nn_layers.py       -> nn_layers.safetensors        (tests/parity_nn_layers.rs)
  nn_rnn.py          -> nn_rnn.safetensors           (tests/parity_nn_rnn.rs)
  nn_transformer.py  -> nn_transformer.safetensors   (tests/parity_nn_transformer.rs)
  nn_loss_optim.py   -> nn_loss_optim.safetensors    (tests/parity_nn_loss_optim.rs)
  schedules.py       -> schedules.safetensors        (tests/parity_schedules.rs)
  nn_checkpoint.py   -> torch_state_dict*.safetensors (tests/nn_checkpoint.rs)

Usage: python tools/golden/nn.py [script-name-substring ...]
"""

import os
import subprocess
import sys

SCRIPTS = ["nn_layers.py", "nn_rnn.py", "nn_transformer.py", "nn_loss_optim.py", "schedules.py", "nn_checkpoint.py"]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    wanted = sys.argv[1:]
    for s in SCRIPTS:
        if wanted and not any(w in s for w in wanted):
            continue
        print(f"== {s}", flush=True)
        subprocess.run([sys.executable, os.path.join(here, s)], cwd=root, check=True)


if __name__ == "__main__":
    main()
