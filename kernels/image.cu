// Image ops on NHWC f32 batches [n, h, w, c] (DeepDream / feature visualisation, heat maps).
//
// Names ({op}_{variant}_f32, see common.cuh):
//   resize_bilinear_fwd   PyTorch's interpolate(mode="bilinear", align_corners=False), no antialias
//   normalize_fwd         y = (x - mean[c]) / std[c]
//   normalize_bwd         y = x * std[c] + mean[c]   (denormalize: the inverse map)
//   roll_fwd              torch.roll by (dy, dx) over h, w: y[i, j] = x[(i - dy) mod h, (j - dx) mod w]
//   flip_fwd              torch.flip over h and / or w: y[i, j] = x[fy ? h-1-i : i, fx ? w-1-j : j]
//   crop_fwd              a window: y[i, j] = x[y0 + i, x0 + j], y [n, oh, ow, c]
//   crop_bwd              its adjoint's write: dst[y0 + i, x0 + j] = src[i, j] (paste a window in place)
//   gather_planes_fwd     whole planes by number p = item * c + channel: y[k] = x[p_k / c, :, :, p_k % c],
//                         y [m, h, w] (one channel: NHWC is NCHW)
//   warp_fwd              per-item affine warp, PyTorch's grid_sample(affine_grid(theta), bilinear,
//                         zeros, align_corners=False): a gather of four taps per output
//   warp_bwd              its exact adjoint as a gather over the inverse map: each input pixel
//                         sums, in output row-major order, the weights that output pixels near
//                         its preimage gave it (no atomics: the same bits on every run, and the
//                         CPU engine's scatter's bits)
//   blur_gaussian         one pass of a separable Gaussian blur along w or h, radius r =
//                         ceil(3 sigma), weights exp(-t^2 / 2 sigma^2) normalised to sum 1,
//                         reflect padding (torchvision's gaussian_blur); run twice (w, then h)
#include "common.cuh"

// PyTorch's area_pixel_compute_source_index for align_corners=False, clamped at 0, and the
// neighbour index and weight along one dimension.
__device__ __forceinline__ void dv_bilinear_src(idx_t o, idx_t in, idx_t out, idx_t* i0, idx_t* i1, float* l1) {
    float scale = (float)in / (float)out;
    float src = fmaxf(scale * ((float)o + 0.5f) - 0.5f, 0.0f);
    idx_t i = (idx_t)src;
    *i0 = i < in - 1 ? i : in - 1;
    *i1 = *i0 + (*i0 < in - 1 ? 1 : 0);
    *l1 = fminf(src - (float)*i0, 1.0f);
}

extern "C" __global__ void resize_bilinear_fwd_f32(const float* x, float* y, long long n, long long c,
                                                   long long h, long long w, long long oh, long long ow) {
    idx_t total = n * oh * ow * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ox = (i / c) % ow, oy = (i / (c * ow)) % oh, img = i / (c * ow * oh);
        idx_t y0, y1, x0, x1;
        float ly, lx;
        dv_bilinear_src(oy, h, oh, &y0, &y1, &ly);
        dv_bilinear_src(ox, w, ow, &x0, &x1, &lx);
        const float* p = x + img * h * w * c + ch;
        float top = (1.0f - lx) * p[(y0 * w + x0) * c] + lx * p[(y0 * w + x1) * c];
        float bot = (1.0f - lx) * p[(y1 * w + x0) * c] + lx * p[(y1 * w + x1) * c];
        y[i] = (1.0f - ly) * top + ly * bot;
    }
}

extern "C" __global__ void normalize_fwd_f32(const float* x, const float* mean, const float* std_,
                                             float* y, long long n, long long c) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = (x[i] - mean[i % c]) / std_[i % c];
}

extern "C" __global__ void normalize_bwd_f32(const float* x, const float* mean, const float* std_,
                                             float* y, long long n, long long c) {
    for (idx_t i = dv_tid(); i < n; i += dv_stride()) y[i] = x[i] * std_[i % c] + mean[i % c];
}

