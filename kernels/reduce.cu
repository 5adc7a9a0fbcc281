// Reductions on NHWC f32 tensors.
//
// Names ({op}_{variant}_f32, see common.cuh):
//   channel_sum_fwd     y[b, c] = scale * sum_r x[b, r, c]   (spatial mean: scale 1/hw;
//                       conv / linear bias gradients: b = 1, scale 1)
//   softmax_fwd         row-wise softmax of [rows, cols]     (class probabilities)
//   topk_fwd            per row of [rows, cols], the k largest values and their indices,
//                       descending, ties to the lower index (predictions, top-5 labels)
//   reduce_thread / reduce_block   the Backend's generic `Reduce` (sum, mean, max, min,
//                       argmax) along any axes: one thread per output when the reduced count is
//                       small, else one block per output with a fixed tree (deterministic)
//   reduce_percentile   numpy's exact linear percentile along any axes (Reduce::Percentile): two
//                       radix selections of the order statistics around the rank, then numpy's
//                       f32 interpolation
//   reduce_quantile     the q-quantile along any axes by the histogram rule of
//                       src/imageio/colormap.rs `clip_threshold` (heat-map clipping)
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

// ---- generic reductions ------------------------------------------------------------------------
// x is addressed through two 4-dim descriptors: the output dims (o0..o3 with o3 fastest, y dense
// over them in that order; strides so0..so3 into x) and the reduced dims (r0..r3 in logical
// order, r3 fastest; strides sr0..sr3 into x). ArgMax's result is the row-major position in the
// reduced dims, as a float (exact below 2^24).

// Reduce codes, as src/backend/cuda/reduce.rs `reduce_code` passes them.
enum DvReduce { DV_R_SUM = 0, DV_R_MEAN = 1, DV_R_MAX = 2, DV_R_MIN = 3, DV_R_ARGMAX = 4 };

__device__ __forceinline__ idx_t dv_offset4(idx_t i, idx_t d1, idx_t d2, idx_t d3, idx_t s0, idx_t s1,
                                            idx_t s2, idx_t s3) {
    idx_t i3 = i % d3, t = i / d3;
    idx_t i2 = t % d2;
    t /= d2;
    idx_t i1 = t % d1, i0 = t / d1;
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3;
}

// True when (v, i) ranks before (m, j) for max (or min): NaN first (as torch.max / argmax), then
// the larger (smaller) value, then the lower index; an index < 0 is "nothing yet".
__device__ __forceinline__ bool dv_ranks_before(float v, idx_t i, float m, idx_t j, bool is_min) {
    if (j < 0) return i >= 0;
    if (i < 0) return false;
    bool nv = isnan(v), nm = isnan(m);
    if (nv != nm) return nv;
    if (!nv && v != m) return is_min ? v < m : v > m;
    return i < j;
}

// Take element (v, r) into a running (acc, best): a sum, or the max / min with its position.
__device__ __forceinline__ void dv_reduce_take(float v, idx_t r, bool sum, bool is_min, float& acc, idx_t& best) {
    if (sum) {
        acc += v;
    } else if (dv_ranks_before(v, r, acc, best, is_min)) {
        acc = v;
        best = r;
    }
}

#define DV_REDUCE_PARAMS                                                                                   \
    const float *x, float *y, long long n_out, long long n_red, long long o1, long long o2, long long o3, \
        long long so0, long long so1, long long so2, long long so3, long long r1, long long r2,           \
        long long r3, long long sr0, long long sr1, long long sr2, long long sr3

// One thread per output, the reduced elements in order.
extern "C" __global__ void reduce_thread_f32(DV_REDUCE_PARAMS, int op) {
    const bool sum = op == DV_R_SUM || op == DV_R_MEAN, is_min = op == DV_R_MIN;
    for (idx_t o = dv_tid(); o < n_out; o += dv_stride()) {
        const float* xo = x + dv_offset4(o, o1, o2, o3, so0, so1, so2, so3);
        float acc = 0.0f;
        idx_t best = -1;
        for (idx_t r = 0; r < n_red; ++r) {
            dv_reduce_take(xo[dv_offset4(r, r1, r2, r3, sr0, sr1, sr2, sr3)], r, sum, is_min, acc, best);
        }
        y[o] = op == DV_R_MEAN ? acc / (float)n_red : (op == DV_R_ARGMAX ? (float)best : acc);
    }
}

