#include "page_pool.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include "errors.h"

namespace kvlab {

constexpr size_t kDefaultFreeBytes = size_t(64) << 20;

// The one check of a physical handle size against the device's mapping granularity: every handle size
// enters the native core here (an Arena gets its handles from a pool), before pool_for caches the pool.
// A pool's "page" is one physical handle: an Arena's pages may subdivide it.
PagePool::PagePool(std::shared_ptr<Backend> backend, size_t page_size, size_t max_free,
                   std::shared_ptr<DeviceBudget> budget)
    : backend_(std::move(backend)), page_size_(page_size), budget_(std::move(budget)) {
    if (page_size_ == 0 || page_size_ % backend_->granularity() != 0)
        fail(ErrorKind::InvalidArgument, "handle size " + std::to_string(page_size_) + " is not a multiple of the " +
                                             backend_->device() + " granularity " +
                                             std::to_string(backend_->granularity()));
    c_.max_free = max_free;
}

size_t PagePool::acquire(size_t n, uint64_t *out) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t hits = std::min(n, free_.size());
    size_t misses = n - hits;
    {
        // Claim the bytes before creating, so that two pools of one device cannot both pass the cap.
        std::lock_guard<std::mutex> b(budget_->mu);
        size_t need = misses * page_size_;
        if (budget_->limit_bytes && budget_->held_bytes + need > budget_->limit_bytes)
            fail(ErrorKind::OutOfPhysicalMemory,
                 "the " + backend_->device() + " physical limit is " + std::to_string(budget_->limit_bytes >> 20) +
                     " MiB and its pools hold " + std::to_string(budget_->held_bytes >> 20) + " MiB; " +
                     std::to_string(need >> 20) + " MiB more were needed (raise the physical limit, or trim "
                     "the free handles of other handle sizes)");
        budget_->held_bytes += need;
    }
    auto unclaim = [&](size_t n) {
        std::lock_guard<std::mutex> b(budget_->mu);
        budget_->held_bytes -= n * page_size_;
    };
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
        unclaim(misses);
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
    std::lock_guard<std::mutex> b(budget_->mu);
    budget_->held_bytes -= n * page_size_;
}

void PagePool::set_max_free(size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    c_.max_free = n;
    release_locked(n);
}

void PagePool::set_physical_limit_bytes(size_t bytes) {
    std::lock_guard<std::mutex> b(budget_->mu);
    budget_->limit_bytes = bytes;
}
size_t PagePool::physical_limit_bytes() const {
    std::lock_guard<std::mutex> b(budget_->mu);
    return budget_->limit_bytes;
}
size_t PagePool::device_held_bytes() const {
    std::lock_guard<std::mutex> b(budget_->mu);
    return budget_->held_bytes;
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
    static auto *budgets = new std::map<std::string, std::shared_ptr<DeviceBudget>>();
    std::lock_guard<std::mutex> lock(mu);
    auto key = std::make_pair(backend->device(), page_size);
    auto it = pools->find(key);
    if (it != pools->end()) return it->second;
    auto &budget = (*budgets)[backend->device()];
    if (!budget) budget = std::make_shared<DeviceBudget>();
    // Keep about 64 MiB free per size: absorbs bursts, cheap at idle.
    size_t max_free = std::max<size_t>(1, kDefaultFreeBytes / page_size);
    auto pool = std::make_shared<PagePool>(backend, page_size, max_free, budget);
    (*pools)[key] = pool;
    return pool;
}

}  // namespace kvlab
