// Per-operation counters and a log2 latency histogram. Cheap enough for the hot path: one clock read
// pair per call, no allocation.
#pragma once
#include <array>
#include <chrono>
#include <algorithm>
#include <cstdint>
#include <vector>

namespace kvlab {

inline uint64_t now_ns() {
    return (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

struct OpStats {
    // Bucket i counts calls that took [2^(i-1), 2^i) microseconds; bucket 0 is < 1 us.
    static constexpr int kBuckets = 24;
    uint64_t calls = 0, pages = 0, total_ns = 0, max_ns = 0;
    std::array<uint64_t, kBuckets> histogram{};

    void record(uint64_t ns, uint64_t n_pages) {
        calls++;
        pages += n_pages;
        total_ns += ns;
        if (ns > max_ns) max_ns = ns;
        uint64_t us = ns / 1000;
        int b = 0;
        while (us && b < kBuckets - 1) { us >>= 1; b++; }
        histogram[b]++;
    }
};

}  // namespace kvlab
