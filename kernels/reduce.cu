// Reductions on NHWC f32 tensors.
//
// Names ({op}_{variant}_f32, see common.cuh):
//   channel_sum_fwd     y[b, c] = scale * sum_r x[b, r, c]   (spatial mean: scale 1/hw;
//                       conv / linear bias gradients: b = 1, scale 1)
//   channel_absmax_fwd  y[p] = max_c |x[p, c]|               (saliency maps)
//   softmax_fwd         row-wise softmax of [rows, cols]     (class probabilities)
//   weighted_channel_sum_fwd  y[b, p] = (relu) sum_c w[b, c] x[b, p, c]   (CAM / Grad-CAM maps)
//   item_reduce_half_sum_sq   y[b] = 1/2 sum_j x[b, j]^2   (feature-visualisation objectives,
//   item_reduce_mean_abs      y[b] = mean_j |x[b, j]|       regularisers); deterministic: one
//                             block per item, a fixed-shape tree, no atomics
//   topk_fwd            per row of [rows, cols], the k largest values and their indices,
//                       descending, ties to the lower index (predictions, top-5 labels)
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

// weighted_channel_sum: one warp per pixel row (lanes stride over c, then a shuffle sum), so a
// warp reads one contiguous NHWC row; warps stride over the batch * hw rows.
#define WCS_WARPS 8  // 256 threads per block
extern "C" __global__ void weighted_channel_sum_fwd_f32(const float* x, const float* w, float* y,
                                                        long long batch, long long hw,
                                                        long long c, int relu) {
    idx_t rows = batch * hw;
    idx_t warp = ((idx_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    idx_t warps = dv_stride() / 32;
    int lane = threadIdx.x % 32;
    for (idx_t r = warp; r < rows; r += warps) {  // uniform per warp: every lane shuffles
        const float* xr = x + r * c;
        const float* wb = w + (r / hw) * c;
        float acc = 0.0f;
        for (idx_t ch = lane; ch < c; ch += 32) acc += wb[ch] * xr[ch];
        acc = dv_warp_sum(acc);
        if (lane == 0) y[r] = relu ? dv_act(acc, DV_ACT_RELU) : acc;
    }
}

// item_reduce: block b reduces item b. Each thread sums a fixed strided subset in order, then a
// shared-memory tree halves IR_THREADS partials: the same additions in the same order on every
// run and under every schedule.
#define IR_THREADS 256  // 8 warps; a power of two for the tree
enum { IR_HALF_SUM_SQ = 0, IR_MEAN_ABS = 1 };
__device__ __forceinline__ void item_reduce(const float* x, float* y, idx_t batch,
                                            idx_t per_item, int mode) {
    __shared__ float smem_part[IR_THREADS];
    for (idx_t b = blockIdx.x; b < batch; b += gridDim.x) {  // uniform per block
        const float* xb = x + b * per_item;
        float acc = 0.0f;
        for (idx_t j = threadIdx.x; j < per_item; j += IR_THREADS)
            acc += mode == IR_HALF_SUM_SQ ? xb[j] * xb[j] : fabsf(xb[j]);
        smem_part[threadIdx.x] = acc;
        __syncthreads();
        for (int s = IR_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) smem_part[threadIdx.x] += smem_part[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            float sum = smem_part[0];
            y[b] = mode == IR_HALF_SUM_SQ ? 0.5f * sum : (per_item > 0 ? sum / (float)per_item : 0.0f);
        }
        __syncthreads();  // thread 0 has read smem_part[0] before the next item overwrites it
    }
}
extern "C" __global__ void item_reduce_half_sum_sq_f32(const float* x, float* y, long long batch,
                                                       long long per_item) {
    item_reduce(x, y, batch, per_item, IR_HALF_SUM_SQ);
}
extern "C" __global__ void item_reduce_mean_abs_f32(const float* x, float* y, long long batch,
                                                    long long per_item) {
    item_reduce(x, y, batch, per_item, IR_MEAN_ABS);
}

// topk: one block per row, k rounds; round t finds the best element ranked after the one round
// t-1 chose (ranking below), so no element is marked and a row is read k times (k <= TOPK_MAX_K,
// cheap next to the net that made the logits). Each round: every thread scans a fixed strided
// subset, a warp shuffle combines lanes, lane 0 of each warp posts to shared memory, and every
// thread combines the warps in the same order, so all threads agree on the pick.
#define TOPK_THREADS 256  // 8 warps: a 1000-class row is 4 reads per thread per round
#define TOPK_MAX_K 64     // k rounds over the row: beyond ~64 a sort would win

// True when (va, ia) ranks before (vb, ib): NaN above every number (as torch.topk), then the
// larger value, then the lower index (ib < 0: no element, ranked last).
__device__ __forceinline__ bool dv_topk_before(float va, idx_t ia, float vb, idx_t ib) {
    if (ib < 0) return ia >= 0;
    if (ia < 0) return false;
    bool na = isnan(va), nb = isnan(vb);
    if (na != nb) return na;
    if (!na && va != vb) return va > vb;
    return ia < ib;
}

extern "C" __global__ void topk_fwd_f32(const float* x, float* values, int* indices, long long rows,
                                        long long cols, long long k) {
    __shared__ float smem_v[TOPK_THREADS / 32];
    __shared__ long long smem_i[TOPK_THREADS / 32];
    idx_t r = blockIdx.x;
    if (r >= rows) return;  // uniform per block
    const float* xr = x + r * cols;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float prev_v = 0.0f;
    idx_t prev_i = -1;  // none yet: every element is eligible
    for (idx_t t = 0; t < k; ++t) {
        float best_v = 0.0f;
        idx_t best_i = -1;
        for (idx_t j = threadIdx.x; j < cols; j += TOPK_THREADS) {
            float v = xr[j];
            bool eligible = prev_i < 0 || dv_topk_before(prev_v, prev_i, v, j);
            if (eligible && dv_topk_before(v, j, best_v, best_i)) best_v = v, best_i = j;
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
            idx_t oi = __shfl_xor_sync(0xffffffffu, best_i, o);
            if (dv_topk_before(ov, oi, best_v, best_i)) best_v = ov, best_i = oi;
        }
        if (lane == 0) smem_v[warp] = best_v, smem_i[warp] = best_i;
        __syncthreads();
        best_v = smem_v[0], best_i = smem_i[0];
        for (int i = 1; i < TOPK_THREADS / 32; ++i)
            if (dv_topk_before(smem_v[i], smem_i[i], best_v, best_i)) best_v = smem_v[i], best_i = smem_i[i];
        __syncthreads();  // everyone has read smem_* before the next round overwrites them
        if (threadIdx.x == 0) values[r * k + t] = best_v, indices[r * k + t] = (int)best_i;
        prev_v = best_v, prev_i = best_i;
    }
}

DV_REGISTER_KERNELS(channel_sum_fwd_f32, channel_absmax_fwd_f32, softmax_fwd_f32,
                    weighted_channel_sum_fwd_f32, item_reduce_half_sum_sq_f32,
                    item_reduce_mean_abs_f32, topk_fwd_f32)
