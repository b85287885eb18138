"""One background thread that samples sources and flushes widget state at most ~10 times a second.

Jupyter Server silently drops IOPub messages above 1000/s, and a view that missed its last message
stays stale. So widgets never send from the caller's thread: callers change Python-side state under
the widget's lock and mark it dirty; this thread turns the *latest* state of each dirty widget into
one comm message per flush interval. Intermediate values may be skipped, the last one never is.

Setting synced traits from a background thread is safe on ipykernel 6.x and >= 7.1 (7.0 broke it);
that is the only thing this thread does to a widget. It never prints or enters ``with out:``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Protocol

log = logging.getLogger("kvlab.views")


class Flushable(Protocol):
    def _flush(self) -> None: ...


@dataclass
class CoalescerSettings:
    """``flush_interval_s``: minimum time between two flushes (0.1 s = at most 10 messages/s per widget)."""

    flush_interval_s: float = 0.1

    def __post_init__(self):
        if not 0.01 <= self.flush_interval_s <= 10:
            raise ValueError(f"flush_interval_s={self.flush_interval_s} is outside [0.01, 10] s: below 10 ms "
                             "Jupyter starts dropping messages, above 10 s the view looks frozen")


class PeriodicTask:
    """A callable run on the coalescer thread every ``interval_s``; stopped when it returns False or raises."""

    def __init__(self, fn: Callable[[], bool | None], interval_s: float, name: str = ""):
        if interval_s <= 0:
            raise ValueError(f"task interval must be positive, got {interval_s}")
        self.fn, self.interval_s, self.name = fn, float(interval_s), name or getattr(fn, "__name__", "task")
        self.due = 0.0
        self.runs = 0
        self.error: BaseException | None = None  # kept for the user: a background thread cannot raise into a cell
        self.active = True


class Coalescer:
    """Latest-value coalescer and sampler loop. Use :func:`default_coalescer` unless testing."""

    def __init__(self, settings: CoalescerSettings | None = None):
        self.settings = settings or CoalescerSettings()
        self._cond = threading.Condition()
        self._dirty: dict[int, weakref.ref] = {}
        self._tasks: list[PeriodicTask] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_flush = -1e9
        self._in_flight = 0  # flushes taken off the dirty set but not finished: idle() must wait for them
        self.flushes = 0  # widget flushes done (one comm message each at most)
        self.errors = 0
        self.last_error: BaseException | None = None

    # -- called from any thread ----------------------------------------------------------------
    def mark(self, target: Flushable) -> None:
        """Ask for ``target._flush()`` on the next flush; cheap and idempotent."""
        with self._cond:
            was_idle = not self._dirty
            self._dirty[id(target)] = weakref.ref(target)
            self._ensure_thread()
            # Only the first mark needs to wake the thread; later ones ride on its timed wait, so an
            # update storm costs a dict store per update, not a thread wake-up.
            if was_idle:
                self._cond.notify()

    def add_task(self, fn: Callable[[], bool | None], interval_s: float, name: str = "") -> PeriodicTask:
        s = PeriodicTask(fn, interval_s, name)
        with self._cond:
            self._tasks.append(s)
            self._ensure_thread()
            self._cond.notify()
        return s

    def remove_task(self, sampler: PeriodicTask) -> None:
        with self._cond:
            sampler.active = False
            if sampler in self._tasks:
                self._tasks.remove(sampler)

    def flush_now(self) -> None:
        """Flush every dirty widget in the calling thread (tests, and before saving a notebook)."""
        self._flush_dirty()

    def idle(self, timeout: float = 2.0) -> bool:
        """Wait until nothing is dirty or being flushed (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._dirty and not self._in_flight:
                    return True
            time.sleep(0.005)
        return False

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2)
        self._thread = None

    # -- the thread ----------------------------------------------------------------------------
    def _ensure_thread(self) -> None:  # holds self._cond
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="kvlab-views", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                due = [s for s in self._tasks if s.due <= now and s.active]
                flush_at = self._last_flush + self.settings.flush_interval_s if self._dirty else None
            for s in due:
                self._sample(s, now)
            if flush_at is not None and time.monotonic() >= flush_at:
                self._flush_dirty()
            with self._cond:
                if self._stopping:
                    return
                waits = [s.due for s in self._tasks]
                if self._dirty:
                    waits.append(self._last_flush + self.settings.flush_interval_s)
                # With nothing to sample or flush, sleep until mark()/add_task() notifies: no idle CPU.
                timeout = max(0.0, min(waits) - time.monotonic()) if waits else None
                if timeout is None or timeout > 0:
                    self._cond.wait(timeout)

    def _sample(self, s: PeriodicTask, now: float) -> None:
        try:
            keep = s.fn()
        except BaseException as e:  # noqa: BLE001 - a sampler must not kill the thread that serves every widget
            s.error, keep = e, False
            self.errors += 1
            self.last_error = e
            log.warning("kvlab.views sampler %s stopped: %r", s.name, e)
        s.runs += 1
        # Schedule from the previous due time so a slow flush does not make the rate drift.
        s.due = max(s.due + s.interval_s, now) if s.due else now + s.interval_s
        if keep is False:
            self.remove_task(s)

    def _flush_dirty(self) -> None:
        with self._cond:
            refs, self._dirty = list(self._dirty.values()), {}
            self._last_flush = time.monotonic()
            self._in_flight += 1
        try:
            for ref in refs:
                target = ref()
                if target is None:
                    continue
                try:
                    target._flush()
                    self.flushes += 1
                except BaseException as e:  # noqa: BLE001 - one broken widget must not stop the others
                    self.errors += 1
                    self.last_error = e
                    log.warning("kvlab.views flush of %s failed: %r", type(target).__name__, e)
        finally:
            with self._cond:
                self._in_flight -= 1


