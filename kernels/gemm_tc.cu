// Tensor-core GEMM and the probe that pins down the mma / ldmatrix fragment layouts
// (tensorcore.cuh) on the real GPU and in the CPU emulation alike.
//
// Names ({op}_{variant}_{dtype}, see common.cuh):
//   gemm_tf32_f32    C[m, n] = A[m, k]·B[k, n] (+ C), row-major f32, TF32 tensor cores
//                    (inputs rounded to 10 mantissa bits, f32 accumulation)
//   mma_probe_bf16   D = A·B + C for one 16x16 bf16 A tile (through ldmatrix.x4), one 16x8 bf16
//                    B tile and a 16x8 f32 C: one warp, one mma.m16n8k16 (tests/tensorcore.rs)
//
// Versions of gemm_tf32_f32:
//   1 (this) one stage: the block's A and B tiles arrive by cp.async (scalar loads on ragged
//            edges or unaligned rows), then each warp runs TILE_K / 8 mma.m16n8k8 on its 16x8.
#include "common.cuh"
#include "tensorcore.cuh"

#define MMA_M 16  // the mma.m16n8k8 instruction shape
#define MMA_N 8
#define MMA_K 8
#define WARPS_M 2                      // 2x2 warps per block: 4 warps share each staged tile
#define WARPS_N 2
#define GEMM_THREADS (32 * WARPS_M * WARPS_N)
#define TILE_M (MMA_M * WARPS_M)       // 32 rows of C per block
#define TILE_N (MMA_N * WARPS_N)       // 16 columns of C per block
#define TILE_K 32                      // K staged 32 at a time: 4 mma steps per barrier pair
#define SMEM_A_STRIDE (TILE_K + 4)     // +4 floats: the A fragment's 8 rows x 4 columns hit 32 banks; rows stay 16 B aligned
#define SMEM_B_STRIDE (TILE_N + 8)     // +8 floats: the B fragment's 4 rows x 8 columns hit 32 banks; rows stay 16 B aligned
#define VEC 4                          // floats per 16-byte cp.async

// Stage rows [r0, r0 + rows) x cols [c0, c0 + cols) of the row-major [r_total, c_total] matrix g
// into s (row stride `ss` floats), zero outside the matrix. Whole 16-byte chunks go by cp.async
// when the source rows are 16-byte aligned (`vec`); ragged chunks are loaded element by element.
__device__ __forceinline__ void dv_stage_tile(float* s, int ss, const float* g, idx_t r0, idx_t c0, idx_t r_total,
                                              idx_t c_total, int rows, int cols, bool vec) {
    int chunks_per_row = cols / VEC;
    for (int ch = threadIdx.x; ch < rows * chunks_per_row; ch += GEMM_THREADS) {
        int r = ch / chunks_per_row, c = (ch % chunks_per_row) * VEC;
        idx_t gr = r0 + r, gc = c0 + c;
        float* dst = s + r * ss + c;
        if (vec && gr < r_total && gc + VEC <= c_total) {
            dv_cp_async_16(dst, g + gr * c_total + gc);
        } else {
            for (int i = 0; i < VEC; ++i) dst[i] = (gr < r_total && gc + i < c_total) ? g[gr * c_total + gc + i] : 0.0f;
        }
    }
}

