// Shared by the emulator's runtime files (not by kernels): small helpers, the guarded heap's
// interface to the launcher, and a launch as runtime.cpp hands it to scheduler.cpp.
//   heap.cpp       the guarded heap: dv_emu_malloc / free / lookup, fault and canary reports
//   scheduler.cpp  a block's threads as fibers, barriers, warp operations
//   runtime.cpp    registry, dv_emu_launch, the fault handler
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <mutex>
#include <string>

#include "cuda_emu.h"

namespace dv_emu_rt {

constexpr unsigned char GARBAGE_BYTE = 0xFF;  // fresh memory: NaN floats, -1 ints

size_t page_size();
inline size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));

// The live allocation whose range [data, data + size] holds p (the end address counts).
bool heap_lookup(uintptr_t p, uintptr_t* data, size_t* size);
// Where a faulting address lies relative to the allocation whose guard pages or canary hold it
// ("offset 400 of a 400-byte allocation, past its end"); empty if it is not near one.
std::string heap_place(uintptr_t addr);
// A report if a kernel wrote into the canary before the allocation at `data` (repaired after);
// empty if intact.
std::string heap_canary_damage(uintptr_t data);

// A registered kernel: its function, the launcher that unpacks kernelParams into its call, and
// its parameter kinds (dv_emu::param_kind).
struct Kernel {
    std::string name;
    dv_emu::AnyFn fn;
    dv_emu::Invoker inv;
    std::string sig;
};

// One launch, shared by the OS threads that run its blocks.
struct Launch {
    const Kernel* k;
    dim3 grid, block;
    unsigned shared_bytes;
    void** args;
    int mode;
    uint64_t seed;
    uint64_t nblocks;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex err_mu;
    std::string err;  // the first failure, without the "kernel `name`: " prefix
};

// Runs blocks of L on the calling OS thread until none are left or one failed (L.failed, L.err).
void run_blocks(Launch& L);
// From the SIGSEGV/SIGBUS handler: if a kernel thread of this OS thread faulted, jumps back into
// its block scheduler (does not return); otherwise returns.
void kernel_fault(void* addr, int write);

}  // namespace dv_emu_rt
