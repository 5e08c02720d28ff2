//! Pinned (page-locked) staging for large host↔device copies on a GPU.
//!
//! # Why
//! The driver can DMA only from or to page-locked host memory. A copy from pageable memory (a
//! `Vec`) makes the driver stage it itself through its own small pinned buffers, which usually
//! reaches a fraction of the link's bandwidth. PyTorch users get the full rate by copying from
//! `pin_memory()` tensors; stapes tensors live in ordinary `Vec`s, so `PinnedStaging` does the
//! staging here instead, with larger chunks and two of them in flight.
//!
//! # How
//! Each [`super::GpuDevice`] owns one `PinnedStaging`: two pinned chunks of `CHUNK_BYTES`,
//! allocated at the first large transfer (never for small ones, never on the emulator), and one
//! event per chunk that marks the last DMA touching it.
//! * Upload: for each chunk-sized piece of the source, wait for the event of the chunk it goes
//!   into (the DMA that last used that chunk is over), copy the piece into it on the host,
//!   queue the DMA from it on the device's stream and record the chunk's event. The host copy of
//!   piece i+1 runs while the DMA of piece i does. The upload returns with the last DMAs still
//!   queued, which is safe: the source has been copied out already, and the next user of a
//!   chunk waits for its event.
//! * Download: queue the DMA of piece 0 into chunk 0; then for each piece i, queue the DMA of
//!   piece i+1 into the other chunk, wait for chunk i%2's event and copy it out on the host. The
//!   DMAs are queued on the device's only stream, after every kernel queued before the
//!   download, so they see the kernels' results (stream order); the download returns after the
//!   last piece has been copied out, as the plain `cuMemcpyDtoH` path does.
//!
//! DMAs into and out of the same chunk are ordered by the stream; the host's writes into a
//! chunk and its reads out of one are ordered against the DMAs by the chunk's event.
//!
//! # When
//! Transfers of at least [`DEFAULT_MIN_BYTES`] are staged; the environment variable
//! `STAPES_PINNED_STAGING_MIN_BYTES` sets another threshold in bytes (`0` stages every non-empty
//! transfer), or switches staging off (`off`), for diagnosing or measuring. Everything else goes
//! the plain pageable way, and so does a transfer that finds the chunks busy with another
//! thread's transfer (no waiting on a lock), or a device where the pinned allocation failed
//! (tried once; [`super::GpuDevice::describe_transfers`] says why). Staging never makes a copy
//! fail that the plain path would have done: only errors of the driver calls themselves are
//! returned, naming the direction, the size and the piece.

use super::CudaError;
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};
use rayon::prelude::*;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};

/// Bytes of one pinned staging chunk (two per device).
pub const CHUNK_BYTES: usize = 8 << 20;

/// The smallest transfer staged by default, in bytes.
pub const DEFAULT_MIN_BYTES: usize = 1 << 20;

/// The environment variable overriding [`DEFAULT_MIN_BYTES`] (a byte count, or `off`).
pub const MIN_BYTES_ENV: &str = "STAPES_PINNED_STAGING_MIN_BYTES";

/// Host copies into or out of a chunk are split into pieces of this size over rayon's pool: one
/// thread's `memcpy` is slower than the link.
const HOST_COPY_PIECE: usize = 1 << 20;

/// Which host↔device copies go through the pinned chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagingPolicy {
    /// None: every copy goes straight from or to pageable memory.
    Off,
    /// Copies of at least this many bytes (and at least one byte).
    MinBytes(usize),
}

impl StagingPolicy {
    /// The policy a value of `STAPES_PINNED_STAGING_MIN_BYTES` asks for: `None` (unset) gives
    /// the default threshold, `off`/`none`/`never`/`false` switch staging off, a decimal byte count
    /// sets the threshold. Anything else is an error message (the caller keeps the default).
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        let Some(v) = value.map(str::trim) else { return Ok(StagingPolicy::MinBytes(DEFAULT_MIN_BYTES)) };
        if matches!(v.to_ascii_lowercase().as_str(), "off" | "none" | "never" | "false") {
            return Ok(StagingPolicy::Off);
        }
        v.parse::<usize>().map(StagingPolicy::MinBytes).map_err(|_| {
            format!("{MIN_BYTES_ENV}={v:?} is neither a byte count nor `off`; using {DEFAULT_MIN_BYTES} bytes")
        })
    }

    /// The policy of this process's environment (read once), and the complaint about a value it
    /// could not read, if any.
    pub fn from_env() -> &'static (StagingPolicy, Option<String>) {
        static POLICY: OnceLock<(StagingPolicy, Option<String>)> = OnceLock::new();
        POLICY.get_or_init(|| {
            let value = std::env::var(MIN_BYTES_ENV).ok();
            match StagingPolicy::parse(value.as_deref()) {
                Ok(p) => (p, None),
                Err(why) => (StagingPolicy::MinBytes(DEFAULT_MIN_BYTES), Some(why)),
            }
        })
    }

    /// Whether a copy of `bytes` bytes is staged.
    pub fn stages(self, bytes: usize) -> bool {
        match self {
            StagingPolicy::Off => false,
            StagingPolicy::MinBytes(min) => bytes > 0 && bytes >= min,
        }
    }
}

