// CUDA backend over the driver's virtual memory management API, in the device's primary context so
// that addresses are valid in torch's (and every runtime-API user's) context.
// Cost model measured on an H100 (2 MiB pages): cuMemSetAccess ~34 us per call whatever the length,
// cuMemUnmap ~20 us per call, cuMemMap ~1.5 us per page. Hence map_run maps page by page and then sets
// access ONCE over the whole run, and unmap_run is ONE cuMemUnmap over the run.
#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include "backend.h"
#include "cuda_driver.h"
#include "errors.h"
#include "stats.h"

namespace kvlab {
namespace {

using namespace cu;

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int ordinal) : ordinal_(ordinal) {
        d_ = driver();
        if (!d_) fail(ErrorKind::Backend, "the cuda backend is unavailable: " + load_error());
        int n = 0;
        check(d_->cuDeviceGetCount(&n), "cuDeviceGetCount");
        if (ordinal < 0 || ordinal >= n)
            fail(ErrorKind::InvalidArgument, "no device cuda:" + std::to_string(ordinal) + " (this machine has " +
                                                 std::to_string(n) + " CUDA device(s))");
        CUdevice dev;
        check(d_->cuDeviceGet(&dev, ordinal), "cuDeviceGet");
        int vmm = 0;
        check(d_->cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev),
              "cuDeviceGetAttribute");
        if (!vmm) fail(ErrorKind::Backend, "cuda:" + std::to_string(ordinal) + " does not support virtual memory management");
        check(d_->cuDevicePrimaryCtxRetain(&ctx_, dev), "cuDevicePrimaryCtxRetain");
        prop_ = device_prop(ordinal);
        access_.location = {CU_MEM_LOCATION_TYPE_DEVICE, ordinal};
        access_.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        CtxGuard g(this);
        check(d_->cuMemGetAllocationGranularity(&granularity_, &prop_, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
              "cuMemGetAllocationGranularity");
    }

    std::string name() const override { return "cuda"; }
    std::string device() const override { return "cuda:" + std::to_string(ordinal_); }
    int dlpack_device_type() const override { return kDLCUDA; }
    int device_id() const override { return ordinal_; }
    size_t granularity() const override { return granularity_; }
    std::pair<size_t, size_t> mem_info() override {
        CtxGuard g(this);
        size_t free_b = 0, total_b = 0;
        check(d_->cuMemGetInfo(&free_b, &total_b), "cuMemGetInfo");
        return {free_b, total_b};
    }

    uintptr_t reserve(size_t bytes) override {
        CtxGuard g(this);
        CUdeviceptr p = 0;
        check(d_->cuMemAddressReserve(&p, bytes, granularity_, 0, 0), "cuMemAddressReserve");
        return (uintptr_t)p;
    }
    void release_reservation(uintptr_t addr, size_t bytes) noexcept override {
        CtxGuard g(this);
        d_->cuMemAddressFree((CUdeviceptr)addr, bytes);
    }

    uint64_t create_page(size_t page_size) override {
        CtxGuard g(this);
        CUmemGenericAllocationHandle h = 0;
        check(d_->cuMemCreate(&h, page_size, &prop_, 0), "cuMemCreate");
        return h;
    }
    void release_page(uint64_t handle, size_t) noexcept override {
        CtxGuard g(this);
        d_->cuMemRelease(handle);
    }

    void map_run(uintptr_t addr, size_t page_size, const uint64_t *pages, size_t n) override {
        CtxGuard g(this);
        size_t done = 0;
        CUresult r = CUDA_SUCCESS;
        for (; done < n; done++) {
            r = d_->cuMemMap((CUdeviceptr)(addr + done * page_size), page_size, 0, pages[done], 0);
            if (r != CUDA_SUCCESS) break;
        }
        if (r == CUDA_SUCCESS) r = d_->cuMemSetAccess((CUdeviceptr)addr, n * page_size, &access_, 1);
        if (r != CUDA_SUCCESS) {
            if (done > 0) d_->cuMemUnmap((CUdeviceptr)addr, done * page_size);
            check(r, done < n ? "cuMemMap" : "cuMemSetAccess");
        }
    }

