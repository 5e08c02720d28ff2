// ew.cu: the element-wise ops under the tensor layer's CUDA dispatch (tensor/src/ops/elementwise.rs):
// every unary float op with its scalar parameters, broadcasting binary float ops, comparisons
// into u8 masks, `where`, and the all-finite check.
//
// Op selection. The op arrives as an int (codes in src/cuda/ew.rs, which mirrors the order of
// the switches below), so there is one kernel per dtype and layout rather than one per op and
// dtype. The switch is outside the grid-stride loop: each case runs a loop instantiated for
// one op (a template parameter), so the inner loops have no per-element dispatch.
//
// Dtypes. f32, f16 and bf16 compute in f32 registers (halves widened, the result rounded once
// to nearest even on store), f64 in double: the CPU reference does the same (it converts
// halves through f32). Scalar parameters (powf's exponent, clamp's bounds, affine's mul/add)
// arrive as double and are rounded to the compute type in the kernel, as the CPU rounds them
// (`as f32`). `x * m + a` (affine) uses __fmul_rn/__fadd_rn so NVRTC's default FMA contraction
// cannot fuse it: two roundings, as on the CPU, so affine/add_scalar/mul_scalar are exact.
// Transcendentals use the accurate libdevice functions (expf, erff, tanhf, ...; no __expf),
// which are within a few ulps of the CPU's; +-*/, sqrt and comparisons are IEEE-exact (NVRTC
// defaults: -prec-div=true, -prec-sqrt=true, no flush-to-zero).
//
// Layouts. Contiguous kernels (ew_unary_*, ew_binary_*) take dense operands of n elements.
// The f32 ones use 16-byte float4 loads and stores while all pointers are 16-byte aligned
// (always, for the tensor layer's buffers, which start at element 0 of a fresh allocation),
// then a scalar tail for the last n % 4 elements; the f16/bf16 ones the same 16-byte accesses
// of 8 elements (Vec8), then a tail of n % 8. Broadcasting kernels (ew_binary_bcast_*,
// ew_cmp_*, ew_where_*) take each operand's own strides (0 on broadcast dims) and element
// offset; `meta` is a small device buffer of long long: rank dims, then rank strides per
// operand. Each thread splits its flat output index into the multi-index (innermost first)
// and dots it with each operand's strides. Stores are coalesced; loads too when an operand's
// innermost stride is 1 (or 0: a broadcast load hits one cache line for the whole warp).
//
// Launch (all): 1-D grid-stride loops; blockDim.x = 256; gridDim.x = min(ceil(n / 256),
// 4 * SMs); no shared memory; 64-bit indexing. Memory traffic: unary reads and writes n
// elements; binary reads 2n (fewer with broadcasting, through the cache) and writes n;
// comparisons write n bytes; all_finite reads n and writes one flag (only if it finds a
// non-finite value).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

__device__ __forceinline__ unsigned long long grid_start() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned long long grid_stride() { return (unsigned long long)gridDim.x * blockDim.x; }

// ---- loads and stores: T in memory, F in registers ------------------------------------------
__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ long long widen(long long x) { return x; }
__device__ __forceinline__ int widen(unsigned char x) { return (int)x; }
__device__ __forceinline__ int widen(signed char x) { return (int)x; }

