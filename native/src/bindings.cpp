// Python bindings (nanobind). Deliberately thin: validation of user-facing arguments, dtype parsing
// and docs live in kvlab.memory; this layer converts types, releases the GIL around calls that can
// block, and translates typed C++ errors into the Python classes registered by kvlab.memory.errors.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arena.h"
#include "backend.h"
#include "cuda_driver.h"
#include "errors.h"
#include "page_pool.h"

namespace nb = nanobind;
using namespace kvlab;

namespace {

constexpr int kErrorKinds = 6;
PyObject *g_error_types[kErrorKinds] = {nullptr};

std::shared_ptr<Backend> backend_for(const std::string &kind, int ordinal) {
    if (kind == "host") return host_backend();
    if (kind == "cuda") return cuda_backend(ordinal);
    fail(ErrorKind::InvalidArgument, "unknown backend '" + kind + "' (expected 'host' or 'cuda')");
}

using Pages = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

nb::dict op_dict(const OpStats &s) {
    nb::dict d;
    d["calls"] = s.calls;
    d["pages"] = s.pages;
    d["total_ns"] = s.total_ns;
    d["max_ns"] = s.max_ns;
    d["histogram_log2_us"] = std::vector<uint64_t>(s.histogram.begin(), s.histogram.end());
    return d;
}

nb::dict pool_dict(const PagePool &p) {
    PoolCounters c = p.counters();
    nb::dict d;
    d["device"] = p.backend()->device();
    d["page_size"] = p.page_size();
    d["hits"] = c.hits;
    d["misses"] = c.misses;
    d["created"] = c.created;
    d["released"] = c.released;
    d["in_use"] = c.in_use;
    d["free"] = c.free;
    d["max_free"] = c.max_free;
    d["physical_limit_bytes"] = p.physical_limit_bytes();
    d["device_held_bytes"] = p.device_held_bytes();
    d["create"] = op_dict(c.create);
    d["release"] = op_dict(c.release);
    return d;
}

// DLPack view over [offset, offset + extent) of the arena. The capsule owns a reference to the
// reservation, so the address range outlives the arena object for as long as any tensor uses it.
nb::ndarray<nb::array_api> make_view(Arena &a, uint8_t code, uint8_t bits, const std::vector<size_t> &shape,
                        const std::vector<int64_t> &strides, size_t offset) {
    auto res = a.reservation();  // throws Closed
    auto *keep = new std::shared_ptr<Reservation>(std::move(res));
    nb::capsule owner(keep, [](void *p) noexcept { delete static_cast<std::shared_ptr<Reservation> *>(p); });
    nb::dlpack::dtype dt{code, bits, 1};
    const Backend &b = *a.pool()->backend();
    return nb::ndarray<nb::array_api>((void *)(a.base() + offset), shape.size(), shape.data(), owner,
                         strides.empty() ? nullptr : strides.data(), dt, b.dlpack_device_type(), b.device_id());
}

}  // namespace

