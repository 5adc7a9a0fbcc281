// Local response normalisation across channels on NHWC f32 tensors, PyTorch's
// `nn.LocalResponseNorm` as src/backend/cpu/elementwise.rs (`lrn`, `lrn_backward`) computes it:
//   d[p, c] = k + alpha/size * sum_{j in [c - size/2, c + (size-1)/2], clipped} x[p, j]^2
//   y = x * d^-beta
//   gx[p, j] = gy[p, j] d[p, j]^-beta
//              - (2 alpha beta / size) x[p, j] sum_{c in [j - (size-1)/2, j + size/2]} gy x d^(-beta-1) [p, c]
//
// Names ({op}_{variant}_f32, see common.cuh):
//   lrn_fwd  y from x
//   lrn_bwd  gx from x and gy (recomputes d: the op keeps no workspace)
//
// Versions: one thread per element, grid-stride over pixels * c; a window is a few contiguous
// channels of one NHWC row, so neighbouring threads read neighbouring floats. The backward
// recomputes d for each of the `size` channels whose window holds j: O(size^2) per element,
// small for the sizes networks use (AlexNet, GoogLeNet: 5).
#include "common.cuh"

// Half-widths of the window: [c - lrn_before(size), c + lrn_after(size)].
__device__ __forceinline__ idx_t lrn_before(idx_t size) { return size / 2; }
__device__ __forceinline__ idx_t lrn_after(idx_t size) { return size > 0 ? (size - 1) / 2 : 0; }

// d at channel ch of the row xr (c channels), summed in the CPU reference's order.
__device__ __forceinline__ float lrn_denominator(const float* xr, idx_t ch, idx_t c, idx_t size,
                                                 float alpha_over_size, float k) {
    idx_t lo = ch - lrn_before(size), hi = ch + lrn_after(size) + 1;
    lo = lo < 0 ? 0 : lo;
    hi = hi > c ? c : hi;
    float s = 0.0f;
    for (idx_t j = lo; j < hi; ++j) s += xr[j] * xr[j];
    return k + alpha_over_size * s;
}

extern "C" __global__ void lrn_fwd_f32(const float* x, float* y, long long pixels, long long c,
                                       long long size, float alpha, float beta, float k) {
    idx_t n = pixels * c;
    float a = alpha / (float)size;
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) {
        idx_t ch = i % c;
        float d = lrn_denominator(x + (i - ch), ch, c, size, a, k);
        y[i] = x[i] * powf(d, -beta);
    }
}

extern "C" __global__ void lrn_bwd_f32(const float* x, const float* gy, float* gx,
                                       long long pixels, long long c, long long size, float alpha,
                                       float beta, float k) {
    idx_t n = pixels * c;
    float a = alpha / (float)size;
    float coef = 2.0f * alpha * beta / (float)size;
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) {
        idx_t j = i % c, row = i - j;
        const float *xr = x + row, *gyr = gy + row;
        // the channels whose window holds j
        idx_t lo = j - lrn_after(size), hi = j + lrn_before(size) + 1;
        lo = lo < 0 ? 0 : lo;
        hi = hi > c ? c : hi;
        float acc = 0.0f;
        for (idx_t ch = lo; ch < hi; ++ch) {
            float d = lrn_denominator(xr, ch, c, size, a, k);
            acc += gyr[ch] * xr[ch] * powf(d, -beta - 1.0f);
        }
        float dj = lrn_denominator(xr, j, c, size, a, k);
        gx[i] = gyr[j] * powf(dj, -beta) - coef * xr[j] * acc;
    }
}

DV_REGISTER_KERNELS(lrn_fwd_f32, lrn_bwd_f32)
