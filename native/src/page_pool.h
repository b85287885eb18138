// A per-device pool of physical pages (CUDA allocation handles; tokens on the host).
// cuMemCreate costs ~13 us per page and cuMemRelease is similar, so the hot path reuses handles:
// acquire takes free handles first and creates only on a miss; release keeps up to max_free handles
// and returns the rest to the driver. An optional physical limit caps created pages per device.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "backend.h"
#include "stats.h"

namespace kvlab {

struct PoolCounters {
    uint64_t hits = 0, misses = 0, created = 0, released = 0;
    size_t in_use = 0, free = 0, max_free = 0, physical_limit_pages = 0;
    OpStats create, release;
};

class PagePool {
public:
    PagePool(std::shared_ptr<Backend> backend, size_t page_size, size_t max_free);

    // Fill out[0..n) with handles; all or nothing. Returns how many came from the free list.
    size_t acquire(size_t n, uint64_t *out);
    void release(const uint64_t *handles, size_t n);
    // Release free handles to the driver until at most `keep` remain; returns how many were released.
    size_t trim(size_t keep);

    void set_max_free(size_t n);
    void set_physical_limit_pages(size_t n);  // 0 = no limit
    PoolCounters counters() const;
    const std::shared_ptr<Backend> &backend() const { return backend_; }
    size_t page_size() const { return page_size_; }

private:
    void release_locked(size_t keep);
    std::shared_ptr<Backend> backend_;
    size_t page_size_;
    mutable std::mutex mu_;
    std::vector<uint64_t> free_;
    PoolCounters c_;
};

// The one pool for (device, page size); created on first use and kept for the process lifetime.
std::shared_ptr<PagePool> pool_for(const std::shared_ptr<Backend> &backend, size_t page_size);

}  // namespace kvlab
