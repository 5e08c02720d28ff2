// index.cu: the index and shape kernels under the tensor layer's CUDA dispatch. Indices are
// i64 (long long); every buffer is dense row-major from element 0.
//
// Index check: index_find_bad atomically takes the minimum position i with idx[i] outside
// [0, size) into first[0] (initialised to n by the caller); index_fetch_bad (one thread) then
// copies idx[first[0]] into first[1], so the host downloads two values, not the indices, to
// report the same first bad index as the CPU. The other kernels skip an out-of-range index
// (gather/index_select leave the output element as allocated, the adds add nothing), so they are
// memory-safe even on unchecked input; the tensor layer checks first and reports the error.
//
// gather_bK:       out[i] = src[p(i) with p[dim] = idx[i]], p(i) the multi-index of i in the
//                  index shape; meta = index dims (rank), src strides (rank).
// scatter_add_T:   out[p(i) with p[dim] = idx[i]] += src[p(i)] with atomicAdd (duplicates
//                  accumulate; the order, and so f32 rounding, is unspecified); meta = index
//                  dims, src strides, out strides (rank each). f32 and f64 (the tensor layer
//                  accumulates f16/bf16 in f32, as the CPU does).
// index_select_bK: out[o, j, r] = src[o, idx[j], r] over [outer, nidx, inner].
// index_add_T:     out[o, idx[j], r] += src[o, j, r] with atomicAdd.
// cat_slab_bK:     dst[o * row + col + x] = src[o * w + x]: one input of a concatenation along
//                  a dim, viewed as [outer, w] inside the [outer, row] output.
// pad_bK:          out[p] = src[q], q[k] = p[k] - lo[k], reflected into [0, src_dims[k]) (mode
//                  reflect: -1 -> 1, size -> size - 2) or the constant (bit pattern `bits`)
//                  where q leaves the source (mode constant); meta = out dims, src dims, lo.
// The bK kernels move bytes (one kernel per element size serves every dtype).
//
// Launch (all but index_fetch_bad): 1-D grid-stride loops over the n output (gather,
// index_select, cat_slab, pad) or source (scatter_add, index_add, index_find_bad) elements;
// blockDim.x = 256, gridDim.x = min(ceil(n / 256), 4 * SMs); no shared memory. index_fetch_bad:
// one thread. Memory traffic: each output (or source) element and its index read once; gathers
// read src at data-dependent addresses.

namespace {

__device__ __forceinline__ unsigned long long grid_start() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned long long grid_stride() { return (unsigned long long)gridDim.x * blockDim.x; }

template <class T>
__device__ __forceinline__ void gather(const T* src, const long long* idx, T* out, const long long* meta, int rank,
                                       int dim, long long size, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        const long long j = idx[i];
        if (j < 0 || j >= size) continue;
        unsigned long long rem = i;
        long long at = 0;
        for (int k = rank - 1; k >= 0; --k) {
            const unsigned long long d = (unsigned long long)meta[k];
            const long long c = (long long)(rem % d);
            rem /= d;
            at += (k == dim ? j : c) * meta[rank + k];
        }
        out[i] = src[at];
    }
}

template <class T>
__device__ __forceinline__ void scatter_add(const T* src, const long long* idx, T* out, const long long* meta, int rank,
                                            int dim, long long size, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        const long long j = idx[i];
        if (j < 0 || j >= size) continue;
        unsigned long long rem = i;
        long long from = 0, to = 0;
        for (int k = rank - 1; k >= 0; --k) {
            const unsigned long long d = (unsigned long long)meta[k];
            const long long c = (long long)(rem % d);
            rem /= d;
            from += c * meta[rank + k];
            to += (k == dim ? j : c) * meta[2 * rank + k];
        }
        atomicAdd(out + to, src[from]);
    }
}