NB_MODULE(_native, m) {
    m.doc() = "kvlab native core: virtual reservations, physical page pools, batched map/unmap, DLPack views";
    nb::set_leak_warnings(false);  // pools and backends are process-lifetime by design

    nb::register_exception_translator([](const std::exception_ptr &p, void *) {
        try {
            std::rethrow_exception(p);
        } catch (const Error &e) {
            PyObject *type = g_error_types[(int)e.kind];
            PyErr_SetString(type ? type : PyExc_RuntimeError, e.what());
        }
    });

    m.def("set_error_types", [](nb::tuple types) {
        if (nb::len(types) != kErrorKinds) throw nb::value_error("expected one class per error kind");
        for (int i = 0; i < kErrorKinds; i++) {
            PyObject *t = types[i].ptr();
            Py_INCREF(t);
            Py_XDECREF(g_error_types[i]);
            g_error_types[i] = t;
        }
    });

    nb::class_<PagePool>(m, "PagePool")
        .def_prop_ro("device", [](const PagePool &p) { return p.backend()->device(); })
        .def_prop_ro("page_size", &PagePool::page_size)
        .def("trim", &PagePool::trim, nb::arg("keep") = 0, nb::call_guard<nb::gil_scoped_release>())
        .def("set_max_free", &PagePool::set_max_free, nb::call_guard<nb::gil_scoped_release>())
        .def("set_physical_limit_bytes", &PagePool::set_physical_limit_bytes)
        .def("stats", [](const PagePool &p) { return pool_dict(p); });

    m.def("pool_for", [](const std::string &backend, int ordinal, size_t page_size) {
        return pool_for(backend_for(backend, ordinal), page_size);
    });

    nb::class_<Arena>(m, "Arena")
        .def("__init__",
             [](Arena *self, const std::string &backend, int ordinal, size_t capacity, size_t page_size,
                size_t handle_size) {
                 new (self) Arena(pool_for(backend_for(backend, ordinal), handle_size), capacity, page_size);
             })
        .def("map", [](Arena &a, Pages p) { return a.map(p.data(), p.shape(0)); },
             nb::call_guard<nb::gil_scoped_release>())
        .def("unmap", [](Arena &a, Pages p) { return a.unmap(p.data(), p.shape(0)); },
             nb::call_guard<nb::gil_scoped_release>())
        .def("unmap_all", &Arena::unmap_all, nb::call_guard<nb::gil_scoped_release>())
        .def("close", &Arena::close, nb::call_guard<nb::gil_scoped_release>())
        .def_prop_ro("closed", &Arena::closed)
        .def_prop_ro("base", &Arena::base)
        .def_prop_ro("capacity", &Arena::capacity)
        .def_prop_ro("page_size", &Arena::page_size)
        .def_prop_ro("handle_size", &Arena::handle_size)
        .def_prop_ro("n_pages", &Arena::n_pages)
        .def_prop_ro("mapped_pages", &Arena::mapped_pages)
        .def_prop_ro("pool", &Arena::pool)
        .def_prop_ro("device", [](const Arena &a) { return a.pool()->backend()->device(); })
        .def_prop_ro("backend", [](const Arena &a) { return a.pool()->backend()->name(); })
        .def_prop_rw("limit_bytes", &Arena::limit_bytes, &Arena::set_limit_bytes)
        .def("bitmap", [](const Arena &a) {
            std::vector<uint8_t> bits = a.bitmap();
            return nb::bytes((const char *)bits.data(), bits.size());
        })
        .def("stats", [](const Arena &a) {
            ArenaCounters c = a.counters();
            nb::dict d;
            d["map"] = op_dict(c.map);
            d["unmap"] = op_dict(c.unmap);
            d["pool_hits"] = c.pool_hits;
            d["pool_misses"] = c.pool_misses;
            return d;
        })
        .def("view", &make_view, nb::arg("code"), nb::arg("bits"), nb::arg("shape"), nb::arg("strides"),
             nb::arg("offset"));

    m.def("host_granularity", [] { return host_backend()->granularity(); });
    m.def("inject_host_map_failure", &host_inject_map_failure, nb::arg("after"), nb::arg("kind"));
    m.def("driver_floor",
          [](const std::string &backend, int ordinal, size_t page_size, size_t batch, size_t repeats,
             size_t reserve_bytes) {
              auto b = backend_for(backend, ordinal);
              Backend::Floor f;
              {
                  nb::gil_scoped_release release;
                  f = b->driver_floor(page_size, batch, repeats, reserve_bytes);
              }
              nb::dict d;
              d["map_ns"] = f.map_ns;
              d["access_ns"] = f.access_ns;
              d["unmap_ns"] = f.unmap_ns;
              return d;
          },
          nb::arg("backend"), nb::arg("ordinal"), nb::arg("page_size"), nb::arg("batch"), nb::arg("repeats"),
          nb::arg("reserve_bytes") = 0);
    m.def("cuda_load_error", &cu::load_error);
    m.def("cuda_driver_version", &cu::driver_version);
    m.def("cuda_devices", [] {
        nb::list out;
        for (const auto &d : cu::devices()) {
            nb::dict x;
            x["ordinal"] = d.ordinal;
            x["name"] = d.name;
            x["uuid"] = d.uuid;
            x["total_bytes"] = d.total_bytes;
            x["vmm_supported"] = d.vmm_supported;
            x["granularity"] = d.granularity;
            out.append(x);
        }
        return out;
    });
    m.def("mem_info", [](const std::string &backend, int ordinal) { return backend_for(backend, ordinal)->mem_info(); });
}
