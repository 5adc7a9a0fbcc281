// Shared by the convolution kernels (conv.cu: f32 on plain cores; conv_tc.cu: tensor cores):
// the geometry parameters, the fused forward epilogue and the mixed-radix counter the implicit
// GEMMs use instead of dividing in their loops.
//
// Index type: `int`. The launch code (src/backend/cuda/conv.rs, `check_i32`) refuses a
// convolution any of whose tensors (x, y with its row stride, gy, gx, the weight) has 2^31 or
// more elements, so every offset below fits; 32-bit arithmetic keeps the 64-bit division
// routines (CALLs in the SASS) out, and the loops divide not at all: per-thread row
// coordinates are decomposed once, and the reduction index advances as a DvIdx3 counter.
#pragma once

#include "common.cuh"

// n, h, w, c, oh, ow, cout, kh, kw, sh, sw, pt, pl, dh, dw, groups (see conv_args in conv.rs)
#define DV_CONV_PARAMS                                                                         \
    int n, int h, int w, int c, int oh, int ow, int cout, int kh, int kw, int sh, int sw, int pt, \
        int pl, int dh, int dw, int groups
#define DV_CONV_INIT \
    DvConv d = {n, h, w, c, oh, ow, cout, kh, kw, sh, sw, pt, pl, dh, dw, groups, c / groups, cout / groups}

// Conv geometry, one struct so the loaders read the same names.
struct DvConv {
    int n, h, w, c, oh, ow, cout, kh, kw, sh, sw, pt, pl, dh, dw, groups, cg, og;
};

// A mixed-radix counter (a fastest, then b, then c): the (channel, tap x, tap y) of a reduction
// index, or the (x, y, image) of a pixel index, moved forward without dividing. `step` of at
// most a tile's depth costs at most step / da + 1 trips.
struct DvIdx3 {
    int a = 0, b = 0, c = 0;
    __device__ __forceinline__ void step(int inc, int da, int db) {
        a += inc;
        while (a >= da) {
            a -= da;
            if (++b == db) b = 0, ++c;
        }
    }
};

// A counter at index k (dividing once, outside any loop: a split-K range's start). db = 0 (a
// stride phase without taps, whose reduction is empty, so the counter is never read) divides
// by nothing.
__device__ __forceinline__ DvIdx3 dv_idx3_at(int k, int da, int db) {
    DvIdx3 r;
    int t = k / da;
    db = max(db, 1);
    r.a = k - t * da, r.b = t % db, r.c = t / db;
    return r;
}

// Split-K (src/backend/cuda/conv.rs, `SplitK`): a GEMM whose grid is under a wave of the card
// runs its reduction in `splits` parts, grid.z = z * splits + part. Each part multiplies its
// share of the reduction's tiles and stores the raw sums into its own copy of the output in the
// workspace `ws` (parts x the output's elements, in the output's own layout, no epilogue); the
// conv2d_splitk_* kernels then add the parts in order and apply the epilogue. A part with no
// tiles (a stride phase with fewer than the others) stores zeros.
struct DvSplit {
    int z, part, splits;
    __device__ __forceinline__ DvSplit(int splits_) : splits(splits_ > 1 ? splits_ : 1) {
        z = blockIdx.z / splits, part = blockIdx.z % splits;
    }
    // [k_lo, k_hi): this part's tiles of `tile` elements of a reduction of k_total
    __device__ __forceinline__ void range(int k_total, int tile, int& k_lo, int& k_hi) const {
        int tiles = (k_total + tile - 1) / tile, per = (tiles + splits - 1) / splits;
        int lo = min(part * per, tiles), hi = min(lo + per, tiles);
        k_lo = lo * tile, k_hi = min(hi * tile, k_total);
    }
    // this part's copy of an output of `len` elements
    __device__ __forceinline__ float* part_out(float* ws, int len) const { return ws + (long long)part * len; }
};

