//! The CUDA emulator: `kernels/cuda/*.cu` compiled as C++ by `build.rs` against
//! `kernels/emu/include/cuda_emu.h` and run on the CPU by `kernels/emu/runtime.cpp` (every
//! CUDA thread a fiber, `__syncthreads()` a block barrier, warp collectives a barrier over the
//! warp's lanes; see those files for the exact semantics).
//!
//! Built with the `emu` feature, which this crate's own tests switch on. Without it
//! [`is_built`] is false and launches fail with [`CudaError::EmulatorNotBuilt`].
//!
//! # Schedules
//! Between sync points the fibers of a block run one at a time, in thread order
//! (sequential schedule), or in a shuffled order: set `STAPES_EMU_RANDOM_SCHEDULE=1` (and
//! optionally `STAPES_EMU_SEED=<u64>`; otherwise the seed comes from the clock, once per
//! process). A missing `__syncthreads()` or a shared-memory race then changes the result. The
//! seed is part of [`EmuSchedule::describe`], which the parity helpers print on a mismatch, so
//! a failure can be replayed. `STAPES_EMU_THREADS` sets how many OS threads run blocks
//! (default: up to 4).

use super::launch::{KernelArg, LaunchConfig};
use super::CudaError;
use std::sync::OnceLock;

/// How the emulator orders CUDA threads between sync points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuSchedule {
    /// Shuffle the order of threads (and of blocks) with `seed`.
    pub random: bool,
    /// The shuffle's seed (ignored when not `random`).
    pub seed: u64,
    /// OS threads running blocks; 0 picks the default (`STAPES_EMU_THREADS`, else up to 4).
    pub threads: u32,
}

impl EmuSchedule {
    /// Threads in thread order: deterministic, the order most hand-written CUDA assumes.
    pub const SEQUENTIAL: EmuSchedule = EmuSchedule { random: false, seed: 0, threads: 0 };

    /// A shuffled order with a given seed.
    pub fn random(seed: u64) -> Self {
        EmuSchedule { random: true, seed, threads: 0 }
    }

    /// From `STAPES_EMU_RANDOM_SCHEDULE` (`1`/`true`) and `STAPES_EMU_SEED`; the seed drawn from
    /// the clock is drawn once, so every launch of a test process uses the same one.
    pub fn from_env() -> Self {
        static SCHEDULE: OnceLock<EmuSchedule> = OnceLock::new();
        *SCHEDULE.get_or_init(|| {
            let random = std::env::var("STAPES_EMU_RANDOM_SCHEDULE")
                .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
                .unwrap_or(false);
            if !random {
                return EmuSchedule::SEQUENTIAL;
            }
            let seed = match std::env::var("STAPES_EMU_SEED") {
                Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("STAPES_EMU_SEED={s:?} is not a u64")),
                Err(_) => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
            };
            EmuSchedule::random(seed)
        })
    }

    /// `sequential schedule`, or the environment that replays this random schedule.
    pub fn describe(&self) -> String {
        if self.random {
            format!("random schedule: STAPES_EMU_RANDOM_SCHEDULE=1 STAPES_EMU_SEED={}", self.seed)
        } else {
            "sequential schedule".to_string()
        }
    }
}

/// Whether the emulator is compiled into this binary (the `emu` feature).
pub fn is_built() -> bool {
    cfg!(feature = "emu")
}

/// Names of every kernel the emulator can run: stapes' own (none when not built), then those
/// registered by other crates.
pub fn kernel_names() -> Vec<&'static str> {
    #[cfg(feature = "emu")]
    let own = ffi::EMU_KERNELS.iter().map(|k| k.name);
    #[cfg(not(feature = "emu"))]
    let own = std::iter::empty();
    let reg = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    own.chain(reg.iter().map(|k| k.name)).collect()
}