template <class T>
__device__ __forceinline__ void index_select(const T* src, const long long* idx, T* out, unsigned long long outer,
                                             unsigned long long size, unsigned long long nidx,
                                             unsigned long long inner) {
    const unsigned long long n = outer * nidx * inner;
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        const unsigned long long r = i % inner, j = (i / inner) % nidx, o = i / (inner * nidx);
        const long long s = idx[j];
        if (s < 0 || (unsigned long long)s >= size) continue;
        out[i] = src[(o * size + (unsigned long long)s) * inner + r];
    }
}

template <class T>
__device__ __forceinline__ void index_add(const T* src, const long long* idx, T* out, unsigned long long outer,
                                          unsigned long long size, unsigned long long nidx, unsigned long long inner) {
    const unsigned long long n = outer * nidx * inner;
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        const unsigned long long r = i % inner, j = (i / inner) % nidx, o = i / (inner * nidx);
        const long long s = idx[j];
        if (s < 0 || (unsigned long long)s >= size) continue;
        atomicAdd(out + (o * size + (unsigned long long)s) * inner + r, src[i]);
    }
}

template <class T>
__device__ __forceinline__ void cat_slab(const T* src, T* dst, unsigned long long outer, unsigned long long w,
                                         unsigned long long row, unsigned long long col) {
    const unsigned long long n = outer * w;
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        const unsigned long long o = i / w, x = i % w;
        dst[o * row + col + x] = src[i];
    }
}

template <class T>
__device__ __forceinline__ void pad(const T* src, T* dst, const long long* meta, int rank, int reflect,
                                    unsigned long long bits, unsigned long long n) {
    const T value = (T)bits;
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        unsigned long long rem = i;
        long long at = 0, stride = 1;
        bool inside = true;
        for (int k = rank - 1; k >= 0; --k) {
            const unsigned long long d = (unsigned long long)meta[k];
            const long long sd = meta[rank + k];
            long long q = (long long)(rem % d) - meta[2 * rank + k];
            rem /= d;
            if (q < 0 || q >= sd) {
                if (!reflect) {
                    inside = false;
                    break;
                }
                // pads are smaller than the dim (checked), so one reflection lands inside
                q = q < 0 ? -q : 2 * (sd - 1) - q;
            }
            at += q * stride;
            stride *= sd;
        }
        dst[i] = inside ? src[at] : value;
    }
}

}  // namespace

extern "C" __global__ void index_find_bad(const long long* idx, unsigned long long n, long long size,
                                          long long* first) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        const long long j = idx[i];
        if (j < 0 || j >= size) atomicMin(first, (long long)i);
    }
}
extern "C" __global__ void index_fetch_bad(const long long* idx, unsigned long long n, long long* first) {
    if (grid_start() == 0 && (unsigned long long)first[0] < n) first[1] = idx[first[0]];
}

// One kernel per element size or float type (build.rs finds kernels by their literal
// `extern "C" __global__` lines, so no macro-generated names).
extern "C" __global__ void gather_b1(const unsigned char* src, const long long* idx, unsigned char* out,
                                     const long long* meta, int rank, int dim, long long size, unsigned long long n) {
    gather(src, idx, out, meta, rank, dim, size, n);
}
extern "C" __global__ void gather_b2(const unsigned short* src, const long long* idx, unsigned short* out,
                                     const long long* meta, int rank, int dim, long long size, unsigned long long n) {
    gather(src, idx, out, meta, rank, dim, size, n);
}
extern "C" __global__ void gather_b4(const unsigned int* src, const long long* idx, unsigned int* out,
                                     const long long* meta, int rank, int dim, long long size, unsigned long long n) {
    gather(src, idx, out, meta, rank, dim, size, n);
}
extern "C" __global__ void gather_b8(const unsigned long long* src, const long long* idx, unsigned long long* out,
                                     const long long* meta, int rank, int dim, long long size, unsigned long long n) {
    gather(src, idx, out, meta, rank, dim, size, n);
}