// Stride phase p (of sh*sw) of the backward data (conv2d_bwd_data_phased_f32, conv_tc.cu): the
// input pixels iy = ry + sh*qy, ix = rx + sw*qx (hy x wx of them per image) receive gradient only
// through the taps ky = ky0 + sh*jy, kx = kx0 + sw*jx (tky x tkx), ky0 = (ry + pt) mod sh; with
// dilation 1, iy + pt - ky = sh*(by + qy - jy), so pixel q reads gy at oy = by + qy - jy.
struct DvPhase {
    int ry, rx, hy, wx, ky0, kx0, tky, tkx, by, bx;
    __device__ __forceinline__ DvPhase(const DvConv& d, int p) {
        ry = p / d.sw, rx = p % d.sw;
        hy = ry < d.h ? (d.h - ry + d.sh - 1) / d.sh : 0, wx = rx < d.w ? (d.w - rx + d.sw - 1) / d.sw : 0;
        ky0 = (ry + d.pt) % d.sh, kx0 = (rx + d.pl) % d.sw;
        tky = ky0 < d.kh ? (d.kh - ky0 + d.sh - 1) / d.sh : 0, tkx = kx0 < d.kw ? (d.kw - kx0 + d.sw - 1) / d.sw : 0;
        by = (ry + d.pt - ky0) / d.sh, bx = (rx + d.pl - kx0) / d.sw;
    }
};

// The taps by which input pixel (iy, ix) reaches an output pixel: f(ky, kx, oy, ox) for each
// (ky, kx) with iy + pt - ky*dh = oy*sh, ix + pl - kx*dw = ox*sw and (oy, ox) in range, ky then
// kx ascending (the gathering backward-data kernels' summation order). div_sh / div_sw divide
// by the strides.
template <class F>
__device__ __forceinline__ void dv_taps_reaching(const DvConv& d, const DvDiv& div_sh, const DvDiv& div_sw, int iy, int ix, F&& f) {
    for (int ky = 0; ky < d.kh; ++ky) {
        int ty = iy + d.pt - ky * d.dh, oy = div_sh.div(ty);
        if (ty < 0) break;  // ty falls with ky
        if (oy * d.sh != ty || oy >= d.oh) continue;
        for (int kx = 0; kx < d.kw; ++kx) {
            int tx = ix + d.pl - kx * d.dw, ox = div_sw.div(tx);
            if (tx < 0) break;
            if (ox * d.sw != tx || ox >= d.ow) continue;
            f(ky, kx, oy, ox);
        }
    }
}

// The fused forward epilogue: output pixel m (of n*oh*ow), channel oc. The residual, when
// present, is NHWC with the output's shape ([n, oh, ow, cout], contiguous); y rows are y_stride
// floats apart and this conv owns channels [y_off, y_off + cout) of each. The residual is read
// before y is written by the same thread, so it may be y itself when y_stride == cout, y_off == 0.
// A backward-data store: gx[i] = v, or, with a mask (the forward input or output of the ReLU /
// ReLU6 `act` before the convolution), v times the activation's gradient there: 1 or 0, as
// dv_act_grad gives it (negated comparisons: NaN passes), so fused and unfused agree to the bit.
// Only these two (the launch code refuses others): dv_act_grad's other cases would bring their
// divisions' CALLs into every backward-data kernel (the SASS check holds them call-free).
template <class I>
__device__ __forceinline__ void dv_grad_store(float* gx, const float* mask, int act, I i, float v) {
    if (mask) {
        float m = mask[i];
        bool off = m <= 0.0f || (act == DV_ACT_RELU6 && m >= 6.0f);
        v *= off ? 0.0f : 1.0f;
    }
    gx[i] = v;
}

__device__ __forceinline__ void dv_conv_store(float* y, const float* bias, const float* residual, int m, int oc,
                                              int cout, int y_stride, int y_off, float v, int act) {
    v += bias ? bias[oc] : 0.0f;
    v += residual ? residual[m * cout + oc] : 0.0f;
    y[m * y_stride + y_off + oc] = dv_act(v, act);
}
