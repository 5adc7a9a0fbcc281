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
//                       where a TILE_N-channel tile would be almost all padding: one warp per
//                       input pixel gathers its cg gradients over the taps that reach it, the
//                       lanes splitting the output channels.
//   conv2d_bwd_data_direct4 (v3b) v3 for one group, dilation 1, cout % 4 == 0: a pixel pair a
//                       warp, float4 channels, the weights in shared memory (on trial).
//   conv2d_bwd_filter   the same GEMM over M = kh*kw*cg, N = og, K = n*oh*ow; writes KKIO.
//   dwconv2d_fwd / dwconv2d_bwd_data / dwconv2d_bwd_filter
//                       direct loops for one input channel per group (depthwise, channel
//                       multiplier og = cout / cin), same KKIO weights ([kh, kw, 1, cout]);
//                       dwconv2d_fwd has conv2d_fwd's fused epilogue.
//   conv2d_repack_weight / conv2d_unpack_weight   OIHW <-> KKIO.
// The bias gradient is reduce.cu's channel_sum over gy. The tensor-core versions of the forward
// and backward-data GEMMs (TF32, BF16) are in conv_tc.cu.
//
// Index maths (all kernels): 32-bit ints (kernels/conv.cuh), no division inside a loop: the
// GEMM loaders decompose their fixed rows once and step the reduction index as a DvIdx3
// counter; the gathers divide by the stride with a DvDiv magic number; grid-stride kernels
// decompose each element once with 32-bit divisions. The SASS check (tests/sass.rs) holds every
// kernel here to no CALL.
#include "conv.cuh"

#define TILE_M 64        // output pixels per block: 64x64 fp32 accumulators = 16 per thread
#define TILE_N 64        // output channels per block (most layers have cout >= 64)
#define TILE_K 16        // reduction slice staged per step: 2 x 4 KiB of shared memory
#define THREADS 256      // 16 x 16 threads, each a 4 x 4 micro-tile strided by 16
#define MICRO 4          // TILE_M / 16 = TILE_N / 16
// Each thread stages A elements (rows A_ROW + 16 i, column A_COL) and B elements (rows
// B_ROW + 4 i, column B_COL) of every tile: fixed rows, so their coordinates are found once.
#define A_COL (threadIdx.x % TILE_K)
#define A_ROW (threadIdx.x / TILE_K)
#define B_COL (threadIdx.x % TILE_N)
#define B_ROW (threadIdx.x / TILE_N)

