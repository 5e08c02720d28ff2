#!/usr/bin/env bash
# The GPU test suite and benchmarks, built on a machine without a GPU and run on one with a GPU.
#
#   scripts/gpu-suite.sh build          # here (no GPU needed): builds the CUDA test binaries and
#                                       # bench_gpu, strips them into gpu-bundle/ (git-ignored)
#   scripts/gpu-suite.sh run [OUTDIR] [all|tests|bench]
#                                       # on the GPU machine (driver + CUDA 13 libraries, PyTorch
#                                       # for the comparison): runs every test binary with
#                                       # STAPES_TEST_CUDA=gpu (a missing GPU fails instead of
#                                       # falling back to the emulator), then bench_gpu and
#                                       # benches/torch/gpu_ops.py, and writes OUTDIR/gpu-suite.md
#                                       # (`tests` or `bench` runs only that half, so each fits in
#                                       # one call of a time-limited machine; a test binary gets
#                                       # STAPES_GPU_TEST_TIMEOUT seconds, default 300)
#
# The binaries need only libcuda, libnvrtc (and libcublas for matmul) on the GPU machine: cudarc
# loads them at run time. No Rust toolchain is needed there.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
bundle=gpu-bundle

case "$mode" in
build)
    rm -rf "$bundle" && mkdir -p "$bundle/bin"
    # Every integration test binary named cuda_* or gpu_* (the same name may exist in several
    # crates: the bundle names them <crate>__<test>), except the NVRTC compile check and the
    # emulator's self-test, which are CPU checks run by CI.
    cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    name, exe = t.get("name", ""), m.get("executable")
    if exe and "test" in t.get("kind", []) and name.startswith(("cuda_", "gpu_")) \
            and name not in ("cuda_nvrtc", "cuda_emu_selftest"):
        pkg = m["package_id"].split("#")[-1].split("@")[0].split("/")[-1].replace("stapes-", "")
        print(exe, pkg + "__" + name)
' | sort -u >"$bundle/tests.txt"
    while read -r exe name; do
        cp "$exe" "$bundle/bin/test_$name"
    done <"$bundle/tests.txt"
    cargo build --release --example bench_gpu
    cp target/release/examples/bench_gpu "$bundle/bin/bench_gpu"
    strip "$bundle"/bin/*
    cp benches/torch/gpu_ops.py "$bundle/"
    tar -C "$bundle" -cJf "$bundle.tar.xz" bin gpu_ops.py
    rm -rf "$bundle" && mkdir -p "$bundle" && mv "$bundle.tar.xz" "$bundle/"
    ls -la "$bundle"
    echo "carry $bundle to the GPU machine and run: scripts/gpu-suite.sh run \$OUT"
    ;;
run)
    out="${2:-gpu-results}"
    what="${3:-all}"
    case "$what" in all | tests | bench) ;; *) echo "run: expected all, tests or bench, not $what" >&2; exit 2 ;; esac
    mkdir -p "$out"
    work="$(mktemp -d)"
    tar -C "$work" -xJf "$bundle/gpu-bundle.tar.xz"
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
    done
    export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
    export STAPES_TEST_CUDA=gpu
    md="$out/gpu-suite.md"
    {
        echo "# GPU suite: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown GPU)"
        echo
        echo "| test binary | result | passed | failed | seconds |"
        echo "| --- | --- | --- | --- | --- |"
    } >"$md"
    status=0
    tests=("$work"/bin/test_*)
    [ "$what" = bench ] && tests=()
    for t in "${tests[@]}"; do
        name="$(basename "$t" | sed 's/^test_//')"
        start=$(date +%s.%N)
        # the CLI test runs the stapes binary by its build path, which exists only here
        skip=()
        [ "$name" = "stapes__cuda_train" ] && skip=(--skip cli_)
        if timeout "${STAPES_GPU_TEST_TIMEOUT:-300}" "$t" --test-threads=1 "${skip[@]}" >"$out/$name.log" 2>&1; then
            res=pass
        else
            res=FAIL
            status=1
        fi
        secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }")
        passed=$(grep -o '[0-9]* passed' "$out/$name.log" | tail -1 | cut -d' ' -f1)
        failed=$(grep -o '[0-9]* failed' "$out/$name.log" | tail -1 | cut -d' ' -f1)
        echo "| $name | $res | ${passed:-?} | ${failed:-?} | $secs |" >>"$md"
    done
    if [ "$what" != tests ]; then
        "$work/bin/bench_gpu" >"$out/bench_stapes.jsonl" 2>"$out/bench_stapes.log" || status=1
        python3 "$work/gpu_ops.py" >"$out/bench_torch.jsonl" 2>"$out/bench_torch.log" || status=1
    fi
    python3 - "$out" >>"$md" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(name):
    rows = {}
    path = os.path.join(out, name)
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                rows[r["name"]] = r
    return rows
s, t = load("bench_stapes.jsonl"), load("bench_torch.jsonl")
copy = s.get("d2d_copy_64M_f32", {}).get("median_s")
print("\n| workload | stapes | PyTorch | stapes / PyTorch time | stapes rate | PyTorch rate | % of D2D copy bandwidth |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name in list(dict.fromkeys(list(s) + list(t))):
    a, b = s.get(name, {}), t.get(name, {})
    def rate(r):
        if r.get("status") != "ok": return r.get("status", "-")[:80]
        if r["flops"]: return f'{r["flops"] / r["median_s"] / 1e12:.1f} TFLOP/s'
        if r["bytes"]: return f'{r["bytes"] / r["median_s"] / 1e9:.0f} GB/s'
        return "-"
    ta, tb = a.get("median_s"), b.get("median_s")
    ratio = f"{ta / tb:.2f}x" if ta and tb else "-"
    pct = f'{100 * (a["bytes"] / ta) / (s["d2d_copy_64M_f32"]["bytes"] / copy):.0f}%' if ta and copy and a.get("bytes") else "-"
    fmt = lambda x: f"{x * 1e3:.3f} ms" if x else "-"
    print(f"| {name} | {fmt(ta)} | {fmt(tb)} | {ratio} | {rate(a)} | {rate(b)} | {pct} |")
PY
    cat "$md"
    exit $status
    ;;
*)
    echo "usage: scripts/gpu-suite.sh build | run [OUTDIR]" >&2
    exit 2
    ;;
esac
