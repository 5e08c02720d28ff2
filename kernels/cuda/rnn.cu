// rnn.cu: the fused pointwise kernels of one LSTM or GRU time step, forward and backward, f32.
// CPU reference: kernels/src/cpu/rnn.rs (lstm_step_forward/backward, gru_step_forward/backward);
// the same formulas, the same gate order (LSTM i, f, g, o; GRU r, z, n, as PyTorch), the same
// treatment of padded rows. The GEMMs around them (the input projection of all steps, the
// recurrent product h_{t-1} W_hh^T of each step, dgates W_hh, the weight gradients) are cuBLAS
// on the GPU; these kernels are everything else a step does, fused so that every gate element
// is read and written once.
//
// Shapes (time-major buffers, as nn/src/rnn/driver.rs lays them out; every buffer is addressed
// by *rows*, so one launch reaches step t of a [T, B, .] buffer or row p of a [T + 1, B, H] state
// buffer without a copy; the layer driver stacks the directions, [D, T, B, .], so direction 1's
// rows follow direction 0's):
//   gates  [B, 4H]  LSTM: pre-activations on entry, activations sigma(i), sigma(f), tanh(g),
//                   sigma(o) on return (kept for backward; zeros for inactive rows)
//   c, h   [B, H]   the state before (c_prev, h_prev) and after (c, h) the step: two rows of one
//                   buffer (prev and next)
//   gi, gh [B, 3H]  GRU: x W_ih^T + b_ih and h_{t-1} W_hh^T + b_hh
//   saved  [B, 4H]  GRU: r, z, n and W_hn h_{t-1} + b_hn
//   dh, dc [D, B, H] backward: the running state gradients, row d for direction d
//   dy     the layer output gradient: direction d's row b at dy[dy_off_d + b * dy_stride + j]
// Directions: one launch runs the step of every direction of a layer (dirs = 1 or 2); direction
// d has its own time index t_d (forward and reverse steps run together: t_0 = s, t_1 = T - 1 - s)
// and its own rows, passed as two scalar sets (..._0, ..._1; the second is ignored when dirs = 1).
// Padding: row b is active at time t when t < lengths[b] (the CPU kernels' `active[b]`). An
// inactive row carries its state (c = c_prev, h = h_prev), gets zero activations and zero gate
// gradients, and passes dh/dc through unchanged in backward (packed-sequence semantics).
//
// Launch (the four step kernels): one thread per (d, b, j), d < dirs, b < B, j < H, grid-stride
// over dirs * B * H (64-bit indices); the launcher uses 256-thread blocks, at most 4 blocks per
// SM. No shared memory, no barriers. Consecutive threads take consecutive j, so every gate row is
// read and written coalesced.
// Memory traffic per step and direction (floats): LSTM forward reads 4BH gates + 2BH state,
// writes 4BH + 3BH; LSTM backward reads 4BH + 2BH + 3BH (dy, dh, dc), writes 4BH + 2BH; GRU
// forward reads 6BH + BH, writes 4BH + BH; GRU backward reads 4BH + BH + 2BH, writes 6BH + BH.
//
// Activations use the accurate expf/tanhf (not __expf): the CPU reference's branch-free
// polynomial versions are within 2e-7 of them, well inside the f32 test tolerance.

namespace {

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ bool row_active(const long long* lengths, unsigned long long b, long long t) {
    return t < lengths[b];
}

// Direction d's value of a per-direction scalar pair.
__device__ __forceinline__ long long pick(unsigned long long d, long long v0, long long v1) { return d ? v1 : v0; }

}  // namespace

// One LSTM step: gates (pre-activations) -> activations, c = f c_prev + i g, h = o tanh(c).
// Rows per direction: t (mask), g (gates), p/q (state before/after), tc (tanh_c).
extern "C" __global__ void lstm_step_forward_f32(unsigned long long batch, unsigned long long hidden,
                                                 unsigned long long dirs, const long long* lengths, long long t_0,
                                                 long long t_1, float* gates, long long g_0, long long g_1,
                                                 float* c, float* h, long long p_0, long long p_1, long long q_0,
                                                 long long q_1, float* tanh_c, long long tc_0, long long tc_1) {
    const unsigned long long bh = batch * hidden, n = dirs * bh;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long d = e / bh, k = e - d * bh, b = k / hidden, j = k - b * hidden;
        const long long t = pick(d, t_0, t_1);
        float* g = gates + pick(d, g_0, g_1) * 4 * bh + b * 4 * hidden + j;
        const unsigned long long prev = pick(d, p_0, p_1) * bh + k, next = pick(d, q_0, q_1) * bh + k;
        float* tcp = tanh_c + pick(d, tc_0, tc_1) * bh + k;
        const float cp = c[prev];
        if (!row_active(lengths, b, t)) {
            g[0] = 0.0f;
            g[hidden] = 0.0f;
            g[2 * hidden] = 0.0f;
            g[3 * hidden] = 0.0f;
            *tcp = 0.0f;
            c[next] = cp;
            h[next] = h[prev];
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
        c[next] = cv;
        *tcp = tc;
        h[next] = o * tc;
    }
}

