//! Self-tests of the CUDA emulator (`kernels/emu/`): each CUDA feature the shim emulates is
//! pinned down by a kernel of `kernels/emu/selftest/emu_selftest.cu` and an expected result
//! computed here from CUDA's rules; and the random schedule must catch the missing
//! `__syncthreads()` of `kernels/emu/selftest/broken_reduce.cu`.

use half::{bf16, f16};
use stapes_kernels::cuda::emu::EmuSchedule;
use stapes_kernels::cuda::{Backend, CudaError, DeviceBuffer, DeviceElem, KernelArg, LaunchConfig};

/// The schedules every semantic test runs under: sequential and two random seeds.
fn schedules() -> Vec<Backend> {
    vec![
        Backend::emulator_with(EmuSchedule::SEQUENTIAL),
        Backend::emulator_with(EmuSchedule::random(7)),
        Backend::emulator_with(EmuSchedule { threads: 3, ..EmuSchedule::random(0x5eed) }),
    ]
}

fn download<T: DeviceElem>(backend: &Backend, buf: &DeviceBuffer<T>) -> Vec<T> {
    backend.download(buf).unwrap()
}

#[test]
fn builtin_indices_in_a_3d_launch() {
    let (grid, block) = ((3u32, 2u32, 2u32), (4u32, 3u32, 2u32));
    let blocks = (grid.0 * grid.1 * grid.2) as usize;
    let threads = (block.0 * block.1 * block.2) as usize;
    for backend in schedules() {
        let mut out = backend.zeros::<u32>(blocks * threads * 8).unwrap();
        let cfg = LaunchConfig { grid, block, shared_mem_bytes: 0 };
        // SAFETY: the kernel writes 8 values per thread of the launch.
        unsafe { backend.launch("selftest_indices", cfg, &mut [KernelArg::output(&mut out)]) }.unwrap();
        let out = download(&backend, &out);
        for b in 0..blocks as u32 {
            let (bx, by, bz) = (b % grid.0, (b / grid.0) % grid.1, b / (grid.0 * grid.1));
            for t in 0..threads as u32 {
                let (tx, ty, tz) = (t % block.0, (t / block.0) % block.1, t / (block.0 * block.1));
                let at = (b as usize * threads + t as usize) * 8;
                assert_eq!(
                    &out[at..at + 8],
                    &[tx, ty, tz, bx, by, bz, threads as u32, blocks as u32],
                    "block {b} thread {t}, {}",
                    backend.describe()
                );
            }
        }
    }
}

/// What `selftest_warp_ops` must produce for thread `t` of a 64-thread block.
fn expected_warp_ops(t: usize) -> [i32; 12] {
    let lane = t % 32;
    let base = t - lane;
    let v = |s: usize| 10 * s as i32;
    let width_src = |l: usize, w: usize, src: usize| if src >= (l & !(w - 1)) + w { t } else { base + src };
    let ballot: u32 = (0..32).filter(|l| (base + l).is_multiple_of(3)).fold(0, |m, l| m | (1 << l));
    let d = if lane == 31 { 0.5 * t as f64 } else { 0.5 * (t + 1) as f64 };
    let bits = d.to_bits();
    [
        v(base + 3),
        v(base + ((lane & !15) | ((lane + 1) & 15))),
        if lane < 2 { v(t) } else { v(t - 2) },
        if (lane & 7) + 5 >= 8 { v(t) } else { v(t + 5) },
        v(t ^ 1),
        v(width_src(lane, 8, lane ^ 8)),
        ballot as i32,
        (base + 31 < 40) as i32,
        (base..base + 32).contains(&5) as i32,
        (1.5f32 * (base + 31) as f32).to_bits() as i32,
        (bits & 0xffff_ffff) as u32 as i32,
        (bits >> 32) as u32 as i32,
    ]
}