// The tiled product C[m, n] = sum_k A(m, k) B(k, n) over one TILE_M x TILE_N tile.
// `stage(k0, smem_a, smem_b)` fills smem_a[A_COL][A_ROW + 16 i] and smem_b (the forward's
// weight rows as [B_ROW + 4 i][B_COL], backward data's weight columns as [A_COL][A_ROW + 16 i])
// (zeros outside the matrices) for the slice starting at k0, called for k0 = 0, TILE_K, ...
// in order from k_lo (a multiple of TILE_K) while below k_hi (a split-K part's range; the
// whole reduction otherwise); `row(m)` gives what `store(row, n, v)` needs for output row m,
// and store is called once for each in-range (m, n).
template <class Stage, class Row, class Store>
__device__ __forceinline__ void dv_gemm_tile(int m_total, int n_total, int k_lo, int k_hi, Stage stage, Row row, Store store) {
    __shared__ float smem_a[TILE_K][TILE_M + 1];  // +1: the k-fastest fill is conflict-free
    __shared__ float smem_b[TILE_K][TILE_N + 1];  // +1: so is backward data's k-fastest fill
    int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    if (m0 >= m_total || n0 >= n_total) return;  // uniform per block: a tile past a (phase's) end
    float acc[MICRO][MICRO];
    for (int i = 0; i < MICRO; ++i)
        for (int j = 0; j < MICRO; ++j) acc[i][j] = 0.0f;

    for (int k0 = k_lo; k0 < k_hi; k0 += TILE_K) {
        stage(k0, smem_a, smem_b);
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
    for (int i = 0; i < MICRO; ++i) {
        int m = m0 + ty + 16 * i;
        if (m >= m_total) continue;
        auto r = row(m);
        for (int j = 0; j < MICRO; ++j) {
            int n = n0 + tx + 16 * j;
            if (n < n_total) store(r, n, acc[i][j]);
        }
    }
}
typedef float (*DvSmemA)[TILE_M + 1];
typedef float (*DvSmemB)[TILE_N + 1];

// B of the forward GEMM (and A of nothing else): row k of the KKIO weight, columns g*og + n.
__device__ __forceinline__ void dv_stage_weight_rows(DvSmemB sb, const float* wp, const DvConv& d, int g, int k0, int k_total) {
    int n = blockIdx.y * TILE_N + B_COL;
    for (int i = 0; i < MICRO; ++i) {
        int k = k0 + B_ROW + 4 * i;
        sb[B_ROW + 4 * i][B_COL] = (k < k_total && n < d.og) ? wp[k * d.cout + g * d.og + n] : 0.0f;
    }
}

// B of the backward-data GEMMs: B(k, n) = wp[tap][ci = n][g*og + co] for the thread's reduction
// index k0 + A_COL = (tap, co) and columns A_ROW + 16 i of the tile. Threads take A's mapping
// (k fastest), so a warp reads runs of 16 consecutive co of one weight row: coalesced. (Before,
// k was fixed per thread and n = B_COL fastest, consecutive lanes reading ci `cout` floats
// apart: each warp load touched 32 lines, which held fp32 backward data to 0.33x of cuDNN on
// the H200 while the forward, whose B rows are contiguous, ran at 0.69x.) `in`: k < k_total.
__device__ __forceinline__ void dv_stage_weight_cols(DvSmemB sb, const float* wp, const DvConv& d, int g, bool in, int tap, int co) {
    const float* w = wp + (tap * d.cg) * d.cout + g * d.og + co;
    for (int i = 0; i < MICRO; ++i) {
        int ci = blockIdx.y * TILE_N + A_ROW + 16 * i;
        sb[A_COL][A_ROW + 16 * i] = (in && ci < d.cg) ? w[ci * d.cout] : 0.0f;
    }
}

// x [n, h, w, c], wp KKIO, bias [cout] or null, residual [n, oh, ow, cout] or null, y rows of
// y_stride >= y_off + cout floats. Grid (ceil(M/TILE_M), ceil(og/TILE_N), groups * splits),
// THREADS threads; bounds are checked by the staging and by dv_gemm_tile's store. With
// splits > 1, part p of the reduction goes raw into ws[p] ([n*oh*ow, cout] each; DvSplit).
extern "C" __global__ void conv2d_fwd_f32(const float* x, const float* wp, const float* bias,
                                          const float* residual, float* y, DV_CONV_PARAMS,
                                          int y_stride, int y_off, int act, float* ws, int splits) {
    DV_CONV_INIT;
    DvSplit sp(splits);
    int g = sp.z, m_total = d.n * d.oh * d.ow, k_total = d.kh * d.kw * d.cg, k_lo, k_hi;
    sp.range(k_total, TILE_K, k_lo, k_hi);
    if (sp.splits > 1)
        y = sp.part_out(ws, m_total * d.cout), bias = residual = nullptr, y_stride = d.cout, y_off = 0, act = DV_ACT_NONE;
    // this thread's A rows: output pixels -> image row offset and the window's top-left corner
    int img_h[MICRO], y0[MICRO], x0[MICRO];
    for (int i = 0; i < MICRO; ++i) {
        int m = blockIdx.x * TILE_M + A_ROW + 16 * i;
        int ox = m % d.ow, t = m / d.ow, oy = t % d.oh;
        img_h[i] = m < m_total ? t / d.oh * d.h : -1;
        y0[i] = oy * d.sh - d.pt, x0[i] = ox * d.sw - d.pl;
    }
    DvIdx3 kp = dv_idx3_at(k_lo + A_COL, d.cg, d.kw);  // A's reduction index as (ci, kx, ky)
    auto stage = [&](int k0, DvSmemA sa, DvSmemB sb) {
        bool kin = k0 + A_COL < k_total;
        for (int i = 0; i < MICRO; ++i) {
            int iy = y0[i] + kp.c * d.dh, ix = x0[i] + kp.b * d.dw;
            bool in = kin && img_h[i] >= 0 && iy >= 0 && iy < d.h && ix >= 0 && ix < d.w;
            sa[A_COL][A_ROW + 16 * i] = in ? x[((img_h[i] + iy) * d.w + ix) * d.c + g * d.cg + kp.a] : 0.0f;
        }
        kp.step(TILE_K, d.cg, d.kw);
        dv_stage_weight_rows(sb, wp, d, g, k0, k_total);
    };
    auto row = [](int m) { return m; };
    auto store = [&](int m, int o, float v) {
        dv_conv_store(y, bias, residual, m, g * d.og + o, d.cout, y_stride, y_off, v, act);
    };
    dv_gemm_tile(m_total, d.og, k_lo, k_hi, stage, row, store);
}

// gy [n, oh, ow, cout], wp KKIO, gx [n, h, w, c]. Grid (ceil(n*h*w/TILE_M), ceil(cg/TILE_N),
// groups * splits). K = kh*kw*og as (co, kx, ky); the stride divisibility test divides by DvDiv
// magic numbers. With splits > 1, part p goes raw (unmasked) into ws[p] (gx's shape; DvSplit).
extern "C" __global__ void conv2d_bwd_data_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS,
                                                const float* mask, int act, float* ws, int splits) {
    DV_CONV_INIT;
    DvSplit sp(splits);
    int g = sp.z, m_total = d.n * d.h * d.w, k_total = d.kh * d.kw * d.og, k_lo, k_hi;
    sp.range(k_total, TILE_K, k_lo, k_hi);
    if (sp.splits > 1) gx = sp.part_out(ws, m_total * d.c), mask = nullptr;
    DvDiv div_sh(d.sh), div_sw(d.sw);
    int img_oh[MICRO], ty0[MICRO], tx0[MICRO];
    for (int i = 0; i < MICRO; ++i) {
        int m = blockIdx.x * TILE_M + A_ROW + 16 * i;
        int ix = m % d.w, t = m / d.w, iy = t % d.h;
        img_oh[i] = m < m_total ? t / d.h * d.oh : -1;
        ty0[i] = iy + d.pt, tx0[i] = ix + d.pl;
    }
    DvIdx3 ka = dv_idx3_at(k_lo + A_COL, d.og, d.kw);  // A's column and B's row, k0 + A_COL, as (co, kx, ky)
    auto stage = [&](int k0, DvSmemA sa, DvSmemB sb) {
        bool kin = k0 + A_COL < k_total;
        for (int i = 0; i < MICRO; ++i) {
            int ty = ty0[i] - ka.c * d.dh, tx = tx0[i] - ka.b * d.dw;
            float v = 0.0f;
            if (kin && img_oh[i] >= 0 && ty >= 0 && tx >= 0) {
                int oy = div_sh.div(ty), ox = div_sw.div(tx);
                if (oy * d.sh == ty && ox * d.sw == tx && oy < d.oh && ox < d.ow)
                    v = gy[((img_oh[i] + oy) * d.ow + ox) * d.cout + g * d.og + ka.a];
            }
            sa[A_COL][A_ROW + 16 * i] = v;
        }
        dv_stage_weight_cols(sb, wp, d, g, kin, ka.c * d.kw + ka.b, ka.a);
        ka.step(TILE_K, d.og, d.kw);
    };
    auto row = [](int m) { return m; };
    auto store = [&](int m, int ci, float v) { dv_grad_store(gx, mask, act, m * d.c + g * d.cg + ci, v); };
    dv_gemm_tile(m_total, d.cg, k_lo, k_hi, stage, row, store);
}

