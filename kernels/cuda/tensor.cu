// tensor.cu: the data-movement kernels under the tensor layer's CUDA dispatch: strided copy
// (contiguous(), views to dense), fill (full/zeros/ones) and dtype casts.
//
// Strided copy. dst (dense, row-major, n elements) gets src[offset + sum_k i_k * stride_k],
// where (i_0, .., i_{rank-1}) is the row-major multi-index of the destination element in the
// shape dims. `meta` holds rank dims followed by rank strides, in elements, as long long (a
// small device buffer per launch, so rank is not limited by the parameter space; the tensor
// layer merges contiguous dims first, so rank is usually 1-3). Strides may be 0 (broadcast
// views). The kernels move bytes, so one kernel per element size serves every dtype:
// copy_strided_b1/b2/b4/b8. Each thread divides its flat index by the dims from the innermost
// outwards; consecutive threads write consecutive destination elements (coalesced stores);
// loads are coalesced when the innermost source stride is 1.
//
// Tiled transpose. The dense copy of a batched view whose fastest-moving source dim is the
// second-to-last destination dim: dst (dense, row-major [batch, rows, cols]) gets
// src[offset + z * stride_z + r * stride_r + c * stride_c]; the tensor layer uses it when
// stride_r == 1 and stride_c != 1 (a transposed view, e.g. x.t() of a dense x, where stride_c is
// x's row length). copy_strided would then read with stride stride_c between neighbouring
// threads (uncoalesced). Here a block stages one 32x32 tile through shared memory: it reads the
// tile along r (unit source stride: coalesced loads), and writes it along c (dst's last dim:
// coalesced stores). The tile has one padding column (32x33), so the column-wise shared reads of
// the write phase hit 32 different banks (4- and 8-byte elements; 1- and 2-byte ones pack
// several per bank word and can meet 2-way conflicts). Edges (rows, cols not multiples of 32)
// are masked. One kernel per element size: transpose_b1/b2/b4/b8.
//   Launch: blockDim = (32, 8): each thread moves 4 elements per tile (rows j = ty, ty+8, ..);
//   grid = (tiles along cols, tiles along rows, batch), each dim capped (gridDim.y/z at 65535)
//   and walked with grid-stride loops, so any shape fits; 64-bit indexing; 32 * 33 elements of
//   static shared memory. Traffic: every element read once and written once.
//
// Fill. dst[i] = value for i < n; the value arrives as its bit pattern in an unsigned long long
// (low bytes), again one kernel per element size.
//
// Arange. dst[i] = start + i * step in double, with the product and the sum rounded apart
// (__dmul_rn/__dadd_rn: no FMA contraction), the CPU reference's `start + i as f64 * step`
// exactly; the tensor layer casts the f64 result to the asked dtype on the device, as the CPU
// casts its f64 values.
//
// Cast. dst[i] = convert(src[i]) for every pair of dtypes, with the CPU reference's rules
// (tensor/src/ops/compute.rs: through f64 unless a direct rounding exists):
//   float -> float: round to nearest even; f64 -> f16/bf16 goes through f32 (two roundings), as
//     PyTorch's c10::Half/BFloat16 conversions from double do and as the `half` crate does;
//   float -> integer: truncation toward zero, saturating at the integer type's range, NaN -> 0
//     (Rust's `as`);
//   integer -> float: round to nearest (i64 -> f32/f16/bf16 go through f64, as the CPU does);
//   integer -> integer: two's complement wrap-around (Rust's `as`).
//
// Launch (all but the transpose): 1-D grid-stride loops; blockDim.x = 256, gridDim.x = min(ceil(n / 256),
// 4 * SMs); no shared memory; 64-bit indexing.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

__device__ __forceinline__ unsigned long long grid_start() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned long long grid_stride() { return (unsigned long long)gridDim.x * blockDim.x; }

template <class T>
__device__ __forceinline__ void copy_strided(const T* src, T* dst, const long long* meta, int rank, long long offset,
                                             unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        unsigned long long rem = i;
        long long at = offset;
        for (int k = rank - 1; k >= 0; --k) {
            const unsigned long long d = (unsigned long long)meta[k];
            const unsigned long long idx = rem % d;
            rem /= d;
            at += (long long)idx * meta[rank + k];
        }
        dst[i] = src[at];
    }
}

