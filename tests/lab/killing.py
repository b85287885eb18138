"""Act (kill an engine, interrupt the run) at a moment timed from the client's own records.

Counting "POST /v1/completions" lines in the server's log, or polling its /metrics, raced with the
burst on 2 busy cores (the kill meant for the second burst sometimes hit the third). The client knows
exactly when the first burst's last request finished; the next burst follows after the workload's pause.
A fixed delay after that still missed on CI (no token of the burst yet, or the whole burst already done),
so a kill meant for the middle of a burst waits for the burst's first streamed token instead.
"""

from __future__ import annotations

import threading
import time


class KillAfter:
    """An ``on_record`` callback: ``delay`` seconds after the ``count``-th finished request, ``kill()`` runs once
    (in a timer thread)."""

    def __init__(self, count: int, delay: float, kill):
        self.count, self.seen = count, 0
        self._timer = threading.Timer(delay, kill)
        self._timer.daemon = True

    def __call__(self, record) -> None:
        self.seen += 1
        if self.seen == self.count:
            self._timer.start()

    def join(self, timeout: float | None = None) -> None:
        if self._timer.is_alive() or self.seen >= self.count:
            self._timer.join(timeout)


class KillAtFirstToken:
    """Watches the requests ``client`` sends: as soon as it has parsed the first token of a request of
    workload phase ``phase``, ``kill()`` runs once (from a polling thread, within ~5 ms).

    Pass ``.client`` (the same client, watched) to run_workload instead of the server; use as a context
    manager, around the run.
    """

    def __init__(self, client, phase: int, kill):
        self.client, self.phase, self._kill = client, phase, kill
        self.fired = threading.Event()
        self._records: list = []
        self._stop = threading.Event()
        plain = client.complete

        async def complete(*args, record, **kwargs):  # run_workload hands each request its record
            self._records.append(record)
            return await plain(*args, record=record, **kwargs)

        client.complete = complete  # this instance only
        self._thread = threading.Thread(target=self._watch, name="kill-at-first-token", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            if any(r.phase == self.phase and r.ttft is not None for r in list(self._records)):
                self.at = time.perf_counter()  # for a failing test's message
                self._kill()
                self.fired.set()
                return
            time.sleep(0.005)

    def __enter__(self):
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
