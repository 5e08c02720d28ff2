// reduce_nd.cu: the reductions behind the tensor ops sum/mean/max/min/logsumexp/var/std and
// argmax/argmin, for f16, bf16, f32 and f64. The tensor layer permutes the reduced dims last and
// makes the data dense, so every kernel here reduces the rows of a contiguous [rows, n] matrix.
// CPU reference: kernels/src/cpu/reduce.rs (reduce_last, arg_reduce_last).
//
// Accumulation: f16/bf16/f32 in f32 (a half result is rounded once, at the end), f64 in double.
//
// Each reduction is a small state folded over the row, merged across threads, and finalised:
//   sum, mean    (s)               mean = s / n
//   max, min     (m)               a NaN is sticky: any NaN in the row gives NaN (as the CPU)
//   logsumexp    (m, s)            online: a new maximum rescales s; finalised as m + log(s),
//                                  NaN if any NaN, m itself when m is +-inf (all -inf: -inf)
//   var, std     (count, mean, M2) Welford per thread, Chan et al.'s merge; var = M2 / (n - c)
//                                  with the correction c, NaN when n - c <= 0; std = sqrt(var)
// The op is a kernel argument (0 sum, 1 mean, 2 max, 3 min, 4 logsumexp, 5 var, 6 std),
// switched once per launch into a template instance, so the element loop has no op branch.
//
// Kernels (T = f16/bf16/f32/f64, A = its accumulator):
//   reduce_rows_<T>: one block per row (grid-stride over rows): threads fold elements
//     j = tid, tid + blockDim.x, ... (coalesced), states merge across the warp with
//     __shfl_xor_sync and across warps through shared memory, thread 0 finalises and writes.
//   reduce_partial_<T> + reduce_finish_<T>: the grid-level path for few long rows (sum_all of a
//     large tensor): block b of rows * chunks folds chunk b % chunks of row b / chunks and writes
//     its state (3 A values) to partial[3b..3b+3); the finish kernel (one block per row) merges
//     the row's chunk states the same way and finalises. No atomics: deterministic.
//   reduce_cols_<T> and reduce_cols_partial_<T>: a reduction over the middle dim of a contiguous
//     [a, r, b] tensor (the gradient of a broadcast summed over leading dims, batch statistics)
//     without moving the data: one thread per output (i, j) folds x[(i * r + k) * b + j] over k,
//     so consecutive threads read consecutive addresses (coalesced). When a * b outputs leave
//     the GPU idle, blockIdx.y splits r into chunks whose states go to the partial workspace
//     (layout as above, rows = a * b), merged by reduce_finish_<T>. No shared memory.
//   argreduce_rows_<T>: index of the max (want_max) or min of each row, i64; the first index on
//     ties; a NaN counts as the extreme and the first NaN wins (as the CPU and PyTorch).
//
// Launch: column kernels 256 threads, gridDim = (min(ceil(a * b / 256), 65535), chunks);
// row kernels gridDim.x = min(rows, 8 * SMs), blockDim.x a multiple of 32 in [32, 1024]
// (the launcher uses min(256, n rounded up to 32)); partial kernel gridDim.x =
// min(rows * chunks, 65535) (grid-stride), 256 threads, chunks chosen so that about 8 * SMs
// blocks run. Static shared memory: 96 accumulators (384 or 768 bytes)
// for the reductions, 32 values + 32 indices for the arg reductions.
// Memory traffic: reads rows * n elements once, writes rows values (+ 3 * rows * chunks partials).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

enum Op { kSum = 0, kMean = 1, kMax = 2, kMin = 3, kLse = 4, kVar = 5, kStd = 6 };

__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

template <class T>
__device__ __forceinline__ T from_acc(float v);
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_acc<float>(float v) {
    return v;
}

