// Heat-map rendering on the device: a batch of maps [n, h, w] (already upsampled to the picture
// size by image.cu's resize_bilinear_fwd_f32, NHWC with c = 1) becomes u8 RGB pictures
// [n, h, w, 3], so only the finished bytes cross to the host. The arithmetic reproduces
// src/imageio/colormap.rs (normalize_map, colorize, overlay) operation for operation: f64 where
// the host uses f64, no contracted multiply-adds (explicit _rn intrinsics), Rust's rounding.
//
// Names ({op}_{variant}_f32, see common.cuh):
//   map_minmax_fwd   range[b] = (min, max) over the finite values of item b (+inf, -inf when it
//                    has none); deterministic: one block per item, a fixed shared-memory tree
//   map_clip_fwd     range[b].hi = the q-quantile of item b's finite values by a CLIP_BINS-bin
//                    histogram over range[b] (src/imageio/colormap.rs `clip_threshold`), when it
//                    falls strictly inside the range; counts by int atomics (exact, any order)
//   heatmap_fwd      y[b, p, 0..3] = colour of the normalised x[b, p], blended over base[b, p]
//                    when base is not null
#include "common.cuh"

#ifdef DV_EMU
// The emulator's host compiler contracts nothing without FMA hardware flags; plain operators.
__device__ __forceinline__ double dv_dmul_rn(double a, double b) { return a * b; }
__device__ __forceinline__ double dv_dadd_rn(double a, double b) { return a + b; }
#else
__device__ __forceinline__ double dv_dmul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double dv_dadd_rn(double a, double b) { return __dadd_rn(a, b); }
#endif

// Colormap codes, as src/backend/cuda/render.rs `cmap_code` passes them.
enum DvCmap { DV_CMAP_TURBO = 0, DV_CMAP_INFERNO = 1, DV_CMAP_GRAY = 2 };

// map_minmax: block b reduces item b. Each thread takes the min / max of a fixed strided subset,
// then a shared-memory tree halves MM_THREADS partials (min and max are exact: any order gives
// the same bits, the fixed tree keeps it obviously so).
#define MM_THREADS 256  // 8 warps; a power of two for the tree
extern "C" __global__ void map_minmax_fwd_f32(const float* x, float* range, long long batch,
                                              long long per_item) {
    __shared__ float smem_lo[MM_THREADS];
    __shared__ float smem_hi[MM_THREADS];
    for (idx_t b = blockIdx.x; b < batch; b += gridDim.x) {  // uniform per block
        const float* xb = x + b * per_item;
        float lo = INFINITY, hi = -INFINITY;
        for (idx_t j = threadIdx.x; j < per_item; j += MM_THREADS) {
            float v = xb[j];
            if (isfinite(v)) {
                lo = fminf(lo, v);
                hi = fmaxf(hi, v);
            }
        }
        smem_lo[threadIdx.x] = lo;
        smem_hi[threadIdx.x] = hi;
        __syncthreads();
        for (int s = MM_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                smem_lo[threadIdx.x] = fminf(smem_lo[threadIdx.x], smem_lo[threadIdx.x + s]);
                smem_hi[threadIdx.x] = fmaxf(smem_hi[threadIdx.x], smem_hi[threadIdx.x + s]);
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            range[2 * b] = smem_lo[0];
            range[2 * b + 1] = smem_hi[0];
        }
        __syncthreads();  // thread 0 has read the partials before the next item overwrites them
    }
}

