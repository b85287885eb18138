"""kvlab.nvml, the one NVML adapter. The real library runs only on the GPU machine (tests/limits/
test_gpu_probe.py and the GPU server test read devices through it there); here a stand-in module with
NVML's call signatures checks what the adapter adds: decoding, per-process sums, and
None instead of an exception when there is nothing to read."""

import sys
import types

import pytest

from kvlab.nvml import Nvml


class _Error(Exception):
    pass


def _fake_nvml(devices, init_error=None, processes_error=False):
    nv = types.ModuleType("pynvml")
    nv.NVMLError = _Error
    nv.shutdowns = 0

    def init():
        if init_error:
            raise init_error

    def shutdown():
        nv.shutdowns += 1

    nv.nvmlInit, nv.nvmlShutdown = init, shutdown
    nv.nvmlDeviceGetCount = lambda: len(devices)
    nv.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=h["total"], used=h["used"],
                                                                 free=h["total"] - h["used"])
    nv.nvmlDeviceGetUUID = lambda h: h["uuid"].encode()  # nvidia-ml-py < 12 returns bytes
    nv.nvmlDeviceGetName = lambda h: h["name"]

    def procs(h):
        if processes_error:
            raise _Error("not supported")
        return [types.SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in h["procs"]]

    nv.nvmlDeviceGetComputeRunningProcesses = procs
    return nv


GPU0 = {"uuid": "GPU-aaa", "name": "H100", "total": 80, "used": 30, "procs": [(7, 10), (7, 5), (9, None)]}
GPU1 = {"uuid": "GPU-bbb", "name": "H100", "total": 80, "used": 1, "procs": []}


def test_reads_memory_processes_and_identity(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([GPU0, GPU1]))
    nv = Nvml.open()
    assert len(nv) == 2
    assert nv.memory(0) == (80, 30, 50)
    assert nv.processes(0) == {7: 15}  # one pid's contexts summed; a process NVML cannot size left out
    assert (nv.uuid(1), nv.name(1)) == ("GPU-bbb", "H100")


def test_processes_empty_where_nvml_cannot_tell(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([GPU0], processes_error=True))
    assert Nvml.open().processes(0) == {}


@pytest.mark.parametrize("devices, init_error", [([], None), ([GPU0], _Error("driver not loaded"))])
def test_open_is_none_without_devices_or_driver(monkeypatch, devices, init_error):
    fake = _fake_nvml(devices, init_error)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert Nvml.open() is None
    assert fake.shutdowns == (1 if init_error is None else 0)  # an initialised NVML is shut down again


def test_open_is_none_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert Nvml.open() is None


@pytest.mark.parametrize("cuda_index, visible, expected", [
    (0, "", 0), (1, "", 1),              # nothing set: CUDA's order is NVML's
    (0, "1", 1), (1, "1,0", 0),          # indices renumbered by CUDA_VISIBLE_DEVICES
    (0, "GPU-bbb", 1), (0, "GPU-b", 1),  # a UUID, whole or a prefix, as CUDA accepts it
])
def test_index_of_cuda_follows_cuda_visible_devices(monkeypatch, cuda_index, visible, expected):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([GPU0, GPU1]))
    assert Nvml.open().index_of_cuda(cuda_index, visible) == expected


@pytest.mark.parametrize("visible", ["2", "GPU-ccc", "GPU-"])  # no such index; no match; two matches
def test_index_of_cuda_refuses_what_names_no_single_device(monkeypatch, visible):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([GPU0, GPU1]))
    with pytest.raises(LookupError):
        Nvml.open().index_of_cuda(0, visible)


def test_headroom_probe_reads_the_visible_device(monkeypatch):
    from kvlab.engines.vllm import headroom

    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([GPU0, GPU1]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb,GPU-aaa")
    name, uuid, probe = headroom.device_probe("cuda", 1)
    assert (name, uuid, probe()) == ("cuda:1", "GPU-aaa", (80, 30, 50))  # GPU0
