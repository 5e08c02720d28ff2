// random.cu: counter-based random numbers (Philox4x32-10, Salmon et al., SC'11), the generator
// of cuRAND's and PyTorch's CUDA random ops.
//
// Element i of a launch takes word (i mod 4) of Philox(counter = offset + i / 4, key). The
// values depend only on (key, offset, i), never on the grid or block shape, so a seed gives the
// same tensor on every GPU and on the emulator, and the Rust reference
// (`stapes_kernels::cuda::random::philox4x32`) reproduces every word. One thread computes one
// counter's four words and writes up to four consecutive elements (grid-stride over counters).
//
// Uniform [lo, hi): u = (w >> 8) * 2^-24 in [0, 1) (24 random bits, every f32 value exact);
// f64 takes 53 bits from two words: element i uses counter offset + i / 2, words 2(i mod 2) and
// 2(i mod 2)+1.
// Normal: Box-Muller on the word pairs (w0, w1) and (w2, w3): u1 = ((w >> 8) + 1) * 2^-24 in
// (0, 1], u2 = (w >> 8) * 2^-24, r = sqrt(-2 ln u1); even words give r cos(2 pi u2), odd words
// r sin(2 pi u2). Computed in f32 with the accurate logf/cosf/sinf. f64 uses counter offset + i / 2
// per pair of elements, u1 = 1 - unit53(w0, w1) in (0, 1] and u2 = unit53(w2, w3), in double.
// Bernoulli: out = (u < p[i]) for the uniform u of element i.
//
// Launch: 1-D, block 256, grid min(ceil(counters / 256), 4 * SMs); no shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

struct Words {
    unsigned w[4];
};

__device__ __forceinline__ void mulhilo(unsigned a, unsigned b, unsigned& hi, unsigned& lo) {
    const unsigned long long p = (unsigned long long)a * b;
    hi = (unsigned)(p >> 32);
    lo = (unsigned)p;
}

__device__ __forceinline__ Words philox(unsigned long long counter, unsigned long long key) {
    unsigned c0 = (unsigned)counter, c1 = (unsigned)(counter >> 32), c2 = 0u, c3 = 0u;
    unsigned k0 = (unsigned)key, k1 = (unsigned)(key >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned hi0, lo0, hi1, lo1;
        mulhilo(0xD2511F53u, c0, hi0, lo0);
        mulhilo(0xCD9E8D57u, c2, hi1, lo1);
        const unsigned n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    Words r;
    r.w[0] = c0;
    r.w[1] = c1;
    r.w[2] = c2;
    r.w[3] = c3;
    return r;
}

__device__ __forceinline__ float unit24(unsigned w) { return (float)(w >> 8) * 5.9604644775390625e-8f; }
__device__ __forceinline__ float unit24_open0(unsigned w) {
    return (float)((w >> 8) + 1u) * 5.9604644775390625e-8f;
}
__device__ __forceinline__ double unit53(unsigned a, unsigned b) {
    const unsigned long long bits = (((unsigned long long)a << 32) | b) >> 11;
    return (double)bits * 1.1102230246251565e-16;
}

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ unsigned long long grid_start() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned long long grid_stride() { return (unsigned long long)gridDim.x * blockDim.x; }

template <class T>
__device__ __forceinline__ void uniform(T* out, unsigned long long n, unsigned long long key, unsigned long long offset,
                                        float lo, float hi) {
    const unsigned long long counters = (n + 3) / 4;
    for (unsigned long long c = grid_start(); c < counters; c += grid_stride()) {
        const Words r = philox(offset + c, key);
        for (int j = 0; j < 4; ++j) {
            const unsigned long long i = c * 4 + j;
            if (i < n) out[i] = from_f32<T>(lo + (hi - lo) * unit24(r.w[j]));
        }
    }
}

template <class T>
__device__ __forceinline__ void normal(T* out, unsigned long long n, unsigned long long key, unsigned long long offset,
                                       float mean, float std) {
    const unsigned long long counters = (n + 3) / 4;
    for (unsigned long long c = grid_start(); c < counters; c += grid_stride()) {
        const Words r = philox(offset + c, key);
        for (int p = 0; p < 2; ++p) {
            const float radius = sqrtf(-2.0f * logf(unit24_open0(r.w[2 * p])));
            const float theta = 6.2831853071795864769f * unit24(r.w[2 * p + 1]);
            const unsigned long long i = c * 4 + 2 * p;
            if (i < n) out[i] = from_f32<T>(mean + std * radius * cosf(theta));
            if (i + 1 < n) out[i + 1] = from_f32<T>(mean + std * radius * sinf(theta));
        }
    }
}

// A probability outside [0, 1] (or NaN) sets *bad = 1 and stores itself in *bad_value (plain
// stores: when several threads find one, any of them may win, and every candidate is bad).
template <class T>
__device__ __forceinline__ void bernoulli(const T* p, T* out, unsigned* bad, T* bad_value, unsigned long long n,
                                          unsigned long long key, unsigned long long offset) {
    const unsigned long long counters = (n + 3) / 4;
    for (unsigned long long c = grid_start(); c < counters; c += grid_stride()) {
        const Words r = philox(offset + c, key);
        for (int j = 0; j < 4; ++j) {
            const unsigned long long i = c * 4 + j;
            if (i < n) {
                const float pi = to_f32(p[i]);
                if (!(pi >= 0.0f && pi <= 1.0f)) {
                    *bad = 1u;
                    *bad_value = p[i];
                }
                out[i] = from_f32<T>(unit24(r.w[j]) < pi ? 1.0f : 0.0f);
            }
        }
    }
}

}  // namespace

