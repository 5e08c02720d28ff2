//! A caching allocator for large CPU buffers.
//!
//! Freshly `mmap`ed memory costs a page fault per 4 KiB page on first touch, which for a
//! 64 MiB tensor is more than the arithmetic of a cheap op. Training loops allocate the same
//! sizes every step, so, like PyTorch's CUDA caching allocator (and unlike its CPU allocator),
//! storage of at least [`MIN_BYTES`] is returned to a per-dtype pool on drop and reused by the
//! next allocation of exactly the same length. The pool holds at most `STAPES_CPU_CACHE_BYTES`
//! (default 1 GiB); `STAPES_CPU_CACHE=0` turns it off.
//!
//! On Linux, fresh buffers of at least [`HUGE_PAGE_BYTES`] are marked `MADV_HUGEPAGE` before
//! their first touch, so the kernel backs them with transparent huge pages where it has them
//! (the default THP mode, `madvise`, gives them only to regions that ask, as jemalloc and
//! PyTorch's `THP_MEM_ALLOC_ENABLE=1` do). Streaming kernels read such buffers with one TLB
//! entry per 2 MiB instead of 512; on the 2-core AMD EPYC VM a row sum over 64 MiB ran at 43-48
//! GB/s from huge pages against 29-38 GB/s from 4 KiB pages (`benches/RESULTS.md`).
//! `STAPES_CPU_HUGEPAGES=0` turns it off.

use crate::dtype::WithDType;
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Buffers smaller than this go straight to the system allocator (which caches them itself).
pub const MIN_BYTES: usize = 1 << 20;

/// Fresh buffers of at least this many bytes are offered to transparent huge pages (Linux).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

struct Config {
    enabled: bool,
    max_bytes: usize,
    huge_pages: bool,
}

static CONFIG: LazyLock<Config> = LazyLock::new(|| Config {
    enabled: std::env::var("STAPES_CPU_CACHE").map(|v| v != "0").unwrap_or(true),
    max_bytes: std::env::var("STAPES_CPU_CACHE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30),
    huge_pages: std::env::var("STAPES_CPU_HUGEPAGES").map(|v| v != "0").unwrap_or(true),
});

/// Free buffers of one element type, by length.
#[doc(hidden)]
pub struct Pool<T> {
    free: HashMap<usize, Vec<Vec<T>>>,
}

static CACHED_BYTES: Mutex<usize> = Mutex::new(0);

/// Element types with a pool (every dtype's element type).
#[doc(hidden)]
pub trait Pooled: Sized + 'static {
    fn pool() -> &'static Mutex<Pool<Self>>;
}

macro_rules! pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn pool() -> &'static Mutex<Pool<Self>> {
                static P: LazyLock<Mutex<Pool<$t>>> = LazyLock::new(|| Mutex::new(Pool { free: HashMap::new() }));
                &P
            }
        }
    )*};
}
pooled!(f16, bf16, f32, f64, i64, u8, i8);

fn pooled_size<T>(n: usize) -> bool {
    CONFIG.enabled && n * std::mem::size_of::<T>() >= MIN_BYTES
}

/// A vector of `n` elements whose content is unspecified (stale values of a reused buffer, or
/// zeros): for callers that overwrite every element.
pub fn take<T: Pooled + WithDType>(n: usize) -> Vec<T> {
    if pooled_size::<T>(n) {
        let hit = T::pool().lock().unwrap_or_else(|e| e.into_inner()).free.get_mut(&n).and_then(|l| l.pop());
        if let Some(v) = hit {
            *CACHED_BYTES.lock().unwrap_or_else(|e| e.into_inner()) -= n * std::mem::size_of::<T>();
            debug_assert_eq!(v.len(), n);
            return v;
        }
    }
    fresh(n)
}

/// A new zeroed vector of `n` elements. A large one is allocated zeroed (fresh, untouched pages
/// from the system) and offered to transparent huge pages before anything writes to it.
fn fresh<T: WithDType>(n: usize) -> Vec<T> {
    let v = vec![T::from_f64(0.0); n];
    if CONFIG.huge_pages {
        advise_huge_pages(v.as_ptr() as *const u8, n * std::mem::size_of::<T>());
    }
    v
}

/// `madvise(MADV_HUGEPAGE)` on the whole 2 MiB pages inside `[ptr, ptr + bytes)`. Advice only:
/// a kernel without THP, or a range it refuses, leaves the buffer on ordinary pages.
#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *const u8, bytes: usize) {
    if bytes < HUGE_PAGE_BYTES {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE_BYTES);
    let end = (ptr as usize + bytes) & !(HUGE_PAGE_BYTES - 1);
    if end > start {
        // SAFETY: the range lies inside one live allocation owned by the caller; MADV_HUGEPAGE
        // changes how pages are backed, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: *const u8, _bytes: usize) {}

/// A vector of `n` zeros.
pub fn zeros<T: Pooled + WithDType>(n: usize) -> Vec<T> {
    let mut v = take::<T>(n);
    if pooled_size::<T>(n) {
        let z = T::from_f64(0.0);
        v.iter_mut().for_each(|x| *x = z);
    }
    v
}

/// Returns a buffer to the pool (or frees it when small, or when the pool is full).
pub fn give<T: Pooled + WithDType>(mut v: Vec<T>) {
    let n = v.len();
    if !pooled_size::<T>(n) || v.capacity() != n {
        return;
    }
    let bytes = n * std::mem::size_of::<T>();
    {
        let mut cached = CACHED_BYTES.lock().unwrap_or_else(|e| e.into_inner());
        if *cached + bytes > CONFIG.max_bytes {
            return;
        }
        *cached += bytes;
    }
    v.truncate(n);
    T::pool().lock().unwrap_or_else(|e| e.into_inner()).free.entry(n).or_default().push(v);
}

/// Bytes currently held by the pool (not in use by any tensor).
pub fn cpu_cache_bytes() -> usize {
    *CACHED_BYTES.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_of_the_same_length() {
        let n = (MIN_BYTES / 4) * 3 + 17; // a length no other test uses
        let v = take::<f32>(n);
        let p = v.as_ptr();
        give(v);
        let w = take::<f32>(n);
        assert_eq!(w.as_ptr(), p);
        let z = {
            give(w);
            zeros::<f32>(n)
        };
        assert!(z.iter().all(|&x| x == 0.0));
        // small buffers are not pooled
        let s = take::<f32>(10);
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn fresh_large_buffers_are_zeroed_and_usable() {
        // a length no other test uses, over several 2 MiB pages and not a multiple of one
        let n = (3 * HUGE_PAGE_BYTES + 12_345) / 4;
        let mut v = fresh::<f32>(n);
        assert_eq!(v.len(), n);
        assert!(v.iter().all(|&x| x == 0.0));
        for (i, x) in v.iter_mut().enumerate() {
            *x = i as f32;
        }
        assert_eq!(v[n - 1], (n - 1) as f32);
    }
}
