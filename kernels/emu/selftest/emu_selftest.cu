// emu_selftest.cu: kernels that pin down the emulator's CUDA semantics, one feature each.
// kernels/tests/cuda_emu_selftest.rs launches them and computes the expected results in Rust
// from the CUDA programming guide's rules. Test-only: valid CUDA (the NVRTC test compiles it),
// but never part of the GPU kernel set.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Built-in index variables in a 3-D launch: out[global linear thread] = packed indices.
// Layout per thread: tid.x, tid.y, tid.z, bid.x, bid.y, bid.z, bdim.x*bdim.y*bdim.z, gdim.x*gdim.y*gdim.z.
extern "C" __global__ void selftest_indices(unsigned* out) {
    const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned* o = out + 8ull * (block * threads + t);
    o[0] = threadIdx.x;
    o[1] = threadIdx.y;
    o[2] = threadIdx.z;
    o[3] = blockIdx.x;
    o[4] = blockIdx.y;
    o[5] = blockIdx.z;
    o[6] = threads;
    o[7] = gridDim.x * gridDim.y * gridDim.z;
}

// Every warp collective, 1-D blocks. Thread t (value v = 10 * t) writes 12 results at out[12 t]:
// 0 shfl(v, 3)          1 shfl(v, lane + 1, width 16)  2 shfl_up(v, 2)      3 shfl_down(v, 5, width 8)
// 4 shfl_xor(v, 1)      5 shfl_xor(v, 8, width 8)      6 ballot(t % 3 == 0) 7 all(t < 40)
// 8 any(t == 5)         9 shfl(float, 31) as bits      10/11 shfl_down(double 0.5 t, 1) as two words
extern "C" __global__ void selftest_warp_ops(int* out) {
    const unsigned full = 0xffffffffu, t = threadIdx.x, lane = t & 31u;
    const int v = 10 * (int)t;
    int* o = out + 12ull * t;
    o[0] = __shfl_sync(full, v, 3);
    o[1] = __shfl_sync(full, v, (int)lane + 1, 16);
    o[2] = __shfl_up_sync(full, v, 2);
    o[3] = __shfl_down_sync(full, v, 5, 8);
    o[4] = __shfl_xor_sync(full, v, 1);
    o[5] = __shfl_xor_sync(full, v, 8, 8);
    o[6] = (int)__ballot_sync(full, t % 3 == 0);
    o[7] = __all_sync(full, t < 40);
    o[8] = __any_sync(full, t == 5);
    o[9] = __float_as_int(__shfl_sync(full, 1.5f * (float)t, 31));
    const double d = __shfl_down_sync(full, 0.5 * (double)t, 1);
    long long bits;
    memcpy(&bits, &d, 8);
    o[10] = (int)(bits & 0xffffffff);
    o[11] = (int)(bits >> 32);
}

// A partial last warp (blockDim.x = 48): lanes 16-31 of warp 1 do not exist, so reading from
// them is undefined (the emulator returns all-ones bits: -1).
extern "C" __global__ void selftest_partial_warp(int* out) {
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 16);
}

// Threads t >= active return at once; the others meet at __syncthreads() (returned threads
// count as arrived) and then read their neighbour's shared slot: out[t] = 1000 + (t + 1) % active.
extern "C" __global__ void selftest_barrier_after_return(int* out, unsigned active) {
    __shared__ int slots[1024];
    const unsigned t = threadIdx.x;
    if (t >= active) return;
    slots[t] = 1000 + (int)t;
    __syncthreads();
    out[t] = slots[(t + 1) % active];
    __syncthreads();
}

// Dynamic shared memory: out[t] = value stored by thread blockDim.x - 1 - t, and
// out[blockDim.x + t] = the bits of a slot nobody wrote (the emulator fills it with 0xff).
extern "C" __global__ void selftest_dynamic_shared(unsigned* out) {
    extern __shared__ unsigned dynamic_slots[];
    const unsigned t = threadIdx.x, n = blockDim.x;
    dynamic_slots[t] = 7u * t + 1u;
    __syncthreads();
    out[t] = dynamic_slots[n - 1 - t];
    out[n + t] = dynamic_slots[n + t];
}

// Atomics from every thread of the grid: counters[0] += 1, counters[1] = max(global id),
// counters[2] += 1 through an atomicCAS loop, fsum += 0.5, hsum (f16) += 1 for the first 1024
// threads (exact in f16 up to 2048), unsigned max in counters[3].
extern "C" __global__ void selftest_atomics(int* counters, float* fsum, __half* hsum) {
    const unsigned id = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&counters[0], 1);
    atomicMax(&counters[1], (int)id);
    int old = counters[2], assumed;
    do {
        assumed = old;
        old = atomicCAS(&counters[2], assumed, assumed + 1);
    } while (old != assumed);
    atomicMax((unsigned*)&counters[3], id * 3u);
    atomicAdd(fsum, 0.5f);
    if (id < 1024) atomicAdd(hsum, __float2half(1.0f));
}

// Conversions of every input to f16 and bf16 (round to nearest even) and back.
extern "C" __global__ void selftest_half_conversions(const float* x, __half* h, __nv_bfloat16* b, float* h_back,
                                                     float* b_back, unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        h[i] = __float2half_rn(x[i]);
        b[i] = __float2bfloat16_rn(x[i]);
        h_back[i] = __half2float(h[i]);
        b_back[i] = __bfloat162float(b[i]);
    }
}

// A deadlock: lane 0 of each warp waits at the barrier while lanes 1-31 wait for lane 0 in a
// full-mask shuffle. The emulator must report it, not hang.
extern "C" __global__ void selftest_deadlock(int* out) {
    int v = (int)threadIdx.x;
    if ((threadIdx.x & 31u) == 0) {
        __syncthreads();
    } else {
        v = __shfl_sync(0xffffffffu, v, 0);
    }
    out[threadIdx.x] = v;
}
