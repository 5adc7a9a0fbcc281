// Tensor-core (mma), ldmatrix and async-copy instructions behind small __device__ wrappers: real
// inline PTX under nvcc (sm_80+), and under DV_EMU a body that follows the PTX ISA's fragment
// layouts, so kernels using them run in the CPU emulation (emu/cuda_emu.h) too.
//
// What lives here:
//   dv_cvt_rna_tf32        f32 -> tf32 bits (cvt.rna.tf32.f32)
//   dv_mma_m16n8k16_bf16_f32   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   dv_mma_m16n8k8_tf32_f32    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//   dv_ldmatrix_x4         ldmatrix.sync.aligned.m8n8.x4.shared.b16
//   dv_cvt_bf16x2          two f32 -> bf16x2 bits (cvt.rn.bf16x2.f32)
//   dv_cp_async_16 / dv_cp_async_commit / dv_cp_async_wait_group<N> / dv_cp_async_wait_all
//                          cp.async.cg.shared.global (16 B), commit_group, wait_group, wait_all
//   dv_cp_async_16_zfill   cp.async.cg.shared.global with src-size 16 or 0 (zeros, no read)
//   dv_lds_f32 / dv_lds_f32x2 / dv_lds_f32x4   shared-memory loads for fragments (checked in
//                          the emulation)
//
// Fragment layouts (PTX ISA, "Warp-level matrix fragments for mma.m16n8k16 / mma.m16n8k8 with
// floating point type" and "Warp-level matrix load instruction: ldmatrix"); g = lane >> 2
// (groupID), t = lane % 4 (threadID_in_group); a .b32 register holding two 16-bit elements keeps
// the lower-index element in its low half:
//   m16n8k16 bf16  A 16x16 row: a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]
//                               a[2] = A[g][2t+8..2t+9] a[3] = A[g+8][2t+8..2t+9]
//                  B 16x8 col:  b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
//   m16n8k8 tf32   A 16x8 row:  a[0] = A[g][t]  a[1] = A[g+8][t]  a[2] = A[g][t+4]  a[3] = A[g+8][t+4]
//                  B 8x8 col:   b[0] = B[t][g]  b[1] = B[t+4][g]
//   C/D 16x8 f32 (both shapes): c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
//   ldmatrix .x4: lanes 8j..8j+7 give the row addresses (16 bytes each) of matrix j; lane i
//                 receives r[j] = 32-bit word (i % 4) of row (i / 4) of matrix j.
//
// Emulation: a warp-wide instruction gathers the whole warp's operands. Every lane deposits its
// registers in a per-warp exchange slot (block-local, like __shared__), a __syncwarp() waits for
// the 32 lanes (the emulator's warp-operation rendezvous), each lane computes its own outputs from
// the assembled tiles, and a second __syncwarp() keeps a fast lane from overwriting its slot
// before the slow ones have read it. A lane that has exited contributes all-ones bits (NaN), as a
// shuffle from a non-participating lane does in the emulator.
#pragma once

#include "common.cuh"

