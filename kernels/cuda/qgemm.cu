// qgemm.cu: the int8 GEMM of dynamic quantization on the GPU, with dequantization fused:
//
//   y[i][j] = (sum_p (a[i][p] - zero_point) * b[j][p]) * mult[j] + bias[j]
//
// a is m x k uint8 (activation levels, row stride lda), b is n x k int8 (the weight as stored,
// [out, in], row stride ldb), y is m x n float (row stride ldy); mult[j] is the activation
// scale times the weight scale of column j, bias optional (has_bias). The sum is exact in
// int32 (|sum| <= k * 255 * 128 < 2^31 for k < 65793, checked by the launcher), then converted
// to float, multiplied and added in the CPU kernel's order (kernels/src/cpu/qgemm.rs), so the
// two agree to the last bit.
//
// Products come from __dp4a (four signed 8-bit products added to an int32; sm_61 and later),
// which takes signed bytes on both sides: the activation byte a is fed as (a ^ 0x80) = a - 128
// (as int8), so sum_p a b = sum_p (a - 128) b + 128 sum_p b, and the zero point folds into the
// column sum: acc = sum_p (a - 128) b + (128 - zero_point) sum_p b. The column sums come from
// __dp4a(0x01010101, b-word) in the same loop. Bytes beyond k are 0 in the staged B tile, so
// they add nothing whatever the A bytes are.
//
// Tiling: a block of 256 threads computes a 64 x 64 tile of y. For each 16-byte slice of k it
// stages the 64 x 16 bytes of A and of B in shared memory as 4 packed int32 words per row (one
// word per thread to load, little-endian as __dp4a reads them), then each thread accumulates a
// 4 x 4 micro-tile: rows ty + 16 r, columns tx + 16 c (tx = tid % 16, ty = tid / 16).
//
// Launch: grid (ceil(n / 64), ceil(m / 64)), block 256, static shared memory 2 KiB. A reference
// path (IMMA tensor cores would be the fast one), for inference of quantized models on a GPU.

namespace {

constexpr int kTile = 64;
constexpr int kWords = 4;  // int32 words per row of a 16-byte k slice

}  // namespace

extern "C" __global__ void qgemm_u8i8_dequant(const unsigned char* __restrict__ a, const signed char* __restrict__ b,
                                              float* __restrict__ y, const float* __restrict__ mult,
                                              const float* __restrict__ bias, int has_bias, int m, int n, int k,
                                              long long lda, long long ldb, long long ldy, int zero_point) {
    __shared__ int as[kTile][kWords];
    __shared__ int bs[kTile][kWords];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
    int acc[4][4];
    int colsum[4];
    for (int r = 0; r < 4; ++r) {
        colsum[r] = 0;
        for (int c = 0; c < 4; ++c) acc[r][c] = 0;
    }
    // the word this thread stages: row tid / 4, word tid % 4 of the slice
    const int lr = tid / kWords, lw = tid % kWords;
    for (int k0 = 0; k0 < k; k0 += 4 * kWords) {
        unsigned wa = 0, wb = 0;
        for (int q = 0; q < 4; ++q) {
            const int p = k0 + lw * 4 + q;
            const int ra = row0 + lr, rb = col0 + lr;
            const unsigned va = (ra < m && p < k) ? (unsigned)a[ra * lda + p] : 0u;
            const unsigned vb = (rb < n && p < k) ? (unsigned)(unsigned char)b[rb * ldb + p] : 0u;
            wa |= ((va ^ 0x80u) & 0xffu) << (8 * q);
            wb |= vb << (8 * q);
        }
        as[lr][lw] = (int)wa;
        bs[lr][lw] = (int)wb;
        __syncthreads();
        for (int w = 0; w < kWords; ++w) {
            int bw[4];
            for (int c = 0; c < 4; ++c) {
                bw[c] = bs[tx + 16 * c][w];
                colsum[c] = __dp4a(0x01010101, bw[c], colsum[c]);
            }
            for (int r = 0; r < 4; ++r) {
                const int aw = as[ty + 16 * r][w];
                for (int c = 0; c < 4; ++c) acc[r][c] = __dp4a(aw, bw[c], acc[r][c]);
            }
        }
        __syncthreads();
    }
    for (int c = 0; c < 4; ++c) {
        const int j = col0 + tx + 16 * c;
        if (j >= n) continue;
        const float mj = mult[j];
        const float bj = has_bias ? bias[j] : 0.0f;
        for (int r = 0; r < 4; ++r) {
            const int i = row0 + ty + 16 * r;
            if (i >= m) continue;
            const int total = acc[r][c] + (128 - zero_point) * colsum[c];
            // two roundings, as the CPU kernel (no FMA contraction)
            const float v = __fmul_rn((float)total, mj);
            y[i * ldy + j] = has_bias ? __fadd_rn(v, bj) : v;
        }
    }
}

// Activation levels for qgemm_u8i8_dequant: q[i] = clamp(rint(x[i] * inv_scale) + zero_point, 0,
// qmax), rounding half to even, with the CPU kernel's arithmetic (kernels/src/cpu/qgemm.rs:
// the scaled value clamped to +-1024 first, one rounding per operation), so the levels agree.
// x must be finite. Grid-stride loop: any grid, block 256.
extern "C" __global__ void quantize_u8_f32(const float* __restrict__ x, unsigned char* __restrict__ q, long long n,
                                           float inv_scale, float zero_point, float qmax) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float t = fminf(fmaxf(__fmul_rn(x[i], inv_scale), -1024.0f), 1024.0f);
        const float v = fminf(fmaxf(__fadd_rn(rintf(t), zero_point), 0.0f), qmax);
        q[i] = (unsigned char)v;
    }
}