// One block per output: each thread a fixed strided subset, then a shared-memory tree in a fixed
// order (the same bits on every run).
#define RB_THREADS 256  // 8 warps; a power of two for the tree
extern "C" __global__ void reduce_block_f32(DV_REDUCE_PARAMS, int op) {
    __shared__ float smem_v[RB_THREADS];
    __shared__ idx_t smem_i[RB_THREADS];
    const bool sum = op == DV_R_SUM || op == DV_R_MEAN, is_min = op == DV_R_MIN;
    for (idx_t o = blockIdx.x; o < n_out; o += gridDim.x) {  // uniform per block
        const float* xo = x + dv_offset4(o, o1, o2, o3, so0, so1, so2, so3);
        float acc = 0.0f;
        idx_t best = -1;
        for (idx_t r = threadIdx.x; r < n_red; r += RB_THREADS) {
            dv_reduce_take(xo[dv_offset4(r, r1, r2, r3, sr0, sr1, sr2, sr3)], r, sum, is_min, acc, best);
        }
        smem_v[threadIdx.x] = acc;
        smem_i[threadIdx.x] = best;
        __syncthreads();
        for (int s = RB_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s)
                dv_reduce_take(smem_v[threadIdx.x + s], smem_i[threadIdx.x + s], sum, is_min, smem_v[threadIdx.x], smem_i[threadIdx.x]);
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            float v = smem_v[0];
            y[o] = op == DV_R_MEAN ? v / (float)n_red : (op == DV_R_ARGMAX ? (float)smem_i[0] : v);
        }
        __syncthreads();  // thread 0 has read the tree before the next output overwrites it
    }
}

// The q-quantile of the finite values of each output's reduced set, as colormap.rs
// `clip_threshold` defines it: a QB_BINS-bin histogram over [lo, hi] (the finite min and max),
// the upper edge of the first bin whose cumulative count reaches ceil(q * count), when it falls
// strictly inside (lo, hi); else hi. NaN when there is no finite value. One block per output:
// the range by a fixed tree, the histogram by int atomics (exact counts in any order), the walk by
// thread 0 over QB_THREADS partial sums then the bins of one chunk. f64 and explicit _rn
// arithmetic, in the host's order.
#ifdef DV_EMU
__device__ __forceinline__ double dv_dmul_rn(double a, double b) { return a * b; }
__device__ __forceinline__ double dv_dadd_rn(double a, double b) { return a + b; }
#else
__device__ __forceinline__ double dv_dmul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double dv_dadd_rn(double a, double b) { return __dadd_rn(a, b); }
#endif
#define QB_BINS 4096    // CLIP_BINS in src/imageio/colormap.rs
#define QB_THREADS 256  // QB_BINS / QB_THREADS bins per partial
extern "C" __global__ void reduce_quantile_f32(DV_REDUCE_PARAMS, float q) {
    __shared__ unsigned int smem_hist[QB_BINS];
    __shared__ unsigned long long smem_part[QB_THREADS];
    __shared__ float smem_lo[QB_THREADS];
    __shared__ float smem_hi[QB_THREADS];
    for (idx_t o = blockIdx.x; o < n_out; o += gridDim.x) {  // uniform per block
        const float* xo = x + dv_offset4(o, o1, o2, o3, so0, so1, so2, so3);
        float lo_t = INFINITY, hi_t = -INFINITY;
        for (idx_t r = threadIdx.x; r < n_red; r += QB_THREADS) {
            float v = xo[dv_offset4(r, r1, r2, r3, sr0, sr1, sr2, sr3)];
            if (isfinite(v)) {
                lo_t = fminf(lo_t, v);
                hi_t = fmaxf(hi_t, v);
            }
        }
        smem_lo[threadIdx.x] = lo_t;
        smem_hi[threadIdx.x] = hi_t;
        for (int i = threadIdx.x; i < QB_BINS; i += QB_THREADS) smem_hist[i] = 0u;
        __syncthreads();
        for (int s = QB_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                smem_lo[threadIdx.x] = fminf(smem_lo[threadIdx.x], smem_lo[threadIdx.x + s]);
                smem_hi[threadIdx.x] = fmaxf(smem_hi[threadIdx.x], smem_hi[threadIdx.x + s]);
            }
            __syncthreads();
        }
        const double lo = (double)smem_lo[0], hi = (double)smem_hi[0];
        const double span = hi - lo;  // -inf when there is no finite value
        if (span > 0.0) {             // uniform per block
            for (idx_t r = threadIdx.x; r < n_red; r += QB_THREADS) {
                float v = xo[dv_offset4(r, r1, r2, r3, sr0, sr1, sr2, sr3)];
                if (isfinite(v)) {
                    double t = dv_dmul_rn(((double)v - lo) / span, (double)QB_BINS);
                    int bin = (int)t;  // t in [0, QB_BINS]: truncation, as Rust's `as usize`
                    bin = bin < QB_BINS - 1 ? bin : QB_BINS - 1;
                    atomicAdd(&smem_hist[bin], 1u);
                }
            }
            __syncthreads();
            {
                const int per = QB_BINS / QB_THREADS;
                unsigned long long s = 0;
                for (int i = 0; i < per; ++i) s += smem_hist[threadIdx.x * per + i];
                smem_part[threadIdx.x] = s;
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            float result = lo <= hi ? (float)hi : NAN;
            if (span > 0.0) {
                const int per = QB_BINS / QB_THREADS;
                unsigned long long count = 0;
                // serial walks: not unrolled (unrolled, they hold every partial in a register)
#pragma unroll 1
                for (int i = 0; i < QB_THREADS; ++i) count += smem_part[i];
                double kd = ceil(dv_dmul_rn((double)q, (double)count));
                kd = fmin(fmax(kd, 1.0), (double)count);
                unsigned long long k = (unsigned long long)kd;
                unsigned long long acc = 0;
                int c = QB_THREADS - 1;
#pragma unroll 1
                for (int i = 0; i < QB_THREADS; ++i) {
                    if (acc + smem_part[i] >= k) {
                        c = i;
                        break;
                    }
                    acc += smem_part[i];
                }
                int bin = c * per + per - 1;
#pragma unroll 1
                for (int i = c * per; i < (c + 1) * per; ++i) {
                    acc += smem_hist[i];
                    if (acc >= k) {
                        bin = i;
                        break;
                    }
                }
                if (bin < QB_BINS - 1) {  // the last bin's edge is hi
                    float edge = (float)dv_dadd_rn(lo, dv_dmul_rn(span, (double)(bin + 1) / (double)QB_BINS));
                    if ((double)edge > lo && (double)edge < hi) result = edge;
                }
            }
            y[o] = result;
        }
        __syncthreads();  // thread 0 has read the histogram before the next output clears it
    }
}

