// Pooling on NHWC f32 tensors, PyTorch semantics window for window (as src/backend/cpu/pool.rs).
// One thread per output element (forward) or per input element (backward, gathering from the
// windows that cover it: deterministic, no atomics, and summed in the CPU reference's order).
//
// Names ({op}_{variant}_f32, see common.cuh):
//   max_pool2d_fwd / max_pool2d_bwd            argmax kept as ih*W + iw within the (n, c) plane
//   avg_pool2d_fwd / avg_pool2d_bwd            count_include_pad, ceil_mode divisor rule
//   adaptive_avg_pool2d_fwd / _bwd             windows [floor(o*in/out), ceil((o+1)*in/out))
#include "common.cuh"

// Geometry of one pooled dimension, passed as (in, out, kernel, stride, pad).
struct DvPoolDim {
    idx_t in, out, k, s, p;
};

// Window of output o: clipped input range [lo, hi) and PyTorch's divisor length (the window
// clipped to the padded input only).
__device__ __forceinline__ void dv_pool_window(DvPoolDim d, idx_t o, idx_t* lo, idx_t* hi, idx_t* padded) {
    idx_t start = o * d.s - d.p;
    idx_t end_padded = min(start + d.k, d.in + d.p);
    *padded = end_padded - start;
    *lo = max(start, (idx_t)0);
    *hi = max(min(max(end_padded, (idx_t)0), d.in), *lo);
}

// Outputs whose window can contain input i: o in [first, last], clipped to [0, out).
__device__ __forceinline__ void dv_pool_covering(DvPoolDim d, idx_t i, idx_t* first, idx_t* last) {
    idx_t a = i + d.p - d.k + 1;  // o*s >= a
    *first = a <= 0 ? 0 : (a + d.s - 1) / d.s;
    *last = min((i + d.p) / d.s, d.out - 1);
}

extern "C" __global__ void max_pool2d_fwd_f32(const float* x, float* y, unsigned* argmax,
                                              long long n, long long c, long long h, long long w,
                                              long long oh, long long ow, long long kh, long long kw,
                                              long long sh, long long sw, long long ph, long long pw) {
    DvPoolDim dy = {h, oh, kh, sh, ph}, dx = {w, ow, kw, sw, pw};
    idx_t total = n * oh * ow * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ox = (i / c) % ow, oy = (i / (c * ow)) % oh, img = i / (c * ow * oh);
        idx_t y0, y1, x0, x1, unused;
        dv_pool_window(dy, oy, &y0, &y1, &unused);
        dv_pool_window(dx, ox, &x0, &x1, &unused);
        float best = -INFINITY;
        idx_t arg = y0 * w + x0;
        for (idx_t iy = y0; iy < y1; ++iy)
            for (idx_t ix = x0; ix < x1; ++ix) {
                float v = x[((img * h + iy) * w + ix) * c + ch];
                if (v > best || isnan(v)) { best = v; arg = iy * w + ix; }
            }
        y[i] = best;
        argmax[i] = (unsigned)arg;
    }
}

// gx: [n, h, w, c]; every element written (zero where no window picked it).
extern "C" __global__ void max_pool2d_bwd_f32(const float* gy, const unsigned* argmax, float* gx,
                                              long long n, long long c, long long h, long long w,
                                              long long oh, long long ow, long long kh, long long kw,
                                              long long sh, long long sw, long long ph, long long pw) {
    DvPoolDim dy = {h, oh, kh, sh, ph}, dx = {w, ow, kw, sw, pw};
    idx_t total = n * h * w * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ix = (i / c) % w, iy = (i / (c * w)) % h, img = i / (c * w * h);
        idx_t oy0, oy1, ox0, ox1;
        dv_pool_covering(dy, iy, &oy0, &oy1);
        dv_pool_covering(dx, ix, &ox0, &ox1);
        unsigned me = (unsigned)(iy * w + ix);
        float acc = 0.0f;
        for (idx_t oy = oy0; oy <= oy1; ++oy)
            for (idx_t ox = ox0; ox <= ox1; ++ox) {
                idx_t o = ((img * oh + oy) * ow + ox) * c + ch;
                if (argmax[o] == me) acc += gy[o];
            }
        gx[i] = acc;
    }
}

// Divisor of output (oy, ox); 0 for an empty window (only past the input under ceil_mode).
__device__ __forceinline__ idx_t dv_avg_divisor(DvPoolDim dy, DvPoolDim dx, idx_t oy, idx_t ox,
                                                int count_include_pad, idx_t* y0, idx_t* y1, idx_t* x0, idx_t* x1) {
    idx_t py, px;
    dv_pool_window(dy, oy, y0, y1, &py);
    dv_pool_window(dx, ox, x0, x1, &px);
    if (*y0 >= *y1 || *x0 >= *x1) return 0;
    return count_include_pad ? py * px : (*y1 - *y0) * (*x1 - *x0);
}

