// Fully connected layers: x [n, in], w [out, in] (PyTorch's layout), b [out]. One tiled GEMM
// (dv_linear_gemm) with strided operands serves all three products; the bias gradient is
// reduce.cu's channel_sum over gy.
//
// Names ({op}_{variant}_f32, see common.cuh):
//   linear_fwd         y = x·wᵀ (+ b)
//   linear_bwd_data    gx = gy·w
//   linear_bwd_weight  gw = gyᵀ·x
//   linear_fwd_rows / linear_bwd_data_rows   the first two for at most ROWS_MAX rows (a batch
//                      of 1 to 8 at a classifier head), where a 16x16 tile would be 15/16 padding
//                      and its grid a few dozen blocks each waiting on one load per K step:
//                      the weights read once, coalesced, by many warps.
#include "common.cuh"

#define LIN_TILE 16  // 16x16 outputs per block, one per thread; K staged 16 at a time

// C[m, n] = sum_k A[m*sam + k*sak] * B[k*sbk + n*sbn] (+ bias[n]); C row-major [M, N].
__device__ __forceinline__ void dv_linear_gemm(const float* a, idx_t sam, idx_t sak, const float* b,
                                               idx_t sbk, idx_t sbn, const float* bias, float* c,
                                               idx_t m_total, idx_t n_total, idx_t k_total) {
    __shared__ float smem_a[LIN_TILE][LIN_TILE + 1];
    __shared__ float smem_b[LIN_TILE][LIN_TILE + 1];
    idx_t m = (idx_t)blockIdx.y * LIN_TILE + threadIdx.y;
    idx_t n = (idx_t)blockIdx.x * LIN_TILE + threadIdx.x;
    float acc = 0.0f;
    for (idx_t k0 = 0; k0 < k_total; k0 += LIN_TILE) {
        idx_t ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
        smem_a[threadIdx.y][threadIdx.x] = (m < m_total && ka < k_total) ? a[m * sam + ka * sak] : 0.0f;
        smem_b[threadIdx.y][threadIdx.x] = (kb < k_total && n < n_total) ? b[kb * sbk + n * sbn] : 0.0f;
        __syncthreads();
        for (int kk = 0; kk < LIN_TILE; ++kk) acc += smem_a[threadIdx.y][kk] * smem_b[kk][threadIdx.x];
        __syncthreads();
    }
    if (m < m_total && n < n_total) c[m * n_total + n] = acc + (bias ? bias[n] : 0.0f);
}

// Bounds: every thread takes part in the shared-memory loop; dv_linear_gemm checks m, n
// before its one store.
extern "C" __global__ void linear_fwd_f32(const float* x, const float* w, const float* b, float* y,
                                          long long n, long long in, long long out, int has_bias) {
    dv_linear_gemm(x, in, 1, w, 1, in, has_bias ? b : nullptr, y, n, out, in);
}

extern "C" __global__ void linear_bwd_data_f32(const float* gy, const float* w, float* gx,
                                               long long n, long long in, long long out) {
    dv_linear_gemm(gy, out, 1, w, in, 1, nullptr, gx, n, in, out);
}

extern "C" __global__ void linear_bwd_weight_f32(const float* x, const float* gy, float* gw,
                                                 long long n, long long in, long long out) {
    dv_linear_gemm(gy, 1, out, x, in, 1, nullptr, gw, out, in, n);
}

#define ROWS_MAX 8     // rows (batch items) the _rows kernels take: linear.rs ROWS_MAX
#define ROWS_WARPS 8   // warps per block of linear_bwd_data_rows, splitting the outputs

// y = x·wᵀ (+ b) for n <= ROWS_MAX: one warp per output o (whole warps: blockDim a multiple of
// 32, the grid rounded up), the lanes striding along the row w[o, :] (coalesced) with n partial
// sums each, then a butterfly sum; lane 0 stores the n values.
extern "C" __global__ void linear_fwd_rows_f32(const float* x, const float* w, const float* b, float* y, long long n,
                                               long long in, long long out, int has_bias) {
    idx_t o = dv_tid() / 32;
    int lane = threadIdx.x % 32;
    if (o >= out) return;  // uniform per warp
    float acc[ROWS_MAX] = {};
    const float* wr = w + o * in;
    #pragma unroll 4
    for (idx_t k = lane; k < in; k += 32) {
        float wv = wr[k];
        #pragma unroll
        for (int r = 0; r < ROWS_MAX; ++r)
            if (r < n) acc[r] += x[r * in + k] * wv;
    }
    #pragma unroll
    for (int r = 0; r < ROWS_MAX; ++r) {
        float v = acc[r];
        for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
        if (lane == 0 && r < n) y[r * out + o] = v + (has_bias ? b[o] : 0.0f);
    }
}

// gx = gy·w for n <= ROWS_MAX: a block per 32 consecutive inputs k (its lanes), its ROWS_WARPS
// warps splitting the outputs o (warp j takes o = j, j + ROWS_WARPS, ...: each reads rows of w
// 32 floats wide, coalesced); the warps' partial sums are added in warp order in shared memory
// (the same order every run).
extern "C" __global__ void linear_bwd_data_rows_f32(const float* gy, const float* w, float* gx, long long n, long long in,
                                                    long long out) {
    __shared__ float part[ROWS_WARPS][ROWS_MAX][32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    idx_t k = (idx_t)blockIdx.x * 32 + lane;
    float acc[ROWS_MAX] = {};
    if (k < in) {
        for (idx_t o = warp; o < out; o += ROWS_WARPS) {
            float wv = w[o * in + k];
            #pragma unroll
            for (int r = 0; r < ROWS_MAX; ++r)
                if (r < n) acc[r] += gy[r * out + o] * wv;
        }
    }
    #pragma unroll
    for (int r = 0; r < ROWS_MAX; ++r) part[warp][r][lane] = acc[r];
    __syncthreads();
    if (warp == 0 && k < in) {
        #pragma unroll
        for (int r = 0; r < ROWS_MAX; ++r) {
            if (r >= n) break;
            float v = 0.0f;
            for (int j = 0; j < ROWS_WARPS; ++j) v += part[j][r][lane];
            gx[r * in + k] = v;
        }
    }
}

DV_REGISTER_KERNELS(linear_fwd_f32, linear_bwd_data_f32, linear_bwd_weight_f32, linear_fwd_rows_f32, linear_bwd_data_rows_f32)