#ifdef DV_EMU
#include <deque>
#include <unordered_map>
#include <vector>
namespace dv_tc_emu {

struct Slot {  // one lane's operands for one warp-wide instruction
    unsigned w[10];
    const void* p;
};
// One slot per lane of each of a block's (at most 32) warps; one copy per block, like __shared__.
inline thread_local Slot xchg[32][32];

inline unsigned lane_linear() {
    return threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
}

// Deposit `n` words (and a pointer), wait for the warp; returns the warp's slots and the mask of
// lanes that took part (the others' slots are filled with all-ones bits).
inline Slot* gather(const unsigned* w, int n, const void* p, unsigned& lane, const char* file, int line) {
    unsigned tid = lane_linear();
    lane = tid % 32;
    Slot* s = xchg[tid / 32];
    for (int i = 0; i < n; ++i) s[lane].w[i] = w[i];
    s[lane].p = p;
    unsigned part = (unsigned)dv_emu::warp_op(dv_emu::W_BALLOT, 0xffffffffu, 1, 0, 32, file, line);
    for (unsigned l = 0; l < 32; ++l)
        if (!(part >> l & 1u)) {
            for (int i = 0; i < n; ++i) s[l].w[i] = ~0u;
            s[l].p = nullptr;
        }
    return s;
}
inline void release(const char* file, int line) { dv_emu::warp_op(dv_emu::W_SYNC, 0xffffffffu, 0, 0, 32, file, line); }

inline float f32(unsigned u) { return dv_emu::from_bits<float>(u); }
inline float bf16_lo(unsigned u) { return f32(u << 16); }
inline float bf16_hi(unsigned u) { return f32(u & 0xffff0000u); }

// cvt.rna.tf32.f32: round to nearest, ties away from zero, keeping 10 mantissa bits (the low 13
// bits become zero); NaN and infinity pass through.
inline unsigned rna_tf32(unsigned u) {
    if ((u & 0x7f800000u) == 0x7f800000u) return u;
    return (u + 0x1000u) & 0xffffe000u;
}

// Fails the launch if any of [p, p + bytes) is the destination of a cp.async still in flight
// (defined with the async copies below).
inline void check_landed(const void* p, size_t bytes, const char* what, const char* file, int line);

}  // namespace dv_tc_emu
#endif

// f32 -> tf32 bits, as the tf32 mma reads them (the low 13 bits zero).
__device__ __forceinline__ unsigned dv_cvt_rna_tf32(float x) {
#ifndef DV_EMU
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    return dv_tc_emu::rna_tf32(__float_as_uint(x));
#endif
}

// Two f32 -> one register of two bf16 (cvt.rn.bf16x2.f32: round to nearest even), `lo` in the
// low half (the lower-index element of a fragment pair); NaN becomes the canonical 0x7fff.
__device__ __forceinline__ unsigned dv_cvt_bf16x2(float lo, float hi) {
#ifndef DV_EMU
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    auto one = [](float x) -> unsigned {
        unsigned u = __float_as_uint(x);
        if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
        return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    };
    return one(lo) | (one(hi) << 16);
#endif
}

// D (16x8 f32) = A (16x16 bf16, row) * B (16x8 bf16, col) + C, one warp; layouts above.
#ifdef DV_EMU
namespace dv_tc_emu {
// Every lane deposits its A (4 words), B (2) and C (4) fragment registers; after this the whole
// warp's fragments are in the returned slots (shared by both mma shapes).
inline Slot* gather_abc(const unsigned a[4], const unsigned b[2], const float c[4], unsigned& lane, const char* file, int line) {
    unsigned w[10];
    for (int i = 0; i < 4; ++i) w[i] = a[i], w[6 + i] = __float_as_uint(c[i]);
    w[4] = b[0], w[5] = b[1];
    return gather(w, 10, nullptr, lane, file, line);
}

// This lane's D = A·B + C under the C/D fragment layout both shapes share (c0 = C[g][2t],
// c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]); products summed in f64, one rounding.
template <int K>
inline void mma_finish(float d[4], const float (*A)[K], const float (*B)[8], Slot* s, unsigned lane, const char* file, int line) {
    unsigned g = lane >> 2, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        unsigned row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        double acc = 0.0;
        for (int k = 0; k < K; ++k) acc += (double)A[row][k] * B[k][col];
        d[i] = (float)(acc + (double)f32(s[lane].w[6 + i]));
    }
    release(file, line);
}