__device__ __forceinline__ void store(__half* p, float v) { *p = from_acc<__half>(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = from_acc<__nv_bfloat16>(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }
__device__ __forceinline__ float acc_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double acc_sqrt(double x) { return sqrt(x); }

template <class A>
__device__ __forceinline__ A pos_inf() {
    return (A)__int_as_float(0x7f800000);
}
template <class A>
__device__ __forceinline__ A neg_inf() {
    return (A)__int_as_float(0xff800000);
}
template <class A>
__device__ __forceinline__ A qnan() {
    return (A)__int_as_float(0x7fc00000);
}

// The running state of one reduction: (s), (m), (m, s) or (count, mean, M2) in a, b, c.
template <class A>
struct State {
    A a, b, c;
};

template <class A, int OP>
__device__ __forceinline__ State<A> state_init() {
    State<A> s;
    s.a = (OP == kMax || OP == kLse) ? neg_inf<A>() : (OP == kMin ? pos_inf<A>() : (A)0);
    s.b = (A)0;
    s.c = (A)0;
    return s;
}

template <class A, int OP>
__device__ __forceinline__ void state_add(State<A>& s, A v) {
    if (OP == kSum || OP == kMean) {
        s.a += v;
    } else if (OP == kMax) {
        s.a = (v != v || v > s.a) ? v : s.a;  // once NaN, no comparison replaces it
    } else if (OP == kMin) {
        s.a = (v != v || v < s.a) ? v : s.a;
    } else if (OP == kLse) {
        // a = running max m, b = sum of exp(x - m). A NaN v makes b NaN for good; v == m
        // (including +inf == +inf and -inf == -inf) adds exp(0) = 1 without computing inf - inf.
        if (v > s.a) {
            s.b = s.b * acc_exp(s.a - v) + (A)1;  // s.a = -inf: s.b is 0 (or NaN) and exp(-inf) = 0
            s.a = v;
        } else if (v == s.a) {
            s.b += (A)1;
        } else {
            s.b += acc_exp(v - s.a);
        }
    } else {  // kVar, kStd: Welford
        s.a += (A)1;
        const A d = v - s.b;
        s.b += d / s.a;
        s.c += d * (v - s.b);
    }
}

template <class A, int OP>
__device__ __forceinline__ void state_merge(State<A>& s, const State<A>& o) {
    if (OP == kSum || OP == kMean) {
        s.a += o.a;
    } else if (OP == kMax) {
        s.a = (o.a != o.a || o.a > s.a) ? o.a : s.a;
    } else if (OP == kMin) {
        s.a = (o.a != o.a || o.a < s.a) ? o.a : s.a;
    } else if (OP == kLse) {
        const A mm = o.a > s.a ? o.a : s.a;
        // a part whose max is the common max keeps its sum unscaled (no inf - inf); a part of
        // -inf entries only has max -inf < mm or sum 0 and adds nothing
        const A x = s.a == mm ? s.b : s.b * acc_exp(s.a - mm);
        const A y = o.a == mm ? o.b : o.b * acc_exp(o.a - mm);
        s.a = mm;
        s.b = x + y;
    } else {
        const A n = s.a + o.a;
        if (o.a == (A)0) return;
        if (s.a == (A)0) {
            s = o;
            return;
        }
        const A delta = o.b - s.b;
        const A fb = o.a / n;
        s.b += delta * fb;
        s.c += o.c + delta * delta * s.a * fb;
        s.a = n;
    }
}

template <class A, int OP>
__device__ __forceinline__ A state_finish(const State<A>& s, unsigned long long n, unsigned long long correction) {
    if (OP == kSum || OP == kMax || OP == kMin) return s.a;
    if (OP == kMean) return s.a / (A)n;  // n = 0: 0 / 0 = NaN, as the CPU
    if (OP == kLse) {
        if (s.b != s.b) return qnan<A>();
        if (s.a == pos_inf<A>() || s.a == neg_inf<A>()) return s.a;
        return s.a + acc_log(s.b);
    }
    const A denom = s.a - (A)correction;
    const A var = denom <= (A)0 ? qnan<A>() : s.c / denom;
    return OP == kStd ? acc_sqrt(var) : var;
}

template <class A, int OP>
__device__ __forceinline__ void warp_merge(State<A>& s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        State<A> o;
        o.a = __shfl_xor_sync(kFullMask, s.a, offset);
        o.b = __shfl_xor_sync(kFullMask, s.b, offset);
        o.c = __shfl_xor_sync(kFullMask, s.c, offset);
        state_merge<A, OP>(s, o);
    }
}

// Merges every thread's state into thread 0's (warp 0 holds the block's state afterwards).
// Ends with a barrier, so `part` may be reused by the caller's next iteration.
template <class A, int OP>
__device__ __forceinline__ State<A> block_merge(State<A> s, A* part) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    warp_merge<A, OP>(s);
    if (lane == 0) {
        part[warp] = s.a;
        part[32 + warp] = s.b;
        part[64 + warp] = s.c;
    }
    __syncthreads();
    if (warp == 0) {
        if (lane < warps) {
            s.a = part[lane];
            s.b = part[32 + lane];
            s.c = part[64 + lane];
        } else {
            s = state_init<A, OP>();
        }
        warp_merge<A, OP>(s);
    }
    __syncthreads();
    return s;
}