// v2. gy, wp, gx as v1. Grid (ceil(n*ceil(h/sh)*ceil(w/sw)/TILE_M), ceil(cg/TILE_N),
// groups*sh*sw * splits); dilation 1. One DvPhase per grid.z / splits (conv.cuh): a dense GEMM
// over the phase's pixels and taps, reading gy[oy = by + qy - jy], so nothing in the loops
// divides. A phase without taps stores zeros. Split-K as v1, each phase's taps split alike.
extern "C" __global__ void conv2d_bwd_data_phased_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS,
                                                       const float* mask, int act, float* ws, int splits) {
    DV_CONV_INIT;
    DvSplit sp(splits);
    int phases = d.sh * d.sw, g = sp.z / phases;
    DvPhase ph(d, sp.z % phases);
    int ry = ph.ry, rx = ph.rx, hy = ph.hy, wx = ph.wx, ky0 = ph.ky0, kx0 = ph.kx0, tkx = ph.tkx, by = ph.by, bx = ph.bx;
    int m_total = d.n * hy * wx, k_total = ph.tky * tkx * d.og, k_lo, k_hi;
    if (m_total == 0) return;  // uniform: an empty phase (more phases than input rows)
    sp.range(k_total, TILE_K, k_lo, k_hi);
    if (sp.splits > 1) gx = sp.part_out(ws, d.n * d.h * d.w * d.c), mask = nullptr;
    int img_oh[MICRO], oy0[MICRO], ox0[MICRO];
    for (int i = 0; i < MICRO; ++i) {
        int m = blockIdx.x * TILE_M + A_ROW + 16 * i;
        int qx = m % wx, t = m / wx, qy = t % hy;
        img_oh[i] = m < m_total ? t / hy * d.oh : -1;
        oy0[i] = by + qy, ox0[i] = bx + qx;
    }
    DvIdx3 ka = dv_idx3_at(k_lo + A_COL, d.og, tkx);  // A's column and B's row, k0 + A_COL, as (co, jx, jy)
    auto stage = [&](int k0, DvSmemA sa, DvSmemB sb) {
        bool kin = k0 + A_COL < k_total;
        for (int i = 0; i < MICRO; ++i) {
            int oy = oy0[i] - ka.c, ox = ox0[i] - ka.b;
            bool in = kin && img_oh[i] >= 0 && oy >= 0 && ox >= 0 && oy < d.oh && ox < d.ow;
            sa[A_COL][A_ROW + 16 * i] = in ? gy[((img_oh[i] + oy) * d.ow + ox) * d.cout + g * d.og + ka.a] : 0.0f;
        }
        dv_stage_weight_cols(sb, wp, d, g, kin, (ky0 + d.sh * ka.c) * d.kw + kx0 + d.sw * ka.b, ka.a);
        ka.step(TILE_K, d.og, tkx);
    };
    auto row = [&](int m) {  // the input pixel of phase pixel m
        int qx = m % wx, t = m / wx, qy = t % hy, img = t / hy;
        return ((img * d.h + ry + d.sh * qy) * d.w + rx + d.sw * qx) * d.c + g * d.cg;
    };
    auto store = [&](int off, int ci, float v) { dv_grad_store(gx, mask, act, off + ci, v); };
    dv_gemm_tile(m_total, d.cg, k_lo, k_hi, stage, row, store);
}

