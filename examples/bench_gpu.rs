//! The GPU workloads of the CUDA backend and speech-kernel issues, timed on `cuda:0`, for the
//! side-by-side table with PyTorch (`benches/torch/gpu_ops.py` times the same workloads;
//! `scripts/gpu-suite.sh` runs both on a GPU machine and writes the table).
//!
//! Timing: warm up (3 calls), then time batches of calls between device synchronisations until
//! at least 20 calls and 1 s, and report the median per-call time of the batches. One JSON line
//! per workload on stdout:
//! `{"name": ..., "median_s": ..., "min_s": ..., "reps": ..., "flops": ..., "bytes": ..., "status": "ok"}`
//! `bytes` is read + written per call (memory-bound ops; the achieved bandwidth is bytes /
//! median_s), `flops` the arithmetic of one call (matmul, conv). A workload whose op has no
//! CUDA kernel yet prints `"status": "error: ..."` instead of timings, so the table shows it.
//!
//! `cargo run --release --example bench_gpu [name-filter...]` (needs a GPU; on the CUDA
//! emulator, `STAPES_BENCH_EMULATE=1` runs tiny versions of the workloads as a smoke test).

use stapes::autograd::Var;
use stapes::tensor::{cuda, DType, Device, Generator, Tensor};
use std::time::Instant;

type Call = Box<dyn FnMut() -> stapes::tensor::Result<()>>;
/// Makes a workload's inputs on a device and returns its call.
type Make = Box<dyn FnOnce(&Device) -> stapes::tensor::Result<Call>>;

struct Workload {
    name: &'static str,
    flops: u64,
    bytes: u64,
    make: Make,
}

fn randn(seed: u64, shape: &[usize], dtype: DType, dev: &Device) -> stapes::tensor::Result<Tensor> {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape, dtype, dev)
}

