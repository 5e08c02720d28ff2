// norm.cu: layer norm and batch norm, forward and backward, f32. CPU reference:
// kernels/src/cpu/norm.rs (layer_norm_forward / layer_norm_backward, batch_norm_forward /
// batch_norm_backward): the same formulas and saved statistics (mean and rstd = 1/sqrt(var + eps)
// with the biased variance), accumulated here in f32 (the CPU accumulates in f64).
//
// Statistics use Welford's update per thread (count, mean, M2; no catastrophic cancellation
// for data far from zero) and Chan et al.'s pairwise merge across the warp (__shfl_xor_sync)
// and across warps (shared memory). Lane 0's result is broadcast after each butterfly (the merge
// is not bit-symmetric), so every thread normalises with the same statistics, and every warp
// merges the warp partials in the same order: deterministic.
//
// Layer norm on [rows, cols]:
//   layer_norm_forward_f32: one block per row (grid-stride over rows); Welford over the row,
//     saves mean and rstd, y = (x - mean) * rstd * w + b. Reads the row twice (the second time
//     from L1/L2), writes it once. Rows of at most 1024 columns take layer_norm_warp_forward_f32
//     instead: one warp per row held in registers (read once), blockDim.x = 256 (8 rows per
//     block), gridDim.x = min(ceil(rows / 8), 8 * SMs).
//   layer_norm_backward_input_f32: one block per row; block sums of g*w and g*w*(x - mean), then
//     grad_x = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)). Reads x and grad_y twice.
//   layer_norm_grad_params_partial_f32 + layer_norm_grad_params_finish_f32: grad_w = sum over rows
//     of g * xhat, grad_b = sum of g, a column reduction in two deterministic stages: blocks of
//     32 x 8 threads own 32 columns of a chunk of rows (each of 8 row lanes sums every 8th row,
//     then the 8 partials are added in order through shared memory) and write [2, chunks, cols]
//     partials; the finish kernel (one thread per column) adds the chunks in order. Reads x and
//     grad_y once more, coalesced along columns.
// Batch norm on [n, c, s] (s = product of the spatial dims, 1 for BatchNorm1d on [n, c]):
//   batch_norm_stats_f32 (training): one block per channel (grid-stride over channels); Welford
//     over the channel's n planes of s values; saves mean and rstd and updates the given running stats,
//     running = (1 - momentum) running + momentum stat (the unbiased variance for running_var).
//   batch_norm_eval_stats_f32 (inference): save_mean = running_mean, save_rstd from running_var.
//   batch_norm_apply_f32: y = x * scale + shift, scale = w * rstd, shift = b - mean * scale; one
//     thread per element (grid-stride).
//   batch_norm_grad_sums_f32: one block per channel: sums[2c] = sum g, sums[2c + 1] = sum g (x - mean).
//   batch_norm_grad_params_f32: grad_w = sums[2c + 1] * rstd, grad_b = sums[2c] (one thread per channel).
//   batch_norm_backward_input_f32: training grad_x = (g - mean(g)) k1 - (x - mean) k2 with
//     k1 = w rstd, k2 = k1 rstd^2 mean(g (x - mean)); inference grad_x = g k1; one thread per element.
// A channel's elements are visited plane by plane (threads along s) when s >= blockDim.x, else
// as one flat range of n * s (BatchNorm1d: threads along the batch).
// Launch: row/channel kernels gridDim.x = min(rows or c, 8 * SMs), blockDim.x a multiple of 32
// (at most 1024; the launchers use min(256, row length rounded up to 32)), 384 bytes of static
// shared memory; the element-wise kernels 256 threads, grid min(ceil(n / 256), 4 * SMs); the
// column-partial kernel blockDim (32, 8), grid (min(column tiles, 65535), chunks <= 65535), 2112
// bytes of static shared memory.
// Optional operands (weight, bias, running stats, grad_w, grad_b) come with a has_* flag; a
// missing one is never dereferenced.

