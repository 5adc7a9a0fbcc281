// Reductions on NHWC f32 tensors.
//
// Names ({op}_{variant}_f32, see common.cuh):
//   channel_sum_fwd     y[b, c] = scale * sum_r x[b, r, c]   (spatial mean: scale 1/hw;
//                       conv / linear bias gradients: b = 1, scale 1)
//   channel_absmax_fwd  y[p] = max_c |x[p, c]|               (saliency maps)
//   softmax_fwd         row-wise softmax of [rows, cols]     (class probabilities)
#include "common.cuh"

// channel_sum: block = CSUM_CHANNELS consecutive channels of one b (coalesced NHWC reads) x
// CSUM_ROWS threads striding over r, combined in shared memory in a fixed order.
#define CSUM_CHANNELS 32  // one warp across channels
#define CSUM_ROWS 8       // 256 threads per block
extern "C" __global__ void channel_sum_fwd_f32(const float* x, float* y, long long batch,
                                               long long rows, long long c, float scale) {
    __shared__ float smem_part[CSUM_ROWS][CSUM_CHANNELS];
    idx_t tiles = (c + CSUM_CHANNELS - 1) / CSUM_CHANNELS;
    idx_t b = blockIdx.x / tiles;
    idx_t ch = (blockIdx.x % tiles) * CSUM_CHANNELS + threadIdx.x;
    if (b >= batch) return;  // uniform per block
    float acc = 0.0f;
    if (ch < c)
        for (idx_t r = threadIdx.y; r < rows; r += CSUM_ROWS) acc += x[(b * rows + r) * c + ch];
    smem_part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        float s = 0.0f;
        for (int i = 0; i < CSUM_ROWS; ++i) s += smem_part[i][threadIdx.x];
        y[b * c + ch] = s * scale;
    }
}

extern "C" __global__ void channel_absmax_fwd_f32(const float* x, float* y, long long pixels, long long c) {
    for (idx_t p = dv_tid(); p < pixels; p += dv_stride()) {
        float m = 0.0f;
        for (idx_t ch = 0; ch < c; ++ch) m = fmaxf(m, fabsf(x[p * c + ch]));
        y[p] = m;
    }
}

// One block per row; SOFTMAX_THREADS threads stride over the columns.
#define SOFTMAX_THREADS 256  // 8 warps: enough to stream a 1000-class row
extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, long long rows, long long cols) {
    __shared__ float smem_red[SOFTMAX_THREADS / 32];
    idx_t r = blockIdx.x;
    if (r >= rows) return;  // uniform per block
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

    float m = -INFINITY;
    for (idx_t j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) m = fmaxf(m, xr[j]);
    m = dv_warp_max(m);
    if (lane == 0) smem_red[warp] = m;
    __syncthreads();
    m = smem_red[0];
    for (int i = 1; i < SOFTMAX_THREADS / 32; ++i) m = fmaxf(m, smem_red[i]);
    __syncthreads();  // everyone has read smem_red before it is reused

    float s = 0.0f;
    for (idx_t j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) s += expf(xr[j] - m);
    s = dv_warp_sum(s);
    if (lane == 0) smem_red[warp] = s;
    __syncthreads();
    s = 0.0f;
    for (int i = 0; i < SOFTMAX_THREADS / 32; ++i) s += smem_red[i];

    float inv = 1.0f / s;
    for (idx_t j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) yr[j] = expf(xr[j] - m) * inv;
}

DV_REGISTER_KERNELS(channel_sum_fwd_f32, channel_absmax_fwd_f32, softmax_fwd_f32)
