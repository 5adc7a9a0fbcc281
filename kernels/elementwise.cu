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
//   scale_fwd / sub_fwd                       y = k*x / y = a - b     (y may alias x / a)
//   axpy_items_fwd                            x[b, j] += alpha[b] * g[b, j]  (in place)
//   channel_copy_fwd                          copy c channels between strided NHWC rows
//                                             (concat into, or split out of, a wider tensor)
//   one_hot_fwd                               y[i, t[i]] = 1, every other y = 0
//   fill_fwd                                  y = value
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

// y may alias x: each thread reads x[i] before it writes y[i].
extern "C" __global__ void scale_fwd_f32(const float* x, float* y, long long n, float k) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = k * x[i];
}

// y may alias a (or b): each thread reads a[i], b[i] before it writes y[i].
extern "C" __global__ void sub_fwd_f32(const float* a, const float* b, float* y, long long n) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = a[i] - b[i];
}

// x, g: [batch, per_item], alpha: [batch]; x is updated in place.
extern "C" __global__ void axpy_items_fwd_f32(float* x, const float* g, const float* alpha,
                                              long long batch, long long per_item) {
    idx_t n = batch * per_item;
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) x[i] += alpha[i / per_item] * g[i];
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

// y: [n, k]; a target outside [0, k) leaves its row all zeros.
extern "C" __global__ void one_hot_fwd_f32(const int* targets, float* y, long long n, long long k) {
    idx_t total = n * k;
    for (idx_t i = dv_tid(); i < total; i += dv_stride())
        y[i] = (idx_t)targets[i / k] == i % k ? 1.0f : 0.0f;
}

extern "C" __global__ void fill_fwd_f32(float* y, long long n, float value) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = value;
}

DV_REGISTER_KERNELS(relu_fwd_f32, relu_bwd_f32, relu6_fwd_f32, relu6_bwd_f32, silu_fwd_f32,
                    silu_bwd_f32, sigmoid_fwd_f32, sigmoid_bwd_f32, hardswish_fwd_f32,
                    hardswish_bwd_f32, add_fwd_f32, channel_scale_fwd_f32,
                    channel_scale_bwd_scale_f32, affine_fwd_f32, affine_bwd_f32,
                    layout_nchw_to_nhwc_f32, layout_nhwc_to_nchw_f32, scale_fwd_f32, sub_fwd_f32,
                    axpy_items_fwd_f32, channel_copy_fwd_f32, one_hot_fwd_f32, fill_fwd_f32)
