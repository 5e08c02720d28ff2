//! The caching device allocator, in the manner of PyTorch's CUDA caching allocator: a freed
//! block is kept in a free list of its size class and handed out again to the next request of
//! that class, so a training loop, which asks for the same sizes every step, stops calling the
//! driver after its first step.
//!
//! * Size classes: requests round up to a multiple of 512 bytes up to 1 MiB, and to a multiple
//!   of 2 MiB above (bounded waste, few distinct classes for large tensors).
//! * Reuse is safe without synchronisation because every launch and copy of a device goes to
//!   one stream: a block freed after the launches that use it is reused by later launches, in
//!   stream order (as PyTorch does for a single stream).
//! * Out of memory: the free lists are released to the driver and the request is tried once
//!   more; if it still fails, the error says how much was asked for and what is allocated and
//!   reserved.
//! * [`MemoryStats`]: bytes allocated (held by live buffers), reserved (allocated plus cached),
//!   the peaks of both, and counters of driver allocations, cache hits and OOM retries.
//!
//! The same allocator serves GPU memory and the emulator's host memory (with an optional
//! limit, so the out-of-memory path runs in the CPU tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Requests up to this size round to [`SMALL_ROUND`], larger ones to [`LARGE_ROUND`].
pub const SMALL_LIMIT: usize = 1 << 20;
/// Rounding of small requests (bytes).
pub const SMALL_ROUND: usize = 512;
/// Rounding of large requests (bytes).
pub const LARGE_ROUND: usize = 2 << 20;

/// The size class (bytes actually reserved) of a request of `bytes`.
pub fn size_class(bytes: usize) -> usize {
    let round = if bytes <= SMALL_LIMIT { SMALL_ROUND } else { LARGE_ROUND };
    bytes.max(1).div_ceil(round) * round
}

/// Memory use of one device's allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live buffers (size classes, so at least what was asked for).
    pub allocated: usize,
    /// Bytes obtained from the driver and not yet released: allocated plus cached.
    pub reserved: usize,
    /// Highest `allocated` since the last [`CachingAllocator::reset_peaks`].
    pub peak_allocated: usize,
    /// Highest `reserved` since the last reset.
    pub peak_reserved: usize,
    /// Allocations that went to the driver.
    pub device_allocs: u64,
    /// Allocations served from the cache.
    pub cache_hits: u64,
    /// Times an out-of-memory answer emptied the cache and retried.
    pub oom_retries: u64,
}

impl std::fmt::Display for MemoryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} allocated, {} reserved (peaks {} / {}), {} driver allocations, {} cache hits",
            fmt_bytes(self.allocated),
            fmt_bytes(self.reserved),
            fmt_bytes(self.peak_allocated),
            fmt_bytes(self.peak_reserved),
            self.device_allocs,
            self.cache_hits
        )
    }
}

/// `1.50 GiB`, `12.0 MiB`, `512 B`.
pub fn fmt_bytes(b: usize) -> String {
    const K: f64 = 1024.0;
    let x = b as f64;
    if x >= K * K * K {
        format!("{:.2} GiB", x / (K * K * K))
    } else if x >= K * K {
        format!("{:.1} MiB", x / (K * K))
    } else if x >= K {
        format!("{:.1} KiB", x / K)
    } else {
        format!("{b} B")
    }
}

/// Why the underlying allocation failed.
#[derive(Debug)]
pub enum RawAllocError {
    /// The device (or the emulator's limit) has no room.
    OutOfMemory,
    /// Anything else, with the driver's message.
    Other(String),
}

/// An allocation failure as reported to callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AllocError {
    /// The device had no room, even after the cache was emptied and the request retried.
    #[error(
        "out of memory on {device}: tried to allocate {} (size class {}); {stats}; the cache was \
         emptied and the allocation retried once",
        fmt_bytes(*requested),
        fmt_bytes(*class)
    )]
    OutOfMemory {
        /// The device's name (a GPU's name, or `the CUDA emulator`).
        device: String,
        /// The requested size in bytes.
        requested: usize,
        /// The size class reserved for the request, in bytes.
        class: usize,
        /// The allocator's statistics at the failure.
        stats: MemoryStats,
    },
    /// The driver failed for a reason other than lack of memory.
    #[error("allocating {} on {device}: {message}", fmt_bytes(*requested))]
    Driver {
        /// The device's name (a GPU's name, or `the CUDA emulator`).
        device: String,
        /// The requested size in bytes.
        requested: usize,
        /// The driver's error message.
        message: String,
    },
}

/// Where blocks come from: the driver, or host memory for the emulator.
pub trait RawAllocator: Send + Sync + 'static {
    /// A block of device memory.
    type Block: Send + 'static;
    /// A new block of exactly `bytes` bytes (contents unspecified).
    fn alloc(&self, bytes: usize) -> Result<Self::Block, RawAllocError>;
    /// Called after cached blocks were dropped (released), e.g. to wait until the driver has
    /// really freed them before a retry.
    fn released(&self) {}
    /// The device's name for messages.
    fn describe(&self) -> String;
}

