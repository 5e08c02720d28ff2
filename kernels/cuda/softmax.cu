// softmax.cu: softmax and log-softmax over the last dim of a contiguous [rows, n] matrix, and
// their backward passes; f16, bf16 and f32 (accumulated in f32, each output rounded once) and f64
// (in double). The f32 forward kernels keep their names (softmax_last_f32, log_softmax_last_f32).
//
//   softmax:     y_j = exp(x_j - m) / s          with m = max_j x_j, s = sum_j exp(x_j - m)
//   log_softmax: y_j = x_j - m - log(s)
//
// Algorithm, one block per row (a grid-stride loop over rows when rows > gridDim.x):
//   1. one pass over the row keeps an online (m, s) per thread: a new maximum rescales the
//      running sum, s = s * exp(m_old - m_new) + 1, so the row is read once for both statistics;
//   2. (m, s) pairs merge with (m, s) + (m', s') = (M, s e^(m - M) + s' e^(m' - M)), M = max:
//      across the warp with __shfl_xor_sync, then across warps through shared memory; every warp
//      merges all warp partials itself, so every thread ends with the row's (m, s) after one
//      barrier, and a second barrier protects the partials from the next row;
//   3. a second pass writes y (the row is usually still in L2).
// A row of at most kCache (8) elements per thread takes the register path instead: each thread
// loads its elements into registers in one unrolled burst (all loads in flight at once), takes
// their max and sum of exp, and writes y from the registers: the row is read once. (On an H100
// the two-pass loop reached 30% of the device-to-device copy's bandwidth on [65536, 1024].)
// Special values match the CPU reference: a row that is all -inf (fully masked) gives NaN; a
// NaN anywhere makes the row NaN; -inf entries contribute 0.
//
// Launch: gridDim.x = min(rows, cap), blockDim.x a multiple of 32 in [32, 1024] (the launcher
// uses min(256, n rounded up to 32)); 256 bytes of static shared memory. Rows of at most 1024
// elements take the warp-per-row kernels instead ([log_]softmax_warp_<T>, softmax_warp_rows):
// blockDim.x = 256 (8 rows per block), gridDim.x = min(ceil(rows / 8), 8 * SMs).
// Memory traffic: reads rows * n elements (2 * rows * n off the register path, the second read
// mostly from L2), writes rows * n.
//
// Backward, from the forward output y and the upstream gradient g (CPU reference:
// softmax_backward_last in kernels/src/cpu/softmax.rs):
//   softmax:     gx_j = y_j (g_j - sum_k g_k y_k)
//   log_softmax: gx_j = g_j - exp(y_j) sum_k g_k
// one block per row: a block sum (warp shuffles, then shared memory, every warp merging the warp
// partials so every thread holds the total), then one pass writing gx. Same launch shape.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }

template <class A>
__device__ __forceinline__ A neg_inf() {
    return (A)__int_as_float(0xff800000);
}

// Merges (m2, s2) into (m, s). A part whose max is -inf holds only -inf entries (s = 0): it adds
// 0 (and must not compute exp(-inf - -inf) = NaN), unless it saw a NaN (s = NaN, kept: a thread
// whose only finite-or-not entries are NaN still has m = -inf).
template <class A>
__device__ __forceinline__ void merge(A& m, A& s, A m2, A s2) {
    const A mm = m > m2 ? m : m2;
    const A a = (m == neg_inf<A>() && s == (A)0) ? (A)0 : s * acc_exp(m - mm);
    const A b = (m2 == neg_inf<A>() && s2 == (A)0) ? (A)0 : s2 * acc_exp(m2 - mm);
    m = mm;
    s = a + b;
}

template <class A>
__device__ __forceinline__ void warp_merge(A& m, A& s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const A m2 = __shfl_xor_sync(kFullMask, m, offset);
        const A s2 = __shfl_xor_sync(kFullMask, s, offset);
        merge(m, s, m2, s2);
    }
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// Elements per thread a row may have to take the register path: the row is loaded once, every
// load issued before the first use (an unrolled loop), and written from the registers.
constexpr int kCache = 8;