/// The pinned chunks of one device, allocated at the first staged transfer.
pub(crate) struct PinnedStaging {
    policy: StagingPolicy,
    state: Mutex<State>,
}

enum State {
    /// No staged transfer yet.
    Untried,
    Ready(Chunks),
    /// The pinned allocation failed (why); transfers take the plain path.
    Unavailable(String),
}

/// Two pinned chunks and, per chunk, the event recorded after the last DMA that touched it.
struct Chunks {
    host: [PinnedHostSlice<u8>; 2],
    done: [CudaEvent; 2],
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // No DMA may still use a chunk when its memory is freed (PinnedHostSlice's own drop
        // waits only for its internal event, which this module does not record).
        for e in &self.done {
            let _ = e.synchronize();
        }
    }
}

impl Chunks {
    fn allocate(ctx: &Arc<CudaContext>) -> Result<Chunks, String> {
        let chunk = || -> Result<PinnedHostSlice<u8>, String> {
            // Flags 0: plain page-locked memory. (cudarc's `alloc_pinned` asks for
            // write-combined memory, which the host reads very slowly: downloads copy out of it.)
            // SAFETY: the memory is uninitialised; it is zeroed below, before any reference to
            // it exists.
            let mut p = unsafe { ctx.alloc_pinned_with_flags::<u8>(CHUNK_BYTES, 0) }
                .map_err(|e| format!("allocating {CHUNK_BYTES} bytes of pinned host memory: {e}"))?;
            let ptr = p.as_mut_ptr().map_err(|e| format!("reading the pinned chunk's address: {e}"))?;
            // SAFETY: `ptr` points to CHUNK_BYTES bytes of host memory that this slice owns and
            // nothing else uses yet.
            unsafe { std::ptr::write_bytes(ptr, 0, CHUNK_BYTES) };
            Ok(p)
        };
        let event = || ctx.new_event(None).map_err(|e| format!("creating a CUDA event: {e}"));
        Ok(Chunks { host: [chunk()?, chunk()?], done: [event()?, event()?] })
    }
}

/// `dst.copy_from_slice(src)`, split over rayon's pool in [`HOST_COPY_PIECE`]s.
fn host_copy(dst: &mut [u8], src: &[u8]) {
    dst.par_chunks_mut(HOST_COPY_PIECE).zip(src.par_chunks(HOST_COPY_PIECE)).for_each(|(d, s)| d.copy_from_slice(s));
}

impl PinnedStaging {
    /// Staging with this process's policy ([`StagingPolicy::from_env`]); allocates nothing.
    pub(crate) fn new() -> Self {
        PinnedStaging { policy: StagingPolicy::from_env().0, state: Mutex::new(State::Untried) }
    }

    /// `pinned staging for copies of at least 1048576 bytes (2 x 8388608-byte chunks)`, or why
    /// copies are not staged.
    pub(crate) fn describe(&self) -> String {
        let mut s = match self.policy {
            StagingPolicy::Off => format!("pinned staging off ({MIN_BYTES_ENV})"),
            StagingPolicy::MinBytes(min) => {
                format!("pinned staging for copies of at least {min} bytes (2 x {CHUNK_BYTES}-byte chunks)")
            }
        };
        if let Some(why) = &StagingPolicy::from_env().1 {
            s.push_str(&format!("; {why}"));
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let State::Unavailable(why) = &*state {
            s.push_str(&format!("; unavailable, copies take the pageable path: {why}"));
        }
        s
    }

    /// The chunks, when a copy of `bytes` is to be staged and they can be had now: `None` below
    /// the threshold, when staging is off or unavailable, or while another thread's transfer
    /// holds them. Allocates them at the first call that wants them.
    fn chunks(&self, ctx: &Arc<CudaContext>, bytes: usize) -> Option<MutexGuard<'_, State>> {
        if !self.policy.stages(bytes) {
            return None;
        }
        let mut state = match self.state.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if let State::Untried = *state {
            *state = match Chunks::allocate(ctx) {
                Ok(c) => State::Ready(c),
                Err(why) => State::Unavailable(why),
            };
        }
        matches!(*state, State::Ready(_)).then_some(state)
    }

