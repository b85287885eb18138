"""PageMap: every page of every pool as one pixel-cell, coloured by state, live.

The state of a pool travels as one uint8 per page (a binary buffer, not JSON) so tens of thousands of
pages cost their byte count; the front end paints them into an ImageData and repaints a pool only
when its bytes changed. Pools whose bytes did not change are not marked dirty at all.
"""

from __future__ import annotations

from typing import Callable

import anywidget
import numpy as np
import traitlets as t

from kvlab.registry.record import MAX_GROUPS, PageState

from . import assets
from .coalescer import CoalescedWidget, Coalescer

# Hybrid models: USED + g is a page in use by KV cache group g (the registry's states).
MAX_STATE = PageState.USED + MAX_GROUPS - 1


def _as_states(states) -> bytes:
    arr = np.asarray(states)
    if arr.ndim != 1:
        raise ValueError(f"page states must be 1-D (one entry per page), got shape {arr.shape}")
    if arr.dtype == np.bool_:  # a mapped mask, e.g. Arena.mapped: mapped pages count as in use
        arr = arr.astype(np.uint8) * int(PageState.USED)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"page states must be integers 0/1/2 or a boolean mask, got dtype {arr.dtype}")
    elif arr.size and (arr.min() < 0 or arr.max() > MAX_STATE):
        raise ValueError("page states must be 0 (unmapped), 1 (mapped, free or retained), 2 (in use) or 2 + g "
                         f"(in use by KV cache group g < {MAX_GROUPS}); got values in [{arr.min()}, {arr.max()}]")
    return np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def _jsonable(value):
    # Traits are sent as JSON: NumPy scalars from an arena's stats would break serialisation.
    if isinstance(value, np.generic):
        return value.item()
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


class PageMap(CoalescedWidget, anywidget.AnyWidget):
    """A grid per pool: unmapped (grey), mapped but free or retained (light), in use (dark).

    >>> pm = PageMap()
    >>> pm.update("llama-1b", states, {"page_size": 2 << 20, "block_bytes": 16 << 10})
    >>> pm                                # in a notebook cell: hover a cell for page, bytes and blocks

    ``info`` is free-form; the tooltip understands ``page_size`` (bytes per page), ``block_bytes``
    (bytes per KV block, to name the blocks a page holds) and ``label``; other keys are listed as is.
    """

    _esm = assets.esm("pagemap.js")
    _css = assets.css()

    # {pool: uint8 bytes}: ipywidgets lifts nested bytes out of the JSON into binary buffers.
    states = t.Dict().tag(sync=True)
    infos = t.Dict().tag(sync=True)
    order = t.List(t.Unicode()).tag(sync=True)
    columns = t.Int(0).tag(sync=True)  # cells per row; 0 lets the front end choose from the page count
    cell_px = t.Int(0).tag(sync=True)  # 0: auto (bigger cells for small pools)

    def __init__(self, coalescer: Coalescer | None = None, **kwargs):
        super().__init__(**kwargs)
        self._init_coalesced(coalescer)
        self._pending_states: dict[str, bytes] = {}
        self._pending_infos: dict[str, dict] = {}
        self._order: list[str] = []
        self._dirty = False

    def update(self, pool: str, states, info: dict | None = None) -> bool:
        """Set the page states of ``pool`` (0 unmapped, 1 mapped-free, 2 in use, or a mapped mask).

        Cheap and thread-safe: returns whether anything changed; the view follows within ~100 ms.
        """
        data = _as_states(states)
        with self._lock:
            changed = self._pending_states.get(pool) != data
            if info is not None:
                info = {str(k): _jsonable(v) for k, v in info.items()}
                changed |= self._pending_infos.get(pool) != info
                self._pending_infos[pool] = info
            if pool not in self._order:
                self._order.append(pool)
                changed = True
            self._pending_states[pool] = data
            self._dirty |= changed
        if changed:
            self._changed()
        return changed

    def remove(self, pool: str) -> None:
        with self._lock:
            if pool not in self._order:
                return
            self._order.remove(pool)
            self._pending_states.pop(pool, None)
            self._pending_infos.pop(pool, None)
            self._dirty = True
        self._changed()

    @property
    def pools(self) -> list[str]:
        with self._lock:
            return list(self._order)

    def counts(self, pool: str) -> dict:
        """Pages per state of ``pool`` as last given to :meth:`update`."""
        with self._lock:
            arr = np.frombuffer(self._pending_states[pool], dtype=np.uint8)
        c = np.bincount(arr, minlength=3)
        return {"unmapped": int(c[0]), "mapped_free": int(c[1]), "in_use": int(c[2])}

    def _snapshot(self) -> dict | None:
        if not self._dirty:
            return None
        self._dirty = False
        # New dict objects each time: traitlets compares old and new, and a mutated dict would look equal.
        return {"states": dict(self._pending_states), "infos": {k: dict(v) for k, v in self._pending_infos.items()},
                "order": list(self._order)}

    @classmethod
    def from_arena(cls, arena, name: str | None = None, interval_s: float = 0.2,
                   used: Callable[[], object] | None = None, coalescer: Coalescer | None = None,
                   into: "PageMap | None" = None) -> "PageMap":
        """A live view of a :class:`kvlab.memory.Arena`, polled every ``interval_s`` on the views thread.

        An arena knows which pages are mapped, not which hold live blocks: pass ``used`` (a callable
        returning a boolean page mask) to tell mapped-and-free pages apart; without it every mapped page
        shows as in use. ``into`` adds the arena to an existing PageMap instead of a new one.
        """
        pm = into if into is not None else cls(coalescer=coalescer)
        pool = name or f"arena {arena.base:#x}"
        info = {"page_size": arena.page_size, "capacity": arena.capacity, "device": str(arena.device),
                "backend": arena.backend}

        def poll() -> bool:
            if arena.closed:  # show it empty once, then stop polling a dead arena
                pm.update(pool, np.zeros(arena.n_pages, np.uint8), {**info, "label": "closed"})
                return False
            mapped = arena.mapped
            states = mapped.astype(np.uint8)
            if used is not None:
                states += (np.asarray(used(), dtype=bool) & mapped).astype(np.uint8)
            else:
                states *= int(PageState.USED)
            pm.update(pool, states, info)
            return True

        poll()  # the first frame is there at display time, not one interval later
        pm.sample(poll, interval_s, name=f"PageMap({pool})")
        return pm