template <class T, class A, bool kLog>
__device__ __forceinline__ void softmax_rows(const T* x, T* y, unsigned long long rows, unsigned long long n) {
    __shared__ A part_m[32];
    __shared__ A part_s[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const bool cached = n <= (unsigned long long)blockDim.x * kCache;
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * n;
        T* yr = y + row * n;
        A m = neg_inf<A>(), s = (A)0;
        A v[kCache];
        if (cached) {
            // 1a. the thread's elements (j = threadIdx.x + k * blockDim.x) into registers, then
            // their max and the sum of exp(v - max); -inf entries add 0, a NaN makes s NaN
#pragma unroll
            for (int k = 0; k < kCache; ++k) {
                const unsigned long long j = threadIdx.x + (unsigned long long)k * blockDim.x;
                v[k] = j < n ? to_acc(xr[j]) : neg_inf<A>();
            }
#pragma unroll
            for (int k = 0; k < kCache; ++k) m = v[k] > m ? v[k] : m;
#pragma unroll
            for (int k = 0; k < kCache; ++k) {
                if (v[k] != neg_inf<A>()) s += acc_exp(v[k] - m);
            }
        } else {
            // 1b. online max and sum over this thread's elements
            for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
                const A e = to_acc(xr[j]);
                if (e > m) {
                    s = s * acc_exp(m - e) + (A)1;
                    m = e;
                } else if (e != neg_inf<A>()) {
                    s += acc_exp(e - m);  // a NaN e makes s NaN, hence the whole row
                }
            }
        }
        // 2. merge across the warp, then across warps
        warp_merge(m, s);
        if (lane == 0) {
            part_m[warp] = m;
            part_s[warp] = s;
        }
        __syncthreads();
        m = lane < warps ? part_m[lane] : neg_inf<A>();
        s = lane < warps ? part_s[lane] : (A)0;
        warp_merge(m, s);
        __syncthreads();
        // 3. write the row (m = -inf: all entries -inf, the result is NaN as in PyTorch)
        if (kLog) {
            const A shift = m + acc_log(s);
            if (cached) {
#pragma unroll
                for (int k = 0; k < kCache; ++k) {
                    const unsigned long long j = threadIdx.x + (unsigned long long)k * blockDim.x;
                    if (j < n) store(yr + j, v[k] - shift);
                }
            } else {
                for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) store(yr + j, to_acc(xr[j]) - shift);
            }
        } else {
            const A inv = (A)1 / s;
            if (cached) {
#pragma unroll
                for (int k = 0; k < kCache; ++k) {
                    const unsigned long long j = threadIdx.x + (unsigned long long)k * blockDim.x;
                    if (j < n) store(yr + j, acc_exp(v[k] - m) * inv);
                }
            } else {
                for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x)
                    store(yr + j, acc_exp(to_acc(xr[j]) - m) * inv);
            }
        }
    }
}

// Rows of at most 32 * kWarpElems (1024) elements: one warp per row, the row in registers
// (element j = lane + 32 k in v[k]), the max and then the sum of exp(v - max) reduced by warp
// shuffles alone: no shared memory, no barrier, no exp in the reduction chain; the row read once
// and written once. A block of 8 warps takes 8 rows; warps stride over the rows.
constexpr int kWarpElems = 32;

