"""The per-device physical page pool shared by every arena of a device and page size."""

from __future__ import annotations

from . import _native_loader
from .errors import InvalidArgument
from .args import Device, parse_device, parse_size

_native = _native_loader.native()


class PagePool:
    """Reuses physical pages so that map/unmap avoid the driver's create/release (~13 us per page).

    ``max_free`` pages are kept after unmap; ``trim()`` releases them. ``physical_limit`` caps the
    pages this process holds on the device (in use + free); beyond it maps raise OutOfPhysicalMemory.
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
        pages = self._pool.stats()["physical_limit_pages"]
        return pages * self.page_size if pages else None

    @physical_limit.setter
    def physical_limit(self, value: int | str | None) -> None:
        pages = 0 if value is None else parse_size(value) // self.page_size
        if value is not None and pages == 0:
            raise InvalidArgument(f"a physical limit below one page ({self.page_size} bytes) forbids every map")
        self._pool.set_physical_limit_pages(pages)

    def stats(self) -> dict:
        return self._pool.stats()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<kvlab.PagePool {s['device']} in_use={s['in_use']} free={s['free']} hits={s['hits']} misses={s['misses']}>"
