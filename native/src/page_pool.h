// A per-device pool of physical pages (CUDA allocation handles; tokens on the host), one per handle size.
// cuMemCreate costs ~13 us per page and cuMemRelease is similar, so the hot path reuses handles:
// acquire takes free handles first and creates only on a miss; release keeps up to max_free handles
// and returns the rest to the driver.
//
// Pools of different handle sizes on one device keep separate free lists (a free 2 MiB handle cannot
// back a 32 MiB slot), so memory moves between them only through the driver: trim (or a low max_free)
// releases free handles, and the other size creates anew. The optional physical limit is the device's,
// shared by all its pools, and counts bytes (in use + free) across sizes.
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
    size_t in_use = 0, free = 0, max_free = 0;
    OpStats create, release;
};

// Physical bytes this process holds on one device, over all handle sizes, and their optional cap.
struct DeviceBudget {
    std::mutex mu;
    size_t held_bytes = 0, limit_bytes = 0;  // limit 0 = none
};

class PagePool {
public:
    PagePool(std::shared_ptr<Backend> backend, size_t page_size, size_t max_free,
             std::shared_ptr<DeviceBudget> budget);

    // Fill out[0..n) with handles; all or nothing. Returns how many came from the free list.
    size_t acquire(size_t n, uint64_t *out);
    void release(const uint64_t *handles, size_t n);
    // Release free handles to the driver until at most `keep` remain; returns how many were released.
    size_t trim(size_t keep);

    void set_max_free(size_t n);
    // The device's cap on physical bytes held by all its pools (0 = none); never releases anything.
    void set_physical_limit_bytes(size_t bytes);
    size_t physical_limit_bytes() const;
    size_t device_held_bytes() const;
    PoolCounters counters() const;
    const std::shared_ptr<Backend> &backend() const { return backend_; }
    size_t page_size() const { return page_size_; }

private:
    void release_locked(size_t keep);
    std::shared_ptr<Backend> backend_;
    size_t page_size_;
    std::shared_ptr<DeviceBudget> budget_;  // lock order: mu_, then budget_->mu
    mutable std::mutex mu_;
    std::vector<uint64_t> free_;
    PoolCounters c_;
};

// The one pool for (device, handle size); created on first use and kept for the process lifetime.
std::shared_ptr<PagePool> pool_for(const std::shared_ptr<Backend> &backend, size_t page_size);

}  // namespace kvlab