namespace {

// Registers per lane of the warp-per-row layer norm (rows of at most 32 * kRowCache columns).
// On an H100 the block-per-row kernel reached 32% of the device-to-device copy's bandwidth on
// [65536, 1024].
constexpr int kRowCache = 32;

constexpr unsigned kFullMask = 0xffffffffu;

// Welford state of a set of values: count, mean, sum of squared deviations.
struct Moments {
    float n, mean, m2;
};

__device__ __forceinline__ void moments_add(Moments& a, float v) {
    a.n += 1.0f;
    const float d = v - a.mean;
    a.mean += d / a.n;
    a.m2 += d * (v - a.mean);
}

// Chan et al.: merges b into a.
__device__ __forceinline__ void moments_merge(Moments& a, float nb, float mb, float m2b) {
    const float n = a.n + nb;
    if (n == 0.0f) return;
    const float delta = mb - a.mean;
    const float fb = nb / n;
    a.mean += delta * fb;
    a.m2 += m2b + delta * delta * a.n * fb;
    a.n = n;
}

__device__ __forceinline__ void warp_merge(Moments& a) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float nb = __shfl_xor_sync(kFullMask, a.n, offset);
        const float mb = __shfl_xor_sync(kFullMask, a.mean, offset);
        const float m2b = __shfl_xor_sync(kFullMask, a.m2, offset);
        moments_merge(a, nb, mb, m2b);
    }
    // the butterfly leaves lanes with results that may differ in the last bit: take lane 0's
    a.n = __shfl_sync(kFullMask, a.n, 0);
    a.mean = __shfl_sync(kFullMask, a.mean, 0);
    a.m2 = __shfl_sync(kFullMask, a.m2, 0);
}

// The moments of the whole block, in every thread. `part` is 3 * 32 floats of shared memory;
// two barriers, so the caller may reuse `part` right away.
__device__ __forceinline__ Moments block_moments(Moments a, float* part) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    warp_merge(a);
    if (lane == 0) {
        part[warp] = a.n;
        part[32 + warp] = a.mean;
        part[64 + warp] = a.m2;
    }
    __syncthreads();
    Moments t = {0.0f, 0.0f, 0.0f};
    if (lane < warps) t = Moments{part[lane], part[32 + lane], part[64 + lane]};
    warp_merge(t);
    __syncthreads();
    return t;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// Block sums of two values, in every thread (same order in every warp: identical results).
// `part` is 2 * 32 floats of shared memory; two barriers.
__device__ __forceinline__ void block_sum2(float& a, float& b, float* part) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) {
        part[warp] = a;
        part[32 + warp] = b;
    }
    __syncthreads();
    a = warp_sum(lane < warps ? part[lane] : 0.0f);
    b = warp_sum(lane < warps ? part[32 + lane] : 0.0f);
    __syncthreads();
}

// Calls f(i) for every element index i of channel ch of [n, c, s] data that this thread owns.
template <class F>
__device__ __forceinline__ void for_channel(unsigned long long n, unsigned long long c, unsigned long long s,
                                            unsigned long long ch, F f) {
    if (s >= blockDim.x) {
        for (unsigned long long b = 0; b < n; ++b) {
            const unsigned long long base = (b * c + ch) * s;
            for (unsigned long long j = threadIdx.x; j < s; j += blockDim.x) f(base + j);
        }
    } else {
        const unsigned long long total = n * s;
        for (unsigned long long k = threadIdx.x; k < total; k += blockDim.x) {
            const unsigned long long b = k / s, j = k - b * s;
            f((b * c + ch) * s + j);
        }
    }
}

