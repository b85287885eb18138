#include "page_pool.h"

#include <map>
#include <string>
#include <utility>

#include "errors.h"

namespace kvlab {

constexpr size_t kDefaultMaxFree = 32;  // 64 MiB of 2 MiB pages: absorbs bursts, cheap at idle

// The one check of the page size against the device's mapping granularity: every page size enters the
// native core here (an Arena gets its pages from a pool), before pool_for caches the pool.
PagePool::PagePool(std::shared_ptr<Backend> backend, size_t page_size, size_t max_free)
    : backend_(std::move(backend)), page_size_(page_size) {
    if (page_size_ == 0 || page_size_ % backend_->granularity() != 0)
        fail(ErrorKind::InvalidArgument, "page size " + std::to_string(page_size_) + " is not a multiple of the " +
                                             backend_->device() + " granularity " +
                                             std::to_string(backend_->granularity()));
    c_.max_free = max_free;
}

size_t PagePool::acquire(size_t n, uint64_t *out) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t hits = std::min(n, free_.size());
    size_t misses = n - hits;
    size_t total = c_.in_use + free_.size();
    if (c_.physical_limit_pages && total + misses > c_.physical_limit_pages)
        fail(ErrorKind::OutOfPhysicalMemory,
             "the " + backend_->device() + " page pool is capped at " + std::to_string(c_.physical_limit_pages) +
                 " pages and " + std::to_string(total) + " exist; " + std::to_string(misses) +
                 " more were needed (raise the pool's physical limit or free memory)");
    // Create the misses first so that a failure leaves the free list untouched.
    std::vector<uint64_t> created;
    created.reserve(misses);
    try {
        for (size_t i = 0; i < misses; i++) {
            uint64_t t0 = now_ns();
            created.push_back(backend_->create_page(page_size_));
            c_.create.record(now_ns() - t0, 1);
        }
    } catch (...) {
        for (uint64_t h : created) backend_->release_page(h, page_size_);
        throw;
    }
    for (size_t i = 0; i < hits; i++) {
        out[i] = free_.back();
        free_.pop_back();
    }
    for (size_t i = 0; i < misses; i++) out[hits + i] = created[i];
    c_.hits += hits;
    c_.misses += misses;
    c_.created += misses;
    c_.in_use += n;
    return hits;
}

void PagePool::release(const uint64_t *handles, size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.insert(free_.end(), handles, handles + n);
    c_.in_use -= n;
    release_locked(c_.max_free);
}

size_t PagePool::trim(size_t keep) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t before = free_.size();
    release_locked(keep);
    return before - free_.size();
}

void PagePool::release_locked(size_t keep) {
    if (free_.size() <= keep) return;
    size_t n = free_.size() - keep;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        backend_->release_page(free_.back(), page_size_);
        free_.pop_back();
    }
    c_.release.record(now_ns() - t0, n);
    c_.released += n;
}

void PagePool::set_max_free(size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    c_.max_free = n;
    release_locked(n);
}

void PagePool::set_physical_limit_pages(size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    c_.physical_limit_pages = n;
}

PoolCounters PagePool::counters() const {
    std::lock_guard<std::mutex> lock(mu_);
    PoolCounters c = c_;
    c.free = free_.size();
    return c;
}

std::shared_ptr<PagePool> pool_for(const std::shared_ptr<Backend> &backend, size_t page_size) {
    static std::mutex mu;
    // Never destroyed: releasing CUDA handles during static destruction can crash at exit.
    static auto *pools = new std::map<std::pair<std::string, size_t>, std::shared_ptr<PagePool>>();
    std::lock_guard<std::mutex> lock(mu);
    auto key = std::make_pair(backend->device(), page_size);
    auto it = pools->find(key);
    if (it != pools->end()) return it->second;
    auto pool = std::make_shared<PagePool>(backend, page_size, kDefaultMaxFree);
    (*pools)[key] = pool;
    return pool;
}

}  // namespace kvlab