extern "C" __global__ void roll_fwd_f32(const float* x, float* y, long long n, long long c, long long h,
                                        long long w, long long dy, long long dx) {
    idx_t total = n * h * w * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ix = (i / c) % w, iy = (i / (c * w)) % h, img = i / (c * w * h);
        idx_t sy = ((iy - dy) % h + h) % h, sx = ((ix - dx) % w + w) % w;
        y[i] = x[((img * h + sy) * w + sx) * c + ch];
    }
}

extern "C" __global__ void flip_fwd_f32(const float* x, float* y, long long n, long long c, long long h,
                                        long long w, int fy, int fx) {
    idx_t total = n * h * w * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ix = (i / c) % w, iy = (i / (c * w)) % h, img = i / (c * w * h);
        idx_t sy = fy ? h - 1 - iy : iy, sx = fx ? w - 1 - ix : ix;
        y[i] = x[((img * h + sy) * w + sx) * c + ch];
    }
}

extern "C" __global__ void crop_fwd_f32(const float* x, float* y, long long n, long long c, long long h,
                                        long long w, long long y0, long long x0, long long oh, long long ow) {
    idx_t total = n * oh * ow * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ix = (i / c) % ow, iy = (i / (c * ow)) % oh, img = i / (c * ow * oh);
        y[i] = x[((img * h + y0 + iy) * w + x0 + ix) * c + ch];
    }
}

extern "C" __global__ void crop_bwd_f32(const float* src, float* dst, long long n, long long c, long long h,
                                        long long w, long long y0, long long x0, long long oh, long long ow) {
    idx_t total = n * oh * ow * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ix = (i / c) % ow, iy = (i / (c * ow)) % oh, img = i / (c * ow * oh);
        dst[((img * h + y0 + iy) * w + x0 + ix) * c + ch] = src[i];
    }
}

// Reflect padding without repeating the edge (PyTorch's "reflect": -1 -> 1, len -> len - 2).
// torch requires radius < len; beyond that the reflection repeats with period 2 (len - 1), so
// every index lands inside [0, len).
__device__ __forceinline__ idx_t dv_reflect(idx_t i, idx_t len) {
    if (len == 1) return 0;
    idx_t period = 2 * (len - 1);
    i = ((i % period) + period) % period;
    return i < len ? i : period - i;
}

// y = x blurred along one axis: w when vertical == 0, h otherwise. The block first writes the
// 2r+1 unnormalised weights to shared memory (dynamic: r depends on sigma) and every thread
// sums them in the same order, then a grid-stride loop over the output elements.
extern "C" __global__ void blur_gaussian_f32(const float* x, float* y, long long n, long long c, long long h,
                                             long long w, float sigma, long long radius, int vertical) {
    DV_DYNAMIC_SHARED(float, smem_w);
    idx_t taps = 2 * radius + 1;
    for (idx_t t = threadIdx.x; t < taps; t += blockDim.x) {
        float u = (float)(t - radius) / sigma;
        smem_w[t] = expf(-0.5f * u * u);
    }
    __syncthreads();
    float sum = 0.0f;
    for (idx_t t = 0; t < taps; ++t) sum += smem_w[t];
    float inv = 1.0f / sum;

    idx_t total = n * h * w * c;
    idx_t len = vertical ? h : w, step = vertical ? w * c : c;  // the blurred axis and its stride
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t pos = vertical ? (i / (c * w)) % h : (i / c) % w;
        const float* line = x + i - pos * step;  // element 0 of this line
        float acc = 0.0f;
        for (idx_t t = 0; t < taps; ++t) acc += smem_w[t] * line[dv_reflect(pos + t - radius, len) * step];
        y[i] = acc * inv;
    }
}

// ---- warp ----------------------------------------------------------------------------------
// One item's map in pixel units, src/backend/mod.rs `warp_map`: output pixel (ox, oy) samples the
// input at (cx + a0 u + a1 v + a2, cy + a3 u + a4 v + a5), (u, v) its offset from the centre
// (cx, cy) = ((w - 1) / 2, (h - 1) / 2). Every f32 operation is written out (_rn: no contraction)
// in the CPU engine's order (src/backend/cpu/plumbing.rs `warp_point`), so both give the same bits.
struct DvWarpMap {
    float a0, a1, a2, a3, a4, a5;
};