#[test]
fn warp_shuffles_votes_and_widths() {
    for backend in schedules() {
        let mut out = backend.zeros::<i32>(64 * 12).unwrap();
        // SAFETY: 12 ints per thread of one 64-thread block.
        unsafe { backend.launch("selftest_warp_ops", LaunchConfig::linear(1, 64), &mut [KernelArg::output(&mut out)]) }
            .unwrap();
        let out = download(&backend, &out);
        for t in 0..64 {
            assert_eq!(out[t * 12..t * 12 + 12], expected_warp_ops(t), "thread {t}, {}", backend.describe());
        }
    }
}

#[test]
fn partial_warp_reads_of_missing_lanes_are_poisoned() {
    for backend in schedules() {
        let mut out = backend.zeros::<i32>(48).unwrap();
        // SAFETY: one int per thread of one 48-thread block.
        unsafe {
            backend.launch("selftest_partial_warp", LaunchConfig::linear(1, 48), &mut [KernelArg::output(&mut out)])
        }
        .unwrap();
        let out = download(&backend, &out);
        let expected: Vec<i32> = (0..48)
            .map(|t| {
                if t < 16 {
                    t + 16
                } else if t < 32 {
                    t
                } else {
                    -1
                }
            })
            .collect();
        assert_eq!(out, expected, "{}", backend.describe());
    }
}

#[test]
fn returned_threads_count_as_arrived_at_barriers() {
    let (threads, active) = (100usize, 37u32);
    for backend in schedules() {
        let mut out = backend.upload(&vec![-5i32; threads]).unwrap();
        let mut args = [KernelArg::output(&mut out), KernelArg::u32(active)];
        // SAFETY: one int per thread of one block.
        unsafe { backend.launch("selftest_barrier_after_return", LaunchConfig::linear(1, threads as u32), &mut args) }
            .unwrap();
        let out = download(&backend, &out);
        let expected: Vec<i32> =
            (0..threads as u32).map(|t| if t < active { 1000 + ((t + 1) % active) as i32 } else { -5 }).collect();
        assert_eq!(out, expected, "{}", backend.describe());
    }
}

#[test]
fn dynamic_shared_memory_is_per_block_and_starts_poisoned() {
    let n = 64u32;
    for backend in schedules() {
        let mut out = backend.zeros::<u32>(2 * n as usize).unwrap();
        // Two blocks with 2n slots of shared memory each; both write the same (identical) values.
        let cfg = LaunchConfig { grid: (2, 1, 1), block: (n, 1, 1), shared_mem_bytes: 2 * n * 4 };
        // SAFETY: the kernel writes out[0, 2n).
        unsafe { backend.launch("selftest_dynamic_shared", cfg, &mut [KernelArg::output(&mut out)]) }.unwrap();
        let out = download(&backend, &out);
        for t in 0..n as usize {
            assert_eq!(out[t], 7 * (n - 1 - t as u32) + 1, "thread {t}, {}", backend.describe());
            assert_eq!(out[n as usize + t], u32::MAX, "unwritten shared memory must read as 0xff bytes");
        }
    }
}

#[test]
fn atomics_from_many_blocks_on_several_os_threads() {
    let (blocks, threads) = (40u32, 64u32);
    let total = (blocks * threads) as i32;
    for backend in schedules() {
        let mut counters = backend.zeros::<i32>(4).unwrap();
        let mut fsum = backend.zeros::<f32>(1).unwrap();
        let mut hsum = backend.zeros::<f16>(1).unwrap();
        let mut args = [KernelArg::output(&mut counters), KernelArg::output(&mut fsum), KernelArg::output(&mut hsum)];
        // SAFETY: the kernel touches counters[0..4), fsum[0], hsum[0].
        unsafe { backend.launch("selftest_atomics", LaunchConfig::linear(blocks, threads), &mut args) }.unwrap();
        assert_eq!(
            download(&backend, &counters),
            vec![total, total - 1, total, (total - 1) * 3],
            "{}",
            backend.describe()
        );
        assert_eq!(download(&backend, &fsum), vec![total as f32 * 0.5]);
        assert_eq!(download(&backend, &hsum), vec![f16::from_f32(1024.0)]);
    }
}