/// The workloads, scaled by `s` (1 on a GPU; a tiny fraction for the emulator smoke test).
fn workloads(small: bool) -> Vec<Workload> {
    let big = if small { 1 << 12 } else { 64 << 20 }; // 64M elements
    let rows = if small { 16 } else { 65536 };
    let mm = if small { 64 } else { 8192 };
    let xfer = if small { 1 << 12 } else { 64 << 20 }; // f32 elements: 256 MiB
    let (cb, ch, cw) = if small { (1, 8, 16) } else { (8, 80, 400) };
    let mut v: Vec<Workload> = Vec::new();
    v.push(Workload {
        name: "d2d_copy_64M_f32",
        flops: 0,
        bytes: 2 * 4 * big as u64,
        make: Box::new(move |d| {
            let a = randn(1, &[big], DType::F32, d)?;
            Ok(Box::new(move || cuda::device_copy(&a).map(drop)))
        }),
    });
    for (name, dtype) in [("add_64M_f32", DType::F32), ("add_64M_bf16", DType::BF16)] {
        v.push(Workload {
            name,
            flops: 0,
            bytes: 3 * dtype.size_in_bytes() as u64 * big as u64,
            make: Box::new(move |d| {
                let a = randn(1, &[big], dtype, d)?;
                let b = randn(2, &[big], dtype, d)?;
                Ok(Box::new(move || a.add(&b).map(drop)))
            }),
        });
    }
    v.push(Workload {
        name: "softmax_65536x1024_f32",
        flops: 0,
        bytes: 2 * 4 * (rows * 1024) as u64,
        make: Box::new(move |d| {
            let x = randn(3, &[rows, 1024], DType::F32, d)?;
            Ok(Box::new(move || x.softmax(1).map(drop)))
        }),
    });
    v.push(Workload {
        name: "layer_norm_65536x1024_f32",
        flops: 0,
        bytes: 2 * 4 * (rows * 1024) as u64,
        make: Box::new(move |d| {
            let x = randn(4, &[rows, 1024], DType::F32, d)?;
            let w = randn(5, &[1024], DType::F32, d)?;
            let b = randn(6, &[1024], DType::F32, d)?;
            Ok(Box::new(move || x.layer_norm(&[1024], Some(&w), Some(&b), 1e-5).map(drop)))
        }),
    });
    // Issue: strided copy / contiguous / transpose. The dense copy of a transposed view takes the
    // tiled shared-memory kernel (read + write of every element).
    v.push(Workload {
        name: "transpose_8192x8192_f32",
        flops: 0,
        bytes: 2 * 4 * (mm * mm) as u64,
        make: Box::new(move |d| {
            let x = randn(9, &[mm, mm], DType::F32, d)?;
            Ok(Box::new(move || x.t()?.contiguous().map(drop)))
        }),
    });
    // Issue: host<->device copies (pinned memory for large transfers): 256 MiB of f32 from a
    // pageable host tensor to the device and back; `bytes` is what crosses the link, so the
    // rate is the transfer's GB/s. (PyTorch's script also times the same from pinned memory.)
    v.push(Workload {
        name: "h2d_256M_f32",
        flops: 0,
        bytes: 4 * xfer as u64,
        make: Box::new(move |d| {
            let x = randn(10, &[xfer], DType::F32, &Device::Cpu)?;
            let d = *d;
            Ok(Box::new(move || x.to_device(&d).map(drop)))
        }),
    });
    v.push(Workload {
        name: "d2h_256M_f32",
        flops: 0,
        bytes: 4 * xfer as u64,
        make: Box::new(move |d| {
            let g = randn(10, &[xfer], DType::F32, d)?;
            Ok(Box::new(move || g.to_device(&Device::Cpu).map(drop)))
        }),
    });
    for (name, dtype) in
        [("matmul_8192_f16", DType::F16), ("matmul_8192_bf16", DType::BF16), ("matmul_8192_f32", DType::F32)]
    {
        v.push(Workload {
            name,
            flops: 2 * (mm as u64).pow(3),
            bytes: 0,
            make: Box::new(move |d| {
                let a = randn(7, &[mm, mm], dtype, d)?;
                let b = randn(8, &[mm, mm], dtype, d)?;
                Ok(Box::new(move || a.matmul(&b).map(drop)))
            }),
        });
    }
    // The foundation issue's conv2d step: [8,1,80,400] -> conv 1->64 3x3 -> ReLU -> conv 64->128
    // 3x3, forward and backward (weight grads of both, input grad of the second).
    let hw = (ch * cw) as u64;
    let (conv1, conv2) = (2 * cb as u64 * 64 * 9 * hw, 2 * cb as u64 * 128 * 64 * 9 * hw);
    v.push(Workload {
        name: "conv2d_fwd_bwd_8x1x80x400_f32",
        flops: 2 * conv1 + 3 * conv2,
        bytes: 0,
        make: Box::new(move |d| {
            let x = Var::constant(randn(11, &[cb, 1, ch, cw], DType::F32, d)?);
            let w1 = Var::leaf(randn(12, &[64, 1, 3, 3], DType::F32, d)?.mul_scalar(1.0 / 3.0)?);
            let b1 = Var::leaf(randn(13, &[64], DType::F32, d)?.mul_scalar(0.1)?);
            let w2 = Var::leaf(randn(14, &[128, 64, 3, 3], DType::F32, d)?.mul_scalar(1.0 / 24.0)?);
            let b2 = Var::leaf(randn(15, &[128], DType::F32, d)?.mul_scalar(0.1)?);
            let gy = randn(16, &[cb, 128, ch, cw], DType::F32, d)?;
            Ok(Box::new(move || {
                for p in [&w1, &b1, &w2, &b2] {
                    p.zero_grad();
                }
                let h = x.conv2d(&w1, Some(&b1), [1, 1], [1, 1], [1, 1], 1)?.relu()?;
                let y = h.conv2d(&w2, Some(&b2), [1, 1], [1, 1], [1, 1], 1)?;
                y.backward_with(&gy)?;
                Ok(())
            }))
        }),
    });
    // The second convolution alone, forward only (no graph): how much of the step the forward
    // GEMMs and im2col take.
    v.push(Workload {
        name: "conv2d_fwd_only_8x64x80x400_to_128_f32",
        flops: conv2,
        bytes: 0,
        make: Box::new(move |d| {
            let h = randn(17, &[cb, 64, ch, cw], DType::F32, d)?;
            let w2 = randn(14, &[128, 64, 3, 3], DType::F32, d)?.mul_scalar(1.0 / 24.0)?;
            let b2 = randn(15, &[128], DType::F32, d)?.mul_scalar(0.1)?;
            Ok(Box::new(move || h.conv2d(&w2, Some(&b2), [1, 1], [1, 1], [1, 1], 1).map(drop)))
        }),
    });
    // Issue 7: CTC forward+backward at T=500, B=32, S=100 for C=29 and C=5000 (log-probs input,
    // mean reduction), and the bidirectional 2-layer LSTM (input 256, hidden 512, batch 32,
    // T=400) forward+backward.
    let (ct, cb, cs) = if small { (20, 2, 4) } else { (500, 32, 100) };
    for (name, classes) in [("ctc_fwd_bwd_T500_B32_S100_C29", 29usize), ("ctc_fwd_bwd_T500_B32_S100_C5000", 5000)] {
        let classes = if small { classes.min(40) } else { classes };
        v.push(Workload {
            name,
            flops: 0,
            bytes: 0,
            make: Box::new(move |d| {
                use stapes::nn::ctc::{ctc_loss, CtcLossOptions};
                let x = Var::leaf(randn(21, &[ct, cb, classes], DType::F32, d)?.log_softmax(2)?);
                let labels: Vec<i64> = (0..cb * cs).map(|i| 1 + (i * 7 % (classes - 1)) as i64).collect();
                let targets = Tensor::from_vec(labels, [cb, cs], &Device::Cpu)?;
                let (il, tl) = (vec![ct; cb], vec![cs; cb]);
                let opts = CtcLossOptions::default();
                Ok(Box::new(move || {
                    x.zero_grad();
                    ctc_loss(&x, &targets, &il, &tl, &opts)?.backward()?;
                    Ok(())
                }))
            }),
        });
    }
    let (lt, lb, li, lh) = if small { (6, 2, 8, 8) } else { (400, 32, 256, 512) };
    // 2 layers x 2 directions x (4H x (I + H)) MACs per step and sample, x3 for the backward
    let lstm_flops = |i: usize| 2 * 4 * lh * (i + lh);
    let per_step = 2 * (lstm_flops(li) + lstm_flops(2 * lh)) as u64;
    v.push(Workload {
        name: "bilstm2_fwd_bwd_I256_H512_B32_T400_f32",
        flops: 3 * per_step * (lt * lb) as u64,
        bytes: 0,
        make: Box::new(move |d| {
            use stapes::nn::rnn::{Lstm, RnnConfig};
            use stapes::nn::Module;
            let cfg = RnnConfig { num_layers: 2, bidirectional: true, ..RnnConfig::new(li, lh) };
            let lstm = Lstm::new(cfg)?;
            lstm.to_device(d)?;
            let x = Var::leaf(randn(31, &[lt, lb, li], DType::F32, d)?);
            let gy = randn(32, &[lt, lb, 2 * lh], DType::F32, d)?;
            Ok(Box::new(move || {
                for p in lstm.parameters() {
                    p.set_grad(None);
                }
                x.zero_grad();
                lstm.forward_with(&x, None, None)?.output.backward_with(&gy)?;
                Ok(())
            }))
        }),
    });
    // A small LSTM layer's forward (inference: no graph), per-step kernels against the opt-in
    // persistent kernel (`cuda::set_persistent_lstm`): one launch per layer instead of two per
    // step, for the sizes where a step's GEMM cannot fill the GPU. PyTorch runs the same layer
    // with cuDNN's default algorithm for both rows.
    let (st, sb, sh) = if small { (6, 2, 8) } else { (400, 8, 48) };
    for (name, persistent) in
        [("lstm1_fwd_I48_H48_B8_T400_f32_steps", false), ("lstm1_fwd_I48_H48_B8_T400_f32_persistent", true)]
    {
        v.push(Workload {
            name,
            flops: (2 * 4 * sh * (sh + sh) * st * sb) as u64,
            bytes: 0,
            make: Box::new(move |d| {
                use stapes::nn::rnn::{Lstm, RnnConfig};
                use stapes::nn::Module;
                let lstm = Lstm::new(RnnConfig::new(sh, sh))?;
                lstm.to_device(d)?;
                let x = Var::constant(randn(41, &[st, sb, sh], DType::F32, d)?);
                Ok(Box::new(move || {
                    cuda::set_persistent_lstm(persistent);
                    let out = stapes::autograd::no_grad(|| lstm.forward_with(&x, None, None).map(drop));
                    cuda::set_persistent_lstm(false);
                    out
                }))
            }),
        });
    }
    v
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")
}

