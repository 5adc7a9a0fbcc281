// Convolution on tensor cores: the forward and backward-data implicit GEMMs of conv.cu (same
// NHWC activations, KKIO weights, fused forward epilogue), with operands rounded to TF32 or
// BF16 and f32 accumulation. The engine picks them by `Precision` (src/backend/cuda/conv.rs);
// f32 stays the exact path in conv.cu.
//
// Versions ({op}_{variant}_{dtype}; data stays f32 in memory, the variant names the mma):
//   conv2d_fwd_tf32_f32 / conv2d_fwd_bf16_f32
//       M = n*oh*ow, N = og, K = kh*kw*cg as (ci, kx, ky); B = the KKIO rows (n contiguous);
//       epilogue: + bias + residual, activation, channel-slice store (dv_conv_store).
//   conv2d_bwd_data_tf32_f32 / conv2d_bwd_data_bf16_f32
//       conv.cu's phased backward data (v2) on tensor cores: grid.z = groups * sh*sw stride
//       phases, each a dense GEMM over its own taps (M = its input pixels, N = cg,
//       K = taps*og as (co, jx, jy)), so stride 2 multiplies no zeros; stride 1 is one phase
//       and allows dilation. B = W^T per tap: stored [n][k] (co contiguous in KKIO).
//   conv2d_{fwd,bwd_data}_{tf32,bf16}_tap_f32
//       the same four GEMMs staged by tap slices, for reductions of whole 32-channel slices
//       (every zoo layer past the first): uniform per-slice addressing, zero-filling cp.async,
//       swizzled shared memory, one LDS.128 per bf16 fragment row; see "tap-slice staging"
//       below. The engine runs them wherever they apply (`TcStaging` in conv.rs).
//
// What follows describes the gather versions; the tap versions share the tiles, warps, stages
// and epilogue, and differ where their section says.
// Tile configuration (CUTLASS's names), and why:
//   threadblock 128 x 64 x 32 (TC_M, TC_N, TC_K), 8 warps as 4 x 2, warp tile 32 x 32:
//       2 x 4 mma tiles per warp reuse each A fragment 4 times and each B fragment twice;
//       N = 64 because most layers' N (cout, or cg going back) is a multiple of 64 and a
//       128-wide N would idle half of every 64-channel layer.
//   instruction m16n8k8 (tf32) / m16n8k16 (bf16), f32 accumulators: 32 per thread.
//   TC_STAGES 3 cp.async stages, waited with cp.async.wait_group<1>: two K slices in flight
//       while the third is multiplied; 3 x 27 KiB = 81 KiB of dynamic shared memory (opt-in
//       above 48 KiB), 2 blocks per SM on sm_80/sm_90.
//   Shared memory is padded, not swizzled: A rows are 36 floats (TC_K + 4), so the 8 row
//       addresses of an ldmatrix phase start 4 banks apart and cover all 32 banks (the bf16
//       float2 fragment loads, banks 4g + 2t, do meet two to a bank within a half-warp: rows
//       g and g + 1 overlap by 4 banks; the tap versions avoid it); B [k][n] rows are
//       72 floats for tf32 (t*72 + g: 32 distinct banks) and 68 for bf16 (2t*68 + g likewise);
//       B [n][k] rows are 36 floats like A. Every row stays 16-byte aligned for cp.async.
//   Operands are staged as f32 (16-byte cp.async straight from the tensors, no conversion
//       pass) and rounded when fragments are built: cvt.rna.tf32 per element, cvt.rn.bf16x2
//       per pair. tf32 A (and B [n][k]) fragments come by ldmatrix.x4 on the f32 rows (an 8x4
//       f32 block is an 8x8 b16 matrix, and its lane mapping is the tf32 fragment's); bf16
//       fragments pair adjacent k, read as float2 (dv_lds_f32x2).
//   Ragged edges: a 16-byte chunk is copied only when whole and aligned (channels a multiple
//       of 4 and a 16-byte aligned tensor); otherwise it is gathered element by element
//       (first layers with 3 channels, odd channel counts), zeros outside the operands.
#include "conv.cuh"
#include "tensorcore.cuh"

#define TC_M 128                          // block tile rows (pixels)
#define TC_N 64                           // block tile columns (channels)
#define TC_K 32                           // reduction slice per stage
#define TC_STAGES 3                       // cp.async pipeline depth
#define TC_WARPS_N 2                      // 4 x 2 warps of 32 x 32
#define TC_THREADS 256
#define SA_STRIDE (TC_K + 4)              // A [m][k] rows: ldmatrix conflict-free
#define SB_KN_STRIDE(prec) (TC_N + ((prec) == DV_TF32 ? 8 : 4))  // B [k][n] rows (forward)
#define SB_NK_STRIDE (TC_K + 4)           // B [n][k] rows (backward data)
#define STAGE_FLOATS (TC_M * SA_STRIDE + TC_K * (TC_N + 8))  // >= TC_N * SB_NK_STRIDE too
#define TC_SMEM_BYTES (TC_STAGES * STAGE_FLOATS * 4)          // 82944: conv.rs TC_SMEM_BYTES
// Each thread stages 4 A chunks (rows CH_ROW + 32 i, k chunk CH_K) per slice; B [n][k] the same
// way (2 rows), B [k][n] 2 chunks (k rows BKN_ROW + 16 i, n chunk BKN_COL).
#define CH_K (threadIdx.x % (TC_K / 4))
#define CH_ROW (threadIdx.x / (TC_K / 4))
#define BKN_COL (threadIdx.x % (TC_N / 4))
#define BKN_ROW (threadIdx.x / (TC_N / 4))

