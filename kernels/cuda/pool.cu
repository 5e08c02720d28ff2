// pool.cu: 2-D max and average pooling over NCHW planes, forward and backward, f32, with
// PyTorch's semantics. CPU reference: kernels/src/cpu/pool.rs (Pool2dGeom; max_pool2d_forward /
// max_pool2d_backward / avg_pool2d_forward / avg_pool2d_backward).
//
// Window of output (oy, ox): input rows oy*SH - PH + ky*DH (ky < KH), columns ox*SW - PW + kx*DW
// (kx < KW); taps outside the input are skipped (padding is -inf for max, excluded from the sum
// for average). OH/OW (PyTorch's formula, ceil_mode included) come from the host.
//
// max_pool2d_forward_f32: one thread per output element (64-bit grid-stride over planes * OH *
//   OW). Taps are visited in window order (ky outer, kx inner) and a tap replaces the running
//   maximum when it is greater or NaN: the first maximum wins ties, a NaN is the maximum (a
//   later NaN replaces an earlier one), as PyTorch and the CPU reference. argmax (i64) is the
//   index inside the H*W plane; a window of only -inf keeps its first valid element's index.
//   Traffic: reads KH*KW input floats per output (mostly L1/L2), writes the output and argmax.
// max_pool2d_backward_f32: one thread per input element, no atomics: it visits the outputs whose
//   window covers it (oy = (iy + PH - ky*DH) / SH when exact, likewise ox) in increasing output
//   order and sums grad_out where argmax points at it, so the sum is deterministic and in the
//   CPU reference's order. argmax must come from the forward (an index inside its window).
//   grad_in is overwritten. Traffic: reads up to KH*KW (grad_out, argmax) pairs per input.
// avg_pool2d_forward_f32: one thread per output: the window sum (ky outer, kx inner, the CPU's
//   order) times 1 / divisor, the divisor being the window clipped to input + padding
//   (count_include_pad) or the number of input elements in it; a window with no input element
//   gives 0 (PyTorch).
// avg_pool2d_backward_f32: one thread per input element gathering grad_out / divisor from every
//   window that covers it (no atomics, overwrites grad_in). Dilation is 1 for average pooling.
// Launch: 256 threads per block, grid min(ceil(n / 256), 4 * SMs); no shared memory.

namespace {

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// First in-range coordinate of a window starting at `start` with dilation d (PyTorch steps the
// start forward by the dilation while it is negative).
__device__ __forceinline__ long long first_valid(long long start, long long d) {
    return start >= 0 ? start : start + ((-start + d - 1) / d) * d;
}

// The output coordinate whose tap k hits input coordinate i, or -1.
__device__ __forceinline__ long long tap_output(long long i, long long k, long long stride, long long pad,
                                                long long dil, long long out_len) {
    const long long num = i + pad - k * dil;
    if (num < 0) return -1;
    const long long o = num / stride;
    return (o * stride == num && o < out_len) ? o : -1;
}

// PyTorch's average-pool divisor along one axis: (window clipped to input + padding, window
// clipped to the input).
__device__ __forceinline__ void avg_axis(long long o, long long in, long long k, long long s, long long p,
                                         long long* with_pad, long long* valid) {
    const long long start = o * s - p;
    long long end = start + k;
    if (end > in + p) end = in + p;
    const long long wp = end - start;
    const long long lo = start > 0 ? start : 0;
    const long long hi = end < in ? end : in;
    *with_pad = wp > 0 ? wp : 0;
    *valid = hi - lo > 0 ? hi - lo : 0;
}

// 1 / divisor of output (oy, ox), 0 for a window with no input element.
__device__ __forceinline__ float avg_scale(long long oy, long long ox, long long h, long long w, long long kh,
                                           long long kw, long long sh, long long sw, long long ph, long long pw,
                                           unsigned count_include_pad) {
    long long rp, rv, cp, cv;
    avg_axis(oy, h, kh, sh, ph, &rp, &rv);
    avg_axis(ox, w, kw, sw, pw, &cp, &cv);
    if (rv == 0 || cv == 0) return 0.0f;
    const long long div = count_include_pad ? rp * cp : rv * cv;
    return 1.0f / (float)div;
}

}  // namespace

// The geometry every pool kernel takes, as kernel parameters (in this order).
#define POOL_GEOM_PARAMS                                                                                          \
    unsigned long long planes, long long h, long long w, long long oh, long long ow, long long kh, long long kw,  \
        long long sh, long long sw, long long ph, long long pw

