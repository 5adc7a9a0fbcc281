// Convolution on NHWC f32 activations, PyTorch semantics (groups, dilation, asymmetric padding:
// only top / left padding enter the index maths, bottom / right only the output size).
//
// Weights: the engine keeps conv weights repacked at load time from PyTorch's OIHW
// [cout, cin/groups, kh, kw] to KKIO [kh, kw, cin/groups, cout] (conv2d_repack_weight), so that
// the implicit GEMM's B operand is a row-major [K = kh*kw*cg, cout] matrix with cout contiguous;
// gradients come back in KKIO and conv2d_unpack_weight turns them into OIHW.
//
// Versions (the engine picks in src/backend/cuda/conv.rs):
//   conv2d_fwd          implicit GEMM, M = n*oh*ow pixels, N = cout/groups, K = kh*kw*cg, tiled in
//                       shared memory (TILE_M x TILE_N per block, TILE_K per step, 4x4 per thread),
//                       grid.z = group; fused epilogue: + bias[cout] + residual (NHWC, the
//                       output's shape), then an activation (DvAct), stored into channels
//                       [y_off, y_off + cout) of rows y_stride apart (a concat costs nothing).
//   conv2d_bwd_data     (v1) the same GEMM over M = n*h*w input pixels, N = cg, K = kh*kw*og,
//                       gathering gy at (ih + pad - k*dil) / stride where that divides exactly:
//                       with stride s, (s_h*s_w - 1) of every s_h*s_w taps multiply zeros.
//   conv2d_bwd_data_phased  (v2) stride > 1, no dilation: the input splits into s_h*s_w phases
//                       (ih mod s_h, iw mod s_w); a phase receives gradient only through the taps
//                       k = (phase + pad) mod s + j*s, so each is a dense GEMM over its own taps
//                       (grid.z = groups * phases): no zero taps.
//   conv2d_bwd_data_direct  (v3) few input channels per group (cg <= DIRECT_CG: a first layer),
//                       where a TILE_N-channel tile would be almost all padding: one thread per
//                       input pixel gathers its cg gradients over the taps that reach it.
//   conv2d_bwd_filter   the same GEMM over M = kh*kw*cg, N = og, K = n*oh*ow; writes KKIO.
//   dwconv2d_fwd / dwconv2d_bwd_data / dwconv2d_bwd_filter
//                       direct loops for one input channel per group (depthwise, channel
//                       multiplier og = cout / cin), same KKIO weights ([kh, kw, 1, cout]);
//                       dwconv2d_fwd has conv2d_fwd's fused epilogue.
//   conv2d_repack_weight / conv2d_unpack_weight   OIHW <-> KKIO.
// The bias gradient is reduce.cu's channel_sum over gy.
#include "common.cuh"

#define TILE_M 64        // output pixels per block: 64x64 fp32 accumulators = 16 per thread
#define TILE_N 64        // output channels per block (most layers have cout >= 64)
#define TILE_K 16        // reduction slice staged per step: 2 x 4 KiB of shared memory
#define THREADS 256      // 16 x 16 threads, each a 4 x 4 micro-tile strided by 16
#define MICRO 4          // TILE_M / 16 = TILE_N / 16

// Conv geometry, one struct so the three GEMM loaders read the same names.
struct DvConv {
    idx_t n, h, w, c, oh, ow, cout, kh, kw, sh, sw, pt, pl, dh, dw, groups, cg, og;
};

