// ctc.cu: CTC loss (Graves et al. 2006) forward-backward and its gradient, f32, in log space.
// CPU reference: kernels/src/cpu/ctc.rs (same recursions, same finite "log zero", same
// gradient: PyTorch's exp(lp) - occupancy).
//
// Per sample b: input length T_b, target of length S at targets[target_offsets[b]..], the
// extended labels l' (blank, l_1, blank, ..., l_S, blank) of length L = 2S + 1, emissions
// e[t][s] = lp[t, b, l'_s] read from lp at t * stride_t + b * stride_b (time-major or
// batch-first), tables of row width W = L_max + 2 in the workspace [B, T, W]:
//   alpha[t][s + 2] = e[t][s] + lse(alpha[t-1][s+2], alpha[t-1][s+1], alpha[t-1][s] + skip(s))
//   beta[t][s]      = e[t][s] + lse(beta[t+1][s], beta[t+1][s+1], beta[t+1][s+2] + skip(s+2))
// (skip(s) allows s-2 -> s when l'_s is a label different from l'_(s-2)); the padding columns
// hold LOG_ZERO = -1e30, a finite log zero, so the three-way log-add-exp needs no -inf case.
//
// ctc_alpha_beta_f32, launch: gridDim = (min(B, cap), 2), blockDim.x a multiple of 32 (the
//   launcher uses min(256, W rounded up to 32)). blockIdx.y = 0 runs the alpha recursion and
//   writes the loss, blockIdx.y = 1 the beta recursion, concurrently. The W states of a time
//   step are spread over the threads in strides (any L; no 1024 cap); one __syncthreads() per
//   time step, no host synchronisation. With use_shared, the previous and the current row also
//   live in dynamic shared memory (2 W floats, double-buffered), so a step reads its three
//   predecessors from shared memory; otherwise it reads the previous row of the global table
//   (the launcher picks global when 2 W floats exceed 48 KiB).
//   Memory traffic per sample: T_b · L gathered emissions and 2 · T_b · W table floats written
//   (read back from L1/L2 without shared memory).
// ctc_grad_f32, launch: gridDim.x = min(T · B, cap) (grid-stride over the (t, b) rows),
//   blockDim.x a multiple of 32 (min(256, max(C, W) rounded up to 32)), 32 floats of static
//   shared memory. One block per row: grad[c] = exp(lp[c]) (0 for t >= T_b), then each state's
//   posterior exp(alpha + beta + nll - e) is subtracted from its class: blanks summed by a
//   block reduction (deterministic), label states by atomicAdd (a label repeated k times in a
//   target gets k atomic adds, in no fixed order: results may differ in the last bit between
//   runs, as PyTorch's CUDA CTC backward). An impossible sample (nll = inf) gets NaN rows, or
//   zeros with zero_infinity, as PyTorch. Memory traffic: reads T · B · C log-probs and
//   2 · T_b · L table entries per sample, writes T · B · C gradients.

