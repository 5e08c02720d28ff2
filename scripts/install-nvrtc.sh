#!/usr/bin/env bash
# Installs NVRTC (the CUDA run-time compiler) and the CUDA runtime headers from PyPI wheels into
# a local folder, so that a machine with no CUDA toolkit and no GPU can compile every kernel in
# kernels/cuda/ (the NVRTC compile check in kernels/tests/cuda_nvrtc.rs).
#
# Versions: 13.0.x matches the lent GPUs' driver (580, CUDA 13.0); a newer NVRTC could emit code
# that driver cannot load. The nvrtc wheel ships libnvrtc.so.13 and nvrtc.h only; cuda_fp16.h and
# cuda_bf16.h come from the runtime wheel. Both unpack into <dir>/nvidia/cu13/{lib,include}.
#
# Usage: scripts/install-nvrtc.sh [dir]      (default: .nvrtc at the repository root)
# Idempotent: does nothing when the pinned versions are already there. Prints the exports to use.
set -euo pipefail

NVRTC_VERSION=13.0.88
RUNTIME_VERSION=13.0.96

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/.nvrtc}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
stamp="$dir/.stapes-nvrtc-$NVRTC_VERSION-runtime-$RUNTIME_VERSION"

if [[ -f "$stamp" && -f "$dir/nvidia/cu13/lib/libnvrtc.so.13" && -f "$dir/nvidia/cu13/include/cuda_fp16.h" ]]; then
    echo "install-nvrtc: NVRTC $NVRTC_VERSION and runtime headers $RUNTIME_VERSION already in $dir" >&2
else
    echo "install-nvrtc: installing nvidia-cuda-nvrtc==$NVRTC_VERSION nvidia-cuda-runtime==$RUNTIME_VERSION into $dir" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade --target "$dir" \
        "nvidia-cuda-nvrtc==$NVRTC_VERSION" "nvidia-cuda-runtime==$RUNTIME_VERSION" >&2
    for f in nvidia/cu13/lib/libnvrtc.so.13 nvidia/cu13/include/cuda_fp16.h nvidia/cu13/include/cuda_bf16.h; do
        if [[ ! -f "$dir/$f" ]]; then
            echo "install-nvrtc: the wheels did not provide $f (layout changed?)" >&2
            exit 1
        fi
    done
    rm -f "$dir"/.stapes-nvrtc-*
    touch "$stamp"
fi

# The exports, on stdout so that `eval "$(scripts/install-nvrtc.sh)"` works.
echo "export STAPES_NVRTC_DIR=\"$dir\""
echo "export LD_LIBRARY_PATH=\"$dir/nvidia/cu13/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