// The tiled product C[m, n] = sum_k A(m, k) B(k, n) over one TILE_M x TILE_N tile; loaders return
// 0 outside the matrices; `store(m, n, v)` is called once for each in-range (m, n).
template <class LoadA, class LoadB, class Store>
__device__ __forceinline__ void dv_gemm_tile(idx_t m_total, idx_t n_total, idx_t k_total,
                                             LoadA load_a, LoadB load_b, Store store) {
    __shared__ float smem_a[TILE_K][TILE_M + 1];  // +1: the k-fastest fill is conflict-free
    __shared__ float smem_b[TILE_K][TILE_N];
    int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    idx_t m0 = (idx_t)blockIdx.x * TILE_M, n0 = (idx_t)blockIdx.y * TILE_N;
    if (m0 >= m_total || n0 >= n_total) return;  // uniform per block: a tile past a (phase's) end
    float acc[MICRO][MICRO];
    for (int i = 0; i < MICRO; ++i)
        for (int j = 0; j < MICRO; ++j) acc[i][j] = 0.0f;

    for (idx_t k0 = 0; k0 < k_total; k0 += TILE_K) {
        for (int e = tid; e < TILE_K * TILE_M; e += THREADS) {
            int kk = e % TILE_K, mm = e / TILE_K;  // k fastest: NHWC channels are contiguous
            idx_t m = m0 + mm, k = k0 + kk;
            smem_a[kk][mm] = (m < m_total && k < k_total) ? load_a(m, k) : 0.0f;
        }
        for (int e = tid; e < TILE_K * TILE_N; e += THREADS) {
            int nn = e % TILE_N, kk = e / TILE_N;  // n fastest: cout is contiguous in KKIO
            idx_t n = n0 + nn, k = k0 + kk;
            smem_b[kk][nn] = (n < n_total && k < k_total) ? load_b(k, n) : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < TILE_K; ++kk) {
            float a[MICRO], b[MICRO];
            for (int i = 0; i < MICRO; ++i) a[i] = smem_a[kk][ty + 16 * i];
            for (int j = 0; j < MICRO; ++j) b[j] = smem_b[kk][tx + 16 * j];
            for (int i = 0; i < MICRO; ++i)
                for (int j = 0; j < MICRO; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < MICRO; ++i)
        for (int j = 0; j < MICRO; ++j) {
            idx_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m < m_total && n < n_total) store(m, n, acc[i][j]);
        }
}

#define DV_CONV_PARAMS                                                                            \
    long long n, long long h, long long w, long long c, long long oh, long long ow, long long cout, \
        long long kh, long long kw, long long sh, long long sw, long long pt, long long pl,       \
        long long dh, long long dw, long long groups
#define DV_CONV_INIT \
    DvConv d = {n, h, w, c, oh, ow, cout, kh, kw, sh, sw, pt, pl, dh, dw, groups, c / groups, cout / groups}

// The fused forward epilogue: output pixel m (of n*oh*ow), channel oc. The residual, when
// present, is NHWC with the output's shape ([n, oh, ow, cout], contiguous); y rows are y_stride
// floats apart and this conv owns channels [y_off, y_off + cout) of each. The residual is read
// before y is written by the same thread, so it may be y itself when y_stride == cout, y_off == 0.
__device__ __forceinline__ void dv_conv_store(float* y, const float* bias, const float* residual, idx_t m,
                                              idx_t oc, idx_t cout, idx_t y_stride, idx_t y_off,
                                              float v, int act) {
    v += bias ? bias[oc] : 0.0f;
    v += residual ? residual[m * cout + oc] : 0.0f;
    y[m * y_stride + y_off + oc] = dv_act(v, act);
}

// x [n, h, w, c], wp KKIO, bias [cout] or null, residual [n, oh, ow, cout] or null, y rows of
// y_stride >= y_off + cout floats. Grid (ceil(M/TILE_M), ceil(og/TILE_N), groups), THREADS
// threads; bounds are checked by dv_gemm_tile's loaders and store.
extern "C" __global__ void conv2d_fwd_f32(const float* x, const float* wp, const float* bias,
                                          const float* residual, float* y, DV_CONV_PARAMS,
                                          long long y_stride, long long y_off, int act) {
    DV_CONV_INIT;
    idx_t g = blockIdx.z;
    auto load_a = [&](idx_t m, idx_t k) -> float {
        idx_t ox = m % d.ow, oy = (m / d.ow) % d.oh, img = m / (d.ow * d.oh);
        idx_t ci = k % d.cg, kx = (k / d.cg) % d.kw, ky = k / (d.cg * d.kw);
        idx_t iy = oy * d.sh - d.pt + ky * d.dh, ix = ox * d.sw - d.pl + kx * d.dw;
        if (iy < 0 || iy >= d.h || ix < 0 || ix >= d.w) return 0.0f;
        return x[((img * d.h + iy) * d.w + ix) * d.c + g * d.cg + ci];
    };
    auto load_b = [&](idx_t k, idx_t o) -> float { return wp[k * d.cout + g * d.og + o]; };
    auto store = [&](idx_t m, idx_t o, float v) {
        dv_conv_store(y, bias, residual, m, g * d.og + o, d.cout, y_stride, y_off, v, act);
    };
    dv_gemm_tile(d.n * d.oh * d.ow, d.og, d.kh * d.kw * d.cg, load_a, load_b, store);
}

// gy [n, oh, ow, cout], wp KKIO, gx [n, h, w, c]. Grid (ceil(n*h*w/TILE_M), ceil(cg/TILE_N), groups).
extern "C" __global__ void conv2d_bwd_data_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    idx_t g = blockIdx.z;
    auto load_a = [&](idx_t m, idx_t k) -> float {
        idx_t ix = m % d.w, iy = (m / d.w) % d.h, img = m / (d.w * d.h);
        idx_t co = k % d.og, kx = (k / d.og) % d.kw, ky = k / (d.og * d.kw);
        idx_t ty = iy + d.pt - ky * d.dh, tx = ix + d.pl - kx * d.dw;
        if (ty < 0 || tx < 0 || ty % d.sh != 0 || tx % d.sw != 0) return 0.0f;
        idx_t oy = ty / d.sh, ox = tx / d.sw;
        if (oy >= d.oh || ox >= d.ow) return 0.0f;
        return gy[((img * d.oh + oy) * d.ow + ox) * d.cout + g * d.og + co];
    };
    auto load_b = [&](idx_t k, idx_t ci) -> float {
        idx_t co = k % d.og, tap = k / d.og;
        return wp[(tap * d.cg + ci) * d.cout + g * d.og + co];
    };
    auto store = [&](idx_t m, idx_t ci, float v) { gx[m * d.c + g * d.cg + ci] = v; };
    dv_gemm_tile(d.n * d.h * d.w, d.cg, d.kh * d.kw * d.og, load_a, load_b, store);
}