    void unmap_run(uintptr_t addr, size_t bytes) override {
        CtxGuard g(this);
        check(d_->cuMemUnmap((CUdeviceptr)addr, bytes), "cuMemUnmap");
    }

    Floor driver_floor(size_t page_size, size_t batch, size_t repeats, size_t reserve_bytes) override {
        CtxGuard g(this);
        std::vector<CUmemGenericAllocationHandle> handles(batch);
        size_t created = 0;
        CUdeviceptr base = 0;
        size_t reserved = std::max(batch * page_size, reserve_bytes);
        auto cleanup = [&] {
            if (base) d_->cuMemAddressFree(base, reserved);
            for (size_t i = 0; i < created; i++) d_->cuMemRelease(handles[i]);
        };
        try {
            for (; created < batch; created++) check(d_->cuMemCreate(&handles[created], page_size, &prop_, 0), "cuMemCreate");
            check(d_->cuMemAddressReserve(&base, reserved, granularity_, 0, 0), "cuMemAddressReserve");
            std::vector<double> map_ns, access_ns, unmap_ns;
            for (size_t r = 0; r < repeats; r++) {
                uint64_t t0 = now_ns();
                for (size_t i = 0; i < batch; i++)
                    check(d_->cuMemMap(base + i * page_size, page_size, 0, handles[i], 0), "cuMemMap");
                uint64_t t1 = now_ns();
                check(d_->cuMemSetAccess(base, batch * page_size, &access_, 1), "cuMemSetAccess");
                uint64_t t2 = now_ns();
                check(d_->cuMemUnmap(base, batch * page_size), "cuMemUnmap");
                uint64_t t3 = now_ns();
                map_ns.push_back(double(t2 - t0) / batch);
                access_ns.push_back(double(t2 - t1) / batch);
                unmap_ns.push_back(double(t3 - t2) / batch);
            }
            cleanup();
            return {median(map_ns), median(access_ns), median(unmap_ns)};
        } catch (...) {
            cleanup();
            throw;
        }
    }

private:
    // Make the primary context current for a driver call. A thread with no context adopts the primary
    // one for good (as the CUDA runtime does), so later calls pay one cuCtxGetCurrent; a thread with
    // another context current gets it back afterwards.
    struct CtxGuard {
        const CudaBackend *b;
        bool pushed = false;
        explicit CtxGuard(const CudaBackend *be) : b(be) {
            CUcontext cur = nullptr;
            b->d_->cuCtxGetCurrent(&cur);
            if (cur == b->ctx_) return;
            if (cur == nullptr)
                b->d_->cuCtxSetCurrent(b->ctx_);
            else
                pushed = b->d_->cuCtxPushCurrent(b->ctx_) == CUDA_SUCCESS;
        }
        ~CtxGuard() {
            if (pushed) {
                CUcontext popped;
                b->d_->cuCtxPopCurrent(&popped);
            }
        }
    };

    int ordinal_;
    const Driver *d_ = nullptr;
    CUcontext ctx_ = nullptr;
    CUmemAllocationProp prop_{};
    CUmemAccessDesc access_{};
    size_t granularity_ = 0;
};

}  // namespace

std::shared_ptr<Backend> cuda_backend(int ordinal) {
    static std::mutex mu;
    static auto *instances = new std::map<int, std::shared_ptr<Backend>>();  // never destroyed: see backend.h
    std::lock_guard<std::mutex> lock(mu);
    auto it = instances->find(ordinal);
    if (it != instances->end()) return it->second;
    auto b = std::make_shared<CudaBackend>(ordinal);
    (*instances)[ordinal] = b;
    return b;
}

}  // namespace kvlab