struct State<B> {
    free: HashMap<usize, Vec<B>>,
    stats: MemoryStats,
    cached: usize,
}

/// A caching allocator over a [`RawAllocator`]. Shared through an `Arc` by the buffers it hands
/// out, which give their block back when dropped.
pub struct CachingAllocator<R: RawAllocator> {
    raw: R,
    state: Mutex<State<R::Block>>,
}

/// A block handed out by a [`CachingAllocator`]; returns to its free list when dropped.
pub struct Block<R: RawAllocator> {
    block: Option<R::Block>,
    class: usize,
    owner: Arc<CachingAllocator<R>>,
}

impl<R: RawAllocator> Block<R> {
    /// The underlying block.
    pub fn get(&self) -> &R::Block {
        self.block.as_ref().expect("present until drop")
    }
    /// The underlying block, mutably.
    pub fn get_mut(&mut self) -> &mut R::Block {
        self.block.as_mut().expect("present until drop")
    }
    /// Bytes reserved for it (its size class).
    pub fn class(&self) -> usize {
        self.class
    }
}

impl<R: RawAllocator> Drop for Block<R> {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.owner.give_back(self.class, b);
        }
    }
}

impl<R: RawAllocator> CachingAllocator<R> {
    /// An allocator with empty free lists.
    pub fn new(raw: R) -> Arc<Self> {
        Arc::new(CachingAllocator {
            raw,
            state: Mutex::new(State { free: HashMap::new(), stats: MemoryStats::default(), cached: 0 }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<R::Block>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The underlying allocator.
    pub fn raw(&self) -> &R {
        &self.raw
    }

    /// A block of at least `bytes` bytes: a cached one of the same size class, else a new one;
    /// on out-of-memory the cache is emptied and the request retried once.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<Block<R>, AllocError> {
        let class = size_class(bytes);
        {
            let mut st = self.lock();
            if let Some(b) = st.free.get_mut(&class).and_then(|v| v.pop()) {
                st.cached -= class;
                st.stats.cache_hits += 1;
                st.stats.allocated += class;
                st.stats.peak_allocated = st.stats.peak_allocated.max(st.stats.allocated);
                return Ok(Block { block: Some(b), class, owner: self.clone() });
            }
        }
        let mut retried = false;
        loop {
            match self.raw.alloc(class) {
                Ok(b) => {
                    let mut st = self.lock();
                    st.stats.device_allocs += 1;
                    st.stats.allocated += class;
                    st.stats.reserved += class;
                    st.stats.peak_allocated = st.stats.peak_allocated.max(st.stats.allocated);
                    st.stats.peak_reserved = st.stats.peak_reserved.max(st.stats.reserved);
                    return Ok(Block { block: Some(b), class, owner: self.clone() });
                }
                Err(RawAllocError::OutOfMemory) if !retried => {
                    retried = true;
                    self.lock().stats.oom_retries += 1;
                    self.empty_cache();
                }
                Err(RawAllocError::OutOfMemory) => {
                    return Err(AllocError::OutOfMemory {
                        device: self.raw.describe(),
                        requested: bytes,
                        class,
                        stats: self.stats(),
                    })
                }
                Err(RawAllocError::Other(message)) => {
                    return Err(AllocError::Driver { device: self.raw.describe(), requested: bytes, message })
                }
            }
        }
    }

    fn give_back(&self, class: usize, b: R::Block) {
        let mut st = self.lock();
        st.stats.allocated -= class;
        st.cached += class;
        st.free.entry(class).or_default().push(b);
    }

    /// Releases every cached block to the driver (like `torch.cuda.empty_cache()`).
    pub fn empty_cache(&self) {
        let freed: Vec<Vec<R::Block>> = {
            let mut st = self.lock();
            st.stats.reserved -= st.cached;
            st.cached = 0;
            st.free.drain().map(|(_, v)| v).collect()
        };
        drop(freed);
        self.raw.released();
    }

    /// The current statistics.
    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// Bytes cached in the free lists.
    pub fn cached(&self) -> usize {
        self.lock().cached
    }

    /// Sets the peaks to the current values (like `torch.cuda.reset_peak_memory_stats()`).
    pub fn reset_peaks(&self) {
        let mut st = self.lock();
        st.stats.peak_allocated = st.stats.allocated;
        st.stats.peak_reserved = st.stats.reserved;
    }
}

// ---------------------------------------------------------------------------------------------
// The emulator's memory: host blocks of 16-byte words, with an optional limit for tests.
// ---------------------------------------------------------------------------------------------

/// Host memory standing in for device memory on the emulator.
pub struct EmuMemory {
    limit: Mutex<Option<usize>>,
    in_use: Arc<std::sync::atomic::AtomicUsize>,
}

/// 16 bytes aligned to 16, the unit of an emulator block: as on a GPU (whose allocations are
/// 256-byte aligned), a block's start takes the kernels' 16-byte vector loads.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Word([u64; 2]);

/// The byte size of a [`Word`].
const WORD: usize = 16;

/// An emulator block: 16-byte aligned words (every element type and vector fits the alignment).
pub struct EmuBlock {
    words: Vec<Word>,
    in_use: Arc<std::sync::atomic::AtomicUsize>,
}

impl EmuBlock {
    /// The block's first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.words.as_ptr() as *const u8
    }
    /// The block's first byte, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr() as *mut u8
    }
    /// Bytes in the block.
    pub fn bytes(&self) -> usize {
        self.words.len() * WORD
    }
}

impl Drop for EmuBlock {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.words.len() * WORD, std::sync::atomic::Ordering::Relaxed);
    }
}