extern "C" __global__ void scatter_add_f32(const float* src, const long long* idx, float* out, const long long* meta,
                                           int rank, int dim, long long size, unsigned long long n) {
    scatter_add(src, idx, out, meta, rank, dim, size, n);
}
extern "C" __global__ void scatter_add_f64(const double* src, const long long* idx, double* out, const long long* meta,
                                           int rank, int dim, long long size, unsigned long long n) {
    scatter_add(src, idx, out, meta, rank, dim, size, n);
}

extern "C" __global__ void index_select_b1(const unsigned char* src, const long long* idx, unsigned char* out,
                                           unsigned long long outer, unsigned long long size, unsigned long long nidx,
                                           unsigned long long inner) {
    index_select(src, idx, out, outer, size, nidx, inner);
}
extern "C" __global__ void index_select_b2(const unsigned short* src, const long long* idx, unsigned short* out,
                                           unsigned long long outer, unsigned long long size, unsigned long long nidx,
                                           unsigned long long inner) {
    index_select(src, idx, out, outer, size, nidx, inner);
}
extern "C" __global__ void index_select_b4(const unsigned int* src, const long long* idx, unsigned int* out,
                                           unsigned long long outer, unsigned long long size, unsigned long long nidx,
                                           unsigned long long inner) {
    index_select(src, idx, out, outer, size, nidx, inner);
}
extern "C" __global__ void index_select_b8(const unsigned long long* src, const long long* idx, unsigned long long* out,
                                           unsigned long long outer, unsigned long long size, unsigned long long nidx,
                                           unsigned long long inner) {
    index_select(src, idx, out, outer, size, nidx, inner);
}

extern "C" __global__ void index_add_f32(const float* src, const long long* idx, float* out, unsigned long long outer,
                                         unsigned long long size, unsigned long long nidx, unsigned long long inner) {
    index_add(src, idx, out, outer, size, nidx, inner);
}
extern "C" __global__ void index_add_f64(const double* src, const long long* idx, double* out, unsigned long long outer,
                                         unsigned long long size, unsigned long long nidx, unsigned long long inner) {
    index_add(src, idx, out, outer, size, nidx, inner);
}

extern "C" __global__ void cat_slab_b1(const unsigned char* src, unsigned char* dst, unsigned long long outer,
                                       unsigned long long w, unsigned long long row, unsigned long long col) {
    cat_slab(src, dst, outer, w, row, col);
}
extern "C" __global__ void cat_slab_b2(const unsigned short* src, unsigned short* dst, unsigned long long outer,
                                       unsigned long long w, unsigned long long row, unsigned long long col) {
    cat_slab(src, dst, outer, w, row, col);
}
extern "C" __global__ void cat_slab_b4(const unsigned int* src, unsigned int* dst, unsigned long long outer,
                                       unsigned long long w, unsigned long long row, unsigned long long col) {
    cat_slab(src, dst, outer, w, row, col);
}
extern "C" __global__ void cat_slab_b8(const unsigned long long* src, unsigned long long* dst, unsigned long long outer,
                                       unsigned long long w, unsigned long long row, unsigned long long col) {
    cat_slab(src, dst, outer, w, row, col);
}

extern "C" __global__ void pad_b1(const unsigned char* src, unsigned char* dst, const long long* meta, int rank,
                                  int reflect, unsigned long long bits, unsigned long long n) {
    pad(src, dst, meta, rank, reflect, bits, n);
}
extern "C" __global__ void pad_b2(const unsigned short* src, unsigned short* dst, const long long* meta, int rank,
                                  int reflect, unsigned long long bits, unsigned long long n) {
    pad(src, dst, meta, rank, reflect, bits, n);
}
extern "C" __global__ void pad_b4(const unsigned int* src, unsigned int* dst, const long long* meta, int rank,
                                  int reflect, unsigned long long bits, unsigned long long n) {
    pad(src, dst, meta, rank, reflect, bits, n);
}
extern "C" __global__ void pad_b8(const unsigned long long* src, unsigned long long* dst, const long long* meta,
                                  int rank, int reflect, unsigned long long bits, unsigned long long n) {
    pad(src, dst, meta, rank, reflect, bits, n);
}
