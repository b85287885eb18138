"""How much memory a device has and how much of it is taken: one reading, one shape, for every reader.

Readers: the engine's headroom rule (free), the telemetry sampler and `kvlab top` (total, used), the
benchmarks. The host's figures come from /proc/meminfo, a GPU's from NVML (``kvlab.nvml``).
"""

from __future__ import annotations

import os
from typing import NamedTuple


class MemoryReading(NamedTuple):
    """Bytes of one device. ``free`` is what new allocations can still get (the host's MemAvailable, as
    ``free`` reports it; NVML's free on a GPU), so ``used = total - free``."""

    total: int
    used: int
    free: int


def host_memory() -> MemoryReading:
    """This host's memory, from /proc/meminfo.

    One os.read of the file's head (MemTotal, MemFree and MemAvailable are its first three lines): it is read
    at 10 Hz by the telemetry sampler and every 0.25 s by each engine's headroom watcher.
    """
    fd = os.open("/proc/meminfo", os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.read(fd, 512)
    finally:
        os.close(fd)
    info = {}
    for line in head.split(b"\n")[:3]:
        key, _, rest = line.partition(b":")
        if key in (b"MemTotal", b"MemAvailable"):
            info[key] = int(rest.split()[0]) * 1024
    total = info.get(b"MemTotal", 0)
    available = info.get(b"MemAvailable", total)
    return MemoryReading(total, total - available, available)