// ---- exact percentile --------------------------------------------------------------------------
// numpy's np.percentile(row, q) ("linear", a float32 row, q a Python float; src/backend/mod.rs
// Reduce::Percentile): i = (n - 1) * (q / 100) in f64, a and b the values of ranks floor(i) and
// min(floor(i) + 1, n - 1), t = i - floor(i), d = b - a in f32, then a + d * t (t < 0.5) or
// b - d * (1 - t) in f32. NaN when the row holds a NaN. One block per output; each order statistic
// by a radix selection over the values' order-preserving keys, PB_DIGIT_BITS a pass: a histogram
// of the digit among the elements that share the prefix chosen so far (int atomics: exact counts in
// any order), then thread 0 walks the bins to the one that holds the rank. The row is read
// 2 * 32 / PB_DIGIT_BITS times (8 for 8-bit digits): cheap next to the network that made it. A
// row of at most PB_SMALL elements is ranked by counting instead, by thread 0 alone (no barrier),
// where the passes' barriers would cost more than the work.
#define PB_DIGIT_BITS 8                   // 4 passes of a 256-bin shared histogram per statistic
#define PB_BINS (1 << PB_DIGIT_BITS)
#define PB_THREADS 256                    // one bin per thread when clearing
#define PB_SMALL 64                       // up to this many elements, thread 0 ranks them by counting
                                          // (n^2 compares, no passes: far fewer block barriers)

