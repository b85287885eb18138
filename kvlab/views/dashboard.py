"""Dashboard: pages, memory over time, latency and limit controls for a Server, a Fleet or a list of servers.

>>> dash = kvlab.views.watch(server)      # or Dashboard(fleet); displays as an ipywidgets VBox
>>> run_workload(bursty(3, 8, pause=2), server, on_record=dash.record, telemetry=dash.telemetry)
>>> dash.stop()                           # stops the Telemetry it made; the last picture stays
>>> dash.close()                          # ... and removes the dashboard

Everything on screen comes from ONE :class:`kvlab.lab.telemetry.Telemetry` listener, called on the
Telemetry's sampler thread with each :class:`Sample`. The listener only hands the latest values to
the three views, which coalesce them to ~10 messages a second each (see coalescer.py); the limit
rows and the header change traits only when their text changes. Nothing here sends from a thread
except by setting traits, which is safe on ipykernel 6.x and >= 7.1.
"""

from __future__ import annotations

import html
import logging
import threading
import weakref

import ipywidgets as widgets
import numpy as np

from kvlab.lab.targets import flatten, require
from kvlab.registry.names import short_model
from kvlab.units import format_size

from .controls import LimitControl
from .latency import LatencyView
from kvlab.registry import PageState

from .pagemap import MAX_STATE, PageMap
from .timeline import MemoryTimeline

log = logging.getLogger("kvlab.views")
TOTALS = ("auto", "device", "capacity", None)
# Dashboards that run their own Telemetry. Re-running a `dash = views.watch(server)` cell must not leave the
# old one sampling (and polling the engine's /metrics, which slows a busy CPU engine) for ever.
_running: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()


def _page_lut() -> np.ndarray:
    # A state this kvlab does not know (a newer engine's) is drawn as mapped: it holds memory.
    lut = np.full(256, PageState.MAPPED, np.uint8)
    lut[:MAX_STATE + 1] = np.arange(MAX_STATE + 1)  # USED + g: in use by KV cache group g (hybrid models)
    return lut