template <class T>
__device__ __forceinline__ T narrow(float x);
template <>
__device__ __forceinline__ float narrow<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __half narrow<__half>(float x) {
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// ---- math by compute type -------------------------------------------------------------------
__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double m_abs(double x) { return fabs(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_sin(float x) { return sinf(x); }
__device__ __forceinline__ double m_sin(double x) { return sin(x); }
__device__ __forceinline__ float m_cos(float x) { return cosf(x); }
__device__ __forceinline__ double m_cos(double x) { return cos(x); }
__device__ __forceinline__ float m_erf(float x) { return erff(x); }
__device__ __forceinline__ double m_erf(double x) { return erf(x); }
__device__ __forceinline__ float m_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double m_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
// |x| <= the largest finite value: false for NaN and +-inf.
__device__ __forceinline__ bool m_finite(float x) { return fabsf(x) <= 3.40282346638528859812e+38f; }
__device__ __forceinline__ bool m_finite(double x) { return fabs(x) <= 1.7976931348623157e+308; }

// ---- unary ops (codes: src/cuda/ew.rs UnaryOp::code) ----------------------------------------
// The formulas of tensor/src/ops/elementwise.rs apply_unary, in the compute type F.
template <class F, int OP>
__device__ __forceinline__ F unary_op(F x, F p0, F p1) {
    const F zero = F(0), one = F(1), half = F(0.5);
    const F sqrt_2_over_pi = F(0.7978845608028654), gelu_c = F(0.044715);
    if (OP == 0) return -x;                                   // neg
    if (OP == 1) return m_exp(x);                             // exp
    if (OP == 2) return m_log(x);                             // log
    if (OP == 3) return m_sqrt(x);                            // sqrt
    if (OP == 4) return one / m_sqrt(x);                      // rsqrt (IEEE sqrt and divide)
    if (OP == 5) return m_abs(x);                             // abs
    if (OP == 6) return x < zero ? zero : x;                  // relu (NaN and -0 pass through)
    if (OP == 7) return half * x * (one + m_erf(x * F(0.70710678118654752)));  // gelu (erf)
    if (OP == 8) {                                            // gelu (tanh approximation)
        const F inner = sqrt_2_over_pi * (x + gelu_c * x * x * x);
        return half * x * (one + m_tanh(inner));
    }
    if (OP == 9) return one / (one + m_exp(-x));              // sigmoid
    if (OP == 10) return m_tanh(x);                           // tanh
    if (OP == 11) return m_sin(x);                            // sin
    if (OP == 12) return m_cos(x);                            // cos
    if (OP == 13) return m_pow(x, p0);                        // powf (p0 = exponent; 2 -> sqr)
    if (OP == 14) return x < p0 ? p0 : (x > p1 ? p1 : x);     // clamp(p0, p1) (NaN passes)
    if (OP == 15) return add_rn(mul_rn(x, p0), p1);           // affine: x * p0 + p1, unfused
    if (OP == 16) return one / x;                             // recip
    if (OP == 17) return x * x;                               // sqr
    if (OP == 18) return x > zero ? one : (x < zero ? -one : x * zero);  // sign (+-0, NaN kept)
    if (OP == 19) {                                           // d gelu / dx (erf form)
        const F cdf = half * (one + m_erf(x * F(0.70710678118654752)));
        const F pdf = m_exp(-half * x * x) * F(0.39894228040143268);  // 1 / sqrt(2 pi)
        return cdf + x * pdf;
    }
    if (OP == 20) {                                           // d gelu_tanh / dx
        const F inner = sqrt_2_over_pi * (x + gelu_c * x * x * x);
        const F t = m_tanh(inner);
        const F dinner = sqrt_2_over_pi * (one + F(3) * gelu_c * x * x);
        return half * (one + t) + half * x * (one - t * t) * dinner;
    }
    return x;
}

// Calls BODY with OP bound to the constant matching the runtime code `op` (unary: 0..20).
#define STAPES_EW_UNARY_SWITCH(op, BODY) \
    switch (op) {                        \
        case 0: BODY(0); break;          \
        case 1: BODY(1); break;          \
        case 2: BODY(2); break;          \
        case 3: BODY(3); break;          \
        case 4: BODY(4); break;          \
        case 5: BODY(5); break;          \
        case 6: BODY(6); break;          \
        case 7: BODY(7); break;          \
        case 8: BODY(8); break;          \
        case 9: BODY(9); break;          \
        case 10: BODY(10); break;        \
        case 11: BODY(11); break;        \
        case 12: BODY(12); break;        \
        case 13: BODY(13); break;        \
        case 14: BODY(14); break;        \
        case 15: BODY(15); break;        \
        case 16: BODY(16); break;        \
        case 17: BODY(17); break;        \
        case 18: BODY(18); break;        \
        case 19: BODY(19); break;        \
        case 20: BODY(20); break;        \
        default: break;                  \
    }

// 16-byte vectors of the 2-byte floats (f16, bf16): the dense loops of those dtypes load and store
// 8 elements at a time (one 128-bit access, as float4 for f32) while every pointer is 16-byte
// aligned, each element widened, computed and rounded on its own, then a scalar tail.
template <class T>
struct Vec8 {
    T v[8];
};
template <class T>
__device__ __forceinline__ Vec8<T> load8(const T* p, unsigned long long i) {
    const float4 raw = reinterpret_cast<const float4*>(p)[i];
    Vec8<T> out;
    memcpy(&out, &raw, 16);
    return out;
}
template <class T>
__device__ __forceinline__ void store8(T* p, unsigned long long i, const Vec8<T>& x) {
    float4 raw;
    memcpy(&raw, &x, 16);
    reinterpret_cast<float4*>(p)[i] = raw;
}
__device__ __forceinline__ bool aligned16(const void* a, const void* b, const void* c) {
    return (((unsigned long long)a | (unsigned long long)b | (unsigned long long)c) & 15ull) == 0;
}

// Dense unary loop of a 2-byte float (halves round once on store).
template <class T, int OP>
__device__ __forceinline__ void unary_loop_h(const T* x, T* out, float p0, float p1, unsigned long long n) {
    unsigned long long done = 0;
    if (aligned16(x, out, out)) {
        const unsigned long long n8 = n / 8;
        for (unsigned long long i = grid_start(); i < n8; i += grid_stride()) {
            Vec8<T> v = load8(x, i);
            for (int k = 0; k < 8; ++k) v.v[k] = narrow<T>(unary_op<float, OP>(widen(v.v[k]), p0, p1));
            store8(out, i, v);
        }
        done = n8 * 8;
    }
    for (unsigned long long i = done + grid_start(); i < n; i += grid_stride()) {
        out[i] = narrow<T>(unary_op<float, OP>(widen(x[i]), p0, p1));
    }
}
template <int OP>
__device__ __forceinline__ void unary_loop_f64(const double* x, double* out, double p0, double p1,
                                               unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) out[i] = unary_op<double, OP>(x[i], p0, p1);
}

// Dense f32 unary loop: float4 over the aligned body, scalars over the tail.
template <int OP>
__device__ __forceinline__ void unary_loop_f32(const float* x, float* out, float p0, float p1, unsigned long long n) {
    unsigned long long done = 0;
    if ((((unsigned long long)x | (unsigned long long)out) & 15ull) == 0) {
        const unsigned long long n4 = n / 4;
        const float4* x4 = reinterpret_cast<const float4*>(x);
        float4* o4 = reinterpret_cast<float4*>(out);
        for (unsigned long long i = grid_start(); i < n4; i += grid_stride()) {
            const float4 v = x4[i];
            o4[i] = make_float4(unary_op<float, OP>(v.x, p0, p1), unary_op<float, OP>(v.y, p0, p1),
                                unary_op<float, OP>(v.z, p0, p1), unary_op<float, OP>(v.w, p0, p1));
        }
        done = n4 * 4;
    }
    for (unsigned long long i = done + grid_start(); i < n; i += grid_stride()) out[i] = unary_op<float, OP>(x[i], p0, p1);
}

// ---- binary ops (codes: src/cuda/ew.rs BinaryOp::code) --------------------------------------
template <class F, int OP>
__device__ __forceinline__ F binary_op(F a, F b) {
    if (OP == 0) return a + b;
    if (OP == 1) return a - b;
    if (OP == 2) return a * b;
    if (OP == 3) return a / b;
    if (OP == 4) return (a != a || a > b) ? a : b;  // maximum: NaN in either propagates
    if (OP == 5) return (a != a || a < b) ? a : b;  // minimum
    if (OP == 6) return m_pow(a, b);
    return a;
}

#define STAPES_EW_BINARY_SWITCH(op, BODY) \
    switch (op) {                         \
        case 0: BODY(0); break;           \
        case 1: BODY(1); break;           \
        case 2: BODY(2); break;           \
        case 3: BODY(3); break;           \
        case 4: BODY(4); break;           \
        case 5: BODY(5); break;           \
        case 6: BODY(6); break;           \
        default: break;                   \
    }

// Dense binary loop of a 2-byte float: 8-element vectors over the aligned body (see Vec8).
template <class T, int OP>
__device__ __forceinline__ void binary_loop(const T* a, const T* b, T* out, unsigned long long n) {
    unsigned long long done = 0;
    if (aligned16(a, b, out)) {
        const unsigned long long n8 = n / 8;
        for (unsigned long long i = grid_start(); i < n8; i += grid_stride()) {
            const Vec8<T> u = load8(a, i), v = load8(b, i);
            Vec8<T> o;
            for (int k = 0; k < 8; ++k) o.v[k] = narrow<T>(binary_op<float, OP>(widen(u.v[k]), widen(v.v[k])));
            store8(out, i, o);
        }
        done = n8 * 8;
    }
    for (unsigned long long i = done + grid_start(); i < n; i += grid_stride()) {
        out[i] = narrow<T>(binary_op<float, OP>(widen(a[i]), widen(b[i])));
    }
}
template <int OP>
__device__ __forceinline__ void binary_loop_f64(const double* a, const double* b, double* out, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) out[i] = binary_op<double, OP>(a[i], b[i]);
}
template <int OP>
__device__ __forceinline__ void binary_loop_f32(const float* a, const float* b, float* out, unsigned long long n) {
    unsigned long long done = 0;
    if ((((unsigned long long)a | (unsigned long long)b | (unsigned long long)out) & 15ull) == 0) {
        const unsigned long long n4 = n / 4;
        const float4* a4 = reinterpret_cast<const float4*>(a);
        const float4* b4 = reinterpret_cast<const float4*>(b);
        float4* o4 = reinterpret_cast<float4*>(out);
        for (unsigned long long i = grid_start(); i < n4; i += grid_stride()) {
            const float4 u = a4[i], v = b4[i];
            o4[i] = make_float4(binary_op<float, OP>(u.x, v.x), binary_op<float, OP>(u.y, v.y),
                                binary_op<float, OP>(u.z, v.z), binary_op<float, OP>(u.w, v.w));
        }
        done = n4 * 4;
    }
    for (unsigned long long i = done + grid_start(); i < n; i += grid_stride()) out[i] = binary_op<float, OP>(a[i], b[i]);
}

// The element offsets of flat output index i in operands with strides meta[rank * (1 + k)...].
template <int K>
__device__ __forceinline__ void offsets(unsigned long long i, const long long* meta, int rank, long long (&at)[K]) {
    unsigned long long rem = i;
    for (int d = rank - 1; d >= 0; --d) {
        const unsigned long long dim = (unsigned long long)meta[d];
        const long long idx = (long long)(rem % dim);
        rem /= dim;
        for (int k = 0; k < K; ++k) at[k] += idx * meta[rank * (1 + k) + d];
    }
}

template <class T, class F, int OP>
__device__ __forceinline__ void binary_bcast_loop(const T* a, const T* b, T* out, const long long* meta, int rank,
                                                  long long a_off, long long b_off, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        long long at[2] = {a_off, b_off};
        offsets<2>(i, meta, rank, at);
        out[i] = T(binary_op<F, OP>(F(widen(a[at[0]])), F(widen(b[at[1]]))));
    }
}
// f16/bf16 need the explicit rounding store (T(float) is the emulator's constructor only).
template <class T, int OP>
__device__ __forceinline__ void binary_bcast_loop_half(const T* a, const T* b, T* out, const long long* meta, int rank,
                                                       long long a_off, long long b_off, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        long long at[2] = {a_off, b_off};
        offsets<2>(i, meta, rank, at);
        out[i] = narrow<T>(binary_op<float, OP>(widen(a[at[0]]), widen(b[at[1]])));
    }
}

