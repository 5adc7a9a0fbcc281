// The threads of a block as fibers, and the barriers and warp operations between them.
//
// One OS thread runs one block at a time (run_blocks takes blocks from the launch until none are
// left or one failed). The block's threads are fibers: 64 KiB stacks with a guard page, reused
// between blocks, switched by 20 instructions on x86-64 (ucontext elsewhere). A round resumes
// every runnable fiber once, in the launch's schedule order (forward, reverse, or shuffled anew
// every round from a seed); a fiber runs until it finishes or reaches a __syncthreads() or warp
// operation. Then:
//   - __syncthreads() releases when every live thread of the block waits at it (exited threads
//     count as arrived, as on the hardware); threads waiting at different __syncthreads() call
//     sites are an error (barrier divergence), and waiting that nothing can release is a deadlock.
//   - A warp operation releases when every non-exited lane named in its mask waits at a warp
//     operation with the same mask; then all of them read (a shuffle from a lane that is not
//     taking part returns all-ones bits: NaN for floats).
// A memory fault inside a fiber comes back here by siglongjmp (kernel_fault, called from
// runtime.cpp's signal handler) and becomes the block's error.

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda_emu.h"
#include "internal.h"

using namespace dv_emu_rt;

namespace {

constexpr size_t FIBER_STACK = 64 << 10;  // kernels keep little on the stack
constexpr uint64_t GARBAGE_BITS = ~0ull;  // what a shuffle from a lane not taking part reads

// ---- context switch -----------------------------------------------------------------------------
// ctx_init prepares a fresh fiber to start in dv_emu_fiber_main; ctx_switch(from, to) saves the
// running context in `from` and resumes `to`. ucontext's swapcontext makes two sigprocmask
// system calls per switch, which made barrier-heavy kernels ~10x slower; on x86-64 we save only
// the callee-saved registers and the FP control words.
}  // namespace
extern "C" void dv_emu_fiber_main();
namespace {
#if defined(__x86_64__) && !defined(DV_EMU_UCONTEXT)
struct Ctx {
    void* sp;
};
}  // namespace
extern "C" void dv_emu_switch(void** save_sp, void* to_sp);
extern "C" void dv_emu_fiber_start();
asm(R"(
    .text
    .globl dv_emu_switch
    .hidden dv_emu_switch
    .type dv_emu_switch, @function
dv_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size dv_emu_switch, .-dv_emu_switch

    .globl dv_emu_fiber_start
    .hidden dv_emu_fiber_start
    .type dv_emu_fiber_start, @function
dv_emu_fiber_start:
    call dv_emu_fiber_main@PLT
    ud2
    .size dv_emu_fiber_start, .-dv_emu_fiber_start
)");
namespace {
// The stack as dv_emu_switch leaves it: FP control words, r15..rbp, return address.
void ctx_init(Ctx& c, char* stack, size_t size) {
    void** sp = (void**)(((uintptr_t)stack + size) & ~(uintptr_t)15);
    *--sp = (void*)dv_emu_fiber_start;  // after `ret`, rsp is 16-byte aligned for its call
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    --sp;
    uint32_t* fp = (uint32_t*)sp;
    fp[0] = 0x1F80;  // default MXCSR
    fp[1] = 0x037F;  // default x87 control word
    c.sp = sp;
}
inline void ctx_switch(Ctx& from, Ctx& to) { dv_emu_switch(&from.sp, to.sp); }
#else
struct Ctx {
    ucontext_t uc;
};
void ctx_init(Ctx& c, char* stack, size_t size) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;  // dv_emu_fiber_main never returns
    makecontext(&c.uc, dv_emu_fiber_main, 0);
}
inline void ctx_switch(Ctx& from, Ctx& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---- fibers and workers ------------------------------------------------------------------------
enum State { RUNNABLE, AT_SYNC, AT_WARP, DONE };

struct Fiber {
    Ctx ctx;
    char* map = nullptr;  // [guard page][stack]
    uint3 tid;
    unsigned lin;  // linear thread index in the block: warp lin / 32, lane lin % 32
    State st;
    // at a barrier
    int kind, pred, arg, width;
    unsigned mask;
    uint64_t val, res;
    const char* file;
    int line;
};

struct Worker {
    std::vector<std::unique_ptr<Fiber>> fibers;
    Ctx sched;
    Fiber* cur = nullptr;
    Launch* L = nullptr;
    uint3 bidx;
    char* smem_map = nullptr;  // [dynamic shared memory][guard page]
    size_t smem_len = 0;
    char* smem = nullptr;
    sigjmp_buf jb;
    std::string err;  // a misuse found while releasing a barrier

    ~Worker() {
        for (auto& f : fibers) munmap(f->map, FIBER_STACK + page_size());
        if (smem_map) munmap(smem_map, smem_len);
    }
};

thread_local Worker* tw = nullptr;
thread_local uint64_t tl_block_serial = 0;
thread_local volatile sig_atomic_t tl_in_kernel = 0;
thread_local void* volatile tl_fault_addr = nullptr;
thread_local volatile int tl_fault_write = -1;  // -1 unknown, 0 read, 1 write

std::mutex pool_mu;
std::vector<std::unique_ptr<Worker>> pool;  // idle workers keep their fiber stacks

std::unique_ptr<Worker> take_worker() {
    std::lock_guard<std::mutex> g(pool_mu);
    if (pool.empty()) return std::make_unique<Worker>();
    auto w = std::move(pool.back());
    pool.pop_back();
    return w;
}
void give_worker(std::unique_ptr<Worker> w) {
    std::lock_guard<std::mutex> g(pool_mu);
    pool.push_back(std::move(w));
}

bool ensure_fibers(Worker& w, unsigned n, std::string& err) {
    size_t pg = page_size();
    while (w.fibers.size() < n) {
        auto f = std::make_unique<Fiber>();
        void* m = mmap(nullptr, FIBER_STACK + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            err = fmt("cannot map %u fiber stacks of %zu KiB", n, FIBER_STACK >> 10);
            return false;
        }
        f->map = (char*)m;
        mprotect(f->map, pg, PROT_NONE);  // stack overflow faults
        w.fibers.push_back(std::move(f));
    }
    return true;
}

bool ensure_smem(Worker& w, unsigned bytes, std::string& err) {
    size_t pg = page_size();
    size_t need = round_up(round_up(bytes, 16), pg) + pg;
    if (w.smem_len < need) {
        if (w.smem_map) munmap(w.smem_map, w.smem_len);
        void* m = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            w.smem_map = nullptr, w.smem_len = 0;
            err = fmt("cannot map %u bytes of dynamic shared memory", bytes);
            return false;
        }
        w.smem_map = (char*)m, w.smem_len = need;
        mprotect(w.smem_map + need - pg, pg, PROT_NONE);
    }
    w.smem = w.smem_map + w.smem_len - pg - round_up(bytes, 16);
    return true;
}

}  // namespace

