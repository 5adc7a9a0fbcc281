// Elementwise kernels on NHWC f32 tensors (grid-stride loops over flat indices).
//
// Names ({op}_{variant}_f32, see common.cuh):
//   {relu,relu6,silu,sigmoid,hardswish}_fwd   y = act(x)
//   {relu,relu6,silu,sigmoid,hardswish}_bwd   gx = gy * act'(x)   (x: the forward input)
//   add_fwd                                   y = a + b
//   channel_scale_fwd                         y[n,.,.,c] = x[n,.,.,c] * s[n,c]  (SE; also its gx)
//   channel_scale_bwd_scale                   gs[n,c] = sum over h,w of gy * x
//   affine_fwd / affine_bwd                   y = x*scale[c] + shift[c] / gx = gy*scale[c]
//   layout_nchw_to_nhwc / layout_nhwc_to_nchw the boundary conversions
//   channel_copy_fwd                          copy c channels between strided NHWC rows
//                                             (concat into, or split out of, a wider tensor)
//   fill_fwd                                  y = value
//   unary_fwd                                 y = f(x) for the Backend's generic `Unary` ops
//   binary_fwd                                y = f(a, b), broadcast over up to 4 dims
//   iota_fwd                                  y[i] = i
//   random_fwd                                seeded normal / uniform numbers (SplitMix64, f64)
#include "common.cuh"

#define DV_ACT_KERNELS(name, code)                                                              \
    extern "C" __global__ void name##_fwd_f32(const float* x, float* y, long long n) {          \
        for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = dv_act(x[i], code);            \
    }                                                                                           \
    extern "C" __global__ void name##_bwd_f32(const float* x, const float* gy, float* gx,       \
                                               long long n) {                                   \
        for (idx_t i = dv_tid(); i < n; i += dv_stride()) gx[i] = gy[i] * dv_act_grad(x[i], code); \
    }

DV_ACT_KERNELS(relu, DV_ACT_RELU)
DV_ACT_KERNELS(relu6, DV_ACT_RELU6)
DV_ACT_KERNELS(silu, DV_ACT_SILU)
DV_ACT_KERNELS(sigmoid, DV_ACT_SIGMOID)
DV_ACT_KERNELS(hardswish, DV_ACT_HARDSWISH)

extern "C" __global__ void add_fwd_f32(const float* a, const float* b, float* y, long long n) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = a[i] + b[i];
}

// x: [batch, hw, c], s: [batch, c]
extern "C" __global__ void channel_scale_fwd_f32(const float* x, const float* s, float* y,
                                                 long long n, long long hw, long long c) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) {
        idx_t img = i / (hw * c);
        y[i] = x[i] * s[img * c + i % c];
    }
}

// Block: CS_CHANNELS consecutive channels of one image (blockIdx.x: image * channel tiles),
// CS_ROWS threads per channel stride over the hw positions, then a shared-memory sum.
#define CS_CHANNELS 32  // one warp across consecutive channels: coalesced NHWC reads
#define CS_ROWS 8       // 256 threads per block
extern "C" __global__ void channel_scale_bwd_scale_f32(const float* x, const float* gy, float* gs,
                                                       long long batch, long long hw, long long c) {
    __shared__ float smem_part[CS_ROWS][CS_CHANNELS];
    idx_t tiles = (c + CS_CHANNELS - 1) / CS_CHANNELS;
    idx_t img = blockIdx.x / tiles;
    idx_t ch = (blockIdx.x % tiles) * CS_CHANNELS + threadIdx.x;
    if (img >= batch) return;  // uniform per block: no thread reaches the barrier
    float acc = 0.0f;
    if (ch < c) {
        for (idx_t p = threadIdx.y; p < hw; p += CS_ROWS) {
            idx_t i = (img * hw + p) * c + ch;
            acc += gy[i] * x[i];
        }
    }
    smem_part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        float s = 0.0f;
        for (int r = 0; r < CS_ROWS; ++r) s += smem_part[r][threadIdx.x];
        gs[img * c + ch] = s;
    }
}

extern "C" __global__ void affine_fwd_f32(const float* x, const float* scale, const float* shift,
                                          float* y, long long n, long long c) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) {
        idx_t ch = i % c;
        y[i] = x[i] * scale[ch] + shift[ch];
    }
}

extern "C" __global__ void affine_bwd_f32(const float* gy, const float* scale, float* gx,
                                          long long n, long long c) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) gx[i] = gy[i] * scale[i % c];
}

// Layout conversions; `i` runs over the destination, so writes are coalesced.
extern "C" __global__ void layout_nchw_to_nhwc_f32(const float* x, float* y, long long n,
                                                   long long c, long long hw) {
    idx_t total = n * c * hw;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, p = (i / c) % hw, img = i / (c * hw);
        y[i] = x[(img * c + ch) * hw + p];
    }
}

extern "C" __global__ void layout_nhwc_to_nchw_f32(const float* x, float* y, long long n,
                                                   long long c, long long hw) {
    idx_t total = n * c * hw;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t p = i % hw, ch = (i / hw) % c, img = i / (c * hw);
        y[i] = x[(img * hw + p) * c + ch];
    }
}

// dst[p*dst_stride + dst_off + k] = src[p*src_stride + src_off + k] for p < pixels, k < c;
// `i` runs over the c copied channels of each pixel, so reads and writes are coalesced.
extern "C" __global__ void channel_copy_fwd_f32(const float* src, float* dst, long long pixels,
                                                long long c, long long src_stride,
                                                long long src_off, long long dst_stride,
                                                long long dst_off) {
    idx_t n = pixels * c;
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) {
        idx_t p = i / c, k = i % c;
        dst[p * dst_stride + dst_off + k] = src[p * src_stride + src_off + k];
    }
}

