// rnn.cu: the fused pointwise kernels of one LSTM or GRU time step, forward and backward, f32.
// CPU reference: kernels/src/cpu/rnn.rs (lstm_step_forward/backward, gru_step_forward/backward);
// the same formulas, the same gate order (LSTM i, f, g, o; GRU r, z, n, as PyTorch), the same
// treatment of padded rows. The GEMMs around them (the input projection of all steps, the
// recurrent product h_{t-1} W_hh^T of each step, dgates W_hh, the weight gradients) are cuBLAS
// on the GPU; these kernels are everything else a step does, fused so that every gate element
// is read and written once.
//
// Shapes (time-major buffers, as nn/src/rnn/driver.rs lays them out; every pointer comes with an
// element offset so one launch addresses step t of a [T, B, .] buffer or row p of a [T + 1, B, H]
// state buffer without a copy):
//   gates  [B, 4H]  LSTM: pre-activations on entry, activations sigma(i), sigma(f), tanh(g),
//                   sigma(o) on return (kept for backward; zeros for inactive rows)
//   c, h   [B, H]   the state before (c_prev, h_prev) and after (c, h) the step; the previous and
//                   the next row may live in one buffer (different offsets)
//   gi, gh [B, 3H]  GRU: x W_ih^T + b_ih and h_{t-1} W_hh^T + b_hh
//   saved  [B, 4H]  GRU: r, z, n and W_hn h_{t-1} + b_hn
// Padding: row b is active at step t when t < lengths[b] (the CPU kernels' `active[b]`). An
// inactive row carries its state (c = c_prev, h = h_prev), gets zero activations and zero gate
// gradients, and passes dh/dc through unchanged in backward (packed-sequence semantics).
//
// Launch (the four step kernels): one thread per (b, j), b < B, j < H, grid-stride over B * H
// (64-bit indices); the launcher uses 256-thread blocks, at most 4 blocks per SM. No shared
// memory, no barriers. Consecutive threads take consecutive j, so every gate row is read and
// written coalesced.
// Memory traffic per step (floats): LSTM forward reads 4BH gates + 2BH state, writes 4BH + 3BH;
// LSTM backward reads 4BH + 2BH + 3BH (dy, dh, dc), writes 4BH + 2BH; GRU forward reads 6BH +
// BH, writes 4BH + BH; GRU backward reads 4BH + BH + 2BH, writes 6BH + BH.
//
// Activations use the accurate expf/tanhf (not __expf): the CPU reference's branch-free
// polynomial versions are within 2e-7 of them, well inside the f32 test tolerance.

namespace {

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ bool row_active(const long long* lengths, unsigned long long b, long long t) {
    return t < lengths[b];
}

}  // namespace

// One LSTM step: gates (pre-activations) -> activations, c = f c_prev + i g, h = o tanh(c).
extern "C" __global__ void lstm_step_forward_f32(unsigned long long batch, unsigned long long hidden,
                                                 const long long* lengths, long long t, float* gates,
                                                 unsigned long long gates_off, float* c,
                                                 unsigned long long c_prev_off, unsigned long long c_off, float* h,
                                                 unsigned long long h_prev_off, unsigned long long h_off,
                                                 float* tanh_c, unsigned long long tanh_c_off) {
    const unsigned long long n = batch * hidden;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        const unsigned long long b = k / hidden, j = k - b * hidden;
        float* g = gates + gates_off + b * 4 * hidden + j;
        const float cp = c[c_prev_off + k];
        if (!row_active(lengths, b, t)) {
            g[0] = 0.0f;
            g[hidden] = 0.0f;
            g[2 * hidden] = 0.0f;
            g[3 * hidden] = 0.0f;
            tanh_c[tanh_c_off + k] = 0.0f;
            c[c_off + k] = cp;
            h[h_off + k] = h[h_prev_off + k];
            continue;
        }
        const float i = sigmoidf(g[0]);
        const float f = sigmoidf(g[hidden]);
        const float gg = tanhf(g[2 * hidden]);
        const float o = sigmoidf(g[3 * hidden]);
        const float cv = f * cp + i * gg;
        const float tc = tanhf(cv);
        g[0] = i;
        g[hidden] = f;
        g[2 * hidden] = gg;
        g[3 * hidden] = o;
        c[c_off + k] = cv;
        tanh_c[tanh_c_off + k] = tc;
        h[h_off + k] = o * tc;
    }
}

