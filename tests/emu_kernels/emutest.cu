// Small kernels that exercise the CPU emulator (tests/emu.rs): barriers, warp operations,
// atomics, shared memory, 2-d launches, and planted bugs the emulator must catch.
// Emulator only (never given to nvcc): cuda_emu.h is force-included, so no common.cuh.

#define SUM_THREADS 256  // one block reduces 256 elements; a power of two for the tree

// Tree reduction in shared memory: y[block] = sum of the block's slice of x.
// `barrier_in_loop` false plants the classic bug: no __syncthreads() between tree levels.
template <bool barrier_in_loop>
__device__ void block_sum(const float* x, float* y, long long n) {
    __shared__ float smem_sum[SUM_THREADS];
    long long i = (long long)blockIdx.x * SUM_THREADS + threadIdx.x;
    smem_sum[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int s = SUM_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) smem_sum[threadIdx.x] += smem_sum[threadIdx.x + s];
        if (barrier_in_loop) __syncthreads();
    }
    if (threadIdx.x == 0) y[blockIdx.x] = smem_sum[0];
}
extern "C" __global__ void emutest_block_sum_f32(const float* x, float* y, long long n) { block_sum<true>(x, y, n); }
extern "C" __global__ void emutest_block_sum_nobarrier_f32(const float* x, float* y, long long n) {
    block_sum<false>(x, y, n);
}

// Warp reductions: y[warp] = sum over the warp's 32 elements (shfl_down), z[warp] = max (xor
// all-reduce, checked on every lane), b[warp] = ballot of x > 0.
extern "C" __global__ void emutest_warp_ops_f32(const float* x, float* y, float* z, unsigned* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i], s = v, m = v;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    unsigned bal = __ballot_sync(0xffffffffu, v > 0.0f);
    int lane0 = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
    int all_same = __all_sync(0xffffffffu, m == __shfl_sync(0xffffffffu, m, 0));
    if (threadIdx.x % 32 == 0) {
        y[i / 32] = s;
        z[i / 32] = all_same && lane0 == (int)(threadIdx.x & ~31u) ? m : -1.0f;
        b[i / 32] = bal;
    }
}

// Atomics from every block: a histogram of x (values in [0, bins)), a float sum and an int max.
extern "C" __global__ void emutest_atomics(const int* x, unsigned* hist, float* sum, int* mx, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        atomicAdd(&hist[x[i]], 1u);
        atomicAdd(sum, 1.0f);
        atomicMax(mx, x[i]);
    }
}

// Dynamic shared memory: each block reverses its slice of x through shared memory.
extern "C" __global__ void emutest_dyn_reverse_f32(const float* x, float* y, long long n) {
    DV_DYNAMIC_SHARED(float, smem_rev);
    long long base = (long long)blockIdx.x * blockDim.x;
    long long i = base + threadIdx.x;
    if (i < n) smem_rev[threadIdx.x] = x[i];
    __syncthreads();
    long long j = base + (blockDim.x - 1 - threadIdx.x);
    if (j < n && i < n) y[i] = smem_rev[blockDim.x - 1 - threadIdx.x];
    else if (i < n) y[i] = x[i];
}

// 2-d grid and block: transpose [rows, cols] -> [cols, rows] through a padded tile.
#define TILE 8
extern "C" __global__ void emutest_transpose_f32(const float* x, float* y, int rows, int cols) {
    __shared__ float smem_tile[TILE][TILE + 1];
    int c = blockIdx.x * TILE + threadIdx.x, r = blockIdx.y * TILE + threadIdx.y;
    if (r < rows && c < cols) smem_tile[threadIdx.y][threadIdx.x] = x[(long long)r * cols + c];
    __syncthreads();
    int tc = blockIdx.y * TILE + threadIdx.x, tr = blockIdx.x * TILE + threadIdx.y;  // in y: [cols, rows]
    if (tr < cols && tc < rows) y[(long long)tr * rows + tc] = smem_tile[threadIdx.x][threadIdx.y];
}

