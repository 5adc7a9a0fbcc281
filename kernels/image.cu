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

DV_REGISTER_KERNELS(resize_bilinear_fwd_f32, normalize_fwd_f32, normalize_bwd_f32, roll_fwd_f32,
                    flip_fwd_f32, crop_fwd_f32, crop_bwd_f32, blur_gaussian_f32)
