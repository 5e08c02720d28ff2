#!/usr/bin/env bash
# Side-by-side dynamic int8 quantization (issue 19): stapes (examples/bench_quant.rs) and
# PyTorch's quantize_dynamic (benches/torch/quant.py), 2 threads each, interleaved for ROUNDS
# rounds. Each prints one JSON line per workload and precision (f32, int8); the CPU model and
# the load average go before each run.
#
#   benches/run_quant.sh [rounds] [reps]          # defaults: 2 rounds of 5 timed forwards
#
# Honours TORCH_PYTHON (default python3) and CARGO_TARGET_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${TORCH_PYTHON:-python3}"
ROUNDS="${1:-2}"
REPS="${2:-5}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

cargo build --release --example bench_quant >&2
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
load() { cut -d' ' -f1-3 /proc/loadavg; }
for r in $(seq 1 "$ROUNDS"); do
  echo "# round $r stapes (load $(load))"
  "$TARGET_DIR/release/examples/bench_quant" "$REPS"
  echo "# round $r pytorch (load $(load))"
  "$PY" benches/torch/quant.py "$REPS"
done