#[test]
fn half_conversions_round_like_the_half_crate() {
    // Edge cases (ties, subnormals, overflow, signed zero, NaN) and a sweep of bit patterns.
    let mut xs: Vec<f32> = [
        0x477f_efff, // just below 65520: rounds down to 65504
        0x477f_f000, // 65520: ties to even, inf
        0x3300_0000, // 2^-25: ties to even, 0
        0x3300_0001, // just above 2^-25: the smallest f16 subnormal
    ]
    .into_iter()
    .map(f32::from_bits)
    .collect();
    xs.extend([
        0.0,
        -0.0,
        1.0,
        -1.5,
        65504.0,
        1e9,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        5.960_464_5e-8,
        6.097555e-5,
        6.1035156e-5,
        1.0009766,
        1.0004883,
        1.0014648,
        3.0e-39,
        f32::MIN_POSITIVE,
        1.0 + 1.0 / 256.0, // bf16 ties to even: down
        1.0 + 3.0 / 256.0, // bf16 ties to even: up
    ]);
    let mut bits = 0x0000_1234u32;
    for _ in 0..20_000 {
        bits = bits.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
        xs.push(f32::from_bits(bits));
    }
    let n = xs.len();
    for backend in schedules().into_iter().take(1) {
        let x = backend.upload(&xs).unwrap();
        let mut h = backend.zeros::<f16>(n).unwrap();
        let mut b = backend.zeros::<bf16>(n).unwrap();
        let mut hb = backend.zeros::<f32>(n).unwrap();
        let mut bb = backend.zeros::<f32>(n).unwrap();
        let mut args = [
            KernelArg::input(&x),
            KernelArg::output(&mut h),
            KernelArg::output(&mut b),
            KernelArg::output(&mut hb),
            KernelArg::output(&mut bb),
            KernelArg::u64(n as u64),
        ];
        // SAFETY: grid-stride over [0, n) of every buffer.
        unsafe { backend.launch("selftest_half_conversions", LaunchConfig::linear(8, 256), &mut args) }.unwrap();
        let (h, b, hb, bb) =
            (download(&backend, &h), download(&backend, &b), download(&backend, &hb), download(&backend, &bb));
        for i in 0..n {
            let (eh, eb) = (f16::from_f32(xs[i]), bf16::from_f32(xs[i]));
            if xs[i].is_nan() {
                assert!(h[i].is_nan() && b[i].is_nan() && hb[i].is_nan() && bb[i].is_nan());
                continue;
            }
            assert_eq!(h[i].to_bits(), eh.to_bits(), "f16 of {:e} ({:#010x})", xs[i], xs[i].to_bits());
            assert_eq!(b[i].to_bits(), eb.to_bits(), "bf16 of {:e} ({:#010x})", xs[i], xs[i].to_bits());
            assert_eq!(hb[i].to_bits(), eh.to_f32().to_bits(), "f16 -> f32 of {:e}", xs[i]);
            assert_eq!(bb[i].to_bits(), eb.to_f32().to_bits(), "bf16 -> f32 of {:e}", xs[i]);
        }
    }
}

#[test]
fn deadlocks_are_reported_not_hung() {
    for backend in schedules() {
        let mut out = backend.zeros::<i32>(64).unwrap();
        // SAFETY: one int per thread.
        let err = unsafe {
            backend.launch("selftest_deadlock", LaunchConfig::linear(2, 64), &mut [KernelArg::output(&mut out)])
        }
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("deadlock") && msg.contains("selftest_deadlock"), "{msg}");
    }
}

