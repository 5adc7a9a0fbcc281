// The CUDA device API on the CPU: what `kernels/*.cu` are compiled against when there is no GPU.
// build.rs force-includes this file (`-DDV_EMU -include emu/cuda_emu.h`) into every kernel file;
// emu/runtime.cpp runs the kernels (threads of a block as fibers, see there).
//
// What lives here:
//   qualifiers      __global__ __device__ __host__ __forceinline__ __shared__ ... (mostly empty)
//   vector types    dim3, uint3, int2/4, float2/4, uint2/4 and make_*
//   built-ins       threadIdx blockIdx blockDim gridDim warpSize (per emulated thread)
//   barriers        __syncthreads(_count/_and/_or) __syncwarp __activemask
//   warp ops        __shfl(_up/_down/_xor)_sync  __ballot_sync __any_sync __all_sync
//   atomics         atomicAdd/Sub/Exch/Max/Min/CAS/And/Or/Xor, __threadfence
//   math            <math.h> plus CUDA's intrinsics (__expf, rsqrtf, __fdividef, ...), min/max
//   registration    DV_REGISTER_KERNELS(k1, k2, ...), DV_DYNAMIC_SHARED(T, name)
// Everything the runtime implements is declared in namespace dv_emu.
#pragma once

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <type_traits>
#include <utility>

// ---- qualifiers -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// `__restrict__` is a GNU C++ keyword already.
// Static shared memory: one copy per OS thread, and one OS thread runs one block at a time with
// all of its threads as fibers, so this is one copy per block (contents carry over between
// blocks on the same OS thread, like uninitialised shared memory).
#define __shared__ static thread_local