impl EmuMemory {
    /// Unlimited host memory.
    pub fn new() -> Self {
        EmuMemory { limit: Mutex::new(None), in_use: Arc::new(std::sync::atomic::AtomicUsize::new(0)) }
    }
    /// Caps the bytes the emulator's "device" may hold (`None`: no cap), so tests can run out of
    /// memory.
    pub fn set_limit(&self, limit: Option<usize>) {
        *self.limit.lock().unwrap_or_else(|p| p.into_inner()) = limit;
    }
}

impl Default for EmuMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl RawAllocator for EmuMemory {
    type Block = EmuBlock;
    fn alloc(&self, bytes: usize) -> Result<EmuBlock, RawAllocError> {
        use std::sync::atomic::Ordering;
        let words = bytes.div_ceil(WORD);
        let limit = *self.limit.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.in_use.fetch_add(words * WORD, Ordering::Relaxed);
        if limit.is_some_and(|l| before + words * WORD > l) {
            self.in_use.fetch_sub(words * WORD, Ordering::Relaxed);
            return Err(RawAllocError::OutOfMemory);
        }
        let mut v = Vec::new();
        if v.try_reserve_exact(words).is_err() {
            self.in_use.fetch_sub(words * WORD, Ordering::Relaxed);
            return Err(RawAllocError::OutOfMemory);
        }
        // Poisoned with NaN-like bytes, as fresh device memory holds garbage: a kernel that reads
        // an output it did not write shows up in the tests.
        v.resize(words, Word([0xFFF8_DEAD_FFF8_DEADu64; 2]));
        Ok(EmuBlock { words: v, in_use: self.in_use.clone() })
    }
    fn describe(&self) -> String {
        "the CUDA emulator".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), 2 << 20);
        assert_eq!(size_class(5 << 20), 6 << 20);
    }

    #[test]
    fn blocks_are_reused_and_oom_empties_the_cache_then_fails_clearly() {
        let a = CachingAllocator::new(EmuMemory::new());
        let b1 = a.alloc(1000).unwrap();
        assert_eq!(b1.class(), 1024);
        let s = a.stats();
        assert_eq!((s.allocated, s.reserved, s.device_allocs, s.cache_hits), (1024, 1024, 1, 0));
        drop(b1);
        assert_eq!(a.stats().allocated, 0);
        assert_eq!(a.cached(), 1024);
        let b2 = a.alloc(900).unwrap(); // same class: from the cache
        let s = a.stats();
        assert_eq!((s.allocated, s.reserved, s.device_allocs, s.cache_hits), (1024, 1024, 1, 1));
        drop(b2);

        // A limit of 3 MiB: a cached 2 MiB block blocks a new 2 MiB one until the cache is emptied.
        a.raw().set_limit(Some(3 << 20));
        let big = a.alloc(2 << 20).unwrap();
        drop(big); // cached, still reserved
        let other = a.alloc((1 << 20) + 10).unwrap(); // class 2 MiB: from the cache
        assert_eq!(a.stats().cache_hits, 2);
        let third = a.alloc(900 << 10).unwrap(); // 900 KiB fits next to it
        drop(third);
        let e = a.alloc(3 << 20).err().expect("over the limit");
        assert_eq!(a.stats().oom_retries, 1);
        let msg = e.to_string();
        assert!(msg.contains("out of memory on the CUDA emulator") && msg.contains("3.0 MiB"), "{msg}");
        assert!(msg.contains("2.0 MiB allocated"), "{msg}");
        // the retry emptied the cache: only the live block is reserved now
        assert_eq!(a.stats().reserved, 2 << 20);
        drop(other);
        a.empty_cache();
        assert_eq!(a.stats().reserved, 0);
        assert!(a.alloc(3 << 20).is_err()); // 4 MiB class over a 3 MiB limit
        a.raw().set_limit(None);
        let s = a.alloc(3 << 20).unwrap();
        assert_eq!(s.class(), 4 << 20);
        assert_eq!(a.stats().peak_allocated, 4 << 20);
    }
}
