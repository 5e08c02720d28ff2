#!/usr/bin/env bash
# Side-by-side CPU timing of stapes and PyTorch on the workloads of benches/ops.rs.
#
# Builds examples/bench_table.rs (release), runs it and benches/torch/ops.py one after the
# other on this machine with 2 threads each, and writes the table plus the machine facts into
# the marked section of benches/RESULTS.md (text outside the markers is kept).
#
#   benches/run_comparison.sh            # all workloads
#   TORCH_PYTHON=python3 benches/run_comparison.sh
#
# Honours CARGO_TARGET_DIR. Each run also records how much CPU time *other* processes used
# while it ran (from /proc/stat minus the run's own CPU time), so a table measured on a busy
# machine says so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${TORCH_PYTHON:-/root/torchenv/bin/python}"
THREADS=2
RESULTS="benches/RESULTS.md"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "== building examples/bench_table (release)" >&2
cargo build --release --example bench_table >&2
BIN="$TARGET_DIR/release/examples/bench_table"

# Runs a command, recording wall time, its own CPU time and the CPU time of everything else.
cat > "$WORK/measure.py" <<'EOF'
import json, os, resource, subprocess, sys, time

def busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]) - idle

out_path, info_path, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
hz = os.sysconf("SC_CLK_TCK")
with open("/proc/loadavg") as f:
    load_before = f.read().split()[:3]
b0, t0 = busy_jiffies(), time.monotonic()
with open(out_path, "w") as out:
    rc = subprocess.call(cmd, stdout=out)
wall = time.monotonic() - t0
busy = (busy_jiffies() - b0) / hz
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
own = ru.ru_utime + ru.ru_stime
with open("/proc/loadavg") as f:
    load_after = f.read().split()[:3]
json.dump({"wall_s": wall, "own_cpu_s": own, "other_cpu_s": max(0.0, busy - own),
           "load_before": load_before, "load_after": load_after}, open(info_path, "w"))
sys.exit(rc)
EOF

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

echo "== stapes ($BIN, RAYON_NUM_THREADS=$THREADS)" >&2
python3 "$WORK/measure.py" "$WORK/stapes.jsonl" "$WORK/stapes.info" "$BIN"
cat "$WORK/stapes.jsonl" >&2

echo "== PyTorch ($PY benches/torch/ops.py, $THREADS threads)" >&2
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
python3 "$WORK/measure.py" "$WORK/torch.jsonl" "$WORK/torch.info" "$PY" benches/torch/ops.py
cat "$WORK/torch.jsonl" >&2

export CPU_MODEL="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
export CPU_COUNT="$(nproc)"
export RUN_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
export RUSTC_VERSION="$(rustc --version)"
export TORCH_VERSION
export GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (uncommitted changes)')"

python3 - "$WORK" "$RESULTS" <<'EOF'
import json, os, sys

work, results = sys.argv[1], sys.argv[2]
BEGIN, END = "<!-- ops-comparison:begin -->", "<!-- ops-comparison:end -->"

def load(name):
    with open(os.path.join(work, name + ".jsonl")) as f:
        rows = {r["name"]: r for r in map(json.loads, filter(str.strip, f))}
    with open(os.path.join(work, name + ".info")) as f:
        return rows, json.load(f)

stapes, s_info = load("stapes")
torch, t_info = load("torch")

# Targets as the largest allowed time ratio stapes / PyTorch.
TARGETS = {
    "matmul_1024": (1 / 0.9, "≥ 0.9× GFLOP/s (ratio ≤ 1.11)"),
    "softmax_4096x4096": (1.0, "ratio ≤ 1.0"),
    "add_bcast_4096x4096": (1.0, "ratio ≤ 1.0"),
    "conv2d_fwd_bwd": (1.2, "ratio ≤ 1.2"),
}
DESCR = {
    "matmul_1024": "matmul 1024×1024×1024 f32",
    "matmul_256": "matmul 256×256×256 f32",
    "softmax_4096x4096": "softmax, last dim of [4096, 4096]",
    "add_bcast_4096x4096": "add [4096, 4096] + [4096]",
    "exp_16M": "exp of 16M floats",
    "sum_lastdim_4096x4096": "sum, last dim of [4096, 4096]",
    "layer_norm_4096x1024": "layer_norm [4096, 1024] (+w, b)",
    "conv2d_fwd_bwd": "conv 1→64→128 3×3 on [8,1,80,400], fwd+bwd",
}

def fmt_time(s):
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"

def cell(r):
    t = r["median_s"]
    if r["flops"]:
        return f"{fmt_time(t)} ({r['flops'] / t / 1e9:.1f} GFLOP/s)"
    if r["bytes"]:
        return f"{fmt_time(t)} ({r['bytes'] / t / 1e9:.1f} GB/s)"
    return fmt_time(t)

lines = [
    "| workload | stapes | PyTorch | ratio (time stapes / PyTorch) | target | met? |",
    "|---|---|---|---|---|---|",
]
for name, s in stapes.items():
    t = torch.get(name)
    if t is None:
        continue
    ratio = s["median_s"] / t["median_s"]
    limit, target = TARGETS.get(name, (None, "— (informative)"))
    met = "—" if limit is None else ("yes" if ratio <= limit else "**no**")
    lines.append(f"| {DESCR.get(name, name)} | {cell(s)} | {cell(t)} | {ratio:.2f} | {target} | {met} |")

def disturbance(label, info):
    other = info["other_cpu_s"] / info["wall_s"]
    return (f"{label}: {info['wall_s']:.1f} s wall, {info['own_cpu_s']:.1f} s own CPU, other processes "
            f"used {other:.2f} cores on average; load average {' '.join(info['load_before'])} before, "
            f"{' '.join(info['load_after'])} after"), other

s_line, s_other = disturbance("stapes run", s_info)
t_line, t_other = disturbance("PyTorch run", t_info)
disturbed = max(s_other, t_other) > 0.1
env = os.environ
section = [
    BEGIN,
    "## CPU ops: stapes vs PyTorch (2 threads)",
    "",
    "Made by `benches/run_comparison.sh` (stapes: `examples/bench_table.rs`, release build; PyTorch: "
    "`benches/torch/ops.py`). Each figure is the median of single-call timings after warmup (≥ 10 calls, "
    "≥ 2 s); rates are FLOPs (2·M·N·K; conv: forward + weight, bias and input gradients) or bytes "
    "read + written per call, divided by the median time. f32, CPU, `RAYON_NUM_THREADS=2` / "
    "`torch.set_num_threads(2)`. The canonical stapes bench is `cargo bench --bench ops` (criterion).",
    "",
    *lines,
    "",
    f"- Machine: {env['CPU_MODEL']}, {env['CPU_COUNT']} CPUs",
    f"- Date: {env['RUN_DATE']}; stapes at {env['GIT_REV']}",
    f"- {env['RUSTC_VERSION']}; torch {env['TORCH_VERSION']}",
    f"- {s_line}",
    f"- {t_line}",
]
if disturbed:
    section.append("- **This run may have been disturbed**: other processes used noticeable CPU time "
                   "while it ran (see above), so the absolute figures and ratios are noisy.")
section.append(END)
section = "\n".join(section)

try:
    text = open(results).read()
except FileNotFoundError:
    text = "# Benchmark results\n\n"
if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    text = head + section + tail
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(results, "w").write(text)
print(section)
EOF
echo "== wrote $RESULTS" >&2