// DV_TF32X3: f32 operands each split into a TF32 head and a TF32 tail (x - head), three mma per
// product (tail*head + head*tail + head*head; tail*tail, ~2^-22 relative, dropped): f32-grade
// products on the tensor cores ("3xTF32", as CUTLASS offers it), for the engine's fp32.
enum DvPrec { DV_TF32 = 0, DV_BF16 = 1, DV_TF32X3 = 2 };

// Where the A operand comes from: A(m, k) = src[((img*src_h + y)*src_w + x)*src_c + ch_off + ch]
// for m = (mx, my, img) over m_w x m_h and k = (ch, tx, ty) over k_c x k_w, with
// y = my*y_mul + y_off + ty*dy and x = mx*x_mul + x_off + tx*dx; zero outside [0, src_h) x [0, src_w).
struct DvGather {
    const float* src;
    int src_h, src_w, src_c, ch_off, m_w, m_h, y_mul, y_off, x_mul, x_off, k_c, k_w, dy, dx;
};

__device__ __forceinline__ bool dv_aligned16(const void* p) { return ((unsigned long long)p & 15) == 0; }

// Where (row, k) of a stage's A [m][k], B [n][k] and B [k][n] live, in floats: padded rows
// (the gather versions) or swizzled ones (the tap versions, defined with them below).
template <int PREC>
struct DvPadded {
    static __device__ __forceinline__ int a(int r, int k) { return r * SA_STRIDE + k; }
    static __device__ __forceinline__ int nk(int n, int k) { return n * SB_NK_STRIDE + k; }
    static __device__ __forceinline__ int kn(int k, int n) { return k * SB_KN_STRIDE(PREC) + n; }
};

// x = head + tail as two TF32 values (bits): head rounded from x, tail rounded from the exact
// remainder x - head (an f32 subtraction without error: head is x to 11 bits).
__device__ __forceinline__ void dv_split_tf32(float x, unsigned& head, unsigned& tail) {
    head = dv_cvt_rna_tf32(x);
    tail = dv_cvt_rna_tf32(x - __uint_as_float(head));
}

// One K slice of tf32 mma for the warp tile at (wm, wn), both stagings: A fragments by
// ldmatrix.x4 on the f32 rows (an 8x4 f32 block is an 8x8 b16 matrix, and its lane mapping is
// the tf32 fragment's), B [n][k] the same, B [k][n] two loads per mma tile.
// X3: 3xTF32 (see DvPrec): the B fragments' heads and tails first, then per A fragment its own.
template <class L, bool B_NK, bool X3 = false>
__device__ __forceinline__ void dv_tc_slice_tf32(float (&acc)[2][4][4], const float* sa, const float* sb, int wm, int wn) {
    int lane = threadIdx.x % 32, gq = lane >> 2, tq = lane % 4;
    int j8 = lane / 8, r8 = lane % 8;  // ldmatrix: this lane's matrix and row
    #pragma unroll
    for (int ks = 0; ks < TC_K; ks += 8) {
        unsigned fa[2][4], fb[4][2];  // f32 bits as loaded; rounded (or split) below
        #pragma unroll
        for (int mt = 0; mt < 2; ++mt)  // matrices: rows 0-7 | 8-15 x k 0-3 | 4-7
            dv_ldmatrix_x4(fa[mt], sa + L::a(wm + mt * 16 + (j8 & 1) * 8 + r8, ks + (j8 >> 1) * 4));
        if constexpr (B_NK) {
            #pragma unroll
            for (int np = 0; np < 2; ++np) {  // matrices: n 0-7 | 8-15 (of the pair) x k 0-3 | 4-7
                unsigned r[4];
                dv_ldmatrix_x4(r, sb + L::nk(wn + np * 16 + (j8 >> 1) * 8 + r8, ks + (j8 & 1) * 4));
                fb[2 * np][0] = r[0], fb[2 * np][1] = r[1], fb[2 * np + 1][0] = r[2], fb[2 * np + 1][1] = r[3];
            }
        } else {
            #pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                int n = wn + nt * 8 + gq;
                fb[nt][0] = __float_as_uint(dv_lds_f32(sb + L::kn(ks + tq, n)));
                fb[nt][1] = __float_as_uint(dv_lds_f32(sb + L::kn(ks + tq + 4, n)));
            }
        }
        if constexpr (X3) {
            unsigned fbt[4][2];  // the tails
            #pragma unroll
            for (int nt = 0; nt < 4; ++nt)
                #pragma unroll
                for (int r = 0; r < 2; ++r) dv_split_tf32(__uint_as_float(fb[nt][r]), fb[nt][r], fbt[nt][r]);
            #pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                unsigned ta[4];
                #pragma unroll
                for (int r = 0; r < 4; ++r) dv_split_tf32(__uint_as_float(fa[mt][r]), fa[mt][r], ta[r]);
                // the small terms first, so the head product adds to sums that already hold them
                #pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    dv_mma_m16n8k8_tf32_f32(acc[mt][nt], ta, fb[nt], acc[mt][nt]);
                    dv_mma_m16n8k8_tf32_f32(acc[mt][nt], fa[mt], fbt[nt], acc[mt][nt]);
                    dv_mma_m16n8k8_tf32_f32(acc[mt][nt], fa[mt], fb[nt], acc[mt][nt]);
                }
            }
        } else {
            #pragma unroll
            for (int mt = 0; mt < 2; ++mt)
                #pragma unroll
                for (int r = 0; r < 4; ++r) fa[mt][r] = dv_cvt_rna_tf32(__uint_as_float(fa[mt][r]));
            #pragma unroll
            for (int nt = 0; nt < 4; ++nt)
                #pragma unroll
                for (int r = 0; r < 2; ++r) fb[nt][r] = dv_cvt_rna_tf32(__uint_as_float(fb[nt][r]));
            #pragma unroll
            for (int mt = 0; mt < 2; ++mt)
                #pragma unroll
                for (int nt = 0; nt < 4; ++nt) dv_mma_m16n8k8_tf32_f32(acc[mt][nt], fa[mt], fb[nt], acc[mt][nt]);
        }
    }
}

