// bias_silu.cu: the CUDA kernels of the example's fused op y = silu(x + b), x row-major
// [rows, cols], b [cols], silu(z) = z * sigmoid(z). T is float or double.
//
// Forward (bias_silu_forward_{f32,f64}): one element per thread in a 1-D grid-stride loop.
//   Traffic per element: read x, write y (b stays in cache): 2 * sizeof(T).
// Input gradient (bias_silu_backward_{f32,f64}): dz = dy * s * (1 + z * (1 - s)), with z and s =
//   sigmoid(z) recomputed from x and b instead of saved by the forward (a fused op trades a
//   few flops for not keeping an activation). Read x and dy, write dz: 3 * sizeof(T) per element.
// Bias gradient (bias_silu_bias_grad_{f32,f64}): db[c] = sum over rows of dz[r, c]. One block of
//   256 threads per column: each thread sums a strided share of the rows, then a tree
//   reduction in shared memory, with a __syncthreads() between levels (leave one out and the
//   emulator's random schedule, STAPES_EMU_RANDOM_SCHEDULE=1, gives a wrong sum). Column reads
//   are strided by cols: fine for the small biases of this example, not a bandwidth kernel.
//
// Launch: forward/backward block 256, grid min(ceil(n / 256), 65535); bias grad block 256,
// grid = cols. Sizes are 64-bit.

namespace {

__device__ __forceinline__ float exp_of(float z) { return expf(z); }
__device__ __forceinline__ double exp_of(double z) { return exp(z); }

template <class T>
__device__ __forceinline__ T sigmoid(T z) {
    return T(1) / (T(1) + exp_of(-z));
}

template <class T>
__device__ __forceinline__ void forward(const T* x, const T* b, T* y, long long n, long long cols) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const T z = x[i] + b[i % cols];
        y[i] = z * sigmoid(z);
    }
}

template <class T>
__device__ __forceinline__ void backward(const T* x, const T* b, const T* dy, T* dz, long long n, long long cols) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const T z = x[i] + b[i % cols];
        const T s = sigmoid(z);
        dz[i] = dy[i] * s * (T(1) + z * (T(1) - s));
    }
}

template <class T>
__device__ __forceinline__ void bias_grad(const T* dz, T* db, long long rows, long long cols, T* partial) {
    const long long c = blockIdx.x;
    T acc = T(0);
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) acc += dz[r * cols + c];
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned width = blockDim.x / 2; width > 0; width /= 2) {
        if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[c] = partial[0];
}

}  // namespace

extern "C" __global__ void bias_silu_forward_f32(const float* x, const float* b, float* y, long long n,
                                                 long long cols) {
    forward(x, b, y, n, cols);
}
extern "C" __global__ void bias_silu_forward_f64(const double* x, const double* b, double* y, long long n,
                                                 long long cols) {
    forward(x, b, y, n, cols);
}
extern "C" __global__ void bias_silu_backward_f32(const float* x, const float* b, const float* dy, float* dz,
                                                  long long n, long long cols) {
    backward(x, b, dy, dz, n, cols);
}
extern "C" __global__ void bias_silu_backward_f64(const double* x, const double* b, const double* dy, double* dz,
                                                  long long n, long long cols) {
    backward(x, b, dy, dz, n, cols);
}
// Block size must be 256 (a power of two: the tree reduction halves it).
extern "C" __global__ void bias_silu_bias_grad_f32(const float* dz, float* db, long long rows, long long cols) {
    __shared__ float partial[256];
    bias_grad(dz, db, rows, cols, partial);
}
extern "C" __global__ void bias_silu_bias_grad_f64(const double* dz, double* db, long long rows, long long cols) {
    __shared__ double partial[256];
    bias_grad(dz, db, rows, cols, partial);
}
