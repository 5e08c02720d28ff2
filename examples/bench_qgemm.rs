//! int8 GEMM throughput (issue 19): `stapes_kernels::cpu::qgemm::qgemm_u8i8` (u8 activations ×
//! i8 weights packed once, i32 accumulation) on each kernel this CPU runs, against the f32
//! packed GEMM (`gemm_packed`) of the same shape. One JSON line per shape and kernel with the
//! median time and GOPS (2 · m · n · k operations per product).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_qgemm -- [reps]`

use stapes::kernels::cpu::packed::{gemm_packed, PackedRhs};
use stapes::kernels::cpu::qgemm::{qgemm_u8i8, qisa_available, PackedI8, QIsa};
use stapes::kernels::cpu::rnn::Strided;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of `reps` timed calls of `f`, after 3 untimed ones.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut times = vec![];
    for i in 0..reps + 3 {
        let t0 = std::time::Instant::now();
        f();
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    median(times)
}

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let threads = rayon::current_num_threads();
    let mut seed = 1u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    // (m, n, k): an LM/decoder step, an LSTM step's recurrent product, a batch of frames
    for &(m, n, k) in
        &[(8usize, 4096usize, 1024usize), (8, 2048, 512), (1608, 2048, 2560), (64, 2048, 512), (64, 512, 2048)]
    {
        let a: Vec<u8> = (0..m * k).map(|_| (next() % 128) as u8).collect();
        let b: Vec<i8> = (0..n * k).map(|_| (next() % 256) as u8 as i8).collect();
        let packed = PackedI8::pack(&b, n, k);
        let mut c = vec![0i32; m * n];
        let ops = 2.0 * (m * n * k) as f64;
        for (name, isa) in [("vnni512", QIsa::Vnni512), ("avx2", QIsa::Avx2), ("portable", QIsa::Portable)] {
            if !qisa_available(isa) || (isa == QIsa::Portable && m * n * k > 1 << 26) {
                continue;
            }
            let t = time(reps, || qgemm_u8i8(m, &a, k, &packed, &mut c, n, threads, Some(isa)));
            println!(
                "{{\"bench\":\"qgemm\",\"kernel\":\"{name}\",\"m\":{m},\"n\":{n},\"k\":{k},\"threads\":{threads},\"ms\":{:.4},\"gops\":{:.1}}}",
                t * 1e3,
                ops / t / 1e9
            );
        }
        // the f32 packed GEMM of the same shape (x Wᵀ with W [n, k])
        let af: Vec<f32> = a.iter().map(|&v| f32::from(v)).collect();
        let bf: Vec<f32> = b.iter().map(|&v| f32::from(v)).collect();
        let pf = PackedRhs::pack(k, n, &bf, Strided::rows(0, k).t());
        let mut cf = vec![0f32; m * n];
        let t = time(reps, || gemm_packed(m, &mut cf, n, false, &af, k, &pf, threads));
        println!(
            "{{\"bench\":\"qgemm\",\"kernel\":\"f32_packed\",\"m\":{m},\"n\":{n},\"k\":{k},\"threads\":{threads},\"ms\":{:.4},\"gflops\":{:.1}}}",
            t * 1e3,
            ops / t / 1e9
        );
    }
}