// v3. gy, wp, gx as v1; cg <= DIRECT_CG. One warp per (input pixel, group), grid-stride over
// whole warps: the lanes split the og output channels, so a gy row and a weight row are read
// coalesced (consecutive lanes, consecutive channels); each lane keeps cg partial sums over the
// taps that reach the pixel, and a butterfly sum gives the pixel's cg gradients, stored by lanes
// 0 .. cg-1. With dilation 1 the taps are walked by the stride from the first that can reach
// (ky = (iy + pt) mod sh, then + sh), not tested one by one. (Before, one thread per pixel read
// its own 64-channel gy row: a warp's load touched ~16 lines, and resnet50's first layer at batch
// 64 took 12.5 ms on an H200, 1.2 TFLOP/s; benches/RESULTS.md, 2026-12-04.)
#define DIRECT_CG 4  // a network's first layer: RGB, or RGBA
extern "C" __global__ void conv2d_bwd_data_direct_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS,
                                                       const float* mask, int act) {
    DV_CONV_INIT;
    DvDiv div_sh(d.sh), div_sw(d.sw);
    int lane = threadIdx.x & 31, warps = gridDim.x * (blockDim.x >> 5);
    int total = d.n * d.h * d.w * d.groups;
    // i is the same on every lane of a warp: the loop and every branch below are warp-uniform
    for (int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); i < total; i += warps) {
        int g = i % d.groups, pix = i / d.groups;
        int ix = pix % d.w, t = pix / d.w, iy = t % d.h, img = t / d.h;
        int ty0 = iy + d.pt, tx0 = ix + d.pl;
        int ky0 = d.dh == 1 ? div_sh.mod(ty0) : 0, ky_step = d.dh == 1 ? d.sh : 1;
        int kx0 = d.dw == 1 ? div_sw.mod(tx0) : 0, kx_step = d.dw == 1 ? d.sw : 1;
        float acc[DIRECT_CG];
#pragma unroll
        for (int ci = 0; ci < DIRECT_CG; ++ci) acc[ci] = 0.0f;
        for (int ky = ky0; ky < d.kh; ky += ky_step) {
            int ty = ty0 - ky * d.dh, oy = div_sh.div(ty);
            if (ty < 0) break;  // ty falls with ky
            if (oy * d.sh != ty || oy >= d.oh) continue;
            for (int kx = kx0; kx < d.kw; kx += kx_step) {
                int tx = tx0 - kx * d.dw, ox = div_sw.div(tx);
                if (tx < 0) break;
                if (ox * d.sw != tx || ox >= d.ow) continue;
                const float* gr = gy + ((img * d.oh + oy) * d.ow + ox) * d.cout + g * d.og;
                const float* wr = wp + (ky * d.kw + kx) * d.cg * d.cout + g * d.og;
                for (int co = lane; co < d.og; co += 32) {
                    float v = gr[co];
#pragma unroll
                    for (int ci = 0; ci < DIRECT_CG; ++ci)
                        if (ci < d.cg) acc[ci] += v * wr[ci * d.cout + co];
                }
            }
        }
#pragma unroll
        for (int ci = 0; ci < DIRECT_CG; ++ci) {
            float v = dv_warp_sum(acc[ci]);
            if (ci < d.cg && lane == ci) dv_grad_store(gx, mask, act, pix * d.c + g * d.cg + ci, v);
        }
    }
}