// Block (bx, by) computes C rows [bx*TILE_M, +TILE_M) x cols [by*TILE_N, +TILE_N); warp w the
// 16x8 at (w / WARPS_N, w % WARPS_N) of it. Bounds: a block past the matrix returns (whole block,
// before any barrier); loads outside it read zero and stores are checked per element.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
gemm_tf32_f32(const float* a, const float* b, float* c, long long m, long long n, long long k, int accumulate) {
    __shared__ __align__(16) float smem_a[TILE_M * SMEM_A_STRIDE];
    __shared__ __align__(16) float smem_b[TILE_K * SMEM_B_STRIDE];
    idx_t m0 = (idx_t)blockIdx.x * TILE_M, n0 = (idx_t)blockIdx.y * TILE_N;
    if (m0 >= m || n0 >= n) return;

    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int g = lane >> 2, t = lane % 4;  // the fragment layouts' groupID, threadID_in_group
    int wm = (warp / WARPS_N) * MMA_M, wn = (warp % WARPS_N) * MMA_N;  // the warp's tile in the block's
    // the lane's four C elements (C/D fragment): (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
    idx_t rows[2] = {m0 + wm + g, m0 + wm + g + 8}, col0 = n0 + wn + 2 * t;
    float acc[4];
    for (int i = 0; i < 4; ++i) {
        idx_t r = rows[i >> 1], cc = col0 + (i & 1);
        acc[i] = (accumulate && r < m && cc < n) ? c[r * n + cc] : 0.0f;
    }

    bool vec_a = k % VEC == 0 && ((unsigned long long)a % 16) == 0;
    bool vec_b = n % VEC == 0 && ((unsigned long long)b % 16) == 0;
    for (idx_t k0 = 0; k0 < k; k0 += TILE_K) {
        dv_stage_tile(smem_a, SMEM_A_STRIDE, a, m0, k0, m, k, TILE_M, TILE_K, vec_a);
        dv_stage_tile(smem_b, SMEM_B_STRIDE, b, k0, n0, k, n, TILE_K, TILE_N, vec_b);
        dv_cp_async_commit();
        dv_cp_async_wait_all();
        __syncthreads();
        for (int kk = 0; kk < TILE_K; kk += MMA_K) {
            const float* sa = smem_a + wm * SMEM_A_STRIDE + kk;
            const float* sb = smem_b + kk * SMEM_B_STRIDE + wn;
            unsigned fa[4] = {dv_cvt_rna_tf32(sa[g * SMEM_A_STRIDE + t]), dv_cvt_rna_tf32(sa[(g + 8) * SMEM_A_STRIDE + t]),
                              dv_cvt_rna_tf32(sa[g * SMEM_A_STRIDE + t + 4]),
                              dv_cvt_rna_tf32(sa[(g + 8) * SMEM_A_STRIDE + t + 4])};
            unsigned fb[2] = {dv_cvt_rna_tf32(sb[t * SMEM_B_STRIDE + g]), dv_cvt_rna_tf32(sb[(t + 4) * SMEM_B_STRIDE + g])};
            dv_mma_m16n8k8_tf32_f32(acc, fa, fb, acc);
        }
        __syncthreads();  // the next stage overwrites the tiles
    }
    for (int i = 0; i < 4; ++i) {
        idx_t r = rows[i >> 1], cc = col0 + (i & 1);
        if (r < m && cc < n) c[r * n + cc] = acc[i];
    }
}

// One warp (blockDim 32): a [16, 16] and b [16, 8] bf16 (raw 16-bit patterns, row-major), c and
// d [16, 8] f32 row-major. A goes through shared memory and dv_ldmatrix_x4, B is gathered from
// global memory in the B-fragment layout. Bounds: the launch is exactly one warp (checked).
extern "C" __global__ void mma_probe_bf16(const unsigned short* a, const unsigned short* b, const float* c, float* d) {
    __shared__ __align__(16) unsigned short smem_a[16 * 16];
    if (blockIdx.x != 0 || threadIdx.x >= 32) return;
    int lane = threadIdx.x, g = lane >> 2, t = lane % 4;
    for (int i = lane; i < 16 * 16; i += 32) smem_a[i] = a[i];
    __syncthreads();
    // lane l: row l % 16, column half l / 16 -> matrices 0..3 = (rows 0-7 | 8-15) x (cols 0-7 | 8-15),
    // so r[0..3] are exactly the m16n8k16 A fragment a[0..3]
    unsigned fa[4];
    dv_ldmatrix_x4(fa, &smem_a[(lane % 16) * 16 + (lane / 16) * 8]);
    unsigned fb[2];
    for (int h = 0; h < 2; ++h) {
        int k = 2 * t + 8 * h;
        fb[h] = (unsigned)b[k * 8 + g] | ((unsigned)b[(k + 1) * 8 + g] << 16);
    }
    float fc[4], fd[4];
    for (int i = 0; i < 4; ++i) fc[i] = c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    dv_mma_m16n8k16_bf16_f32(fd, fa, fb, fc);
    for (int i = 0; i < 4; ++i) d[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = fd[i];
}

DV_REGISTER_KERNELS(gemm_tf32_f32, mma_probe_bf16)