// __syncthreads_count and a partial last warp whose missing lanes exited before a shuffle:
// y[block] = number of x > 0 in the block; z[i] = x[i] + x[i ^ 1] (the lane's pair), or x[i]
// when the partner lane exited.
extern "C" __global__ void emutest_count_pairs_f32(const float* x, float* y, float* z, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int c = __syncthreads_count(i < n && x[i] > 0.0f);
    if (threadIdx.x == 0) y[blockIdx.x] = (float)c;
    if (i >= n) return;
    unsigned live = __activemask();
    float v = x[i], other = __shfl_xor_sync(live, v, 1);
    z[i] = (live >> ((threadIdx.x % 32) ^ 1) & 1u) ? v + other : v;
}

// Planted bugs.
extern "C" __global__ void emutest_read_past_end_f32(const float* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];  // reads one past the end
}
extern "C" __global__ void emutest_write_past_end_f32(float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;  // off by one
}
extern "C" __global__ void emutest_write_before_start_f32(float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i - 1] = 1.0f;  // off by one the other way
}
extern "C" __global__ void emutest_divergent_barrier_f32(float* y, long long n) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    if (threadIdx.x < n) y[threadIdx.x] = 0.0f;
}
extern "C" __global__ void emutest_shfl_deadlock_f32(float* y, long long n) {
    float v = (float)threadIdx.x;
    if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // lanes 16..31 never come
    __syncthreads();
    if (threadIdx.x < n) y[threadIdx.x] = v;
}

// ---- cp.async (kernels/tensorcore.cuh): one block of 32 threads; thread t copies 16 bytes of
// src into shared memory and writes out[4t .. 4t+3] from its neighbour's (t+1) chunk. `mode`:
//   0 correct: commit, a barrier, wait_group<0>, __syncthreads, read
//   1 reads before any wait (the emulator must refuse)
//   2 waits for its own copy only, no barrier after the wait: the neighbour's may be in flight
//   3 two stages: wait_group<1> lands stage 0 (read correctly), stage 1 read without a wait
//   4 as 0 through dv_cp_async_16_zfill, odd threads with src-size 0: their chunks land as zeros
//     (the stage held garbage before), and their source, one past the end of src, is never read
//   5 as 4 but read before any wait: a zero-filled chunk is in flight like any other
#include "tensorcore.cuh"
extern "C" __global__ void emutest_cp_async_f32(const float* src, float* out, int mode) {
    __shared__ __align__(16) float smem_stage[2][32 * 4];
    int t = threadIdx.x, nb = (t + 1) % 32;
    if (mode >= 4) {
        for (int i = 0; i < 4; ++i) smem_stage[0][4 * t + i] = -1.0f;  // garbage the zeros must replace
        __syncthreads();
        bool full = t % 2 == 0;
        dv_cp_async_16_zfill(&smem_stage[0][4 * t], full ? src + 4 * t : src + 128, full);
        mode = mode == 4 ? 0 : 1;
    } else {
        dv_cp_async_16(&smem_stage[0][4 * t], src + 4 * t);
    }
    dv_cp_async_commit();
    if (mode == 3) {
        dv_cp_async_16(&smem_stage[1][4 * t], src + 4 * t);
        dv_cp_async_commit();
    }
    __syncthreads();  // every copy issued before anyone reads
    if (mode == 0 || mode == 2) dv_cp_async_wait_group<0>();
    if (mode == 3) dv_cp_async_wait_group<1>();
    if (mode == 0 || mode == 3) __syncthreads();
    for (int i = 0; i < 4; ++i) out[4 * t + i] = dv_lds_f32(&smem_stage[0][4 * nb + i]);
    if (mode == 3) out[4 * t] = dv_lds_f32(&smem_stage[1][4 * nb]);
}

DV_REGISTER_KERNELS(emutest_cp_async_f32, emutest_block_sum_f32, emutest_block_sum_nobarrier_f32, emutest_warp_ops_f32, emutest_atomics,
                    emutest_dyn_reverse_f32, emutest_transpose_f32, emutest_count_pairs_f32,
                    emutest_read_past_end_f32, emutest_write_past_end_f32,
                    emutest_write_before_start_f32, emutest_divergent_barrier_f32, emutest_shfl_deadlock_f32)
