"""NVIDIA devices through NVML (nvidia-ml-py): memory per device and per process, without torch.

One adapter for every kvlab reader of device memory: the engine's headroom probe, the telemetry
sampler, `kvlab top` and the GPU benchmarks. NVML is used rather than torch because it creates no
CUDA context (one costs a process ~600 MiB of the device) and because it sees every process's
memory, other engines' included.

``Nvml.open()`` returns None when there is no package, no driver or no device, so callers fall back
to the host's memory without catching NVML's own errors. Device indices are NVML's (the order of
``nvidia-smi``), which CUDA_VISIBLE_DEVICES does not renumber.
"""

from __future__ import annotations

from kvlab.meminfo import MemoryReading


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)  # older nvidia-ml-py returns bytes


class Nvml:
    def __init__(self, pynvml, handles: list):
        self._nv, self.handles = pynvml, handles

    @classmethod
    def open(cls) -> "Nvml | None":
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no package, or no driver
            return None
        try:
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:
            handles = []
        if not handles:
            pynvml.nvmlShutdown()
            return None
        return cls(pynvml, handles)

    def __len__(self) -> int:
        return len(self.handles)

    def memory(self, index: int) -> MemoryReading:
        """Total, used and free bytes of device ``index``."""
        mem = self._nv.nvmlDeviceGetMemoryInfo(self.handles[index])
        return MemoryReading(int(mem.total), int(mem.used), int(mem.free))

    def processes(self, index: int) -> dict[int, int]:
        """{pid: bytes} of the compute processes on device ``index``; empty where NVML cannot tell
        (per-process accounting is unavailable in some containers)."""
        per: dict[int, int] = {}
        try:
            for p in self._nv.nvmlDeviceGetComputeRunningProcesses(self.handles[index]):
                if p.usedGpuMemory is not None:
                    per[int(p.pid)] = per.get(int(p.pid), 0) + int(p.usedGpuMemory)
        except self._nv.NVMLError:
            pass
        return per

    def index_of_cuda(self, cuda_index: int, visible: str = "") -> int:
        """NVML's index of what CUDA calls device ``cuda_index`` under CUDA_VISIBLE_DEVICES=``visible``
        (NVML ignores that variable). Entries are NVML indices or UUIDs, whole or a prefix, as CUDA
        accepts them."""
        entries = [v.strip() for v in visible.split(",") if v.strip()]
        which = entries[cuda_index] if cuda_index < len(entries) else str(cuda_index)
        if which.isdigit():
            if int(which) >= len(self):
                raise LookupError(f"NVML sees {len(self)} devices, none with index {which}")
            return int(which)
        matches = [i for i in range(len(self)) if self.uuid(i).startswith(which)]
        if len(matches) != 1:
            raise LookupError(f"CUDA_VISIBLE_DEVICES entry {which!r} names {len(matches)} NVML devices")
        return matches[0]

    def uuid(self, index: int) -> str:
        return _text(self._nv.nvmlDeviceGetUUID(self.handles[index]))

    def name(self, index: int) -> str:
        return _text(self._nv.nvmlDeviceGetName(self.handles[index]))

    def close(self) -> None:
        try:
            self._nv.nvmlShutdown()
        except Exception:
            pass
