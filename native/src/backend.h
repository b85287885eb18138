// A backend turns "reserve / create physical page / map a run / unmap a run" into driver or OS calls.
// Both backends share one semantics: a reserved but unmapped page faults when touched.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace kvlab {

// DLPack device types (dlpack.h): kDLCPU = 1, kDLCUDA = 2.
constexpr int kDLCPU = 1;
constexpr int kDLCUDA = 2;

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;       // "host" or "cuda"
    virtual std::string device() const = 0;     // "cpu" or "cuda:N"
    virtual int dlpack_device_type() const = 0;
    virtual int device_id() const = 0;
    virtual size_t granularity() const = 0;
    // (free, total) bytes of the device's physical memory as the driver/OS reports them now.
    virtual std::pair<size_t, size_t> mem_info() = 0;

    // Virtual address space; throws Error on failure.
    virtual uintptr_t reserve(size_t bytes) = 0;
    virtual void release_reservation(uintptr_t addr, size_t bytes) noexcept = 0;

    // One physical page. Throws OutOfPhysicalMemory or Backend errors.
    virtual uint64_t create_page(size_t page_size) = 0;
    virtual void release_page(uint64_t handle, size_t page_size) noexcept = 0;

    // Map n physical pages at consecutive addresses starting at addr and make them read-write.
    // All or nothing: on failure the backend undoes its own partial work before throwing.
    virtual void map_run(uintptr_t addr, size_t page_size, const uint64_t *pages, size_t n) = 0;
    // Unmap a contiguous mapped range in as few calls as the backend allows.
    virtual void unmap_run(uintptr_t addr, size_t bytes) = 0;

    // The raw cost floor: map `batch` pages and unmap them, `repeats` times, with no bookkeeping, in a
    // reservation of at least `reserve_bytes` (so it can match the arena it is compared with).
    // Median ns per page of the whole map (access included), of its access step alone, and of unmap.
    struct Floor {
        double map_ns, access_ns, unmap_ns;
    };
    virtual Floor driver_floor(size_t page_size, size_t batch, size_t repeats, size_t reserve_bytes) = 0;
};

// Shared singletons: one host backend, one CUDA backend per device ordinal. They are never destroyed,
// so no driver call runs during static destruction at interpreter exit.
std::shared_ptr<Backend> host_backend();
std::shared_ptr<Backend> cuda_backend(int ordinal);

// Failure injection for tests (host backend only): the `after`-th page mapped from now on fails with
// `kind` (0 = out of physical memory, 2 = backend error). after < 0 disables it.
void host_inject_map_failure(long after, int kind);

}  // namespace kvlab