#[cfg(not(feature = "emu"))]
pub(crate) fn launch(
    _kernel: &str,
    _cfg: LaunchConfig,
    _schedule: &EmuSchedule,
    _args: &mut [KernelArg<'_>],
) -> Result<(), CudaError> {
    Err(CudaError::EmulatorNotBuilt)
}

/// Runs `kernel` on the emulator; returns when every block has finished.
#[cfg(feature = "emu")]
pub(crate) fn launch(
    kernel: &str,
    cfg: LaunchConfig,
    schedule: &EmuSchedule,
    args: &mut [KernelArg<'_>],
) -> Result<(), CudaError> {
    use super::launch::ArgKind;
    use std::ffi::c_void;
    let entry = find(kernel).ok_or_else(|| CudaError::UnknownKernel(kernel.to_string()))?;
    // Each argument's value lives in an 8-byte slot (a pointer or a scalar), and args[i] points
    // at slot i: cudaLaunchKernel's `void** args` convention.
    let mut slots = vec![0u64; args.len()];
    let mut sizes = vec![0usize; args.len()];
    for (i, a) in args.iter_mut().enumerate() {
        let (size, bytes) = match &mut a.0 {
            ArgKind::Input(b) => (8, (b.host_ptr().expect("checked by Backend::launch") as u64).to_ne_bytes()),
            ArgKind::Output(b) => (8, (b.host_ptr_mut().expect("checked by Backend::launch") as u64).to_ne_bytes()),
            ArgKind::Scalar(s) => s.bytes(),
        };
        slots[i] = u64::from_ne_bytes(bytes);
        sizes[i] = size;
    }
    let arg_ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
    let config = EmuLaunchConfig {
        grid: [cfg.grid.0, cfg.grid.1, cfg.grid.2],
        block: [cfg.block.0, cfg.block.1, cfg.block.2],
        shared_mem_bytes: cfg.shared_mem_bytes,
        random_schedule: schedule.random as u32,
        seed: schedule.seed,
        threads: schedule.threads,
    };
    // SAFETY: the launcher reads `args.len()` argument slots and sizes; the buffers behind the
    // pointers outlive the call (it returns after the last block); the caller of
    // `Backend::launch` guarantees that the kernel stays inside them.
    let rc = unsafe { (entry.launch)(&config, arg_ptrs.as_ptr(), sizes.as_ptr(), args.len()) };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: a NUL-terminated string owned by this thread's emulator state.
        let msg = unsafe { std::ffi::CStr::from_ptr(ffi::stapes_emu_last_error()) };
        Err(CudaError::Emulator(msg.to_string_lossy().into_owned()))
    }
}

/// `struct stapes_emu_launch` of `cuda_emu.h`: the launch shape and schedule handed to a
/// kernel's launcher.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EmuLaunchConfig {
    /// Blocks per grid, x/y/z.
    pub grid: [u32; 3],
    /// Threads per block, x/y/z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, bytes.
    pub shared_mem_bytes: u32,
    /// 1 for a shuffled thread order.
    pub random_schedule: u32,
    /// The shuffle's seed.
    pub seed: u64,
    /// OS threads running blocks (0: the default).
    pub threads: u32,
}

/// The C launcher `stapes_emu_launch_<kernel>` generated for every emulated kernel.
pub type EmuLaunchFn = unsafe extern "C" fn(
    cfg: *const EmuLaunchConfig,
    args: *const *mut std::ffi::c_void,
    arg_sizes: *const usize,
    n_args: usize,
) -> std::ffi::c_int;

/// A kernel compiled into an emulator library (by `stapes-cuda-build`).
#[derive(Clone, Copy, Debug)]
pub struct EmuKernel {
    /// The kernel's name.
    pub name: &'static str,
    /// The `.cu` file it comes from.
    pub file: &'static str,
    /// Its launcher.
    pub launch: EmuLaunchFn,
}

/// Kernels of other crates registered by [`super::register_kernels`].
static REGISTERED: std::sync::RwLock<Vec<&'static EmuKernel>> = std::sync::RwLock::new(Vec::new());

/// Adds emulated kernels of another crate (see [`super::register_kernels`], which checks the
/// names first).
pub(crate) fn register(kernels: &'static [EmuKernel]) {
    let mut reg = REGISTERED.write().unwrap_or_else(|p| p.into_inner());
    for k in kernels {
        if !reg.iter().any(|r| r.name == k.name) {
            reg.push(k);
        }
    }
}

/// The emulated kernel named `kernel`: stapes' own, then registered ones.
#[cfg_attr(not(feature = "emu"), allow(dead_code))]
fn find(kernel: &str) -> Option<EmuKernel> {
    #[cfg(feature = "emu")]
    if let Some(k) = ffi::EMU_KERNELS.iter().find(|k| k.name == kernel) {
        return Some(*k);
    }
    REGISTERED.read().unwrap_or_else(|p| p.into_inner()).iter().find(|k| k.name == kernel).map(|k| **k)
}

#[cfg(feature = "emu")]
mod ffi {
    use super::{EmuKernel, EmuLaunchConfig};
    use std::ffi::c_char;

    extern "C" {
        pub(super) fn stapes_emu_last_error() -> *const c_char;
    }

    include!(concat!(env!("OUT_DIR"), "/emu_kernels.rs"));
}
