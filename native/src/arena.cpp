#include "arena.h"

#include <algorithm>
#include <string>

#include "errors.h"

namespace kvlab {
namespace {

// Calls fn(first_index_in_vector, length) for each run of consecutive page numbers.
template <typename F>
void for_each_run(const std::vector<int64_t> &pages, F fn) {
    size_t start = 0;
    for (size_t i = 1; i <= pages.size(); i++) {
        if (i == pages.size() || pages[i] != pages[i - 1] + 1) {
            fn(start, i - start);
            start = i;
        }
    }
}

std::string mib(size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

Arena::Arena(std::shared_ptr<PagePool> pool, size_t capacity, size_t page_size)
    : pool_(std::move(pool)), backend_(pool_->backend()), capacity_(capacity), page_size_(page_size),
      handle_size_(pool_->page_size()) {
    if (capacity == 0) fail(ErrorKind::InvalidArgument, "capacity must be positive");
    // The handle size's granularity check is the pool's (PagePool's constructor); pages only subdivide handles.
    if (page_size_ == 0 || handle_size_ % page_size_ != 0)
        fail(ErrorKind::InvalidArgument, "handle size " + std::to_string(handle_size_) +
                                             " is not a multiple of the page size " + std::to_string(page_size_));
    if (capacity % handle_size_ != 0)
        fail(ErrorKind::InvalidArgument, "capacity " + std::to_string(capacity) +
                                             " is not a multiple of the handle size " + std::to_string(handle_size_));
    pages_per_handle_ = handle_size_ / page_size_;
    n_pages_ = capacity / page_size_;
    n_slots_ = capacity / handle_size_;
    base_ = backend_->reserve(capacity);
    reservation_ = std::make_shared<Reservation>(backend_, base_, capacity);
    mapped_.assign(n_slots_, 0);
    handles_.assign(n_slots_, 0);
}

Arena::~Arena() {
    try {
        close();
    } catch (...) {
        // A destructor must not throw; close() already released what it could.
    }
}

void Arena::check_open() const {
    if (closed_) fail(ErrorKind::Closed, "this arena is closed");
}

std::vector<int64_t> Arena::pending(const int64_t *pages, size_t n, bool want_mapped) const {
    std::vector<int64_t> asked;
    asked.reserve(n);
    for (size_t i = 0; i < n; i++) {
        int64_t p = pages[i];
        if (p < 0 || (uint64_t)p >= n_pages_)
            fail(ErrorKind::InvalidPages, "page " + std::to_string(p) + " is out of range: this arena has " +
                                              std::to_string(n_pages_) + " pages (0.." +
                                              std::to_string((int64_t)n_pages_ - 1) + ")");
        asked.push_back(p);
    }
    std::sort(asked.begin(), asked.end());
    asked.erase(std::unique(asked.begin(), asked.end()), asked.end());
    // Pages -> handle slots. Unmapping part of a mapped handle would drop pages nobody asked to drop.
    std::vector<int64_t> out;
    const int64_t per = (int64_t)pages_per_handle_;
    for (size_t i = 0; i < asked.size();) {
        int64_t slot = asked[i] / per;
        size_t j = i;
        while (j < asked.size() && asked[j] / per == slot) j++;
        if ((mapped_[slot] != 0) != want_mapped) {
            if (!want_mapped && (int64_t)(j - i) != per)
                fail(ErrorKind::InvalidPages,
                     "page " + std::to_string(asked[i]) + " shares a physical handle with pages " +
                         std::to_string(slot * per) + ".." + std::to_string(slot * per + per - 1) +
                         " (handles of " + mib(handle_size_) + "); unmap all of them together");
            out.push_back(slot);
        }
        i = j;
    }
    return out;
}

size_t Arena::map(const int64_t *pages, size_t n) {
    uint64_t t0 = now_ns();
    std::lock_guard<std::mutex> lock(mu_);
    check_open();
    std::vector<int64_t> todo = pending(pages, n, true);
    if (todo.empty()) return 0;
    if (limit_bytes_ && (mapped_count_ + todo.size()) * handle_size_ > limit_bytes_)
        fail(ErrorKind::LimitExceeded, "mapping " + std::to_string(todo.size() * pages_per_handle_) + " pages would take this arena to " +
                                           mib((mapped_count_ + todo.size()) * handle_size_) + ", over its limit of " +
                                           mib(limit_bytes_));
    std::vector<uint64_t> handles(todo.size());
    size_t hits = pool_->acquire(todo.size(), handles.data());
    // Map run by run; remember what succeeded so that a failure can undo exactly this call's work.
    std::vector<std::pair<size_t, size_t>> done;
    try {
        for_each_run(todo, [&](size_t first, size_t len) {
            backend_->map_run(base_ + (uintptr_t)todo[first] * handle_size_, handle_size_, &handles[first], len);
            done.emplace_back(first, len);
        });
    } catch (...) {
        for (auto [first, len] : done) {
            try {
                backend_->unmap_run(base_ + (uintptr_t)todo[first] * handle_size_, len * handle_size_);
            } catch (...) {
            }
        }
        pool_->release(handles.data(), handles.size());
        throw;
    }
    for (size_t i = 0; i < todo.size(); i++) {
        mapped_[todo[i]] = 1;
        handles_[todo[i]] = handles[i];
    }
    mapped_count_ += todo.size();
    c_.pool_hits += hits;
    c_.pool_misses += todo.size() - hits;
    c_.map.record(now_ns() - t0, todo.size());
    return todo.size() * pages_per_handle_;
}

size_t Arena::unmap(const int64_t *pages, size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    check_open();
    return unmap_sorted(pending(pages, n, false));
}

size_t Arena::unmap_sorted(const std::vector<int64_t> &todo) {
    if (todo.empty()) return 0;
    uint64_t t0 = now_ns();
    std::vector<uint64_t> freed;
    freed.reserve(todo.size());
    // Unmap is not undoable (the data is gone), so on a driver error keep the state of each run
    // accurate, hand back what was unmapped, and report the failure.
    auto finish = [&] {
        mapped_count_ -= freed.size();
        pool_->release(freed.data(), freed.size());
    };
    try {
        for_each_run(todo, [&](size_t first, size_t len) {
            backend_->unmap_run(base_ + (uintptr_t)todo[first] * handle_size_, len * handle_size_);
            for (size_t i = first; i < first + len; i++) {
                mapped_[todo[i]] = 0;
                freed.push_back(handles_[todo[i]]);
                handles_[todo[i]] = 0;
            }
        });
    } catch (...) {
        finish();
        throw;
    }
    finish();
    c_.unmap.record(now_ns() - t0, todo.size());
    return todo.size() * pages_per_handle_;
}

size_t Arena::unmap_all() {
    std::lock_guard<std::mutex> lock(mu_);
    check_open();
    std::vector<int64_t> all;
    for (size_t h = 0; h < n_slots_; h++)
        if (mapped_[h]) all.push_back((int64_t)h);
    return unmap_sorted(all);
}

void Arena::close() {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
    std::vector<int64_t> all;
    for (size_t h = 0; h < n_slots_; h++)
        if (mapped_[h]) all.push_back((int64_t)h);
    try {
        unmap_sorted(all);
    } catch (...) {
        reservation_.reset();
        throw;
    }
    reservation_.reset();
}

void Arena::set_limit_bytes(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_bytes_ = bytes;
}
size_t Arena::limit_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return limit_bytes_;
}
bool Arena::closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
}
size_t Arena::mapped_pages() const {
    std::lock_guard<std::mutex> lock(mu_);
    return mapped_count_ * pages_per_handle_;
}
std::vector<uint8_t> Arena::bitmap() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint8_t> pages(n_pages_);
    for (size_t p = 0; p < n_pages_; p++) pages[p] = mapped_[p / pages_per_handle_];
    return pages;
}
ArenaCounters Arena::counters() const {
    std::lock_guard<std::mutex> lock(mu_);
    return c_;
}
std::shared_ptr<Reservation> Arena::reservation() const {
    std::lock_guard<std::mutex> lock(mu_);
    check_open();
    return reservation_;
}

}  // namespace kvlab