// The gradient of one LSTM step. Rows per direction: t (mask), g (gates), p (c_prev), tc
// (tanh_c), dg (dgates), and dy_off (when has_dy). dh/dc row d: on return dh = 0 for active rows
// (the caller's GEMM adds dgates W_hh), dc = dc_{t-1}.
extern "C" __global__ void lstm_step_backward_f32(unsigned long long batch, unsigned long long hidden,
                                                  unsigned long long dirs, const long long* lengths, long long t_0,
                                                  long long t_1, const float* gates, long long g_0, long long g_1,
                                                  const float* c, long long p_0, long long p_1, const float* tanh_c,
                                                  long long tc_0, long long tc_1, const float* dy, long long dy_0,
                                                  long long dy_1, unsigned long long dy_stride, unsigned has_dy,
                                                  float* dh, float* dc, float* dgates, long long dg_0,
                                                  long long dg_1) {
    const unsigned long long bh = batch * hidden, n = dirs * bh;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long d = e / bh, k = e - d * bh, b = k / hidden, j = k - b * hidden;
        float* dg = dgates + pick(d, dg_0, dg_1) * 4 * bh + b * 4 * hidden + j;
        if (!row_active(lengths, b, pick(d, t_0, t_1))) {
            dg[0] = 0.0f;
            dg[hidden] = 0.0f;
            dg[2 * hidden] = 0.0f;
            dg[3 * hidden] = 0.0f;
            continue;
        }
        const float* g = gates + pick(d, g_0, g_1) * 4 * bh + b * 4 * hidden + j;
        const float i = g[0], f = g[hidden], gg = g[2 * hidden], o = g[3 * hidden];
        const float dht = has_dy ? dh[e] + dy[pick(d, dy_0, dy_1) + b * dy_stride + j] : dh[e];
        const float tc = tanh_c[pick(d, tc_0, tc_1) * bh + k];
        const float dct = dc[e] + dht * o * (1.0f - tc * tc);
        dg[3 * hidden] = dht * tc * o * (1.0f - o);
        dg[0] = dct * gg * i * (1.0f - i);
        dg[hidden] = dct * c[pick(d, p_0, p_1) * bh + k] * f * (1.0f - f);
        dg[2 * hidden] = dct * i * (1.0f - gg * gg);
        dc[e] = dct * f;
        dh[e] = 0.0f;
    }
}

// One GRU step: r, z = sigma(gi + gh), n = tanh(gi_n + r gh_n), h = n + z (h_prev - n).
// Rows per direction: t (mask), gi, gh, sv (saved), p/q (state before/after).
extern "C" __global__ void gru_step_forward_f32(unsigned long long batch, unsigned long long hidden,
                                                unsigned long long dirs, const long long* lengths, long long t_0,
                                                long long t_1, const float* gi, long long gi_0, long long gi_1,
                                                const float* gh, long long gh_0, long long gh_1, float* saved,
                                                long long sv_0, long long sv_1, float* h, long long p_0,
                                                long long p_1, long long q_0, long long q_1) {
    const unsigned long long bh = batch * hidden, n = dirs * bh;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long d = e / bh, k = e - d * bh, b = k / hidden, j = k - b * hidden;
        float* s = saved + pick(d, sv_0, sv_1) * 4 * bh + b * 4 * hidden + j;
        const float hp = h[pick(d, p_0, p_1) * bh + k];
        float* hn_out = h + pick(d, q_0, q_1) * bh + k;
        if (!row_active(lengths, b, pick(d, t_0, t_1))) {
            s[0] = 0.0f;
            s[hidden] = 0.0f;
            s[2 * hidden] = 0.0f;
            s[3 * hidden] = 0.0f;
            *hn_out = hp;
            continue;
        }
        const float* x = gi + pick(d, gi_0, gi_1) * 3 * bh + b * 3 * hidden + j;
        const float* y = gh + pick(d, gh_0, gh_1) * 3 * bh + b * 3 * hidden + j;
        const float r = sigmoidf(x[0] + y[0]);
        const float z = sigmoidf(x[hidden] + y[hidden]);
        const float hn = y[2 * hidden];
        const float nv = tanhf(x[2 * hidden] + r * hn);
        s[0] = r;
        s[hidden] = z;
        s[2 * hidden] = nv;
        s[3 * hidden] = hn;
        *hn_out = nv + z * (hp - nv);
    }
}

