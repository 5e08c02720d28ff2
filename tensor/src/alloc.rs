//! A caching allocator for large CPU buffers.
//!
//! Freshly `mmap`ed memory costs a page fault per 4 KiB page on first touch, which for a
//! 64 MiB tensor is more than the arithmetic of a cheap op. Training loops allocate the same
//! sizes every step, so, like PyTorch's CUDA caching allocator (and unlike its CPU allocator),
//! storage of at least [`MIN_BYTES`] is returned to a per-dtype pool on drop and reused by the
//! next allocation of exactly the same length. The pool holds at most `STAPES_CPU_CACHE_BYTES`
//! (default 1 GiB); `STAPES_CPU_CACHE=0` turns it off.

use crate::dtype::WithDType;
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Buffers smaller than this go straight to the system allocator (which caches them itself).
pub const MIN_BYTES: usize = 1 << 20;

struct Config {
    enabled: bool,
    max_bytes: usize,
}

static CONFIG: LazyLock<Config> = LazyLock::new(|| Config {
    enabled: std::env::var("STAPES_CPU_CACHE").map(|v| v != "0").unwrap_or(true),
    max_bytes: std::env::var("STAPES_CPU_CACHE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30),
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
    vec![T::from_f64(0.0); n]
}

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
}