// v3b. gy, wp, gx as v1; cg <= DIRECT_CG, groups 1, dilation 1, og = cout a multiple of 4, and
// the whole KKIO weight tensor in dynamic shared memory (at most 48 KiB: the stem's 7x7x3x64 is
// 37.6 KiB). One warp per pair of input pixels of one row and one stride phase, (iy, ix) and
// (iy, ix + sw), which the same taps reach (ox one apart, so only the edges differ: a per-pixel
// predicate, not a branch): each half-warp takes one pixel, its 16 lanes 4 output channels each
// (a float4 of the gy row, three float4 weight reads from shared memory, 4 FMAs per input
// channel), a 16-lane butterfly sum at the end. Against v3: a quarter of the load instructions
// per FMA, 16-byte loads, weights one shared-memory read away. Written to test the lead that v3
// waits on its loads (benches/RESULTS.md, 2026-12-04: v3 5.5 ms against cuDNN's ~1 ms); the
// engine keeps v3 until the card says otherwise (conv_layers --stem times both).
// Grid: whole warps over n * h * sw * pairs (pairs = ceil(ceil(w / sw) / 2)).
extern "C" __global__ void conv2d_bwd_data_direct4_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS,
                                                        const float* mask, int act) {
    DV_CONV_INIT;
    DV_DYNAMIC_SHARED(float, smem_w);
    int wlen = d.kh * d.kw * d.cg * d.cout;
    for (int i = threadIdx.x; i < wlen; i += blockDim.x) smem_w[i] = wp[i];
    __syncthreads();
    DvDiv div_sh(d.sh), div_sw(d.sw);
    int lane = threadIdx.x & 31, half = lane >> 4, l16 = lane & 15;
    int pairs = ((d.w + d.sw - 1) / d.sw + 1) / 2;
    int total = d.n * d.h * d.sw * pairs, warps = gridDim.x * (blockDim.x >> 5);
    for (int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); i < total; i += warps) {
        int m = i % pairs, t = i / pairs, rx = t % d.sw;
        t /= d.sw;
        int iy = t % d.h, img = t / d.h;
        int ix = rx + (2 * m + half) * d.sw, ix_hi = rx + (2 * m + 1) * d.sw;
        bool valid = ix < d.w;
        int ty0 = iy + d.pt, ky0 = div_sh.mod(ty0), kx0 = div_sw.mod(rx + d.pl);
        float acc[DIRECT_CG];
#pragma unroll
        for (int ci = 0; ci < DIRECT_CG; ++ci) acc[ci] = 0.0f;
        for (int ky = ky0; ky < d.kh; ky += d.sh) {
            int ty = ty0 - ky;
            if (ty < 0) break;  // ty falls with ky
            int oy = div_sh.div(ty);
            if (oy >= d.oh) continue;
            for (int kx = kx0; kx < d.kw; kx += d.sw) {
                if (ix_hi + d.pl - kx < 0) break;  // the pair's larger pixel runs out last
                int tx = ix + d.pl - kx, ox = tx < 0 ? 0 : div_sw.div(tx);
                bool ok = valid && tx >= 0 && ox < d.ow;
                const float* gr = gy + ((img * d.oh + oy) * d.ow + ox) * d.cout;
                const float* wr = smem_w + (ky * d.kw + kx) * d.cg * d.cout;
                for (int co = 4 * l16; co < d.og; co += 64) {
                    float4 v = ok ? *reinterpret_cast<const float4*>(gr + co) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
                    for (int ci = 0; ci < DIRECT_CG; ++ci)
                        if (ci < d.cg) {
                            float4 w4 = *reinterpret_cast<const float4*>(wr + ci * d.cout + co);
                            acc[ci] += v.x * w4.x + v.y * w4.y + v.z * w4.z + v.w * w4.w;
                        }
                }
            }
        }
#pragma unroll
        for (int ci = 0; ci < DIRECT_CG; ++ci) {
            float v = acc[ci];
            for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (ci < d.cg && l16 == ci && valid) dv_grad_store(gx, mask, act, ((img * d.h + iy) * d.w + ix) * d.c + ci, v);
        }
    }
}