// The gradient of one GRU step. Rows per direction: t (mask), sv (saved), p (h_prev), dg (dgi and
// dgh), and dy_off (when has_dy). dh row d: on return, for active rows, dh_t z (the part of the
// gradient of h_{t-1} that does not go through W_hh; the caller adds dgh W_hh).
extern "C" __global__ void gru_step_backward_f32(unsigned long long batch, unsigned long long hidden,
                                                 unsigned long long dirs, const long long* lengths, long long t_0,
                                                 long long t_1, const float* saved, long long sv_0, long long sv_1,
                                                 const float* h, long long p_0, long long p_1, const float* dy,
                                                 long long dy_0, long long dy_1, unsigned long long dy_stride,
                                                 unsigned has_dy, float* dh, float* dgi, float* dgh, long long dg_0,
                                                 long long dg_1) {
    const unsigned long long bh = batch * hidden, n = dirs * bh;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long d = e / bh, k = e - d * bh, b = k / hidden, j = k - b * hidden;
        const unsigned long long dg_row = pick(d, dg_0, dg_1) * 3 * bh + b * 3 * hidden + j;
        float* gi = dgi + dg_row;
        float* gh = dgh + dg_row;
        if (!row_active(lengths, b, pick(d, t_0, t_1))) {
            gi[0] = 0.0f;
            gi[hidden] = 0.0f;
            gi[2 * hidden] = 0.0f;
            gh[0] = 0.0f;
            gh[hidden] = 0.0f;
            gh[2 * hidden] = 0.0f;
            continue;
        }
        const float* s = saved + pick(d, sv_0, sv_1) * 4 * bh + b * 4 * hidden + j;
        const float r = s[0], z = s[hidden], nv = s[2 * hidden], hn = s[3 * hidden];
        const float dht = has_dy ? dh[e] + dy[pick(d, dy_0, dy_1) + b * dy_stride + j] : dh[e];
        const float dn = dht * (1.0f - z) * (1.0f - nv * nv);
        const float dz = dht * (h[pick(d, p_0, p_1) * bh + k] - nv) * z * (1.0f - z);
        const float dr = dn * hn * r * (1.0f - r);
        gi[0] = dr;
        gh[0] = dr;
        gi[hidden] = dz;
        gh[hidden] = dz;
        gi[2 * hidden] = dn;
        gh[2 * hidden] = dn * r;
        dh[e] = dht * z;
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
// 48 KiB, the limit without an opt-in: H <= 54 at B = 1, H <= 48 at B = 8). No host
// synchronisation between steps, no global round trip of the state; the price is one SM per
// direction, which only pays while the per-step GEMM is too small to fill the GPU (small H and B,
// e.g. streaming inference). The layer driver uses it when asked (rnn_seq.rs, StepAlgo).
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
// rnn_output_f32: the hidden states of every direction into the layer output, zero at padded
// positions: y[t][b][d * H + j] = t < lengths[b] ? hs[d][row_d(t)][b][j] : 0, where hs is the
// direction-stacked state buffer [D, T + 1, B, H] and row_d(t) the state after time t (t + 1
// forward, t for direction 1, the reverse one). y is [T, B, D * H] at element offset y_off (the
// layer's packed [Y | h_n | c_n] output).
// Launch: one thread per (t, b, d, j), grid-stride over T * B * D * H. Traffic: reads and writes
// T*B*D*H floats, coalesced along j.
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void rnn_output_f32(unsigned long long steps, unsigned long long batch,
                                          unsigned long long hidden, unsigned long long dirs,
                                          const long long* lengths, const float* hs, float* y,
                                          unsigned long long y_off) {
    const unsigned long long dh = dirs * hidden, n = steps * batch * dh, bh = batch * hidden;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        const unsigned long long tb = k / dh, r = k - tb * dh, d = r / hidden, j = r - d * hidden;
        const unsigned long long t = tb / batch, b = tb - t * batch;
        const unsigned long long row = d ? t : t + 1;
        const float v = row_active(lengths, b, (long long)t) ? hs[(d * (steps + 1) + row) * bh + b * hidden + j] : 0.0f;
        y[y_off + k] = v;
    }
}