// v2. gy, wp, gx as v1. Grid (ceil(n*ceil(h/sh)*ceil(w/sw)/TILE_M), ceil(cg/TILE_N),
// groups*sh*sw); dilation 1. Phase (ry, rx) owns the input pixels iy = ry + sh*qy, ix = rx + sw*qx
// and the taps ky = ky0 + sh*jy, kx = kx0 + sw*jx with ky0 = (ry + pt) mod sh (iy + pt - ky is
// then a multiple of sh); a phase without taps stores zeros.
extern "C" __global__ void conv2d_bwd_data_phased_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    idx_t phases = d.sh * d.sw;
    idx_t g = blockIdx.z / phases, p = blockIdx.z % phases;
    idx_t ry = p / d.sw, rx = p % d.sw;
    idx_t hy = ry < d.h ? (d.h - ry + d.sh - 1) / d.sh : 0, wx = rx < d.w ? (d.w - rx + d.sw - 1) / d.sw : 0;
    idx_t ky0 = (ry + d.pt) % d.sh, kx0 = (rx + d.pl) % d.sw;
    idx_t tky = ky0 < d.kh ? (d.kh - ky0 + d.sh - 1) / d.sh : 0, tkx = kx0 < d.kw ? (d.kw - kx0 + d.sw - 1) / d.sw : 0;
    auto load_a = [&](idx_t m, idx_t k) -> float {
        idx_t qx = m % wx, qy = (m / wx) % hy, img = m / (wx * hy);
        idx_t co = k % d.og, jx = (k / d.og) % tkx, jy = k / (d.og * tkx);
        idx_t ty = ry + d.sh * qy + d.pt - (ky0 + d.sh * jy), tx = rx + d.sw * qx + d.pl - (kx0 + d.sw * jx);
        if (ty < 0 || tx < 0) return 0.0f;
        idx_t oy = ty / d.sh, ox = tx / d.sw;
        if (oy >= d.oh || ox >= d.ow) return 0.0f;
        return gy[((img * d.oh + oy) * d.ow + ox) * d.cout + g * d.og + co];
    };
    auto load_b = [&](idx_t k, idx_t ci) -> float {
        idx_t co = k % d.og, jx = (k / d.og) % tkx, jy = k / (d.og * tkx);
        idx_t tap = (ky0 + d.sh * jy) * d.kw + kx0 + d.sw * jx;
        return wp[(tap * d.cg + ci) * d.cout + g * d.og + co];
    };
    auto store = [&](idx_t m, idx_t ci, float v) {
        idx_t qx = m % wx, qy = (m / wx) % hy, img = m / (wx * hy);
        gx[((img * d.h + ry + d.sh * qy) * d.w + rx + d.sw * qx) * d.c + g * d.cg + ci] = v;
    };
    dv_gemm_tile(d.n * hy * wx, d.cg, tky * tkx * d.og, load_a, load_b, store);
}

// v3. gy, wp, gx as v1; cg <= DIRECT_CG. One thread per (input pixel, group), grid-stride; the
// cg accumulators stay in registers (the channel loops are unrolled over DIRECT_CG).
#define DIRECT_CG 4  // a network's first layer: RGB, or RGBA
extern "C" __global__ void conv2d_bwd_data_direct_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    idx_t total = d.n * d.h * d.w * d.groups;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t g = i % d.groups, pix = i / d.groups;
        idx_t ix = pix % d.w, iy = (pix / d.w) % d.h, img = pix / (d.w * d.h);
        float acc[DIRECT_CG];