constexpr int kTile = 32;     // a tile is kTile x kTile elements
constexpr int kTileRows = 8;  // blockDim.y: each thread moves kTile / kTileRows elements per tile

template <class T>
__device__ __forceinline__ void transpose_tiled(const T* src, T* dst, long long batch, long long rows, long long cols,
                                                long long stride_z, long long stride_r, long long stride_c,
                                                long long offset) {
    // tile[c - c0][r - r0]: written along its rows by the loads, read along its columns by the
    // stores; the padding column puts a column's 32 elements in 32 different banks.
    __shared__ T tile[kTile][kTile + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long tiles_r = (rows + kTile - 1) / kTile, tiles_c = (cols + kTile - 1) / kTile;
    // Block-uniform loops (every thread of a block iterates alike), so the barriers are safe.
    for (long long z = blockIdx.z; z < batch; z += gridDim.z) {
        const T* s = src + offset + z * stride_z;
        T* d = dst + z * rows * cols;
        for (long long tr = blockIdx.y; tr < tiles_r; tr += gridDim.y) {
            const long long r0 = tr * kTile;
            for (long long tc = blockIdx.x; tc < tiles_c; tc += gridDim.x) {
                const long long c0 = tc * kTile;
                // Load: lane tx takes row r0 + tx, so a warp reads 32 consecutive source elements.
                const long long r = r0 + tx;
                for (int j = ty; j < kTile; j += kTileRows) {
                    const long long c = c0 + j;
                    if (r < rows && c < cols) tile[j][tx] = s[r * stride_r + c * stride_c];
                }
                __syncthreads();
                // Store: lane tx takes column c0 + tx, so a warp writes 32 consecutive dst elements.
                const long long c = c0 + tx;
                for (int j = ty; j < kTile; j += kTileRows) {
                    const long long rr = r0 + j;
                    if (rr < rows && c < cols) d[rr * cols + c] = tile[tx][j];
                }
                __syncthreads();  // the next tile overwrites `tile`
            }
        }
    }
}

template <class T>
__device__ __forceinline__ void fill(T* dst, unsigned long long bits, unsigned long long n) {
    const T v = (T)bits;  // the low sizeof(T) bytes (little-endian bit pattern)
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) dst[i] = v;
}

