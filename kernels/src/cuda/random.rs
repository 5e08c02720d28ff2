//! Launch wrappers for `kernels/cuda/random.cu`: Philox4x32-10 uniforms, normals and Bernoulli
//! draws, indexed by element (the values depend on key, offset and element index only, never on
//! the launch shape), with [`philox4x32`] as the bit-exact CPU reference.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, DeviceElem, KernelArg};
use super::CudaError;

/// One Philox4x32-10 block: the four 32-bit words of `counter` (words 0-1; words 2-3 zero)
/// under `key`, as the kernels compute them.
pub fn philox4x32(counter: u64, key: u64) -> [u32; 4] {
    philox4x32_block([counter as u32, (counter >> 32) as u32, 0, 0], [key as u32, (key >> 32) as u32])
}

/// The full-width Philox4x32-10 block function (Random123's `philox4x32_R(10, ...)`).
pub fn philox4x32_block(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mulhilo = |a: u32, b: u32| {
        let p = a as u64 * b as u64;
        ((p >> 32) as u32, p as u32)
    };
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(0x9E37_79B9);
            k1 = k1.wrapping_add(0xBB67_AE85);
        }
        let (hi0, lo0) = mulhilo(0xD251_1F53, c0);
        let (hi1, lo1) = mulhilo(0xCD9E_8D57, c2);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// The f32 uniform in `[0, 1)` the kernels make of a word: 24 random bits.
pub fn unit24(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// The f64 uniform in `[0, 1)` the kernels make of two words: 53 random bits.
pub fn unit53(a: u32, b: u32) -> f64 {
    ((((a as u64) << 32) | b as u64) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Counters a launch over `n` elements of `T` uses (4 elements per counter, 2 for f64): the
/// offset to add for the next launch under the same key.
pub fn counters_used<T: DeviceElem>(n: usize) -> u64 {
    if T::NAME == "f64" {
        n.div_ceil(2) as u64
    } else {
        n.div_ceil(4) as u64
    }
}

fn float_param<'a, T: DeviceElem>(op: &'static str, v: f64) -> Result<KernelArg<'a>, CudaError> {
    match T::NAME {
        "f64" | "f32" | "f16" | "bf16" => Ok(KernelArg::compute_float::<T>(v)),
        other => Err(CudaError::Shape { op, message: format!("random values are floating point, not {other}") }),
    }
}

fn threads_for<T: DeviceElem>(backend: &Backend, n: usize) -> super::LaunchConfig {
    launch_config(backend, counters_used::<T>(n) as usize)
}

/// `out[i] = lo + (hi - lo) * u_i` with `u_i` uniform in `[0, 1)`.
pub fn uniform<T: DeviceElem>(
    backend: &Backend,
    out: &mut DeviceBuffer<T>,
    key: u64,
    offset: u64,
    lo: f64,
    hi: f64,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::random::uniform";
    let n = out.len();
    let (lo, hi) = (float_param::<T>(OP, lo)?, float_param::<T>(OP, hi)?);
    if n == 0 {
        return Ok(());
    }
    let cfg = threads_for::<T>(backend, n);
    let mut args =
        [KernelArg::output(out), KernelArg::u64(n as u64), KernelArg::u64(key), KernelArg::u64(offset), lo, hi];
    // SAFETY: rand_uniform_<T>(T* out, n, key, offset, lo, hi) writes out[0, n); lo/hi are float
    // for f32/f16/bf16 and double for f64 (float_param).
    unsafe { backend.launch(&format!("rand_uniform_{}", T::NAME), cfg, &mut args) }
}

/// `out[i] = mean + std * z_i` with `z_i` standard normal (Box-Muller).
pub fn normal<T: DeviceElem>(
    backend: &Backend,
    out: &mut DeviceBuffer<T>,
    key: u64,
    offset: u64,
    mean: f64,
    std: f64,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::random::normal";
    let n = out.len();
    let (mean, std) = (float_param::<T>(OP, mean)?, float_param::<T>(OP, std)?);
    if n == 0 {
        return Ok(());
    }
    let cfg = threads_for::<T>(backend, n);
    let mut args =
        [KernelArg::output(out), KernelArg::u64(n as u64), KernelArg::u64(key), KernelArg::u64(offset), mean, std];
    // SAFETY: rand_normal_<T>(T* out, n, key, offset, mean, std) writes out[0, n).
    unsafe { backend.launch(&format!("rand_normal_{}", T::NAME), cfg, &mut args) }
}

/// `out[i] = 1 if u_i < p[i] else 0`. Returns `Some(p)` with an offending probability when one
/// is outside `[0, 1]` or NaN (one flag and one value are downloaded).
pub fn bernoulli<T: DeviceElem>(
    backend: &Backend,
    p: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<T>,
    n: usize,
    key: u64,
    offset: u64,
) -> Result<Option<T>, CudaError> {
    const OP: &str = "cuda::random::bernoulli";
    float_param::<T>(OP, 0.0)?;
    if p.len() < n || out.len() < n {
        let message = format!("n = {n}, p holds {}, out {}", p.len(), out.len());
        return Err(CudaError::Shape { op: OP, message });
    }
    if n == 0 {
        return Ok(None);
    }
    let mut bad = backend.zeros::<u32>(1)?;
    let mut bad_value = backend.zeros::<T>(1)?;
    let cfg = threads_for::<T>(backend, n);
    let mut args = [
        KernelArg::input(p),
        KernelArg::output(out),
        KernelArg::output(&mut bad),
        KernelArg::output(&mut bad_value),
        KernelArg::u64(n as u64),
        KernelArg::u64(key),
        KernelArg::u64(offset),
    ];
    // SAFETY: rand_bernoulli_<T>(const T* p, T* out, unsigned* bad, T* bad_value, n, key, offset)
    // reads p[0, n), writes out[0, n) (both hold at least n, checked) and bad[0], bad_value[0].
    unsafe { backend.launch(&format!("rand_bernoulli_{}", T::NAME), cfg, &mut args) }?;
    if backend.download(&bad)?[0] != 0 {
        return Ok(Some(backend.download(&bad_value)?[0]));
    }
    Ok(None)
}

/// Every Philox word of counters `offset ..`: `out[4c + j]` = word j of counter offset + c.
pub fn philox_words(backend: &Backend, out: &mut DeviceBuffer<u32>, key: u64, offset: u64) -> Result<(), CudaError> {
    let n = out.len();
    if n == 0 {
        return Ok(());
    }
    let cfg = launch_config(backend, n.div_ceil(4));
    let mut args = [KernelArg::output(out), KernelArg::u64(n as u64), KernelArg::u64(key), KernelArg::u64(offset)];
    // SAFETY: philox_words(unsigned* out, n, key, offset) writes out[0, n).
    unsafe { backend.launch("philox_words", cfg, &mut args) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Random123 known-answer vectors for Philox4x32-10 (its kat_vectors file).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_block([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(philox4x32(0, 0), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(
            philox4x32_block([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_block([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }
}