// The cp.async pipeline both stagings run over slices [kt_lo, kt_hi) (all of them, or a
// split-K part's): TC_STAGES - 1 slices in flight ahead of the one being multiplied.
// `stage(buffer, kt)` issues slice kt's copies into a stage buffer, in slice order;
// `compute(buffer)` multiplies one. Slice kt is group kt - kt_lo of every thread; after
// wait_group<TC_STAGES - 2> this thread's group for kt has landed, and the barrier makes
// everyone's visible and frees the buffer of slice kt - 1. The buffers read and written are
// counted round.
template <class Stage, class Compute>
__device__ __forceinline__ void dv_tc_pipeline(int kt_lo, int kt_hi, Stage&& stage, Compute&& compute) {
    int slices = kt_hi - kt_lo;
    for (int s = 0; s < TC_STAGES - 1; ++s) {
        if (s < slices) stage(s, kt_lo + s);
        dv_cp_async_commit();
    }
    int rs = 0, ws = TC_STAGES - 1;
    for (int kt = 0; kt < slices; ++kt) {
        dv_cp_async_wait_group<TC_STAGES - 2>();
        __syncthreads();
        if (kt + TC_STAGES - 1 < slices) stage(ws, kt_lo + kt + TC_STAGES - 1);
        dv_cp_async_commit();  // possibly empty: keeps the group count in step
        compute(rs);
        rs = rs == TC_STAGES - 1 ? 0 : rs + 1, ws = ws == TC_STAGES - 1 ? 0 : ws + 1;
    }
}

// The epilogue both stagings share: the C fragment's (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
// of each of the warp's 2 x 4 mma tiles, stored through the fused forward epilogue or, going
// back, into the phase's input pixel (with the ReLU mask when given).
template <bool BWD>
__device__ __forceinline__ void dv_tc_epilogue(const float (&acc)[2][4][4], const DvConv& d, int g, int m_total, int n_total,
                                               int m0, int n0, const float* bias, const float* residual, float* out,
                                               int y_stride, int y_off, int act, int ry, int rx, int hy, int wx) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane % 4;
    int wm = (warp / TC_WARPS_N) * 32, wn = (warp % TC_WARPS_N) * 32;
    #pragma unroll
    for (int mt = 0; mt < 2; ++mt)
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            int m = m0 + wm + mt * 16 + gq + 8 * h;
            if (m >= m_total) continue;
            int off = m;  // forward: the output pixel; backward: gx offset of phase pixel m
            if (BWD) {
                int qx = m % wx, t = m / wx, qy = t % hy, img = t / hy;
                off = ((img * d.h + ry + d.sh * qy) * d.w + rx + d.sw * qx) * d.c + g * d.cg;
            }
            #pragma unroll
            for (int nt = 0; nt < 4; ++nt)
                #pragma unroll
                for (int e = 0; e < 2; ++e) {
                    int n = n0 + wn + nt * 8 + 2 * tq + e;
                    if (n >= n_total) continue;
                    float v = acc[mt][nt][2 * h + e];
                    if (BWD) dv_grad_store(out, residual, act, off + n, v);  // residual: the mask
                    else dv_conv_store(out, bias, residual, off, g * d.og + n, d.cout, y_stride, y_off, v, act);
                }
        }
}

