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


class ActWhen:
    """Watches the requests ``client`` sends: as soon as ``condition(records)`` holds for the records of the
    requests sent so far (a record's ``ttft`` is set when its first streamed token is parsed), ``act()``
    runs once (from a polling thread, within ~5 ms) and ``.fired`` is set.

    Pass ``.client`` (the same client, watched) to run_workload instead of the server; use as a context
    manager, around the run.
    """

    def __init__(self, client, condition, act=lambda: None):
        self.client, self._condition, self._act = client, condition, act
        self.fired = threading.Event()
        self._records: list = []
        self._stop = threading.Event()
        plain = client.complete

        async def complete(*args, record, **kwargs):  # run_workload hands each request its record
            self._records.append(record)
            return await plain(*args, record=record, **kwargs)

        client.complete = complete  # this instance only
        self._thread = threading.Thread(target=self._watch, name="act-when", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._condition(list(self._records)):
                self.at = time.perf_counter()  # for a failing test's message
                self._act()
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


class KillAtFirstToken(ActWhen):
    """``kill()`` as soon as the first token of a request of workload phase ``phase`` is parsed."""

    def __init__(self, client, phase: int, kill):
        super().__init__(client, lambda records: any(r.phase == phase and r.ttft is not None for r in records),
                         kill)