// ---- comparisons (codes: src/cuda/ew.rs CmpOp::code) ----------------------------------------
// Compared in the widened type: exact for every dtype (halves widen exactly to float), and
// with IEEE semantics as Rust's PartialOrd: NaN is unequal to everything, -0 == +0.
template <class V, int OP>
__device__ __forceinline__ unsigned char cmp_op(V a, V b) {
    if (OP == 0) return a == b;
    if (OP == 1) return a != b;
    if (OP == 2) return a < b;
    if (OP == 3) return a <= b;
    if (OP == 4) return a > b;
    if (OP == 5) return a >= b;
    return 0;
}

#define STAPES_EW_CMP_SWITCH(op, BODY) \
    switch (op) {                      \
        case 0: BODY(0); break;        \
        case 1: BODY(1); break;        \
        case 2: BODY(2); break;        \
        case 3: BODY(3); break;        \
        case 4: BODY(4); break;        \
        case 5: BODY(5); break;        \
        default: break;                \
    }

template <class T, int OP>
__device__ __forceinline__ void cmp_loop(const T* a, const T* b, unsigned char* out, const long long* meta, int rank,
                                         long long a_off, long long b_off, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        long long at[2] = {a_off, b_off};
        offsets<2>(i, meta, rank, at);
        out[i] = cmp_op<decltype(widen(a[0])), OP>(widen(a[at[0]]), widen(b[at[1]]));
    }
}

