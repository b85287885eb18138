"""LatencyView: time to first token and end-to-end latency per model, as live histograms with p50/p90/p99.

The kernel keeps the last ``window`` samples per model and sends summaries, not samples: per model
and metric, counts over fixed log-spaced bins (uint32, a binary buffer) and three percentiles. A
flush costs the same whether 10 or 10 000 requests finished since the last one.
"""

from __future__ import annotations


import anywidget
import numpy as np
import traitlets as t

from . import assets
from .coalescer import CoalescedWidget, Coalescer

METRICS = ("ttft", "e2e")
PERCENTILES = (50, 90, 99)


class _Ring:
    """The last ``n`` float samples, without a Python object per sample."""

    def __init__(self, n: int):
        self.buf = np.empty(n)
        self.size = self.pos = 0

    def extend(self, x: np.ndarray) -> None:
        x = x[-len(self.buf):]
        end = self.pos + len(x)
        first = min(len(x), len(self.buf) - self.pos)
        self.buf[self.pos:self.pos + first] = x[:first]
        self.buf[:len(x) - first] = x[first:]
        self.pos = end % len(self.buf)
        self.size = min(len(self.buf), self.size + len(x))

    def values(self) -> np.ndarray:
        return self.buf[:self.size]  # order does not matter for percentiles and histograms


class LatencyView(CoalescedWidget, anywidget.AnyWidget):
    """Per model: TTFT and end-to-end histograms over the last ``window`` requests, with percentiles.

    >>> lv = LatencyView()
    >>> lv.add("llama-1b", ttft_s=0.031, e2e_s=0.84)
    >>> lv.add("llama-1b", ttft_s=[0.02, 0.05], e2e_s=[0.7, 1.1])      # many at once
    """

    _esm = assets.esm("latency.js")
    _css = assets.css()

    models = t.List(t.Unicode()).tag(sync=True)
    edges = t.List(t.Float()).tag(sync=True)  # bin edges in seconds, shared by every histogram
    # uint32 counts, shape (models, 2 metrics, bins), row-major
    hist = t.Bytes(b"").tag(sync=True)
    stats = t.Dict().tag(sync=True)  # {model: {"n": total, "ttft": [p50, p90, p99] | None, "e2e": [...]}}

    def __init__(self, window: int = 5000, lo_s: float = 1e-3, hi_s: float = 100.0, bins_per_decade: int = 8,
                 coalescer: Coalescer | None = None, **kwargs):
        if window < 1:
            raise ValueError(f"window={window}: keep at least one sample per model")
        if not 0 < lo_s < hi_s:
            raise ValueError(f"need 0 < lo_s < hi_s, got lo_s={lo_s}, hi_s={hi_s}")
        decades = np.log10(hi_s / lo_s)
        edges = np.logspace(np.log10(lo_s), np.log10(hi_s), int(np.ceil(decades * bins_per_decade)) + 1)
        super().__init__(edges=edges.tolist(), **kwargs)
        self._init_coalesced(coalescer)
        self._edges = edges
        self._window = window
        self._data: dict[str, dict[str, _Ring]] = {}
        self._totals: dict[str, int] = {}
        self._dirty = False

    def add(self, model: str, ttft_s, e2e_s) -> None:
        """Record finished requests: scalars or equal-length sequences (NaN or None = not measured)."""
        ttft = np.atleast_1d(np.asarray(ttft_s, dtype=float))
        e2e = np.atleast_1d(np.asarray(e2e_s, dtype=float))
        if ttft.ndim != 1 or ttft.shape != e2e.shape:
            raise ValueError(f"ttft_s and e2e_s must be scalars or 1-D of one length, got {ttft.shape} and {e2e.shape}")
        if np.any(ttft < 0) or np.any(e2e < 0):
            raise ValueError("latencies must be >= 0 seconds")
        with self._lock:
            rings = self._data.get(model)
            if rings is None:
                rings = self._data[str(model)] = {m: _Ring(self._window) for m in METRICS}
                self._totals[model] = 0
            for name, x in zip(METRICS, (ttft, e2e)):
                x = x[np.isfinite(x)]
                if len(x):
                    rings[name].extend(x)
            self._totals[model] += len(ttft)
            self._dirty = True
        self._changed()

    def percentiles(self, model: str) -> dict[str, list[float] | None]:
        """{"ttft": [p50, p90, p99], "e2e": [...]} over the window, in seconds (None without samples)."""
        with self._lock:
            return {m: self._pct(self._data[model][m].values()) for m in METRICS}

    @staticmethod
    def _pct(x: np.ndarray) -> list[float] | None:
        return [float(v) for v in np.percentile(x, PERCENTILES)] if len(x) else None

    def _snapshot(self) -> dict | None:
        if not self._dirty:
            return None
        self._dirty = False
        models = list(self._data)
        nb = len(self._edges) - 1
        hist = np.zeros((len(models), len(METRICS), nb), dtype=np.uint32)
        stats = {}
        for i, model in enumerate(models):
            entry = {"n": self._totals[model]}
            for j, metric in enumerate(METRICS):
                x = self._data[model][metric].values()
                # Out-of-range samples land in the end bins rather than vanish from the picture.
                idx = np.clip(np.searchsorted(self._edges, x, side="right") - 1, 0, nb - 1)
                hist[i, j] = np.bincount(idx, minlength=nb)
                entry[metric] = self._pct(x)
            stats[model] = entry
        return {"models": models, "hist": hist.tobytes(), "stats": stats}
