// Fully connected layers: x [n, in], w [out, in] (PyTorch's layout), b [out]. One tiled GEMM
// (dv_linear_gemm) with strided operands serves all three products; the bias gradient is
// reduce.cu's channel_sum over gy.
//
// Names ({op}_{variant}_f32, see common.cuh):
//   linear_fwd         y = x·wᵀ (+ b)
//   linear_bwd_data    gx = gy·w
//   linear_bwd_weight  gw = gyᵀ·x
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

DV_REGISTER_KERNELS(linear_fwd_f32, linear_bwd_data_f32, linear_bwd_weight_f32)