template <int PREC, bool BWD>
__device__ __forceinline__ void dv_conv_tc(const DvGather& a, const float* wp, const DvConv& d, int g, int m_total,
                                           int n_total, int k_total, int k_lo, int k_hi, int ky0, int kx0, const float* bias,
                                           const float* residual, float* out, int y_stride, int y_off, int act,
                                           int ry, int rx, int hy, int wx) {
    DV_DYNAMIC_SHARED(float, smem);
    int m0 = blockIdx.x * TC_M, n0 = blockIdx.y * TC_N;
    if (m0 >= m_total || n0 >= n_total) return;  // uniform per block, before any barrier
    const int sb_stride = BWD ? SB_NK_STRIDE : SB_KN_STRIDE(PREC);
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane >> 2, tq = lane % 4;
    int wm = (warp / TC_WARPS_N) * 32, wn = (warp % TC_WARPS_N) * 32;

    // this thread's A rows: image offset (-1 past the end) and the window's corner
    int img_h[4], y0[4], x0[4];
    for (int i = 0; i < 4; ++i) {
        int m = m0 + CH_ROW + 32 * i;
        int mx = m % a.m_w, t = m / a.m_w, my = t % a.m_h;
        img_h[i] = m < m_total ? t / a.m_h * a.src_h : -1;
        y0[i] = my * a.y_mul + a.y_off, x0[i] = mx * a.x_mul + a.x_off;
    }
    bool vec_a = a.k_c % 4 == 0 && a.src_c % 4 == 0 && a.ch_off % 4 == 0 && dv_aligned16(a.src);
    bool vec_b = d.og % 4 == 0 && d.cout % 4 == 0 && dv_aligned16(wp);
    DvIdx3 kp = dv_idx3_at(k_lo + 4 * CH_K, a.k_c, a.k_w);  // this thread's chunk, k0 + 4*CH_K, as (ch, tx, ty)

    // Stage the slice at k0 into buffer s: cp.async for whole aligned chunks, else element by
    // element (zeros outside). Advances kp by one slice.
    auto stage = [&](int s, int kt) {
        int k0 = kt * TC_K;
        float* sa = smem + s * STAGE_FLOATS;
        float* sb = sa + TC_M * SA_STRIDE;
        int kc = k0 + 4 * CH_K;
        auto a_elem = [&](int i, const DvIdx3& e) -> const float* {  // null: zero
            int y = y0[i] + e.c * a.dy, x = x0[i] + e.b * a.dx;
            if (img_h[i] < 0 || y < 0 || y >= a.src_h || x < 0 || x >= a.src_w) return nullptr;
            return a.src + ((img_h[i] + y) * a.src_w + x) * a.src_c + a.ch_off + e.a;
        };
        for (int i = 0; i < 4; ++i) {
            float* dst = sa + (CH_ROW + 32 * i) * SA_STRIDE + 4 * CH_K;
            if (vec_a) {
                const float* p = kc < k_total ? a_elem(i, kp) : nullptr;
                if (p) dv_cp_async_16(dst, p);
                else *reinterpret_cast<float4*>(dst) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            } else {
                DvIdx3 e = kp;
                for (int j = 0; j < 4; ++j, e.step(1, a.k_c, a.k_w)) {
                    const float* p = kc + j < k_total ? a_elem(i, e) : nullptr;
                    dst[j] = p ? *p : 0.0f;
                }
            }
        }
        if (BWD) {  // B [n][k]: W^T of the phase's taps, co contiguous
            auto b_elem = [&](int n, const DvIdx3& e) -> const float* {
                int tap = (ky0 + d.sh * e.c) * d.kw + kx0 + d.sw * e.b;
                return wp + (tap * d.cg + n) * d.cout + g * d.og + e.a;
            };
            for (int i = 0; i < 2; ++i) {
                int n = n0 + CH_ROW + 32 * i;
                float* dst = sb + (CH_ROW + 32 * i) * SB_NK_STRIDE + 4 * CH_K;
                if (vec_b && n < n_total && kc < k_total) {
                    dv_cp_async_16(dst, b_elem(n, kp));
                } else {
                    DvIdx3 e = kp;
                    for (int j = 0; j < 4; ++j, e.step(1, a.k_c, a.k_w)) dst[j] = (n < n_total && kc + j < k_total) ? *b_elem(n, e) : 0.0f;
                }
            }
        } else {  // B [k][n]: KKIO rows, cout contiguous
            for (int i = 0; i < 2; ++i) {
                int k = k0 + BKN_ROW + 16 * i, n = n0 + 4 * BKN_COL;
                float* dst = sb + (BKN_ROW + 16 * i) * sb_stride + 4 * BKN_COL;
                const float* p = wp + k * d.cout + g * d.og + n;
                if (vec_b && k < k_total && n + 3 < n_total) {
                    dv_cp_async_16(dst, p);
                } else {
                    for (int j = 0; j < 4; ++j) dst[j] = (k < k_total && n + j < n_total) ? p[j] : 0.0f;
                }
            }
        }
        kp.step(TC_K, a.k_c, a.k_w);
    };

    float acc[2][4][4] = {};  // the warp tile's 2 x 4 mma tiles, f32

    // One slice on the tensor cores: warp tile 32 x 32 = 2 x 4 mma tiles.
    auto compute = [&](int s) {
        const float* sa = smem + s * STAGE_FLOATS;
        const float* sb = sa + TC_M * SA_STRIDE;
        if (PREC == DV_TF32) {
            dv_tc_slice_tf32<DvPadded<PREC>, BWD>(acc, sa, sb, wm, wn);
        } else {
            #pragma unroll
            for (int ks = 0; ks < TC_K; ks += 16) {
                unsigned fa[2][4], fb[4][2];
                #pragma unroll
                for (int mt = 0; mt < 2; ++mt)
                    #pragma unroll
                    for (int r = 0; r < 4; ++r) {  // a[r] = A[g + 8 (r & 1)][2t + 8 (r >> 1) .. +1]
                        float2 v = dv_lds_f32x2(sa + (wm + mt * 16 + gq + 8 * (r & 1)) * SA_STRIDE + ks + 2 * tq + 8 * (r >> 1));
                        fa[mt][r] = dv_cvt_bf16x2(v.x, v.y);
                    }
                #pragma unroll
                for (int nt = 0; nt < 4; ++nt)
                    #pragma unroll
                    for (int r = 0; r < 2; ++r) {  // b[r] = B[2t + 8r .. +1][g]
                        int n = wn + nt * 8 + gq, k = ks + 2 * tq + 8 * r;
                        if (BWD) {
                            float2 v = dv_lds_f32x2(sb + n * SB_NK_STRIDE + k);
                            fb[nt][r] = dv_cvt_bf16x2(v.x, v.y);
                        } else {
                            fb[nt][r] = dv_cvt_bf16x2(dv_lds_f32(sb + k * sb_stride + n), dv_lds_f32(sb + (k + 1) * sb_stride + n));
                        }
                    }
                #pragma unroll
                for (int mt = 0; mt < 2; ++mt)
                    #pragma unroll
                    for (int nt = 0; nt < 4; ++nt) dv_mma_m16n8k16_bf16_f32(acc[mt][nt], fa[mt], fb[nt], acc[mt][nt]);
            }
        }
    };

    dv_tc_pipeline(k_lo / TC_K, (k_hi + TC_K - 1) / TC_K, stage, compute);
    dv_tc_epilogue<BWD>(acc, d, g, m_total, n_total, m0, n0, bias, residual, out, y_stride, y_off, act, ry, rx, hy, wx);
}

