// gemm.cu: the reference GEMM, strided batched, row-major, with transpose flags:
//
//   C_z = alpha * op(A_z) * op(B_z) + beta * C_z      for z in [0, batch)
//
// where C_z is m x n at c + off_c + z * stride_c with row stride ldc, op(A_z) is m x k and
// op(B_z) is k x n. Without a transpose A_z is stored m x k (element (i, p) at i * lda + p);
// with one it is stored k x m (element (i, p) at p * lda + i); likewise B. Inputs are f32, f16,
// bf16 (accumulated in f32) or f64 (accumulated in f64); alpha and beta arrive as double and are
// applied in the accumulation type. beta == 0 never reads C (it may hold NaN). k == 0 gives
// beta * C (0 when beta == 0), as BLAS.
//
// On a GPU the tensor layer calls cuBLAS (kernels/src/cuda/blas.rs) and this kernel is the
// reference it is tested against; on the CUDA emulator, which has no cuBLAS, it is the GEMM.
//
// Algorithm: classic shared-memory tiling. A block of 256 threads computes a 64 x 64 tile of C;
// for each 16-wide slice of the k range it stages the 64 x 16 tile of op(A) and the 16 x 64 tile
// of op(B) in shared memory (converted to the accumulation type; out-of-range elements are 0, so
// m, n, k need not be multiples of the tile), then each thread accumulates a 4 x 4 micro-tile in
// registers: rows ty + 16 * i, columns tx + 16 * j (tx = tid % 16, ty = tid / 16), so the 16
// threads of a half-warp read 16 consecutive B values (no bank conflicts) and one broadcast A
// value, and store 16 consecutive C values. Loads into shared memory walk the operand's
// contiguous direction (k for A, m for A^T, n for B, k for B^T), so they coalesce either way.
//
// Launch: grid (ceil(n / 64), ceil(m / 64), batch <= 65535; the launcher splits larger batches),
// block 256; static shared memory 2 * 16 * 64 * sizeof(acc) = 8 KiB (f32) or 16 KiB (f64).
// Memory traffic: each A element is read ceil(n / 64) times and each B element ceil(m / 64)
// times (through L2); C is read (beta != 0) and written once. Arithmetic intensity 16 FMA per
// shared load pair: a reference, not a cuBLAS competitor.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kThreads = 256;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double to_acc(double x) { return x; }

// Rounds the accumulator to the element type (round to nearest even) and stores it.
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }

template <class T, class Acc>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c,
                                          int transa, int transb, int m, int n, int k, long long lda, long long ldb,
                                          long long ldc, long long stride_a, long long stride_b, long long stride_c,
                                          long long off_a, long long off_b, long long off_c, double alpha_d,
                                          double beta_d) {
    __shared__ Acc as[kTileK][kTileM];  // as[p][i] = op(A)(row0 + i, k0 + p)
    __shared__ Acc bs[kTileK][kTileN];  // bs[p][j] = op(B)(k0 + p, col0 + j)
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int row0 = blockIdx.y * kTileM, col0 = blockIdx.x * kTileN;
    const long long z = blockIdx.z;
    const T* az = a + off_a + z * stride_a;
    const T* bz = b + off_b + z * stride_b;
    T* cz = c + off_c + z * stride_c;

    Acc acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);

    for (int k0 = 0; k0 < k; k0 += kTileK) {
        // Stage op(A)[row0 .. +64, k0 .. +16] and op(B)[k0 .. +16, col0 .. +64]: 1024 elements
        // each, 4 per thread.
        for (int r = 0; r < (kTileM * kTileK) / kThreads; ++r) {
            const int l = tid + r * kThreads;
            int i, p;
            if (transa) {  // stored k x m: consecutive threads walk i
                i = l % kTileM;
                p = l / kTileM;
            } else {  // stored m x k: consecutive threads walk p
                p = l % kTileK;
                i = l / kTileK;
            }
            const int gi = row0 + i, gp = k0 + p;
            Acc v = Acc(0);
            if (gi < m && gp < k) v = to_acc(transa ? az[(long long)gp * lda + gi] : az[(long long)gi * lda + gp]);
            as[p][i] = v;
        }
        for (int r = 0; r < (kTileN * kTileK) / kThreads; ++r) {
            const int l = tid + r * kThreads;
            int j, p;
            if (transb) {  // stored n x k: consecutive threads walk p
                p = l % kTileK;
                j = l / kTileK;
            } else {  // stored k x n: consecutive threads walk j
                j = l % kTileN;
                p = l / kTileN;
            }
            const int gj = col0 + j, gp = k0 + p;
            Acc v = Acc(0);
            if (gj < n && gp < k) v = to_acc(transb ? bz[(long long)gj * ldb + gp] : bz[(long long)gp * ldb + gj]);
            bs[p][j] = v;
        }
        __syncthreads();
        for (int p = 0; p < kTileK; ++p) {
            Acc av[4], bv[4];
            for (int i = 0; i < 4; ++i) av[i] = as[p][ty + 16 * i];
            for (int j = 0; j < 4; ++j) bv[j] = bs[p][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        // The next slice overwrites the tiles: every thread must be done reading them.
        __syncthreads();
    }

    const Acc alpha = (Acc)alpha_d, beta = (Acc)beta_d;
    for (int i = 0; i < 4; ++i) {
        const int gi = row0 + ty + 16 * i;
        if (gi >= m) continue;
        for (int j = 0; j < 4; ++j) {
            const int gj = col0 + tx + 16 * j;
            if (gj >= n) continue;
            T* out = cz + (long long)gi * ldc + gj;
            Acc v = alpha * acc[i][j];
            if (beta != Acc(0)) v += beta * to_acc(*out);
            store(out, v);
        }
    }
}

}  // namespace

// One kernel per element type (build.rs finds kernels by their literal `extern "C" __global__`
// lines, so no macro-generated names).
extern "C" __global__ void __launch_bounds__(256)
    gemm_f32(const float* a, const float* b, float* c, int transa, int transb, int m, int n, int k, long long lda,
             long long ldb, long long ldc, long long stride_a, long long stride_b, long long stride_c, long long off_a,
             long long off_b, long long off_c, double alpha, double beta) {
    gemm_tile<float, float>(a, b, c, transa, transb, m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, off_a, off_b,
                            off_c, alpha, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_f16(const __half* a, const __half* b, __half* c, int transa, int transb, int m, int n, int k, long long lda,
             long long ldb, long long ldc, long long stride_a, long long stride_b, long long stride_c, long long off_a,
             long long off_b, long long off_c, double alpha, double beta) {
    gemm_tile<__half, float>(a, b, c, transa, transb, m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, off_a,
                             off_b, off_c, alpha, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* c, int transa, int transb, int m, int n,
              int k, long long lda, long long ldb, long long ldc, long long stride_a, long long stride_b,
              long long stride_c, long long off_a, long long off_b, long long off_c, double alpha, double beta) {
    gemm_tile<__nv_bfloat16, float>(a, b, c, transa, transb, m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c,
                                    off_a, off_b, off_c, alpha, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_f64(const double* a, const double* b, double* c, int transa, int transb, int m, int n, int k, long long lda,
             long long ldb, long long ldc, long long stride_a, long long stride_b, long long stride_c, long long off_a,
             long long off_b, long long off_c, double alpha, double beta) {
    gemm_tile<double, double>(a, b, c, transa, transb, m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, off_a,
                              off_b, off_c, alpha, beta);
}