extern "C" __global__ void max_pool2d_forward_f32(const float* x, POOL_GEOM_PARAMS, long long dh, long long dw,
                                                  float* out, long long* argmax) {
    const unsigned long long ohw = oh * ow, n = planes * ohw;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long plane = e / ohw, q = e - plane * ohw;
        const long long oy = q / ow, ox = q - oy * ow;
        const float* xp = x + plane * h * w;
        const long long y0 = oy * sh - ph, x0 = ox * sw - pw;
        float best = neg_inf();
        long long idx = first_valid(y0, dh) * w + first_valid(x0, dw);
        for (long long ky = 0; ky < kh; ++ky) {
            const long long iy = y0 + ky * dh;
            if (iy < 0 || iy >= h) continue;
            for (long long kx = 0; kx < kw; ++kx) {
                const long long ix = x0 + kx * dw;
                if (ix < 0 || ix >= w) continue;
                const float v = xp[iy * w + ix];
                if (v > best || v != v) {
                    best = v;
                    idx = iy * w + ix;
                }
            }
        }
        out[e] = best;
        argmax[e] = idx;
    }
}

extern "C" __global__ void max_pool2d_backward_f32(const float* grad_out, const long long* argmax, POOL_GEOM_PARAMS,
                                                   long long dh, long long dw, float* grad_in) {
    const unsigned long long hw = h * w, ohw = oh * ow, n = planes * hw;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long plane = e / hw, p = e - plane * hw;
        const long long iy = p / w, ix = p - iy * w;
        const float* go = grad_out + plane * ohw;
        const long long* am = argmax + plane * ohw;
        float acc = 0.0f;
        // ky descending = oy ascending, kx descending = ox ascending: increasing output index
        for (long long ky = kh - 1; ky >= 0; --ky) {
            const long long oy = tap_output(iy, ky, sh, ph, dh, oh);
            if (oy < 0) continue;
            for (long long kx = kw - 1; kx >= 0; --kx) {
                const long long ox = tap_output(ix, kx, sw, pw, dw, ow);
                if (ox < 0) continue;
                const long long o = oy * ow + ox;
                if (am[o] == (long long)p) acc += go[o];
            }
        }
        grad_in[e] = acc;
    }
}

extern "C" __global__ void avg_pool2d_forward_f32(const float* x, POOL_GEOM_PARAMS, unsigned count_include_pad,
                                                  float* out) {
    const unsigned long long ohw = oh * ow, n = planes * ohw;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long plane = e / ohw, q = e - plane * ohw;
        const long long oy = q / ow, ox = q - oy * ow;
        const float* xp = x + plane * h * w;
        const long long y0 = oy * sh - ph, x0 = ox * sw - pw;
        float acc = 0.0f;
        for (long long ky = 0; ky < kh; ++ky) {
            const long long iy = y0 + ky;
            if (iy < 0 || iy >= h) continue;
            for (long long kx = 0; kx < kw; ++kx) {
                const long long ix = x0 + kx;
                if (ix < 0 || ix >= w) continue;
                acc += xp[iy * w + ix];
            }
        }
        out[e] = acc * avg_scale(oy, ox, h, w, kh, kw, sh, sw, ph, pw, count_include_pad);
    }
}

extern "C" __global__ void avg_pool2d_backward_f32(const float* grad_out, POOL_GEOM_PARAMS,
                                                   unsigned count_include_pad, float* grad_in) {
    const unsigned long long hw = h * w, ohw = oh * ow, n = planes * hw;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const unsigned long long plane = e / hw, p = e - plane * hw;
        const long long iy = p / w, ix = p - iy * w;
        const float* go = grad_out + plane * ohw;
        float acc = 0.0f;
        // oy ascending, then kx ascending: the order in which the CPU reference adds
        for (long long ky = kh - 1; ky >= 0; --ky) {
            const long long oy = tap_output(iy, ky, sh, ph, 1, oh);
            if (oy < 0) continue;
            for (long long kx = 0; kx < kw; ++kx) {
                const long long ox = tap_output(ix, kx, sw, pw, 1, ow);
                if (ox < 0) continue;
                acc += go[oy * ow + ox] * avg_scale(oy, ox, h, w, kh, kw, sh, sw, ph, pw, count_include_pad);
            }
        }
        grad_in[e] = acc;
    }
}

#undef POOL_GEOM_PARAMS