// ---- tap-slice staging: conv2d_{fwd,bwd_data}_{tf32,bf16}_tap_f32 ---------------------------
// The same GEMMs, for the shapes of every zoo layer past the first: the reduction's channels a
// multiple of TC_K (k_c = cg forward, og backward), whole 4-channel chunks of B, 16-byte
// aligned tensors (the launch code checks them: `TcStaging::Tap` in conv.rs). B is [n][k] both
// ways: going back W^T is KKIO read along co; going forward the kernel reads, in place of the
// KKIO weights, their OHWI rows ([cout][K], K contiguous: conv2d_rows_weight_f32, made once
// when the engine uploads the weights). Then each K slice lies inside one tap, so staging a
// slice costs:
//   - nothing per element: the block steps the slice's tap (tx, ty) and channel c0 as uniform
//     counters and recomputes its rows' bounds only when the tap changes (every k_c / 32
//     slices);
//   - per A row an add and one cp.async whose src-size is 0 where the tap falls outside the
//     image or the row past M (zeros without a branch; the address stays inside the tensor);
//     per B row the same.
// Shared memory is unpadded and swizzled, 24 KiB a stage instead of 27: A [m][k] and B [n][k]
// are rows of 32 floats whose 16-byte chunk c of row r sits at c ^ dv_sw8(r), with
// dv_sw8(r) = (r & 1) << 2 | (r >> 1) & 3: eight consecutive rows take eight different chunks
// (ldmatrix's 8 row addresses: conflict-free), rows 2q and 2q + 1 opposite halves of the row (a
// quarter-warp of the bf16 fragments' LDS.128: conflict-free), and the 8 threads that write a
// row write its 8 chunks.
// bf16 fragments: the mma sums over k, so any order of k that A and B share gives the same
// product. Lane t's k = 2t, 2t+1 | 2t+8, 2t+9 of each 16 (a[0] | a[2], b[0] | b[1]) are taken
// from the four consecutive floats 4t .. 4t+3 of the slice's 16: one LDS.128 per A or B row and
// two cvt.rn.bf16x2, where the gather version needs two LDS.64 (2-way bank conflicts) per A row
// and four LDS.32 per B column. tf32 fragments by ldmatrix.x4 for A and B alike.
#define TS_STAGE_FLOATS (TC_M * TC_K + TC_K * TC_N)       // 6144
#define TS_SMEM_BYTES (TC_STAGES * TS_STAGE_FLOATS * 4)   // 73728: conv.rs TS_SMEM_BYTES

__device__ __forceinline__ int dv_sw8(int r) { return (r & 1) << 2 | (r >> 1 & 3); }
// A [m][k] / B [n][k]: the float offset of (r, k) in a stage's rows of TC_K
__device__ __forceinline__ int dv_ts_rk(int r, int k) { return r * TC_K + (((k >> 2 ^ dv_sw8(r)) << 2) | (k & 3)); }
struct DvSwizzled {  // (B is [n][k] both ways here)
    static __device__ __forceinline__ int a(int r, int k) { return dv_ts_rk(r, k); }
    static __device__ __forceinline__ int nk(int n, int k) { return dv_ts_rk(n, k); }
};