template <class T, class A, int OP>
__device__ __forceinline__ void rows_impl(const T* x, T* out, unsigned long long rows, unsigned long long n,
                                          unsigned long long correction, A* part) {
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * n;
        State<A> s = state_init<A, OP>();
        for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) state_add<A, OP>(s, to_acc(xr[j]));
        s = block_merge<A, OP>(s, part);
        if (threadIdx.x == 0) store(out + row, state_finish<A, OP>(s, n, correction));
    }
}

template <class T, class A, int OP>
__device__ __forceinline__ void partial_impl(const T* x, A* partial, unsigned long long rows, unsigned long long n,
                                             unsigned long long chunks, unsigned long long per_chunk, A* part) {
    for (unsigned long long b = blockIdx.x; b < rows * chunks; b += gridDim.x) {
        const unsigned long long row = b / chunks, chunk = b % chunks;
        const T* xr = x + row * n;
        const unsigned long long j0 = chunk * per_chunk;
        const unsigned long long j1 = j0 + per_chunk < n ? j0 + per_chunk : n;
        State<A> s = state_init<A, OP>();
        for (unsigned long long j = j0 + threadIdx.x; j < j1; j += blockDim.x) state_add<A, OP>(s, to_acc(xr[j]));
        s = block_merge<A, OP>(s, part);
        if (threadIdx.x == 0) {
            partial[3 * b] = s.a;
            partial[3 * b + 1] = s.b;
            partial[3 * b + 2] = s.c;
        }
    }
}

template <class T, class A, int OP>
__device__ __forceinline__ void finish_impl(const A* partial, T* out, unsigned long long rows,
                                            unsigned long long chunks, unsigned long long n,
                                            unsigned long long correction, A* part) {
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        State<A> s = state_init<A, OP>();
        for (unsigned long long k = threadIdx.x; k < chunks; k += blockDim.x) {
            const A* p = partial + 3 * (row * chunks + k);
            State<A> o;
            o.a = p[0];
            o.b = p[1];
            o.c = p[2];
            state_merge<A, OP>(s, o);
        }
        s = block_merge<A, OP>(s, part);
        if (threadIdx.x == 0) store(out + row, state_finish<A, OP>(s, n, correction));
    }
}

// The op switch: one template instance per op.
#define STAPES_REDUCE_SWITCH(op, CALL) \
    switch (op) {                      \
        case kSum: CALL(kSum); break;  \
        case kMean: CALL(kMean); break; \
        case kMax: CALL(kMax); break;  \
        case kMin: CALL(kMin); break;  \
        case kLse: CALL(kLse); break;  \
        case kVar: CALL(kVar); break;  \
        case kStd: CALL(kStd); break;  \
        default: break;                \
    }

template <class T, class A>
__device__ __forceinline__ void reduce_rows(const T* x, T* out, unsigned long long rows, unsigned long long n, int op,
                                            unsigned long long correction) {
    __shared__ A part[96];
#define STAPES_CALL(OP) rows_impl<T, A, OP>(x, out, rows, n, correction, part)
    STAPES_REDUCE_SWITCH(op, STAPES_CALL)
#undef STAPES_CALL
}

template <class T, class A>
__device__ __forceinline__ void reduce_partial(const T* x, A* partial, unsigned long long rows, unsigned long long n,
                                               unsigned long long chunks, unsigned long long per_chunk, int op) {
    __shared__ A part[96];
#define STAPES_CALL(OP) partial_impl<T, A, OP>(x, partial, rows, n, chunks, per_chunk, part)
    STAPES_REDUCE_SWITCH(op, STAPES_CALL)
#undef STAPES_CALL
}

