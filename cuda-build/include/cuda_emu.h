// cuda_emu.h: the device-side half of stapes' CUDA emulation shim.
//
// kernels/cuda/*.cu are compiled twice: by NVRTC for the GPU, and by the host C++ compiler
// (C++17, -DSTAPES_EMU) against this header for the CPU, so `cargo test` runs the very same
// kernel source on a machine with no GPU. build.rs makes one translation unit per .cu:
//
//     #include "cuda_emu.h"
//     #include ".../kernels/cuda/<family>.cu"
//     STAPES_EMU_EXPORT(<kernel>)   // once per `extern "C" __global__` kernel found in the file
//
// What this header maps (the scheduler behind it is runtime.cpp):
// * `__global__`/`__device__`/`__forceinline__`/`__launch_bounds__` are plain C++ functions.
// * Each CUDA thread of a block is a fiber (ucontext) on one OS thread; `threadIdx` reads the
//   running fiber's slot, `blockIdx`/`blockDim`/`gridDim` the block being run.
// * `__shared__` is `thread_local`: all fibers of a block run on one OS thread, so they share
//   it, and each OS thread runs one block at a time. Block-scope `thread_local` is static, which
//   is what a `__shared__` array inside a kernel is. `extern __shared__ T name[]` (dynamic shared
//   memory) becomes `extern thread_local T name[]`; build.rs defines every such name once, in a
//   generated file, as a STAPES_EMU_MAX_DYNAMIC_SMEM-byte buffer filled with 0xff (NaN for
//   floats) before each block, so reading shared memory nobody wrote shows up. So declare
//   `extern __shared__` arrays in functions outside any namespace (the name must be global),
//   and use one element type per name within a .cu file (as CUDA requires anyway).
// * `__syncthreads()` and every warp collective (`__shfl*_sync`, `__ballot_sync`, `__all_sync`,
//   `__any_sync`, `__syncwarp`) suspend the fiber; the scheduler completes them when every
//   participant has arrived (see runtime.cpp for the exact rules and the random schedule).
// * Atomics use the compiler's __atomic builtins (blocks may run on several OS threads at once).
// * `__half`/`__nv_bfloat16` are 16-bit structs with round-to-nearest-even conversions, bit
//   compatible with Rust's `half::f16`/`half::bf16`.
//
// Not emulated (a kernel using them fails to compile here, which is the intended signal):
// `__constant__`, textures, cooperative groups, `__syncthreads_count/and/or`, `__match_*_sync`,
// tensor-core intrinsics, inline PTX. Add them here when a kernel needs them.
#ifndef STAPES_CUDA_EMU_H
#define STAPES_CUDA_EMU_H

#include <math.h>

#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

#ifndef STAPES_EMU
#define STAPES_EMU 1
#endif

// ---------------------------------------------------------------------------------------------
// Declaration specifiers
// ---------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ thread_local
// __restrict__ is already a GCC/Clang keyword.

/// Largest dynamic shared memory (bytes) a launch may ask for: the 48 KiB every GPU gives without
/// an opt-in attribute, plus room for kernels that opt in on sm_80+ (up to 163/227 KiB there).
#define STAPES_EMU_MAX_DYNAMIC_SMEM (96 * 1024)

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

static constexpr int warpSize = 32;

