"""Telemetry: one sampler thread that records memory and engine state into one timeline.

>>> with Telemetry(server) as tel:           # or a Fleet, a list of Servers, or None (every pool)
...     run_workload(bursty(3, 8, pause=5), server, telemetry=tel)
>>> tel.table()                               # one row per sample

Every ``interval`` seconds (default 0.2 s = 5 Hz) it reads:
* device memory: NVML per device and per process when an NVIDIA GPU and nvidia-ml-py are there;
  otherwise the host's used memory and the resident set (RSS) of each server's processes;
* every kvlab pool in the registry (mapped/used/retained bytes, limit, page states), without
  touching the engines: the records live in shared memory;
* each server's /metrics (KV usage, running and waiting requests) — from a second thread, at most
  every ``metrics_interval`` seconds (default 1 s; 0 disables). Measured: polling /metrics at 5 Hz
  slowed a busy 2-core CPU engine's time to first token from 0.04 s to 1.9 s, and a slow answer must
  never hold up the memory samples.

Table columns, one per series: ``t`` (seconds since start), ``time`` (Unix), ``dev_used:<device>``,
``dev_total:<device>``, ``mem:<server>`` (bytes of the server's processes: NVML on a GPU, RSS on
the CPU), ``kv_mapped:<server>``/``kv_used:<server>`` (its pools, from the registry),
``pool_<field>:<pool>``, ``kv_usage:<server>``, ``running:<server>``, ``waiting:<server>``, ``event``.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kvlab.meminfo import host_memory
from kvlab.nvml import Nvml

from . import probes
from .engine_metrics import MetricsPoller
from .targets import flatten, require

# Seconds between rescans of a server's process group: a /proc scan costs ~2.5 ms here, and an
# engine's processes are fixed once it is up (a pid that vanishes triggers a rescan at once).
PID_REFRESH = 10.0


@dataclass(frozen=True)
class PoolSample:
    """One registry record at one instant."""

    name: str
    model: str
    pid: int
    device: str
    capacity: int
    page_size: int
    mapped: int
    used: int
    retained: int
    limit: int | None
    minimum: int
    pages: np.ndarray | None  # uint8 page states (kvlab.registry.PAGE_*), None if not requested
    ranks: int = 1  # worker processes (tensor/pipeline parallel) sharing the sizes above evenly


@dataclass(frozen=True)
class DeviceSample:
    name: str
    total: int
    used: int
    per_process: dict[int, int]  # pid -> bytes (NVML on a GPU; RSS on the CPU)


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the Telemetry started
    devices: dict[str, DeviceSample]
    pools: dict[str, PoolSample]  # by pool name
    engines: dict[str, dict[str, float]]  # server key -> latest /metrics values (kv_usage, running, waiting)
    memory: dict[str, int] = field(default_factory=dict)  # server key -> bytes of its processes (mem: column)


def server_keys(servers) -> list[str]:
    """Column keys: each server's name, made unique (``name#2``) when two servers share one."""
    keys, seen = [], {}
    for s in servers:
        n = seen[s.name] = seen.get(s.name, 0) + 1
        keys.append(s.name if n == 1 else f"{s.name}#{n}")
    return keys