template <class T, class A, bool kLog>
__device__ __forceinline__ void softmax_warp_rows(const T* x, T* y, unsigned long long rows, unsigned long long n) {
    const unsigned lane = threadIdx.x & 31u;
    const unsigned long long per_block = blockDim.x >> 5;
    const unsigned long long stride = (unsigned long long)gridDim.x * per_block;
    for (unsigned long long row = blockIdx.x * per_block + (threadIdx.x >> 5); row < rows; row += stride) {
        const T* xr = x + row * n;
        T* yr = y + row * n;
        A v[kWarpElems];
#pragma unroll
        for (int k = 0; k < kWarpElems; ++k) {
            const unsigned long long j = lane + 32ull * k;
            v[k] = j < n ? to_acc(xr[j]) : neg_inf<A>();
        }
        // the max (NaN entries never win a comparison; they poison the sum below)
        A m = neg_inf<A>();
#pragma unroll
        for (int k = 0; k < kWarpElems; ++k) m = v[k] > m ? v[k] : m;
        for (int offset = 16; offset > 0; offset >>= 1) {
            const A o = __shfl_xor_sync(kFullMask, m, offset);
            m = o > m ? o : m;
        }
        // the sum of exp(v - max): -inf entries (and the padding) add 0, a NaN makes it NaN, and a
        // row of -inf only sums to 0, so its outputs are NaN as in PyTorch
        A s = (A)0;
#pragma unroll
        for (int k = 0; k < kWarpElems; ++k) {
            if (v[k] != neg_inf<A>()) s += acc_exp(v[k] - m);
        }
        s = warp_sum(s);
        if (kLog) {
            const A shift = m + acc_log(s);
#pragma unroll
            for (int k = 0; k < kWarpElems; ++k) {
                const unsigned long long j = lane + 32ull * k;
                if (j < n) store(yr + j, v[k] - shift);
            }
        } else {
            const A inv = (A)1 / s;
#pragma unroll
            for (int k = 0; k < kWarpElems; ++k) {
                const unsigned long long j = lane + 32ull * k;
                if (j < n) store(yr + j, acc_exp(v[k] - m) * inv);
            }
        }
    }
}

template <class T, class A, bool kLog>
__device__ __forceinline__ void softmax_backward_rows(const T* y, const T* g, T* gx, unsigned long long rows,
                                                      unsigned long long n) {
    __shared__ A part[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const bool cached = n <= (unsigned long long)blockDim.x * kCache;
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* yr = y + row * n;
        const T* gr = g + row * n;
        T* gxr = gx + row * n;
        // log: sum g; softmax: sum g * y (rows that fit keep y and g in registers)
        A acc = (A)0;
        A yc[kCache], gc[kCache];
        if (cached) {
#pragma unroll
            for (int k = 0; k < kCache; ++k) {
                const unsigned long long j = threadIdx.x + (unsigned long long)k * blockDim.x;
                yc[k] = j < n ? to_acc(yr[j]) : (A)0;
                gc[k] = j < n ? to_acc(gr[j]) : (A)0;
            }
#pragma unroll
            for (int k = 0; k < kCache; ++k) acc += kLog ? gc[k] : gc[k] * yc[k];
        } else {
            for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x)
                acc += kLog ? to_acc(gr[j]) : to_acc(gr[j]) * to_acc(yr[j]);
        }
        acc = warp_sum(acc);
        if (lane == 0) part[warp] = acc;
        __syncthreads();
        acc = warp_sum(lane < warps ? part[lane] : (A)0);
        __syncthreads();
        if (cached) {
#pragma unroll
            for (int k = 0; k < kCache; ++k) {
                const unsigned long long j = threadIdx.x + (unsigned long long)k * blockDim.x;
                if (j < n) store(gxr + j, kLog ? gc[k] - acc_exp(yc[k]) * acc : yc[k] * (gc[k] - acc));
            }
        } else {
            for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
                const A yv = to_acc(yr[j]), gv = to_acc(gr[j]);
                store(gxr + j, kLog ? gv - acc_exp(yv) * acc : yv * (gv - acc));
            }
        }
    }
}

}  // namespace