__device__ __forceinline__ unsigned long long grid_start() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned long long grid_stride() { return (unsigned long long)gridDim.x * blockDim.x; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Layer norm
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void layer_norm_forward_f32(const float* x, unsigned long long rows, unsigned long long cols,
                                                  const float* weight, unsigned has_weight, const float* bias,
                                                  unsigned has_bias, float eps, float* y, float* mean, float* rstd) {
    __shared__ float part[96];
    for (unsigned long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        Moments m = {0.0f, 0.0f, 0.0f};
        for (unsigned long long j = threadIdx.x; j < cols; j += blockDim.x) moments_add(m, xr[j]);
        m = block_moments(m, part);
        const float mu = m.mean;
        const float rs = rsqrtf((cols > 0 ? m.m2 / (float)cols : 0.0f) + eps);
        if (threadIdx.x == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
        for (unsigned long long j = threadIdx.x; j < cols; j += blockDim.x) {
            float v = (xr[j] - mu) * rs;
            if (has_weight) v *= weight[j];
            if (has_bias) v += bias[j];
            yr[j] = v;
        }
    }
}

// Rows of at most 32 * kRowCache (1024) columns: one warp per row, the row in registers
// (column j = lane + 32 k in v[k]); the mean, then the sum of squared deviations from it (two
// passes over the registers, exact in the order shown), reduced by warp shuffles alone (no
// shared memory, no barrier); y written from the registers. The row is read once and written
// once. A block of 8 warps takes 8 rows; warps stride over the rows.
extern "C" __global__ void layer_norm_warp_forward_f32(const float* x, unsigned long long rows,
                                                       unsigned long long cols, const float* weight,
                                                       unsigned has_weight, const float* bias, unsigned has_bias,
                                                       float eps, float* y, float* mean, float* rstd) {
    const unsigned lane = threadIdx.x & 31u;
    const unsigned long long per_block = blockDim.x >> 5;
    const unsigned long long stride = (unsigned long long)gridDim.x * per_block;
    for (unsigned long long r = blockIdx.x * per_block + (threadIdx.x >> 5); r < rows; r += stride) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float v[kRowCache];
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < kRowCache; ++k) {
            const unsigned long long j = lane + 32ull * k;
            v[k] = j < cols ? xr[j] : 0.0f;
            sum += v[k];
        }
        const float mu = warp_sum(sum) / (float)cols;
        float sq = 0.0f;
#pragma unroll
        for (int k = 0; k < kRowCache; ++k) {
            const float d = lane + 32ull * k < cols ? v[k] - mu : 0.0f;
            sq += d * d;
        }
        const float rs = rsqrtf(warp_sum(sq) / (float)cols + eps);
        if (lane == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
#pragma unroll
        for (int k = 0; k < kRowCache; ++k) {
            const unsigned long long j = lane + 32ull * k;
            if (j < cols) {
                float o = (v[k] - mu) * rs;
                if (has_weight) o *= weight[j];
                if (has_bias) o += bias[j];
                yr[j] = o;
            }
        }
    }
}

extern "C" __global__ void layer_norm_backward_input_f32(const float* x, const float* grad_y, unsigned long long rows,
                                                         unsigned long long cols, const float* weight,
                                                         unsigned has_weight, const float* mean, const float* rstd,
                                                         float* grad_x) {
    __shared__ float part[64];
    for (unsigned long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * cols;
        const float* gr = grad_y + r * cols;
        float* gx = grad_x + r * cols;
        const float mu = mean[r], rs = rstd[r];
        float sd = 0.0f, sdx = 0.0f;
        for (unsigned long long j = threadIdx.x; j < cols; j += blockDim.x) {
            // __fmul_rn: the same rounded product here and below (a contraction into the sum
            // here only would make d - a nonzero for a one-element row, times rstd ~ 1/sqrt(eps))
            const float d = has_weight ? __fmul_rn(gr[j], weight[j]) : gr[j];
            sd += d;
            sdx += d * (xr[j] - mu);
        }
        block_sum2(sd, sdx, part);
        const float a = sd / (float)cols;
        const float b = sdx * rs / (float)cols;
        for (unsigned long long j = threadIdx.x; j < cols; j += blockDim.x) {
            const float d = has_weight ? __fmul_rn(gr[j], weight[j]) : gr[j];
            gx[j] = rs * (d - a - (xr[j] - mu) * rs * b);
        }
    }
}

// partial[0][chunk][j] = sum of g * xhat, partial[1][chunk][j] = sum of g, over the rows
// [chunk * rows_per_chunk, (chunk + 1) * rows_per_chunk) of column j; chunk = blockIdx.y.
extern "C" __global__ void layer_norm_grad_params_partial_f32(const float* x, const float* grad_y,
                                                              unsigned long long rows, unsigned long long cols,
                                                              const float* mean, const float* rstd,
                                                              unsigned long long rows_per_chunk, float* partial) {
    __shared__ float sum_w[8][33];
    __shared__ float sum_b[8][33];
    const unsigned tx = threadIdx.x, ty = threadIdx.y;  // blockDim = (32, 8)
    const unsigned long long chunks = gridDim.y, chunk = blockIdx.y;
    const unsigned long long r0 = chunk * rows_per_chunk;
    const unsigned long long r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    for (unsigned long long tile = blockIdx.x; tile * 32 < cols; tile += gridDim.x) {
        const unsigned long long j = tile * 32 + tx;
        float aw = 0.0f, ab = 0.0f;
        if (j < cols) {
            for (unsigned long long r = r0 + ty; r < r1; r += 8) {
                const float g = grad_y[r * cols + j];
                aw += g * ((x[r * cols + j] - mean[r]) * rstd[r]);
                ab += g;
            }
        }
        sum_w[ty][tx] = aw;
        sum_b[ty][tx] = ab;
        __syncthreads();
        if (ty == 0 && j < cols) {
            float tw = 0.0f, tb = 0.0f;
            for (int k = 0; k < 8; ++k) {
                tw += sum_w[k][tx];
                tb += sum_b[k][tx];
            }
            partial[chunk * cols + j] = tw;
            partial[(chunks + chunk) * cols + j] = tb;
        }
        __syncthreads();  // sum_w/sum_b are reused by the next tile
    }
}

// grad_weight[j] / grad_bias[j] = the chunks' partials of column j, added in chunk order.
extern "C" __global__ void layer_norm_grad_params_finish_f32(const float* partial, unsigned long long chunks,
                                                             unsigned long long cols, float* grad_weight,
                                                             unsigned has_grad_weight, float* grad_bias,
                                                             unsigned has_grad_bias) {
    for (unsigned long long j = grid_start(); j < cols; j += grid_stride()) {
        float tw = 0.0f, tb = 0.0f;
        for (unsigned long long k = 0; k < chunks; ++k) {
            tw += partial[k * cols + j];
            tb += partial[(chunks + k) * cols + j];
        }
        if (has_grad_weight) grad_weight[j] = tw;
        if (has_grad_bias) grad_bias[j] = tb;
    }
}

// ---------------------------------------------------------------------------------------------
// Batch norm
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void batch_norm_stats_f32(const float* x, unsigned long long n, unsigned long long c,
                                                unsigned long long s, float eps, float momentum,
                                                unsigned has_running_mean, float* running_mean,
                                                unsigned has_running_var, float* running_var, float* save_mean,
                                                float* save_rstd) {
    __shared__ float part[96];
    const unsigned long long count = n * s;
    for (unsigned long long ch = blockIdx.x; ch < c; ch += gridDim.x) {
        Moments m = {0.0f, 0.0f, 0.0f};
        for_channel(n, c, s, ch, [&](unsigned long long i) { moments_add(m, x[i]); });
        m = block_moments(m, part);
        if (threadIdx.x == 0) {
            const float var = count > 0 ? m.m2 / (float)count : 0.0f;
            save_mean[ch] = m.mean;
            save_rstd[ch] = rsqrtf(var + eps);
            if (has_running_mean) running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * m.mean;
            if (has_running_var) {
                const float unbias = count > 1 ? (float)count / (float)(count - 1) : 0.0f;
                running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * var * unbias;
            }
        }
    }
}

extern "C" __global__ void batch_norm_eval_stats_f32(const float* running_mean, const float* running_var,
                                                     unsigned long long c, float eps, float* save_mean,
                                                     float* save_rstd) {
    for (unsigned long long ch = grid_start(); ch < c; ch += grid_stride()) {
        save_mean[ch] = running_mean[ch];
        save_rstd[ch] = rsqrtf(running_var[ch] + eps);
    }
}

extern "C" __global__ void batch_norm_apply_f32(const float* x, unsigned long long n, unsigned long long c,
                                                unsigned long long s, const float* weight, unsigned has_weight,
                                                const float* bias, unsigned has_bias, const float* save_mean,
                                                const float* save_rstd, float* y) {
    const unsigned long long total = n * c * s;
    for (unsigned long long e = grid_start(); e < total; e += grid_stride()) {
        const unsigned long long ch = (e / s) % c;
        // rounded as the CPU rounds them (no FMA contraction): scale, mean * scale, shift,
        // x * scale, the sum
        const float scale = (has_weight ? weight[ch] : 1.0f) * save_rstd[ch];
        const float shift = __fadd_rn(has_bias ? bias[ch] : 0.0f, -__fmul_rn(save_mean[ch], scale));
        y[e] = __fadd_rn(__fmul_rn(x[e], scale), shift);
    }
}

extern "C" __global__ void batch_norm_grad_sums_f32(const float* x, const float* grad_y, unsigned long long n,
                                                    unsigned long long c, unsigned long long s,
                                                    const float* save_mean, float* sums) {
    __shared__ float part[64];
    for (unsigned long long ch = blockIdx.x; ch < c; ch += gridDim.x) {
        const float mu = save_mean[ch];
        float sg = 0.0f, sgx = 0.0f;
        for_channel(n, c, s, ch, [&](unsigned long long i) {
            const float g = grad_y[i];
            sg += g;
            sgx += g * (x[i] - mu);
        });
        block_sum2(sg, sgx, part);
        if (threadIdx.x == 0) {
            sums[2 * ch] = sg;
            sums[2 * ch + 1] = sgx;
        }
    }
}

extern "C" __global__ void batch_norm_grad_params_f32(const float* sums, const float* save_rstd,
                                                      unsigned long long c, float* grad_weight,
                                                      unsigned has_grad_weight, float* grad_bias,
                                                      unsigned has_grad_bias) {
    for (unsigned long long ch = grid_start(); ch < c; ch += grid_stride()) {
        if (has_grad_weight) grad_weight[ch] = sums[2 * ch + 1] * save_rstd[ch];
        if (has_grad_bias) grad_bias[ch] = sums[2 * ch];
    }
}

// sums is read only when training.
extern "C" __global__ void batch_norm_backward_input_f32(const float* x, const float* grad_y, unsigned long long n,
                                                         unsigned long long c, unsigned long long s,
                                                         const float* weight, unsigned has_weight,
                                                         const float* save_mean, const float* save_rstd,
                                                         const float* sums, unsigned training, float* grad_x) {
    const unsigned long long total = n * c * s;
    const float count = (float)(n * s > 0 ? n * s : 1);
    for (unsigned long long e = grid_start(); e < total; e += grid_stride()) {
        const unsigned long long ch = (e / s) % c;
        const float rs = save_rstd[ch];
        const float k1 = (has_weight ? weight[ch] : 1.0f) * rs;
        if (training) {
            const float mg = sums[2 * ch] / count;
            const float k2 = k1 * rs * rs * sums[2 * ch + 1] / count;
            grad_x[e] = (grad_y[e] - mg) * k1 - (x[e] - save_mean[ch]) * k2;
        } else {
            grad_x[e] = grad_y[e] * k1;
        }
    }
}
