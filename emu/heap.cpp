// The emulated device's memory: every allocation is its own mapping
//   [guard page][canary ... ][data][guard page]
// so the byte after the data is the first byte of a PROT_NONE page (reading or writing past the
// end faults at once) and writes just before the start change the canary, which the launcher
// checks after each launch. The data ends where the guard page starts, so it is aligned to the
// largest power of two dividing its size (up to a page): exact end, and float4 loads stay
// aligned whenever the size allows them. Fresh data holds 0xFF bytes (NaN) so unwritten outputs
// show up in tests.

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include "internal.h"

namespace dv_emu_rt {

size_t page_size() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

namespace {

constexpr size_t CANARY = 256;  // at least this many checked bytes before each allocation
constexpr unsigned char CANARY_BYTE = 0xCB;

struct Alloc {
    char* map;
    size_t map_len;
    char* data;
    size_t size;
    char* canary() const { return map + page_size(); }
};
std::mutex heap_mu;
std::map<uintptr_t, Alloc> heap;  // by data address

const Alloc* find_alloc(uintptr_t p) {
    auto it = heap.upper_bound(p);
    if (it == heap.begin()) return nullptr;
    --it;
    const Alloc& a = it->second;
    return p <= (uintptr_t)a.data + a.size ? &a : nullptr;
}

// The allocation whose whole mapping (guard pages and canary included) holds p: the first one
// whose data starts after p (p in its canary or front guard) or the one before (p in its data
// or end guard). Mappings do not overlap.
const Alloc* find_mapping(uintptr_t p) {
    auto it = heap.upper_bound(p);
    for (int k = 0; k < 2; ++k, --it) {
        if (it != heap.end()) {
            const Alloc& a = it->second;
            if (p >= (uintptr_t)a.map && p < (uintptr_t)a.map + a.map_len) return &a;
        }
        if (it == heap.begin()) break;
    }
    return nullptr;
}

}  // namespace

bool heap_lookup(uintptr_t p, uintptr_t* data, size_t* size) {
    std::lock_guard<std::mutex> g(heap_mu);
    const Alloc* a = find_alloc(p);
    if (!a) return false;
    *data = (uintptr_t)a->data, *size = a->size;
    return true;
}

std::string heap_place(uintptr_t addr) {
    std::lock_guard<std::mutex> g(heap_mu);
    const Alloc* a = find_mapping(addr);
    if (!a) return "";
    uintptr_t d = (uintptr_t)a->data;
    return fmt("offset %lld of a %zu-byte allocation, %s", (long long)(addr - d), a->size,
               addr >= d + a->size ? "past its end" : "before its start");
}

std::string heap_canary_damage(uintptr_t data) {
    std::lock_guard<std::mutex> g(heap_mu);
    const Alloc* a = find_alloc(data);
    if (!a || (uintptr_t)a->data != data) return "";
    char* c = a->canary();
    while (c < a->data && (unsigned char)*c == CANARY_BYTE) ++c;
    if (c == a->data) return "";
    size_t before = a->data - c;
    memset(a->canary(), CANARY_BYTE, a->data - a->canary());
    return fmt("wrote before the start of a %zu-byte allocation at 0x%lx (%zu bytes before it)", a->size,
               (unsigned long)data, before);
}

}  // namespace dv_emu_rt

using namespace dv_emu_rt;

extern "C" {

void* dv_emu_malloc(unsigned long bytes) {
    size_t pg = page_size();
    size_t rw = round_up(bytes + CANARY, pg), len = pg + rw + pg;
    void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* map = (char*)m;
    if (mprotect(map + pg, rw, PROT_READ | PROT_WRITE) != 0) {
        munmap(map, len);
        return nullptr;
    }
    char* data = map + pg + rw - bytes;
    memset(map + pg, CANARY_BYTE, data - (map + pg));
    memset(data, GARBAGE_BYTE, bytes);
    std::lock_guard<std::mutex> g(heap_mu);
    heap[(uintptr_t)data] = Alloc{map, len, data, bytes};
    return data;
}

void dv_emu_free(void* p) {
    std::lock_guard<std::mutex> g(heap_mu);
    auto it = heap.find((uintptr_t)p);
    if (it == heap.end()) return;
    munmap(it->second.map, it->second.map_len);
    heap.erase(it);
}

// The live allocation holding p (its end address included): 1 with base and size, else 0.
int dv_emu_lookup(const void* p, void** base, unsigned long* size) {
    std::lock_guard<std::mutex> g(heap_mu);
    const Alloc* a = find_alloc((uintptr_t)p);
    if (!a) return 0;
    if (base) *base = a->data;
    if (size) *size = a->size;
    return 1;
}

unsigned long dv_emu_available_bytes() { return (unsigned long)sysconf(_SC_AVPHYS_PAGES) * page_size(); }

}  // extern "C"