class CoalescedWidget:
    """Mixin for views: Python-side state under ``self._lock``, traits written only by ``_flush``."""

    def _init_coalesced(self, coalescer: Coalescer | None) -> None:
        self._lock = threading.RLock()  # guards Python-side state; held only briefly, never while sending
        self._send_lock = threading.Lock()  # one writer per widget, and snapshots go out in order
        self._coalescer = coalescer or default_coalescer()
        self._tasks: list[PeriodicTask] = []

    def _changed(self) -> None:
        self._coalescer.mark(self)

    def _snapshot(self) -> dict | None:
        """Trait values to send, read under ``self._lock``; None or {} when nothing changed."""
        raise NotImplementedError

    def _flush(self) -> None:
        with self._send_lock:
            with self._lock:
                state = self._snapshot()
            if state:
                with self.hold_sync():  # type: ignore[attr-defined]  # all traits in one comm message
                    for k, v in state.items():
                        setattr(self, k, v)

    def sample(self, fn: Callable[[], bool | None], interval_s: float = 0.2, name: str = "") -> PeriodicTask:
        """Run ``fn`` every ``interval_s`` on the views thread (e.g. to poll an arena) until ``close()``."""
        s = self._coalescer.add_task(fn, interval_s, name)
        self._tasks.append(s)
        return s

    def flush(self) -> None:
        """Send the latest state now from the calling thread (the background thread does this anyway)."""
        self._flush()

    def close(self) -> None:
        # Also runs from Widget.__del__ when __init__ raised before _init_coalesced.
        for s in getattr(self, "_tasks", []):
            self._coalescer.remove_task(s)
        if hasattr(self, "_tasks"):
            self._tasks.clear()
        super().close()  # type: ignore[misc]


_default: Coalescer | None = None
_default_lock = threading.Lock()


def default_coalescer() -> Coalescer:
    """The process-wide coalescer: one thread for every view, as decision 7 asks."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Coalescer()
        return _default


def _forget_after_fork() -> None:
    # A forked child (an engine started with fork) has no copy of the thread; start afresh if it needs one.
    global _default, _default_lock
    _default, _default_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
