"""Arena: a reserved virtual range backed by physical pages only where asked.

>>> from kvlab.memory import Arena
>>> with Arena("64MiB", device="cpu") as arena:      # reserves 32 pages of 2 MiB, maps none
...     arena.map(range(4))                           # 8 MiB now resident
...     x = numpy.from_dlpack(arena.tensor("float32", (4, 2 << 18)))

Physical handles may be larger than pages: ``Arena("1GiB", "cuda", handle_size="32MiB")`` keeps a bitmap
of 2 MiB pages but asks the driver for 32 MiB handles, which cost about as much each as a 2 MiB one
(the driver charges per handle, not per byte), so growth runs ~16x faster. Mapping any page of a handle
maps all of its pages; unmapping must name all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from . import _native_loader
from .errors import InvalidArgument, InvalidPages
from .dtypes import dlpack_dtype
from .args import MiB, Device, parse_device, parse_size

_native = _native_loader.native()

DEFAULT_PAGE_SIZE = 2 * MiB  # the CUDA VMM granularity on current GPUs


def _as_pages(pages) -> np.ndarray:
    """Page indices as a contiguous int64 array; accepts an int, range, slice-free iterable or array."""
    if isinstance(pages, (int, np.integer)) and not isinstance(pages, bool):
        return np.array([pages], dtype=np.int64)
    if isinstance(pages, range):
        return np.arange(pages.start, pages.stop, pages.step, dtype=np.int64)
    arr = np.asarray(pages if isinstance(pages, (np.ndarray, Sequence)) else list(pages))
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise InvalidPages(f"pages must be a 1-D sequence of integers, got {arr.dtype} with shape {arr.shape}")
    if arr.dtype == np.bool_:  # a mask, e.g. arena.mapped
        arr = np.flatnonzero(arr)
    return np.ascontiguousarray(arr, dtype=np.int64)


class Arena:
    """``capacity`` bytes of virtual address space on ``device``, mapped page by page.

    ``map``/``unmap`` take page indices (int, range, list or NumPy array; a boolean mask works too).
    ``handle_size`` (default: ``page_size``) is the size of each physical allocation, a multiple of the
    page size: a handle backs ``handle_size / page_size`` consecutive aligned pages, ``map`` backs every
    handle a requested page lies in (and counts all its pages as newly mapped), and ``unmap`` of part of a
    mapped handle raises InvalidPages. Handles come from the device's pool for that size
    (``PagePool(device, handle_size)``); see PagePool for pools of different sizes on one device.
    Contiguous runs cost one driver access call. ``map`` is all-or-nothing: on failure nothing this
    call mapped stays mapped and a typed error is raised (OutOfPhysicalMemory, LimitExceeded,
    BackendError, InvalidPages). Thread-safe; map/unmap release the GIL.
    """

    def __init__(self, capacity: int | str, device: str | Device | None = "cpu",
                 page_size: int | str = DEFAULT_PAGE_SIZE, limit: int | str | None = None,
                 handle_size: int | str | None = None):
        self.device = parse_device(device)
        self.page_size = parse_size(page_size)
        self.handle_size = self.page_size if handle_size is None else parse_size(handle_size)
        requested = parse_size(capacity)
        if requested <= 0:
            raise InvalidArgument("capacity must be positive: an arena needs at least one page")
        if self.page_size <= 0:
            raise InvalidArgument("page size must be positive")
        if self.handle_size <= 0 or self.handle_size % self.page_size:
            raise InvalidArgument(f"handle size {self.handle_size} must be a positive multiple of the page size "
                                  f"{self.page_size}")
        # Round the capacity up to whole handles: callers size by bytes they need, not by pages.
        capacity_bytes = math.ceil(requested / self.handle_size) * self.handle_size
        self._arena = _native.Arena(self.device.backend, self.device.index, capacity_bytes, self.page_size,
                                    self.handle_size)
        if limit is not None:
            self.limit = limit

    # -- mapping -----------------------------------------------------------------------------------
    def map(self, pages) -> int:
        """Back ``pages`` with physical memory; returns how many were newly mapped."""
        return self._arena.map(_as_pages(pages))

    def unmap(self, pages) -> int:
        """Return ``pages`` to the pool; their contents are lost. Returns how many were unmapped."""
        return self._arena.unmap(_as_pages(pages))

    def unmap_all(self) -> int:
        return self._arena.unmap_all()

    def pages_for(self, offset: int, nbytes: int) -> range:
        """The pages that hold bytes [offset, offset + nbytes)."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.capacity:
            raise InvalidPages(f"byte range [{offset}, {offset + nbytes}) is outside this arena of {self.capacity} bytes")
        if nbytes == 0:
            return range(0)
        return range(offset // self.page_size, (offset + nbytes - 1) // self.page_size + 1)

    # -- views -------------------------------------------------------------------------------------
    def tensor(self, dtype, shape: Iterable[int], offset: int = 0, strides: Iterable[int] | None = None):
        """A DLPack-exporting view of the arena (``torch.from_dlpack`` / ``numpy.from_dlpack``).

        Works over unmapped pages: touching them faults, so map before use. The view keeps the
        address range reserved after ``close()``. ``strides`` are in elements, like DLPack's.
        """
        name, code, bits = dlpack_dtype(dtype)
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise InvalidArgument(f"shape {shape} has a negative dimension")
        if strides is None:
            strides_t, step = [], 1
            for s in reversed(shape):
                strides_t.append(step)
                step *= max(s, 1)
            strides_t = tuple(reversed(strides_t))
        else:
            strides_t = tuple(int(s) for s in strides)
            if len(strides_t) != len(shape) or any(s < 0 for s in strides_t):
                raise InvalidArgument(f"strides {strides_t} do not fit shape {shape} (one non-negative stride per dim)")
        itemsize = bits // 8
        if offset < 0 or offset % itemsize:
            raise InvalidArgument(f"offset {offset} must be a non-negative multiple of the {name} size {itemsize}")
        extent = 0 if 0 in shape else (1 + sum((d - 1) * s for d, s in zip(shape, strides_t))) * itemsize
        if offset + extent > self.capacity:
            raise InvalidArgument(f"a {name} view of shape {shape} at offset {offset} needs {offset + extent} bytes; "
                                  f"the arena has {self.capacity}")
        return self._arena.view(code, bits, list(shape), list(strides_t) if strides is not None else [], offset)

    def torch(self, dtype, shape: Iterable[int], offset: int = 0, strides: Iterable[int] | None = None):
        """Shortcut for ``torch.from_dlpack(self.tensor(...))``."""
        import torch

        return torch.from_dlpack(self.tensor(dtype, shape, offset, strides))

    # -- state -------------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._arena.capacity

    @property
    def pages_per_handle(self) -> int:
        return self.handle_size // self.page_size

    @property
    def n_pages(self) -> int:
        return self._arena.n_pages

    @property
    def base(self) -> int:
        """The virtual address of page 0."""
        return self._arena.base

    @property
    def backend(self) -> str:
        return self._arena.backend

    @property
    def mapped(self) -> np.ndarray:
        """A boolean array, one entry per page: True where physical memory backs it (a copy)."""
        return np.frombuffer(self._arena.bitmap(), dtype=np.bool_).copy()

    @property
    def mapped_pages(self) -> int:
        return self._arena.mapped_pages

    @property
    def mapped_bytes(self) -> int:
        return self._arena.mapped_pages * self.page_size

    @property
    def limit(self) -> int | None:
        """Maximum mapped bytes, or None. Lowering it does not unmap; later maps over it fail."""
        return self._arena.limit_bytes or None

    @limit.setter
    def limit(self, value: int | str | None) -> None:
        n = 0 if value is None else parse_size(value)
        if value is not None and n == 0:
            raise InvalidArgument("a limit of 0 bytes would forbid every map; use None for no limit")
        self._arena.limit_bytes = n

    @property
    def pool(self):
        from .pool import PagePool

        return PagePool._wrap(self._arena.pool)

    def stats(self) -> dict:
        """Calls, handles (``pages`` of ``map``/``unmap`` count physical handles), time and a log2-microsecond
        latency histogram per operation, plus pool hits/misses (in handles)."""
        s = self._arena.stats()
        s["mapped_pages"] = self.mapped_pages
        s["mapped_bytes"] = self.mapped_bytes
        s["capacity"] = self.capacity
        s["page_size"] = self.page_size
        s["handle_size"] = self.handle_size
        s["device"] = str(self.device)
        return s

    @property
    def closed(self) -> bool:
        return self._arena.closed

    def close(self) -> None:
        """Unmap every page (handles go back to the pool) and drop the reservation. Idempotent."""
        self._arena.close()

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.mapped_pages}/{self.n_pages} pages mapped"
        handles = f", {self.handle_size >> 20} MiB handles" if self.handle_size != self.page_size else ""
        return f"<kvlab.Arena {self.capacity >> 20} MiB on {self.device} ({self.backend}{handles}), {state}>"