// ---- vector types -----------------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(16) uint4 { unsigned x, y, z, w; };
struct __align__(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __align__(16) float4 { float x, y, z, w; };
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// ---- built-in variables ------------------------------------------------------------------------
// Set by the runtime before it switches to an emulated thread (blockIdx/blockDim/gridDim once
// per block). Thread-local because blocks run on several OS threads at once.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
#define warpSize 32

namespace dv_emu {

// Implemented in runtime.cpp. `file`/`line` name the call site in error messages.
enum WarpKind : int { W_SYNC = 0, W_SHFL_IDX, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_ACTIVE };
enum SyncKind : int { S_PLAIN = 0, S_COUNT, S_AND, S_OR };
int syncthreads(int kind, int pred, const char* file, int line);
uint64_t warp_op(int kind, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
void* dynamic_smem();
// Ends the calling thread's block with an error: the launch fails with `msg` and the call site
// (for misuse that the hardware would fault on or that would silently corrupt, e.g. a cp.async
// read before its wait). Does not return.
[[noreturn]] void kernel_error(const char* msg, const char* file, int line);
// Changes with every block an OS thread starts: emulator state that lives for one block (the
// cp.async queues of kernels/tensorcore.cuh) is keyed on it.
uint64_t block_serial();

// A kernel's parameter list as one character per parameter, checked against the launch's
// arguments (`Arg` in src/device/mod.rs): p pointer, l 64-bit integer, i int, u unsigned, f float.
template <class T>
constexpr char param_kind() {
    using U = std::remove_cv_t<T>;
    static_assert(std::is_pointer<U>::value || std::is_same<U, long long>::value || std::is_same<U, long>::value ||
                      std::is_same<U, unsigned long long>::value || std::is_same<U, unsigned long>::value ||
                      std::is_same<U, int>::value || std::is_same<U, unsigned>::value || std::is_same<U, float>::value,
                  "kernel parameters must be pointers, long long, int, unsigned or float (src/device/mod.rs Arg)");
    return std::is_pointer<U>::value ? 'p'
           : sizeof(U) == 8          ? 'l'
           : std::is_same<U, int>::value ? 'i'
           : std::is_same<U, unsigned>::value ? 'u'
                                              : 'f';
}

using AnyFn = void (*)();
using Invoker = void (*)(AnyFn fn, void** args);

// Calls `fn` with CUDA's kernelParams convention: args[i] points at the i-th parameter's value.
template <class... P, size_t... I>
void invoke_with(void (*fn)(P...), void** args, std::index_sequence<I...>) {
    fn(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}
template <class... P>
void invoke(AnyFn fn, void** args) {
    invoke_with(reinterpret_cast<void (*)(P...)>(fn), args, std::index_sequence_for<P...>{});
}

void register_kernel(const char* name, size_t name_len, AnyFn fn, Invoker inv, const char* sig);

template <class... P>
struct Signature {
    static constexpr char str[sizeof...(P) + 1] = {param_kind<P>()..., '\0'};
};

inline void register_list(const char*) {}
// `names` is the stringised argument list "a, b, c": peel one name per kernel.
template <class... P, class... Rest>
void register_list(const char* names, void (*fn)(P...), Rest... rest) {
    while (*names == ' ' || *names == ',' || *names == '\n' || *names == '\t') ++names;
    size_t n = 0;
    while (names[n] && names[n] != ',' && names[n] != ' ' && names[n] != '\n' && names[n] != '\t') ++n;
    register_kernel(names, n, reinterpret_cast<AnyFn>(fn), &invoke<P...>, Signature<P...>::str);
    register_list(names + n, rest...);
}

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp operations move at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace dv_emu

// One registration function per kernel file, named after the file: build.rs compiles each file
// through a wrapper that defines DV_EMU_UNIT, and a generated function calls them all (explicit
// calls, so the linker keeps every kernel file of the static library).
#define DV_EMU_CAT2(a, b) a##b
#define DV_EMU_CAT(a, b) DV_EMU_CAT2(a, b)
#define DV_REGISTER_KERNELS(...) \
    extern "C" void DV_EMU_CAT(dv_emu_register_, DV_EMU_UNIT)() { ::dv_emu::register_list(#__VA_ARGS__, __VA_ARGS__); }

// The launch's dynamic shared memory (LaunchConfig::shared_bytes, 16-byte aligned, ends at a
// guard page, filled with 0xFF at the start of every block).
#define DV_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::dv_emu::dynamic_smem())

// ---- barriers and warp operations -------------------------------------------------------------
#define __syncthreads() ::dv_emu::syncthreads(::dv_emu::S_PLAIN, 0, __FILE__, __LINE__)
#define __syncthreads_count(p) ::dv_emu::syncthreads(::dv_emu::S_COUNT, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_and(p) ::dv_emu::syncthreads(::dv_emu::S_AND, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_or(p) ::dv_emu::syncthreads(::dv_emu::S_OR, (p) != 0, __FILE__, __LINE__)
#define __syncwarp(...) ::dv_emu::syncwarp_at(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_sync(m, v, l, ...) ::dv_emu::shfl(::dv_emu::W_SHFL_IDX, m, v, l, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_up_sync(m, v, d, ...) ::dv_emu::shfl(::dv_emu::W_SHFL_UP, m, v, d, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_down_sync(m, v, d, ...) ::dv_emu::shfl(::dv_emu::W_SHFL_DOWN, m, v, d, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_xor_sync(m, v, x, ...) ::dv_emu::shfl(::dv_emu::W_SHFL_XOR, m, v, x, __FILE__, __LINE__, ##__VA_ARGS__)
#define __ballot_sync(m, p) ((unsigned)::dv_emu::warp_op(::dv_emu::W_BALLOT, m, (p) != 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(m, p) ((int)::dv_emu::warp_op(::dv_emu::W_ANY, m, (p) != 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(m, p) ((int)::dv_emu::warp_op(::dv_emu::W_ALL, m, (p) != 0, 0, 32, __FILE__, __LINE__))
// The lanes of the warp that reach this __activemask() together: it waits until no lane of the
// warp can run, then reports those waiting at an __activemask().
#define __activemask() ((unsigned)::dv_emu::warp_op(::dv_emu::W_ACTIVE, ~0u, 0, 0, 32, __FILE__, __LINE__))

namespace dv_emu {
inline void syncwarp_at(const char* file, int line, unsigned mask = 0xffffffffu) {
    warp_op(W_SYNC, mask, 0, 0, 32, file, line);
}
template <class T>
inline T shfl(int kind, unsigned mask, T v, int arg, const char* file, int line, int width = 32) {
    return from_bits<T>(warp_op(kind, mask, to_bits(v), arg, width, file, line));
}
}  // namespace dv_emu

// ---- atomics (real ones: blocks run on several OS threads) ------------------------------------
namespace dv_emu {
template <class T, class F>
inline T atomic_update(T* p, F f) {  // compare-and-swap loop on the bits
    using B = std::conditional_t<sizeof(T) == 8, unsigned long long, unsigned>;
    B* bp = reinterpret_cast<B*>(p);
    B old = __atomic_load_n(bp, __ATOMIC_RELAXED);
    for (;;) {
        T o = from_bits<T>(old);
        B nb = (B)to_bits<T>(f(o));
        if (__atomic_compare_exchange_n(bp, &old, nb, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return o;
    }
}
}  // namespace dv_emu
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float* p, float v) { return dv_emu::atomic_update(p, [v](float o) { return o + v; }); }
inline double atomicAdd(double* p, double v) { return dv_emu::atomic_update(p, [v](double o) { return o + v; }); }
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicExch(float* p, float v) { return dv_emu::atomic_update(p, [v](float) { return v; }); }
inline int atomicMax(int* p, int v) { return dv_emu::atomic_update(p, [v](int o) { return o > v ? o : v; }); }
inline int atomicMin(int* p, int v) { return dv_emu::atomic_update(p, [v](int o) { return o < v ? o : v; }); }
inline unsigned atomicMax(unsigned* p, unsigned v) {
    return dv_emu::atomic_update(p, [v](unsigned o) { return o > v ? o : v; });
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
    return dv_emu::atomic_update(p, [v](unsigned o) { return o < v ? o : v; });
}
template <class T>
inline T dv_emu_cas(T* p, T cmp, T v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return cmp;  // the old value either way
}
inline int atomicCAS(int* p, int cmp, int v) { return dv_emu_cas(p, cmp, v); }
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) { return dv_emu_cas(p, cmp, v); }
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
    return dv_emu_cas(p, cmp, v);
}
inline int atomicAnd(int* p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAnd(unsigned* p, unsigned v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline int atomicOr(int* p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline int atomicXor(int* p, int v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicXor(unsigned* p, unsigned v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <class T>
inline T __ldg(const T* p) { return *p; }

// ---- math -------------------------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
// cos(pi x): CUDA reduces the argument exactly; here pi x rounds once (x in [0, 2): as the
// CPU engine's cos(2 pi u))
inline double cospi(double x) { return cos(M_PI * x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float_as_int(float x) { return dv_emu::from_bits<int>(dv_emu::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return dv_emu::from_bits<unsigned>(dv_emu::to_bits(x)); }
inline float __int_as_float(int x) { return dv_emu::from_bits<float>(dv_emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return dv_emu::from_bits<float>(dv_emu::to_bits(x)); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
// CUDA's integer (and float) min/max, with the usual arithmetic conversions.
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a > (C)b ? (C)a : (C)b;
}
