#include "cuda_driver.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <mutex>

#include "errors.h"

namespace kvlab::cu {
namespace {

Driver g_driver{};
const Driver *g_loaded = nullptr;
std::string g_error;

template <typename F>
bool resolve(void *lib, F &fn, const char *name) {
    fn = reinterpret_cast<F>(dlsym(lib, name));
    if (!fn) g_error = std::string("libcuda.so.1 lacks ") + name + " (driver too old for VMM?)";
    return fn != nullptr;
}

void load() {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        g_error = "libcuda.so.1 not found (no NVIDIA driver on this machine)";
        return;
    }
    Driver &d = g_driver;
    // Versioned names are the ones cuda.h's macros select (cuMemGetInfo -> cuMemGetInfo_v2, ...).
    bool ok = resolve(lib, d.cuInit, "cuInit") && resolve(lib, d.cuDriverGetVersion, "cuDriverGetVersion") &&
              resolve(lib, d.cuDeviceGetCount, "cuDeviceGetCount") && resolve(lib, d.cuDeviceGet, "cuDeviceGet") &&
              resolve(lib, d.cuDeviceGetName, "cuDeviceGetName") &&
              resolve(lib, d.cuDeviceGetAttribute, "cuDeviceGetAttribute") &&
              resolve(lib, d.cuDeviceTotalMem, "cuDeviceTotalMem_v2") &&
              resolve(lib, d.cuDeviceGetUuid, "cuDeviceGetUuid_v2") &&
              resolve(lib, d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain") &&
              resolve(lib, d.cuCtxGetCurrent, "cuCtxGetCurrent") &&
              resolve(lib, d.cuCtxSetCurrent, "cuCtxSetCurrent") &&
              resolve(lib, d.cuCtxPushCurrent, "cuCtxPushCurrent_v2") &&
              resolve(lib, d.cuCtxPopCurrent, "cuCtxPopCurrent_v2") &&
              resolve(lib, d.cuMemGetInfo, "cuMemGetInfo_v2") &&
              resolve(lib, d.cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity") &&
              resolve(lib, d.cuMemAddressReserve, "cuMemAddressReserve") &&
              resolve(lib, d.cuMemAddressFree, "cuMemAddressFree") && resolve(lib, d.cuMemCreate, "cuMemCreate") &&
              resolve(lib, d.cuMemRelease, "cuMemRelease") && resolve(lib, d.cuMemMap, "cuMemMap") &&
              resolve(lib, d.cuMemUnmap, "cuMemUnmap") && resolve(lib, d.cuMemSetAccess, "cuMemSetAccess") &&
              resolve(lib, d.cuGetErrorName, "cuGetErrorName") &&
              resolve(lib, d.cuGetErrorString, "cuGetErrorString");
    if (!ok) return;
    CUresult r = d.cuInit(0);
    if (r != CUDA_SUCCESS) {
        g_error = "cuInit failed with error " + std::to_string(r) + " (no usable GPU or driver mismatch)";
        return;
    }
    g_loaded = &g_driver;
}

}  // namespace

const Driver *driver() {
    static std::once_flag once;
    std::call_once(once, load);
    return g_loaded;
}

std::string load_error() {
    driver();
    return g_error;
}

std::string error_text(CUresult r) {
    const char *name = nullptr, *desc = nullptr;
    if (g_loaded) {
        g_loaded->cuGetErrorName(r, &name);
        g_loaded->cuGetErrorString(r, &desc);
    }
    return std::string(name ? name : "CUDA error " + std::to_string(r)) + (desc ? std::string(": ") + desc : "");
}

void check(CUresult r, const char *what) {
    if (r == CUDA_SUCCESS) return;
    fail(r == CUDA_ERROR_OUT_OF_MEMORY ? ErrorKind::OutOfPhysicalMemory : ErrorKind::Backend,
         std::string(what) + " failed: " + error_text(r));
}

int driver_version() {
    int v = 0;
    if (driver()) g_loaded->cuDriverGetVersion(&v);
    return v;
}

CUmemAllocationProp device_prop(int ordinal) {
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
    prop.location = {CU_MEM_LOCATION_TYPE_DEVICE, ordinal};
    return prop;
}

std::vector<DeviceInfo> devices() {
    std::vector<DeviceInfo> out;
    const Driver *d = driver();
    if (!d) return out;
    int n = 0;
    if (d->cuDeviceGetCount(&n) != CUDA_SUCCESS) return out;
    for (int i = 0; i < n; i++) {
        CUdevice dev;
        if (d->cuDeviceGet(&dev, i) != CUDA_SUCCESS) continue;
        DeviceInfo info{};
        info.ordinal = i;
        char name[256] = {0};
        d->cuDeviceGetName(name, sizeof(name) - 1, dev);
        info.name = name;
        unsigned char uuid[16] = {0};
        if (d->cuDeviceGetUuid(uuid, dev) == CUDA_SUCCESS) {
            char buf[64];
            std::snprintf(buf, sizeof(buf),
                          "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", uuid[0],
                          uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9],
                          uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15]);
            info.uuid = buf;
        }
        d->cuDeviceTotalMem(&info.total_bytes, dev);
        int vmm = 0;
        d->cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev);
        info.vmm_supported = vmm != 0;
        if (info.vmm_supported) {
            CUmemAllocationProp prop = device_prop(i);
            d->cuMemGetAllocationGranularity(&info.granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        }
        out.push_back(info);
    }
    return out;
}

}  // namespace kvlab::cu