// ---- conversions: every source widens to double (exact for all stapes dtypes but i64 beyond
// 2^53, where the CPU reference also goes through f64), every destination narrows from double.
__device__ __forceinline__ double widen(__half x) { return (double)__half2float(x); }
__device__ __forceinline__ double widen(__nv_bfloat16 x) { return (double)__bfloat162float(x); }
__device__ __forceinline__ double widen(float x) { return (double)x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ double widen(long long x) { return (double)x; }
__device__ __forceinline__ double widen(unsigned char x) { return (double)x; }
__device__ __forceinline__ double widen(signed char x) { return (double)x; }

template <class D>
__device__ __forceinline__ D narrow(double v);
template <>
__device__ __forceinline__ __half narrow<__half>(double v) {
    return __float2half_rn((float)v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(double v) {
    return __float2bfloat16_rn((float)v);
}
template <>
__device__ __forceinline__ float narrow<float>(double v) {
    return (float)v;
}
template <>
__device__ __forceinline__ double narrow<double>(double v) {
    return v;
}
// Truncation toward zero, saturating, NaN -> 0 (Rust's float-to-int `as`).
template <>
__device__ __forceinline__ long long narrow<long long>(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return 9223372036854775807LL;
    if (v <= -9223372036854775808.0) return (-9223372036854775807LL - 1);
    return (long long)v;
}
template <>
__device__ __forceinline__ unsigned char narrow<unsigned char>(double v) {
    if (v != v || v <= 0.0) return 0;
    if (v >= 255.0) return 255;
    return (unsigned char)v;
}
template <>
__device__ __forceinline__ signed char narrow<signed char>(double v) {
    if (v != v) return 0;
    if (v >= 127.0) return 127;
    if (v <= -128.0) return -128;
    return (signed char)v;
}

// Integer-to-integer casts wrap (two's complement), as Rust's `as` does; the rest go through f64.
template <class S, class D>
struct Convert {
    __device__ __forceinline__ static D apply(S x) { return narrow<D>(widen(x)); }
};
#define STAPES_INT_WRAP(S, D)                                                         \
    template <>                                                                       \
    struct Convert<S, D> {                                                            \
        __device__ __forceinline__ static D apply(S x) { return (D)x; }               \
    };
STAPES_INT_WRAP(long long, unsigned char)
STAPES_INT_WRAP(long long, signed char)
STAPES_INT_WRAP(unsigned char, long long)
STAPES_INT_WRAP(unsigned char, signed char)
STAPES_INT_WRAP(signed char, long long)
STAPES_INT_WRAP(signed char, unsigned char)
#undef STAPES_INT_WRAP

template <class S, class D>
__device__ __forceinline__ void cast(const S* src, D* dst, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) dst[i] = Convert<S, D>::apply(src[i]);
}

}  // namespace

// dst[i] = src[offset + sum_k idx_k(i) * strides_k], meta = dims[rank] ++ strides[rank]; and
// dst[i] = value (its bit pattern in `bits`). One pair per element size. (Written out, not
// generated by macros: build.rs finds kernels by their `extern "C" __global__` lines.)
extern "C" __global__ void copy_strided_b1(const unsigned char* src, unsigned char* dst, const long long* meta, int rank,
                                          long long offset, unsigned long long n) {
    copy_strided<unsigned char>(src, dst, meta, rank, offset, n);
}
extern "C" __global__ void fill_b1(unsigned char* dst, unsigned long long bits, unsigned long long n) {
    fill<unsigned char>(dst, bits, n);
}
extern "C" __global__ void copy_strided_b2(const unsigned short* src, unsigned short* dst, const long long* meta, int rank,
                                          long long offset, unsigned long long n) {
    copy_strided<unsigned short>(src, dst, meta, rank, offset, n);
}
extern "C" __global__ void fill_b2(unsigned short* dst, unsigned long long bits, unsigned long long n) {
    fill<unsigned short>(dst, bits, n);
}
extern "C" __global__ void copy_strided_b4(const unsigned int* src, unsigned int* dst, const long long* meta, int rank,
                                          long long offset, unsigned long long n) {
    copy_strided<unsigned int>(src, dst, meta, rank, offset, n);
}
extern "C" __global__ void fill_b4(unsigned int* dst, unsigned long long bits, unsigned long long n) {
    fill<unsigned int>(dst, bits, n);
}
extern "C" __global__ void copy_strided_b8(const unsigned long long* src, unsigned long long* dst, const long long* meta, int rank,
                                          long long offset, unsigned long long n) {
    copy_strided<unsigned long long>(src, dst, meta, rank, offset, n);
}
extern "C" __global__ void fill_b8(unsigned long long* dst, unsigned long long bits, unsigned long long n) {
    fill<unsigned long long>(dst, bits, n);
}

extern "C" __global__ void arange_f64(double* dst, double start, double step, unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = __dadd_rn(start, __dmul_rn((double)i, step));
    }
}