    /// Copies `src` into the first `src.len()` bytes of `dst` through the pinned chunks, queued
    /// on `stream`. `Ok(false)` when the copy is not staged (see [`Self::chunks`]): the caller
    /// then makes the plain copy.
    pub(crate) fn upload(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        src: &[u8],
        dst: &mut CudaSlice<u8>,
    ) -> Result<bool, CudaError> {
        const OP: &str = "copy to device";
        let bytes = src.len();
        if dst.len() < bytes {
            return Err(CudaError::driver(OP, format!("{bytes} bytes into a {}-byte device block", dst.len())));
        }
        let Some(mut state) = self.chunks(ctx, bytes) else { return Ok(false) };
        let State::Ready(chunks) = &mut *state else { return Ok(false) };
        let err = |piece: usize, what: &str, e: cudarc::driver::DriverError| {
            CudaError::driver(format!("{OP} of {bytes} bytes through pinned memory, piece {piece}: {what}"), e)
        };
        for (i, piece) in src.chunks(CHUNK_BYTES).enumerate() {
            let (k, at, len) = (i % 2, i * CHUNK_BYTES, piece.len());
            // The DMA that last read (or wrote) chunk k must be over before the host writes it.
            chunks.done[k].synchronize().map_err(|e| err(i, "waiting for the chunk", e))?;
            let host = chunks.host[k].as_mut_slice().map_err(|e| err(i, "mapping the chunk", e))?;
            host_copy(&mut host[..len], piece);
            stream.memcpy_htod(&host[..len], &mut dst.slice_mut(at..at + len)).map_err(|e| err(i, "memcpy", e))?;
            chunks.done[k].record(stream).map_err(|e| err(i, "recording the chunk's event", e))?;
        }
        Ok(true)
    }

    /// Copies the first `dst.len()` bytes of `src` into `dst` through the pinned chunks, after
    /// everything queued on `stream` before; returns once `dst` holds them. `Ok(false)` when the
    /// copy is not staged (see [`Self::chunks`]): the caller then makes the plain copy.
    pub(crate) fn download(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        src: &CudaSlice<u8>,
        dst: &mut [u8],
    ) -> Result<bool, CudaError> {
        const OP: &str = "copy to host";
        let bytes = dst.len();
        if src.len() < bytes {
            return Err(CudaError::driver(OP, format!("{bytes} bytes out of a {}-byte device block", src.len())));
        }
        let Some(mut state) = self.chunks(ctx, bytes) else { return Ok(false) };
        let State::Ready(chunks) = &mut *state else { return Ok(false) };
        let err = |piece: usize, what: &str, e: cudarc::driver::DriverError| {
            CudaError::driver(format!("{OP} of {bytes} bytes through pinned memory, piece {piece}: {what}"), e)
        };
        let pieces = bytes.div_ceil(CHUNK_BYTES);
        let range = |i: usize| i * CHUNK_BYTES..((i + 1) * CHUNK_BYTES).min(bytes);
        // Queues the DMA of piece i into chunk i % 2. The host finished reading that chunk (piece
        // i - 2) before this is called; an earlier DMA still using it comes first in the stream.
        let queue = |chunks: &mut Chunks, i: usize| -> Result<(), CudaError> {
            let (k, r) = (i % 2, range(i));
            let host = chunks.host[k].as_mut_slice().map_err(|e| err(i, "mapping the chunk", e))?;
            stream.memcpy_dtoh(&src.slice(r.clone()), &mut host[..r.len()]).map_err(|e| err(i, "memcpy", e))?;
            chunks.done[k].record(stream).map_err(|e| err(i, "recording the chunk's event", e))
        };
        queue(chunks, 0)?;
        for i in 0..pieces {
            if i + 1 < pieces {
                queue(chunks, i + 1)?;
            }
            let (k, r) = (i % 2, range(i));
            chunks.done[k].synchronize().map_err(|e| err(i, "waiting for the chunk", e))?;
            let host = chunks.host[k].as_slice().map_err(|e| err(i, "mapping the chunk", e))?;
            host_copy(&mut dst[r.clone()], &host[..r.len()]);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_comes_from_the_variable() {
        assert_eq!(StagingPolicy::parse(None), Ok(StagingPolicy::MinBytes(DEFAULT_MIN_BYTES)));
        assert_eq!(StagingPolicy::parse(Some(" 4096 ")), Ok(StagingPolicy::MinBytes(4096)));
        assert_eq!(StagingPolicy::parse(Some("OFF")), Ok(StagingPolicy::Off));
        let e = StagingPolicy::parse(Some("4MiB")).unwrap_err();
        assert!(e.contains(MIN_BYTES_ENV) && e.contains("4MiB"), "{e}");
        let p = StagingPolicy::MinBytes(1 << 20);
        assert!(!p.stages((1 << 20) - 1) && p.stages(1 << 20));
        assert!(!StagingPolicy::MinBytes(0).stages(0) && StagingPolicy::MinBytes(0).stages(1));
        assert!(!StagingPolicy::Off.stages(usize::MAX));
    }

    #[test]
    fn host_copies_split_exactly() {
        let src: Vec<u8> = (0..3 * HOST_COPY_PIECE + 17).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        host_copy(&mut dst, &src);
        assert_eq!(dst, src);
    }
}
