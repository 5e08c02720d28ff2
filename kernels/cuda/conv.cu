// conv.cu: the data-movement halves of a 2-D convolution (NCHW, f32) around cuBLAS GEMMs, and
// its fused bias + activation epilogue. CPU reference: kernels/src/cpu/conv.rs (Conv2dGeom,
// conv2d_forward / conv2d_backward_input / conv2d_backward_weight / conv2d_backward_bias).
//
// Column matrix: for each image, col [K, OH*OW] with K = C_in * KH * KW and row
//   r = (ci * KH + ky) * KW + kx,   col[r][oy * OW + ox] = x[ci][oy*SH - PH + ky*DH][ox*SW - PW + kx*DW]
// (0 where the tap falls into the padding). Group g's rows are the contiguous block
// [g * K/G, (g + 1) * K/G), so with groups the GEMMs are
//   forward          out[g] (C_out/G x OHW) = W[g] (C_out/G x K/G) . col[g]
//   backward input   gcol[g] (K/G x OHW)    = W[g]^T . grad_out[g],  then col2im
//   backward weight  dW[g] (C_out/G x K/G) += grad_out[g] . col[g]^T  (summed over images)
// The kernels work on a range of images [first_image, first_image + images) so a caller can
// bound the column workspace (images * K * OHW floats).
//
// im2col_f32: column rows over blockIdx.y (grid-stride), positions along OHW over the threads of
//   blockIdx.x (grid-stride): coalesced writes, reads strided by SW. Traffic: reads
//   ~KH*KW/(SH*SW) times the input range (mostly from L2), writes images * K * OHW floats.
// col2im_f32: the transpose, with no atomics (planes over blockIdx.y, a plane's positions over the
//   threads of blockIdx.x): one thread per input element gathers the (at most
//   KH*KW) column entries that its taps produced, in (ky, kx) order, and writes the sum (grad_in
//   is overwritten, and the result is deterministic). A tap hits input row iy from output row
//   oy = (iy + PH - ky*DH) / SH when that division is exact and 0 <= oy < OH (same for columns).
//   Traffic: reads up to KH*KW gathered column floats per input element, writes the input range.
// conv_bias_act_f32: y[b][co][q] = act(y + bias[co]) in place over [N, C_out, OHW], act = identity
//   or ReLU; one thread per element, grid-stride. Reads and writes N*C_out*OHW floats.
// conv_bias_grad_f32: grad_bias[co] = sum over images and positions of grad[b][co][:]; one block
//   per channel (grid-stride over channels), a fixed-order tree reduction (deterministic).
// conv_bias_relu_backward_f32: the same reduction of the gradient through the ReLU,
//   g = grad_y * (y > 0) (y the ReLU output), also written to grad_pre (the pre-activation
//   gradient the weight and input GEMMs need): one pass over grad_y and y.
// Launch: the element-wise kernels 256 threads, grid min(ceil(n / 256), 4 * SMs); the channel
// reductions min(C, 8 * SMs) blocks of a multiple of 32 threads (at most 1024), 128 bytes of
// static shared memory.

namespace {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// Sum of v over the block, returned to every thread. Uses `partial` (32 floats of shared
// memory); two barriers, so it may be called again right away (e.g. in a loop over channels).
__device__ __forceinline__ float block_sum(float v, float* partial) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = lane < warps ? partial[lane] : 0.0f;
    total = warp_sum(total);  // every warp sums the partials in the same order
    __syncthreads();          // partial[] is free again
    return total;
}

// (row, column) = (p / w, p % w); in 32 bits when `narrow` (p and w below 2^32), where the
// division costs a fraction of the 64-bit one.
__device__ __forceinline__ void split(unsigned long long p, unsigned long long w, bool narrow,
                                      unsigned long long& row, unsigned long long& col) {
    if (narrow) {
        const unsigned p32 = (unsigned)p, w32 = (unsigned)w, r32 = p32 / w32;
        row = r32;
        col = p32 - r32 * w32;
    } else {
        row = p / w;
        col = p - row * w;
    }
}

// The output row/column of tap k hitting input coordinate i, or -1.
__device__ __forceinline__ long long tap_output(long long i, long long k, long long stride, long long pad,
                                                long long dil, long long out_len) {
    const long long num = i + pad - k * dil;
    if (num < 0) return -1;
    if (stride == 1) return num < out_len ? num : -1;  // no 64-bit division in the common case
    const long long o = num / stride;
    return (o * stride == num && o < out_len) ? o : -1;
}

}  // namespace

// The geometry every conv kernel takes, as kernel parameters (in this order).
#define CONV_GEOM_PARAMS                                                                                          \
    unsigned long long c_in, unsigned long long h, unsigned long long w, unsigned long long kh,                   \
        unsigned long long kw, unsigned long long sh, unsigned long long sw, unsigned long long ph,                \
        unsigned long long pw, unsigned long long dh, unsigned long long dw, unsigned long long oh,                \
        unsigned long long ow

