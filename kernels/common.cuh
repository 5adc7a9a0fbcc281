// Shared by every kernels/*.cu: the index type, registration and shared-memory macros that
// differ between nvcc and the CPU emulation (emu/cuda_emu.h, force-included under DV_EMU),
// and the activation functions used both by elementwise.cu and by conv.cu's fused epilogue.
//
// Kernel symbols are `extern "C"` `{op}_{variant}_{dtype}` (Rust: device::kernel_name):
//   op      what is computed: relu, add, max_pool2d, conv2d, ...
//   variant fwd | bwd (the input gradient) | bwd_data / bwd_filter / bwd_scale when an op has
//           several gradients | a layout or algorithm name (nchw_to_nhwc, repack, ...)
//   dtype   f32 (all kernels so far)
// Activations are NHWC ([n, h, w, c], channels last) inside the engine.
#pragma once

#ifndef DV_EMU
// nvcc: the CUDA runtime header is included implicitly; nothing else is needed.
#define DV_REGISTER_KERNELS(...)
#define DV_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// One index type everywhere: tensors may pass 2^31 elements. (The convolution kernels index in
// 32 bits instead, their launch code having checked that every tensor they touch fits: see
// kernels/conv.cuh.)
typedef long long idx_t;

// Global thread index and grid stride of a 1-d launch.
__device__ __forceinline__ idx_t dv_tid() { return (idx_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ idx_t dv_stride() { return (idx_t)gridDim.x * blockDim.x; }

// n / d and n % d for 0 <= n, d < 2^31 without a division instruction sequence: the round-up
// magic number (Hacker's Delight 10-9; what PyTorch's IntDivider uses): with l = ceil(log2 d)
// and m = floor(2^32 (2^l - d) / d) + 1, n / d = (umulhi(n, m) + n) >> l. Building one costs a
// 32-step shift-and-subtract loop, skipped when d is a power of two (strides 1 and 2), so
// build it once per thread, outside the loops that divide.
struct DvDiv {
    unsigned d, m, l;
    __device__ __forceinline__ explicit DvDiv(int divisor) : d((unsigned)divisor), m(1), l(0) {
        l = d > 1 ? 32 - __clz((int)(d - 1)) : 0;  // <= 31 for d < 2^31
        unsigned r = (1u << l) - d;  // < d
        if (r) {
            unsigned q = 0;
            for (int i = 0; i < 32; ++i) {  // q = floor(r * 2^32 / d); 2r < 2^32 since r < d < 2^31
                r <<= 1, q <<= 1;
                if (r >= d) r -= d, q |= 1;
            }
            m = q + 1;
        }
    }
    __device__ __forceinline__ int div(int n) const { return (int)((__umulhi((unsigned)n, m) + (unsigned)n) >> l); }
    __device__ __forceinline__ int mod(int n) const { return n - div(n) * (int)d; }
};

// Activation codes, as src/backend/cuda/mod.rs `act_code` passes them.
enum DvAct { DV_ACT_NONE = 0, DV_ACT_RELU = 1, DV_ACT_RELU6 = 2, DV_ACT_SILU = 3, DV_ACT_SIGMOID = 4, DV_ACT_HARDSWISH = 5 };

// __fdividef: MUFU.RCP and a multiply (2 ulp), where `/` would bring IEEE division's slow-path
// CALL into every kernel with a fused activation; 1 / inf is 0 as it should be.
__device__ __forceinline__ float dv_sigmoid(float x) { return __fdividef(1.0f, 1.0f + expf(-x)); }

// p / 6 without IEEE division's slow-path CALL: a multiply by the rounded reciprocal and one
// FMA correction step (Markstein), correctly rounded but in rare ties, always within 1 ulp.
__device__ __forceinline__ float dv_div6(float p) {
    const float r6 = 1.0f / 6.0f;
    float q = p * r6;
    return fmaf(fmaf(-6.0f, q, p), r6, q);
}

// Forward values, written as in src/backend/cpu/elementwise.rs (a NaN stays NaN).
__device__ __forceinline__ float dv_act(float x, int act) {
    switch (act) {
    case DV_ACT_RELU: return x <= 0.0f ? 0.0f : x;
    case DV_ACT_RELU6: return x <= 0.0f ? 0.0f : (x >= 6.0f ? 6.0f : x);
    case DV_ACT_SILU: return x * dv_sigmoid(x);
    case DV_ACT_SIGMOID: return dv_sigmoid(x);
    case DV_ACT_HARDSWISH: { float t = x + 3.0f; t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t); return dv_div6(x * t); }
    default: return x;
    }
}

// d act / dx at the forward input x, PyTorch's choice at the kinks (see the CPU reference).
__device__ __forceinline__ float dv_act_grad(float x, int act) {
    switch (act) {
    case DV_ACT_RELU: return !(x <= 0.0f) ? 1.0f : 0.0f;
    case DV_ACT_RELU6: return !(x <= 0.0f || x >= 6.0f) ? 1.0f : 0.0f;
    case DV_ACT_SILU: { float s = dv_sigmoid(x); return s * (1.0f + x * (1.0f - s)); }
    case DV_ACT_SIGMOID: { float s = dv_sigmoid(x); return s * (1.0f - s); }
    case DV_ACT_HARDSWISH: return x < -3.0f ? 0.0f : (x <= 3.0f ? x / 3.0f + 0.5f : 1.0f);
    default: return 1.0f;
    }
}

// Sum of v over the 32 lanes of a warp (every lane gets the result).
__device__ __forceinline__ float dv_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float dv_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
