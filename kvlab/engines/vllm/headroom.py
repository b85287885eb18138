"""The device-wide headroom rule: engines on one device together stay below its memory.

Before a pool grows it may take at most

    room = free memory of the device - headroom - the guarantees of the other pools on the device
           (each one's ``min`` it has not mapped yet)

and never less than its own ``min``. When that leaves no room the planner simply cannot grow: to vLLM
the cache looks full, so requests wait or are preempted; nothing is mapped that the device cannot
hold, so nothing crashes for lack of memory.

Reading the device and the registry costs tens to hundreds of microseconds, too much for the
scheduler's hot path (``num_free_blocks`` is read many times a step). So the pool's watcher thread
measures every ``REFRESH`` seconds and the planner only reads the last ``DeviceRoom`` snapshot, which
converts it into a cap on mapped chunks: the chunks mapped when it was measured plus the room. Chunks
planned after the snapshot count against it, so a burst cannot spend the same free memory twice.

Free memory: NVML (nvidia-ml-py) on CUDA, ``torch.cuda.mem_get_info`` only where this process already
has a CUDA context (the multi-process scheduler must not create one), ``MemAvailable`` on the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from kvlab import units
from kvlab.meminfo import MemoryReading, host_memory
from kvlab.nvml import Nvml

REFRESH = 0.25            # seconds between measurements (the watcher's cadence)
GPU_HEADROOM = units.GiB  # default: kept free on a GPU for activations, CUDA contexts, other programs
HOST_HEADROOM = "5%"      # default: of the host's memory, for the OS and everything else running there


@dataclass(frozen=True)
class DeviceRoom:
    """One measurement: ``room`` bytes this pool may still add; ``mapped_chunks`` it had planned then."""

    room: int
    mapped_chunks: int

    def cap_chunks(self, chunk_bytes: int, min_chunks: int = 0) -> int:
        """Most chunks the pool may have mapped until the next measurement."""
        return max(min_chunks, self.mapped_chunks + max(0, self.room) // chunk_bytes)


def room(free: int | None, headroom: int, others_unmet_min: int) -> int | None:
    """Bytes this pool may add now (None: the device's free memory is unknown, so only guarantees apply)."""
    if free is None:
        return None
    return free - headroom - others_unmet_min


def unmet_min(records, own_name: str, device: str, device_uuid: str) -> int:
    """Sum over the other live pools on the same device of the guarantee they have not mapped yet."""
    total = 0
    for r in records:
        if r.name == own_name:
            continue
        same = r.device_uuid == device_uuid if (r.device_uuid and device_uuid) else r.device == device
        if same:
            total += max(0, max(r.min, r.control.min) - r.mapped)
    return total


def resolve_headroom(spec: str, total: int, is_cuda: bool) -> int:
    """Bytes of headroom from a setting (a size, a share of the device, or "" for the default)."""
    if not spec:
        return GPU_HEADROOM if is_cuda else units.resolve(HOST_HEADROOM, total)
    return units.resolve(spec, total)


# ---- probes: a MemoryReading of one device, or None when unknown ------------------------------------

class _NvmlDevice:
    """Free and total bytes of the device CUDA calls ``index``, read through NVML (no CUDA context)."""

    def __init__(self, index: int):
        self.nvml = Nvml.open()
        if self.nvml is None:
            raise LookupError("NVML cannot see a device")
        self.index = self.nvml.index_of_cuda(index, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        self.uuid = self.nvml.uuid(self.index)

    def __call__(self) -> MemoryReading:
        return self.nvml.memory(self.index)


def _torch_if_initialized(index: int) -> Callable[[], MemoryReading | None]:
    def probe():
        import sys

        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return None  # creating a CUDA context here would cost the device ~500 MiB
        free, total = torch.cuda.mem_get_info(index)
        return MemoryReading(int(total), int(total - free), int(free))
    return probe


def device_probe(device_type: str, index: int = 0) -> tuple[str, str, Callable[[], MemoryReading | None]]:
    """(device name, device UUID or "", probe) for the device an engine's rank 0 uses."""
    if device_type != "cuda":
        return "cpu", "", host_memory
    try:
        nv = _NvmlDevice(index)
        return f"cuda:{index}", nv.uuid, nv
    except Exception:  # no nvidia-ml-py, or NVML cannot see the device (some containers)
        return f"cuda:{index}", "", _torch_if_initialized(index)
