// broken_reduce.cu: the emulator's proof that its random schedule finds a missing barrier.
//
// Both kernels sum each row of a [rows, n] f32 matrix, one block per row (gridDim.x = rows,
// blockDim.x a multiple of 32, at least 64): every warp reduces its threads' partial sums with
// shuffles, lane 0 of each warp stores the warp total in shared memory, and the LAST warp adds
// the totals up. `selftest_block_sum_f32` has the __syncthreads() between the stores and the
// last warp's loads; `broken_block_sum_f32` does not, which is a real race on a GPU.
//
// Under the emulator's sequential schedule the broken kernel happens to give the right answer:
// warps run in index order, each as far as it can, so every other warp's lane 0 has stored its
// total before the last warp reads. Under the random schedule the last warp often runs before
// some other warp and reads a stale total. kernels/tests/cuda_emu_selftest.rs checks both.
// These kernels are test-only: not part of the GPU kernel set, never launched on a GPU.

namespace {

__device__ __forceinline__ float selftest_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <bool kBarrier>
__device__ __forceinline__ void block_sum_last_warp(const float* x, float* out, unsigned long long n) {
    __shared__ float warp_totals[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float* xr = x + (unsigned long long)blockIdx.x * n;
    float acc = 0.0f;
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) acc += xr[j];
    acc = selftest_warp_sum(acc);
    if (lane == 0) warp_totals[warp] = acc;
    if (kBarrier) __syncthreads();
    if (warp == warps - 1) {
        float total = lane < warps ? warp_totals[lane] : 0.0f;
        total = selftest_warp_sum(total);
        if (lane == 0) out[blockIdx.x] = total;
    }
}

}  // namespace

extern "C" __global__ void selftest_block_sum_f32(const float* x, float* out, unsigned long long n) {
    block_sum_last_warp<true>(x, out, n);
}

extern "C" __global__ void broken_block_sum_f32(const float* x, float* out, unsigned long long n) {
    block_sum_last_warp<false>(x, out, n);
}