#pragma unroll
        for (int ci = 0; ci < DIRECT_CG; ++ci) acc[ci] = 0.0f;
        for (idx_t ky = 0; ky < d.kh; ++ky) {
            idx_t ty = iy + d.pt - ky * d.dh;
            if (ty < 0 || ty % d.sh != 0 || ty / d.sh >= d.oh) continue;
            for (idx_t kx = 0; kx < d.kw; ++kx) {
                idx_t tx = ix + d.pl - kx * d.dw;
                if (tx < 0 || tx % d.sw != 0 || tx / d.sw >= d.ow) continue;
                const float* gr = gy + ((img * d.oh + ty / d.sh) * d.ow + tx / d.sw) * d.cout + g * d.og;
                const float* wr = wp + (ky * d.kw + kx) * d.cg * d.cout + g * d.og;
                for (idx_t co = 0; co < d.og; ++co) {
                    float v = gr[co];
#pragma unroll
                    for (int ci = 0; ci < DIRECT_CG; ++ci)
                        if (ci < d.cg) acc[ci] += v * wr[ci * d.cout + co];
                }
            }
        }
#pragma unroll
        for (int ci = 0; ci < DIRECT_CG; ++ci)
            if (ci < d.cg) gx[pix * d.c + g * d.cg + ci] = acc[ci];
    }
}

// x [n, h, w, c], gy [n, oh, ow, cout], gwp KKIO. Grid (ceil(kh*kw*cg/TILE_M), ceil(og/TILE_N), groups).
extern "C" __global__ void conv2d_bwd_filter_f32(const float* x, const float* gy, float* gwp, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    idx_t g = blockIdx.z;
    auto load_a = [&](idx_t r, idx_t k) -> float {
        idx_t ci = r % d.cg, kx = (r / d.cg) % d.kw, ky = r / (d.cg * d.kw);
        idx_t ox = k % d.ow, oy = (k / d.ow) % d.oh, img = k / (d.ow * d.oh);
        idx_t iy = oy * d.sh - d.pt + ky * d.dh, ix = ox * d.sw - d.pl + kx * d.dw;
        if (iy < 0 || iy >= d.h || ix < 0 || ix >= d.w) return 0.0f;
        return x[((img * d.h + iy) * d.w + ix) * d.c + g * d.cg + ci];
    };
    auto load_b = [&](idx_t k, idx_t o) -> float { return gy[k * d.cout + g * d.og + o]; };
    auto store = [&](idx_t r, idx_t o, float v) { gwp[r * d.cout + g * d.og + o] = v; };
    dv_gemm_tile(d.kh * d.kw * d.cg, d.og, d.n * d.oh * d.ow, load_a, load_b, store);
}

// ---- depthwise: one input channel per group (c == groups), oc = ci * og + multiplier --------

// One thread per output element, grid-stride; arguments and epilogue as conv2d_fwd_f32.
extern "C" __global__ void dwconv2d_fwd_f32(const float* x, const float* wp, const float* bias,
                                            const float* residual, float* y, DV_CONV_PARAMS,
                                            long long y_stride, long long y_off, int act) {
    DV_CONV_INIT;
    idx_t total = d.n * d.oh * d.ow * d.cout;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t oc = i % d.cout, ox = (i / d.cout) % d.ow, oy = (i / (d.cout * d.ow)) % d.oh;
        idx_t img = i / (d.cout * d.ow * d.oh), ci = oc / d.og;
        float acc = 0.0f;
        for (idx_t ky = 0; ky < d.kh; ++ky) {
            idx_t iy = oy * d.sh - d.pt + ky * d.dh;
            if (iy < 0 || iy >= d.h) continue;
            for (idx_t kx = 0; kx < d.kw; ++kx) {
                idx_t ix = ox * d.sw - d.pl + kx * d.dw;
                if (ix < 0 || ix >= d.w) continue;
                acc += x[((img * d.h + iy) * d.w + ix) * d.c + ci] * wp[(ky * d.kw + kx) * d.cout + oc];
            }
        }
        dv_conv_store(y, bias, residual, i / d.cout, oc, d.cout, y_stride, y_off, acc, act);
    }
}