inline void mma_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4], const char* file, int line) {
    unsigned lane;
    Slot* s = gather_abc(a, b, c, lane, file, line);
    float A[16][16], B[16][8];
    for (unsigned l = 0; l < 32; ++l) {
        unsigned g = l >> 2, t = l % 4;
        const unsigned* r = s[l].w;
        for (int h = 0; h < 2; ++h) {  // h: which half of the k range (cols 2t.. or 2t+8..)
            A[g][2 * t + 8 * h] = bf16_lo(r[2 * h]), A[g][2 * t + 8 * h + 1] = bf16_hi(r[2 * h]);
            A[g + 8][2 * t + 8 * h] = bf16_lo(r[2 * h + 1]), A[g + 8][2 * t + 8 * h + 1] = bf16_hi(r[2 * h + 1]);
            B[2 * t + 8 * h][g] = bf16_lo(r[4 + h]), B[2 * t + 8 * h + 1][g] = bf16_hi(r[4 + h]);
        }
    }
    mma_finish<16>(d, A, B, s, lane, file, line);
}
}  // namespace dv_tc_emu
// (The call site, for the emulator's error messages, comes from GCC's __builtin_FILE/LINE.)
__device__ __forceinline__ void dv_mma_m16n8k16_bf16_f32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4],
                                                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_tc_emu::mma_bf16(d, a, b, c, file, line);
}
#else
__device__ __forceinline__ void dv_mma_m16n8k16_bf16_f32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
#endif

// D (16x8 f32) = A (16x8 tf32, row) * B (8x8 tf32, col) + C, one warp; layouts above. The
// emulation rounds the inputs as cvt.rna.tf32.f32 does (a no-op on dv_cvt_rna_tf32 output).
#ifdef DV_EMU
namespace dv_tc_emu {
inline void mma_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4], const char* file, int line) {
    unsigned lane;
    Slot* s = gather_abc(a, b, c, lane, file, line);
    float A[16][8], B[8][8];
    for (unsigned l = 0; l < 32; ++l) {
        unsigned g = l >> 2, t = l % 4;
        const unsigned* r = s[l].w;
        A[g][t] = f32(rna_tf32(r[0])), A[g + 8][t] = f32(rna_tf32(r[1]));
        A[g][t + 4] = f32(rna_tf32(r[2])), A[g + 8][t + 4] = f32(rna_tf32(r[3]));
        B[t][g] = f32(rna_tf32(r[4])), B[t + 4][g] = f32(rna_tf32(r[5]));
    }
    mma_finish<8>(d, A, B, s, lane, file, line);
}
}  // namespace dv_tc_emu
__device__ __forceinline__ void dv_mma_m16n8k8_tf32_f32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4],
                                                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_tc_emu::mma_tf32(d, a, b, c, file, line);
}
#else
__device__ __forceinline__ void dv_mma_m16n8k8_tf32_f32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
#endif