fn main() {
    let small = std::env::var("STAPES_BENCH_EMULATE").is_ok_and(|v| v.trim() == "1");
    if small {
        cuda::use_emulator().expect("the emulator is built into this binary only with the emu feature");
    }
    let dev = Device::Cuda(0);
    if !cuda::is_available(0) {
        eprintln!("bench_gpu: no CUDA device: {}", cuda::describe(0));
        std::process::exit(2);
    }
    eprintln!("bench_gpu on {}; {}", cuda::describe(0), cuda::describe_transfers(0));
    let filters: Vec<String> = std::env::args().skip(1).collect();
    for w in workloads(small) {
        if !filters.is_empty() && !filters.iter().any(|f| w.name.contains(f.as_str())) {
            continue;
        }
        let result = (|| -> stapes::tensor::Result<(f64, f64, usize)> {
            let mut call = (w.make)(&dev)?;
            for _ in 0..3 {
                call()?;
            }
            cuda::synchronize(&dev)?;
            let (mut per_call, mut reps, start) = (Vec::new(), 0usize, Instant::now());
            while reps < 20 || start.elapsed().as_secs_f64() < 1.0 {
                let batch = 5;
                let t = Instant::now();
                for _ in 0..batch {
                    call()?;
                }
                cuda::synchronize(&dev)?;
                per_call.push(t.elapsed().as_secs_f64() / batch as f64);
                reps += batch;
                if reps >= 2000 {
                    break;
                }
            }
            per_call.sort_by(|a, b| a.total_cmp(b));
            Ok((per_call[per_call.len() / 2], per_call[0], reps))
        })();
        match result {
            Ok((median, min, reps)) => println!(
                "{{\"name\": \"{}\", \"median_s\": {median:.9}, \"min_s\": {min:.9}, \"reps\": {reps}, \"flops\": {}, \"bytes\": {}, \"status\": \"ok\"}}",
                w.name, w.flops, w.bytes
            ),
            Err(e) => println!(
                "{{\"name\": \"{}\", \"flops\": {}, \"bytes\": {}, \"status\": \"error: {}\"}}",
                w.name,
                w.flops,
                w.bytes,
                json_escape(&e.to_string())
            ),
        }
        let stats = cuda::memory_stats(&dev).map(|s| s.to_string()).unwrap_or_default();
        eprintln!("  after {}: {stats}", w.name);
        let _ = cuda::empty_cache(&dev);
    }
}
