// Hopper-only kernels (sm_90a: wgmma), built for that target alone (build/nvcc.rs: a file whose
// stem ends in `_sm90a`) and loaded only on a CC 9.0 card (src/device/cuda.rs); the emulator
// runs them everywhere (kernels/wgmma.cuh).
//
//   wgmma_probe_bf16   D [64, 64] f32 = A [64, K] · B^T, A and B [64, K] bf16 row-major (K-major
//                      both), K a multiple of 64: one warpgroup stages each 64-wide K tile of A
//                      and B into shared memory in the 128-byte swizzle layout (plain stores),
//                      then four m64n64k16 wgmma read them through descriptors. A match with
//                      the host product on the card proves the descriptor, swizzle and
//                      accumulator layouts the emulator assumes (tests/tensorcore.rs), before
//                      a convolution is built on them.
//                      `misuse` (emulator tests only): 1 skips the wgmma.fence, 2 overwrites A's
//                      tile before the wait, 3 never waits; each must fail the launch.
// Launch: one block of 128 threads, dynamic shared memory WGMMA_PROBE_SMEM bytes.
#include "common.cuh"
#include "wgmma.cuh"

#define WGMMA_PROBE_SMEM (1024 + 2 * 64 * 128)  // alignment slack, A and B tiles of 64 x 64 bf16

extern "C" __global__ void wgmma_probe_bf16(const unsigned short* a, const unsigned short* b, int k_total, float* d, int misuse) {
    DV_DYNAMIC_SHARED(unsigned char, smem_raw);
    if (blockIdx.x != 0 || threadIdx.x >= 128) return;
    unsigned char* smem = smem_raw + ((1024 - ((unsigned long long)smem_raw & 1023)) & 1023);
    unsigned short* sa = reinterpret_cast<unsigned short*>(smem);
    unsigned short* sb = reinterpret_cast<unsigned short*>(smem + 64 * 128);
    int t = threadIdx.x;
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 0.0f;
    for (int k0 = 0; k0 < k_total; k0 += 64) {
        for (int i = t; i < 64 * 64; i += 128) {
            int r = i / 64, k = i % 64;
            sa[dv_sw128_offset(r, k) / 2] = a[r * k_total + k0 + k];
            sb[dv_sw128_offset(r, k) / 2] = b[r * k_total + k0 + k];
        }
        __syncthreads();
        dv_fence_proxy_async();
        if (misuse != 1) dv_wgmma_fence();
        for (int ks = 0; ks < 4; ++ks)
            dv_wgmma_m64n64k16_bf16(acc, dv_wgmma_desc_sw128(smem + 32 * ks), dv_wgmma_desc_sw128(smem + 64 * 128 + 32 * ks), k0 > 0 || ks > 0);
        dv_wgmma_commit();
        if (misuse == 2 && t == 0) sa[0] ^= 0x3f80;  // A's tile changes under the wgmma
        if (misuse != 3) dv_wgmma_wait<0>();
        __syncthreads();  // the next tile overwrites these
    }
    dv_wgmma_check_drained();
    int w = t / 32, g = t % 32 / 4, q = t % 4;
    for (int j = 0; j < 8; ++j)
        for (int i = 0; i < 4; ++i) d[(16 * w + g + 8 * (i / 2)) * 64 + 8 * j + 2 * q + i % 2] = acc[4 * j + i];
}

DV_REGISTER_KERNELS(wgmma_probe_bf16)
