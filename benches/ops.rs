//! Criterion benches of the CPU ops that the PyTorch comparison covers
//! (`benches/torch/ops.py`, `benches/run_comparison.sh`, results in `benches/RESULTS.md`).
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench --bench ops` (the comparison is made on 2
//! threads; without the variable this bench sizes rayon's global pool to 2 itself).
//!
//! Every group sets a [`Throughput`], so criterion prints achieved rates next to the times:
//! * memory-bound ops use `Throughput::Bytes` = bytes read + bytes written by one call, so
//!   the printed `GiB/s` is the achieved bandwidth;
//! * matmuls use `Throughput::Elements` = floating point operations (2·M·N·K), so the printed
//!   `Gelem/s` reads as GFLOP/s.
//!
//! Inputs are made once, outside the timed closures; each timed call allocates its output,
//! as the PyTorch side (out-of-place ops) does too.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use stapes::autograd::Var;
use stapes::tensor::{DType, Device, Generator, Tensor};
use std::hint::black_box;
use std::time::Duration;

const F32: usize = std::mem::size_of::<f32>();

/// Sizes rayon's global pool to 2 threads unless `RAYON_NUM_THREADS` says otherwise.
fn init_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Fails only if the pool already exists (then its size stands).
        let _ = rayon::ThreadPoolBuilder::new().num_threads(2).build_global();
    }
}

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu).expect("randn")
}

/// A group with a small sample count: the whole bench should finish in a few minutes on 2 cores.
fn group<'a>(c: &'a mut Criterion, name: &str, samples: usize, secs: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(samples).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(secs));
    g
}

fn bench_matmul(c: &mut Criterion) {
    init_threads();
    for (n, samples, secs) in [(1024usize, 20, 5), (256, 50, 3)] {
        let (a, b) = (randn(1, &[n, n]), randn(2, &[n, n]));
        let mut g = group(c, &format!("matmul_{n}x{n}x{n}"), samples, secs);
        g.throughput(Throughput::Elements((2 * n * n * n) as u64)); // FLOPs
        g.bench_function("stapes", |bch| bch.iter(|| black_box(a.matmul(&b).unwrap())));
        g.finish();
    }
}

fn bench_softmax(c: &mut Criterion) {
    init_threads();
    let x = randn(3, &[4096, 4096]);
    let mut g = group(c, "softmax_4096x4096_lastdim", 20, 4);
    g.throughput(Throughput::Bytes((2 * x.elem_count() * F32) as u64));
    g.bench_function("stapes", |bch| bch.iter(|| black_box(x.softmax(-1i32).unwrap())));
    g.finish();
}

fn bench_broadcast_add(c: &mut Criterion) {
    init_threads();
    let (a, b) = (randn(4, &[4096, 4096]), randn(5, &[4096]));
    let mut g = group(c, "add_bcast_4096x4096+4096", 20, 4);
    g.throughput(Throughput::Bytes(((2 * a.elem_count() + b.elem_count()) * F32) as u64));
    g.bench_function("stapes", |bch| bch.iter(|| black_box(a.add(&b).unwrap())));
    g.finish();
}

fn bench_exp(c: &mut Criterion) {
    init_threads();
    let x = randn(6, &[16 << 20]);
    let mut g = group(c, "exp_16M", 20, 4);
    g.throughput(Throughput::Bytes((2 * x.elem_count() * F32) as u64));
    g.bench_function("stapes", |bch| bch.iter(|| black_box(x.exp().unwrap())));
    g.finish();
}

fn bench_gelu(c: &mut Criterion) {
    init_threads();
    let x = randn(14, &[16 << 20]);
    let mut g = group(c, "gelu_16M", 20, 4);
    g.throughput(Throughput::Bytes((2 * x.elem_count() * F32) as u64));
    g.bench_function("stapes", |bch| bch.iter(|| black_box(x.gelu().unwrap())));
    g.finish();
}

/// A Transformer feed-forward output layer on a 10 s utterance's frames (wav2vec2-base:
/// `[499, 3072] × Wᵀ`, `W` `[768, 3072]`): the tall product against a transposed weight that
/// takes the packed path.
fn bench_linear_tall(c: &mut Criterion) {
    use stapes::nn::layers::Linear;
    use stapes::nn::Forward;
    init_threads();
    let (m, k, n) = (499usize, 3072usize, 768usize);
    let lin = Linear::new(k, n, true).expect("layer");
    let xv = Var::constant(randn(15, &[m, k]));
    let mut g = group(c, "linear_499x3072x768", 20, 3);
    g.throughput(Throughput::Elements((2 * m * n * k) as u64)); // FLOPs
    g.bench_function("linear_forward", |bch| {
        bch.iter(|| black_box(stapes::autograd::no_grad(|| lin.forward(&xv)).unwrap()))
    });
    g.finish();
}

fn bench_sum_lastdim(c: &mut Criterion) {
    init_threads();
    let x = randn(7, &[4096, 4096]);
    let mut g = group(c, "sum_4096x4096_lastdim", 20, 3);
    g.throughput(Throughput::Bytes(((x.elem_count() + 4096) * F32) as u64));
    g.bench_function("stapes", |bch| bch.iter(|| black_box(x.sum([1usize], false).unwrap())));
    g.finish();
}

fn bench_layer_norm(c: &mut Criterion) {
    init_threads();
    let x = randn(8, &[4096, 1024]);
    let (w, b) = (randn(9, &[1024]), randn(10, &[1024]));
    let mut g = group(c, "layer_norm_4096x1024", 20, 3);
    g.throughput(Throughput::Bytes(((2 * x.elem_count() + 2 * 1024) * F32) as u64));
    g.bench_function("stapes", |bch| bch.iter(|| black_box(x.layer_norm(&[1024], Some(&w), Some(&b), 1e-5).unwrap())));
    g.finish();
}

/// One training step of a two-layer conv stack on a batch of spectrograms:
/// `[8, 1, 80, 400] -> conv 1->64 3x3 p1 (+bias) -> ReLU -> conv 64->128 3x3 p1 (+bias)`,
/// then backward from a fixed random upstream gradient, for both weights and both biases (the
/// input is a constant). Gradients are cleared before each step, like `zero_grad(set_to_none)`.
fn bench_conv2d_step(c: &mut Criterion) {
    init_threads();
    let x = Var::constant(randn(11, &[8, 1, 80, 400]));
    let w1 = Var::leaf(randn(12, &[64, 1, 3, 3]).mul_scalar(1.0 / 3.0).unwrap());
    let b1 = Var::leaf(randn(13, &[64]).mul_scalar(0.1).unwrap());
    let w2 = Var::leaf(randn(14, &[128, 64, 3, 3]).mul_scalar(1.0 / 24.0).unwrap());
    let b2 = Var::leaf(randn(15, &[128]).mul_scalar(0.1).unwrap());
    let gy = randn(16, &[8, 128, 80, 400]);
    let params = [&w1, &b1, &w2, &b2];
    // FLOPs of one step: forward 2·N·Cout·Cin·9·H·W per conv; backward weight grad of both
    // convs and input grad of the second (the input of the first needs none): 2x conv2 + 1x conv1.
    let hw: u64 = 80 * 400;
    let conv1 = 2 * 8 * 64 * 9 * hw;
    let conv2 = 2 * 8 * 128 * 64 * 9 * hw;
    // About a second per step: flat sampling (one step per sample) keeps this group near 15 s,
    // where criterion's default linear sampling would take 55 steps.
    let mut g = group(c, "conv2d_fwd_bwd_8x1x80x400", 10, 10);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(2 * conv1 + 3 * conv2)); // FLOPs
    g.bench_function("stapes", |bch| {
        bch.iter(|| {
            for p in params {
                p.zero_grad();
            }
            let h = x.conv2d(&w1, Some(&b1), [1, 1], [1, 1], [1, 1], 1).unwrap().relu().unwrap();
            let y = h.conv2d(&w2, Some(&b2), [1, 1], [1, 1], [1, 1], 1).unwrap();
            y.backward_with(&gy).unwrap();
            black_box(w1.grad().unwrap());
        })
    });
    g.finish();
}

/// The recurrent step's product `[8, 512] × [512, 2048]` (an LSTM of 512, batch 8): the `gemm`
/// crate on the plain `W_hhᵀ` (what the LSTM did before) against the packed small-M kernels
/// (`stapes_kernels::cpu::packed`), AVX-512 and AVX2 where the CPU has them; one thread, as
/// each direction of a bidirectional layer runs on its own thread; the packing itself timed
/// apart (once per forward pass).
fn bench_packed_step(c: &mut Criterion) {
    use stapes::kernels::cpu::packed::{best_isa, gemm_packed, isa_available, PackedIsa, PackedRhs};
    use stapes::kernels::cpu::rnn::{gemm_strided, Strided};
    init_threads();
    let (m, k, n) = (8usize, 512usize, 2048usize);
    let vals = |seed: u64, len: usize| -> Vec<f32> { randn(seed, &[len]).to_vec::<f32>().expect("values") };
    let (a, w) = (vals(11, m * k), vals(12, n * k)); // w: W_hh [n, k]
    let w_t = Strided::rows(0, k).t();
    let mut plain = vec![0f32; k * n];
    for (j, row) in w.chunks_exact(k).enumerate() {
        row.iter().enumerate().for_each(|(i, &v)| plain[i * n + j] = v);
    }
    let mut out = vec![0f32; m * n];
    let mut g = group(c, "lstm_step_8x512x2048", 50, 3);
    g.throughput(Throughput::Elements((2 * m * n * k) as u64)); // FLOPs
    g.bench_function("gemm_crate_unpacked", |bch| {
        bch.iter(|| {
            gemm_strided(
                m,
                n,
                k,
                &mut out,
                Strided::rows(0, n),
                true,
                &a,
                Strided::rows(0, k),
                &plain,
                Strided::rows(0, n),
                1,
            )
        })
    });
    for (name, isa) in [("packed_avx512", PackedIsa::Avx512), ("packed_avx2", PackedIsa::Avx2)] {
        if isa_available(isa) {
            let packed = PackedRhs::pack_for(isa, k, n, &w, w_t);
            g.bench_function(name, |bch| bch.iter(|| gemm_packed(m, &mut out, n, true, &a, k, &packed, 1)));
        }
    }
    g.finish();
    let mut g = group(c, "pack_w_hh_2048x512", 30, 2);
    g.throughput(Throughput::Bytes((2 * n * k * F32) as u64));
    // The LSTM recycles the panel buffer through the CPU cache: time the packing, not the
    // page faults of a fresh 4 MiB allocation.
    let mut buf = Some(Vec::new());
    g.bench_function("pack", |bch| {
        bch.iter(|| {
            let packed = PackedRhs::pack_into(buf.take().expect("buffer"), best_isa(), k, n, &w, w_t);
            buf = Some(black_box(packed).into_vec());
        })
    });
    g.finish();
}

/// A Linear layer at inference with few rows (a decoder step): `Linear`'s forward (the general
/// GEMM, which packs `Wᵀ` on every call) against the same layer packed once
/// (`Linear::packed`), on the 2 threads of the comparison.
fn bench_packed_linear(c: &mut Criterion) {
    use stapes::nn::layers::Linear;
    use stapes::nn::Forward;
    init_threads();
    let (m, k, n) = (8usize, 1024usize, 4096usize);
    let lin = Linear::new(k, n, true).expect("layer");
    let packed = lin.packed().expect("packed");
    let x = randn(13, &[m, k]);
    let xv = Var::constant(x.clone());
    let mut g = group(c, "linear_infer_8x1024x4096", 50, 3);
    g.throughput(Throughput::Elements((2 * m * n * k) as u64)); // FLOPs
    g.bench_function("linear_forward", |bch| {
        bch.iter(|| black_box(stapes::autograd::no_grad(|| lin.forward(&xv)).unwrap()))
    });
    g.bench_function("packed_linear", |bch| bch.iter(|| black_box(packed.forward(&x).unwrap())));
    g.finish();
}

criterion_group!(
    benches,
    bench_packed_step,
    bench_packed_linear,
    bench_linear_tall,
    bench_gelu,
    bench_matmul,
    bench_softmax,
    bench_broadcast_add,
    bench_exp,
    bench_sum_lastdim,
    bench_layer_norm,
    bench_conv2d_step
);
criterion_main!(benches);
