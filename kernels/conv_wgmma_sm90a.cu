// The tensor-core forward convolution on Hopper's wgmma (sm_90a; kernels/wgmma.cuh): the GEMM
// of conv_tc.cu's tap-slice forward (M = n*oh*ow pixels, N = og channels, K = (ci, kx, ky) over
// the OHWI weight rows), bf16 operands, f32 accumulation, the same 128 x 64 block tile, grid,
// split-K (DvSplit) and fused epilogue, so the launch code swaps the kernel name only.
//
//   conv2d_fwd_bf16_wgmma_f32
//       two warpgroups, each one m64n64 accumulator (32 f32 a thread); K slices of 64 channels
//       (one 128-byte row of bf16), so the input channels per group must be a multiple of 64
//       (the launch code checks). The operands are f32 in memory: each slice is loaded as
//       float4 (plain loads), rounded to bf16 (cvt.rn.bf16x2, as the mma.sync kernels do) and
//       stored into the 128-byte swizzle layout, 8 bytes a store; two stage buffers, so the
//       loads of slice s + 1 run while the wgmma of slice s does (wgmma.wait_group 1, then a
//       barrier frees the buffer slice s - 1 read). 24 KiB a stage.
//   A first version, to measure against the mma.sync tap kernel on a card (the engine uses it
//   only with DEEPVIZ_WGMMA=1): no TMA, no cp.async (the bf16 rounding happens on the way in),
//   one block an SM's worth of warps. benches/RESULTS.md, Owed 12.
#include "conv.cuh"
#include "wgmma.cuh"

#define WG_M 128
#define WG_N 64
#define WG_K 64
#define WG_THREADS 256
#define WG_A_BYTES (WG_M * WG_K * 2)                       // 16384
#define WG_STAGE_BYTES (WG_A_BYTES + WG_N * WG_K * 2)      // 24576
#define WG_SMEM_BYTES (1024 + 2 * WG_STAGE_BYTES)          // 50176: conv.rs WG_SMEM_BYTES

