// Hopper's warpgroup matrix multiply (sm_90a only: wgmma.mma_async) behind small __device__
// wrappers, real PTX under nvcc and an emulated body under DV_EMU that fails the launch where
// the hardware would leave the result to chance. Included only by kernels/*_sm90a.cu, which
// build/nvcc.rs compiles for sm_90a alone and src/device/cuda.rs loads only on a CC 9.0 card.
//
//   dv_wgmma_desc_sw128(p)         the shared-memory matrix descriptor of a K-major bf16 tile in
//                                  the 128-byte swizzle layout, starting at p
//   dv_fence_proxy_async()         fence.proxy.async.shared::cta: plain stores to shared memory
//                                  become visible to wgmma (the async proxy)
//   dv_wgmma_fence()               wgmma.fence.sync.aligned: before the first wgmma, and again
//                                  after the accumulators were read or written by anything else
//   dv_wgmma_m64n64k16_bf16(d, da, db, accumulate)
//                                  wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16:
//                                  D (64x64 f32, in the warpgroup's registers) = A·B (+ D)
//   dv_wgmma_commit() / dv_wgmma_wait<N>()
//                                  wgmma.commit_group / wgmma.wait_group N: the accumulators and
//                                  the operands' shared memory are the wgmma's until the wait
//                                  covers its group
//
// Layouts (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
//   A (64 x 16 of M x K) and B (64 x 16 of N x K) are read from shared memory, both K-major
//   ("no transpose"), through the descriptor: element (r, k) of the tile at p is the bf16 at
//   byte  (p + (r / 8) * 1024 + (r % 8) * 128 + 2 k)  with bits 4-6 of that address XORed with
//   bits 7-9 (the 128-byte swizzle: 16-byte chunk c of a 128-byte row r sits at chunk c ^ r % 8).
//   So a tile is rows of 64 bf16 (128 bytes), 8 rows an atom of 1024 bytes, atoms 1024 bytes
//   apart (the descriptor's stride byte offset; its leading byte offset is unused with this
//   swizzle); a 64-wide K tile holds four k16 steps at p, p + 32, p + 64, p + 96 bytes. The
//   atoms must be 1024-byte aligned (base offset 0).
//   D: thread t of the warpgroup (warp w = t / 32, g = t % 32 / 4, q = t % 4) holds, for each
//   8-column block j < 8: d[4j] = D[16w + g][8j + 2q], d[4j + 1] = D[16w + g][8j + 2q + 1],
//   d[4j + 2] = D[16w + g + 8][8j + 2q], d[4j + 3] = D[16w + g + 8][8j + 2q + 1].
//
// Emulation: each thread computes its own 32 outputs, so no rendezvous is needed; the
// multiply happens when the thread's wgmma.wait_group covers it (as late as the hardware may),
// from the operands it read at issue. The launch fails, naming the call site, on: a block that
// is not whole warpgroups; a wgmma with no wgmma.fence since the thread's last wait (its
// accumulators may have been touched); a descriptor outside the dynamic shared memory, not
// 16-byte aligned, or not starting in the first row of a 1024-byte swizzle atom; operands still
// the destination of a cp.async in flight; shared memory the wgmma reads overwritten before its
// wait; a block that exits with wgmma groups pending. Not checked (plain stores are invisible to
// the emulator): the proxy fence between plain stores and the wgmma that reads them.
#pragma once

#include "tensorcore.cuh"

// Byte offset of bf16 element (r, k) (k < 64) of a tile in the 128-byte swizzle layout above,
// the tile 1024-byte aligned: what plain stores into a wgmma operand use.
__device__ __forceinline__ int dv_sw128_offset(int r, int k) {
    return (r >> 3) * 1024 + (r & 7) * 128 + (((k >> 3) ^ (r & 7)) << 4) + (k & 7) * 2;
}

