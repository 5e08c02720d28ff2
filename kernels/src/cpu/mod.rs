//! Rust CPU kernels, one module per family.
//!
//! Parallelism comes from rayon's global pool (size it with `RAYON_NUM_THREADS`); every kernel
//! splits its work into chunks large enough (see [`PAR_CHUNK`]) that small inputs run on the
//! calling thread only.

pub mod attention;
pub mod binary;
pub mod conv;
pub mod copy;
pub mod ctc;
pub mod index;
pub mod matmul;
pub mod norm;
pub mod packed;
pub mod pool;
pub mod qgemm;
pub mod reduce;
pub mod rnn;
pub mod softmax;
pub mod unary;
pub mod vmath;

/// Elements per rayon task for memory-bound kernels: below this a kernel runs single-threaded.
pub const PAR_CHUNK: usize = 1 << 15;

/// The floating point element types the CPU kernels compute in.
///
/// `f16` and `bf16` tensors are widened to `f32` by the tensor layer before calling a kernel.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + num_traits::ToPrimitive
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::ops::SubAssign
    + std::fmt::Debug
    + std::fmt::Display
    + Default
    + Send
    + Sync
    + Copy
    + 'static
{
    /// Lossy conversion from `f64` (used for scalars given by the user).
    fn from_f64_lossy(v: f64) -> Self;
    /// Lossless-enough conversion to `f64`.
    fn to_f64_lossy(self) -> f64;
    /// `exp` applied to a whole slice in place (vectorised for `f32`).
    fn exp_slice(xs: &mut [Self]);
}

impl Float for f32 {
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn to_f64_lossy(self) -> f64 {
        self as f64
    }
    fn exp_slice(xs: &mut [Self]) {
        vmath::exp_f32_inplace(xs)
    }
}

impl Float for f64 {
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v
    }
    #[inline]
    fn to_f64_lossy(self) -> f64 {
        self
    }
    fn exp_slice(xs: &mut [Self]) {
        for x in xs {
            *x = x.exp();
        }
    }
}

/// A raw pointer that may be shared across rayon tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `SendPtr`, not its field).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Number of rayon tasks to split `n` elements into, for a memory-bound kernel.
/// `xs` as `&mut [f32]` when `T` is `f32` (for callers outside this crate that dispatch a
/// generic slice to an `f32` kernel).
#[inline]
pub fn as_f32_mut<T: 'static>(xs: &mut [T]) -> Option<&mut [f32]> {
    reduce::downcast_f32_mut(xs)
}

#[inline]
pub(crate) fn n_tasks(n: usize) -> usize {
    n.div_ceil(PAR_CHUNK).clamp(1, rayon::current_num_threads().max(1) * 4)
}

/// The deterministic generator shared by the kernel unit tests.
#[cfg(test)]
pub(crate) mod test_rng {
    /// xorshift64*: deterministic values in [-1, 1).
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            (v >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
        pub(crate) fn vec(&mut self, n: usize) -> Vec<f64> {
            (0..n).map(|_| self.next()).collect()
        }
    }
}