// Every Philox word of counters offset .. offset + n/4 (for the reference test): out[4c + j].
extern "C" __global__ void philox_words(unsigned* out, unsigned long long n, unsigned long long key,
                                       unsigned long long offset) {
    const unsigned long long counters = (n + 3) / 4;
    for (unsigned long long c = grid_start(); c < counters; c += grid_stride()) {
        const Words r = philox(offset + c, key);
        for (int j = 0; j < 4; ++j) {
            if (c * 4 + j < n) out[c * 4 + j] = r.w[j];
        }
    }
}
extern "C" __global__ void rand_uniform_f32(float* out, unsigned long long n, unsigned long long key,
                                            unsigned long long offset, float lo, float hi) {
    uniform<float>(out, n, key, offset, lo, hi);
}
extern "C" __global__ void rand_normal_f32(float* out, unsigned long long n, unsigned long long key,
                                           unsigned long long offset, float mean, float std) {
    normal<float>(out, n, key, offset, mean, std);
}
extern "C" __global__ void rand_bernoulli_f32(const float* p, float* out, unsigned* bad, float* bad_value,
                                              unsigned long long n, unsigned long long key, unsigned long long offset) {
    bernoulli<float>(p, out, bad, bad_value, n, key, offset);
}
extern "C" __global__ void rand_uniform_f16(__half* out, unsigned long long n, unsigned long long key,
                                            unsigned long long offset, float lo, float hi) {
    uniform<__half>(out, n, key, offset, lo, hi);
}
extern "C" __global__ void rand_normal_f16(__half* out, unsigned long long n, unsigned long long key,
                                           unsigned long long offset, float mean, float std) {
    normal<__half>(out, n, key, offset, mean, std);
}
extern "C" __global__ void rand_bernoulli_f16(const __half* p, __half* out, unsigned* bad, __half* bad_value,
                                              unsigned long long n, unsigned long long key, unsigned long long offset) {
    bernoulli<__half>(p, out, bad, bad_value, n, key, offset);
}
extern "C" __global__ void rand_uniform_bf16(__nv_bfloat16* out, unsigned long long n, unsigned long long key,
                                            unsigned long long offset, float lo, float hi) {
    uniform<__nv_bfloat16>(out, n, key, offset, lo, hi);
}
extern "C" __global__ void rand_normal_bf16(__nv_bfloat16* out, unsigned long long n, unsigned long long key,
                                           unsigned long long offset, float mean, float std) {
    normal<__nv_bfloat16>(out, n, key, offset, mean, std);
}
extern "C" __global__ void rand_bernoulli_bf16(const __nv_bfloat16* p, __nv_bfloat16* out, unsigned* bad, __nv_bfloat16* bad_value,
                                              unsigned long long n, unsigned long long key, unsigned long long offset) {
    bernoulli<__nv_bfloat16>(p, out, bad, bad_value, n, key, offset);
}
// f64: 53-bit uniforms from two words per element; normals in double.
extern "C" __global__ void rand_uniform_f64(double* out, unsigned long long n, unsigned long long key,
                                            unsigned long long offset, double lo, double hi) {
    const unsigned long long counters = (n + 1) / 2;
    for (unsigned long long c = grid_start(); c < counters; c += grid_stride()) {
        const Words r = philox(offset + c, key);
        for (int j = 0; j < 2; ++j) {
            const unsigned long long i = c * 2 + j;
            if (i < n) out[i] = lo + (hi - lo) * unit53(r.w[2 * j], r.w[2 * j + 1]);
        }
    }
}
extern "C" __global__ void rand_normal_f64(double* out, unsigned long long n, unsigned long long key,
                                           unsigned long long offset, double mean, double std) {
    const unsigned long long counters = (n + 1) / 2;
    for (unsigned long long c = grid_start(); c < counters; c += grid_stride()) {
        const Words r = philox(offset + c, key);
        const double u1 = 1.0 - unit53(r.w[0], r.w[1]);  // (0, 1]
        const double u2 = unit53(r.w[2], r.w[3]);
        const double radius = sqrt(-2.0 * log(u1)), theta = 6.283185307179586476925 * u2;
        const unsigned long long i = c * 2;
        if (i < n) out[i] = mean + std * radius * cos(theta);
        if (i + 1 < n) out[i + 1] = mean + std * radius * sin(theta);
    }
}
extern "C" __global__ void rand_bernoulli_f64(const double* p, double* out, unsigned* bad, double* bad_value,
                                              unsigned long long n, unsigned long long key, unsigned long long offset) {
    const unsigned long long counters = (n + 1) / 2;
    for (unsigned long long c = grid_start(); c < counters; c += grid_stride()) {
        const Words r = philox(offset + c, key);
        for (int j = 0; j < 2; ++j) {
            const unsigned long long i = c * 2 + j;
            if (i < n) {
                if (!(p[i] >= 0.0 && p[i] <= 1.0)) {
                    *bad = 1u;
                    *bad_value = p[i];
                }
                out[i] = unit53(r.w[2 * j], r.w[2 * j + 1]) < p[i] ? 1.0 : 0.0;
            }
        }
    }
}