namespace stapes_emu {

/// Per-CUDA-thread (per-fiber) state visible to kernel code.
struct ThreadState {
    uint3 thread_idx;
};

/// Per-block state visible to kernel code.
struct BlockState {
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};

// Set by the scheduler before it resumes a fiber. `inline` (C++17) so every translation unit
// sees the constant initialiser and accesses them directly (no TLS wrapper call).
inline thread_local ThreadState* tls_thread = nullptr;
inline thread_local BlockState* tls_block = nullptr;

/// The warp collectives the scheduler knows how to complete.
enum WarpOp : int {
    WARP_SHFL_IDX = 0,
    WARP_SHFL_UP = 1,
    WARP_SHFL_DOWN = 2,
    WARP_SHFL_XOR = 3,
    WARP_BALLOT = 4,
    WARP_ALL = 5,
    WARP_ANY = 6,
    WARP_SYNC = 7,
};

// Implemented in runtime.cpp.
void block_barrier();
std::uint64_t warp_collective(int op, unsigned mask, std::uint64_t value, int arg, int width);
unsigned active_mask();

template <class T>
__forceinline__ std::uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <class T>
__forceinline__ T from_bits(std::uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

}  // namespace stapes_emu

#define threadIdx (::stapes_emu::tls_thread->thread_idx)
#define blockIdx (::stapes_emu::tls_block->block_idx)
#define blockDim (::stapes_emu::tls_block->block_dim)
#define gridDim (::stapes_emu::tls_block->grid_dim)

// ---------------------------------------------------------------------------------------------
// Synchronisation and warp collectives
// ---------------------------------------------------------------------------------------------
__forceinline__ void __syncthreads() { ::stapes_emu::block_barrier(); }
__forceinline__ void __syncwarp(unsigned mask = 0xffffffffu) {
    ::stapes_emu::warp_collective(::stapes_emu::WARP_SYNC, mask, 0, 0, 32);
}
// Memory fences: fibers of a block share one OS thread; across blocks a full fence is enough.
__forceinline__ void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
__forceinline__ void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
__forceinline__ unsigned __activemask() { return ::stapes_emu::active_mask(); }

template <class T>
__forceinline__ T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    using namespace ::stapes_emu;
    return from_bits<T>(warp_collective(WARP_SHFL_IDX, mask, to_bits(var), src_lane, width));
}
template <class T>
__forceinline__ T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    using namespace ::stapes_emu;
    return from_bits<T>(warp_collective(WARP_SHFL_UP, mask, to_bits(var), (int)delta, width));
}
template <class T>
__forceinline__ T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    using namespace ::stapes_emu;
    return from_bits<T>(warp_collective(WARP_SHFL_DOWN, mask, to_bits(var), (int)delta, width));
}
template <class T>
__forceinline__ T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    using namespace ::stapes_emu;
    return from_bits<T>(warp_collective(WARP_SHFL_XOR, mask, to_bits(var), lane_mask, width));
}
__forceinline__ unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)::stapes_emu::warp_collective(::stapes_emu::WARP_BALLOT, mask, pred != 0, 0, 32);
}
__forceinline__ int __all_sync(unsigned mask, int pred) {
    return (int)::stapes_emu::warp_collective(::stapes_emu::WARP_ALL, mask, pred != 0, 0, 32);
}
__forceinline__ int __any_sync(unsigned mask, int pred) {
    return (int)::stapes_emu::warp_collective(::stapes_emu::WARP_ANY, mask, pred != 0, 0, 32);
}

// ---------------------------------------------------------------------------------------------
// Half precision: storage types with round-to-nearest-even conversions (as __float2half_rn)
// ---------------------------------------------------------------------------------------------
namespace stapes_emu {

inline std::uint32_t f32_bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float f32_from_bits(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline unsigned short f32_to_f16_rn(float f) {
    const std::uint32_t x = f32_bits(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {  // inf, or NaN (kept quiet, top payload bits kept)
        return (unsigned short)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    }
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                                          // below 2^-14: subnormal half
        if (ax < 0x33000000u) return (unsigned short)sign;           // below 2^-25: zero
        const std::uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const std::uint32_t shift = 126u - e;  // value = m * 2^(e-150); half units are 2^-24
        std::uint32_t r = m >> shift;
        const std::uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (r & 1u))) r++;
        return (unsigned short)(sign | r);
    }
    std::uint32_t r = (ax >> 13) - (112u << 10);  // rebias the exponent 127 -> 15
    const std::uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;  // a carry rounds into the exponent
    return (unsigned short)(sign | r);
}

inline float f16_to_f32(unsigned short h) {
    const std::uint32_t sign = (std::uint32_t)(h & 0x8000u) << 16;
    const std::uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float v = std::ldexp((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13));
    return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

inline unsigned short f32_to_bf16_rn(float f) {
    const std::uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);  // quiet NaN
    return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_to_f32(unsigned short b) { return f32_from_bits((std::uint32_t)b << 16); }

}  // namespace stapes_emu

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(::stapes_emu::f32_to_f16_rn(f)) {}
    __half(double d) : __x(::stapes_emu::f32_to_f16_rn((float)d)) {}
    operator float() const { return ::stapes_emu::f16_to_f32(__x); }
};

struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(::stapes_emu::f32_to_bf16_rn(f)) {}
    __nv_bfloat16(double d) : __x(::stapes_emu::f32_to_bf16_rn((float)d)) {}
    operator float() const { return ::stapes_emu::bf16_to_f32(__x); }
};

static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "half types must be 2 bytes");
static_assert(std::is_trivially_default_constructible<__half>::value, "__shared__ __half needs no init");

__forceinline__ float __half2float(__half h) { return ::stapes_emu::f16_to_f32(h.__x); }
__forceinline__ __half __float2half(float f) {
    __half h;
    h.__x = ::stapes_emu::f32_to_f16_rn(f);
    return h;
}
__forceinline__ __half __float2half_rn(float f) { return __float2half(f); }
__forceinline__ float __bfloat162float(__nv_bfloat16 b) { return ::stapes_emu::bf16_to_f32(b.__x); }
__forceinline__ __nv_bfloat16 __float2bfloat16(float f) {
    __nv_bfloat16 b;
    b.__x = ::stapes_emu::f32_to_bf16_rn(f);
    return b;
}
__forceinline__ __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
__forceinline__ unsigned short __half_as_ushort(__half h) { return h.__x; }
__forceinline__ __half __ushort_as_half(unsigned short u) {
    __half h;
    h.__x = u;
    return h;
}
__forceinline__ unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
__forceinline__ __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
    __nv_bfloat16 b;
    b.__x = u;
    return b;
}

// ---------------------------------------------------------------------------------------------
// Math intrinsics. The fast variants (__expf, ...) are the accurate libm functions here; tests
// compare with tolerances, so kernels must not depend on the fast versions' exact error.
// ---------------------------------------------------------------------------------------------
__forceinline__ float __expf(float x) { return expf(x); }
__forceinline__ float __logf(float x) { return logf(x); }
__forceinline__ float __sinf(float x) { return sinf(x); }
__forceinline__ float __cosf(float x) { return cosf(x); }
__forceinline__ float __powf(float x, float y) { return powf(x, y); }
__forceinline__ float __fdividef(float x, float y) { return x / y; }
__forceinline__ float __frcp_rn(float x) { return 1.0f / x; }
__forceinline__ float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
__forceinline__ float rsqrtf(float x) { return 1.0f / sqrtf(x); }
__forceinline__ double rsqrt(double x) { return 1.0 / sqrt(x); }
__forceinline__ float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
// Arithmetic with an explicit rounding that the compiler may not contract into an FMA (nvcc and
// NVRTC fuse `a * b + c` by default; these keep two roundings, as the CPU reference does).
// The emulator is compiled without FMA instructions, so plain operators round the same way.
__forceinline__ float __fmul_rn(float a, float b) { return a * b; }
__forceinline__ float __fadd_rn(float a, float b) { return a + b; }
__forceinline__ double __dmul_rn(double a, double b) { return a * b; }
__forceinline__ double __dadd_rn(double a, double b) { return a + b; }
// Four signed 8-bit products of the bytes of a and b (lowest byte first) added to c, as the
// `int` overload of CUDA's __dp4a (sm_61 and later).
__forceinline__ int __dp4a(int a, int b, int c) {
    for (int q = 0; q < 4; ++q) {
        c += (int)(signed char)((unsigned)a >> (8 * q)) * (int)(signed char)((unsigned)b >> (8 * q));
    }
    return c;
}
__forceinline__ int __float_as_int(float f) { return ::stapes_emu::from_bits<int>(::stapes_emu::f32_bits(f)); }
__forceinline__ unsigned __float_as_uint(float f) { return ::stapes_emu::f32_bits(f); }
__forceinline__ float __int_as_float(int i) { return ::stapes_emu::f32_from_bits((std::uint32_t)i); }
__forceinline__ float __uint_as_float(unsigned u) { return ::stapes_emu::f32_from_bits(u); }
__forceinline__ int __popc(unsigned x) { return __builtin_popcount(x); }
__forceinline__ int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
__forceinline__ int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
__forceinline__ int __ffs(int x) { return __builtin_ffs(x); }
template <class T>
__forceinline__ T __ldg(const T* p) {
    return *p;
}