__device__ __forceinline__ DvWarpMap dv_warp_map(const float* t, idx_t h, idx_t w) {
    const float hf = (float)h, wf = (float)w;
    DvWarpMap m;
    m.a0 = t[0];
    m.a1 = __fmul_rn(t[1], wf) / hf;
    m.a2 = __fmul_rn(__fmul_rn(t[2], wf), 0.5f);
    m.a3 = __fmul_rn(t[3], hf) / wf;
    m.a4 = t[4];
    m.a5 = __fmul_rn(__fmul_rn(t[5], hf), 0.5f);
    return m;
}

// The sample point of output pixel (ox, oy): false when it is not inside (-1, w) x (-1, h) (a
// non-finite one never is), else its top-left tap (x0, y0) and the weights (1 - fx, fx), (1 - fy,
// fy). Taps (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1): PyTorch's nw, ne, sw, se.
__device__ __forceinline__ bool dv_warp_point(const DvWarpMap& m, idx_t ox, idx_t oy, idx_t h, idx_t w, idx_t* x0,
                                              idx_t* y0, float* wx0, float* wx1, float* wy0, float* wy1) {
    const float cx = __fmul_rn((float)(w - 1), 0.5f), cy = __fmul_rn((float)(h - 1), 0.5f);
    const float u = __fadd_rn((float)ox, -cx), v = __fadd_rn((float)oy, -cy);
    const float ix = __fadd_rn(cx, __fadd_rn(__fadd_rn(__fmul_rn(m.a0, u), __fmul_rn(m.a1, v)), m.a2));
    const float iy = __fadd_rn(cy, __fadd_rn(__fadd_rn(__fmul_rn(m.a3, u), __fmul_rn(m.a4, v)), m.a5));
    if (!(ix > -1.0f && ix < (float)w && iy > -1.0f && iy < (float)h)) return false;
    const float fx = floorf(ix), fy = floorf(iy);
    *x0 = (idx_t)fx;
    *y0 = (idx_t)fy;
    *wx0 = __fadd_rn(__fadd_rn(fx, 1.0f), -ix);
    *wx1 = __fadd_rn(ix, -fx);
    *wy0 = __fadd_rn(__fadd_rn(fy, 1.0f), -iy);
    *wy1 = __fadd_rn(iy, -fy);
    return true;
}

// acc += wt * plane[yy, xx] when (xx, yy) is inside the plane (NHWC: c apart).
__device__ __forceinline__ void dv_warp_tap(float& acc, const float* plane, idx_t xx, idx_t yy, float wt, idx_t h,
                                            idx_t w, idx_t c) {
    if (xx >= 0 && yy >= 0 && xx < w && yy < h) acc = __fadd_rn(acc, __fmul_rn(wt, plane[(yy * w + xx) * c]));
}

extern "C" __global__ void warp_fwd_f32(const float* x, const float* theta, float* y, long long n, long long c,
                                        long long h, long long w) {
    idx_t total = n * h * w * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, ox = (i / c) % w, oy = (i / (c * w)) % h, img = i / (c * w * h);
        const DvWarpMap m = dv_warp_map(theta + img * 6, h, w);
        const float* plane = x + img * h * w * c + ch;
        float acc = 0.0f;
        idx_t x0, y0;
        float wx0, wx1, wy0, wy1;
        if (dv_warp_point(m, ox, oy, h, w, &x0, &y0, &wx0, &wx1, &wy0, &wy1)) {
            dv_warp_tap(acc, plane, x0, y0, __fmul_rn(wx0, wy0), h, w, c);
            dv_warp_tap(acc, plane, x0 + 1, y0, __fmul_rn(wx1, wy0), h, w, c);
            dv_warp_tap(acc, plane, x0, y0 + 1, __fmul_rn(wx0, wy1), h, w, c);
            dv_warp_tap(acc, plane, x0 + 1, y0 + 1, __fmul_rn(wx1, wy1), h, w, c);
        }
        y[i] = acc;
    }
}

// Rounding slack of the inverse map's window, in output pixels: the f32 sample points differ from
// the exact map by a few ulps of |A| w, which the inverse magnifies by at most cond(A); 2 pixels
// plus 1e-6 cond(A) max(h, w) (16x f32's epsilon) covers it, so the window holds every output
// pixel whose f32 sample point falls within 1 of the input pixel.
#define WARP_SLACK_PX 2.0
#define WARP_SLACK_REL 1e-6