// map_clip: block b takes item b (after map_minmax filled range). A CLIP_BINS-bin histogram of
// the finite values over [lo, hi] in shared memory (int atomics: exact counts in any order),
// then CLIP_THREADS partial sums of CLIP_BINS / CLIP_THREADS bins each, and thread 0 walks the
// partials, then the bins of the chunk, to the first bin whose cumulative count reaches
// ceil(q * count). Its upper edge (f64, rounded to f32) becomes the item's hi when it lies
// strictly between lo and hi. The same arithmetic as colormap.rs `clip_threshold`, in the same
// order (no contraction: explicit _rn helpers).
#define CLIP_BINS 4096
#define CLIP_THREADS 256  // CLIP_BINS / CLIP_THREADS bins per partial
extern "C" __global__ void map_clip_fwd_f32(const float* x, float* range, long long batch,
                                            long long per_item, float q) {
    __shared__ unsigned int smem_hist[CLIP_BINS];
    __shared__ unsigned long long smem_part[CLIP_THREADS];
    for (idx_t b = blockIdx.x; b < batch; b += gridDim.x) {  // uniform per block
        const float* xb = x + b * per_item;
        const double lo = (double)range[2 * b], hi = (double)range[2 * b + 1];
        const double span = hi - lo;  // -inf when the item has no finite value
        if (!(span > 0.0)) continue;  // uniform per block: nothing to clip
        for (int i = threadIdx.x; i < CLIP_BINS; i += CLIP_THREADS) smem_hist[i] = 0u;
        __syncthreads();
        for (idx_t j = threadIdx.x; j < per_item; j += CLIP_THREADS) {
            float v = xb[j];
            if (isfinite(v)) {
                double t = dv_dmul_rn(((double)v - lo) / span, (double)CLIP_BINS);
                int bin = (int)t;  // t in [0, CLIP_BINS]: truncation, as Rust's `as usize`
                bin = bin < CLIP_BINS - 1 ? bin : CLIP_BINS - 1;
                atomicAdd(&smem_hist[bin], 1u);
            }
        }
        __syncthreads();
        {
            const int per = CLIP_BINS / CLIP_THREADS;
            unsigned long long s = 0;
            for (int i = 0; i < per; ++i) s += smem_hist[threadIdx.x * per + i];
            smem_part[threadIdx.x] = s;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            const int per = CLIP_BINS / CLIP_THREADS;
            unsigned long long count = 0;
            // serial walks: not unrolled (unrolled, they hold every partial in a register)
#pragma unroll 1
            for (int i = 0; i < CLIP_THREADS; ++i) count += smem_part[i];
            double kd = ceil(dv_dmul_rn((double)q, (double)count));
            kd = fmin(fmax(kd, 1.0), (double)count);
            unsigned long long k = (unsigned long long)kd;
            unsigned long long acc = 0;
            int c = CLIP_THREADS - 1;
#pragma unroll 1
            for (int i = 0; i < CLIP_THREADS; ++i) {
                if (acc + smem_part[i] >= k) {
                    c = i;
                    break;
                }
                acc += smem_part[i];
            }
            int bin = c * per + per - 1;
#pragma unroll 1
            for (int i = c * per; i < (c + 1) * per; ++i) {
                acc += smem_hist[i];
                if (acc >= k) {
                    bin = i;
                    break;
                }
            }
            if (bin < CLIP_BINS - 1) {  // the last bin's edge is hi: nothing to clip
                float edge = (float)dv_dadd_rn(lo, dv_dmul_rn(span, (double)(bin + 1) / (double)CLIP_BINS));
                if ((double)edge > lo && (double)edge < hi) range[2 * b + 1] = edge;
            }
        }
        __syncthreads();  // thread 0 has read the histogram before the next item clears it
    }
}

// Tables in constant memory (indexed by a runtime value: a local array would take a stack frame).
__constant__ double dv_turbo_coef[3][6] = {
    {0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943},
    {0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604},
    {0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973},
};
#define INFERNO_KNOTS 33
__constant__ float dv_inferno_knots[INFERNO_KNOTS][3] = {
    {0.0015f, 0.0005f, 0.0139f}, {0.0139f, 0.0112f, 0.0716f}, {0.0420f, 0.0280f, 0.1406f},
    {0.0815f, 0.0432f, 0.2144f}, {0.1285f, 0.0473f, 0.2896f}, {0.1823f, 0.0405f, 0.3539f},
    {0.2370f, 0.0366f, 0.3956f}, {0.2894f, 0.0453f, 0.4182f}, {0.3399f, 0.0618f, 0.4292f},
    {0.3897f, 0.0803f, 0.4331f}, {0.4393f, 0.0986f, 0.4317f}, {0.4889f, 0.1164f, 0.4259f},
    {0.5386f, 0.1339f, 0.4157f}, {0.5882f, 0.1516f, 0.4011f}, {0.6375f, 0.1704f, 0.3822f},
    {0.6858f, 0.1910f, 0.3591f}, {0.7328f, 0.2143f, 0.3321f}, {0.7776f, 0.2414f, 0.3016f},
    {0.8195f, 0.2728f, 0.2685f}, {0.8578f, 0.3090f, 0.2333f}, {0.8918f, 0.3500f, 0.1965f},
    {0.9210f, 0.3954f, 0.1584f}, {0.9451f, 0.4448f, 0.1188f}, {0.9640f, 0.4974f, 0.0776f},
    {0.9774f, 0.5526f, 0.0380f}, {0.9855f, 0.6100f, 0.0245f}, {0.9879f, 0.6692f, 0.0596f},
    {0.9847f, 0.7296f, 0.1222f}, {0.9759f, 0.7909f, 0.1973f}, {0.9623f, 0.8522f, 0.2867f},
    {0.9486f, 0.9109f, 0.3962f}, {0.9518f, 0.9608f, 0.5247f}, {0.9884f, 0.9984f, 0.6449f},
};