#ifdef DV_EMU
namespace dv_wgmma_emu {

struct Op {
    float* d;                  // the issuing thread's 32 accumulators
    bool accumulate;
    unsigned short a[2][16];   // this thread's two rows of A, as read at issue
    unsigned short b[16][16];  // its 16 columns of B
    const unsigned short* pa[2][16];
    const unsigned short* pb[16][16];
    const char* file;
    int line;
};
struct Thread {
    bool fenced = false;
    std::vector<Op> open;
    std::deque<std::vector<Op>> groups;
};
struct Block {
    unsigned long long serial = ~0ull;
    std::vector<Thread> t;
};
inline thread_local Block block_state;

inline Thread& me() {
    Block& b = block_state;
    unsigned long long s = dv_emu::block_serial();
    if (b.serial != s) {
        b.serial = s;
        b.t.assign((size_t)blockDim.x * blockDim.y * blockDim.z, Thread{});
    }
    return b.t[dv_tc_emu::lane_linear()];
}

// The descriptor carries the tile's offset in the dynamic shared memory (as the hardware's
// carries the shared-window address) in bits 0-13, >> 4; stride byte offset 1024 >> 4 in bits
// 32-45; leading byte offset 1 (unused); swizzle mode 1 (128 bytes) in bits 62-63.
inline const unsigned char* decode(unsigned long long desc, const char* file, int line) {
    if (desc >> 62 != 1 || (desc >> 32 & 0x3fff) != 64 || (desc >> 49 & 7) != 0)
        dv_emu::kernel_error("wgmma descriptor: not the 128-byte-swizzle K-major layout dv_wgmma_desc_sw128 makes", file, line);
    const unsigned char* p = static_cast<const unsigned char*>(dv_emu::dynamic_smem()) + ((desc & 0x3fff) << 4);
    return p;
}

// Byte address of element (r, k) of the tile whose descriptor points at p (see the layout above).
inline const unsigned short* at(const unsigned char* p, int r, int k) {
    uintptr_t a = (uintptr_t)p + (uintptr_t)(r / 8) * 1024 + (uintptr_t)(r % 8) * 128 + 2 * (uintptr_t)k;
    a ^= ((a >> 7) & 7) << 4;
    return reinterpret_cast<const unsigned short*>(a);
}

inline void mma(float* d, unsigned long long da, unsigned long long db, bool accumulate, const char* file, int line) {
    if ((blockDim.x * blockDim.y * blockDim.z) % 128 != 0)
        dv_emu::kernel_error("wgmma: the block is not a whole number of warpgroups (128 threads)", file, line);
    Thread& t = me();
    if (!t.fenced) dv_emu::kernel_error("wgmma.mma_async without a wgmma.fence since this thread last touched its accumulators (or its last wgmma.wait_group)", file, line);
    const unsigned char* pa = decode(da, file, line);
    const unsigned char* pb = decode(db, file, line);
    for (const unsigned char* p : {pa, pb})
        if (((uintptr_t)p >> 7 & 7) != 0)
            dv_emu::kernel_error("wgmma descriptor: the tile does not start in the first row of a 1024-byte swizzle atom (base offset 0 needs 1024-byte aligned tiles)", file, line);
    unsigned tid = dv_tc_emu::lane_linear() % 128, w = tid / 32, g = tid % 32 / 4, q = tid % 4;
    Op op;
    op.d = d, op.accumulate = accumulate, op.file = file, op.line = line;
    for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 16; ++k) {
            op.pa[h][k] = at(pa, 16 * w + g + 8 * h, k);
            dv_tc_emu::check_landed(op.pa[h][k], 2, "wgmma operand A", file, line);
            op.a[h][k] = *op.pa[h][k];
        }
    for (int c = 0; c < 16; ++c)  // columns 8j + 2q + e, c = 2j + e
        for (int k = 0; k < 16; ++k) {
            op.pb[c][k] = at(pb, 8 * (c / 2) + 2 * q + c % 2, k);
            dv_tc_emu::check_landed(op.pb[c][k], 2, "wgmma operand B", file, line);
            op.b[c][k] = *op.pb[c][k];
        }
    t.open.push_back(op);
}

