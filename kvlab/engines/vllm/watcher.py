"""A thread beside the scheduler: notices limit changes and the end of the idle grace, measures the
device's room, keeps the heartbeat.

It never touches the scheduler's state (the engine's own thread owns that). It calls ``wake()``, which
makes the engine take one step (see scheduler.py: an idle multi-process engine is blocked on its input
queue, so waking it is the only way anything changes while no request arrives), when the pool's control
block changes, and once per idle period when the planner's ``idle_release`` grace is over while free
chunks (the reserve) are still mapped: that step releases them. Every ``headroom.REFRESH`` seconds it
measures the device's free memory and the other pools' guarantees and writes the planner's
``device_cap`` (one int).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kvlab import registry
from kvlab.meminfo import MemoryReading

from . import headroom
from .planner import ChunkPlanner
from .pool_record import PoolRecord, min_chunks

logger = logging.getLogger("vllm.kvlab")

POLL = 0.05        # seconds between looks at the control block (a seqlock read: microseconds)
HEARTBEAT = 1.0    # seconds between heartbeats while nothing else is published
GUARANTEES = 1.0   # seconds between scans of the registry for the other pools' guarantees


class PoolWatcher:
    def __init__(self, record: PoolRecord, planner: ChunkPlanner, wake: Callable[[], None], *,
                 probe: Callable[[], MemoryReading | None], device: str, device_uuid: str,
                 headroom_spec: str, is_cuda: bool, device_chunk_bytes: int | None = None):
        self.record, self.planner, self.wake = record, planner, wake
        self.probe, self.device, self.device_uuid = probe, device, device_uuid
        self.headroom_spec, self.is_cuda = headroom_spec, is_cuda
        # A chunk's bytes on one device (one rank's shard): the device's room is counted in those.
        self.device_chunk_bytes = device_chunk_bytes or planner.chunk_bytes
        self.headroom_bytes: int | None = None
        self.last_room: int | None = None
        self._woken_for = 0
        self._woken_idle: float | None = None  # the idle period (its grace's end) already woken for
        self._others_unmet, self._scanned = 0, 0.0
        self._last_error, self._last_logged = None, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvlab-pool-watcher", daemon=True)

    def start(self) -> "PoolWatcher":
        self.measure()  # a first cap before the first request
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        last_measure = last_beat = time.monotonic()
        while not self._stop.wait(POLL):
            try:
                ctl = self.record.pending_control()
                if ctl is not None and ctl.revision != self._woken_for:
                    self._woken_for = ctl.revision
                    self.wake()
                now = time.monotonic()
                self._wake_after_grace(now)
                if now - last_measure >= headroom.REFRESH:
                    last_measure = now
                    self.measure()
                if now - last_beat >= HEARTBEAT:
                    last_beat = now
                    self.record.heartbeat()
            except registry.RecordClosed:
                return  # the engine shut down under us
            except Exception as e:  # a watcher that dies would silently freeze limits: log and carry on
                now = time.monotonic()
                if type(e) is not self._last_error or now - self._last_logged > 60:  # not 20 times a second
                    self._last_error, self._last_logged = type(e), now
                    logger.exception("kvlab: pool watcher of %s", self.record.name)

    def _wake_after_grace(self, now: float) -> None:
        """Wake the engine once when its idle grace is over and chunks it would release are mapped.

        Keyed by the idle period, so a wake that released nothing (a request arrived meanwhile: the
        planner's fields are read without the engine's lock) is not repeated: no wake loop. A period
        whose reserve is already gone (reserve 0, a limit) has nothing to release and wakes nobody.
        """
        due = self.planner.idle_release_at()
        if due is None or now < due or due == self._woken_idle or not self.planner.retained_chunks():
            return
        self._woken_idle = due
        self.wake()

    def measure(self) -> None:
        """Write the planner's device cap from the device's free memory and the other pools' guarantees."""
        planned = self.planner.n_mapped  # read before measuring: later growth counts against the room
        got = self.probe()
        if got is None:
            self.planner.device_cap = None
            return
        free, total = got.free, got.total
        if self.headroom_bytes is None:
            self.headroom_bytes = headroom.resolve_headroom(self.headroom_spec, total, self.is_cuda)
        now = time.monotonic()
        if now - self._scanned >= GUARANTEES:
            self._scanned = now
            self._others_unmet = headroom.unmet_min(registry.list_records(), self.record.name, self.device,
                                                    self.device_uuid)
        room = headroom.room(free, self.headroom_bytes, self._others_unmet)
        self.last_room = room
        cap = headroom.DeviceRoom(room, planned).cap_chunks(self.device_chunk_bytes,
                                                          min_chunks(self.record.min, self.planner.chunk_bytes))
        self.planner.device_cap = cap