// One thread per input element, gathering every output that read it.
extern "C" __global__ void dwconv2d_bwd_data_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    idx_t total = d.n * d.h * d.w * d.c;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t ci = i % d.c, ix = (i / d.c) % d.w, iy = (i / (d.c * d.w)) % d.h, img = i / (d.c * d.w * d.h);
        float acc = 0.0f;
        for (idx_t ky = 0; ky < d.kh; ++ky) {
            idx_t ty = iy + d.pt - ky * d.dh;
            if (ty < 0 || ty % d.sh != 0 || ty / d.sh >= d.oh) continue;
            for (idx_t kx = 0; kx < d.kw; ++kx) {
                idx_t tx = ix + d.pl - kx * d.dw;
                if (tx < 0 || tx % d.sw != 0 || tx / d.sw >= d.ow) continue;
                const float* g = gy + ((img * d.oh + ty / d.sh) * d.ow + tx / d.sw) * d.cout;
                for (idx_t m = 0; m < d.og; ++m) {
                    idx_t oc = ci * d.og + m;
                    acc += g[oc] * wp[(ky * d.kw + kx) * d.cout + oc];
                }
            }
        }
        gx[i] = acc;
    }
}

// Block: DW_CHANNELS output channels of one kernel tap x DW_ROWS threads striding over the
// n*oh*ow positions, combined in shared memory. Grid: kh*kw*ceil(cout/DW_CHANNELS).
#define DW_CHANNELS 32  // one warp across consecutive channels: coalesced NHWC reads
#define DW_ROWS 8       // 256 threads per block
extern "C" __global__ void dwconv2d_bwd_filter_f32(const float* x, const float* gy, float* gwp, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    __shared__ float smem_part[DW_ROWS][DW_CHANNELS];
    idx_t tiles = (d.cout + DW_CHANNELS - 1) / DW_CHANNELS;
    idx_t tap = blockIdx.x / tiles;
    idx_t oc = (blockIdx.x % tiles) * DW_CHANNELS + threadIdx.x;
    if (tap >= d.kh * d.kw) return;  // uniform per block
    idx_t ky = tap / d.kw, kx = tap % d.kw, ci = oc / d.og;
    float acc = 0.0f;
    if (oc < d.cout) {
        idx_t positions = d.n * d.oh * d.ow;
        for (idx_t p = threadIdx.y; p < positions; p += DW_ROWS) {
            idx_t ox = p % d.ow, oy = (p / d.ow) % d.oh, img = p / (d.ow * d.oh);
            idx_t iy = oy * d.sh - d.pt + ky * d.dh, ix = ox * d.sw - d.pl + kx * d.dw;
            if (iy < 0 || iy >= d.h || ix < 0 || ix >= d.w) continue;
            acc += gy[p * d.cout + oc] * x[((img * d.h + iy) * d.w + ix) * d.c + ci];
        }
    }
    smem_part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && oc < d.cout) {
        float s = 0.0f;
        for (int r = 0; r < DW_ROWS; ++r) s += smem_part[r][threadIdx.x];
        gwp[tap * d.cout + oc] = s;
    }
}

// OIHW [cout, cg, kh, kw] -> KKIO [kh, kw, cg, cout]; i runs over the destination.
extern "C" __global__ void conv2d_repack_weight_f32(const float* w, float* wp, long long cout, long long cg,
                                                    long long kh, long long kw) {
    idx_t total = cout * cg * kh * kw;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t oc = i % cout, ci = (i / cout) % cg, kx = (i / (cout * cg)) % kw, ky = i / (cout * cg * kw);
        wp[i] = w[((oc * cg + ci) * kh + ky) * kw + kx];
    }
}

// KKIO -> OIHW; i runs over the destination.
extern "C" __global__ void conv2d_unpack_weight_f32(const float* wp, float* w, long long cout, long long cg,
                                                    long long kh, long long kw) {
    idx_t total = cout * cg * kh * kw;
    for (idx_t i = dv_tid(); i < total; i += dv_stride()) {
        idx_t kx = i % kw, ky = (i / kw) % kh, ci = (i / (kw * kh)) % cg, oc = i / (kw * kh * cg);
        w[i] = wp[((ky * kw + kx) * cg + ci) * cout + oc];
    }
}

DV_REGISTER_KERNELS(conv2d_fwd_f32, conv2d_bwd_data_f32, conv2d_bwd_data_phased_f32,
                    conv2d_bwd_data_direct_f32, conv2d_bwd_filter_f32, dwconv2d_fwd_f32,
                    dwconv2d_bwd_data_f32, dwconv2d_bwd_filter_f32, conv2d_repack_weight_f32,
                    conv2d_unpack_weight_f32)