namespace {

constexpr float kLogZero = -1e30f;
constexpr float kImpossible = -1e29f;

__device__ __forceinline__ float lse3(float a, float b, float c) {
    const float m = fmaxf(fmaxf(a, b), c);
    return m + logf(expf(a - m) + expf(b - m) + expf(c - m));
}

__device__ __forceinline__ float lse2(float a, float b) {
    const float m = fmaxf(a, b);
    return m + logf(expf(a - m) + expf(b - m));
}

// Label of extended state s (blank for even s).
__device__ __forceinline__ long long ext_label(const long long* tg, long long s, long long blank) {
    return (s & 1) ? tg[s >> 1] : blank;
}

// Whether s - 2 -> s is allowed.
__device__ __forceinline__ bool can_skip(const long long* tg, long long s) {
    return (s & 1) && s >= 3 && tg[s >> 1] != tg[(s >> 1) - 1];
}

__device__ __forceinline__ float emission(const float* lp_row, long long label) {
    return fmaxf(lp_row[label], kLogZero);  // a -inf log-probability must not make NaN
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

}  // namespace

// The alpha (blockIdx.y = 0, also writes ll and nll) and beta (blockIdx.y = 1) tables.
// ll: the raw log-likelihood (read by ctc_grad_f32); nll: the loss (0 for an impossible sample
// with zero_infinity).
extern "C" __global__ void ctc_alpha_beta_f32(const float* lp, const long long* targets, const long long* target_offsets,
                                              const long long* input_lengths, const long long* target_lengths,
                                              unsigned long long batch, unsigned long long max_time,
                                              unsigned long long stride_t, unsigned long long stride_b, long long blank,
                                              unsigned long long width, unsigned use_shared, unsigned zero_infinity,
                                              float* alpha, float* beta, float* ll, float* nll) {
    extern __shared__ float ctc_rows[];  // 2 * width floats when use_shared
    const bool is_alpha = blockIdx.y == 0;
    for (unsigned long long b = blockIdx.x; b < batch; b += gridDim.x) {
        const long long tb = input_lengths[b];
        const long long len = 2 * target_lengths[b] + 1;
        const long long* tg = targets + target_offsets[b];
        float* table = (is_alpha ? alpha : beta) + b * max_time * width;
        const float* lp_b = lp + b * stride_b;
        // states live at column s + shift (alpha: 2 padding columns in front, beta: behind)
        const long long shift = is_alpha ? 2 : 0;
        for (long long step = 0; step < tb; ++step) {
            const long long t = is_alpha ? step : tb - 1 - step;
            const float* lp_row = lp_b + t * stride_t;
            const float* prev = use_shared ? ctc_rows + ((step + 1) & 1) * width
                                           : table + (is_alpha ? t - 1 : t + 1) * width;
            float* cur_shared = ctc_rows + (step & 1) * width;
            for (long long col = threadIdx.x; col < (long long)width; col += blockDim.x) {
                const long long s = col - shift;
                float v = kLogZero;
                if (s >= 0 && s < len) {
                    const float e = emission(lp_row, ext_label(tg, s, blank));
                    if (step == 0) {
                        // first row: alpha starts in states 0 and 1, beta ends in L-1 and L-2
                        if (is_alpha ? s < 2 : s >= len - 2) v = e;
                    } else if (is_alpha) {
                        v = e + lse3(prev[col], prev[col - 1], prev[col - 2] + (can_skip(tg, s) ? 0.0f : kLogZero));
                    } else {
                        const float skip = (s + 2 < len && can_skip(tg, s + 2)) ? 0.0f : kLogZero;
                        v = e + lse3(prev[col], prev[col + 1], prev[col + 2] + skip);
                    }
                }
                table[t * width + col] = v;
                if (use_shared) cur_shared[col] = v;
            }
            __syncthreads();  // row t complete before any thread reads it as the previous row
        }
        if (is_alpha && threadIdx.x == 0) {
            float v;
            if (tb == 0) {
                v = len == 1 ? 0.0f : kLogZero;
            } else {
                const float* last = table + (tb - 1) * width + 2;
                v = len > 1 ? lse2(last[len - 1], last[len - 2]) : last[0];
            }
            const float inf = __int_as_float(0x7f800000);
            const float loss = v < kImpossible ? inf : -v;
            ll[b] = v < kImpossible ? -inf : v;
            nll[b] = (loss == inf && zero_infinity) ? 0.0f : loss;
        }
        __syncthreads();  // the rows of this sample are done before the next sample reuses ctc_rows
    }
}

// Gradient rows: grad[t, b, :] = exp(lp[t, b, :]) - occupancy, for an upstream gradient of 1.
extern "C" __global__ void ctc_grad_f32(const float* lp, const long long* targets, const long long* target_offsets,
                                        const long long* input_lengths, const long long* target_lengths,
                                        unsigned long long batch, unsigned long long max_time,
                                        unsigned long long stride_t, unsigned long long stride_b,
                                        unsigned long long classes, long long blank, unsigned long long width,
                                        unsigned zero_infinity, const float* alpha, const float* beta, const float* ll,
                                        float* grad) {
    __shared__ float partial[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (unsigned long long row = blockIdx.x; row < batch * max_time; row += gridDim.x) {
        const unsigned long long b = row % batch, t = row / batch;
        const long long tb = input_lengths[b];
        const float* lp_row = lp + t * stride_t + b * stride_b;
        float* g = grad + t * stride_t + b * stride_b;
        const float loglik = ll[b];
        const bool impossible = loglik == -__int_as_float(0x7f800000);
        if ((long long)t >= tb || impossible) {
            const float v = (long long)t >= tb || zero_infinity ? 0.0f : __int_as_float(0x7fc00000);
            for (unsigned long long c = threadIdx.x; c < classes; c += blockDim.x) g[c] = v;
            continue;  // uniform across the block: no barrier is skipped by only some threads
        }
        const long long len = 2 * target_lengths[b] + 1;
        const long long* tg = targets + target_offsets[b];
        const float* a = alpha + (b * max_time + t) * width + 2;
        const float* be = beta + (b * max_time + t) * width;
        for (unsigned long long c = threadIdx.x; c < classes; c += blockDim.x) g[c] = expf(lp_row[c]);
        __syncthreads();  // exp(lp) written before the label atomics below subtract from it
        float blank_post = 0.0f;
        for (long long s = threadIdx.x; s < len; s += blockDim.x) {
            const long long k = ext_label(tg, s, blank);
            const float post = expf(a[s] + be[s] - loglik - emission(lp_row, k));
            if (s & 1) {
                atomicAdd(&g[k], -post);
            } else {
                blank_post += post;
            }
        }
        blank_post = warp_sum(blank_post);
        if (lane == 0) partial[warp] = blank_post;
        __syncthreads();
        if (threadIdx.x == 0) {
            float total = 0.0f;
            for (unsigned w = 0; w < warps; ++w) total += partial[w];
            atomicAdd(&g[blank], -total);
        }
        __syncthreads();  // partial[] is reused by the next row
    }
}
