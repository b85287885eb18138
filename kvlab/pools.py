"""One sample of every device and every pool: what `kvlab top` draws and `kvlab serve` streams.

Devices: NVML on NVIDIA GPUs, MemTotal/MemAvailable for the host. Pools: every live registry record,
with the device it sits on and its map/unmap rates in pages per second since the previous sample. Reads
only the registry and NVML: it never imports torch and never creates a CUDA context, so it is safe next
to running engines.
"""

from __future__ import annotations

import time

from kvlab import limits
from kvlab.meminfo import host_memory
from kvlab.nvml import Nvml
from kvlab.registry import Record


# ---- devices: NVML and /proc, never torch ---------------------------------------------------------------

class Devices:
    def __init__(self):
        self._nv = Nvml.open()  # None without nvidia-ml-py, a driver or a GPU: the host is still shown

    def sample(self) -> dict[str, dict]:
        out = {"cpu": _host()}
        for i in range(len(self._nv) if self._nv is not None else 0):
            try:
                reading = self._nv.memory(i)
                out[f"cuda:{i}"] = {"total": reading.total, "used": reading.used, "source": "nvml",
                                    "uuid": self._nv.uuid(i), "name": self._nv.name(i)}
            except Exception:  # a device that fell off the bus: show the others
                continue
        return out

    def close(self) -> None:
        if self._nv is not None:
            self._nv.close()


def _host() -> dict:
    reading = host_memory()
    return {"total": reading.total, "used": reading.used, "source": "meminfo", "name": "host"}


def _device_of(rec: Record, devices: dict[str, dict]) -> str:
    if rec.device_uuid:
        for key, d in devices.items():
            if d.get("uuid") == rec.device_uuid:
                return key
    return rec.device or "cpu"


# ---- samples -------------------------------------------------------------------------------------------

class PoolSampler:
    """Samples the registry and the devices; map/unmap rates from the previous sample of each pool."""

    def __init__(self):
        self.devices = Devices()
        self._prev: dict[str, tuple[float, int, int, int]] = {}

    def sample(self) -> dict:
        now = time.monotonic()
        devices = self.devices.sample()
        pools = []
        seen = {}
        for rec in limits.list_pools():
            d = rec.as_dict()
            d["device_key"] = _device_of(rec, devices)
            d["heartbeat_age"] = rec.heartbeat_age
            prev = self._prev.get(rec.name)
            if prev is not None and prev[3] == rec.start_ticks and now > prev[0]:
                dt = now - prev[0]
                d["map_rate"] = (rec.n_maps - prev[1]) / dt
                d["unmap_rate"] = (rec.n_unmaps - prev[2]) / dt
            else:
                d["map_rate"] = d["unmap_rate"] = None
            seen[rec.name] = (now, rec.n_maps, rec.n_unmaps, rec.start_ticks)
            pools.append(d)
        self._prev = seen
        return {"time": time.time(), "devices": devices, "pools": pools}

    def close(self) -> None:
        self.devices.close()