// Four 8x8 b16 matrices from shared memory, one warp: lane i gives the address of row i % 8 of
// matrix i / 8 (16 bytes, 16-byte aligned); r[j] gets word (i % 4) of row (i / 4) of matrix j.
#ifdef DV_EMU
namespace dv_tc_emu {
inline void ldmatrix_x4(unsigned r[4], const void* smem_row_ptr, const char* file, int line) {
    check_landed(smem_row_ptr, 16, "ldmatrix", file, line);
    if ((uintptr_t)smem_row_ptr & 15) dv_emu::kernel_error("ldmatrix: a row address is not 16-byte aligned", file, line);
    unsigned lane;
    Slot* s = gather(nullptr, 0, smem_row_ptr, lane, file, line);
    for (int j = 0; j < 4; ++j) {
        const void* row = s[8 * j + lane / 4].p;
        if (row) memcpy(&r[j], static_cast<const unsigned char*>(row) + 4 * (lane % 4), 4);
        else r[j] = ~0u;
    }
    release(file, line);
}
}  // namespace dv_tc_emu
__device__ __forceinline__ void dv_ldmatrix_x4(unsigned r[4], const void* smem_row_ptr, const char* file = __builtin_FILE(),
                                               int line = __builtin_LINE()) {
    dv_tc_emu::ldmatrix_x4(r, smem_row_ptr, file, line);
}
#else
__device__ __forceinline__ void dv_ldmatrix_x4(unsigned r[4], const void* smem_row_ptr) {
    unsigned addr = (unsigned)__cvta_generic_to_shared(smem_row_ptr);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
#endif

// ---- async copies -------------------------------------------------------------------------------
// 16 bytes global -> shared without staging in registers (both 16-byte aligned). The data is
// only guaranteed in shared memory once the issuing thread's dv_cp_async_wait_group<N>() (or
// dv_cp_async_wait_all()) covers its group, and for other threads after a barrier that follows
// that wait.
//
// Emulation, as late as the hardware may be: the source is read at issue, the destination is
// poisoned (0xFF bytes: NaN) and the bytes land only when the issuing thread's wait covers the
// group. Misuse the hardware would leave to chance fails the launch, naming the call site: a
// misaligned address, a second cp.async into 16 bytes still in flight, a plain store into bytes
// still in flight (found when they land), a read through dv_ldmatrix_x4 / dv_lds_f32 /
// dv_lds_f32x2 / dv_lds_f32x4 of bytes still in flight. A plain C++ read of in-flight bytes reads the poison.
#ifdef DV_EMU
namespace dv_tc_emu {
struct Copy {
    unsigned char* dst;
    unsigned char data[16];
};
struct Issuer {  // where an in-flight copy came from, for the error messages
    unsigned thread;
    const char* file;
    int line;
};
struct ThreadQueue {
    std::vector<Copy> open;                   // issued, not yet committed
    std::deque<std::vector<Copy>> groups;     // committed, oldest first
};
struct AsyncBlock {  // one block's copies; thread_local = one per OS thread = the running block
    uint64_t serial = ~0ull;
    std::vector<ThreadQueue> q;
    std::unordered_map<uintptr_t, Issuer> inflight;  // by 16-byte destination chunk
};
inline thread_local AsyncBlock async_block_state;

// This block's state; copies a previous block left in flight are dropped (its shared memory is
// gone, as on the hardware).
inline AsyncBlock& async_block() {
    AsyncBlock& b = async_block_state;
    uint64_t s = dv_emu::block_serial();
    if (b.serial != s) {
        b.serial = s;
        b.q.assign((size_t)blockDim.x * blockDim.y * blockDim.z, ThreadQueue{});
        b.inflight.clear();
    }
    return b;
}

inline void fail_inflight(const char* what, const Issuer& by, const char* file, int line) {
    char m[512];
    snprintf(m, sizeof m, "%s: a cp.async issued by thread %u at %s:%d has not landed (its thread's cp.async.wait_group and a __syncthreads are missing)",
             what, by.thread, by.file, by.line);
    dv_emu::kernel_error(m, file, line);
}

inline void check_landed(const void* p, size_t bytes, const char* what, const char* file, int line) {
    AsyncBlock& b = async_block();
    if (b.inflight.empty()) return;
    uintptr_t a = (uintptr_t)p;
    for (uintptr_t c = a & ~(uintptr_t)15; c < a + bytes; c += 16) {
        auto it = b.inflight.find(c);
        if (it != b.inflight.end()) fail_inflight(what, it->second, file, line);
    }
}

inline void cp_async_16(void* smem, const void* gmem, const char* file, int line) {
    if (((uintptr_t)smem | (uintptr_t)gmem) & 15) dv_emu::kernel_error("cp.async of 16 bytes: misaligned address", file, line);
    AsyncBlock& b = async_block();
    unsigned tid = lane_linear();
    auto it = b.inflight.find((uintptr_t)smem);
    if (it != b.inflight.end()) fail_inflight("a second cp.async into the same 16 bytes of shared memory", it->second, file, line);
    Copy c;
    c.dst = static_cast<unsigned char*>(smem);
    memcpy(c.data, gmem, 16);
    memset(smem, 0xFF, 16);
    b.q[tid].open.push_back(c);
    b.inflight[(uintptr_t)smem] = Issuer{tid, file, line};
}

// src-size 0: the 16 bytes land as zeros and the source is not read (its alignment is still
// the instruction's rule).
inline void cp_async_16_zfill(void* smem, const void* gmem, bool full, const char* file, int line) {
    if (full) return cp_async_16(smem, gmem, file, line);
    static const unsigned char zeros[16] __attribute__((aligned(16))) = {};
    if ((uintptr_t)gmem & 15) dv_emu::kernel_error("cp.async of 16 bytes: misaligned address", file, line);
    cp_async_16(smem, zeros, file, line);
}

inline void cp_async_commit() {
    ThreadQueue& t = async_block().q[lane_linear()];
    t.groups.push_back(std::move(t.open));
    t.open.clear();
}

// Lands the calling thread's committed groups until at most `pending` remain.
inline void cp_async_wait_group(unsigned pending, const char* file, int line) {
    AsyncBlock& b = async_block();
    ThreadQueue& t = b.q[lane_linear()];
    while (t.groups.size() > pending) {
        for (Copy& c : t.groups.front()) {
            for (int i = 0; i < 16; ++i)
                if (c.dst[i] != 0xFF) {
                    const Issuer& by = b.inflight[(uintptr_t)c.dst];
                    char m[512];
                    snprintf(m, sizeof m, "shared memory written while a cp.async into it (thread %u, %s:%d) was in flight", by.thread, by.file, by.line);
                    dv_emu::kernel_error(m, file, line);
                }
            memcpy(c.dst, c.data, 16);
            b.inflight.erase((uintptr_t)c.dst);
        }
        t.groups.pop_front();
    }
}
}  // namespace dv_tc_emu

__device__ __forceinline__ void dv_cp_async_16(void* smem, const void* gmem, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_tc_emu::cp_async_16(smem, gmem, file, line);
}
__device__ __forceinline__ void dv_cp_async_16_zfill(void* smem, const void* gmem, bool full, const char* file = __builtin_FILE(),
                                                    int line = __builtin_LINE()) {
    dv_tc_emu::cp_async_16_zfill(smem, gmem, full, file, line);
}
__device__ __forceinline__ void dv_cp_async_commit() { dv_tc_emu::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void dv_cp_async_wait_group(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_tc_emu::cp_async_wait_group(N, file, line);
}
__device__ __forceinline__ void dv_cp_async_wait_all(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_tc_emu::cp_async_commit();
    dv_tc_emu::cp_async_wait_group(0, file, line);
}
// Shared-memory loads for fragments that do not go through ldmatrix: a plain load, checked in
// the emulation against cp.async copies still in flight.
__device__ __forceinline__ float dv_lds_f32(const float* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_tc_emu::check_landed(p, 4, "shared-memory load", file, line);
    return *p;
}
__device__ __forceinline__ float2 dv_lds_f32x2(const float* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    if ((uintptr_t)p & 7) dv_emu::kernel_error("8-byte shared-memory load: misaligned address", file, line);
    dv_tc_emu::check_landed(p, 8, "shared-memory load", file, line);
    return *reinterpret_cast<const float2*>(p);
}
__device__ __forceinline__ float4 dv_lds_f32x4(const float* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    if ((uintptr_t)p & 15) dv_emu::kernel_error("16-byte shared-memory load: misaligned address", file, line);
    dv_tc_emu::check_landed(p, 16, "shared-memory load", file, line);
    return *reinterpret_cast<const float4*>(p);
}
#else
__device__ __forceinline__ void dv_cp_async_16(void* smem, const void* gmem) {
    unsigned addr = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(addr), "l"(gmem) : "memory");
}
// As dv_cp_async_16 when `full`; otherwise the 16 bytes become zeros and gmem (still 16-byte
// aligned, as the instruction requires) is not read: src-size 0, no branch.
__device__ __forceinline__ void dv_cp_async_16_zfill(void* smem, const void* gmem, bool full) {
    unsigned addr = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(addr), "l"(gmem), "r"(full ? 16u : 0u) : "memory");
}
__device__ __forceinline__ void dv_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's most recently committed groups are still in flight.
template <int N>
__device__ __forceinline__ void dv_cp_async_wait_group() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
// Waits for every cp.async of this thread (committed or not); other threads' copies need a
// barrier after it.
__device__ __forceinline__ void dv_cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }
__device__ __forceinline__ float dv_lds_f32(const float* p) { return *p; }
__device__ __forceinline__ float2 dv_lds_f32x2(const float* p) { return *reinterpret_cast<const float2*>(p); }
__device__ __forceinline__ float4 dv_lds_f32x4(const float* p) { return *reinterpret_cast<const float4*>(p); }
#endif