// y = softmax(x) / log_softmax(x) over each row of the contiguous [rows, n] matrix x.
extern "C" __global__ void softmax_last_f32(const float* x, float* y, unsigned long long rows, unsigned long long n) {
    softmax_rows<float, float, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_last_f32(const float* x, float* y, unsigned long long rows,
                                                unsigned long long n) {
    softmax_rows<float, float, true>(x, y, rows, n);
}
extern "C" __global__ void softmax_last_f16(const __half* x, __half* y, unsigned long long rows, unsigned long long n) {
    softmax_rows<__half, float, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_last_f16(const __half* x, __half* y, unsigned long long rows,
                                                unsigned long long n) {
    softmax_rows<__half, float, true>(x, y, rows, n);
}
extern "C" __global__ void softmax_last_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, unsigned long long rows,
                                             unsigned long long n) {
    softmax_rows<__nv_bfloat16, float, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_last_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, unsigned long long rows,
                                                 unsigned long long n) {
    softmax_rows<__nv_bfloat16, float, true>(x, y, rows, n);
}
extern "C" __global__ void softmax_last_f64(const double* x, double* y, unsigned long long rows, unsigned long long n) {
    softmax_rows<double, double, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_last_f64(const double* x, double* y, unsigned long long rows,
                                                unsigned long long n) {
    softmax_rows<double, double, true>(x, y, rows, n);
}

// The same for rows of at most 1024 elements, one warp per row (softmax_warp_rows).
extern "C" __global__ void softmax_warp_f32(const float* x, float* y, unsigned long long rows, unsigned long long n) {
    softmax_warp_rows<float, float, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_warp_f32(const float* x, float* y, unsigned long long rows,
                                                unsigned long long n) {
    softmax_warp_rows<float, float, true>(x, y, rows, n);
}
extern "C" __global__ void softmax_warp_f16(const __half* x, __half* y, unsigned long long rows, unsigned long long n) {
    softmax_warp_rows<__half, float, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_warp_f16(const __half* x, __half* y, unsigned long long rows,
                                                unsigned long long n) {
    softmax_warp_rows<__half, float, true>(x, y, rows, n);
}
extern "C" __global__ void softmax_warp_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, unsigned long long rows,
                                             unsigned long long n) {
    softmax_warp_rows<__nv_bfloat16, float, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_warp_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, unsigned long long rows,
                                                 unsigned long long n) {
    softmax_warp_rows<__nv_bfloat16, float, true>(x, y, rows, n);
}
extern "C" __global__ void softmax_warp_f64(const double* x, double* y, unsigned long long rows, unsigned long long n) {
    softmax_warp_rows<double, double, false>(x, y, rows, n);
}
extern "C" __global__ void log_softmax_warp_f64(const double* x, double* y, unsigned long long rows,
                                                unsigned long long n) {
    softmax_warp_rows<double, double, true>(x, y, rows, n);
}

// gx = the gradient of softmax / log_softmax over each row, from the forward output y and the
// upstream gradient g (all contiguous [rows, n]).
extern "C" __global__ void softmax_backward_last_f32(const float* y, const float* g, float* gx, unsigned long long rows,
                                                     unsigned long long n) {
    softmax_backward_rows<float, float, false>(y, g, gx, rows, n);
}
extern "C" __global__ void log_softmax_backward_last_f32(const float* y, const float* g, float* gx,
                                                         unsigned long long rows, unsigned long long n) {
    softmax_backward_rows<float, float, true>(y, g, gx, rows, n);
}
extern "C" __global__ void softmax_backward_last_f16(const __half* y, const __half* g, __half* gx,
                                                     unsigned long long rows, unsigned long long n) {
    softmax_backward_rows<__half, float, false>(y, g, gx, rows, n);
}
extern "C" __global__ void log_softmax_backward_last_f16(const __half* y, const __half* g, __half* gx,
                                                         unsigned long long rows, unsigned long long n) {
    softmax_backward_rows<__half, float, true>(y, g, gx, rows, n);
}
extern "C" __global__ void softmax_backward_last_bf16(const __nv_bfloat16* y, const __nv_bfloat16* g,
                                                      __nv_bfloat16* gx, unsigned long long rows,
                                                      unsigned long long n) {
    softmax_backward_rows<__nv_bfloat16, float, false>(y, g, gx, rows, n);
}
extern "C" __global__ void log_softmax_backward_last_bf16(const __nv_bfloat16* y, const __nv_bfloat16* g,
                                                          __nv_bfloat16* gx, unsigned long long rows,
                                                          unsigned long long n) {
    softmax_backward_rows<__nv_bfloat16, float, true>(y, g, gx, rows, n);
}
extern "C" __global__ void softmax_backward_last_f64(const double* y, const double* g, double* gx,
                                                     unsigned long long rows, unsigned long long n) {
    softmax_backward_rows<double, double, false>(y, g, gx, rows, n);
}
extern "C" __global__ void log_softmax_backward_last_f64(const double* y, const double* g, double* gx,
                                                         unsigned long long rows, unsigned long long n) {
    softmax_backward_rows<double, double, true>(y, g, gx, rows, n);
}
