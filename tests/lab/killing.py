"""Act (kill an engine, interrupt the run) at a moment timed from the client's own records.

Counting "POST /v1/completions" lines in the server's log, or polling its /metrics, raced with the
burst on 2 busy cores (the kill meant for the second burst sometimes hit the third). The client knows
exactly when the first burst's last request finished; the next burst follows after the workload's pause.
"""

from __future__ import annotations

import threading


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


class KillWhenStreaming:
    """Runs ``kill()`` once, from a polling thread, as soon as the client is receiving tokens of a burst
    after ``after_phase``: every request of that phase finished ok, and some request of a later phase is
    still streaming with at least ``min_chunks`` chunks in. The client's own records (``records``, filled
    in place by ``arun_workload(_records=...)``) say so, not a clock: on 2 cores with vLLM's CPU threads
    spinning, a 0.6 s timer fired 0.6-2 s late, after the burst it was meant for had finished.
    """

    def __init__(self, records: list, kill, after_phase: int = 0, min_chunks: int = 5):
        self.records, self.kill, self.after_phase, self.min_chunks = records, kill, after_phase, min_chunks
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _ready(self) -> bool:
        recs = list(self.records)
        done = [r for r in recs if r.phase <= self.after_phase]
        return bool(done) and all(r.ok for r in done) and any(
            r.phase > self.after_phase and r.status == "pending" and len(r.itl) + 1 >= self.min_chunks for r in recs)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            if self._ready():
                self.kill()
                self.fired.set()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
