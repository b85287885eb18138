"""MemoryTimeline: device memory over time, stacked per model, with the total, limits and events marked.

Samples travel as float64 rows ``[t, total, bytes of model 0, bytes of model 1, ...]`` in two binary
traits: ``base`` (the whole window, re-sent rarely) and ``tail`` (every row since ``base``). A flush
normally sends only ``tail``, a few hundred bytes, and any view — even one opened later, or one
whose previous message was lost — rebuilds the exact window from base + tail without asking the
kernel (it may be busy running the cell that drives the experiment).
"""

from __future__ import annotations

import math
from collections import deque

import anywidget
import numpy as np
import traitlets as t

from . import assets
from .coalescer import CoalescedWidget, Coalescer



class MemoryTimeline(CoalescedWidget, anywidget.AnyWidget):
    """Stacked areas of bytes per model over the last ``window`` samples.

    >>> tl = MemoryTimeline(window=600)                       # 2 minutes at 5 Hz
    >>> tl.append(time.time(), {"a": 3 << 30, "b": 1 << 30}, total=80 << 30)
    >>> tl.set_limit("a", 4 << 30); tl.mark(time.time(), "burst starts")
    """

    _esm = assets.esm("timeline.js")
    _css = assets.css()

    columns = t.List(t.Unicode()).tag(sync=True)  # model names, in column order after t and total
    base = t.Bytes(b"").tag(sync=True)
    tail = t.Bytes(b"").tag(sync=True)
    window = t.Int(600).tag(sync=True)
    limits = t.Dict().tag(sync=True)  # {model: bytes}
    marks = t.List().tag(sync=True)  # [[t, label], ...]
    title = t.Unicode("device memory").tag(sync=True)
    total_label = t.Unicode("device total").tag(sync=True)  # what the `total` line is (a Dashboard may draw capacity)

    def __init__(self, window: int = 600, rebase_every: int = 64, max_marks: int = 200,
                 coalescer: Coalescer | None = None, **kwargs):
        if window < 2:
            raise ValueError(f"window={window}: a timeline needs at least 2 samples")
        if not 1 <= rebase_every <= window:
            raise ValueError(f"rebase_every={rebase_every} must be in [1, window={window}]")
        super().__init__(window=window, **kwargs)
        self._init_coalesced(coalescer)
        self._rebase_every = rebase_every
        self._cols: list[str] = []
        self._rows: deque[tuple] = deque(maxlen=window)
        self._appended = 0  # rows ever appended
        self._base_at = 0  # value of _appended when base was last sent
        self._rebase = True
        self._limits: dict[str, float] = {}
        self._marks: deque[list] = deque(maxlen=max_marks)
        self._meta_dirty = True

    def append(self, t_s: float, usage: dict[str, float], total: float | None = None) -> None:
        """One sample at time ``t_s`` (seconds, any origin): bytes per model, and the device total."""
        t_s = float(t_s)
        if not math.isfinite(t_s):
            raise ValueError(f"time must be finite, got {t_s}")
        with self._lock:
            if self._rows and t_s < self._rows[-1][0]:
                raise ValueError(f"time went backwards: {t_s} after {self._rows[-1][0]}; "
                                 "use one clock (time.time() or time.monotonic()) for every sample")
            for model, v in usage.items():
                if v is not None and v < 0:
                    raise ValueError(f"{model}: bytes must be >= 0, got {v}")
                if model not in self._cols:
                    self._cols.append(str(model))
                    self._rebase = True  # a new column changes the row width
            row = [t_s, math.nan if total is None else float(total)]
            row += [float(usage.get(m) or 0.0) if m in usage else math.nan for m in self._cols]
            self._rows.append(tuple(row))
            self._appended += 1
        self._changed()

    def set_limit(self, model: str, nbytes: float | None) -> None:
        """Draw ``model``'s limit as a dashed line; None removes it."""
        with self._lock:
            if nbytes is None:
                self._limits.pop(model, None)
            else:
                self._limits[str(model)] = float(nbytes)
            self._meta_dirty = True
        self._changed()

    def mark(self, t_s: float, label: str) -> None:
        """A vertical marker, e.g. ``mark(t, "burst starts")``."""
        with self._lock:
            self._marks.append([float(t_s), str(label)])
            self._meta_dirty = True
        self._changed()

    def rows(self) -> np.ndarray:
        """The window as a (n, 2 + models) float64 array: t, total, then one column per model."""
        with self._lock:
            return self._pack(list(self._rows)).reshape(-1, 2 + len(self._cols))

    @property
    def models(self) -> list[str]:
        with self._lock:
            return list(self._cols)

    def _pack(self, rows: list[tuple]) -> np.ndarray:
        width = 2 + len(self._cols)
        out = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):  # rows from before a model appeared are shorter: NaN = no data
            out[i, :len(r)] = r
        return out.ravel()

    def _snapshot(self) -> dict | None:
        state: dict = {}
        new = self._appended - self._base_at
        if self._rebase or new > self._rebase_every:
            state.update(columns=list(self._cols), base=self._pack(list(self._rows)).tobytes(), tail=b"")
            self._base_at, self._rebase = self._appended, False
        elif new:
            state["tail"] = self._pack(list(self._rows)[-new:]).tobytes()
        if self._meta_dirty:
            state.update(limits=dict(self._limits), marks=[list(m) for m in self._marks])
            self._meta_dirty = False
        return state