// Vector types (16-byte aligned, as CUDA's, so a `float4` load is one 128-bit access there).
struct alignas(16) float4 {
    float x, y, z, w;
};
__forceinline__ float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// CUDA's global min/max overloads (the host has only std::min/std::max).
#define STAPES_EMU_MINMAX(T)                                        \
    __forceinline__ T min(T a, T b) { return b < a ? b : a; }       \
    __forceinline__ T max(T a, T b) { return a < b ? b : a; }
STAPES_EMU_MINMAX(int)
STAPES_EMU_MINMAX(unsigned int)
STAPES_EMU_MINMAX(long long)
STAPES_EMU_MINMAX(unsigned long long)
#undef STAPES_EMU_MINMAX
__forceinline__ float min(float a, float b) { return fminf(a, b); }
__forceinline__ float max(float a, float b) { return fmaxf(a, b); }
__forceinline__ double min(double a, double b) { return fmin(a, b); }
__forceinline__ double max(double a, double b) { return fmax(a, b); }
__forceinline__ unsigned int min(int a, unsigned int b) { return min((unsigned int)a, b); }
__forceinline__ unsigned int min(unsigned int a, int b) { return min(a, (unsigned int)b); }
__forceinline__ unsigned int max(int a, unsigned int b) { return max((unsigned int)a, b); }
__forceinline__ unsigned int max(unsigned int a, int b) { return max(a, (unsigned int)b); }

// ---------------------------------------------------------------------------------------------
// Atomics (relaxed, like CUDA's). Float adds are compare-and-swap loops on the bit pattern.
// ---------------------------------------------------------------------------------------------
namespace stapes_emu {

template <class Bits, class T, class F>
__forceinline__ T atomic_update(T* address, F update) {
    static_assert(sizeof(Bits) == sizeof(T), "atomic_update: size mismatch");
    Bits* p = reinterpret_cast<Bits*>(address);
    Bits old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        const T old_value = from_bits<T>(old_bits);
        const T new_value = update(old_value);
        Bits new_bits;
        std::memcpy(&new_bits, &new_value, sizeof(T));
        if (__atomic_compare_exchange_n(p, &old_bits, new_bits, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            return old_value;
        }
    }
}

}  // namespace stapes_emu

#define STAPES_EMU_INT_ATOMICS(T)                                                                    \
    __forceinline__ T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }    \
    __forceinline__ T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }    \
    __forceinline__ T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }    \
    __forceinline__ T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }      \
    __forceinline__ T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }    \
    __forceinline__ T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }  \
    __forceinline__ T atomicMax(T* a, T v) {                                                         \
        return ::stapes_emu::atomic_update<T>(a, [v](T o) { return o < v ? v : o; });                \
    }                                                                                                \
    __forceinline__ T atomicMin(T* a, T v) {                                                         \
        return ::stapes_emu::atomic_update<T>(a, [v](T o) { return v < o ? v : o; });                \
    }                                                                                                \
    __forceinline__ T atomicCAS(T* a, T compare, T v) {                                              \
        __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);      \
        return compare;                                                                              \
    }