#[test]
fn bad_launches_are_errors() {
    let backend = Backend::emulator_with(EmuSchedule::SEQUENTIAL);
    let mut out = backend.zeros::<i32>(64).unwrap();
    // SAFETY: every launch below is rejected before any kernel code runs.
    unsafe {
        let e = backend.launch("no_such_kernel", LaunchConfig::linear(1, 32), &mut []).unwrap_err();
        assert!(matches!(e, CudaError::UnknownKernel(_)), "{e}");
        let e = backend.launch("selftest_warp_ops", LaunchConfig::linear(1, 32), &mut []).unwrap_err();
        assert!(e.to_string().contains("number of kernel arguments"), "{e}");
        let e = backend
            .launch(
                "selftest_barrier_after_return",
                LaunchConfig::linear(1, 32),
                &mut [KernelArg::output(&mut out), KernelArg::u64(3)],
            )
            .unwrap_err();
        assert!(e.to_string().contains("wrong size"), "{e}");
        let e =
            backend.launch("selftest_partial_warp", LaunchConfig::linear(1, 2048), &mut [KernelArg::output(&mut out)]);
        assert!(e.unwrap_err().to_string().contains("1024 threads"));
        let e =
            backend.launch("selftest_partial_warp", LaunchConfig::linear(0, 32), &mut [KernelArg::output(&mut out)]);
        assert!(e.unwrap_err().to_string().contains("zero"));
    }
}

/// Rows of the self-test reduction: random values, so that every row's sum differs (a stale
/// shared-memory slot from the previous block is then a wrong answer too).
fn block_sum_case(rows: usize, n: usize) -> (Vec<f32>, Vec<f64>) {
    let mut state = 0x2545_f491u32;
    let x: Vec<f32> = (0..rows * n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.25
        })
        .collect();
    let sums = x.chunks(n).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
    (x, sums)
}

/// Runs a block-sum kernel and returns the rows whose sum is wrong.
fn wrong_rows(backend: &Backend, kernel: &str, x: &[f32], sums: &[f64], n: usize) -> Vec<usize> {
    let rows = sums.len();
    let xd = backend.upload(x).unwrap();
    let mut out = backend.zeros::<f32>(rows).unwrap();
    let mut args = [KernelArg::input(&xd), KernelArg::output(&mut out), KernelArg::u64(n as u64)];
    // SAFETY: one block per row reads x[row·n, (row+1)·n) and writes out[row].
    unsafe { backend.launch(kernel, LaunchConfig::linear(rows as u32, 256), &mut args) }.unwrap();
    let out = download(backend, &out);
    let wrong = |r: usize| {
        let diff = (out[r] as f64 - sums[r]).abs();
        diff.is_nan() || diff > 1e-4 * (1.0 + sums[r].abs()) // NaN: a poisoned read
    };
    (0..rows).filter(|&r| wrong(r)).collect()
}

#[test]
fn random_schedule_catches_the_missing_barrier() {
    let (rows, n) = (24, 1000);
    let (x, sums) = block_sum_case(rows, n);
    // The correct kernel is right under every schedule.
    for backend in schedules() {
        let wrong = wrong_rows(&backend, "selftest_block_sum_f32", &x, &sums, n);
        assert!(wrong.is_empty(), "the correct block sum failed on rows {wrong:?}, {}", backend.describe());
    }
    // Thread order hides the race: the broken kernel passes the sequential schedule...
    let sequential = Backend::emulator_with(EmuSchedule::SEQUENTIAL);
    let wrong = wrong_rows(&sequential, "broken_block_sum_f32", &x, &sums, n);
    assert!(wrong.is_empty(), "sequential schedule: expected the race to stay hidden, rows {wrong:?} wrong");
    // ...and every random seed exposes it.
    for seed in [1u64, 2, 3, 42, 0xdead_beef] {
        let backend = Backend::emulator_with(EmuSchedule::random(seed));
        let wrong = wrong_rows(&backend, "broken_block_sum_f32", &x, &sums, n);
        assert!(!wrong.is_empty(), "the missing __syncthreads() went unnoticed ({})", backend.describe());
    }
}