template <class T, class A>
__device__ __forceinline__ void reduce_finish(const A* partial, T* out, unsigned long long rows,
                                              unsigned long long chunks, unsigned long long n, int op,
                                              unsigned long long correction) {
    __shared__ A part[96];
#define STAPES_CALL(OP) finish_impl<T, A, OP>(partial, out, rows, chunks, n, correction, part)
    STAPES_REDUCE_SWITCH(op, STAPES_CALL)
#undef STAPES_CALL
}

template <class T, class A, int OP>
__device__ __forceinline__ void cols_impl(const T* x, T* out, A* partial, unsigned long long a, unsigned long long r,
                                          unsigned long long b, unsigned long long chunks,
                                          unsigned long long per_chunk, unsigned long long correction) {
    const unsigned long long outputs = a * b;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long o = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; o < outputs; o += stride) {
        const T* p = x + (o / b) * r * b + o % b;
        for (unsigned long long chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
            const unsigned long long k0 = chunk * per_chunk;
            const unsigned long long k1 = k0 + per_chunk < r ? k0 + per_chunk : r;
            State<A> s = state_init<A, OP>();
            for (unsigned long long k = k0; k < k1; ++k) state_add<A, OP>(s, to_acc(p[k * b]));
            if (partial) {
                A* q = partial + 3 * (o * chunks + chunk);
                q[0] = s.a;
                q[1] = s.b;
                q[2] = s.c;
            } else {
                store(out + o, state_finish<A, OP>(s, r, correction));
            }
        }
    }
}

template <class T, class A>
__device__ __forceinline__ void reduce_cols(const T* x, T* out, A* partial, unsigned long long a, unsigned long long r,
                                            unsigned long long b, unsigned long long chunks,
                                            unsigned long long per_chunk, int op, unsigned long long correction) {
#define STAPES_CALL(OP) cols_impl<T, A, OP>(x, out, partial, a, r, b, chunks, per_chunk, correction)
    STAPES_REDUCE_SWITCH(op, STAPES_CALL)
#undef STAPES_CALL
}

// ---- arg reductions: (value, index) pairs; index -1 marks an empty state.
template <class A>
__device__ __forceinline__ bool arg_better(A va, long long ia, A vb, long long ib, bool want_max) {
    if (ib < 0) return ia >= 0;
    if (ia < 0) return false;
    const bool na = va != va, nb = vb != vb;
    if (na || nb) return na && nb ? ia < ib : na;
    if (va == vb) return ia < ib;
    return want_max ? va > vb : va < vb;
}

template <class T, class A>
__device__ __forceinline__ void argreduce_rows(const T* x, long long* out, unsigned long long rows,
                                               unsigned long long n, int want_max) {
    __shared__ A part_v[32];
    __shared__ long long part_i[32];
    const bool wm = want_max != 0;
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * n;
        A v = (A)0;
        long long idx = -1;
        // each thread's indices grow, so a later element only wins when strictly better
        for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
            const A y = to_acc(xr[j]);
            if (arg_better<A>(y, (long long)j, v, idx, wm)) {
                v = y;
                idx = (long long)j;
            }
        }
        for (int offset = 16; offset > 0; offset >>= 1) {
            const A v2 = __shfl_xor_sync(kFullMask, v, offset);
            const long long i2 = __shfl_xor_sync(kFullMask, idx, offset);
            if (arg_better<A>(v2, i2, v, idx, wm)) {
                v = v2;
                idx = i2;
            }
        }
        if (lane == 0) {
            part_v[warp] = v;
            part_i[warp] = idx;
        }
        __syncthreads();
        if (warp == 0) {
            v = lane < warps ? part_v[lane] : (A)0;
            idx = lane < warps ? part_i[lane] : -1;
            for (int offset = 16; offset > 0; offset >>= 1) {
                const A v2 = __shfl_xor_sync(kFullMask, v, offset);
                const long long i2 = __shfl_xor_sync(kFullMask, idx, offset);
                if (arg_better<A>(v2, i2, v, idx, wm)) {
                    v = v2;
                    idx = i2;
                }
            }
            if (lane == 0) out[row] = idx < 0 ? 0 : idx;
        }
        __syncthreads();
    }
}

}  // namespace

