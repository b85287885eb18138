"""The per-device physical handle pool shared by every arena of a device and handle size."""

from __future__ import annotations

from . import _native_loader
from .errors import InvalidArgument
from .args import Device, parse_device, parse_size

_native = _native_loader.native()


class PagePool:
    """Reuses physical handles so that map/unmap avoid the driver's create/release (~13 us per handle).

    One pool per (device, handle size); ``page_size`` here is the handle size. ``max_free`` handles
    (about 64 MiB by default) are kept after unmap; ``trim()`` releases them to the driver.

    Pools of different handle sizes on one device keep separate free lists: a free 2 MiB handle cannot
    back a 32 MiB slot, so memory moves between them only through the driver (``trim``, which the vLLM
    adapter calls after every unmap, or a low ``max_free``). ``physical_limit`` is the device's, shared by
    all its pools: it caps the bytes this process holds there (in use + free) across handle sizes, so
    setting it on any pool of the device sets it for all; beyond it maps raise OutOfPhysicalMemory, and
    free handles of another size count until trimmed.
    """

    def __init__(self, device: str | Device | None = "cpu", page_size: int | str = 2 << 20):
        dev = parse_device(device)
        self._pool = _native.pool_for(dev.backend, dev.index, parse_size(page_size))

    @classmethod
    def _wrap(cls, native_pool) -> "PagePool":
        obj = cls.__new__(cls)
        obj._pool = native_pool
        return obj

    @property
    def device(self) -> str:
        return self._pool.device

    @property
    def page_size(self) -> int:
        return self._pool.page_size

    def trim(self, keep: int = 0) -> int:
        """Release free pages to the driver until at most ``keep`` remain; returns how many went."""
        if keep < 0:
            raise InvalidArgument("keep must be >= 0")
        return self._pool.trim(keep)

    @property
    def max_free(self) -> int:
        return self._pool.stats()["max_free"]

    @max_free.setter
    def max_free(self, n: int) -> None:
        if n < 0:
            raise InvalidArgument("max_free must be >= 0")
        self._pool.set_max_free(n)

    @property
    def physical_limit(self) -> int | None:
        """The device's cap in bytes (all handle sizes), or None."""
        return self._pool.stats()["physical_limit_bytes"] or None

    @physical_limit.setter
    def physical_limit(self, value: int | str | None) -> None:
        n = 0 if value is None else parse_size(value)
        if value is not None and n < self.page_size:
            raise InvalidArgument(f"a physical limit below one handle ({self.page_size} bytes) forbids every map")
        self._pool.set_physical_limit_bytes(n)

    @property
    def device_held_bytes(self) -> int:
        """Bytes all pools of this device hold (in use + free), every handle size."""
        return self._pool.stats()["device_held_bytes"]

    def stats(self) -> dict:
        return self._pool.stats()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<kvlab.PagePool {s['device']} in_use={s['in_use']} free={s['free']} hits={s['hits']} misses={s['misses']}>"