// The gradient of one LSTM step. dy (when has_dy) is row b at dy[dy_off + b * dy_stride + j].
// On return dh = 0 for active rows (the caller's GEMM adds dgates W_hh), dc = dc_{t-1}.
extern "C" __global__ void lstm_step_backward_f32(unsigned long long batch, unsigned long long hidden,
                                                  const long long* lengths, long long t, const float* gates,
                                                  unsigned long long gates_off, const float* c,
                                                  unsigned long long c_prev_off, const float* tanh_c,
                                                  unsigned long long tanh_c_off, const float* dy,
                                                  unsigned long long dy_off, unsigned long long dy_stride,
                                                  unsigned has_dy, float* dh, float* dc, float* dgates,
                                                  unsigned long long dgates_off) {
    const unsigned long long n = batch * hidden;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        const unsigned long long b = k / hidden, j = k - b * hidden;
        float* dg = dgates + dgates_off + b * 4 * hidden + j;
        if (!row_active(lengths, b, t)) {
            dg[0] = 0.0f;
            dg[hidden] = 0.0f;
            dg[2 * hidden] = 0.0f;
            dg[3 * hidden] = 0.0f;
            continue;
        }
        const float* g = gates + gates_off + b * 4 * hidden + j;
        const float i = g[0], f = g[hidden], gg = g[2 * hidden], o = g[3 * hidden];
        const float dht = has_dy ? dh[k] + dy[dy_off + b * dy_stride + j] : dh[k];
        const float tc = tanh_c[tanh_c_off + k];
        const float dct = dc[k] + dht * o * (1.0f - tc * tc);
        dg[3 * hidden] = dht * tc * o * (1.0f - o);
        dg[0] = dct * gg * i * (1.0f - i);
        dg[hidden] = dct * c[c_prev_off + k] * f * (1.0f - f);
        dg[2 * hidden] = dct * i * (1.0f - gg * gg);
        dc[k] = dct * f;
        dh[k] = 0.0f;
    }
}

// One GRU step: r, z = sigma(gi + gh), n = tanh(gi_n + r gh_n), h = n + z (h_prev - n).
extern "C" __global__ void gru_step_forward_f32(unsigned long long batch, unsigned long long hidden,
                                                const long long* lengths, long long t, const float* gi,
                                                unsigned long long gi_off, const float* gh,
                                                unsigned long long gh_off, float* saved,
                                                unsigned long long saved_off, float* h,
                                                unsigned long long h_prev_off, unsigned long long h_off) {
    const unsigned long long n = batch * hidden;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        const unsigned long long b = k / hidden, j = k - b * hidden;
        float* s = saved + saved_off + b * 4 * hidden + j;
        const float hp = h[h_prev_off + k];
        if (!row_active(lengths, b, t)) {
            s[0] = 0.0f;
            s[hidden] = 0.0f;
            s[2 * hidden] = 0.0f;
            s[3 * hidden] = 0.0f;
            h[h_off + k] = hp;
            continue;
        }
        const float* x = gi + gi_off + b * 3 * hidden + j;
        const float* y = gh + gh_off + b * 3 * hidden + j;
        const float r = sigmoidf(x[0] + y[0]);
        const float z = sigmoidf(x[hidden] + y[hidden]);
        const float hn = y[2 * hidden];
        const float nv = tanhf(x[2 * hidden] + r * hn);
        s[0] = r;
        s[hidden] = z;
        s[2 * hidden] = nv;
        s[3 * hidden] = hn;
        h[h_off + k] = nv + z * (hp - nv);
    }
}