// x [n, h, w, c], gy [n, oh, ow, cout], gwp KKIO. Grid (ceil(kh*kw*cg/TILE_M), ceil(og/TILE_N), groups).
// K = n*oh*ow output pixels as (ox, oy, image).
extern "C" __global__ void conv2d_bwd_filter_f32(const float* x, const float* gy, float* gwp, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    int g = blockIdx.z, m_total = d.kh * d.kw * d.cg, k_total = d.n * d.oh * d.ow;
    int ci[MICRO], dy[MICRO], dx[MICRO];  // this thread's A rows: (ci, kx, ky) -> tap offsets
    for (int i = 0; i < MICRO; ++i) {
        int r = blockIdx.x * TILE_M + A_ROW + 16 * i;
        int kx = r / d.cg % d.kw, ky = r / (d.cg * d.kw);
        ci[i] = r < m_total ? r % d.cg : -1;
        dy[i] = ky * d.dh - d.pt, dx[i] = kx * d.dw - d.pl;
    }
    DvIdx3 pa;  // A's reduction index as (ox, oy, image)
    pa.step(A_COL, d.ow, d.oh);
    auto stage = [&](int k0, DvSmemA sa, DvSmemB sb) {
        bool kin = k0 + A_COL < k_total;
        for (int i = 0; i < MICRO; ++i) {
            int iy = pa.b * d.sh + dy[i], ix = pa.a * d.sw + dx[i];
            bool in = kin && ci[i] >= 0 && iy >= 0 && iy < d.h && ix >= 0 && ix < d.w;
            sa[A_COL][A_ROW + 16 * i] = in ? x[((pa.c * d.h + iy) * d.w + ix) * d.c + g * d.cg + ci[i]] : 0.0f;
        }
        pa.step(TILE_K, d.ow, d.oh);
        int o = blockIdx.y * TILE_N + B_COL;
        for (int i = 0; i < MICRO; ++i) {
            int k = k0 + B_ROW + 4 * i;
            sb[B_ROW + 4 * i][B_COL] = (k < k_total && o < d.og) ? gy[k * d.cout + g * d.og + o] : 0.0f;
        }
    };
    auto row = [](int r) { return r; };
    auto store = [&](int r, int o, float v) { gwp[r * d.cout + g * d.og + o] = v; };
    dv_gemm_tile(m_total, d.og, 0, k_total, stage, row, store);
}

// ---- depthwise: one input channel per group (c == groups), oc = ci * og + multiplier --------

