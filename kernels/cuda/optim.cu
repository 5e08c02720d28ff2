// optim.cu: fused optimizer updates for parameters on the device, one pass over every element,
// out of place (the tensor layer's storage is immutable: the new parameter and state are fresh
// buffers, recycled by the caching allocator). Each thread applies, per element, exactly the
// sequence of operations of the CPU update loops (nn/src/optim/{adam,sgd}.rs), in the compute
// type (float for f32/f16/bf16 parameters, double for f64), so results agree with the CPU up to
// the contraction of a multiply-add into an FMA.
//
// Adam/AdamW (flags: 1 maximize, 2 weight decay, 4 decoupled (AdamW), 8 AMSGrad, 16 beta1 <= 0.5):
//   g = grad (negated when maximizing); with weight decay: p *= 1 - lr*wd (decoupled) or
//   g += wd*p; m = lerp(m, g, 1 - beta1) (PyTorch's two-sided scalar lerp); v = v*beta2 +
//   (1-beta2)*g*g; AMSGrad: vmax = max(vmax, v) keeping NaN; p += -step_size * m / (sqrt(v or
//   vmax) / sqrt(bias_correction2) + eps).
// SGD (flags: 1 maximize, 2 weight decay, 4 momentum, 8 nesterov, 16 first step): g (negated when
//   maximizing) += wd*p; momentum: b = first ? g : b*momentum + (1-dampening)*g, g = nesterov ?
//   g + momentum*b : b; p += -lr*g.
// Unused state pointers (no AMSGrad, no momentum) are never touched.
//
// Launch: 1-D grid-stride, block 256, grid min(ceil(n / 256), 4 * SMs); 64-bit indices.

namespace {

__device__ __forceinline__ unsigned long long grid_start() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned long long grid_stride() { return (unsigned long long)gridDim.x * blockDim.x; }

template <class T>
__device__ __forceinline__ void adam(const T* p_in, const T* g_in, const T* m_in, const T* v_in, const T* vmax_in,
                                     T* p_out, T* m_out, T* v_out, T* vmax_out, unsigned long long n, T w1,
                                     T one_minus_w1, T beta2, T c2, T bc2s, T eps, T neg_step, T decay, T wd,
                                     unsigned flags) {
    const bool maximize = flags & 1u, use_wd = flags & 2u, decoupled = flags & 4u, amsgrad = flags & 8u,
               small_w1 = !(flags & 16u);
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        T g = g_in[i], p = p_in[i];
        if (maximize) g = -g;
        if (use_wd) {
            if (decoupled) {
                p = p * decay;
            } else {
                g = g + wd * p;
            }
        }
        T m = m_in[i];
        m = small_w1 ? m + w1 * (g - m) : g - (g - m) * one_minus_w1;
        T v = v_in[i] * beta2 + c2 * g * g;
        T second = v;
        if (amsgrad) {
            T x = vmax_in[i];
            if (x != x || v != v || v > x) x = (x != x) ? x : v;
            vmax_out[i] = x;
            second = x;
        }
        const T denom = sqrt(second) / bc2s + eps;
        p_out[i] = p + neg_step * m / denom;
        m_out[i] = m;
        v_out[i] = v;
    }
}

template <class T>
__device__ __forceinline__ void sgd(const T* p_in, const T* g_in, const T* b_in, T* p_out, T* b_out,
                                    unsigned long long n, T wd, T mom, T damp1, T neg_lr, unsigned flags) {
    const bool maximize = flags & 1u, use_wd = flags & 2u, use_mom = flags & 4u, nesterov = flags & 8u,
               first = flags & 16u;
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        T g = g_in[i];
        const T p = p_in[i];
        if (maximize) g = -g;
        if (use_wd) g = g + wd * p;
        if (use_mom) {
            const T b = first ? g : b_in[i] * mom + damp1 * g;
            b_out[i] = b;
            g = nesterov ? g + mom * b : b;
        }
        p_out[i] = p + neg_lr * g;
    }
}

}  // namespace

extern "C" __global__ void adam_step_f32(const float* p, const float* g, const float* m, const float* v,
                                         const float* vmax, float* p_out, float* m_out, float* v_out,
                                         float* vmax_out, unsigned long long n, float w1, float one_minus_w1,
                                         float beta2, float c2, float bc2s, float eps, float neg_step, float decay,
                                         float wd, unsigned flags) {
    adam<float>(p, g, m, v, vmax, p_out, m_out, v_out, vmax_out, n, w1, one_minus_w1, beta2, c2, bc2s, eps, neg_step,
                decay, wd, flags);
}
extern "C" __global__ void adam_step_f64(const double* p, const double* g, const double* m, const double* v,
                                         const double* vmax, double* p_out, double* m_out, double* v_out,
                                         double* vmax_out, unsigned long long n, double w1, double one_minus_w1,
                                         double beta2, double c2, double bc2s, double eps, double neg_step,
                                         double decay, double wd, unsigned flags) {
    adam<double>(p, g, m, v, vmax, p_out, m_out, v_out, vmax_out, n, w1, one_minus_w1, beta2, c2, bc2s, eps,
                 neg_step, decay, wd, flags);
}
extern "C" __global__ void sgd_step_f32(const float* p, const float* g, const float* b, float* p_out, float* b_out,
                                        unsigned long long n, float wd, float mom, float damp1, float neg_lr,
                                        unsigned flags) {
    sgd<float>(p, g, b, p_out, b_out, n, wd, mom, damp1, neg_lr, flags);
}
extern "C" __global__ void sgd_step_f64(const double* p, const double* g, const double* b, double* p_out,
                                        double* b_out, unsigned long long n, double wd, double mom, double damp1,
                                        double neg_lr, unsigned flags) {
    sgd<double>(p, g, b, p_out, b_out, n, wd, mom, damp1, neg_lr, flags);
}
