#!/usr/bin/env bash
# Side-by-side CRDNN training step (issue 8): PyTorch (benches/torch/crdnn.py) and stapes
# (examples/bench_crdnn.rs), 2 threads each, interleaved for ROUNDS rounds, on the packed
# variable-length batch and (with FULL=1, the default) on the full-length batch too.
#
#   benches/run_crdnn.sh [rounds] [steps]          # defaults: 3 rounds of 10 timed steps
#   DROPOUT=0.15 benches/run_crdnn.sh 1 10         # the configured baseline's dropout
#
# Each run prints one JSON line, prefixed by the side, the variant and the load average (1, 5,
# 15 min) just before it. The weights/inputs file is rewritten by each PyTorch run (the same
# seeded content every time) under $CARGO_TARGET_DIR (or target/). Honours TORCH_PYTHON.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${TORCH_PYTHON:-/root/torchenv/bin/python}"
ROUNDS="${1:-3}"
STEPS="${2:-10}"
DROPOUT="${DROPOUT:-0.0}"
FULL="${FULL:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

cargo build --release --example bench_crdnn >&2
BIN="$TARGET_DIR/release/examples/bench_crdnn"
variants=(packed)
[ "$FULL" = 1 ] && variants+=(full)
load() { cut -d' ' -f1-3 /proc/loadavg; }
for r in $(seq 1 "$ROUNDS"); do
  for v in "${variants[@]}"; do
    file="$TARGET_DIR/crdnn_bench_$v.safetensors"
    flag=()
    [ "$v" = full ] && flag=(--full-length)
    l=$(load)
    echo "round $r torch $v load [$l] $("$PY" benches/torch/crdnn.py "$STEPS" "${flag[@]}" --dropout "$DROPOUT" --out "$file" 2>/dev/null)"
    l=$(load)
    echo "round $r stapes $v load [$l] $("$BIN" "$STEPS" "$file" 2>/dev/null)"
  done
done
