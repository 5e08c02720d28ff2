// reduce.cu: row sums of a contiguous [rows, n] f32 matrix: out[r] = sum_j x[r * n + j].
//
// Algorithm, one block per row (a grid-stride loop over rows when rows > gridDim.x):
//   1. each thread sums the elements j = threadIdx.x, threadIdx.x + blockDim.x, ... of the row
//      (consecutive threads read consecutive floats: coalesced);
//   2. the 32 lanes of each warp combine their sums with a butterfly of __shfl_xor_sync, after
//      which every lane holds the warp's total;
//   3. lane 0 of each warp stores the total in shared memory; after a barrier, warp 0 combines
//      the (at most 32) warp totals the same way and thread 0 writes the row's sum;
//   4. a second barrier keeps the next row (grid-stride loop) from overwriting the totals
//      before warp 0 has read them.
// Accumulation is in f32 in a tree order; the CPU reference sums in a different order, so the
// tests compare with a tolerance relative to sum_j |x_j|.
//
// Launch: gridDim.x = min(rows, cap), blockDim.x a multiple of 32 in [32, 1024] (the launcher
// uses min(256, n rounded up to 32)); 128 bytes of static shared memory.
// Memory traffic: reads rows * n floats once, writes rows floats.

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

}  // namespace

extern "C" __global__ void reduce_sum_rows_f32(const float* x, float* out, unsigned long long rows,
                                               unsigned long long n) {
    __shared__ float warp_totals[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * n;
        float acc = 0.0f;
        for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) acc += xr[j];
        acc = warp_sum(acc);
        if (lane == 0) warp_totals[warp] = acc;
        __syncthreads();
        if (warp == 0) {
            float total = lane < warps ? warp_totals[lane] : 0.0f;
            total = warp_sum(total);
            if (lane == 0) out[row] = total;
        }
        __syncthreads();
    }
}