class Telemetry:
    """Samples memory, pools and engine metrics on one background thread; see the module docstring."""

    def __init__(self, targets=None, interval: float = 0.2, metrics_interval: float = 1.0, pages: bool = True,
                 registry_root: str | os.PathLike | None = None):
        if not (isinstance(interval, (int, float)) and 0.01 <= interval <= 3600):
            raise ValueError(f"interval must be between 0.01 and 3600 seconds, got {interval!r}")
        if not (isinstance(metrics_interval, (int, float)) and (metrics_interval == 0 or metrics_interval >= 0.1)):
            raise ValueError(f"metrics_interval must be 0 (off) or >= 0.1 seconds, got {metrics_interval!r}")
        self.servers = require(flatten(targets), ("pids", "url"),
                               "telemetry targets must be Servers, a Fleet, a list of them or None")
        self.keys = server_keys(self.servers)
        self.interval, self.metrics_interval, self.pages = float(interval), float(metrics_interval), pages
        self.registry_root = registry_root
        self.events: list[tuple[float, str]] = []
        self.latest: Sample | None = None
        self.errors: list[str] = []  # the first few sampling errors (a probe failing does not stop sampling)
        self.cpu_seconds = 0.0  # CPU time the sampler thread has used (its own cost)
        self.n_samples = 0
        self._rows: list[dict] = []
        self._pending_events: list[str] = []
        self._listeners: list[Callable[[Sample], None]] = []
        self._metrics = (MetricsPoller(self.servers, self.keys, self.metrics_interval)
                         if self.metrics_interval > 0 and self.servers else None)
        self._pids: dict[int, tuple[float, list[int]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = time.monotonic()
        self._nvml = None
        self._pools: probes.PoolReader | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Telemetry":
        if self._threads:
            return self
        self._stop.clear()
        if not self._rows:  # a restart continues the same clock, so the table's t stays increasing
            self._t0 = time.monotonic()
        self._nvml = Nvml.open()
        self._pools = probes.PoolReader(self.registry_root)
        if self._metrics is not None:
            self._metrics.start()
        self._threads = [threading.Thread(target=self._run, name="kvlab-telemetry", daemon=True)]
        self._threads[0].start()
        return self

    def stop(self) -> None:
        """Stop sampling (after one last sample, so the table ends at the moment of stop). Idempotent."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        if self._metrics is not None:
            self._metrics.stop()
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None
        if self._pools is not None:
            self._pools.close()

    @property
    def metrics_polls(self) -> int:
        """/metrics answers read so far (0 with metrics off)."""
        return self._metrics.polls if self._metrics else 0

    @property
    def metrics_misses(self) -> int:
        """/metrics polls that got no usable answer (their columns keep the last values)."""
        return self._metrics.misses if self._metrics else 0

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stop.is_set()

    def __enter__(self) -> "Telemetry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def now(self) -> float:
        return time.monotonic() - self._t0

    # ---- what callers add -----------------------------------------------------------------------
    def add_listener(self, fn: Callable[[Sample], None]) -> None:
        """Call ``fn(sample)`` after each sample, on the sampler thread: keep it quick."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def mark(self, label: str) -> None:
        """Record an event (e.g. a burst start) now: in ``events`` and in the next row's ``event``."""
        with self._lock:
            self.events.append((self.now(), str(label)))
            self._pending_events.append(str(label))

    def table(self):
        """The timeline so far as a pandas DataFrame, one row per sample."""
        import pandas as pd

        with self._lock:
            rows = list(self._rows)
        return pd.DataFrame(rows)

    def rows(self) -> list[dict]:
        """The timeline so far as plain dicts (no pandas needed)."""
        with self._lock:
            return list(self._rows)

    # ---- the sampler ----------------------------------------------------------------------------
    def _run(self) -> None:
        c0 = time.thread_time()
        next_at = time.monotonic()
        try:
            while True:
                self._sample_once()
                self.cpu_seconds = time.thread_time() - c0
                if self._stop.is_set():
                    break
                next_at += self.interval
                delay = next_at - time.monotonic()
                if delay < 0:  # fell behind (a suspended process): skip the missed ticks, no burst of samples
                    next_at, delay = time.monotonic(), 0.0
                self._stop.wait(delay)  # woken by stop(): the loop takes the last row, then ends
        finally:
            self.cpu_seconds = time.thread_time() - c0

    def _sample_once(self) -> None:
        try:
            sample, row = self._take()
        except Exception as e:  # one bad read must not end the timeline
            if len(self.errors) < 20:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")
            return
        with self._lock:
            if self._pending_events:
                row["event"] = "; ".join(self._pending_events)
                self._pending_events = []
            self._rows.append(row)
            self.latest = sample
            self.n_samples += 1
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(sample)
            except Exception as e:
                warnings.warn(f"telemetry listener {fn!r} failed and was removed: {e!r}", RuntimeWarning)
                self.remove_listener(fn)

    def key_of(self, server) -> str | None:
        """The key of ``server``'s columns (and of Sample.memory/engines), or None if not watched here."""
        for s, key in zip(self.servers, self.keys):
            if s is server:
                return key
        return None

    def _server_pids(self, i: int, server) -> list[int]:
        now = time.monotonic()
        cached = self._pids.get(i)
        if cached is None or now - cached[0] > PID_REFRESH or not server.alive:
            pids = server.pids() if server.alive else []
            self._pids[i] = cached = (now, pids)
        return cached[1]

    def _take(self) -> tuple[Sample, dict]:
        t = self.now()
        row: dict = {"t": t, "time": time.time()}
        server_pids = [self._server_pids(i, s) for i, s in enumerate(self.servers)]
        records = self._pools.read()
        devices = self._devices(server_pids, records)
        for dev in devices.values():
            row[f"dev_used:{dev.name}"], row[f"dev_total:{dev.name}"] = dev.used, dev.total
        if self._nvml is None:  # a process gone from the host probe: rescan that server's group next time
            for i, pids in enumerate(server_pids):
                if any(p not in devices["cpu"].per_process for p in pids):
                    self._pids.pop(i, None)
        memory = {}
        for key, pids in zip(self.keys, server_pids):
            # NVML per process on a GPU, RSS on the CPU. No column when none of the server's pids is
            # listed (NVML in a container may only know the host's pids): absent, not a false 0.
            found = [d.per_process[p] for d in devices.values() for p in pids if p in d.per_process]
            if found:
                row[f"mem:{key}"] = memory[key] = sum(found)
        pools = {}
        owner = self._owners(records, server_pids)
        for rec in records:
            pools[rec.name] = PoolSample(rec.name, rec.model, rec.pid, rec.device, rec.capacity, rec.page_size,
                                         rec.mapped, rec.used, rec.retained, rec.limit, rec.min,
                                         rec.page_states() if self.pages else None, rec.ranks)
            for attr in ("mapped", "used", "retained", "capacity"):
                row[f"pool_{attr}:{rec.name}"] = getattr(rec, attr)
            key = owner.get(rec.name)
            if key is not None:
                row[f"kv_mapped:{key}"] = row.get(f"kv_mapped:{key}", 0) + rec.mapped
                row[f"kv_used:{key}"] = row.get(f"kv_used:{key}", 0) + rec.used
        engines = self._metrics.values() if self._metrics else {}
        for key, values in engines.items():
            for name, value in values.items():
                row[f"{name}:{key}"] = value
        return Sample(t, devices, pools, engines, memory), row

    def _devices(self, server_pids, records) -> dict[str, DeviceSample]:
        if self._nvml is not None:
            return {name: DeviceSample(name, total, used, per)
                    for name, (total, used, per) in probes.device_memory(self._nvml).items()}
        total, used, _ = host_memory()
        pids = {p for ps in server_pids for p in ps} | ({r.pid for r in records} if not self.servers else set())
        per = {}
        for p in pids:
            b = probes.rss(p)
            if b is not None:
                per[p] = b
        return {"cpu": DeviceSample("cpu", total, used, per)}

    def _owners(self, records, server_pids) -> dict[str, str]:
        """pool name -> server key: by the server's pool_name, else by the owner's process group."""
        out = {}
        by_name = {getattr(s, "pool_name", None): k for s, k in zip(self.servers, self.keys)}
        by_pid = {p: k for k, ps in zip(self.keys, server_pids) for p in ps}
        for rec in records:
            key = by_name.get(rec.name) or by_pid.get(rec.pid)
            if key is not None:
                out[rec.name] = key
        return out

    def __repr__(self) -> str:
        what = ", ".join(self.keys) or "all pools"
        return f"Telemetry({what}, interval={self.interval:g}s, {self.n_samples} samples)"