// One thread per output element, grid-stride; arguments and epilogue as conv2d_fwd_f32.
extern "C" __global__ void dwconv2d_fwd_f32(const float* x, const float* wp, const float* bias,
                                            const float* residual, float* y, DV_CONV_PARAMS,
                                            int y_stride, int y_off, int act) {
    DV_CONV_INIT;
    int total = d.n * d.oh * d.ow * d.cout;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        int oc = i % d.cout, pix = i / d.cout;
        int ox = pix % d.ow, t = pix / d.ow, oy = t % d.oh, img = t / d.oh;
        int ci = oc / d.og;
        float acc = 0.0f;
        for (int ky = 0; ky < d.kh; ++ky) {
            int iy = oy * d.sh - d.pt + ky * d.dh;
            if (iy < 0 || iy >= d.h) continue;
            for (int kx = 0; kx < d.kw; ++kx) {
                int ix = ox * d.sw - d.pl + kx * d.dw;
                if (ix < 0 || ix >= d.w) continue;
                acc += x[((img * d.h + iy) * d.w + ix) * d.c + ci] * wp[(ky * d.kw + kx) * d.cout + oc];
            }
        }
        dv_conv_store(y, bias, residual, pix, oc, d.cout, y_stride, y_off, acc, act);
    }
}

// One thread per input element, gathering every output that read it.
extern "C" __global__ void dwconv2d_bwd_data_f32(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS,
                                                  const float* mask, int act) {
    DV_CONV_INIT;
    DvDiv div_sh(d.sh), div_sw(d.sw);
    int total = d.n * d.h * d.w * d.c;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        int ci = i % d.c, t = i / d.c, ix = t % d.w;
        t /= d.w;
        int iy = t % d.h, img = t / d.h;
        float acc = 0.0f;
        dv_taps_reaching(d, div_sh, div_sw, iy, ix, [&](int ky, int kx, int oy, int ox) {
            const float* gr = gy + ((img * d.oh + oy) * d.ow + ox) * d.cout;
            for (int m = 0; m < d.og; ++m) {
                int oc = ci * d.og + m;
                acc += gr[oc] * wp[(ky * d.kw + kx) * d.cout + oc];
            }
        });
        dv_grad_store(gx, mask, act, i, acc);
    }
}