template <int PREC, bool BWD>
__device__ __forceinline__ void dv_conv_tc_tap(const DvGather& a, const float* wp, const DvConv& d, int g, int m_total,
                                               int n_total, int k_total, int k_lo, int k_hi, int ky0, int kx0, const float* bias,
                                               const float* residual, float* out, int y_stride, int y_off, int act,
                                               int ry, int rx, int hy, int wx) {
    DV_DYNAMIC_SHARED(float, smem);
    int m0 = blockIdx.x * TC_M, n0 = blockIdx.y * TC_N;
    if (m0 >= m_total || n0 >= n_total) return;  // uniform per block, before any barrier
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane >> 2, tq = lane % 4;
    int wm = (warp / TC_WARPS_N) * 32, wn = (warp % TC_WARPS_N) * 32;

    // This thread's A rows (CH_ROW + 32 i, chunk CH_K): the window corner, the element offset
    // of its chunk there (taken only where a tap is in range), and whether the row is inside M.
    int y0[4], x0[4], a_off[4];
    unsigned a_rows = 0;
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
        int m = m0 + CH_ROW + 32 * i;
        int mx = m % a.m_w, t = m / a.m_w, my = t % a.m_h, img = t / a.m_h;
        y0[i] = my * a.y_mul + a.y_off, x0[i] = mx * a.x_mul + a.x_off;
        // (a row past M would index an image past the last: not computed, never read)
        a_off[i] = m < m_total ? ((img * a.src_h + y0[i]) * a.src_w + x0[i]) * a.src_c + a.ch_off + 4 * CH_K : 0;
        a_rows |= (unsigned)(m < m_total) << i;
    }
    // B [n][k], rows n0 + CH_ROW + 32 i, chunk CH_K: forward, the OHWI rows (`rows`, K floats an
    // output channel) advancing by TC_K a slice; backward, W^T at each tap's offset in KKIO. A
    // row past N reads nothing (src-size 0) from an offset kept at 0, so every address stays
    // inside its tensor.
    int b_off[2];  // forward: each row's offset in the OHWI rows
    unsigned b_rows = 0;
    #pragma unroll
    for (int i = 0; i < 2; ++i) {
        int n = n0 + CH_ROW + 32 * i;
        b_rows |= (unsigned)(n < n_total) << i;
        b_off[i] = !BWD && n < n_total ? (g * d.og + n) * k_total + k_lo + 4 * CH_K : 0;
    }
    // backward: row n0 + CH_ROW's chunk in a tap's W^T (the second row is 32 * cout further)
    const int b_row0 = (n0 + CH_ROW) * d.cout + g * d.og + 4 * CH_K;
    // where this thread's chunks land in a stage: rows 32 apart share dv_sw8, so one base and
    // constant steps, A then B
    const int s_at = dv_ts_rk(CH_ROW, 4 * CH_K);

    // The next slice to stage: channel c0 of tap (tx, ty), from k_lo on. Per tap: which A rows'
    // windows hold it, and each row's chunk offset there (0 where not: with c0 added it stays
    // inside the tensor, and src-size 0 reads nothing); backward, each B row's offset at the tap.
    DvIdx3 at = dv_idx3_at(k_lo, a.k_c, a.k_w);  // (k_lo = 0 where a phase has no taps)
    int c0 = at.a, tx = at.b, ty = at.c, a_cur[4], b_cur[2];
    unsigned a_ok = 0;
    auto new_tap = [&]() {
        int dy = ty * a.dy, dx = tx * a.dx, a_tap = (dy * a.src_w + dx) * a.src_c;
        a_ok = 0;
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            bool ok = a_rows >> i & 1 && (unsigned)(y0[i] + dy) < (unsigned)a.src_h && (unsigned)(x0[i] + dx) < (unsigned)a.src_w;
            a_ok |= (unsigned)ok << i;
            a_cur[i] = ok ? a_off[i] + a_tap : 0;
        }
        if (BWD) {
            int b_tap = ((ky0 + d.sh * ty) * d.kw + kx0 + d.sw * tx) * d.cg * d.cout;
            #pragma unroll
            for (int i = 0; i < 2; ++i) b_cur[i] = b_rows >> i & 1 ? b_row0 + 32 * i * d.cout + b_tap : 0;
        }
    };
    new_tap();
    auto stage = [&](int s, int) {  // slices come in order: the counters step with them
        float* st = smem + s * TS_STAGE_FLOATS;
        #pragma unroll
        for (int i = 0; i < 4; ++i) dv_cp_async_16_zfill(st + s_at + i * 32 * TC_K, a.src + a_cur[i] + c0, a_ok >> i & 1);
        #pragma unroll
        for (int i = 0; i < 2; ++i) {
            dv_cp_async_16_zfill(st + TC_M * TC_K + s_at + i * 32 * TC_K, wp + (BWD ? b_cur[i] + c0 : b_off[i]), b_rows >> i & 1);
            if (!BWD && b_rows >> i & 1) b_off[i] += TC_K;
        }
        c0 += TC_K;
        if (c0 == a.k_c) {  // uniform: the next slice starts the next tap
            c0 = 0;
            if (++tx == a.k_w) tx = 0, ++ty;
            new_tap();
        }
    };

    float acc[2][4][4] = {};  // the warp tile's 2 x 4 mma tiles, f32

    auto compute = [&](int s) {
        const float* sa = smem + s * TS_STAGE_FLOATS;
        const float* sb = sa + TC_M * TC_K;
        if (PREC == DV_TF32 || PREC == DV_TF32X3) {
            dv_tc_slice_tf32<DvSwizzled, true, PREC == DV_TF32X3>(acc, sa, sb, wm, wn);
        } else {
            #pragma unroll
            for (int ks = 0; ks < TC_K; ks += 16) {
                unsigned fa[2][4], fb[4][2];
                int k = ks + 4 * tq;  // this lane's 4 floats of the 16: mma k 2t, 2t+1 | 2t+8, 2t+9
                #pragma unroll
                for (int mt = 0; mt < 2; ++mt) {
                    int r = wm + mt * 16 + gq;
                    float4 lo = dv_lds_f32x4(sa + dv_ts_rk(r, k)), hi = dv_lds_f32x4(sa + dv_ts_rk(r + 8, k));
                    fa[mt][0] = dv_cvt_bf16x2(lo.x, lo.y), fa[mt][1] = dv_cvt_bf16x2(hi.x, hi.y);
                    fa[mt][2] = dv_cvt_bf16x2(lo.z, lo.w), fa[mt][3] = dv_cvt_bf16x2(hi.z, hi.w);
                }
                #pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    float4 v = dv_lds_f32x4(sb + dv_ts_rk(wn + nt * 8 + gq, k));
                    fb[nt][0] = dv_cvt_bf16x2(v.x, v.y), fb[nt][1] = dv_cvt_bf16x2(v.z, v.w);
                }
                #pragma unroll
                for (int mt = 0; mt < 2; ++mt)
                    #pragma unroll
                    for (int nt = 0; nt < 4; ++nt) dv_mma_m16n8k16_bf16_f32(acc[mt][nt], fa[mt], fb[nt], acc[mt][nt]);
            }
        }
    };

    dv_tc_pipeline(k_lo / TC_K, k_hi / TC_K, stage, compute);  // k_total (so k_hi) a multiple of TC_K here
    dv_tc_epilogue<BWD>(acc, d, g, m_total, n_total, m0, n0, bias, residual, out, y_stride, y_off, act, ry, rx, hy, wx);
}