// The gradient of one GRU step. On return dh holds, for active rows, dh_t z (the part of the
// gradient of h_{t-1} that does not go through W_hh; the caller adds dgh W_hh).
extern "C" __global__ void gru_step_backward_f32(unsigned long long batch, unsigned long long hidden,
                                                 const long long* lengths, long long t, const float* saved,
                                                 unsigned long long saved_off, const float* h,
                                                 unsigned long long h_prev_off, const float* dy,
                                                 unsigned long long dy_off, unsigned long long dy_stride,
                                                 unsigned has_dy, float* dh, float* dgi, unsigned long long dgi_off,
                                                 float* dgh, unsigned long long dgh_off) {
    const unsigned long long n = batch * hidden;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        const unsigned long long b = k / hidden, j = k - b * hidden;
        float* gi = dgi + dgi_off + b * 3 * hidden + j;
        float* gh = dgh + dgh_off + b * 3 * hidden + j;
        if (!row_active(lengths, b, t)) {
            gi[0] = 0.0f;
            gi[hidden] = 0.0f;
            gi[2 * hidden] = 0.0f;
            gh[0] = 0.0f;
            gh[hidden] = 0.0f;
            gh[2 * hidden] = 0.0f;
            continue;
        }
        const float* s = saved + saved_off + b * 4 * hidden + j;
        const float r = s[0], z = s[hidden], nv = s[2 * hidden], hn = s[3 * hidden];
        const float dht = has_dy ? dh[k] + dy[dy_off + b * dy_stride + j] : dh[k];
        const float dn = dht * (1.0f - z) * (1.0f - nv * nv);
        const float dz = dht * (h[h_prev_off + k] - nv) * z * (1.0f - z);
        const float dr = dn * hn * r * (1.0f - r);
        gi[0] = dr;
        gh[0] = dr;
        gi[hidden] = dz;
        gh[hidden] = dz;
        gi[2 * hidden] = dn;
        gh[2 * hidden] = dn * r;
        dh[k] = dht * z;
    }
}

