// Host backend: the same reserve/map/unmap semantics as CUDA VMM, built on mmap.
// reserve = mmap(PROT_NONE, MAP_NORESERVE); map = mprotect(RW) + MADV_POPULATE_WRITE so the memory is
// committed (resident) at map time, like cuMemMap; unmap = madvise(MADV_DONTNEED) + mprotect(PROT_NONE),
// which returns the memory to the OS and makes the range fault again.
// "Physical pages" have no handle on the host: the pool's handles are tokens, so pool accounting and
// limits behave exactly as on CUDA.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "backend.h"
#include "errors.h"
#include "stats.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace kvlab {
namespace {

std::atomic<long> g_fail_after{-1};
std::atomic<int> g_fail_kind{0};

std::string errno_text(const char *what) {
    return std::string(what) + " failed: " + std::strerror(errno);
}

// Commit pages so that they count as resident now, not at first touch.
bool populate(void *addr, size_t bytes) {
    static std::atomic<bool> have_populate{true};
    if (have_populate.load() && madvise(addr, bytes, MADV_POPULATE_WRITE) == 0) return true;
    if (errno == EINVAL) {
        have_populate = false;  // kernel < 5.14: touch one byte per OS page instead
        long os_page = sysconf(_SC_PAGESIZE);
        auto *p = static_cast<volatile char *>(addr);
        for (size_t off = 0; off < bytes; off += (size_t)os_page) p[off] = 0;
        return true;
    }
    return false;
}

class HostBackend final : public Backend {
public:
    std::string name() const override { return "host"; }
    std::string device() const override { return "cpu"; }
    int dlpack_device_type() const override { return kDLCPU; }
    int device_id() const override { return 0; }
    size_t granularity() const override { return (size_t)sysconf(_SC_PAGESIZE); }
    std::pair<size_t, size_t> mem_info() override {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        return {(size_t)sysconf(_SC_AVPHYS_PAGES) * page, (size_t)sysconf(_SC_PHYS_PAGES) * page};
    }

    // One PROT_NONE guard page on each side keeps the kernel from merging our read-write pages with
    // a neighbour's mapping, so /proc/self/smaps shows exactly this arena's resident bytes.
    uintptr_t reserve(size_t bytes) override {
        size_t guard = granularity();
        void *p = mmap(nullptr, bytes + 2 * guard, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fail(ErrorKind::Backend, errno_text("mmap reserve"));
        return (uintptr_t)p + guard;
    }
    void release_reservation(uintptr_t addr, size_t bytes) noexcept override {
        size_t guard = granularity();
        munmap((void *)(addr - guard), bytes + 2 * guard);
    }

    uint64_t create_page(size_t) override { return ++next_token_; }
    void release_page(uint64_t, size_t) noexcept override {}

    void map_run(uintptr_t addr, size_t page_size, const uint64_t *, size_t n) override {
        size_t ok = n;
        long after = g_fail_after.load();
        if (after >= 0) {
            if ((size_t)after < n) {
                ok = (size_t)after;
                g_fail_after = -1;
            } else {
                g_fail_after = after - (long)n;
            }
        }
        if (ok > 0) map_pages(addr, ok * page_size);
        if (ok < n) {
            if (ok > 0) unmap_run(addr, ok * page_size);
            fail((ErrorKind)g_fail_kind.load(), "injected failure while mapping page " +
                                                    std::to_string(ok) + " of a run of " +
                                                    std::to_string(n));
        }
    }

    void unmap_run(uintptr_t addr, size_t bytes) override {
        if (madvise((void *)addr, bytes, MADV_DONTNEED) != 0)
            fail(ErrorKind::Backend, errno_text("madvise(MADV_DONTNEED)"));
        if (mprotect((void *)addr, bytes, PROT_NONE) != 0)
            fail(ErrorKind::Backend, errno_text("mprotect(PROT_NONE)"));
    }

    Floor driver_floor(size_t page_size, size_t batch, size_t repeats, size_t reserve_bytes) override {
        size_t bytes = page_size * batch, reserved = std::max(bytes, reserve_bytes);
        uintptr_t base = reserve(reserved);
        std::vector<double> map_ns, unmap_ns;
        for (size_t r = 0; r < repeats; r++) {
            uint64_t t0 = now_ns();
            for (size_t i = 0; i < batch; i++) map_pages(base + i * page_size, page_size);
            uint64_t t1 = now_ns();
            unmap_run(base, bytes);
            uint64_t t2 = now_ns();
            map_ns.push_back(double(t1 - t0) / batch);
            unmap_ns.push_back(double(t2 - t1) / batch);
        }
        release_reservation(base, reserved);
        return {median(map_ns), 0.0, median(unmap_ns)};  // mprotect grants access as part of the map
    }

private:
    void map_pages(uintptr_t addr, size_t bytes) {
        if (mprotect((void *)addr, bytes, PROT_READ | PROT_WRITE) != 0)
            fail(ErrorKind::Backend, errno_text("mprotect(RW)"));
        if (!populate((void *)addr, bytes)) {
            int err = errno;
            mprotect((void *)addr, bytes, PROT_NONE);
            madvise((void *)addr, bytes, MADV_DONTNEED);
            fail(err == ENOMEM ? ErrorKind::OutOfPhysicalMemory : ErrorKind::Backend,
                 std::string("committing host pages failed: ") + std::strerror(err));
        }
    }
    std::atomic<uint64_t> next_token_{0};
};

}  // namespace

std::shared_ptr<Backend> host_backend() {
    static auto *instance = new std::shared_ptr<Backend>(std::make_shared<HostBackend>());
    return *instance;
}

void host_inject_map_failure(long after, int kind) {
    g_fail_kind = kind;
    g_fail_after = after;
}

}  // namespace kvlab