// out[r] = op(x[r, 0..n)) for the contiguous [rows, n] matrix x (op: 0 sum, 1 mean, 2 max, 3 min,
// 4 logsumexp, 5 var, 6 std; `correction` for var/std).
extern "C" __global__ void reduce_rows_f16(const __half* x, __half* out, unsigned long long rows, unsigned long long n,
                                           int op, unsigned long long correction) {
    reduce_rows<__half, float>(x, out, rows, n, op, correction);
}
extern "C" __global__ void reduce_rows_bf16(const __nv_bfloat16* x, __nv_bfloat16* out, unsigned long long rows,
                                            unsigned long long n, int op, unsigned long long correction) {
    reduce_rows<__nv_bfloat16, float>(x, out, rows, n, op, correction);
}
extern "C" __global__ void reduce_rows_f32(const float* x, float* out, unsigned long long rows, unsigned long long n,
                                           int op, unsigned long long correction) {
    reduce_rows<float, float>(x, out, rows, n, op, correction);
}
extern "C" __global__ void reduce_rows_f64(const double* x, double* out, unsigned long long rows, unsigned long long n,
                                           int op, unsigned long long correction) {
    reduce_rows<double, double>(x, out, rows, n, op, correction);
}

// Grid-level path, stage 1: partial[3b..3b+3) = the state of chunk b % chunks (elements
// [chunk * per_chunk, min(n, (chunk + 1) * per_chunk))) of row b / chunks.
extern "C" __global__ void reduce_partial_f16(const __half* x, float* partial, unsigned long long rows,
                                              unsigned long long n, unsigned long long chunks,
                                              unsigned long long per_chunk, int op) {
    reduce_partial<__half, float>(x, partial, rows, n, chunks, per_chunk, op);
}
extern "C" __global__ void reduce_partial_bf16(const __nv_bfloat16* x, float* partial, unsigned long long rows,
                                               unsigned long long n, unsigned long long chunks,
                                               unsigned long long per_chunk, int op) {
    reduce_partial<__nv_bfloat16, float>(x, partial, rows, n, chunks, per_chunk, op);
}
extern "C" __global__ void reduce_partial_f32(const float* x, float* partial, unsigned long long rows,
                                              unsigned long long n, unsigned long long chunks,
                                              unsigned long long per_chunk, int op) {
    reduce_partial<float, float>(x, partial, rows, n, chunks, per_chunk, op);
}
extern "C" __global__ void reduce_partial_f64(const double* x, double* partial, unsigned long long rows,
                                              unsigned long long n, unsigned long long chunks,
                                              unsigned long long per_chunk, int op) {
    reduce_partial<double, double>(x, partial, rows, n, chunks, per_chunk, op);
}

// Grid-level path, stage 2: out[r] = finalise(merge of the row's `chunks` partial states); n is
// the row length (for mean and var).
extern "C" __global__ void reduce_finish_f16(const float* partial, __half* out, unsigned long long rows,
                                             unsigned long long chunks, unsigned long long n, int op,
                                             unsigned long long correction) {
    reduce_finish<__half, float>(partial, out, rows, chunks, n, op, correction);
}
extern "C" __global__ void reduce_finish_bf16(const float* partial, __nv_bfloat16* out, unsigned long long rows,
                                              unsigned long long chunks, unsigned long long n, int op,
                                              unsigned long long correction) {
    reduce_finish<__nv_bfloat16, float>(partial, out, rows, chunks, n, op, correction);
}
extern "C" __global__ void reduce_finish_f32(const float* partial, float* out, unsigned long long rows,
                                             unsigned long long chunks, unsigned long long n, int op,
                                             unsigned long long correction) {
    reduce_finish<float, float>(partial, out, rows, chunks, n, op, correction);
}
extern "C" __global__ void reduce_finish_f64(const double* partial, double* out, unsigned long long rows,
                                             unsigned long long chunks, unsigned long long n, int op,
                                             unsigned long long correction) {
    reduce_finish<double, double>(partial, out, rows, chunks, n, op, correction);
}