// Block: DW_CHANNELS output channels of one kernel tap x DW_ROWS threads striding over the
// n*oh*ow positions (a DvIdx3 counter), combined in shared memory. Grid: kh*kw*ceil(cout/DW_CHANNELS).
#define DW_CHANNELS 32  // one warp across consecutive channels: coalesced NHWC reads
#define DW_ROWS 8       // 256 threads per block
extern "C" __global__ void dwconv2d_bwd_filter_f32(const float* x, const float* gy, float* gwp, DV_CONV_PARAMS) {
    DV_CONV_INIT;
    __shared__ float smem_part[DW_ROWS][DW_CHANNELS];
    int tiles = (d.cout + DW_CHANNELS - 1) / DW_CHANNELS;
    int tap = blockIdx.x / tiles;
    int oc = (blockIdx.x % tiles) * DW_CHANNELS + threadIdx.x;
    if (tap >= d.kh * d.kw) return;  // uniform per block
    int ky = tap / d.kw, kx = tap % d.kw, ci = oc / d.og;
    float acc = 0.0f;
    if (oc < d.cout) {
        int positions = d.n * d.oh * d.ow;
        DvIdx3 q;  // (ox, oy, image) of position p
        q.step(threadIdx.y, d.ow, d.oh);
        for (int p = threadIdx.y; p < positions; p += DW_ROWS, q.step(DW_ROWS, d.ow, d.oh)) {
            int iy = q.b * d.sh - d.pt + ky * d.dh, ix = q.a * d.sw - d.pl + kx * d.dw;
            if (iy < 0 || iy >= d.h || ix < 0 || ix >= d.w) continue;
            acc += gy[p * d.cout + oc] * x[((q.c * d.h + iy) * d.w + ix) * d.c + ci];
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
extern "C" __global__ void conv2d_repack_weight_f32(const float* w, float* wp, int cout, int cg, int kh, int kw) {
    int total = cout * cg * kh * kw;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        int oc = i % cout, t = i / cout, ci = t % cg;
        t /= cg;
        int kx = t % kw, ky = t / kw;
        wp[i] = w[((oc * cg + ci) * kh + ky) * kw + kx];
    }
}

// Backward data v5 (BackwardData::Col2im in src/backend/cuda/conv.rs), its second half: gx from
// the column matrix col [n*oh*ow, kh*kw*c] (one group) that a 1x1 convolution of gy with the
// KKIO weights read as OHWI rows of kh*kw*c output channels made (col(o, (ky, kx, ci)) =
// Σ_co gy(o, co) W(ky, kx, ci, co)): gx(p, ci) is the sum, over the taps (ky, kx) by which p
// reaches an output pixel o, of col(o, (ky*kw + kx)*c + ci), in tap order; with a mask, stored
// as dv_grad_store does. i runs over gx.
extern "C" __global__ void conv2d_col2im_f32(const float* col, float* gx, DV_CONV_PARAMS, const float* mask, int act) {
    DV_CONV_INIT;
    DvDiv div_sh(d.sh), div_sw(d.sw);
    int total = d.n * d.h * d.w * d.c, kc = d.kh * d.kw * d.c;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        int ci = i % d.c, t = i / d.c, x = t % d.w;
        t /= d.w;
        int y = t % d.h, img = t / d.h;
        float v = 0.0f;
        dv_taps_reaching(d, div_sh, div_sw, y, x, [&](int ky, int kx, int oy, int ox) {
            v += col[((img * d.oh + oy) * d.ow + ox) * kc + (ky * d.kw + kx) * d.c + ci];
        });
        dv_grad_store(gx, mask, act, i, v);
    }
}

// Split-K's second half (DvSplit in conv.cuh): element i's sum over the parts, in part order.
__device__ __forceinline__ float dv_split_sum(const float* ws, int splits, int total, int i) {
    float v = 0.0f;
    for (int p = 0; p < splits; ++p) v += ws[(long long)p * total + i];
    return v;
}

// The parts' sums, then the forward's fused epilogue (bias, residual, activation, the channel
// slice of y's rows) for element i = m * cout + oc of the [m_total, cout] output. Grid-stride
// over the output.
extern "C" __global__ void conv2d_splitk_fwd_f32(const float* ws, int splits, const float* bias, const float* residual,
                                                 float* y, int m_total, int cout, int y_stride, int y_off, int act) {
    int total = m_total * cout;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        int m = i / cout;
        dv_conv_store(y, bias, residual, m, i - m * cout, cout, y_stride, y_off, dv_split_sum(ws, splits, total, i), act);
    }
}

// ... and backward data's: gx[i] the parts' sum, masked as dv_grad_store does.
extern "C" __global__ void conv2d_splitk_bwd_data_f32(const float* ws, int splits, float* gx, int total, const float* mask, int act) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        dv_grad_store(gx, mask, act, i, dv_split_sum(ws, splits, total, i));
    }
}

// KKIO [K, cout] (K = kh*kw*cg) -> OHWI rows [cout, K]: the tensor-core forward's B [n][k]
// (conv2d_fwd_*_tap_f32); i runs over the destination.
extern "C" __global__ void conv2d_rows_weight_f32(const float* wp, float* rows, int k_total, int cout) {
    int total = k_total * cout;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        int k = i % k_total, oc = i / k_total;
        rows[i] = wp[k * cout + oc];
    }
}

// KKIO -> OIHW; i runs over the destination.
extern "C" __global__ void conv2d_unpack_weight_f32(const float* wp, float* w, int cout, int cg, int kh, int kw) {
    int total = cout * cg * kh * kw;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        int kx = i % kw, t = i / kw, ky = t % kh;
        t /= kh;
        int ci = t % cg, oc = t / cg;
        w[i] = wp[((ky * kw + kx) * cg + ci) * cout + oc];
    }
}

DV_REGISTER_KERNELS(conv2d_fwd_f32, conv2d_bwd_data_f32, conv2d_bwd_data_phased_f32,
                    conv2d_bwd_data_direct_f32, conv2d_bwd_data_direct4_f32, conv2d_bwd_filter_f32,
                    dwconv2d_fwd_f32, dwconv2d_bwd_data_f32, dwconv2d_bwd_filter_f32,
                    conv2d_repack_weight_f32, conv2d_unpack_weight_f32, conv2d_rows_weight_f32, conv2d_col2im_f32,
                    conv2d_splitk_fwd_f32, conv2d_splitk_bwd_data_f32)