extern "C" __global__ void avg_pool2d_fwd_f32(const float* x, float* y, long long n, long long c,
                                              long long h, long long w, long long oh, long long ow,
                                              long long kh, long long kw, long long sh, long long sw,
                                              long long ph, long long pw, int count_include_pad) {
    DvPoolDim dy = {h, oh, kh, sh, ph}, dx = {w, ow, kw, sw, pw};
    idx_t total = n * oh * ow * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ox = (i / c) % ow, oy = (i / (c * ow)) % oh, img = i / (c * ow * oh);
        idx_t y0, y1, x0, x1;
        idx_t div = dv_avg_divisor(dy, dx, oy, ox, count_include_pad, &y0, &y1, &x0, &x1);
        float s = 0.0f;  // row sums, then their sum: the CPU reference's order
        for (idx_t iy = y0; iy < y1; ++iy) {
            float r = 0.0f;
            for (idx_t ix = x0; ix < x1; ++ix) r += x[((img * h + iy) * w + ix) * c + ch];
            s += r;
        }
        y[i] = div == 0 ? 0.0f : s / (float)div;
    }
}

extern "C" __global__ void avg_pool2d_bwd_f32(const float* gy, float* gx, long long n, long long c,
                                              long long h, long long w, long long oh, long long ow,
                                              long long kh, long long kw, long long sh, long long sw,
                                              long long ph, long long pw, int count_include_pad) {
    DvPoolDim dy = {h, oh, kh, sh, ph}, dx = {w, ow, kw, sw, pw};
    idx_t total = n * h * w * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ix = (i / c) % w, iy = (i / (c * w)) % h, img = i / (c * w * h);
        idx_t oy0, oy1, ox0, ox1;
        dv_pool_covering(dy, iy, &oy0, &oy1);
        dv_pool_covering(dx, ix, &ox0, &ox1);
        float acc = 0.0f;
        for (idx_t oy = oy0; oy <= oy1; ++oy)
            for (idx_t ox = ox0; ox <= ox1; ++ox) {
                idx_t y0, y1, x0, x1;
                idx_t div = dv_avg_divisor(dy, dx, oy, ox, count_include_pad, &y0, &y1, &x0, &x1);
                if (div != 0) acc += gy[((img * oh + oy) * ow + ox) * c + ch] / (float)div;
            }
        gx[i] = acc;
    }
}

__device__ __forceinline__ idx_t dv_adaptive_lo(idx_t o, idx_t out, idx_t in) { return o * in / out; }
__device__ __forceinline__ idx_t dv_adaptive_hi(idx_t o, idx_t out, idx_t in) { return ((o + 1) * in + out - 1) / out; }

extern "C" __global__ void adaptive_avg_pool2d_fwd_f32(const float* x, float* y, long long n, long long c,
                                                       long long h, long long w, long long oh, long long ow) {
    idx_t total = n * oh * ow * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ox = (i / c) % ow, oy = (i / (c * ow)) % oh, img = i / (c * ow * oh);
        idx_t y0 = dv_adaptive_lo(oy, oh, h), y1 = dv_adaptive_hi(oy, oh, h);
        idx_t x0 = dv_adaptive_lo(ox, ow, w), x1 = dv_adaptive_hi(ox, ow, w);
        float s = 0.0f;
        for (idx_t iy = y0; iy < y1; ++iy) {
            float r = 0.0f;
            for (idx_t ix = x0; ix < x1; ++ix) r += x[((img * h + iy) * w + ix) * c + ch];
            s += r;
        }
        y[i] = s / (float)((y1 - y0) * (x1 - x0));
    }
}

extern "C" __global__ void adaptive_avg_pool2d_bwd_f32(const float* gy, float* gx, long long n, long long c,
                                                       long long h, long long w, long long oh, long long ow) {
    idx_t total = n * h * w * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ix = (i / c) % w, iy = (i / (c * w)) % h, img = i / (c * w * h);
        // candidate outputs (one wider each side than needed), each checked for containment
        idx_t oy0 = max(iy * oh / h - 1, (idx_t)0), oy1 = min(((iy + 1) * oh + h - 1) / h + 1, oh);
        idx_t ox0 = max(ix * ow / w - 1, (idx_t)0), ox1 = min(((ix + 1) * ow + w - 1) / w + 1, ow);
        float acc = 0.0f;
        for (idx_t oy = oy0; oy < oy1; ++oy) {
            idx_t y0 = dv_adaptive_lo(oy, oh, h), y1 = dv_adaptive_hi(oy, oh, h);
            if (iy < y0 || iy >= y1) continue;
            for (idx_t ox = ox0; ox < ox1; ++ox) {
                idx_t x0 = dv_adaptive_lo(ox, ow, w), x1 = dv_adaptive_hi(ox, ow, w);
                if (ix < x0 || ix >= x1) continue;
                acc += gy[((img * oh + oy) * ow + ox) * c + ch] / (float)((y1 - y0) * (x1 - x0));
            }
        }
        gx[i] = acc;
    }
}

DV_REGISTER_KERNELS(max_pool2d_fwd_f32, max_pool2d_bwd_f32, avg_pool2d_fwd_f32, avg_pool2d_bwd_f32,
                    adaptive_avg_pool2d_fwd_f32, adaptive_avg_pool2d_bwd_f32)