// Arguments and grid as conv2d_fwd_bf16_tap_f32 (wp: the OHWI rows), WG_THREADS threads,
// WG_SMEM_BYTES of dynamic shared memory; cg % 64 == 0.
extern "C" __global__ void __launch_bounds__(WG_THREADS) conv2d_fwd_bf16_wgmma_f32(
    const float* x, const float* wp, const float* bias, const float* residual, float* y, DV_CONV_PARAMS, int y_stride,
    int y_off, int act, float* ws, int splits) {
    DV_CONV_INIT;
    DV_DYNAMIC_SHARED(unsigned char, smem_raw);
    DvSplit sp(splits);
    int g = sp.z, m_total = d.n * d.oh * d.ow, n_total = d.og, k_total = d.kh * d.kw * d.cg, k_lo, k_hi;
    sp.range(k_total, WG_K, k_lo, k_hi);
    if (sp.splits > 1)
        y = sp.part_out(ws, m_total * d.cout), bias = residual = nullptr, y_stride = d.cout, y_off = 0, act = DV_ACT_NONE;
    int m0 = blockIdx.x * WG_M, n0 = blockIdx.y * WG_N;
    if (m0 >= m_total || n0 >= n_total) return;  // uniform per block, before any barrier
    unsigned char* smem = smem_raw + ((1024 - ((unsigned long long)smem_raw & 1023)) & 1023);
    int tid = threadIdx.x, cq = tid % 16, r0 = tid / 16;  // this thread's 4 channels of a row, first row

    // A rows r0 + 16 i: window corner, the chunk's offset at the row's pixel, inside M
    int y0[8], x0[8], a_off[8], a_cur[8];
    unsigned a_rows = 0, a_ok = 0;
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
        int m = m0 + r0 + 16 * i;
        int ox = m % d.ow, t = m / d.ow, oy = t % d.oh, img = t / d.oh;
        y0[i] = oy * d.sh - d.pt, x0[i] = ox * d.sw - d.pl;
        a_off[i] = m < m_total ? ((img * d.h + y0[i]) * d.w + x0[i]) * d.c + g * d.cg + 4 * cq : 0;
        a_rows |= (unsigned)(m < m_total) << i;
    }
    // B rows r0 + 16 i of the OHWI rows (K floats an output channel), from k_lo on
    int b_off[4];
    unsigned b_rows = 0;
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
        int n = n0 + r0 + 16 * i;
        b_rows |= (unsigned)(n < n_total) << i;
        b_off[i] = n < n_total ? (g * d.og + n) * k_total + k_lo + 4 * cq : 0;
    }
    DvIdx3 at = dv_idx3_at(k_lo, d.cg, d.kw);
    int c0 = at.a, tx = at.b, ty = at.c;
    auto new_tap = [&]() {
        int dy = ty * d.dh, dx = tx * d.dw, a_tap = (dy * d.w + dx) * d.c;
        a_ok = 0;
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            bool ok = a_rows >> i & 1 && (unsigned)(y0[i] + dy) < (unsigned)d.h && (unsigned)(x0[i] + dx) < (unsigned)d.w;
            a_ok |= (unsigned)ok << i;
            a_cur[i] = ok ? a_off[i] + a_tap : 0;
        }
    };
    new_tap();
    auto put = [&](unsigned char* tile, int r, float4 v) {  // 4 channels of row r, as bf16
        uint2 b = make_uint2(dv_cvt_bf16x2(v.x, v.y), dv_cvt_bf16x2(v.z, v.w));
        *reinterpret_cast<uint2*>(tile + dv_sw128_offset(r, 4 * cq)) = b;
    };
    auto stage = [&](unsigned char* st) {
        const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        #pragma unroll
        for (int i = 0; i < 8; ++i)
            put(st, r0 + 16 * i, a_ok >> i & 1 ? *reinterpret_cast<const float4*>(x + a_cur[i] + c0) : zero);
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            put(st + WG_A_BYTES, r0 + 16 * i, b_rows >> i & 1 ? *reinterpret_cast<const float4*>(wp + b_off[i]) : zero);
            b_off[i] += b_rows >> i & 1 ? WG_K : 0;
        }
        c0 += WG_K;
        if (c0 == d.cg) {  // uniform: the next slice starts the next tap
            c0 = 0;
            if (++tx == d.kw) tx = 0, ++ty;
            new_tap();
        }
    };

    int wg = tid / 128;  // this warpgroup's 64 rows of the tile
    float acc[32];
    #pragma unroll
    for (int i = 0; i < 32; ++i) acc[i] = 0.0f;
    int slices = (k_hi - k_lo) / WG_K;
    for (int s = 0; s < slices; ++s) {
        unsigned char* st = smem + (s & 1) * WG_STAGE_BYTES;
        stage(st);  // its last reader, slice s - 2, finished before the barrier ending s - 1
        __syncthreads();
        dv_fence_proxy_async();
        dv_wgmma_fence();
        #pragma unroll
        for (int ks = 0; ks < 4; ++ks)
            dv_wgmma_m64n64k16_bf16(acc, dv_wgmma_desc_sw128(st + wg * (WG_A_BYTES / 2) + 32 * ks),
                                    dv_wgmma_desc_sw128(st + WG_A_BYTES + 32 * ks), s > 0 || ks > 0);
        dv_wgmma_commit();
        dv_wgmma_wait<1>();  // slice s - 1 done here ...
        __syncthreads();     // ... and in the other warpgroup: its buffer is free
    }
    dv_wgmma_wait<0>();
    dv_wgmma_check_drained();

    int lt = tid % 128, wq = lt / 32, gq = lt % 32 / 4, q = lt % 4;
    #pragma unroll
    for (int j = 0; j < 8; ++j)
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            int m = m0 + 64 * wg + 16 * wq + gq + 8 * (i / 2), n = n0 + 8 * j + 2 * q + i % 2;
            if (m < m_total && n < n_total) dv_conv_store(y, bias, residual, m, g * d.og + n, d.cout, y_stride, y_off, acc[4 * j + i], act);
        }
}

DV_REGISTER_KERNELS(conv2d_fwd_bf16_wgmma_f32)