// out[i * b + j] = op(x[i, 0..r, j]) for the contiguous [a, r, b] tensor x (one pass, no split).
extern "C" __global__ void reduce_cols_f16(const __half* x, __half* out, unsigned long long a, unsigned long long r,
                                           unsigned long long b, int op, unsigned long long correction) {
    reduce_cols<__half, float>(x, out, nullptr, a, r, b, 1, r, op, correction);
}
extern "C" __global__ void reduce_cols_bf16(const __nv_bfloat16* x, __nv_bfloat16* out, unsigned long long a,
                                            unsigned long long r, unsigned long long b, int op,
                                            unsigned long long correction) {
    reduce_cols<__nv_bfloat16, float>(x, out, nullptr, a, r, b, 1, r, op, correction);
}
extern "C" __global__ void reduce_cols_f32(const float* x, float* out, unsigned long long a, unsigned long long r,
                                           unsigned long long b, int op, unsigned long long correction) {
    reduce_cols<float, float>(x, out, nullptr, a, r, b, 1, r, op, correction);
}
extern "C" __global__ void reduce_cols_f64(const double* x, double* out, unsigned long long a, unsigned long long r,
                                           unsigned long long b, int op, unsigned long long correction) {
    reduce_cols<double, double>(x, out, nullptr, a, r, b, 1, r, op, correction);
}

// The split form: partial[3 (o * chunks + c) ..] = the state of output o = i * b + j over
// k in [c * per_chunk, min(r, (c + 1) * per_chunk)); finished by reduce_finish_<T> with
// rows = a * b and n = r.
extern "C" __global__ void reduce_cols_partial_f16(const __half* x, float* partial, unsigned long long a,
                                                   unsigned long long r, unsigned long long b,
                                                   unsigned long long chunks, unsigned long long per_chunk, int op) {
    reduce_cols<__half, float>(x, nullptr, partial, a, r, b, chunks, per_chunk, op, 0);
}
extern "C" __global__ void reduce_cols_partial_bf16(const __nv_bfloat16* x, float* partial, unsigned long long a,
                                                    unsigned long long r, unsigned long long b,
                                                    unsigned long long chunks, unsigned long long per_chunk, int op) {
    reduce_cols<__nv_bfloat16, float>(x, nullptr, partial, a, r, b, chunks, per_chunk, op, 0);
}
extern "C" __global__ void reduce_cols_partial_f32(const float* x, float* partial, unsigned long long a,
                                                   unsigned long long r, unsigned long long b,
                                                   unsigned long long chunks, unsigned long long per_chunk, int op) {
    reduce_cols<float, float>(x, nullptr, partial, a, r, b, chunks, per_chunk, op, 0);
}
extern "C" __global__ void reduce_cols_partial_f64(const double* x, double* partial, unsigned long long a,
                                                   unsigned long long r, unsigned long long b,
                                                   unsigned long long chunks, unsigned long long per_chunk, int op) {
    reduce_cols<double, double>(x, nullptr, partial, a, r, b, chunks, per_chunk, op, 0);
}

// out[r] = the index of the maximum (want_max != 0) or minimum of row r, first on ties, NaN first.
extern "C" __global__ void argreduce_rows_f16(const __half* x, long long* out, unsigned long long rows,
                                              unsigned long long n, int want_max) {
    argreduce_rows<__half, float>(x, out, rows, n, want_max);
}
extern "C" __global__ void argreduce_rows_bf16(const __nv_bfloat16* x, long long* out, unsigned long long rows,
                                               unsigned long long n, int want_max) {
    argreduce_rows<__nv_bfloat16, float>(x, out, rows, n, want_max);
}
extern "C" __global__ void argreduce_rows_f32(const float* x, long long* out, unsigned long long rows,
                                              unsigned long long n, int want_max) {
    argreduce_rows<float, float>(x, out, rows, n, want_max);
}
extern "C" __global__ void argreduce_rows_f64(const double* x, long long* out, unsigned long long rows,
                                              unsigned long long n, int want_max) {
    argreduce_rows<double, double>(x, out, rows, n, want_max);
}
