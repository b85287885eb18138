// An Arena is a reserved virtual range of `capacity` bytes, split into pages, of which only the pages
// asked for are backed by physical memory. map/unmap work on contiguous runs (one access call per
// run on CUDA) and map is transactional: it either maps every requested page or changes nothing.
//
// Pages (the unit of the bitmap, 2 MiB by default) and physical handles (the unit the driver charges
// for, the pool's page size) may differ: a handle covers `pages_per_handle` consecutive, aligned pages.
// The driver maps a handle only whole (cuMemMap's offset must be 0), so map backs every handle a
// requested page lies in, and unmap refuses to split a mapped handle.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "backend.h"
#include "page_pool.h"
#include "stats.h"

namespace kvlab {

// The virtual range itself. Tensor views hold a reference, so the addresses stay reserved (though
// unmapped) until the last view is gone, even after the arena is closed.
struct Reservation {
    std::shared_ptr<Backend> backend;
    uintptr_t base;
    size_t bytes;
    Reservation(std::shared_ptr<Backend> b, uintptr_t addr, size_t n) : backend(std::move(b)), base(addr), bytes(n) {}
    Reservation(const Reservation &) = delete;
    Reservation &operator=(const Reservation &) = delete;
    ~Reservation() { backend->release_reservation(base, bytes); }
};

struct ArenaCounters {
    OpStats map, unmap;
    uint64_t pool_hits = 0, pool_misses = 0;
};

class Arena {
public:
    // `pool` supplies the handles (its page size is the handle size); `page_size` divides it.
    Arena(std::shared_ptr<PagePool> pool, size_t capacity, size_t page_size);
    ~Arena();
    Arena(const Arena &) = delete;
    Arena &operator=(const Arena &) = delete;

    // Pages are indices in [0, n_pages). Already mapped (resp. unmapped) pages are skipped.
    // Returns how many pages changed state.
    size_t map(const int64_t *pages, size_t n);
    size_t unmap(const int64_t *pages, size_t n);
    size_t unmap_all();
    void close();

    void set_limit_bytes(size_t bytes);  // 0 = no limit
    size_t limit_bytes() const;
    bool closed() const;
    size_t mapped_pages() const;
    std::vector<uint8_t> bitmap() const;
    ArenaCounters counters() const;

    uintptr_t base() const { return base_; }
    size_t capacity() const { return capacity_; }
    size_t page_size() const { return page_size_; }
    size_t n_pages() const { return n_pages_; }
    size_t handle_size() const { return handle_size_; }
    const std::shared_ptr<PagePool> &pool() const { return pool_; }
    std::shared_ptr<Reservation> reservation() const;

private:
    void check_open() const;
    // Sorted, de-duplicated handle slots whose mapped state differs from `want_mapped`.
    std::vector<int64_t> pending(const int64_t *pages, size_t n, bool want_mapped) const;
    size_t unmap_sorted(const std::vector<int64_t> &pages);

    std::shared_ptr<PagePool> pool_;
    std::shared_ptr<Backend> backend_;
    std::shared_ptr<Reservation> reservation_;
    uintptr_t base_;
    size_t capacity_, page_size_, handle_size_, pages_per_handle_, n_pages_, n_slots_;
    mutable std::mutex mu_;
    std::vector<uint8_t> mapped_;    // per handle slot
    std::vector<uint64_t> handles_;  // per handle slot
    size_t mapped_count_ = 0, limit_bytes_ = 0;  // mapped_count_ in handle slots
    bool closed_ = false;
    ArenaCounters c_;
};

}  // namespace kvlab