// Arguments as conv2d_fwd_f32 (the tap version takes the OHWI rows in wp's place). Grid
// (ceil(n*oh*ow/TC_M), ceil(og/TC_N), groups * splits), TC_THREADS threads, TC_SMEM_BYTES
// (TS_SMEM_BYTES) of dynamic shared memory. Split-K as conv2d_fwd_f32 (DvSplit).
template <int PREC, bool TAP>
__device__ __forceinline__ void dv_conv_fwd_tc(const float* x, const float* wp, const float* bias, const float* residual,
                                               float* y, const DvConv& d, int y_stride, int y_off, int act, float* ws, int splits) {
    DvSplit sp(splits);
    int g = sp.z, m_total = d.n * d.oh * d.ow, k_total = d.kh * d.kw * d.cg, k_lo, k_hi;
    sp.range(k_total, TC_K, k_lo, k_hi);
    if (sp.splits > 1)
        y = sp.part_out(ws, m_total * d.cout), bias = residual = nullptr, y_stride = d.cout, y_off = 0, act = DV_ACT_NONE;
    DvGather a = {x, d.h, d.w, d.c, g * d.cg, d.ow, d.oh, d.sh, -d.pt, d.sw, -d.pl, d.cg, d.kw, d.dh, d.dw};
    if (TAP)
        dv_conv_tc_tap<PREC, false>(a, wp, d, g, m_total, d.og, k_total, k_lo, k_hi, 0, 0, bias, residual, y, y_stride,
                                    y_off, act, 0, 0, 0, 0);
    else
        dv_conv_tc<PREC, false>(a, wp, d, g, m_total, d.og, k_total, k_lo, k_hi, 0, 0, bias, residual, y, y_stride, y_off,
                                act, 0, 0, 0, 0);
}