// ---- where: out = mask != 0 ? a : b, by element size (values are moved, not computed) ----------
template <class T>
__device__ __forceinline__ void where_loop(const unsigned char* mask, const T* a, const T* b, T* out,
                                           const long long* meta, int rank, long long m_off, long long a_off,
                                           long long b_off, unsigned long long n) {
    for (unsigned long long i = grid_start(); i < n; i += grid_stride()) {
        long long at[3] = {m_off, a_off, b_off};
        offsets<3>(i, meta, rank, at);
        out[i] = mask[at[0]] != 0 ? a[at[1]] : b[at[2]];
    }
}

// ---- all finite: flag (set to 1 by the caller) is cleared if any element is NaN or infinite ----
template <class T>
__device__ __forceinline__ void all_finite_loop(const T* x, unsigned int* flag, unsigned long long n) {
    bool ok = true;
    for (unsigned long long i = grid_start(); i < n && ok; i += grid_stride()) ok = m_finite(widen(x[i]));
    if (!ok) atomicExch(flag, 0u);
}

}  // namespace

// ================================================================================================
// Kernels. (Written out, not generated by macros: build.rs finds kernels by their
// `extern "C" __global__` lines.)
// ================================================================================================

// out[i] = unary(op, x[i]; p0, p1), i < n, dense operands.
extern "C" __global__ void ew_unary_f32(const float* x, float* out, int op, double p0, double p1, unsigned long long n) {
#define BODY(OP) unary_loop_f32<OP>(x, out, (float)p0, (float)p1, n)
    STAPES_EW_UNARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_unary_f16(const __half* x, __half* out, int op, double p0, double p1, unsigned long long n) {
#define BODY(OP) unary_loop_h<__half, OP>(x, out, (float)p0, (float)p1, n)
    STAPES_EW_UNARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_unary_bf16(const __nv_bfloat16* x, __nv_bfloat16* out, int op, double p0, double p1,
                                         unsigned long long n) {
#define BODY(OP) unary_loop_h<__nv_bfloat16, OP>(x, out, (float)p0, (float)p1, n)
    STAPES_EW_UNARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_unary_f64(const double* x, double* out, int op, double p0, double p1, unsigned long long n) {
#define BODY(OP) unary_loop_f64<OP>(x, out, p0, p1, n)
    STAPES_EW_UNARY_SWITCH(op, BODY)
#undef BODY
}

// out[i] = binary(op, a[i], b[i]), i < n, dense operands of one shape.
extern "C" __global__ void ew_binary_f32(const float* a, const float* b, float* out, int op, unsigned long long n) {
#define BODY(OP) binary_loop_f32<OP>(a, b, out, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_binary_f16(const __half* a, const __half* b, __half* out, int op, unsigned long long n) {
#define BODY(OP) binary_loop<__half, OP>(a, b, out, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_binary_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, int op,
                                          unsigned long long n) {
#define BODY(OP) binary_loop<__nv_bfloat16, OP>(a, b, out, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_binary_f64(const double* a, const double* b, double* out, int op, unsigned long long n) {
#define BODY(OP) binary_loop_f64<OP>(a, b, out, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}

// out[i] = binary(op, a[a_off + idx(i)·sa], b[b_off + idx(i)·sb]); meta = dims ++ sa ++ sb.
extern "C" __global__ void ew_binary_bcast_f32(const float* a, const float* b, float* out, int op, const long long* meta,
                                               int rank, long long a_off, long long b_off, unsigned long long n) {
#define BODY(OP) binary_bcast_loop<float, float, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_binary_bcast_f16(const __half* a, const __half* b, __half* out, int op,
                                               const long long* meta, int rank, long long a_off, long long b_off,
                                               unsigned long long n) {
#define BODY(OP) binary_bcast_loop_half<__half, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_binary_bcast_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out,
                                                int op, const long long* meta, int rank, long long a_off,
                                                long long b_off, unsigned long long n) {
#define BODY(OP) binary_bcast_loop_half<__nv_bfloat16, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_binary_bcast_f64(const double* a, const double* b, double* out, int op,
                                               const long long* meta, int rank, long long a_off, long long b_off,
                                               unsigned long long n) {
#define BODY(OP) binary_bcast_loop<double, double, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_BINARY_SWITCH(op, BODY)
#undef BODY
}

// out[i] = cmp(op, a[..], b[..]) as 0/1, broadcasting as ew_binary_bcast_*; every dtype.
extern "C" __global__ void ew_cmp_f32(const float* a, const float* b, unsigned char* out, int op, const long long* meta,
                                      int rank, long long a_off, long long b_off, unsigned long long n) {
#define BODY(OP) cmp_loop<float, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_CMP_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_cmp_f16(const __half* a, const __half* b, unsigned char* out, int op,
                                      const long long* meta, int rank, long long a_off, long long b_off,
                                      unsigned long long n) {
#define BODY(OP) cmp_loop<__half, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_CMP_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_cmp_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, unsigned char* out, int op,
                                       const long long* meta, int rank, long long a_off, long long b_off,
                                       unsigned long long n) {
#define BODY(OP) cmp_loop<__nv_bfloat16, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_CMP_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_cmp_f64(const double* a, const double* b, unsigned char* out, int op,
                                      const long long* meta, int rank, long long a_off, long long b_off,
                                      unsigned long long n) {
#define BODY(OP) cmp_loop<double, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_CMP_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_cmp_i64(const long long* a, const long long* b, unsigned char* out, int op,
                                      const long long* meta, int rank, long long a_off, long long b_off,
                                      unsigned long long n) {
#define BODY(OP) cmp_loop<long long, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_CMP_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_cmp_u8(const unsigned char* a, const unsigned char* b, unsigned char* out, int op,
                                     const long long* meta, int rank, long long a_off, long long b_off,
                                     unsigned long long n) {
#define BODY(OP) cmp_loop<unsigned char, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_CMP_SWITCH(op, BODY)
#undef BODY
}
extern "C" __global__ void ew_cmp_i8(const signed char* a, const signed char* b, unsigned char* out, int op,
                                     const long long* meta, int rank, long long a_off, long long b_off,
                                     unsigned long long n) {
#define BODY(OP) cmp_loop<signed char, OP>(a, b, out, meta, rank, a_off, b_off, n)
    STAPES_EW_CMP_SWITCH(op, BODY)
#undef BODY
}

// out[i] = mask[..] != 0 ? a[..] : b[..]; meta = dims ++ s_mask ++ s_a ++ s_b; by element size.
extern "C" __global__ void ew_where_b1(const unsigned char* mask, const unsigned char* a, const unsigned char* b,
                                       unsigned char* out, const long long* meta, int rank, long long m_off,
                                       long long a_off, long long b_off, unsigned long long n) {
    where_loop<unsigned char>(mask, a, b, out, meta, rank, m_off, a_off, b_off, n);
}
extern "C" __global__ void ew_where_b2(const unsigned char* mask, const unsigned short* a, const unsigned short* b,
                                       unsigned short* out, const long long* meta, int rank, long long m_off,
                                       long long a_off, long long b_off, unsigned long long n) {
    where_loop<unsigned short>(mask, a, b, out, meta, rank, m_off, a_off, b_off, n);
}
extern "C" __global__ void ew_where_b4(const unsigned char* mask, const unsigned int* a, const unsigned int* b,
                                       unsigned int* out, const long long* meta, int rank, long long m_off,
                                       long long a_off, long long b_off, unsigned long long n) {
    where_loop<unsigned int>(mask, a, b, out, meta, rank, m_off, a_off, b_off, n);
}
extern "C" __global__ void ew_where_b8(const unsigned char* mask, const unsigned long long* a,
                                       const unsigned long long* b, unsigned long long* out, const long long* meta,
                                       int rank, long long m_off, long long a_off, long long b_off,
                                       unsigned long long n) {
    where_loop<unsigned long long>(mask, a, b, out, meta, rank, m_off, a_off, b_off, n);
}

// *flag = 0 if any of x[0, n) is NaN or infinite (the caller sets *flag = 1 first).
extern "C" __global__ void ew_all_finite_f32(const float* x, unsigned int* flag, unsigned long long n) {
    all_finite_loop<float>(x, flag, n);
}
extern "C" __global__ void ew_all_finite_f16(const __half* x, unsigned int* flag, unsigned long long n) {
    all_finite_loop<__half>(x, flag, n);
}
extern "C" __global__ void ew_all_finite_bf16(const __nv_bfloat16* x, unsigned int* flag, unsigned long long n) {
    all_finite_loop<__nv_bfloat16>(x, flag, n);
}
extern "C" __global__ void ew_all_finite_f64(const double* x, unsigned int* flag, unsigned long long n) {
    all_finite_loop<double>(x, flag, n);
}