// The key of a non-NaN float: unsigned order = float order (-0 just below +0).
__device__ __forceinline__ unsigned dv_order_key(float v) {
    unsigned u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float dv_order_value(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// The key of the element of rank k (0-based, NaNs excluded) of xo's n_red elements; every thread
// of the block calls it and gets the answer. smem_* are the caller's shared buffers.
__device__ __forceinline__ unsigned dv_select_rank(const float* xo, long long n_red, long long r1, long long r2, long long r3,
                                   long long sr0, long long sr1, long long sr2, long long sr3, unsigned long long k,
                                   unsigned* smem_hist, unsigned* smem_prefix, unsigned long long* smem_k) {
    unsigned prefix = 0u, mask = 0u;
    for (int shift = 32 - PB_DIGIT_BITS; shift >= 0; shift -= PB_DIGIT_BITS) {
        for (int b = threadIdx.x; b < PB_BINS; b += PB_THREADS) smem_hist[b] = 0u;
        __syncthreads();
        for (idx_t r = threadIdx.x; r < n_red; r += PB_THREADS) {
            float v = xo[dv_offset4(r, r1, r2, r3, sr0, sr1, sr2, sr3)];
            if (isnan(v)) continue;
            unsigned key = dv_order_key(v);
            if ((key & mask) == prefix) atomicAdd(&smem_hist[(key >> shift) & (PB_BINS - 1)], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned long long below = 0;
            int digit = PB_BINS - 1;
#pragma unroll 1
            for (int b = 0; b < PB_BINS; ++b) {
                if (below + smem_hist[b] > k) {
                    digit = b;
                    break;
                }
                below += smem_hist[b];
            }
            *smem_prefix = prefix | ((unsigned)digit << shift);
            *smem_k = k - below;
        }
        __syncthreads();
        prefix = *smem_prefix;
        k = *smem_k;
        mask |= (unsigned)(PB_BINS - 1) << shift;
        __syncthreads();  // everyone has read the pick before the next pass's thread 0 writes it
    }
    return prefix;
}

// The element of rank k (0-based) of a short NaN-free row, by counting: v holds rank k when fewer
// than k + 1 elements are below it and at least k + 1 are at or below it.
__device__ __forceinline__ float dv_rank_by_counting(const float* xo, long long n_red, long long r1, long long r2,
                                                     long long r3, long long sr0, long long sr1, long long sr2,
                                                     long long sr3, unsigned long long k) {
    float pick = NAN;
#pragma unroll 1
    for (idx_t i = 0; i < n_red; ++i) {
        float v = xo[dv_offset4(i, r1, r2, r3, sr0, sr1, sr2, sr3)];
        unsigned long long below = 0, at_or_below = 0;
#pragma unroll 1
        for (idx_t j = 0; j < n_red; ++j) {
            float u = xo[dv_offset4(j, r1, r2, r3, sr0, sr1, sr2, sr3)];
            below += u < v;
            at_or_below += u <= v;
        }
        if (below <= k && k < at_or_below) {
            pick = v;
            break;
        }
    }
    return pick;
}

extern "C" __global__ void reduce_percentile_f32(DV_REDUCE_PARAMS, float q) {
    __shared__ unsigned smem_hist[PB_BINS];
    __shared__ unsigned smem_prefix;
    __shared__ unsigned long long smem_k;
    __shared__ int smem_nan;
    for (idx_t o = blockIdx.x; o < n_out; o += gridDim.x) {  // uniform per block
        const float* xo = x + dv_offset4(o, o1, o2, o3, so0, so1, so2, so3);
        if (threadIdx.x == 0) smem_nan = n_red == 0;
        __syncthreads();
        for (idx_t r = threadIdx.x; r < n_red; r += PB_THREADS)
            if (isnan(xo[dv_offset4(r, r1, r2, r3, sr0, sr1, sr2, sr3)])) smem_nan = 1;  // same value: a benign race
        __syncthreads();
        const bool nan = smem_nan != 0;
        float result = NAN;
        if (!nan && (n_red > PB_SMALL || threadIdx.x == 0)) {  // uniform per block but for the short rows' threads > 0
            const double at = dv_dmul_rn((double)(n_red - 1), (double)q / 100.0);
            const double lo_d = floor(at);
            unsigned long long lo = (unsigned long long)lo_d;
            lo = lo < (unsigned long long)(n_red - 1) ? lo : (unsigned long long)(n_red - 1);
            const unsigned long long hi = lo + 1 < (unsigned long long)n_red ? lo + 1 : lo;
            const double t = at - lo_d;
            float a, b;
            if (n_red <= PB_SMALL) {  // thread 0 alone: no barrier inside
                a = dv_rank_by_counting(xo, n_red, r1, r2, r3, sr0, sr1, sr2, sr3, lo);
                b = dv_rank_by_counting(xo, n_red, r1, r2, r3, sr0, sr1, sr2, sr3, hi);
            } else {
                a = dv_order_value(dv_select_rank(xo, n_red, r1, r2, r3, sr0, sr1, sr2, sr3, lo, smem_hist, &smem_prefix, &smem_k));
                b = dv_order_value(dv_select_rank(xo, n_red, r1, r2, r3, sr0, sr1, sr2, sr3, hi, smem_hist, &smem_prefix, &smem_k));
            }
            const float d = __fadd_rn(b, -a);
            result = t >= 0.5 ? __fadd_rn(b, -__fmul_rn(d, (float)(1.0 - t))) : __fadd_rn(a, __fmul_rn(d, (float)t));
        }
        if (threadIdx.x == 0) y[o] = result;
        __syncthreads();  // every thread has read smem_nan before the next output resets it
    }
}

DV_REGISTER_KERNELS(channel_sum_fwd_f32, softmax_fwd_f32, topk_fwd_f32, reduce_thread_f32,
                    reduce_block_f32, reduce_quantile_f32, reduce_percentile_f32)