// Turbo: Google's degree-5 polynomial per channel, Horner in f64 from the highest coefficient
// (colormap.rs `turbo`), rounded to f32.
__device__ __forceinline__ float dv_turbo(double x, int k) {
    double acc = 0.0;
    for (int i = 5; i >= 0; --i) acc = dv_dadd_rn(dv_dmul_rn(acc, x), dv_turbo_coef[k][i]);
    return (float)acc;
}

// Inferno: 33 knots of matplotlib's table, linear between them (colormap.rs `inferno`).
__device__ __forceinline__ float dv_inferno(float x, int k) {
    float t = __fmul_rn(x, (float)(INFERNO_KNOTS - 1));
    int i = (int)t;  // t in [0, 32]: truncation, as Rust's `as usize`
    i = i < INFERNO_KNOTS - 2 ? i : INFERNO_KNOTS - 2;
    float f = __fadd_rn(t, -(float)i);
    float a = dv_inferno_knots[i][k], b = dv_inferno_knots[i + 1][k];
    return __fadd_rn(a, __fmul_rn(f, __fadd_rn(b, -a)));
}

// A colour channel in [0, 1] (NaN reads as 0) to 0..255, rounding half away from zero.
__device__ __forceinline__ float dv_level(float c) {
    c = fminf(fmaxf(c, 0.0f), 1.0f);
    return roundf(__fmul_rn(c, 255.0f));
}

// One thread per pixel: normalise with the item's range (f64, colormap.rs `normalize_map`),
// look up the colour, blend over base ((1 - alpha) * base + alpha * colour, alpha already in
// [0, 1]) when base is not null, and write three bytes.
extern "C" __global__ void heatmap_fwd_f32(const float* x, const float* range,
                                           const unsigned char* base, unsigned char* y,
                                           long long batch, long long hw, int cmap, float alpha) {
    idx_t total = batch * hw;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t b = i / hw;
        double lo = (double)range[2 * b], hi = (double)range[2 * b + 1];
        double span = hi - lo;  // -inf when the item has no finite value
        float v = x[i];
        float u = 0.0f;
        if (span > 0.0 && !isnan(v)) {
            double d = ((double)v - lo) / span;
            u = (float)fmin(fmax(d, 0.0), 1.0);
        }
        for (int k = 0; k < 3; ++k) {
            float c;
            switch (cmap) {
            case DV_CMAP_TURBO: c = dv_turbo((double)u, k); break;
            case DV_CMAP_INFERNO: c = dv_inferno(u, k); break;
            default: c = u; break;
            }
            float level = dv_level(c);
            if (base != nullptr) {
                float p = (float)base[i * 3 + k];
                level = roundf(__fadd_rn(__fmul_rn(1.0f - alpha, p), __fmul_rn(alpha, level)));
                level = fminf(fmaxf(level, 0.0f), 255.0f);
            }
            y[i * 3 + k] = (unsigned char)level;
        }
    }
}

DV_REGISTER_KERNELS(map_minmax_fwd_f32, map_clip_fwd_f32, heatmap_fwd_f32)