extern "C" __global__ void fill_fwd_f32(float* y, long long n, float value) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = value;
}

// Unary codes, as src/backend/cuda/elementwise.rs `unary_code` passes them. a, b: parameters.
enum DvUnary {
    DV_U_NEG = 0, DV_U_ABS = 1, DV_U_RELU = 2, DV_U_SQUARE = 3, DV_U_SQRT = 4, DV_U_EXP = 5,
    DV_U_LOG = 6, DV_U_STEP = 7, DV_U_AFFINE = 8, DV_U_CLAMP = 9, DV_U_RECIP = 10
};

// As src/backend/cpu/generic.rs `unary` (a NaN stays NaN, Clamp included).
__device__ __forceinline__ float dv_unary(float x, int op, float a, float b) {
    switch (op) {
    case DV_U_NEG: return -x;
    case DV_U_ABS: return fabsf(x);
    case DV_U_RELU: return x <= 0.0f ? 0.0f : x;
    case DV_U_SQUARE: return x * x;
    case DV_U_SQRT: return sqrtf(x);
    case DV_U_EXP: return expf(x);
    case DV_U_LOG: return logf(x);
    case DV_U_STEP: return x > 0.0f ? 1.0f : 0.0f;
    case DV_U_AFFINE: return __fadd_rn(__fmul_rn(a, x), b);  // no contraction: as the CPU rounds
    case DV_U_CLAMP: return x < a ? a : (x > b ? b : x);
    case DV_U_RECIP: return 1.0f / x;
    default: return x;
    }
}

// Layout-preserving: y may alias x.
extern "C" __global__ void unary_fwd_f32(const float* x, float* y, long long n, int op, float a, float b) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = dv_unary(x[i], op, a, b);
}

// Binary codes, as src/backend/cuda/elementwise.rs `binary_code` passes them.
enum DvBinary { DV_B_ADD = 0, DV_B_SUB = 1, DV_B_MUL = 2, DV_B_DIV = 3, DV_B_MAX = 4, DV_B_MIN = 5, DV_B_EQ = 6 };

__device__ __forceinline__ float dv_binary(float a, float b, int op) {
    switch (op) {
    case DV_B_ADD: return a + b;
    case DV_B_SUB: return a - b;
    case DV_B_MUL: return a * b;
    case DV_B_DIV: return a / b;
    case DV_B_MAX: return (a > b || isnan(a)) ? a : b;  // NaN wins, as torch.maximum
    case DV_B_MIN: return (a < b || isnan(a)) ? a : b;
    case DV_B_EQ: return a == b ? 1.0f : 0.0f;
    default: return a;
    }
}

// y[i] = f(a[.], b[.]) with y dense over dims (d0, d1, d2, d3), d3 fastest (the launch code
// orders the dims as y lies in memory, so writes are coalesced); a and b are addressed by their
// own strides per dim, 0 along a broadcast dim.
extern "C" __global__ void binary_fwd_f32(const float* a, const float* b, float* y, long long n,
                                          long long d1, long long d2, long long d3, long long sa0,
                                          long long sa1, long long sa2, long long sa3, long long sb0,
                                          long long sb1, long long sb2, long long sb3, int op) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) {
        idx_t i3 = i % d3, t = i / d3;
        idx_t i2 = t % d2;
        t /= d2;
        idx_t i1 = t % d1, i0 = t / d1;
        y[i] = dv_binary(a[i0 * sa0 + i1 * sa1 + i2 * sa2 + i3 * sa3], b[i0 * sb0 + i1 * sb1 + i2 * sb2 + i3 * sb3], op);
    }
}

extern "C" __global__ void iota_fwd_f32(float* y, long long n) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = (float)i;
}

// SplitMix64 of (seed, counter) -> a uniform in (0, 1) with 53 bits; the same sum as the CPU's
// `backend::cpu::generic::random`, in f64 so that both round the same value to f32.
__device__ __forceinline__ double dv_unit(unsigned long long seed, unsigned long long i) {
    unsigned long long z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;  // 2^53
}

// Counter of storage index i: its NCHW index when y is NHWC memory (c channels, hw pixels).
// cospi, not cos(2 pi u): the same value without cos's large-argument path (a local array).
extern "C" __global__ void random_fwd_f32(float* y, long long n, long long c, long long hw,
                                          unsigned long long seed, int normal) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) {
        idx_t per = c * hw, r = i % per;
        unsigned long long k = (unsigned long long)((i / per) * per + (r % c) * hw + r / c);
        y[i] = normal ? (float)(sqrt(-2.0 * log(dv_unit(seed, 2 * k))) * cospi(2.0 * dv_unit(seed, 2 * k + 1)))
                      : (float)dv_unit(seed, k);
    }
}

DV_REGISTER_KERNELS(relu_fwd_f32, relu_bwd_f32, relu6_fwd_f32, relu6_bwd_f32, silu_fwd_f32,
                    silu_bwd_f32, sigmoid_fwd_f32, sigmoid_bwd_f32, hardswish_fwd_f32,
                    hardswish_bwd_f32, add_fwd_f32, channel_scale_fwd_f32,
                    channel_scale_bwd_scale_f32, affine_fwd_f32, affine_bwd_f32,
                    layout_nchw_to_nhwc_f32, layout_nhwc_to_nchw_f32, channel_copy_fwd_f32, fill_fwd_f32,
                    unary_fwd_f32, binary_fwd_f32, iota_fwd_f32, random_fwd_f32)