// ---------------------------------------------------------------------------------------------
// lstm_forward_persistent_f32: a whole LSTM layer forward (every direction) in one launch, for
// small hidden sizes. One block per direction (blockIdx.x = 0 forward, 1 reverse) loops over the
// time steps with the recurrent weights W_hh [4H, H] (rows padded to H + 1 floats: threads of a
// warp read different rows of one column without bank conflicts), the state h, c [B, H] and the
// step's pre-activations [B, 4H] in dynamic shared memory:
//   1. pre[b][r] = gates[t][b][r] + sum_k h[b][k] W_hh[r][k]  (k ascending; one thread per (b, r))
//   2. __syncthreads()
//   3. the gate math of lstm_step_forward_f32 per (b, j), writing the same outputs to global
//      memory (activations over the input projection, the [T + 1, B, H] states in the recurrent
//      drivers' row order, tanh(c)) and the new h, c to shared memory
//   4. __syncthreads()
// so its results are a drop-in for T launches of GEMM + lstm_step_forward_f32, and the backward
// runs on the step kernels. Shared memory: 4H(H + 1) + 6BH floats (the launcher refuses more than
// 48 KiB: H <= ~100 for small batches). No host synchronisation between steps, no global
// round trip of the state; the price is one SM per direction, which only pays while the per-step
// GEMM is too small to fill the GPU (small H and B, e.g. streaming inference).
// Per direction d: gates at d * T*B*4H (input projection x W_ih^T + b_ih + b_hh on entry), W_hh at
// d * 4H*H, h0/c0 at d * B*H, hs/cs at d * (T+1)*B*H, tanh_c at d * T*B*H. Launch: gridDim.x =
// directions (1 or 2), blockDim.x a multiple of 32.
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void lstm_forward_persistent_f32(unsigned long long steps, unsigned long long batch,
                                                       unsigned long long hidden, const long long* lengths,
                                                       float* gates, const float* w_hh, const float* h0,
                                                       const float* c0, float* hs, float* cs, float* tanh_c) {
    extern __shared__ float lstm_smem[];
    const unsigned long long dir = blockIdx.x;
    const bool reverse = dir == 1;
    const unsigned long long g4 = 4 * hidden, bh = batch * hidden, ws = hidden + 1;
    float* w_s = lstm_smem;              // [4H][H + 1]
    float* h_s = w_s + g4 * ws;          // [B][H]
    float* c_s = h_s + bh;               // [B][H]
    float* pre_s = c_s + bh;             // [B][4H]
    float* g_d = gates + dir * steps * batch * g4;
    float* hs_d = hs + dir * (steps + 1) * bh;
    float* cs_d = cs + dir * (steps + 1) * bh;
    float* tc_d = tanh_c + dir * steps * bh;
    const float* w_d = w_hh + dir * g4 * hidden;
    for (unsigned long long i = threadIdx.x; i < g4 * hidden; i += blockDim.x) {
        const unsigned long long r = i / hidden, k = i - r * hidden;
        w_s[r * ws + k] = w_d[i];
    }
    const unsigned long long start = reverse ? steps : 0;
    for (unsigned long long i = threadIdx.x; i < bh; i += blockDim.x) {
        h_s[i] = h0[dir * bh + i];
        c_s[i] = c0[dir * bh + i];
        hs_d[start * bh + i] = h_s[i];
        cs_d[start * bh + i] = c_s[i];
    }
    __syncthreads();
    for (unsigned long long s = 0; s < steps; ++s) {
        const unsigned long long t = reverse ? steps - 1 - s : s;
        const unsigned long long q = reverse ? t : t + 1;  // the state row written by this step
        float* g_t = g_d + t * batch * g4;
        // 1. pre-activations of the active rows
        for (unsigned long long i = threadIdx.x; i < batch * g4; i += blockDim.x) {
            const unsigned long long b = i / g4, r = i - b * g4;
            if (!row_active(lengths, b, (long long)t)) continue;
            const float* hb = h_s + b * hidden;
            const float* wr = w_s + r * ws;
            float acc = 0.0f;
            for (unsigned long long k = 0; k < hidden; ++k) acc += hb[k] * wr[k];
            pre_s[i] = g_t[i] + acc;
        }
        __syncthreads();
        // 3. the gates, as lstm_step_forward_f32
        for (unsigned long long k = threadIdx.x; k < bh; k += blockDim.x) {
            const unsigned long long b = k / hidden, j = k - b * hidden;
            float* g = g_t + b * g4 + j;
            if (!row_active(lengths, b, (long long)t)) {
                g[0] = 0.0f;
                g[hidden] = 0.0f;
                g[2 * hidden] = 0.0f;
                g[3 * hidden] = 0.0f;
                tc_d[t * bh + k] = 0.0f;
                cs_d[q * bh + k] = c_s[k];  // the state carries through; h_s, c_s unchanged
                hs_d[q * bh + k] = h_s[k];
                continue;
            }
            const float* p = pre_s + b * g4 + j;
            const float i = sigmoidf(p[0]);
            const float f = sigmoidf(p[hidden]);
            const float gg = tanhf(p[2 * hidden]);
            const float o = sigmoidf(p[3 * hidden]);
            const float cv = f * c_s[k] + i * gg;
            const float tc = tanhf(cv);
            const float hv = o * tc;
            g[0] = i;
            g[hidden] = f;
            g[2 * hidden] = gg;
            g[3 * hidden] = o;
            tc_d[t * bh + k] = tc;
            cs_d[q * bh + k] = cv;
            hs_d[q * bh + k] = hv;
            c_s[k] = cv;
            h_s[k] = hv;
        }
        __syncthreads();  // h_s complete before the next step's products read it
    }
}

// ---------------------------------------------------------------------------------------------
// rnn_output_f32: one direction's hidden states into its columns of the layer output, zero at
// padded positions: y[t][b][dir * H + j] = t < lengths[b] ? hs[row(t)][b][j] : 0, where row(t)
// is the state after time t in the [T + 1, B, H] state buffer (t + 1 forward, t reverse).
// y is [T, B, dirs * H] at element offset y_off (the layer's packed [Y | h_n | c_n] output).
// Launch: one thread per (t, b, j), grid-stride over T * B * H. Traffic: reads and writes T*B*H
// floats, coalesced along j.
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void rnn_output_f32(unsigned long long steps, unsigned long long batch,
                                          unsigned long long hidden, unsigned long long dirs,
                                          unsigned long long dir, unsigned reverse, const long long* lengths,
                                          const float* hs, float* y, unsigned long long y_off) {
    const unsigned long long bh = batch * hidden, n = steps * bh;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        const unsigned long long t = k / bh, r = k - t * bh, b = r / hidden, j = r - b * hidden;
        const unsigned long long row = reverse ? t : t + 1;
        const float v = row_active(lengths, b, (long long)t) ? hs[row * bh + r] : 0.0f;
        y[y_off + (t * batch + b) * dirs * hidden + dir * hidden + j] = v;
    }
}