// gx[ix, iy] = sum over output pixels o of (the weight o's sample gave (ix, iy)) * gy[o]: the
// output pixels whose sample point lies within 1 of (ix, iy) form a parallelogram, the unit square
// mapped back by A^-1 (f64); its bounding box, widened by the slack and clipped to the picture
// (the whole picture when A is singular or not finite), is searched in row-major order, each
// candidate's sample recomputed exactly as warp_fwd does.
extern "C" __global__ void warp_bwd_f32(const float* gy, const float* theta, float* gx, long long n, long long c,
                                        long long h, long long w) {
    idx_t total = n * h * w * c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ch = i % c, px = (i / c) % w, py = (i / (c * w)) % h, img = i / (c * w * h);
        const DvWarpMap m = dv_warp_map(theta + img * 6, h, w);
        const double cx = 0.5 * (double)(w - 1), cy = 0.5 * (double)(h - 1);
        const double det = (double)m.a0 * m.a4 - (double)m.a1 * m.a3, adet = fabs(det);
        const double sx = (double)px - cx - m.a2, sy = (double)py - cy - m.a5;  // offset of (px, py) minus the shift
        const double uc = (m.a4 * sx - m.a1 * sy) / det, vc = (m.a0 * sy - m.a3 * sx) / det;
        const double cond = ((double)m.a0 * m.a0 + (double)m.a1 * m.a1 + (double)m.a3 * m.a3 + (double)m.a4 * m.a4) / adet;
        const double slack = WARP_SLACK_PX + WARP_SLACK_REL * cond * (double)(h > w ? h : w);
        const double du = (fabs((double)m.a4) + fabs((double)m.a1)) / adet + slack;
        const double dv = (fabs((double)m.a3) + fabs((double)m.a0)) / adet + slack;
        // clipped to the picture; a NaN bound (singular or non-finite map) gives the whole picture
        const double xlo = floor(cx + uc - du), xhi = ceil(cx + uc + du), ylo = floor(cy + vc - dv), yhi = ceil(cy + vc + dv);
        const idx_t ox0 = xlo > 0.0 ? (idx_t)fmin(xlo, (double)w) : 0, ox1 = xhi < (double)(w - 1) ? (idx_t)fmax(xhi, -1.0) : w - 1;
        const idx_t oy0 = ylo > 0.0 ? (idx_t)fmin(ylo, (double)h) : 0, oy1 = yhi < (double)(h - 1) ? (idx_t)fmax(yhi, -1.0) : h - 1;
        const float* plane = gy + img * h * w * c + ch;
        float acc = 0.0f;
        for (idx_t oy = oy0; oy <= oy1; ++oy) {
            for (idx_t ox = ox0; ox <= ox1; ++ox) {
                idx_t x0, y0;
                float wx0, wx1, wy0, wy1;
                if (!dv_warp_point(m, ox, oy, h, w, &x0, &y0, &wx0, &wx1, &wy0, &wy1)) continue;
                if ((x0 != px && x0 + 1 != px) || (y0 != py && y0 + 1 != py)) continue;
                const float wt = __fmul_rn(x0 == px ? wx0 : wx1, y0 == py ? wy0 : wy1);
                acc = __fadd_rn(acc, __fmul_rn(wt, plane[(oy * w + ox) * c]));
            }
        }
        gx[i] = acc;
    }
}

extern "C" __global__ void gather_planes_fwd_f32(const float* x, const long long* planes, float* y, long long m,
                                                 long long c, long long hw) {
    for (idx_t i = dv_tid(); i < m * hw; i += dv_stride()) {
        const idx_t k = i / hw, q = i - k * hw, item = planes[k] / c, ch = planes[k] - item * c;
        y[i] = x[(item * hw + q) * c + ch];
    }
}

DV_REGISTER_KERNELS(gather_planes_fwd_f32, resize_bilinear_fwd_f32, normalize_fwd_f32, normalize_bwd_f32, roll_fwd_f32,
                    flip_fwd_f32, crop_fwd_f32, crop_bwd_f32, blur_gaussian_f32, warp_fwd_f32, warp_bwd_f32)