// dst[z, r, c] = src[offset + z * stride_z + r * stride_r + c * stride_c], dst dense
// [batch, rows, cols]: the tiled transpose, one per element size; blockDim must be (32, 8).
extern "C" __global__ void __launch_bounds__(256)
    transpose_b1(const unsigned char* src, unsigned char* dst, long long batch, long long rows, long long cols,
                 long long stride_z, long long stride_r, long long stride_c, long long offset) {
    transpose_tiled<unsigned char>(src, dst, batch, rows, cols, stride_z, stride_r, stride_c, offset);
}
extern "C" __global__ void __launch_bounds__(256)
    transpose_b2(const unsigned short* src, unsigned short* dst, long long batch, long long rows, long long cols,
                 long long stride_z, long long stride_r, long long stride_c, long long offset) {
    transpose_tiled<unsigned short>(src, dst, batch, rows, cols, stride_z, stride_r, stride_c, offset);
}
extern "C" __global__ void __launch_bounds__(256)
    transpose_b4(const unsigned int* src, unsigned int* dst, long long batch, long long rows, long long cols,
                 long long stride_z, long long stride_r, long long stride_c, long long offset) {
    transpose_tiled<unsigned int>(src, dst, batch, rows, cols, stride_z, stride_r, stride_c, offset);
}
extern "C" __global__ void __launch_bounds__(256)
    transpose_b8(const unsigned long long* src, unsigned long long* dst, long long batch, long long rows, long long cols,
                 long long stride_z, long long stride_r, long long stride_c, long long offset) {
    transpose_tiled<unsigned long long>(src, dst, batch, rows, cols, stride_z, stride_r, stride_c, offset);
}

