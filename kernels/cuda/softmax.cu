// softmax.cu: softmax and log-softmax over the last dim of a contiguous [rows, n] f32 matrix.
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
// Special values match the CPU reference: a row that is all -inf (fully masked) gives NaN; a
// NaN anywhere makes the row NaN; -inf entries contribute 0.
//
// Launch: gridDim.x = min(rows, cap), blockDim.x a multiple of 32 in [32, 1024] (the launcher
// uses min(256, n rounded up to 32)); 256 bytes of static shared memory.
// Memory traffic: reads 2 * rows * n floats (the second read mostly from L2), writes rows * n.

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// Merges (m2, s2) into (m, s). A part whose max is -inf holds only -inf entries: it adds 0 (and
// must not compute exp(-inf - -inf) = NaN).
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
    const float mm = fmaxf(m, m2);
    const float a = m == neg_inf() ? 0.0f : s * expf(m - mm);
    const float b = m2 == neg_inf() ? 0.0f : s2 * expf(m2 - mm);
    m = mm;
    s = a + b;
}

__device__ __forceinline__ void warp_merge(float& m, float& s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float m2 = __shfl_xor_sync(kFullMask, m, offset);
        const float s2 = __shfl_xor_sync(kFullMask, s, offset);
        merge(m, s, m2, s2);
    }
}

template <bool kLog>
__device__ __forceinline__ void softmax_rows(const float* x, float* y, unsigned long long rows, unsigned long long n) {
    __shared__ float part_m[32];
    __shared__ float part_s[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * n;
        float* yr = y + row * n;
        // 1. online max and sum over this thread's elements
        float m = neg_inf(), s = 0.0f;
        for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {
            const float v = xr[j];
            if (v > m) {
                s = s * expf(m - v) + 1.0f;
                m = v;
            } else if (v != neg_inf()) {
                s += expf(v - m);  // a NaN v makes s NaN, hence the whole row
            }
        }
        // 2. merge across the warp, then across warps
        warp_merge(m, s);
        if (lane == 0) {
            part_m[warp] = m;
            part_s[warp] = s;
        }
        __syncthreads();
        m = lane < warps ? part_m[lane] : neg_inf();
        s = lane < warps ? part_s[lane] : 0.0f;
        warp_merge(m, s);
        __syncthreads();
        // 3. write the row (m = -inf: all entries -inf, the result is NaN as in PyTorch)
        if (kLog) {
            const float shift = m + logf(s);
            for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - shift;
        } else {
            const float inv = 1.0f / s;
            for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
        }
    }
}

}  // namespace

extern "C" __global__ void softmax_last_f32(const float* x, float* y, unsigned long long rows, unsigned long long n) {
    softmax_rows<false>(x, y, rows, n);
}

extern "C" __global__ void log_softmax_last_f32(const float* x, float* y, unsigned long long rows,
                                                unsigned long long n) {
    softmax_rows<true>(x, y, rows, n);
}