// Arguments as conv2d_bwd_data_f32. Grid (ceil(n*ceil(h/sh)*ceil(w/sw)/TC_M), ceil(cg/TC_N),
// groups*sh*sw * splits); stride 1 or dilation 1 (checked by the launch code). Phase (ry, rx)
// as in conv2d_bwd_data_phased_f32: input pixel (ry + sh*qy, rx + sw*qx) reads gy at
// oy = by + qy - jy*dh through tap ky = ky0 + sh*jy. Split-K as conv2d_bwd_data_f32 (DvSplit).
template <int PREC, bool TAP>
__device__ __forceinline__ void dv_conv_bwd_data_tc(const float* gy, const float* wp, float* gx, const DvConv& d,
                                                    const float* mask, int act, float* ws, int splits) {
    DvSplit sp(splits);
    int phases = d.sh * d.sw, g = sp.z / phases;
    DvPhase p(d, sp.z % phases);  // with stride 1: the whole input, every tap, by = pt
    if (p.hy == 0 || p.wx == 0) return;  // uniform: an empty phase
    int k_total = p.tky * p.tkx * d.og, k_lo, k_hi;
    sp.range(k_total, TC_K, k_lo, k_hi);
    if (sp.splits > 1) gx = sp.part_out(ws, d.n * d.h * d.w * d.c), mask = nullptr;
    DvGather a = {gy, d.oh, d.ow, d.cout, g * d.og, p.wx, p.hy, 1, p.by, 1, p.bx, d.og, p.tkx, -d.dh, -d.dw};
    if (TAP)
        dv_conv_tc_tap<PREC, true>(a, wp, d, g, d.n * p.hy * p.wx, d.cg, k_total, k_lo, k_hi, p.ky0, p.kx0, nullptr, mask,
                                   gx, 0, 0, act, p.ry, p.rx, p.hy, p.wx);
    else
        dv_conv_tc<PREC, true>(a, wp, d, g, d.n * p.hy * p.wx, d.cg, k_total, k_lo, k_hi, p.ky0, p.kx0, nullptr, mask, gx,
                               0, 0, act, p.ry, p.rx, p.hy, p.wx);
}

// Entry points: {op}_{tf32,bf16}_f32 stage by gathering, {op}_{tf32,bf16}_tap_f32 by tap slices
// (TS_SMEM_BYTES of dynamic shared memory instead of TC_SMEM_BYTES). The tap versions are held
// to 2 blocks an SM (at most 128 registers: they use 122-128 and spill nothing, tests/sass.rs
// checks); the gather versions keep their plain bounds, under which ptxas gives them 93-97
// (with a minimum of 2 blocks it gives them ~25% more, for nothing).
#define DV_TC_GATHER_BOUNDS __launch_bounds__(TC_THREADS)
#define DV_TC_TAP_BOUNDS __launch_bounds__(TC_THREADS, 2)
#define DV_TC_FWD(name, PREC, TAP, BOUNDS)                                                                        \
    extern "C" __global__ void BOUNDS name(const float* x, const float* wp, const float* bias, const float* residual, \
                                           float* y, DV_CONV_PARAMS, int y_stride, int y_off, int act,            \
                                           float* ws, int splits) {                                              \
        DV_CONV_INIT;                                                                                          \
        dv_conv_fwd_tc<PREC, TAP>(x, wp, bias, residual, y, d, y_stride, y_off, act, ws, splits);             \
    }
#define DV_TC_BWD(name, PREC, TAP, BOUNDS)                                                                        \
    extern "C" __global__ void BOUNDS name(const float* gy, const float* wp, float* gx, DV_CONV_PARAMS,          \
                                           const float* mask, int act, float* ws, int splits) {                 \
        DV_CONV_INIT;                                                                                          \
        dv_conv_bwd_data_tc<PREC, TAP>(gy, wp, gx, d, mask, act, ws, splits);                                  \
    }
DV_TC_FWD(conv2d_fwd_tf32_f32, DV_TF32, false, DV_TC_GATHER_BOUNDS)
DV_TC_FWD(conv2d_fwd_bf16_f32, DV_BF16, false, DV_TC_GATHER_BOUNDS)
DV_TC_BWD(conv2d_bwd_data_tf32_f32, DV_TF32, false, DV_TC_GATHER_BOUNDS)
DV_TC_BWD(conv2d_bwd_data_bf16_f32, DV_BF16, false, DV_TC_GATHER_BOUNDS)
DV_TC_FWD(conv2d_fwd_tf32_tap_f32, DV_TF32, true, DV_TC_TAP_BOUNDS)
DV_TC_FWD(conv2d_fwd_bf16_tap_f32, DV_BF16, true, DV_TC_TAP_BOUNDS)
DV_TC_BWD(conv2d_bwd_data_tf32_tap_f32, DV_TF32, true, DV_TC_TAP_BOUNDS)
DV_TC_BWD(conv2d_bwd_data_bf16_tap_f32, DV_BF16, true, DV_TC_TAP_BOUNDS)
DV_TC_FWD(conv2d_fwd_tf32x3_tap_f32, DV_TF32X3, true, DV_TC_TAP_BOUNDS)
DV_TC_BWD(conv2d_bwd_data_tf32x3_tap_f32, DV_TF32X3, true, DV_TC_TAP_BOUNDS)

DV_REGISTER_KERNELS(conv2d_fwd_tf32_f32, conv2d_fwd_bf16_f32, conv2d_bwd_data_tf32_f32, conv2d_bwd_data_bf16_f32,
                    conv2d_fwd_tf32_tap_f32, conv2d_fwd_bf16_tap_f32, conv2d_bwd_data_tf32_tap_f32, conv2d_bwd_data_bf16_tap_f32,
                    conv2d_fwd_tf32x3_tap_f32, conv2d_bwd_data_tf32x3_tap_f32)