class Dashboard(widgets.VBox):
    """PageMap + MemoryTimeline + LatencyView (+ one limit row per elastic pool) for ``target``.

    target: a Server, a Fleet, a list of Servers, or None for every pool in the registry.
    telemetry: a Telemetry to listen to; None makes one (``interval`` seconds between samples) that the
        Dashboard starts now and stops on ``close()``.
    controls: show a limit row per pool (slider + text box through :func:`kvlab.limits.set_limit`).
    total: the timeline's reference line: "device" (the device's total memory), "capacity" (the sum of
        the pools' reserved capacity), None, or "auto" = "device" on GPUs and "capacity" on the host,
        where the machine's RAM would flatten a few MiB of KV cache to nothing.
    window: samples kept on the timeline (600 at 0.2 s = 2 minutes).
    """

    def __init__(self, target=None, telemetry=None, interval: float = 0.2, controls: bool = True, *,
                 total: str | None = "auto", window: int = 600, coalescer=None):
        if total not in TOTALS:
            raise ValueError(f"total={total!r}: use one of {TOTALS}")
        self.servers = require(flatten(target), ("url", "name"),
                               "a Dashboard watches a Server, a Fleet or a list of Servers")
        # Made (not started) before any widget: bad arguments leave no comm open behind.
        self._owns_telemetry = telemetry is None
        if telemetry is None:
            from kvlab.lab.telemetry import Telemetry  # lazy: kvlab.views does not need the lab

            telemetry = Telemetry(target, interval=interval, pages=True)
        self.telemetry = telemetry
        self._total = total
        self._lut = _page_lut()
        self._names = {s.pool_name: s.name for s in self.servers if getattr(s, "pool_name", None)}
        self._wanted = set(self._names) if target is not None else None
        self._rank = {name: i for i, name in enumerate(self._names)}
        self._labels: dict[str, str] = {}  # pool -> label on the views, fixed once given
        self._limits: dict[str, int | None] = {}
        self._live: set[str] = set()
        # Servers without a pool (static, kvcached) show their processes' memory (NVML, or RSS on the CPU).
        self._poolless = [s for s in self.servers if not getattr(s, "pool_name", None)]
        self._n_events = 0
        self._header_text = ""
        self._lines: list[str] = []  # the engines' lines last shown in the header
        self._note = ""  # why the dashboard stopped, once it did
        self._lock = threading.Lock()
        self._stopped = False
        self.samples = 0
        self.errors = 0
        self.last_error: BaseException | None = None

        self.pagemap = PageMap(coalescer=coalescer)
        self.timeline = MemoryTimeline(window=window, coalescer=coalescer, title="KV cache memory per model")
        self.latency = LatencyView(coalescer=coalescer)
        self.header = widgets.HTML(self._header([]))
        self.controls: dict[str, LimitControl] = {}
        if controls:
            pools = list(self._names) if target is not None else _registry_pools()
            for pool in pools:
                self.controls[pool] = LimitControl(pool, self._names.get(pool, pool))
        children = [self.header, self.pagemap, self.timeline, self.latency]
        if self.controls:
            children.append(widgets.VBox([widgets.HTML("<b>limits</b> (all the way right: no limit)"),
                                          *self.controls.values()]))
        super().__init__(children)
        self.add_class("kvlab-dashboard")

        telemetry.add_listener(self._on_sample)
        if self._owns_telemetry:
            self._key = tuple(sorted(id(s) for s in self.servers)) if target is not None else "all"
            for old in list(_running):
                if old._key == self._key:
                    old.stop("a newer dashboard of the same servers took over")
            _running.add(self)
            telemetry.start()

    # ---- inputs --------------------------------------------------------------------------------
    def record(self, rec) -> None:
        """Feed one finished request (a RequestRecord) to the latency view: ``on_record=dash.record``."""
        if not getattr(rec, "ok", False):
            return
        url = str(rec.url).rstrip("/")
        # By URL, not model: a port is picked at start, and two servers may serve one model.
        named = [s.name for s in self.servers if getattr(s, "port", None) and s.url.rstrip("/") == url]
        label = named[0] if named else _short(rec.model)
        self.latency.add(label, np.nan if rec.ttft is None else rec.ttft, np.nan if rec.e2e is None else rec.e2e)

    def mark(self, label: str) -> None:
        """An event at now (e.g. "burst 2"), drawn on the timeline with the next sample."""
        self.telemetry.mark(label)

    def stop(self, reason: str = "stopped") -> None:
        """Stop following (and stop the Telemetry this Dashboard made) but keep the last picture on screen."""
        _running.discard(self)
        telemetry = getattr(self, "telemetry", None)
        if telemetry is not None:
            telemetry.remove_listener(self._on_sample)
            with self._lock:  # a sample being shown right now finishes first; none starts after
                self._stopped = True
            if self._owns_telemetry:
                telemetry.stop()
        for control in getattr(self, "controls", {}).values():
            control.freeze()
        if getattr(self, "header", None) is not None and self.header.comm is not None:
            self._note = self._note or reason  # the first reason stays
            self.header.value = self._header(self._lines)

    def close(self) -> None:
        """Stop, and remove the dashboard from the page (its widgets are closed)."""
        self.stop()
        for w in (*getattr(self, "controls", {}).values(), getattr(self, "pagemap", None),
                  getattr(self, "timeline", None), getattr(self, "latency", None), getattr(self, "header", None)):
            if w is not None:
                w.close()
        super().close()

    # ---- the Telemetry listener (sampler thread) -------------------------------------------------
    def _on_sample(self, sample) -> None:
        try:
            with self._lock:  # one sample at a time, even if a second Telemetry feeds this dashboard
                if self._stopped:
                    return
                self._apply(sample)
                self.samples += 1
        except Exception as e:  # noqa: BLE001 - never raise into the sampler thread other listeners share
            self.errors += 1
            self.last_error = e
            log.warning("kvlab Dashboard: sample not shown: %r", e)

    def _apply(self, sample) -> None:
        usage: dict[str, int] = {}
        # A Telemetry reports every pool in the registry; show those of our servers (all for target=None).
        pools = {n: p for n, p in sample.pools.items() if self._wanted is None or n in self._wanted}
        # The servers' order, not the registry's (a directory listing): views stay put between runs.
        pools = dict(sorted(pools.items(), key=lambda kv: (self._rank.get(kv[0], len(self._rank)), kv[0])))
        for name, p in pools.items():
            label = self._label(name, p.model)
            if p.pages is not None:
                info = {"label": f"pool {name}{_ranks_note(p.ranks, p.mapped)}", "page_size": p.page_size,
                        "capacity": p.capacity, "device": p.device, "pid": p.pid, "ranks": p.ranks}
                self.pagemap.update(label, self._lut[np.asarray(p.pages, dtype=np.uint8)], info)
            usage[label] = p.mapped
            if self._limits.get(name, -1) != p.limit:
                self._limits[name] = p.limit
                self.timeline.set_limit(label, p.limit)
            control = self.controls.get(name)
            if control is not None:
                control.readback(p.limit, p.capacity)
        for name in self._live - set(pools):  # the engine stopped: its record is gone, its pages free
            label = self._labels[name]
            if label in self.pagemap.pools:
                n = self.pagemap.counts(label)
                self.pagemap.update(label, np.zeros(sum(n.values()), np.uint8), {"label": f"pool {name}: stopped"})
        self._live = set(pools)
        usage.update(self._process_bytes(sample))
        self.timeline.append(sample.t, usage, total=self._total_of(sample, pools))
        new = self.telemetry.events[self._n_events:]  # only the events since the last sample, not a full copy
        for t, label in new:
            self.timeline.mark(t, label)
        self._n_events += len(new)
        self._lines = self._engine_lines(sample)
        text = self._header(self._lines)
        if text != self._header_text:
            self._header_text = text
            self.header.value = text

    def _process_bytes(self, sample) -> dict[str, int]:
        """Each pool-less server's process memory, as the telemetry measured it for this sample."""
        out = {}
        for server in self._poolless:
            nbytes = sample.memory.get(self.telemetry.key_of(server))
            if nbytes is not None:
                out[f"{server.name} (process)"] = nbytes
        return out

    def _label(self, pool: str, model: str) -> str:
        label = self._labels.get(pool)
        if label is None:
            label = self._names.get(pool) or _short(model) or pool
            if label in self._labels.values():  # two pools of one model: tell them apart
                label = f"{label} ({pool})"
            self._labels[pool] = label
        return label

    def _total_of(self, sample, pools: dict) -> float | None:
        devices = {p.device for p in pools.values()} | {str(s.device) for s in self._poolless}
        if self._total is None or not devices:
            return None
        mode = self._total
        if mode == "auto":
            mode = "device" if all(str(d).startswith("cuda") for d in devices) else "capacity"
        label = "device total" if mode == "device" else "reserved (pools' capacity)"
        if self.timeline.total_label != label:  # rare: once, or when a pool on another device appears
            self.timeline.total_label = label
        if mode == "capacity":
            return float(sum(p.capacity for p in pools.values())) or None
        totals = [sample.devices[d].total for d in devices if d in sample.devices]
        return float(sum(totals)) if totals else None

    def _engine_lines(self, sample) -> list[str]:
        lines = []
        for server, m in sorted(sample.engines.items()):
            bits = [f"{k.replace('_', ' ')} {v:.0%}" if k == "kv_usage" else f"{k} {v:g}" for k, v in m.items()]
            lines.append(f"<b>{html.escape(server)}</b>: {html.escape(' · '.join(bits))}")
        return lines

    def _header(self, lines: list[str]) -> str:
        who = ", ".join(html.escape(s.name) for s in self.servers) or "every pool in the registry"
        note = f" · <i>{html.escape(self._note)}</i>" if self._note else ""
        engines = "<br>".join(lines)
        return f"<div class='kvlab-dash-head'>kvlab dashboard: {who}{note}{'<br>' + engines if engines else ''}</div>"

    def __repr__(self) -> str:
        return f"Dashboard({[s.name for s in self.servers] or 'all pools'}, samples={self.samples})"


def _short(model: str) -> str:
    return short_model(str(model)) or str(model)


def _registry_pools() -> list[str]:
    from kvlab.registry import list_records

    return [r.name for r in list_records()]


__all__ = ["Dashboard"]


def _ranks_note(ranks: int, mapped: int) -> str:
    """How a tensor-parallel engine's pages split over its ranks; nothing for one rank."""
    return "" if ranks <= 1 else f" · {ranks} ranks, {format_size(mapped // ranks)} mapped on each"