extern "C" __attribute__((visibility("hidden"))) void dv_emu_fiber_main() {
    Worker* w = tw;
    Fiber* f = w->cur;
    w->L->k->inv(w->L->k->fn, w->L->args);
    f->st = DONE;
    ctx_switch(f->ctx, w->sched);
    __builtin_unreachable();  // a finished fiber is never resumed
}

namespace {

void resume(Worker& w, Fiber& f) {
    w.cur = &f;
    threadIdx = f.tid;
    tl_in_kernel = 1;
    ctx_switch(w.sched, f.ctx);
    tl_in_kernel = 0;
}

// Back to the scheduler from inside a fiber (it has set its state).
void yield_to_scheduler() {
    Worker* w = tw;
    ctx_switch(w->cur->ctx, w->sched);
}

std::string dim_str(uint3 v) { return fmt("(%u,%u,%u)", v.x, v.y, v.z); }
std::string where(const Worker& w, const Fiber& f) {
    return "thread " + dim_str(f.tid) + " of block " + dim_str(w.bidx);
}
const char* warp_name(int kind) {
    static const char* names[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync", "__activemask"};
    return names[kind];
}
const char* sync_name(int kind) {
    static const char* names[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and", "__syncthreads_or"};
    return names[kind];
}

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void make_order(std::vector<unsigned>& order, const Launch& L, uint64_t block, uint64_t round) {
    unsigned n = (unsigned)order.size();
    for (unsigned i = 0; i < n; ++i) order[i] = L.mode == 1 ? n - 1 - i : i;
    if (L.mode == 2) {
        uint64_t s = L.seed ^ (block * 0xD1B54A32D192ED03ull) ^ (round * 0x8CB92BA72F3D8DD7ull);
        for (unsigned i = n - 1; i > 0; --i) std::swap(order[i], order[splitmix(s) % (i + 1)]);
    }
}

// Releases every warp group that can go on; false with w.err set on an inconsistent group.
bool release_warps(Worker& w, unsigned n, bool& released) {
    auto& F = w.fibers;
    for (unsigned base = 0; base < n; base += 32) {
        unsigned lanes = std::min(32u, n - base);
        // __activemask(): called only when nothing can run, so the lanes waiting there are all
        // the lanes that reached it together.
        unsigned active = 0;
        for (unsigned l = 0; l < lanes; ++l)
            if (F[base + l]->st == AT_WARP && F[base + l]->kind == dv_emu::W_ACTIVE) active |= 1u << l;
        if (active) {
            for (unsigned l = 0; l < lanes; ++l)
                if (active >> l & 1u) F[base + l]->res = active, F[base + l]->st = RUNNABLE;
            released = true;
            continue;
        }
        for (unsigned l = 0; l < lanes; ++l) {
            Fiber& f = *F[base + l];
            if (f.st != AT_WARP) continue;
            if (!(f.mask >> l & 1u)) {
                w.err = fmt("%s at %s:%d: lane %u's mask 0x%08x does not include itself (%s)", warp_name(f.kind),
                            f.file, f.line, l, f.mask, where(w, f).c_str());
                return false;
            }
            unsigned part = 0;  // lanes taking part: named in the mask, existing, not exited
            bool ready = true;
            for (unsigned j = 0; j < lanes; ++j) {
                if (!(f.mask >> j & 1u) || F[base + j]->st == DONE) continue;
                Fiber& g = *F[base + j];
                if (g.st != AT_WARP || g.mask != f.mask) ready = false;
                part |= 1u << j;
            }
            if (!ready) continue;
            unsigned ballot = 0;
            for (unsigned j = 0; j < lanes; ++j) {
                Fiber& g = *F[base + j];
                if (!(part >> j & 1u)) continue;
                if (g.kind != f.kind || g.width != f.width) {
                    w.err = fmt("warp divergence: lane %u is at %s (%s:%d) while lane %u is at %s (%s:%d), same mask "
                                "0x%08x (block %s, warp %u)",
                                l, warp_name(f.kind), f.file, f.line, j, warp_name(g.kind), g.file, g.line, f.mask,
                                dim_str(w.bidx).c_str(), base / 32);
                    return false;
                }
                if (g.val) ballot |= 1u << j;
            }
            int wd = f.width;
            if (f.kind >= dv_emu::W_SHFL_IDX && f.kind <= dv_emu::W_SHFL_XOR && (wd < 1 || wd > 32 || (wd & (wd - 1)))) {
                w.err = fmt("%s at %s:%d: width %d is not a power of two in 1..32 (%s)", warp_name(f.kind), f.file,
                            f.line, wd, where(w, f).c_str());
                return false;
            }
            for (unsigned j = 0; j < lanes; ++j) {
                if (!(part >> j & 1u)) continue;
                Fiber& g = *F[base + j];
                int seg = (int)j & ~(wd - 1), src = (int)j;
                switch (g.kind) {
                case dv_emu::W_SHFL_IDX: src = seg + (g.arg & (wd - 1)); break;
                case dv_emu::W_SHFL_UP: src = (int)j - g.arg < seg ? (int)j : (int)j - g.arg; break;
                case dv_emu::W_SHFL_DOWN: src = (int)j + g.arg >= seg + wd ? (int)j : (int)j + g.arg; break;
                case dv_emu::W_SHFL_XOR: src = ((int)j ^ g.arg) >= seg + wd ? (int)j : (int)j ^ g.arg; break;
                }
                switch (g.kind) {
                case dv_emu::W_BALLOT: g.res = ballot; break;
                case dv_emu::W_ANY: g.res = ballot != 0; break;
                case dv_emu::W_ALL: g.res = ballot == part; break;
                case dv_emu::W_SYNC: g.res = 0; break;
                default:
                    g.res = src >= 0 && src < (int)lanes && (part >> src & 1u) ? F[base + src]->val : GARBAGE_BITS;
                }
            }
            for (unsigned j = 0; j < lanes; ++j)
                if (part >> j & 1u) F[base + j]->st = RUNNABLE;
            released = true;
        }
    }
    return true;
}

std::string deadlock(Worker& w, unsigned n) {
    auto& F = w.fibers;
    unsigned sync = 0, warp = 0, done = 0;
    const Fiber *fs = nullptr, *fw = nullptr;
    for (unsigned i = 0; i < n; ++i) {
        const Fiber& f = *F[i];
        if (f.st == AT_SYNC) sync++, fs = fs ? fs : &f;
        if (f.st == AT_WARP) warp++, fw = fw ? fw : &f;
        if (f.st == DONE) done++;
    }
    std::string m = fmt("deadlock in block %s: ", dim_str(w.bidx).c_str());
    if (fs) m += fmt("%u threads wait at %s (%s:%d, first %s), ", sync, sync_name(fs->kind), fs->file, fs->line,
                     dim_str(fs->tid).c_str());
    if (fw) m += fmt("%u threads wait at %s (%s:%d, first %s, mask 0x%08x) for lanes that are elsewhere, ", warp,
                     warp_name(fw->kind), fw->file, fw->line, dim_str(fw->tid).c_str(), fw->mask);
    m += fmt("%u exited", done);
    return m;
}

// Runs the threads of the current block to completion; false with err set.
bool schedule(Worker& w, std::string& err) {
    Launch& L = *w.L;
    unsigned bx = L.block.x, by = L.block.y, n = bx * by * L.block.z;
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = *w.fibers[i];
        ctx_init(f.ctx, f.map + page_size(), FIBER_STACK);
        f.tid = uint3{i % bx, i / bx % by, i / (bx * by)};
        f.lin = i;
        f.st = RUNNABLE;
    }
    uint64_t block = w.bidx.x + (uint64_t)L.grid.x * (w.bidx.y + (uint64_t)L.grid.y * w.bidx.z);
    std::vector<unsigned> order(n);
    for (uint64_t round = 0;; ++round) {
        make_order(order, L, block, round);
        for (unsigned i : order) {
            if (w.fibers[i]->st != RUNNABLE) continue;
            resume(w, *w.fibers[i]);
            if (!w.err.empty()) return err = w.err, false;
        }
        unsigned sync = 0, warp = 0, done = 0;
        for (unsigned i = 0; i < n; ++i) {
            State s = w.fibers[i]->st;
            sync += s == AT_SYNC, warp += s == AT_WARP, done += s == DONE;
        }
        if (done == n) return true;
        if (warp) {
            bool released = false;
            if (!release_warps(w, n, released)) return err = w.err, false;
            if (released) continue;
        }
        if (warp || !sync) return err = deadlock(w, n), false;
        // every live thread is at a __syncthreads(): all at the same one?
        const Fiber* first = nullptr;
        int count = 0, all = 1, any = 0;
        for (unsigned i = 0; i < n; ++i) {
            const Fiber& f = *w.fibers[i];
            if (f.st != AT_SYNC) continue;
            if (!first) first = &f;
            if (f.line != first->line || strcmp(f.file, first->file) != 0 || f.kind != first->kind) {
                err = fmt("barrier divergence in block %s: thread %s waits at %s (%s:%d) while thread %s waits at %s "
                          "(%s:%d)",
                          dim_str(w.bidx).c_str(), dim_str(first->tid).c_str(), sync_name(first->kind), first->file,
                          first->line, dim_str(f.tid).c_str(), sync_name(f.kind), f.file, f.line);
                return false;
            }
            count += f.pred, all &= f.pred, any |= f.pred;
        }
        uint64_t res = first->kind == dv_emu::S_COUNT ? count : first->kind == dv_emu::S_AND ? all : any;
        for (unsigned i = 0; i < n; ++i) {
            Fiber& f = *w.fibers[i];
            if (f.st == AT_SYNC) f.st = RUNNABLE, f.res = res;
        }
    }
}

std::string describe_fault(Worker& w, uintptr_t addr, int write) {
    const char* what = write == 1 ? "write" : write == 0 ? "read" : "access";
    size_t pg = page_size();
    std::string place = heap_place(addr);
    if (place.empty() && w.smem_map && addr >= (uintptr_t)w.smem_map && addr < (uintptr_t)w.smem_map + w.smem_len) {
        uintptr_t e = (uintptr_t)w.smem_map + w.smem_len - pg;
        place = fmt("offset %zu of the %u-byte dynamic shared memory, past its end",
                    (size_t)(addr - (e - round_up(w.L->shared_bytes, 16))), w.L->shared_bytes);
    }
    if (place.empty())
        for (auto& f : w.fibers)
            if (addr >= (uintptr_t)f->map && addr < (uintptr_t)f->map + pg)
                place = fmt("stack overflow: the emulator gives each thread %zu KiB of stack", FIBER_STACK >> 10);
    if (place.empty())
        place = "not in any device allocation: a host pointer, a freed buffer, null, or a misaligned vector access";
    return fmt("out-of-bounds %s at 0x%lx (%s) by %s", what, (unsigned long)addr, place.c_str(),
               where(w, *w.cur).c_str());
}

bool run_block(Worker& w, uint64_t b, std::string& err) {
    Launch& L = *w.L;
    w.bidx = uint3{(unsigned)(b % L.grid.x), (unsigned)(b / L.grid.x % L.grid.y), (unsigned)(b / L.grid.x / L.grid.y)};
    blockIdx = w.bidx;
    ++tl_block_serial;
    memset(w.smem, GARBAGE_BYTE, L.shared_bytes);
    w.err.clear();
    if (sigsetjmp(w.jb, 1)) {
        tl_in_kernel = 0;
        err = describe_fault(w, (uintptr_t)tl_fault_addr, tl_fault_write);
        return false;
    }
    return schedule(w, err);
}

// Fiber stack overflows fault on the fiber's stack, so the handler needs an alternate one.
void ensure_altstack() {
    static thread_local std::unique_ptr<char[]> mine;
    stack_t cur;
    if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;
    size_t sz = 64 << 10;
    mine.reset(new char[sz]);
    stack_t ss;
    ss.ss_sp = mine.get();
    ss.ss_size = sz;
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
}

}  // namespace

void* dv_emu::dynamic_smem() { return tw->smem; }

uint64_t dv_emu::block_serial() { return tl_block_serial; }

void dv_emu::kernel_error(const char* msg, const char* file, int line) {
    Worker* w = tw;
    w->err = fmt("%s (%s:%d, %s)", msg, file, line, where(*w, *w->cur).c_str());
    yield_to_scheduler();  // the scheduler sees err and abandons the block; never resumed
    __builtin_unreachable();
}

int dv_emu::syncthreads(int kind, int pred, const char* file, int line) {
    Fiber* f = tw->cur;
    f->st = AT_SYNC, f->kind = kind, f->pred = pred, f->file = file, f->line = line;
    yield_to_scheduler();
    return (int)f->res;
}

uint64_t dv_emu::warp_op(int kind, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
    Fiber* f = tw->cur;
    f->st = AT_WARP, f->kind = kind, f->mask = mask, f->val = value, f->arg = arg, f->width = width;
    f->file = file, f->line = line;
    yield_to_scheduler();
    return f->res;
}


// ---- entry points for runtime.cpp -------------------------------------------------------------
namespace dv_emu_rt {

void run_blocks(Launch& L) {
    std::unique_ptr<Worker> w = take_worker();
    ensure_altstack();
    tw = w.get();
    w->L = &L;
    blockDim = L.block;
    gridDim = L.grid;
    std::string err;
    unsigned n = L.block.x * L.block.y * L.block.z;
    if (ensure_fibers(*w, n, err) && ensure_smem(*w, L.shared_bytes, err)) {
        for (;;) {
            uint64_t b = L.next.fetch_add(1);
            if (b >= L.nblocks || L.failed.load()) break;
            if (!run_block(*w, b, err)) break;
        }
    }
    if (!err.empty()) {
        L.failed = true;
        std::lock_guard<std::mutex> g(L.err_mu);
        if (L.err.empty()) L.err = err;
    }
    tw = nullptr;
    w->L = nullptr;
    w->cur = nullptr;
    give_worker(std::move(w));
}

void kernel_fault(void* addr, int write) {
    if (!tl_in_kernel || !tw) return;
    tl_in_kernel = 0;
    tl_fault_addr = addr;
    tl_fault_write = write;
    siglongjmp(tw->jb, 1);
}

}  // namespace dv_emu_rt