STAPES_EMU_INT_ATOMICS(int)
STAPES_EMU_INT_ATOMICS(unsigned int)
STAPES_EMU_INT_ATOMICS(unsigned long long)
#undef STAPES_EMU_INT_ATOMICS
__forceinline__ long long atomicMax(long long* a, long long v) {
    return ::stapes_emu::atomic_update<long long>(a, [v](long long o) { return o < v ? v : o; });
}
__forceinline__ long long atomicMin(long long* a, long long v) {
    return ::stapes_emu::atomic_update<long long>(a, [v](long long o) { return v < o ? v : o; });
}
__forceinline__ unsigned short atomicCAS(unsigned short* a, unsigned short compare, unsigned short v) {
    __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
__forceinline__ float atomicAdd(float* a, float v) {
    return ::stapes_emu::atomic_update<std::uint32_t>(a, [v](float o) { return o + v; });
}
__forceinline__ double atomicAdd(double* a, double v) {
    return ::stapes_emu::atomic_update<std::uint64_t>(a, [v](double o) { return o + v; });
}
__forceinline__ float atomicExch(float* a, float v) {
    return ::stapes_emu::from_bits<float>(
        __atomic_exchange_n(reinterpret_cast<std::uint32_t*>(a), ::stapes_emu::f32_bits(v), __ATOMIC_RELAXED));
}
__forceinline__ __half atomicAdd(__half* a, __half v) {
    return ::stapes_emu::atomic_update<unsigned short>(a, [v](__half o) { return __float2half(float(o) + float(v)); });
}
__forceinline__ __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
    return ::stapes_emu::atomic_update<unsigned short>(
        a, [v](__nv_bfloat16 o) { return __float2bfloat16(float(o) + float(v)); });
}

// ---------------------------------------------------------------------------------------------
// Launch glue: a C entry point per kernel, cudaLaunchKernel's `void** args` convention.
// ---------------------------------------------------------------------------------------------
extern "C" {
/// Launch configuration and schedule, shared with Rust (`src/cuda/emu.rs`, `EmuLaunch`).
struct stapes_emu_launch {
    unsigned int grid[3];
    unsigned int block[3];
    unsigned int shared_mem_bytes;
    /// 0: fibers run in thread order between sync points; 1: in a shuffled order.
    unsigned int random_schedule;
    unsigned long long seed;
    /// OS threads to spread the blocks over (0: the runtime's default).
    unsigned int threads;
};
}

namespace stapes_emu {

/// Runs `invoke(closure)` once per CUDA thread of the launch; 0 on success, else an error code
/// with the message kept for `stapes_emu_last_error()` (runtime.cpp).
int run_launch(const char* kernel, const stapes_emu_launch* cfg, void (*invoke)(void*), void* closure);
/// Records a launch error for the calling thread and returns its code.
int launch_error(const char* kernel, const char* message);

template <class... Args, std::size_t... I>
__forceinline__ void call_kernel(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
    // Each fiber receives its own copy of every argument, as each CUDA thread does.
    kernel(*static_cast<typename std::remove_reference<Args>::type*>(args[I])...);
    (void)args;
}

template <class... Args>
int launch(const char* name, void (*kernel)(Args...), const stapes_emu_launch* cfg, void** args,
           const std::size_t* arg_sizes, std::size_t n_args) {
    // The Rust side passes the size of every argument: a cheap check that it matches the kernel's
    // parameter list (the GPU driver does no such check).
    const std::size_t sizes[] = {sizeof(Args)..., 0};
    if (n_args != sizeof...(Args)) return launch_error(name, "wrong number of kernel arguments");
    for (std::size_t i = 0; i < n_args; i++) {
        if (arg_sizes[i] != sizes[i]) return launch_error(name, "a kernel argument has the wrong size");
    }
    struct Closure {
        void (*kernel)(Args...);
        void** args;
    } closure{kernel, args};
    return run_launch(
        name, cfg,
        [](void* p) {
            auto* c = static_cast<Closure*>(p);
            call_kernel(c->kernel, c->args, std::index_sequence_for<Args...>{});
        },
        &closure);
}

}  // namespace stapes_emu

/// Exports `extern "C" int stapes_emu_launch_<kernel>(cfg, args, arg_sizes, n_args)`.
#define STAPES_EMU_EXPORT(kernel)                                                                        \
    extern "C" int stapes_emu_launch_##kernel(const stapes_emu_launch* cfg, void** args,                 \
                                              const std::size_t* arg_sizes, std::size_t n_args) {        \
        return ::stapes_emu::launch(#kernel, &kernel, cfg, args, arg_sizes, n_args);                     \
    }

#endif  // STAPES_CUDA_EMU_H