inline void run(const Op& op, const char* file, int line) {
    for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 16; ++k)
            if (*op.pa[h][k] != op.a[h][k]) goto changed;
    for (int c = 0; c < 16; ++c)
        for (int k = 0; k < 16; ++k)
            if (*op.pb[c][k] != op.b[c][k]) goto changed;
    for (int j = 0; j < 8; ++j)
        for (int i = 0; i < 4; ++i) {
            int h = i / 2, c = 2 * j + i % 2;
            double acc = 0.0;
            for (int k = 0; k < 16; ++k)
                acc += (double)dv_tc_emu::f32((unsigned)op.a[h][k] << 16) * dv_tc_emu::f32((unsigned)op.b[c][k] << 16);
            float& out = op.d[4 * j + i];
            out = (float)(acc + (op.accumulate ? (double)out : 0.0));
        }
    return;
changed:
    char m[512];
    snprintf(m, sizeof m, "shared memory read by the wgmma at %s:%d was written before a wgmma.wait_group covered it", op.file, op.line);
    dv_emu::kernel_error(m, file, line);
}

inline void commit() {
    Thread& t = me();
    t.groups.push_back(std::move(t.open));
    t.open.clear();
}

inline void wait(unsigned pending, const char* file, int line) {
    Thread& t = me();
    while (t.groups.size() > pending) {
        for (const Op& op : t.groups.front()) run(op, file, line);
        t.groups.pop_front();
    }
    // the thread may now read or write its accumulators: the next wgmma needs a fence
    t.fenced = false;
}

// At the end of a block's kernel: groups still pending are a bug (their results never land).
inline void check_drained(const char* file, int line) {
    Thread& t = me();
    if (!t.open.empty() || !t.groups.empty()) dv_emu::kernel_error("the thread ends with wgmma operations no wgmma.wait_group covered", file, line);
}

}  // namespace dv_wgmma_emu

__device__ __forceinline__ unsigned long long dv_wgmma_desc_sw128(const void* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    const unsigned char* base = static_cast<const unsigned char*>(dv_emu::dynamic_smem());
    const unsigned char* c = static_cast<const unsigned char*>(p);
    if (c < base || (c - base) >> 18 || ((uintptr_t)c & 15))
        dv_emu::kernel_error("wgmma descriptor: not a 16-byte aligned address in the dynamic shared memory", file, line);
    return (unsigned long long)((c - base) >> 4) | (unsigned long long)1 << 16 | (unsigned long long)(1024 >> 4) << 32 | (unsigned long long)1 << 62;
}
__device__ __forceinline__ void dv_fence_proxy_async() {}
__device__ __forceinline__ void dv_wgmma_fence() { dv_wgmma_emu::me().fenced = true; }
__device__ __forceinline__ void dv_wgmma_commit() { dv_wgmma_emu::commit(); }
template <int N>
__device__ __forceinline__ void dv_wgmma_wait(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_wgmma_emu::wait(N, file, line);
}
__device__ __forceinline__ void dv_wgmma_m64n64k16_bf16(float (&d)[32], unsigned long long da, unsigned long long db, bool accumulate,
                                                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_wgmma_emu::mma(d, da, db, accumulate, file, line);
}
// Call at the end of a kernel that issued wgmma (a no-op on the hardware).
__device__ __forceinline__ void dv_wgmma_check_drained(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    dv_wgmma_emu::check_drained(file, line);
}
#else
// The hardware's descriptor: start address (shared window) >> 4 in bits 0-13, leading byte
// offset (unused with the 128-byte swizzle) 1 in bits 16-29, stride byte offset 1024 >> 4 in bits
// 32-45, base offset 0, swizzle mode 1 (128 bytes) in bits 62-63.
__device__ __forceinline__ unsigned long long dv_wgmma_desc_sw128(const void* p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    return (unsigned long long)((a & 0x3ffff) >> 4) | (unsigned long long)1 << 16 | (unsigned long long)(1024 >> 4) << 32 | (unsigned long long)1 << 62;
}
__device__ __forceinline__ void dv_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void dv_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void dv_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void dv_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ void dv_wgmma_m64n64k16_bf16(float (&d)[32], unsigned long long da, unsigned long long db, bool accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"((int)accumulate));
}
__device__ __forceinline__ void dv_wgmma_check_drained() {}
#endif