// dst[i] = convert(src[i]), for every ordered pair of distinct dtypes.
extern "C" __global__ void cast_f16_bf16(const __half* src, __nv_bfloat16* dst, unsigned long long n) {
    cast<__half, __nv_bfloat16>(src, dst, n);
}
extern "C" __global__ void cast_f16_f32(const __half* src, float* dst, unsigned long long n) {
    cast<__half, float>(src, dst, n);
}
extern "C" __global__ void cast_f16_f64(const __half* src, double* dst, unsigned long long n) {
    cast<__half, double>(src, dst, n);
}
extern "C" __global__ void cast_f16_i64(const __half* src, long long* dst, unsigned long long n) {
    cast<__half, long long>(src, dst, n);
}
extern "C" __global__ void cast_f16_u8(const __half* src, unsigned char* dst, unsigned long long n) {
    cast<__half, unsigned char>(src, dst, n);
}
extern "C" __global__ void cast_f16_i8(const __half* src, signed char* dst, unsigned long long n) {
    cast<__half, signed char>(src, dst, n);
}
extern "C" __global__ void cast_bf16_f16(const __nv_bfloat16* src, __half* dst, unsigned long long n) {
    cast<__nv_bfloat16, __half>(src, dst, n);
}
extern "C" __global__ void cast_bf16_f32(const __nv_bfloat16* src, float* dst, unsigned long long n) {
    cast<__nv_bfloat16, float>(src, dst, n);
}
extern "C" __global__ void cast_bf16_f64(const __nv_bfloat16* src, double* dst, unsigned long long n) {
    cast<__nv_bfloat16, double>(src, dst, n);
}
extern "C" __global__ void cast_bf16_i64(const __nv_bfloat16* src, long long* dst, unsigned long long n) {
    cast<__nv_bfloat16, long long>(src, dst, n);
}
extern "C" __global__ void cast_bf16_u8(const __nv_bfloat16* src, unsigned char* dst, unsigned long long n) {
    cast<__nv_bfloat16, unsigned char>(src, dst, n);
}
extern "C" __global__ void cast_bf16_i8(const __nv_bfloat16* src, signed char* dst, unsigned long long n) {
    cast<__nv_bfloat16, signed char>(src, dst, n);
}
extern "C" __global__ void cast_f32_f16(const float* src, __half* dst, unsigned long long n) {
    cast<float, __half>(src, dst, n);
}
extern "C" __global__ void cast_f32_bf16(const float* src, __nv_bfloat16* dst, unsigned long long n) {
    cast<float, __nv_bfloat16>(src, dst, n);
}
extern "C" __global__ void cast_f32_f64(const float* src, double* dst, unsigned long long n) {
    cast<float, double>(src, dst, n);
}
extern "C" __global__ void cast_f32_i64(const float* src, long long* dst, unsigned long long n) {
    cast<float, long long>(src, dst, n);
}
extern "C" __global__ void cast_f32_u8(const float* src, unsigned char* dst, unsigned long long n) {
    cast<float, unsigned char>(src, dst, n);
}
extern "C" __global__ void cast_f32_i8(const float* src, signed char* dst, unsigned long long n) {
    cast<float, signed char>(src, dst, n);
}
extern "C" __global__ void cast_f64_f16(const double* src, __half* dst, unsigned long long n) {
    cast<double, __half>(src, dst, n);
}
extern "C" __global__ void cast_f64_bf16(const double* src, __nv_bfloat16* dst, unsigned long long n) {
    cast<double, __nv_bfloat16>(src, dst, n);
}
extern "C" __global__ void cast_f64_f32(const double* src, float* dst, unsigned long long n) {
    cast<double, float>(src, dst, n);
}
extern "C" __global__ void cast_f64_i64(const double* src, long long* dst, unsigned long long n) {
    cast<double, long long>(src, dst, n);
}
extern "C" __global__ void cast_f64_u8(const double* src, unsigned char* dst, unsigned long long n) {
    cast<double, unsigned char>(src, dst, n);
}
extern "C" __global__ void cast_f64_i8(const double* src, signed char* dst, unsigned long long n) {
    cast<double, signed char>(src, dst, n);
}
extern "C" __global__ void cast_i64_f16(const long long* src, __half* dst, unsigned long long n) {
    cast<long long, __half>(src, dst, n);
}
extern "C" __global__ void cast_i64_bf16(const long long* src, __nv_bfloat16* dst, unsigned long long n) {
    cast<long long, __nv_bfloat16>(src, dst, n);
}
extern "C" __global__ void cast_i64_f32(const long long* src, float* dst, unsigned long long n) {
    cast<long long, float>(src, dst, n);
}
extern "C" __global__ void cast_i64_f64(const long long* src, double* dst, unsigned long long n) {
    cast<long long, double>(src, dst, n);
}
extern "C" __global__ void cast_i64_u8(const long long* src, unsigned char* dst, unsigned long long n) {
    cast<long long, unsigned char>(src, dst, n);
}
extern "C" __global__ void cast_i64_i8(const long long* src, signed char* dst, unsigned long long n) {
    cast<long long, signed char>(src, dst, n);
}
extern "C" __global__ void cast_u8_f16(const unsigned char* src, __half* dst, unsigned long long n) {
    cast<unsigned char, __half>(src, dst, n);
}
extern "C" __global__ void cast_u8_bf16(const unsigned char* src, __nv_bfloat16* dst, unsigned long long n) {
    cast<unsigned char, __nv_bfloat16>(src, dst, n);
}
extern "C" __global__ void cast_u8_f32(const unsigned char* src, float* dst, unsigned long long n) {
    cast<unsigned char, float>(src, dst, n);
}
extern "C" __global__ void cast_u8_f64(const unsigned char* src, double* dst, unsigned long long n) {
    cast<unsigned char, double>(src, dst, n);
}
extern "C" __global__ void cast_u8_i64(const unsigned char* src, long long* dst, unsigned long long n) {
    cast<unsigned char, long long>(src, dst, n);
}
extern "C" __global__ void cast_u8_i8(const unsigned char* src, signed char* dst, unsigned long long n) {
    cast<unsigned char, signed char>(src, dst, n);
}
extern "C" __global__ void cast_i8_f16(const signed char* src, __half* dst, unsigned long long n) {
    cast<signed char, __half>(src, dst, n);
}
extern "C" __global__ void cast_i8_bf16(const signed char* src, __nv_bfloat16* dst, unsigned long long n) {
    cast<signed char, __nv_bfloat16>(src, dst, n);
}
extern "C" __global__ void cast_i8_f32(const signed char* src, float* dst, unsigned long long n) {
    cast<signed char, float>(src, dst, n);
}
extern "C" __global__ void cast_i8_f64(const signed char* src, double* dst, unsigned long long n) {
    cast<signed char, double>(src, dst, n);
}
extern "C" __global__ void cast_i8_i64(const signed char* src, long long* dst, unsigned long long n) {
    cast<signed char, long long>(src, dst, n);
}
extern "C" __global__ void cast_i8_u8(const signed char* src, unsigned char* dst, unsigned long long n) {
    cast<signed char, unsigned char>(src, dst, n);
}
