// elementwise.cu: contiguous element-wise kernels: binary add and mul, unary exp.
//
// Algorithm: a grid-stride loop. Thread t of the grid handles elements t, t + S, t + 2S, ...
// with S = gridDim.x * blockDim.x, so any grid covers any n; the launcher caps the grid at a
// few blocks per SM (src/cuda/elementwise.rs), which keeps every SM busy without paying block
// start-up per 256 elements. Consecutive threads touch consecutive elements: loads and stores
// are coalesced.
//
// Dtypes: f32, f16, bf16. Halves are widened to f32, computed in f32 and rounded once to the
// nearest even, as PyTorch does and as the Rust CPU reference does (it converts through f32).
// exp uses the accurate expf (not __expf): the tests compare against a 2-ulp CPU exp.
//
// Launch: 1-D; blockDim.x = 256; gridDim.x = min(ceil(n / 256), 4 * SM count); no shared memory.
// Memory traffic: binary reads 2n and writes n elements, unary reads n and writes n; indexing is
// 64-bit, so n may exceed 2^31. Pointers are not __restrict__: out may alias an input (in-place
// ops), which is safe because each element is read and then written by the same thread.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

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

struct AddOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a * b; }
};
struct ExpOp {
    __device__ __forceinline__ float operator()(float x) const { return expf(x); }
};

// The first element and the stride of this thread's grid-stride loop, 64-bit.
__device__ __forceinline__ unsigned long long grid_start() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned long long grid_stride() { return (unsigned long long)gridDim.x * blockDim.x; }

template <class T, class Op>
__device__ __forceinline__ void binary_contiguous(const T* a, const T* b, T* out, unsigned long long n) {
    const Op op;
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        out[i] = from_f32<T>(op(to_f32(a[i]), to_f32(b[i])));
    }
}

template <class T, class Op>
__device__ __forceinline__ void unary_contiguous(const T* x, T* out, unsigned long long n) {
    const Op op;
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        out[i] = from_f32<T>(op(to_f32(x[i])));
    }
}

}  // namespace

// out[i] = a[i] + b[i], i < n.
extern "C" __global__ void binary_add_f32(const float* a, const float* b, float* out, unsigned long long n) {
    binary_contiguous<float, AddOp>(a, b, out, n);
}
extern "C" __global__ void binary_add_f16(const __half* a, const __half* b, __half* out, unsigned long long n) {
    binary_contiguous<__half, AddOp>(a, b, out, n);
}
extern "C" __global__ void binary_add_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out,
                                           unsigned long long n) {
    binary_contiguous<__nv_bfloat16, AddOp>(a, b, out, n);
}

// out[i] = a[i] * b[i], i < n.
extern "C" __global__ void binary_mul_f32(const float* a, const float* b, float* out, unsigned long long n) {
    binary_contiguous<float, MulOp>(a, b, out, n);
}
extern "C" __global__ void binary_mul_f16(const __half* a, const __half* b, __half* out, unsigned long long n) {
    binary_contiguous<__half, MulOp>(a, b, out, n);
}
extern "C" __global__ void binary_mul_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out,
                                           unsigned long long n) {
    binary_contiguous<__nv_bfloat16, MulOp>(a, b, out, n);
}

// out[i] = exp(x[i]), i < n.
extern "C" __global__ void unary_exp_f32(const float* x, float* out, unsigned long long n) {
    unary_contiguous<float, ExpOp>(x, out, n);
}
extern "C" __global__ void unary_exp_f16(const __half* x, __half* out, unsigned long long n) {
    unary_contiguous<__half, ExpOp>(x, out, n);
}
extern "C" __global__ void unary_exp_bf16(const __nv_bfloat16* x, __nv_bfloat16* out, unsigned long long n) {
    unary_contiguous<__nv_bfloat16, ExpOp>(x, out, n);
}
