"""PyTorch side of examples/bench_gpu.rs: the same GPU workloads, timed the same way.

Warm up (3 calls), then batches of 5 calls between torch.cuda.synchronize() until at least 20
calls and 1 s; the median per-call time of the batches. One JSON line per workload, with the
same names, flops and bytes as the Rust side, plus the cuDNN/cuBLAS settings used. The
`*_pinned` transfer rows have no stapes counterpart: they show what page-locked host memory
gives, next to the pageable rows that stapes' (internally staged) copies compare with.

    python3 benches/torch/gpu_ops.py [name-filter...]
"""
import json
import sys
import time

import torch


def workloads():
    big, rows, mm = 64 << 20, 65536, 8192
    xfer = 64 << 20  # f32 elements: 256 MiB
    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, device="cuda", dtype=dtype, generator=g)

    def d2d():
        a = randn(big)
        return lambda: a.clone()

    def add(dtype=torch.float32):
        def make():
            a, b = randn(big, dtype=dtype), randn(big, dtype=dtype)
            return lambda: a + b

        return make

    def softmax():
        x = randn(rows, 1024)
        return lambda: torch.softmax(x, 1)

    def layer_norm():
        x, w, b = randn(rows, 1024), randn(1024), randn(1024)
        return lambda: torch.nn.functional.layer_norm(x, (1024,), w, b, 1e-5)

    def transpose():
        x = randn(mm, mm)
        return lambda: x.t().contiguous()

    def h2d(pinned):
        def make():
            x = torch.randn(xfer)
            if pinned:
                x = x.pin_memory()
            return lambda: x.to("cuda", non_blocking=pinned)

        return make

    def d2h(pinned):
        def make():
            g_ = randn(xfer)
            if not pinned:
                return lambda: g_.cpu()
            out = torch.empty(xfer, pin_memory=True)
            return lambda: out.copy_(g_, non_blocking=True)

        return make

    def matmul(dtype):
        def make():
            a, b = randn(mm, mm, dtype=dtype), randn(mm, mm, dtype=dtype)
            return lambda: torch.matmul(a, b)

        return make

    def conv():
        x = randn(8, 1, 80, 400)
        w1 = (randn(64, 1, 3, 3) / 3).requires_grad_()
        b1 = (randn(64) * 0.1).requires_grad_()
        w2 = (randn(128, 64, 3, 3) / 24).requires_grad_()
        b2 = (randn(128) * 0.1).requires_grad_()
        gy = randn(8, 128, 80, 400)

        def step():
            for p in (w1, b1, w2, b2):
                p.grad = None
            h = torch.relu(torch.nn.functional.conv2d(x, w1, b1, padding=1))
            y = torch.nn.functional.conv2d(h, w2, b2, padding=1)
            y.backward(gy)

        return step

    def conv_fwd():
        h = randn(8, 64, 80, 400)
        w2 = randn(128, 64, 3, 3) / 24
        b2 = randn(128) * 0.1

        def step():
            with torch.no_grad():
                torch.nn.functional.conv2d(h, w2, b2, padding=1)

        return step

    def ctc(classes):
        def make():
            T, B, S = 500, 32, 100
            x = torch.randn(T, B, classes, device="cuda", generator=g).log_softmax(2).detach().requires_grad_()
            labels = torch.tensor([1 + (i * 7 % (classes - 1)) for i in range(B * S)], device="cuda").view(B, S)
            il = torch.full((B,), T, dtype=torch.long, device="cuda")
            tl = torch.full((B,), S, dtype=torch.long, device="cuda")

            def step():
                x.grad = None
                torch.nn.functional.ctc_loss(x, labels, il, tl, blank=0, reduction="mean").backward()

            return step

        return make

    def bilstm():
        lstm = torch.nn.LSTM(256, 512, num_layers=2, bidirectional=True).cuda()
        x = randn(400, 32, 256).requires_grad_()
        gy = randn(400, 32, 1024)

        def step():
            lstm.zero_grad(set_to_none=True)
            x.grad = None
            lstm(x)[0].backward(gy)

        return step

    def small_lstm():
        lstm = torch.nn.LSTM(48, 48).cuda()
        x = randn(400, 8, 48)

        def step():
            with torch.no_grad():
                lstm(x)

        return step

    lstm_flops = lambda i: 2 * 4 * 512 * (i + 512)
    per_step = 2 * (lstm_flops(256) + lstm_flops(1024))
    hw = 80 * 400
    conv1, conv2 = 2 * 8 * 64 * 9 * hw, 2 * 8 * 128 * 64 * 9 * hw
    return [
        ("d2d_copy_64M_f32", 0, 2 * 4 * big, d2d),
        ("add_64M_f32", 0, 3 * 4 * big, add()),
        ("add_64M_bf16", 0, 3 * 2 * big, add(torch.bfloat16)),
        ("softmax_65536x1024_f32", 0, 2 * 4 * rows * 1024, softmax),
        ("layer_norm_65536x1024_f32", 0, 2 * 4 * rows * 1024, layer_norm),
        ("transpose_8192x8192_f32", 0, 2 * 4 * mm * mm, transpose),
        # Host<->device copies: pageable (as stapes' tensors are) and from/to pinned memory, with
        # non_blocking=True (the batch's synchronize() waits for them); bytes cross the link once.
        ("h2d_256M_f32", 0, 4 * xfer, h2d(False)),
        ("h2d_256M_f32_pinned", 0, 4 * xfer, h2d(True)),
        ("d2h_256M_f32", 0, 4 * xfer, d2h(False)),
        ("d2h_256M_f32_pinned", 0, 4 * xfer, d2h(True)),
        ("matmul_8192_f16", 2 * mm**3, 0, matmul(torch.float16)),
        ("matmul_8192_bf16", 2 * mm**3, 0, matmul(torch.bfloat16)),
        ("matmul_8192_f32", 2 * mm**3, 0, matmul(torch.float32)),
        ("conv2d_fwd_bwd_8x1x80x400_f32", 2 * conv1 + 3 * conv2, 0, conv),
        ("conv2d_fwd_only_8x64x80x400_to_128_f32", conv2, 0, conv_fwd),
        ("ctc_fwd_bwd_T500_B32_S100_C29", 0, 0, ctc(29)),
        ("ctc_fwd_bwd_T500_B32_S100_C5000", 0, 0, ctc(5000)),
        ("bilstm2_fwd_bwd_I256_H512_B32_T400_f32", 3 * per_step * 400 * 32, 0, bilstm),
        # the same cuDNN LSTM for both stapes rows (per-step kernels, persistent kernel)
        ("lstm1_fwd_I48_H48_B8_T400_f32_steps", 2 * 4 * 48 * 96 * 400 * 8, 0, small_lstm),
        ("lstm1_fwd_I48_H48_B8_T400_f32_persistent", 2 * 4 * 48 * 96 * 400 * 8, 0, small_lstm),
    ]


def main():
    filters = sys.argv[1:]
    # Plain FP32 matmul, as stapes by default (TF32 is opt-in on both sides).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
    for name, flops, nbytes, make in workloads():
        if filters and not any(f in name for f in filters):
            continue
        call = make()
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        per_call, reps, start = [], 0, time.perf_counter()
        while reps < 20 or time.perf_counter() - start < 1.0:
            t = time.perf_counter()
            for _ in range(5):
                call()
            torch.cuda.synchronize()
            per_call.append((time.perf_counter() - t) / 5)
            reps += 5
            if reps >= 2000:
                break
        per_call.sort()
        print(json.dumps({"name": name, "median_s": per_call[len(per_call) // 2], "min_s": per_call[0],
                          "reps": reps, "flops": flops, "bytes": nbytes, "status": "ok"}), flush=True)
        del call
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
