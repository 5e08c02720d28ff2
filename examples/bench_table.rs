//! The workloads of `benches/ops.rs` timed plainly, for the side-by-side table with PyTorch
//! (`benches/run_comparison.sh` runs this and `benches/torch/ops.py` and writes
//! `benches/RESULTS.md`). Criterion (`cargo bench --bench ops`) stays the canonical bench.
//!
//! Timing, the same as in `ops.py`: warm up (at least 2 calls and 0.3 s), then time single
//! calls until at least 10 calls and 2 s (at most 200 calls), and report the median. One
//! JSON line per workload on stdout:
//! `{"name": ..., "median_s": ..., "min_s": ..., "reps": ..., "flops": ..., "bytes": ...}`
//! where `flops` (matmul, conv) or `bytes` (read + written, memory-bound ops) is the work of
//! one call, 0 when not meaningful.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_table [name-filter...]`
//! (without the variable, rayon's pool is sized to 2 threads here).

use stapes::autograd::Var;
use stapes::tensor::{DType, Device, Generator, Tensor};
use std::hint::black_box;
use std::time::{Duration, Instant};

const F32: usize = std::mem::size_of::<f32>();

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu).expect("randn")
}

/// The call to time, with its inputs already made.
type Call = Box<dyn FnMut()>;

/// One workload: its name, its work per call, and how to make its inputs and call (run only
/// for the workloads selected, so a filtered run does not pay for the others' inputs).
struct Workload {
    name: &'static str,
    flops: u64,
    bytes: u64,
    make: Box<dyn FnOnce() -> Call>,
}

/// Warmup, then the median (and min) over single timed calls.
fn time(run: &mut dyn FnMut()) -> (f64, f64, usize) {
    let start = Instant::now();
    let mut calls = 0;
    while calls < 2 || start.elapsed() < Duration::from_millis(300) {
        run();
        calls += 1;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 10 || (start.elapsed() < Duration::from_secs(2) && samples.len() < 200) {
        let t = Instant::now();
        run();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 { samples[n / 2] } else { 0.5 * (samples[n / 2 - 1] + samples[n / 2]) };
    (median, samples[0], n)
}

/// Boxes a maker of a call (keeps the workload list below compact).
fn lazy(make: impl FnOnce() -> Call + 'static) -> Box<dyn FnOnce() -> Call> {
    Box::new(make)
}

fn workloads() -> Vec<Workload> {
    let mut v = Vec::new();
    let mut add = |name: &'static str, flops: usize, bytes: usize, make: Box<dyn FnOnce() -> Call>| {
        v.push(Workload { name, flops: flops as u64, bytes: bytes as u64, make })
    };
    for (name, n) in [("matmul_1024", 1024usize), ("matmul_256", 256)] {
        add(
            name,
            2 * n * n * n,
            0,
            lazy(move || {
                let (a, b) = (randn(1, &[n, n]), randn(2, &[n, n]));
                Box::new(move || {
                    black_box(a.matmul(&b).unwrap());
                })
            }),
        );
    }
    let n = 4096 * 4096;
    add(
        "softmax_4096x4096",
        0,
        2 * n * F32,
        lazy(|| {
            let x = randn(3, &[4096, 4096]);
            Box::new(move || {
                black_box(x.softmax(-1i32).unwrap());
            })
        }),
    );
    add(
        "add_bcast_4096x4096",
        0,
        (2 * n + 4096) * F32,
        lazy(|| {
            let (a, b) = (randn(4, &[4096, 4096]), randn(5, &[4096]));
            Box::new(move || {
                black_box(a.add(&b).unwrap());
            })
        }),
    );
    add(
        "exp_16M",
        0,
        2 * (16 << 20) * F32,
        lazy(|| {
            let x = randn(6, &[16 << 20]);
            Box::new(move || {
                black_box(x.exp().unwrap());
            })
        }),
    );
    add(
        "sum_lastdim_4096x4096",
        0,
        (n + 4096) * F32,
        lazy(|| {
            let x = randn(7, &[4096, 4096]);
            Box::new(move || {
                black_box(x.sum([1usize], false).unwrap());
            })
        }),
    );
    add(
        "layer_norm_4096x1024",
        0,
        (2 * 4096 * 1024 + 2 * 1024) * F32,
        lazy(|| {
            let (x, w, b) = (randn(8, &[4096, 1024]), randn(9, &[1024]), randn(10, &[1024]));
            Box::new(move || {
                black_box(x.layer_norm(&[1024], Some(&w), Some(&b), 1e-5).unwrap());
            })
        }),
    );
    // Conv stack training step, as in benches/ops.rs: forward, backward from a fixed random
    // upstream gradient, gradients of both weights and both biases (input is a constant).
    // FLOPs: forward of both convs, weight grads of both, input grad of the second only.
    let hw = 80 * 400;
    let (conv1, conv2) = (2 * 8 * 64 * 9 * hw, 2 * 8 * 128 * 64 * 9 * hw);
    add(
        "conv2d_fwd_bwd",
        2 * conv1 + 3 * conv2,
        0,
        lazy(|| {
            let x = Var::constant(randn(11, &[8, 1, 80, 400]));
            let w1 = Var::leaf(randn(12, &[64, 1, 3, 3]).mul_scalar(1.0 / 3.0).unwrap());
            let b1 = Var::leaf(randn(13, &[64]).mul_scalar(0.1).unwrap());
            let w2 = Var::leaf(randn(14, &[128, 64, 3, 3]).mul_scalar(1.0 / 24.0).unwrap());
            let b2 = Var::leaf(randn(15, &[128]).mul_scalar(0.1).unwrap());
            let gy = randn(16, &[8, 128, 80, 400]);
            Box::new(move || {
                for p in [&w1, &b1, &w2, &b2] {
                    p.zero_grad();
                }
                let h = x.conv2d(&w1, Some(&b1), [1, 1], [1, 1], [1, 1], 1).unwrap().relu().unwrap();
                let y = h.conv2d(&w2, Some(&b2), [1, 1], [1, 1], [1, 1], 1).unwrap();
                y.backward_with(&gy).unwrap();
                assert!(w1.grad().is_some() && b1.grad().is_some() && w2.grad().is_some() && b2.grad().is_some());
            })
        }),
    );
    v
}

fn main() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        rayon::ThreadPoolBuilder::new().num_threads(2).build_global().expect("rayon pool");
    }
    let filters: Vec<String> = std::env::args().skip(1).collect();
    eprintln!("stapes bench_table: {} rayon threads", rayon::current_num_threads());
    for w in workloads() {
        if !filters.is_empty() && !filters.iter().any(|f| w.name.contains(f.as_str())) {
            continue;
        }
        let mut call = (w.make)();
        let (median, min, reps) = time(&mut call);
        drop(call);
        println!(
            "{{\"name\": \"{}\", \"median_s\": {:.9}, \"min_s\": {:.9}, \"reps\": {}, \"flops\": {}, \"bytes\": {}}}",
            w.name, median, min, reps, w.flops, w.bytes
        );
    }
}