// col[i - first_image] (images x [K, OH*OW]) from images [first_image, first_image + images) of x.
// Rows (image, ci, ky, kx) are spread over blockIdx.y and decomposed once per row; the threads
// of blockIdx.x walk the row's OH*OW positions, so an element costs one division (q / OW, in
// 32 bits when OH*OW allows). (One thread per element with all the 64-bit divisions per element
// was compute-bound on an H100: the forward conv ran at 2.3x cuDNN's time.)
extern "C" __global__ void im2col_f32(const float* x, unsigned long long first_image, unsigned long long images,
                                      CONV_GEOM_PARAMS, float* col) {
    const unsigned long long ohw = oh * ow, k_rows = c_in * kh * kw;
    const unsigned long long rows = images * k_rows;
    const float* xs = x + first_image * c_in * h * w;
    const bool narrow = ohw <= 0xffffffffull;
    for (unsigned long long rr = blockIdx.y; rr < rows; rr += gridDim.y) {
        const unsigned long long r = rr % k_rows, img = rr / k_rows;
        const unsigned long long kx = r % kw, ky = (r / kw) % kh, ci = r / (kw * kh);
        const float* xc = xs + (img * c_in + ci) * h * w;
        float* crow = col + rr * ohw;
        const long long y0 = (long long)(ky * dh) - (long long)ph, x0 = (long long)(kx * dw) - (long long)pw;
        for (unsigned long long q = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; q < ohw;
             q += (unsigned long long)gridDim.x * blockDim.x) {
            unsigned long long oy, ox;
            split(q, ow, narrow, oy, ox);
            const long long iy = (long long)(oy * sh) + y0;
            const long long ix = (long long)(ox * sw) + x0;
            float v = 0.0f;
            if (iy >= 0 && iy < (long long)h && ix >= 0 && ix < (long long)w) v = xc[iy * (long long)w + ix];
            crow[q] = v;
        }
    }
}

// grad_in for images [first_image, first_image + images) (overwritten) from their column
// gradients col (images x [K, OH*OW]).
extern "C" __global__ void col2im_f32(const float* col, unsigned long long first_image, unsigned long long images,
                                      CONV_GEOM_PARAMS, float* grad_in) {
    const unsigned long long ohw = oh * ow, k_rows = c_in * kh * kw, hw = h * w;
    const unsigned long long planes = images * c_in;
    float* gi = grad_in + first_image * c_in * hw;
    const bool narrow = hw <= 0xffffffffull;
    // planes (image, ci) over blockIdx.y, positions (iy, ix) of the plane over blockIdx.x
    for (unsigned long long plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const unsigned long long ci = plane % c_in, img = plane / c_in;
        const float* c = col + (img * k_rows + ci * kh * kw) * ohw;
        float* out = gi + plane * hw;
        for (unsigned long long p = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; p < hw;
             p += (unsigned long long)gridDim.x * blockDim.x) {
            unsigned long long iy, ix;
            split(p, w, narrow, iy, ix);
            float acc = 0.0f;
            for (unsigned long long ky = 0; ky < kh; ++ky) {
                const long long oy = tap_output(iy, ky, sh, ph, dh, oh);
                if (oy < 0) continue;
                for (unsigned long long kx = 0; kx < kw; ++kx) {
                    const long long ox = tap_output(ix, kx, sw, pw, dw, ow);
                    if (ox < 0) continue;
                    acc += c[(ky * kw + kx) * ohw + oy * ow + ox];
                }
            }
            out[p] = acc;
        }
    }
}

#undef CONV_GEOM_PARAMS

// y = act(y + bias[channel]) over [N, C, S] in place; has_bias = 0 skips the bias, relu = 0 is
// the identity.
extern "C" __global__ void conv_bias_act_f32(float* y, unsigned long long n, unsigned long long channels,
                                             unsigned long long s, const float* bias, unsigned has_bias,
                                             unsigned relu) {
    const unsigned long long total = n * channels * s;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        float v = y[e];
        if (has_bias) v += bias[(e / s) % channels];
        if (relu && v < 0.0f) v = 0.0f;  // a NaN stays NaN, as in PyTorch
        y[e] = v;
    }
}

// grad_bias[c] = sum of grad[b][c][j] over b < N, j < S.
extern "C" __global__ void conv_bias_grad_f32(const float* grad, unsigned long long n, unsigned long long channels,
                                              unsigned long long s, float* grad_bias) {
    __shared__ float partial[32];
    for (unsigned long long c = blockIdx.x; c < channels; c += gridDim.x) {
        float acc = 0.0f;
        for (unsigned long long b = 0; b < n; ++b) {
            const float* g = grad + (b * channels + c) * s;
            for (unsigned long long j = threadIdx.x; j < s; j += blockDim.x) acc += g[j];
        }
        acc = block_sum(acc, partial);
        if (threadIdx.x == 0) grad_bias[c] = acc;
    }
}

// grad_pre = grad_y * (y > 0) and grad_bias[c] = its sum per channel, y the ReLU's output.
extern "C" __global__ void conv_bias_relu_backward_f32(const float* grad_y, const float* y, unsigned long long n,
                                                       unsigned long long channels, unsigned long long s,
                                                       float* grad_pre, float* grad_bias) {
    __shared__ float partial[32];
    for (unsigned long long c = blockIdx.x; c < channels; c += gridDim.x) {
        float acc = 0.0f;
        for (unsigned long long b = 0; b < n; ++b) {
            const unsigned long long base = (b * channels + c) * s;
            for (unsigned long long j = threadIdx.x; j < s; j += blockDim.x) {
                const float g = y[base + j] > 0.0f ? grad_y[base + j] : 0.0f;
                grad_pre[base + j] = g;
                acc += g;
            }
        }
        acc = block_sum(acc, partial);
        if (threadIdx.x == 0) grad_bias[c] = acc;
    }
}
